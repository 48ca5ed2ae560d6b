//! Security: who a connection is, and (later) what it may do.
//!
//! Data path of a connection on a secured listener: accepted socket -> [`tls::TlsContext::accept`]
//! on SSL and SASL_SSL listeners (rustls handshake, bounded by a timeout; the client
//! certificate's subject, mapped by `ssl.principal.mapping.rules`, is the principal) ->
//! `conn::Transport` over the TLS stream (no sendfile: every byte goes through rustls) ->
//! `conn::Session` -> on SASL_PLAINTEXT and SASL_SSL listeners, [`sasl::SaslState`]: requests
//! are served one at a time and only ApiVersions, SaslHandshake and SaslAuthenticate until the
//! client authenticates (PLAIN against the JAAS users or the SCRAM store, SCRAM-SHA-256/512
//! against [`credentials`]); the SASL user becomes the principal -> request handlers.
//!
//! A client without a certificate (or on a PLAINTEXT listener) is `User:ANONYMOUS`.

pub mod acl;
pub mod credentials;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::sync::Arc;

use crate::config::ServerConfig;
use crate::shard::BrokerShared;

use self::scram::{Credential, Hash};

/// The broker's security state, shared by every shard.
pub struct Security {
    /// By listener index: the TLS context of each SSL and SASL_SSL listener (each with the
    /// broker-wide `ssl.*` keys or its own `listener.name.<l>.ssl.*` ones).
    pub tls: Vec<Option<tls::TlsContext>>,
    /// By listener index: the SASL mechanisms it offers.
    pub sasl_mechanisms: Vec<Vec<String>>,
    /// SCRAM credentials of a single node (a cluster keeps them in the metadata image).
    pub credentials: Arc<credentials::LocalStore>,
    /// ACL bindings of a single node (a cluster keeps them in the metadata image).
    pub acls: Arc<acl::LocalAcls>,
}

impl Security {
    /// Loads what the configured listeners need; a listener that cannot be served securely
    /// stops the start.
    pub fn new(
        config: &ServerConfig,
        listeners: &[crate::config::Listener],
    ) -> Result<Security, String> {
        let mut tls = Vec::with_capacity(listeners.len());
        for l in listeners {
            tls.push(if l.protocol.tls() {
                let keys = config.tls_for(&l.name).map_err(|e| e.to_string())?;
                Some(tls::TlsContext::new(&keys).map_err(|e| format!("listener {}: {e}", l.name))?)
            } else {
                None
            });
        }
        let sasl_mechanisms = listeners
            .iter()
            .map(|l| config.sasl_mechanisms_for(&l.name))
            .collect();
        let credentials = credentials::open_local(&config.data_dir)
            .map_err(|e| format!("SCRAM credentials: {e}"))?;
        let acls = acl::open_local(&config.data_dir).map_err(|e| format!("ACLs: {e}"))?;
        Ok(Security {
            tls,
            sasl_mechanisms,
            credentials,
            acls,
        })
    }
}

impl BrokerShared {
    /// The SCRAM credentials every broker authenticates with.
    pub fn scram_users(&self) -> std::sync::Arc<credentials::ScramUsers> {
        match self.image() {
            Some(img) => std::sync::Arc::new(img.scram.clone()),
            None => self.security.credentials.get(),
        }
    }
}

/// The ACL bindings in force, held without copying them: the single node's set, or the
/// metadata image that holds the cluster's.
pub enum Acls {
    Local(std::sync::Arc<std::collections::BTreeSet<acl::AclBinding>>),
    Image(std::sync::Arc<crate::cluster::image::Image>),
}

impl Acls {
    pub fn set(&self) -> &std::collections::BTreeSet<acl::AclBinding> {
        match self {
            Acls::Local(b) => b,
            Acls::Image(img) => &img.acls,
        }
    }
}

impl BrokerShared {
    /// The ACL bindings in force.
    pub fn acl_bindings(&self) -> Acls {
        match self.image() {
            Some(img) => Acls::Image(img),
            None => Acls::Local(self.security.acls.get()),
        }
    }
}

/// Who is asking, for the authorizer: built once per request.
pub struct Authz<'a> {
    shared: &'a BrokerShared,
    principal: std::rc::Rc<str>,
    /// The client's address without its port.
    host: &'a str,
    /// None: no authorizer, everything is allowed (and nothing above is looked at).
    bindings: Option<Acls>,
}

impl<'a> Authz<'a> {
    pub fn new(shared: &'a BrokerShared, session: &'a crate::conn::Session) -> Authz<'a> {
        let peer = &*session.peer;
        let host = peer
            .rsplit_once(':')
            .map_or(peer, |(h, _)| h)
            .trim_matches(['[', ']']);
        Authz {
            shared,
            principal: session.principal.borrow().clone(),
            host,
            bindings: shared.config.authorizer.then(|| shared.acl_bindings()),
        }
    }

    /// Whether the principal may do `operation` on the resource (always, without an
    /// authorizer).
    pub fn allows(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        let Some(b) = &self.bindings else {
            return true;
        };
        let policy = acl::Policy {
            super_users: &self.shared.config.super_users,
            allow_if_no_acl: self.shared.config.allow_everyone_if_no_acl,
        };
        let ask = acl::Ask {
            principal: &self.principal,
            host: self.host,
            operation,
            resource_type,
            name,
        };
        acl::authorize(b.set(), &policy, &ask)
    }

    pub fn topic(&self, operation: i8, name: &str) -> bool {
        self.allows(operation, acl::resource::TOPIC, name)
    }

    pub fn group(&self, operation: i8, name: &str) -> bool {
        self.allows(operation, acl::resource::GROUP, name)
    }

    pub fn cluster(&self, operation: i8) -> bool {
        self.allows(operation, acl::resource::CLUSTER, acl::CLUSTER_NAME)
    }

    pub fn txn(&self, operation: i8, id: &str) -> bool {
        self.allows(operation, acl::resource::TRANSACTIONAL_ID, id)
    }

    pub fn enabled(&self) -> bool {
        self.bindings.is_some()
    }
}

impl sasl::Credentials for BrokerShared {
    /// The JAAS users first; a user with SCRAM credentials may also log in with PLAIN.
    fn check_plain(&self, user: &str, password: &str) -> bool {
        if let Some(p) = self.config.sasl.plain_users.get(user) {
            return p.as_bytes() == password.as_bytes();
        }
        let users = self.scram_users();
        users.get(user).is_some_and(|m| {
            m.iter()
                .next()
                .is_some_and(|(hash, cred)| cred.matches_password(*hash, password))
        })
    }

    fn scram(&self, user: &str, hash: Hash) -> Option<Credential> {
        match self.image() {
            Some(img) => img.scram.get(user).and_then(|m| m.get(&hash)).cloned(),
            None => self
                .security
                .credentials
                .get()
                .get(user)
                .and_then(|m| m.get(&hash))
                .cloned(),
        }
    }
}
