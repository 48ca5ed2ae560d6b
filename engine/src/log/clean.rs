//! A log cleaner pass over this log (see [`crate::compact`] for the data path): the plan is
//! taken from the log's state, the offset map and the cleaned groups are built from the
//! sealed segments' files without holding that state, and each group is swapped in under the
//! maintenance permit after checking its source segments are still there unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::PartitionLog;
use crate::batch::{self, BatchHeader};
use crate::compact::{
    self, CleanStats, CleanerConfig, FilterCtx, OffsetMap, SwapRecord, Throttle, TxnTracker,
    Verdict,
};
use crate::error::{LogError, Result};
use crate::fault::Fault;
use crate::index::SegmentIndex;
use crate::producer::AbortedTxn;
use crate::segment::{self, Segment, SegmentFiles};
use crate::types::{FilePos, Offset, TimestampMs};

/// Read size of the cleaner's segment reads.
const READ_CHUNK: usize = 1 << 20;
/// The cleaned `.log` is written in pieces of this size.
const WRITE_CHUNK: usize = 1 << 20;

/// A sealed segment the pass reads (its file stays readable even once it is replaced).
#[derive(Clone)]
struct Source {
    base: Offset,
    next: Offset,
    size: u64,
    dma: Rc<DmaFile>,
    aborted: Vec<AbortedTxn>,
}

/// What a pass works from, taken from the log's state in one go.
struct Plan {
    dir: PathBuf,
    /// The cleanable segments, oldest first (from the one holding the log start).
    sources: Vec<Source>,
    /// The dirty section starts here.
    first_dirty: Offset,
    /// Every aborted transaction of the log (their markers may lie past the cleanable range).
    aborted: Vec<AbortedTxn>,
    /// Last offset of the last batch of every producer the partition knows.
    producer_last: HashMap<i64, u64>,
    ctx: FilterCtx,
    segment_bytes: u64,
    index_interval: u64,
}

/// Reads the batches of one segment in order, a chunk at a time.
struct Cursor {
    dma: Rc<DmaFile>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl Cursor {
    fn new(src: &Source) -> Cursor {
        Cursor {
            dma: src.dma.clone(),
            pos: 0,
            end: src.size,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// The next batch (a copy), or `None` at the end of the segment (or at bytes that do not
    /// form a batch, which a sealed segment does not have).
    async fn next(&mut self, throttle: &mut Throttle) -> Result<Option<Vec<u8>>> {
        if self.pos + batch::HEADER_LEN as u64 > self.end {
            return Ok(None);
        }
        let mut off = (self.pos - self.buf_pos) as usize;
        if self.buf.len() < off + batch::HEADER_LEN {
            self.fill(READ_CHUNK, throttle).await?;
            off = 0;
        }
        let Some(len) = BatchHeader::parse(&self.buf[off..]).and_then(|h| h.total_len()) else {
            return Ok(None);
        };
        if self.pos + len as u64 > self.end {
            return Ok(None);
        }
        if self.buf.len() < off + len {
            self.fill(len.max(READ_CHUNK), throttle).await?;
            off = 0;
            if self.buf.len() < len {
                return Ok(None);
            }
        }
        let out = self.buf[off..off + len].to_vec();
        self.pos += len as u64;
        Ok(Some(out))
    }

    async fn fill(&mut self, want: usize, throttle: &mut Throttle) -> Result<()> {
        let n = want.min((self.end - self.pos) as usize);
        self.buf = segment::read_exact_at(&self.dma, self.pos, n).await?;
        self.buf_pos = self.pos;
        throttle.charge(self.buf.len() as u64).await;
        Ok(())
    }
}

/// The output of one group, written and synced as `.cleaned` files.
struct Cleaned {
    base: Offset,
    next: Offset,
    size: u64,
    index: SegmentIndex,
    aborted: Vec<AbortedTxn>,
    /// Every batch was kept as it was and the group is one segment: no swap needed.
    unchanged: bool,
    horizon: Option<TimestampMs>,
}

/// Marks a pass as running for as long as it lives.
struct Running<'a>(&'a PartitionLog);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.inner.borrow_mut().cleaning = false;
    }
}

