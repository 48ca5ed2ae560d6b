//! Consumer group administration: finding the coordinator, ListGroups, DescribeGroups (member
//! assignments decoded), OffsetFetch, OffsetCommit (also for resets of inactive groups) and
//! DeleteGroups, plus the per-partition lag report that `kafka-consumer-groups.sh --describe`
//! prints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use serde::Serialize;

use crate::admin::{kafka_check, sb, topic_name};
use crate::client::{Client, ClientError};
use crate::conn;

/// Error codes the group code reacts to.
pub mod codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// (topic, partitions) pairs, as assignments and subscriptions carry them.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Encodes a consumer protocol message (2-byte version, then the body).
pub fn encode_versioned<T: Encodable>(msg: &T, version: i16) -> Result<Bytes, ClientError> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version)
        .map_err(|e| ClientError::Conn(conn::ConnError::Failed(e.to_string())))?;
    Ok(buf.freeze())
}

/// Decodes a consumer protocol message; newer versions than kafka-protocol knows are read as
/// the newest it knows (fields are only ever appended).
pub fn decode_versioned<T: Decodable>(mut data: Bytes, max: i16) -> Option<T> {
    if data.len() < 2 {
        return None;
    }
    let version = data.get_i16();
    if version < 0 {
        return None;
    }
    T::decode(&mut data, version.min(max)).ok()
}

/// A member's assignment (ConsumerProtocolAssignment), empty when absent or unreadable.
pub fn decode_assignment(data: &Bytes) -> TopicPartitions {
    if data.is_empty() {
        return Vec::new();
    }
    let Some(a) = decode_versioned::<ConsumerProtocolAssignment>(data.clone(), 3) else {
        return Vec::new();
    };
    a.assigned_partitions
        .into_iter()
        .map(|t| (t.topic.0.to_string(), t.partitions))
        .collect()
}

/// Encodes an assignment (version 0, understood by every client).
pub fn encode_assignment(parts: &[(String, Vec<i32>)]) -> Result<Bytes, ClientError> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    encode_versioned(&a, 0)
}

/// The topics of a member's subscription.
pub fn decode_subscription(data: &Bytes) -> Vec<String> {
    decode_versioned::<ConsumerProtocolSubscription>(data.clone(), 3)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// A group as ListGroups names it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedGroupInfo {
    pub group: String,
    pub protocol_type: String,
    /// ListGroups v4+.
    pub state: Option<String>,
    /// ListGroups v5+: `classic` or `consumer` (KIP-848).
    pub group_type: Option<String>,
}

/// One member of a described group.
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: TopicPartitions,
}

/// A group as DescribeGroups describes it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub group: String,
    pub error_code: i16,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

/// A committed offset (-1: none).
#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// One row of a group's lag report.
#[derive(Debug, Clone, Serialize)]
pub struct LagRow {
    pub group: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub current_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    pub consumer_id: Option<String>,
    pub host: Option<String>,
    pub client_id: Option<String>,
}

/// A group's description with offsets and lag per partition.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
    pub rows: Vec<LagRow>,
}

fn retriable(code: i16) -> bool {
    matches!(
        code,
        codes::COORDINATOR_LOAD_IN_PROGRESS | codes::COORDINATOR_NOT_AVAILABLE
    )
}

