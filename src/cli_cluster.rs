//! `tally serve --cluster URLS --node-id NAME`: one node of a cluster (see
//! [`crate::cluster`]). The node connects, takes its id lane, bootstraps
//! its state (its local snapshot, the cluster's published one, or the
//! catalog once for the whole cluster), applies the stream until it has
//! caught up, then serves; at a graceful stop it writes a local snapshot
//! and publishes it for nodes that bootstrap later.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::cli::{fail, ServeArgs};
use crate::cluster::{Cluster, ClusterOptions, CLUSTER_NODES_MAX};
use crate::config::ServeConfig;

/// How long a starting node may take to apply the stream before it serves.
pub const CATCH_UP_WAIT_MS: u64 = 120_000;

/// `tally cluster nodes|remove-node`: a cluster's membership, through its
/// NATS servers (no node needs to run).
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
    /// NATS server URLs (comma-separated).
    #[arg(long, global = true, env = "TALLY_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// The cluster's stream.
    #[arg(long, global = true, default_value = "tally")]
    pub cluster_stream: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterAction {
    /// Every node: its id lane, last reported applied sequence, and how
    /// long ago it reported.
    Nodes,
    /// Forget a node that is gone for good: its id lane becomes free for a
    /// new node. Refused while the node still reports itself.
    RemoveNode {
        name: String,
        /// Seconds the node must have been silent (it reports every 3 s).
        #[arg(long, default_value_t = 30)]
        unseen_for: u64,
    },
}

