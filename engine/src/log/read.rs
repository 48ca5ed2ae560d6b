//! Reads: whole batches from the hot tail or as a file range, and the timestamp lookups.

use std::rc::Rc;

use glommio::io::DmaFile;

use super::types::{FirstBatch, LogOffsets, ReadData, ReadResult};
use super::PartitionLog;
use crate::batch;
use crate::error::{LogError, Result};
use crate::index::SegmentIndex;
use crate::segment;
use crate::types::{FilePos, Offset, TimestampMs};

impl PartitionLog {
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
        self.read_range(offset, max_bytes, first, upper, Reader::Consumer)
            .await
    }

    /// A follower's fetch: whole batches from the one containing `offset`, up to `max_bytes`
    /// (the first batch always), up to everything written, above the high watermark too.
    /// Offsets up to the log end are in range (empty above what is written). The result's
    /// `high_watermark` is still the consumers' one, `log_end_offset` the log end.
    pub async fn read_replica(&self, offset: Offset, max_bytes: usize) -> Result<ReadResult> {
        self.read_range(
            offset,
            max_bytes,
            FirstBatch::Always,
            None,
            Reader::Follower,
        )
        .await
    }

    /// The read shared by consumers and followers; `reader` decides which offsets are in
    /// range and where the data ends (high watermark or written).
    async fn read_range(
        &self,
        offset: Offset,
        max_bytes: usize,
        first: FirstBatch,
        upper: Option<Offset>,
        reader: Reader,
    ) -> Result<ReadResult> {
        let min_one = first == FirstBatch::Always;
        let (offsets, target) = {
            let mut st = self.inner.borrow_mut();
            let o = st.offsets();
            // how far a fetch may start, and where its data ends
            let (in_range, end) = match reader {
                // local mode as ever: past the high watermark is out of range
                Reader::Consumer if !st.replicated => (o.high_watermark, o.high_watermark),
                // a lagging high watermark (a new leader's) is no reason to reset consumers
                Reader::Consumer => (o.log_end, o.high_watermark),
                Reader::Follower => (o.log_end, o.written),
            };
            if offset < o.log_start || offset > in_range {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: o.log_start,
                    log_end: in_range,
                });
            }
            let bound = upper.map_or(end, |u| u.min(end));
            if offset >= bound {
                return Ok(result(ReadData::Empty, o));
            }
            if st.hot.start().is_some_and(|s| offset >= s) {
                let v = st.hot.read(offset, bound, max_bytes, min_one);
                st.env.stats.on_read(true);
                let data = if v.is_empty() {
                    ReadData::Empty
                } else {
                    ReadData::Memory(v)
                };
                return Ok(result(data, o));
            }
            st.env.stats.on_read(false);
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
    /// Replicated mode: only records below the high watermark count.
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
            (st.log_start, st.high_watermark(), c)
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
                        // hits come in offset order: one past the high watermark means none
                        return Ok(Some(hit).filter(|h| h.0 < hw));
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
                    return Ok(Some(hit).filter(|h| h.0 < hw));
                }
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the first record carrying the log's largest timestamp
    /// (ListOffsets with MAX_TIMESTAMP, KIP-734). Replicated mode: of the records below the
    /// high watermark.
    pub async fn max_timestamp_offset(&self) -> Result<Option<(Offset, TimestampMs)>> {
        let replicated = self.inner.borrow().replicated;
        let max = if replicated {
            self.max_timestamp_below_hw().await?
        } else {
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
}

/// Who reads.
#[derive(Clone, Copy)]
enum Reader {
    /// A consumer: up to the high watermark.
    Consumer,
    /// A follower replicating the log: up to everything written.
    Follower,
}

impl PartitionLog {
    /// The largest batch max timestamp below the high watermark (whole batches: one that
    /// straddles it counts). Segments wholly below it answer from their indexes; the one it
    /// falls in from its index cut at the high watermark plus a walk of the headers after the
    /// last index entry kept (at most index.interval.bytes and a batch).
    async fn max_timestamp_below_hw(&self) -> Result<Option<TimestampMs>> {
        /// The segment the high watermark falls in.
        struct Partial {
            dma: Rc<DmaFile>,
            index: SegmentIndex,
            rel: u32,
            hint: FilePos,
            hw: Offset,
            /// Written data ends past hw, so all of the visible part is in the file.
            file_end: u64,
        }
        let (mut max, partial) = {
            let st = self.inner.borrow();
            let hw = st.high_watermark();
            let mut max = None;
            let mut partial = None;
            for seg in st.segments.values() {
                if seg.next_offset <= st.log_start || seg.base >= hw {
                    continue;
                }
                if seg.next_offset <= hw {
                    max = max.max(seg.max_timestamp());
                } else if let Some(files) = seg.files.as_ref() {
                    let rel = hw.relative_to(seg.base).expect("hw is in the segment");
                    partial = Some(Partial {
                        dma: files.dma.clone(),
                        index: seg.index.clone(),
                        rel,
                        hint: seg.index.lookup(rel).1,
                        hw,
                        file_end: seg.written_size,
                    });
                }
            }
            (max, partial)
        };
        if let Some(mut p) = partial {
            // where the first batch at or past hw starts
            let cut = segment::walk_headers(&p.dma, p.hint.0, p.file_end, |b| b.base < p.hw)
                .await?
                .filter(|b| b.base >= p.hw)
                .map_or(p.file_end, |b| b.pos);
            let from = p.index.truncate(p.rel, cut);
            segment::walk_headers(&p.dma, from.0, cut, |b| {
                p.index.observe(b.max_ts);
                true
            })
            .await?;
            max = max.max(p.index.max_timestamp());
        }
        Ok(max)
    }
}

pub(super) fn result(data: ReadData, o: LogOffsets) -> ReadResult {
    ReadResult {
        data,
        high_watermark: o.high_watermark,
        log_start_offset: o.log_start,
        log_end_offset: o.log_end,
    }
}
