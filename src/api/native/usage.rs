//! Metered usage of a consumption feature, and reservations: hold units,
//! then commit some or all of them, or void them.

use hyper::StatusCode;

use super::ops::{self, Fields};
use super::{body_json, change, wire, Ctx, Done, NativeError, R};
use crate::engine::model::{Id, License};
use crate::engine::{Command, EngineError};

pub async fn add(ctx: &Ctx<'_>, l: &License, code: &str, body: &[u8]) -> R<Done> {
    let f = ops::feature(l, code)?;
    let v = body_json(body)?;
    let mut fields = Fields::of(&v, "body")?;
    let units = fields.int("units")?;
    fields.done()?;
    change(ctx, ops::usage(ctx.app, l, &f, units, ctx.now)?).await
}

pub async fn reserve(ctx: &Ctx<'_>, l: &License, code: &str, body: &[u8]) -> R<Done> {
    let f = ops::feature(l, code)?;
    let v = body_json(body)?;
    let mut fields = Fields::of(&v, "body")?;
    let units = fields.int("units")?;
    let timeout = fields.int_opt("timeout_ms")?;
    fields.done()?;
    let op = ops::reserve(ctx.app, &ctx.caller, l, &f, units, timeout, ctx.now)?;
    change(ctx, op).await
}

fn reservation_id(id: &str) -> R<Id> {
    id.parse()
        .map_err(|_| NativeError::from(EngineError::ReservationNotFound))
}

pub fn get_reservation(ctx: &Ctx<'_>, id: &str) -> R<Done> {
    let r = ctx
        .app
        .engine
        .reservation(ctx.caller.tenant_id, reservation_id(id)?)
        .ok_or(EngineError::ReservationNotFound)?;
    let (meter, seats) = ctx.app.engine.reservation_pool(&r, ctx.now);
    let body = wire::reservation(
        ctx.app,
        &r,
        meter.as_ref(),
        seats.as_ref(),
        r.state_at(ctx.now),
    );
    Ok(Done::json(StatusCode::OK, &body))
}

/// `POST /v1/licenses/{key}/reservations` `{"seats": 1, "timeout_ms"?}`: hold
/// one activation seat of the license.
pub async fn reserve_seat(ctx: &Ctx<'_>, l: &License, body: &[u8]) -> R<Done> {
    let v = body_json(body)?;
    let mut fields = Fields::of(&v, "body")?;
    let seats = fields.int_opt("seats")?.unwrap_or(1);
    let timeout = fields.int_opt("timeout_ms")?;
    fields.done()?;
    if seats != 1 {
        return Err(NativeError::invalid("seats: a reservation holds 1 seat"));
    }
    let op = ops::reserve_seat(ctx.app, &ctx.caller, l, timeout, ctx.now)?;
    change(ctx, op).await
}

pub async fn commit(ctx: &Ctx<'_>, id: &str, body: &[u8]) -> R<Done> {
    let v = body_json(body)?;
    let mut fields = Fields::of(&v, "body")?;
    let op = ops::commit(
        ctx.app,
        &ctx.caller,
        reservation_id(id)?,
        &mut fields,
        ctx.now,
    )?;
    fields.done()?;
    change(ctx, op).await
}

pub async fn void(ctx: &Ctx<'_>, id: &str, body: &[u8]) -> R<Done> {
    let v = body_json(body)?;
    Fields::of(&v, "body")?.done()?;
    let op = Command::VoidReservation {
        tenant_id: ctx.caller.tenant_id,
        reservation_id: reservation_id(id)?,
        now: ctx.now,
    };
    change(ctx, op).await
}
