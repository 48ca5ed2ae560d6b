//! `sluice topic ...`: kafka-topics.sh.

use clap::Subcommand;
use serde::Serialize;
use sluice_tools::admin::{ConfigChange, ConfigValue, TopicDescription, RESOURCE_TOPIC};
use sluice_tools::ClientError;

use crate::out::{self, parse_kv, CliError};
use crate::Global;

/// UNKNOWN_TOPIC_OR_PARTITION
const UNKNOWN_TOPIC: i16 = 3;

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create topics
    Create {
        /// Topic names
        topics: Vec<String>,
        /// Topic name (kafka-topics.sh spelling)
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flags: Vec<String>,
        /// Partitions (default: the broker's num.partitions)
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (default: the broker's default)
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config, key=value (repeatable)
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
        config: Vec<(String, String)>,
        /// Succeed if the topic already exists
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics
    List {
        /// Also list internal topics
        #[arg(long)]
        include_internal: bool,
    },
    /// Describe topics (all when none is named): partitions, leaders, replicas, ISR, configs
    Describe {
        topics: Vec<String>,
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flags: Vec<String>,
        /// Show every config, defaults included, with its source
        #[arg(short, long)]
        all_configs: bool,
    },
    /// Delete topics
    Delete {
        topics: Vec<String>,
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flags: Vec<String>,
        /// Succeed if a topic does not exist
        #[arg(long)]
        if_exists: bool,
    },
    /// Set or delete topic configs
    AlterConfig {
        topic: Option<String>,
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flag: Option<String>,
        /// key=value to set (repeatable)
        #[arg(short, long = "set", value_name = "KEY=VALUE", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Config to delete, back to its default (repeatable)
        #[arg(short, long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Add partitions to a topic
    AddPartitions {
        topic: Option<String>,
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flag: Option<String>,
        /// Partitions to add
        #[arg(
            short,
            long,
            conflicts_with = "total",
            required_unless_present = "total"
        )]
        num: Option<i32>,
        /// Partition count to grow to (kafka-topics.sh --alter --partitions)
        #[arg(long, alias = "partitions")]
        total: Option<i32>,
    },
}

pub fn run(g: &Global, cmd: TopicCmd) -> Result<(), CliError> {
    match cmd {
        TopicCmd::Create {
            topics,
            topic_flags,
            partitions,
            replication_factor,
            config,
            if_not_exists,
        } => create(
            g,
            out::topics(topics, topic_flags),
            partitions,
            replication_factor,
            &config,
            if_not_exists,
        ),
        TopicCmd::List { include_internal } => list(g, include_internal),
        TopicCmd::Describe {
            topics,
            topic_flags,
            all_configs,
        } => describe(g, out::topics(topics, topic_flags), all_configs),
        TopicCmd::Delete {
            topics,
            topic_flags,
            if_exists,
        } => delete(g, out::topics(topics, topic_flags), if_exists),
        TopicCmd::AlterConfig {
            topic,
            topic_flag,
            set,
            delete,
        } => alter_config(g, &out::one_topic(topic, topic_flag)?, set, delete),
        TopicCmd::AddPartitions {
            topic,
            topic_flag,
            num,
            total,
        } => add_partitions(g, &out::one_topic(topic, topic_flag)?, num, total),
    }
}

#[derive(Serialize)]
struct Created {
    topic: String,
    created: bool,
}

