//! Yext License Packs and Assignments over HTTP on a real socket: packs and
//! assignments with token pages, the wildcard pack, assign / remove /
//! scheduled removal (across midnight with an injected clock), the envelope
//! and every error, and concurrent assigns on a pack's last seat.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::yext::*;
use common::{at, TestServer};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn packs_list_with_token_pages() {
    let s = TestServer::start().await;
    let r = ok(&y(
        &s,
        Method::GET,
        "/v2/accounts/1234567/licensepacks",
        "",
        None,
    )
    .await);
    assert!(r.get("count").is_none(), "no count in Yext's shape");
    assert_eq!(
        r["licensePacks"],
        json!([
            {"id": "listings", "name": "Listings", "total": 5, "assigned": 2, "available": 3,
             "notes": "Local listings on every publisher"},
            {"id": "reviews", "name": "Reviews", "total": 2, "assigned": 1, "available": 1, "notes": ""},
        ]),
        "the inactive pack is not listed"
    );
    assert!(r.get("nextPageToken").is_none());
    // `me` is the key's own account; Yext's OpenAPI spelling works too.
    let me = ok(&y(&s, Method::GET, "/v2/accounts/me/license-packs", "", None).await);
    assert_eq!(me["licensePacks"], r["licensePacks"]);

    let packs: Vec<Value> = (0..7)
        .map(|i| json!({"id": format!("p{i}"), "name": format!("Pack {i}"), "total": i}))
        .collect();
    provision(&s, Value::Array(packs)).await;
    let mut ids = Vec::new();
    let mut q = "pageSize=3".to_string();
    let mut pages = 0;
    loop {
        let r = ok(&y(&s, Method::GET, "/v2/accounts/me/licensepacks", &q, None).await);
        ids.extend(
            r["licensePacks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match r["nextPageToken"].as_str() {
            Some(t) => q = format!("pageSize=3&pageToken={t}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    // Assignments the old packs held stay on them until removed.
    let r = ok(&y(
        &s,
        Method::GET,
        "/v2/accounts/me/licensepacks/-/assignments",
        "",
        None,
    )
    .await);
    assert_eq!(flat(&r).len(), 3);
}

#[tokio::test]
async fn assign_remove_and_list_assignments() {
    let s = TestServer::start().await;
    let base = "/v2/accounts/1234567/licensepacks";
    // Assign: a seat is taken once, however often it is asked.
    let r = ok(&y(
        &s,
        Method::POST,
        &format!("{base}/reviews/assignments/store-002"),
        "",
        None,
    )
    .await);
    // A LicenseAssignment: the pack as it now stands and the entity.
    assert_eq!(
        r,
        json!({
            "licensePack": {"id": "reviews", "name": "Reviews", "total": 2, "assigned": 2,
                            "available": 0, "notes": ""},
            "assignedEntities": [{"entityId": "store-002"}],
        })
    );
    let r = ok(&y(
        &s,
        Method::POST,
        &format!("{base}/reviews/assignments/store-002"),
        "",
        None,
    )
    .await);
    assert_eq!(r["assignedEntities"], json!([{"entityId": "store-002"}]));
    let packs = ok(&y(&s, Method::GET, base, "", None).await);
    assert_eq!(packs["licensePacks"][1]["assigned"], 2);
    assert_eq!(packs["licensePacks"][1]["available"], 0);
    // The pack is full.
    assert_eq!(
        fail(
            &y(
                &s,
                Method::POST,
                &format!("{base}/reviews/assignments/store-003"),
                "",
                None
            )
            .await,
            409
        ),
        2006
    );
    // Unknown and inactive packs.
    assert_eq!(
        fail(
            &y(
                &s,
                Method::POST,
                &format!("{base}/nope/assignments/store-003"),
                "",
                None
            )
            .await,
            404
        ),
        2004
    );
    assert_eq!(
        fail(
            &y(
                &s,
                Method::POST,
                &format!("{base}/legacy/assignments/store-003"),
                "",
                None
            )
            .await,
            404
        ),
        2004
    );
    assert_eq!(
        fail(
            &y(
                &s,
                Method::GET,
                &format!("{base}/nope/assignments"),
                "",
                None
            )
            .await,
            404
        ),
        2004
    );

    // One pack, all packs ('-'), one entity's packs.
    let r = ok(&y(
        &s,
        Method::GET,
        &format!("{base}/listings/assignments"),
        "",
        None,
    )
    .await);
    assert_eq!(
        r,
        json!({"licenseAssignments": [{
            "licensePack": {"id": "listings", "name": "Listings", "total": 5, "assigned": 2,
                            "available": 3, "notes": "Local listings on every publisher"},
            "assignedEntities": [{"entityId": "store-001"}, {"entityId": "store-002"}],
        }]})
    );
    let r = ok(&y(&s, Method::GET, &format!("{base}/-/assignments"), "", None).await);
    assert_eq!(flat(&r).len(), 4);
    assert_eq!(
        r["licenseAssignments"].as_array().map(Vec::len),
        Some(2),
        "one group per pack"
    );
    let r = ok(&y(
        &s,
        Method::GET,
        &format!("{base}/-/assignments"),
        "assignedEntity=store-001",
        None,
    )
    .await);
    let packs: Vec<String> = flat(&r).into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(packs, vec!["listings", "reviews"]);
    let r = ok(&y(
        &s,
        Method::GET,
        &format!("{base}/reviews/assignments"),
        "assignedEntity=store-001",
        None,
    )
    .await);
    assert_eq!(flat(&r).len(), 1);

    // Remove at once; removing again is 404.
    assert_eq!(
        ok(&y(
            &s,
            Method::DELETE,
            &format!("{base}/reviews/assignments/store-002"),
            "",
            None
        )
        .await),
        json!({})
    );
    assert_eq!(
        fail(
            &y(
                &s,
                Method::DELETE,
                &format!("{base}/reviews/assignments/store-002"),
                "",
                None
            )
            .await,
            404
        ),
        2005
    );
    let packs = ok(&y(&s, Method::GET, base, "", None).await);
    assert_eq!(packs["licensePacks"][1]["available"], 1);
    // Entity ids may hold reserved characters, percent-encoded.
    let r = ok(&y(
        &s,
        Method::POST,
        &format!("{base}/listings/assignments/store%20%23%2B9"),
        "",
        None,
    )
    .await);
    assert_eq!(r["assignedEntities"][0]["entityId"], "store #+9");
}

#[tokio::test]
async fn assignment_pages_cover_everything_once() {
    let s = TestServer::start().await;
    provision(
        &s,
        json!([{"id": "a", "total": 30}, {"id": "b", "total": 30}]),
    )
    .await;
    let base = "/v2/accounts/me/licensepacks";
    for i in 0..12 {
        for p in ["a", "b"] {
            ok(&y(
                &s,
                Method::POST,
                &format!("{base}/{p}/assignments/e{i:02}"),
                "",
                None,
            )
            .await);
        }
    }
    for (pack, query, want) in [
        ("-", "", 24 + 3),
        ("a", "", 12),
        ("-", "assignedEntity=e05", 2),
    ] {
        let mut seen = Vec::new();
        let mut q = format!("pageSize=5&{query}");
        loop {
            let r = ok(&y(
                &s,
                Method::GET,
                &format!("{base}/{pack}/assignments"),
                &q,
                None,
            )
            .await);
            for (p, e, _) in flat(&r) {
                seen.push(format!("{p}/{e}"));
            }
            match r["nextPageToken"].as_str() {
                Some(t) => q = format!("pageSize=5&{query}&pageToken={t}"),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "{pack} {query}: no item twice");
        assert_eq!(seen.len(), want as usize, "{pack} {query}");
    }
    assert_eq!(
        fail(
            &y(
                &s,
                Method::GET,
                &format!("{base}/-/assignments"),
                "pageToken=%%%",
                None
            )
            .await,
            400
        ),
        2008
    );
    assert_eq!(
        fail(
            &y(
                &s,
                Method::GET,
                &format!("{base}/-/assignments"),
                "pageSize=0",
                None
            )
            .await,
            400
        ),
        2008
    );
    assert_eq!(
        fail(&y(&s, Method::GET, base, "pageSize=51", None).await, 400),
        2008
    );
}

#[tokio::test]
async fn scheduled_removal_happens_at_midnight() {
    let s = TestServer::start().await;
    let one = "/v2/accounts/me/licensepacks/reviews/assignments/store-001";
    // Bad bodies.
    for (body, why) in [
        (json!({"expirationDate": "2026-11-25"}), "today"),
        (json!({"expirationDate": "2026-02-30"}), "no such day"),
        (json!({"expirationDate": "26-12-01"}), "format"),
        (json!({"expirationDate": "2026-12-5 "}), "not canonical"),
        (json!({"expirationDate": 20261201}), "type"),
        (json!({"expiry": "2026-12-01"}), "unknown field"),
        (json!([1]), "not an object"),
    ] {
        assert_eq!(
            fail(&y(&s, Method::PUT, one, "", Some(body)).await, 400),
            2007,
            "{why}"
        );
    }
    assert_eq!(
        fail(
            &y(
                &s,
                Method::PUT,
                "/v2/accounts/me/licensepacks/reviews/assignments/nobody",
                "",
                Some(json!({"expirationDate": "2026-11-26"}))
            )
            .await,
            404
        ),
        2005
    );
    // Schedule for tomorrow; cancel with null; schedule again.
    let r = ok(&y(
        &s,
        Method::PUT,
        one,
        "",
        Some(json!({"expirationDate": "2026-11-26"})),
    )
    .await);
    assert_eq!(r["licensePack"]["id"], "reviews");
    assert_eq!(
        r["assignedEntities"],
        json!([{"entityId": "store-001", "expirationDate": "2026-11-26"}])
    );
    let r = ok(&y(
        &s,
        Method::PUT,
        one,
        "",
        Some(json!({"expirationDate": null})),
    )
    .await);
    assert_eq!(r["assignedEntities"], json!([{"entityId": "store-001"}]));
    ok(&y(
        &s,
        Method::PUT,
        one,
        "",
        Some(json!({"expirationDate": "2026-11-27"})),
    )
    .await);
    let r = ok(&y(&s, Method::PUT, one, "", Some(json!({}))).await);
    assert!(
        r.get("expirationDate").is_none(),
        "an omitted date cancels too"
    );
    ok(&y(
        &s,
        Method::PUT,
        one,
        "",
        Some(json!({"expirationDate": "2026-11-26"})),
    )
    .await);
    let full = ok(&y(
        &s,
        Method::POST,
        "/v2/accounts/me/licensepacks/reviews/assignments/store-009",
        "",
        None,
    )
    .await);
    assert_eq!(full["assignedEntities"][0]["entityId"], "store-009");
    // The pack is full until midnight.
    s.clock.set(at("2026-11-25T23:59:59.999Z"));
    assert_eq!(
        fail(
            &y(
                &s,
                Method::POST,
                "/v2/accounts/me/licensepacks/reviews/assignments/store-010",
                "",
                None
            )
            .await,
            409
        ),
        2006
    );
    let r = ok(&y(
        &s,
        Method::GET,
        "/v2/accounts/me/licensepacks/reviews/assignments",
        "",
        None,
    )
    .await);
    assert_eq!(flat(&r).len(), 2);
    // At midnight it is gone and its seat is free, before any sweep ran...
    s.clock.set(at("2026-11-26T00:00:00Z"));
    let r = ok(&y(
        &s,
        Method::GET,
        "/v2/accounts/me/licensepacks/reviews/assignments",
        "",
        None,
    )
    .await);
    assert_eq!(
        flat(&r),
        vec![("reviews".to_string(), "store-009".to_string(), None)]
    );
    let packs = ok(&y(&s, Method::GET, "/v2/accounts/me/licensepacks", "", None).await);
    assert_eq!(packs["licensePacks"][1]["assigned"], 1);
    // ...and the expiry sweeper removes it for good.
    let acc = s.app.engine.yext(tenant(&s)).unwrap();
    assert_eq!(acc.image().assignments.len(), 4);
    tally::server::sweep_once(&s.app, s.now()).await;
    assert_eq!(acc.image().assignments.len(), 3);
    ok(&y(
        &s,
        Method::POST,
        "/v2/accounts/me/licensepacks/reviews/assignments/store-010",
        "",
        None,
    )
    .await);
    assert_eq!(
        fail(
            &y(
                &s,
                Method::POST,
                "/v2/accounts/me/licensepacks/reviews/assignments/store-011",
                "",
                None
            )
            .await,
            409
        ),
        2006
    );
}

#[tokio::test]
async fn envelope_errors() {
    let s = TestServer::start().await;
    let get = |uri: String| {
        let s = &s;
        async move {
            s.send(
                Request::builder()
                    .uri(s.url(&uri))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
        }
    };
    let p = "/v2/accounts/1234567/licensepacks";
    assert_eq!(fail(&get(format!("{p}?api_key={KEY}")).await, 400), 2001);
    assert_eq!(
        fail(&get(format!("{p}?v=2026&api_key={KEY}")).await, 400),
        2001
    );
    // Not days of the calendar: a 13th month, a 30th of February, a 29th
    // of February outside a leap year.
    for v in ["20261332", "20260230", "20250229", "+2026011"] {
        assert_eq!(
            fail(&get(format!("{p}?v={v}&api_key={KEY}")).await, 400),
            2001,
            "{v}"
        );
    }
    // A leap day is one.
    let r = get(format!("{p}?v=20240229&api_key={KEY}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(fail(&get(format!("{p}?v={V}")).await, 401), 2002);
    assert_eq!(
        fail(&get(format!("{p}?v={V}&api_key=nope")).await, 401),
        2002
    );
    assert_eq!(
        fail(
            &get(format!("/v2/accounts/999/licensepacks?v={V}&api_key={KEY}")).await,
            403
        ),
        2003
    );
    assert_eq!(
        fail(
            &get(format!("/v2/accounts/me/other?v={V}&api_key={KEY}")).await,
            404
        ),
        2009
    );
    assert_eq!(fail(&y(&s, Method::DELETE, p, "", None).await, 405), 2010);
    assert_eq!(
        fail(
            &y(&s, Method::POST, &format!("{p}/-/assignments/e1"), "", None).await,
            400
        ),
        2007
    );
    // A key of a tenant without a Yext account.
    let t = s
        .admin(Method::POST, "/tenants", Some(json!({"name": "Other"})))
        .await
        .json()["id"]
        .as_u64()
        .unwrap();
    let k = s
        .admin(
            Method::POST,
            "/api-keys",
            Some(json!({"tenant_id": t, "role": "admin"})),
        )
        .await
        .json();
    let key = k["api_key"].as_str().unwrap();
    assert_eq!(
        fail(
            &get(format!("/v2/accounts/me/licensepacks?v={V}&api_key={key}")).await,
            403
        ),
        2003
    );
    // Admin validation: account ids are unique, packs are checked.
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{t}/yext"),
            Some(json!({"accountId": "1234567"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for bad in [
        json!({"accountId": "me"}),
        json!({"accountId": "a", "packs": [{"id": "-", "total": 1}]}),
        json!({"accountId": "a", "packs": [{"id": "x", "total": -1}]}),
        json!({"accountId": "a/b"}),
    ] {
        let r = s
            .admin(
                Method::PUT,
                &format!("/tenants/{t}/yext"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.json());
    }
    let r = s.admin(Method::PUT, &format!("/tenants/{t}/yext"),
        Some(json!({"accountId": "a", "packs": [{"id": "x", "total": 1}, {"id": "x", "total": 2}]}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_assigns_on_the_last_seat_have_one_winner() {
    let s = Arc::new(TestServer::start().await);
    provision(&s, json!([{"id": "last", "total": 1}])).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            y(
                &s,
                Method::POST,
                &format!("/v2/accounts/me/licensepacks/last/assignments/e{i}"),
                "",
                None,
            )
            .await
            .status
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => won += 1,
            StatusCode::CONFLICT => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(won, 1);
    let r = ok(&y(
        &s,
        Method::GET,
        "/v2/accounts/me/licensepacks/last/assignments",
        "",
        None,
    )
    .await);
    assert_eq!(flat(&r).len(), 1);
}

/// What Yext's Go client (`yext-go`) and its OpenAPI description send and
/// expect beyond the other tests: the `api-key` header, a `null` create body,
/// an update body carrying `entityId`, and a pack listed with no entities.
#[tokio::test]
async fn documented_clients_requests_and_shapes() {
    let s = TestServer::start().await;
    let send = |method: Method, path: &str, header_key: Option<&str>, body: &'static str| {
        let mut b = Request::builder()
            .method(method)
            .uri(s.url(&format!("{path}?v={V}")));
        if let Some(k) = header_key {
            b = b.header("api-key", k);
        }
        s.send(b.body(Full::new(Bytes::from(body))).unwrap())
    };
    // The header scheme.
    let r = ok(&send(Method::GET, "/v2/accounts/me/license-packs", Some(KEY), "").await);
    assert_eq!(r["licensePacks"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        fail(
            &send(Method::GET, "/v2/accounts/me/license-packs", None, "").await,
            401
        ),
        2002
    );
    assert_eq!(
        fail(
            &send(
                Method::GET,
                "/v2/accounts/me/license-packs",
                Some("nope"),
                ""
            )
            .await,
            401
        ),
        2002
    );
    // Create with a `null` body, as the Go client posts it.
    let one = "/v2/accounts/me/license-packs/reviews/assigned-entities/store-007";
    let r = ok(&send(Method::POST, one, Some(KEY), "null").await);
    assert_eq!(r["assignedEntities"], json!([{"entityId": "store-007"}]));
    // Update with the entity in the body; another entity there is refused.
    let r = ok(&send(
        Method::PUT,
        one,
        Some(KEY),
        r#"{"expirationDate":"2026-12-01","entityId":"store-007"}"#,
    )
    .await);
    assert_eq!(
        r["assignedEntities"],
        json!([{"entityId": "store-007", "expirationDate": "2026-12-01"}])
    );
    assert_eq!(
        fail(
            &send(Method::PUT, one, Some(KEY), r#"{"entityId":"store-008"}"#).await,
            400
        ),
        2007
    );
    // The Go client's update without a date cancels the removal.
    let r = ok(&send(Method::PUT, one, Some(KEY), r#"{"entityId":"store-007"}"#).await);
    assert_eq!(r["assignedEntities"], json!([{"entityId": "store-007"}]));
    // Delete answers an empty object.
    assert_eq!(
        ok(&send(Method::DELETE, one, Some(KEY), "").await),
        json!({})
    );

    // A pack without assignments is listed with no entities; the wildcard
    // over an account without assignments lists nothing.
    provision(&s, json!([{"id": "empty", "total": 3, "notes": "n"}])).await;
    let r = ok(&send(
        Method::GET,
        "/v2/accounts/me/license-packs/empty/assigned-entities",
        Some(KEY),
        "",
    )
    .await);
    assert_eq!(
        r,
        json!({"licenseAssignments": [{
            "licensePack": {"id": "empty", "name": "", "total": 3, "assigned": 0, "available": 3, "notes": "n"},
            "assignedEntities": [],
        }]})
    );
    let t = tenant(&s);
    let r = s
        .admin(Method::DELETE, &format!("/tenants/{t}/yext"), None)
        .await;
    assert!(r.status.is_success());
    provision(&s, json!([{"id": "fresh", "total": 1}])).await;
    let r = ok(&send(
        Method::GET,
        "/v2/accounts/me/licensepacks/-/assignments",
        Some(KEY),
        "",
    )
    .await);
    assert_eq!(r, json!({"licenseAssignments": []}));
}
