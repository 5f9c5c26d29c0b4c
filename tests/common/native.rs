//! Request builders and the problem asserter of the native API, shared by
//! the tests that drive it.

use super::{Resp, TestServer, API_KEY, SHARED_KEY};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

pub const READ_ONLY_KEY: &str = "demo-readonly-key";
pub const STUDIO: &str = "DEMO-STUDIO-0001";

/// A request with `Authorization: Bearer <key>` and extra headers.
pub async fn call(
    s: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(s.url(path))
        .header("Authorization", format!("Bearer {key}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    s.send(b.body(Full::new(body)).expect("request")).await
}

/// The demo tenant's read-write key.
pub async fn n(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> Resp {
    call(s, API_KEY, method, path, body.as_ref(), &[]).await
}

/// A signed request as docs/native.md describes it, at the server's clock.
pub async fn signed(s: &TestServer, method: Method, path: &str, body: &str, nonce: &str) -> Resp {
    let ts = (s.now() / 1000).to_string();
    let sig = tally::api::native::signature(
        SHARED_KEY,
        method.as_str(),
        path,
        &ts,
        nonce,
        body.as_bytes(),
    );
    let req = Request::builder()
        .method(method)
        .uri(s.url(path))
        .header("X-Tally-Key", API_KEY)
        .header("X-Tally-Timestamp", ts)
        .header("X-Tally-Nonce", nonce)
        .header("X-Tally-Signature", sig)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    s.send(req).await
}

/// Asserts a success and returns its body.
pub fn ok(r: &Resp, status: StatusCode) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    r.json()
}

/// Asserts an RFC 9457 problem with `status` and `code`: its content type,
/// its members (type, title, status, code, and detail at most), `status`
/// equal to the HTTP status and `type` naming the code.
pub fn problem(r: &Resp, status: StatusCode, code: &str) -> Value {
    let body = r.json();
    assert_eq!(r.status, status, "{body}");
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    let o = body.as_object().expect("problem object");
    for k in o.keys() {
        assert!(
            ["type", "title", "status", "detail", "code"].contains(&k.as_str()),
            "unexpected member {k}: {body}"
        );
    }
    assert_eq!(body["status"].as_u64(), Some(u64::from(status.as_u16())));
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:tally:problem:{code}"));
    assert!(!body["title"].as_str().unwrap_or("").is_empty(), "{body}");
    body
}

/// The demo studio license's id (admin API).
pub async fn studio_id(s: &TestServer) -> u64 {
    s.app
        .engine
        .product_by_code(
            s.app.engine.api_key(API_KEY).expect("key").tenant_id,
            "studio",
        )
        .and_then(|p| p.licenses_by_key.get(STUDIO).map(|l| l.id))
        .expect("studio license")
}

/// Adds a consumption feature `code` with `max` units (no overages) to the
/// demo studio license.
pub async fn add_meter(s: &TestServer, code: &str, max: i64) {
    let id = studio_id(s).await;
    let r = s
        .admin(
            Method::POST,
            &format!("/licenses/{id}/features"),
            Some(serde_json::json!({
                "code": code, "name": code, "feature_type": "consumption",
                "max_consumption": max,
            })),
        )
        .await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
}
