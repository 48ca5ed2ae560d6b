//! Client security settings, with librdkafka's and Kafka's key names: `security.protocol`
//! (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), `sasl.mechanism(s)` (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), `sasl.username`, `sasl.password` (or the `username="..." password="..."` of
//! a Java client's `sasl.jaas.config`), `ssl.ca.location`, `ssl.certificate.location`,
//! `ssl.key.location` (with `ssl.key.password` for an encrypted PKCS#8 key) and
//! `ssl.endpoint.identification.algorithm` (https, the default, checks
//! the broker's host name; none does not).
//!
//! [`ClientSecurity::from_settings`] reads them from `key=value` pairs: a Java properties file
//! ([`parse_properties`], as kafka-topics.sh's `--command-config`) followed by `-X key=value`
//! overrides (as kcat's). TLS is rustls with the ring provider; the root store is the
//! `ssl.ca.location` PEM (required for SSL in this version).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod tls;
use tls::build_tls;
pub use tls::server_name;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("{key}: {reason}")]
    BadValue { key: String, reason: String },
    #[error("{0}")]
    Missing(String),
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// `security.protocol`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "{s:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )),
        }
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "PLAIN")]
    #[value(name = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The ScramMechanism type of AlterUserScramCredentials / DescribeUserScramCredentials.
    pub fn scram_type(self) -> Option<i8> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(1),
            SaslMechanism::ScramSha512 => Some(2),
        }
    }

    pub fn of_scram_type(t: i8) -> Option<SaslMechanism> {
        match t {
            1 => Some(SaslMechanism::ScramSha256),
            2 => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SaslMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "{s:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
            )),
        }
    }
}

/// SASL credentials.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// Never serialized (a run's summary.json must not hold it).
    #[serde(skip_serializing, default)]
    pub password: String,
}

impl fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS settings (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// `ssl.ca.location`: the CAs the broker's certificate must chain to.
    pub ca_location: PathBuf,
    /// `ssl.certificate.location` and `ssl.key.location`, for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    pub key_location: Option<PathBuf>,
    /// `ssl.key.password`: the key file is an encrypted PKCS#8 one (never written out).
    #[serde(skip)]
    pub key_password: Option<Secret>,
    /// `ssl.endpoint.identification.algorithm=https` (the default): the certificate must name
    /// the host connected to.
    pub verify_hostname: bool,
}

/// A password: shown as `<redacted>` by Debug.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to connect to brokers: plaintext (the default), TLS, SASL or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientSecurity {
    pub protocol: SecurityProtocol,
    /// Set for SASL_PLAINTEXT and SASL_SSL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sasl: Option<SaslSettings>,
    /// Set for SSL and SASL_SSL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls: Option<TlsSettings>,
    /// The rustls configuration, built once from `tls`.
    #[serde(skip)]
    tls_config: OnceLock<Arc<ClientConfig>>,
}

impl PartialEq for ClientSecurity {
    fn eq(&self, other: &Self) -> bool {
        self.protocol == other.protocol && self.sasl == other.sasl && self.tls == other.tls
    }
}

/// What [`ClientSecurity::from_settings`] made of the settings.
#[derive(Debug)]
pub struct Parsed {
    pub security: ClientSecurity,
    /// One line each: keys this client does not know, settings that do not apply.
    pub warnings: Vec<String>,
}

/// Keys of Kafka's and librdkafka's client configs that mean nothing to this client and are
/// ignored without a warning (a command-config written for kafka-topics.sh has them).
const QUIETLY_IGNORED: &[&str] = &[
    "client.id",
    "request.timeout.ms",
    "default.api.timeout.ms",
    "ssl.protocol",
    "ssl.enabled.protocols",
];

impl ClientSecurity {
    /// Plaintext: no TLS, no SASL.
    pub fn plaintext() -> ClientSecurity {
        ClientSecurity::default()
    }

