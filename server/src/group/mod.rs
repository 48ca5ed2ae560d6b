//! Consumer group coordinator: each group is coordinated by one shard, chosen by hashing the
//! group id onto a fixed set of offsets partitions (`OFFSETS_PARTITIONS`, like Kafka's
//! `__consumer_offsets`) that are spread over the shards. Any shard takes a group request and
//! forwards it there.
//!
//! Three kinds of groups share the coordinator and one namespace of group ids: classic ones
//! ([`state`], JoinGroup/SyncGroup), consumer groups of KIP-848 ([`consumer`]) and share
//! groups of KIP-932 ([`share`]). Their committed offsets are in `offsets`: the
//! coordinator's offsets partitions, fdatasync'd before a commit is answered and replayed at
//! start.

pub mod configs;
pub mod consumer;
mod offsets;

use offsets::replay;
pub use offsets::{Committed, GroupOffsets, TopicOffsets};
pub mod share;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::kvlog::StateLog;
use bytes::Bytes;
use futures_channel::oneshot;

use state::{
    err, Group, GroupConfig, GroupState, JoinRequest, JoinResponse, Reply, SyncResponse, WaiterId,
};

/// Fixed number of offsets partitions; a group's partition is `crc32c(group) % this`.
pub const OFFSETS_PARTITIONS: u32 = 16;

pub fn offsets_partition(group: &str) -> u32 {
    crc32c::crc32c(group.as_bytes()) % OFFSETS_PARTITIONS
}

/// The shard coordinating `group` when the broker runs `shards` shards.
pub fn coordinator_shard(group: &str, shards: usize) -> usize {
    offsets_partition(group) as usize % shards.max(1)
}

/// What a shard needs to coordinate groups.
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// offsets.retention.minutes
    pub offsets_retention: Duration,
    /// sluice.state.compact.min.bytes: offsets partitions smaller than this are not compacted
    pub compact_min_bytes: u64,
    /// group.consumer.*: the migration policy (per-group settings come with each heartbeat)
    pub consumer: configs::ConsumerGroupBounds,
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// Groups coordinated by one shard, and their committed offsets.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    groups: RefCell<HashMap<String, Group>>,
    /// Consumer groups of the new protocol (KIP-848; `consumer::serve`); a group id is in
    /// `groups` or here, never both.
    consumer: RefCell<HashMap<String, consumer::group::ConsumerGroup>>,
    /// Share groups (KIP-932; `share::serve`); an id is in at most one of the three maps.
    share: RefCell<HashMap<String, share::group::ShareGroup>>,
    /// Share sessions by (group, member) (ShareFetch / ShareAcknowledge epochs).
    share_sessions: RefCell<HashMap<(String, String), share::serve::ShareSession>>,
    /// Share group members fenced by the ticker whose records are still to be released.
    share_departed: RefCell<Vec<(String, String)>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by group and producer
    /// id: invisible until the transaction commits.
    pending: RefCell<HashMap<String, HashMap<i64, GroupOffsets>>>,
    /// The offsets partitions this coordinator serves: all of its shard's on a single node;
    /// in a cluster, those of `__consumer_offsets` this broker leads (loaded when it takes a
    /// partition over, dropped when leadership moves). A change holds its lock (shared) from
    /// its append until the maps show it, compaction (exclusive), so that the state it
    /// rewrites matches the log's order.
    logs: crate::kvlog::StateLogs,
    /// Pending JoinGroup/SyncGroup answers, with their group.
    waiters: RefCell<HashMap<WaiterId, (String, Waiter)>>,
    next_waiter: Cell<WaiterId>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Describes a group (DescribeGroups).
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

