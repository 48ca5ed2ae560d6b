//! The log cleaner (cleanup.policy=compact): the latest record per key survives at its
//! original offset, tombstones stay until delete.retention.ms has passed since the cleaner
//! first kept them, the active segment is never touched, aborted transactions' records and
//! then their markers go, a crash at any step of a swap leaves the old or the new segment set,
//! and a model check over random histories.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use common::{copy_dir, run};
use proptest::prelude::*;
use sluice_engine::batch::{self, BatchHeader, NewRecord};
use sluice_engine::compact::{CLEANED_SUFFIX, SWAP_FILE};
use sluice_engine::producer::build_marker;
use sluice_engine::{
    AppendOptions, CleanerConfig, CleanupPolicy, Clock, CompactionConfig, DirtyRatio, Durability,
    Fault, FaultPlan, FirstBatch, LogConfig, LogEnv, Offset, PartitionLog,
};

const T0: i64 = 1_700_000_000_000;
const SEGMENT_MS: u64 = 1_000;
const RETENTION: u64 = 60_000;

struct ManualClock(Cell<i64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

fn config() -> LogConfig {
    LogConfig {
        // rolls are driven by segment.ms and the manual clock
        segment_ms: Some(SEGMENT_MS),
        retention_ms: None,
        index_interval_bytes: 256,
        hot_cache_bytes: 1 << 20,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            delete_retention_ms: RETENTION,
            min_lag_ms: 0,
            max_lag_ms: None,
            min_dirty_ratio: DirtyRatio::new(0.01).expect("ratio"),
        },
        ..LogConfig::default()
    }
}

fn cleaner() -> CleanerConfig {
    CleanerConfig::default()
}

type Rec = (Vec<u8>, Option<Vec<u8>>);

/// A log with a manual clock that remembers what was appended at each offset.
struct Log {
    log: PartitionLog,
    clock: Rc<ManualClock>,
    appended: BTreeMap<u64, Rec>,
}

async fn open_log(dir: &Path, clock: Rc<ManualClock>, faults: Option<Rc<FaultPlan>>) -> Log {
    open_with(dir, clock, faults, config()).await
}

async fn open_with(
    dir: &Path,
    clock: Rc<ManualClock>,
    faults: Option<Rc<FaultPlan>>,
    config: LogConfig,
) -> Log {
    let env = LogEnv {
        clock: clock.clone(),
        faults,
        ..LogEnv::default()
    };
    let log = PartitionLog::open(dir, config, env).await.expect("open");
    Log {
        log,
        clock,
        appended: BTreeMap::new(),
    }
}

fn keyed_batch(recs: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let r: Vec<NewRecord<'_>> = recs
        .iter()
        .map(|(k, v)| NewRecord {
            key: Some(k.as_bytes()),
            value: v.map(str::as_bytes),
            timestamp: ts,
        })
        .collect();
    batch::build(&r)
}

impl Log {
    /// Appends one batch of keyed records (timestamp: now) and waits for its fdatasync.
    async fn put(&mut self, recs: &[(&str, Option<&str>)]) -> u64 {
        let b = keyed_batch(recs, self.clock.0.get());
        self.append_raw(&b).await;
        let base = self.log.offsets().log_end.0 - recs.len() as u64;
        for (i, (k, v)) in recs.iter().enumerate() {
            self.appended.insert(
                base + i as u64,
                (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())),
            );
        }
        base
    }

    async fn append_raw(&self, b: &[u8]) -> u64 {
        let h = BatchHeader::parse(b).expect("header");
        let mut opts = AppendOptions::default();
        if h.is_transactional() && !h.is_control() {
            opts.txn_guard = Some(self.log.begin_txn_verification(h.producer_id.get()));
        }
        let info = self
            .log
            .append_durable(b, opts, Durability::Synced)
            .await
            .expect("append");
        info.base_offset.0
    }

    /// The next append starts a new segment.
    fn roll(&self) {
        self.clock.0.set(self.clock.0.get() + SEGMENT_MS as i64);
    }

    fn advance(&self, ms: u64) {
        self.clock.0.set(self.clock.0.get() + ms as i64);
    }

    async fn clean(&self) -> Option<sluice_engine::CleanStats> {
        self.log.clean(&cleaner()).await.expect("clean")
    }
}

