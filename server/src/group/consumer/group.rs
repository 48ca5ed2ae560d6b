//! One KIP-848 consumer group as a state machine with explicit time (tested without sockets):
//! members join, heartbeat and leave with ConsumerGroupHeartbeat, and the coordinator drives
//! everything else.
//!
//! Epochs, as in Kafka's GroupMetadataManager: the *group epoch* is bumped by every change
//! that can change the assignment (a member joins, leaves or is fenced, a subscription or the
//! assignor preference changes, a subscribed topic is created or grows partitions); the
//! *assignment epoch* catches up when [`super::assignor`] recomputes the target assignment at
//! the group epoch; each member's *member epoch* reaches the assignment epoch through
//! [`super::reconcile`] on its own heartbeats, revoking before it is given anything another
//! member still holds. A heartbeat whose epoch is neither the member's epoch nor (with owned
//! partitions it really has) its previous one is fenced (FENCED_MEMBER_EPOCH): the client drops
//! its partitions and rejoins with epoch 0.
//!
//! Static members (`group.instance.id`) leave with epoch -2 and keep their assignment for the
//! session timeout; a member rejoining with the same instance id takes it over without a
//! rebalance. Sessions expire after `consumer.session.timeout.ms` without a heartbeat; a member
//! that does not revoke within its rebalance timeout is fenced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{Assignment, Assignor, MemberSpec};
use super::reconcile::{MemberState, Reconciliation};

/// Error codes of ConsumerGroupHeartbeat and the commit checks (Kafka's numbers): the group
/// layer's, and those KIP-848 added.
pub mod code {
    pub use crate::api::codes::INVALID_REQUEST;
    pub use crate::group::state::err::{
        FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, NONE, UNKNOWN_MEMBER_ID,
    };
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
}

/// The member epoch a leaving member sends.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member sends when it leaves for a while (keeps its assignment).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The coordinator's settings for one group (broker `group.consumer.*` keys, with the group's
/// own `consumer.*` overrides).
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// group.consumer.max.size
    pub max_size: usize,
    /// group.consumer.assignors: the first is the default.
    pub assignors: Vec<Assignor>,
}

/// A ConsumerGroupHeartbeat as the state machine sees it (topic ids already resolved to
/// names). `None` fields were not sent: unchanged since the last heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged
    pub rebalance_timeout_ms: i32,
    pub subscribed_topics: Option<BTreeSet<String>>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns now.
    pub owned: Option<Assignment>,
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
    /// Sent when it changed, or when the client may not know it (a join, an older epoch).
    pub assignment: Option<Assignment>,
}

impl HeartbeatReply {
    fn error(code: i16, message: impl Into<String>, member_id: &str, epoch: i32) -> Self {
        HeartbeatReply {
            error: code,
            message: Some(message.into()),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            ..HeartbeatReply::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    pub regex: Option<String>,
    compiled: Option<regex::Regex>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout: Duration,
    pub session_timeout: Duration,
    pub rec: Reconciliation,
    pub previous_epoch: i32,
    deadline: Instant,
    revoke_deadline: Option<Instant>,
    /// (epoch, assignment) of the last response that carried an assignment.
    sent: Option<(i32, Assignment)>,
    /// A static member that left with epoch -2: keeps its partitions until its session ends.
    pub away: bool,
}

impl Member {
    /// Topics this member subscribes to among `topics` (names, and regex matches that are not
    /// internal topics).
    fn subscription(&self, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .subscribed
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(re) = &self.compiled {
            out.extend(
                topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned(),
            );
        }
        out
    }
}

/// Why the coordinator removed a member on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// No heartbeat within the session timeout.
    SessionExpired,
    /// Partitions not revoked within the member's rebalance timeout.
    RevocationTimedOut,
}

/// Kafka's consumer group states (ConsumerGroupDescribe, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::Assigning => "Assigning",
            State::Reconciling => "Reconciling",
            State::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// The target assignment at `assignment_epoch`, by member id.
    pub target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics the last target was computed from.
    seen: BTreeMap<String, i32>,
    /// A change waits for its group epoch bump.
    dirty: bool,
    pub assignor: Assignor,
}

