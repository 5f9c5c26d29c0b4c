//! Response bodies in LicenseSpring's shapes (field names as in its License
//! API v4 documentation).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::model::*;
use crate::engine::time::{format_instant, Millis};
use crate::engine::Engine;

pub fn customer(c: Option<&Customer>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => {
            let s = c.spec.read();
            json!({
                "id": c.id, "email": s.email, "company_name": s.company_name, "reference": s.reference, "phone": s.phone,
                "first_name": s.first_name, "last_name": s.last_name, "city": s.city, "postcode": s.postcode,
                "state": s.state, "country": s.country, "address": s.address,
                "customer_account": s.customer_account, "metadata": s.metadata,
            })
        }
    }
}

pub fn product_details(p: &Product) -> Value {
    let s = p.spec.read();
    json!({
        "product_id": p.id, "product_name": s.name, "short_code": &*p.short_code,
        "authorization_method": p.authorization_method.as_str(), "metadata": s.metadata,
        "allow_trial": s.trial_days > 0, "trial_days": s.trial_days,
        "floating_timeout": s.floating_timeout, "max_borrow_time": s.max_borrow_time,
        "prevent_vm": false, "allow_overages": false, "max_overages": 0,
        "is_bundle": !s.bundle_products.is_empty(), "company": {"id": p.tenant_id},
    })
}

/// `product_details`' `latest_version`: the newest enabled release (of `env`
/// where given).
pub fn latest_version(p: &Product, env: Option<&str>) -> Value {
    let s = p.spec.read();
    let Some((index, r)) = s
        .releases
        .iter()
        .enumerate()
        .rfind(|(_, r)| r.enabled && env.is_none_or(|e| r.environment == e))
    else {
        return Value::Null;
    };
    let mut v = release(r, index);
    let filename = r.installation_file.rsplit('/').next().unwrap_or_default();
    for (k, x) in [
        ("full_link", Value::from(r.installation_file.as_str())),
        ("filename", filename.into()),
        ("created_at", Value::Null),
        ("updated_at", Value::Null),
        ("enabled", r.enabled.into()),
        ("product_id", p.id.into()),
    ] {
        v.insert(k.into(), x);
    }
    Value::Object(v)
}

