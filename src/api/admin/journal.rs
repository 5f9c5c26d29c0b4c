//! The request journal (`tally serve --journal N`): `GET /admin/v1/journal`
//! (filters `surface`, `endpoint` (a route template, `*` at the end for a
//! start), `method`, `status`, `code`, `tenant_id`, `path_contains`,
//! `since`, `until`; the newest `limit`, oldest first), `POST
//! /admin/v1/journal/count` (the same matcher as JSON: `{"count": n}`) and
//! `DELETE /admin/v1/journal`. Without `--journal`: 409.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{object, AdminError, R};
use crate::app::App;
use crate::http::{json, json_value, Query, Resp};
use crate::journal::{Journal, Matcher};

/// Entries one read answers by default, and at most.
pub const JOURNAL_PAGE_DEFAULT: usize = 100;
pub const JOURNAL_PAGE_MAX: usize = 1_000;

fn journal(app: &App) -> R<&Journal> {
    app.journal.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::CONFLICT,
            "journal_off",
            "the request journal is off; start the server with --journal N",
        )
    })
}

fn matcher_of(q: &Query<'_>) -> R<Matcher> {
    let text = |n: &str| q.get(n).map(str::to_string);
    let number = |n: &'static str| -> R<Option<u64>> {
        q.get(n)
            .map(|v| {
                v.parse()
                    .map_err(|_| AdminError::bad(n, "must be a whole number"))
            })
            .transpose()
    };
    Ok(Matcher {
        surface: text("surface"),
        endpoint: text("endpoint"),
        method: text("method"),
        status: number("status")?
            .map(|s| u16::try_from(s).map_err(|_| AdminError::bad("status", "must be a status")))
            .transpose()?,
        code: text("code"),
        tenant_id: number("tenant_id")?,
        path_contains: text("path_contains"),
        since: text("since"),
        until: text("until"),
    })
}

pub(super) fn list(app: &App, q: &Query<'_>) -> R<Resp> {
    let j = journal(app)?;
    let m = matcher_of(q)?;
    let limit = match q.get("limit") {
        None => JOURNAL_PAGE_DEFAULT,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=JOURNAL_PAGE_MAX).contains(n))
            .ok_or_else(|| AdminError::bad("limit", "must be 1 to 1000"))?,
    };
    let items = j
        .find(&m, limit)
        .map_err(|f| AdminError::bad(f, "must be an RFC 3339 instant"))?;
    let items: Vec<Value> = items.iter().map(|e| json!(**e)).collect();
    Ok(json_value(
        StatusCode::OK,
        &json!({"items": items, "capacity": j.capacity()}),
    ))
}

pub(super) fn count(app: &App, body: Option<&[u8]>) -> R<Resp> {
    let j = journal(app)?;
    let m: Matcher = super::from_value(Value::Object(object(body)?))?;
    let n = j
        .count(&m)
        .map_err(|f| AdminError::bad(f, "must be an RFC 3339 instant"))?;
    Ok(json_value(StatusCode::OK, &json!({ "count": n })))
}

pub(super) fn clear(app: &App) -> R<Resp> {
    journal(app)?.clear();
    Ok(json(StatusCode::NO_CONTENT, ""))
}
