//! Metrics: what the server counts while it runs, and `GET /metrics`, which
//! writes them in the Prometheus text format (OpenMetrics when the scraper
//! asks for it) through the Prometheus project's own client,
//! `prometheus-client`.
//!
//! The hot path counts into per-thread shards (`hist`): a request takes its
//! shard's mutex, which no other thread wants, and adds to a small map.
//! Labels stay bounded: endpoints are route templates (`routes`), codes
//! come from the surfaces' catalogues, methods and status classes are few;
//! a tenant label only with `--metrics-per-tenant`.
//!
//! # Layout
//! - `mod.rs`: [`Metrics`] (requests, commits, connections, webhook
//!   attempts) and the scrape: [`Metrics::render`] reads them and the
//!   state's gauges (engine, log, snapshots, process) at once;
//! - `hist.rs`: atomic and sharded histograms and counters (the log's
//!   flusher and the server write them);
//! - `routes.rs`: the endpoint of a path, from the OpenAPI documents.

pub mod hist;
pub mod routes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;

use hist::{HistSnapshot, ShardedHistogram, LATENCY_BUCKETS_NS, METRIC_SHARDS};

/// Distinct request series (label sets) counted, at most; past it new
/// ones count under the endpoint `other` and the code `other`.
pub const REQUEST_SERIES_MAX: usize = 20_000;
/// How long a census of the engine (features, devices, seats held: a walk
/// over every license) is reused by scrapes, ms.
pub const CENSUS_REUSE_MS: u64 = 10_000;

/// Every surface's OpenAPI document: the routes' templates.
const OPENAPI_DOCUMENTS: [&str; 5] = [
    include_str!("../../docs/openapi/native.json"),
    include_str!("../../docs/openapi/licensespring.json"),
    include_str!("../../docs/openapi/qlik.json"),
    include_str!("../../docs/openapi/yext.json"),
    include_str!("../../docs/openapi/informatica.json"),
];

/// A request's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub surface: &'static str,
    pub endpoint: &'static str,
    pub method: &'static str,
    /// The status's hundreds (2 for 2xx).
    pub class: u16,
    /// The surface's result code (`ok` for a success).
    pub code: &'static str,
    /// Only with `--metrics-per-tenant`.
    pub tenant: Option<u64>,
}

/// A series' requests and latency histogram (raw counts) under a shard's
/// lock: one entry, found with one hash, per request.
#[derive(Clone, Debug, Default)]
struct Cells {
    requests: u64,
    counts: [u64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: u64,
}

impl Cells {
    fn add(&mut self, ns: u64) {
        self.requests += 1;
        self.counts[LATENCY_BUCKETS_NS.partition_point(|b| *b < ns)] += 1;
        self.sum_ns += ns;
    }

    fn merge(&mut self, other: &Cells) {
        self.requests += other.requests;
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }
}

#[derive(Debug, Default)]
struct RequestShard {
    series: HashMap<RequestKey, Cells, foldhash::fast::RandomState>,
    /// 429 answers by surface.
    rate_limited: HashMap<&'static str, u64, foldhash::fast::RandomState>,
}

/// A surface's requests for the console ([`Metrics::surfaces`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SurfaceSummary {
    pub surface: &'static str,
    pub requests: u64,
    /// 5xx answers.
    pub errors: u64,
    /// (upper bound in seconds, requests in the bucket); the last is +Inf
    /// (written `null` in JSON).
    pub buckets: Vec<(Option<f64>, u64)>,
}

impl SurfaceSummary {
    fn new(surface: &'static str) -> SurfaceSummary {
        let mut buckets: Vec<(Option<f64>, u64)> = LATENCY_BUCKETS_NS
            .iter()
            .map(|b| (Some(*b as f64 / 1e9), 0))
            .collect();
        buckets.push((None, 0));
        SurfaceSummary {
            surface,
            requests: 0,
            errors: 0,
            buckets,
        }
    }
}

/// Webhook attempts' results, in [`WEBHOOK_RESULTS`] order.
pub const WEBHOOK_RESULTS: [&str; 4] = ["delivered", "retrying", "failed", "gone"];

