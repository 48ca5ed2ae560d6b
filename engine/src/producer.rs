//! Producer state of one partition: idempotent sequence tracking and open transactions.
//!
//! Data path: every appended batch with a producer id passes [`ProducerStates::check`] under
//! the log's append order (a retried batch that matches one of the producer's last
//! [`KEPT_BATCHES`] batches is a duplicate and is acknowledged with its original offsets; a gap
//! is `OUT_OF_ORDER_SEQUENCE_NUMBER`; an older epoch is `INVALID_PRODUCER_EPOCH`), then
//! [`ProducerStates::on_append`] records it. A transactional batch opens a transaction at its
//! base offset; a control batch (COMMIT / ABORT marker) closes it. The last stable offset
//! (LSO) is the first offset of the oldest open transaction. Aborted transactions are handed
//! back to the log, which keeps them per segment (the aborted-transaction index).
//!
//! The whole table is small (one entry per producer) and is snapshotted as JSON at segment
//! rolls and clean shutdown (`<offset>.producers`); recovery loads the newest snapshot and
//! replays the batches after it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::batch::{self, BatchHeader};
use crate::types::Offset;

/// How many recent batches per producer are remembered for duplicate detection (Kafka's 5).
pub const KEPT_BATCHES: usize = 5;

/// Control record types (the key of a control batch's single record).
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProducerError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id} sent sequence {got} but {expected} was expected")]
    OutOfOrder {
        producer_id: i64,
        got: i32,
        expected: i32,
    },
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState { producer_id: i64, reason: String },
    #[error("invalid control batch: {0}")]
    BadControl(String),
}

impl ProducerError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            ProducerError::StaleEpoch { .. } => 47, // INVALID_PRODUCER_EPOCH
            ProducerError::OutOfOrder { .. } => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
            ProducerError::InvalidTxnState { .. } => 48, // INVALID_TXN_STATE
            ProducerError::BadControl(_) => 87,     // INVALID_RECORD
        }
    }
}

/// Offsets and sequences of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base: u64,
    pub last: u64,
}

/// What a partition knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// First offset of this producer's open transaction in this partition.
    pub txn_first: Option<u64>,
    /// Wall clock of the last append or marker (producer.id.expiration.ms).
    pub last_ms: i64,
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// A transaction that ended with an ABORT marker: consumers reading committed data drop the
/// producer's records in `[first, last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first: u64,
    /// Offset of the ABORT marker.
    pub last: u64,
    /// The LSO right after this abort (lets fetches stop searching early, as in Kafka).
    pub lso: u64,
}

/// What [`ProducerStates::check`] decided about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Append,
    /// A retry of a batch already in the log: answer with its offsets, do not append.
    Duplicate(BatchMeta),
}

/// The marker of a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Reads the COMMIT/ABORT marker of a control batch (its first record's key and value).
pub fn parse_marker(batch: &[u8]) -> Result<Marker, ProducerError> {
    let recs = batch::records(batch)
        .ok_or_else(|| ProducerError::BadControl("unparsable control record".into()))?;
    let r = recs
        .first()
        .ok_or_else(|| ProducerError::BadControl("control batch without records".into()))?;
    let key = r
        .key
        .filter(|k| k.len() >= 4)
        .ok_or_else(|| ProducerError::BadControl("control record key too short".into()))?;
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let coordinator_epoch = r
        .value
        .filter(|v| v.len() >= 6)
        .map(|v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]))
        .unwrap_or(0);
    match kind {
        CONTROL_ABORT | CONTROL_COMMIT => Ok(Marker {
            commit: kind == CONTROL_COMMIT,
            coordinator_epoch,
        }),
        other => Err(ProducerError::BadControl(format!(
            "unknown control type {other}"
        ))),
    }
}

/// Builds a control batch (one COMMIT or ABORT record) for `producer_id`/`epoch`.
pub fn build_marker(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    now: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(
        &(if commit {
            CONTROL_COMMIT
        } else {
            CONTROL_ABORT
        })
        .to_be_bytes(),
    );
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = batch::build(&[batch::NewRecord {
        key: Some(&key),
        value: Some(&value),
        timestamp: now,
    }]);
    if let Some(h) = BatchHeader::mut_from(&mut b) {
        h.attributes.set(h.attributes.get() | batch::ATTR_CONTROL);
    }
    batch::stamp_producer(&mut b, producer_id, epoch, -1, true);
    b
}

/// The sequence number after `seq` (sequences wrap from i32::MAX to 0).
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Last sequence of a batch starting at `first` with `count` records.
pub fn last_seq(first: i32, count: i32) -> i32 {
    let delta = count.max(1) - 1;
    if first > i32::MAX - delta {
        delta - (i32::MAX - first) - 1
    } else {
        first + delta
    }
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction.
    #[serde(skip)]
    open: BTreeSet<(u64, i64)>,
}

