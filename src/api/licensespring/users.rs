//! License users' own calls: `user_licenses`, `change_password`, and a
//! customer's users (`customer_license_users`).

use super::*;

/// `POST change_password` `{username, password, new_password}`: the current
/// password must be right; the new one replaces it (its hash is logged like
/// every change), which ends the cached verifications of the old one.
/// Answers the string `password_changed`.
pub(super) async fn change_password(app: &App, tenant: Id, p: &Params<'_>) -> Answer {
    let username = p.required("username")?;
    let new_password = p.required("new_password")?;
    let user = signed_in(app, tenant, &username, p).await?;
    let new_password = new_password.into_owned();
    // argon2 is slow by design: on the password workers.
    let hash = app
        .passwords
        .hash_on_worker(new_password)
        .await?
        .map_err(|_| INVALID_PARAMETERS)?;
    let mut spec = user.spec.read().clone();
    spec.password_hash = hash;
    spec.is_initial_password = false;
    apply(app, Command::PutUser { id: user.id, spec }).await?;
    Ok(string_answer(PASSWORD_CHANGED))
}

const PASSWORD_CHANGED: &str = "password_changed";

pub(super) async fn user_licenses(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let username = p.text("username").ok_or_else(|| sso_or_missing(p))?;
    let user = signed_in(app, tenant, &username, p).await?;
    let product = match p.text("product") {
        Some(code) => Some(
            app.engine
                .product_by_code(tenant, &code)
                .ok_or(UNKNOWN_PRODUCT)?
                .id,
        ),
        None => None,
    };
    let u = wire::user(&app.engine, &user);
    let mut items: Vec<Value> = Vec::new();
    for license in app.engine.licenses_of_user(&user, product) {
        let t = Target {
            license,
            auth_value: Cow::Borrowed(&username),
        };
        let license = license_object(app, &t, &Render::default(), now, Map::new()).await;
        items.push(json!({"license": license, "user": u}));
    }
    to_vec(&Value::Array(items))
}

pub(super) fn customer_license_users(app: &App, tenant: Id, p: &Params) -> Answer {
    let product = product(app, tenant, p)?;
    let wanted = p.required("customer")?;
    let customer = app
        .engine
        .customers_of_tenant(tenant)
        .into_iter()
        .find(|c| {
            let s = c.spec.read();
            s.email.eq_ignore_ascii_case(&wanted)
                || s.reference == *wanted
                || c.id.to_string() == *wanted
        })
        .ok_or(CUSTOMER_NOT_FOUND)?;
    let users: Vec<Value> = app
        .engine
        .users_of_customer(tenant, customer.id)
        .iter()
        .map(|u| {
            let mut v = wire::user(&app.engine, u);
            let ids: Vec<Id> = app
                .engine
                .licenses_of_user(u, Some(product.id))
                .iter()
                .map(|l| l.id)
                .collect();
            v["license_ids"] = ids.into();
            v
        })
        .collect();
    to_vec(&json!({"customer": wire::customer(Some(&customer)), "users": users}))
}
