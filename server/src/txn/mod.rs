//! Transaction coordinator: each transactional.id is coordinated by one shard, chosen by
//! hashing the id onto `TXN_PARTITIONS` state partitions spread over the shards (like the
//! group coordinator). Any shard takes a transaction request and forwards it there.
//!
//! State: one `TxnMeta` per transactional id (producer id and epoch, timeout, state, the
//! partitions and groups in the open transaction), stored as JSON in the shard's state logs
//! `<data>/__sluice/txn-state-<n>` (see `crate::kvlog`), fdatasync'd before a change is
//! answered and replayed at start.
//!
//! EndTxn: Ongoing -> PrepareCommit/PrepareAbort (stored) -> a COMMIT/ABORT control batch is
//! appended (fdatasync'd) to every partition of the transaction on its owning shard, and the
//! groups of AddOffsetsToTxn materialise or drop their pending offsets -> CompleteCommit /
//! CompleteAbort (stored) -> answer. A crash between the two stored states leaves a Prepare
//! state that the ticker completes after restart (markers are idempotent for a partition).
//! The ticker also aborts transactions open longer than their timeout, bumping the epoch so
//! the stalled producer is fenced, and forgets idle transactional ids.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_engine::Durability;

use crate::kvlog::{PersistError, StateError, StateLog};

use crate::shard::Shard;

/// Fixed number of transaction state partitions; an id's partition is `crc32c(id) % this`.
pub const TXN_PARTITIONS: u32 = 16;

pub mod markers;

pub fn txn_partition(id: &str) -> u32 {
    crc32c::crc32c(id.as_bytes()) % TXN_PARTITIONS
}

/// The shard coordinating transactional id `id` when the broker runs `shards` shards.
pub fn txn_shard(id: &str, shards: usize) -> usize {
    txn_partition(id) as usize % shards.max(1)
}

/// Kafka error codes of the transaction APIs.
pub mod err {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's names (ListTransactions / DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// What the coordinator stores for one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    /// When the open transaction started (first AddPartitions/AddOffsets), -1 if none.
    pub started_ms: i64,
    pub updated_ms: i64,
}

/// Settings of the coordinator (broker properties).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    pub max_timeout_ms: u64,
    pub abort_interval: Duration,
    pub id_expiration_ms: u64,
    /// State partitions smaller than this are not compacted.
    pub compact_min_bytes: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Transactions coordinated by one shard.
pub struct TxnCoordinator {
    cfg: TxnConfig,
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// One lock per transactional id: its operations run one at a time.
    locks: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// The state partitions this coordinator serves: all of its shard's on a single node; in
    /// a cluster, those of `__transaction_state` this broker leads. Each stored change holds
    /// its lock shared (append and map update), compaction exclusive.
    logs: crate::kvlog::StateLogs,
}

/// Checks that a request's producer id and epoch are the transaction's current ones.
fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), i16> {
    if meta.producer_id != producer_id {
        return Err(err::INVALID_PRODUCER_ID_MAPPING);
    }
    if meta.epoch != epoch {
        return Err(err::PRODUCER_FENCED);
    }
    Ok(())
}

