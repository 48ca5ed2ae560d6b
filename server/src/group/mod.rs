//! Consumer group coordinator: each group is coordinated by one shard, chosen by hashing the
//! group id onto a fixed set of offsets partitions (`OFFSETS_PARTITIONS`, like Kafka's
//! `__consumer_offsets`) that are spread over the shards. Any shard takes a group request and
//! forwards it there.
//!
//! Committed offsets live in the coordinator's offsets partitions: engine logs under
//! `<data>/__sluice/group-offsets-<n>`, one record per committed (group, topic, partition),
//! fdatasync'd before OffsetCommit is answered and replayed (last value per key wins, a null
//! value deletes) when the shard starts.

pub mod configs;
pub mod consumer;
pub mod share;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::kvlog::{StateError, StateLog};
use bytes::Bytes;
use futures_channel::oneshot;
use serde::{Deserialize, Serialize};

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

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    #[serde(rename = "o")]
    pub offset: i64,
    #[serde(rename = "e")]
    pub leader_epoch: i32,
    #[serde(rename = "m")]
    pub metadata: Option<String>,
    #[serde(rename = "ts")]
    pub commit_ms: i64,
}

/// Committed offsets of one group by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// Committed offsets by topic: `[(topic, [(partition, committed or none)])]`.
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
struct OffsetKey {
    g: String,
    t: String,
    p: i32,
    /// Producer id of a transactional offset commit (pending until its transaction ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<i64>,
}

/// The state-log record of one committed (or, with a producer id, pending) offset; `None`
/// deletes it.
fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    producer_id: Option<i64>,
    value: Option<&Committed>,
) -> crate::kvlog::KvRecord {
    let key = OffsetKey {
        g: group.to_string(),
        t: topic.to_string(),
        p: partition,
        x: producer_id,
    };
    (
        serde_json::to_vec(&key).unwrap_or_default(),
        value.and_then(|c| serde_json::to_vec(c).ok()),
    )
}

/// Value of the record that ends a producer's transactional offsets in a group (key: an
/// `OffsetKey` with `x` set, an empty topic and partition -1).
#[derive(Debug, Serialize, Deserialize)]
struct TxnEnd {
    commit: bool,
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
    /// partition over, dropped when leadership moves).
    logs: RefCell<HashMap<u32, Rc<StateLog>>>,
    /// Held (shared) by every change from its append until the maps show it, and (exclusive)
    /// by compaction, so that the state it rewrites matches the log's order.
    state_lock: glommio::sync::RwLock<()>,
    /// Pending JoinGroup/SyncGroup answers, with their group.
    waiters: RefCell<HashMap<WaiterId, (String, Waiter)>>,
    next_waiter: Cell<WaiterId>,
}

