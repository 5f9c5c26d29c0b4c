//! Resolution: the product and license a request names (license key, or
//! user name with its password), and the checks on them.

use super::*;

/// The product and license a request names.
pub(super) struct Target<'p> {
    pub(super) license: Arc<License>,
    /// License key, or the user's email: what identifies the license to the
    /// client. Borrowed from the request: no allocation on the hot path.
    pub(super) auth_value: Cow<'p, str>,
}

pub(super) fn product(
    app: &App,
    tenant: Id,
    p: &Params,
) -> Result<Arc<Product>, LicenseSpringError> {
    let code = p.required("product")?;
    app.engine
        .product_by_code(tenant, &code)
        .ok_or(UNKNOWN_PRODUCT)
}

/// Finds the license: by `license_key` on key-based products; by `username`
/// (and `password` when `need_password`) on user-based ones, `license_id`
/// choosing among the user's licenses.
pub(super) async fn resolve<'p>(
    app: &App,
    tenant: Id,
    p: &'p Params<'p>,
    need_password: bool,
) -> Result<Target<'p>, LicenseSpringError> {
    let code = p.required("product")?;
    // A key-based product's license is found in the product in place (no
    // count taken on the product: this is every check's path); a user-based
    // one needs the product across the password check.
    let found = app
        .engine
        .with_product_by_code(tenant, &code, |product| {
            match product.authorization_method {
                AuthMethod::LicenseKey => Ok(by_key(product, p)),
                AuthMethod::User => Err(Arc::clone(product)),
            }
        })
        .ok_or(UNKNOWN_PRODUCT)?;
    match found {
        Ok(target) => target,
        Err(product) => resolve_in(app, tenant, &product, p, need_password).await,
    }
}

/// The license a key-based product's request names by `license_key`.
fn by_key<'p>(product: &Product, p: &'p Params<'p>) -> Result<Target<'p>, LicenseSpringError> {
    let key = p.text("license_key").ok_or(MISSING_PARAMETERS)?;
    let license = product
        .licenses_by_key
        .get(key.as_ref())
        .map(|l| l.clone())
        .ok_or(LICENSE_NOT_FOUND)?;
    Ok(Target {
        license,
        auth_value: key,
    })
}

/// [`resolve`] on a product given (a bundle's product) rather than named.
pub(super) async fn resolve_in<'p>(
    app: &App,
    tenant: Id,
    product: &Product,
    p: &'p Params<'p>,
    need_password: bool,
) -> Result<Target<'p>, LicenseSpringError> {
    match product.authorization_method {
        AuthMethod::LicenseKey => by_key(product, p),
        AuthMethod::User => {
            let Some(username) = p.text("username") else {
                return Err(sso_or_missing(p));
            };
            let user = app
                .engine
                .user_by_email(tenant, &username)
                .ok_or(LICENSE_NOT_FOUND)?;
            if need_password {
                verify_password(app, &user, p).await?;
            }
            let wanted = p.int("license_id")?;
            let licenses = app.engine.licenses_of_user(&user, Some(product.id));
            let license = match wanted {
                Some(id) => licenses.into_iter().find(|l| l.id as i64 == id),
                None => licenses.into_iter().next(),
            }
            .ok_or(LICENSE_NOT_FOUND)?;
            Ok(Target {
                license,
                auth_value: username,
            })
        }
    }
}

/// A request that names its user by an SSO token instead of a user name:
/// Tally has no identity provider, so it answers as LicenseSpring does for a
/// customer account without SSO. Otherwise, the user name is missing.
pub(super) fn sso_or_missing(p: &Params) -> LicenseSpringError {
    if p.text("id_token").is_some() || p.text("code").is_some() {
        SSO_TOKEN_ERROR
    } else {
        MISSING_PARAMETERS
    }
}

/// The user `username` names, if the request's `password` is theirs.
pub(super) async fn signed_in(
    app: &App,
    tenant: Id,
    username: &str,
    p: &Params<'_>,
) -> Result<Arc<LicenseUser>, LicenseSpringError> {
    let user = app
        .engine
        .user_by_email(tenant, username)
        .ok_or(WRONG_CREDENTIALS)?;
    verify_password(app, &user, p).await?;
    Ok(user)
}

/// The request's `password` is `user`'s: checked on the password workers,
/// refused while the user or the client's address backs off.
pub(super) async fn verify_password(
    app: &App,
    user: &LicenseUser,
    p: &Params<'_>,
) -> Result<(), LicenseSpringError> {
    let password = p.str("password").ok_or(MISSING_PARAMETERS)?;
    match app
        .passwords
        .verify_user(user, &password, p.peer, app.now())
        .await?
    {
        true => Ok(()),
        false => Err(WRONG_CREDENTIALS),
    }
}

/// The license is usable now and the request's device is activated on it.
pub(super) fn usable_on_device(
    app: &App,
    l: &License,
    p: &Params<'_>,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    app.engine.check_usable(l, now)?;
    let hw = p.required("hardware_id")?;
    app.engine.check_device(l, &hw)?;
    Ok(())
}

pub(super) fn feature(
    app: &App,
    l: &License,
    p: &Params<'_>,
    now: Millis,
) -> Result<Arc<Feature>, LicenseSpringError> {
    let code = p.required("feature")?;
    let f = l.feature(&code).ok_or(INVALID_FEATURE)?;
    app.engine.check_feature(&f, now)?;
    Ok(f)
}
