//! The cluster metadata quorum: one Raft group across the controller voters (like Kafka's KRaft
//! controller quorum) replicating a [`StateMachine`] of brokers, topics, partition leaders/ISR and
//! configs.
//!
//! Data path of a proposal: [`Quorum::propose`] (a follower forwards it over the transport to the
//! leader) -> the leader's node thread appends it to its RawNode -> the entry is persisted
//! (append + fdatasync of the log file, hard state written and synced) -> the messages carrying it
//! go to the followers, which persist it the same way before they acknowledge -> a majority has it:
//! committed -> each node applies it to its state machine in log order -> the leader's proposer
//! gets the log index and the state machine's reply.
//!
//! Built on tikv's `raft` crate (raft-rs, the Raft of TiKV): it is sans-IO, so it is driven from our
//! own plain thread (tick, step, ready) and needs no async runtime beside glommio's shards, whereas
//! openraft would need a tokio-style runtime of its own. raft-rs types stay inside this module.
//!
//! Layout:
//! - [`core`]: the sans-IO core (RawNode + durable storage + the state machine); deterministic
//!   tests drive several cores with a message pump.
//! - `storage`: the log, hard state and snapshot files.
//! - `transport`: TCP frames, one bounded sender thread per peer, one thread per inbound connection.
//! - this file: the node thread that owns the core (a loop over a bounded event channel and the
//!   tick timer) and the [`Quorum`] handle.
//!
//! The voter set is static (from `controller.quorum.voters`); a first start with an empty
//! directory initializes it. Leaders use check-quorum and pre-vote, so a partitioned node neither
//! stays leader nor disrupts the others when it returns.
//!
//! State machine contract: each process start begins with a fresh, empty state machine, restores
//! the latest snapshot into it and re-applies the committed entries after it; a lagging node may
//! also be reset with [`StateMachine::restore`] at any time. So `apply` must be deterministic
//! (same state + same command -> same state and reply, no clocks, randomness or local I/O that
//! changes the outcome) and `restore` must replace the whole state.
//!
//! Proposals are at-most-once only as far as the quorum can tell: an entry lost in a leader change
//! fails with [`QuorumError::Dropped`] (not committed: safe to retry), but a timeout, or a
//! connection to the leader lost mid-request, leaves the outcome unknown; commands should be
//! idempotent or carry their own dedup key.

pub mod core;
mod logger;
mod storage;
mod transport;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::core::{Completion, Core, CoreConfig, Envelope, Token};
use self::transport::{ForwardReply, InboundCount, Peers, Sent};

pub type NodeId = u64;

/// Settings of one quorum node.
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// `controller.quorum.voters`, including this node.
    pub voters: Vec<(NodeId, SocketAddr)>,
    /// Pre-bound listener (tests); `None` binds this node's address from `voters`.
    pub listener: Option<TcpListener>,
    /// The raft log, hard state and snapshot files live here.
    pub dir: PathBuf,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between state-machine snapshots (log compaction); 0 never snapshots.
    pub snapshot_every: u64,
}

impl QuorumConfig {
    /// The defaults: tick 100 ms, election after 10-20 ticks, heartbeat every 2, a snapshot every
    /// 1000 applied entries.
    pub fn new(node_id: NodeId, voters: Vec<(NodeId, SocketAddr)>, dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            listener: None,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 1000,
        }
    }
}

/// The replicated state. See the module doc for the determinism contract.
pub trait StateMachine: Send + 'static {
    /// Applies one committed command, deterministically; returns the reply for its proposer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// The whole state, as of the last applied entry.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String>;
}

/// Requests from brokers (voters or not) to this node; called on a transport thread; may block
/// (e.g. on propose).
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, request: &[u8]) -> Vec<u8>;
}

/// A committed and applied proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub index: u64,
    pub reply: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    /// On the leader: each voter's matched index and how long ago it was last heard from (None on
    /// followers or when never heard).
    pub voters: Vec<VoterStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterStatus {
    pub id: NodeId,
    pub matched_index: Option<u64>,
    pub last_contact: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("no quorum leader is known")]
    NoLeader,
    #[error("this node is not the quorum leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("timed out")]
    Timeout,
    #[error("the quorum node is stopped")]
    Stopped,
    #[error(
        "the proposal's entry was replaced after a leader change; it was not committed, retry"
    )]
    Dropped,
    #[error("the proposal's outcome is unknown (this node caught up by snapshot past it)")]
    Unknown,
    #[error("{addr} is unreachable: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{bytes} bytes is over the {max} byte frame limit")]
    TooLarge { bytes: usize, max: usize },
    #[error("quorum config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("remote node: {0}")]
    Remote(String),
}

