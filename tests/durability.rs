//! Durability through the real binary and real files: a crash loop (SIGKILL at
//! random moments under concurrent changes), then recovery checked against
//! what the server acknowledged.
//!
//! `TALLY_CRASH_CYCLES=N` sets the number of cycles (default 20;
//! `scripts/crash-loop.sh` runs 1,000).
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::{json, Value};
use tally::engine::Engine;
use tally::storage::store::{Store, StoreOptions};

const API_KEY: &str = "crash-key";
const SHARED_KEY: &str = "crash-shared";
/// Seats of the contended license and floating pool.
const SEATS: u64 = 2;
const POOL_SEATS: u32 = 3;

fn catalog() -> Value {
    let pool_devices: Vec<Value> = (0..16)
        .map(|i| json!({"hardware_id": format!("p-{i}")}))
        .collect();
    json!({"tenants": [{
        "name": "Crash",
        "api_keys": [{"api_key": API_KEY, "shared_key": SHARED_KEY, "role": "admin"}],
        "qlik": {"licenseNumber": "42", "product": "Qlik Sense Business", "valid": "2020-01-01/.",
                 "allotments": [{"name": "professional", "units": 5, "overage": 1},
                                {"name": "analyzer", "units": 3},
                                {"name": "analyzer_time", "units": 600}]},
        "yext": {"accountId": "acc-1", "packs": [{"id": "p", "name": "P", "total": 3}]},
        "informatica": {"orgId": "org-parent", "users": [{"username": "boss", "password": "pw", "admin": true}]},
        "products": [{"short_code": "p", "name": "P", "authorization_method": "license-key"}],
        "licenses": [
            {"product": "p", "license_key": "ACT", "max_activations": 1000000},
            {"product": "p", "license_key": "METER", "max_activations": 1,
             "devices": [{"hardware_id": "m"}],
             "features": [{"code": "units", "feature_type": "consumption", "allow_unlimited_consumptions": true}]},
            {"product": "p", "license_key": "SEATS", "max_activations": SEATS},
            {"product": "p", "license_key": "RES", "max_activations": 1,
             "features": [{"code": "tokens", "feature_type": "consumption", "allow_unlimited_consumptions": true}]},
            {"product": "p", "license_key": "POOL", "max_activations": 16, "devices": pool_devices,
             "features": [{"code": "seat", "is_floating_cloud": true, "floating_users": POOL_SEATS, "floating_timeout": 30}]}
        ]
    }, {
        "name": "CrashChild", "parent": "Crash",
        "informatica": {"orgId": "org-child", "licenses": {"customLimits": [{"limitDefinition": "rows", "value": 100}]}}
    }]})
}

/// A running `tally serve` and what it printed.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

fn start(dir: &Path, catalog: &Path, snapshot_secs: u64) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-sign"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--catalog")
        .arg(catalog)
        .args(["--snapshot-interval", &snapshot_secs.to_string()])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let plain = strip_ansi(&line);
            if let Some(rest) = plain.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            lines.lock().expect("log").push(plain);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a.parse().expect("listen address"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "server did not start:\n{}",
                log.lock().expect("log").join("\n")
            );
        }
    };
    Server { child, addr, log }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One LicenseSpring request; Some(status, body) when an answer came back.
async fn ls(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    endpoint: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (date, auth) = tally::api::licensespring::client_headers(API_KEY, SHARED_KEY, now);
    let mut uri = format!("http://{addr}/api/v4/{endpoint}");
    let payload = if method == Method::GET {
        let q: Vec<(String, String)> = body
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        uri.push('?');
        uri.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q)
                .finish(),
        );
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("Date", date)
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .body(Full::new(payload))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// One native API request with the bearer key; Some(status, body) when an
/// answer came back.
async fn native(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    body: Value,
    idempotency_key: Option<&str>,
) -> Option<(u16, Value)> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {API_KEY}"));
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Units each native reservation holds, and each commit uses.
const RESERVED_UNITS: i64 = 3;
const COMMITTED_UNITS: i64 = 2;

/// What the clients sent and what the server acknowledged, over all cycles.
#[derive(Default)]
struct Ledger {
    activations_sent: HashSet<String>,
    activations_acked: HashSet<String>,
    units_sent: u64,
    units_acked: u64,
    /// Native reservations acknowledged (201), by id.
    reservations_acked: HashSet<u64>,
    /// Commits sent and acknowledged, by reservation id.
    commits_sent: HashSet<u64>,
    commits_acked: HashSet<u64>,
    /// Native usage under idempotency keys: distinct keys sent (each sent
    /// twice) and acknowledged.
    keyed_units_sent: u64,
    keyed_units_acked: u64,
}

