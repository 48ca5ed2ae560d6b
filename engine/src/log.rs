//! `PartitionLog`: the append / flush / read / recovery / retention paths of one partition.
//!
//! Append (synchronous apart from back-pressure): validate the batch, copy it once into the
//! pending O_DIRECT buffer of the active segment, write its offset and leader epoch into that
//! copy, keep a `Bytes` copy in the hot tail, record index entries. The flusher task (one per
//! log, on the same glommio executor) takes the pending buffer, writes it with `write_rc_at` at
//! its aligned position (the partial last page is rewritten by the next write as it fills),
//! advances `written`, and runs one fdatasync for everything written so far when anyone waits
//! for `Synced` or the flush policy says so: concurrent waiters share that fdatasync (group
//! commit). A failed write or fdatasync poisons the log.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use glommio::io::{DmaBuffer, DmaFile};
use glommio::task::JoinHandle;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::error::{BatchError, LogError, Result};
use crate::fault::{Fault, FaultPlan};
use crate::hot::{HotBudget, HotTail};
use crate::meta::{sync_dir, CleanShutdown, PartitionMeta};
use crate::producer::{
    self, AbortedTxn, Admit, Marker, ProducerEntry, ProducerError, ProducerStates,
};
use crate::quirk::prime_dma_probe;
use crate::segment::{self, path_of, Segment, SegmentFiles};
use crate::types::{Durability, FilePos, Offset, TimestampMs};

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
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv {
            clock: Rc::new(SystemClock),
            faults: None,
            hot_budget: None,
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
    /// [`PartitionLog::begin_txn_verification`], taken before the transaction coordinator
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
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// Offsets and sizes of a log at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start: Offset,
    /// Everything below is handed to the kernel, and visible to readers.
    pub high_watermark: Offset,
    /// Everything below is covered by an fdatasync.
    pub synced: Offset,
    /// Next offset to assign.
    pub log_end: Offset,
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

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    env: LogEnv,
    segments: BTreeMap<Offset, Segment>,
    pending: Pending,
    queue: VecDeque<Chunk>,
    /// Appended bytes not yet handed to the kernel (bounded by write_buffer_bytes).
    unwritten_bytes: usize,
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
    hot: HotTail,
    state: RunState,
    producers: ProducerStates,
    /// Verification tokens by producer id (see `AppendOptions::txn_guard`).
    txn_guards: std::collections::HashMap<i64, u64>,
    next_guard: u64,
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
}

/// Counts an appender as waiting for as long as it lives (also when its future is dropped).
struct WaitingAppender(Rc<RefCell<Inner>>);

impl WaitingAppender {
    fn new(inner: &Rc<RefCell<Inner>>) -> Self {
        inner.borrow_mut().appenders_waiting += 1;
        WaitingAppender(inner.clone())
    }
}

impl Drop for WaitingAppender {
    fn drop(&mut self) {
        self.0.borrow_mut().appenders_waiting -= 1;
    }
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
    /// takes one batch, however large).
    fn has_room(&self, len: usize) -> bool {
        self.unwritten_bytes == 0 || self.unwritten_bytes + len <= self.config.write_buffer_bytes
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

    fn poison(&mut self, cause: String) {
        tracing::error!(dir = %self.dir.display(), %cause, "partition log poisoned");
        if self.poisoned.is_none() {
            self.poisoned = Some(cause);
        }
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start: self.log_start,
            high_watermark: self.written,
            synced: self.synced,
            log_end: self.leo,
        }
    }

    fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            log_start_offset: self.log_start.0,
            recovery_point: self.recovery_point.0,
            clean_shutdown: None,
        }
    }

    /// Closes the active segment's pending buffer as a sealing chunk and starts a new segment.
    fn roll(&mut self) {
        let new_base = self.leo;
        let p = std::mem::replace(
            &mut self.pending,
            Pending::new(new_base, 0, Vec::new(), new_base),
        );
        self.queue.push_back(Chunk {
            segment: p.segment,
            file_pos: p.file_pos,
            new_bytes: p.new_bytes(),
            len: p.len,
            buf: p.buf,
            end_offset: p.end_offset,
            seal: true,
            snapshot: Some(self.producers.to_json()),
        });
        tracing::debug!(dir = %self.dir.display(), base = %new_base, "rolling segment");
        self.segments.insert(new_base, Segment::new_empty(new_base));
    }

    /// Moves the pending buffer to the write queue, keeping its partial last page as carry.
    fn take_pending(&mut self) {
        let p = &mut self.pending;
        if p.new_bytes() == 0 {
            return;
        }
        let Some(buf) = p.buf.take() else { return };
        let cut = align_down(p.len);
        let carry = buf.as_bytes()[cut..p.len].to_vec();
        let chunk = Chunk {
            segment: p.segment,
            file_pos: p.file_pos,
            new_bytes: p.new_bytes(),
            len: p.len,
            buf: Some(buf),
            end_offset: p.end_offset,
            seal: false,
            snapshot: None,
        };
        *p = Pending::new(p.segment, p.file_pos + cut as u64, carry, p.end_offset);
        self.queue.push_back(chunk);
    }

    fn append_now(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        marker: Option<Marker>,
        opts: &AppendOptions,
    ) -> Result<AppendInfo> {
        let pid = header.producer_id.get();
        if marker.is_some() {
            self.txn_guards.remove(&pid);
        } else if header.is_transactional()
            && !self
                .producers
                .in_transaction(pid, header.producer_epoch.get())
            && (opts.txn_guard.is_none() || self.txn_guards.get(&pid) != opts.txn_guard.as_ref())
        {
            return Err(ProducerError::InvalidTxnState {
                producer_id: pid,
                reason: "the partition is not part of an ongoing transaction (or it ended)".into(),
            }
            .into());
        }
        if let Admit::Duplicate(d) = self.producers.check(header, marker)? {
            return Ok(AppendInfo {
                base_offset: Offset(d.base),
                last_offset: Offset(d.last),
                log_append_time: None,
                log_start_offset: self.log_start,
                duplicate: true,
            });
        }
        let now = self.env.clock.now_ms();
        let size = batch.len();
        let roll = {
            let a = self.active();
            !a.is_empty()
                && (a.size + size as u64 > self.config.segment_bytes
                    || self.config.segment_ms.is_some_and(|ms| {
                        a.first_append_ms
                            .is_some_and(|t| now.saturating_sub(t) >= ms as i64)
                    }))
        };
        if roll {
            self.roll();
        }
        let count = header.record_count.get() as u64;
        let base = self.leo;
        let last = base.plus(count - 1);
        if self.pending.room() < size && self.pending.new_bytes() > 0 {
            // full: hand it over whole and continue in a fresh buffer
            self.take_pending();
        }
        let p = &mut self.pending;
        p.ensure_room(size);
        let start = p.len;
        let buf = p.buf.as_mut().expect("ensure_room allocates");
        let dst = &mut buf.as_bytes_mut()[start..start + size];
        dst.copy_from_slice(batch);
        let h = BatchHeader::mut_from(dst).expect("validated batch has a header");
        h.base_offset.set(base.0 as i64);
        h.partition_leader_epoch.set(opts.leader_epoch);
        let mut log_append_time = None;
        if opts.timestamp_type == TimestampType::LogAppendTime {
            h.attributes
                .set(h.attributes.get() | batch::ATTR_TIMESTAMP_LOG_APPEND);
            h.max_timestamp.set(now);
            log_append_time = Some(now);
            let crc = batch::compute_crc(dst);
            BatchHeader::mut_from(dst)
                .expect("validated batch has a header")
                .crc
                .set(crc);
        }
        let max_ts = BatchHeader::parse(dst)
            .map(|h| h.max_timestamp.get())
            .unwrap_or(now);
        p.len += size;
        p.end_offset = last.plus(1);
        let stored = &p.buf.as_ref().expect("allocated").as_bytes()[start..start + size];
        self.hot.push(stored, base, last, max_ts);
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let pos = FilePos(seg.size);
        let (Some(base_rel), Some(last_rel)) =
            (base.relative_to(seg.base), last.relative_to(seg.base))
        else {
            unreachable!("segment.bytes keeps relative offsets within u32")
        };
        seg.index
            .on_append(interval, base_rel, last_rel, pos, size as u64, max_ts);
        seg.size += size as u64;
        seg.next_offset = last.plus(1);
        seg.first_append_ms.get_or_insert(now);
        self.leo = last.plus(1);
        self.unwritten_bytes += size;
        if let Some(aborted) = self.producers.on_append(header, marker, base, last, now) {
            self.active_mut().aborted.push(aborted);
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_append_time,
            log_start_offset: self.log_start,
            duplicate: false,
        })
    }

    /// The last stable offset: the first offset of the oldest open transaction, capped by
    /// the high watermark.
    fn last_stable(&self) -> Offset {
        self.producers
            .first_open()
            .map_or(self.written, |f| f.min(self.written))
    }
}

/// Lists the base offsets of the `.log` files in `dir`, sorted; removes leftover temp files.
fn list_segments(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(b) = stem.parse::<u64>() {
                    bases.push(Offset(b));
                }
            }
        }
    }
    bases.sort();
    Ok(bases)
}

/// What recovery decided about one segment.
struct Recovered {
    segment: Segment,
    /// The scan stopped early: everything after this segment is discarded.
    cut: bool,
    /// The indexes were rebuilt by a scan (rather than loaded from their files).
    scanned: bool,
}

