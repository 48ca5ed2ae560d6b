//! Simulated power cuts of a whole broker (issue 17): the broker runs in this process on a
//! data directory watched by the engine's power-cut model (`sluice_engine::powercut`, see
//! engine/tests/powercut.rs for the partition-level run). Each round starts the broker on what
//! the previous cut left, checks it over the wire, runs a seeded workload (CreateTopics,
//! acks=all produces, OffsetCommits), then cuts the power: the model's image (what the disk
//! must keep plus seeded survivors) becomes the next round's data directory. Before that the
//! broker stops cleanly and the model's complete image must equal the real directory byte for
//! byte (the self-check: every file the broker writes goes through `sluice_engine::io`).
//!
//! Checked after each restart: every topic whose creation was acknowledged exists with its
//! partitions (the catalog, `__sluice/catalog.json`); every partition's log end is at least
//! its acknowledged end; every acknowledged OffsetCommit is returned by OffsetFetch, and no
//! committed offset is beyond its partition's log end (the committed-offsets state log).
//!
//! CI runs [`CI_CUTS`]; `SLUICE_POWERCUT_BROKER_CUTS=150 cargo test -p sluice-server --test
//! powercut` is the full run; a failure prints its seed:
//! `SLUICE_POWERCUT_SEED=<seed> SLUICE_POWERCUT_BROKER_CUTS=<rounds> cargo test -p sluice-server --test powercut`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{config, name, sb, Client};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use sluice_engine::batch;
use sluice_engine::io;
use sluice_engine::powercut::{PowerModel, Rng};

const SEED_ENV: &str = "SLUICE_POWERCUT_SEED";
const CUTS_ENV: &str = "SLUICE_POWERCUT_BROKER_CUTS";
const CI_CUTS: u64 = 6;
const BASE_SEED: u64 = 0xB0_0017;
const GROUP: &str = "g";

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[derive(Default)]
struct Expect {
    /// topic -> partitions, for every acknowledged CreateTopics.
    topics: BTreeMap<String, i32>,
    /// (topic, partition) -> end offset that must survive.
    ends: BTreeMap<(String, i32), i64>,
    /// (topic, partition) -> the last acknowledged committed offset of GROUP.
    committed: BTreeMap<(String, i32), i64>,
    next_topic: u64,
    /// (topic, partition, offset) of each transactional batch whose EndTxn was acknowledged,
    /// and whether it committed.
    txns: Vec<(String, i32, i64, bool)>,
    /// This round's transactional producer (id, epoch), after InitProducerId.
    producer: Option<(i64, i16)>,
    /// The next sequence of this round's producer epoch per partition.
    seqs: BTreeMap<(String, i32), i32>,
}

const TXN_ID: &str = "tx";

fn init(c: &mut Client) -> Result<(i64, i16), String> {
    // CONCURRENT_TRANSACTIONS (51) while the coordinator finishes an abort
    for _ in 0..200 {
        let r: InitProducerIdResponse = c.call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(sb(TXN_ID))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        match r.error_code {
            0 => return Ok((r.producer_id.0, r.producer_epoch)),
            51 => std::thread::sleep(std::time::Duration::from_millis(20)),
            e => return Err(format!("InitProducerId: error {e}")),
        }
    }
    Err("InitProducerId: still CONCURRENT_TRANSACTIONS after 4 s".into())
}

/// One whole transaction of one batch on `t`-`p`: (batch offset, committed) once acknowledged.
fn transaction(
    c: &mut Client,
    ex: &mut Expect,
    t: &str,
    p: i32,
    commit: bool,
) -> Result<i64, String> {
    let (pid, epoch) = match ex.producer {
        Some(x) => x,
        None => {
            let x = init(c)?;
            ex.producer = Some(x);
            x
        }
    };
    let r: AddPartitionsToTxnResponse = c.call(
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(sb(TXN_ID)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(name(t))
                .with_partitions(vec![p])]),
    );
    let e = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
    if e != 0 {
        return Err(format!("AddPartitionsToTxn {t}-{p}: error {e}"));
    }
    let count = 3;
    let mut b = batch::build_uniform(count as usize, 100, 1_600_000_000_000);
    // sequences start at 0 in each partition for each producer epoch (one per round)
    let seq = ex.seqs.entry((t.to_string(), p)).or_insert(0);
    batch::stamp_producer(&mut b, pid, epoch, *seq, true);
    *seq += count as i32;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_transactional_id(Some(TransactionalId(sb(TXN_ID))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(t))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(Bytes::from(b)))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let pr = &r.responses[0].partition_responses[0];
    if pr.error_code != 0 {
        return Err(format!(
            "transactional produce {t}-{p}: error {}",
            pr.error_code
        ));
    }
    let base = pr.base_offset;
    let end = ex.ends.entry((t.to_string(), p)).or_insert(0);
    *end = (*end).max(base + count);
    let r: EndTxnResponse = c.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(TXN_ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    );
    if r.error_code != 0 {
        return Err(format!("EndTxn: error {}", r.error_code));
    }
    ex.txns.push((t.to_string(), p, base, commit));
    Ok(base)
}