/// Events for the node thread.
pub(crate) enum Event {
    Raft(Envelope),
    Propose {
        command: Vec<u8>,
        deadline: Instant,
        reply: SyncSender<Result<Proposed, QuorumError>>,
    },
    SnapshotSent {
        to: NodeId,
        ok: bool,
    },
    Unreachable(NodeId),
    Stop,
}

/// Events queued for the node thread before senders wait (proposals) or drop (raft messages).
const EVENT_QUEUE: usize = 4096;
/// Events handled between two Ready rounds (so that proposals share one fdatasync).
const EVENT_BATCH: usize = 256;

struct Shared {
    status: QuorumStatus,
    /// When `status` was taken (its `last_contact` ages from there).
    at: Instant,
    stopped: bool,
    failure: Option<String>,
}

struct Inner {
    id: NodeId,
    addrs: HashMap<NodeId, SocketAddr>,
    local_addr: SocketAddr,
    events: SyncSender<Event>,
    stop: Arc<AtomicBool>,
    shared: Mutex<Shared>,
    changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    inbound: Arc<InboundCount>,
}

/// Handle to a running quorum node (cheap to clone, Send + Sync). Call [`Quorum::stop`] to end it:
/// its threads hold handles too, so dropping the last user handle does not.
#[derive(Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

