//! A node's first state, before it applies the stream.
//!
//! - A node that ran before resumes from its newest local snapshot (each is
//!   tagged with the stream sequence it holds, `snapshot-<seq>.snap`).
//! - A new or wiped node loads the newest snapshot published to the
//!   object store (`<stream>-snapshots`, object `latest`), then applies
//!   the stream after it.
//! - The first node of a new cluster loads the catalog (once for the whole
//!   cluster: the node that creates the key `bootstrap` in the nodes
//!   bucket does it) and publishes it as `latest` at sequence 0; the other
//!   nodes wait for it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::Cluster;
use crate::engine::time::Millis;
use crate::engine::Engine;
use crate::storage::recovery::{self, Repair};
use crate::storage::snapshot;

/// The object store's name of the newest published snapshot.
pub const SNAPSHOT_OBJECT: &str = "latest";
/// How long a node waits for the first node to publish the catalog.
pub const BOOTSTRAP_WAIT_MS: u64 = 60_000;
/// The data directory's record of the cluster it belongs to.
pub const CLUSTER_FILE: &str = "cluster.json";

/// Rebuilds `engine` (empty) for this node; returns the stream sequence
/// its state holds (the applier goes on after it).
pub async fn bootstrap(
    cluster: &Cluster,
    engine: &Engine,
    dir: &Path,
    catalog: Option<&Path>,
    now: Millis,
) -> Result<u64, String> {
    claim_dir(dir, &cluster.stream)?;
    let listing = recovery::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !listing.segments.is_empty() {
        return Err(format!(
            "{} holds a single-node log; a cluster node starts from its own directory",
            dir.display()
        ));
    }
    if let Some((local, _)) = listing.snapshots.last() {
        let first = cluster.stream_state().await?.first_seq;
        if first > local + 1 {
            // The stream was trimmed past this node's snapshot while it
            // was away: the published snapshot is newer than what was
            // trimmed (see `Cluster::trim`).
            tracing::warn!(
                "local snapshot at {local} is older than the stream's first message {first}: \
                 loading the published snapshot"
            );
            // Nothing in them is missing from the published one, which is
            // newer; they could never be caught up again.
            for (_, path) in &listing.snapshots {
                std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            return match load_published(cluster, engine, dir, now).await? {
                Some(seq) if seq + 1 >= first => Ok(seq),
                Some(seq) => Err(format!(
                    "the published snapshot ({seq}) is older than the stream's first message ({first})"
                )),
                None => Err("the stream was trimmed but no snapshot is published".into()),
            };
        }
    }
    if !listing.snapshots.is_empty() {
        let rebuilt = recovery::rebuild(dir, engine, now, None, Repair::TornTail, None)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "resumed from local snapshot at stream sequence {}",
            rebuilt.last_lsn
        );
        return Ok(rebuilt.last_lsn);
    }
    if let Some(seq) = load_published(cluster, engine, dir, now).await? {
        return Ok(seq);
    }
    let first = cluster
        .nodes
        .create("bootstrap", Bytes::from(cluster.node_id.clone()))
        .await
        .is_ok();
    if first {
        if let Some(path) = catalog {
            let loaded = crate::catalog::load_file(engine, path, now).map_err(|e| e.to_string())?;
            tracing::info!(
                "loaded catalog {} for the cluster: {loaded:?}",
                path.display()
            );
        }
        publish_snapshot(cluster, engine, dir, 0, now).await?;
        return Ok(0);
    }
    let waited = tokio::time::Instant::now();
    while waited.elapsed() < Duration::from_millis(BOOTSTRAP_WAIT_MS) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(seq) = load_published(cluster, engine, dir, now).await? {
            return Ok(seq);
        }
    }
    Err("the cluster's first node did not publish its state in time".into())
}

/// The secrets every node of a cluster shares (key in the nodes bucket,
/// file in the data directory): the key that signs LicenseSpring answers,
/// the offline tokens' keys, the admin token. A client verifies an answer,
/// or uses a token, whichever node it reached.
pub const SHARED_SECRETS: [(&str, &str); 3] = [
    ("secret.signing-key", crate::storage::SIGNING_KEY_FILE),
    (super::SECRET_TOKEN_KEYS, crate::storage::TOKEN_KEYS_FILE),
    ("secret.admin-token", crate::storage::ADMIN_TOKEN_FILE),
];

