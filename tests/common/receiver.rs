#![allow(dead_code)]
//! A webhook receiver for the tests: a tiny HTTP server on 127.0.0.1 that
//! keeps every request it gets and answers from a plan (a list of statuses
//! for the next requests; 200 once the plan is spent).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Got {
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The status this request was answered with.
    pub answered: u16,
    pub at: std::time::Instant,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    /// Whether the Standard Webhooks signature verifies under `secret`.
    pub fn verifies(&self, secret: &str) -> bool {
        let id = self.header("webhook-id");
        let ts: i64 = self.header("webhook-timestamp").parse().unwrap_or(0);
        let want = tally::webhooks::sign(secret, &id, ts, &self.body).unwrap_or_default();
        self.header("webhook-signature")
            .split(' ')
            .any(|s| s == want)
    }
}

#[derive(Default)]
struct State {
    got: Vec<Got>,
    /// Statuses (and a Retry-After) of the next answers.
    plan: VecDeque<(u16, Option<&'static str>)>,
}

pub struct Receiver {
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::on(0).await
    }

    /// A receiver on `port` (0: any).
    pub async fn on(port: u16) -> Receiver {
        Self::serve(port, None).await
    }

    /// An https:// receiver with a certificate for 127.0.0.1 issued by a
    /// fresh CA; returns it and the CA's certificate (PEM).
    pub async fn start_tls() -> (Receiver, String) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "tally test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("cert");
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut r = Self::serve(0, Some(acceptor)).await;
        r.url = format!("https://127.0.0.1:{}/hooks", r.port);
        (r, ca_cert.pem())
    }

    async fn serve(port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (st, no) = (state.clone(), notify.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (st, no, tls) = (st.clone(), no.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (st, no) = (st.clone(), no.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let (status, retry_after) =
                                    st.lock().plan.pop_front().unwrap_or((200, None));
                                st.lock().got.push(Got {
                                    headers: parts.headers,
                                    body,
                                    answered: status,
                                    at: std::time::Instant::now(),
                                });
                                no.notify_waiters();
                                let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                                *r.status_mut() =
                                    hyper::StatusCode::from_u16(status).expect("status");
                                if let Some(ra) = retry_after {
                                    r.headers_mut()
                                        .insert("retry-after", ra.parse().expect("header"));
                                }
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            port,
            state,
            notify,
            task,
        }
    }

    /// The next answers: these statuses, in order (then 200 again).
    pub fn answer(&self, statuses: &[u16]) {
        self.state
            .lock()
            .plan
            .extend(statuses.iter().map(|s| (*s, None)));
    }

    /// The next answer: `status` with `Retry-After: retry_after`.
    pub fn answer_retry_after(&self, status: u16, retry_after: &'static str) {
        self.state
            .lock()
            .plan
            .push_back((status, Some(retry_after)));
    }

    pub fn received(&self) -> Vec<Got> {
        self.state.lock().got.clone()
    }

    /// Waits (at most 10 s) until `n` requests came; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "the receiver got {} requests, waited for {n}: {:?}",
                    got.len(),
                    got.iter().map(Got::json).collect::<Vec<_>>()
                );
                return got;
            }
        }
    }

    /// Asserts that nothing more than `n` requests came within `ms`.
    pub async fn settle(&self, n: usize, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let got = self.received();
        assert_eq!(
            got.len(),
            n,
            "unexpected requests: {:?}",
            got.iter().map(Got::json).collect::<Vec<_>>()
        );
    }
}
