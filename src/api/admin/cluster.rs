//! `GET /admin/v1/cluster`: this node's place in its cluster (see
//! `crate::cluster`): its id and id lane, the stream sequence it applied,
//! the stream's last one (when a quorum answers), the lag between them,
//! whether its last change reached a quorum, and the digest of its state at
//! `digest_seq` (nodes at the same sequence must have the same digest);
//! the stream's first sequence (it is trimmed below the newest published
//! snapshot), its NATS leader and replicas, and the peers: every node as it
//! last reported itself (applied sequence, how long ago). 409 on a single
//! node.

use hyper::StatusCode;
use serde_json::json;

use super::{AdminError, R};
use crate::app::App;
use crate::http::{json_value, Resp};

pub(super) async fn get(app: &App) -> R<Resp> {
    let Some(c) = &app.cluster else {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "not_clustered",
            "this server is a single node (start it with --cluster to join one)",
        ));
    };
    let digest = c.digest().await;
    let applied = c.applied();
    let state = c.stream_state().await;
    let last = state.as_ref().map(|s| s.last_seq);
    let now_ms = app.now();
    let peers = c.peers().await.map(|peers| {
        peers
            .into_iter()
            .map(|p| {
                json!({
                    "node_id": p.node_id,
                    "applied_seq": p.applied_seq,
                    "seen_ms_ago": now_ms.saturating_sub(p.at_ms).max(0),
                })
            })
            .collect::<Vec<_>>()
    });
    let body = json!({
        "node_id": c.node_id,
        "lane": c.lane,
        "stream": c.stream,
        "applied_seq": applied,
        "stream_first_seq": state.as_ref().ok().map(|s| s.first_seq),
        "stream_last_seq": last.as_ref().ok(),
        "lag": last.as_ref().ok().map(|l| l.saturating_sub(applied)),
        "stream_error": state.as_ref().err(),
        "nats_leader": state.as_ref().ok().and_then(|s| s.leader.clone()),
        "nats_replicas": state.as_ref().ok().map(|s| s.replicas.clone()),
        "peers": peers.as_ref().ok(),
        "peers_error": peers.as_ref().err(),
        "quorum_reached_last": c.reachable(),
        "delivers_webhooks": c.delivers(),
        "digest": digest.as_ref().map(|(_, d)| d),
        "digest_seq": digest.as_ref().map(|(s, _)| s),
    });
    Ok(json_value(StatusCode::OK, &body))
}