fn now_ms() -> i64 {
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
            logs: RefCell::new(logs),
            state_lock: glommio::sync::RwLock::new(()),
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
        let logs: Vec<_> = self.logs.borrow_mut().drain().map(|(_, l)| l).collect();
        for log in logs {
            log.close().await;
        }
    }

    /// Whether this coordinator serves `group` (its offsets partition is loaded here).
    pub fn serves(&self, group: &str) -> bool {
        self.logs.borrow().contains_key(&offsets_partition(group))
    }

    /// The leader epoch partition `p` is loaded at (cluster), `None` if it is not loaded.
    pub fn loaded_epoch(&self, p: u32) -> Option<Option<i32>> {
        self.logs.borrow().get(&p).map(|l| l.epoch())
    }

    /// Cluster: takes over offsets partition `p` (this broker now leads it): replays its log
    /// into the groups' committed and pending offsets, then serves its groups.
    pub async fn load(&self, p: u32, log: StateLog) -> Result<(), String> {
        self.unload(p);
        let Ok(_all) = self.state_lock.write().await else {
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
        self.logs.borrow_mut().insert(p, Rc::new(log));
        Ok(())
    }

    /// Cluster: gives up offsets partition `p` (leadership moved): forgets its groups, and
    /// answers their pending joins and syncs with NOT_COORDINATOR so clients find the new one.
    pub fn unload(&self, p: u32) {
        if self.logs.borrow_mut().remove(&p).is_none() {
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

    /// Validates and durably stores a commit. Returns the group-level error (applies to every
    /// partition) or NONE.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        entries: Vec<(String, i32, Committed)>,
    ) -> i16 {
        let partitions: Vec<(String, i32)> =
            entries.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let code = match self.consumer_validate_offsets(group, member_id, generation, &partitions) {
            Some(code) => code,
            None => match self.groups.borrow().get(group) {
                Some(g) => g.validate_commit(member_id, instance_id, generation),
                None if generation < 0 => err::NONE,
                None => err::UNKNOWN_MEMBER_ID,
            },
        };
        if code != err::NONE {
            return code;
        }
        if entries.is_empty() {
            return err::NONE;
        }
        let records: Vec<crate::kvlog::KvRecord> = entries
            .iter()
            .map(|(t, p, c)| offset_record(group, t, *p, None, Some(c)))
            .collect();
        let _stored = match self.persist(group, &records).await {
            Ok(g) => g,
            Err(code) => return code,
        };
        let mut offsets = self.offsets.borrow_mut();
        let map = offsets.entry(group.to_string()).or_default();
        for (t, p, c) in entries {
            tracing::debug!(group, member_id, generation, topic = %t, partition = p, offset = c.offset, "offset committed");
            map.insert((t, p), c);
        }
        self.keep_group(group);
        err::NONE
    }

    /// A group with committed offsets is listed (an empty classic group unless it is a
    /// consumer group).
    fn keep_group(&self, group: &str) {
        if !self.is_consumer_group(group) {
            self.groups
                .borrow_mut()
                .entry(group.to_string())
                .or_insert_with(|| Group::new(group));
        }
    }

    /// Appends records to the group's offsets partition and waits for the fdatasync.
    /// The returned guard keeps compaction out until the caller has applied the change.
    async fn persist(
        &self,
        group: &str,
        records: &[crate::kvlog::KvRecord],
    ) -> Result<glommio::sync::RwLockReadGuard<'_, ()>, i16> {
        let guard = self
            .state_lock
            .read()
            .await
            .map_err(|_| err::COORDINATOR_NOT_AVAILABLE)?;
        let Some(log) = self.logs.borrow().get(&offsets_partition(group)).cloned() else {
            return Err(err::NOT_COORDINATOR);
        };
        log.append(records, sluice_engine::Durability::Synced)
            .await
            .map_err(|e| {
                tracing::warn!(group, error = %e, "storing offsets failed");
                match e {
                    StateError::Log(e) => e.kafka_code(),
                    // Kafka answers a commit the offsets partition's replicas did not take so
                    StateError::Replication(crate::api::codes::REQUEST_TIMED_OUT) => {
                        err::REQUEST_TIMED_OUT
                    }
                    StateError::Replication(crate::api::codes::NOT_LEADER_OR_FOLLOWER) => {
                        err::NOT_COORDINATOR
                    }
                    StateError::Replication(_) => err::COORDINATOR_NOT_AVAILABLE,
                }
            })?;
        Ok(guard)
    }

    /// Rewrites each offsets partition that grew well past its live state (see
    /// `kvlog::compact`): the committed and pending offsets of its groups.
    pub async fn compact(&self) {
        let Ok(_all) = self.state_lock.write().await else {
            return;
        };
        let logs: Vec<(u32, Rc<StateLog>)> = self
            .logs
            .borrow()
            .iter()
            .map(|(p, l)| (*p, l.clone()))
            .collect();
        for (p, log) in &logs {
            let mut live: Vec<crate::kvlog::KvRecord> = Vec::new();
            {
                let offsets = self.offsets.borrow();
                let pending = self.pending.borrow();
                let mine = |g: &String| offsets_partition(g) == *p;
                for (g, m) in offsets.iter().filter(|(g, _)| mine(g)) {
                    for ((t, part), c) in m {
                        live.push(offset_record(g, t, *part, None, Some(c)));
                    }
                }
                for (g, by_pid) in pending.iter().filter(|(g, _)| mine(g)) {
                    for (pid, m) in by_pid {
                        for ((t, part), c) in m {
                            live.push(offset_record(g, t, *part, Some(*pid), Some(c)));
                        }
                    }
                }
            }
            match log.compact(&live, self.cfg.compact_min_bytes).await {
                Ok(true) => {
                    tracing::info!(
                        partition = p,
                        records = live.len(),
                        "offsets partition compacted"
                    )
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(partition = p, error = %e, "compacting offsets failed"),
            }
        }
    }

    /// TxnOffsetCommit: stores offsets of producer `producer_id`'s open transaction; they
    /// become committed offsets only if the transaction commits.
    pub async fn txn_commit(
        &self,
        group: &str,
        producer_id: i64,
        member: Option<(&str, Option<&str>, i32)>,
        entries: Vec<(String, i32, Committed)>,
    ) -> i16 {
        if let Some((member_id, instance_id, generation)) = member {
            if generation >= 0 {
                let partitions: Vec<(String, i32)> =
                    entries.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
                let code =
                    match self.consumer_validate_offsets(group, member_id, generation, &partitions)
                    {
                        Some(code) => code,
                        None => match self.groups.borrow().get(group) {
                            Some(g) => g.validate_commit(member_id, instance_id, generation),
                            None => err::UNKNOWN_MEMBER_ID,
                        },
                    };
                if code != err::NONE {
                    return code;
                }
            }
        }
        let records: Vec<crate::kvlog::KvRecord> = entries
            .iter()
            .map(|(t, p, c)| offset_record(group, t, *p, Some(producer_id), Some(c)))
            .collect();
        let _stored = match self.persist(group, &records).await {
            Ok(g) => g,
            Err(code) => return code,
        };
        let mut pending = self.pending.borrow_mut();
        let map = pending
            .entry(group.to_string())
            .or_default()
            .entry(producer_id)
            .or_default();
        for (t, p, c) in entries {
            map.insert((t, p), c);
        }
        self.keep_group(group);
        err::NONE
    }

    /// Ends producer `producer_id`'s transactional offsets in `group` (the transaction
    /// coordinator's marker): on commit they become the committed offsets.
    pub async fn end_txn(&self, group: &str, producer_id: i64, commit: bool) -> i16 {
        let key = OffsetKey {
            g: group.to_string(),
            t: String::new(),
            p: -1,
            x: Some(producer_id),
        };
        let record = (
            serde_json::to_vec(&key).unwrap_or_default(),
            serde_json::to_vec(&TxnEnd { commit }).ok(),
        );
        let _stored = match self.persist(group, &[record]).await {
            Ok(g) => g,
            Err(code) => return code,
        };
        let taken = self
            .pending
            .borrow_mut()
            .get_mut(group)
            .and_then(|m| m.remove(&producer_id));
        if let (Some(done), true) = (taken, commit) {
            let mut offsets = self.offsets.borrow_mut();
            offsets.entry(group.to_string()).or_default().extend(done);
        }
        err::NONE
    }

    /// WriteTxnMarkers for offsets partition `p`: ends producer `producer_id`'s pending
    /// offsets in every group of the partition that has some (NOT_COORDINATOR unless this
    /// coordinator serves `p`).
    pub async fn end_txn_partition(&self, p: u32, producer_id: i64, commit: bool) -> i16 {
        if !self.logs.borrow().contains_key(&p) {
            return err::NOT_COORDINATOR;
        }
        let groups: Vec<String> = self
            .pending
            .borrow()
            .iter()
            .filter(|(g, m)| offsets_partition(g) == p && m.contains_key(&producer_id))
            .map(|(g, _)| g.clone())
            .collect();
        for g in groups {
            let code = self.end_txn(&g, producer_id, commit).await;
            if code != err::NONE {
                return code;
            }
        }
        err::NONE
    }

    /// Whether an open transaction holds offsets for this partition (OffsetFetch with
    /// require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending.borrow().get(group).is_some_and(|m| {
            m.values()
                .any(|o| o.contains_key(&(topic.to_string(), partition)))
        })
    }

    /// Committed offsets of a group: all, or the requested (topic, partitions).
    pub fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let offsets = self.offsets.borrow();
        let map = offsets.get(group);
        tracing::debug!(
            group,
            ?wanted,
            stored = map.map_or(0, |m| m.len()),
            "offset fetch"
        );
        match wanted {
            Some(list) => list
                .into_iter()
                .map(|(t, ps)| {
                    let v = ps
                        .into_iter()
                        .map(|p| (p, map.and_then(|m| m.get(&(t.clone(), p)).cloned())))
                        .collect();
                    (t, v)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                if let Some(m) = map {
                    for ((t, p), c) in m {
                        by_topic
                            .entry(t.clone())
                            .or_default()
                            .push((*p, Some(c.clone())));
                    }
                }
                by_topic.into_iter().collect()
            }
        }
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
                if let Some(g) = consumer.get(id) {
                    return crate::metrics::snapshot::GroupSnapshot {
                        group: id.clone(),
                        state: g.state().name().to_string(),
                        protocol_type: "consumer".into(),
                        members: g.members.len() as u64,
                        member_list: g
                            .members
                            .values()
                            .map(|m| crate::metrics::snapshot::MemberRow {
                                member_id: m.id.clone(),
                                client_id: m.client_id.clone(),
                                host: m.client_host.clone(),
                            })
                            .collect(),
                        offsets: committed(id),
                    };
                }
                if let Some(g) = share.get(id) {
                    return crate::metrics::snapshot::GroupSnapshot {
                        group: id.clone(),
                        state: g.state().name().to_string(),
                        protocol_type: "share".into(),
                        members: g.members.len() as u64,
                        member_list: g
                            .members
                            .values()
                            .map(|m| crate::metrics::snapshot::MemberRow {
                                member_id: m.id.clone(),
                                client_id: m.client_id.clone(),
                                host: m.client_host.clone(),
                            })
                            .collect(),
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

    async fn tombstone(
        &self,
        group: &str,
        keys: &[(String, i32)],
    ) -> Result<Option<glommio::sync::RwLockReadGuard<'_, ()>>, i16> {
        let records: Vec<crate::kvlog::KvRecord> = keys
            .iter()
            .map(|(t, p)| offset_record(group, t, *p, None, None))
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        self.persist(group, &records).await.map(Some)
    }

    /// Deletes committed offsets of some partitions (OffsetDelete). Refused for topics the
    /// group's active members subscribe to.
    pub async fn delete_offsets(
        &self,
        group: &str,
        wanted: Vec<(String, Vec<i32>)>,
    ) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
        let consumer = self.consumer.borrow().get(group).cloned();
        let subscribed: Vec<String> = match &consumer {
            Some(_) => Vec::new(),
            None => {
                let groups = self.groups.borrow();
                let Some(g) = groups.get(group) else {
                    return (err::GROUP_ID_NOT_FOUND, Vec::new());
                };
                let protocol = g.protocol.clone().unwrap_or_default();
                g.members
                    .values()
                    .flat_map(|m| subscribed_topics(&m.metadata(&protocol)))
                    .collect()
            }
        };
        let mut doomed = Vec::new();
        let mut out = Vec::new();
        for (t, ps) in wanted {
            let in_use = match &consumer {
                Some(g) => g.subscribes_to(&t),
                None => subscribed.contains(&t),
            };
            let code = if in_use {
                err::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                err::NONE
            };
            if code == err::NONE {
                doomed.extend(ps.iter().map(|p| (t.clone(), *p)));
            }
            out.push((t, ps.into_iter().map(|p| (p, code)).collect()));
        }
        let _stored = match self.tombstone(group, &doomed).await {
            Ok(g) => g,
            Err(code) => return (code, Vec::new()),
        };
        if let Some(m) = self.offsets.borrow_mut().get_mut(group) {
            for k in &doomed {
                m.remove(k);
            }
        }
        (err::NONE, out)
    }

    /// offsets.retention.minutes: offsets of groups that stayed empty that long are dropped.
    async fn expire_offsets(&self) {
        let cutoff = now_ms() - self.cfg.offsets_retention.as_millis() as i64;
        let expired: Vec<(String, Vec<(String, i32)>)> = {
            let groups = self.groups.borrow();
            self.offsets
                .borrow()
                .iter()
                .filter(|(g, _)| groups.get(*g).is_none_or(|x| x.is_empty()))
                .filter(|(g, _)| self.consumer.borrow().get(*g).is_none_or(|x| x.is_empty()))
                .filter(|(_, m)| m.values().all(|c| c.commit_ms < cutoff))
                .map(|(g, m)| (g.clone(), m.keys().cloned().collect()))
                .collect()
        };
        for (g, keys) in expired {
            if let Ok(_stored) = self.tombstone(&g, &keys).await {
                tracing::info!(group = %g, "committed offsets expired");
                self.offsets.borrow_mut().remove(&g);
                self.groups.borrow_mut().remove(&g);
                self.consumer.borrow_mut().remove(&g);
            }
        }
    }
}

