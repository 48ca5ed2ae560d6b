//! Sparse offset index and time index of one segment, in Kafka's on-disk format:
//! `.index` entries are (relativeOffset: i32, position: i32), `.timeindex` entries are
//! (timestamp: i64, relativeOffset: i32), all big-endian.
//!
//! Entries live in memory while the segment is active and are written out when the segment is
//! sealed or the log is closed cleanly; after a crash they are rebuilt by the recovery scan.

use zerocopy::byteorder::big_endian::{I32, I64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::types::{FilePos, Offset, TimestampMs};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct RawIndexEntry {
    relative_offset: I32,
    position: I32,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct RawTimeEntry {
    timestamp: I64,
    relative_offset: I32,
}

pub const INDEX_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;
const _: () = assert!(std::mem::size_of::<RawIndexEntry>() == INDEX_ENTRY_LEN);
const _: () = assert!(std::mem::size_of::<RawTimeEntry>() == TIME_ENTRY_LEN);

/// One sparse index entry: the batch starting at `position` has base offset `base + rel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub rel: u32,
    pub position: u32,
}

/// One time index entry: every record at or below offset `base + rel` has a timestamp <= `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub ts: TimestampMs,
    pub rel: u32,
}

/// Both indexes of a segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentIndex {
    pub offsets: Vec<IndexEntry>,
    pub times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    max_ts: Option<TimestampMs>,
}

impl SegmentIndex {
    /// Records a batch appended at `pos` (relative offsets to the segment base).
    pub fn on_append(
        &mut self,
        interval: u64,
        base_rel: u32,
        last_rel: u32,
        pos: FilePos,
        size: u64,
        max_ts: TimestampMs,
    ) {
        let grew = self.max_ts.is_none_or(|m| max_ts > m);
        if grew {
            self.max_ts = Some(max_ts);
        }
        if pos.0 > 0 && self.bytes_since_entry >= interval {
            debug_assert!(self.offsets.last().is_none_or(|e| e.rel < base_rel));
            self.offsets.push(IndexEntry {
                rel: base_rel,
                position: pos.0 as u32,
            });
            self.bytes_since_entry = 0;
            if let Some(m) = self.max_ts {
                if self.times.last().is_none_or(|t| m > t.ts) {
                    // m includes this batch, so the entry covers offsets up to its end.
                    self.times.push(TimeEntry {
                        ts: m,
                        rel: last_rel,
                    });
                }
            }
        }
        self.bytes_since_entry += size;
    }

    /// Forgets the batches at or after relative offset `rel_end`: the segment was truncated
    /// to `size` bytes, the position where the batch at `rel_end` started. Returns the
    /// position from which the caller walks the kept batches to [`observe`](Self::observe)
    /// their max timestamps: the kept time entries bound everything before it, but not the
    /// batches after the last kept offset entry.
    pub fn truncate(&mut self, rel_end: u32, size: u64) -> FilePos {
        let keep = self.offsets.partition_point(|e| e.rel < rel_end);
        self.offsets.truncate(keep);
        let keep = self.times.partition_point(|t| t.rel < rel_end);
        self.times.truncate(keep);
        let from = self.offsets.last().map_or(0, |e| u64::from(e.position));
        debug_assert!(from <= size);
        // as on_append counts: the bytes of the batches from the last entry's on
        self.bytes_since_entry = size - from;
        self.max_ts = self.times.last().map(|t| t.ts);
        FilePos(from)
    }

    /// Accounts for a kept batch's max timestamp after [`truncate`](Self::truncate).
    pub fn observe(&mut self, max_ts: TimestampMs) {
        if self.max_ts.is_none_or(|m| max_ts > m) {
            self.max_ts = Some(max_ts);
        }
    }

