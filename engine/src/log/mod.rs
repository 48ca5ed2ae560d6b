//! `PartitionLog`: the append / flush / read / recovery / retention paths of one partition.
//!
//! Append (synchronous apart from back-pressure): validate the batch, copy it once into the
//! pending O_DIRECT buffer of the active segment, write its offset and leader epoch into that
//! copy, keep a `Bytes` copy in the hot tail, record index entries. The flusher task (one per
//! log, on the same glommio executor) takes the pending buffer, writes it with `write_rc_at` at
//! its aligned position (the partial last page is rewritten by the next write as it fills),
//! advances `written`, and runs one fdatasync for everything written so far when anyone waits
//! for `Synced` or the flush policy says so: concurrent waiters share that fdatasync (group
//! commit). A failed write or fdatasync poisons the log, except a write that found the disk
//! full: the log then waits for space and resumes by itself (`space`).
//!
//! Replication: a follower stores the leader's batches unchanged at the leader's offsets
//! (`append_replica`), keeps the leader epoch cache (`leader-epoch-checkpoint`, see
//! [`crate::epoch`]) that OffsetsForLeaderEpoch answers from, cuts a diverged tail with
//! `truncate_to` (or restarts with `truncate_fully_and_start_at`), and reads past the high
//! watermark with `read_replica`. In replicated mode (`set_replicated`) the broker sets the
//! high watermark; in local mode (the default) it is `written`.
//!
//! Where each part lives: `types` (the public types), `append` (validation, the FIFO gate,
//! the copy into the pending buffer, rolls, durability waits), `read` (reads and timestamp
//! lookups), `recovery` (open: segment scan and state rebuild), `snapshot` (producer-state
//! snapshots and their replay), `flusher` (writes, group fdatasync, seal, clean close),
//! `space` (waiting for disk space after ENOSPC), `metafiles` (partition.meta, the epoch
//! checkpoint, index files and snapshots, written off the reactor),
//! `truncate` (follower truncation). This file holds the state they share and the small
//! accessors, the high watermark, retention and DeleteRecords.

mod append;
mod clean;
mod flusher;
mod metafiles;
mod read;
mod recovery;
mod snapshot;
mod space;
mod truncate;
mod types;

pub use types::{
    AppendInfo, AppendOptions, Clock, FirstBatch, LogEnv, LogOffsets, ReadData, ReadResult,
    SystemClock, TimestampType,
};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use event_listener::{Event, EventListener};
use glommio::io::DmaBuffer;
use glommio::task::JoinHandle;

use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{LogError, Result};
use crate::hot::HotTail;
use crate::meta::{CleanerCheckpoint, PartitionMeta};
use crate::producer::{AbortedTxn, ProducerEntry, ProducerStates};
use crate::segment::Segment;
use crate::stats::{LogCounters, LogStats};
use crate::types::{Offset, TimestampMs};

/// O_DIRECT alignment used for every write (safe for 512 and 4096 byte devices).
const ALIGN: usize = 4096;
/// Default capacity of a pending write buffer.
const CHUNK_BYTES: usize = 1 << 20;

fn align_down(v: usize) -> usize {
    v & !(ALIGN - 1)
}

fn align_up(v: usize) -> usize {
    (v + ALIGN - 1) & !(ALIGN - 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Open,
    Closing,
    Closed,
}

/// A pending write buffer: bytes appended to a segment, starting at an aligned file position.
struct Pending {
    segment: Offset,
    file_pos: u64,
    /// Bytes of the partial page at `file_pos` that are already on disk (rewritten next time).
    carry: Vec<u8>,
    buf: Option<DmaBuffer>,
    len: usize,
    end_offset: Offset,
}

impl Pending {
    fn new(segment: Offset, file_pos: u64, carry: Vec<u8>, end_offset: Offset) -> Pending {
        debug_assert_eq!(file_pos as usize % ALIGN, 0);
        debug_assert!(carry.len() < ALIGN);
        let len = carry.len();
        Pending {
            segment,
            file_pos,
            carry,
            buf: None,
            len,
            end_offset,
        }
    }

    fn new_bytes(&self) -> usize {
        self.len - self.carry.len()
    }

    fn room(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len() - self.len)
    }

    fn ensure_room(&mut self, need: usize) {
        if self.room() >= need {
            return;
        }
        let cap = align_up((self.len + need).max(CHUNK_BYTES));
        let mut buf = glommio::allocate_dma_buffer(cap);
        let bytes = buf.as_bytes_mut();
        match self.buf.as_ref() {
            Some(old) => bytes[..self.len].copy_from_slice(&old.as_bytes()[..self.len]),
            None => bytes[..self.len].copy_from_slice(&self.carry),
        }
        self.buf = Some(buf);
    }
}

