//! One load's state ([`Loader`]) and what it does with each tenant and
//! license as the document streams past.

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::credentials::Passwords;
use crate::engine::model::*;
use crate::engine::time::Millis;
use crate::engine::{Command, Engine};

use super::source::Source;
use super::{apply, err, take_str, typed, CatalogDevice, CatalogError, Loaded};

/// A license's parts: its features and devices typed, the rest of its
/// fields (its spec, with a product code, user and customer to resolve).
#[derive(Default)]
pub(super) struct LicenseParts {
    pub(super) rest: Map<String, Value>,
    pub(super) features: Vec<FeatureSpec>,
    pub(super) devices: Vec<CatalogDevice>,
}

/// State of one load: what it created and the names it can refer to.
pub(super) struct Loader<'a> {
    pub(super) engine: &'a Engine,
    /// The document's bytes, for the licenses read as slices.
    pub(super) source: &'a RefCell<Source<'a>>,
    pub(super) now: Millis,
    pub(super) n: Loaded,
    /// Tenant names loaded so far (a tenant's `parent` names an earlier one).
    pub(super) tenants: Vec<(String, Id)>,
    /// The error that stopped the load, with its path; the parser only
    /// carries a message, so the visitors leave the full error here.
    pub(super) failed: Option<CatalogError>,
}

/// A tenant's fields other than its licenses, gathered until the licenses
/// arrive (or the tenant ends).
#[derive(Default)]
pub(super) struct TenantParts {
    pub(super) name: Option<String>,
    pub(super) parent: Option<String>,
    pub(super) api_keys: Vec<Map<String, Value>>,
    /// Vendor sections (`qlik`, `yext`, `informatica`) in file order.
    pub(super) vendors: Vec<(String, Map<String, Value>)>,
    pub(super) products: Vec<Map<String, Value>>,
    pub(super) customers: Vec<Map<String, Value>>,
    pub(super) users: Vec<Map<String, Value>>,
}

/// A tenant once created: what its licenses may refer to by natural key.
pub(super) struct Tenant {
    pub(super) id: Id,
    pub(super) products: Vec<(String, Id)>,
    pub(super) customers: Vec<(String, Id)>,
    pub(super) users: Vec<(String, Id)>,
}

