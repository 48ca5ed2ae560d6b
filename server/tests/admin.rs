//! Admin APIs over the real protocol: CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DeleteRecords, DescribeLogDirs, DescribeCluster and DescribeQuorum,
//! every version kafka-protocol knows, against an in-process broker on 127.0.0.1:0.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{config, name, sb, start_with as start, Client};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsResult;
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest,
    AlterConfigsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use sluice_engine::batch::build_uniform;

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const POLICY_VIOLATION: i16 = 44;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

const ADMIN_APIS: &[ApiKey] = &[
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DeleteRecords,
    ApiKey::DescribeLogDirs,
    ApiKey::DescribeCluster,
    ApiKey::DescribeQuorum,
];

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let r = key.valid_versions();
    r.min..=r.max
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

// ---- request helpers ------------------------------------------------------------------------

fn describe(
    c: &mut Client,
    version: i16,
    resource_type: i8,
    resource: &str,
    keys: Option<&[&str]>,
    synonyms: bool,
    docs: bool,
) -> DescribeConfigsResult {
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(sb(resource))
            .with_configuration_keys(
                keys.map(|ks| ks.iter().map(|k| sb(k)).collect()),
            )])
        .with_include_synonyms(synonyms)
        .with_include_documentation(docs && version >= 3);
    let mut r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, version, &req);
    assert_eq!(r.results.len(), 1);
    let res = r.results.remove(0);
    assert_eq!(res.resource_type, resource_type);
    assert_eq!(res.resource_name.as_str(), resource);
    res
}

/// name -> (value, config_source) of a topic's configs (latest DescribeConfigs version).
fn topic_configs(c: &mut Client, topic: &str) -> BTreeMap<String, (Option<String>, i8)> {
    let r = describe(c, 4, TOPIC, topic, None, false, false);
    assert_eq!(r.error_code, NONE, "{:?}", r.error_message);
    r.configs
        .into_iter()
        .map(|e| {
            (
                e.name.to_string(),
                (e.value.map(|v| v.to_string()), e.config_source),
            )
        })
        .collect()
}

fn alter(
    c: &mut Client,
    version: i16,
    resource_type: i8,
    resource: &str,
    configs: &[(&str, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = AlterConfigsRequest::default()
        .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(sb(resource))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        alter_configs_request::AlterableConfig::default()
                            .with_name(sb(k))
                            .with_value(v.map(sb))
                    })
                    .collect(),
            )])
        .with_validate_only(validate_only);
    let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, version, &req);
    assert_eq!(r.responses.len(), 1);
    let x = &r.responses[0];
    assert_eq!(x.resource_type, resource_type);
    assert_eq!(x.resource_name.as_str(), resource);
    (
        x.error_code,
        x.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn incremental(
    c: &mut Client,
    version: i16,
    resource_type: i8,
    resource: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(sb(resource))
                .with_configs(
                    ops.iter()
                        .map(|(k, op, v)| {
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(sb(k))
                                .with_config_operation(*op)
                                .with_value(v.map(sb))
                        })
                        .collect(),
                ),
        ])
        .with_validate_only(validate_only);
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, version, &req);
    assert_eq!(r.responses.len(), 1);
    let x = &r.responses[0];
    assert_eq!(x.resource_type, resource_type);
    assert_eq!(x.resource_name.as_str(), resource);
    (
        x.error_code,
        x.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn create_partitions(
    c: &mut Client,
    version: i16,
    topic: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> (i16, Option<String>) {
    let t = CreatePartitionsTopic::default()
        .with_name(name(topic))
        .with_count(count)
        .with_assignments(assignments.map(|a| {
            a.into_iter()
                .map(|ids| {
                    CreatePartitionsAssignment::default()
                        .with_broker_ids(ids.into_iter().map(BrokerId).collect())
                })
                .collect()
        }));
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, version, &req);
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].name.as_str(), topic);
    (
        r.results[0].error_code,
        r.results[0].error_message.as_ref().map(|m| m.to_string()),
    )
}

/// DeleteRecords of one topic: (partition, low watermark, error) per requested partition.
fn delete_records(
    c: &mut Client,
    version: i16,
    topic: &str,
    parts: &[(i32, i64)],
) -> Vec<(i32, i64, i16)> {
    let req = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, o)| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(p)
                            .with_offset(o)
                    })
                    .collect(),
            )])
        .with_timeout_ms(10_000);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, version, &req);
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].name.as_str(), topic);
    r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.low_watermark, p.error_code))
        .collect()
}

fn log_dirs(
    c: &mut Client,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResult {
    let req = DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
        ts.into_iter()
            .map(|(t, ps)| {
                DescribableLogDirTopic::default()
                    .with_topic(name(t))
                    .with_partitions(ps)
            })
            .collect()
    }));
    let mut r: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, version, &req);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.results.len(), 1, "one log dir");
    let d = r.results.remove(0);
    assert_eq!(d.error_code, NONE);
    d
}

/// topic -> partition -> size, from a DescribeLogDirs result.
fn sizes(d: &DescribeLogDirsResult) -> BTreeMap<String, BTreeMap<i32, i64>> {
    d.topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.partitions
                    .iter()
                    .map(|p| {
                        assert_eq!(p.offset_lag, 0);
                        assert!(!p.is_future_key);
                        (p.partition_index, p.partition_size)
                    })
                    .collect(),
            )
        })
        .collect()
}

