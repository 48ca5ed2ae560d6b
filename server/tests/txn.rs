//! Idempotent produce and transactions on the wire: sequence de-duplication and its errors,
//! the coordinator's state machine (fencing, EndTxn retries, timeouts), markers, the last
//! stable offset and aborted transactions in read_committed fetches, pending transactional
//! offsets, and all of it across a broker restart.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{config, name, sb, start_with as start, Client};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use sluice_engine::batch::{self, BatchHeader};

fn batch_of(pid: i64, epoch: i16, seq: i32, values: &[&str], txn: bool) -> Vec<u8> {
    let recs: Vec<batch::NewRecord<'_>> = values
        .iter()
        .map(|v| batch::NewRecord {
            key: None,
            value: Some(v.as_bytes()),
            timestamp: 1_700_000_000_000,
        })
        .collect();
    let mut b = batch::build(&recs);
    batch::stamp_producer(&mut b, pid, epoch, seq, txn);
    b
}

/// Produce v9 of one batch: (error, base offset).
fn produce(c: &mut Client, txn_id: Option<&str>, topic: &str, p: i32, b: Vec<u8>) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_transactional_id(txn_id.map(|t| TransactionalId(sb(t))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(Bytes::from(b)))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let pr = &r.responses[0].partition_responses[0];
    (pr.error_code, pr.base_offset)
}

fn init(c: &mut Client, txn_id: Option<&str>, timeout_ms: i32) -> (i16, i64, i16) {
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(txn_id.map(|t| TransactionalId(sb(t))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn add_partitions(c: &mut Client, id: &str, pid: i64, epoch: i16, tps: &[(&str, i32)]) -> Vec<i16> {
    let topics = tps
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(name(t))
                .with_partitions(vec![*p])
        })
        .collect();
    let r: AddPartitionsToTxnResponse = c.call(
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(sb(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(topics),
    );
    r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

fn end_txn(c: &mut Client, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let r: EndTxnResponse = c.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    );
    r.error_code
}

/// (offset, is control) of every batch in fetched bytes.
fn batches(bytes: &[u8]) -> Vec<(u64, bool)> {
    batch::split_batches(bytes)
        .filter_map(BatchHeader::parse)
        .map(|h| (h.base().get(), h.is_control()))
        .collect()
}

#[test]
fn idempotent_produce_deduplicates_and_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    c.create_topic("idem", 1, &[]);
    let (code, pid, epoch) = init(&mut c, None, 0);
    assert_eq!((code, epoch), (0, 0));
    assert_eq!(
        produce(
            &mut c,
            None,
            "idem",
            0,
            batch_of(pid, 0, 0, &["a", "b"], false)
        ),
        (0, 0)
    );
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 0, 2, &["c"], false)),
        (0, 2)
    );
    // a retry is acknowledged with the original offset and not appended again
    assert_eq!(
        produce(
            &mut c,
            None,
            "idem",
            0,
            batch_of(pid, 0, 0, &["a", "b"], false)
        ),
        (0, 0)
    );
    assert_eq!(c.list_offset("idem", 0, -1), (0, 3));
    // a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a stale epoch INVALID_PRODUCER_EPOCH
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 0, 9, &["x"], false)).0,
        45
    );
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 1, 0, &["d"], false)),
        (0, 3)
    );
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 0, 3, &["y"], false)).0,
        47
    );
    // clients may not write control batches
    let mut marker = sluice_engine::producer::build_marker(pid, 1, true, 0, 1);
    assert_eq!(
        produce(&mut c, None, "idem", 0, std::mem::take(&mut marker)).0,
        87
    );
    b.stop();
    // the sequences survive a restart
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 1, 0, &["d"], false)),
        (0, 3)
    );
    assert_eq!(
        produce(&mut c, None, "idem", 0, batch_of(pid, 1, 1, &["e"], false)),
        (0, 4)
    );
    b.stop();
}

