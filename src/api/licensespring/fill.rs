//! The signed-answer filler: a background thread that signs every
//! feature's check answer ahead of its requests, so that a check on any
//! license of a large catalog finds its signature kept (the signer's
//! stamped signatures, `--signature-cache-mb`) instead of making a fresh
//! RSA signature on the request's thread.
//!
//! A pass walks every license: feature 0 of every license before feature 1
//! of any, so a budget too small for every feature still holds one answer
//! per license. It signs answers whose state changed since (a renewed spec,
//! a consumption the request path did not sign) and, when it saw every
//! license, frees the entries of deleted features. Floating features are
//! left to their requests: their answer shows seats in use, which the
//! check itself changes.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::render::feature_answer;
use crate::app::App;

/// Pause between two passes.
pub const FILL_INTERVAL_MS: u64 = 60_000;
/// How often a pass looks whether the server is stopping (licenses).
const STOP_CHECK_LICENSES: usize = 1024;

/// Starts the filler when answers are signed and the budget holds any.
pub fn spawn(app: &Arc<App>) {
    if !app.sign_responses || app.signer.stamped_usage().2 == 0 {
        return;
    }
    let weak = Arc::downgrade(app);
    let started = std::thread::Builder::new()
        .name("tally-sign-fill".into())
        .spawn(move || run(&weak));
    if let Err(e) = started {
        tracing::warn!("the signed-answer filler did not start: {e}");
    }
}

fn stopping(app: &App) -> bool {
    *app.closing.borrow()
}

fn run(weak: &Weak<App>) {
    loop {
        {
            let Some(app) = weak.upgrade() else { return };
            if stopping(&app) {
                return;
            }
            let started = Instant::now();
            let done = pass(&app);
            if done.signed > 0 || done.full {
                let (kept, bytes, max) = app.signer.stamped_usage();
                tracing::info!(
                    "signed-answer filler: {} answers signed in {:.1} s; {kept} kept ({} MiB, budget {max}){}",
                    done.signed,
                    started.elapsed().as_secs_f64(),
                    bytes >> 20,
                    if done.full { "; the budget is full" } else { "" }
                );
            }
        }
        for _ in 0..FILL_INTERVAL_MS / 200 {
            std::thread::sleep(Duration::from_millis(200));
            match weak.upgrade() {
                Some(app) if !stopping(&app) => {}
                _ => return,
            }
        }
    }
}

#[derive(Default)]
struct Pass {
    signed: u64,
    /// The budget was full: some answers were left unsigned.
    full: bool,
}

fn pass(app: &App) -> Pass {
    let ids = app.engine.license_ids();
    let pass_no = app.signer.begin_pass();
    let mut out = Pass::default();
    for k in 0.. {
        let mut any = false;
        for (n, &id) in ids.iter().enumerate() {
            if n % STOP_CHECK_LICENSES == 0 && stopping(app) {
                return out;
            }
            let Some(l) = app.engine.license(id) else {
                continue;
            };
            let Some(f) = l.features.read().get(k).cloned() else {
                continue;
            };
            any = true;
            if f.spec.read().floating() {
                continue;
            }
            let signer = &app.signer;
            let answer = feature_answer(&l, &f, None, app.now(), |stamp| {
                // Kept already, or no room for it: nothing to render.
                (signer.has_stamped(f.id, stamp) || !signer.can_keep(f.id)).then_some(())
            });
            match answer {
                Ok((stamp, Ok(body))) => {
                    if signer.fill_stamped(f.id, stamp, &body) {
                        out.signed += 1;
                    } else {
                        out.full = true;
                    }
                }
                Ok((_, Err(()))) => out.full |= !signer.can_keep(f.id),
                Err(_) => {}
            }
        }
        if !any {
            break;
        }
    }
    app.signer.end_pass(pass_no);
    out
}
