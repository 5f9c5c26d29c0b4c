//! Fault injection (the harness): rules that make the server misbehave the
//! way a vendor does (slow answers, errors in the vendor's own shape, a
//! connection closed without an answer, a body that trickles), chosen by
//! surface, endpoint, method, tenant or API key, with a probability and a
//! window. Rules are looked at before a request reaches its surface: an
//! injected error changes nothing and writes nothing. `PUT|GET|DELETE
//! /admin/v1/faults`, `--faults FILE`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::engine::time::Millis;

/// Rules at once, at most.
pub const FAULT_RULES_MAX: usize = 100;
/// Longest injected latency, ms.
pub const FAULT_LATENCY_MS_MAX: u64 = 120_000;
/// Slowest trickle: bytes per second at least.
pub const FAULT_TRICKLE_BYTES_PER_S_MIN: u64 = 1;
/// A rule's id, bytes.
pub const FAULT_ID_BYTES_MAX: usize = 64;
/// Fastest trickle, bytes per second.
pub const FAULT_TRICKLE_BYTES_PER_S_MAX: u64 = 100_000_000;
/// Longest window, ms (ten years).
pub const FAULT_DURATION_MS_MAX: u64 = 10 * 366 * 86_400_000;

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Wait before answering: `ms`, or a log-normal draw with median
    /// `p50_ms` and 99th percentile `p99_ms`.
    Latency {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p50_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p99_ms: Option<u64>,
    },
    /// Answer `status` in the surface's own error shape (with
    /// `Retry-After: retry_after_s` when given).
    Error {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u32>,
    },
    /// Close the connection without an answer.
    Close,
    /// Send the real answer's body at `bytes_per_s`.
    Trickle { bytes_per_s: u64 },
}

/// One rule as written (an absent matcher matches anything).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for the hits' counts (default: its place, `rule-1`, ...).
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    /// A route template, or its start with a trailing `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub effect: Effect,
    /// Of the matching requests, the share hit (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// The window: from `start` (RFC 3339; default: when the rule is set)
    /// for `duration_ms` (default: forever), and at most `count` hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// A rule with its window resolved and its hits counted.
#[derive(Debug)]
pub struct Armed {
    pub rule: Rule,
    from: Millis,
    until: Millis,
    pub hits: AtomicU64,
}

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Delay(std::time::Duration),
    Error {
        status: u16,
        retry_after_s: Option<u32>,
    },
    Close,
    Trickle {
        bytes_per_s: u64,
    },
}

/// The rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    /// Whether any rule is set: the hot path's one look while none is.
    any: AtomicBool,
    /// Replaced whole by a PUT; read by every request while any is set.
    rules: RwLock<Arc<Vec<Arc<Armed>>>>,
}

/// What a request is, for the rules.
pub struct Request<'a> {
    pub surface: &'static str,
    pub endpoint: &'static str,
    pub method: &'static str,
    /// The credential the request carries (not checked), and its tenant.
    pub api_key: Option<&'a str>,
    pub tenant_id: Option<u64>,
    pub now: Millis,
}

impl Faults {
    pub fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Checks and sets `rules` (all or none); `now` starts those without a start.
    pub fn set(&self, mut rules: Vec<Rule>, now: Millis) -> Result<(), String> {
        if rules.len() > FAULT_RULES_MAX {
            return Err(format!("rules: at most {FAULT_RULES_MAX}"));
        }
        let mut armed = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter_mut().enumerate() {
            validate(r).map_err(|e| format!("rules[{i}].{e}"))?;
            if r.id.is_empty() {
                r.id = format!("rule-{}", i + 1);
            }
            let from = match &r.start {
                Some(s) => crate::engine::time::parse_instant(s)
                    .ok_or_else(|| format!("rules[{i}].start: must be an RFC 3339 instant"))?,
                None => now,
            };
            let until = r
                .duration_ms
                .map_or(Millis::MAX, |d| from.saturating_add(d as Millis));
            armed.push(Arc::new(Armed {
                rule: r.clone(),
                from,
                until,
                hits: AtomicU64::new(0),
            }));
        }
        let any = !armed.is_empty();
        *self.rules.write() = Arc::new(armed);
        self.any.store(any, Ordering::Release);
        Ok(())
    }

