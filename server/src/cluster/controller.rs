//! The controller: the metadata [`Image`] as the quorum's state machine, the RPCs brokers send
//! to the quorum leader, and the leader's duties (broker leases, fencing).
//!
//! Data path of a heartbeat: broker member thread -> `rpc_call` to the quorum leader ->
//! [`ControllerRpc::handle`] records the lease, registers a new or restarted broker (a
//! proposal), and answers with the image when the broker's copy is older. The leader's duty
//! thread fences brokers whose lease ran out (a proposal): the image then moves their partitions'
//! leadership to another in-sync replica.
//!
//! Leases live only in the leader's memory (as in KRaft); a new leader gives every broker a full
//! session timeout before it fences anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::image::{Applied, ApplyError, BrokerId, Command, Image};
use super::quorum::{Quorum, QuorumError, QuorumStatus, RpcHandler, StateMachine};
use crate::config::Endpoint;

/// How long a proposal may wait for a leader and a commit.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The applied image, shared by the state machine (writer) and the controller (reader).
#[derive(Default)]
pub struct ImageCell(RwLock<Arc<Image>>);

impl ImageCell {
    pub fn get(&self) -> Arc<Image> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_image(&self, image: Image) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(image);
    }
}

/// The quorum's state machine: JSON [`Command`]s applied to an [`Image`].
pub struct MetadataMachine {
    image: Image,
    cell: Arc<ImageCell>,
}

impl MetadataMachine {
    pub fn new(cell: Arc<ImageCell>) -> MetadataMachine {
        MetadataMachine {
            image: Image::default(),
            cell,
        }
    }
}

/// What a proposer gets back for one command.
pub type CommandResult = Result<Applied, ApplyError>;

impl StateMachine for MetadataMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let result: CommandResult = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => self.image.apply(index, &cmd),
            Err(e) => {
                // an undecodable entry changes nothing, identically on every voter
                self.image.applied = self.image.applied.max(index);
                Err(ApplyError::Invalid(format!("undecodable command: {e}")))
            }
        };
        self.cell.set_image(self.image.clone());
        serde_json::to_vec(&result).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.image).unwrap_or_default()
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let mut image: Image = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        image.applied = image.applied.max(index);
        self.image = image;
        self.cell.set_image(self.image.clone());
        Ok(())
    }
}

/// Requests brokers send to the quorum leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Heartbeat(Heartbeat),
    Propose(Command),
    Status,
}

/// A broker's periodic heartbeat; it (re)registers the broker when anything in it changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: BrokerId,
    /// Its inter-broker listener.
    pub host: String,
    pub port: u16,
    /// Every listener's advertised endpoint.
    pub listeners: Vec<Endpoint>,
    pub incarnation: u64,
    /// The image version the broker has (0: none).
    pub version: u64,
}

/// The voters' view for DescribeQuorum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumView {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<VoterView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VoterView {
    pub id: i32,
    /// The leader's knowledge of the voter's log end (-1: unknown).
    pub log_end_offset: i64,
    /// Milliseconds since the leader last heard from it (-1: unknown).
    pub last_contact_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Ask the leader instead (None: no leader right now).
    NotLeader {
        leader: Option<BrokerId>,
    },
    /// The current image, when the broker's copy is older.
    Heartbeat {
        image: Option<Image>,
    },
    Applied {
        index: u64,
        result: CommandResult,
    },
    Status(QuorumView),
    Error(String),
}

/// The leader's lease of each broker.
#[derive(Default)]
struct Leases {
    /// Last heartbeat of each broker, as seen by this node while it led.
    seen: HashMap<BrokerId, Instant>,
    /// When this node last became leader (every broker gets a full session from then).
    leading_since: Option<Instant>,
}

/// Serves controller RPCs on a voter and runs the leader's duties.
pub struct ControllerRpc {
    quorum: OnceLock<Quorum>,
    cell: Arc<ImageCell>,
    leases: Mutex<Leases>,
    session_timeout: Duration,
    cluster_id: String,
}

impl ControllerRpc {
    pub fn new(cell: Arc<ImageCell>, session_timeout: Duration, cluster_id: String) -> Arc<Self> {
        Arc::new(ControllerRpc {
            quorum: OnceLock::new(),
            cell,
            leases: Mutex::new(Leases::default()),
            session_timeout,
            cluster_id,
        })
    }

