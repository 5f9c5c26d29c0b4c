//! The ledger of the caller's tenant: `GET /v1/ledger` with filters
//! (`license` key, `feature` code, `subject`, `kind`, `since`, `until`) and
//! cursor pages in the log's order (`after`, `limit`).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{ops, Ctx, Done, NativeError, R};
use crate::engine::time::parse_instant;
use crate::http::Query;

/// Entries one page holds by default, and at most.
pub const LEDGER_PAGE_DEFAULT: usize = 100;
pub const LEDGER_PAGE_MAX: usize = 1_000;

pub fn list(ctx: &Ctx<'_>, q: &Query<'_>) -> R<Done> {
    let tenant = ctx.caller.tenant_id;
    let license = match q.get("license") {
        Some(key) => Some(ops::license_by_key(ctx.app, tenant, key)?),
        None => None,
    };
    let feature = match (q.get("feature"), &license) {
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
    let (since, until) = (instant("since")?, instant("until")?);
    let number = |name: &str, default: u64| -> R<u64> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| NativeError::invalid(format!("{name}: must be a whole number")))
        })
    };
    let after = number("after", 0)?;
    let limit = number("limit", LEDGER_PAGE_DEFAULT as u64)? as usize;
    if !(1..=LEDGER_PAGE_MAX).contains(&limit) {
        return Err(NativeError::invalid("limit: must be 1 to 1000"));
    }
    let (subject, kind) = (q.get("subject"), q.get("kind"));
    let license_id = license.as_ref().map(|l| l.id);
    let keep = |v: &Value| {
        let e = &v["entry"];
        e["tenant_id"].as_u64() == Some(tenant)
            && license_id.is_none_or(|id| e["license_id"].as_u64() == Some(id))
            && feature.is_none_or(|id| e["feature_id"].as_u64() == Some(id))
            && subject.is_none_or(|s| e["subject"].as_str() == Some(s))
            && kind.is_none_or(|k| e["kind"].as_str() == Some(k))
            && since.is_none_or(|t| e["at"].as_i64().is_some_and(|at| at >= t))
            && until.is_none_or(|t| e["at"].as_i64().is_some_and(|at| at < t))
    };
    let (entries, next) = ctx
        .app
        .ledger(after, limit, keep)
        .ok_or_else(|| {
            NativeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "This server keeps no ledger",
            )
            .detail("the ledger is kept in the data directory")
        })?
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