/// Anchors a subscription regex: Kafka matches the whole topic name.
fn compile(regex: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{regex})$")).map_err(|e| e.to_string())
}

fn subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|q| ps.is_subset(q)))
}

fn normalized(a: &Assignment) -> Assignment {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (t.clone(), ps.clone()))
        .collect()
}

impl ConsumerGroup {
    pub fn new(id: &str, settings: &Settings) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            seen: BTreeMap::new(),
            dirty: false,
            assignor: settings
                .assignors
                .first()
                .copied()
                .unwrap_or(Assignor::Uniform),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn state(&self) -> State {
        if self.members.is_empty() {
            State::Empty
        } else if self.group_epoch > self.assignment_epoch {
            State::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.rec.epoch != self.assignment_epoch || m.rec.state != MemberState::Stable)
        {
            State::Reconciling
        } else {
            State::Stable
        }
    }

    /// Every topic some member subscribes to (names as sent, and regex matches among `topics`).
    pub fn subscribed_topics(&self, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in self.members.values() {
            out.extend(m.subscribed.iter().cloned());
            out.extend(m.subscription(topics));
        }
        out
    }

    /// Marks the group epoch for a bump; several changes in one step make one bump.
    /// Whether a member subscribes to `topic` (by name or regex): OffsetDelete refuses it.
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| {
            m.subscribed.contains(topic) || m.compiled.as_ref().is_some_and(|re| re.is_match(topic))
        })
    }

    fn bump(&mut self) {
        self.dirty = true;
    }

    fn settle_epoch(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.group_epoch += 1;
        }
    }

    fn remove(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        self.target.remove(member_id);
        self.bump();
        Some(m)
    }

    /// Handles one heartbeat. `topics`: partition counts of every topic that exists.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        settings: &Settings,
        topics: &BTreeMap<String, i32>,
    ) -> HeartbeatReply {
        if let Some(name) = &hb.server_assignor {
            if Assignor::by_name(name).is_none_or(|a| !settings.assignors.contains(&a)) {
                return HeartbeatReply::error(
                    code::UNSUPPORTED_ASSIGNOR,
                    format!(
                        "ServerAssignor {name} is not supported. Supported assignors: {}.",
                        names(&settings.assignors)
                    ),
                    &hb.member_id,
                    hb.member_epoch,
                );
            }
        }
        let compiled = match hb.subscribed_regex.as_deref() {
            Some(re) if !re.is_empty() => match compile(re) {
                Ok(c) => Some(Some(c)),
                Err(e) => {
                    return HeartbeatReply::error(
                        code::INVALID_REGULAR_EXPRESSION,
                        format!(
                            "SubscribedTopicRegex `{re}` is not a valid regular expression: {e}"
                        ),
                        &hb.member_id,
                        hb.member_epoch,
                    )
                }
            },
            Some(_) => Some(None),
            None => None,
        };
        let full = hb.member_epoch == 0;
        let id = match hb.member_epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => return self.leave(&hb, now),
            0 => match self.join(&hb, now, settings) {
                Ok(id) => id,
                Err(reply) => return reply,
            },
            e if e > 0 => match self.check_known(&hb) {
                Ok(id) => id,
                Err(reply) => return reply,
            },
            e => {
                return HeartbeatReply::error(
                    code::INVALID_REQUEST,
                    format!("MemberEpoch {e} is not valid."),
                    &hb.member_id,
                    e,
                )
            }
        };
        let mut changed = false;
        if let Some(m) = self.members.get_mut(&id) {
            m.deadline = now + settings.session_timeout;
            m.session_timeout = settings.session_timeout;
            if hb.rebalance_timeout_ms >= 0 {
                m.rebalance_timeout = Duration::from_millis(hb.rebalance_timeout_ms as u64);
            }
            if hb.rack_id.is_some() {
                m.rack_id = hb.rack_id.clone();
            }
            if let Some(names) = &hb.subscribed_topics {
                if *names != m.subscribed {
                    m.subscribed = names.clone();
                    changed = true;
                }
            }
            if let (Some(re), Some(c)) = (&hb.subscribed_regex, compiled) {
                let re = (!re.is_empty()).then(|| re.clone());
                if re != m.regex {
                    m.regex = re;
                    m.compiled = c;
                    changed = true;
                }
            }
            if hb.server_assignor.is_some() && hb.server_assignor != m.server_assignor {
                m.server_assignor = hb.server_assignor.clone();
                changed = true;
            }
        }
        if changed {
            self.bump();
        }
        self.refresh(topics, settings);
        self.reconcile(&id, hb.owned.as_ref(), now);
        let Some(m) = self.members.get_mut(&id) else {
            return HeartbeatReply::error(code::UNKNOWN_MEMBER_ID, "member left", &id, -1);
        };
        let current = (m.rec.epoch, normalized(&m.rec.assigned));
        let behind = hb.member_epoch != m.rec.epoch
            || hb
                .owned
                .as_ref()
                .is_some_and(|o| normalized(o) != current.1);
        let assignment = if full || behind || m.sent.as_ref() != Some(&current) {
            m.sent = Some(current.clone());
            Some(current.1)
        } else {
            None
        };
        HeartbeatReply {
            error: code::NONE,
            message: None,
            member_id: id,
            member_epoch: m.rec.epoch,
            heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as i32,
            assignment,
        }
    }

    /// Epoch 0: a new member, a member rejoining after it was fenced, or a static member coming
    /// back (it takes over its old assignment).
    fn join(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        settings: &Settings,
    ) -> Result<String, HeartbeatReply> {
        let fail = |c: i16, msg: String| HeartbeatReply::error(c, msg, &hb.member_id, 0);
        if hb.subscribed_topics.is_none() && hb.subscribed_regex.is_none() {
            return Err(fail(
                code::INVALID_REQUEST,
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.".into(),
            ));
        }
        let id = if hb.member_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            hb.member_id.clone()
        };
        let mut inherited: Option<Member> = None;
        if let Some(iid) = &hb.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(iid.as_str()))
                .map(|m| (m.id.clone(), m.away));
            match holder {
                Some((old, true)) => {
                    // a static member coming back: no rebalance, it keeps what it had
                    let m = self.members.remove(&old);
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(id.clone(), t);
                    }
                    inherited = m;
                }
                Some((old, false)) if old != id => {
                    return Err(fail(
                        code::UNRELEASED_INSTANCE_ID,
                        format!("Static member {old} with instance id {iid} is not released yet."),
                    ))
                }
                _ => {}
            }
        }
        if inherited.is_none() && self.members.contains_key(&id) {
            // the same member rejoining (after a fence): it dropped what it had
            self.remove(&id);
        }
        if inherited.is_none() && self.members.len() >= settings.max_size {
            return Err(fail(
                code::GROUP_MAX_SIZE_REACHED,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    settings.max_size
                ),
            ));
        }
        let member = match inherited {
            Some(mut m) => {
                m.id = id.clone();
                m.away = false;
                m.client_id = hb.client_id.clone();
                m.client_host = hb.client_host.clone();
                m.sent = None;
                m
            }
            None => {
                self.bump();
                Member {
                    id: id.clone(),
                    instance_id: hb.instance_id.clone(),
                    rack_id: hb.rack_id.clone(),
                    client_id: hb.client_id.clone(),
                    client_host: hb.client_host.clone(),
                    subscribed: BTreeSet::new(),
                    regex: None,
                    compiled: None,
                    server_assignor: None,
                    rebalance_timeout: Duration::from_millis(hb.rebalance_timeout_ms.max(0) as u64),
                    session_timeout: settings.session_timeout,
                    rec: Reconciliation::joined(),
                    previous_epoch: 0,
                    deadline: now + settings.session_timeout,
                    revoke_deadline: None,
                    sent: None,
                    away: false,
                }
            }
        };
        self.members.insert(id.clone(), member);
        Ok(id)
    }

    fn check_known(&self, hb: &Heartbeat) -> Result<String, HeartbeatReply> {
        let e = hb.member_epoch;
        let Some(m) = self.members.get(&hb.member_id).filter(|m| !m.away) else {
            return Err(HeartbeatReply::error(
                code::UNKNOWN_MEMBER_ID,
                format!(
                    "Member {} is not a member of group {}.",
                    hb.member_id, self.id
                ),
                &hb.member_id,
                e,
            ));
        };
        if hb.instance_id.is_some() && hb.instance_id != m.instance_id {
            return Err(HeartbeatReply::error(
                code::FENCED_INSTANCE_ID,
                "The instance id does not match the member's.",
                &hb.member_id,
                e,
            ));
        }
        let previous_ok = e == m.previous_epoch
            && hb
                .owned
                .as_ref()
                .is_some_and(|o| subset(o, &m.rec.assigned));
        if e != m.rec.epoch && !previous_ok {
            return Err(HeartbeatReply::error(
                code::FENCED_MEMBER_EPOCH,
                format!("The consumer group member has a smaller member epoch ({e}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.", m.rec.epoch),
                &hb.member_id,
                e,
            ));
        }
        Ok(m.id.clone())
    }

    fn leave(&mut self, hb: &Heartbeat, now: Instant) -> HeartbeatReply {
        let found = match &hb.instance_id {
            Some(iid) => self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(iid.as_str()))
                .map(|m| m.id.clone()),
            None => self
                .members
                .contains_key(&hb.member_id)
                .then(|| hb.member_id.clone()),
        };
        let Some(id) = found else {
            return HeartbeatReply::error(
                code::UNKNOWN_MEMBER_ID,
                format!(
                    "Member {} is not a member of group {}.",
                    hb.member_id, self.id
                ),
                &hb.member_id,
                hb.member_epoch,
            );
        };
        if hb.member_epoch == STATIC_LEAVE_EPOCH && hb.instance_id.is_some() {
            if let Some(m) = self.members.get_mut(&id) {
                m.away = true;
                m.deadline = now + m.session_timeout;
            }
        } else {
            self.remove(&id);
            self.settle_epoch();
        }
        HeartbeatReply {
            member_id: id,
            member_epoch: hb.member_epoch,
            ..HeartbeatReply::default()
        }
    }

    /// Bumps the group epoch if a subscribed topic appeared, vanished or grew, then recomputes
    /// the target assignment if it trails the group epoch.
    fn refresh(&mut self, topics: &BTreeMap<String, i32>, settings: &Settings) {
        let wanted: BTreeMap<String, i32> = self
            .subscribed_topics(topics)
            .into_iter()
            .filter_map(|t| topics.get(&t).map(|n| (t, *n)))
            .collect();
        if wanted != self.seen {
            self.seen = wanted;
            self.bump();
        }
        self.settle_epoch();
        if self.group_epoch <= self.assignment_epoch {
            return;
        }
        self.assignor = self.preferred(settings);
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| {
                let spec = MemberSpec {
                    subscribed: m.subscription(topics),
                    current: self.target.get(id).cloned().unwrap_or_default(),
                };
                (id.clone(), spec)
            })
            .collect();
        self.target = self.assignor.assign(&specs, &self.seen);
        self.assignment_epoch = self.group_epoch;
    }

    /// The assignor most members ask for (ties and no preference: the broker's default).
    fn preferred(&self, settings: &Settings) -> Assignor {
        let default = settings
            .assignors
            .first()
            .copied()
            .unwrap_or(Assignor::Uniform);
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        let leaders: Vec<Assignor> = votes
            .iter()
            .filter(|(_, n)| **n == best)
            .filter_map(|(a, _)| Assignor::by_name(a))
            .collect();
        if leaders.contains(&default) || leaders.is_empty() {
            default
        } else {
            leaders[0]
        }
    }

    /// Moves `id` towards its target (see [`Reconciliation::advance`]).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let held: BTreeSet<(String, i32)> = self
            .members
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .flat_map(|(_, m)| {
                m.rec
                    .assigned
                    .iter()
                    .chain(m.rec.revoking.iter())
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            })
            .collect();
        let target = self.target.get(id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        let before = m.rec.epoch;
        m.rec.advance(epoch, &target, owned, |t, p| {
            held.contains(&(t.to_string(), p))
        });
        if m.rec.epoch != before {
            m.previous_epoch = before;
        }
        if m.rec.state == MemberState::UnrevokedPartitions {
            m.revoke_deadline.get_or_insert(now + m.rebalance_timeout);
        } else {
            m.revoke_deadline = None;
        }
    }

    /// Fences members whose session ended or that did not revoke within their rebalance
    /// timeout; returns their ids, each with why.
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Fenced)> {
        let gone: Vec<(String, Fenced)> = self
            .members
            .values()
            .filter_map(|m| {
                if m.deadline <= now {
                    Some((m.id.clone(), Fenced::SessionExpired))
                } else if m.revoke_deadline.is_some_and(|d| d <= now) {
                    Some((m.id.clone(), Fenced::RevocationTimedOut))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &gone {
            self.remove(id);
        }
        self.settle_epoch();
        gone
    }

    /// OffsetCommit / OffsetFetch from a member: NONE, UNKNOWN_MEMBER_ID or STALE_MEMBER_EPOCH.
    /// An empty member id with a negative epoch (an admin commit) is allowed only while the
    /// group is empty.
    ///
    /// The member's current epoch is always valid. Its previous epoch is too, for partitions
    /// it still holds (`partitions`, all of them): a commit sent just before the heartbeat
    /// answer that moved the member on arrives with the old epoch, and since nobody else can
    /// own a partition the member has not released, it is safe (Kafka 4.0 refuses it and
    /// librdkafka hands STALE_MEMBER_EPOCH to the application; KIP-1251 relaxes it alike).
    pub fn validate_offsets(
        &self,
        member_id: &str,
        epoch: i32,
        partitions: &[(String, i32)],
    ) -> i16 {
        if member_id.is_empty() && epoch < 0 {
            return if self.members.is_empty() {
                code::NONE
            } else {
                code::UNKNOWN_MEMBER_ID
            };
        }
        match self.members.get(member_id) {
            None => code::UNKNOWN_MEMBER_ID,
            Some(m) if m.rec.epoch == epoch => code::NONE,
            Some(m)
                if epoch > 0
                    && epoch == m.previous_epoch
                    && partitions.iter().all(|(t, p)| m.rec.holds(t, *p)) =>
            {
                code::NONE
            }
            Some(_) => code::STALE_MEMBER_EPOCH,
        }
    }
}

fn names(list: &[Assignor]) -> String {
    list.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(5),
            max_size: 10,
            assignors: vec![Assignor::Uniform, Assignor::Range],
        }
    }

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn join(id: &str, subscribed: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topics: Some(subscribed.iter().map(|s| s.to_string()).collect()),
            owned: Some(Assignment::new()),
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Assignment) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            ..Heartbeat::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// Runs heartbeats of every member (each reporting what it was last given) until the
    /// group is stable; returns each member's (epoch, assignment).
    fn settle(
        g: &mut ConsumerGroup,
        owned: &mut BTreeMap<String, (i32, Assignment)>,
        now: Instant,
        t: &BTreeMap<String, i32>,
    ) {
        for _ in 0..10 {
            let ids: Vec<String> = owned.keys().cloned().collect();
            for id in ids {
                let (e, a) = owned[&id].clone();
                let r = g.heartbeat(beat(&id, e, &a), now, &settings(), t);
                assert_eq!(r.error, code::NONE, "{id}: {r:?}");
                let a = r.assignment.unwrap_or(a);
                owned.insert(id, (r.member_epoch, a));
            }
            if g.state() == State::Stable {
                return;
            }
        }
        panic!("group did not settle: {:?}", g.state());
    }

    #[test]
    fn members_join_reconcile_and_leave() {
        let now = Instant::now();
        let t = topics(&[("a", 4)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let r = g.heartbeat(join("m1", &["a"]), now, &settings(), &t);
        assert_eq!(r.error, code::NONE);
        assert_eq!(
            r.member_epoch, 1,
            "one bump for the join, its subscription and the metadata"
        );
        assert_eq!(count(r.assignment.as_ref().expect("assignment")), 4);
        let mut owned =
            BTreeMap::from([("m1".to_string(), (r.member_epoch, r.assignment.expect("a")))]);
        assert_eq!(g.state(), State::Stable);

        // a second member: m1 must give up two partitions before m2 gets them
        let r = g.heartbeat(join("m2", &["a"]), now, &settings(), &t);
        assert_eq!(r.error, code::NONE);
        assert_eq!(
            count(r.assignment.as_ref().expect("a")),
            0,
            "m1 still holds them"
        );
        owned.insert("m2".into(), (r.member_epoch, r.assignment.expect("a")));
        assert_eq!(g.state(), State::Reconciling);
        settle(&mut g, &mut owned, now, &t);
        assert_eq!(count(&owned["m1"].1), 2);
        assert_eq!(count(&owned["m2"].1), 2);
        assert_eq!(owned["m1"].0, owned["m2"].0);

        // m1 leaves: m2 gets everything
        let mut leave = beat("m1", LEAVE_EPOCH, &owned["m1"].1);
        leave.owned = None;
        let r = g.heartbeat(leave, now, &settings(), &t);
        assert_eq!((r.error, r.member_epoch), (code::NONE, LEAVE_EPOCH));
        owned.remove("m1");
        settle(&mut g, &mut owned, now, &t);
        assert_eq!(count(&owned["m2"].1), 4);
    }

    #[test]
    fn stale_epochs_are_fenced_and_unknown_members_refused() {
        let now = Instant::now();
        let t = topics(&[("a", 2)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let r = g.heartbeat(join("m1", &["a"]), now, &settings(), &t);
        let a = r.assignment.expect("a");
        let r2 = g.heartbeat(beat("m1", r.member_epoch + 5, &a), now, &settings(), &t);
        assert_eq!(r2.error, code::FENCED_MEMBER_EPOCH);
        let r3 = g.heartbeat(beat("nobody", 3, &a), now, &settings(), &t);
        assert_eq!(r3.error, code::UNKNOWN_MEMBER_ID);
        let mine: Vec<(String, i32)> = vec![("a".into(), 0)];
        assert_eq!(g.validate_offsets("m1", r.member_epoch, &mine), code::NONE);
        assert_eq!(
            g.validate_offsets("m1", r.member_epoch - 1, &mine),
            code::STALE_MEMBER_EPOCH,
            "epoch 0 was never this member's epoch with partitions"
        );
        assert_eq!(
            g.validate_offsets("m1", r.member_epoch + 1, &mine),
            code::STALE_MEMBER_EPOCH
        );
        assert_eq!(
            g.validate_offsets("", -1, &[]),
            code::UNKNOWN_MEMBER_ID,
            "group not empty"
        );
        // the member heartbeating again at its epoch is fine
        let r4 = g.heartbeat(beat("m1", r.member_epoch, &a), now, &settings(), &t);
        assert_eq!(r4.error, code::NONE);
        assert!(
            r4.assignment.is_none(),
            "unchanged assignment is not resent"
        );
    }

    #[test]
    fn the_previous_epoch_may_commit_partitions_still_held() {
        let now = Instant::now();
        let t = topics(&[("a", 2)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let r = g.heartbeat(join("m1", &["a"]), now, &settings(), &t);
        let (e1, a1) = (r.member_epoch, r.assignment.expect("a"));
        g.heartbeat(join("m2", &["a"]), now, &settings(), &t);
        // m1 is told to revoke one partition, confirms, and moves to the new epoch
        let r = g.heartbeat(beat("m1", e1, &a1), now, &settings(), &t);
        let kept = r.assignment.expect("a");
        let r = g.heartbeat(beat("m1", e1, &kept), now, &settings(), &t);
        let e2 = r.member_epoch;
        assert!(e2 > e1);
        let p_kept = *kept["a"].iter().next().expect("one kept");
        let p_gone = 1 - p_kept;
        assert_eq!(
            g.validate_offsets("m1", e1, &[("a".into(), p_kept)]),
            code::NONE
        );
        assert_eq!(
            g.validate_offsets("m1", e1, &[("a".into(), p_gone)]),
            code::STALE_MEMBER_EPOCH,
            "released: another member may own it"
        );
        assert_eq!(
            g.validate_offsets("m1", e2, &[("a".into(), p_kept)]),
            code::NONE
        );
    }

    #[test]
    fn sessions_expire_and_partitions_move() {
        let now = Instant::now();
        let t = topics(&[("a", 2)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let mut owned = BTreeMap::new();
        for id in ["m1", "m2"] {
            let r = g.heartbeat(join(id, &["a"]), now, &settings(), &t);
            owned.insert(id.to_string(), (r.member_epoch, r.assignment.expect("a")));
        }
        settle(&mut g, &mut owned, now, &t);
        let later = now + Duration::from_secs(30);
        let (e, a) = owned["m2"].clone();
        g.heartbeat(beat("m2", e, &a), later, &settings(), &t);
        let gone = g.tick(now + Duration::from_secs(46));
        assert_eq!(gone, vec![("m1".to_string(), Fenced::SessionExpired)]);
        owned.remove("m1");
        settle(&mut g, &mut owned, later, &t);
        assert_eq!(count(&owned["m2"].1), 2);
    }

    #[test]
    fn static_members_come_back_without_a_rebalance() {
        let now = Instant::now();
        let t = topics(&[("a", 2)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let mut hb = join("m1", &["a"]);
        hb.instance_id = Some("i1".into());
        let r = g.heartbeat(hb.clone(), now, &settings(), &t);
        let epoch = r.member_epoch;
        let mut away = beat("m1", STATIC_LEAVE_EPOCH, &Assignment::new());
        away.instance_id = Some("i1".into());
        assert_eq!(
            g.heartbeat(away, now, &settings(), &t).member_epoch,
            STATIC_LEAVE_EPOCH
        );
        // another member may not take the instance id while it is held... but a rejoin may
        let mut back = hb.clone();
        back.member_id = "m1b".into();
        let r = g.heartbeat(back, now, &settings(), &t);
        assert_eq!(r.error, code::NONE);
        assert_eq!(r.member_epoch, epoch, "no rebalance");
        assert_eq!(count(r.assignment.as_ref().expect("a")), 2);
        assert_eq!(g.group_epoch, epoch);
        let mut dup = hb;
        dup.member_id = "m1c".into();
        assert_eq!(
            g.heartbeat(dup, now, &settings(), &t).error,
            code::UNRELEASED_INSTANCE_ID
        );
    }

    #[test]
    fn new_partitions_and_regex_subscriptions_are_picked_up() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", &settings());
        let mut hb = join("m1", &[]);
        hb.subscribed_topics = None;
        hb.subscribed_regex = Some("ev-.*".into());
        let r = g.heartbeat(hb, now, &settings(), &topics(&[("ev-1", 1), ("other", 3)]));
        assert_eq!(r.error, code::NONE);
        let a = r.assignment.expect("a");
        assert_eq!(a.keys().collect::<Vec<_>>(), vec!["ev-1"]);
        // a topic created later that matches, and the first one grows
        let t2 = topics(&[("ev-1", 2), ("ev-2", 1), ("other", 3)]);
        let r = g.heartbeat(beat("m1", r.member_epoch, &a), now, &settings(), &t2);
        assert_eq!(count(r.assignment.as_ref().expect("a")), 3);
        let mut bad = join("m2", &[]);
        bad.subscribed_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(bad, now, &settings(), &t2).error,
            code::INVALID_REGULAR_EXPRESSION
        );
        let mut unknown = join("m3", &["a"]);
        unknown.server_assignor = Some("sticky".into());
        assert_eq!(
            g.heartbeat(unknown, now, &settings(), &t2).error,
            code::UNSUPPORTED_ASSIGNOR
        );
    }

    #[test]
    fn a_member_that_does_not_revoke_is_fenced_after_its_rebalance_timeout() {
        let now = Instant::now();
        let t = topics(&[("a", 2)]);
        let mut g = ConsumerGroup::new("g", &settings());
        let r = g.heartbeat(join("m1", &["a"]), now, &settings(), &t);
        let a1 = r.assignment.expect("a");
        g.heartbeat(join("m2", &["a"]), now, &settings(), &t);
        // m1 is told to revoke one partition but keeps reporting both
        let r = g.heartbeat(beat("m1", r.member_epoch, &a1), now, &settings(), &t);
        assert_eq!(count(r.assignment.as_ref().expect("a")), 1);
        g.heartbeat(
            beat("m1", r.member_epoch, &a1),
            now + Duration::from_secs(10),
            &settings(),
            &t,
        );
        let gone = g.tick(now + Duration::from_secs(31));
        assert_eq!(gone, vec![("m1".to_string(), Fenced::RevocationTimedOut)]);
    }
}
