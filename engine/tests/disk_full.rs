//! Full disks: a write that finds no space does not poison the log. Appends get
//! `LogError::DiskFull` (KAFKA_STORAGE_ERROR), what was acknowledged stays readable, the
//! flusher retries and the log resumes by itself once space is back. First with the fault
//! plan (deterministic ENOSPC on the real files), then on a real full ext4 file system.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{padded_batch, read_all, run, tagged_batch};
use sluice_engine::{
    AppendOptions, Durability, Fault, FaultPlan, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

fn env_with(faults: &std::rc::Rc<FaultPlan>) -> LogEnv {
    LogEnv {
        faults: Some(faults.clone()),
        ..LogEnv::default()
    }
}

/// Appends `batch` until the log takes it (the flusher retries with a backoff of at most 1 s).
async fn append_when_space(log: &PartitionLog, batch: &[u8]) -> sluice_engine::AppendInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log
            .append_durable(batch, AppendOptions::default(), Durability::Synced)
            .await
        {
            Ok(info) => return info,
            Err(e @ LogError::DiskFull { .. }) => {
                assert!(Instant::now() < deadline, "the log never resumed: {e}");
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

#[test]
fn full_disk_refuses_appends_keeps_data_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-0");
    let path = p.clone();
    run(move || async move {
        let faults = FaultPlan::new();
        let log = PartitionLog::open(&p, LogConfig::default(), env_with(&faults))
            .await
            .expect("open");
        for i in 0..3 {
            log.append_durable(
                &tagged_batch(i, 2, 1),
                AppendOptions::default(),
                Durability::Synced,
            )
            .await
            .expect("acknowledged before the disk fills");
        }
        faults.set_disk_full(true);
        // accepted into the buffer, but its write finds no space: not acknowledged
        let stuck = log
            .append(&tagged_batch(3, 2, 1), AppendOptions::default())
            .await
            .expect("buffered");
        let err = log
            .wait_durable(stuck.last_offset, Durability::Synced)
            .await
            .expect_err("no space");
        assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
        assert_eq!(err.kafka_code(), 56);
        assert!(log.poisoned().is_none(), "a full disk does not fence");
        assert!(log.disk_full().is_some());
        let err = log
            .append(&tagged_batch(4, 2, 1), AppendOptions::default())
            .await
            .expect_err("appends are refused while full");
        assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
        // the unwritten batch is not visible; the acknowledged ones are readable
        assert_eq!(log.offsets().high_watermark, Offset(6));
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await.len(), 3);
        let stats = log.stats();
        assert!(stats.disk_full && !stats.poisoned);
        assert_eq!(stats.disk_full_stalls, 1);
        // still full after a few retries
        glommio::timer::sleep(Duration::from_millis(200)).await;
        assert!(log.disk_full().is_some());
        assert_eq!(log.offsets().written, Offset(6));

        faults.set_disk_full(false);
        let info = append_when_space(&log, &tagged_batch(5, 2, 1)).await;
        assert!(log.disk_full().is_none());
        assert!(!log.stats().disk_full);
        // the kept batch went first, in order, then the new one
        assert_eq!(info.base_offset, Offset(8));
        let got = read_all(&log, Offset(0), 1 << 20).await;
        let bases: Vec<u64> = got.iter().map(|b| b.0).collect();
        assert_eq!(bases, vec![0, 2, 4, 6, 8]);
        log.close().await.expect("clean close");
    });
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().log_end, Offset(10));
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await.len(), 5);
        log.close().await.expect("close");
    });
}

#[test]
fn one_enospc_is_retried_without_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-1");
    run(move || async move {
        let faults = FaultPlan::new();
        let log = PartitionLog::open(&p, LogConfig::default(), env_with(&faults))
            .await
            .expect("open");
        faults.arm(Fault::WriteEnospc);
        let info = log
            .append(&tagged_batch(0, 3, 1), AppendOptions::default())
            .await
            .expect("buffered");
        let r = log.wait_durable(info.last_offset, Durability::Synced).await;
        assert_eq!(faults.fired(), 1);
        if let Err(e) = r {
            assert!(matches!(e, LogError::DiskFull { .. }), "{e}");
        }
        // the flusher's retry writes it: no append, no reopen needed
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.offsets().synced <= info.last_offset {
            assert!(Instant::now() < deadline, "the retry never wrote the batch");
            let _ = log.wait_durable(info.last_offset, Durability::Synced).await;
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(log.disk_full().is_none() && log.poisoned().is_none());
        assert_eq!(log.stats().disk_full_stalls, 1);
        log.close().await.expect("close");
    });
}

#[test]
fn close_on_a_full_disk_leaves_recovery_to_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-2");
    let path = p.clone();
    run(move || async move {
        let faults = FaultPlan::new();
        let log = PartitionLog::open(&p, LogConfig::default(), env_with(&faults))
            .await
            .expect("open");
        let acked = log
            .append_durable(
                &tagged_batch(0, 2, 1),
                AppendOptions::default(),
                Durability::Synced,
            )
            .await
            .expect("acknowledged");
        faults.set_disk_full(true);
        log.append(&tagged_batch(1, 2, 1), AppendOptions::default())
            .await
            .expect("buffered, never written");
        let err = log.close().await.expect_err("the close cannot write");
        assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
        assert_eq!(acked.last_offset, Offset(1));
    });
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen runs recovery");
        assert_eq!(
            log.offsets().log_end,
            Offset(2),
            "the acknowledged batch only"
        );
        assert_eq!(read_all(&log, Offset(0), 1 << 20).await.len(), 1);
        log.close().await.expect("close");
    });
}

