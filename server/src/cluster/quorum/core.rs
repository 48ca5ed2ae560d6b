//! The sans-IO core of one quorum node: a raft-rs `RawNode` over [`DiskStorage`], plus the
//! [`StateMachine`] it applies committed entries to and the proposals waiting for their entry.
//!
//! It never blocks on anything but its own disk writes and has no clock of its own: the owner
//! calls [`Core::tick`] every tick, [`Core::step`] for each message from a peer and
//! [`Core::drain_ready`] after either, then delivers the returned messages. That makes it
//! drivable by a deterministic test pump as well as by the node thread in `mod.rs`.
//!
//! This module is public only for such tests and tools; the broker uses [`super::Quorum`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::logger::raft_logger;
use super::storage::DiskStorage;
use super::{NodeId, Proposed, QuorumError, QuorumStatus, StateMachine, VoterStatus};

/// Marks an entry as a proposer's command (raft's own no-op entries have no context), so that
/// empty commands are still applied.
const COMMAND_CONTEXT: &[u8] = &[1];

/// Settings of one core (the I/O-free part of [`super::QuorumConfig`]).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node_id: NodeId,
    /// Every voter's id, this node's included.
    pub voters: Vec<NodeId>,
    pub dir: PathBuf,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots; 0 disables snapshots (the log then grows forever).
    pub snapshot_every: u64,
}

/// One Raft message between nodes, opaque to the rest of the broker.
pub struct Envelope {
    msg: Message,
}

impl Envelope {
    pub fn from(&self) -> NodeId {
        self.msg.from
    }

    pub fn to(&self) -> NodeId {
        self.msg.to
    }

