//! A consumer group member speaking the classic protocol, for `sluice consume --group`:
//! JoinGroup (with the MEMBER_ID_REQUIRED round trip), SyncGroup (computing a range assignment
//! when elected leader), heartbeats from a thread of its own, OffsetFetch / OffsetCommit with
//! the member's generation, and LeaveGroup on the way out.
//!
//! The member offers the "range" assignor, which every Kafka client offers by default, so it
//! can share a group with Java, librdkafka and kafka-python consumers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::admin::{kafka_check, sb};
use crate::client::{Client, ClientError};
use crate::groups::{
    codes, decode_assignment, decode_subscription, encode_assignment, encode_versioned, Committed,
    TopicPartitions,
};

/// How a member joins.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub client_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
}

impl MemberConfig {
    pub fn new(group: &str, topics: &[String], client_id: &str) -> MemberConfig {
        MemberConfig {
            group: group.to_string(),
            topics: topics.to_vec(),
            client_id: client_id.to_string(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Identity {
    member_id: String,
    /// -1 while not in a generation.
    generation: i32,
}

#[derive(Debug, Default)]
struct Shared {
    identity: Mutex<Identity>,
    /// Set by the heartbeat thread (or a failed commit) when the member must rejoin.
    rejoin: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn identity(&self) -> MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A joined (or joining) member of a consumer group.
pub struct GroupMember {
    cfg: MemberConfig,
    coordinator: Client,
    shared: Arc<Shared>,
    heartbeat: Option<JoinHandle<()>>,
    join_version: i16,
    sync_version: i16,
    leave_version: i16,
    assignment: TopicPartitions,
}

/// Range assignment (Kafka's RangeAssignor): per topic, the members subscribed to it in member
/// id order each take a consecutive run of partitions, the first ones one more when the count
/// does not divide evenly.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in topics {
        let Some(&count) = partition_counts.get(topic) else {
            continue;
        };
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let n = members.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in members.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let parts: Vec<i32> = (next..next + take).collect();
            next += take;
            if !parts.is_empty() {
                if let Some(a) = out.get_mut(m) {
                    a.push((topic.clone(), parts));
                }
            }
        }
    }
    out
}

/// Where the heartbeat thread reconnects to: the coordinator, with the same security.
struct HeartbeatTarget {
    addr: std::net::SocketAddr,
    host: Option<String>,
    security: Arc<crate::security::ClientSecurity>,
}

fn heartbeat_loop(
    mut client: Option<Client>,
    target: HeartbeatTarget,
    cfg: MemberConfig,
    version: i16,
    shared: Arc<Shared>,
) {
    let step = Duration::from_millis(50);
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(step);
        if last.elapsed() < cfg.heartbeat_interval {
            continue;
        }
        last = Instant::now();
        let id = shared.identity().clone();
        if id.generation < 0 || shared.rejoin.load(Ordering::Acquire) {
            continue;
        }
        if client.is_none() {
            client = Client::connect_to(
                target.addr,
                target.host.as_deref(),
                &cfg.client_id,
                &target.security,
            )
            .ok();
        }
        let Some(c) = client.as_mut() else { continue };
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(&cfg.group)))
            .with_generation_id(id.generation)
            .with_member_id(sb(&id.member_id));
        match c
            .connection()
            .call::<_, HeartbeatResponse>(ApiKey::Heartbeat, version, &req)
        {
            Ok(resp) => match resp.error_code {
                0 => {}
                codes::REBALANCE_IN_PROGRESS
                | codes::ILLEGAL_GENERATION
                | codes::UNKNOWN_MEMBER_ID
                | codes::FENCED_INSTANCE_ID
                    // only for the generation we heartbeated: a rejoin may have completed since
                    if shared.identity().generation == id.generation =>
                {
                    shared.rejoin.store(true, Ordering::Release);
                }
                _ => {}
            },
            Err(_) => client = None, // reconnect at the next beat
        }
    }
}

