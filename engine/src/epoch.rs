//! The leader epoch cache (Kafka's `LeaderEpochFileCache`): for each leader epoch, the first
//! offset written in it. Followers ask the leader where their last epoch ended
//! (OffsetsForLeaderEpoch) and truncate there, so diverged tails are cut at the right batch.
//!
//! Persisted as `leader-epoch-checkpoint` in the partition directory, in Kafka's text format:
//! a version line (`0`), a count line, then one `<epoch> <start offset>` line per entry.
//! Entries have strictly increasing epochs and non-decreasing start offsets.

use std::path::Path;

use crate::error::Result;
use crate::meta::durable_replace;
use crate::types::Offset;

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const VERSION: u32 = 0;

/// One entry: batches of `epoch` start at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start: Offset,
}

/// The entries of one partition, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that a batch of `epoch` starts at `start`. Only an epoch above the latest adds
    /// an entry (negative epochs mean "none", as in Kafka); returns whether one was added, so
    /// the caller persists the cache only when it changed.
    pub fn assign(&mut self, epoch: i32, start: Offset) -> bool {
        if epoch < 0 || self.latest().is_some_and(|l| epoch <= l.epoch) {
            return false;
        }
        debug_assert!(self.latest().is_none_or(|l| l.start <= start));
        self.entries.push(EpochEntry { epoch, start });
        true
    }

    /// Drops the entries that start at or after `end` (the log was truncated to `end`).
    /// Returns whether any went.
    pub fn truncate_from_end(&mut self, end: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops the entries that start after `end` (recovery: the log ends at `end`; an entry
    /// starting exactly there is a leader epoch whose first batch did not reach the disk).
    pub fn drop_beyond(&mut self, end: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start <= end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Forgets every entry (the log restarted empty).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested` this log knows and the offset
    /// where the next higher epoch starts (the log end offset `leo` for the latest epoch), as
    /// wire values; `(-1, -1)` when `requested` is -1 or above every epoch here.
    pub fn end_offset_for(&self, requested: i32, leo: Offset) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (-1, -1);
        if requested == -1 {
            return UNDEFINED;
        }
        if self.latest().is_some_and(|l| l.epoch == requested) {
            return (requested, leo.0 as i64);
        }
        let i = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(higher) = self.entries.get(i) else {
            return UNDEFINED;
        };
        match i.checked_sub(1).map(|f| self.entries[f]) {
            None => (requested, higher.start.0 as i64),
            Some(floor) => (floor.epoch, higher.start.0 as i64),
        }
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start.0));
        }
        s.into_bytes()
    }

    /// Parses a checkpoint file; `None` when it is not one this code wrote (the caller
    /// rebuilds the cache from the log then).
    pub fn decode(bytes: &[u8]) -> Option<LeaderEpochCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochCache::default();
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start: u64 = fields.next()?.parse().ok()?;
            if fields.next().is_some() || epoch < 0 {
                return None;
            }
            if cache
                .latest()
                .is_some_and(|l| l.epoch >= epoch || l.start.0 > start)
            {
                return None;
            }
            cache.entries.push(EpochEntry {
                epoch,
                start: Offset(start),
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(cache)
    }

    /// Loads `dir`'s checkpoint: `None` if it is missing or unreadable.
    pub fn load(dir: &Path) -> Option<LeaderEpochCache> {
        std::fs::read(dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|b| LeaderEpochCache::decode(&b))
    }

    /// Durably replaces `dir`'s checkpoint (temp file, fdatasync, rename, fsync dir).
    pub fn store(&self, dir: &Path) -> Result<()> {
        durable_replace(&dir.join(CHECKPOINT_FILE), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, s) in entries {
            assert!(c.assign(e, Offset(s)));
        }
        c
    }

    #[test]
    fn only_higher_epochs_add_entries() {
        let mut c = LeaderEpochCache::default();
        assert!(!c.assign(-1, Offset(0)));
        assert!(c.assign(0, Offset(0)));
        assert!(!c.assign(0, Offset(5)));
        assert!(c.assign(2, Offset(5)));
        assert!(!c.assign(1, Offset(9)));
        assert_eq!(
            c.entries(),
            [
                EpochEntry {
                    epoch: 0,
                    start: Offset(0)
                },
                EpochEntry {
                    epoch: 2,
                    start: Offset(5)
                }
            ]
        );
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 10), (3, 20), (6, 35)]);
        let leo = Offset(50);
        assert_eq!(c.end_offset_for(-1, leo), (-1, -1));
        assert_eq!(c.end_offset_for(6, leo), (6, 50));
        assert_eq!(c.end_offset_for(7, leo), (-1, -1));
        assert_eq!(c.end_offset_for(3, leo), (3, 35));
        assert_eq!(c.end_offset_for(4, leo), (3, 35));
        assert_eq!(c.end_offset_for(5, leo), (3, 35));
        assert_eq!(c.end_offset_for(1, leo), (1, 20));
        assert_eq!(c.end_offset_for(2, leo), (1, 20));
        // below every entry: the requested epoch, ending where the first entry starts
        assert_eq!(c.end_offset_for(0, leo), (0, 10));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, leo), (-1, -1));
    }

    #[test]
    fn truncation_and_the_file_format() {
        let mut c = cache(&[(0, 0), (2, 7), (5, 9)]);
        assert_eq!(c.encode(), b"0\n3\n0 0\n2 7\n5 9\n");
        assert_eq!(LeaderEpochCache::decode(&c.encode()), Some(c.clone()));
        assert!(!c.drop_beyond(Offset(9)));
        assert!(c.truncate_from_end(Offset(9)));
        assert_eq!(c.latest().map(|l| l.epoch), Some(2));
        assert!(!c.truncate_from_end(Offset(8)));
        assert!(c.drop_beyond(Offset(6)));
        assert_eq!(c.encode(), b"0\n1\n0 0\n");
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0 0\n",
            b"0\n2\n3 0\n2 5\n",
            b"0\n2\n1 9\n2 5\n",
            b"0\n1\n0 x\n",
            b"0\n1\n0 0\n1 1\n",
        ] {
            assert_eq!(LeaderEpochCache::decode(bad), None, "{bad:?}");
        }
        assert_eq!(
            LeaderEpochCache::decode(b"0\n0\n"),
            Some(LeaderEpochCache::default())
        );
    }
}
