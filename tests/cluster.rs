//! Three Tally nodes on a three-server NATS JetStream cluster (Debian's
//! `nats-server`, started by the test on loopback ports): exact across
//! nodes under concurrency, read-your-writes with `X-Tally-Min-Seq`, a
//! node killed and restarted catching up; a NATS server lost (changes go
//! on), two lost (changes refused with 503, reads go on, and changes come
//! back with them).
#![allow(clippy::too_many_lines, reason = "a scenario reads top to bottom")]

mod common;

use std::sync::Arc;

use common::binary::Binary;
use common::nats::{self, NatsCluster};
use common::spread::Spread;
use hyper::Method;
use serde_json::{json, Value};

/// One license with a 10-seat floating feature and a meter.
fn catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let catalog = json!({"tenants": [{
        "name": "Cluster",
        "api_keys": [{"api_key": "c-key", "shared_key": "c-shared", "role": "admin"}],
        "products": [{"short_code": "c", "name": "C", "authorization_method": "license-key"}],
        "customers": [{"email": "c@example.com"}],
        "licenses": [
            {"product": "c", "license_key": "C-0001", "customer": "c@example.com",
             "license_type": "perpetual", "max_activations": 1,
             "features": [
                {"code": "seat", "name": "seat", "is_floating_cloud": true,
                 "floating_users": 10, "floating_timeout": 30},
                {"code": "units", "name": "units", "feature_type": "consumption",
                 "max_consumption": 1_000_000_000}
             ]}
        ]
    }]});
    let path = dir.join("catalog.json");
    std::fs::write(&path, catalog.to_string()).expect("write catalog");
    path
}

fn key() -> (&'static str, String) {
    ("Authorization", "Bearer c-key".to_string())
}

struct Nodes {
    nodes: Vec<Option<Arc<Binary>>>,
    dirs: Vec<std::path::PathBuf>,
    catalog: std::path::PathBuf,
    urls: String,
    /// More arguments for every node.
    extra: Vec<&'static str>,
    _tmp: tempfile::TempDir,
}

impl Nodes {
    fn start(nats: &NatsCluster, n: usize) -> Nodes {
        Self::start_with(nats, n, &[])
    }

    fn start_with(nats: &NatsCluster, n: usize, extra: &[&'static str]) -> Nodes {
        Self::start_on(nats, n, extra, None)
    }

    /// Nodes on the demo catalog (every vendor surface's demo tenants).
    fn start_demo(nats: &NatsCluster, n: usize) -> Nodes {
        let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json");
        Self::start_on(nats, n, &[], Some(demo.into()))
    }

    fn start_on(
        nats: &NatsCluster,
        n: usize,
        extra: &[&'static str],
        catalog_path: Option<std::path::PathBuf>,
    ) -> Nodes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let catalog = catalog_path.unwrap_or_else(|| catalog(tmp.path()));
        let dirs: Vec<_> = (0..n)
            .map(|i| tmp.path().join(format!("node{i}")))
            .collect();
        let mut nodes = Nodes {
            nodes: (0..n).map(|_| None).collect(),
            dirs,
            catalog,
            urls: nats.urls(),
            extra: extra.to_vec(),
            _tmp: tmp,
        };
        for i in 0..n {
            nodes.start_one(i);
        }
        nodes
    }

    fn start_one(&mut self, i: usize) {
        let id = format!("node{i}");
        let mut args = vec![
            "--cluster",
            &self.urls,
            "--node-id",
            &id,
            "--snapshot-interval",
            "1",
        ];
        args.extend(self.extra.iter().copied());
        let b = Binary::start_on(&self.dirs[i], &self.catalog, &args, &[]);
        self.nodes[i] = Some(Arc::new(b));
    }

    fn node(&self, i: usize) -> Arc<Binary> {
        self.nodes[i].clone().expect("node running")
    }

    fn kill(&mut self, i: usize) {
        if let Some(b) = self.nodes[i].take() {
            let mut b = Arc::try_unwrap(b).unwrap_or_else(|_| panic!("node {i} still in use"));
            b.kill9();
        }
    }
}

/// The answer's `X-Tally-Seq`.
fn seq_of(h: &hyper::HeaderMap) -> u64 {
    h.get("x-tally-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Tally-Seq on a cluster node's answer")
}

/// The license as node `b` has it once it applied `min_seq`. A node that
/// has not applied it yet answers 503 after a bounded wait (a node whose
/// NATS server was lost catches up once its client reconnected): a client
/// retries, here for up to 60 s.
async fn license(b: &Binary, min_seq: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, v) = b
            .call(
                Method::GET,
                "/v1/licenses/C-0001",
                &[key(), ("X-Tally-Min-Seq", min_seq.to_string())],
                None,
            )
            .await;
        if status == 503 && started.elapsed().as_secs() < 60 {
            continue;
        }
        if status != 200 {
            let admin = Binary::admin_header(&b.dir);
            let (_, c) = b
                .call(Method::GET, "/admin/v1/cluster", &[admin], None)
                .await;
            for line in b.log.lock().expect("log").iter().rev().take(12) {
                eprintln!("  {line}");
            }
            panic!("{status}: {v}; wanted {min_seq}; node: {c}");
        }
        return v;
    }
}

