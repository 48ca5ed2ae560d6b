//! Producing for the `sluice` CLI: records (key, value, headers) are partitioned like Kafka's
//! producers do (explicit partition, murmur2 of the key, otherwise a sticky partition that
//! moves on whenever a batch is sent or full), collected into one v2 batch per partition and
//! sent as Produce requests over a [`Pipeline`] (up to 5 in flight; one connection keeps the
//! order of appends per partition). Errors reported by the broker stop the producer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use serde::Serialize;
use sluice_engine::batch::{self as eb, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use thiserror::Error;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::IntoBytes;

use crate::admin::topic_name;
use crate::client::{error_name, Client, ClientError};
use crate::conn::{self, ConnError};
use crate::leaders::{backoff, retriable, Leaders, MAX_ATTEMPTS};
use crate::partitioner::partition_for_key;
use crate::pipeline::Pipeline;
use crate::records::Compression;

#[derive(Debug, Error)]
pub enum ProduceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: &'static str, reason: String },
    #[error("{0}")]
    Broker(String),
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub topic: String,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    pub compression: Compression,
    /// Uncompressed bytes after which a partition's batch is sent (Kafka's batch.size).
    pub batch_bytes: usize,
    /// Uncompressed bytes after which a request is sent.
    pub request_bytes: usize,
    pub max_in_flight: usize,
    pub timeout_ms: i32,
}

impl ProducerConfig {
    pub fn new(topic: &str) -> ProducerConfig {
        ProducerConfig {
            topic: topic.to_string(),
            acks: -1,
            compression: Compression::None,
            batch_bytes: 16 * 1024,
            request_bytes: 1024 * 1024,
            max_in_flight: 5,
            timeout_ms: 30_000,
        }
    }
}

/// What a finished producer did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProduceSummary {
    pub topic: String,
    pub records: u64,
    pub requests: u64,
    /// Records per partition.
    pub partitions: BTreeMap<i32, u64>,
}

/// One batch of a request, kept until it is acknowledged (a retry resends it).
#[derive(Debug, Clone)]
struct SentBatch {
    partition: i32,
    batch: Bytes,
    records: u64,
}

/// One Produce request in flight: its place in send order and its batches.
#[derive(Debug)]
struct Sent {
    seq: u64,
    batches: Vec<SentBatch>,
}

#[derive(Debug, Default)]
struct Acked {
    records: u64,
    error: Option<String>,
    /// Cluster mode: batches to send again to their partition's (new) leader, with their
    /// request's send order and why they failed.
    retry: Vec<(u64, SentBatch, String)>,
}

#[derive(Debug, Default)]
struct Pending {
    records: Vec<OutRecord>,
    bytes: usize,
}

/// Where requests go.
enum Route {
    /// One broker: every request over the bootstrap connection.
    Single {
        pipeline: Option<Pipeline<Sent>>,
        version: i16,
    },
    /// A cluster: each partition's batches to its leader, over one pipeline (and its Produce
    /// version) per broker.
    Cluster {
        leaders: Leaders,
        pipes: BTreeMap<i32, (Pipeline<Sent>, i16)>,
    },
}

/// A producer for one topic. In a cluster each partition's batches go to its leader; batches
/// refused because the leader moved (NOT_LEADER_OR_FOLLOWER and the like) or lost with a
/// leader's connection are sent again, in their original order, after a metadata refresh
/// (bounded: [`MAX_ATTEMPTS`]). A batch lost with a connection may have been written before:
/// like a non-idempotent Kafka producer with retries, it may then appear twice.
pub struct Producer {
    cfg: ProducerConfig,
    partitions: u32,
    route: Route,
    acked: Arc<Mutex<Acked>>,
    pending: BTreeMap<i32, Pending>,
    pending_bytes: usize,
    sticky: u32,
    seq: u64,
    summary: ProduceSummary,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn random_start(partitions: u32) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(16)) % partitions
}

fn record_size(r: &OutRecord) -> usize {
    let h: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + h + 25
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            eb::write_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => eb::write_varint(out, -1),
    }
}

