//! Histograms and counters the hot path and the log's flusher write: plain
//! atomics, and per-thread shards of them (cache-line padded) where many
//! threads write, so that two threads never fight over one line. A scrape
//! adds the shards up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Latency buckets (upper bounds), ns: 10 us to 1 s.
pub const LATENCY_BUCKETS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Records per group commit: 1 to 16,384.
pub const RECORDS_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16_384];

/// Bytes per group commit: 256 B to 16 MiB.
pub const BYTES_BUCKETS: &[u64] = &[
    256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
];

/// Shards of the sharded metrics (threads past it share).
pub const METRIC_SHARDS: usize = 16;

/// This thread's shard (threads take them in turn at their first use).
pub fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % METRIC_SHARDS;
    }
    INDEX.with(|i| *i)
}

/// A histogram's sums, as a scrape reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistSnapshot {
    /// (upper bound, count in the bucket), the last bound `f64::MAX` (the
    /// `+Inf` bucket), as `prometheus-client` takes them (it adds them up).
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// One writer's (or a few writers') histogram: atomics, no lock.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, and one past the last.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into` (raw counts per bucket, sum).
    fn add_to(&self, counts: &mut [u64], sum: &mut u64) {
        for (c, a) in counts.iter_mut().zip(self.counts.iter()) {
            *c += a.load(Ordering::Relaxed);
        }
        *sum += self.sum.load(Ordering::Relaxed);
    }

    /// The sums, with values divided by `scale` (1e9 for ns to seconds).
    pub fn snapshot(&self, scale: f64) -> HistSnapshot {
        let mut counts = vec![0; self.bounds.len() + 1];
        let mut sum = 0;
        self.add_to(&mut counts, &mut sum);
        snapshot_of(self.bounds, &counts, sum, scale)
    }
}

/// Buckets from raw counts (`scale` divides the bounds and the sum).
pub fn snapshot_of(bounds: &[u64], counts: &[u64], sum: u64, scale: f64) -> HistSnapshot {
    let mut buckets = Vec::with_capacity(counts.len());
    let mut total = 0;
    for (i, c) in counts.iter().enumerate() {
        total += c;
        let le = bounds.get(i).map_or(f64::MAX, |b| *b as f64 / scale);
        buckets.push((le, *c));
    }
    HistSnapshot {
        buckets,
        sum: sum as f64 / scale,
        count: total,
    }
}

/// A histogram many threads write: a [`Histogram`] per shard.
#[derive(Debug)]
pub struct ShardedHistogram {
    bounds: &'static [u64],
    shards: Box<[CachePadded<Histogram>]>,
}

impl ShardedHistogram {
    pub fn new(bounds: &'static [u64]) -> ShardedHistogram {
        ShardedHistogram {
            bounds,
            shards: (0..METRIC_SHARDS)
                .map(|_| CachePadded::new(Histogram::new(bounds)))
                .collect(),
        }
    }

    pub fn observe(&self, v: u64) {
        self.shards[shard_index()].observe(v);
    }

    pub fn snapshot(&self, scale: f64) -> HistSnapshot {
        let mut counts = vec![0; self.bounds.len() + 1];
        let mut sum = 0;
        for s in self.shards.iter() {
            s.add_to(&mut counts, &mut sum);
        }
        snapshot_of(self.bounds, &counts, sum, scale)
    }
}

/// A counter many threads add to: one cell per shard.
#[derive(Debug)]
pub struct ShardedCounter {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter {
            shards: (0..METRIC_SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl ShardedCounter {
    pub fn add(&self, n: u64) {
        self.shards[shard_index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_their_values_and_end_at_inf() {
        let h = ShardedHistogram::new(LATENCY_BUCKETS_NS);
        for v in [5_000, 10_000, 10_001, 2_000_000_000] {
            h.observe(v);
        }
        let s = h.snapshot(1e9);
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (1e-5, 2), "10 us is in the first bucket");
        assert_eq!(s.buckets[1].1, 1);
        assert_eq!(s.buckets.last(), Some(&(f64::MAX, 1)), "past 1 s: +Inf");
        assert!((s.sum - 2.000_025_001).abs() < 1e-9);
    }
}