fn segment_files(dir: &std::path::Path, topic: &str, partition: i32) -> usize {
    std::fs::read_dir(dir.join(format!("{topic}-{partition}")))
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn api_versions_advertise_the_admin_apis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, NONE);
    for key in ADMIN_APIS {
        let v = r
            .api_keys
            .iter()
            .find(|k| k.api_key == *key as i16)
            .unwrap_or_else(|| panic!("{key:?} advertised"));
        let want = key.valid_versions();
        assert_eq!(
            (v.min_version, v.max_version),
            (want.min, want.max),
            "{key:?}"
        );
    }
    broker.stop();
}

#[test]
fn describe_cluster_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let mut cluster_ids = Vec::new();
    for v in versions(ApiKey::DescribeCluster) {
        let r: DescribeClusterResponse = c.call(
            ApiKey::DescribeCluster,
            v,
            &DescribeClusterRequest::default(),
        );
        assert_eq!(r.error_code, NONE, "v{v}: {:?}", r.error_message);
        assert_eq!(r.controller_id, BrokerId(0), "v{v}");
        assert_eq!(r.endpoint_type, 1, "v{v}");
        assert!(!r.cluster_id.is_empty(), "v{v}");
        assert_eq!(
            r.cluster_authorized_operations,
            i32::MIN,
            "v{v}: not asked for"
        );
        assert_eq!(r.brokers.len(), 1, "v{v}");
        let b = &r.brokers[0];
        assert_eq!(b.broker_id, BrokerId(0));
        assert_eq!(b.host.as_str(), "127.0.0.1");
        assert_eq!(b.port, i32::from(broker.addr.port()));
        assert!(b.rack.is_none());
        assert!(!b.is_fenced);
        cluster_ids.push(r.cluster_id.to_string());
    }
    cluster_ids.dedup();
    assert_eq!(cluster_ids.len(), 1, "one cluster id");

    // authorized operations on request (no authorizer: everything on CLUSTER)
    let r: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
    );
    assert_ne!(r.cluster_authorized_operations, i32::MIN);
    assert_ne!(r.cluster_authorized_operations & (1 << 8), 0, "DESCRIBE");

    // controllers are not served on the broker endpoint
    for v in 1..=2 {
        let r: DescribeClusterResponse = c.call(
            ApiKey::DescribeCluster,
            v,
            &DescribeClusterRequest::default().with_endpoint_type(2),
        );
        assert_eq!(r.error_code, MISMATCHED_ENDPOINT_TYPE, "v{v}");
        assert!(r.error_message.is_some());
        let r: DescribeClusterResponse = c.call(
            ApiKey::DescribeCluster,
            v,
            &DescribeClusterRequest::default().with_endpoint_type(9),
        );
        assert_eq!(r.error_code, UNSUPPORTED_ENDPOINT_TYPE, "v{v}");
    }

    // the cluster id is durable
    let id = cluster_ids.remove(0);
    drop(c);
    broker.stop();
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let r: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        2,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(r.cluster_id.as_str(), id);
    broker.stop();
}

#[test]
fn create_partitions_grows_topics_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let ts = now_ms();

    for v in versions(ApiKey::CreatePartitions) {
        let topic = format!("grow-v{v}");
        c.create_topic(&topic, 2, &[]);
        c.produce(&topic, 1, build_uniform(3, 10, ts));

        // validate_only changes nothing
        assert_eq!(
            create_partitions(&mut c, v, &topic, 4, None, true),
            (NONE, None)
        );
        assert_eq!(c.partitions(&topic), Some(2));

        // not an increase
        let (code, msg) = create_partitions(&mut c, v, &topic, 2, None, false);
        assert_eq!(code, INVALID_PARTITIONS, "v{v}");
        assert!(msg.is_some_and(|m| m.contains('2')));
        let (code, _) = create_partitions(&mut c, v, &topic, 1, None, false);
        assert_eq!(code, INVALID_PARTITIONS, "v{v}");
        let (code, _) = create_partitions(&mut c, v, &topic, 1_000_000, None, false);
        assert_eq!(code, INVALID_PARTITIONS, "v{v}: too many");

        // manual assignments: only [node 0] per new partition is possible on one broker
        let (code, _) =
            create_partitions(&mut c, v, &topic, 4, Some(vec![vec![1], vec![0]]), false);
        assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "v{v}: unknown broker");
        let (code, _) = create_partitions(&mut c, v, &topic, 4, Some(vec![vec![0]]), false);
        assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "v{v}: wrong count");
        let (code, _) =
            create_partitions(&mut c, v, &topic, 4, Some(vec![vec![0, 0], vec![0]]), false);
        assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "v{v}: two replicas");
        assert_eq!(
            c.partitions(&topic),
            Some(2),
            "v{v}: failures change nothing"
        );

        // grow
        assert_eq!(
            create_partitions(&mut c, v, &topic, 4, Some(vec![vec![0], vec![0]]), false),
            (NONE, None),
            "v{v}"
        );
        assert_eq!(
            create_partitions(&mut c, v, &topic, 7, None, false),
            (NONE, None)
        );
        assert_eq!(c.partitions(&topic), Some(7), "v{v}");
        for p in 2..7 {
            assert_eq!(
                c.produce(&topic, p, build_uniform(2, 10, ts)),
                0,
                "new partition {p}"
            );
        }
        assert_eq!(c.list_offset(&topic, 1, -1), (NONE, 3), "old data kept");

        // unknown topic
        let (code, _) = create_partitions(&mut c, v, "no-such-topic", 3, None, false);
        assert_eq!(code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
    }

    // a topic named twice in one request
    let dup = CreatePartitionsTopic::default()
        .with_name(name("grow-v0"))
        .with_count(9);
    let r: CreatePartitionsResponse = c.call(
        ApiKey::CreatePartitions,
        3,
        &CreatePartitionsRequest::default().with_topics(vec![dup.clone(), dup]),
    );
    assert_eq!(r.results.len(), 2);
    assert!(r.results.iter().all(|x| x.error_code == INVALID_REQUEST));
    assert_eq!(c.partitions("grow-v0"), Some(7));

    // the new partitions and their data survive a restart
    drop(c);
    broker.stop();
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    for v in versions(ApiKey::CreatePartitions) {
        let topic = format!("grow-v{v}");
        assert_eq!(c.partitions(&topic), Some(7));
        assert_eq!(c.list_offset(&topic, 6, -1), (NONE, 2));
        assert_eq!(c.list_offset(&topic, 1, -1), (NONE, 3));
        assert_eq!(c.produce(&topic, 6, build_uniform(1, 10, ts)), 2);
    }
    broker.stop();
}

