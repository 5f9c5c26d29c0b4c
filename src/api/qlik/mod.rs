//! Qlik Cloud Licenses API (`/api/v1/licenses/...`) on the engine's Qlik
//! tenant licenses ([`crate::engine::qlik`]).
//!
//! Authentication: `Authorization: Bearer <api key>` of the tenant (the same
//! keys the admin API issues). Any key reads; the assignment actions and the
//! settings PUT need a key of role `admin`. Errors carry Qlik's body:
//! `{"errors": [{"code", "title", "detail"}], "error", "message"}`.
//!
//! Batch actions answer 207 with one result per input item, in input order;
//! each item is one engine command, committed on its own (atomic per item).

pub mod error;
pub mod page;
pub mod scim;

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::app::CommitError;
use crate::engine::model::{Id, Role};
use crate::engine::qlik::{
    AllotmentKind, Assignment, ConsumptionRecord, QlikExtensionStatus, QlikKeyType, QlikOrigin,
    QlikStatus, QlikTenant,
};
use crate::engine::time::{format_instant, Millis, MINUTE_MS};
use crate::engine::QlikRefusal;
use crate::engine::{Command, EngineError, Outcome};
use crate::http::{json_value, read_body, Query, Resp};
use error::QlikError;
use page::{Cursor, SortKey};
use scim::{Kind, Val};

/// Items in one add, delete or update batch.
pub const BATCH_ITEMS_MAX: usize = 100;
/// List pages: default and largest `limit`.
pub const LIST_LIMIT_DEFAULT: usize = 20;
pub const LIST_LIMIT_MAX: usize = 100;
/// The vendor's rate-limit tiers, requests per minute per tenant (emulated
/// with `--emulate-rate-limits`).
pub const TIER1_REQUESTS_PER_MINUTE: u32 = 1000;
pub const TIER2_REQUESTS_PER_MINUTE: u32 = 100;
/// Tenants tracked by the rate limiter; past it the oldest windows are dropped.
const RATE_WINDOWS_MAX: usize = 100_000;

const PREFIX: &str = "/api/v1/licenses";

/// Surface state: the emulated rate limits (no entitlement state lives here).
#[derive(Default)]
pub struct QlikState {
    /// Whether to enforce the vendor's tiers (`--emulate-rate-limits`).
    pub emulate_rate_limits: bool,
    /// (tenant, tier) -> (minute the window started, requests in it). One
    /// mutex: taken only when emulation is on, for a few nanoseconds.
    windows: Mutex<HashMap<(Id, u8), (Millis, u32)>>,
}

impl QlikState {
    pub fn new(emulate_rate_limits: bool) -> Self {
        QlikState {
            emulate_rate_limits,
            windows: Mutex::default(),
        }
    }

    /// Counts a request against its tier; Err(seconds to wait) past the limit.
    fn admit(&self, tenant: Id, tier: u8, now: Millis) -> Result<(), u64> {
        if !self.emulate_rate_limits {
            return Ok(());
        }
        let limit = if tier == 1 {
            TIER1_REQUESTS_PER_MINUTE
        } else {
            TIER2_REQUESTS_PER_MINUTE
        };
        let minute = now.div_euclid(MINUTE_MS) * MINUTE_MS;
        let mut w = self.windows.lock();
        if w.len() >= RATE_WINDOWS_MAX && !w.contains_key(&(tenant, tier)) {
            w.retain(|_, (start, _)| *start == minute);
        }
        let e = w.entry((tenant, tier)).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        if e.1 >= limit {
            let wait_ms = minute + MINUTE_MS - now;
            return Err((wait_ms as u64).div_ceil(1000).max(1));
        }
        e.1 += 1;
        Ok(())
    }
}

type R<T> = Result<T, QlikError>;

/// A request the server refused before reading it, in this surface's shape.
pub fn malformed(m: crate::http::Malformed) -> Resp {
    QlikError::bad_query(m.message()).response()
}

