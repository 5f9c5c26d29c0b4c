//! Reservations: two-phase use of a consumption feature's meter or of a
//! license's activation seats, modelled on TigerBeetle's pending transfers.
//!
//! A reservation of units holds them against the
//! meter's limit (they count as used for every later add or reservation, so
//! `remaining = max + overages - used - reserved` never goes below zero), and
//! is then committed (some or all of its units become used, the rest are
//! free), voided (all are free), or expired by the sweeper (`SweepPending`,
//! a logged command) once `expires_at` has passed.
//!
//! A reservation of a seat takes one seat of the license's activation pool
//! (so no activation can take it meanwhile); its commit activates a device
//! on that seat, and a void or expiry gives the seat back.
//!
//! Reservations live in the engine's own tables (not in the feature) so that
//! one lookup by id finds them: `reservations` holds pending and finished
//! ones; finished ones are kept for [`RESERVATION_RETENTION_MS`] (at most
//! [`RESERVATIONS_FINISHED_MAX`], oldest forgotten first) so that a client
//! can read how its reservation ended.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::*;

/// Pending reservations one feature (or one license's seat pool) may hold at once.
pub const RESERVATIONS_PER_FEATURE_MAX: u32 = 10_000;
/// Longest a reservation may stay pending, ms (one day).
pub const RESERVATION_TIMEOUT_MS_MAX: Millis = DAY_MS;
/// How long a finished reservation can still be read, ms (one day).
pub const RESERVATION_RETENTION_MS: Millis = DAY_MS;
/// Finished reservations kept in all (the oldest are forgotten first).
pub const RESERVATIONS_FINISHED_MAX: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: Id,
    pub tenant_id: Id,
    pub license_id: Id,
    /// The metered feature; None for a seat of the license's activation pool.
    pub feature_id: Option<Id>,
    /// Units (or seats) held while pending.
    pub units: i64,
    pub created_at: Millis,
    /// A pending reservation is released by the sweeper from this instant on,
    /// and can no longer be committed.
    pub expires_at: Millis,
    pub state: ReservationState,
    /// The device a seat reservation's commit activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_id: Option<String>,
}

impl Reservation {
    /// The key of its pool in the per-pool count: the feature, or for a
    /// seat the license (ids are unique across kinds).
    fn pool(&self) -> Id {
        self.feature_id.unwrap_or(self.license_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReservationState {
    Pending,
    Committed { units: i64, at: Millis },
    Voided { at: Millis },
    Expired { at: Millis },
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Pending => "pending",
            ReservationState::Committed { .. } => "committed",
            ReservationState::Voided { .. } => "voided",
            ReservationState::Expired { .. } => "expired",
        }
    }

    /// When it finished, if it has.
    pub fn finished_at(self) -> Option<Millis> {
        match self {
            ReservationState::Pending => None,
            ReservationState::Committed { at, .. }
            | ReservationState::Voided { at }
            | ReservationState::Expired { at } => Some(at),
        }
    }
}

impl Reservation {
    /// The state a reader sees at `now`: a pending reservation past its
    /// expiry reads as expired even before the sweeper released it.
    pub fn state_at(&self, now: Millis) -> ReservationState {
        match self.state {
            ReservationState::Pending if now >= self.expires_at => ReservationState::Expired {
                at: self.expires_at,
            },
            s => s,
        }
    }
}

/// The engine's reservation tables. Changed only by commands, which the log
/// applies one at a time; the locks keep readers (and tests without a log)
/// safe.
#[derive(Debug)]
pub struct Reservations {
    /// id -> reservation, pending or finished (sharded).
    pub(super) all: Map<Id, Reservation>,
    /// feature id (or license id, for seats) -> its pending reservations (sharded).
    pub(super) open: Map<Id, u32>,
    /// license id -> ids of its pending reservations: what a preview copies.
    pub(super) pending_by_license: Map<Id, BTreeSet<Id>>,
    /// Pending reservations by expiry: what the sweeper releases.
    pub(super) by_expiry: parking_lot::Mutex<BTreeSet<(Millis, Id)>>,
    /// Finished reservations in the order they finished: what the sweeper
    /// forgets, oldest first.
    pub(super) finished: parking_lot::Mutex<VecDeque<(Millis, Id)>>,
}

impl Reservations {
    /// Forgets every reservation (a restore of the whole state).
    pub(super) fn clear(&self) {
        self.all.clear();
        self.open.clear();
        self.pending_by_license.clear();
        self.by_expiry.lock().clear();
        self.finished.lock().clear();
    }
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            all: new_map(),
            open: new_map(),
            pending_by_license: new_map(),
            by_expiry: Default::default(),
            finished: Default::default(),
        }
    }
}

impl Engine {
    /// A reservation by id, if it belongs to `tenant_id`.
    pub fn reservation(&self, tenant_id: Id, id: Id) -> Option<Reservation> {
        self.reservations
            .all
            .get(&id)
            .filter(|r| r.tenant_id == tenant_id)
            .map(|r| r.clone())
    }