/// A buffer handed to the flusher, ending at a batch boundary.
struct Chunk {
    segment: Offset,
    file_pos: u64,
    buf: Option<DmaBuffer>,
    len: usize,
    new_bytes: usize,
    end_offset: Offset,
    /// Last chunk of its segment: fdatasync, trim and write the indexes after it.
    seal: bool,
    /// With `seal`: the producer state as of the next segment's base, snapshotted after it.
    snapshot: Option<Vec<u8>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.release_budget(self.budget_held);
    }
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    env: LogEnv,
    segments: BTreeMap<Offset, Segment>,
    pending: Pending,
    queue: VecDeque<Chunk>,
    /// Appended bytes not yet handed to the kernel (bounded by write_buffer_bytes).
    unwritten_bytes: usize,
    /// The part of `unwritten_bytes` counted in the shard's write budget (all of it, until
    /// the log is poisoned and will never write them).
    budget_held: usize,
    /// Appenders queued behind a full buffer; while any wait, new appends queue too, so
    /// batches keep their arrival order.
    appenders_waiting: usize,
    log_start: Offset,
    leo: Offset,
    written: Offset,
    synced: Offset,
    sync_wanted: Offset,
    /// An fdatasync is running (in its own task, so writes go on meanwhile).
    sync_in_flight: bool,
    unsynced_since_ms: Option<TimestampMs>,
    recovery_point: Offset,
    poisoned: Option<String>,
    /// A write found no space: the flusher retries, appends are refused meanwhile.
    disk_full: space::DiskFull,
    hot: HotTail,
    state: RunState,
    producers: ProducerStates,
    /// Verification tokens by producer id (see `AppendOptions::txn_guard`).
    txn_guards: std::collections::HashMap<i64, u64>,
    next_guard: u64,
    /// First offset of each leader epoch (see [`crate::epoch`]).
    epochs: LeaderEpochCache,
    /// `epochs` changed and its checkpoint file is behind: the flusher writes it before any
    /// data of the new epoch, so the file covers every batch on disk.
    epochs_dirty: bool,
    /// Replicated mode: the broker sets the high watermark (`set_high_watermark`).
    replicated: bool,
    /// Replicated mode: the high watermark the broker set. Readers see it capped by
    /// `written` (see `Inner::high_watermark`), so it may run ahead of this log's writes.
    hw_requested: Offset,
    /// A truncation asks the flusher to write and sync everything, then stop.
    pause_flusher: bool,
    /// The flusher task is alive (it clears this as it exits).
    flusher_running: bool,
    /// What producers appended (metrics).
    counters: LogCounters,
    /// The log cleaner's checkpoint (compacted topics).
    cleaner: CleanerCheckpoint,
    /// Segments whose batches may leave offset gaps (see `PartitionMeta::gapped_segments`).
    gapped: BTreeSet<Offset>,
    /// `gapped` grew and partition.meta is behind: the flusher stores it before any more data
    /// is written, so a recovery scan knows the gap is expected.
    meta_dirty: bool,
    /// A cleaner pass is running (one at a time).
    cleaning: bool,
    /// One metadata-file writer at a time (see `metafiles`).
    meta_lock: Rc<glommio::sync::Semaphore>,
    /// Seals whose index files, snapshot and recovery point are still being written (the
    /// flusher waits for them before it stops).
    seals_in_flight: usize,
}

/// Wake-ups between appenders, waiters and the flusher.
#[derive(Default)]
struct Signals {
    /// written / synced advanced, or the log was poisoned.
    progress: Event,
    /// New work for the flusher.
    work: Event,
    /// Buffer space freed for appenders.
    space: Event,
}

/// A partition log owned by one shard. Not `Send`: only the owning executor touches it.
pub struct PartitionLog {
    inner: Rc<RefCell<Inner>>,
    signals: Rc<Signals>,
    flusher: RefCell<Option<JoinHandle<()>>>,
    /// FIFO gate for appenders that found the write buffer full.
    append_gate: glommio::sync::Semaphore,
    /// One truncation, close, DeleteRecords or retention pass at a time.
    maintenance: glommio::sync::Semaphore,
}

