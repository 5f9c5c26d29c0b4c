//! A balancer for cluster tests: an HTTP proxy on 127.0.0.1:0 that sends
//! each request (not each connection: SDKs keep one connection alive) to
//! the next node in turn, so an unchanged client spreads its calls over
//! every node. It is session-consistent the way a client of a cluster is
//! told to be (docs/cluster.md): it remembers the highest `X-Tally-Seq`
//! any answer carried and sends it as `X-Tally-Min-Seq`, so a read through
//! one node sees a change made through another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub struct Spread {
    pub addr: SocketAddr,
    /// Requests sent to each node.
    pub sent: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Spread {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    targets: Vec<String>,
    next: AtomicUsize,
    seq: AtomicU64,
    sent: Arc<Vec<AtomicU64>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Spread {
    /// `targets`: the nodes' `http://host:port`.
    pub async fn start(targets: Vec<String>) -> Spread {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = Arc::new((0..targets.len()).map(|_| AtomicU64::new(0)).collect());
        let shared = Arc::new(Shared {
            targets,
            next: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            sent: Arc::clone(&sent),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { forward(&shared, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Spread { addr, sent, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn forward(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let i = shared.next.fetch_add(1, Ordering::Relaxed) % shared.targets.len();
    shared.sent[i].fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", shared.targets[i]));
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    let seen = shared.seq.load(Ordering::Acquire);
    if seen > 0 {
        out = out.header("X-Tally-Min-Seq", seen.to_string());
    }
    let answer = match shared
        .client
        .request(out.body(Full::new(body)).expect("request"))
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("proxy: {e}"))));
            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            return Ok(r);
        }
    };
    if let Some(seq) = answer
        .headers()
        .get("x-tally-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        shared.seq.fetch_max(seq, Ordering::AcqRel);
    }
    let (parts, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Response::from_parts(parts, Full::new(body)))
}

impl Spread {
    /// One request through the balancer: (status, JSON body or Null).
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url()));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let resp = client
            .request(b.body(Full::new(body)).expect("request"))
            .await
            .expect("answer");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}
