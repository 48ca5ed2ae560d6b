//! Produce: split by owning shard, append on the owner, answer per acks.
//!
//! acks=0: appended, no response. acks=1: answered once the batch is handed to the kernel
//! (the O_DIRECT write completed). acks=-1 (all): answered only after a group-committed
//! fdatasync covering the batch.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::{batch, AppendOptions, Durability, LogError, TimestampType};

use super::{codes, topics};
use crate::shard::{Shard, TopicPartition};

/// One partition's part of a produce request, as sent to its owner.
struct Part {
    slot: (usize, usize),
    tp: TopicPartition,
    records: Option<Bytes>,
    timestamp_type: TimestampType,
    /// The topic's compression.type and how far batches are checked.
    compression: crate::compression::Policy,
    /// Produce v7+ may carry zstd batches (Kafka answers UNSUPPORTED_COMPRESSION_TYPE below).
    allow_zstd: bool,
    /// The request's transactional id (transactional batches are verified against it).
    txn_id: Option<Arc<str>>,
    /// Cluster mode: the leader epoch stamped into the batches.
    leader_epoch: i32,
    /// Cluster mode with acks=all: also wait for the in-sync replicas, until this deadline.
    replicated: Option<std::time::Instant>,
    /// cleanup.policy includes compact: every record needs a key.
    compacted: bool,
}

/// The owner's answer for one partition.
#[derive(Debug, Clone)]
struct PartResult {
    error: i16,
    message: Option<String>,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// KIP-467: the records (index within their batch) that made the batch fail.
    record_errors: Vec<(i32, String)>,
}

impl PartResult {
    fn error(code: i16, message: Option<String>) -> Self {
        PartResult {
            error: code,
            message,
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
        }
    }
}

/// Kafka's refusal of keyless records on a compacted topic (LogValidator): INVALID_RECORD
/// with one record error per keyless record, and Kafka's summary as the error message.
/// `None` when every record of the batch has a key (or the batch is a control batch).
fn keyless_records(batch: &[u8], tp: &TopicPartition, inflate_limit: usize) -> Option<PartResult> {
    let h = batch::BatchHeader::parse(batch)?;
    if h.is_control() {
        return None;
    }
    // the batch passed admission, so its records parse; a failure here is the log's to report
    let body = batch::uncompressed_payload(batch, inflate_limit).ok()?;
    let records = batch::parse_records(h, &body).ok()?;
    let message = format!(
        "Compacted topic cannot accept message without key in topic partition {}-{}.",
        tp.topic, tp.partition
    );
    let errors: Vec<(i32, String)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| (i as i32, message.clone()))
        .collect();
    if errors.is_empty() {
        return None;
    }
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message={m})"))
        .collect();
    let mut r = PartResult::error(
        codes::INVALID_RECORD,
        Some(format!(
            "One or more records have been rejected due to {} record errors in total, and only \
             showing the first three errors at most: [{}]",
            errors.len(),
            shown.join(", ")
        )),
    );
    r.record_errors = errors;
    Some(r)
}