    /// Reads the settings (later pairs override earlier ones) and checks them; files are read
    /// later, by [`ClientSecurity::prepare`].
    pub fn from_settings<I, K, V>(pairs: I) -> Result<Parsed, SecurityError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut warnings = Vec::new();
        let mut protocol = None;
        let mut mechanism = None;
        let mut username = None;
        let mut password = None;
        let mut jaas = None;
        let mut ca = None;
        let mut cert = None;
        let mut key = None;
        let mut key_password = None;
        let mut verify_hostname = true;
        let bad = |key: &str, reason: String| SecurityError::BadValue {
            key: key.to_string(),
            reason,
        };
        let path = |key: &str, v: &str| -> Result<Option<PathBuf>, SecurityError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            if v.starts_with("-----BEGIN") {
                return Err(bad(key, "a file name is expected, not inline PEM".into()));
            }
            Ok(Some(PathBuf::from(v)))
        };
        for (k, v) in pairs {
            let (k, v) = (k.as_ref().trim(), v.as_ref());
            match k {
                "security.protocol" => {
                    protocol = Some(SecurityProtocol::from_str(v).map_err(|r| bad(k, r))?)
                }
                "sasl.mechanism" | "sasl.mechanisms" => {
                    mechanism = Some(SaslMechanism::from_str(v).map_err(|r| bad(k, r))?)
                }
                "sasl.username" => username = Some(v.to_string()),
                "sasl.password" => password = Some(v.to_string()),
                "sasl.jaas.config" => jaas = Some(parse_jaas(v).map_err(|r| bad(k, r))?),
                "ssl.ca.location" => ca = path(k, v)?,
                "ssl.certificate.location" => cert = path(k, v)?,
                "ssl.key.location" => key = path(k, v)?,
                "ssl.endpoint.identification.algorithm" => {
                    verify_hostname = match v.trim().to_ascii_lowercase().as_str() {
                        "https" => true,
                        "none" | "" => false,
                        _ => return Err(bad(k, format!("{v:?} is not https or none"))),
                    }
                }
                "ssl.key.password" => key_password = (!v.is_empty()).then(|| Secret(v.to_string())),
                _ if QUIETLY_IGNORED.contains(&k) => {}
                _ => warnings.push(format!("unknown setting {k} ignored")),
            }
        }
        let protocol = protocol.unwrap_or_default();
        let sasl = if protocol.sasl() {
            let (ju, jp) = jaas.unwrap_or_default();
            let username = username.or(ju).unwrap_or_default();
            let password = password.or(jp).unwrap_or_default();
            if username.is_empty() || password.is_empty() {
                return Err(SecurityError::Missing(format!(
                    "security.protocol={protocol} needs sasl.username and sasl.password"
                )));
            }
            Some(SaslSettings {
                mechanism: mechanism.unwrap_or_default(),
                username,
                password,
            })
        } else {
            if mechanism.is_some() || username.is_some() || password.is_some() || jaas.is_some() {
                warnings.push(format!(
                    "sasl.* settings are ignored with security.protocol={protocol}"
                ));
            }
            None
        };
        if cert.is_some() != key.is_some() {
            return Err(SecurityError::Missing(
                "mutual TLS needs both ssl.certificate.location and ssl.key.location".into(),
            ));
        }
        let tls = if protocol.tls() {
            let ca_location = ca.ok_or_else(|| {
                SecurityError::Missing(format!(
                    "ssl.ca.location is required (security.protocol={protocol})"
                ))
            })?;
            Some(TlsSettings {
                ca_location,
                certificate_location: cert,
                key_location: key,
                key_password,
                verify_hostname,
            })
        } else {
            if ca.is_some() || cert.is_some() {
                warnings.push(format!(
                    "ssl.* settings are ignored with security.protocol={protocol}"
                ));
            }
            None
        };
        Ok(Parsed {
            security: ClientSecurity {
                protocol,
                sasl,
                tls,
                tls_config: OnceLock::new(),
            },
            warnings,
        })
    }

    /// Reads a properties file and then the `key=value` overrides.
    pub fn from_file_and_overrides(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Parsed, SecurityError> {
        let mut pairs = Vec::new();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|e| SecurityError::File {
                what: "--command-config",
                path: f.display().to_string(),
                reason: e.to_string(),
            })?;
            pairs = parse_properties(&text);
        }
        pairs.extend(overrides.iter().cloned());
        ClientSecurity::from_settings(pairs)
    }

    pub fn is_plaintext(&self) -> bool {
        self.protocol == SecurityProtocol::Plaintext
    }

    /// Reads the PEM files and builds the TLS configuration (once; later calls reuse it).
    /// Nothing to do without TLS.
    pub fn prepare(&self) -> Result<(), SecurityError> {
        self.tls_config().map(|_| ())
    }

    /// The rustls configuration, `None` without TLS.
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, SecurityError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        if let Some(c) = self.tls_config.get() {
            return Ok(Some(c.clone()));
        }
        let built = Arc::new(build_tls(tls)?);
        Ok(Some(self.tls_config.get_or_init(|| built).clone()))
    }
}

