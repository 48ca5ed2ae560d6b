//! DescribeQuorum (KIP-595, KIP-836, KIP-853): the metadata quorum's leader, leader epoch,
//! high watermark and voters, as `kafka-metadata-quorum.sh describe --status/--replication` and
//! `Admin.describeMetadataQuorum` read them.
//!
//! Data path: request -> (cluster mode) a blocking thread asks the quorum leader for its view
//! ([`Member::quorum_status`](crate::cluster::member::Member::quorum_status)) -> the view as
//! Kafka's leader describes itself: its own entry fetched "now", each follower's last fetch
//! `now - last_contact`, log end offsets from the leader's match index (Raft index N is Kafka's
//! log end offset N: N entries at offsets 0..N). A single node is a quorum of one: itself as
//! leader at epoch 0 with high watermark 0.
//!
//! Like Kafka's Raft leader, a request naming anything but exactly `__cluster_metadata`
//! partition 0 gets UNKNOWN_TOPIC_OR_PARTITION on each partition it named; a quorum without a
//! reachable leader answers NOT_LEADER_OR_FOLLOWER on that partition (the admin client retries
//! it). Observers are empty: brokers that are not voters do not replicate the metadata log.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::codes;
use crate::cluster::controller::{QuorumView, VoterView};
use crate::shard::{BrokerShared, Shard};

/// The metadata log's topic (KRaft's name).
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// Listener name of the voters' endpoints (the quorum transport), as KRaft names it.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn describe_quorum(
    shard: &Rc<Shard>,
    req: DescribeQuorumRequest,
    version: i16,
    listener: usize,
) -> DescribeQuorumResponse {
    if !names_metadata_partition(&req) {
        return partition_errors(&req, codes::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let shared = &shard.shared;
    let view = if let Some(member) = shared.cluster.get() {
        let m = member.clone();
        match glommio::executor()
            .spawn_blocking(move || m.quorum_status())
            .await
        {
            Ok(v) if v.leader_id >= 0 => v,
            Ok(_) => return not_leader("the metadata quorum has no leader".into()),
            Err(e) => return not_leader(format!("the metadata quorum did not answer: {e}")),
        }
    } else if shared.is_clustered() {
        return not_leader("this broker has not joined the cluster yet".into());
    } else {
        single_node_view(shared.config.node_id)
    };
    response(&view, now_ms(), version, nodes(shared, listener))
}

/// Exactly one topic, `__cluster_metadata`, with exactly partition 0 (Kafka's
/// `hasValidTopicPartition`).
fn names_metadata_partition(req: &DescribeQuorumRequest) -> bool {
    match req.topics.as_slice() {
        [t] => {
            t.topic_name.0.as_str() == METADATA_TOPIC
                && t.partitions.len() == 1
                && t.partitions[0].partition_index == 0
        }
        _ => false,
    }
}

/// `code` on every partition the request named.
fn partition_errors(req: &DescribeQuorumRequest, code: i16) -> DescribeQuorumResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                                .with_error_message(None)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}

/// NOT_LEADER_OR_FOLLOWER on `__cluster_metadata-0`.
fn not_leader(message: String) -> DescribeQuorumResponse {
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(codes::NOT_LEADER_OR_FOLLOWER)
        .with_error_message(Some(s(message)));
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(s(METADATA_TOPIC)))
            .with_partitions(vec![partition])])
}

/// A node that is its own quorum.
fn single_node_view(node_id: i32) -> QuorumView {
    QuorumView {
        leader_id: node_id,
        leader_epoch: 0,
        high_watermark: 0,
        voters: vec![VoterView {
            id: node_id,
            log_end_offset: 0,
            last_contact_ms: 0,
        }],
    }
}

/// The voters' endpoints (v2's node list): the quorum addresses in a cluster, the client
/// listener the client came in on of a single node.
fn nodes(shared: &BrokerShared, listener: usize) -> Vec<Node> {
    let node = |id: i32, name: &str, host: String, port: u16| {
        Node::default()
            .with_node_id(BrokerId(id))
            .with_listeners(vec![Listener::default()
                .with_name(s(name))
                .with_host(s(host))
                .with_port(port)])
    };
    if shared.is_clustered() {
        let mut seen = std::collections::BTreeSet::new();
        shared
            .config
            .quorum_voters
            .iter()
            .filter(|(id, _)| seen.insert(*id))
            .map(|(id, addr)| node(*id, CONTROLLER_LISTENER, addr.ip().to_string(), addr.port()))
            .collect()
    } else {
        let (host, port) = shared.advertised(listener);
        let name = &shared.listeners[listener].name;
        vec![node(shared.config.node_id, name, host, port)]
    }
}

