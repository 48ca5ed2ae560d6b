//! Recovery from damaged segment files, on real files (O_DIRECT, fdatasync).
//!
//! A small log is built once per test (a sealed segment of 20 batches and an active segment of
//! 50 batches of varying sizes, several spanning a 4 KiB page boundary), closed cleanly and kept
//! as a pristine copy. Each variation restores the work directory from that copy, damages it,
//! reopens the log and checks that recovery keeps exactly the valid prefix, byte for byte, that
//! nothing is left on disk after it, and that the log still takes appends afterwards.

mod common;

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use common::{copy_dir, log_files_len, normalized, padded_batch, read_all, run};
use sluice_engine::batch::BatchHeader;
use sluice_engine::meta::{PartitionMeta, META_FILE};
use sluice_engine::{
    AppendOptions, Clock, Durability, FirstBatch, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

const T0: i64 = 1_700_000_000_000;
const EPOCH: i32 = 7;
const PAGE: u64 = 4096;
/// Batches in the sealed first segment.
const SEALED_BATCHES: usize = 20;
/// Batches in the active segment.
const ACTIVE_BATCHES: usize = 50;

struct ManualClock(Cell<i64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

fn env_at(now: i64) -> (LogEnv, Rc<ManualClock>) {
    let clock = Rc::new(ManualClock(Cell::new(now)));
    (
        LogEnv {
            clock: clock.clone(),
            ..LogEnv::default()
        },
        clock,
    )
}

fn config() -> LogConfig {
    LogConfig {
        // rolls are driven by segment.ms and the manual clock, so the layout is exact
        segment_ms: Some(1_000),
        retention_ms: None,
        index_interval_bytes: 512,
        hot_cache_bytes: 4096,
        // no preallocation: thousands of reopens, each with one small append
        preallocate_bytes: 0,
        ..LogConfig::default()
    }
}

fn opts() -> AppendOptions {
    AppendOptions {
        leader_epoch: EPOCH,
        ..AppendOptions::default()
    }
}

/// One stored batch of the pristine log.
#[derive(Debug, Clone)]
struct Stored {
    base: u64,
    last: u64,
    /// Base offset of its segment.
    seg: u64,
    /// Position in its segment's `.log` file.
    pos: u64,
    /// The bytes as stored (baseOffset and partitionLeaderEpoch written by the log).
    raw: Vec<u8>,
    ts: i64,
}

impl Stored {
    fn end(&self) -> u64 {
        self.pos + self.raw.len() as u64
    }
}

struct Pristine {
    _tmp: tempfile::TempDir,
    /// The log as built and closed cleanly; only copied from afterwards.
    dir: PathBuf,
    /// Where variations run.
    work: PathBuf,
    batches: Vec<Stored>,
    active_base: u64,
    meta: PartitionMeta,
}

impl Pristine {
    fn active(&self) -> impl Iterator<Item = (usize, &Stored)> {
        self.batches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.seg == self.active_base)
    }

    fn file(&self, base: u64, ext: &str) -> String {
        format!("{base:020}.{ext}")
    }

    /// Restores every file from the pristine copy (a variation may have deleted the active
    /// segment and appended to the sealed one).
    fn restore(&self) {
        copy_dir(&self.dir, &self.work);
    }

    fn set_meta(&self, mode: MetaMode) {
        let path = self.work.join(META_FILE);
        match mode {
            MetaMode::Missing => fs::remove_file(&path).expect("remove meta"),
            MetaMode::NoMarker => {
                let meta = PartitionMeta {
                    clean_shutdown: None,
                    ..self.meta.clone()
                };
                meta.store(&self.work).expect("store meta");
            }
            MetaMode::Clean => self.meta.store(&self.work).expect("store meta"),
        }
    }
}

/// What `partition.meta` looks like when the damaged log is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaMode {
    /// No metadata file at all: recovery scans every segment.
    Missing,
    /// Log start and recovery point kept, clean-shutdown marker removed: recovery scans from
    /// the segment holding the recovery point (the active one).
    NoMarker,
    /// The marker of the pristine clean close, left in place. Only sound when the damage
    /// changed the active segment's size, which the marker records.
    Clean,
}