#[test]
fn transactions_commit_abort_fence_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    c.create_topic("tx", 1, &[]);
    let id = "app-1";
    let (code, pid, e0) = init(&mut c, Some(id), 60_000);
    assert_eq!(code, 0);
    // timeouts above transaction.max.timeout.ms are refused
    assert_eq!(init(&mut c, Some("other"), 2_000_000).0, 50);
    // producing into a partition that was not added is refused (no hanging transaction)
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "tx",
            0,
            batch_of(pid, e0, 0, &["no"], true)
        )
        .0,
        48
    );
    assert_eq!(c.list_offset("tx", 0, -1), (0, 0));

    // transaction 1: aborted
    assert_eq!(add_partitions(&mut c, id, pid, e0, &[("tx", 0)]), vec![0]);
    assert_eq!(add_partitions(&mut c, id, pid, e0, &[("nope", 0)]), vec![3]);
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "tx",
            0,
            batch_of(pid, e0, 0, &["a1", "a2"], true)
        ),
        (0, 0)
    );
    let (_, hw, lso, _, _) = c.fetch_isolated("tx", 0, 0, true);
    assert_eq!((hw, lso), (2, 0), "the open transaction holds the LSO");
    let (_, _, _, _, data) = c.fetch_isolated("tx", 0, 0, true);
    assert!(
        data.is_empty(),
        "read_committed sees nothing of an open transaction"
    );
    assert_eq!(end_txn(&mut c, id, pid, e0, false), 0);
    // an EndTxn retry is answered the same; the opposite outcome is INVALID_TXN_STATE
    assert_eq!(end_txn(&mut c, id, pid, e0, false), 0);
    assert_eq!(end_txn(&mut c, id, pid, e0, true), 48);

    // transaction 2: committed
    assert_eq!(add_partitions(&mut c, id, pid, e0, &[("tx", 0)]), vec![0]);
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "tx",
            0,
            batch_of(pid, e0, 2, &["c1"], true)
        ),
        (0, 3)
    );
    assert_eq!(end_txn(&mut c, id, pid, e0, true), 0);
    let (code, hw, lso, aborted, data) = c.fetch_isolated("tx", 0, 0, true);
    assert_eq!(code, 0);
    assert_eq!((hw, lso), (5, 5));
    assert_eq!(aborted, vec![(pid, 0)]);
    // data, ABORT marker, data, COMMIT marker
    assert_eq!(
        batches(&data),
        vec![(0, false), (2, true), (3, false), (4, true)]
    );
    assert_eq!(c.list_offset("tx", 0, -1), (0, 5));

    // a second producer with the same transactional id fences the first
    assert_eq!(add_partitions(&mut c, id, pid, e0, &[("tx", 0)]), vec![0]);
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "tx",
            0,
            batch_of(pid, e0, 3, &["z1"], true)
        ),
        (0, 5)
    );
    let (code, pid2, e1) = init(&mut c, Some(id), 60_000);
    assert_eq!((code, pid2), (0, pid));
    assert!(e1 > e0);
    // the zombie's transaction was aborted; its later requests are refused
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "tx",
            0,
            batch_of(pid, e0, 4, &["z2"], true)
        )
        .0,
        47
    );
    assert_eq!(end_txn(&mut c, id, pid, e0, true), 90, "PRODUCER_FENCED");
    assert_eq!(add_partitions(&mut c, id, pid, e0, &[("tx", 0)]), vec![90]);
    let (_, hw, lso, aborted, _) = c.fetch_isolated("tx", 0, 0, true);
    assert_eq!(hw, lso);
    assert_eq!(aborted, vec![(pid, 0), (pid, 5)]);

    // transaction 3 left open across a restart
    assert_eq!(add_partitions(&mut c, id, pid, e1, &[("tx", 0)]), vec![0]);
    let (code, open_at) = produce(
        &mut c,
        Some(id),
        "tx",
        0,
        batch_of(pid, e1, 0, &["o1"], true),
    );
    assert_eq!(code, 0);
    b.stop();
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    let (_, _, lso, _, _) = c.fetch_isolated("tx", 0, 0, true);
    assert_eq!(
        lso, open_at,
        "the open transaction still holds the LSO after a restart"
    );
    assert_eq!(end_txn(&mut c, id, pid, e1, true), 0);
    let (_, hw, lso, aborted, data) = c.fetch_isolated("tx", 0, 0, true);
    assert_eq!(hw, lso);
    assert_eq!(aborted, vec![(pid, 0), (pid, 5)]);
    assert!(batches(&data).contains(&(open_at as u64, false)));
    b.stop();
}

