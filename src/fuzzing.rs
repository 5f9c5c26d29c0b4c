//! The fuzz targets' entry points: one function per parser a client or a
//! data directory can feed, each taking arbitrary bytes. None may panic, hang
//! or grow memory without bound. `fuzz/` runs them under AFL++ (cargo-afl,
//! `scripts/fuzz.sh`); `tests/fuzz_corpus.rs` replays every corpus file and
//! every recorded finding through them on each test run.

use crate::engine::{Command, Engine};
use crate::storage::record;

/// A fuzz target: its name (the corpus folder under `fuzz/corpus/`) and
/// its entry point.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("licensespring_auth", crate::api::licensespring::fuzz::auth),
    (
        "licensespring_query",
        crate::api::licensespring::fuzz::query,
    ),
    ("licensespring_body", crate::api::licensespring::fuzz::body),
    (
        "licensespring_offline",
        crate::api::licensespring::fuzz::offline_request,
    ),
    ("qlik_query", crate::api::qlik::fuzz::query),
    ("qlik_body", crate::api::qlik::fuzz::body),
    ("yext_page_token", crate::api::yext::fuzz::page_token),
    ("yext_body", crate::api::yext::fuzz::body),
    ("informatica_document", crate::api::infa::fuzz::document),
    ("admin_body", crate::api::admin::fuzz::body),
    ("native_body", crate::api::native::fuzz::body),
    ("catalog", catalog),
    ("wal_segment", wal_segment),
    ("wal_record", wal_record),
    ("snapshot", snapshot),
];

/// The entry point named `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A catalog file, loaded into an empty engine.
pub fn catalog(data: &[u8]) {
    let _ = crate::catalog::load_slice(&Engine::new(), data, 0);
}

/// A log segment as it lies on disk: its records read, decoded and applied
/// to an empty engine, as recovery does.
pub fn wal_segment(data: &[u8]) {
    let Ok(scan) = record::scan_segment(data) else {
        return;
    };
    let engine = Engine::new();
    for r in scan.records {
        if let Ok(cmd) = serde_json::from_slice::<Command>(r.json) {
            let _ = engine.apply(&cmd);
        }
    }
}

/// A record's payload with valid framing (length and checksum), so the
/// fuzzer reaches the command decoder and the engine behind the checksum.
pub fn wal_record(data: &[u8]) {
    let mut segment = record::segment_header(1).to_vec();
    record::append_raw_record(&mut segment, 1, data);
    wal_segment(&segment);
}

/// A snapshot file, inspected and loaded into an empty engine.
pub fn snapshot(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join(crate::storage::snapshot::snapshot_name(1));
    if std::fs::write(&path, data).is_ok() {
        let _ = crate::storage::snapshot::inspect(&path);
        let _ = crate::storage::snapshot::load(&path, &Engine::new(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for one snapshot input (no dev-dependency here).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tally-fuzz-{}-{}",
        std::process::id(),
        crate::util::random_token(12)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
