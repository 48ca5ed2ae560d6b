//! The partition's small metadata files, written off the reactor: `partition.meta`, the
//! leader epoch checkpoint, and what sealing or closing a segment writes besides the segment
//! (`.index`, `.timeindex`, `.txnindex`, the producer snapshot). Each is a durable replace
//! (temp file, fdatasync, rename; `partition.meta`'s ends with the directory fsync that also
//! makes the others' names durable), done by [`io::off_reactor`] on the executor's blocking
//! thread: the half a dozen syncs of a seal no longer stall every partition of the shard.
//!
//! Data path: flusher (seal, epoch checkpoint, deferred meta) / close / DeleteRecords /
//! retention / truncation / log cleaner -> `write_segment_files` / `store_meta` /
//! `store_epochs` -> the log's metadata lock (one writer at a time; the contents are taken
//! once it is held, so the newest state is what lands last and no two writers share a temp
//! file) -> `io::off_reactor` -> `segment::write_files` / `meta::durable_replace`.
//!
//! Recovery (open) still writes these files on the reactor: nothing else of the log runs yet.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use glommio::sync::{Semaphore, StaticPermit};

use super::snapshot::write_snapshot;
use super::Inner;
use crate::error::{LogError, Result};
use crate::io;
use crate::meta::PartitionMeta;
use crate::segment::{self, Segment};
use crate::types::Offset;

/// The lock every metadata writer of one log takes.
pub(super) fn new_lock() -> Rc<Semaphore> {
    Rc::new(Semaphore::new(1))
}

async fn lock(inner: &Rc<RefCell<Inner>>) -> Result<StaticPermit> {
    let lock = inner.borrow().meta_lock.clone();
    lock.acquire_static_permit(1)
        .await
        .map_err(|_| LogError::Closed)
}

/// What finishing a segment writes besides its data: its three index files and, optionally,
/// the producer snapshot as of an offset.
pub(super) struct SegmentWrites {
    base: Offset,
    files: [(&'static str, Vec<u8>); 3],
    snapshot: Option<(Offset, Vec<u8>)>,
}

impl SegmentWrites {
    /// Encodes `seg`'s index files (the caller finished its time index).
    pub(super) fn of(seg: &Segment, snapshot: Option<(Offset, Vec<u8>)>) -> Result<Self> {
        Ok(SegmentWrites {
            base: seg.base,
            files: seg.index_file_contents()?,
            snapshot,
        })
    }

    fn write(self, dir: &Path) -> Result<()> {
        segment::write_files(dir, self.base, self.files)?;
        if let Some((at, bytes)) = self.snapshot {
            write_snapshot(dir, at, &bytes)?;
        }
        Ok(())
    }
}

/// Writes and syncs a finished segment's index files and snapshot. Their names become durable
/// with the next `store_meta`, which the caller runs next.
pub(super) async fn write_segment_files(
    inner: &Rc<RefCell<Inner>>,
    writes: SegmentWrites,
) -> Result<()> {
    let _one = lock(inner).await?;
    let dir = inner.borrow().dir.clone();
    io::off_reactor(move || writes.write(&dir)).await
}

/// Durably replaces partition.meta with the log's state once the lock is held, `adjust`ed
/// (close adds the clean-shutdown marker).
pub(super) async fn store_meta(
    inner: &Rc<RefCell<Inner>>,
    adjust: impl FnOnce(&mut PartitionMeta),
) -> Result<()> {
    let _one = lock(inner).await?;
    let (mut meta, dir) = {
        let st = inner.borrow();
        (st.meta(), st.dir.clone())
    };
    adjust(&mut meta);
    io::off_reactor(move || meta.store(&dir)).await
}

/// [`store_meta`], but on a full disk leaves it to the flusher (which retries until there is
/// space) and carries on. For changes of the log start: the segments below it are deleted
/// next, which frees space, and a restart before the store lands shows the log from the
/// first remaining segment (records below the new start reappear, none is lost).
pub(super) async fn store_meta_or_defer(inner: &Rc<RefCell<Inner>>) -> Result<()> {
    match store_meta(inner, |_| {}).await {
        Err(e) if e.is_no_space() => {
            let mut st = inner.borrow_mut();
            tracing::warn!(dir = %st.dir.display(), error = %e, "partition.meta deferred: disk full");
            st.meta_dirty = true;
            Ok(())
        }
        r => r,
    }
}

/// Stores the leader epoch checkpoint if it is behind the cache; marks it behind again if
/// the store fails.
pub(super) async fn store_epochs(inner: &Rc<RefCell<Inner>>) -> Result<()> {
    let _one = lock(inner).await?;
    let (cache, dir) = {
        let mut st = inner.borrow_mut();
        if !st.epochs_dirty {
            return Ok(());
        }
        st.epochs_dirty = false;
        (st.epochs.clone(), st.dir.clone())
    };
    let stored = io::off_reactor(move || cache.store(&dir)).await;
    if stored.is_err() {
        inner.borrow_mut().epochs_dirty = true;
    }
    stored
}
