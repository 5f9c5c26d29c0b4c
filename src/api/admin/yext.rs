//! Native Yext endpoints of the admin API: `GET|PUT|DELETE
//! /admin/v1/tenants/{id}/yext` provisions a tenant's Yext account and its
//! license packs (`{"accountId", "packs": [{"id", "name", "total",
//! "active"?}]}`); assignments are made through the Yext surface.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::error::AdminError;
use super::{apply, existing_tenant, from_value, object, R};
use crate::app::App;
use crate::engine::yext::{YextAccount, YextSpec};
use crate::engine::Command;
use crate::http::{json, json_value, Resp};

pub fn render(a: &YextAccount, now: crate::engine::time::Millis) -> Value {
    let spec = a.spec.read().clone();
    let packs: Vec<Value> = a
        .packs(now)
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "total": p.total, "assigned": p.assigned}))
        .collect();
    json!({"tenant_id": a.tenant_id, "spec": *spec, "active_packs": packs})
}

pub async fn route(app: &App, m: &Method, id: &str, body: Option<&[u8]>) -> R<Resp> {
    let tid = existing_tenant(app, id)?;
    let now = app.now();
    let get = |app: &App| {
        app.engine
            .yext(tid)
            .ok_or_else(|| AdminError::not_found("yext account"))
    };
    match *m {
        Method::GET => Ok(json_value(StatusCode::OK, &render(&*get(app)?, now))),
        Method::PUT => {
            let spec: YextSpec = from_value(Value::Object(object(body)?))?;
            let created = app.engine.yext(tid).is_none();
            apply(
                app,
                Command::PutYext {
                    tenant_id: tid,
                    spec,
                },
            )
            .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_value(status, &render(&*get(app)?, now)))
        }
        Method::DELETE => {
            apply(app, Command::DeleteYext { tenant_id: tid }).await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        _ => Err(AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not allowed on /admin/v1/tenants/{id}/yext"),
        )),
    }
}
