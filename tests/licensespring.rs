//! LicenseSpring License API v4 over HTTP: every endpoint, its success path and
//! its error codes, seat timeouts and period resets with an injected clock,
//! concurrency, and response signatures.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{json, Value};
use tally::engine::time::{DAY_MS, HOUR_MS, MINUTE_MS};

const KEY: &str = "DEMO-STUDIO-0001";
const HW: &str = "demo-laptop";

fn q<'a>(key: &'a str, hw: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("product", "studio"),
        ("license_key", key),
        ("hardware_id", hw),
    ]
}

fn body(key: &str, hw: &str) -> Value {
    json!({"product": "studio", "license_key": key, "hardware_id": hw})
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().expect("object").clone() {
        v[k] = x;
    }
    v
}

async fn activate(s: &TestServer, key: &str, hw: &str) -> Resp {
    s.ls_post("activate_license", body(key, hw)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_check_and_deactivation() {
    let s = TestServer::start().await;
    let r = activate(&s, KEY, "hw-a").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let lic = r.json();
    assert_eq!(lic["license_key"], KEY);
    assert_eq!(lic["times_activated"], 2); // demo-laptop is pre-activated
    assert_eq!(lic["product_details"]["short_code"], "studio");
    assert_eq!(lic["customer"]["email"], "buyer@example.com");
    assert_eq!(lic["custom_fields"][0]["name"], "seats");
    assert!(lic["device_id"].is_u64());
    assert!(lic["license_signature"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // Activating the same device again takes no new seat.
    assert_eq!(activate(&s, KEY, "hw-a").await.json()["times_activated"], 2);

    let r = s.ls_get("check_license", &q(KEY, "hw-a")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["license_active"], true);
    assert_eq!(r.json()["is_expired"], false);

    // Seat limit: max_activations is 3.
    assert_eq!(activate(&s, KEY, "hw-b").await.status, StatusCode::OK);
    let r = activate(&s, KEY, "hw-c").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "license_activated_max_times")
    );

    let r = s.ls_post("deactivate_license", body(KEY, "hw-a")).await;
    assert_eq!(r.status, StatusCode::OK);
    // The string LicenseSpring answers (the Node SDK refuses anything else).
    assert_eq!(r.json(), "license_deactivated");
    assert_eq!(
        s.ls_get("check_license", &q(KEY, "hw-a")).await.code(),
        "device_not_found"
    );
    assert_eq!(
        s.ls_post("deactivate_license", body(KEY, "hw-a"))
            .await
            .code(),
        "device_not_found"
    );
    // Reactivating the same device is not a transfer.
    assert_eq!(activate(&s, KEY, "hw-a").await.json()["transfer_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_counted_and_capped() {
    let s = TestServer::start().await;
    // DEMO-STUDIO-0001: max_activations 3, max_transfers 2, demo-laptop active.
    for hw in ["t-1", "t-2"] {
        assert_eq!(activate(&s, KEY, hw).await.status, StatusCode::OK);
    }
    let mut prev = "t-2".to_string();
    for (i, next) in ["t-3", "t-4"].iter().enumerate() {
        assert_eq!(
            s.ls_post("deactivate_license", body(KEY, &prev))
                .await
                .status,
            StatusCode::OK
        );
        let r = activate(&s, KEY, next).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
        assert_eq!(r.json()["transfer_count"], i + 1);
        prev = next.to_string();
    }
    assert_eq!(
        s.ls_post("deactivate_license", body(KEY, &prev))
            .await
            .status,
        StatusCode::OK
    );
    let r = activate(&s, KEY, "t-5").await;
    assert_eq!(r.code(), "license_transferred_max_times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_checks_and_their_errors() {
    let s = TestServer::start().await;
    let mut query = q(KEY, HW);
    query.push(("feature", "render"));
    let r = s.ls_get("check_license_feature", &query).await;
    assert_eq!(r.status, StatusCode::OK);
    let f = r.json();
    // Exactly the seed's fields for a non-floating feature.
    let mut keys: Vec<&str> = f
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "allow_negative_consumptions",
            "allow_overages",
            "allow_unlimited_consumptions",
            "code",
            "consumption_period",
            "expiry_date",
            "feature_type",
            "id",
            "is_floating",
            "is_floating_cloud",
            "license_id",
            "max_consumption",
            "max_overages",
            "metadata",
            "name",
            "reset_consumption",
            "total_consumptions"
        ]
    );
    assert_eq!(f["feature_type"], "activation");

    let mut bad = q(KEY, HW);
    bad.push(("feature", "nope"));
    assert_eq!(
        s.ls_get("check_license_feature", &bad).await.code(),
        "invalid_license_feature_code"
    );
    let mut other_device = q(KEY, "unknown-device");
    other_device.push(("feature", "render"));
    assert_eq!(
        s.ls_get("check_license_feature", &other_device)
            .await
            .code(),
        "device_not_found"
    );
    let mut no_feature = q(KEY, HW);
    no_feature.retain(|(k, _)| *k != "product");
    no_feature.push(("feature", "render"));
    assert_eq!(
        s.ls_get("check_license_feature", &no_feature).await.code(),
        "missing_parameters"
    );
    let r = s
        .ls_get(
            "check_license_feature",
            &[
                ("product", "nope"),
                ("license_key", KEY),
                ("hardware_id", HW),
                ("feature", "render"),
            ],
        )
        .await;
    assert_eq!(r.code(), "unknown_product");
    let r = s
        .ls_get(
            "check_license_feature",
            &[
                ("product", "studio"),
                ("license_key", "NOPE"),
                ("hardware_id", HW),
                ("feature", "render"),
            ],
        )
        .await;
    assert_eq!(r.code(), "license_not_found");

    // An expired feature is refused.
    let lic = s
        .app
        .engine
        .product_by_code(
            s.app.engine.api_key(API_KEY).expect("key").tenant_id,
            "studio",
        )
        .expect("product");
    let lic_id = lic.licenses_by_key.get(KEY).expect("license").id;
    let fid = s
        .app
        .engine
        .license(lic_id)
        .expect("license")
        .feature("render")
        .expect("feature")
        .id;
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{lic_id}/features/{fid}"),
            Some(json!({"expiry_date": "2026-11-24"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        s.ls_get("check_license_feature", &query).await.code(),
        "license_feature_expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_state_errors() {
    let s = TestServer::start().await;
    let lic_id = activate(&s, KEY, HW).await.json()["id"]
        .as_u64()
        .expect("id");
    let path = format!("/licenses/{lic_id}");
    let cq = q(KEY, HW);
    let check = || s.ls_get("check_license", &cq);

    s.admin(Method::PATCH, &path, Some(json!({"enabled": false})))
        .await;
    assert_eq!(check().await.code(), "license_not_enabled");
    s.admin(
        Method::PATCH,
        &path,
        Some(json!({"enabled": true, "active": false})),
    )
    .await;
    assert_eq!(check().await.code(), "license_not_active");
    s.admin(
        Method::PATCH,
        &path,
        Some(json!({"active": true, "start_date": "2026-12-01"})),
    )
    .await;
    assert_eq!(check().await.code(), "license_not_started");
    s.admin(
        Method::PATCH,
        &path,
        Some(json!({"start_date": null, "validity_period": "2026-11-24"})),
    )
    .await;
    assert_eq!(check().await.code(), "license_expired");
    // Grace period: 48 hours past validity still works.
    s.admin(
        Method::PATCH,
        &path,
        Some(json!({"allow_grace_period": true, "grace_period": 48})),
    )
    .await;
    let r = check().await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["is_expired"], true);
    s.clock.advance(2 * DAY_MS);
    assert_eq!(check().await.code(), "license_expired");

    // prevent_vm refuses virtual machines.
    s.admin(
        Method::PATCH,
        &path,
        Some(json!({"validity_period": null, "prevent_vm": true})),
    )
    .await;
    let r = s
        .ls_post(
            "activate_license",
            with(body(KEY, "vm-1"), json!({"is_vm": true})),
        )
        .await;
    assert_eq!(r.code(), "vm_not_allowed");

    // A blacklisted device is refused and loses its seat.
    let r = s
        .admin(
            Method::PATCH,
            &format!("{path}/devices/{HW}"),
            Some(json!({"blacklisted": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(check().await.code(), "blacklisted");
    assert_eq!(activate(&s, KEY, HW).await.code(), "blacklisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_errors() {
    let s = TestServer::start().await;
    let ok = s.ls_request(
        Method::GET,
        "check_license",
        &q(KEY, HW),
        None,
        (API_KEY, SHARED_KEY),
    );
    assert_eq!(s.send(ok).await.status, StatusCode::OK);

    let mut missing = s.ls_request(
        Method::GET,
        "check_license",
        &q(KEY, HW),
        None,
        (API_KEY, SHARED_KEY),
    );
    missing.headers_mut().remove("Date");
    let r = s.send(missing).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "missing_headers")
    );
    assert_eq!(r.json()["status"], 400);
    assert!(r.json()["message"].is_string());

    let mut malformed = s.ls_request(
        Method::GET,
        "check_license",
        &q(KEY, HW),
        None,
        (API_KEY, SHARED_KEY),
    );
    malformed
        .headers_mut()
        .insert("Authorization", "Basic abc".parse().expect("header"));
    assert_eq!(
        s.send(malformed).await.code(),
        "authorization_invalid_headers"
    );

    let r = s
        .send(s.ls_request(
            Method::GET,
            "check_license",
            &q(KEY, HW),
            None,
            (API_KEY, "wrong"),
        ))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "signature_mismatch")
    );
    let r = s
        .send(s.ls_request(
            Method::GET,
            "check_license",
            &q(KEY, HW),
            None,
            ("nope", SHARED_KEY),
        ))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_api_key")
    );

    // A request signed 16 minutes ago.
    let stale = s.ls_request(
        Method::GET,
        "check_license",
        &q(KEY, HW),
        None,
        (API_KEY, SHARED_KEY),
    );
    s.clock.advance(16 * MINUTE_MS);
    assert_eq!(s.send(stale).await.code(), "date_header_diff");

    // Read-only keys check but cannot change anything.
    let ro = ("demo-readonly-key", "demo-readonly-shared");
    assert_eq!(
        s.send(s.ls_request(Method::GET, "check_license", &q(KEY, HW), None, ro))
            .await
            .status,
        StatusCode::OK
    );
    let r = s
        .send(s.ls_request(
            Method::POST,
            "activate_license",
            &[],
            Some(&body(KEY, "ro")),
            ro,
        ))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "read_only_api_key")
    );

    // Revoked keys stop working at once.
    assert_eq!(
        s.admin(Method::POST, "/api-keys/demo-readonly-key/revoke", None)
            .await
            .status,
        StatusCode::OK
    );
    let r = s
        .send(s.ls_request(Method::GET, "check_license", &q(KEY, HW), None, ro))
        .await;
    assert_eq!(r.code(), "revoked_api_key");

    // Bad JSON, wrong method, unknown endpoint.
    let mut bad = s.ls_request(
        Method::POST,
        "activate_license",
        &[],
        None,
        (API_KEY, SHARED_KEY),
    );
    *bad.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"{not json"));
    assert_eq!(s.send(bad).await.code(), "invalid_json");
    let r = s
        .send(s.ls_request(
            Method::GET,
            "activate_license",
            &[],
            None,
            (API_KEY, SHARED_KEY),
        ))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        s.ls_get("no_such_thing", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_seats_time_out_release_and_borrow() {
    let s = TestServer::start().await;
    let fk = "DEMO-FLOAT-0001"; // 5 floating users, 30 minute timeout
    for i in 0..5 {
        let r = activate(&s, fk, &format!("f-{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
        assert_eq!(r.json()["floating_in_use_devices"], i + 1);
    }
    let r = activate(&s, fk, "f-5").await;
    assert_eq!(r.code(), "floating_not_available");

    // Release frees a seat at once.
    // LicenseSpring answers a release with an empty body.
    let r = s.ls_post("floating/release", body(fk, "f-0")).await;
    assert_eq!((r.status, &r.bytes[..]), (StatusCode::OK, &b""[..]));
    assert_eq!(activate(&s, fk, "f-5").await.status, StatusCode::OK);

    // Keep f-1 alive by checking at 20 minutes; the others time out at 30.
    s.clock.advance(20 * MINUTE_MS);
    assert_eq!(
        s.ls_get("check_license", &q(fk, "f-1")).await.status,
        StatusCode::OK
    );
    s.clock.advance(11 * MINUTE_MS);
    let holders = s
        .admin(
            Method::GET,
            &format!(
                "/licenses/{}/floating",
                activate(&s, fk, "f-1").await.json()["id"]
            ),
            None,
        )
        .await
        .json();
    assert_eq!(holders["license"]["in_use"], 1, "{holders}");
    // f-2's seat expired: its check takes a new one.
    let r = s.ls_get("check_license", &q(fk, "f-2")).await;
    assert_eq!(r.json()["floating_in_use_devices"], 2);

    // Borrowing: not allowed on this license.
    assert_eq!(
        s.ls_post("floating/borrow", body(fk, "f-2")).await.code(),
        "license_borrow_not_allowed"
    );
    // The demo studio license can borrow up to 48 hours.
    let mut fq = q(KEY, HW);
    fq.push(("feature", "export-4k"));
    assert_eq!(
        s.ls_get("check_license_feature", &fq).await.json()["floating_in_use_devices"],
        1
    );
    let until = tally::engine::time::format_instant(s.now() + 24 * HOUR_MS);
    let r = s
        .ls_post(
            "floating/feature_borrow",
            with(
                body(KEY, HW),
                json!({"feature": "export-4k", "borrowed_until": until}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["borrowed_until"], until);
    let too_long = tally::engine::time::format_instant(s.now() + 49 * HOUR_MS);
    let r = s
        .ls_post(
            "floating/feature_borrow",
            with(
                body(KEY, HW),
                json!({"feature": "export-4k", "borrowed_until": too_long}),
            ),
        )
        .await;
    assert_eq!(r.code(), "borrow_until_not_valid");
    // A borrowed seat outlives the 15-minute feature timeout.
    s.clock.advance(23 * HOUR_MS);
    let r = s.ls_get("check_license_feature", &fq).await;
    assert_eq!(r.json()["floating_in_use_devices"], 1);
    // Feature release.
    let r = s
        .ls_post(
            "floating/feature_release",
            with(body(KEY, HW), json!({"feature": "export-4k"})),
        )
        .await;
    assert_eq!((r.status, &r.bytes[..]), (StatusCode::OK, &b""[..]));
    let id = s.ls_get("check_license", &q(KEY, HW)).await.json()["id"].clone();
    let held = s
        .admin(Method::GET, &format!("/licenses/{id}/floating"), None)
        .await
        .json();
    let f = &held["features"][0];
    assert_eq!(
        (&f["code"], &f["in_use"]),
        (&json!("export-4k"), &json!(0)),
        "{held}"
    );
    // License-level borrow with null: now + max_borrow_time.
    let r = s
        .ls_post(
            "floating/borrow",
            with(body(KEY, HW), json!({"borrowed_until": null})),
        )
        .await;
    assert_eq!(r.code(), "license_not_floating");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_limits_overages_negative_and_period_reset() {
    let s = TestServer::start().await;
    let add = |n: i64| {
        s.ls_post(
            "add_feature_consumption",
            with(
                body(KEY, HW),
                json!({"feature": "ai-credits", "consumptions": n}),
            ),
        )
    };
    // max 1000, overages 100, monthly reset.
    assert_eq!(add(1000).await.json()["total_consumptions"], 1000);
    assert_eq!(add(100).await.json()["total_consumptions"], 1100);
    let r = add(1).await;
    assert_eq!(r.code(), "feature_not_enough_consumptions");
    assert_eq!(add(-1).await.code(), "negative_consumptions_not_allowed");
    // 2026-12-01T00:00Z starts a new month.
    s.clock.set(at("2026-11-30T23:59:59Z"));
    assert_eq!(add(1).await.code(), "feature_not_enough_consumptions");
    s.clock.set(at("2026-12-01T00:00:00Z"));
    assert_eq!(add(5).await.json()["total_consumptions"], 5);

    // License-level consumption on DEMO-METER-0001: max 500, negative allowed, daily reset.
    let mk = "DEMO-METER-0001";
    assert_eq!(activate(&s, mk, HW).await.status, StatusCode::OK);
    let add_l = |n: i64| {
        s.ls_post(
            "add_consumption",
            with(body(mk, HW), json!({"consumptions": n})),
        )
    };
    assert_eq!(add_l(500).await.json()["total_consumptions"], 500);
    assert_eq!(add_l(1).await.code(), "not_enough_consumptions");
    assert_eq!(add_l(-200).await.json()["total_consumptions"], 300);
    assert_eq!(add_l(-301).await.code(), "consumption_below_zero");
    s.clock.set(at("2026-12-02T00:00:00Z"));
    assert_eq!(add_l(0).await.json()["total_consumptions"], 0);
    assert_eq!(
        s.ls_post("add_consumption", body(KEY, HW)).await.code(),
        "missing_parameters"
    );
    assert_eq!(
        s.ls_post(
            "add_consumption",
            with(body(KEY, HW), json!({"consumptions": 1}))
        )
        .await
        .code(),
        "license_not_consumption"
    );
    assert_eq!(
        s.ls_post(
            "add_consumption",
            with(body(mk, HW), json!({"consumptions": "x"}))
        )
        .await
        .code(),
        "validation_error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_based_licenses() {
    let s = TestServer::start().await;
    let user = |pw: &str| json!({"product": "cloud", "username": "alice@example.com", "password": pw, "hardware_id": "u-1"});
    let r = s.ls_post("activate_license", user("wrong")).await;
    assert_eq!(r.code(), "wrong_credentials");
    let r = s.ls_post("activate_license", user("alice-password")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let lic = r.json();
    assert_eq!(lic["user"]["email"], "alice@example.com");
    assert_eq!(lic["user"]["total_activations"], 1);
    assert!(lic.get("license_key").is_none());
    // Checks name the user without a password; license_id picks the license.
    let id = lic["id"].as_u64().expect("id").to_string();
    let r = s
        .ls_get(
            "check_license_feature",
            &[
                ("product", "cloud"),
                ("username", "ALICE@example.com"),
                ("hardware_id", "u-1"),
                ("feature", "sync"),
                ("license_id", &id),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let r = s
        .ls_get(
            "check_license",
            &[
                ("product", "cloud"),
                ("username", "alice@example.com"),
                ("hardware_id", "u-1"),
                ("license_id", "1"),
            ],
        )
        .await;
    assert_eq!(r.code(), "license_not_found");
    let r = s
        .ls_get(
            "check_license",
            &[
                ("product", "cloud"),
                ("username", "bob@example.com"),
                ("hardware_id", "u-1"),
            ],
        )
        .await;
    assert_eq!(r.code(), "license_not_found");

    let r = s
        .ls_get(
            "user_licenses",
            &[
                ("product", "cloud"),
                ("username", "alice@example.com"),
                ("password", "alice-password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(
        list[0]["license"]["product_details"]["authorization_method"],
        "user"
    );
    assert_eq!(list[0]["user"]["first_name"], "Alice");
    let r = s
        .ls_get(
            "user_licenses",
            &[("username", "alice@example.com"), ("password", "bad")],
        )
        .await;
    assert_eq!(r.code(), "wrong_credentials");

    let r = s
        .ls_get(
            "customer_license_users",
            &[("product", "cloud"), ("customer", "buyer@example.com")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["users"][0]["email"], "alice@example.com");
    assert_eq!(r.json()["customer"]["company_name"], "Example Ltd");
    let r = s
        .ls_get(
            "customer_license_users",
            &[("product", "cloud"), ("customer", "nobody@example.com")],
        )
        .await;
    assert_eq!(r.code(), "customer_not_found");

    // A password change voids the remembered verification.
    let uid = lic["user"]["id"].as_u64().expect("user id");
    let r = s
        .admin(
            Method::PATCH,
            &format!("/users/{uid}"),
            Some(json!({"password": "new-password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        s.ls_post("activate_license", user("alice-password"))
            .await
            .code(),
        "wrong_credentials"
    );
    assert_eq!(
        s.ls_post("activate_license", user("new-password"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_keys_product_details_and_device_variables() {
    let s = TestServer::start().await;
    let r = s
        .ls_get(
            "trial_key",
            &[
                ("product", "studio"),
                ("hardware_id", "trial-hw"),
                ("email", "t@example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let t = r.json();
    assert_eq!(t["is_trial"], true);
    assert_eq!(t["trial_days"], 14);
    let key = t["license_key"].as_str().expect("trial key").to_string();
    assert_eq!(activate(&s, &key, "trial-hw").await.status, StatusCode::OK);
    let r = s
        .ls_get(
            "trial_key",
            &[("product", "studio"), ("hardware_id", "trial-hw")],
        )
        .await;
    // Asking again for the same device answers the trial already issued.
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["license_key"], key.as_str());
    // The trial expires after 14 days.
    s.clock.advance(15 * DAY_MS);
    assert_eq!(
        s.ls_get("check_license", &q(&key, "trial-hw")).await.code(),
        "license_expired"
    );

    let r = s
        .ls_get(
            "trial_key",
            &[
                ("product", "cloud"),
                ("hardware_id", "trial-2"),
                ("email", "new@example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let pw = r.json()["initial_password"]
        .as_str()
        .expect("password")
        .to_string();
    let r = s.ls_post("activate_license", json!({"product": "cloud", "username": "new@example.com", "password": pw, "hardware_id": "trial-2"})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());

    let r = s.ls_get("product_details", &[("product", "studio")]).await;
    assert_eq!(r.json()["product_name"], "Demo Studio");
    assert_eq!(r.json()["trial_days"], 14);
    assert_eq!(r.json()["metadata"]["tier"], "pro");

    let r = s
        .ls_post(
            "track_device_variables",
            with(
                body(KEY, HW),
                json!({"variables": {"os": "linux", "seat": "A1"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let r = s
        .ls_post(
            "track_device_variables",
            with(body(KEY, HW), json!({"variables": {"seat": "B2"}})),
        )
        .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    let r = s.ls_get("get_device_variables", &q(KEY, HW)).await;
    let vars: Vec<(String, String)> = r
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|v| {
            (
                v["variable"].as_str().unwrap_or("").into(),
                v["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        vars,
        [
            ("os".to_string(), "linux".to_string()),
            ("seat".into(), "B2".into())
        ]
    );
    assert_eq!(
        s.ls_get("get_device_variables", &q(KEY, "nope"))
            .await
            .code(),
        "device_not_found"
    );
    let r = s
        .ls_post(
            "track_device_variables",
            with(body(KEY, HW), json!({"variables": [1, 2]})),
        )
        .await;
    assert_eq!(r.code(), "validation_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_signed_with_the_published_key() {
    let s = TestServer::start().await;
    let pem = s.admin(Method::GET, "/signing-key", None).await.json()["public_key_pem"]
        .as_str()
        .expect("pem")
        .to_string();
    let key = VerifyingKey::<sha2::Sha256>::new(
        rsa::RsaPublicKey::from_public_key_pem(&pem).expect("public key"),
    );
    let mut fq = q(KEY, HW);
    fq.push(("feature", "render"));
    for _ in 0..2 {
        let r = s.ls_get("check_license_feature", &fq).await;
        let sig = r
            .headers
            .get("LicenseSignature")
            .expect("signature header")
            .to_str()
            .expect("ascii");
        let sig = Signature::try_from(base64_decode(sig).as_slice()).expect("signature bytes");
        key.verify(&r.bytes, &sig)
            .expect("signature verifies over the exact body");
    }
    // Tampered body fails.
    let r = s.ls_get("check_license", &q(KEY, HW)).await;
    let sig = Signature::try_from(
        base64_decode(r.headers["LicenseSignature"].to_str().expect("ascii")).as_slice(),
    )
    .expect("sig");
    let mut tampered = r.bytes.to_vec();
    tampered[2] ^= 1;
    assert!(key.verify(&tampered, &sig).is_err());

    // Signing can be switched off.
    let s2 = TestServer::start_with(|o| o.sign_responses = false).await;
    assert!(s2
        .ls_get("check_license_feature", &fq)
        .await
        .headers
        .get("LicenseSignature")
        .is_none());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_devices_get_exactly_the_floating_seats() {
    let s = std::sync::Arc::new(TestServer::start().await);
    // DEMO-STUDIO-0001's export-4k feature has 2 floating seats: make a fresh
    // license with 10 seats through the admin API.
    let tenant = s.app.engine.api_key(API_KEY).expect("key").tenant_id;
    let product = s
        .app
        .engine
        .product_by_code(tenant, "studio")
        .expect("product")
        .id;
    let r = s
        .admin(
            Method::POST,
            "/licenses",
            Some(
                json!({"product_id": product, "license_key": "RACE-1", "max_activations": 1000,
            "is_floating_cloud": true, "floating_users": 10, "floating_timeout": 60}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { activate(&s, "RACE-1", &format!("race-{i}")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            StatusCode::OK => won += 1,
            _ => assert_eq!(r.code(), "floating_not_available"),
        }
    }
    assert_eq!(won, 10);
    let id = r.json()["id"].as_u64().expect("id");
    let holders = s
        .admin(Method::GET, &format!("/licenses/{id}/floating"), None)
        .await
        .json();
    assert_eq!(holders["license"]["in_use"], 10);
    assert_eq!(
        holders["license"]["holders"].as_array().map(Vec::len),
        Some(10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumption_is_exact() {
    let s = std::sync::Arc::new(TestServer::start().await);
    // ai-credits: max 1000 + 100 overage. Unlimited feature for the volume test.
    let lic = activate(&s, KEY, HW).await.json()["id"]
        .as_u64()
        .expect("id");
    let r = s.admin(Method::POST, &format!("/licenses/{lic}/features"), Some(json!({"code": "bulk", "feature_type": "consumption", "allow_unlimited_consumptions": true}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    // Two clients, 250 requests of 2,000 each: 1,000,000 consumptions in all.
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    let r = s
                        .ls_post(
                            "add_feature_consumption",
                            with(
                                body(KEY, HW),
                                json!({"feature": "bulk", "consumptions": 2000}),
                            ),
                        )
                        .await;
                    assert_eq!(r.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let mut fq = q(KEY, HW);
    fq.push(("feature", "bulk"));
    assert_eq!(
        s.ls_get("check_license_feature", &fq).await.json()["total_consumptions"],
        1_000_000
    );

    // Racing past a limit: 64 adds of 20 against 1100 total allowed → exactly 55 succeed.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.ls_post(
                    "add_feature_consumption",
                    with(
                        body(KEY, HW),
                        json!({"feature": "ai-credits", "consumptions": 20}),
                    ),
                )
                .await
                .status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 55);
}

/// Feature answers are rendered once per state of the feature: a change of
/// its spec or of its consumption total shows in the very next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_answers_follow_every_change() {
    let s = TestServer::start().await;
    assert_eq!(activate(&s, KEY, HW).await.status, StatusCode::OK);
    let check = |code: &'static str| {
        let s = &s;
        async move {
            let mut query = q(KEY, HW);
            query.push(("feature", code));
            s.ls_get("check_license_feature", &query).await
        }
    };
    let first = check("render").await.json();
    assert_eq!(check("render").await.json(), first);
    let (lid, fid) = (first["license_id"].clone(), first["id"].clone());
    let r = s
        .admin(
            Method::PUT,
            &format!("/licenses/{lid}/features/{fid}"),
            Some(json!({"code": "render", "name": "Render Pro"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(check("render").await.json()["name"], "Render Pro");

    assert_eq!(check("ai-credits").await.json()["total_consumptions"], 0);
    let r = s
        .ls_post(
            "add_feature_consumption",
            with(
                body(KEY, HW),
                json!({"feature": "ai-credits", "consumptions": 7}),
            ),
        )
        .await;
    assert_eq!(r.json()["total_consumptions"], 7);
    assert_eq!(check("ai-credits").await.json()["total_consumptions"], 7);
}

/// A sample of `GET /metrics` (no labels).
async fn metric(s: &TestServer, name: &str) -> u64 {
    let r = s
        .send(
            hyper::Request::get(s.url("/metrics"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    sample(&String::from_utf8_lossy(&r.bytes), name)
}

/// The sample `name` (no labels) of a `/metrics` text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Waits until the signed-answer filler has kept the same count for a
/// second (its pass is over); returns the count.
async fn filled(s: &TestServer) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..100 {
        let kept = metric(s, "tally_signed_answers_kept").await;
        if kept == last && kept > 0 {
            return kept;
        }
        last = kept;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the filler never settled (last {last})");
}

/// Feature answers are signed ahead of their requests (the filler), so a
/// check makes no fresh RSA signature, and what it sends verifies; a
/// consumption's new answer is signed once and kept for the checks after
/// it; a budget of two answers keeps two and still signs the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_answers_are_signed_ahead_within_the_budget() {
    let s = TestServer::start().await;
    let kept = filled(&s).await;
    assert!(kept >= 3, "the demo's non-floating features: {kept}");
    let made = metric(&s, "tally_signatures_total").await;
    let check = |feature: &'static str| {
        let mut query = q(KEY, HW);
        query.push(("feature", feature));
        let s = &s;
        async move { s.ls_get("check_license_feature", &query).await }
    };
    for feature in ["render", "ai-credits"] {
        let r = check(feature).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
        let sig = r.headers["licensesignature"].to_str().expect("ascii");
        assert!(s.signed_by_server(&r.bytes, sig).await, "{feature}");
    }
    assert_eq!(metric(&s, "tally_signatures_total").await, made);

    // A consumption changes the answer: signed once, on its request...
    let r = s
        .ls_post(
            "add_feature_consumption",
            with(
                body(KEY, HW),
                json!({"feature": "ai-credits", "consumptions": 3}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(metric(&s, "tally_signatures_total").await, made + 1);
    // ... and the checks after it send that answer with no new signature.
    for _ in 0..3 {
        let r = check("ai-credits").await;
        assert_eq!(r.json()["total_consumptions"], 3);
        let sig = r.headers["licensesignature"].to_str().expect("ascii");
        assert!(s.signed_by_server(&r.bytes, sig).await);
    }
    assert_eq!(metric(&s, "tally_signatures_total").await, made + 1);
    assert_eq!(metric(&s, "tally_signed_answers_kept").await, kept);
    let bytes = metric(&s, "tally_signature_cache_bytes").await;
    assert!(bytes >= kept * 256, "{bytes} bytes for {kept}");

    // Two answers' budget: two kept, the others signed on their request.
    let small = TestServer::start_with(|o| o.signature_cache_bytes = 700).await;
    assert_eq!(metric(&small, "tally_signed_answers_max").await, 2);
    assert_eq!(filled(&small).await, 2);
    for feature in ["render", "ai-credits"] {
        let mut query = q(KEY, HW);
        query.push(("feature", feature));
        let r = small.ls_get("check_license_feature", &query).await;
        let sig = r.headers["licensesignature"].to_str().expect("ascii");
        assert!(small.signed_by_server(&r.bytes, sig).await, "{feature}");
    }
    assert_eq!(metric(&small, "tally_signed_answers_kept").await, 2);
}

/// `GET /metrics` of a running binary: the sample `name` (no labels).
async fn binary_metric(b: &common::binary::Binary, name: &str) -> u64 {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(format!("{}/metrics", b.base))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = b.client.request(req).await.expect("answer");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    sample(&String::from_utf8_lossy(&bytes), name)
}

/// Waits (up to 60 s) for a line of the binary's log containing `text`
/// after its first `skip` lines that do.
async fn logged(b: &common::binary::Binary, text: &str, skip: usize) -> String {
    for _ in 0..600 {
        let found = b
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(text))
            .nth(skip)
            .cloned();
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("never logged {text:?}: {:?}", b.log.lock().expect("log"));
}

/// A signed `check_license_feature` on the binary: (body, signature).
async fn binary_check(b: &common::binary::Binary, feature: &str) -> (bytes::Bytes, String) {
    use http_body_util::BodyExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let (date, auth) = tally::api::licensespring::client_headers(API_KEY, SHARED_KEY, now);
    let url = format!(
        "{}/api/v4/check_license_feature?product=studio&license_key={KEY}&hardware_id={HW}&feature={feature}",
        b.base
    );
    let req = hyper::Request::get(url)
        .header("Date", date)
        .header("Authorization", auth)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = b.client.request(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let sig = resp.headers()["licensesignature"]
        .to_str()
        .expect("ascii")
        .to_string();
    (
        resp.into_body().collect().await.expect("body").to_bytes(),
        sig,
    )
}

/// The kept signatures survive a restart of the real binary: saved after
/// the filler's first pass, matched to their answers at the next start
/// without a single fresh signature, and sent (verified with the public
/// key); a damaged file is refused whole and the answers signed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_signatures_survive_a_restart() {
    use common::binary::Binary;
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    let mut b = Binary::start(&dir, &[], &[]);
    logged(&b, "saved ", 0).await;
    let kept = binary_metric(&b, "tally_signed_answers_kept").await;
    assert!(kept >= 3, "{kept}");
    b.stop();
    let file = dir.join(tally::signing::SIGNATURES_FILE);
    assert!(file.exists());

    let mut b = Binary::start(&dir, &[], &[]);
    let line = logged(&b, "saved signatures matched", 0).await;
    assert!(
        line.contains(&format!(
            "0 answers signed, {kept} saved signatures matched"
        )),
        "{line}"
    );
    assert_eq!(binary_metric(&b, "tally_signatures_total").await, 0);
    assert_eq!(binary_metric(&b, "tally_signed_answers_kept").await, kept);
    let (_, key) = b
        .call(
            hyper::Method::GET,
            "/admin/v1/signing-key",
            &[Binary::admin_header(&dir)],
            None,
        )
        .await;
    let key = VerifyingKey::<sha2::Sha256>::new(
        rsa::RsaPublicKey::from_public_key_pem(key["public_key_pem"].as_str().expect("pem"))
            .expect("key"),
    );
    let verifies = |body: &[u8], sig: &str| {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .expect("base64");
        let sig = Signature::try_from(raw.as_slice()).expect("signature");
        key.verify(body, &sig).is_ok()
    };
    let (body, sig) = binary_check(&b, "render").await;
    assert!(verifies(&body, &sig));
    assert_eq!(binary_metric(&b, "tally_signatures_total").await, 0);
    b.stop();

    // One flipped byte: the file is refused, every answer signed again.
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).expect("write");
    let mut b = Binary::start(&dir, &[], &[]);
    let line = logged(&b, "ignored", 0).await;
    assert!(line.contains("MAC"), "{line}");
    logged(&b, "signed-answer filler", 0).await;
    assert_eq!(binary_metric(&b, "tally_signatures_total").await, kept);
    let (body, sig) = binary_check(&b, "render").await;
    assert!(verifies(&body, &sig));
    logged(&b, "saved ", 0).await;
    b.stop();

    // A torn file (one byte short) is refused by its length; a save a stop
    // cut short (the temporary file) is removed.
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() - 1]).expect("write");
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, b"half a save").expect("write");
    let b = Binary::start(&dir, &[], &[]);
    let line = logged(&b, "ignored", 0).await;
    assert!(line.contains("length"), "{line}");
    assert!(!tmp.exists());
    logged(&b, "signed-answer filler", 0).await;
    assert_eq!(binary_metric(&b, "tally_signatures_total").await, kept);
}
