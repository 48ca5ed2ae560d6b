//! The log cleaner's keys: the topic configs of compacted topics (cleanup.policy,
//! delete.retention.ms, min/max.compaction.lag.ms, min.cleanable.dirty.ratio) and the
//! broker's log.cleaner.* settings.

use sluice_engine::{CleanerConfig, CleanupPolicy, LogConfig};

use super::{bad, parse_num, ConfigError};

/// The compaction topic configs; `Ok(false)` for any other key.
pub(super) fn apply_topic_config(
    base: &mut LogConfig,
    key: &str,
    value: &str,
) -> Result<bool, ConfigError> {
    match key {
        "cleanup.policy" => base.cleanup = parse_cleanup_policy(key, value)?,
        "delete.retention.ms" => {
            let v: i64 = parse_num(key, value)?;
            if v < 0 {
                return Err(bad(key, value, "must be >= 0"));
            }
            base.compaction.delete_retention_ms = v as u64;
        }
        "min.compaction.lag.ms" => {
            let v: i64 = parse_num(key, value)?;
            if v < 0 {
                return Err(bad(key, value, "must be >= 0"));
            }
            base.compaction.min_lag_ms = v as u64;
        }
        "max.compaction.lag.ms" => {
            let v: i64 = parse_num(key, value)?;
            if v < 1 {
                return Err(bad(key, value, "must be >= 1"));
            }
            base.compaction.max_lag_ms = (v != i64::MAX).then_some(v as u64);
        }
        "min.cleanable.dirty.ratio" => {
            let v: f64 = parse_num(key, value)?;
            base.compaction.min_dirty_ratio = sluice_engine::DirtyRatio::new(v)
                .ok_or_else(|| bad(key, value, "must be between 0 and 1"))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `cleanup.policy`: a list of `delete` and `compact` (Kafka's), each at most once.
pub fn parse_cleanup_policy(key: &str, value: &str) -> Result<CleanupPolicy, ConfigError> {
    let mut p = CleanupPolicy {
        delete: false,
        compact: false,
    };
    for item in value.split(',').map(str::trim) {
        let seen = match item {
            "delete" => std::mem::replace(&mut p.delete, true),
            "compact" => std::mem::replace(&mut p.compact, true),
            "" => {
                return Err(bad(
                    key,
                    value,
                    "expected delete, compact or compact,delete",
                ))
            }
            other => {
                return Err(bad(
                    key,
                    value,
                    format!("{other:?} is not a cleanup policy (delete or compact)"),
                ))
            }
        };
        if seen {
            return Err(bad(key, value, format!("{item} is listed twice")));
        }
    }
    Ok(p)
}

/// The text of a cleanup policy, as DescribeConfigs shows it.
pub fn cleanup_policy_text(p: CleanupPolicy) -> &'static str {
    match (p.compact, p.delete) {
        (true, true) => "compact,delete",
        (true, false) => "compact",
        _ => "delete",
    }
}

/// Checks between topic configs (Kafka's LogConfig.validateValues).
pub fn check_topic_config(c: &LogConfig) -> Result<(), ConfigError> {
    let lag = c.compaction;
    if let Some(max) = lag.max_lag_ms {
        if lag.min_lag_ms > max {
            return Err(bad(
                "min.compaction.lag.ms",
                &lag.min_lag_ms.to_string(),
                format!("must not be greater than max.compaction.lag.ms {max}"),
            ));
        }
    }
    Ok(())
}

/// The broker's log cleaner (log.cleaner.* keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerSettings {
    /// log.cleaner.enable
    pub enable: bool,
    /// log.cleaner.io.max.bytes.per.second (`None`: unlimited, Kafka's Double.MAX default),
    /// shared by the shards
    pub io_max_bytes_per_sec: Option<u64>,
    /// log.cleaner.dedupe.buffer.size: total over all shards (each gets its share)
    pub dedupe_buffer_bytes: u64,
    /// log.cleaner.backoff.ms: pause of a shard's cleaner when no log needs cleaning
    pub backoff_ms: u64,
}

impl Default for CleanerSettings {
    fn default() -> Self {
        CleanerSettings {
            enable: true,
            io_max_bytes_per_sec: None,
            dedupe_buffer_bytes: 128 << 20,
            backoff_ms: 15_000,
        }
    }
}

impl CleanerSettings {
    /// The engine's cleaner settings of one of `shards` shards.
    pub fn per_shard(&self, shards: usize, max_message_bytes: usize) -> CleanerConfig {
        let n = shards.max(1) as u64;
        CleanerConfig {
            io_bytes_per_sec: self.io_max_bytes_per_sec.map(|r| (r / n).max(1)),
            dedupe_buffer_bytes: (self.dedupe_buffer_bytes / n) as usize,
            max_inflate_bytes: max_message_bytes.saturating_mul(32).max(16 << 20),
        }
    }
}