    /// Whether this carries a snapshot (the sender should report its delivery with
    /// [`Core::report_snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        self.msg.get_msg_type() == MessageType::MsgSnapshot
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, QuorumError> {
        self.msg
            .write_to_bytes()
            .map_err(|e| QuorumError::Raft(format!("encoding a message: {e}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        Message::parse_from_bytes(bytes)
            .map(|msg| Envelope { msg })
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {}->{} term {} index {} entries {}",
            self.msg.get_msg_type(),
            self.msg.from,
            self.msg.to,
            self.msg.term,
            self.msg.index,
            self.msg.entries.len()
        )
    }
}

/// Identifies one proposal made through [`Core::propose`].
pub type Token = u64;

/// The outcome of a proposal.
#[derive(Debug)]
pub struct Completion {
    pub token: Token,
    pub result: Result<Proposed, QuorumError>,
}

/// What one [`Core::drain_ready`] produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Messages to send, all of them only now allowed (their entries and hard state are synced).
    pub messages: Vec<Envelope>,
    /// Proposals that finished (applied, lost or timed out).
    pub completions: Vec<Completion>,
}

struct Pending {
    token: Token,
    term: u64,
    deadline: Option<Instant>,
}

pub struct Core {
    id: NodeId,
    voters: Vec<NodeId>,
    node: RawNode<DiskStorage>,
    sm: Box<dyn StateMachine>,
    snapshot_every: u64,
    last_snapshot: u64,
    applied: u64,
    pending: BTreeMap<u64, Pending>,
    deferred: Vec<Completion>,
    next_token: Token,
    last_heard: HashMap<NodeId, Instant>,
    snapshots_restored: u64,
}

impl Core {
    /// Opens the storage in `cfg.dir` (initializing it with the voters on a first start),
    /// restores `sm` from the stored snapshot, and leaves the committed entries after it to be
    /// re-applied by the following [`Core::drain_ready`] calls. `sm` must be fresh (empty).
    pub fn open(cfg: CoreConfig, mut sm: Box<dyn StateMachine>) -> Result<Core, QuorumError> {
        if cfg.node_id == 0 {
            return Err(QuorumError::Config("node id 0 is reserved".into()));
        }
        if !cfg.voters.contains(&cfg.node_id) {
            return Err(QuorumError::Config(format!(
                "node {} is not among the voters {:?}",
                cfg.node_id, cfg.voters
            )));
        }
        if cfg.voters.contains(&0) {
            return Err(QuorumError::Config("voter id 0 is reserved".into()));
        }
        let storage = DiskStorage::open(&cfg.dir, &cfg.voters)?;
        let snap: &Snapshot = storage.snapshot_ref();
        let mut applied = 0;
        if !snap.is_empty() {
            applied = snap.get_metadata().index;
            sm.restore(applied, &snap.data)
                .map_err(|reason| QuorumError::Corrupt {
                    what: format!("snapshot at {applied} in {}", cfg.dir.display()),
                    reason,
                })?;
        }
        let rc = raft::Config {
            id: cfg.node_id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        rc.validate()
            .map_err(|e| QuorumError::Config(format!("raft config: {e}")))?;
        let node = RawNode::new(&rc, storage, &raft_logger(cfg.node_id))
            .map_err(|e| QuorumError::Raft(format!("starting raft: {e}")))?;
        Ok(Core {
            id: cfg.node_id,
            voters: cfg.voters,
            node,
            sm,
            snapshot_every: cfg.snapshot_every,
            last_snapshot: applied,
            applied,
            pending: BTreeMap::new(),
            deferred: Vec::new(),
            next_token: 1,
            last_heard: HashMap::new(),
            snapshots_restored: 0,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Steps a message from a peer. Messages not addressed to this node or not from a voter are
    /// dropped; raft-rs rejecting a message (e.g. a stale one) is not an error.
    pub fn step(&mut self, env: Envelope) {
        let msg = env.msg;
        // proposals travel as our own forwarded requests, never as raft messages
        let foreign = matches!(
            msg.get_msg_type(),
            MessageType::MsgPropose | MessageType::MsgReadIndex | MessageType::MsgReadIndexResp
        );
        if foreign || msg.to != self.id || msg.from == self.id || !self.voters.contains(&msg.from) {
            tracing::debug!(
                node = self.id,
                from = msg.from,
                to = msg.to,
                "dropping a misaddressed raft message"
            );
            return;
        }
        self.last_heard.insert(msg.from, Instant::now());
        if let Err(e) = self.node.step(msg) {
            tracing::debug!(node = self.id, error = %e, "raft rejected a message");
        }
    }

    /// Starts an election now (tests; normally the election timer does).
    pub fn campaign(&mut self) -> Result<(), QuorumError> {
        self.node
            .campaign()
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Appends a command to the leader's log. Returns its token (see [`ReadyOutput::completions`])
    /// and log index. Fails with [`QuorumError::NotLeader`] on a follower.
    pub fn propose(
        &mut self,
        command: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<(Token, u64), QuorumError> {
        if self.node.raft.state != StateRole::Leader {
            return Err(QuorumError::NotLeader {
                leader: self.leader_id(),
            });
        }
        let before = self.node.raft.raft_log.last_index();
        self.node
            .propose(COMMAND_CONTEXT.to_vec(), command)
            .map_err(|e| match e {
                raft::Error::ProposalDropped => QuorumError::NotLeader {
                    leader: self.leader_id(),
                },
                other => QuorumError::Raft(other.to_string()),
            })?;
        let index = self.node.raft.raft_log.last_index();
        if index != before + 1 {
            return Err(QuorumError::Raft(format!(
                "proposal not appended (last index {before} -> {index})"
            )));
        }
        let token = self.next_token;
        self.next_token += 1;
        let pending = Pending {
            token,
            term: self.node.raft.term,
            deadline,
        };
        if let Some(old) = self.pending.insert(index, pending) {
            self.deferred.push(Completion {
                token: old.token,
                result: Err(QuorumError::Dropped),
            });
        }
        Ok((token, index))
    }

    /// Tells raft whether a snapshot message to `to` was sent (`ok`) or lost.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Tells raft that a message to `to` could not be sent.
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.node.report_unreachable(to);
    }

    /// Fails the proposals whose deadline passed (they may still commit later; their proposers
    /// have stopped waiting).
    pub fn expire(&mut self, now: Instant) -> Vec<Completion> {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(&i, _)| i)
            .collect();
        expired
            .into_iter()
            .filter_map(|i| self.pending.remove(&i))
            .map(|p| Completion {
                token: p.token,
                result: Err(QuorumError::Timeout),
            })
            .collect()
    }

    /// Handles every pending Ready: installs a received snapshot, applies committed entries,
    /// appends and fdatasyncs new entries and the hard state, and returns the messages (which
    /// may be sent now) and the finished proposals.
    pub fn drain_ready(&mut self) -> Result<ReadyOutput, QuorumError> {
        let mut out = ReadyOutput {
            messages: Vec::new(),
            completions: std::mem::take(&mut self.deferred),
        };
        while self.node.has_ready() {
            let mut rd = self.node.ready();
            // a leader may send before its own append is durable (raft thesis 10.2.1); we send
            // after this call returns anyway
            out.messages
                .extend(rd.take_messages().into_iter().map(|msg| Envelope { msg }));
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                self.install_snapshot(snap, &mut out)?;
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed, &mut out);
            if !rd.entries().is_empty() {
                self.node.mut_store().append(rd.entries())?;
            }
            if let Some(hs) = rd.hs() {
                let hs = hs.clone();
                self.node.mut_store().set_hard_state(&hs)?;
            }
            out.messages.extend(
                rd.take_persisted_messages()
                    .into_iter()
                    .map(|msg| Envelope { msg }),
            );
            let mut light = self.node.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.node.mut_store().set_commit(commit)?;
            }
            out.messages.extend(
                light
                    .take_messages()
                    .into_iter()
                    .map(|msg| Envelope { msg }),
            );
            let committed = light.take_committed_entries();
            self.apply_entries(committed, &mut out);
            self.node.advance_apply();
            self.maybe_snapshot()?;
        }
        Ok(out)
    }

    fn install_snapshot(
        &mut self,
        snap: Snapshot,
        out: &mut ReadyOutput,
    ) -> Result<(), QuorumError> {
        let index = snap.get_metadata().index;
        tracing::info!(
            node = self.id,
            index,
            bytes = snap.data.len(),
            "installing a snapshot from the leader"
        );
        let data = snap.data.clone();
        self.node.mut_store().apply_snapshot(snap)?;
        self.sm
            .restore(index, &data)
            .map_err(|reason| QuorumError::Corrupt {
                what: format!("snapshot at {index} from the leader"),
                reason,
            })?;
        self.applied = index;
        self.last_snapshot = index;
        self.snapshots_restored += 1;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > index {
                break;
            }
            let p = entry.remove();
            out.completions.push(Completion {
                token: p.token,
                result: Err(QuorumError::Unknown),
            });
        }
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            let reply = match e.get_entry_type() {
                EntryType::EntryNormal if e.context.as_ref() == COMMAND_CONTEXT => {
                    Some(self.sm.apply(e.index, &e.data))
                }
                EntryType::EntryNormal => None,
                other => {
                    tracing::warn!(
                        node = self.id,
                        index = e.index,
                        ?other,
                        "ignoring a membership change entry"
                    );
                    None
                }
            };
            self.applied = e.index;
            while let Some(entry) = self.pending.first_entry() {
                let index = *entry.key();
                if index > e.index {
                    break;
                }
                let p = entry.remove();
                // our entry iff same index and term: a leader writes one entry per index per term
                let result = match &reply {
                    Some(reply) if index == e.index && p.term == e.term => Ok(Proposed {
                        index,
                        reply: reply.clone(),
                    }),
                    _ => Err(QuorumError::Dropped),
                };
                out.completions.push(Completion {
                    token: p.token,
                    result,
                });
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), QuorumError> {
        if self.snapshot_every == 0 || self.applied < self.last_snapshot + self.snapshot_every {
            return Ok(());
        }
        let data = self.sm.snapshot();
        let index = self.applied;
        self.node
            .mut_store()
            .create_snapshot(index, data, self.snapshot_every)?;
        self.last_snapshot = index;
        tracing::debug!(node = self.id, index, "took a state machine snapshot");
        Ok(())
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// The first index still in the log (entries before it are only in the snapshot).
    pub fn first_index(&self) -> u64 {
        self.node.store().first_index()
    }

    /// How many snapshots received from a leader were installed since this core was opened.
    pub fn snapshots_restored(&self) -> u64 {
        self.snapshots_restored
    }

    /// Index of the latest snapshot taken or installed (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.node.store().snapshot_ref().get_metadata().index
    }

    pub fn status(&self) -> QuorumStatus {
        let is_leader = self.is_leader();
        let now = Instant::now();
        let progress = self.node.raft.prs();
        let voters = self
            .voters
            .iter()
            .map(|&id| {
                if !is_leader {
                    return VoterStatus {
                        id,
                        matched_index: None,
                        last_contact: None,
                    };
                }
                let last_contact = if id == self.id {
                    Some(Duration::ZERO)
                } else {
                    self.last_heard
                        .get(&id)
                        .map(|t| now.saturating_duration_since(*t))
                };
                VoterStatus {
                    id,
                    matched_index: progress.get(id).map(|p| p.matched),
                    last_contact,
                }
            })
            .collect();
        QuorumStatus {
            node_id: self.id,
            leader_id: self.leader_id(),
            term: self.term(),
            is_leader,
            commit_index: self.commit_index(),
            applied_index: self.applied,
            last_index: self.last_index(),
            voters,
        }
    }
}