/// What the server counts (one per `App`).
#[derive(Debug)]
pub struct Metrics {
    /// Off (`--no-metrics`): requests and commits are not counted (the
    /// gauges are still read at a scrape).
    pub enabled: bool,
    /// A `tenant` label on request series (`--metrics-per-tenant`).
    pub per_tenant: bool,
    pub routes: routes::Routes,
    /// Per-thread request counts and latencies (each shard's lock is taken
    /// by the threads that map to it: in practice one).
    requests: Box<[CachePadded<Mutex<RequestShard>>]>,
    /// Series counted so far, all shards together (bounds the maps).
    series: AtomicU64,
    /// Time from a change's commit to its durability, ns.
    pub commits: ShardedHistogram,
    pub connections_open: AtomicI64,
    /// Accepts that found every connection slot taken.
    pub connection_limit_hits: AtomicU64,
    pub webhook_attempts: [AtomicU64; 4],
    /// The last census of the engine and when it was taken.
    census: Mutex<Option<(Instant, crate::engine::Census)>>,
}

impl Metrics {
    pub fn new(enabled: bool, per_tenant: bool) -> Metrics {
        Metrics {
            enabled,
            per_tenant,
            routes: routes::Routes::new(&OPENAPI_DOCUMENTS),
            requests: (0..METRIC_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(RequestShard::default())))
                .collect(),
            series: AtomicU64::new(0),
            commits: ShardedHistogram::new(LATENCY_BUCKETS_NS),
            connections_open: AtomicI64::new(0),
            connection_limit_hits: AtomicU64::new(0),
            webhook_attempts: Default::default(),
            census: Mutex::new(None),
        }
    }

    /// Counts a request: its labels, its latency and a 429.
    pub fn request(&self, mut key: RequestKey, status: u16, ns: u64) {
        if !self.enabled {
            return;
        }
        if !self.per_tenant {
            key.tenant = None;
        }
        let mut shard = self.requests[hist::shard_index()].lock();
        let shard = &mut *shard;
        match shard.series.get_mut(&key) {
            Some(cells) => cells.add(ns),
            None => {
                // A new series: past the bound it counts under `other`.
                if self.series.load(Ordering::Relaxed) >= REQUEST_SERIES_MAX as u64 {
                    key.endpoint = "other";
                    key.code = "other";
                    key.tenant = None;
                }
                let cells = shard.series.entry(key).or_insert_with(|| {
                    self.series.fetch_add(1, Ordering::Relaxed);
                    Cells::default()
                });
                cells.add(ns);
            }
        }
        if status == 429 {
            *shard.rate_limited.entry(key.surface).or_insert(0) += 1;
        }
    }

    /// Counts a webhook attempt's result (`WEBHOOK_RESULTS`).
    pub fn webhook_attempt(&self, result: &str) {
        if let Some(i) = WEBHOOK_RESULTS.iter().position(|r| *r == result) {
            self.webhook_attempts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The request series of every shard, added up.
    fn request_totals(&self) -> RequestShard {
        let mut t = RequestShard::default();
        for shard in self.requests.iter() {
            let s = shard.lock();
            for (k, c) in &s.series {
                t.series.entry(*k).or_default().merge(c);
            }
            for (k, v) in &s.rate_limited {
                *t.rate_limited.entry(*k).or_insert(0) += v;
            }
        }
        t
    }

    /// Each surface's requests, errors (5xx) and latency buckets (upper
    /// bound in seconds, count), every endpoint together: the console's
    /// live view.
    pub fn surfaces(&self) -> Vec<SurfaceSummary> {
        let t = self.request_totals();
        let mut by: std::collections::BTreeMap<&'static str, SurfaceSummary> = Default::default();
        for (k, c) in &t.series {
            let s = by
                .entry(k.surface)
                .or_insert_with(|| SurfaceSummary::new(k.surface));
            s.requests += c.requests;
            if k.class == 5 {
                s.errors += c.requests;
            }
            for (b, n) in s.buckets.iter_mut().zip(c.counts.iter()) {
                b.1 += n;
            }
        }
        by.into_values().collect()
    }

    /// The engine's census, taken at most every [`CENSUS_REUSE_MS`] (it
    /// walks every license: scrapes and the console's polls share one).
    pub fn census(
        &self,
        engine: &crate::engine::Engine,
        now: crate::engine::time::Millis,
    ) -> crate::engine::Census {
        let mut slot = self.census.lock();
        if let Some((at, c)) = &*slot {
            if at.elapsed().as_millis() < u128::from(CENSUS_REUSE_MS) {
                return c.clone();
            }
        }
        let c = engine.census(now);
        *slot = Some((Instant::now(), c.clone()));
        c
    }

    /// Everything, in OpenMetrics 1.0 text (`openmetrics`), else in the
    /// Prometheus text format 0.0.4.
    pub fn render(&self, app: &crate::app::App, openmetrics: bool) -> String {
        let mut families = Vec::new();
        self.request_families(&mut families);
        self.state_families(app, &mut families);
        let counters: Vec<&'static str> = families
            .iter()
            .filter(|f| matches!(f.kind, MetricType::Counter))
            .map(|f| f.name)
            .collect();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition(families)));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        if openmetrics {
            out
        } else {
            text_004(&out, &counters)
        }
    }

    fn request_families(&self, out: &mut Vec<Family>) {
        let RequestShard {
            series,
            rate_limited: limited,
        } = self.request_totals();
        // Latency by surface and endpoint (and tenant): every code together.
        let mut latency: HashMap<(&'static str, &'static str, Option<u64>), Cells> = HashMap::new();
        for (k, c) in &series {
            latency
                .entry((k.surface, k.endpoint, k.tenant))
                .or_default()
                .merge(c);
        }
        let mut requests = Family::counter(
            "tally_requests",
            "Requests answered, by surface, endpoint (route template), method, status class and result code",
        );
        let mut refusals: HashMap<&'static str, u64> = HashMap::new();
        for (k, c) in &series {
            let v = &c.requests;
            let mut labels = vec![
                ("surface", k.surface.to_string()),
                ("endpoint", k.endpoint.to_string()),
                ("method", k.method.to_string()),
                ("status_class", format!("{}xx", k.class)),
                ("code", k.code.to_string()),
            ];
            if let Some(t) = k.tenant {
                labels.push(("tenant", t.to_string()));
            }
            requests.push(labels, Value::Int(*v));
            if k.class == 4 {
                *refusals.entry(k.code).or_insert(0) += v;
            }
        }
        out.push(requests.sorted());
        let mut refused = Family::counter(
            "tally_refusals",
            "Requests refused (4xx), by the surface's result code",
        );
        for (code, v) in refusals {
            refused.push(vec![("code", code.to_string())], Value::Int(v));
        }
        out.push(refused.sorted());
        let mut limited_f = Family::counter(
            "tally_rate_limited",
            "Answers 429 (a vendor's emulated rate limit), by surface",
        );
        for (s, v) in limited {
            limited_f.push(vec![("surface", s.to_string())], Value::Int(v));
        }
        out.push(limited_f.sorted());
        let mut durations = Family::histogram(
            "tally_request_duration_seconds",
            "Time from a request's head to its answer, by surface and endpoint",
        );
        for ((surface, endpoint, tenant), c) in latency {
            let mut labels = vec![
                ("surface", surface.to_string()),
                ("endpoint", endpoint.to_string()),
            ];
            if let Some(t) = tenant {
                labels.push(("tenant", t.to_string()));
            }
            let snap = hist::snapshot_of(LATENCY_BUCKETS_NS, &c.counts, c.sum_ns, 1e9);
            durations.push(labels, Value::Hist(snap));
        }
        out.push(durations.sorted());
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one family after another, each a few lines, in the order the docs list them"
    )]
    fn state_families(&self, app: &crate::app::App, out: &mut Vec<Family>) {
        let gauge = |name: &'static str, help: &'static str, v: Value| {
            let mut f = Family::gauge(name, help);
            f.push(Vec::new(), v);
            f
        };
        let mut objects = Family::gauge("tally_objects", "Objects in the engine, by kind");
        for (kind, n) in app.engine.stats() {
            objects.push(vec![("kind", kind.to_string())], Value::Int(n as u64));
        }
        let census = self.census(&app.engine, app.now());
        for (kind, n) in [
            ("features", census.features),
            ("devices", census.devices),
            ("webhooks", census.webhooks),
        ] {
            objects.push(vec![("kind", kind.to_string())], Value::Int(n));
        }
        out.push(objects);
        let (made, made_s) = app.signer.made();
        let mut f = Family::counter(
            "tally_signatures",
            "Response signatures computed (RSA-2048; answers whose signature was cached are not counted)",
        );
        f.push(Vec::new(), Value::Int(made));
        out.push(f);
        let mut f = Family::counter(
            "tally_signature_seconds",
            "Time spent computing response signatures",
        );
        f.push(Vec::new(), Value::Float(made_s));
        out.push(f);
        let mut f = Family::counter(
            "tally_signatures_on_request_thread",
            "Signatures made on a request's thread because the signing threads' queue was full",
        );
        f.push(Vec::new(), Value::Int(app.signer.overflowed()));
        out.push(f);
        out.push(gauge(
            "tally_signatures_cached",
            "Response signatures held in the cache by body hash",
            Value::Int(app.signer.cached() as u64),
        ));
        let (kept, bytes, max) = app.signer.stamped_usage();
        out.push(gauge(
            "tally_signed_answers_kept",
            "Feature answers whose signature is kept (filled in the background; --signature-cache-mb)",
            Value::Int(kept as u64),
        ));
        out.push(gauge(
            "tally_signed_answers_max",
            "Feature answers the signature cache's budget holds",
            Value::Int(max as u64),
        ));
        out.push(gauge(
            "tally_signature_cache_bytes",
            "Memory the kept signatures take (apart from the engine's)",
            Value::Int(bytes as u64),
        ));
        out.push(gauge(
            "tally_floating_seats_held",
            "Floating seats held (license and feature pools)",
            Value::Int(census.floating_held),
        ));
        out.push(gauge(
            "tally_meters_near_cap",
            "Meters at 80 % of their cap or more in their current period",
            Value::Int(census.meters_near_cap),
        ));
        out.push(gauge(
            "tally_reservations_open",
            "Reservations (units and seats) pending",
            Value::Int(census.reservations_open),
        ));
        out.push(gauge(
            "tally_webhook_queue_depth",
            "Webhook deliveries waiting in the outbox",
            Value::Int(census.webhook_pending),
        ));
        let mut attempts = Family::counter(
            "tally_webhook_attempts",
            "Webhook delivery attempts, by result",
        );
        for (i, r) in WEBHOOK_RESULTS.iter().enumerate() {
            attempts.push(
                vec![("result", r.to_string())],
                Value::Int(self.webhook_attempts[i].load(Ordering::Relaxed)),
            );
        }
        out.push(attempts);
        let mut commits = Family::histogram(
            "tally_log_commit_duration_seconds",
            "Time from a change's apply to its durability (the wait of an acknowledged change)",
        );
        commits.push(Vec::new(), Value::Hist(self.commits.snapshot(1e9)));
        out.push(commits);
        if let Some(store) = &app.store {
            store_families(store, out);
        }
        out.push(gauge(
            "tally_process_resident_memory_bytes",
            "Resident memory of the process",
            Value::Int(resident_bytes()),
        ));
        out.push(gauge(
            "tally_connections_open",
            "Client connections open",
            Value::Int(self.connections_open.load(Ordering::Relaxed).max(0) as u64),
        ));
        let mut faults = Family::counter(
            "tally_faults_injected",
            "Requests a fault rule of the harness answered, delayed, closed or slowed, by rule",
        );
        for a in app.faults.rules().iter() {
            faults.push(
                vec![("rule", a.rule.id.clone())],
                Value::Int(a.hits.load(Ordering::Relaxed)),
            );
        }
        out.push(faults);
        let mut hits = Family::counter(
            "tally_connection_limit_hits",
            "Accepts that found every connection slot taken (--connections-max)",
        );
        hits.push(
            Vec::new(),
            Value::Int(self.connection_limit_hits.load(Ordering::Relaxed)),
        );
        out.push(hits);
    }
}