#[test]
fn describe_configs_topics_and_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 2);
    cfg.set("log.retention.ms", "3600000").expect("valid");
    let broker = start(cfg);
    let mut c = Client::connect(broker.addr);
    c.create_topic("described", 1, &[("segment.bytes", "4096")]);
    let data_dir = std::path::absolute(dir.path()).expect("absolute");

    for v in versions(ApiKey::DescribeConfigs) {
        // every topic config, overrides marked dynamic
        let r = describe(&mut c, v, TOPIC, "described", None, false, false);
        assert_eq!(r.error_code, NONE, "v{v}: {:?}", r.error_message);
        assert!(r.error_message.is_none());
        let get = |k: &str| {
            r.configs
                .iter()
                .find(|e| e.name.as_str() == k)
                .unwrap_or_else(|| panic!("v{v}: {k} described"))
        };
        for key in [
            "cleanup.policy",
            "retention.ms",
            "retention.bytes",
            "segment.bytes",
            "segment.ms",
            "max.message.bytes",
            "min.insync.replicas",
            "flush.messages",
        ] {
            let e = get(key);
            assert!(e.value.is_some(), "v{v}: {key} has a value");
            assert!(!e.read_only && !e.is_sensitive, "v{v}: {key}");
            assert!(e.synonyms.is_empty(), "v{v}: synonyms not asked for");
            if v >= 3 {
                assert!(e.documentation.is_none(), "v{v}: docs not asked for");
            }
        }
        let seg = get("segment.bytes");
        assert_eq!(seg.value.as_deref(), Some("4096"));
        assert_eq!(seg.config_source, 1, "v{v}: DYNAMIC_TOPIC_CONFIG");
        let ret = get("retention.ms");
        assert_eq!(ret.value.as_deref(), Some("3600000"));
        assert_eq!(ret.config_source, 4, "v{v}: STATIC_BROKER_CONFIG");
        let cp = get("cleanup.policy");
        assert_eq!(cp.value.as_deref(), Some("delete"));
        assert_eq!(cp.config_source, 5, "v{v}: DEFAULT_CONFIG");
        if v >= 3 {
            assert_eq!(seg.config_type, 3, "INT");
            assert_eq!(ret.config_type, 5, "LONG");
            assert_eq!(cp.config_type, 7, "LIST");
        }

        // configuration_keys filter
        let r = describe(
            &mut c,
            v,
            TOPIC,
            "described",
            Some(&["segment.bytes", "retention.ms", "not.a.config"]),
            true,
            true,
        );
        let mut names: Vec<&str> = r.configs.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["retention.ms", "segment.bytes"], "v{v}");
        let seg = r
            .configs
            .iter()
            .find(|e| e.name.as_str() == "segment.bytes")
            .expect("segment.bytes");
        let syn: Vec<(&str, i8)> = seg
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(syn[0], ("segment.bytes", 1), "v{v}: {syn:?}");
        assert!(syn.contains(&("log.segment.bytes", 5)), "v{v}: {syn:?}");
        if v >= 3 {
            assert!(seg.documentation.as_ref().is_some_and(|d| !d.is_empty()));
        }
        let r = describe(&mut c, v, TOPIC, "described", Some(&[]), false, false);
        assert!(r.configs.is_empty(), "v{v}: empty key list");

        // errors
        let r = describe(&mut c, v, TOPIC, "missing", None, false, false);
        assert_eq!(r.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        assert!(r.configs.is_empty());
        assert!(r.error_message.is_some());
        let r = describe(&mut c, v, TOPIC, "bad name!", None, false, false);
        assert_eq!(r.error_code, INVALID_TOPIC_EXCEPTION, "v{v}");
        let r = describe(&mut c, v, 99, "x", None, false, false);
        assert_eq!(r.error_code, INVALID_REQUEST, "v{v}");

        // the broker
        let r = describe(&mut c, v, BROKER, "0", None, true, false);
        assert_eq!(r.error_code, NONE, "v{v}: {:?}", r.error_message);
        let get = |k: &str| {
            r.configs
                .iter()
                .find(|e| e.name.as_str() == k)
                .unwrap_or_else(|| panic!("v{v}: broker {k}"))
        };
        assert_eq!(
            get("log.dirs").value.as_deref(),
            Some(data_dir.to_str().expect("utf-8"))
        );
        assert_eq!(get("num.partitions").value.as_deref(), Some("1"));
        assert_eq!(
            get("auto.create.topics.enable").value.as_deref(),
            Some("true")
        );
        assert_eq!(get("message.max.bytes").value.as_deref(), Some("1048588"));
        assert_eq!(
            get("log.segment.bytes").value.as_deref(),
            Some("1073741824")
        );
        assert_eq!(get("log.retention.ms").value.as_deref(), Some("3600000"));
        assert_eq!(get("log.retention.ms").config_source, 4);
        assert_eq!(get("node.id").value.as_deref(), Some("0"));
        assert_eq!(
            get("advertised.listeners").value.as_deref(),
            Some(format!("PLAINTEXT://127.0.0.1:{}", broker.addr.port()).as_str())
        );
        assert!(get("listeners").value.is_some());
        assert!(
            r.configs.iter().all(|e| e.read_only),
            "static broker configs"
        );
        assert!(r.configs.iter().all(|e| !e.synonyms.is_empty()));
        let r = describe(
            &mut c,
            v,
            BROKER,
            "0",
            Some(&["num.partitions"]),
            false,
            false,
        );
        assert_eq!(r.configs.len(), 1);
        // "" = cluster-wide dynamic defaults: none
        let r = describe(&mut c, v, BROKER, "", None, false, false);
        assert_eq!(r.error_code, NONE);
        assert!(r.configs.is_empty());
        let r = describe(&mut c, v, BROKER, "5", None, false, false);
        assert_eq!(r.error_code, INVALID_REQUEST, "v{v}: another broker");
        let r = describe(&mut c, v, BROKER, "zero", None, false, false);
        assert_eq!(r.error_code, INVALID_REQUEST, "v{v}: not a number");
    }

    // several resources in one request: answered in order, independently
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(sb("missing")),
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(sb("described"))
            .with_configuration_keys(Some(vec![sb("segment.bytes")])),
        DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(sb("0"))
            .with_configuration_keys(Some(vec![sb("log.dirs")])),
    ]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, [UNKNOWN_TOPIC_OR_PARTITION, NONE, NONE]);
    assert_eq!(r.results[1].configs.len(), 1);
    assert_eq!(r.results[2].configs.len(), 1);
    broker.stop();
}

