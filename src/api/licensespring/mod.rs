//! LicenseSpring License API v4 (`/api/v4/...`), wire-compatible with
//! LicenseSpring's SDKs: point their API client at `http://127.0.0.1:PORT`.
//!
//! Each request: route, authenticate (Date + HMAC Authorization), read
//! parameters (query for GET, JSON body for POST), resolve product and license
//! (license key, or user name with its password where LicenseSpring asks for
//! one), apply engine commands, answer with a body signed in the
//! `LicenseSignature` header.

pub mod auth;
mod bundle;
pub mod error;
mod fill;
pub mod js;
mod license;
mod offline;
mod params;
mod releases;
mod render;
mod resolve;
mod trial;
mod users;
pub mod wire;

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::engine::model::*;
use crate::engine::time::{format_instant, parse_instant, Millis};
use crate::engine::{Command, Outcome};
use crate::http::{json as json_resp, read_body, BodyError, Query, Resp};
use crate::signing::Stamp;
pub use auth::{client_headers, sign_date};
use error::*;
use license::*;
use params::Params;
use render::*;
use resolve::*;
use trial::*;
use users::*;
use wire::{FeatureCheck, LicenseView};

/// Surface state: caches only (no entitlement state lives here).
#[derive(Default)]
pub struct LsState {
    pub auth: auth::AuthCache,
    /// Feature-check answers by feature id: the body and its signature, valid
    /// while the feature's revision, seats in use and consumption total are
    /// those it was rendered from. Sharded map, no global lock; past
    /// [`RENDERED_FEATURES_MAX`] entries only existing ones are replaced.
    rendered: DashMap<Id, Arc<Rendered>>,
    /// Entries in `rendered` (it only grows: entries are replaced, never
    /// removed), counted here because `DashMap::len` read-locks every shard
    /// and a spread load past the limit asks on every request.
    rendered_count: std::sync::atomic::AtomicUsize,
}

/// Feature answers kept rendered (each about a kilobyte with its signature).
pub const RENDERED_FEATURES_MAX: usize = 65_536;

/// A feature-check answer ready to send.
pub struct Rendered {
    stamp: Stamp,
    body: Bytes,
    signature: Option<HeaderValue>,
}

/// Starts this surface's background work: the signed-answer filler.
pub fn start(app: &Arc<App>) {
    fill::spawn(app);
}

