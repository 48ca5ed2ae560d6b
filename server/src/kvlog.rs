//! Key/value state logs of the coordinators (committed offsets, transaction state): one JSON
//! key and value per record, appended and fdatasync'd before a change is acknowledged,
//! replayed in order when the coordinator takes the log over (the last value of a key wins; a
//! null value deletes it).
//!
//! Data path: coordinator change -> [`StateLog::append`] -> a record batch appended to the
//! engine log -> fdatasync -> (cluster) the high watermark passes it, i.e. every in-sync
//! replica of the internal partition has it durably -> the coordinator applies it in memory
//! and answers.
//!
//! Where the log lives: single node, a local engine log under `<data>/__sluice/`; in a cluster,
//! a partition of an internal topic (`__consumer_offsets`, `__transaction_state`) replicated like
//! any partition, written only while this broker leads it (stamped with the leader epoch).
//!
//! Compaction: when a log holds much more than its live state, the owner appends the live
//! state again and moves the log start to it ([`compact`]); replay starts at the log start and
//! whole segments below it are deleted. The owner must keep other changes out meanwhile, so
//! that the live state it writes is the state of the log up to that point. (Followers of a
//! replicated state log keep their older records: replaying them gives the same state.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use sluice_engine::{
    batch, AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

use crate::shard::{Shard, TopicPartition};

/// One record: key and value (None deletes the key).
pub type KvRecord = (Vec<u8>, Option<Vec<u8>>);

/// How long a replicated state change waits for the in-sync replicas (Kafka's
/// offsets.commit.timeout.ms).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a state change was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state log: {0}")]
    Log(#[from] LogError),
    /// Replicated log: the in-sync replicas did not confirm it (Kafka error code), e.g. this
    /// broker no longer leads the partition.
    #[error("state log replication failed with error {0}")]
    Replication(i16),
}

/// The partition a replicated state log belongs to, led by this broker at `epoch`.
struct Leader {
    shard: Weak<Shard>,
    tp: TopicPartition,
    epoch: i32,
}

/// A coordinator's state log: local, or an internal partition this broker leads.
pub struct StateLog {
    log: Rc<PartitionLog>,
    leader: Option<Leader>,
}

impl StateLog {
    /// A single-node state log (fdatasync is the commit point).
    pub fn local(log: Rc<PartitionLog>) -> StateLog {
        StateLog { log, leader: None }
    }

    /// An internal partition led by this broker at `epoch` (the high watermark over the ISR
    /// is the commit point).
    pub fn replicated(
        shard: &Rc<Shard>,
        tp: TopicPartition,
        log: Rc<PartitionLog>,
        epoch: i32,
    ) -> StateLog {
        StateLog {
            log,
            leader: Some(Leader {
                shard: Rc::downgrade(shard),
                tp,
                epoch,
            }),
        }
    }

    pub fn log(&self) -> &Rc<PartitionLog> {
        &self.log
    }

    /// The leader epoch this log is written at (`None`: a local log).
    pub fn epoch(&self) -> Option<i32> {
        self.leader.as_ref().map(|l| l.epoch)
    }

    /// Appends `records` and waits until they reach `level`; a replicated log at `Synced`
    /// also waits for the in-sync replicas.
    pub async fn append(&self, records: &[KvRecord], level: Durability) -> Result<(), StateError> {
        let opts = AppendOptions {
            leader_epoch: self.epoch().unwrap_or(0),
            ..AppendOptions::default()
        };
        let Some(last) = append(&self.log, records, level, opts).await? else {
            return Ok(());
        };
        let Some(l) = self.leader.as_ref().filter(|_| level == Durability::Synced) else {
            return Ok(());
        };
        let shard = l.shard.upgrade().ok_or(StateError::Replication(
            crate::api::codes::NOT_LEADER_OR_FOLLOWER,
        ))?;
        crate::cluster::replica::wait_replicated(
            &shard,
            &l.tp,
            &self.log,
            last,
            Instant::now() + REPLICATION_TIMEOUT,
        )
        .await
        .map_err(StateError::Replication)
    }

    /// Calls `f(key, value)` for every record, oldest first: to the log end (a new leader
    /// takes over everything its log holds; the followers will confirm it).
    pub async fn replay(&self, f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<(), String> {
        replay(&self.log, f).await
    }

    /// See [`compact`].
    pub async fn compact(&self, live: &[KvRecord], min_bytes: u64) -> Result<bool, StateError> {
        let live_bytes: u64 = live
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len) + 16) as u64)
            .sum();
        let stored = self.log.size_bytes();
        if stored < min_bytes || stored < 4 * live_bytes {
            return Ok(false);
        }
        let start = self.log.offsets().log_end;
        self.append(live, Durability::Synced).await?;
        self.log.delete_records(start).await?;
        Ok(true)
    }

    pub async fn close(&self) {
        if self.leader.is_none() {
            let _ = self.log.close().await;
        }
    }
}

/// Why [`StateLogs::append`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("coordinator closed")]
    Closed,
    /// This coordinator does not serve the partition (Kafka's NOT_COORDINATOR).
    #[error("state partition not served here")]
    NotServed,
    #[error(transparent)]
    State(#[from] StateError),
}

/// The state partitions one coordinator serves, and the lock that keeps compaction and
/// partition loads (writers) apart from changes in flight (readers): compaction rewrites a
/// partition's live state, so nothing may change it meanwhile.
pub struct StateLogs {
    logs: RefCell<HashMap<u32, Rc<StateLog>>>,
    lock: glommio::sync::RwLock<()>,
}

