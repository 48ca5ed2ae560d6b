//! One loadgen consumer: fetches its partitions from the given start offsets until it reaches
//! the end offsets the run sets once producing is done, feeding every message to the
//! verification and recording end-to-end latency (consume time - send time in the message).
//! Control batches (transaction markers) are skipped: their offsets only move the position.
//! With `--transactional` the consumers fetch with isolation level read_committed, so they see a
//! transaction's messages once it is committed (end-to-end latency then includes the wait for
//! the commit).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_tools::client::{error_name, FetchOptions};
use sluice_tools::records::decode_batches;

use crate::config::VALUE_HEADER;
use crate::stats::{atomic_max, atomic_min, Clock, Stats};
use crate::verify::PartitionCheck;

/// OFFSET_OUT_OF_RANGE
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// State shared between the run and its consumers.
pub struct ConsumeControl {
    /// Offsets to read up to (exclusive), per partition; set when producing is done.
    pub end_offsets: OnceLock<Vec<i64>>,
    /// Stop now (error elsewhere, or the run gave up).
    pub abort: AtomicBool,
    /// Consume-only mode: stop after this many messages (0: no limit).
    pub limit: u64,
    pub timeout: Duration,
    /// Records read by all consumers (for the limit).
    pub read: AtomicU64,
}

pub struct ConsumerPlan {
    pub id: usize,
    pub addr: SocketAddr,
    /// TLS and SASL of the connection.
    pub dial: crate::dial::Dial,
    pub topic: String,
    /// (partition, start offset)
    pub partitions: Vec<(i32, i64)>,
    pub run_id: u32,
    /// Fetch isolation level: 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
    /// Record e2e latency only for this run's messages.
    pub clock: Clock,
    pub stats: Arc<Stats>,
    pub control: Arc<ConsumeControl>,
}

pub struct ConsumerOutcome {
    pub checks: BTreeMap<i32, PartitionCheck>,
    pub error: Option<String>,
    /// Final position per partition.
    pub positions: Vec<(i32, i64)>,
}

pub fn run(plan: ConsumerPlan) -> ConsumerOutcome {
    let mut checks: BTreeMap<i32, PartitionCheck> = plan
        .partitions
        .iter()
        .map(|(p, _)| (*p, PartitionCheck::default()))
        .collect();
    let mut positions: Vec<(i32, i64)> = plan.partitions.clone();
    let error = consume(&plan, &mut checks, &mut positions).err();
    if let Some(e) = &error {
        plan.stats.error(format!("consumer {}: {e}", plan.id));
    }
    ConsumerOutcome {
        checks,
        error,
        positions,
    }
}

fn consume(
    plan: &ConsumerPlan,
    checks: &mut BTreeMap<i32, PartitionCheck>,
    positions: &mut [(i32, i64)],
) -> Result<(), String> {
    let mut client = plan
        .dial
        .connect(plan.addr, &format!("loadgen-consumer-{}", plan.id))
        .map_err(|e| e.to_string())?;
    // consume throughput counts from the moment the consumers start reading
    atomic_min(&plan.stats.first_consume_us, plan.clock.now_us());
    let ctl = &plan.control;
    let opts = FetchOptions {
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 64 << 20,
        partition_max_bytes: 8 << 20,
        isolation_level: plan.isolation_level,
    };
    let mut last_progress = Instant::now();
    let mut e2e: Vec<u64> = Vec::with_capacity(64 * 1024);
    loop {
        if ctl.abort.load(Ordering::Relaxed) {
            return Ok(());
        }
        if ctl.limit > 0 && ctl.read.load(Ordering::Relaxed) >= ctl.limit {
            return Ok(());
        }
        let end = ctl.end_offsets.get();
        let want: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(p, o)| end.is_none_or(|e| e.get(*p as usize).is_some_and(|end| o < end)))
            .copied()
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        if end.is_some() && last_progress.elapsed() > ctl.timeout {
            return Err(format!(
                "no progress for {} s; stopped at {:?}",
                ctl.timeout.as_secs(),
                want
            ));
        }
        let parts = client
            .fetch(&plan.topic, &want, opts)
            .map_err(|e| e.to_string())?;
        let mut progressed = false;
        for fp in parts {
            let Some(pos) = positions.iter_mut().find(|(p, _)| *p == fp.partition) else {
                continue;
            };
            if fp.error == OFFSET_OUT_OF_RANGE {
                // like auto.offset.reset=earliest; what lay between is gone (verification counts it)
                let earliest = client
                    .list_offsets(&plan.topic, &[fp.partition], -2)
                    .map_err(|e| e.to_string())?
                    .first()
                    .map_or(pos.1, |x| x.1);
                if earliest > pos.1 {
                    if let Some(c) = checks.get_mut(&fp.partition) {
                        c.skipped_offsets += (earliest - pos.1) as u64;
                    }
                    pos.1 = earliest;
                    progressed = true;
                    continue;
                }
                return Err(format!(
                    "partition {}: offset {} out of range (log start {earliest})",
                    fp.partition, pos.1
                ));
            }
            if fp.error != 0 {
                return Err(format!(
                    "fetch of partition {}: {}",
                    fp.partition,
                    error_name(fp.error)
                ));
            }
            let batches = decode_batches(&fp.records)
                .map_err(|e| format!("partition {}: {e}", fp.partition))?;
            let Some(check) = checks.get_mut(&fp.partition) else {
                continue;
            };
            let now = plan.clock.now_us();
            let before = pos.1;
            let mut n = 0u64;
            let mut bytes = 0u64;
            for b in &batches {
                if b.last_offset() < pos.1 || b.is_control() {
                    pos.1 = pos.1.max(b.last_offset() + 1);
                    continue;
                }
                for r in b.iter() {
                    let r = r.map_err(|e| format!("partition {}: {e}", fp.partition))?;
                    if r.offset < pos.1 {
                        continue; // fetch started inside this batch
                    }
                    n += 1;
                    check.records += 1;
                    let v = r.value.unwrap_or_default();
                    bytes += v.len() as u64;
                    if v.len() < VALUE_HEADER {
                        check.foreign += 1;
                        continue;
                    }
                    let run = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                    let producer = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&v[8..16]);
                    let seq = u64::from_be_bytes(s);
                    s.copy_from_slice(&v[16..24]);
                    let sent_us = u64::from_be_bytes(s);
                    if run == plan.run_id {
                        e2e.push(now.saturating_sub(sent_us));
                    }
                    check
                        .producers
                        .entry((run, producer))
                        .or_default()
                        .observe(seq);
                }
                pos.1 = b.last_offset() + 1;
            }
            if pos.1 > before {
                // markers alone move the position too (the last one of a partition ends it)
                progressed = true;
            }
            if n > 0 {
                progressed = true;
                plan.stats.consumed.fetch_add(n, Ordering::Relaxed);
                plan.stats
                    .consumed_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                ctl.read.fetch_add(n, Ordering::Relaxed);
                atomic_max(&plan.stats.last_consume_us, now);
            }
        }
        if !e2e.is_empty() {
            if let Ok(mut h) = plan.stats.e2e_interval.lock() {
                for &l in &e2e {
                    crate::stats::record(&mut h, l);
                }
            }
            e2e.clear();
        }
        if progressed || end.is_none() {
            last_progress = Instant::now();
        }
    }
}