impl Coordinator {
    /// Single node: opens this shard's offsets partitions and replays them. In a cluster
    /// (`clustered`) it starts empty and [`load`](Self::load)s the partitions of
    /// `__consumer_offsets` this broker comes to lead.
    pub async fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        cfg: CoordinatorConfig,
        clustered: bool,
    ) -> Result<Rc<Coordinator>, String> {
        let mut logs = HashMap::new();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let mut pending: HashMap<String, HashMap<i64, GroupOffsets>> = HashMap::new();
        let local =
            (0..OFFSETS_PARTITIONS).filter(|p| !clustered && *p as usize % shards.max(1) == shard);
        for p in local {
            let dir = data_dir.join("__sluice").join(format!("group-offsets-{p}"));
            let log = crate::kvlog::open(&dir, crate::kvlog::segment_bytes(cfg.compact_min_bytes))
                .await?;
            let log = StateLog::local(Rc::new(log));
            replay(&log, &mut offsets, &mut pending).await?;
            logs.insert(p, Rc::new(log));
        }
        let groups = offsets.keys().map(|g| (g.clone(), Group::new(g))).collect();
        let c = Rc::new(Coordinator {
            cfg,
            groups: RefCell::new(groups),
            consumer: RefCell::new(HashMap::new()),
            share: RefCell::new(HashMap::new()),
            share_sessions: RefCell::new(HashMap::new()),
            share_departed: RefCell::new(Vec::new()),
            offsets: RefCell::new(offsets),
            pending: RefCell::new(pending),
            logs: crate::kvlog::StateLogs::new(logs),
            waiters: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(1),
        });
        c.compact().await;
        Ok(c)
    }

    /// Runs session expiry and rebalance timeouts every 100 ms, offset retention every minute.
    pub fn start_ticker(self: &Rc<Self>) -> glommio::task::JoinHandle<()> {
        let me = self.clone();
        glommio::spawn_local(async move {
            let mut last_retention = Instant::now();
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let now = Instant::now();
                let replies: Vec<Reply> = {
                    let mut groups = me.groups.borrow_mut();
                    groups
                        .values_mut()
                        .filter(|g| g.needs_ticks())
                        .flat_map(|g| g.tick(now, &me.cfg.group))
                        .collect()
                };
                me.deliver(replies);
                me.consumer_tick(now);
                me.share_tick(now);
                if now.duration_since(last_retention) >= Duration::from_secs(60) {
                    last_retention = now;
                    me.expire_offsets().await;
                    me.compact().await;
                }
            }
        })
        .detach()
    }

    pub async fn close(&self) {
        self.logs.close().await;
    }

    /// Whether this coordinator serves `group` (its offsets partition is loaded here).
    pub fn serves(&self, group: &str) -> bool {
        self.logs.serves(offsets_partition(group))
    }

    /// The leader epoch partition `p` is loaded at (cluster), `None` if it is not loaded.
    pub fn loaded_epoch(&self, p: u32) -> Option<Option<i32>> {
        self.logs.loaded_epoch(p)
    }

    /// Cluster: takes over offsets partition `p` (this broker now leads it): replays its log
    /// into the groups' committed and pending offsets, then serves its groups.
    pub async fn load(&self, p: u32, log: StateLog) -> Result<(), String> {
        self.unload(p);
        let Some(_all) = self.logs.exclusive().await else {
            return Err("coordinator closed".into());
        };
        let mut offsets = HashMap::new();
        let mut pending = HashMap::new();
        replay(&log, &mut offsets, &mut pending).await?;
        tracing::info!(
            partition = p,
            groups = offsets.len(),
            epoch = ?log.epoch(),
            "offsets partition loaded; coordinating its groups"
        );
        {
            let mut groups = self.groups.borrow_mut();
            for g in offsets.keys() {
                groups.entry(g.clone()).or_insert_with(|| Group::new(g));
            }
        }
        self.offsets.borrow_mut().extend(offsets);
        self.pending.borrow_mut().extend(pending);
        self.logs.insert(p, log);
        Ok(())
    }

    /// Cluster: gives up offsets partition `p` (leadership moved): forgets its groups, and
    /// answers their pending joins and syncs with NOT_COORDINATOR so clients find the new one.
    pub fn unload(&self, p: u32) {
        if !self.logs.remove(p) {
            return;
        }
        let mine = |g: &String| offsets_partition(g) == p;
        self.groups.borrow_mut().retain(|g, _| !mine(g));
        self.consumer.borrow_mut().retain(|g, _| !mine(g));
        self.share.borrow_mut().retain(|g, _| !mine(g));
        self.share_sessions
            .borrow_mut()
            .retain(|(g, _), _| !mine(g));
        self.offsets.borrow_mut().retain(|g, _| !mine(g));
        self.pending.borrow_mut().retain(|g, _| !mine(g));
        let dropped: Vec<Waiter> = {
            let mut waiters = self.waiters.borrow_mut();
            let ids: Vec<WaiterId> = waiters
                .iter()
                .filter(|(_, (g, _))| mine(g))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| waiters.remove(&id).map(|(_, w)| w))
                .collect()
        };
        for w in dropped {
            match w {
                Waiter::Join(tx) => {
                    let _ = tx.send(JoinResponse {
                        error: err::NOT_COORDINATOR,
                        generation: -1,
                        ..JoinResponse::default()
                    });
                }
                Waiter::Sync(tx) => {
                    let _ = tx.send(SyncResponse {
                        error: err::NOT_COORDINATOR,
                        ..SyncResponse::default()
                    });
                }
            }
        }
        tracing::info!(
            partition = p,
            "offsets partition unloaded; its groups moved"
        );
    }

    fn waiter(&self, group: &str, w: Waiter) -> WaiterId {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        self.waiters.borrow_mut().insert(id, (group.to_string(), w));
        id
    }

    fn deliver(&self, replies: Vec<Reply>) {
        let mut waiters = self.waiters.borrow_mut();
        for r in replies {
            match r {
                Reply::Join(id, resp) => {
                    if let Some((_, Waiter::Join(tx))) = waiters.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                Reply::Sync(id, resp) => {
                    if let Some((_, Waiter::Sync(tx))) = waiters.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
            }
        }
    }

    pub async fn join(&self, group: &str, req: JoinRequest) -> JoinResponse {
        let code = self.classic_join_allowed(group);
        if code != err::NONE {
            return JoinResponse {
                error: code,
                generation: -1,
                member_id: req.member_id,
                ..JoinResponse::default()
            };
        }
        let (tx, rx) = oneshot::channel();
        let w = self.waiter(group, Waiter::Join(tx));
        let member = req.member_id.clone();
        let replies = {
            let mut groups = self.groups.borrow_mut();
            let g = groups
                .entry(group.to_string())
                .or_insert_with(|| Group::new(group));
            g.join(req, w, Instant::now(), &self.cfg.group)
        };
        self.deliver(replies);
        rx.await.unwrap_or(JoinResponse {
            error: err::UNKNOWN_MEMBER_ID,
            generation: -1,
            member_id: member,
            ..JoinResponse::default()
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResponse {
        let (tx, rx) = oneshot::channel();
        let w = self.waiter(group, Waiter::Sync(tx));
        let replies = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(group) {
                Some(g) => g.sync(
                    member_id,
                    instance_id,
                    generation,
                    protocol_type,
                    protocol_name,
                    assignments,
                    w,
                    Instant::now(),
                ),
                None => vec![Reply::Sync(
                    w,
                    SyncResponse {
                        error: err::UNKNOWN_MEMBER_ID,
                        ..SyncResponse::default()
                    },
                )],
            }
        };
        self.deliver(replies);
        rx.await.unwrap_or(SyncResponse {
            error: err::UNKNOWN_MEMBER_ID,
            ..SyncResponse::default()
        })
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        match self.groups.borrow_mut().get_mut(group) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => err::UNKNOWN_MEMBER_ID,
        }
    }

    pub fn leave(&self, group: &str, leavers: &[(String, Option<String>)]) -> (i16, Vec<i16>) {
        let (codes, replies) = match self.groups.borrow_mut().get_mut(group) {
            Some(g) => g.leave(leavers, Instant::now(), &self.cfg.group),
            None => {
                return (
                    err::UNKNOWN_MEMBER_ID,
                    vec![err::UNKNOWN_MEMBER_ID; leavers.len()],
                )
            }
        };
        self.deliver(replies);
        let top = if leavers.len() == 1 {
            codes[0]
        } else {
            err::NONE
        };
        (top, codes)
    }

    /// (group id, protocol type, state, group type) of every group, optionally filtered by
    /// state names.
    pub fn list(&self, states: &[String]) -> Vec<(String, String, &'static str, &'static str)> {
        let wanted =
            |name: &str| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(name));
        let mut v: Vec<_> = self
            .consumer
            .borrow()
            .values()
            .filter(|g| wanted(g.state().name()))
            .map(|g| {
                (
                    g.id.clone(),
                    "consumer".to_string(),
                    g.state().name(),
                    "consumer",
                )
            })
            .collect();
        v.extend(self.classic_list(states));
        v.extend(self.share_list(wanted));
        v.sort();
        v
    }

    fn classic_list(&self, states: &[String]) -> Vec<(String, String, &'static str, &'static str)> {
        let groups = self.groups.borrow();
        let mut v: Vec<_> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                    g.state.name(),
                    "classic",
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Metrics: every group this coordinator serves (live or with committed offsets only),
    /// with its state, member count and committed offsets.
    pub fn snapshot(&self) -> Vec<crate::metrics::snapshot::GroupSnapshot> {
        let groups = self.groups.borrow();
        let consumer = self.consumer.borrow();
        let offsets = self.offsets.borrow();
        let mut ids: std::collections::BTreeSet<&String> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| &g.id)
            .collect();
        ids.extend(consumer.keys());
        let share = self.share.borrow();
        ids.extend(share.keys());
        ids.extend(
            offsets
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(g, _)| g),
        );
        let committed = |id: &String| {
            offsets
                .get(id)
                .map(|m| {
                    m.iter()
                        .map(|((t, p), c)| crate::metrics::snapshot::CommittedOffset {
                            topic: t.clone(),
                            partition: *p,
                            offset: c.offset,
                            log_end: None,
                            lag: None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        ids.into_iter()
            .map(|id| {
                let row = |member_id: &String, client_id: &String, host: &String| {
                    crate::metrics::snapshot::MemberRow {
                        member_id: member_id.clone(),
                        client_id: client_id.clone(),
                        host: host.clone(),
                    }
                };
                let kip = consumer
                    .get(id)
                    .map(|g| {
                        let rows = g.members.values();
                        (
                            g.state().name(),
                            "consumer",
                            rows.map(|m| row(&m.id, &m.client_id, &m.client_host))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .or_else(|| {
                        share.get(id).map(|g| {
                            let rows = g.members.values();
                            (
                                g.state().name(),
                                "share",
                                rows.map(|m| row(&m.id, &m.client_id, &m.client_host))
                                    .collect(),
                            )
                        })
                    });
                if let Some((state, protocol_type, member_list)) = kip {
                    return crate::metrics::snapshot::GroupSnapshot {
                        group: id.clone(),
                        state: state.to_string(),
                        protocol_type: protocol_type.into(),
                        members: member_list.len() as u64,
                        member_list,
                        offsets: committed(id),
                    };
                }
                let g = groups.get(id).filter(|g| g.state != GroupState::Dead);
                crate::metrics::snapshot::GroupSnapshot {
                    group: id.clone(),
                    state: g.map_or("Empty", |g| g.state.name()).to_string(),
                    protocol_type: g
                        .and_then(|g| g.protocol_type.clone())
                        .unwrap_or_else(|| "consumer".into()),
                    members: g.map_or(0, |g| g.members.len()) as u64,
                    member_list: g
                        .map(|g| {
                            g.members
                                .values()
                                .map(|m| crate::metrics::snapshot::MemberRow {
                                    member_id: m.id.clone(),
                                    client_id: m.client_id.clone(),
                                    host: m.client_host.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    offsets: committed(id),
                }
            })
            .collect()
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        if let Some(g) = self.consumer.borrow().get(group) {
            return Some(consumer::serve::classic_view(g));
        }
        if let Some(g) = self.share.borrow().get(group) {
            return Some(share::serve::classic_view(g));
        }
        let groups = self.groups.borrow();
        let g = groups.get(group)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable || g.state == GroupState::CompletingRebalance
            {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata(&protocol),
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, group: &str) -> i16 {
        let consumer = self
            .consumer
            .borrow()
            .get(group)
            .map(|g| g.is_empty())
            .or_else(|| self.share.borrow().get(group).map(|g| g.is_empty()));
        match consumer {
            Some(false) => return err::NON_EMPTY_GROUP,
            Some(true) => {}
            None => match self.groups.borrow().get(group) {
                None => return err::GROUP_ID_NOT_FOUND,
                Some(g) if !g.is_empty() => return err::NON_EMPTY_GROUP,
                Some(_) => {}
            },
        }
        let keys: Vec<(String, i32)> = self
            .offsets
            .borrow()
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let _stored = match self.tombstone(group, &keys).await {
            Ok(g) => g,
            Err(code) => return code,
        };
        self.offsets.borrow_mut().remove(group);
        self.groups.borrow_mut().remove(group);
        self.consumer.borrow_mut().remove(group);
        self.share.borrow_mut().remove(group);
        err::NONE
    }
}

/// Topics named in a consumer protocol subscription (ConsumerProtocolSubscription).
pub(crate) fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut b = Bytes::copy_from_slice(metadata);
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = bytes::Buf::get_i16(&mut b);
    ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}
