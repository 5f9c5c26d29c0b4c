//! Writes a data directory in today's stored format for `tests/golden.rs`:
//! a snapshot of the demo catalog (every entity and vendor state), then a log
//! that holds every kind of command. Run once per stored-format version; the
//! files it wrote are kept under `tests/data/` and never rewritten (the
//! stored format is forever: see ARCHITECTURE.md).
//!
//!     cargo run --example golden -- tests/data/golden-2026-11-30
//!
//! With `--native` it goes on with the native API's commands (reservations
//! of units and seats, commits, voids, idempotency records, atomic batches,
//! the pending sweep, a seat with a ttl): some before a second snapshot, so
//! that the snapshot holds reservations and idempotency records, the rest
//! in the log after it.
//!
//!     cargo run --example golden -- tests/data/golden-2026-11-30-native --native
//!
//! With `--webhooks` (instead of the general log) it writes webhook
//! subscriptions, the events that changes made, attempts, a resend, a
//! rotation and a 410: some before a second snapshot, the rest after it.
//!
//!     cargo run --example golden -- tests/data/golden-2026-11-30-webhooks --webhooks

use std::path::PathBuf;

use tally::engine::{Command, Engine};
use tally::storage::store::{Store, StoreOptions};
use tally::storage::wal::FsyncMode;

/// The instant every command of the golden log carries (2026-11-30T12:00:00Z).
const NOW: i64 = 1_796_040_000_000;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: golden DIR [--native]"),
    );
    let mode = std::env::args().nth(2);
    let native = mode.as_deref() == Some("--native");
    let webhooks = mode.as_deref() == Some("--webhooks");
    std::fs::create_dir_all(&dir).expect("create dir");
    let engine = Engine::new();
    let opts = StoreOptions {
        fsync: FsyncMode::Always,
        snapshot_interval: std::time::Duration::ZERO,
        ..StoreOptions::default()
    };
    let (store, opened) = Store::open(&dir, &opts, &engine, NOW).expect("open");
    assert!(opened.fresh, "{} already holds state", dir.display());
    let catalog = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json"))
        .expect("demo catalog");
    tally::catalog::load_slice(&engine, &catalog, NOW).expect("catalog");
    store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    if webhooks {
        apply_all(&engine, &store, WEBHOOKS_BEFORE_SNAPSHOT);
        store.snapshot_quiescent(&engine, NOW).expect("snapshot");
        apply_all(&engine, &store, WEBHOOKS_AFTER_SNAPSHOT);
    } else {
        apply_all(&engine, &store, COMMANDS);
    }
    if native {
        apply_all(&engine, &store, NATIVE_BEFORE_SNAPSHOT);
        store.snapshot_quiescent(&engine, NOW).expect("snapshot");
        apply_all(&engine, &store, NATIVE_AFTER_SNAPSHOT);
    }
    store.log.close().expect("close");
    for (k, v) in engine.stats() {
        println!("{k}: {v}");
    }
}

/// Commits every command of `lines` (JSON lines; `//` comments).
fn apply_all(engine: &Engine, store: &Store, lines: &str) {
    for (i, line) in lines.lines().map(str::trim).enumerate() {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let cmd: Command = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let c = store
            .log
            // As a replay applies it (webhook events are made from the
            // change's ledger entries).
            .commit(&cmd, || engine.apply_replayed(&cmd))
            .unwrap_or_else(|e| panic!("command {i} refused: {line}: {e:?}"));
        if let Some(lsn) = c.lsn {
            store.log.wait_blocking(lsn).expect("durable");
        }
    }
}

/// The webhook commands before the second snapshot, and after it.
const WEBHOOKS_BEFORE_SNAPSHOT: &str = include_str!("golden-webhooks-snapshot.jsonl");
const WEBHOOKS_AFTER_SNAPSHOT: &str = include_str!("golden-webhooks-log.jsonl");

/// The native API's commands before the second snapshot, and after it.
const NATIVE_BEFORE_SNAPSHOT: &str = include_str!("golden-native-snapshot.jsonl");
const NATIVE_AFTER_SNAPSHOT: &str = include_str!("golden-native-log.jsonl");

/// Every command, as the log stores it. Ids from 20000 up are new; the
/// demo catalog's (tenant 10000, product studio 10001, ...) are printed by
/// `tally inspect --records` on the result.
const COMMANDS: &str = include_str!("golden-commands.jsonl");
