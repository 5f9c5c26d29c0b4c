//! State fixtures (`/admin/v1/state`): named copies of the whole state in
//! the data directory, and the restores that put one back.
//!
//! - A fixture is a snapshot file, `fixtures/<name>.snap`, written from a
//!   shadow engine rebuilt up to a cut of the log, as periodic snapshots
//!   are ([`super::store::Store::save_state`]): saving one never pauses
//!   requests, and it holds every change acknowledged before the save.
//! - `fixtures/initial.snap` is written when a data directory is first
//!   filled (its catalog loaded, or nothing): what a reset goes back to.
//!   The name `initial` is reserved.
//! - A restore is the logged command `RestoreState`. Its state is the file
//!   `restore-<lsn>.snap` beside the log: a copy of the fixture written
//!   before the record, so the record means the same state forever,
//!   whatever later happens to the fixture. Recovery, the shadow builder
//!   and the live restore all apply it with [`apply`]; the file goes with
//!   the log records once a snapshot at or after its lsn exists.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::snapshot::{self, SnapshotError, SnapshotInfo};
use crate::engine::ledger::LedgerEntry;
use crate::engine::time::Millis;
use crate::engine::Engine;

/// The fixtures' folder in the data directory.
pub const FIXTURES_DIR: &str = "fixtures";
/// The fixture a reset restores (written at the data directory's first start).
pub const INITIAL: &str = "initial";
/// Named fixtures a data directory keeps, at most (`initial` included).
pub const FIXTURES_MAX: usize = 1_000;
/// Longest fixture name, bytes.
pub const FIXTURE_NAME_BYTES_MAX: usize = 64;

/// Why a fixture could not be saved, listed or restored.
#[derive(Debug)]
pub enum FixtureError {
    /// The name is not 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a
    /// letter or digit.
    BadName,
    /// `initial` is written by the server only.
    Reserved,
    NotFound,
    /// [`FIXTURES_MAX`] fixtures exist already.
    TooMany,
    /// The file exists but is not a whole snapshot this server can load.
    Unreadable(String),
    Io(std::io::Error),
}

impl std::fmt::Display for FixtureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FixtureError::BadName => write!(
                f,
                "a fixture name is 1 to {FIXTURE_NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -, \
                 starting with a letter or digit"
            ),
            FixtureError::Reserved => {
                write!(f, "the fixture `{INITIAL}` is written by the server only")
            }
            FixtureError::NotFound => f.write_str("no such fixture"),
            FixtureError::TooMany => write!(f, "{FIXTURES_MAX} fixtures exist already; delete one"),
            FixtureError::Unreadable(why) => write!(f, "the fixture cannot be loaded: {why}"),
            FixtureError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FixtureError {}

/// Whether `name` may name a fixture.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= FIXTURE_NAME_BYTES_MAX
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !name.ends_with(".tmp")
}

/// The file of fixture `name` (a valid name).
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(FIXTURES_DIR).join(format!("{name}.snap"))
}

/// The state file of the restore logged at `lsn`.
pub fn restore_file(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("restore-{lsn:020}.snap"))
}

/// The lsn of a restore's state file, from its name.
pub fn parse_restore_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("restore-")?.strip_suffix(".snap")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// One fixture, as `GET /admin/v1/state` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub bytes: u64,
    /// When the file was written (Unix ms, the file's own time).
    pub saved_at_ms: u64,
}

