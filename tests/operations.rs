//! Operating the real binary: the access log (one JSON line per request
//! with `--access-log --log-format json`) and no secret in any log line:
//! a run at `debug` through every surface's credentials (LicenseSpring's
//! shared key and signature, a native signed request, bearer keys, the admin
//! token, an Informatica password and session, generated API key and
//! webhook secrets) is grepped for each of them.
#![allow(clippy::too_many_lines, reason = "one run, then its checks")]

mod common;

use std::time::Duration;

use common::binary::Binary;
use hyper::Method;
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_and_no_secret_in_any_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Binary::start(
        tmp.path(),
        &["--access-log", "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let admin_token = Binary::admin_token(tmp.path());
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
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v4/check_license?product=studio&license_key=DEMO-STUDIO-0001&hardware_id=hw-ops",
            &[("Date", date), ("Authorization", auth)],
            None,
        )
        .await;
    assert!(status < 500, "{status}");

    // Native: a bearer key, and a signed request.
    let bearer = ("Authorization", "Bearer demo-api-key".to_string());
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/check",
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
    let (status, _) = server
        .call(
            Method::GET,
            path,
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
    let (status, hook) = server
        .call(
            Method::POST,
            "/v1/webhooks",
            std::slice::from_ref(&bearer),
            Some(json!({"url": "http://127.0.0.1:9/ops", "events": ["license.changed"]})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    secrets.push(hook["secret"].as_str().expect("secret").to_string());
    let admin = ("Authorization", format!("Bearer {admin_token}"));
    let (_, tenants) = server
        .call(
            Method::GET,
            "/admin/v1/tenants",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    let tenant = tenants["items"][0]["id"].clone();
    let (status, key) = server
        .call(
            Method::POST,
            "/admin/v1/api-keys",
            std::slice::from_ref(&admin),
            Some(json!({"tenant_id": tenant, "role": "read_only"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    secrets.push(key["shared_key"].as_str().expect("shared key").to_string());
    // A wrong admin token is refused (and not logged either).
    let wrong = "wrong-admin-token-0123456789";
    secrets.push(wrong.into());
    let (status, _) = server
        .call(
            Method::GET,
            "/admin/v1/tenants",
            &[("Authorization", format!("Bearer {wrong}"))],
            None,
        )
        .await;
    assert_eq!(status, 401);

    // Informatica: a password, and the session it opens.
    let (status, login) = server
        .call(
            Method::POST,
            "/saas/public/core/v3/login",
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
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/saas/public/core/v3/license/org/{org}"),
            &[("INFA-SESSION-ID", session.clone())],
            None,
        )
        .await;
    assert_eq!(status, 200);
    secrets.push(session);

    // Stop, and read everything it printed.
    server.stop();
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