/// Every record of the log in offset order: (offset, key, value); control records left out.
/// Also checks every stored batch is valid and offsets strictly increase.
async fn records(log: &PartitionLog) -> Vec<(u64, Rec)> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    let mut last_seen: Option<u64> = None;
    loop {
        let r = log
            .read(next, 1 << 20, FirstBatch::Always)
            .await
            .expect("read");
        if r.data.is_empty() {
            assert_eq!(next, r.high_watermark, "empty read only at the end");
            break;
        }
        let bytes = r.data.to_vec().expect("bytes");
        for b in batch::split_batches(&bytes) {
            let h = batch::validate_stored(b).expect("stored batches stay valid");
            if !h.is_control() {
                let body = batch::uncompressed_payload(b, 1 << 24).expect("payload");
                for rec in batch::parse_records(h, &body).expect("records") {
                    let o = h.base().0 + u64::from(rec.offset_delta);
                    assert!(last_seen.is_none_or(|l| o > l), "offsets ascend");
                    last_seen = Some(o);
                    out.push((
                        o,
                        (
                            rec.key.unwrap_or_default().to_vec(),
                            rec.value.map(<[u8]>::to_vec),
                        ),
                    ));
                }
            }
            next = h.last().plus(1);
        }
    }
    out
}

/// Offsets of the control batches (markers) in the log.
async fn markers(log: &PartitionLog) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    loop {
        let r = log
            .read(next, 1 << 20, FirstBatch::Always)
            .await
            .expect("read");
        if r.data.is_empty() {
            break;
        }
        let bytes = r.data.to_vec().expect("bytes");
        for b in batch::split_batches(&bytes) {
            let h = batch::validate_stored(b).expect("valid");
            if h.is_control() {
                out.push(h.base().0);
            }
            next = h.last().plus(1);
        }
    }
    out
}

