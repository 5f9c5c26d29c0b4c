//! The ledger store: every change's ledger entries (see `engine::ledger`),
//! kept in the data directory apart from the log (which snapshots prune).
//!
//! Files `ledger/ledger-<first lsn, 20 digits>.seg`: the magic `TALLYLDG`,
//! the format (u32 LE), the first lsn (u64 LE) and a CRC32C of those 20
//! bytes; then frames `len u32 LE | crc32c(len ++ payload) u32 LE | payload`
//! whose payload is one entry as JSON: `{"seq", "lsn", "index", "origin"?,
//! "idempotency_key"?, "entry": {...}}`, `seq = lsn × 65,536 + index`.
//!
//! Beside each segment, `ledger-<first lsn>.idx` is its sparse index: a
//! record `seq u64 LE | offset u64 LE` for the first frame at or past every
//! [`LEDGER_INDEX_STRIDE_BYTES`] of the segment, so that a read from a
//! cursor starts near it instead of at the segment's start. The index is a
//! hint written after its frames: a record past the segment's end is
//! ignored, a lost one only makes a read start earlier.
//!
//! An entry exists if and only if its change was acknowledged: the log's
//! flusher appends a batch's entries once the batch's records are written
//! (and synced, per the fsync mode); at start the store cuts entries past the
//! log's end (a log tail cut by a crash) and derives the missing ones from
//! the log while replaying it; the log is pruned only up to what the ledger
//! holds on disk (`Writer::synced_lsn`).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crc32c::{crc32c, crc32c_append};

use crate::engine::ledger::LedgerEntry;
use crate::engine::time::Millis;

pub const LEDGER_DIR: &str = "ledger";
/// A segment is closed and a new one begun past this size, bytes.
pub const LEDGER_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest entry frame, bytes (an entry is a few hundred).
pub const LEDGER_ENTRY_BYTES_MAX: usize = 64 * 1024;
/// How long the ledger keeps entries by default, days.
pub const LEDGER_RETENTION_DAYS_DEFAULT: u64 = 30;
/// The ledger's size cap by default, bytes (8 GiB).
pub const LEDGER_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;

/// Segment bytes between two records of a segment's index.
pub const LEDGER_INDEX_STRIDE_BYTES: u64 = 256 * 1024;
/// Bytes a read takes from a segment at once.
const LEDGER_READ_CHUNK_BYTES: u64 = 1024 * 1024;
const INDEX_RECORD_BYTES: usize = 16;

/// Entries one read looks at, at most (a filtered page answers with a
/// cursor to go on from when it stops there).
pub const LEDGER_SCAN_ENTRIES_MAX: usize = 100_000;

const MAGIC: &[u8; 8] = b"TALLYLDG";
const FORMAT: u32 = 1;
const HEADER_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 8;

/// An entry's place in the ledger's order.
pub fn seq_of(lsn: u64, index: usize) -> u64 {
    (lsn << 16) | (index as u64 & 0xffff)
}

