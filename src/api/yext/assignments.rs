//! License assignments: `GET .../licensepacks/{pack}/assignments` lists
//! them (`-` for every pack), and `POST`, `DELETE` and `PUT` on
//! `.../assignments/{entity}` assign, unassign and schedule a removal.

use std::borrow::Cow;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::error::{YextError, INVALID_PAGE, INVALID_REQUEST, PACK_NOT_FOUND, R};
use super::page_size;
use super::wire::{current, license_assignments, ok, token, untoken};
use crate::app::App;
use crate::engine::time::{format_date, Millis};
use crate::engine::yext::YextAccount;
use crate::engine::Command;
use crate::http::{read_body, Query, Resp};

/// One page of a pack's assignments (or every pack's, for `-`), optionally
/// of one `assignedEntity`.
pub(super) fn list(acc: &YextAccount, query: &Query<'_>, pack: String, now: Millis) -> R<Resp> {
    let size = page_size(query)?;
    let entity = query.get("assignedEntity").filter(|e| !e.is_empty());
    // A token names the list it was made for and its last item.
    let list = (pack.clone(), entity.unwrap_or_default().to_string());
    let after = match untoken::<((String, String), (String, String))>(query)? {
        Some((l, last)) if l == list => Some(last),
        Some(_) => {
            return Err(YextError::bad(
                INVALID_PAGE,
                "This pageToken belongs to another list.",
            ))
        }
        None => None,
    };
    let pack = (pack != "-").then_some(pack);
    if let Some(p) = &pack {
        if !acc.has_pack(p) {
            return Err(YextError::new(
                StatusCode::NOT_FOUND,
                PACK_NOT_FOUND,
                "License pack not found.",
            ));
        }
    }
    let (items, more) = acc.assignments(pack.as_deref(), entity, after.as_ref(), size, now);
    let mut response = json!({
        "licenseAssignments": license_assignments(acc, &items, pack.as_deref(), now),
    });
    if more {
        if let Some(last) = items.last() {
            response["nextPageToken"] =
                token(&(&list, (last.pack.clone(), last.entity.clone()))).into();
        }
    }
    Ok(ok(response))
}

/// `POST`: the entity takes a license of the pack.
pub(super) async fn assign(
    app: &App,
    acc: &YextAccount,
    pack: &str,
    entity: &str,
    now: Millis,
) -> R<Resp> {
    let cmd = Command::YextAssign {
        tenant_id: acc.tenant_id,
        pack: Cow::Borrowed(pack),
        entity: Cow::Borrowed(entity),
        now,
    };
    app.commit(&cmd).await?;
    Ok(ok(current(acc, pack, entity, now)))
}

/// `DELETE`: the entity gives its license back; Yext answers `{}`.
pub(super) async fn unassign(
    app: &App,
    acc: &YextAccount,
    pack: &str,
    entity: &str,
    now: Millis,
) -> R<Resp> {
    let cmd = Command::YextUnassign {
        tenant_id: acc.tenant_id,
        pack: Cow::Borrowed(pack),
        entity: Cow::Borrowed(entity),
        now,
    };
    app.commit(&cmd).await?;
    Ok(ok(json!({})))
}

/// `PUT`: schedule (or cancel, with `null`) the assignment's removal.
pub(super) async fn schedule(
    app: &App,
    req: Request<Incoming>,
    acc: &YextAccount,
    pack: &str,
    entity: &str,
    now: Millis,
) -> R<Resp> {
    let body = read_body(
        req,
        app.limits.request_body_bytes_max,
        app.limits.request_timeout,
    )
    .await
    .map_err(|e| {
        let (status, message) = e.status_and_message();
        YextError::new(status, INVALID_REQUEST, message)
    })?;
    let expiration = expiration_of(&body, entity, now)?;
    let cmd = Command::YextSchedule {
        tenant_id: acc.tenant_id,
        pack: Cow::Borrowed(pack),
        entity: Cow::Borrowed(entity),
        expiration,
        now,
    };
    app.commit(&cmd).await?;
    Ok(ok(current(acc, pack, entity, now)))
}

/// `{"expirationDate": "YYYY-MM-DD" | null}` (empty body or omitted: None).
/// `entityId`, which Yext's Go client sends along, must name the path's entity.
pub(super) fn expiration_of(body: &[u8], entity: &str, now: Millis) -> R<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| YextError::bad(INVALID_REQUEST, format!("Body is not valid JSON: {e}.")))?;
    let Value::Object(m) = v else {
        return Err(YextError::bad(
            INVALID_REQUEST,
            "Body must be a JSON object.",
        ));
    };
    if let Some(k) = m
        .keys()
        .find(|k| *k != "expirationDate" && *k != "entityId")
    {
        return Err(YextError::bad(
            INVALID_REQUEST,
            format!("Unknown field '{k}'."),
        ));
    }
    if m.get("entityId")
        .is_some_and(|e| e.as_str() != Some(entity))
    {
        return Err(YextError::bad(
            INVALID_REQUEST,
            "entityId in the body must be the entity of the path.",
        ));
    }
    match m.get("expirationDate") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(d)) => {
            // Canonical only: the day as written must be the day it parses to.
            let valid = d.len() == 10
                && crate::engine::time::parse_instant(d).is_some_and(|t| format_date(t) == *d);
            if !valid {
                return Err(YextError::bad(
                    INVALID_REQUEST,
                    format!("expirationDate '{d}' is not a date YYYY-MM-DD."),
                ));
            }
            if d.as_str() <= format_date(now).as_str() {
                return Err(YextError::bad(
                    INVALID_REQUEST,
                    format!("expirationDate must be after today ({}).", format_date(now)),
                ));
            }
            Ok(Some(d.clone()))
        }
        Some(_) => Err(YextError::bad(
            INVALID_REQUEST,
            "expirationDate must be a string YYYY-MM-DD or null.",
        )),
    }
}
