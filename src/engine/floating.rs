//! Floating seats and consumption on resolved licenses: the hot path's
//! renewals and adds, borrowing, and the lease sweep.

use super::*;

impl Engine {
    /// [`Engine::apply`] for a command whose license and feature the caller
    /// has already looked up (the surfaces resolve them from keys first): the
    /// same effect without a second lookup, so a consumption add touches no
    /// shared lock, only the meter's atomics. Any other command, or references
    /// that do not match the command's ids, go through `apply`.
    pub fn apply_resolved(
        &self,
        cmd: &Command<'_>,
        license: &License,
        feature: &Feature,
    ) -> R<Outcome> {
        match cmd {
            Command::AddConsumption {
                license_id,
                feature_id: Some(fid),
                amount,
                now,
            } if *license_id == license.id && *fid == feature.id => {
                Self::add_to_feature(feature, *amount, *now)
            }
            _ => self.apply(cmd),
        }
    }

    /// For a [`Command::FloatingAcquire`] whose holder already holds its
    /// seat: renews it and returns the outcome. None for anything else (a
    /// renewal changes no state that the log must keep, see `storage`).
    pub fn try_renew(&self, cmd: &Command<'_>) -> Option<Outcome> {
        let Command::FloatingAcquire {
            license_id,
            feature_id,
            hardware_id,
            now,
            ttl_ms,
        } = cmd
        else {
            return None;
        };
        let (pool, timeout) = self.lease_pool(*license_id, *feature_id).ok()?;
        let in_use = pool.renew(hardware_id, *now, seat_ttl(timeout, *ttl_ms))?;
        Some(Outcome::Floating {
            outcome: LeaseOutcome::Renewed,
            in_use,
        })
    }

    pub(super) fn add_to_feature(f: &Feature, amount: i64, now: Millis) -> R<Outcome> {
        if !f.is_consumption() {
            return Err(EngineError::NotConsumption);
        }
        let add = f.meter.add(amount, now).map_err(|e| match e {
            MeterError::LimitReached | MeterError::Overflow => {
                EngineError::FeatureConsumptionLimitReached
            }
            other => meter_err(other),
        })?;
        Ok(Outcome::Consumed {
            total: add.total,
            excess: add.excess,
        })
    }

    pub(super) fn feature_by_id(&self, lic: &License, id: Id) -> R<Arc<Feature>> {
        lic.features
            .read()
            .iter()
            .find(|f| f.id == id)
            .cloned()
            .ok_or(EngineError::FeatureNotFound)
    }

    /// The lease pool of a license or one of its features, and its timeout.
    pub(super) fn lease_pool(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
    ) -> R<(LeaseRef, Millis)> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        match feature_id {
            None => {
                let spec = lic.spec.read();
                if !(spec.is_floating || spec.is_floating_cloud) {
                    return Err(EngineError::NotFloating);
                }
                let timeout = spec.floating_timeout_ms();
                drop(spec);
                Ok((LeaseRef::License(lic), timeout))
            }
            Some(fid) => {
                let f = self.feature_by_id(&lic, fid)?;
                let spec = f.spec.load();
                if !spec.floating() {
                    return Err(EngineError::FeatureNotFloating);
                }
                let timeout = spec.floating_timeout.max(1) as Millis * time::MINUTE_MS;
                drop(spec);
                Ok((LeaseRef::Feature(f), timeout))
            }
        }
    }

    pub(super) fn borrow(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        hw: &str,
        until: Millis,
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let (can_borrow, mut max_ms) = {
            let s = lic.spec.read();
            (s.can_borrow, s.max_borrow_ms())
        };
        if max_ms == 0 {
            max_ms = self
                .product(lic.product_id)
                .map(|p| p.spec.read().max_borrow_time as Millis * HOUR_MS)
                .unwrap_or(0);
        }
        if !can_borrow || max_ms == 0 {
            return Err(EngineError::BorrowNotAllowed);
        }
        if until <= now {
            return Err(EngineError::BorrowInPast);
        }
        if until - now > max_ms {
            return Err(EngineError::BorrowTooLong);
        }
        let (pool, _) = self.lease_pool(license_id, feature_id)?;
        let in_use = pool.borrow(hw, now, until).map_err(lease_err)?;
        self.leased.insert(license_id, ());
        Ok(Outcome::Borrowed { until, in_use })
    }

    /// Longest borrow allowed on a license (license setting, else the product's), ms.
    pub fn max_borrow_ms(&self, lic: &License) -> Millis {
        let ms = lic.spec.read().max_borrow_ms();
        if ms > 0 {
            return ms;
        }
        self.product(lic.product_id)
            .map(|p| p.spec.read().max_borrow_time as Millis * HOUR_MS)
            .unwrap_or(0)
    }

    /// Frees expired floating seats everywhere; returns how many.
    ///
    /// Visits only the licenses that took a seat since they were last found
    /// empty (`leased`), so its cost follows the floating seats in use, not
    /// the size of the catalog.
    pub(super) fn sweep_leases(&self, now: Millis) -> usize {
        let mut n = 0;
        let ids: Vec<Id> = self.leased.iter().map(|e| *e.key()).collect();
        for id in ids {
            let Some(l) = self.license(id) else {
                self.leased.remove(&id);
                continue;
            };
            n += l.floating.sweep(now);
            for f in l.features.read().iter() {
                n += f.floating.sweep(now);
            }
            if seats_held(&l) == 0 {
                self.leased.remove(&id);
                // A seat taken between the count and the removal registered
                // itself before the removal: count again.
                if seats_held(&l) > 0 {
                    self.leased.insert(id, ());
                }
            }
        }
        n
    }

    pub(super) fn floating_acquire(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        hardware_id: &str,
        now: Millis,
        ttl_ms: Option<Millis>,
    ) -> R<Outcome> {
        let (pool, timeout) = self.lease_pool(license_id, feature_id)?;
        let (outcome, in_use) = pool
            .acquire(hardware_id, now, seat_ttl(timeout, ttl_ms))
            .map_err(lease_err)?;
        if outcome == LeaseOutcome::Acquired {
            self.leased.insert(license_id, ());
        }
        Ok(Outcome::Floating { outcome, in_use })
    }

    pub(super) fn floating_release(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        hardware_id: &str,
        now: Millis,
    ) -> R<Outcome> {
        let (pool, _) = self.lease_pool(license_id, feature_id)?;
        let held = pool.release(hardware_id, now);
        Ok(Outcome::Released {
            held,
            in_use: pool.in_use_hint(),
        })
    }

    pub(super) fn add_consumption(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        amount: i64,
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let add = match feature_id {
            None => {
                if lic.spec.read().license_type != LicenseType::Consumption {
                    return Err(EngineError::NotConsumption);
                }
                lic.consumption.add(amount, now)
            }
            Some(fid) => {
                let f = self.feature_by_id(&lic, fid)?;
                return Self::add_to_feature(&f, amount, now);
            }
        }
        .map_err(meter_err)?;
        Ok(Outcome::Consumed {
            total: add.total,
            excess: add.excess,
        })
    }
}

/// How long a seat taken or renewed now holds: the pool's timeout, or the
/// caller's shorter `ttl_ms` (at least a millisecond).
fn seat_ttl(timeout: Millis, ttl_ms: Option<Millis>) -> Millis {
    ttl_ms.map_or(timeout, |t| t.clamp(1, timeout))
}
