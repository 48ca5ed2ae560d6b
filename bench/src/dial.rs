//! How loadgen's connections reach the broker: the client security of `--command-config` / `-X`
//! (or of the embedded broker's `--security`), and the host name TLS checks the certificate of
//! the `--bootstrap-server` address against.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_tools::{Client, ClientError, ClientSecurity};

#[derive(Debug, Clone, Default)]
pub struct Dial {
    pub security: Arc<ClientSecurity>,
    /// `--bootstrap-server` as given, and the address it resolved to: connections to that
    /// address use the name for TLS; others (an embedded cluster's brokers) use their IP.
    host: Option<(String, SocketAddr)>,
}

impl Dial {
    pub fn new(security: ClientSecurity) -> Dial {
        Dial {
            security: Arc::new(security),
            host: None,
        }
    }

    /// Connections to `addr` name the broker `host` (host:port) for TLS.
    pub fn with_host(mut self, host: &str, addr: SocketAddr) -> Dial {
        self.host = Some((host.to_string(), addr));
        self
    }

    /// Connects (TLS and SASL as configured) and runs ApiVersions.
    pub fn connect(&self, addr: SocketAddr, client_id: &str) -> Result<Client, ClientError> {
        let host = self
            .host
            .as_ref()
            .filter(|(_, a)| *a == addr)
            .map(|(h, _)| h.as_str());
        Client::connect_to(addr, host, client_id, &self.security)
    }
}
