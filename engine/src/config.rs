//! Per-partition log settings, named after Kafka's topic configs.

use serde::{Deserialize, Serialize};

/// Settings of one partition log. Field names follow Kafka's topic configs
/// (`segment.bytes` is `segment_bytes`, ...). `None` means "never" where Kafka uses Long.MAX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// segment.bytes: roll to a new segment before a batch would grow the active one past this.
    pub segment_bytes: u64,
    /// segment.ms: roll a non-empty active segment once it is this old.
    pub segment_ms: Option<u64>,
    /// index.interval.bytes: at least this many log bytes between two sparse index entries.
    pub index_interval_bytes: u64,
    /// flush.messages: fdatasync once this many messages are unsynced (Kafka's meaning).
    pub flush_messages: Option<u64>,
    /// flush.ms: fdatasync data that has stayed unsynced this long.
    pub flush_ms: Option<u64>,
    /// retention.ms: delete whole segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// retention.bytes: delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// max.message.bytes: the largest batch accepted.
    pub max_message_bytes: usize,
    /// Preallocate segment files in steps of this many bytes (0 disables; the default, as in
    /// Kafka: measured slower for O_DIRECT appends on ext4, see results/README.md).
    pub preallocate_bytes: u64,
    /// Bound on bytes appended but not yet handed to the writer; appends wait beyond it.
    pub write_buffer_bytes: usize,
    /// Recent batches kept in memory to serve tailing consumers without disk reads.
    pub hot_cache_bytes: usize,
    /// cleanup.policy: delete (retention), compact (the log cleaner), or both.
    #[serde(default)]
    pub cleanup: CleanupPolicy,
    /// The log cleaner's per-topic settings (used when `cleanup.compact`).
    #[serde(default)]
    pub compaction: CompactionConfig,
}

/// cleanup.policy: `delete`, `compact` or `compact,delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupPolicy {
    /// retention.ms / retention.bytes delete old segments.
    pub delete: bool,
    /// The log cleaner keeps the latest record per key (see [`crate::compact`]).
    pub compact: bool,
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy {
            delete: true,
            compact: false,
        }
    }
}

/// min.cleanable.dirty.ratio: a fraction in [0, 1] (validated where it is parsed).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct DirtyRatio(f64);

// the value is never NaN (`DirtyRatio::new` refuses it)
impl Eq for DirtyRatio {}

impl DirtyRatio {
    /// `None` unless `0 <= v <= 1`.
    pub fn new(v: f64) -> Option<DirtyRatio> {
        (0.0..=1.0).contains(&v).then_some(DirtyRatio(v))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// The topic configs of the log cleaner, named after Kafka's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionConfig {
    /// delete.retention.ms: how long a tombstone (and a removable transaction marker) stays
    /// after the cleaner first saw it (KIP-534's delete horizon).
    pub delete_retention_ms: u64,
    /// min.compaction.lag.ms: records younger than this are not compacted.
    pub min_lag_ms: u64,
    /// max.compaction.lag.ms: a dirty segment older than this is cleaned whatever the dirty
    /// ratio (`None`: Long.MAX, never).
    pub max_lag_ms: Option<u64>,
    /// min.cleanable.dirty.ratio: clean once dirty bytes / cleanable bytes reaches this.
    pub min_dirty_ratio: DirtyRatio,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 86_400_000,
            min_lag_ms: 0,
            max_lag_ms: None,
            min_dirty_ratio: DirtyRatio(0.5),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            preallocate_bytes: 0,
            write_buffer_bytes: 8 << 20,
            hot_cache_bytes: 8 << 20,
            cleanup: CleanupPolicy::default(),
            compaction: CompactionConfig::default(),
        }
    }
}
