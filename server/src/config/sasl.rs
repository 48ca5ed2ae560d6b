//! SASL keys of SASL_PLAINTEXT and SASL_SSL listeners: `sasl.enabled.mechanisms` (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512), PLAIN users as Kafka's `PlainLoginModule` lists them
//! (`user_<name>="<password>"` in `sasl.jaas.config`, `plain.sasl.jaas.config` or their
//! `listener.name.<listener>.` forms; every listener shares one user list), and
//! `connections.max.reauth.ms` (KIP-368).

use std::collections::BTreeMap;

use super::{bad, ConfigError};

pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslKeys {
    /// Enabled mechanisms, in the order clients are told.
    pub mechanisms: Vec<String>,
    /// PLAIN users and passwords from JAAS configs.
    pub plain_users: BTreeMap<String, String>,
    /// connections.max.reauth.ms: 0 keeps a session for the connection's life.
    pub max_reauth_ms: u64,
}

impl Default for SaslKeys {
    fn default() -> Self {
        SaslKeys {
            mechanisms: MECHANISMS.iter().map(|m| m.to_string()).collect(),
            plain_users: BTreeMap::new(),
            max_reauth_ms: 0,
        }
    }
}

/// `sasl.jaas.config` with an optional `listener.name.<l>.` prefix and `<mechanism>.` infix.
fn is_jaas_key(key: &str) -> bool {
    let rest = match key.strip_prefix("listener.name.") {
        Some(r) => match r.split_once('.') {
            Some((_, after)) => after,
            None => return false,
        },
        None => key,
    };
    rest == "sasl.jaas.config"
        || rest
            .strip_suffix(".sasl.jaas.config")
            .is_some_and(|m| !m.contains('.'))
}

impl SaslKeys {
    /// Handles `key` if it is one of these; `Ok(false)` if not.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "sasl.enabled.mechanisms" => {
                let mut out = Vec::new();
                for m in value.split(',').map(|m| m.trim().to_ascii_uppercase()) {
                    if m.is_empty() {
                        continue;
                    }
                    if !MECHANISMS.contains(&m.as_str()) {
                        return Err(bad(
                            key,
                            value,
                            format!("{m}: sluice offers PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512"),
                        ));
                    }
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                if out.is_empty() {
                    return Err(bad(key, value, "no mechanism left"));
                }
                self.mechanisms = out;
            }
            "connections.max.reauth.ms" => {
                self.max_reauth_ms = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(key, value, "not a valid number"))?;
            }
            "sasl.mechanism.inter.broker.protocol" => {}
            k if is_jaas_key(k) => {
                for (name, password) in jaas_users(key, value)? {
                    self.plain_users.insert(name, password);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The `user_<name>="<password>"` options of a JAAS login module line.
fn jaas_users(key: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("user_") {
        let after = &rest[i + 5..];
        let Some((name, tail)) = after.split_once('=') else {
            break;
        };
        let tail = tail.trim_start();
        let Some(quoted) = tail.strip_prefix('"') else {
            return Err(bad(
                key,
                value,
                format!("user_{name}: the password must be quoted"),
            ));
        };
        let Some(end) = quoted.find('"') else {
            return Err(bad(
                key,
                value,
                format!("user_{name}: unterminated password"),
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(bad(key, value, "user_ without a name"));
        }
        out.push((name.to_string(), quoted[..end].to_string()));
        rest = &quoted[end + 1..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_users_from_kafka_keys() {
        let mut s = SaslKeys::default();
        let line = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="al ice";"#;
        assert!(s
            .set("listener.name.sasl_plaintext.plain.sasl.jaas.config", line)
            .expect("valid"));
        assert_eq!(
            s.plain_users.get("alice").map(String::as_str),
            Some("al ice")
        );
        assert_eq!(
            s.plain_users.get("admin").map(String::as_str),
            Some("admin-secret")
        );
        assert_eq!(
            s.plain_users.len(),
            2,
            "username= and password= are not users"
        );
        assert!(s
            .set("sasl.jaas.config", "x required user_bob=\"b\";")
            .expect("valid"));
        assert!(s.plain_users.contains_key("bob"));
        assert!(!s
            .set("listener.name.sasl_ssl.ssl.keystore.location", "x")
            .expect("not sasl"));
        assert!(s.set("sasl.jaas.config", "x user_bob=unquoted").is_err());
    }

    #[test]
    fn mechanisms() {
        let mut s = SaslKeys::default();
        s.set("sasl.enabled.mechanisms", "scram-sha-512, PLAIN")
            .expect("valid");
        assert_eq!(s.mechanisms, vec!["SCRAM-SHA-512", "PLAIN"]);
        let e = s
            .set("sasl.enabled.mechanisms", "GSSAPI")
            .expect_err("kerberos");
        assert!(e.to_string().contains("GSSAPI"), "{e}");
    }
}
