//! Request builders and error asserters of the Yext surface, shared by
//! the tests that drive it.

use super::{Resp, TestServer};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

pub const KEY: &str = "demo-api-key";
pub const V: &str = "20261125";

pub async fn y(
    s: &TestServer,
    method: Method,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> Resp {
    let sep = if query.is_empty() { "" } else { "&" };
    let uri = s.url(&format!("{path}?v={V}&api_key={KEY}{sep}{query}"));
    s.send(
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(
                body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ))
            .unwrap(),
    )
    .await
}

/// Asserts the envelope of a success and returns its response.
pub fn ok(r: &Resp) -> Value {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    let v = r.json();
    assert_eq!(v["meta"]["errors"], json!([]));
    assert_eq!(v["meta"]["uuid"].as_str().unwrap().len(), 36);
    v["response"].clone()
}

/// Asserts the envelope of an error and returns its code.
pub fn fail(r: &Resp, status: u16) -> u64 {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.bytes)
    );
    let v = r.json();
    let e = &v["meta"]["errors"][0];
    assert_eq!(e["type"], "FATAL_ERROR");
    assert!(e["name"].as_str().is_some_and(|n| !n.is_empty()), "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(v["response"], json!({}));
    e["code"].as_u64().unwrap()
}

/// The (pack, entity, expirationDate) triples of a `licenseAssignments`
/// answer, each group checked to be `{licensePack, assignedEntities}` with a
/// whole pack object and entities of `{entityId, expirationDate?}` only.
pub fn flat(r: &Value) -> Vec<(String, String, Option<String>)> {
    assert!(r.get("count").is_none(), "no count in Yext's shape: {r}");
    let mut out = Vec::new();
    for group in r["licenseAssignments"]
        .as_array()
        .expect("licenseAssignments")
    {
        let keys: Vec<&String> = group.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["assignedEntities", "licensePack"], "{group}");
        let pack = &group["licensePack"];
        let pack_keys: Vec<&String> = pack.as_object().expect("pack").keys().collect();
        assert_eq!(
            pack_keys,
            ["assigned", "available", "id", "name", "notes", "total"],
            "{pack}"
        );
        for e in group["assignedEntities"]
            .as_array()
            .expect("assignedEntities")
        {
            let m = e.as_object().expect("entity");
            assert!(
                m.keys().all(|k| k == "entityId" || k == "expirationDate"),
                "{e}"
            );
            out.push((
                pack["id"].as_str().expect("id").to_string(),
                e["entityId"].as_str().expect("entityId").to_string(),
                e["expirationDate"].as_str().map(str::to_string),
            ));
        }
    }
    out
}

pub fn tenant(s: &TestServer) -> u64 {
    s.app.engine.api_key(KEY).unwrap().tenant_id
}

pub async fn provision(s: &TestServer, packs: Value) {
    let t = tenant(s);
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{t}/yext"),
            Some(json!({"accountId": "1234567", "packs": packs})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json());
}
