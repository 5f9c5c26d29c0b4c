//! LicenseSpring License API v4 endpoints beyond the check path, over HTTP:
//! versions and installation files, password changes, bundles, offline
//! activation and deactivation, SSO (not configured), `include_expired_features`,
//! `env`/`channel`, answers' exact bodies, and bodies that are what
//! JavaScript's `JSON.stringify` writes (the harness checks every signed
//! answer; see `tests/common`).
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use base64::Engine as _;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tally::api::licensespring::auth::hmac_b64;

const KEY: &str = "DEMO-STUDIO-0001";
const HW: &str = "demo-laptop";
const SUITE: &str = "DEMO-SUITE-0001";

fn q<'a>(product: &'a str, key: &'a str, hw: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("product", product),
        ("license_key", key),
        ("hardware_id", hw),
    ]
}

#[tokio::test]
async fn versions_and_installation_files() {
    let s = TestServer::start().await;
    let r = s.ls_get("versions", &q("studio", KEY, HW)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        r.json(),
        json!([
            {"version": "1.0.0", "release_date": "2026-01-15T00:00:00.000Z"},
            {"version": "1.1.0", "release_date": "2026-06-01T00:00:00.000Z"},
            {"version": "2.0.0-beta", "release_date": "2026-11-01T00:00:00.000Z"},
        ])
    );
    let mut beta = q("studio", KEY, HW);
    beta.push(("channel", "beta"));
    let r = s.ls_get("versions", &beta).await.json();
    assert_eq!(r.as_array().map(Vec::len), Some(1));
    assert_eq!(r[0]["version"], "2.0.0-beta");

    // The newest file for an environment and channel, every field.
    let mut w = q("studio", KEY, HW);
    w.extend([("env", "win64"), ("channel", "prod")]);
    let r = s.ls_get("installation_file", &w).await;
    assert_eq!(
        r.json(),
        json!({
            "id": 3, "version": "1.1.0",
            "installation_file": "https://downloads.example.com/studio/1.1.0/studio-1.1.0-win64.zip",
            "release_date": "2026-06-01T00:00:00.000Z", "hash_md5": "", "environment": "win64",
            "eula_link": "https://example.com/eula",
            "release_notes_link": "https://example.com/studio/1.1.0/notes",
            "size": null, "requires_version": null, "channel": "prod",
            "company": {"id": r.json()["company"]["id"]},
        })
    );
    assert!(r.json()["company"]["id"].as_u64().is_some());
    // A named version; an unknown one.
    let mut v1 = w.clone();
    v1.push(("version", "1.0.0"));
    let r = s.ls_get("installation_file", &v1).await.json();
    assert_eq!((&r["id"], &r["size"]), (&json!(1), &json!("52428800")));
    let mut v9 = w.clone();
    v9.push(("version", "9.9.9"));
    let r = s.ls_get("installation_file", &v9).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "version_not_found".into())
    );

    // The license object describes the newest file of the request's env.
    let mut c = q("studio", KEY, HW);
    c.push(("env", "linux"));
    let lic = s.ls_get("check_license", &c).await.json();
    assert_eq!(
        (&lic["version"], &lic["environment"], &lic["channel"]),
        (&json!("1.1.0"), &json!("linux"), &json!("prod"))
    );
    assert_eq!(
        lic["installation_file"],
        "https://downloads.example.com/studio/1.1.0/studio-1.1.0-linux.zip"
    );

    // A license whose validity ends before a release does not see it.
    let id = lic["id"].clone();
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({"license_type": "time-limited", "validity_period": "2026-12-31"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({"enable_maintenance_period": true, "maintenance_period": "2026-03-01"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let r = s.ls_get("versions", &q("studio", KEY, HW)).await.json();
    assert_eq!(
        r,
        json!([{"version": "1.0.0", "release_date": "2026-01-15T00:00:00.000Z"}])
    );

    // Product details with the latest version.
    let r = s
        .ls_get(
            "product_details",
            &[
                ("product", "studio"),
                ("include_latest_version", "true"),
                ("env", "linux"),
            ],
        )
        .await
        .json();
    assert_eq!(r["latest_version"]["version"], "1.1.0");
    assert_eq!(r["latest_version"]["filename"], "studio-1.1.0-linux.zip");
    assert_eq!(r["prevent_vm"], false);

    // Errors: an inactive license, a device that is not activated.
    let r = s
        .ls_get("versions", &q("studio", KEY, "unknown-device"))
        .await;
    assert_eq!(r.code(), "device_not_found");
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.ls_get("installation_file", &w).await;
    assert_eq!(r.code(), "active_license_required");
}

#[tokio::test]
async fn change_password_replaces_the_old_one() {
    let s = TestServer::start().await;
    let ul = |password: &'static str| {
        let s = &s;
        async move {
            s.ls_get(
                "user_licenses",
                &[
                    ("product", "cloud"),
                    ("username", "alice@example.com"),
                    ("password", password),
                ],
            )
            .await
        }
    };
    // A cached verification of the old password must not outlive the change.
    assert_eq!(ul("alice-password").await.status, StatusCode::OK);
    let change = |old: &str, new: &str| json!({"username": "alice@example.com", "password": old, "new_password": new});
    let r = s.ls_post("change_password", change("wrong", "x")).await;
    assert_eq!(r.code(), "wrong_credentials");
    let r = s
        .ls_post("change_password", json!({"username": "alice@example.com"}))
        .await;
    assert_eq!(r.code(), "missing_parameters");
    let r = s
        .ls_post("change_password", change("alice-password", "n3w-secret"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.bytes[..], br#""password_changed""#);
    assert_eq!(ul("alice-password").await.code(), "wrong_credentials");
    let r = ul("n3w-secret").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[0]["user"]["is_initial_password"], false);
}

#[tokio::test]
async fn sso_answers_as_for_an_account_without_sso() {
    let s = TestServer::start().await;
    let r = s
        .ls_get(
            "sso_url",
            &[
                ("product", "cloud"),
                ("customer_account_code", "acme"),
                ("response_type", "code"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::BAD_REQUEST,
            "sso_customer_account_url_error".into()
        )
    );
    assert_eq!(
        s.ls_get("sso_url", &[("product", "cloud")]).await.code(),
        "missing_parameters"
    );
    let r = s
        .ls_get(
            "user_licenses",
            &[
                ("product", "cloud"),
                ("id_token", "t"),
                ("customer_account_code", "acme"),
            ],
        )
        .await;
    assert_eq!(r.code(), "sso_customer_account_token_error");
    let r = s
        .ls_post(
            "activate_license",
            json!({"product": "cloud", "code": "c", "customer_account_code": "acme", "hardware_id": "x"}),
        )
        .await;
    assert_eq!(r.code(), "sso_customer_account_token_error");
}

#[tokio::test]
async fn expired_features_are_left_out_unless_asked_for() {
    let s = TestServer::start().await;
    let lic = s
        .ls_get("check_license", &q("studio", KEY, HW))
        .await
        .json();
    let id = lic["id"].clone();
    let fid = lic["product_features"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == "render"))
        .map(|f| f["id"].clone())
        .expect("render feature");
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}/features/{fid}"),
            Some(json!({"expiry_date": "2026-01-01"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let codes = |v: &Value| -> Vec<String> {
        let mut c: Vec<String> = v["product_features"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["code"].as_str().unwrap_or("").into())
                    .collect()
            })
            .unwrap_or_default();
        c.sort();
        c
    };
    let lic = s
        .ls_get("check_license", &q("studio", KEY, HW))
        .await
        .json();
    assert_eq!(codes(&lic), ["ai-credits", "export-4k"]);
    let mut all = q("studio", KEY, HW);
    all.push(("include_expired_features", "true"));
    let lic = s.ls_get("check_license", &all).await.json();
    assert_eq!(codes(&lic), ["ai-credits", "export-4k", "render"]);
}

#[tokio::test]
async fn bundles_activate_check_and_deactivate_every_product() {
    let s = TestServer::start().await;
    let body = |hw: &str| json!({"product": "suite", "license_key": SUITE, "hardware_id": hw});
    let r = s.ls_post("activate_bundle", body("b-1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let list = r.json();
    let products: Vec<&str> = list
        .as_array()
        .expect("a list of licenses")
        .iter()
        .map(|l| l["product_details"]["short_code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(products, ["studio", "viewer"]);
    assert!(list
        .as_array()
        .is_some_and(|a| a.iter().all(|l| l["times_activated"] == 1
            && l["license_key"] == SUITE
            && l["license_signature"].is_string())));

    let r = s.ls_get("check_bundle", &q("suite", SUITE, "b-1")).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2), "{:?}", r.json());

    // Both licenses allow 2 devices: a third is refused on the first product
    // and nothing is left activated.
    assert_eq!(
        s.ls_post("activate_bundle", body("b-2")).await.status,
        StatusCode::OK
    );
    // Make the viewer license the one that refuses: one activation left on
    // studio, none on viewer.
    let viewer_check = s
        .ls_get("check_license", &q("viewer", SUITE, "b-2"))
        .await
        .json();
    let vid = viewer_check["id"].clone();
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{vid}"),
            Some(json!({"max_activations": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let studio_check = s
        .ls_get("check_license", &q("studio", SUITE, "b-2"))
        .await
        .json();
    let sid = studio_check["id"].clone();
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{sid}"),
            Some(json!({"max_activations": 3})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.ls_post("activate_bundle", body("b-3")).await;
    assert_eq!(r.code(), "license_activated_max_times");
    let r = s.ls_get("check_license", &q("studio", SUITE, "b-3")).await;
    assert_eq!(
        r.code(),
        "device_not_found",
        "the studio activation was undone"
    );
    assert_eq!(
        s.ls_get("check_license", &q("studio", SUITE, "b-1"))
            .await
            .json()["times_activated"],
        2
    );

    let r = s.ls_post("deactivate_bundle", body("b-1")).await;
    assert_eq!(
        (r.status, &r.bytes[..]),
        (StatusCode::OK, &br#""license_deactivated""#[..])
    );
    assert_eq!(
        s.ls_get("check_bundle", &q("suite", SUITE, "b-1"))
            .await
            .code(),
        "device_not_found"
    );
    assert_eq!(
        s.ls_post("deactivate_bundle", body("b-1")).await.code(),
        "device_not_found"
    );

    // Not a bundle; a key that no bundled product has.
    assert_eq!(
        s.ls_get("check_bundle", &q("studio", KEY, HW)).await.code(),
        "product_not_bundle"
    );
    assert_eq!(
        s.ls_get("check_bundle", &q("suite", "NOPE", HW))
            .await
            .code(),
        "license_not_found"
    );
}

/// A request file as the SDKs write it: base64 of `{"request", "signature"}`
/// with the signature over the request's own bytes.
fn request_file(request: &Value, shared_key: &str) -> String {
    let raw = request.to_string();
    let signature = hmac_b64(shared_key, &[raw.as_bytes()]);
    let wrapped = format!(r#"{{"request":{raw},"signature":"{signature}"}}"#);
    base64::engine::general_purpose::STANDARD.encode(wrapped)
}

async fn post_text(s: &TestServer, endpoint: &str, text: String) -> Resp {
    let mut req = s.ls_request(Method::POST, endpoint, &[], None, (API_KEY, SHARED_KEY));
    req.headers_mut()
        .insert("content-type", "text/plain".parse().expect("header"));
    *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from(text));
    s.send(req).await
}

#[tokio::test]
async fn offline_activation_and_deactivation() {
    let s = TestServer::start().await;
    let request = json!({
        "product": "studio", "license_key": KEY, "hardware_id": "off-1",
        "request": "activation", "request_id": "req-42", "schema_version": 2,
        "api_key": API_KEY, "date": "Mon Nov 30 2026 11:38:15 GMT+0000",
        "variables": {"site": "lab"},
    });
    let r = post_text(&s, "activate_offline", request_file(&request, SHARED_KEY)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let lic = r.json();
    assert_eq!(
        (&lic["request_id"], &lic["license_key"]),
        (&json!("req-42"), &json!(KEY))
    );
    assert_eq!(lic["variables"][0]["value"], "lab");
    // offline_signature: HMAC over the answer's date, key, device and API key.
    let date = lic["date"].as_str().expect("date");
    let text = format!("licenseSpring\ndate: {date}\n{KEY}\noff-1\n{API_KEY}");
    assert_eq!(
        lic["offline_signature"],
        hmac_b64(SHARED_KEY, &[text.as_bytes()])
    );
    assert_eq!(
        s.ls_get("check_license", &q("studio", KEY, "off-1"))
            .await
            .status,
        StatusCode::OK
    );

    // A tampered request, a wrong key, junk, nothing.
    let mut tampered = request_file(&request, SHARED_KEY);
    tampered = {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&tampered)
            .expect("b64");
        let raw = String::from_utf8(raw)
            .expect("utf8")
            .replace("off-1", "off-2");
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let r = post_text(&s, "activate_offline", tampered).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "signature_mismatch".into())
    );
    let r = post_text(&s, "activate_offline", request_file(&request, "wrong")).await;
    assert_eq!(r.code(), "signature_mismatch");
    let r = post_text(&s, "activate_offline", "not base64!".into()).await;
    assert_eq!(r.code(), "authorization_missing_params");
    let r = post_text(&s, "activate_offline", "  \n".into()).await;
    assert_eq!(r.code(), "missing_content");
    assert_eq!(
        s.ls_get("check_license", &q("studio", KEY, "off-2"))
            .await
            .code(),
        "device_not_found"
    );

    // Deactivation, with the license consumption the device reports.
    let request = json!({
        "product": "studio", "license_key": "DEMO-METER-0001", "hardware_id": "off-m",
        "request": "activation", "api_key": API_KEY, "date": "x",
    });
    let r = post_text(&s, "activate_offline", request_file(&request, SHARED_KEY)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let request = json!({
        "product": "studio", "license_key": "DEMO-METER-0001", "hardware_id": "off-m",
        "request": "deactivation", "api_key": API_KEY, "date": "x", "consumptions": 7,
    });
    let r = post_text(&s, "deactivate_offline", request_file(&request, SHARED_KEY)).await;
    assert_eq!(
        (r.status, &r.bytes[..]),
        (StatusCode::OK, &br#""license_deactivated""#[..])
    );
    let r = s
        .ls_post(
            "activate_license",
            json!({"product": "studio", "license_key": "DEMO-METER-0001", "hardware_id": "off-m"}),
        )
        .await;
    assert_eq!(r.json()["total_consumptions"], 7);
    let r = post_text(&s, "deactivate_offline", request_file(&request, SHARED_KEY)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_text(&s, "deactivate_offline", request_file(&request, SHARED_KEY)).await;
    assert_eq!(r.code(), "device_not_found");
}

#[tokio::test]
async fn signed_bodies_are_what_javascript_writes() {
    let s = TestServer::start().await;
    let lic = s
        .ls_get("check_license", &q("studio", KEY, HW))
        .await
        .json();
    let id = lic["id"].clone();
    // Keys JavaScript reorders, numbers it prints differently from Rust.
    let metadata = json!({"b": 1.0, "10": 0.5, "9": 1e21, "a": 12345678901234567890u64,
                          "07": "é😀\u{2028}", "x": [1.5e-7, -0.0, 100.0]});
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({"metadata": metadata})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    // The harness asserts the JavaScript form of every signed answer.
    let r = s.ls_get("check_license", &q("studio", KEY, HW)).await;
    let text = String::from_utf8_lossy(&r.bytes).to_string();
    assert!(
        text.contains(r#""metadata":{"9":1e+21,"10":0.5,"07":"é😀"#),
        "{text}"
    );
    assert!(
        text.contains(r#""a":12345678901234567000,"b":1,"x":[1.5e-7,0,100]"#),
        "{text}"
    );
    // The check is not vacuous: serde_json's own form is not a fixed point.
    let plain = serde_json::to_vec(&metadata).expect("json");
    assert_ne!(js_round_trip(&plain), plain);
}

#[tokio::test]
async fn offline_bundles() {
    let s = TestServer::start().await;
    let request = json!({
        "product": "suite", "license_key": SUITE, "hardware_id": "off-b",
        "request": "activation", "request_id": "req-b", "api_key": API_KEY, "date": "x",
    });
    let r = post_text(
        &s,
        "activate_bundle_offline",
        request_file(&request, SHARED_KEY),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let mut answer = r.json();
    let licenses = answer["licenses"].as_array().cloned().expect("licenses");
    assert_eq!(licenses.len(), 2);
    assert!(licenses
        .iter()
        .all(|l| l["request_id"] == "req-b" && l["date"].is_string()));
    // bundle_signature_v2 covers the answer without it, as JavaScript writes it.
    let sig = answer["bundle_signature_v2"]
        .as_str()
        .expect("signature")
        .to_string();
    answer
        .as_object_mut()
        .expect("object")
        .remove("bundle_signature_v2");
    let message =
        tally::api::licensespring::js::to_vec(&tally::api::licensespring::js::Js(&answer))
            .expect("json");
    assert!(s.signed_by_server(&message, &sig).await);
    assert!(!s.signed_by_server(b"something else", &sig).await);
    // Each license's v2 covers it without its two signatures.
    let mut first = licenses[0].clone();
    let v2 = first["license_signature_v2"]
        .as_str()
        .expect("v2")
        .to_string();
    let m = first.as_object_mut().expect("object");
    m.remove("license_signature");
    m.remove("license_signature_v2");
    let message = tally::api::licensespring::js::to_vec(&tally::api::licensespring::js::Js(&first))
        .expect("json");
    assert!(s.signed_by_server(&message, &v2).await);
    assert_eq!(
        s.ls_get("check_bundle", &q("suite", SUITE, "off-b"))
            .await
            .status,
        StatusCode::OK
    );

    let request = json!({
        "product": "suite", "license_key": SUITE, "hardware_id": "off-b",
        "request": "deactivation", "api_key": API_KEY, "date": "x",
    });
    let r = post_text(
        &s,
        "deactivate_bundle_offline",
        request_file(&request, SHARED_KEY),
    )
    .await;
    assert_eq!(
        (r.status, &r.bytes[..]),
        (StatusCode::OK, &br#""license_deactivated""#[..])
    );
    assert_eq!(
        s.ls_get("check_bundle", &q("suite", SUITE, "off-b"))
            .await
            .code(),
        "device_not_found"
    );
}
