//! A null sink: an in-process server that answers ApiVersions, Metadata, CreateTopics,
//! ListOffsets and Produce at once, storing nothing. Producing to it measures how fast loadgen
//! itself can generate, send and account for messages.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A running null sink; stops when dropped.
pub struct NullSink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl NullSink {
    pub fn start(partitions: i32) -> std::io::Result<NullSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("null-sink".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(c) = conn {
                        let _ = std::thread::Builder::new()
                            .name("null-sink-conn".into())
                            .spawn(move || serve(c, addr, partitions));
                    }
                }
            })?;
        Ok(NullSink { addr, stop })
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn serve(stream: TcpStream, addr: SocketAddr, partitions: i32) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut w = BufWriter::with_capacity(64 << 10, stream);
    let mut next_offset = vec![0i64; partitions.max(1) as usize];
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            return Ok(());
        }
        let size = i32::from_be_bytes(len).max(0) as usize;
        let mut frame = BytesMut::zeroed(size);
        r.read_exact(&mut frame)?;
        let mut frame = frame.freeze();
        if frame.len() < 8 {
            return Ok(());
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let Ok(api) = ApiKey::try_from(key) else {
            return Ok(());
        };
        let Ok(header) = RequestHeader::decode(&mut frame, api.request_header_version(version))
        else {
            return Ok(());
        };
        let id = header.correlation_id;
        let out = match api {
            ApiKey::ApiVersions => {
                let keys = [
                    ApiKey::Produce,
                    ApiKey::Metadata,
                    ApiKey::ApiVersions,
                    ApiKey::CreateTopics,
                    ApiKey::ListOffsets,
                ]
                .iter()
                .map(|k| {
                    let v = k.valid_versions();
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(v.min)
                        .with_max_version(v.max)
                })
                .collect();
                encode(
                    api,
                    version,
                    id,
                    &ApiVersionsResponse::default().with_api_keys(keys),
                )
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut frame, version).ok();
                let topics = req
                    .and_then(|r| r.topics)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        MetadataResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                (0..partitions)
                                    .map(|p| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_leader_id(BrokerId(0))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_string(addr.ip().to_string()))
                    .with_port(i32::from(addr.port()));
                encode(
                    api,
                    version,
                    id,
                    &MetadataResponse::default()
                        .with_brokers(vec![broker])
                        .with_topics(topics),
                )
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut frame, version).unwrap_or_default();
                let topics = req
                    .topics
                    .into_iter()
                    .map(|t| CreatableTopicResult::default().with_name(t.name))
                    .collect();
                encode(
                    api,
                    version,
                    id,
                    &CreateTopicsResponse::default().with_topics(topics),
                )
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut frame, version).unwrap_or_default();
                let topics = req
                    .topics
                    .into_iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_offset(0)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                encode(
                    api,
                    version,
                    id,
                    &ListOffsetsResponse::default().with_topics(topics),
                )
            }
            ApiKey::Produce => {
                let Ok(req) = ProduceRequest::decode(&mut frame, version) else {
                    return Ok(());
                };
                if req.acks == 0 {
                    continue;
                }
                let responses = req
                    .topic_data
                    .into_iter()
                    .map(|t| {
                        let parts = t
                            .partition_data
                            .iter()
                            .map(|p| {
                                let slot = next_offset.get_mut(p.index.max(0) as usize);
                                let base = slot.as_ref().map_or(0, |o| **o);
                                if let Some(o) = slot {
                                    *o += count_records(p.records.as_ref());
                                }
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_base_offset(base)
                            })
                            .collect();
                        TopicProduceResponse::default()
                            .with_name(t.name)
                            .with_partition_responses(parts)
                    })
                    .collect();
                encode(
                    api,
                    version,
                    id,
                    &ProduceResponse::default().with_responses(responses),
                )
            }
            _ => return Ok(()),
        };
        w.write_all(&out)?;
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
}

fn count_records(records: Option<&Bytes>) -> i64 {
    records
        .map(|r| {
            sluice_engine::batch::split_batches(r)
                .filter_map(sluice_engine::batch::BatchHeader::parse)
                .map(|h| i64::from(h.record_count.get()))
                .sum()
        })
        .unwrap_or(0)
}

fn encode<T: Encodable>(api: ApiKey, version: i16, id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let _ = ResponseHeader::default()
        .with_correlation_id(id)
        .encode(&mut buf, api.response_header_version(version));
    let _ = body.encode(&mut buf, version);
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}
