//! The SASL entry points: a connection's frames while it authenticates, through the same
//! calls `conn::serve` and `api` make (`api::decode_frame` with the SASL gate, the handshake,
//! the exchange step and the answers of `api::sasl`), on a SASL listener's `Session`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, RequestKind, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sha2::{Digest, Sha256};

use crate::api::{self, sasl as handlers, Decoded};
use crate::conn::Session;
use crate::security::credentials::ScramUsers;
use crate::security::sasl::Credentials;
use crate::security::scram::{self, Credential, Hash};
use crate::wire;

/// The server's part of the SCRAM nonce (random in the broker; fixed here so a fuzzed
/// client-final can carry it).
pub const SERVER_NONCE: &str = "fuzz-server-nonce";
const ENABLED: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
const SALT: &[u8] = b"fuzz-salt";
const ITERATIONS: i32 = 4096;
/// At most this many frames per input.
const MAX_FRAMES: usize = 16;

/// The stores: `alice` in the JAAS (PLAIN) users, `bob` with SCRAM credentials for both hashes
/// (password `bob-secret`), looked up as `BrokerShared` does.
struct Stores {
    plain: BTreeMap<String, String>,
    scram: ScramUsers,
}

impl Credentials for Stores {
    fn check_plain(&self, user: &str, password: &str) -> bool {
        if let Some(p) = self.plain.get(user) {
            return p.as_bytes() == password.as_bytes();
        }
        self.scram.get(user).is_some_and(|m| {
            m.iter()
                .next()
                .is_some_and(|(hash, cred)| cred.matches_password(*hash, password))
        })
    }

    fn scram(&self, user: &str, hash: Hash) -> Option<Credential> {
        self.scram.get(user).and_then(|m| m.get(&hash)).cloned()
    }
}

fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| {
        let mut bob = BTreeMap::new();
        for h in [Hash::Sha256, Hash::Sha512] {
            let salted = h.salted_password(b"bob-secret", SALT, ITERATIONS as u32);
            bob.insert(
                h,
                Credential::from_salted(h, SALT.to_vec(), ITERATIONS, &salted),
            );
        }
        Stores {
            plain: BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]),
            scram: BTreeMap::from([("bob".to_string(), bob)]),
        }
    })
}

/// Input: frames, each a u16 big-endian length and its bytes, as one connection of a SASL
/// listener sends them. A frame is a Kafka request, or a bare token after a v0 SaslHandshake.
/// Stops where the broker would close the connection. Every answer must encode.
pub fn sasl(data: &[u8]) {
    let _ = sasl_principal(data);
}

/// [`sasl`], returning the principal the connection ended up authenticated as (if it did).
pub fn sasl_principal(data: &[u8]) -> Option<String> {
    let session = Session::new("fuzz:1".into(), 0, "User:ANONYMOUS", true);
    let enabled: Vec<String> = ENABLED.iter().map(|m| m.to_string()).collect();
    let step = |token: &[u8]| {
        if let Ok(text) = std::str::from_utf8(token) {
            let _ = scram::client_first_user(text);
        }
        handlers::step_with(stores(), 0, || SERVER_NONCE.to_string(), &session, token)
    };
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        if session.expects_raw_token() {
            if handlers::raw_token_with(step(frame)).is_err() {
                break;
            }
            continue;
        }
        let gate = |k| handlers::gate(&session, k);
        let req = match api::decode_frame(Bytes::copy_from_slice(frame), gate) {
            Ok(Decoded::Request(r)) => r,
            Ok(Decoded::UnsupportedApiVersions { .. }) => continue,
            Err(_) => break,
        };
        let (k, v, c) = (req.api_key, req.version, req.header.correlation_id);
        match req.body {
            RequestKind::SaslHandshake(r) => {
                let resp = handlers::handshake_with(&enabled, r, v, &session);
                wire::encode(k, v, c, &resp).expect("SaslHandshake answer encodes");
            }
            RequestKind::SaslAuthenticate(r) => {
                let (resp, close) = handlers::authenticate_with(step(&r.auth_bytes), 0);
                wire::encode(k, v, c, &resp).expect("SaslAuthenticate answer encodes");
                if close {
                    break;
                }
            }
            _ => {}
        }
    }
    let authenticated = session
        .sasl
        .as_ref()
        .is_some_and(|s| s.borrow().authenticated());
    authenticated.then(|| session.principal.borrow().to_string())
}

fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut b, key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut b, version).expect("body encodes");
    b.to_vec()
}

fn handshake(version: i16, mechanism: &'static str) -> Vec<u8> {
    let r = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    frame(ApiKey::SaslHandshake, version, &r)
}

fn authenticate(version: i16, token: &[u8]) -> Vec<u8> {
    let r = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
    frame(ApiKey::SaslAuthenticate, version, &r)
}

fn input(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// A SCRAM-SHA-256 client's messages for `bob` (what a client computes: RFC 5802).
fn scram_client() -> (String, String) {
    let cnonce = "client-nonce";
    let first_bare = format!("n=bob,r={cnonce}");
    let server_first = format!(
        "r={cnonce}{SERVER_NONCE},s={},i={ITERATIONS}",
        B64.encode(SALT)
    );
    let without_proof = format!("c=biws,r={cnonce}{SERVER_NONCE}");
    let salted = Hash::Sha256.salted_password(b"bob-secret", SALT, ITERATIONS as u32);
    let hmac = |key: &[u8], data: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key size");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let auth = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    (
        format!("n,,{first_bare}"),
        format!("{without_proof},p={}", B64.encode(proof)),
    )
}

/// Seeds: successful PLAIN (v0 raw token, v1 handshake with v0-v2 SaslAuthenticate) and
/// SCRAM-SHA-256 exchanges followed by a request, and a few failing ones.
pub fn sasl_seeds() -> Vec<Vec<u8>> {
    let (first, last) = scram_client();
    let metadata = frame(
        ApiKey::Metadata,
        12,
        &kafka_protocol::messages::MetadataRequest::default(),
    );
    let mut seeds = vec![
        input(&[handshake(0, "PLAIN"), b"\0alice\0alice-secret".to_vec()]),
        input(&[handshake(0, "SCRAM-SHA-256"), first.clone().into_bytes()]),
        input(&[handshake(1, "PLAIN"), authenticate(0, b"\0alice\0wrong")]),
        input(&[
            handshake(1, "SCRAM-SHA-512"),
            authenticate(1, b"n,,n=bob,r=x"),
        ]),
        input(std::slice::from_ref(&metadata)),
    ];
    for v in 0..=2 {
        seeds.push(input(&[
            handshake(1, "PLAIN"),
            authenticate(v, b"alice\0alice\0alice-secret"),
            metadata.clone(),
        ]));
        seeds.push(input(&[
            handshake(1, "SCRAM-SHA-256"),
            authenticate(v, first.as_bytes()),
            authenticate(v, last.as_bytes()),
            metadata.clone(),
        ]));
    }
    seeds
}
