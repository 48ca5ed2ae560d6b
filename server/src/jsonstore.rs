//! A small durable JSON document of a single-node broker (ACL bindings, SCRAM credentials,
//! group configs, under `<data>/__sluice/`): readers take an `Arc` of the current value and
//! never wait for a write; a change is applied to a copy, stored with a durable replace (temp
//! file, fdatasync, rename, directory fsync) and only then published.
//!
//! Data path: admin request on a shard -> [`JsonStore::change_off_reactor`] -> the executor's
//! blocking thread: one writer at a time (`writing`), copy, apply, `meta::durable_replace`,
//! then the new `Arc` is swapped in under a write lock held for the swap alone. A failed write
//! changes nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct JsonStore<T> {
    path: PathBuf,
    current: RwLock<Arc<T>>,
    writing: Mutex<()>,
}

impl<T> JsonStore<T>
where
    T: Serialize + DeserializeOwned + Clone + Default + Send + Sync + 'static,
{
    /// Opens `<data_dir>/__sluice/<file>` (a missing file is the empty value); the directory
    /// is created durably.
    pub fn open(data_dir: &Path, file: &str) -> Result<Arc<JsonStore<T>>, String> {
        let dir = data_dir.join("__sluice");
        sluice_engine::io::create_dir_all_durable(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(file);
        let value = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Arc::new(JsonStore {
            path,
            current: RwLock::new(Arc::new(value)),
            writing: Mutex::new(()),
        }))
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` to a copy, stores it durably, then puts it in force (blocking).
    pub fn change(&self, change: impl FnOnce(&mut T)) -> Result<(), String> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*self.get()).clone();
        change(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        sluice_engine::meta::durable_replace(&self.path, &bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// [`JsonStore::change`] on the executor's blocking thread.
    pub async fn change_off_reactor(
        self: &Arc<Self>,
        change: impl FnOnce(&mut T) + Send + 'static,
    ) -> Result<(), String> {
        let store = self.clone();
        sluice_engine::io::off_reactor(move || store.change(change)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn changes_survive_reopen_and_a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = JsonStore::<BTreeMap<String, u32>>::open(dir.path(), "t.json").expect("open");
        assert!(s.get().is_empty());
        s.change(|m| {
            m.insert("a".into(), 1);
        })
        .expect("change");
        let again = JsonStore::<BTreeMap<String, u32>>::open(dir.path(), "t.json").expect("reopen");
        assert_eq!(again.get().get("a"), Some(&1));
        // the directory is gone: the durable replace fails and the value in force stays
        std::fs::remove_dir_all(dir.path().join("__sluice")).expect("rm");
        assert!(again
            .change(|m| {
                m.insert("b".into(), 2);
            })
            .is_err());
        assert_eq!(*again.get(), BTreeMap::from([("a".to_string(), 1)]));
    }
}