fn used(license: &Value) -> i64 {
    license["features"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["code"] == "units"))
        .and_then(|f| f["usage"]["used"].as_i64())
        .unwrap_or_else(|| panic!("no usage: {license}"))
}

async fn holders(b: &Binary, min_seq: u64) -> usize {
    let (status, v) = b
        .call(
            Method::GET,
            "/v1/licenses/C-0001/features/seat/seats",
            &[key(), ("X-Tally-Min-Seq", min_seq.to_string())],
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["seats"].as_array().map_or(0, Vec::len)
}

async fn consume(b: &Binary, units: i64) -> (u16, u64) {
    let (status, h, v) = b
        .call_full(
            Method::POST,
            "/v1/licenses/C-0001/features/units/usage",
            &[key()],
            Some(json!({ "units": units })),
        )
        .await;
    assert!(status == 200 || status == 503, "{status}: {v}");
    (status, seq_of(&h))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_are_exact_across_nodes_and_a_killed_node_catches_up() {
    if !nats::installed() {
        return;
    }
    let nats = NatsCluster::start(3);
    let mut nodes = Nodes::start(&nats, 3);

    // The nodes share the first node's keys and admin token: an answer's
    // signature verifies, and the admin token works, whichever node answered.
    let admin = Binary::admin_header(&nodes.dirs[0]);
    let mut public_keys = Vec::new();
    for i in 0..3 {
        let (status, v) = nodes
            .node(i)
            .call(
                Method::GET,
                "/admin/v1/signing-key",
                std::slice::from_ref(&admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "node {i}: {v}");
        public_keys.push(v);
    }
    assert!(
        public_keys.iter().all(|k| *k == public_keys[0]),
        "{public_keys:?}"
    );
    // A rotation of the offline token keys through node 1 is every node's
    // (announced, installed at once): each one's current key is the new one.
    let (status, v) = nodes
        .node(1)
        .call(
            Method::POST,
            "/admin/v1/token-keys/rotate",
            std::slice::from_ref(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let kid = v["kid"].as_str().expect("kid").to_string();
    for i in 0..3 {
        let started = std::time::Instant::now();
        loop {
            let (_, keys) = nodes
                .node(i)
                .call(
                    Method::GET,
                    "/admin/v1/token-keys",
                    std::slice::from_ref(&admin),
                    None,
                )
                .await;
            let current = keys["keys"].as_array().and_then(|ks| {
                ks.iter()
                    .find(|k| k["current"] == true)
                    .map(|k| k["kid"].clone())
            });
            if current == Some(json!(kid)) {
                break;
            }
            assert!(started.elapsed().as_secs() < 10, "node {i}: {keys}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // 64 clients race for 10 floating seats through all three nodes.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let b = nodes.node(i % 3);
        tasks.push(tokio::spawn(async move {
            let (status, h, v) = b
                .call_full(
                    Method::PUT,
                    &format!("/v1/licenses/C-0001/features/seat/seats/h{i}"),
                    &[key()],
                    None,
                )
                .await;
            assert!(status == 201 || status == 409, "{status}: {v}");
            (status == 201, seq_of(&h))
        }));
    }
    let mut granted = 0;
    let mut seen = 0;
    for t in tasks {
        let (ok, seq) = t.await.expect("client");
        granted += usize::from(ok);
        seen = seen.max(seq);
    }
    assert_eq!(granted, 10, "exactly the seats there are");
    for i in 0..3 {
        assert_eq!(holders(&nodes.node(i), seen).await, 10, "node {i}");
    }

    // Consumption from all nodes on one meter: the exact total everywhere.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let b = nodes.node(i % 3);
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..5 {
                let (status, seq) = consume(&b, 1).await;
                assert_eq!(status, 200);
                last = last.max(seq);
            }
            last
        }));
    }
    let mut seen = 0;
    for t in tasks {
        seen = seen.max(t.await.expect("client"));
    }
    for i in 0..3 {
        assert_eq!(used(&license(&nodes.node(i), seen).await), 320, "node {i}");
    }

    // Read your writes: a change through node 0, read through node 2.
    let (_, seq) = consume(&nodes.node(0), 7).await;
    assert_eq!(used(&license(&nodes.node(2), seq).await), 327);
    // A sequence no node reached: 503 after a bounded wait, in the
    // surface's shape; a malformed one: 400.
    let (status, v) = nodes
        .node(1)
        .call(
            Method::GET,
            "/v1/licenses/C-0001",
            &[key(), ("X-Tally-Min-Seq", (seq + 1_000_000).to_string())],
            None,
        )
        .await;
    assert_eq!(status, 503, "{v}");
    let (status, _) = nodes
        .node(1)
        .call(
            Method::GET,
            "/v1/licenses/C-0001",
            &[key(), ("X-Tally-Min-Seq", "soon".to_string())],
            None,
        )
        .await;
    assert_eq!(status, 400);

    // A Tally node killed under load and started again: it catches up.
    let writer = {
        let b = nodes.node(0);
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..100 {
                last = last.max(consume(&b, 1).await.1);
            }
            last
        })
    };
    nodes.kill(1);
    nodes.start_one(1);
    let seen = writer.await.expect("writer");
    let totals: Vec<i64> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(used(&license(&nodes.node(i), seen).await));
        }
        v
    };
    assert_eq!(totals, [427, 427, 427]);

    // A wiped node bootstraps from the newest published snapshot (nodes
    // publish one every second here), then applies the stream after it.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    nodes.kill(2);
    std::fs::remove_dir_all(&nodes.dirs[2]).expect("wipe node 2");
    nodes.start_one(2);
    let booted = nodes.node(2).log.lock().expect("log").iter().find_map(|l| {
        l.split("bootstrapped from the published snapshot at stream sequence ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
    });
    assert!(booted.is_some_and(|s| s > 0), "{booted:?}");
    assert_eq!(used(&license(&nodes.node(2), seen).await), 427);
    // Every node's state digest, at the same stream sequence, is the same
    // (the restarted node's included).
    let mut digests = Vec::new();
    for i in 0..3 {
        let b = nodes.node(i);
        let admin = Binary::admin_header(&b.dir);
        let (status, c) = b
            .call(Method::GET, "/admin/v1/cluster", &[admin], None)
            .await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["lag"], 0, "{c}");
        digests.push((c["digest_seq"].clone(), c["digest"].clone()));
    }
    assert!(digests[0].1.is_string(), "{digests:?}");
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");

    // Every node keeps the ledger of what it applied: node 0 all 422
    // consumptions, node 1 (killed and restarted) the same entries, node 2
    // (wiped, bootstrapped) the same entries from its bootstrap on.
    let (_, seq) = consume(&nodes.node(2), 1).await;
    for i in 0..3 {
        assert_eq!(used(&license(&nodes.node(i), seq).await), 428);
    }
    let mut ledgers = Vec::new();
    for i in 0..3 {
        let b = nodes.node(i);
        let admin = Binary::admin_header(&b.dir);
        let (status, v) = b
            .call(
                Method::GET,
                "/admin/v1/ledger?kind=units_consumed&limit=1000",
                &[admin],
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let seqs: Vec<u64> = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        ledgers.push(seqs);
    }
    assert_eq!(ledgers[0].len(), 422);
    assert_eq!(ledgers[0], ledgers[1], "node 1's ledger after its restart");
    assert!(
        !ledgers[2].is_empty() && ledgers[0].ends_with(&ledgers[2]),
        "node 2's ledger: {} entries",
        ledgers[2].len()
    );
}

