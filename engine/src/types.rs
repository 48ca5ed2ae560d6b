//! Newtypes that keep offsets, file positions and timestamps from being mixed up.

use std::fmt;

/// A Kafka offset within one partition. Always non-negative inside the engine; the wire's
/// `-1`/`-2` sentinels are translated at the protocol boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub fn get(self) -> u64 {
        self.0
    }

    /// The offset `n` records after this one.
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }

    /// Distance from `base` to this offset, as stored in index files (u32 relative offsets).
    pub fn relative_to(self, base: Offset) -> Option<u32> {
        self.0
            .checked_sub(base.0)
            .and_then(|d| u32::try_from(d).ok())
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte position inside one segment's `.log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FilePos(pub u64);

impl FilePos {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub type TimestampMs = i64;

/// How far an append must have gone before its waiter is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Handed to the kernel (the O_DIRECT write completed): survives a crash of the process.
    /// This is what acks=1 waits for.
    Written,
    /// Covered by an fdatasync: survives a crash of the machine. This is what acks=all waits for.
    Synced,
}