impl TxnCoordinator {
    /// Single node: opens this shard's transaction state partitions and replays them. In a
    /// cluster (`clustered`) it starts empty and [`load`](Self::load)s the partitions of
    /// `__transaction_state` this broker comes to lead.
    pub async fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        cfg: TxnConfig,
        clustered: bool,
    ) -> Result<Rc<TxnCoordinator>, String> {
        let mut logs = HashMap::new();
        let mut txns: HashMap<String, TxnMeta> = HashMap::new();
        let local =
            (0..TXN_PARTITIONS).filter(|p| !clustered && *p as usize % shards.max(1) == shard);
        for p in local {
            let dir = data_dir.join("__sluice").join(format!("txn-state-{p}"));
            let log = crate::kvlog::open(&dir, crate::kvlog::segment_bytes(cfg.compact_min_bytes))
                .await?;
            let log = StateLog::local(Rc::new(log));
            replay(&log, &mut txns).await?;
            logs.insert(p, Rc::new(log));
        }
        let c = Rc::new(TxnCoordinator {
            cfg,
            txns: RefCell::new(txns),
            locks: RefCell::new(HashMap::new()),
            logs: crate::kvlog::StateLogs::new(logs),
        });
        c.compact().await;
        Ok(c)
    }

    pub async fn close(&self) {
        self.logs.close().await;
    }

    /// Whether this coordinator serves transactional id `id` (its partition is loaded here).
    pub fn serves(&self, id: &str) -> bool {
        self.logs.serves(txn_partition(id))
    }

    /// The leader epoch partition `p` is loaded at (cluster), `None` if it is not loaded.
    pub fn loaded_epoch(&self, p: u32) -> Option<Option<i32>> {
        self.logs.loaded_epoch(p)
    }

    /// Cluster: takes over state partition `p` (this broker now leads it) and replays it.
    /// Transactions it left in a Prepare state are completed by the ticker.
    pub async fn load(&self, p: u32, log: StateLog) -> Result<(), String> {
        self.unload(p);
        let Some(_all) = self.logs.exclusive().await else {
            return Err("coordinator closed".into());
        };
        let mut txns = HashMap::new();
        replay(&log, &mut txns).await?;
        tracing::info!(
            partition = p,
            transactional_ids = txns.len(),
            epoch = ?log.epoch(),
            "transaction state partition loaded"
        );
        self.txns.borrow_mut().extend(txns);
        self.logs.insert(p, log);
        Ok(())
    }

    /// Cluster: gives up state partition `p` (leadership moved) and forgets its ids.
    pub fn unload(&self, p: u32) {
        if !self.logs.remove(p) {
            return;
        }
        self.txns
            .borrow_mut()
            .retain(|id, _| txn_partition(id) != p);
        self.locks
            .borrow_mut()
            .retain(|id, _| txn_partition(id) != p);
        tracing::info!(partition = p, "transaction state partition unloaded");
    }

    fn lock(&self, id: &str) -> Rc<glommio::sync::Semaphore> {
        self.locks
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// Stores `meta` (or forgets the id) durably, then in memory.
    async fn store(&self, id: &str, meta: Option<TxnMeta>) -> Result<(), i16> {
        self.store_at(id, meta, Durability::Synced).await
    }

    /// [`store`](Self::store) that waits only until the record reaches `level`.
    async fn store_at(
        &self,
        id: &str,
        meta: Option<TxnMeta>,
        level: Durability,
    ) -> Result<(), i16> {
        let record = (
            serde_json::to_vec(id).unwrap_or_default(),
            meta.as_ref().and_then(|m| serde_json::to_vec(m).ok()),
        );
        let _stored = self
            .logs
            .append(txn_partition(id), &[record], level)
            .await
            .map_err(|e| {
                tracing::warn!(transactional_id = id, error = %e, "storing transaction state failed");
                match e {
                    PersistError::Closed => err::COORDINATOR_NOT_AVAILABLE,
                    PersistError::NotServed => err::NOT_COORDINATOR,
                    PersistError::State(StateError::Log(_)) => err::KAFKA_STORAGE_ERROR,
                    PersistError::State(StateError::Replication(
                        crate::api::codes::NOT_LEADER_OR_FOLLOWER,
                    )) => err::NOT_COORDINATOR,
                    PersistError::State(StateError::Replication(_)) => {
                        err::COORDINATOR_NOT_AVAILABLE
                    }
                }
            })?;
        let mut txns = self.txns.borrow_mut();
        match meta {
            Some(m) => txns.insert(id.to_string(), m),
            None => txns.remove(id),
        };
        Ok(())
    }

    /// InitProducerId with a transactional id: ends whatever the id left open (aborting an
    /// ongoing transaction), bumps the epoch (fencing older producers) and returns
    /// (producer id, epoch).
    pub async fn init_producer(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms as u64 > self.cfg.max_timeout_ms {
            return Err(err::INVALID_TRANSACTION_TIMEOUT);
        }
        let lock = self.lock(id);
        let _turn = lock
            .acquire_permit(1)
            .await
            .map_err(|_| err::COORDINATOR_NOT_AVAILABLE)?;
        let now = now_ms();
        let current = self.get(id);
        let meta = match current {
            None => {
                if expected.is_some() {
                    return Err(err::INVALID_PRODUCER_ID_MAPPING);
                }
                let pid = allocate_producer_id(shard)?;
                TxnMeta {
                    producer_id: pid,
                    epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    started_ms: -1,
                    updated_ms: now,
                }
            }
            Some(mut m) => {
                if let Some((pid, epoch)) = expected {
                    if pid != m.producer_id || epoch != m.epoch {
                        return Err(err::PRODUCER_FENCED);
                    }
                }
                match m.state {
                    TxnState::Ongoing => {
                        // a new producer instance: abort what the old one left open, under a
                        // bumped epoch so the old one is fenced everywhere
                        m = self.bump(shard, id, m)?;
                        m = self.complete(shard, id, m, false).await?;
                    }
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        let commit = m.state == TxnState::PrepareCommit;
                        m = self.complete(shard, id, m, commit).await?;
                    }
                    _ => {}
                }
                m = self.bump(shard, id, m)?;
                m.timeout_ms = timeout_ms;
                m.state = TxnState::Empty;
                m.partitions.clear();
                m.groups.clear();
                m.started_ms = -1;
                m.updated_ms = now;
                m
            }
        };
        self.store(id, Some(meta.clone())).await?;
        tracing::debug!(
            transactional_id = id,
            producer_id = meta.producer_id,
            epoch = meta.epoch,
            "producer initialised"
        );
        Ok((meta.producer_id, meta.epoch))
    }

    /// The next epoch (a new producer id when the epoch would run out).
    fn bump(&self, shard: &Rc<Shard>, id: &str, mut m: TxnMeta) -> Result<TxnMeta, i16> {
        if m.epoch >= i16::MAX - 1 {
            m.producer_id = allocate_producer_id(shard)?;
            m.epoch = 0;
            tracing::info!(
                transactional_id = id,
                producer_id = m.producer_id,
                "epoch exhausted; new producer id"
            );
        } else {
            m.epoch += 1;
        }
        Ok(m)
    }

    /// AddPartitionsToTxn (with `verify_only`, only checks they are already in it).
    pub async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        wanted: Vec<(String, i32)>,
        verify_only: bool,
    ) -> Vec<((String, i32), i16)> {
        let all = |code: i16, w: Vec<(String, i32)>| w.into_iter().map(|tp| (tp, code)).collect();
        let lock = self.lock(id);
        let Ok(_turn) = lock.acquire_permit(1).await else {
            return all(err::COORDINATOR_NOT_AVAILABLE, wanted);
        };
        let Some(mut m) = self.get(id) else {
            return all(err::INVALID_PRODUCER_ID_MAPPING, wanted);
        };
        if let Err(code) = check_producer(&m, producer_id, epoch) {
            return all(code, wanted);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return all(err::CONCURRENT_TRANSACTIONS, wanted);
        }
        if verify_only {
            let ongoing = m.state == TxnState::Ongoing;
            return wanted
                .into_iter()
                .map(|tp| {
                    let ok = ongoing && m.partitions.contains(&tp);
                    (
                        tp,
                        if ok {
                            err::NONE
                        } else {
                            err::INVALID_TXN_STATE
                        },
                    )
                })
                .collect();
        }
        let unknown: Vec<bool> = {
            let st = shard.shared.catalog.read();
            wanted
                .iter()
                .map(|(t, p)| {
                    st.topics
                        .get(t)
                        .is_none_or(|i| *p < 0 || *p as usize >= i.shards.len())
                })
                .collect()
        };
        if unknown.iter().any(|u| *u) {
            return wanted
                .into_iter()
                .zip(unknown)
                .map(|(tp, u)| {
                    let code = if u {
                        err::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        err::OPERATION_NOT_ATTEMPTED
                    };
                    (tp, code)
                })
                .collect();
        }
        let fresh = m.state != TxnState::Ongoing;
        if fresh {
            // a new transaction: nothing of the last one carries over
            m.partitions.clear();
            m.groups.clear();
        }
        let before = m.partitions.len();
        m.partitions.extend(wanted.iter().cloned());
        if fresh || m.partitions.len() != before {
            self.begin(&mut m);
            if let Err(code) = self.store(id, Some(m)).await {
                return all(code, wanted);
            }
        }
        all(err::NONE, wanted)
    }

    /// Moves a transaction to Ongoing (callers cleared what the last one touched).
    fn begin(&self, m: &mut TxnMeta) {
        let now = now_ms();
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.started_ms = now;
        }
        m.updated_ms = now;
    }

    /// AddOffsetsToTxn: the group's offsets become part of the transaction.
    pub async fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> i16 {
        let lock = self.lock(id);
        let Ok(_turn) = lock.acquire_permit(1).await else {
            return err::COORDINATOR_NOT_AVAILABLE;
        };
        let Some(mut m) = self.get(id) else {
            return err::INVALID_PRODUCER_ID_MAPPING;
        };
        if let Err(code) = check_producer(&m, producer_id, epoch) {
            return code;
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return err::CONCURRENT_TRANSACTIONS;
        }
        if m.state == TxnState::Ongoing && m.groups.contains(group) {
            return err::NONE;
        }
        if m.state != TxnState::Ongoing {
            m.partitions.clear();
            m.groups.clear();
        }
        m.groups.insert(group.to_string());
        self.begin(&mut m);
        match self.store(id, Some(m)).await {
            Ok(()) => err::NONE,
            Err(code) => code,
        }
    }

    /// Whether a transactional produce of `tp` by this producer belongs to its open
    /// transaction (the partition leader's verification before it opens a transaction).
    pub fn verify(&self, id: &str, producer_id: i64, epoch: i16, tp: &(String, i32)) -> i16 {
        let txns = self.txns.borrow();
        let Some(m) = txns.get(id) else {
            return err::INVALID_PRODUCER_ID_MAPPING;
        };
        if m.producer_id != producer_id {
            return err::INVALID_PRODUCER_ID_MAPPING;
        }
        if m.epoch != epoch {
            return err::INVALID_PRODUCER_EPOCH;
        }
        if m.state == TxnState::Ongoing && m.partitions.contains(tp) {
            err::NONE
        } else {
            err::INVALID_TXN_STATE
        }
    }

    /// EndTxn: commits or aborts the open transaction.
    pub async fn end(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> i16 {
        let lock = self.lock(id);
        let Ok(_turn) = lock.acquire_permit(1).await else {
            return err::COORDINATOR_NOT_AVAILABLE;
        };
        let Some(m) = self.get(id) else {
            return err::INVALID_PRODUCER_ID_MAPPING;
        };
        if let Err(code) = check_producer(&m, producer_id, epoch) {
            return code;
        }
        let done = match (m.state, commit) {
            // a retry of an EndTxn that already completed
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return err::NONE
            }
            (TxnState::Ongoing, _) => self.complete(shard, id, m, commit).await,
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                self.complete(shard, id, m, commit).await
            }
            _ => return err::INVALID_TXN_STATE,
        };
        match done {
            Ok(_) => err::NONE,
            Err(code) => code,
        }
    }

    /// Prepare (stored) -> markers on every partition and group -> Complete (stored).
    async fn complete(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        mut m: TxnMeta,
        commit: bool,
    ) -> Result<TxnMeta, i16> {
        let prepare = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if m.state != prepare {
            m.state = prepare;
            m.updated_ms = now_ms();
            self.store(id, Some(m.clone())).await?;
        }
        if let Err(e) = markers::write_markers(shard, &m, commit).await {
            tracing::error!(transactional_id = id, error = %e, "writing transaction markers failed; will retry");
            return Err(err::COORDINATOR_NOT_AVAILABLE);
        }
        tracing::debug!(
            transactional_id = id,
            commit,
            partitions = m.partitions.len(),
            "transaction ended"
        );
        m.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        // as Kafka's prepareComplete: a completed transaction holds no partitions or groups
        m.partitions.clear();
        m.groups.clear();
        m.updated_ms = now_ms();
        // the outcome is already durable (Prepare state and markers): Complete need not wait
        // for its own fdatasync; after a crash the Prepare state is completed again (markers
        // for a transaction already ended change nothing), and the next stored change syncs it
        self.store_at(id, Some(m.clone()), Durability::Written)
            .await?;
        Ok(m)
    }

    /// Transactional ids by (id, producer id, state), filtered as ListTransactions asks.
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: i64,
        pattern: Option<&regex::Regex>,
    ) -> Vec<(String, i64, &'static str)> {
        let now = now_ms();
        let mut v: Vec<_> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
            .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|(_, m)| {
                min_duration_ms < 0
                    || (m.state == TxnState::Ongoing && now - m.started_ms >= min_duration_ms)
            })
            .filter(|(id, _)| pattern.is_none_or(|p| p.is_match(id)))
            .map(|(id, m)| (id.clone(), m.producer_id, m.state.name()))
            .collect();
        v.sort();
        v
    }

    /// Aborts timed-out transactions, finishes Prepare states left by a crash and forgets ids
    /// idle past transactional.id.expiration.ms. Runs every abort interval.
    pub fn start_ticker(self: &Rc<Self>, shard: Rc<Shard>) -> glommio::task::JoinHandle<()> {
        let me = self.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(me.cfg.abort_interval).await;
                if shard.shared.is_stopping() {
                    break;
                }
                me.tick(&shard).await;
            }
        })
        .detach()
    }

    /// Rewrites state partitions that grew well past their live state (`kvlog::compact`).
    async fn compact(&self) {
        let live = |p: u32| -> Vec<crate::kvlog::KvRecord> {
            self.txns
                .borrow()
                .iter()
                .filter(|(id, _)| txn_partition(id) == p)
                .map(|(id, m)| {
                    (
                        serde_json::to_vec(id).unwrap_or_default(),
                        serde_json::to_vec(m).ok(),
                    )
                })
                .collect()
        };
        self.logs
            .compact(self.cfg.compact_min_bytes, "transaction state", live)
            .await;
    }

    async fn tick(&self, shard: &Rc<Shard>) {
        self.compact().await;
        let now = now_ms();
        let due: Vec<(String, TxnState)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| match m.state {
                TxnState::Ongoing => now - m.started_ms > m.timeout_ms as i64,
                TxnState::PrepareCommit | TxnState::PrepareAbort => true,
                _ => now - m.updated_ms > self.cfg.id_expiration_ms as i64,
            })
            .map(|(id, m)| (id.clone(), m.state))
            .collect();
        for (id, state) in due {
            let lock = self.lock(&id);
            let Ok(_turn) = lock.acquire_permit(1).await else {
                continue;
            };
            let Some(m) = self.get(&id) else { continue };
            if m.state != state {
                continue; // changed while we waited
            }
            match state {
                TxnState::Ongoing => {
                    if now_ms() - m.started_ms <= m.timeout_ms as i64 {
                        continue;
                    }
                    tracing::info!(transactional_id = %id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "transaction timed out; aborting");
                    let Ok(bumped) = self.bump(shard, &id, m) else {
                        continue;
                    };
                    let _ = self.complete(shard, &id, bumped, false).await;
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let commit = state == TxnState::PrepareCommit;
                    let _ = self.complete(shard, &id, m, commit).await;
                }
                _ => {
                    if self.store(&id, None).await.is_ok() {
                        self.locks.borrow_mut().remove(&id);
                        tracing::info!(transactional_id = %id, "transactional id expired");
                    }
                }
            }
        }
    }
}

/// Replays a transaction state partition into `txns`.
async fn replay(log: &StateLog, txns: &mut HashMap<String, TxnMeta>) -> Result<(), String> {
    log.replay(|k, v| {
        let Ok(id) = serde_json::from_slice::<String>(k) else {
            return;
        };
        match v.and_then(|v| serde_json::from_slice::<TxnMeta>(v).ok()) {
            Some(m) => {
                txns.insert(id, m);
            }
            None => {
                txns.remove(&id);
            }
        }
    })
    .await
}

fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, i16> {
    shard.shared.allocate_producer_id().map_err(|e| {
        tracing::error!(error = %e, "allocating a producer id failed");
        err::KAFKA_STORAGE_ERROR
    })
}
