//! The cluster's metadata image and the commands that change it: the state machine of the
//! metadata quorum. Sans-IO and deterministic: every voter applies the same committed commands
//! in the same order and ends with the same image (tested on its own in
//! `server/tests/cluster_image.rs`).
//!
//! Decisions that must be the same everywhere (who leads a partition after its leader's broker
//! is fenced, which replicas stay in the ISR) are taken inside [`Image::apply`], from the image
//! alone. Decisions that need fresh input (replica placement for a new topic) are taken by the
//! controller before proposing and travel inside the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::config::Endpoint;
use crate::security::acl::AclBinding;
use crate::security::credentials::{ScramChange, ScramUsers};

pub type BrokerId = i32;

/// No leader (every in-sync replica is fenced): the partition is offline.
pub const NO_LEADER: BrokerId = -1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: BrokerId,
    /// The inter-broker listener (advertised host and port): where replicas fetch and
    /// coordinators send markers.
    pub host: String,
    pub port: u16,
    /// Every listener's advertised endpoint, by name: clients are given the one of the listener
    /// they came in on.
    #[serde(default)]
    pub listeners: Vec<Endpoint>,
    /// A fenced broker leads nothing and is not in any ISR (its lease expired or it stopped).
    pub fenced: bool,
    /// Bumped on every registration.
    pub epoch: i64,
    /// Random per process start: a restarted broker is told apart from its old self.
    pub incarnation: u64,
}

