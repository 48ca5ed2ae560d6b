//! The coordinator's side of consumer groups: the groups of the new protocol live next to the
//! classic ones in the same [`Coordinator`] (one namespace of group ids, one set of committed
//! offsets), and a group id is one kind or the other. An *empty* group changes kind when a
//! member of the other protocol arrives, as `group.consumer.migration.policy` allows; a group
//! with members keeps its protocol (the other kind's join is refused).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{consumer_protocol_assignment, consumer_protocol_subscription};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::assignor::Assignment;
use super::group::{code, ConsumerGroup, Fenced, Heartbeat, HeartbeatReply, Settings};
use crate::group::configs::MigrationPolicy;
use crate::group::state::err;
use crate::group::{Coordinator, GroupDescription};

impl Coordinator {
    /// ConsumerGroupHeartbeat. `topics`: partition counts of every topic that exists.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        settings: &Settings,
        topics: &BTreeMap<String, i32>,
    ) -> HeartbeatReply {
        let now = Instant::now();
        let mut consumer = self.consumer.borrow_mut();
        if !consumer.contains_key(group) && self.share.borrow().contains_key(group) {
            return HeartbeatReply {
                error: err::GROUP_ID_NOT_FOUND,
                message: Some(format!(
                    "Group {group} is not a consumer group: it is a share group."
                )),
                member_id: hb.member_id,
                member_epoch: hb.member_epoch,
                ..HeartbeatReply::default()
            };
        }
        if !consumer.contains_key(group) {
            if hb.member_epoch != 0 {
                return HeartbeatReply {
                    error: code::UNKNOWN_MEMBER_ID,
                    message: Some(format!("Group {group} has no member {}.", hb.member_id)),
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    ..HeartbeatReply::default()
                };
            }
            let mut classic = self.groups.borrow_mut();
            if let Some(g) = classic.get(group) {
                let refused = if !g.is_empty() {
                    Some(format!("Group {group} is not a consumer group: it is a classic group with members, and sluice converts empty groups only."))
                } else if !self.cfg.consumer.migration.upgrades() {
                    Some(format!("Group {group} is an empty classic group and group.consumer.migration.policy={} does not allow converting it.", policy_name(self.cfg.consumer.migration)))
                } else {
                    None
                };
                if let Some(message) = refused {
                    return HeartbeatReply {
                        error: err::GROUP_ID_NOT_FOUND,
                        message: Some(message),
                        member_id: hb.member_id,
                        member_epoch: hb.member_epoch,
                        ..HeartbeatReply::default()
                    };
                }
                classic.remove(group);
                tracing::info!(group, "empty classic group converted to a consumer group");
            }
            consumer.insert(group.to_string(), ConsumerGroup::new(group, settings));
        }
        let Some(g) = consumer.get_mut(group) else {
            return HeartbeatReply::default();
        };
        let before = g.group_epoch;
        let r = g.heartbeat(hb, now, settings, topics);
        if g.group_epoch != before {
            tracing::debug!(
                group,
                epoch = g.group_epoch,
                members = g.members.len(),
                "consumer group epoch bumped"
            );
        }
        r
    }

    /// A copy of a consumer group for ConsumerGroupDescribe, DescribeGroups and metrics.
    pub fn consumer_group(&self, group: &str) -> Option<ConsumerGroup> {
        self.consumer.borrow().get(group).cloned()
    }

    /// Whether `group` is a consumer group of the new protocol.
    pub fn is_consumer_group(&self, group: &str) -> bool {
        self.consumer.borrow().contains_key(group)
    }

    /// The commit check of a consumer group (`None`: `group` is not one).
    pub(crate) fn consumer_validate_offsets(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        partitions: &[(String, i32)],
    ) -> Option<i16> {
        self.consumer
            .borrow()
            .get(group)
            .map(|g| g.validate_offsets(member_id, epoch, partitions))
    }

    /// A JoinGroup of the classic protocol for `group`: NONE when the id is free for a classic
    /// group (an empty consumer group is converted when the policy allows),
    /// INCONSISTENT_GROUP_PROTOCOL while it is a consumer group.
    pub(crate) fn classic_join_allowed(&self, group: &str) -> i16 {
        if self.share.borrow().contains_key(group) {
            return err::INCONSISTENT_GROUP_PROTOCOL;
        }
        let mut consumer = self.consumer.borrow_mut();
        match consumer.get(group) {
            None => err::NONE,
            Some(g) if g.is_empty() && self.cfg.consumer.migration.downgrades() => {
                consumer.remove(group);
                tracing::info!(group, "empty consumer group converted to a classic group");
                err::NONE
            }
            Some(_) => err::INCONSISTENT_GROUP_PROTOCOL,
        }
    }

    /// Session and revocation timeouts of consumer groups (the coordinator's ticker).
    pub(crate) fn consumer_tick(&self, now: Instant) {
        for g in self.consumer.borrow_mut().values_mut() {
            for (id, why) in g.tick(now) {
                match why {
                    Fenced::SessionExpired => {
                        tracing::info!(group = %g.id, member = %id, "member session expired")
                    }
                    Fenced::RevocationTimedOut => tracing::info!(
                        group = %g.id,
                        member = %id,
                        "member fenced: it did not revoke within its rebalance timeout"
                    ),
                }
            }
        }
    }
}

fn policy_name(p: MigrationPolicy) -> &'static str {
    match p {
        MigrationPolicy::Disabled => "disabled",
        MigrationPolicy::Upgrade => "upgrade",
        MigrationPolicy::Downgrade => "downgrade",
        MigrationPolicy::Bidirectional => "bidirectional",
    }
}

/// A version-prefixed embedded protocol message (what classic members put in JoinGroup
/// metadata and SyncGroup assignments).
fn versioned(version: i16, m: &impl Encodable) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(version);
    if m.encode(&mut b, version).is_err() {
        return Bytes::new();
    }
    b.freeze()
}

fn topic_partitions<T>(a: &Assignment, make: impl Fn(String, Vec<i32>) -> T) -> Vec<T> {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| make(t.clone(), ps.iter().copied().collect()))
        .collect()
}

/// A member's subscription in the classic embedded format (ConsumerProtocolSubscription v3).
pub(crate) fn subscription_bytes(
    subscribed: &std::collections::BTreeSet<String>,
    owned: &Assignment,
    generation: i32,
    rack_id: &Option<String>,
) -> Bytes {
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(
            subscribed
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(topic_partitions(owned, |t, ps| {
            consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(t)))
                .with_partitions(ps)
        }))
        .with_generation_id(generation)
        .with_rack_id(rack_id.clone().map(StrBytes::from_string));
    versioned(3, &sub)
}

/// An assignment in the classic embedded format (ConsumerProtocolAssignment v3).
pub(crate) fn assignment_bytes(a: &Assignment) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topic_partitions(a, |t, ps| {
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(t)))
                .with_partitions(ps)
        }),
    );
    versioned(3, &assignment)
}

/// A consumer group as DescribeGroups shows it, as Kafka does: protocol type `consumer`, the
/// assignor as the protocol, and each member's subscription and current assignment in the
/// classic embedded formats, so tools written for classic groups read both kinds.
pub(crate) fn classic_view(g: &ConsumerGroup) -> GroupDescription {
    GroupDescription {
        state: g.state().name(),
        protocol_type: "consumer".into(),
        protocol: g.assignor.name().into(),
        members: g
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    subscription_bytes(&m.subscribed, &m.rec.assigned, m.rec.epoch, &m.rack_id),
                    assignment_bytes(&m.rec.assigned),
                )
            })
            .collect(),
    }
}
