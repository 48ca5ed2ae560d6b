//! The KIP-932 group APIs: ShareGroupHeartbeat and ShareGroupDescribe.
//!
//! Data path: request -> topic names and the group's settings read here (the catalog and the
//! group configs are broker-wide) -> the shard coordinating the group (`group::share::serve`,
//! the same coordinator as classic and consumer groups) -> the group's state machine
//! (`group::share::group`) -> reply, assignment names mapped back to topic ids. A member that
//! leaves has its acquired records released on every shard before the answer.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::share_group_describe_response::{self as describe, DescribedGroup};
use kafka_protocol::messages::share_group_heartbeat_response as hb_resp;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::authorize::TOPIC_AUTHORIZATION_FAILED;
use super::consumer_groups::{describe_groups, DescribedEntry, Topics};
use super::groups::on_coordinator;
use crate::group::consumer::assignor::Assignment;
use crate::group::share::group::{code, Heartbeat, ShareGroup};
use crate::group::state::err;
use crate::security::acl::op;
use crate::security::Authz;
use crate::shard::Shard;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn failed(code: i16, message: &str) -> ShareGroupHeartbeatResponse {
    ShareGroupHeartbeatResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
        .with_member_epoch(-1)
}

/// The settings `group` runs with: broker `group.share.*` keys and its `share.*` overrides.
pub(super) fn settings(shard: &Shard, group: &str) -> crate::group::share::Settings {
    let overrides = super::group_configs::overrides(&shard.shared, group);
    shard.shared.config.share_group.settings(&overrides)
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    req: ShareGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
    authz: &Authz<'_>,
) -> ShareGroupHeartbeatResponse {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return failed(code::INVALID_REQUEST, "GroupId can't be empty.");
    }
    if req.member_id.is_empty() {
        return failed(code::INVALID_REQUEST, "MemberId can't be empty.");
    }
    if let Some(names) = &req.subscribed_topic_names {
        if names.iter().any(|t| !authz.topic(op::DESCRIBE, t.as_str())) {
            return failed(TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed.");
        }
    }
    let topics = Topics::read(shard);
    let member = req.member_id.to_string();
    let hb = Heartbeat {
        member_id: member.clone(),
        member_epoch: req.member_epoch,
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        subscribed_topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>()),
        client_id,
        client_host,
    };
    let settings = settings(shard, &group);
    let counts = topics.counts.clone();
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move {
        c.share_heartbeat(&g, hb, &settings, &counts)
    })
    .await;
    let Some(r) = r else {
        return failed(
            err::COORDINATOR_NOT_AVAILABLE,
            "The coordinator is not available.",
        );
    };
    if r.error != code::NONE {
        tracing::debug!(group, member = %r.member_id, code = r.error, message = ?r.message, "share group heartbeat refused");
    }
    if r.left {
        crate::group::share::owner::release_everywhere(shard, &group, &member).await;
    }
    ShareGroupHeartbeatResponse::default()
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

fn described(g: &ShareGroup, topics: &Topics) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_state(s(g.state().name()))
        .with_group_epoch(g.group_epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(s("simple"))
        .with_members(
            g.members
                .values()
                .map(|m| {
                    describe::Member::default()
                        .with_member_id(s(m.id.clone()))
                        .with_rack_id(m.rack_id.clone().map(s))
                        .with_member_epoch(m.epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|t| TopicName(s(t.clone())))
                                .collect(),
                        )
                        .with_assignment(described_assignment(&m.assignment, topics))
                })
                .collect(),
        )
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

/// ShareGroupDescribe (see [`describe_groups`]).
pub async fn describe(
    shard: &Rc<Shard>,
    req: ShareGroupDescribeRequest,
    authz: &Authz<'_>,
) -> ShareGroupDescribeResponse {
    let topics = Topics::read(shard);
    let groups = describe_groups(
        shard,
        req.group_ids,
        req.include_authorized_operations,
        authz,
        "share",
        crate::group::Coordinator::share_group,
        |g| described(g, &topics),
    )
    .await;
    ShareGroupDescribeResponse::default().with_groups(groups)
}
