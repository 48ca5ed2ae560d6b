//! Metadata: the live brokers and, for each partition, its leader, leader epoch, replicas, ISR
//! and offline replicas (a single node leads everything; a cluster's image decides).

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{codes, topics};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: MetadataRequest, version: i16) -> MetadataResponse {
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
    let mut topics_out = Vec::new();
    match requested {
        None => {
            let st = shard.shared.catalog.read();
            for t in st.topics.values() {
                topics_out.push(topic_entry(
                    shared,
                    Some(t.name.clone()),
                    Some(t),
                    codes::NONE,
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
                let allow = version < 4 || req.allow_auto_topic_creation;
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
                ));
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(
            shared
                .brokers()
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
    shared: &crate::shard::BrokerShared,
    name: Option<String>,
    info: Option<&crate::catalog::TopicInfo>,
    code: i16,
) -> MetadataResponseTopic {
    let name = name.map(|n| TopicName(StrBytes::from_string(n)));
    let Some(info) = info.filter(|_| code == codes::NONE) else {
        return MetadataResponseTopic::default()
            .with_name(name)
            .with_error_code(if code == codes::NONE {
                codes::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                code
            });
    };
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let partitions = (0..info.partitions())
        .filter_map(|p| {
            let v = shared.partition_view(&info.name, p)?;
            let code = if v.leader < 0 {
                codes::LEADER_NOT_AVAILABLE
            } else {
                codes::NONE
            };
            Some(
                MetadataResponsePartition::default()
                    .with_error_code(code)
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(v.leader))
                    .with_leader_epoch(v.leader_epoch)
                    .with_replica_nodes(ids(v.replicas))
                    .with_isr_nodes(ids(v.isr))
                    .with_offline_replicas(ids(v.offline)),
            )
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(info.id)
        .with_partitions(partitions)
}
