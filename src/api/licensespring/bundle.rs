//! Bundles: `activate_bundle`, `check_bundle`, `deactivate_bundle`.
//!
//! A bundle is a product whose `bundle_products` name other products of the
//! tenant. A bundle license is the license with the bundle's key (or, on
//! user-based products, the user's license) on each of them; the answers list
//! one license object per bundled product that has one, in the bundle's order,
//! and the SDKs file each under its `product_details.short_code`.

use super::*;

/// The licenses the request names on each of the bundle's products.
async fn targets<'p>(
    app: &App,
    tenant: Id,
    p: &'p Params<'p>,
    need_password: bool,
) -> Result<Vec<Target<'p>>, LicenseSpringError> {
    let bundle = product(app, tenant, p)?;
    let codes = bundle.spec.read().bundle_products.clone();
    if codes.is_empty() {
        return Err(NOT_A_BUNDLE);
    }
    let mut out = Vec::with_capacity(codes.len());
    for code in &codes {
        let member = app
            .engine
            .product_by_code(tenant, code)
            .ok_or(UNKNOWN_PRODUCT)?;
        match resolve_in(app, tenant, &member, p, need_password).await {
            Ok(t) => out.push(t),
            Err(e) if e == LICENSE_NOT_FOUND => continue,
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(LICENSE_NOT_FOUND);
    }
    Ok(out)
}

async fn licenses_body(app: &App, targets: &[Target<'_>], r: &Render<'_>, now: Millis) -> Answer {
    let mut list = Vec::with_capacity(targets.len());
    for t in targets {
        list.push(Value::Object(
            license_object(app, t, r, now, Map::new()).await,
        ));
    }
    to_vec(&Value::Array(list))
}

pub(super) async fn activate(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let hw = p.required("hardware_id")?;
    let targets = activate_all(app, tenant, p, &hw, now).await?;
    licenses_body(app, &targets, &Render::of(p, Some(&hw)), now).await
}

/// Activates device `hw` on every license of the bundle, or on none: a
/// refusal of one undoes the activations made before it.
pub(super) async fn activate_all<'p>(
    app: &App,
    tenant: Id,
    p: &'p Params<'p>,
    hw: &str,
    now: Millis,
) -> Result<Vec<Target<'p>>, LicenseSpringError> {
    let targets = targets(app, tenant, p, true).await?;
    let mut activated: Vec<&License> = Vec::new();
    for t in &targets {
        let was_active = app.engine.check_device(&t.license, hw).is_ok();
        if let Err(e) = activate_device(app, &t.license, p, hw, now).await {
            for l in activated {
                undo_activation(app, l, hw, now).await;
            }
            return Err(e);
        }
        if !was_active {
            activated.push(&t.license);
        }
    }
    Ok(targets)
}

/// Deactivates `hw` on `license` after a later bundle member refused it. A
/// failure here (the store latched) leaves the activation, which the client
/// may deactivate itself; the refusal it gets says what went wrong first.
async fn undo_activation(app: &App, license: &License, hw: &str, now: Millis) {
    let cmd = Command::Deactivate {
        license_id: license.id,
        hardware_id: Cow::Borrowed(hw),
        now,
    };
    let _ = apply(app, cmd).await;
}

/// Checks every license of the bundle on the device (taking or renewing
/// floating seats as `check_license` does).
pub(super) async fn check(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let targets = targets(app, tenant, p, false).await?;
    let hw = p.required("hardware_id")?;
    for t in &targets {
        check_in_use(app, &t.license, &hw, now).await?;
    }
    let r = Render {
        hide_expired_features: !p.bool("include_expired_features"),
        ..Render::of(p, Some(&hw))
    };
    licenses_body(app, &targets, &r, now).await
}

pub(super) async fn deactivate(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let hw = p.required("hardware_id")?;
    deactivate_all(app, tenant, p, &hw, now).await?;
    Ok(string_answer(LICENSE_DEACTIVATED))
}

/// Deactivates device `hw` on every license of the bundle it is active on.
pub(super) async fn deactivate_all(
    app: &App,
    tenant: Id,
    p: &Params<'_>,
    hw: &str,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    let targets = targets(app, tenant, p, false).await?;
    let active: Vec<&Target> = targets
        .iter()
        .filter(|t| app.engine.check_device(&t.license, hw).is_ok())
        .collect();
    if active.is_empty() {
        return Err(DEVICE_NOT_FOUND);
    }
    for t in active {
        let cmd = Command::Deactivate {
            license_id: t.license.id,
            hardware_id: Cow::Borrowed(hw),
            now,
        };
        apply(app, cmd).await?;
    }
    Ok(())
}
