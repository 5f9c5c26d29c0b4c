//! Native admin API (`/admin/v1/...`, bearer admin token): create, read,
//! update (PUT replaces, PATCH merges as RFC 7396), list (paginated by id) and
//! delete tenants, API keys, products, customers, users, licenses and features;
//! read devices and floating holders; blacklist devices; correct consumption.
//!
//! Bad input is 400 with the JSON path of the offending field, unknown ids 404,
//! duplicates and objects still in use 409.

mod error;
pub mod infa;
pub mod qlik;
pub mod wire;
pub mod yext;

use std::borrow::Cow;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::config::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use crate::credentials::{constant_time_eq, Passwords};
use crate::engine::model::*;
use crate::engine::Command;
use crate::http::{json, json_value, percent_decode_segment, read_body, BodyError, Query, Resp};
pub use error::AdminError;

type R<T> = Result<T, AdminError>;

/// A request the server refused before reading it, in this surface's shape.
pub fn malformed(m: crate::http::Malformed) -> Resp {
    AdminError::new(StatusCode::BAD_REQUEST, "invalid", m.message()).into_response()
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    match handle_inner(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
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
async fn handle_inner(app: &App, req: Request<Incoming>) -> R<Resp> {
    if !authorized(app, &req) {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin bearer token",
        ));
    }
    let method = req.method().clone();
    let path = req
        .uri()
        .path()
        .trim_start_matches("/admin/v1")
        .trim_matches('/')
        .to_string();
    let query_string = req.uri().query().map(str::to_string);
    let query = Query::parse(query_string.as_deref());
    let segs: Vec<Cow<str>> = path.split('/').map(percent_decode_segment).collect();
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
        ["tenants", id, "informatica", rest @ ..] => {
            infa::route(app, m, id, rest, &query, body).await
        }
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

// ---------------------------------------------------------------- generic kinds

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tenant,
    Product,
    Customer,
    User,
    License,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Product => "product",
            Kind::Customer => "customer",
            Kind::User => "user",
            Kind::License => "license",
        }
    }

    /// The stored spec of `id` as JSON (what PATCH merges into), if it exists.
    fn spec(self, app: &App, id: Id) -> Option<Value> {
        let e = &app.engine;
        let v = match self {
            Kind::Tenant => serde_json::to_value(&*e.tenant(id)?.spec.read()),
            Kind::Product => serde_json::to_value(&*e.product(id)?.spec.read()),
            Kind::Customer => serde_json::to_value(&*e.customer(id)?.spec.read()),
            Kind::User => serde_json::to_value(&*e.user(id)?.spec.read()),
            Kind::License => serde_json::to_value(e.license(id)?.spec()),
        };
        v.ok()
    }

    fn render(self, app: &App, id: Id) -> Option<Value> {
        let e = &app.engine;
        let now = app.now();
        Some(match self {
            Kind::Tenant => wire::tenant(&*e.tenant(id)?),
            Kind::Product => wire::product(&*e.product(id)?),
            Kind::Customer => wire::customer(&*e.customer(id)?),
            Kind::User => wire::user(e, &*e.user(id)?),
            Kind::License => wire::license(e, &*e.license(id)?, now),
        })
    }

    /// Builds the put command from a JSON spec.
    async fn put(
        self,
        app: &App,
        id: Id,
        mut v: Map<String, Value>,
        creating: bool,
    ) -> R<Command<'static>> {
        let now = app.now();
        Ok(match self {
            Kind::Tenant => Command::PutTenant {
                id,
                spec: from_value(Value::Object(v))?,
            },
            Kind::Product => Command::PutProduct {
                id,
                spec: from_value(Value::Object(v))?,
            },
            Kind::Customer => Command::PutCustomer {
                id,
                spec: from_value(Value::Object(v))?,
            },
            Kind::User => {
                if let Some(p) = v.remove("password") {
                    let p = p
                        .as_str()
                        .ok_or_else(|| AdminError::bad("password", "must be a string"))?;
                    if p.is_empty() {
                        return Err(AdminError::bad("password", "must not be empty"));
                    }
                    // argon2 runs on the password workers, not the runtime.
                    let hash = app
                        .passwords
                        .hash_on_worker(p.to_string())
                        .await?
                        .map_err(|e| AdminError::bad("password", e))?;
                    v.insert("password_hash".into(), hash.into());
                } else if let Some(h) = v.get("password_hash") {
                    if !h.as_str().is_some_and(Passwords::is_valid_hash) {
                        return Err(AdminError::bad(
                            "password_hash",
                            "must be a PHC string (argon2)",
                        ));
                    }
                } else {
                    return Err(AdminError::bad("password", "required"));
                }
                Command::PutUser {
                    id,
                    spec: from_value(Value::Object(v))?,
                }
            }
            Kind::License => {
                let features = match v.remove("features") {
                    Some(f) if creating => {
                        let specs: Vec<FeatureSpec> = from_value(f).map_err(|e| AdminError {
                            path: e.path.map(|p| format!("features{p}")),
                            ..e
                        })?;
                        specs
                            .into_iter()
                            .map(|s| (app.engine.next_id(), s))
                            .collect()
                    }
                    Some(_) => {
                        return Err(AdminError::bad(
                            "features",
                            "use /licenses/{id}/features to change features",
                        ))
                    }
                    None => Vec::new(),
                };
                let needs_key = creating
                    && !v.get("license_key").is_some_and(|k| k.is_string())
                    && v.get("product_id")
                        .and_then(Value::as_u64)
                        .and_then(|p| app.engine.product(p))
                        .is_some_and(|p| p.authorization_method == AuthMethod::LicenseKey);
                if needs_key {
                    v.insert(
                        "license_key".into(),
                        crate::util::random_license_key().into(),
                    );
                }
                Command::PutLicense {
                    id,
                    spec: from_value(Value::Object(v))?,
                    features,
                    now,
                }
            }
        })
    }

    fn delete(self, id: Id) -> Command<'static> {
        match self {
            Kind::Tenant => Command::DeleteTenant { id },
            Kind::Product => Command::DeleteProduct { id },
            Kind::Customer => Command::DeleteCustomer { id },
            Kind::User => Command::DeleteUser { id },
            Kind::License => Command::DeleteLicense { id },
        }
    }
}

