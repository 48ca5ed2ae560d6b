//! The coordinators' state logs are compacted: after many commits to the same offsets, a
//! restart rewrites the live state, the old segments go, and every committed offset survives.

mod common;

use std::path::Path;

use common::{config, name, sb, start_with as start, Client};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;

const PARTITIONS: i32 = 8;

fn commit(c: &mut Client, group: &str, round: i64) {
    let r: OffsetCommitResponse = c.call(
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(
                    (0..PARTITIONS)
                        .map(|p| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(round * 100 + i64::from(p))
                                .with_committed_metadata(Some(sb("some metadata to fill the log")))
                        })
                        .collect(),
                )]),
    );
    for p in &r.topics[0].partitions {
        assert_eq!(p.error_code, 0, "commit round {round}");
    }
}

fn fetched(c: &mut Client, group: &str) -> Vec<i64> {
    let r: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name("t"))
                .with_partition_indexes((0..PARTITIONS).collect())])),
    );
    r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

/// A broker config that compacts state logs from 64 KiB on.
fn compacting(dir: &Path) -> sluice_server::config::ServerConfig {
    let mut c = config(dir, 2);
    c.state_compact_min_bytes = 64 << 10;
    c
}

#[test]
fn offsets_logs_are_compacted_and_keep_every_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || compacting(dir.path());
    let b = start(cfg());
    let mut c = Client::connect(b.addr);
    c.create_topic("t", PARTITIONS, &[]);
    let rounds = 1500;
    for round in 1..=rounds {
        commit(&mut c, "busy", round);
    }
    commit(&mut c, "quiet", 7);
    let expected: Vec<i64> = (0..PARTITIONS)
        .map(|p| rounds * 100 + i64::from(p))
        .collect();
    assert_eq!(fetched(&mut c, "busy"), expected);
    b.stop();
    let before = state_bytes(dir.path(), "group-offsets-");
    assert!(
        before > 1 << 20,
        "the commits filled the log ({before} bytes)"
    );

    // the restart replays, then compacts: the live state is written again and the old
    // segments are deleted
    let b = start(cfg());
    let mut c = Client::connect(b.addr);
    assert_eq!(fetched(&mut c, "busy"), expected);
    assert_eq!(
        fetched(&mut c, "quiet"),
        (0..PARTITIONS)
            .map(|p| 700 + i64::from(p))
            .collect::<Vec<_>>()
    );
    // commits after the compaction land after the rewritten state
    commit(&mut c, "busy", rounds + 1);
    b.stop();
    let after = state_bytes(dir.path(), "group-offsets-");
    assert!(
        after < before / 4,
        "compaction freed the old segments: {before} -> {after} bytes"
    );

    let b = start(cfg());
    let mut c = Client::connect(b.addr);
    let expected: Vec<i64> = (0..PARTITIONS)
        .map(|p| (rounds + 1) * 100 + i64::from(p))
        .collect();
    assert_eq!(fetched(&mut c, "busy"), expected);
    assert_eq!(
        fetched(&mut c, "quiet"),
        (0..PARTITIONS)
            .map(|p| 700 + i64::from(p))
            .collect::<Vec<_>>()
    );
    b.stop();
}

fn init(c: &mut Client, id: &str) -> (i16, i64, i16) {
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(sb(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn state_bytes(dir: &Path, prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("__sluice"))
        .expect("state dir")
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        for f in std::fs::read_dir(entry.path())
            .expect("partition dir")
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".log") {
                total += f.metadata().expect("stat").len();
            }
        }
    }
    total
}

#[test]
fn transaction_state_logs_are_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || {
        let mut c = compacting(dir.path());
        // the coordinator also compacts on its abort ticker: none may run while the inits fill
        // the log (a slow machine takes more than the default 10 s for them); the restart
        // compacts at open
        c.transaction_abort_interval_ms = 3_600_000;
        c
    };
    let b = start(cfg());
    let mut c = Client::connect(b.addr);
    // every InitProducerId stores the id's state again (epoch bump)
    let (_, pid, _) = init(&mut c, "bumpy");
    for _ in 0..1500 {
        assert_eq!(init(&mut c, "bumpy").0, 0);
    }
    let (_, _, epoch) = init(&mut c, "bumpy");
    assert_eq!(epoch, 1501);
    b.stop();
    let before = state_bytes(dir.path(), "txn-state-");
    assert!(
        before > 256 << 10,
        "the inits filled the log ({before} bytes)"
    );
    let b = start(cfg());
    let mut c = Client::connect(b.addr);
    assert_eq!(
        init(&mut c, "bumpy"),
        (0, pid, 1502),
        "the state survived compaction"
    );
    b.stop();
    let after = state_bytes(dir.path(), "txn-state-");
    assert!(
        after < before / 4,
        "compaction freed the old segments: {before} -> {after} bytes"
    );
}
