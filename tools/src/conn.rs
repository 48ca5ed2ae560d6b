//! One blocking connection to a broker: request framing (i32 length prefix, request header,
//! body encoded with kafka-protocol) and response reading.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

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
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len) as i64;
    if size < 4 || size as u64 > MAX_RESPONSE_BYTES as u64 {
        return Err(ConnError::BadFrame(size));
    }
    let mut buf = BytesMut::zeroed(size as usize);
    r.read_exact(&mut buf)?;
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

/// A blocking connection that runs one request at a time.
pub struct Connection {
    stream: TcpStream,
    pub addr: SocketAddr,
    client_id: StrBytes,
    next_id: i32,
    buf: BytesMut,
}

impl Connection {
    pub fn connect(
        addr: SocketAddr,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|source| ConnError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout.max(Duration::from_secs(30))))?;
        Ok(Connection {
            stream,
            addr,
            client_id: StrBytes::from_string(client_id.to_string()),
            next_id: 1,
            buf: BytesMut::with_capacity(4096),
        })
    }

    pub fn client_id(&self) -> &StrBytes {
        &self.client_id
    }

    /// Sets the read timeout (a long-polling fetch needs more than its max wait).
    pub fn set_read_timeout(&self, t: Duration) -> Result<(), ConnError> {
        self.stream.set_read_timeout(Some(t))?;
        Ok(())
    }

    /// Sends a request and waits for its response.
    pub fn call<T: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<R, ConnError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.buf.clear();
        encode_request(&mut self.buf, api, version, id, &self.client_id, body)?;
        self.stream.write_all(&self.buf)?;
        let (got, b) = read_response(&mut self.stream, api, version)?;
        if got != id {
            return Err(ConnError::Correlation { expected: id, got });
        }
        decode_body(api, version, b)
    }

    /// Gives up the socket (for [`crate::pipeline::Pipeline`]).
    pub fn into_stream(self) -> (TcpStream, StrBytes, i32) {
        (self.stream, self.client_id, self.next_id)
    }
}