impl ProducerStates {
    /// Rebuilds derived fields after deserialising a snapshot.
    pub fn reindex(&mut self) {
        self.open = self
            .producers
            .iter()
            .filter_map(|(pid, e)| e.txn_first.map(|f| (f, *pid)))
            .collect();
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// First offset of the oldest open transaction.
    pub fn first_open(&self) -> Option<Offset> {
        self.open.iter().next().map(|(f, _)| Offset(*f))
    }

    /// Decides whether `h` (a validated batch about to be appended) is new, a duplicate or
    /// refused. Batches without a producer id are always appended.
    pub fn check(&self, h: &BatchHeader, marker: Option<Marker>) -> Result<Admit, ProducerError> {
        let pid = h.producer_id.get();
        let epoch = h.producer_epoch.get();
        if pid < 0 {
            if h.is_transactional() || marker.is_some() {
                return Err(ProducerError::InvalidTxnState {
                    producer_id: pid,
                    reason: "transactional batch without a producer id".into(),
                });
            }
            return Ok(Admit::Append);
        }
        let entry = self.producers.get(&pid);
        if let Some(e) = entry {
            if epoch < e.epoch {
                return Err(ProducerError::StaleEpoch {
                    producer_id: pid,
                    epoch,
                    current: e.epoch,
                });
            }
        }
        if marker.is_some() {
            return Ok(Admit::Append);
        }
        let first = h.base_sequence.get();
        // lastSequence = baseSequence + lastOffsetDelta (a cleaned batch keeps the delta)
        let last = last_seq(first, h.last_offset_delta.get().saturating_add(1));
        if let Some(e) = entry {
            if epoch == e.epoch {
                if let Some(d) = e
                    .batches
                    .iter()
                    .find(|b| b.first_seq == first && b.last_seq == last)
                {
                    return Ok(Admit::Duplicate(*d));
                }
                if let Some(prev) = e.last_seq() {
                    if first != next_seq(prev) {
                        return Err(ProducerError::OutOfOrder {
                            producer_id: pid,
                            got: first,
                            expected: next_seq(prev),
                        });
                    }
                }
            } else if first != 0 && !e.batches.is_empty() {
                // a new epoch starts its sequences at 0
                return Err(ProducerError::OutOfOrder {
                    producer_id: pid,
                    got: first,
                    expected: 0,
                });
            }
            if e.txn_first.is_some() && !h.is_transactional() {
                return Err(ProducerError::InvalidTxnState {
                    producer_id: pid,
                    reason: "non-transactional batch inside an open transaction".into(),
                });
            }
        }
        Ok(Admit::Append)
    }

    /// Records an appended batch at `[base, last]`. Returns the aborted transaction a marker
    /// closed (its LSO filled in from the state after the marker).
    pub fn on_append(
        &mut self,
        h: &BatchHeader,
        marker: Option<Marker>,
        base: Offset,
        last: Offset,
        now_ms: i64,
    ) -> Option<AbortedTxn> {
        let pid = h.producer_id.get();
        if pid < 0 {
            return None;
        }
        let epoch = h.producer_epoch.get();
        let e = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first: None,
            last_ms: now_ms,
            coordinator_epoch: -1,
        });
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.last_ms = now_ms;
        if let Some(m) = marker {
            e.coordinator_epoch = m.coordinator_epoch;
            let first = e.txn_first.take();
            if let Some(f) = first {
                self.open.remove(&(f, pid));
            }
            let lso = self.first_open().map_or(last.0 + 1, |o| o.0);
            return match first {
                Some(f) if !m.commit => Some(AbortedTxn {
                    producer_id: pid,
                    first: f,
                    last: last.0,
                    lso,
                }),
                _ => None,
            };
        }
        let first_seq = h.base_sequence.get();
        if first_seq >= 0 {
            if e.batches.len() == KEPT_BATCHES {
                e.batches.pop_front();
            }
            e.batches.push_back(BatchMeta {
                first_seq,
                last_seq: last_seq(first_seq, h.last_offset_delta.get().saturating_add(1)),
                base: base.0,
                last: last.0,
            });
        }
        if h.is_transactional() && e.txn_first.is_none() {
            e.txn_first = Some(base.0);
            self.open.insert((base.0, pid));
        }
        None
    }

    /// Whether `producer_id` has an open transaction here with epoch `epoch`.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first.is_some())
    }

    /// Forgets producers idle since before `older_than_ms` without an open transaction, and
    /// those whose every batch was deleted (`log_start`). Returns how many went.
    pub fn expire(&mut self, older_than_ms: i64, log_start: Offset) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first.is_some()
                || (e.last_ms >= older_than_ms
                    && e.batches.back().is_none_or(|b| b.last >= log_start.0))
        });
        before - self.producers.len()
    }

    /// The snapshot form (JSON; open transactions are derived again on load).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Option<ProducerStates> {
        let mut s: ProducerStates = serde_json::from_slice(bytes).ok()?;
        s.reindex();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, txn: bool) -> Vec<u8> {
        let vals: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8]).collect();
        let recs: Vec<batch::NewRecord<'_>> = vals
            .iter()
            .map(|v| batch::NewRecord {
                key: None,
                value: Some(v),
                timestamp: 1,
            })
            .collect();
        let mut b = batch::build(&recs);
        batch::stamp_producer(&mut b, pid, epoch, seq, txn);
        b
    }

    fn append(s: &mut ProducerStates, b: &[u8], base: u64) -> Result<Admit, ProducerError> {
        let h = BatchHeader::parse(b).expect("append");
        let marker = if h.is_control() {
            Some(parse_marker(b).expect("marker"))
        } else {
            None
        };
        let a = s.check(h, marker)?;
        if a == Admit::Append {
            let last = base + h.last_offset_delta.get() as u64;
            s.on_append(h, marker, Offset(base), Offset(last), 0);
        }
        Ok(a)
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        assert_eq!(
            append(&mut s, &header(7, 0, 0, 3, false), 0),
            Ok(Admit::Append)
        );
        assert_eq!(
            append(&mut s, &header(7, 0, 3, 2, false), 3),
            Ok(Admit::Append)
        );
        // a retry of the first batch is a duplicate carrying its original offsets
        assert_eq!(
            append(&mut s, &header(7, 0, 0, 3, false), 5),
            Ok(Admit::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 2,
                base: 0,
                last: 2
            }))
        );
        assert!(matches!(
            append(&mut s, &header(7, 0, 9, 1, false), 5),
            Err(ProducerError::OutOfOrder { expected: 5, .. })
        ));
        // a bumped epoch starts again at 0; the old epoch is fenced
        assert_eq!(
            append(&mut s, &header(7, 1, 0, 1, false), 5),
            Ok(Admit::Append)
        );
        assert!(matches!(
            append(&mut s, &header(7, 0, 5, 1, false), 6),
            Err(ProducerError::StaleEpoch { current: 1, .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            assert_eq!(
                append(&mut s, &header(1, 0, i, 1, false), i as u64),
                Ok(Admit::Append)
            );
        }
        assert!(matches!(
            append(&mut s, &header(1, 0, 6, 1, false), 7),
            Ok(Admit::Duplicate(_))
        ));
        assert!(append(&mut s, &header(1, 0, 1, 1, false), 7).is_err());
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(last_seq(i32::MAX, 1), i32::MAX);
        assert_eq!(last_seq(i32::MAX, 2), 0);
        assert_eq!(last_seq(i32::MAX - 1, 4), 1);
        assert_eq!(next_seq(i32::MAX), 0);
    }

    #[test]
    fn transactions_move_the_lso_and_aborts_are_reported() {
        let mut s = ProducerStates::default();
        append(&mut s, &header(1, 0, 0, 2, true), 10).expect("append");
        append(&mut s, &header(2, 0, 0, 1, true), 12).expect("append");
        assert_eq!(s.first_open(), Some(Offset(10)));
        assert!(s.in_transaction(1, 0));
        // a plain batch from a producer inside a transaction is refused
        assert!(matches!(
            append(&mut s, &header(1, 0, 2, 1, false), 13),
            Err(ProducerError::InvalidTxnState { .. })
        ));
        let commit = build_marker(1, 0, true, 3, 0);
        let h = *BatchHeader::parse(&commit).expect("append");
        let m = parse_marker(&commit).expect("append");
        assert_eq!(
            m,
            Marker {
                commit: true,
                coordinator_epoch: 3
            }
        );
        assert_eq!(s.on_append(&h, Some(m), Offset(13), Offset(13), 0), None);
        assert_eq!(s.first_open(), Some(Offset(12)));
        let abort = build_marker(2, 0, false, 3, 0);
        let h = *BatchHeader::parse(&abort).expect("append");
        let m = parse_marker(&abort).expect("append");
        assert_eq!(
            s.on_append(&h, Some(m), Offset(14), Offset(14), 0),
            Some(AbortedTxn {
                producer_id: 2,
                first: 12,
                last: 14,
                lso: 15
            })
        );
        assert_eq!(s.first_open(), None);
        // snapshots round-trip, open transactions included
        append(&mut s, &header(3, 0, 0, 1, true), 15).expect("append");
        let back = ProducerStates::from_json(&s.to_json()).expect("append");
        assert_eq!(back, s);
        assert_eq!(back.first_open(), Some(Offset(15)));
    }

    #[test]
    fn markers_with_an_older_epoch_are_refused() {
        let mut s = ProducerStates::default();
        append(&mut s, &header(1, 2, 0, 1, true), 0).expect("append");
        let old = build_marker(1, 1, false, 0, 0);
        let h = *BatchHeader::parse(&old).expect("append");
        assert!(matches!(
            s.check(&h, Some(parse_marker(&old).expect("marker"))),
            Err(ProducerError::StaleEpoch { .. })
        ));
    }
}