async fn client_loop(
    addr: SocketAddr,
    task: usize,
    cycle: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut i = 0usize;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let answered = match i % 7 {
            4 => {
                let r = native(
                    &client,
                    addr,
                    "/v1/licenses/RES/features/tokens/reservations",
                    json!({"units": RESERVED_UNITS, "timeout_ms": 3_600_000}),
                    None,
                )
                .await;
                if let Some((201, body)) = &r {
                    let id = body["id"].as_u64().expect("reservation id");
                    ledger.lock().expect("ledger").reservations_acked.insert(id);
                }
                r.is_some()
            }
            5 => {
                let next = {
                    let l = ledger.lock().expect("ledger");
                    l.reservations_acked
                        .iter()
                        .copied()
                        .find(|id| !l.commits_sent.contains(id))
                };
                let Some(id) = next else { continue };
                ledger.lock().expect("ledger").commits_sent.insert(id);
                let r = native(
                    &client,
                    addr,
                    &format!("/v1/reservations/{id}/commit"),
                    json!({"units": COMMITTED_UNITS}),
                    None,
                )
                .await;
                if let Some((200, _)) = r {
                    ledger.lock().expect("ledger").commits_acked.insert(id);
                }
                r.is_some()
            }
            6 => {
                // The same keyed request twice (a client's retry): one change.
                let key = format!("u-{cycle}-{task}-{i}");
                ledger.lock().expect("ledger").keyed_units_sent += 1;
                let mut acked = false;
                let mut answered = false;
                for _ in 0..2 {
                    let r = native(
                        &client,
                        addr,
                        "/v1/licenses/RES/features/tokens/usage",
                        json!({"units": 1}),
                        Some(&key),
                    )
                    .await;
                    answered = r.is_some();
                    acked |= matches!(r, Some((200, _)));
                    if !answered {
                        break;
                    }
                }
                if acked {
                    ledger.lock().expect("ledger").keyed_units_acked += 1;
                }
                answered
            }
            0 => {
                let hw = format!("a-{cycle}-{task}-{i}");
                ledger
                    .lock()
                    .expect("ledger")
                    .activations_sent
                    .insert(hw.clone());
                let r = ls(
                    &client,
                    addr,
                    Method::POST,
                    "activate_license",
                    json!({"product": "p", "license_key": "ACT", "hardware_id": hw}),
                )
                .await;
                if let Some((200, _)) = r {
                    ledger.lock().expect("ledger").activations_acked.insert(hw);
                }
                r.is_some()
            }
            1 => {
                ledger.lock().expect("ledger").units_sent += 1;
                let r = ls(
                    &client,
                    addr,
                    Method::POST,
                    "add_feature_consumption",
                    json!({"product": "p", "license_key": "METER", "hardware_id": "m", "feature": "units", "consumptions": 1}),
                )
                .await;
                if let Some((200, _)) = r {
                    ledger.lock().expect("ledger").units_acked += 1;
                }
                r.is_some()
            }
            2 => {
                // Many devices against SEATS seats: most are refused.
                let hw = format!("s-{}", (task * 7 + i) % 9);
                let (endpoint, body) = if i.is_multiple_of(3) {
                    (
                        "deactivate_license",
                        json!({"product": "p", "license_key": "SEATS", "hardware_id": hw}),
                    )
                } else {
                    (
                        "activate_license",
                        json!({"product": "p", "license_key": "SEATS", "hardware_id": hw}),
                    )
                };
                ls(&client, addr, Method::POST, endpoint, body)
                    .await
                    .is_some()
            }
            _ => {
                let hw = format!("p-{}", (task * 5 + i) % 16);
                if i.is_multiple_of(3) {
                    ls(&client, addr, Method::POST, "floating/feature_release",
                       json!({"product": "p", "license_key": "POOL", "hardware_id": hw, "feature": "seat"})).await.is_some()
                } else {
                    ls(&client, addr, Method::GET, "check_license_feature",
                       json!({"product": "p", "license_key": "POOL", "hardware_id": hw, "feature": "seat"})).await.is_some()
                }
            }
        };
        if !answered {
            // The server is gone (killed): this cycle is over for this client.
            return;
        }
    }
}

/// Asks the server to stop (SIGTERM: a graceful stop).
fn sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A graceful stop, waited for: it must end well.
fn stop(server: &mut Server) {
    sigterm(server);
    assert!(server.child.wait().expect("wait").success());
}

fn kill9(server: &mut Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Rebuilds the data directory in this process and checks it against the ledger.
fn verify(dir: &Path, ledger: &Ledger) {
    let engine = Engine::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (store, _) =
        Store::open(dir, &StoreOptions::default(), &engine, now).expect("recovery succeeds");
    let tenant = engine.api_key(API_KEY).expect("key").tenant_id;
    let product = engine.product_by_code(tenant, "p").expect("product");
    let lic = |k: &str| product.licenses_by_key.get(k).expect("license").clone();

    let act = lic("ACT");
    let devices = act.devices.read();
    let present: HashSet<&str> = devices.list.iter().map(|d| &*d.hardware_id).collect();
    assert_eq!(present.len(), devices.list.len(), "a device recorded twice");
    for hw in &ledger.activations_acked {
        assert!(
            present.contains(hw.as_str()),
            "acknowledged activation {hw} lost"
        );
    }
    for hw in &present {
        assert!(
            ledger.activations_sent.contains(*hw),
            "activation {hw} never sent"
        );
    }
    assert_eq!(act.activations.used(), devices.list.len() as u64);

    let meter = lic("METER");
    let units = meter.feature("units").expect("units").meter.used(now);
    assert!(
        units as u64 >= ledger.units_acked,
        "acknowledged consumption lost: {units} < {}",
        ledger.units_acked
    );
    assert!(
        units as u64 <= ledger.units_sent,
        "consumption applied twice: {units} > {} sent",
        ledger.units_sent
    );

    let seats = lic("SEATS");
    let active = seats
        .devices
        .read()
        .list
        .iter()
        .filter(|d| d.active)
        .count() as u64;
    assert!(seats.activations.used() <= SEATS, "seats over capacity");
    assert_eq!(seats.activations.used(), active);

    let pool = lic("POOL");
    let seat = pool.feature("seat").expect("seat");
    assert!(seat.floating.holders_raw().len() as u32 <= POOL_SEATS);

    verify_native(&engine, tenant, &lic("RES"), ledger, now);
    verify_ledger(dir, &engine, &lic("METER"), &lic("RES"), now);
    drop(store);
}

/// The ledger after recovery equals the acknowledged changes: its entries
/// add up to the meters' totals, one entry per change.
fn verify_ledger(
    dir: &Path,
    engine: &Engine,
    meter: &tally::engine::model::License,
    res: &tally::engine::model::License,
    now: i64,
) {
    let (entries, next) =
        tally::storage::ledger::read(dir, 0, usize::MAX, |_| true).expect("ledger");
    assert!(next.is_none());
    let sum = |license: u64, kinds: &[&str]| -> i64 {
        entries
            .iter()
            .filter(|e| {
                e["entry"]["license_id"] == license
                    && kinds.contains(&e["entry"]["kind"].as_str().unwrap_or(""))
            })
            .map(|e| e["entry"]["amount"].as_i64().unwrap_or(0))
            .sum()
    };
    let units = meter.feature("units").expect("units").meter.used(now);
    assert_eq!(
        sum(meter.id, &["units_consumed"]),
        units,
        "ledger and meter disagree"
    );
    let tokens = res.feature("tokens").expect("tokens");
    assert_eq!(
        sum(res.id, &["units_consumed", "units_committed"]),
        tokens.meter.used(now)
    );
    assert_eq!(
        sum(res.id, &["units_reserved", "units_voided", "units_expired"])
            - sum(res.id, &["units_committed"])
            - entries
                .iter()
                .filter(|e| e["entry"]["kind"] == "units_committed"
                    && e["entry"]["license_id"] == res.id)
                .map(|e| {
                    let r = engine
                        .reservation(
                            e["entry"]["tenant_id"].as_u64().unwrap_or(0),
                            e["entry"]["reservation_id"].as_u64().unwrap_or(0),
                        )
                        .expect("reservation");
                    r.units - e["entry"]["amount"].as_i64().unwrap_or(0)
                })
                .sum::<i64>(),
        tokens.meter.reserved(),
        "reserved units: reserved, less committed (and what the commits freed), voided and expired"
    );
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "entries in order, none twice"
    );
}

