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
pub mod js;
mod offline;
mod params;
mod releases;
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
use crate::app::CommitError;
use crate::engine::model::*;
use crate::engine::time::{format_instant, parse_instant, Millis, DAY_MS};
use crate::engine::{Command, Outcome};
use crate::http::{json as json_resp, read_body, BodyError, Query, Resp};
pub use auth::{client_headers, sign_date};
use error::*;
use params::Params;
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
}

/// Feature answers kept rendered (each about a kilobyte with its signature).
pub const RENDERED_FEATURES_MAX: usize = 65_536;

/// A feature-check answer ready to send.
pub struct Rendered {
    revision: u64,
    in_use: Option<u32>,
    total: i64,
    body: Bytes,
    signature: Option<HeaderValue>,
}

/// A handler's answer before signing.
enum Body {
    Fresh(Vec<u8>),
    /// Already rendered and signed (the feature-check hot path).
    Rendered(Arc<Rendered>),
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
pub fn malformed(m: crate::http::Malformed) -> Resp {
    use crate::http::Malformed::*;
    match m {
        MissingHost => MISSING_HEADERS,
        DuplicateHost => INVALID_HEADERS,
        TargetNotUtf8 => INVALID_PARAMETERS,
    }
    .response()
}

/// `peer`: the client's address (failed password checks back off per source).
pub async fn handle(app: &App, req: Request<Incoming>, peer: std::net::IpAddr) -> Resp {
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
    let key = match app
        .licensespring
        .auth
        .authenticate(&app.engine, req.headers(), now, write)
    {
        Ok(k) => k,
        Err(e) => return e.response(),
    };
    let peer = Some(peer);
    let answer = if method == Method::GET {
        let params = Params::query(Query::parse(req.uri().query()), peer);
        dispatch(app, &key, endpoint, &params, now).await
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
                Ok(body) => signed(app, body),
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
        dispatch(app, &key, endpoint, &Params::json(map, peer), now).await
    };
    match answer {
        Ok(body) => signed(app, body),
        Err(e) => e.response(),
    }
}

/// 200 with the body signed in `LicenseSignature` (base64 RSA-SHA256 PKCS#1 v1.5).
fn signed(app: &App, body: Body) -> Resp {
    let (body, sig) = match body {
        Body::Fresh(body) => (Bytes::from(body), None),
        Body::Rendered(r) => (r.body.clone(), r.signature.clone()),
    };
    let sig = sig.or_else(|| signature(app, &body));
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
fn signature(app: &App, body: &[u8]) -> Option<HeaderValue> {
    if !app.sign_responses || body.is_empty() {
        return None;
    }
    HeaderValue::from_str(&app.signer.sign(body)).ok()
}

async fn dispatch(
    app: &App,
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
        CheckLicenseFeature => check_feature(app, tenant, p, now).await,
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
            license_body(app, &t, &Render::of(p, p.text_ref("hardware_id")), now)
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
                .map_err(commit_error)?;
            feature_body(app, &t.license, &f, None, now)
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
    app.commit(&cmd).await.map_err(commit_error)
}

fn commit_error(e: CommitError) -> LicenseSpringError {
    match e {
        CommitError::Engine(e) => LicenseSpringError::from(e),
        CommitError::Unavailable => UNAVAILABLE,
    }
}

// ---------------------------------------------------------------- resolution

/// The product and license a request names.
struct Target<'p> {
    license: Arc<License>,
    /// License key, or the user's email: what identifies the license to the
    /// client. Borrowed from the request: no allocation on the hot path.
    auth_value: Cow<'p, str>,
}

fn product(app: &App, tenant: Id, p: &Params) -> Result<Arc<Product>, LicenseSpringError> {
    let code = p.required("product")?;
    app.engine
        .product_by_code(tenant, &code)
        .ok_or(UNKNOWN_PRODUCT)
}

/// Finds the license: by `license_key` on key-based products; by `username`
/// (and `password` when `need_password`) on user-based ones, `license_id`
/// choosing among the user's licenses.
async fn resolve<'p>(
    app: &App,
    tenant: Id,
    p: &'p Params<'p>,
    need_password: bool,
) -> Result<Target<'p>, LicenseSpringError> {
    resolve_in(app, tenant, &*product(app, tenant, p)?, p, need_password).await
}

