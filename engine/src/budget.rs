//! A bound on the write buffers of several logs together (one shard's).
//!
//! Each log bounds the bytes it has accepted and not yet handed to the kernel by its own
//! `write_buffer_bytes`; with thousands of partitions on a shard that alone would let the
//! shard hold thousands of buffers. A [`WriteBudget`] shared through `LogEnv` bounds their
//! sum: an append that would take the shard over it waits, in its log's FIFO order, until a
//! flusher hands bytes to the kernel and releases them.
//!
//! Data path: `PartitionLog::append` -> `Inner::has_room` asks [`WriteBudget::admits`] ->
//! the copy into the pending buffer [`WriteBudget::take`]s its bytes -> the flusher's write
//! completes -> [`WriteBudget::release`] wakes appenders waiting on any log of the shard.
//!
//! Progress: every byte counted here belongs to a log whose flusher writes it without waiting
//! for more appends, so waiting appenders always get room; a batch larger than the whole
//! budget is admitted when the shard holds nothing unwritten.

use std::cell::Cell;
use std::rc::Rc;

use event_listener::{Event, EventListener};

#[derive(Debug)]
pub struct WriteBudget {
    used: Cell<usize>,
    limit: usize,
    space: Event,
}

impl WriteBudget {
    pub fn new(limit: usize) -> Rc<WriteBudget> {
        Rc::new(WriteBudget {
            used: Cell::new(0),
            limit,
            space: Event::new(),
        })
    }

    /// Bytes accepted by the logs sharing this budget and not yet handed to the kernel.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `len` more bytes fit (an empty budget takes one batch, however large).
    pub(crate) fn admits(&self, len: usize) -> bool {
        let used = self.used.get();
        used == 0 || used + len <= self.limit
    }

    pub(crate) fn take(&self, len: usize) {
        self.used.set(self.used.get() + len);
    }

    pub(crate) fn release(&self, len: usize) {
        let used = self.used.get();
        assert!(len <= used, "write budget releases {len} of {used} bytes");
        self.used.set(used - len);
        if len > 0 {
            self.space.notify(usize::MAX);
        }
    }

    /// Fires when bytes are released.
    pub(crate) fn listen(&self) -> EventListener {
        self.space.listen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_one_oversized_batch_when_empty() {
        let b = WriteBudget::new(100);
        assert!(b.admits(1000), "an empty budget takes any batch");
        b.take(60);
        assert!(b.admits(40));
        assert!(!b.admits(41));
        b.release(60);
        assert_eq!(b.used(), 0);
    }
}