impl Loader<'_> {
    /// Keeps `e` as the load's error and gives the parser one to stop with.
    pub(super) fn fail<E: serde::de::Error>(&mut self, e: CatalogError) -> E {
        let msg = e.to_string();
        self.failed = Some(e);
        E::custom(msg)
    }

    pub(super) fn tenant(&mut self, tp: &str, t: TenantParts) -> Result<Tenant, CatalogError> {
        let engine = self.engine;
        let name = t
            .name
            .ok_or_else(|| err(format!("{tp}.name"), "missing field `name`"))?;
        let parent_id = match &t.parent {
            None => None,
            Some(parent) => Some(
                self.tenants
                    .iter()
                    .find(|(n, _)| n == parent)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| err(format!("{tp}.parent"), "no earlier tenant by that name"))?,
            ),
        };
        let tenant_id = engine.next_id();
        apply(
            engine,
            tp,
            Command::PutTenant {
                id: tenant_id,
                spec: TenantSpec {
                    name: name.clone(),
                    parent_id,
                },
            },
        )?;
        self.tenants.push((name, tenant_id));
        self.n.tenants += 1;

        self.api_keys(tp, tenant_id, t.api_keys)?;
        for (section, m) in t.vendors {
            self.vendor(tp, tenant_id, &section, m)?;
        }
        let mut products: Vec<(String, Id)> = Vec::new();
        for (i, mut m) in t.products.into_iter().enumerate() {
            let p = format!("{tp}.products[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            let spec: ProductSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            products.push((spec.short_code.clone(), id));
            apply(engine, &p, Command::PutProduct { id, spec })?;
            self.n.products += 1;
        }
        let mut tenant = Tenant {
            id: tenant_id,
            products,
            customers: Vec::new(),
            users: Vec::new(),
        };
        for (i, mut m) in t.customers.into_iter().enumerate() {
            let p = format!("{tp}.customers[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            let spec: CustomerSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            tenant.customers.push((spec.email.to_ascii_lowercase(), id));
            apply(engine, &p, Command::PutCustomer { id, spec })?;
            self.n.customers += 1;
        }
        for (i, mut m) in t.users.into_iter().enumerate() {
            let p = format!("{tp}.users[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            tenant.customer_ref(&mut m, &p)?;
            match take_str(&mut m, "password", &p)? {
                Some(pw) => {
                    let hash = Passwords::hash(&pw).map_err(|e| err(format!("{p}.password"), e))?;
                    m.insert("password_hash".into(), hash.into());
                }
                None if m
                    .get("password_hash")
                    .and_then(Value::as_str)
                    .is_some_and(Passwords::is_valid_hash) => {}
                None => {
                    return Err(err(
                        format!("{p}.password"),
                        "password (or an argon2 password_hash) is required",
                    ))
                }
            }
            let spec: UserSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            tenant.users.push((spec.email.to_ascii_lowercase(), id));
            apply(engine, &p, Command::PutUser { id, spec })?;
            self.n.users += 1;
        }
        Ok(tenant)
    }

    pub(super) fn api_keys(
        &mut self,
        tp: &str,
        tenant_id: Id,
        keys: Vec<Map<String, Value>>,
    ) -> Result<(), CatalogError> {
        for (i, mut k) in keys.into_iter().enumerate() {
            let p = format!("{tp}.api_keys[{i}]");
            k.insert("tenant_id".into(), tenant_id.into());
            apply(
                self.engine,
                &p,
                Command::PutApiKey {
                    spec: typed(&p, Value::Object(k))?,
                },
            )?;
            self.n.api_keys += 1;
        }
        Ok(())
    }

    /// A tenant's webhook subscriptions: the fields `POST /v1/webhooks`
    /// takes (`license` by key, `feature` by code), `secret` required (a
    /// catalog's receivers must know it).
    pub(super) fn webhooks(
        &mut self,
        tp: &str,
        tenant_id: Id,
        list: Vec<Map<String, Value>>,
    ) -> Result<(), CatalogError> {
        for (i, mut m) in list.into_iter().enumerate() {
            let p = format!("{tp}.webhooks[{i}]");
            let secret = take_str(&mut m, "secret", &p)?
                .ok_or_else(|| err(format!("{p}.secret"), "is required (whsec_ and base64)"))?;
            let license = match take_str(&mut m, "license", &p)? {
                Some(key) => {
                    Some(self.engine.license_by_key(tenant_id, &key).ok_or_else(|| {
                        err(format!("{p}.license"), "no such license in this tenant")
                    })?)
                }
                None => None,
            };
            if let Some(code) = take_str(&mut m, "feature", &p)? {
                let l = license
                    .as_ref()
                    .ok_or_else(|| err(format!("{p}.feature"), "needs a license"))?;
                let f = l
                    .features
                    .read()
                    .iter()
                    .find(|f| *f.code == *code)
                    .map(|f| f.id)
                    .ok_or_else(|| err(format!("{p}.feature"), "no such feature on the license"))?;
                m.insert("feature_id".into(), f.into());
            }
            if let Some(l) = &license {
                m.insert("license_id".into(), l.id.into());
            }
            let spec = typed(&p, Value::Object(m))?;
            let id = self.engine.next_id();
            apply(
                self.engine,
                &p,
                Command::PutWebhook {
                    id,
                    tenant_id,
                    spec,
                    secret: Some(secret),
                    now: self.now,
                },
            )?;
        }
        Ok(())
    }

    /// A tenant's Qlik license: the license fields (as `PUT
    /// /admin/v1/tenants/{id}/qlik` takes them) plus optional `settings`
    /// (`autoAssignProfessional`, `autoAssignAnalyzer`) and `assignments`
    /// (`[{"subject", "type"}]`, assigned in order).
    /// A tenant's vendor section, by its name.
    pub(super) fn vendor(
        &mut self,
        tp: &str,
        tenant_id: Id,
        section: &str,
        m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        match section {
            "qlik" => self.qlik(tp, tenant_id, m),
            "yext" => self.yext(tp, tenant_id, m),
            _ => self.infa(tp, tenant_id, m),
        }
    }

    pub(super) fn qlik(
        &mut self,
        tp: &str,
        tenant_id: Id,
        mut m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        let p = format!("{tp}.qlik");
        let settings = m.remove("settings");
        let assignments = m.remove("assignments");
        let spec = typed(&p, Value::Object(m))?;
        apply(
            self.engine,
            &p,
            Command::PutQlik {
                tenant_id,
                spec,
                now: self.now,
            },
        )?;
        if let Some(v) = settings {
            let sp = format!("{p}.settings");
            let s: crate::engine::qlik::QlikSettingsInput = typed(&sp, v)?;
            apply(
                self.engine,
                &sp,
                Command::QlikSettings {
                    tenant_id,
                    auto_assign_professional: s.auto_assign_professional,
                    auto_assign_analyzer: s.auto_assign_analyzer,
                },
            )?;
        }
        if let Some(v) = assignments {
            let ap = format!("{p}.assignments");
            let list: Vec<crate::engine::qlik::AssignmentInput> = typed(&ap, v)?;
            for (i, a) in list.into_iter().enumerate() {
                apply(
                    self.engine,
                    &format!("{ap}[{i}]"),
                    Command::QlikAssign {
                        tenant_id,
                        subject: Cow::Owned(a.subject),
                        kind: a.kind,
                        now: self.now,
                    },
                )?;
            }
        }
        self.n.qlik += 1;
        Ok(())
    }

    /// A tenant's Yext account: the admin API's body (`accountId`, `packs`)
    /// plus optional `assignments` (`[{"pack", "entity", "expirationDate"?}]`).
    pub(super) fn yext(
        &mut self,
        tp: &str,
        tenant_id: Id,
        mut m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        let p = format!("{tp}.yext");
        let assignments = m.remove("assignments");
        let spec = typed(&p, Value::Object(m))?;
        apply(self.engine, &p, Command::PutYext { tenant_id, spec })?;
        if let Some(v) = assignments {
            let ap = format!("{p}.assignments");
            let list: Vec<crate::engine::yext::YextAssignmentInput> = typed(&ap, v)?;
            for (i, a) in list.into_iter().enumerate() {
                let at = format!("{ap}[{i}]");
                apply(
                    self.engine,
                    &at,
                    Command::YextAssign {
                        tenant_id,
                        pack: Cow::Borrowed(&a.pack),
                        entity: Cow::Borrowed(&a.entity),
                        now: self.now,
                    },
                )?;
                if a.expiration_date.is_some() {
                    apply(
                        self.engine,
                        &at,
                        Command::YextSchedule {
                            tenant_id,
                            pack: Cow::Borrowed(&a.pack),
                            entity: Cow::Borrowed(&a.entity),
                            expiration: a.expiration_date.clone(),
                            now: self.now,
                        },
                    )?;
                }
            }
        }
        self.n.yext += 1;
        Ok(())
    }

    /// A tenant's Informatica org, as the admin API takes it (users'
    /// passwords are hashed here).
    pub(super) fn infa(
        &mut self,
        tp: &str,
        tenant_id: Id,
        mut m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        let p = format!("{tp}.informatica");
        crate::credentials::hash_passwords(&mut m, &format!("{p}."))
            .map_err(|(path, e)| err(path, e))?;
        let spec = typed(&p, Value::Object(m))?;
        let first_version = self.engine.next_id();
        apply(
            self.engine,
            &p,
            Command::PutInfa {
                tenant_id,
                spec,
                first_version,
            },
        )?;
        self.n.informatica += 1;
        Ok(())
    }

    /// A license read whole as a JSON object (one that came before its
    /// tenant's name and products).
    pub(super) fn license(
        &mut self,
        tenant: &Tenant,
        p: &(impl std::fmt::Display + ?Sized),
        mut m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
        let features = match m.remove("features") {
            Some(f) => typed(&format_args!("{p}.features"), f)?,
            None => Vec::new(),
        };
        let devices = match m.remove("devices") {
            Some(d) => typed(&format_args!("{p}.devices"), d)?,
            None => Vec::new(),
        };
        self.license_parts(
            tenant,
            p,
            LicenseParts {
                rest: m,
                features,
                devices,
            },
        )
    }

    pub(super) fn license_parts(
        &mut self,
        tenant: &Tenant,
        p: &(impl std::fmt::Display + ?Sized),
        parts: LicenseParts,
    ) -> Result<(), CatalogError> {
        let LicenseParts {
            rest: mut m,
            features,
            devices,
        } = parts;
        let engine = self.engine;
        let now = self.now;
        let code = take_str(&mut m, "product", p)?
            .ok_or_else(|| err(format!("{p}.product"), "product short code required"))?;
        let product_id = tenant
            .products
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, id)| *id)
            .ok_or_else(|| err(format!("{p}.product"), "no such product in this tenant"))?;
        m.insert("product_id".into(), product_id.into());
        if let Some(email) = take_str(&mut m, "user", p)? {
            let id = tenant
                .users
                .iter()
                .find(|(e, _)| e.eq_ignore_ascii_case(&email))
                .map(|(_, id)| *id)
                .ok_or_else(|| {
                    err(
                        format!("{p}.user"),
                        "no user with that email in this tenant",
                    )
                })?;
            m.insert("user_id".into(), id.into());
        }
        tenant.customer_ref(&mut m, p)?;
        let spec: LicenseSpec = typed(p, Value::Object(m))?;
        let id = engine.next_id();
        self.n.features += features.len();
        let features = features
            .into_iter()
            .map(|f| (engine.next_id(), f))
            .collect();
        apply(
            engine,
            p,
            Command::PutLicense {
                id,
                spec,
                features,
                now,
            },
        )?;
        for (di, d) in devices.into_iter().enumerate() {
            let cmd = Command::Activate {
                license_id: id,
                hardware_id: Cow::Owned(d.hardware_id),
                info: d.info,
                device_id: engine.next_id(),
                now,
            };
            apply(engine, &format_args!("{p}.devices[{di}]"), cmd)?;
            self.n.devices += 1;
        }
        self.n.licenses += 1;
        Ok(())
    }
}

impl Tenant {
    /// Replaces a `customer` email in `m` by the customer's `customer_id`.
    pub(super) fn customer_ref(
        &self,
        m: &mut Map<String, Value>,
        p: &(impl std::fmt::Display + ?Sized),
    ) -> Result<(), CatalogError> {
        if let Some(email) = take_str(m, "customer", p)? {
            let id = self
                .customers
                .iter()
                .find(|(e, _)| e.eq_ignore_ascii_case(&email))
                .map(|(_, id)| *id)
                .ok_or_else(|| {
                    err(
                        format!("{p}.customer"),
                        "no customer with that email in this tenant",
                    )
                })?;
            m.insert("customer_id".into(), id.into());
        }
        Ok(())
    }
}