/// A batch of exactly `size` bytes (one record, padded value).
fn sized_batch(tag: u64, size: usize, ts: i64) -> Vec<u8> {
    (size.saturating_sub(90)..size)
        .map(|len| padded_batch(tag, 1, len, ts))
        .find(|b| b.len() == size)
        .unwrap_or_else(|| panic!("no single-record batch of {size} bytes"))
}

/// Builds the pristine log: 20 batches in a sealed segment, 50 in the active one. The last
/// three active batches are 110, 300 and 140 bytes and the middle one spans a page boundary.
fn build() -> Pristine {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pristine");
    let work = tmp.path().join("work");
    let build_dir = dir.clone();
    // every batch is decided up front: varied sizes and record counts, then a filler so that
    // the last three batches (110, 300, 140 bytes) start 260 bytes before a page boundary
    let mut planned: Vec<(Vec<u8>, i64)> = Vec::new();
    let ts_of = |i: usize| T0 + 1000 * i as i64;
    for i in 0..SEALED_BATCHES {
        let ts = ts_of(i);
        planned.push((
            padded_batch(i as u64, 1 + i % 3, (i * 977) % 1800 + 10, ts),
            ts,
        ));
    }
    let mut active_size = 0u64;
    for j in 0..ACTIVE_BATCHES - 4 {
        let i = SEALED_BATCHES + j;
        let b = padded_batch(i as u64, 1 + j % 4, (j * 613) % 2200 + 5, ts_of(i));
        active_size += b.len() as u64;
        planned.push((b, ts_of(i)));
    }
    let mut k = active_size.div_ceil(PAGE);
    while k * PAGE - 260 < active_size + 150 {
        k += 1;
    }
    let sizes = [(k * PAGE - 260 - active_size) as usize, 110, 300, 140];
    for (n, size) in sizes.into_iter().enumerate() {
        let i = SEALED_BATCHES + ACTIVE_BATCHES - 4 + n;
        planned.push((sized_batch(i as u64, size, ts_of(i)), ts_of(i)));
    }
    let (batches, active_base) = run(move || async move {
        let (env, clock) = env_at(T0);
        let log = PartitionLog::open(&build_dir, config(), env)
            .await
            .expect("open");
        let mut inputs: Vec<(u64, u64, Vec<u8>, i64)> = Vec::new();
        for (i, (b, ts)) in planned.into_iter().enumerate() {
            if i == SEALED_BATCHES {
                // past segment.ms: this append rolls; the clock then stands still
                clock.0.set(T0 + 5_000);
            }
            let info = log.append(&b, opts()).await.expect("append");
            inputs.push((info.base_offset.get(), info.last_offset.get(), b, ts));
        }
        let leo = log.offsets().log_end;
        log.wait_durable(Offset(leo.get() - 1), Durability::Synced)
            .await
            .expect("synced");
        let bases = log.segment_bases();
        assert_eq!(bases.len(), 2, "one sealed and one active segment");
        log.close().await.expect("close");
        (inputs, bases[1].get())
    });
    let mut pos = 0u64;
    let mut seg = 0u64;
    let mut stored = Vec::new();
    for (base, last, input, ts) in batches {
        if base == active_base {
            seg = active_base;
            pos = 0;
        }
        let file = fs::File::open(dir.join(format!("{seg:020}.log"))).expect("open segment");
        let mut raw = vec![0u8; input.len()];
        file.read_exact_at(&mut raw, pos).expect("read batch");
        let h = BatchHeader::parse(&raw).expect("header");
        assert_eq!(h.base_offset.get() as u64, base, "stored base offset");
        assert_eq!(h.partition_leader_epoch.get(), EPOCH, "stored epoch");
        assert_eq!(normalized(&raw), input, "stored bytes are the input");
        stored.push(Stored {
            base,
            last,
            seg,
            pos,
            raw,
            ts,
        });
        pos += stored.last().map_or(0, |b: &Stored| b.raw.len() as u64);
    }
    assert_eq!(stored.len(), SEALED_BATCHES + ACTIVE_BATCHES);
    let active_len = fs::metadata(dir.join(format!("{active_base:020}.log")))
        .expect("stat")
        .len();
    assert_eq!(active_len, pos, "clean close leaves the exact size");
    let meta = PartitionMeta::load(&dir)
        .expect("meta")
        .expect("meta exists");
    assert!(
        meta.clean_shutdown.is_some(),
        "clean close leaves the marker"
    );
    assert_eq!(meta.recovery_point, active_base);
    let p = Pristine {
        _tmp: tmp,
        dir,
        work,
        batches: stored,
        active_base,
        meta,
    };
    // the tail layout the truncation test relies on
    let tail: Vec<&Stored> = p.batches.iter().rev().take(3).collect();
    assert_eq!(
        tail.iter().map(|b| b.raw.len()).collect::<Vec<_>>(),
        [140, 300, 110]
    );
    assert!(
        tail[1].pos / PAGE != (tail[1].end() - 1) / PAGE,
        "the middle tail batch spans a page boundary"
    );
    let spanning = p
        .batches
        .iter()
        .filter(|b| b.pos / PAGE != (b.end() - 1) / PAGE)
        .count();
    assert!(spanning >= 5, "{spanning} batches span a page boundary");
    p
}

