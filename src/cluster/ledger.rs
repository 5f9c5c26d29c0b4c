//! A cluster node's ledger store: the same files as a single node's
//! (`storage::ledger`, `ledger/` in the data directory), written by the
//! applier. Every message's entries are appended as it is applied, under
//! the stream sequence as their lsn; they are synced every
//! [`LEDGER_SYNC_MS`] and always before a local snapshot, so that the
//! entries of every message a snapshot holds are on disk. At start the
//! ledger is cut after the sequence the node's state was rebuilt to and the
//! applier appends the rest again (the same entries: the engine is
//! deterministic). A node that bootstrapped from the published snapshot has
//! the entries of what it applied itself, from there on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::engine::ledger::LedgerEntry;
use crate::storage::ledger::{self, Writer};

/// How often the applier syncs the ledger's appended entries, at most.
pub const LEDGER_SYNC_MS: u64 = 200;

pub struct NodeLedger {
    writer: Writer,
    dir: PathBuf,
    /// Frames of one message, reused.
    frames: Vec<u8>,
    last_sync: Instant,
    retention: Duration,
    bytes_max: u64,
}

impl NodeLedger {
    /// Opens `data_dir`'s ledger and cuts what follows `applied` (the
    /// sequence the node's state holds).
    pub fn open(
        data_dir: &Path,
        applied: u64,
        retention: Duration,
        bytes_max: u64,
    ) -> std::io::Result<NodeLedger> {
        let mut writer = Writer::open(data_dir)?;
        writer.cut_after(applied)?;
        writer.sync()?;
        Ok(NodeLedger {
            writer,
            dir: data_dir.to_path_buf(),
            frames: Vec::new(),
            last_sync: Instant::now(),
            retention,
            bytes_max,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the entries of message `seq` (its proposer's origin JSON and
    /// idempotency key); syncs when [`LEDGER_SYNC_MS`] passed.
    pub fn append(
        &mut self,
        seq: u64,
        origin: &[u8],
        key: Option<&str>,
        entries: &[LedgerEntry],
    ) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.frames.clear();
        ledger::encode(&mut self.frames, seq, origin, key, entries);
        self.writer.append(&self.frames, seq, seq)?;
        if self.last_sync.elapsed() >= Duration::from_millis(LEDGER_SYNC_MS) {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs what was appended (before a snapshot, and when quiet).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.last_sync = Instant::now();
        if self.writer.synced_lsn == self.writer.last_lsn {
            return Ok(());
        }
        self.writer.sync()
    }

    /// Removes segments past the retention or the size cap.
    pub fn retain(&self) {
        let now = std::time::SystemTime::now();
        match ledger::retain(&self.dir, now, self.retention, self.bytes_max) {
            Ok(removed) => {
                for p in removed {
                    tracing::info!("ledger retention removed {}", p.display());
                }
            }
            Err(e) => tracing::warn!("could not remove old ledger segments: {e}"),
        }
    }
}

/// Syncs the newest ledger segment of `data_dir` to disk (a graceful stop,
/// after the applier, which owned the writer, stopped).
pub fn sync_newest(data_dir: &Path) -> std::io::Result<()> {
    let dir = data_dir.join(crate::storage::ledger::LEDGER_DIR);
    let mut newest = None;
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy().to_string();
        if name.starts_with("ledger-")
            && name.ends_with(".seg")
            && newest.as_ref().is_none_or(|n| *n < name)
        {
            newest = Some(name);
        }
    }
    if let Some(n) = newest {
        std::fs::File::open(dir.join(n))?.sync_all()?;
    }
    Ok(())
}
