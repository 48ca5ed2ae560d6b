//! The TLS handshake entry point: bytes a client sends to an SSL listener, fed to a rustls
//! `ServerConnection` on the very `ServerConfig` [`TlsContext`] builds for the listener (what
//! `TlsContext::accept` hands futures-rustls), with the answers drained as they would be
//! written. Also the subject DN parse of a client certificate (`principal::subject_dn`).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;

use crate::config::{ClientAuth, PemSource, TlsKeys};
use crate::security::principal;
use crate::security::tls::TlsContext;

/// A self-signed P-256 certificate for `localhost` and its key (test material only).
pub const CERT_PEM: &str = include_str!("testdata/cert.pem");
pub const KEY_PEM: &str = include_str!("testdata/key.pem");

fn keys(client_auth: ClientAuth) -> TlsKeys {
    TlsKeys {
        key: PemSource::Inline(KEY_PEM.into()),
        certificates: PemSource::Inline(CERT_PEM.into()),
        truststore: PemSource::Inline(CERT_PEM.into()),
        client_auth,
        ..TlsKeys::default()
    }
}

/// The listeners' contexts: without client authentication, and with ssl.client.auth=required.
fn contexts() -> &'static [TlsContext; 2] {
    static CTX: OnceLock<[TlsContext; 2]> = OnceLock::new();
    CTX.get_or_init(|| {
        [ClientAuth::None, ClientAuth::Required]
            .map(|a| TlsContext::new(&keys(a)).expect("the fuzz key and certificate load"))
    })
}

/// Input: `flags` (bit 0: the listener requires client certificates; bit 1: the rest is a
/// client certificate's DER for the principal, not handshake bytes), then the bytes.
pub fn tls_handshake(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    if flags & 2 != 0 {
        let _ = principal::subject_dn(bytes);
        return;
    }
    let ctx = &contexts()[usize::from(flags & 1)];
    let Ok(mut conn) = rustls::ServerConnection::new(ctx.server_config()) else {
        panic!("a server connection starts");
    };
    let mut rd = bytes;
    let mut sink = Vec::new();
    loop {
        match conn.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let failed = conn.process_new_packets().is_err();
        // what the broker writes back (alerts included) must drain
        while conn.wants_write() {
            sink.clear();
            if conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
        if failed {
            break;
        }
    }
}

/// Seeds: the first flight of a rustls client (TLS 1.3 and 1.2 only, with and without a client
/// certificate), and a DER certificate.
pub fn tls_seeds() -> Vec<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let cert =
        rustls::pki_types::CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).expect("cert pem");
    roots.add(cert.clone()).expect("root");
    let mut out = Vec::new();
    let versions: [&[&'static rustls::SupportedProtocolVersion]; 2] =
        [&[&rustls::version::TLS13], &[&rustls::version::TLS12]];
    for v in versions {
        let Ok(b) =
            rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(v)
        else {
            continue;
        };
        let config = Arc::new(
            b.with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        let name = ServerName::try_from("localhost").expect("name");
        let Ok(mut client) = rustls::ClientConnection::new(config, name) else {
            continue;
        };
        let mut hello = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut hello).is_err() {
                break;
            }
        }
        for flags in [0u8, 1] {
            let mut s = vec![flags];
            s.extend_from_slice(&hello);
            out.push(s);
        }
    }
    let mut der = vec![2u8];
    der.extend_from_slice(&cert);
    out.push(der);
    out
}
