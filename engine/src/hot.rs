//! The hot tail: recently appended batches kept in memory (already carrying their assigned
//! offsets), so tailing consumers are served without touching the disk. O_DIRECT writes bypass
//! the page cache, so without this every fresh read would go to the device.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::types::{Offset, TimestampMs};

/// One batch of the hot tail.
#[derive(Debug, Clone)]
pub struct HotBatch {
    pub base: Offset,
    pub last: Offset,
    pub max_ts: TimestampMs,
    pub bytes: Bytes,
}

/// A bound on the hot tails of several logs together (one shard's), on top of each log's own
/// `hot_cache_bytes`: while the total is over it, a log that writes evicts its own oldest
/// written batches. Reads of evicted ranges go to the segment files, so it trades speed for a
/// memory bound that does not grow with the number of partitions.
#[derive(Debug)]
pub struct HotBudget {
    used: Cell<usize>,
    limit: usize,
}

impl HotBudget {
    pub fn new(limit: usize) -> Rc<HotBudget> {
        Rc::new(HotBudget {
            used: Cell::new(0),
            limit,
        })
    }

    /// Bytes held by the hot tails sharing this budget.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    fn over(&self) -> bool {
        self.used.get() > self.limit
    }
}

/// Batches in offset order; never evicts a batch that has not been handed to the kernel yet,
/// so every offset at or above `written` is always served from here.
#[derive(Debug)]
pub struct HotTail {
    batches: VecDeque<HotBatch>,
    bytes: usize,
    limit: usize,
    budget: Option<Rc<HotBudget>>,
    arena: BytesMut,
}

/// Batches are copied into shared chunks of this size (one allocation per chunk, not per
/// batch). Each written log holds one partly filled chunk beyond what the budget counts.
const ARENA_BYTES: usize = 256 << 10;

impl HotTail {
    pub fn new(limit: usize, budget: Option<Rc<HotBudget>>) -> HotTail {
        HotTail {
            batches: VecDeque::new(),
            bytes: 0,
            limit,
            budget,
            arena: BytesMut::new(),
        }
    }

    fn account(&mut self, added: usize, removed: usize) {
        self.bytes = self.bytes + added - removed;
        if let Some(b) = &self.budget {
            b.used.set(b.used.get() + added - removed);
        }
    }

    /// Copies `batch` into the arena and returns the writable copy's index for patching.
    pub fn push(&mut self, batch: &[u8], base: Offset, last: Offset, max_ts: TimestampMs) {
        if self.arena.capacity() < batch.len() {
            self.arena = BytesMut::with_capacity(ARENA_BYTES.max(batch.len()));
        }
        self.arena.extend_from_slice(batch);
        let bytes = self.arena.split().freeze();
        debug_assert!(self.batches.back().is_none_or(|b| b.last < base));
        self.account(bytes.len(), 0);
        self.batches.push_back(HotBatch {
            base,
            last,
            max_ts,
            bytes,
        });
    }

    /// Drops the oldest batches beyond the byte limit or while the shared budget is over,
    /// keeping everything at or above `written` (not yet on disk).
    pub fn evict(&mut self, written: Offset) {
        while self.bytes > self.limit || self.budget.as_ref().is_some_and(|b| b.over()) {
            match self.batches.front() {
                Some(b) if b.last < written => {
                    let len = b.bytes.len();
                    self.batches.pop_front();
                    self.account(0, len);
                }
                _ => break,
            }
        }
    }

    /// First offset served from memory, if any.
    pub fn start(&self) -> Option<Offset> {
        self.batches.front().map(|b| b.base)
    }

    /// Whole batches from the one containing `offset`, below `visible_end`, up to `max_bytes`
    /// (at least one batch when `min_one`).
    pub fn read(
        &self,
        offset: Offset,
        visible_end: Offset,
        max_bytes: usize,
        min_one: bool,
    ) -> Vec<Bytes> {
        let i = self.batches.partition_point(|b| b.last < offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in self.batches.iter().skip(i) {
            if b.base >= visible_end {
                break;
            }
            let fits = total + b.bytes.len() <= max_bytes;
            if !(fits || min_one && out.is_empty()) {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        out
    }

    /// Clones of the batches with base offsets in `[from, to)` (cheap: `Bytes` are shared).
    pub fn clone_range(&self, from: Offset, to: Offset) -> Vec<HotBatch> {
        let i = self.batches.partition_point(|b| b.last < from);
        self.batches
            .iter()
            .skip(i)
            .take_while(|b| b.base < to)
            .cloned()
            .collect()
    }

    /// Drops every batch at or after `end` (the log was truncated there).
    pub fn truncate(&mut self, end: Offset) {
        while let Some(b) = self.batches.back() {
            if b.base < end {
                break;
            }
            let len = b.bytes.len();
            self.batches.pop_back();
            self.account(0, len);
        }
    }

    /// Drops every batch below `end` (the log cleaner replaced those segments: reads go to
    /// the cleaned files). Callers pass an offset everything below which is written.
    pub fn drop_below(&mut self, end: Offset) {
        while let Some(b) = self.batches.front() {
            if b.last >= end {
                break;
            }
            let len = b.bytes.len();
            self.batches.pop_front();
            self.account(0, len);
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }
}

impl Drop for HotTail {
    fn drop(&mut self) {
        let held = self.bytes;
        self.account(0, held);
    }
}