const INJECTED: &str = "stopping the log cleaner (injected)";

fn crashed(step: u8) -> LogError {
    LogError::Io {
        op: INJECTED,
        path: PathBuf::new(),
        source: std::io::Error::other(format!("after swap step {step}")),
    }
}

/// A stop injected by a test: the files stay as a killed process would leave them.
fn is_injected(e: &LogError) -> bool {
    matches!(e, LogError::Io { op, .. } if *op == INJECTED)
}

impl PartitionLog {
    /// Runs one log cleaner pass if the log is compacted and due (see [`crate::compact`]).
    /// Returns what it did, or `None` when nothing was due. Errors before a swap's commit
    /// leave the log as it was (the `.cleaned` files are removed); an error after it poisons
    /// the log, whose next open finishes the swap.
    pub async fn clean(&self, cfg: &CleanerConfig) -> Result<Option<CleanStats>> {
        // segments rolled before the pass count as sealed once their seals finish
        self.seals_settled().await;
        let Some(plan) = self.plan_clean(cfg).await? else {
            return Ok(None);
        };
        let _running = Running(self);
        let mut throttle = Throttle::new(cfg.io_bytes_per_sec);
        let mut stats = CleanStats::default();
        // 2. the offset map over the dirty section
        let mut map = OffsetMap::new(cfg.dedupe_buffer_bytes);
        let end = plan.sources.last().map_or(plan.first_dirty, |s| s.next);
        let mut map_end = end;
        let mut txns = TxnTracker::new(&plan.aborted);
        'map: for src in plan.sources.iter().filter(|s| s.next > plan.first_dirty) {
            let mut cur = Cursor::new(src);
            while let Some(b) = cur.next(&mut throttle).await? {
                let Some(h) = BatchHeader::parse(&b) else {
                    break;
                };
                if h.last() < plan.first_dirty {
                    continue;
                }
                if let Err(stop) = compact::map_batch(&b, &mut map, &mut txns, &plan.ctx) {
                    map_end = stop.max(plan.first_dirty);
                    break 'map;
                }
            }
        }
        if map_end <= plan.first_dirty && plan.first_dirty < end {
            tracing::warn!(dir = %plan.dir.display(), first_dirty = %plan.first_dirty, buffer = cfg.dedupe_buffer_bytes, "the dedupe buffer cannot hold one batch's keys; not cleaning");
            return Ok(None);
        }
        // 3. clean group by group, up to the segment where the map ends
        let sources: Vec<Source> = plan
            .sources
            .iter()
            .filter(|s| s.base < map_end)
            .cloned()
            .collect();
        let groups = group(&sources, plan.segment_bytes);
        let mut txns = TxnTracker::new(&plan.aborted);
        let mut horizon: Option<TimestampMs> = None;
        for g in groups {
            self.inner.borrow().check_writable()?;
            let cleaned = match self
                .write_group(&plan, g, &map, &mut txns, &mut throttle, &mut stats)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    if !is_injected(&e) {
                        compact::remove_cleaned(&plan.dir, g[0].base);
                    }
                    return Err(e);
                }
            };
            horizon = horizon.max(cleaned.horizon);
            stats.segments_in += g.len();
            stats.bytes_in += g.iter().map(|s| s.size).sum::<u64>();
            if cleaned.unchanged {
                compact::remove_cleaned(&plan.dir, cleaned.base);
                stats.segments_out += 1;
                stats.bytes_out += cleaned.size;
                continue;
            }
            stats.segments_out += 1;
            stats.bytes_out += cleaned.size;
            if !self.swap_in(&plan.dir, g, cleaned).await? {
                // the segments changed meanwhile (truncation, retention): the pass ends here
                return Ok(Some(stats));
            }
        }
        // the checkpoint: deduplicated up to map_end; tombstones due at `horizon`
        {
            let mut st = self.inner.borrow_mut();
            st.cleaner.first_dirty = map_end.0.max(st.cleaner.first_dirty);
            st.cleaner.delete_horizon = horizon;
        }
        super::metafiles::store_meta(&self.inner, |_| {}).await?;
        stats.first_dirty = map_end;
        tracing::info!(
            dir = %plan.dir.display(),
            segments_in = stats.segments_in,
            segments_out = stats.segments_out,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            records_removed = stats.records_removed,
            first_dirty = %map_end,
            "log cleaner pass done"
        );
        Ok(Some(stats))
    }

    /// Step 1, the plan, or `None` when the log is not compacted or nothing is due.
    async fn plan_clean(&self, cfg: &CleanerConfig) -> Result<Option<Plan>> {
        let (plan, first_dirty_dma) = {
            let mut st = self.inner.borrow_mut();
            if !st.config.cleanup.compact || st.cleaning || self.maintenance.available() == 0 {
                return Ok(None);
            }
            st.check_writable()?;
            let now = st.env.clock.now_ms();
            let c = st.config.compaction;
            let active = st.active().base;
            let mut uncleanable = active.min(st.last_stable()).min(st.high_watermark());
            // min.compaction.lag.ms: the first segment with younger records stops the range
            // (as in Kafka, only when set: 0 ignores timestamps, even ones in the future)
            if c.min_lag_ms > 0 {
                if let Some(young) = st.segments.values().find(|s| {
                    s.max_timestamp()
                        .is_some_and(|m| m > now.saturating_sub(c.min_lag_ms as i64))
                }) {
                    uncleanable = uncleanable.min(young.base);
                }
            }
            let log_start = st.log_start;
            let mut sources = Vec::new();
            for s in st.segments.values() {
                if s.next_offset <= log_start {
                    continue;
                }
                if !s.sealed || s.next_offset > uncleanable {
                    break;
                }
                let Some(files) = s.files.as_ref() else {
                    break;
                };
                sources.push(Source {
                    base: s.base,
                    next: s.next_offset,
                    size: s.size,
                    dma: files.dma.clone(),
                    aborted: s.aborted.clone(),
                });
            }
            if sources.is_empty() {
                return Ok(None);
            }
            let first_dirty = Offset(st.cleaner.first_dirty).max(sources[0].base);
            let dirty: u64 = sources
                .iter()
                .filter(|s| s.next > first_dirty)
                .map(|s| s.size)
                .sum();
            let total: u64 = sources.iter().map(|s| s.size).sum();
            let ratio_due =
                dirty > 0 && total > 0 && dirty as f64 / total as f64 >= c.min_dirty_ratio.get();
            let horizon_due = st.cleaner.delete_horizon.is_some_and(|t| t <= now);
            let first_dirty_dma = sources
                .iter()
                .find(|s| s.next > first_dirty)
                .map(|s| s.dma.clone())
                .filter(|_| dirty > 0 && !ratio_due && !horizon_due);
            if !ratio_due && !horizon_due && (dirty == 0 || c.max_lag_ms.is_none()) {
                return Ok(None);
            }
            let mut aborted: Vec<AbortedTxn> = Vec::new();
            for s in st.segments.values() {
                aborted.extend(s.aborted.iter().copied());
            }
            let producer_last = st
                .producers
                .iter()
                .filter_map(|(pid, e)| e.batches.back().map(|b| (*pid, b.last)))
                .collect();
            let plan = Plan {
                dir: st.dir.clone(),
                sources,
                first_dirty,
                aborted,
                producer_last,
                ctx: FilterCtx {
                    now,
                    delete_retention_ms: c.delete_retention_ms,
                    max_inflate_bytes: cfg.max_inflate_bytes,
                },
                segment_bytes: st.config.segment_bytes,
                index_interval: st.config.index_interval_bytes,
            };
            st.cleaning = true;
            (plan, first_dirty_dma.map(|d| (d, c.max_lag_ms)))
        };
        // max.compaction.lag.ms: due when the first dirty batch is older than the lag
        if let Some((dma, Some(max_lag))) = first_dirty_dma {
            let due = match segment::read_exact_at(&dma, 0, batch::HEADER_LEN).await {
                Ok(h) => BatchHeader::parse(&h).is_some_and(|h| {
                    h.max_timestamp.get() <= plan.ctx.now.saturating_sub(max_lag as i64)
                }),
                Err(e) => {
                    self.inner.borrow_mut().cleaning = false;
                    return Err(e);
                }
            };
            if !due {
                self.inner.borrow_mut().cleaning = false;
                return Ok(None);
            }
        }
        Ok(Some(plan))
    }

    fn stop_here(&self, step: u8) -> bool {
        let st = self.inner.borrow();
        st.env
            .faults
            .as_ref()
            .is_some_and(|f| f.take(|x| x == Fault::CleanerStop(step)).is_some())
    }

    fn armed_stop(&self) -> Option<u8> {
        let st = self.inner.borrow();
        let f = st.env.faults.as_ref()?;
        (7..=11).find(|s| f.take(|x| x == Fault::CleanerStop(*s)).is_some())
    }

    /// Writes the cleaned copy of one group as `.cleaned` files, each fdatasync'd, then
    /// fsyncs the directory.
    async fn write_group(
        &self,
        plan: &Plan,
        g: &[Source],
        map: &OffsetMap,
        txns: &mut TxnTracker,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<Cleaned> {
        let base = g[0].base;
        let next = g[g.len() - 1].next;
        let log_path = compact::segment_file(&plan.dir, base, "log", true);
        let file = crate::io::buffered_create(&log_path)
            .await
            .map_err(|e| LogError::io("creating", &log_path, e))?;
        let mut seg = Segment::new_empty(base);
        let mut out = GroupOut {
            file,
            path: log_path.clone(),
            buf: Vec::with_capacity(WRITE_CHUNK),
            flushed: 0,
        };
        let mut aborted = Vec::new();
        let mut unchanged = g.len() == 1;
        let mut horizon: Option<TimestampMs> = None;
        let mut pending: Option<Vec<u8>> = None;
        for (i, src) in g.iter().enumerate() {
            let mut cur = Cursor::new(src);
            loop {
                let b = cur.next(throttle).await?;
                let done = b.is_none();
                if let Some(prev) = match b {
                    Some(b) => pending.replace(b),
                    None if i + 1 == g.len() => pending.take(),
                    None => None,
                } {
                    let last_of_group = done && i + 1 == g.len();
                    let h = *BatchHeader::parse(&prev).expect("a cursor yields whole batches");
                    let pid = h.producer_id.get();
                    let retain = last_of_group
                        || (pid >= 0 && plan.producer_last.get(&pid) == Some(&h.last().0));
                    let (verdict, f) = compact::filter_batch(&prev, map, txns, &plan.ctx, retain);
                    stats.records_kept += f.kept;
                    stats.records_removed += f.removed;
                    let stored = match &verdict {
                        Verdict::Keep => Some(&prev[..]),
                        Verdict::Rewrite(b) => Some(&b[..]),
                        Verdict::Drop => None,
                    };
                    unchanged &= verdict == Verdict::Keep;
                    match stored {
                        None => stats.batches_removed += 1,
                        Some(bytes) => {
                            let sh = BatchHeader::parse(bytes).expect("stored batches parse");
                            let (Some(base_rel), Some(last_rel)) =
                                (sh.base().relative_to(base), sh.last().relative_to(base))
                            else {
                                unreachable!("groups keep relative offsets within u32")
                            };
                            seg.index.on_append(
                                plan.index_interval,
                                base_rel,
                                last_rel,
                                FilePos(seg.size),
                                bytes.len() as u64,
                                sh.max_timestamp.get(),
                            );
                            seg.size += bytes.len() as u64;
                            horizon = horizon.max(f.horizon);
                            if f.keep_abort_entry {
                                if let Some(a) = g
                                    .iter()
                                    .flat_map(|s| s.aborted.iter())
                                    .find(|a| a.producer_id == pid && a.last == h.base().0)
                                {
                                    aborted.push(*a);
                                }
                            }
                            out.push(bytes, throttle).await?;
                        }
                    }
                }
                if done {
                    break;
                }
            }
        }
        out.finish(throttle).await?;
        seg.next_offset = next;
        seg.finish_time_index();
        if self.stop_here(1) {
            return Err(crashed(1));
        }
        let txn_bytes = serde_json::to_vec(&aborted).map_err(|e| LogError::BadMetadata {
            path: plan.dir.clone(),
            reason: e.to_string(),
        })?;
        let files = [
            ("index", seg.index.encode_offsets()),
            ("timeindex", seg.index.encode_times()),
            ("txnindex", txn_bytes),
        ];
        for (k, (ext, bytes)) in files.into_iter().enumerate() {
            throttle.charge(bytes.len() as u64).await;
            compact::write_file(&compact::segment_file(&plan.dir, base, ext, true), bytes).await?;
            if self.stop_here(2 + k as u8) {
                return Err(crashed(2 + k as u8));
            }
        }
        compact::sync_dir_async(&plan.dir).await?;
        if self.stop_here(5) {
            return Err(crashed(5));
        }
        Ok(Cleaned {
            base,
            next,
            size: seg.size,
            index: seg.index,
            aborted,
            unchanged,
            horizon,
        })
    }

    /// Step 4, the swap of one group. `false` when its source segments changed since the
    /// plan: nothing swapped, the `.cleaned` files removed.
    async fn swap_in(&self, dir: &Path, g: &[Source], cleaned: Cleaned) -> Result<bool> {
        let _one_at_a_time = match self.maintenance.acquire_permit(1).await {
            Ok(p) => p,
            Err(_) => {
                compact::remove_cleaned(dir, cleaned.base);
                return Err(LogError::Closed);
            }
        };
        let same = {
            let st = self.inner.borrow();
            st.check_writable().is_ok()
                && g.iter().all(|src| {
                    st.segments.get(&src.base).is_some_and(|s| {
                        s.sealed && s.size == src.size && s.next_offset == src.next
                    })
                })
        };
        if !same {
            compact::remove_cleaned(dir, cleaned.base);
            return Ok(false);
        }
        let record = SwapRecord {
            base: cleaned.base.0,
            replaced: g.iter().map(|s| s.base.0).collect(),
        };
        if let Err(e) = compact::commit_swap(dir, &record).await {
            compact::remove_cleaned(dir, cleaned.base);
            let _ = crate::io::remove_file(&dir.join(compact::SWAP_FILE));
            return Err(e);
        }
        // committed: from here on a failure leaves the swap to the next open
        let r = self.finish_swap(dir, &record, cleaned).await;
        if let Err(e) = &r {
            self.inner
                .borrow_mut()
                .poison(format!("log cleaner swap: {e}"));
        }
        r.map(|()| true)
    }

    async fn finish_swap(&self, dir: &Path, record: &SwapRecord, cleaned: Cleaned) -> Result<()> {
        if self.stop_here(6) {
            return Err(crashed(6));
        }
        // the new .log is opened before its rename (the fd follows the inode), so the renames
        // and the in-memory switch happen with no await between them: no reader can look up
        // a replaced segment by its name while the name points at the cleaned file
        let dma = open_cleaned(dir, cleaned.base).await?;
        let stop = self.armed_stop();
        {
            let mut st = self.inner.borrow_mut();
            // readers of the replaced segments keep their old inodes: open the fds they use
            for r in &record.replaced {
                if let Some(seg) = st.segments.get_mut(&Offset(*r)) {
                    seg.plain_file(dir)?;
                }
            }
        }
        if !compact::apply_swap(dir, record, stop)? {
            return Err(crashed(stop.unwrap_or(0)));
        }
        {
            // the switch: one step, no await; readers holding the old files keep them
            let mut st = self.inner.borrow_mut();
            for r in &record.replaced {
                st.segments.remove(&Offset(*r));
                st.gapped.remove(&Offset(*r));
            }
            let mut seg = Segment::new_empty(cleaned.base);
            seg.files = Some(SegmentFiles { dma, plain: None });
            seg.size = cleaned.size;
            seg.written_size = cleaned.size;
            seg.allocated = cleaned.size;
            seg.next_offset = cleaned.next;
            seg.index = cleaned.index;
            seg.sealed = true;
            seg.aborted = cleaned.aborted;
            st.segments.insert(cleaned.base, seg);
            st.gapped.insert(cleaned.base);
            st.hot.drop_below(cleaned.next);
        }
        super::metafiles::store_meta(&self.inner, |_| {}).await?;
        compact::sync_dir_async(dir).await?;
        if self.stop_here(12) {
            return Err(crashed(12));
        }
        let path = dir.join(compact::SWAP_FILE);
        crate::io::remove_async(&path)
            .await
            .map_err(|e| LogError::io("deleting", &path, e))?;
        compact::sync_dir_async(dir).await
    }
}

