//! Topic and log administration: CreatePartitions, DeleteRecords, DescribeLogDirs and
//! DescribeCluster, answered the way a single-node Kafka (KRaft, broker and controller in one)
//! answers them. Configs are in [`super::configs`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::Offset;

use super::codes;
use super::configs::absolute;
use super::topics::{open_partitions, TopicError};
use crate::catalog::{validate_topic_name, CatalogState};
use crate::shard::{Shard, TopicPartition};

/// DescribeCluster endpoint type of brokers (2 is controllers).
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;

/// Same bound as topic creation.
const MAX_PARTITIONS: i32 = 100_000;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub(super) fn unknown_topic(name: &str) -> TopicError {
    TopicError(
        codes::UNKNOWN_TOPIC_OR_PARTITION,
        format!("The topic '{name}' does not exist."),
    )
}

pub(super) fn check_topic_name(name: &str) -> Result<(), TopicError> {
    validate_topic_name(name).map_err(|m| TopicError(codes::INVALID_TOPIC_EXCEPTION, m))
}

// ---------------------------------------------------------------------------------------------
// CreatePartitions

/// Checks a CreatePartitions request for one topic against the catalog; returns the current
/// partition count.
fn check_new_partitions(
    st: &CatalogState,
    node_id: i32,
    name: &str,
    count: i32,
    assignments: Option<&[CreatePartitionsAssignment]>,
) -> Result<usize, TopicError> {
    let t = st.topics.get(name).ok_or_else(|| unknown_topic(name))?;
    let old = t.partitions();
    if count < old {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!(
                "The topic {name} currently has {old} partition(s); {count} would not be an increase."
            ),
        ));
    }
    if count == old {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!("Topic already has {old} partition(s)."),
        ));
    }
    if count > MAX_PARTITIONS {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!("{count} partitions is more than the {MAX_PARTITIONS} allowed"),
        ));
    }
    if let Some(assignments) = assignments {
        let added = (count - old) as usize;
        if assignments.len() != added {
            return Err(TopicError(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    assignments.len()
                ),
            ));
        }
        for (i, a) in assignments.iter().enumerate() {
            let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            if let Some(bad) = ids.iter().find(|&&b| b != node_id) {
                return Err(TopicError(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!("Unknown broker(s) in replica assignment: {bad}."),
                ));
            }
            if ids.len() != 1 {
                return Err(TopicError(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "The assignment of new partition {} has {} replicas; this single-broker \
                         cluster needs exactly [{node_id}].",
                        old as usize + i,
                        ids.len()
                    ),
                ));
            }
        }
    }
    Ok(old as usize)
}

/// Adds partitions to a topic: validates, places them on the least loaded shards, persists the
/// catalog, then opens the new logs on their shards.
async fn add_partitions(
    shard: &Rc<Shard>,
    name: &str,
    count: i32,
    assignments: Option<&[CreatePartitionsAssignment]>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let node_id = shard.shared.config.node_id;
    if let Some(member) = shard.shared.cluster.get().cloned() {
        return add_partitions_clustered(shard, &member, name, count, assignments, validate_only)
            .await;
    }
    if validate_only {
        let st = shard.shared.catalog.read();
        check_new_partitions(&st, node_id, name, count, assignments)?;
        return Ok(());
    }
    let nr = shard.nr;
    let (name_owned, assignments) = (name.to_string(), assignments.map(<[_]>::to_vec));
    let (info, old) = shard
        .shared
        .catalog
        .update_off_reactor(move |st| {
            let name = name_owned.as_str();
            let old = check_new_partitions(st, node_id, name, count, assignments.as_deref())?;
            let mut added = Vec::with_capacity(count as usize - old);
            for _ in old..count as usize {
                added.push(st.least_loaded_shard(nr, &added));
            }
            let t = st.topics.get_mut(name).ok_or_else(|| unknown_topic(name))?;
            t.shards.extend(added);
            Ok::<_, TopicError>((t.clone(), old))
        })
        .await?;
    open_partitions(shard, &info, old).await?;
    tracing::info!(topic = name, from = old, to = count, "added partitions");
    Ok(())
}

/// Cluster mode: the coordinators hash their keys onto the internal topics' partition counts and
/// rely on their configs (no retention), so neither may change under them.
pub(super) fn refuse_internal(name: &str, what: &str) -> Result<(), TopicError> {
    if crate::cluster::coordinators::is_internal(name) {
        return Err(TopicError(
            codes::POLICY_VIOLATION,
            format!("{name} holds the coordinators' state and cannot have {what}"),
        ));
    }
    Ok(())
}

