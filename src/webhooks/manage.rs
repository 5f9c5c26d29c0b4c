//! What the native and admin APIs share of managing subscriptions: reading
//! a request's fields into a spec, and the answers' shapes. Each surface
//! maps the errors (field, reason) to its own error shape.

use serde_json::{json, Map, Value};

use crate::app::App;
use crate::engine::model::Id;
use crate::engine::time::{format_instant, Millis};
use crate::engine::webhook::{Attempt, EventType, Subscription, WebhookSpec};

/// A subscription request's fields that were wrong: (field, why).
pub type FieldError = (String, String);

fn field_err(field: &str, why: impl Into<String>) -> FieldError {
    (field.to_string(), why.into())
}

/// Reads a create (`base` None) or a change (`base`: the current spec) of
/// a subscription of `tenant`: `url`, `events`, `license` (key) or
/// `license_id`, `feature` (code) or `feature_id`, `thresholds`,
/// `expiring_days`, `description`, `enabled`, and `secret` (given instead
/// of generated). Unknown fields are refused.
pub fn spec_from(
    app: &App,
    tenant: Id,
    body: &Value,
    base: Option<&WebhookSpec>,
) -> Result<(WebhookSpec, Option<String>), FieldError> {
    let m = body
        .as_object()
        .ok_or_else(|| field_err("body", "must be a JSON object"))?;
    const KNOWN: [&str; 12] = [
        "url",
        "events",
        "license",
        "license_id",
        "feature",
        "feature_id",
        "thresholds",
        "expiring_days",
        "description",
        "enabled",
        "secret",
        "tenant_id",
    ];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(field_err(k, "is not a field of a webhook"));
    }
    let mut spec = match base {
        Some(b) => b.clone(),
        None => WebhookSpec {
            url: String::new(),
            events: Vec::new(),
            license_id: None,
            feature_id: None,
            thresholds: vec![80, 100],
            expiring_days: 7,
            description: String::new(),
            enabled: true,
        },
    };
    if let Some(v) = m.get("url") {
        spec.url = v
            .as_str()
            .ok_or_else(|| field_err("url", "must be a string"))?
            .to_string();
    } else if base.is_none() {
        return Err(field_err("url", "is required"));
    }
    if let Some(v) = m.get("events") {
        spec.events = events_of(v)?;
    } else if base.is_none() {
        return Err(field_err("events", "is required"));
    }
    filter_of(app, tenant, m, &mut spec)?;
    if let Some(v) = m.get("thresholds") {
        let list = v
            .as_array()
            .ok_or_else(|| field_err("thresholds", "must be a list of percentages"))?;
        spec.thresholds = list
            .iter()
            .map(|t| t.as_u64().and_then(|t| u16::try_from(t).ok()))
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| field_err("thresholds", "must be whole percentages"))?;
        spec.thresholds.sort_unstable();
        spec.thresholds.dedup();
    }
    if let Some(v) = m.get("expiring_days") {
        spec.expiring_days = v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| field_err("expiring_days", "must be a whole number of days"))?;
    }
    if let Some(v) = m.get("description") {
        spec.description = v
            .as_str()
            .ok_or_else(|| field_err("description", "must be a string"))?
            .to_string();
    }
    if let Some(v) = m.get("enabled") {
        spec.enabled = v
            .as_bool()
            .ok_or_else(|| field_err("enabled", "must be true or false"))?;
    }
    crate::engine::webhook::validate_spec(&spec).map_err(engine_field)?;
    let secret = match m.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            crate::engine::webhook::validate_secret(s).map_err(engine_field)?;
            Some(s.clone())
        }
        Some(_) => return Err(field_err("secret", "must be a string")),
    };
    Ok((spec, secret))
}

fn engine_field(e: crate::engine::EngineError) -> FieldError {
    match e {
        crate::engine::EngineError::Invalid(f, why) => field_err(f, why),
        other => field_err("body", other.to_string()),
    }
}

