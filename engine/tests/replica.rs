//! The replication seam of the engine: follower appends at the leader's offsets, the leader
//! epoch cache, truncation, and a high watermark set by the broker.

mod common;

use std::os::unix::fs::MetadataExt;
use std::rc::Rc;

use common::{padded_batch, read_all, run, tagged_batch};
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::producer::{build_marker, AbortedTxn};
use sluice_engine::{
    AppendOptions, Durability, LogConfig, LogEnv, LogError, Offset, PartitionLog, TimestampType,
};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4 * 1024,
        hot_cache_bytes: 2 * 1024,
        ..LogConfig::default()
    }
}

async fn open(path: &std::path::Path) -> PartitionLog {
    PartitionLog::open(path, small_segments(), LogEnv::default())
        .await
        .expect("open")
}

fn at_epoch(leader_epoch: i32) -> AppendOptions {
    AppendOptions {
        leader_epoch,
        ..AppendOptions::default()
    }
}

/// A batch of `count` records from producer `pid`/`epoch` starting at sequence `seq`.
fn producer_batch(tag: u64, count: usize, pid: i64, epoch: i16, seq: i32, txn: bool) -> Vec<u8> {
    let mut b = padded_batch(tag, count, 120, 1_000 + tag as i64);
    batch::stamp_producer(&mut b, pid, epoch, seq, txn);
    b
}

/// Appends like the broker does on the leader: a transactional batch is verified first.
async fn lead(log: &PartitionLog, b: &[u8], epoch: i32) -> sluice_engine::AppendInfo {
    let h = BatchHeader::parse(b).expect("header");
    let mut opts = at_epoch(epoch);
    if h.is_transactional() && !h.is_control() {
        opts.txn_guard = Some(log.begin_txn_verification(h.producer_id.get()));
    }
    let info = log.append(b, opts).await.expect("leader append");
    log.wait_durable(info.last_offset, Durability::Written)
        .await
        .expect("written");
    info
}

/// Copies every batch the follower lacks from the leader, as a replica fetcher would.
/// Returns how many batches were copied.
async fn replicate(leader: &PartitionLog, follower: &PartitionLog) -> usize {
    let from = follower.offsets().log_end;
    let mut copied = 0;
    for (_, b) in read_all(leader, from, 3_000).await {
        let info = follower.append_replica(&b).await.expect("replica append");
        follower
            .wait_durable(info.last_offset, Durability::Synced)
            .await
            .expect("synced");
        copied += 1;
    }
    copied
}

#[test]
fn replica_appends_keep_the_leaders_bytes_offsets_and_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let leader = open(&lp).await;
        let follower = open(&fp).await;
        for i in 0..40u64 {
            let epoch = if i < 25 { 0 } else { 3 };
            let b = padded_batch(i, 1 + (i % 4) as usize, 150, 10 + i as i64);
            lead(&leader, &b, epoch).await;
        }
        // a LogAppendTime batch: the leader's timestamp and CRC must survive the copy
        let opts = AppendOptions {
            leader_epoch: 3,
            timestamp_type: TimestampType::LogAppendTime,
            ..AppendOptions::default()
        };
        let lat = leader
            .append(&tagged_batch(99, 2, 5), opts)
            .await
            .expect("append");
        leader
            .wait_durable(lat.last_offset, Durability::Written)
            .await
            .expect("written");
        assert_eq!(replicate(&leader, &follower).await, 41);
        assert!(follower.segment_count() > 2, "the copy rolled segments too");
        let want = read_all(&leader, Offset(0), 1 << 20).await;
        let got = read_all(&follower, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), want.len());
        for ((gb, gbytes), (wb, wbytes)) in got.iter().zip(&want) {
            assert_eq!(gb, wb);
            assert_eq!(gbytes, wbytes, "batch at {wb} is stored byte for byte");
        }
        let last = BatchHeader::parse(&got.last().expect("batches").1)
            .expect("header")
            .to_owned();
        assert_eq!(last.partition_leader_epoch.get(), 3);
        assert!(last.is_log_append_time());
        assert_eq!(follower.offsets().log_end, leader.offsets().log_end);
        // the copy survives a restart like any other data
        follower.close().await.expect("close");
        let follower = open(&fp).await;
        let again = read_all(&follower, Offset(0), 1 << 20).await;
        assert_eq!(again, want);
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

