//! Yext License Packs and License Assignments (`/v2/accounts/{accountId}/
//! licensepacks/...`) on the engine's Yext accounts ([`crate::engine::yext`]).
//!
//! Every request carries `v` (a `YYYYMMDD` date) and an API key (the
//! `api_key` query parameter or the `api-key` header, Yext's two security
//! schemes: a key of the account's tenant; `me` as the account id means the
//! key's own account). Answers are Yext's envelope: `{"meta": {"uuid",
//! "errors": [{"name", "code", "type", "message"}]}, "response": {...}}`, with
//! the shapes of Yext's OpenAPI description and its Go client (`yext-go`):
//! packs as `{id, name, total, assigned, available, notes}`, assignments
//! grouped by pack as `{licensePack, assignedEntities: [{entityId,
//! expirationDate?}]}`. Both path spellings are accepted: the OpenAPI
//! description's `license-packs/{id}/assigned-entities` and `licensepacks/{id}/
//! assignments`.

use std::borrow::Cow;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::app::App;
use crate::app::CommitError;
use crate::engine::time::{format_date, Millis};
use crate::engine::yext::{PackView, YextAccount, YextAssignment};
use crate::engine::{Command, EngineError};
use crate::engine::{QlikRefusal, YextRefusal};
use crate::http::{json_value, percent_decode_segment, read_body, Query, Resp};

/// List pages: default and largest `pageSize`.
pub const PAGE_SIZE_DEFAULT: usize = 10;
pub const PAGE_SIZE_MAX: usize = 50;
/// Longest page token accepted, bytes.
const PAGE_TOKEN_BYTES_MAX: usize = 1024;

/// A Yext error: HTTP status, code and message (type is always FATAL_ERROR).
#[derive(Debug)]
pub struct YextError {
    status: StatusCode,
    code: u32,
    message: String,
}

/// The `name` of an error entry: Yext's schema has the field but documents
/// no values, so Tally names its own codes.
fn error_name(code: u32) -> &'static str {
    match code {
        INVALID_VERSION => "INVALID_VERSION",
        UNAUTHORIZED => "UNAUTHORIZED",
        FORBIDDEN => "FORBIDDEN",
        PACK_NOT_FOUND => "LICENSE_PACK_NOT_FOUND",
        ASSIGNMENT_NOT_FOUND => "LICENSE_ASSIGNMENT_NOT_FOUND",
        NO_LICENSES_LEFT => "NO_LICENSES_AVAILABLE",
        INVALID_REQUEST => "INVALID_REQUEST",
        INVALID_PAGE => "INVALID_PAGE",
        NOT_FOUND => "NOT_FOUND",
        METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        UNAVAILABLE => "UNAVAILABLE",
        TOO_MANY => "LIMIT_REACHED",
        _ => "ERROR",
    }
}

// Error codes (Tally's; docs/yext.md lists them).
const INVALID_VERSION: u32 = 2001;
const UNAUTHORIZED: u32 = 2002;
const FORBIDDEN: u32 = 2003;
const PACK_NOT_FOUND: u32 = 2004;
const ASSIGNMENT_NOT_FOUND: u32 = 2005;
const NO_LICENSES_LEFT: u32 = 2006;
const INVALID_REQUEST: u32 = 2007;
const INVALID_PAGE: u32 = 2008;
const NOT_FOUND: u32 = 2009;
const METHOD_NOT_ALLOWED: u32 = 2010;
const UNAVAILABLE: u32 = 2011;
const TOO_MANY: u32 = 2012;

impl YextError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        YextError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn response(self) -> Resp {
        json_value(
            self.status,
            &json!({
                "meta": {"uuid": crate::util::random_uuid(), "errors": [
                    {"name": error_name(self.code), "code": self.code, "type": "FATAL_ERROR",
                     "message": self.message}
                ]},
                "response": {},
            }),
        )
    }
}

impl From<CommitError> for YextError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Unavailable => YextError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "Changes cannot be stored right now; the change was not made.",
            ),
            CommitError::Engine(e) => match e {
                EngineError::Yext(YextRefusal::PackNotFound) => YextError::new(
                    StatusCode::NOT_FOUND,
                    PACK_NOT_FOUND,
                    "License pack not found.",
                ),
                EngineError::Qlik(QlikRefusal::AssignmentNotFound) => YextError::new(
                    StatusCode::NOT_FOUND,
                    ASSIGNMENT_NOT_FOUND,
                    "The entity holds no license of this pack.",
                ),
                EngineError::Yext(YextRefusal::NoLicensesLeft) => YextError::new(
                    StatusCode::CONFLICT,
                    NO_LICENSES_LEFT,
                    "No licenses of this pack are left to assign.",
                ),
                EngineError::TooMany(what) => YextError::new(
                    StatusCode::CONFLICT,
                    TOO_MANY,
                    format!("The account's {what} limit is reached."),
                ),
                EngineError::Invalid(field, why) => {
                    YextError::bad(INVALID_REQUEST, format!("{field}: {why}."))
                }
                EngineError::Yext(YextRefusal::AccountNotFound) => {
                    YextError::new(StatusCode::NOT_FOUND, NOT_FOUND, "Account not found.")
                }
                other => YextError::bad(INVALID_REQUEST, other.to_string()),
            },
        }
    }
}