/// The log's and snapshots' series.
fn store_families(store: &crate::storage::store::Store, out: &mut Vec<Family>) {
    let m = store.log.metrics();
    let mut f = Family::histogram(
        "tally_log_fsync_duration_seconds",
        "Time of each fdatasync of the write-ahead log",
    );
    f.push(Vec::new(), Value::Hist(m.fsync.snapshot(1e9)));
    out.push(f);
    let mut f = Family::histogram(
        "tally_log_group_commit_records",
        "Records written by one group commit",
    );
    f.push(Vec::new(), Value::Hist(m.records.snapshot(1.0)));
    out.push(f);
    let mut f = Family::histogram(
        "tally_log_group_commit_bytes",
        "Bytes written by one group commit",
    );
    f.push(Vec::new(), Value::Hist(m.bytes.snapshot(1.0)));
    out.push(f);
    let mut f = Family::counter(
        "tally_log_group_commits",
        "Group commits that wrote records, by writer: a request's runtime thread (a waiting leader, or an idle one under --fsync always) or the flusher thread",
    );
    for (writer, n) in [("runtime", &m.by_runtime), ("flusher", &m.by_flusher)] {
        f.push(
            vec![("writer", writer.to_string())],
            Value::Int(n.load(Ordering::Relaxed)),
        );
    }
    out.push(f);
    let mut f = Family::gauge(
        "tally_log_latched",
        "1 when a storage failure stopped the log (changes are refused)",
    );
    f.push(Vec::new(), Value::Int(u64::from(store.log.is_latched())));
    out.push(f);
    let s = store.stats();
    for (name, help, v) in [
        (
            "tally_snapshot_duration_seconds",
            "Time the last successful snapshot took",
            Value::Float(s.last_snapshot_ms as f64 / 1e3),
        ),
        (
            "tally_snapshot_bytes",
            "Size of the last successful snapshot",
            Value::Int(s.last_snapshot_bytes),
        ),
        (
            "tally_snapshot_last_success_timestamp_seconds",
            "When the last snapshot succeeded (Unix time; 0: none since start)",
            Value::Float(s.last_snapshot_at_ms as f64 / 1e3),
        ),
        (
            "tally_recovery_duration_seconds",
            "Time the start took to rebuild the state from the data directory",
            Value::Float(s.recovery_ms as f64 / 1e3),
        ),
    ] {
        let mut f = Family::gauge(name, help);
        f.push(Vec::new(), v);
        out.push(f);
    }
    let mut f = Family::counter("tally_snapshots", "Snapshots written, by result");
    f.push(vec![("result", "ok".into())], Value::Int(s.snapshots_ok));
    f.push(
        vec![("result", "failed".into())],
        Value::Int(s.snapshots_failed),
    );
    out.push(f);
}

