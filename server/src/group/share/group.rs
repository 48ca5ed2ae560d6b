//! One share group's membership as a state machine with explicit time (tested without
//! sockets): members join, heartbeat and leave with ShareGroupHeartbeat, with member epochs as
//! in KIP-848, but a partition may be assigned to several members at once, so there is nothing
//! to revoke: a member takes its new assignment on its next heartbeat.
//!
//! Assignor: every member is given every partition of the topics it subscribes to (each
//! record still goes to one member at a time: the share-partitions on the owning shards hand
//! out records, not partitions). Kafka's default `simple` assignor spreads partitions when
//! there are more members than partitions; for the small groups sluice serves, everyone
//! fetching from every partition gives the same queue semantics. Describe shows it as
//! `simple`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::group::consumer::assignor::Assignment;

/// Error codes of ShareGroupHeartbeat (Kafka's numbers).
pub mod code {
    pub const NONE: i16 = 0;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
}

/// The member epoch a leaving member sends.
pub const LEAVE_EPOCH: i32 = -1;

/// What one share group runs with (broker `group.share.*` keys and the group's `share.*`
/// overrides).
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// group.share.max.size
    pub max_size: usize,
}

/// A ShareGroupHeartbeat as the state machine sees it. `None`: unchanged since the last one.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed_topics: Option<BTreeSet<String>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent on a join and whenever it changed.
    pub assignment: Option<Assignment>,
    /// The member left (its acquired records must be released).
    pub left: bool,
}

impl HeartbeatReply {
    fn error(code: i16, message: impl Into<String>, hb: &Heartbeat) -> Self {
        HeartbeatReply {
            error: code,
            message: Some(message.into()),
            member_id: hb.member_id.clone(),
            member_epoch: hb.member_epoch,
            ..HeartbeatReply::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    pub assignment: Assignment,
    deadline: Instant,
    /// The assignment the member was last sent.
    sent: Option<Assignment>,
}

/// Kafka's share group states (ListGroups, ShareGroupDescribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShareGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// Partition counts of the subscribed topics the assignment was computed from.
    seen: BTreeMap<String, i32>,
}

/// The assignor: every partition of every subscribed topic that exists.
fn assign(subscribed: &BTreeSet<String>, topics: &BTreeMap<String, i32>) -> Assignment {
    subscribed
        .iter()
        .filter_map(|t| topics.get(t).map(|n| (t.clone(), (0..*n).collect())))
        .collect()
}

impl ShareGroup {
    pub fn new(id: &str) -> Self {
        ShareGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> State {
        if self.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribed.contains(topic))
    }

    /// Whether `member` is in the group (ShareFetch and ShareAcknowledge check it).
    pub fn has_member(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    fn subscribed_counts(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter())
            .filter_map(|t| topics.get(t).map(|n| (t.clone(), *n)))
            .collect()
    }

    /// A new group epoch and every member's assignment at it.
    fn bump(&mut self, topics: &BTreeMap<String, i32>) {
        for m in self.members.values_mut() {
            m.assignment = assign(&m.subscribed, topics);
        }
        self.seen = self.subscribed_counts(topics);
        self.bump_epoch();
    }

    /// A new group epoch without recomputing: a member left, and each member's assignment
    /// depends on its own subscription only.
    fn bump_epoch(&mut self) {
        self.group_epoch += 1;
        self.assignment_epoch = self.group_epoch;
    }

    /// ShareGroupHeartbeat. `topics`: partition counts of every topic that exists.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        settings: &Settings,
        topics: &BTreeMap<String, i32>,
    ) -> HeartbeatReply {
        if hb.member_id.is_empty() {
            return HeartbeatReply::error(code::INVALID_REQUEST, "MemberId can't be empty.", &hb);
        }
        if hb.member_epoch == LEAVE_EPOCH {
            let left = self.members.remove(&hb.member_id).is_some();
            if left {
                self.bump_epoch();
            }
            return HeartbeatReply {
                member_id: hb.member_id,
                member_epoch: LEAVE_EPOCH,
                heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as i32,
                left,
                ..HeartbeatReply::default()
            };
        }
        let mut changed = false;
        if hb.member_epoch == 0 {
            let subscribed = match &hb.subscribed_topics {
                Some(s) if !s.is_empty() => s.clone(),
                _ => {
                    return HeartbeatReply::error(
                        code::INVALID_REQUEST,
                        "SubscribedTopicNames must be set in first request.",
                        &hb,
                    )
                }
            };
            if !self.members.contains_key(&hb.member_id) && self.members.len() >= settings.max_size
            {
                return HeartbeatReply::error(
                    code::GROUP_MAX_SIZE_REACHED,
                    format!(
                        "The share group has reached its maximum capacity of {} members.",
                        settings.max_size
                    ),
                    &hb,
                );
            }
            // a (re)join: a fresh member, whatever it was before
            self.members.insert(
                hb.member_id.clone(),
                Member {
                    id: hb.member_id.clone(),
                    epoch: 0,
                    rack_id: hb.rack_id.clone(),
                    client_id: hb.client_id.clone(),
                    client_host: hb.client_host.clone(),
                    subscribed,
                    assignment: Assignment::new(),
                    deadline: now + settings.session_timeout,
                    sent: None,
                },
            );
            changed = true;
        } else {
            let Some(m) = self.members.get_mut(&hb.member_id) else {
                return HeartbeatReply::error(
                    code::UNKNOWN_MEMBER_ID,
                    format!(
                        "Member {} is not a member of group {}.",
                        hb.member_id, self.id
                    ),
                    &hb,
                );
            };
            if hb.member_epoch != m.epoch {
                return HeartbeatReply::error(
                    code::FENCED_MEMBER_EPOCH,
                    format!(
                        "The share group member has a different epoch ({} here, {} sent).",
                        m.epoch, hb.member_epoch
                    ),
                    &hb,
                );
            }
            if let Some(s) = &hb.subscribed_topics {
                if s.is_empty() {
                    return HeartbeatReply::error(
                        code::INVALID_REQUEST,
                        "SubscribedTopicNames can't be empty.",
                        &hb,
                    );
                }
                if *s != m.subscribed {
                    m.subscribed = s.clone();
                    changed = true;
                }
            }
            if hb.rack_id.is_some() {
                m.rack_id = hb.rack_id.clone();
            }
            m.deadline = now + settings.session_timeout;
        }
        // a subscribed topic created or grown since the last assignment
        if changed || self.subscribed_counts(topics) != self.seen {
            self.bump(topics);
        }
        let epoch = self.group_epoch;
        let Some(m) = self.members.get_mut(&hb.member_id) else {
            return HeartbeatReply::default();
        };
        m.epoch = epoch;
        let assignment = (m.sent.as_ref() != Some(&m.assignment)).then(|| m.assignment.clone());
        if assignment.is_some() {
            m.sent = Some(m.assignment.clone());
        }
        HeartbeatReply {
            error: code::NONE,
            message: None,
            member_id: m.id.clone(),
            member_epoch: epoch,
            heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as i32,
            assignment,
            left: false,
        }
    }