pub async fn handle(shard: &Rc<Shard>, req: ProduceRequest, version: i16) -> ProduceResponse {
    let txn_id: Option<Arc<str>> = req.transactional_id.as_ref().map(|t| Arc::from(t.as_str()));
    let level = match req.acks {
        0 | 1 => Some(Durability::Written),
        -1 => Some(Durability::Synced),
        _ => None,
    };
    let mut out: Vec<TopicProduceResponse> = Vec::new();
    let mut by_shard: BTreeMap<usize, Vec<Part>> = BTreeMap::new();
    let mut results: Vec<Vec<PartResult>> = Vec::new();
    let mut indexes: Vec<Vec<i32>> = Vec::new();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        // v13 names topics by id
        let name = if version >= 13 {
            shard
                .shared
                .catalog
                .read()
                .by_id(t.topic_id)
                .map(|i| i.name.clone())
                .unwrap_or_default()
        } else {
            t.name.0.to_string()
        };
        out.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id),
        );
        let topic_code = if level.is_none() {
            Some(codes::INVALID_REQUIRED_ACKS)
        } else if name.is_empty() {
            Some(if version >= 13 {
                codes::UNKNOWN_TOPIC_ID
            } else {
                codes::INVALID_TOPIC_EXCEPTION
            })
        } else if crate::cluster::coordinators::is_internal(&name) && shard.shared.is_clustered() {
            // the coordinators' state: written by the broker only, as in Kafka
            Some(codes::INVALID_TOPIC_EXCEPTION)
        } else {
            topics::ensure_topic(shard, &name, true).await.err()
        };
        let (owners, ts_type, compression, compacted) = {
            let st = shard.shared.catalog.read();
            let config = &shard.shared.config;
            match st.topics.get(&name) {
                Some(info) => {
                    let max_bytes = info
                        .configs
                        .get("max.message.bytes")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(config.log.max_message_bytes);
                    let ts = if info
                        .configs
                        .get("message.timestamp.type")
                        .map(String::as_str)
                        == Some("LogAppendTime")
                    {
                        TimestampType::LogAppendTime
                    } else {
                        TimestampType::CreateTime
                    };
                    let cleanup = info
                        .configs
                        .get("cleanup.policy")
                        .and_then(|v| crate::config::parse_cleanup_policy("cleanup.policy", v).ok())
                        .unwrap_or(config.log.cleanup);
                    (
                        info.shards.clone(),
                        ts,
                        config.compression.policy(&info.configs, max_bytes),
                        cleanup.compact,
                    )
                }
                None => (
                    Vec::new(),
                    TimestampType::CreateTime,
                    config
                        .compression
                        .policy(&Default::default(), config.log.max_message_bytes),
                    config.log.cleanup.compact,
                ),
            }
        };
        let topic: Arc<str> = Arc::from(name.as_str());
        let mut rs = Vec::new();
        indexes.push(t.partition_data.iter().map(|p| p.index).collect());
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            rs.push(PartResult::error(codes::UNKNOWN_SERVER_ERROR, None));
            let owner = usize::try_from(p.index)
                .ok()
                .and_then(|i| owners.get(i).copied());
            // cluster mode: only the leader appends, and acks=all needs min.insync.replicas
            // in the ISR before the append
            // (single node: no placement to look up on this path)
            let clustered = shard.shared.is_clustered();
            let view = clustered
                .then(|| shard.shared.partition_view(&name, p.index))
                .flatten();
            let placement = match (topic_code, owner, &view) {
                (None, Some(_), Some(v)) => {
                    shard.shared.leader_check(&name, p.index).err().or_else(|| {
                        (req.acks == -1
                            && v.isr.len()
                                < crate::cluster::replica::min_insync(&shard.shared, &name))
                        .then_some(codes::NOT_ENOUGH_REPLICAS)
                    })
                }
                _ => None,
            };
            let leader_epoch = view.as_ref().map_or(0, |v| v.leader_epoch);
            let replicated = (clustered && req.acks == -1).then(|| {
                std::time::Instant::now()
                    + std::time::Duration::from_millis(req.timeout_ms.max(1) as u64)
            });
            match (topic_code.or(placement), owner) {
                (Some(code), _) => rs[pi] = PartResult::error(code, None),
                (None, None) => rs[pi] = PartResult::error(codes::UNKNOWN_TOPIC_OR_PARTITION, None),
                (None, Some(o)) => by_shard.entry(o).or_default().push(Part {
                    slot: (ti, pi),
                    tp: TopicPartition {
                        topic: topic.clone(),
                        partition: p.index,
                    },
                    records: p.records,
                    timestamp_type: ts_type,
                    compression,
                    allow_zstd: version >= 7,
                    txn_id: txn_id.clone(),
                    leader_epoch,
                    replicated,
                    compacted,
                }),
            }
        }
        results.push(rs);
    }
    if let Some(level) = level {
        let acks_none = req.acks == 0;
        let mut tasks = Vec::new();
        for (owner, parts) in by_shard {
            let s = shard.clone();
            tasks.push(glommio::spawn_local(async move {
                let slots: Vec<_> = parts.iter().map(|p| p.slot).collect();
                let r = s
                    .call(owner, move |o| async move {
                        produce_local(&o, parts, level, acks_none).await
                    })
                    .await;
                (slots, r)
            }));
        }
        for t in tasks {
            let (slots, r) = t.await;
            match r {
                Ok(v) => {
                    for (slot, pr) in slots.into_iter().zip(v) {
                        results[slot.0][slot.1] = pr;
                    }
                }
                Err(e) => {
                    for slot in slots {
                        results[slot.0][slot.1] =
                            PartResult::error(codes::KAFKA_STORAGE_ERROR, Some(e.to_string()));
                    }
                }
            }
        }
    }
    for ((t, rs), idx) in out.iter_mut().zip(results).zip(indexes) {
        // partitions come back in request order
        t.partition_responses = rs
            .into_iter()
            .zip(idx)
            .map(|(r, index)| {
                PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(r.error)
                    .with_base_offset(r.base_offset)
                    .with_log_append_time_ms(r.log_append_time)
                    .with_log_start_offset(r.log_start_offset)
                    .with_error_message(r.message.map(StrBytes::from_string))
                    .with_record_errors(
                        r.record_errors
                            .into_iter()
                            .map(|(i, m)| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(i)
                                    .with_batch_index_error_message(Some(StrBytes::from_string(m)))
                            })
                            .collect(),
                    )
            })
            .collect();
    }
    ProduceResponse::default().with_responses(out)
}

