//! Snapshots: the engine's whole state at one log position.
//!
//! File `snapshot-<lsn, 20 digits>.snap`: the magic `TALLYSNP`, then frames
//!
//! ```text
//! len u32 LE | crc32c(kind ++ body) u32 LE | kind u8 | body (len - 1 bytes)
//! ```
//!
//! in this order: one header (JSON: format, lsn, seq, created, counts), the
//! small entities (JSON, parents first), then licenses (postcard), each
//! preceded by the first use of a license or feature spec (JSON, numbered in
//! order of appearance), and an end frame (JSON: the number of frames before
//! it). A snapshot without its end frame, or with any bad frame, is not used.
//!
//! Written to `snapshot-<lsn>.tmp`, synced, renamed, and the directory synced:
//! a crash at any point leaves either the old snapshot or the new one whole.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crc32c::{crc32c, crc32c_append};
use serde::{Deserialize, Serialize};

use crate::engine::image::{FeatureImage, Image, LicenseImage, MeterImage};
use crate::engine::lease::Lease;
use crate::engine::model::*;
use crate::engine::qlik::QlikImage;
use crate::engine::time::Millis;
use crate::engine::Engine;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TALLYSNP";
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Largest frame, bytes (a license with 100,000 devices stays far below).
pub const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;

const KIND_HEADER: u8 = 1;
const KIND_ENTITY: u8 = 2;
const KIND_LICENSE_SPEC: u8 = 3;
const KIND_FEATURE_SPEC: u8 = 4;
const KIND_LICENSE: u8 = 5;
const KIND_END: u8 = 6;

pub fn snapshot_name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub format: u32,
    /// Every log record up to this one is in the snapshot; none after it.
    pub lsn: u64,
    /// The engine's id sequence.
    pub seq: u64,
    pub created_ms: Millis,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub lsn: u64,
    pub bytes: u64,
    pub entities: u64,
    pub licenses: u64,
    pub features: u64,
    pub devices: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entity {
    Tenant {
        id: Id,
        spec: TenantSpec,
    },
    ApiKey {
        spec: ApiKeySpec,
    },
    Product {
        id: Id,
        spec: ProductSpec,
    },
    Customer {
        id: Id,
        spec: CustomerSpec,
    },
    User {
        id: Id,
        spec: UserSpec,
    },
    Qlik {
        image: Box<QlikImage>,
    },
    Yext {
        image: Box<crate::engine::yext::YextImage>,
    },
    Infa {
        image: Box<crate::engine::infa::InfaImage>,
    },
    /// Reservations and idempotency records; restored after the licenses.
    Native {
        image: Box<crate::engine::native::NativeImage>,
    },
    /// Webhook subscriptions and their outbox.
    Webhooks {
        image: Box<crate::engine::webhook::WebhookImage>,
    },
}

#[derive(Serialize, Deserialize)]
struct LicenseRec {
    id: Id,
    key: Option<String>,
    spec: u32,
    activations_used: u64,
    devices: Vec<Device>,
    vacated: Vec<String>,
    transfer_count: u32,
    leases: Vec<Lease>,
    used: i64,
    next_reset: Millis,
    features: Vec<FeatureRec>,
}

#[derive(Serialize, Deserialize)]
struct FeatureRec {
    id: Id,
    spec: u32,
    used: i64,
    next_reset: Millis,
    leases: Vec<Lease>,
}

#[derive(Debug)]
pub enum SnapshotError {
    Io(PathBuf, std::io::Error),
    /// The file is not a whole, valid snapshot (what is wrong, at which offset).
    Corrupt(PathBuf, u64, String),
    /// The engine refused an entity of a valid file.
    Restore(PathBuf, String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            SnapshotError::Corrupt(p, off, why) => {
                write!(f, "{} at offset {off}: {why}", p.display())
            }
            SnapshotError::Restore(p, why) => write!(f, "{}: cannot restore: {why}", p.display()),
        }
    }
}

impl std::error::Error for SnapshotError {}