/// Makes this node's data directory hold the cluster's secrets: the
/// cluster's when it has them (they replace the node's own), else this
/// node's, made first if need be by `make` and then offered to the cluster
/// (the first node to offer one wins; the others take it).
pub async fn share_secrets(
    cluster: &Cluster,
    dir: &Path,
    make: impl Fn() -> Result<(), String>,
) -> Result<(), String> {
    let mut made = false;
    for (key, file) in SHARED_SECRETS {
        let theirs = cluster
            .nodes
            .get(key)
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        let bytes = match theirs {
            Some(b) => b,
            None => {
                // Once: it makes every secret this node lacks.
                if !made {
                    make()?;
                    made = true;
                }
                // An admin token given by TALLY_ADMIN_TOKEN is not stored:
                // each node is then given it the same way.
                let Ok(mine) = std::fs::read(dir.join(file)) else {
                    continue;
                };
                match cluster.nodes.create(key, Bytes::from(mine.clone())).await {
                    Ok(_) => continue,
                    Err(_) => cluster
                        .nodes
                        .get(key)
                        .await
                        .map_err(|e| format!("{key}: {e}"))?
                        .ok_or_else(|| format!("{key}: offered by another node, then gone"))?,
                }
            }
        };
        if std::fs::read(dir.join(file)).ok().as_deref() != Some(&bytes[..]) {
            crate::storage::write_secret_file(dir, file, &bytes).map_err(|e| e.to_string())?;
            tracing::info!("took the cluster's {file}");
        }
    }
    Ok(())
}

/// Writes this directory's cluster (its stream) the first time; refuses a
/// directory of another stream.
fn claim_dir(dir: &Path, stream: &str) -> Result<(), String> {
    let path = dir.join(CLUSTER_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            let v: serde_json::Value =
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?;
            if v["stream"] != stream {
                return Err(format!(
                    "{} belongs to the cluster stream {}, not {stream}",
                    dir.display(),
                    v["stream"]
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = serde_json::json!({ "stream": stream });
            std::fs::write(&path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Loads the published snapshot into `engine`, if there is one.
async fn load_published(
    cluster: &Cluster,
    engine: &Engine,
    dir: &Path,
    now: Millis,
) -> Result<Option<u64>, String> {
    let mut object = match cluster.snapshots.get(SNAPSHOT_OBJECT).await {
        Ok(o) => o,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(format!("published snapshot: {e}")),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("published snapshot: {e}"))?;
    let path = dir.join("bootstrap.snap");
    let (header, info) =
        snapshot::load_bytes(&path, &bytes, engine, now).map_err(|e| e.to_string())?;
    tracing::info!(
        "bootstrapped from the published snapshot at stream sequence {} ({} licenses)",
        header.lsn,
        info.licenses
    );
    Ok(Some(header.lsn))
}

/// Writes `engine` (at stream sequence `seq`) as this node's local snapshot
/// and publishes it as the cluster's newest.
pub async fn publish_snapshot(
    cluster: &Cluster,
    engine: &Engine,
    dir: &Path,
    seq: u64,
    now: Millis,
) -> Result<(), String> {
    let path = write_local(engine, dir, seq, now)?;
    publish_file(cluster, &path, seq).await?;
    if let Err(e) = crate::storage::recovery::prune(dir, seq, false) {
        tracing::warn!("older snapshots not removed: {e}");
    }
    Ok(())
}

/// Writes `engine`, which holds exactly the stream up to `seq`, as this
/// node's local snapshot; returns its path.
pub fn write_local(
    engine: &Engine,
    dir: &Path,
    seq: u64,
    now: Millis,
) -> Result<std::path::PathBuf, String> {
    let info = snapshot::write(dir, engine, seq, now).map_err(|e| e.to_string())?;
    tracing::info!(
        "snapshot at stream sequence {seq}: {} licenses, {} bytes",
        info.licenses,
        info.bytes
    );
    Ok(dir.join(snapshot::snapshot_name(seq)))
}

/// Publishes the snapshot file at `path` as the cluster's newest, unless a
/// newer one is published already (nodes publish independently).
pub async fn publish_file(cluster: &Cluster, path: &Path, seq: u64) -> Result<(), String> {
    if published_seq(cluster)
        .await
        .is_some_and(|published| published >= seq)
    {
        return Ok(());
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = async_nats::jetstream::object_store::ObjectMetadata {
        name: SNAPSHOT_OBJECT.to_string(),
        description: Some(seq.to_string()),
        ..Default::default()
    };
    cluster
        .snapshots
        .put(meta, &mut bytes.as_slice())
        .await
        .map_err(|e| format!("publishing the snapshot: {e}"))?;
    tracing::info!("published the snapshot at stream sequence {seq}");
    // Nodes publish independently: another's older snapshot may have
    // landed after this one. Trim by what is published now, never by this
    // node's own sequence.
    match published_seq(cluster).await {
        Some(published) => cluster.trim(published.min(seq)).await,
        None => Ok(()),
    }
}

/// The stream sequence of the snapshot published now, if one is.
async fn published_seq(cluster: &Cluster) -> Option<u64> {
    let info = cluster.snapshots.info(SNAPSHOT_OBJECT).await.ok()?;
    info.description.as_deref()?.parse().ok()
}
