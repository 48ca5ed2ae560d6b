//! `/metrics`: a [`BrokerSnapshot`] rendered by prometheus-client, in the Prometheus text
//! format (0.0.4) or OpenMetrics 1.0 text, as the scraper's Accept header asks. Every metric
//! name is listed in docs/METRICS.md.

use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use sluice_engine::stats::{HistogramSnapshot, LATENCY_BOUNDS_S};

use super::error_name;
use super::snapshot::BrokerSnapshot;

/// Content types of the two formats.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an Accept header asks for OpenMetrics (as Prometheus does when it prefers it).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The snapshot in the chosen format.
pub fn render(snapshot: BrokerSnapshot, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(snapshot)));
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

#[derive(Debug)]
struct Snapshot(BrokerSnapshot);

type Labels = Vec<(&'static str, String)>;

/// One metric family: its descriptor, then a sample per label set.
struct Family<'a> {
    m: MetricEncoder<'a>,
}

fn family<'a>(
    enc: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<Family<'a>, std::fmt::Error> {
    Ok(Family {
        m: enc.encode_descriptor(name, help, unit, kind)?,
    })
}

impl Family<'_> {
    fn counter(&mut self, labels: &Labels, v: u64) -> Result<(), std::fmt::Error> {
        self.m
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
        &mut self,
        labels: &Labels,
        v: V,
    ) -> Result<(), std::fmt::Error> {
        self.m.encode_family(labels)?.encode_gauge(&v)
    }

    fn histogram(&mut self, labels: &Labels, h: &HistogramSnapshot) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_S
            .iter()
            .copied()
            .zip(h.counts.iter().copied())
            .collect();
        buckets.push((
            f64::INFINITY,
            h.counts.get(LATENCY_BOUNDS_S.len()).copied().unwrap_or(0),
        ));
        self.m.encode_family(labels)?.encode_histogram(
            h.sum_seconds(),
            h.count(),
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }
}