    pub fn rules(&self) -> Arc<Vec<Arc<Armed>>> {
        self.rules.read().clone()
    }

    /// The first rule that matches `req` and is drawn decides.
    pub fn decide(&self, req: &Request<'_>) -> Option<Decision> {
        let rules = self.rules();
        for a in rules.iter() {
            if !a.matches(req) {
                continue;
            }
            if a.rule.probability < 1.0 && rand::thread_rng().gen::<f64>() >= a.rule.probability {
                continue;
            }
            // The count is a budget: a hit takes one, none left is no hit.
            let hit = a.hits.fetch_add(1, Ordering::AcqRel);
            if a.rule.count.is_some_and(|c| hit >= c) {
                a.hits.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            return Some(a.decision());
        }
        None
    }
}

impl Armed {
    fn matches(&self, q: &Request<'_>) -> bool {
        let r = &self.rule;
        let endpoint = match r.endpoint.as_deref() {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(start) => q.endpoint.starts_with(start),
                None => q.endpoint == p,
            },
        };
        endpoint
            && q.now >= self.from
            && q.now < self.until
            && r.surface.as_deref().is_none_or(|s| s == q.surface)
            && r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(q.method))
            && r.tenant_id.is_none_or(|t| q.tenant_id == Some(t))
            && r.api_key.as_deref().is_none_or(|k| q.api_key == Some(k))
    }

    fn decision(&self) -> Decision {
        match &self.rule.effect {
            Effect::Latency { ms: Some(ms), .. } => {
                Decision::Delay(std::time::Duration::from_millis(*ms))
            }
            Effect::Latency { p50_ms, p99_ms, .. } => {
                Decision::Delay(std::time::Duration::from_millis(lognormal(
                    p50_ms.unwrap_or(0),
                    p99_ms.unwrap_or(0),
                )))
            }
            Effect::Error {
                status,
                retry_after_s,
            } => Decision::Error {
                status: *status,
                retry_after_s: *retry_after_s,
            },
            Effect::Close => Decision::Close,
            Effect::Trickle { bytes_per_s } => Decision::Trickle {
                bytes_per_s: *bytes_per_s,
            },
        }
    }
}

/// The API key a request carries, unchecked: a bearer token, LicenseSpring's
/// `apikey="..."`, `X-Tally-Key`, or Yext's `api_key` query parameter.
pub fn api_key_of(headers: &hyper::HeaderMap, uri: &hyper::Uri) -> Option<String> {
    if let Some(a) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = a.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        if let Some(rest) = a.split("apikey=\"").nth(1) {
            return rest.split('"').next().map(str::to_string);
        }
    }
    if let Some(k) = headers.get("x-tally-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_string());
    }
    uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v.into_owned())
    })
}

/// A draw of a log-normal latency with median `p50` and 99th percentile
/// `p99` (ms), capped at [`FAULT_LATENCY_MS_MAX`].
fn lognormal(p50: u64, p99: u64) -> u64 {
    if p50 == 0 {
        return 0;
    }
    // z of the 99th percentile of the standard normal.
    let sigma = ((p99.max(p50) as f64) / (p50 as f64)).ln() / 2.326_348;
    // Box-Muller.
    let mut rng = rand::thread_rng();
    let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ((p50 as f64) * (sigma * z).exp()).min(FAULT_LATENCY_MS_MAX as f64) as u64
}

