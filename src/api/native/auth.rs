//! Who is calling: a tenant's API key (the admin API's keys, with their
//! roles), presented one of two ways.
//!
//! - **Bearer** (trusted networks): `Authorization: Bearer <api_key>`.
//! - **Signed** (the key's shared secret never travels, and a request cannot
//!   be altered or replayed): the headers
//!   `X-Tally-Key: <api_key>`, `X-Tally-Timestamp: <unix seconds>`,
//!   `X-Tally-Nonce: <8 to 128 of A-Z a-z 0-9 . _ ~ ->` and
//!   `X-Tally-Signature: <hex HMAC-SHA256(shared_key, string to sign)>`, where
//!   the string to sign is the five lines (joined by `\n`, no final newline)
//!   `METHOD`, the path with its query exactly as sent, the timestamp, the
//!   nonce, and the lowercase hex SHA-256 of the body (of nothing for no body).
//!   A timestamp more than [`SIGNATURE_SKEW_S_MAX`] off the server's clock, a
//!   wrong signature, or a nonce this key already used within the window is
//!   refused.

use std::collections::VecDeque;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use hyper::StatusCode;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::error::NativeError;
use crate::app::App;
use crate::credentials::constant_time_eq;
use crate::engine::model::{ApiKey, Id, Role};
use crate::engine::time::Millis;

/// Largest difference between a signed request's timestamp and the
/// server's clock, seconds.
pub const SIGNATURE_SKEW_S_MAX: i64 = 300;
/// Nonces remembered at once (each for twice the skew window); past it
/// signed requests are refused (503) until old ones age out.
pub const NONCES_MAX: usize = 2_000_000;
/// Length of a nonce, bytes.
pub const NONCE_BYTES_MIN: usize = 8;
pub const NONCE_BYTES_MAX: usize = 128;

pub const HEADER_KEY: &str = "x-tally-key";
pub const HEADER_TIMESTAMP: &str = "x-tally-timestamp";
pub const HEADER_NONCE: &str = "x-tally-nonce";
pub const HEADER_SIGNATURE: &str = "x-tally-signature";

/// The authenticated caller.
pub struct Caller {
    pub tenant_id: Id,
    pub key: Arc<ApiKey>,
    pub role: Role,
}

impl Caller {
    /// Refuses a change from a read-only key.
    pub fn may_write(&self) -> Result<(), NativeError> {
        if self.role.can_write() {
            return Ok(());
        }
        Err(NativeError::new(
            StatusCode::FORBIDDEN,
            "read_only_key",
            "This API key may only read",
        ))
    }
}

/// Nonces of signed requests seen within the window: (digest of key and
/// nonce) in a set, and in arrival order to forget them.
#[derive(Default)]
pub struct Nonces {
    inner: Mutex<NonceBook>,
}

#[derive(Default)]
struct NonceBook {
    seen: std::collections::HashSet<[u8; 16]>,
    order: VecDeque<(Millis, [u8; 16])>,
}

impl Nonces {
    /// Records a nonce; false if it was seen within the window.
    fn record(&self, id: [u8; 16], now: Millis) -> Result<bool, NativeError> {
        let mut book = self.inner.lock();
        let keep_ms = 2 * SIGNATURE_SKEW_S_MAX * 1000;
        while let Some(&(at, old)) = book.order.front() {
            if at + keep_ms > now {
                break;
            }
            book.order.pop_front();
            book.seen.remove(&old);
        }
        if book.seen.contains(&id) {
            return Ok(false);
        }
        if book.seen.len() >= NONCES_MAX {
            return Err(NativeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "nonce_memory_full",
                "Too many signed requests within the replay window",
            ));
        }
        book.seen.insert(id);
        book.order.push_back((now, id));
        Ok(true)
    }
}

pub use crate::util::hex;

/// The signature of a request: hex HMAC-SHA256 over the string to sign.
pub fn signature(
    shared_key: &str,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex(&Sha256::digest(body));
    let to_sign = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}");
    let mut mac = Hmac::<Sha256>::new_from_slice(shared_key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(to_sign.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The caller of `req` (whose body was `body`), or why not.
pub fn authenticate(
    app: &App,
    nonces: &Nonces,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    now: Millis,
) -> Result<Caller, NativeError> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(key) = header(HEADER_KEY) {
        return signed(app, nonces, parts, body, now, key, &header);
    }
    let token = header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            NativeError::unauthorized(
                "send Authorization: Bearer <api_key>, or a signed request (X-Tally-Key, \
                 X-Tally-Timestamp, X-Tally-Nonce, X-Tally-Signature)",
            )
        })?;
    caller(app, token)
}

