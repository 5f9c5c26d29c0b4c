//! `tally inspect`: what a data directory holds, without changing it.

use std::io::Write;
use std::path::Path;

use super::record::{scan_segment, BadRecord};
use super::recovery::list;
use super::snapshot;

type R = Result<(), Box<dyn std::error::Error>>;

/// One line per snapshot and per log segment, with their state.
pub fn summary(dir: &Path, out: &mut impl Write) -> R {
    let listing = list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    writeln!(out, "data directory {}", dir.display())?;
    if listing.snapshots.is_empty() && listing.segments.is_empty() {
        writeln!(out, "  no snapshot and no log: no state stored yet")?;
    }
    for (_, path) in &listing.snapshots {
        let name = file_name(path);
        match snapshot::inspect(path) {
            Ok((h, info)) => writeln!(
                out,
                "  {name}: up to record {}, {} licenses, {} features, {} devices, {} other entities, {} bytes, next id {}, written at {}",
                h.lsn,
                info.licenses,
                info.features,
                info.devices,
                info.entities,
                info.bytes,
                h.seq,
                crate::engine::time::format_instant(h.created_ms)
            )?,
            Err(e) => writeln!(out, "  {name}: DAMAGED: {e}")?,
        }
    }
    for path in &listing.temporaries {
        writeln!(
            out,
            "  {}: unfinished snapshot (removed at the next start)",
            file_name(path)
        )?;
    }
    let n = listing.segments.len();
    for (i, (_, path)) in listing.segments.iter().enumerate() {
        let name = file_name(path);
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match scan_segment(&bytes) {
            Ok(scan) => {
                let range = match (scan.records.first(), scan.records.last()) {
                    (Some(a), Some(b)) => format!("records {} to {}", a.lsn, b.lsn),
                    _ => "no records".to_string(),
                };
                write!(
                    out,
                    "  {name}: {range} ({} records, {} bytes)",
                    scan.records.len(),
                    bytes.len()
                )?;
                match scan.bad {
                    None => writeln!(out)?,
                    Some((off, BadRecord::Unwritten, _)) if i + 1 == n => writeln!(
                        out,
                        "; zeros written ahead from offset {off} (cut at the next start)"
                    )?,
                    Some((off, why, valid_after)) if i + 1 == n && !valid_after => writeln!(
                        out,
                        "; torn tail at offset {off} ({why}): cut off at the next start"
                    )?,
                    Some((off, why, _)) => writeln!(
                        out,
                        "; DAMAGED at offset {off} ({why}) before the end: the server refuses to start without --truncate-corrupt-log"
                    )?,
                }
            }
            Err(why) => writeln!(out, "  {name}: DAMAGED header: {why}")?,
        }
    }
    Ok(())
}

/// The log's records from `from`, at most `limit`, as JSON lines:
/// `{"lsn": N, "file": "...", "offset": O, "command": {...}}`.
pub fn records(dir: &Path, from: u64, limit: u64, out: &mut impl Write) -> R {
    let listing = list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut printed = 0u64;
    for (_, path) in &listing.segments {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Ok(scan) = scan_segment(&bytes) else {
            continue;
        };
        let mut offset = super::record::SEGMENT_HEADER_BYTES;
        for r in &scan.records {
            let at = offset;
            offset = r.end;
            if r.lsn < from {
                continue;
            }
            if printed >= limit {
                return Ok(());
            }
            let command: serde_json::Value =
                serde_json::from_slice(r.json).unwrap_or(serde_json::Value::Null);
            let mut line = serde_json::json!({"lsn": r.lsn, "file": file_name(path), "offset": at, "command": command});
            if !r.origin.is_empty() {
                line["origin"] =
                    serde_json::from_slice(r.origin).unwrap_or(serde_json::Value::Null);
            }
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
            printed += 1;
        }
    }
    Ok(())
}

/// The ledger (`storage::ledger`), one entry per line as stored: `{"seq",
/// "lsn", "index", "origin"?, "idempotency_key"?, "entry": {...}}`.
pub fn ledger(dir: &Path, out: &mut impl Write) -> R {
    let mut after = 0;
    loop {
        let (entries, next) = super::ledger::read(dir, after, 10_000, |_| true)?;
        for e in &entries {
            serde_json::to_writer(&mut *out, e)?;
            writeln!(out)?;
        }
        match next {
            Some(n) => after = n,
            None => return Ok(()),
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