/// Encodes `records` as one v2 batch (base offset 0, no producer id) with a valid CRC-32C.
pub fn encode_batch(
    records: &[OutRecord],
    compression: Compression,
) -> Result<Bytes, ProduceError> {
    let now = now_ms();
    let ts: Vec<i64> = records.iter().map(|r| r.timestamp.unwrap_or(now)).collect();
    let base_ts = ts.first().copied().unwrap_or(now);
    let max_ts = ts.iter().copied().max().unwrap_or(base_ts);
    let mut body = Vec::with_capacity(records.iter().map(record_size).sum());
    let mut rec = Vec::with_capacity(256);
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        eb::write_varint(&mut rec, ts[i] - base_ts);
        eb::write_varint(&mut rec, i as i64);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        eb::write_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, v.as_deref());
        }
        eb::write_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.resize(HEADER_LEN, 0);
    crate::records::compress_into(compression, &body, &mut out).map_err(|e| {
        ProduceError::Compress {
            codec: compression.name(),
            reason: e.to_string(),
        }
    })?;
    let count = records.len() as i32;
    let header = BatchHeader {
        base_offset: I64::new(0),
        batch_length: I32::new((out.len() - LOG_OVERHEAD) as i32),
        partition_leader_epoch: I32::new(-1),
        magic: 2,
        crc: U32::new(0),
        attributes: I16::new(compression.attribute()),
        last_offset_delta: I32::new(count - 1),
        base_timestamp: I64::new(base_ts),
        max_timestamp: I64::new(max_ts),
        producer_id: I64::new(-1),
        producer_epoch: I16::new(-1),
        base_sequence: I32::new(-1),
        record_count: I32::new(count),
    };
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    let crc = eb::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// The response handler of one pipeline: counts acknowledged records, queues batches for a
/// retry (`retry`: cluster mode) or records the first error.
fn handler(
    acked: Arc<Mutex<Acked>>,
    topic: String,
    version: i16,
    retry: bool,
) -> impl FnMut(Sent, Result<Bytes, ConnError>) + Send + 'static {
    move |sent: Sent, resp: Result<Bytes, ConnError>| {
        let mut st = acked.lock().unwrap_or_else(|e| e.into_inner());
        let body = match resp {
            Ok(b) => b,
            Err(e) if retry => {
                let why = format!("producing to {topic}: {e}");
                for b in sent.batches {
                    st.retry.push((sent.seq, b, why.clone()));
                }
                return;
            }
            Err(e) => {
                st.error
                    .get_or_insert_with(|| format!("producing to {topic}: {e}"));
                return;
            }
        };
        if body.is_empty() {
            // acks=0: no response
            st.records += sent.batches.iter().map(|b| b.records).sum::<u64>();
            return;
        }
        let resp: ProduceResponse = match conn::decode_body(ApiKey::Produce, version, body) {
            Ok(r) => r,
            Err(e) => {
                st.error
                    .get_or_insert_with(|| format!("producing to {topic}: {e}"));
                return;
            }
        };
        let mut codes: BTreeMap<i32, (i16, Option<String>)> = BTreeMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                codes.insert(
                    p.index,
                    (
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.to_string()),
                    ),
                );
            }
        }
        for b in sent.batches {
            let (code, message) = codes.remove(&b.partition).unwrap_or((0, None));
            if code == 0 {
                if st.error.is_none() {
                    st.records += b.records;
                }
                continue;
            }
            let msg = message.map(|m| format!(": {m}")).unwrap_or_default();
            let why = format!(
                "producing to {topic}-{}: {} (error code {code}){msg}",
                b.partition,
                error_name(code)
            );
            if retry && retriable(code) {
                st.retry.push((sent.seq, b, why));
            } else {
                st.error.get_or_insert(why);
            }
        }
    }
}

/// A Produce request carrying `batches`.
fn request(cfg: &ProducerConfig, batches: &[SentBatch]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(cfg.acks)
        .with_timeout_ms(cfg.timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(&cfg.topic))
            .with_partition_data(
                batches
                    .iter()
                    .map(|b| {
                        PartitionProduceData::default()
                            .with_index(b.partition)
                            .with_records(Some(b.batch.clone()))
                    })
                    .collect(),
            )])
}

impl Producer {
    /// Takes over `client`'s connection. `partitions`: the topic's partition count. When the
    /// cluster has more than one broker, `client` becomes the metadata connection and the
    /// batches go to the partitions' leaders.
    pub fn new(
        mut client: Client,
        cfg: ProducerConfig,
        partitions: u32,
    ) -> Result<Producer, ProduceError> {
        let version = client.versions().get(ApiKey::Produce)?;
        let acked = Arc::new(Mutex::new(Acked::default()));
        let (brokers, _) = client.metadata_with_brokers(Some(&[&cfg.topic]))?;
        let route = if brokers.len() <= 1 {
            let (conn, _) = client.into_parts();
            let h = handler(acked.clone(), cfg.topic.clone(), version, false);
            Route::Single {
                pipeline: Some(Pipeline::start(conn, cfg.max_in_flight, h)?),
                version,
            }
        } else {
            let id = client.connection().client_id().to_string();
            Route::Cluster {
                leaders: Leaders::new(client, &cfg.topic, &id)?,
                pipes: BTreeMap::new(),
            }
        };
        Ok(Producer {
            summary: ProduceSummary {
                topic: cfg.topic.clone(),
                ..Default::default()
            },
            cfg,
            partitions: partitions.max(1),
            route,
            acked,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            // like Kafka's producers, start at a random partition so that short runs spread
            sticky: random_start(partitions.max(1)),
            seq: 0,
        })
    }

