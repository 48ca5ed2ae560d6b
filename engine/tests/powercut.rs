//! Simulated power cuts under the engine's real code (issue 17).
//!
//! The power-cut model (`sluice_engine::powercut`) records every write, length change, sync,
//! create, rename, unlink and directory fsync the engine makes through `sluice_engine::io`.
//! A chain of rounds runs against one partition directory: open (the real recovery), check,
//! a seeded workload (appends of plain and idempotent batches, leader epoch bumps, Synced and
//! Written waits, group commits, clean reopens, follower truncations), then a power cut: the
//! model builds what the disk must have kept plus seeded choices of what else survived
//! (nothing, everything, a prefix, a torn write, any subset), and that image replaces the
//! directory for the next round. Before the image is used, the log is closed and the model's
//! complete image must equal the real directory byte for byte (the self-check).
//!
//! After each recovery: every batch acknowledged Synced before the cut (and every batch a
//! previous recovery returned) is present, intact and at its offset; the log is a contiguous
//! run of valid batches, each one a batch that was appended at that offset (nothing reordered
//! or duplicated); the log end never falls below the acknowledged end; the indexes answer
//! reads from every batch's offsets and timestamp lookups; the producer state equals the one
//! derived from the batches; the leader-epoch cache equals the one derived from the batches.
//!
//! `SLUICE_POWERCUT_CUTS` sets the number of cuts (CI: [`CI_CUTS`]; the full run is 10,000:
//! `SLUICE_POWERCUT_CUTS=10000 cargo test --release -p sluice-engine --test powercut`).
//! A failure prints the chain seed and round to replay:
//! `SLUICE_POWERCUT_SEED=<seed> SLUICE_POWERCUT_CUTS=<rounds> cargo test -p sluice-engine --test powercut`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{normalized, padded_batch, run};
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::io::{self, Sabotage};
use sluice_engine::powercut::{PowerModel, Rng};
use sluice_engine::{
    AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, Offset, PartitionLog,
};

const SEED_ENV: &str = "SLUICE_POWERCUT_SEED";
const CUTS_ENV: &str = "SLUICE_POWERCUT_CUTS";
const BASE_ENV: &str = "SLUICE_POWERCUT_BASE";
/// Cuts per CI run (about 20-60 s on the 2-vCPU CI machine, depending on its load).
const CI_CUTS: u64 = 100;
/// Rounds of one chain (one directory) before the next seed starts afresh.
const CHAIN: u64 = 25;
const BASE_SEED: u64 = 0x5EED_0017;
const T0: i64 = 1_600_000_000_000;

/// The recorder and the sabotage knob are process-wide: tests of this binary take turns.
static TURN: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: [6 * 1024, 16 * 1024, 64 * 1024][rng.below(3) as usize],
        retention_ms: None,
        preallocate_bytes: [0, 16 * 1024][rng.below(2) as usize],
        hot_cache_bytes: 32 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// What one chain knows: every batch appended at each offset (the latest one), and what must
/// survive.
#[derive(Default)]
struct Expect {
    /// base offset -> (last offset, normalized bytes, leader epoch) of the batch appended there.
    appended: BTreeMap<u64, (u64, Vec<u8>, i32)>,
    /// Everything below this must survive (acknowledged Synced, or returned by a recovery).
    durable_end: u64,
    tag: u64,
    epoch: i32,
}

fn fail(seed: u64, round: u64, msg: String) -> String {
    format!(
        "power cut {round} of chain seed {seed:#x}: {msg}\nreplay: {SEED_ENV}={seed:#x} {CUTS_ENV}={} cargo test -p sluice-engine --test powercut",
        round + 1
    )
}

/// Reads every batch of the log from its start: (base, last, bytes).
async fn read_all(log: &PartitionLog) -> Result<Vec<(u64, u64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    loop {
        let r = log
            .read(next, 64 * 1024, FirstBatch::Always)
            .await
            .map_err(|e| format!("read at {next:?}: {e}"))?;
        if r.data.is_empty() {
            if next != r.high_watermark {
                return Err(format!(
                    "empty read at {next:?} below the high watermark {:?}",
                    r.high_watermark
                ));
            }
            return Ok(out);
        }
        let bytes = r.data.to_vec().map_err(|e| format!("read bytes: {e}"))?;
        for b in batch::split_batches(&bytes) {
            let h =
                batch::validate(b).map_err(|e| format!("stored batch at {next:?} invalid: {e}"))?;
            if h.base() != next {
                return Err(format!(
                    "batch at {:?} where {next:?} was expected",
                    h.base()
                ));
            }
            out.push((h.base().0, h.last().0, b.to_vec()));
            next = h.last().plus(1);
        }
    }
}

