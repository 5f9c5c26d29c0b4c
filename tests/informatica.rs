//! Informatica's login and license resource over HTTP on a real socket:
//! sessions (idle expiry with an injected clock), reading an org and its
//! sub-organisations, the parent administrator's overwrite with its rules,
//! validation, ETag / If-Match (412 on a stale write), and the native limit
//! and grant checks.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use bytes::Bytes;
use common::infa::*;
use common::{at, TestServer};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn login_gives_a_session_that_expires_when_idle() {
    let s = TestServer::start().await;
    let r = login(&s, "admin@parent.example", "parent-admin-password").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["userInfo"]["orgId"], PARENT);
    assert_eq!(v["userInfo"]["orgName"], "Demo Parent Org");
    assert_eq!(v["userInfo"]["name"], "admin@parent.example");
    assert_eq!(v["userInfo"]["parentOrgId"], Value::Null);
    assert_eq!(
        v["products"][0]["baseApiUrl"],
        format!("http://{}/saas", s.addr)
    );
    let sub = login(&s, "admin@sub.example", "sub-admin-password")
        .await
        .json();
    assert_eq!(sub["userInfo"]["parentOrgId"], PARENT);
    // Wrong password, unknown user, bad bodies.
    assert_eq!(
        fail(&login(&s, "admin@parent.example", "nope").await, 401),
        "AUTH_01"
    );
    assert_eq!(fail(&login(&s, "nobody", "x").await, 401), "AUTH_01");
    let r = s
        .send(
            Request::builder()
                .method(Method::POST)
                .uri(s.url("/saas/public/core/v3/login"))
                .body(Full::new(Bytes::from("{}")))
                .unwrap(),
        )
        .await;
    assert_eq!(fail(&r, 400), "VALIDATION_01");
    // No session, a bad one, then idle expiry (30 minutes) with the injected clock.
    let sid = v["userInfo"]["sessionId"].as_str().unwrap().to_string();
    assert_eq!(
        fail(&lic(&s, Method::GET, PARENT, None, None, None).await, 401),
        "AUTH_01"
    );
    assert_eq!(
        fail(
            &lic(&s, Method::GET, PARENT, Some("forged"), None, None).await,
            401
        ),
        "AUTH_01"
    );
    s.clock.advance(29 * 60_000);
    assert_eq!(
        lic(&s, Method::GET, PARENT, Some(&sid), None, None)
            .await
            .status,
        StatusCode::OK
    );
    s.clock.advance(29 * 60_000);
    assert_eq!(
        lic(&s, Method::GET, PARENT, Some(&sid), None, None)
            .await
            .status,
        StatusCode::OK,
        "use restarts the idle clock"
    );
    s.clock.advance(30 * 60_000);
    assert_eq!(
        fail(
            &lic(&s, Method::GET, PARENT, Some(&sid), None, None).await,
            401
        ),
        "AUTH_01"
    );
}

