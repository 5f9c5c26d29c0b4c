//! The `tally` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::{App, AppOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    Limits, ServeConfig, CONNECTIONS_MAX, CONNECTION_SEND_BUFFER_BYTES, KEEP_ALIVE_IDLE_MS,
    REQUEST_BODY_BYTES_MAX, REQUEST_HEAD_BYTES_MAX, REQUEST_HEAD_TIMEOUT_MS, REQUEST_TIMEOUT_MS,
    RESPONSE_WRITE_TIMEOUT_MS,
};

#[derive(Parser, Debug)]
#[command(
    name = "tally",
    version,
    about = "In-memory entitlement engine speaking vendor license APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print LicenseSpring Date and Authorization headers for a key pair (for curl).
    AuthHeaders {
        #[arg(long)]
        api_key: String,
        #[arg(long)]
        shared_key: String,
        /// Print them as curl -H arguments.
        #[arg(long)]
        curl: bool,
    },
    /// Print the headers of a signed native API request (docs/native.md), for curl.
    Sign {
        #[arg(long)]
        api_key: String,
        #[arg(long)]
        shared_key: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The path with its query, exactly as the request will send it.
        #[arg(long)]
        path: String,
        /// The body, exactly as the request will send it.
        #[arg(long, default_value = "")]
        body: String,
        /// Print them as curl -H arguments.
        #[arg(long)]
        curl: bool,
    },
    /// Print the public key that verifies LicenseSignature headers.
    PublicKey {
        #[arg(long, default_value = "./tally-data")]
        data_dir: PathBuf,
        /// base64 DER (one line) instead of PEM.
        #[arg(long)]
        base64: bool,
    },
    /// Print what a data directory holds: snapshots and log segments (with
    /// their state), and with --records the log's records as JSON lines.
    Inspect {
        #[arg(long, default_value = "./tally-data", env = "TALLY_DATA_DIR")]
        data_dir: PathBuf,
        /// Print the log records (one JSON object per line).
        #[arg(long)]
        records: bool,
        /// Print the ledger: what each change did to which counter, with its
        /// origin (one JSON object per line).
        #[arg(long, conflicts_with = "records")]
        ledger: bool,
        /// First record to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Records to print at most.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
    /// Save, restore, reset, list or delete state fixtures of a running
    /// server (through its admin API).
    State(crate::cli_state::StateArgs),
    /// List a cluster's nodes, or remove one for good (freeing its id lane).
    Cluster(crate::cli_cluster::ClusterArgs),
    /// Write a synthetic catalog for benchmarks.
    GenCatalog {
        #[arg(long, default_value_t = 1000)]
        licenses: u64,
        #[arg(long, default_value_t = 4)]
        features: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", env = "TALLY_LISTEN")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "./tally-data", env = "TALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// JSON catalog to load when the data directory holds no state yet (at
    /// first start; later starts recover the stored state and ignore it).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// When a change counts as stored: always (fdatasync before the answer,
    /// shared by concurrent requests), interval:MS (written before the
    /// answer, synced every MS), never (written, never synced by Tally).
    #[arg(long, default_value = "always", env = "TALLY_FSYNC")]
    pub fsync: crate::storage::wal::FsyncMode,
    /// Seconds between periodic snapshots (0: only at shutdown).
    #[arg(long, default_value_t = crate::storage::store::SNAPSHOT_INTERVAL_SECS_DEFAULT)]
    pub snapshot_interval: u64,
    /// Days the ledger keeps entries (whole segments; 0 keeps them until the
    /// size cap).
    #[arg(long, default_value_t = crate::storage::ledger::LEDGER_RETENTION_DAYS_DEFAULT)]
    pub ledger_retention: u64,
    /// The ledger's size cap, bytes: past it the oldest segments go.
    #[arg(long, default_value_t = crate::storage::ledger::LEDGER_BYTES_MAX_DEFAULT)]
    pub ledger_bytes_max: u64,
    /// Start even if a log record before the end is damaged, dropping it and
    /// every record after it (the default refuses to start and names the place).
    #[arg(long)]
    pub truncate_corrupt_log: bool,
    /// Do not sign LicenseSpring responses.
    #[arg(long)]
    pub no_sign: bool,
    /// Memory kept for signed feature answers (MiB), apart from the
    /// engine's: the default holds one per license of a 1M-license
    /// catalog; filled in the background after start (see docs/performance.md).
    #[arg(long, default_value_t = crate::signing::SIGNATURE_CACHE_MB_DEFAULT)]
    pub signature_cache_mb: usize,
    /// Enforce the vendors' documented rate limits with their 429 answers
    /// (LicenseSpring, Yext, Qlik; Informatica by a tenant's override; see
    /// docs/harness.md).
    #[arg(long)]
    pub emulate_rate_limits: bool,
    /// `wall`, or `virtual[=RFC3339]`: a test clock that moves only through
    /// POST /admin/v1/clock (it starts at the given instant, or where it
    /// stood when the data directory was last served, or now).
    #[arg(long, default_value = "wall")]
    pub clock: String,
    /// Fault rules to start with (`{"rules": [...]}`, as PUT
    /// /admin/v1/faults takes them; see docs/harness.md).
    #[arg(long)]
    pub faults: Option<PathBuf>,
    /// Keep the last N requests (credentials masked) for GET
    /// /admin/v1/journal (0: off, the default; at most 1,000,000).
    #[arg(long, default_value_t = 0)]
    pub journal: usize,
    /// Do not count requests and commits for GET /metrics (the gauges stay).
    #[arg(long)]
    pub no_metrics: bool,
    /// Add a `tenant` label to the request series of GET /metrics (one
    /// series per tenant and endpoint: costly with many tenants).
    #[arg(long)]
    pub metrics_per_tenant: bool,
    /// The bearer token GET /metrics wants; without one it answers only
    /// loopback clients.
    #[arg(long, env = "TALLY_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// One log line per request at `info` (target `tally::access`).
    #[arg(long)]
    pub access_log: bool,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// PEM file of certificates to trust for https:// webhook receivers,
    /// besides the built-in Mozilla roots (a private CA).
    #[arg(long)]
    pub webhook_ca: Option<PathBuf>,
    #[arg(long, default_value_t = REQUEST_BODY_BYTES_MAX)]
    pub request_body_bytes_max: usize,
    #[arg(long, default_value_t = REQUEST_HEAD_BYTES_MAX)]
    pub request_head_bytes_max: usize,
    #[arg(long, default_value_t = REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Time to receive a request's head once its first byte arrived.
    #[arg(long, default_value_t = REQUEST_HEAD_TIMEOUT_MS)]
    pub request_head_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle before it is closed.
    #[arg(long, default_value_t = KEEP_ALIVE_IDLE_MS)]
    pub keep_alive_idle_ms: u64,
    /// Time a response may stall unread by the client before the connection
    /// is closed.
    #[arg(long, default_value_t = RESPONSE_WRITE_TIMEOUT_MS)]
    pub response_write_timeout_ms: u64,
    /// Kernel send buffer of each client connection: bounds what a client
    /// that does not read can have the server produce for it.
    #[arg(long, default_value_t = CONNECTION_SEND_BUFFER_BYTES)]
    pub connection_send_buffer_bytes: u32,
    #[arg(long, default_value_t = CONNECTIONS_MAX)]
    pub connections_max: usize,
    /// Runtime worker threads, or per-core runtimes (default: one per core
    /// the process may run on).
    #[arg(long)]
    pub workers: Option<usize>,
    /// current-thread (the default): one runtime per core, each with its
    /// own SO_REUSEPORT listener; multi-thread: one work-stealing runtime
    /// (what a cluster node runs on, and its default).
    #[arg(long, value_enum)]
    pub runtime: Option<crate::server::RuntimeKind>,
    /// Run as a node of a cluster on these NATS JetStream servers
    /// (comma-separated `nats://host:port`; see docs/cluster.md).
    #[arg(long, env = "TALLY_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name, unique in the cluster (with --cluster).
    #[arg(long, env = "TALLY_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// The cluster's stream (its buckets are named after it).
    #[arg(long, default_value = "tally", requires = "cluster")]
    pub cluster_stream: String,
    /// Replicas of the stream and buckets (3: a quorum survives one loss).
    #[arg(long, default_value_t = 3, requires = "cluster")]
    pub cluster_replicas: usize,
    /// Messages of the stream kept below the newest published snapshot
    /// when it is trimmed (a node whose own snapshot is older loads the
    /// published one at its start).
    #[arg(long, default_value_t = 1_000_000, requires = "cluster")]
    pub cluster_retain: u64,
}

impl ServeArgs {
    /// The cluster options, when `--cluster` names servers.
    fn cluster_options(&self) -> Result<Option<crate::cluster::ClusterOptions>, String> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        let node_id = self
            .node_id
            .clone()
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or("--cluster needs --node-id NAME (1 to 64 of A-Z a-z 0-9 - _)")?;
        if !(1..=5).contains(&self.cluster_replicas) {
            return Err("--cluster-replicas is 1 to 5".into());
        }
        Ok(Some(crate::cluster::ClusterOptions {
            servers: self.cluster.clone(),
            node_id,
            stream: self.cluster_stream.clone(),
            replicas: self.cluster_replicas,
            retain: self.cluster_retain,
        }))
    }
}

