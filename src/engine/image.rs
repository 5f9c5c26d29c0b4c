//! Images: the engine's whole state as plain values, for snapshots.
//! [`Engine::export`] walks an engine that no one is changing (a shadow built
//! from the log, or the live engine after the server stopped) and
//! [`Engine::restore`] builds the same entities back, counters included,
//! without re-checking limits (the state was valid when it was taken).
//!
//! Specs travel as shared `Arc`s: a snapshot writes each distinct spec once
//! and the reader shares it again through `Engine::share_license_spec` and
//! [`Engine::share_feature_spec`].

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::lease::{Lease, LeasePool};
use super::meter::Meter;
use super::model::*;
use super::seat::SeatPool;
use super::share::share_spec;
use super::time::Millis;
use super::{validate_feature, validate_license, Command, Engine};
use super::{EngineError, FEATURES_PER_LICENSE_MAX, R};

/// One entity of the engine's state. Parents come before children in an
/// export (tenants before their sub-tenants, keys, products, customers and
/// users; customers before users; products and users before licenses).
#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    Tenant {
        id: Id,
        spec: TenantSpec,
    },
    ApiKey {
        spec: ApiKeySpec,
    },
    Product {
        id: Id,
        spec: ProductSpec,
    },
    Customer {
        id: Id,
        spec: CustomerSpec,
    },
    User {
        id: Id,
        spec: UserSpec,
    },
    License(LicenseImage),
    /// A tenant's Qlik license with its assignments and records.
    Qlik(Box<super::qlik::QlikImage>),
    /// A tenant's Yext account with its assignments.
    Yext(Box<super::yext::YextImage>),
    /// A tenant's Informatica org with its limits' use.
    Infa(Box<super::infa::InfaImage>),
    /// The native API's reservations and idempotency records (after every
    /// license: pending reservations hold units of their meters).
    Native(Box<super::native::NativeImage>),
    /// Webhook subscriptions and their outbox (see [`super::webhook`]).
    Webhooks(Box<super::webhook::WebhookImage>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LicenseImage {
    pub id: Id,
    pub license_key: Option<String>,
    /// Without its key (see [`License::spec`]).
    pub spec: Arc<LicenseSpec>,
    pub activations_used: u64,
    pub devices: Vec<Device>,
    pub vacated: Vec<String>,
    pub transfer_count: u32,
    pub leases: Vec<Lease>,
    pub consumption: MeterImage,
    pub features: Vec<FeatureImage>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FeatureImage {
    pub id: Id,
    pub spec: Arc<FeatureSpec>,
    pub meter: MeterImage,
    pub leases: Vec<Lease>,
}

/// A meter's counter and next period boundary (`i64::MAX`: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterImage {
    pub used: i64,
    pub next_reset: Millis,
}

fn meter_image(m: &Meter) -> MeterImage {
    let (used, next_reset) = m.state();
    MeterImage { used, next_reset }
}

impl Engine {
    /// The next id [`Engine::next_id`] would hand out.
    pub fn seq(&self) -> Id {
        self.seq.load(Ordering::Acquire)
    }

    /// Raises the id sequence to at least `seq` (snapshot recovery).
    pub fn restore_seq(&self, seq: Id) {
        self.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The shared copy of a license spec, keyless (validated first).
    pub fn share_license_spec_checked(&self, spec: &LicenseSpec) -> R<Arc<LicenseSpec>> {
        validate_license(spec)?;
        Ok(self.share_license_spec(spec))
    }

    /// The shared copy of a feature spec (validated first).
    pub fn share_feature_spec(&self, spec: &FeatureSpec) -> R<Arc<FeatureSpec>> {
        validate_feature(spec)?;
        Ok(share_spec(&self.feature_specs, spec))
    }

    /// Hands every entity to `sink`, parents first. Call it on an engine that
    /// is not being changed: each entity is read under its own locks, not the
    /// whole state at once.
    pub fn export<E>(&self, mut sink: impl FnMut(Image) -> Result<(), E>) -> Result<(), E> {
        // Tenants, parents before children (a parent may have been set later
        // than its child was created, so ids do not order them).
        let mut tenants: Vec<(Id, TenantSpec)> = self
            .tenants
            .iter()
            .map(|t| (t.id, t.spec.read().clone()))
            .collect();
        tenants.sort_by_key(|(id, _)| *id);
        let mut emitted = std::collections::HashSet::new();
        while !tenants.is_empty() {
            let before = tenants.len();
            let mut rest = Vec::new();
            for (id, spec) in tenants {
                if spec.parent_id.is_none_or(|p| emitted.contains(&p)) {
                    emitted.insert(id);
                    sink(Image::Tenant { id, spec })?;
                } else {
                    rest.push((id, spec));
                }
            }
            tenants = rest;
            if tenants.len() == before {
                // Unreachable while put_tenant refuses cycles and unknown
                // parents; emit the rest rather than loop.
                for (id, spec) in tenants.drain(..) {
                    sink(Image::Tenant { id, spec })?;
                }
            }
        }
        let mut keys: Vec<ApiKeySpec> = self.api_keys.iter().map(|k| k.spec()).collect();
        keys.sort_by(|a, b| a.api_key.cmp(&b.api_key));
        for spec in keys {
            sink(Image::ApiKey { spec })?;
        }
        for (id, spec) in sorted(self.products.iter().map(|p| (p.id, p.spec.read().clone()))) {
            sink(Image::Product { id, spec })?;
        }
        for (id, spec) in sorted(self.customers.iter().map(|c| (c.id, c.spec.read().clone()))) {
            sink(Image::Customer { id, spec })?;
        }
        for (id, spec) in sorted(self.users.iter().map(|u| (u.id, u.spec.read().clone()))) {
            sink(Image::User { id, spec })?;
        }
        let mut qlik: Vec<Id> = self.qlik.iter().map(|q| *q.key()).collect();
        qlik.sort_unstable();
        for id in qlik {
            if let Some(q) = self.qlik(id) {
                sink(Image::Qlik(Box::new(q.image())))?;
            }
        }
        let mut yext: Vec<Id> = self.yext.iter().map(|a| *a.key()).collect();
        yext.sort_unstable();
        for id in yext {
            if let Some(a) = self.yext(id) {
                sink(Image::Yext(Box::new(a.image())))?;
            }
        }
        let mut infa: Vec<Id> = self.infa.iter().map(|o| *o.key()).collect();
        infa.sort_unstable();
        for id in infa {
            if let Some(o) = self.infa(id) {
                sink(Image::Infa(Box::new(o.image())))?;
            }
        }
        let mut ids: Vec<Id> = self.licenses.iter().map(|l| *l.key()).collect();
        ids.sort_unstable();
        for id in ids {
            let Some(l) = self.license(id) else { continue };
            sink(Image::License(license_image(&l)))?;
        }
        // Reservations hold units of the licenses' meters: after them.
        if self.has_native_state() {
            sink(Image::Native(Box::new(self.native_image())))?;
        }
        if let Some(img) = self.webhook_image() {
            sink(Image::Webhooks(Box::new(img)))?;
        }
        Ok(())
    }

    /// Every entity's image, parents first (for tests and tools; snapshots
    /// stream them through [`Engine::export`] instead).
    pub fn images(&self) -> Vec<Image> {
        let mut v = Vec::new();
        let _ = self.export(|i| -> Result<(), std::convert::Infallible> {
            v.push(i);
            Ok(())
        });
        v
    }

    /// Builds an entity from its image. Small entities go through their
    /// commands; licenses are built directly with their counters.
    pub fn restore(&self, image: Image, now: Millis) -> R<()> {
        let cmd = match image {
            Image::Tenant { id, spec } => Command::PutTenant { id, spec },
            Image::ApiKey { spec } => Command::PutApiKey { spec },
            Image::Product { id, spec } => Command::PutProduct { id, spec },
            Image::Customer { id, spec } => Command::PutCustomer { id, spec },
            Image::User { id, spec } => Command::PutUser { id, spec },
            Image::License(l) => return self.restore_license(l, now),
            Image::Qlik(img) => {
                self.tenant(img.tenant_id)
                    .ok_or(EngineError::TenantNotFound)?;
                let id = img.tenant_id;
                let q = super::qlik::QlikTenant::from_image(*img)?;
                self.qlik.insert(id, Arc::new(q));
                return Ok(());
            }
            Image::Yext(img) => {
                self.tenant(img.tenant_id)
                    .ok_or(EngineError::TenantNotFound)?;
                let id = img.tenant_id;
                let a = super::yext::YextAccount::from_image(*img)?;
                let account = a.spec.read().account_id.clone();
                self.yext.insert(id, Arc::new(a));
                self.yext_accounts.insert(account.as_str().into(), id);
                return Ok(());
            }
            Image::Native(img) => return self.restore_native(*img),
            Image::Webhooks(img) => return self.restore_webhooks(*img),
            Image::Infa(img) => {
                self.tenant(img.tenant_id)
                    .ok_or(EngineError::TenantNotFound)?;
                let id = img.tenant_id;
                let org = super::infa::InfaOrg::from_image(*img)?;
                self.index_infa(id, &org.spec.read().clone());
                self.index_infa_sessions(&org);
                self.infa.insert(id, Arc::new(org));
                return Ok(());
            }
        };
        self.apply(&cmd).map(|_| ())
    }

    fn restore_license(&self, img: LicenseImage, now: Millis) -> R<()> {
        let spec = img.spec;
        let product = self
            .product(spec.product_id)
            .ok_or(EngineError::ProductNotFound)?;
        if self.licenses.contains_key(&img.id) {
            return Err(EngineError::Duplicate("license id"));
        }
        if img.features.len() > FEATURES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("features"));
        }
        let user = match spec.user_id {
            Some(u) => Some(self.user(u).ok_or(EngineError::UserNotFound)?),
            None => None,
        };
        let mut features = Vec::with_capacity(img.features.len());
        let mut leased = !img.leases.is_empty();
        let mut max_id = img.id;
        let first_revision = super::model::next_revisions(img.features.len() as u64);
        for (i, f) in img.features.into_iter().enumerate() {
            let feature = self.feature_with_spec(f.id, f.spec, first_revision + i as u64, now);
            feature.meter.restore(f.meter.used, f.meter.next_reset);
            leased |= !f.leases.is_empty();
            restore_leases(&feature.floating, f.leases);
            max_id = max_id.max(f.id);
            features.push(feature);
        }
        let activations = SeatPool::new(
            spec.max_activations as u64,
            0,
            spec.allow_unlimited_activations,
        );
        activations.restore_used(img.activations_used);
        let consumption = Meter::new(spec.meter_limits(), 0, now);
        consumption.restore(img.consumption.used, img.consumption.next_reset);
        let floating = LeasePool::new(spec.floating_users);
        restore_leases(&floating, img.leases);
        for d in &img.devices {
            max_id = max_id.max(d.id);
        }
        let key = img.license_key.filter(|k| !k.is_empty());
        let license = Arc::new(License {
            id: img.id,
            tenant_id: product.tenant_id,
            product_id: product.id,
            license_key: key.as_deref().map(Into::into),
            gate: AtomicU32::new(0),
            starts_at: AtomicI64::new(0),
            usable_until: AtomicI64::new(0),
            activations,
            devices: RwLock::new(Devices {
                list: img.devices,
                vacated: img.vacated.into_iter().collect(),
            }),
            transfer_count: AtomicU32::new(img.transfer_count),
            floating,
            consumption,
            features: RwLock::new(features),
            spec: RwLock::new(spec),
        });
        license.publish_usability(&license.spec.read());
        if let Some(k) = key {
            match product.licenses_by_key.entry(k.into()) {
                dashmap::Entry::Occupied(_) => return Err(EngineError::Duplicate("license key")),
                dashmap::Entry::Vacant(e) => {
                    e.insert(license.clone());
                }
            }
        }
        if let Some(u) = user {
            u.licenses.write().push(img.id);
        }
        if leased {
            self.leased.insert(img.id, ());
        }
        // One raise of the shared sequence per license, not one per id: the
        // licenses of a snapshot are restored on several threads at once.
        self.see_id(max_id);
        self.licenses.insert(img.id, license);
        Ok(())
    }

    /// After licenses were restored (possibly on several threads at once):
    /// each user's licenses back in creation order.
    pub fn finish_restore(&self) {
        for u in self.users.iter() {
            u.licenses.write().sort_unstable();
        }
    }

    /// Empties the engine before a whole state is loaded into it (a state
    /// fixture's restore, `Command::RestoreState`): every entity, counter,
    /// reservation, idempotency record and webhook. The id sequence and the
    /// webhook event sequence are kept (the loaded state only raises them):
    /// an id handed out before a restore never names another object after
    /// it (ledger entries, offline tokens and receivers keep old ids). The
    /// caller holds every request and change out meanwhile (the server's
    /// gate and the commit lock).
    pub fn clear(&self) {
        self.tenants.clear();
        self.api_keys.clear();
        self.products.clear();
        self.customers.clear();
        self.users.clear();
        self.licenses.clear();
        self.license_specs.clear();
        self.feature_specs.clear();
        self.feature_codes.clear();
        self.leased.clear();
        self.qlik.clear();
        self.yext.clear();
        self.yext_accounts.clear();
        self.infa.clear();
        self.infa_orgs.clear();
        self.infa_users.clear();
        self.infa_sessions.clear();
        self.reservations.clear();
        self.idempotency.clear();
        self.clear_webhooks();
    }

    /// After a whole state was loaded over a cleared engine: webhook event
    /// ids go on from `event_seq` (the sequence before the restore) at least.
    pub fn finish_state_restore(&self, event_seq: u64) {
        self.keep_event_seq(event_seq);
    }

    /// A digest of the whole state (what a snapshot holds), the same on
    /// every engine that holds the same state whatever order its maps
    /// iterate in: each exported entity is hashed alone (SHA-256 of its
    /// `Debug` form, whose lists are in command order or sorted) and the
    /// hashes are added up. 32 hex digits. Cluster nodes compare theirs at
    /// the same stream sequence (`GET /admin/v1/cluster`).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut sum: u128 = 0;
        let mut entities: u64 = 0;
        let _ = self.export(|image| -> Result<(), ()> {
            let h = Sha256::digest(format!("{image:?}").as_bytes());
            let mut first = [0u8; 16];
            first.copy_from_slice(&h[..16]);
            sum = sum.wrapping_add(u128::from_le_bytes(first));
            entities += 1;
            Ok(())
        });
        sum = sum.wrapping_add(u128::from(entities));
        format!("{sum:032x}")
    }

    /// Every tenant's id, ascending.
    pub fn tenant_ids(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self.tenants.iter().map(|t| *t.key()).collect();
        ids.sort_unstable();
        ids
    }

    /// After recovery: every floating seat restored from the log or a
    /// snapshot holds for at least a full timeout from `now`. Renewals are not
    /// logged, so a seat's stored end may be older than its holder believes;
    /// keeping it a full timeout never grants a seat its holder still uses.
    pub fn extend_restored_leases(&self, now: Millis) {
        let ids: Vec<Id> = self.leased.iter().map(|e| *e.key()).collect();
        for id in ids {
            let Some(l) = self.license(id) else { continue };
            let timeout = l.spec.read().floating_timeout_ms();
            l.floating.extend_all(now, timeout);
            for f in l.features.read().iter() {
                let timeout =
                    f.spec.load().floating_timeout.max(1) as Millis * super::time::MINUTE_MS;
                f.floating.extend_all(now, timeout);
            }
        }
    }
}

fn sorted<T>(it: impl Iterator<Item = (Id, T)>) -> Vec<(Id, T)> {
    let mut v: Vec<(Id, T)> = it.collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

fn restore_leases(pool: &LeasePool, leases: Vec<Lease>) {
    for l in leases {
        pool.restore(l);
    }
}

pub(super) fn license_image(l: &License) -> LicenseImage {
    let devs = l.devices.read();
    LicenseImage {
        id: l.id,
        license_key: l.license_key.as_deref().map(str::to_string),
        spec: l.spec.read().clone(),
        activations_used: l.activations.used(),
        devices: devs.list.clone(),
        vacated: devs.vacated.to_vec(),
        transfer_count: l.transfer_count.load(Ordering::Acquire),
        leases: l.floating.holders_raw(),
        consumption: meter_image(&l.consumption),
        features: l
            .features
            .read()
            .iter()
            .map(|f| FeatureImage {
                id: f.id,
                spec: f.spec.load().clone(),
                meter: meter_image(&f.meter),
                leases: f.floating.holders_raw(),
            })
            .collect(),
    }
}
