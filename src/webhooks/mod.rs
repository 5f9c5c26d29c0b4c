//! Webhook delivery: the dispatcher that takes due deliveries from the
//! engine's outbox (see `engine::webhook`), sends them as Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`), and logs how
//! each attempt ended as a command, so that a restart resumes without
//! re-sending what a receiver acknowledged.
//!
//! It runs beside the server, off every request's path: requests only put
//! events in the outbox. A slow or dead receiver holds at most
//! [`WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX`] connections of the dispatcher and
//! none of the server's.
//!
//! # Layout
//! - `mod.rs`: signing (Standard Webhooks), the transport (http, and https
//!   with rustls), the dispatcher and how an attempt's answer is judged;
//! - `manage.rs`: what the native and admin APIs share of managing
//!   subscriptions (their fields, their answers' shapes).

mod manage;

pub use manage::*;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use sha2::Sha256;

use crate::app::App;
use crate::engine::model::Id;
use crate::engine::time::{Millis, DAY_MS, HOUR_MS};
use crate::engine::webhook::{AttemptReport, AttemptResult, Due};
use crate::engine::Command;

/// How long one attempt may take, connection to answer, ms.
pub const WEBHOOK_TIMEOUT_MS: u64 = 15_000;
/// Bytes of a receiver's answer read (the rest is not waited for).
pub const WEBHOOK_RESPONSE_BYTES_MAX: usize = 4_096;
/// Attempts in flight to one subscription at once.
pub const WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX: usize = 4;
/// Attempts in flight at once, every subscription together.
pub const WEBHOOK_IN_FLIGHT_MAX: usize = 256;
/// Attempts stop this long after a delivery began; it is then failed, ms.
pub const WEBHOOK_DELIVERY_WINDOW_MS: Millis = DAY_MS;
/// Waits before the attempts after the first (Svix's schedule), ms; each
/// is moved by up to 20 % either way so that receivers that failed
/// together are not all tried again at once.
pub const WEBHOOK_RETRY_SCHEDULE_MS: [Millis; 7] = [
    5_000,
    5 * 60_000,
    30 * 60_000,
    2 * HOUR_MS,
    5 * HOUR_MS,
    10 * HOUR_MS,
    10 * HOUR_MS,
];
/// A receiver's `Retry-After` is honoured up to this long, ms.
pub const WEBHOOK_RETRY_AFTER_MS_MAX: Millis = 6 * HOUR_MS;
/// Longest sleep of the dispatcher between looks at the outbox (the clock
/// may be a test's, which real sleeps cannot follow exactly), ms.
const DISPATCH_TICK_MS: u64 = 250;

