//! Fetch: read on the owning shards, long-poll until min_bytes or max_wait, answer with record
//! data written after the encoded response parts: hot-tail `Bytes` from memory, cold data as
//! segment file ranges sent with sendfile(2).
//!
//! kafka-protocol encodes the response; each partition's records field is first encoded as a
//! 16-byte sentinel, then the frame is cut at the sentinels and the real data spliced in with
//! its own length prefix. This keeps every Fetch version the library supports.

use crate::security::acl::op;
use crate::security::Authz;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
use kafka_protocol::protocol::Encodable;
use sluice_engine::{FirstBatch, LogError, Offset, ReadData};

use super::codes;
use crate::conn::ConnError;
use crate::shard::{Shard, TopicPartition};
use crate::wire::{self, FileRef, Piece, Response};

/// Record data of one partition, movable between shards.
#[derive(Debug)]
enum Data {
    None,
    Memory(Vec<Bytes>),
    File {
        file: FileRef,
        position: u64,
        len: u64,
    },
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::None => 0,
            Data::Memory(v) => v.iter().map(|b| b.len() as u64).sum(),
            Data::File { len, .. } => *len,
        }
    }
}

#[derive(Debug)]
struct PartRead {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    data: Data,
    /// (producer id, first offset) of aborted transactions in the data (read_committed).
    aborted: Vec<(i64, i64)>,
    /// A follower's log diverges from this leader's: (epoch, end offset) to truncate to.
    diverging: Option<(i32, i64)>,
}

impl PartRead {
    fn error(code: i16) -> PartRead {
        PartRead {
            error: code,
            high_watermark: -1,
            last_stable: -1,
            log_start: -1,
            data: Data::None,
            aborted: Vec::new(),
            diverging: None,
        }
    }
}

