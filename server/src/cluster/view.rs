//! One view of brokers and partition placement for the request handlers, whichever the mode:
//! a single node leads every partition it has; in a cluster the metadata image decides.

use std::sync::Arc;

use super::image::{BrokerId, BrokerInfo, Image, NO_LEADER};
use crate::shard::BrokerShared;

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub offline: Vec<BrokerId>,
}

/// A broker clients can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
}

impl BrokerView {
    /// `b` at its endpoint of listener `name`, if it has one.
    pub fn of(b: &BrokerInfo, name: &str) -> Option<BrokerView> {
        b.endpoint(name).map(|(host, port)| BrokerView {
            id: b.id,
            host: host.to_string(),
            port,
        })
    }
}

impl BrokerShared {
    /// The cluster image, in cluster mode.
    pub fn image(&self) -> Option<Arc<Image>> {
        self.cluster.get().map(|m| m.image())
    }

    pub fn is_clustered(&self) -> bool {
        !self.config.quorum_voters.is_empty()
    }

    /// Live brokers (this one alone when not clustered), at their endpoints of listener
    /// `listener` (an index into this broker's listeners; brokers without a listener of that
    /// name are left out, as Kafka does).
    pub fn brokers(&self, listener: usize) -> Vec<BrokerView> {
        match self.image() {
            Some(img) => {
                let name = &self.listeners[listener].name;
                img.brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .filter_map(|b| BrokerView::of(b, name))
                    .collect()
            }
            None => {
                let (host, port) = self.advertised(listener);
                vec![BrokerView {
                    id: self.config.node_id,
                    host,
                    port,
                }]
            }
        }
    }

    /// The active controller (the quorum leader) or -1 when unknown.
    pub fn controller_id(&self) -> BrokerId {
        match self.cluster.get() {
            Some(m) => m.controller().unwrap_or(-1),
            None => self.config.node_id,
        }
    }

    /// Placement of `topic`-`partition`; `None` for an unknown partition.
    pub fn partition_view(&self, topic: &str, partition: i32) -> Option<PartitionView> {
        match self.image() {
            Some(img) => img.partition(topic, partition).map(|p| PartitionView {
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline: p.offline(&img),
            }),
            None => {
                let st = self.catalog.read();
                let t = st.topics.get(topic)?;
                if partition < 0 || partition >= t.partitions() {
                    return None;
                }
                let me = self.config.node_id;
                Some(PartitionView {
                    leader: me,
                    leader_epoch: 0,
                    replicas: vec![me],
                    isr: vec![me],
                    offline: Vec::new(),
                })
            }
        }
    }

    /// A producer id never handed out before: from the catalog (single node, persisted before it
    /// is returned) or from this broker's block allocated by the controller (cluster).
    pub fn allocate_producer_id(&self) -> Result<i64, String> {
        if let Some(m) = self.cluster.get() {
            return m.next_producer_id();
        }
        self.catalog
            .update(|st| {
                let id = st.next_producer_id;
                st.next_producer_id += 1;
                Ok::<_, crate::catalog::CatalogError>(id)
            })
            .map_err(|e| e.to_string())
    }

    /// Whether this broker leads the partition (always, when not clustered). In a cluster,
    /// requests for partitions led elsewhere get NOT_LEADER_OR_FOLLOWER (clients then refresh
    /// their metadata), and offline ones LEADER_NOT_AVAILABLE.
    pub fn leader_check(&self, topic: &str, partition: i32) -> Result<(), i16> {
        let Some(img) = self.image() else {
            return Ok(());
        };
        match img.partition(topic, partition) {
            None => Err(3),
            Some(p) if p.leader == self.config.node_id => Ok(()),
            Some(p) if p.leader == NO_LEADER => Err(5),
            Some(_) => Err(6),
        }
    }
}
