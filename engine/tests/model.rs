//! Model test: random sequences of appends (many rolling 8 KiB segments), reads, DeleteRecords,
//! size-based retention and clean or unclean reopens, run on real files (O_DIRECT, fdatasync)
//! and checked after every operation against a simple in-memory model: the batches with their
//! offsets, the segment layout, the log start offset.
//!
//! Each open of the log runs on its own glommio executor: an unclean "drop" ends the executor,
//! which takes the log's flusher task with it, as a crash of the process would.

mod common;

use std::path::{Path, PathBuf};

use common::{padded_batch, read_all, run};
use proptest::prelude::*;
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::{
    AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, LogError, LogOffsets, Offset,
    PartitionLog,
};

const SEGMENT_BYTES: u64 = 8 * 1024;
const EPOCH: i32 = 3;
const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Clone, Copy)]
enum Wait {
    No,
    Written,
    Synced,
}

/// How an operation picks its offset, relative to the log's offsets at that moment.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Start,
    BeforeStart,
    HighWatermark,
    PastHighWatermark,
    /// A fraction (of 65536) of the way from the log start to the high watermark.
    Within(u16),
    /// Anything in 0..log_end+3.
    Anywhere(u16),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        wait: Wait,
    },
    /// Several appends in a row without waiting (rolls, back-pressure, group writes).
    Burst {
        batches: usize,
        records: usize,
        value_len: usize,
    },
    Read {
        at: Pick,
        max_bytes: usize,
        always: bool,
    },
    /// `settle`: wait until everything is synced first, which also means every rolled segment
    /// is sealed, so the model knows exactly which segments may be deleted.
    DeleteRecords {
        at: Pick,
        settle: bool,
    },
    EnforceRetention {
        settle: bool,
    },
    WaitSynced,
    CloseAndReopen,
    /// Wait until everything is written (handed to the kernel), then drop the log and its
    /// executor without closing: the next open recovers.
    DropAndReopen,
}

#[derive(Debug, Clone)]
struct Cfg {
    retention_bytes: u64,
    hot_cache_bytes: usize,
    index_interval_bytes: u64,
    preallocate_bytes: u64,
    write_buffer_bytes: usize,
    flush_messages: Option<u64>,
}

impl Cfg {
    fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: SEGMENT_BYTES,
            segment_ms: None,
            retention_ms: None,
            retention_bytes: Some(self.retention_bytes),
            hot_cache_bytes: self.hot_cache_bytes,
            index_interval_bytes: self.index_interval_bytes,
            preallocate_bytes: self.preallocate_bytes,
            write_buffer_bytes: self.write_buffer_bytes,
            flush_messages: self.flush_messages,
            ..LogConfig::default()
        }
    }
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    last: u64,
    /// The bytes the log must store: the input with baseOffset and partitionLeaderEpoch set.
    stored: Vec<u8>,
}

#[derive(Debug, Clone)]
struct MSeg {
    base: u64,
    size: u64,
    next: u64,
}

