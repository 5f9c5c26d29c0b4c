//! The caller's tenant's webhooks: `GET|POST /v1/webhooks`,
//! `GET|PATCH|DELETE /v1/webhooks/{id}`, `POST /v1/webhooks/{id}/secret/rotate`,
//! `GET /v1/webhooks/{id}/deliveries` and
//! `POST /v1/webhooks/{id}/deliveries/{event}/retry`. Events and delivery:
//! `docs/webhooks.md`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{body_json, Ctx, Done, NativeError, R};
use crate::engine::model::Id;
use crate::engine::time::DAY_MS;
use crate::engine::Command;
use crate::http::Query;
use crate::webhooks as hooks;

/// A rotated secret stays valid this long by default, ms.
pub const SECRET_OVERLAP_MS_DEFAULT: i64 = DAY_MS;

fn field(e: hooks::FieldError) -> NativeError {
    NativeError::invalid(format!("{}: {}", e.0, e.1))
}

/// Webhook management is not previewed: a dry run is refused rather than
/// answered as if it were made.
fn no_dry_run(ctx: &Ctx<'_>) -> R<()> {
    if ctx.dry_run {
        return Err(NativeError::invalid(
            "dry_run: webhooks are not previewed; leave it out",
        ));
    }
    Ok(())
}

fn id_of(ctx: &Ctx<'_>, id: &str) -> R<crate::engine::webhook::Subscription> {
    id.parse::<Id>()
        .ok()
        .and_then(|id| ctx.app.engine.webhook(ctx.caller.tenant_id, id))
        .ok_or_else(|| NativeError::from(crate::engine::EngineError::WebhookNotFound))
}

pub fn list(ctx: &Ctx<'_>) -> R<Done> {
    let list: Vec<Value> = ctx
        .app
        .engine
        .webhooks(Some(ctx.caller.tenant_id))
        .iter()
        .map(|s| hooks::view(ctx.app, s, None))
        .collect();
    Ok(Done::json(StatusCode::OK, &json!({ "webhooks": list })))
}

pub async fn create(ctx: &Ctx<'_>, body: &[u8]) -> R<Done> {
    no_dry_run(ctx)?;
    ctx.caller.may_write()?;
    let v = body_json(body)?;
    if v.get("tenant_id").is_some() {
        return Err(NativeError::invalid("tenant_id: is the key's own tenant"));
    }
    let tenant = ctx.caller.tenant_id;
    let (spec, secret) = hooks::spec_from(ctx.app, tenant, &v, None).map_err(field)?;
    let secret = secret.unwrap_or_else(hooks::new_secret);
    let id = ctx.app.engine.next_id();
    ctx.app
        .commit(&Command::PutWebhook {
            id,
            tenant_id: tenant,
            spec,
            secret: Some(secret.clone()),
            now: ctx.now,
        })
        .await?;
    let s = ctx
        .app
        .engine
        .webhook(tenant, id)
        .ok_or_else(|| NativeError::from(crate::engine::EngineError::WebhookNotFound))?;
    Ok(Done::json(
        StatusCode::CREATED,
        &hooks::view(ctx.app, &s, Some(&secret)),
    ))
}

pub fn get(ctx: &Ctx<'_>, id: &str) -> R<Done> {
    let s = id_of(ctx, id)?;
    Ok(Done::json(StatusCode::OK, &hooks::view(ctx.app, &s, None)))
}

pub async fn patch(ctx: &Ctx<'_>, id: &str, body: &[u8]) -> R<Done> {
    no_dry_run(ctx)?;
    ctx.caller.may_write()?;
    let s = id_of(ctx, id)?;
    let v = body_json(body)?;
    if v.get("tenant_id").is_some() {
        return Err(NativeError::invalid("tenant_id: cannot be changed"));
    }
    let (spec, secret) =
        hooks::spec_from(ctx.app, s.tenant_id, &v, Some(&s.spec)).map_err(field)?;
    ctx.app
        .commit(&Command::PutWebhook {
            id: s.id,
            tenant_id: s.tenant_id,
            spec,
            secret,
            now: ctx.now,
        })
        .await?;
    get(ctx, id)
}

pub async fn delete(ctx: &Ctx<'_>, id: &str) -> R<Done> {
    no_dry_run(ctx)?;
    ctx.caller.may_write()?;
    let s = id_of(ctx, id)?;
    ctx.app
        .commit(&Command::DeleteWebhook {
            tenant_id: s.tenant_id,
            id: s.id,
        })
        .await?;
    Ok(Done::raw(StatusCode::NO_CONTENT, ""))
}

pub async fn rotate(ctx: &Ctx<'_>, id: &str, body: &[u8]) -> R<Done> {
    no_dry_run(ctx)?;
    ctx.caller.may_write()?;
    let s = id_of(ctx, id)?;
    let v = body_json(body)?;
    let m = v
        .as_object()
        .ok_or_else(|| NativeError::invalid("body: must be a JSON object"))?;
    if let Some(k) = m.keys().find(|k| k.as_str() != "overlap_ms") {
        return Err(NativeError::invalid(format!(
            "{k}: is not a field of a rotation"
        )));
    }
    let overlap_ms = match m.get("overlap_ms") {
        None => SECRET_OVERLAP_MS_DEFAULT,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| NativeError::invalid("overlap_ms: must be a whole number of ms"))?,
    };
    let secret = hooks::new_secret();
    ctx.app
        .commit(&Command::RotateWebhookSecret {
            tenant_id: s.tenant_id,
            id: s.id,
            secret: secret.clone(),
            overlap_ms,
            now: ctx.now,
        })
        .await?;
    let s = id_of(ctx, id)?;
    Ok(Done::json(
        StatusCode::OK,
        &hooks::view(ctx.app, &s, Some(&secret)),
    ))
}

pub fn deliveries(ctx: &Ctx<'_>, id: &str, q: &Query<'_>) -> R<Done> {
    let s = id_of(ctx, id)?;
    let number = |name: &str, default: usize| -> R<usize> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| NativeError::invalid(format!("{name}: must be a whole number")))
        })
    };
    let after = number("after", 0)?;
    let limit = number("limit", hooks::DELIVERIES_PAGE_DEFAULT)?;
    if !(1..=hooks::DELIVERIES_PAGE_MAX).contains(&limit) {
        return Err(NativeError::invalid("limit: must be 1 to 1000"));
    }
    Ok(Done::json(
        StatusCode::OK,
        &hooks::deliveries_view(ctx.app, s.id, after, limit),
    ))
}

pub async fn retry(ctx: &Ctx<'_>, id: &str, event: &str) -> R<Done> {
    no_dry_run(ctx)?;
    ctx.caller.may_write()?;
    let s = id_of(ctx, id)?;
    let seq = crate::engine::webhook::parse_event_id(event)
        .ok_or_else(|| NativeError::from(crate::engine::EngineError::EventNotFound))?;
    ctx.app
        .commit(&Command::WebhookRetry {
            tenant_id: s.tenant_id,
            subscription_id: s.id,
            event: seq,
            now: ctx.now,
        })
        .await?;
    Ok(Done::json(
        StatusCode::ACCEPTED,
        &json!({"event_id": event, "state": "pending"}),
    ))
}