/// `state`: this surface's rate-limit windows, owned by the server.
pub async fn handle(app: &App, state: &QlikState, req: Request<Incoming>) -> Resp {
    match handle_inner(app, state, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

/// The caller: its tenant and whether its key may change things.
struct Caller {
    tenant_id: Id,
    admin: bool,
}

fn authenticate(app: &App, req: &Request<Incoming>) -> R<Caller> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| QlikError::unauthorized("Missing bearer token."))?;
    let key = app
        .engine
        .api_key(token)
        .filter(|k| !k.revoked.load(std::sync::atomic::Ordering::Acquire))
        .ok_or_else(|| QlikError::unauthorized("Invalid or revoked API key."))?;
    Ok(Caller {
        tenant_id: key.tenant_id,
        admin: key.role == Role::Admin,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Assignments,
    Add,
    Delete,
    Update,
    Consumption,
    Overview,
    Settings,
    Status,
}

async fn handle_inner(app: &App, state: &QlikState, req: Request<Incoming>) -> R<Resp> {
    let path = req.uri().path().trim_end_matches('/');
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let route = match rest {
        "/assignments" => Route::Assignments,
        "/assignments/actions/add" => Route::Add,
        "/assignments/actions/delete" => Route::Delete,
        "/assignments/actions/update" => Route::Update,
        "/consumption" => Route::Consumption,
        "/overview" => Route::Overview,
        "/settings" => Route::Settings,
        "/status" => Route::Status,
        _ => return Err(QlikError::not_found_endpoint()),
    };
    let method = req.method().clone();
    let allowed = match route {
        Route::Add | Route::Delete | Route::Update => method == Method::POST,
        Route::Settings => method == Method::GET || method == Method::PUT,
        _ => method == Method::GET,
    };
    if !allowed {
        return Err(QlikError::method_not_allowed());
    }
    let caller = authenticate(app, &req)?;
    let now = app.now();
    let writes = method != Method::GET;
    let tier = if writes { 2 } else { 1 };
    if let Err(wait) = state.admit(caller.tenant_id, tier, now) {
        let mut r = QlikError::rate_limited(tier).response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
        return Ok(r);
    }
    if writes && !caller.admin {
        return Err(QlikError::forbidden());
    }
    let host = crate::http::host_of(&req);
    let query_string = req.uri().query().map(str::to_string);
    let body = if writes {
        Some(
            match read_body(
                req,
                app.limits.request_body_bytes_max,
                app.limits.request_timeout,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => return Err(QlikError::body(e)),
            },
        )
    } else {
        None
    };
    let query = Query::parse(query_string.as_deref());
    let Some(q) = app.engine.qlik(caller.tenant_id) else {
        if route == Route::Status {
            return Ok(json_value(StatusCode::OK, &missing_status()));
        }
        return Err(QlikError::license_not_found());
    };
    let body = body.unwrap_or_default();
    match route {
        Route::Assignments => list_assignments(&q, &query, &host),
        Route::Consumption => list_consumption(&q, &query, &host),
        Route::Overview => Ok(json_value(StatusCode::OK, &overview(&q, now))),
        Route::Status => Ok(json_value(StatusCode::OK, &status(&q, now))),
        Route::Settings if method == Method::GET => {
            Ok(json_value(StatusCode::OK, &settings_json(&q)))
        }
        Route::Settings => put_settings(app, &q, &body).await,
        Route::Add => add(app, &q, &body, now).await,
        Route::Delete => delete(app, &q, &body).await,
        Route::Update => update(app, &q, &body, now).await,
    }
}

// ---------------------------------------------------------------- reads

fn origin(o: QlikOrigin) -> &'static str {
    match o {
        QlikOrigin::Internal => "Internal",
        QlikOrigin::External => "External",
    }
}

fn status_str(s: QlikStatus) -> &'static str {
    match s {
        QlikStatus::Ok => "Ok",
        QlikStatus::Blacklisted => "Blacklisted",
        QlikStatus::Expired => "Expired",
        QlikStatus::Missing => "Missing",
    }
}

