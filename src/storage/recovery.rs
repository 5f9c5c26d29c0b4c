//! Rebuilding state from a data directory: the newest snapshot, then the log
//! records after it, in lsn order. Used at start (with repairs: a torn tail
//! is cut off, corruption before the end is refused or, when asked, cut off
//! too) and by the snapshotter to build a shadow engine up to a cut (no
//! repairs: it never writes).

use std::fs;
use std::path::{Path, PathBuf};

use super::record::{parse_segment_name, scan_segment, BadRecord, SEGMENT_HEADER_BYTES};
use super::snapshot::{self, parse_snapshot_name, SnapshotInfo};
use crate::engine::time::Millis;
use crate::engine::{Command, Engine};

/// Records decoded per chunk handed from the decoding thread to the applying one.
pub const REPLAY_CHUNK_RECORDS: usize = 1024;
/// Decoded chunks waiting to be applied, at most.
pub const REPLAY_QUEUE_CHUNKS: usize = 8;

/// What a data directory holds, by file name.
#[derive(Debug, Default)]
pub struct DirListing {
    /// (lsn, path), ascending.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// (first lsn, path), ascending.
    pub segments: Vec<(u64, PathBuf)>,
    /// Snapshots being written when a process stopped.
    pub temporaries: Vec<PathBuf>,
    /// State files of restores (lsn of their record, path), ascending.
    pub restores: Vec<(u64, PathBuf)>,
}

pub fn list(dir: &Path) -> std::io::Result<DirListing> {
    let mut l = DirListing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(lsn) = parse_snapshot_name(name) {
            l.snapshots.push((lsn, path));
        } else if let Some(lsn) = parse_segment_name(name) {
            l.segments.push((lsn, path));
        } else if let Some(lsn) = super::fixtures::parse_restore_name(name) {
            l.restores.push((lsn, path));
        } else if (name.starts_with("snapshot-") || name.starts_with("restore-"))
            && name.ends_with(".tmp")
        {
            l.temporaries.push(path);
        }
    }
    l.snapshots.sort();
    l.segments.sort();
    l.restores.sort();
    Ok(l)
}

