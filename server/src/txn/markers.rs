//! What the transaction coordinator and the partition leaders say to each other: COMMIT/ABORT
//! markers at the end of a transaction, and (cluster) a partition leader's check that a
//! transactional batch's partition is in its producer's open transaction.
//!
//! Data path of EndTxn's markers ([`write_markers`]): the transaction's partitions and groups
//! are split by where they are led -> partitions led here get the marker on their owning shard
//! ([`append_marker`]: stamped with the leader epoch, fdatasync'd and, in a cluster, confirmed
//! by the in-sync replicas); groups coordinated here end their pending offsets -> everything
//! led by another broker goes to it as one WriteTxnMarkers request (`__consumer_offsets`
//! partitions stand for the groups hashed onto them) -> the transaction completes only when
//! every part answered; otherwise it stays in its Prepare state and is retried.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::producer::build_marker;
use sluice_engine::{AppendOptions, Durability, LogError};

use super::{err, now_ms, TxnMeta};
use crate::cluster::coordinators::{self, OFFSETS_TOPIC};
use crate::cluster::image::BrokerId;
use crate::cluster::peer;
use crate::shard::{Shard, TopicPartition};

/// How long a marker waits for the partition's in-sync replicas, and a remote broker for
/// its answer.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const ADD_PARTITIONS_VERSION: i16 = 4;

/// Appends the COMMIT/ABORT marker of producer `pid` at `epoch` to `tp` on its owning shard
/// `owner` and waits until it is durable (cluster: on the in-sync replicas). A partition
/// that is gone, or already past this producer epoch, needs nothing.
pub async fn append_marker(
    owner: &Rc<Shard>,
    tp: &TopicPartition,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), i16> {
    let log = match owner.owned_log(tp).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "cannot open partition for a marker");
            return Err(err::KAFKA_STORAGE_ERROR);
        }
    };
    let shared = &owner.shared;
    let leader_epoch = if shared.is_clustered() {
        shared.leader_check(&tp.topic, tp.partition)?;
        shared
            .partition_view(&tp.topic, tp.partition)
            .map_or(0, |v| v.leader_epoch)
    } else {
        0
    };
    let marker = build_marker(pid, epoch, commit, 0, now_ms());
    let opts = AppendOptions {
        leader_epoch,
        ..AppendOptions::default()
    };
    let info = match log.append_durable(&marker, opts, Durability::Synced).await {
        Ok(info) => info,
        // the partition already moved past this producer epoch: nothing open
        Err(LogError::Producer(e)) => {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "marker refused");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "writing a marker failed");
            return Err(e.kafka_code());
        }
    };
    if shared.is_clustered() {
        crate::cluster::replica::wait_replicated(
            owner,
            tp,
            &log,
            info.last_offset,
            Instant::now() + MARKER_TIMEOUT,
        )
        .await?;
    }
    Ok(())
}