/// Topics named in a consumer protocol subscription (ConsumerProtocolSubscription).
fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
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

/// Replays an offsets partition into the in-memory maps (committed and pending offsets).
async fn replay(
    log: &StateLog,
    offsets: &mut HashMap<String, GroupOffsets>,
    pending: &mut HashMap<String, HashMap<i64, GroupOffsets>>,
) -> Result<(), String> {
    log.replay(|k, v| {
        let Ok(key) = serde_json::from_slice::<OffsetKey>(k) else {
            return;
        };
        if let Some(pid) = key.x {
            if key.p < 0 {
                let commit = v
                    .and_then(|v| serde_json::from_slice::<TxnEnd>(v).ok())
                    .is_some_and(|e| e.commit);
                let done = pending.get_mut(&key.g).and_then(|m| m.remove(&pid));
                if let (Some(done), true) = (done, commit) {
                    offsets.entry(key.g).or_default().extend(done);
                }
            } else if let Some(c) = v.and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
                pending
                    .entry(key.g)
                    .or_default()
                    .entry(pid)
                    .or_default()
                    .insert((key.t, key.p), c);
            }
            return;
        }
        let map = offsets.entry(key.g).or_default();
        match v.and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
            Some(c) => {
                map.insert((key.t, key.p), c);
            }
            None => {
                map.remove(&(key.t, key.p));
            }
        }
    })
    .await?;
    pending.retain(|_, m| {
        m.retain(|_, o| !o.is_empty());
        !m.is_empty()
    });
    offsets.retain(|_, m| !m.is_empty());
    Ok(())
}
