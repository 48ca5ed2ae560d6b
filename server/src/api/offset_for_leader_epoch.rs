//! OffsetForLeaderEpoch (KIP-101 / KIP-320): for each partition and leader epoch, the largest
//! epoch at or below it that the leader's log knows and the offset where the next epoch starts
//! (the log end offset for the current epoch). Consumers use it to detect truncation after a
//! failover; sluice's own followers use Fetch's diverging epoch instead.
//!
//! Only the partition leader answers (Kafka answers followers' debug requests too, replica id
//! -2; sluice does not). The current leader epoch is checked first (FENCED_LEADER_EPOCH /
//! UNKNOWN_LEADER_EPOCH), then leadership, as Kafka's `Partition.getLocalLog` does.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::codes;
use crate::shard::{Shard, TopicPartition};

const UNDEFINED: (i32, i64) = (-1, -1);

/// Kafka's answer from the leader's epoch cache. A Kafka leader records its own epoch in the
/// cache as soon as it is elected (at the log end offset then); sluice's log records an epoch
/// with the first batch written in it. So while the current leader epoch `current` is above
/// every epoch the log knows (`latest`), this answers as if the entry (`current`, `leo`) were
/// there: nothing was appended since the election, so the log end is where that epoch starts.
/// `from_log` is the log's own answer (`PartitionLog::end_offset_for_epoch(requested)`).
pub fn end_offset(
    from_log: (i32, i64),
    latest: Option<i32>,
    current: i32,
    requested: i32,
    leo: i64,
) -> (i32, i64) {
    if requested < 0 {
        return UNDEFINED;
    }
    if current < 0 || latest.is_some_and(|l| l >= current) {
        return from_log;
    }
    // the virtual entry (current, leo) follows every real one
    match latest {
        _ if requested == current => (current, leo),
        _ if requested > current => UNDEFINED,
        // between the latest real epoch and the current one: the latest real epoch, which
        // ends where the current one starts
        Some(l) if requested > l => (l, leo),
        Some(_) => from_log,
        // no real entry: Kafka answers the requested epoch itself, ending where `current`
        // starts
        None => (requested, leo),
    }
}

/// (error, leader epoch, end offset) of one partition, on the shard that owns its log.
async fn lookup_local(
    shard: &Rc<Shard>,
    tp: TopicPartition,
    current: i32,
    requested: i32,
) -> (i16, i32, i64) {
    let log = match shard.owned_log(&tp).await {
        Ok(Some(l)) => l,
        Ok(None) => return (codes::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
        Err(_) => return (codes::KAFKA_STORAGE_ERROR, -1, -1),
    };
    let leo = log.offsets().log_end.get() as i64;
    let (epoch, end) = end_offset(
        log.end_offset_for_epoch(requested),
        log.latest_epoch(),
        current,
        requested,
        leo,
    );
    (codes::NONE, epoch, end)
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shared = &shard.shared;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.to_string();
        let owners = shard.topic_owners(&name).unwrap_or_default();
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let tp = TopicPartition::new(&name, p.partition);
            let owner = usize::try_from(p.partition)
                .ok()
                .and_then(|i| owners.get(i).copied());
            let view = shared.partition_view(&name, p.partition);
            let (code, epoch, end) = match (owner, &view) {
                (None, _) | (_, None) => (codes::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                (Some(o), Some(v)) => {
                    let checked =
                        crate::cluster::replica::check_epoch(shared, &tp, p.current_leader_epoch)
                            .and_then(|()| shared.leader_check(&name, p.partition));
                    match checked {
                        Err(code) => (code, -1, -1),
                        Ok(()) => {
                            let (current, requested) = (v.leader_epoch, p.leader_epoch);
                            shard
                                .call(o, move |s| async move {
                                    lookup_local(&s, tp, current, requested).await
                                })
                                .await
                                .unwrap_or((codes::KAFKA_STORAGE_ERROR, -1, -1))
                        }
                    }
                }
            };
            parts.push(
                EpochEndOffset::default()
                    .with_error_code(code)
                    .with_partition(p.partition)
                    .with_leader_epoch(epoch)
                    .with_end_offset(end),
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::end_offset;

    #[test]
    fn the_log_answers_when_it_knows_the_current_epoch() {
        // entries (0, 0), (2, 10); leo 15; current epoch 2
        let log = |req: i32| match req {
            0 | 1 => (0, 10),
            2 => (2, 15),
            _ => (-1, -1),
        };
        for req in 0..4 {
            assert_eq!(end_offset(log(req), Some(2), 2, req, 15), log(req));
        }
        assert_eq!(end_offset((-1, -1), Some(2), 2, -1, 15), (-1, -1));
    }

    #[test]
    fn a_new_leader_answers_its_epoch_before_writing_in_it() {
        // entries (0, 0), (2, 10); leo 15; elected with epoch 4, nothing written since
        let log = |req: i32| match req {
            0 | 1 => (0, 10),
            2 => (2, 15),
            _ => (-1, -1),
        };
        let at = |req| end_offset(log(req), Some(2), 4, req, 15);
        assert_eq!(at(0), (0, 10));
        assert_eq!(at(1), (0, 10));
        assert_eq!(at(2), (2, 15));
        assert_eq!(at(3), (2, 15));
        assert_eq!(at(4), (4, 15));
        assert_eq!(at(5), (-1, -1));
        assert_eq!(at(-1), (-1, -1));
    }

    #[test]
    fn an_empty_log_answers_the_current_epoch_at_its_end() {
        assert_eq!(end_offset((-1, -1), None, 0, 0, 0), (0, 0));
        assert_eq!(end_offset((-1, -1), None, 3, 1, 7), (1, 7));
        assert_eq!(end_offset((-1, -1), None, 3, 3, 7), (3, 7));
        assert_eq!(end_offset((-1, -1), None, 3, 4, 7), (-1, -1));
    }
}
