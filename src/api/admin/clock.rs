//! The test clock (`tally serve --clock virtual`): `GET /admin/v1/clock`
//! reads it; `POST /admin/v1/clock` `{"advance_ms": N}` or `{"set":
//! "<RFC 3339>"}` moves it forward, running on the way what expires
//! meanwhile (see `App::advance_clock`). On the wall clock both answer 409.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{object, AdminError, R};
use crate::app::{App, ClockError};
use crate::engine::time::{format_instant, parse_instant};
use crate::http::{json_value, Resp};

/// Longest single move, ms (ten years).
pub const CLOCK_ADVANCE_MS_MAX: i64 = 10 * 366 * 86_400_000;

fn state(app: &App) -> Value {
    let now = app.now();
    json!({
        "mode": if app.is_virtual_clock() { "virtual" } else { "wall" },
        "now": format_instant(now),
        "now_ms": now,
    })
}

fn wall_clock() -> AdminError {
    AdminError::new(
        StatusCode::CONFLICT,
        "wall_clock",
        "the server runs on the wall clock; start it with --clock virtual to move time",
    )
}

pub(super) fn get(app: &App) -> R<Resp> {
    if !app.is_virtual_clock() {
        return Err(wall_clock());
    }
    Ok(json_value(StatusCode::OK, &state(app)))
}

pub(super) async fn post(app: &App, body: Option<&[u8]>) -> R<Resp> {
    if !app.is_virtual_clock() {
        return Err(wall_clock());
    }
    let m = object(body)?;
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "advance_ms" | "set"))
    {
        return Err(AdminError::bad(k.clone(), "is not a field of a clock move"));
    }
    let now = app.now();
    let to = match (m.get("advance_ms"), m.get("set")) {
        (Some(v), None) => {
            let ms = v
                .as_i64()
                .filter(|ms| (0..=CLOCK_ADVANCE_MS_MAX).contains(ms))
                .ok_or_else(|| AdminError::bad("advance_ms", "must be 0 to ten years of ms"))?;
            now + ms
        }
        (None, Some(v)) => {
            let t = v
                .as_str()
                .and_then(parse_instant)
                .ok_or_else(|| AdminError::bad("set", "must be an RFC 3339 instant"))?;
            if t - now > CLOCK_ADVANCE_MS_MAX {
                return Err(AdminError::bad("set", "more than ten years ahead"));
            }
            t
        }
        _ => return Err(AdminError::bad("", "give advance_ms or set (one of them)")),
    };
    let stops = app.advance_clock(to).await.map_err(|e| match e {
        ClockError::NotVirtual => wall_clock(),
        ClockError::Backwards => AdminError::new(
            StatusCode::CONFLICT,
            "clock_backwards",
            format!("the clock never goes back: it is {}", format_instant(now)),
        ),
        ClockError::Unavailable => AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "changes cannot be stored right now (storage failed)",
        ),
    })?;
    let mut v = state(app);
    v["stops"] = stops.into();
    Ok(json_value(StatusCode::OK, &v))
}
