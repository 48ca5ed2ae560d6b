//! Inter-broker requests over the Kafka protocol (followers' fetches, transaction markers,
//! transaction verification): a request is framed with its header, sent to the broker's
//! registered address, and its response read back with a bounded size.
//!
//! Data path: [`call`] -> [`connect`] to the broker's address from the image (a [`PeerStream`]:
//! plain TCP, or TLS when the inter-broker listener is an SSL one) -> [`send`] (length, header,
//! body) -> [`receive`] (length checked against [`MAX_RESPONSE_BYTES`], correlation id, flexible
//! header tags) -> the decoded response, all within a deadline.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::image::BrokerId;
use crate::shard::BrokerShared;

/// Largest response accepted (bounded like a client request).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    Protocol(String),
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("inter-broker TLS: {0}")]
    Tls(String),
}

/// A connection to another broker's inter-broker listener.
pub enum PeerStream {
    Plain(glommio::net::TcpStream),
    /// The inter-broker listener is an SSL one.
    Tls(Box<futures_rustls::client::TlsStream<glommio::net::TcpStream>>),
}

impl futures_lite::AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_close(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Sends one request frame.
pub async fn send<R: Encodable>(
    stream: &mut PeerStream,
    key: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    req: &R,
) -> Result<(), PeerError> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .map_err(|e| PeerError::Protocol(e.to_string()))?;
    req.encode(&mut buf, version)
        .map_err(|e| PeerError::Protocol(e.to_string()))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&buf).await?;
    Ok(())
}

/// Reads the response to request `correlation`.
pub async fn receive<R: Decodable>(
    stream: &mut PeerStream,
    key: ApiKey,
    version: i16,
    correlation: i32,
) -> Result<R, PeerError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len);
    if len < 4 || len as usize > MAX_RESPONSE_BYTES {
        return Err(PeerError::Protocol(format!("{len}-byte response")));
    }
    let mut frame = vec![0u8; len as usize];
    stream.read_exact(&mut frame).await?;
    let mut b = Bytes::from(frame);
    let got = b.get_i32();
    if got != correlation {
        return Err(PeerError::Protocol(format!(
            "correlation id {got}, expected {correlation}"
        )));
    }
    if key.response_header_version(version) >= 1 {
        // tagged fields of the flexible response header (none expected: one zero byte)
        if b.get_u8() != 0 {
            return Err(PeerError::Protocol(
                "tagged fields in response header".into(),
            ));
        }
    }
    R::decode(&mut b, version).map_err(|e| PeerError::Protocol(e.to_string()))
}

/// Connects to `broker` at its registered address.
pub async fn connect(shared: &BrokerShared, broker: BrokerId) -> Result<PeerStream, PeerError> {
    let image = shared.image().ok_or(PeerError::UnknownBroker(broker))?;
    let b = image
        .brokers
        .get(&broker)
        .ok_or(PeerError::UnknownBroker(broker))?;
    let addr = format!("{}:{}", b.host, b.port);
    let io = |e: glommio::GlommioError<()>| PeerError::Io(e.into());
    let stream = glommio::net::TcpStream::connect(addr.as_str())
        .await
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let Some(tls) = shared
        .security
        .tls
        .get(shared.inter_broker)
        .and_then(Option::as_ref)
    else {
        return Ok(PeerStream::Plain(stream));
    };
    // checked at start: an SSL inter-broker listener has a truststore
    let config = tls
        .client_config()
        .ok_or_else(|| PeerError::Tls("no ssl.truststore.location".into()))?;
    let name = rustls::pki_types::ServerName::try_from(b.host.clone())
        .map_err(|e| PeerError::Tls(format!("{}: {e}", b.host)))?;
    let handshake = futures_rustls::TlsConnector::from(config).connect(name, stream);
    let tls = futures_lite::future::or(async { Some(handshake.await) }, async {
        glommio::timer::sleep(crate::security::tls::HANDSHAKE_TIMEOUT).await;
        None
    })
    .await
    .ok_or(PeerError::Timeout(crate::security::tls::HANDSHAKE_TIMEOUT))?
    .map_err(|e| PeerError::Tls(format!("handshake with broker {broker} at {addr}: {e}")))?;
    Ok(PeerStream::Tls(Box::new(tls)))
}

/// One request to `broker` on a connection of its own, answered within `timeout`.
pub async fn call<Req: Encodable, Resp: Decodable>(
    shared: &BrokerShared,
    broker: BrokerId,
    key: ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, PeerError> {
    let client_id = format!("sluice-broker-{}", shared.config.node_id);
    let exchange = async {
        let mut stream = connect(shared, broker).await?;
        send(&mut stream, key, version, 1, &client_id, req).await?;
        receive(&mut stream, key, version, 1).await
    };
    futures_lite::future::or(exchange, async {
        glommio::timer::sleep(timeout).await;
        Err(PeerError::Timeout(timeout))
    })
    .await
}
