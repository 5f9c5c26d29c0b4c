//! The cluster: several Tally nodes on one NATS JetStream stream.
//!
//! JetStream is the replicated log (Raft, R3 by default); Tally builds no
//! consensus of its own. Every change is a [`Command`]: the node that
//! receives it publishes it to the stream ([`Cluster::propose`]), every
//! node's applier applies every message in stream order to its own engine
//! ([`apply`]), and the proposer answers with the outcome its own engine
//! computed when it applied that message, which every node computes the
//! same (the engine is deterministic and reads no clock: `now` travels in
//! the command). Reads are served from the local engine; `X-Tally-Seq` /
//! `X-Tally-Min-Seq` give read-your-writes across nodes.
//!
//! - [`mod@self`]: options, connecting, the stream and buckets, proposals;
//! - [`apply`]: the applier (an ordered consumer from the node's applied
//!   sequence);
//! - [`bootstrap`]: a node's first state (the newest snapshot in the
//!   object store, or the catalog, loaded once for the whole cluster);
//! - [`ledger`]: the node's ledger store, written by the applier.

pub mod apply;
pub mod bootstrap;
pub mod ledger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::engine::native::Reply;
use crate::engine::{Command, EngineError, Outcome};

/// Nodes a cluster may have at most (the id lanes, see `Engine::next_id`).
pub const CLUSTER_NODES_MAX: u64 = 64;
/// How long a proposal may wait for its acknowledgement and application.
pub const PROPOSE_TIMEOUT_MS: u64 = 10_000;
/// How long a request's `X-Tally-Min-Seq` may wait for this node to apply it.
pub const MIN_SEQ_WAIT_MS: u64 = 5_000;
/// Proposals of this node waiting for their application, at most.
pub const PROPOSALS_WAITING_MAX: usize = 65_536;
/// JetStream's window for de-duplicating a publish retried with its id.
pub const DUPLICATE_WINDOW_SECS: u64 = 120;
/// Largest command published, bytes (the NATS server's default max payload).
pub const COMMAND_BYTES_MAX: usize = 1024 * 1024;

/// `tally serve --cluster ...`.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// NATS server URLs (`nats://host:port`).
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// The stream's name; the buckets are named after it.
    pub stream: String,
    /// The stream's (and buckets') replicas.
    pub replicas: usize,
    /// Messages kept below the newest published snapshot when the stream
    /// is trimmed (`--cluster-retain`): a node whose own snapshot is older
    /// than what is kept loads the published one instead.
    pub retain: u64,
}

/// Why a change could not go through the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterError {
    /// No quorum acknowledged the publish in time (or the command is too
    /// large to publish): the change may or may not be made.
    Unavailable,
    /// Too many proposals of this node wait already.
    Busy,
}

/// What a proposal became once this node applied it.
#[derive(Debug)]
pub struct Applied {
    pub seq: u64,
    pub result: Result<Outcome, EngineError>,
    /// The command's reply (the native API's answers), computed in order.
    pub reply: Option<Reply>,
}

/// The stream's message headers.
pub(crate) const HEADER_NODE: &str = "Tally-Node";
pub(crate) const HEADER_BOOT: &str = "Tally-Boot";
pub(crate) const HEADER_PROPOSAL: &str = "Tally-Proposal";
pub(crate) const HEADER_ORIGIN: &str = "Tally-Origin";

