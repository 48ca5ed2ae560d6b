//! SASL, client side (KIP-43, KIP-152): after ApiVersions, SaslHandshake v1 names the
//! mechanism and SaslAuthenticate requests carry the tokens. PLAIN sends `\0user\0password`;
//! SCRAM-SHA-256 and SCRAM-SHA-512 run RFC 5802 (RFC 7677): client-first, server-first (the
//! nonce must extend ours, at least 4096 iterations), client-final with the proof, and the
//! server's signature in server-final is checked.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

use crate::conn::{ConnError, Connection};
use crate::security::{SaslMechanism, SaslSettings};

/// Kafka's lower bound on SCRAM iterations (ScramMechanism.minIterations).
pub const MIN_ITERATIONS: u32 = 4096;

/// SASL_AUTHENTICATION_FAILED.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// UNSUPPORTED_SASL_MECHANISM.
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

#[derive(Debug, Error)]
pub enum SaslError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("authentication failed: {0}")]
    Failed(String),
    #[error("the broker does not enable SASL mechanism {mechanism} (it enables: {enabled})")]
    Mechanism { mechanism: String, enabled: String },
    #[error("the broker does not support {0} (is the listener a SASL one?)")]
    Unsupported(&'static str),
    #[error("SASL {step}: {name} (error code {code}){message}")]
    Kafka {
        step: &'static str,
        code: i16,
        name: String,
        message: String,
    },
    #[error("SCRAM: {0}")]
    Scram(String),
}

/// Runs the SASL exchange on `conn`. `authenticate_version`: the SaslAuthenticate version to
/// use (0..=2, from the broker's ApiVersions), `None` when the broker has no SaslAuthenticate.
/// Returns the session lifetime the broker gave (ms; 0: none, or SaslAuthenticate v0).
pub fn authenticate(
    conn: &mut Connection,
    settings: &SaslSettings,
    handshake_version: Option<i16>,
    authenticate_version: Option<i16>,
) -> Result<i64, SaslError> {
    // SaslHandshake v0 would mean raw tokens outside Kafka framing: v1 only
    if handshake_version.is_none_or(|v| v < 1) {
        return Err(SaslError::Unsupported("SaslHandshake v1"));
    }
    let auth_v = authenticate_version.ok_or(SaslError::Unsupported("SaslAuthenticate"))?;
    let mech = settings.mechanism;
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mech.name()));
    let resp: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &req)?;
    match resp.error_code {
        0 => {}
        UNSUPPORTED_SASL_MECHANISM => {
            let enabled: Vec<String> = resp.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(SaslError::Mechanism {
                mechanism: mech.name().to_string(),
                enabled: if enabled.is_empty() {
                    "none".into()
                } else {
                    enabled.join(", ")
                },
            });
        }
        code => return Err(kafka_error("handshake", code, None)),
    }
    match mech {
        SaslMechanism::Plain => {
            let token = plain_token(&settings.username, &settings.password);
            Ok(exchange(conn, auth_v, token)?.1)
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if mech == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let mut scram =
                ScramClient::new(hash, &settings.username, &settings.password, nonce()?);
            let (server_first, _) = exchange(conn, auth_v, scram.client_first().into_bytes())?;
            let server_first = String::from_utf8(server_first.to_vec())
                .map_err(|_| SaslError::Scram("server-first-message is not UTF-8".into()))?;
            let client_final = scram.client_final(&server_first)?;
            let (server_final, lifetime) = exchange(conn, auth_v, client_final.into_bytes())?;
            let server_final = String::from_utf8(server_final.to_vec())
                .map_err(|_| SaslError::Scram("server-final-message is not UTF-8".into()))?;
            scram.verify_server_final(&server_final)?;
            Ok(lifetime)
        }
    }
}

/// One SaslAuthenticate round trip: our token out, the broker's back, with the session
/// lifetime it states (v1+).
fn exchange(
    conn: &mut Connection,
    version: i16,
    token: Vec<u8>,
) -> Result<(Bytes, i64), SaslError> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
    let resp: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, version, &req)?;
    match resp.error_code {
        0 => Ok((resp.auth_bytes, resp.session_lifetime_ms)),
        SASL_AUTHENTICATION_FAILED => Err(SaslError::Failed(
            resp.error_message
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the broker refused the credentials".into()),
        )),
        code => Err(kafka_error(
            "authenticate",
            code,
            resp.error_message.map(|m| m.to_string()),
        )),
    }
}

fn kafka_error(step: &'static str, code: i16, message: Option<String>) -> SaslError {
    SaslError::Kafka {
        step,
        code,
        name: crate::client::error_name(code),
        message: message
            .filter(|m| !m.is_empty())
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
    }
}

/// PLAIN's token (RFC 4616): no authorization id, the user, the password.
pub fn plain_token(user: &str, password: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(user.len() + password.len() + 2);
    t.push(0);
    t.extend_from_slice(user.as_bytes());
    t.push(0);
    t.extend_from_slice(password.as_bytes());
    t
}

/// `n` random bytes from the ring provider's system random source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(b)
}

