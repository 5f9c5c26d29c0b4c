//! Request builders and error asserters of the Informatica surface, shared by
//! the tests that drive it.

use super::{Resp, TestServer};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

pub const PARENT: &str = "1ax3wad2FEsz35asd2892s";
pub const CHILD: &str = "5SPzPwEFvBEds8LzVwXX4K";

pub async fn login(s: &TestServer, user: &str, password: &str) -> Resp {
    s.send(
        Request::builder()
            .method(Method::POST)
            .uri(s.url("/saas/public/core/v3/login"))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"username": user, "password": password}).to_string(),
            )))
            .unwrap(),
    )
    .await
}

pub async fn session(s: &TestServer, user: &str, password: &str) -> String {
    let r = login(s, user, password).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    r.json()["userInfo"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn lic(
    s: &TestServer,
    method: Method,
    org: &str,
    sid: Option<&str>,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(s.url(&format!("/saas/public/core/v3/license/org/{org}")))
        .header("Accept", "application/json");
    if let Some(sid) = sid {
        b = b.header("INFA-SESSION-ID", sid);
    }
    if let Some(m) = if_match {
        b = b.header("If-Match", m);
    }
    s.send(
        b.body(Full::new(
            body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
        ))
        .unwrap(),
    )
    .await
}

/// Asserts the vendor's error body and returns its code.
pub fn fail(r: &Resp, status: u16) -> String {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(
        e["requestId"].is_string() && e.get("details").is_some(),
        "{v}"
    );
    e["code"].as_str().unwrap().to_string()
}

pub fn etag(r: &Resp) -> String {
    r.headers["etag"].to_str().unwrap().to_string()
}

/// The version an ETag (`"N"`) names.
pub fn version(r: &Resp) -> u64 {
    etag(r).trim_matches('"').parse().expect("numeric etag")
}
