//! The topic catalog: names, topic ids, partition counts, per-topic config overrides and the
//! shard that owns each partition. Shared by all shards (read-mostly, behind an RwLock) and
//! durable: every change is written to `<data>/__sluice/catalog.json` with write, fsync, rename,
//! fsync dir before it is acknowledged.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use sluice_engine::LogConfig;
use thiserror::Error;
use uuid::Uuid;

use crate::config::{apply_topic_config, ConfigError, ServerConfig};

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    /// Owning shard of each partition, by partition index.
    pub shards: Vec<usize>,
    /// Topic-level config overrides (Kafka key names).
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    pub fn partitions(&self) -> i32 {
        self.shards.len() as i32
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatalogState {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicInfo>,
    /// The next producer id InitProducerId hands out (never reused across restarts).
    #[serde(default)]
    pub next_producer_id: i64,
}

impl CatalogState {
    pub fn by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topics.values().find(|t| t.id == id)
    }

    /// The shard with the fewest partitions (ties to the lowest id).
    pub fn least_loaded_shard(&self, shards: usize, extra: &[usize]) -> usize {
        let mut load = vec![0usize; shards.max(1)];
        for t in self.topics.values() {
            for &s in &t.shards {
                if s < load.len() {
                    load[s] += 1;
                }
            }
        }
        for &s in extra {
            load[s] += 1;
        }
        (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0)
    }
}

/// The catalog plus where it lives on disk.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    state: RwLock<CatalogState>,
    /// Held by an update from its copy to its publication, so updates apply one after another
    /// while readers (every shard, on every request) never wait for the fsyncs.
    updating: std::sync::Mutex<()>,
}

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters, more than 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains {c:?}; only [a-zA-Z0-9._-] are allowed"
        ));
    }
    Ok(())
}

/// The partition's directory under the data dir (Kafka's `<topic>-<partition>`).
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// The effective log settings of a topic: broker defaults with the topic's overrides.
pub fn log_config(server: &ServerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = server.log.clone();
    for (k, v) in overrides {
        // overrides were validated when stored
        let _ = apply_topic_config(&mut c, k, v);
    }
    c
}

/// Validates topic config overrides (unknown keys and bad values are refused).
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut scratch = LogConfig::default();
    for (k, v) in configs {
        if !apply_topic_config(&mut scratch, k, v)? {
            return Err(ConfigError::BadValue {
                key: k.clone(),
                value: v.clone(),
                reason: "unknown topic config".into(),
            });
        }
    }
    crate::config::check_topic_config(&scratch)
}

impl Catalog {
    /// Loads the catalog from `data_dir`, creating an empty one on first start. Partitions
    /// placed on shards that no longer exist (fewer cores than last time) are moved.
    pub fn open(data_dir: &Path, shards: usize) -> Result<Arc<Catalog>, CatalogError> {
        let dir = data_dir.join("__sluice");
        let err = |path: &Path, e: &dyn std::fmt::Display| CatalogError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // durably: a __sluice whose entry in data_dir was never synced can vanish in a power
        // cut with every topic in it (found by the power-cut model, engine/tests/powercut.rs)
        sluice_engine::io::create_dir_all_durable(&dir).map_err(|e| err(&dir, &e))?;
        let path = dir.join("catalog.json");
        let mut state: CatalogState = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(&path, &e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogState {
                cluster_id: Uuid::new_v4().simple().to_string()[..22].to_string(),
                topics: BTreeMap::new(),
                next_producer_id: 0,
            },
            Err(e) => return Err(err(&path, &e)),
        };
        let mut moved = false;
        for t in state.topics.values_mut() {
            for (p, s) in t.shards.iter_mut().enumerate() {
                if *s >= shards {
                    *s = p % shards.max(1);
                    moved = true;
                }
            }
        }
        let catalog = Catalog {
            path,
            state: RwLock::new(state),
            updating: std::sync::Mutex::new(()),
        };
        if moved || !catalog.path.exists() {
            let st = catalog.read().clone();
            catalog.persist(&st)?;
        }
        Ok(Arc::new(catalog))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, CatalogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to a copy, persists the copy durably, then publishes it. Returns what
    /// `change` returned; nothing is published if it fails or persisting fails. Readers see the
    /// old state until the new one is durable, and are not held up by the writing.
    pub fn update<R, E: From<CatalogError>>(
        &self,
        change: impl FnOnce(&mut CatalogState) -> Result<R, E>,
    ) -> Result<R, E> {
        let _one_at_a_time = self.updating.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.read().clone();
        let r = change(&mut next)?;
        self.persist(&next)?;
        *self.write() = next;
        Ok(r)
    }

    /// [`Catalog::update`] on the executor's blocking thread: the shard that serves the
    /// request goes on while the catalog is written and fsync'd (and while another shard's
    /// update holds the catalog).
    pub async fn update_off_reactor<R, E>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut CatalogState) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<CatalogError> + Send + 'static,
    {
        let catalog = self.clone();
        sluice_engine::io::off_reactor(move || catalog.update(change)).await
    }

