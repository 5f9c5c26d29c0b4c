//! Batches (`POST /v1/batch`: up to 100 operations; `"atomic": true`
//! applies all or none as one command and one log record, otherwise each
//! gets its own result, 207) and preflights (`POST /v1/preflight`: would
//! all of these be allowed together now?).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::ops::{self, Fields};
use super::{body_json, idempotent, wire, Ctx, Done, NativeError, R};
use crate::engine::native::{Reply, BATCH_OPS_MAX};
use crate::engine::{Command, Outcome};

/// The operations of a batch or preflight body, as commands.
fn operations(ctx: &Ctx<'_>, v: &Value, atomic_field: bool) -> R<(Vec<Command<'static>>, bool)> {
    let mut f = Fields::of(v, "body")?;
    let atomic = if atomic_field {
        f.bool_opt("atomic")?.unwrap_or(false)
    } else {
        true
    };
    let list = match f.value("operations") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= BATCH_OPS_MAX => list,
        _ => {
            return Err(NativeError::invalid(
                "body.operations: must be an array of 1 to 100 operations",
            ))
        }
    };
    f.done()?;
    let ops = list
        .iter()
        .enumerate()
        .map(|(i, op)| {
            ops::parse_op(
                ctx.app,
                &ctx.caller,
                op,
                format!("operations[{i}]"),
                ctx.now,
            )
        })
        .collect::<R<Vec<_>>>()?;
    Ok((ops, atomic))
}

/// The problem of operation `index`, with its index.
fn failed(index: usize, e: crate::engine::EngineError) -> NativeError {
    let mut p = NativeError::from(e);
    p.detail = format!(
        "operations[{index}]: {}",
        if p.detail.is_empty() {
            p.title
        } else {
            &p.detail
        }
    );
    p
}

pub fn preflight(ctx: &Ctx<'_>, body: &[u8]) -> R<Done> {
    let (ops, _) = operations(ctx, &body_json(body)?, false)?;
    let answer = match ctx.app.engine.preview(&ops) {
        Ok(replies) => json!({
            "allowed": true,
            "results": replies.iter().map(|r| result(ctx, r)).collect::<Vec<_>>(),
        }),
        Err((index, e)) => {
            let p = failed(index, e);
            json!({"allowed": false, "failed": {"index": index, "problem": p.to_json()}})
        }
    };
    Ok(Done::json(StatusCode::OK, &answer))
}

fn result(ctx: &Ctx<'_>, r: &Reply) -> Value {
    let (status, body) = wire::reply(ctx.app, r);
    json!({"status": status.as_u16(), "body": body})
}

pub async fn batch(ctx: &Ctx<'_>, body: &[u8]) -> R<Done> {
    // A dry run changes nothing: read-only keys may ask one.
    if !ctx.dry_run {
        ctx.caller.may_write()?;
    }
    let (ops, atomic) = operations(ctx, &body_json(body)?, true)?;
    if atomic {
        return atomic_batch(ctx, ops).await;
    }
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let r = if ctx.dry_run {
            ctx.app
                .engine
                .preview(std::slice::from_ref(&op))
                .map(|mut v| v.pop().unwrap_or(Reply::Done))
                .map_err(|(_, e)| NativeError::from(e))
        } else {
            ctx.app
                .commit_replying(&idempotent(ctx, op, Some(i)))
                .await
                .map(|(_, reply)| reply)
                .map_err(NativeError::from)
        };
        results.push(match r {
            Ok(reply) => result(ctx, &reply),
            Err(p) => json!({"status": p.status.as_u16(), "body": p.to_json()}),
        });
    }
    let mut done = Done::json(
        StatusCode::MULTI_STATUS,
        &json!({"atomic": false, "results": results}),
    );
    done.dry_run = ctx.dry_run;
    Ok(done)
}

async fn atomic_batch(ctx: &Ctx<'_>, ops: Vec<Command<'static>>) -> R<Done> {
    if ctx.dry_run {
        let replies = ctx
            .app
            .engine
            .preview(&ops)
            .map_err(|(i, e)| failed(i, e))?;
        let (status, body) = wire::reply(ctx.app, &Reply::Batch { replies });
        let mut done = Done::json(status, &body);
        done.dry_run = true;
        return Ok(done);
    }
    let cmd = idempotent(ctx, Command::Batch { ops, now: ctx.now }, None);
    match ctx.app.commit_replying(&cmd).await {
        Ok((outcome, reply)) => {
            let (status, body) = wire::reply(ctx.app, &reply);
            let mut done = Done::json(status, &body);
            done.replayed = outcome == (Outcome::Idempotent { replayed: true });
            Ok(done)
        }
        Err(crate::app::CommitError::Engine(e)) => {
            // Which operation: the preview of the same batch says (the
            // engine refused it as a whole).
            let batch_ops = match &cmd {
                Command::Batch { ops, .. } => ops,
                Command::Idempotent { cmd, .. } => match cmd.as_ref() {
                    Command::Batch { ops, .. } => ops,
                    _ => return Err(e.into()),
                },
                _ => return Err(e.into()),
            };
            match ctx.app.engine.preview(batch_ops) {
                Err((i, e2)) if e2 == e => Err(failed(i, e)),
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
