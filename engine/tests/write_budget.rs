//! A shard's `WriteBudget` bounds the unwritten bytes of its logs together: an append that
//! would take the shard over it waits (even when its own log's buffer has room) until another
//! log's flusher hands bytes to the kernel, and then completes, in order, with nothing lost.

mod common;

use std::rc::Rc;

use common::{read_all, run, tagged_batch};
use futures_lite::future;
use sluice_engine::{
    AppendOptions, Durability, LogConfig, LogEnv, Offset, PartitionLog, WriteBudget,
};

/// The stored batch is the appended one but for its base offset and leader epoch (the bytes
/// the CRC covers, from the attributes on, are equal).
fn same_records(stored: &[u8], appended: &[u8]) -> bool {
    stored.len() == appended.len() && stored[21..] == appended[21..]
}

#[test]
fn a_full_shard_budget_holds_appends_until_another_log_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    run(move || async move {
        let batch = tagged_batch(1, 200, 1_000);
        // room for three batches in the whole shard; each log alone could take hundreds
        let limit = 3 * batch.len();
        let budget = WriteBudget::new(limit);
        let env = LogEnv {
            write_budget: Some(budget.clone()),
            ..LogEnv::default()
        };
        let cfg = LogConfig {
            write_buffer_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let a = Rc::new(
            PartitionLog::open(&root.join("a-0"), cfg.clone(), env.clone())
                .await
                .expect("open a"),
        );
        let b = Rc::new(
            PartitionLog::open(&root.join("b-0"), cfg, env)
                .await
                .expect("open b"),
        );

        // a takes the whole budget without yielding, so its flusher has not run yet
        for tag in 0..3u64 {
            a.append(&tagged_batch(tag, 200, 1_000), AppendOptions::default())
                .await
                .expect("append a");
        }
        assert_eq!(budget.used(), limit);

        // b's own buffer is empty, but the shard is full: its append waits
        let b2 = b.clone();
        let mut held = Box::pin(async move {
            let batch = tagged_batch(100, 200, 1_000);
            b2.append(&batch, AppendOptions::default())
                .await
                .expect("append b")
        });
        assert!(
            future::poll_once(&mut held).await.is_none(),
            "an append over the shard's budget must wait"
        );
        // a's flusher writes its bytes and gives the budget back, which lets b in
        let info = held.await;
        assert_eq!(info.base_offset, Offset(0));
        b.wait_durable(info.last_offset, Durability::Synced)
            .await
            .expect("b synced");
        a.wait_durable(Offset(3 * 200 - 1), Durability::Synced)
            .await
            .expect("a synced");
        assert!(budget.used() <= limit);

        let got_a = read_all(&a, Offset(0), 1 << 20).await;
        assert_eq!(got_a.len(), 3);
        for (i, (base, bytes)) in got_a.iter().enumerate() {
            assert_eq!(*base, i as u64 * 200);
            assert!(
                same_records(bytes, &tagged_batch(i as u64, 200, 1_000)),
                "a batch {i}"
            );
        }
        assert_eq!(read_all(&b, Offset(0), 1 << 20).await.len(), 1);
        a.close().await.expect("close a");
        b.close().await.expect("close b");
        assert_eq!(budget.used(), 0, "closed logs hold nothing");
    });
}

/// Many concurrent appenders over several logs never hold more than the budget and all finish, in each log's arrival order.
#[test]
fn the_shard_budget_bounds_unwritten_bytes_under_concurrent_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    run(move || async move {
        let batch_len = tagged_batch(0, 50, 1_000).len();
        let limit = 4 * batch_len;
        let budget = WriteBudget::new(limit);
        let env = LogEnv {
            write_budget: Some(budget.clone()),
            ..LogEnv::default()
        };
        let mut logs = Vec::new();
        for p in 0..4 {
            let log = PartitionLog::open(
                &root.join(format!("t-{p}")),
                LogConfig::default(),
                env.clone(),
            )
            .await
            .expect("open");
            logs.push(Rc::new(log));
        }
        let peak = Rc::new(std::cell::Cell::new(0usize));
        let mut tasks = Vec::new();
        for (p, log) in logs.iter().enumerate() {
            let (log, budget, peak) = (log.clone(), budget.clone(), peak.clone());
            tasks.push(glommio::spawn_local(async move {
                let mut last = None;
                for i in 0..100u64 {
                    let tag = p as u64 * 1_000 + i;
                    let info = log
                        .append(&tagged_batch(tag, 50, 1_000), AppendOptions::default())
                        .await
                        .expect("append");
                    peak.set(peak.get().max(budget.used()));
                    last = Some(info.last_offset);
                }
                log.wait_durable(last.expect("appended"), Durability::Synced)
                    .await
                    .expect("synced");
            }));
        }
        for t in tasks {
            t.await;
        }
        assert!(
            peak.get() <= limit,
            "peak {} over the budget {limit}",
            peak.get()
        );
        for (p, log) in logs.iter().enumerate() {
            let got = read_all(log, Offset(0), 1 << 20).await;
            assert_eq!(got.len(), 100);
            for (i, (_, bytes)) in got.iter().enumerate() {
                let want = tagged_batch(p as u64 * 1_000 + i as u64, 50, 1_000);
                assert!(
                    same_records(bytes, &want),
                    "log {p} batch {i} in arrival order"
                );
            }
            log.close().await.expect("close");
        }
        assert_eq!(budget.used(), 0);
    });
}
