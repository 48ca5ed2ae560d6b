//! TLS for SSL and SASL_SSL listeners: rustls (ring provider) over glommio's `TcpStream`
//! through futures-rustls. The key, chain and truststore are read at start (a bad file stops the
//! start) and re-read when one of the files changes (checked at most once a second, on the next
//! handshake): renewed certificates apply to new connections without a restart, and a broken
//! renewal is logged and ignored, keeping the last good configuration.
//!
//! The inter-broker side: when a cluster's `inter.broker.listener.name` is an SSL listener, the
//! brokers connect to each other's listener as TLS clients ([`TlsContext::client_config`]): they
//! trust that listener's truststore, check the peer's certificate names its registered host
//! (`ssl.endpoint.identification.algorithm=https`, Kafka's default; empty checks the chain
//! only), and present their own certificate, so `ssl.client.auth=required` authenticates the
//! brokers to each other.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sluice_tools::security::tls::NoHostnameCheck;
use thiserror::Error;

use super::principal::{self, MappingRules};
use crate::config::{ClientAuth, PemSource, TlsKeys};

/// A handshake not done by then is dropped (a client that connects and stalls holds nothing).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a handshake may look at the files for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("SSL listeners need ssl.keystore.location (or ssl.certificate.location and ssl.key.location)")]
    NotConfigured,
    #[error("{what}: {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pem(String),
    #[error(
        "ssl.client.auth={0} needs ssl.truststore.location (the CAs client certificates chain to)"
    )]
    NoTruststore(&'static str),
    #[error("ssl.principal.mapping.rules: {0}")]
    Rules(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake not done within {0:?}")]
    HandshakeTimeout(Duration),
}

/// A file whose change triggers a reload: path, modification time and length when read.
type Stamp = (PathBuf, Option<(SystemTime, u64)>);

struct Loaded {
    config: Arc<rustls::ServerConfig>,
    /// For connections to other brokers' listeners (None without a truststore).
    client: Option<Arc<rustls::ClientConfig>>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// The TLS side of the broker, shared by every shard.
pub struct TlsContext {
    keys: TlsKeys,
    rules: MappingRules,
    loaded: RwLock<Loaded>,
}

impl TlsContext {
    pub fn new(keys: &TlsKeys) -> Result<TlsContext, TlsError> {
        if !keys.configured() {
            return Err(TlsError::NotConfigured);
        }
        let rules = MappingRules::parse(&keys.principal_mapping_rules).map_err(TlsError::Rules)?;
        let (config, client, stamps) = build(keys)?;
        Ok(TlsContext {
            keys: keys.clone(),
            rules,
            loaded: RwLock::new(Loaded {
                config,
                client,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The server configuration for the next handshake, re-read first if a file changed.
    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current(|l| l.config.clone())
    }

    /// The client configuration for a connection to another broker's listener of this kind
    /// (None when no truststore is configured), re-read first if a file changed.
    pub fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.current(|l| l.client.clone())
    }

    fn current<T>(&self, pick: impl Fn(&Loaded) -> T) -> T {
        {
            let l = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if l.checked.elapsed() < RELOAD_CHECK {
                return pick(&l);
            }
        }
        let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= RELOAD_CHECK {
            l.checked = Instant::now();
            let changed = l.stamps.iter().any(|(p, seen)| stamp(p) != *seen);
            if changed {
                match build(&self.keys) {
                    Ok((config, client, stamps)) => {
                        tracing::info!("TLS key, certificates or truststore changed: reloaded");
                        l.config = config;
                        l.client = client;
                        l.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                        // do not retry every second with the same broken files
                        l.stamps = l
                            .stamps
                            .iter()
                            .map(|(p, _)| (p.clone(), stamp(p)))
                            .collect();
                    }
                }
            }
        }
        pick(&l)
    }

    /// The rustls configuration the next handshake runs on (what [`TlsContext::accept`] hands
    /// futures-rustls; `fuzzing::tls_handshake` feeds client bytes to it).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config()
    }

    /// Runs the server side of a handshake; returns the session and the client's principal
    /// (`User:<subject DN>` mapped by the rules when it presented a certificate, else
    /// `User:ANONYMOUS`).
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, String), TlsError> {
        let acceptor = TlsAcceptor::from(self.config());
        let handshake = async { Some(acceptor.accept(stream).await) };
        let timeout = async {
            glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
            None
        };
        let tls = match futures_lite::future::or(handshake, timeout).await {
            Some(Ok(tls)) => tls,
            Some(Err(e)) => return Err(TlsError::Handshake(e)),
            None => return Err(TlsError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
        };
        let principal = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| principal::subject_dn(leaf))
            .map_or_else(
                || principal::ANONYMOUS.to_string(),
                |dn| format!("User:{}", self.rules.apply(&dn)),
            );
        Ok((tls, principal))
    }
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The PEM text of `src` (and the file's stamp, for reloads).
fn read(
    what: &'static str,
    src: &PemSource,
    stamps: &mut Vec<Stamp>,
) -> Result<Option<Vec<u8>>, TlsError> {
    match src {
        PemSource::Unset => Ok(None),
        PemSource::Inline(text) => Ok(Some(text.as_bytes().to_vec())),
        PemSource::File(path) => {
            let before = stamp(path);
            let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.display().to_string(),
                source,
            })?;
            stamps.push((path.clone(), before));
            Ok(Some(bytes))
        }
    }
}

fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no CERTIFICATE in it")));
    }
    Ok(certs)
}

/// The private key: PKCS#8, PKCS#1 or SEC1 PEM, or an encrypted PKCS#8 one with
/// ssl.key.password (the client library's reader, which the CLI and loadgen use too).
fn private_key(pem: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    sluice_tools::security::tls::private_key(pem, password)
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))
}

type Built = (
    Arc<rustls::ServerConfig>,
    Option<Arc<rustls::ClientConfig>>,
    Vec<Stamp>,
);

fn build(keys: &TlsKeys) -> Result<Built, TlsError> {
    let mut stamps = Vec::new();
    let key_pem = read("ssl key", &keys.key, &mut stamps)?.ok_or(TlsError::NotConfigured)?;
    let chain_pem = read("ssl certificates", &keys.certificates, &mut stamps)?
        .ok_or(TlsError::NotConfigured)?;
    let key = private_key(&key_pem, keys.key_password.as_deref())?;
    let chain = certificates("certificate chain", &chain_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if keys.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if keys.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)?;
    let builder = match keys.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let name = if auth == ClientAuth::Required {
                "required"
            } else {
                "requested"
            };
            let trust = read("ssl.truststore", &keys.truststore, &mut stamps)?
                .ok_or(TlsError::NoTruststore(name))?;
            let mut roots = RootCertStore::empty();
            for ca in certificates("truststore", &trust)? {
                roots.add(ca)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
    };
    let client = match read("ssl.truststore", &keys.truststore, &mut stamps)? {
        Some(trust) => Some(Arc::new(client_config(
            keys,
            &versions,
            &trust,
            chain.clone(),
            key.clone_key(),
        )?)),
        None => None,
    };
    let config = builder.with_single_cert(chain, key)?;
    Ok((Arc::new(config), client, stamps))
}

/// The inter-broker client side: trusts `trust`, presents the broker's own chain.
fn client_config(
    keys: &TlsKeys,
    versions: &[&'static rustls::SupportedProtocolVersion],
    trust: &[u8],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates("truststore", trust)? {
        roots.add(ca)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    let builder = if keys.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let chain_only =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(chain_only)))
    };
    Ok(builder.with_client_auth_cert(chain, key)?)
}
