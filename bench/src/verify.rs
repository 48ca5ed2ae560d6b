//! Verification: every message carries (run id, producer, sequence within producer and
//! partition). Consumers feed what they read, in partition order, to a [`PartitionCheck`];
//! at the end the checks are compared with what the producers had acknowledged.

use std::collections::BTreeMap;

use serde::Serialize;

/// The sequences one producer's messages had in one partition, as read back.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    max: Option<u64>,
    pub count: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) {
        let Ok(i) = usize::try_from(seq / 64) else {
            self.out_of_order += 1;
            return;
        };
        if i >= self.seen.len() {
            if i > (1 << 26) {
                // a sequence this large cannot come from loadgen: call it out of order
                self.out_of_order += 1;
                return;
            }
            self.seen.resize((i + 1).next_power_of_two(), 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[i] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[i] |= bit;
        self.count += 1;
        match self.max {
            Some(m) if seq < m => self.out_of_order += 1,
            _ => self.max = Some(seq),
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        usize::try_from(seq / 64)
            .ok()
            .and_then(|i| self.seen.get(i))
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Sequences in `0..upto` not seen.
    pub fn missing_below(&self, upto: u64) -> u64 {
        let full_words = (upto / 64) as usize;
        let mut seen = 0u64;
        for (i, w) in self.seen.iter().enumerate() {
            if i < full_words {
                seen += u64::from(w.count_ones());
            } else if i == full_words {
                let rem = upto % 64;
                if rem > 0 {
                    seen += u64::from((w & ((1u64 << rem) - 1)).count_ones());
                }
            }
        }
        upto - seen
    }

    /// Seen sequences at or above `from` (messages nobody sent).
    pub fn seen_from(&self, from: u64) -> u64 {
        self.count - (from - self.missing_below(from))
    }

    pub fn max_seen(&self) -> Option<u64> {
        self.max
    }
}

/// What one partition's consumer read.
#[derive(Debug, Clone, Default)]
pub struct PartitionCheck {
    /// (run id, producer) -> sequences.
    pub producers: BTreeMap<(u32, u32), SeqTracker>,
    /// Messages without a loadgen header, or from another run.
    pub foreign: u64,
    /// Offsets the consumer had to skip (OFFSET_OUT_OF_RANGE: deleted below the log start).
    pub skipped_offsets: u64,
    pub records: u64,
}

/// The verdict of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Acknowledged messages (produced and not failed).
    pub expected: u64,
    /// Distinct expected messages read back.
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Messages read that no producer of this run acknowledged sending.
    pub unexpected: u64,
    /// Messages of failed produce requests that were nevertheless stored.
    pub failed_but_stored: u64,
    pub foreign: u64,
    pub skipped_offsets: u64,
    /// Per partition: (partition, lost, duplicated, out of order).
    pub by_partition: Vec<(i32, u64, u64, u64)>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0
    }

    /// `verified 1000000/1000000: 0 lost, 0 duplicated, 0 out of order`
    pub fn line(&self) -> String {
        let mut s = format!(
            "verified {}/{}: {} lost, {} duplicated, {} out of order",
            self.received, self.expected, self.lost, self.duplicated, self.out_of_order
        );
        if self.unexpected > 0 {
            s.push_str(&format!(", {} unexpected", self.unexpected));
        }
        if self.skipped_offsets > 0 {
            s.push_str(&format!(
                " ({} offsets were gone when the consumer got there)",
                self.skipped_offsets
            ));
        }
        s
    }
}

/// Compares what was read with what each producer sent. `sent[producer][partition]` is the
/// number of messages the producer sent to the partition (its next sequence number);
/// `failed[producer]` holds (partition, first sequence, count) of unacknowledged batches.
pub fn verify(
    run_id: u32,
    checks: &BTreeMap<i32, PartitionCheck>,
    sent: &[Vec<u64>],
    failed: &[Vec<(i32, u64, u64)>],
) -> Verification {
    let mut v = Verification::default();
    let empty = SeqTracker::default();
    let partitions: Vec<i32> = (0..sent.first().map_or(0, |s| s.len()) as i32).collect();
    for &p in &partitions {
        let check = checks.get(&p);
        let (mut lost, mut dup, mut ooo) = (0, 0, 0);
        for (producer, per_part) in sent.iter().enumerate() {
            let n = per_part.get(p as usize).copied().unwrap_or(0);
            let t = check
                .and_then(|c| c.producers.get(&(run_id, producer as u32)))
                .unwrap_or(&empty);
            let seen_in_range = n - t.missing_below(n);
            let mut failed_n = 0;
            let mut stored_failed = 0;
            for &(fp, first, count) in failed.get(producer).map_or(&[][..], |f| &f[..]) {
                if fp != p {
                    continue;
                }
                failed_n += count;
                stored_failed += (first..first + count).filter(|&s| t.contains(s)).count() as u64;
            }
            let expected = n - failed_n;
            let received = seen_in_range - stored_failed;
            v.failed_but_stored += stored_failed;
            v.expected += expected;
            v.received += received;
            v.unexpected += t.seen_from(n);
            lost += expected - received;
            dup += t.duplicated;
            ooo += t.out_of_order;
        }
        if let Some(c) = check {
            // producers of this run that loadgen did not start (cannot happen) count as unexpected
            for ((run, producer), t) in &c.producers {
                if *run == run_id && *producer as usize >= sent.len() {
                    v.unexpected += t.count;
                }
            }
            v.foreign += c.foreign;
            v.skipped_offsets += c.skipped_offsets;
        }
        v.lost += lost;
        v.duplicated += dup;
        v.out_of_order += ooo;
        v.by_partition.push((p, lost, dup, ooo));
    }
    v
}

/// Consume-only mode: no producer counts are known, so gaps between the lowest and highest
/// sequence seen count as lost.
pub fn verify_standalone(checks: &BTreeMap<i32, PartitionCheck>) -> Verification {
    let mut v = Verification::default();
    for (&p, c) in checks {
        let (mut lost, mut dup, mut ooo) = (0, 0, 0);
        for t in c.producers.values() {
            let upto = t.max_seen().map_or(0, |m| m + 1);
            let first_seen = (0..upto).find(|&s| t.contains(s)).unwrap_or(0);
            lost += t.missing_below(upto) - first_seen;
            dup += t.duplicated;
            ooo += t.out_of_order;
            v.received += t.count;
            v.expected += upto - first_seen;
        }
        v.foreign += c.foreign;
        v.skipped_offsets += c.skipped_offsets;
        v.lost += lost;
        v.duplicated += dup;
        v.out_of_order += ooo;
        v.by_partition.push((p, lost, dup, ooo));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(run: u32, producer: u32, seqs: &[u64]) -> PartitionCheck {
        let mut c = PartitionCheck::default();
        let t = c.producers.entry((run, producer)).or_default();
        for &s in seqs {
            t.observe(s);
        }
        c
    }

    #[test]
    fn clean_run_verifies() {
        let seqs: Vec<u64> = (0..1000).collect();
        let checks = BTreeMap::from([(0, check_with(7, 0, &seqs))]);
        let v = verify(7, &checks, &[vec![1000]], &[vec![]]);
        assert!(v.ok(), "{v:?}");
        assert_eq!(
            v.line(),
            "verified 1000/1000: 0 lost, 0 duplicated, 0 out of order"
        );
    }

    #[test]
    fn loss_duplicates_and_reordering_are_counted() {
        let mut seqs: Vec<u64> = (0..100).filter(|s| *s != 40 && *s != 99).collect();
        seqs.push(10); // duplicate
        seqs.swap(50, 51); // reordered
        let checks = BTreeMap::from([(0, check_with(7, 0, &seqs))]);
        let v = verify(7, &checks, &[vec![100]], &[vec![]]);
        assert_eq!(v.expected, 100);
        assert_eq!(v.lost, 2);
        assert_eq!(v.duplicated, 1);
        assert_eq!(v.out_of_order, 1);
        assert_eq!(v.received, 98);
        assert!(!v.ok());
    }

    #[test]
    fn failed_batches_are_not_lost() {
        let seqs: Vec<u64> = (0..100).filter(|s| !(20..30).contains(s)).collect();
        let checks = BTreeMap::from([(0, check_with(7, 0, &seqs))]);
        let v = verify(7, &checks, &[vec![100]], &[vec![(0, 20, 10)]]);
        assert_eq!(v.expected, 90);
        assert_eq!(v.lost, 0);
        assert!(v.ok(), "{v:?}");
    }

    #[test]
    fn nothing_read_is_all_lost() {
        let v = verify(7, &BTreeMap::new(), &[vec![10, 5]], &[vec![]]);
        assert_eq!(v.lost, 15);
        assert_eq!(v.by_partition, vec![(0, 10, 0, 0), (1, 5, 0, 0)]);
    }

    #[test]
    fn standalone_finds_gaps() {
        let checks = BTreeMap::from([(0, check_with(1, 0, &[0, 1, 2, 4, 5]))]);
        let v = verify_standalone(&checks);
        assert_eq!(v.lost, 1);
        assert_eq!(v.received, 5);
    }
}