/// Every acknowledged reservation and commit is present, none twice, and
/// the meter holds exactly what the reservations and keyed usage say.
fn verify_native(
    engine: &Engine,
    tenant: u64,
    res: &tally::engine::model::License,
    ledger: &Ledger,
    now: i64,
) {
    use tally::engine::reserve::ReservationState;
    let tokens = res.feature("tokens").expect("tokens");
    let (mut committed, mut held) = (0i64, 0i64);
    for id in &ledger.reservations_acked {
        let r = engine
            .reservation(tenant, *id)
            .unwrap_or_else(|| panic!("acknowledged reservation {id} lost"));
        match r.state {
            ReservationState::Pending => held += r.units,
            ReservationState::Committed { units, .. } => committed += units,
            other => panic!("reservation {id} ended as {other:?}"),
        }
        if ledger.commits_acked.contains(id) {
            assert!(
                matches!(
                    r.state,
                    ReservationState::Committed {
                        units: COMMITTED_UNITS,
                        ..
                    }
                ),
                "acknowledged commit of {id} lost"
            );
        }
    }
    // Reservations made but not acknowledged (killed in flight) may exist:
    // they hold or use units too, so count the meter's side from the engine.
    let reserved = tokens.meter.reserved();
    assert!(
        reserved >= held,
        "reserved {reserved} < acknowledged pending {held}"
    );
    let used = tokens.meter.used(now);
    let keyed = used - committed;
    assert!(
        keyed >= 0,
        "committed units missing: used {used}, committed {committed}"
    );
    // Commits go only to acknowledged reservations, so what is used beyond
    // their commits is the keyed usage: each key at most once.
    assert!(
        keyed >= ledger.keyed_units_acked as i64,
        "acknowledged keyed usage lost: {keyed} < {}",
        ledger.keyed_units_acked
    );
    assert!(
        keyed <= ledger.keyed_units_sent as i64,
        "keyed usage applied twice: {keyed} > {} keys sent",
        ledger.keyed_units_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_crash_loop() {
    let cycles: usize = std::env::var("TALLY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        // Snapshots every second, so that kills also land during them.
        let mut server = start(&dir, &cat, 1);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..6)
            .map(|t| {
                tokio::spawn(client_loop(
                    server.addr,
                    t,
                    cycle,
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        kill9(&mut server);
        stop.store(true, Ordering::Release);
        for t in tasks {
            let _ = t.await;
        }
        if cycle % 5 == 4 {
            let l = ledger.lock().expect("ledger");
            verify(&dir, &l);
        }
        let _ = server.log;
    }
    let l = ledger.lock().expect("ledger");
    eprintln!(
        "{cycles} cycles: {} of {} activations and {} of {} consumptions acknowledged; \
         {} reservations, {} of {} commits, {} of {} keyed usages",
        l.activations_acked.len(),
        l.activations_sent.len(),
        l.units_acked,
        l.units_sent,
        l.reservations_acked.len(),
        l.commits_acked.len(),
        l.commits_sent.len(),
        l.keyed_units_acked,
        l.keyed_units_sent
    );
    assert!(
        l.units_acked > 0 && !l.activations_acked.is_empty(),
        "no load got through"
    );
    assert!(
        !l.reservations_acked.is_empty() && !l.commits_acked.is_empty() && l.keyed_units_acked > 0,
        "no native load got through"
    );
    verify(&dir, &l);
}

/// Adds 2 units to METER's `units` (LicenseSpring); the status.
async fn add_two_units(client: &HttpClient, addr: SocketAddr) -> Option<u16> {
    let body = json!({"product": "p", "license_key": "METER", "hardware_id": "m", "feature": "units", "consumptions": 2});
    ls(client, addr, Method::POST, "add_feature_consumption", body)
        .await
        .map(|r| r.0)
}

/// METER's `units` consumed so far, as LicenseSpring's check reports it.
async fn meter_total(client: &HttpClient, addr: SocketAddr) -> Option<Value> {
    let body =
        json!({"product": "p", "license_key": "METER", "hardware_id": "m", "feature": "units"});
    ls(client, addr, Method::GET, "check_license_feature", body)
        .await
        .map(|(_, v)| v["total_consumptions"].clone())
}

/// A graceful stop (SIGTERM) writes a final snapshot and leaves no log to replay.
#[test]
fn graceful_stop_snapshots_and_restart_replays_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = start(&dir, &cat, 0);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let addr = server.addr;
    for _ in 0..5 {
        assert_eq!(rt.block_on(add_two_units(&client, addr)), Some(200));
    }
    let mut server = server;
    sigterm(&server);
    let exit = server.child.wait().expect("wait");
    assert!(exit.success(), "{:?}", server.log.lock().expect("log"));
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["inspect", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("snapshot-00000000000000000005.snap: up to record 5"),
        "{text}"
    );
    assert!(
        !text.contains("wal-"),
        "log left after a graceful stop: {text}"
    );
    let server = start(&dir, &cat, 0);
    let log = server.log.lock().expect("log").join("\n");
    assert!(log.contains("0 log records replayed"), "{log}");
    assert_eq!(
        rt.block_on(meter_total(&client, server.addr)),
        Some(json!(10))
    );
    let mut server = server;
    kill9(&mut server);
}

/// Under `--fsync always` a runtime thread about to go idle writes and syncs
/// the pending group itself (the flusher only opens the first segment
/// here): `/metrics` counts the groups by writer, and every acknowledged
/// change survives a SIGKILL.
#[test]
fn idle_runtime_threads_lead_durable_commits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = start(&dir, &cat, 0);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let addr = server.addr;
    const CHANGES: u64 = 20;
    for _ in 0..CHANGES {
        assert_eq!(rt.block_on(add_two_units(&client, addr)), Some(200));
    }
    let metrics = rt.block_on(async {
        let resp = client
            .get(format!("http://{addr}/metrics").parse().expect("uri"))
            .await
            .expect("scrape");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).to_string()
    });
    let groups = |writer: &str| -> u64 {
        let name = format!("tally_log_group_commits_total{{writer=\"{writer}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    // One at a time: each change's group is led by the runtime thread that
    // goes idle after its commit, but for the first (a segment to open).
    assert!(groups("runtime") >= CHANGES - 2, "{metrics}");
    assert_eq!(groups("runtime") + groups("flusher"), CHANGES, "{metrics}");
    kill9(&mut server);
    let mut server = start(&dir, &cat, 0);
    assert_eq!(
        rt.block_on(meter_total(&client, server.addr)),
        Some(json!(2 * CHANGES))
    );
    kill9(&mut server);
}

/// A second server on the same data directory refuses to start and names the first.
#[test]
fn second_server_on_one_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let mut first = start(&dir, &cat, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-sign",
            "--data-dir",
        ])
        .arg(&dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("second server");
    assert!(!out.status.success());
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(
        err.contains("in use by another tally process")
            && err.contains(&first.child.id().to_string()),
        "{err}"
    );
    kill9(&mut first);
}

/// One request with a bearer token; (status, JSON body).
async fn bearer(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Everything the Qlik surface shows of a tenant, for before/after comparisons.
async fn qlik_state(client: &HttpClient, addr: SocketAddr) -> Value {
    let mut v = json!({});
    for (name, path) in [
        (
            "assignments",
            "/api/v1/licenses/assignments?limit=100&sort=subject",
        ),
        ("overview", "/api/v1/licenses/overview"),
        ("settings", "/api/v1/licenses/settings"),
        ("consumption", "/api/v1/licenses/consumption?limit=100"),
        (
            "packs",
            "/v2/accounts/me/licensepacks?v=20261125&api_key=crash-key",
        ),
        (
            "yext",
            "/v2/accounts/me/licensepacks/-/assignments?v=20261125&api_key=crash-key",
        ),
    ] {
        let (status, body) = bearer(client, addr, Method::GET, path, API_KEY, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        v[name] = body;
    }
    // The envelope's uuid differs per request.
    for name in ["packs", "yext"] {
        v[name]["meta"]["uuid"] = Value::Null;
    }
    v
}

/// Qlik assignments, moves, settings and sessions, Yext assignments and
/// scheduled removals, and Informatica license updates (with their version)
/// and limit use survive a SIGKILL (log replay) and a graceful stop
/// (snapshot), exactly.
#[test]
fn vendor_surface_changes_survive_sigkill_and_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut server = start(&dir, &cat, 0);
    let admin_token = std::fs::read_to_string(dir.join("admin_token")).expect("admin token");
    let addr = server.addr;
    let before = rt.block_on(async {
        let add: Vec<Value> = (0..7)
            .map(|i| json!({"type": "professional", "subject": format!("s{i}")}))
            .collect();
        let (st, v) = bearer(&client, addr, Method::POST, "/api/v1/licenses/assignments/actions/add", API_KEY, Some(json!({"add": add}))).await;
        assert_eq!(st, 207);
        let statuses: Vec<u64> = v["data"].as_array().unwrap().iter().map(|d| d["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, vec![201, 201, 201, 201, 201, 201, 403]);
        let (_, v) = bearer(&client, addr, Method::POST, "/api/v1/licenses/assignments/actions/update", API_KEY,
            Some(json!({"update": [{"type": "analyzer", "subject": "s0"}, {"subject": "t1", "sourceSubject": "s1"}]}))).await;
        assert_eq!(v["data"][0]["status"], 200);
        assert_eq!(v["data"][1]["status"], 201);
        let (_, v) = bearer(&client, addr, Method::POST, "/api/v1/licenses/assignments/actions/delete", API_KEY,
            Some(json!({"delete": [{"type": "professional", "subject": "s2"}]}))).await;
        assert_eq!(v["data"][0]["status"], 200);
        let (st, _) = bearer(&client, addr, Method::PUT, "/api/v1/licenses/settings", API_KEY,
            Some(json!({"autoAssignProfessional": true}))).await;
        assert_eq!(st, 200);
        let t = qlik_tenant(&client, addr, admin_token.trim()).await;
        for m in [7, 13] {
            let (st, _) = bearer(&client, addr, Method::POST, &format!("/admin/v1/tenants/{t}/qlik/sessions"),
                admin_token.trim(), Some(json!({"user_id": "u", "minutes": m}))).await;
            assert_eq!(st, 201);
        }
        let (st, v) = bearer(&client, addr, Method::POST, &format!("/admin/v1/tenants/{t}/qlik/access"),
            admin_token.trim(), Some(json!({"subject": "auto"}))).await;
        assert_eq!((st, v["access"]["via"].clone()), (200, json!("auto_assigned")));
        // Yext: three assigns (one twice), a removal, a scheduled removal.
        for e in ["e1", "e2", "e2", "e3"] {
            let (st, _) = bearer(&client, addr, Method::POST,
                &format!("/v2/accounts/acc-1/licensepacks/p/assignments/{e}?v=20261125&api_key={API_KEY}"), API_KEY, None).await;
            assert_eq!(st, 200);
        }
        let (st, _) = bearer(&client, addr, Method::DELETE,
            &format!("/v2/accounts/acc-1/licensepacks/p/assignments/e1?v=20261125&api_key={API_KEY}"), API_KEY, None).await;
        assert_eq!(st, 200);
        let (st, _) = bearer(&client, addr, Method::PUT,
            &format!("/v2/accounts/acc-1/licensepacks/p/assignments/e3?v=20261125&api_key={API_KEY}"), API_KEY,
            Some(json!({"expirationDate": "2999-01-01"}))).await;
        assert_eq!(st, 200);
        // Informatica: the parent's admin overwrites the child (version 2), then rows are drawn.
        let login = Request::builder().method(Method::POST).uri(format!("http://{addr}/saas/public/core/v3/login"))
            .body(Full::new(Bytes::from(json!({"username": "boss", "password": "pw"}).to_string()))).unwrap();
        let resp = client.request(login).await.expect("login");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let sid = serde_json::from_slice::<Value>(&body).unwrap()["userInfo"]["sessionId"].as_str().unwrap().to_string();
        let get = Request::builder().uri(format!("http://{addr}/saas/public/core/v3/license/org/org-child"))
            .header("INFA-SESSION-ID", &sid).body(Full::new(Bytes::new())).unwrap();
        let tag = client.request(get).await.expect("get").headers()["etag"].to_str().unwrap().to_string();
        let put = Request::builder().method(Method::PUT).uri(format!("http://{addr}/saas/public/core/v3/license/org/org-child"))
            .header("INFA-SESSION-ID", &sid).header("If-Match", tag)
            .body(Full::new(Bytes::from(json!({"customLimits": [{"limitDefinition": "rows", "value": 50}],
                "customLicenses": [{"licenseDef": "L", "licenseType": "FREE"}]}).to_string()))).unwrap();
        assert_eq!(client.request(put).await.expect("put").status(), 200);
        let child = infa_tenant(&client, addr, admin_token.trim()).await;
        for _ in 0..3 {
            let (st, _) = bearer(&client, addr, Method::POST, &format!("/admin/v1/tenants/{child}/informatica/consume"),
                admin_token.trim(), Some(json!({"limitDefinition": "rows", "amount": 7}))).await;
            assert_eq!(st, 200);
        }
        let mut v = qlik_state(&client, addr).await;
        let (_, org) = bearer(&client, addr, Method::GET, &format!("/admin/v1/tenants/{child}/informatica"), admin_token.trim(), None).await;
        v["informatica"] = org;
        v
    });
    assert!(before["informatica"]["version"]
        .as_u64()
        .is_some_and(|v| v > 1));
    assert_eq!(before["informatica"]["limits"][0]["used"], 21);
    assert_eq!(before["assignments"]["data"].as_array().unwrap().len(), 6);
    assert_eq!(before["overview"]["allotments"][2]["unitsUsed"], 30);
    assert_eq!(
        before["packs"]["response"]["licensePacks"][0]["assigned"],
        2
    );
    assert_eq!(
        before["yext"]["response"]["licenseAssignments"][0]["assignedEntities"][1]
            ["expirationDate"],
        "2999-01-01"
    );
    kill9(&mut server);

    // Replayed from the log.
    let mut server = start(&dir, &cat, 0);
    let after = rt.block_on(full_state(&client, server.addr, admin_token.trim()));
    assert_eq!(normalise(&after), normalise(&before));
    stop(&mut server);

    // Rebuilt from the snapshot alone.
    let mut server = start(&dir, &cat, 0);
    let log = server.log.lock().expect("log").join("\n");
    assert!(log.contains("0 log records replayed"), "{log}");
    let again = rt.block_on(full_state(&client, server.addr, admin_token.trim()));
    assert_eq!(normalise(&again), normalise(&before));
    kill9(&mut server);
}

/// The state without what depends on the request (link hosts).
fn normalise(v: &Value) -> Value {
    let mut v = v.clone();
    v["assignments"]["links"] = Value::Null;
    v["consumption"]["links"] = Value::Null;
    v
}

async fn qlik_tenant(client: &HttpClient, addr: SocketAddr, admin: &str) -> u64 {
    let (_, v) = bearer(
        client,
        addr,
        Method::GET,
        &format!("/admin/v1/api-keys/{API_KEY}"),
        admin,
        None,
    )
    .await;
    v["tenant_id"].as_u64().expect("tenant id")
}

/// The tenant of the Informatica sub-organisation.
async fn infa_tenant(client: &HttpClient, addr: SocketAddr, admin: &str) -> u64 {
    let (_, v) = bearer(
        client,
        addr,
        Method::GET,
        "/admin/v1/tenants?limit=1000",
        admin,
        None,
    )
    .await;
    v["items"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == "CrashChild")
        .and_then(|t| t["id"].as_u64())
        .expect("child tenant")
}

/// Everything the vendor surfaces show, plus the Informatica org's admin view.
async fn full_state(client: &HttpClient, addr: SocketAddr, admin: &str) -> Value {
    let mut v = qlik_state(client, addr).await;
    let t = infa_tenant(client, addr, admin).await;
    v["informatica"] = bearer(
        client,
        addr,
        Method::GET,
        &format!("/admin/v1/tenants/{t}/informatica"),
        admin,
        None,
    )
    .await
    .1;
    v
}

/// A temporary data directory and the crash catalog: (its guard, the data
/// directory, the catalog file).
fn data_and_catalog() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    (tmp, dir, cat)
}

/// The changes the ledger tests make: three LicenseSpring consumptions of 2
/// on METER, (an activation of `ledger-pc` on SEATS,) a keyed native usage
/// of 5 on RES sent twice, and a reservation of 4 committed for 3; returns
/// the reservation's id.
async fn ledger_changes(client: &HttpClient, addr: SocketAddr, activate: bool) -> u64 {
    for _ in 0..3 {
        let r = ls(client, addr, Method::POST, "add_feature_consumption",
            json!({"product": "p", "license_key": "METER", "hardware_id": "m", "feature": "units", "consumptions": 2})).await;
        assert_eq!(r.map(|r| r.0), Some(200));
    }
    if activate {
        let r = ls(
            client,
            addr,
            Method::POST,
            "activate_license",
            json!({"product": "p", "license_key": "SEATS", "hardware_id": "ledger-pc"}),
        )
        .await;
        assert_eq!(r.map(|r| r.0), Some(200));
    }
    for _ in 0..2 {
        let r = native(
            client,
            addr,
            "/v1/licenses/RES/features/tokens/usage",
            json!({"units": 5}),
            Some("ledger-key"),
        )
        .await;
        assert_eq!(r.map(|r| r.0), Some(200));
    }
    let (status, res) = native(
        client,
        addr,
        "/v1/licenses/RES/features/tokens/reservations",
        json!({"units": 4}),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(status, 201);
    let id = res["id"].as_u64().expect("id");
    let r = native(
        client,
        addr,
        &format!("/v1/reservations/{id}/commit"),
        json!({"units": 3}),
        None,
    )
    .await;
    assert_eq!(r.map(|r| r.0), Some(200));
    id
}

/// `tally inspect --ledger` (the real binary, on the files a killed server
/// left): every change to a counter since the snapshot, with its origin;
/// consumption entries add up to the meter, a keyed change retried counts
/// once, a reservation's entries follow it from reserve to commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_ledger_derives_every_change_with_its_origin() {
    let (_tmp, dir, cat) = data_and_catalog();
    let mut server = start(&dir, &cat, 3600);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let id = ledger_changes(&client, server.addr, true).await;
    kill9(&mut server);
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["inspect", "--ledger", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("tally inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let of = |kind: &str| {
        lines
            .iter()
            .filter(|l| l["entry"]["kind"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let consumed = of("units_consumed");
    assert_eq!(
        consumed.len(),
        4,
        "three LicenseSpring adds and one keyed add: {lines:?}"
    );
    let meter: Vec<i64> = consumed
        .iter()
        .filter(|l| l["origin"]["surface"] == "licensespring")
        .map(|l| l["entry"]["after"].as_i64().expect("after"))
        .collect();
    assert_eq!(meter, [2, 4, 6], "before/after follow the meter");
    let keyed = consumed
        .iter()
        .find(|l| l["origin"]["surface"] == "native")
        .expect("keyed add");
    assert_eq!(
        (
            keyed["entry"]["amount"].as_i64(),
            keyed["entry"]["before"].as_i64()
        ),
        (Some(5), Some(0))
    );
    let key_id = tally::engine::model::ApiKey::id_of(API_KEY);
    assert!(
        lines.iter().all(|l| l["origin"]["actor"] == *key_id),
        "{lines:?}"
    );
    let activated = of("device_activated");
    assert_eq!(activated[0]["entry"]["subject"], "ledger-pc");
    let reserved = of("units_reserved");
    let committed = of("units_committed");
    assert_eq!((reserved.len(), committed.len()), (1, 1));
    assert_eq!(reserved[0]["entry"]["reservation_id"], id);
    assert_eq!(
        (
            committed[0]["entry"]["amount"].as_i64(),
            committed[0]["entry"]["after"].as_i64()
        ),
        (Some(3), Some(8))
    );
}

/// GETs `path` with a bearer token; the JSON answer.
async fn get_json(client: &HttpClient, addr: SocketAddr, path: &str, token: &str) -> Value {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("answer");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

/// The ledger store through the real binary: every acknowledged change's
/// entries, read with filters and cursor pages; after a SIGKILL and the
/// loss of the ledger's files, the next start derives the same entries from
/// the log; after a graceful stop (which prunes the log) they are still
/// there; the admin API reads every tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_keeps_every_acknowledged_change_across_crashes_and_restarts() {
    let (_tmp, dir, cat) = data_and_catalog();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut server = start(&dir, &cat, 3600);
    let addr = server.addr;
    let id = ledger_changes(&client, addr, false).await;
    let all = get_json(&client, addr, "/v1/ledger", API_KEY).await;
    let entries = all["entries"].as_array().expect("entries").clone();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "units_consumed",
            "units_consumed",
            "units_consumed",
            "units_consumed",
            "units_reserved",
            "units_committed"
        ],
        "{all}"
    );
    assert_eq!(entries[3]["idempotency_key"], "ledger-key");
    assert_eq!(entries[4]["entry"]["reservation_id"], id);
    assert_eq!(
        entries[0]["origin"]["actor"],
        &*tally::engine::model::ApiKey::id_of(API_KEY)
    );
    assert!(all["next_after"].is_null());
    // Filters and pages.
    let page = get_json(
        &client,
        addr,
        "/v1/ledger?kind=units_consumed&limit=2",
        API_KEY,
    )
    .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(2));
    let next = page["next_after"].as_u64().expect("a cursor");
    let rest = get_json(
        &client,
        addr,
        &format!("/v1/ledger?kind=units_consumed&after={next}"),
        API_KEY,
    )
    .await;
    assert_eq!(rest["entries"].as_array().map(Vec::len), Some(2));
    let res_only = get_json(
        &client,
        addr,
        "/v1/ledger?license=RES&feature=tokens",
        API_KEY,
    )
    .await;
    assert_eq!(res_only["entries"].as_array().map(Vec::len), Some(3));
    // A crash, and the ledger's files lost: derived again from the log.
    kill9(&mut server);
    std::fs::remove_dir_all(dir.join("ledger")).expect("remove the ledger");
    let mut server = start(&dir, &cat, 3600);
    let again = get_json(&client, server.addr, "/v1/ledger", API_KEY).await;
    assert_eq!(
        again["entries"], all["entries"],
        "the same entries, derived from the log"
    );
    // A graceful stop prunes the log after its snapshot; the ledger stays.
    stop(&mut server);
    let mut server = start(&dir, &cat, 3600);
    let kept = get_json(&client, server.addr, "/v1/ledger", API_KEY).await;
    assert_eq!(kept["entries"], all["entries"]);
    let admin_token = std::fs::read_to_string(dir.join("admin_token")).expect("admin token");
    let admin = get_json(
        &client,
        server.addr,
        "/admin/v1/ledger?kind=units_committed",
        admin_token.trim(),
    )
    .await;
    assert_eq!(admin["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(admin["items"][0]["entry"]["amount"], 3);
    kill9(&mut server);
}

/// Reads a stream's text until `until` holds for it (or 10 s pass).
async fn read_stream_until(
    body: &mut hyper::body::Incoming,
    text: &mut String,
    until: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(text) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the stream answered in time")
            .expect("a frame")
            .expect("a good frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// `GET /v1/ledger/stream` (Server-Sent Events) through the real binary:
/// the entries so far, then each new change as it is acknowledged; a
/// reconnection with `Last-Event-ID` goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_streams_changes_as_they_are_made_and_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog().to_string()).expect("catalog");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let server = start(&dir, &cat, 3600);
    let addr = server.addr;
    let usage = |units: i64| {
        let client = client.clone();
        async move {
            let r = native(
                &client,
                addr,
                "/v1/licenses/RES/features/tokens/usage",
                json!({"units": units}),
                None,
            )
            .await;
            assert_eq!(r.map(|r| r.0), Some(200));
        }
    };
    usage(1).await;
    let open = |last: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = Request::get(format!(
                "http://{addr}/v1/ledger/stream?kind=units_consumed"
            ))
            .header("Authorization", format!("Bearer {API_KEY}"));
            if let Some(id) = last {
                req = req.header("Last-Event-ID", id);
            }
            let resp = client
                .request(req.body(Full::new(Bytes::new())).expect("request"))
                .await
                .expect("answer");
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(
                resp.headers().get("content-type").map(|v| v.as_bytes()),
                Some(&b"text/event-stream"[..])
            );
            resp.into_body()
        }
    };
    let mut body = open(None).await;
    let mut text = String::new();
    read_stream_until(&mut body, &mut text, |t| t.contains("\"amount\":1")).await;
    assert!(text.starts_with("retry: 2000\n\n"), "{text}");
    usage(7).await;
    read_stream_until(&mut body, &mut text, |t| t.contains("\"amount\":7")).await;
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{text}");
    assert!(text.contains("event: units_consumed\n"));
    drop(body);
    // Resumed after the first event: the second, then what comes next.
    let mut body = open(Some(ids[0].clone())).await;
    let mut again = String::new();
    usage(9).await;
    read_stream_until(&mut body, &mut again, |t| t.contains("\"amount\":9")).await;
    assert!(again.contains(&format!("id: {}\n", ids[1])), "{again}");
    assert!(!again.contains(&format!("id: {}\n", ids[0])), "{again}");
    assert!(!again.contains("\"amount\":1,"), "{again}");
    // A graceful stop ends the open stream instead of waiting on it.
    let mut server = server;
    let began = std::time::Instant::now();
    sigterm(&server);
    let mut rest = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(f))) => {
                rest.push_str(&String::from_utf8_lossy(&f.into_data().unwrap_or_default()))
            }
            Ok(_) => break,
            Err(_) => panic!("the stream did not end at the stop: {rest}"),
        }
    }
    assert!(server.child.wait().expect("wait").success());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the stop waited {:?}",
        began.elapsed()
    );
}

#[path = "common/receiver.rs"]
mod receiver;

const HOOK_KEY: &str = "hook-key";
const HOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const HOOK_LICENSES: usize = 8;
/// Each license's meter cap, and the thresholds (percent) reported.
const HOOK_CAP: i64 = 400;
const HOOK_THRESHOLDS: [i64; 8] = [10, 20, 30, 40, 50, 60, 70, 80];

fn hook_catalog(url: &str) -> Value {
    let licenses: Vec<Value> = (0..HOOK_LICENSES)
        .map(|i| {
            json!({"product": "p", "license_key": format!("H{i}"), "max_activations": 1,
                   "features": [{"code": "units", "feature_type": "consumption",
                                 "max_consumption": HOOK_CAP}]})
        })
        .collect();
    json!({"tenants": [{
        "name": "Hooks",
        "api_keys": [{"api_key": HOOK_KEY, "shared_key": "hook-shared", "role": "admin"}],
        "products": [{"short_code": "p", "name": "P", "authorization_method": "license-key"}],
        "licenses": licenses,
        "webhooks": [{"url": url, "events": ["meter.threshold"], "thresholds": HOOK_THRESHOLDS,
                      "secret": HOOK_SECRET}]
    }]})
}

/// A meter's use as the native API reads it.
async fn hook_used(client: &HttpClient, addr: SocketAddr, i: usize) -> i64 {
    let v = get_json(client, addr, &format!("/v1/licenses/H{i}"), HOOK_KEY).await;
    let features = v["features"].as_array().cloned().unwrap_or_default();
    features
        .iter()
        .find(|f| f["code"] == "units")
        .and_then(|f| f["usage"]["used"].as_i64())
        .unwrap_or_else(|| panic!("no use of H{i}: {v}"))
}

/// Webhooks across crashes: clients consume on several meters while the
/// server is killed (SIGKILL) at random moments, with the receiver up. At
/// the end, every threshold that the final state crossed has been
/// delivered (at least once: re-sends of what was in flight are allowed and
/// carry the same webhook-id), and nothing else: no event without its change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_delivered_across_crashes_and_never_invented() {
    let cycles: usize = std::env::var("TALLY_WEBHOOK_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let rx = receiver::Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, hook_catalog(&rx.url).to_string()).expect("catalog");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let acked = Arc::new(Mutex::new(vec![0i64; HOOK_LICENSES]));
    let mut rng = rand::thread_rng();
    for _ in 0..cycles {
        let mut server = start(&dir, &cat, 1);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..3)
            .map(|t| {
                let (client, acked, stop, addr) =
                    (client.clone(), acked.clone(), stop.clone(), server.addr);
                tokio::spawn(async move {
                    let mut n = t;
                    while !stop.load(Ordering::Acquire) {
                        n += 1;
                        let i = (n * 7 + t) % HOOK_LICENSES;
                        let req = Request::post(format!(
                            "http://{addr}/v1/licenses/H{i}/features/units/usage"
                        ))
                        .header("Authorization", format!("Bearer {HOOK_KEY}"))
                        .body(Full::new(Bytes::from(r#"{"units": 1}"#)))
                        .expect("request");
                        match client.request(req).await {
                            Ok(r) if r.status() == 200 => acked.lock().expect("acked")[i] += 1,
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
        kill9(&mut server);
        stop.store(true, Ordering::Release);
        for t in tasks {
            let _ = t.await;
        }
    }
    let mut server = start(&dir, &cat, 3600);
    let mut used = Vec::new();
    let mut want = HashSet::new();
    for i in 0..HOOK_LICENSES {
        let u = hook_used(&client, server.addr, i).await;
        let acked = acked.lock().expect("acked")[i];
        assert!(u >= acked, "H{i}: {u} used, {acked} acknowledged");
        for t in HOOK_THRESHOLDS {
            if u * 100 >= HOOK_CAP * t {
                want.insert((format!("H{i}"), t));
            }
        }
        used.push(u);
    }
    assert!(!want.is_empty(), "no threshold was crossed: {used:?}");
    // Wait until every wanted event came (deliveries resume after a start).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got: HashSet<(String, u64)> = rx
            .received()
            .iter()
            .filter(|g| g.answered == 200)
            .map(|g| {
                let v = g.json();
                (
                    v["data"]["license_key"].as_str().unwrap_or("").to_string(),
                    v["data"]["threshold"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if got.len() >= want.len() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let want: HashSet<(String, u64)> = want.into_iter().map(|(l, t)| (l, t as u64)).collect();
    assert_eq!(
        got, want,
        "delivered events against the final meters {used:?}"
    );
    // Duplicates only as re-sends: one event per webhook-id.
    let mut by_id = std::collections::HashMap::new();
    for g in rx.received() {
        assert!(g.verifies(HOOK_SECRET), "signature of {:?}", g.json());
        let prev = by_id.insert(g.header("webhook-id"), g.body.clone());
        assert!(prev.is_none_or(|p| p == g.body), "one id, one body");
    }
    assert_eq!(by_id.len(), got.len(), "one webhook-id per event");
    eprintln!(
        "{cycles} cycles: meters {used:?}, {} events, {} requests",
        got.len(),
        rx.received().len()
    );
    kill9(&mut server);
}
