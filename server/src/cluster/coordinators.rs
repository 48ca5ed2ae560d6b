//! Group and transaction coordinators in a cluster: their state lives in internal topics
//! replicated like any partition, and each coordinator runs where its state partition's leader
//! is (Kafka's shape).
//!
//! Data path: the controller creates `__consumer_offsets` and `__transaction_state`
//! ([`OFFSETS_TOPIC`], [`TXN_TOPIC`], 16 partitions each, replication factor up to
//! [`INTERNAL_REPLICATION_FACTOR`]) once enough brokers registered -> every broker's catalog
//! places partition `p` on shard `p % shards`, the shard whose coordinator serves the keys
//! hashed to `p` -> the replica reconcile loop calls [`reconcile`] for each internal partition
//! -> the leader's coordinator loads the partition's log (replays it to its end) and serves
//! its groups or transactional ids; a coordinator whose partition moved away unloads it ->
//! each state change is appended at the leader epoch and answered once the in-sync replicas
//! have it (`kvlog::StateLog`) -> FindCoordinator answers with the partition's leader
//! ([`coordinator_for`]); a broker that does not serve a key answers NOT_COORDINATOR or
//! COORDINATOR_NOT_AVAILABLE and clients look again.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_engine::PartitionLog;

use super::image::{assign_replicas, BrokerId, Command, Image};
use super::view::BrokerView;
use crate::kvlog::StateLog;
use crate::shard::{BrokerShared, Shard, TopicPartition};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
pub const TXN_TOPIC: &str = "__transaction_state";
/// offsets.topic.replication.factor / transaction.state.log.replication.factor (Kafka's 3).
pub const INTERNAL_REPLICATION_FACTOR: usize = 3;

/// FindCoordinator key types.
pub const KEY_GROUP: i8 = 0;
pub const KEY_TRANSACTION: i8 = 1;

/// Whether `topic` is one of the internal state topics (clients may not produce to them).
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TXN_TOPIC
}

/// The shard that holds partition `p` of an internal topic: the one whose coordinators
/// serve the keys hashed onto it.
pub fn internal_shard(topic: &str, p: usize, shards: usize) -> Option<usize> {
    is_internal(topic).then(|| p % shards.max(1))
}

/// Configs of the internal topics: never deleted by retention (their coordinator compacts
/// them), small segments so that compaction frees space.
fn internal_configs() -> BTreeMap<String, String> {
    [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "1048576"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Controller duty: the commands creating the internal topics that do not exist yet, once
/// as many brokers are live as the replication factor wants (or as there are voters, for a
/// smaller cluster).
pub fn missing_internal_topics(image: &Image, voters: usize) -> Vec<Command> {
    let live: Vec<BrokerId> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| b.id)
        .collect();
    let rf = INTERNAL_REPLICATION_FACTOR.min(voters.max(1));
    if image.cluster_id.is_empty() || live.len() < rf {
        return Vec::new();
    }
    let (offsets, txns) = (
        crate::group::OFFSETS_PARTITIONS as usize,
        crate::txn::TXN_PARTITIONS as usize,
    );
    [(OFFSETS_TOPIC, offsets), (TXN_TOPIC, txns)]
        .into_iter()
        .filter(|(name, _)| !image.topics.contains_key(*name))
        .filter_map(|(name, partitions)| {
            let assignment = assign_replicas(&live, partitions, rf, 0).ok()?;
            Some(Command::CreateTopic {
                name: name.to_string(),
                id: uuid::Uuid::new_v4(),
                assignment,
                configs: internal_configs(),
            })
        })
        .collect()
}

/// FindCoordinator: the broker leading the state partition of `key`, at its endpoint of
/// listener `listener` (an index into this broker's listeners), or the Kafka error to answer
/// (COORDINATOR_NOT_AVAILABLE while the topic does not exist or has no leader).
pub fn coordinator_for(
    shared: &BrokerShared,
    listener: usize,
    key_type: i8,
    key: &str,
) -> Result<BrokerView, i16> {
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    let Some(image) = shared.image() else {
        // a single node coordinates everything itself
        return shared
            .brokers(listener)
            .into_iter()
            .next()
            .ok_or(COORDINATOR_NOT_AVAILABLE);
    };
    let (topic, p) = match key_type {
        KEY_TRANSACTION => (TXN_TOPIC, crate::txn::txn_partition(key)),
        _ => (OFFSETS_TOPIC, crate::group::offsets_partition(key)),
    };
    let leader = image
        .topics
        .get(topic)
        .and_then(|t| t.partitions.get(p as usize))
        .map(|st| st.leader)
        .ok_or(COORDINATOR_NOT_AVAILABLE)?;
    image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .and_then(|b| BrokerView::of(b, &shared.listeners[listener].name))
        .ok_or(COORDINATOR_NOT_AVAILABLE)
}

/// Replica reconcile hook for an internal partition this shard holds: loads it into its
/// coordinator when this broker leads it at `leading` (its leader epoch), unloads it when not.
pub async fn reconcile(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    log: &Rc<PartitionLog>,
    leading: Option<i32>,
) {
    let p = tp.partition as u32;
    match &*tp.topic {
        OFFSETS_TOPIC => {
            let Some(c) = shard.coordinator() else { return };
            match leading {
                Some(epoch) if c.loaded_epoch(p) != Some(Some(epoch)) => {
                    let state = StateLog::replicated(shard, tp.clone(), log.clone(), epoch);
                    if let Err(e) = c.load(p, state).await {
                        tracing::warn!(partition = p, error = %e, "loading offsets partition failed");
                        c.unload(p);
                    }
                }
                Some(_) => {}
                None => c.unload(p),
            }
        }
        TXN_TOPIC => {
            let Some(c) = shard.txn() else { return };
            match leading {
                Some(epoch) if c.loaded_epoch(p) != Some(Some(epoch)) => {
                    let state = StateLog::replicated(shard, tp.clone(), log.clone(), epoch);
                    if let Err(e) = c.load(p, state).await {
                        tracing::warn!(partition = p, error = %e, "loading transaction state failed");
                        c.unload(p);
                    }
                }
                Some(_) => {}
                None => c.unload(p),
            }
        }
        _ => {}
    }
}
