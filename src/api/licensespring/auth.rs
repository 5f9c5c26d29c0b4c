//! LicenseSpring request authentication:
//!
//! ```text
//! Date: Tue, 25 Nov 2026 10:00:00 GMT
//! Authorization: algorithm="hmac-sha256",headers="date",signature="<b64>",apikey="<key>"
//! signature = base64(HMAC-SHA256(shared_key, "licenseSpring\ndate: " + Date))
//! ```
//!
//! The parameter names are matched case-insensitively (the Python SDK sends
//! `apiKey`). A verified (key, Date, signature) triple is remembered per key so
//! that the many requests a client sends within the same Date second cost a
//! string compare instead of an HMAC.

use std::sync::Arc;

use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use sha2::Sha256;

use super::error::*;
use crate::credentials::constant_time_eq;
use crate::engine::model::ApiKey;
use crate::engine::time::{Millis, MINUTE_MS};
use crate::engine::Engine;

/// How far a request's Date may be from the server's clock.
pub const DATE_SKEW_MS_MAX: Millis = 15 * MINUTE_MS;
/// Longest Authorization header parsed, bytes.
pub const AUTHORIZATION_BYTES_MAX: usize = 1024;

#[derive(Default)]
pub struct AuthCache {
    /// api key -> the last (Date, signature) that verified for it. Sharded
    /// map: readers of different keys never contend; one insert per key and
    /// Date second.
    verified: DashMap<Box<str>, Verified>,
}

struct Verified {
    date: Box<str>,
    signature: Box<str>,
    /// The Date header, parsed.
    sent_ms: Millis,
    /// The key the proof was checked against.
    key: Arc<ApiKey>,
}

/// The fields of the Authorization header.
pub(crate) struct AuthHeader<'a> {
    algorithm: &'a str,
    headers: &'a str,
    signature: &'a str,
    pub(crate) api_key: &'a str,
}

pub(crate) fn parse_authorization(h: &str) -> Option<AuthHeader<'_>> {
    let (mut algorithm, mut headers, mut signature, mut api_key) = (None, None, None, None);
    for part in h.split(',') {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        let k = k.trim();
        if k.eq_ignore_ascii_case("algorithm") {
            algorithm = Some(v);
        } else if k.eq_ignore_ascii_case("headers") {
            headers = Some(v);
        } else if k.eq_ignore_ascii_case("signature") {
            signature = Some(v);
        } else if k.eq_ignore_ascii_case("apikey") || k.eq_ignore_ascii_case("api_key") {
            api_key = Some(v);
        }
    }
    Some(AuthHeader {
        algorithm: algorithm?,
        headers: headers?,
        signature: signature?,
        api_key: api_key?,
    })
}

/// The signature LicenseSpring expects for `date` under `shared_key`.
pub fn sign_date(shared_key: &str, date: &str) -> String {
    hmac_b64(shared_key, &[b"licenseSpring\ndate: ", date.as_bytes()])
}

/// Base64 of HMAC-SHA256 with `key` over the concatenated `parts`.
pub fn hmac_b64(key: &str, parts: &[&[u8]]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The headers a client sends: (Date, Authorization).
pub fn client_headers(api_key: &str, shared_key: &str, now: Millis) -> (String, String) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64);
    let date = httpdate::fmt_http_date(when);
    let sig = sign_date(shared_key, &date);
    (
        date.clone(),
        format!(r#"algorithm="hmac-sha256",headers="date",signature="{sig}",apikey="{api_key}""#),
    )
}

impl AuthCache {
    /// Checks the request's Date and Authorization and returns its API key.
    pub fn authenticate(
        &self,
        engine: &Engine,
        headers: &HeaderMap,
        now: Millis,
        write: bool,
    ) -> Result<Arc<ApiKey>, LicenseSpringError> {
        let date = headers
            .get(hyper::header::DATE)
            .and_then(|v| v.to_str().ok());
        let auth = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (Some(date), Some(auth)) = (date, auth) else {
            return Err(MISSING_HEADERS);
        };
        if auth.len() > AUTHORIZATION_BYTES_MAX {
            return Err(AUTHORIZATION_MALFORMED);
        }
        let a = parse_authorization(auth).ok_or(AUTHORIZATION_MALFORMED)?;
        if !a.algorithm.eq_ignore_ascii_case("hmac-sha256")
            || !a.headers.eq_ignore_ascii_case("date")
        {
            return Err(UNSUPPORTED_ALGORITHM);
        }
        let key = engine.api_key(a.api_key);
        // A (Date, signature) pair this very key already proved (a key deleted
        // and re-created under the same name has a new shared key): no date
        // parsing, no HMAC; only the clock skew is checked again.
        let proved_ms = key.as_ref().and_then(|k| {
            self.verified
                .get(a.api_key)
                .filter(|v| {
                    &*v.date == date && &*v.signature == a.signature && Arc::ptr_eq(&v.key, k)
                })
                .map(|v| v.sent_ms)
        });
        let sent_ms = match proved_ms {
            Some(ms) => ms,
            None => httpdate::parse_http_date(date)
                .map_err(|_| DATE_INVALID)?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
        };
        if (sent_ms - now).abs() > DATE_SKEW_MS_MAX {
            return Err(DATE_DIFFERENCE);
        }
        let key = key.ok_or(INVALID_API_KEY)?;
        if proved_ms.is_none() {
            let expected = sign_date(&key.shared_key, date);
            if !constant_time_eq(expected.as_bytes(), a.signature.as_bytes()) {
                return Err(INVALID_SIGNATURE);
            }
            self.verified.insert(
                a.api_key.into(),
                Verified {
                    date: date.into(),
                    signature: a.signature.into(),
                    sent_ms,
                    key: key.clone(),
                },
            );
        }
        if key.revoked.load(std::sync::atomic::Ordering::Acquire) {
            return Err(API_KEY_REVOKED);
        }
        if write && !key.role.can_write() {
            return Err(READ_ONLY_KEY);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_header_forms() {
        let a = parse_authorization(
            r#"algorithm="hmac-sha256",headers="date",signature="abc=",apiKey="k1""#,
        )
        .expect("sdk form");
        assert_eq!(
            (a.algorithm, a.headers, a.signature, a.api_key),
            ("hmac-sha256", "date", "abc=", "k1")
        );
        assert!(
            parse_authorization(r#"algorithm="hmac-sha256",headers="date",signature="abc=""#)
                .is_none()
        );
        assert!(parse_authorization("garbage").is_none());
    }

    #[test]
    fn signature_matches_reference() {
        // HMAC-SHA256("secret", "licenseSpring\ndate: Thu, 17 Nov 2022 20:51:35 GMT"), computed with Python and OpenSSL.
        let sig = sign_date("secret", "Thu, 17 Nov 2022 20:51:35 GMT");
        // hex cf722c6d...600cab; OpenSSL and Python agree.
        assert_eq!(sig, "z3IsbZSQxwt2AVPGNkg41rch85+t2DcU5qs2lPNgDKs=");
        assert_ne!(sig, sign_date("other", "Thu, 17 Nov 2022 20:51:35 GMT"));
    }
}
