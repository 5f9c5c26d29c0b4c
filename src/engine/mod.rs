//! The engine core: tenants, keys, products, customers, users, licenses,
//! features and devices, with exact atomic accounting.
//!
//! Invariants:
//! - No I/O and no clock: every time-dependent operation takes `now` (UTC ms).
//! - Every mutation is a [`Command`] applied by [`Engine::apply`]; reads are methods.
//! - No global lock: entities live in lock-sharded maps (`DashMap`), counters are
//!   atomics or per-entity locks inside them.
//! - Seats are never over-granted: see [`seat`], [`lease`], [`meter`].

pub mod command;
pub mod error;
pub mod image;
pub mod infa;
pub mod lease;
pub mod meter;
pub mod model;
pub mod qlik;
pub mod seat;
pub mod share;
pub mod time;
pub mod yext;

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use command::Command;
pub use error::EngineError;
use lease::{LeaseOutcome, LeasePool, LeasesExhausted};
use meter::{Meter, MeterError};
use model::*;
use seat::SeatPool;
use share::{share_spec, Sharer};
use time::{parse_instant, Millis, DAY_MS, HOUR_MS};

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
                | Outcome::Access(qlik::AccessVia::Assigned(_) | qlik::AccessVia::AnalyzerTime)
        )
    }
}

type R<T> = Result<T, EngineError>;

#[derive(Debug)]
pub struct Engine {
    /// Next id to hand out; `apply` raises it past every id it sees so replayed
    /// commands never collide with new ones.
    seq: AtomicU64,
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
    license_specs: Sharer<Box<[u8]>, LicenseSpec>,
    feature_specs: Sharer<Box<[u8]>, FeatureSpec>,
    feature_codes: Sharer<Box<str>, str>,
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
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Instant from an optional ISO 8601 string. A bare date (`2031-03-16`) as an end
/// means "through that day": the instant is the next midnight.
pub fn end_instant(s: &Option<String>) -> Millis {
    match s.as_deref().map(str::trim) {
        None | Some("") => i64::MAX,
        Some(v) => match parse_instant(v) {
            Some(t) if v.len() == 10 => t + DAY_MS,
            Some(t) => t,
            None => i64::MAX,
        },
    }
}

/// The first instant (UTC) of a `YYYY-MM-DD` day.
fn yext_day(d: &str) -> R<Millis> {
    if d.len() != 10 {
        return Err(EngineError::Invalid("expirationDate", "must be YYYY-MM-DD"));
    }
    parse_instant(d).ok_or(EngineError::Invalid("expirationDate", "must be YYYY-MM-DD"))
}

fn start_instant(s: &Option<String>) -> Millis {
    s.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .and_then(parse_instant)
        .unwrap_or(i64::MIN)
}

fn check_date(field: &'static str, s: &Option<String>) -> R<()> {
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(()),
        Some(v) if parse_instant(v).is_some() => Ok(()),
        Some(_) => Err(EngineError::Invalid(
            field,
            "must be an ISO 8601 date or date-time",
        )),
    }
}

/// Deepest nesting of free-form JSON (metadata, Qlik parameter values) an
/// admin may store. The log and snapshots wrap a stored value a few levels
/// deeper and decode it with serde_json's limit of 128: a value accepted here
/// must never be one that recovery cannot read back.
pub const JSON_DEPTH_MAX: usize = 32;

/// Refuses free-form JSON nested deeper than [`JSON_DEPTH_MAX`].
pub fn check_json_depth(field: &'static str, v: &serde_json::Value) -> R<()> {
    fn depth(v: &serde_json::Value, d: usize) -> usize {
        if d > JSON_DEPTH_MAX {
            return d;
        }
        match v {
            serde_json::Value::Array(a) => a.iter().map(|x| depth(x, d + 1)).max().unwrap_or(d + 1),
            serde_json::Value::Object(m) => {
                m.values().map(|x| depth(x, d + 1)).max().unwrap_or(d + 1)
            }
            _ => d,
        }
    }
    if depth(v, 0) > JSON_DEPTH_MAX {
        return Err(EngineError::Invalid(
            field,
            "nested too deeply (at most 32 levels)",
        ));
    }
    Ok(())
}

/// Longest text of a release's fields (URLs, versions, hashes), bytes.
pub const RELEASE_TEXT_BYTES_MAX: usize = 2048;

fn validate_releases(releases: &[ReleaseSpec]) -> R<()> {
    if releases.len() > PRODUCT_RELEASES_MAX {
        return Err(EngineError::Invalid("releases", "too many (at most 1000)"));
    }
    for r in releases {
        if r.version.is_empty() || r.installation_file.is_empty() {
            return Err(EngineError::Invalid(
                "releases",
                "each needs a version and an installation_file",
            ));
        }
        let texts = [
            &r.version,
            &r.installation_file,
            &r.environment,
            &r.channel,
            &r.hash_md5,
            &r.size,
            &r.eula_link,
            &r.release_notes_link,
            &r.requires_version,
        ];
        if texts.iter().any(|t| t.len() > RELEASE_TEXT_BYTES_MAX) {
            return Err(EngineError::Invalid(
                "releases",
                "a text field is longer than 2048 bytes",
            ));
        }
        check_date("release_date", &r.release_date)?;
    }
    Ok(())
}

fn validate_bundle(spec: &ProductSpec) -> R<()> {
    let codes = &spec.bundle_products;
    if codes.len() > BUNDLE_PRODUCTS_MAX {
        return Err(EngineError::Invalid(
            "bundle_products",
            "too many (at most 100)",
        ));
    }
    for (i, c) in codes.iter().enumerate() {
        if c.is_empty() || c.len() > 128 || *c == spec.short_code || codes[..i].contains(c) {
            return Err(EngineError::Invalid(
                "bundle_products",
                "short codes of other products, each once",
            ));
        }
    }
    Ok(())
}

fn validate_license(spec: &LicenseSpec) -> R<()> {
    check_json_depth("metadata", &spec.metadata)?;
    check_date("validity_period", &spec.validity_period)?;
    check_date("start_date", &spec.start_date)?;
    check_date("maintenance_period", &spec.maintenance_period)?;
    if spec.max_transfers < -1 {
        return Err(EngineError::Invalid(
            "max_transfers",
            "must be -1 (unlimited) or more",
        ));
    }
    if spec.max_consumptions < 0 || spec.max_overages < 0 {
        return Err(EngineError::Invalid(
            "max_consumptions",
            "must not be negative",
        ));
    }
    if spec.floating_users > lease::LEASE_POOL_SEATS_MAX {
        return Err(EngineError::Invalid("floating_users", "too large"));
    }
    if spec.reset_consumption && spec.consumption_period.is_none() {
        return Err(EngineError::Invalid(
            "consumption_period",
            "required when reset_consumption is true",
        ));
    }
    Ok(())
}

