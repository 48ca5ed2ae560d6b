//! ShareFetch and ShareAcknowledge (KIP-932).
//!
//! Data path: request -> topic ids resolved, READ checked per topic -> the group's coordinator
//! shard checks the member and steps its share session (`group::share::serve`) -> the session's
//! partitions grouped by owning shard -> on each owner (`group::share::owner`) the piggybacked
//! acknowledgements are applied, then records acquired and read -> if nothing was acquired
//! the fetch waits for the logs or a release until `max_wait_ms` (at most [`MAX_WAIT`]) ->
//! responses merged by topic. The records are the stored batches holding the acquired
//! offsets; the client delivers only the acquired ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::share_acknowledge_response as ack_resp;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::authorize::TOPIC_AUTHORIZATION_FAILED;
use super::codes;
use super::consumer_groups::Topics;
use super::groups::on_coordinator;
use crate::group::share::owner::{self, PartResult, PartWant};
use crate::group::share::serve::session_code;
use crate::group::state::err;
use crate::security::acl::op;
use crate::security::Authz;
use crate::shard::{Shard, TopicPartition};

/// The longest a ShareFetch with nothing to deliver waits.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// max_bytes / max_records of a request that gives none.
const DEFAULT_MAX_BYTES: usize = 50 * 1024 * 1024;
const DEFAULT_MAX_RECORDS: usize = 500;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

type Ack = (i64, i64, Vec<i8>);
type Key = (String, i32);

/// The partitions of a request, checked: the usable ones with their acknowledgements, and
/// the error of every other one (by topic id).
#[derive(Default)]
struct Parsed {
    ok: Vec<Key>,
    acks: BTreeMap<Key, Vec<Ack>>,
    errors: Vec<(Uuid, i32, i16)>,
}

fn check_partition(
    shard: &Shard,
    authz: &Authz<'_>,
    topics: &Topics,
    name: Option<&String>,
    partition: i32,
) -> Result<(), i16> {
    let Some(name) = name else {
        return Err(codes::UNKNOWN_TOPIC_ID);
    };
    if !authz.topic(op::READ, name) {
        return Err(TOPIC_AUTHORIZATION_FAILED);
    }
    match topics.counts.get(name) {
        Some(n) if (0..*n).contains(&partition) => {}
        _ => return Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
    }
    shard.shared.leader_check(name, partition)
}

fn parse<'a>(
    shard: &Shard,
    authz: &Authz<'_>,
    topics: &Topics,
    parts: impl Iterator<Item = (Uuid, i32, Vec<Ack>)> + 'a,
) -> Parsed {
    let mut out = Parsed::default();
    for (id, p, acks) in parts {
        let name = topics.name(id);
        match check_partition(shard, authz, topics, name, p) {
            Err(code) => out.errors.push((id, p, code)),
            Ok(()) => {
                let key = (name.cloned().unwrap_or_default(), p);
                if !acks.is_empty() {
                    out.acks.entry(key.clone()).or_default().extend(acks);
                }
                out.ok.push(key);
            }
        }
    }
    out
}

fn ids(group: &Option<GroupId>, member: &Option<StrBytes>) -> Result<(String, String), String> {
    let group = group.as_ref().map(|g| g.0.to_string()).unwrap_or_default();
    if group.is_empty() {
        return Err("GroupId can't be empty.".into());
    }
    let member = member.as_ref().map(|m| m.to_string()).unwrap_or_default();
    if member.is_empty() {
        return Err("MemberId can't be empty.".into());
    }
    Ok((group, member))
}

/// The coordinator's session step: the session's partitions, or a top-level error.
async fn session(
    shard: &Rc<Shard>,
    group: &str,
    member: &str,
    epoch: i32,
    add: Vec<Key>,
    forget: Vec<Key>,
) -> Result<Vec<Key>, (i16, String)> {
    let (g, m) = (group.to_string(), member.to_string());
    on_coordinator(shard, group, move |c| async move {
        c.share_session(&g, &m, epoch, add, forget)
    })
    .await
    .unwrap_or_else(|| {
        Err((
            err::COORDINATOR_NOT_AVAILABLE,
            "The coordinator is not available.".into(),
        ))
    })
}