impl BrokerInfo {
    /// This broker's endpoint of listener `name`; an image written before brokers registered
    /// their listeners has only the inter-broker one.
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        let e = self.listeners.iter().find(|e| e.name == name)?;
        Some((&e.host, e.port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    pub leader: BrokerId,
    /// Bumped on every leader change; stamped into the batches the leader writes.
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// Bumped on every change of leader or ISR (AlterPartition compares it).
    pub partition_epoch: i32,
}

impl PartitionState {
    fn new(replicas: Vec<BrokerId>, live: impl Fn(BrokerId) -> bool) -> PartitionState {
        let isr: Vec<BrokerId> = replicas.iter().copied().filter(|&b| live(b)).collect();
        PartitionState {
            leader: isr.first().copied().unwrap_or(NO_LEADER),
            replicas,
            leader_epoch: 0,
            isr,
            partition_epoch: 0,
        }
    }

    /// Replicas that are not live (fenced or unknown brokers).
    pub fn offline(&self, image: &Image) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|&b| !image.is_live(b))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

impl TopicState {
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// Everything the metadata quorum stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub cluster_id: String,
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    pub topics: BTreeMap<String, TopicState>,
    /// Producer ids below this were handed out (blocks are allocated, never reused).
    pub next_producer_id: i64,
    /// SCRAM credentials (user -> mechanism -> salted keys), the same on every broker.
    #[serde(default)]
    pub scram: ScramUsers,
    /// ACL bindings, the same on every broker.
    #[serde(default)]
    pub acls: std::collections::BTreeSet<AclBinding>,
    /// Dynamic group configs (GROUP config resources), by group id.
    #[serde(default)]
    pub group_configs: crate::group::configs::GroupConfigMap,
    /// Client quotas (AlterClientQuotas), the same on every broker.
    #[serde(default)]
    pub client_quotas: crate::quota::QuotaMap,
    /// Index of the last command applied (the image's version).
    pub applied: u64,
}

/// A change to the image, proposed by the controller and applied by every voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first command of a new cluster.
    InitCluster {
        cluster_id: String,
    },
    /// A broker (re)starts: recorded live; partitions it can lead again get a leader.
    RegisterBroker {
        id: BrokerId,
        host: String,
        port: u16,
        #[serde(default)]
        listeners: Vec<Endpoint>,
        incarnation: u64,
    },
    /// A broker stopped heartbeating (or shut down): it leaves every ISR and leads nothing.
    FenceBroker {
        id: BrokerId,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        /// Replicas of each partition, chosen by the controller (see [`assign_replicas`]).
        assignment: Vec<Vec<BrokerId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Adds partitions at the end with the given replicas.
    CreatePartitions {
        name: String,
        assignment: Vec<Vec<BrokerId>>,
    },
    /// Replaces a topic's config overrides.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A leader changes its ISR (KIP-497 AlterPartition).
    AlterPartition {
        topic: String,
        partition: i32,
        leader: BrokerId,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    },
    AllocateProducerIds {
        count: i64,
    },
    /// AlterUserScramCredentials, validated by the broker that took the request.
    AlterScramCredentials {
        changes: Vec<ScramChange>,
    },
    /// CreateAcls / DeleteAcls: bindings to add and to remove.
    ChangeAcls {
        add: Vec<AclBinding>,
        remove: Vec<AclBinding>,
    },
    /// AlterConfigs / IncrementalAlterConfigs on a GROUP resource: replaces the group's
    /// overrides (validated by the broker that took the request; empty removes them).
    SetGroupConfigs {
        group: String,
        configs: BTreeMap<String, String>,
    },
    /// AlterClientQuotas: values to set or remove per entity (validated by the broker that
    /// took the request).
    AlterClientQuotas {
        changes: Vec<(crate::quota::Entity, crate::quota::Ops)>,
    },
}

/// Why a command changed nothing. Carries the Kafka error code for the requester.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("partition {topic}-{partition} does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("stale request: {0}")]
    Stale(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

impl ApplyError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            ApplyError::TopicExists(_) => 36,
            ApplyError::UnknownTopic(_) | ApplyError::UnknownPartition { .. } => 3,
            ApplyError::UnknownBroker(_) => 39,
            ApplyError::Stale(_) => 119, // INVALID_UPDATE_VERSION
            ApplyError::Invalid(_) => 39,
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// AllocateProducerIds: the first id of the block.
    ProducerIds {
        first: i64,
    },
}

impl Image {
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    }

    pub fn by_id(&self, id: Uuid) -> Option<&TopicState> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Applies one committed command. Deterministic: depends only on the image and `cmd`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Applied, ApplyError> {
        debug_assert!(
            index > self.applied || index == 0,
            "commands apply in log order"
        );
        self.applied = self.applied.max(index);
        match cmd {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                Ok(Applied::Done)
            }
            Command::RegisterBroker {
                id,
                host,
                port,
                listeners,
                incarnation,
            } => {
                let epoch = self.brokers.get(id).map_or(0, |b| b.epoch + 1);
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        listeners: listeners.clone(),
                        fenced: false,
                        epoch,
                        incarnation: *incarnation,
                    },
                );
                self.on_broker_live(*id);
                Ok(Applied::Done)
            }
            Command::FenceBroker { id } => {
                let Some(b) = self.brokers.get_mut(id) else {
                    return Err(ApplyError::UnknownBroker(*id));
                };
                b.fenced = true;
                self.on_broker_fenced(*id);
                Ok(Applied::Done)
            }
            Command::CreateTopic {
                name,
                id,
                assignment,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                self.check_assignment(assignment)?;
                let partitions = assignment
                    .iter()
                    .map(|r| PartitionState::new(r.clone(), |b| self.is_live(b)))
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicState {
                        name: name.clone(),
                        id: *id,
                        partitions,
                        configs: configs.clone(),
                    },
                );
                Ok(Applied::Done)
            }
            Command::DeleteTopic { name } => self
                .topics
                .remove(name)
                .map(|_| Applied::Done)
                .ok_or_else(|| ApplyError::UnknownTopic(name.clone())),
            Command::CreatePartitions { name, assignment } => {
                self.check_assignment(assignment)?;
                let new: Vec<PartitionState> = assignment
                    .iter()
                    .map(|r| PartitionState::new(r.clone(), |b| self.is_live(b)))
                    .collect();
                let t = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                t.partitions.extend(new);
                Ok(Applied::Done)
            }
            Command::SetTopicConfigs { name, configs } => {
                let t = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                t.configs = configs.clone();
                Ok(Applied::Done)
            }
            Command::AlterPartition {
                topic,
                partition,
                leader,
                partition_epoch,
                isr,
            } => self.alter_partition(topic, *partition, *leader, *partition_epoch, isr),
            Command::AllocateProducerIds { count } => {
                if *count <= 0 {
                    return Err(ApplyError::Invalid(format!("producer id block of {count}")));
                }
                let first = self.next_producer_id;
                self.next_producer_id += count;
                Ok(Applied::ProducerIds { first })
            }
            Command::AlterScramCredentials { changes } => {
                crate::security::credentials::apply(&mut self.scram, changes);
                Ok(Applied::Done)
            }
            Command::ChangeAcls { add, remove } => {
                crate::security::acl::apply(&mut self.acls, add, remove);
                Ok(Applied::Done)
            }
            Command::SetGroupConfigs { group, configs } => {
                crate::group::configs::apply(&mut self.group_configs, group, configs);
                Ok(Applied::Done)
            }
            Command::AlterClientQuotas { changes } => {
                for (entity, ops) in changes {
                    self.client_quotas.apply(entity, ops);
                }
                Ok(Applied::Done)
            }
        }
    }

    fn check_assignment(&self, assignment: &[Vec<BrokerId>]) -> Result<(), ApplyError> {
        for r in assignment {
            if r.is_empty() {
                return Err(ApplyError::Invalid("a partition without replicas".into()));
            }
            if let Some(b) = r.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(ApplyError::UnknownBroker(*b));
            }
            let mut seen = r.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != r.len() {
                return Err(ApplyError::Invalid(format!("duplicate replica in {r:?}")));
            }
        }
        Ok(())
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: BrokerId,
        partition_epoch: i32,
        isr: &[BrokerId],
    ) -> Result<Applied, ApplyError> {
        let live: Vec<BrokerId> = self.live_brokers();
        let p = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
            .ok_or_else(|| ApplyError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })?;
        if p.leader != leader {
            return Err(ApplyError::Stale(format!(
                "{leader} is not the leader of {topic}-{partition} (leader {})",
                p.leader
            )));
        }
        if p.partition_epoch != partition_epoch {
            return Err(ApplyError::Stale(format!(
                "partition epoch {partition_epoch}, current {}",
                p.partition_epoch
            )));
        }
        if !isr.contains(&leader) {
            return Err(ApplyError::Invalid(
                "the ISR must contain the leader".into(),
            ));
        }
        if let Some(b) = isr.iter().find(|b| !p.replicas.contains(b)) {
            return Err(ApplyError::Invalid(format!("{b} is not a replica")));
        }
        // a fenced broker cannot join the ISR (it may have lost data it acknowledged)
        if let Some(b) = isr.iter().find(|b| !live.contains(b) && !p.isr.contains(b)) {
            return Err(ApplyError::Invalid(format!("broker {b} is fenced")));
        }
        p.isr = isr.to_vec();
        p.partition_epoch += 1;
        Ok(Applied::Done)
    }

    /// A fenced broker leaves every ISR it is in and leads nothing. The last member of an ISR
    /// stays in it (it alone holds every committed record): the partition is then offline until
    /// that broker returns, because unclean leader election is off.
    fn on_broker_fenced(&mut self, id: BrokerId) {
        let live: Vec<BrokerId> = self.live_brokers();
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut() {
                if !p.replicas.contains(&id) {
                    continue;
                }
                let mut changed = false;
                if p.isr.contains(&id) && p.isr.len() > 1 {
                    p.isr.retain(|&b| b != id);
                    changed = true;
                }
                if p.leader == id {
                    // the first live in-sync replica in assignment order leads
                    p.leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|b| p.isr.contains(b) && live.contains(b))
                        .unwrap_or(NO_LEADER);
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// A (re)registered broker may lead again the offline partitions whose ISR it still is.
    fn on_broker_live(&mut self, id: BrokerId) {
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut() {
                if p.leader == NO_LEADER && p.isr.contains(&id) {
                    p.leader = id;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }
}

/// Kafka's replica placement without racks: partition `p`'s replicas start at broker
/// `(start + p) % n` and continue with a shift that changes every `n` partitions, so leaders
/// and followers both spread evenly. `brokers` must be sorted and distinct.
pub fn assign_replicas(
    brokers: &[BrokerId],
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, String> {
    let n = brokers.len();
    if replication_factor == 0 {
        return Err("replication factor must be at least 1".into());
    }
    if replication_factor > n {
        return Err(format!(
            "Replication factor: {replication_factor} larger than available brokers: {n}."
        ));
    }
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let first = (start + p) % n;
        let shift = 1 + (p / n) % (n.max(2) - 1);
        let mut r = vec![brokers[first]];
        for j in 0..replication_factor - 1 {
            // Kafka's replicaIndex: never lands on the first replica again
            let idx = (first + 1 + (shift + j) % (n - 1).max(1)) % n;
            r.push(brokers[idx]);
        }
        r.dedup();
        if r.len() != replication_factor {
            // n == 1 and rf == 1 only reach here without duplicates; anything else is a bug
            return Err(format!("placement produced {r:?}"));
        }
        out.push(r);
    }
    Ok(out)
}
