//! sluice-server: a Kafka-compatible broker, thread-per-core on glommio.
//!
//! Data path of a produce: socket -> [`conn`] (i32 length-prefixed frame, bounded by
//! socket.request.max.bytes) -> [`api::handle`] (kafka-protocol decode; records stay `Bytes`
//! slices of the frame) -> split by owning shard -> [`shard::Shard::call`] over the glommio
//! channel mesh -> `PartitionLog::append` (one copy into an aligned DMA buffer) -> group
//! fdatasync -> responses written in request order.
//!
//! Data path of a fetch: owner shard reads -> hot tail `Bytes` or a segment file range ->
//! encoded response with the records spliced in -> sendfile(2) for file ranges.

pub mod alloc;
pub mod api;
pub mod catalog;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod conn;
pub mod fuzzing;
pub mod group;
pub mod http;
pub mod jsonstore;
pub mod kvlog;
pub mod limits;
pub mod metrics;
pub mod quota;
pub mod security;
mod sendfile;
pub mod shard;
pub mod txn;
pub mod wire;

use glommio::ExecutorJoinHandle;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use event_listener::Event;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use crate::catalog::Catalog;
use crate::config::{SecurityProtocol, ServerConfig};
use crate::shard::{BrokerShared, Job, Shard, MESH_CHANNEL_SIZE};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data dir {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("{0}")]
    Catalog(#[from] catalog::CatalogError),
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("{0}")]
    Config(String),
}

/// A running broker. Dropping it does not stop it; call [`BrokerHandle::stop`].
pub struct BrokerHandle {
    /// The first listener's bound address.
    pub addr: SocketAddr,
    /// Every listener: name, security protocol and bound address, in `listeners` order.
    pub listeners: Vec<(String, SecurityProtocol, SocketAddr)>,
    /// The HTTP listener's bound address (None: sluice.http.listen is off).
    pub http_addr: Option<SocketAddr>,
    shared: Arc<BrokerShared>,
    threads: Vec<ExecutorJoinHandle<()>>,
    /// Cluster mode: the quorum voter and membership of this broker.
    cluster: Option<cluster::ClusterNode>,
}

impl BrokerHandle {
    /// Stops accepting, lets in-flight requests finish, closes every log cleanly, and waits.
    pub fn stop(self) {
        self.shared.request_stop();
        self.join();
    }