impl Inner {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Whether a batch of `len` bytes fits the bounded write buffer (an empty buffer always
    /// takes one batch, however large) and the shard's write budget.
    fn has_room(&self, len: usize) -> bool {
        self.own_room(len) && self.env.write_budget.as_ref().is_none_or(|b| b.admits(len))
    }

    fn own_room(&self, len: usize) -> bool {
        self.unwritten_bytes == 0 || self.unwritten_bytes + len <= self.config.write_buffer_bytes
    }

    /// Counts `len` appended bytes as unwritten, in this log and in the shard's budget.
    fn add_unwritten(&mut self, len: usize) {
        self.unwritten_bytes += len;
        if let Some(b) = &self.env.write_budget {
            b.take(len);
            self.budget_held += len;
        }
    }

    /// `len` unwritten bytes reached the kernel.
    fn sub_unwritten(&mut self, len: usize) {
        assert!(
            len <= self.unwritten_bytes,
            "{len} of {} unwritten bytes",
            self.unwritten_bytes
        );
        self.unwritten_bytes -= len;
        self.release_budget(len);
    }

    /// Gives back up to `len` bytes of the shard's write budget.
    fn release_budget(&mut self, len: usize) {
        let len = len.min(self.budget_held);
        if let Some(b) = &self.env.write_budget {
            self.budget_held -= len;
            b.release(len);
        }
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        if self.state != RunState::Open {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// `check_writable`, and room on the disk: appends are refused while the log waits for
    /// space (retention and DeleteRecords are not: they free it).
    fn check_appendable(&self) -> Result<()> {
        self.check_writable()?;
        match self.disk_full.error(&self.dir) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn poison(&mut self, cause: String) {
        tracing::error!(dir = %self.dir.display(), %cause, "partition log poisoned");
        if self.poisoned.is_none() {
            self.poisoned = Some(cause);
        }
        // its unwritten bytes will never be written: other logs of the shard get the room
        self.release_budget(self.budget_held);
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start: self.log_start,
            high_watermark: self.high_watermark(),
            written: self.written,
            synced: self.synced,
            log_end: self.leo,
        }
    }

    /// The offset invariants; checked where the offsets move.
    fn check_invariants(&self) {
        assert!(
            self.synced <= self.written && self.written <= self.leo,
            "synced {} <= written {} <= log end {}",
            self.synced,
            self.written,
            self.leo
        );
        assert!(
            self.log_start <= self.written,
            "log start {} <= written {}",
            self.log_start,
            self.written
        );
        let hw = self.high_watermark();
        assert!(
            self.log_start <= hw && hw <= self.written,
            "log start {} <= high watermark {hw} <= written {}",
            self.log_start,
            self.written
        );
    }

    /// The end of what consumers may read. Local mode: everything written. Replicated mode:
    /// the broker's high watermark, capped by what this log has written (a follower can
    /// take the leader's value before its own copy of the data is on disk) and floored at
    /// the log start.
    fn high_watermark(&self) -> Offset {
        if self.replicated {
            self.hw_requested.min(self.written).max(self.log_start)
        } else {
            self.written
        }
    }

    fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            log_start_offset: self.log_start.0,
            recovery_point: self.recovery_point.0,
            clean_shutdown: None,
            cleaner: (self.cleaner != CleanerCheckpoint::default()).then_some(self.cleaner),
            gapped_segments: self.gapped.iter().map(|o| o.0).collect(),
        }
    }

    /// The last stable offset: the first offset of the oldest open transaction, capped by
    /// the high watermark.
    fn last_stable(&self) -> Offset {
        self.producers
            .first_open()
            .map_or(self.high_watermark(), |f| f.min(self.high_watermark()))
    }
}

impl PartitionLog {
    pub fn dir(&self) -> PathBuf {
        self.inner.borrow().dir.clone()
    }

    pub fn config(&self) -> LogConfig {
        self.inner.borrow().config.clone()
    }

    /// Changes settings that apply to future appends, flushes and retention.
    pub fn set_config(&self, config: LogConfig) {
        let mut st = self.inner.borrow_mut();
        st.hot.set_limit(config.hot_cache_bytes);
        st.config = config;
        self.signals.work.notify(1);
    }

    pub fn offsets(&self) -> LogOffsets {
        self.inner.borrow().offsets()
    }

    /// Bytes stored in the log's segments (what DescribeLogDirs reports).
    pub fn size_bytes(&self) -> u64 {
        self.inner.borrow().segments.values().map(|s| s.size).sum()
    }

    /// Offsets, sizes and counters of this log, for metrics.
    pub fn stats(&self) -> LogStats {
        let st = self.inner.borrow();
        let o = st.offsets();
        let c = &st.counters;
        let unsynced_written = c.bytes_written.get().saturating_sub(c.bytes_synced.get());
        LogStats {
            log_start: o.log_start.0,
            high_watermark: o.high_watermark.0,
            log_end: o.log_end.0,
            size_bytes: st.segments.values().map(|s| s.size).sum(),
            segments: st.segments.len() as u64,
            messages_in: c.messages_in.get(),
            bytes_in: c.bytes_in.get(),
            unsynced_bytes: st.unwritten_bytes as u64 + unsynced_written,
            poisoned: st.poisoned.is_some(),
            disk_full: st.disk_full.is_full(),
            disk_full_stalls: st.disk_full.stalls,
        }
    }

