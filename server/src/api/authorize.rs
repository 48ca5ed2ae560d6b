//! Authorization at the request boundary: [`check`] runs before a handler and either answers
//! the whole request with Kafka's authorization error (a group, transactional id or cluster
//! operation the principal may not do) or takes out the topics it may not touch, which
//! [`Denied::fill`] then answers with TOPIC_AUTHORIZATION_FAILED in the handler's response.
//! Fetch and Metadata check per topic inside their handlers (`Authz` is passed down).
//!
//! Operations checked (Kafka's): Produce WRITE topic (and WRITE transactional id);
//! Fetch READ topic; ListOffsets, OffsetForLeaderEpoch and Metadata DESCRIBE topic;
//! CreateTopics CREATE cluster or topic; DeleteTopics DELETE topic; JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, ConsumerGroupHeartbeat and OffsetCommit READ group (OffsetCommit
//! also READ topic, ConsumerGroupHeartbeat DESCRIBE on the topics it names; regex matches are
//! not filtered, Fetch still checks READ); ConsumerGroupDescribe DESCRIBE group, per group;
//! ShareGroupHeartbeat READ group (DESCRIBE on the topics it names), ShareFetch and
//! ShareAcknowledge READ group and READ topic (per partition), ShareGroupDescribe DESCRIBE
//! group, per group;
//! OffsetFetch and DescribeGroups DESCRIBE group (OffsetFetch also DESCRIBE topic); DeleteGroups DELETE group; FindCoordinator
//! DESCRIBE group or transactional id; InitProducerId (transactional), EndTxn, AddOffsetsToTxn
//! and AddPartitionsToTxn WRITE transactional id (AddPartitionsToTxn also WRITE topic,
//! AddOffsetsToTxn also READ group); CreatePartitions ALTER topic; DeleteRecords DELETE topic;
//! DescribeConfigs DESCRIBE_CONFIGS and AlterConfigs / IncrementalAlterConfigs ALTER_CONFIGS on
//! the topic, the group (group configs) or (broker configs) the cluster; OffsetDelete DELETE group; the ACL and SCRAM APIs
//! ALTER / DESCRIBE cluster; DescribeQuorum DESCRIBE cluster. DescribeCluster is answered to
//! everyone, with the cluster operations the principal may do.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::security::acl::op;
use crate::security::Authz;

pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// What was taken out of a request: topics (with their partitions) and config resources
/// (type, name, error code).
#[derive(Default)]
pub struct Denied {
    pub topics: Vec<(TopicName, Vec<i32>)>,
    pub configs: Vec<(i8, StrBytes, i16)>,
    /// DescribeGroups / DeleteGroups: groups answered GROUP_AUTHORIZATION_FAILED one by one.
    pub groups: Vec<GroupId>,
}

/// A whole request refused: this error code goes in the API's top-level answer.
pub struct Refused(pub i16);

fn msg(code: i16) -> Option<StrBytes> {
    let m = match code {
        TOPIC_AUTHORIZATION_FAILED => "Topic authorization failed.",
        GROUP_AUTHORIZATION_FAILED => "Group authorization failed.",
        CLUSTER_AUTHORIZATION_FAILED => "Cluster authorization failed.",
        _ => "Transactional Id authorization failed.",
    };
    Some(StrBytes::from_static_str(m))
}

