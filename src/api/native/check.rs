//! Checks, the hot path: may this license's feature be used now (on this
//! device)? A floating feature takes or renews the device's seat, as the
//! vendor surfaces do. A refusal is an answer (`allowed: false` with its
//! code), not an error; only a request the API cannot read is a 400.

use std::borrow::Cow;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::refusal;
use super::{ops, wire, Ctx, Done, NativeError, R};
use crate::engine::model::License;
use crate::engine::{Command, EngineError};

/// Checks one request may hold.
pub const CHECKS_MAX: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct One<'a> {
    #[serde(borrow, default)]
    license_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    product: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow)]
    feature: Cow<'a, str>,
    #[serde(borrow, default)]
    device: Option<Cow<'a, str>>,
}

/// One check, or `checks`: many (a struct rather than an untagged enum,
/// which serde would buffer; this is the hot path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow, default)]
    checks: Option<Vec<One<'a>>>,
    #[serde(borrow, default)]
    license_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    product: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    feature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    device: Option<Cow<'a, str>>,
}

fn shape() -> NativeError {
    NativeError::invalid(
        "body: {license_key | product and username, feature, device?}, or {\"checks\": [...]}",
    )
}

pub async fn post(ctx: &Ctx<'_>, body: &[u8]) -> R<Done> {
    let parsed: Body<'_> = serde_json::from_slice(body).map_err(|_| shape())?;
    match parsed {
        Body {
            checks: None,
            license_key,
            product,
            username,
            feature: Some(feature),
            device,
        } => {
            let one = One {
                license_key,
                product,
                username,
                feature,
                device,
            };
            let answer = check(ctx, &one).await?;
            Ok(Done::bytes(StatusCode::OK, answer))
        }
        Body {
            checks: Some(checks),
            license_key: None,
            product: None,
            username: None,
            feature: None,
            device: None,
        } => {
            if checks.is_empty() || checks.len() > CHECKS_MAX {
                return Err(NativeError::invalid("checks: must hold 1 to 100 checks"));
            }
            let mut out = Vec::with_capacity(checks.len() * 256);
            out.extend_from_slice(br#"{"results":["#);
            for (i, one) in checks.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&check(ctx, one).await?);
            }
            out.extend_from_slice(b"]}");
            Ok(Done::bytes(StatusCode::OK, out))
        }
        _ => Err(shape()),
    }
}

/// `GET /v1/licenses/{key}/features/{code}/check?device=`.
pub async fn get(ctx: &Ctx<'_>, l: &License, code: &str, device: Option<&str>) -> R<Done> {
    let answer = match decide(ctx, l, code, device).await {
        Ok(v) => v,
        Err(e) => refused(e, l.license_key.as_deref()),
    };
    Ok(Done::bytes(StatusCode::OK, answer))
}

/// The answer to one check, as JSON.
async fn check(ctx: &Ctx<'_>, one: &One<'_>) -> R<Vec<u8>> {
    let tenant = ctx.caller.tenant_id;
    let license = match (&one.license_key, &one.product, &one.username) {
        (Some(k), None, None) => ops::license_by_key(ctx.app, tenant, k),
        (None, Some(p), Some(u)) => ops::license_of_user(ctx.app, tenant, p, u, Some(&one.feature)),
        _ => {
            return Err(NativeError::invalid(
                "name the license by license_key, or by product and username",
            ))
        }
    };
    let l = match license {
        Ok(l) => l,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(refused_problem(&e)),
        Err(e) => return Err(e),
    };
    Ok(
        match decide(ctx, &l, &one.feature, one.device.as_deref()).await {
            Ok(v) => v,
            Err(e) => refused(e, l.license_key.as_deref()),
        },
    )
}

/// The answer for feature `code` of `l`, or the refusal.
async fn decide(
    ctx: &Ctx<'_>,
    l: &License,
    code: &str,
    device: Option<&str>,
) -> Result<Vec<u8>, Refusal> {
    let f = l
        .feature(code)
        .ok_or(Refusal::Engine(EngineError::FeatureNotFound))?;
    ctx.app.engine.check_usable(l, ctx.now)?;
    ctx.app.engine.check_feature(&f, ctx.now)?;
    if let Some(hw) = device {
        ctx.app.engine.check_device(l, hw)?;
    }
    if f.is_floating() {
        let hw = device.ok_or(Refusal::DeviceRequired)?;
        if !ctx.caller.role.can_write() && !ctx.dry_run {
            return Err(Refusal::ReadOnly);
        }
        let cmd = Command::FloatingAcquire {
            license_id: l.id,
            feature_id: Some(f.id),
            hardware_id: Cow::Borrowed(hw),
            now: ctx.now,
            ttl_ms: None,
        };
        if ctx.dry_run {
            ctx.app
                .engine
                .preview(std::slice::from_ref(&cmd))
                .map_err(|(_, e)| e)?;
        } else {
            ctx.app.commit(&cmd).await.map_err(|e| match e {
                crate::app::CommitError::Engine(e) => Refusal::Engine(e),
                crate::app::CommitError::Unavailable => Refusal::Unavailable,
            })?;
        }
    }
    let answer = Allowed {
        allowed: true,
        code: "ok",
        license_key: l.license_key.as_deref(),
        feature: wire::feature(ctx.app, &f, ctx.now),
    };
    Ok(serde_json::to_vec(&answer).unwrap_or_default())
}

#[derive(serde::Serialize)]
struct Allowed<'a> {
    allowed: bool,
    code: &'static str,
    license_key: Option<&'a str>,
    feature: wire::FeatureWire,
}

/// Why a check says no.
enum Refusal {
    Engine(EngineError),
    /// A floating feature is checked for a device (its seat's holder).
    DeviceRequired,
    /// Taking a floating seat is a change; the key may only read.
    ReadOnly,
    Unavailable,
}

impl From<EngineError> for Refusal {
    fn from(e: EngineError) -> Self {
        Refusal::Engine(e)
    }
}

fn refused(r: Refusal, license_key: Option<&str>) -> Vec<u8> {
    let (code, title) = match r {
        Refusal::Engine(e) => {
            let (_, code, title) = refusal(e);
            (code, title)
        }
        Refusal::DeviceRequired => (
            "device_required",
            "A floating feature is checked for a device",
        ),
        Refusal::ReadOnly => ("read_only_key", "This API key may only read"),
        Refusal::Unavailable => ("unavailable", "Changes cannot be stored right now"),
    };
    let v = json!({"allowed": false, "code": code, "title": title, "license_key": license_key});
    serde_json::to_vec(&v).unwrap_or_default()
}

fn refused_problem(e: &NativeError) -> Vec<u8> {
    let v = json!({"allowed": false, "code": e.code, "title": e.title, "license_key": null});
    serde_json::to_vec(&v).unwrap_or_default()
}
