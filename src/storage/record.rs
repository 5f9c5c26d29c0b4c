//! The log's on-disk format.
//!
//! A segment file `wal-<first lsn, 20 digits>.log` starts with a header:
//!
//! ```text
//! "TALLYWAL" | format u32 LE | first lsn u64 LE | crc32c of the 20 bytes before, u32 LE
//! ```
//!
//! followed by records:
//!
//! ```text
//! len u32 LE | crc32c(len bytes ++ payload) u32 LE | payload (len bytes)
//! payload = version u8 | lsn u64 LE | version 1: the command as JSON
//!                                    | version 2: origin length u16 LE | origin (JSON) | the command as JSON
//! ```
//!
//! The origin (version 2) says who made the change: the surface, the
//! request's id and the actor (an API key's id, `admin`, a user), as the
//! app layer wrote it; a change the server made itself (a sweep, a catalog)
//! is a version 1 record.
//!
//! Records are numbered by a log sequence number (lsn) that rises by one per
//! record across segments, so a gap or a repeat is detected on replay.

use crc32c::{crc32c, crc32c_append};

use crate::engine::Command;

pub const SEGMENT_MAGIC: &[u8; 8] = b"TALLYWAL";
pub const SEGMENT_FORMAT: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 24;
pub const RECORD_HEADER_BYTES: usize = 8;
/// Payload format: a JSON-encoded [`Command`].
pub const PAYLOAD_JSON_V1: u8 = 1;
/// Payload format: an origin, then a JSON-encoded [`Command`].
pub const PAYLOAD_JSON_V2: u8 = 2;
/// Largest origin a record carries, bytes (a request id of at most 128
/// bytes, a surface and an actor); a longer one is left out.
pub const ORIGIN_BYTES_MAX: usize = 1024;
/// Largest record payload, bytes. A command is bounded by the request body
/// limit (1 MiB) plus what the server adds; anything longer is corruption.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 8 * 1024 * 1024;

pub fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

/// The first lsn a segment file name promises, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

pub fn segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first lsn of a segment from its header, or why the header is bad.
pub fn read_segment_header(bytes: &[u8]) -> Result<u64, &'static str> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err("segment header is cut short");
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err("not a tally log segment (bad magic)");
    }
    let crc = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    if crc32c(&bytes[..20]) != crc {
        return Err("segment header checksum mismatch");
    }
    let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if format != SEGMENT_FORMAT {
        return Err("unknown segment format");
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[12..20]);
    Ok(u64::from_le_bytes(lsn))
}

/// Appends one record for `cmd` to `buf`, with `origin` (JSON; a version 1
/// record when empty or over [`ORIGIN_BYTES_MAX`]). On error `buf` is left
/// as it was.
pub fn append_record(
    buf: &mut Vec<u8>,
    lsn: u64,
    origin: &[u8],
    cmd: &Command<'_>,
) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    if origin.is_empty() || origin.len() > ORIGIN_BYTES_MAX {
        buf.push(PAYLOAD_JSON_V1);
        buf.extend_from_slice(&lsn.to_le_bytes());
    } else {
        buf.push(PAYLOAD_JSON_V2);
        buf.extend_from_slice(&lsn.to_le_bytes());
        buf.extend_from_slice(&(origin.len() as u16).to_le_bytes());
        buf.extend_from_slice(origin);
    }
    if let Err(e) = serde_json::to_writer(&mut *buf, cmd) {
        buf.truncate(start);
        return Err(e.to_string());
    }
    let len = buf.len() - start - RECORD_HEADER_BYTES;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        buf.truncate(start);
        return Err(format!("record of {len} bytes is over the limit"));
    }
    let len_bytes = (len as u32).to_le_bytes();
    let crc = crc32c_append(crc32c(&len_bytes), &buf[start + RECORD_HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends a record whose command JSON is `json` as given (the fuzz targets
/// frame arbitrary payloads with it); truncated to the payload limit.
pub fn append_raw_record(buf: &mut Vec<u8>, lsn: u64, json: &[u8]) {
    let json = &json[..json.len().min(RECORD_PAYLOAD_BYTES_MAX - 9)];
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    buf.push(PAYLOAD_JSON_V1);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(json);
    let len = buf.len() - start - RECORD_HEADER_BYTES;
    let len_bytes = (len as u32).to_le_bytes();
    let crc = crc32c_append(crc32c(&len_bytes), &buf[start + RECORD_HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes checksummed at most while looking past a bad record for a valid
/// one (each later offset costs a checksum over its claimed length); past
/// this the bad record counts as corruption, which refuses to start unless
/// told to truncate: the conservative answer.
pub const SCAN_AFTER_BAD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One record read back: its lsn, its origin (empty in version 1), its
/// command's JSON and where the next begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub lsn: u64,
    pub origin: &'a [u8],
    pub json: &'a [u8],
    pub end: usize,
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// Fewer bytes remain than the record needs: a write cut short.
    Short,
    /// The length field is impossible.
    Length,
    /// Checksum mismatch: torn or flipped bytes.
    Checksum,
    /// Checksum fine, payload version unknown.
    Version,
    /// Only zeros from here to the end: space the log wrote ahead of its
    /// records (the end of the records, in the last segment).
    Unwritten,
    /// A whole page of zeros before the next valid record: a page of the
    /// space written ahead that a power cut kept from reaching the disk
    /// while a later one did (records past it were never synced).
    Gap,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadRecord::Short => "record cut short",
            BadRecord::Length => "impossible record length",
            BadRecord::Checksum => "record checksum mismatch",
            BadRecord::Version => "unknown record version",
            BadRecord::Unwritten => "space written ahead, no record",
            BadRecord::Gap => "an unwritten page before later records",
        })
    }
}

/// Reads the record at `off` in `bytes`.
pub fn read_record(bytes: &[u8], off: usize) -> Result<RawRecord<'_>, BadRecord> {
    let rest = bytes.get(off..).unwrap_or_default();
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(BadRecord::Short);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if !(9..=RECORD_PAYLOAD_BYTES_MAX).contains(&len) {
        return Err(BadRecord::Length);
    }
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Err(BadRecord::Short);
    };
    if crc32c_append(crc32c(&rest[..4]), payload) != crc {
        return Err(BadRecord::Checksum);
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&payload[1..9]);
    let (origin, json) = match payload[0] {
        PAYLOAD_JSON_V1 => (&payload[..0], &payload[9..]),
        PAYLOAD_JSON_V2 => {
            let n = payload
                .get(9..11)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or(BadRecord::Length)?;
            if n > ORIGIN_BYTES_MAX {
                return Err(BadRecord::Length);
            }
            let origin = payload.get(11..11 + n).ok_or(BadRecord::Length)?;
            (origin, &payload[11 + n..])
        }
        _ => return Err(BadRecord::Version),
    };
    Ok(RawRecord {
        lsn: u64::from_le_bytes(lsn),
        origin,
        json,
        end: off + RECORD_HEADER_BYTES + len,
    })
}