#[derive(Clone)]
struct Want {
    slot: (usize, usize),
    tp: TopicPartition,
    offset: i64,
    max_bytes: usize,
    /// isolation_level=read_committed: read up to the last stable offset only.
    committed: bool,
    /// A follower's fetch (its broker id): reads past the high watermark, reports progress.
    replica: Option<i32>,
    /// The leader epoch the client believes current (-1: not given).
    current_leader_epoch: i32,
    /// A follower's epoch of its last fetched batch (-1: none), for divergence (KIP-320).
    last_fetched_epoch: i32,
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: FetchRequest,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    authz: &Authz<'_>,
    quota: &dyn Fn(u64) -> i32,
) -> Result<Response, ConnError> {
    let started = Instant::now();
    tracing::trace!(
        client_id,
        correlation_id,
        partitions = ?req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
            .collect::<Vec<_>>(),
        "fetch request"
    );
    let deadline = started + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut topics_out: Vec<FetchableTopicResponse> = Vec::new();
    // topic names by request position (metrics: bytes out per partition)
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut reads: Vec<Vec<Option<PartRead>>> = Vec::new();
    let mut by_shard: BTreeMap<usize, Vec<Want>> = BTreeMap::new();
    let committed = version >= 4 && req.isolation_level == 1;
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    for (ti, t) in req.topics.iter().enumerate() {
        let (name, owners) = {
            let st = shard.shared.catalog.read();
            let info = if version >= 13 {
                st.by_id(t.topic_id)
            } else {
                st.topics.get(t.topic.0.as_str())
            };
            (
                info.map(|i| i.name.clone()),
                info.map(|i| i.shards.clone()).unwrap_or_default(),
            )
        };
        topics_out.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id),
        );
        let topic: Arc<str> = Arc::from(name.clone().unwrap_or_default().as_str());
        names.push(topic.clone());
        let mut rs = Vec::new();
        for (pi, p) in t.partitions.iter().enumerate() {
            let owner = usize::try_from(p.partition)
                .ok()
                .and_then(|i| owners.get(i).copied());
            // cluster mode: only the leader serves fetches (followers included)
            let not_leader = name
                .as_deref()
                .and_then(|n| shard.shared.leader_check(n, p.partition).err());
            match (&name, owner) {
                (None, _) => rs.push(Some(PartRead::error(if version >= 13 {
                    codes::UNKNOWN_TOPIC_ID
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                }))),
                (Some(n), _) if !authz.topic(op::READ, n) => rs.push(Some(PartRead::error(
                    super::authorize::TOPIC_AUTHORIZATION_FAILED,
                ))),
                (Some(_), None) => {
                    rs.push(Some(PartRead::error(codes::UNKNOWN_TOPIC_OR_PARTITION)))
                }
                (Some(_), Some(_)) if not_leader.is_some() => rs.push(Some(PartRead::error(
                    not_leader.unwrap_or(codes::NOT_LEADER_OR_FOLLOWER),
                ))),
                (Some(_), Some(o)) => {
                    rs.push(None);
                    by_shard.entry(o).or_default().push(Want {
                        slot: (ti, pi),
                        tp: TopicPartition {
                            topic: topic.clone(),
                            partition: p.partition,
                        },
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        committed: committed && replica.is_none(),
                        replica,
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                    });
                }
            }
        }
        reads.push(rs);
    }
    let min_bytes = req.min_bytes.max(0) as u64;
    let total_max = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    loop {
        let got = read_all(shard, &by_shard).await;
        let mut total = 0u64;
        let mut errors = false;
        for (slot, r) in got {
            total += r.data.len();
            errors |= r.error != codes::NONE;
            reads[slot.0][slot.1] = Some(r);
        }
        let now = Instant::now();
        if total >= min_bytes.max(1) || errors || now >= deadline || by_shard.is_empty() {
            break;
        }
        if shard.shared.is_stopping() {
            break;
        }
        wait_any(shard, &by_shard, deadline).await;
    }
    // the response's byte budget, in request order; the first partition with data always fits
    let mut budget = total_max as u64;
    let mut first = true;
    let mut datas: Vec<Data> = Vec::new();
    // a consumer's record bytes by partition: counted once the quota lets them out
    let mut sent = Vec::new();
    for (ti, (t, rs)) in topics_out.iter_mut().zip(reads).enumerate() {
        let parts = &req.topics[ti].partitions;
        let mut out = Vec::with_capacity(rs.len());
        for (p, r) in parts.iter().zip(rs) {
            let r = r.unwrap_or_else(|| PartRead::error(codes::UNKNOWN_SERVER_ERROR));
            shard.metrics.error(ApiKey::Fetch, r.error);
            let mut pd = PartitionData::default()
                .with_partition_index(p.partition)
                .with_error_code(r.error)
                .with_high_watermark(r.high_watermark)
                .with_last_stable_offset(r.last_stable)
                .with_log_start_offset(r.log_start);
            if let Some((epoch, end)) = r.diverging {
                pd = pd.with_diverging_epoch(
                    kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end),
                );
            }
            if committed && r.error == codes::NONE {
                pd = pd.with_aborted_transactions(Some(
                    r.aborted
                        .iter()
                        .map(|(pid, first)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(*pid))
                                .with_first_offset(*first)
                        })
                        .collect(),
                ));
            }
            let len = r.data.len();
            if len > 0 && (first || len <= budget) {
                first = false;
                budget = budget.saturating_sub(len);
                if replica.is_none() {
                    sent.push((ti, p.partition, len));
                }
                pd = pd.with_records(Some(sentinel(datas.len())));
                datas.push(r.data);
            } else {
                pd = pd.with_records(Some(Bytes::new()));
            }
            out.push(pd);
        }
        t.partitions = out;
    }
    // consumer_byte_rate (and request_percentage): a throttled fetch answers empty, as Kafka
    let throttle = match replica {
        None => quota(sent.iter().map(|(_, _, len)| *len).sum()),
        Some(_) => 0,
    };
    if throttle > 0 {
        let body = FetchResponse::default()
            .with_session_id(0)
            .with_throttle_time_ms(throttle);
        return encode_with_data(version, correlation_id, &body, Vec::new());
    }
    for (ti, partition, len) in sent {
        shard.metrics.bytes_out(&names[ti], partition, len);
    }
    let body = FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics_out);
    encode_with_data(version, correlation_id, &body, datas)
}

const SENTINEL_LEN: usize = 16;
const SENTINEL_TAG: &[u8; 8] = b"\xffSLUICE\xfe";

fn sentinel(i: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(SENTINEL_LEN);
    b.extend_from_slice(SENTINEL_TAG);
    b.extend_from_slice(&(i as u64).to_be_bytes());
    b.freeze()
}

