//! The HTTP endpoints. Reads: `/metrics` (Prometheus / OpenMetrics), `/v1/health`,
//! `/v1/status`, `/v1/snapshot` (everything the console shows, as JSON) and the console's
//! assets (built into the binary). Writes, only with `sluice.http.console.write.enable`:
//! `POST /v1/topics` and `POST /v1/topics/<name>/delete-records`, run as Kafka requests
//! through the authorizer (HTTP Basic credentials checked like SASL/PLAIN when ACLs are on).

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use kafka_protocol::messages::{
    create_topics_request, delete_records_request, CreateTopicsRequest, DeleteRecordsRequest,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{self, prometheus, snapshot};
use crate::security::sasl::Credentials;
use crate::shard::Shard;

type Resp = Response<Full<Bytes>>;

/// Largest request body the write endpoints read.
const MAX_BODY: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_resp(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    match serde_json::to_vec(v) {
        Ok(b) => respond(status, "application/json", b),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("encoding JSON: {e}\n"),
        ),
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json_resp(status, &json!({ "error": msg.into() }))
}

pub async fn route(shard: &Rc<Shard>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/" | "/index.html") => {
            respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        (Method::GET | Method::HEAD, "/console.js") => {
            respond(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS)
        }
        (Method::GET | Method::HEAD, "/console.css") => {
            respond(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS)
        }
        (Method::GET | Method::HEAD, "/metrics") => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let om = prometheus::wants_openmetrics(accept);
            let snap = snapshot::gather(shard).await;
            match prometheus::render(snap, om) {
                Ok(text) => respond(
                    StatusCode::OK,
                    if om {
                        prometheus::OPENMETRICS_TEXT
                    } else {
                        prometheus::PROMETHEUS_TEXT
                    },
                    text,
                ),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rendering metrics failed",
                ),
            }
        }
        (Method::GET | Method::HEAD, "/v1/health") => health(shard).await,
        (Method::GET | Method::HEAD, "/v1/status") => {
            let snap = snapshot::gather(shard).await;
            json_resp(StatusCode::OK, &status(shard, &snap))
        }
        (Method::GET | Method::HEAD, "/v1/snapshot") => {
            let snap = snapshot::gather(shard).await;
            json_resp(
                StatusCode::OK,
                &json!({
                    "status": status(shard, &snap),
                    "latency_bounds_seconds": sluice_engine::stats::LATENCY_BOUNDS_S,
                    "snapshot": snap,
                }),
            )
        }
        (Method::POST, "/v1/topics") => write(shard, req, Write::CreateTopic).await,
        (Method::POST, p) if p.starts_with("/v1/topics/") && p.ends_with("/delete-records") => {
            let name = &p["/v1/topics/".len()..p.len() - "/delete-records".len()];
            let name = percent_decode(name);
            write(shard, req, Write::DeleteRecords(name)).await
        }
        (
            _,
            "/" | "/index.html" | "/console.js" | "/console.css" | "/metrics" | "/v1/health"
            | "/v1/status" | "/v1/snapshot" | "/v1/topics",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} not allowed here"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Decodes `%XX` escapes of a path segment (topic names are `[a-zA-Z0-9._-]`, so this
/// only matters for bad input, which the topic check then refuses).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(shard: &Shard, snap: &snapshot::BrokerSnapshot) -> serde_json::Value {
    let shared = &shard.shared;
    let listeners: Vec<_> = (0..shared.listeners.len())
        .map(|i| {
            let (host, port) = shared.advertised(i);
            json!({
                "name": shared.listeners[i].name,
                "protocol": shared.listeners[i].protocol.name(),
                "host": host,
                "port": port,
            })
        })
        .collect();
    json!({
        "version": snap.version,
        "node_id": snap.node_id,
        "cluster_id": shared.catalog.read().cluster_id.clone(),
        "clustered": shared.is_clustered(),
        "uptime_seconds": snap.uptime_seconds,
        "shards": snap.shards,
        "topics": snap.topics(),
        "partitions": snap.partitions.len(),
        "bytes_stored": snap.bytes_stored(),
        "listeners": listeners,
        "console_write": shared.config.http_console_write,
        "authorizer": shared.config.authorizer,
    })
}

