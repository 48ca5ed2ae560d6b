//! throttle_time_ms on every response that has it (kafka-protocol leaves it out of the
//! versions without the field), so a throttled client hears of it whatever it sent.

use kafka_protocol::messages::*;

/// Sets a response's throttle_time_ms (a no-op for responses without one).
pub trait SetThrottle {
    fn set_throttle(&mut self, ms: i32);
}

macro_rules! throttled {
    ($($t:ty),* $(,)?) => {
        $(impl SetThrottle for $t {
            fn set_throttle(&mut self, ms: i32) {
                self.throttle_time_ms = ms;
            }
        })*
    };
}

macro_rules! unthrottled {
    ($($t:ty),* $(,)?) => {
        $(impl SetThrottle for $t {
            fn set_throttle(&mut self, _ms: i32) {}
        })*
    };
}

throttled!(
    ProduceResponse,
    FetchResponse,
    ListOffsetsResponse,
    MetadataResponse,
    OffsetForLeaderEpochResponse,
    ApiVersionsResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    DescribeConfigsResponse,
    AlterConfigsResponse,
    IncrementalAlterConfigsResponse,
    DeleteRecordsResponse,
    DescribeLogDirsResponse,
    DescribeClusterResponse,
    DescribeTopicPartitionsResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ListGroupsResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
    OffsetDeleteResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
    ShareGroupHeartbeatResponse,
    ShareGroupDescribeResponse,
    ShareFetchResponse,
    ShareAcknowledgeResponse,
    InitProducerIdResponse,
    AddPartitionsToTxnResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    TxnOffsetCommitResponse,
    ListTransactionsResponse,
    DescribeTransactionsResponse,
    DescribeProducersResponse,
    CreateAclsResponse,
    DescribeAclsResponse,
    DeleteAclsResponse,
    DescribeUserScramCredentialsResponse,
    AlterUserScramCredentialsResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
);

unthrottled!(
    DescribeQuorumResponse,
    WriteTxnMarkersResponse,
    SaslHandshakeResponse,
    SaslAuthenticateResponse,
);