/// A client nonce: 24 random bytes, base64 (printable, no comma).
fn nonce() -> Result<String, SaslError> {
    Ok(B64.encode(random_bytes(24).map_err(SaslError::Scram)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m =
                    <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword := Hi(Normalize(password), salt, i), Hi being PBKDF2 with HMAC.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// RFC 5802's `saslname`: `=` as `=3D`, `,` as `=2C`.
pub fn escape_username(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// The client side of one SCRAM exchange.
pub struct ScramClient {
    hash: ScramHash,
    client_first_bare: String,
    nonce: String,
    password: String,
    /// ServerSignature expected in server-final (set by client_final).
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(hash: ScramHash, user: &str, password: &str, nonce: String) -> ScramClient {
        ScramClient {
            hash,
            client_first_bare: format!("n={},r={nonce}", escape_username(user)),
            nonce,
            password: password.to_string(),
            server_signature: None,
        }
    }

    /// client-first-message: no channel binding, no authzid.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// client-final-message for `server_first`.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, SaslError> {
        let bad = |m: String| SaslError::Scram(m);
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(SaslError::Failed(v.to_string())),
                Some(("m", _)) => {
                    return Err(bad("the server asks for an unsupported extension".into()))
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| bad("server-first-message has no nonce".into()))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(bad("the server's nonce does not extend the client's".into()));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| bad("server-first-message has no salt".into()))?)
            .map_err(|e| bad(format!("salt: {e}")))?;
        let iterations: u32 = iterations
            .ok_or_else(|| bad("server-first-message has no iteration count".into()))?
            .parse()
            .map_err(|_| bad("the iteration count is not a number".into()))?;
        if iterations < MIN_ITERATIONS {
            return Err(bad(format!(
                "the server asks for {iterations} iterations, fewer than {MIN_ITERATIONS}"
            )));
        }
        let h = self.hash;
        let salted = h.salted_password(&self.password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        // "biws" is base64("n,,"): no channel binding
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message's `v=` (the server knew our password's keys).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), SaslError> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or_else(|| SaslError::Scram("server-final before client-final".into()))?;
        for attr in server_final.split(',') {
            match attr.split_once('=') {
                Some(("e", v)) => return Err(SaslError::Failed(v.to_string())),
                Some(("v", v)) => {
                    let got = B64
                        .decode(v)
                        .map_err(|e| SaslError::Scram(format!("server signature: {e}")))?;
                    if got == *expected {
                        return Ok(());
                    }
                    return Err(SaslError::Scram(
                        "the server's signature is wrong (it does not know this user's \
                         credentials)"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Err(SaslError::Scram(
            "server-final-message has no signature".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_scram_sha_256_vector() {
        let mut c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.client_final(server_first).expect("client-final");
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        let e = c
            .verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect_err("wrong signature");
        assert!(e.to_string().contains("signature is wrong"), "{e}");
        let e = c
            .verify_server_final("e=invalid-proof")
            .expect_err("server error");
        assert_eq!(e.to_string(), "authentication failed: invalid-proof");
    }

    #[test]
    fn scram_sha_512_round_trip_with_the_server_math() {
        // the server side of RFC 5802 computed independently here: StoredKey check of the proof
        let h = ScramHash::Sha512;
        let mut c = ScramClient::new(h, "al=ice,", "secret", "abc".into());
        assert_eq!(c.client_first(), "n,,n=al=3Dice=2C,r=abc");
        let salt = b"0123456789abcdef";
        let server_first = format!("r=abcdef,s={},i=4096", B64.encode(salt));
        let cf = c.client_final(&server_first).expect("client-final");
        let (without_proof, proof) = cf.rsplit_once(",p=").expect("proof");
        let proof = B64.decode(proof).expect("b64");
        let salted = h.salted_password("secret", salt, 4096);
        let stored = h.digest(&h.hmac(&salted, b"Client Key"));
        let auth = format!("n=al=3Dice=2C,r=abc,{server_first},{without_proof}");
        let sig = h.hmac(&stored, auth.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(h.digest(&client_key), stored);
        let server_sig = h.hmac(&h.hmac(&salted, b"Server Key"), auth.as_bytes());
        c.verify_server_final(&format!("v={}", B64.encode(server_sig)))
            .expect("server signature");
    }

    #[test]
    fn server_first_is_checked() {
        let mut c = ScramClient::new(ScramHash::Sha256, "u", "p", "nonce".into());
        let salt = B64.encode(b"salt");
        for (sf, want) in [
            (format!("r=other,s={salt},i=4096"), "does not extend"),
            (format!("r=nonce,s={salt},i=4096"), "does not extend"),
            (format!("r=nonceX,s={salt},i=1000"), "fewer than 4096"),
            ("r=nonceX,i=4096".to_string(), "no salt"),
            (format!("r=nonceX,s={salt}"), "no iteration count"),
        ] {
            let e = c.client_final(&sf).expect_err(&sf);
            assert!(e.to_string().contains(want), "{sf}: {e}");
        }
    }

    #[test]
    fn plain_token_layout() {
        assert_eq!(plain_token("alice", "pw"), b"\0alice\0pw".to_vec());
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (nonce().expect("a"), nonce().expect("b"));
        assert_ne!(a, b);
        assert!(!a.contains(','));
    }
}