#[derive(Debug)]
pub enum RecoveryError {
    Io(PathBuf, std::io::Error),
    Snapshot(snapshot::SnapshotError),
    /// A damaged record or segment before the end of the log.
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    /// Records missing between two that exist (or between a snapshot and the log).
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A logged command that the engine refused on replay: the log does not
    /// describe a history this engine can rebuild.
    Replay {
        path: PathBuf,
        lsn: u64,
        why: String,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            RecoveryError::Snapshot(e) => write!(f, "snapshot {e}"),
            RecoveryError::Corrupt { path, offset, why } => write!(
                f,
                "log {} is damaged at offset {offset} ({why}) before its end; \
                 start with --truncate-corrupt-log to drop it and everything after it",
                path.display()
            ),
            RecoveryError::Gap {
                path,
                expected,
                found,
            } => write!(
                f,
                "log {}: expected record {expected}, found {found} (records are missing)",
                path.display()
            ),
            RecoveryError::Replay { path, lsn, why } => write!(
                f,
                "log {}: record {lsn} cannot be replayed: {why}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// How to treat damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Start-up: cut a torn tail off; refuse corruption before the end.
    TornTail,
    /// Start-up with `--truncate-corrupt-log`: also cut corruption before the
    /// end off, with everything after it.
    TruncateCorrupt,
    /// Shadow build: change nothing; damage past `upto` is not looked at.
    ReadOnly,
}

#[derive(Debug, Default)]
pub struct Rebuilt {
    pub snapshot: Option<SnapshotInfo>,
    pub replayed: u64,
    /// The last lsn in the rebuilt state (the snapshot's when no record followed).
    pub last_lsn: u64,
    /// Repairs made: (file, offset cut at, why).
    pub cut: Vec<(PathBuf, u64, String)>,
    /// Files removed (empty segments left by a torn start, stale temporaries).
    pub removed: Vec<PathBuf>,
    /// Time spent loading the snapshot, and replaying the log.
    pub snapshot_time: std::time::Duration,
    pub replay_time: std::time::Duration,
}

/// Rebuilds `engine` (empty) from `dir`: the newest snapshot at or before
/// `upto`, then the records after it up to `upto` (all when None). With a
/// `ledger`, the entries of replayed records it does not hold yet are
/// derived and appended to it.
#[allow(
    clippy::too_many_lines,
    reason = "recovery's one sequence (snapshot, then each segment in order), read top to bottom"
)]
pub fn rebuild(
    dir: &Path,
    engine: &Engine,
    now: Millis,
    upto: Option<u64>,
    repair: Repair,
    mut ledger: Option<&mut super::ledger::Writer>,
) -> Result<Rebuilt, RecoveryError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| RecoveryError::Io(p, e)
    };
    let listing = list(dir).map_err(io(dir))?;
    let mut out = Rebuilt::default();
    if repair != Repair::ReadOnly {
        for t in &listing.temporaries {
            fs::remove_file(t).map_err(io(t))?;
            out.removed.push(t.clone());
        }
    }
    let limit = upto.unwrap_or(u64::MAX);
    if let Some((_, path)) = listing
        .snapshots
        .iter()
        .rev()
        .find(|(lsn, _)| *lsn <= limit)
    {
        let started = std::time::Instant::now();
        let (_, info) = snapshot::load(path, engine, now).map_err(RecoveryError::Snapshot)?;
        out.last_lsn = info.lsn;
        out.snapshot = Some(info);
        out.snapshot_time = started.elapsed();
    }
    let replay_started = std::time::Instant::now();
    let segments = &listing.segments;
    let mut expected = out.last_lsn + 1;
    'segments: for (i, (first, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        // Wholly inside the snapshot: the next segment starts at or before
        // the first record we need.
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= expected)
        {
            continue;
        }
        if *first > limit {
            break;
        }
        if *first > expected {
            return Err(RecoveryError::Gap {
                path: path.clone(),
                expected,
                found: *first,
            });
        }
        let bytes = fs::read(path).map_err(io(path))?;
        let scan = match scan_segment(&bytes) {
            Ok(s) if s.first_lsn == *first => s,
            Ok(_) => {
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: 12,
                    why: "header's first record does not match the file name".into(),
                })
            }
            Err(why) => {
                // A segment whose creation was cut short holds no record yet.
                if is_last && bytes.len() <= SEGMENT_HEADER_BYTES && repair != Repair::ReadOnly {
                    fs::remove_file(path).map_err(io(path))?;
                    out.removed.push(path.clone());
                    break;
                }
                if is_last && repair == Repair::ReadOnly {
                    break;
                }
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    why: why.into(),
                });
            }
        };
        // Decoding the records (JSON) runs on a second thread, one chunk
        // ahead of applying them, which must happen in order on this one.
        let skip_below = expected;
        let records = &scan.records;
        let stop_all = std::thread::scope(|scope| -> Result<bool, RecoveryError> {
            let (tx, rx) = std::sync::mpsc::sync_channel(REPLAY_QUEUE_CHUNKS);
            scope.spawn(move || {
                for chunk in records.chunks(REPLAY_CHUNK_RECORDS) {
                    let decoded: Vec<(u64, &[u8], Result<Command<'_>, String>)> = chunk
                        .iter()
                        .filter(|r| r.lsn >= skip_below)
                        .map(|r| {
                            let cmd = serde_json::from_slice(r.json).map_err(|e| e.to_string());
                            (r.lsn, r.origin, cmd)
                        })
                        .collect();
                    if tx.send(decoded).is_err() {
                        return;
                    }
                }
            });
            let mut entries = Vec::new();
            let mut frames = Vec::new();
            for chunk in rx {
                for (lsn, origin, cmd) in chunk {
                    if lsn > limit {
                        return Ok(true);
                    }
                    if lsn < expected {
                        continue;
                    }
                    if lsn > expected {
                        return Err(RecoveryError::Gap {
                            path: path.clone(),
                            expected,
                            found: lsn,
                        });
                    }
                    let cmd = cmd.map_err(|e| RecoveryError::Replay {
                        path: path.clone(),
                        lsn,
                        why: format!("undecodable command: {e}"),
                    })?;
                    let replay_err = |why: String| RecoveryError::Replay {
                        path: path.clone(),
                        lsn,
                        why,
                    };
                    match ledger.as_deref_mut() {
                        // A change the ledger is missing (a crash before its
                        // entries were written): derived again.
                        Some(w) if lsn > w.last_lsn => {
                            entries.clear();
                            replay_one(dir, engine, lsn, &cmd, Some(&mut entries))
                                .map_err(replay_err)?;
                            frames.clear();
                            let key = match &cmd {
                                Command::Idempotent { key, .. } => Some(key.as_str()),
                                _ => None,
                            };
                            super::ledger::encode(&mut frames, lsn, origin, key, &entries);
                            w.append(&frames, lsn, lsn).map_err(io(path))?;
                        }
                        _ => replay_one(dir, engine, lsn, &cmd, None).map_err(replay_err)?,
                    }
                    out.replayed += 1;
                    out.last_lsn = lsn;
                    expected = lsn + 1;
                }
            }
            Ok(false)
        })?;
        if stop_all {
            break 'segments;
        }
        if let Some((offset, why, valid_after)) = scan.bad {
            if repair == Repair::ReadOnly {
                // Past the cut the shadow needs, the flusher may be writing.
                break;
            }
            let torn = is_last && !valid_after;
            if !torn && repair != Repair::TruncateCorrupt {
                return Err(RecoveryError::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    why: why.to_string(),
                });
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(offset as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            if torn && why == BadRecord::Unwritten {
                // The end of the records: not damage, not reported.
                tracing::debug!(
                    "log {}: zeros written ahead cut at {offset}",
                    path.display()
                );
            } else {
                let what = if torn {
                    format!("torn tail ({why})")
                } else {
                    format!("corruption before the end ({why}), dropped on request")
                };
                tracing::warn!("log {}: cut at offset {offset}: {what}", path.display());
                out.cut.push((path.clone(), offset as u64, what));
            }
            for (_, later) in &segments[i + 1..] {
                fs::remove_file(later).map_err(io(later))?;
                out.removed.push(later.clone());
            }
            if scan.records.is_empty() {
                fs::remove_file(path).map_err(io(path))?;
                out.removed.push(path.clone());
            }
            super::disk::sync_dir(dir).map_err(io(dir))?;
            break;
        }
        if scan.records.is_empty() && is_last && repair != Repair::ReadOnly {
            fs::remove_file(path).map_err(io(path))?;
            out.removed.push(path.clone());
        }
    }
    out.replay_time = replay_started.elapsed();
    Ok(out)
}

