//! Admin calls for the `sluice` CLI beyond what [`crate::client`] has: topic descriptions with
//! ids, replicas and ISR, topic deletion, partition creation, configs (describe and incremental
//! alter), log dirs and the cluster description. Each API's version is negotiated against the
//! broker's ApiVersions answer, within the range this module speaks.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{error_name, Client, ClientError};

/// ConfigResource type of topics.
pub const RESOURCE_TOPIC: i8 = 2;
/// ConfigResource type of brokers.
pub const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs' DEFAULT_CONFIG source: a value nobody set.
pub const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// A Kafka error code as a [`ClientError`] (`Ok` for 0).
pub(crate) fn kafka_check(
    what: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    Err(ClientError::Kafka {
        what: what(),
        code,
        name: error_name(code),
        message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
    })
}

/// Kafka's textual form of a topic id: URL-safe base64 without padding.
pub fn uuid_to_kafka(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// One partition of a described topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionDescription {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDescription {
    pub name: String,
    /// Kafka's base64 form; `None` when the broker does not send ids.
    pub id: Option<String>,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionDescription>,
}

impl TopicDescription {
    /// Replicas of the first partition (what kafka-topics.sh prints).
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// One broker of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// Metadata's view of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicDescription>,
}

/// One config of a resource.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigValue {
    pub name: String,
    pub value: Option<String>,
    /// DescribeConfigs config source (1 dynamic topic, 4 static broker, 5 default, ...).
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

impl ConfigValue {
    pub fn is_default(&self) -> bool {
        self.source == SOURCE_DEFAULT
    }

    /// Kafka's name for the source (`DYNAMIC_TOPIC_CONFIG`, ...).
    pub fn source_name(&self) -> &'static str {
        match self.source {
            1 => "DYNAMIC_TOPIC_CONFIG",
            2 => "DYNAMIC_BROKER_CONFIG",
            3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            4 => "STATIC_BROKER_CONFIG",
            5 => "DEFAULT_CONFIG",
            6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
            7 => "CLIENT_METRICS_CONFIG",
            8 => "GROUP_CONFIG",
            _ => "UNKNOWN",
        }
    }
}

/// One config change for [`Client::alter_configs_incremental`].
#[derive(Debug, Clone)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// One partition of a log dir.
#[derive(Debug, Clone, Serialize)]
pub struct LogDirPartition {
    pub partition: i32,
    pub size: i64,
    pub offset_lag: i64,
}

/// One topic of a log dir.
#[derive(Debug, Clone, Serialize)]
pub struct LogDirTopic {
    pub topic: String,
    pub size: i64,
    pub partitions: Vec<LogDirPartition>,
}

/// One log dir of a broker.
#[derive(Debug, Clone, Serialize)]
pub struct LogDir {
    pub dir: String,
    pub error_code: i16,
    /// -1 when the broker does not say (DescribeLogDirs < v4).
    pub total_bytes: i64,
    pub usable_bytes: i64,
    pub topics: Vec<LogDirTopic>,
}

/// DescribeCluster's answer.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// The metadata log's topic (KRaft's name), the one partition DescribeQuorum describes.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// NOT_LEADER_OR_FOLLOWER: the quorum has no leader right now (an election); retried.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// One voter or observer of the metadata quorum, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumReplica {
    pub id: i32,
    /// -1 when the leader does not know it.
    pub log_end_offset: i64,
    /// Milliseconds since the epoch; -1 when unknown (or before DescribeQuorum v1).
    pub last_fetch_timestamp: i64,
    pub last_caught_up_timestamp: i64,
}

/// A voter's endpoints (DescribeQuorum v2), as `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumNode {
    pub id: i32,
    pub endpoints: Vec<String>,
}

/// DescribeQuorum's answer for `__cluster_metadata-0` (Kafka's `QuorumInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
    pub nodes: Vec<QuorumNode>,
}

impl QuorumDescription {
    /// The leader's own entry among the voters.
    pub fn leader(&self) -> Option<&QuorumReplica> {
        self.voters.iter().find(|v| v.id == self.leader_id)
    }