/// `username="..." password="..."` of a Java client's `sasl.jaas.config`
/// (`org.apache.kafka.common.security.plain.PlainLoginModule required username="alice"
/// password="alice-secret";`).
fn parse_jaas(v: &str) -> Result<(Option<String>, Option<String>), String> {
    let mut user = None;
    let mut pass = None;
    let mut rest = v;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quoted value of {name}"))?;
            (out, &q[end + 1..])
        } else {
            let end = after
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        match name {
            "username" => user = Some(value),
            "password" => pass = Some(value),
            _ => {}
        }
        rest = tail;
    }
    Ok((user, pass))
}

/// Parses a Java properties file into (key, value) pairs, in order: `#` and `!` comments,
/// `key=value`, `key: value` or `key value`, lines continued with a trailing backslash, and
/// the escapes `\t \n \r \f \uXXXX` (any other escaped character stands for itself).
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        loop {
            // an odd number of trailing backslashes continues the line
            let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
            if trailing % 2 == 1 {
                logical.push_str(&line[..line.len() - 1]);
                match lines.next() {
                    Some(next) => line = next.trim_start(),
                    None => break,
                }
            } else {
                logical.push_str(line);
                break;
            }
        }
        let entry = std::mem::take(&mut logical);
        out.push(split_property(&entry));
    }
    out
}

fn split_property(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    // the key ends at an unescaped '=', ':' or whitespace
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    unescape_into(&mut key, n, &mut chars);
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                // whitespace, then optionally one '=' or ':'
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('=') | Some(':')) {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    unescape_into(&mut value, n, &mut chars);
                }
            }
            c => value.push(c),
        }
    }
    (key, value)
}

fn unescape_into(out: &mut String, c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match c {
        't' => out.push('\t'),
        'n' => out.push('\n'),
        'r' => out.push('\r'),
        'f' => out.push('\u{c}'),
        'u' => {
            let hex: String = (0..4).filter_map(|_| rest.next()).collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => {
                    out.push_str("\\u");
                    out.push_str(&hex);
                }
            }
        }
        c => out.push(c),
    }
}

