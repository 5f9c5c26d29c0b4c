//! Reading licenses (by key, or a user's of a user-based product) and
//! activating and deactivating devices.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use super::ops;
use super::{body_json, change, wire, Ctx, Done, NativeError, R};
use crate::engine::model::License;
use crate::engine::EngineError;

pub fn read(ctx: &Ctx<'_>, l: &License) -> R<Done> {
    Ok(Done::json(
        StatusCode::OK,
        &wire::license(ctx.app, l, ctx.now),
    ))
}

pub fn of_user(ctx: &Ctx<'_>, product: &str, user: &str) -> R<Done> {
    let all = ops::licenses_of_user(ctx.app, ctx.caller.tenant_id, product, user)?;
    let licenses: Vec<_> = all
        .iter()
        .map(|l| wire::license(ctx.app, l, ctx.now))
        .collect();
    Ok(Done::json(StatusCode::OK, &json!({ "licenses": licenses })))
}

/// License `id` of a user-based product's user.
pub fn user_license(ctx: &Ctx<'_>, product: &str, user: &str, id: &str) -> R<Arc<License>> {
    let all = ops::licenses_of_user(ctx.app, ctx.caller.tenant_id, product, user)?;
    let id: u64 = id
        .parse()
        .map_err(|_| NativeError::from(EngineError::LicenseNotFound))?;
    all.into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| EngineError::LicenseNotFound.into())
}

pub async fn activate(ctx: &Ctx<'_>, l: &License, hw: &str, body: &[u8]) -> R<Done> {
    let info = ops::device_info(&body_json(body)?, "body".into())?;
    change(
        ctx,
        ops::activate(ctx.app, l, hw.to_string(), info, ctx.now),
    )
    .await
}

pub async fn deactivate(ctx: &Ctx<'_>, l: &License, hw: &str) -> R<Done> {
    change(ctx, ops::deactivate(l, hw.to_string(), ctx.now)).await
}

/// `POST .../token` `{device, ttl_s?}`: an offline token (JWS, EdDSA) of the
/// license's state for an activated device. It expires after `ttl_s`
/// (default a day, at most `TOKEN_TTL_S_MAX`), and never after the license's
/// own end.
pub fn token(ctx: &Ctx<'_>, l: &License, body: &[u8]) -> R<Done> {
    let v = body_json(body)?;
    let mut f = super::ops::Fields::of(&v, "body")?;
    let device = f.str("device")?;
    let ttl_s = f.int_opt("ttl_s")?.unwrap_or(TOKEN_TTL_S_DEFAULT);
    f.done()?;
    if !(1..=crate::tokens::TOKEN_TTL_S_MAX).contains(&ttl_s) {
        return Err(NativeError::invalid(format!(
            "ttl_s: must be 1 to {}",
            crate::tokens::TOKEN_TTL_S_MAX
        )));
    }
    ops::usable(ctx.app, l, None, ctx.now)?;
    ctx.app.engine.check_device(l, device)?;
    let spec = l.spec();
    let end = ctx.app.engine.usable_until(l);
    let iat = ctx.now / 1000;
    let exp = (ctx.now.saturating_add(ttl_s * 1000).min(end)) / 1000;
    let claims = json!({
        "iss": "tally",
        "sub": spec.license_key.clone().unwrap_or_else(|| format!("license:{}", l.id)),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "jti": crate::util::random_token(16),
        "tenant": ctx.caller.tenant_id,
        "device": device,
        "license": wire::license(ctx.app, l, ctx.now),
    });
    let token = ctx.app.tokens.sign(&claims);
    Ok(Done::json(
        StatusCode::CREATED,
        &json!({
            "token": token,
            "expires_at": wire::instant(exp * 1000),
            "jwks_uri": "/v1/.well-known/jwks.json",
        }),
    ))
}

/// A token's life when the request names none, seconds (one day).
pub const TOKEN_TTL_S_DEFAULT: i64 = 86_400;
