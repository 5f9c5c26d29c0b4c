//! The state gate: what makes a state restore atomic for requests.
//!
//! Every request that may read or change state passes the gate for as long
//! as its handler runs ([`Gate::enter`], shared); a state restore closes it
//! ([`Gate::close`], exclusive): requests already inside finish on the old
//! state, requests arriving meanwhile wait, and the first to run after the
//! restore sees the restored state whole. No request sees a mix.
//!
//! Entering must cost nothing measurable on the check path, so the gate is
//! not a lock: each thread counts its requests in its own cache line
//! ([`GATE_SHARDS`] of them) and reads one flag that only a restore writes.
//! Entering is a `fetch_add` on a line the thread already owns and a load
//! of a line every core keeps shared; leaving is a `fetch_sub` and the same
//! load. The closer sets the flag, then waits until every line reads zero.
//! Entrant and closer each write their own word and then read the other's
//! (`SeqCst` both), so at least one of them sees the other: either the
//! closer counts the entrant, or the entrant sees the flag and backs out.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

/// Lines the entrants count in (threads map onto them round-robin).
pub const GATE_SHARDS: usize = 16;

/// The gate's states (`Gate::state`).
const OPEN: u8 = 0;
const SHUT: u8 = 1;
/// A restore failed half-way: the state in memory is not one the log
/// describes, so no request may see it (every one is refused) until the
/// process restarts and recovers.
const BROKEN: u8 = 2;

/// The gate is broken (see [`Shut::break_forever`]): answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

pub struct Gate {
    /// Requests inside, per line: a request leaves through the line it
    /// entered by, so no line goes below zero and the sum is exact.
    inside: Box<[CachePadded<AtomicUsize>]>,
    /// OPEN, SHUT while a restore holds (or waits for) the gate, or BROKEN.
    state: AtomicU8,
    /// Wakes entrants waiting for the gate to open again.
    reopened: Notify,
    /// Wakes the closer when a request leaves while it waits.
    drained: Notify,
    /// One closer at a time.
    closer: tokio::sync::Mutex<()>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            inside: (0..GATE_SHARDS)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            state: AtomicU8::new(OPEN),
            reopened: Notify::new(),
            drained: Notify::new(),
            closer: tokio::sync::Mutex::new(()),
        }
    }
}

/// A request's passage (shared); leaving is dropping it.
#[must_use]
pub struct Pass<'a> {
    gate: &'a Gate,
    line: usize,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.leave(self.line);
    }
}

/// The gate held shut (exclusive); it opens again when this is dropped,
/// also when the closer's future is dropped while it waits.
#[must_use]
pub struct Shut<'a> {
    gate: &'a Gate,
    _one: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Shut<'_> {
    fn drop(&mut self) {
        // A broken gate stays broken.
        let _ = self.gate.state.compare_exchange(SHUT, OPEN, SeqCst, SeqCst);
        self.gate.reopened.notify_waiters();
    }
}

impl Shut<'_> {
    /// Refuses every request from now on (see [`Broken`]).
    pub fn break_forever(self) {
        self.gate.state.store(BROKEN, SeqCst);
    }
}

thread_local! {
    /// The line this thread counts in.
    static LINE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, SeqCst) % GATE_SHARDS
    };
}

impl Gate {
    /// Passes the gate: at once unless a restore holds it, else when the
    /// restore is done.
    pub async fn enter(&self) -> Result<Pass<'_>, Broken> {
        let line = LINE.with(|l| *l);
        loop {
            self.inside[line].fetch_add(1, SeqCst);
            match self.state.load(SeqCst) {
                OPEN => return Ok(Pass { gate: self, line }),
                BROKEN => {
                    self.leave(line);
                    return Err(Broken);
                }
                _ => self.leave(line),
            }
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            reopened.as_mut().enable();
            if self.state.load(SeqCst) == SHUT {
                reopened.await;
            }
        }
    }

    fn leave(&self, line: usize) {
        let before = self.inside[line].fetch_sub(1, SeqCst);
        // Assert even in release: an unbalanced count would let a restore
        // run beside a request, or wait for ever.
        assert!(before > 0, "gate line {line} left more often than entered");
        if self.state.load(SeqCst) != OPEN {
            self.drained.notify_one();
        }
    }

    /// Shuts the gate: waits for every request inside to leave; requests
    /// arriving meanwhile wait for the returned [`Shut`] to be dropped.
    pub async fn close(&self) -> Result<Shut<'_>, Broken> {
        let one = self.closer.lock().await;
        if self
            .state
            .compare_exchange(OPEN, SHUT, SeqCst, SeqCst)
            .is_err()
        {
            return Err(Broken);
        }
        let shut = Shut {
            gate: self,
            _one: one,
        };
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.inside_now() == 0 {
                return Ok(shut);
            }
            drained.await;
        }
    }

    /// [`Gate::close`] that gives up after `limit` (None: requests inside
    /// did not leave in time, or the gate is broken; it is open again).
    pub async fn close_within(&self, limit: Duration) -> Option<Shut<'_>> {
        tokio::time::timeout(limit, self.close())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Requests inside now (exact while the gate is shut: none can enter).
    pub fn inside_now(&self) -> usize {
        self.inside.iter().map(|l| l.load(SeqCst)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shut_gate_waits_for_requests_inside_and_holds_new_ones() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().await.expect("open");
        let g = gate.clone();
        let closer = tokio::spawn(async move {
            let _shut = g.close().await.expect("not broken");
            tokio::time::sleep(Duration::from_millis(50)).await;
            g.inside_now()
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!closer.is_finished(), "closed while a request was inside");
        let g = gate.clone();
        let late = tokio::spawn(async move {
            let _p = g.enter().await.expect("open");
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!late.is_finished(), "entered while shut");
        drop(pass);
        assert_eq!(closer.await.expect("closer"), 0);
        late.await.expect("late request");
        assert_eq!(gate.inside_now(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closer_dropped_while_waiting_opens_the_gate_again() {
        let gate = Gate::default();
        let pass = gate.enter().await.expect("open");
        assert!(gate.close_within(Duration::from_millis(20)).await.is_none());
        drop(pass);
        let _again = tokio::time::timeout(Duration::from_secs(1), gate.enter())
            .await
            .expect("the gate opened again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_gate_refuses_every_request() {
        let gate = Gate::default();
        gate.close().await.expect("shut").break_forever();
        assert_eq!(gate.enter().await.err(), Some(Broken));
        assert!(gate.close().await.is_err());
        assert_eq!(gate.inside_now(), 0);
    }
}
