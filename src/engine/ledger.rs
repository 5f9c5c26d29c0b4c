//! Ledger entries: every change to a counter or an assignment, as a value
//! (what changed, by how much, from what to what), derived from a command,
//! its outcome and the state right after it (plus, for the sweeps, what they
//! were about to free, read just before them). The derivation is pure and
//! runs in the serial order of the changes, so replaying the log derives the
//! same entries again.

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    DeviceActivated,
    DeviceTransferred,
    DeviceDeactivated,
    SeatTaken,
    SeatReleased,
    SeatBorrowed,
    SeatExpired,
    UnitsConsumed,
    UnitsReserved,
    UnitsCommitted,
    UnitsVoided,
    UnitsExpired,
    SeatReserved,
    SeatReservationCommitted,
    SeatReservationVoided,
    SeatReservationExpired,
    ConsumptionSet,
    /// A metered feature's (or license's) period ended: its use starts again.
    PeriodReset,
    /// An admin changed a limit (`subject` names it: `max_activations`,
    /// `floating_users`, `max_consumption`).
    LimitChanged,
    QlikAssigned,
    QlikUnassigned,
    QlikMoved,
    QlikMinutesDebited,
    YextAssigned,
    YextRemoved,
    YextScheduled,
    /// A scheduled removal took effect.
    YextExpired,
    InfaLimitUsed,
    InfaLicensesOverwritten,
    /// The whole state was replaced by a state fixture's (`subject` names
    /// it): every counter of the tenant may have changed at once. One entry
    /// per tenant present before or after.
    StateRestored,
}

/// One change to one counter or assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub kind: EntryKind,
    pub tenant_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_id: Option<Id>,
    /// The device, seat holder, Qlik subject, Yext entity or Informatica limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Id>,
    /// Signed change of the counter (units, seats, minutes); 0 for a change
    /// that moves or schedules without counting.
    pub amount: i64,
    /// The counter before and after, where the change has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    pub at: Millis,
}

impl LedgerEntry {
    fn new(kind: EntryKind, tenant_id: Id, amount: i64, at: Millis) -> Self {
        LedgerEntry {
            kind,
            tenant_id,
            license_id: None,
            feature_id: None,
            subject: None,
            reservation_id: None,
            amount,
            before: None,
            after: None,
            at,
        }
    }

    /// The entry of a state restore for `tenant_id` (see [`EntryKind::StateRestored`]).
    pub fn state_restored(tenant_id: Id, fixture: &str, at: Millis) -> Self {
        Self::new(EntryKind::StateRestored, tenant_id, 0, at).subject(fixture)
    }

    fn on(mut self, license_id: Id, feature_id: Option<Id>) -> Self {
        self.license_id = Some(license_id);
        self.feature_id = feature_id;
        self
    }

    fn subject(mut self, s: &str) -> Self {
        self.subject = Some(s.to_string());
        self
    }

    /// The counter's value after the change; before is after - amount.
    fn ending_at(mut self, after: i64) -> Self {
        self.after = Some(after);
        self.before = Some(after - self.amount);
        self
    }
}

/// The limits of a license an admin may change, by name.
fn license_limits(s: &LicenseSpec) -> Vec<(&'static str, i64)> {
    vec![
        ("max_activations", s.max_activations as i64),
        ("floating_users", s.floating_users as i64),
        ("max_consumption", s.max_consumptions),
    ]
}

/// The limits of a feature an admin may change, by name.
fn feature_limits(s: &FeatureSpec) -> Vec<(&'static str, i64)> {
    vec![
        ("floating_users", s.floating_users as i64),
        ("max_consumption", s.max_consumption),
    ]
}

