//! Native admin API (`/admin/v1/...`, bearer admin token): create, read,
//! update (PUT replaces, PATCH merges as RFC 7396), list (paginated by id) and
//! delete tenants, API keys, products, customers, users, licenses and features;
//! read devices and floating holders; blacklist devices; correct consumption.
//!
//! Bad input is 400 with the JSON path of the offending field, unknown ids 404,
//! duplicates and objects still in use 409.
//!
//! # Layout
//! - `mod.rs`: the route table and the parsing every handler shares (ids,
//!   bodies, merge patches, pages);
//! - `kinds.rs`: the generic kinds; `licenses.rs`: features, devices and
//!   consumption; `keys.rs`: API keys and token keys; `ledger.rs`: the
//!   ledger; `webhooks.rs`: every tenant's webhooks; `console.rs`: what the
//!   web console asks (stats, search, releasing a floating seat);
//!   `clock.rs`: the test clock; `journal.rs`: the request journal;
//!   `faults.rs`: the fault rules; `ratelimits.rs`: the emulated rate
//!   limits' counters and tenants' overrides; `state.rs`: the state
//!   fixtures (save, restore, reset); [`qlik`], [`yext`], [`infa`]: the
//!   vendor sections;
//! - `error.rs`: [`AdminError`]; [`wire`]: JSON views of engine objects.

mod clock;
mod cluster;
mod console;
mod error;
mod faults;
pub mod infa;
mod journal;
mod keys;
mod kinds;
mod ledger;
mod licenses;
pub mod qlik;
mod ratelimits;
mod state;
mod webhooks;
pub mod wire;
pub mod yext;

use std::borrow::Cow;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::config::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use crate::credentials::constant_time_eq;
use crate::engine::model::*;
use crate::engine::Command;
use crate::http::{json, json_value, percent_decode_segment, read_body, BodyError, Query, Resp};
pub use error::AdminError;
use keys::{create_key, list_keys};
use kinds::{create, item, list, Kind};
use licenses::{blacklist, create_feature, feature_item, set_consumption};

type R<T> = Result<T, AdminError>;

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let (code, message) = crate::http::fault_words(status, why);
    let mut r = AdminError::new(status, code, message).into_response();
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
    }
    r
}

pub fn malformed(m: crate::http::Malformed) -> Resp {
    AdminError::new(StatusCode::BAD_REQUEST, "invalid", m.message()).into_response()
}