/// The fields a release has in every LicenseSpring answer that shows one.
/// `index` is its position in the product's list (its id when none was given).
fn release(r: &ReleaseSpec, index: usize) -> Map<String, Value> {
    let or_null = |s: &str| if s.is_empty() { Value::Null } else { s.into() };
    let v = json!({
        "id": r.id.unwrap_or(index as u64 + 1),
        "version": r.version,
        "release_date": r.release_date.as_deref().map(release_date),
        "hash_md5": r.hash_md5,
        "environment": r.environment,
        "eula_link": r.eula_link,
        "release_notes_link": r.release_notes_link,
        "size": or_null(&r.size),
        "requires_version": or_null(&r.requires_version),
        "channel": or_null(&r.channel),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

pub fn user(engine: &Engine, u: &LicenseUser) -> Value {
    let s = u.spec.read();
    json!({
        "id": u.id, "email": s.email, "first_name": s.first_name, "last_name": s.last_name,
        "phone_number": s.phone_number, "is_initial_password": s.is_initial_password,
        "max_activations": s.max_activations, "allow_unlimited_activations": s.allow_unlimited_activations,
        "total_activations": engine.user_activations(u),
    })
}

/// A feature as listed inside a license (`product_features[]`).
pub fn feature_in_license(f: &Feature, now: Millis) -> Value {
    let s = f.spec.load();
    let mut v = json!({
        "id": f.id, "code": &*f.code, "name": s.name, "expiry_date": s.expiry_date, "metadata": s.metadata,
        "feature_type": s.feature_type.as_str(), "is_floating": s.is_floating, "is_floating_cloud": s.is_floating_cloud,
    });
    let m = v.as_object_mut().expect("object literal");
    if s.floating() {
        m.insert("floating_users".into(), s.floating_users.into());
        m.insert("floating_timeout".into(), s.floating_timeout.into());
        m.insert(
            "floating_in_use_devices".into(),
            f.floating.in_use(now).into(),
        );
    }
    if s.feature_type == FeatureType::Consumption {
        m.insert("max_consumption".into(), s.max_consumption.into());
        m.insert(
            "allow_unlimited_consumptions".into(),
            s.allow_unlimited_consumptions.into(),
        );
        m.insert("total_consumptions".into(), f.meter.used(now).into());
        m.insert("allow_overages".into(), s.allow_overages.into());
        m.insert("max_overages".into(), s.max_overages.into());
        m.insert(
            "allow_negative_consumptions".into(),
            s.allow_negative_consumptions.into(),
        );
        m.insert("reset_consumption".into(), s.reset_consumption.into());
        m.insert(
            "consumption_period".into(),
            s.consumption_period.map(|p| p.as_str()).into(),
        );
    }
    v
}

/// The feature-check body (seed 003): every field always present but
/// `floating_in_use_devices`, which only floating features carry.
#[derive(Serialize)]
pub struct FeatureCheck<'a> {
    pub allow_negative_consumptions: bool,
    pub allow_overages: bool,
    pub allow_unlimited_consumptions: bool,
    pub code: &'a str,
    pub consumption_period: Option<&'static str>,
    pub expiry_date: Option<&'a str>,
    pub feature_type: &'static str,
    pub id: Id,
    pub is_floating_cloud: bool,
    pub is_floating: bool,
    pub license_id: Id,
    pub max_consumption: i64,
    pub max_overages: i64,
    pub metadata: super::js::Js<'a>,
    pub name: &'a str,
    pub reset_consumption: bool,
    pub total_consumptions: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floating_in_use_devices: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floating_users: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floating_timeout: Option<u32>,
}

impl<'a> FeatureCheck<'a> {
    pub fn new(
        license_id: Id,
        f: &'a Feature,
        s: &'a FeatureSpec,
        in_use: Option<u32>,
        total: i64,
    ) -> Self {
        FeatureCheck {
            allow_negative_consumptions: s.allow_negative_consumptions,
            allow_overages: s.allow_overages,
            allow_unlimited_consumptions: s.allow_unlimited_consumptions,
            code: &f.code,
            consumption_period: s.consumption_period.map(|p| p.as_str()),
            expiry_date: s.expiry_date.as_deref(),
            feature_type: s.feature_type.as_str(),
            id: f.id,
            is_floating_cloud: s.is_floating_cloud,
            is_floating: s.is_floating,
            license_id,
            max_consumption: s.max_consumption,
            max_overages: s.max_overages,
            metadata: super::js::Js(&s.metadata),
            name: &s.name,
            reset_consumption: s.reset_consumption,
            total_consumptions: total,
            floating_in_use_devices: in_use,
            floating_users: in_use.map(|_| s.floating_users),
            floating_timeout: in_use.map(|_| s.floating_timeout),
        }
    }
}

/// Context for rendering a license for one device.
pub struct LicenseView<'a> {
    pub engine: &'a Engine,
    pub license: &'a License,
    pub hardware_id: Option<&'a str>,
    pub now: Millis,
    /// The release whose installation file the object describes.
    pub release: Option<&'a ReleaseSpec>,
    /// Leave out features past their expiry date.
    pub hide_expired_features: bool,
}

impl LicenseView<'_> {
    /// The full license object (check_license, activate_license, user_licenses).
    #[allow(
        clippy::too_many_lines,
        reason = "the license object field by field, in LicenseSpring's order"
    )]
    pub fn render(&self) -> Map<String, Value> {
        let (e, l, now) = (self.engine, self.license, self.now);
        let s = l.spec.read();
        let product = e.product(l.product_id);
        let device = self.hardware_id.and_then(|hw| e.device(l, hw));
        let lease = self.hardware_id.and_then(|hw| {
            l.floating
                .holders(now)
                .into_iter()
                .find(|h| &*h.holder == hw)
        });
        let borrowed_until = lease.as_ref().and_then(|h| h.borrowed_until);
        let floating = s.is_floating || s.is_floating_cloud;
        let mut v = json!({
            "id": l.id,
            "order_store_id": s.order_store_id,
            "license_active": s.active,
            "license_enabled": s.enabled,
            "license_type": s.license_type.as_str(),
            "is_trial": s.is_trial,
            "is_expired": e.is_expired(l, &s, now),
            "max_license_users": s.max_license_users,
            "validity_period": s.validity_period,
            "start_date": s.start_date,
            "enable_maintenance_period": s.enable_maintenance_period,
            "maintenance_period": s.maintenance_period,
            "allow_grace_period": s.allow_grace_period,
            "grace_period": s.grace_period,
            "max_activations": s.max_activations,
            "allow_unlimited_activations": s.allow_unlimited_activations,
            "times_activated": l.activations.used(),
            "transfer_count": l.transfer_count.load(std::sync::atomic::Ordering::Acquire),
            "max_transfers": s.max_transfers,
            "allow_overages": s.allow_overages,
            "max_overages": s.max_overages,
            "is_floating_cloud": s.is_floating_cloud,
            "is_floating": s.is_floating,
            "floating_timeout": s.floating_timeout,
            "can_borrow": s.can_borrow,
            "max_borrow_time": s.max_borrow_time,
            "is_borrowed": borrowed_until.is_some(),
            "borrowed_until": borrowed_until.map(format_instant),
            "prevent_vm": s.prevent_vm,
            "is_hardware_key_auth": false,
            "is_air_gapped": false,
            "device_id": device.as_ref().map(|d| d.id),
            "custom_fields": s.custom_fields,
            "product_features": l.features.read().iter()
                .filter(|f| !self.hide_expired_features || e.check_feature(f, now).is_ok())
                .map(|f| feature_in_license(f, now)).collect::<Vec<_>>(),
            "customer": customer(s.customer_id.and_then(|c| e.customer(c)).as_deref()),
            "product_details": product.as_deref().map(product_details).unwrap_or(Value::Null),
            "metadata": s.metadata,
            "company": {"id": l.tenant_id},
        });
        let m = v.as_object_mut().expect("object literal");
        installation_fields(m, self.release);
        if let Some(hw) = self.hardware_id {
            // Read back by the SDKs when they load a saved answer offline.
            m.insert("hardware_id".into(), hw.into());
        }
        if let Some(k) = &l.license_key {
            m.insert("license_key".into(), (**k).into());
        }
        if let Some(u) = s.user_id.and_then(|u| e.user(u)) {
            m.insert("user".into(), user(e, &u));
        }
        if s.is_trial {
            m.insert("trial_days".into(), s.trial_days.unwrap_or(0).into());
        }
        if floating {
            m.insert("floating_users".into(), s.floating_users.into());
            m.insert(
                "floating_in_use_devices".into(),
                l.floating.in_use(now).into(),
            );
            if let Some(h) = &lease {
                m.insert(
                    "floating_end_date".into(),
                    format_instant(h.expires_at).into(),
                );
            }
        }
        if s.license_type == LicenseType::Consumption {
            m.insert("max_consumptions".into(), s.max_consumptions.into());
            m.insert("total_consumptions".into(), l.consumption.used(now).into());
            m.insert(
                "allow_unlimited_consumptions".into(),
                s.allow_unlimited_consumptions.into(),
            );
            m.insert(
                "allow_negative_consumptions".into(),
                s.allow_negative_consumptions.into(),
            );
            m.insert("reset_consumption".into(), s.reset_consumption.into());
            m.insert(
                "consumption_period".into(),
                s.consumption_period.map(|p| p.as_str()).into(),
            );
        }
        if let Some(d) = &device {
            let vars: Vec<Value> = d.variables.iter().map(|x| variable(d.id, x)).collect();
            m.insert("variables".into(), vars.into());
        }
        v.as_object().cloned().unwrap_or_default()
    }
}

