//! The native API's answer shapes, built from engine values. Instants are
//! RFC 3339 UTC strings with milliseconds; counts are integers; absent
//! limits are `null`.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::engine::model::{Feature, FeatureType, License};
use crate::engine::native::{MeterView, Reply, SeatsView};
use crate::engine::reserve::{Reservation, ReservationState};
use crate::engine::time::{format_instant, Millis, MINUTE_MS};

/// An instant, or null for "never" (`i64::MAX`) and "always" (`i64::MIN`).
pub fn instant(ms: Millis) -> Value {
    if ms == i64::MAX || ms == i64::MIN {
        Value::Null
    } else {
        format_instant(ms).into()
    }
}

pub fn meter(m: &MeterView) -> Value {
    json!({
        "used": m.used,
        "reserved": m.reserved,
        "remaining": m.remaining,
        "max": m.max,
        "max_overages": m.max_overages,
        "period_end": m.period_end.map(instant),
    })
}

/// A feature's entitlement as it stands at `now` (a typed shape: it is in
/// every check's answer, the hot path).
pub struct FeatureWire {
    code: crate::engine::model::Code,
    spec: std::sync::Arc<crate::engine::model::FeatureSpec>,
    expires_at: Millis,
    expired: bool,
    floating: Option<(u32, u32)>,
    usage: Option<(MeterView, u32)>,
}

impl serde::Serialize for FeatureWire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let spec = &self.spec;
        let mut m = s.serialize_struct("Feature", 7)?;
        m.serialize_field("code", &*self.code)?;
        m.serialize_field("name", &spec.name)?;
        m.serialize_field("type", spec.feature_type.as_str())?;
        m.serialize_field("expires_at", &instant_opt(self.expires_at))?;
        m.serialize_field("expired", &self.expired)?;
        m.serialize_field(
            "floating",
            &self.floating.map(|(in_use, capacity)| FloatingWire {
                in_use,
                capacity,
                timeout_ms: spec.floating_timeout.max(1) as i64 * MINUTE_MS,
            }),
        )?;
        m.serialize_field(
            "usage",
            &self.usage.map(|(m, open)| UsageWire {
                used: m.used,
                reserved: m.reserved,
                remaining: m.remaining,
                max: m.max,
                max_overages: m.max_overages,
                period_end: m.period_end.and_then(instant_opt),
                period: spec
                    .consumption_period
                    .filter(|_| spec.reset_consumption)
                    .map(|p| p.as_str()),
                reservations_open: open,
            }),
        )?;
        m.end()
    }
}

#[derive(serde::Serialize)]
struct FloatingWire {
    in_use: u32,
    capacity: u32,
    timeout_ms: i64,
}

#[derive(serde::Serialize)]
struct UsageWire {
    used: i64,
    reserved: i64,
    remaining: Option<i64>,
    max: i64,
    max_overages: i64,
    period_end: Option<String>,
    period: Option<&'static str>,
    reservations_open: u32,
}

/// An instant as RFC 3339, None for "never" and "always".
fn instant_opt(ms: Millis) -> Option<String> {
    (ms != i64::MAX && ms != i64::MIN).then(|| format_instant(ms))
}

pub fn feature(app: &App, f: &Feature, now: Millis) -> FeatureWire {
    let spec = f.spec.load().clone();
    let floating = spec
        .floating()
        .then(|| (f.floating.in_use(now), f.floating.capacity()));
    let usage = (spec.feature_type == FeatureType::Consumption).then(|| {
        (
            crate::engine::native::meter_view(&f.meter, now),
            app.engine.reservations_open(f.id),
        )
    });
    FeatureWire {
        code: f.code.clone(),
        expires_at: f.expires_at.load(std::sync::atomic::Ordering::Acquire),
        expired: app.engine.check_feature(f, now).is_err(),
        spec,
        floating,
        usage,
    }
}

