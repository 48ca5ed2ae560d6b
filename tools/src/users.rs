//! SCRAM users (KIP-554): DescribeUserScramCredentials (api 50) lists each user's mechanisms
//! and iteration counts; AlterUserScramCredentials (api 51) sets or deletes a credential. The
//! client sends a random salt and the salted password (PBKDF2-HMAC of the password, the salt
//! and the iterations), never the password itself.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::admin::kafka_check;
use crate::client::{error_name, Client, ClientError};
use crate::sasl::{random_bytes, ScramHash};
use crate::security::SaslMechanism;

/// Kafka's bounds on SCRAM iterations (ScramMechanism.minIterations / maxIterations).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;
/// Bytes of a new credential's salt.
pub const SALT_BYTES: usize = 32;

/// RESOURCE_NOT_FOUND: a user asked for by name has no SCRAM credential.
pub const RESOURCE_NOT_FOUND: i16 = 91;

/// One SCRAM credential of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScramCredential {
    pub mechanism: String,
    pub iterations: i32,
}

/// One user's answer in DescribeUserScramCredentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserScram {
    pub user: String,
    pub credentials: Vec<ScramCredential>,
    /// Set when the broker refused this user (`None` for a user with credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub error_code: i16,
}

/// A credential to set.
#[derive(Clone)]
pub struct ScramUpsert {
    pub user: String,
    pub mechanism: SaslMechanism,
    pub iterations: i32,
    pub password: String,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn hash_of(m: SaslMechanism) -> Result<(ScramHash, i8), ClientError> {
    match m {
        SaslMechanism::ScramSha256 => Ok((ScramHash::Sha256, 1)),
        SaslMechanism::ScramSha512 => Ok((ScramHash::Sha512, 2)),
        SaslMechanism::Plain => Err(ClientError::GaveUp(
            "PLAIN has no SCRAM credentials (SCRAM-SHA-256 or SCRAM-SHA-512)".into(),
        )),
    }
}

impl Client {
    /// The SCRAM credentials of `users` (every user with one when empty), sorted by user.
    pub fn describe_user_scram_credentials(
        &mut self,
        users: &[String],
    ) -> Result<Vec<UserScram>, ClientError> {
        let v = self.negotiate(ApiKey::DescribeUserScramCredentials, 0, 0)?;
        let req = DescribeUserScramCredentialsRequest::default().with_users(if users.is_empty() {
            None
        } else {
            Some(
                users
                    .iter()
                    .map(|u| UserName::default().with_name(sb(u)))
                    .collect(),
            )
        });
        let resp: DescribeUserScramCredentialsResponse =
            self.connection()
                .call(ApiKey::DescribeUserScramCredentials, v, &req)?;
        kafka_check(
            || "describing SCRAM credentials".into(),
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        let mut out: Vec<UserScram> = resp
            .results
            .into_iter()
            .map(|r| {
                let mut credentials: Vec<ScramCredential> = r
                    .credential_infos
                    .iter()
                    .map(|c| ScramCredential {
                        mechanism: SaslMechanism::of_scram_type(c.mechanism).map_or_else(
                            || format!("UNKNOWN({})", c.mechanism),
                            |m| m.name().into(),
                        ),
                        iterations: c.iterations,
                    })
                    .collect();
                credentials.sort_by(|a, b| a.mechanism.cmp(&b.mechanism));
                let error = (r.error_code != 0).then(|| {
                    let name = error_name(r.error_code);
                    match r.error_message.as_ref().filter(|m| !m.is_empty()) {
                        Some(m) => format!("{name}: {m}"),
                        None => name,
                    }
                });
                UserScram {
                    user: r.user.to_string(),
                    credentials,
                    error,
                    error_code: r.error_code,
                }
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }

    /// Sets `upserts` and deletes `deletions` (user, mechanism) in one request; each user's
    /// error is returned as one [`ClientError::Kafka`].
    pub fn alter_user_scram_credentials(
        &mut self,
        upserts: &[ScramUpsert],
        deletions: &[(String, SaslMechanism)],
    ) -> Result<(), ClientError> {
        let v = self.negotiate(ApiKey::AlterUserScramCredentials, 0, 0)?;
        let mut ups = Vec::with_capacity(upserts.len());
        for u in upserts {
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&u.iterations) {
                return Err(ClientError::GaveUp(format!(
                    "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {}",
                    u.iterations
                )));
            }
            let (hash, t) = hash_of(u.mechanism)?;
            let salt = random_bytes(SALT_BYTES).map_err(ClientError::GaveUp)?;
            let salted = hash.salted_password(&u.password, &salt, u.iterations as u32);
            ups.push(
                ScramCredentialUpsertion::default()
                    .with_name(sb(&u.user))
                    .with_mechanism(t)
                    .with_iterations(u.iterations)
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted)),
            );
        }
        let mut dels = Vec::with_capacity(deletions.len());
        for (user, m) in deletions {
            let (_, t) = hash_of(*m)?;
            dels.push(
                ScramCredentialDeletion::default()
                    .with_name(sb(user))
                    .with_mechanism(t),
            );
        }
        let req = AlterUserScramCredentialsRequest::default()
            .with_upsertions(ups)
            .with_deletions(dels);
        let resp: AlterUserScramCredentialsResponse =
            self.connection()
                .call(ApiKey::AlterUserScramCredentials, v, &req)?;
        for r in &resp.results {
            kafka_check(
                || format!("altering the SCRAM credentials of user {}", r.user),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }
}