struct FrameWriter<W: Write> {
    out: W,
    frames: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    fn frame(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        let len = body.len() + 1;
        if len > FRAME_BYTES_MAX {
            return Err(std::io::Error::other("snapshot frame over the size limit"));
        }
        let crc = crc32c_append(crc32c(&[kind]), body);
        self.out.write_all(&(len as u32).to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&[kind])?;
        self.out.write_all(body)?;
        self.frames += 1;
        self.bytes += 8 + len as u64;
        Ok(())
    }

    fn json(&mut self, kind: u8, v: &impl Serialize) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        serde_json::to_writer(&mut buf, v).map_err(std::io::Error::other)?;
        let r = self.frame(kind, &buf);
        self.buf = buf;
        r
    }
}

/// Spec tables of one snapshot being written: each distinct spec (by `Arc`
/// identity) gets the next number when first met. The `Arc`s are kept so an
/// address is never reused for another spec while the table lives.
struct SpecTable<T> {
    index: HashMap<*const T, u32>,
    keep: Vec<Arc<T>>,
}

impl<T> SpecTable<T> {
    fn new() -> Self {
        SpecTable {
            index: HashMap::new(),
            keep: Vec::new(),
        }
    }
    /// The spec's number, and whether it is new.
    fn number(&mut self, spec: &Arc<T>) -> (u32, bool) {
        let ptr = Arc::as_ptr(spec);
        if let Some(n) = self.index.get(&ptr) {
            return (*n, false);
        }
        let n = self.keep.len() as u32;
        self.index.insert(ptr, n);
        self.keep.push(spec.clone());
        (n, true)
    }
}

/// Writes the engine (which no one may change meanwhile) as the snapshot at
/// `lsn` into `dir`, atomically. Returns what it wrote.
pub fn write(
    dir: &Path,
    engine: &Engine,
    lsn: u64,
    now: Millis,
) -> Result<SnapshotInfo, SnapshotError> {
    write_to(&dir.join(snapshot_name(lsn)), engine, lsn, now)
}

/// [`write`] to `path` (a state fixture's file, see `storage::fixtures`),
/// atomically in the same way; its directory must exist.
#[allow(
    clippy::too_many_lines,
    reason = "one pass writing the frames in file order"
)]
pub fn write_to(
    path: &Path,
    engine: &Engine,
    lsn: u64,
    now: Millis,
) -> Result<SnapshotInfo, SnapshotError> {
    let path = path.to_path_buf();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| SnapshotError::Io(p, e)
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let mut w = FrameWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        frames: 0,
        bytes: SNAPSHOT_MAGIC.len() as u64,
        buf: Vec::with_capacity(4096),
    };
    let mut info = SnapshotInfo {
        lsn,
        ..Default::default()
    };
    let result = (|| -> std::io::Result<()> {
        w.out.write_all(SNAPSHOT_MAGIC)?;
        w.json(
            KIND_HEADER,
            &SnapshotHeader {
                format: SNAPSHOT_FORMAT,
                lsn,
                seq: engine.seq(),
                created_ms: now,
            },
        )?;
        let mut lspecs: SpecTable<LicenseSpec> = SpecTable::new();
        let mut fspecs: SpecTable<FeatureSpec> = SpecTable::new();
        let mut rec_buf: Vec<u8> = Vec::with_capacity(1024);
        engine.export(|image| -> std::io::Result<()> {
            let entity = match image {
                Image::Tenant { id, spec } => Entity::Tenant { id, spec },
                Image::ApiKey { spec } => Entity::ApiKey { spec },
                Image::Product { id, spec } => Entity::Product { id, spec },
                Image::Customer { id, spec } => Entity::Customer { id, spec },
                Image::User { id, spec } => Entity::User { id, spec },
                Image::Qlik(image) => Entity::Qlik { image },
                Image::Yext(image) => Entity::Yext { image },
                Image::Infa(image) => Entity::Infa { image },
                Image::Native(image) => Entity::Native { image },
                Image::Webhooks(image) => Entity::Webhooks { image },
                Image::License(l) => {
                    let (spec, new) = lspecs.number(&l.spec);
                    if new {
                        w.json(KIND_LICENSE_SPEC, &*l.spec)?;
                    }
                    let mut features = Vec::with_capacity(l.features.len());
                    for f in l.features {
                        let (fspec, new) = fspecs.number(&f.spec);
                        if new {
                            w.json(KIND_FEATURE_SPEC, &*f.spec)?;
                        }
                        features.push(FeatureRec {
                            id: f.id,
                            spec: fspec,
                            used: f.meter.used,
                            next_reset: f.meter.next_reset,
                            leases: f.leases,
                        });
                    }
                    info.licenses += 1;
                    info.features += features.len() as u64;
                    info.devices += l.devices.len() as u64;
                    let rec = LicenseRec {
                        id: l.id,
                        key: l.license_key,
                        spec,
                        activations_used: l.activations_used,
                        devices: l.devices,
                        vacated: l.vacated,
                        transfer_count: l.transfer_count,
                        leases: l.leases,
                        used: l.consumption.used,
                        next_reset: l.consumption.next_reset,
                        features,
                    };
                    rec_buf.clear();
                    rec_buf = postcard::to_extend(&rec, std::mem::take(&mut rec_buf))
                        .map_err(std::io::Error::other)?;
                    return w.frame(KIND_LICENSE, &rec_buf);
                }
            };
            info.entities += 1;
            w.json(KIND_ENTITY, &entity)
        })?;
        let frames = w.frames;
        w.json(KIND_END, &serde_json::json!({ "frames": frames }))?;
        w.out.flush()?;
        w.out.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(SnapshotError::Io(tmp, e));
    }
    info.bytes = w.bytes;
    drop(w);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    super::disk::sync_dir(dir).map_err(io(dir))?;
    Ok(info)
}