/// A handler's answer before signing.
enum Body {
    Fresh(Vec<u8>),
    /// Already rendered and signed (the feature-check hot path).
    Rendered(Arc<Rendered>),
    /// A feature answer rendered now for feature `id` under `stamp`, to be
    /// signed (off the request's thread when the signature is not kept)
    /// and then kept in [`LsState::rendered`].
    Stamped {
        id: u64,
        stamp: Stamp,
        body: Vec<u8>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    ActivateLicense,
    DeactivateLicense,
    CheckLicense,
    CheckLicenseFeature,
    AddConsumption,
    AddFeatureConsumption,
    FloatingRelease,
    FloatingFeatureRelease,
    FloatingBorrow,
    FloatingFeatureBorrow,
    TrialKey,
    ProductDetails,
    UserLicenses,
    CustomerLicenseUsers,
    TrackDeviceVariables,
    GetDeviceVariables,
    ChangePassword,
    Versions,
    InstallationFile,
    SsoUrl,
    ActivateBundle,
    CheckBundle,
    DeactivateBundle,
    ActivateOffline,
    DeactivateOffline,
    ActivateBundleOffline,
    DeactivateBundleOffline,
}

impl Endpoint {
    /// (endpoint, method it takes, whether it changes state and so needs a writable key).
    fn route(path: &str) -> Option<(Endpoint, Method, bool)> {
        use Endpoint::*;
        Some(match path {
            "activate_license" => (ActivateLicense, Method::POST, true),
            "deactivate_license" => (DeactivateLicense, Method::POST, true),
            "check_license" => (CheckLicense, Method::GET, false),
            "check_license_feature" => (CheckLicenseFeature, Method::GET, false),
            "add_consumption" => (AddConsumption, Method::POST, true),
            "add_feature_consumption" => (AddFeatureConsumption, Method::POST, true),
            "floating/release" => (FloatingRelease, Method::POST, true),
            "floating/feature_release" => (FloatingFeatureRelease, Method::POST, true),
            "floating/borrow" => (FloatingBorrow, Method::POST, true),
            "floating/feature_borrow" => (FloatingFeatureBorrow, Method::POST, true),
            "trial_key" => (TrialKey, Method::GET, true),
            "product_details" => (ProductDetails, Method::GET, false),
            "user_licenses" => (UserLicenses, Method::GET, false),
            "customer_license_users" => (CustomerLicenseUsers, Method::GET, false),
            "track_device_variables" => (TrackDeviceVariables, Method::POST, true),
            "get_device_variables" => (GetDeviceVariables, Method::GET, false),
            "change_password" => (ChangePassword, Method::POST, true),
            "versions" => (Versions, Method::GET, false),
            "installation_file" => (InstallationFile, Method::GET, false),
            "sso_url" => (SsoUrl, Method::GET, false),
            "activate_bundle" => (ActivateBundle, Method::POST, true),
            "check_bundle" => (CheckBundle, Method::GET, false),
            "deactivate_bundle" => (DeactivateBundle, Method::POST, true),
            "activate_offline" => (ActivateOffline, Method::POST, true),
            "deactivate_offline" => (DeactivateOffline, Method::POST, true),
            "activate_bundle_offline" => (ActivateBundleOffline, Method::POST, true),
            "deactivate_bundle_offline" => (DeactivateBundleOffline, Method::POST, true),
            _ => return None,
        })
    }
}

/// A handler's answer: the body, or an error.
type Answer = Result<Body, LicenseSpringError>;

/// A request the server refused before reading it, in this surface's shape.
/// The emulated rate limit's refusal (`--emulate-rate-limits`).
pub fn rate_limited(retry_after_s: u32) -> Resp {
    LicenseSpringError {
        status: 429,
        code: "too_many_requests",
        message: "Too many requests: over the rate limit (emulated by Tally)",
        retry_after_s: retry_after_s.max(1),
    }
    .response()
}

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: hyper::StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let (code, message) = crate::http::fault_words(status, why);
    LicenseSpringError {
        status: status.as_u16(),
        code,
        message,
        retry_after_s: retry_after_s.unwrap_or(0),
    }
    .response()
}

pub fn malformed(m: crate::http::Malformed) -> Resp {
    use crate::http::Malformed::*;
    match m {
        MissingHost => MISSING_HEADERS,
        DuplicateHost => INVALID_HEADERS,
        TargetNotUtf8 => INVALID_PARAMETERS,
        BadMinSeq => INVALID_HEADERS,
    }
    .response()
}

/// `state`: this surface's caches, owned by the server; `peer`: the
/// client's address (failed password checks back off per source).
pub async fn handle(
    app: &App,
    state: &LsState,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Resp {
    let path = req
        .uri()
        .path()
        .strip_prefix("/api/v4/")
        .unwrap_or("")
        .trim_end_matches('/');
    let Some((endpoint, method, write)) = Endpoint::route(path) else {
        return NOT_FOUND.response();
    };
    if req.method() != method {
        return METHOD_NOT_ALLOWED.response();
    }
    let now = app.now();
    // The Date's skew is checked on the wall clock under a test clock.
    let key = match state
        .auth
        .authenticate(&app.engine, req.headers(), app.signing_now(), write)
    {
        Ok(k) => k,
        Err(e) => return e.response(),
    };
    crate::app::set_actor(crate::app::Actor::Key(key.clone()));
    let peer = Some(peer);
    let answer = if method == Method::GET {
        let params = Params::query(Query::parse(req.uri().query()), peer);
        dispatch(app, state, &key, endpoint, &params, now).await
    } else {
        let limits = &app.limits;
        let body = match read_body(req, limits.request_body_bytes_max, limits.request_timeout).await
        {
            Ok(b) => b,
            Err(BodyError::TooLarge(_)) => return BODY_TOO_LARGE.response(),
            Err(BodyError::Read) => return INVALID_JSON.response(),
            Err(BodyError::TimedOut) => return REQUEST_TIMEOUT.response(),
        };
        if let Some(kind) = offline::Kind::of(endpoint) {
            // A base64 request file (text/plain), not a JSON object.
            let answer = offline::handle(app, &key, kind, &body, peer, now).await;
            return match answer {
                Ok(body) => signed(app, state, body).await,
                Err(e) => e.response(),
            };
        }
        let map = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(m)) => m,
                _ => return INVALID_JSON.response(),
            }
        };
        dispatch(app, state, &key, endpoint, &Params::json(map, peer), now).await
    };
    match answer {
        Ok(body) => signed(app, state, body).await,
        Err(e) => e.response(),
    }
}