/// Applies one logged command (record `lsn`) to `engine`, deriving its
/// ledger entries into `entries` when given. A state restore is applied
/// from its state file (see [`super::fixtures`]); every other command by
/// the engine.
fn replay_one(
    dir: &Path,
    engine: &Engine,
    lsn: u64,
    cmd: &Command<'_>,
    entries: Option<&mut Vec<crate::engine::ledger::LedgerEntry>>,
) -> Result<(), String> {
    if let Command::RestoreState { fixture, now } = cmd {
        return super::fixtures::replay(dir, engine, lsn, fixture, *now, entries)
            .map(|_| ())
            .map_err(|e| format!("state restore: {e}"));
    }
    match entries {
        Some(out) => engine.apply_ledgered(cmd, out),
        None => engine.apply_replayed(cmd),
    }
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Deletes what snapshot `lsn` made unnecessary: older snapshots and the
/// segments whose records all lie at or before `lsn` (every segment when the
/// log is closed at `lsn`).
pub fn prune(dir: &Path, lsn: u64, log_closed: bool) -> std::io::Result<Vec<PathBuf>> {
    prune_upto(dir, lsn, lsn, log_closed)
}

/// [`prune`] that removes log segments only up to `log_lsn` (what the
/// ledger holds on disk: the log must keep what the ledger may still need).
pub fn prune_upto(
    dir: &Path,
    lsn: u64,
    log_lsn: u64,
    log_closed: bool,
) -> std::io::Result<Vec<PathBuf>> {
    let log_lsn = log_lsn.min(lsn);
    let listing = list(dir)?;
    let mut removed = Vec::new();
    for (s, path) in &listing.snapshots {
        if *s < lsn {
            fs::remove_file(path)?;
            removed.push(path.clone());
        }
    }
    // A restore's state file is needed only to replay its record, and no
    // replay starts before the snapshot at `lsn`.
    for (r, path) in &listing.restores {
        if *r <= lsn {
            fs::remove_file(path)?;
            removed.push(path.clone());
        }
    }
    let segs = &listing.segments;
    for (i, (_, path)) in segs.iter().enumerate() {
        if log_closed
            || segs
                .get(i + 1)
                .is_some_and(|(next, _)| *next <= log_lsn + 1)
        {
            fs::remove_file(path)?;
            removed.push(path.clone());
        }
    }
    if !removed.is_empty() {
        super::disk::sync_dir(dir)?;
    }
    Ok(removed)
}