/// Expected surviving batches: (base offset, stored bytes).
type Survivors = Vec<(u64, Vec<u8>)>;

fn prefix(p: &Pristine, n: usize) -> Survivors {
    p.batches[..n]
        .iter()
        .map(|b| (b.base, b.raw.clone()))
        .collect()
}

/// Reopens the work directory and checks that exactly `want` survived, that nothing is left on
/// disk past it, and that the log takes an append that reads back. Returns the open log.
async fn check_reopen(work: &Path, want: &Survivors, tag: u64, what: &str) -> PartitionLog {
    let (env, _clock) = env_at(T0 + 5_000);
    let log = PartitionLog::open(work, config(), env)
        .await
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let leo = want.last().map_or(0, |(base, raw)| {
        let h = BatchHeader::parse(raw).expect("header");
        base + h.last_offset_delta.get() as u64 + 1
    });
    let o = log.offsets();
    assert_eq!(o.log_start, Offset(0), "{what}: log start");
    assert_eq!(o.log_end, Offset(leo), "{what}: log end offset");
    assert_eq!(o.high_watermark, Offset(leo), "{what}: high watermark");
    let want_bytes: u64 = want.iter().map(|(_, raw)| raw.len() as u64).sum();
    assert_eq!(log.size_bytes(), want_bytes, "{what}: logical size");
    assert_eq!(
        log_files_len(work),
        want_bytes,
        "{what}: recovery truncated the files to the valid prefix"
    );
    let got = read_all(&log, Offset(0), 1 << 20).await;
    assert_eq!(got.len(), want.len(), "{what}: surviving batch count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, w.0, "{what}: base offset of batch {i}");
        assert!(g.1 == w.1, "{what}: bytes of batch {i} differ");
    }
    // the log continues after the surviving prefix, from memory and from the file
    let b = padded_batch(tag, 3, 100, T0 + 999_000);
    let info = log
        .append_durable(&b, opts(), Durability::Synced)
        .await
        .unwrap_or_else(|e| panic!("{what}: append after recovery: {e}"));
    assert_eq!(info.base_offset, Offset(leo), "{what}: appended at the end");
    let r = log
        .read(Offset(leo), 1 << 20, FirstBatch::Always)
        .await
        .expect("read appended");
    assert_eq!(
        normalized(&r.data.to_vec().expect("bytes")),
        b,
        "{what}: appended batch reads back"
    );
    // (the file itself is longer now: O_DIRECT writes whole pages)
    assert_eq!(
        log.size_bytes(),
        want_bytes + b.len() as u64,
        "{what}: append landed right after the prefix"
    );
    log
}

/// Runs `check` for every case, on a fresh executor per `CHUNK` cases. Logs are dropped
/// without `close` (the files are restored before each case anyway, and close costs several
/// fsyncs); their idle flusher tasks go away with their executor.
fn run_cases<C, F, Fut>(p: &Arc<Pristine>, cases: Vec<C>, check: F)
where
    C: Send + 'static,
    F: Fn(Arc<Pristine>, usize, C) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    const CHUNK: usize = 64;
    let mut cases = cases.into_iter().enumerate().peekable();
    while cases.peek().is_some() {
        let chunk: Vec<(usize, C)> = cases.by_ref().take(CHUNK).collect();
        let p = p.clone();
        let check = check.clone();
        run(move || async move {
            for (i, c) in chunk {
                check(p.clone(), i, c).await;
            }
        });
    }
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncation")
        .set_len(len)
        .expect("truncate");
}

