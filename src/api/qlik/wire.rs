//! Qlik's answer shapes: the overview, status and settings documents, and
//! consumption records.

use serde_json::{json, Value};

use crate::engine::qlik::{
    ConsumptionRecord, QlikExtensionStatus, QlikKeyType, QlikOrigin, QlikStatus, QlikTenant,
};
use crate::engine::time::{format_instant, Millis};

pub(super) fn origin(o: QlikOrigin) -> &'static str {
    match o {
        QlikOrigin::Internal => "Internal",
        QlikOrigin::External => "External",
    }
}

pub(super) fn status_str(s: QlikStatus) -> &'static str {
    match s {
        QlikStatus::Ok => "Ok",
        QlikStatus::Blacklisted => "Blacklisted",
        QlikStatus::Expired => "Expired",
        QlikStatus::Missing => "Missing",
    }
}

pub(super) fn extension(e: QlikExtensionStatus) -> &'static str {
    match e {
        QlikExtensionStatus::Unavailable => "Unavailable",
        QlikExtensionStatus::Pending => "Pending",
        QlikExtensionStatus::Available => "Available",
    }
}

pub(super) fn key_type(k: QlikKeyType) -> &'static str {
    match k {
        QlikKeyType::Signed => "Signed",
        QlikKeyType::Plain => "Plain",
        QlikKeyType::V2 => "2.0",
    }
}

pub(super) fn overview(q: &QlikTenant, now: Millis) -> Value {
    let spec = q.spec.read().clone();
    let updated = format_instant(q.updated.load(std::sync::atomic::Ordering::Acquire));
    let allotments: Vec<Value> = spec
        .allotments
        .iter()
        .map(|a| {
            let mut v = json!({
                "name": a.name.as_str(),
                "units": a.units,
                "unitsUsed": q.units_used(a.name, now),
                "usageClass": a.name.usage_class(),
            });
            if a.overage != 0 {
                v["overage"] = a.overage.into();
            }
            v
        })
        .collect();
    let mut v = json!({
        "trial": spec.trial,
        "valid": spec.valid,
        "origin": origin(spec.origin),
        "status": status_str(q.status(now)),
        "product": spec.product,
        "updated": updated,
        "changeTime": updated,
        "allotments": allotments,
        "licenseKey": spec.license_key,
        "parameters": spec.parameters,
        "licenseNumber": spec.license_number,
        "secondaryNumber": spec.secondary_number,
    });
    let optional = [
        ("customerId", &spec.customer_id),
        ("licenseType", &spec.license_type),
        ("latestValidTime", &spec.latest_valid_time),
        ("capabilityBankId", &spec.capability_bank_id),
        ("parentLicenseNumber", &spec.parent_license_number),
    ];
    for (name, value) in optional {
        if let Some(s) = value {
            v[name] = s.as_str().into();
        }
    }
    v
}

pub(super) fn status(q: &QlikTenant, now: Millis) -> Value {
    let spec = q.spec.read().clone();
    json!({
        "type": key_type(spec.key_type),
        "trial": spec.trial,
        "valid": spec.valid,
        "origin": origin(spec.origin),
        "status": status_str(q.status(now)),
        "product": spec.product,
        "deactivated": spec.deactivated,
        "extensionStatus": extension(spec.extension_status),
    })
}

/// Status of a tenant that holds no license.
pub(super) fn missing_status() -> Value {
    json!({
        "type": "Signed",
        "trial": false,
        "valid": "",
        "origin": "Internal",
        "status": "Missing",
        "product": "",
        "deactivated": false,
        "extensionStatus": "Unavailable",
    })
}

pub(super) fn settings_json(q: &QlikTenant) -> Value {
    let s = q.settings();
    json!({
        "autoAssignAnalyzer": s.auto_assign_analyzer,
        "autoAssignProfessional": s.auto_assign_professional,
    })
}

/// ISO 8601 duration of `ms` (`PT1H2M3.5S`).
pub(super) fn iso_duration(ms: Millis) -> String {
    let ms = ms.max(0);
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || frac > 0 || (h == 0 && m == 0) {
        if frac > 0 {
            let f = format!("{frac:03}");
            out.push_str(&format!("{s}.{}S", f.trim_end_matches('0')));
        } else {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

pub(super) fn consumption_json(q: &QlikTenant, r: &ConsumptionRecord) -> Value {
    let allotment = format!("{}-analyzer_time", q.spec.read().license_number);
    json!({
        "id": r.id.to_string(),
        "appId": r.app_id,
        "userId": r.user_id,
        "endTime": format_instant(r.end_time),
        "duration": iso_duration(r.duration_ms),
        "sessionId": r.session_id,
        "allotmentId": allotment,
        "minutesUsed": r.minutes_used,
        "capacityUsed": r.capacity_used,
        "licenseUsage": if r.excess { "overage" } else { "capacity" },
    })
}
