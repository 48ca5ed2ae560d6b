//! `sluice records delete`, `sluice log-dirs`, `sluice cluster info`.

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_tools::admin::LogDir;
use sluice_tools::ClientError;

use crate::out::{self, CliError};
use crate::Global;

#[derive(Debug, Subcommand)]
pub enum RecordsCmd {
    /// Delete the records below an offset (moves the log start offset)
    Delete {
        topic: Option<String>,
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flag: Option<String>,
        /// First offset to keep, or `end` to delete everything (the high watermark)
        #[arg(long, alias = "offset", value_name = "OFFSET|end")]
        before: String,
        /// Only these partitions (repeatable; default: all)
        #[arg(short, long)]
        partition: Vec<i32>,
    },
}

#[derive(Debug, Args)]
pub struct LogDirsArgs {
    /// Only these topics (repeatable; default: all)
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Cluster id, controller and brokers
    Info,
}

/// OFFSET_OUT_OF_RANGE
const OFFSET_OUT_OF_RANGE: i16 = 1;

pub fn records(g: &Global, cmd: RecordsCmd) -> Result<(), CliError> {
    let RecordsCmd::Delete {
        topic,
        topic_flag,
        before,
        partition,
    } = cmd;
    let topic = out::one_topic(topic, topic_flag)?;
    let offset: i64 = match before.as_str() {
        "end" | "latest" | "all" => -1,
        n => match n.parse::<i64>() {
            Ok(o) if o >= 0 => o,
            _ => {
                return Err(CliError::usage(format!(
                    "--before must be an offset (0 or more) or `end`, not {n:?}"
                )))
            }
        },
    };
    let mut client = out::connect(&g.bootstrap, "sluice-cli")?;
    let count = out::topic_partitions(&mut client, &topic)?.len();
    let parts: Vec<i32> = if partition.is_empty() {
        (0..count as i32).collect()
    } else {
        for p in &partition {
            out::check_partition(&topic, *p, count)?;
        }
        partition
    };
    let wanted: Vec<(i32, i64)> = parts.iter().map(|p| (*p, offset)).collect();
    let result = match client.delete_records(&topic, &wanted) {
        Ok(r) => r,
        Err(ClientError::Kafka { code, what, .. }) if code == OFFSET_OUT_OF_RANGE => {
            let ends = client.list_offsets(&topic, &parts, -1)?;
            let ends: Vec<String> = ends
                .iter()
                .map(|(p, o)| format!("{topic}-{p}: {o}"))
                .collect();
            return Err(CliError::failed(format!(
                "{what}: offset {offset} is beyond the end of the log (log end offsets: {})",
                ends.join(", ")
            )));
        }
        Err(e) => return Err(e.into()),
    };
    #[derive(Serialize)]
    struct LowWatermark {
        partition: i32,
        low_watermark: i64,
    }
    let mut rows: Vec<LowWatermark> = result
        .into_iter()
        .map(|(p, lw)| LowWatermark {
            partition: p,
            low_watermark: lw,
        })
        .collect();
    rows.sort_by_key(|r| r.partition);
    if g.json() {
        #[derive(Serialize)]
        struct Deleted {
            topic: String,
            partitions: Vec<LowWatermark>,
        }
        return out::print_json(&Deleted {
            topic,
            partitions: rows,
        });
    }
    let mut s = String::from("Records delete operation completed:\n");
    for r in rows {
        s.push_str(&format!(
            "partition: {topic}-{}\tlow_watermark: {}\n",
            r.partition, r.low_watermark
        ));
    }
    out::print(&s)
}