/// Appends markers to partitions of this broker, each on its owning shard, in parallel.
async fn mark_local(
    shard: &Rc<Shard>,
    tps: Vec<TopicPartition>,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), String> {
    let mut by_owner: BTreeMap<usize, Vec<TopicPartition>> = BTreeMap::new();
    {
        let st = shard.shared.catalog.read();
        for tp in tps {
            // a deleted topic has nothing left to mark
            if let Some(owner) = st
                .topics
                .get(&*tp.topic)
                .and_then(|i| i.shards.get(tp.partition as usize).copied())
            {
                by_owner.entry(owner).or_default().push(tp);
            }
        }
    }
    let mut tasks = Vec::new();
    for (owner, tps) in by_owner {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            s.call(owner, move |o| async move {
                for tp in tps {
                    append_marker(&o, &tp, pid, epoch, commit)
                        .await
                        .map_err(|code| format!("{}-{}: error {code}", tp.topic, tp.partition))?;
                }
                Ok::<(), String>(())
            })
            .await
            .map_err(|e| e.to_string())?
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Ends producer `pid`'s pending offsets in `group`, coordinated on this broker.
async fn end_local_group(
    shard: &Rc<Shard>,
    group: String,
    pid: i64,
    commit: bool,
) -> Result<(), String> {
    let target = crate::group::coordinator_shard(&group, shard.nr);
    let code = shard
        .call(target, move |o| async move {
            match o.coordinator() {
                Some(c) if c.serves(&group) => c.end_txn(&group, pid, commit).await,
                Some(_) => err::NOT_COORDINATOR,
                None => err::COORDINATOR_NOT_AVAILABLE,
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    if code != err::NONE {
        return Err(format!("group offsets: error {code}"));
    }
    Ok(())
}

/// Sends one WriteTxnMarkers request with `tps` to `broker` and checks every answer.
async fn mark_remote(
    shard: &Rc<Shard>,
    broker: BrokerId,
    tps: Vec<(String, i32)>,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), String> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(p);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(0)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partition_indexes(ps)
                })
                .collect(),
        )]);
    let resp: WriteTxnMarkersResponse = peer::call(
        &shard.shared,
        broker,
        ApiKey::WriteTxnMarkers,
        WRITE_TXN_MARKERS_VERSION,
        &req,
        MARKER_TIMEOUT,
    )
    .await
    .map_err(|e| format!("WriteTxnMarkers to broker {broker}: {e}"))?;
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                if p.error_code != err::NONE {
                    return Err(format!(
                        "broker {broker}: {}-{}: error {}",
                        t.name.as_str(),
                        p.partition_index,
                        p.error_code
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Writes the COMMIT/ABORT marker to every partition of the transaction and ends its
/// offsets in its groups, wherever they are led. Err: some part did not confirm (retried).
pub async fn write_markers(shard: &Rc<Shard>, m: &TxnMeta, commit: bool) -> Result<(), String> {
    let (pid, epoch) = (m.producer_id, m.epoch);
    let me = shard.shared.config.node_id;
    let mut local: Vec<TopicPartition> = Vec::new();
    let mut local_groups: Vec<String> = Vec::new();
    let mut remote: BTreeMap<BrokerId, Vec<(String, i32)>> = BTreeMap::new();
    if shard.shared.is_clustered() {
        for (t, p) in &m.partitions {
            // a deleted topic has nothing left to mark
            let Some(v) = shard.shared.partition_view(t, *p) else {
                continue;
            };
            if v.leader == me {
                local.push(TopicPartition::new(t, *p));
            } else if v.leader >= 0 {
                remote.entry(v.leader).or_default().push((t.clone(), *p));
            } else {
                return Err(format!("{t}-{p} has no leader"));
            }
        }
        for g in &m.groups {
            let p = crate::group::offsets_partition(g) as i32;
            let leader = coordinators::coordinator_for(
                &shard.shared,
                shard.shared.inter_broker,
                coordinators::KEY_GROUP,
                g,
            )
            .map_err(|code| format!("group {g}: coordinator error {code}"))?
            .id;
            if leader == me {
                local_groups.push(g.clone());
            } else {
                let parts = remote.entry(leader).or_default();
                if !parts.iter().any(|(t, q)| t == OFFSETS_TOPIC && *q == p) {
                    parts.push((OFFSETS_TOPIC.to_string(), p));
                }
            }
        }
    } else {
        local = m
            .partitions
            .iter()
            .map(|(t, p)| TopicPartition::new(t, *p))
            .collect();
        local_groups = m.groups.iter().cloned().collect();
    }
    let mut tasks = Vec::new();
    {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            mark_local(&s, local, pid, epoch, commit).await
        }));
    }
    for g in local_groups {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            end_local_group(&s, g, pid, commit).await
        }));
    }
    for (broker, tps) in remote {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            mark_remote(&s, broker, tps, pid, epoch, commit).await
        }));
    }
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// WriteTxnMarkers from a transaction coordinator on another broker: one marker of producer
/// `pid` for partition `tp` of this broker (a `__consumer_offsets` partition ends the pending
/// offsets of the groups coordinated on it). Returns the partition's error code.
pub async fn handle_marker(
    shard: &Rc<Shard>,
    tp: TopicPartition,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> i16 {
    if &*tp.topic == OFFSETS_TOPIC {
        let p = tp.partition as u32;
        let target = p as usize % shard.nr.max(1);
        return shard
            .call(target, move |o| async move {
                match o.coordinator() {
                    Some(c) => c.end_txn_partition(p, pid, commit).await,
                    None => err::COORDINATOR_NOT_AVAILABLE,
                }
            })
            .await
            .unwrap_or(err::COORDINATOR_NOT_AVAILABLE);
    }
    let owner = {
        let st = shard.shared.catalog.read();
        st.topics
            .get(&*tp.topic)
            .and_then(|i| i.shards.get(tp.partition as usize).copied())
    };
    let Some(owner) = owner else {
        return err::UNKNOWN_TOPIC_OR_PARTITION;
    };
    shard
        .call(owner, move |o| async move {
            match append_marker(&o, &tp, pid, epoch, commit).await {
                Ok(()) => err::NONE,
                Err(code) => code,
            }
        })
        .await
        .unwrap_or(err::COORDINATOR_NOT_AVAILABLE)
}

/// Cluster: asks the coordinator of transactional id `id` on another broker whether `tp` is
/// in producer `pid`'s open transaction (AddPartitionsToTxn v4 with verify_only, KIP-890).
pub async fn verify_remote(
    shard: &Rc<Shard>,
    id: &str,
    pid: i64,
    epoch: i16,
    tp: &(String, i32),
) -> i16 {
    let coordinator = match coordinators::coordinator_for(
        &shard.shared,
        shard.shared.inter_broker,
        coordinators::KEY_TRANSACTION,
        id,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(tp.0.clone())))
                .with_partitions(vec![tp.1])]),
    ]);
    let resp: AddPartitionsToTxnResponse = match peer::call(
        &shard.shared,
        coordinator.id,
        ApiKey::AddPartitionsToTxn,
        ADD_PARTITIONS_VERSION,
        &req,
        MARKER_TIMEOUT,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(transactional_id = id, error = %e, "transaction verification failed");
            return err::COORDINATOR_NOT_AVAILABLE;
        }
    };
    if resp.error_code != err::NONE {
        return resp.error_code;
    }
    resp.results_by_transaction
        .iter()
        .flat_map(|r| &r.topic_results)
        .flat_map(|t| &t.results_by_partition)
        .find(|p| p.partition_index == tp.1)
        .map_or(err::INVALID_TXN_STATE, |p| p.partition_error_code)
}
