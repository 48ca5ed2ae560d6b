//! A blocking Kafka client for admin calls and fetches: ApiVersions negotiation, Metadata,
//! CreateTopics, ListOffsets, DeleteRecords, Fetch. Single broker (the bootstrap server), which
//! is what sluice and a one-node Kafka are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use thiserror::Error;

use crate::conn::{self, ConnError, Connection};
use crate::sasl::{self, SaslError};
use crate::security::ClientSecurity;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// SASL authentication failed (wrong credentials, a mechanism the broker does not enable).
    #[error(transparent)]
    Sasl(SaslError),
    #[error("the broker does not support {api:?} in a version this client speaks ({min}..={max})")]
    Unsupported { api: ApiKey, min: i16, max: i16 },
    #[error("{what}: {name} (error code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        what: String,
        code: i16,
        name: String,
        message: Option<String>,
    },
    #[error("topic {0} not found")]
    NoSuchTopic(String),
    /// Retries ran out (the message says what failed last).
    #[error("{0}")]
    GaveUp(String),
}

impl From<SaslError> for ClientError {
    fn from(e: SaslError) -> ClientError {
        match e {
            SaslError::Conn(c) => ClientError::Conn(c),
            other => ClientError::Sasl(other),
        }
    }
}

impl From<crate::security::SecurityError> for ClientError {
    fn from(e: crate::security::SecurityError) -> ClientError {
        ClientError::Conn(e.into())
    }
}

/// Kafka's name for an error code (`OffsetOutOfRange`, ...).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "None".into(),
        Some(ResponseError::Unknown(c)) => format!("Unknown({c})"),
        Some(e) => format!("{e:?}"),
    }
}

fn check(
    what: impl Into<String>,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    Err(ClientError::Kafka {
        what: what.into(),
        code,
        name: error_name(code),
        message: message.map(|m| m.to_string()),
    })
}

/// The versions this client speaks, per API: (min, max). Max stays below versions that name
/// topics by id (Fetch 13+, Produce 13) since sluice and this client name them by string.
pub const SPOKEN: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteRecords, 0, 2),
];

/// The versions chosen for this broker.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    chosen: BTreeMap<i16, i16>,
    broker: BTreeMap<i16, (i16, i16)>,
}

impl Versions {
    /// The version to use for `api`, or why there is none.
    pub fn get(&self, api: ApiKey) -> Result<i16, ClientError> {
        if let Some(v) = self.chosen.get(&(api as i16)) {
            return Ok(*v);
        }
        let (min, max) = SPOKEN
            .iter()
            .find(|(k, _, _)| *k == api)
            .map_or((0, -1), |(_, a, b)| (*a, *b));
        Err(ClientError::Unsupported { api, min, max })
    }

    /// The broker's advertised range for `api`.
    pub fn broker_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker.get(&(api as i16)).copied()
    }

    fn from_response(r: &ApiVersionsResponse) -> Versions {
        let mut v = Versions::default();
        for k in &r.api_keys {
            v.broker.insert(k.api_key, (k.min_version, k.max_version));
        }
        for (api, min, max) in SPOKEN {
            if let Some((bmin, bmax)) = v.broker.get(&(*api as i16)) {
                let use_v = (*max).min(*bmax);
                if use_v >= (*min).max(*bmin) {
                    v.chosen.insert(*api as i16, use_v);
                }
            }
        }
        v
    }
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub error: i16,
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    /// host:port
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub error: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// One partition's part of a fetch answer.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Raw record batches (possibly ending in a partial batch).
    pub records: Bytes,
}

/// A connection to one broker with negotiated API versions (and, as its security says, TLS
/// and SASL authentication done).
pub struct Client {
    conn: Connection,
    versions: Versions,
    pub addr: SocketAddr,
    /// The host name the broker was reached by (TLS checks the certificate against it), when
    /// known.
    host: Option<String>,
    security: Arc<ClientSecurity>,
}

impl Client {
    /// Connects to `bootstrap` (host:port) in plaintext and runs ApiVersions.
    pub fn connect(bootstrap: &str, client_id: &str) -> Result<Client, ClientError> {
        Self::connect_secure(bootstrap, client_id, &Arc::new(ClientSecurity::plaintext()))
    }

    /// Connects to `bootstrap` (host:port) with `security`.
    pub fn connect_secure(
        bootstrap: &str,
        client_id: &str,
        security: &Arc<ClientSecurity>,
    ) -> Result<Client, ClientError> {
        let addr = conn::resolve(bootstrap)?;
        Self::connect_to(addr, Some(bootstrap), client_id, security)
    }