fn flip(path: &Path, pos: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).expect("read byte");
    b[0] ^= 0xff;
    f.write_all_at(&b, pos).expect("write byte");
}

/// (a) Cut the active segment at every byte position inside its last three batches: exactly
/// the batches entirely before the cut survive, whatever the metadata says (no file, no
/// marker, or the stale marker of the pristine clean close, which records another size).
#[test]
fn truncated_tail_keeps_exactly_the_whole_batches_before_the_cut() {
    let p = Arc::new(build());
    let active: Vec<(usize, Stored)> = p.active().map(|(i, b)| (i, b.clone())).collect();
    let first_cut = active[active.len() - 3].1.pos;
    let file_len = active[active.len() - 1].1.end();
    let modes = [MetaMode::Missing, MetaMode::NoMarker, MetaMode::Clean];
    let cases: Vec<(u64, MetaMode, usize)> = (first_cut..file_len)
        .map(|cut| {
            let survivors = active
                .iter()
                .filter(|(_, b)| b.end() <= cut)
                .map(|(i, _)| i + 1)
                .max()
                .unwrap_or(SEALED_BATCHES);
            (cut, modes[cut as usize % 3], survivors)
        })
        .collect();
    assert_eq!(cases.len(), 110 + 300 + 140);
    let started = Instant::now();
    run_cases(&p, cases, |p, i, (cut, mode, survivors)| async move {
        p.restore();
        p.set_meta(mode);
        truncate(&p.work.join(p.file(p.active_base, "log")), cut);
        let what = format!("cut at {cut} with meta {mode:?}");
        check_reopen(&p.work, &prefix(&p, survivors), 1_000_000 + i as u64, &what).await;
    });
    println!("550 truncations in {:?}", started.elapsed());
}

/// (a) Cutting the active segment to nothing drops its file; the sealed segment becomes the
/// active one again and takes appends, across clean and unclean reopens.
#[test]
fn truncated_to_empty_active_segment_falls_back_to_the_previous_segment() {
    let p = Arc::new(build());
    let modes = vec![MetaMode::Missing, MetaMode::NoMarker, MetaMode::Clean];
    run_cases(&p, modes, |p, _, mode| async move {
        let log_name = p.file(p.active_base, "log");
        p.restore();
        p.set_meta(mode);
        truncate(&p.work.join(&log_name), 0);
        let want = prefix(&p, SEALED_BATCHES);
        let what = format!("active segment emptied, meta {mode:?}");
        let log = check_reopen(&p.work, &want, 2_000_000, &what).await;
        assert!(
            !p.work.join(&log_name).exists(),
            "{what}: empty tail removed"
        );
        log.close().await.expect("close");
        // the appended batch lives in the old segment; it survives clean and unclean reopens
        for clean in [true, false] {
            if !clean {
                let mut m = PartitionMeta::load(&p.work).expect("meta").expect("exists");
                assert!(m.clean_shutdown.is_some(), "close left the marker");
                m.clean_shutdown = None;
                m.store(&p.work).expect("store meta");
            }
            let (env, _clock) = env_at(T0 + 5_000);
            let log = PartitionLog::open(&p.work, config(), env)
                .await
                .expect("reopen");
            assert_eq!(log.segment_bases(), vec![Offset(0)], "{what}");
            let got = read_all(&log, Offset(0), 700).await;
            assert_eq!(got.len(), SEALED_BATCHES + 1, "{what}, clean {clean}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.1 == w.1, "{what}: batch at {} differs", g.0);
            }
            assert_eq!(
                normalized(&got[SEALED_BATCHES].1),
                padded_batch(2_000_000, 3, 100, T0 + 999_000)
            );
            log.close().await.expect("close");
        }
    });
}

