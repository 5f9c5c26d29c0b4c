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
struct Catalog {
    #[serde(default)]
    tenants: Vec<CatalogTenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogTenant {
    name: String,
    /// Name of a tenant earlier in the file.
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    api_keys: Vec<Map<String, Value>>,
    #[serde(default)]
    products: Vec<Map<String, Value>>,
    #[serde(default)]
    customers: Vec<Map<String, Value>>,
    #[serde(default)]
    users: Vec<Map<String, Value>>,
    #[serde(default)]
    licenses: Vec<Map<String, Value>>,
}

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

pub fn load_slice(engine: &Engine, text: &[u8], now: Millis) -> Result<Loaded, CatalogError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let catalog: Catalog = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| err(e.path().to_string(), e.into_inner()))?;
    load(engine, catalog, now)
}

fn load(engine: &Engine, catalog: Catalog, now: Millis) -> Result<Loaded, CatalogError> {
    let mut n = Loaded::default();
    let mut tenant_ids: Vec<(String, Id)> = Vec::new();
    for (ti, t) in catalog.tenants.into_iter().enumerate() {
        let tp = format!("tenants[{ti}]");
        let parent_id = match &t.parent {
            None => None,
            Some(name) => Some(
                tenant_ids
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| err(format!("{tp}.parent"), "no earlier tenant by that name"))?,
            ),
        };
        let tenant_id = engine.next_id();
        apply(
            engine,
            &tp,
            Command::PutTenant {
                id: tenant_id,
                spec: TenantSpec {
                    name: t.name.clone(),
                    parent_id,
                },
            },
        )?;
        tenant_ids.push((t.name, tenant_id));
        n.tenants += 1;

        for (i, mut k) in t.api_keys.into_iter().enumerate() {
            let p = format!("{tp}.api_keys[{i}]");
            k.insert("tenant_id".into(), tenant_id.into());
            apply(
                engine,
                &p,
                Command::PutApiKey {
                    spec: typed(&p, Value::Object(k))?,
                },
            )?;
            n.api_keys += 1;
        }
        let mut products: Vec<(String, Id)> = Vec::new();
        for (i, mut m) in t.products.into_iter().enumerate() {
            let p = format!("{tp}.products[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            let spec: ProductSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            products.push((spec.short_code.clone(), id));
            apply(engine, &p, Command::PutProduct { id, spec })?;
            n.products += 1;
        }
        let mut customers: Vec<(String, Id)> = Vec::new();
        for (i, mut m) in t.customers.into_iter().enumerate() {
            let p = format!("{tp}.customers[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            let spec: CustomerSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            customers.push((spec.email.to_ascii_lowercase(), id));
            apply(engine, &p, Command::PutCustomer { id, spec })?;
            n.customers += 1;
        }
        let customer_ref = |m: &mut Map<String, Value>, p: &str| -> Result<(), CatalogError> {
            if let Some(email) = take_str(m, "customer", p)? {
                let id = customers
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
        };
        let mut users: Vec<(String, Id)> = Vec::new();
        for (i, mut m) in t.users.into_iter().enumerate() {
            let p = format!("{tp}.users[{i}]");
            m.insert("tenant_id".into(), tenant_id.into());
            customer_ref(&mut m, &p)?;
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
            users.push((spec.email.to_ascii_lowercase(), id));
            apply(engine, &p, Command::PutUser { id, spec })?;
            n.users += 1;
        }
        for (i, mut m) in t.licenses.into_iter().enumerate() {
            let p = format!("{tp}.licenses[{i}]");
            let code = take_str(&mut m, "product", &p)?
                .ok_or_else(|| err(format!("{p}.product"), "product short code required"))?;
            let product_id = products
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, id)| *id)
                .ok_or_else(|| err(format!("{p}.product"), "no such product in this tenant"))?;
            m.insert("product_id".into(), product_id.into());
            if let Some(email) = take_str(&mut m, "user", &p)? {
                let id = users
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
            customer_ref(&mut m, &p)?;
            let features: Vec<FeatureSpec> = match m.remove("features") {
                Some(f) => typed(&format!("{p}.features"), f)?,
                None => Vec::new(),
            };
            let devices: Vec<CatalogDevice> = match m.remove("devices") {
                Some(d) => typed(&format!("{p}.devices"), d)?,
                None => Vec::new(),
            };
            let spec: LicenseSpec = typed(&p, Value::Object(m))?;
            let id = engine.next_id();
            n.features += features.len();
            let features = features
                .into_iter()
                .map(|f| (engine.next_id(), f))
                .collect();
            apply(
                engine,
                &p,
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
                n.devices += 1;
            }
            n.licenses += 1;
        }
    }
    Ok(n)
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

/// Writes a synthetic catalog: one tenant, one key-based product, `licenses`
/// licenses each with `features` features (cycling activation, floating,
/// consumption, unlimited consumption) and one activated device, plus the
/// shared floating pool license described at [`GENERATED_POOL_LICENSE`].
pub fn generate(out: &mut impl Write, licenses: u64, features: u32) -> std::io::Result<()> {
    write!(
        out,
        r#"{{"tenants":[{{"name":"Bench","api_keys":[{{"api_key":"{GENERATED_API_KEY}","shared_key":"{GENERATED_SHARED_KEY}","role":"admin"}}],"products":[{{"short_code":"{GENERATED_PRODUCT}","name":"Bench","authorization_method":"license-key","max_borrow_time":24}}],"licenses":["#
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