#[test]
fn alter_configs_replaces_overrides_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    c.create_topic("alt", 3, &[("retention.bytes", "999999")]);

    for v in versions(ApiKey::AlterConfigs) {
        // replace the whole set
        let flush = format!("{}", 10 + v);
        let set = [
            ("retention.ms", Some("86400000")),
            ("segment.bytes", Some("65536")),
            ("flush.messages", Some(flush.as_str())),
        ];
        assert_eq!(
            alter(&mut c, v, TOPIC, "alt", &set, false),
            (NONE, None),
            "v{v}"
        );
        let cf = topic_configs(&mut c, "alt");
        assert_eq!(cf["retention.ms"], (Some("86400000".into()), 1));
        assert_eq!(cf["segment.bytes"], (Some("65536".into()), 1));
        assert_eq!(cf["flush.messages"], (Some(format!("{}", 10 + v)), 1));
        assert_eq!(cf["retention.bytes"].1, 5, "v{v}: dropped override");

        // validate_only changes nothing
        let (code, _) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("retention.ms", Some("5"))],
            true,
        );
        assert_eq!(code, NONE);
        assert_eq!(
            topic_configs(&mut c, "alt")["retention.ms"].0.as_deref(),
            Some("86400000")
        );

        // bad values and unknown keys: INVALID_CONFIG, nothing changes
        let (code, msg) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("segment.bytes", Some("tiny"))],
            false,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}");
        assert!(msg.is_some_and(|m| m.contains("segment.bytes")));
        let (code, msg) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("segment.bytes", Some("5"))],
            false,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}: below the minimum");
        assert!(msg.is_some());
        let (code, msg) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("no.such.key", Some("1"))],
            false,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}");
        assert_eq!(
            msg.as_deref(),
            Some("Unknown topic config name: no.such.key")
        );
        let (code, _) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("cleanup.policy", Some("compact,shred"))],
            true,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}: validate_only validates");
        // compaction is a policy like any other (validate_only: nothing stored)
        let (code, msg) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[
                ("cleanup.policy", Some("compact,delete")),
                ("min.cleanable.dirty.ratio", Some("0.01")),
                ("delete.retention.ms", Some("1000")),
            ],
            true,
        );
        assert_eq!(code, NONE, "v{v}: {msg:?}");
        let (code, _) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[("min.cleanable.dirty.ratio", Some("1.5"))],
            true,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}: a ratio is at most 1");
        let (code, _) = alter(
            &mut c,
            v,
            TOPIC,
            "alt",
            &[
                ("min.compaction.lag.ms", Some("10")),
                ("max.compaction.lag.ms", Some("5")),
            ],
            true,
        );
        assert_eq!(code, INVALID_CONFIG, "v{v}: min lag above max lag");
        assert_eq!(
            topic_configs(&mut c, "alt")["segment.bytes"].0.as_deref(),
            Some("65536")
        );

        // missing topic, broker resources, other resource types
        let (code, _) = alter(
            &mut c,
            v,
            TOPIC,
            "missing",
            &[("retention.ms", Some("1"))],
            false,
        );
        assert_eq!(code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        let (code, msg) = alter(
            &mut c,
            v,
            BROKER,
            "0",
            &[("log.retention.ms", Some("1"))],
            false,
        );
        assert_eq!(code, POLICY_VIOLATION, "v{v}");
        assert!(msg.is_some_and(|m| m.contains("log.retention.ms")));
        assert_eq!(
            alter(&mut c, v, BROKER, "0", &[], false).0,
            NONE,
            "v{v}: empty change"
        );
        let (code, _) = alter(
            &mut c,
            v,
            BROKER,
            "3",
            &[("num.partitions", Some("2"))],
            false,
        );
        assert_eq!(code, INVALID_REQUEST, "v{v}");
        let (code, _) = alter(&mut c, v, 8, "0", &[("x", Some("INFO"))], false);
        assert_eq!(code, INVALID_REQUEST, "v{v}");
    }

    // a null value leaves the key unset
    let (code, _) = alter(
        &mut c,
        2,
        TOPIC,
        "alt",
        &[("retention.ms", Some("7200000")), ("segment.bytes", None)],
        false,
    );
    assert_eq!(code, NONE);
    let cf = topic_configs(&mut c, "alt");
    assert_eq!(cf["retention.ms"], (Some("7200000".into()), 1));
    assert_eq!(cf["segment.bytes"].1, 5);

    // the same resource twice: both refused
    let res = alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(sb("alt"))
        .with_configs(vec![alter_configs_request::AlterableConfig::default()
            .with_name(sb("retention.ms"))
            .with_value(Some(sb("1")))]);
    let r: AlterConfigsResponse = c.call(
        ApiKey::AlterConfigs,
        2,
        &AlterConfigsRequest::default().with_resources(vec![res.clone(), res]),
    );
    assert!(r.responses.iter().all(|x| x.error_code == INVALID_REQUEST));
    assert_eq!(
        topic_configs(&mut c, "alt")["retention.ms"].0.as_deref(),
        Some("7200000")
    );

    // configs are durable
    let before = topic_configs(&mut c, "alt");
    drop(c);
    broker.stop();
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    assert_eq!(topic_configs(&mut c, "alt"), before);
    assert_eq!(c.partitions("alt"), Some(3));
    broker.stop();
}

