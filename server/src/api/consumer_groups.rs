//! The KIP-848 group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.
//!
//! Data path: request -> topic ids resolved to names and the group's settings read here (the
//! catalog and the group configs are broker-wide) -> the shard coordinating the group
//! (`group::consumer::serve`, the same coordinator as classic groups) -> the group's state
//! machine (`group::consumer::group`) -> reply, assignment names mapped back to topic ids.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as hb_resp};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::authorize::GROUP_AUTHORIZATION_FAILED;
use super::groups::on_coordinator;
use crate::group::consumer::assignor::Assignment;
use crate::group::consumer::group::{code, ConsumerGroup, Heartbeat};
use crate::group::state::err;
use crate::security::acl::op;
use crate::security::Authz;
use crate::shard::Shard;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Every topic's partition count, and names by id.
pub(super) struct Topics {
    pub(super) counts: BTreeMap<String, i32>,
    pub(super) ids: BTreeMap<String, Uuid>,
}

impl Topics {
    pub(super) fn read(shard: &Shard) -> Topics {
        let st = shard.shared.catalog.read();
        Topics {
            counts: st
                .topics
                .iter()
                .map(|(n, t)| (n.clone(), t.partitions()))
                .collect(),
            ids: st.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect(),
        }
    }

    pub(super) fn name(&self, id: Uuid) -> Option<&String> {
        self.ids.iter().find(|(_, i)| **i == id).map(|(n, _)| n)
    }

    pub(super) fn id(&self, name: &str) -> Uuid {
        self.ids.get(name).copied().unwrap_or_default()
    }
}