/// Last value per key (a tombstone removes the key), as a consumer reading from 0 builds it.
fn fold(recs: &[(u64, Rec)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (_, (k, v)) in recs {
        match v {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
    m
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(CLEANED_SUFFIX) || n.starts_with(SWAP_FILE))
        .collect()
}

fn clock() -> Rc<ManualClock> {
    Rc::new(ManualClock(Cell::new(T0)))
}

/// Three sealed segments of updates to ten keys, and an active segment with more.
async fn history(l: &mut Log) {
    for round in 0..3 {
        for i in 0..10 {
            let v = format!("r{round}-k{i}");
            l.put(&[(&format!("k{i}"), Some(&v))]).await;
            l.put(&[
                (&format!("k{i}"), Some(&format!("{v}b"))),
                (&format!("x{}", i % 3), Some(&v)),
            ])
            .await;
        }
        l.roll();
    }
    l.put(&[("k1", Some("active-1")), ("k2", Some("active-2"))])
        .await;
    l.put(&[("k1", Some("active-3"))]).await;
}

#[test]
fn cleaning_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut l = open_log(&path, clock(), None).await;
        history(&mut l).await;
        let before = records(&l.log).await;
        assert_eq!(before.len(), l.appended.len());
        let segments_before = l.log.segment_count();
        let active_base = *l.log.segment_bases().last().expect("active");
        let active_file = path.join(format!("{:020}.log", active_base.0));
        let active_bytes = std::fs::read(&active_file).expect("active segment");
        let offsets_before = l.log.offsets();

        let stats = l.clean().await.expect("a pass was due");
        assert!(stats.records_removed > 0, "{stats:?}");
        assert_eq!(
            stats.first_dirty, active_base,
            "dirty up to the active segment"
        );
        let after = records(&l.log).await;
        // every surviving record is what was appended at its offset (offsets preserved)
        for (o, rec) in &after {
            assert_eq!(l.appended.get(o), Some(rec), "offset {o}");
        }
        // what a consumer from offset 0 ends up with is unchanged
        assert_eq!(fold(&after), fold(&before));
        // below the active segment: exactly one record per key, its latest one
        let mut seen = std::collections::HashSet::new();
        for (o, (k, _)) in after.iter().filter(|(o, _)| *o < active_base.0) {
            assert!(seen.insert(k.clone()), "key {k:?} twice (offset {o})");
            let latest_below = before
                .iter()
                .filter(|(bo, (bk, _))| bk == k && *bo < active_base.0)
                .map(|(bo, _)| *bo)
                .max();
            assert_eq!(Some(*o), latest_below, "the latest version of {k:?} stays");
        }
        // the active segment was not touched, offsets did not move
        assert_eq!(
            std::fs::read(&active_file).expect("active"),
            active_bytes,
            "active segment untouched"
        );
        let tail: Vec<_> = before
            .iter()
            .filter(|(o, _)| *o >= active_base.0)
            .cloned()
            .collect();
        let tail_after: Vec<_> = after
            .iter()
            .filter(|(o, _)| *o >= active_base.0)
            .cloned()
            .collect();
        assert_eq!(tail, tail_after);
        assert_eq!(l.log.offsets(), offsets_before);
        assert!(l.log.segment_count() < segments_before, "segments merged");
        // nothing more to do until new data is dirty
        assert!(l.clean().await.is_none(), "clean log: no pass");
        // a fetch from the middle of a gap gets the next batch
        let gap = (0..active_base.0)
            .find(|o| !after.iter().any(|(a, _)| a == o))
            .expect("a removed offset");
        let r = l
            .log
            .read(Offset(gap), 1 << 20, FirstBatch::Always)
            .await
            .expect("read in a gap");
        assert!(!r.data.is_empty(), "a gap is not the end of the log");
        // the cleaned segments survive a clean restart and a crash (indexes rebuilt)
        l.log.close().await.expect("close");
        let l2 = open_log(&path, l.clock.clone(), None).await;
        assert_eq!(records(&l2.log).await, after);
        drop(l2);
        for f in std::fs::read_dir(&path).expect("list") {
            let p = f.expect("entry").path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.ends_with(".index") || n.ends_with(".timeindex")) {
                std::fs::remove_file(&p).expect("remove index");
            }
        }
        let l3 = open_log(&path, l.clock.clone(), None).await;
        assert_eq!(
            records(&l3.log).await,
            after,
            "rebuilt indexes see the gaps"
        );
        assert_eq!(
            l3.log
                .offset_for_timestamp(T0)
                .await
                .expect("lookup")
                .map(|(o, _)| o),
            after.first().map(|(o, _)| Offset(*o)),
            "time index rebuilt"
        );
        l3.log.close().await.expect("close");
    });
}

#[test]
fn tombstones_stay_until_delete_retention_then_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut l = open_log(&path, clock(), None).await;
        l.put(&[("a", Some("1")), ("b", Some("1"))]).await;
        let tomb = l.put(&[("a", None)]).await;
        l.put(&[("c", Some("1"))]).await;
        l.roll();
        l.put(&[("d", Some("1"))]).await;
        l.clean().await.expect("first pass");
        let recs = records(&l.log).await;
        assert!(
            recs.iter()
                .any(|(o, (k, v))| *o == tomb && k == b"a" && v.is_none()),
            "the tombstone stays: {recs:?}"
        );
        assert!(
            !recs.iter().any(|(_, (k, v))| k == b"a" && v.is_some()),
            "the value it deletes goes"
        );
        // before delete.retention.ms: nothing is due, and a forced look keeps it
        l.advance(RETENTION - 1);
        assert!(l.clean().await.is_none(), "clean and not yet due");
        // after: the delete horizon has passed, a pass is due though nothing is dirty
        l.advance(1);
        l.clean().await.expect("the horizon makes a pass due");
        let recs = records(&l.log).await;
        assert!(
            !recs.iter().any(|(_, (k, _))| k == b"a"),
            "the tombstone is gone: {recs:?}"
        );
        assert_eq!(
            fold(&recs),
            BTreeMap::from([
                (b"b".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"1".to_vec()),
                (b"d".to_vec(), b"1".to_vec()),
            ])
        );
        assert!(l.clean().await.is_none(), "nothing due afterwards");
        // the horizon is part of the checkpoint: a tombstone kept before a restart still goes
        let t2 = l.put(&[("b", None)]).await;
        l.roll();
        l.put(&[("e", Some("1"))]).await;
        l.clean().await.expect("pass");
        assert!(records(&l.log)
            .await
            .iter()
            .any(|(o, (_, v))| *o == t2 && v.is_none()));
        l.log.close().await.expect("close");
        let l = open_log(&path, l.clock.clone(), None).await;
        l.advance(RETENTION);
        l.clean().await.expect("due after the restart");
        assert!(!records(&l.log).await.iter().any(|(_, (k, _))| k == b"b"));
        l.log.close().await.expect("close");
    });
}