    /// Largest timestamp of any batch in the segment.
    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.max_ts
    }

    /// Position of the last indexed batch whose base offset is <= `rel`.
    pub fn lookup(&self, rel: u32) -> (u32, FilePos) {
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 {
            (0, FilePos(0))
        } else {
            let e = self.offsets[i - 1];
            (e.rel, FilePos(u64::from(e.position)))
        }
    }

    /// Largest indexed position that is <= `pos` (a batch boundary).
    pub fn boundary_at_or_before(&self, pos: FilePos) -> FilePos {
        let i = self
            .offsets
            .partition_point(|e| u64::from(e.position) <= pos.0);
        if i == 0 {
            FilePos(0)
        } else {
            FilePos(u64::from(self.offsets[i - 1].position))
        }
    }

    /// Relative offset after which the first record with timestamp >= `ts` must lie: every
    /// record at or below the returned offset is older. `None`: scan from the segment start.
    pub fn time_lower_bound(&self, ts: TimestampMs) -> Option<u32> {
        let i = self.times.partition_point(|t| t.ts < ts);
        (i > 0).then(|| self.times[i - 1].rel)
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * INDEX_ENTRY_LEN);
        for e in &self.offsets {
            let raw = RawIndexEntry {
                relative_offset: I32::new(e.rel as i32),
                position: I32::new(e.position as i32),
            };
            out.extend_from_slice(raw.as_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN);
        for e in &self.times {
            let raw = RawTimeEntry {
                timestamp: I64::new(e.ts),
                relative_offset: I32::new(e.rel as i32),
            };
            out.extend_from_slice(raw.as_bytes());
        }
        out
    }

    /// Parses index files written by `encode_*`, checking that they are plausible for a segment
    /// of `log_size` bytes holding relative offsets below `rel_end`. `None` means "rebuild".
    pub fn decode(
        offsets: &[u8],
        times: &[u8],
        log_size: u64,
        rel_end: u32,
    ) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(INDEX_ENTRY_LEN)
            || !times.len().is_multiple_of(TIME_ENTRY_LEN)
        {
            return None;
        }
        let mut idx = SegmentIndex::default();
        for chunk in offsets.chunks_exact(INDEX_ENTRY_LEN) {
            let raw = RawIndexEntry::read_from_bytes(chunk).ok()?;
            let (rel, pos) = (raw.relative_offset.get(), raw.position.get());
            if rel < 0 || pos <= 0 || pos as u64 >= log_size || rel as u32 >= rel_end {
                return None;
            }
            if let Some(prev) = idx.offsets.last() {
                if prev.rel >= rel as u32 || prev.position >= pos as u32 {
                    return None;
                }
            }
            idx.offsets.push(IndexEntry {
                rel: rel as u32,
                position: pos as u32,
            });
        }
        for chunk in times.chunks_exact(TIME_ENTRY_LEN) {
            let raw = RawTimeEntry::read_from_bytes(chunk).ok()?;
            let (ts, rel) = (raw.timestamp.get(), raw.relative_offset.get());
            if rel < 0 || rel as u32 >= rel_end {
                return None;
            }
            if let Some(prev) = idx.times.last() {
                if prev.ts >= ts || prev.rel > rel as u32 {
                    return None;
                }
            }
            idx.times.push(TimeEntry {
                ts,
                rel: rel as u32,
            });
        }
        // Every segment holding data is written with at least its final time entry (seal and
        // close call `finish_time_index`). An empty time index next to a non-empty log is
        // damage: accepting it left `max_ts` at None, which hid the whole segment from
        // timestamp lookups (ListOffsets) and from time-based retention. Rebuild instead.
        if log_size > 0 && idx.times.is_empty() {
            return None;
        }
        // the final entry written at seal/close carries the segment's largest timestamp
        idx.max_ts = idx.times.last().map(|t| t.ts);
        Some(idx)
    }
}

/// Segment file names: the base offset as 20 zero-padded digits.
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_added_per_interval_and_round_trip() {
        let mut idx = SegmentIndex::default();
        let mut pos = 0u64;
        for i in 0..100u32 {
            idx.on_append(
                4096,
                i * 10,
                i * 10 + 9,
                FilePos(pos),
                1000,
                i64::from(i) * 5,
            );
            pos += 1000;
        }
        assert_eq!(
            idx.offsets.len(),
            19,
            "one entry per 5 batches of 1000 bytes"
        );
        let d = SegmentIndex::decode(&idx.encode_offsets(), &idx.encode_times(), pos, 1000)
            .expect("decodes");
        assert_eq!(d.offsets, idx.offsets);
        assert_eq!(d.times, idx.times);
        let (rel, p) = idx.lookup(555);
        assert!(rel <= 555 && p.0 % 1000 == 0 && p.0 / 1000 == u64::from(rel / 10));
        // truncating to batch 42 keeps exactly the entries of the batches before it, and
        // appends after it index as if the later batches had never been there
        let mut t = idx.clone();
        let from = t.truncate(420, 42_000);
        assert!(t.offsets.iter().all(|e| e.rel < 420));
        assert_eq!(t.offsets, idx.offsets[..t.offsets.len()]);
        assert_eq!(
            from.0,
            u64::from(t.offsets.last().expect("entries").position)
        );
        for i in (from.0 / 1000)..42 {
            t.observe(i as i64 * 5);
        }
        assert_eq!(t.max_timestamp(), Some(41 * 5));
        let mut fresh = SegmentIndex::default();
        for (n, i) in (0..42u32).chain(50..60).enumerate() {
            let pos = FilePos(n as u64 * 1000);
            fresh.on_append(4096, i * 10, i * 10 + 9, pos, 1000, i64::from(i) * 5);
            if i >= 50 {
                t.on_append(4096, i * 10, i * 10 + 9, pos, 1000, i64::from(i) * 5);
            }
        }
        assert_eq!(t.offsets, fresh.offsets);
        assert_eq!(t.times, fresh.times);
        assert_eq!(t.max_timestamp(), fresh.max_timestamp());
        // a torn index is refused
        assert!(SegmentIndex::decode(&idx.encode_offsets()[..5], &[], pos, 1000).is_none());
    }
}
