//! One loadgen producer: a thread that generates messages into per-partition batches and writes
//! produce requests on a pipelined connection; the connection's reader thread matches the
//! responses and records send-to-ack latency per message.
//!
//! Latency of a message = time its produce response was read - time it was handed to the
//! producer (appended to its batch). With `--rate`, the hand-over time is the message's
//! intended send time on the schedule, so a stalled producer still accounts for the messages it
//! should have sent meanwhile (coordinated omission correction).
//!
//! `--idempotent`: InitProducerId on the connection, then every batch carries the producer id,
//! epoch and its base sequence (the loadgen sequence of its first message in the partition, which
//! is exactly Kafka's per-partition sequence: 0, then + records of each batch).
//! `--transactional`: a second, blocking connection to the transaction coordinator runs
//! InitProducerId with the transactional id, AddPartitionsToTxn (one request at the start of
//! each transaction for the partitions it will write) and EndTxn. A transaction ends after
//! --txn-messages messages: the open batches go out, the producer waits for every response of
//! the transaction, then commits; the EndTxn round trip is the commit latency. Latency per
//! message stays send-to-ack (the commit is not in it).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::HEADER_LEN;
use sluice_tools::client::error_name;
use sluice_tools::conn::{decode_body, ConnError};
use sluice_tools::partitioner::partition_for_key;
use sluice_tools::pipeline::Pipeline;
use sluice_tools::BatchBuilder;

use crate::config::{ProducerMode, RunArgs, VALUE_HEADER};
use crate::stats::{atomic_max, atomic_min, Clock, Stats, WARMUP};
use crate::txn::{self, Producer, TxnClient};

/// What a producer needs besides the shared settings.
#[derive(Clone)]
pub struct ProducerPlan {
    pub id: u32,
    pub run_id: u32,
    pub addr: SocketAddr,
    pub topic: String,
    pub partitions: i32,
    /// Messages this producer sends, and how many of the first are warm-up.
    pub messages: u64,
    pub warmup: u64,
    /// Index of this producer's first message among all producers (for keys).
    pub first_index: u64,
    /// Messages/s for this producer (0: as fast as possible).
    pub rate: f64,
    pub args: RunArgs,
    pub clock: Clock,
    pub stats: Arc<Stats>,
}

/// Sequence numbers sent per partition, and the ranges whose produce failed.
#[derive(Debug, Clone, Default)]
pub struct ProducerOutcome {
    pub id: u32,
    /// Next sequence number per partition = messages sent to it.
    pub sent: Vec<u64>,
    /// (partition, first sequence, count) of batches that were not acknowledged.
    pub failed: Vec<(i32, u64, u64)>,
    pub error: Option<String>,
}

struct SentBatch {
    partition: i32,
    first_seq: u64,
    count: u64,
    value_bytes: u64,
    /// Hand-over time of each message (us since the epoch), [`WARMUP`] for warm-up messages.
    enqueued: Vec<u64>,
}

struct Partition {
    builder: BatchBuilder,
    enqueued: Vec<u64>,
    first_seq: u64,
    next_seq: u64,
    /// Actual time the batch's first message arrived (for linger).
    opened_us: u64,
}

/// Responses the reader thread has handled and batches that failed, so a transaction can wait
/// for all of its acknowledgements.
#[derive(Default)]
struct Handled {
    responses: u64,
    failed_batches: u64,
}

#[derive(Default)]
struct AckWait {
    state: Mutex<Handled>,
    cv: Condvar,
}

impl AckWait {
    /// Waits until `responses` responses are handled; returns the failed batches so far.
    fn wait_for(&self, responses: u64) -> Result<u64, String> {
        let mut s = self.state.lock().map_err(|e| e.to_string())?;
        while s.responses < responses {
            s = self.cv.wait(s).map_err(|e| e.to_string())?;
        }
        Ok(s.failed_batches)
    }
}

/// Random upper-case letters, as kafka-producer-perf-test's payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

