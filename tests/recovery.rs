//! Recovery from damaged and interrupted data directories (real files, the
//! store opened as `tally serve` opens it), and storage faults injected under
//! the log.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::json;
use tally::engine::image::Image;
use tally::engine::model::Id;
use tally::engine::{Command, Engine, Outcome};
use tally::storage::disk::{Disk, DiskFile, RealDisk};
use tally::storage::record::{scan_segment, BadRecord, SEGMENT_HEADER_BYTES};
use tally::storage::recovery::RecoveryError;
use tally::storage::store::{Opened, Store, StoreError, StoreOptions};
use tally::storage::wal::{FsyncMode, LogError as CommitError};

const NOW: i64 = 1_795_000_000_000;
const CATALOG: &str = r#"{"tenants":[{"name":"R","api_keys":[{"api_key":"rk","shared_key":"rs","role":"admin"}],
"products":[{"short_code":"p","name":"P","authorization_method":"license-key"}],
"licenses":[{"product":"p","license_key":"METER","features":[{"code":"units","feature_type":"consumption","allow_unlimited_consumptions":true}]},
{"product":"p","license_key":"ACT","max_activations":3}]}]}"#;

fn options(truncate: bool) -> StoreOptions {
    StoreOptions {
        fsync: FsyncMode::Always,
        snapshot_interval: std::time::Duration::ZERO,
        truncate_corrupt_log: truncate,
        ..Default::default()
    }
}

fn open_with(dir: &Path, opts: &StoreOptions) -> Result<(Engine, Store, Opened), StoreError> {
    let engine = Engine::new();
    let (store, opened) = Store::open(dir, opts, &engine, NOW)?;
    Ok((engine, store, opened))
}

fn commit(engine: &Engine, store: &Store, cmd: &Command<'_>) -> Result<Outcome, CommitError> {
    let c = store.log.commit(cmd, || engine.apply(cmd))?;
    if let Some(lsn) = c.lsn {
        store.log.wait_blocking(lsn)?;
    }
    Ok(c.outcome)
}

/// (license id, feature id) of METER's `units`.
fn meter(engine: &Engine) -> (Id, Id) {
    let tenant = engine.api_key("rk").expect("key").tenant_id;
    let p = engine.product_by_code(tenant, "p").expect("product");
    let l = p.licenses_by_key.get("METER").expect("METER").clone();
    let f = l.feature("units").expect("units");
    (l.id, f.id)
}

fn units(engine: &Engine) -> i64 {
    let tenant = engine.api_key("rk").expect("key").tenant_id;
    let p = engine.product_by_code(tenant, "p").expect("product");
    let l = p.licenses_by_key.get("METER").expect("METER").clone();
    l.feature("units").expect("units").meter.used(NOW)
}

fn add(amount: i64, (license_id, feature_id): (Id, Id)) -> Command<'static> {
    Command::AddConsumption {
        license_id,
        feature_id: Some(feature_id),
        amount,
        now: NOW,
    }
}

