//! State fixtures through the real binary: save, restore, reset, list and
//! delete over HTTP and with `tally state`; bad requests change nothing; a
//! restore survives a SIGKILL (its logged record is replayed) and a
//! periodic snapshot (which prunes its state file); a restore under
//! concurrent load never shows a request a mix of two states.
#![allow(clippy::too_many_lines, reason = "a scenario reads top to bottom")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::binary::Binary;
use hyper::Method;
use serde_json::{json, Value};

const STUDIO: &str = "DEMO-STUDIO-0001";

fn bearer() -> (&'static str, String) {
    Binary::demo_bearer()
}

async fn consume(b: &Binary, units: i64) {
    let (status, v) = b
        .call(
            Method::POST,
            &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
            &[bearer()],
            Some(json!({ "units": units })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

async fn state(
    b: &Binary,
    admin: &(&'static str, String),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    b.call(method, path, std::slice::from_ref(admin), body)
        .await
}

/// `POST /admin/v1/state/{action}` `{"name": name}`: its status and answer.
async fn fixture(
    b: &Binary,
    admin: &(&'static str, String),
    action: &str,
    name: &str,
) -> (u16, Value) {
    state(
        b,
        admin,
        Method::POST,
        &format!("/admin/v1/state/{action}"),
        Some(json!({ "name": name })),
    )
    .await
}

/// `tally state <args>` against `b`; (exit success, stdout, stderr).
fn cli(b: &Binary, dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("state")
        .args(args)
        .arg("--url")
        .arg(&b.base)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("TALLY_ADMIN_TOKEN")
        .output()
        .expect("run tally state");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("restore-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_save_restore_and_reset_and_a_crash_keeps_the_restore() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut b = Binary::start(dir, &["--snapshot-interval", "0"], &[]);
    let admin = Binary::admin_header(dir);

    // The state right after the catalog loaded is there from the start.
    let (status, listed) = state(&b, &admin, Method::GET, "/admin/v1/state", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"][0]["name"], "initial");

    consume(&b, 500).await;
    let (status, saved) = fixture(&b, &admin, "save", "half").await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["licenses"], 6);
    consume(&b, 100).await;
    assert_eq!(b.demo_credits().await, 600);
    let (status, restored) = fixture(&b, &admin, "restore", "half").await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(b.demo_credits().await, 500);

    // The admin API's other spellings of the same route restore too (they
    // must pass by the gate the restore shuts, not wait for themselves).
    for path in ["/admin/v1//state/restore", "/admin/v1/%73tate/restore"] {
        let call = state(
            &b,
            &admin,
            Method::POST,
            path,
            Some(json!({"name": "half"})),
        );
        let (status, v) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{path}: the restore waited for itself"));
        assert_eq!(status, 200, "{path}: {v}");
    }
    // An id handed out before a restore is never handed out again after it.
    let tenant = |name: &str| json!({"name": name});
    let (status, before) = state(
        &b,
        &admin,
        Method::POST,
        "/admin/v1/tenants",
        Some(tenant("t1")),
    )
    .await;
    assert_eq!(status, 201, "{before}");
    let (status, _) = fixture(&b, &admin, "restore", "half").await;
    assert_eq!(status, 200);
    let (status, after) = state(
        &b,
        &admin,
        Method::POST,
        "/admin/v1/tenants",
        Some(tenant("t2")),
    )
    .await;
    assert_eq!(status, 201, "{after}");
    assert!(
        after["id"].as_u64() > before["id"].as_u64(),
        "{before} then {after}"
    );

    // Bad requests: each in the admin API's shape, none changes anything.
    std::fs::write(dir.join("fixtures/broken.snap"), b"TALLYSNP not a snapshot").expect("write");
    for (method, path, body, want, code) in [
        (
            Method::POST,
            "/admin/v1/state/save",
            json!({}),
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/admin/v1/state/save",
            json!({"name": "../x"}),
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/admin/v1/state/save",
            json!({"name": "a", "x": 1}),
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/admin/v1/state/save",
            json!({"name": "initial"}),
            409,
            "reserved",
        ),
        (
            Method::POST,
            "/admin/v1/state/restore",
            json!({"name": "nope"}),
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/admin/v1/state/restore",
            json!({"name": "broken"}),
            422,
            "fixture_unreadable",
        ),
        (
            Method::POST,
            "/admin/v1/state/reset",
            json!({"name": "x"}),
            400,
            "invalid",
        ),
        (
            Method::DELETE,
            "/admin/v1/state/nope",
            Value::Null,
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            "/admin/v1/state/initial",
            Value::Null,
            409,
            "reserved",
        ),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (status, v) = state(&b, &admin, method, path, body).await;
        assert_eq!(status, want, "{path}: {v}");
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
    }
    let (status, _) = b
        .call(Method::GET, "/admin/v1/state", &[bearer()], None)
        .await;
    assert_eq!(status, 401, "a tenant key is not the admin token");
    assert_eq!(b.demo_credits().await, 500);

    // The ledger tells each tenant its counters were replaced.
    let (status, ledger) = b
        .call(
            Method::GET,
            "/v1/ledger?kind=state_restored",
            &[bearer()],
            None,
        )
        .await;
    assert_eq!(status, 200, "{ledger}");
    assert_eq!(ledger["entries"][0]["entry"]["subject"], "half", "{ledger}");

    // A SIGKILL after the restore: the log replays it from its state file.
    assert_eq!(
        restore_files(dir).len(),
        4,
        "one per restore since the last snapshot"
    );
    b.kill9();
    let mut b = Binary::start(dir, &["--snapshot-interval", "1"], &[]);
    assert_eq!(b.demo_credits().await, 500);
    // A periodic snapshot rebuilds through the restore, then the file goes.
    consume(&b, 1).await;
    let waited = std::time::Instant::now();
    while !restore_files(dir).is_empty() {
        assert!(waited.elapsed().as_secs() < 20, "the restore file stayed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.kill9();
    let b = Binary::start(dir, &[], &[]);
    assert_eq!(b.demo_credits().await, 501);

    // The command line: save, list, reset, restore, delete.
    let (ok, out, err) = cli(&b, dir, &["save", "round-1"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["name"],
        "round-1"
    );
    let (ok, out, err) = cli(&b, dir, &["list"]);
    assert!(ok, "{err}");
    let names: Vec<String> = serde_json::from_str::<Value>(&out).expect("json")["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["broken", "half", "initial", "round-1"]);
    let (ok, _, err) = cli(&b, dir, &["reset"]);
    assert!(ok, "{err}");
    assert_eq!(b.demo_credits().await, 0);
    let (ok, _, err) = cli(&b, dir, &["restore", "round-1"]);
    assert!(ok, "{err}");
    assert_eq!(b.demo_credits().await, 501);
    let (ok, _, err) = cli(&b, dir, &["delete", "round-1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&b, dir, &["restore", "round-1"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    let (ok, _, err) = cli(&b, dir, &["save", "a/b"]);
    assert!(!ok);
    assert!(err.contains("fixture name"), "{err}");
}

/// One license with four metered features, and a second one to write to.
fn mix_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let meter = |code: &str| {
        json!({"code": code, "name": code, "feature_type": "consumption",
               "max_consumption": 1_000_000_000})
    };
    let catalog = json!({"tenants": [{
        "name": "Mix",
        "api_keys": [{"api_key": "mix-key", "shared_key": "mix-shared", "role": "admin"}],
        "products": [{"short_code": "mix", "name": "Mix", "authorization_method": "license-key"}],
        "customers": [{"email": "mix@example.com"}],
        "licenses": [
            {"product": "mix", "license_key": "MIX-READ", "customer": "mix@example.com",
             "license_type": "perpetual", "max_activations": 1,
             "features": [meter("f1"), meter("f2"), meter("f3"), meter("f4")]},
            {"product": "mix", "license_key": "MIX-WRITE", "customer": "mix@example.com",
             "license_type": "perpetual", "max_activations": 1, "features": [meter("w")]}
        ]
    }]});
    let path = dir.join("mix.json");
    std::fs::write(&path, catalog.to_string()).expect("write catalog");
    path
}

fn mix_key() -> (&'static str, String) {
    ("Authorization", "Bearer mix-key".to_string())
}

/// The four meters of MIX-READ, as one request reads them.
async fn mix_reading(b: &Binary) -> Vec<i64> {
    let (status, v) = b
        .call(Method::GET, "/v1/licenses/MIX-READ", &[mix_key()], None)
        .await;
    assert_eq!(status, 200, "{v}");
    v["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["usage"]["used"].as_i64().expect("used"))
        .collect()
}

async fn add_each(b: &Binary, units: i64) {
    for f in ["f1", "f2", "f3", "f4"] {
        let (status, v) = b
            .call(
                Method::POST,
                &format!("/v1/licenses/MIX-READ/features/{f}/usage"),
                &[mix_key()],
                Some(json!({ "units": units })),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_under_concurrent_load_never_shows_a_mixed_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let catalog = mix_catalog(tmp.path());
    let b = Arc::new(Binary::start_on(
        &dir,
        &catalog,
        &["--snapshot-interval", "1"],
        &[],
    ));
    let admin = Binary::admin_header(&dir);
    add_each(&b, 111).await;
    let (status, v) = fixture(&b, &admin, "save", "a").await;
    assert_eq!(status, 201, "{v}");
    add_each(&b, 111).await;
    let (status, v) = fixture(&b, &admin, "save", "b").await;
    assert_eq!(status, 201, "{v}");

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (b, stop, reads) = (b.clone(), stop.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let seen = mix_reading(&b).await;
                assert!(
                    seen == [111; 4] || seen == [222; 4],
                    "a request saw a mix of two states: {seen:?}"
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Changes run beside the restores too (each answered, none lost in a
    // half-made state).
    let writes = Arc::new(AtomicU64::new(0));
    {
        let (b, stop, writes) = (b.clone(), stop.clone(), writes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, v) = b
                    .call(
                        Method::POST,
                        "/v1/licenses/MIX-WRITE/features/w/usage",
                        &[mix_key()],
                        Some(json!({"units": 1})),
                    )
                    .await;
                assert_eq!(status, 200, "{v}");
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for round in 0..30 {
        let (name, want) = if round % 2 == 0 {
            ("a", 111)
        } else {
            ("b", 222)
        };
        let (status, v) = fixture(&b, &admin, "restore", name).await;
        assert_eq!(status, 200, "{v}");
        // The first request after the restore sees the restored state whole.
        assert_eq!(mix_reading(&b).await, [want; 4], "after restoring {name}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task failed");
    }
    eprintln!(
        "reads {} writes {}",
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed)
    );
    assert!(
        reads.load(Ordering::Relaxed) > 30,
        "too few reads to mean anything"
    );
    assert!(
        writes.load(Ordering::Relaxed) > 10,
        "too few writes to mean anything"
    );
    // The last restore was "b": its meters, whatever ran before.
    assert_eq!(mix_reading(&b).await, [222; 4]);
}

async fn seats(b: &Binary) -> Vec<Value> {
    let (status, v) = b
        .call(
            Method::GET,
            &format!("/v1/licenses/{STUDIO}/features/export-4k/seats"),
            &[bearer()],
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["seats"].as_array().cloned().unwrap_or_default()
}

async fn clock_to(b: &Binary, admin: &(&'static str, String), instant: &str) {
    let (status, v) = state(
        b,
        admin,
        Method::POST,
        "/admin/v1/clock",
        Some(json!({ "set": instant })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

/// A floating seat in a fixture is held a full timeout from the restore
/// (as after a restart), and a replay of the restore holds it the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_seat_is_held_a_full_timeout_from_the_restore() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let args = [
        "--clock",
        "virtual=2026-11-30T12:00:00Z",
        "--snapshot-interval",
        "0",
    ];
    let mut b = Binary::start(dir, &args, &[]);
    let admin = Binary::admin_header(dir);
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
    let (status, v) = fixture(&b, &admin, "save", "seat").await;
    assert_eq!(status, 201, "{v}");
    clock_to(&b, &admin, "2026-11-30T12:20:00Z").await;
    assert!(seats(&b).await.is_empty(), "swept at 12:15");
    let (status, v) = fixture(&b, &admin, "restore", "seat").await;
    assert_eq!(status, 200, "{v}");
    let held = seats(&b).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["expires_at"], "2026-11-30T12:35:00.000Z");
    b.kill9();
    let b = Binary::start(dir, &args, &[]);
    clock_to(&b, &admin, "2026-11-30T12:34:00Z").await;
    assert_eq!(
        seats(&b).await.len(),
        1,
        "the replayed restore holds it too"
    );
    clock_to(&b, &admin, "2026-11-30T12:36:00Z").await;
    assert!(seats(&b).await.is_empty(), "swept at 12:35");
}

/// A request still sending its body holds the gate: a restore waits for it
/// a bounded time, then gives up (nothing changes) and requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_gives_up_on_a_request_that_does_not_finish() {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let b = Binary::start(dir, &["--snapshot-interval", "0"], &[]);
    let admin = Binary::admin_header(dir);
    let (status, _) = fixture(&b, &admin, "save", "x").await;
    assert_eq!(status, 201);
    // Half a body, then nothing (the server waits for the rest up to its
    // request time limit, 30 s).
    let addr = b.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/licenses/{STUDIO}/features/ai-credits/usage HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer demo-api-key\r\nContent-Type: application/json\r\n\
         Content-Length: 20\r\n\r\n{{\"units\""
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, v) = fixture(&b, &admin, "restore", "x").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "busy", "{v}");
    let waited = started.elapsed();
    assert!(
        waited.as_millis() >= 4_500 && waited.as_millis() < 15_000,
        "{waited:?}"
    );
    // The gate is open again: requests are answered at once.
    let (status, _) = b.call(Method::GET, "/healthz", &[], None).await;
    assert_eq!(status, 200);
    drop(slow);
    let (status, v) = fixture(&b, &admin, "restore", "x").await;
    assert_eq!(status, 200, "{v}");
}