    /// kafka-metadata-quorum's MaxFollowerLag and MaxFollowerLagTimeMs: the voter with the
    /// smallest log end offset (the first such) against the leader; the time is 0 when that
    /// voter is the leader itself and -1 when a caught-up time is unknown. `None` without a
    /// leader among the voters.
    pub fn max_follower_lag(&self) -> Option<(i64, i64)> {
        let leader_at = self.voters.iter().position(|v| v.id == self.leader_id)?;
        let leader = &self.voters[leader_at];
        let mut min_at = 0;
        for (i, v) in self.voters.iter().enumerate() {
            if v.log_end_offset < self.voters[min_at].log_end_offset {
                min_at = i;
            }
        }
        let slowest = &self.voters[min_at];
        let lag = leader.log_end_offset - slowest.log_end_offset;
        let time = if min_at == leader_at {
            0
        } else if leader.last_caught_up_timestamp != -1 && slowest.last_caught_up_timestamp != -1 {
            leader.last_caught_up_timestamp - slowest.last_caught_up_timestamp
        } else {
            -1
        };
        Some((lag, time))
    }
}

impl Client {
    /// The version to use for `api`: the highest both this caller (`min..=max`) and the broker
    /// speak.
    pub fn negotiate(&self, api: ApiKey, min: i16, max: i16) -> Result<i16, ClientError> {
        let unsupported = ClientError::Unsupported { api, min, max };
        let (bmin, bmax) = self.versions().broker_range(api).ok_or(unsupported)?;
        let v = max.min(bmax);
        if v < min.max(bmin) {
            return Err(ClientError::Unsupported { api, min, max });
        }
        Ok(v)
    }

