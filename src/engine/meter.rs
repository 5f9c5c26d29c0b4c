//! Meter: a consumption counter with a maximum, an overage allowance, optional
//! unlimited and negative use, and an optional calendar period after which it
//! starts again from zero.
//!
//! The counter is one atomic updated by CAS so concurrent adds are exact and never
//! pass the limit. Limits are atomics too (admin updates are rare; reads are on
//! every add). The period reset takes a tiny mutex only on the first add after a
//! boundary.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};

use once_cell::race::OnceBox;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::time::{Millis, Period};

/// The configuration of a meter: what an admin sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MeterLimits {
    pub max: i64,
    pub allow_overages: bool,
    pub max_overages: i64,
    pub unlimited: bool,
    pub allow_negative: bool,
    /// Start from zero at each period boundary (needs `period`).
    pub reset: bool,
    pub period: Option<Period>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterError {
    /// A negative amount on a meter that does not allow it.
    NegativeNotAllowed,
    /// The add would pass max (plus overages, if allowed).
    LimitReached,
    /// The add would take the total below zero.
    BelowZero,
    /// The add overflows a 64-bit counter.
    Overflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterAdd {
    /// Total after the add.
    pub total: i64,
    /// The total is past `max` (inside the overage allowance).
    pub excess: bool,
}

const NO_PERIOD: u8 = 0;

fn period_code(p: Option<Period>) -> u8 {
    match p {
        None => NO_PERIOD,
        Some(Period::Daily) => 1,
        Some(Period::Weekly) => 2,
        Some(Period::Monthly) => 3,
        Some(Period::Annually) => 4,
    }
}

fn period_of(code: u8) -> Option<Period> {
    match code {
        1 => Some(Period::Daily),
        2 => Some(Period::Weekly),
        3 => Some(Period::Monthly),
        4 => Some(Period::Annually),
        _ => None,
    }
}

/// A meter. Most features do not meter, so the counter is allocated on the
/// first change that needs it (limits other than the default, a non-zero
/// total) and is 8 bytes until then (issue #3's memory target). An absent meter
/// reads exactly as a default one holding zero, and once allocated it stays.
#[derive(Debug, Default)]
pub struct Meter {
    cell: OnceBox<MeterCell>,
}

#[derive(Debug)]
struct MeterCell {
    used: AtomicI64,
    max: AtomicI64,
    max_overages: AtomicI64,
    allow_overages: AtomicBool,
    unlimited: AtomicBool,
    allow_negative: AtomicBool,
    reset: AtomicBool,
    period: AtomicU8,
    /// First instant of the next period; `i64::MAX` when the meter never resets.
    next_reset: AtomicI64,
    /// Units held by open reservations (two-phase use, see `engine::reserve`).
    /// They are part of `used` (the counter the limit is checked against), so
    /// an add and a reservation are one CAS on one word and never over-grant
    /// together; readers subtract them to report what was really used.
    /// Changed only under `reset_lock`, so that a period roll sees it whole.
    reserved: AtomicI64,
    /// Serialises the reset itself so two adders past a boundary reset once,
    /// and every change of `reserved` with it.
    reset_lock: Mutex<()>,
}

impl Meter {
    pub fn new(limits: MeterLimits, used: i64, now: Millis) -> Self {
        let m = Meter::default();
        m.set_limits(limits, now);
        m.set_used(used);
        m
    }

    /// The allocated meter, allocating a default one first if needed.
    fn cell(&self) -> &MeterCell {
        self.cell
            .get_or_init(|| Box::new(MeterCell::new(MeterLimits::default(), 0, 0)))
    }

    pub fn limits(&self) -> MeterLimits {
        self.cell.get().map(MeterCell::limits).unwrap_or_default()
    }

    /// Changes the limits. A period change starts the next reset from `now`.
    pub fn set_limits(&self, l: MeterLimits, now: Millis) {
        if l == MeterLimits::default() && self.cell.get().is_none() {
            return;
        }
        self.cell().set_limits(l, now)
    }

    /// Starts from zero if `now` is past the period boundary.
    #[inline]
    pub fn roll(&self, now: Millis) {
        if let Some(c) = self.cell.get() {
            c.roll(now)
        }
    }

    /// Adds `amount` atomically, refusing what the limits forbid.
    pub fn add(&self, amount: i64, now: Millis) -> Result<MeterAdd, MeterError> {
        match self.cell.get() {
            Some(c) => c.add(amount, now),
            // What a default meter holding zero answers (max 0, no overages,
            // no negative use), without allocating one for a refused add.
            None if amount < 0 => Err(MeterError::NegativeNotAllowed),
            None if amount > 0 => Err(MeterError::LimitReached),
            None => Ok(MeterAdd {
                total: 0,
                excess: false,
            }),
        }
    }

    /// Total in the period that contains `now`: zero once `now` is past the
    /// period boundary. A read never changes the meter (only adds roll it), so
    /// that replaying the logged commands rebuilds exactly the same state.
    pub fn used(&self, now: Millis) -> i64 {
        self.cell.get().map_or(0, |c| c.used(now))
    }

    /// How much more an add could take in the period that contains `now`
    /// (overage included; `i64::MAX` when unlimited).
    pub fn headroom(&self, now: Millis) -> i64 {
        let l = self.limits();
        if l.unlimited {
            return i64::MAX;
        }
        let limit = if l.allow_overages {
            l.max.saturating_add(l.max_overages)
        } else {
            l.max
        };
        limit
            .saturating_sub(self.used(now))
            .saturating_sub(self.reserved())
            .max(0)
    }

    /// Units held by open reservations.
    pub fn reserved(&self) -> i64 {
        self.cell
            .get()
            .map_or(0, |c| c.reserved.load(Ordering::Acquire))
    }

    /// Holds `units` (> 0) against the limit for a reservation: they count
    /// as used for every later add and reservation until [`Meter::settle`].
    /// Refuses, changing nothing, what an add of `units` would be refused.
    pub fn reserve(&self, units: i64, now: Millis) -> Result<MeterAdd, MeterError> {
        if self.cell.get().is_none() && self.limits() == MeterLimits::default() {
            return Err(MeterError::LimitReached);
        }
        self.cell().reserve(units, now)
    }

    /// Ends a reservation of `reserved` units: `committed` of them (at most
    /// `reserved`) become used, the rest are free again.
    pub fn settle(&self, reserved: i64, committed: i64, now: Millis) {
        self.cell().settle(reserved, committed, now)
    }

    /// Marks `units` of the restored counter as held by a reservation
    /// (snapshot recovery: the counter already includes them).
    pub fn hold(&self, units: i64) {
        self.cell().hold(units)
    }

    /// Total without rolling: what the counter holds right now.
    pub fn used_raw(&self) -> i64 {
        self.cell
            .get()
            .map_or(0, |c| c.used.load(Ordering::Acquire))
    }

    /// Sets what was used (admin correction); units held by reservations stay held.
    pub fn set_used(&self, used: i64) {
        if used == 0 && self.cell.get().is_none() {
            return;
        }
        let c = self.cell();
        let _g = c.reset_lock.lock();
        let held = c.reserved.load(Ordering::Acquire);
        c.used.store(used.saturating_add(held), Ordering::Release)
    }

    /// The counter and its next boundary exactly (`i64::MAX`: none), for snapshots.
    pub fn state(&self) -> (i64, Millis) {
        self.cell.get().map_or((0, i64::MAX), MeterCell::state)
    }

    /// Puts back what [`Meter::state`] gave (snapshot recovery).
    pub fn restore(&self, used: i64, next_reset: Millis) {
        if used == 0 && next_reset == i64::MAX && self.cell.get().is_none() {
            return;
        }
        self.cell().restore(used, next_reset)
    }

    pub fn next_reset(&self) -> Option<Millis> {
        self.cell.get().and_then(MeterCell::next_reset)
    }
}

/// The meter itself; its methods are documented on [`Meter`].
impl MeterCell {
    fn new(limits: MeterLimits, used: i64, now: Millis) -> Self {
        let m = MeterCell {
            used: AtomicI64::new(used),
            max: AtomicI64::new(0),
            max_overages: AtomicI64::new(0),
            allow_overages: AtomicBool::new(false),
            unlimited: AtomicBool::new(false),
            allow_negative: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            period: AtomicU8::new(NO_PERIOD),
            next_reset: AtomicI64::new(i64::MAX),
            reserved: AtomicI64::new(0),
            reset_lock: Mutex::new(()),
        };
        m.set_limits(limits, now);
        m
    }

    fn limits(&self) -> MeterLimits {
        MeterLimits {
            max: self.max.load(Ordering::Acquire),
            allow_overages: self.allow_overages.load(Ordering::Acquire),
            max_overages: self.max_overages.load(Ordering::Acquire),
            unlimited: self.unlimited.load(Ordering::Acquire),
            allow_negative: self.allow_negative.load(Ordering::Acquire),
            reset: self.reset.load(Ordering::Acquire),
            period: period_of(self.period.load(Ordering::Acquire)),
        }
    }

    fn set_limits(&self, l: MeterLimits, now: Millis) {
        let _g = self.reset_lock.lock();
        self.max.store(l.max, Ordering::Release);
        self.max_overages
            .store(l.max_overages.max(0), Ordering::Release);
        self.allow_overages
            .store(l.allow_overages, Ordering::Release);
        self.unlimited.store(l.unlimited, Ordering::Release);
        self.allow_negative
            .store(l.allow_negative, Ordering::Release);
        self.reset.store(l.reset, Ordering::Release);
        self.period.store(period_code(l.period), Ordering::Release);
        let next = match (l.reset, l.period) {
            (true, Some(p)) => p.next_start(now),
            _ => i64::MAX,
        };
        self.next_reset.store(next, Ordering::Release);
    }

    #[inline]
    fn roll(&self, now: Millis) {
        if now < self.next_reset.load(Ordering::Acquire) {
            return;
        }
        let _g = self.reset_lock.lock();
        self.roll_locked(now);
    }

    /// [`MeterCell::roll`] with `reset_lock` held.
    fn roll_locked(&self, now: Millis) {
        if now < self.next_reset.load(Ordering::Acquire) {
            return;
        }
        // Start again from what open reservations hold (they count in the
        // period they are committed in), then publish the new boundary: an
        // adder that sees the new boundary is then sure to add onto the new
        // period's counter.
        self.used
            .store(self.reserved.load(Ordering::Acquire), Ordering::Release);
        let next = match period_of(self.period.load(Ordering::Acquire)) {
            Some(p) => p.next_start(now),
            None => i64::MAX,
        };
        self.next_reset.store(next, Ordering::Release);
    }

    fn add(&self, amount: i64, now: Millis) -> Result<MeterAdd, MeterError> {
        if amount < 0 && !self.allow_negative.load(Ordering::Acquire) {
            return Err(MeterError::NegativeNotAllowed);
        }
        let max = self.max.load(Ordering::Acquire);
        let limit = if self.unlimited.load(Ordering::Acquire) {
            i64::MAX
        } else if self.allow_overages.load(Ordering::Acquire) {
            max.saturating_add(self.max_overages.load(Ordering::Acquire))
        } else {
            max
        };
        if now >= self.next_reset.load(Ordering::Acquire) {
            // A refused add must leave the meter as it was: refusals are not
            // logged, so a reset done by one would be missing from a replay.
            // On a fresh period the total is what reservations hold.
            let held = self.reserved.load(Ordering::Acquire);
            if amount > 0 && amount > limit.saturating_sub(held) {
                return Err(MeterError::LimitReached);
            }
            if amount < 0 {
                return Err(MeterError::BelowZero);
            }
            self.roll(now);
        }
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let new = cur.checked_add(amount).ok_or(MeterError::Overflow)?;
            if amount > 0 && new > limit {
                return Err(MeterError::LimitReached);
            }
            // Units held by reservations are not anyone's to give back.
            if amount < 0 && new < self.reserved.load(Ordering::Acquire) {
                return Err(MeterError::BelowZero);
            }
            match self
                .used
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let used = new - self.reserved.load(Ordering::Acquire);
                    return Ok(MeterAdd {
                        total: used,
                        excess: used > max && !self.unlimited.load(Ordering::Relaxed),
                    });
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn used(&self, now: Millis) -> i64 {
        let used = self.used.load(Ordering::Acquire);
        if now >= self.next_reset.load(Ordering::Acquire) {
            0
        } else {
            used - self.reserved.load(Ordering::Acquire)
        }
    }

    fn reserve(&self, units: i64, now: Millis) -> Result<MeterAdd, MeterError> {
        assert!(units > 0, "a reservation holds a positive number of units");
        let _g = self.reset_lock.lock();
        // Check before rolling: a refused reservation must change nothing.
        let limit = self.limit();
        let start = if now >= self.next_reset.load(Ordering::Acquire) {
            self.reserved.load(Ordering::Acquire)
        } else {
            self.used.load(Ordering::Acquire)
        };
        let new = start.checked_add(units).ok_or(MeterError::Overflow)?;
        if new > limit {
            return Err(MeterError::LimitReached);
        }
        self.roll_locked(now);
        // Under the lock no reservation changes, but adds may still race: CAS.
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let new = cur.checked_add(units).ok_or(MeterError::Overflow)?;
            if new > limit {
                return Err(MeterError::LimitReached);
            }
            match self
                .used
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let held = self.reserved.fetch_add(units, Ordering::AcqRel) + units;
        Ok(MeterAdd {
            total: self.used.load(Ordering::Acquire) - held,
            excess: false,
        })
    }

    fn settle(&self, reserved: i64, committed: i64, now: Millis) {
        assert!(
            (0..=reserved).contains(&committed),
            "a commit uses at most the units it reserved"
        );
        let _g = self.reset_lock.lock();
        self.roll_locked(now);
        let held = self.reserved.fetch_sub(reserved, Ordering::AcqRel);
        assert!(
            held >= reserved,
            "reservations released more units than they held"
        );
        let before = self.used.fetch_sub(reserved - committed, Ordering::AcqRel);
        assert!(
            before - (reserved - committed) >= held - reserved,
            "a meter's counter fell below what its reservations hold"
        );
    }

    fn hold(&self, units: i64) {
        let _g = self.reset_lock.lock();
        self.reserved.fetch_add(units, Ordering::AcqRel);
    }

    /// The most the counter may reach: max, plus overages when allowed.
    fn limit(&self) -> i64 {
        let max = self.max.load(Ordering::Acquire);
        if self.unlimited.load(Ordering::Acquire) {
            i64::MAX
        } else if self.allow_overages.load(Ordering::Acquire) {
            max.saturating_add(self.max_overages.load(Ordering::Acquire))
        } else {
            max
        }
    }

    fn state(&self) -> (i64, Millis) {
        let _g = self.reset_lock.lock();
        (
            self.used.load(Ordering::Acquire),
            self.next_reset.load(Ordering::Acquire),
        )
    }

    fn restore(&self, used: i64, next_reset: Millis) {
        let _g = self.reset_lock.lock();
        self.used.store(used, Ordering::Release);
        self.next_reset.store(next_reset, Ordering::Release);
    }

    fn next_reset(&self) -> Option<Millis> {
        match self.next_reset.load(Ordering::Acquire) {
            i64::MAX => None,
            t => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::time::parse_instant;
    use std::sync::Arc;

    fn limits(max: i64) -> MeterLimits {
        MeterLimits {
            max,
            ..MeterLimits::default()
        }
    }

    /// An unallocated meter answers exactly as an allocated default one, and
    /// allocates only for a change that makes it differ.
    #[test]
    fn absent_meter_reads_as_a_default_one() {
        let absent = Meter::new(MeterLimits::default(), 0, 0);
        let present = Meter::default();
        present.cell();
        assert!(absent.cell.get().is_none() && present.cell.get().is_some());
        for amount in [-1, 0, 1] {
            assert_eq!(absent.add(amount, 5), present.add(amount, 5), "{amount}");
        }
        assert_eq!(absent.limits(), present.limits());
        assert_eq!(absent.state(), present.state());
        assert_eq!(absent.next_reset(), present.next_reset());
        assert_eq!((absent.used(5), absent.used_raw()), (0, 0));
        absent.set_used(0);
        absent.restore(0, i64::MAX);
        absent.set_limits(MeterLimits::default(), 5);
        assert!(
            absent.cell.get().is_none(),
            "no-op changes allocate nothing"
        );
        absent.set_limits(limits(3), 5);
        assert_eq!(absent.add(3, 5).map(|a| a.total), Ok(3));
        assert_eq!(absent.add(1, 5), Err(MeterError::LimitReached));
        let restored = Meter::default();
        restored.restore(7, 100);
        assert_eq!((restored.used(99), restored.used(100)), (7, 0));
    }

    #[test]
    fn refuses_past_max_and_allows_overages() {
        let m = Meter::new(limits(10), 0, 0);
        assert_eq!(
            m.add(10, 0),
            Ok(MeterAdd {
                total: 10,
                excess: false
            })
        );
        assert_eq!(m.add(1, 0), Err(MeterError::LimitReached));
        m.set_limits(
            MeterLimits {
                allow_overages: true,
                max_overages: 5,
                ..limits(10)
            },
            0,
        );
        assert_eq!(
            m.add(5, 0),
            Ok(MeterAdd {
                total: 15,
                excess: true
            })
        );
        assert_eq!(m.add(1, 0), Err(MeterError::LimitReached));
        assert_eq!(m.add(-1, 0), Err(MeterError::NegativeNotAllowed));
    }

    #[test]
    fn negative_only_where_allowed_and_never_below_zero() {
        let m = Meter::new(
            MeterLimits {
                allow_negative: true,
                ..limits(10)
            },
            3,
            0,
        );
        assert_eq!(m.add(-2, 0).map(|a| a.total), Ok(1));
        assert_eq!(m.add(-2, 0), Err(MeterError::BelowZero));
    }

    #[test]
    fn resets_at_period_boundary() {
        let t0 = parse_instant("2026-11-30T23:59:00Z").expect("t0");
        let m = Meter::new(
            MeterLimits {
                reset: true,
                period: Some(Period::Monthly),
                ..limits(10)
            },
            0,
            t0,
        );
        assert!(m.add(10, t0).is_ok());
        assert_eq!(m.add(1, t0 + 59_000), Err(MeterError::LimitReached));
        let t1 = parse_instant("2026-12-01T00:00:00Z").expect("t1");
        assert_eq!(m.add(1, t1).map(|a| a.total), Ok(1));
        assert_eq!(m.next_reset(), parse_instant("2027-01-01"));
    }

    /// Reserved units count against the limit for adds and reservations
    /// alike; a settle uses some and frees the rest.
    #[test]
    fn reservations_hold_units_until_settled() {
        let m = Meter::new(limits(10), 0, 0);
        assert_eq!(m.reserve(6, 0).map(|a| a.total), Ok(0));
        assert_eq!((m.used(0), m.reserved(), m.headroom(0)), (0, 6, 4));
        assert_eq!(m.add(5, 0), Err(MeterError::LimitReached));
        assert_eq!(m.reserve(5, 0), Err(MeterError::LimitReached));
        assert_eq!(m.add(4, 0).map(|a| a.total), Ok(4));
        m.settle(6, 2, 0);
        assert_eq!((m.used(0), m.reserved(), m.headroom(0)), (6, 0, 4));
        // Negative adds cannot take back what a reservation holds.
        let n = Meter::new(
            MeterLimits {
                allow_negative: true,
                ..limits(10)
            },
            0,
            0,
        );
        n.reserve(3, 0).expect("reserve");
        assert_eq!(n.add(-1, 0), Err(MeterError::BelowZero));
        // An admin correction keeps the held units held.
        n.set_used(5);
        assert_eq!((n.used(0), n.reserved(), n.headroom(0)), (5, 3, 2));
    }

    /// At a period boundary the new period starts at what open reservations
    /// hold; a commit then counts in the new period.
    #[test]
    fn reservations_carry_over_a_period_boundary() {
        let t0 = parse_instant("2026-11-30T23:00:00Z").expect("t0");
        let t1 = parse_instant("2026-12-01T00:00:00Z").expect("t1");
        let m = Meter::new(
            MeterLimits {
                reset: true,
                period: Some(Period::Monthly),
                ..limits(10)
            },
            0,
            t0,
        );
        m.add(4, t0).expect("add");
        m.reserve(5, t0).expect("reserve");
        assert_eq!((m.used(t1), m.headroom(t1)), (0, 5));
        assert_eq!(m.add(6, t1), Err(MeterError::LimitReached));
        assert_eq!(m.add(5, t1).map(|a| a.total), Ok(5));
        m.settle(5, 3, t1);
        assert_eq!((m.used(t1), m.reserved(), m.headroom(t1)), (8, 0, 2));
    }

    #[test]
    fn concurrent_adds_are_exact() {
        let m = Arc::new(Meter::new(
            MeterLimits {
                unlimited: true,
                ..limits(0)
            },
            0,
            0,
        ));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..500_000 {
                        m.add(1, 0).expect("unlimited");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("thread");
        }
        assert_eq!(m.used(0), 1_000_000);
    }
}
