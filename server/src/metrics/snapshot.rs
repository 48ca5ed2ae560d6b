//! A scrape: every shard's numbers taken on that shard ([`shard_snapshot`]) and summed into one
//! [`BrokerSnapshot`] on the scraping shard ([`gather`]). The snapshot is what `/metrics`,
//! `/v1/status` and the console's JSON endpoints render.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::ApiKey;
use serde::Serialize;
use sluice_engine::stats::{HistogramSnapshot, LogStats, StorageSnapshot};

use crate::shard::{Shard, TopicPartition};

/// One API's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiSnapshot {
    pub requests: u64,
    /// (error code, count), non-zero codes only.
    pub errors: Vec<(i16, u64)>,
    pub latency: HistogramSnapshot,
}

impl ApiSnapshot {
    fn merge(&mut self, o: &ApiSnapshot) {
        self.requests += o.requests;
        for &(code, n) in &o.errors {
            match self.errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.errors.push((code, n)),
            }
        }
        self.errors.sort_unstable();
        self.latency.merge(&o.latency);
    }
}

/// What [`ShardMetrics`](super::ShardMetrics) counted on one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardCounters {
    pub apis: Vec<(ApiKey, ApiSnapshot)>,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub handler_panics: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub fetch_sendfile_bytes: u64,
    pub fetch_copied_bytes: u64,
    pub bytes_out: Vec<(TopicPartition, u64)>,
}

/// One partition replica hosted by this broker.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub shard: usize,
    #[serde(flatten)]
    pub log: LogStats,
    /// Record bytes fetch responses carried to consumers (summed over the shards that served
    /// them).
    pub bytes_out: u64,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The partition's high watermark when this broker hosts it (else unknown).
    pub log_end: Option<u64>,
    /// `log_end - offset` (at least 0), as `sluice group describe` reports it.
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSnapshot {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub members: u64,
    #[serde(rename = "member_details")]
    pub member_list: Vec<MemberRow>,
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FollowerLag {
    pub topic: String,
    pub partition: i32,
    pub follower: i32,
    /// Messages between this leader's log end and what the follower has fdatasync'd.
    pub lag: u64,
}

/// Everything one shard reports.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub counters: ShardCounters,
    pub storage: StorageSnapshot,
    /// Appended bytes its logs have not handed to the kernel yet (its write budget's use).
    pub write_buffer_bytes: u64,
    pub partitions: Vec<(TopicPartition, LogStats)>,
    pub groups: Vec<GroupSnapshot>,
    pub followers: Vec<(TopicPartition, i32, u64)>,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub leader_elections: u64,
}

/// Runs on the shard it describes.
pub fn shard_snapshot(shard: &Shard) -> ShardSnapshot {
    let r = &shard.replication;
    ShardSnapshot {
        counters: shard.metrics.snapshot(),
        storage: shard.storage_stats.snapshot(),
        write_buffer_bytes: shard.write_budget.used() as u64,
        partitions: shard
            .logs()
            .into_iter()
            .map(|(tp, log)| (tp, log.stats()))
            .collect(),
        groups: shard
            .coordinator()
            .map(|c| c.snapshot())
            .unwrap_or_default(),
        followers: r.follower_lags(shard),
        isr_shrinks: r.isr_shrinks.get(),
        isr_expands: r.isr_expands.get(),
        leader_elections: r.leader_elections.get(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub open: u64,
    pub accepted: u64,
    /// Request handlers that panicked (a bug; their connections were closed).
    pub handler_panics: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub fetch_sendfile_bytes: u64,
    pub fetch_copied_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Disk {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerRow {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub fenced: bool,
}

/// Cluster mode: what the metadata image says, as this broker sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSnapshot {
    pub cluster_id: String,
    pub brokers: Vec<BrokerRow>,
    /// Partitions this broker leads whose ISR is smaller than their replica set.
    pub under_replicated_partitions: u64,
    /// Partitions of the cluster without a leader.
    pub offline_partitions: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Partitions this broker took leadership of (each new leader epoch) since it started.
    pub leader_elections: u64,
    pub follower_lag: Vec<FollowerLag>,
}

/// The broker's numbers at one instant: the sum over its shards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerSnapshot {
    pub version: &'static str,
    pub node_id: i32,
    pub uptime_seconds: f64,
    pub shards: usize,
    /// By API name (`Produce`, `Fetch`, ...), only the APIs that were called.
    pub apis: BTreeMap<String, ApiSnapshot>,
    pub connections: Connections,
    pub storage: StorageSnapshot,
    /// Appended bytes not covered by an fdatasync yet, over every partition.
    pub unsynced_bytes: u64,
    /// Appended bytes not handed to the kernel yet, over every shard (each bounded by
    /// `sluice.write.buffer.shard.bytes`).
    pub write_buffer_bytes: u64,
    pub poisoned_partitions: u64,
    /// Partitions waiting for disk space (they resume by themselves).
    pub disk_full_partitions: u64,
    pub disk: Disk,
    /// Sorted by topic, partition.
    pub partitions: Vec<PartitionSnapshot>,
    /// Sorted by group id.
    pub groups: Vec<GroupSnapshot>,
    pub cluster: Option<ClusterSnapshot>,
    /// Client quotas: throttled responses and the rate of each entity with a quota.
    pub quotas: crate::quota::QuotaSnapshot,
}

impl BrokerSnapshot {
    pub fn topics(&self) -> usize {
        let mut last = None;
        let mut n = 0;
        for p in &self.partitions {
            if last != Some(&p.topic) {
                n += 1;
                last = Some(&p.topic);
            }
        }
        n
    }

    pub fn bytes_stored(&self) -> u64 {
        self.partitions.iter().map(|p| p.log.size_bytes).sum()
    }
}

/// Free and total bytes of the file system holding `dir`.
fn disk_usage(dir: &std::path::Path) -> Disk {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Disk::default();
    };
    // SAFETY: statvfs fills the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Disk::default();
    }
    let frsize = st.f_frsize as u64;
    Disk {
        free_bytes: st.f_bavail as u64 * frsize,
        total_bytes: st.f_blocks as u64 * frsize,
    }
}