#[test]
fn incremental_alter_configs_ops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    c.create_topic("inc", 2, &[("retention.ms", "100000")]);

    for v in versions(ApiKey::IncrementalAlterConfigs) {
        // SET adds to the existing overrides
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[
                ("segment.bytes", SET, Some("32768")),
                ("max.message.bytes", SET, Some("500000")),
            ],
            false,
        );
        assert_eq!(r, (NONE, None), "v{v}");
        let cf = topic_configs(&mut c, "inc");
        assert_eq!(cf["retention.ms"], (Some("100000".into()), 1), "v{v}: kept");
        assert_eq!(cf["segment.bytes"], (Some("32768".into()), 1));
        assert_eq!(cf["max.message.bytes"], (Some("500000".into()), 1));

        // DELETE (and SET null) remove overrides; deleting an absent key is fine
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[
                ("segment.bytes", DELETE, None),
                ("max.message.bytes", SET, None),
                ("flush.ms", DELETE, None),
            ],
            false,
        );
        assert_eq!(r.0, NONE, "v{v}: {:?}", r.1);
        let cf = topic_configs(&mut c, "inc");
        assert_eq!(cf["segment.bytes"].1, 5);
        assert_eq!(cf["max.message.bytes"].1, 5);
        assert_eq!(cf["retention.ms"].1, 1);

        // APPEND/SUBTRACT on LIST configs; refused on the others (Kafka's KRaft answer)
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("cleanup.policy", APPEND, Some("delete"))],
            false,
        );
        assert_eq!(r.0, NONE, "v{v}: {:?}", r.1);
        assert_eq!(
            topic_configs(&mut c, "inc")["cleanup.policy"],
            (Some("delete".into()), 1)
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("cleanup.policy", APPEND, Some("compact"))],
            false,
        );
        assert_eq!(r.0, NONE, "v{v}: {:?}", r.1);
        assert_eq!(
            topic_configs(&mut c, "inc")["cleanup.policy"],
            (Some("delete,compact".into()), 1)
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("cleanup.policy", SUBTRACT, Some("delete"))],
            false,
        );
        assert_eq!(r.0, NONE, "v{v}: {:?}", r.1);
        assert_eq!(
            topic_configs(&mut c, "inc")["cleanup.policy"],
            (Some("compact".into()), 1)
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("cleanup.policy", SUBTRACT, Some("compact"))],
            false,
        );
        assert_eq!(
            r.0, INVALID_CONFIG,
            "v{v}: an empty policy is not supported"
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("retention.ms", APPEND, Some("5"))],
            false,
        );
        assert_eq!(r.0, INVALID_CONFIG, "v{v}");
        assert_eq!(
            r.1.as_deref(),
            Some("Can't APPEND to key retention.ms because its type is not LIST.")
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("segment.ms", SUBTRACT, Some("5"))],
            false,
        );
        assert_eq!(r.0, INVALID_CONFIG, "v{v}");
        assert_eq!(
            topic_configs(&mut c, "inc")["retention.ms"].0.as_deref(),
            Some("100000")
        );

        // bad operations and requests
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("retention.ms", 7, Some("5"))],
            false,
        );
        assert_eq!(r.0, INVALID_REQUEST, "v{v}: unknown operation");
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[
                ("retention.ms", SET, Some("5")),
                ("retention.ms", DELETE, None),
            ],
            false,
        );
        assert_eq!(r.0, INVALID_REQUEST, "v{v}: duplicate keys");
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("retention.ms", SET, Some("-7"))],
            false,
        );
        assert_eq!(r.0, INVALID_CONFIG, "v{v}");
        let r = incremental(&mut c, v, TOPIC, "inc", &[("bogus", SET, Some("1"))], false);
        assert_eq!(r.0, INVALID_CONFIG, "v{v}");
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "gone",
            &[("retention.ms", SET, Some("1"))],
            false,
        );
        assert_eq!(r.0, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        let r = incremental(
            &mut c,
            v,
            BROKER,
            "0",
            &[("num.partitions", SET, Some("3"))],
            false,
        );
        assert_eq!(r.0, POLICY_VIOLATION, "v{v}");
        let r = incremental(
            &mut c,
            v,
            BROKER,
            "1",
            &[("num.partitions", SET, Some("3"))],
            false,
        );
        assert_eq!(r.0, INVALID_REQUEST, "v{v}");

        // validate_only
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("retention.ms", DELETE, None)],
            true,
        );
        assert_eq!(r.0, NONE);
        assert_eq!(
            topic_configs(&mut c, "inc")["retention.ms"].0.as_deref(),
            Some("100000")
        );
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("retention.ms", SET, Some("x"))],
            true,
        );
        assert_eq!(r.0, INVALID_CONFIG);
        // reset for the next version
        let r = incremental(
            &mut c,
            v,
            TOPIC,
            "inc",
            &[("cleanup.policy", DELETE, None)],
            false,
        );
        assert_eq!(r.0, NONE);
    }

    // durable
    let r = incremental(
        &mut c,
        1,
        TOPIC,
        "inc",
        &[("segment.bytes", SET, Some("20000"))],
        false,
    );
    assert_eq!(r.0, NONE);
    let before = topic_configs(&mut c, "inc");
    drop(c);
    broker.stop();
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let after = topic_configs(&mut c, "inc");
    assert_eq!(after, before);
    assert_eq!(after["segment.bytes"], (Some("20000".into()), 1));
    broker.stop();
}

