//! TLS keys of SSL and SASL_SSL listeners, with Kafka's names: `ssl.keystore.type=PEM` with
//! `ssl.keystore.location` (one PEM file holding the private key and the certificate chain) or
//! `ssl.keystore.key` / `ssl.keystore.certificate.chain` (the PEM text itself),
//! `ssl.key.password` (for an encrypted PKCS#8 key), `ssl.truststore.type=PEM` with
//! `ssl.truststore.location` or `ssl.truststore.certificates` (the CAs client certificates must
//! chain to), `ssl.client.auth=none|requested|required`, `ssl.principal.mapping.rules` and
//! `ssl.enabled.protocols`. sluice also takes librdkafka's names for separate files:
//! `ssl.certificate.location` and `ssl.key.location`. The files are read (and re-read when they
//! change) by [`crate::security::tls`].

use std::path::PathBuf;

use super::{bad, ConfigError};

/// Whether and how clients present certificates (`ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    /// Verified when presented; clients without one are `User:ANONYMOUS`.
    Requested,
    /// A client without a certificate that chains to the truststore is refused.
    Required,
}

/// Where the key and certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PemSource {
    #[default]
    Unset,
    File(PathBuf),
    Inline(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeys {
    /// The private key (ssl.keystore.location holds key and chain together).
    pub key: PemSource,
    /// The certificate chain, leaf first.
    pub certificates: PemSource,
    pub key_password: Option<String>,
    pub truststore: PemSource,
    pub client_auth: ClientAuth,
    /// ssl.principal.mapping.rules as written (parsed by the security module at start).
    pub principal_mapping_rules: String,
    /// TLSv1.2 and/or TLSv1.3.
    pub tls12: bool,
    pub tls13: bool,
    /// ssl.endpoint.identification.algorithm: `https` (the default) checks that a broker's
    /// certificate names the host this broker connects to (inter-broker TLS); empty does not.
    pub verify_hostname: bool,
}

impl Default for TlsKeys {
    fn default() -> Self {
        TlsKeys {
            key: PemSource::Unset,
            certificates: PemSource::Unset,
            key_password: None,
            truststore: PemSource::Unset,
            client_auth: ClientAuth::None,
            principal_mapping_rules: "DEFAULT".into(),
            tls12: true,
            tls13: true,
            verify_hostname: true,
        }
    }
}

impl TlsKeys {
    /// Handles `key` if it is one of these; `Ok(false)` if not.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let path = || PathBuf::from(value.trim());
        match key {
            "ssl.keystore.type" | "ssl.truststore.type" => {
                if !value.trim().eq_ignore_ascii_case("PEM") {
                    return Err(bad(
                        key,
                        value,
                        "sluice reads PEM files only (convert a JKS or PKCS12 store with openssl)",
                    ));
                }
            }
            "ssl.keystore.location" => {
                self.key = PemSource::File(path());
                self.certificates = PemSource::File(path());
            }
            "ssl.keystore.key" => self.key = PemSource::Inline(value.to_string()),
            "ssl.keystore.certificate.chain" => {
                self.certificates = PemSource::Inline(value.to_string())
            }
            "ssl.key.location" => self.key = PemSource::File(path()),
            "ssl.certificate.location" => self.certificates = PemSource::File(path()),
            "ssl.key.password" => {
                self.key_password = (!value.is_empty()).then(|| value.to_string())
            }
            "ssl.truststore.location" => self.truststore = PemSource::File(path()),
            "ssl.truststore.certificates" => self.truststore = PemSource::Inline(value.to_string()),
            "ssl.client.auth" => {
                self.client_auth = match value.trim().to_ascii_lowercase().as_str() {
                    "none" => ClientAuth::None,
                    "requested" => ClientAuth::Requested,
                    "required" => ClientAuth::Required,
                    _ => return Err(bad(key, value, "expected none, requested or required")),
                }
            }
            "ssl.principal.mapping.rules" => self.principal_mapping_rules = value.to_string(),
            "ssl.endpoint.identification.algorithm" => {
                self.verify_hostname = match value.trim().to_ascii_lowercase().as_str() {
                    "https" => true,
                    "" => false,
                    _ => return Err(bad(key, value, "expected https, or empty for none")),
                }
            }
            "ssl.enabled.protocols" => {
                let (mut v12, mut v13) = (false, false);
                for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match p {
                        "TLSv1.2" => v12 = true,
                        "TLSv1.3" => v13 = true,
                        _ => {
                            return Err(bad(
                                key,
                                value,
                                format!("{p}: sluice speaks TLSv1.2 and TLSv1.3"),
                            ))
                        }
                    }
                }
                if !v12 && !v13 {
                    return Err(bad(key, value, "no protocol left"));
                }
                (self.tls12, self.tls13) = (v12, v13);
            }
            // the password of a PEM keystore file is not used (its key has ssl.key.password)
            "ssl.keystore.password" | "ssl.truststore.password" | "ssl.protocol" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Something to serve TLS with is configured.
    pub fn configured(&self) -> bool {
        self.key != PemSource::Unset || self.certificates != PemSource::Unset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_and_librdkafka_names() {
        let mut t = TlsKeys::default();
        assert!(!t.configured());
        assert!(t.set("ssl.keystore.type", "PEM").expect("pem"));
        assert!(t
            .set("ssl.keystore.location", "/k/server.pem")
            .expect("set"));
        assert_eq!(t.key, PemSource::File("/k/server.pem".into()));
        assert_eq!(t.certificates, t.key);
        t.set("ssl.key.location", "/k/key.pem").expect("set");
        assert_eq!(t.key, PemSource::File("/k/key.pem".into()));
        t.set("ssl.client.auth", "Required").expect("set");
        assert_eq!(t.client_auth, ClientAuth::Required);
        t.set("ssl.enabled.protocols", "TLSv1.3").expect("set");
        assert!(t.tls13 && !t.tls12);
        assert!(t.configured());
        assert!(!t.set("sasl.enabled.mechanisms", "PLAIN").expect("not tls"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let mut t = TlsKeys::default();
        let e = t.set("ssl.keystore.type", "JKS").expect_err("jks");
        assert!(e.to_string().contains("PEM files only"), "{e}");
        assert!(t.set("ssl.client.auth", "sometimes").is_err());
        assert!(t.set("ssl.enabled.protocols", "TLSv1.1").is_err());
    }
}