#[test]
fn a_replica_batch_must_not_start_below_the_log_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let leader = open(&lp).await;
        let follower = open(&fp).await;
        for i in 0..3u64 {
            lead(&leader, &tagged_batch(i, 2, 10), 1).await;
        }
        let batches = read_all(&leader, Offset(0), 1 << 20).await;
        follower
            .append_replica(&batches[0].1)
            .await
            .expect("in order");
        // a gap (the leader's cleaner removed offsets 2-3) is accepted, as Kafka's follower
        // only needs increasing offsets
        let info = follower
            .append_replica(&batches[2].1)
            .await
            .expect("above the log end");
        assert_eq!(info.base_offset, Offset(4));
        assert_eq!(follower.offsets().log_end, Offset(6));
        // below the log end: the skipped batch, a repeat, a producer's batch (base offset 0)
        for (b, got) in [
            (&batches[1].1, 2),
            (&batches[0].1, 0),
            (&tagged_batch(7, 1, 1), 0),
        ] {
            let err = follower.append_replica(b).await.expect_err("refused");
            assert!(
                matches!(err, LogError::OffsetMismatch { expected: Offset(6), got: g } if g == got),
                "{err}"
            );
            assert_eq!(err.kafka_code(), 1);
        }
        // validated like a produce: a flipped byte fails the CRC
        let mut bad = batches[2].1.clone();
        BatchHeader::mut_from(&mut bad)
            .expect("header")
            .base_offset
            .set(6);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let err = follower.append_replica(&bad).await.expect_err("refused");
        assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
        assert_eq!(follower.offsets().log_end, Offset(6));
        // the gap survives a crash: the recovery scan of the active segment expects it
        follower
            .wait_durable(Offset(5), sluice_engine::Durability::Synced)
            .await
            .expect("synced");
        drop(follower);
        let follower = open(&fp).await;
        assert_eq!(follower.offsets().log_end, Offset(6));
        let got: Vec<u64> = read_all(&follower, Offset(0), 1 << 20)
            .await
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(got, vec![0, 4]);
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

#[test]
fn producer_state_is_carried_by_replica_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let leader = open(&lp).await;
        let follower = open(&fp).await;
        lead(&leader, &producer_batch(1, 3, 9, 0, 0, false), 0).await;
        lead(&leader, &producer_batch(2, 2, 9, 0, 3, false), 0).await;
        lead(&leader, &tagged_batch(3, 1, 1), 0).await;
        lead(&leader, &producer_batch(4, 1, 9, 0, 5, false), 0).await;
        replicate(&leader, &follower).await;
        let strip = |log: &PartitionLog| {
            let mut v = log.producers();
            for (_, e) in &mut v {
                e.last_ms = 0; // the wall clock of each log's own append
            }
            v
        };
        assert_eq!(strip(&follower), strip(&leader));
        assert_eq!(strip(&follower)[0].1.batches.len(), 3);
        // promoted: the producer retries its last batch against the new leader
        let retry = follower
            .append(&producer_batch(4, 1, 9, 0, 5, false), at_epoch(1))
            .await
            .expect("append");
        assert!(retry.duplicate);
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (Offset(6), Offset(6))
        );
        let gap = follower
            .append(&producer_batch(5, 1, 9, 0, 9, false), at_epoch(1))
            .await
            .expect_err("gap");
        assert_eq!(gap.kafka_code(), 45, "{gap}");
        let next = follower
            .append(&producer_batch(5, 1, 9, 0, 6, false), at_epoch(1))
            .await
            .expect("append");
        assert_eq!(next.base_offset, Offset(7));
        // the state also survives a crash of the follower (replayed from the log)
        follower
            .wait_durable(next.last_offset, Durability::Synced)
            .await
            .expect("synced");
        drop(follower);
        let follower = open(&fp).await;
        let retry = follower
            .append(&producer_batch(5, 1, 9, 0, 6, false), at_epoch(1))
            .await
            .expect("append");
        assert!(retry.duplicate && retry.base_offset == Offset(7));
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

#[test]
fn transaction_markers_arrive_through_replica_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let leader = open(&lp).await;
        let follower = open(&fp).await;
        lead(&leader, &producer_batch(1, 2, 5, 0, 0, true), 0).await; // 0..=1
        lead(&leader, &producer_batch(2, 1, 6, 0, 0, true), 0).await; // 2
        lead(&leader, &tagged_batch(3, 1, 1), 0).await; // 3
        replicate(&leader, &follower).await;
        assert_eq!(follower.last_stable_offset(), Offset(0));
        assert!(follower.in_transaction(5, 0) && follower.in_transaction(6, 0));
        let abort = lead(&leader, &build_marker(5, 0, false, 0, 7), 0).await; // 4
        lead(&leader, &build_marker(6, 0, true, 0, 7), 0).await; // 5
        replicate(&leader, &follower).await;
        assert_eq!(abort.base_offset, Offset(4));
        let want = vec![AbortedTxn {
            producer_id: 5,
            first: 0,
            last: 4,
            lso: 2,
        }];
        assert_eq!(follower.aborted_transactions(Offset(0), Offset(6)), want);
        assert_eq!(follower.last_stable_offset(), Offset(6));
        assert!(!follower.in_transaction(5, 0));
        // a transactional replica batch needs no verification token: the leader checked it
        lead(&leader, &producer_batch(4, 1, 5, 0, 2, true), 0).await;
        replicate(&leader, &follower).await;
        assert!(follower.in_transaction(5, 0));
        assert_eq!(follower.last_stable_offset(), Offset(6));
        follower.close().await.expect("close");
        let follower = open(&fp).await;
        assert_eq!(follower.aborted_transactions(Offset(0), Offset(7)), want);
        assert_eq!(follower.last_stable_offset(), Offset(6));
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
}

/// Appends batches at leader epochs 0, 0, 2, 2, 2, 5 (offsets 0..=1, 2..=3, ...; two records
/// each) and returns the log end.
async fn epoch_history(log: &PartitionLog) -> Offset {
    for (i, epoch) in [0, 0, 2, 2, 2, 5].into_iter().enumerate() {
        lead(log, &tagged_batch(i as u64, 2, 10), epoch).await;
    }
    log.offsets().log_end
}