pub struct Cluster {
    pub node_id: String,
    /// This node's id lane (`Engine::set_id_lane`).
    pub lane: u64,
    /// Random per process: proposal ids (and so message ids) never repeat
    /// across restarts.
    boot: String,
    js: jetstream::Context,
    /// The connection (the applier's consumer delivers to an inbox of it).
    client: async_nats::Client,
    pub stream: String,
    subject: String,
    /// proposal -> its waiter (the applier answers it). One mutex: an
    /// insert per proposal and a remove per application of one.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Applied>>>,
    next_proposal: AtomicU64,
    /// The last stream sequence this node applied.
    applied: watch::Sender<u64>,
    /// Whether the last publish reached a quorum (for the cluster status).
    reachable: AtomicBool,
    /// The object store of bootstrap snapshots.
    pub(crate) snapshots: jetstream::object_store::ObjectStore,
    /// The nodes bucket: id lanes (`lane.<n>`, `node.<id>`) and the
    /// `bootstrap` key of the node that loaded the catalog.
    pub(crate) nodes: jetstream::kv::Store,
    /// Requests for the state's digest, answered by the applier between
    /// two messages (so at exactly one stream sequence).
    digests: tokio::sync::mpsc::Sender<DigestReply>,
    digest_requests: Mutex<Option<DigestRequests>>,
    /// The leases bucket (entries expire after [`LEASE_TTL_SECS`]): one
    /// node at a time delivers webhooks.
    leases: jetstream::kv::Store,
    /// When this node last renewed the delivery lease (None: not held).
    lease_renewed: Mutex<Option<std::time::Instant>>,
    /// `ClusterOptions::retain`.
    retain: u64,
    /// The data directory whose ledger the applier writes (set once, at
    /// the node's start).
    ledger_dir: std::sync::OnceLock<std::path::PathBuf>,
}

/// The stream as JetStream's leader for it reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamState {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The NATS server leading the stream's replicas, and each replica.
    pub leader: Option<String>,
    pub replicas: Vec<serde_json::Value>,
}

/// A node as it last reported itself (key `seen.<node>` in the nodes
/// bucket, written every [`LEASE_RENEW_MS`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub node_id: String,
    pub applied_seq: u64,
    /// Wall-clock milliseconds of the report.
    pub at_ms: i64,
}

/// Where the applier answers a digest request: (sequence, digest).
pub(crate) type DigestReply = oneshot::Sender<(u64, String)>;
/// The applier's end of the digest requests.
pub(crate) type DigestRequests = tokio::sync::mpsc::Receiver<DigestReply>;

/// How long the webhook-delivery lease lives without a renewal, seconds.
pub const LEASE_TTL_SECS: u64 = 10;
/// How often its holder renews it (and others try to take it), ms.
pub const LEASE_RENEW_MS: u64 = 3_000;
/// The lease's key in the leases bucket.
const DELIVERY_LEASE: &str = "webhook-delivery";
/// The offline token keys' key in the nodes bucket (see
/// `bootstrap::SHARED_SECRETS`).
pub(crate) const SECRET_TOKEN_KEYS: &str = "secret.token-keys";

/// Digest requests waiting for the applier, at most.
pub const DIGEST_REQUESTS_MAX: usize = 16;
/// How long a digest request waits for the applier.
pub const DIGEST_WAIT_MS: u64 = 30_000;

impl Cluster {
    /// Connects, creates the stream and buckets if they do not exist, and
    /// takes this node's id lane.
    pub async fn connect(opts: &ClusterOptions) -> Result<Cluster, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .name(format!("tally-{}", opts.node_id))
            .connect(opts.servers.clone())
            .await
            .map_err(|e| format!("cannot connect to NATS {:?}: {e}", opts.servers))?;
        let js = jetstream::new(client.clone());
        let (digests, digest_requests) = tokio::sync::mpsc::channel(DIGEST_REQUESTS_MAX);
        let subject = format!("{}.cmd", opts.stream);
        ensure_stream(&js, opts, &subject).await?;
        let nodes_name = format!("{}-nodes", opts.stream);
        let nodes = retrying(|| bucket(&js, &nodes_name, opts.replicas, None)).await?;
        let lease_ttl = Some(Duration::from_secs(LEASE_TTL_SECS));
        let leases_name = format!("{}-leases", opts.stream);
        let leases = retrying(|| bucket(&js, &leases_name, opts.replicas, lease_ttl)).await?;
        let lane = retrying(|| take_lane(&nodes, &opts.node_id)).await?;
        let snapshots = retrying(|| async {
            js.create_object_store(jetstream::object_store::Config {
                bucket: format!("{}-snapshots", opts.stream),
                num_replicas: opts.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("object store: {e}"))
        })
        .await?;
        Ok(Cluster {
            node_id: opts.node_id.clone(),
            lane,
            boot: crate::util::random_token(12),
            js,
            client,
            stream: opts.stream.clone(),
            subject,
            waiting: Mutex::new(HashMap::new()),
            next_proposal: AtomicU64::new(1),
            applied: watch::Sender::new(0),
            reachable: AtomicBool::new(true),
            snapshots,
            nodes,
            digests,
            digest_requests: Mutex::new(Some(digest_requests)),
            leases,
            lease_renewed: Mutex::new(None),
            retain: opts.retain,
            ledger_dir: std::sync::OnceLock::new(),
        })
    }