/// A license's state: product, validity, activations and every feature.
pub fn license(app: &App, l: &License, now: Millis) -> Value {
    // One write's view: the spec and its usability mirror read together
    // under the spec's lock (the mirror is written under its write lock).
    let (spec, gate) = {
        let s = l.spec.read();
        (s.clone(), l.usability())
    };
    let product = app.engine.product(l.product_id);
    let user = spec
        .user_id
        .and_then(|u| app.engine.user(u))
        .map(|u| u.spec.read().email.clone());
    let usable = app.engine.check_usability(&gate, now);
    let features: Vec<Value> = l
        .features
        .read()
        .iter()
        .map(|f| serde_json::to_value(feature(app, f, now)).unwrap_or_default())
        .collect();
    json!({
        "id": l.id,
        "license_key": l.license_key.as_deref(),
        "product": product.map(|p| json!({"code": &*p.short_code, "name": p.spec.read().name.clone()})),
        "user": user,
        "type": spec.license_type.as_str(),
        "enabled": spec.enabled,
        "active": spec.active,
        "usable": usable.is_ok(),
        "refusal": usable.err().map(|e| super::error::refusal(e).1),
        "starts_at": instant(gate.starts_at),
        "valid_until": instant(gate.valid_until(&spec)),
        "usable_until": instant(gate.usable_until),
        "is_trial": spec.is_trial,
        "activations": {
            "used": l.activations.used(),
            "max": spec.max_activations,
            "unlimited": spec.allow_unlimited_activations,
        },
        "features": features,
    })
}

/// A reservation in `state` (its stored state in a change's answer, what a
/// reader sees at `now` in a read) with its pool: a feature's meter, or
/// the license's activation seats.
pub fn reservation(
    app: &App,
    r: &Reservation,
    meter: Option<&MeterView>,
    seats: Option<&SeatsView>,
    state: ReservationState,
) -> Value {
    let license = app.engine.license(r.license_id);
    let feature = r.feature_id.and_then(|fid| {
        license.as_ref().and_then(|l| {
            l.features
                .read()
                .iter()
                .find(|f| f.id == fid)
                .map(|f| f.code.to_string())
        })
    });
    json!({
        "id": r.id,
        "kind": if r.feature_id.is_some() { "units" } else { "seat" },
        "license_key": license.and_then(|l| l.license_key.as_deref().map(str::to_string)),
        "license_id": r.license_id,
        "feature": feature,
        "units": r.units,
        "state": state.as_str(),
        "committed_units": match state {
            ReservationState::Committed { units, .. } => Some(units),
            _ => None,
        },
        "hardware_id": r.hardware_id,
        "created_at": instant(r.created_at),
        "expires_at": instant(r.expires_at),
        "finished_at": state.finished_at().map(instant),
        "usage": meter.map(self::meter),
        "seats": seats.map(|s| json!({"used": s.used, "max": s.max, "unlimited": s.unlimited})),
    })
}

/// The status and body that answer a change with `reply` (a function of the
/// reply alone, so that an idempotent replay answers exactly the same).
pub fn reply(app: &App, reply: &Reply) -> (StatusCode, Value) {
    match reply {
        Reply::Usage { meter: m } => (StatusCode::OK, meter(m)),
        Reply::Reservation {
            reservation: r,
            meter,
            seats,
        } => {
            // Only a reservation just made is pending in a change's reply.
            let status = if r.state == ReservationState::Pending {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = reservation(app, r, meter.as_ref(), seats.as_ref(), r.state);
            (status, body)
        }
        Reply::Seat {
            holder,
            taken,
            since,
            expires_at,
            borrowed_until,
            in_use,
            capacity,
        } => (
            if *taken {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            json!({
                "holder": holder,
                "taken": taken,
                "since": instant(*since),
                "expires_at": instant(*expires_at),
                "borrowed_until": borrowed_until.map(instant),
                "in_use": in_use,
                "capacity": capacity,
            }),
        ),
        Reply::SeatReleased {
            holder,
            held,
            in_use,
            capacity,
        } => (
            StatusCode::OK,
            json!({"holder": holder, "released": held, "in_use": in_use, "capacity": capacity}),
        ),
        Reply::Device {
            hardware_id,
            device_id,
            new,
            transfer,
        } => (
            if *new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            json!({
                "hardware_id": hardware_id,
                "device_id": device_id,
                "active": true,
                "new": new,
                "transfer": transfer,
            }),
        ),
        Reply::Deactivated { hardware_id } => (
            StatusCode::OK,
            json!({"hardware_id": hardware_id, "active": false}),
        ),
        Reply::Batch { replies } => (
            StatusCode::OK,
            json!({
                "atomic": true,
                "results": replies
                    .iter()
                    .map(|r| {
                        let (s, body) = self::reply(app, r);
                        json!({"status": s.as_u16(), "body": body})
                    })
                    .collect::<Vec<_>>(),
            }),
        ),
        Reply::Done => (StatusCode::OK, json!({})),
    }
}
