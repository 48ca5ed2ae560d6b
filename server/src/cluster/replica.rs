//! Partition replication, Kafka's way: followers fetch from the leader over the Kafka protocol.
//!
//! Data path (follower): [`follow`] task on the partition's owner shard -> Fetch v12 with this
//! broker's replica id, the log end as fetch offset and the last fetched epoch -> the leader
//! answers with batches (or a diverging epoch: truncate first, KIP-320) -> `append_replica` at the
//! leader's offsets -> fdatasync -> the next fetch's offset tells the leader it is durable here
//! -> the leader's high watermark, sent back, becomes this log's.
//!
//! Data path (leader): a follower's fetch records its offset ([`on_follower_fetch`]); the high
//! watermark is the least of the leader's written offset and the offsets of the other in-sync
//! replicas; acks=all waits for the leader's fdatasync and the high watermark
//! ([`wait_replicated`]). The reconcile loop ([`start`]) opens the logs of the partitions this
//! shard holds a replica of, starts and stops fetchers as leadership moves, and shrinks or
//! expands ISRs through the controller (AlterPartition) after replica.lag.time.max.ms.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::task::JoinHandle;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, FetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::{batch, Durability, Offset, PartitionLog};

use super::coordinators;
use super::identity;
use super::image::{BrokerId, Command};
use crate::api::codes;
use crate::catalog::partition_dir;
use crate::shard::{BrokerShared, Shard, TopicPartition};

/// Fetch version followers use (topic names, replica_id in the body, diverging epochs).
const FETCH_VERSION: i16 = 12;
use super::peer::{self, MAX_RESPONSE_BYTES};
const FETCH_MAX_WAIT_MS: i32 = 500;
const RECONCILE_EVERY: Duration = Duration::from_millis(100);

/// A follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Everything below is on the follower, fdatasync'd.
    fetched: Offset,
    /// Last time the follower had everything the leader had written.
    caught_up: Instant,
}

struct Leading {
    epoch: i32,
    since: Instant,
    followers: HashMap<BrokerId, Progress>,
    /// The ISR the image gave at the last reconcile (metrics: shrinks and expands).
    isr: Vec<BrokerId>,
}

struct Following {
    leader: BrokerId,
    epoch: i32,
    task: JoinHandle<()>,
}

/// A shard's replication state (only its own partitions).
#[derive(Default)]
pub struct Replication {
    leading: RefCell<HashMap<TopicPartition, Leading>>,
    following: RefCell<HashMap<TopicPartition, Following>>,
    /// Partitions with an AlterPartition proposal in flight (one at a time each).
    altering: RefCell<HashSet<TopicPartition>>,
    /// The topic id of each replica opened this run (its directory records it too, see
    /// `identity`): a replica whose topic left the image, or came back under a new id, is
    /// deleted.
    ids: RefCell<HashMap<TopicPartition, uuid::Uuid>>,
    /// Metrics: ISR shrinks and expands of partitions led here, and leaderships taken.
    pub isr_shrinks: std::cell::Cell<u64>,
    pub isr_expands: std::cell::Cell<u64>,
    pub leader_elections: std::cell::Cell<u64>,
}

impl Replication {
    /// Metrics: (partition, follower, messages behind this leader's log end) of every
    /// follower of the partitions led here.
    pub fn follower_lags(&self, shard: &Shard) -> Vec<(TopicPartition, BrokerId, u64)> {
        let mut out = Vec::new();
        for (tp, l) in self.leading.borrow().iter() {
            let Some(log) = shard.log(tp) else { continue };
            let end = log.offsets().log_end;
            for (b, p) in &l.followers {
                out.push((tp.clone(), *b, end.0.saturating_sub(p.fetched.0)));
            }
        }
        out
    }
}

/// FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for a request naming a leader epoch that is not
/// the partition's current one (clients detect a stale leader with these).
pub fn check_epoch(shared: &BrokerShared, tp: &TopicPartition, epoch: i32) -> Result<(), i16> {
    if epoch < 0 {
        return Ok(());
    }
    let Some(v) = shared.partition_view(&tp.topic, tp.partition) else {
        return Ok(());
    };
    match epoch.cmp(&v.leader_epoch) {
        std::cmp::Ordering::Less => Err(codes::FENCED_LEADER_EPOCH),
        std::cmp::Ordering::Greater => Err(codes::UNKNOWN_LEADER_EPOCH),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// min.insync.replicas of a topic (its override, else the broker's).
pub fn min_insync(shared: &BrokerShared, topic: &str) -> usize {
    shared
        .catalog
        .read()
        .topics
        .get(topic)
        .and_then(|t| t.configs.get("min.insync.replicas"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(shared.config.min_insync_replicas)
}

/// Records a follower's fetch offset and moves the high watermark.
pub fn on_follower_fetch(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    log: &PartitionLog,
    broker: BrokerId,
    offset: Offset,
) {
    let written = log.offsets().written;
    {
        let mut leading = shard.replication.leading.borrow_mut();
        if let Some(l) = leading.get_mut(tp) {
            let now = Instant::now();
            let e = l.followers.entry(broker).or_insert(Progress {
                fetched: offset,
                caught_up: l.since,
            });
            e.fetched = offset;
            if offset >= written {
                e.caught_up = now;
            }
        }
    }
    update_high_watermark(shard, tp, log);
}

/// The leader's high watermark: the least offset every in-sync replica has.
fn update_high_watermark(shard: &Rc<Shard>, tp: &TopicPartition, log: &PartitionLog) {
    let Some(v) = shard.shared.partition_view(&tp.topic, tp.partition) else {
        return;
    };
    let me = shard.shared.config.node_id;
    let mut hw = log.offsets().written;
    let leading = shard.replication.leading.borrow();
    let Some(l) = leading.get(tp) else { return };
    for b in v.isr.iter().filter(|&&b| b != me) {
        match l.followers.get(b) {
            Some(p) => hw = hw.min(p.fetched),
            // not heard from since this broker took over: the high watermark waits for it
            None => return,
        }
    }
    log.set_high_watermark(hw);
}

/// acks=all in a cluster: waits until the high watermark passes `last` (every in-sync replica
/// has it durably), while the ISR holds at least min.insync.replicas. Kafka error codes:
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below it, NOT_LEADER_OR_FOLLOWER when
/// leadership moved, REQUEST_TIMED_OUT at the deadline.
pub async fn wait_replicated(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    log: &PartitionLog,
    last: Offset,
    deadline: Instant,
) -> Result<(), i16> {
    let min_isr = min_insync(&shard.shared, &tp.topic);
    loop {
        let listener = log.listen();
        if log.offsets().high_watermark > last {
            return Ok(());
        }
        shard.shared.leader_check(&tp.topic, tp.partition)?;
        let v = shard
            .shared
            .partition_view(&tp.topic, tp.partition)
            .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
        if v.isr.len() < min_isr {
            return Err(codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
        }
        update_high_watermark(shard, tp, log);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(codes::REQUEST_TIMED_OUT);
        }
        // ISR changes arrive with the image, not as log events: re-check periodically
        let tick = left.min(RECONCILE_EVERY);
        futures_lite::future::or(listener, glommio::timer::sleep(tick)).await;
    }
}

/// Starts this shard's reconcile loop (cluster mode only).
pub fn start(shard: Rc<Shard>) -> JoinHandle<()> {
    glommio::spawn_local(async move {
        while !shard.shared.is_stopping() {
            reconcile(&shard).await;
            glommio::timer::sleep(RECONCILE_EVERY).await;
        }
        let following: Vec<_> = shard.replication.following.borrow_mut().drain().collect();
        for (_, f) in following {
            f.task.cancel();
        }
    })
    .detach()
}

async fn reconcile(shard: &Rc<Shard>) {
    let Some(image) = shard.shared.image() else {
        return;
    };
    let me = shard.shared.config.node_id;
    let mut mine = HashSet::new();
    // replicas the image gives this broker, opened or not
    let mut wanted = HashSet::new();
    for t in image.topics.values() {
        for (p, st) in t.partitions.iter().enumerate() {
            if !st.replicas.contains(&me) {
                continue;
            }
            let tp = TopicPartition::new(&t.name, p as i32);
            wanted.insert(tp.clone());
            if !owns(shard, &tp) || !identity_ok(shard, &tp, t.id, image.applied).await {
                continue;
            }
            let log = match shard.owned_log(&tp).await {
                Ok(Some(l)) => l,
                Ok(None) => continue, // another shard's, or the catalog has not caught up
                Err(e) => {
                    tracing::warn!(topic = %t.name, partition = p, error = %e, "cannot open replica");
                    continue;
                }
            };
            if !shard.replication.ids.borrow().contains_key(&tp) {
                let dir = partition_dir(&shard.shared.config.data_dir, &t.name, p as i32);
                if let Err(e) = identity::record(&dir, t.id, image.applied) {
                    tracing::warn!(topic = %t.name, partition = p, error = %e, "cannot record the replica's topic id");
                    continue;
                }
                shard.replication.ids.borrow_mut().insert(tp.clone(), t.id);
            }
            if !log.is_replicated() {
                log.set_replicated(true);
            }
            // topic configs changed through the quorum reach every replica's log here
            let cfg = crate::catalog::log_config(&shard.shared.config, &t.configs);
            if log.config() != cfg {
                log.set_config(cfg);
            }
            mine.insert(tp.clone());
            if st.leader == me {
                if let Some(f) = shard.replication.following.borrow_mut().remove(&tp) {
                    f.task.cancel();
                }
                {
                    let mut leading = shard.replication.leading.borrow_mut();
                    let l = leading.entry(tp.clone()).or_insert_with(|| {
                        let n = &shard.replication.leader_elections;
                        n.set(n.get() + 1);
                        Leading {
                            epoch: st.leader_epoch,
                            since: Instant::now(),
                            followers: HashMap::new(),
                            isr: st.isr.clone(),
                        }
                    });
                    if l.epoch != st.leader_epoch {
                        let n = &shard.replication.leader_elections;
                        n.set(n.get() + 1);
                        *l = Leading {
                            epoch: st.leader_epoch,
                            since: Instant::now(),
                            followers: HashMap::new(),
                            isr: st.isr.clone(),
                        };
                    }
                    if l.isr != st.isr {
                        // the ISR of a partition led here changed (this leader's
                        // AlterPartition, or the controller fencing a replica)
                        let r = &shard.replication;
                        let bump = |c: &std::cell::Cell<u64>| c.set(c.get() + 1);
                        if l.isr.iter().any(|b| !st.isr.contains(b)) {
                            bump(&r.isr_shrinks);
                        }
                        if st.isr.iter().any(|b| !l.isr.contains(b)) {
                            bump(&r.isr_expands);
                        }
                        l.isr = st.isr.clone();
                    }
                }
                update_high_watermark(shard, &tp, &log);
                maintain_isr(shard, &tp, &log, st.partition_epoch, &st.isr, &st.replicas);
                if coordinators::is_internal(&t.name) {
                    coordinators::reconcile(shard, &tp, &log, Some(st.leader_epoch)).await;
                }
            } else {
                shard.replication.leading.borrow_mut().remove(&tp);
                if coordinators::is_internal(&t.name) {
                    coordinators::reconcile(shard, &tp, &log, None).await;
                }
                let current = shard
                    .replication
                    .following
                    .borrow()
                    .get(&tp)
                    .map(|f| (f.leader, f.epoch));
                if current != Some((st.leader, st.leader_epoch)) && st.leader >= 0 {
                    let task = glommio::spawn_local(follow(
                        shard.clone(),
                        tp.clone(),
                        st.leader,
                        st.leader_epoch,
                    ))
                    .detach();
                    let old = shard.replication.following.borrow_mut().insert(
                        tp.clone(),
                        Following {
                            leader: st.leader,
                            epoch: st.leader_epoch,
                            task,
                        },
                    );
                    if let Some(o) = old {
                        o.task.cancel();
                    }
                }
            }
        }
    }
    shard
        .replication
        .leading
        .borrow_mut()
        .retain(|tp, _| mine.contains(tp));
    let gone: Vec<_> = shard
        .replication
        .following
        .borrow()
        .keys()
        .filter(|tp| !mine.contains(*tp))
        .cloned()
        .collect();
    for tp in gone {
        if let Some(f) = shard.replication.following.borrow_mut().remove(&tp) {
            f.task.cancel();
        }
    }
    // replicas whose topic was deleted (or moved off this broker) since they were opened
    let deleted: Vec<TopicPartition> = shard
        .replication
        .ids
        .borrow()
        .keys()
        .filter(|tp| !wanted.contains(*tp))
        .cloned()
        .collect();
    // and replicas opened at start for topics deleted while this broker was down
    let strays: Vec<TopicPartition> = shard
        .logs()
        .into_iter()
        .map(|(tp, _)| tp)
        .filter(|tp| !wanted.contains(tp) && !shard.replication.ids.borrow().contains_key(tp))
        .filter(|tp| {
            let dir = partition_dir(&shard.shared.config.data_dir, &tp.topic, tp.partition);
            identity::recorded_by(&dir, image.applied)
        })
        .collect();
    for tp in deleted.into_iter().chain(strays) {
        tracing::info!(topic = %tp.topic, partition = tp.partition, "replica's topic deleted; removing its files");
        remove_replica(shard, &tp).await;
    }
}

/// Whether the catalog places `tp` on this shard.
fn owns(shard: &Shard, tp: &TopicPartition) -> bool {
    shard
        .shared
        .catalog
        .read()
        .topics
        .get(&*tp.topic)
        .and_then(|t| t.shards.get(tp.partition as usize).copied())
        == Some(shard.id)
}

/// Whether this shard may open `tp` as a replica of topic `id`: a replica opened earlier this
/// run under another id, or a directory holding an older topic of the same name, is deleted
/// first (a directory newer than the image waits for it).
async fn identity_ok(shard: &Rc<Shard>, tp: &TopicPartition, id: uuid::Uuid, applied: u64) -> bool {
    let known = shard.replication.ids.borrow().get(tp).copied();
    match known {
        Some(k) if k == id => true,
        Some(_) => {
            tracing::info!(topic = %tp.topic, partition = tp.partition, "topic created again under a new id; removing the old replica");
            remove_replica(shard, tp).await
        }
        None => {
            let dir = partition_dir(&shard.shared.config.data_dir, &tp.topic, tp.partition);
            match identity::check(&dir, id, applied) {
                identity::Verdict::Open => true,
                identity::Verdict::Wait => false,
                identity::Verdict::Stale => {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, "replica holds a deleted topic of the same name; removing it");
                    remove_replica(shard, tp).await
                }
            }
        }
    }
}

/// Stops replicating `tp` on this shard and deletes its files. Returns whether it is gone.
async fn remove_replica(shard: &Rc<Shard>, tp: &TopicPartition) -> bool {
    if let Some(f) = shard.replication.following.borrow_mut().remove(tp) {
        f.task.cancel();
    }
    shard.replication.leading.borrow_mut().remove(tp);
    shard.replication.ids.borrow_mut().remove(tp);
    match shard.delete_partition(&tp.topic, tp.partition).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "removing a replica failed");
            false
        }
    }
}

