//! The request journal (`--journal N`): the last N requests as the server
//! saw them, with their credentials masked, for a test to check what its
//! client sent (`GET /admin/v1/journal`, `POST /admin/v1/journal/count`).
//! Off by default; when off the server does not look at requests for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::time::Millis;

/// Entries a journal may keep (`--journal` is capped to it).
pub const JOURNAL_ENTRIES_MAX: usize = 1_000_000;
/// Bytes of a request's body kept, at most (the rest is cut, and said).
pub const JOURNAL_BODY_BYTES_MAX: usize = 4_096;
/// Bytes of a header's value kept, at most.
pub const JOURNAL_HEADER_BYTES_MAX: usize = 1_024;
/// Headers kept per request, at most.
pub const JOURNAL_HEADERS_MAX: usize = 64;

/// What replaces a credential.
pub const MASK: &str = "***";

/// One request.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The journal's order.
    pub seq: u64,
    pub at: Millis,
    pub surface: &'static str,
    pub endpoint: &'static str,
    pub method: &'static str,
    /// The path and the query, credentials in the query masked.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// As text (lossy), credentials in a JSON body masked; cut at
    /// [`JOURNAL_BODY_BYTES_MAX`].
    pub body: String,
    pub body_truncated: bool,
    pub status: u16,
    pub code: &'static str,
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<u64>,
    pub request_id: String,
}

/// What a reader asks for; an absent field matches anything.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub surface: Option<String>,
    /// A route template (`/api/v4/check_license_feature`) or, with a
    /// trailing `*`, its start.
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub tenant_id: Option<u64>,
    /// A part of the path and query.
    pub path_contains: Option<String>,
    /// At or after `since`, before `until` (RFC 3339).
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Matcher {
    fn keeps(&self, e: &Entry, since: Option<Millis>, until: Option<Millis>) -> bool {
        let endpoint = match self.endpoint.as_deref() {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(start) => e.endpoint.starts_with(start),
                None => e.endpoint == p,
            },
        };
        endpoint
            && self.surface.as_deref().is_none_or(|s| s == e.surface)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(e.method))
            && self.status.is_none_or(|s| s == e.status)
            && self.code.as_deref().is_none_or(|c| c == e.code)
            && self.tenant_id.is_none_or(|t| Some(t) == e.tenant_id)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| e.path.contains(p))
            && since.is_none_or(|t| e.at >= t)
            && until.is_none_or(|t| e.at < t)
    }

    /// The time bounds, parsed (an error names the field).
    pub fn bounds(&self) -> Result<(Option<Millis>, Option<Millis>), &'static str> {
        let parse = |v: &Option<String>, name: &'static str| {
            v.as_deref()
                .map(|s| crate::engine::time::parse_instant(s).ok_or(name))
                .transpose()
        };
        Ok((parse(&self.since, "since")?, parse(&self.until, "until")?))
    }
}

/// The ring of the last requests.
#[derive(Debug)]
pub struct Journal {
    capacity: usize,
    /// Oldest first; one short lock per request (the journal is a test
    /// tool, off unless asked for).
    entries: Mutex<VecDeque<Arc<Entry>>>,
    seq: AtomicU64,
}

impl Journal {
    pub fn new(capacity: usize) -> Journal {
        Journal {
            capacity: capacity.clamp(1, JOURNAL_ENTRIES_MAX),
            entries: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&self, mut e: Entry) {
        e.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut q = self.entries.lock();
        if q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(Arc::new(e));
    }

    /// The newest `limit` entries `m` keeps, oldest first.
    pub fn find(&self, m: &Matcher, limit: usize) -> Result<Vec<Arc<Entry>>, &'static str> {
        let (since, until) = m.bounds()?;
        let q = self.entries.lock();
        let mut out: Vec<Arc<Entry>> = q
            .iter()
            .rev()
            .filter(|e| m.keeps(e, since, until))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        Ok(out)
    }

    pub fn count(&self, m: &Matcher) -> Result<usize, &'static str> {
        let (since, until) = m.bounds()?;
        Ok(self
            .entries
            .lock()
            .iter()
            .filter(|e| m.keeps(e, since, until))
            .count())
    }

    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