fn checkpoint(path: &std::path::Path) -> String {
    std::fs::read_to_string(path.join("leader-epoch-checkpoint")).expect("checkpoint")
}

#[test]
fn the_epoch_cache_is_kept_persisted_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    let (l, f) = (lp.clone(), fp.clone());
    run(move || async move {
        let leader = open(&l).await;
        assert_eq!(leader.latest_epoch(), None);
        assert_eq!(epoch_history(&leader).await, Offset(12));
        let want = vec![(0, Offset(0)), (2, Offset(4)), (5, Offset(10))];
        assert_eq!(leader.epoch_entries(), want);
        assert_eq!(leader.latest_epoch(), Some(5));
        // a lower epoch than the latest adds nothing
        lead(&leader, &tagged_batch(9, 1, 10), 3).await;
        assert_eq!(leader.epoch_entries(), want);
        // and appends at the latest epoch never rewrite the checkpoint
        let stamp = |p: &std::path::Path| {
            let m = std::fs::metadata(p.join("leader-epoch-checkpoint")).expect("stat");
            (m.modified().expect("mtime"), m.ino())
        };
        let before = stamp(&l);
        for i in 0..20 {
            lead(&leader, &tagged_batch(100 + i, 1, 10), 5).await;
        }
        leader
            .wait_durable(Offset(32), Durability::Synced)
            .await
            .expect("synced");
        assert_eq!(stamp(&l), before, "the checkpoint was not rewritten");
        assert_eq!(leader.epoch_entries(), want);
        // the follower takes the epochs from the batch headers
        let follower = open(&f).await;
        replicate(&leader, &follower).await;
        assert_eq!(follower.epoch_entries(), want);
        // persisted before the data, in Kafka's text format
        assert_eq!(checkpoint(&f), "0\n3\n0 0\n2 4\n5 10\n");
        drop(follower); // a crash: reloaded from the file
        let follower = open(&f).await;
        assert_eq!(follower.epoch_entries(), want);
        follower.close().await.expect("close");
        leader.close().await.expect("close");
    });
    // missing, then damaged: rebuilt from the partitionLeaderEpoch of the batches
    for damage in [None, Some("0\n3\n0 0\n2 4\n")] {
        match damage {
            None => std::fs::remove_file(fp.join("leader-epoch-checkpoint")).expect("rm"),
            Some(text) => std::fs::write(fp.join("leader-epoch-checkpoint"), text).expect("write"),
        }
        let f = fp.clone();
        run(move || async move {
            let follower = open(&f).await;
            assert_eq!(
                follower.epoch_entries(),
                vec![(0, Offset(0)), (2, Offset(4)), (5, Offset(10))]
            );
            follower.close().await.expect("close");
        });
        assert_eq!(checkpoint(&fp), "0\n3\n0 0\n2 4\n5 10\n");
    }
    // entries past the recovered log end are dropped on open
    std::fs::write(
        fp.join("leader-epoch-checkpoint"),
        "0\n4\n0 0\n2 4\n5 10\n7 40\n",
    )
    .expect("write");
    let f = fp.clone();
    run(move || async move {
        let follower = open(&f).await;
        assert_eq!(follower.latest_epoch(), Some(5));
        follower.close().await.expect("close");
    });
    assert_eq!(checkpoint(&fp), "0\n3\n0 0\n2 4\n5 10\n");
}

#[test]
fn end_offset_for_epoch_answers_as_kafka_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-0");
    run(move || async move {
        let log = open(&p).await;
        assert_eq!(log.end_offset_for_epoch(0), (-1, -1), "empty log");
        // epochs 1 and 3 and 6 start at 0, 4 and 10; the log ends at 12
        for (i, epoch) in [1, 1, 3, 3, 3, 6].into_iter().enumerate() {
            lead(&log, &tagged_batch(i as u64, 2, 10), epoch).await;
        }
        assert_eq!(log.end_offset_for_epoch(-1), (-1, -1), "undefined epoch");
        assert_eq!(log.end_offset_for_epoch(6), (6, 12), "latest: the log end");
        assert_eq!(log.end_offset_for_epoch(7), (-1, -1), "above the latest");
        assert_eq!(
            log.end_offset_for_epoch(3),
            (3, 10),
            "an epoch in the cache"
        );
        assert_eq!(
            log.end_offset_for_epoch(4),
            (3, 10),
            "a gap: the floor epoch"
        );
        assert_eq!(log.end_offset_for_epoch(2), (1, 4));
        assert_eq!(log.end_offset_for_epoch(1), (1, 4));
        assert_eq!(log.end_offset_for_epoch(0), (0, 0), "below the first entry");
        log.close().await.expect("close");
    });
}

/// Appends `n` batches of 1-4 records with ~300-byte values (tags from `tag0`), returning
/// (base offset, stored bytes) of each, as a reader sees them.
async fn fill(log: &PartitionLog, tag0: u64, n: u64, epoch: i32) -> Vec<(u64, Vec<u8>)> {
    let from = log.offsets().log_end;
    for t in tag0..tag0 + n {
        let b = padded_batch(t, 1 + (t % 4) as usize, 300, 1_000 + t as i64);
        lead(log, &b, epoch).await;
    }
    read_all(log, from, 1 << 20).await
}

