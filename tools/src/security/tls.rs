//! TLS for the client: the rustls configuration from [`TlsSettings`] (the `ssl.ca.location`
//! roots, an optional client certificate and key, host-name checking or not) and the server
//! name a broker is checked against. The broker uses the same pieces for its own connections to
//! other brokers (`sluice_server::cluster::peer`): [`NoHostnameCheck`] and [`private_key`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{SecurityError, TlsSettings};

/// The TLS server name for a broker: the host name it was reached by when known, else its IP.
pub fn server_name(host: Option<&str>, addr: SocketAddr) -> Result<ServerName<'static>, String> {
    match host.map(strip_port).filter(|h| !h.is_empty()) {
        Some(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = h.parse::<IpAddr>() {
                return Ok(ServerName::IpAddress(ip.into()));
            }
            ServerName::try_from(h.to_string())
                .map_err(|e| format!("{h:?} is not a valid TLS server name: {e}"))
        }
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

/// `host:port` → `host` (`[::1]:9092` → `[::1]`); a name without a port as it is.
fn strip_port(s: &str) -> &str {
    if s.starts_with('[') {
        return s.split_once(']').map_or(s, |(h, _)| &s[..h.len() + 1]);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => s,
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = read_file(what, path)?;
    let file_err = |reason: String| SecurityError::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

pub(super) fn build_tls(tls: &TlsSettings) -> Result<ClientConfig, SecurityError> {
    let mut roots = RootCertStore::empty();
    for c in certificates("ssl.ca.location", &tls.ca_location)? {
        roots.add(c).map_err(|e| SecurityError::File {
            what: "ssl.ca.location",
            path: tls.ca_location.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Tls(e.to_string()))?;
    let roots = Arc::new(roots);
    let builder = if tls.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
    };
    match (&tls.certificate_location, &tls.key_location) {
        (Some(cert), Some(key)) => {
            let chain = certificates("ssl.certificate.location", cert)?;
            let pem = read_file("ssl.key.location", key)?;
            let password = tls.key_password.as_ref().map(|p| p.0.as_str());
            let key_der = private_key(&pem, password).map_err(|reason| SecurityError::File {
                what: "ssl.key.location",
                path: key.display().to_string(),
                reason,
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| SecurityError::Tls(format!("client certificate and key: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A PEM private key: PKCS#8, PKCS#1 or SEC1, or an encrypted PKCS#8 one (`-----BEGIN
/// ENCRYPTED PRIVATE KEY-----`, PBES2 as openssl and Java's keytool write it) decrypted with
/// `password` (`ssl.key.password`).
pub fn private_key(pem: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let text = String::from_utf8_lossy(pem);
    let Some(start) = text.find(BEGIN) else {
        return PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("{e} (a PKCS#8, PKCS#1 or SEC1 PEM private key is expected)"));
    };
    let end = text[start..]
        .find(END)
        .map(|e| start + e + END.len())
        .ok_or("encrypted private key: no END line")?;
    let password = password.ok_or("the private key is encrypted: set ssl.key.password")?;
    let (_, der) = pkcs8::der::pem::decode_vec(text[start..end].as_bytes())
        .map_err(|e| format!("encrypted private key: {e}"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| format!("encrypted private key: {e}"))?;
    let doc = info
        .decrypt(password)
        .map_err(|_| "cannot decrypt the private key: wrong ssl.key.password?".to_string())?;
    Ok(PrivateKeyDer::Pkcs8(doc.as_bytes().to_vec().into()))
}

/// `ssl.endpoint.identification.algorithm=none`: the chain is verified, the name is not.
#[derive(Debug)]
pub struct NoHostnameCheck(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