/// Checks what the log cannot: clients never write control batches, and a transactional
/// batch that would open a transaction in this partition must belong to its producer's
/// ongoing transaction (asked of the transaction coordinator). Returns the verification token
/// for the append.
async fn admit_producer(
    shard: &Rc<Shard>,
    log: &sluice_engine::PartitionLog,
    tp: &TopicPartition,
    records: &[u8],
    txn_id: Option<&str>,
) -> Result<Option<u64>, PartResult> {
    let Some(h) = batch::BatchHeader::parse(records) else {
        return Ok(None); // the log reports the malformed batch
    };
    if batch::split_batches(records)
        .any(|b| batch::BatchHeader::parse(b).is_some_and(|h| h.is_control()))
    {
        return Err(PartResult::error(
            codes::INVALID_RECORD,
            Some("control batches are written by the broker only".into()),
        ));
    }
    if !h.is_transactional() {
        return Ok(None);
    }
    let (pid, epoch) = (h.producer_id.get(), h.producer_epoch.get());
    if log.in_transaction(pid, epoch) {
        return Ok(None);
    }
    let Some(id) = txn_id.map(str::to_string) else {
        return Err(PartResult::error(
            crate::txn::err::INVALID_TXN_STATE,
            Some("transactional batch without a transactional id".into()),
        ));
    };
    let token = log.begin_txn_verification(pid);
    let target = crate::txn::txn_shard(&id, shard.nr);
    let want = (tp.topic.to_string(), tp.partition);
    let (key, wanted) = (id.clone(), want.clone());
    let local = shard
        .call(target, move |s| async move {
            match s.txn() {
                Some(t) if t.serves(&key) => Some(t.verify(&key, pid, epoch, &wanted)),
                _ => None,
            }
        })
        .await
        .unwrap_or(Some(crate::txn::err::COORDINATOR_NOT_AVAILABLE));
    let code = match local {
        Some(code) => code,
        // cluster: the id's coordinator is on another broker
        None if shard.shared.is_clustered() => {
            crate::txn::markers::verify_remote(shard, &id, pid, epoch, &want).await
        }
        None => crate::txn::err::COORDINATOR_NOT_AVAILABLE,
    };
    if code != codes::NONE {
        return Err(PartResult::error(
            code,
            Some("the partition is not in the producer's ongoing transaction".into()),
        ));
    }
    Ok(Some(token))
}