/// The log holds exactly `want`, from `start`, and its offsets agree.
async fn expect_log(log: &PartitionLog, start: u64, want: &[(u64, Vec<u8>)], what: &str) {
    let end = want.last().map_or(start, |(base, b)| {
        base + BatchHeader::parse(b)
            .expect("header")
            .last_offset_delta
            .get() as u64
            + 1
    });
    assert_eq!(log.offsets().log_end, Offset(end), "{what}: log end");
    if end > start {
        log.wait_durable(Offset(end - 1), Durability::Written)
            .await
            .expect("written");
    }
    let o = log.offsets();
    assert_eq!(o.log_start, Offset(start), "{what}: log start");
    assert_eq!(o.high_watermark, Offset(end), "{what}: high watermark");
    assert_eq!(o.written, Offset(end), "{what}: written");
    let got = read_all(log, Offset(start), 1 << 20).await;
    assert_eq!(got.len(), want.len(), "{what}: batch count");
    assert!(
        got == want,
        "{what}: the log holds exactly the kept batches"
    );
    // the time indexes agree: nothing removed is remembered
    let max_ts = want
        .iter()
        .map(|(_, b)| BatchHeader::parse(b).expect("header").max_timestamp.get())
        .max();
    let found = log.max_timestamp_offset().await.expect("lookup");
    assert_eq!(found.map(|f| f.1), max_ts, "{what}: max timestamp");
    if let Some(ts) = max_ts {
        let after = log.offset_for_timestamp(ts + 1).await.expect("lookup");
        assert_eq!(after, None, "{what}: nothing newer than {ts}");
    }
}

/// The offset inside batch `i` of `batches` (its last record's).
fn inside(batches: &[(u64, Vec<u8>)], i: usize) -> Offset {
    let (base, b) = &batches[i];
    Offset(
        base + BatchHeader::parse(b)
            .expect("header")
            .last_offset_delta
            .get() as u64,
    )
}

#[test]
fn truncation_keeps_whole_batches_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    let kept = run(move || async move {
        let log = open(&p).await;
        let mut all = fill(&log, 0, 60, 0).await;
        let bases = log.segment_bases();
        assert!(bases.len() >= 6, "several segments: {bases:?}");
        // 1. in the middle of the active segment: the batch holding the offset goes too
        let active = bases.last().expect("segments").get();
        let k = all
            .iter()
            .position(|(b, _)| *b > active)
            .expect("two in active")
            + 1;
        let k = k.min(all.len() - 1);
        let end = log.truncate_to(inside(&all, k)).await.expect("truncate");
        assert_eq!(end, Offset(all[k].0));
        all.truncate(k);
        expect_log(&log, 0, &all, "mid active").await;
        assert_eq!(log.segment_bases(), bases, "no segment went");
        // appends continue at the new end, over the partial page the cut left
        all.extend(fill(&log, 100, 5, 0).await);
        assert_eq!(all[k].0, end.get());
        expect_log(&log, 0, &all, "appended after the cut").await;
        // the time index forgot the removed batches (timestamps are 1000 + tag)
        let removed_ts = 1_000 + k as i64;
        assert_eq!(
            log.offset_for_timestamp(removed_ts).await.expect("lookup"),
            Some((end, 1_100)),
            "the first record at or after a removed batch's time is the new one"
        );
        assert_eq!(
            log.max_timestamp_offset()
                .await
                .expect("lookup")
                .map(|m| m.1),
            Some(1_104)
        );
        // 2. exactly at a segment boundary: that segment and all later ones go, the one
        // before is active again
        let bases = log.segment_bases();
        let b3 = bases[3];
        let k = all
            .iter()
            .position(|(b, _)| *b == b3.get())
            .expect("batch at base");
        assert_eq!(log.truncate_to(b3).await.expect("truncate"), b3);
        all.truncate(k);
        expect_log(&log, 0, &all, "at a boundary").await;
        assert_eq!(log.segment_bases(), bases[..3]);
        for b in &bases[3..] {
            assert!(!p.join(format!("{:020}.log", b.get())).exists());
        }
        all.extend(fill(&log, 200, 8, 0).await);
        expect_log(&log, 0, &all, "appended after the boundary").await;
        // 3. across several segments, into the middle of the second
        let bases = log.segment_bases();
        assert!(bases.len() >= 4);
        let k = all
            .iter()
            .position(|(b, _)| *b > bases[1].get())
            .expect("batch")
            + 1;
        let end = log.truncate_to(inside(&all, k)).await.expect("truncate");
        assert_eq!(end, Offset(all[k].0));
        all.truncate(k);
        expect_log(&log, 0, &all, "across segments").await;
        assert_eq!(log.segment_bases(), bases[..2]);
        all.extend(fill(&log, 300, 30, 0).await);
        expect_log(&log, 0, &all, "appended after the long cut").await;
        assert!(log.segment_count() > 3, "rolled again");
        // at or past the end: nothing happens
        let end = log.offsets().log_end;
        assert_eq!(log.truncate_to(end).await.expect("noop"), end);
        assert_eq!(log.truncate_to(end.plus(10)).await.expect("noop"), end);
        expect_log(&log, 0, &all, "no-op truncations").await;
        log.close().await.expect("close");
        all
    });
    let p = path.clone();
    run(move || async move {
        let log = open(&p).await;
        expect_log(&log, 0, &kept, "after a clean restart").await;
        log.close().await.expect("close");
    });
}