#[test]
fn delete_records_moves_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let ts = now_ms();

    for v in versions(ApiKey::DeleteRecords) {
        let topic = format!("dr-v{v}");
        c.create_topic(&topic, 2, &[]);
        for _ in 0..3 {
            c.produce(&topic, 0, build_uniform(10, 20, ts));
        }
        c.produce(&topic, 1, build_uniform(4, 20, ts));
        assert_eq!(c.list_offset(&topic, 0, -1), (NONE, 30));

        let r = delete_records(&mut c, v, &topic, &[(0, 15), (1, -1), (2, 0)]);
        assert_eq!(
            r,
            [
                (0, 15, NONE),
                (1, 4, NONE),
                (2, -1, UNKNOWN_TOPIC_OR_PARTITION)
            ],
            "v{v}"
        );
        assert_eq!(c.list_offset(&topic, 0, -2), (NONE, 15), "v{v}: earliest");
        assert_eq!(c.list_offset(&topic, 1, -2), (NONE, 4));
        assert_eq!(c.list_offset(&topic, 1, -1), (NONE, 4), "latest stays");
        // fetch below the new start is out of range and reports it
        let (code, start, hw, _) = c.fetch(&topic, 0, 0);
        assert_eq!((code, start, hw), (OFFSET_OUT_OF_RANGE, 15, 30), "v{v}");
        let (code, start, _, bytes) = c.fetch(&topic, 0, 20);
        assert_eq!((code, start), (NONE, 15));
        assert!(bytes > 0, "records from the middle batch are still served");

        // below the current start: no change; beyond the high watermark: out of range
        let r = delete_records(&mut c, v, &topic, &[(0, 5), (1, 5), (0, -7)]);
        assert_eq!(
            r,
            [
                (0, 15, NONE),
                (1, -1, OFFSET_OUT_OF_RANGE),
                (0, -1, OFFSET_OUT_OF_RANGE)
            ],
            "v{v}"
        );
        // everything
        assert_eq!(
            delete_records(&mut c, v, &topic, &[(0, -1)]),
            [(0, 30, NONE)]
        );
        assert_eq!(c.list_offset(&topic, 0, -2), (NONE, 30));
        assert_eq!(c.produce(&topic, 0, build_uniform(1, 20, ts)), 30);

        let r = delete_records(&mut c, v, "nope", &[(0, 1)]);
        assert_eq!(r, [(0, -1, UNKNOWN_TOPIC_OR_PARTITION)], "v{v}");
    }

    // the log start is durable
    drop(c);
    broker.stop();
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    for v in versions(ApiKey::DeleteRecords) {
        let topic = format!("dr-v{v}");
        assert_eq!(c.list_offset(&topic, 0, -2), (NONE, 30));
        assert_eq!(c.list_offset(&topic, 0, -1), (NONE, 31));
        assert_eq!(c.list_offset(&topic, 1, -2), (NONE, 4));
    }
    broker.stop();
}