/// Runs one producer to completion.
pub fn run(plan: ProducerPlan) -> ProducerOutcome {
    // 1 us timer slack (default 50 us) so --rate pacing and linger are kept closely
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1u64);
    }
    let mut out = ProducerOutcome {
        id: plan.id,
        sent: vec![0; plan.partitions as usize],
        ..Default::default()
    };
    let failed = Arc::new(Mutex::new(Vec::new()));
    if let Err(e) = produce(&plan, &mut out, failed.clone()) {
        plan.stats.error(format!("producer {}: {e}", plan.id));
        out.error = Some(e);
    }
    out.failed = failed.lock().map(|v| v.clone()).unwrap_or_default();
    out
}

fn produce(
    plan: &ProducerPlan,
    out: &mut ProducerOutcome,
    failed: Arc<Mutex<Vec<(i32, u64, u64)>>>,
) -> Result<(), String> {
    let args = &plan.args;
    let mut client = args
        .dial
        .connect(plan.addr, &format!("loadgen-producer-{}", plan.id))
        .map_err(|e| e.to_string())?;
    let mode = args.producer_mode();
    let mut txn: Option<TxnClient> = None;
    let producer: Option<Producer> = match mode {
        ProducerMode::Plain => None,
        ProducerMode::Idempotent => {
            let versions = client.versions().clone();
            Some(txn::init_producer_id(
                client.connection(),
                &versions,
                None,
                -1,
            )?)
        }
        ProducerMode::Transactional => {
            let t = TxnClient::connect(
                &args.dial,
                plan.addr,
                &format!("loadgen-txn-{}", plan.id),
                &format!("loadgen-{}-{}", plan.run_id, plan.id),
                args.txn_timeout_ms,
            )?;
            let p = t.producer();
            txn = Some(t);
            Some(p)
        }
    };
    let transactional = txn.is_some();
    let transactional_id = txn.as_ref().map(|t| t.transactional_id().clone());
    let (conn, versions) = client.into_parts();
    let version = versions.get(ApiKey::Produce).map_err(|e| e.to_string())?;
    let acks = args.acks.0;
    let stats = plan.stats.clone();
    let clock = plan.clock;
    let ack_wait = Arc::new(AckWait::default());
    let handled = ack_wait.clone();
    let handler = move |token: Vec<SentBatch>, resp: Result<Bytes, ConnError>| {
        let failed_batches = on_response(token, resp, acks, version, &clock, &stats, &failed);
        if let Ok(mut h) = handled.state.lock() {
            h.responses += 1;
            h.failed_batches += failed_batches;
        }
        handled.cv.notify_all();
    };
    let mut pipe = Pipeline::start(conn, args.max_in_flight, handler).map_err(|e| e.to_string())?;
    let topic = TopicName(StrBytes::from_string(plan.topic.clone()));
    let nparts = plan.partitions as usize;
    let batch_size = args.batch_size;
    let size = args.message_size;
    let record_bound = BatchBuilder::record_size_bound(args.keys.then_some(20), size);
    let mut parts: Vec<Partition> = (0..nparts)
        .map(|_| Partition {
            builder: BatchBuilder::new(batch_size + record_bound),
            enqueued: Vec::new(),
            first_seq: 0,
            next_seq: 0,
            opened_us: 0,
        })
        .collect();
    let pay = payload(size, 0x9e37_79b9_7f4a_7c15 ^ u64::from(plan.id));
    let linger_us = (args.linger_ms * 1000.0) as u64;
    let mut sticky = plan.id as usize % nparts;
    let mut deadline = u64::MAX; // earliest linger deadline of an open batch
    let interval_us = if plan.rate > 0.0 {
        1e6 / plan.rate
    } else {
        0.0
    };
    let t0 = clock.now_us();
    let mut keybuf = itoa_buf();
    let compression = args.compression;
    let run_id = plan.run_id.to_be_bytes();
    let pid = plan.id.to_be_bytes();
    // produce requests that expect a response
    let sent_requests = Cell::new(0u64);

    let send = |parts: &mut [Partition],
                which: &[usize],
                pipe: &mut Pipeline<Vec<SentBatch>>|
     -> Result<(), String> {
        let mut token = Vec::with_capacity(which.len());
        let mut data = Vec::with_capacity(which.len());
        for &p in which {
            let part = &mut parts[p];
            if part.builder.is_empty() {
                continue;
            }
            let count = part.builder.records() as u64;
            let mut records = part
                .builder
                .finish(compression)
                .map_err(|e| e.to_string())?;
            if let Some(producer) = producer {
                records = txn::stamp(
                    records,
                    producer,
                    txn::sequence(part.first_seq),
                    transactional,
                );
            }
            data.push(
                PartitionProduceData::default()
                    .with_index(p as i32)
                    .with_records(Some(records)),
            );
            token.push(SentBatch {
                partition: p as i32,
                first_seq: part.first_seq,
                count,
                value_bytes: count * size as u64,
                enqueued: std::mem::take(&mut part.enqueued),
            });
            part.first_seq = part.next_seq;
        }
        if token.is_empty() {
            return Ok(());
        }
        let req = ProduceRequest::default()
            .with_transactional_id(transactional_id.clone())
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(data)]);
        pipe.send(ApiKey::Produce, version, &req, token, acks != 0)
            .map_err(|e| e.to_string())?;
        if acks != 0 {
            sent_requests.set(sent_requests.get() + 1);
        }
        Ok(())
    };
    let all: Vec<usize> = (0..nparts).collect();
    // Fewest messages a full batch can hold (every record at its size bound): a transaction of
    // T unkeyed messages moves the sticky partition at most T / this many times.
    let min_per_batch =
        (batch_size.saturating_sub(HEADER_LEN + record_bound) / record_bound).max(1) as u64;
    // partitions in the open transaction
    let mut in_txn_parts = vec![false; nparts];
    let add_partitions =
        |t: &mut TxnClient, parts: &[usize], in_txn_parts: &mut [bool]| -> Result<(), String> {
            let ps: Vec<i32> = parts.iter().map(|&p| p as i32).collect();
            let t0 = clock.now_us();
            t.add_partitions(&topic, &ps)?;
            if let Ok(mut h) = plan.stats.add_partitions.lock() {
                crate::stats::record(&mut h, clock.now_us() - t0);
            }
            for &p in parts {
                in_txn_parts[p] = true;
            }
            Ok(())
        };
    // Ends the open transaction: sends what is batched, waits for every response, then
    // commits (aborts and fails if a produce of the transaction failed). Returns the failed
    // batch count the next transaction starts from.
    let end_txn = |parts: &mut [Partition],
                   pipe: &mut Pipeline<Vec<SentBatch>>,
                   t: &mut TxnClient,
                   failed_before: u64|
     -> Result<u64, String> {
        send(parts, &all, pipe)?;
        let failed_now = ack_wait.wait_for(sent_requests.get())?;
        if failed_now > failed_before {
            let abort = t.end(false).err();
            return Err(format!(
                "a produce of transaction failed; the transaction was aborted{}",
                abort
                    .map(|e| format!(" (abort failed: {e})"))
                    .unwrap_or_default()
            ));
        }
        let t0 = clock.now_us();
        t.end(true)?;
        let t1 = clock.now_us();
        if let Ok(mut h) = plan.stats.commit.lock() {
            crate::stats::record(&mut h, t1 - t0);
        }
        plan.stats.transactions.fetch_add(1, Ordering::Relaxed);
        // a transaction's messages count as produced once it is committed
        atomic_max(&plan.stats.last_ack_us, t1);
        Ok(failed_now)
    };
    let txn_messages = args.txn_messages.max(1);
    let mut in_txn = 0u64; // messages in the open transaction
    let mut failed_before = 0u64;
    let recompute_deadline = |parts: &[Partition]| {
        parts
            .iter()
            .filter(|p| !p.builder.is_empty())
            .map(|p| p.opened_us + linger_us)
            .min()
            .unwrap_or(u64::MAX)
    };

    for k in 0..plan.messages {
        if let Some(t) = txn.as_mut() {
            if in_txn == 0 {
                // Begin: the partitions the transaction will write join it in one request.
                // Keyed: all of them. Unkeyed: the sticky partition and as many after it as
                // the transaction can fill batches for (an upper bound, so a partition rarely
                // gets a marker and no data; one it reaches anyway is added before its first
                // message below).
                in_txn_parts.fill(false);
                let n = if args.keys {
                    nparts
                } else {
                    let msgs = txn_messages.min(plan.messages - k);
                    (1 + msgs / min_per_batch).min(nparts as u64) as usize
                };
                let first: Vec<usize> = (0..n).map(|i| (sticky + i) % nparts).collect();
                add_partitions(t, &first, &mut in_txn_parts)?;
            }
        }
        let mut now = clock.now_us();
        let enq = if interval_us > 0.0 {
            let intended = t0 + (k as f64 * interval_us) as u64;
            // Sleep only when well ahead of the schedule (never spin: the response reader and
            // the consumers share this core); messages due within EARLY_US go out in a burst.
            while intended > now + EARLY_US {
                if deadline <= now && pipe.has_room() {
                    let expired = expired_batches(&parts, linger_us, now);
                    send(&mut parts, &expired, &mut pipe)?;
                    deadline = recompute_deadline(&parts);
                }
                // a batch past its linger time waits for room in the window: poll for it
                let wake = if deadline <= now {
                    intended.min(now + 100)
                } else {
                    intended.min(deadline)
                };
                sleep_until(&clock, wake);
                now = clock.now_us();
            }
            // latency counts from the intended send time when behind schedule (coordinated
            // omission), from the actual hand-over when early
            intended.min(now)
        } else {
            now
        };
        let warm = k < plan.warmup;
        if !warm && k == plan.warmup {
            atomic_min(&plan.stats.measure_start_us, enq);
        }
        let index = plan.first_index + k;
        let key: Option<&[u8]> = if args.keys {
            Some(format_u64(&mut keybuf, index))
        } else {
            None
        };
        let p = match key {
            Some(key) => partition_for_key(key, nparts as u32) as usize,
            None => sticky,
        };
        if let Some(t) = txn.as_mut() {
            if !in_txn_parts[p] {
                add_partitions(t, &[p], &mut in_txn_parts)?;
            }
        }
        let part = &mut parts[p];
        if part.builder.is_empty() {
            part.opened_us = now;
            deadline = deadline.min(now + linger_us);
        }
        let seq = part.next_seq;
        part.next_seq += 1;
        part.builder.push_with(key, size, (enq / 1000) as i64, |v| {
            v[0..4].copy_from_slice(&run_id);
            v[4..8].copy_from_slice(&pid);
            v[8..16].copy_from_slice(&seq.to_be_bytes());
            v[16..24].copy_from_slice(&enq.to_be_bytes());
            v[VALUE_HEADER..].copy_from_slice(&pay[VALUE_HEADER..]);
        });
        part.enqueued.push(if warm { WARMUP } else { enq });
        if part.builder.size_bytes() + record_bound > batch_size {
            let mut which = vec![p];
            if args.keys {
                // like Kafka's drain: take the other partitions' batches that are well filled
                which.extend(
                    (0..nparts)
                        .filter(|&q| q != p && parts[q].builder.size_bytes() * 2 >= batch_size),
                );
            } else {
                sticky = (sticky + 1) % nparts;
            }
            send(&mut parts, &which, &mut pipe)?;
            deadline = recompute_deadline(&parts);
        } else if deadline <= now && pipe.has_room() {
            // linger is over and a request can go out now without waiting: send what there is
            // (with linger 0 batches grow only while the window is full, like Kafka's)
            let expired = expired_batches(&parts, linger_us, now);
            send(&mut parts, &expired, &mut pipe)?;
            deadline = recompute_deadline(&parts);
        }
        if let Some(t) = txn.as_mut() {
            in_txn += 1;
            if in_txn == txn_messages {
                failed_before = end_txn(&mut parts, &mut pipe, t, failed_before)?;
                deadline = recompute_deadline(&parts);
                in_txn = 0;
            }
        }
    }
    send(&mut parts, &all, &mut pipe)?;
    if let Some(t) = txn.as_mut() {
        if in_txn > 0 {
            end_txn(&mut parts, &mut pipe, t, failed_before)?;
        }
    }
    plan.stats
        .enqueued
        .fetch_add(plan.messages, Ordering::Relaxed);
    for (p, part) in parts.iter().enumerate() {
        out.sent[p] = part.next_seq;
    }
    pipe.finish().map_err(|e| e.to_string())
}