type HmacSha256 = Hmac<Sha256>;

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under `secret`
/// (`whsec_` and the key in base64), as Standard Webhooks signs.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per valid secret, space
/// separated (during a rotation's overlap both verify).
pub fn signature_header(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| sign(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::thread_rng().gen();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// How the dispatcher reaches receivers.
#[derive(Clone)]
pub struct Transport {
    tls: tokio_rustls::TlsConnector,
}

impl Transport {
    /// Mozilla's roots, and the PEM certificates of `extra_roots` (a
    /// private CA of the receivers, `--webhook-ca`).
    pub fn new(extra_roots: Option<&std::path::Path>) -> Result<Transport, String> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_roots {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// What the dispatcher keeps between its looks at the outbox.
#[derive(Default)]
struct InFlight {
    /// (event, subscription) being attempted.
    busy: HashSet<(u64, Id)>,
    per_endpoint: HashMap<Id, usize>,
}

/// Runs until the server closes: delivers what is due, logs each attempt.
pub async fn run(app: Arc<App>, transport: Transport) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Id)>();
    let mut closing = app.closing.subscribe();
    let mut flight = InFlight::default();
    loop {
        if *closing.borrow() {
            return;
        }
        // While storage refuses changes no attempt could be recorded: wait.
        // In a cluster, only the node holding the delivery lease delivers.
        if app.store.as_ref().is_some_and(|s| s.log.is_latched())
            || app.cluster.as_ref().is_some_and(|c| !c.delivers())
        {
            tokio::time::sleep(Duration::from_millis(DISPATCH_TICK_MS)).await;
            continue;
        }
        let now = app.now();
        let room = WEBHOOK_IN_FLIGHT_MAX.saturating_sub(flight.busy.len());
        let (due, next) = if room == 0 {
            (Vec::new(), now)
        } else {
            app.engine.webhooks_due(
                now,
                app.webhook_released(),
                |e, s| {
                    flight.busy.contains(&(e, s))
                        || flight.per_endpoint.get(&s).copied().unwrap_or(0)
                            >= WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX
                },
                room,
            )
        };
        for d in due {
            flight.busy.insert((d.event, d.subscription_id));
            *flight.per_endpoint.entry(d.subscription_id).or_default() += 1;
            let (app, transport, done) = (app.clone(), transport.clone(), done_tx.clone());
            tokio::spawn(async move {
                let key = (d.event, d.subscription_id);
                attempt_and_log(&app, &transport, d).await;
                let _ = done.send(key);
            });
        }
        let wait_ms = if next == Millis::MAX {
            u64::MAX
        } else {
            u64::try_from(next.saturating_sub(app.now())).unwrap_or(0)
        };
        let sleep = Duration::from_millis(wait_ms.clamp(1, DISPATCH_TICK_MS));
        tokio::select! {
            () = app.webhook_wake.notified() => {}
            Some(key) = done_rx.recv() => finish(&mut flight, key),
            () = tokio::time::sleep(sleep), if !flight.busy.is_empty() || next != Millis::MAX => {}
            _ = closing.changed() => {}
        }
        while let Ok(key) = done_rx.try_recv() {
            finish(&mut flight, key);
        }
    }
}

fn finish(flight: &mut InFlight, key: (u64, Id)) {
    flight.busy.remove(&key);
    if let Some(n) = flight.per_endpoint.get_mut(&key.1) {
        *n -= 1;
        if *n == 0 {
            flight.per_endpoint.remove(&key.1);
        }
    }
}

async fn attempt_and_log(app: &App, transport: &Transport, d: Due) {
    let started = Instant::now();
    let answer = post(transport, &d).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let now = app.now();
    let report = report_of(answer, &d, now, duration_ms);
    app.metrics.webhook_attempt(match report.result {
        AttemptResult::Delivered => "delivered",
        AttemptResult::Retrying => "retrying",
        AttemptResult::Gone => "gone",
        AttemptResult::Failed | AttemptResult::Dropped => "failed",
    });
    let cmd = Command::WebhookAttempted {
        tenant_id: d.tenant_id,
        subscription_id: d.subscription_id,
        event: d.event,
        at: now,
        report,
    };
    if let Err(e) = app.commit(&cmd).await {
        // The delivery stays pending: it is attempted again (receivers
        // deduplicate by webhook-id), not before a second has passed.
        tracing::warn!("webhook attempt of {} not recorded: {e:?}", d.event_id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A receiver's answer: status and `Retry-After` (ms), or why there was none.
type Answer = Result<(StatusCode, Option<Millis>), String>;

fn report_of(answer: Answer, d: &Due, now: Millis, duration_ms: u64) -> AttemptReport {
    let (status_code, retry_after, error) = match answer {
        Ok((s, _)) if s.is_success() => {
            return AttemptReport {
                result: AttemptResult::Delivered,
                status_code: Some(s.as_u16()),
                error: None,
                next_at: None,
                duration_ms,
            }
        }
        Ok((StatusCode::GONE, _)) => {
            return AttemptReport {
                result: AttemptResult::Gone,
                status_code: Some(410),
                error: None,
                next_at: None,
                duration_ms,
            }
        }
        Ok((s, ra)) => (Some(s.as_u16()), ra, None),
        Err(e) => (None, None, Some(e)),
    };
    let next_at = now.saturating_add(retry_after.unwrap_or_else(|| backoff(d.attempts)));
    let give_up = next_at > d.since.saturating_add(WEBHOOK_DELIVERY_WINDOW_MS);
    AttemptReport {
        result: if give_up {
            AttemptResult::Failed
        } else {
            AttemptResult::Retrying
        },
        status_code,
        error,
        next_at: (!give_up).then_some(next_at),
        duration_ms,
    }
}

/// The wait after attempt number `attempts + 1` failed: the schedule's
/// step, moved by up to 20 % either way.
fn backoff(attempts: u32) -> Millis {
    let i = (attempts as usize).min(WEBHOOK_RETRY_SCHEDULE_MS.len() - 1);
    let base = WEBHOOK_RETRY_SCHEDULE_MS[i];
    let jitter = rand::thread_rng().gen_range(-base / 5..=base / 5);
    base + jitter
}

/// Where a URL points: (https, host, port, path and query).
fn target(url: &str) -> Result<(bool, String, u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL is not http or https".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok((https, host, port, path))
}

/// One attempt: POST the event, read at most a few KiB of the answer.
async fn post(transport: &Transport, d: &Due) -> Answer {
    let attempt = async {
        let (https, host, port, path) = target(&d.url)?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let req = request(d, &host, port, https, &path)?;
        if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name: {e}"))?;
            let tls = transport
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            exchange(TokioIo::new(tls), req).await
        } else {
            exchange(TokioIo::new(tcp), req).await
        }
    };
    match tokio::time::timeout(Duration::from_millis(WEBHOOK_TIMEOUT_MS), attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {WEBHOOK_TIMEOUT_MS} ms")),
    }
}

fn request(
    d: &Due,
    host: &str,
    port: u16,
    https: bool,
    path: &str,
) -> Result<Request<Full<Bytes>>, String> {
    // The timestamp is the wall clock's even under a test clock: receivers
    // compare it with their own time (Standard Webhooks allows 5 minutes).
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let default_port = if https { 443 } else { 80 };
    let authority = match (host.contains(':'), port == default_port) {
        (true, true) => format!("[{host}]"),
        (true, false) => format!("[{host}]:{port}"),
        (false, true) => host.to_string(),
        (false, false) => format!("{host}:{port}"),
    };
    Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("tally-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            signature_header(&d.secrets, &d.event_id, ts, &d.body),
        )
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| e.to_string())
}

/// Sends `req` on a fresh connection; redirects are answers like any
/// other (not followed).
async fn exchange<I>(io: I, req: Request<Full<Bytes>>) -> Answer
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let answer = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after_ms);
        let mut body = resp.into_body();
        let mut read = 0usize;
        while read < WEBHOOK_RESPONSE_BYTES_MAX {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |b| b.len()),
                _ => break,
            }
        }
        Ok((status, retry_after))
    }
    .await;
    conn.abort();
    answer
}

