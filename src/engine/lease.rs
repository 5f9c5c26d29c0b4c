//! Lease pool: floating seats. A holder (a hardware_id) takes a seat for a
//! timeout and keeps it by renewing; a seat not renewed in time is free again.
//! A borrowed seat is held until its `borrowed_until` regardless of renewals.
//!
//! One small mutex per pool (per license or feature, never global): acquire must
//! look at the holders and the count together to never over-grant, and pools are
//! small (`floating_users`). `in_use` mirrors the holder count for lock-free reads.

use std::sync::atomic::{AtomicU32, Ordering};

use once_cell::race::OnceBox;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::time::Millis;

/// Upper bound on seats in one pool, so a pool's scan stays short and its
/// memory bounded whatever an admin asks for.
pub const LEASE_POOL_SEATS_MAX: u32 = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: Box<str>,
    /// When the seat was first taken by this holder.
    pub since: Millis,
    /// The seat is free once `now >= expires_at`.
    pub expires_at: Millis,
    /// Set while the seat is borrowed for offline use.
    pub borrowed_until: Option<Millis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired,
    Renewed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasesExhausted;

/// A pool of floating seats. Most features and licenses do not float, so the
/// pool is allocated on the first change that needs it (a capacity above zero
/// or a restored holder) and is 8 bytes until then: with 4 features per license
/// that is most of a million-license catalog's memory (issue #3). An absent
/// pool reads as capacity 0 with no holders, and once allocated it stays.
#[derive(Debug, Default)]
pub struct LeasePool {
    cell: OnceBox<LeaseCell>,
}

#[derive(Debug)]
struct LeaseCell {
    /// Holders and capacity, behind one lock so "count < capacity, then insert" is atomic.
    state: Mutex<LeaseState>,
    /// Holders after the last change (expired holders are counted until the next
    /// change or sweep purges them). Readers that need an exact figure call `in_use(now)`.
    in_use: AtomicU32,
}

#[derive(Debug)]
struct LeaseState {
    capacity: u32,
    holders: Vec<Lease>,
}

impl LeaseState {
    fn purge(&mut self, now: Millis) {
        self.holders.retain(|l| l.expires_at > now);
    }
}

impl LeasePool {
    pub fn new(capacity: u32) -> Self {
        let pool = LeasePool::default();
        pool.set_capacity(capacity);
        pool
    }

    /// The allocated pool, allocating it first if needed.
    fn cell(&self) -> &LeaseCell {
        self.cell.get_or_init(|| Box::new(LeaseCell::new(0)))
    }

    /// Takes a seat for `holder`, or renews the one it holds, until `now + timeout_ms`.
    /// Returns the outcome and the number of holders afterwards.
    pub fn acquire(
        &self,
        holder: &str,
        now: Millis,
        timeout_ms: Millis,
    ) -> Result<(LeaseOutcome, u32), LeasesExhausted> {
        match self.cell.get() {
            Some(c) => c.acquire(holder, now, timeout_ms),
            None => Err(LeasesExhausted),
        }
    }

    /// Holds (taking if needed) a seat for `holder` until `until`.
    pub fn borrow(&self, holder: &str, now: Millis, until: Millis) -> Result<u32, LeasesExhausted> {
        match self.cell.get() {
            Some(c) => c.borrow(holder, now, until),
            None => Err(LeasesExhausted),
        }
    }

    /// Extends `holder`'s seat to `now + timeout_ms` if it holds one; takes no
    /// seat otherwise. Renewals are not logged (see `storage`): only a seat
    /// newly taken changes which holders exist.
    pub fn renew(&self, holder: &str, now: Millis, timeout_ms: Millis) -> Option<u32> {
        self.cell.get()?.renew(holder, now, timeout_ms)
    }

    /// Frees `holder`'s seat at once. Returns whether it held one.
    pub fn release(&self, holder: &str, now: Millis) -> bool {
        self.cell.get().is_some_and(|c| c.release(holder, now))
    }

    /// Restores a holder exactly (replay, catalog import); ignores capacity.
    pub fn restore(&self, lease: Lease) {
        self.cell().restore(lease)
    }

    /// Every holder as stored, expired ones included (snapshots).
    pub fn holders_raw(&self) -> Vec<Lease> {
        self.cell
            .get()
            .map(LeaseCell::holders_raw)
            .unwrap_or_default()
    }

    /// Makes each holder's seat last at least until `now + timeout_ms`
    /// (borrowed seats keep their own end). Used after recovery: renewals are
    /// not logged, so a restored seat is given a full timeout rather than
    /// taken from a holder that may still be renewing it.
    pub fn extend_all(&self, now: Millis, timeout_ms: Millis) {
        if let Some(c) = self.cell.get() {
            c.extend_all(now, timeout_ms)
        }
    }