impl StateLogs {
    pub fn new(logs: HashMap<u32, Rc<StateLog>>) -> StateLogs {
        StateLogs {
            logs: RefCell::new(logs),
            lock: glommio::sync::RwLock::new(()),
        }
    }

    /// Whether partition `p` is loaded here.
    pub fn serves(&self, p: u32) -> bool {
        self.logs.borrow().contains_key(&p)
    }

    /// The leader epoch partition `p` is loaded at (cluster), `None` if it is not loaded.
    pub fn loaded_epoch(&self, p: u32) -> Option<Option<i32>> {
        self.logs.borrow().get(&p).map(|l| l.epoch())
    }

    pub fn insert(&self, p: u32, log: StateLog) {
        self.logs.borrow_mut().insert(p, Rc::new(log));
    }

    /// Forgets partition `p`; false if it was not loaded.
    pub fn remove(&self, p: u32) -> bool {
        self.logs.borrow_mut().remove(&p).is_some()
    }

    /// Waits until no change is in flight and keeps new ones out while the guard lives (None
    /// once the coordinator is closed).
    pub async fn exclusive(&self) -> Option<glommio::sync::RwLockWriteGuard<'_, ()>> {
        self.lock.write().await.ok()
    }

    /// Appends `records` to partition `p` and waits for `level`. The returned guard keeps
    /// compaction out until the caller has applied the change in memory.
    pub async fn append(
        &self,
        p: u32,
        records: &[KvRecord],
        level: Durability,
    ) -> Result<glommio::sync::RwLockReadGuard<'_, ()>, PersistError> {
        let guard = self.lock.read().await.map_err(|_| PersistError::Closed)?;
        let log = self.logs.borrow().get(&p).cloned();
        let log = log.ok_or(PersistError::NotServed)?;
        log.append(records, level).await?;
        Ok(guard)
    }

    /// Rewrites each partition that grew well past its live state `live(p)` (see
    /// [`StateLog::compact`]); `what` names the partitions in the log lines.
    pub async fn compact(&self, min_bytes: u64, what: &str, live: impl Fn(u32) -> Vec<KvRecord>) {
        let Some(_all) = self.exclusive().await else {
            return;
        };
        let logs: Vec<(u32, Rc<StateLog>)> = self
            .logs
            .borrow()
            .iter()
            .map(|(p, l)| (*p, l.clone()))
            .collect();
        for (p, log) in &logs {
            let live = live(*p);
            match log.compact(&live, min_bytes).await {
                Ok(true) => tracing::info!(
                    partition = p,
                    records = live.len(),
                    "{what} partition compacted"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "compacting {what} partition failed")
                }
            }
        }
    }

    /// Closes every partition's log (the coordinator is shutting down).
    pub async fn close(&self) {
        let logs: Vec<_> = self.logs.borrow_mut().drain().map(|(_, l)| l).collect();
        for log in logs {
            log.close().await;
        }
    }
}

/// Segment size of a state log compacted at `compact_min_bytes`: compaction frees whole
/// segments, so they are a quarter of that (64 KiB to 8 MiB).
pub fn segment_bytes(compact_min_bytes: u64) -> u64 {
    (compact_min_bytes / 4).clamp(64 << 10, 8 << 20)
}

/// Opens (or creates) a state log with segments of `segment_bytes`.
pub async fn open(dir: &Path, segment_bytes: u64) -> Result<PartitionLog, String> {
    let cfg = LogConfig {
        segment_bytes,
        retention_ms: None,
        preallocate_bytes: 0,
        write_buffer_bytes: 1 << 20,
        hot_cache_bytes: 256 << 10,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, cfg, LogEnv::default())
        .await
        .map_err(|e| format!("opening {}: {e}", dir.display()))
}

/// Calls `f(key, value)` for every record of the log, oldest first (a replicated log: up to
/// its end, not only its high watermark).
async fn replay(log: &PartitionLog, mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<(), String> {
    let mut next = log.offsets().log_start;
    let replicated = log.is_replicated();
    let end = if replicated {
        log.offsets().log_end
    } else {
        log.offsets().high_watermark
    };
    while next < end {
        let r = if replicated {
            log.read_replica(next, 1 << 20).await
        } else {
            log.read(next, 1 << 20, FirstBatch::Always).await
        }
        .map_err(|e| e.to_string())?;
        let bytes = r.data.to_vec().map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        for b in batch::split_batches(&bytes) {
            let Some(h) = batch::BatchHeader::parse(b) else {
                break;
            };
            next = Offset(h.last().get() + 1);
            if h.is_control() {
                continue;
            }
            for rec in batch::records(b).unwrap_or_default() {
                if let Some(k) = rec.key {
                    f(k, rec.value);
                }
            }
        }
    }
    Ok(())
}

/// Appends `records` and waits until they reach `level` (`Synced`: their fdatasync). Returns
/// the last offset written, if any.
async fn append(
    log: &PartitionLog,
    records: &[KvRecord],
    level: Durability,
    opts: AppendOptions,
) -> Result<Option<Offset>, LogError> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut last = None;
    for chunk in records.chunks(1000) {
        let recs: Vec<batch::NewRecord<'_>> = chunk
            .iter()
            .map(|(k, v)| batch::NewRecord {
                key: Some(k),
                value: v.as_deref(),
                timestamp: ts,
            })
            .collect();
        let b = batch::build(&recs);
        let info = log.append_durable(&b, opts, level).await?;
        last = Some(info.last_offset);
    }
    Ok(last)
}
