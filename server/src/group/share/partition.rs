//! One share-partition: the delivery state of a (share group, topic partition) as a state
//! machine with explicit time, kept on the partition's owning shard and tested without sockets.
//!
//! The in-flight window runs from the *share-partition start offset* (SPSO: every offset below
//! it is done) to the *share-partition end offset* (SPEO: the next offset never acquired yet).
//! Each offset of the window has a state, a delivery count, and while ACQUIRED the member
//! holding it and the deadline of its acquisition lock:
//!
//! ```text
//!            acquire (count + 1)              ACCEPT
//! AVAILABLE ---------------------> ACQUIRED ----------> ACKNOWLEDGED
//!     ^                              |  |
//!     |  RELEASE / lock expired /    |  | REJECT, GAP, or released with
//!     |  member gone (count < limit) |  | count >= group.share.delivery.count.limit
//!     +------------------------------+  +----------------------------> ARCHIVED
//! ```
//!
//! ACKNOWLEDGED and ARCHIVED are final: once the window's first offsets are final the SPSO
//! moves past them. The window never holds more than `max_record_locks` offsets
//! (`group.share.partition.max.record.locks`), which bounds both memory and how far delivery
//! may run ahead of the slowest unacknowledged record, as in Kafka.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_engine::Offset;
use thiserror::Error;

/// A record's delivery state (KIP-932).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

impl RecordState {
    fn is_final(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }
}

/// An acknowledgement type of ShareFetch / ShareAcknowledge (Kafka's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// 0: no record at this offset (a compacted gap or a control record).
    Gap,
    /// 1: processed; never delivered again.
    Accept,
    /// 2: give it back; delivered again (to any member), its count kept.
    Release,
    /// 3: unprocessable; never delivered again.
    Reject,
}

impl AckType {
    pub fn from_wire(v: i8) -> Option<AckType> {
        Some(match v {
            0 => AckType::Gap,
            1 => AckType::Accept,
            2 => AckType::Release,
            3 => AckType::Reject,
            _ => return None,
        })
    }
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AckError {
    /// An offset of the batch is not acquired by this member (never acquired, already
    /// acknowledged, its lock expired, or another member holds it).
    #[error("offset {0} is not acquired by this member")]
    InvalidRecordState(u64),
    #[error("{0}")]
    InvalidRequest(String),
}

impl AckError {
    /// INVALID_RECORD_STATE (121) / INVALID_REQUEST (42)
    pub fn kafka_code(&self) -> i16 {
        match self {
            AckError::InvalidRecordState(_) => 121,
            AckError::InvalidRequest(_) => 42,
        }
    }
}

/// The limits one share-partition runs with (the group's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// group.share.record.lock.duration.ms
    pub lock_duration: Duration,
    /// group.share.delivery.count.limit
    pub delivery_count_limit: u16,
    /// group.share.partition.max.record.locks: the most offsets in flight (SPEO - SPSO)
    pub max_record_locks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lock_duration: Duration::from_secs(30),
            delivery_count_limit: 5,
            max_record_locks: 2000,
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    state: RecordState,
    delivery_count: u16,
    /// The member holding the lock (ACQUIRED only).
    member: Option<Rc<str>>,
    deadline: Option<Instant>,
}

impl Slot {
    fn new_final() -> Slot {
        Slot {
            state: RecordState::Archived,
            delivery_count: 0,
            member: None,
            deadline: None,
        }
    }
}

/// One batch of the log as read (its offsets, whether it is a control batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRange {
    pub base: Offset,
    pub last: Offset,
    pub control: bool,
}

/// A run of acquired offsets with one delivery count (ShareFetch's AcquiredRecords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first: Offset,
    pub last: Offset,
    pub delivery_count: u16,
}

#[derive(Debug, Clone)]
pub struct SharePartition {
    spso: Offset,
    /// Slot `i` is offset `spso + i`; SPEO is `spso + window.len()`.
    window: VecDeque<Slot>,
    limits: Limits,
}

impl SharePartition {
    /// A share-partition whose delivery starts at `start` (the reset policy's offset).
    pub fn new(start: Offset, limits: Limits) -> Self {
        SharePartition {
            spso: start,
            window: VecDeque::new(),
            limits,
        }
    }

    pub fn spso(&self) -> Offset {
        self.spso
    }

