//! CreateTopics, DeleteTopics and topic auto-creation.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::codes;
use crate::catalog::{validate_configs, validate_topic_name, CatalogError, TopicInfo};
use crate::shard::Shard;

/// A topic-level failure: Kafka error code and message.
#[derive(Debug, Clone)]
pub struct TopicError(pub i16, pub String);

impl From<CatalogError> for TopicError {
    fn from(e: CatalogError) -> Self {
        TopicError(codes::KAFKA_STORAGE_ERROR, e.to_string())
    }
}

/// Creates a topic: validates, places partitions on the least loaded shards, persists the
/// catalog, then opens every partition log on its shard. `assignment`: replicas chosen by the
/// client, already checked by [`validate_assignment`] (`partitions` is its length then).
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
    assignment: Option<Vec<Vec<i32>>>,
) -> Result<TopicInfo, TopicError> {
    validate_topic_name(name).map_err(|m| TopicError(codes::INVALID_TOPIC_EXCEPTION, m))?;
    if partitions < 1 {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!("number of partitions must be at least 1, got {partitions}"),
        ));
    }
    if partitions > 100_000 {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!("{partitions} partitions is more than the 100000 allowed"),
        ));
    }
    validate_configs(&configs).map_err(|e| TopicError(codes::INVALID_CONFIG, e.to_string()))?;
    if let Some(member) = shard.shared.cluster.get().cloned() {
        let rf = if replication_factor == -1 {
            shard.shared.config.default_replication_factor
        } else {
            replication_factor
        };
        return create_clustered(
            shard,
            member,
            name,
            partitions,
            rf,
            configs,
            validate_only,
            assignment,
        )
        .await;
    }
    if assignment.is_none() && !(replication_factor == -1 || replication_factor == 1) {
        return Err(TopicError(
            codes::INVALID_REPLICATION_FACTOR,
            format!("Replication factor: {replication_factor} larger than available brokers: 1."),
        ));
    }
    let nr = shard.nr;
    let build = {
        let name = name.to_string();
        move |st: &crate::catalog::CatalogState| {
            let mut shards = Vec::with_capacity(partitions as usize);
            for _ in 0..partitions {
                shards.push(st.least_loaded_shard(nr, &shards));
            }
            TopicInfo {
                name: name.clone(),
                id: Uuid::new_v4(),
                shards,
                configs: configs.clone(),
            }
        }
    };
    let exists = |name: &str| {
        TopicError(
            codes::TOPIC_ALREADY_EXISTS,
            format!("Topic '{name}' already exists."),
        )
    };
    if validate_only {
        let st = shard.shared.catalog.read();
        if st.topics.contains_key(name) {
            return Err(exists(name));
        }
        return Ok(build(&st));
    }
    let owned = name.to_string();
    let info = shard
        .shared
        .catalog
        .update_off_reactor(move |st| {
            if st.topics.contains_key(&owned) {
                return Err(exists(&owned));
            }
            let info = build(st);
            st.topics.insert(owned, info.clone());
            Ok(info)
        })
        .await?;
    open_partitions(shard, &info, 0).await?;
    tracing::info!(topic = name, partitions, "created topic");
    Ok(info)
}

/// Cluster mode: places the replicas over the live brokers (Kafka's round robin) unless the
/// client gave them, proposes the topic to the metadata quorum, and returns once this broker's
/// catalog has it.
#[allow(clippy::too_many_arguments)]
async fn create_clustered(
    shard: &Rc<Shard>,
    member: std::sync::Arc<crate::cluster::member::Member>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
    explicit: Option<Vec<Vec<i32>>>,
) -> Result<TopicInfo, TopicError> {
    use crate::cluster::image::{assign_replicas, Command};
    let image = member.image();
    if image.topics.contains_key(name) {
        return Err(TopicError(
            codes::TOPIC_ALREADY_EXISTS,
            format!("Topic '{name}' already exists."),
        ));
    }
    let live = image.live_brokers();
    let assignment = match explicit {
        Some(a) => a,
        None => {
            if replication_factor < 1 {
                return Err(TopicError(
                    codes::INVALID_REPLICATION_FACTOR,
                    format!("Replication factor must be larger than 0, got {replication_factor}."),
                ));
            }
            // spread the first replicas of successive topics over the brokers
            let start = image.topics.len() + name.len();
            assign_replicas(
                &live,
                partitions as usize,
                replication_factor as usize,
                start,
            )
            .map_err(|m| TopicError(codes::INVALID_REPLICATION_FACTOR, m))?
        }
    };
    let replication_factor = assignment.first().map_or(0, |r| r.len());
    let id = Uuid::new_v4();
    let info = TopicInfo {
        name: name.to_string(),
        id,
        shards: vec![0; partitions as usize],
        configs: configs.clone(),
    };
    if validate_only {
        return Ok(info);
    }
    let cmd = Command::CreateTopic {
        name: name.to_string(),
        id,
        assignment,
        configs,
    };
    propose_and_wait(shard, cmd, |st| {
        st.topics.get(name).is_some_and(|t| t.id == id)
    })
    .await?;
    tracing::info!(
        topic = name,
        partitions,
        replication_factor,
        "created topic"
    );
    let created = shard.shared.catalog.read().topics.get(name).cloned();
    created.ok_or_else(|| {
        TopicError(
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{name} vanished"),
        )
    })
}