    /// The first error the broker reported, if any.
    pub fn error(&self) -> Option<String> {
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .clone()
    }

    fn fail_if_error(&self) -> Result<(), ProduceError> {
        match self.error() {
            Some(e) => Err(ProduceError::Broker(e)),
            None => Ok(()),
        }
    }

    fn has_retries(&self) -> bool {
        !self
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retry
            .is_empty()
    }

    /// Queues a record for `partition` (or the partitioner's choice when `None`); sends a
    /// request when batches fill up.
    pub fn send(&mut self, rec: OutRecord, partition: Option<i32>) -> Result<(), ProduceError> {
        let sticky = partition.is_none() && rec.key.is_none();
        let p = match (partition, rec.key.as_deref()) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, self.partitions) as i32,
            (None, None) => self.sticky as i32,
        };
        let size = record_size(&rec);
        let full = self
            .pending
            .get(&p)
            .is_some_and(|b| !b.records.is_empty() && b.bytes + size > self.cfg.batch_bytes);
        if full || self.pending_bytes + size > self.cfg.request_bytes {
            self.flush()?;
        }
        let b = self.pending.entry(p).or_default();
        b.records.push(rec);
        b.bytes += size;
        self.pending_bytes += size;
        if sticky && b.bytes >= self.cfg.batch_bytes {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
        Ok(())
    }

    /// Sends everything queued as one Produce request (one batch per partition; in a cluster,
    /// one request per leader).
    pub fn flush(&mut self) -> Result<(), ProduceError> {
        self.fail_if_error()?;
        if self.has_retries() {
            self.recover()?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut batches = Vec::with_capacity(pending.len());
        let mut records = 0u64;
        for (p, b) in pending {
            let n = b.records.len() as u64;
            records += n;
            *self.summary.partitions.entry(p).or_default() += n;
            batches.push(SentBatch {
                partition: p,
                batch: encode_batch(&b.records, self.cfg.compression)?,
                records: n,
            });
        }
        self.seq += 1;
        self.dispatch(self.seq, batches)?;
        self.summary.records += records;
        self.summary.requests += 1;
        // the sticky partition moves on with every batch sent
        self.sticky = (self.sticky + 1) % self.partitions;
        Ok(())
    }

    /// Sends the batches of request `seq`: over the one connection, or to each partition's
    /// leader (batches without a reachable leader are queued for a retry).
    fn dispatch(&mut self, seq: u64, batches: Vec<SentBatch>) -> Result<(), ProduceError> {
        let expects = self.cfg.acks != 0;
        let (leaders, pipes) = match &mut self.route {
            Route::Single { pipeline, version } => {
                let req = request(&self.cfg, &batches);
                let pipeline = pipeline.as_mut().ok_or(ConnError::Closed)?;
                pipeline.send(
                    ApiKey::Produce,
                    *version,
                    &req,
                    Sent { seq, batches },
                    expects,
                )?;
                return Ok(());
            }
            Route::Cluster { leaders, pipes } => (leaders, pipes),
        };
        let topic = &self.cfg.topic;
        let mut by_leader: BTreeMap<i32, Vec<SentBatch>> = BTreeMap::new();
        for b in batches {
            by_leader
                .entry(leaders.leader(b.partition).unwrap_or(-1))
                .or_default()
                .push(b);
        }
        let mut unsent: Vec<(SentBatch, String)> = Vec::new();
        for (leader, bs) in by_leader {
            if leader < 0 {
                for b in bs {
                    let why = format!("producing to {topic}-{}: no leader", b.partition);
                    unsent.push((b, why));
                }
                continue;
            }
            let (pipe, version) = match pipes.entry(leader) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let opened = leaders.connect(leader).and_then(|c| {
                        let version = c.versions().get(ApiKey::Produce)?;
                        Ok((c, version))
                    });
                    match opened {
                        Ok((c, version)) => {
                            let (conn, _) = c.into_parts();
                            let h = handler(self.acked.clone(), topic.clone(), version, true);
                            let pipe = Pipeline::start(conn, self.cfg.max_in_flight, h)?;
                            slot.insert((pipe, version))
                        }
                        Err(e) => {
                            let why = format!("producing to {topic}: broker {leader}: {e}");
                            unsent.extend(bs.into_iter().map(|b| (b, why.clone())));
                            continue;
                        }
                    }
                }
            };
            let req = request(&self.cfg, &bs);
            let sent = Sent {
                seq,
                batches: bs.clone(),
            };
            if let Err(e) = pipe.send(ApiKey::Produce, *version, &req, sent, expects) {
                // the batches were not written out: send them again
                let why = format!("producing to {topic}: broker {leader}: {e}");
                unsent.extend(bs.into_iter().map(|b| (b, why.clone())));
                if let Some((p, _)) = pipes.remove(&leader) {
                    let _ = p.finish();
                }
            }
        }
        if !unsent.is_empty() {
            let mut st = self.acked.lock().unwrap_or_else(|e| e.into_inner());
            st.retry
                .extend(unsent.into_iter().map(|(b, why)| (seq, b, why)));
        }
        Ok(())
    }

    /// Waits for every request in flight, then sends the batches refused by a moved leader
    /// (or lost with a connection) again, oldest first, after a metadata refresh; repeats
    /// until none is left or the attempts run out.
    fn recover(&mut self) -> Result<(), ProduceError> {
        let mut attempt = 0;
        loop {
            self.drain();
            self.fail_if_error()?;
            let mut retry =
                std::mem::take(&mut self.acked.lock().unwrap_or_else(|e| e.into_inner()).retry);
            if retry.is_empty() {
                return Ok(());
            }
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                let why = retry.pop().map(|(_, _, w)| w).unwrap_or_default();
                return Err(ProduceError::Broker(format!(
                    "{why} (gave up after {attempt} attempts)"
                )));
            }
            std::thread::sleep(backoff(attempt));
            if let Route::Cluster { leaders, .. } = &mut self.route {
                // a failed refresh keeps the old leaders: the next attempt tries again
                let _ = leaders.refresh();
            }
            retry.sort_by_key(|(seq, b, _)| (*seq, b.partition));
            let mut i = 0;
            while i < retry.len() {
                let seq = retry[i].0;
                let mut batches = Vec::new();
                while i < retry.len() && retry[i].0 == seq {
                    batches.push(retry[i].1.clone());
                    i += 1;
                }
                self.dispatch(seq, batches)?;
            }
        }
    }

    /// Cluster mode: waits for the answers of every request in flight (connections are opened
    /// again when needed).
    fn drain(&mut self) {
        if let Route::Cluster { pipes, .. } = &mut self.route {
            for (_, (p, _)) in std::mem::take(pipes) {
                // a failed connection already queued its requests for a retry
                let _ = p.finish();
            }
        }
    }

    /// Sends what is queued, waits for every answer and reports what was produced.
    pub fn finish(mut self) -> Result<ProduceSummary, ProduceError> {
        let flushed = self.flush();
        let finished = match &mut self.route {
            Route::Single { pipeline, .. } => match pipeline.take() {
                Some(p) => p.finish(),
                None => Ok(()),
            },
            Route::Cluster { .. } => {
                self.drain();
                Ok(())
            }
        };
        flushed?;
        if self.has_retries() {
            self.recover()?;
            self.drain();
        }
        self.fail_if_error()?;
        finished?;
        Ok(std::mem::take(&mut self.summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::decode_batches;

    #[test]
    fn batches_with_headers_validate_and_decode() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let recs: Vec<OutRecord> = (0..20)
                .map(|i| OutRecord {
                    key: (i % 2 == 0).then(|| format!("k{i}").into_bytes()),
                    value: Some(format!("value {i}").into_bytes()),
                    headers: vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)],
                    timestamp: Some(1000 + i),
                })
                .collect();
            let b = encode_batch(&recs, c).expect("encode");
            let h = eb::validate(&b).expect("valid");
            assert_eq!(h.record_count.get(), 20);
            assert_eq!(h.max_timestamp.get(), 1019);
            let batches = decode_batches(&b).expect("decode");
            let got: Vec<_> = batches[0]
                .iter()
                .collect::<Result<_, _>>()
                .expect("records");
            assert_eq!(got.len(), 20);
            assert_eq!(got[3].value, Some(&b"value 3"[..]));
            assert_eq!(got[4].key, Some(&b"k4"[..]));
            assert_eq!(got[3].key, None);
            assert_eq!(got[5].timestamp, 1005);
            assert_eq!(
                got[0].headers(),
                vec![(&b"h"[..], Some(&b"x"[..])), (&b"n"[..], None)]
            );
        }
    }
}
