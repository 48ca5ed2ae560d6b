//! The cluster metadata quorum: one Raft group across the controller voters (like Kafka's KRaft
//! controller quorum) replicating a [`StateMachine`] of brokers, topics, partition leaders/ISR and
//! configs.
//!
//! Data path of a proposal: `Quorum::propose` (a follower forwards it over the transport to the
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
//! - next: the TCP transport and the node thread that owns the core, behind a `Quorum` handle.
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

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

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
