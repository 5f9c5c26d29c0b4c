//! Every tenant's webhooks: `GET|POST /admin/v1/webhooks` (`tenant_id` in
//! the query of a list, in the body of a create), `GET|PATCH|DELETE
//! /admin/v1/webhooks/{id}`, `POST .../{id}/secret/rotate`, `GET
//! .../{id}/deliveries`, `POST .../{id}/deliveries/{event}/retry`.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{apply, object, opt_id, parse_id, AdminError, R};
use crate::app::App;
use crate::engine::time::DAY_MS;
use crate::engine::webhook::Subscription;
use crate::engine::Command;
use crate::http::{json, json_value, Query, Resp};
use crate::webhooks as hooks;

fn field(e: hooks::FieldError) -> AdminError {
    AdminError::bad(e.0, e.1)
}

fn subscription(app: &App, id: &str) -> R<Subscription> {
    let id = parse_id(id, "webhook")?;
    app.engine
        .webhooks(None)
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| AdminError::not_found("webhook"))
}

pub(super) async fn route(
    app: &App,
    m: &Method,
    rest: &[&str],
    q: &Query<'_>,
    body: Option<&[u8]>,
) -> R<Resp> {
    match rest {
        [] if m == Method::GET => {
            let tenant = opt_id(q, "tenant_id")?;
            let list: Vec<Value> = app
                .engine
                .webhooks(tenant)
                .iter()
                .map(|s| hooks::view(app, s, None))
                .collect();
            Ok(json_value(StatusCode::OK, &json!({ "items": list })))
        }
        [] if m == Method::POST => create(app, body).await,
        [id] if m == Method::GET => {
            let s = subscription(app, id)?;
            Ok(json_value(StatusCode::OK, &hooks::view(app, &s, None)))
        }
        [id] if m == Method::PATCH => {
            let s = subscription(app, id)?;
            let v = Value::Object(object(body)?);
            if v.get("tenant_id").is_some() {
                return Err(AdminError::bad("tenant_id", "cannot be changed"));
            }
            let (spec, secret) =
                hooks::spec_from(app, s.tenant_id, &v, Some(&s.spec)).map_err(field)?;
            apply(
                app,
                Command::PutWebhook {
                    id: s.id,
                    tenant_id: s.tenant_id,
                    spec,
                    secret,
                    now: app.now(),
                },
            )
            .await?;
            let s = subscription(app, id)?;
            Ok(json_value(StatusCode::OK, &hooks::view(app, &s, None)))
        }
        [id] if m == Method::DELETE => {
            let s = subscription(app, id)?;
            apply(
                app,
                Command::DeleteWebhook {
                    tenant_id: s.tenant_id,
                    id: s.id,
                },
            )
            .await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        [id, "secret", "rotate"] if m == Method::POST => rotate(app, id, body).await,
        [id, "deliveries"] if m == Method::GET => {
            let s = subscription(app, id)?;
            let number = |name: &'static str, default: usize| -> R<usize> {
                q.get(name).map_or(Ok(default), |v| {
                    v.parse()
                        .map_err(|_| AdminError::bad(name, "must be a whole number"))
                })
            };
            let after = number("after", 0)?;
            let limit = number("limit", hooks::DELIVERIES_PAGE_DEFAULT)?;
            if !(1..=hooks::DELIVERIES_PAGE_MAX).contains(&limit) {
                return Err(AdminError::bad("limit", "must be 1 to 1000"));
            }
            Ok(json_value(
                StatusCode::OK,
                &hooks::deliveries_view(app, s.id, after, limit),
            ))
        }
        [id, "deliveries", event, "retry"] if m == Method::POST => {
            let s = subscription(app, id)?;
            let seq = crate::engine::webhook::parse_event_id(event)
                .ok_or_else(|| AdminError::not_found("event"))?;
            apply(
                app,
                Command::WebhookRetry {
                    tenant_id: s.tenant_id,
                    subscription_id: s.id,
                    event: seq,
                    now: app.now(),
                },
            )
            .await?;
            Ok(json_value(
                StatusCode::ACCEPTED,
                &json!({"event_id": event, "state": "pending"}),
            ))
        }
        _ => Err(AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not allowed here"),
        )),
    }
}

async fn create(app: &App, body: Option<&[u8]>) -> R<Resp> {
    let v = Value::Object(object(body)?);
    let tenant = match v.get("tenant_id") {
        Some(Value::String(s)) => {
            parse_id(s, "tenant").map_err(|_| AdminError::bad("tenant_id", "must be an id"))?
        }
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| AdminError::bad("tenant_id", "must be an id"))?,
        _ => return Err(AdminError::bad("tenant_id", "is required")),
    };
    app.engine
        .tenant(tenant)
        .ok_or_else(|| AdminError::bad("tenant_id", "no such tenant"))?;
    let (spec, secret) = hooks::spec_from(app, tenant, &v, None).map_err(field)?;
    let secret = secret.unwrap_or_else(hooks::new_secret);
    let id = app.engine.next_id();
    apply(
        app,
        Command::PutWebhook {
            id,
            tenant_id: tenant,
            spec,
            secret: Some(secret.clone()),
            now: app.now(),
        },
    )
    .await?;
    let s = subscription(app, &id.to_string())?;
    Ok(json_value(
        StatusCode::CREATED,
        &hooks::view(app, &s, Some(&secret)),
    ))
}

async fn rotate(app: &App, id: &str, body: Option<&[u8]>) -> R<Resp> {
    let s = subscription(app, id)?;
    let m = match body {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => object(Some(b))?,
        _ => Default::default(),
    };
    if let Some(k) = m.keys().find(|k| k.as_str() != "overlap_ms") {
        return Err(AdminError::bad(k.clone(), "is not a field of a rotation"));
    }
    let overlap_ms = match m.get("overlap_ms") {
        None => DAY_MS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| AdminError::bad("overlap_ms", "must be a whole number of ms"))?,
    };
    let secret = hooks::new_secret();
    apply(
        app,
        Command::RotateWebhookSecret {
            tenant_id: s.tenant_id,
            id: s.id,
            secret: secret.clone(),
            overlap_ms,
            now: app.now(),
        },
    )
    .await?;
    let s = subscription(app, id)?;
    Ok(json_value(
        StatusCode::OK,
        &hooks::view(app, &s, Some(&secret)),
    ))
}
