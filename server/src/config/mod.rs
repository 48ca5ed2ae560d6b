//! Broker configuration: Kafka's server.properties key names, `--override key=value`, and the
//! command-line flags. Unknown keys are warned about; bad values are refused with a message
//! naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_engine::LogConfig;

mod cleaner;
pub mod faults;
mod listeners;
mod sasl;
mod tls;
pub use cleaner::{check_topic_config, cleanup_policy_text, parse_cleanup_policy, CleanerSettings};
pub use listeners::{format_endpoint, Endpoint, Listener, Listeners, SecurityProtocol};
pub use sasl::{SaslKeys, MECHANISMS};
use thiserror::Error;
pub use tls::{ClientAuth, PemSource, TlsKeys};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{key}: invalid value {value:?}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("line {line} of {file}: expected key=value")]
    BadLine { file: String, line: usize },
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
}

/// Everything the broker needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    /// listeners, advertised.listeners, listener.security.protocol.map and
    /// inter.broker.listener.name, resolved at start.
    pub listeners: Listeners,
    /// ssl.* keys of SSL and SASL_SSL listeners.
    pub tls: TlsKeys,
    /// sasl.* keys of SASL_PLAINTEXT and SASL_SSL listeners.
    pub sasl: SaslKeys,
    /// `listener.name.<listener>.ssl.*` and `listener.name.<listener>.sasl.enabled.mechanisms`
    /// as (listener, key without the prefix, value), in file order: each replaces the
    /// broker-wide key for that listener only ([`ServerConfig::tls_for`],
    /// [`ServerConfig::sasl_mechanisms_for`]).
    pub per_listener: Vec<(String, String, String)>,
    /// Fault injection for tests: requests (except ApiVersions) from this client id panic in
    /// their handler (`sluice.fault.panic.client.id`), or inside a call to another shard
    /// (`sluice.fault.panic.remote.client.id`). Unset in production.
    pub fault_panic_client_id: Option<String>,
    pub fault_panic_remote_client_id: Option<String>,
    /// `sluice.fault.log`: storage faults armed on named partitions (tests only).
    pub fault_logs: Vec<faults::LogFault>,
    /// authorizer.class.name set (any authorizer class): ACLs are enforced.
    pub authorizer: bool,
    /// super.users (`User:a;User:b`): allowed everything.
    pub super_users: Vec<String>,
    /// allow.everyone.if.no.acl.found
    pub allow_everyone_if_no_acl: bool,
    pub data_dir: PathBuf,
    /// Shards (glommio executors, one per core).
    pub cores: usize,
    /// sluice.cpus: the CPUs shard i runs on (`cpus[i % len]`), like Redpanda's --cpuset;
    /// empty: shard i on CPU i. Several brokers on one machine use it to keep apart.
    pub cpus: Vec<usize>,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    /// max.connections: Kafka client connections over every listener (the inter-broker one of
    /// a cluster is not limited).
    pub max_connections: usize,
    /// max.connections.per.ip
    pub max_connections_per_ip: usize,
    /// connections.max.idle.ms: a connection with no request for this long (and none in
    /// flight) is closed.
    pub connections_max_idle_ms: u64,
    /// queued.max.request.bytes: request bytes one connection may have read and not yet
    /// handled, with the answers it has not read yet (Kafka bounds the whole broker's queue with it; -1, its default, is taken as
    /// socket.request.max.bytes per connection here, so every connection is bounded).
    pub queued_max_request_bytes: usize,
    /// quota.window.num / quota.window.size.seconds: the samples client quota rates are
    /// measured over (Kafka's defaults 11 x 1 s).
    pub quota_windows: crate::quota::Windows,
    /// Defaults for every partition log (log.* keys); topics override them.
    pub log: LogConfig,
    /// The log cleaner of compacted topics (log.cleaner.* keys).
    pub cleaner: CleanerSettings,
    pub retention_check_ms: u64,
    /// sluice.fetch.zero.copy: send cold fetch data with sendfile(2) (true) or copy it.
    pub fetch_zero_copy: bool,
    /// sluice.hot.cache.shard.bytes: bound on the in-memory hot tails of all partitions of one
    /// shard together (each partition also keeps at most its own hot cache size).
    pub hot_cache_shard_bytes: usize,
    /// sluice.write.buffer.shard.bytes: bound on the appended bytes that the partitions of one
    /// shard together have not handed to the kernel yet (producers wait beyond it).
    pub write_buffer_shard_bytes: usize,
    /// compression.type, compression.<codec>.level and sluice.compression.validation.
    pub compression: crate::compression::Defaults,
    /// group.min.session.timeout.ms / group.max.session.timeout.ms
    pub group_min_session_ms: u64,
    pub group_max_session_ms: u64,
    /// group.initial.rebalance.delay.ms (0 as in Kafka's shipped server.properties)
    pub group_initial_rebalance_delay_ms: u64,
    /// group.consumer.*: defaults and bounds of the dynamic group configs (KIP-848 keys,
    /// stored and validated only: see `group::configs`)
    pub consumer_group: crate::group::configs::ConsumerGroupBounds,
    /// group.share.*: share groups (KIP-932)
    pub share_group: crate::group::share::ShareGroupBounds,
    /// offsets.retention.minutes
    pub offsets_retention_minutes: u64,
    /// transaction.max.timeout.ms: the largest transaction.timeout.ms a producer may ask for
    pub transaction_max_timeout_ms: u64,
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms
    pub transaction_abort_interval_ms: u64,
    /// transactional.id.expiration.ms
    pub transactional_id_expiration_ms: u64,
    /// producer.id.expiration.ms
    pub producer_id_expiration_ms: u64,
    /// sluice.state.compact.min.bytes: coordinator state logs (offsets, transactions) are
    /// compacted once they hold this much and 4x their live state
    pub state_compact_min_bytes: u64,
    /// controller.quorum.voters (`id@host:port,...`): empty for a single node; else this broker
    /// joins a cluster whose metadata quorum runs on these voters.
    pub quorum_voters: Vec<(i32, SocketAddr)>,
    /// broker.heartbeat.interval.ms: how often a broker heartbeats the quorum leader.
    pub broker_heartbeat_ms: u64,
    /// broker.session.timeout.ms: a broker silent this long is fenced (leads nothing, leaves
    /// every ISR). Kafka's default is 9 s; sluice's 3 s makes failover take a few seconds.
    pub broker_session_timeout_ms: u64,
    /// default.replication.factor for topics created without one.
    pub default_replication_factor: i16,
    /// min.insync.replicas (broker default; topics override it): acks=all needs this many
    /// in-sync replicas.
    pub min_insync_replicas: usize,
    /// replica.lag.time.max.ms: a follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// sluice.http.listen: the HTTP listener (metrics, health, status, web console); `None`
    /// (an empty value) turns it off.
    pub http_listen: Option<SocketAddr>,
    /// sluice.http.console.write.enable: the console may create topics and delete records
    /// (for principals the authorizer allows, when ACLs are on).
    pub http_console_write: bool,
    /// Keys seen that sluice does not know (warned about at start).
    pub unknown_keys: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("static address");
        ServerConfig {
            node_id: 0,
            listeners: Listeners::plaintext(listen),
            tls: TlsKeys::default(),
            sasl: SaslKeys::default(),
            per_listener: Vec::new(),
            fault_panic_client_id: None,
            fault_panic_remote_client_id: None,
            fault_logs: Vec::new(),
            authorizer: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl: false,
            data_dir: PathBuf::from("./data"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpus: Vec::new(),
            num_partitions: 1,
            auto_create_topics: true,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            max_connections: i32::MAX as usize,
            max_connections_per_ip: i32::MAX as usize,
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: 104_857_600,
            quota_windows: crate::quota::Windows::default(),
            log: LogConfig::default(),
            cleaner: CleanerSettings::default(),
            retention_check_ms: 300_000,
            fetch_zero_copy: true,
            hot_cache_shard_bytes: 256 << 20,
            write_buffer_shard_bytes: 64 << 20,
            compression: Default::default(),
            group_min_session_ms: 6_000,
            group_max_session_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 0,
            consumer_group: Default::default(),
            share_group: Default::default(),
            offsets_retention_minutes: 10_080,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            producer_id_expiration_ms: 86_400_000,
            state_compact_min_bytes: 4 << 20,
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            http_console_write: false,
            quorum_voters: Vec::new(),
            broker_heartbeat_ms: 250,
            broker_session_timeout_ms: 3_000,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 10_000,
            unknown_keys: Vec::new(),
        }
    }
}