/// One frame read back.
struct Frame<'a> {
    kind: u8,
    body: &'a [u8],
    offset: usize,
}

/// Checks a whole snapshot file and returns its frames (the end frame
/// excluded), or where it is damaged.
fn frames<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<Frame<'a>>, SnapshotError> {
    let bad = |off: usize, why: &str| SnapshotError::Corrupt(path.into(), off as u64, why.into());
    if bytes.len() < SNAPSHOT_MAGIC.len() || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad(0, "not a tally snapshot (bad magic)"));
    }
    let mut out = Vec::new();
    let mut off = SNAPSHOT_MAGIC.len();
    loop {
        let Some(head) = bytes.get(off..off + 8) else {
            return Err(bad(off, "cut short before its end frame"));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > FRAME_BYTES_MAX {
            return Err(bad(off, "impossible frame length"));
        }
        let Some(data) = bytes.get(off + 8..off + 8 + len) else {
            return Err(bad(off, "frame cut short"));
        };
        if crc32c(data) != crc {
            return Err(bad(off, "frame checksum mismatch"));
        }
        let frame = Frame {
            kind: data[0],
            body: &data[1..],
            offset: off,
        };
        off += 8 + len;
        if frame.kind == KIND_END {
            #[derive(Deserialize)]
            struct End {
                frames: u64,
            }
            let end: End = serde_json::from_slice(frame.body)
                .map_err(|e| bad(frame.offset, &format!("end frame: {e}")))?;
            if end.frames != out.len() as u64 {
                return Err(bad(frame.offset, "frame count does not match"));
            }
            if off != bytes.len() {
                return Err(bad(off, "bytes after the end frame"));
            }
            return Ok(out);
        }
        out.push(frame);
    }
}

/// Threads that restore licenses at most.
pub const RESTORE_THREADS_MAX: usize = 8;

enum Restore {
    Corrupt(String),
    Refused(String),
}

