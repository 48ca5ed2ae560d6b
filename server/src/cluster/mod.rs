//! Cluster mode: several brokers sharing one metadata quorum (KRaft's shape).
//!
//! Data path of a metadata change (CreateTopics with a replication factor, a leader election,
//! an ISR change): broker request -> controller RPC to the quorum leader -> [`quorum`] (one Raft
//! group across the voters, on raft-rs) -> committed command -> [`image`] applied on every
//! voter -> brokers pick up the new image on their next heartbeat.
//!
//! With no quorum configured the broker is a cluster of one and none of this runs.

pub mod controller;
pub mod coordinators;
pub mod identity;
pub mod image;
pub mod member;
pub mod peer;
pub mod quorum;
pub mod replica;
pub mod view;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use self::controller::{ControllerRpc, ImageCell, MetadataMachine};
use self::member::Member;
use self::quorum::{Quorum, QuorumConfig};
use crate::config::{Endpoint, ServerConfig};

/// This process's part of a cluster: its quorum voter (when it is one) and its membership.
pub struct ClusterNode {
    pub member: Arc<Member>,
    quorum: Option<Quorum>,
    duties: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ClusterNode {
    /// Starts the voter (if `node.id` is among `controller.quorum.voters`) and the member
    /// thread that registers this broker at `host:port` (its advertised inter-broker listener)
    /// with the endpoints of all its `listeners`.
    pub fn start(
        config: &ServerConfig,
        cluster_id: &str,
        host: String,
        port: u16,
        listeners: Vec<Endpoint>,
    ) -> Result<ClusterNode, String> {
        let id = config.node_id;
        let stop = Arc::new(AtomicBool::new(false));
        let mut quorum = None;
        let mut duties = None;
        if let Some(&(_, addr)) = config.quorum_voters.iter().find(|(v, _)| *v == id) {
            let cell = Arc::new(ImageCell::default());
            let rpc = ControllerRpc::new(
                cell.clone(),
                Duration::from_millis(config.broker_session_timeout_ms),
                cluster_id.to_string(),
            );
            let voters = config
                .quorum_voters
                .iter()
                .map(|&(v, a)| (v as u64, a))
                .collect();
            let dir = metadata_dir(&config.data_dir);
            let q = Quorum::start(
                QuorumConfig::new(id as u64, voters, dir),
                Box::new(MetadataMachine::new(cell)),
                rpc.clone(),
            )
            .map_err(|e| format!("metadata quorum on {addr}: {e}"))?;
            rpc.attach(q.clone());
            let s = stop.clone();
            let every = Duration::from_millis(config.broker_heartbeat_ms.clamp(50, 500));
            duties = Some(
                std::thread::Builder::new()
                    .name("sluice-controller".into())
                    .spawn(move || {
                        while !s.load(Ordering::Acquire) {
                            rpc.duties();
                            std::thread::sleep(every);
                        }
                    })
                    .map_err(|e| e.to_string())?,
            );
            quorum = Some(q);
        }
        let member = Member::new(id, host, port, listeners, config.quorum_voters.clone());
        member.start(Duration::from_millis(config.broker_heartbeat_ms));
        Ok(ClusterNode {
            member,
            quorum,
            duties,
            stop,
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.member.stop();
        if let Some(d) = self.duties.take() {
            let _ = d.join();
        }
        if let Some(q) = self.quorum.take() {
            q.stop();
        }
    }
}

/// Where a voter keeps the metadata log (Kafka's `__cluster_metadata-0`).
pub fn metadata_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("__cluster_metadata-0")
}
