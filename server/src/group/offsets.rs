//! Committed offsets of the groups a coordinator serves: engine logs under
//! `<data>/__sluice/group-offsets-<n>` (`kvlog`), one record per committed (group, topic,
//! partition), fdatasync'd before OffsetCommit is answered and replayed at start (last value per
//! key wins, a null value deletes); transactional offsets stay pending for their producer until
//! the transaction's marker; tombstones for DeleteGroups, OffsetDelete and expiry.
//!
//! Data path: OffsetCommit / TxnOffsetCommit -> `Coordinator::commit` / `txn_commit` (the
//! member checked by its group's kind) -> [`Coordinator::persist`] (append, fdatasync) -> the
//! in-memory maps OffsetFetch reads.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::state::{err, Group};
use super::{now_ms, offsets_partition, subscribed_topics, Coordinator};
use crate::kvlog::{PersistError, StateError, StateLog};

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

impl Coordinator {
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
            .logs
            .append(
                offsets_partition(group),
                records,
                sluice_engine::Durability::Synced,
            )
            .await
            .map_err(|e| {
                tracing::warn!(group, error = %e, "storing offsets failed");
                match e {
                    PersistError::Closed => err::COORDINATOR_NOT_AVAILABLE,
                    PersistError::NotServed => err::NOT_COORDINATOR,
                    PersistError::State(StateError::Log(e)) => e.kafka_code(),
                    // Kafka answers a commit the offsets partition's replicas did not take so
                    PersistError::State(StateError::Replication(
                        crate::api::codes::REQUEST_TIMED_OUT,
                    )) => err::REQUEST_TIMED_OUT,
                    PersistError::State(StateError::Replication(
                        crate::api::codes::NOT_LEADER_OR_FOLLOWER,
                    )) => err::NOT_COORDINATOR,
                    PersistError::State(StateError::Replication(_)) => {
                        err::COORDINATOR_NOT_AVAILABLE
                    }
                }
            })?;
        Ok(guard)
    }

    /// Rewrites each offsets partition that grew well past its live state (see
    /// `kvlog::compact`): the committed and pending offsets of its groups.
    pub async fn compact(&self) {
        let live = |p: u32| -> Vec<crate::kvlog::KvRecord> {
            let mut live = Vec::new();
            let offsets = self.offsets.borrow();
            let pending = self.pending.borrow();
            let mine = |g: &String| offsets_partition(g) == p;
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
            live
        };
        self.logs
            .compact(self.cfg.compact_min_bytes, "offsets", live)
            .await;
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
        if !self.logs.serves(p) {
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

    pub(super) async fn tombstone(
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
    pub(super) async fn expire_offsets(&self) {
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

/// Replays an offsets partition into the in-memory maps (committed and pending offsets).
pub(super) async fn replay(
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
