//! Producer state in the log: idempotent de-duplication, transactions, the last stable offset
//! and the aborted-transaction index, across clean restarts and crash images.

mod common;

use common::{copy_dir, run, tagged_batch};
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::producer::{build_marker, AbortedTxn};
use sluice_engine::{
    AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

/// A batch of `count` records from producer `pid`/`epoch` starting at sequence `seq`.
fn producer_batch(tag: u64, count: usize, pid: i64, epoch: i16, seq: i32, txn: bool) -> Vec<u8> {
    let mut b = tagged_batch(tag, count, 1_000 + tag as i64);
    batch::stamp_producer(&mut b, pid, epoch, seq, txn);
    b
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2 * 1024,
        hot_cache_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Appends like the broker does: a transactional batch is verified first.
async fn append(log: &PartitionLog, b: &[u8]) -> Result<sluice_engine::AppendInfo, LogError> {
    let h = BatchHeader::parse(b).expect("header");
    let mut opts = AppendOptions::default();
    if h.is_transactional() && !h.is_control() {
        opts.txn_guard = Some(log.begin_txn_verification(h.producer_id.get()));
    }
    let info = log.append(b, opts).await?;
    log.wait_durable(info.last_offset, Durability::Synced)
        .await?;
    Ok(info)
}

#[test]
fn idempotent_retries_are_appended_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments(), LogEnv::default())
            .await
            .expect("open");
        let first = append(&log, &producer_batch(1, 3, 9, 0, 0, false))
            .await
            .expect("append");
        let second = append(&log, &producer_batch(2, 2, 9, 0, 3, false))
            .await
            .expect("append");
        assert!(!first.duplicate && !second.duplicate);
        // the retry of the first batch is acknowledged with its original offsets
        let retry = append(&log, &producer_batch(1, 3, 9, 0, 0, false))
            .await
            .expect("append");
        assert!(retry.duplicate);
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (Offset(0), Offset(2))
        );
        assert_eq!(log.offsets().log_end, Offset(5));
        // a gap and a stale epoch are refused with Kafka's codes
        let gap = append(&log, &producer_batch(3, 1, 9, 0, 7, false))
            .await
            .expect_err("refused");
        assert_eq!(gap.kafka_code(), 45, "{gap}");
        append(&log, &producer_batch(4, 1, 9, 1, 0, false))
            .await
            .expect("append");
        let stale = append(&log, &producer_batch(5, 1, 9, 0, 5, false))
            .await
            .expect_err("refused");
        assert_eq!(stale.kafka_code(), 47, "{stale}");
        log.close().await.expect("close");
        // after a clean restart the sequences are still known
        let log = PartitionLog::open(&path, small_segments(), LogEnv::default())
            .await
            .expect("reopen");
        let retry = append(&log, &producer_batch(4, 1, 9, 1, 0, false))
            .await
            .expect("append");
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, Offset(5));
        let next = append(&log, &producer_batch(6, 1, 9, 1, 1, false))
            .await
            .expect("append");
        assert_eq!(next.base_offset, Offset(6));
        log.close().await.expect("close");
    });
}

/// Appends a mix of plain and transactional batches over several segments; returns what a
/// read_committed reader must see: (LSO, aborted transactions).
async fn transactional_history(log: &PartitionLog) -> (Offset, Vec<AbortedTxn>) {
    let mut seq = [0i32; 4];
    let mut tag = 100;
    let mut send = |pid: i64, count: usize, txn: bool| {
        tag += 1;
        let s = seq[pid as usize];
        seq[pid as usize] += count as i32;
        producer_batch(tag, count, pid, 0, s, txn)
    };
    let mut batches = Vec::new();
    for round in 0..30 {
        batches.push(send(1, 2, true));
        batches.push(send(2, 3, true));
        batches.push(tagged_batch(round, 1, 5));
        batches.push(send(3, 1, false));
    }
    for b in &batches {
        append(log, b).await.expect("append");
    }
    assert!(
        log.segment_count() > 2,
        "the history spans several segments"
    );
    // producer 1 aborts, producer 2 commits; the LSO stays at producer 2's first offset until
    // its marker, then reaches the end
    let p2_first = Offset(2);
    assert_eq!(log.last_stable_offset(), Offset(0));
    let abort = append(log, &build_marker(1, 0, false, 0, 7))
        .await
        .expect("append");
    assert_eq!(log.last_stable_offset(), p2_first);
    let commit = append(log, &build_marker(2, 0, true, 0, 7))
        .await
        .expect("append");
    assert_eq!(log.last_stable_offset(), log.offsets().high_watermark);
    let aborted = log.aborted_transactions(Offset(0), commit.last_offset.plus(1));
    assert_eq!(
        aborted,
        vec![AbortedTxn {
            producer_id: 1,
            first: 0,
            last: abort.base_offset.get(),
            lso: p2_first.get(),
        }]
    );
    // a new transaction holds the LSO back again, and a read_committed read stops there
    let open = append(log, &producer_batch(999, 2, 2, 0, seq[2], true))
        .await
        .expect("append");
    append(log, &tagged_batch(1000, 1, 5))
        .await
        .expect("append");
    assert_eq!(log.last_stable_offset(), open.base_offset);
    (open.base_offset, aborted)
}

