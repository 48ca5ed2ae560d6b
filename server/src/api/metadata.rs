//! Metadata: one broker (this one) leads every partition.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{codes, topics};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = shard.shared.config.node_id;
    let (host, port) = shard.shared.advertised();
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
                    node,
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
                    node,
                    Some(name.clone()),
                    st.topics.get(&name),
                    code,
                ));
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(StrBytes::from_string(host))
            .with_port(port as i32)])
        .with_cluster_id(Some(StrBytes::from_string(
            shard.shared.catalog.read().cluster_id.clone(),
        )))
        .with_controller_id(BrokerId(node))
        .with_topics(topics_out)
}

fn topic_entry(
    node: i32,
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
    let partitions = (0..info.partitions())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(info.id)
        .with_partitions(partitions)
}