#[derive(Debug, Clone)]
struct Model {
    /// Every batch ever appended (those below the log start are no longer readable).
    batches: Vec<MBatch>,
    /// Segments on disk, oldest first; the last one is active.
    segs: Vec<MSeg>,
    log_start: u64,
    log_end: u64,
    /// Last observed high watermark and synced offset (both only grow).
    hw: u64,
    synced: u64,
    /// How many of the oldest segments are known to be sealed (all but the active one after a
    /// settle or an open; a rolled segment is sealed by the flusher some time later).
    sealed_known: usize,
    next_tag: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            batches: Vec::new(),
            segs: vec![MSeg {
                base: 0,
                size: 0,
                next: 0,
            }],
            log_start: 0,
            log_end: 0,
            hw: 0,
            synced: 0,
            sealed_known: 0,
            next_tag: 0,
        }
    }

    fn next_batch(&mut self, records: usize, value_len: usize) -> Vec<u8> {
        let tag = self.next_tag;
        self.next_tag += 1;
        padded_batch(tag, records, value_len, T0 + tag as i64)
    }

    /// Where the log must put `input`: rolls when the active segment is non-empty and would
    /// grow past segment.bytes.
    fn append(&mut self, input: &[u8]) -> (u64, u64) {
        let size = input.len() as u64;
        let count = BatchHeader::parse(input)
            .expect("header")
            .record_count
            .get() as u64;
        let active = self.segs.last().expect("active segment");
        if active.size > 0 && active.size + size > SEGMENT_BYTES {
            self.segs.push(MSeg {
                base: self.log_end,
                size: 0,
                next: self.log_end,
            });
        }
        let base = self.log_end;
        let last = base + count - 1;
        let active = self.segs.last_mut().expect("active segment");
        active.size += size;
        active.next = last + 1;
        let mut stored = input.to_vec();
        let h = BatchHeader::mut_from(&mut stored).expect("header");
        h.base_offset.set(base as i64);
        h.partition_leader_epoch.set(EPOCH);
        self.batches.push(MBatch { base, last, stored });
        self.log_end = last + 1;
        (base, last)
    }

    /// Index of the batch holding `offset`.
    fn batch_at(&self, offset: u64) -> usize {
        let i = self.batches.partition_point(|b| b.last < offset);
        assert!(
            i < self.batches.len() && self.batches[i].base <= offset,
            "model has offset {offset}"
        );
        i
    }

    fn is_boundary(&self, offset: u64) -> bool {
        offset == self.log_end || self.batches.iter().any(|b| b.base == offset)
    }

    fn total_size(&self) -> u64 {
        self.segs.iter().map(|s| s.size).sum()
    }

    /// Segments deleted by a deletion pass at log start `start` when the oldest `sealed`
    /// segments are sealed: sealed segments entirely below the start (a prefix).
    fn doomed(&self, sealed: usize, start: u64) -> usize {
        self.segs[..sealed.min(self.segs.len() - 1)]
            .iter()
            .take_while(|s| s.next <= start)
            .count()
    }
}

fn resolve(at: Pick, o: &LogOffsets) -> u64 {
    let (start, hw, end) = (o.log_start.get(), o.high_watermark.get(), o.log_end.get());
    match at {
        Pick::Start => start,
        Pick::BeforeStart => start.saturating_sub(1),
        Pick::HighWatermark => hw,
        Pick::PastHighWatermark => hw + 1,
        Pick::Within(f) => start + (hw - start) * u64::from(f) / 65536,
        Pick::Anywhere(x) => u64::from(x) % (end + 3),
    }
}

fn opts() -> AppendOptions {
    AppendOptions {
        leader_epoch: EPOCH,
        ..AppendOptions::default()
    }
}

async fn wait_all(log: &PartitionLog, m: &Model, level: Durability) {
    if m.log_end > 0 {
        log.wait_durable(Offset(m.log_end - 1), level)
            .await
            .expect("wait for everything");
    }
}

/// Offsets, segment layout and sizes against the model; learns the high watermark.
fn check_offsets(log: &PartitionLog, m: &mut Model, what: &str) {
    let o = log.offsets();
    assert_eq!(o.log_start.get(), m.log_start, "{what}: log start offset");
    assert_eq!(o.log_end.get(), m.log_end, "{what}: log end offset");
    let (hw, synced) = (o.high_watermark.get(), o.synced.get());
    assert!(
        m.hw <= hw && hw <= m.log_end,
        "{what}: high watermark {hw} not in [{}, {}]",
        m.hw,
        m.log_end
    );
    assert!(
        m.is_boundary(hw),
        "{what}: high watermark {hw} is a batch boundary"
    );
    assert!(
        m.log_start <= hw,
        "{what}: log start {} <= hw {hw}",
        m.log_start
    );
    assert!(
        m.synced <= synced && synced <= hw,
        "{what}: synced {synced} not in [{}, {hw}]",
        m.synced
    );
    m.hw = hw;
    m.synced = synced;
    let bases: Vec<u64> = log.segment_bases().iter().map(|b| b.get()).collect();
    let want: Vec<u64> = m.segs.iter().map(|s| s.base).collect();
    assert_eq!(bases, want, "{what}: segment bases");
    assert_eq!(log.size_bytes(), m.total_size(), "{what}: log size");
}

