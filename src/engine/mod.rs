//! The engine core: tenants, keys, products, customers, users, licenses,
//! features and devices, with exact atomic accounting.
//!
//! Invariants:
//! - No I/O and no clock: every time-dependent operation takes `now` (UTC ms).
//! - Every mutation is a [`Command`] applied by [`Engine::apply`]; reads are methods.
//! - No global lock: entities live in lock-sharded maps (`DashMap`), counters are
//!   atomics or per-entity locks inside them.
//! - Seats are never over-granted: see [`seat`], [`lease`], [`meter`].
//!
//! # Layout
//!
//! - `mod.rs`: the [`Engine`] and its maps, [`Outcome`], and
//!   [`Engine::apply`], the table of the engine's verbs.
//! - `read.rs`: lookups, admin pages, and the checks a request makes before
//!   it changes anything (the hot path's reads).
//! - `validate.rs`: validation of admin-written specs; refusals of the
//!   accounting primitives as [`EngineError`]s.
//! - `tenancy.rs`: tenants, API keys, products, customers, license users.
//! - `license.rs`: licenses and features.
//! - `device.rs`: activation, deactivation, blacklisting, device variables.
//! - `floating.rs`: seats and consumption on resolved licenses (renewals,
//!   adds, borrowing, the lease sweep).
//! - `vendors.rs`: the registries of the tenants' Qlik licenses, Yext
//!   accounts and Informatica orgs; their state lives in [`qlik`], [`yext`]
//!   and [`infa`].
//! - The primitives: [`seat`] (SeatPool), [`lease`] (LeasePool), [`meter`]
//!   (Meter); [`model`] (specs and entities), [`command`], [`error`],
//!   [`image`] (export and restore), [`share`] (shared specs), [`time`].
//! - [`webhook`]: subscriptions and the outbox of their events, made from
//!   the changes' ledger entries as they are applied.

pub mod command;
mod device;
pub mod error;
mod floating;
pub mod image;
pub mod infa;
pub mod lease;
pub mod ledger;
mod license;
pub mod meter;
pub mod model;
pub mod native;
pub mod qlik;
mod read;
pub mod reserve;
pub mod seat;
pub mod share;
mod tenancy;
pub mod time;
mod validate;
mod vendors;
pub mod webhook;
pub mod yext;

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use command::{Command, SeatDevice};
pub use error::{EngineError, InfaRefusal, QlikRefusal, YextRefusal};
use lease::{LeaseOutcome, LeasePool, LeasesExhausted};
use meter::{Meter, MeterError};
use model::*;
use seat::SeatPool;
use share::{share_spec, Sharer, SpecSharer};
use time::{parse_instant, Millis, DAY_MS, HOUR_MS};
use validate::*;
pub use validate::{check_json_depth, end_instant, JSON_DEPTH_MAX, RELEASE_TEXT_BYTES_MAX};

/// Device variables kept per device; more are refused.
pub const DEVICE_VARIABLES_MAX: usize = 256;
/// Length of a device variable's name or value, bytes.
pub const DEVICE_VARIABLE_BYTES_MAX: usize = 4096;
/// Hardware id length, bytes.
pub const HARDWARE_ID_BYTES_MAX: usize = 512;
/// Devices remembered per license (active and deactivated).
pub const DEVICES_PER_LICENSE_MAX: usize = 100_000;
/// Features per license.
pub const FEATURES_PER_LICENSE_MAX: usize = 256;
/// First id handed out (LicenseSpring ids are never small).
pub const FIRST_ID: Id = 10_000;

