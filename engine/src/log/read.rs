//! Reads: whole batches from the hot tail or as a file range, and the timestamp lookups.

use std::rc::Rc;

use glommio::io::DmaFile;

use super::types::{FirstBatch, LogOffsets, ReadData, ReadResult};
use super::PartitionLog;
use crate::batch;
use crate::error::{LogError, Result};
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
}

pub(super) fn result(data: ReadData, o: LogOffsets) -> ReadResult {
    ReadResult {
        data,
        high_watermark: o.high_watermark,
        log_start_offset: o.log_start,
        log_end_offset: o.log_end,
    }
}