async fn check_committed_view(log: &PartitionLog, lso: Offset, aborted: &[AbortedTxn]) {
    assert_eq!(log.last_stable_offset(), lso);
    let hw = log.offsets().high_watermark;
    assert_eq!(log.aborted_transactions(Offset(0), hw), aborted);
    assert!(log.in_transaction(2, 0));
    // read_upto(LSO) from every earlier segment never returns a batch at or past the LSO
    for from in log.segment_bases() {
        if from >= lso {
            continue;
        }
        let r = log
            .read_upto(from, 1 << 20, FirstBatch::Always, Some(lso))
            .await
            .expect("read");
        let bytes = r.data.to_vec().expect("bytes");
        let last = batch::split_batches(&bytes)
            .map(|b| BatchHeader::parse(b).expect("header").last())
            .last()
            .expect("some batches");
        assert!(last < lso, "read past the LSO: {last} >= {lso}");
    }
    let at = log
        .read_upto(lso, 1 << 20, FirstBatch::Always, Some(lso))
        .await
        .expect("read at LSO");
    assert!(at.data.is_empty());
}

#[test]
fn unverified_or_late_transactional_batches_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments(), LogEnv::default())
            .await
            .expect("open");
        let b = producer_batch(1, 1, 4, 0, 0, true);
        let unverified = log
            .append(&b, AppendOptions::default())
            .await
            .expect_err("refused");
        assert_eq!(unverified.kafka_code(), 48, "{unverified}");
        // verified, but the transaction ended (a marker) before the batch arrived
        let token = log.begin_txn_verification(4);
        append(&log, &build_marker(4, 0, false, 0, 1))
            .await
            .expect("marker");
        let opts = AppendOptions {
            txn_guard: Some(token),
            ..AppendOptions::default()
        };
        let late = log.append(&b, opts).await.expect_err("refused");
        assert_eq!(late.kafka_code(), 48, "{late}");
        assert_eq!(log.last_stable_offset(), log.offsets().log_end);
        log.close().await.expect("close");
    });
}

#[test]
fn transactions_survive_clean_restart_and_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let image = dir.path().join("crash-image");
    let (p, i) = (path.clone(), image.clone());
    let (lso, aborted) = run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        let (lso, aborted) = transactional_history(&log).await;
        check_committed_view(&log, lso, &aborted).await;
        // a crash image: the files as they are while the log is open (no clean marker)
        copy_dir(&p, &i);
        log.close().await.expect("close");
        (lso, aborted)
    });
    for d in [path, image] {
        let aborted = aborted.clone();
        run(move || async move {
            let log = PartitionLog::open(&d, small_segments(), LogEnv::default())
                .await
                .expect("reopen");
            check_committed_view(&log, lso, &aborted).await;
            // the open transaction can still be ended after the restart
            let end = append(&log, &build_marker(2, 0, false, 0, 9))
                .await
                .expect("append");
            assert_eq!(log.last_stable_offset(), log.offsets().high_watermark);
            assert_eq!(
                log.aborted_transactions(lso, end.last_offset.plus(1)).len(),
                1,
                "the second abort is indexed"
            );
            log.close().await.expect("close");
        });
    }
}

#[test]
fn missing_snapshots_and_indexes_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    let (lso, aborted) = run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        let r = transactional_history(&log).await;
        log.close().await.expect("close");
        r
    });
    for entry in std::fs::read_dir(&path).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".producers") || name.ends_with(".txnindex") {
            std::fs::remove_file(entry.path()).expect("remove");
        }
    }
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments(), LogEnv::default())
            .await
            .expect("reopen");
        check_committed_view(&log, lso, &aborted).await;
        log.close().await.expect("close");
    });
}