    /// Metadata with everything the CLI shows: ids, replicas, ISR, brokers, controller.
    /// `topics`: `None` for all topics.
    pub fn cluster_metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, ClientError> {
        let v = self.versions().get(ApiKey::Metadata)?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic_name(t)))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.connection().call(ApiKey::Metadata, v, &req)?;
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        let mut out_topics: Vec<TopicDescription> = resp
            .topics
            .iter()
            .map(|t| {
                let id = *t.topic_id.as_bytes();
                let mut partitions: Vec<PartitionDescription> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionDescription {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: ids(&p.replica_nodes),
                        isr: ids(&p.isr_nodes),
                        offline_replicas: ids(&p.offline_replicas),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicDescription {
                    name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    id: (id != [0u8; 16]).then(|| uuid_to_kafka(&id)),
                    internal: t.is_internal,
                    error_code: t.error_code,
                    partitions,
                }
            })
            .collect();
        out_topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut brokers: Vec<BrokerInfo> = resp
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterMetadata {
            cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers,
            topics: out_topics,
        })
    }

    /// DeleteTopics: (topic, error code, message) per topic.
    pub fn delete_topics(
        &mut self,
        names: &[String],
    ) -> Result<Vec<(String, i16, Option<String>)>, ClientError> {
        let v = self.negotiate(ApiKey::DeleteTopics, 1, 5)?;
        let req = DeleteTopicsRequest::default()
            .with_topic_names(names.iter().map(|n| topic_name(n)).collect())
            .with_timeout_ms(30_000);
        let resp: DeleteTopicsResponse = self.connection().call(ApiKey::DeleteTopics, v, &req)?;
        Ok(resp
            .responses
            .into_iter()
            .map(|r| {
                (
                    r.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )
            })
            .collect())
    }

    /// CreatePartitions: grows `topic` to `total` partitions.
    pub fn create_partitions(&mut self, topic: &str, total: i32) -> Result<(), ClientError> {
        let v = self.negotiate(ApiKey::CreatePartitions, 0, 3)?;
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total)
                .with_assignments(None)])
            .with_timeout_ms(30_000);
        let resp: CreatePartitionsResponse =
            self.connection().call(ApiKey::CreatePartitions, v, &req)?;
        for r in &resp.results {
            kafka_check(
                || format!("adding partitions to {topic}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// DescribeConfigs of one resource (every config, defaults included), sorted by name.
    pub fn describe_configs(
        &mut self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<ConfigValue>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeConfigs, 1, 4)?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(sb(name))
                .with_configuration_keys(None),
        ]);
        let resp: DescribeConfigsResponse =
            self.connection().call(ApiKey::DescribeConfigs, v, &req)?;
        let mut out = Vec::new();
        for r in resp.results {
            kafka_check(
                || format!("describing configs of {name}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
            for c in r.configs {
                out.push(ConfigValue {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source: c.config_source,
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// IncrementalAlterConfigs of one resource.
    pub fn alter_configs_incremental(
        &mut self,
        resource_type: i8,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<(), ClientError> {
        let v = self.negotiate(ApiKey::IncrementalAlterConfigs, 0, 1)?;
        let configs = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(k, val) => AlterableConfig::default()
                    .with_name(sb(k))
                    .with_config_operation(OP_SET)
                    .with_value(Some(sb(val))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(sb(k))
                    .with_config_operation(OP_DELETE)
                    .with_value(None),
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(sb(name))
                .with_configs(configs),
        ]);
        let resp: IncrementalAlterConfigsResponse =
            self.connection()
                .call(ApiKey::IncrementalAlterConfigs, v, &req)?;
        for r in &resp.responses {
            kafka_check(
                || format!("altering configs of {name}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// DescribeLogDirs of the broker this client talks to. `topics`: (topic, partitions) to
    /// describe, `None` for everything.
    pub fn describe_log_dirs(
        &mut self,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<LogDir>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeLogDirs, 1, 4)?;
        let req = DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    DescribableLogDirTopic::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps.clone())
                })
                .collect()
        }));
        let resp: DescribeLogDirsResponse =
            self.connection().call(ApiKey::DescribeLogDirs, v, &req)?;
        kafka_check(|| "describing log dirs".into(), resp.error_code, None)?;
        let mut dirs: Vec<LogDir> = resp
            .results
            .into_iter()
            .map(|r| {
                let mut topics: Vec<LogDirTopic> = r
                    .topics
                    .into_iter()
                    .map(|t| {
                        let mut partitions: Vec<LogDirPartition> = t
                            .partitions
                            .iter()
                            .filter(|p| !p.is_future_key)
                            .map(|p| LogDirPartition {
                                partition: p.partition_index,
                                size: p.partition_size,
                                offset_lag: p.offset_lag,
                            })
                            .collect();
                        partitions.sort_by_key(|p| p.partition);
                        LogDirTopic {
                            topic: t.name.0.to_string(),
                            size: partitions.iter().map(|p| p.size.max(0)).sum(),
                            partitions,
                        }
                    })
                    .collect();
                topics.sort_by(|a, b| a.topic.cmp(&b.topic));
                LogDir {
                    dir: r.log_dir.to_string(),
                    error_code: r.error_code,
                    total_bytes: if v >= 4 { r.total_bytes } else { -1 },
                    usable_bytes: if v >= 4 { r.usable_bytes } else { -1 },
                    topics,
                }
            })
            .collect();
        dirs.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(dirs)
    }

    /// DescribeQuorum for `__cluster_metadata-0`, retrying NOT_LEADER_OR_FOLLOWER (a quorum
    /// between leaders) for up to `wait`.
    pub fn describe_quorum(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<QuorumDescription, ClientError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.describe_quorum_once() {
                Err(ClientError::Kafka { code, .. })
                    if code == NOT_LEADER_OR_FOLLOWER && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn describe_quorum_once(&mut self) -> Result<QuorumDescription, ClientError> {
        let v = self.negotiate(ApiKey::DescribeQuorum, 0, 2)?;
        let req = DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(topic_name(METADATA_TOPIC))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]);
        let resp: DescribeQuorumResponse =
            self.connection().call(ApiKey::DescribeQuorum, v, &req)?;
        let what = || "describing the metadata quorum".to_string();
        let malformed = |what: String| {
            ClientError::Conn(crate::conn::ConnError::Decode {
                api: ApiKey::DescribeQuorum,
                version: v,
                reason: format!("{what} where __cluster_metadata-0 alone was expected"),
            })
        };
        kafka_check(what, resp.error_code, resp.error_message.as_ref())?;
        let partition = match resp.topics.as_slice() {
            [t] if t.topic_name.0.as_str() == METADATA_TOPIC => match t.partitions.as_slice() {
                [p] if p.partition_index == 0 => p,
                _ => return Err(malformed(format!("{} partitions", t.partitions.len()))),
            },
            _ => return Err(malformed(format!("{} topics", resp.topics.len()))),
        };
        kafka_check(what, partition.error_code, partition.error_message.as_ref())?;
        let replicas = |rs: &[describe_quorum_response::ReplicaState]| {
            rs.iter()
                .map(|r| QuorumReplica {
                    id: r.replica_id.0,
                    log_end_offset: r.log_end_offset,
                    last_fetch_timestamp: if v >= 1 { r.last_fetch_timestamp } else { -1 },
                    last_caught_up_timestamp: if v >= 1 {
                        r.last_caught_up_timestamp
                    } else {
                        -1
                    },
                })
                .collect::<Vec<_>>()
        };
        Ok(QuorumDescription {
            leader_id: partition.leader_id.0,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: replicas(&partition.current_voters),
            observers: replicas(&partition.observers),
            nodes: resp
                .nodes
                .iter()
                .map(|n| QuorumNode {
                    id: n.node_id.0,
                    endpoints: n
                        .listeners
                        .iter()
                        .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                        .collect(),
                })
                .collect(),
        })
    }

    /// DescribeCluster, or Metadata's view of the brokers when the broker lacks it.
    pub fn describe_cluster(&mut self) -> Result<ClusterDescription, ClientError> {
        let Ok(v) = self.negotiate(ApiKey::DescribeCluster, 0, 1) else {
            let md = self.cluster_metadata(Some(&[]))?;
            return Ok(ClusterDescription {
                cluster_id: md.cluster_id,
                controller_id: md.controller_id,
                brokers: md.brokers,
            });
        };
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let resp: DescribeClusterResponse =
            self.connection().call(ApiKey::DescribeCluster, v, &req)?;
        kafka_check(
            || "describing the cluster".into(),
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        let mut brokers: Vec<BrokerInfo> = resp
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            cluster_id: Some(resp.cluster_id.to_string()).filter(|c| !c.is_empty()),
            controller_id: resp.controller_id.0,
            brokers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: i32, leo: i64, caught_up: i64) -> QuorumReplica {
        QuorumReplica {
            id,
            log_end_offset: leo,
            last_fetch_timestamp: caught_up,
            last_caught_up_timestamp: caught_up,
        }
    }

    #[test]
    fn max_follower_lag_like_kafka_metadata_quorum() {
        let q = |voters| QuorumDescription {
            leader_id: 2,
            leader_epoch: 1,
            high_watermark: 10,
            voters,
            observers: Vec::new(),
            nodes: Vec::new(),
        };
        // the slowest voter against the leader
        let d = q(vec![
            replica(1, 7, 900),
            replica(2, 10, 1000),
            replica(3, 10, 1000),
        ]);
        assert_eq!(d.max_follower_lag(), Some((3, 100)));
        // the leader is the first voter with the smallest log end offset: 0 ms
        let d = q(vec![replica(2, 10, 1000), replica(1, 10, 990)]);
        assert_eq!(d.max_follower_lag(), Some((0, 0)));
        // a follower ties with the leader and comes first: the time between them
        let d = q(vec![replica(1, 10, 990), replica(2, 10, 1000)]);
        assert_eq!(d.max_follower_lag(), Some((0, 10)));
        // an unknown caught-up time
        let d = q(vec![replica(1, -1, -1), replica(2, 10, 1000)]);
        assert_eq!(d.max_follower_lag(), Some((11, -1)));
        // no leader among the voters
        let d = q(vec![replica(1, 10, 1000)]);
        assert_eq!(d.max_follower_lag(), None);
    }

    #[test]
    fn topic_ids_print_like_kafka() {
        // Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, no padding (22 characters)
        assert_eq!(uuid_to_kafka(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(uuid_to_kafka(&b), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(uuid_to_kafka(&[0xff; 16]), "_____________________w");
    }
}