    pub fn segment_count(&self) -> usize {
        self.inner.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.inner.borrow().segments.keys().copied().collect()
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.borrow().poisoned.clone()
    }

    /// Why the log waits for disk space (appends get [`LogError::DiskFull`]), if it does.
    pub fn disk_full(&self) -> Option<String> {
        self.inner.borrow().disk_full.cause().map(str::to_string)
    }

    /// The last stable offset: read_committed consumers read up to here.
    pub fn last_stable_offset(&self) -> Offset {
        self.inner.borrow().last_stable()
    }

    /// Aborted transactions a read_committed fetch of `[from, to)` must report: those whose
    /// marker is at or after `from` and whose first offset is below `to`.
    pub fn aborted_transactions(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        let st = self.inner.borrow();
        let mut out = Vec::new();
        for seg in st.segments.values().filter(|s| s.next_offset > from) {
            for a in &seg.aborted {
                if a.last >= from.0 && a.first < to.0 {
                    out.push(*a);
                }
                if a.lso > to.0 {
                    return out;
                }
            }
        }
        out
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<(i64, ProducerEntry)> {
        let st = self.inner.borrow();
        st.producers.iter().map(|(p, e)| (*p, e.clone())).collect()
    }

    /// Whether `producer_id` has an open transaction here at `epoch` (so a transactional
    /// batch continues it rather than starting a new one).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.inner
            .borrow()
            .producers
            .in_transaction(producer_id, epoch)
    }

    /// Starts verifying that a transactional batch of `producer_id` may open a transaction
    /// here; pass the token as `AppendOptions::txn_guard` once the coordinator said yes.
    pub fn begin_txn_verification(&self, producer_id: i64) -> u64 {
        let mut st = self.inner.borrow_mut();
        let token = st.next_guard;
        st.next_guard += 1;
        st.txn_guards.insert(producer_id, token);
        token
    }

    /// Forgets producers idle for longer than `max_idle_ms` (producer.id.expiration.ms).
    pub fn expire_producers(&self, max_idle_ms: i64) -> usize {
        let mut st = self.inner.borrow_mut();
        let cutoff = st.env.clock.now_ms().saturating_sub(max_idle_ms);
        let start = st.log_start;
        st.producers.expire(cutoff, start)
    }

    /// The latest leader epoch of the log's batches (or of its checkpoint), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.borrow().epochs.latest().map(|e| e.epoch)
    }

