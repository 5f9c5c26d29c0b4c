//! The applier: every message of the stream, in stream order, applied to
//! this node's engine by one task. Two ways to read the stream:
//!
//! - an ordered push consumer (flow controlled) starting after the node's
//!   applied sequence: the fast way, used whenever it can be made;
//! - direct gets by sequence, answered by any replica of the stream: used
//!   while the consumer cannot be made or stalls. Making a consumer needs
//!   JetStream's metadata leader, which after the loss of a NATS server
//!   may be unavailable for a long while (seen: minutes on 2 shared
//!   cores); reading the stream by sequence needs only a live replica, so
//!   a node applies on (and answers its proposals) through such a loss.
//!
//! The proposals of this process get their outcome and reply back from here.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::DirectGetErrorKind;
use futures_util::StreamExt;

use super::{Applied, Cluster, HEADER_BOOT, HEADER_NODE, HEADER_PROPOSAL};
use crate::engine::{Command, Engine, EngineError};

/// How long the applier reads by direct gets after the consumer failed,
/// before it tries to make one again.
pub const DIRECT_READS_MS: u64 = 3_000;
/// How long making the consumer may take before the applier reads by
/// direct gets instead.
pub const CONSUMER_CREATE_TIMEOUT_MS: u64 = 2_000;
/// Pause between two direct gets that found nothing new (the direct reads
/// wait for new messages by asking again).
pub const DIRECT_POLL_MS: u64 = 10;
/// Quiet time after which the applier asks the stream how far it goes: a
/// consumer that lost messages (a reconnect, a slow-consumer cut) notices
/// a gap only when the next message comes, which may be never.
pub const APPLIER_STALL_CHECK_MS: u64 = 1_000;

/// Periodic snapshots of a node: written by the applier between two
/// messages (the engine then holds exactly the applied prefix), kept in
/// the data directory (older ones removed) and published as the cluster's
/// newest for nodes that bootstrap.
pub struct Snapshots {
    pub dir: std::path::PathBuf,
    /// Zero: only at a graceful stop.
    pub interval: Duration,
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The node's ledger store, written as messages are applied.
    pub ledger: Option<super::ledger::NodeLedger>,
}

struct Periodic {
    policy: Snapshots,
    last_at: std::time::Instant,
    last_seq: u64,
    /// The last digest computed and its sequence: asked again before the
    /// next message, it is not computed again (a digest reads every entity).
    digest: Option<(u64, String)>,
}

impl Periodic {
    /// The state's digest at the applied sequence (between two messages).
    fn digest(&mut self, cluster: &Cluster, engine: &Engine) -> (u64, String) {
        let seq = cluster.applied();
        match &self.digest {
            Some((at, d)) if *at == seq => (seq, d.clone()),
            _ => {
                let d = engine.digest();
                self.digest = Some((seq, d.clone()));
                (seq, d)
            }
        }
    }

    /// Syncs the ledger's appended entries (a quiet moment).
    fn sync_ledger(&mut self) {
        if let Some(l) = &mut self.policy.ledger {
            if let Err(e) = l.sync() {
                tracing::error!("ledger not synced: {e}");
            }
        }
    }

    fn ledger(&mut self) -> Option<&mut super::ledger::NodeLedger> {
        self.policy.ledger.as_mut()
    }
}

impl Periodic {
    /// Writes and publishes a snapshot when one is due and the state moved.
    async fn maybe(&mut self, cluster: &Cluster, engine: &Engine) {
        let p = &self.policy;
        let seq = cluster.applied();
        if p.interval.is_zero() || self.last_at.elapsed() < p.interval || seq == self.last_seq {
            return;
        }
        self.last_at = std::time::Instant::now();
        // Every entry of what the snapshot holds is on disk first: a start
        // from this snapshot cuts the ledger after it.
        self.sync_ledger();
        let p = &self.policy;
        let now = p.clock.now_ms();
        // Blocks this task (and so the applier) while it writes: nothing
        // may change the engine meanwhile.
        let written =
            tokio::task::block_in_place(|| super::bootstrap::write_local(engine, &p.dir, seq, now));
        let published = match written {
            Ok(path) => super::bootstrap::publish_file(cluster, &path, seq).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => {
                self.last_seq = seq;
                if let Err(e) = crate::storage::recovery::prune(&p.dir, seq, false) {
                    tracing::warn!("older snapshots not removed: {e}");
                }
                if let Some(l) = &p.ledger {
                    l.retain();
                }
            }
            Err(e) => tracing::error!("periodic snapshot at stream sequence {seq}: {e}"),
        }
    }
}

