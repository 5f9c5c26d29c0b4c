//! The generic kinds (tenants, products, customers, users, licenses): list,
//! create, and read, patch or delete one, all driven by [`Kind`]'s table.

use hyper::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::app::App;
use crate::credentials::Passwords;
use crate::engine::model::*;
use crate::engine::Command;
use crate::http::{json, json_value, Query, Resp};

use super::{
    apply, from_value, merge, object, opt_id, page_params, page_response, parse_id, wire,
    AdminError, R,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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

pub(super) fn list(app: &App, q: &Query, kind: Kind) -> R<Resp> {
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

pub(super) async fn create(app: &App, kind: Kind, body: Option<&[u8]>) -> R<Resp> {
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

pub(super) async fn item(
    app: &App,
    m: &Method,
    kind: Kind,
    id: &str,
    body: Option<&[u8]>,
) -> R<Resp> {
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
