//! The error codes a response carries, for `sluice_request_errors_total`: every non-zero code
//! counts once, top level and per topic / partition / group alike (Kafka's `ErrorsPerSec`).

use kafka_protocol::messages::*;

/// Calls `f` with each error code in a response (zeros included; the caller skips them).
pub trait ResponseErrors {
    fn each_error(&self, f: &mut dyn FnMut(i16));
}

macro_rules! top_level {
    ($($t:ty),* $(,)?) => {$(
        impl ResponseErrors for $t {
            fn each_error(&self, f: &mut dyn FnMut(i16)) {
                f(self.error_code);
            }
        }
    )*};
}

/// `$outer` holds a list of items each with `error_code`.
macro_rules! per_item {
    ($($t:ty => $list:ident),* $(,)?) => {$(
        impl ResponseErrors for $t {
            fn each_error(&self, f: &mut dyn FnMut(i16)) {
                for i in &self.$list {
                    f(i.error_code);
                }
            }
        }
    )*};
}

/// `$outer.$topics[].$parts[].error_code`.
macro_rules! per_partition {
    ($($t:ty => $topics:ident . $parts:ident),* $(,)?) => {$(
        impl ResponseErrors for $t {
            fn each_error(&self, f: &mut dyn FnMut(i16)) {
                for t in &self.$topics {
                    for p in &t.$parts {
                        f(p.error_code);
                    }
                }
            }
        }
    )*};
}

top_level!(
    ApiVersionsResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    ListGroupsResponse,
    DescribeClusterResponse,
    DescribeQuorumResponse,
    InitProducerIdResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    DescribeAclsResponse,
    SaslHandshakeResponse,
    SaslAuthenticateResponse,
    DescribeUserScramCredentialsResponse,
    ListTransactionsResponse,
);

per_item!(
    CreateTopicsResponse => topics,
    DeleteTopicsResponse => responses,
    CreatePartitionsResponse => results,
    DescribeConfigsResponse => results,
    AlterConfigsResponse => responses,
    IncrementalAlterConfigsResponse => responses,
    DeleteGroupsResponse => results,
    DescribeGroupsResponse => groups,
    DescribeTransactionsResponse => transaction_states,
    CreateAclsResponse => results,
    DeleteAclsResponse => filter_results,
    AlterUserScramCredentialsResponse => results,
);

per_partition!(
    ProduceResponse => responses.partition_responses,
    ListOffsetsResponse => topics.partitions,
    OffsetCommitResponse => topics.partitions,
    TxnOffsetCommitResponse => topics.partitions,
    DeleteRecordsResponse => topics.partitions,
    OffsetForLeaderEpochResponse => topics.partitions,
    DescribeProducersResponse => topics.partitions,
);

impl ResponseErrors for MetadataResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            f(t.error_code);
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ResponseErrors for DescribeTopicPartitionsResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        for t in &self.topics {
            f(t.error_code);
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ResponseErrors for FindCoordinatorResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for c in &self.coordinators {
            f(c.error_code);
        }
    }
}

impl ResponseErrors for LeaveGroupResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for m in &self.members {
            f(m.error_code);
        }
    }
}

impl ResponseErrors for OffsetFetchResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
        for g in &self.groups {
            f(g.error_code);
            for t in &g.topics {
                for p in &t.partitions {
                    f(p.error_code);
                }
            }
        }
    }
}

impl ResponseErrors for OffsetDeleteResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ResponseErrors for DescribeLogDirsResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for r in &self.results {
            f(r.error_code);
        }
    }
}

impl ResponseErrors for AddPartitionsToTxnResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        f(self.error_code);
        for t in &self.results_by_topic_v3_and_below {
            for p in &t.results_by_partition {
                f(p.partition_error_code);
            }
        }
        for r in &self.results_by_transaction {
            for t in &r.topic_results {
                for p in &t.results_by_partition {
                    f(p.partition_error_code);
                }
            }
        }
    }
}

impl ResponseErrors for WriteTxnMarkersResponse {
    fn each_error(&self, f: &mut dyn FnMut(i16)) {
        for m in &self.markers {
            for t in &m.topics {
                for p in &t.partitions {
                    f(p.error_code);
                }
            }
        }
    }
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
}