    /// Where this node's ledger is (once its applier writes it).
    pub fn ledger_dir(&self) -> Option<&std::path::Path> {
        self.ledger_dir.get().map(std::path::PathBuf::as_path)
    }

    pub(crate) fn set_ledger_dir(&self, dir: std::path::PathBuf) {
        let _ = self.ledger_dir.set(dir);
    }

    /// Changes as this node applies them: the sequence, each time it moves.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The last stream sequence this node applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The state's digest and the stream sequence it is at (computed by
    /// the applier between two messages); None if the applier does not
    /// answer in time.
    pub async fn digest(&self) -> Option<(u64, String)> {
        let (tx, rx) = oneshot::channel();
        self.digests.try_send(tx).ok()?;
        tokio::time::timeout(Duration::from_millis(DIGEST_WAIT_MS), rx)
            .await
            .ok()?
            .ok()
    }

    /// The applier's end of the digest requests (taken once).
    pub(crate) fn take_digest_requests(&self) -> Option<DigestRequests> {
        self.digest_requests.lock().take()
    }

    /// Whether this node delivers webhooks now: it holds the delivery lease
    /// and renewed it recently enough that no other node can have taken it.
    pub fn delivers(&self) -> bool {
        let margin = Duration::from_secs(LEASE_TTL_SECS) - Duration::from_millis(LEASE_RENEW_MS);
        self.lease_renewed
            .lock()
            .is_some_and(|at| at.elapsed() < margin)
    }

    /// Holds the webhook-delivery lease for as long as this node can (one
    /// node at a time delivers; another takes over once the lease expired,
    /// [`LEASE_TTL_SECS`] after its holder stopped renewing it), and
    /// reports this node to its peers at the same pace.
    pub async fn run_lease(self: std::sync::Arc<Self>) {
        let mut revision: Option<u64> = None;
        loop {
            let me = Bytes::from(self.node_id.clone());
            let r = match revision {
                Some(rev) => self
                    .leases
                    .update(DELIVERY_LEASE, me, rev)
                    .await
                    .map_err(|e| e.to_string()),
                None => self
                    .leases
                    .create(DELIVERY_LEASE, me)
                    .await
                    .map_err(|e| e.to_string()),
            };
            match r {
                Ok(rev) => {
                    if revision.is_none() {
                        tracing::info!("this node delivers webhooks (it holds the lease)");
                    }
                    revision = Some(rev);
                    *self.lease_renewed.lock() = Some(std::time::Instant::now());
                }
                Err(e) => {
                    if revision.take().is_some() {
                        tracing::warn!("webhook-delivery lease lost: {e}");
                        *self.lease_renewed.lock() = None;
                    }
                }
            }
            if let Err(e) = self.report_seen().await {
                tracing::debug!("node report not written: {e}");
            }
            tokio::time::sleep(Duration::from_millis(LEASE_RENEW_MS)).await;
        }
    }

