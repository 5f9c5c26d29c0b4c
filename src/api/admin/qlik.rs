//! Native Qlik endpoints of the admin API: provisioning a tenant's Qlik
//! license, reporting analyzer sessions and the access check with auto-assign.
//!
//! - `GET|PUT|DELETE /admin/v1/tenants/{id}/qlik`
//! - `POST /admin/v1/tenants/{id}/qlik/sessions`: `{user_id, app_id?,
//!   session_id?, end_time?, start_time? | minutes}`; debits analyzer_time in
//!   6-minute chunks and keeps the record (201), or 403 when the month's
//!   capacity and overage are spent.
//! - `POST /admin/v1/tenants/{id}/qlik/access`: `{subject}`; 200 with how the
//!   subject got in (its assignment, a seat auto-assigned now, or analyzer
//!   capacity), else 403.

use std::borrow::Cow;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::{apply, existing_tenant, from_value, object, R};
use crate::app::App;
use crate::engine::model::Id;
use crate::engine::qlik::{chunks_of, AccessVia, ConsumptionRecord, QlikSpec, QlikTenant};
use crate::engine::time::{format_instant, parse_instant, Millis, MINUTE_MS};
use crate::engine::QlikRefusal;
use crate::engine::{Command, EngineError, Outcome};
use crate::http::{json, json_value, Resp};

/// Longest analyzer session one report may carry, minutes (31 days).
pub const SESSION_MINUTES_MAX: i64 = 31 * 24 * 60;

fn qlik_of(app: &App, id: Id) -> R<std::sync::Arc<QlikTenant>> {
    app.engine
        .qlik(id)
        .ok_or_else(|| AdminError::not_found("qlik license"))
}

pub fn render(q: &QlikTenant, now: Millis) -> Value {
    let spec = q.spec.read().clone();
    let allotments: Vec<Value> = spec
        .allotments
        .iter()
        .map(|a| {
            json!({"name": a.name.as_str(), "units": a.units, "overage": a.overage,
                   "units_used": q.units_used(a.name, now)})
        })
        .collect();
    let s = q.settings();
    let book = {
        let b = q.book.lock();
        (b.assignments.len(), b.consumption.len())
    };
    json!({
        "tenant_id": q.tenant_id,
        "spec": *spec,
        "status": format!("{:?}", q.status(now)),
        "updated": format_instant(q.updated.load(std::sync::atomic::Ordering::Acquire)),
        "allotments": allotments,
        "settings": {"autoAssignProfessional": s.auto_assign_professional,
                     "autoAssignAnalyzer": s.auto_assign_analyzer},
        "assignments": book.0,
        "consumption_records": book.1,
    })
}

