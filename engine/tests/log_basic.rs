//! End-to-end behaviour of one partition log on real files (O_DIRECT, fdatasync).

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::{normalized, read_all, run, tagged_batch};
use sluice_engine::{
    AppendOptions, Clock, Durability, Fault, FaultPlan, FirstBatch, LogConfig, LogEnv, LogError,
    Offset, PartitionLog, ReadData,
};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        hot_cache_bytes: 16 * 1024,
        ..LogConfig::default()
    }
}

#[test]
fn append_read_close_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("open");
        let mut inputs = Vec::new();
        let mut last = None;
        for i in 0..500u64 {
            let b = tagged_batch(i, 3, 1_000 + i as i64);
            let info = log
                .append(&b, AppendOptions::default())
                .await
                .expect("append");
            assert_eq!(info.base_offset, Offset(i * 3));
            assert_eq!(info.last_offset, Offset(i * 3 + 2));
            inputs.push(b);
            last = Some(info.last_offset);
        }
        log.wait_durable(last.expect("appended"), Durability::Synced)
            .await
            .expect("synced");
        let o = log.offsets();
        assert_eq!(
            (o.log_end, o.high_watermark, o.synced),
            (Offset(1500), Offset(1500), Offset(1500))
        );
        let got = read_all(&log, Offset(0), 10_000).await;
        assert_eq!(got.len(), 500);
        for (i, (base, bytes)) in got.iter().enumerate() {
            assert_eq!(*base, i as u64 * 3);
            assert_eq!(normalized(bytes), inputs[i]);
        }
        // a read starting mid-batch returns that whole batch
        let r = log
            .read(Offset(4), 1, FirstBatch::Always)
            .await
            .expect("read");
        let bytes = r.data.to_vec().expect("bytes");
        assert_eq!(normalized(&bytes), inputs[1]);
        // beyond the high watermark is out of range; at it, empty
        assert!(matches!(
            log.read(Offset(1501), 100, FirstBatch::Always).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log
            .read(Offset(1500), 100, FirstBatch::Always)
            .await
            .expect("read")
            .data
            .is_empty());
        log.close().await.expect("close");
    });
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().log_end, Offset(1500));
        let got = read_all(&log, Offset(0), 64 * 1024).await;
        assert_eq!(got.len(), 500);
        // appends continue after the reopened tail, including its partial page
        let info = log
            .append_durable(
                &tagged_batch(999, 2, 5),
                AppendOptions::default(),
                Durability::Synced,
            )
            .await
            .expect("append");
        assert_eq!(info.base_offset, Offset(1500));
        assert_eq!(read_all(&log, Offset(0), 64 * 1024).await.len(), 501);
        log.close().await.expect("close");
    });
    assert!(path.join("00000000000000000000.log").exists());
    assert!(path.join("00000000000000000000.index").exists());
    assert!(path.join("00000000000000000000.timeindex").exists());
}

#[test]
fn rolls_segments_and_reads_across_them_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-1");
    run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        let mut inputs = Vec::new();
        for i in 0..400u64 {
            let b = tagged_batch(i, 50, 1_000 + i as i64);
            log.append_durable(&b, AppendOptions::default(), Durability::Written)
                .await
                .expect("append");
            inputs.push(b);
        }
        assert!(log.segment_count() > 3, "rolled: {}", log.segment_count());
        // early offsets are no longer in the hot tail: they come back as file ranges
        let r = log
            .read(Offset(0), 4096, FirstBatch::Always)
            .await
            .expect("read");
        assert!(
            matches!(r.data, ReadData::File { .. }),
            "cold data is a file range"
        );
        let got = read_all(&log, Offset(0), 7_000).await;
        assert_eq!(got.len(), inputs.len());
        for (i, (base, bytes)) in got.iter().enumerate() {
            assert_eq!(*base, i as u64 * 50);
            assert_eq!(normalized(bytes), inputs[i]);
        }
        // sealed segments have their index files
        for base in log.segment_bases().iter().rev().skip(1) {
            let idx = p.join(format!("{:020}.index", base.get()));
            assert!(idx.exists(), "{} exists", idx.display());
        }
        log.close().await.expect("close");
    });
}

