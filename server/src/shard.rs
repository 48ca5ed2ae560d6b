//! Shards: one glommio executor per core. Each owns a set of partition logs (only the owner
//! touches their files) and accepts connections on the shared port (SO_REUSEPORT). Work for
//! partitions of another shard travels over the channel mesh as a closure that runs on the
//! owner; its answer comes back on a oneshot channel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use event_listener::Event;
use glommio::channels::channel_mesh::{Receivers, Senders};
use sluice_engine::{HotBudget, LogEnv, PartitionLog};
use thiserror::Error;

use crate::catalog::{log_config, partition_dir, Catalog};
use crate::config::{Listener, ServerConfig};

/// A unit of work sent to another shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Bound of each shard-to-shard channel (back-pressure between shards).
pub const MESH_CHANNEL_SIZE: usize = 1024;

#[derive(Debug, Error)]
pub enum ShardError {
    #[error("shard {0} is gone")]
    Gone(usize),
}

/// State shared by all shards.
pub struct BrokerShared {
    /// max.connections / max.connections.per.ip, counted over every shard.
    pub limits: Arc<crate::limits::ConnectionLimits>,
    pub config: ServerConfig,
    pub catalog: Arc<Catalog>,
    /// TLS contexts (and later SASL credentials and ACLs).
    pub security: crate::security::Security,
    /// Dynamic group configs of a single node (a cluster keeps them in the metadata image).
    pub group_configs: Arc<crate::group::configs::LocalGroupConfigs>,
    /// Client quotas and the rates measured against them (every shard's requests together).
    pub quotas: crate::quota::QuotaManager,
    /// The listeners, resolved from the config; connections refer to them by index.
    pub listeners: Vec<Listener>,
    /// Index into `listeners` of the one brokers reach each other on (cluster mode).
    pub inter_broker: usize,
    /// The address of each listener every shard listens on (known once shard 0 has bound).
    pub bound: OnceLock<Vec<SocketAddr>>,
    pub stopping: AtomicBool,
    pub stop: Event,
    /// Shards done serving connections during a stop. A shard closes its logs and exits only
    /// when every shard is done, so cross-shard calls made while draining still get answered.
    pub drained: std::sync::atomic::AtomicUsize,
    /// Cluster mode: this broker's membership (set at start when controller.quorum.voters is).
    pub cluster: OnceLock<Arc<crate::cluster::member::Member>>,
    /// When the broker started (uptime in metrics and /v1/status).
    pub started: std::time::Instant,
    /// The HTTP listener's bound address (set by shard 0 at start when it is on).
    pub http_bound: OnceLock<SocketAddr>,
}

impl BrokerShared {
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify(usize::MAX);
    }

    /// host:port clients of listener `index` are given (advertised.listeners, else the bound
    /// address with 127.0.0.1 for a wildcard).
    pub fn advertised(&self, index: usize) -> (String, u16) {
        let l = &self.listeners[index];
        if let Some(a) = &l.advertised {
            return a.clone();
        }
        let bound = self
            .bound
            .get()
            .and_then(|b| b.get(index).copied())
            .unwrap_or(l.bind);
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        (host, bound.port())
    }

    /// Every listener's advertised endpoint (what a broker registers in a cluster).
    pub fn endpoints(&self) -> Vec<crate::config::Endpoint> {
        (0..self.listeners.len())
            .map(|i| {
                let (host, port) = self.advertised(i);
                crate::config::Endpoint {
                    name: self.listeners[i].name.clone(),
                    host,
                    port,
                }
            })
            .collect()
    }

    /// Name of the listener other brokers use.
    pub fn inter_broker_listener(&self) -> &str {
        &self.listeners[self.inter_broker].name
    }
}

/// A topic partition key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

