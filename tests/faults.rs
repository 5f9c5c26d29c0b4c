//! Fault injection through HTTP: rules set with `PUT /admin/v1/faults`,
//! errors in each surface's own shape (an injected error changes nothing),
//! latency, a closed connection, a trickling body, windows by count,
//! probability, matching by API key, hits counted (and in the metrics).
#![allow(clippy::too_many_lines, reason = "a test reads best as one story")]

mod common;

use std::time::{Duration, Instant};

use common::native::{call, n, STUDIO};
use common::TestServer;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

async fn set(s: &TestServer, rules: Value) -> common::Resp {
    s.admin(Method::PUT, "/faults", Some(json!({ "rules": rules })))
        .await
}

async fn usage(s: &TestServer) -> i64 {
    let v = n(s, Method::GET, &format!("/v1/licenses/{STUDIO}"), None)
        .await
        .json();
    v["features"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["code"] == "ai-credits"))
        .and_then(|f| f["usage"]["used"].as_i64())
        .unwrap_or(-1)
}

#[tokio::test]
async fn errors_come_in_each_surfaces_shape_and_change_nothing() {
    let s = TestServer::start().await;
    let r = set(
        &s,
        json!([
            {"id": "ls", "surface": "licensespring", "endpoint": "/api/v4/check_license",
             "effect": {"type": "error", "status": 503, "retry_after_s": 7}},
            {"id": "qlik", "surface": "qlik", "effect": {"type": "error", "status": 429, "retry_after_s": 2}},
            {"id": "yext", "surface": "yext", "effect": {"type": "error", "status": 503}},
            {"id": "infa", "surface": "informatica", "effect": {"type": "error", "status": 500}},
            {"id": "native", "surface": "native", "method": "POST", "effect": {"type": "error", "status": 503}},
            {"id": "admin", "surface": "admin", "endpoint": "/admin/v1/tenants", "effect": {"type": "error", "status": 502}}
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());

    let r = s
        .ls_get(
            "check_license",
            &[
                ("product", "studio"),
                ("license_key", STUDIO),
                ("hardware_id", "hw"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "service_unavailable");
    assert_eq!(
        r.headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("7")
    );

    let r = common::qlik::get(&s, "/overview").await;
    let e = common::qlik::err(&r, 429, "LICENSES-005");
    assert!(e["detail"].as_str().unwrap_or("").contains("fault"));
    assert_eq!(
        r.headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("2")
    );

    let r = common::yext::y(&s, Method::GET, "/v2/accounts/me/licensepacks", "", None).await;
    assert_eq!(common::yext::fail(&r, 503), 2011);

    let r = s
        .send(
            hyper::Request::post(s.url("/saas/public/core/v3/login"))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    r#"{"username":"admin@parent.example","password":"parent-admin-password"}"#,
                )))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 500);
    assert_eq!(r.json()["error"]["code"], "INJECTED_FAULT");

    // A change answered by a fault was not made.
    let before = usage(&s).await;
    let r = n(
        &s,
        Method::POST,
        &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
        Some(json!({"units": 5})),
    )
    .await;
    let p = common::native::problem(&r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
    assert!(p["title"].as_str().unwrap_or("").contains("fault"));
    assert_eq!(usage(&s).await, before, "nothing changed");

    let r = s.admin(Method::GET, "/tenants", None).await;
    assert_eq!(r.status.as_u16(), 502);
    assert_eq!(r.json()["error"]["code"], "bad_gateway");

    // Hits, per rule; the rules' own endpoint is never faulted.
    let rules = s.admin(Method::GET, "/faults", None).await.json();
    let hits: Vec<(String, u64)> = rules["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_string(),
                r["hits"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("ls", 1),
            ("qlik", 1),
            ("yext", 1),
            ("infa", 1),
            ("native", 1),
            ("admin", 1)
        ]
        .map(|(a, b)| (a.to_string(), b))
    );
    let metrics = s
        .send(
            hyper::Request::get(s.url("/metrics"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    let text = String::from_utf8_lossy(&metrics.bytes).into_owned();
    assert!(
        text.contains(r#"tally_faults_injected_total{rule="qlik"} 1"#),
        "{text}"
    );

    // Cleared: everything answers again.
    assert_eq!(
        s.admin(Method::DELETE, "/faults", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::GET, "/tenants", None).await.status,
        StatusCode::OK
    );

    // Bad rules are refused whole, with the place of the error.
    let r = set(
        &s,
        json!([{"effect": {"type": "close"}}, {"effect": {"type": "error", "status": 200}}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("rules[1]"),
        "{:?}",
        r.json()
    );
    assert_eq!(
        s.admin(Method::GET, "/faults", None).await.json()["rules"],
        json!([])
    );
    let r = set(&s, json!([{"effect": {"type": "explode"}}])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn windows_probability_keys_latency_close_and_trickle() {
    let s = TestServer::start().await;
    // The next two checks by the read-only key only; never by probability 0.
    set(
        &s,
        json!([
            {"api_key": "demo-readonly-key", "count": 2, "effect": {"type": "error", "status": 503}},
            {"probability": 0.0, "effect": {"type": "error", "status": 500}}
        ]),
    )
    .await;
    let check = json!({"license_key": STUDIO, "feature": "render"});
    let ro = common::native::READ_ONLY_KEY;
    let statuses = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                call(&s, ro, Method::POST, "/v1/check", Some(&check), &[])
                    .await
                    .status
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(
        n(&s, Method::POST, "/v1/check", Some(check.clone()))
            .await
            .status,
        StatusCode::OK
    );

    // A fixed latency.
    set(
        &s,
        json!([{"endpoint": "/v1/check", "effect": {"type": "latency", "ms": 300}}]),
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        n(&s, Method::POST, "/v1/check", Some(check.clone()))
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // A trickling body: the same answer, at 1,000 bytes a second.
    let whole = n(&s, Method::GET, &format!("/v1/licenses/{STUDIO}"), None).await;
    assert!(whole.bytes.len() > 600, "{}", whole.bytes.len());
    set(&s, json!([{"endpoint": "/v1/licenses/{license_key}", "effect": {"type": "trickle", "bytes_per_s": 1000}}]))
        .await;
    let t = Instant::now();
    let slow = n(&s, Method::GET, &format!("/v1/licenses/{STUDIO}"), None).await;
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.json(), whole.json());

    // A connection closed without an answer.
    set(
        &s,
        json!([{"surface": "native", "effect": {"type": "close"}}]),
    )
    .await;
    // (Async: the server runs on this test's runtime.)
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let head = format!(
        "GET /v1/licenses/{STUDIO} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-api-key\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed, not left hanging: {read:?}"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