#[test]
fn unclean_stop_keeps_written_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-2");
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        for i in 0..300u64 {
            log.append_durable(
                &tagged_batch(i, 5, 7),
                AppendOptions::default(),
                Durability::Written,
            )
            .await
            .expect("append");
        }
        drop(log); // no close: like a crash of the process after the writes completed
    });
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().log_end, Offset(1500));
        let got = read_all(&log, Offset(0), 10_000).await;
        assert_eq!(got.len(), 300);
        log.close().await.expect("close");
    });
}

#[test]
fn timestamp_lookup_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-3");
    run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        // batch i holds records with timestamps 1000 + 10*i + j for j in 0..5
        for i in 0..300i64 {
            let values: Vec<Vec<u8>> = (0..5).map(|j| vec![j as u8; 40]).collect();
            let recs: Vec<_> = (0..5)
                .map(|j| sluice_engine::batch::NewRecord {
                    key: None,
                    value: Some(&values[j]),
                    timestamp: 1000 + 10 * i + j as i64,
                })
                .collect();
            let b = sluice_engine::batch::build(&recs);
            log.append_durable(&b, AppendOptions::default(), Durability::Written)
                .await
                .expect("append");
        }
        for (target, want) in [
            (0, Some(0u64)),
            (1000, Some(0)),
            (1003, Some(3)),
            (1005, Some(5)),
            (1006, Some(5)),
            (1500, Some(250)),
            (3994, Some(1499)),
            (3995, None),
        ] {
            let got = log.offset_for_timestamp(target).await.expect("lookup");
            let want = want.map(Offset);
            assert_eq!(got.map(|g| g.0), want, "target {target}");
        }
        log.close().await.expect("close");
    });
}

struct ManualClock(Cell<i64>);
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