/// Appends on the owning shard. Appends of all parts happen before any wait, so several
/// partitions share the same flush round.
async fn produce_local(
    shard: &Rc<Shard>,
    parts: Vec<Part>,
    level: Durability,
    acks_none: bool,
) -> Vec<PartResult> {
    let mut pending = Vec::with_capacity(parts.len());
    for p in parts {
        let log = match shard.owned_log(&p.tp).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                pending.push(Err(PartResult::error(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    None,
                )));
                continue;
            }
            Err(e) => {
                pending.push(Err(PartResult::error(codes::KAFKA_STORAGE_ERROR, Some(e))));
                continue;
            }
        };
        let Some(records) = p.records.filter(|r| !r.is_empty()) else {
            pending.push(Err(PartResult::error(
                codes::INVALID_RECORD,
                Some("no records".into()),
            )));
            continue;
        };
        let mut opts = AppendOptions {
            leader_epoch: p.leader_epoch,
            timestamp_type: p.timestamp_type,
            txn_guard: None,
        };
        match admit_producer(shard, &log, &p.tp, &records, p.txn_id.as_deref()).await {
            Ok(guard) => opts.txn_guard = guard,
            Err(r) => {
                pending.push(Err(r));
                continue;
            }
        }
        // compacted topics: every record needs a key; checked for all batches before any is
        // appended, as Kafka validates the whole set
        if p.compacted {
            if let Some(r) = batch::split_batches(&records)
                .find_map(|b| keyless_records(b, &p.tp, p.compression.inflate_limit))
            {
                pending.push(Err(r));
                continue;
            }
        }
        let mut first = None;
        let mut last = None;
        let mut err = None;
        let mut consumed = 0usize;
        let mut refused = None;
        for b in batch::split_batches(&records) {
            consumed += b.len();
            if !p.allow_zstd
                && batch::BatchHeader::parse(b)
                    .is_some_and(|h| h.compression() == batch::Compression::Zstd)
            {
                refused = Some(PartResult::error(
                    codes::UNSUPPORTED_COMPRESSION_TYPE,
                    Some("zstd batches need Produce v7 or later".into()),
                ));
                break;
            }
            let stored = match crate::compression::admit(b, &p.compression) {
                Ok(s) => s,
                Err(e) => {
                    err = Some(LogError::InvalidBatch(e));
                    break;
                }
            };

            match log.append(&stored, opts).await {
                Ok(info) => {
                    first.get_or_insert(info);
                    last = Some(info);
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(r) = refused {
            pending.push(Err(r));
            continue;
        }
        if err.is_none() && consumed != records.len() {
            err = Some(LogError::InvalidBatch(
                sluice_engine::BatchError::LengthMismatch {
                    declared: consumed,
                    actual: records.len(),
                },
            ));
        }
        match (err, first, last) {
            (Some(e), _, _) => {
                pending.push(Err(PartResult::error(e.kafka_code(), Some(e.to_string()))))
            }
            (None, Some(f), Some(l)) => pending.push(Ok((log, f, l, p.tp, p.replicated))),
            _ => pending.push(Err(PartResult::error(codes::CORRUPT_MESSAGE, None))),
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(match p {
            Err(r) => r,
            Ok((log, first, last, tp, replicated)) => {
                let waited = if acks_none {
                    Ok(())
                } else {
                    log.wait_durable(last.last_offset, level).await
                };
                let waited = match (waited, replicated) {
                    (Ok(()), Some(deadline)) => crate::cluster::replica::wait_replicated(
                        shard,
                        &tp,
                        &log,
                        last.last_offset,
                        deadline,
                    )
                    .await
                    .map_err(|code| (code, "waiting for the in-sync replicas".to_string())),
                    (w, _) => w.map_err(|e| (e.kafka_code(), e.to_string())),
                };
                match waited {
                    Ok(()) => PartResult {
                        error: codes::NONE,
                        message: None,
                        base_offset: first.base_offset.get() as i64,
                        log_append_time: first.log_append_time.unwrap_or(-1),
                        log_start_offset: log.offsets().log_start.get() as i64,
                        record_errors: Vec::new(),
                    },
                    Err((code, msg)) => PartResult::error(code, Some(msg)),
                }
            }
        });
    }
    out
}
