//! Transaction APIs: InitProducerId (with a transactional id), AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, TxnOffsetCommit, ListTransactions, DescribeTransactions and
//! DescribeProducers. Each transactional request is forwarded to the shard coordinating its
//! transactional id (see `crate::txn`); TxnOffsetCommit goes to the group's coordinator.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::{coordinator_shard, Committed};
use crate::shard::{Shard, TopicPartition};
use crate::txn::{err, txn_shard, TxnCoordinator};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Runs `f` with the transaction coordinator of `id` on its shard.
async fn on_txn_coordinator<R, F, Fut>(shard: &Rc<Shard>, id: &str, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, Rc<TxnCoordinator>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let target = txn_shard(id, shard.nr);
    let key = id.to_string();
    shard
        .call(target, move |s| async move {
            // in a cluster only the leader of the id's state partition serves it
            let c = s.txn().filter(|c| c.serves(&key))?;
            Some(f(s, c).await)
        })
        .await
        .ok()
        .flatten()
}

/// InitProducerId for a transactional producer.
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let fail = |code| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if id.is_empty() {
        return fail(crate::api::codes::INVALID_REQUEST);
    }
    let expected = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
        .then_some((req.producer_id.0, req.producer_epoch));
    let timeout = req.transaction_timeout_ms;
    let r = on_txn_coordinator(shard, &id.clone(), move |s, c| async move {
        c.init_producer(&s, &id, timeout, expected).await
    })
    .await
    .unwrap_or(Err(err::COORDINATOR_NOT_AVAILABLE));
    match r {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(code) => fail(code),
    }
}