/// Everything readable, from the log start, against the model.
async fn check_contents(log: &PartitionLog, m: &Model, max_bytes: usize, what: &str) {
    let hw_before = log.offsets().high_watermark.get();
    let got = read_all(log, Offset(m.log_start), max_bytes).await;
    let first = if m.log_start < m.log_end {
        m.batch_at(m.log_start)
    } else {
        m.batches.len()
    };
    let below_hw = m.batches[first..]
        .iter()
        .take_while(|b| b.base < hw_before)
        .count();
    assert!(
        got.len() >= below_hw,
        "{what}: read {} batches, {below_hw} were below the high watermark",
        got.len()
    );
    assert!(
        got.len() <= m.batches.len() - first,
        "{what}: no extra batches"
    );
    for (i, (base, bytes)) in got.iter().enumerate() {
        let want = &m.batches[first + i];
        assert_eq!(*base, want.base, "{what}: batch {i} of the full read");
        assert!(*bytes == want.stored, "{what}: contents of batch at {base}");
    }
}

async fn check_read(log: &PartitionLog, m: &Model, at: Pick, max_bytes: usize, always: bool) {
    let o = log.offsets();
    let off = resolve(at, &o);
    let what = format!("read at {off} ({at:?}) max {max_bytes} always {always}");
    let first = if always {
        FirstBatch::Always
    } else {
        FirstBatch::IfFits
    };
    let res = log.read(Offset(off), max_bytes, first).await;
    let (start, hw) = (o.log_start.get(), o.high_watermark.get());
    if off < start || off > hw {
        match res {
            Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            }) => {
                assert_eq!(offset, Offset(off), "{what}");
                assert_eq!(log_start, o.log_start, "{what}");
                assert_eq!(log_end, o.high_watermark, "{what}");
            }
            other => panic!("{what}: expected OffsetOutOfRange, got {other:?}"),
        }
        return;
    }
    let r = res.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.high_watermark, o.high_watermark, "{what}");
    assert_eq!(r.log_start_offset, o.log_start, "{what}");
    assert_eq!(r.log_end_offset, o.log_end, "{what}");
    let bytes = r.data.to_vec().expect("read bytes");
    assert_eq!(bytes.len() as u64, r.data.len(), "{what}: length");
    if off == hw {
        assert!(bytes.is_empty(), "{what}: empty at the high watermark");
        return;
    }
    let k = m.batch_at(off);
    let batches: Vec<&[u8]> = batch::split_batches(&bytes).collect();
    let total: usize = batches.iter().map(|b| b.len()).sum();
    assert_eq!(total, bytes.len(), "{what}: whole batches only");
    let first_len = m.batches[k].stored.len();
    if first_len > max_bytes && !always {
        assert!(bytes.is_empty(), "{what}: first batch does not fit");
        return;
    }
    assert!(
        !batches.is_empty(),
        "{what}: returns the batch holding the offset"
    );
    assert!(
        total <= max_bytes || (always && batches.len() == 1),
        "{what}: {total} bytes in {} batches",
        batches.len()
    );
    for (i, b) in batches.iter().enumerate() {
        let want = &m.batches[k + i];
        assert!(
            want.base < hw,
            "{what}: batch {} below the high watermark",
            want.base
        );
        assert!(
            *b == want.stored.as_slice(),
            "{what}: batch {} contents",
            want.base
        );
    }
    // as much as fits: reads stop early only where a segment ends (file reads serve one
    // segment at a time)
    if let Some(next) = m.batches.get(k + batches.len()) {
        if next.base < hw && total + next.stored.len() <= max_bytes {
            assert!(
                m.segs.iter().any(|s| s.base == next.base),
                "{what}: stopped before batch {} which fits",
                next.base
            );
        }
    }
}

/// What ended a session.
enum End {
    Close,
    Drop,
    Done,
}