async fn recover_segment(
    dir: &Path,
    config: &LogConfig,
    base: Offset,
    trusted_next: Option<Offset>,
) -> Result<Recovered> {
    let dma = Segment::open_dma(dir, base, false).await?;
    let path = segment::log_path(dir, base);
    let file_len = dma
        .file_size()
        .await
        .map_err(|e| LogError::io("stat", &path, e.into()))?;
    let mut seg = Segment::new_empty(base);
    if let Some(next) = trusted_next {
        if let Some(index) = Segment::load_index_files(dir, base, file_len, next) {
            seg.size = file_len;
            seg.written_size = file_len;
            seg.allocated = file_len;
            seg.next_offset = next;
            seg.index = index;
            seg.files = Some(SegmentFiles { dma, plain: None });
            return Ok(Recovered {
                segment: seg,
                cut: false,
                scanned: false,
            });
        }
        if file_len > 0 {
            tracing::info!(segment = %path.display(), "index missing or damaged; rebuilding");
        }
    }
    let out = segment::scan(
        &dma,
        base,
        file_len,
        config.index_interval_bytes,
        config.max_message_bytes,
    )
    .await?;
    let cut = out.valid_size < file_len;
    if cut {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = out.valid_size,
            file_bytes = file_len,
            reason = out.stopped.as_deref().unwrap_or("trailing bytes"),
            "truncating log to its valid prefix"
        );
        dma.truncate(out.valid_size)
            .await
            .map_err(|e| LogError::io("truncating", &path, e.into()))?;
    }
    dma.fdatasync()
        .await
        .map_err(|e| LogError::io("syncing", &path, e.into()))?;
    seg.size = out.valid_size;
    seg.written_size = out.valid_size;
    seg.allocated = out.valid_size;
    seg.next_offset = out.next_offset;
    seg.index = out.index;
    seg.files = Some(SegmentFiles { dma, plain: None });
    // a zero-length tail (not the first segment) means "no valid data past the previous one"
    Ok(Recovered {
        segment: seg,
        cut,
        scanned: true,
    })
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it if it was not closed cleanly.
    pub async fn open(dir: &Path, config: LogConfig, env: LogEnv) -> Result<PartitionLog> {
        assert!(
            config.segment_bytes <= i32::MAX as u64,
            "segment.bytes must fit Kafka's i32 positions"
        );
        fs::create_dir_all(dir).map_err(|e| LogError::io("creating", dir, e))?;
        prime_dma_probe(dir).await?;
        let mut meta = PartitionMeta::load(dir)?.unwrap_or_default();
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            let base = Offset(meta.log_start_offset);
            segment::create_file(dir, base).await?;
            bases.push(base);
            meta.recovery_point = base.0;
            meta.clean_shutdown = Some(CleanShutdown {
                log_end_offset: base.0,
                active_size: 0,
            });
        }
        let last_base = *bases.last().expect("non-empty");
        let last_len = fs::metadata(segment::log_path(dir, last_base))
            .map(|m| m.len())
            .map_err(|e| LogError::io("stat", segment::log_path(dir, last_base), e))?;
        let clean = meta
            .clean_shutdown
            .filter(|c| c.active_size == last_len && c.log_end_offset >= last_base.0);
        let rp = Offset(meta.recovery_point);
        // segments strictly before the one holding the recovery point were sealed and synced
        let first_scan = if clean.is_some() {
            bases.len()
        } else {
            bases.partition_point(|b| *b <= rp).saturating_sub(1)
        };
        if clean.is_none() {
            tracing::info!(dir = %dir.display(), from = %bases[first_scan], "recovering after unclean shutdown");
        }
        let mut segments = BTreeMap::new();
        let mut expected: Option<Offset> = None;
        let mut discard_from = None;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(e) = expected {
                if base != e {
                    tracing::warn!(dir = %dir.display(), %base, expected = %e, "offset gap between segments; discarding the rest");
                    discard_from = Some(i);
                    break;
                }
            }
            // sealed segments end where the next begins; the active one where the clean
            // marker says (without a marker it is scanned)
            let trusted_next = match bases.get(i + 1) {
                Some(next) if i < first_scan => Some(*next),
                Some(_) => None,
                None => clean.map(|c| Offset(c.log_end_offset)),
            };
            let r = recover_segment(dir, &config, base, trusted_next).await?;
            expected = Some(r.segment.next_offset);
            let empty_tail = r.segment.is_empty() && i > 0;
            if empty_tail {
                // nothing valid in it: drop the file, the previous segment stays active
                discard_from = Some(i);
                break;
            }
            let sealed = i + 1 < bases.len() && !r.cut;
            let mut seg = r.segment;
            if r.scanned && sealed {
                // persist the rebuilt indexes so the next open does not scan this segment again
                seg.finish_time_index();
                seg.write_index_files(dir)?;
            }
            segments.insert(base, seg);
            if r.cut {
                discard_from = Some(i + 1);
                break;
            }
        }
        if let Some(from) = discard_from {
            for &b in &bases[from..] {
                segments.remove(&b);
                Segment::remove_files(dir, b)?;
            }
            sync_dir(dir)?;
        }
        let (active_base, size, leo) = {
            let (b, s) = segments.iter_mut().next_back().expect("first segment kept");
            (*b, s.size, s.next_offset)
        };
        for s in segments.values_mut() {
            s.sealed = s.base != active_base;
        }
        // carry the partial last page of the active segment into the first pending buffer
        let file_pos = align_down(size as usize) as u64;
        let carry = if size > file_pos {
            let dma = segments[&active_base]
                .files
                .as_ref()
                .expect("recovered segments have files")
                .dma
                .clone();
            segment::read_exact_at(&dma, file_pos, (size - file_pos) as usize).await?
        } else {
            Vec::new()
        };
        let producers = rebuild_producers(dir, &mut segments, leo, env.clock.now_ms()).await?;
        let log_start = Offset(meta.log_start_offset)
            .max(*segments.keys().next().expect("non-empty"))
            .min(leo);
        let recovery_point = rp.min(active_base);
        meta.log_start_offset = log_start.0;
        meta.recovery_point = recovery_point.0;
        meta.clean_shutdown = None;
        // the marker must be gone before the first append can change the files
        meta.store(dir)?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            hot: HotTail::new(config.hot_cache_bytes, env.hot_budget.clone()),
            config,
            env,
            segments,
            pending: Pending::new(active_base, file_pos, carry, leo),
            queue: VecDeque::new(),
            unwritten_bytes: 0,
            appenders_waiting: 0,
            log_start,
            leo,
            written: leo,
            synced: leo,
            sync_wanted: leo,
            sync_in_flight: false,
            unsynced_since_ms: None,
            recovery_point,
            poisoned: None,
            state: RunState::Open,
            producers,
            txn_guards: Default::default(),
            next_guard: 1,
        };
        let inner = Rc::new(RefCell::new(inner));
        let signals = Rc::new(Signals::default());
        let task = glommio::spawn_local(flusher(inner.clone(), signals.clone())).detach();
        Ok(PartitionLog {
            inner,
            signals,
            flusher: RefCell::new(Some(task)),
            append_gate: glommio::sync::Semaphore::new(1),
        })
    }

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

    /// A listener that fires when the high watermark or sync point moves (for long polls).
    pub fn listen(&self) -> EventListener {
        self.signals.progress.listen()
    }

    /// Validates `batch` (one v2 batch) and appends it, assigning offsets. Returns once the
    /// batch is in the write buffer; await [`wait_durable`](Self::wait_durable) for acks.
    /// Waits only when the write buffer is full.
    pub async fn append(&self, batch: &[u8], opts: AppendOptions) -> Result<AppendInfo> {
        let max = self.inner.borrow().config.max_message_bytes;
        if batch.len() > max {
            return Err(BatchError::TooLarge {
                size: batch.len(),
                max,
            }
            .into());
        }
        let header = *batch::validate(batch)?;
        let marker = if header.is_control() {
            Some(producer::parse_marker(batch)?)
        } else {
            None
        };
        {
            // fast path: room in the buffer and nobody queued ahead
            let mut st = self.inner.borrow_mut();
            st.check_writable()?;
            if st.appenders_waiting == 0 && st.has_room(batch.len()) {
                let info = st.append_now(batch, &header, marker, &opts)?;
                self.signals.work.notify(1);
                return Ok(info);
            }
        }
        let _waiting = WaitingAppender::new(&self.inner);
        let _turn = self
            .append_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                st.check_writable()?;
                if st.has_room(batch.len()) {
                    let info = st.append_now(batch, &header, marker, &opts)?;
                    self.signals.work.notify(1);
                    return Ok(info);
                }
                self.signals.space.listen()
            };
            listener.await;
        }
    }

    /// Waits until everything up to and including `offset` reached `level`.
    pub async fn wait_durable(&self, offset: Offset, level: Durability) -> Result<()> {
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                match level {
                    Durability::Written if st.written > offset => return Ok(()),
                    Durability::Synced if st.synced > offset => return Ok(()),
                    _ => {}
                }
                if let Some(cause) = &st.poisoned {
                    return Err(LogError::Poisoned {
                        path: st.dir.clone(),
                        cause: cause.clone(),
                    });
                }
                if st.state == RunState::Closed || offset >= st.leo {
                    return Err(LogError::Closed);
                }
                if level == Durability::Synced && st.sync_wanted <= offset {
                    st.sync_wanted = offset.plus(1);
                    self.signals.work.notify(1);
                }
                self.signals.progress.listen()
            };
            listener.await;
        }
    }

    /// Appends and waits for `level`: the whole produce path of one batch.
    pub async fn append_durable(
        &self,
        batch: &[u8],
        opts: AppendOptions,
        level: Durability,
    ) -> Result<AppendInfo> {
        let info = self.append(batch, opts).await?;
        self.wait_durable(info.last_offset, level).await?;
        Ok(info)
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes`, below the high
    /// watermark. From memory when the hot tail holds them, else a file range for sendfile.
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        first: FirstBatch,
    ) -> Result<ReadResult> {
        self.read_upto(offset, max_bytes, first, None).await
    }

    /// [`read`](Self::read) that also stops before `upper` (a batch boundary, e.g. the last
    /// stable offset for read_committed fetches).
    pub async fn read_upto(
        &self,
        offset: Offset,
        max_bytes: usize,
        first: FirstBatch,
        upper: Option<Offset>,
    ) -> Result<ReadResult> {
        let min_one = first == FirstBatch::Always;
        let (offsets, target) = {
            let mut st = self.inner.borrow_mut();
            let o = st.offsets();
            if offset < o.log_start || offset > o.high_watermark {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: o.log_start,
                    log_end: o.high_watermark,
                });
            }
            let bound = upper.map_or(o.high_watermark, |u| u.min(o.high_watermark));
            if offset >= bound {
                return Ok(result(ReadData::Empty, o));
            }
            if st.hot.start().is_some_and(|s| offset >= s) {
                let v = st.hot.read(offset, bound, max_bytes, min_one);
                let data = if v.is_empty() {
                    ReadData::Empty
                } else {
                    ReadData::Memory(v)
                };
                return Ok(result(data, o));
            }
            let dir = st.dir.clone();
            let Some((_, seg)) = st.segments.range_mut(..=offset).next_back() else {
                return Ok(result(ReadData::Empty, o));
            };
            let rel = offset.relative_to(seg.base).unwrap_or(0);
            let (_, start_hint) = seg.index.lookup(rel);
            let plain = seg.plain_file(&dir)?;
            let (Some(files), Some(plain)) = (seg.files.as_ref(), plain) else {
                return Ok(result(ReadData::Empty, o));
            };
            // where `bound` starts in this segment, if it does
            let bound_hint = (bound < seg.next_offset)
                .then(|| bound.relative_to(seg.base).map(|r| seg.index.lookup(r).1))
                .flatten();
            (
                o,
                (
                    files.dma.clone(),
                    plain,
                    seg.base,
                    start_hint,
                    seg.written_size,
                    seg.index.clone(),
                    bound_hint.map(|h| (h, bound)),
                ),
            )
        };
        let (dma, plain, seg_base, start_hint, mut end, index, bound_at) = target;
        if let Some((hint, bound)) = bound_at {
            if let Some(b) = segment::walk_headers(&dma, hint.0, end, |b| b.base < bound).await? {
                if b.base >= bound {
                    end = end.min(b.pos);
                }
            }
        }
        let Some(first_batch) =
            segment::walk_headers(&dma, start_hint.0, end, |b| b.last < offset).await?
        else {
            return Ok(result(ReadData::Empty, offsets));
        };
        if first_batch.last < offset || first_batch.pos + first_batch.len > end {
            return Ok(result(ReadData::Empty, offsets));
        }
        let start = first_batch.pos;
        let limit = start.saturating_add(max_bytes as u64).min(end);
        let range_end = if start + first_batch.len > limit {
            if min_one {
                start + first_batch.len
            } else {
                start
            }
        } else {
            let from = index.boundary_at_or_before(FilePos(limit)).0.max(start);
            match segment::walk_headers(&dma, from, end, |b| b.pos + b.len <= limit).await? {
                Some(b) if b.pos + b.len > limit => b.pos,
                _ => limit,
            }
        };
        let data = if range_end > start {
            ReadData::File {
                file: plain,
                position: FilePos(start),
                len: range_end - start,
                segment: seg_base,
            }
        } else {
            ReadData::Empty
        };
        Ok(result(data, offsets))
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp (ListOffsets).
    /// `None` when every visible record is older. Compressed batches answer with their base
    /// offset and max timestamp (their records are not decompressed here).
    pub async fn offset_for_timestamp(
        &self,
        ts: TimestampMs,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        struct Candidate {
            dma: Option<Rc<DmaFile>>,
            from: u64,
            end: u64,
            file_end: Offset,
            next: Offset,
        }
        let (log_start, hw, candidates) = {
            let st = self.inner.borrow();
            let mut c = Vec::new();
            for seg in st.segments.values() {
                if seg.next_offset <= st.log_start || seg.max_timestamp().is_none_or(|m| m < ts) {
                    continue;
                }
                let from = match seg.index.time_lower_bound(ts) {
                    Some(rel) => seg.index.lookup(rel.saturating_add(1)).1 .0,
                    None => 0,
                };
                c.push(Candidate {
                    dma: seg.files.as_ref().map(|f| f.dma.clone()),
                    from,
                    end: seg.written_size,
                    file_end: seg.next_offset.min(st.written.max(seg.base)),
                    next: seg.next_offset,
                });
            }
            (st.log_start, st.written, c)
        };
        let pick = |bytes: &[u8], base: Offset, max_ts: TimestampMs| {
            let recs = batch::record_timestamps(bytes);
            if recs.is_empty() {
                return Some((base.max(log_start), max_ts));
            }
            recs.into_iter()
                .map(|(d, t)| (base.plus(u64::from(d)), t))
                .find(|&(o, t)| t >= ts && o >= log_start)
        };
        for c in candidates {
            if let Some(dma) = c.dma.as_ref().filter(|_| c.end > c.from) {
                let found = segment::walk_headers(dma, c.from, c.end, |b| {
                    b.max_ts < ts || b.last < log_start
                })
                .await?;
                if let Some(b) = found.filter(|b| b.max_ts >= ts && b.pos + b.len <= c.end) {
                    let bytes = segment::read_exact_at(dma, b.pos, b.len as usize).await?;
                    if let Some(hit) = pick(&bytes, b.base, b.max_ts) {
                        return Ok(Some(hit));
                    }
                }
            }
            // the rest of this segment may still be only in memory
            let hot = self
                .inner
                .borrow()
                .hot
                .clone_range(c.file_end.max(log_start), c.next.min(hw));
            for b in hot.iter().filter(|b| b.max_ts >= ts) {
                if let Some(hit) = pick(&b.bytes, b.base, b.max_ts) {
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the first record carrying the log's largest timestamp
    /// (ListOffsets with MAX_TIMESTAMP, KIP-734).
    pub async fn max_timestamp_offset(&self) -> Result<Option<(Offset, TimestampMs)>> {
        let max = {
            let st = self.inner.borrow();
            st.segments
                .values()
                .filter(|s| s.next_offset > st.log_start)
                .filter_map(|s| s.max_timestamp())
                .max()
        };
        match max {
            Some(m) => self.offset_for_timestamp(m).await,
            None => Ok(None),
        }
    }

    /// Moves the log start offset forward (DeleteRecords). Whole segments below it are deleted.
    pub async fn delete_records(&self, before: Offset) -> Result<Offset> {
        {
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
            if before > st.log_start {
                st.log_start = before;
                st.meta().store(&st.dir)?;
            }
        }
        self.delete_segments_below_start()?;
        Ok(self.inner.borrow().log_start)
    }

    /// Applies retention.ms and retention.bytes: deletes whole sealed segments, oldest first.
    /// Returns how many were deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        {
            let mut st = self.inner.borrow_mut();
            st.check_writable()?;
            let now = st.env.clock.now_ms();
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut new_start = st.log_start;
            for seg in st.segments.values() {
                if !seg.sealed {
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
            if new_start > st.log_start {
                st.log_start = new_start;
                st.meta().store(&st.dir)?;
            }
        }
        self.delete_segments_below_start()
    }

    fn delete_segments_below_start(&self) -> Result<usize> {
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
            Segment::remove_files(&st.dir, *b)?;
        }
        if !doomed.is_empty() {
            sync_dir(&st.dir)?;
            tracing::info!(dir = %st.dir.display(), deleted = doomed.len(), log_start = %start, "deleted old segments");
        }
        Ok(doomed.len())
    }

    /// Writes everything, syncs, writes the active segment's indexes and leaves the
    /// clean-shutdown marker. The log refuses further use.
    pub async fn close(&self) -> Result<()> {
        {
            let mut st = self.inner.borrow_mut();
            if st.state != RunState::Open {
                return Ok(());
            }
            st.state = RunState::Closing;
        }
        self.signals.work.notify(usize::MAX);
        let task = self.flusher.borrow_mut().take();
        if let Some(t) = task {
            t.await;
        }
        let (dma, size, dir) = {
            let mut st = self.inner.borrow_mut();
            st.state = RunState::Closed;
            self.signals.progress.notify(usize::MAX);
            self.signals.space.notify(usize::MAX);
            if let Some(cause) = &st.poisoned {
                return Err(LogError::Poisoned {
                    path: st.dir.clone(),
                    cause: cause.clone(),
                });
            }
            let dir = st.dir.clone();
            let a = st.active();
            let dma = a.files.as_ref().map(|f| f.dma.clone());
            (dma, a.size, dir)
        };
        let dma = match dma {
            Some(d) => d,
            None => {
                let base = self.inner.borrow().active().base;
                segment::create_file(&dir, base).await?
            }
        };
        let path = path_of(&dma);
        dma.truncate(size)
            .await
            .map_err(|e| LogError::io("truncating", &path, e.into()))?;
        dma.fdatasync()
            .await
            .map_err(|e| LogError::io("syncing", &path, e.into()))?;
        let mut st = self.inner.borrow_mut();
        let leo = st.leo;
        let active = st.active_mut();
        active.finish_time_index();
        active.write_index_files(&dir)?;
        active.write_txn_index(&dir)?;
        write_snapshot(&dir, leo, &st.producers.to_json())?;
        let mut meta = st.meta();
        meta.clean_shutdown = Some(CleanShutdown {
            log_end_offset: leo.0,
            active_size: size,
        });
        meta.store(&dir)?;
        st.synced = leo;
        Ok(())
    }
}

fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(crate::index::file_name(offset, "producers"))
}

/// Offsets of the producer-state snapshots in `dir`, oldest first.
fn list_snapshots(dir: &Path) -> Result<Vec<Offset>> {
    let mut v = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".producers")) else {
            continue;
        };
        if let Ok(o) = stem.parse::<u64>() {
            v.push(Offset(o));
        }
    }
    v.sort();
    Ok(v)
}

/// Writes the producer-state snapshot as of `offset` (temp file, fsync, rename) and keeps only
/// the two newest.
fn write_snapshot(dir: &Path, offset: Offset, bytes: &[u8]) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("producers.tmp");
    fs::write(&tmp, bytes).map_err(|e| LogError::io("writing", &tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_data())
        .map_err(|e| LogError::io("syncing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io("renaming", &path, e))?;
    let all = list_snapshots(dir)?;
    for old in all.iter().rev().skip(2) {
        let _ = fs::remove_file(snapshot_path(dir, *old));
    }
    Ok(())
}

/// Rebuilds the producer state and the aborted-transaction lists after the segments are
/// recovered: from the newest usable snapshot, replaying the batches after it. Segments before
/// the snapshot must have their `.txnindex`; if one lacks it, everything is replayed.
async fn rebuild_producers(
    dir: &Path,
    segments: &mut BTreeMap<Offset, Segment>,
    leo: Offset,
    now_ms: TimestampMs,
) -> Result<ProducerStates> {
    let first_base = *segments.keys().next().expect("non-empty");
    let last_base = *segments.keys().next_back().expect("non-empty");
    let snaps = list_snapshots(dir)?;
    for s in snaps.iter().filter(|s| **s > leo) {
        // the log was truncated below it
        let _ = fs::remove_file(snapshot_path(dir, *s));
    }
    let mut start: Option<(Offset, ProducerStates)> = None;
    for s in snaps
        .iter()
        .rev()
        .filter(|s| **s <= leo && **s >= first_base)
        .filter(|s| **s == leo || segments.contains_key(s))
    {
        if let Some(st) = fs::read(snapshot_path(dir, *s))
            .ok()
            .and_then(|b| ProducerStates::from_json(&b))
        {
            start = Some((*s, st));
            break;
        }
    }
    let (mut from, mut state) = start.unwrap_or((first_base, ProducerStates::default()));
    for seg in segments.values_mut().filter(|s| s.base < from) {
        match Segment::load_txn_index(dir, seg.base) {
            Some(a) => seg.aborted = a,
            None => {
                tracing::info!(dir = %dir.display(), segment = %seg.base, "transaction index missing; replaying the whole log");
                from = first_base;
                state = ProducerStates::default();
                break;
            }
        }
    }
    for seg in segments.values_mut().filter(|s| s.base >= from) {
        let Some(files) = seg.files.as_ref() else {
            continue;
        };
        let mut aborted = Vec::new();
        let mut bad = None;
        segment::walk_batches(&files.dma, 0, seg.size, |h, control| {
            let marker = match control.map(producer::parse_marker) {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    bad = Some(e);
                    return;
                }
                None => None,
            };
            if let Some(a) = state.on_append(h, marker, h.base(), h.last(), now_ms) {
                aborted.push(a);
            }
        })
        .await?;
        if let Some(e) = bad {
            tracing::warn!(dir = %dir.display(), segment = %seg.base, error = %e, "skipped a bad control batch in replay");
        }
        seg.aborted = aborted;
        if seg.base != last_base {
            seg.write_txn_index(dir)?;
        }
    }
    if !state.is_empty() {
        tracing::debug!(dir = %dir.display(), producers = state.len(), from = %from, "producer state rebuilt");
    }
    Ok(state)
}

fn result(data: ReadData, o: LogOffsets) -> ReadResult {
    ReadResult {
        data,
        high_watermark: o.high_watermark,
        log_start_offset: o.log_start,
        log_end_offset: o.log_end,
    }
}
/// What the flusher does next.
enum Job {
    Write(Vec<Chunk>),
    Sync {
        dma: Rc<DmaFile>,
        target: Offset,
    },
    Wait {
        listener: EventListener,
        deadline: Option<Duration>,
    },
    Stop,
}

fn next_job(st: &mut Inner, signals: &Signals) -> Job {
    if st.poisoned.is_some() {
        return Job::Stop;
    }
    if st.queue.is_empty() {
        st.take_pending();
    }
    if let Some(first) = st.queue.front() {
        // one segment per job, up to and including its sealing chunk
        let seg = first.segment;
        let mut chunks = Vec::new();
        while let Some(c) = st.queue.front() {
            if c.segment != seg {
                break;
            }
            let c = st.queue.pop_front().expect("front exists");
            let seal = c.seal;
            chunks.push(c);
            if seal {
                break;
            }
        }
        return Job::Write(chunks);
    }
    let now = st.env.clock.now_ms();
    let unsynced = st.written.0 - st.synced.0;
    let due_at = st
        .unsynced_since_ms
        .zip(st.config.flush_ms)
        .map(|(since, ms)| since.saturating_add(ms as i64));
    let sync_due = unsynced > 0
        && (st.sync_wanted > st.synced
            || st.config.flush_messages.is_some_and(|n| unsynced >= n)
            || due_at.is_some_and(|t| now >= t)
            || st.state == RunState::Closing);
    if st.sync_in_flight {
        // its completion wakes the flusher (work event); writes were handled above
        return Job::Wait {
            listener: signals.work.listen(),
            deadline: None,
        };
    }
    if sync_due {
        if let Some(files) = st.active().files.as_ref() {
            return Job::Sync {
                dma: files.dma.clone(),
                target: st.written,
            };
        }
    }
    if st.state != RunState::Open {
        return Job::Stop;
    }
    Job::Wait {
        listener: signals.work.listen(),
        deadline: due_at.map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64)),
    }
}

/// The per-log background task: writes pending buffers in order, runs group fdatasyncs, seals
/// rolled segments. Stops when the log is closing and everything is written, or poisoned.
async fn flusher(inner: Rc<RefCell<Inner>>, signals: Rc<Signals>) {
    loop {
        let job = next_job(&mut inner.borrow_mut(), &signals);
        let outcome = match job {
            Job::Stop => break,
            Job::Wait { listener, deadline } => {
                match deadline {
                    Some(d) => {
                        futures_lite::future::or(listener, glommio::timer::sleep(d)).await;
                    }
                    None => listener.await,
                }
                Ok(())
            }
            Job::Write(chunks) => write_chunks(&inner, &signals, chunks).await,
            Job::Sync { dma, target } => {
                // the fdatasync runs beside the flusher: the next round's writes overlap it
                inner.borrow_mut().sync_in_flight = true;
                let (inner, signals) = (inner.clone(), signals.clone());
                glommio::spawn_local(async move {
                    let r = sync_to(&inner, &dma, target).await;
                    let mut st = inner.borrow_mut();
                    st.sync_in_flight = false;
                    if let Err(e) = r {
                        st.poison(e.to_string());
                    }
                    drop(st);
                    signals.progress.notify(usize::MAX);
                    signals.work.notify(usize::MAX);
                })
                .detach();
                Ok(())
            }
        };
        if let Err(e) = outcome {
            inner.borrow_mut().poison(e.to_string());
        }
        signals.progress.notify(usize::MAX);
        signals.space.notify(usize::MAX);
    }
    // wake everyone: waiters re-check and see either success, poison or closure
    signals.progress.notify(usize::MAX);
    signals.space.notify(usize::MAX);
}

fn inject(st: &Inner, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
    st.env.faults.as_ref().and_then(|f| f.take(matches))
}

async fn sync_to(inner: &Rc<RefCell<Inner>>, dma: &DmaFile, target: Offset) -> Result<()> {
    let fault = inject(&inner.borrow(), |f| f == Fault::SyncEio);
    let res = match fault {
        Some(_) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        None => dma.fdatasync().await.map_err(Into::into),
    };
    res.map_err(|e| LogError::io("fdatasync", path_of(dma), e))?;
    let mut st = inner.borrow_mut();
    if target > st.synced {
        st.synced = target;
    }
    if st.synced >= st.written {
        st.unsynced_since_ms = None;
    }
    Ok(())
}

async fn write_chunks(
    inner: &Rc<RefCell<Inner>>,
    signals: &Signals,
    chunks: Vec<Chunk>,
) -> Result<()> {
    let (dir, seg_base, existing) = {
        let st = inner.borrow();
        let seg_base = chunks[0].segment;
        let existing = st
            .segments
            .get(&seg_base)
            .and_then(|s| s.files.as_ref().map(|f| f.dma.clone()));
        (st.dir.clone(), seg_base, existing)
    };
    let dma = match existing {
        Some(d) => d,
        None => {
            let d = segment::create_file(&dir, seg_base).await?;
            let mut st = inner.borrow_mut();
            if let Some(s) = st.segments.get_mut(&seg_base) {
                s.files = Some(SegmentFiles {
                    dma: d.clone(),
                    plain: None,
                });
            }
            d
        }
    };
    let path = path_of(&dma);
    for chunk in chunks {
        if let Some(mut buf) = chunk.buf {
            let write_len = align_up(chunk.len);
            buf.as_bytes_mut()[chunk.len..write_len].fill(0);
            buf.trim_to_size(write_len);
            let end = chunk.file_pos + write_len as u64;
            let (prealloc, allocated) = {
                let st = inner.borrow();
                let a = st.segments.get(&seg_base).map_or(0, |s| s.allocated);
                (st.config.preallocate_bytes, a)
            };
            if prealloc > 0 && end > allocated {
                let target = end.div_ceil(prealloc) * prealloc;
                dma.pre_allocate(target, false)
                    .await
                    .map_err(|e| LogError::io("preallocating", &path, e.into()))?;
                if let Some(s) = inner.borrow_mut().segments.get_mut(&seg_base) {
                    s.allocated = target;
                }
            }
            let fault = inject(&inner.borrow(), |f| {
                matches!(f, Fault::WriteEio | Fault::ShortWrite)
            });
            let n = match fault {
                Some(Fault::WriteEio) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
                Some(_) if write_len > ALIGN => {
                    // persist only the first page for real, then report the short count
                    let mut first = glommio::allocate_dma_buffer(ALIGN);
                    first
                        .as_bytes_mut()
                        .copy_from_slice(&buf.as_bytes()[..ALIGN]);
                    dma.write_at(first, chunk.file_pos)
                        .await
                        .map_err(Into::into)
                }
                Some(_) => Ok(0), // a one-page write that stored nothing
                None => dma
                    .write_rc_at(Rc::new(buf), chunk.file_pos)
                    .await
                    .map_err(Into::into),
            }
            .map_err(|e| LogError::io("writing", &path, e))?;
            if n < write_len {
                return Err(LogError::io(
                    "writing",
                    &path,
                    std::io::Error::other(format!("short write: {n} of {write_len} bytes")),
                ));
            }
            let mut st = inner.borrow_mut();
            let now = st.env.clock.now_ms();
            if let Some(s) = st.segments.get_mut(&seg_base) {
                s.written_size = s.written_size.max(chunk.file_pos + chunk.len as u64);
            }
            st.written = st.written.max(chunk.end_offset);
            st.unwritten_bytes -= chunk.new_bytes;
            if st.written > st.synced && st.unsynced_since_ms.is_none() {
                st.unsynced_since_ms = Some(now);
            }
            let written = st.written;
            st.hot.evict(written);
            drop(st);
            signals.progress.notify(usize::MAX);
            signals.space.notify(usize::MAX);
        }
        if chunk.seal {
            seal(inner, &dma, seg_base, chunk.snapshot).await?;
        }
    }
    Ok(())
}

/// Finishes a rolled segment: trim the preallocation, fdatasync, write its indexes, move the
/// recovery point past it.
async fn seal(
    inner: &Rc<RefCell<Inner>>,
    dma: &DmaFile,
    base: Offset,
    snapshot: Option<Vec<u8>>,
) -> Result<()> {
    let path = path_of(dma);
    let size = inner.borrow().segments.get(&base).map_or(0, |s| s.size);
    dma.truncate(size)
        .await
        .map_err(|e| LogError::io("truncating", &path, e.into()))?;
    let fault = inject(&inner.borrow(), |f| f == Fault::SyncEio);
    match fault {
        Some(_) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        None => dma.fdatasync().await.map_err(Into::into),
    }
    .map_err(|e| LogError::io("fdatasync", &path, e))?;
    let mut st = inner.borrow_mut();
    let dir = st.dir.clone();
    let Some(seg) = st.segments.get_mut(&base) else {
        return Ok(());
    };
    seg.sealed = true;
    seg.allocated = size;
    seg.finish_time_index();
    seg.write_index_files(&dir)?;
    seg.write_txn_index(&dir)?;
    let next = seg.next_offset;
    if let Some(snap) = snapshot {
        write_snapshot(&dir, next, &snap)?;
    }
    st.synced = st.synced.max(next);
    st.recovery_point = next;
    st.meta().store(&dir)?;
    Ok(())
}