/// A license object's installation-file fields: those of `release`, or empty.
fn installation_fields(m: &mut Map<String, Value>, release: Option<&ReleaseSpec>) {
    let field = |f: fn(&ReleaseSpec) -> &str| release.map(f).unwrap_or("");
    let date = release
        .and_then(|r| r.release_date.as_deref())
        .map(release_date)
        .unwrap_or_default();
    let fields: [(&str, &str); 10] = [
        ("channel", field(|r| &r.channel)),
        ("environment", field(|r| &r.environment)),
        ("eula_link", field(|r| &r.eula_link)),
        ("hash_md5", field(|r| &r.hash_md5)),
        ("installation_file", field(|r| &r.installation_file)),
        ("release_date", &date),
        ("release_notes_link", field(|r| &r.release_notes_link)),
        ("requires_version", field(|r| &r.requires_version)),
        ("size", field(|r| &r.size)),
        ("version", field(|r| &r.version)),
    ];
    for (k, v) in fields {
        m.insert(k.into(), v.into());
    }
}

/// A release date as LicenseSpring writes it (`2020-11-30T00:00:00.000Z`).
pub fn release_date(s: &str) -> String {
    crate::engine::time::parse_instant(s)
        .map(format_instant)
        .unwrap_or_else(|| s.to_string())
}

/// An installation file as `installation_file` answers it.
pub fn installation_file(r: &ReleaseSpec, index: usize, tenant_id: Id) -> Value {
    let mut v = release(r, index);
    v.insert(
        "installation_file".into(),
        r.installation_file.as_str().into(),
    );
    v.insert("company".into(), json!({"id": tenant_id}));
    Value::Object(v)
}

pub fn variable(device_id: Id, x: &DeviceVariable) -> Value {
    json!({"device_id": device_id, "variable": x.variable, "value": x.value, "created_at": format_instant(x.created_at)})
}