#[test]
fn a_truncation_is_durable_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    let (kept, epochs) = run(move || async move {
        let log = open(&p).await;
        let mut all = fill(&log, 0, 20, 1).await;
        all.extend(fill(&log, 20, 20, 4).await);
        all.extend(fill(&log, 40, 20, 7).await);
        let b7 = all[40].0;
        let k = 45;
        log.truncate_to(inside(&all, k)).await.expect("truncate");
        all.truncate(k);
        let epochs = log.epoch_entries();
        assert_eq!(epochs.last(), Some(&(7, Offset(b7))));
        drop(log); // a crash right after it returned
        (all, epochs)
    });
    let p = path.clone();
    let kept = run(move || async move {
        let log = open(&p).await;
        expect_log(&log, 0, &kept, "crash after truncate_to").await;
        assert_eq!(log.epoch_entries(), epochs);
        // the new active segment takes appends, and a second cut into the epoch-4 range
        // drops the epoch 7 entry, durably too
        let mut all = kept;
        all.extend(fill(&log, 100, 10, 7).await);
        log.truncate_to(inside(&all, 30)).await.expect("truncate");
        all.truncate(30);
        assert_eq!(log.latest_epoch(), Some(4));
        drop(log);
        all
    });
    run(move || async move {
        let log = open(&path).await;
        expect_log(&log, 0, &kept, "crash after the second truncate_to").await;
        assert_eq!(log.latest_epoch(), Some(4));
        assert_eq!(
            log.end_offset_for_epoch(7),
            (-1, -1),
            "epoch 7 is gone from this log"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn truncation_drops_epochs_from_the_new_end_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path).await;
        assert_eq!(epoch_history(&log).await, Offset(12)); // (0,0) (2,4) (5,10)
        log.truncate_to(Offset(11)).await.expect("truncate");
        assert_eq!(log.epoch_entries(), vec![(0, Offset(0)), (2, Offset(4))]);
        assert_eq!(checkpoint(&path), "0\n2\n0 0\n2 4\n");
        assert_eq!(log.end_offset_for_epoch(2), (2, 10));
        assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
        // an entry starting exactly at the new end goes too
        log.truncate_to(Offset(5)).await.expect("truncate");
        assert_eq!(log.offsets().log_end, Offset(4));
        assert_eq!(log.epoch_entries(), vec![(0, Offset(0))]);
        assert_eq!(checkpoint(&path), "0\n1\n0 0\n");
        // a new leader epoch starts at the new end
        lead(&log, &tagged_batch(50, 1, 1), 8).await;
        assert_eq!(log.epoch_entries(), vec![(0, Offset(0)), (8, Offset(4))]);
        log.close().await.expect("close");
        assert_eq!(checkpoint(&path), "0\n2\n0 0\n8 4\n");
    });
}

#[test]
fn truncation_rebuilds_producer_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = open(&path).await;
        let mut seq = 0;
        for i in 0..30u64 {
            // producer 9: 2 records a batch; producer 5 opens a transaction at batch 20
            lead(&log, &producer_batch(i, 2, 9, 0, seq, false), 0).await;
            seq += 2;
            if i == 20 {
                lead(&log, &producer_batch(1000, 1, 5, 0, 0, true), 0).await;
            }
        }
        assert!(log.segment_count() > 2);
        let txn_at = Offset(42);
        assert_eq!(log.last_stable_offset(), txn_at);
        // cut before the transaction and before producer 9's batch of seq 30..=31
        let cut = log.truncate_to(Offset(31)).await.expect("truncate");
        assert_eq!(cut, Offset(30));
        assert!(
            !log.in_transaction(5, 0),
            "the open transaction went with its batch"
        );
        assert_eq!(log.last_stable_offset(), cut);
        let e = &log.producers()[0];
        assert_eq!(e.0, 9);
        assert_eq!(e.1.last_seq(), Some(29));
        // the removed batch is new again, a kept one is still a duplicate
        let dup = log
            .append(&producer_batch(14, 2, 9, 0, 28, false), at_epoch(0))
            .await
            .expect("append");
        assert!(dup.duplicate && dup.base_offset == Offset(28));
        let again = log
            .append(&producer_batch(15, 2, 9, 0, 30, false), at_epoch(0))
            .await
            .expect("append");
        assert!(!again.duplicate);
        assert_eq!(again.base_offset, cut);
        log.close().await.expect("close");
        // no snapshot past the log end is left behind
        let log = open(&path).await;
        let retry = log
            .append(&producer_batch(15, 2, 9, 0, 30, false), at_epoch(0))
            .await
            .expect("append");
        assert!(retry.duplicate && retry.base_offset == cut);
        log.close().await.expect("close");
    });
}

