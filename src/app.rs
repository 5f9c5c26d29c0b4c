//! Shared state of a running server: the engine and the services the surfaces
//! use (clock, signer, password verifier, limits, admin token).

use std::sync::Arc;

use rsa::RsaPrivateKey;

use crate::clock::{Clock, SystemClock};
use crate::config::Limits;
use crate::credentials::Passwords;
use crate::engine::ledger::LedgerEntry;
use crate::engine::native::Reply;
use crate::engine::time::Millis;
use crate::engine::{Command, Engine, EngineError, Outcome};
use crate::signing::Signer;
use crate::storage::store::Store;
use crate::storage::wal::LogError;

mod fixtures;
pub use fixtures::StateError;

/// Who made a change, with which request: set by the server for each
/// request (surface, request id) and by the surface once it knows the caller
/// (actor), and stored with the change's log record.
#[derive(Clone, Debug)]
pub struct Origin {
    pub surface: &'static str,
    /// As the answer's `X-Request-Id` carries it (a clone shares its bytes).
    pub request_id: hyper::header::HeaderValue,
    pub actor: Actor,
    /// The surface's result code of the answer, set where an error is
    /// written (`set_code`); None for a success.
    pub code: Option<&'static str>,
    /// Whether the request holds a pass of the server's gate (a state
    /// restore must not be made from inside it: it would wait for itself).
    pub gated: bool,
}

/// The caller a surface authenticated. Kept as the key itself (an `Arc`
/// clone, no work on the hot path) and written as its id only when a change
/// is recorded.
#[derive(Clone, Debug, Default)]
pub enum Actor {
    #[default]
    Unknown,
    /// A tenant API key: recorded as its id (`ApiKey::key_id`), never as the key.
    Key(Arc<crate::engine::model::ApiKey>),
    /// The admin token's holder (`admin`) or a vendor user (`infa:<name>`).
    Named(String),
}

tokio::task_local! {
    /// The origin of the request this task serves (none for the server's
    /// own changes: sweeps, catalogs, snapshots).
    static ORIGIN: std::cell::RefCell<Origin>;
}

/// Runs `f` (a request's handling) with `origin` as its origin; returns
/// its output and the origin as the handling left it (actor, code).
pub async fn with_origin<F: std::future::Future>(
    origin: Origin,
    f: F,
) -> (F::Output, Option<Origin>) {
    let scoped = ORIGIN.scope(std::cell::RefCell::new(origin), f);
    tokio::pin!(scoped);
    let out = (&mut scoped).await;
    let origin = scoped
        .as_mut()
        .take_value()
        .map(std::cell::RefCell::into_inner);
    (out, origin)
}

/// Names the result code of the current request's answer (its surface's
/// error code): what metrics and the access log count it under.
pub fn set_code(code: &'static str) {
    let _ = ORIGIN.try_with(|o| o.borrow_mut().code = Some(code));
}

/// Names the caller of the current request (after the surface authenticated it).
pub fn set_actor(actor: Actor) {
    let _ = ORIGIN.try_with(|o| o.borrow_mut().actor = actor);
}

