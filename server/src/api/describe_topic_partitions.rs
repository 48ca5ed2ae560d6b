//! DescribeTopicPartitions (KIP-966; kafka-topics.sh --describe prefers it to Metadata): the
//! topics' ids and partitions (leader, leader epoch, replicas, ISR, offline replicas) as
//! Metadata describes them, paged. Kafka's rules: topics sorted by name; an empty topic list
//! means every topic; at most `response_partition_limit` partitions (capped at 2000, at
//! least one) per response, and `next_cursor` names the first partition left out; a request's
//! cursor starts there (topics before the cursor's name are skipped). Eligible leader
//! replicas are empty: sluice has no ELR (unclean election is off and the ISR is the
//! election's set).

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::codes;
use super::metadata::{broker_ids, partition_rows};
use crate::cluster::coordinators::is_internal;
use crate::shard::Shard;

/// Kafka's max.request.partition.size.limit default.
pub const MAX_PARTITIONS: i32 = 2000;

/// What one topic contributes to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEntry {
    /// Partitions `from..to` of a known topic.
    Topic {
        name: String,
        from: i32,
        to: i32,
    },
    Unknown(String),
}

/// The page of a paged description: which partitions of which topics it holds and where the
/// next one starts. `topics`: (name, partition count or `None` when unknown), sorted by name;
/// `cursor`: (topic, first partition) to resume at; `limit`: the request's partition limit.
pub fn page(
    topics: &[(String, Option<i32>)],
    cursor: Option<(&str, i32)>,
    limit: i32,
) -> (Vec<PageEntry>, Option<(String, i32)>) {
    let mut remaining = limit.clamp(1, MAX_PARTITIONS);
    let mut out = Vec::new();
    let start_name = cursor.map_or("", |c| c.0);
    for (name, count) in topics.iter().filter(|(n, _)| n.as_str() >= start_name) {
        if remaining == 0 {
            // every earlier topic was complete: the next page starts at this one
            return (out, Some((name.clone(), 0)));
        }
        let Some(count) = *count else {
            out.push(PageEntry::Unknown(name.clone()));
            continue;
        };
        let from = match cursor {
            Some((c, p)) if c == name => p,
            _ => 0,
        };
        let to = count.min(from.saturating_add(remaining)).max(from);
        out.push(PageEntry::Topic {
            name: name.clone(),
            from,
            to,
        });
        if to < count {
            return (out, Some((name.clone(), to)));
        }
        remaining -= to - from;
    }
    (out, None)
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let shared = &shard.shared;
    let mut names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
    let cursor = req
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    if let Some((_, p)) = &cursor {
        if *p < 0 {
            // Kafka fails the request (InvalidRequestException): every topic gets the error
            names.sort();
            names.dedup();
            let topics = names
                .into_iter()
                .map(|n| {
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n))))
                        .with_error_code(codes::INVALID_REQUEST)
                })
                .collect();
            return DescribeTopicPartitionsResponse::default().with_topics(topics);
        }
    }
    let all = names.is_empty();
    let (entries, next) = {
        let st = shared.catalog.read();
        let topics: Vec<(String, Option<i32>)> = if all {
            st.topics
                .values()
                .map(|t| (t.name.clone(), Some(t.partitions())))
                .collect()
        } else {
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|n| {
                    let count = st.topics.get(&n).map(|t| t.partitions());
                    (n, count)
                })
                .collect()
        };
        page(
            &topics,
            cursor.as_ref().map(|(n, p)| (n.as_str(), *p)),
            req.response_partition_limit,
        )
    };
    let mut topics = Vec::with_capacity(entries.len());
    for e in entries {
        match e {
            PageEntry::Unknown(name) => topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
            ),
            PageEntry::Topic { name, from, to } => {
                let id = shared.catalog.read().topics.get(&name).map(|t| t.id);
                let Some(id) = id else {
                    // deleted meanwhile
                    if !all {
                        topics.push(
                            DescribeTopicPartitionsResponseTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(name))))
                                .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
                        );
                    }
                    continue;
                };
                let partitions = partition_rows(shared, &name, from..to)
                    .into_iter()
                    .map(|r| {
                        DescribeTopicPartitionsResponsePartition::default()
                            .with_error_code(r.error_code)
                            .with_partition_index(r.index)
                            .with_leader_id(BrokerId(r.view.leader))
                            .with_leader_epoch(r.view.leader_epoch)
                            .with_replica_nodes(broker_ids(r.view.replicas))
                            .with_isr_nodes(broker_ids(r.view.isr))
                            .with_eligible_leader_replicas(Some(Vec::new()))
                            .with_last_known_elr(Some(Vec::new()))
                            .with_offline_replicas(broker_ids(r.view.offline))
                    })
                    .collect();
                topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_is_internal(is_internal(&name))
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_topic_id(id)
                        .with_partitions(partitions),
                );
            }
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next.map(|(name, p)| {
            Cursor::default()
                .with_topic_name(TopicName(StrBytes::from_string(name)))
                .with_partition_index(p)
        }))
}

#[cfg(test)]
mod tests {
    use super::{page, PageEntry};

    fn t(name: &str, from: i32, to: i32) -> PageEntry {
        PageEntry::Topic {
            name: name.into(),
            from,
            to,
        }
    }

    fn topics() -> Vec<(String, Option<i32>)> {
        vec![
            ("a".into(), Some(3)),
            ("b".into(), None),
            ("c".into(), Some(2)),
            ("d".into(), Some(4)),
        ]
    }

    #[test]
    fn everything_fits() {
        let (e, next) = page(&topics(), None, 2000);
        assert_eq!(
            e,
            vec![
                t("a", 0, 3),
                PageEntry::Unknown("b".into()),
                t("c", 0, 2),
                t("d", 0, 4)
            ]
        );
        assert_eq!(next, None);
    }

    #[test]
    fn a_limit_cuts_a_topic_and_the_cursor_resumes_there() {
        let (e, next) = page(&topics(), None, 4);
        assert_eq!(
            e,
            vec![t("a", 0, 3), PageEntry::Unknown("b".into()), t("c", 0, 1)]
        );
        assert_eq!(next, Some(("c".into(), 1)));
        let (e, next) = page(&topics(), Some(("c", 1)), 4);
        assert_eq!(e, vec![t("c", 1, 2), t("d", 0, 3)]);
        assert_eq!(next, Some(("d".into(), 3)));
        let (e, next) = page(&topics(), Some(("d", 3)), 4);
        assert_eq!(e, vec![t("d", 3, 4)]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_limit_reached_at_a_topic_end_points_at_the_next_topic() {
        let (e, next) = page(&topics(), None, 3);
        assert_eq!(e, vec![t("a", 0, 3)]);
        assert_eq!(next, Some(("b".into(), 0)));
        // limits below 1 are 1, above 2000 are 2000
        let (e, next) = page(&topics(), None, 0);
        assert_eq!(e, vec![t("a", 0, 1)]);
        assert_eq!(next, Some(("a".into(), 1)));
    }

    #[test]
    fn a_cursor_past_a_topic_end_gives_no_partitions() {
        let (e, next) = page(&topics(), Some(("a", 9)), 10);
        assert_eq!(e[0], t("a", 9, 9));
        assert_eq!(next, None);
    }
}
