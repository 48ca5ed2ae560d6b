//! The produce request path without the network: a framed Produce v9 request (one partition,
//! one ~16 KiB batch of 100 B records) is decoded with kafka-protocol (header + body, the
//! records stay a `Bytes` slice of the frame), its batches split and validated, and appended to
//! a partition log on the real disk, waiting for `Written` (acks=1) or `Synced` (acks=all) —
//! the work `server/src/api/produce.rs` does on the owning shard. The decode alone is measured
//! too, to show what the protocol layer costs next to the append.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::LocalExecutorBuilder;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_engine::{batch, AppendOptions, Durability, LogConfig, LogEnv, PartitionLog};

const VERSION: i16 = 9;

fn frame(records: Bytes) -> Bytes {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(VERSION))
        .expect("encode header");
    req.encode(&mut buf, VERSION).expect("encode body");
    buf.freeze()
}

/// Decodes a produce frame and returns its records (what the broker hands to the owner).
fn decode(frame: &Bytes) -> Bytes {
    let mut b = frame.clone();
    let _h = RequestHeader::decode(&mut b, ApiKey::Produce.request_header_version(VERSION))
        .expect("header");
    let RequestKind::Produce(req) =
        RequestKind::decode(ApiKey::Produce, &mut b, VERSION).expect("body")
    else {
        unreachable!("a produce frame")
    };
    req.topic_data[0].partition_data[0]
        .records
        .clone()
        .expect("records")
}

fn bench_dir() -> PathBuf {
    let root = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&root).expect("bench root");
    root
}

fn request_path(c: &mut Criterion) {
    let records = Bytes::from(batch::build_uniform(150, 100, 1_700_000_000_000));
    let frame = frame(records.clone());
    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(150));
    g.bench_function("decode_produce_16KiB", |b| b.iter(|| decode(&frame)));
    for (name, level) in [
        ("acks1", Durability::Written),
        ("acks_all", Durability::Synced),
    ] {
        let frame = frame.clone();
        g.bench_function(format!("decode_validate_append_{name}"), move |b| {
            let frame = frame.clone();
            b.iter_custom(move |iters| {
                let frame = frame.clone();
                LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
                        let log = PartitionLog::open(
                            &dir.path().join("bench-0"),
                            LogConfig::default(),
                            LogEnv::default(),
                        )
                        .await
                        .expect("open");
                        let start = Instant::now();
                        for _ in 0..iters {
                            let records = decode(&frame);
                            let mut last = None;
                            for b in batch::split_batches(&records) {
                                last = Some(
                                    log.append(b, AppendOptions::default())
                                        .await
                                        .expect("append"),
                                );
                            }
                            let last = last.expect("one batch");
                            log.wait_durable(last.last_offset, level)
                                .await
                                .expect("durable");
                        }
                        let took = start.elapsed();
                        log.close().await.expect("close");
                        took
                    })
                    .expect("executor")
                    .join()
                    .expect("bench thread")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = request_path
}
criterion_main!(benches);
