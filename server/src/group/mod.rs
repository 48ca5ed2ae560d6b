//! Consumer group coordinator: each group is coordinated by one shard, chosen by hashing the
//! group id onto a fixed set of offsets partitions (`OFFSETS_PARTITIONS`, like Kafka's
//! `__consumer_offsets`) that are spread over the shards. Any shard takes a group request and
//! forwards it there.
//!
//! Committed offsets live in the coordinator's offsets partitions: engine logs under
//! `<data>/__sluice/group-offsets-<n>`, one record per committed (group, topic, partition),
//! fdatasync'd before OffsetCommit is answered and replayed (last value per key wins, a null
//! value deletes) when the shard starts.

pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use sluice_engine::{
    batch, AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, Offset, PartitionLog,
};

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
}

/// What a shard needs to coordinate groups.
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// offsets.retention.minutes
    pub offsets_retention: Duration,
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// Groups coordinated by one shard, and their committed offsets.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    logs: HashMap<u32, Rc<PartitionLog>>,
    waiters: RefCell<HashMap<WaiterId, Waiter>>,
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
    /// Opens this shard's offsets partitions and replays them.
    pub async fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        cfg: CoordinatorConfig,
    ) -> Result<Rc<Coordinator>, String> {
        let mut logs = HashMap::new();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        for p in (0..OFFSETS_PARTITIONS).filter(|p| *p as usize % shards.max(1) == shard) {
            let dir = data_dir.join("__sluice").join(format!("group-offsets-{p}"));
            let log_cfg = LogConfig {
                segment_bytes: 64 << 20,
                retention_ms: None,
                preallocate_bytes: 0,
                write_buffer_bytes: 1 << 20,
                hot_cache_bytes: 256 << 10,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(&dir, log_cfg, LogEnv::default())
                .await
                .map_err(|e| format!("opening {}: {e}", dir.display()))?;
            replay(&log, &mut offsets).await?;
            logs.insert(p, Rc::new(log));
        }
        let groups = offsets.keys().map(|g| (g.clone(), Group::new(g))).collect();
        Ok(Rc::new(Coordinator {
            cfg,
            groups: RefCell::new(groups),
            offsets: RefCell::new(offsets),
            logs,
            waiters: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(1),
        }))
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
                if now.duration_since(last_retention) >= Duration::from_secs(60) {
                    last_retention = now;
                    me.expire_offsets().await;
                }
            }
        })
        .detach()
    }

    pub async fn close(&self) {
        for log in self.logs.values() {
            let _ = log.close().await;
        }
    }

    fn waiter(&self, w: Waiter) -> WaiterId {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        self.waiters.borrow_mut().insert(id, w);
        id
    }

    fn deliver(&self, replies: Vec<Reply>) {
        let mut waiters = self.waiters.borrow_mut();
        for r in replies {
            match r {
                Reply::Join(id, resp) => {
                    if let Some(Waiter::Join(tx)) = waiters.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                Reply::Sync(id, resp) => {
                    if let Some(Waiter::Sync(tx)) = waiters.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
            }
        }
    }

    pub async fn join(&self, group: &str, req: JoinRequest) -> JoinResponse {
        let (tx, rx) = oneshot::channel();
        let w = self.waiter(Waiter::Join(tx));
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
        let w = self.waiter(Waiter::Sync(tx));
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
        let code = match self.groups.borrow().get(group) {
            Some(g) => g.validate_commit(member_id, instance_id, generation),
            None if generation < 0 => err::NONE,
            None => err::UNKNOWN_MEMBER_ID,
        };
        if code != err::NONE {
            return code;
        }
        if entries.is_empty() {
            return err::NONE;
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries
            .iter()
            .map(|(t, p, c)| {
                let key = OffsetKey {
                    g: group.to_string(),
                    t: t.clone(),
                    p: *p,
                };
                (
                    serde_json::to_vec(&key).unwrap_or_default(),
                    serde_json::to_vec(c).ok(),
                )
            })
            .collect();
        if let Err(code) = self.persist(group, &records).await {
            return code;
        }
        let mut offsets = self.offsets.borrow_mut();
        let map = offsets.entry(group.to_string()).or_default();
        for (t, p, c) in entries {
            map.insert((t, p), c);
        }
        self.groups
            .borrow_mut()
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group));
        err::NONE
    }

    /// Appends records to the group's offsets partition and waits for the fdatasync.
    async fn persist(
        &self,
        group: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), i16> {
        let Some(log) = self.logs.get(&offsets_partition(group)) else {
            return Err(err::COORDINATOR_NOT_AVAILABLE);
        };
        let ts = now_ms();
        for chunk in records.chunks(1000) {
            let recs: Vec<batch::NewRecord<'_>> = chunk
                .iter()
                .map(|(k, v)| batch::NewRecord {
                    key: Some(k),
                    value: v.as_deref(),
                    timestamp: ts,
                })
                .collect();
            let b = batch::build(&recs);
            if let Err(e) = log
                .append_durable(&b, AppendOptions::default(), Durability::Synced)
                .await
            {
                tracing::error!(group, error = %e, "storing offsets failed");
                return Err(e.kafka_code());
            }
        }
        Ok(())
    }

    /// Committed offsets of a group: all, or the requested (topic, partitions).
    pub fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let offsets = self.offsets.borrow();
        let map = offsets.get(group);
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

    /// (group id, protocol type, state) of every group, optionally filtered by state names.
    pub fn list(&self, states: &[String]) -> Vec<(String, String, &'static str)> {
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
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
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
        match self.groups.borrow().get(group) {
            None => return err::GROUP_ID_NOT_FOUND,
            Some(g) if !g.is_empty() => return err::NON_EMPTY_GROUP,
            Some(_) => {}
        }
        let keys: Vec<(String, i32)> = self
            .offsets
            .borrow()
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Err(code) = self.tombstone(group, &keys).await {
            return code;
        }
        self.offsets.borrow_mut().remove(group);
        self.groups.borrow_mut().remove(group);
        err::NONE
    }

    async fn tombstone(&self, group: &str, keys: &[(String, i32)]) -> Result<(), i16> {
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
            .iter()
            .map(|(t, p)| {
                let key = OffsetKey {
                    g: group.to_string(),
                    t: t.clone(),
                    p: *p,
                };
                (serde_json::to_vec(&key).unwrap_or_default(), None)
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        self.persist(group, &records).await
    }

    /// Deletes committed offsets of some partitions (OffsetDelete). Refused for topics the
    /// group's active members subscribe to.
    pub async fn delete_offsets(
        &self,
        group: &str,
        wanted: Vec<(String, Vec<i32>)>,
    ) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
        let subscribed: Vec<String> = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(group) else {
                return (err::GROUP_ID_NOT_FOUND, Vec::new());
            };
            let protocol = g.protocol.clone().unwrap_or_default();
            g.members
                .values()
                .flat_map(|m| subscribed_topics(&m.metadata(&protocol)))
                .collect()
        };
        let mut doomed = Vec::new();
        let mut out = Vec::new();
        for (t, ps) in wanted {
            let code = if subscribed.contains(&t) {
                err::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                err::NONE
            };
            if code == err::NONE {
                doomed.extend(ps.iter().map(|p| (t.clone(), *p)));
            }
            out.push((t, ps.into_iter().map(|p| (p, code)).collect()));
        }
        if let Err(code) = self.tombstone(group, &doomed).await {
            return (code, Vec::new());
        }
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
                .filter(|(_, m)| m.values().all(|c| c.commit_ms < cutoff))
                .map(|(g, m)| (g.clone(), m.keys().cloned().collect()))
                .collect()
        };
        for (g, keys) in expired {
            if self.tombstone(&g, &keys).await.is_ok() {
                tracing::info!(group = %g, "committed offsets expired");
                self.offsets.borrow_mut().remove(&g);
                self.groups.borrow_mut().remove(&g);
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

/// Replays an offsets partition into the in-memory map.
async fn replay(
    log: &PartitionLog,
    offsets: &mut HashMap<String, GroupOffsets>,
) -> Result<(), String> {
    let mut next = log.offsets().log_start;
    let end = log.offsets().high_watermark;
    while next < end {
        let r = log
            .read(next, 1 << 20, FirstBatch::Always)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = r.data.to_vec().map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        for b in batch::split_batches(&bytes) {
            let Some(h) = batch::BatchHeader::parse(b) else {
                break;
            };
            next = Offset(h.last().get() + 1);
            for rec in batch::records(b).unwrap_or_default() {
                let Some(key) = rec
                    .key
                    .and_then(|k| serde_json::from_slice::<OffsetKey>(k).ok())
                else {
                    continue;
                };
                let map = offsets.entry(key.g.clone()).or_default();
                match rec
                    .value
                    .and_then(|v| serde_json::from_slice::<Committed>(v).ok())
                {
                    Some(c) => {
                        map.insert((key.t, key.p), c);
                    }
                    None => {
                        map.remove(&(key.t, key.p));
                    }
                }
            }
        }
    }
    offsets.retain(|_, m| !m.is_empty());
    Ok(())
}