fn extension(e: QlikExtensionStatus) -> &'static str {
    match e {
        QlikExtensionStatus::Unavailable => "Unavailable",
        QlikExtensionStatus::Pending => "Pending",
        QlikExtensionStatus::Available => "Available",
    }
}

fn key_type(k: QlikKeyType) -> &'static str {
    match k {
        QlikKeyType::Signed => "Signed",
        QlikKeyType::Plain => "Plain",
        QlikKeyType::V2 => "2.0",
    }
}

fn overview(q: &QlikTenant, now: Millis) -> Value {
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

fn status(q: &QlikTenant, now: Millis) -> Value {
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
fn missing_status() -> Value {
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

fn settings_json(q: &QlikTenant) -> Value {
    let s = q.settings();
    json!({
        "autoAssignAnalyzer": s.auto_assign_analyzer,
        "autoAssignProfessional": s.auto_assign_professional,
    })
}

/// `limit`: 1 to [`LIST_LIMIT_MAX`], default [`LIST_LIMIT_DEFAULT`].
fn limit_of(query: &Query<'_>) -> R<usize> {
    match query.get("limit") {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            _ => Err(QlikError::bad_query(format!(
                "limit must be an integer from 1 to {LIST_LIMIT_MAX}."
            ))),
        },
    }
}

const ASSIGNMENT_SCHEMA: &[(&str, Kind)] = &[
    ("subject", Kind::Str),
    ("type", Kind::Str),
    ("excess", Kind::Bool),
    ("created", Kind::Time),
];

fn assignment_vals(a: &Assignment) -> [Val<'_>; 4] {
    [
        Val::Str(&a.subject),
        Val::Str(a.kind.as_str()),
        Val::Bool(a.excess),
        Val::Time(a.created),
    ]
}

fn assignment_key(a: &Assignment, field: usize) -> SortKey {
    match field {
        0 => SortKey::Str(a.subject.clone()),
        1 => SortKey::Str(a.kind.as_str().into()),
        2 => SortKey::Bool(a.excess),
        _ => SortKey::Int(a.created),
    }
}

fn list_assignments(q: &QlikTenant, query: &Query<'_>, host: &str) -> R<Resp> {
    let limit = limit_of(query)?;
    let filter = match query.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(
            scim::parse(f, ASSIGNMENT_SCHEMA)
                .map_err(|e| QlikError::bad_query(format!("Invalid filter: {}.", e.0)))?,
        ),
        None => None,
    };
    let orphans = match query.get("orphans") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(QlikError::bad_query("orphans must be true or false.")),
    };
    let sort = page::Sort::parse(
        query.get("sort"),
        &["subject", "type", "excess", "created"],
        0,
    )
    .map_err(QlikError::bad_query)?;
    let cursor = Cursor::parse(query.get("page"), &sort).map_err(QlikError::bad_query)?;
    let users = q.users.read().clone();
    let mut items: Vec<(SortKey, String, Assignment)> = {
        let book = q.book.lock();
        book.assignments
            .values()
            .filter(|a| !orphans || !users.contains(&a.subject))
            .filter(|a| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&assignment_vals(a)))
            })
            .map(|a| (assignment_key(a, sort.field), a.subject.clone(), a.clone()))
            .collect()
    };
    let page = page::paginate(&mut items, &sort, cursor.as_ref(), limit);
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|(_, _, a)| {
            json!({
                "type": a.kind.as_str(),
                "excess": a.excess,
                "created": format_instant(a.created),
                "subject": a.subject,
            })
        })
        .collect();
    let links = page.links(host, &format!("{PREFIX}/assignments"), query, &sort, limit);
    Ok(json_value(
        StatusCode::OK,
        &json!({"data": data, "links": links}),
    ))
}

