//! DescribeClientQuotas (48) and AlterClientQuotas (49), KIP-546: the quota entities and
//! values of [`crate::quota`], validated and answered with Kafka's codes and messages.
//! Altering stores durably (the local file, or the metadata image in a cluster) and puts the
//! change in force on this broker before the answer.

use std::rc::Rc;

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codes;
use crate::quota::entity::{validate_value, Filter};
use crate::quota::{Entity, Ops, QuotaValue};
use crate::shard::Shard;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(super) fn describe(
    shard: &Rc<Shard>,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    use describe_client_quotas_response::{EntityData, EntryData, ValueData};
    let filter = Filter::new(
        req.components.iter().map(|c| {
            (
                c.entity_type.as_str(),
                c.match_type,
                c._match.as_ref().map(|m| m.as_str()),
            )
        }),
        req.strict,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(msg) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(codes::INVALID_REQUEST)
                .with_error_message(Some(sb(&msg)))
                .with_entries(None)
        }
    };
    let map = shard.shared.quotas.current();
    let entries = map
        .0
        .iter()
        .filter(|(e, _)| filter.matches(e))
        .map(|(e, q)| {
            EntryData::default()
                .with_entity(
                    e.parts()
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(sb(t))
                                .with_entity_name(n.map(sb))
                        })
                        .collect(),
                )
                .with_values(
                    q.iter()
                        .map(|(k, v)| ValueData::default().with_key(sb(k)).with_value(v.0))
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// One entry's entity and ops, validated (the error is an INVALID_REQUEST message).
fn parse_entry(
    e: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<(Entity, Ops), String> {
    let entity = Entity::from_wire(e.entity.iter().map(|p| {
        (
            p.entity_type.as_str(),
            p.entity_name.as_ref().map(|n| n.as_str()),
        )
    }))?;
    let mut ops: Ops = Vec::with_capacity(e.ops.len());
    for op in &e.ops {
        let key = op.key.as_str();
        if ops.iter().any(|(k, _)| k == key) {
            return Err(format!(
                "Duplicate quota key {key} not updating quota for this entity {}",
                entity.describe()
            ));
        }
        if op.remove {
            // removing needs only a known key
            validate_value(key, 1.0)?;
            ops.push((key.to_string(), None));
        } else {
            validate_value(key, op.value)?;
            ops.push((key.to_string(), Some(QuotaValue(op.value))));
        }
    }
    Ok((entity, ops))
}

pub(super) async fn alter(
    shard: &Rc<Shard>,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    use alter_client_quotas_response::{EntityData, EntryData};
    let mut results: Vec<(i16, Option<String>)> = Vec::with_capacity(req.entries.len());
    let mut changes: Vec<(Entity, Ops)> = Vec::new();
    let mut changed_at: Vec<usize> = Vec::new();
    for e in &req.entries {
        match parse_entry(e) {
            Ok(c) => {
                changed_at.push(results.len());
                results.push((codes::NONE, None));
                changes.push(c);
            }
            Err(msg) => results.push((codes::INVALID_REQUEST, Some(msg))),
        }
    }
    if !req.validate_only && !changes.is_empty() {
        if let Err(msg) = store(shard, changes).await {
            tracing::warn!(error = %msg, "storing client quotas failed");
            for i in changed_at {
                results[i] = (
                    codes::UNKNOWN_SERVER_ERROR,
                    Some(format!("client quotas not stored: {msg}")),
                );
            }
        } else {
            tracing::info!(entries = req.entries.len(), "altered client quotas");
        }
    }
    let entries = req
        .entries
        .iter()
        .zip(results)
        .map(|(e, (code, msg))| {
            EntryData::default()
                .with_error_code(code)
                .with_error_message(msg.map(|m| sb(&m)))
                .with_entity(
                    e.entity
                        .iter()
                        .map(|p| {
                            EntityData::default()
                                .with_entity_type(p.entity_type.clone())
                                .with_entity_name(p.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// Durably, then in force on this broker.
async fn store(shard: &Rc<Shard>, changes: Vec<(Entity, Ops)>) -> Result<(), String> {
    let shared = &shard.shared;
    if !shared.is_clustered() {
        let s = shared.clone();
        // a small file replaced with fsync: off the executor
        return glommio::executor()
            .spawn_blocking(move || s.quotas.alter_local(&changes))
            .await;
    }
    let member = shared
        .cluster
        .get()
        .cloned()
        .ok_or_else(|| "not in a cluster yet".to_string())?;
    let cmd = crate::cluster::image::Command::AlterClientQuotas { changes };
    // waits until this broker's image has the change
    glommio::executor()
        .spawn_blocking(move || member.propose(cmd))
        .await?
        .map_err(|e| e.to_string())?;
    if let Some(img) = shared.image() {
        shared
            .quotas
            .install(std::sync::Arc::new(img.client_quotas.clone()));
    }
    Ok(())
}
