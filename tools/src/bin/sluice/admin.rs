//! `sluice records delete`, `sluice log-dirs`, `sluice cluster info`, `sluice cluster quorum`.

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
    /// The metadata quorum: leader, epoch, high watermark, voters (kafka-metadata-quorum.sh
    /// describe)
    Quorum(QuorumArgs),
}

#[derive(Debug, Args)]
pub struct QuorumArgs {
    /// A summary of the quorum (the default)
    #[arg(long, conflicts_with = "replication")]
    status: bool,
    /// Each voter's and observer's log end offset, lag and last fetch
    #[arg(long)]
    replication: bool,
    /// With --replication: times as "N ms ago"
    #[arg(long)]
    human_readable: bool,
}

/// How long `cluster quorum` waits for a quorum that is between leaders.
const QUORUM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    let mut client = out::connect(g, "sluice-cli")?;
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
pub fn human(bytes: i64) -> String {
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
    let mut client = out::connect(g, "sluice-cli")?;
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
    match cmd {
        ClusterCmd::Info => cluster_info(g),
        ClusterCmd::Quorum(a) => quorum(g, a),
    }
}

fn cluster_info(g: &Global) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
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
    s.push_str("CONTROLLER\n==========\n");
    s.push_str(&format!(
        "{}\n\n",
        out::dash((c.controller_id >= 0).then_some(c.controller_id))
    ));
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

/// A table as Kafka's tools print it (ToolsUtils.prettyPrintTable): every cell padded to its
/// column's width and followed by a tab, the last one too.
fn kafka_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (c, w) in cells.zip(&widths) {
            s.push_str(c);
            s.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(c.chars().count()),
            ));
            s.push('\t');
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `sluice cluster quorum [--status | --replication [--human-readable]]`: the output of
/// kafka-metadata-quorum.sh describe (3.x, voters by id).
fn quorum(g: &Global, a: QuorumArgs) -> Result<(), CliError> {
    if a.human_readable && !a.replication {
        return Err(CliError::usage(
            "--human-readable is only supported along with --replication",
        ));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    let q = client.describe_quorum(QUORUM_WAIT)?;
    let Some(leader) = q.leader().cloned() else {
        return Err(CliError::failed(format!(
            "the metadata quorum's leader {} is not among its voters",
            q.leader_id
        )));
    };
    if a.replication {
        #[derive(Serialize)]
        struct Row {
            node_id: i32,
            log_end_offset: i64,
            lag: i64,
            last_fetch_timestamp: i64,
            last_caught_up_timestamp: i64,
            status: &'static str,
        }
        let followers = q.voters.iter().filter(|v| v.id != q.leader_id);
        let rows: Vec<Row> = std::iter::once((&leader, "Leader"))
            .chain(followers.map(|v| (v, "Follower")))
            .chain(q.observers.iter().map(|o| (o, "Observer")))
            .map(|(r, status)| Row {
                node_id: r.id,
                log_end_offset: r.log_end_offset,
                lag: leader.log_end_offset - r.log_end_offset,
                last_fetch_timestamp: r.last_fetch_timestamp,
                last_caught_up_timestamp: r.last_caught_up_timestamp,
                status,
            })
            .collect();
        if g.json() {
            return out::print_json(&rows);
        }
        let now = now_ms();
        let time = |t: i64| match t {
            -1 => "-1".to_string(),
            t if a.human_readable => format!("{} ms ago", (now - t).max(0)),
            t => t.to_string(),
        };
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.node_id.to_string(),
                    r.log_end_offset.to_string(),
                    r.lag.to_string(),
                    time(r.last_fetch_timestamp),
                    time(r.last_caught_up_timestamp),
                    r.status.to_string(),
                ]
            })
            .collect();
        return out::print(&kafka_table(
            &[
                "NodeId",
                "LogEndOffset",
                "Lag",
                "LastFetchTimestamp",
                "LastCaughtUpTimestamp",
                "Status",
            ],
            &cells,
        ));
    }
    let cluster_id = client.describe_cluster()?.cluster_id.unwrap_or_default();
    let (lag, lag_ms) = q.max_follower_lag().unwrap_or((0, -1));
    let voters: Vec<i32> = q.voters.iter().map(|v| v.id).collect();
    let observers: Vec<i32> = q.observers.iter().map(|o| o.id).collect();
    if g.json() {
        #[derive(Serialize)]
        struct Status<'a> {
            cluster_id: &'a str,
            leader_id: i32,
            leader_epoch: i32,
            high_watermark: i64,
            max_follower_lag: i64,
            max_follower_lag_time_ms: i64,
            current_voters: &'a [i32],
            current_observers: &'a [i32],
            nodes: &'a [sluice_tools::admin::QuorumNode],
        }
        return out::print_json(&Status {
            cluster_id: &cluster_id,
            leader_id: q.leader_id,
            leader_epoch: q.leader_epoch,
            high_watermark: q.high_watermark,
            max_follower_lag: lag,
            max_follower_lag_time_ms: lag_ms,
            current_voters: &voters,
            current_observers: &observers,
            nodes: &q.nodes,
        });
    }
    let ids = |v: &[i32]| {
        let v: Vec<String> = v.iter().map(i32::to_string).collect();
        format!("[{}]", v.join(","))
    };
    out::print(&format!(
        "ClusterId:              {cluster_id}\n\
         LeaderId:               {}\n\
         LeaderEpoch:            {}\n\
         HighWatermark:          {}\n\
         MaxFollowerLag:         {lag}\n\
         MaxFollowerLagTimeMs:   {lag_ms}\n\
         CurrentVoters:          {}\n\
         CurrentObservers:       {}\n",
        q.leader_id,
        q.leader_epoch,
        q.high_watermark,
        ids(&voters),
        ids(&observers),
    ))
}
