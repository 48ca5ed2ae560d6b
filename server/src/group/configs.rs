//! Dynamic group configs: the GROUP config resource (type 32) of DescribeConfigs, AlterConfigs
//! and IncrementalAlterConfigs, with Kafka's KIP-848 keys `consumer.session.timeout.ms` and
//! `consumer.heartbeat.interval.ms` and the KIP-932 keys `share.auto.offset.reset` and
//! `share.record.lock.duration.ms` (Kafka's other `share.*` keys and the `streams.*` ones are
//! unknown names here).
//!
//! Data path: request -> `api::configs` (resource dispatch, authorization on the group) ->
//! `api::group_configs` (entries, operations) -> [`validate`] against the broker's
//! `group.consumer.*` bounds ([`ConsumerGroupBounds`]) -> stored per group: on a single node in
//! `<data>/__sluice/group-configs.json` ([`LocalGroupConfigs`], replaced durably before the
//! answer), in a cluster in the metadata image (`Command::SetGroupConfigs`), as Kafka keeps them
//! as ConfigRecords in its metadata log. Every broker reads them from there.
//!
//! What uses them: consumer groups of the new protocol (KIP-848, `group::consumer`), through
//! [`ConsumerGroupBounds::settings`] on every ConsumerGroupHeartbeat, and share groups
//! (`group::share`, `ShareGroupBounds::settings`) on every share heartbeat, fetch and
//! acknowledgement. Classic groups take the
//! session timeout from JoinGroup, and Kafka does not apply these keys to them either.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use super::consumer::assignor::Assignor;
use super::consumer::group::Settings;

pub const SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";

/// Every group config sluice knows: (name, the broker key that sets its default or "" when
/// none does, doc).
pub const GROUP_CONFIGS: &[(&str, &str, &str)] = &[
    (
        HEARTBEAT_INTERVAL,
        "group.consumer.heartbeat.interval.ms",
        "The heartbeat interval given to the members.",
    ),
    (
        SESSION_TIMEOUT,
        "group.consumer.session.timeout.ms",
        "The timeout to detect client failures when using the consumer group protocol.",
    ),
    (
        crate::group::share::AUTO_OFFSET_RESET,
        "",
        "The strategy to use when a share-partition has no initial offset: latest or earliest.",
    ),
    (
        crate::group::share::RECORD_LOCK_DURATION,
        "group.share.record.lock.duration.ms",
        "The record acquisition lock duration in milliseconds for share groups.",
    ),
];

/// The broker's `group.consumer.*` settings: the defaults of the group configs and the bounds
/// an override must stay within (Kafka's GroupCoordinatorConfig defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGroupBounds {
    /// group.consumer.session.timeout.ms
    pub session_timeout_ms: i32,
    /// group.consumer.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.consumer.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms
    pub heartbeat_interval_ms: i32,
    /// group.consumer.min.heartbeat.interval.ms
    pub min_heartbeat_interval_ms: i32,
    /// group.consumer.max.heartbeat.interval.ms
    pub max_heartbeat_interval_ms: i32,
    /// group.consumer.max.size
    pub max_size: i32,
    /// group.consumer.assignors, in order (the first is the default)
    pub assignors: [Option<Assignor>; 2],
    /// group.consumer.migration.policy
    pub migration: MigrationPolicy,
}

/// group.consumer.migration.policy: which way an *empty* group may change protocol (sluice
/// converts empty groups only; a group with members keeps its protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl MigrationPolicy {
    /// classic -> consumer (a ConsumerGroupHeartbeat finds an empty classic group)
    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Upgrade | MigrationPolicy::Bidirectional
        )
    }
    /// consumer -> classic (a JoinGroup finds an empty consumer group)
    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Downgrade | MigrationPolicy::Bidirectional
        )
    }
}

/// An assignor name of `group.consumer.assignors`: Kafka's short names or its class names.
fn assignor_named(name: &str) -> Option<Assignor> {
    match name.trim() {
        "uniform" | "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => {
            Some(Assignor::Uniform)
        }
        "range" | "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => {
            Some(Assignor::Range)
        }
        _ => None,
    }
}

impl Default for ConsumerGroupBounds {
    fn default() -> Self {
        ConsumerGroupBounds {
            session_timeout_ms: 45_000,
            min_session_timeout_ms: 45_000,
            max_session_timeout_ms: 60_000,
            heartbeat_interval_ms: 5_000,
            min_heartbeat_interval_ms: 5_000,
            max_heartbeat_interval_ms: 15_000,
            max_size: i32::MAX,
            assignors: [Some(Assignor::Uniform), Some(Assignor::Range)],
            migration: MigrationPolicy::Bidirectional,
        }
    }
}