/// What a command did, for the surface that sent it to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Activated {
        device_id: Id,
        new: bool,
        transfer: bool,
    },
    Deactivated,
    Floating {
        outcome: LeaseOutcome,
        in_use: u32,
    },
    Released {
        held: bool,
        in_use: u32,
    },
    Borrowed {
        until: Millis,
        in_use: u32,
    },
    Consumed {
        total: i64,
        excess: bool,
    },
    Swept {
        freed: usize,
    },
    /// A Qlik assignment was made or moved.
    Assigned {
        excess: bool,
        /// A new subject got the assignment (an update that changed subject).
        created: bool,
    },
    /// A Qlik access check admitted the subject.
    Access(qlik::AccessVia),
    /// A reservation was made.
    Reserved {
        id: Id,
        expires_at: Millis,
    },
    /// A reservation was committed (`committed` units used) or voided (0).
    Settled {
        committed: i64,
    },
    /// An idempotent change was made, or (`replayed`) had been made before.
    Idempotent {
        replayed: bool,
    },
    /// Every operation of a batch was applied.
    Batch {
        ops: u32,
    },
}

impl Outcome {
    /// Whether the command that gave this outcome changed state that a replay
    /// must rebuild. A renewal extends a seat that is already held, a release
    /// of nothing and a sweep that freed nothing change nothing: they are not
    /// logged (see `storage`).
    pub fn changed_state(&self) -> bool {
        !matches!(
            self,
            Outcome::Floating {
                outcome: LeaseOutcome::Renewed,
                ..
            } | Outcome::Released { held: false, .. }
                | Outcome::Swept { freed: 0 }
                | Outcome::Idempotent { replayed: true }
                | Outcome::Access(qlik::AccessVia::Assigned(_) | qlik::AccessVia::AnalyzerTime)
        )
    }
}

type R<T> = Result<T, EngineError>;

/// A search's find ([`Engine::search`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// `license`, `tenant`, `qlik_subject` or `yext_entity`.
    pub kind: &'static str,
    pub id: Id,
    pub tenant_id: Id,
    pub label: String,
}

impl Hit {
    fn new(kind: &'static str, id: Id, tenant_id: Id, label: String) -> Hit {
        Hit {
            kind,
            id,
            tenant_id,
            label,
        }
    }
}

/// Totals over every license ([`Engine::census`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub features: u64,
    /// Devices holding an activation seat.
    pub devices: u64,
    pub floating_held: u64,
    /// Meters at 80 % of their cap or more in the current period.
    pub meters_near_cap: u64,
    pub reservations_open: u64,
    pub webhooks: u64,
    /// Webhook deliveries waiting in the outbox.
    pub webhook_pending: u64,
}

#[derive(Debug)]
pub struct Engine {
    /// Next id to hand out; `apply` raises it past every id it sees so replayed
    /// commands never collide with new ones.
    seq: AtomicU64,
    /// This node's id lane and the number of lanes (1: a single node);
    /// set once at start (see [`Engine::next_id`]).
    id_lane: AtomicU64,
    id_lanes: AtomicU64,
    tenants: Map<Id, Arc<Tenant>>,
    api_keys: Map<Box<str>, Arc<ApiKey>>,
    products: Map<Id, Arc<Product>>,
    customers: Map<Id, Arc<Customer>>,
    users: Map<Id, Arc<LicenseUser>>,
    licenses: Map<Id, Arc<License>>,
    /// Equal license specs (the key is not part of them), feature specs and
    /// feature codes, each stored once (see [`share`]): a catalog's licenses
    /// mostly repeat their products' definitions, and a license spec with its
    /// strings is about 300 bytes. Sharded maps; touched only on writes.
    license_specs: SpecSharer<LicenseSpec>,
    feature_specs: SpecSharer<FeatureSpec>,
    feature_codes: Sharer<Box<str>, Box<str>>,
    /// Licenses whose (license- or feature-level) lease pools may hold seats:
    /// what the lease sweeper visits. Sharded; written when a seat is newly
    /// taken or borrowed, not on renewals.
    leased: Map<Id, ()>,
    /// tenant id -> its Qlik license, allotments and assignments (see [`qlik`]).
    qlik: Map<Id, Arc<qlik::QlikTenant>>,
    /// tenant id -> its Yext account and packs (see [`yext`]).
    yext: Map<Id, Arc<yext::YextAccount>>,
    /// Yext account id -> tenant id (account ids are unique across tenants).
    yext_accounts: Map<Box<str>, Id>,
    /// tenant id -> its Informatica org (see [`infa`]).
    infa: Map<Id, Arc<infa::InfaOrg>>,
    /// Informatica org id -> tenant id; username -> tenant id. Unique across tenants.
    infa_orgs: Map<Box<str>, Id>,
    infa_users: Map<Box<str>, Id>,
    /// Informatica session key -> its org's tenant (the sessions are the
    /// orgs'; this finds a request's org).
    infa_sessions: Map<Box<str>, Id>,
    /// Reservations of the native API (see [`reserve`]).
    reservations: reserve::Reservations,
    /// Idempotency records of the native API (see [`native`]).
    idempotency: native::Idempotency,
    /// Webhook subscriptions and their outbox (see [`webhook`]): one
    /// mutex, skipped by every change while no tenant subscribes.
    hooks: webhook::Hooks,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    pub fn new() -> Self {
        Engine {
            seq: AtomicU64::new(FIRST_ID),
            id_lane: AtomicU64::new(0),
            id_lanes: AtomicU64::new(1),
            tenants: new_map(),
            api_keys: new_map(),
            products: new_map(),
            customers: new_map(),
            users: new_map(),
            licenses: new_map(),
            license_specs: SpecSharer::default(),
            feature_specs: SpecSharer::default(),
            feature_codes: Sharer::default(),
            leased: new_map(),
            qlik: new_map(),
            yext: new_map(),
            yext_accounts: new_map(),
            infa: new_map(),
            infa_orgs: new_map(),
            infa_users: new_map(),
            infa_sessions: new_map(),
            reservations: Default::default(),
            idempotency: Default::default(),
            hooks: Default::default(),
        }
    }

