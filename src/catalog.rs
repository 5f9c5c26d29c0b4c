//! Catalog files: JSON documents that provision tenants, keys, products,
//! customers, users, licenses (with features and activated devices) at start.
//! Objects refer to each other by natural keys (product short code, user and
//! customer email) instead of ids. See `examples/demo.json`.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::credentials::Passwords;
use crate::engine::model::*;
use crate::engine::time::Millis;
use crate::engine::{Command, Engine};

#[derive(Debug)]
pub struct CatalogError {
    /// Where in the document, e.g. `tenants[0].licenses[3].max_activations`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "catalog {}: {}", self.path, self.message)
    }
}

impl std::error::Error for CatalogError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogDevice {
    hardware_id: String,
    #[serde(flatten)]
    info: DeviceInfo,
}

/// What a load created.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub tenants: usize,
    pub api_keys: usize,
    /// Tenants given a Qlik license.
    pub qlik: usize,
    /// Tenants given a Yext account.
    pub yext: usize,
    /// Tenants given an Informatica org.
    pub informatica: usize,
    pub products: usize,
    pub customers: usize,
    pub users: usize,
    pub licenses: usize,
    pub features: usize,
    pub devices: usize,
}

fn err(path: impl Into<String>, message: impl std::fmt::Display) -> CatalogError {
    CatalogError {
        path: path.into(),
        message: message.to_string(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(path: &str, v: Value) -> Result<T, CatalogError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            format!("{path}.{inner}")
        };
        err(at, e.into_inner())
    })
}

fn apply(engine: &Engine, path: &str, cmd: Command<'_>) -> Result<(), CatalogError> {
    engine.apply(&cmd).map(|_| ()).map_err(|e| match e {
        crate::engine::EngineError::Invalid(field, reason) => {
            err(format!("{path}.{field}"), reason)
        }
        other => err(path, other),
    })
}

fn take_str(
    m: &mut Map<String, Value>,
    k: &str,
    path: &str,
) -> Result<Option<String>, CatalogError> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{path}.{k}"), "must be a string")),
    }
}

pub fn load_file(engine: &Engine, path: &Path, now: Millis) -> Result<Loaded, CatalogError> {
    let text = std::fs::read(path).map_err(|e| err("", format!("{}: {e}", path.display())))?;
    load_slice(engine, &text, now)
}

/// Loads a catalog document. When a tenant's `licenses` follow its `name`
/// and `products` (as in generated catalogs), they are applied as they are
/// parsed, one at a time, so that a catalog of a million licenses never sits
/// in memory as a parsed tree beside the engine it fills; the tenant's
/// `customers` and `users` must then come before them too. Licenses that come
/// earlier (a file written with sorted keys) are kept until the tenant ends.
pub fn load_slice(engine: &Engine, text: &[u8], now: Millis) -> Result<Loaded, CatalogError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut loader = Loader {
        engine,
        now,
        n: Loaded::default(),
        tenants: Vec::new(),
        failed: None,
    };
    let mut track = serde_path_to_error::Track::new();
    let res = serde::de::DeserializeSeed::deserialize(
        CatalogSeed(&mut loader),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    );
    match res {
        Ok(()) => {
            de.end().map_err(|e| err("", e))?;
            Ok(loader.n)
        }
        Err(e) => Err(loader
            .failed
            .take()
            .unwrap_or_else(|| err(track.path().to_string(), e))),
    }
}

/// State of one load: what it created and the names it can refer to.
struct Loader<'a> {
    engine: &'a Engine,
    now: Millis,
    n: Loaded,
    /// Tenant names loaded so far (a tenant's `parent` names an earlier one).
    tenants: Vec<(String, Id)>,
    /// The error that stopped the load, with its path; the parser only
    /// carries a message, so the visitors leave the full error here.
    failed: Option<CatalogError>,
}

/// A tenant's fields other than its licenses, gathered until the licenses
/// arrive (or the tenant ends).
#[derive(Default)]
struct TenantParts {
    name: Option<String>,
    parent: Option<String>,
    api_keys: Vec<Map<String, Value>>,
    /// Vendor sections (`qlik`, `yext`, `informatica`) in file order.
    vendors: Vec<(String, Map<String, Value>)>,
    products: Vec<Map<String, Value>>,
    customers: Vec<Map<String, Value>>,
    users: Vec<Map<String, Value>>,
}