/// Opens the log (a fresh executor is running this), checks it against the model, then runs
/// ops from `from` until one ends the session. Returns the model and the next op.
async fn session(
    dir: PathBuf,
    cfg: Cfg,
    mut m: Model,
    ops: Vec<Op>,
    from: usize,
) -> (Model, usize) {
    let log = PartitionLog::open(&dir, cfg.log_config(), LogEnv::default())
        .await
        .expect("open");
    // after an open everything is written and synced, every segment but the last sealed
    let o = log.offsets();
    assert_eq!(o.high_watermark.get(), m.log_end, "open: high watermark");
    assert_eq!(o.synced.get(), m.log_end, "open: synced");
    m.sealed_known = m.segs.len() - 1;
    check_offsets(&log, &mut m, "open");
    check_contents(&log, &m, 3000, "open").await;
    let mut i = from;
    let end = loop {
        let Some(op) = ops.get(i).cloned() else {
            break End::Done;
        };
        i += 1;
        let what = format!("op {} {op:?}", i - 1);
        let end = apply(&log, &mut m, op, &what).await;
        if let Some(end) = end {
            break end;
        }
        check_offsets(&log, &mut m, &what);
        check_contents(&log, &m, 1 + (i * 997) % 9000, &what).await;
    };
    match end {
        End::Close | End::Done => log.close().await.expect("close"),
        End::Drop => drop(log),
    }
    (m, i)
}

async fn apply(log: &PartitionLog, m: &mut Model, op: Op, what: &str) -> Option<End> {
    match op {
        Op::Append {
            records,
            value_len,
            wait,
        } => {
            let b = m.next_batch(records, value_len);
            let (base, last) = m.append(&b);
            let info = log.append(&b, opts()).await.expect("append");
            assert_eq!(
                (info.base_offset.get(), info.last_offset.get()),
                (base, last),
                "{what}: assigned offsets"
            );
            assert_eq!(info.log_start_offset.get(), m.log_start, "{what}");
            let level = match wait {
                Wait::No => None,
                Wait::Written => Some(Durability::Written),
                Wait::Synced => Some(Durability::Synced),
            };
            if let Some(level) = level {
                log.wait_durable(info.last_offset, level)
                    .await
                    .expect("wait durable");
                let o = log.offsets();
                assert!(o.high_watermark.get() > last, "{what}: written");
                if matches!(wait, Wait::Synced) {
                    assert!(o.synced.get() > last, "{what}: synced");
                }
            }
        }
        Op::Burst {
            batches,
            records,
            value_len,
        } => {
            for j in 0..batches {
                let b = m.next_batch(records, value_len + j * 37);
                let (base, _) = m.append(&b);
                let info = log.append(&b, opts()).await.expect("append");
                assert_eq!(info.base_offset.get(), base, "{what}: assigned offsets");
            }
        }
        Op::Read {
            at,
            max_bytes,
            always,
        } => check_read(log, m, at, max_bytes, always).await,
        Op::DeleteRecords { at, settle } => {
            if settle {
                wait_all(log, m, Durability::Synced).await;
                m.sealed_known = m.segs.len() - 1;
            }
            let o = log.offsets();
            let target = resolve(at, &o);
            let res = log.delete_records(Offset(target)).await;
            if target > o.high_watermark.get() {
                assert!(
                    matches!(res, Err(LogError::OffsetOutOfRange { .. })),
                    "{what}: delete past the high watermark: {res:?}"
                );
                return None;
            }
            let start = res.expect("delete records").get();
            assert_eq!(start, m.log_start.max(target), "{what}: new log start");
            m.log_start = start;
            // sealed segments entirely below the start go; the flusher may not have sealed the
            // newest rolled ones yet
            let deleted = m.segs.len() - log.segment_count();
            let lo = m.doomed(m.sealed_known, start);
            let hi = m.doomed(usize::MAX, start);
            assert!(
                lo <= deleted && deleted <= hi,
                "{what}: deleted {deleted} segments, expected {lo}..={hi}"
            );
            m.segs.drain(..deleted);
            m.sealed_known = m.sealed_known.saturating_sub(deleted);
        }
        Op::EnforceRetention { settle } => {
            if settle {
                wait_all(log, m, Durability::Synced).await;
                m.sealed_known = m.segs.len() - 1;
            }
            let deleted = log.enforce_retention().await.expect("retention");
            let start = log.offsets().log_start.get();
            // retention.bytes over the oldest `sealed` segments, for each possible sealed count
            let limit = log.config().retention_bytes.expect("retention.bytes");
            let predict = |sealed: usize| {
                let mut total = m.total_size();
                let mut new_start = m.log_start;
                for s in &m.segs[..sealed] {
                    if total - s.size < limit {
                        break;
                    }
                    total -= s.size;
                    new_start = new_start.max(s.next);
                }
                (new_start, m.doomed(sealed, new_start))
            };
            let options: Vec<(u64, usize)> = (m.sealed_known..m.segs.len()).map(predict).collect();
            assert!(
                options.contains(&(start, deleted)),
                "{what}: retention moved the start to {start} and deleted {deleted}; \
                 expected one of {options:?}"
            );
            assert!(start >= m.log_start, "{what}: log start only grows");
            m.log_start = start;
            m.segs.drain(..deleted);
            m.sealed_known = m.sealed_known.saturating_sub(deleted);
        }
        Op::WaitSynced => {
            wait_all(log, m, Durability::Synced).await;
            let o = log.offsets();
            assert_eq!(o.synced.get(), m.log_end, "{what}: synced");
            assert_eq!(o.high_watermark.get(), m.log_end, "{what}: written");
        }
        Op::CloseAndReopen => return Some(End::Close),
        Op::DropAndReopen => {
            wait_all(log, m, Durability::Written).await;
            return Some(End::Drop);
        }
    }
    None
}