impl Client {
    /// FindCoordinator for a group: (node id, host, port). Retries while the coordinator is
    /// loading or not yet available.
    pub fn find_group_coordinator(
        &mut self,
        group: &str,
    ) -> Result<(i32, String, i32), ClientError> {
        let v = self.negotiate(ApiKey::FindCoordinator, 0, 6)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let req = if v >= 4 {
                FindCoordinatorRequest::default()
                    .with_key_type(0)
                    .with_coordinator_keys(vec![sb(group)])
            } else {
                FindCoordinatorRequest::default().with_key(sb(group))
            };
            let resp: FindCoordinatorResponse =
                self.connection().call(ApiKey::FindCoordinator, v, &req)?;
            let (code, msg, node, host, port) = if v >= 4 {
                let c = resp.coordinators.into_iter().next().unwrap_or_default();
                (c.error_code, c.error_message, c.node_id, c.host, c.port)
            } else {
                (
                    resp.error_code,
                    resp.error_message,
                    resp.node_id,
                    resp.host,
                    resp.port,
                )
            };
            if retriable(code) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            kafka_check(
                || format!("finding the coordinator of group {group}"),
                code,
                msg.as_ref(),
            )?;
            return Ok((node.0, host.to_string(), port));
        }
    }

    /// A client connected to the coordinator of `group` (a new connection; the bootstrap
    /// address is reused when the coordinator is the same broker).
    pub fn group_coordinator(
        &mut self,
        group: &str,
        client_id: &str,
    ) -> Result<Client, ClientError> {
        let (_, host, port) = self.find_group_coordinator(group)?;
        let target = format!("{host}:{port}");
        let addr = match conn::resolve(&target) {
            Ok(a) => a,
            Err(_) => return self.reopen(client_id),
        };
        match Client::connect_to(addr, Some(&target), client_id, self.security()) {
            Ok(c) => Ok(c),
            // an advertised address this machine cannot reach: try the bootstrap address
            Err(ClientError::Conn(_)) if addr != self.addr => self.reopen(client_id),
            Err(e) => Err(e),
        }
    }

    /// ListGroups.
    pub fn list_groups(&mut self) -> Result<Vec<ListedGroupInfo>, ClientError> {
        let v = self.negotiate(ApiKey::ListGroups, 0, 5)?;
        let resp: ListGroupsResponse =
            self.connection()
                .call(ApiKey::ListGroups, v, &ListGroupsRequest::default())?;
        kafka_check(|| "listing groups".into(), resp.error_code, None)?;
        let mut out: Vec<ListedGroupInfo> = resp
            .groups
            .into_iter()
            .map(|g| ListedGroupInfo {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: (v >= 4).then(|| g.group_state.to_string()),
                group_type: (v >= 5).then(|| g.group_type.to_string()),
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    /// DescribeGroups (send it to the group's coordinator).
    pub fn describe_groups(&mut self, groups: &[String]) -> Result<Vec<GroupInfo>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeGroups, 0, 5)?;
        let req = DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|g| GroupId(sb(g))).collect());
        let resp: DescribeGroupsResponse =
            self.connection().call(ApiKey::DescribeGroups, v, &req)?;
        Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let mut members: Vec<MemberInfo> = g
                    .members
                    .into_iter()
                    .map(|m| MemberInfo {
                        member_id: m.member_id.to_string(),
                        instance_id: m.group_instance_id.map(|i| i.to_string()),
                        client_id: m.client_id.to_string(),
                        host: m.client_host.to_string(),
                        assignment: decode_assignment(&m.member_assignment),
                    })
                    .collect();
                members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
                GroupInfo {
                    group: g.group_id.0.to_string(),
                    error_code: g.error_code,
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    protocol: g.protocol_data.to_string(),
                    members,
                }
            })
            .collect())
    }

    /// OffsetFetch of `group` (send it to the coordinator): every committed offset when
    /// `topics` is `None`, else those partitions (-1 where nothing is committed).
    pub fn fetch_committed(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<Committed>, ClientError> {
        let v = self.negotiate(ApiKey::OffsetFetch, 1, 9)?;
        let what = || format!("fetching committed offsets of group {group}");
        let mut out = Vec::new();
        if v >= 8 {
            let req =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_member_epoch(-1)
                    .with_topics(topics.map(|ts| {
                        ts.iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopics::default()
                                    .with_name(topic_name(t))
                                    .with_partition_indexes(ps.clone())
                            })
                            .collect()
                    }))]);
            let resp: OffsetFetchResponse = self.connection().call(ApiKey::OffsetFetch, v, &req)?;
            for g in resp.groups {
                kafka_check(what, g.error_code, None)?;
                for t in g.topics {
                    for p in t.partitions {
                        kafka_check(
                            || format!("{}: {}-{}", what(), t.name.0, p.partition_index),
                            p.error_code,
                            None,
                        )?;
                        out.push(Committed {
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            metadata: p.metadata.map(|m| m.to_string()),
                        });
                    }
                }
            }
        } else {
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(sb(group)))
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|(t, ps)| {
                            OffsetFetchRequestTopic::default()
                                .with_name(topic_name(t))
                                .with_partition_indexes(ps.clone())
                        })
                        .collect()
                }));
            let resp: OffsetFetchResponse = self.connection().call(ApiKey::OffsetFetch, v, &req)?;
            kafka_check(what, resp.error_code, None)?;
            for t in resp.topics {
                for p in t.partitions {
                    kafka_check(
                        || format!("{}: {}-{}", what(), t.name.0, p.partition_index),
                        p.error_code,
                        None,
                    )?;
                    out.push(Committed {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        metadata: p.metadata.map(|m| m.to_string()),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// OffsetCommit (send it to the coordinator). `generation` -1 and an empty member id
    /// commit for an inactive group (what offset resets do). Returns the per-partition error
    /// codes, (topic, partition, code).
    pub fn commit_offsets(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<(String, i32, i16)>, ClientError> {
        let v = self.negotiate(ApiKey::OffsetCommit, 2, 9)?;
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(sb(""))),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(sb(member_id))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp: OffsetCommitResponse = self.connection().call(ApiKey::OffsetCommit, v, &req)?;
        Ok(resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| (name.clone(), p.partition_index, p.error_code))
            })
            .collect())
    }

    /// DeleteGroups: (group, error code) per group.
    pub fn delete_groups(&mut self, groups: &[String]) -> Result<Vec<(String, i16)>, ClientError> {
        let v = self.negotiate(ApiKey::DeleteGroups, 0, 2)?;
        let req = DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(sb(g))).collect());
        let resp: DeleteGroupsResponse = self.connection().call(ApiKey::DeleteGroups, v, &req)?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| (r.group_id.0.to_string(), r.error_code))
            .collect())
    }

    /// Log end offsets of `parts` ((topic, partition) pairs); a topic whose offsets cannot be
    /// listed (deleted since the commit, ...) is left out.
    pub fn log_end_offsets(
        &mut self,
        parts: &BTreeSet<(String, i32)>,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in parts {
            by_topic.entry(t).or_default().push(*p);
        }
        // in a cluster the bootstrap broker may not host a partition, and a follower's high
        // watermark lags the leader's: each partition's leader answers
        let cluster = !by_topic.is_empty() && self.metadata_with_brokers(Some(&[]))?.0.len() > 1;
        let mut out = BTreeMap::new();
        for (t, ps) in by_topic {
            let r = if cluster {
                self.reopen("sluice")
                    .and_then(|meta| crate::leaders::Leaders::new(meta, t, "sluice"))
                    .and_then(|l| crate::leaders::Router::new(l).list_offsets(&ps, -1))
            } else {
                self.list_offsets(t, &ps, -1)
            };
            match r {
                Ok(v) => {
                    for (p, o) in v {
                        out.insert((t.to_string(), p), o);
                    }
                }
                Err(ClientError::Conn(e)) => return Err(ClientError::Conn(e)),
                Err(_) => {}
            }
        }
        Ok(out)
    }
}