    /// Whether this node's last publish reached a quorum.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Waits (at most `wait`) until this node applied `seq`; false if it did not.
    pub async fn wait_applied(&self, seq: u64, wait: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The stream's last sequence (what a node that applied it all has).
    pub async fn stream_last_seq(&self) -> Result<u64, String> {
        Ok(self.stream_state().await?.last_seq)
    }

    /// The stream's first and last sequences and its replicas.
    pub async fn stream_state(&self) -> Result<StreamState, String> {
        let mut s = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = s.info().await.map_err(|e| e.to_string())?;
        let cluster = info.cluster.clone();
        let replicas = cluster
            .as_ref()
            .map(|c| {
                c.replicas
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "current": p.current,
                            "active_ms": p.active.as_millis() as u64,
                            "offline": p.offline,
                            "lag": p.lag,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(StreamState {
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            leader: cluster.and_then(|c| c.leader),
            replicas,
        })
    }

    /// Removes the messages a node no longer needs: those more than
    /// `retain` below `published` (the newest published snapshot's
    /// sequence; a bootstrap needs only what follows it).
    pub(crate) async fn trim(&self, published: u64) -> Result<(), String> {
        let keep_from = (published + 1).saturating_sub(self.retain);
        if keep_from <= 1 {
            return Ok(());
        }
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let purged = stream
            .purge()
            .sequence(keep_from)
            .await
            .map_err(|e| format!("trimming the stream below {keep_from}: {e}"))?;
        if purged.purged > 0 {
            tracing::info!(
                "trimmed the stream: {} messages below {keep_from}",
                purged.purged
            );
        }
        Ok(())
    }

    /// Reports this node (its applied sequence) in the nodes bucket.
    async fn report_seen(&self) -> Result<(), String> {
        let seen = Seen {
            node_id: self.node_id.clone(),
            applied_seq: self.applied(),
            at_ms: wall_ms(),
        };
        let bytes = serde_json::to_vec(&seen).map_err(|e| e.to_string())?;
        self.nodes
            .put(format!("seen.{}", self.node_id), Bytes::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The cluster's offline token keys (the file's bytes) and their
    /// revision in the nodes bucket.
    pub async fn token_keys(&self) -> Result<Option<(u64, Bytes)>, String> {
        let entry = self
            .nodes
            .entry(SECRET_TOKEN_KEYS)
            .await
            .map_err(|e| e.to_string())?;
        Ok(entry
            .filter(|e| e.operation == jetstream::kv::Operation::Put)
            .map(|e| (e.revision, e.value)))
    }

    /// Shares rotated token keys: written over `read_revision` (a rotation
    /// through another node since then refuses this one), then announced
    /// to every node, which installs them at once (and, should the
    /// announcement be lost, at its next look, [`LEASE_RENEW_MS`] later).
    pub async fn share_token_keys(&self, bytes: Vec<u8>, read_revision: u64) -> Result<(), String> {
        self.nodes
            .update(SECRET_TOKEN_KEYS, Bytes::from(bytes), read_revision)
            .await
            .map_err(|e| format!("another node rotated the keys meanwhile ({e}); rotate again"))?;
        // Best effort: the others also look every few seconds.
        let _ = self
            .client
            .publish(self.secrets_subject(), Bytes::from_static(b"token-keys"))
            .await;
        Ok(())
    }

    /// Announcements that the shared secrets changed (core NATS: no
    /// JetStream needed to hear them).
    pub async fn secret_announcements(&self) -> Result<async_nats::Subscriber, String> {
        self.client
            .subscribe(self.secrets_subject())
            .await
            .map_err(|e| e.to_string())
    }

    fn secrets_subject(&self) -> String {
        format!("{}.secrets", self.stream)
    }

    /// Every node's last report (at most [`CLUSTER_NODES_MAX`]).
    pub async fn peers(&self) -> Result<Vec<Seen>, String> {
        use futures_util::StreamExt;
        let mut keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
        let mut peers = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| e.to_string())?;
            if !key.starts_with("seen.") {
                continue;
            }
            if let Some(v) = self.nodes.get(&key).await.map_err(|e| e.to_string())? {
                if let Ok(seen) = serde_json::from_slice::<Seen>(&v) {
                    peers.push(seen);
                }
            }
            if peers.len() >= CLUSTER_NODES_MAX as usize {
                break;
            }
        }
        peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(peers)
    }

    /// Publishes `cmd` and returns what it became once this node applied
    /// it (after a quorum acknowledged it).
    pub async fn propose(&self, cmd: &Command<'_>, origin: &[u8]) -> Result<Applied, ClusterError> {
        let payload = serde_json::to_vec(cmd).map_err(|_| ClusterError::Unavailable)?;
        if payload.len() > COMMAND_BYTES_MAX {
            return Err(ClusterError::Unavailable);
        }
        let n = self.next_proposal.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.waiting.lock();
            if w.len() >= PROPOSALS_WAITING_MAX {
                return Err(ClusterError::Busy);
            }
            w.insert(n, tx);
        }
        // Removes the waiter however this ends: an error, or the caller
        // dropping the future (a client gone, a bounded wait) before the
        // applier answered, which would otherwise leave it for ever.
        struct Waiter<'a>(&'a Cluster, u64);
        impl Drop for Waiter<'_> {
            fn drop(&mut self) {
                self.0.waiting.lock().remove(&self.1);
            }
        }
        let _waiter = Waiter(self, n);
        self.publish_and_wait(n, Bytes::from(payload), origin, rx)
            .await
    }

    async fn publish_and_wait(
        &self,
        n: u64,
        payload: Bytes,
        origin: &[u8],
        rx: oneshot::Receiver<Applied>,
    ) -> Result<Applied, ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_NODE, self.node_id.as_str());
        headers.insert(HEADER_BOOT, self.boot.as_str());
        headers.insert(HEADER_PROPOSAL, n.to_string().as_str());
        if let Ok(o) = std::str::from_utf8(origin) {
            if !o.is_empty() {
                headers.insert(HEADER_ORIGIN, o);
            }
        }
        let msg_id = format!("{}.{}.{n}", self.node_id, self.boot);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(PROPOSE_TIMEOUT_MS);
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(msg_id);
        // A publish retried after a timeout carries the same id: JetStream
        // stores it once.
        let ack = loop {
            let sent = self
                .js
                .send_publish(self.subject.clone(), publish.clone())
                .await;
            let acked = match sent {
                Ok(fut) => fut.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(ack) => break ack,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("publish retried: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!("change not acknowledged by a JetStream quorum: {e}");
                    self.reachable.store(false, Ordering::Relaxed);
                    return Err(ClusterError::Unavailable);
                }
            }
        };
        self.reachable.store(true, Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(applied)) => {
                debug_assert_eq!(applied.seq, ack.sequence);
                Ok(applied)
            }
            _ => Err(ClusterError::Unavailable),
        }
    }

    /// Hands `applied` to the proposal `n` of this process, if it waits.
    pub(crate) fn answer(&self, node: &str, boot: &str, n: u64, applied: Applied) {
        if node != self.node_id || boot != self.boot {
            return;
        }
        if let Some(tx) = self.waiting.lock().remove(&n) {
            let _ = tx.send(applied);
        }
    }

    /// Whether message headers name a proposal of this process.
    pub(crate) fn is_own(&self, node: &str, boot: &str) -> bool {
        node == self.node_id && boot == self.boot
    }

    pub(crate) fn set_applied(&self, seq: u64) {
        self.applied.send_replace(seq);
    }

    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// A cluster's membership as the nodes bucket holds it, read and changed
