//! The two reference servers of the comparisons.
//!
//! - **baseline (B)**: bare hyper on Tally's own runtime and HTTP/1.1 settings,
//!   answering every request with a fixed JSON body of a given size. No
//!   server answering over this stack can beat it; Tally's figures are ratios
//!   to it.
//! - **Redis peer**: what users build instead of Tally: the same LicenseSpring
//!   requests, HMAC-checked the same way, behind the same hyper front-end, with
//!   the check-and-reserve done by one `EVALSHA` Lua script in `redis-server`
//!   over a multiplexed connection. It answers the feature-check, seat-release
//!   and feature-consumption requests of the harness's scenarios.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tally::catalog::{
    generated_license, generated_pool_device, GENERATED_API_KEY, GENERATED_POOL_DEVICES,
    GENERATED_POOL_FEATURE, GENERATED_POOL_LICENSE, GENERATED_POOL_SEATS, GENERATED_SHARED_KEY,
};
use tally::config::{Limits, REQUEST_BODY_BYTES_MAX};
use tally::server::RuntimeKind;
use tokio::net::TcpListener;

type Resp = Response<Full<Bytes>>;

fn json_resp(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Serves `handler` on `listen` with Tally's runtime and HTTP/1.1 settings.
fn serve<F, Fut>(
    listen: SocketAddr,
    workers: Option<usize>,
    runtime: RuntimeKind,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    match runtime {
        RuntimeKind::MultiThread => {
            let rt = tally::server::runtime(workers, None)?;
            rt.block_on(async move {
                let listener = TcpListener::bind(listen).await?;
                eprintln!("listening on http://{}", listener.local_addr()?);
                accept_loop(listener, handler).await
            })
        }
        RuntimeKind::CurrentThread => {
            // As `tally serve --runtime current-thread`: one runtime and one
            // SO_REUSEPORT listener per core.
            let threads = tally::server::per_core_threads(workers);
            let (bound, handles) =
                tally::server::spawn_per_core(listen, threads, None, None, move |l| {
                    accept_loop(l, handler.clone())
                })?;
            eprintln!("listening on http://{bound} ({threads} current-thread runtimes)");
            tally::server::join_all(handles)
        }
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let limits = Limits::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let conn = tally::server::http1_builder(&limits).serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// A valid JSON object of exactly `bytes` bytes (at least 12).
pub fn fixed_body(bytes: usize) -> Bytes {
    let pad = bytes.saturating_sub(10).max(2);
    Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)))
}

/// Runs the baseline server until the process is killed.
pub fn baseline(
    listen: SocketAddr,
    body_bytes: usize,
    workers: Option<usize>,
    runtime: RuntimeKind,
) -> std::io::Result<()> {
    let body = fixed_body(body_bytes);
    serve(listen, workers, runtime, move |req: Request<Incoming>| {
        let body = body.clone();
        async move {
            // Read the request body as Tally does.
            let _ = Limited::new(req.into_body(), REQUEST_BODY_BYTES_MAX)
                .collect()
                .await;
            json_resp(StatusCode::OK, body)
        }
    })
}

/// The check-and-reserve script. KEYS: license hash, its device set, the
/// feature hash, the feature's seat holders (sorted set by expiry).
/// ARGV: op (check, consume, release), hardware id, now (ms), amount.
pub const SCRIPT: &str = r#"
local op, hw, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lic = redis.call('HMGET', KEYS[1], 'id', 'enabled', 'valid_until')
if not lic[1] then return {'err', 'license_not_found'} end
if lic[2] ~= '1' then return {'err', 'license_not_enabled'} end
if tonumber(lic[3]) <= now then return {'err', 'license_expired'} end
if redis.call('SISMEMBER', KEYS[2], hw) == 0 then return {'err', 'device_not_found'} end
local f = redis.call('HMGET', KEYS[3], 'id', 'code', 'name', 'feature_type', 'expires_at',
  'floating_users', 'floating_timeout', 'max_consumption', 'max_overages', 'allow_overages',
  'unlimited', 'used')
if not f[1] then return {'err', 'invalid_license_feature_code'} end
if tonumber(f[5]) <= now then return {'err', 'license_feature_expired'} end
local seats = tonumber(f[6])
local in_use = -1
if op == 'release' then
  if seats == 0 then return {'err', 'feature_not_floating'} end
  redis.call('ZREM', KEYS[4], hw)
  in_use = redis.call('ZCARD', KEYS[4])
elseif op == 'consume' then
  if f[4] ~= 'consumption' then return {'err', 'license_not_consumption'} end
  local amount = tonumber(ARGV[4])
  local used = tonumber(f[12])
  local cap = tonumber(f[8])
  if f[10] == '1' then cap = cap + tonumber(f[9]) end
  if f[11] ~= '1' and used + amount > cap then return {'err', 'feature_not_enough_consumptions'} end
  f[12] = tostring(redis.call('HINCRBY', KEYS[3], 'used', amount))