    /// Waits for the shards to exit (after a stop requested elsewhere, e.g. a signal).
    pub fn join(mut self) {
        if let Some(c) = self.cluster.as_mut() {
            // wait for the stop, then hand leadership over before the logs close
            while !self.shared.is_stopping() {
                std::thread::sleep(Duration::from_millis(20));
            }
            c.member.controlled_shutdown();
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(mut c) = self.cluster.take() {
            c.stop();
        }
    }

    /// Asks the broker to stop without waiting.
    pub fn request_stop(&self) {
        self.shared.request_stop();
    }

    /// Cluster mode: the live brokers this broker's metadata image lists (None: single node).
    pub fn live_brokers(&self) -> Option<Vec<i32>> {
        self.shared.image().map(|i| i.live_brokers())
    }

    pub fn stopper(&self) -> Arc<dyn Fn() + Send + Sync> {
        let s = self.shared.clone();
        Arc::new(move || s.request_stop())
    }
}

/// Starts the broker's shards and returns once every shard is listening.
pub fn start(config: ServerConfig) -> Result<BrokerHandle, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let cores = config.cores.max(1);
    let listeners = config
        .listeners
        .resolve()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let inter_broker = if config.quorum_voters.is_empty() {
        0
    } else {
        config
            .listeners
            .inter_broker_index(&listeners)
            .map_err(|e| StartError::Config(e.to_string()))?
    };
    config.consumer_group.check().map_err(StartError::Config)?;
    config.share_group.check().map_err(StartError::Config)?;
    let security = security::Security::new(&config, &listeners).map_err(StartError::Config)?;
    if !config.quorum_voters.is_empty() {
        if let Some(tls) = security.tls.get(inter_broker).and_then(Option::as_ref) {
            if tls.client_config().is_none() {
                return Err(StartError::Config(format!(
                    "inter.broker.listener.name={} is an SSL listener: set its \
                     ssl.truststore.location (the CA the brokers' certificates chain to)",
                    listeners[inter_broker].name
                )));
            }
        }
    }
    let group_configs = group::configs::open_local(&config.data_dir)
        .map_err(|e| StartError::Config(format!("group configs: {e}")))?;
    let quotas = quota::QuotaManager::open(&config.data_dir, config.quota_windows)
        .map_err(|e| StartError::Config(format!("client quotas: {e}")))?;
    let catalog = Catalog::open(&config.data_dir, cores)?;
    let limits =
        limits::ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
    let shared = Arc::new(BrokerShared {
        limits,
        config,
        catalog,
        security,
        group_configs,
        quotas,
        listeners,
        inter_broker,
        bound: OnceLock::new(),
        stopping: AtomicBool::new(false),
        stop: Event::new(),
        drained: std::sync::atomic::AtomicUsize::new(0),
        cluster: OnceLock::new(),
        started: std::time::Instant::now(),
        http_bound: OnceLock::new(),
    });
    let mesh: MeshBuilder<Job, Full> = MeshBuilder::full(cores, MESH_CHANNEL_SIZE);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<SocketAddr>, String>>();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = Vec::new();
    for i in 0..cores {
        let shared = shared.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let cpu = match shared.config.cpus.as_slice() {
            [] => i % ncpu,
            cpus => cpus[i % cpus.len()],
        };
        if cpu >= ncpu {
            return Err(StartError::Config(format!(
                "sluice.cpus names CPU {cpu}, but this machine has {ncpu}"
            )));
        }
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .spin_before_park(Duration::from_micros(0));
        let handle = builder
            .spawn(move || async move {
                shard_main(shared, mesh, ready).await;
            })
            .map_err(|e| StartError::Shard {
                shard: i,
                reason: format!("{e} (io_uring blocked or memlock too low? see README)"),
            })?;
        threads.push(handle);
    }
    drop(ready_tx);
    let mut addr = None;
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(a)) => addr = Some(a),
            Ok(Err(reason)) => {
                shared.request_stop();
                return Err(StartError::Shard { shard: 0, reason });
            }
            Err(_) => {
                shared.request_stop();
                return Err(StartError::Shard {
                    shard: 0,
                    reason: "a shard exited during start-up".into(),
                });
            }
        }
    }
    let addrs: Vec<SocketAddr> = addr.ok_or_else(|| StartError::Shard {
        shard: 0,
        reason: "no shard started".into(),
    })?;
    let cluster = if shared.is_clustered() {
        match start_cluster(&shared) {
            Ok(c) => Some(c),
            Err(reason) => {
                shared.request_stop();
                return Err(StartError::Shard { shard: 0, reason });
            }
        }
    } else {
        None
    };
    let listeners = shared
        .listeners
        .iter()
        .zip(&addrs)
        .map(|(l, a)| (l.name.clone(), l.protocol, *a))
        .collect();
    Ok(BrokerHandle {
        addr: addrs[0],
        listeners,
        http_addr: shared.http_bound.get().copied(),
        shared,
        threads,
        cluster,
    })
}

