//! Compressed produce batches on the wire: stored as sent, recompressed to a topic's
//! `compression.type` (and back to uncompressed), and refused with CORRUPT_MESSAGE when the
//! inner stream is broken (framing on the fast path, every record with
//! `sluice.compression.validation=full` or when recompressing); zstd needs Produce v7; a bad
//! `compression.type` is INVALID_CONFIG.

mod common;

use bytes::Bytes;
use common::{config, name, sb, start, start_with, Client};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use sluice_engine::batch::{self, Compression, NewRecord};
use sluice_engine::codec;

const CORRUPT_MESSAGE: i16 = 2;
const INVALID_CONFIG: i16 = 40;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;

fn create(c: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(sb(k))
                        .with_value(Some(sb(v)))
                })
                .collect(),
        )]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    r.topics[0].error_code
}

fn produce(c: &mut Client, version: i16, topic: &str, records: Vec<u8>) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, version, &req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The stored batches of `topic`-0 from `offset`.
fn fetch(c: &mut Client, topic: &str, offset: i64) -> Vec<Vec<u8>> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &req);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let bytes = p.records.clone().unwrap_or_default();
    batch::split_batches(&bytes).map(<[u8]>::to_vec).collect()
}

fn plain_batch(n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("value {i:04} repeats repeats repeats").into_bytes())
        .collect();
    let recs: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            key: Some(b"k"),
            value: Some(v),
            timestamp: 1_700_000_000_000,
        })
        .collect();
    batch::build(&recs)
}

/// `plain` with its records in codec `c` (or `body` instead of its records).
fn compressed(plain: &[u8], c: Compression, body: Option<&[u8]>) -> Vec<u8> {
    let body = body.unwrap_or(batch::payload(plain));
    let z = codec::compress(c, body, Default::default()).expect("compress");
    batch::with_payload(plain, c, &z)
}

/// The records section of a stored batch, decompressed.
fn records_of(stored: &[u8]) -> (Compression, Vec<u8>) {
    let h = batch::validate(stored).expect("stored batch is valid");
    let body = batch::uncompressed_payload(stored, 1 << 24).expect("decompresses");
    (h.compression(), body.into_owned())
}

#[test]
fn stored_as_sent_or_recompressed_to_the_topic_codec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    assert_eq!(create(&mut c, "keep", &[]), 0);
    assert_eq!(
        create(&mut c, "to-zstd", &[("compression.type", "zstd")]),
        0
    );
    assert_eq!(
        create(&mut c, "to-none", &[("compression.type", "uncompressed")]),
        0
    );
    assert_eq!(
        create(
            &mut c,
            "to-gzip-1",
            &[
                ("compression.type", "gzip"),
                ("compression.gzip.level", "1")
            ]
        ),
        0
    );
    let plain = plain_batch(200);
    let body = batch::payload(&plain).to_vec();

    // producer codec kept, byte for byte from the CRC on
    let lz4 = compressed(&plain, Compression::Lz4, None);
    assert_eq!(produce(&mut c, 9, "keep", lz4.clone()), (0, 0));
    let [stored] = &fetch(&mut c, "keep", 0)[..] else {
        panic!("one batch")
    };
    assert_eq!(&stored[batch::CRC_START..], &lz4[batch::CRC_START..]);

    // recompressed: uncompressed and lz4 in, zstd stored, the same records out
    assert_eq!(produce(&mut c, 9, "to-zstd", plain.clone()), (0, 0));
    assert_eq!(produce(&mut c, 9, "to-zstd", lz4.clone()), (0, 200));
    let stored = fetch(&mut c, "to-zstd", 0);
    assert_eq!(stored.len(), 2);
    for s in &stored {
        assert_eq!(records_of(s), (Compression::Zstd, body.clone()));
        assert!(s.len() < plain.len() / 2, "zstd shrinks the batch");
    }

    // zstd in, uncompressed stored: the producer's batch exactly, offsets aside
    let zstd = compressed(&plain, Compression::Zstd, None);
    assert_eq!(produce(&mut c, 9, "to-none", zstd), (0, 0));
    let [stored] = &fetch(&mut c, "to-none", 0)[..] else {
        panic!("one batch")
    };
    assert_eq!(&stored[batch::CRC_START..], &plain[batch::CRC_START..]);

    // the level is used: gzip level 1 is larger than level 9 for the same records
    assert_eq!(produce(&mut c, 9, "to-gzip-1", plain.clone()), (0, 0));
    let [stored] = &fetch(&mut c, "to-gzip-1", 0)[..] else {
        panic!("one batch")
    };
    assert_eq!(records_of(stored), (Compression::Gzip, body.clone()));
    let gz1 = codec::compress(
        Compression::Gzip,
        &body,
        codec::Levels {
            gzip: Some(1),
            ..Default::default()
        },
    )
    .expect("gzip");
    assert_eq!(stored.len(), batch::HEADER_LEN + gz1.len());
    b.stop();
}