impl GroupMember {
    /// Finds the coordinator and starts the heartbeat thread; call [`GroupMember::rejoin`]
    /// to get an assignment.
    pub fn new(bootstrap: &mut Client, cfg: MemberConfig) -> Result<GroupMember, ClientError> {
        let coordinator = bootstrap.group_coordinator(&cfg.group, &cfg.client_id)?;
        let join_version = coordinator.negotiate(ApiKey::JoinGroup, 0, 9)?;
        let sync_version = coordinator.negotiate(ApiKey::SyncGroup, 0, 5)?;
        let hb_version = coordinator.negotiate(ApiKey::Heartbeat, 0, 4)?;
        let leave_version = coordinator.negotiate(ApiKey::LeaveGroup, 0, 5)?;
        coordinator.negotiate(ApiKey::OffsetCommit, 2, 9)?;
        coordinator.negotiate(ApiKey::OffsetFetch, 1, 9)?;
        let shared = Arc::new(Shared {
            identity: Mutex::new(Identity {
                member_id: String::new(),
                generation: -1,
            }),
            rejoin: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        let hb_client = coordinator.reopen(&cfg.client_id)?;
        let heartbeat = {
            let (shared, cfg) = (shared.clone(), cfg.clone());
            let target = HeartbeatTarget {
                addr: coordinator.addr,
                host: coordinator.host().map(str::to_string),
                security: coordinator.security().clone(),
            };
            std::thread::Builder::new()
                .name("group-heartbeat".into())
                .spawn(move || heartbeat_loop(Some(hb_client), target, cfg, hb_version, shared))
                .map_err(|e| ClientError::Conn(e.into()))?
        };
        Ok(GroupMember {
            cfg,
            coordinator,
            shared,
            heartbeat: Some(heartbeat),
            join_version,
            sync_version,
            leave_version,
            assignment: Vec::new(),
        })
    }

    pub fn member_id(&self) -> String {
        self.shared.identity().member_id.clone()
    }

    pub fn generation(&self) -> i32 {
        self.shared.identity().generation
    }

    /// True when the group is rebalancing and this member must rejoin.
    pub fn needs_rejoin(&self) -> bool {
        self.shared.rejoin.load(Ordering::Acquire)
    }

    /// The partitions assigned in the current generation.
    pub fn assignment(&self) -> &TopicPartitions {
        &self.assignment
    }

    fn subscription(&self) -> Result<bytes::Bytes, ClientError> {
        let s = ConsumerProtocolSubscription::default().with_topics(
            self.cfg
                .topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        );
        encode_versioned(&s, 0)
    }

    /// Joins (or rejoins) the group and returns this member's assignment. `bootstrap` answers
    /// the metadata the leader needs for the assignment.
    pub fn rejoin(&mut self, bootstrap: &mut Client) -> Result<TopicPartitions, ClientError> {
        let deadline = Instant::now() + self.cfg.rebalance_timeout * 3;
        let wait = self.cfg.rebalance_timeout + Duration::from_secs(10);
        self.coordinator.connection().set_read_timeout(wait)?;
        loop {
            let mut member_id = self.member_id();
            {
                let mut id = self.shared.identity();
                id.generation = -1;
            }
            let protocols = vec![JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(self.subscription()?)];
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb(&self.cfg.group)))
                .with_session_timeout_ms(self.cfg.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(self.cfg.rebalance_timeout.as_millis() as i32)
                .with_member_id(sb(&member_id))
                .with_protocol_type(sb("consumer"))
                .with_protocols(protocols);
            let resp: JoinGroupResponse =
                self.coordinator
                    .connection()
                    .call(ApiKey::JoinGroup, self.join_version, &req)?;
            match resp.error_code {
                0 => {}
                codes::MEMBER_ID_REQUIRED => {
                    self.shared.identity().member_id = resp.member_id.to_string();
                    continue;
                }
                codes::UNKNOWN_MEMBER_ID if Instant::now() < deadline => {
                    self.shared.identity().member_id.clear();
                    continue;
                }
                codes::COORDINATOR_LOAD_IN_PROGRESS
                | codes::COORDINATOR_NOT_AVAILABLE
                | codes::REBALANCE_IN_PROGRESS
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                code => kafka_check(|| format!("joining group {}", self.cfg.group), code, None)?,
            }
            member_id = resp.member_id.to_string();
            let generation = resp.generation_id;
            let protocol = resp
                .protocol_name
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "range".into());
            let assignments = if resp.leader.as_str() == member_id {
                self.leader_assignments(bootstrap, &resp.members)?
            } else {
                Vec::new()
            };
            let req = SyncGroupRequest::default()
                .with_group_id(GroupId(sb(&self.cfg.group)))
                .with_generation_id(generation)
                .with_member_id(sb(&member_id))
                .with_protocol_type(Some(sb("consumer")))
                .with_protocol_name(Some(sb(&protocol)))
                .with_assignments(assignments);
            let sync: SyncGroupResponse =
                self.coordinator
                    .connection()
                    .call(ApiKey::SyncGroup, self.sync_version, &req)?;
            match sync.error_code {
                0 => {}
                codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION
                    if Instant::now() < deadline =>
                {
                    self.shared.identity().member_id = member_id;
                    continue;
                }
                codes::UNKNOWN_MEMBER_ID if Instant::now() < deadline => {
                    self.shared.identity().member_id.clear();
                    continue;
                }
                code => kafka_check(|| format!("syncing group {}", self.cfg.group), code, None)?,
            }
            let assignment: TopicPartitions = decode_assignment(&sync.assignment)
                .into_iter()
                .filter(|(t, _)| self.cfg.topics.contains(t))
                .collect();
            {
                let mut id = self.shared.identity();
                id.member_id = member_id;
                id.generation = generation;
            }
            self.shared.rejoin.store(false, Ordering::Release);
            self.assignment = assignment.clone();
            return Ok(assignment);
        }
    }