pub(crate) fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| bad(key, value, "not a valid number"))
}

/// A count of at least 1 (Kafka's connection limits and timeouts).
fn parse_positive(key: &str, value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(bad(key, value, "must be a whole number >= 1")),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

/// `sluice.cpus`: CPU numbers and ranges separated by commas (`0,2-3`); empty: no pinning list.
pub fn parse_cpus(key: &str, value: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (a, b): (usize, usize) = (parse_num(key, a.trim())?, parse_num(key, b.trim())?);
        if a > b {
            return Err(bad(key, value, "a range must go up (like 0-3)"));
        }
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// `controller.quorum.voters`: `id@host:port` entries separated by commas (Kafka's syntax).
pub fn parse_voters(key: &str, value: &str) -> Result<Vec<(i32, SocketAddr)>, ConfigError> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<(i32, SocketAddr)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| bad(key, value, format!("{entry:?}: expected id@host:port")))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| bad(key, value, format!("{entry:?}: node id is not a number")))?;
        if id < 0 {
            return Err(bad(key, value, format!("{entry:?}: node id must be >= 0")));
        }
        let addr = addr
            .trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| bad(key, value, format!("{entry:?}: cannot resolve host:port")))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad(key, value, format!("node {id} is listed twice")));
        }
        out.push((id, addr));
    }
    Ok(out)
}

