//! SaslHandshake and SaslAuthenticate (with v0's bare tokens), the gate that keeps every other
//! API from an unauthenticated SASL client, and the SCRAM credential APIs
//! (DescribeUserScramCredentials, AlterUserScramCredentials). The exchange itself is
//! `security::sasl`; credentials are `security::credentials`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codes;
use crate::conn::{ConnError, Session};
use crate::security::credentials::ScramChange;
use crate::security::sasl::{Credentials, Outcome};
use crate::security::scram::{self, Credential, Hash};
use crate::shard::Shard;
use crate::wire::{Piece, Response};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Refuses what a SASL listener's client may not send: anything but ApiVersions and the SASL
/// requests before it authenticated, and anything but re-authentication once its session
/// expired. Both close the connection, as Kafka does.
pub fn gate(session: &Session, api_key: ApiKey) -> Result<(), ConnError> {
    let Some(sasl) = &session.sasl else {
        return Ok(());
    };
    let st = sasl.borrow();
    let auth_api = matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if !st.authenticated() && !auth_api && api_key != ApiKey::ApiVersions {
        return Err(ConnError::Unauthenticated(api_key));
    }
    if st.expired(Instant::now()) && !auth_api {
        return Err(ConnError::SessionExpired);
    }
    Ok(())
}

pub fn handshake(
    shard: &Rc<Shard>,
    req: SaslHandshakeRequest,
    version: i16,
    session: &Session,
) -> SaslHandshakeResponse {
    let enabled = shard
        .shared
        .security
        .sasl_mechanisms
        .get(session.listener)
        .map_or(&shard.shared.config.sasl.mechanisms, |m| m);
    handshake_with(enabled, req, version, session)
}

/// [`handshake`] with the listener's `enabled` mechanisms.
pub fn handshake_with(
    enabled: &[String],
    req: SaslHandshakeRequest,
    version: i16,
    session: &Session,
) -> SaslHandshakeResponse {
    let resp = SaslHandshakeResponse::default()
        .with_mechanisms(enabled.iter().map(|m| s(m.as_str())).collect());
    let Some(sasl) = &session.sasl else {
        return resp.with_error_code(ILLEGAL_SASL_STATE);
    };
    match sasl
        .borrow_mut()
        .handshake(req.mechanism.as_str(), enabled, version == 0)
    {
        Ok(()) => resp.with_error_code(codes::NONE),
        Err(code) => {
            tracing::info!(peer = %session.peer, mechanism = %req.mechanism.as_str(), code, "SASL handshake refused");
            resp.with_error_code(code)
        }
    }
}