type R<T> = Result<T, YextError>;

fn ok(response: Value) -> Resp {
    json_value(
        StatusCode::OK,
        &json!({"meta": {"uuid": crate::util::random_uuid(), "errors": []}, "response": response}),
    )
}

/// A request the server refused before reading it, in this surface's shape.
pub fn malformed(m: crate::http::Malformed) -> Resp {
    YextError::bad(INVALID_REQUEST, m.message()).response()
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    match handle_inner(app, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

/// `v`: a real date written `YYYYMMDD`.
fn check_version(v: Option<&str>) -> R<()> {
    let v = v.ok_or_else(|| {
        YextError::bad(INVALID_VERSION, "The v parameter (YYYYMMDD) is required.")
    })?;
    let valid = v.len() == 8
        && v.bytes().all(|b| b.is_ascii_digit())
        && crate::engine::time::parse_instant(&format!("{}-{}-{}", &v[0..4], &v[4..6], &v[6..8]))
            .is_some();
    if valid {
        Ok(())
    } else {
        Err(YextError::bad(
            INVALID_VERSION,
            format!("Invalid v parameter '{v}': expected a date YYYYMMDD."),
        ))
    }
}

/// The account the key may act on, after checking the path's account id.
/// The key comes in the `api_key` parameter or, failing that, the `api-key`
/// header.
fn account(
    app: &App,
    query: &Query<'_>,
    header_key: Option<&str>,
    account_id: &str,
) -> R<std::sync::Arc<YextAccount>> {
    let key = query
        .get("api_key")
        .filter(|k| !k.is_empty())
        .or(header_key.filter(|k| !k.is_empty()))
        .ok_or_else(|| {
            YextError::new(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "An API key is required: the api_key parameter or the api-key header.",
            )
        })?;
    let key = app
        .engine
        .api_key(key)
        .filter(|k| !k.revoked.load(std::sync::atomic::Ordering::Acquire))
        .ok_or_else(|| {
            YextError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, "Invalid api_key.")
        })?;
    let acc = app.engine.yext(key.tenant_id).ok_or_else(|| {
        YextError::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            "This key belongs to no Yext account.",
        )
    })?;
    if account_id != "me" && acc.spec.read().account_id != account_id {
        return Err(YextError::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            format!("This key may not act on account {account_id}."),
        ));
    }
    Ok(acc)
}

fn page_size(query: &Query<'_>) -> R<usize> {
    match query.get("pageSize") {
        None => Ok(PAGE_SIZE_DEFAULT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=PAGE_SIZE_MAX).contains(&n) => Ok(n),
            _ => Err(YextError::bad(
                INVALID_PAGE,
                format!("pageSize must be 1 to {PAGE_SIZE_MAX}."),
            )),
        },
    }
}

fn token<T: serde::Serialize>(v: &T) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(v).unwrap_or_default())
}

fn untoken<T: serde::de::DeserializeOwned>(query: &Query<'_>) -> R<Option<T>> {
    let Some(t) = query.get("pageToken").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    decode_token(t).map(Some)
}

