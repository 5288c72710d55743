//! Metric primitives: counters, gauges and histograms made of relaxed atomics.
//!
//! Each core owns its own instances (no cache line is written by two cores);
//! the scrape thread only reads them and sums across cores. A counter written
//! by one thread uses a plain load and store rather than a locked add, which
//! costs the same as incrementing an ordinary integer.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A monotonically increasing count, written by one thread at a time.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Single-writer: only the owning thread may call it.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Single-writer: only the owning thread may call it.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds `n` from any thread (for counters shared by several writers).
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, written by one thread at a time.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    pub fn add(&self, d: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(d), Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds (seconds) of the latency buckets every histogram uses.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with the fixed [`BUCKETS`] (plus the implicit +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation. Single-writer.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let c = &self.counts[i];
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns
            .store(self.sum_ns.load(Relaxed).wrapping_add(ns), Relaxed);
    }

    /// Records one observation from any thread.
    pub fn observe_shared(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Non-cumulative bucket counts (last = +Inf) and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; BUCKETS.len() + 1], f64) {
        let mut out = [0u64; BUCKETS.len() + 1];
        for (o, c) in out.iter_mut().zip(self.counts.iter()) {
            *o = c.load(Relaxed);
        }
        (out, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_observations_in_the_right_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (b, sum) = h.snapshot();
        assert_eq!(b[0], 1);
        assert_eq!(b[5], 1); // 0.005
        assert_eq!(b[BUCKETS.len()], 1);
        assert!((sum - 10.00305).abs() < 1e-9);
    }

    #[test]
    fn counters_add() {
        let c = Counter::default();
        c.inc();
        c.add(4);
        c.add_shared(5);
        assert_eq!(c.get(), 10);
        let g = Gauge::default();
        g.add(3);
        g.add(-1);
        assert_eq!(g.get(), 2);
    }
}