/// A small ext4 file system in a file, loop-mounted (needs root, as in CI); unmounted on drop.
struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(mib << 20))
            .expect("image file");
        let ok = |c: &mut std::process::Command| {
            let out = c.output().expect("run command");
            assert!(out.status.success(), "{c:?}: {out:?}");
        };
        ok(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-b", "4096"])
            .arg(&img));
        ok(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        SmallFs { mnt, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // the executor's io_uring may release the last files a moment after its thread ends
        for _ in 0..50 {
            let ok = std::process::Command::new("umount")
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}

/// Every acknowledged batch is there, byte for byte apart from the offset fields.
async fn check_acked(log: &PartitionLog, acked: &[(u64, Vec<u8>)]) {
    let got = read_all(log, Offset(0), 1 << 20).await;
    for (base, b) in acked {
        let stored = got
            .iter()
            .find(|g| g.0 == *base)
            .unwrap_or_else(|| panic!("acknowledged batch at {base} is missing"));
        assert_eq!(common::normalized(&stored.1), common::normalized(b));
    }
}

#[test]
fn real_full_filesystem_end_to_end() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("real_full_filesystem_end_to_end needs root (loop mount); CI runs it as root");
        return;
    }
    let fs = SmallFs::new(8);
    let path = fs.path().join("t-0");
    let p = path.clone();
    let config = LogConfig {
        segment_bytes: 512 * 1024,
        ..LogConfig::default()
    };
    let cfg = config.clone();
    let (resumed_at, total_after) = run(move || async move {
        let log = PartitionLog::open(&p, cfg.clone(), LogEnv::default())
            .await
            .expect("open");
        let mut acked = Vec::new();
        let mut refused = 0;
        for tag in 0..2_000u64 {
            let b = padded_batch(tag, 4, 4_000, 1);
            match log
                .append_durable(&b, AppendOptions::default(), Durability::Synced)
                .await
            {
                Ok(info) => acked.push((info.base_offset.get(), b)),
                Err(e) => {
                    assert!(matches!(e, LogError::DiskFull { .. }), "{e}");
                    assert_eq!(e.kafka_code(), 56);
                    refused += 1;
                    if refused >= 3 {
                        break;
                    }
                }
            }
        }
        assert!(refused >= 3, "8 MiB never filled");
        assert!(log.poisoned().is_none(), "a full disk does not fence");
        check_acked(&log, &acked).await;
        // the refused batch is still queued: the close cannot finish and leaves no marker
        let err = log.close().await.expect_err("close on a full disk");
        assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
        // dropped on this executor, which closes its files (deleted files free their blocks
        // only once closed)
        drop(log);
        glommio::timer::sleep(Duration::from_millis(100)).await;
        // a restart on the still full disk: recovery's metadata writes wait for space
        let log = PartitionLog::open(&p, cfg, LogEnv::default())
            .await
            .expect("open on a full disk");
        check_acked(&log, &acked).await;
        // free space: DeleteRecords up to the high watermark deletes the sealed segments
        let hw = log.offsets().high_watermark;
        log.delete_records(hw)
            .await
            .expect("DeleteRecords on a full disk");
        let after = append_when_space(&log, &padded_batch(9_999, 4, 4_000, 1)).await;
        for tag in 10_000..10_010u64 {
            append_when_space(&log, &padded_batch(tag, 4, 4_000, 1)).await;
        }
        assert!(log.disk_full().is_none());
        let total = log.offsets().log_end;
        log.close().await.expect("close with space");
        (after.base_offset, total)
    });
    run(move || async move {
        let log = PartitionLog::open(&path, config, LogEnv::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().log_end, total_after);
        let got = read_all(&log, resumed_at, 1 << 20).await;
        assert_eq!(
            got.len(),
            11,
            "the batches written after recovery survive a reopen"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn short_write_is_written_again_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t-3");
    let path = p.clone();
    let batch = padded_batch(1, 4, 3_000, 1);
    let expect = batch.clone();
    run(move || async move {
        let faults = FaultPlan::new();
        let log = PartitionLog::open(&p, LogConfig::default(), env_with(&faults))
            .await
            .expect("open");
        faults.arm(Fault::ShortWrite);
        log.append_durable(&batch, AppendOptions::default(), Durability::Synced)
            .await
            .expect("the rest of a short write is written by a second write");
        assert_eq!(faults.fired(), 1);
        assert!(log.poisoned().is_none());
        log.close().await.expect("close");
    });
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default(), LogEnv::default())
            .await
            .expect("reopen");
        let got = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(got.len(), 1);
        assert_eq!(common::normalized(&got[0].1), common::normalized(&expect));
        log.close().await.expect("close");
    });
}