#[test]
fn hung_transactions_are_aborted_by_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 2);
    cfg.transaction_abort_interval_ms = 100;
    let b = start(cfg);
    let mut c = Client::connect(b.addr);
    c.create_topic("hung", 1, &[]);
    let id = "stalls";
    let (_, pid, epoch) = init(&mut c, Some(id), 500);
    assert_eq!(
        add_partitions(&mut c, id, pid, epoch, &[("hung", 0)]),
        vec![0]
    );
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "hung",
            0,
            batch_of(pid, epoch, 0, &["h"], true)
        )
        .0,
        0
    );
    c.produce("hung", 0, batch_of(-1, -1, -1, &["plain"], false));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, hw, lso, aborted, _) = c.fetch_isolated("hung", 0, 0, true);
        if lso == hw {
            assert_eq!(aborted, vec![(pid, 0)]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung transaction was never aborted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the epoch was bumped: the stalled producer is fenced
    assert_eq!(end_txn(&mut c, id, pid, epoch, true), 90);
    assert_eq!(
        produce(
            &mut c,
            Some(id),
            "hung",
            0,
            batch_of(pid, epoch, 1, &["late"], true)
        )
        .0,
        47
    );
    b.stop();
}

#[test]
fn transactional_offsets_appear_only_on_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    c.create_topic("in", 1, &[]);
    let (id, group) = ("xform", "xform-group");
    let (_, pid, epoch) = init(&mut c, Some(id), 60_000);
    let add = |c: &mut Client| -> i16 {
        let r: AddOffsetsToTxnResponse = c.call(
            ApiKey::AddOffsetsToTxn,
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(sb(group))),
        );
        r.error_code
    };
    let commit_offset = |c: &mut Client, offset: i64| -> i16 {
        let r: TxnOffsetCommitResponse = c.call(
            ApiKey::TxnOffsetCommit,
            3,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_group_id(GroupId(sb(group)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_generation_id(-1)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(name("in"))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)])]),
        );
        r.topics[0].partitions[0].error_code
    };
    let fetched = |c: &mut Client, stable: bool| -> (i16, i64) {
        let r: OffsetFetchResponse = c.call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(sb(group)))
                .with_require_stable(stable)
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(name("in"))
                    .with_partition_indexes(vec![0])])),
        );
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    assert_eq!(add(&mut c), 0);
    assert_eq!(commit_offset(&mut c, 7), 0);
    assert_eq!(
        fetched(&mut c, false),
        (0, -1),
        "pending offsets are invisible"
    );
    assert_eq!(fetched(&mut c, true).0, 88, "UNSTABLE_OFFSET_COMMIT");
    assert_eq!(end_txn(&mut c, id, pid, epoch, false), 0);
    assert_eq!(
        fetched(&mut c, true),
        (0, -1),
        "aborted offsets are dropped"
    );
    assert_eq!(add(&mut c), 0);
    assert_eq!(commit_offset(&mut c, 9), 0);
    b.stop();
    // pending across a restart, then committed
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    assert_eq!(fetched(&mut c, true).0, 88);
    assert_eq!(end_txn(&mut c, id, pid, epoch, true), 0);
    assert_eq!(fetched(&mut c, true), (0, 9));
    b.stop();
}

#[test]
fn a_new_transaction_starts_without_the_last_ones_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(config(dir.path(), 2));
    let mut c = Client::connect(b.addr);
    c.create_topic("r", 2, &[]);
    let id = "two-rounds";
    let (_, pid, epoch) = init(&mut c, Some(id), 60_000);
    let mut seq = [0i32; 2];
    for p in [0, 1] {
        assert_eq!(add_partitions(&mut c, id, pid, epoch, &[("r", p)]), vec![0]);
        let (code, _) = produce(
            &mut c,
            Some(id),
            "r",
            p,
            batch_of(pid, epoch, seq[p as usize], &["v"], true),
        );
        assert_eq!(code, 0);
        seq[p as usize] += 1;
        assert_eq!(end_txn(&mut c, id, pid, epoch, true), 0);
    }
    // each partition got its record and one COMMIT marker: the second transaction did not
    // write a marker into the first one's partition
    for p in [0, 1] {
        let (_, hw, lso, _, data) = c.fetch_isolated("r", p, 0, true);
        assert_eq!((hw, lso), (2, 2), "partition {p}");
        assert_eq!(batches(&data), vec![(0, false), (1, true)], "partition {p}");
    }
    b.stop();
}