    /// Binds the started quorum (the handler exists before the quorum does).
    pub fn attach(&self, quorum: Quorum) {
        let _ = self.quorum.set(quorum);
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn propose(&self, cmd: &Command) -> Reply {
        let Some(q) = self.quorum.get() else {
            return Reply::NotLeader { leader: None };
        };
        let bytes = match serde_json::to_vec(cmd) {
            Ok(b) => b,
            Err(e) => return Reply::Error(e.to_string()),
        };
        match q.propose(bytes, PROPOSE_TIMEOUT) {
            Ok(p) => match serde_json::from_slice::<CommandResult>(&p.reply) {
                Ok(result) => Reply::Applied {
                    index: p.index,
                    result,
                },
                Err(e) => Reply::Error(format!("bad apply reply: {e}")),
            },
            Err(QuorumError::NotLeader { leader }) => Reply::NotLeader {
                leader: leader.map(|l| l as BrokerId),
            },
            Err(QuorumError::NoLeader) => Reply::NotLeader { leader: None },
            Err(e) => Reply::Error(e.to_string()),
        }
    }

    fn heartbeat(&self, hb: Heartbeat) -> Reply {
        let Heartbeat {
            id,
            host,
            port,
            listeners,
            incarnation,
            version,
        } = hb;
        self.leases().seen.insert(id, Instant::now());
        let image = self.cell.get();
        let known = image.brokers.get(&id);
        let registered = known.is_some_and(|b| {
            !b.fenced
                && b.incarnation == incarnation
                && b.host == host
                && b.port == port
                && b.listeners == listeners
        });
        if !registered {
            if known.is_some_and(|b| !b.fenced && b.incarnation != incarnation) {
                // restarted within its lease: it may have lost what it had not synced, so it
                // leaves every ISR first and rejoins by catching up
                if let Reply::Error(e) = self.propose(&Command::FenceBroker { id }) {
                    return Reply::Error(e);
                }
            }
            let reg = Command::RegisterBroker {
                id,
                host,
                port,
                listeners,
                incarnation,
            };
            match self.propose(&reg) {
                Reply::Applied { .. } => {}
                other => return other,
            }
        }
        let image = self.cell.get();
        Reply::Heartbeat {
            image: (image.applied > version).then(|| (*image).clone()),
        }
    }

    fn view(status: &QuorumStatus) -> QuorumView {
        QuorumView {
            leader_id: status.leader_id.map_or(-1, |l| l as i32),
            leader_epoch: status.term as i32,
            high_watermark: status.commit_index as i64,
            voters: status
                .voters
                .iter()
                .map(|v| VoterView {
                    id: v.id as i32,
                    log_end_offset: v.matched_index.map_or(-1, |m| m as i64),
                    last_contact_ms: v.last_contact.map_or(-1, |d| d.as_millis() as i64),
                })
                .collect(),
        }
    }

    /// One round of the leader's duties: initialise the cluster, fence expired brokers.
    /// Called periodically on every voter; does nothing unless this voter leads.
    pub fn duties(&self) {
        let Some(q) = self.quorum.get() else { return };
        let status = q.status();
        if !status.is_leader {
            self.leases().leading_since = None;
            return;
        }
        let now = Instant::now();
        let since = *self.leases().leading_since.get_or_insert(now);
        let image = self.cell.get();
        if image.cluster_id.is_empty() {
            let _ = self.propose(&Command::InitCluster {
                cluster_id: self.cluster_id.clone(),
            });
        }
        let expired: Vec<BrokerId> = {
            let leases = self.leases();
            image
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter(|b| {
                    let last = leases.seen.get(&b.id).copied().unwrap_or(since).max(since);
                    now.duration_since(last) > self.session_timeout
                })
                .map(|b| b.id)
                .collect()
        };
        for id in expired {
            tracing::warn!(broker = id, "broker lease expired; fencing it");
            let _ = self.propose(&Command::FenceBroker { id });
        }
        for cmd in super::coordinators::missing_internal_topics(&image, status.voters.len()) {
            tracing::info!(?cmd, "creating internal topic");
            let _ = self.propose(&cmd);
        }
    }
}

impl RpcHandler for ControllerRpc {
    fn handle(&self, request: &[u8]) -> Vec<u8> {
        let reply = match serde_json::from_slice::<Request>(request) {
            Err(e) => Reply::Error(format!("bad request: {e}")),
            Ok(req) => {
                let status = self.quorum.get().map(|q| q.status());
                match status {
                    None => Reply::NotLeader { leader: None },
                    Some(s) if !s.is_leader => Reply::NotLeader {
                        leader: s.leader_id.map(|l| l as BrokerId),
                    },
                    Some(s) => match req {
                        Request::Heartbeat(hb) => self.heartbeat(hb),
                        Request::Propose(cmd) => self.propose(&cmd),
                        Request::Status => Reply::Status(Self::view(&s)),
                    },
                }
            }
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}
