//! The broker speaking the Kafka protocol to a hand-written client: version negotiation,
//! produce/fetch/list-offsets semantics, errors on the wire, and connections closed on bad
//! frames while the broker carries on.

mod common;

#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

use std::io::Write;

use bytes::Bytes;
use common::{fetch_request, start, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(c: &mut Client, topic: &str, partitions: i32) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    c.call(ApiKey::CreateTopics, 7, &req)
}

fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn produce(c: &mut Client, topic: &str, partition: i32, records: Bytes, acks: i16) -> (i16, i64) {
    let r: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &produce_req(topic, partition, records, acks),
    );
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch(
    c: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let req = fetch_request(topic, partition, offset)
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20);
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &req);
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

fn batch_of(n: usize, value: &str, ts: i64) -> Bytes {
    let recs: Vec<_> = (0..n)
        .map(|_| batch::NewRecord {
            key: None,
            value: Some(value.as_bytes()),
            timestamp: ts,
        })
        .collect();
    Bytes::from(batch::build(&recs))
}

#[test]
fn api_versions_negotiation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    for v in [0, 1, 2, 3, 4] {
        let r: ApiVersionsResponse = c.call(
            ApiKey::ApiVersions,
            v,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("t"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        assert_eq!(r.error_code, 0, "v{v}");
        let produce = r
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("produce");
        // from v0 as Kafka 4.0 (KAFKA-18659): old librdkafka compresses only then
        assert_eq!((produce.min_version, produce.max_version), (0, 13));
        // only what is implemented: the KIP-848 group protocol and KIP-932 share groups are,
        // the share-group state RPCs (broker to share coordinator) are not
        assert!(r
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ConsumerGroupHeartbeat as i16));
        for key in [
            ApiKey::ShareGroupHeartbeat,
            ApiKey::ShareGroupDescribe,
            ApiKey::ShareFetch,
            ApiKey::ShareAcknowledge,
        ] {
            let k = r
                .api_keys
                .iter()
                .find(|k| k.api_key == key as i16)
                .unwrap_or_else(|| panic!("{key:?} advertised"));
            assert_eq!((k.min_version, k.max_version), (1, 1), "{key:?}");
        }
        assert!(
            r.api_keys
                .iter()
                .all(|k| k.api_key != ApiKey::ReadShareGroupState as i16),
            "only what is implemented"
        );
        // cross-broker transaction markers are
        assert!(r
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::WriteTxnMarkers as i16));
        // transaction protocol v2 (KIP-890 part 2) is not offered
        let end_txn = r
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::EndTxn as i16)
            .expect("end txn");
        assert_eq!(end_txn.max_version, 4);
    }
    // a version from the future gets a v0 answer with UNSUPPORTED_VERSION and the real ranges
    // (hand-framed: api key 18, version 99, correlation id 77, null client id, no tags)
    c.stream
        .write_all(&[0, 0, 0, 11, 0, 18, 0, 99, 0, 0, 0, 77, 0xff, 0xff, 0])
        .expect("write");
    let (got, r): (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 0);
    assert_eq!(got, 77);
    assert_eq!(r.error_code, 35);
    assert!(!r.api_keys.is_empty());
    b.stop();
}

