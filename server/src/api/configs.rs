//! Config administration: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, answered
//! the way a single-node Kafka (KRaft, broker and controller in one) answers them.
//!
//! Config resources:
//! - TOPIC (2): the catalog's overrides over the broker's log defaults. Changes are persisted
//!   with [`Catalog::update`](crate::catalog::Catalog::update) before they are acknowledged,
//!   then pushed to the live logs on every shard that owns a partition of the topic.
//! - BROKER (4), named by this node's id (or "" for the cluster-wide defaults, of which there
//!   are none): described from the static configuration. Broker configs are read-only here
//!   (server.properties is the only source), so altering them answers POLICY_VIOLATION.
//! - GROUP (32): a group's dynamic configs (KIP-848 keys) over the broker's `group.consumer.*`
//!   defaults, validated against its bounds and stored durably (`api::group_configs`,
//!   `crate::group::configs`).
//! - Any other resource type answers INVALID_REQUEST.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::OnceLock;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::LogConfig;

use super::admin::{check_topic_name, refuse_internal, unknown_topic};
pub(super) use super::broker_configs::absolute;
use super::broker_configs::{alter_broker, broker_entries, broker_target};
use super::codes;
use super::topics::TopicError;
use crate::catalog::validate_configs;
use crate::config::{apply_topic_config, ConfigError, ServerConfig, TOPIC_KEYS};
use crate::shard::{BrokerShared, Shard};

/// ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;

/// DescribeConfigs config sources.
pub(super) const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub(super) const SOURCE_STATIC_BROKER: i8 = 4;
pub(super) const SOURCE_DEFAULT: i8 = 5;

/// DescribeConfigs config types (v3+).
pub(super) const TYPE_BOOLEAN: i8 = 1;
pub(super) const TYPE_STRING: i8 = 2;
pub(super) const TYPE_INT: i8 = 3;
pub(super) const TYPE_LONG: i8 = 5;
pub(super) const TYPE_DOUBLE: i8 = 6;
pub(super) const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Type and documentation of every topic config sluice knows.
pub(super) const TOPIC_CONFIGS: &[(&str, i8, &str)] = &[
    (
        "cleanup.policy",
        TYPE_LIST,
        "delete (retention.ms / retention.bytes remove old segments), compact (the log cleaner \
         keeps the latest record per key; keyless records are refused) or compact,delete.",
    ),
    (
        "compression.gzip.level",
        TYPE_INT,
        "gzip level (1-9) when the broker compresses for compression.type=gzip.",
    ),
    (
        "compression.lz4.level",
        TYPE_INT,
        "lz4 level (1-17) when the broker compresses for compression.type=lz4.",
    ),
    (
        "compression.type",
        TYPE_STRING,
        "The codec batches are stored in: producer (as sent), uncompressed, gzip, snappy, lz4 \
         or zstd (the broker recompresses batches in another codec).",
    ),
    (
        "compression.zstd.level",
        TYPE_INT,
        "zstd level (-131072-22) when the broker compresses for compression.type=zstd.",
    ),
    (
        "delete.retention.ms",
        TYPE_LONG,
        "Compacted topics: how long a tombstone (and a removable transaction marker) stays \
         after the cleaner first kept it.",
    ),
    (
        "flush.messages",
        TYPE_LONG,
        "fdatasync the log once this many messages are unsynced.",
    ),
    (
        "flush.ms",
        TYPE_LONG,
        "fdatasync data that has stayed unsynced this many milliseconds.",
    ),
    (
        "index.interval.bytes",
        TYPE_INT,
        "Bytes of log between two entries of the sparse offset index.",
    ),
    (
        "max.compaction.lag.ms",
        TYPE_LONG,
        "Compacted topics: clean a record at the latest this long after it was written, \
         whatever the dirty ratio.",
    ),
    (
        "max.message.bytes",
        TYPE_INT,
        "The largest record batch the topic accepts.",
    ),
    (
        "message.timestamp.type",
        TYPE_STRING,
        "CreateTime or LogAppendTime.",
    ),
    (
        "min.cleanable.dirty.ratio",
        TYPE_DOUBLE,
        "Compacted topics: clean once this fraction of the cleanable log is not yet cleaned.",
    ),
    (
        "min.compaction.lag.ms",
        TYPE_LONG,
        "Compacted topics: records younger than this are not compacted.",
    ),
    (
        "min.insync.replicas",
        TYPE_INT,
        "Replicas that must acknowledge an acks=all write (a single node always has 1).",
    ),
    (
        "preallocate",
        TYPE_BOOLEAN,
        "Preallocate segment files on disk.",
    ),
    (
        "retention.bytes",
        TYPE_LONG,
        "Delete the oldest segments while a partition is larger than this (-1: no limit).",
    ),
    (
        "retention.ms",
        TYPE_LONG,
        "Delete segments whose newest record is older than this (-1: keep forever).",
    ),
    (
        "segment.bytes",
        TYPE_INT,
        "Size at which the active segment file is rolled.",
    ),
    (
        "segment.ms",
        TYPE_LONG,
        "Age at which a non-empty active segment is rolled.",
    ),
];

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn topic_config_type(key: &str) -> Option<i8> {
    TOPIC_CONFIGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, t, _)| *t)
}