    fn leader_assignments(
        &mut self,
        bootstrap: &mut Client,
        members: &[join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let subscriptions: BTreeMap<String, Vec<String>> = members
            .iter()
            .map(|m| (m.member_id.to_string(), decode_subscription(&m.metadata)))
            .collect();
        let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
        let mut counts = BTreeMap::new();
        for t in topics {
            if let Some(ps) = bootstrap.partitions(t)? {
                counts.insert(t.clone(), ps.len() as i32);
            }
        }
        range_assign(&subscriptions, &counts)
            .into_iter()
            .map(|(m, parts)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(m))
                    .with_assignment(encode_assignment(&parts)?))
            })
            .collect()
    }

    /// The committed offsets of `parts` (-1 where none).
    pub fn committed(&mut self, parts: &TopicPartitions) -> Result<Vec<Committed>, ClientError> {
        let group = self.cfg.group.clone();
        self.coordinator.fetch_committed(&group, Some(parts))
    }

    /// Commits `offsets` in the current generation. `Ok(false)`: the generation is over (the
    /// member must rejoin); the offsets were not committed.
    pub fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<bool, ClientError> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let id = self.shared.identity().clone();
        if id.generation < 0 {
            return Ok(false);
        }
        let group = self.cfg.group.clone();
        let results =
            self.coordinator
                .commit_offsets(&group, id.generation, &id.member_id, offsets)?;
        for (t, p, code) in results {
            match code {
                0 => {}
                codes::REBALANCE_IN_PROGRESS
                | codes::ILLEGAL_GENERATION
                | codes::UNKNOWN_MEMBER_ID
                | codes::FENCED_INSTANCE_ID => {
                    self.shared.rejoin.store(true, Ordering::Release);
                    return Ok(false);
                }
                code => kafka_check(
                    || format!("committing the offset of {t}-{p} for group {group}"),
                    code,
                    None,
                )?,
            }
        }
        Ok(true)
    }

    fn stop_heartbeat(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }

    /// Leaves the group (the rebalance for the others starts at once).
    pub fn leave(mut self) -> Result<(), ClientError> {
        self.stop_heartbeat();
        let member_id = self.member_id();
        if member_id.is_empty() {
            return Ok(());
        }
        let req = if self.leave_version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(sb(&self.cfg.group)))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(sb(&member_id))
                    .with_reason(if self.leave_version >= 5 {
                        Some(sb("the consumer is closing"))
                    } else {
                        None
                    })])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(sb(&self.cfg.group)))
                .with_member_id(sb(&member_id))
        };
        let resp: LeaveGroupResponse =
            self.coordinator
                .connection()
                .call(ApiKey::LeaveGroup, self.leave_version, &req)?;
        let code = if resp.error_code != 0 {
            resp.error_code
        } else {
            resp.members.first().map_or(0, |m| m.error_code)
        };
        match code {
            // already gone (session expired, group deleted): nothing to leave
            codes::UNKNOWN_MEMBER_ID => Ok(()),
            code => kafka_check(|| format!("leaving group {}", self.cfg.group), code, None),
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        v.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_assignment_matches_kafka() {
        let counts: BTreeMap<String, i32> = [("t".to_string(), 10), ("u".to_string(), 3)]
            .into_iter()
            .collect();
        let a = range_assign(&subs(&[("m1", &["t", "u"]), ("m2", &["t"])]), &counts);
        assert_eq!(
            a["m1"],
            vec![
                ("t".into(), vec![0, 1, 2, 3, 4]),
                ("u".into(), vec![0, 1, 2])
            ]
        );
        assert_eq!(a["m2"], vec![("t".into(), vec![5, 6, 7, 8, 9])]);
        let a = range_assign(
            &subs(&[("a", &["u"]), ("b", &["u"]), ("c", &["u"]), ("d", &["u"])]),
            &counts,
        );
        assert_eq!(a["a"], vec![("u".into(), vec![0])]);
        assert_eq!(a["c"], vec![("u".into(), vec![2])]);
        assert!(a["d"].is_empty());
        // alone: everything
        let a = range_assign(&subs(&[("solo", &["t"])]), &counts);
        assert_eq!(a["solo"], vec![("t".into(), (0..10).collect())]);
    }
}
