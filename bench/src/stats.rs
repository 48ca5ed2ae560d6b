//! Counters and latency histograms shared by loadgen's threads, and the run clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch from one wall-clock reading plus a monotonic clock, so
/// times taken on different threads of the run are comparable and never go backwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall0_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let wall0_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            start: Instant::now(),
            wall0_us,
        }
    }

    /// Now, in microseconds since the Unix epoch.
    #[inline]
    pub fn now_us(&self) -> u64 {
        self.wall0_us + self.start.elapsed().as_micros() as u64
    }

    /// When the clock was made, in microseconds since the Unix epoch.
    pub fn start_us(&self) -> u64 {
        self.wall0_us
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A latency histogram in microseconds, 3 significant digits, 1 us to 1 minute to start with,
/// growing if needed.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("1 us..60 s at 3 significant digits is a valid histogram");
    h.auto(true);
    h
}

/// Records `v` (us); values below 1 us count as 1 us.
#[inline]
pub fn record(h: &mut Histogram<u64>, v: u64) {
    // cannot fail: auto-resize is on and u64 counts do not overflow in a run
    let _ = h.record(v.max(1));
}

/// Marks a message left out of the latency figures (warm-up).
pub const WARMUP: u64 = u64::MAX;

/// Everything the threads of one run update.
pub struct Stats {
    /// Messages handed to the producers.
    pub enqueued: AtomicU64,
    /// Messages acknowledged (warm-up included).
    pub acked: AtomicU64,
    /// Acknowledged messages and value bytes after the warm-up.
    pub measured_acked: AtomicU64,
    pub measured_bytes: AtomicU64,
    /// First enqueue after the warm-up and the last acknowledgement (us since the epoch).
    pub measure_start_us: AtomicU64,
    pub last_ack_us: AtomicU64,
    /// Messages whose produce failed.
    pub failed: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// When the first consumer started reading, and when the last message was read.
    pub first_consume_us: AtomicU64,
    pub last_consume_us: AtomicU64,
    /// Interval histograms: the monitor takes them every second.
    pub produce_interval: Mutex<Histogram<u64>>,
    pub e2e_interval: Mutex<Histogram<u64>>,
    /// Transactional mode: round trips of EndTxn (commit) and of AddPartitionsToTxn (us), and
    /// the transactions committed.
    pub commit: Mutex<Histogram<u64>>,
    pub add_partitions: Mutex<Histogram<u64>>,
    pub transactions: AtomicU64,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            enqueued: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            measured_acked: AtomicU64::new(0),
            measured_bytes: AtomicU64::new(0),
            measure_start_us: AtomicU64::new(u64::MAX),
            last_ack_us: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            first_consume_us: AtomicU64::new(u64::MAX),
            last_consume_us: AtomicU64::new(0),
            produce_interval: Mutex::new(new_histogram()),
            e2e_interval: Mutex::new(new_histogram()),
            commit: Mutex::new(new_histogram()),
            add_partitions: Mutex::new(new_histogram()),
            transactions: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            error_count: AtomicU64::new(0),
        }
    }

    /// Records an error (the first 20 are kept verbatim).
    pub fn error(&self, e: impl Into<String>) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 20 {
                v.push(e.into());
            }
        }
    }

    pub fn errors(&self) -> (u64, Vec<String>) {
        let v = self.errors.lock().map(|v| v.clone()).unwrap_or_default();
        (self.error_count.load(Ordering::Relaxed), v)
    }

    /// Takes the produce and e2e interval histograms, leaving empty ones.
    pub fn take_intervals(&self) -> (Histogram<u64>, Histogram<u64>) {
        let take = |m: &Mutex<Histogram<u64>>| match m.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, new_histogram()),
            Err(_) => new_histogram(),
        };
        (take(&self.produce_interval), take(&self.e2e_interval))
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// `a.fetch_min(v)` for an AtomicU64.
pub fn atomic_min(a: &AtomicU64, v: u64) {
    a.fetch_min(v, Ordering::Relaxed);
}

pub fn atomic_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}