/// A tenant once created: what its licenses may refer to by natural key.
struct Tenant {
    id: Id,
    products: Vec<(String, Id)>,
    customers: Vec<(String, Id)>,
    users: Vec<(String, Id)>,
}

impl Loader<'_> {
    /// Keeps `e` as the load's error and gives the parser one to stop with.
    fn fail<E: serde::de::Error>(&mut self, e: CatalogError) -> E {
        let msg = e.to_string();
        self.failed = Some(e);
        E::custom(msg)
    }

    fn tenant(&mut self, tp: &str, t: TenantParts) -> Result<Tenant, CatalogError> {
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

    fn api_keys(
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

    /// A tenant's Qlik license: the license fields (as `PUT
    /// /admin/v1/tenants/{id}/qlik` takes them) plus optional `settings`
    /// (`autoAssignProfessional`, `autoAssignAnalyzer`) and `assignments`
    /// (`[{"subject", "type"}]`, assigned in order).
    /// A tenant's vendor section, by its name.
    fn vendor(
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

    fn qlik(
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
    fn yext(
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
    fn infa(
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

    fn license(
        &mut self,
        tenant: &Tenant,
        p: &str,
        mut m: Map<String, Value>,
    ) -> Result<(), CatalogError> {
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
        let features: Vec<FeatureSpec> = match m.remove("features") {
            Some(f) => typed(&format!("{p}.features"), f)?,
            None => Vec::new(),
        };
        let devices: Vec<CatalogDevice> = match m.remove("devices") {
            Some(d) => typed(&format!("{p}.devices"), d)?,
            None => Vec::new(),
        };
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
            let dp = format!("{p}.devices[{di}]");
            let cmd = Command::Activate {
                license_id: id,
                hardware_id: Cow::Owned(d.hardware_id),
                info: d.info,
                device_id: engine.next_id(),
                now,
            };
            apply(engine, &dp, cmd)?;
            self.n.devices += 1;
        }
        self.n.licenses += 1;
        Ok(())
    }
}

impl Tenant {
    /// Replaces a `customer` email in `m` by the customer's `customer_id`.
    fn customer_ref(&self, m: &mut Map<String, Value>, p: &str) -> Result<(), CatalogError> {
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

/// The document: `{"tenants": [...]}`.
struct CatalogSeed<'l, 'a>(&'l mut Loader<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for CatalogSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CatalogSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a catalog object with `tenants`")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "tenants" => map.next_value_seed(TenantsSeed(&mut *self.0))?,
                other => {
                    return Err(serde::de::Error::unknown_field(other, &["tenants"]));
                }
            }
        }
        Ok(())
    }
}

struct TenantsSeed<'l, 'a>(&'l mut Loader<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for TenantsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TenantsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tenants")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut ti = 0;
        while seq
            .next_element_seed(TenantSeed {
                loader: &mut *self.0,
                index: ti,
            })?
            .is_some()
        {
            ti += 1;
        }
        Ok(())
    }
}

struct TenantSeed<'l, 'a> {
    loader: &'l mut Loader<'a>,
    index: usize,
}

const TENANT_FIELDS: &[&str] = &[
    "name",
    "parent",
    "api_keys",
    "products",
    "customers",
    "users",
    "licenses",
    "qlik",
    "yext",
    "informatica",
];

impl<'de> serde::de::DeserializeSeed<'de> for TenantSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TenantSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tenant object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tp = format!("tenants[{}]", self.index);
        let mut parts = TenantParts::default();
        let mut created: Option<Tenant> = None;
        // Licenses met before the tenant's name and products (as in a file
        // written with sorted keys): kept until the tenant is complete.
        let mut buffered: Option<Vec<Map<String, Value>>> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if created.is_some()
                && !matches!(
                    &*key,
                    "licenses" | "api_keys" | "qlik" | "yext" | "informatica"
                )
            {
                let e = err(
                    format!("{tp}.{key}"),
                    "must come before `licenses` when licenses follow the tenant's name and products (they are then loaded as they are read)",
                );
                return Err(self.loader.fail(e));
            }
            match &*key {
                "name" => parts.name = Some(map.next_value()?),
                "parent" => parts.parent = map.next_value()?,
                "api_keys" => {
                    let keys: Vec<Map<String, Value>> = map.next_value()?;
                    match &created {
                        // Licenses were streamed already: add the keys now.
                        Some(t) => {
                            if let Err(e) = self.loader.api_keys(&tp, t.id, keys) {
                                return Err(self.loader.fail(e));
                            }
                        }
                        None => parts.api_keys = keys,
                    }
                }
                section @ ("qlik" | "yext" | "informatica") => {
                    let m: Map<String, Value> = map.next_value()?;
                    match &created {
                        Some(t) => {
                            if let Err(e) = self.loader.vendor(&tp, t.id, section, m) {
                                return Err(self.loader.fail(e));
                            }
                        }
                        None => parts.vendors.push((section.to_string(), m)),
                    }
                }
                "products" => parts.products = map.next_value()?,
                "customers" => parts.customers = map.next_value()?,
                "users" => parts.users = map.next_value()?,
                "licenses" if parts.name.is_none() || parts.products.is_empty() => {
                    if buffered.is_some() {
                        return Err(serde::de::Error::duplicate_field("licenses"));
                    }
                    buffered = Some(map.next_value()?);
                }
                "licenses" => {
                    let tenant = match created.take() {
                        Some(t) => t,
                        None => match self.loader.tenant(&tp, std::mem::take(&mut parts)) {
                            Ok(t) => t,
                            Err(e) => return Err(self.loader.fail(e)),
                        },
                    };
                    map.next_value_seed(LicensesSeed {
                        loader: &mut *self.loader,
                        tenant: &tenant,
                        path: &tp,
                    })?;
                    created = Some(tenant);
                }
                other => return Err(serde::de::Error::unknown_field(other, TENANT_FIELDS)),
            }
        }
        if created.is_none() {
            let tenant = match self.loader.tenant(&tp, parts) {
                Ok(t) => t,
                Err(e) => return Err(self.loader.fail(e)),
            };
            for (li, m) in buffered.into_iter().flatten().enumerate() {
                let p = format!("{tp}.licenses[{li}]");
                if let Err(e) = self.loader.license(&tenant, &p, m) {
                    return Err(self.loader.fail(e));
                }
            }
        }
        Ok(())
    }
}