#[test]
fn truncate_fully_restarts_the_log_at_an_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let log = open(&p).await;
        fill(&log, 0, 30, 3).await;
        lead(&log, &producer_batch(1, 1, 5, 0, 0, true), 3).await;
        log.truncate_fully_and_start_at(Offset(5_000))
            .await
            .expect("restart");
        expect_log(&log, 5_000, &[], "restarted").await;
        assert_eq!(log.segment_bases(), vec![Offset(5_000)]);
        assert_eq!(log.epoch_entries(), vec![]);
        assert!(log.producers().is_empty());
        assert!(matches!(
            log.read(Offset(0), 100, sluice_engine::FirstBatch::Always)
                .await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "00000000000000005000.log",
                "leader-epoch-checkpoint",
                "partition.meta"
            ]
        );
        drop(log); // a crash right after it
    });
    let p = path.clone();
    run(move || async move {
        let log = open(&p).await;
        expect_log(&log, 5_000, &[], "restarted, after a crash").await;
        let all = fill(&log, 100, 12, 9).await;
        assert_eq!(all[0].0, 5_000);
        expect_log(&log, 5_000, &all, "appended after the restart").await;
        assert_eq!(log.epoch_entries(), vec![(9, Offset(5_000))]);
        // a truncation at or below the log start leaves an empty log there
        log.delete_records(Offset(5_004)).await.expect("delete");
        let end = log.truncate_to(Offset(5_002)).await.expect("truncate");
        assert_eq!(end, Offset(5_004));
        expect_log(&log, 5_004, &[], "cut below the log start").await;
        log.close().await.expect("close");
    });
}

