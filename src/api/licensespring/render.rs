//! Answer bodies: license objects with their signatures, the cached
//! feature-check answer, device variables.

use super::*;
use std::sync::atomic::Ordering;

/// How one request asks for a license object.
#[derive(Default, Clone, Copy)]
pub(super) struct Render<'a> {
    pub(super) hardware_id: Option<&'a str>,
    /// `env` and `channel`: the installation-file fields describe the newest
    /// release of the product for them (any, where not given).
    pub(super) env: Option<&'a str>,
    pub(super) channel: Option<&'a str>,
    /// `check_license` without `include_expired_features`: features past
    /// their expiry date are left out.
    pub(super) hide_expired_features: bool,
}

impl<'a> Render<'a> {
    /// `env` and `channel` from the request, `hardware_id` as given.
    pub(super) fn of(p: &'a Params<'a>, hardware_id: Option<&'a str>) -> Self {
        Render {
            hardware_id,
            env: p.text_ref("env"),
            channel: p.text_ref("channel"),
            hide_expired_features: false,
        }
    }
}

/// The license object with `license_signature` (over
/// `hardware_id#key_or_user#validity`, lower-cased, the validity as
/// JavaScript's `toISOString` writes it: the Node SDK checks it so) and
/// `license_signature_v2` (over the object's JavaScript JSON without both
/// signature fields, as the SDKs check offline answers). `extra` fields
/// (an offline answer's `date` and `offline_signature`) are signed too.
pub(super) async fn license_object(
    app: &App,
    t: &Target<'_>,
    r: &Render<'_>,
    now: Millis,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let product = app.engine.product(t.license.product_id);
    let pspec = product.as_ref().map(|p| p.spec.read().clone());
    let release = pspec.as_ref().and_then(|ps| {
        releases::newest(ps, &t.license.spec.read(), r.env, r.channel).map(|(_, rel)| rel.clone())
    });
    let mut m = LicenseView {
        engine: &app.engine,
        license: &t.license,
        hardware_id: r.hardware_id,
        now,
        release: release.as_ref(),
        hide_expired_features: r.hide_expired_features,
    }
    .render();
    m.insert("offline_signature".into(), Value::from(""));
    m.extend(extra);
    let validity = m
        .get("validity_period")
        .and_then(Value::as_str)
        .map(js_iso_instant)
        .unwrap_or_default();
    let v1 = format!(
        "{}#{}#{}",
        r.hardware_id.unwrap_or(""),
        t.auth_value,
        validity
    )
    .to_lowercase();
    let unsigned = Value::Object(m);
    let v2_input = js::to_vec(&js::Js(&unsigned)).unwrap_or_default();
    let Value::Object(mut m) = unsigned else {
        unreachable!("built as an object")
    };
    // Both made at once, on two signing threads when there are two cores.
    let (v1_sig, v2_sig) = tokio::join!(
        app.signer.sign_async(v1.as_bytes()),
        app.signer.sign_async(&v2_input)
    );
    m.insert("license_signature".into(), Value::from(&*v1_sig));
    m.insert("license_signature_v2".into(), Value::from(&*v2_sig));
    m
}

/// `dayjs(value).toISOString()` as the Node SDK computes it for
/// `license_signature`: the instant in UTC with milliseconds. A date or
/// date-time without an offset is read as UTC (dayjs reads it in the client's
/// zone, so a client outside UTC sees what LicenseSpring's own answers give it).
pub(super) fn js_iso_instant(value: &str) -> String {
    parse_instant(value)
        .map(format_instant)
        .unwrap_or_else(|| value.to_string())
}

pub(super) async fn license_body(app: &App, t: &Target<'_>, r: &Render<'_>, now: Millis) -> Answer {
    to_vec(&Value::Object(
        license_object(app, t, r, now, Map::new()).await,
    ))
}

/// The feature-check answer, rendered and signed once per state of the
/// feature: a repeated check costs a map lookup, not JSON and a SHA-256.
/// A fresh one is signed and kept on its way out ([`keep_rendered`]).
pub(super) fn feature_body(
    state: &LsState,
    l: &License,
    f: &Feature,
    in_use: Option<u32>,
    now: Millis,
) -> Answer {
    let (stamp, body) = match feature_answer(l, f, in_use, now, |stamp| {
        state
            .rendered
            .get(&f.id)
            .filter(|r| r.stamp == stamp)
            .map(|r| r.clone())
    })? {
        FeatureAnswer::Cached(cached) => return Ok(Body::Rendered(cached)),
        FeatureAnswer::Fresh(stamp, body) => (stamp, body),
    };
    Ok(Body::Stamped {
        id: f.id,
        stamp,
        body,
    })
}

/// Keeps a feature answer rendered (and signed) under `stamp` when the
/// cache has room for it (or an entry of `id` to replace), and gives its
/// body and signature. Full: what is cached stays (only this feature's own
/// entry is replaced) rather than everything being cleared under traffic,
/// and an answer not kept costs no cache entry.
pub(super) fn keep_rendered(
    state: &LsState,
    id: u64,
    stamp: Stamp,
    signature: Option<HeaderValue>,
    body: Vec<u8>,
) -> (Bytes, Option<HeaderValue>) {
    let body = Bytes::from(body);
    let rendered = || {
        Arc::new(Rendered {
            stamp,
            signature: signature.clone(),
            body: body.clone(),
        })
    };
    let cache = &state.rendered;
    let count = &state.rendered_count;
    if let Some(mut kept) = cache.get_mut(&id) {
        *kept = rendered();
    } else if count.load(Ordering::Relaxed) < RENDERED_FEATURES_MAX
        && cache.insert(id, rendered()).is_none()
    {
        count.fetch_add(1, Ordering::Relaxed);
    }
    (body, signature)
}

/// What [`feature_answer`] gives.
pub(super) enum FeatureAnswer<T> {
    /// What the caller's `cached` had for the answer's stamp.
    Cached(T),
    /// The body rendered now, with the stamp it was rendered under.
    Fresh(Stamp, Vec<u8>),
}

/// The feature-check answer: `cached(stamp)`'s when it has one, else the
/// body rendered now with the stamp it was rendered under. The spec and
/// the stamp's revision are read as one ([`Feature::spec_at_revision`]), so
/// every body rendered under a stamp is the same and a kept signature,
/// looked up by stamp, always signs the body rendered under it.
pub(super) fn feature_answer<T>(
    l: &License,
    f: &Feature,
    in_use: Option<u32>,
    now: Millis,
    cached: impl FnOnce(Stamp) -> Option<T>,
) -> Result<FeatureAnswer<T>, LicenseSpringError> {
    let stamp = Stamp {
        revision: f.revision(),
        in_use,
        total: f.meter.used(now),
    };
    if let Some(hit) = cached(stamp) {
        return Ok(FeatureAnswer::Cached(hit));
    }
    let (revision, s) = f.spec_at_revision();
    let stamp = Stamp { revision, ..stamp };
    let body = serde_json::to_vec(&FeatureCheck::new(l.id, f, &s, in_use, stamp.total))
        .map_err(|_| INTERNAL)?;
    Ok(FeatureAnswer::Fresh(stamp, body))
}

pub(super) fn device_variables(app: &App, l: &License, hw: &str) -> Answer {
    let d = app
        .engine
        .device(l, hw)
        .filter(|d| d.active)
        .ok_or(DEVICE_NOT_FOUND)?;
    let vars: Vec<Value> = d
        .variables
        .iter()
        .map(|x| wire::variable(d.id, x))
        .collect();
    to_vec(&Value::Array(vars))
}
