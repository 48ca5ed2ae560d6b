//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka runs them: the
//! broker stores per user and mechanism only the salt, the iteration count, StoredKey and
//! ServerKey (derived from the salted password the admin client sends in
//! AlterUserScramCredentials; the password itself never reaches the broker), checks the client's
//! proof against StoredKey and proves itself with ServerKey.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds on iterations (ScramMechanism.minIterations / maxIterations).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    /// From the SASL mechanism name.
    pub fn of_mechanism(name: &str) -> Option<Hash> {
        match name {
            "SCRAM-SHA-256" => Some(Hash::Sha256),
            "SCRAM-SHA-512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// ScramMechanism type in DescribeUserScramCredentials / AlterUserScramCredentials.
    pub fn of_type(t: i8) -> Option<Hash> {
        match t {
            1 => Some(Hash::Sha256),
            2 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn type_id(self) -> i8 {
        match self {
            Hash::Sha256 => 1,
            Hash::Sha512 => 2,
        }
    }

    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key size");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Hash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What the broker keeps of one user's password for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    pub fn from_salted(hash: Hash, salt: Vec<u8>, iterations: i32, salted: &[u8]) -> Credential {
        let client_key = hash.hmac(salted, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
        }
    }

    /// Whether `password` is this credential's (PLAIN checked against the SCRAM store).
    pub fn matches_password(&self, hash: Hash, password: &str) -> bool {
        let salted = hash.salted_password(password.as_bytes(), &self.salt, self.iterations as u32);
        let client_key = hash.hmac(&salted, b"Client Key");
        constant_eq(&hash.digest(&client_key), &self.stored_key)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One SCRAM exchange in progress.
#[derive(Debug)]
pub struct ServerExchange {
    hash: Hash,
    user: String,
    credential: Credential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// A SCRAM exchange that cannot go on (answered with SASL_AUTHENTICATION_FAILED).
#[derive(Debug, PartialEq, Eq)]
pub struct ScramError(pub String);

fn attr(part: &str, name: char) -> Option<&str> {
    part.strip_prefix(name)?.strip_prefix('=')
}

/// `=2C` -> `,`, `=3D` -> `=`; any other `=` is malformed.
fn unescape_user(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The user named in a client-first message (to look its credential up).
pub fn client_first_user(msg: &str) -> Result<String, ScramError> {
    let bad = || ScramError("malformed SCRAM client-first message".into());
    let bare = client_first_bare(msg).ok_or_else(bad)?;
    let user = bare
        .split(',')
        .next()
        .and_then(|p| attr(p, 'n'))
        .ok_or_else(bad)?;
    unescape_user(user).ok_or_else(bad)
}

/// The message without its GS2 header (`n,,`); channel binding (`p=`) is refused.
fn client_first_bare(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("n,").or_else(|| msg.strip_prefix("y,"))?;
    // authzid: empty or a=<name>
    let (_, bare) = rest.split_once(',')?;
    Some(bare)
}

impl ServerExchange {
    /// Answers the client-first message with server-first; `nonce` is the server's part.
    pub fn start(
        hash: Hash,
        credential: Credential,
        client_first: &str,
        server_nonce: &str,
    ) -> Result<(ServerExchange, String), ScramError> {
        let bad = |m: &str| ScramError(format!("malformed SCRAM client-first message: {m}"));
        let bare = client_first_bare(client_first).ok_or_else(|| bad("GS2 header"))?;
        let mut parts = bare.split(',');
        let user = parts
            .next()
            .and_then(|p| attr(p, 'n'))
            .and_then(unescape_user)
            .ok_or_else(|| bad("n="))?;
        let client_nonce = parts
            .next()
            .and_then(|p| attr(p, 'r'))
            .ok_or_else(|| bad("r="))?;
        for ext in parts {
            // Kafka's only extension is tokenauth (delegation tokens), which sluice lacks
            if ext.starts_with("tokenauth=true") {
                return Err(ScramError("delegation tokens are not supported".into()));
            }
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        Ok((
            ServerExchange {
                hash,
                user,
                credential,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks client-final; returns server-final on success.
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let failed = || {
            ScramError("Authentication failed during authentication due to invalid credentials with SASL mechanism".into())
        };
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError("malformed SCRAM client-final message".into()))?;
        let nonce = without_proof
            .split(',')
            .find_map(|p| attr(p, 'r'))
            .ok_or_else(|| ScramError("malformed SCRAM client-final message".into()))?;
        // Kafka checks that the nonce ends with the server-first one, not equality: librdkafka
        // before 2.1 (Debian's kcat) sends its client nonce twice in front of it. The proof
        // still covers the message exactly as sent.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError("SCRAM nonce mismatch".into()));
        }
        let proof = B64.decode(proof).map_err(|_| failed())?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let h = self.hash;
        let signature = h.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(failed());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !constant_eq(&h.digest(&client_key), &self.credential.stored_key) {
            return Err(failed());
        }
        let server_signature = h.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, from the server's side.
    #[test]
    fn rfc7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let salted = Hash::Sha256.salted_password(b"pencil", &salt, 4096);
        let cred = Credential::from_salted(Hash::Sha256, salt, 4096, &salted);
        assert!(cred.matches_password(Hash::Sha256, "pencil"));
        assert!(!cred.matches_password(Hash::Sha256, "pencil2"));
        let first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        assert_eq!(client_first_user(first).expect("user"), "user");
        let (ex, server_first) =
            ServerExchange::start(Hash::Sha256, cred, first, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
                .expect("start");
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            ex.finish(fin).expect("valid proof"),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let wrong = fin.replace("p=dHzb", "p=dHzc");
        assert!(ex.finish(&wrong).is_err());
        let other_nonce = fin.replace("k0,p=", "k1,p=");
        assert!(ex.finish(&other_nonce).is_err());
    }

    #[test]
    fn user_names_are_unescaped() {
        assert_eq!(
            client_first_user("n,,n=a=2Cb=3Dc,r=x").expect("ok"),
            "a,b=c"
        );
        assert!(client_first_user("n,,n=a=ZZ,r=x").is_err());
        assert!(client_first_user("garbage").is_err());
    }
}