/// Ready when every shard answers, the broker is not stopping, no partition is poisoned and
/// (clustered) this broker is registered, unfenced, in a quorum with a leader.
async fn health(shard: &Rc<Shard>) -> Resp {
    let snap = snapshot::gather(shard).await;
    let mut reasons = Vec::new();
    if shard.shared.is_stopping() {
        reasons.push("the broker is stopping".to_string());
    }
    if snap.poisoned_partitions > 0 {
        reasons.push(format!(
            "{} partition(s) refuse writes after an I/O error (KAFKA_STORAGE_ERROR)",
            snap.poisoned_partitions
        ));
    }
    if let Some(img) = shard.shared.image() {
        let me = shard.shared.config.node_id;
        match img.brokers.get(&me) {
            None => reasons.push("not registered with the controller yet".into()),
            Some(b) if b.fenced => reasons.push("fenced by the controller".into()),
            Some(_) => {}
        }
    }
    let answered = shard.nr;
    if reasons.is_empty() {
        json_resp(
            StatusCode::OK,
            &json!({ "status": "ready", "shards": answered }),
        )
    } else {
        json_resp(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "not ready", "reason": reasons.join("; ") }),
        )
    }
}

enum Write {
    CreateTopic,
    DeleteRecords(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default = "minus_one")]
    partitions: i32,
    #[serde(default = "minus_one_i16")]
    replication_factor: i16,
    #[serde(default)]
    configs: std::collections::BTreeMap<String, String>,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_i16() -> i16 {
    -1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRecords {
    partition: i32,
    /// Records below this offset go (-1: up to the high watermark).
    before_offset: i64,
}

async fn write(shard: &Rc<Shard>, req: Request<Incoming>, what: Write) -> Resp {
    let shared = &shard.shared;
    if !shared.config.http_console_write {
        return error(
            StatusCode::FORBIDDEN,
            "console writes are off (set sluice.http.console.write.enable=true)",
        );
    }
    let principal = match principal(shard, &req) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let peer = "127.0.0.1:0".to_string();
    let session = crate::conn::Session::new(Rc::from(peer.as_str()), 0, &principal, false);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let kafka = match what {
        Write::CreateTopic => {
            let t: CreateTopic = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
            };
            let configs = t
                .configs
                .into_iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k))
                        .with_value(Some(StrBytes::from_string(v)))
                })
                .collect();
            RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![create_topics_request::CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.name)))
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_configs(configs)]),
            )
        }
        Write::DeleteRecords(topic) => {
            let d: DeleteRecords = match serde_json::from_slice(&body) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
            };
            RequestKind::DeleteRecords(
                DeleteRecordsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(d.partition)
                                .with_offset(d.before_offset),
                        ])]),
            )
        }
    };
    let (code, message, extra) = match crate::api::serve_as(shard, &session, kafka).await {
        Some(ResponseKind::CreateTopics(r)) => match r.topics.first() {
            Some(t) => (
                t.error_code,
                t.error_message.as_ref().map(|m| m.to_string()),
                json!({ "partitions": t.num_partitions }),
            ),
            None => (-1, None, json!({})),
        },
        Some(ResponseKind::DeleteRecords(r)) => {
            match r.topics.first().and_then(|t| t.partitions.first()) {
                Some(p) => (
                    p.error_code,
                    None,
                    json!({ "low_watermark": p.low_watermark }),
                ),
                None => (-1, None, json!({})),
            }
        }
        _ => (-1, None, json!({})),
    };
    let status = match code {
        0 => StatusCode::OK,
        29..=31 => StatusCode::FORBIDDEN,
        -1 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    json_resp(
        status,
        &json!({
            "error_code": code,
            "error": metrics::error_name(code),
            "message": message,
            "result": extra,
        }),
    )
}

/// Who a write runs as: with ACLs on, the user of HTTP Basic credentials (checked as
/// SASL/PLAIN would check them); without, `User:ANONYMOUS`.
fn principal(shard: &Shard, req: &Request<Incoming>) -> Result<String, Box<Resp>> {
    let shared = &shard.shared;
    let anonymous = crate::security::principal::ANONYMOUS.to_string();
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(h) = header else {
        if shared.config.authorizer {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "ACLs are on: give HTTP Basic credentials of a SASL user",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sluice\""),
            );
            return Err(Box::new(r));
        }
        return Ok(anonymous);
    };
    use base64::Engine;
    let decoded = h
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "malformed Basic credentials",
        )));
    };
    if !shared.check_plain(user, pass) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "authentication failed",
        )));
    }
    Ok(format!("User:{user}"))
}