/// Takes every shard's snapshot (over the mesh; a shard that is gone is left out) and sums
/// them.
pub async fn gather(shard: &Rc<Shard>) -> BrokerSnapshot {
    let mut parts = Vec::with_capacity(shard.nr);
    for i in 0..shard.nr {
        if let Ok(s) = shard.call(i, |s| async move { shard_snapshot(&s) }).await {
            parts.push((i, s));
        }
    }
    merge(shard, parts)
}

fn merge(shard: &Shard, parts: Vec<(usize, ShardSnapshot)>) -> BrokerSnapshot {
    let shared = &shard.shared;
    let me = shared.config.node_id;
    let image = shared.image();
    let mut out = BrokerSnapshot {
        version: env!("CARGO_PKG_VERSION"),
        node_id: me,
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        shards: shard.nr,
        disk: disk_usage(&shared.config.data_dir),
        quotas: shared.quotas.metrics(),
        ..Default::default()
    };
    let mut bytes_out: HashMap<TopicPartition, u64> = HashMap::new();
    let mut cluster = ClusterSnapshot::default();
    let mut raw_parts = Vec::new();
    for (id, s) in parts {
        let c = s.counters;
        for (k, a) in &c.apis {
            out.apis.entry(format!("{k:?}")).or_default().merge(a);
        }
        let n = &mut out.connections;
        n.open += c.connections_open;
        n.accepted += c.connections_accepted;
        n.handler_panics += c.handler_panics;
        n.bytes_received += c.bytes_received;
        n.bytes_sent += c.bytes_sent;
        n.fetch_sendfile_bytes += c.fetch_sendfile_bytes;
        n.fetch_copied_bytes += c.fetch_copied_bytes;
        for (tp, b) in c.bytes_out {
            *bytes_out.entry(tp).or_default() += b;
        }
        out.storage.merge(&s.storage);
        out.write_buffer_bytes += s.write_buffer_bytes;
        raw_parts.extend(s.partitions.into_iter().map(|(tp, l)| (id, tp, l)));
        out.groups.extend(s.groups);
        cluster.isr_shrinks += s.isr_shrinks;
        cluster.isr_expands += s.isr_expands;
        cluster.leader_elections += s.leader_elections;
        cluster
            .follower_lag
            .extend(s.followers.into_iter().map(|(tp, b, lag)| FollowerLag {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                follower: b,
                lag,
            }));
    }
    for (id, tp, log) in raw_parts {
        let (leader, replicas, isr) = match image
            .as_ref()
            .and_then(|i| i.partition(&tp.topic, tp.partition))
        {
            Some(p) => (p.leader, p.replicas.clone(), p.isr.clone()),
            None if image.is_some() => (-1, vec![], vec![]),
            None => (me, vec![me], vec![me]),
        };
        out.unsynced_bytes += log.unsynced_bytes;
        out.poisoned_partitions += u64::from(log.poisoned);
        out.disk_full_partitions += u64::from(log.disk_full);
        out.partitions.push(PartitionSnapshot {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            shard: id,
            bytes_out: bytes_out.get(&tp).copied().unwrap_or(0),
            log,
            leader,
            replicas,
            isr,
        });
    }
    out.partitions
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let hw: HashMap<(&str, i32), u64> = out
        .partitions
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), p.log.high_watermark))
        .collect();
    for g in &mut out.groups {
        for o in &mut g.offsets {
            o.log_end = hw.get(&(o.topic.as_str(), o.partition)).copied();
            o.lag = o
                .log_end
                .map(|e| e.saturating_sub(u64::try_from(o.offset).unwrap_or(0)));
        }
    }
    out.groups.sort_by(|a, b| a.group.cmp(&b.group));
    if let Some(img) = image {
        cluster.cluster_id = img.cluster_id.clone();
        cluster.brokers = img
            .brokers
            .values()
            .map(|b| BrokerRow {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                fenced: b.fenced,
            })
            .collect();
        for t in img.topics.values() {
            for p in &t.partitions {
                if p.leader == crate::cluster::image::NO_LEADER {
                    cluster.offline_partitions += 1;
                } else if p.leader == me && p.isr.len() < p.replicas.len() {
                    cluster.under_replicated_partitions += 1;
                }
            }
        }
        cluster.follower_lag.sort_by(|a, b| {
            (&a.topic, a.partition, a.follower).cmp(&(&b.topic, b.partition, b.follower))
        });
        out.cluster = Some(cluster);
    }
    out
}