    /// A plaintext connection to `addr`.
    pub fn connect_addr(addr: SocketAddr, client_id: &str) -> Result<Client, ClientError> {
        Self::connect_to(
            addr,
            None,
            client_id,
            &Arc::new(ClientSecurity::plaintext()),
        )
    }

    /// Connects to `addr` with `security`: TCP, the TLS handshake (server name `host`, a host
    /// name or host:port, else the IP address), ApiVersions, then SASL.
    pub fn connect_to(
        addr: SocketAddr,
        host: Option<&str>,
        client_id: &str,
        security: &Arc<ClientSecurity>,
    ) -> Result<Client, ClientError> {
        let mut conn =
            Connection::connect_secure(addr, host, client_id, Duration::from_secs(10), security)?;
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-tools"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &req)?;
        check("ApiVersions", resp.error_code, None)?;
        let versions = Versions::from_response(&resp);
        if let Some(s) = &security.sasl {
            let range = |api: ApiKey, min: i16, max: i16| {
                versions.broker_range(api).and_then(|(bmin, bmax)| {
                    let v = max.min(bmax);
                    (v >= min.max(bmin)).then_some(v)
                })
            };
            let (handshake, authenticate) = (
                range(ApiKey::SaslHandshake, 1, 1),
                range(ApiKey::SaslAuthenticate, 0, 2),
            );
            let began = std::time::Instant::now();
            let lifetime = sasl::authenticate(&mut conn, s, handshake, authenticate)?;
            conn.sasl_session(began, lifetime, s, handshake, authenticate);
        }
        Ok(Client {
            conn,
            versions,
            addr,
            host: host.map(str::to_string),
            security: security.clone(),
        })
    }

    /// A new connection to `target` (host:port) with this client's security.
    pub fn open(&self, target: &str, client_id: &str) -> Result<Client, ClientError> {
        let addr = conn::resolve(target)?;
        Self::connect_to(addr, Some(target), client_id, &self.security)
    }

    /// A new connection to the same broker, with the same security.
    pub fn reopen(&self, client_id: &str) -> Result<Client, ClientError> {
        Self::connect_to(self.addr, self.host.as_deref(), client_id, &self.security)
    }

    /// How this client connects.
    pub fn security(&self) -> &Arc<ClientSecurity> {
        &self.security
    }

    /// The host name (or host:port) the broker was reached by, when known.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Gives up the connection (for a [`crate::pipeline::Pipeline`]).
    pub fn into_parts(self) -> (Connection, Versions) {
        (self.conn, self.versions)
    }

    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Metadata for `topics` (all topics when `None`).
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<Vec<TopicInfo>, ClientError> {
        Ok(self.metadata_with_brokers(topics)?.1)
    }