pub struct Shard {
    pub id: usize,
    pub nr: usize,
    pub shared: Arc<BrokerShared>,
    senders: Senders<Job>,
    logs: RefCell<HashMap<TopicPartition, Rc<PartitionLog>>>,
    /// Serialises log opening so one partition is never opened twice.
    opening: glommio::sync::Semaphore,
    /// Groups coordinated by this shard (set once at start).
    coordinator: RefCell<Option<Rc<crate::group::Coordinator>>>,
    /// Transactions coordinated by this shard (set once at start).
    txn: RefCell<Option<Rc<crate::txn::TxnCoordinator>>>,
    /// Bound on the hot tails of all partitions of this shard together.
    hot_budget: Rc<HotBudget>,
    /// Bounds the unwritten bytes of this shard's logs together (sluice.write.buffer.shard.bytes).
    pub write_budget: Rc<sluice_engine::WriteBudget>,
    /// Share-partitions (KIP-932) of the partitions this shard owns.
    pub share: crate::group::share::Store,
    /// Cluster mode: followers' progress on partitions led here, fetchers of those followed.
    pub replication: crate::cluster::replica::Replication,
    /// Request, connection and network counters of this shard (see [`crate::metrics`]).
    pub metrics: crate::metrics::ShardMetrics,
    /// Write, fdatasync and hot-tail counters shared by this shard's logs.
    pub storage_stats: Rc<sluice_engine::stats::StorageStats>,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<BrokerShared>, senders: Senders<Job>) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            nr: senders.nr_consumers(),
            senders,
            logs: RefCell::new(HashMap::new()),
            opening: glommio::sync::Semaphore::new(1),
            coordinator: RefCell::new(None),
            txn: RefCell::new(None),
            hot_budget: HotBudget::new(shared.config.hot_cache_shard_bytes),
            write_budget: sluice_engine::WriteBudget::new(shared.config.write_buffer_shard_bytes),
            share: Default::default(),
            replication: Default::default(),
            metrics: Default::default(),
            storage_stats: Rc::default(),
            shared,
        })
    }

    /// Receives jobs from every peer and runs each as a task, in arrival order.
    pub fn serve_mesh(self: &Rc<Self>, mut receivers: Receivers<Job>) {
        for (_, rx) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                use futures_lite::StreamExt;
                let mut rx = rx;
                while let Some(job) = rx.next().await {
                    glommio::spawn_local(job(shard.clone())).detach();
                }
            })
            .detach();
        }
    }

    /// Runs `f` on shard `target` (directly when it is this shard) and returns its output.
    pub async fn call<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Result<R, ShardError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Ok(f(self.clone()).await);
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                use futures_lite::FutureExt;
                let id = shard.id;
                // a panic in the called code (a bug) fails this call, not the target shard
                match std::panic::AssertUnwindSafe(f(shard)).catch_unwind().await {
                    Ok(r) => {
                        let _ = tx.send(r);
                    }
                    Err(payload) => tracing::error!(
                        shard = id,
                        panic = %crate::conn::panic_message(payload.as_ref()),
                        "cross-shard call panicked; the caller gets an error"
                    ),
                }
            })
        });
        let peer = self.peer_index(target);
        self.senders
            .send_to(peer, job)
            .await
            .map_err(|_| ShardError::Gone(target))?;
        rx.await.map_err(|_| ShardError::Gone(target))
    }

    /// Mesh peer index of a shard id (the mesh numbers peers in join order = shard id).
    fn peer_index(&self, shard: usize) -> usize {
        shard
    }

    pub fn coordinator(&self) -> Option<Rc<crate::group::Coordinator>> {
        self.coordinator.borrow().clone()
    }

    pub fn txn(&self) -> Option<Rc<crate::txn::TxnCoordinator>> {
        self.txn.borrow().clone()
    }

    pub fn set_txn(&self, c: Rc<crate::txn::TxnCoordinator>) {
        *self.txn.borrow_mut() = Some(c);
    }

    pub fn set_coordinator(&self, c: Rc<crate::group::Coordinator>) {
        *self.coordinator.borrow_mut() = Some(c);
    }

    /// The owning shard of each partition of `topic` (None for an unknown topic).
    pub fn topic_owners(&self, topic: &str) -> Option<Vec<usize>> {
        self.shared
            .catalog
            .read()
            .topics
            .get(topic)
            .map(|i| i.shards.clone())
    }

    pub fn log(&self, tp: &TopicPartition) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(tp).cloned()
    }

    pub fn logs(&self) -> Vec<(TopicPartition, Rc<PartitionLog>)> {
        let mut v: Vec<_> = self
            .logs
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The log of a partition this shard owns, opening it on first use. `None` when the
    /// catalog does not place the partition here.
    pub async fn owned_log(&self, tp: &TopicPartition) -> Result<Option<Rc<PartitionLog>>, String> {
        if let Some(l) = self.log(tp) {
            return Ok(Some(l));
        }
        let here = {
            let st = self.shared.catalog.read();
            st.topics
                .get(&*tp.topic)
                .and_then(|t| t.shards.get(tp.partition as usize).copied())
                == Some(self.id)
        };
        if !here || tp.partition < 0 {
            return Ok(None);
        }
        // cluster mode: the catalog follows the metadata image a moment later (its sync
        // thread), so a topic just deleted may still be in it; the image decides, or a request
        // racing the deletion would create the replica's files again after they were removed
        if let Some(img) = self.shared.image() {
            let me = self.shared.config.node_id;
            let replica = img
                .partition(&tp.topic, tp.partition)
                .is_some_and(|p| p.replicas.contains(&me));
            if !replica {
                return Ok(None);
            }
        }
        self.open_partition(&tp.topic, tp.partition).await?;
        Ok(self.log(tp))
    }

    /// Opens (or creates) the log of a partition this shard owns.
    pub async fn open_partition(&self, topic: &str, partition: i32) -> Result<(), String> {
        let tp = TopicPartition::new(topic, partition);
        let _permit = self
            .opening
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        if self.logs.borrow().contains_key(&tp) {
            return Ok(());
        }
        let (cfg, dir) = {
            let st = self.shared.catalog.read();
            let overrides = st
                .topics
                .get(topic)
                .map(|t| t.configs.clone())
                .unwrap_or_default();
            (
                log_config(&self.shared.config, &overrides),
                partition_dir(&self.shared.config.data_dir, topic, partition),
            )
        };
        // tests: a fault armed on this partition (sluice.fault.log)
        let faults = self
            .shared
            .config
            .fault_logs
            .iter()
            .find(|f| f.topic == topic && f.partition == partition)
            .map(|f| {
                let plan = sluice_engine::FaultPlan::new();
                plan.arm(f.fault);
                plan
            });
        let env = LogEnv {
            hot_budget: Some(self.hot_budget.clone()),
            write_budget: Some(self.write_budget.clone()),
            stats: self.storage_stats.clone(),
            faults,
            ..LogEnv::default()
        };
        let log = PartitionLog::open(&dir, cfg, env)
            .await
            .map_err(|e| e.to_string())?;
        if self.shared.is_clustered() {
            // before anyone can append or read: in a cluster the high watermark is the
            // replicas' (an acks=all produce racing the reconcile loop must not see a local
            // log, whose high watermark is its own written offset)
            log.set_replicated(true);
        }
        self.logs.borrow_mut().insert(tp, Rc::new(log));
        Ok(())
    }

    /// Closes and deletes the files of a partition this shard owns.
    pub async fn delete_partition(&self, topic: &str, partition: i32) -> Result<(), String> {
        let tp = TopicPartition::new(topic, partition);
        let log = self.logs.borrow_mut().remove(&tp);
        if let Some(log) = log {
            let _ = log.close().await;
        }
        let dir = partition_dir(&self.shared.config.data_dir, topic, partition);
        match sluice_engine::io::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("deleting {}: {e}", dir.display())),
        }
        if let Err(e) = sluice_engine::meta::sync_dir(&self.shared.config.data_dir) {
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Applies the catalog's current config of `topic` to this shard's logs of it.
    pub fn refresh_config(&self, topic: &str) {
        let cfg = {
            let st = self.shared.catalog.read();
            let Some(t) = st.topics.get(topic) else {
                return;
            };
            log_config(&self.shared.config, &t.configs)
        };
        for (tp, log) in self.logs.borrow().iter() {
            if &*tp.topic == topic {
                log.set_config(cfg.clone());
            }
        }
    }

    /// Closes every log cleanly (shutdown).
    /// Closes every log of this shard, all at once: their last writes and fdatasyncs overlap
    /// (one after another, a shard with a thousand partitions took seconds to stop).
    pub async fn close_all(&self) {
        let logs: Vec<_> = self.logs.borrow_mut().drain().collect();
        let closing: Vec<_> = logs
            .into_iter()
            .map(|(tp, log)| {
                glommio::spawn_local(async move {
                    if let Err(e) = log.close().await {
                        tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "close failed");
                    }
                })
            })
            .collect();
        for c in closing {
            c.await;
        }
    }

    /// Runs a log cleaner pass on each of this shard's compacted logs that is due (see
    /// `sluice_engine::compact`), one log at a time. Returns how many passes ran.
    pub async fn clean_logs(&self, cfg: &sluice_engine::CleanerConfig) -> usize {
        let mut ran = 0;
        for (tp, log) in self.logs() {
            if self.shared.is_stopping() {
                break;
            }
            if !log.config().cleanup.compact {
                continue;
            }
            match log.clean(cfg).await {
                Ok(Some(s)) => {
                    ran += 1;
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, removed = s.records_removed, bytes_in = s.bytes_in, bytes_out = s.bytes_out, "cleaned");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "log cleaner pass failed")
                }
            }
        }
        ran
    }

    /// Runs retention on this shard's logs and forgets idle producers
    /// (producer.id.expiration.ms).
    pub async fn enforce_retention(&self) {
        let idle_ms = self.shared.config.producer_id_expiration_ms as i64;
        for (tp, log) in self.logs() {
            if let Err(e) = log.enforce_retention().await {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "retention failed");
            }
            let n = log.expire_producers(idle_ms);
            if n > 0 {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, expired = n, "idle producers forgotten");
            }
        }
    }
}
