//! One blocking connection to a broker: request framing (i32 length prefix, request header,
//! body encoded with kafka-protocol) and response reading; and, on a SASL connection whose
//! broker set a session lifetime (`connections.max.reauth.ms`, KIP-368), re-authentication
//! on the same connection before the next request once 85 % of the lifetime has passed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use thiserror::Error;

use crate::security::{self, ClientSecurity, SaslSettings, SecurityError};

/// Largest response frame accepted (a fetch can be large, but not unbounded).
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("decoding {api:?} v{version} response: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response frame of {0} bytes is out of range")]
    BadFrame(i64),
    #[error("correlation id {got} where {expected} was expected")]
    Correlation { expected: i32, got: i32 },
    #[error("the connection is closed")]
    Closed,
    #[error("connection failed: {0}")]
    Failed(String),
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "the broker answered in TLS: an SSL listener needs security.protocol=SSL (or SASL_SSL)"
    )]
    TlsAnswer,
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("re-authentication (KIP-368) failed: {0}")]
    Reauthentication(String),
}

impl ConnError {
    /// An I/O error, or the TLS error inside one (rustls reports its errors as
    /// `io::ErrorKind::InvalidData` wrapping a `rustls::Error`).
    pub fn io(e: std::io::Error) -> ConnError {
        match tls_error(&e) {
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
                ConnError::Tls(
                    "the broker requires a client certificate (ssl.certificate.location and \
                     ssl.key.location)"
                        .into(),
                )
            }
            Some(t) => ConnError::Tls(t.to_string()),
            None => ConnError::Io(e),
        }
    }
}

fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// Encodes one request frame (length prefix included) into `buf`.
pub fn encode_request<T: Encodable>(
    buf: &mut BytesMut,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    body: &T,
) -> Result<(), ConnError> {
    let start = buf.len();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let enc = |reason: String| ConnError::Encode {
        api,
        version,
        reason,
    };
    header
        .encode(buf, api.request_header_version(version))
        .map_err(|e| enc(e.to_string()))?;
    body.encode(buf, version).map_err(|e| enc(e.to_string()))?;
    let len = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads one response frame from `r`: (correlation id, body after the response header).
pub fn read_response<R: Read>(
    r: &mut R,
    api: ApiKey,
    version: i16,
) -> Result<(i32, Bytes), ConnError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ConnError::Closed),
        Err(e) => return Err(ConnError::io(e)),
    }
    // a TLS record (alert 0x15 or handshake 0x16, version 3.x) where a frame length should be
    if matches!(len, [0x15 | 0x16, 0x03, 0x00..=0x04, _]) {
        return Err(ConnError::TlsAnswer);
    }
    let size = i32::from_be_bytes(len) as i64;
    if size < 4 || size as u64 > MAX_RESPONSE_BYTES as u64 {
        return Err(ConnError::BadFrame(size));
    }
    let mut buf = BytesMut::zeroed(size as usize);
    r.read_exact(&mut buf).map_err(ConnError::io)?;
    let mut b = buf.freeze();
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).map_err(|e| {
        ConnError::Decode {
            api,
            version,
            reason: e.to_string(),
        }
    })?;
    Ok((h.correlation_id, b))
}