fn validate_feature(spec: &FeatureSpec) -> R<()> {
    check_json_depth("metadata", &spec.metadata)?;
    if spec.code.is_empty() || spec.code.len() > 256 {
        return Err(EngineError::Invalid("code", "must be 1 to 256 bytes"));
    }
    check_date("expiry_date", &spec.expiry_date)?;
    if spec.max_consumption < 0 || spec.max_overages < 0 {
        return Err(EngineError::Invalid(
            "max_consumption",
            "must not be negative",
        ));
    }
    if spec.floating_users > lease::LEASE_POOL_SEATS_MAX {
        return Err(EngineError::Invalid("floating_users", "too large"));
    }
    if spec.reset_consumption && spec.consumption_period.is_none() {
        return Err(EngineError::Invalid(
            "consumption_period",
            "required when reset_consumption is true",
        ));
    }
    Ok(())
}

fn lease_err(_: LeasesExhausted) -> EngineError {
    EngineError::FloatingNotAvailable
}

fn meter_err(e: MeterError) -> EngineError {
    match e {
        MeterError::LimitReached => EngineError::ConsumptionLimitReached,
        MeterError::NegativeNotAllowed => EngineError::NegativeConsumptionNotAllowed,
        MeterError::BelowZero => EngineError::ConsumptionBelowZero,
        MeterError::Overflow => EngineError::ConsumptionOverflow,
    }
}