#[test]
fn describe_log_dirs_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let data_dir = std::path::absolute(dir.path()).expect("absolute");
    c.create_topic("ld-a", 3, &[]);
    c.create_topic("ld-b", 1, &[]);
    let ts = now_ms();
    c.produce("ld-a", 2, build_uniform(10, 100, ts));

    for v in versions(ApiKey::DescribeLogDirs) {
        let d = log_dirs(&mut c, v, None);
        assert_eq!(
            d.log_dir.as_str(),
            data_dir.to_str().expect("utf-8"),
            "v{v}"
        );
        let s = sizes(&d);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["ld-a", "ld-b"], "v{v}");
        assert_eq!(s["ld-a"].keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(s["ld-a"][&0], 0);
        assert!(s["ld-a"][&2] > 1000, "v{v}: {:?}", s["ld-a"]);
        assert_eq!(s["ld-b"][&0], 0);
        if v >= 4 {
            assert!(d.total_bytes > 0, "v{v}");
            assert!(
                d.usable_bytes >= 0 && d.usable_bytes <= d.total_bytes,
                "v{v}"
            );
        } else {
            assert_eq!(
                (d.total_bytes, d.usable_bytes),
                (-1, -1),
                "v{v}: not in this version"
            );
        }

        // only what was asked for; unknown topics and partitions are left out
        let d = log_dirs(
            &mut c,
            v,
            Some(vec![("ld-a", vec![2, 7, -1]), ("missing", vec![0])]),
        );
        let s = sizes(&d);
        assert_eq!(s.len(), 1, "v{v}: {s:?}");
        assert_eq!(s["ld-a"].keys().copied().collect::<Vec<_>>(), [2]);
        let d = log_dirs(&mut c, v, Some(vec![]));
        assert!(d.topics.is_empty(), "v{v}");
    }
    broker.stop();
}

/// AlterConfigs of segment.bytes reaches the live log (segments roll at the new size), and
/// DeleteRecords then drops whole segments, which DescribeLogDirs sees.
#[test]
fn segment_config_takes_effect_and_delete_records_frees_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    let ts = now_ms();
    c.create_topic("seg", 2, &[]);
    let size_of =
        |c: &mut Client| sizes(&log_dirs(c, 4, Some(vec![("seg", vec![0, 1])])))["seg"].clone();

    for _ in 0..4 {
        c.produce("seg", 0, build_uniform(5, 100, ts));
    }
    assert_eq!(
        segment_files(dir.path(), "seg", 0),
        1,
        "default 1 GiB segments"
    );
    let before = size_of(&mut c);
    assert!(before[&0] > 0);

    // one partition per shard: the change must reach both owners
    let r = incremental(
        &mut c,
        1,
        TOPIC,
        "seg",
        &[("segment.bytes", SET, Some("1024"))],
        false,
    );
    assert_eq!(r.0, NONE, "{:?}", r.1);
    let mut last = before[&0];
    for _ in 0..10 {
        c.produce("seg", 0, build_uniform(5, 100, ts));
        c.produce("seg", 1, build_uniform(5, 100, ts));
        let now = size_of(&mut c)[&0];
        assert!(now > last, "size grows: {now} after {last}");
        last = now;
    }
    let segs0 = segment_files(dir.path(), "seg", 0);
    let segs1 = segment_files(dir.path(), "seg", 1);
    assert!(segs0 >= 5, "partition 0 rolled at 1 KiB: {segs0} segments");
    assert!(
        segs1 >= 5,
        "partition 1 (other shard) rolled at 1 KiB: {segs1} segments"
    );

    // delete most of partition 0: whole segments below the new start go away
    let hw = c.list_offset("seg", 0, -1).1;
    assert_eq!(hw, 70);
    assert_eq!(
        delete_records(&mut c, 0, "seg", &[(0, 60)]),
        [(0, 60, NONE)]
    );
    assert_eq!(c.list_offset("seg", 0, -2), (NONE, 60));
    let after = size_of(&mut c);
    assert!(after[&0] < last / 2, "space freed: {} of {last}", after[&0]);
    assert!(segment_files(dir.path(), "seg", 0) < segs0);
    assert_eq!(
        c.list_offset("seg", 1, -2),
        (NONE, 0),
        "other partition untouched"
    );
    let (code, start, _, bytes) = c.fetch("seg", 0, 60);
    assert_eq!((code, start), (NONE, 60));
    assert!(bytes > 0);
    broker.stop();
}

