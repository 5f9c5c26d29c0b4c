//! What the native API asks of the engine beyond the primitives:
//!
//! - [`Reply`]: the counters a change touched, as they are right after it
//!   (computed under the same serial order as the change, so that a stored
//!   reply is exactly what the first answer said);
//! - idempotency records ([`Command::Idempotent`]): a key and the request's
//!   fingerprint, logged with the change they guard, so one key makes one
//!   change across retries, restarts and replays;
//! - atomic batches ([`Command::Batch`]) and previews (dry runs): a preview
//!   applies the operations to a *scratch engine* holding copies of just the
//!   licenses they touch, with the same code as the real apply, so it answers
//!   exactly what the change would do without touching the real state. A
//!   batch is previewed first and applied only when every operation passes.

use std::collections::{BTreeSet, VecDeque};

use dashmap::mapref::entry::Entry;
use serde::{Deserialize, Serialize};

use super::reserve::Reservation;
use super::*;

/// How long an idempotency key answers its first answer, ms (one day).
pub const IDEMPOTENCY_RETENTION_MS: Millis = DAY_MS;
/// Idempotency keys one tenant may hold within the retention; past it new
/// keys are refused until old ones expire.
pub const IDEMPOTENCY_KEYS_PER_TENANT_MAX: usize = 1_000_000;
/// Length of an idempotency key, bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Operations in one batch or preflight.
pub const BATCH_OPS_MAX: usize = 100;

/// A feature's meter as a client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterView {
    pub used: i64,
    pub reserved: i64,
    /// What an add or reservation could still take (None: unlimited).
    pub remaining: Option<i64>,
    pub max: i64,
    pub max_overages: i64,
    /// End of the current period, when the meter resets.
    pub period_end: Option<Millis>,
}

/// A license's activation seats as a client sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsView {
    pub used: u64,
    pub max: u64,
    pub unlimited: bool,
}

/// What a change did, in the terms of the counters it touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Usage {
        meter: MeterView,
    },
    Reservation {
        reservation: Reservation,
        /// A units reservation's meter.
        meter: Option<MeterView>,
        /// A seat reservation's activation pool.
        seats: Option<SeatsView>,
    },
    Seat {
        holder: String,
        /// A seat was taken (false: the holder's seat was renewed).
        taken: bool,
        since: Millis,
        expires_at: Millis,
        borrowed_until: Option<Millis>,
        in_use: u32,
        capacity: u32,
    },
    SeatReleased {
        holder: String,
        held: bool,
        in_use: u32,
        capacity: u32,
    },
    Device {
        hardware_id: String,
        device_id: Id,
        new: bool,
        transfer: bool,
    },
    Deactivated {
        hardware_id: String,
    },
    Batch {
        replies: Vec<Reply>,
    },
    Done,
}

/// The first answer to an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub tenant_id: Id,
    pub key: String,
    pub fingerprint: String,
    pub at: Millis,
    pub reply: Reply,
}

/// Idempotency records. Changed only by commands (in log order).
#[derive(Debug)]
pub struct Idempotency {
    /// (tenant, key) -> its record (sharded).
    records: Map<(Id, Box<str>), IdemRecord>,
    /// tenant -> records it holds (the per-tenant bound).
    per_tenant: Map<Id, usize>,
    /// Records in the order they were made: what the sweeper forgets first.
    order: parking_lot::Mutex<VecDeque<(Millis, Id, Box<str>)>>,
}

impl Idempotency {
    /// Forgets every record (a restore of the whole state).
    pub(super) fn clear(&self) {
        self.records.clear();
        self.per_tenant.clear();
        self.order.lock().clear();
    }
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            records: new_map(),
            per_tenant: new_map(),
            order: Default::default(),
        }
    }
}

/// The native state of a snapshot: reservations and idempotency records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeImage {
    pub reservations: Vec<Reservation>,
    pub idempotency: Vec<IdemRecord>,
}

/// Whether `op` may be one operation of a batch (the native API's changes).
fn batchable(op: &Command<'_>) -> bool {
    matches!(
        op,
        Command::AddConsumption {
            feature_id: Some(_),
            ..
        } | Command::Reserve { .. }
            | Command::CommitReservation { .. }
            | Command::VoidReservation { .. }
            | Command::FloatingAcquire { .. }
            | Command::FloatingRelease { .. }
            | Command::FloatingBorrow { .. }
            | Command::Activate { .. }
            | Command::Deactivate { .. }
    )
}