impl Engine {
    pub fn new() -> Self {
        Engine {
            seq: AtomicU64::new(FIRST_ID),
            tenants: new_map(),
            api_keys: new_map(),
            products: new_map(),
            customers: new_map(),
            users: new_map(),
            licenses: new_map(),
            license_specs: Sharer::default(),
            feature_specs: Sharer::default(),
            feature_codes: Sharer::default(),
            leased: new_map(),
            qlik: new_map(),
            yext: new_map(),
            yext_accounts: new_map(),
            infa: new_map(),
            infa_orgs: new_map(),
            infa_users: new_map(),
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

    /// A fresh id for a command about to be built.
    pub fn next_id(&self) -> Id {
        self.seq.fetch_add(1, Ordering::AcqRel)
    }

    fn see_id(&self, id: Id) {
        self.seq.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }

    // ================================================================ reads

    pub fn tenant(&self, id: Id) -> Option<Arc<Tenant>> {
        self.tenants.get(&id).map(|t| t.clone())
    }
    pub fn api_key(&self, key: &str) -> Option<Arc<ApiKey>> {
        self.api_keys.get(key).map(|k| k.clone())
    }
    pub fn product(&self, id: Id) -> Option<Arc<Product>> {
        self.products.get(&id).map(|p| p.clone())
    }
    pub fn customer(&self, id: Id) -> Option<Arc<Customer>> {
        self.customers.get(&id).map(|c| c.clone())
    }
    pub fn user(&self, id: Id) -> Option<Arc<LicenseUser>> {
        self.users.get(&id).map(|u| u.clone())
    }
    pub fn license(&self, id: Id) -> Option<Arc<License>> {
        self.licenses.get(&id).map(|l| l.clone())
    }

    pub fn product_by_code(&self, tenant_id: Id, code: &str) -> Option<Arc<Product>> {
        self.tenants
            .get(&tenant_id)?
            .products_by_code
            .get(code)
            .map(|p| p.clone())
    }

    /// Emails match case-insensitively; the index holds lower-cased emails.
    pub fn user_by_email(&self, tenant_id: Id, email: &str) -> Option<Arc<LicenseUser>> {
        let tenant = self.tenants.get(&tenant_id)?;
        if email.bytes().any(|b| b.is_ascii_uppercase()) {
            tenant
                .users_by_email
                .get(email.to_ascii_lowercase().as_str())
                .map(|u| u.clone())
        } else {
            tenant.users_by_email.get(email).map(|u| u.clone())
        }
    }

    /// Licenses of a user, optionally of one product, in id order.
    pub fn licenses_of_user(
        &self,
        user: &LicenseUser,
        product_id: Option<Id>,
    ) -> Vec<Arc<License>> {
        let ids = user.licenses.read().clone();
        let mut out: Vec<Arc<License>> = ids
            .iter()
            .filter_map(|id| self.license(*id))
            .filter(|l| product_id.is_none_or(|p| l.product_id == p))
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }

    /// Counts of each kind of object (for /healthz and the CLI).
    pub fn stats(&self) -> [(&'static str, usize); 6] {
        [
            ("tenants", self.tenants.len()),
            ("api_keys", self.api_keys.len()),
            ("products", self.products.len()),
            ("customers", self.customers.len()),
            ("users", self.users.len()),
            ("licenses", self.licenses.len()),
        ]
    }

    /// One page of ids in ascending order after `after`, matching `keep`.
    fn page<T>(
        map: &Map<Id, Arc<T>>,
        after: Id,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> (Vec<Arc<T>>, bool) {
        let mut ids: Vec<(Id, Arc<T>)> = map
            .iter()
            .filter(|e| *e.key() > after && keep(e.value()))
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        ids.sort_unstable_by_key(|(id, _)| *id);
        let more = ids.len() > limit;
        ids.truncate(limit);
        (ids.into_iter().map(|(_, v)| v).collect(), more)
    }

    pub fn list_tenants(&self, after: Id, limit: usize) -> (Vec<Arc<Tenant>>, bool) {
        Self::page(&self.tenants, after, limit, |_| true)
    }
    pub fn list_products(
        &self,
        tenant: Option<Id>,
        after: Id,
        limit: usize,
    ) -> (Vec<Arc<Product>>, bool) {
        Self::page(&self.products, after, limit, |p| {
            tenant.is_none_or(|t| p.tenant_id == t)
        })
    }
    pub fn list_customers(
        &self,
        tenant: Option<Id>,
        after: Id,
        limit: usize,
    ) -> (Vec<Arc<Customer>>, bool) {
        Self::page(&self.customers, after, limit, |c| {
            tenant.is_none_or(|t| c.spec.read().tenant_id == t)
        })
    }
    pub fn list_users(
        &self,
        tenant: Option<Id>,
        after: Id,
        limit: usize,
    ) -> (Vec<Arc<LicenseUser>>, bool) {
        Self::page(&self.users, after, limit, |u| {
            tenant.is_none_or(|t| u.tenant_id == t)
        })
    }
    pub fn list_licenses(
        &self,
        tenant: Option<Id>,
        product: Option<Id>,
        after: Id,
        limit: usize,
    ) -> (Vec<Arc<License>>, bool) {
        Self::page(&self.licenses, after, limit, |l| {
            tenant.is_none_or(|t| l.tenant_id == t) && product.is_none_or(|p| l.product_id == p)
        })
    }
    /// API keys of a tenant (or all), ordered by key.
    pub fn list_api_keys(
        &self,
        tenant: Option<Id>,
        after: &str,
        limit: usize,
    ) -> (Vec<Arc<ApiKey>>, bool) {
        let mut keys: Vec<Arc<ApiKey>> = self
            .api_keys
            .iter()
            .filter(|k| &**k.key() > after && tenant.is_none_or(|t| k.tenant_id == t))
            .map(|k| k.value().clone())
            .collect();
        keys.sort_unstable_by(|a, b| a.api_key.cmp(&b.api_key));
        let more = keys.len() > limit;
        keys.truncate(limit);
        (keys, more)
    }

    pub fn customers_of_tenant(&self, tenant_id: Id) -> Vec<Arc<Customer>> {
        self.list_customers(Some(tenant_id), 0, usize::MAX).0
    }

    /// Users of a tenant whose licenses belong to `customer` (LicenseSpring's
    /// customer_license_users), in id order.
    pub fn users_of_customer(&self, tenant_id: Id, customer_id: Id) -> Vec<Arc<LicenseUser>> {
        let mut out: Vec<Arc<LicenseUser>> = self
            .users
            .iter()
            .filter(|u| u.tenant_id == tenant_id)
            .filter(|u| {
                u.spec.read().customer_id == Some(customer_id)
                    || u.licenses.read().iter().any(|id| {
                        self.license(*id)
                            .is_some_and(|l| l.spec.read().customer_id == Some(customer_id))
                    })
            })
            .map(|u| u.value().clone())
            .collect();
        out.sort_by_key(|u| u.id);
        out
    }

    // ================================================================ checks (hot path, no mutation)

    /// Whether the license may be used at `now`: enabled, active, started, not expired.
    pub fn check_usable(&self, license: &License, spec: &LicenseSpec, now: Millis) -> R<()> {
        if !spec.enabled {
            return Err(EngineError::LicenseNotEnabled);
        }
        if !spec.active {
            return Err(EngineError::LicenseNotActive);
        }
        if now < license.starts_at.load(Ordering::Acquire) {
            return Err(EngineError::LicenseNotStarted);
        }
        if now >= self.usable_until(license, spec) {
            return Err(EngineError::LicenseExpired);
        }
        Ok(())
    }

    /// End of validity plus the grace period, if any.
    pub fn usable_until(&self, license: &License, spec: &LicenseSpec) -> Millis {
        let until = license.valid_until.load(Ordering::Acquire);
        if spec.allow_grace_period && until != i64::MAX {
            until.saturating_add(spec.grace_period as Millis * HOUR_MS)
        } else {
            until
        }
    }

    pub fn is_expired(&self, license: &License, now: Millis) -> bool {
        now >= license.valid_until.load(Ordering::Acquire)
    }

    /// The device is activated on the license and not blacklisted.
    pub fn check_device(&self, license: &License, hardware_id: &str) -> R<()> {
        let devices = license.devices.read();
        match devices.list.iter().find(|d| d.hardware_id == hardware_id) {
            Some(d) if d.blacklisted => Err(EngineError::DeviceBlacklisted),
            Some(d) if d.active => Ok(()),
            _ => Err(EngineError::DeviceNotFound),
        }
    }

    pub fn check_feature(&self, feature: &Feature, now: Millis) -> R<()> {
        if now >= feature.expires_at.load(Ordering::Acquire) {
            return Err(EngineError::FeatureExpired);
        }
        Ok(())
    }

    pub fn device(&self, license: &License, hardware_id: &str) -> Option<Device> {
        license
            .devices
            .read()
            .list
            .iter()
            .find(|d| d.hardware_id == hardware_id)
            .cloned()
    }

    // ================================================================ apply

    /// Applies one command. On error nothing has changed.
    pub fn apply(&self, cmd: &Command<'_>) -> R<Outcome> {
        match cmd {
            Command::PutTenant { id, spec } => self.put_tenant(*id, spec),
            Command::DeleteTenant { id } => self.delete_tenant(*id),
            Command::PutApiKey { spec } => self.put_api_key(spec),
            Command::RevokeApiKey { api_key } => {
                let key = self.api_key(api_key).ok_or(EngineError::ApiKeyNotFound)?;
                key.revoked.store(true, Ordering::Release);
                Ok(Outcome::Done)
            }
            Command::DeleteApiKey { api_key } => {
                self.api_keys
                    .remove(api_key.as_str())
                    .ok_or(EngineError::ApiKeyNotFound)?;
                Ok(Outcome::Done)
            }
            Command::PutProduct { id, spec } => self.put_product(*id, spec),
            Command::DeleteProduct { id } => self.delete_product(*id),
            Command::PutCustomer { id, spec } => self.put_customer(*id, spec),
            Command::DeleteCustomer { id } => self.delete_customer(*id),
            Command::PutUser { id, spec } => self.put_user(*id, spec),
            Command::DeleteUser { id } => self.delete_user(*id),
            Command::PutLicense {
                id,
                spec,
                features,
                now,
            } => self.put_license(*id, spec, features, *now),
            Command::DeleteLicense { id } => self.delete_license(*id),
            Command::PutFeature {
                license_id,
                id,
                spec,
                now,
            } => self.put_feature(*license_id, *id, spec, *now),
            Command::DeleteFeature { license_id, id } => {
                let lic = self
                    .license(*license_id)
                    .ok_or(EngineError::LicenseNotFound)?;
                let mut fs = lic.features.write();
                let before = fs.len();
                fs.retain(|f| f.id != *id);
                if fs.len() == before {
                    return Err(EngineError::FeatureNotFound);
                }
                Ok(Outcome::Done)
            }
            Command::SetConsumption {
                license_id,
                feature_id,
                total,
            } => {
                let lic = self
                    .license(*license_id)
                    .ok_or(EngineError::LicenseNotFound)?;
                match feature_id {
                    None => lic.consumption.set_used(*total),
                    Some(fid) => self.feature_by_id(&lic, *fid)?.meter.set_used(*total),
                }
                Ok(Outcome::Done)
            }
            Command::SetDeviceBlacklisted {
                license_id,
                hardware_id,
                blacklisted,
                device_id,
                now,
            } => self.set_blacklisted(*license_id, hardware_id, *blacklisted, *device_id, *now),
            Command::Activate {
                license_id,
                hardware_id,
                info,
                device_id,
                now,
            } => self.activate(*license_id, hardware_id, info, *device_id, *now),
            Command::Deactivate {
                license_id,
                hardware_id,
                now,
            } => self.deactivate(*license_id, hardware_id, *now),
            Command::FloatingAcquire {
                license_id,
                feature_id,
                hardware_id,
                now,
            } => {
                let (pool, timeout) = self.lease_pool(*license_id, *feature_id)?;
                let (outcome, in_use) = pool
                    .acquire(hardware_id, *now, timeout)
                    .map_err(lease_err)?;
                if outcome == LeaseOutcome::Acquired {
                    self.leased.insert(*license_id, ());
                }
                Ok(Outcome::Floating { outcome, in_use })
            }
            Command::FloatingRelease {
                license_id,
                feature_id,
                hardware_id,
                now,
            } => {
                let (pool, _) = self.lease_pool(*license_id, *feature_id)?;
                let held = pool.release(hardware_id, *now);
                Ok(Outcome::Released {
                    held,
                    in_use: pool.in_use_hint(),
                })
            }
            Command::FloatingBorrow {
                license_id,
                feature_id,
                hardware_id,
                until,
                now,
            } => self.borrow(*license_id, *feature_id, hardware_id, *until, *now),
            Command::AddConsumption {
                license_id,
                feature_id,
                amount,
                now,
            } => {
                let lic = self
                    .license(*license_id)
                    .ok_or(EngineError::LicenseNotFound)?;
                let add = match feature_id {
                    None => {
                        if lic.spec.read().license_type != LicenseType::Consumption {
                            return Err(EngineError::NotConsumption);
                        }
                        lic.consumption.add(*amount, *now)
                    }
                    Some(fid) => {
                        let f = self.feature_by_id(&lic, *fid)?;
                        return Self::add_to_feature(&f, *amount, *now);
                    }
                }
                .map_err(meter_err)?;
                Ok(Outcome::Consumed {
                    total: add.total,
                    excess: add.excess,
                })
            }
            Command::TrackDeviceVariables {
                license_id,
                hardware_id,
                variables,
                now,
            } => self.track_variables(*license_id, hardware_id, variables, *now),
            Command::SweepLeases { now } => Ok(Outcome::Swept {
                freed: self.sweep_leases(*now),
            }),
            Command::PutQlik {
                tenant_id,
                spec,
                now,
            } => self.put_qlik(*tenant_id, spec, *now),
            Command::PutYext { tenant_id, spec } => self.put_yext(*tenant_id, spec),
            Command::PutInfa {
                tenant_id,
                spec,
                first_version,
            } => self.put_infa(*tenant_id, spec, *first_version),
            Command::DeleteInfa { tenant_id } => {
                let (_, org) = self
                    .infa
                    .remove(tenant_id)
                    .ok_or(EngineError::InfaOrgNotFound)?;
                self.unindex_infa(&org.spec.read());
                Ok(Outcome::Done)
            }
            Command::InfaSetLicenses {
                tenant_id,
                licenses,
                expected_version,
            } => {
                self.infa_of(*tenant_id)?
                    .set_licenses(licenses, *expected_version)?;
                Ok(Outcome::Done)
            }
            Command::InfaConsume {
                tenant_id,
                limit,
                amount,
            } => {
                let total = self.infa_of(*tenant_id)?.consume(limit, *amount)?;
                Ok(Outcome::Consumed {
                    total,
                    excess: false,
                })
            }
            Command::DeleteYext { tenant_id } => {
                let (_, a) = self
                    .yext
                    .remove(tenant_id)
                    .ok_or(EngineError::YextAccountNotFound)?;
                let account = a.spec.read().account_id.clone();
                self.yext_accounts.remove(account.as_str());
                Ok(Outcome::Done)
            }
            Command::YextAssign {
                tenant_id,
                pack,
                entity,
                now,
            } => {
                let new = self.yext_of(*tenant_id)?.assign(pack, entity, *now)?;
                Ok(Outcome::Assigned {
                    excess: false,
                    created: new,
                })
            }
            Command::YextUnassign {
                tenant_id,
                pack,
                entity,
                now,
            } => {
                self.yext_of(*tenant_id)?.unassign(pack, entity, *now)?;
                Ok(Outcome::Done)
            }
            Command::YextSchedule {
                tenant_id,
                pack,
                entity,
                expiration,
                now,
            } => {
                let exp = match expiration {
                    None => None,
                    Some(d) => Some((d.clone(), yext_day(d)?)),
                };
                self.yext_of(*tenant_id)?
                    .schedule(pack, entity, exp, *now)?;
                Ok(Outcome::Done)
            }
            Command::SweepExpired { now } => Ok(Outcome::Swept {
                freed: self.yext.iter().map(|a| a.sweep(*now)).sum(),
            }),
            Command::DeleteQlik { tenant_id } => {
                self.qlik
                    .remove(tenant_id)
                    .ok_or(EngineError::QlikLicenseNotFound)?;
                Ok(Outcome::Done)
            }
            Command::QlikSettings {
                tenant_id,
                auto_assign_professional,
                auto_assign_analyzer,
            } => {
                self.qlik_of(*tenant_id)?
                    .set_settings(*auto_assign_professional, *auto_assign_analyzer);
                Ok(Outcome::Done)
            }
            Command::QlikAssign {
                tenant_id,
                subject,
                kind,
                now,
            } => {
                let excess = self.qlik_of(*tenant_id)?.assign(subject, *kind, *now)?;
                Ok(Outcome::Assigned {
                    excess,
                    created: true,
                })
            }
            Command::QlikUnassign {
                tenant_id,
                subject,
                kind,
            } => {
                self.qlik_of(*tenant_id)?.unassign(subject, *kind)?;
                Ok(Outcome::Done)
            }
            Command::QlikUpdate {
                tenant_id,
                source_subject,
                source_kind,
                subject,
                kind,
                now,
            } => {
                let (excess, created) = self.qlik_of(*tenant_id)?.update(
                    source_subject,
                    *source_kind,
                    subject,
                    *kind,
                    *now,
                )?;
                Ok(Outcome::Assigned { excess, created })
            }
            Command::QlikConsume {
                tenant_id,
                record,
                now,
            } => {
                let q = self.qlik_of(*tenant_id)?;
                self.see_id(record.id);
                let (total, excess) = q.consume(record, *now)?;
                Ok(Outcome::Consumed { total, excess })
            }
            Command::QlikAccess {
                tenant_id,
                subject,
                now,
            } => Ok(Outcome::Access(
                self.qlik_of(*tenant_id)?.access(subject, *now)?,
            )),
        }
    }

    fn put_qlik(&self, tenant_id: Id, spec: &qlik::QlikSpec, now: Millis) -> R<Outcome> {
        self.tenant(tenant_id).ok_or(EngineError::TenantNotFound)?;
        qlik::validate(spec)?;
        let spec = Arc::new(spec.clone());
        match self.qlik.entry(tenant_id) {
            dashmap::mapref::entry::Entry::Occupied(e) => e.get().set_spec(spec, now),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(Arc::new(qlik::QlikTenant::new(tenant_id, spec, now)));
            }
        }
        Ok(Outcome::Done)
    }

    fn put_yext(&self, tenant_id: Id, spec: &yext::YextSpec) -> R<Outcome> {
        self.tenant(tenant_id).ok_or(EngineError::TenantNotFound)?;
        yext::validate(spec)?;
        // The account id must not name another tenant's account.
        if let Some(owner) = self.yext_accounts.get(spec.account_id.as_str()) {
            if *owner != tenant_id {
                return Err(EngineError::Duplicate("yext account id"));
            }
        }
        let spec = Arc::new(spec.clone());
        let old = match self.yext.entry(tenant_id) {
            dashmap::mapref::entry::Entry::Occupied(e) => {
                let old = e.get().spec.read().account_id.clone();
                e.get().set_spec(spec.clone());
                Some(old)
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(Arc::new(yext::YextAccount::new(tenant_id, spec.clone())));
                None
            }
        };
        if let Some(old) = old.filter(|o| *o != spec.account_id) {
            self.yext_accounts.remove(old.as_str());
        }
        self.yext_accounts
            .insert(spec.account_id.as_str().into(), tenant_id);
        Ok(Outcome::Done)
    }

    fn put_infa(&self, tenant_id: Id, spec: &infa::InfaSpec, first_version: u64) -> R<Outcome> {
        self.tenant(tenant_id).ok_or(EngineError::TenantNotFound)?;
        infa::validate(spec)?;
        if self
            .infa_orgs
            .get(spec.org_id.as_str())
            .is_some_and(|t| *t != tenant_id)
        {
            return Err(EngineError::Duplicate("informatica org id"));
        }
        for u in &spec.users {
            if self
                .infa_users
                .get(u.username.as_str())
                .is_some_and(|t| *t != tenant_id)
            {
                return Err(EngineError::Duplicate("username"));
            }
        }
        let spec = Arc::new(spec.clone());
        match self.infa.entry(tenant_id) {
            dashmap::mapref::entry::Entry::Occupied(e) => {
                self.unindex_infa(&e.get().spec.read().clone());
                e.get().set_spec(spec.clone());
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                // Each creation starts its versions in a range of its own
                // (2^24 updates wide), so no ETag of an earlier org of the
                // same id can match a later one.
                let start = first_version.max(1).saturating_mul(1 << 24);
                v.insert(Arc::new(infa::InfaOrg::new(tenant_id, spec.clone(), start)));
            }
        }
        self.index_infa(tenant_id, &spec);
        Ok(Outcome::Done)
    }

    fn index_infa(&self, tenant_id: Id, spec: &infa::InfaSpec) {
        self.infa_orgs
            .insert(spec.org_id.as_str().into(), tenant_id);
        for u in &spec.users {
            self.infa_users
                .insert(u.username.as_str().into(), tenant_id);
        }
    }

    fn unindex_infa(&self, spec: &infa::InfaSpec) {
        self.infa_orgs.remove(spec.org_id.as_str());
        for u in &spec.users {
            self.infa_users.remove(u.username.as_str());
        }
    }

    fn infa_of(&self, tenant_id: Id) -> R<Arc<infa::InfaOrg>> {
        self.infa(tenant_id).ok_or(EngineError::InfaOrgNotFound)
    }

    /// A tenant's Informatica org.
    pub fn infa(&self, tenant_id: Id) -> Option<Arc<infa::InfaOrg>> {
        self.infa.get(&tenant_id).map(|o| o.clone())
    }

    /// The tenant of an Informatica org id.
    pub fn infa_org_tenant(&self, org_id: &str) -> Option<Id> {
        self.infa_orgs.get(org_id).map(|t| *t)
    }

    /// The tenant of an Informatica username.
    pub fn infa_user_tenant(&self, username: &str) -> Option<Id> {
        self.infa_users.get(username).map(|t| *t)
    }

    fn yext_of(&self, tenant_id: Id) -> R<Arc<yext::YextAccount>> {
        self.yext(tenant_id).ok_or(EngineError::YextAccountNotFound)
    }

    /// A tenant's Yext account.
    pub fn yext(&self, tenant_id: Id) -> Option<Arc<yext::YextAccount>> {
        self.yext.get(&tenant_id).map(|a| a.clone())
    }

    fn qlik_of(&self, tenant_id: Id) -> R<Arc<qlik::QlikTenant>> {
        self.qlik(tenant_id).ok_or(EngineError::QlikLicenseNotFound)
    }

    /// A tenant's Qlik license state.
    pub fn qlik(&self, tenant_id: Id) -> Option<Arc<qlik::QlikTenant>> {
        self.qlik.get(&tenant_id).map(|q| q.clone())
    }

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
        } = cmd
        else {
            return None;
        };
        let (pool, timeout) = self.lease_pool(*license_id, *feature_id).ok()?;
        let in_use = pool.renew(hardware_id, *now, timeout)?;
        Some(Outcome::Floating {
            outcome: LeaseOutcome::Renewed,
            in_use,
        })
    }

    fn add_to_feature(f: &Feature, amount: i64, now: Millis) -> R<Outcome> {
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

    fn feature_by_id(&self, lic: &License, id: Id) -> R<Arc<Feature>> {
        lic.features
            .read()
            .iter()
            .find(|f| f.id == id)
            .cloned()
            .ok_or(EngineError::FeatureNotFound)
    }

    /// The lease pool of a license or one of its features, and its timeout.
    fn lease_pool(&self, license_id: Id, feature_id: Option<Id>) -> R<(LeaseRef, Millis)> {
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
                let spec = f.spec.read();
                if !spec.floating() {
                    return Err(EngineError::FeatureNotFloating);
                }
                let timeout = spec.floating_timeout.max(1) as Millis * time::MINUTE_MS;
                drop(spec);
                Ok((LeaseRef::Feature(f), timeout))
            }
        }
    }

