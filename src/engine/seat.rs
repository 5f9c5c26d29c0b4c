//! Seat pool: a fixed number of units plus an overage allowance, taken and given
//! back one at a time. Used for activations (devices on a license) and, by later
//! surfaces, allotments and packs.
//!
//! Lock-free: `used` is the only contended word and every change to it is a CAS
//! that re-checks the limit, so N racing acquirers for the last seat produce
//! exactly one winner.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Overage value meaning "no upper bound" (Qlik's `-1`).
pub const OVERAGE_UNBOUNDED: u64 = u64::MAX;

#[derive(Debug)]
pub struct SeatPool {
    /// Units the holder paid for.
    capacity: AtomicU64,
    /// Units that may be used past `capacity` (each such grant is "excess").
    overage: AtomicU64,
    /// No limit at all (LicenseSpring `allow_unlimited_activations`).
    unlimited: AtomicBool,
    /// Units currently taken. Invariant: never above `capacity + overage` when
    /// taken through `try_acquire` (limits lowered later may leave it above).
    used: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatGrant {
    /// Within the paid capacity.
    Within,
    /// Past capacity, inside the overage allowance.
    Excess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatsExhausted;

impl SeatPool {
    pub fn new(capacity: u64, overage: u64, unlimited: bool) -> Self {
        SeatPool {
            capacity: AtomicU64::new(capacity),
            overage: AtomicU64::new(overage),
            unlimited: AtomicBool::new(unlimited),
            used: AtomicU64::new(0),
        }
    }

    pub fn try_acquire(&self) -> Result<SeatGrant, SeatsExhausted> {
        let capacity = self.capacity.load(Ordering::Acquire);
        let limit = if self.unlimited.load(Ordering::Acquire) {
            u64::MAX
        } else {
            capacity.saturating_add(self.overage.load(Ordering::Acquire))
        };
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            if cur >= limit {
                return Err(SeatsExhausted);
            }
            match self
                .used
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(if cur >= capacity {
                        SeatGrant::Excess
                    } else {
                        SeatGrant::Within
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives one unit back. Releasing more than was taken is a bug in the caller,
    /// and would silently mint seats, so it is checked in release builds too.
    pub fn release(&self) {
        let prev = self.used.fetch_sub(1, Ordering::AcqRel);
        assert!(prev > 0, "seat pool released below zero");
    }

    /// Takes a unit regardless of limits: used when replaying state that was valid
    /// when it was made (catalog import of existing activations).
    pub fn force_acquire(&self) {
        self.used.fetch_add(1, Ordering::AcqRel);
    }

    /// Sets the units taken exactly (snapshot recovery).
    pub fn restore_used(&self, used: u64) {
        self.used.store(used, Ordering::Release);
    }

    pub fn set_limits(&self, capacity: u64, overage: u64, unlimited: bool) {
        self.capacity.store(capacity, Ordering::Release);
        self.overage.store(overage, Ordering::Release);
        self.unlimited.store(unlimited, Ordering::Release);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    pub fn overage(&self) -> u64 {
        self.overage.load(Ordering::Acquire)
    }

    pub fn unlimited(&self) -> bool {
        self.unlimited.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn grants_capacity_then_overage_then_refuses() {
        let pool = SeatPool::new(2, 1, false);
        assert_eq!(pool.try_acquire(), Ok(SeatGrant::Within));
        assert_eq!(pool.try_acquire(), Ok(SeatGrant::Within));
        assert_eq!(pool.try_acquire(), Ok(SeatGrant::Excess));
        assert_eq!(pool.try_acquire(), Err(SeatsExhausted));
        pool.release();
        assert_eq!(pool.try_acquire(), Ok(SeatGrant::Excess));
        assert_eq!(pool.used(), 3);
    }

    #[test]
    fn unlimited_never_refuses() {
        let pool = SeatPool::new(0, 0, true);
        for _ in 0..1000 {
            assert!(pool.try_acquire().is_ok());
        }
    }

    #[test]
    fn racing_threads_never_over_grant() {
        let pool = Arc::new(SeatPool::new(10, 2, false));
        let winners: usize = (0..8)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || (0..100).filter(|_| pool.try_acquire().is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .sum();
        assert_eq!(winners, 12);
        assert_eq!(pool.used(), 12);
    }

    #[test]
    #[should_panic(expected = "below zero")]
    fn release_below_zero_is_caught() {
        SeatPool::new(1, 0, false).release();
    }
}
