//! Full disks: what a log does when a write finds no space (ENOSPC, EDQUOT).
//!
//! Data path on a full disk: an append copies its batch into the pending buffer as usual; the
//! flusher's write (segment data, preallocation excepted, a new segment's file, a sealed
//! segment's index files or producer snapshot, `partition.meta`, the leader epoch checkpoint)
//! fails with ENOSPC. Instead of poisoning the log, the flusher puts the job back where it was
//! (the chunks at the front of the write queue, still holding their bytes; the dirty flag of a
//! metadata file), marks the log [`DiskFull`], and retries with a backoff (50 ms doubling to
//! 1 s) or at once when retention or DeleteRecords deleted segments. While it waits:
//! - new appends are refused with [`LogError::DiskFull`] (KAFKA_STORAGE_ERROR, retriable);
//! - waiters for offsets not yet written fail with the same error: those batches are not
//!   acknowledged. They stay queued and reach the disk in order once space is back (as a
//!   batch whose acknowledgement timed out may), so a producer that retries can find its
//!   batch twice unless it is idempotent (the retry is then a duplicate of the kept batch);
//! - written data may still be synced, and reads, retention and DeleteRecords go on;
//! - nothing not yet written is visible: the high watermark stops at `written`.
//!
//! Opening a log on a full disk works: the recovery's metadata writes (partition.meta without
//! the clean-shutdown marker, the epoch checkpoint, rebuilt index files) are deferred, and the
//! log starts out waiting for space, its flusher storing partition.meta before any data.
//!
//! A failed fdatasync is never a full disk, whatever its errno: after it the state of the
//! written pages is unknown, so it poisons the log (see `LogError::Poisoned`). A close on a
//! full disk makes one last attempt, then gives up without the clean-shutdown marker, so the
//! next open runs recovery over what did reach the disk.

use std::time::{Duration, Instant};

use crate::error::LogError;

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Whether `e` means "no space, retry later" rather than a broken log.
pub(super) fn waits_for_space(e: &LogError) -> bool {
    match e {
        // fsyncgate: a failed fdatasync of segment data is not retried, whatever the errno
        LogError::Io {
            op: "fdatasync", ..
        } => false,
        _ => e.is_no_space(),
    }
}

/// A small metadata write that may wait: `Ok(true)` if it failed for lack of space (the caller
/// leaves it to the flusher or a later open), other errors as they are.
pub(super) fn deferred(r: crate::error::Result<()>) -> crate::error::Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.is_no_space() => {
            tracing::warn!(error = %e, "deferred: no space");
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// The disk-full state of one log.
#[derive(Debug, Default)]
pub(super) struct DiskFull {
    /// Why the last write failed; `None` while writes succeed.
    cause: Option<String>,
    retry_at: Option<Instant>,
    delay: Duration,
    /// How many times the log went from writing to waiting for space.
    pub(super) stalls: u64,
}

impl DiskFull {
    pub(super) fn is_full(&self) -> bool {
        self.cause.is_some()
    }

    pub(super) fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// A write failed for lack of space: wait before the next attempt, a little longer
    /// each time.
    pub(super) fn enter(&mut self, cause: String) {
        if self.cause.is_none() {
            self.stalls += 1;
            self.delay = FIRST_RETRY;
            tracing::warn!(%cause, "disk full: writes wait for space (appends get KAFKA_STORAGE_ERROR)");
        } else {
            self.delay = (self.delay * 2).min(MAX_RETRY);
        }
        self.cause = Some(cause);
        self.retry_at = Some(Instant::now() + self.delay);
    }

    /// A write succeeded again.
    pub(super) fn clear(&mut self) -> bool {
        let was = self.cause.take().is_some();
        self.retry_at = None;
        if was {
            tracing::info!("disk space is back: writes resumed");
        }
        was
    }

    /// Space may have been freed (segments deleted): retry now.
    pub(super) fn retry_now(&mut self) {
        if self.cause.is_some() {
            self.retry_at = Some(Instant::now());
        }
    }

    /// While full: how long until the next attempt (`None`: writes may go now).
    pub(super) fn wait_left(&self) -> Option<Duration> {
        self.cause.as_ref()?;
        let left = self.retry_at?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    pub(super) fn error(&self, dir: &std::path::Path) -> Option<LogError> {
        self.cause.as_ref().map(|c| LogError::DiskFull {
            path: dir.to_path_buf(),
            cause: c.clone(),
        })
    }
}