/// Joins the cluster: starts this node's quorum voter (if it is one) and its membership, and a
/// thread that keeps the local catalog the projection of the metadata image.
fn start_cluster(shared: &Arc<BrokerShared>) -> Result<cluster::ClusterNode, String> {
    let (host, port) = shared.advertised(shared.inter_broker);
    let cluster_id = shared.catalog.read().cluster_id.clone();
    let node =
        cluster::ClusterNode::start(&shared.config, &cluster_id, host, port, shared.endpoints())?;
    let _ = shared.cluster.set(node.member.clone());
    let (member, shared) = (node.member.clone(), shared.clone());
    std::thread::Builder::new()
        .name("sluice-catalog-sync".into())
        .spawn(move || {
            let mut synced = 0;
            while !shared.is_stopping() {
                let img = member.image();
                if img.applied > synced {
                    match shared
                        .catalog
                        .sync_from_image(&img, shared.config.cores.max(1))
                    {
                        Ok(()) => synced = img.applied,
                        Err(e) => tracing::error!(error = %e, "catalog sync failed"),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(node)
}

/// Counts a shard as drained exactly once: explicitly during a stop, or when it exits early
/// (a failed start), so the other shards never wait for it forever.
struct Drained {
    shared: Arc<BrokerShared>,
    counted: bool,
}

impl Drained {
    fn mark(&mut self) {
        if !self.counted {
            self.counted = true;
            self.shared
                .drained
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.mark();
    }
}

async fn shard_main(
    shared: Arc<BrokerShared>,
    mesh: MeshBuilder<Job, Full>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, String>>,
) {
    let mut drained = Drained {
        shared: shared.clone(),
        counted: false,
    };
    let (senders, receivers) = match mesh.join().await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(format!("channel mesh join failed: {e}")));
            return;
        }
    };
    let id = senders.peer_id();
    let shard = Shard::new(id, shared.clone(), senders);
    shard.serve_mesh(receivers);
    if let Err(e) = sluice_engine::prime_dma_probe(&shared.config.data_dir).await {
        let _ = ready.send(Err(e.to_string()));
        return;
    }
    // open the partitions placed on this shard
    let owned: Vec<(String, i32)> = {
        let st = shared.catalog.read();
        st.topics
            .values()
            .flat_map(|t| {
                t.shards
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| s == id)
                    .map(|(p, _)| (t.name.clone(), p as i32))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for (topic, p) in owned {
        if let Err(e) = shard.open_partition(&topic, p).await {
            let _ = ready.send(Err(format!("opening {topic}-{p}: {e}")));
            return;
        }
    }
    // the group coordinator of this shard: its offsets partitions, replayed
    let coordinator = match group::Coordinator::open(
        &shared.config.data_dir,
        id,
        shard.nr,
        shared.config.coordinator_config(),
        shared.is_clustered(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("group coordinator: {e}")));
            return;
        }
    };
    let ticker = coordinator.start_ticker();
    shard.set_coordinator(coordinator.clone());
    // the transaction coordinator of this shard: its state partitions, replayed
    let txns = match txn::TxnCoordinator::open(
        &shared.config.data_dir,
        id,
        shard.nr,
        shared.config.txn_config(),
        shared.is_clustered(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("transaction coordinator: {e}")));
            return;
        }
    };
    let txn_ticker = txns.start_ticker(shard.clone());
    let share_ticker = group::share::start_ticker(shard.clone());
    shard.set_txn(txns.clone());
    let listeners = match bind_listeners(&shared, id).await {
        Ok(Some(l)) => l,
        Ok(None) => return, // stopping
        Err(e) => {
            let _ = ready.send(Err(e));
            shared.request_stop();
            return;
        }
    };
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .zip(&shared.listeners)
        .map(|(l, c)| l.local_addr().unwrap_or(c.bind))
        .collect();
    // the HTTP listener (metrics, health, console) runs on shard 0 as its own task
    let http = match (id, shared.config.http_listen) {
        (0, Some(addr)) => match http::bind(addr) {
            Ok(l) => {
                let _ = shared.http_bound.set(l.local_addr().unwrap_or(addr));
                Some(glommio::spawn_local(http::serve(shard.clone(), l)).detach())
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                shared.request_stop();
                return;
            }
        },
        _ => None,
    };
    let _ = ready.send(Ok(addrs.clone()));
    drop(ready);
    for (addr, l) in addrs.iter().zip(&shared.listeners) {
        tracing::info!(shard = id, listener = %l.name, protocol = l.protocol.name(), %addr, "listening");
    }
    // retention runs on every shard for its own logs
    let retention = {
        let shard = shard.clone();
        let every = Duration::from_millis(shared.config.retention_check_ms.max(100));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                shard.enforce_retention().await;
            }
        })
        .detach()
    };
    // the log cleaner of compacted topics: one per shard, for its own logs (leaders and
    // followers alike: every replica cleans its own copy)
    let cleaner = shared.config.cleaner.enable.then(|| {
        let shard = shard.clone();
        let cfg = shared
            .config
            .cleaner
            .per_shard(shard.nr, shared.config.message_max_bytes);
        let backoff = Duration::from_millis(shared.config.cleaner.backoff_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(backoff).await;
                shard.clean_logs(&cfg).await;
            }
        })
        .detach()
    });
    // cluster mode: the metadata image's client quotas put in force on this broker
    let quota_sync = (id == 0 && shared.is_clustered())
        .then(|| glommio::spawn_local(quota::sync_from_image(shared.clone())).detach());
    // cluster mode: replicas of this shard's partitions follow their leaders
    let replication = shared
        .is_clustered()
        .then(|| cluster::replica::start(shard.clone()));
    let open_conns = Rc::new(Cell::new(0usize));
    let acceptors: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, l)| {
            glommio::spawn_local(accept_loop(shard.clone(), l, index, open_conns.clone()))
        })
        .collect();
    for a in acceptors {
        a.await;
    }
    // let in-flight requests finish (bounded wait), then close every log cleanly
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while open_conns.get() > 0 && std::time::Instant::now() < until {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // wait for the other shards to finish their connections too: they may still call this one
    drained.mark();
    while shared.drained.load(std::sync::atomic::Ordering::Acquire) < shard.nr {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    retention.cancel();
    if let Some(q) = quota_sync {
        q.cancel();
    }
    if let Some(c) = cleaner {
        // a pass cut short leaves its .cleaned files (or a committed swap) to the next open
        c.cancel();
    }
    if let Some(h) = http {
        h.cancel();
    }
    if let Some(r) = replication {
        r.cancel();
    }
    ticker.cancel();
    txn_ticker.cancel();
    share_ticker.cancel();
    coordinator.close().await;
    txns.close().await;
    shard.close_all().await;
    tracing::info!(shard = id, "stopped");
}

/// Binds every listener: shard 0 first (ports may be 0), then the others join the addresses it
/// bound with SO_REUSEPORT. `Ok(None)`: the broker stopped meanwhile.
async fn bind_listeners(
    shared: &Arc<BrokerShared>,
    id: usize,
) -> Result<Option<Vec<TcpListener>>, String> {
    if id == 0 {
        let mut out = Vec::new();
        for l in &shared.listeners {
            let bound = TcpListener::bind(l.bind)
                .map_err(|e| format!("binding listener {} on {}: {e}", l.name, l.bind))?;
            out.push(bound);
        }
        let addrs = out
            .iter()
            .zip(&shared.listeners)
            .map(|(b, l)| b.local_addr().unwrap_or(l.bind))
            .collect();
        let _ = shared.bound.set(addrs);
        return Ok(Some(out));
    }
    loop {
        if let Some(addrs) = shared.bound.get() {
            let mut out = Vec::new();
            for (a, l) in addrs.iter().zip(&shared.listeners) {
                out.push(
                    TcpListener::bind(*a)
                        .map_err(|e| format!("binding listener {} on {a}: {e}", l.name))?,
                );
            }
            return Ok(Some(out));
        }
        if shared.is_stopping() {
            return Ok(None);
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Accepts connections on `listener` until the broker stops, handing each to `on_accept`
/// (Kafka listeners and the HTTP listener share it). A failed accept is logged as `what` and
/// retried after 10 ms.
pub(crate) async fn accept_until_stop(
    shared: &BrokerShared,
    listener: &TcpListener,
    what: &str,
    mut on_accept: impl FnMut(glommio::net::TcpStream),
) {
    loop {
        let stop = shared.stop.listen();
        if shared.is_stopping() {
            break;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.await;
            None
        })
        .await;
        match accepted {
            Some(Ok(stream)) => on_accept(stream),
            Some(Err(e)) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
}

/// Accepts connections on one Kafka listener until the broker stops.
async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    index: usize,
    open_conns: Rc<Cell<usize>>,
) {
    let shared = shard.shared.clone();
    let tls = shared.listeners[index].protocol.tls();
    let name = shared.listeners[index].name.clone();
    accept_until_stop(&shared, &listener, &name, |stream| {
        let s = shard.clone();
        let c = open_conns.clone();
        // the inter-broker listener of a cluster stays usable when clients hit the limits
        let permit = if index == shared.inter_broker && shared.cluster.get().is_some() {
            shared.limits.exempt()
        } else {
            match shared.limits.admit(stream.peer_addr().ok().map(|a| a.ip())) {
                Ok(p) => p,
                Err(_) => return, // dropping the stream closes it
            }
        };
        if !tls {
            glommio::spawn_local(async move {
                let _permit = permit;
                conn::serve(s, conn::Transport::tcp(stream), index, c).await
            })
            .detach();
            return;
        }
        glommio::spawn_local(async move {
            let _permit = permit;
            let Some(ctx) = s.shared.security.tls.get(index).and_then(Option::as_ref) else {
                return;
            };
            let peer = conn::peer_name(&stream);
            match ctx.accept(stream).await {
                Ok((tls, principal)) => {
                    let t = conn::Transport::tls(tls, peer, principal);
                    conn::serve(s, t, index, c).await;
                }
                Err(e) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
            }
        })
        .detach();
    })
    .await;
}