    // ---------------------------------------------------------------- tenants, keys

    fn put_tenant(&self, id: Id, spec: &TenantSpec) -> R<Outcome> {
        if spec.name.trim().is_empty() {
            return Err(EngineError::Invalid("name", "must not be empty"));
        }
        if let Some(parent) = spec.parent_id {
            if parent == id {
                return Err(EngineError::Invalid(
                    "parent_id",
                    "a tenant cannot be its own parent",
                ));
            }
            if !self.tenants.contains_key(&parent) {
                return Err(EngineError::TenantNotFound);
            }
            // No cycles: walk up from the parent.
            let mut cur = Some(parent);
            let mut hops = 0;
            while let Some(t) = cur {
                if t == id || hops > 64 {
                    return Err(EngineError::Invalid(
                        "parent_id",
                        "would make a cycle or a chain deeper than 64",
                    ));
                }
                cur = self.tenant(t).and_then(|t| t.spec.read().parent_id);
                hops += 1;
            }
        }
        self.see_id(id);
        match self.tenants.entry(id) {
            dashmap::Entry::Occupied(e) => *e.get().spec.write() = spec.clone(),
            dashmap::Entry::Vacant(e) => {
                e.insert(Arc::new(Tenant {
                    id,
                    spec: RwLock::new(spec.clone()),
                    products_by_code: new_map(),
                    users_by_email: new_map(),
                }));
            }
        }
        Ok(Outcome::Done)
    }