pub async fn handle(app: &std::sync::Arc<App>, req: Request<Incoming>) -> Resp {
    match handle_inner(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The route's segments of an admin path, decoded: what the route table
/// matches (`/admin/v1//state/%72eset` is `["state", "reset"]`).
fn segments(path: &str) -> Vec<Cow<'_, str>> {
    path.trim_start_matches("/admin/v1")
        .trim_matches('/')
        .split('/')
        .map(percent_decode_segment)
        .collect()
}

/// Whether `path` routes to the state fixtures, whose handlers shut the
/// server's gate themselves: their requests must not hold it (the server
/// asks before it lets a request in; see `crate::gate`).
pub fn is_state_route(path: &str) -> bool {
    segments(path).first().is_some_and(|s| s == "state")
}

fn authorized(app: &App, req: &Request<Incoming>) -> bool {
    let Some(h) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .unwrap_or("");
    constant_time_eq(token.trim().as_bytes(), app.admin_token.as_bytes())
}

#[allow(
    clippy::too_many_lines,
    reason = "the admin API's route table, in one place"
)]
async fn handle_inner(app: &std::sync::Arc<App>, req: Request<Incoming>) -> R<Resp> {
    if !authorized(app, &req) {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin bearer token",
        ));
    }
    crate::app::set_actor(crate::app::Actor::Named("admin".into()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query_string = req.uri().query().map(str::to_string);
    let query = Query::parse(query_string.as_deref());
    let segs = segments(&path);
    let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    let body = match method {
        Method::POST | Method::PUT | Method::PATCH => Some(
            match read_body(
                req,
                app.limits.request_body_bytes_max,
                app.limits.request_timeout,
            )
            .await
            {
                Ok(b) => b,
                Err(BodyError::TooLarge(n)) => {
                    return Err(AdminError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("body over {n} bytes"),
                    ))
                }
                Err(BodyError::Read) => {
                    return Err(AdminError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        "could not read body",
                    ))
                }
                Err(BodyError::TimedOut) => {
                    return Err(AdminError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the body did not arrive in time",
                    ))
                }
            },
        ),
        _ => None,
    };
    let body = body.as_deref();
    let m = &method;
    match segs.as_slice() {
        ["tenants"] if m == Method::GET => list(app, &query, Kind::Tenant),
        ["tenants"] if m == Method::POST => create(app, Kind::Tenant, body).await,
        ["tenants", id] => item(app, m, Kind::Tenant, id, body).await,
        ["tenants", id, "qlik", rest @ ..] => qlik::route(app, m, id, rest, body).await,
        ["tenants", id, "yext"] => yext::route(app, m, id, body).await,
        ["tenants", id, "rate-limits"] if m == Method::GET => ratelimits::tenant_get(app, id),
        ["tenants", id, "rate-limits"] if m == Method::PUT => ratelimits::tenant_put(app, id, body),
        ["rate-limits"] if m == Method::GET => ratelimits::get(app),
        ["rate-limits"] if m == Method::DELETE => ratelimits::reset(app),
        ["tenants", id, "informatica", rest @ ..] => {
            infa::route(app, m, id, rest, &query, body).await
        }
        ["ledger"] if m == Method::GET => ledger::list(app, &query).await,
        ["stats"] if m == Method::GET => Ok(console::stats(app)),
        ["clock"] if m == Method::GET => clock::get(app),
        ["faults"] if m == Method::GET => faults::get(app),
        ["faults"] if m == Method::PUT => faults::put(app, body),
        ["faults"] if m == Method::DELETE => faults::delete(app),
        ["journal"] if m == Method::GET => journal::list(app, &query),
        ["journal"] if m == Method::DELETE => journal::clear(app),
        ["journal", "count"] if m == Method::POST => journal::count(app, body),
        ["clock"] if m == Method::POST => clock::post(app, body).await,
        ["cluster"] if m == Method::GET => cluster::get(app).await,
        ["state"] if m == Method::GET => state::list(app),
        ["state", "save"] if m == Method::POST => state::save(app, body).await,
        ["state", "restore"] if m == Method::POST => state::restore(app, body).await,
        ["state", "reset"] if m == Method::POST => state::reset(app, body).await,
        ["state", name] if m == Method::DELETE => state::delete(app, name).await,
        ["search"] if m == Method::GET => console::search(app, &query),
        ["licenses", id, "floating", holder] if m == Method::DELETE => {
            console::release(app, id, holder, &query).await
        }
        ["webhooks", rest @ ..] => webhooks::route(app, m, rest, &query, body).await,
        ["token-keys"] if m == Method::GET => keys::token_keys(app),
        ["token-keys", "rotate"] if m == Method::POST => keys::rotate_token_key(app).await,
        ["api-keys"] if m == Method::GET => list_keys(app, &query),
        ["api-keys"] if m == Method::POST => create_key(app, body).await,
        ["api-keys", key] if m == Method::GET => {
            let k = app
                .engine
                .api_key(key)
                .ok_or_else(|| AdminError::not_found("api key"))?;
            Ok(json_value(StatusCode::OK, &wire::api_key(&k)))
        }
        ["api-keys", key] if m == Method::DELETE => {
            apply(
                app,
                Command::DeleteApiKey {
                    api_key: key.to_string(),
                },
            )
            .await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        ["api-keys", key, "revoke"] if m == Method::POST => {
            apply(
                app,
                Command::RevokeApiKey {
                    api_key: key.to_string(),
                },
            )
            .await?;
            let k = app
                .engine
                .api_key(key)
                .ok_or_else(|| AdminError::not_found("api key"))?;
            Ok(json_value(StatusCode::OK, &wire::api_key(&k)))
        }
        ["products"] if m == Method::GET => list(app, &query, Kind::Product),
        ["products"] if m == Method::POST => create(app, Kind::Product, body).await,
        ["products", id] => item(app, m, Kind::Product, id, body).await,
        ["customers"] if m == Method::GET => list(app, &query, Kind::Customer),
        ["customers"] if m == Method::POST => create(app, Kind::Customer, body).await,
        ["customers", id] => item(app, m, Kind::Customer, id, body).await,
        ["users"] if m == Method::GET => list(app, &query, Kind::User),
        ["users"] if m == Method::POST => create(app, Kind::User, body).await,
        ["users", id] => item(app, m, Kind::User, id, body).await,
        ["licenses"] if m == Method::GET => list(app, &query, Kind::License),
        ["licenses"] if m == Method::POST => create(app, Kind::License, body).await,
        ["licenses", id] => item(app, m, Kind::License, id, body).await,
        ["licenses", id, "features"] if m == Method::GET => {
            let lic = license(app, id)?;
            let now = app.now();
            let fs: Vec<Value> = lic
                .features
                .read()
                .iter()
                .map(|f| wire::feature(f, now))
                .collect();
            Ok(json_value(StatusCode::OK, &json!({ "items": fs })))
        }
        ["licenses", id, "features"] if m == Method::POST => create_feature(app, id, body).await,
        ["licenses", id, "features", fid] => feature_item(app, m, id, fid, body).await,
        ["licenses", id, "devices"] if m == Method::GET => {
            let lic = license(app, id)?;
            let devs: Vec<Value> = lic.devices.read().list.iter().map(wire::device).collect();
            Ok(json_value(StatusCode::OK, &json!({ "items": devs })))
        }
        ["licenses", id, "devices", hw] if m == Method::PATCH => blacklist(app, id, hw, body).await,
        ["licenses", id, "floating"] if m == Method::GET => {
            let lic = license(app, id)?;
            Ok(json_value(StatusCode::OK, &wire::floating(&lic, app.now())))
        }
        ["licenses", id, "consumption"] if m == Method::PUT => set_consumption(app, id, body).await,
        ["signing-key"] if m == Method::GET => Ok(json_value(
            StatusCode::OK,
            &json!({"public_key_pem": app.signer.public_key_pem(), "public_key": app.signer.public_key_base64(),
                    "algorithm": "RSA PKCS#1 v1.5 SHA-256", "signing_enabled": app.sign_responses}),
        )),
        _ => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} /admin/v1/{path}"),
        )),
    }
}