/// The answer for `view` at wall-clock time `now` (ms since the epoch).
fn response(view: &QuorumView, now: i64, version: i16, nodes: Vec<Node>) -> DescribeQuorumResponse {
    let voters = view
        .voters
        .iter()
        .map(|v| {
            // the leader describes itself as fetched and caught up now (as Kafka's does)
            let at = if v.id == view.leader_id {
                now
            } else if v.last_contact_ms >= 0 {
                now - v.last_contact_ms
            } else {
                -1
            };
            ReplicaState::default()
                .with_replica_id(BrokerId(v.id))
                .with_log_end_offset(v.log_end_offset)
                .with_last_fetch_timestamp(at)
                .with_last_caught_up_timestamp(at)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(codes::NONE)
        .with_error_message(None)
        .with_leader_id(BrokerId(view.leader_id))
        .with_leader_epoch(view.leader_epoch)
        .with_high_watermark(view.high_watermark)
        .with_current_voters(voters)
        .with_observers(Vec::new());
    let resp = DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(s(METADATA_TOPIC)))
            .with_partitions(vec![partition])]);
    if version >= 2 {
        resp.with_nodes(nodes)
    } else {
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_quorum_request;

    fn request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(
            topics
                .iter()
                .map(|(t, ps)| {
                    describe_quorum_request::TopicData::default()
                        .with_topic_name(TopicName(s(*t)))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    describe_quorum_request::PartitionData::default()
                                        .with_partition_index(*p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    #[test]
    fn only_the_metadata_partition_is_described() {
        assert!(names_metadata_partition(&request(&[(
            METADATA_TOPIC,
            &[0]
        )])));
        for bad in [
            request(&[]),
            request(&[(METADATA_TOPIC, &[1])]),
            request(&[(METADATA_TOPIC, &[0, 0])]),
            request(&[("other", &[0])]),
            request(&[(METADATA_TOPIC, &[0]), ("other", &[0])]),
        ] {
            assert!(!names_metadata_partition(&bad), "{bad:?}");
            let r = partition_errors(&bad, codes::UNKNOWN_TOPIC_OR_PARTITION);
            assert_eq!(r.error_code, codes::NONE);
            assert_eq!(r.topics.len(), bad.topics.len());
            for (t, rt) in bad.topics.iter().zip(&r.topics) {
                assert_eq!(t.topic_name, rt.topic_name);
                assert_eq!(t.partitions.len(), rt.partitions.len());
                assert!(rt
                    .partitions
                    .iter()
                    .all(|p| p.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION));
            }
        }
    }

    #[test]
    fn timestamps_are_now_minus_last_contact() {
        let view = QuorumView {
            leader_id: 2,
            leader_epoch: 7,
            high_watermark: 40,
            voters: vec![
                VoterView {
                    id: 1,
                    log_end_offset: 38,
                    last_contact_ms: 120,
                },
                VoterView {
                    id: 2,
                    log_end_offset: 40,
                    last_contact_ms: 0,
                },
                VoterView {
                    id: 3,
                    log_end_offset: -1,
                    last_contact_ms: -1,
                },
            ],
        };
        let r = response(&view, 10_000, 2, Vec::new());
        let p = &r.topics[0].partitions[0];
        assert_eq!(r.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
        assert_eq!(
            (p.leader_id, p.leader_epoch, p.high_watermark),
            (BrokerId(2), 7, 40)
        );
        let got: Vec<(i32, i64, i64, i64)> = p
            .current_voters
            .iter()
            .map(|v| {
                (
                    v.replica_id.0,
                    v.log_end_offset,
                    v.last_fetch_timestamp,
                    v.last_caught_up_timestamp,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 38, 9_880, 9_880),
                (2, 40, 10_000, 10_000),
                (3, -1, -1, -1)
            ]
        );
        assert!(p.observers.is_empty());
    }
}
