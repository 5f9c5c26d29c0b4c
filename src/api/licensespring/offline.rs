//! Offline activation and deactivation: `activate_offline`,
//! `deactivate_offline`.
//!
//! The body is a request file the SDKs write on a machine without network:
//! base64 of `{"request": R, "signature": S}`, where S is base64
//! HMAC-SHA256 with the API key's shared key over R exactly as the client
//! serialised it (compact for the Node SDK, `json.dumps` spacing for the
//! Python SDK), so Tally checks it over R's bytes as they stand in the file.
//! Older files are R alone with a `signature` over
//! `licenseSpring\ndate: <date>\n<key or user>\n<hardware_id>\n<api_key>`.
//! R names its `api_key`, which must be one of the tenant's keys. The
//! activation answer is the license object with `date`, `offline_signature`
//! (the same HMAC form, over the answer's date) and the request's `request`
//! and `request_id`, all covered by `license_signature_v2`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;
use crate::credentials::constant_time_eq;

/// Longest request file accepted, bytes (the body limit applies first).
pub const OFFLINE_REQUEST_BYTES_MAX: usize = 256 * 1024;

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    request: &'a RawValue,
    signature: String,
}

/// The four endpoints that take a request file.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Activate,
    Deactivate,
    ActivateBundle,
    DeactivateBundle,
}

impl Kind {
    pub(super) fn of(endpoint: Endpoint) -> Option<Kind> {
        Some(match endpoint {
            Endpoint::ActivateOffline => Kind::Activate,
            Endpoint::DeactivateOffline => Kind::Deactivate,
            Endpoint::ActivateBundleOffline => Kind::ActivateBundle,
            Endpoint::DeactivateBundleOffline => Kind::DeactivateBundle,
            _ => return None,
        })
    }
}

pub(super) async fn handle(
    app: &App,
    key: &ApiKey,
    kind: Kind,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
    now: Millis,
) -> Answer {
    let (request, signer) = open(app, key, body)?;
    let p = Params::json(request, peer);
    let tenant = key.tenant_id;
    match kind {
        Kind::Activate => activate_offline(app, tenant, &p, &signer, now).await,
        Kind::Deactivate => deactivate_offline(app, tenant, &p, now).await,
        Kind::ActivateBundle => activate_bundle_offline(app, tenant, &p, &signer, now).await,
        Kind::DeactivateBundle => {
            let hw = p.required("hardware_id")?;
            bundle::deactivate_all(app, tenant, &p, &hw, now).await?;
            Ok(string_answer(LICENSE_DEACTIVATED))
        }
    }
}

/// The request inside a request file, checked against its signature; and
/// the API key it names.
fn open(
    app: &App,
    key: &ApiKey,
    body: &[u8],
) -> Result<(Map<String, Value>, Arc<ApiKey>), LicenseSpringError> {
    let (request, raw, signature) = decode(body)?;
    let wrapped = signature.is_some();
    let signature = signature.unwrap_or_default();
    let raw = &raw[..];
    let named = request
        .get("api_key")
        .and_then(Value::as_str)
        .ok_or(OFFLINE_REQUEST_INVALID)?;
    let signer = app
        .engine
        .api_key(named)
        .filter(|k| {
            k.tenant_id == key.tenant_id && !k.revoked.load(std::sync::atomic::Ordering::Acquire)
        })
        .ok_or(INVALID_API_KEY)?;
    let (expected, got) = if wrapped {
        (auth::hmac_b64(&signer.shared_key, &[raw]), signature)
    } else {
        let field = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
        let who = Some(field("license_key"))
            .filter(|s| !s.is_empty())
            .unwrap_or(field("username"));
        let sig = offline_signature(&signer, field("date"), who, field("hardware_id"));
        (sig, field("signature").to_string())
    };
    if got.is_empty() || !constant_time_eq(expected.as_bytes(), got.as_bytes()) {
        return Err(OFFLINE_SIGNATURE_MISMATCH);
    }
    Ok((request, signer))
}

/// A request file's request, the request's bytes as the client wrote them
/// and the file's signature over them (`None` for a bare request).
type Decoded = (Map<String, Value>, Vec<u8>, Option<String>);