    /// The leader epoch cache: (epoch, first offset of that epoch), oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, Offset)> {
        let st = self.inner.borrow();
        st.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start))
            .collect()
    }

    /// OffsetsForLeaderEpoch with Kafka's semantics: the largest epoch <= `requested` known
    /// here and the offset where the next higher epoch starts (the log end offset for the
    /// latest epoch); `(-1, -1)` for `requested == -1` or an epoch above all known ones.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let st = self.inner.borrow();
        st.epochs.end_offset_for(requested, st.leo)
    }

    /// Switches the log between local mode (the default: the high watermark follows
    /// `written`, as for an unreplicated partition) and replicated mode, where the broker
    /// moves it with [`set_high_watermark`](Self::set_high_watermark) as replicas catch up.
    /// Turning it on starts the high watermark at the log start (hiding what is there until
    /// the broker sets it; call it right after open); turning it off shows everything
    /// written. In replicated mode reads, the last stable offset, timestamp lookups,
    /// DeleteRecords and retention stop at the high watermark; followers read past it with
    /// [`read_replica`](Self::read_replica).
    pub fn set_replicated(&self, on: bool) {
        let mut st = self.inner.borrow_mut();
        if st.replicated == on {
            return;
        }
        st.replicated = on;
        st.hw_requested = st.log_start;
        st.check_invariants();
        drop(st);
        self.signals.progress.notify(usize::MAX);
    }

    /// Whether the broker sets the high watermark (see [`set_replicated`](Self::set_replicated)).
    pub fn is_replicated(&self) -> bool {
        self.inner.borrow().replicated
    }

    /// Replicated mode: moves the high watermark forward to `hw` and wakes the
    /// [`listen`](Self::listen)ers (long-polling fetches). A lower value than the current one
    /// is ignored: only a truncation moves it down. Readers see it capped by `written`
    /// (and floored at the log start), so a follower may pass the leader's value as soon as
    /// it arrives; the visible value follows as the log's writes land. Returns the visible
    /// high watermark. Local mode: no effect.
    pub fn set_high_watermark(&self, hw: Offset) -> Offset {
        let mut st = self.inner.borrow_mut();
        if !st.replicated {
            return st.high_watermark();
        }
        let before = st.high_watermark();
        if hw > st.hw_requested {
            st.hw_requested = hw;
        }
        st.check_invariants();
        let now = st.high_watermark();
        drop(st);
        if now != before {
            self.signals.progress.notify(usize::MAX);
        }
        now
    }

    /// A listener that fires when the high watermark or sync point moves (for long polls).
    pub fn listen(&self) -> EventListener {
        self.signals.progress.listen()
    }

    /// Moves the log start offset forward (DeleteRecords). Whole segments below it are deleted.
    pub async fn delete_records(&self, before: Offset) -> Result<Offset> {
        let _one_at_a_time = self
            .maintenance
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let moved = {
            let mut st = self.inner.borrow_mut();
            st.check_writable()?;
            let o = st.offsets();
            if before > o.high_watermark {
                return Err(LogError::OffsetOutOfRange {
                    offset: before,
                    log_start: o.log_start,
                    log_end: o.high_watermark,
                });
            }
            let moved = before > st.log_start;
            st.log_start = st.log_start.max(before);
            moved
        };
        if moved {
            metafiles::store_meta_or_defer(&self.inner).await?;
        }
        // segments rolled before the call are deleted too, once sealed
        self.seals_settled().await;
        self.delete_segments_below_start().await?;
        Ok(self.inner.borrow().log_start)
    }

    /// Waits until every rolled segment's seal has finished (index files, snapshot, recovery
    /// point: see `flusher::finish_seal`), so it counts as sealed.
    pub async fn seals_settled(&self) {
        loop {
            let done = self.signals.work.listen();
            if self.inner.borrow().seals_in_flight == 0 {
                return;
            }
            done.await;
        }
    }

    /// Applies retention.ms and retention.bytes: deletes whole sealed segments, oldest first.
    /// Returns how many were deleted.
    pub async fn enforce_retention(&self) -> Result<usize> {
        self.seals_settled().await;
        let Ok(_one_at_a_time) = self.maintenance.try_acquire_permit(1) else {
            // a truncation, close or DeleteRecords is changing the segments; the next round
            // applies it
            return Ok(0);
        };
        let moved = {
            let mut st = self.inner.borrow_mut();
            st.check_writable()?;
            let now = st.env.clock.now_ms();
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut new_start = st.log_start;
            let hw = st.high_watermark();
            for seg in st.segments.values() {
                // replicated mode: never what consumers cannot see yet (Kafka's rule)
                if !seg.sealed || seg.next_offset > hw || !st.config.cleanup.delete {
                    // cleanup.policy=compact alone: retention does not delete
                    break;
                }
                let by_time = st.config.retention_ms.is_some_and(|ms| {
                    seg.max_timestamp()
                        .is_some_and(|m| m < now.saturating_sub(ms as i64))
                });
                let by_size = st
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total.saturating_sub(seg.size) >= limit);
                if !(by_time || by_size) {
                    break;
                }
                total -= seg.size;
                new_start = new_start.max(seg.next_offset);
            }
            let moved = new_start > st.log_start;
            st.log_start = st.log_start.max(new_start);
            moved
        };
        if moved {
            metafiles::store_meta_or_defer(&self.inner).await?;
        }
        self.delete_segments_below_start().await
    }

    async fn delete_segments_below_start(&self) -> Result<usize> {
        let (doomed, dir) = {
            let mut st = self.inner.borrow_mut();
            let start = st.log_start;
            let doomed: Vec<Offset> = st
                .segments
                .values()
                .filter(|s| s.sealed && s.next_offset <= start)
                .map(|s| s.base)
                .collect();
            for b in &doomed {
                st.segments.remove(b);
                st.gapped.remove(b);
                Segment::remove_files(&st.dir, *b)?;
            }
            (doomed, st.dir.clone())
        };
        if !doomed.is_empty() {
            crate::io::sync_dir_async(&dir)
                .await
                .map_err(|e| LogError::io("syncing dir", &dir, e))?;
            let mut st = self.inner.borrow_mut();
            let start = st.log_start;
            // space was freed: a log waiting for it retries now
            st.disk_full.retry_now();
            self.signals.work.notify(1);
            tracing::info!(dir = %st.dir.display(), deleted = doomed.len(), log_start = %start, "deleted old segments");
        }
        Ok(doomed.len())
    }
}
