//! The error codes a response carries, for `sluice_request_errors_total`: every non-zero code
//! counts once, top level and per topic / partition / group alike (Kafka's `ErrorsPerSec`).

use kafka_protocol::messages::*;

/// Calls `f` with each error code in a response (zeros included; the caller skips them).
pub trait ResponseErrors {
    fn each_error(&self, f: &mut dyn FnMut(i16));
}

/// Calls `$f` with every `error_code` at the end of a path of lists:
/// `walk!(f, self; topics / partitions / error_code)`.
macro_rules! walk {
    ($f:ident, $e:expr; $code:ident) => {
        $f($e.$code)
    };
    ($f:ident, $e:expr; $list:ident / $($rest:tt)+) => {
        for x in &$e.$list {
            walk!($f, x; $($rest)+);
        }
    };
}

/// `Response => [path, ...]`: the response's error codes are at these paths.
macro_rules! errors {
    ($($t:ty => [$($($seg:ident)/+),+]);* $(;)?) => {$(
        impl ResponseErrors for $t {
            fn each_error(&self, f: &mut dyn FnMut(i16)) {
                $(walk!(f, self; $($seg)/+);)+
            }
        }
    )*};
}

errors! {
    ApiVersionsResponse => [error_code];
    JoinGroupResponse => [error_code];
    SyncGroupResponse => [error_code];
    HeartbeatResponse => [error_code];
    ConsumerGroupHeartbeatResponse => [error_code];
    ShareGroupHeartbeatResponse => [error_code];
    ListGroupsResponse => [error_code];
    DescribeClusterResponse => [error_code];
    DescribeQuorumResponse => [error_code];
    InitProducerIdResponse => [error_code];
    AddOffsetsToTxnResponse => [error_code];
    EndTxnResponse => [error_code];
    DescribeAclsResponse => [error_code];
    SaslHandshakeResponse => [error_code];
    SaslAuthenticateResponse => [error_code];
    DescribeUserScramCredentialsResponse => [error_code];
    ListTransactionsResponse => [error_code];

    CreateTopicsResponse => [topics/error_code];
    DeleteTopicsResponse => [responses/error_code];
    CreatePartitionsResponse => [results/error_code];
    DescribeConfigsResponse => [results/error_code];
    AlterConfigsResponse => [responses/error_code];
    IncrementalAlterConfigsResponse => [responses/error_code];
    DeleteGroupsResponse => [results/error_code];
    DescribeGroupsResponse => [groups/error_code];
    ConsumerGroupDescribeResponse => [groups/error_code];
    ShareGroupDescribeResponse => [groups/error_code];
    DescribeTransactionsResponse => [transaction_states/error_code];
    CreateAclsResponse => [results/error_code];
    DeleteAclsResponse => [filter_results/error_code];
    AlterUserScramCredentialsResponse => [results/error_code];
    DescribeClientQuotasResponse => [error_code];
    AlterClientQuotasResponse => [entries/error_code];

    ProduceResponse => [responses/partition_responses/error_code];
    ListOffsetsResponse => [topics/partitions/error_code];
    OffsetCommitResponse => [topics/partitions/error_code];
    TxnOffsetCommitResponse => [topics/partitions/error_code];
    DeleteRecordsResponse => [topics/partitions/error_code];
    OffsetForLeaderEpochResponse => [topics/partitions/error_code];
    DescribeProducersResponse => [topics/partitions/error_code];

    MetadataResponse => [error_code, topics/error_code, topics/partitions/error_code];
    DescribeTopicPartitionsResponse => [topics/error_code, topics/partitions/error_code];
    FindCoordinatorResponse => [error_code, coordinators/error_code];
    LeaveGroupResponse => [error_code, members/error_code];
    DescribeLogDirsResponse => [error_code, results/error_code];
    OffsetDeleteResponse => [error_code, topics/partitions/error_code];
    ShareFetchResponse => [error_code, responses/partitions/error_code, responses/partitions/acknowledge_error_code];
    ShareAcknowledgeResponse => [error_code, responses/partitions/error_code];
    OffsetFetchResponse => [
        error_code,
        topics/partitions/error_code,
        groups/error_code,
        groups/topics/partitions/error_code
    ];
    AddPartitionsToTxnResponse => [
        error_code,
        results_by_topic_v3_and_below/results_by_partition/partition_error_code,
        results_by_transaction/topic_results/results_by_partition/partition_error_code
    ];
    WriteTxnMarkersResponse => [markers/topics/partitions/error_code];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_counts_every_partition() {
        let r = ProduceResponse::default().with_responses(vec![
            produce_response::TopicProduceResponse::default().with_partition_responses(vec![
                produce_response::PartitionProduceResponse::default().with_error_code(6),
                produce_response::PartitionProduceResponse::default(),
                produce_response::PartitionProduceResponse::default().with_error_code(6),
            ]),
        ]);
        let mut seen = Vec::new();
        r.each_error(&mut |c| seen.push(c));
        assert_eq!(seen, vec![6, 0, 6]);
    }

    #[test]
    fn offset_fetch_counts_top_level_groups_and_partitions() {
        use offset_fetch_response::*;
        let part = |c| OffsetFetchResponsePartitions::default().with_error_code(c);
        let r = OffsetFetchResponse::default()
            .with_error_code(1)
            .with_topics(vec![OffsetFetchResponseTopic::default().with_partitions(
                vec![OffsetFetchResponsePartition::default().with_error_code(2)],
            )])
            .with_groups(vec![OffsetFetchResponseGroup::default()
                .with_error_code(3)
                .with_topics(vec![
                    OffsetFetchResponseTopics::default().with_partitions(vec![part(4), part(5)])
                ])]);
        let mut seen = Vec::new();
        r.each_error(&mut |c| seen.push(c));
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    }
}