elseif seats > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if not redis.call('ZSCORE', KEYS[4], hw) and redis.call('ZCARD', KEYS[4]) >= seats then
    return {'err', 'floating_not_available'}
  end
  redis.call('ZADD', KEYS[4], now + tonumber(f[7]) * 60000, hw)
  in_use = redis.call('ZCARD', KEYS[4])
end
return {'ok', lic[1], f[1], f[2], f[3], f[4], f[6], f[7], f[8], f[9], f[10], f[11], f[12], tostring(in_use)}
"#;

/// Far-future expiry for seeded licenses and features, ms.
const NEVER_MS: i64 = 253_402_300_799_000;
/// Seeding pipeline size, commands.
const SEED_BATCH: usize = 2_000;

fn keys(license_key: &str, feature: &str) -> [String; 4] {
    [
        format!("lic:{license_key}"),
        format!("dev:{license_key}"),
        format!("feat:{license_key}:{feature}"),
        format!("seats:{license_key}:{feature}"),
    ]
}

/// Loads the generated catalog (same licenses, devices and features as
/// `tally::catalog::generate(licenses, 4)`) into Redis.
pub async fn seed(
    con: &mut redis::aio::MultiplexedConnection,
    licenses: u64,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    let mut n = 0usize;
    let mut id = 1u64;
    let feature =
        |pipe: &mut redis::Pipeline, key: &str, code: &str, f: &[(&str, String)], id: u64| {
            let k = keys(key, code);
            let mut fields: Vec<(&str, String)> = vec![
                ("id", id.to_string()),
                ("code", code.to_string()),
                ("expires_at", NEVER_MS.to_string()),
                ("floating_users", "0".into()),
                ("floating_timeout", "30".into()),
                ("max_consumption", "0".into()),
                ("max_overages", "0".into()),
                ("allow_overages", "0".into()),
                ("unlimited", "0".into()),
                ("used", "0".into()),
                ("feature_type", "activation".into()),
            ];
            for (name, v) in f {
                match fields.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => fields.push((name, v.clone())),
                }
            }
            pipe.hset_multiple(&k[2], &fields).ignore();
        };
    for i in 0..=licenses {
        let (key, hws): (String, Vec<String>) = if i == licenses {
            (
                GENERATED_POOL_LICENSE.to_string(),
                (0..GENERATED_POOL_DEVICES)
                    .map(generated_pool_device)
                    .collect(),
            )
        } else {
            let (k, h) = generated_license(i);
            (k, vec![h])
        };
        let k = keys(&key, "");
        pipe.hset_multiple(
            &k[0],
            &[
                ("id", id.to_string()),
                ("enabled", "1".into()),
                ("valid_until", NEVER_MS.to_string()),
            ],
        )
        .ignore();
        pipe.sadd(&k[1], hws).ignore();
        id += 1;
        if i == licenses {
            feature(
                &mut pipe,
                &key,
                GENERATED_POOL_FEATURE,
                &[
                    ("name", "Pool seat".into()),
                    ("floating_users", GENERATED_POOL_SEATS.to_string()),
                ],
                id,
            );
            id += 1;
        } else {
            for f in 0..4u32 {
                let code = format!("f{f}");
                let spec: Vec<(&str, String)> = match f % 4 {
                    0 => vec![("name", format!("Feature {f}"))],
                    1 => vec![
                        ("name", format!("Floating {f}")),
                        ("floating_users", "8".into()),
                    ],
                    2 => vec![
                        ("name", format!("Metered {f}")),
                        ("feature_type", "consumption".into()),
                        ("max_consumption", "1000000000".into()),
                        ("allow_overages", "1".into()),
                        ("max_overages", "1000".into()),
                    ],
                    _ => vec![
                        ("name", format!("Unlimited {f}")),
                        ("feature_type", "consumption".into()),
                        ("unlimited", "1".into()),
                    ],
                };
                feature(&mut pipe, &key, &code, &spec, id);
                id += 1;
            }
        }
        n += 1;
        if n >= SEED_BATCH {
            pipe.query_async::<()>(con).await?;
            pipe = redis::pipe();
            n = 0;
        }
    }
    pipe.query_async::<()>(con).await
}

thread_local! {
    /// The last (Date, signature) verified on this thread: as in Tally, an
    /// HMAC is computed once per key and Date second.
    static VERIFIED: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

fn authenticated(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    let (Some(date), Some(auth)) = (
        h.get(hyper::header::DATE).and_then(|v| v.to_str().ok()),
        h.get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    // `prefix` is `name="`; the value runs to the next quote.
    let field = |prefix: &str| {
        let at = auth.find(prefix)? + prefix.len();
        let end = auth[at..].find('"')? + at;
        Some(&auth[at..end])
    };
    let (Some(sig), Some(key)) = (
        field("signature=\""),
        field("apiKey=\"").or(field("apikey=\"")),
    ) else {
        return false;
    };
    if key != GENERATED_API_KEY {
        return false;
    }
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.0 == date && v.1 == sig {
            return true;
        }
        let ok = tally::api::licensespring::sign_date(GENERATED_SHARED_KEY, date) == sig;
        if ok {
            *v = (date.to_string(), sig.to_string());
        }
        ok
    })
}