/// 200 with the body signed in `LicenseSignature` (base64 RSA-SHA256
/// PKCS#1 v1.5). A fresh signature is made on a signing thread while this
/// request waits (see [`crate::signing::Signer::sign_async`]).
async fn signed(app: &App, state: &LsState, body: Body) -> Resp {
    let (body, sig) = match body {
        Body::Fresh(body) => {
            let sig = signature(app, &body).await;
            (Bytes::from(body), sig)
        }
        Body::Rendered(r) => (r.body.clone(), r.signature.clone()),
        Body::Stamped { id, stamp, body } => {
            let signature = if app.sign_responses {
                HeaderValue::try_from(app.signer.sign_for_async(id, stamp, &body).await).ok()
            } else {
                None
            };
            render::keep_rendered(state, id, stamp, signature, body)
        }
    };
    let mut r = json_resp(StatusCode::OK, body);
    if let Some(sig) = sig {
        r.headers_mut().insert(LICENSE_SIGNATURE, sig);
    }
    r
}

const LICENSE_SIGNATURE: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("licensesignature");

/// The `LicenseSignature` value for `body` (none for an empty slice or when
/// signing is off).
async fn signature(app: &App, body: &[u8]) -> Option<HeaderValue> {
    if !app.sign_responses || body.is_empty() {
        return None;
    }
    HeaderValue::from_str(&app.signer.sign_async(body).await).ok()
}

#[allow(
    clippy::too_many_lines,
    reason = "the table of LicenseSpring endpoints, one arm each"
)]
async fn dispatch(
    app: &App,
    state: &LsState,
    key: &ApiKey,
    endpoint: Endpoint,
    p: &Params<'_>,
    now: Millis,
) -> Answer {
    use Endpoint::*;
    let tenant = key.tenant_id;
    match endpoint {
        ActivateLicense => activate(app, tenant, p, now).await,
        DeactivateLicense => {
            let t = resolve(app, tenant, p, false).await?;
            let hw = p.required("hardware_id")?;
            apply(
                app,
                Command::Deactivate {
                    license_id: t.license.id,
                    hardware_id: Cow::Borrowed(&hw),
                    now,
                },
            )
            .await?;
            Ok(string_answer(LICENSE_DEACTIVATED))
        }
        CheckLicense => check_license(app, tenant, p, now).await,
        CheckLicenseFeature => check_feature(app, state, tenant, p, now).await,
        AddConsumption => {
            let t = resolve(app, tenant, p, false).await?;
            usable_on_device(app, &t.license, p, now)?;
            let amount = p.int("consumptions")?.ok_or(MISSING_PARAMETERS)?;
            apply(
                app,
                Command::AddConsumption {
                    license_id: t.license.id,
                    feature_id: None,
                    amount,
                    now,
                },
            )
            .await?;
            license_body(app, &t, &Render::of(p, p.text_ref("hardware_id")), now).await
        }
        AddFeatureConsumption => {
            let t = resolve(app, tenant, p, false).await?;
            usable_on_device(app, &t.license, p, now)?;
            let f = feature(app, &t.license, p, now)?;
            let amount = p.int("consumptions")?.ok_or(MISSING_PARAMETERS)?;
            let cmd = Command::AddConsumption {
                license_id: t.license.id,
                feature_id: Some(f.id),
                amount,
                now,
            };
            app.commit_with(&cmd, || app.engine.apply_resolved(&cmd, &t.license, &f))
                .await
                .map_err(LicenseSpringError::from)?;
            feature_body(state, &t.license, &f, None, now)
        }
        FloatingRelease | FloatingFeatureRelease => {
            let t = resolve(app, tenant, p, false).await?;
            let hw = p.required("hardware_id")?;
            let f = if endpoint == FloatingFeatureRelease {
                Some(feature(app, &t.license, p, now)?)
            } else {
                None
            };
            let cmd = Command::FloatingRelease {
                license_id: t.license.id,
                feature_id: f.as_ref().map(|f| f.id),
                hardware_id: Cow::Borrowed(&hw),
                now,
            };
            // LicenseSpring answers an empty body (its SDKs ignore it).
            apply(app, cmd).await?;
            Ok(Body::Fresh(Vec::new()))
        }
        FloatingBorrow | FloatingFeatureBorrow => {
            borrow(app, tenant, p, now, endpoint == FloatingFeatureBorrow).await
        }
        TrialKey => trial_key(app, tenant, p, now).await,
        ProductDetails => {
            let product = product(app, tenant, p)?;
            let mut v = wire::product_details(&product);
            if p.bool("include_custom_fields") {
                v["custom_fields"] = json!([]);
            }
            if p.bool("include_latest_version") {
                v["latest_version"] = wire::latest_version(&product, p.text_ref("env"));
            }
            to_vec(&v)
        }
        UserLicenses => user_licenses(app, tenant, p, now).await,
        CustomerLicenseUsers => customer_license_users(app, tenant, p),
        TrackDeviceVariables => {
            let t = resolve(app, tenant, p, false).await?;
            let hw = p.required("hardware_id")?;
            let vars = p.variables()?;
            apply(
                app,
                Command::TrackDeviceVariables {
                    license_id: t.license.id,
                    hardware_id: Cow::Borrowed(&hw),
                    variables: vars,
                    now,
                },
            )
            .await?;
            device_variables(app, &t.license, &hw)
        }
        GetDeviceVariables => {
            let t = resolve(app, tenant, p, false).await?;
            let hw = p.required("hardware_id")?;
            device_variables(app, &t.license, &hw)
        }
        ChangePassword => users::change_password(app, tenant, p).await,
        Versions => releases::versions(app, tenant, p, now).await,
        InstallationFile => releases::installation_file(app, tenant, p, now).await,
        SsoUrl => {
            p.required("product")?;
            p.required("customer_account_code")?;
            Err(SSO_NOT_CONFIGURED)
        }
        ActivateBundle => bundle::activate(app, tenant, p, now).await,
        CheckBundle => bundle::check(app, tenant, p, now).await,
        DeactivateBundle => bundle::deactivate(app, tenant, p, now).await,
        // Answered in `handle` (their body is not JSON).
        ActivateOffline | DeactivateOffline | ActivateBundleOffline | DeactivateBundleOffline => {
            Err(INTERNAL)
        }
    }
}

