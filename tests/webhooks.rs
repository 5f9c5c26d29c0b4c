//! Webhooks through HTTP: subscriptions (native and admin API, catalog),
//! events made by real changes, delivery to a receiver on 127.0.0.1 with
//! Standard Webhooks signatures (checked here and by PyPI's
//! `standardwebhooks`), retries with the same `webhook-id`, 410, resends,
//! and durability across a restart.
#![allow(clippy::too_many_lines, reason = "a test reads best as one story")]

mod common;

use common::native::{call, n, ok, problem, READ_ONLY_KEY, STUDIO};
use common::receiver::{Got, Receiver};
use common::{at, TestServer};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Subscribes the demo tenant; returns (id, secret).
async fn subscribe(s: &TestServer, body: Value) -> (String, String) {
    let r = n(s, Method::POST, "/v1/webhooks", Some(body)).await;
    let v = ok(&r, StatusCode::CREATED);
    (
        v["id"].as_str().expect("id").to_string(),
        v["secret"].as_str().expect("secret").to_string(),
    )
}

async fn consume(s: &TestServer, units: i64) {
    let r = n(
        s,
        Method::POST,
        &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
        Some(json!({ "units": units })),
    )
    .await;
    ok(&r, StatusCode::OK);
}

/// A subscription's deliveries list once it holds `count` attempts (the
/// receiver may have a request before the dispatcher logged its attempt).
async fn attempts(s: &TestServer, id: &str, count: usize) -> Value {
    let mut d = Value::Null;
    for _ in 0..100 {
        d = n(
            s,
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries"),
            None,
        )
        .await
        .json();
        if d["deliveries"].as_array().map_or(0, Vec::len) >= count {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{count} attempts not recorded: {d}");
}

async fn first_attempt(s: &TestServer, id: &str) -> Value {
    attempts(s, id, 1).await["deliveries"][0].clone()
}

/// Lets the dispatcher see a clock that moved (it looks at least every 250 ms).
async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn subscriptions_are_managed_and_checked() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let r = n(
        &s,
        Method::POST,
        "/v1/webhooks",
        Some(
            json!({"url": rx.url, "events": ["meter.threshold", "seats.exhausted"],
                    "license": STUDIO, "feature": "ai-credits", "description": "ops"}),
        ),
    )
    .await;
    let created = ok(&r, StatusCode::CREATED);
    let secret = created["secret"].as_str().expect("secret shown once");
    assert!(secret.starts_with("whsec_"), "{created}");
    tally::engine::webhook::validate_secret(secret).expect("a valid secret");
    assert_eq!(created["thresholds"], json!([80, 100]));
    assert_eq!(created["feature"], "ai-credits");
    assert_eq!(created["license"], STUDIO);
    let id = created["id"].as_str().expect("id");

    // Read back: never the secret.
    let got = ok(
        &n(&s, Method::GET, &format!("/v1/webhooks/{id}"), None).await,
        StatusCode::OK,
    );
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["events"], json!(["meter.threshold", "seats.exhausted"]));
    let list = ok(
        &n(&s, Method::GET, "/v1/webhooks", None).await,
        StatusCode::OK,
    );
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));

    // A change merges; the filter can be cleared.
    let patched = ok(
        &n(
            &s,
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"thresholds": [100, 50], "license": null})),
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(patched["thresholds"], json!([50, 100]));
    assert_eq!(patched["license"], Value::Null);
    assert_eq!(patched["feature"], Value::Null);
    assert_eq!(patched["description"], "ops");

    // Bad input: a problem naming the field, and nothing changes.
    for (body, field) in [
        (
            json!({"url": "ftp://x/y", "events": ["seats.exhausted"]}),
            "url",
        ),
        (
            json!({"url": "http://", "events": ["seats.exhausted"]}),
            "url",
        ),
        (json!({"url": rx.url, "events": []}), "events"),
        (
            json!({"url": rx.url, "events": ["seats.gone"]}),
            "events[0]",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "thresholds": [0]}),
            "thresholds",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "thresholds": [1001]}),
            "thresholds",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "license": "NO-SUCH"}),
            "license",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "feature": "render"}),
            "feature",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "secret": "whsec_c2hvcnQ="}),
            "secret",
        ),
        (
            json!({"url": rx.url, "events": ["seats.exhausted"], "colour": "red"}),
            "colour",
        ),
        (json!({"events": ["seats.exhausted"]}), "url"),
    ] {
        let r = n(&s, Method::POST, "/v1/webhooks", Some(body.clone())).await;
        let p = problem(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            p["detail"].as_str().unwrap_or("").starts_with(field),
            "{body} -> {p}"
        );
    }
    let r = n(&s, Method::POST, "/v1/webhooks", None).await;
    problem(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let list = ok(
        &n(&s, Method::GET, "/v1/webhooks", None).await,
        StatusCode::OK,
    );
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));

    // A read-only key reads but does not change.
    let r = call(&s, READ_ONLY_KEY, Method::GET, "/v1/webhooks", None, &[]).await;
    ok(&r, StatusCode::OK);
    let r = call(
        &s,
        READ_ONLY_KEY,
        Method::POST,
        "/v1/webhooks",
        Some(&json!({"url": rx.url, "events": ["seats.exhausted"]})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());

    // Rotation: a new secret, the old one valid through the overlap.
    let rotated = ok(
        &n(
            &s,
            Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(json!({"overlap_ms": 3_600_000})),
        )
        .await,
        StatusCode::OK,
    );
    assert_ne!(rotated["secret"].as_str(), Some(secret));
    assert_eq!(
        rotated["previous_secrets_valid_until"],
        json!(["2026-11-25T13:00:00.000Z"])
    );

    // The admin API sees every tenant's and makes them for any tenant.
    let all = s.admin(Method::GET, "/webhooks", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json()["items"].as_array().map(Vec::len), Some(1));
    let tenant = created["tenant_id"].as_str().expect("tenant").to_string();
    let r = s
        .admin(
            Method::POST,
            "/webhooks",
            Some(json!({"url": rx.url, "events": ["license.changed"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json());
    let r = s
        .admin(
            Method::POST,
            "/webhooks",
            Some(json!({"tenant_id": tenant, "url": rx.url, "events": ["license.changed"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let admin_id = r.json()["id"].as_str().expect("id").to_string();
    let r = s
        .admin(Method::DELETE, &format!("/webhooks/{admin_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Delete: gone.
    let r = n(&s, Method::DELETE, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = n(&s, Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    problem(&r, StatusCode::NOT_FOUND, "webhook_not_found");
    let r = n(&s, Method::PUT, "/v1/webhooks", None).await;
    problem(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn thresholds_fire_once_per_period_signed() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let (_, secret) = subscribe(
        &s,
        json!({"url": rx.url, "events": ["meter.threshold"], "thresholds": [50, 80, 100]}),
    )
    .await;
    // ai-credits: 1,000 a month.
    consume(&s, 400).await;
    rx.settle(0, 300).await;
    consume(&s, 150).await; // 55 %
    let got = rx.wait_for(1).await;
    consume(&s, 300).await; // 85 %
    let got2 = rx.wait_for(2).await;
    consume(&s, 100).await; // 95 %: nothing new
    consume(&s, 50).await; // 100 %
    let got3 = rx.wait_for(3).await;
    rx.settle(3, 300).await;
    let all: Vec<Value> = got3.iter().map(Got::json).collect();
    let thresholds: Vec<u64> = all
        .iter()
        .map(|v| v["data"]["threshold"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(thresholds, [50, 80, 100], "{all:?}");
    assert_eq!(got[0].json()["data"]["used"], 550);
    assert_eq!(got2[1].json()["data"]["used"], 850);
    let first = &all[0];
    assert_eq!(first["type"], "meter.threshold");
    assert_eq!(first["data"]["license_key"], STUDIO);
    assert_eq!(first["data"]["feature"], "ai-credits");
    assert_eq!(first["data"]["limit"], 1000);
    assert_eq!(first["timestamp"], "2026-11-25T12:00:00.000Z");
    for g in &got3 {
        assert!(g.verifies(&secret), "signature: {:?}", g.headers);
        assert_eq!(
            g.header("webhook-id"),
            g.json()["id"].as_str().unwrap_or("")
        );
        assert_eq!(g.header("content-type"), "application/json");
    }
    let ids: std::collections::HashSet<String> =
        got3.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(ids.len(), 3, "each event its own id");
    verify_with_standardwebhooks(&got3, &secret);

    // A new month: the meter starts again, and so do its thresholds; one
    // change that crosses two reports both.
    s.clock.set(at("2026-12-01T00:00:05Z"));
    consume(&s, 900).await;
    let got = rx.wait_for(5).await;
    let next: Vec<u64> = got[3..]
        .iter()
        .map(|g| g.json()["data"]["threshold"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(next, [50, 80]);
    rx.settle(5, 300).await;

    // The deliveries list shows them all, delivered at the first attempt.
    let id = n(&s, Method::GET, "/v1/webhooks", None).await.json()["webhooks"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let d = attempts(&s, &id, 5).await;
    let list = d["deliveries"].as_array().expect("list");
    assert_eq!(list.len(), 5, "{d}");
    assert!(list
        .iter()
        .all(|a| a["result"] == "delivered" && a["attempt"] == 1 && a["status_code"] == 200));
    assert_eq!(d["pending"], json!([]));
    assert_eq!(d["dropped_events"], 0);
}

/// Verifies the deliveries with PyPI's `standardwebhooks` (an independent
/// implementation); `.ci/run` installs it and names its Python.
fn verify_with_standardwebhooks(got: &[Got], secret: &str) {
    let python = std::env::var("TALLY_WEBHOOKS_PYTHON").unwrap_or_default();
    if !common::client_installed(
        &python,
        "TALLY_WEBHOOKS_PYTHON=<python with `pip install standardwebhooks==1.1.0`>",
    ) {
        return;
    }
    let cases: Vec<Value> = got
        .iter()
        .map(|g| {
            json!({
                "body": String::from_utf8_lossy(&g.body),
                "headers": {
                    "webhook-id": g.header("webhook-id"),
                    "webhook-timestamp": g.header("webhook-timestamp"),
                    "webhook-signature": g.header("webhook-signature"),
                },
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, cases = sys.argv[1], json.loads(sys.argv[2])
wh = Webhook(secret)
for c in cases:
    payload = wh.verify(c["body"], c["headers"])
    assert payload["id"] == c["headers"]["webhook-id"], payload
# A changed body must not verify.
try:
    wh.verify(cases[0]["body"] + " ", cases[0]["headers"])
    raise SystemExit("a changed body verified")
except Exception as e:
    if isinstance(e, SystemExit):
        raise
print("sdk: all calls passed")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, secret, &Value::Array(cases).to_string()])
        .output()
        .expect("run python");
    common::assert_client_passed(&out);
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_until_it_answers() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let (id, secret) = subscribe(
        &s,
        json!({"url": rx.url, "events": ["seats.exhausted", "seats.available", "floating.denied"],
               "license": STUDIO, "feature": "export-4k"}),
    )
    .await;
    rx.answer(&[500, 503, 502]);
    let seat = |h: &'static str| format!("/v1/licenses/{STUDIO}/features/export-4k/seats/{h}");
    ok(
        &n(&s, Method::PUT, &seat("a"), None).await,
        StatusCode::CREATED,
    );
    rx.settle(0, 300).await;
    ok(
        &n(&s, Method::PUT, &seat("b"), None).await,
        StatusCode::CREATED,
    ); // 2 of 2
    rx.wait_for(1).await;
    // Each wait is at most the schedule's step plus a fifth.
    for (n_got, wait_ms) in [(2, 6_000), (3, 360_000), (4, 2_160_000)] {
        attempts(&s, &id, n_got - 1).await;
        rx.settle(n_got - 1, 100).await;
        s.clock.advance(wait_ms);
        tick().await;
        rx.wait_for(n_got).await;
    }
    let got = rx.received();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        [500, 503, 502, 200]
    );
    let first_id = got[0].header("webhook-id");
    assert!(first_id.starts_with("evt_"));
    for g in &got {
        assert_eq!(g.header("webhook-id"), first_id, "same id on every attempt");
        assert_eq!(g.body, got[0].body, "same body on every attempt");
        assert!(g.verifies(&secret));
    }
    assert_eq!(got[0].json()["type"], "seats.exhausted");
    assert_eq!(got[0].json()["data"]["in_use"], 2);
    assert_eq!(got[0].json()["data"]["capacity"], 2);
    assert_eq!(got[0].json()["data"]["pool"], "floating");

    let d = attempts(&s, &id, 4).await;
    let list = d["deliveries"].as_array().expect("list");
    let results: Vec<(&str, u64)> = list
        .iter()
        .map(|a| {
            (
                a["result"].as_str().unwrap_or(""),
                a["status_code"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("retrying", 500),
            ("retrying", 503),
            ("retrying", 502),
            ("delivered", 200)
        ],
        "{d}"
    );
    assert!(list[0]["next_attempt_at"].is_string());

    // Those seats timed out meanwhile. A second receiver for the rest.
    let rx = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": rx.url, "events": ["seats.exhausted", "seats.available", "floating.denied"],
               "license": STUDIO, "feature": "export-4k"}),
    )
    .await;
    // The sweep frees the full pool's seats: available.
    tally::server::sweep_once(&s.app, s.now()).await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "seats.available");
    ok(
        &n(&s, Method::PUT, &seat("a"), None).await,
        StatusCode::CREATED,
    );
    ok(
        &n(&s, Method::PUT, &seat("b"), None).await,
        StatusCode::CREATED,
    );
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "seats.exhausted");
    // A third holder is refused: floating.denied, once a minute at most.
    let r = n(&s, Method::PUT, &seat("c"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.json());
    let r = n(&s, Method::PUT, &seat("d"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let got = rx.wait_for(3).await;
    assert_eq!(got[2].json()["type"], "floating.denied");
    assert_eq!(got[2].json()["data"]["holder"], "c");
    rx.settle(3, 300).await;

    // A seat comes back: available again.
    let r = n(&s, Method::DELETE, &seat("a"), None).await;
    ok(&r, StatusCode::OK);
    let got = rx.wait_for(4).await;
    assert_eq!(got[3].json()["type"], "seats.available");
    assert_eq!(got[3].json()["data"]["in_use"], 1);
}

#[tokio::test]
async fn gone_disables_and_a_resend_delivers_again() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let (id, _) = subscribe(&s, json!({"url": rx.url, "events": ["license.changed"]})).await;
    rx.answer(&[410]);
    let lic = s.admin(Method::GET, "/licenses?limit=1", None).await.json();
    let license_id = lic["items"][0]["id"].to_string();
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{license_id}"),
            Some(json!({"max_activations": 9})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let got = rx.wait_for(1).await;
    let event = got[0].json();
    assert_eq!(event["type"], "license.changed");
    assert_eq!(event["data"]["change"], "license_written");
    assert_eq!(first_attempt(&s, &id).await["result"], "gone");
    let sub = ok(
        &n(&s, Method::GET, &format!("/v1/webhooks/{id}"), None).await,
        StatusCode::OK,
    );
    assert_eq!(sub["enabled"], false, "{sub}");
    assert!(sub["disabled_reason"]
        .as_str()
        .unwrap_or("")
        .contains("410"));
    // Disabled: no more deliveries.
    s.admin(
        Method::PATCH,
        &format!("/licenses/{license_id}"),
        Some(json!({"max_activations": 8})),
    )
    .await;
    rx.settle(1, 500).await;

    // Enabled again, and the first event sent again on request.
    ok(
        &n(
            &s,
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"enabled": true})),
        )
        .await,
        StatusCode::OK,
    );
    let event_id = event["id"].as_str().expect("event id");
    let r = n(
        &s,
        Method::POST,
        &format!("/v1/webhooks/{id}/deliveries/{event_id}/retry"),
        None,
    )
    .await;
    ok(&r, StatusCode::ACCEPTED);
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].header("webhook-id"), event_id);
    let r = n(
        &s,
        Method::POST,
        &format!("/v1/webhooks/{id}/deliveries/evt_ffffffff/retry"),
        None,
    )
    .await;
    problem(&r, StatusCode::NOT_FOUND, "event_not_found");
}

#[tokio::test]
async fn time_makes_expiry_and_reservation_events() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": rx.url, "events": ["license.expiring", "license.expired", "reservation.expired"],
               "expiring_days": 30}),
    )
    .await;
    // A second subscriber wants to hear a week ahead only.
    let week = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": week.url, "events": ["license.expiring"], "expiring_days": 7}),
    )
    .await;
    // A reservation left to expire.
    let r = n(
        &s,
        Method::POST,
        &format!("/v1/licenses/{STUDIO}/features/ai-credits/reservations"),
        Some(json!({"units": 7, "timeout_ms": 1000})),
    )
    .await;
    ok(&r, StatusCode::CREATED);
    s.clock.advance(2_000);
    tally::server::sweep_once(&s.app, s.now()).await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "reservation.expired");
    assert_eq!(got[0].json()["data"]["units"], 7);

    // DEMO-FLOAT-0001 ends with 2030-12-31; the demo's cloud license with 2031-03-16.
    s.clock.set(at("2030-12-15T00:00:00Z"));
    tally::server::sweep_notices(&s.app, s.now()).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "license.expiring");
    assert_eq!(got[1].json()["data"]["license_key"], "DEMO-FLOAT-0001");
    assert_eq!(got[1].json()["data"]["days_left"], 17);
    // Once; and not yet for the week-ahead subscriber.
    tally::server::sweep_notices(&s.app, s.now()).await;
    rx.settle(2, 400).await;
    week.settle(0, 0).await;
    // A week ahead: that subscriber hears of it, the other not again.
    s.clock.set(at("2030-12-25T00:00:00Z"));
    tally::server::sweep_notices(&s.app, s.now()).await;
    let got = week.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "license.expiring");
    assert_eq!(got[0].json()["data"]["days_left"], 7);
    tally::server::sweep_notices(&s.app, s.now()).await;
    week.settle(1, 300).await;
    rx.settle(2, 0).await;
    s.clock.set(at("2031-01-01T00:00:01Z"));
    tally::server::sweep_notices(&s.app, s.now()).await;
    let got = rx.wait_for(3).await;
    assert_eq!(got[2].json()["type"], "license.expired");
    assert_eq!(
        got[2].json()["data"]["valid_until"],
        "2031-01-01T00:00:00.000Z"
    );
    rx.settle(3, 300).await;
}

#[tokio::test]
async fn the_outbox_is_bounded_and_its_drops_are_visible() {
    let s = TestServer::start().await;
    // A receiver that takes connections and never answers: the first few
    // attempts hang, every other delivery waits in the outbox.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let (id, _) = subscribe(
        &s,
        json!({"url": format!("http://127.0.0.1:{port}/"), "events": ["seats.exhausted", "seats.available"]}),
    )
    .await;
    let seat = format!("/v1/licenses/{STUDIO}/features/export-4k/seats/a");
    ok(&n(&s, Method::PUT, &seat, None).await, StatusCode::CREATED);
    // Each batch fills and frees the pool 50 times: 100 events.
    let churn: Vec<Value> = (0..50)
        .flat_map(|_| {
            [
                json!({"op": "take_seat", "license_key": STUDIO, "feature": "export-4k", "holder": "b"}),
                json!({"op": "release_seat", "license_key": STUDIO, "feature": "export-4k", "holder": "b"}),
            ]
        })
        .collect();
    let max = tally::engine::webhook::WEBHOOK_EVENTS_PER_TENANT_MAX;
    for _ in 0..(max / 100 + 1) {
        let r = n(
            &s,
            Method::POST,
            "/v1/batch",
            Some(json!({"atomic": true, "operations": churn})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    }
    let sub = ok(
        &n(&s, Method::GET, &format!("/v1/webhooks/{id}"), None).await,
        StatusCode::OK,
    );
    assert_eq!(sub["pending"], max, "the outbox holds its limit");
    let d = ok(
        &n(
            &s,
            Method::GET,
            &format!("/v1/webhooks/{id}/deliveries?limit=1000"),
            None,
        )
        .await,
        StatusCode::OK,
    );
    assert_eq!(d["dropped_events"], 100, "{}", d["dropped_events"]);
    let drops: Vec<&Value> = d["deliveries"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|a| a["result"] == "dropped")
        .collect();
    assert_eq!(drops.len(), 100);
    assert_eq!(
        drops[0]["event_id"], "evt_0000000000000000",
        "the oldest go first"
    );
    held.abort();
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_trusted_roots() {
    let (rx, ca_pem) = Receiver::start_tls().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca file");
    // Trusted through --webhook-ca: delivered.
    let s = TestServer::start_with(|o| o.webhook_ca = Some(ca.clone())).await;
    let (id, secret) = subscribe(&s, json!({"url": rx.url, "events": ["license.changed"]})).await;
    let lic = s.admin(Method::GET, "/licenses?limit=1", None).await.json();
    let license_id = lic["items"][0]["id"].to_string();
    let change = json!({"max_activations": 7});
    s.admin(
        Method::PATCH,
        &format!("/licenses/{license_id}"),
        Some(change.clone()),
    )
    .await;
    let got = rx.wait_for(1).await;
    assert!(got[0].verifies(&secret));
    assert_eq!(first_attempt(&s, &id).await["result"], "delivered");

    // Without it the certificate is not trusted: nothing is sent, the
    // attempt says why, and the delivery waits for its next try.
    let s = TestServer::start().await;
    let (id, _) = subscribe(&s, json!({"url": rx.url, "events": ["license.changed"]})).await;
    s.admin(
        Method::PATCH,
        &format!("/licenses/{license_id}"),
        Some(change),
    )
    .await;
    let attempt = first_attempt(&s, &id).await;
    assert_eq!(attempt["result"], "retrying", "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap_or("").contains("tls"),
        "{attempt}"
    );
    rx.settle(1, 200).await;
}

#[tokio::test]
async fn vendor_and_activation_events() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": rx.url, "events": ["qlik.allotment.exhausted", "yext.assignment.expired",
                                         "seats.exhausted", "seats.available"],
               "license": STUDIO}),
    )
    .await;
    // A Qlik allotment's last seat: not tied to a license, so only a
    // subscription without a license filter hears of it.
    common::qlik::fresh(&s, json!([{"name": "professional", "units": 2}])).await;
    for subject in ["alice", "bob"] {
        let r = common::qlik::post(
            &s,
            "/assignments/actions/add",
            json!({"add": [{"subject": subject, "type": "professional"}]}),
        )
        .await;
        assert_eq!(r.status.as_u16(), 207, "{:?}", r.json());
    }
    rx.settle(0, 300).await;
    let rx2 = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": rx2.url, "events": ["qlik.allotment.exhausted", "yext.assignment.expired"]}),
    )
    .await;
    common::qlik::fresh(&s, json!([{"name": "professional", "units": 2}])).await;
    for subject in ["alice", "bob"] {
        common::qlik::post(
            &s,
            "/assignments/actions/add",
            json!({"add": [{"subject": subject, "type": "professional"}]}),
        )
        .await;
    }
    let got = rx2.wait_for(1).await;
    let v = got[0].json();
    assert_eq!(v["type"], "qlik.allotment.exhausted");
    assert_eq!(v["data"]["allotment"], "professional");
    assert_eq!(v["data"]["used"], 2);
    assert_eq!(v["data"]["units"], 2);

    // A Yext removal scheduled for tomorrow takes effect at midnight.
    let one = "/v2/accounts/me/licensepacks/reviews/assignments/store-001";
    let r = common::yext::y(
        &s,
        Method::PUT,
        one,
        "",
        Some(json!({"expirationDate": "2026-11-26"})),
    )
    .await;
    common::yext::ok(&r);
    s.clock.set(at("2026-11-26T00:00:01Z"));
    tally::server::sweep_once(&s.app, s.now()).await;
    let got = rx2.wait_for(2).await;
    let v = got[1].json();
    assert_eq!(v["type"], "yext.assignment.expired");
    assert_eq!(v["data"]["pack"], "reviews");
    assert_eq!(v["data"]["entity"], "store-001");

    // Activations: the license's last seat, then one freed.
    let lic = ok(
        &n(&s, Method::GET, &format!("/v1/licenses/{STUDIO}"), None).await,
        StatusCode::OK,
    );
    let max = lic["activations"]["max"].as_u64().expect("max activations");
    let used = lic["activations"]["used"].as_u64().unwrap_or(0);
    for i in used..max {
        let r = n(
            &s,
            Method::PUT,
            &format!("/v1/licenses/{STUDIO}/devices/pc-{i}"),
            Some(json!({})),
        )
        .await;
        assert!(r.status.is_success(), "{:?}", r.json());
    }
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "seats.exhausted");
    assert_eq!(got[0].json()["data"]["pool"], "activations");
    assert_eq!(got[0].json()["data"]["in_use"], max);
    let r = n(
        &s,
        Method::DELETE,
        &format!("/v1/licenses/{STUDIO}/devices/pc-{}", max - 1),
        None,
    )
    .await;
    assert!(r.status.is_success(), "{:?}", r.json());
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "seats.available");
    rx.settle(2, 300).await;
}

#[tokio::test]
async fn retry_after_redirects_and_giving_up() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let (id, _) = subscribe(&s, json!({"url": rx.url, "events": ["meter.threshold"]})).await;
    // 429 with Retry-After: 120 s, exactly (no jitter on a receiver's wish).
    rx.answer_retry_after(429, "120");
    consume(&s, 800).await;
    rx.wait_for(1).await;
    let d = attempts(&s, &id, 1).await;
    assert_eq!(d["deliveries"][0]["status_code"], 429);
    assert_eq!(
        d["deliveries"][0]["next_attempt_at"], "2026-11-25T12:02:00.000Z",
        "{d}"
    );
    // A redirect is an answer like others: not followed, tried again later.
    rx.answer(&[302, 500, 500, 500, 500, 500, 500]);
    s.clock.advance(120_000);
    tick().await;
    rx.wait_for(2).await;
    let d = attempts(&s, &id, 2).await;
    assert_eq!(d["deliveries"][1]["result"], "retrying");
    assert_eq!(d["deliveries"][1]["status_code"], 302);
    // Keep failing: attempts follow the schedule until a day after the
    // event, then the delivery is failed.
    let steps = [300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000];
    for (i, step) in steps.iter().enumerate() {
        s.clock.advance(step * 6 / 5);
        tick().await;
        attempts(&s, &id, 3 + i).await;
    }
    let d = attempts(&s, &id, 7).await;
    let list = d["deliveries"].as_array().expect("list");
    assert_eq!(list.len(), 7, "{d}");
    assert_eq!(list[6]["result"], "failed", "{d}");
    assert_eq!(d["pending"], json!([]));
    s.clock.advance(36_000_000);
    tick().await;
    rx.settle(7, 300).await;
}