/// Cluster mode: the new partitions' replicas are placed over the live brokers with the topic's
/// replication factor and proposed to the metadata quorum.
async fn add_partitions_clustered(
    shard: &Rc<Shard>,
    member: &crate::cluster::member::Member,
    name: &str,
    count: i32,
    assignments: Option<&[CreatePartitionsAssignment]>,
    validate_only: bool,
) -> Result<(), TopicError> {
    use crate::cluster::image::{assign_replicas, Command};
    refuse_internal(name, "partitions added")?;
    if assignments.is_some_and(|a| !a.is_empty()) {
        return Err(TopicError(
            codes::INVALID_REPLICA_ASSIGNMENT,
            "explicit replica assignments are not supported yet".into(),
        ));
    }
    let image = member.image();
    let t = image.topics.get(name).ok_or_else(|| unknown_topic(name))?;
    let old = t.partitions.len();
    if count as usize <= old {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!(
                "Topic currently has {old} partitions, which is higher than the requested {count}."
            ),
        ));
    }
    let live = image.live_brokers();
    let placed = assign_replicas(&live, count as usize, t.replication_factor(), name.len())
        .map_err(|m| TopicError(codes::INVALID_REPLICATION_FACTOR, m))?;
    if validate_only {
        return Ok(());
    }
    let cmd = Command::CreatePartitions {
        name: name.to_string(),
        assignment: placed[old..].to_vec(),
    };
    crate::api::topics::propose_and_wait(shard, cmd, |st| {
        st.topics.get(name).is_some_and(|t| t.partitions() >= count)
    })
    .await?;
    tracing::info!(topic = name, from = old, to = count, "added partitions");
    Ok(())
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut times: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *times.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if times.get(&name).copied().unwrap_or(0) > 1 {
            Err(TopicError(
                codes::INVALID_REQUEST,
                "Duplicate topic in request.".into(),
            ))
        } else {
            add_partitions(
                shard,
                &name,
                t.count,
                t.assignments.as_deref(),
                req.validate_only,
            )
            .await
        };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err(TopicError(code, msg)) = outcome {
            r = r.with_error_code(code).with_error_message(Some(s(msg)));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}

// ---------------------------------------------------------------------------------------------
// DeleteRecords

/// The high watermark, as DeleteRecords' target offset.
const HIGH_WATERMARK: i64 = -1;

/// (error, new log start offset) of a DeleteRecords on the owning shard.
async fn delete_records_local(shard: &Rc<Shard>, tp: TopicPartition, offset: i64) -> (i16, i64) {
    let log = match shard.owned_log(&tp).await {
        Ok(Some(l)) => l,
        Ok(None) => return (codes::UNKNOWN_TOPIC_OR_PARTITION, -1),
        Err(e) => {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "open failed");
            return (codes::KAFKA_STORAGE_ERROR, -1);
        }
    };
    if !log.config().cleanup.delete {
        // Kafka: records of a compact-only topic cannot be deleted
        return (codes::POLICY_VIOLATION, -1);
    }
    let before = match offset {
        HIGH_WATERMARK => log.offsets().high_watermark,
        o if o >= 0 => Offset(o as u64),
        _ => return (codes::OFFSET_OUT_OF_RANGE, -1),
    };
    match log.delete_records(before).await {
        Ok(start) => (codes::NONE, start.get() as i64),
        Err(e) => {
            tracing::debug!(topic = %tp.topic, partition = tp.partition, error = %e, "delete records refused");
            (e.kafka_code(), -1)
        }
    }
}

