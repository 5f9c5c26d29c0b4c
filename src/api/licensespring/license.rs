//! Handlers of a license's life on a device: activation, checks (the
//! hot path), borrowing.

use super::*;

pub(super) async fn activate(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, true).await?;
    let hw = p.required("hardware_id")?;
    activate_device(app, &t.license, p, &hw, now).await?;
    license_body(app, &t, &Render::of(p, Some(&hw)), now).await
}

/// Activates device `hw` on `license` with the device details and variables
/// the request carries.
pub(super) async fn activate_device(
    app: &App,
    license: &License,
    p: &Params<'_>,
    hw: &str,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    let s = |k: &str| p.str(k).map(Cow::into_owned).unwrap_or_default();
    let info = DeviceInfo {
        os_ver: s("os_ver"),
        hostname: s("hostname"),
        ip: s("ip"),
        mac_address: s("mac_address"),
        is_vm: p.bool("is_vm"),
        vm_info: s("vm_info"),
        app_ver: s("app_ver"),
        sdk_ver: s("sdk_ver"),
    };
    let variables = p.variables()?;
    let device_id = app.engine.next_id();
    apply(
        app,
        Command::Activate {
            license_id: license.id,
            hardware_id: Cow::Borrowed(hw),
            info,
            device_id,
            now,
        },
    )
    .await?;
    if !variables.is_empty() {
        apply(
            app,
            Command::TrackDeviceVariables {
                license_id: license.id,
                hardware_id: Cow::Borrowed(hw),
                variables,
                now,
            },
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn check_license(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    let hw = p.required("hardware_id")?;
    check_in_use(app, &t.license, &hw, now).await?;
    let r = Render {
        hide_expired_features: !p.bool("include_expired_features"),
        ..Render::of(p, Some(&hw))
    };
    license_body(app, &t, &r, now).await
}

/// The license is usable now on device `hw`; a floating license takes or
/// renews the device's seat.
pub(super) async fn check_in_use(
    app: &App,
    license: &License,
    hw: &str,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    app.engine.check_usable(license, now)?;
    let floating = {
        let s = license.spec.read();
        s.is_floating || s.is_floating_cloud
    };
    app.engine.check_device(license, hw)?;
    if floating {
        let cmd = Command::FloatingAcquire {
            license_id: license.id,
            feature_id: None,
            hardware_id: Cow::Borrowed(hw),
            now,
            ttl_ms: None,
        };
        apply(app, cmd).await?;
    }
    Ok(())
}

/// What a feature check decides under the license's features lock.
enum Decided {
    Answered(Answer),
    /// A floating feature: its seat is renewed (a command) before the answer.
    Floating(Arc<Feature>),
}

/// The hot path: one license lookup, one feature scan, at most one lease renewal.
pub(super) async fn check_feature(
    app: &App,
    state: &LsState,
    tenant: Id,
    p: &Params<'_>,
    now: Millis,
) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    usable_on_device(app, &t.license, p, now)?;
    let code = p.required("feature")?;
    // Decided and answered in place under the features' read lock (no count
    // taken on the feature), unless a floating seat must be renewed first.
    let decided = t
        .license
        .with_feature(&code, |f| -> Result<Decided, LicenseSpringError> {
            app.engine.check_feature(f, now)?;
            if f.is_floating() {
                return Ok(Decided::Floating(Arc::clone(f)));
            }
            Ok(Decided::Answered(feature_body(
                state, &t.license, f, None, now,
            )))
        })
        .ok_or(INVALID_FEATURE)??;
    let f = match decided {
        Decided::Answered(answer) => return answer,
        Decided::Floating(f) => f,
    };
    let hw = p.required("hardware_id")?;
    let cmd = Command::FloatingAcquire {
        license_id: t.license.id,
        feature_id: Some(f.id),
        hardware_id: Cow::Borrowed(&hw),
        now,
        ttl_ms: None,
    };
    let in_use = match apply(app, cmd).await? {
        Outcome::Floating { in_use, .. } => in_use,
        _ => return Err(INTERNAL),
    };
    feature_body(state, &t.license, &f, Some(in_use), now)
}

pub(super) async fn borrow(
    app: &App,
    tenant: Id,
    p: &Params<'_>,
    now: Millis,
    for_feature: bool,
) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    usable_on_device(app, &t.license, p, now)?;
    let hw = p.required("hardware_id")?;
    let f = if for_feature {
        Some(feature(app, &t.license, p, now)?)
    } else {
        None
    };
    // null or absent: the longest borrow allowed.
    let until = match p.text("borrowed_until") {
        None => {
            let max = app.engine.max_borrow_ms(&t.license);
            if max == 0 {
                return Err(BORROW_NOT_ALLOWED);
            }
            now + max
        }
        Some(s) => parse_instant(&s).ok_or(INVALID_PARAMETERS)?,
    };
    let cmd = Command::FloatingBorrow {
        license_id: t.license.id,
        feature_id: f.as_ref().map(|f| f.id),
        hardware_id: Cow::Borrowed(&hw),
        until,
        now,
    };
    let Outcome::Borrowed { until, .. } = apply(app, cmd).await? else {
        return Err(INTERNAL);
    };
    // LicenseSpring's FloatingBorrowResponse, for a license and a feature alike.
    let device_id = app.engine.device(&t.license, &hw).map(|d| d.id);
    // Hours: the license's own limit, or else its product's.
    let max_borrow_time = app.engine.max_borrow_ms(&t.license) / crate::engine::time::HOUR_MS;
    to_vec(&json!({
        "borrowed_until": format_instant(until),
        "max_borrow_time": max_borrow_time,
        "device_id": device_id,
        "license_id": t.license.id,
        "company": {"id": t.license.tenant_id},
    }))
}