    fn delete_tenant(&self, id: Id) -> R<Outcome> {
        let tenant = self.tenant(id).ok_or(EngineError::TenantNotFound)?;
        if self.qlik.contains_key(&id) {
            return Err(EngineError::InUse("qlik license"));
        }
        if self.yext.contains_key(&id) {
            return Err(EngineError::InUse("yext account"));
        }
        if self.infa.contains_key(&id) {
            return Err(EngineError::InUse("informatica org"));
        }
        if !tenant.products_by_code.is_empty() {
            return Err(EngineError::InUse("products"));
        }
        if !tenant.users_by_email.is_empty() {
            return Err(EngineError::InUse("users"));
        }
        if self.api_keys.iter().any(|k| k.tenant_id == id) {
            return Err(EngineError::InUse("api keys"));
        }
        if self.customers.iter().any(|c| c.spec.read().tenant_id == id) {
            return Err(EngineError::InUse("customers"));
        }
        if self
            .tenants
            .iter()
            .any(|t| t.spec.read().parent_id == Some(id))
        {
            return Err(EngineError::InUse("sub-tenants"));
        }
        self.tenants.remove(&id);
        Ok(Outcome::Done)
    }

    fn put_api_key(&self, spec: &ApiKeySpec) -> R<Outcome> {
        if !self.tenants.contains_key(&spec.tenant_id) {
            return Err(EngineError::TenantNotFound);
        }
        if spec.api_key.is_empty() || spec.shared_key.is_empty() {
            return Err(EngineError::Invalid(
                "api_key",
                "api_key and shared_key must not be empty",
            ));
        }
        let key = Arc::new(ApiKey {
            tenant_id: spec.tenant_id,
            api_key: spec.api_key.as_str().into(),
            shared_key: spec.shared_key.as_str().into(),
            role: spec.role,
            revoked: spec.revoked.into(),
        });
        match self.api_keys.entry(spec.api_key.as_str().into()) {
            dashmap::Entry::Occupied(_) => Err(EngineError::Duplicate("api key")),
            dashmap::Entry::Vacant(e) => {
                e.insert(key);
                Ok(Outcome::Done)
            }
        }
    }