/// Bytes with a binary unit.
fn human(bytes: i64) -> String {
    if bytes < 0 {
        return "-".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn log_dirs(g: &Global, a: LogDirsArgs) -> Result<(), CliError> {
    let mut client = out::connect(&g.bootstrap, "sluice-cli")?;
    let filter = if a.topics.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for t in &a.topics {
            let n = out::topic_partitions(&mut client, t)?.len() as i32;
            v.push((t.clone(), (0..n).collect::<Vec<i32>>()));
        }
        Some(v)
    };
    let dirs = client.describe_log_dirs(filter.as_deref())?;
    if g.json() {
        #[derive(Serialize)]
        struct Broker<'a> {
            broker: String,
            log_dirs: &'a [LogDir],
            total_size: i64,
        }
        let total = dirs.iter().flat_map(|d| &d.topics).map(|t| t.size).sum();
        return out::print_json(&Broker {
            broker: client.addr.to_string(),
            log_dirs: &dirs,
            total_size: total,
        });
    }
    let mut s = String::new();
    for d in &dirs {
        s.push_str(&format!("Log dir: {}", d.dir));
        if d.error_code != 0 {
            s.push_str(&format!(
                " (error: {})",
                sluice_tools::client::error_name(d.error_code)
            ));
        }
        if d.total_bytes >= 0 {
            s.push_str(&format!(
                " (disk: {} total, {} usable)",
                human(d.total_bytes),
                human(d.usable_bytes)
            ));
        }
        s.push_str("\n\n");
        let mut rows = Vec::new();
        for t in &d.topics {
            for p in &t.partitions {
                rows.push(vec![
                    t.topic.clone(),
                    p.partition.to_string(),
                    p.size.to_string(),
                    human(p.size),
                ]);
            }
        }
        s.push_str(&out::table(&["TOPIC", "PARTITION", "SIZE", "HUMAN"], &rows));
        s.push('\n');
        let totals: Vec<Vec<String>> = d
            .topics
            .iter()
            .map(|t| {
                vec![
                    t.topic.clone(),
                    t.partitions.len().to_string(),
                    t.size.to_string(),
                    human(t.size),
                ]
            })
            .collect();
        s.push_str(&out::table(
            &["TOPIC", "PARTITIONS", "SIZE", "HUMAN"],
            &totals,
        ));
        let all: i64 = d.topics.iter().map(|t| t.size).sum();
        s.push_str(&format!("\nTotal: {all} bytes ({})\n", human(all)));
    }
    out::print(&s)
}

pub fn cluster(g: &Global, cmd: ClusterCmd) -> Result<(), CliError> {
    let ClusterCmd::Info = cmd;
    let mut client = out::connect(&g.bootstrap, "sluice-cli")?;
    let c = client.describe_cluster()?;
    let md = client.cluster_metadata(None)?;
    if g.json() {
        #[derive(Serialize)]
        struct Info<'a> {
            cluster_id: Option<&'a str>,
            controller_id: i32,
            brokers: &'a [sluice_tools::admin::BrokerInfo],
            topics: usize,
            partitions: usize,
        }
        return out::print_json(&Info {
            cluster_id: c.cluster_id.as_deref(),
            controller_id: c.controller_id,
            brokers: &c.brokers,
            topics: md.topics.len(),
            partitions: md.topics.iter().map(|t| t.partitions.len()).sum(),
        });
    }
    let mut s = String::new();
    s.push_str("CLUSTER\n=======\n");
    s.push_str(&format!("{}\n\n", c.cluster_id.as_deref().unwrap_or("-")));
    s.push_str("BROKERS\n=======\n");
    let rows: Vec<Vec<String>> = c
        .brokers
        .iter()
        .map(|b| {
            let mut id = b.id.to_string();
            if b.id == c.controller_id {
                id.push('*');
            }
            vec![
                id,
                b.host.clone(),
                b.port.to_string(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    s.push_str(&out::table(&["ID", "HOST", "PORT", "RACK"], &rows));
    s.push_str("\nTOPICS\n======\n");
    let rows: Vec<Vec<String>> = md
        .topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                t.replication_factor().to_string(),
            ]
        })
        .collect();
    s.push_str(&out::table(&["NAME", "PARTITIONS", "REPLICAS"], &rows));
    out::print(&s)
}
