//! Operating the real binary: the access log (one JSON line per request
//! with `--access-log --log-format json`) and no secret in any log line:
//! a run at `debug` through every surface's credentials (LicenseSpring's
//! shared key and signature, a native signed request, bearer keys, the admin
//! token, an Informatica password and session, generated API key and
//! webhook secrets) is grepped for each of them.
#![allow(clippy::too_many_lines, reason = "one run, then its checks")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir)
        .arg("--catalog")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    // The logs are stderr; stdout says only, at first start, where the
    // admin token is (and the token: the operator must learn it once).
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
                let line = format!("{tag}{line}");
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                lines.lock().expect("log").push(line);
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no start: {:?}", log.lock().expect("log")));
    Server { child, addr, log }
}

async fn call(
    client: &HttpClient,
    method: Method,
    url: String,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut b = Request::builder().method(method).uri(url);
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
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_and_no_secret_in_any_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = start(tmp.path());
    let base = format!("http://{}", server.addr);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let admin_token = std::fs::read_to_string(tmp.path().join("admin_token"))
        .expect("admin token")
        .trim()
        .to_string();
    let mut secrets: Vec<String> = vec![
        "demo-shared-key".into(),
        "demo-api-key".into(),
        admin_token.clone(),
        "parent-admin-password".into(),
    ];

    // LicenseSpring, signed with the shared key.
    let (date, auth) =
        tally::api::licensespring::client_headers("demo-api-key", "demo-shared-key", now_ms());
    let signature = auth
        .split("signature=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("signature")
        .to_string();
    secrets.push(signature);
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/api/v4/check_license?product=studio&license_key=DEMO-STUDIO-0001&hardware_id=hw-ops"),
        &[("Date", date), ("Authorization", auth)],
        None,
    )
    .await;
    assert!(status < 500, "{status}");

    // Native: a bearer key, and a signed request.
    let bearer = ("Authorization", "Bearer demo-api-key".to_string());
    let (status, _) = call(
        &client,
        Method::POST,
        format!("{base}/v1/check"),
        &[bearer.clone(), ("X-Request-Id", "ops-check-1".into())],
        Some(json!({"license_key": "DEMO-STUDIO-0001", "feature": "render"})),
    )
    .await;
    assert_eq!(status, 200);
    let ts = (now_ms() / 1000).to_string();
    let path = "/v1/licenses/DEMO-STUDIO-0001";
    let sig =
        tally::api::native::signature("demo-shared-key", "GET", path, &ts, "nonce-ops-1", b"");
    secrets.push(sig.clone());
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}{path}"),
        &[
            ("X-Tally-Key", "demo-api-key".into()),
            ("X-Tally-Timestamp", ts),
            ("X-Tally-Nonce", "nonce-ops-1".into()),
            ("X-Tally-Signature", sig),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);

    // A webhook's secret and a new API key's shared key, made here.
    let (status, hook) = call(
        &client,
        Method::POST,
        format!("{base}/v1/webhooks"),
        std::slice::from_ref(&bearer),
        Some(json!({"url": "http://127.0.0.1:9/ops", "events": ["license.changed"]})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    secrets.push(hook["secret"].as_str().expect("secret").to_string());
    let admin = ("Authorization", format!("Bearer {admin_token}"));
    let (_, tenants) = call(
        &client,
        Method::GET,
        format!("{base}/admin/v1/tenants"),
        std::slice::from_ref(&admin),
        None,
    )
    .await;
    let tenant = tenants["items"][0]["id"].clone();
    let (status, key) = call(
        &client,
        Method::POST,
        format!("{base}/admin/v1/api-keys"),
        std::slice::from_ref(&admin),
        Some(json!({"tenant_id": tenant, "role": "read_only"})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    secrets.push(key["shared_key"].as_str().expect("shared key").to_string());
    // A wrong admin token is refused (and not logged either).
    let wrong = "wrong-admin-token-0123456789";
    secrets.push(wrong.into());
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/admin/v1/tenants"),
        &[("Authorization", format!("Bearer {wrong}"))],
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Informatica: a password, and the session it opens.
    let (status, login) = call(
        &client,
        Method::POST,
        format!("{base}/saas/public/core/v3/login"),
        &[],
        Some(json!({"username": "admin@parent.example", "password": "parent-admin-password"})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let session = login["userInfo"]["sessionId"]
        .as_str()
        .expect("session id")
        .to_string();
    let org = login["userInfo"]["orgId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/saas/public/core/v3/license/org/{org}"),
        &[("INFA-SESSION-ID", session.clone())],
        None,
    )
    .await;
    assert_eq!(status, 200);
    secrets.push(session);

    // Stop, and read everything it printed.
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
    std::thread::sleep(Duration::from_millis(200));
    let all = server.log.lock().expect("log").clone();
    let (stdout, lines): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|l| l.starts_with("stdout: "));
    assert!(
        stdout
            .iter()
            .all(|l| l.starts_with("stdout: admin token (stored in")),
        "{stdout:?}"
    );
    assert!(lines.len() > 10, "{lines:?}");
    for secret in &secrets {
        assert!(secret.len() >= 8, "a secret worth looking for: {secret}");
        let found: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(found.is_empty(), "a secret in the logs: {found:?}");
    }

    // The access log: one JSON object per request with its fields.
    let access: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tally::access")
        .collect();
    assert!(access.len() >= 8, "{access:?}");
    let check = access
        .iter()
        .find(|v| v["fields"]["request_id"] == "ops-check-1")
        .expect("the check's line, under the client's request id");
    let f = &check["fields"];
    assert_eq!(f["surface"], "native");
    assert_eq!(f["endpoint"], "/v1/check");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["status"], 200);
    assert_eq!(f["code"], "ok");
    assert!(f["latency_us"].as_u64().is_some());
    assert_eq!(
        f["tenant"],
        tenant.as_u64().map(|t| t.to_string()).unwrap_or_default()
    );
    let refused = access
        .iter()
        .find(|v| v["fields"]["status"] == 401)
        .expect("the refused admin call");
    assert_eq!(refused["fields"]["surface"], "admin");
    assert_eq!(refused["fields"]["code"], "unauthorized");
    assert!(access
        .iter()
        .any(|v| v["fields"]["endpoint"] == "/saas/public/core/v3/license/org/{orgId}"));
}
