//! Counters the broker exports as metrics: plain `Cell`s owned by one shard (no atomics on
//! the data path), read as [`Send`] snapshots when someone scrapes.
//!
//! Where they are bumped: [`PartitionLog`](crate::PartitionLog) counts per log what producers
//! appended ([`LogCounters`]); the logs of one shard share one
//! [`StorageStats`] (through [`LogEnv`](crate::LogEnv)) for the flusher's writes and
//! fdatasyncs and the hot tail's hits and misses.

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; a last, implicit bucket is +Inf.
/// 25 us to 10 s: fdatasyncs on this class of disk take 0.1-5 ms, requests 10 us-1 s.
pub const LATENCY_BOUNDS_S: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS: usize = LATENCY_BOUNDS_S.len() + 1;

/// A latency histogram with fixed buckets ([`LATENCY_BOUNDS_S`]). Not cumulative inside;
/// the snapshot gives what Prometheus wants.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [Cell<u64>; BUCKETS],
    sum_ns: Cell<u64>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS_S.partition_point(|&b| b < s);
        let c = &self.counts[i];
        c.set(c.get() + 1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_ns: self.sum_ns.get(),
        }
    }
}

/// A histogram at one instant: the count of each bucket of [`LATENCY_BOUNDS_S`] (plus +Inf),
/// not cumulative, and the sum of the observations.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Adds another shard's histogram of the same buckets.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// `(upper bound, cumulative count)` per finite bucket, as Prometheus' `_bucket{le=..}`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BOUNDS_S
            .iter()
            .zip(&self.counts)
            .map(|(&b, &c)| {
                total += c;
                (b, total)
            })
            .collect()
    }

    /// The value below which `q` (0..=1) of the observations fall, as the upper bound of
    /// the bucket that holds it (None without observations; +Inf as the largest bound).
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_S.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

/// Storage counters of one shard, shared by its logs.
#[derive(Debug, Default)]
pub struct StorageStats {
    writes: Cell<u64>,
    bytes_written: Cell<u64>,
    syncs: Cell<u64>,
    sync_latency: Histogram,
    hot_hits: Cell<u64>,
    hot_misses: Cell<u64>,
}

/// [`StorageStats`] at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageSnapshot {
    /// O_DIRECT segment writes completed.
    pub writes: u64,
    /// New log bytes those writes stored (rewritten partial pages not counted twice).
    pub bytes_written: u64,
    /// fdatasyncs of segment files completed (group syncs and seals).
    pub syncs: u64,
    pub sync_latency: HistogramSnapshot,
    /// Reads served from the hot tail (memory) and from segment files.
    pub hot_hits: u64,
    pub hot_misses: u64,
}

impl StorageStats {
    pub(crate) fn on_write(&self, new_bytes: u64) {
        bump(&self.writes, 1);
        bump(&self.bytes_written, new_bytes);
    }

    pub(crate) fn on_sync(&self, took: Duration) {
        bump(&self.syncs, 1);
        self.sync_latency.observe(took);
    }

    pub(crate) fn on_read(&self, from_memory: bool) {
        bump(
            if from_memory {
                &self.hot_hits
            } else {
                &self.hot_misses
            },
            1,
        );
    }

    pub fn snapshot(&self) -> StorageSnapshot {
        StorageSnapshot {
            writes: self.writes.get(),
            bytes_written: self.bytes_written.get(),
            syncs: self.syncs.get(),
            sync_latency: self.sync_latency.snapshot(),
            hot_hits: self.hot_hits.get(),
            hot_misses: self.hot_misses.get(),
        }
    }
}

impl StorageSnapshot {
    pub fn merge(&mut self, o: &StorageSnapshot) {
        self.writes += o.writes;
        self.bytes_written += o.bytes_written;
        self.syncs += o.syncs;
        self.sync_latency.merge(&o.sync_latency);
        self.hot_hits += o.hot_hits;
        self.hot_misses += o.hot_misses;
    }
}

/// What producers appended to one log since it was opened.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    pub messages_in: Cell<u64>,
    pub bytes_in: Cell<u64>,
    /// New bytes the flusher wrote, and how many of them an fdatasync covered.
    pub bytes_written: Cell<u64>,
    pub bytes_synced: Cell<u64>,
}

impl LogCounters {
    pub fn on_produce(&self, records: u64, bytes: u64) {
        bump(&self.messages_in, records);
        bump(&self.bytes_in, bytes);
    }

    /// An fdatasync covered everything written when it started (`written` bytes).
    pub fn mark_synced(&self, written: u64) {
        self.bytes_synced.set(self.bytes_synced.get().max(written));
    }
}

/// One log's numbers at one instant ([`PartitionLog::stats`](crate::PartitionLog::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    pub log_start: u64,
    pub high_watermark: u64,
    pub log_end: u64,
    /// Bytes of the segment files (logical sizes).
    pub size_bytes: u64,
    pub segments: u64,
    /// Records producers appended (not replicated copies or transaction markers) and the
    /// bytes of their batches, since the log was opened.
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Appended bytes no fdatasync covers yet (in the write buffer or written only).
    pub unsynced_bytes: u64,
    pub poisoned: bool,
    /// Waiting for disk space: appends are refused, the flusher retries.
    pub disk_full: bool,
    /// How many times the log started waiting for disk space since it was opened.
    pub disk_full_stalls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10)); // <= 25 us
        h.observe(Duration::from_micros(25)); // <= 25 us (bounds are inclusive)
        h.observe(Duration::from_millis(3)); // <= 5 ms
        h.observe(Duration::from_secs(20)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[7], 1);
        assert_eq!(s.counts[BUCKETS - 1], 1);
        let cum = s.cumulative();
        assert_eq!(cum.len(), LATENCY_BOUNDS_S.len());
        assert_eq!(cum[0], (0.000_025, 2));
        assert_eq!(cum.last().map(|c| c.1), Some(3));
        assert_eq!(s.quantile_upper_bound(0.5), Some(0.000_025));
        assert_eq!(s.quantile_upper_bound(0.75), Some(0.005));
        assert_eq!(s.quantile_upper_bound(1.0), Some(f64::INFINITY));
        assert!((s.sum_seconds() - 20.003_035).abs() < 1e-9);
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 8);
        assert_eq!(m.sum_ns, 2 * s.sum_ns);
    }
}