pub async fn route(app: &App, m: &Method, id: &str, rest: &[&str], body: Option<&[u8]>) -> R<Resp> {
    let tid = existing_tenant(app, id)?;
    let now = app.now();
    match rest {
        [] if m == Method::GET => Ok(json_value(
            StatusCode::OK,
            &render(&*qlik_of(app, tid)?, now),
        )),
        [] if m == Method::PUT => {
            let spec: QlikSpec = from_value(Value::Object(object(body)?))?;
            let created = app.engine.qlik(tid).is_none();
            apply(
                app,
                Command::PutQlik {
                    tenant_id: tid,
                    spec,
                    now,
                },
            )
            .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_value(status, &render(&*qlik_of(app, tid)?, now)))
        }
        [] if m == Method::DELETE => {
            apply(app, Command::DeleteQlik { tenant_id: tid }).await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        ["sessions"] if m == Method::POST => session(app, tid, body, now).await,
        ["access"] if m == Method::POST => access(app, tid, body, now).await,
        _ => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "no route for {m} /admin/v1/tenants/{id}/qlik/{}",
                rest.join("/")
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionIn {
    user_id: String,
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    minutes: Option<i64>,
}

fn instant(field: &'static str, s: &Option<String>) -> R<Option<Millis>> {
    match s {
        None => Ok(None),
        Some(v) => parse_instant(v)
            .map(Some)
            .ok_or_else(|| AdminError::bad(field, "must be an ISO 8601 date-time")),
    }
}

fn refused(e: crate::app::CommitError) -> AdminError {
    use crate::app::CommitError;
    match e {
        CommitError::Engine(EngineError::Qlik(QlikRefusal::AnalyzerTimeExhausted)) => {
            AdminError::new(
                StatusCode::FORBIDDEN,
                "analyzer_time_exhausted",
                "this month's analyzer capacity (with its overage) is spent",
            )
        }
        CommitError::Engine(EngineError::Qlik(QlikRefusal::NoAvailableAllotment)) => {
            AdminError::new(
                StatusCode::FORBIDDEN,
                "no_available_allotment",
                "no seat or capacity is available to this subject",
            )
        }
        CommitError::Engine(EngineError::LicenseNotActive) => AdminError::new(
            StatusCode::FORBIDDEN,
            "license_not_active",
            "the tenant's license is not Ok (expired, blacklisted, missing or deactivated)",
        ),
        other => AdminError::from(other),
    }
}

async fn session(app: &App, tid: Id, body: Option<&[u8]>, now: Millis) -> R<Resp> {
    let q = qlik_of(app, tid)?;
    let s: SessionIn = from_value(Value::Object(object(body)?))?;
    if s.user_id.is_empty() || s.user_id.len() > crate::engine::qlik::QLIK_TEXT_BYTES_MAX {
        return Err(AdminError::bad("user_id", "must be 1 to 256 bytes"));
    }
    for (f, v) in [("app_id", &s.app_id), ("session_id", &s.session_id)] {
        if v.len() > crate::engine::qlik::QLIK_TEXT_BYTES_MAX {
            return Err(AdminError::bad(f, "too long"));
        }
    }
    let end = instant("end_time", &s.end_time)?.unwrap_or(now);
    let start = instant("start_time", &s.start_time)?;
    let duration_ms = match (start, s.minutes) {
        (Some(_), Some(_)) => {
            return Err(AdminError::bad(
                "minutes",
                "give start_time or minutes, not both",
            ))
        }
        (Some(st), None) if st <= end => end - st,
        (Some(_), None) => return Err(AdminError::bad("start_time", "must not be after end_time")),
        (None, Some(m)) if (0..=SESSION_MINUTES_MAX).contains(&m) => m * MINUTE_MS,
        (None, Some(_)) => {
            return Err(AdminError::bad(
                "minutes",
                format!("must be 0 to {SESSION_MINUTES_MAX}"),
            ))
        }
        (None, None) => return Err(AdminError::bad("minutes", "give start_time or minutes")),
    };
    if duration_ms > SESSION_MINUTES_MAX * MINUTE_MS {
        return Err(AdminError::bad("start_time", "session longer than 31 days"));
    }
    let minutes = (duration_ms + MINUTE_MS - 1) / MINUTE_MS;
    let (chunks, debit) = chunks_of(minutes);
    let record = ConsumptionRecord {
        id: app.engine.next_id(),
        app_id: s.app_id,
        user_id: s.user_id,
        session_id: s.session_id,
        end_time: end,
        duration_ms,
        minutes_used: debit,
        capacity_used: chunks,
        excess: false,
    };
    let cmd = Command::QlikConsume {
        tenant_id: tid,
        record: record.clone(),
        now,
    };
    let out = app.commit(&cmd).await.map_err(refused)?;
    let (total, excess) = match out {
        Outcome::Consumed { total, excess } => (total, excess),
        _ => (
            q.units_used(crate::engine::qlik::AllotmentKind::AnalyzerTime, now),
            false,
        ),
    };
    Ok(json_value(
        StatusCode::CREATED,
        &json!({
            "id": record.id.to_string(),
            "user_id": record.user_id,
            "app_id": record.app_id,
            "session_id": record.session_id,
            "end_time": format_instant(record.end_time),
            "duration_ms": record.duration_ms,
            "minutes_used": record.minutes_used,
            "capacity_used": record.capacity_used,
            "excess": excess,
            "analyzer_time_used": total,
        }),
    ))
}

async fn access(app: &App, tid: Id, body: Option<&[u8]>, now: Millis) -> R<Resp> {
    qlik_of(app, tid)?;
    let mut m = object(body)?;
    let subject = match m.remove("subject") {
        Some(Value::String(s)) => s,
        _ => return Err(AdminError::bad("subject", "a string is required")),
    };
    if let Some(k) = m.keys().next() {
        return Err(AdminError::bad(k.as_str(), "unknown field"));
    }
    let cmd = Command::QlikAccess {
        tenant_id: tid,
        subject: Cow::Borrowed(&subject),
        now,
    };
    let out = app.commit(&cmd).await.map_err(refused)?;
    let v = match out {
        Outcome::Access(AccessVia::Assigned(k)) => {
            json!({"allowed": true, "via": "assignment", "type": k.as_str()})
        }
        Outcome::Access(AccessVia::AutoAssigned(k, excess)) => {
            json!({"allowed": true, "via": "auto_assigned", "type": k.as_str(), "excess": excess})
        }
        Outcome::Access(AccessVia::AnalyzerTime) => {
            json!({"allowed": true, "via": "analyzer_time", "type": "analyzer_time"})
        }
        _ => json!({"allowed": true}),
    };
    Ok(json_value(
        StatusCode::OK,
        &json!({"subject": subject, "access": v}),
    ))
}