fn decode_token<T: serde::de::DeserializeOwned>(t: &str) -> R<T> {
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
fn pack_json(p: &PackView) -> Value {
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
fn license_assignments(
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

#[allow(
    clippy::too_many_lines,
    reason = "the Yext surface's route table, in one place"
)]
async fn handle_inner(app: &App, req: Request<Incoming>) -> R<Resp> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let query_string = req.uri().query().map(str::to_string);
    let query = Query::parse(query_string.as_deref());
    let packs = |s: &str| s == "licensepacks" || s == "license-packs";
    let assigns = |s: &str| s == "assignments" || s == "assigned-entities";
    enum Route<'p> {
        Packs,
        List(&'p str),
        One(&'p str, &'p str),
    }
    let (account_id, route) = match segs.as_slice() {
        ["v2", "accounts", a, p] if packs(p) => (*a, Route::Packs),
        ["v2", "accounts", a, p, id, s] if packs(p) && assigns(s) => (*a, Route::List(id)),
        ["v2", "accounts", a, p, id, s, e] if packs(p) && assigns(s) => (*a, Route::One(id, e)),
        _ => {
            return Err(YextError::new(
                StatusCode::NOT_FOUND,
                NOT_FOUND,
                "No such endpoint.",
            ))
        }
    };
    let allowed = match route {
        Route::Packs | Route::List(_) => method == Method::GET,
        Route::One(..) => matches!(method, Method::POST | Method::DELETE | Method::PUT),
    };
    if !allowed {
        return Err(YextError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            METHOD_NOT_ALLOWED,
            "Method not allowed here.",
        ));
    }
    check_version(query.get("v"))?;
    let header_key = req
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let acc = account(
        app,
        &query,
        header_key.as_deref(),
        &percent_decode_segment(account_id),
    )?;
    let now = app.now();
    match route {
        Route::Packs => {
            let size = page_size(&query)?;
            let after: Option<String> = untoken(&query)?;
            let all = acc.packs(now);
            let rest: Vec<&PackView> = all
                .iter()
                .filter(|p| after.as_ref().is_none_or(|a| p.id.as_str() > a.as_str()))
                .collect();
            let page: Vec<Value> = rest.iter().take(size).map(|p| pack_json(p)).collect();
            let mut response = json!({"licensePacks": page});
            if rest.len() > size {
                response["nextPageToken"] = token(&rest[size - 1].id).into();
            }
            Ok(ok(response))
        }
        Route::List(pack) => {
            let pack = percent_decode_segment(pack);
            let size = page_size(&query)?;
            let entity = query.get("assignedEntity").filter(|e| !e.is_empty());
            // A token names the list it was made for and its last item.
            let list = (pack.to_string(), entity.unwrap_or_default().to_string());
            let after = match untoken::<((String, String), (String, String))>(&query)? {
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
                "licenseAssignments": license_assignments(&acc, &items, pack.as_deref(), now),
            });
            if more {
                if let Some(last) = items.last() {
                    response["nextPageToken"] =
                        token(&(&list, (last.pack.clone(), last.entity.clone()))).into();
                }
            }
            Ok(ok(response))
        }
        Route::One(pack, entity) => {
            let (pack, entity) = (percent_decode_segment(pack), percent_decode_segment(entity));
            if pack == "-" {
                return Err(YextError::bad(
                    INVALID_REQUEST,
                    "The wildcard pack '-' only lists.",
                ));
            }
            let tenant_id = acc.tenant_id;
            match method {
                Method::POST => {
                    let cmd = Command::YextAssign {
                        tenant_id,
                        pack: Cow::Borrowed(&pack),
                        entity: Cow::Borrowed(&entity),
                        now,
                    };
                    app.commit(&cmd).await?;
                    Ok(ok(current(&acc, &pack, &entity, now)))
                }
                Method::DELETE => {
                    let cmd = Command::YextUnassign {
                        tenant_id,
                        pack: Cow::Borrowed(&pack),
                        entity: Cow::Borrowed(&entity),
                        now,
                    };
                    app.commit(&cmd).await?;
                    Ok(ok(json!({})))
                }
                _ => {
                    let body = match read_body(
                        req,
                        app.limits.request_body_bytes_max,
                        app.limits.request_timeout,
                    )
                    .await
                    {
                        Ok(b) => b,
                        Err(e) => {
                            let (status, message) = e.status_and_message();
                            return Err(YextError::new(status, INVALID_REQUEST, message));
                        }
                    };
                    let expiration = expiration_of(&body, &entity, now)?;
                    let cmd = Command::YextSchedule {
                        tenant_id,
                        pack: Cow::Borrowed(&pack),
                        entity: Cow::Borrowed(&entity),
                        expiration,
                        now,
                    };
                    app.commit(&cmd).await?;
                    Ok(ok(current(&acc, &pack, &entity, now)))
                }
            }
        }
    }
}

/// The `LicenseAssignment` of one entity after a change: its pack and the
/// entity's assignment.
fn current(acc: &YextAccount, pack: &str, entity: &str, now: Millis) -> Value {
    let (items, _) = acc.assignments(Some(pack), Some(entity), None, 1, now);
    license_assignments(acc, &items, Some(pack), now)
        .into_iter()
        .next()
        .unwrap_or_else(|| json!({}))
}

/// `{"expirationDate": "YYYY-MM-DD" | null}` (empty body or omitted: None).
/// `entityId`, which Yext's Go client sends along, must name the path's entity.
fn expiration_of(body: &[u8], entity: &str, now: Millis) -> R<Option<String>> {
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

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// A page token, as each list reads it.
    pub fn page_token(data: &[u8]) {
        let t = String::from_utf8_lossy(data);
        let _ = decode_token::<String>(&t);
        let _ = decode_token::<((String, String), (String, String))>(&t);
    }

    /// An update body.
    pub fn body(data: &[u8]) {
        let _ = expiration_of(data, "entity", 0);
    }
}