fn none() -> Labels {
    Vec::new()
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let secs = Unit::Seconds;
        let bytes = Unit::Bytes;
        use MetricType::{Counter, Gauge, Histogram};

        // broker
        family(
            &mut enc,
            "sluice_build_info",
            "Version of this broker (always 1).",
            None,
            Gauge,
        )?
        .gauge(
            &vec![
                ("version", s.version.to_string()),
                ("node_id", s.node_id.to_string()),
            ],
            1i64,
        )?;
        family(
            &mut enc,
            "sluice_uptime",
            "Time since the broker started.",
            Some(&secs),
            Gauge,
        )?
        .gauge(&none(), s.uptime_seconds)?;
        family(
            &mut enc,
            "sluice_shards",
            "Shards (executor threads) of the broker.",
            None,
            Gauge,
        )?
        .gauge(&none(), s.shards as i64)?;

        // requests
        let api = |k: &String| vec![("api", k.clone())];
        let mut f = family(
            &mut enc,
            "sluice_requests",
            "Requests answered, by API.",
            None,
            Counter,
        )?;
        for (k, a) in &s.apis {
            f.counter(&api(k), a.requests)?;
        }
        let mut f = family(
            &mut enc,
            "sluice_request_errors",
            "Error codes in responses, by API and error (each partition's counts once).",
            None,
            Counter,
        )?;
        for (k, a) in &s.apis {
            for &(code, n) in &a.errors {
                let l = vec![("api", k.clone()), ("error", error_name(code))];
                f.counter(&l, n)?;
            }
        }
        let mut f = family(
            &mut enc,
            "sluice_request_duration",
            "Time from a request's decoding to its response being ready, by API.",
            Some(&secs),
            Histogram,
        )?;
        for (k, a) in &s.apis {
            f.histogram(&api(k), &a.latency)?;
        }

        // connections and network
        let c = &s.connections;
        family(
            &mut enc,
            "sluice_connections_open",
            "Client connections open now.",
            None,
            Gauge,
        )?
        .gauge(&none(), c.open as i64)?;
        family(
            &mut enc,
            "sluice_connections_accepted",
            "Client connections accepted.",
            None,
            Counter,
        )?
        .counter(&none(), c.accepted)?;
        family(
            &mut enc,
            "sluice_request_handler_panics",
            "Request handlers that panicked (a bug); each closed its connection, the shard served on.",
            None,
            Counter,
        )?
        .counter(&none(), c.handler_panics)?;
        family(
            &mut enc,
            "sluice_network_received",
            "Request bytes read from clients (frames with their length prefix).",
            Some(&bytes),
            Counter,
        )?
        .counter(&none(), c.bytes_received)?;
        family(
            &mut enc,
            "sluice_network_sent",
            "Response bytes written to clients.",
            Some(&bytes),
            Counter,
        )?
        .counter(&none(), c.bytes_sent)?;
        let mut f = family(&mut enc, "sluice_fetch_file", "Segment file bytes in fetch responses, by how they were sent: sendfile (zero copy) or copy (TLS, or zero copy off).", Some(&bytes), Counter)?;
        f.counter(&vec![("path", "sendfile".into())], c.fetch_sendfile_bytes)?;
        f.counter(&vec![("path", "copy".into())], c.fetch_copied_bytes)?;

        // client quotas
        let q = &s.quotas;
        family(
            &mut enc,
            "sluice_quota_throttled_responses",
            "Responses throttled by a client quota (throttle_time_ms > 0; the connection was muted that long).",
            None,
            Counter,
        )?
        .counter(&none(), q.throttled)?;
        family(
            &mut enc,
            "sluice_quota_throttle_time_ms",
            "Throttle time of throttled responses together, in ms.",
            None,
            Counter,
        )?
        .counter(&none(), q.throttle_ms)?;
        let labels = |x: &crate::quota::SensorSnapshot| {
            vec![
                ("quota", x.quota_type.to_string()),
                ("user", x.user.clone()),
                ("client_id", x.client_id.clone()),
            ]
        };
        let mut f = family(&mut enc, "sluice_quota_rate", "Measured rate of an entity under a client quota: bytes/s (producer_byte_rate, consumer_byte_rate) or percent of one thread (request_percentage).", None, Gauge)?;
        for x in &q.sensors {
            f.gauge(&labels(x), x.rate)?;
        }
        let mut f = family(
            &mut enc,
            "sluice_quota_entity_throttled",
            "Times an entity's quota throttled a request.",
            None,
            Counter,
        )?;
        for x in &q.sensors {
            f.counter(&labels(x), x.throttled)?;
        }
        let mut f = family(
            &mut enc,
            "sluice_quota_entity_throttle_time_ms",
            "Throttle time an entity's quota gave, in ms.",
            None,
            Counter,
        )?;
        for x in &q.sensors {
            f.counter(&labels(x), x.throttle_ms)?;
        }

        // storage
        let st = &s.storage;
        family(
            &mut enc,
            "sluice_storage_writes",
            "O_DIRECT segment writes completed.",
            None,
            Counter,
        )?
        .counter(&none(), st.writes)?;
        family(
            &mut enc,
            "sluice_storage_written",
            "New log bytes written to segment files.",
            Some(&bytes),
            Counter,
        )?
        .counter(&none(), st.bytes_written)?;
        family(
            &mut enc,
            "sluice_storage_fdatasyncs",
            "fdatasyncs of segment files completed.",
            None,
            Counter,
        )?
        .counter(&none(), st.syncs)?;
        family(
            &mut enc,
            "sluice_storage_fdatasync_duration",
            "Time each fdatasync of a segment file took.",
            Some(&secs),
            Histogram,
        )?
        .histogram(&none(), &st.sync_latency)?;
        family(
            &mut enc,
            "sluice_storage_unsynced",
            "Appended bytes no fdatasync covers yet.",
            Some(&bytes),
            Gauge,
        )?
        .gauge(&none(), s.unsynced_bytes)?;
        family(
            &mut enc,
            "sluice_storage_write_buffer",
            "Appended bytes not handed to the kernel yet (bounded per shard).",
            Some(&bytes),
            Gauge,
        )?
        .gauge(&none(), s.write_buffer_bytes)?;
        family(
            &mut enc,
            "sluice_hot_cache_hits",
            "Reads served from the in-memory hot tail.",
            None,
            Counter,
        )?
        .counter(&none(), st.hot_hits)?;
        family(
            &mut enc,
            "sluice_hot_cache_misses",
            "Reads served from segment files.",
            None,
            Counter,
        )?
        .counter(&none(), st.hot_misses)?;
        family(
            &mut enc,
            "sluice_partitions_poisoned",
            "Partitions refusing writes after an I/O error.",
            None,
            Gauge,
        )?
        .gauge(&none(), s.poisoned_partitions)?;
        family(
            &mut enc,
            "sluice_partitions_disk_full",
            "Partitions waiting for disk space (appends refused, writes retried).",
            None,
            Gauge,
        )?
        .gauge(&none(), s.disk_full_partitions)?;
        family(
            &mut enc,
            "sluice_disk_free",
            "Free bytes of the file system holding the data dir.",
            Some(&bytes),
            Gauge,
        )?
        .gauge(&none(), s.disk.free_bytes)?;
        family(
            &mut enc,
            "sluice_disk_total",
            "Size of the file system holding the data dir.",
            Some(&bytes),
            Gauge,
        )?
        .gauge(&none(), s.disk.total_bytes)?;

        // partitions
        let tp = |t: &str, p: i32| vec![("topic", t.to_string()), ("partition", p.to_string())];
        macro_rules! per_partition {
            ($name:expr, $help:expr, $unit:expr, $kind:ident, $method:ident, |$p:ident| $v:expr) => {{
                let mut f = family(&mut enc, $name, $help, $unit, $kind)?;
                for $p in &s.partitions {
                    f.$method(&tp(&$p.topic, $p.partition), $v)?;
                }
            }};
        }
        per_partition!(
            "sluice_partition_messages_in",
            "Records producers appended since the broker started.",
            None,
            Counter,
            counter,
            |p| p.log.messages_in
        );
        per_partition!(
            "sluice_partition_in",
            "Batch bytes producers appended since the broker started.",
            Some(&bytes),
            Counter,
            counter,
            |p| p.log.bytes_in
        );
        per_partition!(
            "sluice_partition_out",
            "Record bytes fetch responses carried to consumers.",
            Some(&bytes),
            Counter,
            counter,
            |p| p.bytes_out
        );
        per_partition!(
            "sluice_partition_log_start_offset",
            "First offset of the log.",
            None,
            Gauge,
            gauge,
            |p| p.log.log_start
        );
        per_partition!(
            "sluice_partition_log_end_offset",
            "Next offset the log assigns.",
            None,
            Gauge,
            gauge,
            |p| p.log.log_end
        );
        per_partition!(
            "sluice_partition_high_watermark",
            "End of what consumers may read.",
            None,
            Gauge,
            gauge,
            |p| p.log.high_watermark
        );
        per_partition!(
            "sluice_partition_size",
            "Bytes of the partition's segment files.",
            Some(&bytes),
            Gauge,
            gauge,
            |p| p.log.size_bytes
        );
        per_partition!(
            "sluice_partition_segments",
            "Segment files of the partition.",
            None,
            Gauge,
            gauge,
            |p| p.log.segments
        );
        per_partition!(
            "sluice_partition_storage_state",
            "0: writable; 1: waiting for disk space (resumes by itself); 2: fenced after an \
             I/O error (restart the broker to recover).",
            None,
            Gauge,
            gauge,
            |p| storage_state(&p.log)
        );
        per_partition!(
            "sluice_partition_disk_full_stalls",
            "Times the partition started waiting for disk space since it was opened.",
            None,
            Counter,
            counter,
            |p| p.log.disk_full_stalls
        );

        // consumer groups
        let grp = |g: &str| vec![("group", g.to_string())];
        let mut f = family(
            &mut enc,
            "sluice_group_members",
            "Members of a consumer group.",
            None,
            Gauge,
        )?;
        for g in &s.groups {
            f.gauge(&grp(&g.group), g.members)?;
        }
        let mut f = family(
            &mut enc,
            "sluice_group_state",
            "A consumer group's state (1 for the state it is in).",
            None,
            Gauge,
        )?;
        for g in &s.groups {
            f.gauge(
                &vec![("group", g.group.clone()), ("state", g.state.clone())],
                1i64,
            )?;
        }
        let gtp = |g: &str, t: &str, p: i32| {
            vec![
                ("group", g.to_string()),
                ("topic", t.to_string()),
                ("partition", p.to_string()),
            ]
        };
        let mut f = family(
            &mut enc,
            "sluice_group_committed_offset",
            "A group's committed offset of a partition.",
            None,
            Gauge,
        )?;
        for g in &s.groups {
            for o in &g.offsets {
                f.gauge(&gtp(&g.group, &o.topic, o.partition), o.offset)?;
            }
        }
        let mut f = family(&mut enc, "sluice_group_lag", "High watermark minus committed offset (partitions hosted by this broker), as `sluice group describe` shows.", None, Gauge)?;
        for g in &s.groups {
            for o in &g.offsets {
                if let Some(lag) = o.lag {
                    f.gauge(&gtp(&g.group, &o.topic, o.partition), lag)?;
                }
            }
        }

        // cluster
        if let Some(c) = &s.cluster {
            family(
                &mut enc,
                "sluice_cluster_under_replicated_partitions",
                "Partitions this broker leads whose ISR is smaller than their replica set.",
                None,
                Gauge,
            )?
            .gauge(&none(), c.under_replicated_partitions)?;
            family(
                &mut enc,
                "sluice_cluster_offline_partitions",
                "Partitions of the cluster without a leader.",
                None,
                Gauge,
            )?
            .gauge(&none(), c.offline_partitions)?;
            family(
                &mut enc,
                "sluice_cluster_isr_shrinks",
                "ISR shrinks of partitions this broker leads (its AlterPartition or the controller fencing a replica).",
                None,
                Counter,
            )?
            .counter(&none(), c.isr_shrinks)?;
            family(
                &mut enc,
                "sluice_cluster_isr_expands",
                "ISR expansions of partitions this broker leads.",
                None,
                Counter,
            )?
            .counter(&none(), c.isr_expands)?;
            family(
                &mut enc,
                "sluice_cluster_leader_elections",
                "Partition leaderships (new leader epochs) this broker took.",
                None,
                Counter,
            )?
            .counter(&none(), c.leader_elections)?;
            let mut f = family(
                &mut enc,
                "sluice_cluster_brokers",
                "Brokers registered in the metadata image, by fenced or not.",
                None,
                Gauge,
            )?;
            for fenced in [false, true] {
                let n = c.brokers.iter().filter(|b| b.fenced == fenced).count() as i64;
                f.gauge(&vec![("fenced", fenced.to_string())], n)?;
            }
            let mut f = family(
                &mut enc,
                "sluice_replica_follower_lag",
                "Messages a follower is behind this leader's log end.",
                None,
                Gauge,
            )?;
            for l in &c.follower_lag {
                let labels = vec![
                    ("topic", l.topic.clone()),
                    ("partition", l.partition.to_string()),
                    ("follower", l.follower.to_string()),
                ];
                f.gauge(&labels, l.lag)?;
            }
        }
        Ok(())
    }
}

/// `sluice_partition_storage_state` of one log.
fn storage_state(log: &sluice_engine::stats::LogStats) -> u64 {
    if log.poisoned {
        2
    } else {
        u64::from(log.disk_full)
    }
}