/// The checks after a recovery; returns the recovered log end.
async fn check(log: &PartitionLog, ex: &mut Expect) -> Result<u64, String> {
    let batches = read_all(log).await?;
    let end = log.offsets().log_end.0;
    if batches.last().map_or(0, |b| b.1 + 1) != end {
        return Err(format!(
            "log end {end} but the batches end at {:?}",
            batches.last().map(|b| b.1 + 1)
        ));
    }
    if end < ex.durable_end {
        return Err(format!(
            "log end {end} below the acknowledged end {}: acknowledged batches lost",
            ex.durable_end
        ));
    }
    let mut epochs: Vec<(i32, Offset)> = Vec::new();
    let mut producers: BTreeMap<i64, i32> = BTreeMap::new();
    // the index lookups are checked on a sample of batches (every batch costs O(n^2))
    let step = (batches.len() / 8).max(1);
    for (i, (base, last, bytes)) in batches.iter().enumerate() {
        let Some((elast, ebytes, eepoch)) = ex.appended.get(base) else {
            return Err(format!("batch at {base} that was never appended there"));
        };
        if elast != last || *ebytes != normalized(bytes) {
            return Err(format!(
                "batch at {base} differs from the one appended there"
            ));
        }
        let h = BatchHeader::parse(bytes).ok_or("header")?;
        if h.partition_leader_epoch.get() != *eepoch {
            return Err(format!(
                "batch at {base}: leader epoch {} not {eepoch}",
                h.partition_leader_epoch.get()
            ));
        }
        if epochs.last().is_none_or(|(e, _)| *e < *eepoch) {
            epochs.push((*eepoch, Offset(*base)));
        }
        if h.producer_id.get() >= 0 {
            producers.insert(
                h.producer_id.get(),
                h.base_sequence.get() + (last - base) as i32,
            );
        }
        if i % step != 0 && i + 1 != batches.len() {
            continue;
        }
        // the index finds the batch from any of its offsets, and by its timestamp
        for o in [*base, *last] {
            let r = log
                .read(Offset(o), 1, FirstBatch::Always)
                .await
                .map_err(|e| format!("read at {o}: {e}"))?;
            let b = r.data.to_vec().map_err(|e| format!("read bytes: {e}"))?;
            let got = BatchHeader::parse(&b).map(|h| h.base().0);
            if got != Some(*base) {
                return Err(format!(
                    "read at {o} returned the batch at {got:?}, not {base}"
                ));
            }
        }
        let ts = h.max_timestamp.get();
        let found = log
            .offset_for_timestamp(ts)
            .await
            .map_err(|e| format!("offset for timestamp: {e}"))?;
        if found.map(|f| f.0 .0) != Some(*base) {
            return Err(format!(
                "timestamp {ts} of the batch at {base} found {found:?}"
            ));
        }
    }
    // recovery keeps an entry that starts exactly at the log end (a leader epoch whose first
    // batch did not reach the disk; epoch::drop_beyond), and a later epoch may then start at
    // the same offset: entries without batches are allowed where the next entry (or the log
    // end) starts at the same offset; the rest must be what the batches say
    let raw = log.epoch_entries();
    if raw.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1) {
        return Err(format!("leader epoch cache out of order: {raw:?}"));
    }
    let mut cache: Vec<(i32, Offset)> = Vec::new();
    for (i, e) in raw.iter().enumerate() {
        let next_start = raw.get(i + 1).map_or(Offset(end), |n| n.1);
        let derived = epochs.iter().any(|d| d == e);
        if !derived && e.1 == next_start {
            continue;
        }
        cache.push(*e);
    }
    if cache != epochs {
        return Err(format!(
            "leader epoch cache {raw:?}, the batches say {epochs:?}"
        ));
    }
    let state: BTreeMap<i64, i32> = log
        .producers()
        .into_iter()
        .filter_map(|(p, e)| e.last_seq().map(|s| (p, s)))
        .collect();
    if state != producers {
        return Err(format!(
            "producer state {state:?}, the batches say {producers:?}"
        ));
    }
    // what this recovery returned must survive from now on; later appends take the offsets
    // of anything lost
    ex.appended.retain(|b, _| *b < end);
    ex.durable_end = end;
    Ok(end)
}

