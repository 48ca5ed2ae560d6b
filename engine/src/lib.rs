//! sluice's storage engine: one `PartitionLog` per partition, owned by one glommio shard.
//!
//! Data path of an append:
//! batch bytes (from the broker's frame) -> [`batch::validate`] (length, magic 2, CRC-32C,
//! record count) -> [`PartitionLog::append`] copies them once into the pending O_DIRECT buffer
//! and writes baseOffset / partitionLeaderEpoch into the copy -> flusher task ->
//! `DmaFile::write_rc_at` (aligned; the partial last page is rewritten as it fills) -> group
//! `fdatasync` -> waiters of [`Durability::Written`] (acks=1) and [`Durability::Synced`]
//! (acks=all) released.
//!
//! Replication: [`PartitionLog::append_replica`] stores a leader's batch unchanged at its
//! offsets, [`PartitionLog::truncate_to`] cuts a diverged tail, the leader epoch cache
//! ([`epoch`]) answers OffsetsForLeaderEpoch, and in replicated mode the broker sets the high
//! watermark ([`PartitionLog::set_high_watermark`]); followers read past it with
//! [`PartitionLog::read_replica`].
//!
//! Data path of a read: offset -> hot tail in memory (recent batches) or segment -> sparse
//! index -> header walk -> a batch-aligned file range that the broker sends with sendfile(2).
//!
//! On disk (Kafka's layout): `<dir>/<20-digit base offset>.log|.index|.timeindex` plus
//! `partition.meta` (log start offset, recovery point, clean-shutdown marker),
//! `leader-epoch-checkpoint` (see [`epoch`]) and `<offset>.producers` snapshots.

pub mod batch;
pub mod budget;
pub mod codec;
pub mod compact;
pub mod config;
pub mod epoch;
pub mod error;
pub mod fault;
pub mod fuzzing;
mod hot;
pub mod index;
pub mod io;
mod log;
pub mod meta;
pub mod powercut;
pub mod producer;
mod quirk;
pub mod segment;
pub mod stats;
pub mod types;

pub use budget::WriteBudget;
pub use compact::{CleanStats, CleanerConfig};
pub use config::{CleanupPolicy, CompactionConfig, DirtyRatio, LogConfig};
pub use error::{BatchError, LogError};
pub use fault::{Fault, FaultPlan};
pub use hot::HotBudget;
pub use log::{
    AppendInfo, AppendOptions, Clock, FirstBatch, LogEnv, LogOffsets, PartitionLog, ReadData,
    ReadResult, SystemClock, TimestampType,
};
pub use quirk::prime_dma_probe;
pub use types::{Durability, FilePos, Offset, TimestampMs};