fn caller(app: &App, api_key: &str) -> Result<Caller, NativeError> {
    let key = app
        .engine
        .api_key(api_key)
        .filter(|k| !k.revoked.load(std::sync::atomic::Ordering::Acquire))
        .ok_or_else(|| NativeError::unauthorized("unknown or revoked API key"))?;
    crate::app::set_actor(crate::app::Actor::Key(key.clone()));
    Ok(Caller {
        tenant_id: key.tenant_id,
        role: key.role,
        key,
    })
}

fn signed<'h>(
    app: &App,
    nonces: &Nonces,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    now: Millis,
    api_key: &str,
    header: &impl Fn(&str) -> Option<&'h str>,
) -> Result<Caller, NativeError> {
    let refuse = |code, title, detail: &str| {
        NativeError::new(StatusCode::UNAUTHORIZED, code, title).detail(detail)
    };
    let (Some(ts), Some(nonce), Some(sig)) = (
        header(HEADER_TIMESTAMP),
        header(HEADER_NONCE),
        header(HEADER_SIGNATURE),
    ) else {
        return Err(refuse(
            "signature_invalid",
            "The request signature is incomplete",
            "a signed request carries X-Tally-Key, X-Tally-Timestamp, X-Tally-Nonce and \
             X-Tally-Signature",
        ));
    };
    let caller = caller(app, api_key)?;
    let sent_s: i64 = ts.parse().map_err(|_| {
        refuse(
            "signature_invalid",
            "Bad timestamp",
            "X-Tally-Timestamp is the Unix time in seconds",
        )
    })?;
    if (sent_s.saturating_mul(1000) - now).abs() > SIGNATURE_SKEW_S_MAX * 1000 {
        return Err(refuse(
            "timestamp_skew",
            "The request's timestamp is too far from the server's clock",
            "X-Tally-Timestamp must be within 300 seconds of the server's time",
        ));
    }
    let nonce_ok = (NONCE_BYTES_MIN..=NONCE_BYTES_MAX).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if !nonce_ok {
        return Err(refuse(
            "signature_invalid",
            "Bad nonce",
            "X-Tally-Nonce is 8 to 128 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let expected = signature(
        &caller.key.shared_key,
        parts.method.as_str(),
        target,
        ts,
        nonce,
        body,
    );
    if !constant_time_eq(expected.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
        return Err(refuse(
            "signature_invalid",
            "The request signature does not match",
            "see docs/native.md, Signed requests",
        ));
    }
    let mut id = [0u8; 16];
    let digest = Sha256::new()
        .chain_update(api_key.as_bytes())
        .chain_update([0u8])
        .chain_update(nonce.as_bytes())
        .finalize();
    id.copy_from_slice(&digest[..16]);
    if !nonces.record(id, now)? {
        return Err(refuse(
            "nonce_reused",
            "The request was already received",
            "each signed request carries a new nonce",
        ));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme's worked example in docs/native.md, computed independently
    /// (Python's `hmac` and `hashlib`).
    #[test]
    fn signature_of_the_documented_example() {
        let body = br#"{"license_key":"DEMO-STUDIO-0001","feature":"render"}"#;
        let sig = signature(
            "demo-shared-key",
            "POST",
            "/v1/check",
            "1767225600",
            "n0nce-0001",
            body,
        );
        assert_eq!(
            sig,
            "94b30e526be03682b86d7ecc04678e6664fcb4078bad8fb3171fca8602a243ca"
        );
    }

    #[test]
    fn nonces_are_refused_within_the_window_and_forgotten_after() {
        let n = Nonces::default();
        assert_eq!(n.record([1; 16], 0), Ok(true));
        assert_eq!(n.record([1; 16], 1_000), Ok(false));
        assert_eq!(n.record([1; 16], 2 * SIGNATURE_SKEW_S_MAX * 1000), Ok(true));
    }
}
