//! Test harness: starts the real server (the same `server::run` that `tally
//! serve` runs) on 127.0.0.1:0 with a manual clock, loads the demo catalog, and
//! talks to it over HTTP.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tally::app::{App, AppOptions};
use tally::clock::ManualClock;
use tally::engine::time::{parse_instant, Millis};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const API_KEY: &str = "demo-api-key";
pub const SHARED_KEY: &str = "demo-shared-key";

/// One RSA key per test binary: generating one costs about a second.
pub fn signing_key() -> rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key"))
        .clone()
}

pub fn at(s: &str) -> Millis {
    parse_instant(s).expect("test instant")
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub bytes: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    /// The LicenseSpring error code of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }
}

impl TestServer {
    /// Demo catalog, clock at 2026-11-25T12:00:00Z.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut AppOptions)) -> TestServer {
        let clock = Arc::new(ManualClock::new(at("2026-11-25T12:00:00Z")));
        let mut opts = AppOptions::new(ADMIN_TOKEN.into(), signing_key());
        opts.clock = clock.clone();
        tune(&mut opts);
        let app = Arc::new(App::new(opts));
        let catalog = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json"))
            .expect("demo catalog");
        tally::catalog::load_slice(&app.engine, &catalog, app.now()).expect("demo catalog loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(tally::server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestServer {
            addr,
            app,
            clock,
            client,
            stop: Some(tx),
            done: Some(done),
        }
    }

    pub fn now(&self) -> Millis {
        self.app.now()
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.expect("server task").expect("server run");
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Resp {
        let resp = self.client.request(req).await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Resp {
            status,
            headers,
            bytes,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A LicenseSpring request signed with `api_key`/`shared_key` at the server's clock.
    pub fn ls_request(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        keys: (&str, &str),
    ) -> Request<Full<Bytes>> {
        let (date, auth) = tally::api::licensespring::client_headers(keys.0, keys.1, self.now());
        let mut url = self.url(&format!("/api/v4/{endpoint}"));
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        Request::builder()
            .method(method)
            .uri(url)
            .header("Date", date)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body(Full::new(
                body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ))
            .expect("request")
    }

    pub async fn ls_get(&self, endpoint: &str, query: &[(&str, &str)]) -> Resp {
        self.send(self.ls_request(Method::GET, endpoint, query, None, (API_KEY, SHARED_KEY)))
            .await
    }

    pub async fn ls_post(&self, endpoint: &str, body: Value) -> Resp {
        self.send(self.ls_request(
            Method::POST,
            endpoint,
            &[],
            Some(&body),
            (API_KEY, SHARED_KEY),
        ))
        .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(self.url(&format!("/admin/v1{path}")))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(
                body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ))
            .expect("request");
        self.send(req).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
