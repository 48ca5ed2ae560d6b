//! GROUP config resources (type 32) of DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs: a group's dynamic configs over the broker's `group.consumer.*`
//! defaults (keys, validation and storage in [`crate::group::configs`]). A group need not exist
//! to have configs, as in Kafka: they belong to the group id.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::codes;
use super::configs::{ConfigEntry, SOURCE_DEFAULT, SOURCE_STATIC_BROKER, TYPE_INT, TYPE_STRING};
use super::topics::TopicError;
use crate::group::configs::{validate, ConsumerGroupBounds, GROUP_CONFIGS};
use crate::group::share::ShareGroupBounds;
use crate::shard::{BrokerShared, Shard};

/// DescribeConfigs source of a group's override (Kafka's ConfigSource.GROUP_CONFIG).
const SOURCE_GROUP: i8 = 8;

fn check_group_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError(
            codes::INVALID_REQUEST,
            "Group name must not be empty".into(),
        ));
    }
    Ok(())
}

/// The overrides `group` has (none: empty).
pub(crate) fn overrides(shared: &BrokerShared, group: &str) -> BTreeMap<String, String> {
    let found = match shared.image() {
        Some(img) => img.group_configs.get(group).cloned(),
        None => shared.group_configs.get().get(group).cloned(),
    };
    found.unwrap_or_default()
}

/// Every group config of `group`: its override (GROUP_CONFIG), else the broker's default
/// (STATIC_BROKER_CONFIG when server.properties set it, DEFAULT_CONFIG otherwise).
pub(super) fn describe(shared: &BrokerShared, group: &str) -> Result<Vec<ConfigEntry>, TopicError> {
    check_group_name(group)?;
    let over = overrides(shared, group);
    let mut defaults = shared.config.consumer_group.defaults();
    defaults.extend(shared.config.share_group.defaults());
    let mut builtin = ConsumerGroupBounds::default().defaults();
    builtin.extend(ShareGroupBounds::default().defaults());
    Ok(GROUP_CONFIGS
        .iter()
        .map(|(key, broker_key, doc)| {
            let default = defaults.get(*key).cloned();
            let built = builtin.get(*key).cloned();
            let static_set = default != built;
            let mut synonyms = Vec::new();
            if let Some(v) = over.get(*key) {
                synonyms.push((key.to_string(), Some(v.clone()), SOURCE_GROUP));
            }
            if static_set && !broker_key.is_empty() {
                synonyms.push((
                    broker_key.to_string(),
                    default.clone(),
                    SOURCE_STATIC_BROKER,
                ));
            }
            if !broker_key.is_empty() {
                synonyms.push((broker_key.to_string(), built, SOURCE_DEFAULT));
            }
            let (value, source) = match over.get(*key) {
                Some(v) => (Some(v.clone()), SOURCE_GROUP),
                None if static_set => (default, SOURCE_STATIC_BROKER),
                None => (default, SOURCE_DEFAULT),
            };
            ConfigEntry {
                name: key.to_string(),
                value,
                source,
                read_only: false,
                config_type: if *key == crate::group::share::AUTO_OFFSET_RESET {
                    TYPE_STRING
                } else {
                    TYPE_INT
                },
                doc: Some(doc),
                synonyms,
            }
        })
        .collect())
}

/// Replaces `group`'s overrides with `change(current)` once they validate; stored durably (the
/// local file, or the metadata image in a cluster) before the answer.
pub(super) async fn alter(
    shard: &Rc<Shard>,
    group: &str,
    validate_only: bool,
    change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TopicError>,
) -> Result<(), TopicError> {
    check_group_name(group)?;
    let shared = &shard.shared;
    let next = change(&overrides(shared, group))?;
    validate(
        &next,
        &shared.config.consumer_group,
        &shared.config.share_group,
    )
    .map_err(|e| TopicError(e.kafka_code(), e.to_string()))?;
    if validate_only {
        return Ok(());
    }
    let stored = if !shared.is_clustered() {
        let group = group.to_string();
        shared
            .group_configs
            .change_off_reactor(move |map| crate::group::configs::apply(map, &group, &next))
            .await
    } else {
        match shared.cluster.get().cloned() {
            None => Err("not in a cluster yet".to_string()),
            Some(member) => {
                let cmd = crate::cluster::image::Command::SetGroupConfigs {
                    group: group.to_string(),
                    configs: next,
                };
                // waits until this broker's image has the change
                match glommio::executor()
                    .spawn_blocking(move || member.propose(cmd))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e),
                }
            }
        }
    };
    stored.map_err(|e| {
        tracing::warn!(group, error = %e, "storing group configs failed");
        TopicError(
            codes::UNKNOWN_SERVER_ERROR,
            format!("group configs not stored: {e}"),
        )
    })?;
    tracing::info!(group, "altered group configs");
    Ok(())
}