#[test]
fn aborted_transactions_and_then_their_markers_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut l = open_log(&path, clock(), None).await;
        let ts = l.clock.0.get();
        let txn = |pid: i64, seq: i32, recs: &[(&str, Option<&str>)]| {
            let mut b = keyed_batch(recs, ts);
            batch::stamp_producer(&mut b, pid, 0, seq, true);
            b
        };
        l.put(&[("k", Some("plain"))]).await;
        // producer 1 aborts, producer 2 commits
        let aborted = l.append_raw(&txn(1, 0, &[("k", Some("aborted"))])).await;
        let committed = l.append_raw(&txn(2, 0, &[("j", Some("committed"))])).await;
        let abort = l.append_raw(&build_marker(1, 0, false, 0, ts)).await;
        let commit = l.append_raw(&build_marker(2, 0, true, 0, ts)).await;
        l.roll();
        l.put(&[("z", Some("tail"))]).await;
        assert_eq!(l.log.aborted_transactions(Offset(0), Offset(100)).len(), 1);
        // pass 1: the aborted record goes, the markers stay (their data was there)
        l.clean().await.expect("pass 1");
        let recs = records(&l.log).await;
        assert!(!recs.iter().any(|(o, _)| *o == aborted), "{recs:?}");
        assert!(recs.iter().any(|(o, _)| *o == committed));
        assert!(recs
            .iter()
            .any(|(o, (_, v))| *o == 0 && v.as_deref() == Some(&b"plain"[..])));
        assert_eq!(markers(&l.log).await, vec![abort, commit]);
        // producer 1 goes on (its emptied aborted batch is no longer its last one)
        l.append_raw(&txn(1, 1, &[("k2", Some("second"))])).await;
        let commit1 = l.append_raw(&build_marker(1, 0, true, 0, ts)).await;
        // pass 2: the emptied batch goes; the abort marker saw it, so it stays
        l.dirty_pass(2).await;
        assert_eq!(markers(&l.log).await, vec![abort, commit, commit1]);
        // pass 3: nothing of the aborted transaction is left, the marker gets its horizon
        l.dirty_pass(3).await;
        assert_eq!(markers(&l.log).await, vec![abort, commit, commit1]);
        assert!(
            l.log
                .aborted_transactions(Offset(0), Offset(1000))
                .is_empty(),
            "no aborted data is left to report"
        );
        l.advance(RETENTION);
        l.clean().await.expect("the horizon is due");
        let m = markers(&l.log).await;
        assert_eq!(
            m,
            vec![commit, commit1],
            "the abort marker is gone, the commit markers' records are still there"
        );
        // the producers' state survives (their last batches are kept)
        let pids: Vec<i64> = l.log.producers().iter().map(|(p, _)| *p).collect();
        assert_eq!(pids, vec![1, 2]);
        l.log.close().await.expect("close");
        let l = open_log(&path, l.clock.clone(), None).await;
        assert_eq!(markers(&l.log).await, m);
        l.log.close().await.expect("close");
    });
}

/// Builds the same log in `dir` each time.
async fn swap_fixture(dir: &Path, faults: Option<Rc<FaultPlan>>) -> Log {
    let mut l = open_log(dir, clock(), faults).await;
    history(&mut l).await;
    l
}