/// Applies the stream to `engine` until the task is dropped; `after` runs
/// after each message with its sequence. Returns only if this node cannot
/// go on (it fell behind the stream's retention), with the reason.
pub async fn run(
    cluster: Arc<Cluster>,
    engine: &Engine,
    after: impl Fn(u64),
    snapshots: Snapshots,
) -> String {
    let Some(mut digests) = cluster.take_digest_requests() else {
        return "a second applier for one cluster connection".into();
    };
    let mut periodic = Periodic {
        policy: snapshots,
        last_at: std::time::Instant::now(),
        last_seq: cluster.applied(),
        digest: None,
    };
    loop {
        let sides = Sides {
            after: &after,
            digests: &mut digests,
            periodic: &mut periodic,
        };
        if let Err(e) = consume(&cluster, engine, sides).await {
            tracing::warn!(
                "cluster applier at {}: {e}; reading by sequence",
                cluster.applied()
            );
        }
        if let Some(why) = behind_retention(&cluster).await {
            return why;
        }
        let sides = Sides {
            after: &after,
            digests: &mut digests,
            periodic: &mut periodic,
        };
        read_directly(&cluster, engine, sides).await;
    }
}

/// Why this node cannot go on, if the stream was trimmed past what it
/// applied (it was further behind than `--cluster-retain` allows): it must
/// restart, and then loads the newest published snapshot.
async fn behind_retention(cluster: &Cluster) -> Option<String> {
    let first = cluster.stream_state().await.ok()?.first_seq;
    let next = cluster.applied() + 1;
    (first > next).then(|| {
        format!(
            "this node applied up to {} but the stream now starts at {first} (trimmed, \
             see --cluster-retain): restart it to load the newest published snapshot",
            next - 1
        )
    })
}

/// Applies the stream by direct gets, message after message, for
/// [`DIRECT_READS_MS`] (longer while it is behind the stream).
async fn read_directly<F: Fn(u64)>(cluster: &Cluster, engine: &Engine, sides: Sides<'_, F>) {
    let Sides {
        after,
        digests,
        periodic,
    } = sides;
    let Ok(stream) = cluster.context().get_stream_no_info(&cluster.stream).await else {
        return;
    };
    let until = tokio::time::Instant::now() + Duration::from_millis(DIRECT_READS_MS);
    let mut reads = 0u64;
    loop {
        while let Ok(reply) = digests.try_recv() {
            let _ = reply.send(periodic.digest(cluster, engine));
        }
        let seq = cluster.applied() + 1;
        match stream.direct_get(seq).await {
            Ok(m) => {
                reads += 1;
                apply_one(
                    cluster,
                    engine,
                    seq,
                    Some(&m.headers),
                    &m.payload,
                    periodic.ledger(),
                );
                cluster.set_applied(seq);
                after(seq);
                periodic.maybe(cluster, engine).await;
                continue;
            }
            // Nothing at `seq` yet (or this replica lags): the stream's end.
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
            Err(e) => tracing::debug!("direct get {seq}: {e}"),
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
        periodic.sync_ledger();
        periodic.maybe(cluster, engine).await;
        tokio::time::sleep(Duration::from_millis(DIRECT_POLL_MS)).await;
    }
    if reads > 0 {
        tracing::info!(
            "applied {reads} messages by direct gets, up to {}",
            cluster.applied()
        );
    }
}

use super::DigestRequests;

/// What the applier does besides applying: the caller's hook, digests,
/// periodic snapshots.
struct Sides<'a, F: Fn(u64)> {
    after: &'a F,
    digests: &'a mut DigestRequests,
    periodic: &'a mut Periodic,
}