    /// Metadata for `topics` (all topics when `None`) and the brokers, by id.
    pub fn metadata_with_brokers(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<(Vec<BrokerInfo>, Vec<TopicInfo>), ClientError> {
        let v = self.versions.get(ApiKey::Metadata)?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.conn.call(ApiKey::Metadata, v, &req)?;
        let mut brokers: Vec<BrokerInfo> = resp
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let topics = resp
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        error: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicInfo {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    error: t.error_code,
                    partitions,
                }
            })
            .collect();
        Ok((brokers, topics))
    }

    /// The partitions of `topic`, or `None` when it does not exist.
    pub fn partitions(&mut self, topic: &str) -> Result<Option<Vec<PartitionInfo>>, ClientError> {
        let md = self.metadata(Some(&[topic]))?;
        let Some(t) = md.into_iter().find(|t| t.name == topic) else {
            return Ok(None);
        };
        match t.error {
            0 => Ok(Some(t.partitions)),
            3 => Ok(None), // UNKNOWN_TOPIC_OR_PARTITION
            code => check(format!("metadata for {topic}"), code, None).map(|_| None),
        }
    }

    /// Creates a topic. `Ok(false)` when it already existed.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<bool, ClientError> {
        let v = self.versions.get(ApiKey::CreateTopics)?;
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, val)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(val.to_string())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let resp: CreateTopicsResponse = self.conn.call(ApiKey::CreateTopics, v, &req)?;
        for t in &resp.topics {
            if t.error_code == 36 {
                return Ok(false); // TOPIC_ALREADY_EXISTS
            }
            check(
                format!("creating topic {name}"),
                t.error_code,
                t.error_message.as_ref(),
            )?;
        }
        Ok(true)
    }

    /// ListOffsets for each partition at `timestamp` (-1 latest, -2 earliest, or a time in ms):
    /// (partition, offset), in the order given.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let v = self.versions.get(ApiKey::ListOffsets)?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let resp: ListOffsetsResponse = self.conn.call(ApiKey::ListOffsets, v, &req)?;
        let mut found: BTreeMap<i32, i64> = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                check(
                    format!("list offsets of {topic}-{}", p.partition_index),
                    p.error_code,
                    None,
                )?;
                found.insert(p.partition_index, p.offset);
            }
        }
        partitions
            .iter()
            .map(|p| {
                found
                    .get(p)
                    .map(|o| (*p, *o))
                    .ok_or_else(|| ClientError::NoSuchTopic(format!("{topic}-{p}")))
            })
            .collect()
    }

    /// DeleteRecords: moves each partition's log start to the offset given (-1: the high
    /// watermark). Returns (partition, new low watermark).
    pub fn delete_records(
        &mut self,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let v = self.versions.get(ApiKey::DeleteRecords)?;
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(*o)
                        })
                        .collect(),
                )]);
        let resp: DeleteRecordsResponse = self.conn.call(ApiKey::DeleteRecords, v, &req)?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                check(
                    format!("delete records of {topic}-{}", p.partition_index),
                    p.error_code,
                    None,
                )?;
                out.push((p.partition_index, p.low_watermark));
            }
        }
        Ok(out)
    }

    /// One Fetch of `topic` at the given (partition, offset) positions.
    pub fn fetch(
        &mut self,
        topic: &str,
        positions: &[(i32, i64)],
        opts: FetchOptions,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let v = self.versions.get(ApiKey::Fetch)?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(opts.max_wait_ms)
            .with_min_bytes(opts.min_bytes)
            .with_max_bytes(opts.max_bytes)
            .with_isolation_level(opts.isolation_level)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    positions
                        .iter()
                        .map(|(p, o)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*o)
                                .with_partition_max_bytes(opts.partition_max_bytes)
                        })
                        .collect(),
                )]);
        self.conn.set_read_timeout(Duration::from_millis(
            opts.max_wait_ms.max(0) as u64 + 30_000,
        ))?;
        let resp: FetchResponse = match self.conn.call(ApiKey::Fetch, v, &req) {
            Ok(r) => r,
            // Some brokers put tagged fields into flexible Fetch responses that the version does
            // not define (Tansu 0.6 sends tag 0 at v12) and kafka-protocol refuses them. The
            // frame was read whole, so the connection is still in step: retry with v11, which
            // has no tagged fields, and keep using it.
            Err(ConnError::Decode { .. })
                if v > 11
                    && self
                        .versions
                        .broker_range(ApiKey::Fetch)
                        .is_some_and(|r| r.0 <= 11) =>
            {
                self.versions.chosen.insert(ApiKey::Fetch as i16, 11);
                self.conn.call(ApiKey::Fetch, 11, &req)?
            }
            Err(e) => return Err(e.into()),
        };
        check(format!("fetch {topic}"), resp.error_code, None)?;
        let mut out = Vec::new();
        for t in resp.responses {
            for p in t.partitions {
                out.push(FetchedPartition {
                    partition: p.partition_index,
                    error: p.error_code,
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    records: p.records.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}

/// Fetch limits (Kafka consumer defaults unless set).
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 52_428_800,
            partition_max_bytes: 1_048_576,
            isolation_level: 0,
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    /// An API the broker does not advertise (or not in a range this client speaks) is one
    /// plain error naming it, never a request the broker would close the connection on.
    #[test]
    fn unadvertised_apis_are_reported_plainly() {
        let resp = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::Metadata as i16)
                .with_min_version(0)
                .with_max_version(12),
            // only versions below what this client speaks
            ApiVersion::default()
                .with_api_key(ApiKey::Produce as i16)
                .with_min_version(0)
                .with_max_version(2),
        ]);
        let v = Versions::from_response(&resp);
        assert_eq!(v.get(ApiKey::Metadata).ok(), Some(12));
        let e = v
            .get(ApiKey::Produce)
            .expect_err("no common Produce version");
        assert_eq!(
            e.to_string(),
            "the broker does not support Produce in a version this client speaks (3..=11)"
        );
        let e = v.get(ApiKey::Fetch).expect_err("Fetch not advertised");
        assert_eq!(
            e.to_string(),
            "the broker does not support Fetch in a version this client speaks (4..=12)"
        );
        assert_eq!(v.broker_range(ApiKey::ElectLeaders), None);
    }
}
