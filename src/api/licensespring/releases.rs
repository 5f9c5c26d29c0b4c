//! Product versions and installation files: `versions`, `installation_file`,
//! and the installation-file fields of a license object (`env`, `channel`).
//!
//! A product's releases are listed oldest first; the newest is the last one
//! that matches. As LicenseSpring documents, a license sees the versions
//! released up to the end of its maintenance period, or else of its validity
//! period, and all of them when it has neither.

use super::*;
use crate::engine::end_instant;

/// The releases a license may see, with their positions in the product's
/// list: enabled, of `env` and `channel` where given, released in time.
pub(super) fn visible<'a>(
    product: &'a ProductSpec,
    license: &LicenseSpec,
    env: Option<&'a str>,
    channel: Option<&'a str>,
) -> impl Iterator<Item = (usize, &'a ReleaseSpec)> + 'a {
    let until = if license.enable_maintenance_period && license.maintenance_period.is_some() {
        end_instant(&license.maintenance_period)
    } else {
        end_instant(&license.validity_period)
    };
    product.releases.iter().enumerate().filter(move |(_, r)| {
        r.enabled
            && env.is_none_or(|e| r.environment == e)
            && channel.is_none_or(|c| r.channel == c)
            && r.release_date
                .as_deref()
                .and_then(parse_instant)
                .is_none_or(|d| d < until)
    })
}

/// The newest release a license may see for `env` and `channel`.
pub(super) fn newest<'a>(
    product: &'a ProductSpec,
    license: &LicenseSpec,
    env: Option<&'a str>,
    channel: Option<&'a str>,
) -> Option<(usize, &'a ReleaseSpec)> {
    visible(product, license, env, channel).last()
}

/// The license the request names, usable now, on an activated device.
async fn licensed<'p>(
    app: &App,
    tenant: Id,
    p: &'p Params<'p>,
    now: Millis,
) -> Result<Target<'p>, LicenseSpringError> {
    let t = resolve(app, tenant, p, false).await?;
    app.engine
        .check_usable(&t.license, now)
        .map_err(|_| ACTIVE_LICENSE_REQUIRED)?;
    let hw = p.required("hardware_id")?;
    app.engine.check_device(&t.license, &hw)?;
    Ok(t)
}

/// `GET versions`: `[{"version", "release_date"}]`, oldest first, each
/// version once.
pub(super) async fn versions(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = licensed(app, tenant, p, now).await?;
    let product = app.engine.product(t.license.product_id).ok_or(INTERNAL)?;
    let ps = product.spec.read();
    let ls = t.license.spec.read();
    let mut seen: Vec<&str> = Vec::new();
    let mut list = Vec::new();
    for (_, r) in visible(&ps, &ls, p.text_ref("env"), p.text_ref("channel")) {
        if seen.contains(&r.version.as_str()) {
            continue;
        }
        seen.push(&r.version);
        list.push(json!({
            "version": r.version,
            "release_date": r.release_date.as_deref().map(wire::release_date),
        }));
    }
    to_vec(&Value::Array(list))
}

/// `GET installation_file`: the file of `version`, or of the newest version,
/// for `env` and `channel`.
pub(super) async fn installation_file(
    app: &App,
    tenant: Id,
    p: &Params<'_>,
    now: Millis,
) -> Answer {
    let t = licensed(app, tenant, p, now).await?;
    let product = app.engine.product(t.license.product_id).ok_or(INTERNAL)?;
    let ps = product.spec.read();
    let ls = t.license.spec.read();
    let version = p.text_ref("version");
    let (index, release) = visible(&ps, &ls, p.text_ref("env"), p.text_ref("channel"))
        .filter(|(_, r)| version.is_none_or(|v| r.version == v))
        .last()
        .ok_or(VERSION_NOT_FOUND)?;
    to_vec(&wire::installation_file(
        release,
        index,
        t.license.tenant_id,
    ))
}