    /// The shared copy of a license spec, without its key (the key lives in
    /// [`License::license_key`]; with it no two specs would be equal).
    fn share_license_spec(&self, spec: &LicenseSpec) -> Arc<LicenseSpec> {
        if spec.license_key.is_none() {
            return share_spec(&self.license_specs, spec);
        }
        let mut keyless = spec.clone();
        keyless.license_key = None;
        share_spec(&self.license_specs, &keyless)
    }

    /// A fresh id for a command about to be built. In a cluster each node
    /// hands out the ids of its own lane (`id % lanes == lane`), so two
    /// nodes never build commands with the same new id; applying a command
    /// raises the sequence past its ids on every node.
    pub fn next_id(&self) -> Id {
        let lanes = self.id_lanes.load(Ordering::Relaxed);
        if lanes <= 1 {
            return self.seq.fetch_add(1, Ordering::AcqRel);
        }
        let lane = self.id_lane.load(Ordering::Relaxed);
        let mut cur = self.seq.load(Ordering::Acquire);
        loop {
            let id = cur + (lane + lanes - cur % lanes) % lanes;
            match self
                .seq
                .compare_exchange_weak(cur, id + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return id,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Makes this engine hand out the ids of `lane` of `lanes` (a cluster
    /// node's; see [`Engine::next_id`]).
    pub fn set_id_lane(&self, lane: u64, lanes: u64) {
        assert!(lanes >= 1 && lane < lanes, "lane {lane} of {lanes}");
        self.id_lane.store(lane, Ordering::Relaxed);
        self.id_lanes.store(lanes, Ordering::Relaxed);
    }

    fn see_id(&self, id: Id) {
        self.seq.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }

    // ================================================================ apply

    /// Applies one command. On error nothing has changed.
    #[allow(
        clippy::too_many_lines,
        reason = "the table of the engine's verbs, one arm per command"
    )]
    pub fn apply(&self, cmd: &Command<'_>) -> R<Outcome> {
        use Command as C;
        match cmd {
            C::PutTenant { id, spec } => self.put_tenant(*id, spec),
            C::DeleteTenant { id } => self.delete_tenant(*id),
            C::PutApiKey { spec } => self.put_api_key(spec),
            C::RevokeApiKey { api_key } => self.revoke_api_key(api_key),
            C::DeleteApiKey { api_key } => self.delete_api_key(api_key),
            C::PutProduct { id, spec } => self.put_product(*id, spec),
            C::DeleteProduct { id } => self.delete_product(*id),
            C::PutCustomer { id, spec } => self.put_customer(*id, spec),
            C::DeleteCustomer { id } => self.delete_customer(*id),
            C::PutUser { id, spec } => self.put_user(*id, spec),
            C::DeleteUser { id } => self.delete_user(*id),
            C::PutLicense {
                id,
                spec,
                features,
                now,
            } => self.put_license(*id, spec, features, *now),
            C::DeleteLicense { id } => self.delete_license(*id),
            C::PutFeature {
                license_id: l,
                id,
                spec,
                now,
            } => self.put_feature(*l, *id, spec, *now),
            C::DeleteFeature {
                license_id: l, id, ..
            } => self.delete_feature(*l, *id),
            C::SetConsumption {
                license_id: l,
                feature_id: f,
                total,
                ..
            } => self.set_consumption(*l, *f, *total),
            C::PutWebhook {
                id,
                tenant_id,
                spec,
                secret,
                now,
            } => self.put_webhook(*id, *tenant_id, spec, secret.as_deref(), *now),
            C::DeleteWebhook { tenant_id, id } => self.delete_webhook(*tenant_id, *id),
            C::RotateWebhookSecret {
                tenant_id,
                id,
                secret,
                overlap_ms,
                now,
            } => self.rotate_webhook_secret(*tenant_id, *id, secret, *overlap_ms, *now),
            C::WebhookAttempted {
                tenant_id,
                subscription_id,
                event,
                at,
                report,
            } => self.webhook_attempted(*tenant_id, *subscription_id, *event, *at, report),
            C::WebhookRetry {
                tenant_id,
                subscription_id,
                event,
                now,
            } => self.webhook_retry(*tenant_id, *subscription_id, *event, *now),
            C::FloatingDenied {
                license_id,
                feature_id,
                hardware_id,
                now,
            } => self.floating_denied(*license_id, *feature_id, hardware_id, *now),
            C::SweepNotices { now } => self.sweep_notices(*now),
            C::RestoreState { .. } => Err(EngineError::Invalid(
                "op",
                "a state restore is applied by storage, not by the engine",
            )),
            C::SetDeviceBlacklisted {
                license_id: l,
                hardware_id: hw,
                blacklisted: b,
                device_id: d,
                now,
            } => self.set_blacklisted(*l, hw, *b, *d, *now),
            C::Activate {
                license_id: l,
                hardware_id: hw,
                info,
                device_id: d,
                now,
            } => self.activate(*l, hw, info, *d, *now),
            C::Deactivate {
                license_id: l,
                hardware_id: hw,
                now,
            } => self.deactivate(*l, hw, *now),
            C::FloatingAcquire {
                license_id: l,
                feature_id: f,
                hardware_id: hw,
                now,
                ttl_ms,
            } => self.floating_acquire(*l, *f, hw, *now, *ttl_ms),
            C::FloatingRelease {
                license_id: l,
                feature_id: f,
                hardware_id: hw,
                now,
            } => self.floating_release(*l, *f, hw, *now),
            C::FloatingBorrow {
                license_id: l,
                feature_id: f,
                hardware_id: hw,
                until,
                now,
            } => self.borrow(*l, *f, hw, *until, *now),
            C::AddConsumption {
                license_id: l,
                feature_id: f,
                amount,
                now,
            } => self.add_consumption(*l, *f, *amount, *now),
            C::Reserve {
                reservation_id: id,
                tenant_id: t,
                license_id: l,
                feature_id: f,
                units,
                timeout_ms,
                now,
            } => self.reserve(*id, *t, *l, *f, *units, *timeout_ms, *now),
            C::CommitReservation {
                tenant_id: t,
                reservation_id: id,
                units,
                device,
                now,
            } => self.commit_reservation(*t, *id, *units, device.as_ref(), *now),
            C::VoidReservation {
                tenant_id: t,
                reservation_id: id,
                now,
            } => self.void_reservation(*t, *id, *now),
            C::SweepPending { now } => Ok(Outcome::Swept {
                freed: self.sweep_pending(*now),
            }),
            C::Idempotent {
                tenant_id: t,
                key,
                fingerprint,
                now,
                cmd,
            } => self.idempotent(*t, key, fingerprint, *now, cmd, None, None),
            C::Batch { ops, .. } => self.apply_batch(ops, None, None),
            C::TrackDeviceVariables {
                license_id: l,
                hardware_id: hw,
                variables: v,
                now,
            } => self.track_variables(*l, hw, v, *now),
            C::SweepLeases { now } => Ok(Outcome::Swept {
                freed: self.sweep_leases(*now),
            }),
            C::PutQlik {
                tenant_id: t,
                spec,
                now,
            } => self.put_qlik(*t, spec, *now),
            C::DeleteQlik { tenant_id: t } => self.delete_qlik(*t),
            C::QlikSettings {
                tenant_id: t,
                auto_assign_professional: p,
                auto_assign_analyzer: a,
            } => self.qlik_settings(*t, *p, *a),
            C::QlikAssign {
                tenant_id: t,
                subject,
                kind,
                now,
            } => self.qlik_assign(*t, subject, *kind, *now),
            C::QlikUnassign {
                tenant_id: t,
                subject,
                kind,
            } => self.qlik_unassign(*t, subject, *kind),
            C::QlikUpdate {
                tenant_id: t,
                source_subject: from,
                source_kind: from_kind,
                subject,
                kind,
                now,
            } => self.qlik_update(*t, from, *from_kind, subject, *kind, *now),
            C::QlikConsume {
                tenant_id: t,
                record,
                now,
            } => self.qlik_consume(*t, record, *now),
            C::QlikAccess {
                tenant_id: t,
                subject,
                now,
            } => self.qlik_access(*t, subject, *now),
            C::PutYext { tenant_id: t, spec } => self.put_yext(*t, spec),
            C::DeleteYext { tenant_id: t } => self.delete_yext(*t),
            C::YextAssign {
                tenant_id: t,
                pack,
                entity,
                now,
            } => self.yext_assign(*t, pack, entity, *now),
            C::YextUnassign {
                tenant_id: t,
                pack,
                entity,
                now,
            } => self.yext_unassign(*t, pack, entity, *now),
            C::YextSchedule {
                tenant_id: t,
                pack,
                entity,
                expiration,
                now,
            } => self.yext_schedule(*t, pack, entity, expiration.as_deref(), *now),
            C::SweepExpired { now } => Ok(Outcome::Swept {
                freed: self.yext.iter().map(|a| a.sweep(*now)).sum(),
            }),
            C::PutInfa {
                tenant_id: t,
                spec,
                first_version: v,
            } => self.put_infa(*t, spec, *v),
            C::DeleteInfa { tenant_id: t } => self.delete_infa(*t),
            C::InfaSetLicenses {
                tenant_id: t,
                licenses,
                expected_version: v,
            } => self.infa_set_licenses(*t, licenses, *v),
            C::InfaConsume {
                tenant_id: t,
                limit,
                amount,
            } => self.infa_consume(*t, limit, *amount),
            C::InfaLogin {
                tenant_id: t,
                session,
                username,
                password_hash,
                now,
            } => self.infa_login(*t, session, (username, password_hash), *now),
            C::InfaTouch {
                tenant_id: t,
                session,
                now,
            } => {
                self.infa_of(*t)?.touch_session(session, *now)?;
                Ok(Outcome::Done)
            }
        }
    }
}

/// Floating seats held on a license and its features (as of their last change).
fn seats_held(l: &License) -> u32 {
    l.floating.in_use_hint()
        + l.features
            .read()
            .iter()
            .map(|f| f.floating.in_use_hint())
            .sum::<u32>()
}

/// A lease pool borrowed from a license or a feature (keeps the owner alive).
enum LeaseRef {
    License(Arc<License>),
    Feature(Arc<Feature>),
}

impl std::ops::Deref for LeaseRef {
    type Target = LeasePool;
    fn deref(&self) -> &LeasePool {
        match self {
            LeaseRef::License(l) => &l.floating,
            LeaseRef::Feature(f) => &f.floating,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine holding a generated catalog of `licenses`, and its product.
    fn generated(licenses: u64) -> (Engine, Arc<Product>) {
        let mut buf = Vec::new();
        crate::catalog::generate(&mut buf, licenses, 4).expect("generate");
        let e = Engine::new();
        crate::catalog::load_slice(&e, &buf, 0).expect("load");
        let tenant = e
            .api_key(crate::catalog::GENERATED_API_KEY)
            .expect("key")
            .tenant_id;
        let p = e
            .product_by_code(tenant, crate::catalog::GENERATED_PRODUCT)
            .expect("product");
        (e, p)
    }

    /// An engine holding a generated catalog of one license, and the license.
    fn generated_one() -> (Engine, Arc<License>) {
        let (e, p) = generated(1);
        let lic = p
            .licenses_by_key
            .get(crate::catalog::generated_license(0).0.as_str())
            .expect("license")
            .clone();
        (e, lic)
    }

    /// Equal feature specs are stored once; changing one feature gives it its
    /// own spec and leaves the others as they were.
    #[test]
    fn equal_feature_specs_are_shared_and_changes_stay_local() {
        let (e, p) = generated(3);
        let lic = |i| {
            p.licenses_by_key
                .get(crate::catalog::generated_license(i).0.as_str())
                .expect("license")
                .clone()
        };
        let (a, b) = (lic(0), lic(1));
        let (fa, fb) = (a.feature("f0").expect("f0"), b.feature("f0").expect("f0"));
        assert!(Arc::ptr_eq(&fa.spec.load(), &fb.spec.load()));
        let mut changed = (**fa.spec.load()).clone();
        changed.name = "Renamed".into();
        e.apply(&Command::PutFeature {
            license_id: a.id,
            id: fa.id,
            spec: changed,
            now: 0,
        })
        .expect("update");
        assert_eq!(fa.spec.load().name, "Renamed");
        assert_eq!(fb.spec.load().name, "Feature 0");
        assert!(!Arc::ptr_eq(&fa.spec.load(), &fb.spec.load()));
    }

    /// A license put again with another spec: the check's lock-free mirror
    /// (enabled, active, start, end plus grace) follows the spec, and the
    /// validity without grace is given back from it.
    #[test]
    fn usability_mirror_follows_the_spec() {
        let (e, lic) = generated_one();
        let now = 1_795_000_000_000;
        assert_eq!(e.check_usable(&lic, now), Ok(()));
        let put = |f: &dyn Fn(&mut LicenseSpec)| {
            let mut spec = lic.spec();
            f(&mut spec);
            e.apply(&Command::PutLicense {
                id: lic.id,
                spec,
                features: vec![],
                now,
            })
            .expect("put");
        };
        put(&|s| s.enabled = false);
        assert_eq!(
            e.check_usable(&lic, now),
            Err(EngineError::LicenseNotEnabled)
        );
        put(&|s| {
            s.enabled = true;
            s.active = false;
        });
        assert_eq!(
            e.check_usable(&lic, now),
            Err(EngineError::LicenseNotActive)
        );
        put(&|s| {
            s.active = true;
            s.start_date = Some("2030-01-01".into());
        });
        assert_eq!(
            e.check_usable(&lic, now),
            Err(EngineError::LicenseNotStarted)
        );
        let end = end_instant(&Some("2026-01-01".into()));
        put(&|s| {
            s.start_date = None;
            s.validity_period = Some("2026-01-01".into());
            s.allow_grace_period = true;
            s.grace_period = 48;
        });
        assert_eq!(e.usable_until(&lic), end + 48 * time::HOUR_MS);
        assert_eq!(lic.valid_until(&lic.spec.read()), end);
        assert_eq!(e.check_usable(&lic, end + 47 * time::HOUR_MS), Ok(()));
        assert!(e.is_expired(&lic, &lic.spec.read(), end + 47 * time::HOUR_MS));
        assert_eq!(
            e.check_usable(&lic, end + 48 * time::HOUR_MS),
            Err(EngineError::LicenseExpired)
        );
        put(&|s| s.allow_grace_period = false);
        assert_eq!(e.usable_until(&lic), end);
        assert_eq!(e.check_usable(&lic, end), Err(EngineError::LicenseExpired));
    }

    /// Readers of the mirror never see half of a write: while a writer
    /// flips a license between two specs (enabled and expired, disabled and
    /// valid), every read is one of the two, never "enabled and valid".
    #[test]
    fn usability_reads_never_mix_two_writes() {
        let (e, lic) = generated_one();
        let mut expired = lic.spec();
        expired.validity_period = Some("2020-01-01".into());
        let mut disabled = lic.spec();
        disabled.enabled = false;
        disabled.validity_period = Some("2040-01-01".into());
        let now = 1_795_000_000_000;
        let put = |spec: &LicenseSpec| {
            e.apply(&Command::PutLicense {
                id: lic.id,
                spec: spec.clone(),
                features: vec![],
                now,
            })
            .expect("put");
        };
        put(&expired);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let u = lic.usability();
                    assert!(!(u.enabled && u.usable_until > now), "a mixed read: {u:?}");
                    reads += 1;
                }
                reads
            });
            for i in 0..20_000 {
                put(if i % 2 == 0 { &disabled } else { &expired });
            }
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().expect("reader") > 0);
        });
    }

    /// A feature's spec and revision read as one: while a writer flips a
    /// feature between two names, every revision a reader sees comes with
    /// one name only (the signatures kept by revision rely on it).
    #[test]
    fn feature_spec_and_revision_read_as_one() {
        let (e, lic) = generated_one();
        let f = lic.feature("f0").expect("f0");
        let named = |name: &str| {
            let mut spec = (**f.spec.load()).clone();
            spec.name = name.into();
            spec
        };
        let (a, b) = (named("A"), named("B"));
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut seen = std::collections::HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let (revision, spec) = f.spec_at_revision();
                    let first = seen.entry(revision).or_insert_with(|| spec.name.clone());
                    assert_eq!(*first, spec.name, "revision {revision} with two specs");
                }
                seen.len()
            });
            for i in 0..100_000 {
                e.apply(&Command::PutFeature {
                    license_id: lic.id,
                    id: f.id,
                    spec: if i % 2 == 0 { a.clone() } else { b.clone() },
                    now: 0,
                })
                .expect("put");
            }
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().expect("reader") > 1);
        });
    }

    /// The sweeper frees expired seats and then forgets the license, so its
    /// work follows the seats in use rather than the catalog.
    #[test]
    fn sweeper_visits_only_licenses_with_seats() {
        let (e, p) = generated(50);
        assert_eq!(e.leased.len(), 0);
        let pool = p
            .licenses_by_key
            .get(crate::catalog::GENERATED_POOL_LICENSE)
            .expect("pool")
            .clone();
        let seat = pool
            .feature(crate::catalog::GENERATED_POOL_FEATURE)
            .expect("seat");
        for d in 0..3 {
            e.apply(&Command::FloatingAcquire {
                license_id: pool.id,
                feature_id: Some(seat.id),
                hardware_id: std::borrow::Cow::Owned(crate::catalog::generated_pool_device(d)),
                now: 0,
                ttl_ms: None,
            })
            .expect("acquire");
        }
        assert_eq!(e.leased.len(), 1);
        // Still held: nothing freed, the license stays registered.
        assert_eq!(e.sweep_leases(time::MINUTE_MS), 0);
        assert_eq!(e.leased.len(), 1);
        // Past the 30-minute timeout: all three freed, the license forgotten.
        assert_eq!(e.sweep_leases(31 * time::MINUTE_MS), 3);
        assert_eq!(seat.floating.in_use(31 * time::MINUTE_MS), 0);
        assert_eq!(e.leased.len(), 0);
        assert_eq!(e.sweep_leases(32 * time::MINUTE_MS), 0);
    }
}