fn topic_config_doc(key: &str) -> Option<&'static str> {
    TOPIC_CONFIGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, d)| *d)
}

/// The broker-level key that sets a topic config's default.
pub(super) fn broker_key(topic_key: &str) -> Option<&'static str> {
    if topic_key == "preallocate" {
        return Some("log.preallocate");
    }
    TOPIC_KEYS
        .iter()
        .find(|(k, _)| *k == topic_key)
        .map(|(_, b)| *b)
}

/// The configuration sluice starts with when nothing is set (what DEFAULT_CONFIG means).
/// Computed once: `ServerConfig::default()` probes the CPU count.
pub(super) fn builtin() -> &'static ServerConfig {
    static BUILTIN: OnceLock<ServerConfig> = OnceLock::new();
    BUILTIN.get_or_init(ServerConfig::default)
}

/// Every topic config's value when a topic does not override it.
pub(super) fn topic_defaults(config: &ServerConfig) -> BTreeMap<String, String> {
    let mut d = config.topic_defaults();
    d.insert(
        "preallocate".into(),
        (config.log.preallocate_bytes > 0).to_string(),
    );
    d
}

fn unsupported_resource(resource_type: i8) -> TopicError {
    TopicError(
        codes::INVALID_REQUEST,
        format!(
            "Unsupported resource type: {resource_type} (sluice handles TOPIC 2, BROKER 4 and GROUP 32)"
        ),
    )
}

/// Resources named more than once in one request (Kafka refuses each occurrence).
fn duplicated<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> BTreeSet<(i8, String)> {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for (t, n) in resources {
        if !seen.insert((t, n.to_string())) {
            dups.insert((t, n.to_string()));
        }
    }
    dups
}

fn duplicate_resource() -> TopicError {
    TopicError(
        codes::INVALID_REQUEST,
        "Each resource must appear at most once.".into(),
    )
}

// ---------------------------------------------------------------------------------------------
// DescribeConfigs

/// One described config.
pub(super) struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    pub doc: Option<&'static str>,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(String, Option<String>, i8)>,
}

impl ConfigEntry {
    fn encode(self, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
        let synonyms = if synonyms {
            self.synonyms
                .into_iter()
                .map(|(n, v, src)| {
                    DescribeConfigsSynonym::default()
                        .with_name(s(n))
                        .with_value(v.map(s))
                        .with_source(src)
                })
                .collect()
        } else {
            Vec::new()
        };
        DescribeConfigsResourceResult::default()
            .with_name(s(self.name))
            .with_value(self.value.map(s))
            .with_read_only(self.read_only)
            .with_config_source(self.source)
            .with_is_sensitive(false)
            .with_synonyms(synonyms)
            .with_config_type(self.config_type)
            .with_documentation(if documentation { self.doc.map(s) } else { None })
    }
}

/// Every config of a topic: its overrides (DYNAMIC_TOPIC_CONFIG) and the broker's defaults
/// (STATIC_BROKER_CONFIG when server.properties changed them, DEFAULT_CONFIG otherwise).
fn topic_entries(config: &ServerConfig, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    let defaults = topic_defaults(config);
    let builtin = topic_defaults(builtin());
    let keys: BTreeSet<&String> = defaults.keys().chain(overrides.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let over = overrides.get(key);
            let default = defaults.get(key);
            let built = builtin.get(key);
            let static_set = default.is_some() && default != built;
            let mut synonyms = Vec::new();
            if let Some(v) = over {
                synonyms.push((key.clone(), Some(v.clone()), SOURCE_DYNAMIC_TOPIC));
            }
            if let Some(bk) = broker_key(key) {
                if static_set {
                    synonyms.push((bk.to_string(), default.cloned(), SOURCE_STATIC_BROKER));
                }
                if let Some(b) = built {
                    synonyms.push((bk.to_string(), Some(b.clone()), SOURCE_DEFAULT));
                }
            }
            let (value, source) = match over {
                Some(v) => (Some(v.clone()), SOURCE_DYNAMIC_TOPIC),
                None if static_set => (default.cloned(), SOURCE_STATIC_BROKER),
                None => (default.cloned(), SOURCE_DEFAULT),
            };
            ConfigEntry {
                name: key.clone(),
                value,
                source,
                read_only: false,
                config_type: topic_config_type(key).unwrap_or(TYPE_STRING),
                doc: topic_config_doc(key),
                synonyms,
            }
        })
        .collect()
}