/// Decodes one license frame and builds the license; returns its feature and
/// device counts.
fn restore_license(
    engine: &Engine,
    f: &Frame<'_>,
    lspecs: &[Arc<LicenseSpec>],
    fspecs: &[Arc<FeatureSpec>],
    now: Millis,
) -> Result<(u64, u64), Restore> {
    let rec: LicenseRec =
        postcard::from_bytes(f.body).map_err(|e| Restore::Corrupt(e.to_string()))?;
    let spec = lspecs
        .get(rec.spec as usize)
        .cloned()
        .ok_or_else(|| Restore::Corrupt("unknown license spec number".into()))?;
    let mut features = Vec::with_capacity(rec.features.len());
    for fr in rec.features {
        let fspec = fspecs
            .get(fr.spec as usize)
            .cloned()
            .ok_or_else(|| Restore::Corrupt("unknown feature spec number".into()))?;
        features.push(FeatureImage {
            id: fr.id,
            spec: fspec,
            meter: MeterImage {
                used: fr.used,
                next_reset: fr.next_reset,
            },
            leases: fr.leases,
        });
    }
    let counts = (features.len() as u64, rec.devices.len() as u64);
    engine
        .restore(
            Image::License(LicenseImage {
                id: rec.id,
                license_key: rec.key,
                spec,
                activations_used: rec.activations_used,
                devices: rec.devices,
                vacated: rec.vacated,
                transfer_count: rec.transfer_count,
                leases: rec.leases,
                consumption: MeterImage {
                    used: rec.used,
                    next_reset: rec.next_reset,
                },
                features,
            }),
            now,
        )
        .map_err(|e| Restore::Refused(e.to_string()))?;
    Ok(counts)
}

/// Reads a snapshot file, checks all of it, and hands its frames (header
/// first) with the header and a size-only summary to `then`.
fn checked<T>(
    path: &Path,
    then: impl FnOnce(&[Frame<'_>], SnapshotHeader, SnapshotInfo) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let bytes = fs::read(path).map_err(|e| SnapshotError::Io(path.into(), e))?;
    let frames = frames(path, &bytes)?;
    let header = header(path, &frames)?;
    let info = SnapshotInfo {
        lsn: header.lsn,
        bytes: bytes.len() as u64,
        ..Default::default()
    };
    then(&frames, header, info)
}

/// Counts what a snapshot holds after checking the whole file.
pub fn inspect(path: &Path) -> Result<(SnapshotHeader, SnapshotInfo), SnapshotError> {
    checked(path, |frames, header, mut info| {
        for f in &frames[1..] {
            match f.kind {
                KIND_ENTITY => info.entities += 1,
                KIND_LICENSE => {
                    let rec: LicenseRec = postcard::from_bytes(f.body).map_err(|e| {
                        SnapshotError::Corrupt(path.into(), f.offset as u64, e.to_string())
                    })?;
                    info.licenses += 1;
                    info.features += rec.features.len() as u64;
                    info.devices += rec.devices.len() as u64;
                }
                _ => {}
            }
        }
        Ok((header, info))
    })
}

fn header(path: &Path, frames: &[Frame<'_>]) -> Result<SnapshotHeader, SnapshotError> {
    let first = frames
        .first()
        .filter(|f| f.kind == KIND_HEADER)
        .ok_or_else(|| SnapshotError::Corrupt(path.into(), 8, "no header frame".into()))?;
    let h: SnapshotHeader = serde_json::from_slice(first.body)
        .map_err(|e| SnapshotError::Corrupt(path.into(), first.offset as u64, e.to_string()))?;
    if h.format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::Corrupt(
            path.into(),
            first.offset as u64,
            format!("unknown snapshot format {}", h.format),
        ));
    }
    Ok(h)
}

/// Loads the snapshot at `path` into `engine`, which must be empty. The whole
/// file is checked before anything is restored, so a damaged file leaves the
/// engine untouched.
pub fn load(
    path: &Path,
    engine: &Engine,
    now: Millis,
) -> Result<(SnapshotHeader, SnapshotInfo), SnapshotError> {
    checked(path, |frames, header, info| {
        restore_all(path, engine, now, frames, header, info)
    })
}

/// [`load`] from a file's bytes already read (`path` names it in errors):
/// a restore checks a fixture into a scratch engine, then loads the same
/// bytes into the live one, so the two cannot differ.
pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    engine: &Engine,
    now: Millis,
) -> Result<(SnapshotHeader, SnapshotInfo), SnapshotError> {
    let frames = frames(path, bytes)?;
    let header = header(path, &frames)?;
    let info = SnapshotInfo {
        lsn: header.lsn,
        bytes: bytes.len() as u64,
        ..Default::default()
    };
    restore_all(path, engine, now, &frames, header, info)
}