/// The current request's origin as JSON (empty outside a request):
/// `{"surface", "request_id", "at", "actor"?}`. Written on every logged change,
/// so it is serialised from borrowed fields, not built as a `Value`.
fn origin_json(at: Millis) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        surface: &'a str,
        request_id: &'a str,
        /// When the change was committed (the app's clock).
        at: Millis,
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<&'a str>,
    }
    ORIGIN
        .try_with(|o| {
            let o = o.borrow();
            let actor = match &o.actor {
                Actor::Unknown => None,
                Actor::Key(k) => Some(&*k.key_id),
                Actor::Named(n) => Some(n.as_str()),
            };
            let wire = Wire {
                surface: o.surface,
                request_id: o.request_id.to_str().unwrap_or_default(),
                at,
                actor,
            };
            serde_json::to_vec(&wire).unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Why a change was not made, or is not known to be durable: what every
/// surface maps to its own error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitError {
    /// The engine refused the command; nothing changed.
    Engine(EngineError),
    /// Storage failed (or the log is shutting down): the change was refused,
    /// or was applied in memory but cannot be acknowledged as durable.
    Unavailable,
}

impl From<LogError> for CommitError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Engine(e) => CommitError::Engine(e),
            LogError::Unavailable => CommitError::Unavailable,
        }
    }
}

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
    /// Enforce vendors' documented rate limits (the surfaces that emulate
    /// them read it when the server builds their state).
    pub emulate_rate_limits: bool,
    /// The data directory's log and snapshots; None keeps state in memory
    /// only (benchmarks, and tests that are not about durability).
    pub store: Option<Arc<Store>>,
    /// Signs offline tokens (the native API); its keys rotate through the admin API.
    pub tokens: crate::tokens::TokenKeys,
    /// Where rotated token keys are stored (None: in memory only).
    token_keys_dir: Option<std::path::PathBuf>,
    /// Serialises token key rotations (store, then install).
    rotation: parking_lot::Mutex<()>,
    /// Set when the server stops taking requests: open streams end.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Without a store, commits still apply one at a time, as the log's
    /// commit lock makes them with one: atomic batches and idempotency
    /// records rely on that order.
    serial: parking_lot::Mutex<()>,
    /// Webhook events below this seq were made by changes known to be
    /// durable: the dispatcher delivers only those (an event of a change
    /// the log could not make durable is never sent). Raised after each
    /// commit's wait; events are numbered in the log's order, and records
    /// become durable in that order too.
    webhook_released: std::sync::atomic::AtomicU64,
    /// Wakes the webhook dispatcher when events were released.
    pub webhook_wake: tokio::sync::Notify,
    /// PEM certificates trusted for https:// receivers besides Mozilla's
    /// roots (`--webhook-ca`).
    pub webhook_ca: Option<std::path::PathBuf>,
    /// What the server counts, for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The bearer token `GET /metrics` wants (`--metrics-token`); without
    /// one only loopback clients may scrape.
    pub metrics_token: Option<String>,
    /// One line per request at `info` (`--access-log`).
    pub access_log: bool,
    /// The test clock (`--clock virtual`): time moves only through
    /// [`App::advance_clock`]. None: the wall clock (or a test's own).
    virtual_clock: Option<Arc<crate::clock::ManualClock>>,
    /// Serialises advances of the test clock.
    advancing: tokio::sync::Mutex<()>,
    /// The last requests (`--journal N`); None: off.
    pub journal: Option<crate::journal::Journal>,
    /// The harness's fault rules (none by default).
    pub faults: crate::faults::Faults,
    /// The vendors' emulated rate limits' windows and tenants' overrides
    /// (used with `--emulate-rate-limits`).
    pub rate_limits: crate::ratelimit::Limiter,
    /// Every request passes it while its handler runs; a state restore
    /// shuts it (see [`crate::gate`]).
    pub gate: crate::gate::Gate,
    /// Serialises the state fixtures' saves, restores and deletions.
    fixtures: tokio::sync::Mutex<()>,
    /// The cluster this node belongs to (`--cluster`): changes go through
    /// its stream instead of the local log.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// A test clock's move ([`App::advance_clock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// The server runs on the wall clock.
    NotVirtual,
    /// The clock never goes back.
    Backwards,
    /// Storage failed while the move's sweeps were logged.
    Unavailable,
}

/// Stops a test clock makes on one move, at most (each runs the sweeps).
pub const CLOCK_STOPS_MAX: usize = 100_000;

