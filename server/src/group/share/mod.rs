//! Share groups (KIP-932, "queues"): members of a share group all read the same partitions,
//! and each record is handed to one member at a time under an acquisition lock, acknowledged
//! one by one (accept, release, reject), and redelivered when released or when its lock runs
//! out, up to a delivery count limit.
//!
//! Data path:
//! - ShareGroupHeartbeat -> `api::share_groups` (topic names, settings) -> the group's
//!   coordinator shard ([`serve`], the same `Coordinator` and id namespace as classic and
//!   consumer groups) -> [`group::ShareGroup`] (membership, member epochs, the assignor) ->
//!   the member's epoch and assignment. A member that leaves or is fenced has its acquired
//!   records released on every shard.
//! - ShareFetch / ShareAcknowledge -> `api::share_fetch` -> the coordinator shard checks the
//!   member and its share session (epoch 0 opens, -1 closes, otherwise the next epoch) and
//!   answers the session's partitions -> each partition's owning shard ([`owner`]): the
//!   piggybacked acknowledgements applied to its [`partition::SharePartition`] first, then
//!   AVAILABLE records acquired for the member and read with the ordinary read path
//!   (`PartitionLog::read`, the stored batches as they are) -> the response carries those
//!   batches and the acquired ranges (first offset, last offset, delivery count). With
//!   nothing to acquire the request waits (up to `max_wait_ms`, at most 30 s) for the log to
//!   grow or a record to be released.
//! - A ticker on every shard ([`start_ticker`]) expires acquisition locks and releases the
//!   records of members the coordinator fenced.
//!
//! Not persisted: share-partition state (SPSO, record states, delivery counts) lives in the
//! owning shard's memory, the membership in the coordinator's; after a restart every share
//! partition starts again at `share.auto.offset.reset` (Kafka keeps both in
//! `__share_group_state` and `__consumer_offsets`).

pub mod group;
pub mod owner;
pub mod partition;
pub mod serve;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use partition::{Limits, SharePartition};

use crate::shard::{Shard, TopicPartition};

/// Group config: where a share-partition starts (`latest` or `earliest`).
pub const AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// Group config: the acquisition lock duration (within the broker's bounds).
pub const RECORD_LOCK_DURATION: &str = "share.record.lock.duration.ms";

/// `share.auto.offset.reset`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reset {
    #[default]
    Latest,
    Earliest,
}

impl Reset {
    pub fn parse(v: &str) -> Option<Reset> {
        match v.trim().to_ascii_lowercase().as_str() {
            "latest" => Some(Reset::Latest),
            "earliest" => Some(Reset::Earliest),
            _ => None,
        }
    }
}

/// The broker's `group.share.*` keys (Kafka's ShareGroupConfig defaults and bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareGroupBounds {
    pub session_timeout_ms: i32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub min_heartbeat_interval_ms: i32,
    pub max_heartbeat_interval_ms: i32,
    pub record_lock_duration_ms: i32,
    pub min_record_lock_duration_ms: i32,
    pub max_record_lock_duration_ms: i32,
    pub delivery_count_limit: i32,
    pub partition_max_record_locks: i32,
    pub max_size: i32,
}

impl Default for ShareGroupBounds {
    fn default() -> Self {
        ShareGroupBounds {
            session_timeout_ms: 45_000,
            min_session_timeout_ms: 45_000,
            max_session_timeout_ms: 60_000,
            heartbeat_interval_ms: 5_000,
            min_heartbeat_interval_ms: 5_000,
            max_heartbeat_interval_ms: 15_000,
            record_lock_duration_ms: 30_000,
            min_record_lock_duration_ms: 15_000,
            max_record_lock_duration_ms: 60_000,
            delivery_count_limit: 5,
            partition_max_record_locks: 2_000,
            max_size: 200,
        }
    }
}