#[test]
fn broken_inner_streams_are_corrupt_message_and_take_no_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 1);
    let mut c = Client::connect(b.addr);
    assert_eq!(create(&mut c, "keep", &[]), 0);
    assert_eq!(
        create(&mut c, "to-zstd", &[("compression.type", "zstd")]),
        0
    );
    let plain = plain_batch(50);
    let zstd = compressed(&plain, Compression::Zstd, None);

    // truncated zstd frame (valid CRC over the broken stream): caught by the framing walk
    let mut cut = batch::payload(&zstd).to_vec();
    cut.truncate(cut.len() - 3);
    let bad = batch::with_payload(&plain, Compression::Zstd, &cut);
    assert_eq!(produce(&mut c, 9, "keep", bad.clone()).0, CORRUPT_MESSAGE);
    // an lz4 frame with bytes after its end mark
    let mut padded = batch::payload(&compressed(&plain, Compression::Lz4, None)).to_vec();
    padded.extend_from_slice(&[1, 2, 3, 4]);
    let bad_lz4 = batch::with_payload(&plain, Compression::Lz4, &padded);
    assert_eq!(produce(&mut c, 9, "keep", bad_lz4).0, CORRUPT_MESSAGE);
    // an unknown codec id
    let mut odd = plain.clone();
    odd[21..23].copy_from_slice(&6i16.to_be_bytes()); // attributes: codec 6
    let crc = batch::compute_crc(&odd);
    odd[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(&mut c, 9, "keep", odd).0, CORRUPT_MESSAGE);

    // records that do not match the header (a stray byte after the last one) inside a
    // well-formed stream: the fast path stores it as sent; recompression parses and refuses
    let mut stray = batch::payload(&plain).to_vec();
    stray.push(0);
    let bad_records = compressed(&plain, Compression::Gzip, Some(&stray));
    assert_eq!(
        produce(&mut c, 9, "to-zstd", bad_records.clone()).0,
        CORRUPT_MESSAGE
    );
    // nothing took an offset: the next good batch lands at 0 in both
    assert_eq!(produce(&mut c, 9, "keep", zstd.clone()), (0, 0));
    assert_eq!(produce(&mut c, 9, "to-zstd", zstd.clone()), (0, 0));

    // zstd before Produce v7 is Kafka's UNSUPPORTED_COMPRESSION_TYPE
    assert_eq!(
        produce(&mut c, 6, "keep", zstd.clone()).0,
        UNSUPPORTED_COMPRESSION_TYPE
    );
    assert_eq!(produce(&mut c, 7, "keep", zstd).0, 0);
    // a compression.type Kafka does not know
    assert_eq!(
        create(&mut c, "bad", &[("compression.type", "brotli")]),
        INVALID_CONFIG
    );
    assert_eq!(
        create(&mut c, "bad", &[("compression.zstd.level", "23")]),
        INVALID_CONFIG
    );
    b.stop();

    // full validation: the same mismatching records refused as sent, too
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.set("sluice.compression.validation", "full")
        .expect("valid key");
    let b = start_with(cfg);
    let mut c = Client::connect(b.addr);
    assert_eq!(create(&mut c, "keep", &[]), 0);
    assert_eq!(produce(&mut c, 9, "keep", bad_records).0, CORRUPT_MESSAGE);
    assert_eq!(produce(&mut c, 9, "keep", bad).0, CORRUPT_MESSAGE);
    let good = compressed(&plain, Compression::Snappy, None);
    assert_eq!(produce(&mut c, 9, "keep", good), (0, 0));
    b.stop();
}