pub struct AppOptions {
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub admin_token: String,
    pub signing_key: RsaPrivateKey,
    pub sign_responses: bool,
    /// The stamped signatures' memory budget (`--signature-cache-mb`).
    pub signature_cache_bytes: usize,
    /// The engine, when it was rebuilt from a data directory (else empty).
    pub engine: Option<Engine>,
    pub store: Option<Arc<Store>>,
    /// Enforce vendors' documented rate limits (Qlik's tiers).
    pub emulate_rate_limits: bool,
    /// The offline tokens' keys (from the data directory; a fresh one otherwise).
    pub token_keys: Vec<crate::tokens::TokenKeyRecord>,
    /// The data directory, where rotated token keys are stored.
    pub data_dir: Option<std::path::PathBuf>,
    /// PEM certificates trusted for https:// webhook receivers.
    pub webhook_ca: Option<std::path::PathBuf>,
    /// Count requests and commits (`--no-metrics` turns it off).
    pub metrics: bool,
    pub metrics_per_tenant: bool,
    pub metrics_token: Option<String>,
    pub access_log: bool,
    /// The test clock, when the server runs on one (`clock` is then it).
    pub virtual_clock: Option<Arc<crate::clock::ManualClock>>,
    /// Requests the journal keeps (0: off).
    pub journal: usize,
    /// The cluster, when this node is one of several (`--cluster`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppOptions {
    pub fn new(admin_token: String, signing_key: RsaPrivateKey) -> Self {
        AppOptions {
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            admin_token,
            signing_key,
            sign_responses: true,
            signature_cache_bytes: crate::signing::SIGNATURE_CACHE_MB_DEFAULT << 20,
            engine: None,
            store: None,
            emulate_rate_limits: false,
            token_keys: Vec::new(),
            data_dir: None,
            webhook_ca: None,
            metrics: true,
            metrics_per_tenant: false,
            metrics_token: None,
            access_log: false,
            virtual_clock: None,
            journal: 0,
            cluster: None,
        }
    }
}

