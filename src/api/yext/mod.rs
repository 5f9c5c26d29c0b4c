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
//!
//! # Layout
//! - `mod.rs`: the route table, and what every request checks first
//!   (version, key and account, page size);
//! - `packs.rs`: listing packs; `assignments.rs`: listing, assigning,
//!   unassigning and scheduling removals;
//! - `error.rs`: [`YextError`] and its codes; `wire.rs`: the envelope, the
//!   answer shapes and page tokens.

mod assignments;
mod error;
mod packs;
mod wire;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

pub use error::YextError;
use error::{
    FORBIDDEN, INVALID_PAGE, INVALID_REQUEST, INVALID_VERSION, METHOD_NOT_ALLOWED, NOT_FOUND, R,
    UNAUTHORIZED,
};

use crate::app::App;
use crate::engine::yext::YextAccount;
use crate::http::{percent_decode_segment, Query, Resp};

/// List pages: default and largest `pageSize`.
pub const PAGE_SIZE_DEFAULT: usize = 10;
pub const PAGE_SIZE_MAX: usize = 50;

/// A request the server refused before reading it, in this surface's shape.
/// The emulated rate limit's refusal (`--emulate-rate-limits`).
pub fn rate_limited(retry_after_s: u32) -> Resp {
    let mut r = YextError::new(
        StatusCode::TOO_MANY_REQUESTS,
        error::TOO_MANY,
        "Rate limit exceeded for this account (emulated by Tally)",
    )
    .response();
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, retry_after_s.max(1).into());
    r
}

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: hyper::StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let code = match status.as_u16() {
        429 => error::TOO_MANY,
        401 => error::UNAUTHORIZED,
        403 => error::FORBIDDEN,
        404 => error::NOT_FOUND,
        400..=499 => INVALID_REQUEST,
        _ => error::UNAVAILABLE,
    };
    let (_, message) = crate::http::fault_words(status, why);
    let mut r = YextError::new(status, code, message).response();
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
    }
    r
}

pub fn malformed(m: crate::http::Malformed) -> Resp {
    YextError::bad(INVALID_REQUEST, m.message()).response()
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    match handle_inner(app, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

/// The routes, by path shape; both spellings of Yext's paths are accepted.
enum Route<'p> {
    Packs,
    List(&'p str),
    One(&'p str, &'p str),
}

/// The path's account id and route, or 404.
fn route<'p>(segs: &[&'p str]) -> R<(String, Route<'p>)> {
    let packs = |s: &str| s == "licensepacks" || s == "license-packs";
    let assigns = |s: &str| s == "assignments" || s == "assigned-entities";
    let (account_id, route) = match segs {
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
    Ok((percent_decode_segment(account_id).into_owned(), route))
}

/// The route table: route and method to a handler, after the checks every
/// request passes (method, version, key and account).
async fn handle_inner(app: &App, req: Request<Incoming>) -> R<Resp> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let query_string = req.uri().query().map(str::to_string);
    let query = Query::parse(query_string.as_deref());
    let (account_id, route) = route(&segs)?;
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
    let acc = account(app, &query, header_key.as_deref(), &account_id)?;
    let now = app.now();
    match route {
        Route::Packs => packs::list(&acc, &query, now),
        Route::List(pack) => {
            assignments::list(&acc, &query, percent_decode_segment(pack).into_owned(), now)
        }
        Route::One(pack, entity) => {
            let (pack, entity) = (percent_decode_segment(pack), percent_decode_segment(entity));
            if pack == "-" {
                return Err(YextError::bad(
                    INVALID_REQUEST,
                    "The wildcard pack '-' only lists.",
                ));
            }
            match method {
                Method::POST => assignments::assign(app, &acc, &pack, &entity, now).await,
                Method::DELETE => assignments::unassign(app, &acc, &pack, &entity, now).await,
                _ => assignments::schedule(app, req, &acc, &pack, &entity, now).await,
            }
        }
    }
}

/// `v`: a real date written `YYYYMMDD`.
fn check_version(v: Option<&str>) -> R<()> {
    let v = v.ok_or_else(|| {
        YextError::bad(INVALID_VERSION, "The v parameter (YYYYMMDD) is required.")
    })?;
    // Checked by the calendar directly: a parse by format strings cost 3 %
    // of the server's core under the churn load (on every request).
    let num = |r: std::ops::Range<usize>| v.get(r).and_then(|d| d.parse::<u32>().ok());
    let valid = v.len() == 8
        && v.bytes().all(|b| b.is_ascii_digit())
        && matches!((num(0..4), num(4..6), num(6..8)), (Some(y), Some(m), Some(d))
            if crate::engine::time::is_calendar_date(y, m, d));
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
    crate::app::set_actor(crate::app::Actor::Key(key.clone()));
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

pub(super) fn page_size(query: &Query<'_>) -> R<usize> {
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

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::assignments::expiration_of;
    use super::wire::decode_token;

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