/// Open batches whose linger time is over at `now`.
fn expired_batches(parts: &[Partition], linger_us: u64, now: u64) -> Vec<usize> {
    (0..parts.len())
        .filter(|&q| !parts[q].builder.is_empty() && parts[q].opened_us + linger_us <= now)
        .collect()
}

fn on_response(
    token: Vec<SentBatch>,
    resp: Result<Bytes, ConnError>,
    acks: i16,
    version: i16,
    clock: &Clock,
    stats: &Stats,
    failed: &Mutex<Vec<(i32, u64, u64)>>,
) -> u64 {
    let now = clock.now_us();
    // error code per partition (acks=0: no response, everything counts as sent)
    let codes: Result<Vec<(i32, i16, Option<String>)>, String> = match resp {
        Err(e) => Err(e.to_string()),
        Ok(_) if acks == 0 => Ok(token.iter().map(|b| (b.partition, 0, None)).collect()),
        Ok(body) => decode_body::<ProduceResponse>(ApiKey::Produce, version, body)
            .map(|r| {
                r.responses
                    .into_iter()
                    .flat_map(|t| t.partition_responses)
                    .map(|p| {
                        (
                            p.index,
                            p.error_code,
                            p.error_message.map(|m| m.to_string()),
                        )
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
    };
    let mut ok_msgs = 0u64;
    let mut measured = 0u64;
    let mut measured_bytes = 0u64;
    if let Ok(mut h) = stats.produce_interval.lock() {
        for b in &token {
            let code = match &codes {
                Err(_) => None,
                Ok(c) => c.iter().find(|(p, _, _)| *p == b.partition).map(|x| x.1),
            };
            if code != Some(0) {
                continue;
            }
            ok_msgs += b.count;
            let mut m = 0u64;
            for &t in &b.enqueued {
                if t != WARMUP {
                    crate::stats::record(&mut h, now.saturating_sub(t));
                    m += 1;
                }
            }
            measured += m;
            measured_bytes += m * (b.value_bytes / b.count.max(1));
        }
    }
    let mut failed_batches = 0u64;
    for b in &token {
        let (code, msg) = match &codes {
            Err(e) => (None, Some(e.clone())),
            Ok(c) => match c.iter().find(|(p, _, _)| *p == b.partition) {
                Some((_, code, m)) => (Some(*code), m.clone()),
                None => (None, Some("partition missing from the response".into())),
            },
        };
        if code == Some(0) {
            continue;
        }
        failed_batches += 1;
        stats.failed.fetch_add(b.count, Ordering::Relaxed);
        stats.error(format!(
            "produce to partition {} failed: {}{}",
            b.partition,
            code.map_or("connection error".to_string(), error_name),
            msg.map(|m| format!(" ({m})")).unwrap_or_default()
        ));
        if let Ok(mut f) = failed.lock() {
            f.push((b.partition, b.first_seq, b.count));
        }
    }
    stats.acked.fetch_add(ok_msgs, Ordering::Relaxed);
    if measured > 0 {
        stats.measured_acked.fetch_add(measured, Ordering::Relaxed);
        stats
            .measured_bytes
            .fetch_add(measured_bytes, Ordering::Relaxed);
        atomic_max(&stats.last_ack_us, now);
    }
    failed_batches
}

/// How far ahead of its intended time a paced message may be sent.
const EARLY_US: u64 = 200;

fn sleep_until(clock: &Clock, when_us: u64) {
    let now = clock.now_us();
    if when_us > now {
        std::thread::sleep(Duration::from_micros(when_us - now));
    }
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Decimal digits of `v` in `buf` (no allocation).
fn format_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut b = itoa_buf();
        assert_eq!(format_u64(&mut b, 0), b"0");
        assert_eq!(format_u64(&mut b, 1234567), b"1234567");
        assert_eq!(
            format_u64(&mut b, u64::MAX),
            u64::MAX.to_string().as_bytes()
        );
    }

    #[test]
    fn payload_is_letters() {
        let p = payload(100, 7);
        assert!(p.iter().all(|b| b.is_ascii_uppercase()));
    }
}
