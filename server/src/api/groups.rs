//! Group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete. Each group request is
//! forwarded to the shard coordinating the group (see `crate::group`).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::state::{err, JoinRequest};
use crate::group::{coordinator_shard, Committed, TopicOffsets};
use crate::security::Authz;
use crate::shard::Shard;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Runs `f` with the coordinator of `group` on its shard.
pub(super) async fn on_coordinator<R, F, Fut>(shard: &Rc<Shard>, group: &str, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(Rc<crate::group::Coordinator>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let target = coordinator_shard(group, shard.nr);
    let g = group.to_string();
    shard
        .call(target, move |s| async move {
            match s.coordinator() {
                // in a cluster only the leader of the group's offsets partition serves it
                Some(c) if c.serves(&g) => Some(f(c).await),
                _ => None,
            }
        })
        .await
        .ok()
        .flatten()
}

pub fn find_coordinator(
    shard: &Rc<Shard>,
    req: FindCoordinatorRequest,
    version: i16,
    listener: usize,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let valid_type = req.key_type == 0 || req.key_type == 1;
    let entries: Vec<CoordinatorEntry> = keys
        .into_iter()
        .map(|k| {
            let e = CoordinatorEntry::default().with_key(k.clone());
            if !valid_type || k.is_empty() {
                return e
                    .with_error_code(if valid_type {
                        err::INVALID_GROUP_ID
                    } else {
                        42
                    })
                    .with_node_id(BrokerId(-1))
                    .with_port(-1);
            }
            match crate::cluster::coordinators::coordinator_for(
                &shard.shared,
                listener,
                req.key_type,
                &k,
            ) {
                Ok(c) => e
                    .with_node_id(BrokerId(c.id))
                    .with_host(s(c.host))
                    .with_port(i32::from(c.port)),
                Err(code) => e
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            }
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(entries);
    }
    let first = entries.first().cloned().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(first.error_code)
        .with_node_id(first.node_id)
        .with_host(first.host.clone())
        .with_port(first.port)
}

pub async fn join(
    shard: &Rc<Shard>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(err::INVALID_GROUP_ID)
            .with_generation_id(-1);
    }
    let jr = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id,
        client_host,
        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
        // v0 has no rebalance timeout: it equals the session timeout
        rebalance_timeout: Duration::from_millis(if version == 0 {
            req.session_timeout_ms.max(0) as u64
        } else {
            req.rebalance_timeout_ms.max(0) as u64
        }),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move { c.join(&g, jr).await }).await;
    let Some(r) = r else {
        return JoinGroupResponse::default()
            .with_error_code(err::COORDINATOR_NOT_AVAILABLE)
            .with_generation_id(-1);
    };
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_type(if version >= 7 {
            r.protocol_type.map(s)
        } else {
            None
        })
        .with_protocol_name(if version >= 7 {
            r.protocol_name.map(s)
        } else {
            Some(s(r.protocol_name.unwrap_or_default()))
        })
        .with_leader(s(r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, iid, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(iid.map(s))
                        .with_metadata(meta)
                })
                .collect(),
        )
}

pub async fn sync(shard: &Rc<Shard>, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move {
        let assignments: Vec<(String, Bytes)> = req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        c.sync(
            &g,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id,
            req.protocol_type.as_ref().map(|p| p.as_str()),
            req.protocol_name.as_ref().map(|p| p.as_str()),
            assignments,
        )
        .await
    })
    .await;
    match r {
        Some(r) if version >= 5 => SyncGroupResponse::default()
            .with_error_code(r.error)
            .with_protocol_type(r.protocol_type.map(s))
            .with_protocol_name(r.protocol_name.map(s))
            .with_assignment(r.assignment),
        Some(r) => SyncGroupResponse::default()
            .with_error_code(r.error)
            .with_assignment(r.assignment),
        None => SyncGroupResponse::default().with_error_code(err::COORDINATOR_NOT_AVAILABLE),
    }
}