impl App {
    /// The data directory (None for a server without one).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.token_keys_dir.as_deref()
    }
    pub fn new(opts: AppOptions) -> Self {
        let tokens = token_keys(opts.token_keys, opts.clock.now_ms());
        App {
            engine: opts.engine.unwrap_or_default(),
            store: opts.store,
            clock: opts.clock,
            limits: opts.limits,
            admin_token: opts.admin_token,
            signer: Signer::new(opts.signing_key, opts.signature_cache_bytes),
            sign_responses: opts.sign_responses,
            passwords: Passwords::new(),
            emulate_rate_limits: opts.emulate_rate_limits,
            tokens,
            token_keys_dir: opts.data_dir,
            rotation: parking_lot::Mutex::new(()),
            closing: tokio::sync::watch::Sender::new(false),
            serial: parking_lot::Mutex::new(()),
            webhook_released: std::sync::atomic::AtomicU64::new(0),
            webhook_wake: tokio::sync::Notify::new(),
            webhook_ca: opts.webhook_ca,
            metrics: crate::metrics::Metrics::new(opts.metrics, opts.metrics_per_tenant),
            metrics_token: opts.metrics_token,
            access_log: opts.access_log,
            virtual_clock: opts.virtual_clock,
            advancing: tokio::sync::Mutex::new(()),
            journal: (opts.journal > 0).then(|| crate::journal::Journal::new(opts.journal)),
            faults: crate::faults::Faults::default(),
            rate_limits: crate::ratelimit::Limiter::default(),
            gate: crate::gate::Gate::default(),
            fixtures: tokio::sync::Mutex::new(()),
            cluster: opts.cluster,
        }
        .with_recovered_events()
    }

    /// Events recovered with the state were made by durable changes.
    fn with_recovered_events(self) -> Self {
        self.webhook_released.store(
            self.engine.webhook_event_mark(),
            std::sync::atomic::Ordering::Release,
        );
        self
    }

    /// Webhook events below this seq may be delivered (see `webhook_released`).
    pub fn webhook_released(&self) -> u64 {
        self.webhook_released
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Events up to `mark` are made by durable changes (`cmd` the last of
    /// them): let them go.
    fn release_events(&self, cmd: &Command<'_>, mark: u64) {
        // A resend, or a subscription enabled again, is due at once too.
        let due = matches!(
            cmd,
            Command::WebhookRetry { .. } | Command::PutWebhook { .. }
        );
        if self.release_up_to(mark) || due {
            self.webhook_wake.notify_one();
        }
    }

    /// Raises the release mark to `mark`; whether it moved (see
    /// `webhook_released`).
    fn release_up_to(&self, mark: u64) -> bool {
        self.webhook_released
            .fetch_max(mark, std::sync::atomic::Ordering::AcqRel)
            < mark
    }

    /// Events up to the engine's mark may be delivered (a state restore,
    /// or a stream message applied): wakes the dispatcher if that is new.
    fn release_all_made(&self) {
        if self.release_up_to(self.engine.webhook_event_mark()) {
            self.webhook_wake.notify_one();
        }
    }

    /// Retires the current token key for a new one (stored first, when
    /// there is a data directory; on a cluster node shared with every node
    /// first); returns the new key's id.
    pub async fn rotate_token_key(&self) -> Result<String, String> {
        let Some(cluster) = &self.cluster else {
            return self.rotate_token_key_here();
        };
        // The cluster's keys are the ones rotated: this node's may lag an
        // announcement.
        let (revision, theirs) = cluster
            .token_keys()
            .await?
            .ok_or("the cluster holds no token keys")?;
        self.install_shared_token_keys(&theirs)?;
        let records = self.tokens.rotated(self.now())?;
        let bytes = serde_json::to_vec(&records).map_err(|e| e.to_string())?;
        cluster.share_token_keys(bytes, revision).await?;
        let kid = records.last().map(|r| r.kid.clone()).unwrap_or_default();
        self.install_token_records(records)?;
        Ok(kid)
    }

    /// The cluster's token keys (`bytes`, the stored file's), stored and
    /// put in use if they differ from this node's; whether they did.
    pub fn install_shared_token_keys(&self, bytes: &[u8]) -> Result<bool, String> {
        let records: Vec<crate::tokens::TokenKeyRecord> =
            serde_json::from_slice(bytes).map_err(|e| format!("shared token keys: {e}"))?;
        if records == self.tokens.records() {
            return Ok(false);
        }
        self.install_token_records(records)?;
        Ok(true)
    }

    fn install_token_records(
        &self,
        records: Vec<crate::tokens::TokenKeyRecord>,
    ) -> Result<(), String> {
        let _one_at_a_time = self.rotation.lock();
        if let Some(dir) = &self.token_keys_dir {
            crate::storage::save_token_keys(dir, &records).map_err(|e| e.to_string())?;
        }
        self.tokens.install(records)
    }

    fn rotate_token_key_here(&self) -> Result<String, String> {
        let _one_at_a_time = self.rotation.lock();
        let records = self.tokens.rotated(self.now())?;
        if let Some(dir) = &self.token_keys_dir {
            crate::storage::save_token_keys(dir, &records).map_err(|e| e.to_string())?;
        }
        let kid = records.last().map(|r| r.kid.clone()).unwrap_or_default();
        self.tokens.install(records)?;
        Ok(kid)
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The time a client's signature is checked against: the wall clock
    /// under a test clock (clients sign with the real time: a virtual month
    /// ahead must not lock them out), else the server's clock.
    pub fn signing_now(&self) -> Millis {
        match self.virtual_clock {
            Some(_) => SystemClock.now_ms(),
            None => self.now(),
        }
    }

    pub fn is_virtual_clock(&self) -> bool {
        self.virtual_clock.is_some()
    }

    /// One pass of the periodic sweeps at `now`: expired floating seats,
    /// Yext removals due, expired reservations (each a logged command when
    /// it changed anything).
    pub async fn sweep(&self, now: Millis) -> Result<(), CommitError> {
        // In a cluster a sweep is a message every node applies: sent only
        // when something is due.
        if self.cluster.is_some() && self.engine.next_due(Millis::MIN).is_none_or(|t| t > now) {
            return Ok(());
        }
        for cmd in [
            Command::SweepLeases { now },
            Command::SweepExpired { now },
            Command::SweepPending { now },
        ] {
            self.commit(&cmd).await?;
        }
        Ok(())
    }

    /// Reports licenses whose end is near or past to the tenants that
    /// subscribed (a logged command, made only when there is something).
    pub async fn sweep_notices(&self, now: Millis) -> Result<(), CommitError> {
        if self.engine.webhooks_active() && self.engine.notices_due(now) {
            self.commit(&Command::SweepNotices { now }).await?;
        }
        Ok(())
    }

    /// Moves the test clock to `to`, stopping at every instant on the way
    /// where something expires (seats, reservations, Yext removals) to run
    /// the sweeps there, in order, as logged commands; returns the stops.
    pub async fn advance_clock(&self, to: Millis) -> Result<usize, ClockError> {
        let clock = self.virtual_clock.as_ref().ok_or(ClockError::NotVirtual)?;
        let _one_at_a_time = self.advancing.lock().await;
        let from = clock.now_ms();
        if to < from {
            return Err(ClockError::Backwards);
        }
        if let Some(store) = &self.store {
            // Where the clock goes is stored first: a crash during the move
            // restarts it at the target, never before a logged stop.
            crate::storage::save_virtual_clock(store.dir(), to)
                .map_err(|_| ClockError::Unavailable)?;
        }
        let mut stops = 0;
        let mut at = from;
        while stops < CLOCK_STOPS_MAX {
            let Some(next) = self.engine.next_due(at).filter(|t| *t <= to) else {
                break;
            };
            clock.set(next);
            self.sweep(next)
                .await
                .map_err(|_| ClockError::Unavailable)?;
            at = next;
            stops += 1;
        }
        clock.set(to);
        self.sweep(to).await.map_err(|_| ClockError::Unavailable)?;
        self.sweep_notices(to)
            .await
            .map_err(|_| ClockError::Unavailable)?;
        Ok(stops + 1)
    }

    /// Applies `cmd` and, when it changed state, returns once it is durable
    /// (see `storage::wal`). Every surface changes state through here.
    pub async fn commit(&self, cmd: &Command<'_>) -> Result<Outcome, CommitError> {
        self.commit_inner(cmd, |ledger| self.engine.apply_full(cmd, None, ledger))
            .await
    }

    /// [`App::commit`] with the apply supplied by the caller (which must
    /// apply exactly `cmd`, neither a batch nor an idempotent change, e.g.
    /// [`Engine::apply_resolved`]).
    pub async fn commit_with(
        &self,
        cmd: &Command<'_>,
        apply: impl FnOnce() -> Result<Outcome, EngineError>,
    ) -> Result<Outcome, CommitError> {
        self.commit_inner(cmd, |ledger| match ledger {
            Some(l) => self.engine.apply_leaf_with(cmd, apply, l),
            None => apply(),
        })
        .await
    }

    /// Applies `cmd` with `apply` (given where to put the change's ledger
    /// entries, when the store keeps a ledger) and, when it changed state,
    /// returns once it is durable.
    async fn commit_inner(
        &self,
        cmd: &Command<'_>,
        apply: impl FnOnce(Option<&mut Vec<LedgerEntry>>) -> Result<Outcome, EngineError>,
    ) -> Result<Outcome, CommitError> {
        if let Some(cluster) = &self.cluster {
            let r = self.commit_clustered(cluster, cmd).await.map(|(o, _)| o);
            return self.refused(cmd, r).await;
        }
        // A renewal of a seat already held is not logged and takes no lock
        // but the pool's.
        if let Some(renewed) = self.engine.try_renew(cmd) {
            return Ok(renewed);
        }
        let hooks = self.engine.webhooks_active();
        let Some(store) = &self.store else {
            let outcome = {
                let _serial = self.serial.lock();
                let mut entries = Vec::new();
                apply(hooks.then_some(&mut entries))
            };
            self.release_events(cmd, self.engine.webhook_event_mark());
            return self
                .refused(cmd, outcome.map_err(CommitError::Engine))
                .await;
        };
        // Entries are derived when the ledger keeps them, and while any
        // tenant has webhooks (events are made from them), so that every
        // path that applies a command (this one, recovery, shadow
        // snapshots) makes the same events.
        let mark = std::cell::Cell::new(0);
        let started = self.metrics.enabled.then(std::time::Instant::now);
        let c = store
            .log
            .commit_ledgered(cmd, &origin_json(self.now()), || {
                // Read under the commit lock: whether any tenant subscribes
                // is itself changed by commands in this order.
                let ledgered = store.log.is_ledgered() || self.engine.webhooks_active();
                let mut entries = Vec::new();
                let outcome = apply(ledgered.then_some(&mut entries));
                mark.set(self.engine.webhook_event_mark());
                Ok((outcome?, entries))
            });
        let c = match c {
            Ok(c) => c,
            Err(e) => return self.refused(cmd, Err(e.into())).await,
        };
        match c.lsn {
            Some(lsn) => {
                store.log.wait(lsn).await?;
                if let Some(t) = started {
                    self.metrics.commits.observe(t.elapsed().as_nanos() as u64);
                }
            }
            // A replayed idempotent change was made by a record that may
            // not be durable yet: answer only once it is.
            None if c.outcome == (Outcome::Idempotent { replayed: true }) => {
                store.log.wait(store.log.last_lsn()).await?
            }
            None => {
                // Nothing was logged: the mark may cover other changes'
                // events that are not durable yet; their commits release them.
                if matches!(
                    cmd,
                    Command::WebhookRetry { .. } | Command::PutWebhook { .. }
                ) {
                    self.webhook_wake.notify_one();
                }
                return Ok(c.outcome);
            }
        }
        self.release_events(cmd, mark.get());
        Ok(c.outcome)
    }

    /// A change through the cluster's stream: published, applied by every
    /// node in stream order, answered with what this node's engine made of
    /// it (and its reply). Renewals go through the stream too: a renewal
    /// on one node must keep another node's sweep from freeing the seat.
    async fn commit_clustered(
        &self,
        cluster: &crate::cluster::Cluster,
        cmd: &Command<'_>,
    ) -> Result<(Outcome, Option<Reply>), CommitError> {
        let applied = cluster
            .propose(cmd, &origin_json(self.now()))
            .await
            .map_err(|_| CommitError::Unavailable)?;
        let outcome = applied.result.map_err(CommitError::Engine)?;
        Ok((outcome, applied.reply))
    }

    /// After this node applied stream message `seq` (the cluster's applier):
    /// the events it made may be delivered (the stream holds it on a quorum).
    pub fn applied_from_stream(&self, _seq: u64) {
        self.release_all_made();
    }

    /// Passes a commit's result on; a floating seat refused to a tenant
    /// that subscribed to `floating.denied` is first reported (at most
    /// once a minute per pool, see `engine::webhook`).
    async fn refused(
        &self,
        cmd: &Command<'_>,
        r: Result<Outcome, CommitError>,
    ) -> Result<Outcome, CommitError> {
        // A take under an idempotency key is the same take.
        let cmd = match cmd {
            Command::Idempotent { cmd, .. } => &**cmd,
            other => other,
        };
        if let (
            Err(CommitError::Engine(EngineError::FloatingNotAvailable)),
            Command::FloatingAcquire {
                license_id,
                feature_id,
                hardware_id,
                now,
                ..
            },
        ) = (&r, cmd)
        {
            if self
                .engine
                .floating_denied_due(*license_id, *feature_id, *now)
            {
                let denied = Command::FloatingDenied {
                    license_id: *license_id,
                    feature_id: *feature_id,
                    hardware_id: hardware_id.clone(),
                    now: *now,
                };
                if let Err(e) = Box::pin(self.commit(&denied)).await {
                    tracing::warn!("floating.denied not recorded: {e:?}");
                }
            }
        }
        r
    }

    /// [`App::commit`] with the [`Reply`] of the command (the native API's
    /// answers): computed in the same order as the change itself.
    pub async fn commit_replying(
        &self,
        cmd: &Command<'_>,
    ) -> Result<(Outcome, Reply), CommitError> {
        if let Some(cluster) = &self.cluster {
            let (outcome, reply) = self.commit_clustered(cluster, cmd).await?;
            let reply = reply.unwrap_or_else(|| self.engine.reply(cmd, &outcome));
            return Ok((outcome, reply));
        }
        let mut replies = Vec::with_capacity(1);
        let outcome = self
            .commit_inner(cmd, |ledger| {
                self.engine.apply_full(cmd, Some(&mut replies), ledger)
            })
            .await?;
        // A renewal answered without the log pushed no reply.
        let reply = replies
            .pop()
            .unwrap_or_else(|| self.engine.reply(cmd, &outcome));
        Ok((outcome, reply))
    }

    /// A live tail of the ledger after `after` (a seq), and the signal that
    /// new entries may have come; None without a data directory.
    pub fn ledger_follow(
        &self,
        after: u64,
    ) -> Option<(
        crate::storage::ledger::Tail,
        tokio::sync::watch::Receiver<u64>,
    )> {
        if let Some(store) = &self.store {
            return Some((
                crate::storage::ledger::Tail::new(store.dir(), after),
                store.log.subscribe(),
            ));
        }
        let cluster = self.cluster.as_ref()?;
        Some((
            crate::storage::ledger::Tail::new(cluster.ledger_dir()?, after),
            cluster.subscribe_applied(),
        ))
    }

    /// The data directory holding the ledger: the store's, or a cluster
    /// node's (whose applier writes it); None without one.
    fn ledger_dir(&self) -> Option<std::path::PathBuf> {
        match (&self.store, &self.cluster) {
            (Some(store), _) => Some(store.dir().to_path_buf()),
            (None, Some(c)) => c.ledger_dir().map(std::path::Path::to_path_buf),
            (None, None) => None,
        }
    }

    /// Ledger entries after `after` (a seq) that `filter` accepts, at most
    /// `limit`, and the seq to go on from (see `storage::ledger::read`).
    /// None when the server keeps no data directory (and so no ledger).
    pub async fn ledger(
        &self,
        after: u64,
        limit: usize,
        filter: LedgerFilter,
    ) -> Option<std::io::Result<(Vec<serde_json::Value>, Option<u64>)>> {
        let dir = self.ledger_dir()?;
        let read = tokio::task::spawn_blocking(move || {
            crate::storage::ledger::read(&dir, after, limit, |v| filter.keep(v))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        Some(read)
    }
}

impl App {
    /// The last `n` ledger entries `filter` accepts, oldest first (see
    /// `storage::ledger::tail`); None without a data directory.
    pub async fn ledger_tail(
        &self,
        n: usize,
        filter: LedgerFilter,
    ) -> Option<std::io::Result<Vec<serde_json::Value>>> {
        let dir = self.ledger_dir()?;
        let read = tokio::task::spawn_blocking(move || {
            crate::storage::ledger::tail(&dir, n, |v| filter.keep(v))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        Some(read)
    }
}

/// What a reader of the ledger asks for; an absent field matches any
/// entry. The surfaces build it from their queries (a tenant's key always
/// names its tenant).
#[derive(Clone, Debug, Default)]
pub struct LedgerFilter {
    pub tenant_id: Option<crate::engine::model::Id>,
    pub license_id: Option<crate::engine::model::Id>,
    pub feature_id: Option<crate::engine::model::Id>,
    pub subject: Option<String>,
    pub kind: Option<String>,
    /// Entries at or after `since` and before `until`.
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

impl LedgerFilter {
    /// Whether a stored entry (`{"entry": {...}, ...}`) matches.
    pub fn keep(&self, v: &serde_json::Value) -> bool {
        let e = &v["entry"];
        let id = |field: &str, want: Option<u64>| want.is_none_or(|w| e[field].as_u64() == Some(w));
        let text = |field: &str, want: &Option<String>| {
            want.as_deref().is_none_or(|w| e[field].as_str() == Some(w))
        };
        let at = e["at"].as_i64().unwrap_or(i64::MIN);
        id("tenant_id", self.tenant_id)
            && id("license_id", self.license_id)
            && id("feature_id", self.feature_id)
            && text("subject", &self.subject)
            && text("kind", &self.kind)
            && self.since.is_none_or(|t| at >= t)
            && self.until.is_none_or(|t| at < t)
    }
}

/// The token keys given, or a fresh one (no data directory, or keys that
/// cannot be read were refused before here).
fn token_keys(
    records: Vec<crate::tokens::TokenKeyRecord>,
    now: Millis,
) -> crate::tokens::TokenKeys {
    crate::tokens::TokenKeys::new(records).unwrap_or_else(|_| {
        crate::tokens::TokenKeys::new(vec![crate::tokens::TokenKeyRecord::generate(now)])
            .expect("a generated key is valid")
    })
}
