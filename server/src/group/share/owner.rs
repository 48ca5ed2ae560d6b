//! The share-partition side of ShareFetch and ShareAcknowledge, run on the shard that owns
//! each partition: acknowledgements first, then acquisition and the read, with the
//! share-partition state in the shard's [`super::Store`].

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sluice_engine::batch::BatchHeader;
use sluice_engine::{FirstBatch, LogError, Offset, PartitionLog, ReadData};

use super::partition::{Acquired, BatchRange, SharePartition};
use super::{Reset, Settings};
use crate::api::codes;
use crate::shard::{Shard, TopicPartition};

/// One partition of a share fetch or acknowledgement, as its owner sees it.
#[derive(Debug, Clone)]
pub struct PartWant {
    pub tp: TopicPartition,
    /// (first offset, last offset, acknowledge types)
    pub acks: Vec<(i64, i64, Vec<i8>)>,
    /// Acquire and read records (ShareFetch), not only acknowledge.
    pub fetch: bool,
}

/// What the owner answers for one partition.
#[derive(Debug, Clone, Default)]
pub struct PartResult {
    pub error: i16,
    pub ack_error: i16,
    pub ack_message: Option<String>,
    /// The stored batches holding the acquired records.
    pub records: Bytes,
    pub acquired: Vec<Acquired>,
}

/// One member's request as every owner runs it.
#[derive(Debug, Clone)]
pub struct Request {
    pub group: String,
    pub member: String,
    pub settings: Settings,
    /// The member's share session closed: release what it holds on these partitions.
    pub release: bool,
    pub max_bytes: usize,
    pub max_records: usize,
}

fn start_offset(log: &PartitionLog, reset: Reset) -> Offset {
    let o = log.offsets();
    match reset {
        Reset::Latest => o.high_watermark,
        Reset::Earliest => o.log_start,
    }
}

/// Runs `f` on the share-partition of (`group`, `tp`), creating it at the reset offset.
fn with_partition<R>(
    shard: &Shard,
    group: &Rc<str>,
    tp: &TopicPartition,
    log: &PartitionLog,
    settings: &Settings,
    f: impl FnOnce(&mut SharePartition) -> R,
) -> R {
    let mut parts = shard.share.parts.borrow_mut();
    let p = parts
        .entry((group.clone(), tp.clone()))
        .or_insert_with(|| {
            let start = start_offset(log, settings.reset);
            tracing::debug!(group = %group, topic = %tp.topic, partition = tp.partition, start = start.get(), "share-partition initialized");
            SharePartition::new(start, settings.limits)
        });
    p.set_limits(settings.limits);
    p.advance_to_log_start(log.offsets().log_start);
    f(p)
}

/// The batches of a read as one buffer (a cold read is copied from the page cache: share
/// fetches are bounded by `max_bytes`).
fn to_bytes(data: ReadData) -> Result<Bytes, i16> {
    match data {
        ReadData::Empty => Ok(Bytes::new()),
        ReadData::Memory(v) if v.len() == 1 => Ok(v.into_iter().next().unwrap_or_default()),
        ReadData::Memory(v) => {
            let mut b = BytesMut::with_capacity(v.iter().map(|x| x.len()).sum());
            for x in v {
                b.extend_from_slice(&x);
            }
            Ok(b.freeze())
        }
        file @ ReadData::File { .. } => file
            .to_vec()
            .map(Bytes::from)
            .map_err(|_| codes::KAFKA_STORAGE_ERROR),
    }
}

/// The batches in `data`: (byte range, offsets).
fn batches(data: &Bytes) -> Vec<(std::ops::Range<usize>, BatchRange)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some(h) = BatchHeader::parse(&data[at..]) else {
            break;
        };
        let Some(len) = h.total_len() else { break };
        if at + len > data.len() {
            break;
        }
        out.push((
            at..at + len,
            BatchRange {
                base: h.base(),
                last: h.last(),
                control: h.is_control(),
            },
        ));
        at += len;
    }
    out
}

