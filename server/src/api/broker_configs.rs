//! BROKER config resources (type 4) of DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs: this node's static configuration (server.properties and the
//! command line), described read-only. Named by this node's id, or "" for the cluster-wide
//! dynamic defaults, of which sluice has none; altering them answers POLICY_VIOLATION.

use std::path::Path;

use super::codes;
use super::configs::{
    broker_key, builtin, topic_defaults, ConfigEntry, SOURCE_DEFAULT, SOURCE_STATIC_BROKER,
    TOPIC_CONFIGS, TYPE_BOOLEAN, TYPE_DOUBLE, TYPE_INT, TYPE_LIST, TYPE_LONG, TYPE_STRING,
};
use super::topics::TopicError;
use crate::config::{format_endpoint, ServerConfig};
use crate::shard::BrokerShared;

/// Resolves a BROKER resource name: `Ok(true)` for this node, `Ok(false)` for "" (the
/// cluster-wide dynamic defaults), INVALID_REQUEST for anything else (Kafka's messages).
pub(super) fn broker_target(config: &ServerConfig, name: &str) -> Result<bool, TopicError> {
    if name.is_empty() {
        return Ok(false);
    }
    let id: i32 = name.parse().map_err(|_| {
        TopicError(
            codes::INVALID_REQUEST,
            format!("Broker id must be an integer, but it is: {name}"),
        )
    })?;
    if id != config.node_id {
        return Err(TopicError(
            codes::INVALID_REQUEST,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                config.node_id
            ),
        ));
    }
    Ok(true)
}

pub(super) fn absolute(dir: &Path) -> String {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// log.cleaner.io.max.bytes.per.second as Kafka prints it (its default is Double.MAX_VALUE).
fn io_rate(c: &ServerConfig) -> String {
    c.cleaner
        .io_max_bytes_per_sec
        .map_or("1.7976931348623157E308".to_string(), |r| format!("{r}.0"))
}

/// The broker's (static, read-only) configs.
fn validation(c: &ServerConfig) -> &'static str {
    if c.compression.full_validation {
        "full"
    } else {
        "framing"
    }
}