/// A meter as a client sees it at `now`.
pub fn meter_view(m: &Meter, now: Millis) -> MeterView {
    let limits = m.limits();
    let period_end = match (limits.reset, limits.period) {
        (true, Some(p)) => Some(match m.next_reset() {
            Some(t) if t > now => t,
            _ => p.next_start(now),
        }),
        _ => None,
    };
    MeterView {
        used: m.used(now),
        reserved: m.reserved(),
        remaining: (!limits.unlimited).then(|| m.headroom(now)),
        max: limits.max,
        max_overages: if limits.allow_overages {
            limits.max_overages
        } else {
            0
        },
        period_end,
    }
}

impl Engine {
    /// Applies `cmd` like [`Engine::apply`] and pushes its [`Reply`] onto
    /// `replies` (one per command; a batch's is one [`Reply::Batch`]).
    pub fn apply_replying(&self, cmd: &Command<'_>, replies: &mut Vec<Reply>) -> R<Outcome> {
        self.apply_full(cmd, Some(replies), None)
    }

    /// Applies `cmd`, with its reply pushed onto `replies` and its ledger
    /// entries onto `ledger`, when asked for.
    pub fn apply_full(
        &self,
        cmd: &Command<'_>,
        replies: Option<&mut Vec<Reply>>,
        ledger: Option<&mut Vec<super::ledger::LedgerEntry>>,
    ) -> R<Outcome> {
        match cmd {
            Command::Batch { ops, .. } => self.apply_batch(ops, replies, ledger),
            Command::Idempotent {
                tenant_id,
                key,
                fingerprint,
                now,
                cmd,
            } => self.idempotent(*tenant_id, key, fingerprint, *now, cmd, replies, ledger),
            other => {
                let outcome = match ledger {
                    Some(l) => self.apply_leaf_ledgered(other, l)?,
                    None => self.apply(other)?,
                };
                if let Some(r) = replies {
                    r.push(self.reply(other, &outcome));
                }
                Ok(outcome)
            }
        }
    }

    /// The reply to `cmd` that gave `outcome`, read from the state now.
    pub fn reply(&self, cmd: &Command<'_>, outcome: &Outcome) -> Reply {
        use Command as C;
        match (cmd, outcome) {
            (
                C::AddConsumption {
                    license_id,
                    feature_id: Some(f),
                    now,
                    ..
                },
                _,
            ) => match self.feature_of(*license_id, *f) {
                Some(f) => Reply::Usage {
                    meter: meter_view(&f.meter, *now),
                },
                None => Reply::Done,
            },
            (
                C::Reserve {
                    tenant_id,
                    reservation_id: id,
                    now,
                    ..
                }
                | C::CommitReservation {
                    tenant_id,
                    reservation_id: id,
                    now,
                    ..
                }
                | C::VoidReservation {
                    tenant_id,
                    reservation_id: id,
                    now,
                },
                _,
            ) => self.reservation_reply(*tenant_id, *id, *now),
            (
                C::FloatingAcquire {
                    license_id,
                    feature_id,
                    hardware_id,
                    now,
                    ..
                }
                | C::FloatingBorrow {
                    license_id,
                    feature_id,
                    hardware_id,
                    now,
                    ..
                },
                _,
            ) => self.seat_reply(*license_id, *feature_id, hardware_id, outcome, *now),
            (
                C::FloatingRelease {
                    license_id,
                    feature_id,
                    hardware_id,
                    ..
                },
                Outcome::Released { held, in_use },
            ) => Reply::SeatReleased {
                holder: hardware_id.to_string(),
                held: *held,
                in_use: *in_use,
                capacity: self
                    .lease_pool(*license_id, *feature_id)
                    .map_or(0, |(p, _)| p.capacity()),
            },
            (
                C::Activate { hardware_id, .. },
                Outcome::Activated {
                    device_id,
                    new,
                    transfer,
                },
            ) => Reply::Device {
                hardware_id: hardware_id.to_string(),
                device_id: *device_id,
                new: *new,
                transfer: *transfer,
            },
            (C::Deactivate { hardware_id, .. }, _) => Reply::Deactivated {
                hardware_id: hardware_id.to_string(),
            },
            _ => Reply::Done,
        }
    }