/// without being a node (`tally cluster nodes|remove-node`).
pub struct Members {
    nodes: jetstream::kv::Store,
}

/// One node as [`Members::list`] finds it.
#[derive(Debug, Clone)]
pub struct Member {
    pub node_id: String,
    pub lane: u64,
    pub applied_seq: Option<u64>,
    pub seen_ms_ago: Option<i64>,
}

impl Members {
    pub async fn connect(servers: &[String], stream: &str) -> Result<Members, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(servers.to_vec())
            .await
            .map_err(|e| format!("cannot connect to NATS {servers:?}: {e}"))?;
        let js = jetstream::new(client);
        let nodes = js
            .get_key_value(format!("{stream}-nodes"))
            .await
            .map_err(|e| format!("no cluster stream {stream} there: {e}"))?;
        Ok(Members { nodes })
    }

    /// Every node that took a lane, by name.
    pub async fn list(&self) -> Result<Vec<Member>, String> {
        use futures_util::StreamExt;
        let mut keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| e.to_string())?;
            if let Some(name) = key.strip_prefix("node.") {
                names.push(name.to_string());
            }
            if names.len() >= CLUSTER_NODES_MAX as usize {
                break;
            }
        }
        names.sort();
        let now = wall_ms();
        let mut out = Vec::new();
        for node_id in names {
            let Some(lane) = self.get_u64(&format!("node.{node_id}")).await? else {
                continue;
            };
            let seen = self.seen(&node_id).await?;
            out.push(Member {
                node_id,
                lane,
                applied_seq: seen.as_ref().map(|s| s.applied_seq),
                seen_ms_ago: seen.map(|s| (now - s.at_ms).max(0)),
            });
        }
        Ok(out)
    }

    /// Forgets `node` (its lane, name and report); refused if it reported
    /// itself less than `unseen_for` ago. Returns the freed lane.
    pub async fn remove(&self, node: &str, unseen_for: Duration) -> Result<u64, String> {
        let lane = self
            .get_u64(&format!("node.{node}"))
            .await?
            .ok_or_else(|| format!("no node {node} in this cluster"))?;
        if let Some(seen) = self.seen(node).await? {
            let ago = wall_ms() - seen.at_ms;
            if ago < unseen_for.as_millis() as i64 {
                return Err(format!(
                    "{node} reported itself {:.1} s ago: stop it first (a running node must \
                     keep its lane, or two nodes would hand out the same ids)",
                    ago as f64 / 1000.0
                ));
            }
        }
        for key in [
            format!("lane.{lane}"),
            format!("node.{node}"),
            format!("seen.{node}"),
        ] {
            self.nodes
                .purge(&key)
                .await
                .map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(lane)
    }

    async fn get_u64(&self, key: &str) -> Result<Option<u64>, String> {
        let v = self.nodes.get(key).await.map_err(|e| e.to_string())?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok())))
    }

    async fn seen(&self, node: &str) -> Result<Option<Seen>, String> {
        let v = self
            .nodes
            .get(format!("seen.{node}"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(v.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

fn wall_ms() -> i64 {
    crate::clock::Clock::now_ms(&crate::clock::SystemClock)
}

/// Tries `f` until it succeeds, for [`CONNECT_RETRY_MS`]: a cluster that
/// just lost a server, or a new one, may be electing its leaders.
async fn retrying<T, F, Fut>(f: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CONNECT_RETRY_MS);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// How long a starting node retries setting up its stream and buckets.
pub const CONNECT_RETRY_MS: u64 = 60_000;

async fn ensure_stream(
    js: &jetstream::Context,
    opts: &ClusterOptions,
    subject: &str,
) -> Result<(), String> {
    let config = jetstream::stream::Config {
        name: opts.stream.clone(),
        subjects: vec![subject.to_string()],
        num_replicas: opts.replicas,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(DUPLICATE_WINDOW_SECS),
        max_message_size: COMMAND_BYTES_MAX as i32 + 64 * 1024,
        // Any replica answers a read by sequence: the applier reads on
        // that way when no consumer can be made (see `apply`).
        allow_direct: true,
        ..Default::default()
    };
    // A fresh cluster may still be electing its meta leader: retry a while.
    retrying(|| async {
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| format!("stream {}: {e}", opts.stream))?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        if !info.config.allow_direct {
            // A stream made by an earlier version: allow direct gets.
            let mut updated = info.config.clone();
            updated.allow_direct = true;
            js.update_stream(updated)
                .await
                .map_err(|e| format!("stream {}: {e}", opts.stream))?;
        }
        Ok(())
    })
    .await
}

/// A key-value bucket. Its stream is made here, as the client's
/// `create_key_value` would make it, because that call first reads the
/// account's info in a shape Debian's server (2.9) does not send.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<jetstream::kv::Store, String> {
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        max_age: max_age.unwrap_or_default(),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| format!("bucket {name}: {e}"))?;
    js.get_key_value(name)
        .await
        .map_err(|e| format!("bucket {name}: {e}"))
}

/// This node's lane: the one it took before, or the first free one (taken
/// with a create, which fails if another node took it first).
async fn take_lane(kv: &jetstream::kv::Store, node: &str) -> Result<u64, String> {
    let key = format!("node.{node}");
    if let Some(v) = kv.get(&key).await.map_err(|e| e.to_string())? {
        return std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("lane of {node} unreadable"));
    }
    for lane in 0..CLUSTER_NODES_MAX {
        let name = format!("lane.{lane}");
        // A lane this node took before its name was written (a start that
        // failed in between, retried) is this node's.
        let mine = match kv.get(&name).await.map_err(|e| e.to_string())? {
            Some(holder) => holder == node.as_bytes(),
            None => kv
                .create(&name, Bytes::from(node.to_string()))
                .await
                .is_ok(),
        };
        if mine {
            kv.put(&key, Bytes::from(lane.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(lane);
        }
    }
    Err(format!("all {CLUSTER_NODES_MAX} node lanes are taken"))
}

#[cfg(test)]
mod tests {
    use crate::engine::{Command, Engine};

    const NOW: i64 = 1_796_040_000_000;

    /// Two engines holding the same state (one loaded from the other's
    /// snapshot, so its maps iterate in another order) have one digest;
    /// one change makes it differ, the same change on both makes it equal.
    #[test]
    fn the_digest_is_the_state_s() {
        let a = Engine::new();
        let catalog = include_bytes!("../../examples/demo.json");
        crate::catalog::load_slice(&a, catalog, NOW).expect("demo catalog");
        let dir = tempfile::tempdir().expect("tempdir");
        crate::storage::snapshot::write(dir.path(), &a, 0, NOW).expect("snapshot");
        let b = Engine::new();
        let path = dir.path().join(crate::storage::snapshot::snapshot_name(0));
        crate::storage::snapshot::load(&path, &b, NOW).expect("load");
        if a.digest() != b.digest() {
            let dump = |e: &Engine| {
                let mut v = Vec::new();
                let _ = e.export(|i| -> Result<(), ()> {
                    v.push(format!("{i:?}"));
                    Ok(())
                });
                v.sort();
                v
            };
            let (da, db) = (dump(&a), dump(&b));
            for (x, y) in da.iter().zip(db.iter()) {
                if x != y {
                    eprintln!("A: {x}\nB: {y}");
                    break;
                }
            }
        }
        assert_eq!(a.digest(), b.digest());
        let key = a.api_key("demo-api-key").expect("key");
        let lic = a
            .license_by_key(key.tenant_id, "DEMO-STUDIO-0001")
            .expect("license");
        let feature = lic.feature("ai-credits").expect("feature").id;
        let add = Command::AddConsumption {
            license_id: lic.id,
            feature_id: Some(feature),
            amount: 5,
            now: NOW,
        };
        a.apply(&add).expect("consume");
        assert_ne!(a.digest(), b.digest());
        b.apply(&add).expect("consume");
        assert_eq!(a.digest(), b.digest());
    }
}