pub(super) fn decode(body: &[u8]) -> Result<Decoded, LicenseSpringError> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(MISSING_CONTENT);
    }
    if text.len() > OFFLINE_REQUEST_BYTES_MAX {
        return Err(BODY_TOO_LARGE);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| OFFLINE_REQUEST_INVALID)?;
    let (raw, signature) = match serde_json::from_slice::<Wrapped>(&decoded) {
        Ok(w) => (w.request.get().as_bytes().to_vec(), Some(w.signature)),
        Err(_) => (decoded, None),
    };
    match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(request)) => Ok((request, raw, signature)),
        _ => Err(OFFLINE_REQUEST_INVALID),
    }
}

/// `licenseSpring\ndate: <date>\n<key or user>\n<hardware_id>\n<api_key>`
/// signed with the key's shared key, as the SDKs sign request files and check
/// license files.
fn offline_signature(key: &ApiKey, date: &str, who: &str, hardware_id: &str) -> String {
    let text = format!(
        "licenseSpring\ndate: {date}\n{who}\n{hardware_id}\n{}",
        key.api_key
    );
    auth::hmac_b64(&key.shared_key, &[text.as_bytes()])
}

async fn activate_offline(
    app: &App,
    tenant: Id,
    p: &Params<'_>,
    signer: &ApiKey,
    now: Millis,
) -> Answer {
    let t = resolve(app, tenant, p, true).await?;
    let hw = p.required("hardware_id")?;
    activate_device(app, &t.license, p, &hw, now).await?;
    to_vec(&Value::Object(
        offline_license(app, &t, p, signer, &hw, now).await,
    ))
}

/// A license object as an offline answer carries it: with `date`, its
/// `offline_signature` and the request's `request` and `request_id`.
async fn offline_license(
    app: &App,
    t: &Target<'_>,
    p: &Params<'_>,
    signer: &ApiKey,
    hw: &str,
    now: Millis,
) -> Map<String, Value> {
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64),
    );
    let mut extra = Map::new();
    extra.insert(
        "offline_signature".into(),
        offline_signature(signer, &date, &t.auth_value, hw).into(),
    );
    extra.insert("date".into(), date.into());
    for k in ["request", "request_id"] {
        if let Some(v) = p.text_ref(k) {
            extra.insert(k.into(), v.into());
        }
    }
    license_object(app, t, &Render::of(p, Some(hw)), now, extra).await
}

/// `{"licenses": [...], "bundle_signature_v2"}`: each license as
/// `activate_offline` answers it, and a signature over the JavaScript JSON
/// of `{"licenses": [...]}` (the answer without it, as each license's
/// `license_signature_v2` covers the license without its signatures).
async fn activate_bundle_offline(
    app: &App,
    tenant: Id,
    p: &Params<'_>,
    signer: &ApiKey,
    now: Millis,
) -> Answer {
    let hw = p.required("hardware_id")?;
    let targets = bundle::activate_all(app, tenant, p, &hw, now).await?;
    let mut licenses = Vec::with_capacity(targets.len());
    for t in &targets {
        licenses.push(Value::Object(
            offline_license(app, t, p, signer, &hw, now).await,
        ));
    }
    let mut answer = Map::new();
    answer.insert("licenses".into(), Value::Array(licenses));
    let unsigned = Value::Object(answer);
    let signed = js::to_vec(&js::Js(&unsigned)).map_err(|_| INTERNAL)?;
    let Value::Object(mut answer) = unsigned else {
        unreachable!("built as an object")
    };
    answer.insert(
        "bundle_signature_v2".into(),
        app.signer.sign_async(&signed).await.to_string().into(),
    );
    to_vec(&Value::Object(answer))
}

/// Deactivates the device, first adding the license consumption the file
/// reports (`consumptions`) and storing its `variables`.
async fn deactivate_offline(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    let hw = p.required("hardware_id")?;
    app.engine.check_device(&t.license, &hw)?;
    let amount = p.int("consumptions")?.unwrap_or(0);
    if amount != 0 {
        let cmd = Command::AddConsumption {
            license_id: t.license.id,
            feature_id: None,
            amount,
            now,
        };
        apply(app, cmd).await?;
    }
    let variables = p.variables()?;
    if !variables.is_empty() {
        let cmd = Command::TrackDeviceVariables {
            license_id: t.license.id,
            hardware_id: Cow::Borrowed(&hw),
            variables,
            now,
        };
        apply(app, cmd).await?;
    }
    let cmd = Command::Deactivate {
        license_id: t.license.id,
        hardware_id: Cow::Borrowed(&hw),
        now,
    };
    apply(app, cmd).await?;
    Ok(string_answer(LICENSE_DEACTIVATED))
}