/// A segment's records up to the first bad one.
#[derive(Debug)]
pub struct Scan<'a> {
    pub first_lsn: u64,
    pub records: Vec<RawRecord<'a>>,
    /// Where reading stopped short of the end, why, and whether any valid
    /// record follows (then it is corruption, not a torn tail).
    pub bad: Option<(usize, BadRecord, bool)>,
}

/// Reads a whole segment. A bad header is an error; a bad record ends the
/// scan, and the bytes after it are searched for a valid record to tell a
/// torn tail (nothing valid follows) from corruption before the end.
pub fn scan_segment(bytes: &[u8]) -> Result<Scan<'_>, &'static str> {
    let first_lsn = read_segment_header(bytes)?;
    let mut records = Vec::new();
    let mut off = SEGMENT_HEADER_BYTES;
    let mut bad = None;
    while off < bytes.len() {
        match read_record(bytes, off) {
            Ok(r) => {
                off = r.end;
                records.push(r);
            }
            Err(_) if bytes[off..].iter().all(|b| *b == 0) => {
                bad = Some((off, BadRecord::Unwritten, false));
                break;
            }
            Err(why) => {
                bad = Some(match valid_record_after(bytes, off + 1) {
                    Some(next) if zero_page_within(bytes, off, next) => {
                        (off, BadRecord::Gap, false)
                    }
                    next => (off, why, next.is_some()),
                });
                break;
            }
        }
    }
    Ok(Scan {
        first_lsn,
        records,
        bad,
    })
}

/// Where a valid record starts from `from` on, if anywhere; the offset
/// reached (taken for corruption) once [`SCAN_AFTER_BAD_BYTES_MAX`] bytes
/// were checksummed.
fn valid_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    let mut hashed = 0usize;
    for o in from..bytes.len() {
        let rest = &bytes[o..];
        if rest.len() >= RECORD_HEADER_BYTES {
            // read_record checksums only a length it could hold.
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if (9..=RECORD_PAYLOAD_BYTES_MAX).contains(&len)
                && len <= rest.len() - RECORD_HEADER_BYTES
            {
                hashed += len;
            }
        }
        if hashed > SCAN_AFTER_BAD_BYTES_MAX || read_record(bytes, o).is_ok() {
            return Some(o);
        }
    }
    None
}

/// The unit a write-back loses or keeps whole, bytes.
pub const PAGE_BYTES: usize = 4096;