impl Quorum {
    /// Opens the node's storage in `cfg.dir`, rebuilds `sm` (which must be empty) from it, binds
    /// (or takes) the listener and starts the node, listener and peer sender threads.
    pub fn start(
        cfg: QuorumConfig,
        sm: Box<dyn StateMachine>,
        rpc: Arc<dyn RpcHandler>,
    ) -> Result<Quorum, QuorumError> {
        let mut addrs = HashMap::new();
        for &(id, addr) in &cfg.voters {
            if addrs.insert(id, addr).is_some() {
                return Err(QuorumError::Config(format!("voter {id} is listed twice")));
            }
        }
        let Some(&own_addr) = addrs.get(&cfg.node_id) else {
            return Err(QuorumError::Config(format!(
                "node {} is not among the voters",
                cfg.node_id
            )));
        };
        if cfg.tick.is_zero() {
            return Err(QuorumError::Config("tick must be positive".into()));
        }
        let listener = match cfg.listener {
            Some(l) => l,
            None => TcpListener::bind(own_addr).map_err(|source| QuorumError::Io {
                context: format!("binding the quorum listener on {own_addr}"),
                source,
            })?,
        };
        let local_addr = listener.local_addr().map_err(|source| QuorumError::Io {
            context: "reading the quorum listener's address".into(),
            source,
        })?;
        let core = Core::open(
            CoreConfig {
                node_id: cfg.node_id,
                voters: cfg.voters.iter().map(|&(id, _)| id).collect(),
                dir: cfg.dir.clone(),
                election_ticks: cfg.election_ticks,
                heartbeat_ticks: cfg.heartbeat_ticks,
                snapshot_every: cfg.snapshot_every,
            },
            sm,
        )?;
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let peers: Vec<(NodeId, SocketAddr)> = cfg
            .voters
            .iter()
            .copied()
            .filter(|&(id, _)| id != cfg.node_id)
            .collect();
        let (peers, mut threads) = Peers::start(&peers, tx.clone(), stop.clone())?;
        let inner = Arc::new(Inner {
            id: cfg.node_id,
            addrs,
            local_addr,
            events: tx,
            stop: stop.clone(),
            shared: Mutex::new(Shared {
                status: core.status(),
                at: Instant::now(),
                stopped: false,
                failure: None,
            }),
            changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            inbound: Arc::new(InboundCount::new()),
        });
        let quorum = Quorum { inner };
        let spawn_err = |source| QuorumError::Io {
            context: "spawning a quorum thread".into(),
            source,
        };
        let q = quorum.clone();
        let tick = cfg.tick;
        let node = std::thread::Builder::new()
            .name(format!("quorum-{}", cfg.node_id))
            .spawn(move || {
                let q2 = q.clone();
                let run = std::panic::AssertUnwindSafe(|| node_loop(core, rx, peers, tick, q));
                if std::panic::catch_unwind(run).is_err() {
                    // raft-rs panics on states it considers impossible: this node is out of the
                    // quorum until it is restarted, but the process and the handle live on
                    tracing::error!(
                        node = q2.node_id(),
                        "quorum node thread panicked; node stopped"
                    );
                    let mut g = q2.shared();
                    g.stopped = true;
                    g.failure = Some("the node thread panicked".into());
                    drop(g);
                    q2.inner.stop.store(true, Ordering::Release);
                    q2.inner.changed.notify_all();
                }
            })
            .map_err(spawn_err);
        let node = match node {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::Release);
                return Err(e);
            }
        };
        threads.push(node);
        let q = quorum.clone();
        let count = quorum.inner.inbound.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("quorum-accept-{}", cfg.node_id))
            .spawn(move || transport::accept_loop(listener, q, rpc, count))
            .map_err(spawn_err);
        match acceptor {
            Ok(t) => threads.push(t),
            Err(e) => {
                *quorum
                    .inner
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = threads;
                quorum.stop();
                return Err(e);
            }
        }
        *quorum
            .inner
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = threads;
        tracing::info!(node = cfg.node_id, addr = %local_addr, voters = cfg.voters.len(), "quorum node started");
        Ok(quorum)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.inner.stop.clone()
    }

    fn is_stopping(&self) -> bool {
        self.inner.stop.load(Ordering::Acquire)
    }

    /// Hands an inbound raft message to the node thread (dropped if its queue is full).
    pub(crate) fn deliver(&self, env: Envelope) {
        let _ = self.inner.events.try_send(Event::Raft(env));
    }

    /// Waits until `f(status)` holds, the node stops, or `deadline`; returns whether it held.
    fn wait_for(&self, deadline: Instant, f: impl Fn(&QuorumStatus) -> bool) -> bool {
        let mut g = self.shared();
        loop {
            if f(&g.status) {
                return true;
            }
            if g.stopped || self.is_stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .inner
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Proposes from any voter (a follower forwards to the leader over the transport). Returns once
    /// the entry is committed and applied on the leader: its log index and the state machine's
    /// reply. While there is no leader it waits for one, up to `timeout`.
    pub fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Proposed, QuorumError> {
        let deadline = Instant::now() + timeout;
        let mut saw_leader = false;
        loop {
            if self.is_stopping() {
                return Err(QuorumError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(if saw_leader {
                    QuorumError::Timeout
                } else {
                    QuorumError::NoLeader
                });
            }
            let (is_leader, leader, term) = {
                let g = self.shared();
                (g.status.is_leader, g.status.leader_id, g.status.term)
            };
            let retry = if is_leader {
                saw_leader = true;
                match self.propose_local(command.clone(), deadline - now) {
                    Err(QuorumError::NotLeader { .. }) => true,
                    other => return other,
                }
            } else if let Some(leader) = leader {
                saw_leader = true;
                let Some(&addr) = self.inner.addrs.get(&leader) else {
                    return Err(QuorumError::Config(format!(
                        "leader {leader} has no address"
                    )));
                };
                match transport::forward_propose(addr, &command, deadline - now) {
                    Ok(ForwardReply::Done(p)) => return Ok(p),
                    Ok(ForwardReply::NotLeader) => true,
                    Ok(ForwardReply::Failed(QuorumError::NoLeader)) => true,
                    Ok(ForwardReply::Failed(e)) => return Err(e),
                    // nothing was sent: the leader is probably down, wait for the next one
                    Err(QuorumError::Unreachable { .. }) => true,
                    Err(e) => return Err(e),
                }
            } else {
                true
            };
            if retry {
                // wait for a different leader or term, a little at most
                let until = (Instant::now() + Duration::from_millis(50)).min(deadline);
                self.wait_for(until, |s| {
                    s.term != term || s.leader_id != leader || s.is_leader != is_leader
                });
            }
        }
    }

    /// Proposes on this node if it is the leader (no forwarding).
    pub(crate) fn propose_local(
        &self,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<Proposed, QuorumError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let mut ev = Event::Propose {
            command,
            deadline,
            reply: tx,
        };
        loop {
            if self.is_stopping() {
                return Err(QuorumError::Stopped);
            }
            match self.inner.events.try_send(ev) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(QuorumError::Timeout);
                    }
                    ev = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return Err(QuorumError::Stopped),
            }
        }
        // the node thread answers every proposal by its deadline (or drops the sender on exit)
        let grace = Duration::from_secs(1);
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + grace) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(QuorumError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(QuorumError::Stopped),
        }
    }

    /// Blocks until this node has applied `index` (or times out).
    pub fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), QuorumError> {
        let deadline = Instant::now() + timeout;
        if self.wait_for(deadline, |s| s.applied_index >= index) {
            Ok(())
        } else if self.is_stopping() || self.shared().stopped {
            Err(QuorumError::Stopped)
        } else {
            Err(QuorumError::Timeout)
        }
    }

    pub fn status(&self) -> QuorumStatus {
        let g = self.shared();
        let mut st = g.status.clone();
        let age = g.at.elapsed();
        for v in &mut st.voters {
            if let Some(c) = v.last_contact.as_mut() {
                *c += age;
            }
        }
        st
    }

    /// Why the node stopped by itself (a storage error), if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared().failure.clone()
    }

    /// Stops the threads, closes the sockets and files; idempotent.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let _ = self.inner.events.try_send(Event::Stop);
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let current = std::thread::current().id();
        for t in threads {
            if t.thread().id() != current {
                let _ = t.join();
            }
        }
        // inbound connection threads notice the flag within one read timeout
        let until = Instant::now() + Duration::from_secs(3);
        while self.inner.inbound.get() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut g = self.shared();
        if !g.stopped {
            g.stopped = true;
            tracing::info!(node = self.inner.id, "quorum node stopped");
        }
        drop(g);
        self.inner.changed.notify_all();
    }
}

