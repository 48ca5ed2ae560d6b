//! SCRAM credentials: user -> mechanism -> [`Credential`]. A single node keeps them in
//! `<data>/__sluice/scram-credentials.json`, replaced durably (write, fdatasync, rename, fsync
//! dir) before AlterUserScramCredentials answers; a cluster keeps them in the metadata image
//! (`Command::AlterScramCredentials`), so every broker authenticates the same users.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::scram::{Credential, Hash};

pub type ScramUsers = BTreeMap<String, BTreeMap<Hash, Credential>>;

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramChange {
    Upsert {
        user: String,
        hash: Hash,
        credential: Credential,
    },
    Delete {
        user: String,
        hash: Hash,
    },
}

/// Applies `changes` in order (a deletion of something absent changes nothing).
pub fn apply(users: &mut ScramUsers, changes: &[ScramChange]) {
    for c in changes {
        match c {
            ScramChange::Upsert {
                user,
                hash,
                credential,
            } => {
                users
                    .entry(user.clone())
                    .or_default()
                    .insert(*hash, credential.clone());
            }
            ScramChange::Delete { user, hash } => {
                if let Some(m) = users.get_mut(user) {
                    m.remove(hash);
                    if m.is_empty() {
                        users.remove(user);
                    }
                }
            }
        }
    }
}

/// The single-node store.
pub struct LocalStore {
    path: PathBuf,
    users: RwLock<Arc<ScramUsers>>,
}

impl LocalStore {
    pub fn open(data_dir: &std::path::Path) -> Result<LocalStore, String> {
        let dir = data_dir.join("__sluice");
        sluice_engine::io::create_dir_all_durable(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("scram-credentials.json");
        let users = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ScramUsers::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(LocalStore {
            path,
            users: RwLock::new(Arc::new(users)),
        })
    }

    pub fn users(&self) -> Arc<ScramUsers> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies and persists `changes`; on a write error nothing changes.
    pub fn alter(&self, changes: &[ScramChange]) -> Result<(), String> {
        let mut guard = self.users.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        apply(&mut next, changes);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        sluice_engine::meta::durable_replace(&self.path, &bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        *guard = Arc::new(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::open(dir.path()).expect("open");
        let cred = Credential::from_salted(Hash::Sha512, vec![1, 2], 4096, b"salted");
        s.alter(&[ScramChange::Upsert {
            user: "alice".into(),
            hash: Hash::Sha512,
            credential: cred.clone(),
        }])
        .expect("alter");
        let again = LocalStore::open(dir.path()).expect("reopen");
        assert_eq!(again.users()["alice"][&Hash::Sha512], cred);
        again
            .alter(&[ScramChange::Delete {
                user: "alice".into(),
                hash: Hash::Sha512,
            }])
            .expect("delete");
        assert!(LocalStore::open(dir.path())
            .expect("open")
            .users()
            .is_empty());
    }
}
