//! Licenses and their features.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- licenses, features

    pub(super) fn new_feature(&self, id: Id, spec: &FeatureSpec, now: Millis) -> R<Arc<Feature>> {
        validate_feature(spec)?;
        Ok(self.feature_with_spec(
            id,
            share_spec(&self.feature_specs, spec),
            model::next_revision(),
            now,
        ))
    }

    /// A feature with a spec already validated and shared.
    pub(super) fn feature_with_spec(
        &self,
        id: Id,
        spec: Arc<FeatureSpec>,
        revision: u64,
        now: Millis,
    ) -> Arc<Feature> {
        Arc::new(Feature::new(
            id,
            self.feature_codes.share_str(&spec.code).into(),
            spec.clone(),
            revision,
            end_instant(&spec.expiry_date),
            LeasePool::new(spec.floating_users),
            Meter::new(spec.meter_limits(), 0, now),
        ))
    }

    #[allow(
        clippy::too_many_lines,
        reason = "a license and its features are created together, under the key index's entry"
    )]
    pub(super) fn put_license(
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
            if k.len() > KEY_BYTES_MAX {
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
            gate: AtomicU32::new(0),
            starts_at: AtomicI64::new(0),
            usable_until: AtomicI64::new(0),
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
        license.publish_usability(spec);
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

    pub(super) fn replace_license(
        &self,
        lic: &License,
        spec: &LicenseSpec,
        now: Millis,
    ) -> R<Outcome> {
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
        lic.publish_usability(spec);
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

    pub(super) fn delete_license(&self, id: Id) -> R<Outcome> {
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

    pub(super) fn put_feature(
        &self,
        license_id: Id,
        id: Id,
        spec: &FeatureSpec,
        now: Millis,
    ) -> R<Outcome> {
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
            // Writers of a feature's spec hold the features' write lock (`fs`).
            let cur = f.spec.load_full();
            f.begin_change();
            f.expires_at
                .store(end_instant(&spec.expiry_date), Ordering::Release);
            f.floating.set_capacity(spec.floating_users);
            if spec.meter_limits() != cur.meter_limits() {
                f.meter.set_limits(spec.meter_limits(), now);
            }
            let new = share_spec(&self.feature_specs, spec);
            f.spec.store(Arc::clone(&new));
            // Ends the change: a reader that sees the new revision then
            // loads the new spec.
            f.set_shape(model::next_revision(), &new);
            return Ok(Outcome::Done);
        }
        if fs.len() >= FEATURES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("features"));
        }
        self.see_id(id);
        fs.push(self.new_feature(id, spec, now)?);
        Ok(Outcome::Done)
    }

    pub(super) fn delete_feature(&self, license_id: Id, id: Id) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut fs = lic.features.write();
        let before = fs.len();
        fs.retain(|f| f.id != id);
        if fs.len() == before {
            return Err(EngineError::FeatureNotFound);
        }
        Ok(Outcome::Done)
    }

    /// An admin's correction of a consumption total.
    pub(super) fn set_consumption(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        total: i64,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        match feature_id {
            None => lic.consumption.set_used(total),
            Some(fid) => self.feature_by_id(&lic, fid)?.meter.set_used(total),
        }
        Ok(Outcome::Done)
    }
}