/// Runs `wants` on their owning shards (in parallel); parts whose owner is unknown answer
/// UNKNOWN_TOPIC_OR_PARTITION.
async fn run_owners(
    shard: &Rc<Shard>,
    req: &owner::Request,
    by_shard: &BTreeMap<usize, Vec<PartWant>>,
) -> Vec<(TopicPartition, PartResult)> {
    let mut tasks = Vec::new();
    for (&target, wants) in by_shard {
        let wants = wants.clone();
        let req = req.clone();
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let tps: Vec<TopicPartition> = wants.iter().map(|w| w.tp.clone()).collect();
            let r = s
                .call(target, move |o| async move {
                    owner::serve(&o, req, wants).await
                })
                .await;
            (tps, r)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let (tps, r) = t.await;
        match r {
            Ok(v) => out.extend(tps.into_iter().zip(v)),
            Err(_) => out.extend(tps.into_iter().map(|tp| {
                (
                    tp,
                    PartResult {
                        error: codes::KAFKA_STORAGE_ERROR,
                        ack_error: codes::KAFKA_STORAGE_ERROR,
                        ..PartResult::default()
                    },
                )
            })),
        }
    }
    out
}

/// Groups the session's partitions by owner shard.
fn by_owner(
    shard: &Shard,
    parts: &[Key],
    acks: &mut BTreeMap<Key, Vec<Ack>>,
    fetch: bool,
    missing: &mut Vec<Key>,
) -> BTreeMap<usize, Vec<PartWant>> {
    let mut out: BTreeMap<usize, Vec<PartWant>> = BTreeMap::new();
    for (t, p) in parts {
        let owner = shard
            .topic_owners(t)
            .and_then(|o| usize::try_from(*p).ok().and_then(|i| o.get(i).copied()));
        let Some(o) = owner else {
            missing.push((t.clone(), *p));
            continue;
        };
        out.entry(o).or_default().push(PartWant {
            tp: TopicPartition::new(t, *p),
            acks: acks.remove(&(t.clone(), *p)).unwrap_or_default(),
            fetch,
        });
    }
    out
}

