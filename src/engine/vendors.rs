//! The vendor registries: each tenant's Qlik license, Yext account and
//! Informatica org, and their indexes.

use super::*;

impl Engine {
    pub(super) fn put_qlik(&self, tenant_id: Id, spec: &qlik::QlikSpec, now: Millis) -> R<Outcome> {
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

    pub(super) fn put_yext(&self, tenant_id: Id, spec: &yext::YextSpec) -> R<Outcome> {
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

    pub(super) fn put_infa(
        &self,
        tenant_id: Id,
        spec: &infa::InfaSpec,
        first_version: u64,
    ) -> R<Outcome> {
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

    pub(super) fn index_infa(&self, tenant_id: Id, spec: &infa::InfaSpec) {
        self.infa_orgs
            .insert(spec.org_id.as_str().into(), tenant_id);
        for u in &spec.users {
            self.infa_users
                .insert(u.username.as_str().into(), tenant_id);
        }
    }

    pub(super) fn unindex_infa(&self, spec: &infa::InfaSpec) {
        self.infa_orgs.remove(spec.org_id.as_str());
        for u in &spec.users {
            self.infa_users.remove(u.username.as_str());
        }
    }

    pub(super) fn infa_of(&self, tenant_id: Id) -> R<Arc<infa::InfaOrg>> {
        self.infa(tenant_id)
            .ok_or(EngineError::Infa(InfaRefusal::OrgNotFound))
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

    pub(super) fn yext_of(&self, tenant_id: Id) -> R<Arc<yext::YextAccount>> {
        self.yext(tenant_id)
            .ok_or(EngineError::Yext(YextRefusal::AccountNotFound))
    }

    /// A tenant's Yext account.
    pub fn yext(&self, tenant_id: Id) -> Option<Arc<yext::YextAccount>> {
        self.yext.get(&tenant_id).map(|a| a.clone())
    }

    pub(super) fn qlik_of(&self, tenant_id: Id) -> R<Arc<qlik::QlikTenant>> {
        self.qlik(tenant_id)
            .ok_or(EngineError::Qlik(QlikRefusal::LicenseNotFound))
    }

    /// A tenant's Qlik license state.
    pub fn qlik(&self, tenant_id: Id) -> Option<Arc<qlik::QlikTenant>> {
        self.qlik.get(&tenant_id).map(|q| q.clone())
    }
}