fn commit(c: &mut Client, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
    let r: OffsetCommitResponse = c.call(
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(GROUP)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)])]),
    );
    match r.topics[0].partitions[0].error_code {
        0 => Ok(()),
        e => Err(format!("commit {topic}-{partition} at {offset}: error {e}")),
    }
}

fn fetch_committed(c: &mut Client, topic: &str, partitions: i32) -> Vec<i64> {
    let r: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(GROUP)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name(topic))
                .with_partition_indexes((0..partitions).collect())])),
    );
    r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

/// No half transaction: once this round's InitProducerId has aborted whatever the cut left
/// open, every partition's last stable offset reaches its high watermark; every acknowledged
/// commit is readable with read_committed, every acknowledged abort is listed as aborted.
fn check_transactions(c: &mut Client, ex: &mut Expect) -> Result<(), String> {
    ex.producer = Some(init(c)?);
    ex.seqs.clear();
    for (t, n) in &ex.topics {
        for p in 0..*n {
            let mut settled = false;
            for _ in 0..200 {
                let (e, hw, lso, _, _) = c.fetch_isolated(t, p, 0, true);
                if e == 0 && lso == hw {
                    settled = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if !settled {
                return Err(format!("{t}-{p}: last stable offset stays below the high watermark: a transaction was left open"));
            }
        }
    }
    for (t, p, base, committed) in &ex.txns {
        let (e, _, _, aborted, bytes) = c.fetch_isolated(t, *p, *base, true);
        if e != 0 {
            return Err(format!("read_committed fetch {t}-{p} at {base}: error {e}"));
        }
        let first = batch::split_batches(&bytes)
            .filter_map(batch::BatchHeader::parse)
            .next()
            .map(|h| h.base().get() as i64);
        if first != Some(*base) {
            return Err(format!(
                "{t}-{p}: the transactional batch at {base} is gone (fetch starts at {first:?})"
            ));
        }
        let listed = aborted.iter().any(|(_, f)| *f <= *base);
        if *committed == listed {
            return Err(format!(
                "{t}-{p}: the transaction at {base} was acknowledged {} but is {}listed as aborted",
                if *committed { "committed" } else { "aborted" },
                if listed { "" } else { "not " }
            ));
        }
    }
    Ok(())
}

fn check(c: &mut Client, ex: &mut Expect) -> Result<(), String> {
    check_transactions(c, ex)?;
    for (t, n) in &ex.topics {
        match c.partitions(t) {
            Some(p) if p == *n as usize => {}
            other => {
                return Err(format!(
                    "topic {t} acknowledged with {n} partitions, now {other:?}"
                ))
            }
        }
        let committed = fetch_committed(c, t, *n);
        for p in 0..*n {
            let key = (t.clone(), p);
            let (err, end) = c.list_offset(t, p, -1);
            if err != 0 {
                return Err(format!("ListOffsets {t}-{p}: error {err}"));
            }
            let want = ex.ends.get(&key).copied().unwrap_or(0);
            if end < want {
                return Err(format!(
                    "{t}-{p}: log end {end} below the acknowledged {want}"
                ));
            }
            ex.ends.insert(key.clone(), end);
            let got = committed.get(p as usize).copied().unwrap_or(-1);
            let want = ex.committed.get(&key).copied().unwrap_or(-1);
            if got != want {
                return Err(format!(
                    "{t}-{p}: committed offset {got}, the last acknowledged commit was {want}"
                ));
            }
            if got > end {
                return Err(format!(
                    "{t}-{p}: committed offset {got} beyond the log end {end}"
                ));
            }
        }
    }
    Ok(())
}

fn workload(c: &mut Client, ex: &mut Expect, rng: &mut Rng) -> Result<(), String> {
    for _ in 0..1 + rng.below(12) {
        match rng.below(10) {
            0..=1 => {
                let t = format!("t{}", ex.next_topic);
                ex.next_topic += 1;
                let n = 1 + rng.below(3) as i32;
                c.create_topic(&t, n, &[("segment.bytes", "16384")]);
                ex.topics.insert(t, n);
            }
            2..=6 if !ex.topics.is_empty() => {
                let (t, n) = pick(ex, rng);
                let p = rng.below(n as u64) as i32;
                let count = 1 + rng.below(5) as usize;
                let b = batch::build_uniform(count, rng.below(2000) as usize, 1_600_000_000_000);
                let base = c.produce(&t, p, b);
                let end = ex.ends.entry((t, p)).or_insert(0);
                *end = (*end).max(base + count as i64);
            }
            7 if !ex.topics.is_empty() => {
                let (t, n) = pick(ex, rng);
                let p = rng.below(n as u64) as i32;
                transaction(c, ex, &t, p, rng.chance(1, 2))?;
            }
            _ if !ex.topics.is_empty() => {
                let (t, n) = pick(ex, rng);
                let p = rng.below(n as u64) as i32;
                let end = ex.ends.get(&(t.clone(), p)).copied().unwrap_or(0);
                let off = rng.below(end as u64 + 1) as i64;
                commit(c, &t, p, off)?;
                ex.committed.insert((t, p), off);
            }
            _ => {}
        }
    }
    Ok(())
}

fn pick(ex: &Expect, rng: &mut Rng) -> (String, i32) {
    let i = rng.below(ex.topics.len() as u64) as usize;
    let (t, n) = ex.topics.iter().nth(i).expect("non-empty");
    (t.clone(), *n)
}

fn fail(seed: u64, round: u64, msg: String) -> String {
    format!(
        "broker power cut {round} of seed {seed:#x}: {msg}\nreplay: {SEED_ENV}={seed:#x} {CUTS_ENV}={} cargo test -p sluice-server --test powercut",
        round + 1
    )
}

/// Runs the rounds; returns (topics, transactions) acknowledged, for the summary line.
fn chain(seed: u64, rounds: u64, root: &Path) -> Result<(usize, usize), String> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let model = Arc::new(PowerModel::adopt(root).map_err(|e| e.to_string())?);
    io::install(model.clone());
    let mut ex = Expect::default();
    for round in 0..rounds {
        let mut rng = Rng::new(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = sluice_server::start(config(root, 1))
            .map_err(|e| fail(seed, round, format!("broker start: {e}")))?;
        let mut c = Client::connect(b.addr);
        let r = check(&mut c, &mut ex)
            .map_err(|e| format!("after restart: {e}"))
            .and_then(|()| {
                workload(&mut c, &mut ex, &mut rng).map_err(|e| format!("workload: {e}"))
            });
        let image = model.cut(&mut rng);
        drop(c);
        b.stop();
        r.map_err(|e| fail(seed, round, e))?;
        model
            .self_check()
            .map_err(|e| fail(seed, round, format!("self-check: {e}")))?;
        std::fs::remove_dir_all(root).map_err(|e| e.to_string())?;
        image.materialize(root).map_err(|e| e.to_string())?;
        model.readopt(root).map_err(|e| e.to_string())?;
    }
    Ok((ex.topics.len(), ex.txns.len()))
}

/// The recorder and the sabotage knob are process-wide: the tests take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Uninstall;
impl Drop for Uninstall {
    fn drop(&mut self) {
        io::uninstall();
        io::set_sabotage(io::Sabotage::None);
    }
}

/// A broker whose directory fsyncs do nothing (new topics' directories, the catalog's rename
/// and the state logs' segment files are never made durable in their directories) must be
/// caught within 6 cuts.
#[test]
fn broker_with_skipped_directory_fsyncs_is_caught() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    io::set_sabotage(io::Sabotage::SkipDirSync);
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = chain(BASE_SEED, 6, &tmp.path().join("data"))
        .expect_err("lost directory entries must be caught");
    eprintln!("caught: {e}");
    assert!(e.contains("replay: SLUICE_POWERCUT_SEED="), "{e}");
}

#[test]
fn broker_power_cuts_keep_topics_offsets_and_commits() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _u = Uninstall;
    let tmp = tempfile::tempdir().expect("tempdir");
    let seed = env_u64(SEED_ENV).unwrap_or(BASE_SEED);
    let cuts = env_u64(CUTS_ENV).unwrap_or(CI_CUTS);
    let started = std::time::Instant::now();
    let (topics, txns) = match chain(seed, cuts, &tmp.path().join("data")) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    eprintln!(
        "broker power cuts: {cuts} (seed {seed:#x}) in {:.1} s; {topics} topics, {txns} transactions acknowledged",
        started.elapsed().as_secs_f64()
    );
    assert!(topics > 0, "the workload created no topic");
}
