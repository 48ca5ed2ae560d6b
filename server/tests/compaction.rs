//! Compacted topics on the wire: keyless records are refused with INVALID_RECORD and
//! per-record errors (KIP-467), and the broker's cleaner compacts a topic on its own.

mod common;

use std::time::{Duration, Instant};

use common::{config, name, start_with, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use sluice_engine::batch::{self, Compression, NewRecord};
use sluice_engine::codec;

const INVALID_RECORD: i16 = 87;

fn batch_of(recs: &[(Option<&str>, &str)]) -> Vec<u8> {
    let r: Vec<NewRecord<'_>> = recs
        .iter()
        .map(|(k, v)| NewRecord {
            key: k.map(str::as_bytes),
            value: Some(v.as_bytes()),
            timestamp: 1_000,
        })
        .collect();
    batch::build(&r)
}

#[test]
fn keyless_records_on_a_compacted_topic_are_invalid_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(config(dir.path(), 1));
    let mut c = Client::connect(broker.addr);
    c.create_topic("compacted", 1, &[("cleanup.policy", "compact")]);
    c.create_topic("deleted", 1, &[]);

    let mixed = batch_of(&[(Some("a"), "1"), (None, "2"), (Some("b"), "3"), (None, "4")]);
    let p = c.produce_response("compacted", 0, mixed.clone());
    assert_eq!(p.error_code, INVALID_RECORD);
    let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(
        indexes,
        vec![1, 3],
        "the keyless records, counted within the batch"
    );
    let want = "Compacted topic cannot accept message without key in topic partition compacted-0.";
    for e in &p.record_errors {
        assert_eq!(e.batch_index_error_message.as_deref(), Some(want));
    }
    let msg = p.error_message.as_deref().unwrap_or_default();
    assert!(msg.contains("2 record errors"), "{msg}");
    assert_eq!(p.base_offset, -1);

    // compressed the same: the broker looks inside
    let body = batch::payload(&mixed);
    let z = codec::compress(Compression::Lz4, body, Default::default()).expect("lz4");
    let p = c.produce_response(
        "compacted",
        0,
        batch::with_payload(&mixed, Compression::Lz4, &z),
    );
    assert_eq!(p.error_code, INVALID_RECORD);
    assert_eq!(p.record_errors.len(), 2);

    // a keyless batch after a good one: nothing of the request is appended
    let mut two = batch_of(&[(Some("a"), "1")]);
    two.extend(batch_of(&[(None, "x")]));
    let p = c.produce_response("compacted", 0, two);
    assert_eq!(p.error_code, INVALID_RECORD);
    assert_eq!(p.record_errors[0].batch_index, 0);
    assert_eq!(
        c.list_offset("compacted", 0, -1),
        (0, 0),
        "nothing appended"
    );

    // keyed records are fine, and keyless ones on a delete topic too
    assert_eq!(c.produce("compacted", 0, batch_of(&[(Some("a"), "1")])), 0);
    assert_eq!(c.produce("deleted", 0, batch_of(&[(None, "1")])), 0);
    broker.stop();
}

/// Every record a fetch from 0 returns: (offset, key, value).
fn read_all(c: &mut Client, topic: &str) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut next = 0i64;
    loop {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(1 << 20)])]);
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let bytes = p.records.clone().unwrap_or_default();
        if bytes.is_empty() {
            assert_eq!(next, p.high_watermark, "an empty fetch only at the end");
            return out;
        }
        for b in batch::split_batches(&bytes) {
            let h = batch::validate_stored(b).expect("valid");
            for r in batch::records(b).expect("uncompressed") {
                let text =
                    |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
                out.push((
                    h.base_offset.get() + i64::from(r.offset_delta),
                    text(r.key),
                    text(r.value),
                ));
            }
            next = h.last().0 as i64 + 1;
        }
    }
}

#[test]
fn the_broker_cleans_a_compacted_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 2);
    cfg.set("log.cleaner.backoff.ms", "50").expect("valid");
    let broker = start_with(cfg);
    let mut c = Client::connect(broker.addr);
    c.create_topic(
        "table",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1024"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    for version in 0..40 {
        for key in 0..5 {
            let (k, v) = (format!("k{key}"), format!("v{version}"));
            c.produce("table", 0, batch_of(&[(Some(&k), &v)]));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let recs = loop {
        let recs = read_all(&mut c, "table");
        if recs.len() < 100 {
            break recs;
        }
        assert!(
            Instant::now() < deadline,
            "not cleaned: {} records",
            recs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut latest = std::collections::BTreeMap::new();
    let mut prev = -1;
    for (o, k, v) in &recs {
        assert!(*o > prev, "offsets ascend");
        prev = *o;
        latest.insert(k.clone(), v.clone());
    }
    for key in 0..5 {
        assert_eq!(
            latest.get(&format!("k{key}")).map(String::as_str),
            Some("v39")
        );
    }
    assert_eq!(c.list_offset("table", 0, -1), (0, 200), "offsets kept");
    assert_eq!(c.list_offset("table", 0, -2), (0, 0));
    // Kafka refuses DeleteRecords on a compact-only topic
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(name("table"))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(10),
            ])]);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 44, "POLICY_VIOLATION");
    assert_eq!(c.list_offset("table", 0, -2), (0, 0));
    broker.stop();
}
