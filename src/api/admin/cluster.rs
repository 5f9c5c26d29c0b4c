//! `GET /admin/v1/cluster`: this node's place in its cluster (see
//! `crate::cluster`): its id and id lane, the stream sequence it applied,
//! the stream's last one (when a quorum answers), the lag between them,
//! whether its last change reached a quorum, and the digest of its state at
//! `digest_seq` (nodes at the same sequence must have the same digest).
//! 409 on a single node.

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
    let last = c.stream_last_seq().await;
    let body = json!({
        "node_id": c.node_id,
        "lane": c.lane,
        "stream": c.stream,
        "applied_seq": applied,
        "stream_last_seq": last.as_ref().ok(),
        "lag": last.as_ref().ok().map(|l| l.saturating_sub(applied)),
        "stream_error": last.as_ref().err(),
        "quorum_reached_last": c.reachable(),
        "delivers_webhooks": c.delivers(),
        "digest": digest.as_ref().map(|(_, d)| d),
        "digest_seq": digest.as_ref().map(|(s, _)| s),
    });
    Ok(json_value(StatusCode::OK, &body))
}