#[allow(
    clippy::too_many_lines,
    reason = "the frames in file order, the licenses in parallel, then the native state"
)]
fn restore_all(
    path: &Path,
    engine: &Engine,
    now: Millis,
    frames: &[Frame<'_>],
    header: SnapshotHeader,
    mut info: SnapshotInfo,
) -> Result<(SnapshotHeader, SnapshotInfo), SnapshotError> {
    let corrupt =
        |f: &Frame<'_>, why: String| SnapshotError::Corrupt(path.into(), f.offset as u64, why);
    let refused = |f: &Frame<'_>, why: String| {
        SnapshotError::Restore(path.into(), format!("frame at offset {}: {why}", f.offset))
    };
    // First the small entities and the spec tables, in file order; then the
    // licenses, spread over the cores (the engine's maps are concurrent and
    // licenses do not depend on each other).
    let mut lspecs: Vec<Arc<LicenseSpec>> = Vec::new();
    let mut fspecs: Vec<Arc<FeatureSpec>> = Vec::new();
    let mut licenses: Vec<&Frame<'_>> = Vec::new();
    let mut native: Option<(&Frame<'_>, Image)> = None;
    for f in &frames[1..] {
        match f.kind {
            KIND_ENTITY => {
                let e: Entity =
                    serde_json::from_slice(f.body).map_err(|e| corrupt(f, e.to_string()))?;
                let image = match e {
                    Entity::Tenant { id, spec } => Image::Tenant { id, spec },
                    Entity::ApiKey { spec } => Image::ApiKey { spec },
                    Entity::Product { id, spec } => Image::Product { id, spec },
                    Entity::Customer { id, spec } => Image::Customer { id, spec },
                    Entity::User { id, spec } => Image::User { id, spec },
                    Entity::Qlik { image } => Image::Qlik(image),
                    Entity::Yext { image } => Image::Yext(image),
                    Entity::Infa { image } => Image::Infa(image),
                    Entity::Webhooks { image } => Image::Webhooks(image),
                    Entity::Native { image } => {
                        native = Some((f, Image::Native(image)));
                        continue;
                    }
                };
                engine
                    .restore(image, now)
                    .map_err(|e| refused(f, e.to_string()))?;
                info.entities += 1;
            }
            KIND_LICENSE_SPEC => {
                let spec: LicenseSpec =
                    serde_json::from_slice(f.body).map_err(|e| corrupt(f, e.to_string()))?;
                lspecs.push(
                    engine
                        .share_license_spec_checked(&spec)
                        .map_err(|e| refused(f, e.to_string()))?,
                );
            }
            KIND_FEATURE_SPEC => {
                let spec: FeatureSpec =
                    serde_json::from_slice(f.body).map_err(|e| corrupt(f, e.to_string()))?;
                fspecs.push(
                    engine
                        .share_feature_spec(&spec)
                        .map_err(|e| refused(f, e.to_string()))?,
                );
            }
            KIND_LICENSE => licenses.push(f),
            KIND_HEADER => return Err(corrupt(f, "a second header".into())),
            other => return Err(corrupt(f, format!("unknown frame kind {other}"))),
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, RESTORE_THREADS_MAX);
    let chunk = licenses.len().div_ceil(threads).max(1);
    let results: Vec<Result<(u64, u64, u64), SnapshotError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = licenses
            .chunks(chunk)
            .map(|part| {
                let (lspecs, fspecs) = (&lspecs, &fspecs);
                scope.spawn(move || -> Result<(u64, u64, u64), SnapshotError> {
                    let mut counts = (0u64, 0u64, 0u64);
                    for f in part {
                        let (features, devices) = restore_license(engine, f, lspecs, fspecs, now)
                            .map_err(|e| match e {
                            Restore::Corrupt(why) => corrupt(f, why),
                            Restore::Refused(why) => refused(f, why),
                        })?;
                        counts.0 += 1;
                        counts.1 += features;
                        counts.2 += devices;
                    }
                    Ok(counts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SnapshotError::Restore(
                        path.into(),
                        "restore thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    for r in results {
        let (l, f, d) = r?;
        info.licenses += l;
        info.features += f;
        info.devices += d;
    }
    if let Some((f, image)) = native {
        engine
            .restore(image, now)
            .map_err(|e| refused(f, e.to_string()))?;
        info.entities += 1;
    }
    engine.finish_restore();
    engine.restore_seq(header.seq);
    Ok((header, info))
}