fn error(code: &str) -> Resp {
    json_resp(
        StatusCode::BAD_REQUEST,
        Bytes::from(format!(
            r#"{{"status":400,"code":"{code}","message":"{code}"}}"#
        )),
    )
}

/// Runs the Redis peer until the process is killed.
pub fn redis_peer(
    listen: SocketAddr,
    redis_addr: SocketAddr,
    licenses: u64,
    workers: Option<usize>,
    runtime: RuntimeKind,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (con, script) = rt.block_on(async {
        let client =
            redis::Client::open(format!("redis://{redis_addr}/")).map_err(|e| e.to_string())?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("redis {redis_addr}: {e}"))?;
        seed(&mut con, licenses)
            .await
            .map_err(|e| format!("seeding redis: {e}"))?;
        Ok::<_, String>((client, redis::Script::new(SCRIPT)))
    })?;
    drop(rt);
    let state = std::sync::Arc::new((con, script, tokio::sync::OnceCell::new()));
    serve(listen, workers, runtime, move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let (client, script, cell) = &*state;
            let con = match cell
                .get_or_try_init(|| client.get_multiplexed_async_connection())
                .await
            {
                Ok(c) => c.clone(),
                Err(_) => return json_resp(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
            };
            handle(req, con, script).await
        }
    })
    .map_err(|e| e.to_string())
}

#[allow(
    clippy::too_many_lines,
    reason = "the Redis peer's endpoint table, in one place"
)]
async fn handle(
    req: Request<Incoming>,
    mut con: redis::aio::MultiplexedConnection,
    script: &redis::Script,
) -> Resp {
    if req.uri().path() == "/healthz" {
        return json_resp(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#));
    }
    if !authenticated(&req) {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(
                br#"{"status":401,"code":"signature_mismatch","message":"bad signature"}"#,
            ),
        );
    }
    let path = req.uri().path().to_string();
    let params: Vec<(String, String)> = if req.method() == hyper::Method::GET {
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    } else {
        let Ok(body) = Limited::new(req.into_body(), REQUEST_BODY_BYTES_MAX)
            .collect()
            .await
        else {
            return error("invalid_json");
        };
        match serde_json::from_slice::<serde_json::Map<String, Value>>(&body.to_bytes()) {
            Ok(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect(),
            Err(_) => return error("invalid_json"),
        }
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let op = match path.as_str() {
        "/api/v4/check_license_feature" => "check",
        "/api/v4/add_feature_consumption" => "consume",
        "/api/v4/floating/feature_release" => "release",
        _ => {
            return json_resp(
                StatusCode::NOT_FOUND,
                Bytes::from_static(br#"{"status":404,"code":"not_found","message":"not found"}"#),
            )
        }
    };
    let (Some(key), Some(hw), Some(feature)) =
        (get("license_key"), get("hardware_id"), get("feature"))
    else {
        return error("missing_parameters");
    };
    let amount = get("consumptions").unwrap_or("0");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let k = keys(key, feature);
    let r: redis::RedisResult<Vec<String>> = script
        .key(&k[0])
        .key(&k[1])
        .key(&k[2])
        .key(&k[3])
        .arg(op)
        .arg(hw)
        .arg(now)
        .arg(amount)
        .invoke_async(&mut con)
        .await;
    let v = match r {
        Ok(v) => v,
        Err(_) => return json_resp(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
    };
    if v.first().map(String::as_str) != Some("ok") {
        return error(v.get(1).map(String::as_str).unwrap_or("internal_error"));
    }
    let int = |i: usize| v.get(i).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let body = if op == "release" {
        // As LicenseSpring (and Tally) answer a release: an empty body.
        return json_resp(StatusCode::OK, Bytes::new());
    } else {
        let mut b = json!({
            "allow_negative_consumptions": false,
            "allow_overages": v.get(10).map(|s| s == "1").unwrap_or(false),
            "allow_unlimited_consumptions": v.get(11).map(|s| s == "1").unwrap_or(false),
            "code": v.get(3),
            "consumption_period": null,
            "expiry_date": null,
            "feature_type": v.get(5),
            "id": int(2),
            "is_floating_cloud": int(6) > 0,
            "is_floating": false,
            "license_id": int(1),
            "max_consumption": int(8),
            "max_overages": int(9),
            "metadata": {},
            "name": v.get(4),
            "reset_consumption": false,
            "total_consumptions": int(12),
        });
        if int(6) > 0 {
            b["floating_in_use_devices"] = int(13).into();
            b["floating_users"] = int(6).into();
            b["floating_timeout"] = int(7).into();
        }
        b
    };
    json_resp(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}
