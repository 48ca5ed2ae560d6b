//! Idempotent and transactional producing for loadgen: InitProducerId, AddPartitionsToTxn and
//! EndTxn on a blocking connection, and stamping a finished batch with the producer id, epoch,
//! base sequence (and the transactional attribute bit).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::{ATTR_TRANSACTIONAL, CRC_START, HEADER_LEN};
use sluice_tools::client::{error_name, Versions};
use sluice_tools::conn::Connection;

/// Highest versions loadgen uses. InitProducerId v5 and EndTxn v5 belong to transaction
/// protocol v2 (KIP-890 part 2); AddPartitionsToTxn v4+ is the batched broker-to-broker form
/// (clients send v3 and below).
const INIT_PRODUCER_ID_MAX: i16 = 4;
const ADD_PARTITIONS_MAX: i16 = 3;
const END_TXN_MAX: i16 = 4;

/// Tries of a coordinator request that keeps getting a retriable error (about 10 s in all).
const RETRIES: u32 = 120;

/// A producer id and epoch from InitProducerId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
}

/// The version of `api` to use: the broker's highest, at most `max`.
pub fn pick_version(versions: &Versions, api: ApiKey, max: i16) -> Result<i16, String> {
    let (min, broker_max) = versions
        .broker_range(api)
        .ok_or_else(|| format!("the broker does not support {api:?}"))?;
    let v = broker_max.min(max);
    if v < min {
        return Err(format!(
            "the broker supports {api:?} from v{min} only; loadgen speaks up to v{max}"
        ));
    }
    Ok(v)
}

/// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
/// CONCURRENT_TRANSACTIONS: Kafka's producer retries these.
fn retriable(code: i16) -> bool {
    matches!(code, 14 | 15 | 16 | 51)
}

/// Runs `call` (which returns an error code and a value) until the code is not retriable.
fn with_retries<T>(
    what: &str,
    mut call: impl FnMut() -> Result<(i16, T), String>,
) -> Result<T, String> {
    let mut backoff = Duration::from_millis(1);
    let mut last = 0;
    for _ in 0..RETRIES {
        let (code, v) = call()?;
        if code == 0 {
            return Ok(v);
        }
        if !retriable(code) {
            return Err(format!("{what}: {} (error code {code})", error_name(code)));
        }
        last = code;
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    Err(format!(
        "{what}: still {} after {RETRIES} tries",
        error_name(last)
    ))
}

/// InitProducerId: a new producer id and epoch (idempotent when `transactional_id` is None).
pub fn init_producer_id(
    conn: &mut Connection,
    versions: &Versions,
    transactional_id: Option<&str>,
    transaction_timeout_ms: i32,
) -> Result<Producer, String> {
    let v = pick_version(versions, ApiKey::InitProducerId, INIT_PRODUCER_ID_MAX)?;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
        )
        .with_transaction_timeout_ms(transaction_timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    with_retries("InitProducerId", || {
        let r: InitProducerIdResponse = conn
            .call(ApiKey::InitProducerId, v, &req)
            .map_err(|e| format!("InitProducerId: {e}"))?;
        Ok((
            r.error_code,
            Producer {
                id: r.producer_id.0,
                epoch: r.producer_epoch,
            },
        ))
    })
}

/// A transactional producer's connection to its transaction coordinator (the bootstrap broker,
/// which is the whole cluster for sluice; FindCoordinator is skipped).
pub struct TxnClient {
    conn: Connection,
    add_version: i16,
    end_version: i16,
    id: TransactionalId,
    producer: Producer,
}

impl TxnClient {
    /// Connects and runs InitProducerId for `transactional_id`.
    pub fn connect(
        dial: &crate::dial::Dial,
        addr: std::net::SocketAddr,
        client_id: &str,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<TxnClient, String> {
        let client = dial.connect(addr, client_id).map_err(|e| e.to_string())?;
        let (mut conn, versions) = client.into_parts();
        let add_version = pick_version(&versions, ApiKey::AddPartitionsToTxn, ADD_PARTITIONS_MAX)?;
        let end_version = pick_version(&versions, ApiKey::EndTxn, END_TXN_MAX)?;
        let producer = init_producer_id(
            &mut conn,
            &versions,
            Some(transactional_id),
            transaction_timeout_ms,
        )?;
        Ok(TxnClient {
            conn,
            add_version,
            end_version,
            id: TransactionalId(StrBytes::from_string(transactional_id.to_string())),
            producer,
        })
    }

    pub fn producer(&self) -> Producer {
        self.producer
    }

    pub fn transactional_id(&self) -> &TransactionalId {
        &self.id
    }

    /// AddPartitionsToTxn (v3 or below: one transaction in the top-level fields).
    pub fn add_partitions(&mut self, topic: &TopicName, partitions: &[i32]) -> Result<(), String> {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.id.clone())
            .with_v3_and_below_producer_id(ProducerId(self.producer.id))
            .with_v3_and_below_producer_epoch(self.producer.epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic.clone())
                .with_partitions(partitions.to_vec())]);
        let (conn, v) = (&mut self.conn, self.add_version);
        with_retries("AddPartitionsToTxn", || {
            let r: AddPartitionsToTxnResponse = conn
                .call(ApiKey::AddPartitionsToTxn, v, &req)
                .map_err(|e| format!("AddPartitionsToTxn: {e}"))?;
            // the first partition error that is not NONE (OPERATION_NOT_ATTEMPTED goes with
            // another partition's real error, which comes first in Kafka's order of checks)
            let mut code = r.error_code;
            for t in &r.results_by_topic_v3_and_below {
                for p in &t.results_by_partition {
                    if code == 0 || code == 55 {
                        code = p.partition_error_code;
                    }
                }
            }
            Ok((code, ()))
        })
    }

    /// EndTxn: commits (or aborts) the open transaction.
    pub fn end(&mut self, commit: bool) -> Result<(), String> {
        let req = EndTxnRequest::default()
            .with_transactional_id(self.id.clone())
            .with_producer_id(ProducerId(self.producer.id))
            .with_producer_epoch(self.producer.epoch)
            .with_committed(commit);
        let (conn, v) = (&mut self.conn, self.end_version);
        with_retries("EndTxn", || {
            let r: EndTxnResponse = conn
                .call(ApiKey::EndTxn, v, &req)
                .map_err(|e| format!("EndTxn: {e}"))?;
            Ok((r.error_code, ()))
        })
    }
}