#[test]
fn a_replicated_high_watermark_bounds_what_consumers_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        use sluice_engine::FirstBatch::Always;
        let log = open(&path).await;
        assert!(!log.is_replicated());
        log.set_replicated(true);
        // batch i: records at 1000 + i, offsets 2i..=2i+1
        let mut all = Vec::new();
        for i in 0..30u64 {
            let b = padded_batch(i, 2, 200, 1_000 + i as i64);
            lead(&log, &b, 0).await;
        }
        for (base, b) in read_all_replica(&log).await {
            all.push((base, b));
        }
        assert_eq!(all.len(), 30);
        let o = log.offsets();
        assert_eq!((o.log_end, o.written), (Offset(60), Offset(60)));
        assert_eq!(o.high_watermark, Offset(0), "nothing is replicated yet");
        // consumers see nothing, and offsets up to the log end are not out of range
        for at in [0, 7, 60] {
            let r = log.read(Offset(at), 1 << 20, Always).await.expect("read");
            assert!(r.data.is_empty(), "read at {at}");
            assert_eq!(
                (r.high_watermark, r.log_end_offset),
                (Offset(0), Offset(60))
            );
        }
        assert!(matches!(
            log.read(Offset(61), 100, Always).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.last_stable_offset(), Offset(0));
        assert_eq!(log.offset_for_timestamp(0).await.expect("lookup"), None);
        assert_eq!(log.max_timestamp_offset().await.expect("lookup"), None);
        assert!(matches!(
            log.delete_records(Offset(2)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // a follower reads everything written, and learns the high watermark and log end
        let r = log.read_replica(Offset(0), 1).await.expect("replica read");
        assert_eq!(
            r.data.to_vec().expect("bytes"),
            all[0].1,
            "whole first batch"
        );
        assert_eq!(
            (r.high_watermark, r.log_end_offset),
            (Offset(0), Offset(60))
        );
        let r = log
            .read_replica(Offset(60), 1000)
            .await
            .expect("at the end");
        assert!(r.data.is_empty());
        assert!(matches!(
            log.read_replica(Offset(61), 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // the broker moves it; a listener (a long-polling fetch) wakes up
        let woken = log.listen();
        assert_eq!(log.set_high_watermark(Offset(20)), Offset(20));
        let in_time = futures_lite::future::or(
            async {
                woken.await;
                true
            },
            async {
                glommio::timer::sleep(std::time::Duration::from_secs(5)).await;
                false
            },
        )
        .await;
        assert!(in_time, "set_high_watermark woke the listener");
        assert_eq!(log.offsets().high_watermark, Offset(20));
        // consumers read exactly the batches below it
        let seen = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(seen, all[..10]);
        let mut next = Offset(0);
        let mut upto = Vec::new();
        loop {
            let r = log
                .read_upto(next, 1 << 20, Always, Some(Offset(40)))
                .await
                .expect("read");
            let bytes = r.data.to_vec().expect("bytes");
            if bytes.is_empty() {
                break;
            }
            for b in batch::split_batches(&bytes) {
                let h = BatchHeader::parse(b).expect("header");
                upto.push((h.base_offset.get() as u64, b.to_vec()));
                next = h.last().plus(1);
            }
        }
        assert_eq!(upto, all[..10], "read_upto is capped by the hw");
        assert_eq!(log.last_stable_offset(), Offset(20));
        // timestamp lookups stop there too: batch 9 (offsets 18, 19) is the newest visible
        assert_eq!(
            log.offset_for_timestamp(1_009).await.expect("lookup"),
            Some((Offset(18), 1_009))
        );
        assert_eq!(log.offset_for_timestamp(1_010).await.expect("lookup"), None);
        assert_eq!(
            log.max_timestamp_offset().await.expect("lookup"),
            Some((Offset(18), 1_009))
        );
        // it only moves forward, and never past what is written
        assert_eq!(log.set_high_watermark(Offset(10)), Offset(20));
        assert_eq!(log.set_high_watermark(Offset(1_000)), Offset(60));
        // ... and the broker's value holds as more is written
        let b = padded_batch(30, 2, 200, 1_030);
        lead(&log, &b, 0).await;
        assert_eq!(log.offsets().high_watermark, Offset(62));
        assert_eq!(
            log.max_timestamp_offset().await.expect("lookup"),
            Some((Offset(60), 1_030))
        );
        // DeleteRecords up to the high watermark works; a truncation pulls it down
        assert_eq!(
            log.delete_records(Offset(4)).await.expect("delete"),
            Offset(4)
        );
        assert_eq!(
            log.truncate_to(Offset(31)).await.expect("truncate"),
            Offset(30)
        );
        let o = log.offsets();
        assert_eq!(
            (o.high_watermark, o.written, o.log_end),
            (Offset(30), Offset(30), Offset(30))
        );
        lead(&log, &padded_batch(31, 2, 200, 1_031), 0).await;
        assert_eq!(
            log.offsets().high_watermark,
            Offset(30),
            "until the broker says"
        );
        log.close().await.expect("close");
        // after a restart the broker switches replicated mode on again: from the log start
        let log = open(&path).await;
        log.set_replicated(true);
        let o = log.offsets();
        assert_eq!(
            (o.log_start, o.high_watermark, o.log_end),
            (Offset(4), Offset(4), Offset(32))
        );
        // local mode shows everything written again
        log.set_replicated(false);
        assert_eq!(log.offsets().high_watermark, Offset(32));
        assert_eq!(log.set_high_watermark(Offset(5)), Offset(32), "no effect");
        log.close().await.expect("close");
    });
}

#[test]
fn retention_waits_for_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = LogConfig {
            retention_ms: None,
            retention_bytes: Some(1),
            ..small_segments()
        };
        let log = PartitionLog::open(&path, cfg, LogEnv::default())
            .await
            .expect("open");
        log.set_replicated(true);
        fill(&log, 0, 40, 0).await;
        let segments = log.segment_count();
        assert!(segments > 3);
        assert_eq!(
            log.enforce_retention().await.expect("retention"),
            0,
            "nothing visible"
        );
        let third = log.segment_bases()[2];
        log.set_high_watermark(third);
        assert_eq!(log.enforce_retention().await.expect("retention"), 2);
        assert_eq!(log.offsets().log_start, third);
        log.close().await.expect("close");
    });
}

/// Every batch written, read as a follower does.
async fn read_all_replica(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    loop {
        let r = log.read_replica(next, 3_000).await.expect("replica read");
        if r.data.is_empty() {
            assert_eq!(next, log.offsets().written);
            return out;
        }
        let bytes = r.data.to_vec().expect("bytes");
        for b in batch::split_batches(&bytes) {
            let h = batch::validate(b).expect("valid");
            out.push((h.base_offset.get() as u64, b.to_vec()));
            next = h.last().plus(1);
        }
    }
}

#[test]
fn a_truncation_beside_running_appends_leaves_a_consistent_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    let kept = run(move || async move {
        let cfg = LogConfig {
            write_buffer_bytes: 2 * 1024, // appenders queue behind a full buffer
            ..small_segments()
        };
        let log = Rc::new(
            PartitionLog::open(&p, cfg, LogEnv::default())
                .await
                .expect("open"),
        );
        fill(&log, 0, 20, 0).await;
        let mut tasks = Vec::new();
        for t in 100..160u64 {
            let log = log.clone();
            tasks.push(
                glommio::spawn_local(async move {
                    let b = padded_batch(t, 2, 300, 1_000 + t as i64);
                    log.append(&b, at_epoch(1)).await.map(|i| i.base_offset)
                })
                .detach(),
            );
        }
        // let some of them in, then cut into the first 20 batches while others wait
        glommio::executor().yield_now().await;
        let end = log.truncate_to(Offset(17)).await.expect("truncate");
        assert!(end <= Offset(17));
        let mut after = 0;
        for t in tasks {
            let base = t.await.expect("task").expect("append");
            if base >= end {
                after += 1;
            }
        }
        assert!(after > 0, "appends went on after the truncation");
        let all = read_all(&log, Offset(0), 1 << 20).await;
        let mut next = 0;
        for (base, b) in &all {
            assert_eq!(*base, next, "contiguous offsets");
            next = base
                + BatchHeader::parse(b)
                    .expect("header")
                    .last_offset_delta
                    .get() as u64
                + 1;
        }
        assert_eq!(Offset(next), log.offsets().log_end);
        log.wait_durable(Offset(next - 1), Durability::Written)
            .await
            .expect("written");
        drop(log);
        all
    });
    run(move || async move {
        let log = open(&path).await;
        expect_log(&log, 0, &kept, "reopened after the race").await;
        log.close().await.expect("close");
    });
}

