//! A blocking Kafka protocol client for the broker's integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_server::config::{Listeners, ServerConfig};
use sluice_server::BrokerHandle;

/// A broker config for tests: 127.0.0.1:0, `cores` shards, data in `dir`.
pub fn config(dir: &std::path::Path, cores: usize) -> ServerConfig {
    ServerConfig {
        listeners: Listeners::plaintext("127.0.0.1:0".parse().expect("addr")),
        data_dir: dir.to_path_buf(),
        cores,
        http_listen: None,
        ..ServerConfig::default()
    }
}

/// Starts a broker on 127.0.0.1:0 with `cores` shards in `dir`.
pub fn start(dir: &std::path::Path, cores: usize) -> BrokerHandle {
    start_with(config(dir, cores))
}

pub fn start_with(config: ServerConfig) -> BrokerHandle {
    sluice_server::start(config).expect("broker starts")
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A Fetch of one partition from `offset` (up to 1 MiB) that answers at once.
pub fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub struct Client {
    pub stream: TcpStream,
    next_id: i32,
    /// The header's client.id (`sluice-test` unless [`Client::connect_as`]).
    pub client_id: String,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_as(addr, "sluice-test")
    }

    /// A client whose requests carry `client_id`.
    pub fn connect_as(addr: SocketAddr, client_id: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            next_id: 1,
            client_id: client_id.to_string(),
        }
    }

    /// Sends one request without reading the answer; returns its correlation id.
    pub fn send<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).expect("write");
        id
    }

    /// Reads one response frame: (correlation id, body bytes after the header).
    pub fn recv_raw(&mut self, key: ApiKey, version: i16) -> std::io::Result<(i32, Bytes)> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut b, key.response_header_version(version))
            .expect("response header");
        Ok((h.correlation_id, b))
    }

    pub fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, R) {
        let (id, mut b) = self.recv_raw(key, version).expect("response");
        let r = R::decode(&mut b, version).expect("decode response");
        assert!(!b.has_remaining(), "whole response consumed");
        (id, r)
    }

    pub fn call<T: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &T) -> R {
        let id = self.send(key, version, body);
        let (got, r) = self.recv(key, version);
        assert_eq!(got, id, "correlation id");
        r
    }

    /// True once the broker has closed this connection.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// Domain helpers used by the admin tests.
impl Client {
    /// Creates a topic; panics unless it succeeds.
    pub fn create_topic(&mut self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let t = CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
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
            );
        let r: CreateTopicsResponse = self.call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![t])
                .with_timeout_ms(10_000),
        );
        assert_eq!(r.topics.len(), 1);
        assert_eq!(
            r.topics[0].error_code, 0,
            "create {topic}: {:?}",
            r.topics[0].error_message
        );
    }

    /// Produces one batch with acks=all; returns the partition's answer, errors included.
    pub fn produce_response(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Vec<u8>,
    ) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(batch)))])]);
        let r: ProduceResponse = self.call(ApiKey::Produce, 9, &req);
        r.responses[0].partition_responses[0].clone()
    }

    /// Produces one batch with acks=all; returns its base offset.
    pub fn produce(&mut self, topic: &str, partition: i32, batch: Vec<u8>) -> i64 {
        let p = &self.produce_response(topic, partition, batch);
        assert_eq!(
            p.error_code, 0,
            "produce to {topic}-{partition}: {:?}",
            p.error_message
        );
        p.base_offset
    }

    /// Partition count of a topic from Metadata (None when the topic is unknown).
    pub fn partitions(&mut self, topic: &str) -> Option<usize> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let r: MetadataResponse = self.call(ApiKey::Metadata, 12, &req);
        let t = &r.topics[0];
        (t.error_code == 0).then_some(t.partitions.len())
    }

    /// ListOffsets of one partition: (error, offset) for `timestamp` (-1 latest, -2 earliest).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let r: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 7, &req);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset)
    }

    /// Fetch v12 of one partition from `offset`: (error, log start offset, high watermark,
    /// record bytes returned).
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64) -> (i16, i64, i64, usize) {
        let r: FetchResponse =
            self.call(ApiKey::Fetch, 12, &fetch_request(topic, partition, offset));
        let p = &r.responses[0].partitions[0];
        (
            p.error_code,
            p.log_start_offset,
            p.high_watermark,
            p.records.as_ref().map_or(0, |b| b.len()),
        )
    }
    /// Fetch v11 of one partition from `offset`, read_committed or read_uncommitted: (error,
    /// high watermark, last stable offset, aborted (producer id, first offset), record bytes).
    pub fn fetch_isolated(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        committed: bool,
    ) -> (i16, i64, i64, Vec<(i64, i64)>, Bytes) {
        let req = fetch_request(topic, partition, offset).with_isolation_level(i8::from(committed));
        let r: FetchResponse = self.call(ApiKey::Fetch, 11, &req);
        let pd = &r.responses[0].partitions[0];
        (
            pd.error_code,
            pd.high_watermark,
            pd.last_stable_offset,
            pd.aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect(),
            pd.records.clone().unwrap_or_default(),
        )
    }
}
