//! Broker metrics. Data path: the hot paths bump plain `Cell` counters owned by their shard
//! ([`ShardMetrics`] on every [`Shard`](crate::shard::Shard): requests, errors and latency per
//! API in `api::handle`, connection and network bytes in `conn`; the engine's
//! `StorageStats`/`LogStats` for writes, fdatasyncs, the hot tail and each log). Nothing on
//! the data path is shared between shards: a scrape ([`snapshot::gather`]) runs a closure on
//! every shard over the channel mesh, each returns a `Send` snapshot of its own numbers, and
//! the scraping shard sums them ([`snapshot::BrokerSnapshot`]) and renders them
//! ([`prometheus::render`], the JSON endpoints of `http`).

pub mod errors;
pub mod prometheus;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use sluice_engine::stats::Histogram;

use crate::shard::TopicPartition;

/// API keys below this get their own counters (Kafka's keys are 0..=~90).
const MAX_API_KEY: usize = 128;

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

#[derive(Default)]
struct ApiCounters {
    requests: Cell<u64>,
    /// (error code, count) of the non-zero codes the responses carried.
    errors: RefCell<Vec<(i16, u64)>>,
    latency: Histogram,
}

/// The counters of one shard. Owned by the shard; read only through [`Self::snapshot`].
pub struct ShardMetrics {
    apis: Vec<ApiCounters>,
    connections_open: Cell<u64>,
    connections_accepted: Cell<u64>,
    /// Request handlers that panicked (their connections were closed).
    handler_panics: Cell<u64>,
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    fetch_sendfile_bytes: Cell<u64>,
    fetch_copied_bytes: Cell<u64>,
    /// Record bytes fetch responses carried to consumers, per partition (counted where the
    /// response is put together, on the connection's shard).
    bytes_out: RefCell<HashMap<TopicPartition, u64>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..MAX_API_KEY).map(|_| ApiCounters::default()).collect(),
            connections_open: Cell::new(0),
            connections_accepted: Cell::new(0),
            handler_panics: Cell::new(0),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            fetch_sendfile_bytes: Cell::new(0),
            fetch_copied_bytes: Cell::new(0),
            bytes_out: RefCell::new(HashMap::new()),
        }
    }
}

impl ShardMetrics {
    fn api(&self, key: ApiKey) -> Option<&ApiCounters> {
        self.apis.get(key as i16 as usize)
    }

    /// One request of `key` answered after `took` (or failed, closing its connection).
    pub fn request(&self, key: ApiKey, took: Duration) {
        if let Some(a) = self.api(key) {
            bump(&a.requests, 1);
            a.latency.observe(took);
        }
    }

    /// A non-zero error code in a response of `key` (each partition's counts once).
    pub fn error(&self, key: ApiKey, code: i16) {
        if code == 0 {
            return;
        }
        if let Some(a) = self.api(key) {
            let mut e = a.errors.borrow_mut();
            match e.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => e.push((code, 1)),
            }
        }
    }

    pub fn connection_opened(&self) {
        bump(&self.connections_accepted, 1);
        bump(&self.connections_open, 1);
    }

    pub fn handler_panicked(&self) {
        bump(&self.handler_panics, 1);
    }

    pub fn connection_closed(&self) {
        self.connections_open
            .set(self.connections_open.get().saturating_sub(1));
    }

    pub fn received(&self, bytes: u64) {
        bump(&self.bytes_received, bytes);
    }

    pub fn sent(&self, bytes: u64) {
        bump(&self.bytes_sent, bytes);
    }

    /// A segment file range of a fetch response went out with sendfile(2) or was copied
    /// through the stream (TLS, or zero copy turned off).
    pub fn fetch_file_bytes(&self, bytes: u64, sendfile: bool) {
        bump(
            if sendfile {
                &self.fetch_sendfile_bytes
            } else {
                &self.fetch_copied_bytes
            },
            bytes,
        );
    }

    pub fn bytes_out(&self, topic: &std::sync::Arc<str>, partition: i32, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut m = self.bytes_out.borrow_mut();
        let key = TopicPartition {
            topic: topic.clone(),
            partition,
        };
        *m.entry(key).or_default() += bytes;
    }

    /// This shard's counters now.
    pub fn snapshot(&self) -> snapshot::ShardCounters {
        let apis = self
            .apis
            .iter()
            .enumerate()
            .filter(|(_, a)| a.requests.get() > 0 || !a.errors.borrow().is_empty())
            .filter_map(|(k, a)| {
                let key = ApiKey::try_from(k as i16).ok()?;
                Some((
                    key,
                    snapshot::ApiSnapshot {
                        requests: a.requests.get(),
                        errors: a.errors.borrow().clone(),
                        latency: a.latency.snapshot(),
                    },
                ))
            })
            .collect();
        snapshot::ShardCounters {
            apis,
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_accepted.get(),
            handler_panics: self.handler_panics.get(),
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
            fetch_sendfile_bytes: self.fetch_sendfile_bytes.get(),
            fetch_copied_bytes: self.fetch_copied_bytes.get(),
            bytes_out: self
                .bytes_out
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`), from kafka-protocol's variant.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(kafka_protocol::ResponseError::Unknown(c)) => format!("UNKNOWN_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_follow_kafka() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
    }

    #[test]
    fn counts_requests_and_errors_per_api() {
        let m = ShardMetrics::default();
        m.request(ApiKey::Produce, Duration::from_micros(300));
        m.request(ApiKey::Produce, Duration::from_millis(2));
        m.error(ApiKey::Produce, 6);
        m.error(ApiKey::Produce, 6);
        m.error(ApiKey::Produce, 0);
        m.error(ApiKey::Produce, 10);
        let s = m.snapshot();
        let (_, p) = s
            .apis
            .iter()
            .find(|(k, _)| *k == ApiKey::Produce)
            .expect("produce counted");
        assert_eq!(p.requests, 2);
        assert_eq!(p.latency.count(), 2);
        assert_eq!(p.errors, vec![(6, 2), (10, 1)]);
        assert_eq!(s.apis.len(), 1, "idle APIs are left out");
    }
}
