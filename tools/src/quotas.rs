//! Client quotas (KIP-546): DescribeClientQuotas (api 48) lists the entities (user,
//! client-id, or both; a null name is the default entity) and their quota values;
//! AlterClientQuotas (api 49) sets or removes values.

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::admin::kafka_check;
use crate::client::{Client, ClientError};

/// An entity: (entity type `user` / `client-id`, name; None is the default).
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// A describe filter's name match: Some(Some(name)) that name, Some(None) the default entity,
/// None any name.
pub type NameMatch = Option<Option<String>>;

/// One entity and its values, sorted by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaEntry {
    pub entity: QuotaEntity,
    pub values: Vec<(String, f64)>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// kafka-configs.sh's name of an entity: `user-principal 'alice', client-id 'x'`, `the
/// default client-id`.
pub fn entity_text(entity: &QuotaEntity) -> String {
    entity
        .iter()
        .map(|(t, n)| {
            let what = if t == "user" { "user-principal" } else { t };
            match n {
                Some(n) => format!("{what} '{n}'"),
                None => format!("the default {what}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value as Kafka's Double prints (`1024.0`).
pub fn value_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

impl Client {
    /// The entries matching `components` ((entity type, match): Some(Some(name)) that name,
    /// Some(None) the default, None any name); `strict`: entities with only those types.
    pub fn describe_client_quotas(
        &mut self,
        components: &[(String, NameMatch)],
        strict: bool,
    ) -> Result<Vec<QuotaEntry>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeClientQuotas, 0, 1)?;
        let comps = components
            .iter()
            .map(|(t, m)| {
                let (match_type, name) = match m {
                    Some(Some(n)) => (0, Some(sb(n))),
                    Some(None) => (1, None),
                    None => (2, None),
                };
                ComponentData::default()
                    .with_entity_type(sb(t))
                    .with_match_type(match_type)
                    .with_match(name)
            })
            .collect();
        let req = DescribeClientQuotasRequest::default()
            .with_components(comps)
            .with_strict(strict);
        let resp: DescribeClientQuotasResponse =
            self.connection()
                .call(ApiKey::DescribeClientQuotas, v, &req)?;
        kafka_check(
            || "describing client quotas".into(),
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        let mut out: Vec<QuotaEntry> = resp
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let mut values: Vec<(String, f64)> = e
                    .values
                    .into_iter()
                    .map(|v| (v.key.to_string(), v.value))
                    .collect();
                values.sort_by(|a, b| a.0.cmp(&b.0));
                QuotaEntry {
                    entity: e
                        .entity
                        .into_iter()
                        .map(|p| {
                            (
                                p.entity_type.to_string(),
                                p.entity_name.map(|n| n.to_string()),
                            )
                        })
                        .collect(),
                    values,
                }
            })
            .collect();
        out.sort_by(|a, b| a.entity.cmp(&b.entity));
        Ok(out)
    }

    /// Sets (Some) or removes (None) `ops` on `entity`; the broker's refusal is one
    /// [`ClientError::Kafka`].
    pub fn alter_client_quotas(
        &mut self,
        entity: &QuotaEntity,
        ops: &[(String, Option<f64>)],
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let v = self.negotiate(ApiKey::AlterClientQuotas, 0, 1)?;
        let entry = EntryData::default()
            .with_entity(
                entity
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(sb(t))
                            .with_entity_name(n.as_deref().map(sb))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|(k, v)| {
                        OpData::default()
                            .with_key(sb(k))
                            .with_value(v.unwrap_or(0.0))
                            .with_remove(v.is_none())
                    })
                    .collect(),
            );
        let req = AlterClientQuotasRequest::default()
            .with_entries(vec![entry])
            .with_validate_only(validate_only);
        let resp: AlterClientQuotasResponse =
            self.connection().call(ApiKey::AlterClientQuotas, v, &req)?;
        for r in &resp.entries {
            kafka_check(
                || format!("altering the quotas of {}", entity_text(entity)),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_values_print_as_kafka_configs() {
        let e = vec![
            ("user".to_string(), Some("alice".to_string())),
            ("client-id".to_string(), None),
        ];
        assert_eq!(
            entity_text(&e),
            "user-principal 'alice', the default client-id"
        );
        assert_eq!(value_text(1024.0), "1024.0");
        assert_eq!(value_text(12.5), "12.5");
    }
}
