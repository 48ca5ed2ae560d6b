//! The replication seam of the engine: follower appends at the leader's offsets, the leader
//! epoch cache, truncation, and a high watermark set by the broker.

mod common;

use std::os::unix::fs::MetadataExt;

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
    let mut b = tagged_batch(tag, count, 1_000 + tag as i64);
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
fn a_replica_batch_must_start_at_the_log_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let leader = open(&lp).await;
        let follower = open(&fp).await;
        for i in 0..3u64 {
            lead(&leader, &tagged_batch(i, 2, 10), 1).await;
        }
        let batches = read_all(&leader, Offset(0), 1 << 20).await;
        // the batch at offset 2 cannot come first
        let err = follower
            .append_replica(&batches[1].1)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                LogError::OffsetMismatch {
                    expected: Offset(0),
                    got: 2
                }
            ),
            "{err}"
        );
        assert_eq!(err.kafka_code(), 1);
        follower
            .append_replica(&batches[0].1)
            .await
            .expect("in order");
        // neither a repeat nor a producer's batch (base offset 0) fits at offset 2
        for b in [&batches[0].1, &tagged_batch(7, 1, 1)] {
            let err = follower.append_replica(b).await.expect_err("refused");
            assert!(
                matches!(
                    err,
                    LogError::OffsetMismatch {
                        expected: Offset(2),
                        got: 0
                    }
                ),
                "{err}"
            );
        }
        // validated like a produce: a flipped byte fails the CRC
        let mut bad = batches[1].1.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let err = follower.append_replica(&bad).await.expect_err("refused");
        assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
        assert_eq!(follower.offsets().log_end, Offset(2));
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
