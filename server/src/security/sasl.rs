//! The SASL state of one connection (KIP-43, KIP-152, KIP-368): SaslHandshake picks a
//! mechanism, then SaslAuthenticate requests (or, after a v0 handshake, raw length-prefixed
//! tokens) carry the exchange. Until it succeeds only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served; a failure answers SASL_AUTHENTICATION_FAILED and closes the
//! connection. With `connections.max.reauth.ms` a session expires; the client re-authenticates
//! on the same connection (as the same principal) or is disconnected at its next request.

use std::time::{Duration, Instant};

use super::scram::{self, Credential, Hash, ScramError, ServerExchange};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(Hash),
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => Hash::of_mechanism(other).map(Mechanism::Scram),
        }
    }
}

#[derive(Debug)]
enum Step {
    Idle,
    Handshaken(Mechanism),
    Scram(Box<ServerExchange>),
}

/// Where the credentials come from (the broker's stores).
pub trait Credentials {
    /// PLAIN: is this the user's password?
    fn check_plain(&self, user: &str, password: &str) -> bool;
    fn scram(&self, user: &str, hash: Hash) -> Option<Credential>;
}

/// What one SaslAuthenticate step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this token and wait for the next one.
    Continue(Vec<u8>),
    /// Authenticated as `principal`; send the final token.
    Done { token: Vec<u8>, principal: String },
    /// Answer SASL_AUTHENTICATION_FAILED with this message and close the connection.
    Failed(String),
}

#[derive(Debug)]
pub struct SaslState {
    step: Step,
    /// The mechanism's tokens come as raw frames (after a v0 SaslHandshake).
    raw: bool,
    /// The principal of the current session (None: not authenticated yet).
    principal: Option<String>,
    expires: Option<Instant>,
}

impl SaslState {
    pub fn new() -> SaslState {
        SaslState {
            step: Step::Idle,
            raw: false,
            principal: None,
            expires: None,
        }
    }

    pub fn authenticated(&self) -> bool {
        self.principal.is_some()
    }

    /// The session outlived connections.max.reauth.ms without re-authenticating.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// The next frame is a raw SASL token (v0 framing), not a Kafka request.
    pub fn expects_raw_token(&self) -> bool {
        self.raw && !matches!(self.step, Step::Idle)
    }

    /// SaslHandshake: `Err` is the Kafka error code (UNSUPPORTED_SASL_MECHANISM 33,
    /// ILLEGAL_SASL_STATE 34).
    pub fn handshake(&mut self, mechanism: &str, enabled: &[String], raw: bool) -> Result<(), i16> {
        if !matches!(self.step, Step::Idle) {
            return Err(34);
        }
        let m = match Mechanism::parse(mechanism) {
            Some(m) if enabled.iter().any(|e| e == mechanism) => m,
            _ => return Err(33),
        };
        self.step = Step::Handshaken(m);
        self.raw = raw;
        Ok(())
    }

    /// One token of the exchange. `lifetime`: connections.max.reauth.ms (None: forever).
    pub fn authenticate(
        &mut self,
        token: &[u8],
        creds: &dyn Credentials,
        nonce: impl FnOnce() -> String,
        lifetime: Option<Duration>,
    ) -> Outcome {
        let step = std::mem::replace(&mut self.step, Step::Idle);
        let result = match step {
            Step::Idle => Err("SaslAuthenticate before SaslHandshake".to_string()),
            Step::Handshaken(Mechanism::Plain) => {
                plain(token, creds).map(|user| (Vec::new(), user))
            }
            Step::Handshaken(Mechanism::Scram(hash)) => {
                match scram_first(token, hash, creds, nonce()) {
                    Ok((ex, server_first)) => {
                        self.step = Step::Scram(Box::new(ex));
                        return Outcome::Continue(server_first.into_bytes());
                    }
                    Err(e) => Err(e),
                }
            }
            Step::Scram(ex) => std::str::from_utf8(token)
                .map_err(|_| "SCRAM message is not UTF-8".to_string())
                .and_then(|t| ex.finish(t).map_err(|ScramError(m)| m))
                .map(|server_final| (server_final.into_bytes(), ex.user().to_string())),
        };
        self.raw = false;
        match result {
            Err(m) => Outcome::Failed(m),
            Ok((token, user)) => {
                let principal = format!("User:{user}");
                if let Some(old) = &self.principal {
                    if *old != principal {
                        return Outcome::Failed(format!(
                            "Cannot change principals during re-authentication from {old}: {principal}"
                        ));
                    }
                }
                self.principal = Some(principal.clone());
                self.expires = lifetime.map(|l| Instant::now() + l);
                Outcome::Done { token, principal }
            }
        }
    }
}