/// `Retry-After` in seconds or as an HTTP date, as ms from now (bounded).
fn retry_after_ms(v: &str) -> Option<Millis> {
    let ms = match v.trim().parse::<u64>() {
        Ok(s) => Millis::try_from(s.saturating_mul(1000)).ok()?,
        Err(_) => {
            let at = httpdate::parse_http_date(v.trim()).ok()?;
            let d = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            d.as_millis() as Millis
        }
    };
    Some(ms.clamp(1_000, WEBHOOK_RETRY_AFTER_MS_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example.
    #[test]
    fn signs_as_the_specification() {
        let sig = sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn backoff_follows_the_schedule_within_a_fifth() {
        for (i, base) in WEBHOOK_RETRY_SCHEDULE_MS.iter().enumerate() {
            for _ in 0..50 {
                let b = backoff(i as u32);
                assert!(b >= base - base / 5 && b <= base + base / 5, "{i}: {b}");
            }
        }
        assert!(backoff(100) <= WEBHOOK_RETRY_SCHEDULE_MS[6] * 6 / 5);
    }

    #[test]
    fn urls_name_their_target() {
        assert_eq!(
            target("http://127.0.0.1:8080/hook?x=1").unwrap(),
            (false, "127.0.0.1".into(), 8080, "/hook?x=1".into())
        );
        assert_eq!(
            target("https://example.com").unwrap(),
            (true, "example.com".into(), 443, "/".into())
        );
        assert!(target("ftp://x").is_err());
    }

    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(retry_after_ms("5"), Some(5_000));
        assert_eq!(retry_after_ms("0"), Some(1_000));
        assert_eq!(retry_after_ms("99999999"), Some(WEBHOOK_RETRY_AFTER_MS_MAX));
        assert_eq!(retry_after_ms("soon"), None);
    }
}