/// A tenant's `licenses`, each applied as soon as it is parsed.
struct LicensesSeed<'l, 'a, 't> {
    loader: &'l mut Loader<'a>,
    tenant: &'t Tenant,
    path: &'t str,
}

impl<'de> serde::de::DeserializeSeed<'de> for LicensesSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for LicensesSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of licenses")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut li = 0usize;
        while let Some(m) = seq.next_element::<Map<String, Value>>()? {
            let p = format!("{}.licenses[{li}]", self.path);
            if let Err(e) = self.loader.license(self.tenant, &p, m) {
                return Err(self.loader.fail(e));
            }
            li += 1;
        }
        Ok(())
    }
}

/// Credentials of generated catalogs (benchmarks and load tests use them).
pub const GENERATED_API_KEY: &str = "bench-api-key";
pub const GENERATED_SHARED_KEY: &str = "bench-shared-key";
pub const GENERATED_PRODUCT: &str = "bench";

/// The license key and hardware id of generated license `i`.
pub fn generated_license(i: u64) -> (String, String) {
    (format!("BENCH-{i:010}"), format!("hw-{i:010}"))
}

/// Every generated catalog also holds one shared floating pool: license
/// [`GENERATED_POOL_LICENSE`] with [`GENERATED_POOL_DEVICES`] activated devices
/// and a floating feature [`GENERATED_POOL_FEATURE`] of
/// [`GENERATED_POOL_SEATS`] seats, fewer than a load test's clients, so that
/// floating churn contends for seats.
pub const GENERATED_POOL_LICENSE: &str = "BENCH-POOL";
pub const GENERATED_POOL_FEATURE: &str = "seat";
pub const GENERATED_POOL_DEVICES: u64 = 256;
pub const GENERATED_POOL_SEATS: u64 = 32;

/// Hardware id of pool device `i` (taken modulo [`GENERATED_POOL_DEVICES`]).
pub fn generated_pool_device(i: u64) -> String {
    format!("pool-hw-{:03}", i % GENERATED_POOL_DEVICES)
}

