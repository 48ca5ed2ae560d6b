//! The classic consumer group protocol as a state machine with explicit time, so it can be
//! tested without sockets. Requests that must wait (JoinGroup until the rebalance completes,
//! SyncGroup until the leader's assignment arrives) carry a `WaiterId`; every method returns the
//! replies that became ready, and the async layer delivers them.
//!
//! States follow Kafka's GroupCoordinator: Empty -> PreparingRebalance -> CompletingRebalance
//! -> Stable, back to PreparingRebalance when members join, leave or expire.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Kafka error codes of the group APIs.
pub mod err {
    pub const NONE: i16 = 0;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
}

pub type WaiterId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's tools print.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Coordinator settings (Kafka broker config names in comments).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms
    pub min_session_timeout: Duration,
    /// group.max.session.timeout.ms
    pub max_session_timeout: Duration,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// group.max.size
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::from_millis(0),
            max_size: 1_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Session expiry (refreshed by heartbeats, joins and syncs).
    pub deadline: Instant,
    join_waiter: Option<WaiterId>,
    sync_waiter: Option<WaiterId>,
    /// Order of first join (the leader is the oldest member).
    seq: u64,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join without member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// Static leader rejoining a stable group: it must not compute a new assignment.
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A reply that became ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Join(WaiterId, JoinResponse),
    Sync(WaiterId, SyncResponse),
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, expected back before their deadline.
    pending: HashMap<String, Instant>,
    /// group.instance.id -> member id of static members.
    statics: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// The initial rebalance delay of an empty group ends here.
    delay_until: Option<Instant>,
    next_seq: u64,
}

fn join_error(waiter: WaiterId, member_id: &str, error: i16) -> Vec<Reply> {
    vec![Reply::Join(
        waiter,
        JoinResponse {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResponse::default()
        },
    )]
}