    pub fn speo(&self) -> Offset {
        self.spso.plus(self.window.len() as u64)
    }

    /// Takes the group's current settings (applies to acquisitions from now on).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The state and delivery count of `offset` (`None` outside the window: below the SPSO
    /// everything is done, at or above the SPEO nothing was delivered).
    pub fn state(&self, offset: Offset) -> Option<(RecordState, u16)> {
        let i = offset.get().checked_sub(self.spso.get())?;
        self.window
            .get(i as usize)
            .map(|s| (s.state, s.delivery_count))
    }

    /// How many offsets are ACQUIRED now.
    pub fn acquired_count(&self) -> usize {
        self.window
            .iter()
            .filter(|s| s.state == RecordState::Acquired)
            .count()
    }

    fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let i = offset.checked_sub(self.spso.get())?;
        self.window.get_mut(i as usize)
    }

    /// Gives a slot back: AVAILABLE again, or ARCHIVED once delivered `limit` times.
    fn release_slot(s: &mut Slot, limit: u16) {
        s.member = None;
        s.deadline = None;
        s.state = if s.delivery_count >= limit {
            RecordState::Archived
        } else {
            RecordState::Available
        };
    }

    fn advance(&mut self) {
        while self.window.front().is_some_and(|s| s.state.is_final()) {
            self.window.pop_front();
            self.spso = self.spso.plus(1);
        }
    }

    /// Releases every lock whose deadline passed; returns how many offsets were released.
    pub fn expire(&mut self, now: Instant) -> usize {
        let limit = self.limits.delivery_count_limit;
        let mut n = 0;
        for s in self.window.iter_mut() {
            if s.state == RecordState::Acquired && s.deadline.is_some_and(|d| d <= now) {
                Self::release_slot(s, limit);
                n += 1;
            }
        }
        self.advance();
        n
    }

    /// The records below `log_start` are gone (retention, DeleteRecords): the window starts
    /// there at the earliest.
    pub fn advance_to_log_start(&mut self, log_start: Offset) {
        while self.spso < log_start {
            if self.window.pop_front().is_none() {
                self.spso = log_start;
                break;
            }
            self.spso = self.spso.plus(1);
        }
        self.advance();
    }

    /// Where the next read for an acquisition starts: the first AVAILABLE offset of the
    /// window (a redelivery), else the SPEO if the window has room and `high_watermark` is
    /// beyond it. `None`: nothing to acquire now.
    pub fn next_fetch_offset(&mut self, now: Instant, high_watermark: Offset) -> Option<Offset> {
        self.expire(now);
        if let Some(i) = self
            .window
            .iter()
            .position(|s| s.state == RecordState::Available)
        {
            return Some(self.spso.plus(i as u64));
        }
        let speo = self.speo();
        (self.window.len() < self.limits.max_record_locks && speo < high_watermark).then_some(speo)
    }

    /// Acquires for `member` the AVAILABLE offsets of `batches` (what a read returned, in
    /// order) and the new offsets past the SPEO, up to `max_records` offsets and the window
    /// bound. Control batches and the offsets between batches (removed by compaction) are
    /// archived without a delivery. Returns the acquired runs.
    pub fn acquire(
        &mut self,
        member: &Rc<str>,
        batches: &[BatchRange],
        max_records: usize,
        now: Instant,
    ) -> Vec<Acquired> {
        self.expire(now);
        let deadline = now + self.limits.lock_duration;
        let mut taken = 0usize;
        let mut out: Vec<Acquired> = Vec::new();
        let take = |out: &mut Vec<Acquired>, offset: u64, count: u16| match out.last_mut() {
            Some(a) if a.last.get() + 1 == offset && a.delivery_count == count => {
                a.last = Offset(offset)
            }
            _ => out.push(Acquired {
                first: Offset(offset),
                last: Offset(offset),
                delivery_count: count,
            }),
        };
        'batches: for b in batches {
            if b.last < b.base {
                continue;
            }
            let from = b.base.get().max(self.spso.get());
            for o in from..=b.last.get() {
                let speo = self.speo().get();
                if o < speo {
                    if b.control || taken >= max_records {
                        continue;
                    }
                    let Some(s) = self.slot_mut(o) else { continue };
                    if s.state != RecordState::Available {
                        continue;
                    }
                    s.state = RecordState::Acquired;
                    s.delivery_count = s.delivery_count.saturating_add(1);
                    s.member = Some(member.clone());
                    s.deadline = Some(deadline);
                    let count = s.delivery_count;
                    taken += 1;
                    take(&mut out, o, count);
                    continue;
                }
                // past the SPEO: the window grows by one offset at a time
                if self.window.len() >= self.limits.max_record_locks {
                    break 'batches;
                }
                while self.speo().get() < o && self.window.len() < self.limits.max_record_locks {
                    // offsets between batches hold no record
                    self.window.push_back(Slot::new_final());
                }
                if self.speo().get() < o || self.window.len() >= self.limits.max_record_locks {
                    break 'batches;
                }
                if b.control {
                    self.window.push_back(Slot::new_final());
                    continue;
                }
                if taken >= max_records {
                    break 'batches;
                }
                self.window.push_back(Slot {
                    state: RecordState::Acquired,
                    delivery_count: 1,
                    member: Some(member.clone()),
                    deadline: Some(deadline),
                });
                taken += 1;
                take(&mut out, o, 1);
            }
        }
        self.advance();
        out
    }

    /// Applies one acknowledgement batch of `member`: `types` has one entry for the whole
    /// range or one per offset. Every offset must be ACQUIRED by `member`, else nothing is
    /// applied (INVALID_RECORD_STATE).
    pub fn acknowledge(
        &mut self,
        member: &str,
        first: i64,
        last: i64,
        types: &[i8],
        now: Instant,
    ) -> Result<(), AckError> {
        if first < 0 || last < first {
            return Err(AckError::InvalidRequest(format!(
                "invalid acknowledgement range {first}..={last}"
            )));
        }
        let len = (last - first) as u64 + 1;
        if types.is_empty() || (types.len() != 1 && types.len() as u64 != len) {
            return Err(AckError::InvalidRequest(format!(
                "{} acknowledge types for {len} offsets",
                types.len()
            )));
        }
        let types: Vec<AckType> = types
            .iter()
            .map(|t| {
                AckType::from_wire(*t)
                    .ok_or_else(|| AckError::InvalidRequest(format!("acknowledge type {t}")))
            })
            .collect::<Result<_, _>>()?;
        self.expire(now);
        let (first, last) = (first as u64, last as u64);
        // outside the window nothing is acquired (and the check stays bounded by its size)
        if first < self.spso.get() {
            return Err(AckError::InvalidRecordState(first));
        }
        if last >= self.speo().get() {
            return Err(AckError::InvalidRecordState(self.speo().get().max(first)));
        }
        for o in first..=last {
            let ok = self.slot_mut(o).is_some_and(|s| {
                s.state == RecordState::Acquired && s.member.as_deref() == Some(member)
            });
            if !ok {
                return Err(AckError::InvalidRecordState(o));
            }
        }
        let limit = self.limits.delivery_count_limit;
        for (i, o) in (first..=last).enumerate() {
            let t = if types.len() == 1 { types[0] } else { types[i] };
            let Some(s) = self.slot_mut(o) else { continue };
            match t {
                AckType::Accept => {
                    s.state = RecordState::Acknowledged;
                    s.member = None;
                    s.deadline = None;
                }
                AckType::Release => Self::release_slot(s, limit),
                AckType::Reject | AckType::Gap => {
                    s.state = RecordState::Archived;
                    s.member = None;
                    s.deadline = None;
                }
            }
        }
        self.advance();
        Ok(())
    }

    /// Releases everything `member` holds (it left, was fenced or closed its share
    /// session); returns how many offsets were released.
    pub fn release_member(&mut self, member: &str) -> usize {
        let limit = self.limits.delivery_count_limit;
        let mut n = 0;
        for s in self.window.iter_mut() {
            if s.state == RecordState::Acquired && s.member.as_deref() == Some(member) {
                Self::release_slot(s, limit);
                n += 1;
            }
        }
        self.advance();
        n
    }

    /// Whether any offset is AVAILABLE (redeliverable now).
    pub fn has_available(&self) -> bool {
        self.window
            .iter()
            .any(|s| s.state == RecordState::Available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, last: u64) -> BatchRange {
        BatchRange {
            base: Offset(base),
            last: Offset(last),
            control: false,
        }
    }

    fn limits() -> Limits {
        Limits {
            lock_duration: Duration::from_secs(30),
            delivery_count_limit: 3,
            max_record_locks: 10,
        }
    }

    fn runs(v: &[Acquired]) -> Vec<(u64, u64, u16)> {
        v.iter()
            .map(|a| (a.first.get(), a.last.get(), a.delivery_count))
            .collect()
    }

    #[test]
    fn acquire_accept_advances_spso() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(0), limits());
        assert_eq!(p.next_fetch_offset(t0, Offset(5)), Some(Offset(0)));
        let got = p.acquire(&a, &[batch(0, 4)], 100, t0);
        assert_eq!(runs(&got), vec![(0, 4, 1)]);
        assert_eq!(p.speo(), Offset(5));
        // nothing left to acquire below the high watermark
        assert_eq!(p.next_fetch_offset(t0, Offset(5)), None);
        p.acknowledge("a", 0, 2, &[1], t0).expect("acknowledged");
        assert_eq!(p.spso(), Offset(3));
        // accepting again is refused: the records are no longer acquired
        assert_eq!(
            p.acknowledge("a", 1, 1, &[1], t0),
            Err(AckError::InvalidRecordState(1))
        );
        // another member cannot acknowledge a's records
        assert_eq!(
            p.acknowledge("b", 3, 4, &[1], t0),
            Err(AckError::InvalidRecordState(3))
        );
        p.acknowledge("a", 3, 4, &[1], t0).expect("acknowledged");
        assert_eq!((p.spso(), p.speo()), (Offset(5), Offset(5)));
    }

    #[test]
    fn two_members_never_share_a_record() {
        let t0 = Instant::now();
        let (a, b): (Rc<str>, Rc<str>) = (Rc::from("a"), Rc::from("b"));
        let mut p = SharePartition::new(Offset(0), limits());
        let ga = p.acquire(&a, &[batch(0, 3)], 2, t0);
        assert_eq!(runs(&ga), vec![(0, 1, 1)]);
        // b reads the same batch (from the first available offset) and gets the rest
        assert_eq!(p.next_fetch_offset(t0, Offset(4)), Some(Offset(2)));
        let gb = p.acquire(&b, &[batch(0, 3)], 100, t0);
        assert_eq!(runs(&gb), vec![(2, 3, 1)]);
        assert!(p.acquire(&b, &[batch(0, 3)], 100, t0).is_empty());
    }

    #[test]
    fn release_redelivers_with_a_higher_count_until_the_limit() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(10), limits());
        for n in 1..=3u16 {
            assert_eq!(p.next_fetch_offset(t0, Offset(11)), Some(Offset(10)));
            let got = p.acquire(&a, &[batch(10, 10)], 10, t0);
            assert_eq!(runs(&got), vec![(10, 10, n)]);
            p.acknowledge("a", 10, 10, &[2], t0).expect("acknowledged");
        }
        // delivered 3 times (the limit) and released: archived, never again
        assert_eq!(p.state(Offset(10)), None);
        assert_eq!(p.spso(), Offset(11));
        assert_eq!(p.next_fetch_offset(t0, Offset(11)), None);
    }

    #[test]
    fn reject_archives_and_gap_per_offset_types() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(0), limits());
        p.acquire(&a, &[batch(0, 3)], 10, t0);
        // per-offset types: accept, gap, release, reject
        p.acknowledge("a", 0, 3, &[1, 0, 2, 3], t0)
            .expect("acknowledged");
        assert_eq!(p.spso(), Offset(2));
        assert_eq!(p.state(Offset(2)), Some((RecordState::Available, 1)));
        assert_eq!(p.state(Offset(3)), Some((RecordState::Archived, 1)));
        let again = p.acquire(&a, &[batch(0, 3)], 10, t0);
        assert_eq!(runs(&again), vec![(2, 2, 2)]);
        // bad input is refused, not applied
        assert!(matches!(
            p.acknowledge("a", 2, 2, &[9], t0),
            Err(AckError::InvalidRequest(_))
        ));
        assert!(matches!(
            p.acknowledge("a", 2, 3, &[1, 1, 1], t0),
            Err(AckError::InvalidRequest(_))
        ));
        assert!(matches!(
            p.acknowledge("a", 3, 2, &[1], t0),
            Err(AckError::InvalidRequest(_))
        ));
        assert_eq!(p.state(Offset(2)), Some((RecordState::Acquired, 2)));
        // a range far past the window is refused at once
        assert_eq!(
            p.acknowledge("a", 2, i64::MAX, &[1], t0),
            Err(AckError::InvalidRecordState(4))
        );
        assert_eq!(
            p.acknowledge("a", 0, 2, &[1], t0),
            Err(AckError::InvalidRecordState(0))
        );
    }

    #[test]
    fn lock_expiry_releases_and_late_acks_are_refused() {
        let t0 = Instant::now();
        let (a, b): (Rc<str>, Rc<str>) = (Rc::from("a"), Rc::from("b"));
        let mut p = SharePartition::new(Offset(0), limits());
        p.acquire(&a, &[batch(0, 1)], 10, t0);
        let before = t0 + Duration::from_secs(29);
        assert_eq!(p.expire(before), 0);
        let after = t0 + Duration::from_secs(30);
        assert_eq!(p.expire(after), 2);
        assert_eq!(
            p.acknowledge("a", 0, 1, &[1], after),
            Err(AckError::InvalidRecordState(0))
        );
        let got = p.acquire(&b, &[batch(0, 1)], 10, after);
        assert_eq!(runs(&got), vec![(0, 1, 2)]);
        // an acknowledgement past the deadline finds the lock expired
        let late = after + Duration::from_secs(31);
        assert_eq!(
            p.acknowledge("b", 0, 0, &[1], late),
            Err(AckError::InvalidRecordState(0))
        );
    }

    #[test]
    fn leaving_member_releases_only_its_records() {
        let t0 = Instant::now();
        let (a, b): (Rc<str>, Rc<str>) = (Rc::from("a"), Rc::from("b"));
        let mut p = SharePartition::new(Offset(0), limits());
        p.acquire(&a, &[batch(0, 1)], 10, t0);
        p.acquire(&b, &[batch(2, 3)], 10, t0);
        assert_eq!(p.release_member("a"), 2);
        assert_eq!(p.state(Offset(0)), Some((RecordState::Available, 1)));
        assert_eq!(p.state(Offset(2)), Some((RecordState::Acquired, 1)));
        assert_eq!(p.acquired_count(), 2);
    }

    #[test]
    fn window_is_bounded_by_max_record_locks() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(0), limits());
        let got = p.acquire(&a, &[batch(0, 99)], 1000, t0);
        assert_eq!(runs(&got), vec![(0, 9, 1)]);
        assert_eq!(p.speo(), Offset(10));
        assert_eq!(p.next_fetch_offset(t0, Offset(100)), None);
        // accepting the first half makes room for as many more
        p.acknowledge("a", 0, 4, &[1], t0).expect("acknowledged");
        assert_eq!(p.next_fetch_offset(t0, Offset(100)), Some(Offset(10)));
        let more = p.acquire(&a, &[batch(0, 99)], 1000, t0);
        assert_eq!(runs(&more), vec![(10, 14, 1)]);
    }

    #[test]
    fn control_batches_and_gaps_are_archived_without_delivery() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(0), limits());
        let batches = [
            batch(0, 1),
            BatchRange {
                base: Offset(2),
                last: Offset(2),
                control: true,
            },
            // offsets 3..=4 were compacted away
            batch(5, 5),
        ];
        let got = p.acquire(&a, &batches, 10, t0);
        assert_eq!(runs(&got), vec![(0, 1, 1), (5, 5, 1)]);
        p.acknowledge("a", 0, 1, &[1], t0).expect("acknowledged");
        // 2..=4 were final already: the SPSO moves over them to the acquired 5
        assert_eq!(p.spso(), Offset(5));
    }

    #[test]
    fn log_start_moves_the_window() {
        let t0 = Instant::now();
        let a: Rc<str> = Rc::from("a");
        let mut p = SharePartition::new(Offset(0), limits());
        p.acquire(&a, &[batch(0, 3)], 10, t0);
        p.advance_to_log_start(Offset(2));
        assert_eq!(p.spso(), Offset(2));
        assert_eq!(p.state(Offset(2)), Some((RecordState::Acquired, 1)));
        p.advance_to_log_start(Offset(20));
        assert_eq!((p.spso(), p.speo()), (Offset(20), Offset(20)));
    }
}