pub fn admin(args: &ClusterArgs) -> ExitCode {
    if args.cluster.is_empty() {
        return fail("tally cluster needs --cluster URLS (or TALLY_CLUSTER)");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let members =
            match crate::cluster::Members::connect(&args.cluster, &args.cluster_stream).await {
                Ok(m) => m,
                Err(e) => return fail(e),
            };
        match &args.action {
            ClusterAction::Nodes => match members.list().await {
                Ok(nodes) => {
                    for n in nodes {
                        let seen = n.seen_ms_ago.map_or("never".to_string(), |ms| {
                            format!("{:.1} s ago", ms as f64 / 1000.0)
                        });
                        println!(
                            "{}\tlane {}\tapplied {}\tseen {seen}",
                            n.node_id,
                            n.lane,
                            n.applied_seq.map_or("-".to_string(), |s| s.to_string())
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            ClusterAction::RemoveNode { name, unseen_for } => {
                match members.remove(name, Duration::from_secs(*unseen_for)).await {
                    Ok(lane) => {
                        println!("removed {name}; lane {lane} is free");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

pub fn serve(args: &ServeArgs, cfg: ServeConfig, opts: ClusterOptions) -> ExitCode {
    if args.clock != "wall" {
        return fail(
            "the test clock (--clock virtual) is per node: a cluster runs on the wall clock",
        );
    }
    if args.runtime == Some(crate::server::RuntimeKind::CurrentThread) {
        return fail("a cluster node runs on the multi-thread runtime");
    }
    let rt = match crate::server::runtime(args.workers, None) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async move {
        let (app, cluster) = match start(args, &cfg, &opts).await {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        let lease = tokio::spawn(cluster.clone().run_lease());
        let keys = tokio::spawn(follow_token_keys(app.clone(), cluster.clone()));
        let (applier, applier_abort, stopped_rx) = match spawn_applier(&app, &cluster, &cfg) {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        match cluster.stream_last_seq().await {
            Ok(last)
                if !cluster
                    .wait_applied(last, Duration::from_millis(CATCH_UP_WAIT_MS))
                    .await =>
            {
                tracing::warn!(
                    "serving before catching up: applied {}, stream at {last}",
                    cluster.applied()
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("stream not read before serving: {e}"),
        }
        let (listener, addr) = match crate::cli::bind(&cfg) {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        tracing::info!(
            "listening on http://{addr} (cluster node {}, lane {}, applied {})",
            cluster.node_id,
            cluster.lane,
            cluster.applied()
        );
        let stopped = std::sync::Arc::new(parking_lot::Mutex::new(None::<String>));
        let shutdown = {
            let stopped = stopped.clone();
            async move {
                tokio::select! {
                    () = crate::cli::shutdown_signal() => {}
                    Ok(why) = stopped_rx => *stopped.lock() = Some(why),
                }
            }
        };
        let result = crate::server::run(listener, app.clone(), shutdown).await;
        lease.abort();
        keys.abort();
        applier_abort.abort();
        let _ = applier.await;
        // Nothing changes the engine now: it holds exactly the applied prefix.
        let seq = cluster.applied();
        if let Err(e) = crate::cluster::ledger::sync_newest(&cfg.data_dir) {
            tracing::error!("ledger not synced at the stop: {e}");
        }
        if let Err(e) = crate::cluster::bootstrap::publish_snapshot(
            &cluster,
            &app.engine,
            &cfg.data_dir,
            seq,
            app.now(),
        )
        .await
        {
            tracing::error!("final snapshot at stream sequence {seq}: {e}");
        }
        if let Some(why) = stopped.lock().take() {
            return fail(why);
        }
        match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    })
}

/// The applier's task (its ledger opened), the handle that stops the
/// applier itself, and the reason it stopped on its own (it returns only
/// when this node cannot go on: the node then stops with an error as it
/// would on a signal).
#[allow(clippy::type_complexity, reason = "three handles, named at the call")]
fn spawn_applier(
    app: &Arc<App>,
    cluster: &Arc<Cluster>,
    cfg: &ServeConfig,
) -> Result<
    (
        tokio::task::JoinHandle<()>,
        tokio::task::AbortHandle,
        tokio::sync::oneshot::Receiver<String>,
    ),
    String,
> {
    let ledger = crate::cluster::ledger::NodeLedger::open(
        &cfg.data_dir,
        cluster.applied(),
        cfg.store.ledger_retention,
        cfg.store.ledger_bytes_max,
    )
    .map_err(|e| format!("ledger in {}: {e}", cfg.data_dir.display()))?;
    cluster.set_ledger_dir(ledger.dir().to_path_buf());
    let snapshots = crate::cluster::apply::Snapshots {
        dir: cfg.data_dir.clone(),
        interval: cfg.store.snapshot_interval,
        clock: app.clock(),
        ledger: Some(ledger),
    };
    let (app, cluster) = (app.clone(), cluster.clone());
    let applier = tokio::spawn(async move {
        let after = |seq| app.applied_from_stream(seq);
        crate::cluster::apply::run(cluster, &app.engine, after, snapshots).await
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<String>();
    let abort = applier.abort_handle();
    let watcher = tokio::spawn(async move {
        if let Ok(why) = applier.await {
            tracing::error!("{why}");
            let _ = stopped_tx.send(why);
        }
    });
    Ok((watcher, abort, stopped_rx))
}

/// Installs the cluster's offline token keys whenever another node
/// rotated them: at once on its announcement, and every few seconds in
/// case one was missed.
async fn follow_token_keys(app: Arc<App>, cluster: Arc<Cluster>) {
    use futures_util::StreamExt;
    let mut announcements = cluster.secret_announcements().await.ok();
    let every = Duration::from_millis(crate::cluster::LEASE_RENEW_MS);
    loop {
        let ended = match announcements.as_mut() {
            Some(sub) => matches!(tokio::time::timeout(every, sub.next()).await, Ok(None)),
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        if ended {
            // The subscription closed: look every few seconds from now on.
            announcements = None;
        }
        match cluster.token_keys().await {
            Ok(Some((_, bytes))) => match app.install_shared_token_keys(&bytes) {
                Ok(true) => tracing::info!("took the cluster's rotated offline token keys"),
                Ok(false) => {}
                Err(e) => tracing::warn!("the cluster's token keys: {e}"),
            },
            Ok(None) => {}
            Err(e) => tracing::debug!("token keys not read: {e}"),
        }
    }
}

/// Connects and builds the node's App (its engine bootstrapped).
async fn start(
    args: &ServeArgs,
    cfg: &ServeConfig,
    opts: &ClusterOptions,
) -> Result<(Arc<App>, Arc<Cluster>), Box<dyn std::error::Error>> {
    let cluster = Arc::new(Cluster::connect(opts).await?);
    // The keys and the admin token are the cluster's: made by its first
    // node, taken by the others (see bootstrap::share_secrets).
    crate::storage::ensure_dir(&cfg.data_dir)?;
    crate::cluster::bootstrap::share_secrets(&cluster, &cfg.data_dir, || {
        crate::cli::app_options(cfg, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    let mut app_opts = crate::cli::app_options(cfg, None)?;
    let engine = crate::engine::Engine::new();
    engine.set_id_lane(cluster.lane, CLUSTER_NODES_MAX);
    let now = app_opts.clock.now_ms();
    let applied = crate::cluster::bootstrap::bootstrap(
        &cluster,
        &engine,
        &cfg.data_dir,
        cfg.catalog.as_deref(),
        now,
    )
    .await?;
    // No lease extension here (a single node's recovery extends leases
    // because renewals are not logged there; a cluster logs them, and an
    // extension by one node alone would make its state differ).
    cluster.set_applied(applied);
    app_opts.engine = Some(engine);
    app_opts.cluster = Some(cluster.clone());
    let app = Arc::new(App::new(app_opts));
    crate::cli::start_faults(&app, cfg, args)?;
    Ok((app, cluster))
}