/// Opens the cleaned `.log` of `base` (still under its `.cleaned` name) for O_DIRECT reads,
/// as segment files are opened (read+write, see `Segment::open_dma`).
async fn open_cleaned(dir: &Path, base: Offset) -> Result<Rc<DmaFile>> {
    let path = compact::segment_file(dir, base, "log", true);
    let f = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(|e| LogError::io("opening", &path, e.into()))?;
    Ok(Rc::new(f))
}

/// The cleaned `.log` being written, a chunk at a time.
struct GroupOut {
    file: glommio::io::BufferedFile,
    path: PathBuf,
    buf: Vec<u8>,
    flushed: u64,
}

impl GroupOut {
    async fn push(&mut self, bytes: &[u8], throttle: &mut Throttle) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush(throttle).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, throttle: &mut Throttle) -> Result<()> {
        while !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            let len = chunk.len();
            let n = crate::io::buffered_write(&self.file, chunk.clone(), self.flushed)
                .await
                .map_err(|e| LogError::io("writing", &self.path, e))?;
            if n == 0 {
                return Err(LogError::io(
                    "writing",
                    &self.path,
                    std::io::Error::other("short write"),
                ));
            }
            self.flushed += n as u64;
            throttle.charge(n as u64).await;
            if n < len {
                self.buf = chunk[n..].to_vec();
            }
        }
        Ok(())
    }

    async fn finish(mut self, throttle: &mut Throttle) -> Result<()> {
        self.flush(throttle).await?;
        crate::io::buffered_fdatasync(&self.file)
            .await
            .map_err(|e| LogError::io("syncing", &self.path, e))?;
        self.file
            .close()
            .await
            .map_err(|e| LogError::io("closing", &self.path, e.into()))
    }
}

/// Consecutive segments cleaned into one: at most `segment_bytes` of input together (one
/// segment alone may be larger) and offsets within u32 of the group's base.
fn group(sources: &[Source], segment_bytes: u64) -> Vec<&[Source]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, s) in sources.iter().enumerate() {
        let fits = size + s.size <= segment_bytes
            && s.next.0 - sources[start].base.0 <= u64::from(u32::MAX);
        if i > start && !fits {
            out.push(&sources[start..i]);
            start = i;
            size = 0;
        }
        size += s.size;
    }
    if start < sources.len() {
        out.push(&sources[start..]);
    }
    out
}