/// A "never" value for Kafka's long settings (-1 or Long.MAX disable them).
fn parse_optional_ms(key: &str, value: &str) -> Result<Option<u64>, ConfigError> {
    let v: i64 = parse_num(key, value)?;
    match v {
        -1 | i64::MAX => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        _ => Err(bad(key, value, "must be >= 0 or -1")),
    }
}

/// Topic-level settings (Kafka topic config names) applied over `base`. Used for topic
/// creation, AlterConfigs and the broker's log.* defaults.
pub fn apply_topic_config(
    base: &mut LogConfig,
    key: &str,
    value: &str,
) -> Result<bool, ConfigError> {
    match key {
        "segment.bytes" => {
            let v: u64 = parse_num(key, value)?;
            if !(14..=i32::MAX as u64).contains(&v) {
                return Err(bad(key, value, "must be between 14 and 2147483647"));
            }
            base.segment_bytes = v;
        }
        "segment.ms" => base.segment_ms = parse_optional_ms(key, value)?,
        "retention.ms" => base.retention_ms = parse_optional_ms(key, value)?,
        "retention.bytes" => base.retention_bytes = parse_optional_ms(key, value)?,
        "flush.messages" => base.flush_messages = parse_optional_ms(key, value)?,
        "flush.ms" => base.flush_ms = parse_optional_ms(key, value)?,
        "index.interval.bytes" => base.index_interval_bytes = parse_num(key, value)?,
        "max.message.bytes" => {
            let v: i64 = parse_num(key, value)?;
            if v < 0 {
                return Err(bad(key, value, "must be >= 0"));
            }
            base.max_message_bytes = v as usize;
        }
        "preallocate" => {
            base.preallocate_bytes = if parse_bool(key, value)? { 32 << 20 } else { 0 };
        }
        // stored and reported, enforced by the broker, not the log
        "message.timestamp.type" => {
            if value != "CreateTime" && value != "LogAppendTime" {
                return Err(bad(key, value, "expected CreateTime or LogAppendTime"));
            }
        }
        "compression.type" => {
            crate::compression::parse_type(value).map_err(|r| bad(key, value, r))?;
        }
        "compression.gzip.level" | "compression.lz4.level" | "compression.zstd.level" => {
            crate::compression::parse_level(key, value).map_err(|r| bad(key, value, r))?;
        }
        "min.insync.replicas" => {
            let v: i32 = parse_num(key, value)?;
            if v < 1 {
                return Err(bad(key, value, "must be >= 1"));
            }
        }
        _ => return cleaner::apply_topic_config(base, key, value),
    }
    Ok(true)
}