pub async fn add_partitions(
    shard: &Rc<Shard>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    // v0-3: one transaction in top-level fields; v4+: a batch of them
    let txns: Vec<_> = if version <= 3 {
        vec![(
            req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id,
            req.v3_and_below_producer_epoch,
            false,
            req.v3_and_below_topics,
        )]
    } else {
        req.transactions
            .into_iter()
            .map(|t| {
                (
                    t.transactional_id,
                    t.producer_id,
                    t.producer_epoch,
                    t.verify_only,
                    t.topics,
                )
            })
            .collect()
    };
    let mut results = Vec::new();
    for (tid, pid, epoch, verify_only, topics) in txns {
        let wanted: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
            .collect();
        let id = tid.to_string();
        let w = wanted.clone();
        let codes = on_txn_coordinator(shard, &id.clone(), move |s, c| async move {
            c.add_partitions(&s, &id, pid.0, epoch, w, verify_only)
                .await
        })
        .await
        .unwrap_or_else(|| {
            wanted
                .iter()
                .map(|tp| (tp.clone(), err::COORDINATOR_NOT_AVAILABLE))
                .collect()
        });
        let topic_results = topics
            .iter()
            .map(|t| {
                let name = t.name.to_string();
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = codes
                                    .iter()
                                    .find(|((tn, tp), _)| *tn == name && tp == p)
                                    .map_or(err::COORDINATOR_NOT_AVAILABLE, |(_, c)| *c);
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>();
        results.push((tid, topic_results));
    }
    if version <= 3 {
        let topics = results.pop().map(|(_, t)| t).unwrap_or_default();
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
    } else {
        AddPartitionsToTxnResponse::default().with_results_by_transaction(
            results
                .into_iter()
                .map(|(tid, topics)| {
                    AddPartitionsToTxnResult::default()
                        .with_transactional_id(tid)
                        .with_topic_results(topics)
                })
                .collect(),
        )
    }
}

pub async fn add_offsets(
    shard: &Rc<Shard>,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.to_string();
    let group = req.group_id.to_string();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let code = if group.is_empty() {
        crate::group::state::err::INVALID_GROUP_ID
    } else {
        on_txn_coordinator(shard, &id.clone(), move |_, c| async move {
            c.add_offsets(&id, pid, epoch, &group).await
        })
        .await
        .unwrap_or(err::COORDINATOR_NOT_AVAILABLE)
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn end_txn(shard: &Rc<Shard>, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.to_string();
    let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let code = on_txn_coordinator(shard, &id.clone(), move |s, c| async move {
        c.end(&s, &id, pid, epoch, commit).await
    })
    .await
    .unwrap_or(err::COORDINATOR_NOT_AVAILABLE);
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
}

/// TxnOffsetCommit: offsets that become visible when the transaction commits.
pub async fn txn_offset_commit(
    shard: &Rc<Shard>,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // partitions that do not exist answer UNKNOWN_TOPIC_OR_PARTITION and are not stored, as in
    // Kafka's request handler; the others get the coordinator's answer
    let known: Vec<Vec<bool>> = req
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| crate::api::groups::partition_exists(shard, &t.name, p.partition_index))
                .collect()
        })
        .collect();
    let entries: Vec<(String, i32, Committed)> = req
        .topics
        .iter()
        .zip(&known)
        .flat_map(|(t, known)| {
            t.partitions
                .iter()
                .zip(known)
                .filter(|(_, k)| **k)
                .map(move |(p, _)| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_ms: now,
                        },
                    )
                })
        })
        .collect();
    let nothing_to_store = entries.is_empty() && !req.topics.is_empty();
    // the producer must be the transaction's current one
    let id = req.transactional_id.to_string();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let owner = on_txn_coordinator(shard, &id.clone(), move |_, c| async move {
        match c.get(&id) {
            None => err::INVALID_PRODUCER_ID_MAPPING,
            Some(m) if m.producer_id != pid => err::INVALID_PRODUCER_ID_MAPPING,
            Some(m) if m.epoch != epoch => err::PRODUCER_FENCED,
            Some(_) => err::NONE,
        }
    })
    .await
    .unwrap_or(err::COORDINATOR_NOT_AVAILABLE);
    let code = if owner != err::NONE {
        owner
    } else if nothing_to_store {
        err::NONE
    } else if group.is_empty() {
        crate::group::state::err::INVALID_GROUP_ID
    } else {
        let member = req.member_id.to_string();
        let iid = req.group_instance_id.as_ref().map(|i| i.to_string());
        let generation = req.generation_id;
        let g = group.clone();
        let target = coordinator_shard(&group, shard.nr);
        shard
            .call(target, move |s| async move {
                match s.coordinator() {
                    Some(c) => {
                        let who = (!member.is_empty()).then_some((
                            member.as_str(),
                            iid.as_deref(),
                            generation,
                        ));
                        c.txn_commit(&g, pid, who, entries).await
                    }
                    None => err::COORDINATOR_NOT_AVAILABLE,
                }
            })
            .await
            .unwrap_or(err::COORDINATOR_NOT_AVAILABLE)
    };
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .zip(known)
            .map(|(t, known)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(known)
                            .map(|(p, k)| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if k {
                                        code
                                    } else {
                                        err::UNKNOWN_TOPIC_OR_PARTITION
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub async fn list_transactions(
    shard: &Rc<Shard>,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    const STATES: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<StrBytes> = states
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .map(|x| s(x.clone()))
        .collect();
    let pattern = match req.transactional_id_pattern.as_ref().map(|p| p.to_string()) {
        Some(p) if !p.is_empty() => match regex::Regex::new(&p) {
            Ok(_) => Some(p),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(crate::api::codes::INVALID_REQUEST)
            }
        },
        _ => None,
    };
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = req.duration_filter;
    let mut all = Vec::new();
    for target in 0..shard.nr {
        let (states, pids, pattern) = (states.clone(), pids.clone(), pattern.clone());
        let part = shard
            .call(target, move |s| async move {
                let re = pattern.and_then(|p| regex::Regex::new(&p).ok());
                s.txn()
                    .map(|c| c.list(&states, &pids, duration, re.as_ref()))
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
        all.extend(part);
    }
    all.sort();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(
            all.into_iter()
                .map(|(id, pid, state)| {
                    ListedTxn::default()
                        .with_transactional_id(TransactionalId(s(id)))
                        .with_producer_id(ProducerId(pid))
                        .with_transaction_state(s(state))
                })
                .collect(),
        )
}

pub async fn describe_transactions(
    shard: &Rc<Shard>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut out = Vec::new();
    for tid in req.transactional_ids {
        let id = tid.to_string();
        let meta =
            on_txn_coordinator(shard, &id.clone(), move |_, c| async move { c.get(&id) }).await;
        let d = DescribedTxn::default().with_transactional_id(tid);
        out.push(match meta {
            None => d.with_error_code(err::COORDINATOR_NOT_AVAILABLE),
            Some(None) => d.with_error_code(err::TRANSACTIONAL_ID_NOT_FOUND),
            Some(Some(m)) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in &m.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.as_str() == t => last.partitions.push(*p),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(s(t.clone())))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                d.with_transaction_state(s(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.started_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(topics)
            }
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(out)
}

pub async fn describe_producers(
    shard: &Rc<Shard>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let owners = shard.topic_owners(&name);
        let mut parts = Vec::new();
        for p in t.partition_indexes {
            let owner = owners
                .as_ref()
                .and_then(|o| usize::try_from(p).ok().and_then(|i| o.get(i).copied()));
            let pr = PartitionResponse::default().with_partition_index(p);
            let Some(owner) = owner else {
                parts.push(pr.with_error_code(err::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let tp = TopicPartition::new(&name, p);
            let states = shard
                .call(owner, move |o| async move {
                    match o.owned_log(&tp).await {
                        Ok(Some(log)) => Some(log.producers()),
                        _ => None,
                    }
                })
                .await
                .ok()
                .flatten();
            parts.push(match states {
                None => pr.with_error_code(err::UNKNOWN_TOPIC_OR_PARTITION),
                Some(v) => pr.with_active_producers(
                    v.into_iter()
                        .map(|(pid, e)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(pid))
                                .with_producer_epoch(e.epoch as i32)
                                .with_last_sequence(e.last_seq().unwrap_or(-1))
                                .with_last_timestamp(e.last_ms)
                                .with_coordinator_epoch(e.coordinator_epoch)
                                .with_current_txn_start_offset(e.txn_first.map_or(-1, |f| f as i64))
                        })
                        .collect(),
                ),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

/// WriteTxnMarkers (inter-broker): a transaction coordinator on another broker ends a
/// transaction on partitions led here (see `crate::txn::markers`).
pub async fn write_txn_markers(
    shard: &Rc<Shard>,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let (pid, epoch, commit) = (m.producer_id.0, m.producer_epoch, m.transaction_result);
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let tp = TopicPartition::new(t.name.as_str(), p);
                let code = crate::txn::markers::handle_marker(shard, tp, pid, epoch, commit).await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
