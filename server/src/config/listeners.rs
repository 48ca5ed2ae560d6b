//! Listeners, with Kafka's keys: `listeners=NAME://host:port,...`,
//! `listener.security.protocol.map=NAME:PROTOCOL,...`, `advertised.listeners=NAME://host:port,...`
//! and `inter.broker.listener.name`. A listener's security protocol is the one the map gives
//! its name, or its name itself when that is a protocol (`SSL://:9093`). The keys may come in
//! any order, so they are kept as written and resolved once, at start ([`Listeners::resolve`]).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::{bad, ConfigError};

/// How a listener's connections are secured (Kafka's `security.protocol` values; the CLI's
/// type).
pub use sluice_tools::security::SecurityProtocol;

/// One `NAME://host:port` entry as written (also a broker's registered endpoint).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// Upper-cased, as Kafka normalises listener names.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A resolved listener: what a shard binds and what clients are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// From advertised.listeners; `None`: the bound address.
    pub advertised: Option<(String, u16)>,
}

/// The listener keys as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// `listeners`, in order; the first is the one `--listen` sets.
    pub bind: Vec<Endpoint>,
    /// `advertised.listeners`
    pub advertised: Vec<Endpoint>,
    /// `listener.security.protocol.map`
    pub protocol_map: BTreeMap<String, SecurityProtocol>,
    /// `inter.broker.listener.name`
    pub inter_broker: Option<String>,
}

impl Listeners {
    /// A single PLAINTEXT listener on `addr` (what embedded brokers and tests use).
    pub fn plaintext(addr: SocketAddr) -> Listeners {
        Listeners {
            bind: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: addr.ip().to_string(),
                port: addr.port(),
            }],
            advertised: Vec::new(),
            protocol_map: BTreeMap::new(),
            inter_broker: None,
        }
    }

    /// `--listen`: the address of the first listener.
    pub fn set_first_addr(&mut self, addr: SocketAddr) {
        match self.bind.first_mut() {
            Some(e) => {
                e.host = addr.ip().to_string();
                e.port = addr.port();
            }
            None => *self = Listeners::plaintext(addr),
        }
    }

    /// `--advertised`: the advertised address of the first listener.
    pub fn set_first_advertised(&mut self, host: String, port: u16) {
        let name = self
            .bind
            .first()
            .map_or_else(|| "PLAINTEXT".to_string(), |e| e.name.clone());
        self.advertised.retain(|e| e.name != name);
        self.advertised.push(Endpoint { name, host, port });
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "listeners" => {
                let list = parse_endpoints(key, value)?;
                if list.is_empty() {
                    return Err(bad(key, value, "at least one listener is needed"));
                }
                self.bind = list;
            }
            "advertised.listeners" => self.advertised = parse_endpoints(key, value)?,
            "listener.security.protocol.map" => self.protocol_map = parse_map(key, value)?,
            "inter.broker.listener.name" => {
                let name = value.trim().to_ascii_uppercase();
                self.inter_broker = (!name.is_empty()).then_some(name);
            }
            _ => unreachable!("Listeners::set called with {key}"),
        }
        Ok(())
    }

    /// The listeners to bind, in order, with their protocols and advertised addresses.
    pub fn resolve(&self) -> Result<Vec<Listener>, ConfigError> {
        let mut out: Vec<Listener> = Vec::new();
        for e in &self.bind {
            let protocol = self
                .protocol_map
                .get(&e.name)
                .copied()
                .or_else(|| e.name.parse::<SecurityProtocol>().ok())
                .ok_or_else(|| {
                    bad(
                        "listener.security.protocol.map",
                        &self.map_text(),
                        format!("listener {} has no security protocol", e.name),
                    )
                })?;
            let bind = resolve_addr(&e.host, e.port).ok_or_else(|| {
                bad(
                    "listeners",
                    &format!("{}://{}:{}", e.name, e.host, e.port),
                    "cannot resolve host",
                )
            })?;
            if let Some(clash) = out.iter().find(|l| l.bind == bind && bind.port() != 0) {
                return Err(bad(
                    "listeners",
                    &format!("{}://{}:{}", e.name, e.host, e.port),
                    format!("listener {} binds the same address", clash.name),
                ));
            }
            out.push(Listener {
                name: e.name.clone(),
                protocol,
                bind,
                advertised: None,
            });
        }
        for a in &self.advertised {
            let Some(l) = out.iter_mut().find(|l| l.name == a.name) else {
                return Err(bad(
                    "advertised.listeners",
                    &format!("{}://{}:{}", a.name, a.host, a.port),
                    format!("no listener is named {}", a.name),
                ));
            };
            l.advertised = Some((a.host.clone(), a.port));
        }
        if let Some(name) = &self.inter_broker {
            if !out.iter().any(|l| &l.name == name) {
                return Err(bad(
                    "inter.broker.listener.name",
                    name,
                    "no listener has this name",
                ));
            }
        }
        Ok(out)
    }

    /// Index (into [`Listeners::resolve`]'s list) of the listener brokers reach each other on:
    /// `inter.broker.listener.name`, else the listener named PLAINTEXT, else the first
    /// PLAINTEXT one. Brokers talk to each other in plain text or over TLS (they do not
    /// authenticate with SASL), so it must be a PLAINTEXT or an SSL listener.
    pub fn inter_broker_index(&self, resolved: &[Listener]) -> Result<usize, ConfigError> {
        let pick = match &self.inter_broker {
            Some(name) => resolved.iter().position(|l| &l.name == name),
            None => resolved
                .iter()
                .position(|l| l.name == "PLAINTEXT")
                .or_else(|| {
                    resolved
                        .iter()
                        .position(|l| l.protocol == SecurityProtocol::Plaintext)
                }),
        };
        let name = self.inter_broker.clone().unwrap_or_default();
        match pick {
            Some(i)
                if matches!(
                    resolved[i].protocol,
                    SecurityProtocol::Plaintext | SecurityProtocol::Ssl
                ) =>
            {
                Ok(i)
            }
            Some(i) => Err(bad(
                "inter.broker.listener.name",
                &resolved[i].name,
                format!(
                    "is a {} listener; sluice's brokers replicate over a PLAINTEXT or SSL one",
                    resolved[i].protocol.name()
                ),
            )),
            None => Err(bad(
                "inter.broker.listener.name",
                &name,
                "a cluster needs a PLAINTEXT listener for its brokers",
            )),
        }
    }

    fn map_text(&self) -> String {
        self.protocol_map
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.name()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `listeners` as Kafka prints it (DescribeConfigs).
    pub fn bind_text(&self) -> String {
        join(&self.bind)
    }
}