    /// Pending reservations of a feature (or of a license's seats, by its id).
    pub fn reservations_open(&self, pool: Id) -> u32 {
        self.reservations.open.get(&pool).map_or(0, |n| *n)
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of Command::Reserve")]
    pub(super) fn reserve(
        &self,
        id: Id,
        tenant_id: Id,
        license_id: Id,
        feature_id: Option<Id>,
        units: i64,
        timeout_ms: Millis,
        now: Millis,
    ) -> R<Outcome> {
        if units <= 0 || (feature_id.is_none() && units != 1) {
            return Err(EngineError::Invalid(
                "units",
                "must be a positive integer (1 for a seat)",
            ));
        }
        if !(1..=RESERVATION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(EngineError::Invalid(
                "timeout_ms",
                "must be 1 to 86400000 (one day)",
            ));
        }
        if self.reservations.all.contains_key(&id) {
            return Err(EngineError::Duplicate("reservation"));
        }
        let lic = self
            .license(license_id)
            .filter(|l| l.tenant_id == tenant_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let pool = feature_id.unwrap_or(license_id);
        if self.reservations_open(pool) >= RESERVATIONS_PER_FEATURE_MAX {
            return Err(EngineError::TooMany("pending reservations"));
        }
        match feature_id {
            Some(fid) => self.hold_units(&lic, fid, units, now)?,
            None => self.hold_seat(&lic)?,
        }
        *self.reservations.open.entry(pool).or_insert(0) += 1;
        self.see_id(id);
        let expires_at = now.saturating_add(timeout_ms);
        self.reservations.all.insert(
            id,
            Reservation {
                id,
                tenant_id,
                license_id,
                feature_id,
                units,
                created_at: now,
                expires_at,
                state: ReservationState::Pending,
                hardware_id: None,
            },
        );
        self.reservations.by_expiry.lock().insert((expires_at, id));
        self.reservations
            .pending_by_license
            .entry(license_id)
            .or_default()
            .insert(id);
        Ok(Outcome::Reserved { id, expires_at })
    }

    fn hold_units(&self, lic: &License, feature_id: Id, units: i64, now: Millis) -> R<()> {
        let f = self.feature_by_id(lic, feature_id)?;
        if !f.is_consumption() {
            return Err(EngineError::NotConsumption);
        }
        f.meter.reserve(units, now).map_err(|e| match e {
            MeterError::LimitReached | MeterError::Overflow => {
                EngineError::FeatureConsumptionLimitReached
            }
            other => meter_err(other),
        })?;
        Ok(())
    }

    /// Takes one activation seat, as an activation would (the user's own
    /// limit included), for a seat reservation.
    fn hold_seat(&self, lic: &License) -> R<()> {
        let user_id = lic.spec.read().user_id;
        self.take_activation_seat(lic, user_id)
    }

    /// Commits a pending reservation: `units` of its units (all with None),
    /// or for a seat, the activation of `device` on the seat it holds.
    pub(super) fn commit_reservation(
        &self,
        tenant_id: Id,
        id: Id,
        units: Option<i64>,
        device: Option<&SeatDevice>,
        now: Millis,
    ) -> R<Outcome> {
        let r = self.pending(tenant_id, id, now)?;
        let committed = units.unwrap_or(r.units);
        if committed < 0 {
            return Err(EngineError::Invalid("units", "must not be negative"));
        }
        if committed > r.units {
            return Err(EngineError::ReservationUnitsExceeded);
        }
        let state = ReservationState::Committed {
            units: committed,
            at: now,
        };
        match (r.feature_id, device) {
            (Some(_), None) => self.finish(&r, committed, state, now),
            (None, Some(d)) => {
                if committed != 1 {
                    return Err(EngineError::Invalid("units", "a seat commits 1"));
                }
                self.activate_on_seat(&r, d, now)?;
                self.finish(&r, 1, state, now);
                if let Some(mut e) = self.reservations.all.get_mut(&r.id) {
                    e.hardware_id = Some(d.hardware_id.clone());
                }
            }
            (Some(_), Some(_)) => {
                return Err(EngineError::Invalid(
                    "hardware_id",
                    "only a seat reservation activates a device",
                ))
            }
            (None, None) => {
                return Err(EngineError::Invalid(
                    "hardware_id",
                    "a seat reservation is committed by activating a device",
                ))
            }
        }
        Ok(Outcome::Settled { committed })
    }

    /// Activates `d` with the seat `r` holds: the seat is handed to the
    /// activation (which takes one); if the activation is refused the seat
    /// is held again, so a refused commit changes nothing.
    fn activate_on_seat(&self, r: &Reservation, d: &SeatDevice, now: Millis) -> R<()> {
        let lic = self
            .license(r.license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        lic.activations.release();
        match self.activate(r.license_id, &d.hardware_id, &d.info, d.device_id, now) {
            Ok(_) => Ok(()),
            Err(e) => {
                lic.activations.force_acquire();
                Err(e)
            }
        }
    }

    pub(super) fn void_reservation(&self, tenant_id: Id, id: Id, now: Millis) -> R<Outcome> {
        let r = self.pending(tenant_id, id, now)?;
        self.finish(&r, 0, ReservationState::Voided { at: now }, now);
        Ok(Outcome::Settled { committed: 0 })
    }

    /// The reservation `id` of `tenant_id`, if it is pending and not expired.
    fn pending(&self, tenant_id: Id, id: Id, now: Millis) -> R<Reservation> {
        let r = self
            .reservation(tenant_id, id)
            .ok_or(EngineError::ReservationNotFound)?;
        match r.state_at(now) {
            ReservationState::Pending => Ok(r),
            ReservationState::Expired { .. } => Err(EngineError::ReservationExpired),
            _ => Err(EngineError::ReservationClosed),
        }
    }

    /// Settles a pending reservation on its pool and records how it ended.
    /// A committed seat was handed to its device already; any other ending
    /// gives the seat back.
    fn finish(&self, r: &Reservation, committed: i64, state: ReservationState, now: Millis) {
        let lic = self.license(r.license_id);
        match r.feature_id {
            Some(fid) => {
                if let Some(f) = lic.and_then(|l| self.feature_by_id(&l, fid).ok()) {
                    f.meter.settle(r.units, committed, now);
                }
            }
            None if committed == 0 => {
                if let Some(l) = lic {
                    l.activations.release();
                }
            }
            None => {}
        }
        if let Some(mut n) = self.reservations.open.get_mut(&r.pool()) {
            *n = n.saturating_sub(1);
        }
        self.reservations.open.remove_if(&r.pool(), |_, n| *n == 0);
        if let Some(mut ids) = self.reservations.pending_by_license.get_mut(&r.license_id) {
            ids.remove(&r.id);
        }
        self.reservations
            .pending_by_license
            .remove_if(&r.license_id, |_, ids| ids.is_empty());
        self.reservations
            .by_expiry
            .lock()
            .remove(&(r.expires_at, r.id));
        if let Some(mut e) = self.reservations.all.get_mut(&r.id) {
            e.state = state;
        }
        let mut finished = self.reservations.finished.lock();
        finished.push_back((now, r.id));
        while finished.len() > RESERVATIONS_FINISHED_MAX {
            if let Some((_, old)) = finished.pop_front() {
                self.reservations.all.remove(&old);
            }
        }
    }

    /// Releases what expired by `now` and forgets what finished before the
    /// retention; returns how many reservations changed.
    pub(super) fn sweep_reservations(&self, now: Millis) -> usize {
        let due: Vec<(Millis, Id)> = {
            let by_expiry = self.reservations.by_expiry.lock();
            by_expiry
                .iter()
                .take_while(|(at, _)| *at <= now)
                .copied()
                .collect()
        };
        let mut n = 0;
        for (at, id) in due {
            let Some(r) = self.reservations.all.get(&id).map(|r| r.clone()) else {
                continue;
            };
            self.finish(&r, 0, ReservationState::Expired { at }, now);
            n += 1;
        }
        let mut finished = self.reservations.finished.lock();
        while let Some(&(at, id)) = finished.front() {
            if at.saturating_add(RESERVATION_RETENTION_MS) > now {
                break;
            }
            finished.pop_front();
            self.reservations.all.remove(&id);
            n += 1;
        }
        n
    }

    /// Every reservation, pending ones first, then finished ones in the
    /// order they finished (snapshots).
    pub fn reservations_image(&self) -> Vec<Reservation> {
        let mut out: Vec<Reservation> = self
            .reservations
            .all
            .iter()
            .filter(|r| r.state == ReservationState::Pending)
            .map(|r| r.clone())
            .collect();
        out.sort_by_key(|r| r.id);
        let finished = self.reservations.finished.lock();
        out.extend(
            finished
                .iter()
                .filter_map(|(_, id)| self.reservations.all.get(id).map(|r| r.clone())),
        );
        out
    }

    /// Puts back what [`Engine::reservations_image`] gave, after the
    /// licenses (the meters' counters already include the pending units,
    /// the seat pools' counts the pending seats).
    pub fn restore_reservations(&self, list: Vec<Reservation>) -> R<()> {
        for r in list {
            self.see_id(r.id);
            match r.state.finished_at() {
                None => {
                    let lic = self
                        .license(r.license_id)
                        .ok_or(EngineError::LicenseNotFound)?;
                    if let Some(fid) = r.feature_id {
                        self.feature_by_id(&lic, fid)?.meter.hold(r.units);
                    }
                    *self.reservations.open.entry(r.pool()).or_insert(0) += 1;
                    self.reservations
                        .pending_by_license
                        .entry(r.license_id)
                        .or_default()
                        .insert(r.id);
                    self.reservations
                        .by_expiry
                        .lock()
                        .insert((r.expires_at, r.id));
                }
                Some(at) => self.reservations.finished.lock().push_back((at, r.id)),
            }
            self.reservations.all.insert(r.id, r);
        }
        Ok(())
    }
}

impl Engine {
    /// The pending reservations on `license_id`, in id order.
    pub(super) fn pending_of(&self, license_id: Id) -> Vec<Reservation> {
        let ids: Vec<Id> = self
            .reservations
            .pending_by_license
            .get(&license_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        ids.iter()
            .filter_map(|id| self.reservations.all.get(id).map(|r| r.clone()))
            .collect()
    }
}
