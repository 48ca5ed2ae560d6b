//! Client quotas on the wire (KIP-546 DescribeClientQuotas / AlterClientQuotas, and
//! throttle_time_ms with connection muting): filters, validation codes and messages,
//! validate_only, removal, durability over a restart, and throttling of produce, fetch and
//! request time.

mod common;

#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

use std::time::Instant;

use bytes::Bytes;
use common::{config, name, sb, start, start_with, Client};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use sluice_engine::batch;

type Ent<'a> = &'a [(&'a str, Option<&'a str>)];
/// Described entities ("type=name,..." with `<default>`) and their sorted values, or the
/// error code and message.
type Described = Result<Vec<(String, Vec<(String, f64)>)>, (i16, String)>;

fn entry(entity: Ent<'_>, ops: &[(&str, f64, bool)]) -> EntryData {
    EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(sb(t))
                        .with_entity_name(n.map(sb))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v, remove)| {
                    OpData::default()
                        .with_key(sb(k))
                        .with_value(*v)
                        .with_remove(*remove)
                })
                .collect(),
        )
}

fn alter(c: &mut Client, entries: Vec<EntryData>, validate_only: bool) -> Vec<(i16, String)> {
    let req = AlterClientQuotasRequest::default()
        .with_entries(entries)
        .with_validate_only(validate_only);
    let r: AlterClientQuotasResponse = c.call(ApiKey::AlterClientQuotas, 1, &req);
    r.entries
        .iter()
        .map(|e| {
            (
                e.error_code,
                e.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn set(c: &mut Client, entity: Ent<'_>, key: &str, v: f64) {
    let r = alter(c, vec![entry(entity, &[(key, v, false)])], false);
    assert_eq!(
        r,
        vec![(0, String::new())],
        "setting {key}={v} on {entity:?}"
    );
}

/// Entities (as "type=name" joined, `<default>` for null) and their values, sorted.
fn describe(c: &mut Client, comps: &[(&str, i8, Option<&str>)], strict: bool) -> Described {
    let req = DescribeClientQuotasRequest::default()
        .with_components(
            comps
                .iter()
                .map(|(t, m, n)| {
                    ComponentData::default()
                        .with_entity_type(sb(t))
                        .with_match_type(*m)
                        .with_match(n.map(sb))
                })
                .collect(),
        )
        .with_strict(strict);
    let r: DescribeClientQuotasResponse = c.call(ApiKey::DescribeClientQuotas, 1, &req);
    if r.error_code != 0 {
        assert!(r.entries.is_none());
        return Err((
            r.error_code,
            r.error_message.map(|m| m.to_string()).unwrap_or_default(),
        ));
    }
    let mut out: Vec<(String, Vec<(String, f64)>)> = r
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let ent = e
                .entity
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.entity_type,
                        p.entity_name.as_ref().map_or("<default>", |n| n.as_str())
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut vals: Vec<(String, f64)> = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            vals.sort_by(|a, b| a.0.cmp(&b.0));
            (ent, vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn names(r: Described) -> Vec<String> {
    r.expect("described").into_iter().map(|(e, _)| e).collect()
}

#[test]
fn api_versions_advertise_both_apis() {
    let dir = tempfile::tempdir().expect("tmp");
    let b = start(dir.path(), 1);
    let mut c = Client::connect(b.addr);
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    for key in [ApiKey::DescribeClientQuotas, ApiKey::AlterClientQuotas] {
        let v = r
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} advertised"));
        assert_eq!((v.min_version, v.max_version), (0, 1), "{key:?}");
    }
    b.stop();
}

#[test]
fn alter_and_describe_as_kafka() {
    let dir = tempfile::tempdir().expect("tmp");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    set(
        &mut c,
        &[("client-id", Some("c1"))],
        "producer_byte_rate",
        1024.0,
    );
    set(&mut c, &[("client-id", None)], "consumer_byte_rate", 2048.0);
    set(
        &mut c,
        &[("user", Some("alice"))],
        "request_percentage",
        12.5,
    );
    set(
        &mut c,
        &[("user", Some("alice")), ("client-id", Some("c1"))],
        "producer_byte_rate",
        4096.0,
    );
    set(
        &mut c,
        &[("user", None), ("client-id", None)],
        "producer_byte_rate",
        100.0,
    );

    // everything (no components, not strict)
    let all = describe(&mut c, &[], false).expect("all");
    assert_eq!(
        all,
        vec![
            (
                "client-id=<default>".into(),
                vec![("consumer_byte_rate".into(), 2048.0)]
            ),
            (
                "client-id=c1".into(),
                vec![("producer_byte_rate".into(), 1024.0)]
            ),
            (
                "user=<default>,client-id=<default>".into(),
                vec![("producer_byte_rate".into(), 100.0)]
            ),
            (
                "user=alice".into(),
                vec![("request_percentage".into(), 12.5)]
            ),
            (
                "user=alice,client-id=c1".into(),
                vec![("producer_byte_rate".into(), 4096.0)]
            ),
        ]
    );
    // exact, not strict: every entity with that client-id
    assert_eq!(
        names(describe(&mut c, &[("client-id", 0, Some("c1"))], false)),
        vec!["client-id=c1", "user=alice,client-id=c1"]
    );
    // strict: only entities of exactly those types
    assert_eq!(
        names(describe(&mut c, &[("client-id", 0, Some("c1"))], true)),
        vec!["client-id=c1"]
    );
    // default
    assert_eq!(
        names(describe(&mut c, &[("client-id", 1, None)], false)),
        vec!["client-id=<default>", "user=<default>,client-id=<default>"]
    );
    // any user, strict
    assert_eq!(
        names(describe(&mut c, &[("user", 2, None)], true)),
        vec!["user=alice"]
    );
    assert_eq!(
        names(describe(
            &mut c,
            &[("user", 2, None), ("client-id", 2, None)],
            true
        )),
        vec![
            "user=<default>,client-id=<default>",
            "user=alice,client-id=c1"
        ]
    );
    // bad filters: INVALID_REQUEST with Kafka's messages
    for (comps, msg) in [
        (
            vec![("client-id", 0i8, None)],
            "Request specified MATCH_TYPE_EXACT, but set match string to null.",
        ),
        (
            vec![("client-id", 1, Some("x"))],
            "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.",
        ),
        (vec![("client-id", 9, None)], "Unknown match type 9"),
        (vec![("group", 2, None)], "Invalid entity type group"),
        (
            vec![("user", 2, None), ("user", 1, None)],
            "Entity type user cannot appear more than once in the filter.",
        ),
    ] {
        assert_eq!(
            describe(&mut c, &comps, false),
            Err((42, msg.to_string())),
            "{comps:?}"
        );
    }

    // validate_only: answered, nothing stored
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("v"))],
            &[("producer_byte_rate", 5.0, false)],
        )],
        true,
    );
    assert_eq!(r, vec![(0, String::new())]);
    assert!(names(describe(&mut c, &[("client-id", 0, Some("v"))], false)).is_empty());

    // bad entries: per entry INVALID_REQUEST; the good one in the same request is applied
    let r = alter(
        &mut c,
        vec![
            entry(&[("client-id", Some("x"))], &[("bogus_rate", 1.0, false)]),
            entry(
                &[("client-id", Some("x"))],
                &[("producer_byte_rate", 10.5, false)],
            ),
            entry(
                &[("client-id", Some("x"))],
                &[("consumer_byte_rate", 0.0, false)],
            ),
            entry(&[], &[("producer_byte_rate", 1.0, false)]),
            entry(
                &[("group", Some("g"))],
                &[("producer_byte_rate", 1.0, false)],
            ),
            entry(&[("user", Some(""))], &[("producer_byte_rate", 1.0, false)]),
            entry(
                &[("client-id", Some("x"))],
                &[
                    ("producer_byte_rate", 1.0, false),
                    ("producer_byte_rate", 2.0, false),
                ],
            ),
            entry(
                &[("client-id", Some("ok"))],
                &[("producer_byte_rate", 777.0, false)],
            ),
        ],
        false,
    );
    let msgs: Vec<&str> = r.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        r.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        vec![42, 42, 42, 42, 42, 42, 42, 0]
    );
    assert_eq!(msgs[0], "Invalid configuration key bogus_rate");
    assert_eq!(msgs[1], "producer_byte_rate cannot be a fractional value.");
    assert_eq!(msgs[2], "Quota consumer_byte_rate must be greater than 0");
    assert_eq!(msgs[3], "Invalid empty client quota entity");
    assert_eq!(msgs[4], "Unhandled client quota entity type: group");
    assert_eq!(msgs[5], "Empty user not supported");
    assert!(
        msgs[6].starts_with("Duplicate quota key producer_byte_rate"),
        "{}",
        msgs[6]
    );
    assert!(names(describe(&mut c, &[("client-id", 0, Some("x"))], false)).is_empty());
    assert_eq!(
        describe(&mut c, &[("client-id", 0, Some("ok"))], true).expect("ok"),
        vec![(
            "client-id=ok".into(),
            vec![("producer_byte_rate".into(), 777.0)]
        )]
    );

    // remove=true drops a key; the last key removed drops the entity
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("ok"))],
            &[("producer_byte_rate", 0.0, true)],
        )],
        false,
    );
    assert_eq!(r, vec![(0, String::new())]);
    assert!(names(describe(&mut c, &[("client-id", 0, Some("ok"))], false)).is_empty());
    b.stop();

    // durable: the same quotas after a restart
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    assert_eq!(describe(&mut c, &[], false).expect("after restart"), all);
    b.stop();
}