fn server_nonce() -> String {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

/// The broker's side of [`step_with`]: its credential stores, connections.max.reauth.ms and a
/// random server nonce.
fn step(shard: &Rc<Shard>, session: &Session, token: &[u8]) -> Outcome {
    let ms = shard.shared.config.sasl.max_reauth_ms;
    step_with(&*shard.shared, ms, server_nonce, session, token)
}

/// One step of the exchange; records the principal on success.
pub fn step_with(
    creds: &dyn Credentials,
    max_reauth_ms: u64,
    nonce: impl FnOnce() -> String,
    session: &Session,
    token: &[u8],
) -> Outcome {
    let Some(sasl) = &session.sasl else {
        return Outcome::Failed("SASL is not enabled on this listener".into());
    };
    let ms = max_reauth_ms;
    let lifetime = (ms > 0).then(|| Duration::from_millis(ms));
    let outcome = sasl
        .borrow_mut()
        .authenticate(token, creds, nonce, lifetime);
    match &outcome {
        Outcome::Done { principal, .. } => {
            tracing::debug!(peer = %session.peer, %principal, "SASL authenticated");
            *session.principal.borrow_mut() = principal.as_str().into();
        }
        Outcome::Failed(m) => {
            tracing::info!(peer = %session.peer, reason = %m, "SASL authentication failed")
        }
        Outcome::Continue(_) => {}
    }
    outcome
}

/// SaslAuthenticate; the flag says whether to close the connection after the answer.
pub fn authenticate(
    shard: &Rc<Shard>,
    req: SaslAuthenticateRequest,
    session: &Session,
) -> (SaslAuthenticateResponse, bool) {
    let ms = shard.shared.config.sasl.max_reauth_ms;
    authenticate_with(step(shard, session, &req.auth_bytes), ms)
}

/// The SaslAuthenticate answer to the outcome of a step.
pub fn authenticate_with(outcome: Outcome, ms: u64) -> (SaslAuthenticateResponse, bool) {
    let resp = SaslAuthenticateResponse::default();
    match outcome {
        Outcome::Continue(token) => (resp.with_auth_bytes(Bytes::from(token)), false),
        Outcome::Done { token, .. } => (
            resp.with_auth_bytes(Bytes::from(token))
                .with_session_lifetime_ms(ms as i64),
            false,
        ),
        Outcome::Failed(m) => (
            resp.with_error_code(SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(s(m))),
            true,
        ),
    }
}

/// A v0 client's bare token: answered with a bare token, or the connection closes (v0 has no
/// way to carry an error).
pub fn raw_token(
    shard: &Rc<Shard>,
    frame: &Bytes,
    session: &Session,
) -> Result<Option<Response>, ConnError> {
    raw_token_with(step(shard, session, frame))
}

/// The v0 answer to the outcome of a step on a bare token.
pub fn raw_token_with(outcome: Outcome) -> Result<Option<Response>, ConnError> {
    let token = match outcome {
        Outcome::Continue(t) => t,
        Outcome::Done { token, .. } => token,
        Outcome::Failed(m) => return Err(ConnError::Malformed(format!("SASL v0: {m}"))),
    };
    let mut buf = BytesMut::with_capacity(4 + token.len());
    buf.put_i32(token.len() as i32);
    buf.put_slice(&token);
    Ok(Some(Response {
        pieces: vec![Piece::Bytes(buf.freeze())],
        close_after: false,
    }))
}

pub fn describe_scram(
    shard: &Rc<Shard>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = shard.shared.scram_users();
    let info = |m: &std::collections::BTreeMap<Hash, Credential>| {
        m.iter()
            .map(|(h, c)| {
                CredentialInfo::default()
                    .with_mechanism(h.type_id())
                    .with_iterations(c.iterations)
            })
            .collect::<Vec<_>>()
    };
    let results = match req.users.filter(|l| !l.is_empty()) {
        // null or empty: every user with credentials
        None => users
            .iter()
            .map(|(u, m)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(s(u.as_str()))
                    .with_credential_infos(info(m))
            })
            .collect(),
        Some(list) => {
            let mut seen = std::collections::BTreeSet::new();
            let dups: std::collections::BTreeSet<String> = list
                .iter()
                .filter(|u| !seen.insert(u.name.to_string()))
                .map(|u| u.name.to_string())
                .collect();
            let mut done = std::collections::BTreeSet::new();
            list.into_iter()
                .filter(|u| done.insert(u.name.to_string()))
                .map(|u| {
                    let name = u.name.to_string();
                    let r = DescribeUserScramCredentialsResult::default().with_user(u.name);
                    if dups.contains(&name) {
                        return r.with_error_code(DUPLICATE_RESOURCE).with_error_message(Some(
                            s(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}")),
                        ));
                    }
                    match users.get(&name) {
                        Some(m) => r.with_credential_infos(info(m)),
                        None => r
                            .with_error_code(codes::RESOURCE_NOT_FOUND)
                            .with_error_message(Some(s(format!(
                                "Attempt to describe a user credential that does not exist: {name}"
                            )))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// The mechanism an alteration names, or the error for a nameless user or an unknown mechanism.
fn target(user: &str, mechanism: i8) -> Result<Hash, (i16, String)> {
    if user.is_empty() {
        return Err((UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into()));
    }
    Hash::of_type(mechanism).ok_or((UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism".into()))
}

/// Checks every change (Kafka's rules: a known mechanism, 4096..=16384 iterations, a non-empty
/// user, each user and mechanism once) and applies the valid ones: durably on a single node,
/// through the metadata quorum in a cluster.
pub async fn alter_scram(
    shard: &Rc<Shard>,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut errors: std::collections::BTreeMap<String, (i16, String)> = Default::default();
    let mut order: Vec<String> = Vec::new();
    let mut note = |user: &str| {
        if !order.iter().any(|u| u == user) {
            order.push(user.to_string());
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut dup_users = std::collections::BTreeSet::new();
    for (user, mech) in req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism)),
        )
    {
        note(&user);
        if !seen.insert((user.clone(), mech)) {
            dup_users.insert(user);
        }
    }
    for u in &dup_users {
        errors.insert(
            u.clone(),
            (
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request".into(),
            ),
        );
    }
    let mut changes = Vec::new();
    let mut fail = |user: &str, (code, m): (i16, String)| {
        errors.entry(user.to_string()).or_insert((code, m));
    };
    let existing = shard.shared.scram_users();
    for d in &req.deletions {
        let user = d.name.to_string();
        match target(&user, d.mechanism) {
            Err(e) => fail(&user, e),
            Ok(hash) if existing.get(&user).is_some_and(|m| m.contains_key(&hash)) => {
                changes.push(ScramChange::Delete { user, hash })
            }
            Ok(_) => fail(
                &user,
                (
                    codes::RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist".into(),
                ),
            ),
        }
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        match target(&user, u.mechanism) {
            Err(e) => fail(&user, e),
            Ok(_) if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&u.iterations) => {
                fail(
                    &user,
                    (
                        UNACCEPTABLE_CREDENTIAL,
                        format!(
                            "Iterations {} must be between {} and {}",
                            u.iterations,
                            scram::MIN_ITERATIONS,
                            scram::MAX_ITERATIONS
                        ),
                    ),
                )
            }
            Ok(_) if u.salt.is_empty() || u.salted_password.is_empty() => fail(
                &user,
                (
                    UNACCEPTABLE_CREDENTIAL,
                    "Salt and salted password must not be empty".into(),
                ),
            ),
            Ok(hash) => changes.push(ScramChange::Upsert {
                user,
                hash,
                credential: Credential::from_salted(
                    hash,
                    u.salt.to_vec(),
                    u.iterations,
                    &u.salted_password,
                ),
            }),
        }
    }
    // a user with any invalid change gets none of its changes applied
    changes.retain(|c| {
        let user = match c {
            ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. } => user,
        };
        !errors.contains_key(user)
    });
    if !changes.is_empty() {
        let applied = if shard.shared.is_clustered() {
            let cmd = crate::cluster::image::Command::AlterScramCredentials {
                changes: changes.clone(),
            };
            match shard.shared.cluster.get().cloned() {
                Some(member) => match glommio::executor()
                    .spawn_blocking(move || member.propose(cmd))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e),
                },
                None => Err("not in a cluster".into()),
            }
        } else {
            let changes = changes.clone();
            shard
                .shared
                .security
                .credentials
                .change_off_reactor(move |users| {
                    crate::security::credentials::apply(users, &changes)
                })
                .await
        };
        if let Err(e) = applied {
            for c in &changes {
                let (ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. }) = c;
                errors
                    .entry(user.clone())
                    .or_insert((codes::UNKNOWN_SERVER_ERROR, e.clone()));
            }
        } else {
            tracing::info!(changes = changes.len(), "SCRAM credentials altered");
        }
    }
    let results = order
        .into_iter()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default().with_user(s(user.as_str()));
            match errors.get(&user) {
                Some((code, m)) => r
                    .with_error_code(*code)
                    .with_error_message(Some(s(m.as_str()))),
                None => r,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
