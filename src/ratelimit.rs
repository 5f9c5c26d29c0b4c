//! Vendors' documented rate limits, emulated (`--emulate-rate-limits`) for
//! LicenseSpring and Yext here (Qlik's tiers live with its surface), with
//! per-tenant overrides (`PUT /admin/v1/tenants/{id}/rate-limits`, which
//! also sets limits for Informatica, which publishes none) and counters
//! (`GET /admin/v1/rate-limits`). The numbers and their sources:
//! docs/harness.md.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::model::Id;
use crate::engine::time::Millis;

/// LicenseSpring: per company (a tenant), per API, 60-second rolling
/// window; the Free plan's License API limit
/// (https://docs.licensespring.com/license-api/rate-limiting).
pub const LICENSESPRING_REQUESTS_PER_MINUTE: u64 = 1_800;
/// LicenseSpring's flood protection: per Authorization (an API key), per
/// second (same page).
pub const LICENSESPRING_REQUESTS_PER_KEY_PER_SECOND: u64 = 50;
/// Yext: per account (a tenant), per hour, the Management API's limit
/// (https://hitchhikers.yext.com/modules/pl240-developer-console/05-monitoring_app_usage).
pub const YEXT_REQUESTS_PER_HOUR: u64 = 5_000;
/// Windows tracked at most; past it the stale ones go, then the oldest.
pub const RATE_WINDOWS_MAX: usize = 100_000;

/// A limit: `limit` requests per `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub limit: u64,
    pub window_ms: u64,
}

/// One window's count (fixed windows; the previous one is weighed in for a
/// rolling estimate where the vendor's window rolls).
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start: Millis,
    count: u64,
    previous: u64,
}

/// What a counted request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// When the window ends, ms.
    pub reset_at: Millis,
}

/// The limiter: windows by (surface, unit, key).
#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<(&'static str, &'static str, String), Window>>,
    /// (tenant, surface) -> the tenant's own limit.
    overrides: Mutex<HashMap<(Id, String), Limit>>,
    /// Held by a change of the overrides while it stores them (so two
    /// changes never store in one order and apply in the other), never by a
    /// check.
    changing: Mutex<()>,
}

/// A tenant's override, as the data directory keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub tenant_id: Id,
    pub surface: String,
    pub limit: u64,
    pub window_ms: u64,
}

/// A window's counters, as `GET /admin/v1/rate-limits` shows them.
#[derive(Clone, Debug, Serialize)]
pub struct Counter {
    pub surface: &'static str,
    pub unit: &'static str,
    pub key: String,
    pub window_start_ms: Millis,
    pub count: u64,
}

impl Limiter {
    /// Counts a request of `key` against `limit`; `rolling` weighs in the
    /// previous window (LicenseSpring's rolling minute).
    pub fn admit(
        &self,
        surface: &'static str,
        unit: &'static str,
        key: &str,
        limit: Limit,
        rolling: bool,
        now: Millis,
    ) -> Verdict {
        let w = limit.window_ms.max(1) as Millis;
        let start = now.div_euclid(w) * w;
        let mut windows = self.windows.lock();
        let id = (surface, unit, key.to_string());
        if windows.len() >= RATE_WINDOWS_MAX && !windows.contains_key(&id) {
            windows.retain(|_, x| x.start + 2 * w > now);
            if windows.len() >= RATE_WINDOWS_MAX {
                windows.clear();
            }
        }
        let e = windows.entry(id).or_default();
        if e.start != start {
            e.previous = if e.start == start - w { e.count } else { 0 };
            e.start = start;
            e.count = 0;
        }
        let carried = if rolling {
            // The previous window's share still inside the rolling window.
            // (rounded up: a rolling limit is never exceeded).
            (e.previous as f64 * (1.0 - (now - start) as f64 / w as f64)).ceil() as u64
        } else {
            0
        };
        let used = e.count + carried;
        let allowed = used < limit.limit;
        if allowed {
            e.count += 1;
        }
        Verdict {
            allowed,
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(used + u64::from(allowed)),
            reset_at: start + w,
        }
    }

    /// Sets and clears overrides together: the whole new set goes to
    /// `persist` first, and is in force only once it is stored. Changes are
    /// one at a time (`changing`); checks keep reading the old set meanwhile.
    pub fn change_overrides<E>(
        &self,
        changes: &[(Id, &str, Option<Limit>)],
        persist: impl FnOnce(&[Override]) -> Result<(), E>,
    ) -> Result<(), E> {
        let _one_at_a_time = self.changing.lock();
        let mut next = self.overrides.lock().clone();
        for (tenant, surface, limit) in changes {
            let k = (*tenant, (*surface).to_string());
            match limit {
                Some(l) => next.insert(k, *l),
                None => next.remove(&k),
            };
        }
        let mut listed: Vec<Override> = next
            .iter()
            .map(|((t, s), l)| Override {
                tenant_id: *t,
                surface: s.clone(),
                limit: l.limit,
                window_ms: l.window_ms,
            })
            .collect();
        listed.sort_by(|a, b| (a.tenant_id, &a.surface).cmp(&(b.tenant_id, &b.surface)));
        persist(&listed)?;
        *self.overrides.lock() = next;
        Ok(())
    }

    /// Puts back the overrides a data directory kept (at start).
    pub fn restore_overrides(&self, stored: Vec<Override>) {
        let mut o = self.overrides.lock();
        for v in stored {
            let limit = Limit {
                limit: v.limit,
                window_ms: v.window_ms,
            };
            o.insert((v.tenant_id, v.surface), limit);
        }
    }

    pub fn override_of(&self, tenant: Id, surface: &str) -> Option<Limit> {
        self.overrides
            .lock()
            .get(&(tenant, surface.to_string()))
            .copied()
    }

    /// A tenant's overrides, by surface.
    pub fn overrides_of(&self, tenant: Id) -> Vec<(String, Limit)> {
        let mut v: Vec<(String, Limit)> = self
            .overrides
            .lock()
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|((_, s), l)| (s.clone(), *l))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The windows' counters, most used first, at most `n`.
    pub fn counters(&self, n: usize) -> Vec<Counter> {
        let mut v: Vec<Counter> = self
            .windows
            .lock()
            .iter()
            .map(|((surface, unit, key), w)| Counter {
                surface,
                unit,
                key: key.clone(),
                window_start_ms: w.start,
                count: w.count,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        v.truncate(n);
        v
    }

    /// Forgets every window (counts start again).
    pub fn reset(&self) {
        self.windows.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_roll() {
        let l = Limiter::default();
        let lim = Limit {
            limit: 2,
            window_ms: 1_000,
        };
        let ok = |v: Verdict| v.allowed;
        assert!(ok(l.admit("s", "tenant", "t", lim, false, 100)));
        assert!(ok(l.admit("s", "tenant", "t", lim, false, 200)));
        let refused = l.admit("s", "tenant", "t", lim, false, 300);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.reset_at), (0, 1_000));
        assert!(
            ok(l.admit("s", "tenant", "u", lim, false, 300)),
            "another key"
        );
        assert!(
            ok(l.admit("s", "tenant", "t", lim, false, 1_000)),
            "a new window"
        );
        // Rolling: early in the next window the previous one still counts.
        let r = Limiter::default();
        assert!(ok(r.admit("s", "tenant", "t", lim, true, 900)));
        assert!(ok(r.admit("s", "tenant", "t", lim, true, 950)));
        assert!(!r.admit("s", "tenant", "t", lim, true, 1_100).allowed);
        assert!(r.admit("s", "tenant", "t", lim, true, 1_600).allowed);
    }
}