fn big_batch(bytes: usize) -> Vec<u8> {
    let value = vec![b'x'; bytes];
    batch::build(&[batch::NewRecord {
        key: None,
        value: Some(&value),
        timestamp: 1,
    }])
}

fn produce(c: &mut Client, topic: &str, acks: i16, bytes: usize) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(big_batch(bytes))))])]);
    c.call(ApiKey::Produce, 9, &req)
}

#[test]
fn produce_over_the_quota_is_throttled_and_the_connection_muted() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path(), 2);
    cfg.quota_windows = sluice_server::quota::Windows {
        num: 3,
        size_ms: 1000,
    };
    let b = start_with(cfg);
    let mut admin = Client::connect(b.addr);
    admin.create_topic("t", 1, &[]);
    set(
        &mut admin,
        &[("client-id", Some("slow"))],
        "producer_byte_rate",
        1000.0,
    );

    let mut slow = Client::connect_as(b.addr, "slow");
    // a ~3100-byte request against 1000 B/s over 2 padded windows: 1550 B/s observed, throttle
    // (1550 - 1000) / 1000 * 2 s, about 1.1 s
    let r = produce(&mut slow, "t", -1, 3000);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 0,
        "stored"
    );
    let t = r.throttle_time_ms;
    assert!((1_000..=1_300).contains(&t), "throttle {t} ms");
    // the answer came at once; the next request is not read before the throttle has passed
    let asked = Instant::now();
    let _: MetadataResponse = slow.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    let waited = asked.elapsed().as_millis() as i32;
    assert!(waited >= t - 200, "muted {waited} ms of a {t} ms throttle");

    // another client id is not limited, on its own connections
    let mut fast = Client::connect_as(b.addr, "fast");
    for _ in 0..5 {
        let r = produce(&mut fast, "t", -1, 20_000);
        assert_eq!(r.throttle_time_ms, 0);
    }
    // acks=0: no answer, but the connection is muted all the same
    let mut quiet = Client::connect_as(b.addr, "slow");
    let req = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("t"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(big_batch(3000))))])]);
    let asked = Instant::now();
    quiet.send(ApiKey::Produce, 9, &req);
    // the first request after it may already be in flight (read before the produce was
    // handled); the one after that waits for the throttle, which is over 1 s by now (6 kB
    // in about 2 s of windows against 1000 B/s)
    for _ in 0..2 {
        let _: MetadataResponse = quiet.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    }
    let waited = asked.elapsed().as_millis();
    assert!(waited >= 900, "muted after an acks=0 produce: {waited} ms");
    b.stop();
}

