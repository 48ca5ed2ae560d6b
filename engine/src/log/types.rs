//! The public types of a partition log: its surroundings, append options and results, reads.

use std::fs;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use crate::budget::WriteBudget;
use crate::error::{LogError, Result};
use crate::fault::FaultPlan;
use crate::hot::HotBudget;
use crate::stats::StorageStats;
use crate::types::{FilePos, Offset, TimestampMs};

/// Wall-clock source, injectable so tests can drive retention and segment.ms.
pub trait Clock {
    fn now_ms(&self) -> TimestampMs;
}

/// The real clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// What a log needs from its surroundings besides its directory and config.
#[derive(Clone)]
pub struct LogEnv {
    pub clock: Rc<dyn Clock>,
    pub faults: Option<Rc<FaultPlan>>,
    /// A bound on the hot tails of this log and others together (see [`HotBudget`]).
    pub hot_budget: Option<Rc<HotBudget>>,
    /// A bound on the unwritten bytes of this log and others together (see [`WriteBudget`]).
    pub write_budget: Option<Rc<WriteBudget>>,
    /// Write, fdatasync and hot-tail counters, shared by the logs of one shard.
    pub stats: Rc<StorageStats>,
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv {
            clock: Rc::new(SystemClock),
            faults: None,
            hot_budget: None,
            write_budget: None,
            stats: Rc::default(),
        }
    }
}

/// message.timestamp.type of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AppendOptions {
    pub leader_epoch: i32,
    pub timestamp_type: TimestampType,
    /// For a transactional batch that starts a transaction in this partition: the token of
    /// [`PartitionLog::begin_txn_verification`](crate::PartitionLog::begin_txn_verification), taken before the transaction coordinator
    /// confirmed the partition is part of the producer's transaction. A marker written since
    /// voids it, so a late batch cannot open a transaction nobody will end (KIP-890).
    pub txn_guard: Option<u64>,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Set when the topic uses LogAppendTime.
    pub log_append_time: Option<TimestampMs>,
    pub log_start_offset: Offset,
    /// The batch was a producer's retry of one already in the log: nothing was appended and
    /// the offsets are the original's.
    pub duplicate: bool,
}

/// Whether a read must return the first batch even when it exceeds `max_bytes` (KIP-74).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBatch {
    Always,
    IfFits,
}

/// The bytes of a read: whole batches, from memory or as a file range for sendfile(2).
#[derive(Debug, Clone)]
pub enum ReadData {
    Empty,
    Memory(Vec<Bytes>),
    File {
        file: Rc<fs::File>,
        position: FilePos,
        len: u64,
        segment: Offset,
    },
}

impl ReadData {
    pub fn len(&self) -> u64 {
        match self {
            ReadData::Empty => 0,
            ReadData::Memory(v) => v.iter().map(|b| b.len() as u64).sum(),
            ReadData::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the data out (tests, the copy path, small reads).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        match self {
            ReadData::Empty => Ok(Vec::new()),
            ReadData::Memory(v) => Ok(v.iter().flat_map(|b| b.iter().copied()).collect()),
            ReadData::File {
                file,
                position,
                len,
                ..
            } => {
                use std::os::unix::fs::FileExt;
                let mut out = vec![0u8; *len as usize];
                file.read_exact_at(&mut out, position.0)
                    .map_err(|e| LogError::io("reading", PathBuf::new(), e))?;
                Ok(out)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadResult {
    pub data: ReadData,
    /// The visible end for consumers, also in a follower's read above it.
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// The next offset to assign (LEO), which may be above the high watermark.
    pub log_end_offset: Offset,
}

/// Offsets and sizes of a log at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start: Offset,
    /// Everything below is visible to consumers. Local mode: equal to `written`. Replicated
    /// mode ([`PartitionLog::set_replicated`](crate::PartitionLog::set_replicated)): the broker's value, never above `written`.
    pub high_watermark: Offset,
    /// Everything below is handed to the kernel (survives a crash of the process).
    pub written: Offset,
    /// Everything below is covered by an fdatasync.
    pub synced: Offset,
    /// Next offset to assign.
    pub log_end: Offset,
}
