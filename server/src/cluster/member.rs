//! A broker's membership in the cluster: its heartbeat thread and its copy of the metadata
//! image.
//!
//! Data path: member thread -> `Request::Heartbeat` to the quorum leader (found by asking any
//! voter) every broker.heartbeat.interval.ms -> newer image in the reply -> published to
//! [`Member::image`], which the shards read. Proposals from request handlers (CreateTopics and
//! the like) go the same way, from a blocking thread (never a shard's reactor), and return once
//! this broker's image includes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::controller::{
    CommandResult, Heartbeat, ImageCell, QuorumView, Reply, Request, PROPOSE_TIMEOUT,
};
use super::image::{BrokerId, Command, Image};
use super::quorum::rpc_call;
use crate::config::Endpoint;

/// One RPC attempt's limit (a dead voter must not hold the heartbeat for long).
const RPC_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct Member {
    pub id: BrokerId,
    host: String,
    port: u16,
    listeners: Vec<Endpoint>,
    incarnation: u64,
    voters: Vec<(BrokerId, SocketAddr)>,
    /// The voter that answered last as leader.
    leader: Mutex<Option<BrokerId>>,
    image: ImageCell,
    /// Set when a heartbeat got through since start (the broker is registered).
    registered: AtomicBool,
    stop: AtomicBool,
    /// A block of producer ids from the controller: (next, end).
    producer_ids: Mutex<(i64, i64)>,
    /// Set by a controlled shutdown: no more heartbeats (they would register it again).
    leaving: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Member {
    pub fn new(
        id: BrokerId,
        host: String,
        port: u16,
        listeners: Vec<Endpoint>,
        voters: Vec<(BrokerId, SocketAddr)>,
    ) -> Arc<Member> {
        let incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
        Arc::new(Member {
            id,
            host,
            port,
            listeners,
            incarnation,
            voters,
            leader: Mutex::new(None),
            image: ImageCell::default(),
            registered: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            producer_ids: Mutex::new((0, 0)),
            leaving: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    /// This broker's copy of the metadata image.
    pub fn image(&self) -> Arc<Image> {
        self.image.get()
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// The voter currently answering as quorum leader, if known.
    pub fn controller(&self) -> Option<BrokerId> {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn addr_of(&self, id: BrokerId) -> Option<SocketAddr> {
        self.voters.iter().find(|(v, _)| *v == id).map(|(_, a)| *a)
    }

    /// Sends `req` to the leader, following NotLeader redirects and trying every voter, until
    /// `deadline`. Blocking: call from a thread, never from a shard.
    pub fn call(&self, req: &Request, deadline: Instant) -> Result<Reply, String> {
        let bytes = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let mut last_err = String::from("no voter answered");
        let mut round = 0usize;
        while Instant::now() < deadline && !self.stop.load(Ordering::Acquire) {
            let target = self.controller().or_else(|| {
                self.voters
                    .get(round % self.voters.len().max(1))
                    .map(|v| v.0)
            });
            round += 1;
            let Some(addr) = target.and_then(|t| self.addr_of(t)) else {
                return Err("controller.quorum.voters is empty".into());
            };
            match rpc_call(addr, &bytes, RPC_TIMEOUT) {
                Ok(reply) => match serde_json::from_slice::<Reply>(&reply) {
                    Ok(Reply::NotLeader { leader }) => {
                        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) =
                            leader.filter(|l| Some(*l) != target);
                        if leader.is_none() {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        last_err = "no quorum leader".into();
                    }
                    Ok(r) => {
                        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = target;
                        return Ok(r);
                    }
                    Err(e) => last_err = format!("bad reply from {addr}: {e}"),
                },
                Err(e) => {
                    *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    last_err = format!("{addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Err(last_err)
    }

    /// One heartbeat; publishes a newer image. Returns whether the leader answered.
    pub fn heartbeat(&self, deadline: Instant) -> Result<(), String> {
        let req = Request::Heartbeat(Heartbeat {
            id: self.id,
            host: self.host.clone(),
            port: self.port,
            listeners: self.listeners.clone(),
            incarnation: self.incarnation,
            version: self.image.get().applied,
        });
        match self.call(&req, deadline)? {
            Reply::Heartbeat { image } => {
                if let Some(img) = image {
                    if img.applied > self.image.get().applied {
                        self.image.set_image(img);
                    }
                }
                self.registered.store(true, Ordering::Release);
                Ok(())
            }
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Proposes `cmd` and waits until this broker's image includes it.
    pub fn propose(&self, cmd: Command) -> Result<CommandResult, String> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        match self.call(&Request::Propose(cmd), deadline)? {
            Reply::Applied { index, result } => {
                while self.image.get().applied < index {
                    if Instant::now() >= deadline {
                        return Err("timed out waiting for the metadata image".into());
                    }
                    self.heartbeat(deadline)?;
                }
                Ok(result)
            }
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// A producer id unique in the cluster, from a block the controller allocated to this broker
    /// (KIP-730). Blocks only when the block is used up (one proposal per 1000 producers).
    pub fn next_producer_id(&self) -> Result<i64, String> {
        const BLOCK: i64 = 1000;
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            match self.propose(Command::AllocateProducerIds { count: BLOCK })? {
                Ok(super::image::Applied::ProducerIds { first }) => *ids = (first, first + BLOCK),
                Ok(other) => return Err(format!("unexpected reply {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// The quorum's status, from its leader (DescribeQuorum).
    pub fn quorum_status(&self) -> Result<QuorumView, String> {
        match self.call(&Request::Status, Instant::now() + RPC_TIMEOUT * 2)? {
            Reply::Status(v) => Ok(v),
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Starts the heartbeat thread. The first image arrives with the first answered heartbeat.
    pub fn start(self: &Arc<Self>, interval: Duration) {
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-member".into())
            .spawn(move || {
                let mut failing_since: Option<Instant> = None;
                while !me.stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    if me.leaving.load(Ordering::Acquire) {
                        std::thread::sleep(interval);
                        continue;
                    }
                    match me.heartbeat(started + interval.max(RPC_TIMEOUT)) {
                        Ok(()) => failing_since = None,
                        Err(e) => {
                            let since = *failing_since.get_or_insert(started);
                            if since.elapsed() > Duration::from_secs(5) {
                                tracing::warn!(error = %e, "cannot reach the controller quorum");
                                failing_since = Some(Instant::now());
                            }
                        }
                    }
                    let spent = started.elapsed();
                    if spent < interval {
                        std::thread::sleep(interval - spent);
                    }
                }
            });
        match handle {
            Ok(h) => *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h),
            Err(e) => tracing::error!(error = %e, "cannot start the member thread"),
        }
    }

    /// A clean stop: asks the controller to fence this broker now (its partitions get new
    /// leaders at once instead of after the session timeout). Best effort, bounded.
    pub fn controlled_shutdown(&self) {
        self.leaving.store(true, Ordering::Release);
        let req = Request::Propose(Command::FenceBroker { id: self.id });
        if let Err(e) = self.call(&req, Instant::now() + Duration::from_secs(2)) {
            tracing::warn!(error = %e, "controlled shutdown: the controller did not answer");
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}