/// Cluster mode: proposes `cmd` to the metadata quorum (from a blocking thread) and waits until
/// this broker's catalog satisfies `seen` (it follows the image within milliseconds).
pub async fn propose_and_wait(
    shard: &Rc<Shard>,
    cmd: crate::cluster::image::Command,
    seen: impl Fn(&crate::catalog::CatalogState) -> bool,
) -> Result<(), TopicError> {
    let Some(member) = shard.shared.cluster.get().cloned() else {
        return Err(TopicError(codes::NOT_CONTROLLER, "not in a cluster".into()));
    };
    match glommio::executor()
        .spawn_blocking(move || member.propose(cmd))
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(TopicError(e.kafka_code(), e.to_string())),
        Err(e) => return Err(TopicError(codes::NOT_CONTROLLER, e)),
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen(&shard.shared.catalog.read()) {
        if std::time::Instant::now() > until {
            return Err(TopicError(
                codes::UNKNOWN_SERVER_ERROR,
                "the change was committed but this broker has not seen it yet".into(),
            ));
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Opens partitions `from..` of a topic on their shards.
pub async fn open_partitions(
    shard: &Rc<Shard>,
    info: &TopicInfo,
    from: usize,
) -> Result<(), TopicError> {
    on_owners(shard, info, from, PartitionOp::Open).await
}

/// What to do to a partition on its owning shard.
#[derive(Clone, Copy)]
enum PartitionOp {
    Open,
    Delete,
}

/// Runs `op` for partitions `from..` of a topic on their owners, concurrently.
async fn on_owners(
    shard: &Rc<Shard>,
    info: &TopicInfo,
    from: usize,
    op: PartitionOp,
) -> Result<(), TopicError> {
    let mut tasks = Vec::new();
    for (p, &owner) in info.shards.iter().enumerate().skip(from) {
        let name = info.name.clone();
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            s.call(owner, move |o| async move {
                match op {
                    PartitionOp::Open => o.open_partition(&name, p as i32).await,
                    PartitionOp::Delete => o.delete_partition(&name, p as i32).await,
                }
            })
            .await
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(TopicError(codes::KAFKA_STORAGE_ERROR, e)),
            Err(e) => return Err(TopicError(codes::KAFKA_STORAGE_ERROR, e.to_string())),
        }
    }
    Ok(())
}

/// Makes sure `name` exists, creating it when auto.create.topics.enable allows.
pub async fn ensure_topic(shard: &Rc<Shard>, name: &str, allow_auto: bool) -> Result<(), i16> {
    if shard.shared.catalog.read().topics.contains_key(name) {
        return Ok(());
    }
    if !(allow_auto && shard.shared.config.auto_create_topics) {
        return Err(codes::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if validate_topic_name(name).is_err() {
        return Err(codes::INVALID_TOPIC_EXCEPTION);
    }
    let n = shard.shared.config.num_partitions;
    match create_topic(shard, name, n, -1, BTreeMap::new(), false, None).await {
        Ok(_) => Ok(()),
        Err(TopicError(codes::TOPIC_ALREADY_EXISTS, _)) => Ok(()),
        Err(TopicError(code, msg)) => {
            tracing::warn!(topic = name, %msg, "auto-creation failed");
            Err(code)
        }
    }
}

pub async fn create(
    shard: &Rc<Shard>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    let defaults = shard.shared.config.topic_defaults();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => bad_config = Some(format!("config {} has a null value", c.name)),
            }
        }
        let partitions = if t.num_partitions == -1 {
            shard.shared.config.num_partitions
        } else {
            t.num_partitions
        };
        let outcome = if let Some(msg) = bad_config {
            Err(TopicError(codes::INVALID_CONFIG, msg))
        } else if !t.assignments.is_empty() {
            let given: Vec<(i32, Vec<i32>)> = t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            let (registered, live) = registered_brokers(shard);
            match validate_assignment(
                t.num_partitions,
                t.replication_factor,
                &given,
                &registered,
                &live,
            ) {
                Ok(assignment) => {
                    create_topic(
                        shard,
                        &name,
                        assignment.len() as i32,
                        -1,
                        configs.clone(),
                        req.validate_only,
                        Some(assignment),
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        } else {
            create_topic(
                shard,
                &name,
                partitions,
                t.replication_factor,
                configs.clone(),
                req.validate_only,
                None,
            )
            .await
        };
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        match outcome {
            Ok(info) => {
                // (value, config source: 1 = DYNAMIC_TOPIC_CONFIG, 5 = DEFAULT_CONFIG)
                let mut all: BTreeMap<String, (String, i8)> = defaults
                    .iter()
                    .map(|(k, v)| (k.clone(), (v.clone(), 5)))
                    .collect();
                all.extend(configs.into_iter().map(|(k, v)| (k, (v, 1))));
                r = r
                    .with_topic_id(info.id)
                    .with_num_partitions(info.partitions())
                    .with_replication_factor(
                        shard
                            .shared
                            .partition_view(&info.name, 0)
                            .map_or(1, |v| v.replicas.len() as i16),
                    );
                if version >= 5 {
                    r = r.with_configs(Some(
                        all.into_iter()
                            .map(|(k, (v, source))| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(k))
                                    .with_value(Some(StrBytes::from_string(v)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    ));
                }
            }
            Err(TopicError(code, msg)) => {
                r = r
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// (registered, live) broker ids: the image's in a cluster, this broker alone otherwise.
fn registered_brokers(shard: &Rc<Shard>) -> (Vec<i32>, Vec<i32>) {
    match shard.shared.image() {
        Some(img) => (img.brokers.keys().copied().collect(), img.live_brokers()),
        None => {
            let me = shard.shared.config.node_id;
            (vec![me], vec![me])
        }
    }
}

/// Kafka's checks of an explicit replica assignment (CreateTopics `assignments`, as the KRaft
/// controller makes them): `num_partitions` and `replication_factor` must be -1
/// (INVALID_PARTITIONS / INVALID_REPLICATION_FACTOR), each partition listed once with a
/// non-empty list of distinct registered brokers, at least one of them live, every partition
/// with as many replicas as the first, partition ids 0..n (INVALID_REPLICA_ASSIGNMENT).
/// Returns the replicas by partition id.
pub fn validate_assignment(
    num_partitions: i32,
    replication_factor: i16,
    given: &[(i32, Vec<i32>)],
    registered: &[i32],
    live: &[i32],
) -> Result<Vec<Vec<i32>>, TopicError> {
    let invalid = |m: String| TopicError(codes::INVALID_REPLICA_ASSIGNMENT, m);
    if replication_factor != -1 {
        return Err(TopicError(
            codes::INVALID_REPLICATION_FACTOR,
            "A manual partition assignment was specified, but replication factor was not set \
             to -1."
                .into(),
        ));
    }
    if num_partitions != -1 {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .into(),
        ));
    }
    if given.len() > 100_000 {
        return Err(TopicError(
            codes::INVALID_PARTITIONS,
            format!("{} partitions is more than the 100000 allowed", given.len()),
        ));
    }
    let mut by_id: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut rf: Option<usize> = None;
    for (p, brokers) in given {
        if by_id.contains_key(p) {
            return Err(invalid(format!(
                "Found multiple manual partition assignments for partition {p}"
            )));
        }
        if brokers.is_empty() {
            return Err(invalid(
                "The manual partition assignment includes an empty replica list.".into(),
            ));
        }
        let mut sorted = brokers.clone();
        sorted.sort_unstable();
        for (i, b) in sorted.iter().enumerate() {
            if !registered.contains(b) {
                return Err(invalid(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is \
                     registered."
                )));
            }
            if i > 0 && sorted[i - 1] == *b {
                return Err(invalid(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                )));
            }
        }
        if let Some(n) = rf.filter(|n| *n != brokers.len()) {
            return Err(invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but \
                 this is not consistent with previous partitions, which have {n} replica(s).",
                brokers.len()
            )));
        }
        rf = Some(brokers.len());
        if !brokers.iter().any(|b| live.contains(b)) {
            return Err(invalid(format!(
                "All brokers specified in the manual partition assignment for partition {p} are \
                 fenced or in controlled shutdown."
            )));
        }
        by_id.insert(*p, brokers.clone());
    }
    let n = by_id.len() as i32;
    if by_id.keys().copied().ne(0..n) {
        return Err(invalid(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(by_id.into_values().collect())
}

/// Deletes a topic: drops it from the catalog, then closes and removes its partitions.
pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<Uuid, TopicError> {
    if shard.shared.is_clustered() {
        return delete_clustered(shard, name).await;
    }
    let owned = name.to_string();
    let info = shard
        .shared
        .catalog
        .update_off_reactor(move |st| {
            st.topics.remove(&owned).ok_or_else(|| {
                TopicError(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.".into(),
                )
            })
        })
        .await?;
    on_owners(shard, &info, 0, PartitionOp::Delete).await?;
    tracing::info!(topic = name, "deleted topic");
    Ok(info.id)
}

/// Cluster mode: the topic leaves the metadata image; every replica's broker removes its files
/// in its reconcile loop (and a replica that missed the delete finds out from the topic id its
/// directory records, `cluster::identity`).
async fn delete_clustered(shard: &Rc<Shard>, name: &str) -> Result<Uuid, TopicError> {
    if crate::cluster::coordinators::is_internal(name) {
        return Err(TopicError(
            codes::POLICY_VIOLATION,
            format!("{name} holds the coordinators' state and cannot be deleted"),
        ));
    }
    let id = shard
        .shared
        .image()
        .and_then(|img| img.topics.get(name).map(|t| t.id))
        .ok_or_else(|| {
            TopicError(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.".into(),
            )
        })?;
    let cmd = crate::cluster::image::Command::DeleteTopic {
        name: name.to_string(),
    };
    propose_and_wait(shard, cmd, |st| {
        st.topics.get(name).is_none_or(|t| t.id != id)
    })
    .await?;
    tracing::info!(topic = name, "deleted topic (cluster)");
    Ok(id)
}

pub async fn delete(
    shard: &Rc<Shard>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v0-5 name topics in topic_names, v6+ in topics (by name or id)
    let mut wanted: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    wanted.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut results = Vec::new();
    for (name, id) in wanted {
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => shard
                .shared
                .catalog
                .read()
                .by_id(id)
                .map(|t| t.name.clone()),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(
                resolved
                    .clone()
                    .map(|n| TopicName(StrBytes::from_string(n))),
            )
            .with_topic_id(id);
        let outcome = match resolved {
            Some(n) => delete_topic(shard, &n).await,
            None => Err(TopicError(
                codes::UNKNOWN_TOPIC_ID,
                "unknown topic id".into(),
            )),
        };
        match outcome {
            Ok(id) => r = r.with_topic_id(id),
            Err(TopicError(code, msg)) => {
                r = r.with_error_code(code);
                if version >= 5 {
                    r = r.with_error_message(Some(StrBytes::from_string(msg)));
                }
            }
        }
        results.push(r);
    }
    DeleteTopicsResponse::default().with_responses(results)
}

#[cfg(test)]
mod tests {
    use super::{codes, validate_assignment};

    fn check(np: i32, rf: i16, given: &[(i32, &[i32])]) -> Result<Vec<Vec<i32>>, i16> {
        let given: Vec<(i32, Vec<i32>)> = given.iter().map(|(p, b)| (*p, b.to_vec())).collect();
        validate_assignment(np, rf, &given, &[1, 2, 3, 4], &[1, 2, 3]).map_err(|e| e.0)
    }

    #[test]
    fn a_valid_assignment_is_returned_by_partition_id() {
        assert_eq!(
            check(-1, -1, &[(1, &[2, 3]), (0, &[1, 2])]),
            Ok(vec![vec![1, 2], vec![2, 3]])
        );
        // a fenced broker may hold a replica if another one is live
        assert_eq!(check(-1, -1, &[(0, &[4, 1])]), Ok(vec![vec![4, 1]]));
    }

    #[test]
    fn counts_must_be_left_to_the_assignment() {
        assert_eq!(
            check(2, -1, &[(0, &[1]), (1, &[2])]),
            Err(codes::INVALID_PARTITIONS)
        );
        assert_eq!(
            check(-1, 1, &[(0, &[1]), (1, &[2])]),
            Err(codes::INVALID_REPLICATION_FACTOR)
        );
    }

    #[test]
    fn bad_assignments_are_invalid_replica_assignment() {
        let bad = codes::INVALID_REPLICA_ASSIGNMENT;
        assert_eq!(check(-1, -1, &[(0, &[1, 9])]), Err(bad), "unknown broker");
        assert_eq!(check(-1, -1, &[(0, &[1, 1])]), Err(bad), "duplicate");
        assert_eq!(check(-1, -1, &[(0, &[])]), Err(bad), "empty");
        assert_eq!(
            check(-1, -1, &[(0, &[1, 2]), (1, &[3])]),
            Err(bad),
            "uneven"
        );
        assert_eq!(
            check(-1, -1, &[(0, &[1]), (2, &[2])]),
            Err(bad),
            "not contiguous"
        );
        assert_eq!(check(-1, -1, &[(1, &[1])]), Err(bad), "not from 0");
        assert_eq!(
            check(-1, -1, &[(0, &[1]), (0, &[2])]),
            Err(bad),
            "listed twice"
        );
        assert_eq!(check(-1, -1, &[(0, &[4])]), Err(bad), "only fenced brokers");
    }
}