/// A sweep that frees several seats of a full pool at once reports the pool
/// available once (its first freed seat), with the count at that point.
#[tokio::test]
async fn a_sweep_freeing_a_full_pool_reports_it_available_once() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribe(
        &s,
        json!({"url": rx.url, "events": ["seats.available"], "license": STUDIO, "feature": "export-4k"}),
    )
    .await;
    for h in ["a", "b"] {
        let path = format!("/v1/licenses/{STUDIO}/features/export-4k/seats/{h}");
        ok(&n(&s, Method::PUT, &path, None).await, StatusCode::CREATED);
    }
    s.clock.advance(16 * 60_000);
    tally::server::sweep_once(&s.app, s.now()).await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "seats.available");
    assert_eq!(got[0].json()["data"]["in_use"], 1);
    rx.settle(1, 300).await;
}

/// During a rotation's overlap every delivery is signed with both secrets:
/// a receiver still on the old one verifies it, so does one on the new.
#[tokio::test]
async fn a_rotation_signs_with_both_secrets_during_its_overlap() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let (id, old) = subscribe(&s, json!({"url": rx.url, "events": ["license.changed"]})).await;
    let rotated = ok(
        &n(
            &s,
            Method::POST,
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(json!({"overlap_ms": 60_000})),
        )
        .await,
        StatusCode::OK,
    );
    let new = rotated["secret"].as_str().expect("secret").to_string();
    let license_id =
        s.admin(Method::GET, "/licenses?limit=1", None).await.json()["items"][0]["id"].to_string();
    let change = |n: u32| json!({ "max_activations": n });
    s.admin(
        Method::PATCH,
        &format!("/licenses/{license_id}"),
        Some(change(5)),
    )
    .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    assert!(got[0].verifies(&old) && got[0].verifies(&new));
    // After the overlap, the new secret only.
    s.clock.advance(61_000);
    s.admin(
        Method::PATCH,
        &format!("/licenses/{license_id}"),
        Some(change(6)),
    )
    .await;
    let got = rx.wait_for(2).await;
    assert!(got[1].verifies(&new) && !got[1].verifies(&old));
}