/// Topic config keys sluice knows, with the broker-level key that sets their default.
pub const TOPIC_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
];

impl ServerConfig {
    /// Applies one server.properties key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let value = value.trim();
        if key.starts_with("ssl.") && self.tls.set(key, value)? {
            return Ok(());
        }
        if let Some((listener, rest)) = key
            .strip_prefix("listener.name.")
            .and_then(|r| r.split_once('.'))
        {
            let known = if rest.starts_with("ssl.") {
                // checked now, so that a bad value stops the start naming its key
                TlsKeys::default()
                    .set(rest, value)
                    .map_err(|e| bad(key, value, e.to_string()))?
            } else if rest == "sasl.enabled.mechanisms" {
                SaslKeys::default()
                    .set(rest, value)
                    .map_err(|e| bad(key, value, e.to_string()))?
            } else {
                false
            };
            if known {
                self.per_listener.push((
                    listener.to_ascii_uppercase(),
                    rest.to_string(),
                    value.to_string(),
                ));
                return Ok(());
            }
        }
        if self.sasl.set(key, value)? {
            return Ok(());
        }
        if self
            .compression
            .set(key, value)
            .map_err(|r| bad(key, value, r))?
        {
            return Ok(());
        }
        match key {
            "node.id" | "broker.id" => self.node_id = parse_num(key, value)?,
            "authorizer.class.name" => self.authorizer = !value.is_empty(),
            "super.users" => {
                self.super_users = value
                    .split(';')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(u) = self.super_users.iter().find(|u| !u.contains(':')) {
                    return Err(bad(key, value, format!("{u}: expected User:<name>")));
                }
            }
            "allow.everyone.if.no.acl.found" => {
                self.allow_everyone_if_no_acl = parse_bool(key, value)?
            }
            "controller.quorum.voters" => self.quorum_voters = parse_voters(key, value)?,
            "min.insync.replicas" => {
                self.min_insync_replicas = parse_num(key, value)?;
                if self.min_insync_replicas == 0 {
                    return Err(bad(key, value, "must be >= 1"));
                }
            }
            "replica.lag.time.max.ms" => {
                self.replica_lag_time_max_ms = parse_num(key, value)?;
                if self.replica_lag_time_max_ms < 100 {
                    return Err(bad(key, value, "must be >= 100"));
                }
            }
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_ms = parse_num(key, value)?;
                if self.broker_heartbeat_ms == 0 {
                    return Err(bad(key, value, "must be >= 1"));
                }
            }
            "broker.session.timeout.ms" => {
                self.broker_session_timeout_ms = parse_num(key, value)?;
                if self.broker_session_timeout_ms < 100 {
                    return Err(bad(key, value, "must be >= 100"));
                }
            }
            "default.replication.factor" => {
                self.default_replication_factor = parse_num(key, value)?;
                if self.default_replication_factor < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
            }
            "listeners"
            | "advertised.listeners"
            | "listener.security.protocol.map"
            | "inter.broker.listener.name" => self.listeners.set(key, value)?,
            "log.dirs" | "log.dir" => {
                let first = value.split(',').next().unwrap_or("").trim();
                if first.is_empty() {
                    return Err(bad(key, value, "empty path"));
                }
                self.data_dir = PathBuf::from(first);
            }
            "num.partitions" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.num_partitions = v;
            }
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(key, value)?,
            "message.max.bytes" => {
                let v: usize = parse_num(key, value)?;
                self.message_max_bytes = v;
                self.log.max_message_bytes = v;
            }
            "socket.request.max.bytes" => {
                let v: usize = parse_num(key, value)?;
                if v < 1024 {
                    return Err(bad(key, value, "must be >= 1024"));
                }
                self.socket_request_max_bytes = v;
            }
            "log.segment.bytes" => {
                apply_topic_config(&mut self.log, "segment.bytes", value)?;
            }
            "log.roll.ms" => {
                apply_topic_config(&mut self.log, "segment.ms", value)?;
            }
            "log.roll.hours" => {
                let h: u64 = parse_num(key, value)?;
                self.log.segment_ms = Some(h * 3_600_000);
            }
            "log.retention.ms" => {
                apply_topic_config(&mut self.log, "retention.ms", value).map(drop)?
            }
            "log.retention.minutes" => {
                let m: i64 = parse_num(key, value)?;
                self.log.retention_ms = (m >= 0).then(|| m as u64 * 60_000);
            }
            "log.retention.hours" => {
                let h: i64 = parse_num(key, value)?;
                self.log.retention_ms = (h >= 0).then(|| h as u64 * 3_600_000);
            }
            "log.retention.bytes" => {
                apply_topic_config(&mut self.log, "retention.bytes", value)?;
            }
            "log.flush.interval.messages" => {
                apply_topic_config(&mut self.log, "flush.messages", value)?;
            }
            "log.flush.interval.ms" => {
                apply_topic_config(&mut self.log, "flush.ms", value)?;
            }
            "log.index.interval.bytes" => {
                apply_topic_config(&mut self.log, "index.interval.bytes", value)?;
            }
            "log.retention.check.interval.ms" => self.retention_check_ms = parse_num(key, value)?,
            "log.cleanup.policy" => {
                apply_topic_config(&mut self.log, "cleanup.policy", value)?;
            }
            "log.cleaner.delete.retention.ms" => {
                apply_topic_config(&mut self.log, "delete.retention.ms", value)?;
            }
            "log.cleaner.min.compaction.lag.ms" => {
                apply_topic_config(&mut self.log, "min.compaction.lag.ms", value)?;
            }
            "log.cleaner.max.compaction.lag.ms" => {
                apply_topic_config(&mut self.log, "max.compaction.lag.ms", value)?;
            }
            "log.cleaner.min.cleanable.ratio" => {
                apply_topic_config(&mut self.log, "min.cleanable.dirty.ratio", value)?;
            }
            "log.cleaner.enable" => self.cleaner.enable = parse_bool(key, value)?,
            "log.cleaner.io.max.bytes.per.second" => {
                let v: f64 = parse_num(key, value)?;
                if v.is_nan() || v <= 0.0 {
                    return Err(bad(key, value, "must be > 0"));
                }
                // Kafka's default is Double.MAX_VALUE: no limit
                self.cleaner.io_max_bytes_per_sec = (v < u64::MAX as f64).then_some(v as u64);
            }
            "log.cleaner.dedupe.buffer.size" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1024 {
                    return Err(bad(key, value, "must be >= 1024"));
                }
                self.cleaner.dedupe_buffer_bytes = v;
            }
            "log.cleaner.backoff.ms" => {
                self.cleaner.backoff_ms = parse_num(key, value)?;
                if self.cleaner.backoff_ms == 0 {
                    return Err(bad(key, value, "must be >= 1"));
                }
            }
            // one cleaner per shard; Kafka's thread count has no meaning here
            "log.cleaner.threads" => {
                parse_num::<u32>(key, value)?;
            }
            "group.min.session.timeout.ms" => self.group_min_session_ms = parse_num(key, value)?,
            "group.max.session.timeout.ms" => self.group_max_session_ms = parse_num(key, value)?,
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = parse_num(key, value)?
            }
            k if k.starts_with("group.share.") => match self.share_group.set(k, value) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = k, "unknown configuration key ignored");
                    self.unknown_keys.push(k.to_string());
                }
                Err(reason) => return Err(bad(key, value, reason)),
            },
            k if k.starts_with("group.consumer.") => match self.consumer_group.set(k, value) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = k, "unknown configuration key ignored");
                    self.unknown_keys.push(k.to_string());
                }
                Err(reason) => return Err(bad(key, value, reason)),
            },
            "offsets.retention.minutes" => self.offsets_retention_minutes = parse_num(key, value)?,
            "transaction.max.timeout.ms" => {
                self.transaction_max_timeout_ms = parse_num(key, value)?
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.transaction_abort_interval_ms = parse_num::<u64>(key, value)?.max(1)
            }
            "transactional.id.expiration.ms" => {
                self.transactional_id_expiration_ms = parse_num(key, value)?
            }
            "producer.id.expiration.ms" => self.producer_id_expiration_ms = parse_num(key, value)?,
            "sluice.state.compact.min.bytes" => {
                self.state_compact_min_bytes = parse_num(key, value)?
            }
            "sluice.fetch.zero.copy" => self.fetch_zero_copy = parse_bool(key, value)?,
            "max.connections" => self.max_connections = parse_positive(key, value)?,
            "max.connections.per.ip" => self.max_connections_per_ip = parse_positive(key, value)?,
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = match value.trim() {
                    "-1" => self.socket_request_max_bytes,
                    _ => parse_positive(key, value)?,
                }
            }
            "quota.window.num" => self.quota_windows.num = parse_positive(key, value)?,
            "quota.window.size.seconds" => {
                self.quota_windows.size_ms = parse_positive(key, value)? as u64 * 1000
            }
            "connections.max.idle.ms" => {
                self.connections_max_idle_ms = parse_positive(key, value)? as u64
            }
            "sluice.fault.panic.client.id" => {
                self.fault_panic_client_id = (!value.is_empty()).then(|| value.to_string())
            }
            "sluice.fault.log" => self.fault_logs = faults::parse(key, value)?,
            "sluice.fault.panic.remote.client.id" => {
                self.fault_panic_remote_client_id = (!value.is_empty()).then(|| value.to_string())
            }
            "sluice.http.listen" => {
                self.http_listen = if value.is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|_| bad(key, value, "expected IP:PORT, or empty for off"))?,
                    )
                }
            }
            "sluice.http.console.write.enable" => self.http_console_write = parse_bool(key, value)?,
            "sluice.hot.cache.shard.bytes" => self.hot_cache_shard_bytes = parse_num(key, value)?,
            "sluice.write.buffer.shard.bytes" => {
                let v: usize = parse_num(key, value)?;
                if v < 64 << 10 {
                    return Err(bad(key, value, "at least 65536 bytes"));
                }
                self.write_buffer_shard_bytes = v;
            }
            "sluice.cpus" => self.cpus = parse_cpus(key, value)?,
            "sluice.cores" => {
                let v: usize = parse_num(key, value)?;
                if v == 0 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.cores = v;
            }
            // accepted for compatibility with stock server.properties, no effect here
            "process.roles"
            | "controller.listener.names"
            | "num.network.threads"
            | "num.io.threads"
            | "socket.send.buffer.bytes"
            | "socket.receive.buffer.bytes"
            | "num.recovery.threads.per.data.dir"
            | "offsets.topic.replication.factor"
            | "transaction.state.log.replication.factor"
            | "transaction.state.log.min.isr"
            | "zookeeper.connect"
            | "zookeeper.connection.timeout.ms"
            | "controller.quorum.bootstrap.servers" => {}
            other => {
                tracing::warn!(key = other, "unknown configuration key ignored");
                self.unknown_keys.push(other.to_string());
            }
        }
        Ok(())
    }

    /// Applies a server.properties file.
    pub fn load_properties(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .ok_or(ConfigError::BadLine {
                    file: file.to_string(),
                    line: i + 1,
                })?;
            self.set(k.trim(), v)?;
        }
        Ok(())
    }

    /// The TLS keys of listener `name`: the broker-wide `ssl.*` keys with its
    /// `listener.name.<name>.ssl.*` keys in their place (Kafka's per-listener configs).
    pub fn tls_for(&self, name: &str) -> Result<TlsKeys, ConfigError> {
        let mut keys = self.tls.clone();
        for (l, k, v) in &self.per_listener {
            if l.eq_ignore_ascii_case(name) && k.starts_with("ssl.") {
                keys.set(k, v)?;
            }
        }
        Ok(keys)
    }

    /// The SASL mechanisms listener `name` offers (`listener.name.<name>.sasl.enabled.mechanisms`
    /// or the broker-wide `sasl.enabled.mechanisms`).
    pub fn sasl_mechanisms_for(&self, name: &str) -> Vec<String> {
        let mut keys = self.sasl.clone();
        for (l, k, v) in &self.per_listener {
            if l.eq_ignore_ascii_case(name) && k == "sasl.enabled.mechanisms" {
                // validated when it was read
                let _ = keys.set(k, v);
            }
        }
        keys.mechanisms
    }

    /// Reads and applies a server.properties file from disk.
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.load_properties(&path.display().to_string(), &text)
    }

    /// Settings of the group coordinators.
    pub fn coordinator_config(&self) -> crate::group::CoordinatorConfig {
        use std::time::Duration;
        crate::group::CoordinatorConfig {
            group: crate::group::state::GroupConfig {
                min_session_timeout: Duration::from_millis(self.group_min_session_ms),
                max_session_timeout: Duration::from_millis(self.group_max_session_ms),
                initial_rebalance_delay: Duration::from_millis(
                    self.group_initial_rebalance_delay_ms,
                ),
                ..Default::default()
            },
            offsets_retention: Duration::from_secs(self.offsets_retention_minutes * 60),
            compact_min_bytes: self.state_compact_min_bytes,
            consumer: self.consumer_group,
        }
    }

    pub fn txn_config(&self) -> crate::txn::TxnConfig {
        crate::txn::TxnConfig {
            max_timeout_ms: self.transaction_max_timeout_ms,
            abort_interval: std::time::Duration::from_millis(self.transaction_abort_interval_ms),
            id_expiration_ms: self.transactional_id_expiration_ms,
            compact_min_bytes: self.state_compact_min_bytes,
        }
    }

    /// The broker-level defaults shown in DescribeConfigs for a topic with no overrides.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let l = &self.log;
        let never = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        let long_max = |v: Option<u64>| v.map_or(i64::MAX.to_string(), |v| v.to_string());
        let mut d = BTreeMap::from([
            (
                "cleanup.policy".into(),
                cleanup_policy_text(l.cleanup).into(),
            ),
            (
                "delete.retention.ms".into(),
                l.compaction.delete_retention_ms.to_string(),
            ),
            (
                "min.compaction.lag.ms".into(),
                l.compaction.min_lag_ms.to_string(),
            ),
            (
                "max.compaction.lag.ms".into(),
                long_max(l.compaction.max_lag_ms),
            ),
            (
                "min.cleanable.dirty.ratio".into(),
                l.compaction.min_dirty_ratio.get().to_string(),
            ),
            ("flush.messages".into(), long_max(l.flush_messages)),
            ("flush.ms".into(), long_max(l.flush_ms)),
            (
                "index.interval.bytes".into(),
                l.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes".into(), l.max_message_bytes.to_string()),
            ("message.timestamp.type".into(), "CreateTime".into()),
            (
                "min.insync.replicas".into(),
                self.min_insync_replicas.to_string(),
            ),
            ("retention.bytes".into(), never(l.retention_bytes)),
            ("retention.ms".into(), never(l.retention_ms)),
            ("segment.bytes".into(), l.segment_bytes.to_string()),
            ("segment.ms".into(), long_max(l.segment_ms)),
        ]);
        for (k, v) in self.compression.topic_defaults() {
            d.insert(k.into(), v);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_properties() {
        let mut c = ServerConfig::default();
        c.load_properties(
            "server.properties",
            "# comment\nlisteners=PLAINTEXT://127.0.0.1:19092\nlog.dirs=/tmp/x,/tmp/y\n\
             num.partitions=3\nlog.retention.hours=1\nlog.flush.interval.messages=10\n\
             auto.create.topics.enable=false\nsome.unknown=1\n",
        )
        .expect("valid");
        assert_eq!(
            c.listeners.resolve().expect("resolves")[0].bind.port(),
            19092
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log.retention_ms, Some(3_600_000));
        assert_eq!(c.log.flush_messages, Some(10));
        assert!(!c.auto_create_topics);
        assert_eq!(c.unknown_keys, vec!["some.unknown".to_string()]);
    }

    #[test]
    fn refuses_bad_values() {
        let mut c = ServerConfig::default();
        let e = c.set("num.partitions", "zero").expect_err("bad");
        assert!(e.to_string().contains("num.partitions"), "{e}");
        assert!(c.set("log.segment.bytes", "5").is_err());
        assert!(c.set("auto.create.topics.enable", "yes").is_err());
        assert!(c.load_properties("f", "novalue\n").is_err());
        assert!(c.set("sluice.hot.cache.shard.bytes", "-1").is_err());
        c.set("sluice.hot.cache.shard.bytes", "1048576")
            .expect("valid");
        assert_eq!(c.hot_cache_shard_bytes, 1 << 20);
        assert!(c.set("sluice.write.buffer.shard.bytes", "4096").is_err());
        c.set("sluice.write.buffer.shard.bytes", "1048576")
            .expect("valid");
        assert_eq!(c.write_buffer_shard_bytes, 1 << 20);
    }

    #[test]
    fn per_listener_keys_replace_the_broker_wide_ones_for_their_listener() {
        let mut c = ServerConfig::default();
        c.set(
            "listener.name.partner.ssl.keystore.location",
            "/k/partner.pem",
        )
        .expect("valid");
        c.set("ssl.keystore.location", "/k/broker.pem")
            .expect("valid");
        c.set("ssl.client.auth", "requested").expect("valid");
        c.set("listener.name.PARTNER.ssl.client.auth", "required")
            .expect("valid");
        c.set(
            "listener.name.scram.sasl.enabled.mechanisms",
            "SCRAM-SHA-512",
        )
        .expect("valid");
        let partner = c.tls_for("PARTNER").expect("keys");
        assert_eq!(partner.key, PemSource::File("/k/partner.pem".into()));
        assert_eq!(partner.client_auth, ClientAuth::Required);
        let other = c.tls_for("SSL").expect("keys");
        assert_eq!(other.key, PemSource::File("/k/broker.pem".into()));
        assert_eq!(other.client_auth, ClientAuth::Requested);
        assert_eq!(c.sasl_mechanisms_for("SCRAM"), vec!["SCRAM-SHA-512"]);
        assert_eq!(c.sasl_mechanisms_for("SASL_SSL"), c.sasl.mechanisms);
        let e = c
            .set("listener.name.partner.ssl.client.auth", "sometimes")
            .expect_err("bad value");
        assert!(
            e.to_string()
                .contains("listener.name.partner.ssl.client.auth"),
            "{e}"
        );
        assert!(c
            .set("listener.name.x.sasl.enabled.mechanisms", "GSSAPI")
            .is_err());
        assert!(c.unknown_keys.is_empty());
    }

    #[test]
    fn parses_cpu_lists() {
        let mut c = ServerConfig::default();
        c.set("sluice.cpus", "0, 2-4,7").expect("valid");
        assert_eq!(c.cpus, vec![0, 2, 3, 4, 7]);
        c.set("sluice.cpus", "").expect("empty clears");
        assert!(c.cpus.is_empty());
        assert!(c.set("sluice.cpus", "3-1").is_err());
        assert!(c.set("sluice.cpus", "a").is_err());
    }
}