impl ConsumerGroupBounds {
    /// Sets one `group.consumer.*` broker key; `Ok(false)` if `key` is not one of them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "group.consumer.assignors" => {
                let mut list = [None; 2];
                let mut n = 0;
                for name in value.split(',').filter(|n| !n.trim().is_empty()) {
                    let a = assignor_named(name).ok_or_else(|| {
                        format!(
                            "unknown assignor {}: sluice has uniform and range",
                            name.trim()
                        )
                    })?;
                    if !list.contains(&Some(a)) && n < list.len() {
                        list[n] = Some(a);
                        n += 1;
                    }
                }
                if n == 0 {
                    return Err("must name at least one assignor".into());
                }
                self.assignors = list;
                return Ok(true);
            }
            "group.consumer.migration.policy" => {
                self.migration = match value.trim().to_ascii_lowercase().as_str() {
                    "disabled" => MigrationPolicy::Disabled,
                    "upgrade" => MigrationPolicy::Upgrade,
                    "downgrade" => MigrationPolicy::Downgrade,
                    "bidirectional" => MigrationPolicy::Bidirectional,
                    _ => {
                        return Err(
                            "must be one of disabled, upgrade, downgrade, bidirectional".into()
                        )
                    }
                };
                return Ok(true);
            }
            _ => {}
        }
        let slot = match key {
            "group.consumer.session.timeout.ms" => &mut self.session_timeout_ms,
            "group.consumer.min.session.timeout.ms" => &mut self.min_session_timeout_ms,
            "group.consumer.max.session.timeout.ms" => &mut self.max_session_timeout_ms,
            "group.consumer.heartbeat.interval.ms" => &mut self.heartbeat_interval_ms,
            "group.consumer.min.heartbeat.interval.ms" => &mut self.min_heartbeat_interval_ms,
            "group.consumer.max.heartbeat.interval.ms" => &mut self.max_heartbeat_interval_ms,
            "group.consumer.max.size" => &mut self.max_size,
            _ => return Ok(false),
        };
        *slot = value
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| "must be an integer >= 1".to_string())?;
        Ok(true)
    }

    /// The checks Kafka's GroupCoordinatorConfig makes at start: each default within its
    /// bounds, the heartbeat below the session timeout.
    pub fn check(&self) -> Result<(), String> {
        let b = self;
        if b.min_session_timeout_ms > b.max_session_timeout_ms {
            return Err("group.consumer.min.session.timeout.ms must be <= group.consumer.max.session.timeout.ms".into());
        }
        if !(b.min_session_timeout_ms..=b.max_session_timeout_ms).contains(&b.session_timeout_ms) {
            return Err("group.consumer.session.timeout.ms must be between group.consumer.min.session.timeout.ms and group.consumer.max.session.timeout.ms".into());
        }
        if b.min_heartbeat_interval_ms > b.max_heartbeat_interval_ms {
            return Err("group.consumer.min.heartbeat.interval.ms must be <= group.consumer.max.heartbeat.interval.ms".into());
        }
        if !(b.min_heartbeat_interval_ms..=b.max_heartbeat_interval_ms)
            .contains(&b.heartbeat_interval_ms)
        {
            return Err("group.consumer.heartbeat.interval.ms must be between group.consumer.min.heartbeat.interval.ms and group.consumer.max.heartbeat.interval.ms".into());
        }
        if b.heartbeat_interval_ms >= b.session_timeout_ms {
            return Err("group.consumer.heartbeat.interval.ms must be less than group.consumer.session.timeout.ms".into());
        }
        Ok(())
    }

    /// Every group config's value when a group does not override it.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                SESSION_TIMEOUT.to_string(),
                self.session_timeout_ms.to_string(),
            ),
            (
                HEARTBEAT_INTERVAL.to_string(),
                self.heartbeat_interval_ms.to_string(),
            ),
        ])
    }
}

