//! SCRAM credentials: user -> mechanism -> [`Credential`]. A single node keeps them in
//! `<data>/__sluice/scram-credentials.json`, replaced durably (write, fdatasync, rename, fsync
//! dir) before AlterUserScramCredentials answers; a cluster keeps them in the metadata image
//! (`Command::AlterScramCredentials`), so every broker authenticates the same users.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// The single-node store: `<data>/__sluice/scram-credentials.json`.
pub type LocalStore = crate::jsonstore::JsonStore<ScramUsers>;

/// Opens the single-node store.
pub fn open_local(data_dir: &std::path::Path) -> Result<Arc<LocalStore>, String> {
    LocalStore::open(data_dir, "scram-credentials.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open_local(dir.path()).expect("open");
        let cred = Credential::from_salted(Hash::Sha512, vec![1, 2], 4096, b"salted");
        let upsert = [ScramChange::Upsert {
            user: "alice".into(),
            hash: Hash::Sha512,
            credential: cred.clone(),
        }];
        s.change(|u| apply(u, &upsert)).expect("alter");
        let again = open_local(dir.path()).expect("reopen");
        assert_eq!(again.get()["alice"][&Hash::Sha512], cred);
        let delete = [ScramChange::Delete {
            user: "alice".into(),
            hash: Hash::Sha512,
        }];
        again.change(|u| apply(u, &delete)).expect("delete");
        assert!(open_local(dir.path()).expect("open").get().is_empty());
    }
}