/// The lag report of `group`: `bootstrap` lists log end offsets, `coordinator` answers the
/// group calls. `None` when the group does not exist.
pub fn describe_group_lag(
    bootstrap: &mut Client,
    coordinator: &mut Client,
    group: &str,
) -> Result<Option<GroupLag>, ClientError> {
    let info = coordinator
        .describe_groups(&[group.to_string()])?
        .into_iter()
        .next();
    let Some(info) = info else {
        return Ok(None);
    };
    kafka_check(
        || format!("describing group {group}"),
        info.error_code,
        None,
    )?;
    let committed = coordinator.fetch_committed(group, None)?;
    if info.state == "Dead" && committed.iter().all(|c| c.offset < 0) {
        return Ok(None);
    }
    let committed: BTreeMap<(String, i32), i64> = committed
        .into_iter()
        .filter(|c| c.offset >= 0)
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect();
    let mut owner: BTreeMap<(String, i32), &MemberInfo> = BTreeMap::new();
    for m in &info.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m);
            }
        }
    }
    let parts: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    let ends = bootstrap.log_end_offsets(&parts)?;
    let mut rows = Vec::new();
    for tp in &parts {
        let current = committed.get(tp).copied();
        let end = ends.get(tp).copied();
        let m = owner.get(tp);
        rows.push(LagRow {
            group: group.to_string(),
            topic: Some(tp.0.clone()),
            partition: Some(tp.1),
            current_offset: current,
            log_end_offset: end,
            lag: match (current, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            },
            consumer_id: m.map(|m| m.member_id.clone()),
            host: m.map(|m| m.host.clone()),
            client_id: m.map(|m| m.client_id.clone()),
        });
    }
    // members without partitions get a row of their own, as in Kafka's tool
    for m in &info.members {
        if m.assignment.iter().all(|(_, ps)| ps.is_empty()) {
            rows.push(LagRow {
                group: group.to_string(),
                topic: None,
                partition: None,
                current_offset: None,
                log_end_offset: None,
                lag: None,
                consumer_id: Some(m.member_id.clone()),
                host: Some(m.host.clone()),
                client_id: Some(m.client_id.clone()),
            });
        }
    }
    Ok(Some(GroupLag {
        group: group.to_string(),
        state: info.state,
        protocol: info.protocol,
        members: info.members,
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_roundtrip() {
        let parts = vec![("a".to_string(), vec![0, 2]), ("b".to_string(), vec![1])];
        let bytes = encode_assignment(&parts).expect("encode");
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(decode_assignment(&bytes), parts);
        assert!(decode_assignment(&Bytes::new()).is_empty());
        assert!(decode_assignment(&Bytes::from_static(&[0xff, 0xff, 1])).is_empty());
    }

    #[test]
    fn subscriptions_of_newer_versions_are_read() {
        let s = ConsumerProtocolSubscription::default().with_topics(vec![sb("t1"), sb("t2")]);
        for v in 0..=3 {
            let bytes = encode_versioned(&s, v).expect("encode");
            assert_eq!(decode_subscription(&bytes), vec!["t1", "t2"]);
        }
    }
}
