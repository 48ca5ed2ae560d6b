//! Fault injection for tests: a plan shared with a `PartitionLog` that makes its next writes or
//! fsyncs fail (EIO, ENOSPC) or come up short, on the real files. Off unless a test installs one.

use std::cell::Cell;
use std::rc::Rc;

/// Which I/O the plan should break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next segment write fails with EIO before reaching the file.
    WriteEio,
    /// The next segment write persists only its first page and reports a short count.
    ShortWrite,
    /// The next segment write fails with ENOSPC before reaching the file (a full disk).
    WriteEnospc,
    /// The next fdatasync of a segment fails with EIO.
    SyncEio,
    /// The log cleaner's next pass stops dead after step `n` of its swap, as if the process
    /// had been killed there (1-4: after writing that many `.cleaned` files; 5: after the
    /// directory fsync; 6: after the commit record; 7-10: after that many renames; 11: after
    /// the replaced segments' deletion; 12: after partition.meta, before the record goes).
    CleanerStop(u8),
}

/// A queue-less, one-shot fault plan: arm a fault, and the next matching operation takes it.
#[derive(Debug, Default)]
pub struct FaultPlan {
    armed: Cell<Option<Fault>>,
    fired: Cell<u32>,
    /// While set, every segment write and preallocation fails with ENOSPC (a disk that stays
    /// full until the test frees it).
    disk_full: Cell<bool>,
}

impl FaultPlan {
    pub fn new() -> Rc<FaultPlan> {
        Rc::new(FaultPlan::default())
    }

    pub fn arm(&self, fault: Fault) {
        self.armed.set(Some(fault));
    }

    /// Makes the disk full (every segment write and preallocation fails with ENOSPC) or frees
    /// it again.
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.set(full);
    }

    /// Whether the plan currently fails writes with ENOSPC (`set_disk_full`); counts as a
    /// fired fault when it does.
    pub(crate) fn disk_full(&self) -> bool {
        let full = self.disk_full.get();
        if full {
            self.fired.set(self.fired.get() + 1);
        }
        full
    }

    /// How many injected faults have fired.
    pub fn fired(&self) -> u32 {
        self.fired.get()
    }

    pub(crate) fn take(&self, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        match self.armed.get() {
            Some(f) if matches(f) => {
                self.armed.set(None);
                self.fired.set(self.fired.get() + 1);
                Some(f)
            }
            _ => None,
        }
    }
}
