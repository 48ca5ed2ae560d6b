//! Kafka's windowed rate (its `SampledStat` + `Rate`): values are summed into
//! `quota.window.num` samples of `quota.window.size.seconds` each; the rate is their sum over
//! the time they span, the span padded to at least `num - 1` full windows (so a new client is
//! not judged on its first burst alone). A violation's throttle time is
//! `(observed - quota) / quota * span`, as Kafka's `QuotaUtils.throttleTime`.

/// quota.window.num and quota.window.size.seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub num: usize,
    pub size_ms: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            num: 11,
            size_ms: 1000,
        }
    }
}

impl Windows {
    /// All windows together: the longest a byte-rate throttle lasts.
    pub fn span_ms(&self) -> u64 {
        self.size_ms * self.num as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// One entity's rate of one quota type.
#[derive(Debug, Clone)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    pub fn new(w: Windows, now_ms: u64) -> Rate {
        Rate {
            samples: vec![Sample {
                start_ms: now_ms,
                value: 0.0,
            }],
            current: 0,
        }
        .with_capacity(w)
    }

    fn with_capacity(mut self, w: Windows) -> Rate {
        self.samples.reserve(w.num.saturating_sub(1));
        self
    }

    /// Adds `value` at `now_ms` (negative: takes back an earlier record).
    pub fn record(&mut self, w: Windows, value: f64, now_ms: u64) {
        let cur = self.samples[self.current];
        if now_ms.saturating_sub(cur.start_ms) >= w.size_ms {
            // advance to the next sample (reusing the oldest once there are `num`)
            self.current = (self.current + 1) % w.num.max(1);
            let fresh = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
    }

    /// Samples older than all windows together count for nothing.
    fn purge(&mut self, w: Windows, now_ms: u64) {
        let expire = w.span_ms();
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.start_ms) >= expire {
                *s = Sample {
                    start_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// The time the rate is taken over, in ms (Kafka's `Rate.windowSize`).
    pub fn window_ms(&mut self, w: Windows, now_ms: u64) -> u64 {
        self.purge(w, now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / w.size_ms.max(1);
        let min_full = w.num.saturating_sub(1) as u64;
        if full < min_full {
            elapsed += (min_full - full) * w.size_ms;
        }
        elapsed.max(1)
    }

    /// Per second.
    pub fn measure(&mut self, w: Windows, now_ms: u64) -> f64 {
        let window = self.window_ms(w, now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (window as f64 / 1000.0)
    }

    /// Records `value` and returns the throttle time in ms it calls for under `quota` (per
    /// second), capped at `cap_ms`; 0 when within the quota.
    pub fn record_and_throttle(
        &mut self,
        w: Windows,
        value: f64,
        quota: f64,
        now_ms: u64,
        cap_ms: u64,
    ) -> u64 {
        self.record(w, value, now_ms);
        let observed = self.measure(w, now_ms);
        if quota <= 0.0 || observed <= quota {
            return 0;
        }
        let window = self.window_ms(w, now_ms) as f64;
        let t = ((observed - quota) / quota * window).round();
        (t as u64).min(cap_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows {
        num: 11,
        size_ms: 1000,
    };

    #[test]
    fn a_new_rate_is_taken_over_at_least_num_minus_one_windows() {
        let mut r = Rate::new(W, 0);
        r.record(W, 10_000.0, 0);
        // 10 windows of padding: 10000 bytes over 10 s
        assert_eq!(r.window_ms(W, 0), 10_000);
        assert!((r.measure(W, 0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn throttle_time_is_the_excess_over_the_quota_times_the_window() {
        let mut r = Rate::new(W, 0);
        // 20000 bytes in the first ms: 2000 B/s against 1000 B/s => (2000-1000)/1000 * 10 s
        let t = r.record_and_throttle(W, 20_000.0, 1000.0, 0, 60_000);
        assert_eq!(t, 10_000);
        // capped
        let mut r = Rate::new(W, 0);
        assert_eq!(r.record_and_throttle(W, 1e9, 1000.0, 0, 11_000), 11_000);
        // within the quota: none
        let mut r = Rate::new(W, 0);
        assert_eq!(r.record_and_throttle(W, 5_000.0, 1000.0, 0, 11_000), 0);
    }

    #[test]
    fn old_samples_expire_and_unrecording_takes_back() {
        let mut r = Rate::new(W, 0);
        r.record(W, 50_000.0, 0);
        assert!(r.measure(W, 500) > 4000.0);
        // after all 11 windows the burst is forgotten
        assert_eq!(r.measure(W, 12_000), 0.0);
        r.record(W, 3000.0, 12_000);
        r.record(W, -3000.0, 12_001);
        assert_eq!(r.measure(W, 12_002), 0.0);
    }

    #[test]
    fn a_steady_rate_is_measured_as_such() {
        let mut r = Rate::new(W, 0);
        // 1000 B every 100 ms for 30 s = 10 kB/s
        let mut t = 0;
        while t < 30_000 {
            r.record(W, 1000.0, t);
            t += 100;
        }
        let m = r.measure(W, t);
        assert!((9_000.0..11_000.0).contains(&m), "{m}");
    }
}