fn validate(r: &Rule) -> Result<(), String> {
    // The id is a metrics label: letters, digits, `_`, `.`, `-` only.
    if r.id.len() > FAULT_ID_BYTES_MAX
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("id: at most 64 letters, digits, `_`, `.` or `-`".into());
    }
    if r.duration_ms.is_some_and(|d| d > FAULT_DURATION_MS_MAX) {
        return Err("duration_ms: at most ten years".into());
    }
    if !(0.0..=1.0).contains(&r.probability) {
        return Err("probability: must be 0 to 1".into());
    }
    if let Some(s) = &r.surface {
        const SURFACES: [&str; 7] = [
            "licensespring",
            "qlik",
            "yext",
            "informatica",
            "native",
            "admin",
            "server",
        ];
        if !SURFACES.contains(&s.as_str()) {
            return Err(format!("surface: one of {}", SURFACES.join(", ")));
        }
    }
    match &r.effect {
        Effect::Latency { ms, p50_ms, p99_ms } => {
            let ok = match (ms, p50_ms, p99_ms) {
                (Some(ms), None, None) => *ms <= FAULT_LATENCY_MS_MAX,
                (None, Some(a), Some(b)) => a <= b && *b <= FAULT_LATENCY_MS_MAX,
                _ => false,
            };
            if !ok {
                return Err(
                    "effect: latency takes ms, or p50_ms <= p99_ms (at most 120000)".into(),
                );
            }
        }
        Effect::Error { status, .. } if !(400..=599).contains(status) => {
            return Err("effect.status: must be 400 to 599".into())
        }
        Effect::Trickle { bytes_per_s }
            if !(FAULT_TRICKLE_BYTES_PER_S_MIN..=FAULT_TRICKLE_BYTES_PER_S_MAX)
                .contains(bytes_per_s) =>
        {
            return Err("effect.bytes_per_s: 1 to 100000000".into())
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(surface: &'static str, endpoint: &'static str, now: Millis) -> Request<'a> {
        Request {
            surface,
            endpoint,
            method: "GET",
            api_key: None,
            tenant_id: None,
            now,
        }
    }

    #[test]
    fn the_first_drawn_match_decides_within_its_window_and_count() {
        let f = Faults::default();
        assert!(!f.active());
        let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
            {"surface": "qlik", "endpoint": "/api/v1/licenses/*", "count": 2,
             "effect": {"type": "error", "status": 429, "retry_after_s": 3}},
            {"surface": "licensespring", "duration_ms": 1000, "effect": {"type": "close"}},
            {"effect": {"type": "latency", "p50_ms": 10, "p99_ms": 100}, "probability": 0.0}
        ]))
        .unwrap();
        f.set(rules, 1_000).unwrap();
        assert!(f.active());
        let q = req("qlik", "/api/v1/licenses/overview", 1_000);
        let e = Some(Decision::Error {
            status: 429,
            retry_after_s: Some(3),
        });
        assert_eq!(f.decide(&q), e);
        assert_eq!(f.decide(&q), e);
        assert_eq!(f.decide(&q), None, "two hits, then none");
        assert_eq!(
            f.decide(&req("licensespring", "/api/v4/x", 1_500)),
            Some(Decision::Close)
        );
        assert_eq!(
            f.decide(&req("licensespring", "/api/v4/x", 2_000)),
            None,
            "window over"
        );
        assert_eq!(
            f.decide(&req("native", "/v1/check", 1_000)),
            None,
            "probability 0"
        );
        assert_eq!(f.rules()[0].hits.load(Ordering::Relaxed), 2);
        for (bad, why) in [
            (
                serde_json::json!([{"effect": {"type": "error", "status": 200}}]),
                "status",
            ),
            (
                serde_json::json!([{"effect": {"type": "latency"}}]),
                "latency",
            ),
            (
                serde_json::json!([{"surface": "x", "effect": {"type": "close"}}]),
                "surface",
            ),
            (
                serde_json::json!([{"probability": 2, "effect": {"type": "close"}}]),
                "probability",
            ),
            (
                serde_json::json!([{"id": "a\"b", "effect": {"type": "close"}}]),
                "id",
            ),
            (
                serde_json::json!([{"duration_ms": u64::MAX, "effect": {"type": "close"}}]),
                "duration_ms",
            ),
            (
                serde_json::json!([{"effect": {"type": "trickle", "bytes_per_s": u64::MAX}}]),
                "bytes_per_s",
            ),
        ] {
            let rules: Vec<Rule> = serde_json::from_value(bad).unwrap();
            assert!(f.set(rules, 0).unwrap_err().contains(why), "{why}");
        }
        assert_eq!(f.rules().len(), 3, "a refused set keeps the rules");
        for _ in 0..1000 {
            let v = lognormal(10, 100);
            assert!(v <= FAULT_LATENCY_MS_MAX);
        }
    }
}