impl ShareGroupBounds {
    /// Sets one `group.share.*` broker key; `Ok(false)` if `key` is not one of them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let (slot, min, max) = match key {
            "group.share.session.timeout.ms" => (&mut self.session_timeout_ms, 1, i32::MAX),
            "group.share.min.session.timeout.ms" => (&mut self.min_session_timeout_ms, 1, i32::MAX),
            "group.share.max.session.timeout.ms" => (&mut self.max_session_timeout_ms, 1, i32::MAX),
            "group.share.heartbeat.interval.ms" => (&mut self.heartbeat_interval_ms, 1, i32::MAX),
            "group.share.min.heartbeat.interval.ms" => {
                (&mut self.min_heartbeat_interval_ms, 1, i32::MAX)
            }
            "group.share.max.heartbeat.interval.ms" => {
                (&mut self.max_heartbeat_interval_ms, 1, i32::MAX)
            }
            "group.share.record.lock.duration.ms" => {
                (&mut self.record_lock_duration_ms, 1, i32::MAX)
            }
            "group.share.min.record.lock.duration.ms" => {
                (&mut self.min_record_lock_duration_ms, 1, i32::MAX)
            }
            "group.share.max.record.lock.duration.ms" => {
                (&mut self.max_record_lock_duration_ms, 1, i32::MAX)
            }
            "group.share.delivery.count.limit" => (&mut self.delivery_count_limit, 2, 10),
            "group.share.partition.max.record.locks" => {
                (&mut self.partition_max_record_locks, 100, 10_000)
            }
            "group.share.max.size" => (&mut self.max_size, 1, 1_000),
            _ => return Ok(false),
        };
        *slot = value
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| format!("must be an integer in [{min}, {max}]"))?;
        Ok(true)
    }

    /// The checks Kafka makes at start: each default within its bounds, the heartbeat
    /// below the session timeout.
    pub fn check(&self) -> Result<(), String> {
        let within = |name: &str, v: i32, lo: i32, hi: i32| {
            if lo > hi {
                Err(format!(
                    "group.share.min.{name} must be <= group.share.max.{name}"
                ))
            } else if !(lo..=hi).contains(&v) {
                Err(format!(
                    "group.share.{name} must be between group.share.min.{name} and group.share.max.{name}"
                ))
            } else {
                Ok(())
            }
        };
        within(
            "session.timeout.ms",
            self.session_timeout_ms,
            self.min_session_timeout_ms,
            self.max_session_timeout_ms,
        )?;
        within(
            "heartbeat.interval.ms",
            self.heartbeat_interval_ms,
            self.min_heartbeat_interval_ms,
            self.max_heartbeat_interval_ms,
        )?;
        within(
            "record.lock.duration.ms",
            self.record_lock_duration_ms,
            self.min_record_lock_duration_ms,
            self.max_record_lock_duration_ms,
        )?;
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(
                "group.share.heartbeat.interval.ms must be less than group.share.session.timeout.ms"
                    .into(),
            );
        }
        Ok(())
    }

    /// The group configs' values when a group does not override them.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (AUTO_OFFSET_RESET.to_string(), "latest".to_string()),
            (
                RECORD_LOCK_DURATION.to_string(),
                self.record_lock_duration_ms.to_string(),
            ),
        ])
    }

    /// What a share group runs with: the broker's settings and the group's `share.*`
    /// overrides (validated when they were stored).
    pub fn settings(&self, overrides: &BTreeMap<String, String>) -> Settings {
        let ms = |v: i32| Duration::from_millis(v.max(1) as u64);
        let lock = overrides
            .get(RECORD_LOCK_DURATION)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(self.record_lock_duration_ms);
        Settings {
            group: group::Settings {
                session_timeout: ms(self.session_timeout_ms),
                heartbeat_interval: ms(self.heartbeat_interval_ms),
                max_size: self.max_size.max(1) as usize,
            },
            limits: Limits {
                lock_duration: ms(lock),
                delivery_count_limit: self.delivery_count_limit.clamp(1, 1000) as u16,
                max_record_locks: self.partition_max_record_locks.max(1) as usize,
            },
            reset: overrides
                .get(AUTO_OFFSET_RESET)
                .and_then(|v| Reset::parse(v))
                .unwrap_or_default(),
        }
    }
}

/// Everything one share group runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub group: group::Settings,
    pub limits: Limits,
    pub reset: Reset,
}

/// The share-partitions of the partitions one shard owns, by (group, partition).
#[derive(Default)]
pub struct Store {
    parts: RefCell<HashMap<(Rc<str>, TopicPartition), SharePartition>>,
    /// Notified when records become AVAILABLE again (waiting share fetches look again).
    pub changed: event_listener::Event,
}

impl Store {
    /// Expires acquisition locks; wakes waiting fetches when records came free.
    pub fn expire(&self, now: std::time::Instant) {
        let mut freed = 0;
        for p in self.parts.borrow_mut().values_mut() {
            freed += p.expire(now);
        }
        if freed > 0 {
            self.changed.notify(usize::MAX);
        }
    }

    /// Releases what `member` of `group` holds on this shard.
    pub fn release_member(&self, group: &str, member: &str) -> usize {
        let mut freed = 0;
        for ((g, _), p) in self.parts.borrow_mut().iter_mut() {
            if &**g == group {
                freed += p.release_member(member);
            }
        }
        if freed > 0 {
            self.changed.notify(usize::MAX);
        }
        freed
    }

    /// Forgets every share-partition of `group` (the group was deleted).
    pub fn forget_group(&self, group: &str) {
        self.parts.borrow_mut().retain(|(g, _), _| &**g != group);
    }

    /// (group, topic, partition, SPSO, SPEO, acquired) of every share-partition (metrics).
    pub fn summary(&self) -> Vec<(String, String, i32, u64, u64, usize)> {
        let mut v: Vec<_> = self
            .parts
            .borrow()
            .iter()
            .map(|((g, tp), p)| {
                (
                    g.to_string(),
                    tp.topic.to_string(),
                    tp.partition,
                    p.spso().get(),
                    p.speo().get(),
                    p.acquired_count(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// Every 100 ms on every shard: expire acquisition locks, and release on all shards the
/// records of share group members this shard's coordinator fenced.
pub fn start_ticker(shard: Rc<Shard>) -> glommio::task::JoinHandle<()> {
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            shard.share.expire(std::time::Instant::now());
            let gone = shard
                .coordinator()
                .map(|c| c.take_departed_share_members())
                .unwrap_or_default();
            for (group, member) in gone {
                owner::release_everywhere(&shard, &group, &member).await;
            }
        }
    })
    .detach()
}