/// (a) A cut inside the sealed segment is found only by a full scan (no metadata): the valid
/// prefix of that segment survives and everything after it, the active segment included, goes.
#[test]
fn truncated_sealed_segment_discards_everything_after_the_cut() {
    let p = Arc::new(build());
    let b5 = p.batches[5].clone();
    let last = p.batches[SEALED_BATCHES - 1].clone();
    let cuts = vec![
        b5.pos,
        b5.pos + 1,
        b5.pos + 60,
        b5.end() - 1,
        last.end() - 1,
    ];
    run_cases(&p, cuts, |p, i, cut| async move {
        p.restore();
        p.set_meta(MetaMode::Missing);
        truncate(&p.work.join(p.file(0, "log")), cut);
        let survivors = p.batches[..SEALED_BATCHES]
            .iter()
            .filter(|b| b.end() <= cut)
            .count();
        let what = format!("sealed segment cut at {cut}");
        check_reopen(&p.work, &prefix(&p, survivors), 3_000_000 + i as u64, &what).await;
        assert!(
            !p.work.join(p.file(p.active_base, "log")).exists(),
            "{what}: the segment after the cut is deleted"
        );
    });
}

/// Where a byte flip lands and what recovery must do about it.
fn flip_survivors(p: &Pristine, k: usize, byte: usize) -> Survivors {
    if (12..16).contains(&byte) {
        // partitionLeaderEpoch: outside the CRC and not checkable, so the batch stays valid
        // (with the flipped epoch) and so does everything after it
        let mut all = prefix(p, p.batches.len());
        all[k].1[byte] ^= 0xff;
        all
    } else {
        // baseOffset (offset contiguity), batchLength, magic, CRC and everything it covers
        prefix(p, k)
    }
}

/// (b) Flip one byte (xor 0xff) inside the last batches of the active segment: recovery keeps
/// exactly the batches before the damaged one. Every byte of the last batch; every header byte
/// and a stride of body bytes of the page-spanning one before it; the header of the first
/// active batch.
#[test]
fn flipped_byte_keeps_exactly_the_batches_before_the_damaged_one() {
    let p = Arc::new(build());
    let total = p.batches.len();
    let mut cases: Vec<(usize, usize)> = (0..61).map(|j| (SEALED_BATCHES, j)).collect();
    let len = p.batches[total - 2].raw.len();
    cases.extend(
        (0..len)
            .filter(|&j| j < 61 || j % 11 == 0 || j == len - 1)
            .map(|j| (total - 2, j)),
    );
    cases.extend((0..p.batches[total - 1].raw.len()).map(|j| (total - 1, j)));
    let epoch_cases = cases.iter().filter(|(_, j)| (12..16).contains(j)).count();
    assert_eq!(
        epoch_cases,
        3 * 4,
        "the epoch bytes of every batch tried are flipped"
    );
    let n = cases.len();
    let started = Instant::now();
    run_cases(&p, cases, |p, i, (k, byte)| async move {
        p.restore();
        let mode = [MetaMode::Missing, MetaMode::NoMarker][i % 2];
        p.set_meta(mode);
        let b = &p.batches[k];
        flip(
            &p.work.join(p.file(p.active_base, "log")),
            b.pos + byte as u64,
        );
        let what = format!(
            "flip of byte {byte} of batch {k} (offset {}), meta {mode:?}",
            b.base
        );
        let want = flip_survivors(&p, k, byte);
        check_reopen(&p.work, &want, 4_000_000 + i as u64, &what).await;
    });
    println!("{n} flips in {:?}", started.elapsed());
}

/// (b) A flip in the sealed segment is found by a full scan (no metadata): the rest of the log,
/// the active segment included, is discarded.
#[test]
fn flipped_byte_in_sealed_segment_found_by_full_scan() {
    let p = Arc::new(build());
    let k = 5;
    let len = p.batches[k].raw.len();
    let bytes: Vec<usize> = (0..61).chain([61, len / 2, len - 1]).collect();
    run_cases(&p, bytes, move |p, i, byte| async move {
        p.restore();
        p.set_meta(MetaMode::Missing);
        flip(
            &p.work.join(p.file(0, "log")),
            p.batches[k].pos + byte as u64,
        );
        let want = flip_survivors(&p, k, byte);
        let what = format!("flip of byte {byte} of sealed batch {k}");
        check_reopen(&p.work, &want, 5_000_000 + i as u64, &what).await;
    });
}

