//! Share groups (KIP-932) on the wire with a hand-written client: share-session epochs,
//! acquisition and acknowledgement, and Kafka error codes for bad input.

mod common;

#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

use bytes::Bytes;
use common::{name, sb, start, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use sluice_engine::batch;
use uuid::Uuid;

fn heartbeat(c: &mut Client, member: &str, epoch: i32) -> ShareGroupHeartbeatResponse {
    let req = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(sb("g")))
        .with_member_id(sb(member))
        .with_member_epoch(epoch)
        .with_subscribed_topic_names((epoch == 0).then(|| vec![name("q")]));
    c.call(ApiKey::ShareGroupHeartbeat, 1, &req)
}

fn share_fetch(
    c: &mut Client,
    member: Option<&str>,
    epoch: i32,
    topics: Vec<FetchTopic>,
    max_wait_ms: i32,
) -> ShareFetchResponse {
    let req = ShareFetchRequest::default()
        .with_group_id(Some(GroupId(sb("g"))))
        .with_member_id(member.map(sb))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(100)
        .with_topics(topics);
    c.call(ApiKey::ShareFetch, 1, &req)
}

fn ack(
    c: &mut Client,
    epoch: i32,
    topic: Uuid,
    first: i64,
    last: i64,
    types: Vec<i8>,
) -> ShareAcknowledgeResponse {
    let req = ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(sb("g"))))
        .with_member_id(Some(sb("m1")))
        .with_share_session_epoch(epoch)
        .with_topics(vec![AcknowledgeTopic::default()
            .with_topic_id(topic)
            .with_partitions(vec![AcknowledgePartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(vec![AckBatch::default()
                    .with_first_offset(first)
                    .with_last_offset(last)
                    .with_acknowledge_types(types)])])]);
    c.call(ApiKey::ShareAcknowledge, 1, &req)
}

fn ack_code(r: &ShareAcknowledgeResponse) -> i16 {
    if r.error_code != 0 {
        return r.error_code;
    }
    r.responses[0].partitions[0].error_code
}

#[test]
fn share_sessions_acquisition_and_errors_on_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path(), 2);
    let mut c = Client::connect(b.addr);
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name("q"))
            .with_num_partitions(1)
            .with_replication_factor(1)]),
    );
    let topic = created.topics[0].topic_id;
    let part0 = || {
        vec![FetchTopic::default()
            .with_topic_id(topic)
            .with_partitions(vec![FetchPartition::default().with_partition_index(0)])]
    };

    // no member id: INVALID_REQUEST; not a member: UNKNOWN_MEMBER_ID
    assert_eq!(share_fetch(&mut c, None, 0, part0(), 0).error_code, 42);
    assert_eq!(
        share_fetch(&mut c, Some("m1"), 0, part0(), 0).error_code,
        25
    );

    let j = heartbeat(&mut c, "m1", 0);
    assert_eq!((j.error_code, j.member_epoch), (0, 1));
    let a = j.assignment.expect("assignment on join");
    assert_eq!(a.topic_partitions[0].topic_id, topic);
    assert_eq!(a.topic_partitions[0].partitions, vec![0]);
    assert_eq!(
        heartbeat(&mut c, "m1", 7).error_code,
        110,
        "FENCED_MEMBER_EPOCH"
    );

    // no session yet: SHARE_SESSION_NOT_FOUND
    assert_eq!(
        share_fetch(&mut c, Some("m1"), 3, vec![], 0).error_code,
        122
    );
    // epoch 0 opens the session; the group starts at the end of the (empty) log
    let r = share_fetch(&mut c, Some("m1"), 0, part0(), 0);
    assert_eq!(r.error_code, 0);
    assert!(r.responses[0].partitions[0].acquired_records.is_empty());

    let recs: Vec<_> = (0..3)
        .map(|_| batch::NewRecord {
            key: None,
            value: Some(b"job".as_slice()),
            timestamp: 1,
        })
        .collect();
    let produced: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("q"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch::build(&recs))))])]),
    );
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    // epoch 1: the session's partitions, without naming them again
    let r = share_fetch(&mut c, Some("m1"), 1, vec![], 5000);
    assert_eq!(r.error_code, 0);
    let p = &r.responses[0].partitions[0];
    let got: Vec<_> = p
        .acquired_records
        .iter()
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect();
    assert_eq!(got, vec![(0, 2, 1)]);
    assert!(p.records.as_ref().is_some_and(|r| r.len() > 61));
    assert!(r.acquisition_lock_timeout_ms > 0);
    // the same epoch again: INVALID_SHARE_SESSION_EPOCH
    assert_eq!(
        share_fetch(&mut c, Some("m1"), 1, vec![], 0).error_code,
        123
    );

    // ShareAcknowledge cannot open a session
    assert_eq!(ack_code(&ack(&mut c, 0, topic, 0, 2, vec![1])), 123);
    // bad input: Kafka codes, nothing applied
    assert_eq!(ack_code(&ack(&mut c, 2, topic, 0, 2, vec![9])), 42);
    assert_eq!(ack_code(&ack(&mut c, 3, topic, 2, 0, vec![1])), 42);
    assert_eq!(ack_code(&ack(&mut c, 4, topic, 0, 2, vec![1, 1])), 42);
    assert_eq!(ack_code(&ack(&mut c, 5, topic, 0, i64::MAX, vec![1])), 121);
    assert_eq!(
        ack_code(&ack(&mut c, 6, Uuid::new_v4(), 0, 2, vec![1])),
        100
    );
    // accept 0, release 1, reject 2
    assert_eq!(ack_code(&ack(&mut c, 7, topic, 0, 2, vec![1, 2, 3])), 0);
    // none of them is acquired any more: INVALID_RECORD_STATE
    assert_eq!(ack_code(&ack(&mut c, 8, topic, 0, 0, vec![1])), 121);
    // only the released record comes back, delivered a second time
    let r = share_fetch(&mut c, Some("m1"), 9, vec![], 5000);
    let got: Vec<_> = r.responses[0].partitions[0]
        .acquired_records
        .iter()
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect();
    assert_eq!(got, vec![(1, 1, 2)]);

    let d: ShareGroupDescribeResponse = c.call(
        ApiKey::ShareGroupDescribe,
        1,
        &ShareGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb("g"))]),
    );
    let g = &d.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Stable"));
    assert_eq!(g.members.len(), 1);

    // leaving releases the member's records; closing needs no membership
    assert_eq!(heartbeat(&mut c, "m1", -1).member_epoch, -1);
    assert_eq!(share_fetch(&mut c, Some("m1"), -1, vec![], 0).error_code, 0);
    let j = heartbeat(&mut c, "m2", 0);
    assert_eq!(j.error_code, 0);
    assert_eq!(
        share_fetch(&mut c, Some("m2"), 0, part0(), 5000).responses[0].partitions[0]
            .acquired_records[0]
            .delivery_count,
        3,
        "the record m1 held when it left"
    );
    b.stop();
}
