//! Native Informatica endpoints of the admin API.
//!
//! - `GET|PUT|DELETE /admin/v1/tenants/{id}/informatica`: the tenant's org:
//!   `{"orgId", "name", "users": [{"username", "password" (or an argon2
//!   "passwordHash"), "admin"}], "licenses": {"customLicenses",
//!   "assignedEditions", "customLimits"}}`. The org hierarchy is the tenant
//!   hierarchy (`parent_id`).
//! - `POST .../informatica/consume` `{"limitDefinition", "amount"}`: draws on
//!   a custom limit (403 `limit_reached` past its value; -1 never is).
//! - `GET .../informatica/grants?licenseDef=...` or `?edition=...`: whether
//!   the license or edition grants now (not past its expiration date).

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::error::AdminError;
use super::{apply, existing_tenant, from_value, object, R};
use crate::app::App;
use crate::engine::infa::{Grant, InfaOrg, InfaSpec};
use crate::engine::InfaRefusal;
use crate::engine::{Command, EngineError, Outcome};
use crate::http::{json, json_value, Query, Resp};

pub fn render(app: &App, o: &InfaOrg) -> Value {
    let spec = o.spec.read().clone();
    let users: Vec<Value> = spec
        .users
        .iter()
        .map(|u| json!({"username": u.username, "admin": u.admin}))
        .collect();
    let limits: Vec<Value> = o
        .limit_use()
        .into_iter()
        .map(|(d, value, used)| json!({"limitDefinition": d, "value": value, "used": used}))
        .collect();
    let parent = app
        .engine
        .tenant(o.tenant_id)
        .and_then(|t| t.spec.read().parent_id);
    json!({
        "tenant_id": o.tenant_id,
        "parent_tenant_id": parent,
        "orgId": spec.org_id,
        "name": spec.name,
        "users": users,
        "licenses": spec.licenses,
        "limits": limits,
        "version": o.version.load(std::sync::atomic::Ordering::Acquire),
    })
}

#[allow(
    clippy::too_many_lines,
    reason = "the route table of the Informatica provisioning endpoints, in one place"
)]
pub async fn route(
    app: &App,
    m: &Method,
    id: &str,
    rest: &[&str],
    query: &Query<'_>,
    body: Option<&[u8]>,
) -> R<Resp> {
    let tid = existing_tenant(app, id)?;
    let org = || {
        app.engine
            .infa(tid)
            .ok_or_else(|| AdminError::not_found("informatica org"))
    };
    match rest {
        [] if m == Method::GET => Ok(json_value(StatusCode::OK, &render(app, &*org()?))),
        [] if m == Method::PUT => {
            let mut b = object(body)?;
            let users = b.get("users").and_then(Value::as_array).map_or(0, Vec::len);
            if users > crate::engine::infa::INFA_USERS_MAX {
                return Err(AdminError::new(
                    StatusCode::BAD_REQUEST,
                    "too_many",
                    "too many users",
                ));
            }
            // argon2 takes tens of milliseconds a password: on the password
            // workers, not the runtime.
            let b = app
                .passwords
                .work(move |_| crate::credentials::hash_passwords(&mut b, "").map(|_| b))
                .await?
                .map_err(|(p, e)| AdminError::bad(p, e))?;
            let spec: InfaSpec = from_value(Value::Object(b))?;
            let created = app.engine.infa(tid).is_none();
            let first_version = app.engine.next_id();
            apply(
                app,
                Command::PutInfa {
                    tenant_id: tid,
                    spec,
                    first_version,
                },
            )
            .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_value(status, &render(app, &*org()?)))
        }
        [] if m == Method::DELETE => {
            apply(app, Command::DeleteInfa { tenant_id: tid }).await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        ["consume"] if m == Method::POST => {
            org()?;
            let b = object(body)?;
            let limit = b
                .get("limitDefinition")
                .and_then(Value::as_str)
                .ok_or_else(|| AdminError::bad("limitDefinition", "a string is required"))?
                .to_string();
            let amount = match b.get("amount") {
                None => 1,
                Some(v) => v
                    .as_i64()
                    .filter(|a| *a > 0)
                    .ok_or_else(|| AdminError::bad("amount", "must be a positive integer"))?,
            };
            let cmd = Command::InfaConsume {
                tenant_id: tid,
                limit: std::borrow::Cow::Borrowed(&limit),
                amount,
            };
            match app.commit(&cmd).await {
                Ok(Outcome::Consumed { total, .. }) => Ok(json_value(
                    StatusCode::OK,
                    &json!({"limitDefinition": limit, "used": total}),
                )),
                Ok(_) => Ok(json_value(
                    StatusCode::OK,
                    &json!({"limitDefinition": limit}),
                )),
                Err(crate::app::CommitError::Engine(EngineError::Infa(
                    InfaRefusal::LimitReached,
                ))) => Err(AdminError::new(
                    StatusCode::FORBIDDEN,
                    "limit_reached",
                    format!("custom limit {limit} is used up"),
                )),
                Err(e) => Err(AdminError::from(e)),
            }
        }
        ["grants"] if m == Method::GET => {
            let o = org()?;
            let now = app.now();
            let grant = match (query.get("licenseDef"), query.get("edition")) {
                (Some(d), None) => o.license_grant(d, now),
                (None, Some(e)) => o.edition_grant(e, now),
                _ => {
                    return Err(AdminError::bad(
                        "licenseDef",
                        "give exactly one of licenseDef and edition",
                    ))
                }
            };
            let v = match grant {
                Grant::Until(exp) => json!({"granted": true, "expirationDate": exp}),
                Grant::Expired(exp) => {
                    json!({"granted": false, "reason": "expired", "expirationDate": exp})
                }
                Grant::Unknown => json!({"granted": false, "reason": "unknown"}),
            };
            Ok(json_value(StatusCode::OK, &v))
        }
        _ => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "no route for {m} /admin/v1/tenants/{id}/informatica/{}",
                rest.join("/")
            ),
        )),
    }
}