/// One round's workload; returns the acknowledged (Synced) end at its end.
async fn workload(log: &PartitionLog, ex: &mut Expect, rng: &mut Rng) -> Result<u64, String> {
    let mut acked = ex.durable_end;
    let mut seqs: BTreeMap<i64, i32> = log
        .producers()
        .into_iter()
        .filter_map(|(p, e)| e.last_seq().map(|s| (p, s + 1)))
        .collect();
    let ops = 1 + rng.below(30);
    let mut last: Option<u64> = None;
    for _ in 0..ops {
        match rng.below(100) {
            0..=69 => {
                ex.tag += 1;
                let tag = ex.tag;
                let count = 1 + rng.below(5) as usize;
                let value_len = rng.below(2500) as usize;
                let mut b = padded_batch(tag, count, value_len, T0 + tag as i64);
                let pid = rng.below(3) as i64 - 1;
                if pid >= 0 {
                    let seq = seqs.entry(pid).or_insert(0);
                    batch::stamp_producer(&mut b, pid, 0, *seq, false);
                    *seq += count as i32;
                }
                if rng.chance(1, 20) {
                    ex.epoch += 1;
                }
                let opts = AppendOptions {
                    leader_epoch: ex.epoch,
                    ..AppendOptions::default()
                };
                let info = log
                    .append(&b, opts)
                    .await
                    .map_err(|e| format!("append: {e}"))?;
                ex.appended.insert(
                    info.base_offset.0,
                    (info.last_offset.0, normalized(&b), ex.epoch),
                );
                last = Some(info.last_offset.0);
                match rng.below(10) {
                    0..=3 => {
                        log.wait_durable(info.last_offset, Durability::Synced)
                            .await
                            .map_err(|e| format!("wait Synced: {e}"))?;
                        acked = acked.max(info.last_offset.0 + 1);
                    }
                    4..=5 => log
                        .wait_durable(info.last_offset, Durability::Written)
                        .await
                        .map_err(|e| format!("wait Written: {e}"))?,
                    _ => {}
                }
            }
            70..=79 => {
                // group commit: one Synced wait for everything appended so far
                if let Some(l) = last {
                    log.wait_durable(Offset(l), Durability::Synced)
                        .await
                        .map_err(|e| format!("wait Synced: {e}"))?;
                    acked = acked.max(l + 1);
                }
            }
            80..=83 => {
                // a follower truncation to an offset above the acknowledged end
                let end = log.offsets().log_end.0;
                if end > acked {
                    let to = acked + rng.below(end - acked + 1);
                    let to = log
                        .truncate_to(Offset(to))
                        .await
                        .map_err(|e| format!("truncate_to: {e}"))?;
                    ex.appended.retain(|b, _| *b < to.0);
                    last = ex.appended.iter().next_back().map(|(_, v)| v.0);
                    // the producers' sequences continue from what the log now holds
                    seqs = log
                        .producers()
                        .into_iter()
                        .filter_map(|(p, e)| e.last_seq().map(|s| (p, s + 1)))
                        .collect();
                    if let Some((e, _)) = log.epoch_entries().last() {
                        ex.epoch = ex.epoch.max(*e);
                    }
                }
            }
            84..=85 => {
                // a clean stop: the cut then finds the clean-shutdown marker
                log.close().await.map_err(|e| format!("close: {e}"))?;
                return Ok(log.offsets().log_end.0);
            }
            _ => {
                glommio::timer::sleep(std::time::Duration::from_micros(rng.below(500))).await;
            }
        }
    }
    Ok(acked)
}

