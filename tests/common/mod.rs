//! Test harness: starts the real server (the same `server::run` that `tally
//! serve` runs) on 127.0.0.1:0 with a manual clock, loads the demo catalog, and
//! talks to it over HTTP.
#![allow(dead_code)]

pub mod binary;
pub mod infa;
pub mod native;
pub mod nats;
pub mod qlik;
pub mod receiver;
pub mod spread;
pub mod yext;

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
    /// The LicenseSpring error code of an error body, after asserting the
    /// error's whole shape: exactly `status`, `code` and `message`, `status`
    /// equal to the HTTP status, an error status, and a message to read.
    /// Every LicenseSpring test asserts its refusals through this one place.
    pub fn code(&self) -> String {
        let body = self.json();
        let Some(code) = body["code"].as_str() else {
            return String::new();
        };
        let keys: Vec<&str> = body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 3, "LicenseSpring error shape: {body}");
        assert_eq!(
            body["status"].as_u64(),
            Some(u64::from(self.status.as_u16())),
            "LicenseSpring error status field: {body}"
        );
        assert!(
            self.status.as_u16() >= 400,
            "error code on a success: {body}"
        );
        let message = body["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "LicenseSpring error message: {body}");
        code.to_string()
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

    /// The demo catalog on a server that keeps its changes in the data
    /// directory `dir` (log, snapshots, ledger); the catalog itself is loaded
    /// in memory, as `start` does.
    pub async fn start_stored(dir: &std::path::Path) -> TestServer {
        let engine = tally::engine::Engine::new();
        let (store, _) = tally::storage::store::Store::open(
            dir,
            &tally::storage::store::StoreOptions::default(),
            &engine,
            at("2026-11-25T12:00:00Z"),
        )
        .expect("open the data directory");
        let store = Arc::new(store);
        Self::start_with(move |o| {
            o.engine = Some(engine);
            o.store = Some(store);
        })
        .await
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
        if headers.contains_key("licensesignature") {
            // LicenseSpring's Node SDK verifies the signature over
            // JSON.stringify(JSON.parse(body)): every signed body must be
            // what JavaScript writes for it.
            assert_eq!(
                String::from_utf8_lossy(&js_round_trip(&bytes)),
                String::from_utf8_lossy(&bytes),
                "a signed body is not what JavaScript's JSON.stringify writes"
            );
        }
        Resp {
            status,
            headers,
            bytes,
        }
    }

    /// Whether `signature` (base64) is Tally's RSA-SHA256 signature of
    /// `message`, checked with the public key the admin API publishes.
    pub async fn signed_by_server(&self, message: &[u8], signature: &str) -> bool {
        use base64::Engine as _;
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        let pem = self.admin(Method::GET, "/signing-key", None).await.json()["public_key_pem"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(
            rsa::RsaPublicKey::from_public_key_pem(&pem).expect("public key"),
        );
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        rsa::pkcs1v15::Signature::try_from(bytes.as_slice())
            .is_ok_and(|sig| key.verify(message, &sig).is_ok())
    }

    /// The server's public key (`LicenseSignature`) in a PEM file, in a
    /// temporary directory that lives as long as the returned guard.
    pub async fn public_key_pem_file(&self) -> (tempfile::TempDir, std::path::PathBuf) {
        let pem = self.admin(Method::GET, "/signing-key", None).await.json()["public_key_pem"]
            .as_str()
            .expect("pem")
            .to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("public.pem");
        std::fs::write(&path, pem).expect("write pem");
        (dir, path)
    }

    /// Lets the demo floating license `DEMO-FLOAT-0001` borrow for up to 24
    /// hours (the SDK tests borrow it).
    pub async fn allow_demo_float_borrowing(&self) {
        let list = self
            .admin(Method::GET, "/licenses?limit=100", None)
            .await
            .json();
        let id = list["items"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["license_key"] == "DEMO-FLOAT-0001"))
            .map(|l| l["id"].clone())
            .expect("DEMO-FLOAT-0001");
        let r = self
            .admin(
                Method::PATCH,
                &format!("/licenses/{id}"),
                Some(serde_json::json!({"can_borrow": true, "max_borrow_time": 24})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
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

/// `JSON.stringify(JSON.parse(bytes))` as JavaScript computes it: keys in
/// insertion order except array-index keys, which come first in ascending
/// order; numbers as doubles printed by `Number.prototype.toString`.
pub fn js_round_trip(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).expect("utf-8 body");
    let mut p = JsParser { s: text, i: 0 };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, text.len(), "trailing text after the JSON value");
    let mut out = String::new();
    v.write(&mut out);
    out.into_bytes()
}

enum JsVal {
    Lit(&'static str),
    Num(f64),
    Str(String),
    Arr(Vec<JsVal>),
    Obj(Vec<(String, JsVal)>),
}

impl JsVal {
    fn write(&self, out: &mut String) {
        match self {
            JsVal::Lit(l) => out.push_str(l),
            JsVal::Num(n) => out.push_str(&tally::api::licensespring::js::js_number(*n)),
            JsVal::Str(s) => out.push_str(&serde_json::to_string(s).expect("string")),
            JsVal::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            JsVal::Obj(m) => {
                let index = |k: &str| {
                    (k == "0" || (!k.starts_with('0') && !k.is_empty() && k.len() <= 10))
                        .then(|| k.parse::<u64>().ok())
                        .flatten()
                        .filter(|n| *n < (1 << 32) - 1)
                };
                let mut keys: Vec<(Option<u64>, usize)> = m
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (index(k), i))
                    .collect();
                keys.sort_by_key(|(n, i)| match n {
                    Some(n) => (0, *n, 0),
                    None => (1, 0, *i),
                });
                out.push('{');
                for (j, (_, i)) in keys.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let (k, v) = &m[*i];
                    out.push_str(&serde_json::to_string(k).expect("key"));
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

struct JsParser<'a> {
    s: &'a str,
    i: usize,
}

impl JsParser<'_> {
    fn ws(&mut self) {
        while self.s[self.i..].starts_with([' ', '\n', '\r', '\t']) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.ws();
        let hit = self.s[self.i..].starts_with(c);
        if hit {
            self.i += 1;
        }
        hit
    }
    fn value(&mut self) -> JsVal {
        self.ws();
        let rest = &self.s[self.i..];
        for lit in ["null", "true", "false"] {
            if rest.starts_with(lit) {
                self.i += lit.len();
                return JsVal::Lit(lit);
            }
        }
        if self.eat('[') {
            let mut a = Vec::new();
            if !self.eat(']') {
                loop {
                    a.push(self.value());
                    if self.eat(']') {
                        break;
                    }
                    assert!(self.eat(','), "expected , in array");
                }
            }
            return JsVal::Arr(a);
        }
        if self.eat('{') {
            let mut m: Vec<(String, JsVal)> = Vec::new();
            if !self.eat('}') {
                loop {
                    self.ws();
                    let k = self.string();
                    assert!(self.eat(':'), "expected : in object");
                    let v = self.value();
                    // JSON.parse keeps the first position and the last value.
                    match m.iter_mut().find(|(x, _)| *x == k) {
                        Some(slot) => slot.1 = v,
                        None => m.push((k, v)),
                    }
                    if self.eat('}') {
                        break;
                    }
                    assert!(self.eat(','), "expected , in object");
                }
            }
            return JsVal::Obj(m);
        }
        if rest.starts_with('"') {
            return JsVal::Str(self.string());
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(rest.len());
        self.i += end;
        JsVal::Num(rest[..end].parse().expect("number"))
    }
    fn string(&mut self) -> String {
        let rest = &self.s[self.i..];
        assert!(rest.starts_with('"'), "expected a string");
        let mut j = 1;
        let b = rest.as_bytes();
        while b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        self.i += j + 1;
        serde_json::from_str(&rest[..=j]).expect("string")
    }
}

/// Whether a vendor client the tests drive is installed (`marker` exists).
/// Outside CI a missing one is reported and the test passes; under
/// `CI=true` (where `.ci/run` installs it with `install`) it is a failure.
pub fn client_installed(marker: &str, install: &str) -> bool {
    if std::path::Path::new(marker).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must install this client: {install} (see .ci/run)"
    );
    eprintln!("skipping: run `{install}` to install the client this test drives");
    false
}

/// Runs a client script and asserts it ended well and printed its last line.
pub fn assert_client_passed(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk: all calls passed"), "{stdout}");
    println!("{stdout}");
}