async fn apply(app: &App, cmd: Command<'_>) -> R<crate::engine::Outcome> {
    Ok(app.commit(&cmd).await?)
}

fn parse_id(s: &str, what: &str) -> R<Id> {
    canonical_id(s).ok_or_else(|| AdminError::not_found(what))
}

/// An id written as ids are: decimal digits without a sign or leading zeros
/// (`+7` or `007` name no id, rather than silently naming 7).
fn canonical_id(s: &str) -> Option<Id> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The id of an existing tenant named by a path segment (404 otherwise).
fn existing_tenant(app: &App, id: &str) -> R<Id> {
    let id = parse_id(id, "tenant")?;
    app.engine
        .tenant(id)
        .ok_or_else(|| AdminError::not_found("tenant"))?;
    Ok(id)
}

fn license(app: &App, id: &str) -> R<std::sync::Arc<License>> {
    app.engine
        .license(parse_id(id, "license")?)
        .ok_or_else(|| AdminError::not_found("license"))
}

/// Parses a JSON object body.
fn object(body: Option<&[u8]>) -> R<Map<String, Value>> {
    let b = body.unwrap_or_default();
    match serde_json::from_slice::<Value>(b) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AdminError::bad("", "body must be a JSON object")),
        Err(e) => Err(AdminError::bad("", format!("invalid JSON: {e}"))),
    }
}

/// Deserializes `v`, reporting the path of the first offending field.
pub fn from_value<T: DeserializeOwned>(v: Value) -> R<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        AdminError::bad(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

/// RFC 7396 JSON merge patch.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

fn page_params(q: &Query) -> R<(Id, usize)> {
    let after = match q.get("after") {
        Some(a) => canonical_id(a).ok_or_else(|| AdminError::bad("after", "must be an id"))?,
        None => 0,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=PAGE_LIMIT_MAX).contains(l))
            .ok_or_else(|| AdminError::bad("limit", format!("must be 1 to {PAGE_LIMIT_MAX}")))?,
        None => PAGE_LIMIT_DEFAULT,
    };
    Ok((after, limit))
}

fn opt_id(q: &Query, name: &'static str) -> R<Option<Id>> {
    q.get(name)
        .map(|v| canonical_id(v).ok_or_else(|| AdminError::bad(name, "must be an id")))
        .transpose()
}

fn page_response(items: Vec<Value>, more: bool) -> Resp {
    let next = if more {
        items
            .last()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    json_value(
        StatusCode::OK,
        &json!({ "items": items, "next_after": next }),
    )
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::*;
    use crate::engine::model::{
        CustomerSpec, FeatureSpec, LicenseSpec, ProductSpec, TenantSpec, UserSpec,
    };

    /// A body, as every write reads it: an object, merged into an existing
    /// spec (PATCH), then typed as each kind of spec, and its ids as ids.
    pub fn body(data: &[u8]) {
        let Ok(m) = object(Some(data)) else { return };
        let mut base = serde_json::json!({"tenant_id": 1, "name": "t", "metadata": {}});
        merge(&mut base, Value::Object(m.clone()));
        for v in [Value::Object(m), base] {
            let _ = from_value::<TenantSpec>(v.clone());
            let _ = from_value::<ProductSpec>(v.clone());
            let _ = from_value::<CustomerSpec>(v.clone());
            let _ = from_value::<UserSpec>(v.clone());
            let _ = from_value::<LicenseSpec>(v.clone());
            let _ = from_value::<FeatureSpec>(v.clone());
            let _ = from_value::<crate::engine::qlik::QlikSpec>(v.clone());
            let _ = from_value::<crate::engine::yext::YextSpec>(v.clone());
            let _ = from_value::<crate::engine::infa::InfaSpec>(v);
        }
        let _ = canonical_id(&String::from_utf8_lossy(data));
    }
}
