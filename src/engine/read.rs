//! Reads and the hot path's checks: lookups by id and key, pages for the
//! admin API, and the checks a request makes before it changes anything.

use super::*;

impl Engine {
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
        self.with_product_by_code(tenant_id, code, Arc::clone)
    }

    /// `f` on the product, read in place: no count is taken on the product
    /// (the hot path looks a license up in it and keeps only that). `f` runs
    /// under the tenant and product tables' shard read locks: it must not
    /// write to the engine.
    pub fn with_product_by_code<T>(
        &self,
        tenant_id: Id,
        code: &str,
        f: impl FnOnce(&Arc<Product>) -> T,
    ) -> Option<T> {
        let tenant = self.tenants.get(&tenant_id)?;
        let product = tenant.products_by_code.get(code)?;
        Some(f(&product))
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
    /// What a walk over every license counts (the metrics' gauges and the
    /// dashboard's totals): a read of atomics and short locks, no change.
    pub fn census(&self, now: Millis) -> Census {
        let mut c = Census::default();
        let near = |m: &super::meter::Meter| {
            let l = m.limits();
            !l.unlimited && l.max > 0 && m.used(now).saturating_mul(100) >= l.max.saturating_mul(80)
        };
        for l in self.licenses.iter() {
            c.devices += l.activations.used();
            c.floating_held += u64::from(l.floating.in_use_hint());
            c.meters_near_cap += u64::from(near(&l.consumption));
            for f in l.features.read().iter() {
                c.features += 1;
                c.floating_held += u64::from(f.floating.in_use_hint());
                c.meters_near_cap += u64::from(near(&f.meter));
            }
        }
        c.reservations_open = self
            .reservations
            .open
            .iter()
            .map(|e| u64::from(*e.value()))
            .sum();
        let (webhooks, pending) = self.webhook_counts();
        c.webhooks = webhooks;
        c.webhook_pending = pending;
        c
    }

    /// The first instant after `after` at which a sweep would change
    /// something: a floating seat's expiry, a reservation's, a Yext
    /// removal's (a test clock stops at each on its way forward, so that
    /// what expires meanwhile expires at its own time, in order).
    pub fn next_due(&self, after: Millis) -> Option<Millis> {
        let mut best: Option<Millis> = None;
        let mut see = |t: Millis| {
            if t > after {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for id in self.leased.iter() {
            let Some(l) = self.license(*id.key()) else {
                continue;
            };
            for h in l.floating.holders_raw() {
                see(h.expires_at);
            }
            for f in l.features.read().iter() {
                for h in f.floating.holders_raw() {
                    see(h.expires_at);
                }
            }
        }
        if let Some((t, _)) = self
            .reservations
            .by_expiry
            .lock()
            .range((after.saturating_add(1), 0)..)
            .next()
        {
            see(*t);
        }
        for a in self.yext.iter() {
            if let Some(t) = a.next_due(after) {
                see(t);
            }
        }
        best
    }

    /// A tenant's license by key (the first of its products that has it).
    pub fn license_by_key(&self, tenant: Id, key: &str) -> Option<Arc<License>> {
        self.tenant(tenant)?
            .products_by_code
            .iter()
            .find_map(|p| p.licenses_by_key.get(key).map(|l| l.clone()))
    }

    /// What a search of the console finds for `text`, at most `max`:
    /// licenses by key (exact, any tenant) or id, tenants by id or name
    /// (a part, any case), Qlik subjects and Yext entities (exact).
    pub fn search(&self, text: &str, max: usize) -> Vec<Hit> {
        let mut out = Vec::new();
        let id: Option<Id> = text.parse().ok();
        let lower = text.to_lowercase();
        for t in self.tenants.iter() {
            let name = t.spec.read().name.clone();
            if id == Some(t.id) || name.to_lowercase().contains(&lower) {
                out.push(Hit::new("tenant", t.id, t.id, name));
            }
            for p in t.products_by_code.iter() {
                if let Some(l) = p.licenses_by_key.get(text) {
                    out.push(Hit::new("license", l.id, l.tenant_id, text.to_string()));
                }
            }
        }
        if let Some(l) = id.and_then(|i| self.license(i)) {
            let label = l.license_key.as_deref().unwrap_or("").to_string();
            out.push(Hit::new("license", l.id, l.tenant_id, label));
        }
        for q in self.qlik.iter() {
            if q.has_subject(text) {
                out.push(Hit::new(
                    "qlik_subject",
                    *q.key(),
                    *q.key(),
                    text.to_string(),
                ));
            }
        }
        for a in self.yext.iter() {
            if a.has_entity(text) {
                out.push(Hit::new(
                    "yext_entity",
                    *a.key(),
                    *a.key(),
                    text.to_string(),
                ));
            }
        }
        out.truncate(max);
        out
    }

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
    pub(super) fn page<T>(
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

    /// Every license's id, in no order (what a background pass walks; the
    /// map's shards are read-locked one at a time, briefly).
    pub fn license_ids(&self) -> Vec<Id> {
        self.licenses.iter().map(|e| *e.key()).collect()
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

    /// The license may be used at `now`: enabled, active, started and not
    /// past its validity and grace. Reads the license's mirror of its spec
    /// (no lock): this runs on every check.
    pub fn check_usable(&self, license: &License, now: Millis) -> R<()> {
        self.check_usability(&license.usability(), now)
    }

    /// [`Engine::check_usable`] on a usability already read (an answer that
    /// shows the fields too reads them once).
    pub fn check_usability(&self, u: &Usability, now: Millis) -> R<()> {
        if !u.enabled {
            return Err(EngineError::LicenseNotEnabled);
        }
        if !u.active {
            return Err(EngineError::LicenseNotActive);
        }
        if now < u.starts_at {
            return Err(EngineError::LicenseNotStarted);
        }
        if now >= u.usable_until {
            return Err(EngineError::LicenseExpired);
        }
        Ok(())
    }

    /// End of validity plus the grace period, if any.
    pub fn usable_until(&self, license: &License) -> Millis {
        license.usability().usable_until
    }

    /// Past the end of validity (grace aside). `spec` is the license's, read
    /// by the caller: a second read of its lock on a thread that holds it
    /// would wait behind a queued writer for ever.
    pub fn is_expired(&self, license: &License, spec: &LicenseSpec, now: Millis) -> bool {
        now >= license.valid_until(spec)
    }

    /// The device is activated on the license and not blacklisted.
    pub fn check_device(&self, license: &License, hardware_id: &str) -> R<()> {
        let devices = license.devices.read();
        match devices.list.iter().find(|d| *d.hardware_id == *hardware_id) {
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
            .find(|d| *d.hardware_id == *hardware_id)
            .cloned()
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
}
