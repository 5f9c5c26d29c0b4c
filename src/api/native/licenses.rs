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