fn create(
    g: &Global,
    topics: Vec<String>,
    partitions: i32,
    replication_factor: i16,
    config: &[(String, String)],
    if_not_exists: bool,
) -> Result<(), CliError> {
    if topics.is_empty() {
        return Err(CliError::usage("a topic is required (TOPIC or --topic)"));
    }
    if partitions == 0 || partitions < -1 {
        return Err(CliError::usage(format!(
            "--partitions must be at least 1, got {partitions}"
        )));
    }
    if replication_factor == 0 || replication_factor < -1 {
        return Err(CliError::usage(format!(
            "--replication-factor must be at least 1, got {replication_factor}"
        )));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    let configs: Vec<(&str, &str)> = config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut done = Vec::new();
    for t in &topics {
        let created = client.create_topic(t, partitions, replication_factor, &configs)?;
        if !created && !if_not_exists {
            return Err(CliError::failed(format!("topic '{t}' already exists")));
        }
        if !g.json() {
            if created {
                out::print(&format!("Created topic {t}.\n"))?;
            } else {
                out::print(&format!("Topic {t} already exists.\n"))?;
            }
        }
        done.push(Created {
            topic: t.clone(),
            created,
        });
    }
    if g.json() {
        out::print_json(&done)?;
    }
    Ok(())
}

fn list(g: &Global, include_internal: bool) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
    let md = client.cluster_metadata(None)?;
    let topics: Vec<&TopicDescription> = md
        .topics
        .iter()
        .filter(|t| include_internal || !(t.internal || t.name.starts_with("__")))
        .collect();
    if g.json() {
        #[derive(Serialize)]
        struct Listed<'a> {
            name: &'a str,
            partitions: usize,
            replication_factor: usize,
            internal: bool,
        }
        let v: Vec<Listed> = topics
            .iter()
            .map(|t| Listed {
                name: &t.name,
                partitions: t.partitions.len(),
                replication_factor: t.replication_factor(),
                internal: t.internal,
            })
            .collect();
        return out::print_json(&v);
    }
    let mut s = String::new();
    for t in topics {
        s.push_str(&t.name);
        s.push('\n');
    }
    out::print(&s)
}

#[derive(Serialize)]
struct Described {
    #[serde(flatten)]
    topic: TopicDescription,
    partition_count: usize,
    replication_factor: usize,
    configs: Vec<ConfigValue>,
}

