//! Floating seats of a feature: take or renew (`PUT`, with `ttl_ms` or
//! `borrow_until`), release (`DELETE`), list holders.

use hyper::StatusCode;
use serde_json::json;

use super::ops::{self, Fields};
use super::{body_json, change, wire, Ctx, Done, R};
use crate::engine::model::License;

pub fn list(ctx: &Ctx<'_>, l: &License, code: &str) -> R<Done> {
    let f = ops::feature(l, code)?;
    let seats: Vec<_> = f
        .floating
        .holders(ctx.now)
        .iter()
        .map(|s| {
            json!({
                "holder": &*s.holder,
                "since": wire::instant(s.since),
                "expires_at": wire::instant(s.expires_at),
                "borrowed_until": s.borrowed_until.map(wire::instant),
            })
        })
        .collect();
    Ok(Done::json(
        StatusCode::OK,
        &json!({
            "feature": code,
            "capacity": f.floating.capacity(),
            "in_use": seats.len(),
            "seats": seats,
        }),
    ))
}

pub async fn take(ctx: &Ctx<'_>, l: &License, code: &str, holder: &str, body: &[u8]) -> R<Done> {
    let f = ops::feature(l, code)?;
    let v = body_json(body)?;
    let mut fields = Fields::of(&v, "body")?;
    let ttl = fields.int_opt("ttl_ms")?;
    let borrow = fields.str_opt("borrow_until")?;
    fields.done()?;
    let op = ops::take_seat(ctx.app, l, &f, holder.to_string(), ttl, borrow, ctx.now)?;
    change(ctx, op).await
}

pub async fn release(ctx: &Ctx<'_>, l: &License, code: &str, holder: &str) -> R<Done> {
    let f = ops::feature(l, code)?;
    if !f.is_floating() {
        return Err(crate::engine::EngineError::FeatureNotFloating.into());
    }
    change(ctx, ops::release_seat(l, &f, holder.to_string(), ctx.now)).await
}
