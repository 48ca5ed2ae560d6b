//! The coordinator's side of share groups: they live next to classic and consumer groups in
//! the same [`Coordinator`] (one namespace of group ids), with the members' share sessions.
//! A share heartbeat for an id that is a classic group with members or committed offsets, or
//! a consumer group, gets GROUP_ID_NOT_FOUND, as in Kafka; the other protocols are refused
//! for a share group's id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::group::{code, Heartbeat, HeartbeatReply, ShareGroup};
use super::Settings;
use crate::group::{Coordinator, GroupDescription};

/// Share-session error codes (Kafka's numbers).
pub mod session_code {
    pub const SHARE_SESSION_NOT_FOUND: i16 = 122;
    pub const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
}

/// Most fenced members whose records wait to be released by the shard ticker (beyond it,
/// their acquisition locks still run out).
const MAX_DEPARTED: usize = 10_000;

/// One member's share session (KIP-932): the partitions it fetches and the epoch its next
/// request must carry.
#[derive(Debug, Clone, Default)]
pub struct ShareSession {
    pub next_epoch: i32,
    pub partitions: BTreeSet<(String, i32)>,
}

/// A share fetch's session step refused: (error code, message).
pub type SessionError = (i16, String);

impl Coordinator {
    /// ShareGroupHeartbeat. `topics`: partition counts of every topic that exists.
    pub fn share_heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        settings: &Settings,
        topics: &BTreeMap<String, i32>,
    ) -> HeartbeatReply {
        let now = Instant::now();
        let mut share = self.share.borrow_mut();
        if !share.contains_key(group) {
            let refused = if self.consumer.borrow().contains_key(group) {
                Some(format!(
                    "Group {group} is not a share group: it is a consumer group."
                ))
            } else {
                let classic = self.groups.borrow();
                let has_offsets = self
                    .offsets
                    .borrow()
                    .get(group)
                    .is_some_and(|m| !m.is_empty());
                match classic.get(group) {
                    Some(g) if !g.is_empty() || has_offsets => Some(format!(
                        "Group {group} is not a share group: it is a classic group."
                    )),
                    _ => None,
                }
            };
            if let Some(message) = refused {
                return HeartbeatReply {
                    error: code::GROUP_ID_NOT_FOUND,
                    message: Some(message),
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    ..HeartbeatReply::default()
                };
            }
            if hb.member_epoch != 0 {
                return HeartbeatReply {
                    error: code::UNKNOWN_MEMBER_ID,
                    message: Some(format!("Group {group} has no member {}.", hb.member_id)),
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    ..HeartbeatReply::default()
                };
            }
            // an empty classic group (no offsets) is only a name: it becomes a share group
            self.groups.borrow_mut().remove(group);
            share.insert(group.to_string(), ShareGroup::new(group));
        }
        let Some(g) = share.get_mut(group) else {
            return HeartbeatReply::default();
        };
        let member = hb.member_id.clone();
        let rejoin = hb.member_epoch == 0 && g.has_member(&member);
        let r = g.heartbeat(hb, now, &settings.group, topics);
        if r.left || rejoin {
            self.share_sessions
                .borrow_mut()
                .remove(&(group.to_string(), member.clone()));
        }
        if rejoin {
            // a rejoining member starts over: what it held is given back
            self.depart(group, &member);
        }
        r
    }

    fn depart(&self, group: &str, member: &str) {
        let mut d = self.share_departed.borrow_mut();
        if d.len() < MAX_DEPARTED {
            d.push((group.to_string(), member.to_string()));
        }
    }

    /// Members fenced since the last call (the shard ticker releases their records).
    pub fn take_departed_share_members(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.share_departed.borrow_mut())
    }

    /// A copy of a share group (ShareGroupDescribe, DescribeGroups, metrics).
    pub fn share_group(&self, group: &str) -> Option<ShareGroup> {
        self.share.borrow().get(group).cloned()
    }

    pub fn is_share_group(&self, group: &str) -> bool {
        self.share.borrow().contains_key(group)
    }

    /// The share-session step of a ShareFetch or ShareAcknowledge from `member` (who must be
    /// in the group, except to close): epoch 0 opens a new session with `add`, -1 closes it,
    /// any other epoch must be the session's
    /// next one and adds `add` and removes `forget`. Answers the session's partitions (on a
    /// close: the ones it had, whose records the member gives back).
    pub fn share_session(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        add: Vec<(String, i32)>,
        forget: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32)>, SessionError> {
        let known = self
            .share
            .borrow()
            .get(group)
            .is_some_and(|g| g.has_member(member));
        let key = (group.to_string(), member.to_string());
        let mut sessions = self.share_sessions.borrow_mut();
        // closing needs no membership: a leaving client closes its sessions and leaves the
        // group concurrently
        if !known && epoch != -1 {
            sessions.remove(&key);
            return Err((
                code::UNKNOWN_MEMBER_ID,
                format!("Member {member} is not a member of share group {group}."),
            ));
        }
        match epoch {
            0 => {
                let s = ShareSession {
                    next_epoch: 1,
                    partitions: add.into_iter().collect(),
                };
                let parts = s.partitions.iter().cloned().collect();
                sessions.insert(key, s);
                Ok(parts)
            }
            -1 => {
                let mut parts: BTreeSet<(String, i32)> = sessions
                    .remove(&key)
                    .map(|s| s.partitions)
                    .unwrap_or_default();
                parts.extend(add);
                Ok(parts.into_iter().collect())
            }
            e => {
                let Some(s) = sessions.get_mut(&key) else {
                    return Err((
                        session_code::SHARE_SESSION_NOT_FOUND,
                        format!("No share session for member {member} of group {group}."),
                    ));
                };
                if e != s.next_epoch {
                    return Err((
                        session_code::INVALID_SHARE_SESSION_EPOCH,
                        format!(
                            "Share session epoch {e} is not the expected {}.",
                            s.next_epoch
                        ),
                    ));
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                for p in forget {
                    s.partitions.remove(&p);
                }
                s.partitions.extend(add);
                Ok(s.partitions.iter().cloned().collect())
            }
        }
    }

    /// Session timeouts of share group members (the coordinator's ticker).
    pub(crate) fn share_tick(&self, now: Instant) {
        let mut gone = Vec::new();
        for g in self.share.borrow_mut().values_mut() {
            for id in g.tick(now) {
                tracing::info!(group = %g.id, member = %id, "share group member fenced: session timeout");
                gone.push((g.id.clone(), id));
            }
        }
        for (g, m) in gone {
            self.share_sessions
                .borrow_mut()
                .remove(&(g.clone(), m.clone()));
            self.depart(&g, &m);
        }
    }

    /// (group id, "share", state, "share") of share groups whose state is wanted.
    pub(crate) fn share_list(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<(String, String, &'static str, &'static str)> {
        self.share
            .borrow()
            .values()
            .filter(|g| wanted(g.state().name()))
            .map(|g| (g.id.clone(), "share".to_string(), g.state().name(), "share"))
            .collect()
    }
}

/// A share group as DescribeGroups shows it: protocol type `share`, the assignor (`simple`)
/// as the protocol, and each member's subscription and assignment in the classic embedded
/// formats, so tools written for classic groups read it.
pub(crate) fn classic_view(g: &ShareGroup) -> GroupDescription {
    use crate::group::consumer::serve::{assignment_bytes, subscription_bytes};
    GroupDescription {
        state: g.state().name(),
        protocol_type: "share".into(),
        protocol: "simple".into(),
        members: g
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    None,
                    m.client_id.clone(),
                    m.client_host.clone(),
                    subscription_bytes(&m.subscribed, &m.assignment, m.epoch, &m.rack_id),
                    assignment_bytes(&m.assignment),
                )
            })
            .collect(),
    }
}