/// Shrinks the ISR by followers that have not caught up for replica.lag.time.max.ms and
/// expands it by live replicas that reached the high watermark (AlterPartition, one at a time).
fn maintain_isr(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    log: &PartitionLog,
    partition_epoch: i32,
    isr: &[BrokerId],
    replicas: &[BrokerId],
) {
    if shard.replication.altering.borrow().contains(tp) {
        return;
    }
    let Some(member) = shard.shared.cluster.get().cloned() else {
        return;
    };
    let me = shard.shared.config.node_id;
    let lag = Duration::from_millis(shard.shared.config.replica_lag_time_max_ms);
    let hw = log.offsets().high_watermark;
    let image = member.image();
    let now = Instant::now();
    let want: Vec<BrokerId> = {
        let leading = shard.replication.leading.borrow();
        let Some(l) = leading.get(tp) else { return };
        replicas
            .iter()
            .copied()
            .filter(|&b| {
                if b == me {
                    return true;
                }
                let p = l.followers.get(&b);
                if isr.contains(&b) {
                    let caught_up = p.map_or(l.since, |p| p.caught_up);
                    now.duration_since(caught_up) <= lag
                } else {
                    image.is_live(b)
                        && p.is_some_and(|p| {
                            p.fetched >= hw && now.duration_since(p.caught_up) <= lag
                        })
                }
            })
            .collect()
    };
    if want == isr {
        return;
    }
    tracing::info!(topic = %tp.topic, partition = tp.partition, from = ?isr, to = ?want, "changing ISR");
    shard.replication.altering.borrow_mut().insert(tp.clone());
    let cmd = Command::AlterPartition {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        leader: me,
        partition_epoch,
        isr: want,
    };
    let (s, tp) = (shard.clone(), tp.clone());
    glommio::spawn_local(async move {
        let r = glommio::executor()
            .spawn_blocking(move || member.propose(cmd))
            .await;
        if let Ok(Err(e)) | Err(e) = r
            .map_err(|e| e.to_string())
            .map(|x| x.map_err(|e| e.to_string()))
        {
            tracing::debug!(error = %e, "AlterPartition not applied");
        }
        s.replication.altering.borrow_mut().remove(&tp);
    })
    .detach();
}