    /// Drops expired holders; returns how many were freed.
    pub fn sweep(&self, now: Millis) -> usize {
        self.cell.get().map_or(0, |c| c.sweep(now))
    }

    pub fn holds(&self, holder: &str, now: Millis) -> bool {
        self.cell.get().is_some_and(|c| c.holds(holder, now))
    }

    /// `holder`'s seat, if it holds one at `now`.
    pub fn lease_of(&self, holder: &str, now: Millis) -> Option<Lease> {
        self.cell.get()?.lease_of(holder, now)
    }

    pub fn in_use(&self, now: Millis) -> u32 {
        self.cell.get().map_or(0, |c| c.in_use(now))
    }

    /// Holder count as of the last change, without taking the lock.
    pub fn in_use_hint(&self) -> u32 {
        self.cell
            .get()
            .map_or(0, |c| c.in_use.load(Ordering::Acquire))
    }

    pub fn holders(&self, now: Millis) -> Vec<Lease> {
        self.cell.get().map(|c| c.holders(now)).unwrap_or_default()
    }

    pub fn capacity(&self) -> u32 {
        self.cell.get().map_or(0, |c| c.state.lock().capacity)
    }

    /// Changes the number of seats. Holders past a lowered capacity keep their
    /// seats until they release or expire; no new holder gets in until below it.
    pub fn set_capacity(&self, capacity: u32) {
        if capacity == 0 && self.cell.get().is_none() {
            return;
        }
        self.cell().state.lock().capacity = capacity.min(LEASE_POOL_SEATS_MAX);
    }
}

/// The pool itself; its methods are documented on [`LeasePool`].
impl LeaseCell {
    fn new(capacity: u32) -> Self {
        LeaseCell {
            state: Mutex::new(LeaseState {
                capacity: capacity.min(LEASE_POOL_SEATS_MAX),
                holders: Vec::new(),
            }),
            in_use: AtomicU32::new(0),
        }
    }

    fn acquire(
        &self,
        holder: &str,
        now: Millis,
        timeout_ms: Millis,
    ) -> Result<(LeaseOutcome, u32), LeasesExhausted> {
        let mut st = self.state.lock();
        st.purge(now);
        let until = now.saturating_add(timeout_ms);
        let outcome = if let Some(lease) = st.holders.iter_mut().find(|l| &*l.holder == holder) {
            // A borrowed seat is not shortened by a renewal.
            lease.expires_at = lease.expires_at.max(until);
            LeaseOutcome::Renewed
        } else {
            if st.holders.len() as u32 >= st.capacity {
                self.in_use
                    .store(st.holders.len() as u32, Ordering::Release);
                return Err(LeasesExhausted);
            }
            st.holders.push(Lease {
                holder: holder.into(),
                since: now,
                expires_at: until,
                borrowed_until: None,
            });
            // Checked in release builds: an over-granted seat is lost revenue.
            assert!(
                st.holders.len() as u32 <= st.capacity,
                "lease pool over capacity"
            );
            LeaseOutcome::Acquired
        };
        let n = st.holders.len() as u32;
        self.in_use.store(n, Ordering::Release);
        Ok((outcome, n))
    }

    fn borrow(&self, holder: &str, now: Millis, until: Millis) -> Result<u32, LeasesExhausted> {
        let mut st = self.state.lock();
        st.purge(now);
        if let Some(lease) = st.holders.iter_mut().find(|l| &*l.holder == holder) {
            lease.expires_at = until;
            lease.borrowed_until = Some(until);
        } else {
            if st.holders.len() as u32 >= st.capacity {
                return Err(LeasesExhausted);
            }
            st.holders.push(Lease {
                holder: holder.into(),
                since: now,
                expires_at: until,
                borrowed_until: Some(until),
            });
        }
        let n = st.holders.len() as u32;
        self.in_use.store(n, Ordering::Release);
        Ok(n)
    }

    fn renew(&self, holder: &str, now: Millis, timeout_ms: Millis) -> Option<u32> {
        let mut st = self.state.lock();
        let lease = st
            .holders
            .iter_mut()
            .find(|l| &*l.holder == holder && l.expires_at > now)?;
        lease.expires_at = lease.expires_at.max(now.saturating_add(timeout_ms));
        Some(self.in_use.load(Ordering::Acquire))
    }

    fn release(&self, holder: &str, now: Millis) -> bool {
        let mut st = self.state.lock();
        st.purge(now);
        let before = st.holders.len();
        st.holders.retain(|l| &*l.holder != holder);
        let n = st.holders.len();
        self.in_use.store(n as u32, Ordering::Release);
        n < before
    }

    fn restore(&self, lease: Lease) {
        let mut st = self.state.lock();
        st.holders.retain(|l| l.holder != lease.holder);
        st.holders.push(lease);
        self.in_use
            .store(st.holders.len() as u32, Ordering::Release);
    }