fn list(app: &App, q: &Query, kind: Kind) -> R<Resp> {
    let (after, limit) = page_params(q)?;
    let tenant = opt_id(q, "tenant_id")?;
    let e = &app.engine;
    let now = app.now();
    let (items, more): (Vec<Value>, bool) = match kind {
        Kind::Tenant => {
            let (v, m) = e.list_tenants(after, limit);
            (v.iter().map(|t| wire::tenant(t)).collect(), m)
        }
        Kind::Product => {
            let (v, m) = e.list_products(tenant, after, limit);
            (v.iter().map(|p| wire::product(p)).collect(), m)
        }
        Kind::Customer => {
            let (v, m) = e.list_customers(tenant, after, limit);
            (v.iter().map(|c| wire::customer(c)).collect(), m)
        }
        Kind::User => {
            let (v, m) = e.list_users(tenant, after, limit);
            (v.iter().map(|u| wire::user(e, u)).collect(), m)
        }
        Kind::License => {
            let product = opt_id(q, "product_id")?;
            let (v, m) = e.list_licenses(tenant, product, after, limit);
            (v.iter().map(|l| wire::license(e, l, now)).collect(), m)
        }
    };
    Ok(page_response(items, more))
}

async fn create(app: &App, kind: Kind, body: Option<&[u8]>) -> R<Resp> {
    let mut v = object(body)?;
    if v.remove("id").is_some() {
        return Err(AdminError::bad("id", "ids are assigned by the server"));
    }
    let id = app.engine.next_id();
    let cmd = kind.put(app, id, v, true).await?;
    apply(app, cmd).await?;
    let out = kind
        .render(app, id)
        .ok_or_else(|| AdminError::not_found(kind.name()))?;
    Ok(json_value(StatusCode::CREATED, &out))
}

async fn item(app: &App, m: &Method, kind: Kind, id: &str, body: Option<&[u8]>) -> R<Resp> {
    let id = parse_id(id, kind.name())?;
    let current = kind
        .spec(app, id)
        .ok_or_else(|| AdminError::not_found(kind.name()))?;
    match *m {
        Method::GET => Ok(json_value(
            StatusCode::OK,
            &kind.render(app, id).unwrap_or(Value::Null),
        )),
        Method::DELETE => {
            apply(app, kind.delete(id)).await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        Method::PUT | Method::PATCH => {
            let mut patch = object(body)?;
            patch.remove("id");
            let v = if *m == Method::PATCH {
                let mut cur = current;
                // A stored password hash stays unless a new password is given.
                if patch.contains_key("password") {
                    if let Value::Object(c) = &mut cur {
                        c.remove("password_hash");
                    }
                }
                merge(&mut cur, Value::Object(patch));
                match cur {
                    Value::Object(o) => o,
                    _ => Map::new(),
                }
            } else {
                if kind == Kind::User
                    && !patch.contains_key("password")
                    && !patch.contains_key("password_hash")
                {
                    if let Some(h) = current.get("password_hash") {
                        patch.insert("password_hash".into(), h.clone());
                    }
                }
                patch
            };
            let cmd = kind.put(app, id, v, false).await?;
            apply(app, cmd).await?;
            Ok(json_value(
                StatusCode::OK,
                &kind.render(app, id).unwrap_or(Value::Null),
            ))
        }
        _ => Err(AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} not allowed here"),
        )),
    }
}

// ---------------------------------------------------------------- features