pub async fn heartbeat(shard: &Rc<Shard>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let g = group.clone();
    let code = on_coordinator(shard, &group, move |c| async move {
        c.heartbeat(
            &g,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id,
        )
    })
    .await
    .unwrap_or(err::COORDINATOR_NOT_AVAILABLE);
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn leave(shard: &Rc<Shard>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let leavers: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let g = group.clone();
    let l = leavers.clone();
    let r = on_coordinator(shard, &group, move |c| async move { c.leave(&g, &l) }).await;
    let Some((top, codes)) = r else {
        return LeaveGroupResponse::default().with_error_code(err::COORDINATOR_NOT_AVAILABLE);
    };
    if version >= 3 {
        LeaveGroupResponse::default().with_members(
            leavers
                .into_iter()
                .zip(codes)
                .map(|((m, i), code)| {
                    MemberResponse::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(i.map(s))
                        .with_error_code(code)
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(top)
    }
}

/// Whether `topic` exists here with a partition `partition` (OffsetCommit and TxnOffsetCommit
/// answer UNKNOWN_TOPIC_OR_PARTITION for the others, as Kafka's request handler does, and
/// store only the rest).
pub(crate) fn partition_exists(shard: &Shard, topic: &str, partition: i32) -> bool {
    shard
        .shared
        .catalog
        .read()
        .topics
        .get(topic)
        .is_some_and(|t| (0..t.partitions()).contains(&partition))
}

pub async fn offset_commit(
    shard: &Rc<Shard>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    // v10 names topics by id
    let names: Vec<Option<String>> = {
        let st = shard.shared.catalog.read();
        req.topics
            .iter()
            .map(|t| {
                if version >= 10 {
                    st.by_id(t.topic_id).map(|i| i.name.clone())
                } else {
                    Some(t.name.0.to_string())
                }
            })
            .collect()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // per partition, in request order: None = stored with the group's answer, Some = refused
    let mut refused: Vec<Vec<Option<i16>>> = Vec::with_capacity(req.topics.len());
    let mut entries = Vec::new();
    for (t, name) in req.topics.iter().zip(&names) {
        let Some(name) = name else {
            refused.push(vec![
                Some(crate::api::codes::UNKNOWN_TOPIC_ID);
                t.partitions.len()
            ]);
            continue;
        };
        let mut codes = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            if !partition_exists(shard, name, p.partition_index) {
                codes.push(Some(crate::api::codes::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            }
            codes.push(None);
            entries.push((
                name.clone(),
                p.partition_index,
                Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_ms: now,
                },
            ));
        }
        refused.push(codes);
    }
    let g = group.clone();
    let member = req.member_id.to_string();
    let iid = req.group_instance_id.as_ref().map(|i| i.to_string());
    let generation = req.generation_id_or_member_epoch;
    let code = if group.is_empty() {
        err::INVALID_GROUP_ID
    } else if entries.is_empty() && !req.topics.is_empty() {
        // nothing left to store: Kafka answers without asking the coordinator
        err::NONE
    } else {
        on_coordinator(shard, &group, move |c| async move {
            c.commit(&g, &member, iid.as_deref(), generation, entries)
                .await
        })
        .await
        .unwrap_or(err::COORDINATOR_NOT_AVAILABLE)
    };
    let topics = req
        .topics
        .iter()
        .zip(refused)
        .map(|(t, codes)| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, c)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c.unwrap_or(code))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// One partition of an OffsetFetch answer (the single-group and multi-group forms use two
/// kafka-protocol types with the same fields); -1 when nothing is committed.
/// A partition's answer; `Err` carries UNSTABLE_OFFSET_COMMIT (an open transaction holds
/// offsets for it and the client asked for stable offsets only).
type Fetched = Result<Option<Committed>, i16>;

macro_rules! committed {
    ($ty:ident, $p:expr, $c:expr) => {{
        let f: Fetched = $c;
        let code = f.as_ref().err().copied().unwrap_or(err::NONE);
        let c = f.unwrap_or(None);
        $ty::default()
            .with_partition_index($p)
            .with_committed_offset(c.as_ref().map_or(-1, |c| c.offset))
            .with_committed_leader_epoch(c.as_ref().map_or(-1, |c| c.leader_epoch))
            .with_metadata(Some(s(c.and_then(|c| c.metadata).unwrap_or_default())))
            .with_error_code(code)
    }};
}

/// UNSTABLE_OFFSET_COMMIT
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// One group's committed offsets: (error, [(topic, [(partition, committed)])]). With
/// `require_stable`, partitions with pending transactional offsets answer
/// UNSTABLE_OFFSET_COMMIT (the client retries).
async fn fetch_group(
    shard: &Rc<Shard>,
    group: String,
    wanted: Wanted,
    require_stable: bool,
    member: Option<(String, i32)>,
) -> (i16, Vec<(String, Vec<(i32, Fetched)>)>) {
    let g = group.clone();
    match on_coordinator(shard, &group, move |c| async move {
        // v9+ from a member of a consumer group: its epoch must be current (KIP-848)
        if let Some((m, epoch)) = &member {
            if let Some(code) = c.consumer_validate_offsets(&g, m, *epoch, &[]) {
                if code != err::NONE {
                    return Err(code);
                }
            }
        }
        let topics: TopicOffsets = c.fetch_offsets(&g, wanted);
        let fetched: Vec<(String, Vec<(i32, Fetched)>)> = topics
            .into_iter()
            .map(|(t, ps)| {
                let ps = ps
                    .into_iter()
                    .map(|(p, committed)| {
                        if require_stable && c.has_pending(&g, &t, p) {
                            (p, Err(UNSTABLE_OFFSET_COMMIT))
                        } else {
                            (p, Ok(committed))
                        }
                    })
                    .collect();
                (t, ps)
            })
            .collect();
        Ok(fetched)
    })
    .await
    {
        Some(Ok(v)) => (err::NONE, v),
        Some(Err(code)) => (code, Vec::new()),
        None => (err::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    }
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version < 8 {
        let wanted: Wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let stable = version >= 7 && req.require_stable;
        let (code, topics) =
            fetch_group(shard, req.group_id.0.to_string(), wanted, stable, None).await;
        return OffsetFetchResponse::default()
            .with_error_code(code)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, c)| committed!(OffsetFetchResponsePartition, p, c))
                                    .collect(),
                            )
                    })
                    .collect(),
            );
    }
    let mut groups = Vec::new();
    for g in req.groups {
        let by_id = version >= 10;
        let wanted: Wanted = g.topics.as_ref().map(|ts| {
            let st = shard.shared.catalog.read();
            ts.iter()
                .map(|t| {
                    let name = if by_id {
                        st.by_id(t.topic_id)
                            .map(|i| i.name.clone())
                            .unwrap_or_default()
                    } else {
                        t.name.0.to_string()
                    };
                    (name, t.partition_indexes.clone())
                })
                .collect()
        });
        let member = g
            .member_id
            .as_ref()
            .filter(|m| !m.is_empty() && version >= 9)
            .map(|m| (m.to_string(), g.member_epoch));
        let (code, topics) = fetch_group(
            shard,
            g.group_id.0.to_string(),
            wanted,
            req.require_stable,
            member,
        )
        .await;
        let st = shard.shared.catalog.read();
        groups.push(
            OffsetFetchResponseGroup::default()
                .with_group_id(g.group_id)
                .with_error_code(code)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            let id = st.topics.get(&t).map(|i| i.id).unwrap_or_default();
                            let entry = if by_id {
                                OffsetFetchResponseTopics::default().with_topic_id(id)
                            } else {
                                OffsetFetchResponseTopics::default().with_name(TopicName(s(t)))
                            };
                            entry.with_partitions(
                                ps.into_iter()
                                    .map(|(p, c)| committed!(OffsetFetchResponsePartitions, p, c))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|x| x.to_string()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|x| x.to_string()).collect();
    let typed = |t: &str| types.is_empty() || types.iter().any(|x| x.eq_ignore_ascii_case(t));
    let mut all = Vec::new();
    for target in 0..shard.nr {
        let st = states.clone();
        let v = shard
            .call(target, move |sh| async move {
                sh.coordinator().map(|c| c.list(&st)).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
        all.extend(v);
    }
    all.retain(|(_, _, _, kind)| typed(kind));
    all.sort();
    ListGroupsResponse::default().with_groups(
        all.into_iter()
            .map(|(g, pt, state, kind)| {
                let mut e = ListedGroup::default()
                    .with_group_id(GroupId(s(g)))
                    .with_protocol_type(s(pt));
                if version >= 4 {
                    e = e.with_group_state(s(state));
                }
                if version >= 5 {
                    e = e.with_group_type(s(kind));
                }
                e
            })
            .collect(),
    )
}

/// DescribeGroups; v3+ with `include_authorized_operations` carries what the principal may do
/// on each group (KIP-430), i32::MIN otherwise.
pub async fn describe_groups(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
    version: i16,
    authz: &Authz<'_>,
) -> DescribeGroupsResponse {
    let mut out = Vec::new();
    let with_ops = version >= 3 && req.include_authorized_operations;
    for gid in req.groups {
        let group = gid.0.to_string();
        let g = group.clone();
        let d = on_coordinator(shard, &group, move |c| async move { c.describe(&g) }).await;
        let ops = if with_ops {
            super::authorize::group_operations(authz, &group)
        } else {
            i32::MIN
        };
        let entry = DescribedGroup::default()
            .with_group_id(gid)
            .with_authorized_operations(ops);
        out.push(match d {
            None => entry.with_error_code(err::COORDINATOR_NOT_AVAILABLE),
            Some(None) => entry.with_group_state(s("Dead")),
            Some(Some(d)) => entry
                .with_group_state(s(d.state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|(id, iid, client, host, meta, assign)| {
                            DescribedGroupMember::default()
                                .with_member_id(s(id))
                                .with_group_instance_id(if version >= 4 {
                                    iid.map(s)
                                } else {
                                    None
                                })
                                .with_client_id(s(client))
                                .with_client_host(s(host))
                                .with_member_metadata(meta)
                                .with_member_assignment(assign)
                        })
                        .collect(),
                ),
        });
    }
    DescribeGroupsResponse::default().with_groups(out)
}

pub async fn delete_groups(shard: &Rc<Shard>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for gid in req.groups_names {
        let group = gid.0.to_string();
        let g = group.clone();
        let code = on_coordinator(
            shard,
            &group,
            move |c| async move { c.delete_group(&g).await },
        )
        .await
        .unwrap_or(err::COORDINATOR_NOT_AVAILABLE);
        if code == err::NONE {
            // a deleted share group's delivery state goes too (a new group starts afresh)
            crate::group::share::owner::forget_everywhere(shard, &group).await;
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(gid)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn offset_delete(shard: &Rc<Shard>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let wanted: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move {
        c.delete_offsets(&g, wanted).await
    })
    .await;
    let Some((code, topics)) = r else {
        return OffsetDeleteResponse::default().with_error_code(err::COORDINATOR_NOT_AVAILABLE);
    };
    OffsetDeleteResponse::default()
        .with_error_code(code)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, c)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