fn encode_with_data(
    version: i16,
    correlation_id: i32,
    body: &FetchResponse,
    datas: Vec<Data>,
) -> Result<Response, ConnError> {
    let api = ApiKey::Fetch;
    let buf = wire::encode_raw(api.response_header_version(version), correlation_id, |b| {
        body.encode(b, version)
            .map_err(|e| wire::anyhow_free::Error(e.to_string()))
    })
    .map_err(|e| ConnError::Malformed(e.to_string()))?;
    let flexible = version >= 12;
    let mut buf = buf.freeze();
    let mut pieces = Vec::new();
    let mut total: u64 = 0;
    let mut search_from = 4;
    for (i, data) in datas.into_iter().enumerate() {
        let want = sentinel(i);
        let at = find(&buf[search_from..], &want)
            .map(|p| p + search_from)
            .ok_or_else(|| ConnError::Malformed("fetch sentinel lost".into()))?;
        let prefix_len = if flexible { 1 } else { 4 };
        let head = buf.slice(search_from..at - prefix_len);
        let len = data.len();
        let mut prefix = BytesMut::with_capacity(5);
        if flexible {
            put_uvarint(&mut prefix, len + 1);
        } else {
            prefix.extend_from_slice(&(len as i32).to_be_bytes());
        }
        total += head.len() as u64 + prefix.len() as u64 + len;
        pieces.push(Piece::Bytes(head));
        pieces.push(Piece::Bytes(prefix.freeze()));
        match data {
            Data::None => {}
            Data::Memory(v) => pieces.extend(v.into_iter().map(Piece::Bytes)),
            Data::File {
                file,
                position,
                len,
            } => pieces.push(Piece::File {
                file,
                position,
                len,
            }),
        }
        search_from = at + SENTINEL_LEN;
    }
    let tail = buf.split_off(search_from);
    total += tail.len() as u64;
    pieces.push(Piece::Bytes(tail));
    let frame_len = i32::try_from(total)
        .map_err(|_| ConnError::Malformed("fetch response larger than 2 GiB".into()))?;
    pieces.insert(
        0,
        Piece::Bytes(Bytes::copy_from_slice(&frame_len.to_be_bytes())),
    );
    Ok(Response {
        pieces,
        close_after: false,
    })
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.extend_from_slice(&[(v as u8 & 0x7f) | 0x80]);
        v >>= 7;
    }
    b.extend_from_slice(&[v as u8]);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads every wanted partition on its owner (in parallel across shards).
async fn read_all(
    shard: &Rc<Shard>,
    by_shard: &BTreeMap<usize, Vec<Want>>,
) -> Vec<((usize, usize), PartRead)> {
    let mut tasks = Vec::new();
    for (&owner, wants) in by_shard {
        let wants = wants.clone();
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let slots: Vec<_> = wants.iter().map(|w| w.slot).collect();
            let r = s
                .call(owner, move |o| async move { read_local(&o, wants).await })
                .await;
            (slots, r)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let (slots, r) = t.await;
        match r {
            Ok(v) => out.extend(slots.into_iter().zip(v)),
            Err(_) => out.extend(
                slots
                    .into_iter()
                    .map(|s| (s, PartRead::error(codes::KAFKA_STORAGE_ERROR))),
            ),
        }
    }
    out
}

async fn read_local(shard: &Rc<Shard>, wants: Vec<Want>) -> Vec<PartRead> {
    let mut out = Vec::with_capacity(wants.len());
    for w in wants {
        let log = match shard.owned_log(&w.tp).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                out.push(PartRead::error(codes::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            }
            Err(_) => {
                out.push(PartRead::error(codes::KAFKA_STORAGE_ERROR));
                continue;
            }
        };
        if let Err(code) =
            crate::cluster::replica::check_epoch(&shard.shared, &w.tp, w.current_leader_epoch)
        {
            out.push(PartRead::error(code));
            continue;
        }
        if let Some(broker) = w.replica {
            out.push(read_for_follower(shard, &w, &log, broker).await);
            continue;
        }
        let o = log.offsets();
        let lso = log.last_stable_offset();
        let mut r = PartRead {
            error: codes::NONE,
            high_watermark: o.high_watermark.get() as i64,
            last_stable: lso.get() as i64,
            log_start: o.log_start.get() as i64,
            data: Data::None,
            aborted: Vec::new(),
            diverging: None,
        };
        if w.offset < 0 {
            r.error = codes::OFFSET_OUT_OF_RANGE;
            out.push(r);
            continue;
        }
        let from = Offset(w.offset as u64);
        let upper = w.committed.then_some(lso);
        match log
            .read_upto(from, w.max_bytes, FirstBatch::Always, upper)
            .await
        {
            Ok(res) => {
                if w.committed && !res.data.is_empty() {
                    r.aborted = log
                        .aborted_transactions(from, lso)
                        .into_iter()
                        .map(|a| (a.producer_id, a.first as i64))
                        .collect();
                }
                r.high_watermark = res.high_watermark.get() as i64;
                r.log_start = res.log_start_offset.get() as i64;
                match movable(res.data) {
                    Ok(d) => r.data = d,
                    Err(code) => r.error = code,
                }
            }
            Err(LogError::OffsetOutOfRange { .. }) => r.error = codes::OFFSET_OUT_OF_RANGE,
            Err(e) => r.error = e.kafka_code(),
        }
        tracing::trace!(topic = %w.tp.topic, partition = w.tp.partition, offset = w.offset, error = r.error, bytes = r.data.len(), "fetch read");
        out.push(r);
    }
    out
}

