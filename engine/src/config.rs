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
        }
    }
}