    fn feature_of(&self, license_id: Id, feature_id: Id) -> Option<Arc<Feature>> {
        let l = self.license(license_id)?;
        self.feature_by_id(&l, feature_id).ok()
    }

    /// A reservation with its pool: the feature's meter, or the license's seats.
    pub fn reservation_reply(&self, tenant_id: Id, id: Id, now: Millis) -> Reply {
        let Some(r) = self.reservation(tenant_id, id) else {
            return Reply::Done;
        };
        let (meter, seats) = self.reservation_pool(&r, now);
        Reply::Reservation {
            reservation: r,
            meter,
            seats,
        }
    }

    /// The pool a reservation holds from, as it stands at `now`.
    pub fn reservation_pool(
        &self,
        r: &Reservation,
        now: Millis,
    ) -> (Option<MeterView>, Option<SeatsView>) {
        match r.feature_id {
            Some(fid) => (
                self.feature_of(r.license_id, fid)
                    .map(|f| meter_view(&f.meter, now)),
                None,
            ),
            None => (
                None,
                self.license(r.license_id).map(|l| SeatsView {
                    used: l.activations.used(),
                    max: l.activations.capacity(),
                    unlimited: l.activations.unlimited(),
                }),
            ),
        }
    }

    fn seat_reply(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        holder: &str,
        outcome: &Outcome,
        now: Millis,
    ) -> Reply {
        let Ok((pool, _)) = self.lease_pool(license_id, feature_id) else {
            return Reply::Done;
        };
        let lease = pool.lease_of(holder, now);
        let (since, expires_at, borrowed_until) = lease.map_or((now, now, None), |l| {
            (l.since, l.expires_at, l.borrowed_until)
        });
        Reply::Seat {
            holder: holder.to_string(),
            taken: matches!(
                outcome,
                Outcome::Floating {
                    outcome: LeaseOutcome::Acquired,
                    ..
                }
            ) || (matches!(outcome, Outcome::Borrowed { .. }) && since == now),
            since,
            expires_at,
            borrowed_until,
            in_use: pool.in_use(now),
            capacity: pool.capacity(),
        }
    }

    // ------------------------------------------------------------ batches

