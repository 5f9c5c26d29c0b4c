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

    pub(super) fn delete_qlik(&self, tenant_id: Id) -> R<Outcome> {
        self.qlik
            .remove(&tenant_id)
            .ok_or(EngineError::Qlik(QlikRefusal::LicenseNotFound))?;
        Ok(Outcome::Done)
    }

    pub(super) fn qlik_settings(
        &self,
        tenant_id: Id,
        auto_assign_professional: Option<bool>,
        auto_assign_analyzer: Option<bool>,
    ) -> R<Outcome> {
        self.qlik_of(tenant_id)?
            .set_settings(auto_assign_professional, auto_assign_analyzer);
        Ok(Outcome::Done)
    }

    pub(super) fn qlik_assign(
        &self,
        tenant_id: Id,
        subject: &str,
        kind: qlik::AllotmentKind,
        now: Millis,
    ) -> R<Outcome> {
        let excess = self.qlik_of(tenant_id)?.assign(subject, kind, now)?;
        Ok(Outcome::Assigned {
            excess,
            created: true,
        })
    }

    pub(super) fn qlik_unassign(
        &self,
        tenant_id: Id,
        subject: &str,
        kind: qlik::AllotmentKind,
    ) -> R<Outcome> {
        self.qlik_of(tenant_id)?.unassign(subject, kind)?;
        Ok(Outcome::Done)
    }

    pub(super) fn qlik_update(
        &self,
        tenant_id: Id,
        source_subject: &str,
        source_kind: Option<qlik::AllotmentKind>,
        subject: &str,
        kind: Option<qlik::AllotmentKind>,
        now: Millis,
    ) -> R<Outcome> {
        let (excess, created) =
            self.qlik_of(tenant_id)?
                .update(source_subject, source_kind, subject, kind, now)?;
        Ok(Outcome::Assigned { excess, created })
    }

    pub(super) fn qlik_consume(
        &self,
        tenant_id: Id,
        record: &qlik::ConsumptionRecord,
        now: Millis,
    ) -> R<Outcome> {
        let q = self.qlik_of(tenant_id)?;
        self.see_id(record.id);
        let (total, excess) = q.consume(record, now)?;
        Ok(Outcome::Consumed { total, excess })
    }

    pub(super) fn qlik_access(&self, tenant_id: Id, subject: &str, now: Millis) -> R<Outcome> {
        Ok(Outcome::Access(
            self.qlik_of(tenant_id)?.access(subject, now)?,
        ))
    }

    pub(super) fn delete_yext(&self, tenant_id: Id) -> R<Outcome> {
        let (_, a) = self
            .yext
            .remove(&tenant_id)
            .ok_or(EngineError::Yext(YextRefusal::AccountNotFound))?;
        let account = a.spec.read().account_id.clone();
        self.yext_accounts.remove(account.as_str());
        Ok(Outcome::Done)
    }

    pub(super) fn yext_assign(
        &self,
        tenant_id: Id,
        pack: &str,
        entity: &str,
        now: Millis,
    ) -> R<Outcome> {
        let new = self.yext_of(tenant_id)?.assign(pack, entity, now)?;
        Ok(Outcome::Assigned {
            excess: false,
            created: new,
        })
    }

    pub(super) fn yext_unassign(
        &self,
        tenant_id: Id,
        pack: &str,
        entity: &str,
        now: Millis,
    ) -> R<Outcome> {
        self.yext_of(tenant_id)?.unassign(pack, entity, now)?;
        Ok(Outcome::Done)
    }

    /// Schedules (a `YYYY-MM-DD` day) or cancels (None) an assignment's removal.
    pub(super) fn yext_schedule(
        &self,
        tenant_id: Id,
        pack: &str,
        entity: &str,
        expiration: Option<&str>,
        now: Millis,
    ) -> R<Outcome> {
        let exp = match expiration {
            None => None,
            Some(d) => Some((d.to_string(), yext_day(d)?)),
        };
        self.yext_of(tenant_id)?.schedule(pack, entity, exp, now)?;
        Ok(Outcome::Done)
    }

    pub(super) fn delete_infa(&self, tenant_id: Id) -> R<Outcome> {
        let (_, org) = self
            .infa
            .remove(&tenant_id)
            .ok_or(EngineError::Infa(InfaRefusal::OrgNotFound))?;
        self.unindex_infa(&org.spec.read());
        for key in org.session_keys() {
            self.infa_sessions.remove(key.as_str());
        }
        Ok(Outcome::Done)
    }

    pub(super) fn infa_login(
        &self,
        tenant_id: Id,
        key: &str,
        (username, checked): (&str, &str),
        now: Millis,
    ) -> R<Outcome> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::Invalid("session", "not a session key"));
        }
        let org = self.infa_of(tenant_id)?;
        for gone in org.open_session(key, username, checked, now)? {
            self.infa_sessions.remove(gone.as_str());
        }
        self.infa_sessions.insert(key.into(), tenant_id);
        Ok(Outcome::Done)
    }

    /// The org and session under `key` (the hash of a session id), if the
    /// session lets a request in at `now`.
    pub fn infa_session(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<(Arc<infa::InfaOrg>, infa::InfaSession), infa::SessionRefusal> {
        let tenant = self
            .infa_sessions
            .get(key)
            .map(|t| *t)
            .ok_or(infa::SessionRefusal::Unknown)?;
        let org = self.infa(tenant).ok_or(infa::SessionRefusal::Unknown)?;
        let s = org.session(key, now)?;
        Ok((org, s))
    }

    /// The tenant whose org holds the session under `key`.
    pub fn infa_session_tenant(&self, key: &str) -> Option<Id> {
        self.infa_sessions.get(key).map(|t| *t)
    }

    pub(super) fn index_infa_sessions(&self, org: &infa::InfaOrg) {
        for key in org.session_keys() {
            self.infa_sessions.insert(key.into(), org.tenant_id);
        }
    }

    pub(super) fn infa_set_licenses(
        &self,
        tenant_id: Id,
        licenses: &infa::InfaLicenses,
        expected_version: Option<u64>,
    ) -> R<Outcome> {
        self.infa_of(tenant_id)?
            .set_licenses(licenses, expected_version)?;
        Ok(Outcome::Done)
    }

    pub(super) fn infa_consume(&self, tenant_id: Id, limit: &str, amount: i64) -> R<Outcome> {
        let total = self.infa_of(tenant_id)?.consume(limit, amount)?;
        Ok(Outcome::Consumed {
            total,
            excess: false,
        })
    }
}