/// Names whose values are credentials, in headers, queries and JSON
/// bodies (compared without case; a name containing one of them counts).
const SECRET_NAMES: [&str; 10] = [
    "authorization",
    "password",
    "secret",
    "shared_key",
    "sharedkey",
    "token",
    "session",
    "signature",
    "api_key",
    "cookie",
];

fn is_secret(name: &str) -> bool {
    // `api-key` and `api_key` alike.
    let n = name.to_ascii_lowercase().replace('-', "_");
    SECRET_NAMES.iter().any(|s| n.contains(s)) || n == "x_tally_key" || n == "apikey"
}

/// A header list with credentials masked (an Authorization keeps its
/// scheme), values cut at [`JOURNAL_HEADER_BYTES_MAX`].
pub fn headers(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .take(JOURNAL_HEADERS_MAX)
        .map(|(k, v)| {
            let name = k.as_str().to_string();
            let value = String::from_utf8_lossy(v.as_bytes());
            let value = if is_secret(&name) {
                match value.split_once(' ') {
                    Some((scheme, _)) if name == "authorization" => format!("{scheme} {MASK}"),
                    _ => MASK.to_string(),
                }
            } else {
                cut(&value, JOURNAL_HEADER_BYTES_MAX)
            };
            (name, value)
        })
        .collect()
}

/// A path with its query, credentials in the query masked.
pub fn path(uri: &hyper::Uri) -> String {
    let Some(q) = uri.query() else {
        return uri.path().to_string();
    };
    let masked: Vec<String> = q
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), masked.join("&"))
}

/// A body as text, credentials in a JSON body masked, cut at
/// [`JOURNAL_BODY_BYTES_MAX`]; (text, cut).
pub fn body(b: Option<&Bytes>) -> (String, bool) {
    let Some(b) = b else {
        return (String::new(), false);
    };
    let text = match serde_json::from_slice::<Value>(b) {
        Ok(mut v) => {
            mask_json(&mut v);
            v.to_string()
        }
        // Not JSON (a form, or bytes): credentials by name, as in a query.
        Err(_) => {
            let t = String::from_utf8_lossy(b);
            t.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret(k) => format!("{k}={MASK}"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        }
    };
    let truncated = text.len() > JOURNAL_BODY_BYTES_MAX;
    (cut(&text, JOURNAL_BODY_BYTES_MAX), truncated)
}

fn mask_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if is_secret(k) {
                    *x = Value::String(MASK.into());
                } else {
                    mask_json(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_everywhere() {
        let mut h = hyper::HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        h.insert("x-tally-signature", "abc".parse().unwrap());
        h.insert("INFA-SESSION-ID", "sess".parse().unwrap());
        h.insert("accept", "application/json".parse().unwrap());
        h.insert("api-key", "yext-key".parse().unwrap());
        let hs = headers(&h);
        assert!(hs.contains(&("authorization".into(), "Bearer ***".into())));
        assert!(hs.contains(&("x-tally-signature".into(), "***".into())));
        assert!(hs.contains(&("infa-session-id".into(), "***".into())));
        assert!(hs.contains(&("accept".into(), "application/json".into())));
        assert!(hs.contains(&("api-key".into(), "***".into())));
        let uri: hyper::Uri = "/x?license_key=K&api_key=A&password=p".parse().unwrap();
        assert_eq!(path(&uri), "/x?license_key=K&api_key=***&password=***");
        let (b, cut) = body(Some(&Bytes::from_static(
            br#"{"username":"u","password":"p","nested":[{"shared_key":"k"}]}"#,
        )));
        assert!(!cut);
        assert!(!b.contains("\"p\"") && !b.contains("\"k\""), "{b}");
        assert!(b.contains("\"u\""));
        let big = Bytes::from(vec![b'a'; JOURNAL_BODY_BYTES_MAX + 10]);
        let (b, cut) = body(Some(&big));
        assert!(cut && b.len() == JOURNAL_BODY_BYTES_MAX);
    }
}