/// One request/response to a node's transport (for broker code to reach the controller).
pub fn rpc_call(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, QuorumError> {
    let (ty, reply) = transport::call(addr, transport::RPC, request, timeout)?;
    if ty != transport::RPC_REPLY {
        return Err(QuorumError::Remote(format!(
            "unexpected reply frame type {ty}"
        )));
    }
    Ok(reply)
}

fn complete(
    waiting: &mut HashMap<Token, SyncSender<Result<Proposed, QuorumError>>>,
    c: Completion,
) {
    if let Some(tx) = waiting.remove(&c.token) {
        let _ = tx.try_send(c.result);
    }
}

/// The thread that owns the core.
fn node_loop(mut core: Core, rx: Receiver<Event>, peers: Peers, tick: Duration, quorum: Quorum) {
    let mut waiting: HashMap<Token, SyncSender<Result<Proposed, QuorumError>>> = HashMap::new();
    let mut next_tick = Instant::now() + tick;
    let mut failure = None;
    'run: loop {
        if quorum.is_stopping() {
            break;
        }
        let timeout = next_tick.saturating_duration_since(Instant::now());
        let mut next = match rx.recv_timeout(timeout) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut handled = 0;
        while let Some(ev) = next.take() {
            match ev {
                Event::Raft(env) => core.step(env),
                Event::Propose {
                    command,
                    deadline,
                    reply,
                } => match core.propose(command, Some(deadline)) {
                    Ok((token, _)) => {
                        waiting.insert(token, reply);
                    }
                    Err(e) => {
                        let _ = reply.try_send(Err(e));
                    }
                },
                Event::SnapshotSent { to, ok } => core.report_snapshot(to, ok),
                Event::Unreachable(to) => core.report_unreachable(to),
                Event::Stop => break 'run,
            }
            handled += 1;
            if handled < EVENT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            core.tick();
            next_tick += tick;
            if next_tick <= now {
                next_tick = now + tick;
            }
            for c in core.expire(now) {
                complete(&mut waiting, c);
            }
        }
        match core.drain_ready() {
            Ok(out) => {
                for env in &out.messages {
                    if let Sent::Dropped = peers.send(env) {
                        if env.is_snapshot() {
                            core.report_snapshot(env.to(), false);
                        } else {
                            core.report_unreachable(env.to());
                        }
                    }
                }
                for c in out.completions {
                    complete(&mut waiting, c);
                }
            }
            Err(e) => {
                tracing::error!(node = core.id(), error = %e, "quorum storage failed; stopping this node");
                failure = Some(e.to_string());
                break;
            }
        }
        let status = core.status();
        let mut g = quorum.shared();
        if g.status != status {
            g.status = status;
            g.at = Instant::now();
            drop(g);
            quorum.inner.changed.notify_all();
        } else {
            g.at = Instant::now();
        }
    }
    // waiting proposers see their sender dropped: Stopped
    drop(waiting);
    drop(peers);
    let mut g = quorum.shared();
    g.stopped = true;
    if failure.is_some() {
        g.failure = failure;
        quorum.inner.stop.store(true, Ordering::Release);
    }
    drop(g);
    quorum.inner.changed.notify_all();
}