    /// Checks a batch's shape: 1 to [`BATCH_OPS_MAX`] native operations.
    fn check_batch(ops: &[Command<'_>]) -> R<()> {
        if ops.is_empty() || ops.len() > BATCH_OPS_MAX {
            return Err(EngineError::Invalid("operations", "must hold 1 to 100"));
        }
        if !ops.iter().all(batchable) {
            return Err(EngineError::Invalid(
                "operations",
                "only usage, reservation, seat and device changes",
            ));
        }
        Ok(())
    }

    /// Applies every operation or none: a preview first, then the real
    /// apply (which, under the log's serial order, does what the preview did).
    pub(super) fn apply_batch(
        &self,
        ops: &[Command<'_>],
        replies: Option<&mut Vec<Reply>>,
        mut ledger: Option<&mut Vec<super::ledger::LedgerEntry>>,
    ) -> R<Outcome> {
        Self::check_batch(ops)?;
        self.preview(ops).map_err(|(_, e)| e)?;
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = match ledger.as_deref_mut() {
                Some(l) => self.apply_leaf_ledgered(op, l)?,
                None => self.apply(op)?,
            };
            out.push(self.reply(op, &outcome));
        }
        if let Some(r) = replies {
            r.push(Reply::Batch { replies: out });
        }
        Ok(Outcome::Batch {
            ops: ops.len() as u32,
        })
    }

    /// What `ops`, applied in order now, would do, without changing
    /// anything: each one's reply, or the index and refusal of the first
    /// that would be refused.
    pub fn preview(&self, ops: &[Command<'_>]) -> Result<Vec<Reply>, (usize, EngineError)> {
        Self::check_batch(ops).map_err(|e| (0, e))?;
        let scratch = self.scratch(ops).map_err(|e| (0, e))?;
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let mut rs = Vec::with_capacity(1);
            scratch.apply_replying(op, &mut rs).map_err(|e| (i, e))?;
            out.push(rs.pop().unwrap_or(Reply::Done));
        }
        Ok(out)
    }

    /// A new engine holding copies of what `ops` touch: their licenses (with
    /// their products and tenants, their users and those users' other
    /// licenses, whose activations count against the user), and the pending
    /// reservations on them.
    fn scratch(&self, ops: &[Command<'_>]) -> R<Engine> {
        let mut licenses = BTreeSet::new();
        for op in ops {
            if let Some(id) = self.license_of(op) {
                licenses.insert(id);
            }
        }
        let users: BTreeSet<Id> = licenses
            .iter()
            .filter_map(|id| self.license(*id))
            .filter_map(|l| l.spec.read().user_id)
            .collect();
        for u in users.iter().filter_map(|u| self.user(*u)) {
            licenses.extend(u.licenses.read().iter().copied());
        }
        let e = Engine::new();
        e.restore_seq(self.seq());
        let now = ops.iter().map(command_now).max().unwrap_or(0);
        for id in &licenses {
            let Some(l) = self.license(*id) else { continue };
            self.copy_parents(&e, &l)?;
            e.restore(image::Image::License(image::license_image(&l)), now)?;
        }
        let pending: Vec<Reservation> = licenses.iter().flat_map(|l| self.pending_of(*l)).collect();
        e.restore_reservations(pending)?;
        Ok(e)
    }

    /// Copies the tenant, product and user a license needs into `e`.
    fn copy_parents(&self, e: &Engine, l: &License) -> R<()> {
        if e.tenant(l.tenant_id).is_none() {
            let name = self
                .tenant(l.tenant_id)
                .map(|t| t.spec.read().name.clone())
                .unwrap_or_default();
            e.put_tenant(
                l.tenant_id,
                &TenantSpec {
                    name,
                    parent_id: None,
                },
            )?;
        }
        if e.product(l.product_id).is_none() {
            let p = self
                .product(l.product_id)
                .ok_or(EngineError::ProductNotFound)?;
            let mut spec = p.spec.read().clone();
            spec.releases.clear();
            spec.bundle_products.clear();
            e.put_product(l.product_id, &spec)?;
        }
        if let Some(uid) = l.spec.read().user_id {
            if e.user(uid).is_none() {
                let u = self.user(uid).ok_or(EngineError::UserNotFound)?;
                let mut spec = u.spec.read().clone();
                spec.customer_id = None;
                e.put_user(uid, &spec)?;
            }
        }
        Ok(())
    }

    /// The license an operation changes.
    fn license_of(&self, op: &Command<'_>) -> Option<Id> {
        use Command as C;
        match op {
            C::AddConsumption { license_id, .. }
            | C::Reserve { license_id, .. }
            | C::FloatingAcquire { license_id, .. }
            | C::FloatingRelease { license_id, .. }
            | C::FloatingBorrow { license_id, .. }
            | C::Activate { license_id, .. }
            | C::Deactivate { license_id, .. } => Some(*license_id),
            C::CommitReservation { reservation_id, .. }
            | C::VoidReservation { reservation_id, .. } => self
                .reservations
                .all
                .get(reservation_id)
                .map(|r| r.license_id),
            _ => None,
        }
    }

    // ------------------------------------------------------------ idempotency

    /// The record of an idempotency key of `tenant_id`, if it is retained at `now`.
    pub fn idempotency_record(&self, tenant_id: Id, key: &str, now: Millis) -> Option<IdemRecord> {
        self.idempotency
            .records
            .get(&(tenant_id, Box::from(key)))
            .filter(|r| r.at.saturating_add(IDEMPOTENCY_RETENTION_MS) > now)
            .map(|r| r.clone())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of Command::Idempotent and the two sinks"
    )]
    pub(super) fn idempotent(
        &self,
        tenant_id: Id,
        key: &str,
        fingerprint: &str,
        now: Millis,
        cmd: &Command<'_>,
        replies: Option<&mut Vec<Reply>>,
        ledger: Option<&mut Vec<super::ledger::LedgerEntry>>,
    ) -> R<Outcome> {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(EngineError::Invalid(
                "Idempotency-Key",
                "must be 1 to 255 bytes",
            ));
        }
        if !(batchable(cmd) || matches!(cmd, Command::Batch { .. })) {
            return Err(EngineError::Invalid(
                "cmd",
                "only native changes take an idempotency key",
            ));
        }
        let entry = self.idempotency.records.entry((tenant_id, Box::from(key)));
        if let Entry::Occupied(e) = &entry {
            let r = e.get();
            if r.at.saturating_add(IDEMPOTENCY_RETENTION_MS) > now {
                if r.fingerprint != fingerprint {
                    return Err(EngineError::IdempotencyKeyReused);
                }
                if let Some(out) = replies {
                    out.push(r.reply.clone());
                }
                return Ok(Outcome::Idempotent { replayed: true });
            }
        }
        let vacant = matches!(entry, Entry::Vacant(_));
        let held = self
            .idempotency
            .per_tenant
            .get(&tenant_id)
            .map_or(0, |n| *n);
        if vacant && held >= IDEMPOTENCY_KEYS_PER_TENANT_MAX {
            return Err(EngineError::TooMany("idempotency keys"));
        }
        let mut rs = Vec::with_capacity(1);
        self.apply_full(cmd, Some(&mut rs), ledger)?;
        let reply = rs.pop().unwrap_or(Reply::Done);
        if vacant {
            *self.idempotency.per_tenant.entry(tenant_id).or_insert(0) += 1;
        }
        self.idempotency
            .order
            .lock()
            .push_back((now, tenant_id, Box::from(key)));
        if let Some(out) = replies {
            out.push(reply.clone());
        }
        entry.insert(IdemRecord {
            tenant_id,
            key: key.to_string(),
            fingerprint: fingerprint.to_string(),
            at: now,
            reply,
        });
        Ok(Outcome::Idempotent { replayed: false })
    }