/// A follower's life under random operations, against a model of the batches it must hold.
mod follower_model {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;

    #[derive(Debug, Clone)]
    pub enum Op {
        /// Copy `n` batches from the leader (or, `as_leader`, append them as a promoted
        /// follower), in a new leader epoch if `bump`.
        Append {
            n: usize,
            records: usize,
            value_len: usize,
            bump: bool,
            as_leader: bool,
        },
        /// Truncate at a fraction (of 65536) of [0, end + 3).
        Truncate(u16),
        /// Start over `delta` offsets past the end.
        RestartAt(u64),
        Crash,
        CloseAndReopen,
    }

    #[derive(Debug, Clone, Default)]
    pub struct Model {
        start: u64,
        batches: Vec<(u64, Vec<u8>)>,
        epoch: i32,
        tag: u64,
    }

    impl Model {
        fn end(&self) -> u64 {
            self.batches.last().map_or(self.start, |(base, b)| {
                base + BatchHeader::parse(b)
                    .expect("header")
                    .last_offset_delta
                    .get() as u64
                    + 1
            })
        }

        fn epochs(&self) -> Vec<(i32, Offset)> {
            let mut out: Vec<(i32, Offset)> = Vec::new();
            for (base, b) in &self.batches {
                let e = BatchHeader::parse(b)
                    .expect("header")
                    .partition_leader_epoch
                    .get();
                if out.last().is_none_or(|l| e > l.0) {
                    out.push((e, Offset(*base)));
                }
            }
            out
        }
    }

    async fn check(log: &PartitionLog, m: &Model, what: &str) {
        expect_log(log, m.start, &m.batches, what).await;
        assert_eq!(log.epoch_entries(), m.epochs(), "{what}: epochs");
    }

    /// Runs ops from `from` on one open of the log; returns at a crash or reopen.
    async fn session(
        dir: std::path::PathBuf,
        mut m: Model,
        ops: Vec<Op>,
        from: usize,
    ) -> (Model, usize) {
        let log = open(&dir).await;
        check(&log, &m, "open").await;
        let mut i = from;
        while let Some(op) = ops.get(i).cloned() {
            i += 1;
            let what = format!("op {} {op:?}", i - 1);
            match op {
                Op::Append {
                    n,
                    records,
                    value_len,
                    bump,
                    as_leader,
                } => {
                    if bump {
                        m.epoch += 1;
                    }
                    for _ in 0..n {
                        m.tag += 1;
                        let mut b = padded_batch(m.tag, records, value_len, T0 + m.tag as i64);
                        let base = m.end();
                        let h = BatchHeader::mut_from(&mut b).expect("header");
                        h.base_offset.set(base as i64);
                        h.partition_leader_epoch.set(m.epoch);
                        let info = if as_leader {
                            log.append(&b, at_epoch(m.epoch)).await
                        } else {
                            log.append_replica(&b).await
                        }
                        .expect("append");
                        assert_eq!(info.base_offset, Offset(base), "{what}");
                        m.batches.push((base, b));
                    }
                }
                Op::Truncate(frac) => {
                    let at = (m.end() + 3) * u64::from(frac) / 65536;
                    let got = log.truncate_to(Offset(at)).await.expect("truncate");
                    if at < m.end() {
                        if let Some(k) = m.batches.iter().position(|(base, b)| {
                            let last = base
                                + BatchHeader::parse(b)
                                    .expect("header")
                                    .last_offset_delta
                                    .get() as u64;
                            last >= at
                        }) {
                            m.batches.truncate(k);
                        }
                    }
                    assert_eq!(got, Offset(m.end()), "{what}: new end");
                }
                Op::RestartAt(delta) => {
                    let at = m.end() + delta;
                    log.truncate_fully_and_start_at(Offset(at))
                        .await
                        .expect("restart");
                    m.batches.clear();
                    m.start = at;
                }
                Op::Crash => {
                    if m.end() > m.start {
                        log.wait_durable(Offset(m.end() - 1), Durability::Written)
                            .await
                            .expect("written");
                    }
                    drop(log);
                    return (m, i);
                }
                Op::CloseAndReopen => {
                    log.close().await.expect("close");
                    return (m, i);
                }
            }
            check(&log, &m, &what).await;
        }
        log.close().await.expect("close");
        (m, i)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1..=6usize, 1..=4usize, 0..=700usize, any::<bool>(), prop::bool::weighted(0.2))
                .prop_map(|(n, records, value_len, bump, as_leader)| Op::Append {
                    n, records, value_len, bump, as_leader
                }),
            4 => any::<u16>().prop_map(Op::Truncate),
            1 => (0..5u64).prop_map(Op::RestartAt),
            1 => Just(Op::Crash),
            1 => Just(Op::CloseAndReopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("SLUICE_MODEL_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(16),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_follower_log_matches_its_model(ops in prop::collection::vec(op(), 1..30)) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().join("f-0");
            let mut m = Model::default();
            let mut next = 0;
            loop {
                let done = next >= ops.len();
                let (d, o) = (dir.clone(), ops.clone());
                let (m2, n2) = run(move || session(d, m, o, next));
                m = m2;
                next = n2;
                if done {
                    break;
                }
            }
        }
    }
}