const CONSUMPTION_SCHEMA: &[(&str, Kind)] = &[("endTime", Kind::Time)];

fn consumption_key(r: &ConsumptionRecord, field: usize) -> SortKey {
    match field {
        0 => SortKey::Int(r.end_time),
        1 => SortKey::Int(r.minutes_used),
        2 => SortKey::Int(r.capacity_used),
        _ => SortKey::Int(r.id as i64),
    }
}

/// ISO 8601 duration of `ms` (`PT1H2M3.5S`).
pub fn iso_duration(ms: Millis) -> String {
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

pub fn consumption_json(q: &QlikTenant, r: &ConsumptionRecord) -> Value {
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

fn list_consumption(q: &QlikTenant, query: &Query<'_>, host: &str) -> R<Resp> {
    let limit = limit_of(query)?;
    let filter = match query.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(
            scim::parse(f, CONSUMPTION_SCHEMA)
                .map_err(|e| QlikError::bad_query(format!("Invalid filter: {}.", e.0)))?,
        ),
        None => None,
    };
    let sort = page::Sort::parse(
        query.get("sort"),
        &["endTime", "minutesUsed", "capacityUsed", "id"],
        0,
    )
    .map_err(QlikError::bad_query)?;
    let cursor = Cursor::parse(query.get("page"), &sort).map_err(QlikError::bad_query)?;
    let mut items: Vec<(SortKey, String, ConsumptionRecord)> = {
        let book = q.book.lock();
        book.consumption
            .iter()
            .filter(|r| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&[Val::Time(r.end_time)]))
            })
            .map(|r| {
                (
                    consumption_key(r, sort.field),
                    format!("{:020}", r.id),
                    r.clone(),
                )
            })
            .collect()
    };
    let page = page::paginate(&mut items, &sort, cursor.as_ref(), limit);
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|(_, _, r)| consumption_json(q, r))
        .collect();
    let links = page.links(host, &format!("{PREFIX}/consumption"), query, &sort, limit);
    Ok(json_value(
        StatusCode::OK,
        &json!({"data": data, "links": links}),
    ))
}

// ---------------------------------------------------------------- changes

fn parse_body(body: &Bytes) -> R<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(QlikError::bad_request("Body must be a JSON object.")),
        Err(e) => Err(QlikError::bad_request(format!(
            "Body is not valid JSON: {e}."
        ))),
    }
}

/// The body's batch array under `name`, within [`BATCH_ITEMS_MAX`].
fn batch(body: &Bytes, name: &str) -> R<Vec<Value>> {
    let mut m = parse_body(body)?;
    match m.remove(name) {
        Some(Value::Array(items)) if items.len() <= BATCH_ITEMS_MAX => Ok(items),
        Some(Value::Array(items)) => Err(QlikError::bad_request(format!(
            "{name} holds {} items; at most {BATCH_ITEMS_MAX} per request.",
            items.len()
        ))),
        Some(_) => Err(QlikError::bad_request(format!("{name} must be an array."))),
        None => Err(QlikError::bad_request(format!(
            "Body lacks the {name} array."
        ))),
    }
}

/// A string field of a batch item: Ok(None) when absent or null.
fn field<'a>(item: &'a Value, name: &str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ItemError::invalid(format!("{name} must be a string."))),
    }
}

fn kind_field(item: &Value, name: &str) -> Result<Option<AllotmentKind>, ItemError> {
    match field(item, name)? {
        None => Ok(None),
        Some(t) => AllotmentKind::parse(t)
            .map(Some)
            .ok_or(ItemError::unknown_type(t)),
    }
}

/// One item's refusal inside a 207.
struct ItemError {
    status: u16,
    code: &'static str,
    title: Cow<'static, str>,
}

impl ItemError {
    fn invalid(title: String) -> Self {
        ItemError {
            status: 400,
            code: error::INVALID_ITEM,
            title: title.into(),
        }
    }
    fn unknown_type(t: &str) -> Self {
        ItemError {
            status: 400,
            code: error::UNKNOWN_TYPE,
            title: format!("Unknown allotment type '{t}'.").into(),
        }
    }
}