/// Byte offsets of the v2 batch header fields that [`stamp`] writes.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;

/// Kafka's sequence numbers are i32 and wrap to 0 after i32::MAX.
pub fn sequence(seq: u64) -> i32 {
    (seq & 0x7fff_ffff) as i32
}

/// Sets producer id, epoch, base sequence (and with `transactional` the attribute bit) in a
/// finished batch (`BatchBuilder::finish` leaves them -1) and updates its CRC-32C. The fields
/// all lie in the header, so the CRC is corrected with the CRC of the header change shifted
/// over the records (`crc32c_combine`) instead of reading the whole batch again.
pub fn stamp(batch: Bytes, producer: Producer, base_sequence: i32, transactional: bool) -> Bytes {
    let mut b: Vec<u8> = Vec::from(batch); // no copy: the builder's buffer has one owner
    if b.len() < HEADER_LEN {
        return Bytes::from(b);
    }
    let before = crc32c::crc32c(&b[CRC_START..HEADER_LEN]);
    if transactional {
        let attrs = i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]);
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
            .copy_from_slice(&(attrs | ATTR_TRANSACTIONAL).to_be_bytes());
    }
    b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer.id.to_be_bytes());
    b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer.epoch.to_be_bytes());
    b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let after = crc32c::crc32c(&b[CRC_START..HEADER_LEN]);
    let old = u32::from_be_bytes([b[CRC_AT], b[CRC_AT + 1], b[CRC_AT + 2], b[CRC_AT + 3]]);
    // crc(P || S) = shift(crc(P), |S|) ^ crc(S), and shift is linear
    let crc = old ^ crc32c::crc32c_combine(before ^ after, 0, b.len() - HEADER_LEN);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::batch::{compute_crc, validate};
    use sluice_tools::{BatchBuilder, Compression};

    fn batch(n: usize, size: usize) -> Bytes {
        let mut b = BatchBuilder::new(1024);
        for i in 0..n {
            b.push(
                Some(format!("k{i}").as_bytes()),
                &vec![b'x'; size],
                1000 + i as i64,
            );
        }
        b.finish(Compression::None).expect("batch")
    }

    #[test]
    fn stamped_batches_carry_the_fields_and_a_valid_crc() {
        for (n, size, txn) in [
            (1, 0, false),
            (3, 100, true),
            (500, 100, true),
            (7, 5000, false),
        ] {
            let p = Producer { id: 4242, epoch: 3 };
            let b = stamp(batch(n, size), p, sequence(0x8000_0005), txn);
            let h = validate(&b).unwrap_or_else(|e| panic!("{n} records: {e}"));
            assert_eq!(h.crc.get(), compute_crc(&b));
            assert_eq!(h.producer_id.get(), 4242);
            assert_eq!(h.producer_epoch.get(), 3);
            assert_eq!(h.base_sequence.get(), 5);
            assert_eq!(h.is_transactional(), txn);
            assert_eq!(h.record_count.get(), n as i32);
        }
    }
}