type Damage = (&'static str, fn(&Path, &Path));

/// (c) Damaged or missing index files of the sealed segment are rebuilt from the log: reads
/// through the offset index, timestamp lookups and time-based retention all still work.
#[test]
fn damaged_index_files_of_a_sealed_segment_are_rebuilt() {
    let p = Arc::new(build());
    let index_len = fs::metadata(p.dir.join(p.file(0, "index")))
        .expect("stat")
        .len();
    let time_len = fs::metadata(p.dir.join(p.file(0, "timeindex")))
        .expect("stat")
        .len();
    assert!(index_len >= 8 * 5, "the sealed segment has a real index");
    assert!(time_len >= 12, "the sealed segment has a time index");
    let damages: Vec<Damage> = vec![
        ("index truncated to 5 bytes", |i, _| truncate(i, 5)),
        ("index overwritten with garbage", |i, _| {
            fs::write(i, [0xffu8; 64]).expect("write garbage")
        }),
        ("index with a torn last entry", |i, _| {
            truncate(i, fs::metadata(i).expect("stat").len() - 3)
        }),
        ("index deleted", |i, _| {
            fs::remove_file(i).expect("remove index")
        }),
        ("timeindex truncated to 7 bytes", |_, t| truncate(t, 7)),
        ("timeindex overwritten with garbage", |_, t| {
            fs::write(t, [0xffu8; 36]).expect("write garbage")
        }),
        ("timeindex emptied", |_, t| truncate(t, 0)),
        ("timeindex deleted", |_, t| {
            fs::remove_file(t).expect("remove timeindex")
        }),
        ("both deleted", |i, t| {
            fs::remove_file(i).expect("remove index");
            fs::remove_file(t).expect("remove timeindex");
        }),
    ];
    let cases: Vec<(Damage, MetaMode)> = damages
        .into_iter()
        .flat_map(|d| [(d, MetaMode::Clean), (d, MetaMode::NoMarker)])
        .collect();
    run_cases(&p, cases, |p, _, ((name, damage), mode)| async move {
        p.restore();
        p.set_meta(mode);
        damage(
            &p.work.join(p.file(0, "index")),
            &p.work.join(p.file(0, "timeindex")),
        );
        let what = format!("{name}, meta {mode:?}");
        let (env, clock) = env_at(T0 + 5_000);
        let log = PartitionLog::open(&p.work, config(), env)
            .await
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let last = p.batches.last().expect("batches");
        assert_eq!(log.offsets().log_end, Offset(last.last + 1), "{what}");
        // many small reads: each starts from an index lookup in the middle of a segment
        let got = read_all(&log, Offset(0), 700).await;
        assert_eq!(got.len(), p.batches.len(), "{what}");
        for (g, b) in got.iter().zip(&p.batches) {
            assert_eq!(g.0, b.base, "{what}");
            assert!(g.1 == b.raw, "{what}: batch at {} differs", b.base);
        }
        for b in &p.batches {
            for off in [b.base, b.last] {
                let r = log
                    .read(Offset(off), 1, FirstBatch::Always)
                    .await
                    .expect("read");
                let bytes = r.data.to_vec().expect("bytes");
                assert!(bytes == b.raw, "{what}: read at {off} returns its batch");
            }
            let hit = log.offset_for_timestamp(b.ts).await.expect("lookup");
            assert_eq!(
                hit,
                Some((Offset(b.base), b.ts)),
                "{what}: timestamp lookup of batch {}",
                b.base
            );
        }
        // time retention needs the sealed segment's largest timestamp
        let mut cfg = config();
        cfg.retention_ms = Some(60_000);
        log.set_config(cfg);
        // the sealed segment's newest record (T0 + 19 s) is now older than 60 s
        clock.0.set(T0 + 100_000);
        let deleted = log.enforce_retention().await.expect("retention");
        assert_eq!(deleted, 1, "{what}: the old sealed segment expires");
        assert_eq!(log.offsets().log_start, Offset(p.active_base), "{what}");
        assert!(
            matches!(
                log.read(Offset(0), 100, FirstBatch::Always).await,
                Err(LogError::OffsetOutOfRange { .. })
            ),
            "{what}"
        );
        log.close().await.expect("close");
    });
}
