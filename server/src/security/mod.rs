//! Security: who a connection is, and (later) what it may do.
//!
//! Data path of a connection on a secured listener: accepted socket -> [`tls::TlsContext::accept`]
//! on SSL and SASL_SSL listeners (rustls handshake, bounded by a timeout; the client
//! certificate's subject, mapped by `ssl.principal.mapping.rules`, is the principal) ->
//! `conn::Transport` over the TLS stream (no sendfile: every byte goes through rustls) ->
//! `conn::Session` holding the principal -> request handlers.
//!
//! A client without a certificate (or on a PLAINTEXT listener) is `User:ANONYMOUS`.

pub mod principal;
pub mod tls;

use crate::config::ServerConfig;

/// The broker's security state, shared by every shard.
pub struct Security {
    /// Present when a listener speaks TLS.
    pub tls: Option<tls::TlsContext>,
}

impl Security {
    /// Loads what the configured listeners need; a listener that cannot be served securely
    /// stops the start.
    pub fn new(
        config: &ServerConfig,
        listeners: &[crate::config::Listener],
    ) -> Result<Security, String> {
        let tls = if listeners.iter().any(|l| l.protocol.tls()) {
            Some(tls::TlsContext::new(&config.tls).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Security { tls })
    }
}