/// A data directory as `tally serve --catalog` leaves it, plus `amounts`
/// consumption records (no final snapshot: they stay in the log).
fn prepared(dir: &Path, amounts: &[i64]) {
    let (engine, store, opened) = open_with(dir, &options(false)).expect("open");
    assert!(opened.fresh);
    tally::catalog::load_slice(&engine, CATALOG.as_bytes(), NOW).expect("catalog");
    store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    let m = meter(&engine);
    for a in amounts {
        commit(&engine, &store, &add(*a, m)).expect("commit");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

const AMOUNTS: [i64; 6] = [1, 2, 4, 8, 16, 32];

fn sum(n: usize) -> i64 {
    AMOUNTS[..n].iter().sum()
}

/// Cutting the log at every byte of its last three records keeps exactly
/// the records before the cut, and says so.
#[test]
fn torn_tail_keeps_exactly_the_valid_prefix() {
    let base = tempfile::tempdir().expect("tempdir");
    let src = base.path().join("src");
    prepared(&src, &AMOUNTS);
    let seg = segments(&src).pop().expect("segment");
    let bytes = std::fs::read(&seg).expect("read");
    let scan = scan_segment(&bytes).expect("scan");
    assert_eq!(scan.records.len(), 6);
    let starts: Vec<usize> = std::iter::once(24)
        .chain(scan.records.iter().map(|r| r.end))
        .collect();
    for cut in starts[3]..bytes.len() {
        let dir = base.path().join(format!("cut-{cut}"));
        copy_dir(&src, &dir);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(seg.file_name().expect("name")))
            .expect("open");
        f.set_len(cut as u64).expect("truncate");
        drop(f);
        let whole = starts.iter().filter(|s| **s <= cut).count() - 1;
        let (engine, store, opened) = open_with(&dir, &options(false)).expect("recovers");
        assert_eq!(opened.rebuilt.last_lsn, whole as u64, "cut at {cut}");
        assert_eq!(units(&engine), sum(whole), "cut at {cut}");
        assert_eq!(opened.rebuilt.cut.is_empty(), starts.contains(&cut));
        // The log goes on after the kept prefix.
        let next = commit(&engine, &store, &add(100, meter(&engine))).expect("commit");
        assert!(matches!(next, Outcome::Consumed { total, .. } if total == sum(whole) + 100));
        drop(store);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// The log writes zeros ahead of its records: a crash image (the directory
/// copied while the log is open) ends its last segment in zeros, which a
/// start reads as the end of the records, not as damage, and cuts off. A
/// closed segment ends at its last record; zeros at the end of one that is
/// not the last are refused as damage.
#[test]
fn zeros_written_ahead_end_the_records_and_are_cut() {
    let base = tempfile::tempdir().expect("tempdir");
    let live = base.path().join("live");
    let (engine, store, _) = open_with(&live, &options(false)).expect("open");
    tally::catalog::load_slice(&engine, CATALOG.as_bytes(), NOW).expect("catalog");
    store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    let m = meter(&engine);
    for a in AMOUNTS {
        commit(&engine, &store, &add(a, m)).expect("commit");
    }
    let crash = base.path().join("crash");
    copy_dir(&live, &crash);
    drop(store);
    // Closed: the segment ends at its last record.
    let closed = segments(&live).pop().expect("segment");
    let bytes = std::fs::read(&closed).expect("read");
    let scan = scan_segment(&bytes).expect("scan");
    assert_eq!(scan.records.len(), 6);
    assert!(scan.bad.is_none());
    assert_eq!(scan.records[5].end, bytes.len());
    // The crash image: the same records, then zeros written ahead.
    let seg = segments(&crash).pop().expect("segment");
    let bytes = std::fs::read(&seg).expect("read");
    let scan = scan_segment(&bytes).expect("scan");
    let end = scan.records.last().expect("records").end;
    assert_eq!(scan.records.len(), 6);
    assert_eq!(
        scan.bad.map(|(at, why, _)| (at, why)),
        Some((end, BadRecord::Unwritten))
    );
    assert_eq!(
        bytes.len() as u64,
        (SEGMENT_HEADER_BYTES as u64) + tally::storage::wal::PREALLOCATE_BYTES,
        "the first zeros written ahead"
    );
    let (engine, store, opened) = open_with(&crash, &options(false)).expect("recovers");
    assert_eq!(opened.rebuilt.last_lsn, 6);
    assert!(opened.rebuilt.cut.is_empty(), "{:?}", opened.rebuilt.cut);
    assert_eq!(units(&engine), sum(6));
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), end as u64);
    commit(&engine, &store, &add(100, meter(&engine))).expect("commit");
    drop(store);
    // Zeros after the records of a segment that is not the last: damage.
    let mut damaged = std::fs::read(&seg).expect("read");
    damaged.extend_from_slice(&[0; 4096]);
    std::fs::write(&seg, &damaged).expect("write");
    match open_with(&crash, &options(false)) {
        Err(StoreError::Recovery(e)) => assert!(e.to_string().contains("damaged at offset"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("zeros before the last segment were taken for its end"),
    }
}

/// Past the first zeros written ahead the log writes more, and a crash
/// image of a segment grown so keeps every record.
#[test]
fn zeros_are_written_ahead_again_as_the_segment_grows() {
    let base = tempfile::tempdir().expect("tempdir");
    let live = base.path().join("live");
    let opts = StoreOptions {
        fsync: FsyncMode::Never,
        ..options(false)
    };
    let (engine, store, _) = open_with(&live, &opts).expect("open");
    tally::catalog::load_slice(&engine, CATALOG.as_bytes(), NOW).expect("catalog");
    store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    let m = meter(&engine);
    let ahead = tally::storage::wal::PREALLOCATE_BYTES;
    let seg = || segments(&live).pop().expect("segment");
    let mut n = 0i64;
    loop {
        for _ in 0..1000 {
            commit(&engine, &store, &add(1, m)).expect("commit");
        }
        n += 1000;
        if std::fs::metadata(seg()).expect("meta").len() > SEGMENT_HEADER_BYTES as u64 + ahead {
            break;
        }
    }
    let crash = base.path().join("crash");
    copy_dir(&live, &crash);
    let (engine, _store, opened) = open_with(&crash, &opts).expect("recovers");
    assert!(opened.rebuilt.cut.is_empty(), "{:?}", opened.rebuilt.cut);
    assert_eq!(opened.rebuilt.last_lsn, n as u64);
    assert_eq!(units(&engine), n);
}

/// A flipped bit in the last record is a torn tail (dropped); in an earlier
/// one it is corruption: refused with the file and offset, and dropped with
/// everything after it only when asked.
#[test]
fn flipped_bits_are_caught_and_corruption_refused_unless_asked() {
    let base = tempfile::tempdir().expect("tempdir");
    let src = base.path().join("src");
    prepared(&src, &AMOUNTS);
    let seg = segments(&src).pop().expect("segment");
    let name = seg.file_name().expect("name").to_owned();
    let bytes = std::fs::read(&seg).expect("read");
    let scan = scan_segment(&bytes).expect("scan");
    let starts: Vec<usize> = std::iter::once(24)
        .chain(scan.records.iter().map(|r| r.end))
        .collect();
    for at in starts[3]..bytes.len() {
        let record = starts.iter().filter(|s| **s <= at).count(); // 1-based
        let dir = base.path().join(format!("flip-{at}"));
        copy_dir(&src, &dir);
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        std::fs::write(dir.join(&name), &damaged).expect("write");
        match open_with(&dir, &options(false)) {
            Ok((engine, _store, opened)) => {
                assert_eq!(record, 6, "flip at {at} (record {record}) was not refused");
                assert_eq!(opened.rebuilt.last_lsn, 5);
                assert_eq!(units(&engine), sum(5));
            }
            Err(StoreError::Recovery(RecoveryError::Corrupt { path, offset, .. })) => {
                assert!(record < 6, "flip at {at} in the last record refused");
                assert_eq!(path.file_name(), Some(name.as_os_str()));
                assert_eq!(offset as usize, starts[record - 1]);
                let (engine, _store, opened) =
                    open_with(&dir, &options(true)).expect("truncating start");
                assert_eq!(opened.rebuilt.last_lsn, record as u64 - 1);
                assert_eq!(units(&engine), sum(record - 1));
            }
            Err(e) => panic!("flip at {at}: {e}"),
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// A kill between writing a snapshot's temporary file and its rename leaves
/// the previous snapshot in charge: the temporary file is ignored and removed.
#[test]
fn unfinished_snapshot_leaves_the_previous_one_loadable() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    prepared(&dir, &AMOUNTS);
    // What a kill leaves: a whole temporary file (not renamed) and a cut one.
    let snap = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .expect("snapshot");
    let whole = std::fs::read(&snap).expect("read");
    std::fs::write(dir.join("snapshot-00000000000000000006.tmp"), &whole).expect("tmp");
    std::fs::write(
        dir.join("snapshot-00000000000000000009.tmp"),
        &whole[..whole.len() / 2],
    )
    .expect("tmp");
    let (engine, _store, opened) = open_with(&dir, &options(false)).expect("recovers");
    assert_eq!(opened.rebuilt.snapshot.as_ref().map(|s| s.lsn), Some(0));
    assert_eq!(opened.rebuilt.last_lsn, 6);
    assert_eq!(units(&engine), sum(6));
    assert_eq!(opened.rebuilt.removed.len(), 2);
    assert!(!std::fs::read_dir(&dir).expect("read_dir").any(|e| e
        .expect("entry")
        .path()
        .extension()
        .is_some_and(|x| x == "tmp")));
}

/// A periodic snapshot is built from the files (a shadow engine), cuts the
/// log, and rebuilds exactly the live state.
#[test]
fn shadow_snapshot_matches_live_state_and_cuts_the_log() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    let (engine, store, _) = open_with(&dir, &options(false)).expect("open");
    tally::catalog::load_slice(&engine, CATALOG.as_bytes(), NOW).expect("catalog");
    store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    let m = meter(&engine);
    let tenant = engine.api_key("rk").expect("key").tenant_id;
    let act = engine
        .product_by_code(tenant, "p")
        .expect("p")
        .licenses_by_key
        .get("ACT")
        .expect("ACT")
        .id;
    for i in 0..50 {
        commit(&engine, &store, &add(i, m)).expect("add");
        if i % 10 == 0 {
            let cmd = Command::Activate {
                license_id: act,
                hardware_id: Cow::Owned(format!("hw-{i}")),
                info: Default::default(),
                device_id: engine.next_id(),
                now: NOW + i,
            };
            let _ = commit(&engine, &store, &cmd);
        }
    }
    let info = store
        .snapshot_shadow(NOW)
        .expect("shadow")
        .expect("written");
    assert_eq!(info.lsn, store.log.last_lsn());
    // The log was cut: segments before the snapshot are gone.
    commit(&engine, &store, &add(7, m)).expect("after");
    let live = images(&engine);
    drop(store);
    let (back, _s, opened) = open_with(&dir, &options(false)).expect("reopen");
    assert_eq!(opened.rebuilt.snapshot.map(|s| s.lsn), Some(info.lsn));
    assert_eq!(opened.rebuilt.replayed, 1);
    assert_eq!(images(&back), live);
    // Ids handed out for refused commands are not stored; every stored id
    // lies below the recovered sequence.
    assert!(back.seq() <= engine.seq());
    let next = back.next_id();
    assert!(back.license(next).is_none() && next > act);
}

fn images(e: &Engine) -> Vec<Image> {
    e.images()
}

/// Two stores (two servers) on one directory: the second is refused.
#[test]
fn data_directory_is_locked() {
    let base = tempfile::tempdir().expect("tempdir");
    let (_e, _store, _) = open_with(base.path(), &options(false)).expect("first");
    match open_with(base.path(), &options(false)) {
        Err(StoreError::Locked(_, holder)) => {
            assert!(holder.contains(&std::process::id().to_string()))
        }
        other => panic!("second open: {:?}", other.map(|_| ())),
    }
}

/// A disk whose syncs fail once `fail` is set.
struct FaultyDisk {
    fail: Arc<AtomicBool>,
    writes_fail: bool,
}

struct FaultyFile {
    inner: Box<dyn DiskFile>,
    fail: Arc<AtomicBool>,
    writes_fail: bool,
}

impl DiskFile for FaultyFile {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // Under `--fsync never` nothing syncs: one write fails instead
        // (once: the next would succeed, as after a transient error).
        if self.writes_fail && self.fail.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected write failure"));
        }
        self.inner.write_all(bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.fail.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn zero_fill(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.zero_fill(offset, len)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self.fail.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.truncate(len)
    }
}

impl Disk for FaultyDisk {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(FaultyFile {
            inner: RealDisk.create(path)?,
            fail: self.fail.clone(),
            writes_fail: self.writes_fail,
        }))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

fn faulty_options(fail: &Arc<AtomicBool>) -> StoreOptions {
    StoreOptions {
        disk: Arc::new(FaultyDisk {
            fail: fail.clone(),
            writes_fail: false,
        }),
        ..options(false)
    }
}

/// Under `--fsync never` the requests' own threads write (leaders, see
/// `wal::Log::wait`): 16 tasks commit and wait concurrently, one write
/// fails under them (the next would succeed), and every change
/// acknowledged is found after a restart: no writer writes, and
/// acknowledges, records behind the failed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_under_leaders_acknowledges_nothing_after_it() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    prepared(&dir, &[]);
    let fail = Arc::new(AtomicBool::new(false));
    let opts = StoreOptions {
        fsync: FsyncMode::Never,
        disk: Arc::new(FaultyDisk {
            fail: fail.clone(),
            writes_fail: true,
        }),
        ..options(false)
    };
    let (engine, store, _) = open_with(&dir, &opts).expect("open");
    let (engine, store) = (Arc::new(engine), Arc::new(store));
    let m = meter(&engine);
    let acked = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (engine, store, acked) = (engine.clone(), store.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let cmd = add(1, m);
                let Ok(c) = store.log.commit(&cmd, || engine.apply(&cmd)) else {
                    return;
                };
                let Some(lsn) = c.lsn else { return };
                if store.log.wait(lsn).await.is_err() {
                    return;
                }
                acked.fetch_add(1, Ordering::AcqRel);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    fail.store(true, Ordering::Release);
    for t in tasks {
        t.await.expect("task");
    }
    assert!(store.log.is_latched());
    let acked = acked.load(Ordering::Acquire);
    assert!(acked > 0);
    drop(store);
    let (back, _s, _) = open_with(&dir, &options(false)).expect("reopen");
    let after = units(&back);
    // Everything acknowledged is there; what was written in the failed
    // round before its failing write may be too, never more than applied.
    assert!(after >= acked, "{after} recovered, {acked} acknowledged");
    assert!(after <= units(&engine), "{after} recovered");
}

/// A failed fsync latches the log: the change waiting on it is not
/// acknowledged, later changes are refused before they touch the engine,
/// reads go on, and a restart recovers every acknowledged change.
#[test]
fn failing_fsync_latches_and_refuses_changes() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    prepared(&dir, &[]);
    let fail = Arc::new(AtomicBool::new(false));
    let (engine, store, _) = open_with(&dir, &faulty_options(&fail)).expect("open");
    let m = meter(&engine);
    commit(&engine, &store, &add(5, m)).expect("acknowledged");
    fail.store(true, Ordering::Release);
    assert_eq!(
        commit(&engine, &store, &add(7, m)).err(),
        Some(CommitError::Unavailable)
    );
    assert!(store.log.is_latched());
    // Refused before the engine: the total does not move.
    let before = units(&engine);
    let mut applied = false;
    let r = store.log.commit(&add(11, m), || {
        applied = true;
        engine.apply(&add(11, m))
    });
    assert!(matches!(r, Err(CommitError::Unavailable)));
    assert!(!applied);
    assert_eq!(units(&engine), before);
    drop(store);
    let (back, _s, _) = open_with(&dir, &options(false)).expect("reopen");
    let after = units(&back);
    // The acknowledged 5 is there; the unacknowledged 7 may or may not be.
    assert!(after == 5 || after == 12, "{after}");
}

/// Over HTTP: after a failed fsync every surface answers changes with 503 in
/// its own error shape, and reads still answer.
#[tokio::test]
async fn failing_fsync_gives_503_in_each_surface_shape() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    let fail = Arc::new(AtomicBool::new(false));
    let opts = faulty_options(&fail);
    let engine = Engine::new();
    let clock_now = common::at("2026-11-25T12:00:00Z");
    let (store, _) = Store::open(&dir, &opts, &engine, clock_now).expect("open");
    let store = Arc::new(store);
    let s = common::TestServer::start_with(move |o| {
        o.engine = Some(engine);
        o.store = Some(store);
    })
    .await;
    let consume = json!({"product": "studio", "license_key": "DEMO-STUDIO-0001",
        "hardware_id": "demo-laptop", "feature": "ai-credits", "consumptions": 1});
    let ok = s.ls_post("add_feature_consumption", consume.clone()).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.json());
    fail.store(true, Ordering::Release);
    let r = s.ls_post("add_feature_consumption", consume.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "service_unavailable");
    assert_eq!(r.json()["status"], 503);
    let r = s.ls_post("add_feature_consumption", consume).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = s
        .admin(
            Method::POST,
            "/tenants",
            Some(json!({"name": "Late tenant"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "unavailable");
    // The native API: a problem with code `unavailable` and Retry-After;
    // its reads still answer.
    let usage = "/v1/licenses/DEMO-STUDIO-0001/features/ai-credits/usage";
    let r = common::native::n(&s, Method::POST, usage, Some(json!({"units": 1}))).await;
    common::native::problem(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.headers.get("retry-after").is_some());
    let r = common::native::n(&s, Method::GET, "/v1/licenses/DEMO-STUDIO-0001", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .ls_get(
            "check_license_feature",
            &[
                ("product", "studio"),
                ("license_key", "DEMO-STUDIO-0001"),
                ("hardware_id", "demo-laptop"),
                ("feature", "render"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// `tally inspect` lists snapshots and segments (and damage), and prints
/// records as JSON lines.
#[test]
fn inspect_shows_what_the_directory_holds() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    prepared(&dir, &AMOUNTS);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("inspect")
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .output()
            .expect("inspect");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let summary = run(&[]);
    assert!(
        summary.contains("snapshot-00000000000000000000.snap: up to record 0, 2 licenses"),
        "{summary}"
    );
    assert!(
        summary.contains("wal-00000000000000000001.log: records 1 to 6 (6 records"),
        "{summary}"
    );
    let records = run(&["--records", "--from", "2", "--limit", "3"]);
    let lines: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["lsn"], 2);
    assert_eq!(lines[0]["command"]["op"], "add_consumption");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["command"]["amount"].as_i64())
            .collect::<Vec<_>>(),
        [Some(2), Some(4), Some(8)]
    );
    // A torn tail shows as such.
    let seg = segments(&dir).pop().expect("segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let summary = run(&[]);
    assert!(summary.contains("records 1 to 5 (5 records"), "{summary}");
    assert!(summary.contains("torn tail at offset"), "{summary}");
}

/// Every change made through a surface records its origin in its log
/// record: the surface, the request's id (the client's `X-Request-Id`, else
/// one made up, echoed on the answer either way) and the actor (an API
/// key's id, never the key; `admin`); `tally inspect --records` shows it.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn changes_record_their_origin_and_answers_echo_the_request_id() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    let s = common::TestServer::start_stored(&dir).await;
    // LicenseSpring, with the client's request id.
    let mut req = s.ls_request(
        Method::POST,
        "activate_license",
        &[],
        Some(&json!({"product": "studio", "license_key": "DEMO-STUDIO-0001", "hardware_id": "origin-pc"})),
        (common::API_KEY, common::SHARED_KEY),
    );
    req.headers_mut()
        .insert("x-request-id", "req-ls-1".parse().expect("value"));
    let r = s.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        r.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-ls-1"[..])
    );
    // The native API, without one: a made-up id is echoed and recorded.
    let r = common::native::n(
        &s,
        Method::POST,
        "/v1/licenses/DEMO-STUDIO-0001/features/ai-credits/usage",
        Some(json!({"units": 2})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let made_up = r
        .headers
        .get("x-request-id")
        .expect("an id")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(made_up.len(), 16);
    // The admin API; and a request id that is not one (too long) is replaced.
    let req = hyper::Request::post(s.url("/admin/v1/tenants"))
        .header("Authorization", format!("Bearer {}", common::ADMIN_TOKEN))
        .header("x-request-id", "x".repeat(129))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"name": "Origin Ltd"}).to_string(),
        )))
        .expect("request");
    let r = s.send(req).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let admin_id = r
        .headers
        .get("x-request-id")
        .expect("an id")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(admin_id.len(), 16);
    // Every surface echoes it, refusals included.
    for path in [
        "/api/v4/check_license",
        "/api/v1/licenses/overview",
        "/v2/accounts/me/license-packs",
        "/saas/public/core/v3/license/org/x",
        "/v1/check",
        "/healthz",
    ] {
        let req = hyper::Request::get(s.url(path))
            .header("x-request-id", "echo-me")
            .body(Default::default())
            .expect("request");
        let r = s.send(req).await;
        assert_eq!(
            r.headers.get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"echo-me"[..]),
            "{path}"
        );
    }
    let mut out = Vec::new();
    tally::storage::inspect::records(&dir, 0, u64::MAX, &mut out).expect("records");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["origin"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no record of request {id}: {text}"))
            .clone()
    };
    let ls = by_id("req-ls-1");
    assert_eq!(ls["origin"]["surface"], "licensespring");
    assert_eq!(
        ls["origin"]["actor"],
        &*tally::engine::model::ApiKey::id_of(common::API_KEY)
    );
    assert_eq!(ls["command"]["op"], "activate");
    let native = by_id(&made_up);
    assert_eq!(
        (
            native["origin"]["surface"].as_str(),
            native["command"]["op"].as_str()
        ),
        (Some("native"), Some("add_consumption"))
    );
    let admin = by_id(&admin_id);
    assert_eq!(
        (
            admin["origin"]["actor"].as_str(),
            admin["command"]["op"].as_str()
        ),
        (Some("admin"), Some("put_tenant"))
    );
    // No credential is written to the log.
    for secret in [common::API_KEY, common::SHARED_KEY, common::ADMIN_TOKEN] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}
