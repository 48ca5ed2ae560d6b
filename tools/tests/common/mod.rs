//! The in-process broker the `sluice` binary's tests run against: two shards, a fresh data
//! directory, a plaintext listener on a free port, no HTTP listener; stopped on drop.

#![allow(dead_code)] // each test crate uses its own subset

use sluice_server::config::{Listeners, SecurityProtocol, ServerConfig};

pub struct Broker {
    handle: Option<sluice_server::BrokerHandle>,
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(|_| {})
    }

    /// Starts with the defaults above, changed by `configure`.
    pub fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig {
            listeners: Listeners::plaintext("127.0.0.1:0".parse().expect("addr")),
            data_dir: dir.path().to_path_buf(),
            cores: 2,
            http_listen: None,
            ..ServerConfig::default()
        };
        configure(&mut config);
        let handle = sluice_server::start(config).expect("broker starts");
        let addr = handle.addr.to_string();
        Broker {
            handle: Some(handle),
            dir,
            addr,
        }
    }

    /// The bound address of the (first) listener speaking `protocol`.
    pub fn listener(&self, protocol: SecurityProtocol) -> String {
        let h = self.handle.as_ref().expect("running");
        h.listeners
            .iter()
            .find(|(_, p, _)| *p == protocol)
            .map(|(_, _, a)| a.to_string())
            .expect("listener")
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