    fn holders_raw(&self) -> Vec<Lease> {
        self.state.lock().holders.clone()
    }

    fn extend_all(&self, now: Millis, timeout_ms: Millis) {
        let mut st = self.state.lock();
        let until = now.saturating_add(timeout_ms);
        for l in st.holders.iter_mut() {
            if l.borrowed_until.is_none() {
                l.expires_at = l.expires_at.max(until);
            }
        }
    }

    fn sweep(&self, now: Millis) -> usize {
        let mut st = self.state.lock();
        let before = st.holders.len();
        st.purge(now);
        self.in_use
            .store(st.holders.len() as u32, Ordering::Release);
        before - st.holders.len()
    }

    fn holds(&self, holder: &str, now: Millis) -> bool {
        self.state
            .lock()
            .holders
            .iter()
            .any(|l| &*l.holder == holder && l.expires_at > now)
    }

    fn lease_of(&self, holder: &str, now: Millis) -> Option<Lease> {
        self.state
            .lock()
            .holders
            .iter()
            .find(|l| &*l.holder == holder && l.expires_at > now)
            .cloned()
    }

    fn in_use(&self, now: Millis) -> u32 {
        let st = self.state.lock();
        st.holders.iter().filter(|l| l.expires_at > now).count() as u32
    }

    fn holders(&self, now: Millis) -> Vec<Lease> {
        let st = self.state.lock();
        st.holders
            .iter()
            .filter(|l| l.expires_at > now)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An unallocated pool is one of capacity 0; raising the capacity or
    /// restoring a holder allocates it.
    #[test]
    fn absent_pool_is_capacity_zero_until_raised() {
        let p = LeasePool::new(0);
        assert!(p.cell.get().is_none());
        assert_eq!(p.acquire("a", 0, 10), Err(LeasesExhausted));
        assert_eq!(p.borrow("a", 0, 10), Err(LeasesExhausted));
        assert_eq!(p.renew("a", 0, 10), None);
        assert!(!p.release("a", 0) && !p.holds("a", 0));
        assert_eq!(
            (p.in_use(0), p.in_use_hint(), p.capacity(), p.sweep(0)),
            (0, 0, 0, 0)
        );
        assert!(p.holders(0).is_empty() && p.holders_raw().is_empty());
        p.set_capacity(0);
        assert!(p.cell.get().is_none(), "capacity 0 allocates nothing");
        p.set_capacity(1);
        assert_eq!(p.acquire("a", 0, 10), Ok((LeaseOutcome::Acquired, 1)));
        assert_eq!(p.acquire("b", 0, 10), Err(LeasesExhausted));
        let q = LeasePool::default();
        q.restore(Lease {
            holder: "r".into(),
            since: 0,
            expires_at: 50,
            borrowed_until: None,
        });
        assert_eq!((q.in_use(49), q.in_use(50), q.capacity()), (1, 0, 0));
    }

    #[test]
    fn acquire_renew_expire_release() {
        let pool = LeasePool::new(2);
        assert_eq!(pool.acquire("a", 0, 1000), Ok((LeaseOutcome::Acquired, 1)));
        assert_eq!(pool.acquire("b", 10, 1000), Ok((LeaseOutcome::Acquired, 2)));
        assert_eq!(pool.acquire("c", 20, 1000), Err(LeasesExhausted));
        assert_eq!(pool.acquire("a", 500, 1000), Ok((LeaseOutcome::Renewed, 2)));
        // b expires at 1010; a was renewed until 1500.
        assert_eq!(
            pool.acquire("c", 1010, 1000),
            Ok((LeaseOutcome::Acquired, 2))
        );
        assert!(pool.release("a", 1100));
        assert!(!pool.release("a", 1100));
        assert_eq!(pool.in_use(1100), 1);
    }

    #[test]
    fn borrowed_seat_outlives_timeout_and_is_not_shortened() {
        let pool = LeasePool::new(1);
        assert_eq!(pool.borrow("a", 0, 10_000), Ok(1));
        assert_eq!(pool.acquire("a", 100, 1000), Ok((LeaseOutcome::Renewed, 1)));
        assert_eq!(pool.acquire("b", 5000, 1000), Err(LeasesExhausted));
        assert!(pool.holds("a", 9_999));
        assert_eq!(pool.sweep(10_000), 1);
    }

    #[test]
    fn racing_holders_get_exactly_capacity() {
        let pool = Arc::new(LeasePool::new(10));
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.acquire(&format!("hw-{i}"), 0, 60_000).is_ok())
            })
            .collect();
        let winners = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().expect("thread"))
            .filter(|ok| *ok)
            .count();
        assert_eq!(winners, 10);
        assert_eq!(pool.in_use(1), 10);
    }
}
