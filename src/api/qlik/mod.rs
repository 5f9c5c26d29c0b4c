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
//!
//! # Layout
//! - `mod.rs`: the route table, bearer authentication and the emulated rate
//!   limits ([`QlikState`]);
//! - `lists.rs`: the assignment and consumption lists; `batch.rs`: the `add`,
//!   `delete` and `update` actions; `settings.rs`: the settings `PUT`;
//! - [`scim`]: the filter parser; [`page`]: sorts and cursor pages;
//! - `error.rs`: [`QlikError`] and its code catalogue; `wire.rs`: the answers'
//!   shapes.

mod batch;
pub mod error;
mod lists;
pub mod page;
pub mod scim;
mod settings;
mod wire;

use std::collections::HashMap;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use parking_lot::Mutex;

use crate::app::App;
use crate::engine::model::{Id, Role};
use crate::engine::time::{Millis, MINUTE_MS};
use crate::http::{json_value, read_body, Query, Resp};
use error::{QlikError, R};
use page::Cursor;

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

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: hyper::StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let mut r = QlikError::fault(status, why).response();
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
    }
    r
}

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
    crate::app::set_actor(crate::app::Actor::Key(key.clone()));
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
            return Ok(json_value(StatusCode::OK, &wire::missing_status()));
        }
        return Err(QlikError::license_not_found());
    };
    let body = body.unwrap_or_default();
    match route {
        Route::Assignments => lists::list_assignments(&q, &query, &host),
        Route::Consumption => lists::list_consumption(&q, &query, &host),
        Route::Overview => Ok(json_value(StatusCode::OK, &wire::overview(&q, now))),
        Route::Status => Ok(json_value(StatusCode::OK, &wire::status(&q, now))),
        Route::Settings if method == Method::GET => {
            Ok(json_value(StatusCode::OK, &wire::settings_json(&q)))
        }
        Route::Settings => settings::put_settings(app, &q, &body).await,
        Route::Add => batch::add(app, &q, &body, now).await,
        Route::Delete => batch::delete(app, &q, &body).await,
        Route::Update => batch::update(app, &q, &body, now).await,
    }
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::batch::{batch, field, kind_field, parse_body, subject_and_type};
    use super::lists::{ASSIGNMENT_SCHEMA, CONSUMPTION_SCHEMA};
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