/// Whether a whole page-aligned [`PAGE_BYTES`] of zeros lies in
/// `bytes[from..to]`: bit damage does not zero a page, a lost write of
/// space written ahead leaves one.
fn zero_page_within(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut page = from.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    while page + PAGE_BYTES <= to.min(bytes.len()) {
        if bytes[page..page + PAGE_BYTES].iter().all(|b| *b == 0) {
            return true;
        }
        page += PAGE_BYTES;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(n: i64) -> Command<'static> {
        Command::AddConsumption {
            license_id: 1,
            feature_id: Some(2),
            amount: n,
            now: 0,
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut seg = segment_header(7).to_vec();
        for i in 0..3 {
            append_record(&mut seg, 7 + i, b"", &cmd(i as i64)).expect("append");
        }
        let scan = scan_segment(&seg).expect("scan");
        assert_eq!(scan.first_lsn, 7);
        assert_eq!(
            scan.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert!(scan.bad.is_none());
        let back: Command = serde_json::from_slice(scan.records[1].json).expect("json");
        assert_eq!(back, cmd(1));

        // Cut inside the last record: a torn tail.
        let cut = &seg[..seg.len() - 3];
        let scan = scan_segment(cut).expect("scan");
        assert_eq!(scan.records.len(), 2);
        assert!(matches!(scan.bad, Some((_, BadRecord::Short, false))));

        // A flipped bit in the middle record: corruption with a valid record after it.
        let mut flipped = seg.clone();
        let mid = scan_segment(&seg).expect("scan").records[0].end + 12;
        flipped[mid] ^= 0x10;
        let scan = scan_segment(&flipped).expect("scan");
        assert_eq!(scan.records.len(), 1);
        assert!(matches!(scan.bad, Some((_, BadRecord::Checksum, true))));
    }

    /// Space written ahead: zeros to the end are the end of the records; a
    /// whole page of zeros before a later record is a page a power cut
    /// lost (the end too, reported); zeros short of a page before a later
    /// record are damage.
    #[test]
    fn zeros_end_the_records_and_a_zero_page_is_a_gap() {
        let mut seg = segment_header(1).to_vec();
        append_record(&mut seg, 1, b"", &cmd(1)).expect("append");
        let end = seg.len();
        let mut tail = seg.clone();
        tail.resize(3 * PAGE_BYTES, 0);
        let scan = scan_segment(&tail).expect("scan");
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.bad, Some((end, BadRecord::Unwritten, false)));
        // A lost page, then a record written after it.
        let mut gap = tail.clone();
        gap.truncate(2 * PAGE_BYTES);
        append_record(&mut gap, 2, b"", &cmd(2)).expect("append");
        let scan = scan_segment(&gap).expect("scan");
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.bad, Some((end, BadRecord::Gap, false)));
        // Zeros short of a whole page, then a record: damage.
        let mut short = seg.clone();
        short.resize(end + 100, 0);
        append_record(&mut short, 2, b"", &cmd(2)).expect("append");
        let scan = scan_segment(&short).expect("scan");
        assert!(matches!(scan.bad, Some((at, BadRecord::Length, true)) if at == end));
    }

    /// A version 2 record carries its origin beside the command; one with
    /// no origin (or one over the limit) is a version 1 record.
    #[test]
    fn origins_round_trip_in_version_2_records() {
        let mut seg = segment_header(1).to_vec();
        let origin = br#"{"surface":"native","request_id":"r-1","actor":"admin"}"#;
        append_record(&mut seg, 1, origin, &cmd(5)).expect("append");
        append_record(&mut seg, 2, b"", &cmd(6)).expect("append");
        append_record(&mut seg, 3, &[b'x'; ORIGIN_BYTES_MAX + 1], &cmd(7)).expect("append");
        let scan = scan_segment(&seg).expect("scan");
        assert!(scan.bad.is_none());
        let r = &scan.records;
        assert_eq!(
            (r[0].origin, r[1].origin, r[2].origin),
            (&origin[..], &b""[..], &b""[..])
        );
        let back: Command = serde_json::from_slice(r[0].json).expect("json");
        assert_eq!(back, cmd(5));
        assert_eq!(
            seg[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES],
            PAYLOAD_JSON_V2
        );
        // An origin length past the payload is refused, not read past.
        let mut bad = segment_header(1).to_vec();
        let start = bad.len();
        append_record(&mut bad, 1, origin, &cmd(5)).expect("append");
        let len_at = start + RECORD_HEADER_BYTES + 9;
        bad[len_at..len_at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        let payload_len = bad.len() - start - RECORD_HEADER_BYTES;
        let crc = crc32c_append(
            crc32c(&(payload_len as u32).to_le_bytes()),
            &bad[start + RECORD_HEADER_BYTES..],
        );
        bad[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(read_record(&bad, start), Err(BadRecord::Length));
    }

    #[test]
    fn segment_names_and_headers() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("wal-12.log"), None);
        let mut h = segment_header(5);
        assert_eq!(read_segment_header(&h), Ok(5));
        h[13] ^= 1;
        assert!(read_segment_header(&h).is_err());
    }
}