fn events_of(v: &Value) -> Result<Vec<EventType>, FieldError> {
    let list = v
        .as_array()
        .ok_or_else(|| field_err("events", "must be a list of event types"))?;
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let name = e.as_str().unwrap_or("");
        let t = EventType::parse(name).ok_or_else(|| {
            field_err(
                &format!("events[{i}]"),
                format!(
                    "must be one of {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The license and feature filter: by key and code, or by ids (`null`
/// clears it).
fn filter_of(
    app: &App,
    tenant: Id,
    m: &Map<String, Value>,
    spec: &mut WebhookSpec,
) -> Result<(), FieldError> {
    let license = match (m.get("license"), m.get("license_id")) {
        (Some(_), Some(_)) => {
            return Err(field_err("license", "give license or license_id, not both"))
        }
        (Some(Value::Null), None) | (None, Some(Value::Null)) => Some(None),
        (Some(Value::String(key)), None) => {
            Some(Some(app.engine.license_by_key(tenant, key).ok_or_else(
                || field_err("license", "no such license in this tenant"),
            )?))
        }
        (None, Some(id)) => {
            let id = id_of(id).ok_or_else(|| field_err("license_id", "must be an id"))?;
            let l = app
                .engine
                .license(id)
                .filter(|l| l.tenant_id == tenant)
                .ok_or_else(|| field_err("license_id", "no such license in this tenant"))?;
            Some(Some(l))
        }
        (Some(_), None) => return Err(field_err("license", "must be a license key")),
        (None, None) => None,
    };
    if let Some(l) = &license {
        spec.license_id = l.as_ref().map(|l| l.id);
        spec.feature_id = None;
    }
    let feature = match (m.get("feature"), m.get("feature_id")) {
        (None, None) => return Ok(()),
        (Some(Value::Null), None) | (None, Some(Value::Null)) => {
            spec.feature_id = None;
            return Ok(());
        }
        (f, fid) => (f, fid),
    };
    let l = spec
        .license_id
        .and_then(|id| app.engine.license(id))
        .ok_or_else(|| field_err("feature", "needs a license"))?;
    let features = l.features.read();
    let found = match feature {
        (Some(Value::String(code)), None) => features.iter().find(|f| &*f.code == code.as_str()),
        (None, Some(id)) => {
            let id = id_of(id).ok_or_else(|| field_err("feature_id", "must be an id"))?;
            features.iter().find(|f| f.id == id)
        }
        _ => {
            return Err(field_err(
                "feature",
                "give one feature code (or feature_id)",
            ))
        }
    };
    spec.feature_id = Some(
        found
            .ok_or_else(|| field_err("feature", "no such feature on the license"))?
            .id,
    );
    Ok(())
}

fn id_of(v: &Value) -> Option<Id> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A subscription as the APIs show it (never its secrets; `secret` is
/// shown once, when it is made or rotated).
pub fn view(app: &App, s: &Subscription, secret: Option<&str>) -> Value {
    let license = s.spec.license_id.and_then(|l| app.engine.license(l));
    let feature = match (&license, s.spec.feature_id) {
        (Some(l), Some(f)) => l
            .features
            .read()
            .iter()
            .find(|x| x.id == f)
            .map(|x| x.code.to_string()),
        _ => None,
    };
    let now = app.now();
    let previous: Vec<Value> = s
        .secrets
        .iter()
        .filter(|x| x.expires_at != Millis::MAX && x.expires_at > now)
        .map(|x| json!(format_instant(x.expires_at)))
        .collect();
    let mut v = json!({
        "id": s.id.to_string(),
        "tenant_id": s.tenant_id.to_string(),
        "url": s.spec.url,
        "events": s.spec.events,
        "license_id": s.spec.license_id.map(|l| l.to_string()),
        "license": license.as_ref().and_then(|l| l.license_key.as_deref().map(str::to_string)),
        "feature_id": s.spec.feature_id.map(|f| f.to_string()),
        "feature": feature,
        "thresholds": s.spec.thresholds,
        "expiring_days": s.spec.expiring_days,
        "description": s.spec.description,
        "enabled": s.spec.enabled,
        "disabled_reason": s.disabled_reason,
        "created_at": format_instant(s.created_at),
        "previous_secrets_valid_until": previous,
        "pending": app.engine.webhook_pending_count(s.id),
    });
    if let Some(secret) = secret {
        v["secret"] = json!(secret);
    }
    v
}

/// One attempt (or drop) as the deliveries list shows it.
pub fn attempt_view(a: &Attempt) -> Value {
    json!({
        "event_id": crate::engine::webhook::event_id(a.event),
        "type": a.kind.as_str(),
        "attempt": a.attempt,
        "at": format_instant(a.at),
        "result": a.report.result,
        "status_code": a.report.status_code,
        "error": a.report.error,
        "next_attempt_at": a.report.next_at.map(format_instant),
        "duration_ms": a.report.duration_ms,
    })
}

/// Attempts one page shows by default, and at most.
pub const DELIVERIES_PAGE_DEFAULT: usize = 100;
pub const DELIVERIES_PAGE_MAX: usize = 1_000;

/// A page of a subscription's deliveries after `after` (an index), with
/// its pending deliveries and the events its tenant's outbox dropped.
pub fn deliveries_view(app: &App, sub: Id, after: usize, limit: usize) -> Value {
    let (attempts, dropped) = app.engine.webhook_attempts(sub, after, limit);
    let next = (attempts.len() == limit).then(|| (after + limit).to_string());
    let pending: Vec<Value> = app
        .engine
        .webhook_pending(sub, DELIVERIES_PAGE_MAX)
        .into_iter()
        .map(|(e, d)| {
            json!({
                "event_id": crate::engine::webhook::event_id(e),
                "attempts": d.attempts,
                "next_attempt_at": format_instant(d.next_at),
            })
        })
        .collect();
    json!({
        "deliveries": attempts.iter().map(attempt_view).collect::<Vec<_>>(),
        "next_after": next,
        "pending": pending,
        "dropped_events": dropped,
    })
}