pub(super) fn broker_entries(shared: &BrokerShared) -> Vec<ConfigEntry> {
    let c = &shared.config;
    let d = builtin();
    // (name, value, built-in default, type, doc)
    let mut rows: Vec<(String, String, String, i8, &'static str)> = vec![
        (
            "node.id".into(),
            c.node_id.to_string(),
            d.node_id.to_string(),
            TYPE_INT,
            "The node id of this broker.",
        ),
        (
            "broker.id".into(),
            c.node_id.to_string(),
            d.node_id.to_string(),
            TYPE_INT,
            "The node id of this broker.",
        ),
        (
            "process.roles".into(),
            "broker,controller".into(),
            "broker,controller".into(),
            TYPE_LIST,
            "sluice is a combined broker and controller.",
        ),
        (
            "listeners".into(),
            c.listeners.bind_text(),
            d.listeners.bind_text(),
            TYPE_LIST,
            "The listeners the broker binds (NAME://host:port).",
        ),
        (
            "log.dirs".into(),
            absolute(&c.data_dir),
            absolute(&d.data_dir),
            TYPE_LIST,
            "The directory holding the partition logs.",
        ),
        (
            "num.partitions".into(),
            c.num_partitions.to_string(),
            d.num_partitions.to_string(),
            TYPE_INT,
            "Default partition count of new topics.",
        ),
        (
            "default.replication.factor".into(),
            "1".into(),
            "1".into(),
            TYPE_INT,
            "Replication factor of new topics (a single node keeps one replica).",
        ),
        (
            "auto.create.topics.enable".into(),
            c.auto_create_topics.to_string(),
            d.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
            "Create a topic when a client asks for an unknown one.",
        ),
        (
            "socket.request.max.bytes".into(),
            c.socket_request_max_bytes.to_string(),
            d.socket_request_max_bytes.to_string(),
            TYPE_INT,
            "The largest request frame accepted.",
        ),
        (
            "log.retention.check.interval.ms".into(),
            c.retention_check_ms.to_string(),
            d.retention_check_ms.to_string(),
            TYPE_LONG,
            "How often retention runs.",
        ),
        (
            "log.cleaner.enable".into(),
            c.cleaner.enable.to_string(),
            d.cleaner.enable.to_string(),
            TYPE_BOOLEAN,
            "Run the log cleaner (one per shard) for compacted topics.",
        ),
        (
            "log.cleaner.io.max.bytes.per.second".into(),
            io_rate(c),
            io_rate(d),
            TYPE_DOUBLE,
            "The cleaners' read plus write budget, shared by the shards.",
        ),
        (
            "log.cleaner.dedupe.buffer.size".into(),
            c.cleaner.dedupe_buffer_bytes.to_string(),
            d.cleaner.dedupe_buffer_bytes.to_string(),
            TYPE_LONG,
            "Memory for the cleaners' key-to-offset maps, shared by the shards.",
        ),
        (
            "log.cleaner.backoff.ms".into(),
            c.cleaner.backoff_ms.to_string(),
            d.cleaner.backoff_ms.to_string(),
            TYPE_LONG,
            "How long a shard's cleaner sleeps when no log needs cleaning.",
        ),
        (
            "sluice.cores".into(),
            c.cores.to_string(),
            d.cores.to_string(),
            TYPE_INT,
            "Shards (one glommio executor per core).",
        ),
        (
            "sluice.fetch.zero.copy".into(),
            c.fetch_zero_copy.to_string(),
            d.fetch_zero_copy.to_string(),
            TYPE_BOOLEAN,
            "Send cold fetch data with sendfile(2).",
        ),
        (
            crate::compression::VALIDATION_KEY.into(),
            validation(c).into(),
            validation(d).into(),
            TYPE_STRING,
            "framing: compressed batches stored as sent have their codec framing walked; full: \
             also decompressed and every record parsed.",
        ),
    ];
    // the log defaults, under their broker-level names
    let now = topic_defaults(c);
    let builtin = topic_defaults(d);
    for (topic_key, ty, doc) in TOPIC_CONFIGS {
        let (Some(bk), Some(v), Some(b)) = (
            broker_key(topic_key),
            now.get(*topic_key),
            builtin.get(*topic_key),
        ) else {
            continue;
        };
        rows.push((bk.to_string(), v.clone(), b.clone(), *ty, doc));
    }
    let mut entries: Vec<ConfigEntry> = rows
        .into_iter()
        .map(|(name, value, builtin, config_type, doc)| {
            let source = if value == builtin {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            ConfigEntry {
                synonyms: vec![(name.clone(), Some(value.clone()), source)],
                name,
                value: Some(value),
                source,
                read_only: true,
                config_type,
                doc: Some(doc),
            }
        })
        .collect();
    let advertised = shared
        .endpoints()
        .iter()
        .map(|e| format_endpoint(&e.name, &e.host, e.port))
        .collect::<Vec<_>>()
        .join(",");
    let source = if !c.listeners.advertised.is_empty() {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    };
    entries.push(ConfigEntry {
        name: "advertised.listeners".into(),
        value: Some(advertised.clone()),
        source,
        read_only: true,
        config_type: TYPE_LIST,
        doc: Some("The addresses given to clients, per listener (default: the bound ones)."),
        synonyms: vec![("advertised.listeners".into(), Some(advertised), source)],
    });
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// Broker configs are static here: an empty change is a no-op, anything else is refused.
pub(super) fn alter_broker(
    config: &ServerConfig,
    name: &str,
    keys: &[String],
) -> Result<(), TopicError> {
    broker_target(config, name)?;
    if keys.is_empty() {
        return Ok(());
    }
    Err(TopicError(
        codes::POLICY_VIOLATION,
        format!(
            "broker configs are read-only in sluice (cannot update {} dynamically): set them in \
             server.properties and restart, or alter the topic's configs instead",
            keys.join(", ")
        ),
    ))
}
