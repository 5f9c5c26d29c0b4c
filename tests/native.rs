//! The native API over HTTP: every endpoint's success and its error codes,
//! reservations (exact under concurrency, committed, voided, expired),
//! idempotency, dry runs, preflights, batches, signed requests and roles.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use common::native::*;
use common::{TestServer, API_KEY};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const LIC: &str = "/v1/licenses/DEMO-STUDIO-0001";

fn usage_of(license: &Value, code: &str) -> Value {
    license["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["code"] == code)
        .map(|f| f["usage"].clone())
        .expect("feature")
}

async fn read(s: &TestServer) -> Value {
    ok(&n(s, Method::GET, LIC, None).await, StatusCode::OK)
}

#[tokio::test]
async fn reads_a_license_with_its_features() {
    let s = TestServer::start().await;
    let l = read(&s).await;
    assert_eq!(l["license_key"], STUDIO);
    assert_eq!(l["product"]["code"], "studio");
    assert_eq!(l["usable"], true);
    assert_eq!(l["activations"]["max"], 3);
    let credits = usage_of(&l, "ai-credits");
    assert_eq!(
        (credits["used"].as_i64(), credits["max"].as_i64()),
        (Some(0), Some(1000))
    );
    assert_eq!(credits["remaining"], 1100, "max plus overages");
    assert_eq!(credits["period_end"], "2026-12-01T00:00:00.000Z");
    let export = l["features"][1].clone();
    assert_eq!(export["floating"]["capacity"], 2);
    // A user's licenses of a user-based product.
    let r = n(
        &s,
        Method::GET,
        "/v1/products/cloud/users/alice@example.com/licenses",
        None,
    )
    .await;
    let list = ok(&r, StatusCode::OK);
    assert_eq!(list["licenses"][0]["user"], "alice@example.com");
    let id = list["licenses"][0]["id"].as_u64().expect("id");
    let one = n(
        &s,
        Method::GET,
        &format!("/v1/products/cloud/users/alice@example.com/licenses/{id}"),
        None,
    )
    .await;
    assert_eq!(ok(&one, StatusCode::OK)["id"], id);
    // Errors.
    problem(
        &n(&s, Method::GET, "/v1/licenses/NOPE", None).await,
        StatusCode::NOT_FOUND,
        "license_not_found",
    );
    problem(
        &n(
            &s,
            Method::GET,
            "/v1/products/studio/users/alice@example.com/licenses",
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &n(
            &s,
            Method::GET,
            "/v1/products/cloud/users/nobody@example.com/licenses",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "user_not_found",
    );
    problem(
        &n(&s, Method::GET, "/v1/nothing", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    problem(
        &n(&s, Method::DELETE, LIC, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    problem(
        &call(&s, "no-such-key", Method::GET, LIC, None, &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let r = s
        .send(
            hyper::Request::get(s.url(LIC))
                .body(Default::default())
                .expect("request"),
        )
        .await;
    problem(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn checks_answer_allowed_or_the_refusal() {
    let s = TestServer::start().await;
    let check = |body: Value| {
        let s = &s;
        async move {
            ok(
                &n(s, Method::POST, "/v1/check", Some(body)).await,
                StatusCode::OK,
            )
        }
    };
    let a = check(json!({"license_key": STUDIO, "feature": "render"})).await;
    assert_eq!(
        (a["allowed"].as_bool(), a["code"].as_str()),
        (Some(true), Some("ok"))
    );
    assert_eq!(a["feature"]["code"], "render");
    // A floating feature needs the device, which must be activated; it takes its seat.
    let a = check(json!({"license_key": STUDIO, "feature": "export-4k"})).await;
    assert_eq!(
        (a["allowed"].as_bool(), a["code"].as_str()),
        (Some(false), Some("device_required"))
    );
    let a = check(json!({"license_key": STUDIO, "feature": "export-4k", "device": "pc-9"})).await;
    assert_eq!(a["code"], "device_not_found");
    let r = n(
        &s,
        Method::PUT,
        &format!("{LIC}/devices/pc-9"),
        Some(json!({"hostname": "pc"})),
    )
    .await;
    assert_eq!(ok(&r, StatusCode::CREATED)["new"], true);
    let a = check(json!({"license_key": STUDIO, "feature": "export-4k", "device": "pc-9"})).await;
    assert_eq!(a["allowed"], true, "{a}");
    assert_eq!(a["feature"]["floating"]["in_use"], 1);
    let r = n(
        &s,
        Method::GET,
        &format!("{LIC}/features/export-4k/check?device=pc-9"),
        None,
    )
    .await;
    assert_eq!(
        ok(&r, StatusCode::OK)["feature"]["floating"]["in_use"],
        1,
        "renewed, not taken again"
    );
    // Unknown license and feature are refusals too.
    let a = check(json!({"license_key": "NOPE", "feature": "render"})).await;
    assert_eq!(a["code"], "license_not_found");
    let a = check(json!({"license_key": STUDIO, "feature": "nope"})).await;
    assert_eq!(a["code"], "feature_not_found");
    // By product and user.
    let a = check(json!({"product": "cloud", "username": "alice@example.com", "feature": "sync"}))
        .await;
    assert_eq!(a["allowed"], true, "{a}");
    // Many at once, at most 100.
    let many = json!({"checks": [
        {"license_key": STUDIO, "feature": "render"},
        {"license_key": STUDIO, "feature": "nope"},
    ]});
    let r = check(many).await;
    assert_eq!(r["results"][0]["allowed"], true);
    assert_eq!(r["results"][1]["code"], "feature_not_found");
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"license_key": STUDIO, "feature": "render"}))
        .collect();
    problem(
        &n(
            &s,
            Method::POST,
            "/v1/check",
            Some(json!({"checks": too_many})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &n(
            &s,
            Method::POST,
            "/v1/check",
            Some(json!({"feature": "render", "extra": 1})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // A license that expired answers its refusal.
    s.clock.set(common::at("2040-01-01T00:00:00Z"));
    let a = check(json!({"product": "cloud", "username": "alice@example.com", "feature": "sync"}))
        .await;
    assert_eq!(a["allowed"], false);
}

#[tokio::test]
async fn devices_activate_and_deactivate() {
    let s = TestServer::start().await;
    let path = format!("{LIC}/devices/dev-1");
    let r = n(
        &s,
        Method::PUT,
        &path,
        Some(json!({"os_ver": "14", "is_vm": false})),
    )
    .await;
    let d = ok(&r, StatusCode::CREATED);
    assert_eq!(
        (d["new"].as_bool(), d["active"].as_bool()),
        (Some(true), Some(true))
    );
    let again = ok(&n(&s, Method::PUT, &path, None).await, StatusCode::OK);
    assert_eq!(
        (again["new"].as_bool(), again["device_id"].clone()),
        (Some(false), d["device_id"].clone())
    );
    problem(
        &n(&s, Method::PUT, &path, Some(json!({"hostnme": "typo"}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // Three seats: the demo's own device, dev-1, and one more.
    ok(
        &n(&s, Method::PUT, &format!("{LIC}/devices/dev-2"), None).await,
        StatusCode::CREATED,
    );
    problem(
        &n(&s, Method::PUT, &format!("{LIC}/devices/dev-3"), None).await,
        StatusCode::CONFLICT,
        "activation_limit_reached",
    );
    let gone = ok(&n(&s, Method::DELETE, &path, None).await, StatusCode::OK);
    assert_eq!(gone["active"], false);
    problem(
        &n(&s, Method::DELETE, &path, None).await,
        StatusCode::NOT_FOUND,
        "device_not_found",
    );
}

#[tokio::test]
async fn floating_seats_are_taken_renewed_listed_and_released() {
    let s = TestServer::start().await;
    let seats = format!("{LIC}/features/export-4k/seats");
    let r = n(
        &s,
        Method::PUT,
        &format!("{seats}/alpha"),
        Some(json!({"ttl_ms": 60_000})),
    )
    .await;
    let a = ok(&r, StatusCode::CREATED);
    assert_eq!(
        (a["taken"].as_bool(), a["in_use"].as_u64()),
        (Some(true), Some(1))
    );
    let expires = a["expires_at"].clone();
    assert_eq!(expires, "2026-11-25T12:01:00.000Z");
    let renewed = ok(
        &n(&s, Method::PUT, &format!("{seats}/alpha"), None).await,
        StatusCode::OK,
    );
    assert_eq!(renewed["taken"], false);
    assert_eq!(
        renewed["expires_at"], "2026-11-25T12:15:00.000Z",
        "the feature's 15 minutes"
    );
    problem(
        &n(
            &s,
            Method::PUT,
            &format!("{seats}/beta"),
            Some(json!({"ttl_ms": 16 * 60_000})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    ok(
        &n(&s, Method::PUT, &format!("{seats}/beta"), None).await,
        StatusCode::CREATED,
    );
    problem(
        &n(&s, Method::PUT, &format!("{seats}/gamma"), None).await,
        StatusCode::CONFLICT,
        "floating_not_available",
    );
    let list = ok(&n(&s, Method::GET, &seats, None).await, StatusCode::OK);
    assert_eq!(
        (list["capacity"].as_u64(), list["in_use"].as_u64()),
        (Some(2), Some(2))
    );
    let released = ok(
        &n(&s, Method::DELETE, &format!("{seats}/alpha"), None).await,
        StatusCode::OK,
    );
    assert_eq!(
        (released["released"].as_bool(), released["in_use"].as_u64()),
        (Some(true), Some(1))
    );
    let nothing = ok(
        &n(&s, Method::DELETE, &format!("{seats}/alpha"), None).await,
        StatusCode::OK,
    );
    assert_eq!(nothing["released"], false);
    problem(
        &n(
            &s,
            Method::PUT,
            &format!("{LIC}/features/render/seats/x"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "not_floating",
    );
    // A borrowed seat holds until its end, renewals or not.
    let b = n(
        &s,
        Method::PUT,
        &format!("{seats}/delta"),
        Some(json!({"borrow_until": "2026-11-26T00:00:00Z"})),
    )
    .await;
    let b = ok(&b, StatusCode::CREATED);
    assert_eq!(b["borrowed_until"], "2026-11-26T00:00:00.000Z");
    problem(
        &n(
            &s,
            Method::PUT,
            &format!("{seats}/epsilon"),
            Some(json!({"borrow_until": "2026-11-24T00:00:00Z"})),
        )
        .await,
        StatusCode::CONFLICT,
        "borrow_in_past",
    );
    problem(
        &n(
            &s,
            Method::PUT,
            &format!("{seats}/epsilon"),
            Some(json!({"borrow_until": "tomorrow"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // A seat not renewed is free once its ttl has passed; the borrowed one stays.
    s.clock.advance(15 * 60_000);
    let list = ok(&n(&s, Method::GET, &seats, None).await, StatusCode::OK);
    assert_eq!(list["in_use"], 1);
    assert_eq!(list["seats"][0]["holder"], "delta");
}

#[tokio::test]
async fn usage_is_added_up_to_the_limit() {
    let s = TestServer::start().await;
    let usage = format!("{LIC}/features/ai-credits/usage");
    let u = ok(
        &n(&s, Method::POST, &usage, Some(json!({"units": 1000}))).await,
        StatusCode::OK,
    );
    assert_eq!(
        (u["used"].as_i64(), u["remaining"].as_i64()),
        (Some(1000), Some(100))
    );
    let u = ok(
        &n(&s, Method::POST, &usage, Some(json!({"units": 100}))).await,
        StatusCode::OK,
    );
    assert_eq!(u["remaining"], 0, "overages used up");
    problem(
        &n(&s, Method::POST, &usage, Some(json!({"units": 1}))).await,
        StatusCode::CONFLICT,
        "consumption_limit_reached",
    );
    problem(
        &n(&s, Method::POST, &usage, Some(json!({"units": -1}))).await,
        StatusCode::CONFLICT,
        "negative_not_allowed",
    );
    for bad in [
        json!({"units": 0}),
        json!({"units": "1"}),
        json!({}),
        json!([1]),
    ] {
        problem(
            &n(&s, Method::POST, &usage, Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/render/usage"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::CONFLICT,
        "not_consumption",
    );
    // The month ends: the meter starts again.
    s.clock.set(common::at("2026-12-01T00:00:00Z"));
    let u = ok(
        &n(&s, Method::POST, &usage, Some(json!({"units": 1}))).await,
        StatusCode::OK,
    );
    assert_eq!(
        (u["used"].as_i64(), u["period_end"].as_str()),
        (Some(1), Some("2027-01-01T00:00:00.000Z"))
    );
}

#[tokio::test]
async fn reservations_commit_void_and_expire_exactly() {
    let s = TestServer::start().await;
    add_meter(&s, "tokens", 100).await;
    let reserve = |units: i64, timeout: i64| {
        let s = &s;
        async move {
            n(
                s,
                Method::POST,
                &format!("{LIC}/features/tokens/reservations"),
                Some(json!({"units": units, "timeout_ms": timeout})),
            )
            .await
        }
    };
    let r = ok(&reserve(60, 60_000).await, StatusCode::CREATED);
    assert_eq!(
        (r["state"].as_str(), r["units"].as_i64()),
        (Some("pending"), Some(60))
    );
    assert_eq!(r["expires_at"], "2026-11-25T12:01:00.000Z");
    assert_eq!(
        (
            r["usage"]["reserved"].as_i64(),
            r["usage"]["remaining"].as_i64()
        ),
        (Some(60), Some(40))
    );
    let id = r["id"].as_u64().expect("id");
    // A reservation never over-grants; usage counts what is reserved.
    problem(
        &reserve(41, 60_000).await,
        StatusCode::CONFLICT,
        "consumption_limit_reached",
    );
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/tokens/usage"),
            Some(json!({"units": 41})),
        )
        .await,
        StatusCode::CONFLICT,
        "consumption_limit_reached",
    );
    // Commit part: the rest is free again.
    problem(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{id}/commit"),
            Some(json!({"units": 61})),
        )
        .await,
        StatusCode::CONFLICT,
        "reservation_units_exceeded",
    );
    let c = ok(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{id}/commit"),
            Some(json!({"units": 25})),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(
        (c["state"].as_str(), c["committed_units"].as_i64()),
        (Some("committed"), Some(25))
    );
    assert_eq!(
        (
            c["usage"]["used"].as_i64(),
            c["usage"]["reserved"].as_i64(),
            c["usage"]["remaining"].as_i64()
        ),
        (Some(25), Some(0), Some(75))
    );
    problem(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{id}/void"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "reservation_closed",
    );
    let got = ok(
        &n(&s, Method::GET, &format!("/v1/reservations/{id}"), None).await,
        StatusCode::OK,
    );
    assert_eq!(got["state"], "committed");
    // Void: all units free.
    let v = ok(&reserve(75, 60_000).await, StatusCode::CREATED);
    let vid = v["id"].as_u64().expect("id");
    let voided = ok(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{vid}/void"),
            None,
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(
        (
            voided["state"].as_str(),
            voided["usage"]["remaining"].as_i64()
        ),
        (Some("voided"), Some(75))
    );
    // Expiry: not committable past expires_at, released by the sweeper.
    let e = ok(&reserve(30, 1_000).await, StatusCode::CREATED);
    let eid = e["id"].as_u64().expect("id");
    s.clock.advance(1_000);
    problem(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{eid}/commit"),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "reservation_expired",
    );
    let seen = ok(
        &n(&s, Method::GET, &format!("/v1/reservations/{eid}"), None).await,
        StatusCode::OK,
    );
    assert_eq!(seen["state"], "expired");
    assert_eq!(
        usage_of(&read(&s).await, "tokens")["reserved"],
        30,
        "held until the sweep"
    );
    tally::server::sweep_once(&s.app, s.now()).await;
    let t = usage_of(&read(&s).await, "tokens");
    assert_eq!(
        (
            t["used"].as_i64(),
            t["reserved"].as_i64(),
            t["remaining"].as_i64()
        ),
        (Some(25), Some(0), Some(75))
    );
    // Errors.
    problem(
        &reserve(0, 1_000).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &reserve(1, 0).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &reserve(1, 86_400_001).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &n(&s, Method::GET, "/v1/reservations/999999999", None).await,
        StatusCode::NOT_FOUND,
        "reservation_not_found",
    );
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/render/reservations"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::CONFLICT,
        "not_consumption",
    );
}

/// 64 tasks reserving one unit each against a cap of 10: exactly 10 succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_over_grant() {
    let s = std::sync::Arc::new(TestServer::start().await);
    add_meter(&s, "cap10", 10).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                n(
                    &s,
                    Method::POST,
                    &format!("{LIC}/features/cap10/reservations"),
                    Some(json!({"units": 1, "timeout_ms": 60_000})),
                )
                .await
                .status
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 10);
    let m = usage_of(&read(&s).await, "cap10");
    assert_eq!(
        (
            m["reserved"].as_i64(),
            m["remaining"].as_i64(),
            m["reservations_open"].as_u64()
        ),
        (Some(10), Some(0), Some(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_makes_one_change() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let usage = format!("{LIC}/features/ai-credits/usage");
    let body = json!({"units": 7});
    let first = call(
        &s,
        API_KEY,
        Method::POST,
        &usage,
        Some(&body),
        &[("Idempotency-Key", "k-1")],
    )
    .await;
    let second = call(
        &s,
        API_KEY,
        Method::POST,
        &usage,
        Some(&body),
        &[("Idempotency-Key", "k-1")],
    )
    .await;
    assert_eq!(
        (first.status, &first.bytes),
        (second.status, &second.bytes),
        "the first answer again"
    );
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(
        second
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(usage_of(&read(&s).await, "ai-credits")["used"], 7);
    problem(
        &call(
            &s,
            API_KEY,
            Method::POST,
            &usage,
            Some(&json!({"units": 8})),
            &[("Idempotency-Key", "k-1")],
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // 32 concurrent requests with one key: one change.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let s = s.clone();
            let usage = usage.clone();
            tokio::spawn(async move {
                call(
                    &s,
                    API_KEY,
                    Method::POST,
                    &usage,
                    Some(&json!({"units": 3})),
                    &[("Idempotency-Key", "k-32")],
                )
                .await
                .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(usage_of(&read(&s).await, "ai-credits")["used"], 10);
    // A reservation under a key: the same reservation again.
    let res = format!("{LIC}/features/ai-credits/reservations");
    let a = call(
        &s,
        API_KEY,
        Method::POST,
        &res,
        Some(&json!({"units": 5})),
        &[("Idempotency-Key", "r-1")],
    )
    .await;
    let b = call(
        &s,
        API_KEY,
        Method::POST,
        &res,
        Some(&json!({"units": 5})),
        &[("Idempotency-Key", "r-1")],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        (a.status, a.json()["id"].clone()),
        (b.status, b.json()["id"].clone())
    );
    assert_eq!(usage_of(&read(&s).await, "ai-credits")["reserved"], 5);
    // After the retention the key is forgotten: the same request changes again.
    s.clock.advance(24 * 3_600_000);
    tally::server::sweep_once(&s.app, s.now()).await;
    let c = call(
        &s,
        API_KEY,
        Method::POST,
        &usage,
        Some(&body),
        &[("Idempotency-Key", "k-1")],
    )
    .await;
    assert!(c.headers.get("idempotent-replayed").is_none());
    problem(
        &call(
            &s,
            API_KEY,
            Method::POST,
            &usage,
            Some(&body),
            &[("Idempotency-Key", &"x".repeat(256))],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn dry_runs_answer_what_would_happen_and_change_nothing() {
    let s = TestServer::start().await;
    let usage = format!("{LIC}/features/ai-credits/usage?dry_run=true");
    let r = n(&s, Method::POST, &usage, Some(json!({"units": 40}))).await;
    assert_eq!(
        r.headers.get("tally-dry-run").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(ok(&r, StatusCode::OK)["used"], 40, "the values after");
    problem(
        &n(&s, Method::POST, &usage, Some(json!({"units": 4000}))).await,
        StatusCode::CONFLICT,
        "consumption_limit_reached",
    );
    let seat = n(
        &s,
        Method::PUT,
        &format!("{LIC}/features/export-4k/seats/a?dry_run=true"),
        None,
    )
    .await;
    assert_eq!(ok(&seat, StatusCode::CREATED)["in_use"], 1);
    let res = n(
        &s,
        Method::POST,
        &format!("{LIC}/features/ai-credits/reservations?dry_run=true"),
        Some(json!({"units": 10})),
    )
    .await;
    let res = ok(&res, StatusCode::CREATED);
    problem(
        &n(
            &s,
            Method::GET,
            &format!("/v1/reservations/{}", res["id"]),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "reservation_not_found",
    );
    let l = read(&s).await;
    assert_eq!(usage_of(&l, "ai-credits")["used"], 0);
    assert_eq!(usage_of(&l, "ai-credits")["reserved"], 0);
    assert_eq!(l["features"][1]["floating"]["in_use"], 0);
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/ai-credits/usage?dry_run=maybe"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn preflight_and_batches() {
    let s = TestServer::start().await;
    let op = |units: i64| json!({"op": "usage", "license_key": STUDIO, "feature": "ai-credits", "units": units});
    let seat = |h: &str| json!({"op": "take_seat", "license_key": STUDIO, "feature": "export-4k", "holder": h});
    // Together they pass the limit, each alone does not.
    let p = ok(
        &n(
            &s,
            Method::POST,
            "/v1/preflight",
            Some(json!({"operations": [op(900), op(300)]})),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(
        (p["allowed"].as_bool(), p["failed"]["index"].as_u64()),
        (Some(false), Some(1))
    );
    assert_eq!(p["failed"]["problem"]["code"], "consumption_limit_reached");
    let p = ok(
        &n(
            &s,
            Method::POST,
            "/v1/preflight",
            Some(json!({"operations": [op(900), seat("a")]})),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(p["allowed"], true);
    // Atomic: all or none.
    let body = json!({"atomic": true, "operations": [op(10), seat("a"), seat("b"), seat("c")]});
    let r = n(&s, Method::POST, "/v1/batch", Some(body)).await;
    let pr = problem(&r, StatusCode::CONFLICT, "floating_not_available");
    assert!(
        pr["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("operations[3]"),
        "{pr}"
    );
    let l = read(&s).await;
    assert_eq!(
        (
            usage_of(&l, "ai-credits")["used"].as_i64(),
            l["features"][1]["floating"]["in_use"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let body = json!({"atomic": true, "operations": [op(10), seat("a"), seat("b")]});
    let r = ok(
        &n(&s, Method::POST, "/v1/batch", Some(body)).await,
        StatusCode::OK,
    );
    assert_eq!(r["results"][2]["status"], 201);
    let l = read(&s).await;
    assert_eq!(
        (
            usage_of(&l, "ai-credits")["used"].as_i64(),
            l["features"][1]["floating"]["in_use"].as_u64()
        ),
        (Some(10), Some(2))
    );
    // Not atomic: each item its own result.
    let body = json!({"operations": [op(5), seat("c"), op(-1)]});
    let r = ok(
        &n(&s, Method::POST, "/v1/batch", Some(body)).await,
        StatusCode::MULTI_STATUS,
    );
    let statuses: Vec<u64> = r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| x["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [200, 409, 409]);
    assert_eq!(r["results"][1]["body"]["code"], "floating_not_available");
    assert_eq!(usage_of(&read(&s).await, "ai-credits")["used"], 15);
    // Shapes.
    for bad in [
        json!({"operations": []}),
        json!({"operations": [{"op": "fly"}]}),
        json!({"operations": [op(1)], "extra": true}),
        json!({"operations": [{"op": "usage", "license_key": STUDIO, "feature": "ai-credits"}]}),
        json!({"operations": (0..101).map(|_| op(1)).collect::<Vec<_>>()}),
    ] {
        problem(
            &n(&s, Method::POST, "/v1/batch", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
}

#[tokio::test]
async fn signed_requests_are_verified_and_never_replayed() {
    let s = TestServer::start().await;
    let body = json!({"license_key": STUDIO, "feature": "render"}).to_string();
    let r = signed(&s, Method::POST, "/v1/check", &body, "nonce-0001").await;
    assert_eq!(ok(&r, StatusCode::OK)["allowed"], true);
    problem(
        &signed(&s, Method::POST, "/v1/check", &body, "nonce-0001").await,
        StatusCode::UNAUTHORIZED,
        "nonce_reused",
    );
    // The query is signed too.
    let r = signed(
        &s,
        Method::GET,
        &format!("{LIC}/features/render/check?device=x"),
        "",
        "nonce-0002",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // A body changed after signing.
    let ts = (s.now() / 1000).to_string();
    let sig = tally::api::native::signature(
        common::SHARED_KEY,
        "POST",
        "/v1/check",
        &ts,
        "nonce-0003",
        body.as_bytes(),
    );
    let tampered = hyper::Request::post(s.url("/v1/check"))
        .header("X-Tally-Key", API_KEY)
        .header("X-Tally-Timestamp", &ts)
        .header("X-Tally-Nonce", "nonce-0003")
        .header("X-Tally-Signature", &sig)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.replace("render", "export-4k"),
        )))
        .expect("request");
    problem(
        &s.send(tampered).await,
        StatusCode::UNAUTHORIZED,
        "signature_invalid",
    );
    // A clock more than five minutes off.
    s.clock.advance(301_000);
    let stale = hyper::Request::post(s.url("/v1/check"))
        .header("X-Tally-Key", API_KEY)
        .header("X-Tally-Timestamp", &ts)
        .header("X-Tally-Nonce", "nonce-0004")
        .header("X-Tally-Signature", sig)
        .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
        .expect("request");
    problem(
        &s.send(stale).await,
        StatusCode::UNAUTHORIZED,
        "timestamp_skew",
    );
    problem(
        &signed(&s, Method::POST, "/v1/check", &body, "short").await,
        StatusCode::UNAUTHORIZED,
        "signature_invalid",
    );
}

/// A read-only key reads, checks and preflights, and is refused every change.
#[tokio::test]
async fn read_only_keys_cannot_change_anything() {
    let s = TestServer::start().await;
    add_meter(&s, "tokens", 100).await;
    let ro = |m: Method, path: String, body: Value| {
        let s = &s;
        async move { call(s, READ_ONLY_KEY, m, &path, Some(&body), &[]).await }
    };
    let r = ok(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/tokens/reservations"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::CREATED,
    );
    let id = r["id"].as_u64().expect("id");
    let changes = [
        (Method::PUT, format!("{LIC}/devices/ro-1"), json!({})),
        (Method::DELETE, format!("{LIC}/devices/ro-1"), json!({})),
        (
            Method::PUT,
            format!("{LIC}/features/export-4k/seats/ro"),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("{LIC}/features/export-4k/seats/ro"),
            json!({}),
        ),
        (
            Method::POST,
            format!("{LIC}/features/tokens/usage"),
            json!({"units": 1}),
        ),
        (
            Method::POST,
            format!("{LIC}/features/tokens/reservations"),
            json!({"units": 1}),
        ),
        (
            Method::POST,
            format!("/v1/reservations/{id}/commit"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/v1/reservations/{id}/void"),
            json!({}),
        ),
        (
            Method::POST,
            "/v1/batch".to_string(),
            json!({"operations": [{"op": "usage", "license_key": STUDIO, "feature": "tokens", "units": 1}]}),
        ),
    ];
    for (m, path, body) in changes {
        problem(
            &ro(m, path, body).await,
            StatusCode::FORBIDDEN,
            "read_only_key",
        );
    }
    let check = ro(
        Method::POST,
        "/v1/check".into(),
        json!({"license_key": STUDIO, "feature": "export-4k", "device": "demo-device"}),
    )
    .await;
    let check = ok(&check, StatusCode::OK);
    assert!(
        check["code"] == "read_only_key" || check["code"] == "device_not_found",
        "{check}"
    );
    assert_eq!(
        ok(
            &ro(Method::GET, LIC.into(), json!({})).await,
            StatusCode::OK
        )["license_key"],
        STUDIO
    );
    // A dry run and a preflight change nothing: a read-only key may ask them.
    let dry = ro(
        Method::POST,
        format!("{LIC}/features/tokens/usage?dry_run=true"),
        json!({"units": 1}),
    )
    .await;
    assert_eq!(ok(&dry, StatusCode::OK)["used"], 1);
    let op = json!({"op": "usage", "license_key": STUDIO, "feature": "tokens", "units": 1});
    let pre = ro(
        Method::POST,
        "/v1/preflight".into(),
        json!({"operations": [op]}),
    )
    .await;
    assert_eq!(ok(&pre, StatusCode::OK)["allowed"], true);
    let t = usage_of(&read(&s).await, "tokens");
    assert_eq!(
        (t["used"].as_i64(), t["reserved"].as_i64()),
        (Some(0), Some(1))
    );
}

/// `tally sign` prints headers that the server accepts (the real binary,
/// against a server on the wall clock, as curl would use them).
#[tokio::test]
async fn tally_sign_prints_headers_the_server_accepts() {
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    let body = json!({"license_key": STUDIO, "feature": "render"}).to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "sign",
            "--api-key",
            API_KEY,
            "--shared-key",
            common::SHARED_KEY,
        ])
        .args(["--method", "POST", "--path", "/v1/check", "--body", &body])
        .output()
        .expect("tally sign");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut req = hyper::Request::post(s.url("/v1/check"));
    for line in text.lines() {
        let (name, value) = line.split_once(": ").expect("a header line");
        req = req.header(name, value);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let r = s.send(req).await;
    assert_eq!(ok(&r, StatusCode::OK)["allowed"], true);
}

/// An offline token verifies with an independent JWT implementation
/// (`jsonwebtoken`) against the served JWKS, before and after a rotation.
#[tokio::test]
async fn offline_tokens_verify_with_an_independent_jwt_implementation() {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    ok(
        &n(&s, Method::PUT, &format!("{LIC}/devices/tok-1"), None).await,
        StatusCode::CREATED,
    );
    let issue = |device: &str, ttl: i64| {
        let s = &s;
        let body = json!({"device": device, "ttl_s": ttl});
        async move { n(s, Method::POST, &format!("{LIC}/token"), Some(body)).await }
    };
    let verify = |token: &str, jwks: &JwkSet| {
        let kid = decode_header(token).expect("header").kid.expect("kid");
        let jwk = jwks.find(&kid).expect("key in the JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_required_spec_claims(&["exp", "iat", "sub"]);
        decode::<Value>(token, &key, &v).expect("verifies").claims
    };
    async fn jwks(s: &TestServer) -> JwkSet {
        let url = s.url("/v1/.well-known/jwks.json");
        let r = s
            .send(
                hyper::Request::get(url)
                    .body(Default::default())
                    .expect("req"),
            )
            .await;
        serde_json::from_slice::<JwkSet>(&r.bytes).expect("a JWK set")
    }
    let t = ok(&issue("tok-1", 3600).await, StatusCode::CREATED);
    let token = t["token"].as_str().expect("token").to_string();
    let claims = verify(&token, &jwks(&s).await);
    assert_eq!(claims["sub"], STUDIO);
    assert_eq!(claims["device"], "tok-1");
    assert_eq!(
        claims["exp"].as_i64(),
        claims["iat"].as_i64().map(|i| i + 3600)
    );
    assert_eq!(claims["license"]["features"][2]["usage"]["max"], 1000);
    // A tampered token does not verify.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].replace('A', "B");
    let forged = parts.join(".");
    let kid = decode_header(&token).expect("header").kid.expect("kid");
    let set = jwks(&s).await;
    let key = DecodingKey::from_jwk(set.find(&kid).expect("jwk")).expect("key");
    assert!(decode::<Value>(&forged, &key, &Validation::new(Algorithm::EdDSA)).is_err());
    // Rotation: new tokens carry the new key; old ones still verify.
    let r = s.admin(Method::POST, "/token-keys/rotate", None).await;
    let new_kid = r.json()["kid"].as_str().expect("kid").to_string();
    assert_ne!(new_kid, kid);
    let set = jwks(&s).await;
    assert_eq!(set.keys.len(), 2);
    verify(&token, &set);
    let t2 = ok(&issue("tok-1", 60).await, StatusCode::CREATED);
    let t2 = t2["token"].as_str().expect("token");
    assert_eq!(
        decode_header(t2).expect("header").kid.as_deref(),
        Some(new_kid.as_str())
    );
    verify(t2, &set);
    let keys = s.admin(Method::GET, "/token-keys", None).await.json();
    assert_eq!(keys["keys"][1]["current"], true);
    assert!(
        keys.to_string().find("seed").is_none(),
        "no secret is listed"
    );
    // Errors.
    problem(
        &issue("nope", 60).await,
        StatusCode::NOT_FOUND,
        "device_not_found",
    );
    problem(
        &issue("tok-1", 0).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &issue("tok-1", 90 * 86_400 + 1).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

/// A seat of the license's activation pool reserved, then committed by
/// activating a device on it, voided, or expired.
#[tokio::test]
async fn seat_reservations_hold_an_activation_seat() {
    let s = TestServer::start().await;
    let reserve = |timeout: i64| {
        let s = &s;
        async move {
            n(
                s,
                Method::POST,
                &format!("{LIC}/reservations"),
                Some(json!({"timeout_ms": timeout})),
            )
            .await
        }
    };
    // Three seats, the demo's device holds one.
    let a = ok(&reserve(60_000).await, StatusCode::CREATED);
    assert_eq!(
        (
            a["kind"].as_str(),
            a["seats"]["used"].as_u64(),
            a["usage"].clone()
        ),
        (Some("seat"), Some(2), Value::Null)
    );
    let b = ok(&reserve(60_000).await, StatusCode::CREATED);
    problem(
        &reserve(60_000).await,
        StatusCode::CONFLICT,
        "activation_limit_reached",
    );
    problem(
        &n(&s, Method::PUT, &format!("{LIC}/devices/walk-in"), None).await,
        StatusCode::CONFLICT,
        "activation_limit_reached",
    );
    // A seat is committed by activating a device on it.
    let (ida, idb) = (a["id"].as_u64().expect("id"), b["id"].as_u64().expect("id"));
    problem(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{ida}/commit"),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let c = n(
        &s,
        Method::POST,
        &format!("/v1/reservations/{ida}/commit"),
        Some(json!({"hardware_id": "seat-dev", "device": {"hostname": "seat"}})),
    )
    .await;
    let c = ok(&c, StatusCode::OK);
    assert_eq!(
        (
            c["state"].as_str(),
            c["hardware_id"].as_str(),
            c["seats"]["used"].as_u64()
        ),
        (Some("committed"), Some("seat-dev"), Some(3))
    );
    let l = read(&s).await;
    assert_eq!(l["activations"]["used"], 3);
    // Voided: the seat is free for anyone.
    let v = ok(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{idb}/void"),
            None,
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(v["seats"]["used"], 2);
    ok(
        &n(&s, Method::PUT, &format!("{LIC}/devices/walk-in"), None).await,
        StatusCode::CREATED,
    );
    // Expired: given back by the sweep.
    ok(
        &n(&s, Method::DELETE, &format!("{LIC}/devices/walk-in"), None).await,
        StatusCode::OK,
    );
    let e = ok(&reserve(1_000).await, StatusCode::CREATED);
    assert_eq!(e["seats"]["used"], 3);
    s.clock.advance(1_000);
    tally::server::sweep_once(&s.app, s.now()).await;
    assert_eq!(read(&s).await["activations"]["used"], 2);
    // A units reservation is not committed with a device.
    let u = ok(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/ai-credits/reservations"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::CREATED,
    );
    problem(
        &n(
            &s,
            Method::POST,
            &format!("/v1/reservations/{}/commit", u["id"]),
            Some(json!({"hardware_id": "x"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/reservations"),
            Some(json!({"seats": 2})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

/// The refusals left: a disabled license, a blacklisted device, a borrow
/// past the limit, usage below zero, an unknown product, a body too large.
#[tokio::test]
async fn the_other_refusals_in_their_shape() {
    let s = TestServer::start().await;
    let id = studio_id(&s).await;
    // A metered feature that allows negative use: never below zero.
    let r = s
        .admin(
            Method::POST,
            &format!("/licenses/{id}/features"),
            Some(
                json!({"code": "neg", "feature_type": "consumption", "max_consumption": 10,
                        "allow_negative_consumptions": true}),
            ),
        )
        .await;
    assert!(r.status.is_success());
    let neg = format!("{LIC}/features/neg/usage");
    ok(
        &n(&s, Method::POST, &neg, Some(json!({"units": 3}))).await,
        StatusCode::OK,
    );
    assert_eq!(
        ok(
            &n(&s, Method::POST, &neg, Some(json!({"units": -2}))).await,
            StatusCode::OK
        )["used"],
        1
    );
    problem(
        &n(&s, Method::POST, &neg, Some(json!({"units": -2}))).await,
        StatusCode::CONFLICT,
        "below_zero",
    );
    // Borrowing longer than the product allows (72 hours in the demo).
    problem(
        &n(
            &s,
            Method::PUT,
            &format!("{LIC}/features/export-4k/seats/b"),
            Some(json!({"borrow_until": "2026-12-31T00:00:00Z"})),
        )
        .await,
        StatusCode::CONFLICT,
        "borrow_too_long",
    );
    // A blacklisted device cannot activate.
    ok(
        &n(&s, Method::PUT, &format!("{LIC}/devices/bad-dev"), None).await,
        StatusCode::CREATED,
    );
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}/devices/bad-dev"),
            Some(json!({"blacklisted": true})),
        )
        .await;
    assert!(r.status.is_success());
    problem(
        &n(&s, Method::PUT, &format!("{LIC}/devices/bad-dev"), None).await,
        StatusCode::CONFLICT,
        "device_blacklisted",
    );
    // A disabled license: checks say so, changes are refused.
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert!(r.status.is_success());
    let c = ok(
        &n(
            &s,
            Method::POST,
            "/v1/check",
            Some(json!({"license_key": STUDIO, "feature": "render"})),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(
        (c["allowed"].as_bool(), c["code"].as_str()),
        (Some(false), Some("license_not_enabled"))
    );
    assert_eq!(read(&s).await["refusal"], "license_not_enabled");
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/ai-credits/usage"),
            Some(json!({"units": 1})),
        )
        .await,
        StatusCode::CONFLICT,
        "license_not_enabled",
    );
    problem(
        &n(
            &s,
            Method::GET,
            "/v1/products/nope/users/alice@example.com/licenses",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "product_not_found",
    );
    let big = json!({"units": 1, "pad": "x".repeat(1024 * 1024)});
    problem(
        &n(
            &s,
            Method::POST,
            &format!("{LIC}/features/ai-credits/usage"),
            Some(big),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}