/// The fixtures in `dir`, by name.
pub fn list(dir: &Path) -> std::io::Result<Vec<Listed>> {
    let folder = dir.join(FIXTURES_DIR);
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".snap")) else {
            continue;
        };
        if !valid_name(name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Deleted since the directory was read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let saved_at_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        out.push(Listed {
            name: name.to_string(),
            bytes: meta.len(),
            saved_at_ms,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Checks that a fixture named `name` may be written now (a new name
/// counts against [`FIXTURES_MAX`]).
pub fn check_room(dir: &Path, name: &str) -> Result<(), FixtureError> {
    if !valid_name(name) {
        return Err(FixtureError::BadName);
    }
    if name == INITIAL {
        return Err(FixtureError::Reserved);
    }
    let listed = list(dir).map_err(FixtureError::Io)?;
    if listed.len() >= FIXTURES_MAX && !listed.iter().any(|l| l.name == name) {
        return Err(FixtureError::TooMany);
    }
    fs::create_dir_all(dir.join(FIXTURES_DIR)).map_err(FixtureError::Io)
}

/// Deletes fixture `name`.
pub fn delete(dir: &Path, name: &str) -> Result<(), FixtureError> {
    if !valid_name(name) {
        return Err(FixtureError::BadName);
    }
    if name == INITIAL {
        return Err(FixtureError::Reserved);
    }
    match fs::remove_file(path(dir, name)) {
        Ok(()) => super::disk::sync_dir(&dir.join(FIXTURES_DIR)).map_err(FixtureError::Io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FixtureError::NotFound),
        Err(e) => Err(FixtureError::Io(e)),
    }
}

/// Writes the `initial` fixture from `engine` (at a data directory's first
/// start, before serving: nothing changes it meanwhile).
pub fn save_initial(
    dir: &Path,
    engine: &Engine,
    lsn: u64,
    now: Millis,
) -> Result<(), SnapshotError> {
    let folder = dir.join(FIXTURES_DIR);
    fs::create_dir_all(&folder).map_err(|e| SnapshotError::Io(folder, e))?;
    snapshot::write_to(&path(dir, INITIAL), engine, lsn, now).map(|_| ())
}

/// A fixture's bytes, checked whole by loading them into a scratch engine
/// (so that loading them into the live one cannot fail), with what they hold.
pub fn read_checked(
    dir: &Path,
    name: &str,
    now: Millis,
) -> Result<(Vec<u8>, SnapshotInfo), FixtureError> {
    if !valid_name(name) {
        return Err(FixtureError::BadName);
    }
    let file = path(dir, name);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FixtureError::NotFound),
        Err(e) => return Err(FixtureError::Io(e)),
    };
    let scratch = Engine::new();
    let (_, info) = snapshot::load_bytes(&file, &bytes, &scratch, now)
        .map_err(|e| FixtureError::Unreadable(e.to_string()))?;
    Ok((bytes, info))
}

/// Stores a restore's state (`bytes`, a fixture's) as the file of the
/// record `lsn`, synced, before the record is logged.
pub fn write_restore_file(dir: &Path, lsn: u64, bytes: &[u8]) -> std::io::Result<()> {
    let file = restore_file(dir, lsn);
    let tmp = file.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &file)?;
    super::disk::sync_dir(dir)
}

/// Replaces `engine`'s whole state with the snapshot `bytes` (`file` names
/// them in errors): clears it, loads them, keeps webhook event ids going
/// up, holds floating seats a full timeout from `now`. With `entries`, adds a `state_restored` ledger entry for every
/// tenant present before or after. The same on every path that applies a
/// `RestoreState` record, so a replay rebuilds what the live restore made.
pub fn apply(
    engine: &Engine,
    file: &Path,
    bytes: &[u8],
    fixture: &str,
    now: Millis,
    entries: Option<&mut Vec<LedgerEntry>>,
) -> Result<SnapshotInfo, SnapshotError> {
    let before = entries.as_ref().map(|_| engine.tenant_ids());
    let event_seq = engine.webhook_event_mark();
    engine.clear();
    let (_, info) = snapshot::load_bytes(file, bytes, engine, now)?;
    engine.finish_state_restore(event_seq);
    // As after a restart: renewals are not logged, so a fixture's seats may
    // end earlier than their holders believe; each holds a full timeout
    // from the restore (from the record's `now`: a replay does the same).
    engine.extend_restored_leases(now);
    if let (Some(entries), Some(mut tenants)) = (entries, before) {
        tenants.extend(engine.tenant_ids());
        tenants.sort_unstable();
        tenants.dedup();
        entries.extend(
            tenants
                .into_iter()
                .map(|t| LedgerEntry::state_restored(t, fixture, now)),
        );
    }
    Ok(info)
}

/// [`apply`] for a replayed record `lsn`: reads its state file.
pub fn replay(
    dir: &Path,
    engine: &Engine,
    lsn: u64,
    fixture: &str,
    now: Millis,
    entries: Option<&mut Vec<LedgerEntry>>,
) -> Result<SnapshotInfo, SnapshotError> {
    let file = restore_file(dir, lsn);
    let bytes = fs::read(&file).map_err(|e| SnapshotError::Io(file.clone(), e))?;
    apply(engine, &file, &bytes, fixture, now, entries)
}