impl ServeArgs {
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            catalog: self.catalog.clone(),
            sign_responses: !self.no_sign,
            signature_cache_bytes: self.signature_cache_mb.saturating_mul(1 << 20),
            emulate_rate_limits: self.emulate_rate_limits,
            webhook_ca: self.webhook_ca.clone(),
            metrics: !self.no_metrics,
            metrics_per_tenant: self.metrics_per_tenant,
            metrics_token: self.metrics_token.clone(),
            access_log: self.access_log,
            journal: self.journal,
            store: crate::storage::store::StoreOptions {
                fsync: self.fsync,
                snapshot_interval: Duration::from_secs(self.snapshot_interval),
                truncate_corrupt_log: self.truncate_corrupt_log,
                ledger_retention: match self.ledger_retention {
                    0 => Duration::MAX,
                    days => Duration::from_secs(days.saturating_mul(86_400)),
                },
                ledger_bytes_max: self.ledger_bytes_max,
                ..Default::default()
            },
            limits: Limits {
                request_body_bytes_max: self.request_body_bytes_max,
                request_head_bytes_max: self.request_head_bytes_max,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                request_head_timeout: Duration::from_millis(self.request_head_timeout_ms.max(1)),
                keep_alive_idle: Duration::from_millis(self.keep_alive_idle_ms.max(1)),
                response_write_timeout: Duration::from_millis(
                    self.response_write_timeout_ms.max(1),
                ),
                connection_send_buffer_bytes: self.connection_send_buffer_bytes.max(4096),
                connections_max: self.connections_max.max(1),
            },
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(*args),
        Cmd::State(args) => crate::cli_state::run(args),
        Cmd::Cluster(args) => crate::cli_cluster::admin(&args),
        Cmd::AuthHeaders {
            api_key,
            shared_key,
            curl,
        } => {
            let (date, auth) = crate::api::licensespring::client_headers(
                &api_key,
                &shared_key,
                SystemClock.now_ms(),
            );
            if curl {
                println!("-H 'Date: {date}' -H 'Authorization: {auth}'");
            } else {
                println!("Date: {date}\nAuthorization: {auth}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Sign {
            api_key,
            shared_key,
            method,
            path,
            body,
            curl,
        } => {
            print_signed_headers(&api_key, &shared_key, &method, &path, &body, curl);
            ExitCode::SUCCESS
        }
        Cmd::PublicKey { data_dir, base64 } => {
            match crate::storage::load_or_create_signing_key(&data_dir) {
                Ok((key, _)) => {
                    let signer = crate::signing::Signer::new(key, 0);
                    if base64 {
                        println!("{}", signer.public_key_base64());
                    } else {
                        print!("{}", signer.public_key_pem());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Inspect {
            data_dir,
            records,
            ledger,
            from,
            limit,
        } => {
            let mut out = std::io::stdout().lock();
            let r = if records {
                crate::storage::inspect::records(&data_dir, from, limit, &mut out)
            } else if ledger {
                crate::storage::inspect::ledger(&data_dir, &mut out)
            } else {
                crate::storage::inspect::summary(&data_dir, &mut out)
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::GenCatalog {
            licenses,
            features,
            out,
        } => {
            let run = || -> std::io::Result<()> {
                let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
                crate::catalog::generate(&mut w, licenses, features)?;
                std::io::Write::flush(&mut w)
            };
            match run() {
                Ok(()) => {
                    eprintln!(
                        "wrote {} licenses with {features} features each to {}",
                        licenses,
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

pub(crate) fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("tally: {e}");
    ExitCode::FAILURE
}

/// Fault rules: the catalog's (at every start that names it), replaced by
/// --faults when both are given.
pub(crate) fn start_faults(
    app: &App,
    cfg: &ServeConfig,
    args: &ServeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    if let (Some(catalog), None) = (&cfg.catalog, &args.faults) {
        if let Some(rules) = crate::catalog::fault_rules(catalog)? {
            app.faults
                .set(rules, app.now())
                .map_err(|e| format!("{}: faults.{e}", catalog.display()))?;
        }
    }
    if let Some(path) = &args.faults {
        load_faults(app, path)?;
    }
    Ok(())
}

/// Sets the fault rules of `path` (`{"rules": [...]}`).
fn load_faults(app: &App, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        rules: Vec<crate::faults::Rule>,
    }
    let text = std::fs::read(path).map_err(|e| format!("--faults {}: {e}", path.display()))?;
    let f: File =
        serde_json::from_slice(&text).map_err(|e| format!("--faults {}: {e}", path.display()))?;
    app.faults
        .set(f.rules, app.now())
        .map_err(|e| format!("--faults {}: {e}", path.display()))?;
    Ok(())
}

/// The test clock `--clock` asks for (None: the wall clock).
fn virtual_clock(
    arg: &str,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<crate::clock::ManualClock>>, Box<dyn std::error::Error>> {
    let start = match arg.split_once('=') {
        None if arg == "wall" => return Ok(None),
        None if arg == "virtual" => None,
        Some(("virtual", t)) => Some(
            crate::engine::time::parse_instant(t)
                .ok_or_else(|| format!("--clock virtual={t}: not an RFC 3339 instant"))?,
        ),
        _ => return Err(format!("--clock {arg}: wall, virtual or virtual=<RFC 3339>").into()),
    };
    // Never backwards: where it stood last, if later than asked.
    let stood = crate::storage::load_virtual_clock(data_dir);
    let now = match (start, stood) {
        (Some(s), Some(t)) => s.max(t),
        (Some(s), None) => s,
        (None, Some(t)) => t,
        (None, None) => SystemClock.now_ms(),
    };
    Ok(Some(Arc::new(crate::clock::ManualClock::new(now))))
}

/// `app` with the tenants' rate-limit overrides the data directory kept.
fn with_stored_overrides(
    app: App,
    dir: &std::path::Path,
) -> Result<App, Box<dyn std::error::Error>> {
    app.rate_limits
        .restore_overrides(crate::storage::load_rate_limits(dir)?);
    Ok(app)
}

/// The App of `tally serve`: on the wall clock, or on `test_clock`.
pub fn build_app(
    cfg: &ServeConfig,
    test_clock: Option<Arc<crate::clock::ManualClock>>,
) -> Result<App, Box<dyn std::error::Error>> {
    let mut opts = app_options(cfg, test_clock)?;
    let clock = opts.clock.clone();
    // Recover the stored state before anything else touches the engine.
    let engine = crate::engine::Engine::new();
    let (store, opened) =
        crate::storage::store::Store::open(&cfg.data_dir, &cfg.store, &engine, clock.now_ms())?;
    log_recovery(cfg, &opened);
    if opened.rebuilt.replayed >= crate::storage::store::STARTUP_SNAPSHOT_RECORDS_MIN {
        // A server restarted often, before its periodic snapshots, would
        // otherwise replay an ever longer log at every start.
        let info = store.snapshot_quiescent(&engine, clock.now_ms())?;
        tracing::info!(
            "snapshot after recovery at record {}: {} bytes",
            info.lsn,
            info.bytes
        );
    }
    let store = Arc::new(store);
    first_fill(cfg, &engine, &store, opened.fresh, clock.now_ms())?;
    store.start_snapshots(cfg.store.snapshot_interval, clock);
    opts.engine = Some(engine);
    opts.store = Some(store);
    with_stored_overrides(App::new(opts), &cfg.data_dir)
}

fn log_recovery(cfg: &ServeConfig, opened: &crate::storage::store::Opened) {
    let r = &opened.rebuilt;
    if opened.fresh {
        tracing::info!(
            "data directory {} holds no state yet",
            cfg.data_dir.display()
        );
    } else {
        tracing::info!(
            "recovered in {:?}: snapshot at record {} ({} licenses) loaded in {:?}, {} log records replayed in {:?}, last record {}",
            opened.elapsed,
            r.snapshot.as_ref().map_or(0, |s| s.lsn),
            r.snapshot.as_ref().map_or(0, |s| s.licenses),
            r.snapshot_time,
            r.replayed,
            r.replay_time,
            r.last_lsn
        );
    }
}

/// What every node's App is built from, storage aside: the data
/// directory's keys and admin token, the clock, limits and flags.
pub fn app_options(
    cfg: &ServeConfig,
    test_clock: Option<Arc<crate::clock::ManualClock>>,
) -> Result<AppOptions, Box<dyn std::error::Error>> {
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(c) => c.clone(),
        None => Arc::new(SystemClock),
    };
    crate::storage::ensure_dir(&cfg.data_dir)?;
    let (key, created) = crate::storage::load_or_create_signing_key(&cfg.data_dir)?;
    if created {
        tracing::info!(
            "created response-signing key in {}",
            cfg.data_dir
                .join(crate::storage::SIGNING_KEY_FILE)
                .display()
        );
    }
    let env_token = std::env::var("TALLY_ADMIN_TOKEN").ok();
    let (token, generated) = crate::storage::load_or_create_admin_token(&cfg.data_dir, env_token)?;
    if generated {
        // Printed once, at first start; it is kept in the data directory.
        println!(
            "admin token (stored in {}): {token}",
            cfg.data_dir
                .join(crate::storage::ADMIN_TOKEN_FILE)
                .display()
        );
    }
    let mut opts = AppOptions::new(token, key);
    opts.clock = clock.clone();
    opts.virtual_clock = test_clock;
    opts.limits = cfg.limits.clone();
    opts.sign_responses = cfg.sign_responses;
    opts.signature_cache_bytes = cfg.signature_cache_bytes;
    opts.emulate_rate_limits = cfg.emulate_rate_limits;
    // A CA file that cannot be read stops the start, not the first delivery.
    crate::webhooks::Transport::new(cfg.webhook_ca.as_deref())?;
    opts.webhook_ca = cfg.webhook_ca.clone();
    opts.metrics = cfg.metrics;
    opts.metrics_per_tenant = cfg.metrics_per_tenant;
    opts.metrics_token = cfg.metrics_token.clone();
    opts.access_log = cfg.access_log;
    opts.journal = cfg.journal;
    let (token_keys, created) =
        crate::storage::load_or_create_token_keys(&cfg.data_dir, clock.now_ms())?;
    if created {
        tracing::info!(
            "created the offline token signing key in {}",
            cfg.data_dir.join(crate::storage::TOKEN_KEYS_FILE).display()
        );
    }
    opts.token_keys = token_keys;
    opts.data_dir = Some(cfg.data_dir.clone());
    Ok(opts)
}

/// At a data directory's first start: the catalog (if any) loaded and
/// snapshotted, and the `initial` state fixture (what a reset goes back to).
fn first_fill(
    cfg: &ServeConfig,
    engine: &crate::engine::Engine,
    store: &crate::storage::store::Store,
    fresh: bool,
    now: crate::engine::time::Millis,
) -> Result<(), Box<dyn std::error::Error>> {
    match (&cfg.catalog, fresh) {
        (Some(path), true) => {
            let started = std::time::Instant::now();
            let loaded = crate::catalog::load_file(engine, path, now)?;
            tracing::info!(
                "loaded catalog {} in {:?}: {loaded:?}",
                path.display(),
                started.elapsed()
            );
        }
        (Some(path), false) => tracing::info!(
            "catalog {} not loaded: the data directory holds state",
            path.display()
        ),
        (None, _) => {}
    }
    if fresh {
        // What `POST /admin/v1/state/reset` goes back to: the state right
        // after the catalog loaded (or none), before any request. Written
        // before the catalog's snapshot: a crash between the two leaves a
        // directory that is still fresh, and the next start does both again.
        crate::storage::fixtures::save_initial(&cfg.data_dir, engine, store.log.last_lsn(), now)?;
        if cfg.catalog.is_some() {
            // The catalog is not logged record by record: the first snapshot holds it.
            let info = store.snapshot_quiescent(engine, now)?;
            tracing::info!("snapshot of the catalog: {} bytes", info.bytes);
        }
    }
    Ok(())
}

/// After the server stopped: the log closed and a final snapshot written.
fn stop_store(app: &App) {
    let Some(store) = &app.store else { return };
    match store.shutdown(&app.engine, app.now()) {
        Ok(Some(info)) => tracing::info!(
            "final snapshot at record {}: {} licenses, {} bytes",
            info.lsn,
            info.licenses,
            info.bytes
        ),
        Ok(None) => tracing::info!("state unchanged since the last snapshot"),
        Err(e) => tracing::error!("shutdown: {e}; the log still holds every acknowledged change"),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let cfg = args.config();
    match args.cluster_options() {
        Ok(Some(cluster)) => return crate::cli_cluster::serve(&args, cfg, cluster),
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    let test_clock = match virtual_clock(&args.clock, &cfg.data_dir) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let app = match build_app(&cfg, test_clock) {
        Ok(a) => Arc::new(a),
        Err(e) => return fail(e),
    };
    if let Err(e) = start_faults(&app, &cfg, &args) {
        return fail(e);
    }
    if args
        .runtime
        .unwrap_or(crate::server::RuntimeKind::CurrentThread)
        == crate::server::RuntimeKind::CurrentThread
    {
        let threads = crate::server::per_core_threads(args.workers);
        let result =
            crate::server::run_per_core(cfg.listen, threads, app.clone(), shutdown_signal(), |a| {
                tracing::info!("listening on http://{a} ({threads} current-thread runtimes)")
            });
        stop_store(&app);
        return match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("serve {}: {e}", cfg.listen)),
        };
    }
    let rt = match crate::server::runtime(args.workers, crate::server::idle_hook(&app)) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async move {
        let (listener, addr) = match bind(&cfg) {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        tracing::info!("listening on http://{addr}");
        let result = crate::server::run(listener, app.clone(), shutdown_signal()).await;
        let stopping = app.clone();
        let _ = tokio::task::spawn_blocking(move || stop_store(&stopping)).await;
        match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    })
}

/// The listener of `cfg.listen` and the address it got.
pub(crate) fn bind(cfg: &ServeConfig) -> Result<(tokio::net::TcpListener, String), String> {
    let send_buffer = Some(cfg.limits.connection_send_buffer_bytes);
    let listener = crate::server::listener(cfg.listen, false, send_buffer)
        .map_err(|e| format!("bind {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok((listener, addr))
}

/// Completes on SIGINT or SIGTERM.
#[doc(hidden)]
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

/// `tally sign`: the headers of a signed native API request made now.
fn print_signed_headers(
    api_key: &str,
    shared_key: &str,
    method: &str,
    path: &str,
    body: &str,
    curl: bool,
) {
    let ts = (SystemClock.now_ms() / 1000).to_string();
    let nonce = crate::util::random_token(24);
    let method = method.to_ascii_uppercase();
    let sig =
        crate::api::native::signature(shared_key, &method, path, &ts, &nonce, body.as_bytes());
    let headers = [
        ("X-Tally-Key", api_key),
        ("X-Tally-Timestamp", ts.as_str()),
        ("X-Tally-Nonce", nonce.as_str()),
        ("X-Tally-Signature", sig.as_str()),
    ];
    for (name, value) in headers {
        if curl {
            print!("-H '{name}: {value}' ");
        } else {
            println!("{name}: {value}");
        }
    }
    if curl {
        println!();
    }
}