/// The node's cluster status (`GET /admin/v1/cluster`).
async fn cluster_status(b: &Binary) -> Value {
    let admin = Binary::admin_header(&b.dir);
    let (code, c) = b
        .call(Method::GET, "/admin/v1/cluster", &[admin], None)
        .await;
    assert_eq!(code, 200, "{c}");
    c
}

/// The stream is trimmed below the newest published snapshot (keeping
/// `--cluster-retain` messages); a node that was away while its own
/// snapshot fell out of what is kept loads the published one and catches
/// up, exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_past_the_retention_loads_the_published_snapshot() {
    if !nats::installed() {
        return;
    }
    let nats = NatsCluster::start(3);
    let mut nodes = Nodes::start_with(&nats, 2, &["--cluster-retain", "20"]);
    let (status, seq) = consume(&nodes.node(1), 1).await;
    assert_eq!(status, 200);
    assert_eq!(used(&license(&nodes.node(1), seq).await), 1);
    // Node 1 writes a local snapshot (every second here), then goes away.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    nodes.kill(1);
    let mut last = 0;
    for _ in 0..100 {
        let (status, seq) = consume(&nodes.node(0), 1).await;
        assert_eq!(status, 200);
        last = seq;
    }
    // Node 0 publishes its snapshot and trims what is more than 20 below.
    let started = std::time::Instant::now();
    let first = loop {
        let c = cluster_status(&nodes.node(0)).await;
        let first = c["stream_first_seq"].as_u64().unwrap_or(0);
        if first + 20 > last || started.elapsed().as_secs() > 30 {
            break first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    if first <= 50 {
        let log = nodes.node(0).log.lock().expect("log").join("\n");
        panic!("the stream was not trimmed: first {first}, last {last}; node 0:\n{log}");
    }
    nodes.start_one(1);
    let log = nodes.node(1).log.lock().expect("log").join("\n");
    assert!(
        log.contains("older than the stream's first message"),
        "node 1 did not load the published snapshot:\n{log}"
    );
    assert_eq!(used(&license(&nodes.node(1), last).await), 101);
    let (a, b) = (
        cluster_status(&nodes.node(0)).await,
        cluster_status(&nodes.node(1)).await,
    );
    assert_eq!(a["digest_seq"], b["digest_seq"], "{a}\n{b}");
    assert_eq!(a["digest"], b["digest"], "{a}\n{b}");
    // Each node reports itself to its peers.
    let peers: Vec<_> = b["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["node_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(peers, ["node0", "node1"], "{b}");
    assert_eq!(b["nats_replicas"].as_array().map(Vec::len), Some(2), "{b}");

    // Membership: `tally cluster nodes` lists both; a running node cannot
    // be removed; a stopped one can, and a new node takes its free lane.
    let urls = nodes.urls.clone();
    let tally = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("cluster")
            .args(args)
            .args(["--cluster", &urls])
            .output()
            .expect("tally cluster");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listed) = tally(&["nodes"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("node0\tlane 0") && listed.contains("node1\tlane 1"),
        "{listed}"
    );
    let (ok, refused) = tally(&["remove-node", "node1"]);
    assert!(!ok && refused.contains("stop it first"), "{refused}");
    nodes.kill(1);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (ok, removed) = tally(&["remove-node", "node1", "--unseen-for", "3"]);
    assert!(ok, "{removed}");
    assert!(removed.contains("lane 1 is free"), "{removed}");
    let (_, listed) = tally(&["nodes"]);
    assert!(!listed.contains("node1"), "{listed}");
    nodes.dirs.push(nodes.dirs[0].with_file_name("node2"));
    nodes.nodes.push(None);
    nodes.start_one(2);
    assert_eq!(cluster_status(&nodes.node(2)).await["lane"], 1);
}

/// Losing NATS servers: with one of three gone under load changes go on (after the
/// stream's leader is elected again); with two gone changes are refused
/// with 503 in the surface's shape and reads go on; with one back changes
/// come back. (After a server loss JetStream's metadata leader may stay
/// unavailable for a long while, so no consumer can be made: the appliers
/// read the stream by direct gets meanwhile, see `cluster::apply`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_servers_refuses_changes_only_without_a_quorum() {
    if !nats::installed() {
        return;
    }
    let mut nats = NatsCluster::start(3);
    let nodes = Nodes::start(&nats, 3);
    let seq = consume_surely(&nodes.node(0), "first").await;
    assert_eq!(used(&license(&nodes.node(1), seq).await), 1);
    // One NATS server lost under load: changes go on (after the stream's
    // leader is elected again if it was there: a client retries under one
    // Idempotency-Key, so each change is made once).
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let b = nodes.node(w);
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..20 {
                    last = last.max(consume_surely(&b, &format!("w{w}-{i}")).await);
                }
                last
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    nats.kill(2);
    for w in writers {
        w.await.expect("writer");
    }
    let seq = consume_surely(&nodes.node(1), "after-one-lost").await;
    for i in 0..3 {
        assert_eq!(used(&license(&nodes.node(i), seq).await), 62, "node {i}");
    }
    // Two lost: no quorum. Changes are refused with 503 (in the surface's
    // shape), reads go on.
    nats.kill(1);
    let (status, _, v) = nodes
        .node(0)
        .call_full(
            Method::POST,
            "/v1/licenses/C-0001/features/units/usage",
            &[key(), ("Idempotency-Key", "no-quorum".to_string())],
            Some(json!({ "units": 1 })),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["code"], "unavailable", "{v}");
    assert_eq!(used(&license(&nodes.node(2), seq).await), 62);
    // One comes back: changes come back.
    nats.start_one(1);
    // The refused change's outcome was unknown (a 503): retried under its
    // Idempotency-Key, it is made exactly once, whether or not the first
    // attempt reached the stream before the quorum was lost.
    let seq = consume_surely(&nodes.node(0), "no-quorum").await;
    for i in 0..3 {
        assert_eq!(used(&license(&nodes.node(i), seq).await), 63, "node {i}");
    }
}

/// One unit consumed through `b`, retried under `key` until it is
/// acknowledged (at most 60 s): the change is made exactly once.
async fn consume_surely(b: &Binary, idempotency_key: &str) -> u64 {
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 60 {
        let (status, h, v) = b
            .call_full(
                Method::POST,
                "/v1/licenses/C-0001/features/units/usage",
                &[key(), ("Idempotency-Key", idempotency_key.to_string())],
                Some(json!({ "units": 1 })),
            )
            .await;
        match status {
            200 => return seq_of(&h),
            503 => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            other => panic!("{other}: {v}"),
        }
    }
    panic!("no quorum came back in 60 s");
}

/// Every node holds the webhook outbox; the holder of the delivery lease
/// delivers, each event once; when it dies another node takes the lease
/// (after it expired, 10 s) and delivers what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_delivers_webhooks_and_another_takes_over() {
    if !nats::installed() {
        return;
    }
    let nats = NatsCluster::start(3);
    let mut nodes = Nodes::start(&nats, 3);
    let rx = common::receiver::Receiver::start().await;
    let (status, v) = nodes
        .node(1)
        .call(
            Method::POST,
            "/v1/webhooks",
            &[key()],
            Some(json!({"url": rx.url, "events": ["seats.exhausted", "seats.available"]})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    for i in 0..10 {
        let (status, v) = nodes
            .node(i % 3)
            .call(
                Method::PUT,
                &format!("/v1/licenses/C-0001/features/seat/seats/w{i}"),
                &[key()],
                None,
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].json()["type"],
        "seats.exhausted",
        "{:?}",
        got[0].json()
    );
    rx.settle(1, 2_000).await;
    // The holder of the lease dies; a seat is freed through another node.
    let mut holder = None;
    for i in 0..3 {
        let b = nodes.node(i);
        let (_, c) = b
            .call(
                Method::GET,
                "/admin/v1/cluster",
                &[Binary::admin_header(&b.dir)],
                None,
            )
            .await;
        if c["delivers_webhooks"] == true {
            holder = Some(i);
        }
    }
    let holder = holder.expect("a node delivers");
    nodes.kill(holder);
    let other = (holder + 1) % 3;
    let (status, v) = nodes
        .node(other)
        .call(
            Method::DELETE,
            "/v1/licenses/C-0001/features/seat/seats/w0",
            &[key()],
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status}: {v}");
    let started = std::time::Instant::now();
    while rx.received().len() < 2 {
        assert!(
            started.elapsed().as_secs() < 40,
            "no node took over the deliveries"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let got = rx.received();
    assert_eq!(
        got[1].json()["type"],
        "seats.available",
        "{:?}",
        got[1].json()
    );
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    rx.settle(2, 2_000).await;
}

/// Every vendor surface through any node: each request of each flow goes
/// to the next node in turn (the balancer in `common::spread`, which
/// carries `X-Tally-Min-Seq` as a client of a cluster should): the
/// LicenseSpring Python SDK and Qlik's `@qlik/api`, unchanged (the Node.js
/// SDK's script expects the demo's counts untouched, as the Python one
/// leaves them not: it runs on a single node in its own test);
/// Informatica's login on one node and its session on the others; Yext's
/// and Qlik's seats raced for through all nodes, never over capacity; and
/// every node's digest the same at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_surface_works_through_any_node() {
    if !nats::installed() {
        return;
    }
    let nats = NatsCluster::start(3);
    let nodes = Nodes::start_demo(&nats, 3);
    let spread = Spread::start((0..3).map(|i| nodes.node(i).base.clone()).collect()).await;
    let admin = Binary::admin_header(&nodes.dirs[0]);
    sdks_through_any_node(&nodes, &spread, &admin).await;
    informatica_through_any_node(&spread).await;
    seats_raced_through_all_nodes(&nodes, &spread).await;
    for (i, n) in spread.sent.iter().enumerate() {
        let n = n.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 4, "node {i} got {n} requests");
    }
    // Every node at the same sequence holds the same state.
    let (_, last) = consume_demo(&nodes.node(0)).await;
    let mut digests = Vec::new();
    for i in 0..3 {
        let b = nodes.node(i);
        assert!(
            b.call(
                Method::GET,
                "/healthz",
                &[("X-Tally-Min-Seq", last.to_string())],
                None
            )
            .await
            .0 < 500
        );
        let c = cluster_status(&b).await;
        digests.push((c["digest_seq"].clone(), c["digest"].clone()));
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

/// One unit of the demo's AI credits through `b` (a change to end on).
async fn consume_demo(b: &Binary) -> (u16, u64) {
    let (status, h, v) = b
        .call_full(
            Method::POST,
            "/v1/licenses/DEMO-STUDIO-0001/features/ai-credits/usage",
            &[Binary::demo_bearer()],
            Some(json!({ "units": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    (status, seq_of(&h))
}

/// The vendors' own clients, pointed at the balancer (skipped, with a
/// word, where one is not installed; under CI=true a missing one fails).
async fn sdks_through_any_node(nodes: &Nodes, spread: &Spread, admin: &(&'static str, String)) {
    let b = nodes.node(0);
    // The demo floating license may borrow (the SDK scripts borrow it).
    let (_, list) = b
        .call(
            Method::GET,
            "/admin/v1/licenses?limit=100",
            std::slice::from_ref(admin),
            None,
        )
        .await;
    let id = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["license_key"] == "DEMO-FLOAT-0001"))
        .map(|l| l["id"].clone())
        .expect("DEMO-FLOAT-0001");
    let (status, v) = b
        .call(
            Method::PATCH,
            &format!("/admin/v1/licenses/{id}"),
            std::slice::from_ref(admin),
            Some(json!({"can_borrow": true, "max_borrow_time": 24})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, key) = b
        .call(
            Method::GET,
            "/admin/v1/signing-key",
            std::slice::from_ref(admin),
            None,
        )
        .await;
    let pem_dir = tempfile::tempdir().expect("tempdir");
    let pem = pem_dir.path().join("public.pem");
    std::fs::write(&pem, key["public_key_pem"].as_str().expect("pem")).expect("pem");
    let addr = spread.addr.to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let python = std::env::var("TALLY_SDK_PYTHON").unwrap_or_default();
    if common::client_installed(
        &python,
        "TALLY_SDK_PYTHON=<a python with `pip install licensespring==4.0.0`>",
    ) {
        let out = tokio::process::Command::new(&python)
            .arg(format!("{root}/tests/sdk/licensespring_sdk.py"))
            .env("TALLY_ADDR", &addr)
            .env("TALLY_PUBLIC_KEY_PEM", &pem)
            .output()
            .await
            .expect("python");
        common::assert_client_passed(&out);
    }
    let qlik_dir = format!("{root}/tests/sdk/qlik");
    if common::client_installed(
        &format!("{qlik_dir}/node_modules/@qlik/api"),
        "npm ci --prefix tests/sdk/qlik",
    ) {
        // The two analyzer-time sessions the script reads back, recorded
        // through two nodes.
        let (_, me) = b
            .call(
                Method::GET,
                "/admin/v1/tenants?limit=100",
                std::slice::from_ref(admin),
                None,
            )
            .await;
        let tenant = me["items"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|t| t["name"].as_str().is_some_and(|n| n.contains("Demo")))
            })
            .map(|t| t["id"].clone())
            .expect("demo tenant");
        for (i, (user, minutes)) in [("u1", 7), ("u2", 9)].into_iter().enumerate() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let (status, v) = nodes
                .node(i)
                .call(
                    Method::POST,
                    &format!("/admin/v1/tenants/{tenant}/qlik/sessions"),
                    std::slice::from_ref(admin),
                    Some(json!({"user_id": user, "minutes": minutes})),
                )
                .await;
            assert_eq!(status, 201, "{v}");
        }
        // No TALLY_ADMIN_TOKEN: the script's fault step sets a fault rule,
        // which is per node (ARCHITECTURE.md), through one node.
        let out = tokio::process::Command::new("node")
            .arg(format!("{qlik_dir}/licenses.mjs"))
            .current_dir(&qlik_dir)
            .env("TALLY_ADDR", &addr)
            .env("TALLY_QLIK_API_KEY", "demo-api-key")
            .env("TALLY_QLIK_READONLY_KEY", "demo-readonly-key")
            .output()
            .await
            .expect("node");
        common::assert_client_passed(&out);
    }
}

/// A login through one node; its session reads and writes through the
/// others (sessions are replicated state).
async fn informatica_through_any_node(spread: &Spread) {
    let (status, v) = spread
        .call(
            Method::POST,
            "/saas/public/core/v3/login",
            &[("Content-Type", "application/json".into())],
            Some(json!({"username": "admin@parent.example", "password": "parent-admin-password"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let sid = v["userInfo"]["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    let child = "/saas/public/core/v3/license/org/5SPzPwEFvBEds8LzVwXX4K";
    let session = ("INFA-SESSION-ID", sid);
    let mut etag = String::new();
    for _ in 0..3 {
        let (status, v) = spread
            .call(Method::GET, child, std::slice::from_ref(&session), None)
            .await;
        assert_eq!(status, 200, "{v}");
        etag = v["id"].as_str().map(str::to_string).unwrap_or_default();
    }
    assert!(!etag.is_empty());
    let body = json!({
        "customLicenses": [{"licenseDef": "cluster-test", "expirationDate": "2030-01-01T00:00:00Z", "licenseType": "SUBSCRIPTION"}],
        "assignedEditions": [],
        "customLimits": [{"limitDefinition": "cluster-limit", "value": 7}],
    });
    let (status, v) = spread
        .call(
            Method::PUT,
            child,
            &[session.clone(), ("Content-Type", "application/json".into())],
            Some(body),
        )
        .await;
    assert!(status == 200 || status == 204, "{status}: {v}");
    for _ in 0..3 {
        let (status, v) = spread
            .call(Method::GET, child, std::slice::from_ref(&session), None)
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["customLimits"][0]["value"], 7, "{v}");
    }
}

/// Yext's listings pack (5 seats, 2 taken) and Qlik's professional
/// allotment (10 + 2 overage) raced for by clients spread over the nodes:
/// exactly what is free is granted, and every node counts the same.
async fn seats_raced_through_all_nodes(nodes: &Nodes, spread: &Spread) {
    let yext = "/v2/accounts/1234567/licensepacks";
    let q = "v=20261125&api_key=demo-api-key";
    let mut tasks = Vec::new();
    for i in 0..24 {
        let b = nodes.node(i % 3);
        tasks.push(tokio::spawn(async move {
            let path = format!("{yext}/listings/assignments/race-{i}?{q}");
            b.call(Method::POST, &path, &[], None).await.0
        }));
    }
    let mut granted = 0;
    for t in tasks {
        let status = t.await.expect("client");
        assert!(status == 200 || status == 409, "{status}");
        granted += usize::from(status == 200);
    }
    assert_eq!(granted, 3, "the listings pack had 3 free seats");
    for _ in 0..3 {
        let (status, v) = spread
            .call(Method::GET, &format!("{yext}?{q}"), &[], None)
            .await;
        assert_eq!(status, 200, "{v}");
        let listings = &v["response"]["licensePacks"][0];
        assert_eq!(
            (listings["assigned"].clone(), listings["available"].clone()),
            (json!(5), json!(0)),
            "{v}"
        );
    }
    // Qlik: what the professional allotment has left, raced for.
    let bearer = ("Authorization", "Bearer demo-api-key".to_string());
    let (_, o) = spread
        .call(
            Method::GET,
            "/api/v1/licenses/overview",
            std::slice::from_ref(&bearer),
            None,
        )
        .await;
    let used_before = o["allotments"][0]["unitsUsed"].as_i64().expect("unitsUsed");
    let mut tasks = Vec::new();
    for i in 0..30 {
        let b = nodes.node(i % 3);
        let bearer = bearer.clone();
        tasks.push(tokio::spawn(async move {
            let add = json!({"add": [{"type": "professional", "subject": format!("race\\u{i}")}]});
            let (status, v) = b
                .call(
                    Method::POST,
                    "/api/v1/licenses/assignments/actions/add",
                    &[bearer],
                    Some(add),
                )
                .await;
            assert_eq!(status, 207, "{v}");
            v["data"][0]["status"] == 201
        }));
    }
    let mut granted = 0i64;
    for t in tasks {
        granted += i64::from(t.await.expect("client"));
    }
    assert_eq!(
        used_before + granted,
        12,
        "units 10 + overage 2, taken exactly"
    );
    for _ in 0..3 {
        let (_, o) = spread
            .call(
                Method::GET,
                "/api/v1/licenses/overview",
                std::slice::from_ref(&bearer),
                None,
            )
            .await;
        assert_eq!(o["allotments"][0]["unitsUsed"], 12, "{o}");
    }
}