fn join(list: &[Endpoint]) -> String {
    list.iter()
        .map(|e| format_endpoint(&e.name, &e.host, e.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// `NAME://host:port`, brackets around an IPv6 host.
pub fn format_endpoint(name: &str, host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("{name}://[{host}]:{port}")
    } else {
        format!("{name}://{host}:{port}")
    }
}

fn resolve_addr(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// `NAME://host:port,...`; an entry without `NAME://` is PLAINTEXT, an empty host is 0.0.0.0.
fn parse_endpoints(key: &str, value: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, hostport) = match entry.split_once("://") {
            Some((n, hp)) => (n.trim().to_ascii_uppercase(), hp),
            None => ("PLAINTEXT".to_string(), entry),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(key, value, format!("bad listener name {name:?}")));
        }
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| bad(key, value, "expected NAME://host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad(key, value, format!("port of {name} is not a number")))?;
        let host = host.trim_matches(['[', ']']);
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        if out.iter().any(|e| e.name == name) {
            return Err(bad(key, value, format!("listener {name} is listed twice")));
        }
        out.push(Endpoint {
            name,
            host: host.to_string(),
            port,
        });
    }
    Ok(out)
}

/// `NAME:PROTOCOL,...`
fn parse_map(key: &str, value: &str) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, proto) = entry
            .split_once(':')
            .ok_or_else(|| bad(key, value, "expected NAME:PROTOCOL,..."))?;
        let protocol = proto.parse::<SecurityProtocol>().map_err(|_| {
            bad(
                key,
                value,
                format!(
                    "unknown security protocol {proto:?} (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
                ),
            )
        })?;
        out.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(pairs: &[(&str, &str)]) -> Result<Listeners, ConfigError> {
        let mut l = Listeners::plaintext("127.0.0.1:9092".parse().expect("addr"));
        for (k, v) in pairs {
            l.set(k, v)?;
        }
        Ok(l)
    }

    #[test]
    fn several_listeners_with_a_protocol_map_in_any_order() {
        let l = listeners(&[
            ("advertised.listeners", "EXTERNAL://broker.example:19093"),
            (
                "listener.security.protocol.map",
                "internal:PLAINTEXT,EXTERNAL:SASL_SSL",
            ),
            (
                "listeners",
                "INTERNAL://127.0.0.1:19092,EXTERNAL://127.0.0.1:19093,SSL://:19094",
            ),
            ("inter.broker.listener.name", "internal"),
        ])
        .expect("valid");
        let r = l.resolve().expect("resolves");
        let got: Vec<_> = r.iter().map(|x| (x.name.as_str(), x.protocol)).collect();
        assert_eq!(
            got,
            vec![
                ("INTERNAL", SecurityProtocol::Plaintext),
                ("EXTERNAL", SecurityProtocol::SaslSsl),
                ("SSL", SecurityProtocol::Ssl),
            ]
        );
        assert_eq!(r[1].advertised, Some(("broker.example".into(), 19093)));
        assert_eq!(r[2].bind, "0.0.0.0:19094".parse().expect("addr"));
        assert_eq!(l.inter_broker_index(&r).expect("plaintext"), 0);
        assert!(r[1].protocol.tls() && r[1].protocol.sasl());
    }

    #[test]
    fn bad_listener_settings_name_the_key() {
        let e = listeners(&[("listeners", "CLIENT://127.0.0.1:1")])
            .expect("parses")
            .resolve()
            .expect_err("no protocol for CLIENT");
        assert!(
            e.to_string().contains("CLIENT has no security protocol"),
            "{e}"
        );
        let e = listeners(&[("listeners", "A://h:1,A://h:2")]).expect_err("twice");
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = listeners(&[("listener.security.protocol.map", "A:TLS")]).expect_err("proto");
        assert!(e.to_string().contains("unknown security protocol"), "{e}");
        let e = listeners(&[("advertised.listeners", "SSL://x:1")])
            .expect("parses")
            .resolve()
            .expect_err("no such listener");
        assert!(e.to_string().contains("no listener is named SSL"), "{e}");
        let l = listeners(&[("listeners", "SSL://127.0.0.1:1")]).expect("parses");
        let r = l.resolve().expect("resolves");
        let e = l.inter_broker_index(&r).expect_err("no plaintext");
        assert!(e.to_string().contains("needs a PLAINTEXT listener"), "{e}");
        let l = listeners(&[
            ("listeners", "SSL://127.0.0.1:1,SASL_SSL://127.0.0.1:2"),
            ("inter.broker.listener.name", "SSL"),
        ])
        .expect("parses");
        let r = l.resolve().expect("resolves");
        assert_eq!(l.inter_broker_index(&r).expect("an SSL one may be"), 0);
        let l = listeners(&[
            ("listeners", "SSL://127.0.0.1:1,SASL_SSL://127.0.0.1:2"),
            ("inter.broker.listener.name", "SASL_SSL"),
        ])
        .expect("parses");
        let r = l.resolve().expect("resolves");
        let e = l
            .inter_broker_index(&r)
            .expect_err("no SASL between brokers");
        assert!(e.to_string().contains("PLAINTEXT or SSL"), "{e}");
        let e = listeners(&[("listeners", "PLAINTEXT://127.0.0.1:5,SSL://127.0.0.1:5")])
            .expect("parses")
            .resolve()
            .expect_err("same address");
        assert!(e.to_string().contains("same address"), "{e}");
    }

    #[test]
    fn an_entry_without_a_name_is_plaintext() {
        let l = listeners(&[("listeners", "[::1]:9092")]).expect("valid");
        assert_eq!(l.bind_text(), "PLAINTEXT://[::1]:9092");
    }
}
