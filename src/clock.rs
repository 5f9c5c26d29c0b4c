//! Where `now` comes from. The engine never reads a clock; the server asks a
//! [`Clock`] once per request and passes the instant down. Tests inject a
//! [`ManualClock`] to cross period boundaries and seat timeouts at will.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::engine::time::Millis;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// Wall-clock time (UTC).
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: Millis) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: Millis) {
        self.0.store(now_ms, Ordering::Release);
    }
    pub fn advance(&self, by_ms: Millis) {
        self.0.fetch_add(by_ms, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::Acquire)
    }
}