/// AlterConfigs of retention.bytes reaches the live logs: the retention task trims them.
#[test]
fn retention_config_takes_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 2);
    cfg.retention_check_ms = 100;
    let broker = start(cfg);
    let mut c = Client::connect(broker.addr);
    let ts = now_ms();
    c.create_topic("ret", 2, &[("segment.bytes", "1024")]);
    for _ in 0..12 {
        c.produce("ret", 0, build_uniform(5, 100, ts));
        c.produce("ret", 1, build_uniform(5, 100, ts));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.list_offset("ret", 0, -2),
        (NONE, 0),
        "nothing deleted yet"
    );

    let (code, msg) = alter(
        &mut c,
        1,
        TOPIC,
        "ret",
        &[
            ("segment.bytes", Some("1024")),
            ("retention.bytes", Some("2048")),
        ],
        false,
    );
    assert_eq!(code, NONE, "{msg:?}");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let s0 = c.list_offset("ret", 0, -2).1;
        let s1 = c.list_offset("ret", 1, -2).1;
        if s0 > 0 && s1 > 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "retention did not run: starts {s0}, {s1}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = sizes(&log_dirs(&mut c, 4, Some(vec![("ret", vec![0, 1])])));
    for (p, size) in &s["ret"] {
        assert!(
            *size < 4096,
            "partition {p} trimmed to about retention.bytes: {size}"
        );
    }
    assert_eq!(c.list_offset("ret", 0, -1), (NONE, 60), "the tail is kept");
    broker.stop();
}

fn quorum_request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    DescribeQuorumRequest::default().with_topics(
        topics
            .iter()
            .map(|(t, ps)| {
                TopicData::default()
                    .with_topic_name(name(t))
                    .with_partitions(
                        ps.iter()
                            .map(|p| PartitionData::default().with_partition_index(*p))
                            .collect(),
                    )
            })
            .collect(),
    )
}

#[test]
fn describe_quorum_of_a_single_node_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(config(dir.path(), 2));
    let mut c = Client::connect(broker.addr);
    for v in versions(ApiKey::DescribeQuorum) {
        let before = now_ms();
        let r: DescribeQuorumResponse = c.call(
            ApiKey::DescribeQuorum,
            v,
            &quorum_request(&[("__cluster_metadata", &[0])]),
        );
        let after = now_ms();
        assert_eq!(r.error_code, NONE, "v{v}");
        assert_eq!(r.topics.len(), 1, "v{v}");
        assert_eq!(r.topics[0].topic_name.0.as_str(), "__cluster_metadata");
        let p = &r.topics[0].partitions[..];
        assert_eq!(p.len(), 1, "v{v}");
        let p = &p[0];
        assert_eq!((p.partition_index, p.error_code), (0, NONE), "v{v}");
        // a quorum of one: this node leads at epoch 0 with nothing committed
        assert_eq!(
            (p.leader_id, p.leader_epoch, p.high_watermark),
            (BrokerId(0), 0, 0),
            "v{v}"
        );
        assert_eq!(p.current_voters.len(), 1, "v{v}");
        let me = &p.current_voters[0];
        assert_eq!((me.replica_id, me.log_end_offset), (BrokerId(0), 0), "v{v}");
        if v >= 1 {
            for t in [me.last_fetch_timestamp, me.last_caught_up_timestamp] {
                assert!((before..=after).contains(&t), "v{v}: {t}");
            }
        }
        assert!(p.observers.is_empty(), "v{v}");
        if v >= 2 {
            assert_eq!(r.nodes.len(), 1);
            assert_eq!(r.nodes[0].node_id, BrokerId(0));
            let l = &r.nodes[0].listeners;
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].host.as_str(), "127.0.0.1");
            assert_eq!(l[0].port, broker.addr.port());
        }
    }
    // anything but exactly __cluster_metadata-0: UNKNOWN_TOPIC_OR_PARTITION on each partition
    // named, as Kafka's Raft leader answers
    for (topics, v) in [
        (&[("__cluster_metadata", &[1][..])][..], 0),
        (&[("__cluster_metadata", &[0, 1][..])][..], 1),
        (&[("other", &[0][..])][..], 2),
        (
            &[("__cluster_metadata", &[0][..]), ("other", &[0][..])][..],
            2,
        ),
    ] {
        let r: DescribeQuorumResponse = c.call(ApiKey::DescribeQuorum, v, &quorum_request(topics));
        assert_eq!(r.error_code, NONE, "{topics:?}");
        let got: Vec<(String, Vec<(i32, i16)>)> = r
            .topics
            .iter()
            .map(|t| {
                (
                    t.topic_name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.error_code))
                        .collect(),
                )
            })
            .collect();
        let want: Vec<(String, Vec<(i32, i16)>)> = topics
            .iter()
            .map(|(t, ps)| {
                (
                    t.to_string(),
                    ps.iter()
                        .map(|p| (*p, UNKNOWN_TOPIC_OR_PARTITION))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(got, want, "v{v}");
    }
    let r: DescribeQuorumResponse = c.call(ApiKey::DescribeQuorum, 2, &quorum_request(&[]));
    assert_eq!((r.error_code, r.topics.len()), (NONE, 0));
}