/// The Prometheus text format 0.0.4 of OpenMetrics text, which differs in
/// two things this exposition uses: a counter's HELP and TYPE name its
/// samples (`x_total`, where OpenMetrics names the family `x`), and there is
/// no `# EOF`. (`prometheus-client` writes OpenMetrics only; this renames,
/// it does not encode.)
fn text_004(openmetrics: &str, counters: &[&str]) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Resident memory from `/proc/self/statm` (0 where it cannot be read).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages * 4096
}

/// A sample's value.
#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Float(f64),
    Hist(HistSnapshot),
}

/// One metric family as the scrape writes it.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricType::Counter,
            samples: Vec::new(),
        }
    }
    fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            kind: MetricType::Gauge,
            ..Family::counter(name, help)
        }
    }
    fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            kind: MetricType::Histogram,
            ..Family::counter(name, help)
        }
    }
    fn push(&mut self, labels: Vec<(&'static str, String)>, v: Value) {
        self.samples.push((labels, v));
    }
    /// Samples in label order (a stable exposition).
    fn sorted(mut self) -> Family {
        self.samples.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }
}

/// The scrape's families, handed to `prometheus-client` to encode.
#[derive(Debug)]
struct Exposition(Vec<Family>);

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            if let [(labels, v)] = f.samples.as_slice() {
                if labels.is_empty() {
                    Sample(v, f.kind).encode(metric)?;
                    continue;
                }
            }
            for (labels, v) in &f.samples {
                Sample(v, f.kind).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// A value with its family's type.
#[derive(Debug)]
struct Sample<'a>(&'a Value, MetricType);

impl EncodeMetric for Sample<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match (self.0, self.1) {
            (Value::Int(v), MetricType::Counter) => {
                encoder.encode_counter::<NoLabelSet, _, u64>(v, None)
            }
            (Value::Float(v), MetricType::Counter) => {
                encoder.encode_counter::<NoLabelSet, _, f64>(v, None)
            }
            (Value::Int(v), _) => encoder.encode_gauge(&(*v as i64)),
            (Value::Float(v), _) => encoder.encode_gauge(v),
            (Value::Hist(h), _) => {
                encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        self.1
    }
}