    /// Cluster mode: makes the local catalog the projection of the metadata image (topics,
    /// configs, partition counts, the cluster id), keeping the shard of partitions it already
    /// placed and placing new ones on the least loaded shard. The image is the source of truth;
    /// this copy lets the shards open and find their logs as in single-node mode.
    pub fn sync_from_image(
        &self,
        image: &crate::cluster::image::Image,
        shards: usize,
    ) -> Result<(), CatalogError> {
        self.update(|st| {
            let old = std::mem::take(&mut st.topics);
            st.cluster_id = image.cluster_id.clone();
            st.next_producer_id = image.next_producer_id;
            for t in image.topics.values() {
                // a topic created again under the same name keeps its shards, so the shard
                // holding the old replica is the one that replaces it
                let mut placed: Vec<usize> = old
                    .get(&t.name)
                    .map(|o| o.shards.clone())
                    .unwrap_or_default();
                placed.truncate(t.partitions.len());
                while placed.len() < t.partitions.len() {
                    let s =
                        crate::cluster::coordinators::internal_shard(&t.name, placed.len(), shards)
                            .unwrap_or_else(|| st.least_loaded_shard(shards, &placed));
                    placed.push(s);
                }
                st.topics.insert(
                    t.name.clone(),
                    TopicInfo {
                        name: t.name.clone(),
                        id: t.id,
                        shards: placed,
                        configs: t.configs.clone(),
                    },
                );
            }
            Ok::<_, CatalogError>(())
        })
    }

    fn persist(&self, state: &CatalogState) -> Result<(), CatalogError> {
        let err = |e: &dyn std::fmt::Display| CatalogError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(&e))?;
        let tmp = self.path.with_extension("json.tmp");
        let io = sluice_engine::io::write_new(&tmp, &bytes)
            .and_then(|f| sluice_engine::io::sync_data(&f));
        if let Err(e) = io {
            // a full disk: give the temp file's blocks back (the old catalog is untouched)
            let _ = sluice_engine::io::remove_file(&tmp);
            return Err(err(&e));
        }
        sluice_engine::io::rename(&tmp, &self.path).map_err(|e| err(&e))?;
        if let Some(dir) = self.path.parent() {
            sluice_engine::meta::sync_dir(dir).map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn catalog_is_durable_and_rebalances_shards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Catalog::open(dir.path(), 4).expect("open");
        c.update(|s| {
            s.topics.insert(
                "t".into(),
                TopicInfo {
                    name: "t".into(),
                    id: Uuid::new_v4(),
                    shards: vec![0, 1, 2, 3],
                    configs: BTreeMap::new(),
                },
            );
            Ok::<_, CatalogError>(())
        })
        .expect("update");
        let id = c.read().topics["t"].id;
        drop(c);
        let c = Catalog::open(dir.path(), 2).expect("reopen");
        let st = c.read();
        assert_eq!(st.topics["t"].id, id);
        assert!(st.topics["t"].shards.iter().all(|&s| s < 2));
    }
}