fn run_case(cfg: Cfg, ops: Vec<Op>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().join("m-0");
    let mut m = Model::new();
    let mut next = 0;
    // one executor per open of the log; the last one only reopens and checks
    loop {
        let done = next >= ops.len();
        let (d, c, o) = (dir.clone(), cfg.clone(), ops.clone());
        let (m2, n2) = run(move || session(d, c, m, o, next));
        m = m2;
        next = n2;
        if done {
            break;
        }
    }
    assert!(Path::new(&dir).exists());
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => Just(Pick::Start),
        1 => Just(Pick::BeforeStart),
        1 => Just(Pick::HighWatermark),
        1 => Just(Pick::PastHighWatermark),
        3 => any::<u16>().prop_map(Pick::Within),
        1 => any::<u16>().prop_map(Pick::Anywhere),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let wait = prop_oneof![Just(Wait::No), Just(Wait::Written), Just(Wait::Synced)];
    prop_oneof![
        6 => (1..=8usize, 0..=1500usize, wait).prop_map(|(records, value_len, wait)| {
            Op::Append { records, value_len, wait }
        }),
        2 => (2..=8usize, 1..=4usize, 0..=1000usize).prop_map(
            |(batches, records, value_len)| Op::Burst { batches, records, value_len }
        ),
        6 => (pick(), prop_oneof![1..=300usize, 300..=20_000usize], any::<bool>()).prop_map(
            |(at, max_bytes, always)| Op::Read { at, max_bytes, always }
        ),
        1 => (pick(), any::<bool>()).prop_map(|(at, settle)| Op::DeleteRecords { at, settle }),
        2 => any::<bool>().prop_map(|settle| Op::EnforceRetention { settle }),
        1 => Just(Op::WaitSynced),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::DropAndReopen),
    ]
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![Just(12 * 1024u64), Just(40 * 1024u64)],
        prop_oneof![Just(0usize), Just(3000usize), Just(1usize << 20)],
        prop_oneof![Just(128u64), Just(4096u64)],
        prop_oneof![Just(0u64), Just(4096u64), Just(1u64 << 20)],
        prop_oneof![Just(4096usize), Just(8usize << 20)],
        prop_oneof![Just(None), Just(Some(5u64))],
    )
        .prop_map(
            |(
                retention_bytes,
                hot_cache_bytes,
                index_interval_bytes,
                preallocate_bytes,
                write_buffer_bytes,
                flush_messages,
            )| Cfg {
                retention_bytes,
                hot_cache_bytes,
                index_interval_bytes,
                preallocate_bytes,
                write_buffer_bytes,
                flush_messages,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        // SLUICE_MODEL_CASES=500 for a longer hunt
        cases: std::env::var("SLUICE_MODEL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24),
        // regressions are printed on failure; nothing is written into the source tree
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(cfg in cfg(), ops in prop::collection::vec(op(), 1..40)) {
        run_case(cfg, ops);
    }
}
