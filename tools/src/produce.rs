//! Producing for the `sluice` CLI: records (key, value, headers) are partitioned like Kafka's
//! producers do (explicit partition, murmur2 of the key, otherwise a sticky partition that
//! moves on whenever a batch is sent or full), collected into one v2 batch per partition and
//! sent as Produce requests over a [`Pipeline`] (up to 5 in flight; one connection keeps the
//! order of appends per partition). Errors reported by the broker stop the producer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
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

#[derive(Debug, Default)]
struct Acked {
    records: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Pending {
    records: Vec<OutRecord>,
    bytes: usize,
}

/// A producer for one topic.
pub struct Producer {
    cfg: ProducerConfig,
    partitions: u32,
    version: i16,
    pipeline: Option<Pipeline<u64>>,
    acked: Arc<Mutex<Acked>>,
    pending: BTreeMap<i32, Pending>,
    pending_bytes: usize,
    sticky: u32,
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
    let put = |b: &mut BytesMut| {
        b.extend_from_slice(&body);
        Ok(())
    };
    let r = match compression {
        Compression::None => put(&mut out),
        Compression::Gzip => Gzip::compress(&mut out, put),
        Compression::Snappy => Snappy::compress(&mut out, put),
        Compression::Lz4 => Lz4::compress(&mut out, put),
        Compression::Zstd => Zstd::compress(&mut out, put),
    };
    r.map_err(|e| ProduceError::Compress {
        codec: compression.name(),
        reason: e.to_string(),
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

impl Producer {
    /// Takes over `client`'s connection. `partitions`: the topic's partition count.
    pub fn new(
        client: Client,
        cfg: ProducerConfig,
        partitions: u32,
    ) -> Result<Producer, ProduceError> {
        let version = client.versions().get(ApiKey::Produce)?;
        let (conn, _) = client.into_parts();
        let acked = Arc::new(Mutex::new(Acked::default()));
        let topic = cfg.topic.clone();
        let state = acked.clone();
        let handler = move |records: u64, resp: Result<Bytes, ConnError>| {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let body = match resp {
                Ok(b) => b,
                Err(e) => {
                    st.error
                        .get_or_insert_with(|| format!("producing to {topic}: {e}"));
                    return;
                }
            };
            if body.is_empty() {
                st.records += records; // acks=0: no response
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
            for t in &resp.responses {
                for p in &t.partition_responses {
                    if p.error_code != 0 {
                        let msg = p
                            .error_message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default();
                        st.error.get_or_insert_with(|| {
                            format!(
                                "producing to {}-{}: {} (error code {}){msg}",
                                t.name.0,
                                p.index,
                                error_name(p.error_code),
                                p.error_code
                            )
                        });
                    }
                }
            }
            if st.error.is_none() {
                st.records += records;
            }
        };
        let pipeline = Pipeline::start(conn, cfg.max_in_flight, handler)?;
        Ok(Producer {
            summary: ProduceSummary {
                topic: cfg.topic.clone(),
                ..Default::default()
            },
            cfg,
            partitions: partitions.max(1),
            version,
            pipeline: Some(pipeline),
            acked,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            // like Kafka's producers, start at a random partition so that short runs spread
            sticky: random_start(partitions.max(1)),
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

    /// Sends everything queued as one Produce request (one batch per partition).
    pub fn flush(&mut self) -> Result<(), ProduceError> {
        self.fail_if_error()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut data = Vec::with_capacity(pending.len());
        let mut records = 0u64;
        for (p, b) in pending {
            let n = b.records.len() as u64;
            records += n;
            *self.summary.partitions.entry(p).or_default() += n;
            data.push(
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(encode_batch(&b.records, self.cfg.compression)?)),
            );
        }
        let req = ProduceRequest::default()
            .with_acks(self.cfg.acks)
            .with_timeout_ms(self.cfg.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(&self.cfg.topic))
                .with_partition_data(data)]);
        let pipeline = self.pipeline.as_mut().ok_or(ConnError::Closed)?;
        pipeline.send(
            ApiKey::Produce,
            self.version,
            &req,
            records,
            self.cfg.acks != 0,
        )?;
        self.summary.records += records;
        self.summary.requests += 1;
        // the sticky partition moves on with every batch sent
        self.sticky = (self.sticky + 1) % self.partitions;
        Ok(())
    }

    /// Sends what is queued, waits for every answer and reports what was produced.
    pub fn finish(mut self) -> Result<ProduceSummary, ProduceError> {
        let flushed = self.flush();
        let finished = match self.pipeline.take() {
            Some(p) => p.finish(),
            None => Ok(()),
        };
        flushed?;
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