/// Professional and analyzer seats of the generated tenant's Qlik license
/// (more than a load test's connections, so assignment churn succeeds).
pub const GENERATED_QLIK_SEATS: u64 = 100_000;
/// The generated tenant's Yext account and its one pack (of
/// [`GENERATED_QLIK_SEATS`] licenses).
pub const GENERATED_YEXT_ACCOUNT: &str = "bench-account";
pub const GENERATED_YEXT_PACK: &str = "bench-pack";

/// Writes a synthetic catalog: one tenant, one key-based product, `licenses`
/// licenses each with `features` features (cycling activation, floating,
/// consumption, unlimited consumption) and one activated device, plus the
/// shared floating pool license described at [`GENERATED_POOL_LICENSE`]; the
/// tenant also holds a Qlik license of [`GENERATED_QLIK_SEATS`] seats each
/// and a Yext account with one pack of as many licenses.
pub fn generate(out: &mut impl Write, licenses: u64, features: u32) -> std::io::Result<()> {
    write!(
        out,
        r#"{{"tenants":[{{"name":"Bench","api_keys":[{{"api_key":"{GENERATED_API_KEY}","shared_key":"{GENERATED_SHARED_KEY}","role":"admin"}}],"qlik":{{"licenseNumber":"BENCH","product":"Bench","valid":"2020-01-01/.","allotments":[{{"name":"professional","units":{GENERATED_QLIK_SEATS}}},{{"name":"analyzer","units":{GENERATED_QLIK_SEATS}}},{{"name":"analyzer_time","units":{GENERATED_QLIK_SEATS}}}]}},"yext":{{"accountId":"{GENERATED_YEXT_ACCOUNT}","packs":[{{"id":"{GENERATED_YEXT_PACK}","name":"Bench","total":{GENERATED_QLIK_SEATS}}}]}},"products":[{{"short_code":"{GENERATED_PRODUCT}","name":"Bench","authorization_method":"license-key","max_borrow_time":24}}],"licenses":["#
    )?;
    for i in 0..licenses {
        if i > 0 {
            out.write_all(b",")?;
        }
        let (key, hw) = generated_license(i);
        write!(
            out,
            r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{key}","max_activations":4,"devices":[{{"hardware_id":"{hw}"}}],"features":["#
        )?;
        for f in 0..features {
            if f > 0 {
                out.write_all(b",")?;
            }
            match f % 4 {
                0 => write!(out, r#"{{"code":"f{f}","name":"Feature {f}"}}"#)?,
                1 => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Floating {f}","is_floating_cloud":true,"floating_users":8,"floating_timeout":30}}"#
                )?,
                2 => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Metered {f}","feature_type":"consumption","max_consumption":1000000000,"allow_overages":true,"max_overages":1000}}"#
                )?,
                _ => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Unlimited {f}","feature_type":"consumption","allow_unlimited_consumptions":true}}"#
                )?,
            }
        }
        out.write_all(b"]}")?;
    }
    if licenses > 0 {
        out.write_all(b",")?;
    }
    write!(
        out,
        r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{GENERATED_POOL_LICENSE}","max_activations":{GENERATED_POOL_DEVICES},"devices":["#
    )?;
    for d in 0..GENERATED_POOL_DEVICES {
        if d > 0 {
            out.write_all(b",")?;
        }
        write!(out, r#"{{"hardware_id":"{}"}}"#, generated_pool_device(d))?;
    }
    write!(
        out,
        r#"],"features":[{{"code":"{GENERATED_POOL_FEATURE}","name":"Pool seat","is_floating_cloud":true,"floating_users":{GENERATED_POOL_SEATS},"floating_timeout":30}}]}}"#
    )?;
    out.write_all(b"]}]}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(doc: &str) -> CatalogError {
        load_slice(&Engine::new(), doc.as_bytes(), 0).expect_err("must fail")
    }

    const PRODUCT: &str = r#"{"short_code":"p","name":"p","authorization_method":"license-key"}"#;

    #[test]
    fn errors_name_their_place() {
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a"}},{{"product":"q","license_key":"b"}}]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].licenses[1].product");
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a","features":[{{"code":"x","floating_users":"many"}}]}}]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].licenses[0].features[0].floating_users");
        let e = load_err(r#"{"tenants":[{"name":"t","colour":"red"}]}"#);
        assert!(e.message.contains("colour"), "{e}");
        // Broken JSON inside a license: the parser's place is reported.
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a"}},{{"product" "p"}}]}}]}}"#
        ));
        assert!(e.path.starts_with("tenants[0].licenses"), "{e}");
        let e = load_err(r#"{"tenants":[]} trailing"#);
        assert!(e.message.contains("trailing"), "{e}");
    }

    /// Vendor sections load, in any key order, and their errors name the field.
    #[test]
    fn vendor_sections_load_and_name_their_errors() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[],
              "yext":{{"accountId":"a","packs":[{{"id":"p","total":2}}],"assignments":[{{"pack":"p","entity":"e1","expirationDate":"2999-01-01"}}]}},
              "qlik":{{"licenseNumber":"1","product":"P","valid":"2020-01-01/.","allotments":[{{"name":"analyzer","units":1}}],
                       "settings":{{"autoAssignAnalyzer":true}},"assignments":[{{"subject":"s","type":"analyzer"}}]}},
              "informatica":{{"orgId":"o","users":[{{"username":"u","password":"pw","admin":true}}]}}}},
              {{"name":"child","parent":"t","informatica":{{"orgId":"c"}}}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.qlik, n.yext, n.informatica), (1, 1, 2));
        let t = e.infa_org_tenant("o").expect("org");
        assert_eq!(e.qlik(t).expect("qlik").book.lock().assignments.len(), 1);
        assert_eq!(e.yext(t).expect("yext").count(None, None, 0), 1);
        assert!(e.infa_user_tenant("u").is_some());
        for (section, path) in [
            (
                r#""qlik":{"licenseNumber":"1","product":"P","valid":"never"}"#,
                "tenants[0].qlik.valid",
            ),
            (
                r#""qlik":{"licenseNumber":"1","product":"P","valid":"./.","assignments":[{"subject":"s","type":"boss"}]}"#,
                "tenants[0].qlik.assignments[0].type",
            ),
            (
                r#""yext":{"accountId":"a","packs":[{"id":"p","total":"two"}]}"#,
                "tenants[0].yext.packs[0].total",
            ),
            (
                r#""yext":{"accountId":"a","assignments":[{"pack":"nope","entity":"e"}]}"#,
                "tenants[0].yext.assignments[0]",
            ),
            (
                r#""informatica":{"orgId":"o","users":[{"username":"u"}]}"#,
                "tenants[0].informatica.users[0].password",
            ),
            (
                r#""informatica":{"orgId":"o","licenses":{"customLimits":[{"limitDefinition":"l","value":-5}]}}"#,
                "tenants[0].informatica.customLimits.value",
            ),
        ] {
            let e = load_err(&format!(r#"{{"tenants":[{{"name":"t",{section}}}]}}"#));
            assert_eq!(e.path, path, "{section}: {e}");
        }
    }

    #[test]
    fn users_after_streamed_licenses_are_refused() {
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[],"users":[]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].users");
        assert!(e.message.contains("before `licenses`"), "{e}");
        let e = load_err(r#"{"tenants":[{"licenses":[]}]}"#);
        assert_eq!(e.path, "tenants[0].name");
    }

    /// A file written with sorted keys (licenses before name and products)
    /// loads too: its licenses are kept until the tenant is complete.
    #[test]
    fn sorted_keys_load() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"api_keys":[{{"api_key":"k","role":"admin","shared_key":"s"}}],"licenses":[{{"license_key":"k1","product":"p"}},{{"license_key":"k2","product":"p"}}],"name":"t","products":[{PRODUCT}]}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.licenses, n.api_keys), (2, 1));
        let e2 = load_err(&format!(
            r#"{{"tenants":[{{"licenses":[{{"license_key":"k1","product":"q"}}],"name":"t","products":[{PRODUCT}]}}]}}"#
        ));
        assert_eq!(e2.path, "tenants[0].licenses[0].product");
    }

    #[test]
    fn licenses_and_tenants_load_in_order() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"name":"a","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"k1","devices":[{{"hardware_id":"h"}}]}}]}},{{"name":"b","parent":"a"}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.tenants, n.products, n.licenses, n.devices), (2, 1, 1, 1));
        let e2 = load_err(r#"{"tenants":[{"name":"b","parent":"nobody"}]}"#);
        assert_eq!(e2.path, "tenants[0].parent");
    }
}