async fn consume<F: Fn(u64)>(
    cluster: &Cluster,
    engine: &Engine,
    sides: Sides<'_, F>,
) -> Result<(), String> {
    let Sides {
        after,
        digests,
        periodic,
    } = sides;
    let from = cluster.applied() + 1;
    let stream = cluster
        .context()
        .get_stream_no_info(&cluster.stream)
        .await
        .map_err(|e| e.to_string())?;
    let create = stream.create_consumer(jetstream::consumer::push::OrderedConfig {
        deliver_subject: cluster.client().new_inbox(),
        deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        },
        ..Default::default()
    });
    let consumer = tokio::time::timeout(Duration::from_millis(CONSUMER_CREATE_TIMEOUT_MS), create)
        .await
        .map_err(|_| "making the consumer timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let quiet = Duration::from_millis(APPLIER_STALL_CHECK_MS);
    // Since the last message (a digest request does not move it: requests
    // more often than `quiet` must not hide a stall).
    let mut quiet_until = tokio::time::Instant::now() + quiet;
    loop {
        let next = tokio::select! {
            // Between two messages: the state is at exactly one sequence.
            Some(reply) = digests.recv() => {
                let _ = reply.send(periodic.digest(cluster, engine));
                continue;
            }
            n = tokio::time::timeout_at(quiet_until, messages.next()) => n,
        };
        quiet_until = tokio::time::Instant::now() + quiet;
        let next = match next {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => {
                periodic.sync_ledger();
                periodic.maybe(cluster, engine).await;
                let last = cluster.stream_last_seq().await?;
                if last > cluster.applied() {
                    return Err(format!("stalled before {last}; consuming again"));
                }
                continue;
            }
        };
        let m = next.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq <= cluster.applied() {
            continue;
        }
        if seq != cluster.applied() + 1 {
            return Err(format!("the consumer skipped to {seq}"));
        }
        apply_one(
            cluster,
            engine,
            seq,
            m.headers.as_ref(),
            &m.payload,
            periodic.ledger(),
        );
        cluster.set_applied(seq);
        after(seq);
        periodic.maybe(cluster, engine).await;
    }
    Err("the consumer ended".into())
}

/// Applies one message; answers its proposer if that is this process.
fn apply_one(
    cluster: &Cluster,
    engine: &Engine,
    seq: u64,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    ledger: Option<&mut super::ledger::NodeLedger>,
) {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    let (node, boot) = (header(HEADER_NODE), header(HEADER_BOOT));
    let own = cluster.is_own(&node, &boot);
    let mut replies = Vec::new();
    let mut entries = Vec::new();
    // Entries are derived for the ledger store, and while any tenant
    // subscribes to webhooks (events are made from them), as on every
    // other path that applies commands.
    let ledgered = ledger.is_some() || engine.webhooks_active();
    let mut key = None;
    let result = match serde_json::from_slice::<Command<'_>>(payload) {
        Ok(Command::RestoreState { .. }) => Err(EngineError::Invalid(
            "op",
            "state fixtures are not restored in a cluster",
        )),
        Ok(cmd) => {
            if let Command::Idempotent { key: k, .. } = &cmd {
                key = Some(k.to_string());
            }
            engine.apply_full(
                &cmd,
                own.then_some(&mut replies),
                ledgered.then_some(&mut entries),
            )
        }
        Err(e) => {
            // Every node skips it alike: the same bytes fail the same way.
            tracing::error!("stream message {seq} is not a command: {e}");
            Err(EngineError::Invalid("op", "not a command"))
        }
    };
    if let Some(l) = ledger {
        let origin = header(super::HEADER_ORIGIN);
        if let Err(e) = l.append(seq, origin.as_bytes(), key.as_deref(), &entries) {
            tracing::error!("ledger entries of stream message {seq} not written: {e}");
        }
    }
    if own {
        let n = header(HEADER_PROPOSAL).parse().unwrap_or(0);
        cluster.answer(
            &node,
            &boot,
            n,
            Applied {
                seq,
                result,
                reply: replies.pop(),
            },
        );
    }
}