fn describe_resource(
    shared: &BrokerShared,
    resource_type: i8,
    name: &str,
) -> Result<Vec<ConfigEntry>, TopicError> {
    match resource_type {
        RESOURCE_TOPIC => {
            check_topic_name(name)?;
            let overrides = shared
                .catalog
                .read()
                .topics
                .get(name)
                .map(|t| t.configs.clone())
                .ok_or_else(|| unknown_topic(name))?;
            Ok(topic_entries(&shared.config, &overrides))
        }
        RESOURCE_BROKER => {
            if broker_target(&shared.config, name)? {
                Ok(broker_entries(shared))
            } else {
                // cluster-wide dynamic broker defaults: sluice has none
                Ok(Vec::new())
            }
        }
        RESOURCE_GROUP => super::group_configs::describe(shared, name),
        other => Err(unsupported_resource(other)),
    }
}

pub fn describe_configs(shard: &Rc<Shard>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let wanted: Option<BTreeSet<String>> = r
            .configuration_keys
            .as_ref()
            .map(|ks| ks.iter().map(|k| k.to_string()).collect());
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_error_message(None);
        match describe_resource(&shard.shared, r.resource_type, &r.resource_name) {
            Ok(entries) => {
                out = out.with_configs(
                    entries
                        .into_iter()
                        .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
                        .map(|e| e.encode(req.include_synonyms, req.include_documentation))
                        .collect(),
                );
            }
            Err(TopicError(code, msg)) => {
                out = out.with_error_code(code).with_error_message(Some(s(msg)));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

// ---------------------------------------------------------------------------------------------
// AlterConfigs and IncrementalAlterConfigs

fn config_error(e: ConfigError) -> TopicError {
    if let ConfigError::BadValue { key, value, .. } = &e {
        if matches!(
            apply_topic_config(&mut LogConfig::default(), key, value),
            Ok(false)
        ) {
            return TopicError(
                codes::INVALID_CONFIG,
                format!("Unknown topic config name: {key}"),
            );
        }
    }
    TopicError(codes::INVALID_CONFIG, e.to_string())
}

/// The topic's config overrides as the catalog holds them.
fn current_configs(shard: &Shard, name: &str) -> Result<BTreeMap<String, String>, TopicError> {
    shard
        .shared
        .catalog
        .read()
        .topics
        .get(name)
        .map(|t| t.configs.clone())
        .ok_or_else(|| unknown_topic(name))
}

/// Replaces a topic's overrides with `change(current)`: validates, persists, then applies the
/// result to the live logs on every shard owning a partition of the topic.
async fn alter_topic(
    shard: &Rc<Shard>,
    name: &str,
    validate_only: bool,
    change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TopicError>,
) -> Result<(), TopicError> {
    check_topic_name(name)?;
    if shard.shared.is_clustered() {
        refuse_internal(name, "its configs altered")?;
    }
    let checked = |current: &BTreeMap<String, String>| {
        let next = change(current)?;
        validate_configs(&next).map_err(config_error)?;
        Ok::<_, TopicError>(next)
    };
    if validate_only {
        let st = shard.shared.catalog.read();
        let t = st.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        checked(&t.configs)?;
        return Ok(());
    }
    if shard.shared.is_clustered() {
        let current = current_configs(shard, name)?;
        let next = checked(&current)?;
        let cmd = crate::cluster::image::Command::SetTopicConfigs {
            name: name.to_string(),
            configs: next.clone(),
        };
        crate::api::topics::propose_and_wait(shard, cmd, |st| {
            st.topics.get(name).is_some_and(|t| t.configs == next)
        })
        .await?;
        // every broker's reconcile loop applies them to its replicas' logs
        tracing::info!(topic = name, "altered topic configs");
        return Ok(());
    }
    // computed here from what the catalog holds, stored off the reactor if that is still what
    // it holds (else computed again: another alter of the topic landed in between)
    let owners: BTreeSet<usize> = loop {
        let current = current_configs(shard, name)?;
        let next = checked(&current)?;
        let owned = name.to_string();
        let stored = shard
            .shared
            .catalog
            .update_off_reactor(move |st| {
                let t = st
                    .topics
                    .get_mut(&owned)
                    .ok_or_else(|| unknown_topic(&owned))?;
                if t.configs != current {
                    return Ok(None);
                }
                t.configs = next;
                Ok::<_, TopicError>(Some(t.shards.iter().copied().collect()))
            })
            .await?;
        if let Some(owners) = stored {
            break owners;
        }
    };
    for owner in owners {
        let topic = name.to_string();
        shard
            .call(owner, move |s| async move { s.refresh_config(&topic) })
            .await
            .map_err(|e| {
                TopicError(
                    codes::UNKNOWN_SERVER_ERROR,
                    format!(
                        "configs of {name} are stored but shard {owner} did not apply them: {e}"
                    ),
                )
            })?;
    }
    tracing::info!(topic = name, "altered topic configs");
    Ok(())
}

/// The legacy AlterConfigs replaces the whole set; a null value leaves the key unset.
fn legacy_set(
    configs: &[kafka_protocol::messages::alter_configs_request::AlterableConfig],
) -> BTreeMap<String, String> {
    let mut next = BTreeMap::new();
    for c in configs {
        match &c.value {
            Some(v) => next.insert(c.name.to_string(), v.to_string()),
            None => next.remove(c.name.as_str()),
        };
    }
    next
}

pub async fn alter_configs(shard: &Rc<Shard>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let dups = duplicated(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let outcome = if dups.contains(&(r.resource_type, name.clone())) {
            Err(duplicate_resource())
        } else {
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let next = legacy_set(&r.configs);
                    alter_topic(shard, &name, req.validate_only, |_| Ok(next.clone())).await
                }
                RESOURCE_BROKER => {
                    let keys: Vec<String> = r.configs.iter().map(|c| c.name.to_string()).collect();
                    alter_broker(&shard.shared.config, &name, &keys)
                }
                RESOURCE_GROUP => {
                    let next = legacy_set(&r.configs);
                    super::group_configs::alter(shard, &name, req.validate_only, |_| {
                        Ok(next.clone())
                    })
                    .await
                }
                other => Err(unsupported_resource(other)),
            }
        };
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
            .with_error_message(None);
        if let Err(TopicError(code, msg)) = outcome {
            out = out.with_error_code(code).with_error_message(Some(s(msg)));
        }
        responses.push(out);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// One IncrementalAlterConfigs operation.
struct ConfigOp {
    key: String,
    op: i8,
    value: Option<String>,
}

/// Applies incremental operations to a topic's overrides (Kafka's KRaft semantics: SET with a
/// null value and DELETE remove the override; APPEND/SUBTRACT work on the effective value of
/// LIST configs and refuse any other type with INVALID_CONFIG).
fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: &[ConfigOp],
    defaults: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut next = current.clone();
    for ConfigOp { key, op, value } in ops {
        match *op {
            OP_SET => match value {
                Some(v) => {
                    next.insert(key.clone(), v.clone());
                }
                None => {
                    next.remove(key);
                }
            },
            OP_DELETE => {
                next.remove(key);
            }
            OP_APPEND | OP_SUBTRACT => {
                let verb = if *op == OP_APPEND {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                if topic_config_type(key) != Some(TYPE_LIST) {
                    return Err(TopicError(
                        codes::INVALID_CONFIG,
                        format!("Can't {verb} to key {key} because its type is not LIST."),
                    ));
                }
                let base = next
                    .get(key)
                    .or_else(|| defaults.get(key))
                    .cloned()
                    .unwrap_or_default();
                let mut parts: Vec<String> = base
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                for item in value.as_deref().unwrap_or("").split(',') {
                    if item.is_empty() {
                        continue;
                    }
                    if *op == OP_APPEND {
                        if !parts.iter().any(|p| p == item) {
                            parts.push(item.to_string());
                        }
                    } else if let Some(i) = parts.iter().position(|p| p == item) {
                        parts.remove(i);
                    }
                }
                next.insert(key.clone(), parts.join(","));
            }
            other => {
                return Err(TopicError(
                    codes::INVALID_REQUEST,
                    format!("Unknown config operation {other} for key {key}"),
                ))
            }
        }
    }
    Ok(next)
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let dups = duplicated(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let defaults = topic_defaults(&shard.shared.config);
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let ops: Vec<ConfigOp> = r
            .configs
            .iter()
            .map(|c| ConfigOp {
                key: c.name.to_string(),
                op: c.config_operation,
                value: c.value.as_ref().map(|v| v.to_string()),
            })
            .collect();
        let keys: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
        let outcome = if dups.contains(&(r.resource_type, name.clone())) {
            Err(duplicate_resource())
        } else if keys.len() != ops.len() {
            Err(TopicError(
                codes::INVALID_REQUEST,
                "Error due to duplicate config keys".into(),
            ))
        } else if let Some(o) = ops.iter().find(|o| !(OP_SET..=OP_SUBTRACT).contains(&o.op)) {
            Err(TopicError(
                codes::INVALID_REQUEST,
                format!("Unknown config operation {} for key {}", o.op, o.key),
            ))
        } else {
            match r.resource_type {
                RESOURCE_TOPIC => {
                    alter_topic(shard, &name, req.validate_only, |cur| {
                        apply_ops(cur, &ops, &defaults)
                    })
                    .await
                }
                RESOURCE_BROKER => {
                    let keys: Vec<String> = ops.iter().map(|o| o.key.clone()).collect();
                    alter_broker(&shard.shared.config, &name, &keys)
                }
                RESOURCE_GROUP => {
                    super::group_configs::alter(shard, &name, req.validate_only, |cur| {
                        apply_ops(cur, &ops, &defaults)
                    })
                    .await
                }
                other => Err(unsupported_resource(other)),
            }
        };
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
            .with_error_message(None);
        if let Err(TopicError(code, msg)) = outcome {
            out = out.with_error_code(code).with_error_message(Some(s(msg)));
        }
        responses.push(out);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, op: i8, value: Option<&str>) -> ConfigOp {
        ConfigOp {
            key: key.into(),
            op,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn incremental_ops() {
        let defaults = topic_defaults(&ServerConfig::default());
        let cur = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("segment.bytes".to_string(), "4096".to_string()),
        ]);
        let next = apply_ops(
            &cur,
            &[
                op("retention.ms", OP_DELETE, None),
                op("segment.bytes", OP_SET, Some("8192")),
                op("flush.messages", OP_SET, Some("1")),
            ],
            &defaults,
        )
        .expect("valid ops");
        assert_eq!(
            next,
            BTreeMap::from([
                ("flush.messages".to_string(), "1".to_string()),
                ("segment.bytes".to_string(), "8192".to_string()),
            ])
        );
        // SET null removes
        let next = apply_ops(&cur, &[op("retention.ms", OP_SET, None)], &defaults).expect("ok");
        assert!(!next.contains_key("retention.ms"));
        // APPEND works from the default of a LIST config
        let next = apply_ops(
            &cur,
            &[op("cleanup.policy", OP_APPEND, Some("compact"))],
            &defaults,
        )
        .expect("list append");
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = apply_ops(
            &next,
            &[op("cleanup.policy", OP_SUBTRACT, Some("compact"))],
            &defaults,
        )
        .expect("list subtract");
        assert_eq!(next["cleanup.policy"], "delete");
        let e = apply_ops(&cur, &[op("retention.ms", OP_APPEND, Some("1"))], &defaults)
            .expect_err("not a list");
        assert_eq!(e.0, codes::INVALID_CONFIG);
        assert!(e.1.contains("not LIST"), "{}", e.1);
    }

    #[test]
    fn unknown_keys_get_kafkas_message() {
        let bad = BTreeMap::from([("no.such.key".to_string(), "1".to_string())]);
        let e = config_error(validate_configs(&bad).expect_err("unknown key"));
        assert_eq!(e.0, codes::INVALID_CONFIG);
        assert_eq!(e.1, "Unknown topic config name: no.such.key");
        let bad = BTreeMap::from([("segment.bytes".to_string(), "x".to_string())]);
        let e = config_error(validate_configs(&bad).expect_err("bad value"));
        assert!(e.1.contains("segment.bytes"), "{}", e.1);
    }

    #[test]
    fn topic_sources() {
        let mut c = ServerConfig::default();
        c.set("log.retention.ms", "1234").expect("valid");
        let overrides = BTreeMap::from([("segment.bytes".to_string(), "4096".to_string())]);
        let e = topic_entries(&c, &overrides);
        let get = |k: &str| e.iter().find(|x| x.name == k).expect(k);
        assert_eq!(get("segment.bytes").source, SOURCE_DYNAMIC_TOPIC);
        assert_eq!(get("segment.bytes").value.as_deref(), Some("4096"));
        assert_eq!(get("retention.ms").source, SOURCE_STATIC_BROKER);
        assert_eq!(get("retention.ms").value.as_deref(), Some("1234"));
        assert_eq!(get("flush.ms").source, SOURCE_DEFAULT);
        assert_eq!(get("segment.bytes").synonyms[0].2, SOURCE_DYNAMIC_TOPIC);
        assert_eq!(get("segment.bytes").synonyms[1].0, "log.segment.bytes");
    }
}