    /// Forgets the records made before the retention; returns how many.
    fn sweep_idempotency(&self, now: Millis) -> usize {
        let mut n = 0;
        let mut order = self.idempotency.order.lock();
        while let Some((at, tenant, _)) = order.front() {
            if at.saturating_add(IDEMPOTENCY_RETENTION_MS) > now {
                break;
            }
            let (at, tenant, key) = (*at, *tenant, order.pop_front().map(|o| o.2));
            let Some(key) = key else { break };
            // A key re-used after it expired has a newer record: keep it.
            if self
                .idempotency
                .records
                .remove_if(&(tenant, key), |_, r| r.at == at)
                .is_some()
            {
                if let Some(mut c) = self.idempotency.per_tenant.get_mut(&tenant) {
                    *c = c.saturating_sub(1);
                }
                n += 1;
            }
        }
        n
    }

    /// The periodic sweep of the native tables (`Command::SweepPending`).
    pub(super) fn sweep_pending(&self, now: Millis) -> usize {
        self.sweep_reservations(now) + self.sweep_idempotency(now)
    }

    /// Reservations and idempotency records (snapshots).
    pub fn native_image(&self) -> NativeImage {
        let order = self.idempotency.order.lock();
        let idempotency = order
            .iter()
            .filter_map(|(at, tenant, key)| {
                self.idempotency
                    .records
                    .get(&(*tenant, key.clone()))
                    .filter(|r| r.at == *at)
                    .map(|r| r.clone())
            })
            .collect();
        NativeImage {
            reservations: self.reservations_image(),
            idempotency,
        }
    }

    /// Puts back what [`Engine::native_image`] gave (after the licenses).
    pub fn restore_native(&self, img: NativeImage) -> R<()> {
        self.restore_reservations(img.reservations)?;
        let mut order = self.idempotency.order.lock();
        for r in img.idempotency {
            let key: Box<str> = r.key.as_str().into();
            order.push_back((r.at, r.tenant_id, key.clone()));
            if self
                .idempotency
                .records
                .insert((r.tenant_id, key), r.clone())
                .is_none()
            {
                *self.idempotency.per_tenant.entry(r.tenant_id).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    /// Whether the engine holds any native state (reservations, idempotency
    /// records): snapshots write the native frame only then.
    pub fn has_native_state(&self) -> bool {
        !self.reservations.all.is_empty() || !self.idempotency.records.is_empty()
    }
}

/// The `now` a command carries (0 for those without one).
fn command_now(op: &Command<'_>) -> Millis {
    use Command as C;
    match op {
        C::AddConsumption { now, .. }
        | C::Reserve { now, .. }
        | C::CommitReservation { now, .. }
        | C::VoidReservation { now, .. }
        | C::FloatingAcquire { now, .. }
        | C::FloatingRelease { now, .. }
        | C::FloatingBorrow { now, .. }
        | C::Activate { now, .. }
        | C::Deactivate { now, .. } => *now,
        _ => 0,
    }
}