    // ---------------------------------------------------------------- products

    fn put_product(&self, id: Id, spec: &ProductSpec) -> R<Outcome> {
        let tenant = self
            .tenant(spec.tenant_id)
            .ok_or(EngineError::TenantNotFound)?;
        if spec.short_code.is_empty() || spec.short_code.len() > 128 {
            return Err(EngineError::Invalid("short_code", "must be 1 to 128 bytes"));
        }
        check_json_depth("metadata", &spec.metadata)?;
        validate_releases(&spec.releases)?;
        validate_bundle(spec)?;
        if let Some(existing) = self.product(id) {
            if existing.tenant_id != spec.tenant_id || *existing.short_code != *spec.short_code {
                return Err(EngineError::Invalid(
                    "short_code",
                    "tenant_id and short_code cannot change",
                ));
            }
            if existing.authorization_method != spec.authorization_method {
                return Err(EngineError::Invalid(
                    "authorization_method",
                    "cannot change",
                ));
            }
            *existing.spec.write() = spec.clone();
            return Ok(Outcome::Done);
        }
        let product = Arc::new(Product {
            id,
            tenant_id: spec.tenant_id,
            short_code: spec.short_code.as_str().into(),
            authorization_method: spec.authorization_method,
            spec: RwLock::new(spec.clone()),
            licenses_by_key: new_map(),
        });
        match tenant
            .products_by_code
            .entry(spec.short_code.as_str().into())
        {
            dashmap::Entry::Occupied(_) => {
                return Err(EngineError::Duplicate("product short_code"))
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(product.clone());
            }
        }
        self.see_id(id);
        self.products.insert(id, product);
        Ok(Outcome::Done)
    }

    fn delete_product(&self, id: Id) -> R<Outcome> {
        let product = self.product(id).ok_or(EngineError::ProductNotFound)?;
        if self.licenses.iter().any(|l| l.product_id == id) {
            return Err(EngineError::InUse("licenses"));
        }
        if let Some(t) = self.tenant(product.tenant_id) {
            t.products_by_code.remove(&*product.short_code);
        }
        self.products.remove(&id);
        Ok(Outcome::Done)
    }

    // ---------------------------------------------------------------- customers, users

    fn put_customer(&self, id: Id, spec: &CustomerSpec) -> R<Outcome> {
        if !self.tenants.contains_key(&spec.tenant_id) {
            return Err(EngineError::TenantNotFound);
        }
        check_json_depth("metadata", &spec.metadata)?;
        if let Some(existing) = self.customer(id) {
            if existing.spec.read().tenant_id != spec.tenant_id {
                return Err(EngineError::Invalid("tenant_id", "cannot change"));
            }
            *existing.spec.write() = spec.clone();
            return Ok(Outcome::Done);
        }
        self.see_id(id);
        self.customers.insert(
            id,
            Arc::new(Customer {
                id,
                spec: RwLock::new(spec.clone()),
            }),
        );
        Ok(Outcome::Done)
    }

    fn delete_customer(&self, id: Id) -> R<Outcome> {
        if !self.customers.contains_key(&id) {
            return Err(EngineError::CustomerNotFound);
        }
        if self
            .licenses
            .iter()
            .any(|l| l.spec.read().customer_id == Some(id))
        {
            return Err(EngineError::InUse("licenses"));
        }
        if self
            .users
            .iter()
            .any(|u| u.spec.read().customer_id == Some(id))
        {
            return Err(EngineError::InUse("users"));
        }
        self.customers.remove(&id);
        Ok(Outcome::Done)
    }

    fn put_user(&self, id: Id, spec: &UserSpec) -> R<Outcome> {
        let tenant = self
            .tenant(spec.tenant_id)
            .ok_or(EngineError::TenantNotFound)?;
        let email = spec.email.trim().to_ascii_lowercase();
        if email.is_empty() || email.len() > 320 {
            return Err(EngineError::Invalid("email", "must be 1 to 320 bytes"));
        }
        if spec.password_hash.is_empty() {
            return Err(EngineError::Invalid("password", "required"));
        }
        if let Some(c) = spec.customer_id {
            if !self.customers.contains_key(&c) {
                return Err(EngineError::CustomerNotFound);
            }
        }
        if let Some(existing) = self.user(id) {
            if existing.tenant_id != spec.tenant_id {
                return Err(EngineError::Invalid("tenant_id", "cannot change"));
            }
            let old = existing.spec.read().clone();
            let old_email = old.email.trim().to_ascii_lowercase();
            if old_email != email {
                match tenant.users_by_email.entry(email.as_str().into()) {
                    dashmap::Entry::Occupied(_) => {
                        return Err(EngineError::Duplicate("user email"))
                    }
                    dashmap::Entry::Vacant(e) => {
                        e.insert(existing.clone());
                    }
                }
                tenant.users_by_email.remove(old_email.as_str());
            }
            if old.password_hash != spec.password_hash {
                existing.password_epoch.fetch_add(1, Ordering::AcqRel);
            }
            *existing.spec.write() = spec.clone();
            return Ok(Outcome::Done);
        }
        let user = Arc::new(LicenseUser {
            id,
            tenant_id: spec.tenant_id,
            spec: RwLock::new(spec.clone()),
            password_epoch: AtomicU64::new(0),
            licenses: RwLock::new(Vec::new()),
        });
        match tenant.users_by_email.entry(email.as_str().into()) {
            dashmap::Entry::Occupied(_) => return Err(EngineError::Duplicate("user email")),
            dashmap::Entry::Vacant(e) => {
                e.insert(user.clone());
            }
        }
        self.see_id(id);
        self.users.insert(id, user);
        Ok(Outcome::Done)
    }

    fn delete_user(&self, id: Id) -> R<Outcome> {
        let user = self.user(id).ok_or(EngineError::UserNotFound)?;
        if !user.licenses.read().is_empty() {
            return Err(EngineError::InUse("licenses"));
        }
        if let Some(t) = self.tenant(user.tenant_id) {
            let email = user.spec.read().email.trim().to_ascii_lowercase();
            t.users_by_email.remove(email.as_str());
        }
        self.users.remove(&id);
        Ok(Outcome::Done)
    }

    /// Active devices of a user across all of its licenses.
    pub fn user_activations(&self, user: &LicenseUser) -> u64 {
        user.licenses
            .read()
            .iter()
            .filter_map(|id| self.license(*id))
            .map(|l| l.activations.used())
            .sum()
    }

    // ---------------------------------------------------------------- licenses, features