pub async fn delete_records(shard: &Rc<Shard>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let owners = shard.topic_owners(&name).unwrap_or_default();
        let mut tasks = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let owner = usize::try_from(p.partition_index)
                .ok()
                .and_then(|i| owners.get(i).copied());
            let tp = TopicPartition::new(&name, p.partition_index);
            let offset = p.offset;
            let s = shard.clone();
            let task = glommio::spawn_local(async move {
                match owner {
                    None => (codes::UNKNOWN_TOPIC_OR_PARTITION, -1),
                    Some(o) => s
                        .call(o, move |s| async move {
                            delete_records_local(&s, tp, offset).await
                        })
                        .await
                        .unwrap_or((codes::KAFKA_STORAGE_ERROR, -1)),
                }
            });
            tasks.push((p.partition_index, task));
        }
        let mut parts = Vec::with_capacity(tasks.len());
        for (index, task) in tasks {
            let (code, low) = task.await;
            parts.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(low)
                    .with_error_code(code),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

// ---------------------------------------------------------------------------------------------
// DescribeLogDirs

/// (total, usable) bytes of the file system holding `dir`.
fn disk_space(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `st` points to writable memory of the right type.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st` (which was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    let total = st.f_blocks.saturating_mul(frsize);
    let usable = st.f_bavail.saturating_mul(frsize);
    Some((
        i64::try_from(total).unwrap_or(i64::MAX),
        i64::try_from(usable).unwrap_or(i64::MAX),
    ))
}

/// Sizes of this shard's logs of `parts` (partitions whose log cannot be opened are left out).
/// (topic, partition, bytes, why the partition is fenced if it is) of the logs asked for.
async fn log_sizes(
    shard: &Rc<Shard>,
    parts: Vec<(String, i32)>,
) -> Vec<(String, i32, u64, Option<String>)> {
    let mut out = Vec::with_capacity(parts.len());
    for (topic, p) in parts {
        let tp = TopicPartition::new(&topic, p);
        match shard.owned_log(&tp).await {
            Ok(Some(log)) => out.push((topic, p, log.size_bytes(), log.poisoned())),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %topic, partition = p, error = %e, "open failed");
            }
        }
    }
    out
}

pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // which partitions, grouped by owner shard
    let mut by_owner: BTreeMap<usize, Vec<(String, i32)>> = BTreeMap::new();
    {
        let st = shard.shared.catalog.read();
        let mut add = |topic: &str, p: i32, owner: usize| {
            by_owner
                .entry(owner)
                .or_default()
                .push((topic.to_string(), p));
        };
        match &req.topics {
            None => {
                for t in st.topics.values() {
                    for (p, &owner) in t.shards.iter().enumerate() {
                        add(&t.name, p as i32, owner);
                    }
                }
            }
            Some(wanted) => {
                let mut seen = BTreeSet::new();
                for w in wanted {
                    let Some(t) = st.topics.get(w.topic.0.as_str()) else {
                        continue;
                    };
                    for &p in &w.partitions {
                        let owner = usize::try_from(p).ok().and_then(|i| t.shards.get(i));
                        if let Some(&owner) = owner {
                            if seen.insert((t.name.clone(), p)) {
                                add(&t.name, p, owner);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut tasks = Vec::with_capacity(by_owner.len());
    for (owner, parts) in by_owner {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            s.call(owner, move |o| async move { log_sizes(&o, parts).await })
                .await
                .unwrap_or_default()
        }));
    }
    let mut topics: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    let mut fenced = Vec::new();
    for task in tasks {
        for (topic, p, size, poisoned) in task.await {
            match poisoned {
                None => topics.entry(topic).or_default().push((p, size)),
                Some(cause) => fenced.push((topic, p, size, cause)),
            }
        }
    }
    let dir = &shard.shared.config.data_dir;
    // a partition fenced after an I/O error is reported as an offline log dir of its own
    // (its directory, KAFKA_STORAGE_ERROR): each partition is its own fault domain here, and
    // the data dir itself stays online for the others
    let offline = fenced.into_iter().map(|(topic, p, size, cause)| {
        tracing::debug!(topic = %topic, partition = p, %cause, "DescribeLogDirs: fenced");
        DescribeLogDirsResult::default()
            .with_error_code(codes::KAFKA_STORAGE_ERROR)
            .with_log_dir(s(absolute(&dir.join(format!("{topic}-{p}")))))
            .with_topics(vec![log_dir_topic(topic, vec![(p, size)])])
            .with_total_bytes(-1)
            .with_usable_bytes(-1)
    });
    let offline: Vec<_> = offline.collect();
    let topics = topics
        .into_iter()
        .map(|(name, parts)| log_dir_topic(name, parts))
        .collect();
    let (total, usable) = disk_space(dir).unwrap_or((-1, -1));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(s(absolute(dir)))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    let mut results = vec![result];
    results.extend(offline);
    DescribeLogDirsResponse::default().with_results(results)
}

fn log_dir_topic(name: String, mut parts: Vec<(i32, u64)>) -> DescribeLogDirsTopic {
    parts.sort_unstable();
    DescribeLogDirsTopic::default()
        .with_name(s(name).into())
        .with_partitions(
            parts
                .into_iter()
                .map(|(p, size)| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                        .with_offset_lag(0)
                        .with_is_future_key(false)
                })
                .collect(),
        )
}

// ---------------------------------------------------------------------------------------------
// DescribeCluster

/// `listener`: the listener the client came in on; brokers are given at its endpoints.
pub fn describe_cluster(
    shard: &Rc<Shard>,
    req: DescribeClusterRequest,
    listener: usize,
    authz: &crate::security::Authz<'_>,
) -> DescribeClusterResponse {
    let shared = &shard.shared;
    match req.endpoint_type {
        ENDPOINT_BROKERS => {}
        ENDPOINT_CONTROLLERS => {
            return DescribeClusterResponse::default()
                .with_error_code(codes::MISMATCHED_ENDPOINT_TYPE)
                .with_error_message(Some(s(
                    "The request was sent to an endpoint of type BROKER, but we wanted an \
                     endpoint of type CONTROLLER",
                )));
        }
        other => {
            return DescribeClusterResponse::default()
                .with_error_code(codes::UNSUPPORTED_ENDPOINT_TYPE)
                .with_error_message(Some(s(format!("Unsupported endpoint type {other}"))));
        }
    }
    // every live broker (fenced ones are left out, as Kafka's Metadata does) and the active
    // controller; a single node is both
    let brokers = shared
        .brokers(listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(s(b.host))
                .with_port(i32::from(b.port))
                .with_rack(None)
        })
        .collect();
    let cluster_id = shared.catalog.read().cluster_id.clone();
    let mut resp = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(s(cluster_id))
        .with_controller_id(BrokerId(shared.controller_id()))
        .with_brokers(brokers);
    if req.include_cluster_authorized_operations {
        resp = resp.with_cluster_authorized_operations(super::authorize::cluster_operations(authz));
    }
    resp
}
