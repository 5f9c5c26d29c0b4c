//! API keys: listing (without secrets) and issuing.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::engine::model::*;
use crate::engine::Command;
use crate::http::{json_value, Query, Resp};

use super::{apply, from_value, object, opt_id, page_params, wire, AdminError, R};

pub(super) fn list_keys(app: &App, q: &Query) -> R<Resp> {
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

pub(super) async fn create_key(app: &App, body: Option<&[u8]>) -> R<Resp> {
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

/// The offline tokens' signing keys: ids and lifetimes (never the secrets).
pub(super) fn token_keys(app: &App) -> R<Resp> {
    let keys: Vec<Value> = app
        .tokens
        .records()
        .iter()
        .map(|r| {
            json!({
                "kid": r.kid,
                "created_at": crate::engine::time::format_instant(r.created_ms),
                "retired_at": r.retired_ms.map(crate::engine::time::format_instant),
                "current": r.retired_ms.is_none(),
            })
        })
        .collect();
    Ok(json_value(StatusCode::OK, &json!({ "keys": keys })))
}

/// Retires the current token key for a new one; old keys stay in the JWKS
/// until every token they signed has expired.
pub(super) async fn rotate_token_key(app: &App) -> R<Resp> {
    let kid = app
        .rotate_token_key()
        .await
        .map_err(|e| AdminError::new(StatusCode::CONFLICT, "rotation_refused", e))?;
    Ok(json_value(StatusCode::OK, &json!({ "kid": kid })))
}