impl ConsumerGroupBounds {
    /// The settings a consumer group runs with: the broker's, with the group's own
    /// `consumer.session.timeout.ms` / `consumer.heartbeat.interval.ms` overrides (validated
    /// when they were stored).
    pub fn settings(&self, overrides: Option<&BTreeMap<String, String>>) -> Settings {
        let int = |key: &str, default: i32| {
            overrides
                .and_then(|o| o.get(key))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let ms = |v: i32| std::time::Duration::from_millis(v.max(1) as u64);
        Settings {
            session_timeout: ms(int(SESSION_TIMEOUT, self.session_timeout_ms)),
            heartbeat_interval: ms(int(HEARTBEAT_INTERVAL, self.heartbeat_interval_ms)),
            max_size: self.max_size.max(1) as usize,
            assignors: self.assignors.iter().flatten().copied().collect(),
        }
    }
}

/// Why a group's configs were refused (all INVALID_CONFIG on the wire; Kafka's messages).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupConfigError {
    #[error("Unknown group config name: {0}")]
    UnknownName(String),
    #[error("Invalid value {value} for configuration {key}: Not a number of type INT")]
    NotInt { key: String, value: String },
    #[error("{key} must be greater than or equal to {bound}")]
    BelowMin {
        key: &'static str,
        bound: &'static str,
    },
    #[error("{key} must be less than or equal to {bound}")]
    AboveMax {
        key: &'static str,
        bound: &'static str,
    },
    #[error("{HEARTBEAT_INTERVAL} must be less than {SESSION_TIMEOUT}")]
    HeartbeatNotBelowSession,
    #[error("Invalid value {value} for configuration {key}: must be one of {allowed}")]
    NotOneOf {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

impl GroupConfigError {
    pub fn kafka_code(&self) -> i16 {
        crate::api::codes::INVALID_CONFIG
    }
}

/// Checks a group's overrides as Kafka's GroupConfig.validate does: known names, INT values,
/// each within the broker's bounds, and (with the broker defaults filling what is not
/// overridden) the heartbeat interval below the session timeout.
pub fn validate(
    overrides: &BTreeMap<String, String>,
    bounds: &ConsumerGroupBounds,
    share: &crate::group::share::ShareGroupBounds,
) -> Result<(), GroupConfigError> {
    if let Some(k) = overrides
        .keys()
        .find(|k| !GROUP_CONFIGS.iter().any(|(n, _, _)| n == k))
    {
        return Err(GroupConfigError::UnknownName(k.clone()));
    }
    let int = |key: &str, default: i32| -> Result<i32, GroupConfigError> {
        match overrides.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| GroupConfigError::NotInt {
                key: key.to_string(),
                value: v.clone(),
            }),
        }
    };
    let session = int(SESSION_TIMEOUT, bounds.session_timeout_ms)?;
    let heartbeat = int(HEARTBEAT_INTERVAL, bounds.heartbeat_interval_ms)?;
    if heartbeat < bounds.min_heartbeat_interval_ms {
        return Err(GroupConfigError::BelowMin {
            key: HEARTBEAT_INTERVAL,
            bound: "group.consumer.min.heartbeat.interval.ms",
        });
    }
    if heartbeat > bounds.max_heartbeat_interval_ms {
        return Err(GroupConfigError::AboveMax {
            key: HEARTBEAT_INTERVAL,
            bound: "group.consumer.max.heartbeat.interval.ms",
        });
    }
    if session < bounds.min_session_timeout_ms {
        return Err(GroupConfigError::BelowMin {
            key: SESSION_TIMEOUT,
            bound: "group.consumer.min.session.timeout.ms",
        });
    }
    if session > bounds.max_session_timeout_ms {
        return Err(GroupConfigError::AboveMax {
            key: SESSION_TIMEOUT,
            bound: "group.consumer.max.session.timeout.ms",
        });
    }
    if heartbeat >= session {
        return Err(GroupConfigError::HeartbeatNotBelowSession);
    }
    use crate::group::share::{Reset, AUTO_OFFSET_RESET, RECORD_LOCK_DURATION};
    if let Some(v) = overrides.get(AUTO_OFFSET_RESET) {
        if Reset::parse(v).is_none() {
            return Err(GroupConfigError::NotOneOf {
                key: AUTO_OFFSET_RESET,
                value: v.clone(),
                allowed: "latest, earliest",
            });
        }
    }
    let lock = int(RECORD_LOCK_DURATION, share.record_lock_duration_ms)?;
    if lock < share.min_record_lock_duration_ms {
        return Err(GroupConfigError::BelowMin {
            key: RECORD_LOCK_DURATION,
            bound: "group.share.min.record.lock.duration.ms",
        });
    }
    if lock > share.max_record_lock_duration_ms {
        return Err(GroupConfigError::AboveMax {
            key: RECORD_LOCK_DURATION,
            bound: "group.share.max.record.lock.duration.ms",
        });
    }
    Ok(())
}

/// Overrides of every group that has some: group id -> (name -> value).
pub type GroupConfigMap = BTreeMap<String, BTreeMap<String, String>>;

/// Replaces `group`'s overrides (an empty set removes the group's entry).
pub fn apply(map: &mut GroupConfigMap, group: &str, configs: &BTreeMap<String, String>) {
    if configs.is_empty() {
        map.remove(group);
    } else {
        map.insert(group.to_string(), configs.clone());
    }
}

/// The single-node store: `<data>/__sluice/group-configs.json`.
pub type LocalGroupConfigs = crate::jsonstore::JsonStore<GroupConfigMap>;

