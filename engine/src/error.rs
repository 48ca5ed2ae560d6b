//! Error types of the engine, one small enum per concern. The broker maps them to Kafka error
//! codes at the protocol boundary (see `LogError::kafka_code`).

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::types::Offset;

/// Why a record batch was refused before it touched the log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch of {len} bytes is shorter than the 61-byte v2 header")]
    TooShort { len: usize },
    #[error("batchLength {declared} is impossible")]
    BadLength { declared: i32 },
    #[error("batch declares {declared} bytes but {actual} were given")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("unsupported record batch magic {0} (only v2 is stored)")]
    BadMagic(i8),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("recordCount {count} does not match lastOffsetDelta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("malformed records inside the batch: {0}")]
    BadRecords(String),
}

/// Errors of a partition log.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The batch's producer id, epoch or sequence is refused (idempotence, transactions).
    #[error("{0}")]
    Producer(#[from] crate::producer::ProducerError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A write or fsync failed earlier; the partition refuses writes until it is reopened
    /// (which runs recovery). Failed fsyncs are never retried: the page state is unknown.
    #[error("partition log {path} is poisoned after a failed {cause}; reopen to recover")]
    Poisoned { path: PathBuf, cause: String },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// A follower's batch does not start at the log end offset (replica appends keep the
    /// leader's offsets, so the follower must truncate or refetch first).
    #[error("replica batch starts at offset {got}, but the log ends at {expected}")]
    OffsetMismatch { expected: Offset, got: i64 },
    /// The file system is full (ENOSPC, or a quota: EDQUOT). Not a fence: the log keeps what
    /// it accepted but could not write yet, refuses new appends, and its flusher retries until
    /// space is freed (see `docs/ARCHITECTURE.md`, "Full disks").
    #[error("partition log {path} is waiting for disk space: {cause}")]
    DiskFull { path: PathBuf, cause: String },
    #[error("partition log is closed")]
    Closed,
    #[error("metadata file {path} is unreadable: {reason}")]
    BadMetadata { path: PathBuf, reason: String },
}

/// Kafka error codes the engine's errors map to (a subset of Kafka's `Errors`).
pub mod kafka_codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is an I/O error saying the file system (or a quota) is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::Io { source, .. } => is_no_space(source),
            LogError::DiskFull { .. } => true,
            _ => false,
        }
    }

    /// The Kafka error code a broker should answer with.
    pub fn kafka_code(&self) -> i16 {
        use kafka_codes::*;
        match self {
            LogError::InvalidBatch(BatchError::TooLarge { .. }) => MESSAGE_TOO_LARGE,
            LogError::InvalidBatch(BatchError::BadMagic(_)) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            LogError::InvalidBatch(BatchError::BadRecordCount { .. }) => INVALID_RECORD,
            LogError::InvalidBatch(_) => CORRUPT_MESSAGE,
            LogError::OffsetOutOfRange { .. } | LogError::OffsetMismatch { .. } => {
                OFFSET_OUT_OF_RANGE
            }
            LogError::Producer(e) => e.kafka_code(),
            LogError::Io { .. }
            | LogError::Poisoned { .. }
            | LogError::DiskFull { .. }
            | LogError::Closed
            | LogError::BadMetadata { .. } => KAFKA_STORAGE_ERROR,
        }
    }
}

/// ENOSPC or EDQUOT, by errno or by kind (glommio's errors keep the kind, not always the errno).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