fn segment_name(first_lsn: u64) -> String {
    format!("ledger-{first_lsn:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ledger-")?.strip_suffix(".seg")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn header(first_lsn: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends the frames of `entries` (of the record `lsn`, with its origin
/// JSON and idempotency key) to `buf`.
pub fn encode(
    buf: &mut Vec<u8>,
    lsn: u64,
    origin: &[u8],
    idempotency_key: Option<&str>,
    entries: &[LedgerEntry],
) {
    // A command that carries no time of its own (a Qlik removal, an
    // Informatica change, an admin correction) gives entries at 0: they take
    // the time their origin recorded for the commit.
    let origin_at = || {
        #[derive(serde::Deserialize)]
        struct At {
            at: Millis,
        }
        serde_json::from_slice::<At>(origin).ok().map(|a| a.at)
    };
    for (i, e) in entries.iter().enumerate() {
        let timed;
        let e = match if e.at == 0 { origin_at() } else { None } {
            Some(at) => {
                timed = LedgerEntry { at, ..e.clone() };
                &timed
            }
            None => e,
        };
        let start = buf.len();
        buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        let seq = seq_of(lsn, i);
        let _ = write!(buf, r#"{{"seq":{seq},"lsn":{lsn},"index":{i}"#);
        if !origin.is_empty() {
            buf.extend_from_slice(br#","origin":"#);
            buf.extend_from_slice(origin);
        }
        if let Some(k) = idempotency_key {
            buf.extend_from_slice(br#","idempotency_key":"#);
            let _ = serde_json::to_writer(&mut *buf, k);
        }
        buf.extend_from_slice(br#","entry":"#);
        let _ = serde_json::to_writer(&mut *buf, e);
        buf.push(b'}');
        let len = (buf.len() - start - FRAME_HEADER_BYTES) as u32;
        let crc = crc32c_append(
            crc32c(&len.to_le_bytes()),
            &buf[start + FRAME_HEADER_BYTES..],
        );
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The frames of a segment's bytes (after its header): (offset, payload)
/// up to the first bad or cut frame.
fn frames(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    frames_at(bytes, HEADER_BYTES)
}

/// [`frames`] from offset `off`.
fn frames_at(bytes: &[u8], mut off: usize) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    while let Some(h) = bytes.get(off..off + FRAME_HEADER_BYTES) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len == 0 || len > LEDGER_ENTRY_BYTES_MAX {
            break;
        }
        let Some(payload) = bytes.get(off + FRAME_HEADER_BYTES..off + FRAME_HEADER_BYTES + len)
        else {
            break;
        };
        if crc32c_append(crc32c(&h[..4]), payload) != crc {
            break;
        }
        out.push((off, payload));
        off += FRAME_HEADER_BYTES + len;
    }
    out
}

/// The seq of an entry's payload (without parsing the rest).
fn seq_of_payload(payload: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(payload).ok().map(|s| s.seq)
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// A segment's index records (seq, offset), in order; a missing file or a
/// torn last record reads as fewer records.
fn read_index(segment: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(index_path(segment)).unwrap_or_default();
    bytes
        .chunks_exact(INDEX_RECORD_BYTES)
        .map(|r| {
            let mut seq = [0u8; 8];
            let mut off = [0u8; 8];
            seq.copy_from_slice(&r[..8]);
            off.copy_from_slice(&r[8..]);
            (u64::from_le_bytes(seq), u64::from_le_bytes(off))
        })
        .collect()
}

/// Keeps the index records of frames below `len` (a segment cut there).
fn cut_index(segment: &Path, len: u64) -> std::io::Result<()> {
    let records = read_index(segment);
    let keep: Vec<u8> = records
        .iter()
        .filter(|(_, off)| *off < len)
        .flat_map(|(seq, off)| seq.to_le_bytes().into_iter().chain(off.to_le_bytes()))
        .collect();
    if keep.len() != records.len() * INDEX_RECORD_BYTES || index_path(segment).exists() {
        fs::write(index_path(segment), keep)?;
    }
    Ok(())
}

/// The lsn of an entry's payload.
fn lsn_of(payload: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Lsn {
        lsn: u64,
    }
    serde_json::from_slice::<Lsn>(payload).ok().map(|l| l.lsn)
}

/// The ledger's segments, by first lsn.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(first) = e.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Appends entries to the ledger; owned by the log's flusher.
pub struct Writer {
    dir: PathBuf,
    file: Option<(fs::File, u64)>,
    /// The open segment's index, and the offset from which the next frame
    /// gets a record.
    index: Option<(fs::File, u64)>,
    /// The lsn of the last entry written.
    pub last_lsn: u64,
    /// The lsn up to which every entry is synced to disk.
    pub synced_lsn: u64,
}

impl Writer {
    /// Opens the ledger of `data_dir` (created if absent) and finds its last
    /// entry; a torn frame at the end is cut.
    pub fn open(data_dir: &Path) -> std::io::Result<Writer> {
        let dir = data_dir.join(LEDGER_DIR);
        fs::create_dir_all(&dir)?;
        let mut w = Writer {
            dir,
            file: None,
            index: None,
            last_lsn: 0,
            synced_lsn: 0,
        };
        w.cut_after(u64::MAX)?;
        Ok(w)
    }

    /// Removes every entry of a record past `lsn` (records the log lost, or
    /// never held) and any torn frame; the last entry's lsn is then at most
    /// `lsn`.
    pub fn cut_after(&mut self, lsn: u64) -> std::io::Result<()> {
        self.file = None;
        self.index = None;
        let mut last = 0;
        for (first, path) in segments(&self.dir)?.into_iter().rev() {
            if first > lsn {
                fs::remove_file(&path)?;
                let _ = fs::remove_file(index_path(&path));
                continue;
            }
            let bytes = fs::read(&path)?;
            if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
                fs::remove_file(&path)?;
                let _ = fs::remove_file(index_path(&path));
                continue;
            }
            let mut keep = HEADER_BYTES;
            for (off, payload) in frames(&bytes) {
                match lsn_of(payload) {
                    Some(l) if l <= lsn => {
                        keep = off + FRAME_HEADER_BYTES + payload.len();
                        last = last.max(l);
                    }
                    _ => break,
                }
            }
            if keep < bytes.len() {
                let f = fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(keep as u64)?;
                f.sync_all()?;
            }
            cut_index(&path, keep as u64)?;
            if last > 0 || keep > HEADER_BYTES {
                break;
            }
        }
        self.last_lsn = last;
        self.synced_lsn = last;
        Ok(())
    }

    /// Appends frames of records `first_lsn..=last_lsn` (written, not synced).
    pub fn append(&mut self, frames: &[u8], first_lsn: u64, last_lsn: u64) -> std::io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        if self
            .file
            .as_ref()
            .is_some_and(|(_, n)| *n >= LEDGER_SEGMENT_BYTES_MAX)
        {
            self.sync()?;
            self.file = None;
        }
        if self.file.is_none() {
            let path = self.open_last_or_new(first_lsn)?;
            let mut f = fs::OpenOptions::new().read(true).write(true).open(&path)?;
            let n = f.seek(SeekFrom::End(0))?;
            let next = read_index(&path)
                .last()
                .map_or(0, |(_, off)| off + LEDGER_INDEX_STRIDE_BYTES);
            let idx = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(index_path(&path))?;
            self.file = Some((f, n));
            self.index = Some((idx, next));
        }
        let Some((f, n)) = &mut self.file else {
            unreachable!("opened above")
        };
        let start = *n;
        f.write_all(frames)?;
        *n += frames.len() as u64;
        self.last_lsn = self.last_lsn.max(last_lsn);
        if let Some((idx, next)) = &mut self.index {
            let records = index_records(frames, start, next);
            // The index is a hint: a failed write stops indexing this
            // segment, never the ledger.
            if !records.is_empty() && idx.write_all(&records).is_err() {
                tracing::warn!("ledger index write failed; reads of this segment start earlier");
                self.index = None;
            }
        }
        Ok(())
    }

    /// The segment to append to: the last one if it has room, else a new
    /// one starting at `first_lsn`.
    fn open_last_or_new(&self, first_lsn: u64) -> std::io::Result<PathBuf> {
        if let Some((_, path)) = segments(&self.dir)?.pop() {
            if fs::metadata(&path)?.len() < LEDGER_SEGMENT_BYTES_MAX {
                return Ok(path);
            }
        }
        let path = self.dir.join(segment_name(first_lsn));
        let mut f = fs::File::create(&path)?;
        f.write_all(&header(first_lsn))?;
        f.sync_all()?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// Syncs what was appended.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some((f, _)) = &mut self.file {
            f.sync_data()?;
        }
        self.synced_lsn = self.last_lsn;
        Ok(())
    }
}

/// The index records of the frames in `frames` (written at `start`): one
/// for the first frame at or past `*next`, which then moves a stride on.
fn index_records(frames: &[u8], start: u64, next: &mut u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(h) = frames.get(off..off + FRAME_HEADER_BYTES) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let at = start + off as u64;
        if at >= *next {
            let payload = frames.get(off + FRAME_HEADER_BYTES..off + FRAME_HEADER_BYTES + len);
            if let Some(seq) = payload.and_then(seq_of_payload) {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                *next = at + LEDGER_INDEX_STRIDE_BYTES;
            }
        }
        off += FRAME_HEADER_BYTES + len;
    }
    out
}

/// Where a read after `after` may start in `segment`: the last indexed
/// frame at or before it, if the frame is there (its checksum and seq as
/// recorded); else the first frame.
fn start_offset(segment: &Path, after: u64, len: u64) -> u64 {
    let first = HEADER_BYTES as u64;
    let Some((seq, off)) = read_index(segment)
        .into_iter()
        .take_while(|(seq, _)| *seq <= after)
        .last()
    else {
        return first;
    };
    if off < first || off >= len {
        return first;
    }
    let frame = fs::File::open(segment).and_then(|mut f| {
        f.seek(SeekFrom::Start(off))?;
        let mut bytes = Vec::new();
        f.take((FRAME_HEADER_BYTES + LEDGER_ENTRY_BYTES_MAX) as u64)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    let found = frame.ok().and_then(|bytes| {
        let frames = frames_at(&bytes, 0);
        frames.first().and_then(|(_, p)| seq_of_payload(p))
    });
    if found == Some(seq) {
        off
    } else {
        first
    }
}

/// Reads entries after `after` (a seq) in order, keeping those `keep`
/// accepts, at most `limit`, looking at no more than
/// [`LEDGER_SCAN_ENTRIES_MAX`]; returns them and the seq to go on from when
/// more may follow.
pub fn read(
    data_dir: &Path,
    after: u64,
    limit: usize,
    mut keep: impl FnMut(&serde_json::Value) -> bool,
) -> std::io::Result<(Vec<serde_json::Value>, Option<u64>)> {
    let mut tail = Tail::new(data_dir, after);
    let mut out = Vec::new();
    let mut scanned = 0usize;
    let stopped = tail.scan(|v| {
        scanned += 1;
        if keep(&v) {
            out.push(v);
        }
        out.len() < limit && scanned < LEDGER_SCAN_ENTRIES_MAX
    })?;
    Ok((out, stopped.then(|| tail.after())))
}

/// The last `n` entries of `[start, end)` of a segment that `keep`
/// accepts, and how many entries were looked at: read forward a chunk at a
/// time, never more than `n` kept in memory (a stretch may be a whole
/// segment written without an index).
fn tail_stretch(
    path: &Path,
    start: u64,
    end: u64,
    keep: &mut impl FnMut(&serde_json::Value) -> bool,
    n: usize,
) -> std::io::Result<(Vec<serde_json::Value>, usize)> {
    let mut f = fs::File::open(path)?;
    let mut out: std::collections::VecDeque<serde_json::Value> = std::collections::VecDeque::new();
    let (mut offset, mut scanned) = (start, 0usize);
    while offset < end {
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        (&mut f)
            .take((end - offset).min(LEDGER_READ_CHUNK_BYTES))
            .read_to_end(&mut bytes)?;
        let frames = frames_at(&bytes, 0);
        let Some((last_off, last)) = frames.last() else {
            break;
        };
        let next = offset + (last_off + FRAME_HEADER_BYTES + last.len()) as u64;
        for (_, p) in frames {
            scanned += 1;
            match serde_json::from_slice(p) {
                Ok(v) if keep(&v) => {
                    out.push_back(v);
                    if out.len() > n {
                        out.pop_front();
                    }
                }
                _ => {}
            }
        }
        offset = next;
    }
    Ok((out.into(), scanned))
}

/// The last `n` entries that `keep` accepts, oldest first: read back from
/// the end one stretch of the sparse index at a time, looking at no more
/// than [`LEDGER_SCAN_ENTRIES_MAX`] entries.
pub fn tail(
    data_dir: &Path,
    n: usize,
    mut keep: impl FnMut(&serde_json::Value) -> bool,
) -> std::io::Result<Vec<serde_json::Value>> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut scanned = 0usize;
    for (_, path) in segments_if_any(&data_dir.join(LEDGER_DIR))?
        .into_iter()
        .rev()
    {
        let len = fs::metadata(&path)?.len();
        let mut cuts: Vec<u64> = read_index(&path)
            .into_iter()
            .map(|(_, off)| off)
            .filter(|off| *off >= HEADER_BYTES as u64 && *off < len)
            .collect();
        cuts.insert(0, HEADER_BYTES as u64);
        cuts.dedup();
        let mut end = len;
        while let Some(start) = cuts.pop() {
            let found = tail_stretch(&path, start, end, &mut keep, n)?;
            scanned += found.1;
            let mut found = found.0;
            found.append(&mut out);
            out = found;
            if out.len() >= n || scanned >= LEDGER_SCAN_ENTRIES_MAX {
                let cut = out.len().saturating_sub(n);
                return Ok(out.split_off(cut));
            }
            end = start;
        }
    }
    Ok(out)
}

/// Follows the ledger from a seq on: each call reads only what was appended
/// since the last one (a live tail for streams; [`read`] is one pass of it).
pub struct Tail {
    dir: PathBuf,
    after: u64,
    /// The segment being read (its first lsn) and the offset read up to.
    at: Option<(u64, u64)>,
}

impl Tail {
    pub fn new(data_dir: &Path, after: u64) -> Tail {
        Tail {
            dir: data_dir.join(LEDGER_DIR),
            after,
            at: None,
        }
    }

    /// The seq of the last entry returned (or the start).
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Entries after the last one returned, at most `max`.
    pub fn next(&mut self, max: usize) -> std::io::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        self.scan(|v| {
            out.push(v);
            out.len() < max
        })?;
        Ok(out)
    }

    /// Hands each entry after the cursor to `visit`, in order, moving the
    /// cursor past it, until `visit` answers false (then true is returned)
    /// or the ledger's end (false).
    fn scan(&mut self, mut visit: impl FnMut(serde_json::Value) -> bool) -> std::io::Result<bool> {
        let segs = segments_if_any(&self.dir)?;
        let after_lsn = self.after >> 16;
        let mut i = match self.at {
            Some((first, _)) => segs.iter().position(|(f, _)| *f == first).unwrap_or(0),
            // The last segment that starts at or before the cursor.
            None => segs
                .iter()
                .rposition(|(f, _)| *f <= after_lsn.max(1))
                .unwrap_or(0),
        };
        while let Some((first, path)) = segs.get(i) {
            let mut f = fs::File::open(path)?;
            let len = f.metadata()?.len();
            let mut offset = match self.at {
                Some((s, off)) if s == *first => off,
                // A segment read from a cursor within it starts near it.
                _ => start_offset(path, self.after, len),
            };
            self.at = Some((*first, offset));
            loop {
                f.seek(SeekFrom::Start(offset))?;
                let mut bytes = Vec::new();
                (&mut f)
                    .take(LEDGER_READ_CHUNK_BYTES)
                    .read_to_end(&mut bytes)?;
                let frames = frames_at(&bytes, 0);
                let Some((last_off, last)) = frames.last() else {
                    break;
                };
                let next = offset + (last_off + FRAME_HEADER_BYTES + last.len()) as u64;
                for (off, payload) in frames {
                    let end = offset + (off + FRAME_HEADER_BYTES + payload.len()) as u64;
                    self.at = Some((*first, end));
                    // Entries before the cursor are skipped on their seq alone.
                    if seq_of_payload(payload).is_none_or(|seq| seq <= self.after) {
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                        continue;
                    };
                    self.after = v["seq"].as_u64().unwrap_or(self.after);
                    if !visit(v) {
                        return Ok(true);
                    }
                }
                if (bytes.len() as u64) < LEDGER_READ_CHUNK_BYTES {
                    break;
                }
                offset = next;
            }
            i += 1;
        }
        Ok(false)
    }
}

/// The ledger's segments, none when it has no directory yet.
fn segments_if_any(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    match segments(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// Removes whole segments, never the newest one: those last written before
/// `now - retention`, then the oldest while the ledger is over `bytes_max`.
/// Returns the segments removed.
pub fn retain(
    data_dir: &Path,
    now: std::time::SystemTime,
    retention: std::time::Duration,
    bytes_max: u64,
) -> std::io::Result<Vec<PathBuf>> {
    let dir = data_dir.join(LEDGER_DIR);
    let mut segs = segments_if_any(&dir)?;
    segs.pop(); // the newest: being written
    let mut sized = Vec::with_capacity(segs.len());
    let mut total: u64 = 0;
    for (_, path) in segs {
        let meta = fs::metadata(&path)?;
        total += meta.len();
        sized.push((path, meta.len(), meta.modified()?));
    }
    if let Some(last) = segments_if_any(&dir)?.last() {
        total += fs::metadata(&last.1)?.len();
    }
    let cutoff = now.checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = Vec::new();
    for (path, len, modified) in sized {
        if modified < cutoff || total > bytes_max {
            fs::remove_file(&path)?;
            let _ = fs::remove_file(index_path(&path));
            total = total.saturating_sub(len);
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        fs::File::open(&dir)?.sync_all()?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ledger::{EntryKind, LedgerEntry};

    fn entry(amount: i64) -> LedgerEntry {
        serde_json::from_value(serde_json::json!({
            "kind": "units_consumed", "tenant_id": 1, "amount": amount, "at": 0
        }))
        .expect("entry")
    }

    /// Entries round-trip through a segment; a torn frame and entries past
    /// the log's end are cut; segments past retention or the cap are
    /// removed, never the newest.
    #[test]
    fn entries_are_kept_cut_and_retained() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::open(tmp.path()).expect("open");
        for lsn in 1..=3u64 {
            let mut frames = Vec::new();
            encode(
                &mut frames,
                lsn,
                br#"{"surface":"native"}"#,
                None,
                &[entry(lsn as i64)],
            );
            w.append(&frames, lsn, lsn).expect("append");
        }
        w.sync().expect("sync");
        let (all, next) = read(tmp.path(), 0, 10, |_| true).expect("read");
        assert_eq!((all.len(), next), (3, None));
        assert_eq!(all[1]["entry"]["amount"], 2);
        assert_eq!(all[1]["seq"], seq_of(2, 0));
        assert_eq!(all[1]["origin"]["surface"], "native");
        assert_eq!(
            all[0]["entry"]["kind"],
            serde_json::to_value(EntryKind::UnitsConsumed).expect("kind")
        );
        // An entry of a command without a time takes its origin's.
        let mut frames = Vec::new();
        encode(&mut frames, 9, br#"{"at":123}"#, Some("k"), &[entry(0)]);
        let timeless = frames_at(&frames, 0);
        let v: serde_json::Value = serde_json::from_slice(timeless[0].1).expect("json");
        assert_eq!(
            (v["entry"]["at"].as_i64(), v["idempotency_key"].as_str()),
            (Some(123), Some("k"))
        );
        // A torn last frame, then the log ending at record 2.
        let seg = segments(&tmp.path().join(LEDGER_DIR)).expect("list")[0]
            .1
            .clone();
        let len = fs::metadata(&seg).expect("meta").len();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len - 3)
            .expect("cut");
        let mut w = Writer::open(tmp.path()).expect("reopen");
        assert_eq!(w.last_lsn, 2);
        w.cut_after(1).expect("cut");
        assert_eq!(w.last_lsn, 1);
        let (left, _) = read(tmp.path(), 0, 10, |_| true).expect("read");
        assert_eq!(left.len(), 1);
        // Retention: an old sealed segment goes, the newest stays.
        let dir = tmp.path().join(LEDGER_DIR);
        let old = dir.join(segment_name(0));
        fs::write(&old, header(0)).expect("old segment");
        let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
        fs::File::options()
            .write(true)
            .open(&old)
            .expect("open")
            .set_modified(week_ago)
            .expect("mtime");
        let day = std::time::Duration::from_secs(86_400);
        let removed =
            retain(tmp.path(), std::time::SystemTime::now(), day, u64::MAX).expect("retain");
        assert_eq!(removed, [old]);
        // The cap: everything but the newest.
        let older = dir.join(segment_name(0));
        fs::write(&older, header(0)).expect("segment");
        let removed = retain(tmp.path(), std::time::SystemTime::now(), day, 1).expect("retain");
        assert_eq!(removed, [older]);
        assert_eq!(segments(&dir).expect("list").len(), 1);
    }

    /// Reads from a cursor start at the sparse index's record before it,
    /// and answer exactly what a scan from the start answers, with the
    /// index whole, missing, torn, or lying.
    #[test]
    fn the_sparse_index_finds_a_cursor_and_is_only_a_hint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::open(tmp.path()).expect("open");
        let origin = format!(r#"{{"surface":"native","pad":"{}"}}"#, "x".repeat(200));
        let origin = origin.as_bytes();
        let n = 6_000u64;
        for lsn in 1..=n {
            let mut frames = Vec::new();
            encode(&mut frames, lsn, origin, None, &[entry(lsn as i64)]);
            w.append(&frames, lsn, lsn).expect("append");
        }
        w.sync().expect("sync");
        let seg = segments(&tmp.path().join(LEDGER_DIR)).expect("list")[0]
            .1
            .clone();
        let len = fs::metadata(&seg).expect("meta").len();
        let index = read_index(&seg);
        assert_eq!(
            index.len() as u64,
            len.div_ceil(LEDGER_INDEX_STRIDE_BYTES),
            "a record per stride"
        );
        let cursor = seq_of(4_321, 0);
        let start = start_offset(&seg, cursor, len);
        assert!(start > LEDGER_INDEX_STRIDE_BYTES, "starts near the cursor");
        let want = read(tmp.path(), cursor, 5, |_| true).expect("read").0;
        let amounts: Vec<i64> = want
            .iter()
            .map(|v| v["entry"]["amount"].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(amounts, [4_322, 4_323, 4_324, 4_325, 4_326]);
        // Torn: a partial last record is ignored.
        let idx = index_path(&seg);
        let bytes = fs::read(&idx).expect("index");
        fs::write(&idx, &bytes[..bytes.len() - 5]).expect("tear");
        assert_eq!(read(tmp.path(), cursor, 5, |_| true).expect("read").0, want);
        // Lying: offsets that are not frames are not trusted.
        let lies: Vec<u8> = (0..8u64)
            .flat_map(|i| {
                (i * 1000)
                    .to_le_bytes()
                    .into_iter()
                    .chain((HEADER_BYTES as u64 + 3 + i).to_le_bytes())
            })
            .collect();
        fs::write(&idx, lies).expect("lie");
        assert_eq!(start_offset(&seg, cursor, len), HEADER_BYTES as u64);
        assert_eq!(read(tmp.path(), cursor, 5, |_| true).expect("read").0, want);
        // Missing: a scan from the start.
        fs::remove_file(&idx).expect("remove");
        assert_eq!(read(tmp.path(), cursor, 5, |_| true).expect("read").0, want);
        // A cut drops the records past it; appends index again.
        let mut w = Writer::open(tmp.path()).expect("reopen");
        w.cut_after(3_000).expect("cut");
        for lsn in 3_001..=n {
            let mut frames = Vec::new();
            encode(&mut frames, lsn, origin, None, &[entry(lsn as i64)]);
            w.append(&frames, lsn, lsn).expect("append");
        }
        let len = fs::metadata(&seg).expect("meta").len();
        assert!(read_index(&seg).iter().all(|(_, off)| *off < len));
        assert!(start_offset(&seg, cursor, len) > HEADER_BYTES as u64);
        assert_eq!(read(tmp.path(), cursor, 5, |_| true).expect("read").0, want);
    }

    #[test]
    fn the_tail_reads_back_from_the_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::open(tmp.path()).expect("open");
        let origin = format!(r#"{{"pad":"{}"}}"#, "y".repeat(300));
        for lsn in 1..=3_000u64 {
            let mut frames = Vec::new();
            encode(
                &mut frames,
                lsn,
                origin.as_bytes(),
                None,
                &[entry(lsn as i64)],
            );
            w.append(&frames, lsn, lsn).expect("append");
        }
        w.sync().expect("sync");
        let amounts = |v: Vec<serde_json::Value>| -> Vec<i64> {
            v.iter()
                .map(|e| e["entry"]["amount"].as_i64().unwrap_or(0))
                .collect()
        };
        assert_eq!(
            amounts(tail(tmp.path(), 3, |_| true).expect("tail")),
            [2_998, 2_999, 3_000]
        );
        let even = tail(tmp.path(), 2_000, |v| {
            v["entry"]["amount"].as_i64().unwrap_or(1) % 2 == 0
        })
        .expect("tail");
        assert_eq!(even.len(), 1_500, "every even one: fewer than asked");
        assert_eq!(amounts(even)[..2], [2, 4]);
    }
}