#[test]
fn produce_fetch_and_errors_on_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    assert_eq!(create(&mut c, "t", 4).topics[0].error_code, 0);
    assert_eq!(
        create(&mut c, "t", 4).topics[0].error_code,
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    assert_eq!(
        create(&mut c, "bad name", 1).topics[0].error_code,
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(
        create(&mut c, "zero", 0).topics[0].error_code,
        37,
        "INVALID_PARTITIONS"
    );
    for p in 0..4 {
        for i in 0..3 {
            let (err, base) = produce(
                &mut c,
                "t",
                p,
                batch_of(5, &format!("p{p}b{i}"), 1000 + i),
                -1,
            );
            assert_eq!((err, base), (0, i * 5), "partition {p} batch {i}");
        }
    }
    // a fetch in the middle of a batch returns that whole batch
    let (err, hw, records) = fetch(&mut c, "t", 2, 7, 0);
    assert_eq!((err, hw), (0, 15));
    let batches: Vec<_> = batch::split_batches(&records).collect();
    assert_eq!(batches.len(), 2);
    let h = batch::BatchHeader::parse(batches[0]).expect("header");
    assert_eq!(h.base_offset.get(), 5);
    batch::validate(batches[0]).expect("CRC still valid after offsets were assigned");
    // out of range
    assert_eq!(fetch(&mut c, "t", 2, 16, 0).0, 1, "OFFSET_OUT_OF_RANGE");
    assert_eq!(
        fetch(&mut c, "nope", 0, 0, 0).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(fetch(&mut c, "t", 9, 0, 0).0, 3);
    // a corrupted batch is refused with CORRUPT_MESSAGE and nothing is appended
    let mut bad = batch_of(2, "x", 5).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(produce(&mut c, "t", 0, Bytes::from(bad), 1).0, 2);
    // too large for max.message.bytes
    let big = Bytes::from(batch::build_uniform(1, 2_000_000, 5));
    assert_eq!(produce(&mut c, "t", 0, big, 1).0, 10, "MESSAGE_TOO_LARGE");
    // invalid acks
    assert_eq!(produce(&mut c, "t", 0, batch_of(1, "x", 5), 7).0, 21);
    let (_, hw, _) = fetch(&mut c, "t", 0, 0, 0);
    assert_eq!(hw, 15, "rejected batches were not appended");
    // ListOffsets earliest / latest / by timestamp
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(
                [-2i64, -1, 1001, 5000]
                    .iter()
                    .map(|&ts| {
                        ListOffsetsPartition::default()
                            .with_partition_index(1)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let offs: Vec<i64> = r.topics[0].partitions.iter().map(|p| p.offset).collect();
    assert_eq!(offs, vec![0, 15, 5, -1]);
    b.stop();
}

#[test]
fn pipelined_requests_answer_in_order_and_long_poll_wakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    create(&mut c, "p", 2);
    // many produce requests in flight on one connection: answers in order, offsets in order
    let ids: Vec<i32> = (0..50)
        .map(|i| {
            c.send(
                ApiKey::Produce,
                9,
                &produce_req("p", i % 2, batch_of(2, "v", 1), 1),
            )
        })
        .collect();
    let mut next = [0i64; 2];
    for (i, id) in ids.iter().enumerate() {
        let (got, r): (i32, ProduceResponse) = c.recv(ApiKey::Produce, 9);
        assert_eq!(got, *id, "responses come back in request order");
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, next[i % 2]);
        next[i % 2] += 2;
    }
    // a fetch at the tail is answered by the append, well before max_wait
    let addr = b.addr;
    let t = std::thread::spawn(move || {
        let mut c2 = Client::connect(addr);
        let started = std::time::Instant::now();
        let (err, _, records) = fetch(&mut c2, "p", 0, 50, 10_000);
        (err, records.len(), started.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    produce(&mut c, "p", 0, batch_of(1, "late", 1), 1);
    let (err, len, waited) = t.join().expect("fetcher");
    assert_eq!(err, 0);
    assert!(len > 0, "woken with data");
    assert!(
        waited.as_secs() < 5,
        "woken by the append, not the 10 s timeout: {waited:?}"
    );
    b.stop();
}

#[test]
fn bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut good = Client::connect(b.addr);
    create(&mut good, "g", 1);
    // oversize length prefix
    let mut c = Client::connect(b.addr);
    c.stream.write_all(&i32::MAX.to_be_bytes()).expect("write");
    assert!(c.is_closed(), "oversize frame closes the connection");
    // unknown api key
    let mut c = Client::connect(b.addr);
    c.stream
        .write_all(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0])
        .expect("write");
    assert!(c.is_closed(), "unknown api key closes the connection");
    // garbage body for a known api
    let mut c = Client::connect(b.addr);
    c.stream
        .write_all(&[0, 0, 0, 12, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])
        .expect("write");
    assert!(c.is_closed(), "undecodable request closes the connection");
    // an array length from the wire (2^31 topics) that kafka-protocol pre-allocates for:
    // the decode fails and only this connection closes (the broker does not abort)
    let mut c = Client::connect(b.addr);
    let mut frame = vec![0u8, 0, 0, 3, 0, 0, 0, 9, 0xff, 0xff]; // Produce v3, id 9, null client
    frame.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 3, 0xe8, 0x7f, 0xff, 0xff, 0xff]);
    let mut framed = (frame.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    c.stream.write_all(&framed).expect("write");
    assert!(c.is_closed(), "hostile array length closes the connection");
    // the other connection is unaffected
    assert_eq!(produce(&mut good, "g", 0, batch_of(1, "ok", 1), -1), (0, 0));
    b.stop();
}

#[test]
fn data_and_topics_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    create(&mut c, "keep", 3);
    for p in 0..3 {
        produce(&mut c, "keep", p, batch_of(4, "durable", 1), -1);
    }
    let id_before = {
        let r: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        r.topics[0].topic_id
    };
    b.stop();
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    let r: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].topic_id, id_before, "topic id is durable");
    assert_eq!(r.topics[0].partitions.len(), 3);
    for p in 0..3 {
        let (err, hw, records) = fetch(&mut c, "keep", p, 0, 0);
        assert_eq!((err, hw), (0, 4));
        assert_eq!(batch::split_batches(&records).count(), 1);
    }
    // fewer shards than before: partitions move, data stays
    b.stop();
    let b = start(dir.path(), 1);
    let mut c = Client::connect(b.addr);
    for p in 0..3 {
        assert_eq!(fetch(&mut c, "keep", p, 0, 0).1, 4);
    }
    b.stop();
}

/// With a shard hot budget far below the data written, tailing reads of every partition still
/// return every batch (from the segment files once evicted from memory).
#[test]
fn a_small_shard_hot_budget_still_serves_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path(), 1);
    config.hot_cache_shard_bytes = 16 * 1024;
    let b = common::start_with(config);
    let mut c = Client::connect(b.addr);
    assert_eq!(create(&mut c, "hb", 3).topics[0].error_code, 0);
    let value = "v".repeat(100);
    for i in 0..40i64 {
        for p in 0..3 {
            let (err, base) = produce(&mut c, "hb", p, batch_of(50, &value, 1000 + i), -1);
            assert_eq!((err, base), (0, i * 50), "partition {p} batch {i}");
        }
    }
    for p in 0..3 {
        let mut next = 0i64;
        while next < 2000 {
            let (err, hw, records) = fetch(&mut c, "hb", p, next, 0);
            assert_eq!((err, hw), (0, 2000), "partition {p} at {next}");
            assert!(
                !records.is_empty(),
                "partition {p} at {next}: no data below the HW"
            );
            for raw in batch::split_batches(&records) {
                let h = batch::validate(raw).expect("valid batch");
                assert_eq!(h.base_offset.get(), next, "partition {p}: batches in order");
                let recs = batch::records(raw).expect("records");
                assert_eq!(recs.len(), 50);
                assert!(recs.iter().all(|r| r.value == Some(value.as_bytes())));
                next = h.last().get() as i64 + 1;
            }
        }
    }
}