impl From<CommitError> for ItemError {
    fn from(e: CommitError) -> Self {
        let (status, code, title) = match e {
            CommitError::Unavailable => (
                503,
                error::UNAVAILABLE,
                "Service unavailable, the change was not made.",
            ),
            CommitError::Engine(e) => match e {
                EngineError::Qlik(QlikRefusal::NoAvailableAllotment) => (
                    403,
                    error::NO_ALLOTMENT,
                    "No available allotment error, No available allotment.",
                ),
                EngineError::Qlik(QlikRefusal::AssignmentNotFound) => {
                    (404, error::ASSIGNMENT_NOT_FOUND, "Assignment not found.")
                }
                EngineError::Qlik(QlikRefusal::AlreadyAssigned) => (
                    409,
                    error::ALREADY_ASSIGNED,
                    "Subject already has an assignment.",
                ),
                EngineError::Qlik(QlikRefusal::NotAssignable) => (
                    400,
                    error::NOT_ASSIGNABLE,
                    "Allotment type cannot be assigned.",
                ),
                EngineError::TooMany(_) => (
                    403,
                    error::TOO_MANY_ASSIGNMENTS,
                    "Assignment limit of the tenant reached.",
                ),
                EngineError::Qlik(QlikRefusal::LicenseNotFound) => {
                    (404, error::LICENSE_NOT_FOUND, "License not found.")
                }
                EngineError::Invalid(..) => (400, error::INVALID_ITEM, "Invalid subject."),
                _ => (400, error::INVALID_ITEM, "Invalid assignment."),
            },
        };
        ItemError {
            status,
            code,
            title: title.into(),
        }
    }
}

/// Adds `code` and `title` to a result item.
fn failed(mut v: Value, e: ItemError) -> Value {
    v["status"] = e.status.into();
    v["code"] = e.code.into();
    v["title"] = e.title.into();
    v
}

fn multi_status(results: Vec<Value>) -> Resp {
    json_value(StatusCode::MULTI_STATUS, &json!({ "data": results }))
}

/// Echo of an item's string field into its result (when it is a string).
fn echo(v: &mut Value, item: &Value, from: &str, to: &str) {
    if let Some(Value::String(s)) = item.get(from) {
        v[to] = s.as_str().into();
    }
}

/// An add or delete item's `subject` and `type`, both required.
fn subject_and_type(item: &Value) -> Result<(&str, AllotmentKind), ItemError> {
    let kind =
        kind_field(item, "type")?.ok_or_else(|| ItemError::invalid("type is required.".into()))?;
    let subject =
        field(item, "subject")?.ok_or_else(|| ItemError::invalid("subject is required.".into()))?;
    Ok((subject, kind))
}

/// Add and delete: each item makes one command from its subject and type;
/// a success answers `ok_status`.
async fn simple_batch(
    app: &App,
    body: &Bytes,
    name: &str,
    ok_status: u16,
    command: impl for<'a> Fn(&'a str, AllotmentKind) -> Command<'a>,
) -> R<Resp> {
    let items = batch(body, name)?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let mut v = json!({});
        echo(&mut v, item, "type", "type");
        echo(&mut v, item, "subject", "subject");
        let r = match subject_and_type(item) {
            Ok((subject, kind)) => app
                .commit(&command(subject, kind))
                .await
                .map_err(ItemError::from),
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(_) => {
                v["status"] = ok_status.into();
                v
            }
            Err(e) => failed(v, e),
        });
    }
    Ok(multi_status(results))
}

async fn add(app: &App, q: &QlikTenant, body: &Bytes, now: Millis) -> R<Resp> {
    let tenant_id = q.tenant_id;
    simple_batch(app, body, "add", 201, |subject, kind| Command::QlikAssign {
        tenant_id,
        subject: Cow::Borrowed(subject),
        kind,
        now,
    })
    .await
}

