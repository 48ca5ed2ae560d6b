//! Metadata: the live brokers and, for each partition, its leader, leader epoch, replicas, ISR
//! and offline replicas (a single node leads everything; a cluster's image decides), with the
//! cluster (v8-v10) and topic (v8+) operations the principal may do when the client asks.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{codes, topics};
use crate::cluster::coordinators::is_internal;
use crate::cluster::view::PartitionView;
use crate::security::acl::op;
use crate::security::Authz;
use crate::shard::{BrokerShared, Shard};

/// `listener`: the listener the client came in on; brokers are given at its endpoints.
pub async fn handle(
    shard: &Rc<Shard>,
    req: MetadataRequest,
    version: i16,
    listener: usize,
    authz: &Authz<'_>,
) -> MetadataResponse {
    let shared = &shard.shared;
    // the controller clients see is this broker, as KRaft brokers answer: every broker takes
    // the admin requests Kafka clients send to "the controller" and forwards them to the quorum
    // (the quorum leader is reported by DescribeCluster and DescribeQuorum)
    // v0: an empty list means all topics; v1+: null means all, empty means none
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    // v8+: what the principal may do on each topic it may describe, when asked (KIP-430);
    // topics refused with TOPIC_AUTHORIZATION_FAILED keep the "not asked" value, as in Kafka
    let topic_ops = |name: &str| {
        if version >= 8 && req.include_topic_authorized_operations {
            super::authorize::topic_operations(authz, name)
        } else {
            i32::MIN
        }
    };
    let mut topics_out = Vec::new();
    match requested {
        None => {
            let st = shard.shared.catalog.read();
            // topics the principal may not describe are left out
            for t in st
                .topics
                .values()
                .filter(|t| authz.topic(op::DESCRIBE, &t.name))
            {
                topics_out.push(topic_entry(
                    shared,
                    Some(t.name.clone()),
                    Some(t),
                    codes::NONE,
                    topic_ops(&t.name),
                ));
            }
        }
        Some(list) => {
            for (name, id) in list {
                let name = match name {
                    Some(n) => Some(n),
                    None => shard
                        .shared
                        .catalog
                        .read()
                        .by_id(id)
                        .map(|t| t.name.clone()),
                };
                let Some(name) = name else {
                    topics_out.push(
                        MetadataResponseTopic::default()
                            .with_error_code(codes::UNKNOWN_TOPIC_ID)
                            .with_topic_id(id),
                    );
                    continue;
                };
                if !authz.topic(op::DESCRIBE, &name) {
                    topics_out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name))))
                            .with_error_code(super::authorize::TOPIC_AUTHORIZATION_FAILED),
                    );
                    continue;
                }
                // auto-creation needs CREATE on the cluster or the topic
                let allow = (version < 4 || req.allow_auto_topic_creation)
                    && (authz.cluster(op::CREATE) || authz.topic(op::CREATE, &name));
                let code = match topics::ensure_topic(shard, &name, allow).await {
                    Ok(()) => codes::NONE,
                    Err(c) => c,
                };
                let st = shard.shared.catalog.read();
                topics_out.push(topic_entry(
                    shared,
                    Some(name.clone()),
                    st.topics.get(&name),
                    code,
                    topic_ops(&name),
                ));
            }
        }
    }
    let cluster_ops = if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        super::authorize::cluster_operations(authz)
    } else {
        i32::MIN
    };
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_ops)
        .with_brokers(
            shared
                .brokers(listener)
                .into_iter()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.id))
                        .with_host(StrBytes::from_string(b.host))
                        .with_port(i32::from(b.port))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(
            shard.shared.catalog.read().cluster_id.clone(),
        )))
        .with_controller_id(BrokerId(shared.config.node_id))
        .with_topics(topics_out)
}

fn topic_entry(
    shared: &BrokerShared,
    name: Option<String>,
    info: Option<&crate::catalog::TopicInfo>,
    code: i16,
    authorized_operations: i32,
) -> MetadataResponseTopic {
    let name = name.map(|n| TopicName(StrBytes::from_string(n)));
    let Some(info) = info.filter(|_| code == codes::NONE) else {
        return MetadataResponseTopic::default()
            .with_name(name)
            .with_topic_authorized_operations(authorized_operations)
            .with_error_code(if code == codes::NONE {
                codes::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                code
            });
    };
    let partitions = partition_rows(shared, &info.name, 0..info.partitions())
        .into_iter()
        .map(|r| {
            MetadataResponsePartition::default()
                .with_error_code(r.error_code)
                .with_partition_index(r.index)
                .with_leader_id(BrokerId(r.view.leader))
                .with_leader_epoch(r.view.leader_epoch)
                .with_replica_nodes(broker_ids(r.view.replicas))
                .with_isr_nodes(broker_ids(r.view.isr))
                .with_offline_replicas(broker_ids(r.view.offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(info.id)
        .with_is_internal(is_internal(&info.name))
        .with_topic_authorized_operations(authorized_operations)
        .with_partitions(partitions)
}

/// One partition as Metadata and DescribeTopicPartitions describe it.
pub(super) struct PartitionRow {
    pub index: i32,
    /// LEADER_NOT_AVAILABLE while the partition has no leader (offline), else NONE.
    pub error_code: i16,
    pub view: PartitionView,
}

/// The partitions `range` of `topic` that exist, in order.
pub(super) fn partition_rows(
    shared: &BrokerShared,
    topic: &str,
    range: std::ops::Range<i32>,
) -> Vec<PartitionRow> {
    range
        .filter_map(|p| {
            let view = shared.partition_view(topic, p)?;
            let error_code = if view.leader < 0 {
                codes::LEADER_NOT_AVAILABLE
            } else {
                codes::NONE
            };
            Some(PartitionRow {
                index: p,
                error_code,
                view,
            })
        })
        .collect()
}

pub(super) fn broker_ids(v: Vec<i32>) -> Vec<BrokerId> {
    v.into_iter().map(BrokerId).collect()
}