/// [`resolve`] on a product given (a bundle's product) rather than named.
async fn resolve_in<'p>(
    app: &App,
    tenant: Id,
    product: &Product,
    p: &'p Params<'p>,
    need_password: bool,
) -> Result<Target<'p>, LicenseSpringError> {
    match product.authorization_method {
        AuthMethod::LicenseKey => {
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
fn sso_or_missing(p: &Params) -> LicenseSpringError {
    if p.text("id_token").is_some() || p.text("code").is_some() {
        SSO_TOKEN_ERROR
    } else {
        MISSING_PARAMETERS
    }
}

/// The user `username` names, if the request's `password` is theirs.
async fn signed_in(
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
async fn verify_password(
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
fn usable_on_device(
    app: &App,
    l: &License,
    p: &Params<'_>,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    {
        let s = l.spec.read();
        app.engine.check_usable(l, &s, now)?;
    }
    let hw = p.required("hardware_id")?;
    app.engine.check_device(l, &hw)?;
    Ok(())
}

fn feature(
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

// ---------------------------------------------------------------- bodies

/// How one request asks for a license object.
#[derive(Default, Clone, Copy)]
struct Render<'a> {
    hardware_id: Option<&'a str>,
    /// `env` and `channel`: the installation-file fields describe the newest
    /// release of the product for them (any, where not given).
    env: Option<&'a str>,
    channel: Option<&'a str>,
    /// `check_license` without `include_expired_features`: features past
    /// their expiry date are left out.
    hide_expired_features: bool,
}

impl<'a> Render<'a> {
    /// `env` and `channel` from the request, `hardware_id` as given.
    fn of(p: &'a Params<'a>, hardware_id: Option<&'a str>) -> Self {
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
fn license_object(
    app: &App,
    t: &Target,
    r: &Render,
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
    let sig = |bytes: &[u8]| Value::from(&*app.signer.sign(bytes));
    m.insert("license_signature".into(), sig(v1.as_bytes()));
    m.insert("license_signature_v2".into(), sig(&v2_input));
    m
}

/// `dayjs(value).toISOString()` as the Node SDK computes it for
/// `license_signature`: the instant in UTC with milliseconds. A date or
/// date-time without an offset is read as UTC (dayjs reads it in the client's
/// zone, so a client outside UTC sees what LicenseSpring's own answers give it).
fn js_iso_instant(value: &str) -> String {
    parse_instant(value)
        .map(format_instant)
        .unwrap_or_else(|| value.to_string())
}

fn license_body(app: &App, t: &Target, r: &Render, now: Millis) -> Answer {
    to_vec(&Value::Object(license_object(app, t, r, now, Map::new())))
}

/// The feature-check answer, rendered and signed once per state of the
/// feature: a repeated check costs a map lookup, not JSON and a SHA-256.
fn feature_body(app: &App, l: &License, f: &Feature, in_use: Option<u32>, now: Millis) -> Answer {
    let total = f.meter.used(now);
    // Read before the spec: a concurrent change bumps it after writing the
    // spec, so at worst a fresh render is cached under an older revision.
    let revision = f.revision();
    let cache = &app.licensespring.rendered;
    if let Some(r) = cache.get(&f.id) {
        if r.revision == revision && r.in_use == in_use && r.total == total {
            return Ok(Body::Rendered(r.clone()));
        }
    }
    let body = {
        let s = f.spec.read();
        serde_json::to_vec(&FeatureCheck::new(l.id, f, &s, in_use, total)).map_err(|_| INTERNAL)?
    };
    let rendered = Arc::new(Rendered {
        revision,
        in_use,
        total,
        signature: signature(app, &body),
        body: Bytes::from(body),
    });
    // Full: keep what is cached (replacing only this feature's own entry)
    // rather than clearing everything under traffic.
    if cache.len() < RENDERED_FEATURES_MAX || cache.contains_key(&f.id) {
        cache.insert(f.id, rendered.clone());
    }
    Ok(Body::Rendered(rendered))
}

fn device_variables(app: &App, l: &License, hw: &str) -> Answer {
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

// ---------------------------------------------------------------- handlers

async fn activate(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, true).await?;
    let hw = p.required("hardware_id")?;
    activate_device(app, &t.license, p, &hw, now).await?;
    license_body(app, &t, &Render::of(p, Some(&hw)), now)
}

/// Activates device `hw` on `license` with the device details and variables
/// the request carries.
async fn activate_device(
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

async fn check_license(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    let hw = p.required("hardware_id")?;
    check_in_use(app, &t.license, &hw, now).await?;
    let r = Render {
        hide_expired_features: !p.bool("include_expired_features"),
        ..Render::of(p, Some(&hw))
    };
    license_body(app, &t, &r, now)
}

/// The license is usable now on device `hw`; a floating license takes or
/// renews the device's seat.
async fn check_in_use(
    app: &App,
    license: &License,
    hw: &str,
    now: Millis,
) -> Result<(), LicenseSpringError> {
    let floating = {
        let s = license.spec.read();
        app.engine.check_usable(license, &s, now)?;
        s.is_floating || s.is_floating_cloud
    };
    app.engine.check_device(license, hw)?;
    if floating {
        let cmd = Command::FloatingAcquire {
            license_id: license.id,
            feature_id: None,
            hardware_id: Cow::Borrowed(hw),
            now,
        };
        apply(app, cmd).await?;
    }
    Ok(())
}

/// The hot path: one license lookup, one feature scan, at most one lease renewal.
async fn check_feature(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let t = resolve(app, tenant, p, false).await?;
    usable_on_device(app, &t.license, p, now)?;
    let f = feature(app, &t.license, p, now)?;
    let floating = f.spec.read().floating();
    let in_use = if floating {
        let hw = p.required("hardware_id")?;
        let cmd = Command::FloatingAcquire {
            license_id: t.license.id,
            feature_id: Some(f.id),
            hardware_id: Cow::Borrowed(&hw),
            now,
        };
        match apply(app, cmd).await? {
            Outcome::Floating { in_use, .. } => Some(in_use),
            _ => return Err(INTERNAL),
        }
    } else {
        None
    };
    feature_body(app, &t.license, &f, in_use, now)
}

async fn borrow(app: &App, tenant: Id, p: &Params<'_>, now: Millis, for_feature: bool) -> Answer {
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

async fn trial_key(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let product = product(app, tenant, p)?;
    let hw = p.required("hardware_id")?;
    let pspec = product.spec.read().clone();
    if pspec.trial_days == 0 {
        return Err(TRIAL_NOT_ALLOWED);
    }
    let email = p.text("email").map(|e| e.trim().to_ascii_lowercase());
    // One trial per device and product (and per email on user products): as
    // LicenseSpring documents, asking again answers the trial already issued.
    let issued = |l: &License| {
        let s = l.spec.read();
        s.is_trial && s.metadata.get("trial_hardware_id").and_then(Value::as_str) == Some(&*hw)
    };
    // User-based products name the trial's user by e-mail; looked up once.
    let user = match product.authorization_method {
        AuthMethod::LicenseKey => None,
        AuthMethod::User => {
            let email = email.as_deref().ok_or(MISSING_PARAMETERS)?;
            app.engine.user_by_email(tenant, email)
        }
    };
    let existing = match (&product.authorization_method, &user) {
        (AuthMethod::LicenseKey, _) => product
            .licenses_by_key
            .iter()
            .find(|l| issued(l))
            .map(|l| l.clone()),
        (AuthMethod::User, Some(u)) => app
            .engine
            .licenses_of_user(u, Some(product.id))
            .into_iter()
            .find(|l| l.spec.read().is_trial),
        (AuthMethod::User, None) => None,
    };
    if let Some(license) = existing {
        let key = license.license_key.as_deref().map(str::to_string);
        return trial_answer(app, &product, license, key, email, None, now);
    }
    let (user_id, initial_password) = match product.authorization_method {
        AuthMethod::LicenseKey => (None, None),
        AuthMethod::User => {
            let email = email.clone().ok_or(MISSING_PARAMETERS)?;
            match user {
                Some(u) => (Some(u.id), None),
                None => {
                    let password = crate::util::random_token(12);
                    let hash = app
                        .passwords
                        .hash_on_worker(password.clone())
                        .await?
                        .map_err(|_| INTERNAL)?;
                    let id = app.engine.next_id();
                    let spec = UserSpec {
                        tenant_id: tenant,
                        email: email.clone(),
                        password_hash: hash,
                        first_name: p.str("first_name").map(Cow::into_owned).unwrap_or_default(),
                        last_name: p.str("last_name").map(Cow::into_owned).unwrap_or_default(),
                        phone_number: p.str("phone").map(Cow::into_owned).unwrap_or_default(),
                        is_initial_password: true,
                        max_activations: 1,
                        allow_unlimited_activations: false,
                        customer_id: None,
                    };
                    apply(app, Command::PutUser { id, spec }).await?;
                    (Some(id), Some(password))
                }
            }
        }
    };
    let key = (product.authorization_method == AuthMethod::LicenseKey)
        .then(crate::util::random_license_key);
    let validity = format_instant(now + pspec.trial_days as Millis * DAY_MS);
    let spec = LicenseSpec {
        product_id: product.id,
        license_key: key.clone(),
        user_id,
        customer_id: None,
        license_type: LicenseType::TimeLimited,
        enabled: true,
        active: true,
        is_trial: true,
        trial_days: Some(pspec.trial_days),
        validity_period: Some(validity),
        start_date: None,
        allow_grace_period: false,
        grace_period: 0,
        enable_maintenance_period: false,
        maintenance_period: None,
        max_activations: 1,
        allow_unlimited_activations: false,
        max_transfers: 0,
        prevent_vm: false,
        is_floating: false,
        is_floating_cloud: false,
        floating_users: 0,
        floating_timeout: pspec.floating_timeout,
        can_borrow: false,
        max_borrow_time: 0,
        max_consumptions: 0,
        allow_overages: false,
        max_overages: 0,
        allow_unlimited_consumptions: false,
        allow_negative_consumptions: false,
        reset_consumption: false,
        consumption_period: None,
        max_license_users: 1,
        order_store_id: format!("trial_{}", now),
        custom_fields: Vec::new(),
        metadata: json!({"trial_hardware_id": &*hw, "trial_email": email}),
    };
    let id = app.engine.next_id();
    apply(
        app,
        Command::PutLicense {
            id,
            spec,
            features: Vec::new(),
            now,
        },
    )
    .await?;
    let license = app.engine.license(id).ok_or(INTERNAL)?;
    trial_answer(app, &product, license, key, email, initial_password, now)
}

/// A trial license as `trial_key` answers it (with the user's e-mail and
/// initial password on user-based products).
fn trial_answer(
    app: &App,
    product: &Product,
    license: Arc<License>,
    key: Option<String>,
    email: Option<String>,
    initial_password: Option<String>,
    now: Millis,
) -> Answer {
    let auth_value = Cow::Owned(key.or(email.clone()).unwrap_or_default());
    let mut m = license_object(
        app,
        &Target {
            license,
            auth_value,
        },
        &Render::default(),
        now,
        Map::new(),
    );
    if let Some(e) = email.filter(|_| product.authorization_method == AuthMethod::User) {
        m.insert("license_user".into(), e.into());
        m.insert(
            "initial_password".into(),
            initial_password.map(Value::from).unwrap_or(Value::Null),
        );
    }
    to_vec(&Value::Object(m))
}

async fn user_licenses(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
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
    let items: Vec<Value> = app
        .engine
        .licenses_of_user(&user, product)
        .into_iter()
        .map(|license| {
            let t = Target {
                license,
                auth_value: Cow::Borrowed(&username),
            };
            json!({"license": license_object(app, &t, &Render::default(), now, Map::new()), "user": u})
        })
        .collect();
    to_vec(&Value::Array(items))
}

fn customer_license_users(app: &App, tenant: Id, p: &Params) -> Answer {
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
