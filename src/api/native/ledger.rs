//! The ledger of the caller's tenant: `GET /v1/ledger` with filters
//! (`license` key, `feature` code, `subject`, `kind`, `since`, `until`) and
//! cursor pages in the log's order (`after`, `limit`).

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;

use super::{ops, Ctx, Done, NativeError, R};
use crate::app::LedgerFilter;
use crate::engine::time::parse_instant;
use crate::http::Query;

/// Entries one page holds by default, and at most.
pub const LEDGER_PAGE_DEFAULT: usize = 100;
pub const LEDGER_PAGE_MAX: usize = 1_000;

/// The filter a request's query asks for, within the caller's tenant.
fn filter_of(ctx: &Ctx<'_>, q: &Query<'_>) -> R<LedgerFilter> {
    let tenant = ctx.caller.tenant_id;
    let license = match q.get("license") {
        Some(key) => Some(ops::license_by_key(ctx.app, tenant, key)?),
        None => None,
    };
    let feature_id = match (q.get("feature"), &license) {
        (Some(code), Some(l)) => Some(ops::feature(l, code)?.id),
        (Some(_), None) => return Err(NativeError::invalid("feature: needs license")),
        (None, _) => None,
    };
    let instant = |name: &str| -> R<Option<i64>> {
        q.get(name)
            .map(|v| {
                parse_instant(v).ok_or_else(|| {
                    NativeError::invalid(format!("{name}: must be an RFC 3339 instant"))
                })
            })
            .transpose()
    };
    Ok(LedgerFilter {
        tenant_id: Some(tenant),
        license_id: license.map(|l| l.id),
        feature_id,
        subject: q.get("subject").map(str::to_string),
        kind: q.get("kind").map(str::to_string),
        since: instant("since")?,
        until: instant("until")?,
    })
}

fn number(q: &Query<'_>, name: &str, default: u64) -> R<u64> {
    q.get(name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| NativeError::invalid(format!("{name}: must be a whole number")))
    })
}

fn no_ledger() -> NativeError {
    NativeError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "This server keeps no ledger",
    )
    .detail("the ledger is kept in the data directory")
}

pub async fn list(ctx: &Ctx<'_>, q: &Query<'_>) -> R<Done> {
    let filter = filter_of(ctx, q)?;
    let after = number(q, "after", 0)?;
    let limit = number(q, "limit", LEDGER_PAGE_DEFAULT as u64)? as usize;
    if !(1..=LEDGER_PAGE_MAX).contains(&limit) {
        return Err(NativeError::invalid("limit: must be 1 to 1000"));
    }
    let (entries, next) = ctx
        .app
        .ledger(after, limit, filter)
        .await
        .ok_or_else(no_ledger)?
        .map_err(|e| {
            NativeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The ledger cannot be read right now",
            )
            .detail(e.to_string())
        })?;
    Ok(Done::json(
        StatusCode::OK,
        &json!({"entries": entries, "next_after": next}),
    ))
}

/// Streams open at once, at most (each holds a connection and a task).
pub const LEDGER_STREAMS_MAX: usize = 256;
/// Chunks a stream buffers for a slow reader before its task waits.
pub const LEDGER_STREAM_CHUNKS_MAX: usize = 64;
/// A comment line is sent after this much quiet, ms (so that proxies and
/// the server's own idle limits keep the stream open).
pub const LEDGER_STREAM_KEEPALIVE_MS: u64 = 15_000;
/// Entries read from the ledger per step of a stream.
const LEDGER_STREAM_BATCH: usize = 256;

/// `GET /v1/ledger/stream`: Server-Sent Events of the tenant's entries as
/// they are made (`id: <seq>`, `event: <kind>`, `data: <entry JSON>`), from
/// `Last-Event-ID` (or `?after=`) on; the same filters as the list.
pub fn stream(
    ctx: &Ctx<'_>,
    streams: &std::sync::Arc<tokio::sync::Semaphore>,
    q: &Query<'_>,
    last_event_id: Option<&str>,
) -> R<Done> {
    let filter = filter_of(ctx, q)?;
    let after = match last_event_id {
        Some(id) => id
            .trim()
            .parse()
            .map_err(|_| NativeError::invalid("Last-Event-ID: must be an entry's seq"))?,
        None => number(q, "after", 0)?,
    };
    let permit = streams.clone().try_acquire_owned().map_err(|_| {
        NativeError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "Too many ledger streams are open",
        )
    })?;
    let (mut tail, mut durable) = ctx.app.ledger_follow(after).ok_or_else(no_ledger)?;
    let (tx, rx) = tokio::sync::mpsc::channel(LEDGER_STREAM_CHUNKS_MAX);
    let mut closing = ctx.app.closing.subscribe();
    tokio::spawn(async move {
        let _permit = permit;
        if tx
            .send(Bytes::from_static(b"retry: 2000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let (t, read) = match tokio::task::spawn_blocking(move || {
                let r = tail.next(LEDGER_STREAM_BATCH);
                (tail, r)
            })
            .await
            {
                Ok(x) => x,
                Err(_) => return,
            };
            tail = t;
            let Ok(entries) = read else { return };
            for e in entries.iter().filter(|e| filter.keep(e)) {
                let frame = format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    e["seq"],
                    e["entry"]["kind"].as_str().unwrap_or("entry"),
                    e
                );
                if tx.send(Bytes::from(frame)).await.is_err() {
                    return;
                }
            }
            if entries.len() >= LEDGER_STREAM_BATCH {
                continue;
            }
            let quiet = std::time::Duration::from_millis(LEDGER_STREAM_KEEPALIVE_MS);
            if *closing.borrow() {
                return;
            }
            tokio::select! {
                _ = closing.changed() => return,
                changed = durable.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(quiet) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Done::stream(rx))
}