    fn new_feature(&self, id: Id, spec: &FeatureSpec, now: Millis) -> R<Arc<Feature>> {
        validate_feature(spec)?;
        Ok(self.feature_with_spec(
            id,
            share_spec(&self.feature_specs, spec),
            model::next_revision(),
            now,
        ))
    }

    /// A feature with a spec already validated and shared.
    fn feature_with_spec(
        &self,
        id: Id,
        spec: Arc<FeatureSpec>,
        revision: u64,
        now: Millis,
    ) -> Arc<Feature> {
        Arc::new(Feature::new(
            id,
            self.feature_codes.share_str(&spec.code),
            spec.clone(),
            revision,
            end_instant(&spec.expiry_date),
            LeasePool::new(spec.floating_users),
            Meter::new(spec.meter_limits(), 0, now),
        ))
    }

    fn put_license(
        &self,
        id: Id,
        spec: &LicenseSpec,
        features: &[(Id, FeatureSpec)],
        now: Millis,
    ) -> R<Outcome> {
        validate_license(spec)?;
        let product = self
            .product(spec.product_id)
            .ok_or(EngineError::ProductNotFound)?;
        let key = spec
            .license_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        match product.authorization_method {
            AuthMethod::LicenseKey if key.is_none() => {
                return Err(EngineError::Invalid(
                    "license_key",
                    "required for a license-key product",
                ))
            }
            AuthMethod::LicenseKey if spec.user_id.is_some() => {
                return Err(EngineError::Invalid(
                    "user_id",
                    "not allowed on a license-key product",
                ))
            }
            AuthMethod::User if spec.user_id.is_none() => {
                return Err(EngineError::Invalid(
                    "user_id",
                    "required for a user product",
                ))
            }
            AuthMethod::User if key.is_some() => {
                return Err(EngineError::Invalid(
                    "license_key",
                    "not allowed on a user product",
                ))
            }
            _ => {}
        }
        if let Some(k) = key {
            if k.len() > 256 {
                return Err(EngineError::Invalid("license_key", "longer than 256 bytes"));
            }
        }
        let user = match spec.user_id {
            Some(u) => Some(
                self.user(u)
                    .filter(|u| u.tenant_id == product.tenant_id)
                    .ok_or(EngineError::UserNotFound)?,
            ),
            None => None,
        };
        if let Some(c) = spec.customer_id {
            if self
                .customer(c)
                .is_none_or(|c| c.spec.read().tenant_id != product.tenant_id)
            {
                return Err(EngineError::CustomerNotFound);
            }
        }
        if let Some(existing) = self.license(id) {
            return self.replace_license(&existing, spec, now);
        }
        if features.len() > FEATURES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("features"));
        }
        let mut fs = Vec::with_capacity(features.len());
        for (fid, fspec) in features {
            if fs.iter().any(|f: &Arc<Feature>| *f.code == *fspec.code) {
                return Err(EngineError::Duplicate("feature code"));
            }
            fs.push(self.new_feature(*fid, fspec, now)?);
        }
        let license = Arc::new(License {
            id,
            tenant_id: product.tenant_id,
            product_id: product.id,
            license_key: key.map(Into::into),
            valid_until: AtomicI64::new(end_instant(&spec.validity_period)),
            starts_at: AtomicI64::new(start_instant(&spec.start_date)),
            activations: SeatPool::new(
                spec.max_activations as u64,
                0,
                spec.allow_unlimited_activations,
            ),
            devices: RwLock::new(Devices::default()),
            transfer_count: AtomicU32::new(0),
            floating: LeasePool::new(spec.floating_users),
            consumption: Meter::new(spec.meter_limits(), 0, now),
            features: RwLock::new(fs),
            spec: RwLock::new(self.share_license_spec(spec)),
        });
        if let Some(k) = key {
            match product.licenses_by_key.entry(k.into()) {
                dashmap::Entry::Occupied(_) => return Err(EngineError::Duplicate("license key")),
                dashmap::Entry::Vacant(e) => {
                    e.insert(license.clone());
                }
            }
        }
        for (fid, _) in features {
            self.see_id(*fid);
        }
        self.see_id(id);
        self.licenses.insert(id, license);
        if let Some(u) = user {
            u.licenses.write().push(id);
        }
        Ok(Outcome::Done)
    }

    fn replace_license(&self, lic: &License, spec: &LicenseSpec, now: Millis) -> R<Outcome> {
        let key = spec
            .license_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        if lic.product_id != spec.product_id || lic.license_key.as_deref() != key {
            return Err(EngineError::Invalid(
                "license_key",
                "product_id and license_key cannot change",
            ));
        }
        let mut cur = lic.spec.write();
        if cur.user_id != spec.user_id {
            return Err(EngineError::Invalid("user_id", "cannot change"));
        }
        lic.valid_until
            .store(end_instant(&spec.validity_period), Ordering::Release);
        lic.starts_at
            .store(start_instant(&spec.start_date), Ordering::Release);
        lic.activations.set_limits(
            spec.max_activations as u64,
            0,
            spec.allow_unlimited_activations,
        );
        lic.floating.set_capacity(spec.floating_users);
        if spec.meter_limits() != cur.meter_limits() {
            lic.consumption.set_limits(spec.meter_limits(), now);
        }
        *cur = self.share_license_spec(spec);
        Ok(Outcome::Done)
    }

    fn delete_license(&self, id: Id) -> R<Outcome> {
        let lic = self.license(id).ok_or(EngineError::LicenseNotFound)?;
        if let (Some(k), Some(p)) = (lic.license_key.as_deref(), self.product(lic.product_id)) {
            p.licenses_by_key.remove(k);
        }
        if let Some(u) = lic.spec.read().user_id.and_then(|u| self.user(u)) {
            u.licenses.write().retain(|l| *l != id);
        }
        self.licenses.remove(&id);
        Ok(Outcome::Done)
    }

    fn put_feature(&self, license_id: Id, id: Id, spec: &FeatureSpec, now: Millis) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        validate_feature(spec)?;
        let mut fs = lic.features.write();
        if fs.iter().any(|f| f.id != id && *f.code == *spec.code) {
            return Err(EngineError::Duplicate("feature code"));
        }
        if let Some(f) = fs.iter().find(|f| f.id == id) {
            if *f.code != *spec.code {
                return Err(EngineError::Invalid("code", "cannot change"));
            }
            let mut cur = f.spec.write();
            f.expires_at
                .store(end_instant(&spec.expiry_date), Ordering::Release);
            f.floating.set_capacity(spec.floating_users);
            if spec.meter_limits() != cur.meter_limits() {
                f.meter.set_limits(spec.meter_limits(), now);
            }
            let consumption = spec.feature_type == FeatureType::Consumption;
            *cur = share_spec(&self.feature_specs, spec);
            // Bumped while the spec is still locked: a reader that sees the new
            // revision then reads the new spec.
            f.set_shape(model::next_revision(), consumption);
            return Ok(Outcome::Done);
        }
        if fs.len() >= FEATURES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("features"));
        }
        self.see_id(id);
        fs.push(self.new_feature(id, spec, now)?);
        Ok(Outcome::Done)
    }

    // ---------------------------------------------------------------- devices

    fn activate(
        &self,
        license_id: Id,
        hw: &str,
        info: &DeviceInfo,
        device_id: Id,
        now: Millis,
    ) -> R<Outcome> {
        if hw.is_empty() || hw.len() > HARDWARE_ID_BYTES_MAX {
            return Err(EngineError::Invalid(
                "hardware_id",
                "must be 1 to 512 bytes",
            ));
        }
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let spec = lic.spec.read();
        self.check_usable(&lic, &spec, now)?;
        if spec.prevent_vm && info.is_vm {
            return Err(EngineError::VmNotAllowed);
        }
        let floating = spec.is_floating || spec.is_floating_cloud;
        let mut devs = lic.devices.write();
        let existing = devs.list.iter().position(|d| d.hardware_id == hw);
        if let Some(i) = existing {
            let d = &mut devs.list[i];
            if d.blacklisted {
                return Err(EngineError::DeviceBlacklisted);
            }
            if d.active {
                // Re-activating an active device takes no new seat.
                if floating {
                    lic.floating
                        .acquire(hw, now, spec.floating_timeout_ms())
                        .map_err(lease_err)?;
                }
                d.info = info.clone();
                d.last_activated = now;
                return Ok(Outcome::Activated {
                    device_id: d.id,
                    new: false,
                    transfer: false,
                });
            }
        } else if devs.list.len() >= DEVICES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("devices"));
        }
        let transfer = !devs.vacated.is_empty() && !devs.vacated.iter().any(|v| v == hw);
        if transfer {
            let done = lic.transfer_count.load(Ordering::Acquire) as i64;
            if spec.max_transfers != -1 && done >= spec.max_transfers {
                return Err(EngineError::TransferLimitReached);
            }
        }
        // A user-based license also counts against its user's activations.
        let user = spec.user_id.and_then(|u| self.user(u));
        if let Some(u) = &user {
            let us = u.spec.read();
            if !us.allow_unlimited_activations
                && self.user_activations(u) >= us.max_activations as u64
            {
                return Err(EngineError::ActivationLimitReached);
            }
        }
        lic.activations
            .try_acquire()
            .map_err(|_| EngineError::ActivationLimitReached)?;
        if floating {
            if let Err(e) = lic.floating.acquire(hw, now, spec.floating_timeout_ms()) {
                lic.activations.release();
                return Err(lease_err(e));
            }
        }
        if transfer {
            devs.vacated.remove(0);
            lic.transfer_count.fetch_add(1, Ordering::AcqRel);
        } else {
            devs.vacated.retain(|v| v != hw);
        }
        let id = match existing {
            Some(i) => {
                let d = &mut devs.list[i];
                d.active = true;
                d.info = info.clone();
                d.last_activated = now;
                d.deactivated_at = None;
                d.id
            }
            None => {
                self.see_id(device_id);
                devs.reserve_one();
                devs.list.push(Device {
                    id: device_id,
                    hardware_id: hw.to_string(),
                    info: info.clone(),
                    active: true,
                    blacklisted: false,
                    first_activated: now,
                    last_activated: now,
                    deactivated_at: None,
                    variables: Vec::new(),
                });
                device_id
            }
        };
        Ok(Outcome::Activated {
            device_id: id,
            new: true,
            transfer,
        })
    }

    fn deactivate(&self, license_id: Id, hw: &str, now: Millis) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        let d = devs
            .list
            .iter_mut()
            .find(|d| d.hardware_id == hw && d.active)
            .ok_or(EngineError::DeviceNotFound)?;
        d.active = false;
        d.deactivated_at = Some(now);
        lic.activations.release();
        lic.floating.release(hw, now);
        for f in lic.features.read().iter() {
            f.floating.release(hw, now);
        }
        if !devs.vacated.iter().any(|v| v == hw) {
            devs.vacated.push(hw.to_string());
        }
        // Only as many vacated seats as there are seats can become transfers.
        let cap = lic.spec.read().max_activations.max(1) as usize;
        if devs.vacated.len() > cap {
            let extra = devs.vacated.len() - cap;
            devs.vacated.drain(..extra);
        }
        Ok(Outcome::Deactivated)
    }

    fn set_blacklisted(
        &self,
        license_id: Id,
        hw: &str,
        blacklisted: bool,
        device_id: Id,
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        match devs.list.iter_mut().find(|d| d.hardware_id == hw) {
            Some(d) => {
                if blacklisted && d.active {
                    d.active = false;
                    d.deactivated_at = Some(now);
                    lic.activations.release();
                    lic.floating.release(hw, now);
                    for f in lic.features.read().iter() {
                        f.floating.release(hw, now);
                    }
                }
                d.blacklisted = blacklisted;
            }
            None if blacklisted => {
                self.see_id(device_id);
                devs.reserve_one();
                devs.list.push(Device {
                    id: device_id,
                    hardware_id: hw.to_string(),
                    info: DeviceInfo::default(),
                    active: false,
                    blacklisted: true,
                    first_activated: now,
                    last_activated: now,
                    deactivated_at: Some(now),
                    variables: Vec::new(),
                });
            }
            None => return Err(EngineError::DeviceNotFound),
        }
        Ok(Outcome::Done)
    }

    fn track_variables(
        &self,
        license_id: Id,
        hw: &str,
        vars: &[(String, String)],
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        let d = devs
            .list
            .iter_mut()
            .find(|d| d.hardware_id == hw && d.active)
            .ok_or(EngineError::DeviceNotFound)?;
        if vars.iter().any(|(k, v)| {
            k.is_empty()
                || k.len() > DEVICE_VARIABLE_BYTES_MAX
                || v.len() > DEVICE_VARIABLE_BYTES_MAX
        }) {
            return Err(EngineError::Invalid(
                "variables",
                "names must be 1 to 4096 bytes and values at most 4096",
            ));
        }
        let new = vars
            .iter()
            .filter(|(k, _)| !d.variables.iter().any(|v| v.variable == *k))
            .count();
        if d.variables.len() + new > DEVICE_VARIABLES_MAX {
            return Err(EngineError::TooMany("device variables"));
        }
        for (k, v) in vars {
            match d.variables.iter_mut().find(|x| x.variable == *k) {
                Some(x) => {
                    x.value = v.clone();
                    x.created_at = now;
                }
                None => d.variables.push(DeviceVariable {
                    variable: k.clone(),
                    value: v.clone(),
                    created_at: now,
                }),
            }
        }
        Ok(Outcome::Done)
    }

    fn borrow(
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
    fn sweep_leases(&self, now: Millis) -> usize {
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
        assert!(Arc::ptr_eq(&fa.spec.read(), &fb.spec.read()));
        let mut changed = (**fa.spec.read()).clone();
        changed.name = "Renamed".into();
        e.apply(&Command::PutFeature {
            license_id: a.id,
            id: fa.id,
            spec: changed,
            now: 0,
        })
        .expect("update");
        assert_eq!(fa.spec.read().name, "Renamed");
        assert_eq!(fb.spec.read().name, "Feature 0");
        assert!(!Arc::ptr_eq(&fa.spec.read(), &fb.spec.read()));
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
