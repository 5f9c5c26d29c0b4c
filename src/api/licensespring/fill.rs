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

use super::render::{feature_answer, FeatureAnswer};
use crate::app::App;
use crate::signing::{Filled, SIGNATURES_FILE};

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
    let mut saved = Saved { made: 0, at: None };
    if let Some(app) = weak.upgrade() {
        load(&app);
        saved.made = app.signer.stamped_changes();
    }
    let mut told_full = false;
    loop {
        {
            let Some(app) = weak.upgrade() else { return };
            if stopping(&app) {
                return;
            }
            let started = Instant::now();
            let done = pass(&app);
            if done.signed > 0 || done.verified > 0 || (done.full && !told_full) {
                let (kept, bytes, max) = app.signer.stamped_usage();
                tracing::info!(
                    "signed-answer filler: {} answers signed, {} saved signatures matched, in {:.1} s; {kept} kept ({} MiB, budget {max}){}",
                    done.signed,
                    done.verified,
                    started.elapsed().as_secs_f64(),
                    bytes >> 20,
                    if done.full { "; the budget is full" } else { "" }
                );
            }
            told_full |= done.full;
            save_if_due(&app, &mut saved);
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

/// Shortest time between two saves of the kept signatures (a save of a
/// full default budget writes about 470 MB).
pub const SAVE_INTERVAL_MS: u64 = 600_000;

/// The last save: signatures kept by stamp by then, and when.
struct Saved {
    made: u64,
    at: Option<Instant>,
}

fn file(app: &App) -> Option<std::path::PathBuf> {
    app.data_dir().map(|d| d.join(SIGNATURES_FILE))
}

/// Loads the signatures a previous run saved (see `Signer::load_stamped`).
fn load(app: &App) {
    let Some(path) = file(app) else { return };
    // A save a stop cut short.
    let _ = std::fs::remove_file(path.with_extension("tmp"));
    if !path.exists() {
        return;
    }
    let started = Instant::now();
    match app.signer.load_stamped(&path) {
        Ok(Some(n)) => tracing::info!(
            "loaded {n} saved signatures from {} in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        ),
        Ok(None) => tracing::info!(
            "ignored {}: another signing key's (or another format)",
            path.display()
        ),
        Err(e) => tracing::warn!("ignored {}: {e}", path.display()),
    }
}

/// Saves the kept signatures once a hundredth of them (at least one) were
/// kept since the last save (answers signed elsewhere do not count), at
/// most every [`SAVE_INTERVAL_MS`] (the first time at once), so that a
/// restart does not sign a large catalog again. Not while stopping.
fn save_if_due(app: &App, saved: &mut Saved) {
    let Some(path) = file(app) else { return };
    if stopping(app) {
        return;
    }
    let made = app.signer.stamped_changes();
    let (kept, _, _) = app.signer.stamped_usage();
    let fresh = made.saturating_sub(saved.made);
    let waited = saved
        .at
        .is_none_or(|at| at.elapsed() >= Duration::from_millis(SAVE_INTERVAL_MS));
    if fresh == 0 || fresh < (kept as u64 / 100).max(1) || !waited {
        return;
    }
    let started = Instant::now();
    match app.signer.save_stamped(&path) {
        Ok(n) => tracing::info!(
            "saved {n} signatures to {} in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => tracing::warn!("could not save signatures to {}: {e}", path.display()),
    }
    *saved = Saved {
        made,
        at: Some(Instant::now()),
    };
}

#[derive(Default)]
struct Pass {
    signed: u64,
    /// Saved signatures matched to their bodies (no signing).
    verified: u64,
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
            if f.is_floating() {
                continue;
            }
            let signer = &app.signer;
            let answer = feature_answer(&l, &f, None, app.now(), |stamp| {
                // Kept already, or no room for it: nothing to render.
                (signer.has_stamped(f.id, stamp) || !signer.can_keep(f.id)).then_some(())
            });
            match answer {
                Ok(FeatureAnswer::Fresh(stamp, body)) => {
                    match signer.fill_stamped(f.id, stamp, &body) {
                        Filled::Signed => out.signed += 1,
                        Filled::Verified => out.verified += 1,
                        Filled::Full => out.full = true,
                    }
                }
                Ok(FeatureAnswer::Cached(())) => out.full |= !signer.can_keep(f.id),
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