/// Parses `-X key=value`.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::net::SocketAddr;

    fn parse(pairs: &[(&str, &str)]) -> Result<Parsed, SecurityError> {
        ClientSecurity::from_settings(pairs.iter().copied())
    }

    #[test]
    fn default_is_plaintext() {
        let p = parse(&[]).expect("parse");
        assert!(p.security.is_plaintext());
        assert!(p.security.sasl.is_none() && p.security.tls.is_none());
        assert!(p.warnings.is_empty());
        assert!(p.security.tls_config().expect("no tls").is_none());
    }

    #[test]
    fn protocol_is_case_insensitive_and_checked() {
        for (v, want) in [
            ("ssl", SecurityProtocol::Ssl),
            ("Sasl_Ssl", SecurityProtocol::SaslSsl),
            ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
            ("plaintext", SecurityProtocol::Plaintext),
        ] {
            let p = parse(&[
                ("security.protocol", v),
                ("ssl.ca.location", "/ca.pem"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ])
            .expect(v);
            assert_eq!(p.security.protocol, want);
        }
        let e = parse(&[("security.protocol", "tls")]).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "security.protocol: \"tls\" is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        );
    }

    #[test]
    fn ssl_needs_a_ca_and_both_halves_of_a_client_key() {
        let e = parse(&[("security.protocol", "SSL")]).expect_err("no ca");
        assert!(
            e.to_string().starts_with("ssl.ca.location is required"),
            "{e}"
        );
        let e = parse(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "ca.pem"),
            ("ssl.certificate.location", "c.pem"),
        ])
        .expect_err("no key");
        assert!(e.to_string().contains("ssl.key.location"), "{e}");
        let p = parse(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "ca.pem"),
            ("ssl.certificate.location", "c.pem"),
            ("ssl.key.location", "k.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ])
        .expect("mtls");
        assert_eq!(
            p.security.tls,
            Some(TlsSettings {
                ca_location: "ca.pem".into(),
                certificate_location: Some("c.pem".into()),
                key_location: Some("k.pem".into()),
                key_password: None,
                verify_hostname: false,
            })
        );
        let e = parse(&[("ssl.endpoint.identification.algorithm", "dns")]).expect_err("algo");
        assert!(e.to_string().contains("https or none"), "{e}");
    }

    #[test]
    fn sasl_settings_and_later_values_win() {
        let p = parse(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.mechanisms", "scram-sha-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "one"),
            ("sasl.password", "two"),
        ])
        .expect("sasl");
        let s = p.security.sasl.expect("sasl settings");
        assert_eq!(s.mechanism, SaslMechanism::ScramSha512);
        assert_eq!((s.username.as_str(), s.password.as_str()), ("alice", "two"));
        assert!(
            !format!("{s:?}").contains("two"),
            "Debug hides the password"
        );
        let e = parse(&[("security.protocol", "SASL_SSL"), ("ssl.ca.location", "x")])
            .expect_err("no user");
        assert!(e.to_string().contains("sasl.username"), "{e}");
        let e = parse(&[("sasl.mechanism", "GSSAPI")]).expect_err("mech");
        assert!(e.to_string().starts_with("sasl.mechanism: "), "{e}");
    }

    #[test]
    fn jaas_config_gives_the_credentials() {
        let p = parse(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="bob" password="p\"w d";"#,
            ),
        ])
        .expect("jaas");
        let s = p.security.sasl.expect("sasl");
        assert_eq!(
            (s.username.as_str(), s.password.as_str()),
            ("bob", "p\"w d")
        );
    }

    #[test]
    fn unknown_keys_and_unused_settings_warn() {
        let p = parse(&[
            ("bogus.key", "1"),
            ("client.id", "x"),
            ("ssl.ca.location", "ca.pem"),
            ("sasl.username", "u"),
        ])
        .expect("parse");
        assert_eq!(
            p.warnings,
            vec![
                "unknown setting bogus.key ignored".to_string(),
                "sasl.* settings are ignored with security.protocol=PLAINTEXT".to_string(),
                "ssl.* settings are ignored with security.protocol=PLAINTEXT".to_string(),
            ]
        );
    }

    #[test]
    fn properties_files() {
        let text = "# a comment\n! another\n\nsecurity.protocol=SSL\n  ssl.ca.location : /etc/ca.pem\n\
                    sasl.jaas.config=org.Module required \\\n    username=\"u\";\nkey\\=with\\:sep value\\twith tab\n\
                    empty=\nunicode=caf\\u00e9\n";
        let p = parse_properties(text);
        assert_eq!(
            p,
            vec![
                ("security.protocol".into(), "SSL".into()),
                ("ssl.ca.location".into(), "/etc/ca.pem".into()),
                (
                    "sasl.jaas.config".into(),
                    "org.Module required username=\"u\";".into()
                ),
                ("key=with:sep".into(), "value\twith tab".into()),
                ("empty".into(), "".into()),
                ("unicode".into(), "café".into()),
            ]
        );
    }

    #[test]
    fn server_names() {
        let a: SocketAddr = "127.0.0.1:9093".parse().expect("addr");
        assert_eq!(
            server_name(Some("localhost:9093"), a).expect("name"),
            ServerName::try_from("localhost").expect("dns")
        );
        assert_eq!(
            server_name(Some("127.0.0.1:9093"), a).expect("ip"),
            ServerName::IpAddress(a.ip().into())
        );
        assert_eq!(
            server_name(None, a).expect("ip"),
            ServerName::IpAddress(a.ip().into())
        );
        let v6: SocketAddr = "[::1]:9093".parse().expect("v6");
        assert_eq!(
            server_name(Some("[::1]:9093"), v6).expect("v6"),
            ServerName::IpAddress(v6.ip().into())
        );
    }

    #[test]
    fn missing_ca_file_is_reported() {
        let p = parse(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ])
        .expect("parse");
        let e = p.security.prepare().expect_err("no file");
        assert!(
            e.to_string()
                .starts_with("ssl.ca.location /nonexistent/ca.pem: "),
            "{e}"
        );
    }
}
