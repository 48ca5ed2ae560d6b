//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3) and by timestamp.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::codes;
use crate::shard::{Shard, TopicPartition};

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

/// (error, timestamp, offset) of one lookup on the owning shard. `committed`: the reader uses
/// isolation_level=read_committed, so "latest" is the last stable offset.
pub async fn lookup_local(
    shard: &Rc<Shard>,
    tp: TopicPartition,
    ts: i64,
    committed: bool,
) -> (i16, i64, i64) {
    let log = match shard.owned_log(&tp).await {
        Ok(Some(l)) => l,
        Ok(None) => return (codes::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
        Err(_) => return (codes::KAFKA_STORAGE_ERROR, -1, -1),
    };
    let o = log.offsets();
    match ts {
        LATEST if committed => (codes::NONE, -1, log.last_stable_offset().get() as i64),
        LATEST => (codes::NONE, -1, o.high_watermark.get() as i64),
        EARLIEST => (codes::NONE, -1, o.log_start.get() as i64),
        MAX_TIMESTAMP => match log.max_timestamp_offset().await {
            Ok(Some((off, t))) => (codes::NONE, t, off.get() as i64),
            Ok(None) => (codes::NONE, -1, -1),
            Err(e) => (e.kafka_code(), -1, -1),
        },
        t if t >= 0 => match log.offset_for_timestamp(t).await {
            Ok(Some((off, found))) => (codes::NONE, found, off.get() as i64),
            Ok(None) => (codes::NONE, -1, -1),
            Err(e) => (e.kafka_code(), -1, -1),
        },
        _ => (codes::INVALID_REQUEST, -1, -1),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let committed = version >= 2 && req.isolation_level == 1;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let owners = shard.topic_owners(&name).unwrap_or_default();
        let mut parts = Vec::new();
        for p in t.partitions {
            let owner = usize::try_from(p.partition_index)
                .ok()
                .and_then(|i| owners.get(i).copied());
            let (code, ts, off) = match owner {
                None => (codes::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                Some(o) => {
                    let tp = TopicPartition::new(&name, p.partition_index);
                    let ts = p.timestamp;
                    shard
                        .call(o, move |s| async move {
                            lookup_local(&s, tp, ts, committed).await
                        })
                        .await
                        .unwrap_or((codes::KAFKA_STORAGE_ERROR, -1, -1))
                }
            };
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
                .with_timestamp(ts)
                .with_offset(off);
            if version >= 4 {
                r = r.with_leader_epoch(if code == codes::NONE { 0 } else { -1 });
            }
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
