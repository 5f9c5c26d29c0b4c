//! Request builders and error asserters of the Qlik surface, shared by
//! the tests that drive it.

use super::{Resp, TestServer};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "demo-api-key";
pub const READ_KEY: &str = "demo-readonly-key";

pub async fn q(
    s: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(s.url(&format!("/api/v1/licenses{path}")))
        .header("Content-Type", "application/json");
    if let Some(k) = key {
        b = b.header("Authorization", format!("Bearer {k}"));
    }
    s.send(
        b.body(Full::new(
            body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
        ))
        .expect("request"),
    )
    .await
}

pub async fn get(s: &TestServer, path: &str) -> Resp {
    q(s, Method::GET, path, Some(ADMIN_KEY), None).await
}

pub async fn post(s: &TestServer, path: &str, body: Value) -> Resp {
    q(s, Method::POST, path, Some(ADMIN_KEY), Some(body)).await
}

/// Asserts Qlik's error body and returns its first error.
pub fn err(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    let v = r.json();
    let e = v["errors"][0].clone();
    assert_eq!(e["code"], code, "{v}");
    assert!(e["title"].is_string(), "{v}");
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    e
}

pub fn demo_tenant(s: &TestServer) -> u64 {
    s.app.engine.api_key(ADMIN_KEY).expect("key").tenant_id
}

/// Replaces the demo tenant's Qlik license through the admin API.
pub async fn provision(s: &TestServer, allotments: Value, users: Value) {
    let t = demo_tenant(s);
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{t}/qlik"),
            Some(json!({
                "licenseNumber": "1", "product": "Qlik Sense Business", "valid": "2026-01-01/2027-01-01",
                "allotments": allotments, "users": users
            })),
        )
        .await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
}

/// A tenant with a fresh license and no assignments: delete, then put.
pub async fn fresh(s: &TestServer, allotments: Value) {
    let t = demo_tenant(s);
    s.app.engine.qlik(t).expect("demo qlik");
    let r = s
        .admin(Method::DELETE, &format!("/tenants/{t}/qlik"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    provision(s, allotments, json!([])).await;
}

/// A JSON value nested `n` levels deep.
pub fn deep_json(n: usize) -> Value {
    (0..n).fold(json!(1), |v, _| json!({ "k": v }))
}
