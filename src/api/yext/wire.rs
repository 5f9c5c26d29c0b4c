//! Yext's wire shapes: the answer envelope, `LicensePack`,
//! `LicenseAssignment` and `AssignedEntity`, and the opaque page tokens.

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::error::{YextError, INVALID_PAGE, R};
use crate::engine::time::Millis;
use crate::engine::yext::{PackView, YextAccount, YextAssignment};
use crate::http::{json_value, Query, Resp};

/// Longest page token accepted, bytes.
const PAGE_TOKEN_BYTES_MAX: usize = 1024;

/// A successful answer: `response` in Yext's envelope with no errors.
pub(super) fn ok(response: Value) -> Resp {
    json_value(
        StatusCode::OK,
        &json!({"meta": {"uuid": crate::util::random_uuid(), "errors": []}, "response": response}),
    )
}

pub(super) fn token<T: serde::Serialize>(v: &T) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(v).unwrap_or_default())
}

pub(super) fn untoken<T: serde::de::DeserializeOwned>(query: &Query<'_>) -> R<Option<T>> {
    let Some(t) = query.get("pageToken").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    decode_token(t).map(Some)
}

pub(super) fn decode_token<T: serde::de::DeserializeOwned>(t: &str) -> R<T> {
    let bad = || YextError::bad(INVALID_PAGE, "Invalid pageToken.");
    if t.len() > PAGE_TOKEN_BYTES_MAX {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// `LicensePack`.
pub(super) fn pack_json(p: &PackView) -> Value {
    json!({"id": p.id, "name": p.name, "total": p.total, "assigned": p.assigned,
           "available": p.total.saturating_sub(p.assigned), "notes": p.notes})
}

/// `AssignedEntity`: `expirationDate` only when a removal is scheduled (the
/// Go client's `omitempty`).
fn assigned_entity(a: &YextAssignment) -> Value {
    let mut v = json!({"entityId": a.entity});
    if let Some((day, _)) = &a.expiration {
        v["expirationDate"] = day.as_str().into();
    }
    v
}

/// `LicenseAssignment`s: `assignments` (in pack order) grouped by pack, each
/// with its pack as it stands at `now`; `always` is listed even when none of
/// the assignments is its.
pub(super) fn license_assignments(
    acc: &YextAccount,
    assignments: &[YextAssignment],
    always: Option<&str>,
    now: Millis,
) -> Vec<Value> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    if let Some(p) = always {
        out.push((p.to_string(), Vec::new()));
    }
    for a in assignments {
        match out.iter_mut().find(|(p, _)| *p == a.pack) {
            Some((_, list)) => list.push(assigned_entity(a)),
            None => out.push((a.pack.clone(), vec![assigned_entity(a)])),
        }
    }
    out.into_iter()
        .filter_map(|(pack, entities)| {
            let view = acc.pack(&pack, now)?;
            Some(json!({"licensePack": pack_json(&view), "assignedEntities": entities}))
        })
        .collect()
}

/// The `LicenseAssignment` of one entity after a change: its pack and the
/// entity's assignment.
pub(super) fn current(acc: &YextAccount, pack: &str, entity: &str, now: Millis) -> Value {
    let (items, _) = acc.assignments(Some(pack), Some(entity), None, 1, now);
    license_assignments(acc, &items, Some(pack), now)
        .into_iter()
        .next()
        .unwrap_or_else(|| json!({}))
}