#[test]
fn a_crash_at_any_swap_step_leaves_the_old_or_the_new_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    run(move || async move {
        // the outcome without a crash
        let l = swap_fixture(&root.join("clean"), None).await;
        let old = records(&l.log).await;
        l.clean().await.expect("pass");
        let new = records(&l.log).await;
        assert_ne!(old, new);
        l.log.close().await.expect("close");
        for step in 1..=12u8 {
            let path = root.join(format!("step-{step}"));
            let faults = FaultPlan::new();
            let l = swap_fixture(&path, Some(faults.clone())).await;
            assert_eq!(records(&l.log).await, old);
            faults.arm(Fault::CleanerStop(step));
            let r = l.log.clean(&cleaner()).await;
            assert!(r.is_err(), "step {step}: the pass stops");
            assert_eq!(faults.fired(), 1, "step {step}");
            drop(l); // the process dies here
            let image = root.join(format!("image-{step}"));
            copy_dir(&path, &image);
            let l = open_log(&image, clock(), None).await;
            let got = records(&l.log).await;
            let want = if step <= 5 { &old } else { &new };
            assert_eq!(
                &got, want,
                "step {step}: old set before the commit, new after"
            );
            assert!(
                leftovers(&image).is_empty(),
                "step {step}: {:?}",
                leftovers(&image)
            );
            // and the log goes on: appends, another pass
            l.put_again().await;
            l.log.close().await.expect("close");
        }
    });
}

impl Log {
    /// New dirty data and a sealed segment, then a pass.
    async fn dirty_pass(&mut self, n: u32) {
        let v = format!("tail{n}");
        self.put(&[("z", Some(&v))]).await;
        self.roll();
        self.put(&[("y", Some(&v))]).await;
        self.clean().await.expect("pass");
    }

    async fn put_again(&self) {
        let b = keyed_batch(&[("k1", Some("later"))], self.clock.0.get());
        self.append_raw(&b).await;
        self.roll();
        let b = keyed_batch(&[("k2", Some("later"))], self.clock.0.get());
        self.append_raw(&b).await;
        self.log
            .clean(&cleaner())
            .await
            .expect("clean after recovery");
        let recs = records(&self.log).await;
        let m = fold(&recs);
        assert_eq!(m.get(&b"k1"[..]).map(Vec::as_slice), Some(&b"later"[..]));
    }
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut l = open_log(&path, clock(), None).await;
        history(&mut l).await;
        let before = records(&l.log).await;
        // room for about four keys: passes end where the map fills and the next goes on
        let small = CleanerConfig {
            dedupe_buffer_bytes: 4 * 52,
            ..cleaner()
        };
        let mut passes = 0;
        let mut last_dirty = Offset(0);
        while let Some(s) = l.log.clean(&small).await.expect("clean") {
            assert!(s.first_dirty > last_dirty, "each pass makes progress");
            last_dirty = s.first_dirty;
            passes += 1;
            assert!(passes < 100);
        }
        assert!(passes > 1, "{passes} passes");
        let after = records(&l.log).await;
        assert_eq!(fold(&after), fold(&before));
        assert!(after.len() < before.len());
        l.log.close().await.expect("close");
    });
}