fn failed(code: i16, message: &str) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
        .with_member_epoch(-1)
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    client_host: String,
    authz: &Authz<'_>,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return failed(code::INVALID_REQUEST, "GroupId can't be empty.");
    }
    if version >= 1 && req.member_id.is_empty() {
        return failed(code::INVALID_REQUEST, "MemberId can't be empty.");
    }
    if let Some(names) = &req.subscribed_topic_names {
        if names.iter().any(|t| !authz.topic(op::DESCRIBE, t.as_str())) {
            return failed(
                super::authorize::TOPIC_AUTHORIZATION_FAILED,
                "Topic authorization failed.",
            );
        }
    }
    let topics = Topics::read(shard);
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            if let Some(name) = topics.name(tp.topic_id) {
                a.entry(name.clone())
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
        }
        a
    });
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>()),
        subscribed_regex: req.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned,
        client_id,
        client_host,
    };
    let overrides = super::group_configs::overrides(&shard.shared, &group);
    let settings = shard
        .shared
        .config
        .consumer_group
        .settings(Some(&overrides));
    let counts = topics.counts.clone();
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move {
        c.consumer_heartbeat(&g, hb, &settings, &counts)
    })
    .await;
    let Some(r) = r else {
        return failed(
            err::COORDINATOR_NOT_AVAILABLE,
            "The coordinator is not available.",
        );
    };
    if r.error != code::NONE {
        tracing::debug!(group, member = %r.member_id, code = r.error, message = ?r.message, "consumer group heartbeat refused");
    }
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(r.error)
        .with_error_message(r.message.map(s))
        .with_member_id((!r.member_id.is_empty()).then(|| s(r.member_id)))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
        .with_assignment(r.assignment.map(|a| {
            hb_resp::Assignment::default().with_topic_partitions(
                a.into_iter()
                    .filter(|(_, ps)| !ps.is_empty())
                    .map(|(t, ps)| {
                        hb_resp::TopicPartitions::default()
                            .with_topic_id(topics.id(&t))
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}

fn described_assignment(a: &Assignment, topics: &Topics) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        a.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| {
                describe::TopicPartitions::default()
                    .with_topic_id(topics.id(t))
                    .with_topic_name(TopicName(s(t.clone())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

fn described(g: &ConsumerGroup, topics: &Topics) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_state(s(g.state().name()))
        .with_group_epoch(g.group_epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(s(g.assignor.name()))
        .with_members(
            g.members
                .values()
                .map(|m| {
                    describe::Member::default()
                        .with_member_id(s(m.id.clone()))
                        .with_instance_id(m.instance_id.clone().map(s))
                        .with_rack_id(m.rack_id.clone().map(s))
                        .with_member_epoch(m.rec.epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|t| TopicName(s(t.clone())))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(m.regex.clone().map(s))
                        .with_assignment(described_assignment(&m.rec.assigned, topics))
                        .with_target_assignment(described_assignment(
                            &g.target.get(&m.id).cloned().unwrap_or_default(),
                            topics,
                        ))
                        .with_member_type(1)
                })
                .collect(),
        )
}

/// A described group of ConsumerGroupDescribe or ShareGroupDescribe (two protocol types of
/// the same shape).
pub(super) trait DescribedEntry: Default {
    fn with_error(self, code: i16, message: Option<String>) -> Self;
    fn with_identity(self, group_id: GroupId, authorized_operations: i32) -> Self;
}

impl DescribedEntry for DescribedGroup {
    fn with_error(self, code: i16, message: Option<String>) -> Self {
        self.with_error_code(code)
            .with_error_message(message.map(s))
    }
    fn with_identity(self, group_id: GroupId, ops: i32) -> Self {
        self.with_group_id(group_id).with_authorized_operations(ops)
    }
}

/// Describes each id of a KIP-848 / KIP-932 describe request on its coordinator: `get` picks
/// the group of the asked type (`kind` names it in the not-found message) and `describe`
/// turns it into its entry. GROUP_AUTHORIZATION_FAILED for groups the principal may not
/// describe, GROUP_ID_NOT_FOUND for ids that are not groups of that type.
pub(super) async fn describe_groups<G: Send + 'static, D: DescribedEntry>(
    shard: &Rc<Shard>,
    ids: Vec<GroupId>,
    include_authorized_operations: bool,
    authz: &Authz<'_>,
    kind: &'static str,
    get: fn(&crate::group::Coordinator, &str) -> Option<G>,
    describe: impl Fn(&G) -> D,
) -> Vec<D> {
    let mut out = Vec::with_capacity(ids.len());
    for gid in ids {
        let group = gid.0.to_string();
        if !authz.group(op::DESCRIBE, &group) {
            out.push(D::default().with_identity(gid, i32::MIN).with_error(
                GROUP_AUTHORIZATION_FAILED,
                Some("Group authorization failed.".into()),
            ));
            continue;
        }
        let g = group.clone();
        let found = on_coordinator(shard, &group, move |c| async move {
            (get(&c, &g), c.describe(&g).is_some())
        })
        .await;
        out.push(match found {
            None => D::default()
                .with_identity(gid, i32::MIN)
                .with_error(err::COORDINATOR_NOT_AVAILABLE, None),
            Some((Some(found), _)) => {
                let ops = if include_authorized_operations {
                    super::authorize::group_operations(authz, &group)
                } else {
                    i32::MIN
                };
                describe(&found).with_identity(gid, ops)
            }
            Some((None, other_type)) => D::default().with_identity(gid, i32::MIN).with_error(
                err::GROUP_ID_NOT_FOUND,
                Some(if other_type {
                    format!("Group {group} is not a {kind} group.")
                } else {
                    format!("Group {group} not found.")
                }),
            ),
        });
    }
    out
}

/// ConsumerGroupDescribe (see [`describe_groups`]).
pub async fn describe(
    shard: &Rc<Shard>,
    req: ConsumerGroupDescribeRequest,
    authz: &Authz<'_>,
) -> ConsumerGroupDescribeResponse {
    let topics = Topics::read(shard);
    let groups = describe_groups(
        shard,
        req.group_ids,
        req.include_authorized_operations,
        authz,
        "consumer",
        crate::group::Coordinator::consumer_group,
        |g| described(g, &topics),
    )
    .await;
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
