//! The data directory: the write-ahead log and snapshots that make the
//! engine's state durable, and the server's own secrets (response-signing
//! key, admin token).
//!
//! - [`wal`]: the log (commit lock, group commit, fsync modes, latch);
//! - [`record`]: the log's file format;
//! - [`snapshot`]: snapshot files;
//! - [`recovery`]: rebuilding state from a directory (and pruning it);
//! - [`store`]: a data directory in use: lock, recovery, log, snapshots;
//! - [`disk`]: the file operations under the log (a trait, for fault injection);
//! - [`fixtures`]: named copies of the whole state, and restoring one (a
//!   logged command whose state is a file beside the log).

pub mod disk;
pub mod fixtures;
pub mod inspect;
pub mod ledger;
pub mod record;
pub mod recovery;
pub mod snapshot;
pub mod store;
pub mod wal;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;

use crate::signing::RSA_KEY_BITS;

#[derive(Debug)]
pub enum StorageError {
    Io(PathBuf, std::io::Error),
    BadKey(PathBuf, String),
    /// A settings file (`rate_limits.json`) that does not parse.
    BadFile(PathBuf, String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StorageError::BadKey(p, e) => write!(f, "{}: not a valid key file: {e}", p.display()),
            StorageError::BadFile(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for StorageError {}

pub const SIGNING_KEY_FILE: &str = "signing_key.pem";
pub const ADMIN_TOKEN_FILE: &str = "admin_token";
/// The offline tokens' Ed25519 keys (JSON list of `tokens::TokenKeyRecord`).
pub const TOKEN_KEYS_FILE: &str = "token_keys.json";

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io(p.to_path_buf(), e)
}

/// Writes `value` as JSON to `path`, as [`write_private`] does.
fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StorageError> {
    write_private(path, &serde_json::to_vec_pretty(value).unwrap_or_default())
}

/// Writes the secret file `name` (one of the key and token files above)
/// in `dir`, as [`write_private`] does: a cluster node adopting the
/// cluster's keys.
pub fn write_secret_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    write_private(&dir.join(name), bytes)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

pub fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(io(dir))
}

/// The response-signing key, created at first start. Returns the key and whether it was created.
pub fn load_or_create_signing_key(dir: &Path) -> Result<(RsaPrivateKey, bool), StorageError> {
    let path = dir.join(SIGNING_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(pem) => RsaPrivateKey::from_pkcs8_pem(&pem)
            .map(|k| (k, false))
            .map_err(|e| StorageError::BadKey(path.clone(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = RsaPrivateKey::new(&mut rand::thread_rng(), RSA_KEY_BITS)
                .map_err(|e| StorageError::BadKey(path.clone(), e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| StorageError::BadKey(path.clone(), e.to_string()))?;
            write_private(&path, pem.as_bytes())?;
            Ok((key, true))
        }
        Err(e) => Err(StorageError::Io(path, e)),
    }
}

/// The admin token: `from_env` if given (and then not stored), else the stored one,
/// else a new random one, stored. Returns the token and whether it was generated.
pub fn load_or_create_admin_token(
    dir: &Path,
    from_env: Option<String>,
) -> Result<(String, bool), StorageError> {
    if let Some(t) = from_env.filter(|t| !t.is_empty()) {
        return Ok((t, false));
    }
    let path = dir.join(ADMIN_TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok((t.trim().to_string(), false)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io(path, e)),
        _ => {
            let token = crate::util::random_token(32);
            write_private(&path, token.as_bytes())?;
            Ok((token, true))
        }
    }
}

/// The offline tokens' signing keys, a first one created at first start.
/// Returns them and whether they were created.
pub fn load_or_create_token_keys(
    dir: &Path,
    now: crate::engine::time::Millis,
) -> Result<(Vec<crate::tokens::TokenKeyRecord>, bool), StorageError> {
    let path = dir.join(TOKEN_KEYS_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(|k| (k, false))
            .map_err(|e| StorageError::BadKey(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = vec![crate::tokens::TokenKeyRecord::generate(now)];
            save_token_keys(dir, &keys)?;
            Ok((keys, true))
        }
        Err(e) => Err(StorageError::Io(path, e)),
    }
}

/// Stores the offline tokens' keys (after a rotation), atomically.
pub fn save_token_keys(
    dir: &Path,
    keys: &[crate::tokens::TokenKeyRecord],
) -> Result<(), StorageError> {
    write_json(&dir.join(TOKEN_KEYS_FILE), keys)
}

/// The tenants' rate-limit overrides (`PUT /admin/v1/tenants/{id}/rate-limits`),
/// a JSON list of `ratelimit::Override`: harness settings, not engine
/// state, so kept beside the log rather than in it.
pub const RATE_LIMITS_FILE: &str = "rate_limits.json";

/// Stores every override, replacing the file atomically.
pub fn save_rate_limits(
    dir: &Path,
    overrides: &[crate::ratelimit::Override],
) -> Result<(), StorageError> {
    write_json(&dir.join(RATE_LIMITS_FILE), overrides)
}

/// The stored overrides (none when the file does not exist).
pub fn load_rate_limits(dir: &Path) -> Result<Vec<crate::ratelimit::Override>, StorageError> {
    let path = dir.join(RATE_LIMITS_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| StorageError::BadFile(path, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StorageError::Io(path, e)),
    }
}

/// Where a test clock stood (`--clock virtual`), in the data directory.
pub const VIRTUAL_CLOCK_FILE: &str = "virtual_clock";

/// Stores the test clock's time (ms), replacing the file atomically.
pub fn save_virtual_clock(dir: &Path, now: crate::engine::time::Millis) -> std::io::Result<()> {
    let tmp = dir.join(format!("{VIRTUAL_CLOCK_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(now.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(VIRTUAL_CLOCK_FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// The test clock's stored time, if any.
pub fn load_virtual_clock(dir: &Path) -> Option<crate::engine::time::Millis> {
    std::fs::read_to_string(dir.join(VIRTUAL_CLOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}