fn ids(v: &[i32]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(g: &Global, topics: Vec<String>, all_configs: bool) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
    let md = client.cluster_metadata(if topics.is_empty() {
        None
    } else {
        Some(&topics)
    })?;
    let mut described = Vec::new();
    for name in &topics {
        match md.topics.iter().find(|t| &t.name == name) {
            None => return Err(out::unknown_topic(name)),
            Some(t) if t.error_code == UNKNOWN_TOPIC => return Err(out::unknown_topic(name)),
            Some(_) => {}
        }
    }
    for t in md.topics {
        if t.error_code != 0 {
            return Err(CliError::Client(ClientError::Kafka {
                what: format!("describing topic {}", t.name),
                code: t.error_code,
                name: sluice_tools::client::error_name(t.error_code),
                message: None,
            }));
        }
        let configs = match client.describe_configs(RESOURCE_TOPIC, &t.name) {
            Ok(c) => c,
            Err(ClientError::Unsupported { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let configs: Vec<ConfigValue> = configs
            .into_iter()
            .filter(|c| all_configs || !c.is_default())
            .collect();
        described.push(Described {
            partition_count: t.partitions.len(),
            replication_factor: t.replication_factor(),
            topic: t,
            configs,
        });
    }
    if g.json() {
        return out::print_json(&described);
    }
    let mut s = String::new();
    for d in &described {
        let t = &d.topic;
        let configs: Vec<String> = d
            .configs
            .iter()
            .map(|c| {
                let v = if c.sensitive {
                    "<sensitive>".to_string()
                } else {
                    c.value.clone().unwrap_or_else(|| "null".into())
                };
                if all_configs {
                    format!("{}={} ({})", c.name, v, c.source_name())
                } else {
                    format!("{}={}", c.name, v)
                }
            })
            .collect();
        s.push_str(&format!("Topic: {}", t.name));
        if let Some(id) = &t.id {
            s.push_str(&format!("\tTopicId: {id}"));
        }
        s.push_str(&format!(
            "\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}\n",
            d.partition_count,
            d.replication_factor,
            configs.join(",")
        ));
        for p in &t.partitions {
            let leader = if p.leader < 0 {
                "none".to_string()
            } else {
                p.leader.to_string()
            };
            s.push_str(&format!(
                "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                t.name,
                p.partition,
                leader,
                ids(&p.replicas),
                ids(&p.isr)
            ));
            if !p.offline_replicas.is_empty() {
                s.push_str(&format!("\tOffline: {}", ids(&p.offline_replicas)));
            }
            s.push('\n');
        }
    }
    out::print(&s)
}

fn delete(g: &Global, topics: Vec<String>, if_exists: bool) -> Result<(), CliError> {
    if topics.is_empty() {
        return Err(CliError::usage("a topic is required (TOPIC or --topic)"));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    let results = client.delete_topics(&topics)?;
    #[derive(Serialize)]
    struct Deleted {
        topic: String,
        deleted: bool,
    }
    let mut done = Vec::new();
    for (name, code, message) in results {
        match code {
            0 => done.push(Deleted {
                topic: name,
                deleted: true,
            }),
            UNKNOWN_TOPIC if if_exists => done.push(Deleted {
                topic: name,
                deleted: false,
            }),
            UNKNOWN_TOPIC => return Err(out::unknown_topic(&name)),
            code => {
                return Err(CliError::Client(ClientError::Kafka {
                    what: format!("deleting topic {name}"),
                    code,
                    name: sluice_tools::client::error_name(code),
                    message,
                }))
            }
        }
    }
    if g.json() {
        return out::print_json(&done);
    }
    let mut s = String::new();
    for d in done {
        if d.deleted {
            s.push_str(&format!("Deleted topic {}.\n", d.topic));
        } else {
            s.push_str(&format!("Topic {} does not exist.\n", d.topic));
        }
    }
    out::print(&s)
}

fn alter_config(
    g: &Global,
    topic: &str,
    set: Vec<(String, String)>,
    delete: Vec<String>,
) -> Result<(), CliError> {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give --set KEY=VALUE and/or --delete KEY",
        ));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    out::topic_partitions(&mut client, topic)?;
    let changes: Vec<ConfigChange> = set
        .into_iter()
        .map(|(k, v)| ConfigChange::Set(k, v))
        .chain(delete.into_iter().map(ConfigChange::Delete))
        .collect();
    client.alter_configs_incremental(RESOURCE_TOPIC, topic, &changes)?;
    if g.json() {
        let configs: Vec<ConfigValue> = client
            .describe_configs(RESOURCE_TOPIC, topic)?
            .into_iter()
            .filter(|c| !c.is_default())
            .collect();
        #[derive(Serialize)]
        struct Altered<'a> {
            topic: &'a str,
            configs: Vec<ConfigValue>,
        }
        return out::print_json(&Altered { topic, configs });
    }
    out::print(&format!("Completed updating config for topic {topic}.\n"))
}

fn add_partitions(
    g: &Global,
    topic: &str,
    num: Option<i32>,
    total: Option<i32>,
) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
    let current = out::topic_partitions(&mut client, topic)?.len() as i32;
    let target = match (num, total) {
        (Some(n), _) if n < 1 => {
            return Err(CliError::usage(format!(
                "--num must be at least 1, got {n}"
            )))
        }
        (Some(n), _) => current + n,
        (None, Some(t)) if t <= current => {
            return Err(CliError::usage(format!(
                "topic '{topic}' already has {current} partitions; --total must be larger, got {t}"
            )))
        }
        (None, Some(t)) => t,
        (None, None) => return Err(CliError::usage("give --num N or --total N")),
    };
    client.create_partitions(topic, target)?;
    if g.json() {
        #[derive(Serialize)]
        struct Grown<'a> {
            topic: &'a str,
            previous: i32,
            partitions: i32,
        }
        return out::print_json(&Grown {
            topic,
            previous: current,
            partitions: target,
        });
    }
    out::print(&format!(
        "Topic {topic} now has {target} partitions (was {current}).\n"
    ))
}