/// Opens the single-node store.
pub fn open_local(data_dir: &std::path::Path) -> Result<Arc<LocalGroupConfigs>, String> {
    LocalGroupConfigs::open(data_dir, "group-configs.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn share_group_configs() {
        let b = ConsumerGroupBounds::default();
        let sb = crate::group::share::ShareGroupBounds::default();
        let ok = m(&[
            ("share.auto.offset.reset", "earliest"),
            ("share.record.lock.duration.ms", "20000"),
        ]);
        assert_eq!(validate(&ok, &b, &sb), Ok(()));
        let e = validate(&m(&[("share.auto.offset.reset", "soon")]), &b, &sb).expect_err("bad");
        assert_eq!(e.kafka_code(), 40);
        let e = validate(&m(&[("share.record.lock.duration.ms", "1000")]), &b, &sb)
            .expect_err("below min");
        assert!(e
            .to_string()
            .contains("group.share.min.record.lock.duration.ms"));
        let s = sb.settings(&ok);
        assert_eq!(s.reset, crate::group::share::Reset::Earliest);
        assert_eq!(s.limits.lock_duration, std::time::Duration::from_secs(20));
    }

    #[test]
    fn validation_follows_kafkas_bounds() {
        let b = ConsumerGroupBounds::default();
        let sb = crate::group::share::ShareGroupBounds::default();
        assert_eq!(validate(&m(&[]), &b, &sb), Ok(()));
        assert_eq!(
            validate(
                &m(&[(SESSION_TIMEOUT, "50000"), (HEARTBEAT_INTERVAL, "6000")]),
                &b,
                &sb
            ),
            Ok(())
        );
        let e = validate(&m(&[("consumer.nope", "1")]), &b, &sb).expect_err("unknown");
        assert_eq!(e.to_string(), "Unknown group config name: consumer.nope");
        assert_eq!(e.kafka_code(), 40);
        let e = validate(&m(&[(SESSION_TIMEOUT, "abc")]), &b, &sb).expect_err("not int");
        assert_eq!(
            e.to_string(),
            "Invalid value abc for configuration consumer.session.timeout.ms: Not a number of type INT"
        );
        let e = validate(&m(&[(SESSION_TIMEOUT, "44999")]), &b, &sb).expect_err("below min");
        assert_eq!(
            e.to_string(),
            "consumer.session.timeout.ms must be greater than or equal to group.consumer.min.session.timeout.ms"
        );
        let e = validate(&m(&[(SESSION_TIMEOUT, "60001")]), &b, &sb).expect_err("above max");
        assert_eq!(
            e.to_string(),
            "consumer.session.timeout.ms must be less than or equal to group.consumer.max.session.timeout.ms"
        );
        let e = validate(&m(&[(HEARTBEAT_INTERVAL, "15001")]), &b, &sb).expect_err("above max");
        assert!(e
            .to_string()
            .contains("group.consumer.max.heartbeat.interval.ms"));
        // wider broker bounds: the heartbeat must stay below the session timeout
        let wide = ConsumerGroupBounds {
            min_session_timeout_ms: 1_000,
            ..b
        };
        let e = validate(&m(&[(SESSION_TIMEOUT, "5000")]), &wide, &sb).expect_err("hb >= session");
        assert_eq!(e, GroupConfigError::HeartbeatNotBelowSession);
        assert_eq!(
            validate(&m(&[(SESSION_TIMEOUT, "5001")]), &wide, &sb),
            Ok(())
        );
    }

    #[test]
    fn broker_bounds_are_checked() {
        let mut b = ConsumerGroupBounds::default();
        assert_eq!(b.check(), Ok(()));
        assert_eq!(
            b.set("group.consumer.session.timeout.ms", "30000"),
            Ok(true)
        );
        assert!(b.check().is_err());
        assert_eq!(
            b.set("group.consumer.min.session.timeout.ms", "10000"),
            Ok(true)
        );
        assert_eq!(b.check(), Ok(()));
        assert!(b.set("group.consumer.heartbeat.interval.ms", "x").is_err());
        assert_eq!(b.set("group.min.session.timeout.ms", "1"), Ok(false));
    }

    #[test]
    fn store_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open_local(dir.path()).expect("open");
        assert!(s.get().is_empty());
        let set = m(&[(SESSION_TIMEOUT, "50000")]);
        s.change(|g| apply(g, "g", &set)).expect("set");
        let again = open_local(dir.path()).expect("reopen");
        assert_eq!(again.get().get("g"), Some(&set));
        again
            .change(|g| apply(g, "g", &BTreeMap::new()))
            .expect("clear");
        assert!(open_local(dir.path()).expect("reopen").get().is_empty());
    }
}