async fn create_feature(app: &App, license_id: &str, body: Option<&[u8]>) -> R<Resp> {
    let lic = license(app, license_id)?;
    let mut v = object(body)?;
    if v.remove("id").is_some() {
        return Err(AdminError::bad("id", "ids are assigned by the server"));
    }
    let spec: FeatureSpec = from_value(Value::Object(v))?;
    let id = app.engine.next_id();
    apply(
        app,
        Command::PutFeature {
            license_id: lic.id,
            id,
            spec,
            now: app.now(),
        },
    )
    .await?;
    let f = lic
        .features
        .read()
        .iter()
        .find(|f| f.id == id)
        .cloned()
        .ok_or_else(|| AdminError::not_found("feature"))?;
    Ok(json_value(
        StatusCode::CREATED,
        &wire::feature(&f, app.now()),
    ))
}

async fn feature_item(
    app: &App,
    m: &Method,
    license_id: &str,
    fid: &str,
    body: Option<&[u8]>,
) -> R<Resp> {
    let lic = license(app, license_id)?;
    let fid = parse_id(fid, "feature")?;
    let f = lic
        .features
        .read()
        .iter()
        .find(|f| f.id == fid)
        .cloned()
        .ok_or_else(|| AdminError::not_found("feature"))?;
    let now = app.now();
    match *m {
        Method::GET => Ok(json_value(StatusCode::OK, &wire::feature(&f, now))),
        Method::DELETE => {
            apply(
                app,
                Command::DeleteFeature {
                    license_id: lic.id,
                    id: fid,
                },
            )
            .await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        Method::PUT | Method::PATCH => {
            let mut patch = object(body)?;
            patch.remove("id");
            let v = if *m == Method::PATCH {
                let mut cur = serde_json::to_value(&**f.spec.read()).unwrap_or(Value::Null);
                merge(&mut cur, Value::Object(patch));
                cur
            } else {
                Value::Object(patch)
            };
            let spec: FeatureSpec = from_value(v)?;
            apply(
                app,
                Command::PutFeature {
                    license_id: lic.id,
                    id: fid,
                    spec,
                    now,
                },
            )
            .await?;
            Ok(json_value(StatusCode::OK, &wire::feature(&f, now)))
        }
        _ => Err(AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} not allowed here"),
        )),
    }
}

// ---------------------------------------------------------------- api keys

fn list_keys(app: &App, q: &Query) -> R<Resp> {
    let tenant = opt_id(q, "tenant_id")?;
    let limit = page_params(q)?.1;
    let after = q.get("after_key").unwrap_or("");
    let (keys, more) = app.engine.list_api_keys(tenant, after, limit);
    let next = if more {
        keys.last()
            .map(|k| Value::from(&*k.api_key))
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let items: Vec<Value> = keys.iter().map(|k| wire::api_key(k)).collect();
    Ok(json_value(
        StatusCode::OK,
        &json!({ "items": items, "next_after_key": next }),
    ))
}

async fn create_key(app: &App, body: Option<&[u8]>) -> R<Resp> {
    let mut v = object(body)?;
    for (field, len) in [("api_key", 36), ("shared_key", 48)] {
        if !v.contains_key(field) {
            v.insert(field.into(), crate::util::random_token(len).into());
        }
    }
    let spec: ApiKeySpec = from_value(Value::Object(v))?;
    let key = spec.api_key.clone();
    apply(app, Command::PutApiKey { spec }).await?;
    let k = app
        .engine
        .api_key(&key)
        .ok_or_else(|| AdminError::not_found("api key"))?;
    Ok(json_value(StatusCode::CREATED, &wire::api_key(&k)))
}

// ---------------------------------------------------------------- devices, consumption

async fn blacklist(app: &App, license_id: &str, hw: &str, body: Option<&[u8]>) -> R<Resp> {
    let lic = license(app, license_id)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        blacklisted: bool,
    }
    let b: Body = from_value(Value::Object(object(body)?))?;
    let cmd = Command::SetDeviceBlacklisted {
        license_id: lic.id,
        hardware_id: Cow::Borrowed(hw),
        blacklisted: b.blacklisted,
        device_id: app.engine.next_id(),
        now: app.now(),
    };
    apply(app, cmd).await?;
    let d = app
        .engine
        .device(&lic, hw)
        .ok_or_else(|| AdminError::not_found("device"))?;
    Ok(json_value(StatusCode::OK, &wire::device(&d)))
}

async fn set_consumption(app: &App, license_id: &str, body: Option<&[u8]>) -> R<Resp> {
    let lic = license(app, license_id)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        total: i64,
        #[serde(default)]
        feature_id: Option<Id>,
    }
    let b: Body = from_value(Value::Object(object(body)?))?;
    if b.total < 0 {
        // No meter's total is ever below zero (negative adds stop at zero).
        return Err(AdminError::bad("total", "must not be below zero"));
    }
    apply(
        app,
        Command::SetConsumption {
            license_id: lic.id,
            feature_id: b.feature_id,
            total: b.total,
        },
    )
    .await?;
    Ok(json_value(
        StatusCode::OK,
        &wire::license(&app.engine, &lic, app.now()),
    ))
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
