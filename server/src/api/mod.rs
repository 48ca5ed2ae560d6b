//! Request dispatch: decode the header and body with kafka-protocol, run the API's handler,
//! encode its response. Handlers answer per-partition problems with Kafka error codes; only a
//! frame that cannot be understood closes the connection.

use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::conn::{ConnError, Session};
use crate::metrics::errors::ResponseErrors;
use crate::security::Authz;
use crate::shard::Shard;
use crate::wire::{self, Response};

mod acls;
mod admin;
pub(crate) mod api_versions;
pub(crate) mod authorize;
mod broker_configs;
mod client_quotas;
mod configs;
mod consumer_groups;
mod describe_topic_partitions;
mod fetch;
mod group_configs;
mod groups;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod producer_id;
mod quorum;
pub mod sasl;
mod share_fetch;
mod share_groups;
pub mod topics;
mod txn;

/// Kafka error codes used by the handlers.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 76;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
    pub const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;
}

/// What one request parsed into.
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// The APIs sluice implements, advertised in ApiVersions with kafka-protocol's version ranges.
pub const SUPPORTED: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DeleteRecords,
    ApiKey::DescribeLogDirs,
    ApiKey::DescribeCluster,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeTopicPartitions,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::ShareGroupHeartbeat,
    ApiKey::ShareGroupDescribe,
    ApiKey::ShareFetch,
    ApiKey::ShareAcknowledge,
    ApiKey::InitProducerId,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::ListTransactions,
    ApiKey::DescribeTransactions,
    ApiKey::DescribeProducers,
    ApiKey::WriteTxnMarkers,
    ApiKey::CreateAcls,
    ApiKey::DescribeAcls,
    ApiKey::DeleteAcls,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
];

/// The versions of `api_key` sluice answers: kafka-protocol's range, capped where a newer
/// version means semantics sluice does not implement (transaction protocol v2 of KIP-890
/// part 2 in EndTxn v5 / TxnOffsetCommit v5), and where kafka-protocol 0.18's `ApiKey` range
/// runs past what its request type decodes (OffsetCommit v10, OffsetFetch v10, InitProducerId
/// v6: such a frame would fail to decode and close the connection; found by the
/// `request_frame` fuzz seeds, `server/tests/fuzz_targets.rs` checks every advertised version).
pub fn version_range(api_key: ApiKey) -> (i16, i16) {
    use kafka_protocol::messages::{
        InitProducerIdRequest, OffsetCommitRequest, OffsetFetchRequest,
    };
    use kafka_protocol::protocol::Message;
    let r = api_key.valid_versions();
    let cap = match api_key {
        ApiKey::EndTxn => 4,
        ApiKey::TxnOffsetCommit => 4,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS.max,
        ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS.max,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS.max,
        _ => r.max,
    };
    (r.min, r.max.min(cap))
}

fn supported(api_key: ApiKey, version: i16) -> bool {
    let (min, max) = version_range(api_key);
    SUPPORTED.contains(&api_key) && version >= min && version <= max
}

