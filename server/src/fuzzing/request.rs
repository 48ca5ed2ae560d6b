//! The request decoder: one frame (without its length prefix) through `api::decode_frame`,
//! the function `api::handle` runs on every frame a client sends.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::api::{self, api_versions, authorize, Decoded};
use crate::conn::ConnError;
use crate::wire;

/// CLUSTER_AUTHORIZATION_FAILED, the code a refusal answers with.
const REFUSED: i16 = 31;

/// Decodes `data` as a frame. A request that decodes must re-encode (header and body, at its
/// version) into a frame that decodes to the same values (or, where a value is unequal to
/// itself, re-encodes to the same bytes); its refusal answer (what an ACL
/// denial sends) and, for ApiVersions, the broker's answer must encode at its version. Errors
/// must render (they are logged when the connection closes).
pub fn request_frame(data: &[u8]) {
    let req = match api::decode_frame(Bytes::copy_from_slice(data), |_| Ok(())) {
        Err(e) => {
            let _ = e.to_string();
            return;
        }
        Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
            api_versions::unsupported(correlation_id).expect("the KIP-511 answer encodes");
            return;
        }
        Ok(Decoded::Request(r)) => r,
    };
    let (k, v) = (req.api_key, req.version);
    let frame = encode(&req.header, &req.body, k, v)
        .unwrap_or_else(|e| panic!("{k:?} v{v} decoded but does not re-encode: {e}"));
    match api::decode_frame(frame.clone(), |_| Ok(())) {
        Ok(Decoded::Request(again)) if again.header == req.header && again.body == req.body => {}
        // a value unequal to itself (NaN in a float64 field: AlterClientQuotas) round trips
        // when its bits do
        Ok(Decoded::Request(again))
            if encode(&again.header, &again.body, k, v).is_ok_and(|f| f == frame) => {}
        _ if negative_tag(&req) => {}
        Ok(Decoded::Request(again)) => {
            assert_eq!(again.header, req.header, "{k:?} v{v} header round trip");
            assert_eq!(again.body, req.body, "{k:?} v{v} body round trip");
        }
        Ok(Decoded::UnsupportedApiVersions { .. }) => panic!("{k:?} v{v} became unsupported"),
        Err(e) => panic!("{k:?} v{v} re-encoded does not decode: {e}"),
    }
    if let Some(resp) = authorize::refused(&req.body, REFUSED, v) {
        let mut b = BytesMut::new();
        resp.encode(&mut b, v)
            .unwrap_or_else(|e| panic!("{k:?} v{v} refusal does not encode: {e}"));
    }
    if k == ApiKey::ApiVersions {
        wire::encode(k, v, req.header.correlation_id, &api_versions::response())
            .unwrap_or_else(|e| panic!("ApiVersions v{v} answer does not encode: {e}"));
    }
}

/// Whether the request holds an unknown tagged field whose tag is at least 2^31: kafka-protocol
/// decodes the unsigned varint tag into an i32 (negative) and cannot encode it back. Only the
/// round trip is affected (the broker never re-encodes a request, nor copies unknown tagged
/// fields into an answer), so such a request is exempt from it. Negative keys sort first, so
/// they show right after the opening brace.
fn negative_tag(req: &api::Request) -> bool {
    let text = format!("{:?} {:?}", req.header, req.body);
    text.contains("unknown_tagged_fields: {-")
}

fn encode(header: &RequestHeader, body: &RequestKind, k: ApiKey, v: i16) -> Result<Bytes, String> {
    let mut b = BytesMut::new();
    header
        .encode(&mut b, k.request_header_version(v))
        .map_err(|e| e.to_string())?;
    body.encode(&mut b, v).map_err(|e| e.to_string())?;
    Ok(b.freeze())
}

/// A default request of every API and version sluice advertises (plus an unknown ApiVersions
/// version and a short frame).
pub fn request_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &k in api::SUPPORTED {
        let (min, max) = api::version_range(k);
        for v in min..=max {
            let header = RequestHeader::default()
                .with_request_api_key(k as i16)
                .with_request_api_version(v)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("fuzz")));
            let Ok(body) = default_body(k) else { continue };
            if let Ok(frame) = encode(&header, &body, k, v) {
                out.push(frame.to_vec());
            }
        }
    }
    let mut unknown = vec![0, 18, 0x7f, 0, 0, 0, 0, 1];
    unknown.extend_from_slice(&[0, 0, 0]);
    out.push(unknown);
    out.push(vec![0, 3]);
    out
}

/// The default body of `k` (decoded from the encoding of no fields at all is not possible, so
/// each API's `Default`).
fn default_body(k: ApiKey) -> Result<RequestKind, ConnError> {
    use kafka_protocol::messages::*;
    Ok(match k {
        ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
        ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
        ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
        ApiKey::OffsetForLeaderEpoch => {
            RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default())
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(DescribeQuorumRequest::default()),
        ApiKey::DescribeTopicPartitions => {
            RequestKind::DescribeTopicPartitions(DescribeTopicPartitionsRequest::default())
        }
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
        ApiKey::ConsumerGroupHeartbeat => {
            RequestKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::default())
        }
        ApiKey::ConsumerGroupDescribe => {
            RequestKind::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default())
        }
        ApiKey::ShareGroupHeartbeat => {
            RequestKind::ShareGroupHeartbeat(ShareGroupHeartbeatRequest::default())
        }
        ApiKey::ShareGroupDescribe => {
            RequestKind::ShareGroupDescribe(ShareGroupDescribeRequest::default())
        }
        ApiKey::ShareFetch => RequestKind::ShareFetch(ShareFetchRequest::default()),
        ApiKey::ShareAcknowledge => {
            RequestKind::ShareAcknowledge(ShareAcknowledgeRequest::default())
        }
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::AddPartitionsToTxn => {
            RequestKind::AddPartitionsToTxn(AddPartitionsToTxnRequest::default())
        }
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default()),
        ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default()),
        ApiKey::ListTransactions => {
            RequestKind::ListTransactions(ListTransactionsRequest::default())
        }
        ApiKey::DescribeTransactions => {
            RequestKind::DescribeTransactions(DescribeTransactionsRequest::default())
        }
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default())
        }
        ApiKey::WriteTxnMarkers => RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default()),
        ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default()),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(DescribeAclsRequest::default()),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default()),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(SaslHandshakeRequest::default()),
        ApiKey::SaslAuthenticate => {
            RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default())
        }
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default())
        }
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default())
        }
        ApiKey::DescribeClientQuotas => {
            RequestKind::DescribeClientQuotas(DescribeClientQuotasRequest::default())
        }
        ApiKey::AlterClientQuotas => {
            RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default())
        }
        other => return Err(ConnError::UnknownApi(other as i16)),
    })
}