/// One `limit_changed` entry per limit whose value changed.
fn limit_changes(
    tenant: Id,
    license_id: Id,
    feature_id: Option<Id>,
    before: &[(&'static str, i64)],
    after: &[(&'static str, i64)],
    now: Millis,
    out: &mut Vec<LedgerEntry>,
) {
    for ((name, b), (_, a)) in before.iter().zip(after) {
        if a != b {
            let mut e = LedgerEntry::new(EntryKind::LimitChanged, tenant, a - b, now)
                .on(license_id, feature_id)
                .subject(name);
            e.before = Some(*b);
            e.after = Some(*a);
            out.push(e);
        }
    }
}

/// What a sweep is about to free, read just before it runs.
#[derive(Debug, Default)]
pub struct Pre {
    /// (license, feature, holder) of floating seats past their expiry.
    seats: Vec<(Id, Option<Id>, Box<str>)>,
    /// Pending reservations past their expiry.
    reservations: Vec<reserve::Reservation>,
    /// A meter's value before an admin correction.
    consumption: Option<i64>,
    /// The meter an add or a reservation will touch: its use and its next
    /// period boundary before the change (a change past the boundary first
    /// starts the period again).
    meter: Option<(i64, Millis)>,
    /// A license's or feature's limits before an admin rewrote its spec.
    limits: Vec<(&'static str, i64)>,
    /// (tenant, pack, entity) of Yext assignments whose scheduled removal is
    /// due: the sweep, or the account's next change, removes them first.
    yext_due: Vec<(Id, String, String)>,
}

impl Engine {
    /// Applies `cmd` like [`Engine::apply`] and appends its ledger entries
    /// to `out` (a batch's operations and an idempotent change's inner
    /// command each give their own; a replayed idempotent change gives none).
    pub fn apply_ledgered(&self, cmd: &Command<'_>, out: &mut Vec<LedgerEntry>) -> R<Outcome> {
        self.apply_full(cmd, None, Some(out))
    }

    /// Applies a logged command again (recovery, shadow snapshots): with
    /// its ledger entries derived (and dropped) while any tenant has
    /// webhooks, so that the replay makes the events the change made.
    pub fn apply_replayed(&self, cmd: &Command<'_>) -> R<Outcome> {
        if self.webhooks_active() {
            let mut scratch = Vec::new();
            return self.apply_ledgered(cmd, &mut scratch);
        }
        self.apply(cmd)
    }

    /// Applies a command that is neither a batch nor idempotent with
    /// `apply` (which applies exactly `cmd`, e.g. [`Engine::apply_resolved`])
    /// and appends its entries to `out`.
    pub fn apply_leaf_with(
        &self,
        cmd: &Command<'_>,
        apply: impl FnOnce() -> R<Outcome>,
        out: &mut Vec<LedgerEntry>,
    ) -> R<Outcome> {
        let pre = self.ledger_pre(cmd);
        let outcome = apply()?;
        let first = out.len();
        self.ledger_entries(cmd, &outcome, pre, out);
        self.webhook_events(cmd, &outcome, &out[first..]);
        Ok(outcome)
    }

    /// [`Engine::apply_ledgered`] for a command that is neither a batch nor
    /// idempotent.
    pub(super) fn apply_leaf_ledgered(
        &self,
        cmd: &Command<'_>,
        out: &mut Vec<LedgerEntry>,
    ) -> R<Outcome> {
        let pre = self.ledger_pre(cmd);
        let outcome = self.apply(cmd)?;
        let first = out.len();
        self.ledger_entries(cmd, &outcome, pre, out);
        self.webhook_events(cmd, &outcome, &out[first..]);
        Ok(outcome)
    }

    /// What the derivation of `cmd`'s entries needs from before it.
    fn ledger_pre(&self, cmd: &Command<'_>) -> Pre {
        match cmd {
            Command::SweepLeases { now } => Pre {
                seats: self.expired_seats(*now),
                ..Pre::default()
            },
            Command::SweepPending { now } => Pre {
                reservations: self.expired_reservations(*now),
                ..Pre::default()
            },
            Command::SetConsumption {
                license_id,
                feature_id,
                ..
            } => Pre {
                consumption: self.license(*license_id).and_then(|l| match feature_id {
                    None => Some(l.consumption.used_raw() - l.consumption.reserved()),
                    Some(f) => self
                        .feature_by_id(&l, *f)
                        .ok()
                        .map(|f| f.meter.used_raw() - f.meter.reserved()),
                }),
                ..Pre::default()
            },
            Command::AddConsumption {
                license_id,
                feature_id,
                now,
                ..
            }
            | Command::Reserve {
                license_id,
                feature_id,
                now,
                ..
            } => Pre {
                // Only a meter past its boundary is read (atomics, no lock):
                // the hot path's adds pay one lookup for the ledger.
                meter: self.license(*license_id).and_then(|l| {
                    let m = |m: &Meter| {
                        let next = m.next_reset().unwrap_or(i64::MAX);
                        (*now >= next).then(|| (m.used_raw() - m.reserved(), next))
                    };
                    match feature_id {
                        None => m(&l.consumption),
                        Some(f) => self.feature_by_id(&l, *f).ok().and_then(|f| m(&f.meter)),
                    }
                }),
                ..Pre::default()
            },
            Command::SweepExpired { now } => Pre {
                yext_due: self
                    .yext
                    .iter()
                    .flat_map(|a| {
                        let t = *a.key();
                        a.due(*now).into_iter().map(move |(p, e)| (t, p, e))
                    })
                    .collect(),
                ..Pre::default()
            },
            Command::YextAssign { tenant_id, now, .. }
            | Command::YextUnassign { tenant_id, now, .. }
            | Command::YextSchedule { tenant_id, now, .. } => Pre {
                yext_due: self
                    .yext
                    .get(tenant_id)
                    .map(|a| {
                        a.due(*now)
                            .into_iter()
                            .map(|(p, e)| (*tenant_id, p, e))
                            .collect()
                    })
                    .unwrap_or_default(),
                ..Pre::default()
            },
            Command::PutLicense { id, .. } => Pre {
                limits: self
                    .license(*id)
                    .map(|l| license_limits(&l.spec.read()))
                    .unwrap_or_default(),
                ..Pre::default()
            },
            Command::PutFeature { license_id, id, .. } => Pre {
                limits: self
                    .feature_of_license(*license_id, *id)
                    .map(|f| feature_limits(&f.spec.load()))
                    .unwrap_or_default(),
                ..Pre::default()
            },
            _ => Pre::default(),
        }
    }

    /// The period reset a change at `now` made first, if the meter it
    /// touched (`pre.meter`) was past its boundary and held any use.
    fn period_reset(
        &self,
        pre: &Pre,
        license_id: Id,
        feature_id: Option<Id>,
        now: Millis,
    ) -> Option<LedgerEntry> {
        let (used, next_reset) = pre.meter?;
        if now < next_reset || used == 0 {
            return None;
        }
        let mut e = LedgerEntry::new(
            EntryKind::PeriodReset,
            self.tenant_of(license_id),
            -used,
            now,
        )
        .on(license_id, feature_id);
        e.before = Some(used);
        e.after = Some(0);
        Some(e)
    }

    fn expired_seats(&self, now: Millis) -> Vec<(Id, Option<Id>, Box<str>)> {
        let mut out = Vec::new();
        let ids: Vec<Id> = self.leased.iter().map(|e| *e.key()).collect();
        for id in ids {
            let Some(l) = self.license(id) else { continue };
            for h in l.floating.holders_raw() {
                if h.expires_at <= now {
                    out.push((id, None, h.holder));
                }
            }
            for f in l.features.read().iter() {
                for h in f.floating.holders_raw() {
                    if h.expires_at <= now {
                        out.push((id, Some(f.id), h.holder));
                    }
                }
            }
        }
        out
    }

    fn expired_reservations(&self, now: Millis) -> Vec<reserve::Reservation> {
        let due: Vec<Id> = self
            .reservations
            .by_expiry
            .lock()
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        due.iter()
            .filter_map(|id| self.reservations.all.get(id).map(|r| r.clone()))
            .collect()
    }

    fn tenant_of(&self, license_id: Id) -> Id {
        self.license(license_id).map_or(0, |l| l.tenant_id)
    }

    /// The entries of a leaf command that gave `outcome`, from the state now.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per kind of change, in the order of the command table"
    )]
    fn ledger_entries(
        &self,
        cmd: &Command<'_>,
        outcome: &Outcome,
        pre: Pre,
        out: &mut Vec<LedgerEntry>,
    ) {
        use Command as C;
        use EntryKind as K;
        match (cmd, outcome) {
            (
                C::Activate {
                    license_id: l,
                    hardware_id,
                    now,
                    ..
                },
                Outcome::Activated {
                    new: true,
                    transfer,
                    ..
                },
            ) => {
                let used = self.license(*l).map_or(0, |x| x.activations.used() as i64);
                let kind = if *transfer {
                    K::DeviceTransferred
                } else {
                    K::DeviceActivated
                };
                out.push(
                    LedgerEntry::new(kind, self.tenant_of(*l), 1, *now)
                        .on(*l, None)
                        .subject(hardware_id)
                        .ending_at(used),
                );
            }
            (
                C::Deactivate {
                    license_id: l,
                    hardware_id,
                    now,
                },
                _,
            ) => {
                let used = self.license(*l).map_or(0, |x| x.activations.used() as i64);
                out.push(
                    LedgerEntry::new(K::DeviceDeactivated, self.tenant_of(*l), -1, *now)
                        .on(*l, None)
                        .subject(hardware_id)
                        .ending_at(used),
                );
            }
            (
                C::FloatingAcquire {
                    license_id: l,
                    feature_id: f,
                    hardware_id,
                    now,
                    ..
                },
                Outcome::Floating {
                    outcome: LeaseOutcome::Acquired,
                    in_use,
                },
            ) => out.push(
                LedgerEntry::new(K::SeatTaken, self.tenant_of(*l), 1, *now)
                    .on(*l, *f)
                    .subject(hardware_id)
                    .ending_at(*in_use as i64),
            ),
            (
                C::FloatingRelease {
                    license_id: l,
                    feature_id: f,
                    hardware_id,
                    now,
                },
                Outcome::Released { held: true, in_use },
            ) => out.push(
                LedgerEntry::new(K::SeatReleased, self.tenant_of(*l), -1, *now)
                    .on(*l, *f)
                    .subject(hardware_id)
                    .ending_at(*in_use as i64),
            ),
            (
                C::FloatingBorrow {
                    license_id: l,
                    feature_id: f,
                    hardware_id,
                    now,
                    ..
                },
                Outcome::Borrowed { in_use, .. },
            ) => out.push(
                LedgerEntry::new(K::SeatBorrowed, self.tenant_of(*l), 0, *now)
                    .on(*l, *f)
                    .subject(hardware_id)
                    .ending_at(*in_use as i64),
            ),
            (C::SweepLeases { now }, _) => {
                for (l, f, holder) in pre.seats {
                    out.push(
                        LedgerEntry::new(K::SeatExpired, self.tenant_of(l), -1, *now)
                            .on(l, f)
                            .subject(&holder),
                    );
                }
            }
            (
                C::AddConsumption {
                    license_id: l,
                    feature_id: f,
                    amount,
                    now,
                },
                Outcome::Consumed { total, .. },
            ) => {
                out.extend(self.period_reset(&pre, *l, *f, *now));
                out.push(
                    LedgerEntry::new(K::UnitsConsumed, self.tenant_of(*l), *amount, *now)
                        .on(*l, *f)
                        .ending_at(*total),
                );
            }
            (
                C::SetConsumption {
                    license_id: l,
                    feature_id: f,
                    total,
                    now,
                },
                _,
            ) => {
                let mut e = LedgerEntry::new(
                    K::ConsumptionSet,
                    self.tenant_of(*l),
                    pre.consumption.map_or(0, |b| total - b),
                    *now,
                )
                .on(*l, *f);
                e.before = pre.consumption;
                e.after = Some(*total);
                out.push(e);
            }
            (
                C::Reserve {
                    reservation_id,
                    tenant_id,
                    license_id: l,
                    feature_id: f,
                    units,
                    now,
                    ..
                },
                _,
            ) => {
                if f.is_some() {
                    out.extend(self.period_reset(&pre, *l, *f, *now));
                }
                let (kind, after) = match f.and_then(|f| self.feature_of_license(*l, f)) {
                    Some(feat) => (K::UnitsReserved, feat.meter.reserved()),
                    None => (
                        K::SeatReserved,
                        self.license(*l).map_or(0, |x| x.activations.used() as i64),
                    ),
                };
                let mut e = LedgerEntry::new(kind, *tenant_id, *units, *now)
                    .on(*l, *f)
                    .ending_at(after);
                e.reservation_id = Some(*reservation_id);
                out.push(e);
            }
            (
                C::CommitReservation {
                    tenant_id,
                    reservation_id,
                    now,
                    ..
                },
                Outcome::Settled { committed },
            ) => {
                if let Some(r) = self.reservation(*tenant_id, *reservation_id) {
                    out.push(self.settled(&r, *committed, true, *now));
                }
            }
            (
                C::VoidReservation {
                    tenant_id,
                    reservation_id,
                    now,
                },
                _,
            ) => {
                if let Some(r) = self.reservation(*tenant_id, *reservation_id) {
                    out.push(self.settled(&r, 0, false, *now));
                }
            }
            (C::SweepPending { now }, _) => {
                for r in pre.reservations {
                    let kind = if r.feature_id.is_some() {
                        K::UnitsExpired
                    } else {
                        K::SeatReservationExpired
                    };
                    let mut e = LedgerEntry::new(kind, r.tenant_id, -r.units, *now)
                        .on(r.license_id, r.feature_id);
                    e.reservation_id = Some(r.id);
                    out.push(e);
                }
            }
            (C::PutLicense { id, now, .. }, _) if !pre.limits.is_empty() => {
                if let Some(l) = self.license(*id) {
                    let after = license_limits(&l.spec.read());
                    limit_changes(l.tenant_id, *id, None, &pre.limits, &after, *now, out);
                }
            }
            (
                C::PutFeature {
                    license_id,
                    id,
                    now,
                    ..
                },
                _,
            ) if !pre.limits.is_empty() => {
                if let Some(f) = self.feature_of_license(*license_id, *id) {
                    let after = feature_limits(&f.spec.load());
                    let tenant = self.tenant_of(*license_id);
                    limit_changes(
                        tenant,
                        *license_id,
                        Some(*id),
                        &pre.limits,
                        &after,
                        *now,
                        out,
                    );
                }
            }
            _ => {
                let at = match cmd {
                    C::SweepExpired { now }
                    | C::YextAssign { now, .. }
                    | C::YextUnassign { now, .. }
                    | C::YextSchedule { now, .. } => *now,
                    _ => 0,
                };
                for (tenant, pack, entity) in &pre.yext_due {
                    out.push(
                        LedgerEntry::new(K::YextExpired, *tenant, -1, at)
                            .subject(&format!("{pack}/{entity}")),
                    );
                }
                self.vendor_entries(cmd, outcome, out)
            }
        }
    }

    /// A reservation's commit (`commit`) or void: for units, the meter's
    /// used (commit) or reserved (void) after; for a seat, the device.
    fn settled(
        &self,
        r: &reserve::Reservation,
        committed: i64,
        commit: bool,
        now: Millis,
    ) -> LedgerEntry {
        use EntryKind as K;
        let feature = r
            .feature_id
            .and_then(|f| self.feature_of_license(r.license_id, f));
        let mut e = match (&feature, commit) {
            (Some(f), true) => LedgerEntry::new(K::UnitsCommitted, r.tenant_id, committed, now)
                .ending_at(f.meter.used(now)),
            (Some(f), false) => LedgerEntry::new(K::UnitsVoided, r.tenant_id, -r.units, now)
                .ending_at(f.meter.reserved()),
            (None, true) => LedgerEntry::new(K::SeatReservationCommitted, r.tenant_id, 1, now),
            (None, false) => LedgerEntry::new(K::SeatReservationVoided, r.tenant_id, -1, now),
        }
        .on(r.license_id, r.feature_id);
        e.reservation_id = Some(r.id);
        e.subject = r.hardware_id.clone();
        e
    }

    fn feature_of_license(&self, license_id: Id, feature_id: Id) -> Option<Arc<Feature>> {
        let l = self.license(license_id)?;
        self.feature_by_id(&l, feature_id).ok()
    }

    /// The entries of the vendors' commands (Qlik, Yext, Informatica).
    fn vendor_entries(&self, cmd: &Command<'_>, outcome: &Outcome, out: &mut Vec<LedgerEntry>) {
        use Command as C;
        use EntryKind as K;
        let entry = match (cmd, outcome) {
            (
                C::QlikAssign {
                    tenant_id,
                    subject,
                    kind,
                    now,
                },
                _,
            ) => LedgerEntry::new(K::QlikAssigned, *tenant_id, 1, *now)
                .subject(subject)
                .ending_at(self.qlik_used(*tenant_id, *kind, *now)),
            (
                C::QlikAccess {
                    tenant_id,
                    subject,
                    now,
                },
                Outcome::Access(qlik::AccessVia::AutoAssigned(kind, _)),
            ) => LedgerEntry::new(K::QlikAssigned, *tenant_id, 1, *now)
                .subject(subject)
                .ending_at(self.qlik_used(*tenant_id, *kind, *now)),
            (
                C::QlikUnassign {
                    tenant_id,
                    subject,
                    kind,
                },
                _,
            ) => LedgerEntry::new(K::QlikUnassigned, *tenant_id, -1, 0)
                .subject(subject)
                .ending_at(self.qlik_used(*tenant_id, *kind, 0)),
            (
                C::QlikUpdate {
                    tenant_id,
                    subject,
                    now,
                    ..
                },
                _,
            ) => LedgerEntry::new(K::QlikMoved, *tenant_id, 0, *now).subject(subject),
            (
                C::QlikConsume {
                    tenant_id,
                    record,
                    now,
                },
                Outcome::Consumed { total, .. },
            ) => LedgerEntry::new(K::QlikMinutesDebited, *tenant_id, record.minutes_used, *now)
                .subject(&record.user_id)
                .ending_at(*total),
            (
                C::YextAssign {
                    tenant_id,
                    entity,
                    now,
                    ..
                },
                Outcome::Assigned { created: true, .. },
            ) => LedgerEntry::new(K::YextAssigned, *tenant_id, 1, *now).subject(entity),
            (
                C::YextUnassign {
                    tenant_id,
                    entity,
                    now,
                    ..
                },
                _,
            ) => LedgerEntry::new(K::YextRemoved, *tenant_id, -1, *now).subject(entity),
            (
                C::YextSchedule {
                    tenant_id,
                    entity,
                    now,
                    ..
                },
                _,
            ) => LedgerEntry::new(K::YextScheduled, *tenant_id, 0, *now).subject(entity),
            (
                C::InfaConsume {
                    tenant_id,
                    limit,
                    amount,
                },
                Outcome::Consumed { total, .. },
            ) => LedgerEntry::new(K::InfaLimitUsed, *tenant_id, *amount, 0)
                .subject(limit)
                .ending_at(*total),
            (C::InfaSetLicenses { tenant_id, .. }, _) => {
                LedgerEntry::new(K::InfaLicensesOverwritten, *tenant_id, 0, 0)
            }
            _ => return,
        };
        out.push(entry);
    }

    fn qlik_used(&self, tenant_id: Id, kind: qlik::AllotmentKind, now: Millis) -> i64 {
        self.qlik
            .get(&tenant_id)
            .map_or(0, |q| q.units_used(kind, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    const CATALOG: &str = r#"{"tenants":[{"name":"L","api_keys":[{"api_key":"lk","shared_key":"ls","role":"admin"}],
"products":[{"short_code":"p","name":"P","authorization_method":"license-key"}],
"licenses":[{"product":"p","license_key":"K","features":[
 {"code":"seat","is_floating_cloud":true,"floating_users":2,"floating_timeout":1},
 {"code":"units","feature_type":"consumption","max_consumption":100}]}]}]}"#;

    fn engine() -> (Engine, Id, Id, Id) {
        let e = Engine::new();
        crate::catalog::load_slice(&e, CATALOG.as_bytes(), 0).expect("catalog");
        let t = e.api_key("lk").expect("key").tenant_id;
        let l = e
            .product_by_code(t, "p")
            .and_then(|p| p.licenses_by_key.get("K").map(|l| l.clone()))
            .expect("license");
        let (seat, units) = (
            l.feature("seat").expect("seat").id,
            l.feature("units").expect("units").id,
        );
        (e, l.id, seat, units)
    }

    fn kinds(entries: &[LedgerEntry]) -> Vec<EntryKind> {
        entries.iter().map(|e| e.kind).collect()
    }

    /// Sweeps name what they freed; a batch gives one entry per operation;
    /// an admin correction knows the value it replaced.
    #[test]
    fn sweeps_batches_and_corrections_derive_their_entries() {
        let (e, l, seat, units) = engine();
        let tenant = e.license(l).expect("license").tenant_id;
        let mut out = Vec::new();
        let acquire = Command::FloatingAcquire {
            license_id: l,
            feature_id: Some(seat),
            hardware_id: Cow::Borrowed("h1"),
            now: 0,
            ttl_ms: None,
        };
        e.apply_ledgered(&acquire, &mut out).expect("acquire");
        let reserve = Command::Reserve {
            reservation_id: 90_000,
            tenant_id: tenant,
            license_id: l,
            feature_id: Some(units),
            units: 10,
            timeout_ms: 1_000,
            now: 0,
        };
        e.apply_ledgered(&reserve, &mut out).expect("reserve");
        let add = |n| Command::AddConsumption {
            license_id: l,
            feature_id: Some(units),
            amount: n,
            now: 0,
        };
        e.apply_ledgered(
            &Command::Batch {
                ops: vec![add(3), add(4)],
                now: 0,
            },
            &mut out,
        )
        .expect("batch");
        e.apply_ledgered(&Command::SweepLeases { now: 60_000 }, &mut out)
            .expect("sweep");
        e.apply_ledgered(&Command::SweepPending { now: 60_000 }, &mut out)
            .expect("sweep");
        e.apply_ledgered(
            &Command::SetConsumption {
                license_id: l,
                feature_id: Some(units),
                total: 50,
                now: 0,
            },
            &mut out,
        )
        .expect("set");
        assert_eq!(
            kinds(&out),
            [
                EntryKind::SeatTaken,
                EntryKind::UnitsReserved,
                EntryKind::UnitsConsumed,
                EntryKind::UnitsConsumed,
                EntryKind::SeatExpired,
                EntryKind::UnitsExpired,
                EntryKind::ConsumptionSet,
            ]
        );
        assert_eq!((out[2].before, out[2].after), (Some(0), Some(3)));
        assert_eq!((out[3].before, out[3].after), (Some(3), Some(7)));
        assert_eq!(out[4].subject.as_deref(), Some("h1"));
        assert_eq!((out[5].amount, out[5].reservation_id), (-10, Some(90_000)));
        assert_eq!(
            (out[6].before, out[6].after, out[6].amount),
            (Some(7), Some(50), 43)
        );
        assert!(out.iter().all(|x| x.tenant_id == tenant));
        // A renewal and a refused change give nothing.
        let mut none = Vec::new();
        e.apply_ledgered(&acquire, &mut none).expect("take again");
        e.apply_ledgered(&acquire, &mut none).expect("renew");
        assert_eq!(kinds(&none), [EntryKind::SeatTaken]);
        assert!(e.apply_ledgered(&add(1_000), &mut none).is_err());
        assert_eq!(none.len(), 1);
    }

    /// An add past a monthly boundary first resets the period: an entry
    /// says what the old period held.
    #[test]
    fn a_new_period_is_an_entry() {
        let e = Engine::new();
        let catalog = CATALOG.replace(
            r#""max_consumption":100}"#,
            r#""max_consumption":100,"reset_consumption":true,"consumption_period":"monthly"}"#,
        );
        let t0 = time::parse_instant("2026-11-30T12:00:00Z").expect("t0");
        crate::catalog::load_slice(&e, catalog.as_bytes(), t0).expect("catalog");
        let tenant = e.api_key("lk").expect("key").tenant_id;
        let l = e
            .product_by_code(tenant, "p")
            .and_then(|p| p.licenses_by_key.get("K").map(|l| l.clone()))
            .expect("license");
        let units = l.feature("units").expect("units").id;
        let add = |n, now| Command::AddConsumption {
            license_id: l.id,
            feature_id: Some(units),
            amount: n,
            now,
        };
        let mut out = Vec::new();
        e.apply_ledgered(&add(30, t0), &mut out).expect("add");
        let t1 = time::parse_instant("2026-12-01T00:00:01Z").expect("t1");
        e.apply_ledgered(&add(5, t1), &mut out).expect("add");
        assert_eq!(
            kinds(&out),
            [
                EntryKind::UnitsConsumed,
                EntryKind::PeriodReset,
                EntryKind::UnitsConsumed
            ]
        );
        assert_eq!(
            (out[1].amount, out[1].before, out[1].after),
            (-30, Some(30), Some(0))
        );
        assert_eq!((out[2].before, out[2].after), (Some(0), Some(5)));
    }

    /// A scheduled Yext removal taking effect (by the sweep) is an entry.
    #[test]
    fn yext_expiries_are_entries() {
        let e = Engine::new();
        let demo = include_str!("../../examples/demo.json");
        crate::catalog::load_slice(&e, demo.as_bytes(), 0).expect("demo");
        let t = e.api_key("demo-api-key").expect("key").tenant_id;
        let now = time::parse_instant("2026-11-30T12:00:00Z").expect("now");
        let mut out = Vec::new();
        let assign = Command::YextAssign {
            tenant_id: t,
            pack: Cow::Borrowed("listings"),
            entity: Cow::Borrowed("ledger-entity"),
            now,
        };
        e.apply_ledgered(&assign, &mut out).expect("assign");
        let schedule = Command::YextSchedule {
            tenant_id: t,
            pack: Cow::Borrowed("listings"),
            entity: Cow::Borrowed("ledger-entity"),
            expiration: Some("2026-12-02".into()),
            now,
        };
        e.apply_ledgered(&schedule, &mut out).expect("schedule");
        let later = time::parse_instant("2026-12-02T00:00:01Z").expect("later");
        e.apply_ledgered(&Command::SweepExpired { now: later }, &mut out)
            .expect("sweep");
        assert_eq!(
            kinds(&out),
            [
                EntryKind::YextAssigned,
                EntryKind::YextScheduled,
                EntryKind::YextExpired
            ]
        );
        assert_eq!(out[2].subject.as_deref(), Some("listings/ledger-entity"));
    }

    /// An admin raising a feature's cap is an entry; rewriting a spec with
    /// the same limits is none.
    #[test]
    fn admin_limit_changes_are_entries() {
        let (e, l, _, units) = engine();
        let f = e.feature_of_license(l, units).expect("feature");
        let mut spec = (**f.spec.load()).clone();
        let put = |spec: FeatureSpec| Command::PutFeature {
            license_id: l,
            id: units,
            spec,
            now: 5,
        };
        let mut out = Vec::new();
        e.apply_ledgered(&put(spec.clone()), &mut out)
            .expect("same");
        assert!(out.is_empty());
        spec.max_consumption = 250;
        e.apply_ledgered(&put(spec), &mut out).expect("raise");
        assert_eq!(kinds(&out), [EntryKind::LimitChanged]);
        assert_eq!(out[0].subject.as_deref(), Some("max_consumption"));
        assert_eq!(
            (out[0].before, out[0].after, out[0].amount),
            (Some(100), Some(250), 150)
        );
    }
}