/// JSON as JavaScript writes it (see [`js`]): the Node SDK verifies
/// `LicenseSignature` over `JSON.stringify` of the parsed body.
fn to_vec(v: &Value) -> Answer {
    js::to_vec(&js::Js(v))
        .map(Body::Fresh)
        .map_err(|_| INTERNAL)
}

/// The answer of the endpoints that answer a bare string (`license_deactivated`,
/// `password_changed`): a JSON string, which the SDKs read as the string.
fn string_answer(s: &str) -> Body {
    Body::Fresh(format!("\"{s}\"").into_bytes())
}

const LICENSE_DEACTIVATED: &str = "license_deactivated";

async fn apply(app: &App, cmd: Command<'_>) -> Result<Outcome, LicenseSpringError> {
    Ok(app.commit(&cmd).await?)
}

/// Base64 (standard) of bytes; used by tests and tools to compare signatures.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    const NAMES: [&str; 10] = [
        "product",
        "license_key",
        "hardware_id",
        "feature",
        "consumptions",
        "license_id",
        "include_expired_features",
        "borrowed_until",
        "env",
        "password",
    ];

    fn read_all(p: &Params<'_>) {
        for k in NAMES {
            let _ = (p.str(k), p.text_ref(k), p.int(k), p.bool(k));
        }
        let _ = p.variables();
    }

    /// A `Date` line, then an `Authorization` header.
    pub fn auth(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let (date, authorization) = text.split_once('\n').unwrap_or((&text, ""));
        let _ = httpdate::parse_http_date(date.trim());
        if let Some(h) = auth::parse_authorization(authorization) {
            let _ = auth::sign_date(h.api_key, date);
        }
    }

    /// A query string.
    pub fn query(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        read_all(&Params::query(Query::parse(Some(&text)), None));
    }

    /// A JSON body.
    pub fn body(data: &[u8]) {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) {
            read_all(&Params::json(m, None));
        }
    }

    /// An offline request file.
    pub fn offline_request(data: &[u8]) {
        if let Ok((request, _, _)) = offline::decode(data) {
            read_all(&Params::json(request, None));
        }
    }
}