fn sync_error(waiter: WaiterId, error: i16) -> Vec<Reply> {
    vec![Reply::Sync(
        waiter,
        SyncResponse {
            error,
            ..SyncResponse::default()
        },
    )]
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: None,
            delay_until: None,
            next_seq: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Checks a member id / instance id / generation triple (Heartbeat, SyncGroup, commits).
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> i16 {
        if let Some(iid) = instance_id {
            match self.statics.get(iid) {
                Some(m) if m != member_id => return err::FENCED_INSTANCE_ID,
                None if self.members.contains_key(member_id) => {}
                None => return err::UNKNOWN_MEMBER_ID,
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return err::UNKNOWN_MEMBER_ID;
        }
        err::NONE
    }

    /// The protocol every member supports, chosen by the members' first preferences.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == p) {
                    v.0 += 1;
                }
            }
        }
        // most votes; ties go to the earlier candidate
        let mut best: Option<(usize, &String)> = None;
        for (n, c) in votes {
            if best.is_none_or(|(bn, _)| n > bn) {
                best = Some((n, c));
            }
        }
        best.map(|(_, c)| c.clone())
    }

    /// Whether the join's protocols are compatible with the group's members.
    fn compatible(&self, req: &JoinRequest) -> bool {
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != req.member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != req.protocol_type)
        {
            return false;
        }
        req.protocols.iter().any(|(n, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(p, _)| p == n))
        })
    }

    fn prepare_rebalance(&mut self, now: Instant, cfg: &GroupConfig) -> Vec<Reply> {
        let mut out = Vec::new();
        if self.state == GroupState::CompletingRebalance {
            // members waiting for an assignment must rejoin
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    out.extend(sync_error(w, err::REBALANCE_IN_PROGRESS));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = Some(now + timeout);
        if was_empty && !cfg.initial_rebalance_delay.is_zero() {
            self.delay_until = Some(now + cfg.initial_rebalance_delay.min(timeout));
        }
        out
    }

    fn all_joined(&self, now: Instant) -> bool {
        self.pending.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
            && self.delay_until.is_none_or(|t| now >= t)
    }

    /// Ends PreparingRebalance: drops members that did not rejoin, bumps the generation,
    /// picks the protocol and leader, and answers every waiting JoinGroup.
    fn complete_join(&mut self, now: Instant) -> Vec<Reply> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return Vec::new();
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let mut list: Vec<&Member> = self.members.values().collect();
        list.sort_by_key(|m| m.seq);
        let all: Vec<(String, Option<String>, Bytes)> = list
            .iter()
            .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
            .collect();
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            m.deadline = now + m.session_timeout;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                out.push(Reply::Join(
                    w,
                    JoinResponse {
                        error: err::NONE,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: Some(protocol.clone()),
                        leader: leader.clone(),
                        member_id: m.id.clone(),
                        members: if m.id == leader {
                            all.clone()
                        } else {
                            Vec::new()
                        },
                        skip_assignment: false,
                    },
                ));
            }
        }
        out
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(iid) = &m.instance_id {
            if self.statics.get(iid).is_some_and(|x| x == id) {
                self.statics.remove(iid);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// Replies for a member that is gone while it still had a request waiting.
    fn orphan_replies(m: &Member) -> Vec<Reply> {
        let mut out = Vec::new();
        if let Some(w) = m.join_waiter {
            out.extend(join_error(w, &m.id, err::UNKNOWN_MEMBER_ID));
        }
        if let Some(w) = m.sync_waiter {
            out.extend(sync_error(w, err::UNKNOWN_MEMBER_ID));
        }
        out
    }

    /// After members left or expired: rebalance the rest, or become Empty.
    fn after_departure(&mut self, now: Instant, cfg: &GroupConfig) -> Vec<Reply> {
        let mut out = Vec::new();
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                out.extend(self.prepare_rebalance(now, cfg));
            }
            _ => {}
        }
        if self.state == GroupState::PreparingRebalance && self.all_joined(now) {
            out.extend(self.complete_join(now));
        }
        if self.members.is_empty() && self.state != GroupState::Dead {
            self.state = GroupState::Empty;
        }
        out
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Vec<Reply> {
        if self.state == GroupState::Dead {
            return join_error(waiter, &req.member_id, err::COORDINATOR_NOT_AVAILABLE);
        }
        if req.session_timeout < cfg.min_session_timeout
            || req.session_timeout > cfg.max_session_timeout
        {
            return join_error(waiter, &req.member_id, err::INVALID_SESSION_TIMEOUT);
        }
        if !self.compatible(&req) {
            return join_error(waiter, &req.member_id, err::INCONSISTENT_GROUP_PROTOCOL);
        }
        let mut req = req;
        if req.member_id.is_empty() {
            let new_id = format!(
                "{}-{}",
                if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                },
                uuid::Uuid::new_v4()
            );
            if let Some(iid) = req.instance_id.clone() {
                // a static member (re)starting: it takes over its instance's place
                if let Some(old) = self.statics.get(&iid).cloned() {
                    let mut out = Vec::new();
                    let was_leader = self.leader.as_deref() == Some(old.as_str());
                    if let Some(mut m) = self.remove_member(&old) {
                        out.extend(Self::orphan_replies(&m).into_iter().map(|r| match r {
                            Reply::Join(w, mut j) => {
                                j.error = err::FENCED_INSTANCE_ID;
                                Reply::Join(w, j)
                            }
                            Reply::Sync(w, mut s) => {
                                s.error = err::FENCED_INSTANCE_ID;
                                Reply::Sync(w, s)
                            }
                        }));
                        m.id = new_id.clone();
                        m.join_waiter = None;
                        m.sync_waiter = None;
                        m.deadline = now + req.session_timeout;
                        m.client_id = req.client_id.clone();
                        m.client_host = req.client_host.clone();
                        let same_protocols = m.protocols == req.protocols;
                        m.protocols = req.protocols.clone();
                        m.session_timeout = req.session_timeout;
                        m.rebalance_timeout = req.rebalance_timeout;
                        self.statics.insert(iid.clone(), new_id.clone());
                        self.members.insert(new_id.clone(), m);
                        if was_leader {
                            self.leader = Some(new_id.clone());
                        }
                        if self.state == GroupState::Stable && same_protocols {
                            // no rebalance: the replacement keeps the old assignment
                            let protocol = self.protocol.clone().unwrap_or_default();
                            out.push(Reply::Join(
                                waiter,
                                JoinResponse {
                                    error: err::NONE,
                                    generation: self.generation,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: Some(protocol),
                                    leader: self.leader.clone().unwrap_or_default(),
                                    member_id: new_id,
                                    members: Vec::new(),
                                    skip_assignment: was_leader,
                                },
                            ));
                            return out;
                        }
                        req.member_id = new_id;
                        out.extend(self.add_or_update(req, waiter, now, cfg));
                        return out;
                    }
                }
                self.statics.insert(iid, new_id.clone());
                req.member_id = new_id;
                return self.add_or_update(req, waiter, now, cfg);
            }
            if req.require_known_member_id {
                self.pending
                    .insert(new_id.clone(), now + req.session_timeout);
                return join_error(waiter, &new_id, err::MEMBER_ID_REQUIRED);
            }
            req.member_id = new_id;
            return self.add_or_update(req, waiter, now, cfg);
        }
        // a known (or pending) member id
        if let Some(iid) = &req.instance_id {
            if self.statics.get(iid).is_some_and(|m| *m != req.member_id) {
                return join_error(waiter, &req.member_id, err::FENCED_INSTANCE_ID);
            }
        }
        let known = self.members.contains_key(&req.member_id);
        if !known && self.pending.remove(&req.member_id).is_none() {
            return join_error(waiter, &req.member_id, err::UNKNOWN_MEMBER_ID);
        }
        if let Some(iid) = &req.instance_id {
            self.statics.insert(iid.clone(), req.member_id.clone());
        }
        self.add_or_update(req, waiter, now, cfg)
    }

    fn add_or_update(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Vec<Reply> {
        let mut out = Vec::new();
        if !self.members.contains_key(&req.member_id) && self.members.len() >= cfg.max_size {
            return join_error(waiter, &req.member_id, err::GROUP_MAX_SIZE_REACHED);
        }
        let changed;
        match self.members.get_mut(&req.member_id) {
            Some(m) => {
                changed = m.protocols != req.protocols;
                if let Some(old) = m.join_waiter.replace(waiter) {
                    // a duplicate join: the older request is superseded
                    out.extend(join_error(old, &m.id, err::REBALANCE_IN_PROGRESS));
                }
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.client_id = req.client_id;
                m.client_host = req.client_host;
                m.deadline = now + m.session_timeout;
            }
            None => {
                changed = true;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.members.insert(
                    req.member_id.clone(),
                    Member {
                        id: req.member_id.clone(),
                        instance_id: req.instance_id,
                        client_id: req.client_id,
                        client_host: req.client_host,
                        session_timeout: req.session_timeout,
                        rebalance_timeout: req.rebalance_timeout,
                        protocol_type: req.protocol_type.clone(),
                        protocols: req.protocols,
                        assignment: Bytes::new(),
                        deadline: now + req.session_timeout,
                        join_waiter: Some(waiter),
                        sync_waiter: None,
                        seq,
                    },
                );
            }
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type);
        }
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::Stable if !changed && !is_leader => {
                // nothing changed for a follower: answer with the current generation
                let m = self.members.get_mut(&req.member_id).expect("just updated");
                let w = m.join_waiter.take().expect("just set");
                out.push(Reply::Join(
                    w,
                    JoinResponse {
                        error: err::NONE,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        leader: self.leader.clone().unwrap_or_default(),
                        member_id: req.member_id,
                        members: Vec::new(),
                        skip_assignment: false,
                    },
                ));
                return out;
            }
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance => {
                out.extend(self.prepare_rebalance(now, cfg));
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        if self.all_joined(now) {
            out.extend(self.complete_join(now));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: WaiterId,
        now: Instant,
    ) -> Vec<Reply> {
        let code = self.check_member(member_id, instance_id);
        if code != err::NONE {
            return sync_error(waiter, code);
        }
        if generation != self.generation {
            return sync_error(waiter, err::ILLEGAL_GENERATION);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return sync_error(waiter, err::INCONSISTENT_GROUP_PROTOCOL);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => sync_error(waiter, err::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => sync_error(waiter, err::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let m = self.members.get_mut(member_id).expect("checked");
                m.deadline = now + m.session_timeout;
                vec![Reply::Sync(
                    waiter,
                    SyncResponse {
                        error: err::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                )]
            }
            GroupState::CompletingRebalance => {
                let mut out = Vec::new();
                {
                    let m = self.members.get_mut(member_id).expect("checked");
                    m.deadline = now + m.session_timeout;
                    if let Some(old) = m.sync_waiter.replace(waiter) {
                        out.extend(sync_error(old, err::REBALANCE_IN_PROGRESS));
                    }
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            out.push(Reply::Sync(
                                w,
                                SyncResponse {
                                    error: err::NONE,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
                out
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return err::COORDINATOR_NOT_AVAILABLE;
        }
        let code = self.check_member(member_id, instance_id);
        if code != err::NONE {
            return code;
        }
        if generation != self.generation {
            return err::ILLEGAL_GENERATION;
        }
        let m = self.members.get_mut(member_id).expect("checked");
        m.deadline = now + m.session_timeout;
        match self.state {
            GroupState::PreparingRebalance => err::REBALANCE_IN_PROGRESS,
            GroupState::Empty => err::UNKNOWN_MEMBER_ID,
            _ => err::NONE,
        }
    }

    /// Removes members (LeaveGroup). Returns one error code per leaver, plus ready replies.
    pub fn leave(
        &mut self,
        leavers: &[(String, Option<String>)],
        now: Instant,
        cfg: &GroupConfig,
    ) -> (Vec<i16>, Vec<Reply>) {
        let mut codes = Vec::new();
        let mut out = Vec::new();
        let mut any = false;
        for (member_id, instance_id) in leavers {
            // v3+ may name a static member by instance id alone
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(iid)) => self.statics.get(iid).cloned().unwrap_or_default(),
                _ => member_id.clone(),
            };
            let code = if let Some(iid) = instance_id {
                match self.statics.get(iid) {
                    Some(m) if *m == id => err::NONE,
                    Some(_) => err::FENCED_INSTANCE_ID,
                    None => err::UNKNOWN_MEMBER_ID,
                }
            } else if self.members.contains_key(&id) {
                err::NONE
            } else if self.pending.remove(&id).is_some() {
                codes.push(err::NONE);
                continue;
            } else {
                err::UNKNOWN_MEMBER_ID
            };
            if code == err::NONE {
                if let Some(m) = self.remove_member(&id) {
                    out.extend(Self::orphan_replies(&m));
                    any = true;
                }
            }
            codes.push(code);
        }
        if any {
            out.extend(self.after_departure(now, cfg));
        }
        (codes, out)
    }

    /// Session expiry, rebalance timeout and the initial delay.
    pub fn tick(&mut self, now: Instant, cfg: &GroupConfig) -> Vec<Reply> {
        let mut out = Vec::new();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline <= now && m.join_waiter.is_none() && m.sync_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        let any = !expired.is_empty();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            if let Some(m) = self.remove_member(&id) {
                out.extend(Self::orphan_replies(&m));
            }
        }
        if any {
            out.extend(self.after_departure(now, cfg));
        }
        if self.state == GroupState::PreparingRebalance {
            let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
            if timed_out || self.all_joined(now) {
                out.extend(self.complete_join(now));
            }
        }
        out
    }

    /// May this member commit offsets for this generation? (OffsetCommit)
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        if generation < 0 && member_id.is_empty() {
            // a commit from outside the group protocol (assign() consumers, admin tools)
            return if self.members.is_empty() {
                err::NONE
            } else {
                err::UNKNOWN_MEMBER_ID
            };
        }
        let code = self.check_member(member_id, instance_id);
        if code != err::NONE {
            return code;
        }
        if generation != self.generation {
            return err::ILLEGAL_GENERATION;
        }
        if self.state == GroupState::CompletingRebalance {
            return err::REBALANCE_IN_PROGRESS;
        }
        err::NONE
    }

    /// Whether the group has work for `tick` (members, pending ids or a rebalance).
    pub fn needs_ticks(&self) -> bool {
        !self.members.is_empty() || !self.pending.is_empty()
    }
}