/// Record data that can travel to the connection's shard.
fn movable(data: ReadData) -> Result<Data, i16> {
    Ok(match data {
        ReadData::Empty => Data::None,
        ReadData::Memory(v) => Data::Memory(v),
        ReadData::File {
            file,
            position,
            len,
            ..
        } => {
            let file: FileRef = file.try_clone().map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
            Data::File {
                file,
                position: position.get(),
                len,
            }
        }
    })
}

/// A follower's fetch on the leader: first a divergence check of its last fetched epoch
/// (KIP-320: it must truncate before it may append), then its progress is recorded (the fetch
/// offset is what it has appended and fdatasync'd) and the data past it is read, above the high
/// watermark too.
async fn read_for_follower(
    shard: &Rc<Shard>,
    w: &Want,
    log: &sluice_engine::PartitionLog,
    broker: i32,
) -> PartRead {
    let o = log.offsets();
    let mut r = PartRead::error(codes::NONE);
    r.log_start = o.log_start.get() as i64;
    r.high_watermark = o.high_watermark.get() as i64;
    r.last_stable = log.last_stable_offset().get() as i64;
    if w.offset < 0 {
        r.error = codes::OFFSET_OUT_OF_RANGE;
        return r;
    }
    if w.last_fetched_epoch >= 0 {
        let (epoch, end) = log.end_offset_for_epoch(w.last_fetched_epoch);
        if epoch != w.last_fetched_epoch || end < w.offset {
            r.diverging = Some((epoch, end));
            return r;
        }
    }
    let from = Offset(w.offset as u64);
    crate::cluster::replica::on_follower_fetch(shard, &w.tp, log, broker, from);
    let o = log.offsets();
    r.high_watermark = o.high_watermark.get() as i64;
    match log.read_replica(from, w.max_bytes).await {
        Ok(res) => match movable(res.data) {
            Ok(d) => r.data = d,
            Err(code) => r.error = code,
        },
        Err(LogError::OffsetOutOfRange { .. }) => r.error = codes::OFFSET_OUT_OF_RANGE,
        Err(e) => r.error = e.kafka_code(),
    }
    r
}

/// Waits until any wanted partition's high watermark passes its fetch offset, or `deadline`.
async fn wait_any(shard: &Rc<Shard>, by_shard: &BTreeMap<usize, Vec<Want>>, deadline: Instant) {
    let done = Rc::new(event_listener::Event::new());
    let first_done = done.listen();
    let mut tasks = Vec::new();
    for (&owner, wants) in by_shard {
        let parts: Vec<(TopicPartition, i64, Visible)> = wants
            .iter()
            .map(|w| {
                let v = match (w.replica, w.committed) {
                    (Some(_), _) => Visible::Written,
                    (None, true) => Visible::Stable,
                    (None, false) => Visible::HighWatermark,
                };
                (w.tp.clone(), w.offset, v)
            })
            .collect();
        let s = shard.clone();
        let done = done.clone();
        tasks.push(glommio::spawn_local(async move {
            let _ = s
                .call(owner, move |o| async move {
                    wait_local(&o, parts, deadline).await
                })
                .await;
            done.notify(usize::MAX);
        }));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(first_done, glommio::timer::sleep(remaining)).await;
    for t in tasks {
        t.cancel().await;
    }
}

/// What a waiting fetch may read up to.
#[derive(Clone, Copy)]
enum Visible {
    HighWatermark,
    Stable,
    /// A follower: everything written.
    Written,
}

async fn wait_local(
    shard: &Rc<Shard>,
    parts: Vec<(TopicPartition, i64, Visible)>,
    deadline: Instant,
) {
    loop {
        let mut listeners = Vec::new();
        for (tp, offset, v) in &parts {
            let Some(log) = shard.log(tp) else {
                return;
            };
            let l = log.listen();
            let visible = match v {
                Visible::Stable => log.last_stable_offset(),
                Visible::HighWatermark => log.offsets().high_watermark,
                Visible::Written => log.offsets().written,
            };
            if visible.get() as i64 > *offset {
                return;
            }
            listeners.push(l);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let any = futures_lite::future::poll_fn(|cx| {
            use std::future::Future;
            for l in listeners.iter_mut() {
                if std::pin::Pin::new(l).poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        });
        futures_lite::future::or(any, glommio::timer::sleep(remaining)).await;
    }
}
