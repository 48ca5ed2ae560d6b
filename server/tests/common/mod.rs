//! A blocking Kafka protocol client for the broker's integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_server::config::ServerConfig;

/// Starts a broker on 127.0.0.1:0 with `cores` shards in `dir`.
pub fn start(dir: &std::path::Path, cores: usize) -> sluice_server::BrokerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        cores,
        ..ServerConfig::default()
    };
    sluice_server::start(config).expect("broker starts")
}

pub struct Client {
    pub stream: TcpStream,
    next_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client { stream, next_id: 1 }
    }

    /// Sends one request without reading the answer; returns its correlation id.
    pub fn send<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).expect("write");
        id
    }

    /// Reads one response frame: (correlation id, body bytes after the header).
    pub fn recv_raw(&mut self, key: ApiKey, version: i16) -> std::io::Result<(i32, Bytes)> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut b, key.response_header_version(version))
            .expect("response header");
        Ok((h.correlation_id, b))
    }

    pub fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, R) {
        let (id, mut b) = self.recv_raw(key, version).expect("response");
        let r = R::decode(&mut b, version).expect("decode response");
        assert!(!b.has_remaining(), "whole response consumed");
        (id, r)
    }

    pub fn call<T: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &T) -> R {
        let id = self.send(key, version, body);
        let (got, r) = self.recv(key, version);
        assert_eq!(got, id, "correlation id");
        r
    }

    /// True once the broker has closed this connection.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}
