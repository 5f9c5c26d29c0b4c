//! Shared state of a running server: the engine and the services the surfaces
//! use (clock, signer, password verifier, limits, admin token).

use std::sync::Arc;

use rsa::RsaPrivateKey;

use crate::api::licensespring::LsState;
use crate::clock::{Clock, SystemClock};
use crate::config::Limits;
use crate::credentials::Passwords;
use crate::engine::time::Millis;
use crate::engine::Engine;
use crate::signing::Signer;

pub struct App {
    /// All entitlement state; internally sharded, shared by every request.
    pub engine: Engine,
    /// Read once per request; tests inject a manual clock.
    clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// Bearer token of the admin API (compared in constant time).
    pub admin_token: String,
    /// Signs LicenseSpring responses; its public key is served to admins.
    pub signer: Signer,
    /// Whether LicenseSpring responses carry a LicenseSignature header.
    pub sign_responses: bool,
    pub passwords: Passwords,
    /// LicenseSpring surface caches (verified request signatures).
    pub licensespring: LsState,
}

pub struct AppOptions {
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub admin_token: String,
    pub signing_key: RsaPrivateKey,
    pub sign_responses: bool,
}

impl AppOptions {
    pub fn new(admin_token: String, signing_key: RsaPrivateKey) -> Self {
        AppOptions {
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            admin_token,
            signing_key,
            sign_responses: true,
        }
    }
}

impl App {
    pub fn new(opts: AppOptions) -> Self {
        App {
            engine: Engine::new(),
            clock: opts.clock,
            limits: opts.limits,
            admin_token: opts.admin_token,
            signer: Signer::new(opts.signing_key),
            sign_responses: opts.sign_responses,
            passwords: Passwords::new(),
            licensespring: LsState::default(),
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }
}