#[test]
fn retention_and_delete_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-4");
    run(move || async move {
        let clock = Rc::new(ManualClock(Cell::new(1_000_000)));
        let env = LogEnv {
            clock: clock.clone(),
            ..LogEnv::default()
        };
        let cfg = LogConfig {
            retention_ms: Some(60_000),
            retention_bytes: None,
            ..small_segments()
        };
        let log = PartitionLog::open(&p, cfg.clone(), env)
            .await
            .expect("open");
        for i in 0..200u64 {
            // timestamps: first half old, second half recent
            let ts = if i < 150 { 1_000 } else { 999_000 };
            log.append_durable(
                &tagged_batch(i, 50, ts),
                AppendOptions::default(),
                Durability::Written,
            )
            .await
            .expect("append");
        }
        let before = log.segment_count();
        let deleted = log.enforce_retention().await.expect("retention");
        assert!(
            deleted > 0 && log.segment_count() == before - deleted,
            "deleted {deleted} of {before}, {} left",
            log.segment_count()
        );
        let start = log.offsets().log_start;
        assert!(
            start.get() > 0 && start.get() <= 7500,
            "only old segments go: {start}"
        );
        assert!(matches!(
            log.read(Offset(0), 100, FirstBatch::Always).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // retention.bytes keeps the newest data
        log.set_config(LogConfig {
            retention_ms: None,
            retention_bytes: Some(100_000),
            ..cfg
        });
        log.enforce_retention().await.expect("retention");
        assert!(log.size_bytes() < 100_000 + 64 * 1024);
        // DeleteRecords moves the start into the middle of a segment
        let hw = log.offsets().high_watermark;
        let new_start = log
            .delete_records(Offset(hw.get() - 5))
            .await
            .expect("delete");
        assert_eq!(new_start, Offset(hw.get() - 5));
        let r = log
            .read(new_start, 100_000, FirstBatch::Always)
            .await
            .expect("read");
        assert!(!r.data.is_empty());
        assert!(matches!(
            log.delete_records(Offset(hw.get() + 1)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.expect("close");
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(
            log.offsets().log_start,
            new_start,
            "log start offset is durable"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-5");
    let p = path.clone();
    run(move || async move {
        let faults = FaultPlan::new();
        let env = LogEnv {
            faults: Some(faults.clone()),
            ..LogEnv::default()
        };
        let log = PartitionLog::open(&p, LogConfig::default(), env)
            .await
            .expect("open");
        log.append_durable(
            &tagged_batch(0, 1, 1),
            AppendOptions::default(),
            Durability::Synced,
        )
        .await
        .expect("first append is durable");
        faults.arm(Fault::SyncEio);
        let err = log
            .append_durable(
                &tagged_batch(1, 1, 1),
                AppendOptions::default(),
                Durability::Synced,
            )
            .await
            .expect_err("fsync failure surfaces");
        assert!(
            matches!(err, LogError::Io { .. } | LogError::Poisoned { .. }),
            "{err}"
        );
        assert_eq!(faults.fired(), 1);
        let err = log
            .append(&tagged_batch(2, 1, 1), AppendOptions::default())
            .await
            .expect_err("poisoned");
        assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
        assert_eq!(err.kafka_code(), 56);
        assert!(log.poisoned().is_some());
    });
    // (a short write is written again whole: see disk_full.rs)
    {
        let fault = Fault::WriteEio;
        let p = path.clone();
        run(move || async move {
            let faults = FaultPlan::new();
            let env = LogEnv {
                faults: Some(faults.clone()),
                ..LogEnv::default()
            };
            let log = PartitionLog::open(&p, LogConfig::default(), env)
                .await
                .expect("reopen recovers");
            let before = log.offsets().log_end;
            faults.arm(fault);
            let err = log
                .append_durable(
                    &tagged_batch(7, 1, 1),
                    AppendOptions::default(),
                    Durability::Written,
                )
                .await
                .expect_err("write failure surfaces");
            assert!(
                matches!(err, LogError::Io { .. } | LogError::Poisoned { .. }),
                "{err}"
            );
            assert!(log.poisoned().is_some());
            assert!(before.get() >= 1);
        });
    }
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        let got = read_all(&log, Offset(0), 10_000).await;
        assert!(!got.is_empty(), "the acknowledged batch survives");
        assert_eq!(got[0].0, 0);
        log.close().await.expect("close");
    });
}

#[test]
fn appends_keep_arrival_order_under_back_pressure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-6");
    run(move || async move {
        let cfg = LogConfig {
            write_buffer_bytes: 8 * 1024,
            ..LogConfig::default()
        };
        let log = Rc::new(
            PartitionLog::open(&p, cfg, LogEnv::default())
                .await
                .expect("open"),
        );
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let log = log.clone();
            // batches of varying size so small ones could overtake large ones if allowed
            let count = if i % 3 == 0 { 40 } else { 1 };
            tasks.push(glommio::spawn_local(async move {
                let info = log
                    .append(&tagged_batch(i, count, 1), AppendOptions::default())
                    .await
                    .expect("append");
                (i, info.base_offset)
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await);
        }
        let bases: Vec<u64> = got.iter().map(|(_, b)| b.get()).collect();
        let mut sorted = bases.clone();
        sorted.sort();
        assert_eq!(bases, sorted, "offsets follow arrival order");
        log.close().await.expect("close");
    });
}

#[test]
fn a_damaged_index_is_rebuilt_and_written_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-7");
    let p = path.clone();
    let first_base = run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("open");
        for i in 0..300u64 {
            log.append(&tagged_batch(i, 50, 1), AppendOptions::default())
                .await
                .expect("append");
        }
        log.close().await.expect("close");
        log.segment_bases()[0]
    });
    let idx = path.join(format!("{:020}.index", first_base.get()));
    let good = std::fs::read(&idx).expect("index");
    assert!(good.len() >= 16);
    std::fs::write(&idx, &good[..5]).expect("damage");
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, small_segments(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(read_all(&log, Offset(0), 100_000).await.len(), 300);
        log.close().await.expect("close");
    });
    assert_eq!(
        std::fs::read(&idx).expect("index"),
        good,
        "rebuilt index written back"
    );
}

#[test]
fn clean_close_lets_the_next_open_skip_the_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-8");
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("open");
        for i in 0..10u64 {
            log.append(&tagged_batch(i, 2, 1), AppendOptions::default())
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    // damage the tail without changing the size: a scan would cut it, the trusted marker not
    let seg = path.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).expect("segment");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(
            log.offsets().log_end,
            Offset(20),
            "no scan after a clean close"
        );
        drop(log); // unclean: the next open scans and finds the damage
    });
    let p = path.clone();
    run(move || async move {
        let log = PartitionLog::open(&p, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(
            log.offsets().log_end,
            Offset(18),
            "the scan drops the damaged batch"
        );
        log.close().await.expect("close");
    });
}