/// Checks `body`; on Ok the request (minus denied topics) goes on to its handler.
pub fn check(authz: &Authz<'_>, body: &mut RequestKind) -> Result<Denied, Refused> {
    if !authz.enabled() {
        return Ok(Denied::default());
    }
    let mut denied = Denied::default();
    let group = |g: &GroupId, o: i8| -> Result<(), Refused> {
        if authz.group(o, g.as_str()) {
            Ok(())
        } else {
            Err(Refused(GROUP_AUTHORIZATION_FAILED))
        }
    };
    let txn = |t: &TransactionalId| -> Result<(), Refused> {
        if authz.txn(op::WRITE, t.as_str()) {
            Ok(())
        } else {
            Err(Refused(TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
        }
    };
    match body {
        RequestKind::Produce(r) => {
            if let Some(t) = &r.transactional_id {
                txn(t)?;
            }
            r.topic_data.retain(|t| {
                let ok = authz.topic(op::WRITE, t.name.as_str());
                if !ok {
                    denied.topics.push((
                        t.name.clone(),
                        t.partition_data.iter().map(|p| p.index).collect(),
                    ));
                }
                ok
            });
        }
        RequestKind::ListOffsets(r) => r.topics.retain(|t| {
            let ok = authz.topic(op::DESCRIBE, t.name.as_str());
            if !ok {
                denied.topics.push((
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                ));
            }
            ok
        }),
        RequestKind::CreateTopics(r) => {
            let cluster = authz.cluster(op::CREATE);
            r.topics.retain(|t| {
                let ok = cluster || authz.topic(op::CREATE, t.name.as_str());
                if !ok {
                    denied.topics.push((t.name.clone(), Vec::new()));
                }
                ok
            });
        }
        RequestKind::DeleteTopics(r) => {
            r.topic_names.retain(|n| {
                let ok = authz.topic(op::DELETE, n.as_str());
                if !ok {
                    denied.topics.push((n.clone(), Vec::new()));
                }
                ok
            });
            r.topics.retain(|t| {
                let ok = t
                    .name
                    .as_ref()
                    .is_none_or(|n| authz.topic(op::DELETE, n.as_str()));
                if !ok {
                    if let Some(n) = &t.name {
                        denied.topics.push((n.clone(), Vec::new()));
                    }
                }
                ok
            });
        }
        RequestKind::OffsetForLeaderEpoch(r) => r.topics.retain(|t| {
            // a follower (replica_id >= 0) needs CLUSTER_ACTION, a client DESCRIBE
            let ok = if r.replica_id.0 >= 0 {
                authz.cluster(op::CLUSTER_ACTION)
            } else {
                authz.topic(op::DESCRIBE, t.topic.as_str())
            };
            if !ok {
                denied.topics.push((
                    t.topic.clone(),
                    t.partitions.iter().map(|p| p.partition).collect(),
                ));
            }
            ok
        }),
        RequestKind::CreatePartitions(r) => r.topics.retain(|t| {
            let ok = authz.topic(op::ALTER, t.name.as_str());
            if !ok {
                denied.topics.push((t.name.clone(), Vec::new()));
            }
            ok
        }),
        RequestKind::DeleteRecords(r) => r.topics.retain(|t| {
            let ok = authz.topic(op::DELETE, t.name.as_str());
            if !ok {
                denied.topics.push((
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                ));
            }
            ok
        }),
        RequestKind::DescribeConfigs(r) => r.resources.retain(|c| {
            config_allowed(
                authz,
                op::DESCRIBE_CONFIGS,
                c.resource_type,
                &c.resource_name,
                &mut denied,
            )
        }),
        RequestKind::AlterConfigs(r) => r.resources.retain(|c| {
            config_allowed(
                authz,
                op::ALTER_CONFIGS,
                c.resource_type,
                &c.resource_name,
                &mut denied,
            )
        }),
        RequestKind::IncrementalAlterConfigs(r) => r.resources.retain(|c| {
            config_allowed(
                authz,
                op::ALTER_CONFIGS,
                c.resource_type,
                &c.resource_name,
                &mut denied,
            )
        }),
        RequestKind::OffsetDelete(r) => group(&r.group_id, op::DELETE)?,
        RequestKind::JoinGroup(r) => group(&r.group_id, op::READ)?,
        RequestKind::ConsumerGroupHeartbeat(r) => group(&r.group_id, op::READ)?,
        RequestKind::ShareGroupHeartbeat(r) => group(&r.group_id, op::READ)?,
        // READ on the topics is checked per partition in the handlers
        RequestKind::ShareFetch(r) => {
            if let Some(g) = &r.group_id {
                group(g, op::READ)?
            }
        }
        RequestKind::ShareAcknowledge(r) => {
            if let Some(g) = &r.group_id {
                group(g, op::READ)?
            }
        }
        RequestKind::SyncGroup(r) => group(&r.group_id, op::READ)?,
        RequestKind::Heartbeat(r) => group(&r.group_id, op::READ)?,
        RequestKind::LeaveGroup(r) => group(&r.group_id, op::READ)?,
        RequestKind::OffsetCommit(r) => {
            group(&r.group_id, op::READ)?;
            r.topics.retain(|t| {
                let ok = authz.topic(op::READ, t.name.as_str());
                if !ok {
                    denied.topics.push((
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    ));
                }
                ok
            });
        }
        RequestKind::OffsetFetch(r) => {
            if !r.group_id.is_empty() {
                group(&r.group_id, op::DESCRIBE)?;
            }
            for g in &r.groups {
                group(&g.group_id, op::DESCRIBE)?;
            }
        }
        // each group on its own, as Kafka answers these two
        RequestKind::DescribeGroups(r) => r.groups.retain(|g| {
            let ok = authz.group(op::DESCRIBE, g.as_str());
            if !ok {
                denied.groups.push(g.clone());
            }
            ok
        }),
        RequestKind::DeleteGroups(r) => r.groups_names.retain(|g| {
            let ok = authz.group(op::DELETE, g.as_str());
            if !ok {
                denied.groups.push(g.clone());
            }
            ok
        }),
        RequestKind::FindCoordinator(r) => {
            let keys: Vec<&StrBytes> = if r.coordinator_keys.is_empty() {
                vec![&r.key]
            } else {
                r.coordinator_keys.iter().collect()
            };
            for k in keys {
                let ok = if r.key_type == 1 {
                    authz.txn(op::DESCRIBE, k.as_str())
                } else {
                    authz.group(op::DESCRIBE, k.as_str())
                };
                if !ok {
                    return Err(Refused(if r.key_type == 1 {
                        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    } else {
                        GROUP_AUTHORIZATION_FAILED
                    }));
                }
            }
        }
        RequestKind::InitProducerId(r) => {
            if let Some(t) = &r.transactional_id {
                txn(t)?;
            }
        }
        RequestKind::EndTxn(r) => txn(&r.transactional_id)?,
        RequestKind::AddOffsetsToTxn(r) => {
            txn(&r.transactional_id)?;
            group(&r.group_id, op::READ)?;
        }
        RequestKind::TxnOffsetCommit(r) => {
            txn(&r.transactional_id)?;
            group(&r.group_id, op::READ)?;
        }
        RequestKind::AddPartitionsToTxn(r) => {
            txn(&r.v3_and_below_transactional_id)?;
            for t in &r.v3_and_below_topics {
                if !authz.topic(op::WRITE, t.name.as_str()) {
                    return Err(Refused(TOPIC_AUTHORIZATION_FAILED));
                }
            }
        }
        RequestKind::DescribeUserScramCredentials(_) | RequestKind::DescribeLogDirs(_)
            if !authz.cluster(op::DESCRIBE) =>
        {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        RequestKind::DescribeQuorum(_) if !authz.cluster(op::DESCRIBE) => {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        RequestKind::AlterUserScramCredentials(_) if !authz.cluster(op::ALTER) => {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        RequestKind::DescribeClientQuotas(_) if !authz.cluster(op::DESCRIBE_CONFIGS) => {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        RequestKind::AlterClientQuotas(_) if !authz.cluster(op::ALTER_CONFIGS) => {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        RequestKind::WriteTxnMarkers(_) if !authz.cluster(op::CLUSTER_ACTION) => {
            return Err(Refused(CLUSTER_AUTHORIZATION_FAILED));
        }
        _ => {}
    }
    Ok(denied)
}

/// Config resources: TOPIC needs the operation on the topic, BROKER on the cluster, GROUP on
/// the group.
fn config_allowed(
    authz: &Authz<'_>,
    operation: i8,
    resource_type: i8,
    name: &StrBytes,
    denied: &mut Denied,
) -> bool {
    let (ok, code) = match resource_type {
        2 => (
            authz.topic(operation, name.as_str()),
            TOPIC_AUTHORIZATION_FAILED,
        ),
        4 => (authz.cluster(operation), CLUSTER_AUTHORIZATION_FAILED),
        32 => (
            authz.group(operation, name.as_str()),
            GROUP_AUTHORIZATION_FAILED,
        ),
        _ => (true, 0),
    };
    if !ok {
        denied.configs.push((resource_type, name.clone(), code));
    }
    ok
}

/// ListGroups: every group with DESCRIBE on the cluster, else those the principal may describe.
pub fn visible_groups(authz: &Authz<'_>, mut r: ListGroupsResponse) -> ListGroupsResponse {
    if authz.enabled() && !authz.cluster(op::DESCRIBE) {
        r.groups
            .retain(|g| authz.group(op::DESCRIBE, g.group_id.as_str()));
    }
    r
}

/// The ACL operations Kafka supports on each resource type (`AclEntry.supportedOperations`):
/// what the authorized-operations bit fields (KIP-430) are made of.
const CLUSTER_OPS: &[i8] = &[
    op::CREATE,
    op::ALTER,
    op::DESCRIBE,
    op::CLUSTER_ACTION,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
    op::IDEMPOTENT_WRITE,
];
const TOPIC_OPS: &[i8] = &[
    op::READ,
    op::WRITE,
    op::CREATE,
    op::DELETE,
    op::ALTER,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
];
/// DESCRIBE_CONFIGS / ALTER_CONFIGS: the group configs of KIP-848.
const GROUP_OPS: &[i8] = &[
    op::READ,
    op::DESCRIBE,
    op::DELETE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
];

/// Bit `1 << code` for every operation of `ops` that `allowed` (the authorizer, with its
/// implications: READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies
/// DESCRIBE_CONFIGS) grants; every one of them without an authorizer.
fn operations(ops: &[i8], allowed: impl Fn(i8) -> bool) -> i32 {
    ops.iter()
        .filter(|&&o| allowed(o))
        .fold(0i32, |bits, &o| bits | (1 << o))
}

/// What the principal may do on the cluster, as DescribeCluster and Metadata v8-v10 report it.
pub fn cluster_operations(authz: &Authz<'_>) -> i32 {
    operations(CLUSTER_OPS, |o| authz.cluster(o))
}

/// What the principal may do on topic `name` (Metadata v8+, DescribeTopicPartitions).
pub fn topic_operations(authz: &Authz<'_>, name: &str) -> i32 {
    operations(TOPIC_OPS, |o| authz.topic(o, name))
}

/// What the principal may do on group `name` (DescribeGroups v3+).
pub fn group_operations(authz: &Authz<'_>, name: &str) -> i32 {
    operations(GROUP_OPS, |o| authz.group(o, name))
}

/// OffsetFetch: committed offsets of topics the principal may not describe are left out when
/// it asked for all, answered TOPIC_AUTHORIZATION_FAILED when it named them.
pub fn visible_offsets(
    authz: &Authz<'_>,
    mut r: OffsetFetchResponse,
    all: bool,
) -> OffsetFetchResponse {
    if !authz.enabled() {
        return r;
    }
    let ok = |t: &TopicName| authz.topic(op::DESCRIBE, t.as_str());
    if all {
        r.topics.retain(|t| ok(&t.name));
        for g in &mut r.groups {
            g.topics.retain(|t| ok(&t.name));
        }
        return r;
    }
    for t in r.topics.iter_mut().filter(|t| !ok(&t.name)) {
        for p in &mut t.partitions {
            p.committed_offset = -1;
            p.committed_leader_epoch = -1;
            p.metadata = None;
            p.error_code = TOPIC_AUTHORIZATION_FAILED;
        }
    }
    for g in &mut r.groups {
        for t in g.topics.iter_mut().filter(|t| !ok(&t.name)) {
            for p in &mut t.partitions {
                p.committed_offset = -1;
                p.committed_leader_epoch = -1;
                p.metadata = None;
                p.error_code = TOPIC_AUTHORIZATION_FAILED;
            }
        }
    }
    r
}

/// ListTransactions: the transactional ids the principal may describe.
pub fn visible_transactions(
    authz: &Authz<'_>,
    mut r: ListTransactionsResponse,
) -> ListTransactionsResponse {
    r.transaction_states
        .retain(|t| authz.txn(op::DESCRIBE, t.transactional_id.as_str()));
    r
}

/// DescribeTransactions: TRANSACTIONAL_ID_AUTHORIZATION_FAILED for ids not describable.
pub fn described_transactions(
    authz: &Authz<'_>,
    mut r: DescribeTransactionsResponse,
) -> DescribeTransactionsResponse {
    for t in &mut r.transaction_states {
        if !authz.txn(op::DESCRIBE, t.transactional_id.as_str()) {
            *t = describe_transactions_response::TransactionState::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
    }
    r
}

/// DescribeProducers needs READ on the topic.
pub fn described_producers(
    authz: &Authz<'_>,
    mut r: DescribeProducersResponse,
) -> DescribeProducersResponse {
    for t in &mut r.topics {
        if !authz.topic(op::READ, t.name.as_str()) {
            for p in &mut t.partitions {
                p.error_code = TOPIC_AUTHORIZATION_FAILED;
                p.error_message = msg(TOPIC_AUTHORIZATION_FAILED);
                p.active_producers.clear();
            }
        }
    }
    r
}

/// DescribeTopicPartitions: topics the principal may not describe are left out.
pub fn visible_topic_partitions(
    authz: &Authz<'_>,
    mut r: DescribeTopicPartitionsResponse,
) -> DescribeTopicPartitionsResponse {
    r.topics.retain(|t| {
        t.name
            .as_ref()
            .is_none_or(|n| authz.topic(op::DESCRIBE, n.as_str()))
    });
    // Kafka fills these in for every described topic (the request has no flag for it)
    for t in &mut r.topics {
        if let Some(n) = &t.name {
            t.topic_authorized_operations = topic_operations(authz, n.as_str());
        }
    }
    r
}

impl Denied {
    pub fn fill_offset_for_leader_epoch(
        self,
        mut r: OffsetForLeaderEpochResponse,
    ) -> OffsetForLeaderEpochResponse {
        for (name, parts) in self.topics {
            r.topics.push(
                offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                    .with_topic(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                offset_for_leader_epoch_response::EpochEndOffset::default()
                                    .with_partition(p)
                                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        r
    }

    pub fn fill_create_partitions(
        self,
        mut r: CreatePartitionsResponse,
    ) -> CreatePartitionsResponse {
        for (name, _) in self.topics {
            r.results.push(
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(name)
                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(msg(TOPIC_AUTHORIZATION_FAILED)),
            );
        }
        r
    }

    pub fn fill_delete_records(self, mut r: DeleteRecordsResponse) -> DeleteRecordsResponse {
        for (name, parts) in self.topics {
            r.topics.push(
                delete_records_response::DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                delete_records_response::DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_low_watermark(-1)
                                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                            })
                            .collect(),
                    ),
            );
        }
        r
    }

    pub fn fill_describe_configs(self, mut r: DescribeConfigsResponse) -> DescribeConfigsResponse {
        for (t, name, code) in self.configs {
            r.results.push(
                describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(msg(code)),
            );
        }
        r
    }

    pub fn fill_alter_configs(self, mut r: AlterConfigsResponse) -> AlterConfigsResponse {
        for (t, name, code) in self.configs {
            r.responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(msg(code)),
            );
        }
        r
    }

    pub fn fill_incremental_alter_configs(
        self,
        mut r: IncrementalAlterConfigsResponse,
    ) -> IncrementalAlterConfigsResponse {
        for (t, name, code) in self.configs {
            r.responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(msg(code)),
            );
        }
        r
    }

    pub fn fill_produce(self, mut r: ProduceResponse) -> ProduceResponse {
        for (name, parts) in self.topics {
            r.responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(
                        parts
                            .into_iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p)
                                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    .with_base_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        r
    }

    pub fn fill_list_offsets(self, mut r: ListOffsetsResponse) -> ListOffsetsResponse {
        for (name, parts) in self.topics {
            r.topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    .with_offset(-1)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    ),
            );
        }
        r
    }

    pub fn fill_create_topics(self, mut r: CreateTopicsResponse) -> CreateTopicsResponse {
        for (name, _) in self.topics {
            r.topics.push(
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(msg(TOPIC_AUTHORIZATION_FAILED))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
        }
        r
    }

    pub fn fill_delete_topics(self, mut r: DeleteTopicsResponse) -> DeleteTopicsResponse {
        for (name, _) in self.topics {
            r.responses.push(
                DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(msg(TOPIC_AUTHORIZATION_FAILED)),
            );
        }
        r
    }

    pub fn fill_describe_groups(self, mut r: DescribeGroupsResponse) -> DescribeGroupsResponse {
        for g in self.groups {
            r.groups.push(
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(GROUP_AUTHORIZATION_FAILED)
                    .with_error_message(msg(GROUP_AUTHORIZATION_FAILED))
                    .with_authorized_operations(i32::MIN),
            );
        }
        r
    }

    pub fn fill_delete_groups(self, mut r: DeleteGroupsResponse) -> DeleteGroupsResponse {
        for g in self.groups {
            r.results.push(
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(GROUP_AUTHORIZATION_FAILED),
            );
        }
        r
    }

    pub fn fill_offset_commit(self, mut r: OffsetCommitResponse) -> OffsetCommitResponse {
        for (name, parts) in self.topics {
            r.topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                            })
                            .collect(),
                    ),
            );
        }
        r
    }
}

/// The answer to a refused request of `version` (its top-level error code, or every entry's).
///
/// Fields a version does not have stay at their defaults (kafka-protocol refuses to encode
/// them otherwise, which closed the connection): error messages of DescribeGroups before v6,
/// FindCoordinator before v1 and DescribeQuorum before v2, the top-level error code of
/// OffsetFetch outside v2-v7, DescribeLogDirs before v3 and AddPartitionsToTxn before v4 (found
/// by the request_frame fuzz target).
pub fn refused(body: &RequestKind, code: i16, version: i16) -> Option<ResponseKind> {
    let m = msg(code);
    let m_from = |v: i16| if version >= v { m.clone() } else { None };
    let code_if = |has: bool| if has { code } else { 0 };
    Some(match body {
        RequestKind::Produce(r) => ResponseKind::Produce(
            Denied {
                topics: r
                    .topic_data
                    .iter()
                    .map(|t| (t.name.clone(), t.partition_data.iter().map(|p| p.index).collect()))
                    .collect(),
                ..Denied::default()
            }
            .fill_produce_code(code),
        ),
        RequestKind::JoinGroup(_) => {
            ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(code).with_generation_id(-1))
        }
        RequestKind::ConsumerGroupHeartbeat(_) => ResponseKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(m.clone())
                .with_member_epoch(-1),
        ),
        RequestKind::ShareGroupHeartbeat(_) => ResponseKind::ShareGroupHeartbeat(
            ShareGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(m.clone())
                .with_member_epoch(-1),
        ),
        RequestKind::ShareFetch(_) => ResponseKind::ShareFetch(
            ShareFetchResponse::default().with_error_code(code).with_error_message(m.clone()),
        ),
        RequestKind::ShareAcknowledge(_) => ResponseKind::ShareAcknowledge(
            ShareAcknowledgeResponse::default().with_error_code(code).with_error_message(m.clone()),
        ),
        RequestKind::SyncGroup(_) => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        RequestKind::Heartbeat(_) => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        RequestKind::LeaveGroup(_) => ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_error_code(code_if((2..=7).contains(&version))).with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        describe_groups_response::DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                            .with_error_message(m_from(6))
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                r.groups_names
                    .iter()
                    .map(|g| {
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        // v4+ (KIP-699) answers per key only: the top-level fields do not exist there
        RequestKind::FindCoordinator(r) if version >= 4 => ResponseKind::FindCoordinator(
            FindCoordinatorResponse::default().with_coordinators(
                    r.coordinator_keys
                        .iter()
                        .map(|k| {
                            find_coordinator_response::Coordinator::default()
                                .with_key(k.clone())
                                .with_node_id(BrokerId(-1))
                                .with_port(-1)
                                .with_error_code(code)
                                .with_error_message(m.clone())
                        })
                        .collect(),
                ),
        ),
        RequestKind::FindCoordinator(_) => ResponseKind::FindCoordinator(
            FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_error_message(m_from(1))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        ),
        RequestKind::InitProducerId(_) => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        RequestKind::OffsetDelete(_) => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code))
        }
        RequestKind::EndTxn(_) => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code)),
        RequestKind::AddOffsetsToTxn(_) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            TxnOffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default().with_error_code(code_if(version >= 4)).with_results_by_topic_v3_and_below(
                r.v3_and_below_topics
                    .iter()
                    .map(|t| {
                        AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeUserScramCredentials(_) => ResponseKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsResponse::default()
                .with_error_code(code)
                .with_error_message(m),
        ),
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            AlterUserScramCredentialsResponse::default().with_results(
                r.upsertions
                    .iter()
                    .map(|u| u.name.clone())
                    .chain(r.deletions.iter().map(|d| d.name.clone()))
                    .map(|u| {
                        alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                            .with_user(u)
                            .with_error_code(code)
                            .with_error_message(m.clone())
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeQuorum(_) => ResponseKind::DescribeQuorum(
            DescribeQuorumResponse::default()
                .with_error_code(code)
                .with_error_message(m_from(2)),
        ),
        RequestKind::DescribeLogDirs(_) => {
            ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_error_code(code_if(version >= 3)))
        }
        RequestKind::DescribeClientQuotas(_) => ResponseKind::DescribeClientQuotas(
            DescribeClientQuotasResponse::default()
                .with_error_code(code)
                .with_error_message(m),
        ),
        RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(
            AlterClientQuotasResponse::default().with_entries(
                r.entries
                    .iter()
                    .map(|e| {
                        alter_client_quotas_response::EntryData::default()
                            .with_error_code(code)
                            .with_error_message(m.clone())
                            .with_entity(
                                e.entity
                                    .iter()
                                    .map(|p| {
                                        alter_client_quotas_response::EntityData::default()
                                            .with_entity_type(p.entity_type.clone())
                                            .with_entity_name(p.entity_name.clone())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

impl Denied {
    fn fill_produce_code(self, code: i16) -> ProduceResponse {
        let mut r = self.fill_produce(ProduceResponse::default());
        for t in &mut r.responses {
            for p in &mut t.partition_responses {
                p.error_code = code;
            }
        }
        r
    }
}
