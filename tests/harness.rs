//! The harness toolkit through the real binary. The test clock (`--clock
//! virtual`): time moves only through `POST /admin/v1/clock`; what expires
//! meanwhile expires at its own instant, in order, as logged changes; a
//! month boundary resets a meter; clients' signatures stay checked on the
//! wall clock; after a SIGKILL the state and the clock come back the same.
#![allow(clippy::too_many_lines, reason = "a scenario reads top to bottom")]

mod common;

use common::binary::Binary;
use hyper::Method;
use serde_json::{json, Value};

const STUDIO: &str = "DEMO-STUDIO-0001";

fn bearer() -> (&'static str, String) {
    Binary::demo_bearer()
}

async fn holders(b: &Binary) -> Vec<Value> {
    let (_, v) = b
        .call(
            Method::GET,
            &format!("/v1/licenses/{STUDIO}/features/export-4k/seats"),
            &[bearer()],
            None,
        )
        .await;
    v["seats"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_clock_moves_time_and_a_restart_keeps_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut b = Binary::start(dir, &["--clock", "virtual=2026-11-30T12:00:00Z"], &[]);
    let admin = Binary::admin_header(dir);
    let (status, clock) = b
        .call(
            Method::GET,
            "/admin/v1/clock",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(clock["mode"], "virtual");
    assert_eq!(clock["now"], "2026-11-30T12:00:00.000Z");

    // A seat (15 minutes), and 500 of the month's 1,000 credits.
    let (status, seat) = b
        .call(
            Method::PUT,
            &format!("/v1/licenses/{STUDIO}/features/export-4k/seats/h1"),
            &[bearer()],
            None,
        )
        .await;
    assert_eq!(status, 201, "{seat}");
    assert_eq!(seat["expires_at"], "2026-11-30T12:15:00.000Z");
    let (status, _) = b
        .call(
            Method::POST,
            &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
            &[bearer()],
            Some(json!({"units": 500})),
        )
        .await;
    assert_eq!(status, 200);
    // A LicenseSpring client signs with the real time: still accepted, hours
    // away from the virtual clock.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (date, auth) =
        tally::api::licensespring::client_headers("demo-api-key", "demo-shared-key", now_ms);
    let (status, v) = b
        .call(
            Method::GET,
            &format!(
                "/api/v4/check_license?product=studio&license_key={STUDIO}&hardware_id=hw-clock"
            ),
            &[("Date", date), ("Authorization", auth)],
            None,
        )
        .await;
    assert_ne!(status, 401, "{v}");
    assert_ne!(v["code"], "date_header_difference", "{v}");

    // Bad moves change nothing.
    for (body, status_want) in [
        (json!({"set": "2026-11-30T11:00:00Z"}), 409),
        (json!({"advance_ms": -5}), 400),
        (json!({"advance_ms": 1, "set": "2027-01-01T00:00:00Z"}), 400),
        (json!({"set": "soon"}), 400),
        (json!({"jump": 1}), 400),
    ] {
        let (status, v) = b
            .call(
                Method::POST,
                "/admin/v1/clock",
                std::slice::from_ref(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, status_want, "{body} -> {v}");
    }
    assert_eq!(holders(&b).await.len(), 1);

    // Sixteen minutes: the seat expired at its own instant, by a logged sweep.
    let (status, moved) = b
        .call(
            Method::POST,
            "/admin/v1/clock",
            std::slice::from_ref(&admin),
            Some(json!({"advance_ms": 960_000})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["now"], "2026-11-30T12:16:00.000Z");
    assert!(moved["stops"].as_u64().unwrap_or(0) >= 2, "{moved}");
    assert!(holders(&b).await.is_empty());
    let (_, ledger) = b
        .call(
            Method::GET,
            "/v1/ledger?kind=seat_expired",
            &[bearer()],
            None,
        )
        .await;
    let expired = &ledger["entries"][0]["entry"];
    assert_eq!(expired["subject"], "h1", "{ledger}");
    assert_eq!(
        expired["at"].as_i64(),
        tally::engine::time::parse_instant("2026-11-30T12:15:00Z"),
        "expired at its own time, not at the end of the move"
    );

    // Past the month's end: the meter starts again.
    assert_eq!(b.demo_credits().await, 500);
    let (status, _) = b
        .call(
            Method::POST,
            "/admin/v1/clock",
            std::slice::from_ref(&admin),
            Some(json!({"set": "2026-12-01T00:00:01Z"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.demo_credits().await, 0);
    b.call(
        Method::POST,
        &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
        &[bearer()],
        Some(json!({"units": 10})),
    )
    .await;
    assert_eq!(b.demo_credits().await, 10);

    // A crash, and a start without a start time: the clock resumes where it
    // stood, the state is the same.
    b.kill9();
    let b = Binary::start(dir, &["--clock", "virtual"], &[]);
    let (_, clock) = b
        .call(
            Method::GET,
            "/admin/v1/clock",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(clock["now"], "2026-12-01T00:00:01.000Z");
    assert_eq!(b.demo_credits().await, 10);
    assert!(holders(&b).await.is_empty());
    let (_, again) = b
        .call(
            Method::GET,
            "/v1/ledger?kind=seat_expired",
            &[bearer()],
            None,
        )
        .await;
    assert_eq!(again["entries"], ledger["entries"]);
    drop(b);

    // On the wall clock the clock is not for moving.
    let wall_dir = tempfile::tempdir().expect("tempdir");
    let w = Binary::start(wall_dir.path(), &[], &[]);
    let admin = Binary::admin_header(wall_dir.path());
    let (status, v) = w
        .call(
            Method::GET,
            "/admin/v1/clock",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{v}");
    let (status, _) = w
        .call(
            Method::POST,
            "/admin/v1/clock",
            &[admin],
            Some(json!({"advance_ms": 1})),
        )
        .await;
    assert_eq!(status, 409);
}

/// `POST /admin/v1/journal/count` with `matcher`.
async fn count(b: &Binary, admin: &(&'static str, String), matcher: Value) -> (u16, Value) {
    b.call(
        Method::POST,
        "/admin/v1/journal/count",
        std::slice::from_ref(admin),
        Some(matcher),
    )
    .await
}

/// LicenseSpring's auth headers at the real time.
fn ls_headers() -> [(&'static str, String); 2] {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (date, auth) =
        tally::api::licensespring::client_headers("demo-api-key", "demo-shared-key", now_ms);
    [("Date", date), ("Authorization", auth)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_verifies_what_a_client_sent_and_keeps_no_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let b = Binary::start(dir, &["--journal", "100"], &[]);
    let token = Binary::admin_token(dir);
    let admin = ("Authorization", format!("Bearer {token}"));
    let check = format!(
        "/api/v4/check_license_feature?product=studio&license_key={STUDIO}&hardware_id=hw-j&feature=render"
    );
    for _ in 0..3 {
        let (status, v) = b.call(Method::GET, &check, &ls_headers(), None).await;
        assert!(status < 500, "{v}");
    }
    let (status, v) = b
        .call(
            Method::POST,
            "/api/v4/add_feature_consumption",
            &ls_headers(),
            Some(
                json!({"product": "studio", "license_key": STUDIO, "hardware_id": "hw-j",
                        "feature": "ai-credits", "consumptions": 1}),
            ),
        )
        .await;
    assert!(status < 500, "{v}");
    let (status, login) = b
        .call(
            Method::POST,
            "/saas/public/core/v3/login",
            &[],
            Some(json!({"username": "admin@parent.example", "password": "parent-admin-password"})),
        )
        .await;
    assert_eq!(status, 200);
    let session = login["userInfo"]["sessionId"]
        .as_str()
        .unwrap_or("")
        .to_string();

    // Counts, as a test verifies its client's calls.
    let (status, n) = count(
        &b,
        &admin,
        json!({"endpoint": "/api/v4/check_license_feature"}),
    )
    .await;
    assert_eq!((status, n["count"].clone()), (200, json!(3)), "{n}");
    let (_, n) = count(
        &b,
        &admin,
        json!({"endpoint": "/api/v4/add_feature_consumption", "method": "POST"}),
    )
    .await;
    assert_eq!(n["count"], 1);
    let (_, n) = count(
        &b,
        &admin,
        json!({"surface": "licensespring", "endpoint": "/api/v4/*"}),
    )
    .await;
    assert_eq!(n["count"], 4);
    let (status, _) = count(&b, &admin, json!({"colour": "red"})).await;
    assert_eq!(status, 400);

    // The entries: route, path, masked credentials, body, status, tenant.
    let (status, page) = b
        .call(
            Method::GET,
            "/admin/v1/journal?endpoint=/api/v4/check_license_feature&limit=2",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "the newest two");
    let e = &items[1];
    assert_eq!(e["surface"], "licensespring");
    assert_eq!(e["method"], "GET");
    assert!(e["path"].as_str().unwrap_or("").contains("feature=render"));
    assert!(e["tenant_id"].as_u64().is_some());
    let auth = e["headers"]
        .as_array()
        .and_then(|h| h.iter().find(|p| p[0] == "authorization"))
        .expect("authorization header");
    assert_eq!(auth[1], "***");
    let (_, all) = b
        .call(
            Method::GET,
            "/admin/v1/journal?limit=1000",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    let text = all.to_string();
    for secret in [
        "demo-shared-key",
        "parent-admin-password",
        session.as_str(),
        token.as_str(),
    ] {
        assert!(
            !secret.is_empty() && !text.contains(secret),
            "{secret} in the journal"
        );
    }
    let login_entry = all["items"]
        .as_array()
        .and_then(|i| {
            i.iter()
                .find(|e| e["endpoint"] == "/saas/public/core/v3/login")
        })
        .expect("the login");
    assert!(login_entry["body"]
        .as_str()
        .unwrap_or("")
        .contains("admin@parent.example"));

    // Cleared.
    let (status, _) = b
        .call(
            Method::DELETE,
            "/admin/v1/journal",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, n) = count(&b, &admin, json!({})).await;
    assert_eq!(n["count"], 0);
    drop(b);

    // Off by default.
    let off = tempfile::tempdir().expect("tempdir");
    let b = Binary::start(off.path(), &[], &[]);
    let admin = Binary::admin_header(off.path());
    let (status, _) = b
        .call(Method::GET, "/admin/v1/journal", &[admin], None)
        .await;
    assert_eq!(status, 409);
}

/// Fault rules from a file at start (`--faults`); a bad file stops the
/// start with its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rules_from_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rules = tmp.path().join("faults.json");
    std::fs::write(
        &rules,
        json!({"rules": [{"id": "from-file", "surface": "native", "endpoint": "/v1/check",
                          "effect": {"type": "error", "status": 503}}]})
        .to_string(),
    )
    .expect("write");
    let data = tmp.path().join("data");
    let b = Binary::start(&data, &["--faults", &rules.display().to_string()], &[]);
    let (status, v) = b
        .call(
            Method::POST,
            "/v1/check",
            &[bearer()],
            Some(json!({"license_key": STUDIO, "feature": "render"})),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["code"], "service_unavailable");
    let admin = Binary::admin_header(&data);
    let (_, listed) = b
        .call(Method::GET, "/admin/v1/faults", &[admin], None)
        .await;
    assert_eq!(listed["rules"][0]["id"], "from-file");
    assert_eq!(listed["rules"][0]["hits"], 1);
    drop(b);

    std::fs::write(
        &rules,
        json!({"rules": [{"effect": {"type": "error", "status": 99}}]}).to_string(),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--faults"])
        .arg(&rules)
        .arg("--data-dir")
        .arg(tmp.path().join("data2"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run tally");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules[0].effect.status"), "{err}");
}

/// Fault rules in the catalog apply at every start that names it (they are
/// not state); `--faults` replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rules_from_the_catalog_at_every_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json")).expect("demo");
    let mut catalog: serde_json::Value = serde_json::from_slice(&demo).expect("json");
    catalog["faults"] = json!({"rules": [{"id": "catalog", "endpoint": "/v1/check",
                                          "effect": {"type": "error", "status": 502}}]});
    let path = tmp.path().join("catalog.json");
    std::fs::write(&path, catalog.to_string()).expect("write");
    let data = tmp.path().join("data");
    let check = json!({"license_key": STUDIO, "feature": "render"});
    for _ in 0..2 {
        let b = Binary::start_on(&data, &path, &[], &[]);
        let (status, v) = b
            .call(Method::POST, "/v1/check", &[bearer()], Some(check.clone()))
            .await;
        assert_eq!(status, 502, "{v}");
        assert_eq!(v["code"], "bad_gateway");
    }
    // --faults replaces them.
    let other = tmp.path().join("faults.json");
    std::fs::write(&other, json!({"rules": []}).to_string()).expect("write");
    let b = Binary::start_on(
        &data,
        &path,
        &["--faults", &other.display().to_string()],
        &[],
    );
    let (status, _) = b
        .call(Method::POST, "/v1/check", &[bearer()], Some(check))
        .await;
    assert_eq!(status, 200);
}

/// A tenant's rate-limit overrides are kept in the data directory: a
/// restart finds them; a file that does not parse stops the start, saying
/// which file.
#[tokio::test]
async fn rate_limit_overrides_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let args = ["--emulate-rate-limits"];
    let mut b = Binary::start(dir, &args, &[]);
    let admin = Binary::admin_header(dir);
    let (status, tenants) = b
        .call(
            Method::GET,
            "/admin/v1/tenants",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{tenants}");
    let tenant = tenants["items"][0]["id"].to_string();
    let path = format!("/admin/v1/tenants/{}/rate-limits", tenant.trim_matches('"'));
    let set = json!({"yext": {"limit": 7, "window_ms": 60_000},
                     "licensespring": {"limit": 3, "window_ms": 1_000}});
    let (status, v) = b
        .call(Method::PUT, &path, std::slice::from_ref(&admin), Some(set))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = b
        .call(
            Method::PUT,
            &path,
            std::slice::from_ref(&admin),
            Some(json!({"licensespring": null})),
        )
        .await;
    assert_eq!(status, 200);
    b.kill9();

    let mut b = Binary::start(dir, &args, &[]);
    let (status, v) = b
        .call(Method::GET, &path, std::slice::from_ref(&admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"yext": {"limit": 7, "window_ms": 60_000}}));
    b.stop();

    std::fs::write(dir.join("rate_limits.json"), "[{\"tenant_id\": 1}]").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run tally");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate_limits.json"), "{err}");
}