/// Logs sharing a `HotBudget` keep their hot tails under it together (each writer evicts its
/// own oldest batches while the total is over), reads of evicted ranges come from the files,
/// and a closed log gives its share back.
#[test]
fn a_shared_hot_budget_bounds_the_hot_tails_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    run(move || async move {
        const LIMIT: usize = 64 * 1024;
        let budget = sluice_engine::HotBudget::new(LIMIT);
        let env = LogEnv {
            hot_budget: Some(budget.clone()),
            ..LogEnv::default()
        };
        let cfg = LogConfig {
            hot_cache_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let a = PartitionLog::open(&root.join("a-0"), cfg.clone(), env.clone())
            .await
            .expect("open a");
        let b = PartitionLog::open(&root.join("b-0"), cfg, env)
            .await
            .expect("open b");
        let mut largest = 0;
        for (log, tag) in [(&a, 1u64), (&b, 2u64)] {
            let mut inputs = Vec::new();
            for i in 0..300u64 {
                let batch = tagged_batch(tag * 1_000 + i, 50, 1_000);
                largest = largest.max(batch.len());
                let info = log
                    .append(&batch, AppendOptions::default())
                    .await
                    .expect("append");
                log.wait_durable(info.last_offset, Durability::Written)
                    .await
                    .expect("written");
                inputs.push(batch);
            }
            // everything was written, so at most the last written batch may stay over the bound
            assert!(
                budget.used() <= LIMIT + largest,
                "{} bytes held for a budget of {LIMIT}",
                budget.used()
            );
            let got = read_all(log, Offset(0), 1 << 20).await;
            assert_eq!(got.len(), 300);
            for (i, (_, bytes)) in got.iter().enumerate() {
                assert_eq!(normalized(bytes), inputs[i], "batch {i} of log {tag}");
            }
        }
        assert!(budget.used() > 0, "the last writer keeps some hot data");
        a.close().await.expect("close a");
        b.close().await.expect("close b");
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0, "closed logs give their hot bytes back");
    });
}

#[test]
fn stats_count_appends_reads_writes_and_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let stats = Rc::new(sluice_engine::stats::StorageStats::default());
        let env = LogEnv {
            stats: stats.clone(),
            ..LogEnv::default()
        };
        let log = PartitionLog::open(&path, small_segments(), env)
            .await
            .expect("open");
        let mut bytes = 0u64;
        let mut last = Offset(0);
        for i in 0..1000u64 {
            let b = tagged_batch(i, 4, 1_000 + i as i64);
            bytes += b.len() as u64;
            last = log
                .append(&b, AppendOptions::default())
                .await
                .expect("append")
                .last_offset;
        }
        let before = log.stats();
        assert_eq!((before.messages_in, before.bytes_in), (4000, bytes));
        assert!(before.unsynced_bytes > 0, "nothing synced yet: {before:?}");
        log.wait_durable(last, Durability::Synced)
            .await
            .expect("synced");
        let s = log.stats();
        assert_eq!(s.unsynced_bytes, 0, "{s:?}");
        assert_eq!((s.log_start, s.high_watermark, s.log_end), (0, 4000, 4000));
        assert_eq!(s.size_bytes, bytes);
        assert!(s.segments > 1, "64 KiB segments roll: {s:?}");
        let st = stats.snapshot();
        assert_eq!(st.bytes_written, bytes);
        assert!(st.writes >= 1 && st.syncs >= 1, "{st:?}");
        assert_eq!(st.sync_latency.count(), st.syncs);
        // reads: everything once, from memory and from files
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 1000);
        let tail = log
            .read(Offset(3999), 1 << 20, FirstBatch::Always)
            .await
            .expect("read the tail");
        assert!(matches!(tail.data, ReadData::Memory(_)));
        let st = stats.snapshot();
        assert!(
            st.hot_misses >= 1,
            "old segments are read from files: {st:?}"
        );
        assert!(st.hot_hits >= 1, "the tail is read from memory: {st:?}");
        log.close().await.expect("close");
    });
}