    /// Removes members whose session ended; returns their ids.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.bump_epoch();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(5),
            max_size: 2,
        }
    }

    fn topics() -> BTreeMap<String, i32> {
        BTreeMap::from([("t".to_string(), 2), ("u".to_string(), 1)])
    }

    fn join(id: &str, topics: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            subscribed_topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            ..Heartbeat::default()
        }
    }

    #[test]
    fn every_member_gets_every_subscribed_partition() {
        let t0 = Instant::now();
        let mut g = ShareGroup::new("g");
        let a = g.heartbeat(join("a", &["t"]), t0, &settings(), &topics());
        assert_eq!(a.error, code::NONE);
        assert_eq!(a.member_epoch, 1);
        let want = Assignment::from([("t".to_string(), BTreeSet::from([0, 1]))]);
        assert_eq!(a.assignment, Some(want.clone()));
        let b = g.heartbeat(join("b", &["t", "u"]), t0, &settings(), &topics());
        assert_eq!(b.member_epoch, 2);
        assert_eq!(b.assignment.as_ref().map(|a| a.len()), Some(2));
        // a's assignment did not change: its epoch moves on, no assignment is sent
        let a2 = g.heartbeat(beat("a", 1), t0, &settings(), &topics());
        assert_eq!((a2.error, a2.member_epoch, a2.assignment), (0, 2, None));
        assert_eq!(g.state(), State::Stable);
    }

    #[test]
    fn epochs_fence_and_unknown_members() {
        let t0 = Instant::now();
        let mut g = ShareGroup::new("g");
        g.heartbeat(join("a", &["t"]), t0, &settings(), &topics());
        assert_eq!(
            g.heartbeat(beat("a", 7), t0, &settings(), &topics()).error,
            code::FENCED_MEMBER_EPOCH
        );
        assert_eq!(
            g.heartbeat(beat("x", 1), t0, &settings(), &topics()).error,
            code::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.heartbeat(beat("", 0), t0, &settings(), &topics()).error,
            code::INVALID_REQUEST
        );
        assert_eq!(
            g.heartbeat(beat("b", 0), t0, &settings(), &topics()).error,
            code::INVALID_REQUEST
        );
        g.heartbeat(join("b", &["t"]), t0, &settings(), &topics());
        assert_eq!(
            g.heartbeat(join("c", &["t"]), t0, &settings(), &topics())
                .error,
            code::GROUP_MAX_SIZE_REACHED
        );
    }

    #[test]
    fn leave_and_session_expiry() {
        let t0 = Instant::now();
        let mut g = ShareGroup::new("g");
        g.heartbeat(join("a", &["t"]), t0, &settings(), &topics());
        g.heartbeat(join("b", &["t"]), t0, &settings(), &topics());
        let r = g.heartbeat(beat("a", LEAVE_EPOCH), t0, &settings(), &topics());
        assert!(r.left);
        assert_eq!(r.member_epoch, LEAVE_EPOCH);
        assert!(g.tick(t0 + Duration::from_secs(44)).is_empty());
        assert_eq!(g.tick(t0 + Duration::from_secs(45)), vec!["b".to_string()]);
        assert_eq!(g.state(), State::Empty);
    }

    #[test]
    fn new_partitions_reach_members() {
        let t0 = Instant::now();
        let mut g = ShareGroup::new("g");
        let mut t = topics();
        let r = g.heartbeat(join("a", &["t", "v"]), t0, &settings(), &t);
        assert_eq!(r.assignment.map(|a| a.len()), Some(1));
        t.insert("v".into(), 3);
        let r = g.heartbeat(beat("a", 1), t0, &settings(), &t);
        assert_eq!(r.member_epoch, 2);
        assert_eq!(
            r.assignment.and_then(|a| a.get("v").cloned()),
            Some(BTreeSet::from([0, 1, 2]))
        );
    }
}