#[tokio::test]
async fn get_own_org_and_sub_orgs_only() {
    let s = TestServer::start().await;
    let parent = session(&s, "viewer@parent.example", "viewer-password").await;
    let r = lic(&s, Method::GET, PARENT, Some(&parent), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({
            "id": PARENT, "parentOrg": null,
            "customLicenses": [{"licenseDef": "a5Xjp3VF3sjcyZUDa6UaWh", "expirationDate": "2030-12-31T00:00:00Z", "licenseType": "SUBSCRIPTION"}],
            "assignedEditions": [{"edition": "4sdvnCrYEjfcKjTvAoigEF", "expirationDate": "2030-12-31T00:00:00Z"}],
            "customLimits": [{"limitDefinition": "09cX4Tmi1qSfrS997ORMYl", "value": -1}],
        })
    );
    assert!(version(&r) > 0);
    let r = lic(&s, Method::GET, CHILD, Some(&parent), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["parentOrg"], PARENT);
    assert_eq!(
        r.json()["customLimits"][0],
        json!({"limitDefinition": "rowsPerMonth", "value": 100000})
    );
    // The sub-org sees itself but not its parent; unknown orgs are 404.
    let child = session(&s, "admin@sub.example", "sub-admin-password").await;
    assert_eq!(
        lic(&s, Method::GET, CHILD, Some(&child), None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        fail(
            &lic(&s, Method::GET, PARENT, Some(&child), None, None).await,
            403
        ),
        "AUTH_02"
    );
    assert_eq!(
        fail(
            &lic(&s, Method::GET, "noSuchOrg", Some(&parent), None, None).await,
            404
        ),
        "ORG_01"
    );
    // Without the /saas prefix too; other methods are refused.
    let r = s
        .send(
            Request::builder()
                .uri(s.url(&format!("/public/core/v3/license/org/{CHILD}")))
                .header("INFA-SESSION-ID", &parent)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        fail(
            &lic(&s, Method::DELETE, CHILD, Some(&parent), None, None).await,
            405
        ),
        "REQUEST_02"
    );
}

fn update_body() -> Value {
    json!({
        "customLicenses": [{"licenseType": "SUBSCRIPTION", "expirationDate": "2031-03-16T00:00:00Z", "licenseDef": "a5Xjp3VF3sjcyZUDa6UaWh"}],
        "assignedEditions": [{"expirationDate": "2031-03-16T00:00:00Z", "edition": "4sdvnCrYEjfcKjTvAoigEF"}],
        "customLimits": [{"value": 5, "limitDefinition": "rowsPerMonth"}]
    })
}

#[tokio::test]
async fn parent_admin_overwrites_a_sub_org_with_if_match() {
    let s = TestServer::start().await;
    let admin = session(&s, "admin@parent.example", "parent-admin-password").await;
    let viewer = session(&s, "viewer@parent.example", "viewer-password").await;
    let child = session(&s, "admin@sub.example", "sub-admin-password").await;
    // Who may not: a non-admin of the parent, the org itself, an org on its parent.
    assert_eq!(
        fail(
            &lic(
                &s,
                Method::PUT,
                CHILD,
                Some(&viewer),
                None,
                Some(update_body())
            )
            .await,
            403
        ),
        "AUTH_02"
    );
    assert_eq!(
        fail(
            &lic(
                &s,
                Method::PUT,
                CHILD,
                Some(&child),
                None,
                Some(update_body())
            )
            .await,
            403
        ),
        "AUTH_02"
    );
    assert_eq!(
        fail(
            &lic(
                &s,
                Method::PUT,
                PARENT,
                Some(&admin),
                None,
                Some(update_body())
            )
            .await,
            403
        ),
        "AUTH_02"
    );
    assert_eq!(
        fail(
            &lic(
                &s,
                Method::PUT,
                PARENT,
                Some(&child),
                None,
                Some(update_body())
            )
            .await,
            403
        ),
        "AUTH_02"
    );
    // Validation: each refused with 400 and nothing changed.
    for (bad, why) in [
        (
            json!({"customLicenses": [{"licenseDef": "x", "licenseType": "FOREVER"}]}),
            "license type",
        ),
        (
            json!({"customLicenses": [{"licenseDef": "x", "licenseType": "FREE", "expirationDate": "next year"}]}),
            "date",
        ),
        (
            json!({"assignedEditions": [{"edition": "e", "expirationDate": "2031-13-01T00:00:00Z"}]}),
            "date",
        ),
        (
            json!({"customLimits": [{"limitDefinition": "l", "value": -2}]}),
            "value",
        ),
        (
            json!({"customLimits": [{"limitDefinition": "l", "value": 1}, {"limitDefinition": "l", "value": 2}]}),
            "duplicate",
        ),
        (
            json!({"customLimits": [{"limitDefinition": "l", "value": "many"}]}),
            "type",
        ),
        (json!({"surprise": []}), "unknown field"),
        (json!({"id": PARENT}), "id of another org"),
        (json!([]), "not an object"),
    ] {
        let r = lic(
            &s,
            Method::PUT,
            CHILD,
            Some(&admin),
            None,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(fail(&r, 400), "VALIDATION_01", "{why}: {bad}");
    }
    let before = lic(&s, Method::GET, CHILD, Some(&admin), None, None).await;
    let v0 = version(&before);
    // A GET-modify-PUT round trip (id and parentOrg sent back) with If-Match.
    let mut body = before.json();
    body["customLimits"] = json!([{"limitDefinition": "rowsPerMonth", "value": 5}]);
    let r = lic(
        &s,
        Method::PUT,
        CHILD,
        Some(&admin),
        Some(&etag(&before)),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(version(&r), v0 + 1);
    assert_eq!(
        r.json()["customLimits"],
        json!([{"limitDefinition": "rowsPerMonth", "value": 5}])
    );
    // The other writer still holds version 1: refused, nothing lost.
    let r = lic(
        &s,
        Method::PUT,
        CHILD,
        Some(&admin),
        Some("\"1\""),
        Some(update_body()),
    )
    .await;
    assert_eq!(fail(&r, 412), "PRECONDITION_01");
    assert_eq!(
        fail(
            &lic(
                &s,
                Method::PUT,
                CHILD,
                Some(&admin),
                Some("W/\"junk\""),
                Some(update_body())
            )
            .await,
            412
        ),
        "PRECONDITION_01"
    );
    let now = lic(&s, Method::GET, CHILD, Some(&admin), None, None).await;
    assert_eq!(
        now.json()["customLimits"],
        json!([{"limitDefinition": "rowsPerMonth", "value": 5}])
    );
    // Without If-Match the vendor's blind overwrite still works; * matches any.
    let r = lic(
        &s,
        Method::PUT,
        CHILD,
        Some(&admin),
        Some("*"),
        Some(update_body()),
    )
    .await;
    assert_eq!((r.status, version(&r)), (StatusCode::OK, v0 + 2));
    let r = lic(
        &s,
        Method::PUT,
        CHILD,
        Some(&admin),
        None,
        Some(update_body()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["customLicenses"][0]["expirationDate"],
        "2031-03-16T00:00:00Z"
    );
    assert_eq!(r.json()["assignedEditions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn limits_and_expirations_are_enforced() {
    let s = TestServer::start().await;
    let t = s.app.engine.infa_org_tenant(CHILD).unwrap();
    let consume = |limit: &'static str, amount: i64| {
        let s = &s;
        async move {
            s.admin(
                Method::POST,
                &format!("/tenants/{t}/informatica/consume"),
                Some(json!({"limitDefinition": limit, "amount": amount})),
            )
            .await
        }
    };
    let r = consume("rowsPerMonth", 99_999).await;
    assert_eq!(
        (r.status, r.json()["used"].clone()),
        (StatusCode::OK, json!(99_999))
    );
    assert_eq!(consume("rowsPerMonth", 1).await.json()["used"], 100_000);
    let r = consume("rowsPerMonth", 1).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("limit_reached"))
    );
    assert_eq!(
        consume("09cX4Tmi1qSfrS997ORMYl", 1_000_000_000)
            .await
            .status,
        StatusCode::OK,
        "-1 is unlimited"
    );
    assert_eq!(consume("nope", 1).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        consume("rowsPerMonth", 0).await.status,
        StatusCode::BAD_REQUEST
    );
    // A parent admin raises the limit: the use so far stays counted.
    let admin = session(&s, "admin@parent.example", "parent-admin-password").await;
    let mut body = lic(&s, Method::GET, CHILD, Some(&admin), None, None)
        .await
        .json();
    body["customLimits"][0]["value"] = json!(100_002);
    assert_eq!(
        lic(&s, Method::PUT, CHILD, Some(&admin), None, Some(body))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(consume("rowsPerMonth", 2).await.json()["used"], 100_002);
    assert_eq!(
        consume("rowsPerMonth", 1).await.status,
        StatusCode::FORBIDDEN
    );
    let org = s
        .admin(Method::GET, &format!("/tenants/{t}/informatica"), None)
        .await
        .json();
    assert_eq!(
        org["limits"][0],
        json!({"limitDefinition": "rowsPerMonth", "value": 100_002, "used": 100_002})
    );
    assert!(org["users"][0].get("passwordHash").is_none());

    // Licenses and editions grant until their expiration date.
    let grant = |q: String| {
        let s = &s;
        async move {
            s.admin(
                Method::GET,
                &format!("/tenants/{t}/informatica/grants?{q}"),
                None,
            )
            .await
            .json()
        }
    };
    assert_eq!(
        grant("licenseDef=a5Xjp3VF3sjcyZUDa6UaWh".into()).await["granted"],
        true
    );
    assert_eq!(
        grant("licenseDef=oldTrialLicenseDef0001".into()).await,
        json!({"granted": false, "reason": "expired", "expirationDate": "2024-01-01T00:00:00Z"})
    );
    assert_eq!(
        grant("licenseDef=unknown".into()).await["reason"],
        "unknown"
    );
    assert_eq!(
        grant("edition=4sdvnCrYEjfcKjTvAoigEF".into()).await["granted"],
        true
    );
    s.clock.set(at("2030-06-30T00:00:00Z"));
    assert_eq!(
        grant("edition=4sdvnCrYEjfcKjTvAoigEF".into()).await["granted"],
        false
    );
    assert_eq!(
        grant("licenseDef=a5Xjp3VF3sjcyZUDa6UaWh".into()).await["reason"],
        "expired"
    );
    let r = s
        .admin(
            Method::GET,
            &format!("/tenants/{t}/informatica/grants"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn admin_provisioning_rules() {
    let s = TestServer::start().await;
    let t = s
        .admin(Method::POST, "/tenants", Some(json!({"name": "Solo"})))
        .await
        .json()["id"]
        .as_u64()
        .unwrap();
    let put = |body: Value| {
        let s = &s;
        async move {
            s.admin(
                Method::PUT,
                &format!("/tenants/{t}/informatica"),
                Some(body),
            )
            .await
        }
    };
    // Org ids and usernames are unique across tenants; passwords are required.
    assert_eq!(
        put(json!({"orgId": PARENT})).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        put(
            json!({"orgId": "solo", "users": [{"username": "admin@sub.example", "password": "x"}]})
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        put(json!({"orgId": "solo", "users": [{"username": "u"}]}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(json!({"orgId": "a/b"})).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = put(json!({"orgId": "solo", "users": [{"username": "solo@x", "password": "pw", "admin": true}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let sid = session(&s, "solo@x", "pw").await;
    // Org ids in paths are percent-decoded.
    assert_eq!(
        lic(&s, Method::GET, "so%6co", Some(&sid), None, None)
            .await
            .status,
        StatusCode::OK
    );
    // An org without a parent or children reads only itself.
    assert_eq!(
        lic(&s, Method::GET, "solo", Some(&sid), None, None)
            .await
            .json()["customLicenses"],
        json!([])
    );
    assert_eq!(
        fail(
            &lic(&s, Method::GET, CHILD, Some(&sid), None, None).await,
            403
        ),
        "AUTH_02"
    );
    // A password change ends the user's sessions.
    let old_tag = etag(&lic(&s, Method::GET, "solo", Some(&sid), None, None).await);
    let r = put(json!({"orgId": "solo", "users": [{"username": "solo@x", "password": "pw2", "admin": true}]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        fail(
            &lic(&s, Method::GET, "solo", Some(&sid), None, None).await,
            401
        ),
        "AUTH_01"
    );
    let sid = session(&s, "solo@x", "pw2").await;
    // Deleting the org ends its logins and sessions.
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{t}/informatica"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(fail(&login(&s, "solo@x", "pw2").await, 401), "AUTH_01");
    assert_eq!(
        fail(
            &lic(&s, Method::GET, "solo", Some(&sid), None, None).await,
            401
        ),
        "AUTH_01"
    );
    // Re-created under the same id, it never answers to an ETag of the old one.
    let r = put(json!({"orgId": "solo", "users": [{"username": "solo@x", "password": "pw2", "admin": true}]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sid = session(&s, "solo@x", "pw2").await;
    let tag = etag(&lic(&s, Method::GET, "solo", Some(&sid), None, None).await);
    assert_ne!(tag, old_tag);
}

/// Sessions are state: a session outlives a restart (SIGKILL, then
/// recovery from the log), and the data directory holds only a hash of the
/// session id, never the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_restart_and_the_log_holds_only_its_hash() {
    use common::binary::Binary;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut b = Binary::start(tmp.path(), &["--snapshot-interval", "0"], &[]);
    let (status, v) = b
        .call(
            Method::POST,
            "/saas/public/core/v3/login",
            &[],
            Some(json!({"username": "admin@parent.example", "password": "parent-admin-password"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let sid = v["userInfo"]["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    let path = format!("/saas/public/core/v3/license/org/{PARENT}");
    let header = [("INFA-SESSION-ID", sid.clone())];
    let (status, v) = b.call(Method::GET, &path, &header, None).await;
    assert_eq!(status, 200, "{v}");
    b.kill9();
    let b = Binary::start(tmp.path(), &["--snapshot-interval", "0"], &[]);
    let (status, v) = b.call(Method::GET, &path, &header, None).await;
    assert_eq!(status, 200, "the session was lost in the restart: {v}");
    let (status, v) = b
        .call(
            Method::GET,
            &path,
            &[("INFA-SESSION-ID", "forged".into())],
            None,
        )
        .await;
    assert_eq!(status, 401, "{v}");
    for entry in walk(tmp.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes.windows(sid.len()).any(|w| w == sid.as_bytes()),
            "{} holds the session id",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