/// Waits until a wanted partition's log grows or a record is released on an owner, or
/// `deadline`.
async fn wait_any(shard: &Rc<Shard>, by_shard: &BTreeMap<usize, Vec<PartWant>>, deadline: Instant) {
    let done = Rc::new(event_listener::Event::new());
    let first_done = done.listen();
    let mut tasks = Vec::new();
    for (&target, wants) in by_shard {
        let tps: Vec<TopicPartition> = wants.iter().map(|w| w.tp.clone()).collect();
        let s = shard.clone();
        let done = done.clone();
        tasks.push(glommio::spawn_local(async move {
            let _ = s
                .call(target, move |o| async move {
                    owner::wait_local(&o, tps, deadline).await
                })
                .await;
            done.notify(usize::MAX);
        }));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(first_done, glommio::timer::sleep(remaining)).await;
    for t in tasks {
        t.cancel().await;
    }
}

fn leader(shard: &Shard, topic: &str, partition: i32) -> LeaderIdAndEpoch {
    let v = shard.shared.partition_view(topic, partition);
    LeaderIdAndEpoch::default()
        .with_leader_id(v.as_ref().map_or(-1, |v| v.leader))
        .with_leader_epoch(v.map_or(-1, |v| v.leader_epoch))
}

fn fetch_failed(code: i16, message: String) -> ShareFetchResponse {
    ShareFetchResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
}

pub async fn fetch(
    shard: &Rc<Shard>,
    req: ShareFetchRequest,
    authz: &Authz<'_>,
) -> ShareFetchResponse {
    let started = Instant::now();
    let (group, member) = match ids(&req.group_id, &req.member_id) {
        Ok(x) => x,
        Err(m) => return fetch_failed(codes::INVALID_REQUEST, m),
    };
    let epoch = req.share_session_epoch;
    let topics = Topics::read(shard);
    let requested = req.topics.iter().flat_map(|t| {
        t.partitions.iter().map(|p| {
            let acks = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            (t.topic_id, p.partition_index, acks)
        })
    });
    let mut parsed = parse(shard, authz, &topics, requested);
    let forget: Vec<Key> = req
        .forgotten_topics_data
        .iter()
        .filter_map(|t| topics.name(t.topic_id).map(|n| (n.clone(), &t.partitions)))
        .flat_map(|(n, ps)| ps.iter().map(move |p| (n.clone(), *p)))
        .collect();
    let parts = match session(shard, &group, &member, epoch, parsed.ok.clone(), forget).await {
        Ok(p) => p,
        Err((code, message)) => {
            tracing::debug!(group, member, epoch, code, message, "share fetch refused");
            return fetch_failed(code, message);
        }
    };
    let settings = super::share_groups::settings(shard, &group);
    let release = epoch == -1;
    let params = owner::Request {
        group: group.clone(),
        member: member.clone(),
        settings: settings.clone(),
        release,
        max_bytes: usize::try_from(req.max_bytes)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(DEFAULT_MAX_BYTES),
        max_records: usize::try_from(req.max_records)
            .ok()
            .filter(|r| *r > 0)
            .unwrap_or(DEFAULT_MAX_RECORDS),
    };
    let mut missing = Vec::new();
    let mut by_shard = by_owner(shard, &parts, &mut parsed.acks, !release, &mut missing);
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = started + wait;
    let mut results: BTreeMap<Key, PartResult> = BTreeMap::new();
    loop {
        for (tp, r) in run_owners(shard, &params, &by_shard).await {
            let key = (tp.topic.to_string(), tp.partition);
            match results.get_mut(&key) {
                // a later round: the acknowledgement results of the first stay
                Some(prev) => {
                    prev.error = r.error;
                    prev.records = r.records;
                    prev.acquired = r.acquired;
                }
                None => {
                    results.insert(key, r);
                }
            }
        }
        // acknowledgements are applied once
        for w in by_shard.values_mut().flatten() {
            w.acks.clear();
        }
        let acquired = results.values().any(|r| !r.acquired.is_empty());
        if release
            || acquired
            || by_shard.is_empty()
            || Instant::now() >= deadline
            || shard.shared.is_stopping()
        {
            break;
        }
        wait_any(shard, &by_shard, deadline).await;
    }
    // the response: every partition the request named, and the session's partitions with
    // records or an error
    let named: BTreeSet<Key> = parsed.ok.iter().cloned().collect();
    let mut by_topic: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    for (id, p, code) in parsed.errors {
        by_topic.entry(id).or_default().push(
            PartitionData::default()
                .with_partition_index(p)
                .with_error_code(code)
                .with_acknowledge_error_code(code)
                .with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(-1)
                        .with_leader_epoch(-1),
                )
                .with_records(Some(Default::default())),
        );
    }
    for key in missing {
        results.insert(
            key,
            PartResult {
                error: codes::UNKNOWN_TOPIC_OR_PARTITION,
                ack_error: codes::UNKNOWN_TOPIC_OR_PARTITION,
                ..PartResult::default()
            },
        );
    }
    let lock_ms = settings
        .limits
        .lock_duration
        .as_millis()
        .min(i32::MAX as u128) as i32;
    let mut acquired_total = 0u64;
    for ((t, p), r) in results {
        let key = (t.clone(), p);
        if !named.contains(&key) && r.acquired.is_empty() && r.error == codes::NONE {
            continue;
        }
        acquired_total += r
            .acquired
            .iter()
            .map(|a| a.last.get() - a.first.get() + 1)
            .sum::<u64>();
        if !r.records.is_empty() {
            shard
                .metrics
                .bytes_out(&std::sync::Arc::from(t.as_str()), p, r.records.len() as u64);
        }
        by_topic.entry(topics.id(&t)).or_default().push(
            PartitionData::default()
                .with_partition_index(p)
                .with_error_code(r.error)
                .with_acknowledge_error_code(r.ack_error)
                .with_acknowledge_error_message(r.ack_message.map(s))
                .with_current_leader(leader(shard, &t, p))
                .with_records(Some(r.records))
                .with_acquired_records(
                    r.acquired
                        .iter()
                        .map(|a| {
                            AcquiredRecords::default()
                                .with_first_offset(a.first.get() as i64)
                                .with_last_offset(a.last.get() as i64)
                                .with_delivery_count(a.delivery_count.min(i16::MAX as u16) as i16)
                        })
                        .collect(),
                ),
        );
    }
    tracing::trace!(
        group,
        member,
        epoch,
        acquired = acquired_total,
        "share fetch"
    );
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            by_topic
                .into_iter()
                .map(|(id, ps)| {
                    ShareFetchableTopicResponse::default()
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        )
}

fn ack_failed(code: i16, message: String) -> ShareAcknowledgeResponse {
    ShareAcknowledgeResponse::default()
        .with_error_code(code)
        .with_error_message(Some(s(message)))
}

/// ShareAcknowledge: acknowledgements of a member's share session (epoch 0 is refused: a
/// session is opened by ShareFetch; -1 closes it after applying them).
pub async fn acknowledge(
    shard: &Rc<Shard>,
    req: ShareAcknowledgeRequest,
    authz: &Authz<'_>,
) -> ShareAcknowledgeResponse {
    let (group, member) = match ids(&req.group_id, &req.member_id) {
        Ok(x) => x,
        Err(m) => return ack_failed(codes::INVALID_REQUEST, m),
    };
    let epoch = req.share_session_epoch;
    if epoch == 0 {
        return ack_failed(
            session_code::INVALID_SHARE_SESSION_EPOCH,
            "ShareAcknowledge cannot open a share session (epoch 0).".into(),
        );
    }
    let topics = Topics::read(shard);
    let requested = req.topics.iter().flat_map(|t| {
        t.partitions.iter().map(|p| {
            let acks = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            (t.topic_id, p.partition_index, acks)
        })
    });
    let mut parsed = parse(shard, authz, &topics, requested);
    let release = epoch == -1;
    let session_parts = match session(shard, &group, &member, epoch, Vec::new(), Vec::new()).await {
        Ok(p) => p,
        Err((code, message)) => {
            tracing::debug!(
                group,
                member,
                epoch,
                code,
                message,
                "share acknowledge refused"
            );
            return ack_failed(code, message);
        }
    };
    let settings = super::share_groups::settings(shard, &group);
    let params = owner::Request {
        group: group.clone(),
        member,
        settings,
        release,
        max_bytes: 0,
        max_records: 0,
    };
    let mut parts: BTreeSet<Key> = parsed.ok.iter().cloned().collect();
    if release {
        parts.extend(session_parts);
    }
    let parts: Vec<Key> = parts.into_iter().collect();
    let mut missing = Vec::new();
    let by_shard = by_owner(shard, &parts, &mut parsed.acks, false, &mut missing);
    let mut by_topic: BTreeMap<Uuid, Vec<ack_resp::PartitionData>> = BTreeMap::new();
    let named: BTreeSet<Key> = parsed.ok.iter().cloned().collect();
    for (id, p, code) in parsed.errors {
        by_topic.entry(id).or_default().push(
            ack_resp::PartitionData::default()
                .with_partition_index(p)
                .with_error_code(code),
        );
    }
    let mut results: Vec<(Key, i16, Option<String>)> = missing
        .into_iter()
        .map(|k| (k, codes::UNKNOWN_TOPIC_OR_PARTITION, None))
        .collect();
    for (tp, r) in run_owners(shard, &params, &by_shard).await {
        let code = if r.ack_error != codes::NONE {
            r.ack_error
        } else {
            r.error
        };
        results.push(((tp.topic.to_string(), tp.partition), code, r.ack_message));
    }
    for ((t, p), code, message) in results {
        if !named.contains(&(t.clone(), p)) {
            continue;
        }
        by_topic.entry(topics.id(&t)).or_default().push(
            ack_resp::PartitionData::default()
                .with_partition_index(p)
                .with_error_code(code)
                .with_error_message(message.map(s))
                .with_current_leader(
                    ack_resp::LeaderIdAndEpoch::default()
                        .with_leader_id(leader(shard, &t, p).leader_id)
                        .with_leader_epoch(leader(shard, &t, p).leader_epoch),
                ),
        );
    }
    ShareAcknowledgeResponse::default().with_responses(
        by_topic
            .into_iter()
            .map(|(id, ps)| {
                ack_resp::ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(ps)
            })
            .collect(),
    )
}