#[test]
fn the_cleaner_keeps_to_its_io_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut l = open_log(&path, clock(), None).await;
        let value = "v".repeat(2000);
        for i in 0..100 {
            l.put(&[(&format!("k{}", i % 7), Some(&value))]).await;
        }
        l.roll();
        l.put(&[("tail", Some("1"))]).await;
        let input = l.log.size_bytes();
        let rate = 400_000;
        let limited = CleanerConfig {
            io_bytes_per_sec: Some(rate),
            ..cleaner()
        };
        let started = Instant::now();
        let s = l.log.clean(&limited).await.expect("clean").expect("due");
        let took = started.elapsed().as_secs_f64();
        // the map pass and the clean pass each read the input; the output is written once
        let io = (2 * input + s.bytes_out) as f64;
        assert!(
            took >= 0.9 * io / rate as f64,
            "{io} bytes of I/O in {took:.3} s at {rate} B/s"
        );
        l.log.close().await.expect("close");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random histories of values and tombstones over a few keys, split into batches and
    /// segments at random: after cleaning, a consumer reading from offset 0 ends up with the
    /// latest value of every key (nothing for a deleted key), every record it reads is the
    /// one appended at its offset, and offsets ascend; after delete.retention.ms and another
    /// pass, no tombstone is left below the active segment.
    #[test]
    fn cleaning_preserves_what_a_consumer_from_zero_sees(
        ops in prop::collection::vec(
            (0u8..6, prop::option::weighted(0.8, 0u16..1000), 1usize..4, any::<bool>()),
            1..60,
        )
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-0");
        let ok = run(move || async move {
            let mut l = open_log(&path, clock(), None).await;
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut i = 0;
            while i < ops.len() {
                let n = ops[i].2.min(ops.len() - i);
                let recs: Vec<(String, Option<String>)> = ops[i..i + n]
                    .iter()
                    .map(|(k, v, _, _)| (format!("key{k}"), v.map(|v| format!("v{v}"))))
                    .collect();
                let view: Vec<(&str, Option<&str>)> =
                    recs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                l.put(&view).await;
                for (k, v) in &recs {
                    match v {
                        Some(v) => model.insert(k.clone().into_bytes(), v.clone().into_bytes()),
                        None => model.remove(k.as_bytes()),
                    };
                }
                if ops[i].3 {
                    l.roll();
                }
                i += n;
            }
            l.roll();
            l.put(&[("end", Some("1"))]).await;
            model.insert(b"end".to_vec(), b"1".to_vec());
            for pass in 0..2 {
                l.clean().await;
                let recs = records(&l.log).await;
                for (o, rec) in &recs {
                    assert_eq!(l.appended.get(o), Some(rec), "pass {pass}: offset {o}");
                }
                assert_eq!(fold(&recs), model, "pass {pass}");
                l.advance(RETENTION);
            }
            let active = *l.log.segment_bases().last().expect("active");
            let recs = records(&l.log).await;
            let tombstones: Vec<_> = recs
                .iter()
                .filter(|(o, (_, v))| *o < active.0 && v.is_none())
                .collect();
            assert!(tombstones.is_empty(), "{tombstones:?}");
            l.log.close().await.expect("close");
            true
        });
        prop_assert!(ok);
    }
}

/// A follower that copies the leader's cleaned log over the Fetch path (read_replica /
/// append_replica at the leader's offsets) gets the gaps as they are, keeps them through a
/// crash, and cleans its own copy with its own cleaner.
#[test]
fn a_follower_catches_up_through_a_cleaned_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lp, fp) = (dir.path().join("leader"), dir.path().join("follower"));
    run(move || async move {
        let mut leader = open_log(&lp, clock(), None).await;
        history(&mut leader).await;
        leader.clean().await.expect("leader pass");
        let want = records(&leader.log).await;
        let follower = open_log(&fp, clock(), None).await;
        let mut gaps = 0;
        loop {
            let from = follower.log.offsets().log_end;
            let r = leader
                .log
                .read_replica(from, 4096)
                .await
                .expect("replica read");
            if r.data.is_empty() {
                break;
            }
            let bytes = r.data.to_vec().expect("bytes");
            for b in batch::split_batches(&bytes) {
                let end = follower.log.offsets().log_end;
                let info = follower
                    .log
                    .append_replica(b)
                    .await
                    .expect("append_replica");
                gaps += usize::from(info.base_offset > end);
            }
        }
        assert!(gaps > 0, "the copy went through gaps");
        let end = follower.log.offsets().log_end;
        assert_eq!(end, leader.log.offsets().log_end);
        follower
            .log
            .wait_durable(Offset(end.0 - 1), Durability::Synced)
            .await
            .expect("synced");
        assert_eq!(records(&follower.log).await, want);
        // a crash of the follower: its recovery scan expects the gaps it copied
        drop(follower);
        let mut follower = open_log(&fp, clock(), None).await;
        assert_eq!(follower.log.offsets().log_end, end);
        assert_eq!(records(&follower.log).await, want);
        // the follower's own cleaner works on its copy
        follower.roll();
        follower.put(&[("k1", Some("follower-side"))]).await;
        follower.roll();
        follower.put(&[("k9", Some("after"))]).await;
        follower.clean().await.expect("follower pass");
        let recs = records(&follower.log).await;
        let m = fold(&recs);
        assert_eq!(
            m.get(&b"k1"[..]).map(Vec::as_slice),
            Some(&b"follower-side"[..])
        );
        assert_eq!(recs.iter().filter(|(_, (k, _))| k == b"k1").count(), 1);
        follower.log.close().await.expect("close");
        leader.log.close().await.expect("close");
    });
}

