//! Tenancy: tenants, API keys, products, customers and license users.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- tenants, keys

    pub(super) fn put_tenant(&self, id: Id, spec: &TenantSpec) -> R<Outcome> {
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

    pub(super) fn delete_tenant(&self, id: Id) -> R<Outcome> {
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

    pub(super) fn put_api_key(&self, spec: &ApiKeySpec) -> R<Outcome> {
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
            key_id: ApiKey::id_of(&spec.api_key),
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

    pub(super) fn put_product(&self, id: Id, spec: &ProductSpec) -> R<Outcome> {
        let tenant = self
            .tenant(spec.tenant_id)
            .ok_or(EngineError::TenantNotFound)?;
        if spec.short_code.is_empty() || spec.short_code.len() > SHORT_CODE_BYTES_MAX {
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

    pub(super) fn delete_product(&self, id: Id) -> R<Outcome> {
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

    pub(super) fn put_customer(&self, id: Id, spec: &CustomerSpec) -> R<Outcome> {
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

    pub(super) fn delete_customer(&self, id: Id) -> R<Outcome> {
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

    pub(super) fn put_user(&self, id: Id, spec: &UserSpec) -> R<Outcome> {
        let tenant = self
            .tenant(spec.tenant_id)
            .ok_or(EngineError::TenantNotFound)?;
        let email = spec.email.trim().to_ascii_lowercase();
        if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
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

    pub(super) fn delete_user(&self, id: Id) -> R<Outcome> {
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

    pub(super) fn revoke_api_key(&self, api_key: &str) -> R<Outcome> {
        let key = self.api_key(api_key).ok_or(EngineError::ApiKeyNotFound)?;
        key.revoked.store(true, Ordering::Release);
        Ok(Outcome::Done)
    }

    pub(super) fn delete_api_key(&self, api_key: &str) -> R<Outcome> {
        self.api_keys
            .remove(api_key)
            .ok_or(EngineError::ApiKeyNotFound)?;
        Ok(Outcome::Done)
    }
}