impl Default for SaslState {
    fn default() -> Self {
        SaslState::new()
    }
}

/// `[authzid] NUL user NUL password`; an authzid other than the user is refused.
fn plain(token: &[u8], creds: &dyn Credentials) -> Result<String, String> {
    let text = std::str::from_utf8(token).map_err(|_| "PLAIN token is not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("Authentication failed: username and password must not be empty".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("Authentication failed: Client requested an authorization id that is different from username".into());
    }
    if creds.check_plain(user, password) {
        Ok(user.to_string())
    } else {
        Err("Authentication failed: Invalid username or password".into())
    }
}

fn scram_first(
    token: &[u8],
    hash: Hash,
    creds: &dyn Credentials,
    nonce: String,
) -> Result<(ServerExchange, String), String> {
    let text = std::str::from_utf8(token).map_err(|_| "SCRAM message is not UTF-8".to_string())?;
    let user = scram::client_first_user(text).map_err(|ScramError(m)| m)?;
    let Some(cred) = creds.scram(&user, hash) else {
        return Err(format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            hash.mechanism()
        ));
    };
    ServerExchange::start(hash, cred, text, &nonce).map_err(|ScramError(m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Users;

    impl Credentials for Users {
        fn check_plain(&self, user: &str, password: &str) -> bool {
            user == "alice" && password == "alice-secret"
        }
        fn scram(&self, _: &str, _: Hash) -> Option<Credential> {
            None
        }
    }

    fn enabled() -> Vec<String> {
        vec!["PLAIN".into(), "SCRAM-SHA-256".into()]
    }

    #[test]
    fn plain_success_failure_and_reauth() {
        let mut s = SaslState::new();
        assert_eq!(s.handshake("SCRAM-SHA-512", &enabled(), false), Err(33));
        s.handshake("PLAIN", &enabled(), false).expect("plain");
        assert_eq!(s.handshake("PLAIN", &enabled(), false), Err(34), "twice");
        let out = s.authenticate(b"\0alice\0alice-secret", &Users, String::new, None);
        assert_eq!(
            out,
            Outcome::Done {
                token: vec![],
                principal: "User:alice".into()
            }
        );
        assert!(s.authenticated() && !s.expired(Instant::now()));
        // re-authentication as someone else is refused
        s.handshake("PLAIN", &enabled(), false).expect("again");
        let out = s.authenticate(b"\0bob\0x", &Users, String::new, None);
        assert!(matches!(out, Outcome::Failed(_)));
        let mut t = SaslState::new();
        t.handshake("PLAIN", &enabled(), true).expect("v0");
        assert!(t.expects_raw_token());
        let out = t.authenticate(b"\0alice\0wrong", &Users, String::new, None);
        assert_eq!(
            out,
            Outcome::Failed("Authentication failed: Invalid username or password".into())
        );
        assert!(!t.authenticated());
        let mut u = SaslState::new();
        assert!(matches!(
            u.authenticate(b"x", &Users, String::new, None),
            Outcome::Failed(_)
        ));
        u.handshake("PLAIN", &enabled(), false).expect("plain");
        let out = u.authenticate(
            b"\0alice\0alice-secret",
            &Users,
            String::new,
            Some(Duration::ZERO),
        );
        assert!(matches!(out, Outcome::Done { .. }));
        assert!(u.expired(Instant::now()));
    }
}
