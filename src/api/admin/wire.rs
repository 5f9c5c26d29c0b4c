//! The admin API's wire shapes: JSON views of engine objects.

use serde_json::{json, Value};

use crate::engine::model::*;
use crate::engine::time::{format_instant, Millis};
use crate::engine::Engine;

fn with_id(id: Id, spec: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), id.into());
    }
    v
}

fn set(v: &mut Value, k: &str, x: impl Into<Value>) {
    if let Value::Object(m) = v {
        m.insert(k.into(), x.into());
    }
}

pub fn tenant(t: &Tenant) -> Value {
    with_id(t.id, &*t.spec.read())
}

/// A key with its id (`key:...`, how records and logs name it).
pub fn api_key(k: &ApiKey) -> Value {
    let mut v = serde_json::to_value(k.spec()).unwrap_or(Value::Null);
    v["key_id"] = (*k.key_id).into();
    v
}

pub fn product(p: &Product) -> Value {
    let mut v = with_id(p.id, &*p.spec.read());
    set(&mut v, "licenses", p.licenses_by_key.len());
    v
}

pub fn customer(c: &Customer) -> Value {
    with_id(c.id, &*c.spec.read())
}

/// A license user, without its password hash.
pub fn user(engine: &Engine, u: &LicenseUser) -> Value {
    let mut v = with_id(u.id, &*u.spec.read());
    if let Value::Object(m) = &mut v {
        m.remove("password_hash");
    }
    set(&mut v, "licenses", u.licenses.read().clone());
    set(&mut v, "total_activations", engine.user_activations(u));
    v
}

pub fn feature(f: &Feature, now: Millis) -> Value {
    let mut v = with_id(f.id, &**f.spec.load());
    set(&mut v, "total_consumptions", f.meter.used(now));
    set(&mut v, "reserved_consumptions", f.meter.reserved());
    set(
        &mut v,
        "consumption_period_end",
        f.meter.next_reset().map(format_instant),
    );
    set(&mut v, "floating_in_use_devices", f.floating.in_use(now));
    v
}

pub fn license(engine: &Engine, l: &License, now: Millis) -> Value {
    let mut v = with_id(l.id, &l.spec());
    set(&mut v, "tenant_id", l.tenant_id);
    set(&mut v, "times_activated", l.activations.used());
    set(
        &mut v,
        "transfer_count",
        l.transfer_count.load(std::sync::atomic::Ordering::Acquire),
    );
    set(&mut v, "total_consumptions", l.consumption.used(now));
    set(&mut v, "floating_in_use_devices", l.floating.in_use(now));
    set(
        &mut v,
        "is_expired",
        engine.is_expired(l, &l.spec.read(), now),
    );
    let fs: Vec<Value> = l.features.read().iter().map(|f| feature(f, now)).collect();
    set(&mut v, "features", fs);
    v
}

pub fn device(d: &Device) -> Value {
    json!({
        "id": d.id,
        "hardware_id": d.hardware_id,
        "active": d.active,
        "blacklisted": d.blacklisted,
        "first_activated": format_instant(d.first_activated),
        "last_activated": format_instant(d.last_activated),
        "deactivated_at": d.deactivated_at.map(format_instant),
        "info": d.info(),
        "variables": d.variables.iter().map(|x| json!({"variable": x.variable, "value": x.value,
            "created_at": format_instant(x.created_at)})).collect::<Vec<_>>(),
    })
}

fn holders(pool: &crate::engine::lease::LeasePool, now: Millis) -> Value {
    let hs: Vec<Value> = pool
        .holders(now)
        .iter()
        .map(|h| {
            json!({"hardware_id": &*h.holder, "since": format_instant(h.since), "expires_at": format_instant(h.expires_at),
                   "borrowed_until": h.borrowed_until.map(format_instant)})
        })
        .collect();
    json!({"capacity": pool.capacity(), "in_use": hs.len(), "holders": hs})
}

pub fn floating(l: &License, now: Millis) -> Value {
    let fs: Vec<Value> = l
        .features
        .read()
        .iter()
        .filter(|f| f.is_floating())
        .map(|f| {
            let mut v = holders(&f.floating, now);
            set(&mut v, "feature_id", f.id);
            set(&mut v, "code", &*f.code);
            v
        })
        .collect();
    json!({"license_id": l.id, "license": holders(&l.floating, now), "features": fs})
}