/// Runs `rounds` power cuts on one fresh directory. `Err` names the failing round.
fn chain(seed: u64, rounds: u64, root: &Path) -> Result<(), String> {
    let root = root.to_path_buf();
    run(move || async move {
        let dir = root.join("t-0");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let model = Arc::new(PowerModel::adopt(&root).map_err(|e| e.to_string())?);
        io::install(model.clone());
        let mut cfg_rng = Rng::new(seed);
        let cfg = config(&mut cfg_rng);
        let mut ex = Expect::default();
        let timing = std::env::var_os("SLUICE_POWERCUT_TIMING").is_some();
        let mut spent = [0f64; 5];
        for round in 0..rounds {
            let t = Instant::now();
            let mut rng = Rng::new(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let log = PartitionLog::open(&dir, cfg.clone(), LogEnv::default())
                .await
                .map_err(|e| fail(seed, round, format!("open (recovery) failed: {e}")))?;
            spent[0] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            check(&log, &mut ex)
                .await
                .map_err(|e| fail(seed, round, format!("after recovery: {e}")))?;
            spent[1] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let acked = workload(&log, &mut ex, &mut rng)
                .await
                .map_err(|e| fail(seed, round, format!("workload: {e}")))?;
            spent[2] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            // the cut: what the disk holds now
            let image = model.cut(&mut rng);
            ex.durable_end = acked;
            // the self-check, at rest: the model's complete image is the real directory
            log.close()
                .await
                .map_err(|e| fail(seed, round, format!("close: {e}")))?;
            drop(log);
            model
                .self_check()
                .map_err(|e| fail(seed, round, format!("self-check: {e}")))?;
            std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
            image.materialize(&root).map_err(|e| e.to_string())?;
            model.readopt(&root).map_err(|e| e.to_string())?;
            spent[3] += t.elapsed().as_secs_f64();
        }
        if timing {
            eprintln!("chain {seed:#x}: open {:.2} s, check {:.2} s, workload {:.2} s, cut+close+self-check {:.2} s", spent[0], spent[1], spent[2], spent[3]);
        }
        Ok(())
    })
}

struct Uninstall;
impl Drop for Uninstall {
    fn drop(&mut self) {
        io::uninstall();
        io::set_sabotage(Sabotage::None);
    }
}

/// Runs `cuts` cuts as chains of [`CHAIN`] rounds; returns (chains, cuts, first failure).
fn run_cuts(base: u64, cuts: u64, tmp: &Path) -> (u64, u64, Option<String>) {
    let mut done = 0;
    let mut chains: u64 = 0;
    while done < cuts {
        let seed = base.wrapping_add(chains.wrapping_mul(0xA24B_AED4_963E_E407));
        let rounds = CHAIN.min(cuts - done);
        let root: PathBuf = tmp.join(format!("chain-{chains}"));
        let r = chain(seed, rounds, &root);
        let _ = std::fs::remove_dir_all(&root);
        chains += 1;
        if cuts > CI_CUTS {
            eprintln!(
                "chain {chains} (seed {seed:#x}): {} cuts so far, {}",
                done + rounds,
                if r.is_ok() { "ok" } else { "FAILED" }
            );
        }
        if let Err(e) = r {
            return (chains, done, Some(e));
        }
        done += rounds;
    }
    (chains, done, None)
}

#[test]
fn power_cuts_keep_every_acknowledged_batch() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    let tmp = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    if let Some(seed) = env_u64(SEED_ENV) {
        let rounds = env_u64(CUTS_ENV).unwrap_or(CHAIN);
        eprintln!("replaying chain seed {seed:#x}, {rounds} rounds");
        if let Err(e) = chain(seed, rounds, &tmp.path().join("replay")) {
            panic!("{e}");
        }
        return;
    }
    let cuts = env_u64(CUTS_ENV).unwrap_or(CI_CUTS);
    // another base seed (SLUICE_POWERCUT_BASE) runs other chains, e.g. to split a full run
    let base = env_u64(BASE_ENV).unwrap_or(BASE_SEED);
    let (chains, done, failure) = run_cuts(base, cuts, tmp.path());
    eprintln!(
        "power cuts: {done} of {cuts} in {chains} chains (base seed {base:#x}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(e) = failure {
        panic!("{e}");
    }
}

/// A deliberately broken engine (fdatasync does nothing, so Synced waiters are released
/// before anything is durable) must be caught within 25 cuts.
#[test]
fn skipped_fdatasync_is_caught() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    io::set_sabotage(Sabotage::SkipDataSync);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, done, failure) = run_cuts(BASE_SEED, 25, tmp.path());
    let e = failure.expect("a Synced acknowledgement without an fdatasync must be caught");
    eprintln!("caught after {done} clean cuts: {e}");
    assert!(e.contains("replay: SLUICE_POWERCUT_SEED="), "{e}");
}

/// A deliberately broken engine (directory fsyncs do nothing, so new segment files and
/// renamed metadata may vanish) must be caught within 25 cuts.
#[test]
fn skipped_directory_fsync_is_caught() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    io::set_sabotage(Sabotage::SkipDirSync);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, done, failure) = run_cuts(BASE_SEED, 25, tmp.path());
    let e =
        failure.expect("acknowledged data in a file whose name was never synced must be caught");
    eprintln!("caught after {done} clean cuts: {e}");
}

/// Regression (found by this test, chain seed 0x44975da98b6ac825, cut 1): the partition
/// directory created by `PartitionLog::open` was never synced into its parent, so the cut
/// dropped the whole partition with 67 acknowledged offsets in it.
#[test]
fn regression_new_partition_dir_survives_a_cut() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    let tmp = tempfile::tempdir().expect("tempdir");
    if let Err(e) = chain(0x4497_5da9_8b6a_c825, 2, &tmp.path().join("r")) {
        panic!("{e}");
    }
}