async fn delete(app: &App, q: &QlikTenant, body: &Bytes) -> R<Resp> {
    let tenant_id = q.tenant_id;
    simple_batch(app, body, "delete", 200, |subject, kind| {
        Command::QlikUnassign {
            tenant_id,
            subject: Cow::Borrowed(subject),
            kind,
        }
    })
    .await
}

async fn update(app: &App, q: &QlikTenant, body: &Bytes, now: Millis) -> R<Resp> {
    let items = batch(body, "update")?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let mut v = json!({});
        echo(&mut v, item, "type", "type");
        echo(&mut v, item, "subject", "subject");
        echo(&mut v, item, "sourceType", "sourceType");
        echo(&mut v, item, "sourceSubject", "sourceSubject");
        let r = async {
            let subject = field(item, "subject")?
                .ok_or_else(|| ItemError::invalid("subject is required.".into()))?;
            let kind = kind_field(item, "type")?;
            let source_kind = kind_field(item, "sourceType")?;
            let source_subject = field(item, "sourceSubject")?.unwrap_or(subject);
            if kind.is_none() && source_subject == subject {
                return Err(ItemError::invalid(
                    "Nothing to update: give type or sourceSubject.".into(),
                ));
            }
            let cmd = Command::QlikUpdate {
                tenant_id: q.tenant_id,
                source_subject: Cow::Borrowed(source_subject),
                source_kind,
                subject: Cow::Borrowed(subject),
                kind,
                now,
            };
            let out = app.commit(&cmd).await.map_err(ItemError::from)?;
            Ok(matches!(out, Outcome::Assigned { created: true, .. }))
        }
        .await;
        results.push(match r {
            Ok(created) => {
                v["status"] = if created { 201 } else { 200 }.into();
                if v.get("type").is_none() {
                    if let Some(a) = q.book.lock().assignments.get(
                        item.get("subject")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ) {
                        v["type"] = a.kind.as_str().into();
                    }
                }
                v
            }
            Err(e) => failed(v, e),
        });
    }
    Ok(multi_status(results))
}

async fn put_settings(app: &App, q: &QlikTenant, body: &Bytes) -> R<Resp> {
    let m = parse_body(body)?;
    let flag = |name: &str| -> R<Option<bool>> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(QlikError::bad_request(format!("{name} must be a boolean."))),
        }
    };
    let cmd = Command::QlikSettings {
        tenant_id: q.tenant_id,
        auto_assign_professional: flag("autoAssignProfessional")?,
        auto_assign_analyzer: flag("autoAssignAnalyzer")?,
    };
    app.commit(&cmd).await.map_err(QlikError::from)?;
    Ok(json_value(StatusCode::OK, &settings_json(q)))
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// A filter, sort or page token, as each list reads it.
    pub fn query(data: &[u8]) {
        let s = String::from_utf8_lossy(data);
        let _ = scim::parse(&s, ASSIGNMENT_SCHEMA);
        let _ = scim::parse(&s, CONSUMPTION_SCHEMA);
        for fields in [
            &["subject", "type", "excess", "created"][..],
            &["endTime", "minutesUsed", "capacityUsed", "id"][..],
        ] {
            let _ = page::Sort::parse(Some(&s), fields, 0);
            if let Ok(sort) = page::Sort::parse(None, fields, 0) {
                let _ = Cursor::parse(Some(&s), &sort);
            }
        }
    }

    /// A batch body (add, delete, update) and a settings body.
    pub fn body(data: &[u8]) {
        let body = Bytes::copy_from_slice(data);
        let _ = parse_body(&body);
        for name in ["add", "delete", "update"] {
            if let Ok(items) = batch(&body, name) {
                for item in &items {
                    let _ = subject_and_type(item);
                    let _ = field(item, "subject");
                    let _ = kind_field(item, "type");
                }
            }
        }
    }
}