/// Applies acknowledgements, then (for fetches) acquires and reads, partition by partition.
pub async fn serve(shard: &Rc<Shard>, req: Request, wants: Vec<PartWant>) -> Vec<PartResult> {
    let group: Rc<str> = Rc::from(req.group.as_str());
    let member: Rc<str> = Rc::from(req.member.as_str());
    let mut bytes_left = req.max_bytes;
    let mut records_left = req.max_records;
    let mut out = Vec::with_capacity(wants.len());
    for w in wants {
        let mut r = PartResult::default();
        let log = match shard.owned_log(&w.tp).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                r.error = codes::UNKNOWN_TOPIC_OR_PARTITION;
                r.ack_error = r.error;
                out.push(r);
                continue;
            }
            Err(_) => {
                r.error = codes::KAFKA_STORAGE_ERROR;
                r.ack_error = r.error;
                out.push(r);
                continue;
            }
        };
        let now = Instant::now();
        let (ack_error, released) = with_partition(
            shard,
            &group,
            &w.tp,
            &log,
            &req.settings,
            |p| {
                let mut first_error = None;
                for (first, last, types) in &w.acks {
                    if let Err(e) = p.acknowledge(&member, *first, *last, types, now) {
                        tracing::debug!(group = %group, member = %member, topic = %w.tp.topic, partition = w.tp.partition, first, last, error = %e, "share acknowledgement refused");
                        first_error.get_or_insert(e);
                    }
                }
                let released = w.acks.iter().any(|(_, _, t)| t.contains(&2))
                    || (req.release && p.release_member(&member) > 0);
                (first_error, released)
            },
        );
        if released {
            shard.share.changed.notify(usize::MAX);
        }
        if let Some(e) = ack_error {
            r.ack_error = e.kafka_code();
            r.ack_message = Some(e.to_string());
        }
        if w.fetch && !req.release && bytes_left > 0 && records_left > 0 {
            match acquire(
                shard,
                &group,
                &member,
                &w.tp,
                &log,
                &req.settings,
                bytes_left,
                records_left,
            )
            .await
            {
                Ok((records, acquired)) => {
                    bytes_left = bytes_left.saturating_sub(records.len());
                    records_left = records_left.saturating_sub(
                        acquired
                            .iter()
                            .map(|a| (a.last.get() - a.first.get() + 1) as usize)
                            .sum(),
                    );
                    r.records = records;
                    r.acquired = acquired;
                }
                Err(code) => r.error = code,
            }
        }
        out.push(r);
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn acquire(
    shard: &Rc<Shard>,
    group: &Rc<str>,
    member: &Rc<str>,
    tp: &TopicPartition,
    log: &PartitionLog,
    settings: &Settings,
    max_bytes: usize,
    max_records: usize,
) -> Result<(Bytes, Vec<Acquired>), i16> {
    let hw = log.offsets().high_watermark;
    let now = Instant::now();
    let Some(from) = with_partition(shard, group, tp, log, settings, |p| {
        p.next_fetch_offset(now, hw)
    }) else {
        return Ok((Bytes::new(), Vec::new()));
    };
    let data = match log.read(from, max_bytes, FirstBatch::Always).await {
        Ok(res) => to_bytes(res.data)?,
        // retention moved the log start meanwhile: the next fetch starts there
        Err(LogError::OffsetOutOfRange { .. }) => return Ok((Bytes::new(), Vec::new())),
        Err(e) => return Err(e.kafka_code()),
    };
    let found = batches(&data);
    let ranges: Vec<BatchRange> = found.iter().map(|(_, b)| *b).collect();
    // the state may have moved while the read ran: acquire what is still available now
    let now = Instant::now();
    let acquired = with_partition(shard, group, tp, log, settings, |p| {
        p.acquire(member, &ranges, max_records, now)
    });
    if acquired.is_empty() {
        return Ok((Bytes::new(), acquired));
    }
    // only the batches holding acquired records go back
    let overlaps = |b: &BatchRange| {
        acquired
            .iter()
            .any(|a| a.first <= b.last && b.base <= a.last)
    };
    let keep: Vec<&std::ops::Range<usize>> = found
        .iter()
        .filter(|(_, b)| overlaps(b))
        .map(|(r, _)| r)
        .collect();
    let records = match (keep.first(), keep.last()) {
        (Some(a), Some(b)) if keep.len() == found.len() || is_contiguous(&keep) => {
            data.slice(a.start..b.end)
        }
        _ => {
            let mut buf = BytesMut::new();
            for r in keep {
                buf.extend_from_slice(&data[r.clone()]);
            }
            buf.freeze()
        }
    };
    Ok((records, acquired))
}

fn is_contiguous(ranges: &[&std::ops::Range<usize>]) -> bool {
    ranges.windows(2).all(|w| w[0].end == w[1].start)
}

/// Releases what `member` of `group` holds on every shard (it left or was fenced).
pub async fn release_everywhere(shard: &Rc<Shard>, group: &str, member: &str) {
    let mut freed = 0;
    for target in 0..shard.nr {
        let (g, m) = (group.to_string(), member.to_string());
        freed += shard
            .call(
                target,
                move |s| async move { s.share.release_member(&g, &m) },
            )
            .await
            .unwrap_or(0);
    }
    if freed > 0 {
        tracing::info!(
            group,
            member,
            records = freed,
            "share group member gone: its acquired records released"
        );
    }
}

/// Forgets the share-partitions of `group` on every shard (DeleteGroups).
pub async fn forget_everywhere(shard: &Rc<Shard>, group: &str) {
    for target in 0..shard.nr {
        let g = group.to_string();
        let _ = shard
            .call(target, move |s| async move { s.share.forget_group(&g) })
            .await;
    }
}

/// Waits until one of `tps`' logs grows or a record of this shard's share-partitions is
/// released, or `deadline`.
pub async fn wait_local(shard: &Rc<Shard>, tps: Vec<TopicPartition>, deadline: Instant) {
    let mut listeners = vec![shard.share.changed.listen()];
    for tp in &tps {
        if let Some(log) = shard.log(tp) {
            listeners.push(log.listen());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_found_and_a_torn_tail_is_ignored() {
        let mut b = vec![0u8; 61 * 2 + 10];
        for (i, base) in [(0usize, 5i64), (61, 7)] {
            b[i..i + 8].copy_from_slice(&base.to_be_bytes());
            b[i + 8..i + 12].copy_from_slice(&49i32.to_be_bytes());
            b[i + 23..i + 27].copy_from_slice(&1i32.to_be_bytes());
        }
        b[61 * 2 + 8..61 * 2 + 10].copy_from_slice(&[0, 0]);
        let data = Bytes::from(b);
        let found = batches(&data);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1.base, Offset(5));
        assert_eq!(found[0].1.last, Offset(6));
        assert_eq!(found[1].0, 61..122);
    }
}