/// What a frame decoded into (moved once per frame, so not boxed).
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Request(Request),
    /// An ApiVersions request of a version sluice does not know (KIP-511: answered with a v0
    /// response carrying UNSUPPORTED_VERSION and the supported ranges).
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Decodes one frame (without its length prefix): the api key, version and correlation id, then
/// `gate` (the SASL gate of the connection), the version check, header and body. Everything a
/// client sends passes here before any handler runs (fuzzed by `fuzzing::request_frame`).
pub fn decode_frame(
    frame: Bytes,
    gate: impl FnOnce(ApiKey) -> Result<(), ConnError>,
) -> Result<Decoded, ConnError> {
    if frame.len() < 8 {
        return Err(ConnError::Malformed(format!("{}-byte frame", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|_| ConnError::UnknownApi(key))?;
    gate(api_key)?;
    if !supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        if !SUPPORTED.contains(&api_key) {
            return Err(ConnError::UnknownApi(key));
        }
        return Err(ConnError::UnsupportedVersion {
            api_key: key,
            version,
        });
    }
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| ConnError::Malformed(format!("{api_key:?} v{version} header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut buf, version)
        .map_err(|e| ConnError::Malformed(format!("{api_key:?} v{version}: {e}")))?;
    if buf.has_remaining() {
        tracing::debug!(
            ?api_key,
            version,
            left = buf.remaining(),
            "trailing bytes after request"
        );
    }
    Ok(Decoded::Request(Request {
        api_key,
        version,
        header,
        body,
    }))
}

/// Handles one frame (without its length prefix). `Ok(None)`: no response (acks=0).
/// `session` is the connection it came on.
pub async fn handle(
    shard: &Rc<Shard>,
    frame: Bytes,
    session: &Session,
) -> Result<Option<Response>, ConnError> {
    let size = frame.len();
    let req = match decode_frame(frame, |k| sasl::gate(session, k))? {
        Decoded::Request(r) => r,
        Decoded::UnsupportedApiVersions { correlation_id } => {
            return api_versions::unsupported(correlation_id).map(Some);
        }
    };
    let api_key = req.api_key;
    let started = std::time::Instant::now();
    // client quotas: None (one atomic load) unless a quota is set somewhere
    let client_id = req.header.client_id.as_ref().map_or("", |c| c.as_str());
    let quotas = &shard.shared.quotas;
    let charge = match quotas.active() {
        false => None,
        true => quotas.begin(&session.principal.borrow(), client_id),
    };
    let charge = charge.as_ref();
    session.quota_bound.set(charge.is_some());
    let r = match charge.and_then(|c| c.meter()) {
        Some(m) => crate::quota::Busy::new(dispatch(shard, req, session, charge, size), m).await,
        None => dispatch(shard, req, session, charge, size).await,
    };
    shard.metrics.request(api_key, started.elapsed());
    r
}

/// `sluice.fault.panic[.remote].client.id`: a request handler (or a call it makes to another
/// shard) that panics, to test that a panic closes one connection and nothing else.
async fn fault_panics(shard: &Rc<Shard>, client_id: &str) {
    let cfg = &shard.shared.config;
    if cfg.fault_panic_client_id.as_deref() == Some(client_id) {
        panic!("sluice.fault.panic.client.id: injected panic for client {client_id}");
    }
    if cfg.fault_panic_remote_client_id.as_deref() == Some(client_id) {
        let other = (shard.id + 1) % shard.nr.max(1);
        let id = client_id.to_string();
        let r = shard
            .call(other, move |_| async move {
                panic!("sluice.fault.panic.remote.client.id: injected panic for client {id}");
            })
            .await;
        // the call failed; answer as a failed handler would
        let _: Result<(), _> = r;
        panic!("the call to shard {other} panicked");
    }
}

async fn dispatch(
    shard: &Rc<Shard>,
    req: Request,
    session: &Session,
    charge: Option<&crate::quota::Charge<'_>>,
    request_bytes: usize,
) -> Result<Option<Response>, ConnError> {
    use crate::quota::SetThrottle;
    let listener = session.listener;
    let client_id = req
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let (k, v, c) = (req.api_key, req.version, req.header.correlation_id);
    if k != ApiKey::ApiVersions {
        fault_panics(shard, &client_id).await;
    }
    // the quota throttle (0 without quotas); the connection reads nothing more for that long
    let throttle = |produce_bytes: Option<usize>| -> i32 {
        let t = charge.map_or(0, |q| q.finish(produce_bytes, 0));
        session.throttle(t);
        t
    };
    macro_rules! respond {
        ($body:expr) => {{
            let mut body = $body;
            body.set_throttle(throttle(None));
            respond!(@encode body)
        }};
        (@encode $body:ident) => {{
            let body = $body;
            body.each_error(&mut |code| shard.metrics.error(k, code));
            wire::encode(k, v, c, &body)
                .map(Some)
                .map_err(|e| ConnError::Malformed(format!("{k:?} v{v} response: {e}")))
        }};
    }
    let authz = Authz::new(&shard.shared, session);
    let mut body = req.body;
    let denied = match authorize::check(&authz, &mut body) {
        Ok(d) => d,
        Err(authorize::Refused(code)) => {
            tracing::debug!(api = ?k, code, principal = %session.principal.borrow(), "not authorized");
            shard.metrics.error(k, code);
            if matches!(&body, RequestKind::Produce(r) if r.acks == 0) {
                return Ok(None);
            }
            let Some(resp) = authorize::refused(&body, code, v) else {
                return Err(ConnError::Malformed(format!("{k:?}: not authorized")));
            };
            return wire::encode_raw(k.response_header_version(v), c, |b| {
                resp.encode(b, v)
                    .map_err(|e| wire::anyhow_free::Error(e.to_string()))
            })
            .map(|mut buf| {
                let len = (buf.len() - 4) as i32;
                buf[..4].copy_from_slice(&len.to_be_bytes());
                Some(Response {
                    pieces: vec![wire::Piece::Bytes(buf.freeze())],
                    close_after: false,
                })
            })
            .map_err(|e| ConnError::Malformed(format!("{k:?} v{v} response: {e}")));
        }
    };
    match body {
        RequestKind::ApiVersions(_) => respond!(api_versions::response()),
        RequestKind::Metadata(r) => {
            respond!(metadata::handle(shard, r, v, listener, &authz).await)
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let mut resp = denied.fill_produce(produce::handle(shard, r, v).await);
            // acks=0 too: no answer, but the connection is muted all the same (KIP-219)
            resp.set_throttle(throttle(Some(request_bytes)));
            if acks == 0 {
                Ok(None)
            } else {
                respond!(@encode resp)
            }
        }
        RequestKind::Fetch(r) => {
            let quota = |bytes: u64| -> i32 {
                let t = charge.map_or(0, |q| q.finish_fetch(bytes));
                session.throttle(t);
                t
            };
            fetch::handle(shard, r, v, c, &client_id, &authz, &quota)
                .await
                .map(Some)
        }
        RequestKind::ListOffsets(r) => {
            respond!(denied.fill_list_offsets(list_offsets::handle(shard, r, v).await))
        }
        RequestKind::CreateAcls(r) => respond!(acls::create(shard, r, &authz).await),
        RequestKind::DescribeAcls(r) => respond!(acls::describe(shard, r, &authz)),
        RequestKind::DeleteAcls(r) => respond!(acls::delete(shard, r, &authz).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            respond!(denied
                .fill_offset_for_leader_epoch(offset_for_leader_epoch::handle(shard, r).await))
        }
        RequestKind::CreateTopics(r) => {
            respond!(denied.fill_create_topics(topics::create(shard, r, v).await))
        }
        RequestKind::DeleteTopics(r) => {
            respond!(denied.fill_delete_topics(topics::delete(shard, r, v).await))
        }
        RequestKind::CreatePartitions(r) => {
            respond!(denied.fill_create_partitions(admin::create_partitions(shard, r).await))
        }
        RequestKind::DescribeConfigs(r) => {
            respond!(denied.fill_describe_configs(configs::describe_configs(shard, r)))
        }
        RequestKind::AlterConfigs(r) => {
            respond!(denied.fill_alter_configs(configs::alter_configs(shard, r).await))
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            respond!(denied
                .fill_incremental_alter_configs(configs::incremental_alter_configs(shard, r).await))
        }
        RequestKind::DeleteRecords(r) => {
            respond!(denied.fill_delete_records(admin::delete_records(shard, r).await))
        }
        RequestKind::DescribeLogDirs(r) => respond!(admin::describe_log_dirs(shard, r).await),
        RequestKind::DescribeCluster(r) => {
            respond!(admin::describe_cluster(shard, r, listener, &authz))
        }
        RequestKind::DescribeQuorum(r) => {
            respond!(quorum::describe_quorum(shard, r, v, listener).await)
        }
        RequestKind::DescribeTopicPartitions(r) => {
            respond!(authorize::visible_topic_partitions(
                &authz,
                describe_topic_partitions::handle(shard, r).await
            ))
        }
        RequestKind::FindCoordinator(r) => {
            respond!(groups::find_coordinator(shard, r, v, listener))
        }
        RequestKind::JoinGroup(r) => {
            let peer = &*session.peer;
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h));
            respond!(groups::join(shard, r, v, client_id, host).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let peer = &*session.peer;
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h));
            respond!(consumer_groups::heartbeat(shard, r, v, client_id, host, &authz).await)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            respond!(consumer_groups::describe(shard, r, &authz).await)
        }
        RequestKind::ShareGroupHeartbeat(r) => {
            let peer = &*session.peer;
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h));
            respond!(share_groups::heartbeat(shard, r, client_id, host, &authz).await)
        }
        RequestKind::ShareGroupDescribe(r) => {
            respond!(share_groups::describe(shard, r, &authz).await)
        }
        RequestKind::ShareFetch(r) => respond!(share_fetch::fetch(shard, r, &authz).await),
        RequestKind::ShareAcknowledge(r) => {
            respond!(share_fetch::acknowledge(shard, r, &authz).await)
        }
        RequestKind::SyncGroup(r) => respond!(groups::sync(shard, r, v).await),
        RequestKind::Heartbeat(r) => respond!(groups::heartbeat(shard, r).await),
        RequestKind::LeaveGroup(r) => respond!(groups::leave(shard, r, v).await),
        RequestKind::OffsetCommit(r) => {
            respond!(denied.fill_offset_commit(groups::offset_commit(shard, r, v).await))
        }
        RequestKind::OffsetFetch(r) => {
            let all = if v >= 8 {
                r.groups.iter().all(|g| g.topics.is_none())
            } else {
                r.topics.is_none()
            };
            let resp = groups::offset_fetch(shard, r, v).await;
            respond!(authorize::visible_offsets(&authz, resp, all))
        }
        RequestKind::ListGroups(r) => respond!(authorize::visible_groups(
            &authz,
            groups::list_groups(shard, r, v).await
        )),
        RequestKind::DescribeGroups(r) => {
            respond!(denied.fill_describe_groups(groups::describe_groups(shard, r, v, &authz).await))
        }
        RequestKind::DeleteGroups(r) => {
            respond!(denied.fill_delete_groups(groups::delete_groups(shard, r).await))
        }
        RequestKind::OffsetDelete(r) => respond!(groups::offset_delete(shard, r).await),
        RequestKind::InitProducerId(r) if r.transactional_id.is_some() => {
            respond!(txn::init_producer_id(shard, r).await)
        }
        RequestKind::InitProducerId(r) => respond!(producer_id::handle(shard, r)),
        RequestKind::AddPartitionsToTxn(r) => respond!(txn::add_partitions(shard, r, v).await),
        RequestKind::AddOffsetsToTxn(r) => respond!(txn::add_offsets(shard, r).await),
        RequestKind::EndTxn(r) => respond!(txn::end_txn(shard, r).await),
        RequestKind::TxnOffsetCommit(r) => respond!(txn::txn_offset_commit(shard, r).await),
        RequestKind::ListTransactions(r) => respond!(authorize::visible_transactions(
            &authz,
            txn::list_transactions(shard, r).await
        )),
        RequestKind::DescribeTransactions(r) => {
            respond!(authorize::described_transactions(
                &authz,
                txn::describe_transactions(shard, r).await
            ))
        }
        RequestKind::DescribeProducers(r) => respond!(authorize::described_producers(
            &authz,
            txn::describe_producers(shard, r).await
        )),
        RequestKind::WriteTxnMarkers(r) => respond!(txn::write_txn_markers(shard, r).await),
        RequestKind::SaslHandshake(r) => respond!(sasl::handshake(shard, r, v, session)),
        RequestKind::SaslAuthenticate(r) => {
            let (body, close) = sasl::authenticate(shard, r, session);
            respond!(body).map(|r| {
                r.map(|mut r| {
                    r.close_after = close;
                    r
                })
            })
        }
        RequestKind::DescribeUserScramCredentials(r) => respond!(sasl::describe_scram(shard, r)),
        RequestKind::AlterUserScramCredentials(r) => respond!(sasl::alter_scram(shard, r).await),
        RequestKind::DescribeClientQuotas(r) => respond!(client_quotas::describe(shard, r)),
        RequestKind::AlterClientQuotas(r) => respond!(client_quotas::alter(shard, r).await),
        _ => Err(ConnError::UnknownApi(k as i16)),
    }
}

/// The web console's writes (`http`): a Kafka request run for `session`'s principal through
/// the same authorization and handler as on the Kafka port, so ACLs apply alike.
pub async fn serve_as(
    shard: &Rc<Shard>,
    session: &Session,
    body: RequestKind,
) -> Option<kafka_protocol::messages::ResponseKind> {
    use kafka_protocol::messages::ResponseKind;
    let authz = Authz::new(&shard.shared, session);
    let mut body = body;
    let denied = match authorize::check(&authz, &mut body) {
        Ok(d) => d,
        // the console runs CreateTopics at v5 (below); the version only shapes FindCoordinator
        Err(authorize::Refused(code)) => return authorize::refused(&body, code, 5),
    };
    match body {
        RequestKind::CreateTopics(r) => Some(ResponseKind::CreateTopics(
            denied.fill_create_topics(topics::create(shard, r, 5).await),
        )),
        RequestKind::DeleteRecords(r) => Some(ResponseKind::DeleteRecords(
            denied.fill_delete_records(admin::delete_records(shard, r).await),
        )),
        _ => None,
    }
}
