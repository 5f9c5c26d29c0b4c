//! The real `tally serve` binary for the tests that drive it: started on
//! 127.0.0.1:0 with the demo catalog and the given flags, its output kept
//! (stderr as the logs, stdout tagged `stdout: `), and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub struct Binary {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub client: HttpClient,
    /// Its data directory.
    pub dir: std::path::PathBuf,
}

impl Binary {
    /// `tally serve` on the demo catalog in `dir` with `args` and `env`.
    pub fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let demo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json"));
        Self::start_on(dir, demo, args, env)
    }

    /// [`Binary::start`] on the catalog `catalog`.
    pub fn start_on(
        dir: &std::path::Path,
        catalog: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .arg("--catalog")
            .arg(catalog)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tally");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (stream, tag) in [
            (
                Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>,
                "",
            ),
            (Box::new(child.stdout.take().expect("stdout")), "stdout: "),
        ] {
            let (lines, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                            .collect();
                        let _ = tx.send(addr);
                    }
                    lines.lock().expect("log").push(format!("{tag}{line}"));
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tally did not start: {:?}", log.lock().expect("log"));
            }
        };
        Binary {
            child,
            base: format!("http://{addr}"),
            log,
            client: Client::builder(TokioExecutor::new()).build_http(),
            dir: dir.to_path_buf(),
        }
    }

    /// A graceful stop (SIGTERM), waited for.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request; (status, JSON body or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, v) = self.call_full(method, path, headers, body).await;
        (status, v)
    }

    /// [`Binary::call`] with the answer's headers.
    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Value>,
    ) -> (u16, hyper::HeaderMap, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let resp = self
            .client
            .request(b.body(Full::new(body)).expect("request"))
            .await
            .expect("answer");
        let status = resp.status().as_u16();
        let answer_headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            answer_headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The demo catalog's admin key, as the native API's `Authorization` header.
    pub fn demo_bearer() -> (&'static str, String) {
        ("Authorization", "Bearer demo-api-key".to_string())
    }

    /// AI credits used on the demo's DEMO-STUDIO-0001 (the native API).
    pub async fn demo_credits(&self) -> i64 {
        let (status, v) = self
            .call(
                Method::GET,
                "/v1/licenses/DEMO-STUDIO-0001",
                &[Self::demo_bearer()],
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["code"] == "ai-credits"))
            .and_then(|f| f["usage"]["used"].as_i64())
            .unwrap_or_else(|| panic!("no usage: {v}"))
    }

    /// The admin API's `Authorization` header for the data directory `dir`.
    pub fn admin_header(dir: &std::path::Path) -> (&'static str, String) {
        (
            "Authorization",
            format!("Bearer {}", Self::admin_token(dir)),
        )
    }

    /// The admin token of the data directory `dir`.
    pub fn admin_token(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join("admin_token"))
            .expect("admin token")
            .trim()
            .to_string()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