/// Why a follower's fetch round ended early.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("leader: {0}")]
    Peer(#[from] peer::PeerError),
    #[error("log: {0}")]
    Log(#[from] sluice_engine::LogError),
    #[error("leader answered error {0}")]
    Kafka(i16),
}

/// Follows `leader` for one partition at `epoch` until leadership moves (the reconcile loop
/// cancels this task then).
async fn follow(shard: Rc<Shard>, tp: TopicPartition, leader: BrokerId, epoch: i32) {
    let mut backoff = Duration::from_millis(50);
    while !shard.shared.is_stopping() {
        match follow_connection(&shard, &tp, leader, epoch).await {
            Ok(()) => return,
            Err(FollowError::Peer(e @ peer::PeerError::Tls(_))) => {
                // a configuration problem (certificates, truststore): say it, but not 1/s
                if backoff < Duration::from_secs(1) {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, leader, error = %e, "cannot follow the leader; retrying");
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, leader, error = %e, "follower fetch failed; retrying");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn follow_connection(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    leader: BrokerId,
    epoch: i32,
) -> Result<(), FollowError> {
    let mut stream = peer::connect(&shard.shared, leader).await?;
    let me = shard.shared.config.node_id;
    let mut correlation = 0i32;
    loop {
        let Some(log) = shard.log(tp) else {
            return Ok(());
        };
        let leo = log.offsets().log_end;
        let req = FetchRequest::default()
            .with_replica_id(WireBrokerId(me))
            .with_max_wait_ms(FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(MAX_RESPONSE_BYTES as i32 / 2)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(tp.topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(epoch)
                    .with_fetch_offset(leo.get() as i64)
                    .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
                    .with_partition_max_bytes(MAX_RESPONSE_BYTES as i32 / 4)])]);
        correlation = correlation.wrapping_add(1);
        let client = format!("sluice-replica-{me}");
        peer::send(
            &mut stream,
            ApiKey::Fetch,
            FETCH_VERSION,
            correlation,
            &client,
            &req,
        )
        .await?;
        let resp: FetchResponse =
            peer::receive(&mut stream, ApiKey::Fetch, FETCH_VERSION, correlation).await?;
        let part = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == tp.partition)
            .ok_or_else(|| peer::PeerError::Protocol("partition missing".into()))?;
        match part.error_code {
            codes::NONE => {}
            codes::OFFSET_OUT_OF_RANGE if (leo.get() as i64) < part.log_start_offset => {
                log.truncate_fully_and_start_at(Offset(part.log_start_offset as u64))
                    .await?;
                continue;
            }
            codes::OFFSET_OUT_OF_RANGE => {
                let to = part.high_watermark.max(part.log_start_offset).max(0) as u64;
                log.truncate_to(Offset(to)).await?;
                continue;
            }
            code => {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                return Err(FollowError::Kafka(code));
            }
        }
        if part.diverging_epoch.epoch >= 0 || part.diverging_epoch.end_offset >= 0 {
            // our log has batches the leader never committed in that epoch: cut them (KIP-320)
            let (own_epoch, own_end) = log.end_offset_for_epoch(part.diverging_epoch.epoch);
            let mut to = part.diverging_epoch.end_offset.max(0);
            if own_epoch == part.diverging_epoch.epoch && own_end >= 0 {
                to = to.min(own_end);
            }
            tracing::info!(topic = %tp.topic, partition = tp.partition, to, "truncating diverged follower log");
            log.truncate_to(Offset(to as u64)).await?;
            continue;
        }
        let mut last = None;
        if let Some(records) = part.records.filter(|r| !r.is_empty()) {
            for b in batch::split_batches(&records) {
                let info = log.append_replica(b).await?;
                last = Some(info.last_offset);
            }
        }
        if let Some(last) = last {
            // reported to the leader (as the next fetch offset) only once it is durable here
            log.wait_durable(last, Durability::Synced).await?;
        }
        let end = log.offsets().log_end;
        log.set_high_watermark(Offset((part.high_watermark.max(0) as u64).min(end.get())));
    }
}