/// Decodes a response body.
pub fn decode_body<R: Decodable>(api: ApiKey, version: i16, mut b: Bytes) -> Result<R, ConnError> {
    R::decode(&mut b, version).map_err(|e| ConnError::Decode {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Resolves `host:port` to its first address.
pub fn resolve(addr: &str) -> Result<SocketAddr, ConnError> {
    addr.to_socket_addrs()
        .map_err(|_| ConnError::Resolve(addr.to_string()))?
        .next()
        .ok_or_else(|| ConnError::Resolve(addr.to_string()))
}

/// The byte stream under a [`Connection`]: plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket (for timeouts and shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(t) => {
                t.write_all(buf)?;
                t.flush()
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// Runs the TLS handshake on `sock` (its read timeout bounds the wait).
fn tls_handshake(
    sock: TcpStream,
    config: Arc<ClientConfig>,
    host: Option<&str>,
    addr: SocketAddr,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnError> {
    let failed = |reason: String| ConnError::Handshake {
        addr: addr.to_string(),
        reason,
    };
    let name = security::server_name(host, addr).map_err(|e| failed(e.clone()))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| failed(e.to_string()))?;
    let mut sock = sock;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            let reason = match tls_error(&e) {
                Some(rustls::Error::InvalidCertificate(c)) => format!(
                    "the broker's certificate is not trusted: {} (check ssl.ca.location{})",
                    rustls::Error::InvalidCertificate(c.clone()),
                    if matches!(
                        c,
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    ) {
                        " and the host name, or ssl.endpoint.identification.algorithm=none"
                    } else {
                        ""
                    }
                ),
                Some(t) => t.to_string(),
                None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "the broker closed the connection (is it a TLS listener?)".into()
                }
                None if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
                {
                    "the broker did not answer in time (is it a TLS listener?)".into()
                }
                None => e.to_string(),
            };
            return Err(failed(reason));
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

/// A blocking connection that runs one request at a time.
pub struct Connection {
    stream: Stream,
    pub addr: SocketAddr,
    client_id: StrBytes,
    next_id: i32,
    buf: BytesMut,
    reauth: Option<Box<Reauth>>,
}

/// What re-authenticating a SASL session needs, and when it is due.
struct Reauth {
    settings: SaslSettings,
    handshake_version: Option<i16>,
    authenticate_version: Option<i16>,
    due: Instant,
}

/// When a session of `lifetime_ms` is re-authenticated: at 85 % of it (the Java client picks
/// a point between 85 and 95 %), so the broker never closes a connection for an expired one.
pub fn reauth_point(authenticated: Instant, lifetime_ms: i64) -> Instant {
    authenticated + Duration::from_millis(lifetime_ms.max(0) as u64 * 85 / 100)
}

impl Connection {
    /// A plaintext connection.
    pub fn connect(
        addr: SocketAddr,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        Self::connect_secure(addr, None, client_id, timeout, &ClientSecurity::plaintext())
    }

    /// A connection with `security`'s transport: plain TCP, or TLS (handshake done here) with
    /// `host` (or else the IP address) as the server name. SASL is not run here: it needs
    /// ApiVersions first ([`crate::Client::connect_to`] does both).
    pub fn connect_secure(
        addr: SocketAddr,
        host: Option<&str>,
        client_id: &str,
        timeout: Duration,
        security: &ClientSecurity,
    ) -> Result<Self, ConnError> {
        let tls = security.tls_config()?;
        let sock =
            TcpStream::connect_timeout(&addr, timeout).map_err(|source| ConnError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        sock.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(sock),
            Some(config) => {
                sock.set_read_timeout(Some(timeout))?;
                Stream::Tls(Box::new(tls_handshake(sock, config, host, addr)?))
            }
        };
        stream
            .tcp()
            .set_read_timeout(Some(timeout.max(Duration::from_secs(30))))?;
        Ok(Connection {
            stream,
            addr,
            client_id: StrBytes::from_string(client_id.to_string()),
            next_id: 1,
            buf: BytesMut::with_capacity(4096),
            reauth: None,
        })
    }

    /// After a SASL exchange that began at `began`: arms re-authentication when the broker
    /// gave the session a lifetime (`session_lifetime_ms` > 0), disarms it otherwise.
    pub fn sasl_session(
        &mut self,
        began: Instant,
        lifetime_ms: i64,
        settings: &SaslSettings,
        handshake_version: Option<i16>,
        authenticate_version: Option<i16>,
    ) {
        self.reauth = (lifetime_ms > 0).then(|| {
            Box::new(Reauth {
                settings: settings.clone(),
                handshake_version,
                authenticate_version,
                due: reauth_point(began, lifetime_ms),
            })
        });
    }

    /// Runs the SASL exchange again if the session is due for it (KIP-368: the broker takes a
    /// SaslHandshake on an authenticated connection as the start of a re-authentication).
    fn reauthenticate_if_due(&mut self) -> Result<(), ConnError> {
        if self.reauth.as_ref().is_none_or(|r| Instant::now() < r.due) {
            return Ok(());
        }
        let Some(r) = self.reauth.take() else {
            return Ok(());
        };
        let began = Instant::now();
        let lifetime = crate::sasl::authenticate(
            self,
            &r.settings,
            r.handshake_version,
            r.authenticate_version,
        )
        .map_err(|e| ConnError::Reauthentication(e.to_string()))?;
        self.sasl_session(
            began,
            lifetime,
            &r.settings,
            r.handshake_version,
            r.authenticate_version,
        );
        Ok(())
    }

    pub fn client_id(&self) -> &StrBytes {
        &self.client_id
    }

    /// Sets the read timeout (a long-polling fetch needs more than its max wait).
    pub fn set_read_timeout(&self, t: Duration) -> Result<(), ConnError> {
        self.stream.tcp().set_read_timeout(Some(t))?;
        Ok(())
    }

    /// Sends a request and waits for its response.
    pub fn call<T: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<R, ConnError> {
        self.reauthenticate_if_due()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.buf.clear();
        encode_request(&mut self.buf, api, version, id, &self.client_id, body)?;
        self.stream.write_all(&self.buf).map_err(ConnError::io)?;
        let (got, b) = read_response(&mut self.stream, api, version)?;
        if got != id {
            return Err(ConnError::Correlation { expected: id, got });
        }
        decode_body(api, version, b)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Gives up the stream (for [`crate::pipeline::Pipeline`], which does not re-authenticate:
    /// its requests are in flight back to back).
    pub fn into_stream(self) -> (Stream, StrBytes, i32) {
        (self.stream, self.client_id, self.next_id)
    }
}