#[test]
fn fetch_over_the_quota_answers_empty_with_the_throttle() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path(), 2);
    // short windows so the test does not wait long
    cfg.quota_windows = sluice_server::quota::Windows {
        num: 2,
        size_ms: 1000,
    };
    let b = start_with(cfg);
    let mut admin = Client::connect(b.addr);
    admin.create_topic("t", 1, &[]);
    for _ in 0..4 {
        produce(&mut admin, "t", -1, 10_000);
    }
    set(
        &mut admin,
        &[("client-id", Some("reader"))],
        "consumer_byte_rate",
        15_000.0,
    );
    let mut c = Client::connect_as(b.addr, "reader");
    let fetch = |c: &mut Client| -> FetchResponse {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("t"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        c.call(ApiKey::Fetch, 12, &req)
    };
    // 40 kB in one response against 15 kB/s over 1 padded window: refused, empty
    let r = fetch(&mut c);
    assert!(r.throttle_time_ms > 0, "throttled");
    assert!(r.responses.is_empty(), "a throttled fetch carries no data");
    // an unthrottled reader gets the data
    let (err, _, hw, bytes) = admin.fetch("t", 0, 0);
    assert_eq!((err, hw), (0, 4));
    assert!(bytes > 40_000);
    b.stop();
}

#[test]
fn request_percentage_throttles_every_response_type() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path(), 1);
    // 200 ms windows (finer than quota.window.size.seconds allows) keep the mutes short
    cfg.quota_windows = sluice_server::quota::Windows {
        num: 2,
        size_ms: 200,
    };
    let b = start_with(cfg);
    let mut admin = Client::connect(b.addr);
    admin.create_topic("t", 1, &[]);
    // a millionth of a thread: a few requests exceed it
    set(
        &mut admin,
        &[("user", Some("ANONYMOUS")), ("client-id", Some("busy"))],
        "request_percentage",
        0.000001,
    );
    let mut c = Client::connect_as(b.addr, "busy");
    let mut throttled = 0;
    for _ in 0..3 {
        let m: MetadataResponse = c.call(ApiKey::Metadata, 12, &MetadataRequest::default());
        let l: ListOffsetsResponse = c.call(
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default().with_replica_id((-1).into()),
        );
        let a: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        for t in [m.throttle_time_ms, l.throttle_time_ms, a.throttle_time_ms] {
            assert!((0..=200).contains(&t), "capped at one window: {t}");
            throttled += (t > 0) as usize;
        }
    }
    assert!(throttled >= 8, "{throttled} of 9 responses throttled");
    // the admin client (another client id) is not
    let m: MetadataResponse = admin.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(m.throttle_time_ms, 0);
    b.stop();
}
