//! The Qlik Cloud Licenses API over HTTP on a real socket: every endpoint,
//! field and error; batch actions with 207; SCIM filters, sorting and cursor
//! pages; consumption; auto-assign; emulated rate limits; concurrency.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::qlik::*;
use common::{at, Resp, TestServer};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn authentication_and_roles() {
    let s = TestServer::start().await;
    let r = q(&s, Method::GET, "/overview", None, None).await;
    err(&r, 401, "LICENSES-002");
    let r = q(&s, Method::GET, "/overview", Some("nope"), None).await;
    err(&r, 401, "LICENSES-002");
    // Reads are open to any key of the tenant.
    for path in [
        "/overview",
        "/status",
        "/settings",
        "/assignments",
        "/consumption",
    ] {
        let r = q(&s, Method::GET, path, Some(READ_KEY), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    // Changes need an admin key.
    for (m, path, body) in [
        (Method::POST, "/assignments/actions/add", json!({"add": []})),
        (
            Method::POST,
            "/assignments/actions/delete",
            json!({"delete": []}),
        ),
        (
            Method::POST,
            "/assignments/actions/update",
            json!({"update": []}),
        ),
        (
            Method::PUT,
            "/settings",
            json!({"autoAssignAnalyzer": false}),
        ),
    ] {
        let r = q(&s, m, path, Some(READ_KEY), Some(body)).await;
        let e = err(&r, 403, "LICENSES-003");
        assert_eq!(e["title"], "Insufficient access");
    }
    // A revoked key is unknown.
    let r = s
        .admin(Method::POST, &format!("/api-keys/{READ_KEY}/revoke"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    err(
        &q(&s, Method::GET, "/status", Some(READ_KEY), None).await,
        401,
        "LICENSES-002",
    );
    // Unknown endpoints and methods.
    err(&get(&s, "/nope").await, 404, "LICENSES-007");
    err(
        &q(&s, Method::DELETE, "/overview", Some(ADMIN_KEY), None).await,
        405,
        "LICENSES-008",
    );
}

#[tokio::test]
async fn overview_status_and_missing_license() {
    let s = TestServer::start().await;
    let v = get(&s, "/overview").await.json();
    assert_eq!(v["licenseNumber"], "9999000000001204");
    assert_eq!(v["secondaryNumber"], "12345");
    assert_eq!(v["product"], "Qlik Sense Enterprise SaaS");
    assert_eq!(v["valid"], "2026-01-01/2027-12-31");
    assert_eq!(
        (v["trial"].clone(), v["origin"].clone(), v["status"].clone()),
        (json!(false), json!("Internal"), json!("Ok"))
    );
    assert_eq!(v["customerId"], "demo-customer-1");
    assert_eq!(v["licenseType"], "subscription");
    assert!(v["licenseKey"].as_str().unwrap().starts_with("eyJ"));
    assert!(v["updated"].is_string() && v["changeTime"].is_string());
    assert_eq!(v["parameters"][0]["name"], "qlikAlerting");
    assert_eq!(v["parameters"][0]["values"]["saas_alerting"], "FULL");
    assert_eq!(v["parameters"][1]["access"]["allotment"], "professional");
    let a = &v["allotments"];
    assert_eq!(
        a[0],
        json!({"name": "professional", "units": 10, "overage": 2, "unitsUsed": 1, "usageClass": "assigned"})
    );
    assert_eq!(
        a[1],
        json!({"name": "analyzer", "units": 25, "unitsUsed": 1, "usageClass": "assigned"})
    );
    assert_eq!(
        a[2],
        json!({"name": "analyzer_time", "units": 300, "overage": 100, "unitsUsed": 0, "usageClass": "time"})
    );

    let v = get(&s, "/status").await.json();
    assert_eq!(
        v,
        json!({"type": "Signed", "trial": false, "valid": "2026-01-01/2027-12-31", "origin": "Internal",
               "status": "Ok", "product": "Qlik Sense Enterprise SaaS", "deactivated": false,
               "extensionStatus": "Unavailable"})
    );
    // Past its interval the license reads as expired.
    s.clock.set(at("2028-01-01T00:00:00Z"));
    assert_eq!(get(&s, "/status").await.json()["status"], "Expired");
    assert_eq!(get(&s, "/overview").await.json()["status"], "Expired");
    s.clock.set(at("2026-11-25T12:00:00Z"));

    // A tenant without a license: status says Missing, the rest is 404.
    let t = demo_tenant(&s);
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{t}/qlik"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get(&s, "/status").await.json()["status"], "Missing");
    err(&get(&s, "/overview").await, 404, "LICENSES-004");
    err(&get(&s, "/assignments").await, 404, "LICENSES-004");
    err(
        &post(&s, "/assignments/actions/add", json!({"add": []})).await,
        404,
        "LICENSES-004",
    );
}

#[tokio::test]
async fn admin_provisioning_is_validated() {
    let s = TestServer::start().await;
    let t = demo_tenant(&s);
    let put = |body: Value| {
        let s = &s;
        async move {
            s.admin(Method::PUT, &format!("/tenants/{t}/qlik"), Some(body))
                .await
        }
    };
    let base = json!({"licenseNumber": "1", "product": "P", "valid": "2026-01-01/2027-01-01"});
    for (patch, path) in [
        (json!({"valid": "2027-01-01/2026-01-01"}), "valid"),
        (json!({"valid": "soon"}), "valid"),
        (
            json!({"allotments": [{"name": "professional", "units": 1, "overage": -2}]}),
            "allotments.overage",
        ),
        (
            json!({"allotments": [{"name": "pro", "units": 1}]}),
            "allotments[0].name",
        ),
        (json!({"status": "Fine"}), "status"),
        (json!({"latestValidTime": "later"}), "latestValidTime"),
        (json!({"bogus": 1}), ""),
        (
            json!({"parameters": [{"name": "p", "values": deep_json(40)}]}),
            "parameters.values",
        ),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = put(body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        if !path.is_empty() {
            assert_eq!(r.json()["error"]["path"], path, "{}", r.json());
        }
    }
    let r = put(json!({"licenseNumber": "1", "product": "P", "valid": "2026-01-01/2027-01-01",
                       "allotments": [{"name": "analyzer", "units": 1}, {"name": "analyzer", "units": 2}]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Nothing changed by the refusals.
    assert_eq!(
        get(&s, "/overview").await.json()["licenseNumber"],
        "9999000000001204"
    );
    let r = s
        .admin(Method::GET, &format!("/tenants/{t}/qlik"), None)
        .await;
    assert_eq!(r.json()["assignments"], 2);
    // A tenant that holds a Qlik license cannot be deleted.
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{t}"), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn every_license_field_reads_back() {
    let s = TestServer::start().await;
    let t = demo_tenant(&s);
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{t}/qlik"),
            Some(json!({
                "licenseNumber": "77", "secondaryNumber": "8", "licenseKey": "key.jwt", "product": "Qlik Cloud",
                "valid": "2026-01-01T00:00:00Z/2026-12-31T00:00:00Z", "trial": true, "origin": "External",
                "status": "Blacklisted", "deactivated": true, "extensionStatus": "Pending", "keyType": "2.0",
                "customerId": "c-1", "licenseType": "trial", "capabilityBankId": "bank-9",
                "parentLicenseNumber": "70", "latestValidTime": "2026-12-31T00:00:00Z",
                "parameters": [{"name": "p", "valid": "./2026-06-01", "access": {"allotment": "analyzer"}, "values": {"k": 1}}],
                "allotments": [{"name": "analyzer", "units": 3, "overage": -1}]
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let v = get(&s, "/overview").await.json();
    for (k, want) in [
        ("licenseNumber", json!("77")),
        ("secondaryNumber", json!("8")),
        ("licenseKey", json!("key.jwt")),
        ("product", json!("Qlik Cloud")),
        ("valid", json!("2026-01-01T00:00:00Z/2026-12-31T00:00:00Z")),
        ("trial", json!(true)),
        ("origin", json!("External")),
        ("status", json!("Blacklisted")),
        ("customerId", json!("c-1")),
        ("licenseType", json!("trial")),
        ("capabilityBankId", json!("bank-9")),
        ("parentLicenseNumber", json!("70")),
        ("latestValidTime", json!("2026-12-31T00:00:00Z")),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    assert_eq!(
        v["parameters"][0],
        json!({"name": "p", "valid": "./2026-06-01", "access": {"allotment": "analyzer"}, "values": {"k": 1}})
    );
    assert_eq!(
        v["allotments"][0],
        json!({"name": "analyzer", "units": 3, "overage": -1, "unitsUsed": 1, "usageClass": "assigned"})
    );
    let st = get(&s, "/status").await.json();
    assert_eq!(
        (
            st["type"].clone(),
            st["deactivated"].clone(),
            st["extensionStatus"].clone()
        ),
        (json!("2.0"), json!(true), json!("Pending"))
    );
    // Unbounded overage (the demo's analyzer assignment stays): past units all are excess, none refused.
    let add: Vec<Value> = (0..6)
        .map(|i| json!({"type": "analyzer", "subject": format!("x{i}")}))
        .collect();
    let r = post(&s, "/assignments/actions/add", json!({ "add": add })).await;
    assert!(r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["status"] == 201));
    let v = get(&s, "/assignments?filter=excess%20eq%20true")
        .await
        .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    // A deactivated or blacklisted license admits no one.
    let r = s
        .admin(
            Method::POST,
            &format!("/tenants/{t}/qlik/access"),
            Some(json!({"subject": "x0"})),
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "license_not_active");
}

#[tokio::test]
async fn settings_get_and_put() {
    let s = TestServer::start().await;
    assert_eq!(
        get(&s, "/settings").await.json(),
        json!({"autoAssignAnalyzer": true, "autoAssignProfessional": false})
    );
    let r = q(
        &s,
        Method::PUT,
        "/settings",
        Some(ADMIN_KEY),
        Some(json!({"autoAssignProfessional": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"autoAssignAnalyzer": true, "autoAssignProfessional": true})
    );
    let r = q(
        &s,
        Method::PUT,
        "/settings",
        Some(ADMIN_KEY),
        Some(json!({"autoAssignAnalyzer": "yes"})),
    )
    .await;
    err(&r, 400, "LICENSES-001");
    let r = q(
        &s,
        Method::PUT,
        "/settings",
        Some(ADMIN_KEY),
        Some(json!([1])),
    )
    .await;
    err(&r, 400, "LICENSES-001");
    assert_eq!(
        get(&s, "/settings").await.json(),
        json!({"autoAssignAnalyzer": true, "autoAssignProfessional": true})
    );
}

/// A fresh Qlik license (professional 1 + 1 overage, analyzer 2) and the
/// add batch the next tests start from; its answer.
async fn added(s: &TestServer) -> Resp {
    fresh(
        s,
        json!([{"name": "professional", "units": 1, "overage": 1}, {"name": "analyzer", "units": 2},
                     {"name": "analyzer_time", "units": 60}]),
    )
    .await;
    post(
        s,
        "/assignments/actions/add",
        json!({"add": [
            {"type": "professional", "subject": "qlik\\kalle"},
            {"type": "professional", "subject": "qlik\\olle"},
            {"type": "professional", "subject": "qlik\\pelle"},
            {"type": "analyzer", "subject": "qlik\\kalle"},
            {"type": "analyzer_time", "subject": "qlik\\x"},
            {"type": "manager", "subject": "qlik\\y"},
            {"type": "analyzer"},
            {"type": "analyzer", "subject": 7, "name": "deprecated", "userId": "u"},
            {"type": "analyzer", "subject": "qlik\\nalle", "name": "Nalle", "userId": "u1"},
            {"type": "analyzer", "subject": "bell\u{7}"},
            {"type": "analyzer", "subject": "x".repeat(257)},
        ]}),
    )
    .await
}

/// [`added`], then the delete batch; its answer.
async fn deleted(s: &TestServer) -> Resp {
    added(s).await;
    // Delete: 200, or 404 for no such assignment (also of another type).
    post(
        s,
        "/assignments/actions/delete",
        json!({"delete": [
            {"type": "professional", "subject": "qlik\\olle"},
            {"type": "analyzer", "subject": "qlik\\kalle"},
            {"type": "analyzer", "subject": "qlik\\no"},
        ]}),
    )
    .await
}

fn units(v: &Value, i: usize) -> Value {
    v["allotments"][i]["unitsUsed"].clone()
}

#[tokio::test]
async fn add_answers_207_per_item() {
    let s = TestServer::start().await;
    let r = added(&s).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let d = r.json()["data"].clone();
    assert_eq!(
        d[0],
        json!({"type": "professional", "subject": "qlik\\kalle", "status": 201})
    );
    assert_eq!(
        d[1],
        json!({"type": "professional", "subject": "qlik\\olle", "status": 201})
    );
    assert_eq!(
        d[2],
        json!({"type": "professional", "subject": "qlik\\pelle", "status": 403, "code": "LICENSES-011",
                            "title": "No available allotment error, No available allotment."})
    );
    assert_eq!(
        (d[3]["status"].clone(), d[3]["code"].clone()),
        (json!(409), json!("LICENSES-012"))
    );
    assert_eq!(
        (d[4]["status"].clone(), d[4]["code"].clone()),
        (json!(400), json!("LICENSES-014"))
    );
    assert_eq!(
        (d[5]["status"].clone(), d[5]["code"].clone()),
        (json!(400), json!("LICENSES-013"))
    );
    assert_eq!(
        (d[6]["status"].clone(), d[6]["code"].clone()),
        (json!(400), json!("LICENSES-015"))
    );
    assert_eq!(
        (d[7]["status"].clone(), d[7]["code"].clone()),
        (json!(400), json!("LICENSES-015"))
    );
    assert_eq!(d[8]["status"], 201);
    for i in [9, 10] {
        assert_eq!(
            (d[i]["status"].clone(), d[i]["code"].clone()),
            (json!(400), json!("LICENSES-015")),
            "control characters and over-long subjects"
        );
    }
    assert_eq!(d.as_array().unwrap().len(), 11);
    // The second professional seat is past units, inside the overage.
    let v = get(&s, "/assignments?sort=subject").await.json();
    let excess: Vec<(String, bool)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["subject"].as_str().unwrap().to_string(),
                a["excess"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        excess,
        vec![
            ("qlik\\kalle".into(), false),
            ("qlik\\nalle".into(), false),
            ("qlik\\olle".into(), true)
        ]
    );
    assert_eq!(v["data"][0]["created"], "2026-11-25T12:00:00.000Z");
    let o = get(&s, "/overview").await.json();
    assert_eq!((units(&o, 0), units(&o, 1)), (json!(2), json!(1)));
}

#[tokio::test]
async fn delete_answers_200_or_404() {
    let s = TestServer::start().await;
    let r = deleted(&s).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let d = r.json()["data"].clone();
    assert_eq!(
        d[0],
        json!({"type": "professional", "subject": "qlik\\olle", "status": 200})
    );
    assert_eq!(
        d[1],
        json!({"type": "analyzer", "subject": "qlik\\kalle", "status": 404, "code": "LICENSES-016", "title": "Assignment not found."})
    );
    assert_eq!(d[2]["code"], "LICENSES-016");
}

#[tokio::test]
async fn update_moves_types_and_subjects() {
    let s = TestServer::start().await;
    deleted(&s).await;
    // Update: type (200), subject (201), not found, no seat (nothing changes).
    let r = post(
        &s,
        "/assignments/actions/update",
        json!({"update": [
            {"type": "analyzer", "subject": "qlik\\kalle", "sourceType": "professional"},
            {"subject": "qlik\\malik", "sourceSubject": "qlik\\kalle"},
            {"type": "professional", "subject": "qlik/sara", "sourceType": "analyzer"},
            {"type": "professional", "subject": "qlik\\nalle", "sourceType": "analyzer"},
            {"subject": "qlik\\nalle"},
            {"type": "analyzer", "subject": "qlik\\malik", "sourceSubject": "qlik\\nalle"},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let d = r.json()["data"].clone();
    assert_eq!(
        d[0],
        json!({"type": "analyzer", "subject": "qlik\\kalle", "sourceType": "professional", "status": 200})
    );
    assert_eq!(
        d[1],
        json!({"type": "analyzer", "subject": "qlik\\malik", "sourceSubject": "qlik\\kalle", "status": 201})
    );
    assert_eq!(
        d[2],
        json!({"type": "professional", "subject": "qlik/sara", "sourceType": "analyzer", "status": 404,
                            "code": "LICENSES-016", "title": "Assignment not found."})
    );
    // kalle's move to analyzer freed the professional seat, so nalle may take it...
    assert_eq!(d[3]["status"], 200);
    assert_eq!(d[4]["code"], "LICENSES-015");
    // ...and malik already holds one.
    assert_eq!(
        (d[5]["status"].clone(), d[5]["code"].clone()),
        (json!(409), json!("LICENSES-012"))
    );
    let v = get(&s, "/assignments?sort=subject").await.json();
    let now: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["subject"].as_str().unwrap().into(),
                a["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        now,
        vec![
            ("qlik\\malik".into(), "analyzer".into()),
            ("qlik\\nalle".into(), "professional".into())
        ]
    );
    let o = get(&s, "/overview").await.json();
    assert_eq!((units(&o, 0), units(&o, 1)), (json!(1), json!(1)));
    // Moving to a type with no seat left changes nothing.
    let r = post(
        &s,
        "/assignments/actions/add",
        json!({"add": [{"type": "analyzer", "subject": "z"}]}),
    )
    .await;
    assert_eq!(r.json()["data"][0]["status"], 201);
    let r = post(
        &s,
        "/assignments/actions/update",
        json!({"update": [{"type": "analyzer", "subject": "qlik\\nalle"}]}),
    )
    .await;
    assert_eq!(r.json()["data"][0]["code"], "LICENSES-011");
    let o = get(&s, "/overview").await.json();
    assert_eq!((units(&o, 0), units(&o, 1)), (json!(1), json!(2)));
    assert_eq!(
        get(
            &s,
            "/assignments?filter=subject%20eq%20%22qlik%5C%5Cnalle%22"
        )
        .await
        .json()["data"][0]["type"],
        "professional"
    );
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let s = TestServer::start().await;
    let raw = |path: &'static str, body: &'static str| {
        let s = &s;
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri(s.url(&format!("/api/v1/licenses{path}")))
                .header("Authorization", format!("Bearer {ADMIN_KEY}"))
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            s.send(req).await
        }
    };
    err(
        &raw("/assignments/actions/add", "{nope").await,
        400,
        "LICENSES-001",
    );
    err(
        &raw("/assignments/actions/add", "").await,
        400,
        "LICENSES-001",
    );
    err(
        &raw("/assignments/actions/add", r#"{"delete": []}"#).await,
        400,
        "LICENSES-001",
    );
    err(
        &raw("/assignments/actions/delete", r#"{"delete": {}}"#).await,
        400,
        "LICENSES-001",
    );
    err(
        &raw("/assignments/actions/update", "[]").await,
        400,
        "LICENSES-001",
    );
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"type": "analyzer", "subject": format!("s{i}")}))
        .collect();
    let r = post(&s, "/assignments/actions/add", json!({ "add": many })).await;
    let e = err(&r, 400, "LICENSES-001");
    assert!(e["detail"].as_str().unwrap().contains("at most 100"), "{e}");
    // Nothing was assigned by any of them.
    assert_eq!(
        get(&s, "/assignments").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

fn subjects(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["subject"].as_str().unwrap().to_string())
        .collect()
}

/// A Qlik license with three users, the demo assignments, and 12 more added
/// a minute apart (every fourth professional).
async fn twelve_more(s: &TestServer) {
    provision(
        s,
        json!([{"name": "professional", "units": 5}, {"name": "analyzer", "units": 100}]),
        json!(["u00", "u01", "u02"]),
    )
    .await;
    // Demo assignments (kalle professional, nalle analyzer) stay; add 12 more a minute apart.
    for i in 0..12 {
        s.clock.advance(60_000);
        let ty = if i % 4 == 0 {
            "professional"
        } else {
            "analyzer"
        };
        let r = post(
            s,
            "/assignments/actions/add",
            json!({"add": [{"type": ty, "subject": format!("u{i:02}")}]}),
        )
        .await;
        assert_eq!(r.json()["data"][0]["status"], 201);
    }
}

fn filter_url(filter: &str) -> String {
    format!(
        "/assignments?limit=100&sort=subject&filter={}",
        urlencode(filter)
    )
}

#[tokio::test]
async fn list_filters_and_where_bad_ones_fail() {
    let s = TestServer::start().await;
    twelve_more(&s).await;
    let cases = [
        (r#"subject eq "u03""#, vec!["u03"]),
        (
            r#"subject ne "u03" and subject sw "u0""#,
            vec![
                "u00", "u01", "u02", "u04", "u05", "u06", "u07", "u08", "u09",
            ],
        ),
        (r#"subject co "1""#, vec!["u01", "u10", "u11"]),
        (r#"subject ew "1""#, vec!["u01", "u11"]),
        (
            r#"type eq "professional""#,
            vec!["qlik\\kalle", "u00", "u04", "u08"],
        ),
        (r#"created gt "2026-11-25T12:10:00Z""#, vec!["u10", "u11"]),
        (
            r#"created ge "2026-11-25T12:10:00Z" and created lt "2026-11-25T12:12:00Z""#,
            vec!["u09", "u10"],
        ),
        (
            r#"created le "2026-11-25T12:00:00Z""#,
            vec!["qlik\\kalle", "qlik\\nalle"],
        ),
        (
            r#"not (subject sw "u") or subject eq "u05""#,
            vec!["qlik\\kalle", "qlik\\nalle", "u05"],
        ),
        (
            r#"(type eq "professional" or subject eq "u01") and not excess eq true"#,
            vec!["qlik\\kalle", "u00", "u01", "u04", "u08"],
        ),
        (
            "excess pr and subject sw \"qlik\"",
            vec!["qlik\\kalle", "qlik\\nalle"],
        ),
    ];
    for (filter, want) in cases {
        let r = get(&s, &filter_url(filter)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{filter}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        assert_eq!(subjects(&r.json()), want, "{filter}");
    }
    // Bad filters and sorts say where.
    let r = get(&s, &filter_url(r#"subject eq "a" and colour eq "b""#)).await;
    let e = err(&r, 400, "LICENSES-009");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("unknown attribute 'colour' at offset 19"),
        "{e}"
    );
    let e = err(
        &get(&s, &filter_url(r#"subject eq "a"#)).await,
        400,
        "LICENSES-009",
    );
    assert!(e["detail"].as_str().unwrap().contains("offset"), "{e}");
    err(
        &get(&s, &filter_url(r#"created gt "tuesday""#)).await,
        400,
        "LICENSES-009",
    );
    err(
        &get(&s, "/assignments?sort=-colour").await,
        400,
        "LICENSES-009",
    );
    err(&get(&s, "/assignments?limit=0").await, 400, "LICENSES-009");
    err(
        &get(&s, "/assignments?limit=101").await,
        400,
        "LICENSES-009",
    );
    err(
        &get(&s, "/assignments?orphans=maybe").await,
        400,
        "LICENSES-009",
    );
    err(
        &get(&s, "/assignments?page=garbage").await,
        400,
        "LICENSES-009",
    );
}

#[tokio::test]
async fn list_sorts_limits_and_orphans() {
    let s = TestServer::start().await;
    twelve_more(&s).await;
    // Sorting both ways on each field.
    let v = get(&s, "/assignments?limit=3&sort=-created").await.json();
    assert_eq!(subjects(&v), vec!["u11", "u10", "u09"]);
    let v = get(&s, "/assignments?limit=2&sort=%2Btype").await.json();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["type"] == "analyzer"));
    let v = get(&s, "/assignments?limit=4&sort=-type").await.json();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["type"] == "professional"));
    let v = get(&s, "/assignments?limit=100&sort=-excess").await.json();
    assert_eq!(v["data"][0]["excess"], false);

    // Default limit is 20; orphans are subjects that are not users of the tenant.
    let v = get(&s, "/assignments").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 14);
    assert_eq!(v["links"], json!({}));
    let v = get(&s, "/assignments?orphans=true&limit=100&sort=subject")
        .await
        .json();
    let orphans = subjects(&v);
    assert_eq!(orphans.len(), 11);
    assert!(!orphans.contains(&"u00".to_string()) && orphans.contains(&"qlik\\kalle".to_string()));
}

#[tokio::test]
async fn list_pages_survive_inserts_and_tokens_bind_to_sorts() {
    let s = TestServer::start().await;
    twelve_more(&s).await;
    // Pages of 4 forward, with an insert in between, then back.
    let mut seen = Vec::new();
    let mut next = "/assignments?limit=4&sort=subject".to_string();
    let mut pages = 0;
    loop {
        let v = get(&s, &next).await.json();
        seen.extend(subjects(&v));
        pages += 1;
        if pages == 2 {
            // An assignment that sorts before the cursor does not shift later pages.
            let r = post(
                &s,
                "/assignments/actions/add",
                json!({"add": [{"type": "analyzer", "subject": "a-first"}]}),
            )
            .await;
            assert_eq!(r.json()["data"][0]["status"], 201);
        }
        match v["links"]["next"]["href"].as_str() {
            Some(h) => {
                assert!(
                    h.starts_with(&format!("http://{}/api/v1/licenses/assignments?", s.addr)),
                    "{h}"
                );
                next = h.split("/api/v1/licenses").nth(1).unwrap().to_string();
            }
            None => break,
        }
        assert!(pages < 10);
    }
    let mut want: Vec<String> = vec!["qlik\\kalle".into(), "qlik\\nalle".into()];
    want.extend((0..12).map(|i| format!("u{i:02}")));
    assert_eq!(seen, want, "each assignment exactly once, in order");
    assert_eq!(pages, 4);
    // The last page links back to the one before it.
    let last = get(&s, &next).await.json();
    let prev = last["links"]["prev"]["href"]
        .as_str()
        .expect("prev link")
        .split("/api/v1/licenses")
        .nth(1)
        .unwrap()
        .to_string();
    let v = get(&s, &prev).await.json();
    assert_eq!(subjects(&v), vec!["u06", "u07", "u08", "u09"]);
    // A token is bound to its sort.
    let tok = prev.split("page=").nth(1).unwrap().to_string();
    err(
        &get(&s, &format!("/assignments?sort=-created&page={tok}")).await,
        400,
        "LICENSES-009",
    );
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn sessions_debit_analyzer_time_and_list_as_consumption() {
    let s = TestServer::start().await;
    fresh(
        &s,
        json!([{"name": "analyzer_time", "units": 30, "overage": 6}]),
    )
    .await;
    let t = demo_tenant(&s);
    let session = |body: Value| {
        let s = &s;
        async move {
            s.admin(
                Method::POST,
                &format!("/tenants/{t}/qlik/sessions"),
                Some(body),
            )
            .await
        }
    };
    // 7 minutes are 2 chunks: 12 minutes.
    let r = session(json!({"user_id": "u1", "app_id": "app-1", "session_id": "s1", "minutes": 7}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(
        (
            r.json()["minutes_used"].clone(),
            r.json()["capacity_used"].clone()
        ),
        (json!(12), json!(2))
    );
    // From start and end times: 10:00 to 10:13 is 13 minutes, 3 chunks.
    let r = session(json!({"user_id": "u2", "start_time": "2026-11-25T10:00:00Z", "end_time": "2026-11-25T10:13:00Z"})).await;
    assert_eq!(r.json()["minutes_used"], 18);
    assert_eq!(r.json()["excess"], false);
    // 30 used of 30: one more chunk is the overage.
    let r = session(json!({"user_id": "u3", "minutes": 1})).await;
    assert_eq!(
        (r.status, r.json()["excess"].clone()),
        (StatusCode::CREATED, json!(true))
    );
    let r = session(json!({"user_id": "u4", "minutes": 1})).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("analyzer_time_exhausted"))
    );
    for bad in [
        json!({"minutes": 1}),
        json!({"user_id": "u", "minutes": -1}),
        json!({"user_id": "u"}),
        json!({"user_id": "u", "minutes": 1, "start_time": "2026-11-25T10:00:00Z"}),
        json!({"user_id": "u", "start_time": "2026-11-25T13:00:00Z"}),
        json!({"user_id": "u", "minutes": 1, "x": 1}),
    ] {
        assert_eq!(
            session(bad.clone()).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let o = get(&s, "/overview").await.json();
    assert_eq!(o["allotments"][0]["unitsUsed"], 36);

    let v = get(&s, "/consumption").await.json();
    let d = v["data"].as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["endTime"], "2026-11-25T10:13:00.000Z");
    assert_eq!(d[0]["duration"], "PT13M");
    assert_eq!(d[0]["userId"], "u2");
    assert_eq!(d[1]["appId"], "app-1");
    assert_eq!(d[1]["sessionId"], "s1");
    assert_eq!(d[1]["duration"], "PT7M");
    assert_eq!(
        (d[1]["minutesUsed"].clone(), d[1]["capacityUsed"].clone()),
        (json!(12), json!(2))
    );
    assert_eq!(d[1]["allotmentId"], "1-analyzer_time");
    assert!(d[1]["id"].is_string() && d[1]["licenseUsage"].is_string());
    let v = get(
        &s,
        &format!(
            "/consumption?filter={}",
            urlencode(r#"endTime lt "2026-11-25T11:00:00Z""#)
        ),
    )
    .await
    .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let v = get(&s, "/consumption?sort=-endTime&limit=2").await.json();
    assert_eq!(v["data"][0]["userId"], "u3");
    let href = v["links"]["next"]["href"]
        .as_str()
        .expect("next")
        .split("/api/v1/licenses")
        .nth(1)
        .unwrap()
        .to_string();
    let v2 = get(&s, &href).await.json();
    assert_eq!(v2["data"][0]["userId"], "u2");
    assert!(v2["links"]["prev"]["href"].is_string() && v2["links"].get("next").is_none());
    err(
        &get(
            &s,
            &format!("/consumption?filter={}", urlencode(r#"userId eq "u1""#)),
        )
        .await,
        400,
        "LICENSES-009",
    );
    // The month's capacity starts again on the 1st (UTC).
    s.clock.set(at("2026-12-01T00:00:00Z"));
    assert_eq!(
        get(&s, "/overview").await.json()["allotments"][0]["unitsUsed"],
        0
    );
    let r = session(json!({"user_id": "u4", "minutes": 30})).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn access_check_auto_assigns_in_order() {
    let s = TestServer::start().await;
    fresh(
        &s,
        json!([{"name": "professional", "units": 1}, {"name": "analyzer", "units": 1},
                     {"name": "analyzer_time", "units": 6}]),
    )
    .await;
    let t = demo_tenant(&s);
    let access = |subject: &'static str| {
        let s = &s;
        async move {
            s.admin(
                Method::POST,
                &format!("/tenants/{t}/qlik/access"),
                Some(json!({"subject": subject})),
            )
            .await
        }
    };
    let put = |v: Value| {
        let s = &s;
        async move { q(s, Method::PUT, "/settings", Some(ADMIN_KEY), Some(v)).await }
    };
    put(json!({"autoAssignProfessional": false, "autoAssignAnalyzer": false})).await;
    // No auto-assign: analyzer capacity admits.
    let r = access("a").await;
    assert_eq!(
        r.json()["access"],
        json!({"allowed": true, "via": "analyzer_time", "type": "analyzer_time"})
    );
    put(json!({"autoAssignProfessional": true, "autoAssignAnalyzer": true})).await;
    assert_eq!(access("a").await.json()["access"]["type"], "professional");
    assert_eq!(
        access("a").await.json()["access"],
        json!({"allowed": true, "via": "assignment", "type": "professional"})
    );
    assert_eq!(access("b").await.json()["access"]["type"], "analyzer");
    assert_eq!(access("c").await.json()["access"]["via"], "analyzer_time");
    // Spend the capacity: now c is refused.
    let r = s
        .admin(
            Method::POST,
            &format!("/tenants/{t}/qlik/sessions"),
            Some(json!({"user_id": "c", "minutes": 6})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = access("c").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("no_available_allotment"))
    );
    assert_eq!(
        subjects(&get(&s, "/assignments?sort=subject").await.json()),
        vec!["a", "b"]
    );
    // An expired license admits no one.
    s.clock.set(at("2027-06-01T00:00:00Z"));
    let r = access("a").await;
    assert_eq!(r.json()["error"]["code"], "license_not_active");
    assert_eq!(
        s.admin(
            Method::POST,
            &format!("/tenants/{t}/qlik/access"),
            Some(json!({}))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_over_assign() {
    let s = std::sync::Arc::new(TestServer::start().await);
    fresh(
        &s,
        json!([{"name": "professional", "units": 10, "overage": 2}]),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let r = post(
                &s,
                "/assignments/actions/add",
                json!({"add": [{"type": "professional", "subject": format!("c{i}")}]}),
            )
            .await;
            r.json()["data"][0]["status"].as_u64().unwrap()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => ok += 1,
            403 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(ok, 12);
    let v = get(&s, "/assignments?limit=100").await.json();
    let d = v["data"].as_array().unwrap();
    assert_eq!(d.len(), 12);
    assert_eq!(d.iter().filter(|a| a["excess"] == true).count(), 2);
    assert_eq!(
        get(&s, "/overview").await.json()["allotments"][0]["unitsUsed"],
        12
    );

    // Concurrent moves between types and subjects never lose or double a seat.
    fresh(
        &s,
        json!([{"name": "professional", "units": 20}, {"name": "analyzer", "units": 20}]),
    )
    .await;
    let add: Vec<Value> = (0..20)
        .map(|i| json!({"type": "professional", "subject": format!("m{i}")}))
        .collect();
    post(&s, "/assignments/actions/add", json!({ "add": add })).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let body = if i % 2 == 0 {
                json!({"update": [{"type": "analyzer", "subject": format!("m{}", i / 2), "sourceType": "professional"}]})
            } else {
                json!({"update": [{"subject": format!("n{}", i / 2), "sourceSubject": format!("m{}", i / 2)}]})
            };
            post(&s, "/assignments/actions/update", body).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = get(&s, "/assignments?limit=100").await.json();
    let d = v["data"].as_array().unwrap();
    assert_eq!(d.len(), 20, "no assignment lost or doubled");
    let names: HashSet<String> = d
        .iter()
        .map(|a| a["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 20);
    let pro = d.iter().filter(|a| a["type"] == "professional").count() as u64;
    let o = get(&s, "/overview").await.json();
    assert_eq!(o["allotments"][0]["unitsUsed"], pro);
    assert_eq!(o["allotments"][1]["unitsUsed"], 20 - pro);
}

#[tokio::test]
async fn emulated_rate_limits_answer_429_with_retry_after() {
    let s = TestServer::start_with(|o| o.emulate_rate_limits = true).await;
    for i in 0..100 {
        let r = post(&s, "/assignments/actions/add", json!({"add": []})).await;
        assert_eq!(r.status, StatusCode::MULTI_STATUS, "request {i}");
    }
    let r = post(&s, "/assignments/actions/add", json!({"add": []})).await;
    err(&r, 429, "LICENSES-005");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Tier 1 counts separately.
    for i in 0..1000 {
        assert_eq!(get(&s, "/status").await.status, StatusCode::OK, "read {i}");
    }
    err(&get(&s, "/status").await, 429, "LICENSES-005");
    // The next minute starts afresh.
    s.clock.advance(60_000);
    assert_eq!(get(&s, "/status").await.status, StatusCode::OK);
    assert_eq!(
        post(&s, "/assignments/actions/add", json!({"add": []}))
            .await
            .status,
        StatusCode::MULTI_STATUS
    );
    // Off by default.
    let plain = TestServer::start().await;
    for _ in 0..101 {
        assert_eq!(
            post(&plain, "/assignments/actions/add", json!({"add": []}))
                .await
                .status,
            StatusCode::MULTI_STATUS
        );
    }
}
