//! Response framing: the encoded header and body, plus record data that is written
//! separately (from memory, or a segment file range sent with sendfile).

use std::fs::File;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// A segment file handle: a dup of the owner's read-only fd, so it can cross shards and the
/// segment may be deleted while a send is in progress.
pub type FileRef = File;

#[derive(Debug)]
pub enum Piece {
    Bytes(Bytes),
    File {
        file: FileRef,
        position: u64,
        len: u64,
    },
}

/// A complete response frame (length prefix included) as pieces written in order.
#[derive(Debug, Default)]
pub struct Response {
    pub pieces: Vec<Piece>,
    /// Close the connection once this is written (a failed SASL authentication).
    pub close_after: bool,
}

/// Encodes `header + body` into one frame.
pub fn encode<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> anyhow_free::Result<Response> {
    let mut buf = encode_raw(
        api_key.response_header_version(version),
        correlation_id,
        |b| {
            body.encode(b, version)
                .map_err(|e| anyhow_free::Error(e.to_string()))
        },
    )?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Response {
        pieces: vec![Piece::Bytes(buf.freeze())],
        close_after: false,
    })
}

/// Header + whatever `body` writes, with a placeholder length prefix.
pub fn encode_raw(
    header_version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut BytesMut) -> anyhow_free::Result<()>,
) -> anyhow_free::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| anyhow_free::Error(e.to_string()))?;
    body(&mut buf)?;
    Ok(buf)
}

/// A tiny error type so encoding failures do not drag anyhow into the server's API.
pub mod anyhow_free {
    #[derive(Debug, thiserror::Error)]
    #[error("encoding failed: {0}")]
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
}