/// min.compaction.lag.ms holds young records back; max.compaction.lag.ms forces a pass over a
/// dirty section older than it, however small its ratio.
#[test]
fn compaction_lags_and_the_dirty_ratio_decide_when_a_pass_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut cfg = config();
        cfg.compaction.min_lag_ms = 5_000;
        cfg.compaction.max_lag_ms = Some(20_000);
        cfg.compaction.min_dirty_ratio = DirtyRatio::new(0.9).expect("ratio");
        let mut l = open_with(&path, clock(), None, cfg).await;
        history(&mut l).await;
        assert!(
            l.clean().await.is_none(),
            "every record is younger than the lag"
        );
        l.advance(5_000);
        let s = l.clean().await.expect("old enough, and all dirty");
        assert!(s.records_removed > 0);
        // a little new dirty data: below the 0.9 ratio
        l.put(&[("k1", Some("new"))]).await;
        l.roll();
        l.put(&[("k2", Some("new"))]).await;
        l.advance(5_000);
        assert!(
            l.clean().await.is_none(),
            "dirty ratio below 0.9, lag not reached"
        );
        l.advance(20_000);
        l.clean().await.expect("max.compaction.lag.ms forces it");
        let recs = records(&l.log).await;
        assert_eq!(recs.iter().filter(|(_, (k, _))| k == b"k1").count(), 1);
        assert_eq!(
            fold(&recs).get(&b"k1"[..]).map(Vec::as_slice),
            Some(&b"new"[..])
        );
        l.log.close().await.expect("close");
    });
}

/// Reads running beside a pass (the swaps of several groups) always see a consistent log:
/// every record they get is the one appended at its offset and the latest values are there.
/// The reader goes one batch at a time from offset 0, so it reaches segments it never read
/// before while their group is being swapped.
#[test]
fn reads_beside_a_pass_see_the_old_or_the_new_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    run(move || async move {
        let mut cfg = config();
        cfg.hot_cache_bytes = 4096; // reads go to the segment files
        cfg.segment_bytes = 2048; // many groups, so many swaps
        let mut l = open_with(&path, clock(), None, cfg).await;
        for _ in 0..3 {
            history(&mut l).await;
            l.roll();
        }
        l.put(&[("end", Some("1"))]).await;
        let model: Vec<(u64, Rec)> = l.appended.iter().map(|(o, r)| (*o, r.clone())).collect();
        let want = fold(&model);
        let l = Rc::new(l);
        let stop = Rc::new(Cell::new(false));
        let reader = {
            let (l, stop, want) = (l.clone(), stop.clone(), want.clone());
            glommio::spawn_local(async move {
                let mut passes = 0u32;
                while !stop.get() {
                    let mut recs: Vec<(u64, Rec)> = Vec::new();
                    let mut next = Offset(0);
                    loop {
                        let r = l
                            .log
                            .read(next, 1, FirstBatch::Always)
                            .await
                            .expect("a read beside the cleaner");
                        if r.data.is_empty() {
                            break;
                        }
                        let bytes = r.data.to_vec().expect("bytes");
                        for b in batch::split_batches(&bytes) {
                            let h = batch::validate_stored(b).expect("valid batch");
                            let body = batch::uncompressed_payload(b, 1 << 20).expect("body");
                            for rec in batch::parse_records(h, &body).expect("records") {
                                let o = h.base().0 + u64::from(rec.offset_delta);
                                let got = (
                                    rec.key.unwrap_or_default().to_vec(),
                                    rec.value.map(<[u8]>::to_vec),
                                );
                                assert_eq!(l.appended.get(&o), Some(&got), "offset {o}");
                                recs.push((o, got));
                            }
                            next = h.last().plus(1);
                        }
                        // slower than the cleaner: its swaps happen in the middle of a pass
                        glommio::timer::sleep(std::time::Duration::from_micros(300)).await;
                    }
                    assert_eq!(fold(&recs), want);
                    passes += 1;
                }
                passes
            })
        };
        let stats = l.clean().await.expect("pass");
        assert!(stats.segments_in > 2, "{stats:?}");
        stop.set(true);
        assert!(reader.await > 0);
        assert_eq!(fold(&records(&l.log).await), want);
        l.log.close().await.expect("close");
    });
}
