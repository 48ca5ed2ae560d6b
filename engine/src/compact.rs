//! The log cleaner of compacted topics (`cleanup.policy=compact`): keeps the latest record of
//! every key, as Kafka's LogCleaner does, without touching the active segment.
//!
//! Data path of one pass over a partition (driven by [`PartitionLog::clean`], which the broker
//! schedules on the partition's own shard beside retention):
//!
//! 1. Plan (in memory, no I/O but one header read): the cleanable range is the sealed segments
//!    wholly below the first uncleanable offset = min(active segment base, last stable offset,
//!    high watermark, the first segment holding records younger than `min.compaction.lag.ms`).
//!    Its dirty section starts at the checkpoint (`partition.meta`, `cleaner.first_dirty`).
//!    A pass runs when dirty bytes / cleanable bytes >= `min.cleanable.dirty.ratio`, or the
//!    first dirty batch is older than `max.compaction.lag.ms`, or a delete horizon set by an
//!    earlier pass has passed (KIP-534: its tombstones are due).
//! 2. Offset map: the dirty section's batches are read (1 MiB O_DIRECT reads, throttled to
//!    `log.cleaner.io.max.bytes.per.second`), decompressed when needed, and every keyed record
//!    of a batch that is not part of an aborted transaction records `key -> offset` in a map
//!    bounded by the dedupe buffer (`log.cleaner.dedupe.buffer.size`, the broker's total split
//!    among shards). When the map is full the dirty section ends there; the next pass goes on.
//! 3. Clean, group by group (consecutive segments of at most `segment.bytes` together), from
//!    the log start to the end of the map's range: each batch is kept byte for byte, rewritten
//!    with the records that survive, or dropped (see [`filter_batch`]). A record survives if it
//!    has a key, no later offset of its key is in the map, it is not in an aborted transaction,
//!    and, for a tombstone (null value), its batch's delete horizon (set to now +
//!    `delete.retention.ms` the first time a pass keeps it) has not passed. A rewritten batch
//!    keeps its baseOffset, lastOffsetDelta, producer fields and codec (offset gaps, as in
//!    Kafka). An emptied batch is dropped, except the last batch of a producer still known to
//!    the partition (its sequence state must survive a replay) and the last batch of the
//!    group (so a cleaned segment always reaches up to the next one), which stay as empty
//!    batches. Transaction markers: a COMMIT or ABORT marker is removable once no batch of its
//!    transaction is left before it; it is then given a delete horizon and removed after it,
//!    as Kafka does (a marker is never emptied, only kept whole or removed).
//!    The output goes to `<base>.log.cleaned` plus `.index.cleaned`, `.timeindex.cleaned` and
//!    `.txnindex.cleaned` (the indexes rebuilt from the batches written), each fdatasync'd
//!    through glommio, then the directory is fsync'd. Between batches the pass yields to the
//!    data path (`glommio::yield_if_needed`) and sleeps when over its I/O budget.
//! 4. Swap (under the log's maintenance permit, after checking the source segments did not
//!    change meanwhile): write the commit record `cleaner-swap.json` (temp file, fdatasync,
//!    rename, fsync dir) naming the new base and the segments it replaces; rename each
//!    `.cleaned` file over its final name and delete the replaced segments' files; fsync the
//!    directory; switch the in-memory segment map in one step (readers holding the old files
//!    keep reading them); store `partition.meta` (the segment is marked as one that may have
//!    offset gaps); delete the commit record. [`recover_swap`] at open finishes a swap whose
//!    commit record exists and otherwise deletes the `.cleaned` leftovers, so a crash at any
//!    point leaves either the old or the new segment set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchHeader, RecordView, ATTR_COMPRESSION_MASK, ATTR_DELETE_HORIZON};
use crate::codec;
use crate::error::{LogError, Result};
use crate::index;
use crate::meta::{sync_dir, PartitionMeta};
use crate::producer::{self, AbortedTxn};
use crate::types::{Offset, TimestampMs};

/// Suffix of a cleaner pass's output files before their swap.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// The swap commit record.
pub const SWAP_FILE: &str = "cleaner-swap.json";
/// The files of a segment, in the order a swap renames them (the `.log` last, so a segment
/// whose `.log` is the cleaned one has cleaned indexes too).
pub const SEGMENT_EXTS: [&str; 4] = ["index", "timeindex", "txnindex", "log"];

/// Broker-wide settings of the log cleaner (one per shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerConfig {
    /// log.cleaner.io.max.bytes.per.second: read plus write budget of one shard's cleaner
    /// (`None`: unthrottled, Kafka's default).
    pub io_bytes_per_sec: Option<u64>,
    /// This shard's share of log.cleaner.dedupe.buffer.size: the bound on the offset map.
    pub dedupe_buffer_bytes: usize,
    /// Bound on one batch's decompressed records section (larger batches are kept as they are).
    pub max_inflate_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            io_bytes_per_sec: None,
            dedupe_buffer_bytes: 128 << 20,
            max_inflate_bytes: 64 << 20,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_in: usize,
    pub segments_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_kept: u64,
    pub records_removed: u64,
    pub batches_removed: u64,
    /// The dirty section now starts here.
    pub first_dirty: Offset,
}

/// Bytes an entry of the offset map is charged beside its key (hash table slot, box, offset).
const MAP_ENTRY_OVERHEAD: usize = 48;

/// The latest offset of each key of the dirty section, bounded in bytes. Keys are stored
/// whole (no hash collisions can drop a record).
#[derive(Debug, Default)]
pub struct OffsetMap {
    map: HashMap<Box<[u8]>, u64>,
    bytes: usize,
    limit: usize,
}

impl OffsetMap {
    pub fn new(limit: usize) -> OffsetMap {
        OffsetMap {
            map: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    /// Records `offset` as the latest of `key`; `false` (and nothing stored) when a new key
    /// does not fit.
    pub fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        if let Some(v) = self.map.get_mut(key) {
            *v = offset;
            return true;
        }
        let cost = key.len() + MAP_ENTRY_OVERHEAD;
        if self.bytes + cost > self.limit {
            return false;
        }
        self.map.insert(key.into(), offset);
        self.bytes += cost;
        true
    }

    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Paces the cleaner's I/O to a byte rate and lets the data path run between batches.
pub struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` bytes read or written; sleeps while the pass is ahead of its budget, and
    /// yields to other tasks when the executor asks for it.
    pub async fn charge(&mut self, n: u64) {
        self.bytes += n;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed + Duration::from_millis(5) {
                glommio::timer::sleep(due - elapsed).await;
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// Aborted transactions and the transactions a pass has seen batches of, to decide about
/// aborted data and markers as Kafka's cleaner does.
pub struct TxnTracker {
    /// (first offset, marker offset) of each aborted transaction, by producer, sorted.
    aborted: HashMap<i64, Vec<(u64, u64)>>,
    /// Producers with a transaction whose batches this pass has traversed.
    ongoing: HashMap<i64, bool>,
}

impl TxnTracker {
    pub fn new(aborted: &[AbortedTxn]) -> TxnTracker {
        let mut by_pid: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
        for a in aborted {
            by_pid
                .entry(a.producer_id)
                .or_default()
                .push((a.first, a.last));
        }
        for v in by_pid.values_mut() {
            v.sort_unstable();
        }
        TxnTracker {
            aborted: by_pid,
            ongoing: HashMap::new(),
        }
    }

    /// Whether the transactional batch of `pid` at `offset` belongs to an aborted transaction.
    fn is_aborted(&self, pid: i64, offset: u64) -> bool {
        self.aborted.get(&pid).is_some_and(|v| {
            let i = v.partition_point(|(first, _)| *first <= offset);
            i > 0 && offset <= v[i - 1].1
        })
    }

    /// A data batch: `true` if its records are aborted (to be discarded).
    fn on_data(&mut self, h: &BatchHeader) -> bool {
        let pid = h.producer_id.get();
        if pid < 0 || !h.is_transactional() {
            return false;
        }
        let aborted = self.is_aborted(pid, h.base().0);
        self.ongoing.insert(pid, aborted);
        aborted
    }

    /// A marker: `(removable, data seen)`. Removable once no batch of its transaction was
    /// traversed by this pass (they were removed by an earlier one).
    fn on_control(&mut self, h: &BatchHeader) -> (bool, bool) {
        let seen = self.ongoing.remove(&h.producer_id.get()).is_some();
        (!seen, seen)
    }
}

/// What [`filter_batch`] decided about one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored unchanged.
    Keep,
    /// Stored as this rewritten batch (same offsets, fewer records or a delete horizon).
    Rewrite(Vec<u8>),
    /// Not stored.
    Drop,
}

/// The fixed inputs of one pass's filtering.
#[derive(Debug, Clone, Copy)]
pub struct FilterCtx {
    pub now: TimestampMs,
    pub delete_retention_ms: u64,
    pub max_inflate_bytes: usize,
}

/// Counts of one filtered batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filtered {
    pub kept: u64,
    pub removed: u64,
    /// The delete horizon of the stored batch, if it keeps tombstones or a marker under one.
    pub horizon: Option<TimestampMs>,
    /// An ABORT marker kept while its transaction's data was still there: its entry stays in
    /// the cleaned segment's `.txnindex`.
    pub keep_abort_entry: bool,
}

/// The records of a batch, decompressed (bounded). `None` when they cannot be read (the batch
/// is then kept as it is).
fn batch_records<'a>(
    batch: &'a [u8],
    h: &BatchHeader,
    limit: usize,
) -> Option<(std::borrow::Cow<'a, [u8]>, usize)> {
    if matches!(h.compression(), batch::Compression::Unknown(_)) {
        return None;
    }
    let body = batch::uncompressed_payload(batch, limit).ok()?;
    let n = batch::parse_records(h, &body).ok()?.len();
    Some((body, n))
}

/// Decides about one batch of the range being cleaned (see the module doc). `retain_empty`:
/// the batch must stay, possibly emptied (last batch of its producer, or of the group).
pub fn filter_batch(
    bytes: &[u8],
    map: &OffsetMap,
    txns: &mut TxnTracker,
    ctx: &FilterCtx,
    retain_empty: bool,
) -> (Verdict, Filtered) {
    let Some(h) = BatchHeader::parse(bytes).copied() else {
        return (Verdict::Keep, Filtered::default());
    };
    let mut out = Filtered::default();
    if h.is_control() {
        let (removable, seen) = txns.on_control(&h);
        let count = u64::from(h.record_count.get().max(0) as u32);
        let is_abort = producer::parse_marker(bytes).is_ok_and(|m| !m.commit);
        out.kept = count;
        out.keep_abort_entry = is_abort && seen;
        if !removable {
            out.horizon = h.delete_horizon().filter(|t| *t > ctx.now);
            return (Verdict::Keep, out);
        }
        return match h.delete_horizon() {
            None => {
                // KIP-534: the marker may go once delete.retention.ms has passed from now
                let horizon = ctx.now.saturating_add(ctx.delete_retention_ms as i64);
                match rebuild_all(bytes, &h, horizon, ctx) {
                    Some(b) => {
                        out.horizon = Some(horizon);
                        (Verdict::Rewrite(b), out)
                    }
                    None => (Verdict::Keep, out),
                }
            }
            Some(t) if t <= ctx.now && !retain_empty => {
                out.kept = 0;
                out.removed = count;
                (Verdict::Drop, out)
            }
            Some(t) => {
                out.horizon = (t > ctx.now).then_some(t);
                (Verdict::Keep, out)
            }
        };
    }
    let aborted = txns.on_data(&h);
    let Some((body, _)) = batch_records(bytes, &h, ctx.max_inflate_bytes) else {
        return (Verdict::Keep, out);
    };
    let Ok(records) = batch::parse_records(&h, &body) else {
        return (Verdict::Keep, out);
    };
    let base = h.base().0;
    let horizon = h.delete_horizon();
    let tombstones_due = horizon.is_some_and(|t| t <= ctx.now);
    let kept: Vec<&RecordView<'_>> = records
        .iter()
        .filter(|r| {
            if aborted {
                return false;
            }
            let Some(key) = r.key else {
                // a compacted log has no use for keyless records (Kafka drops them too)
                return false;
            };
            let offset = base + u64::from(r.offset_delta);
            let latest = map.get(key).is_none_or(|m| offset >= m);
            latest && (r.value.is_some() || !tombstones_due)
        })
        .collect();
    out.kept = kept.len() as u64;
    out.removed = (records.len() - kept.len()) as u64;
    let has_tombstone = kept.iter().any(|r| r.value.is_none());
    let need_horizon = has_tombstone && horizon.is_none();
    out.horizon = if need_horizon {
        Some(ctx.now.saturating_add(ctx.delete_retention_ms as i64))
    } else if has_tombstone {
        horizon
    } else {
        None
    };
    if kept.is_empty() {
        if !retain_empty {
            return (Verdict::Drop, out);
        }
        if records.is_empty() {
            return (Verdict::Keep, out);
        }
        return (Verdict::Rewrite(empty_batch(&h)), out);
    }
    if kept.len() == records.len() && !need_horizon {
        return (Verdict::Keep, out);
    }
    let new_base_ts = if need_horizon { out.horizon } else { horizon };
    match rebuild(&h, &kept, new_base_ts, ctx) {
        Some(b) => (Verdict::Rewrite(b), out),
        None => {
            out.kept = records.len() as u64;
            out.removed = 0;
            (Verdict::Keep, out)
        }
    }
}

/// A batch with every record of `bytes`, under delete horizon `horizon`.
fn rebuild_all(
    bytes: &[u8],
    h: &BatchHeader,
    horizon: TimestampMs,
    ctx: &FilterCtx,
) -> Option<Vec<u8>> {
    let (body, _) = batch_records(bytes, h, ctx.max_inflate_bytes)?;
    let records = batch::parse_records(h, &body).ok()?;
    let all: Vec<&RecordView<'_>> = records.iter().collect();
    rebuild(h, &all, Some(horizon), ctx)
}

/// `h`'s batch with only `kept` (in order), in its codec; with `horizon`, KIP-534's delete
/// horizon is the base timestamp (record timestamps are re-expressed against it). baseOffset,
/// lastOffsetDelta, producer fields and max timestamp stay.
fn rebuild(
    h: &BatchHeader,
    kept: &[&RecordView<'_>],
    horizon: Option<TimestampMs>,
    _ctx: &FilterCtx,
) -> Option<Vec<u8>> {
    let base_ts = horizon.unwrap_or(h.base_timestamp.get());
    let mut body = Vec::with_capacity(kept.len() * 32);
    let mut rec = Vec::with_capacity(64);
    for r in kept {
        rec.clear();
        rec.push(0); // attributes
        batch::write_varint(&mut rec, r.timestamp.wrapping_sub(base_ts));
        batch::write_varint(&mut rec, i64::from(r.offset_delta));
        for field in [r.key, r.value] {
            write_bytes(&mut rec, field);
        }
        batch::write_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            write_bytes(&mut rec, Some(k));
            write_bytes(&mut rec, *v);
        }
        batch::write_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let codec = h.compression();
    let payload = codec::compress(codec, &body, codec::Levels::default()).ok()?;
    let mut header = *h;
    header.record_count.set(i32::try_from(kept.len()).ok()?);
    let mut attrs = header.attributes.get();
    if horizon.is_some() {
        attrs |= ATTR_DELETE_HORIZON;
        header.base_timestamp.set(base_ts);
    }
    header.attributes.set(attrs);
    Some(finish(header, &payload))
}

fn write_bytes(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            batch::write_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => batch::write_varint(out, -1),
    }
}

/// The header of `h` with no records (uncompressed), kept for its offsets and producer state.
fn empty_batch(h: &BatchHeader) -> Vec<u8> {
    let mut header = *h;
    header.record_count.set(0);
    header
        .attributes
        .set(h.attributes.get() & !ATTR_COMPRESSION_MASK & !ATTR_DELETE_HORIZON);
    header.base_timestamp.set(h.max_timestamp.get());
    finish(header, &[])
}

/// Header plus payload with batchLength and CRC-32C computed.
fn finish(mut header: BatchHeader, payload: &[u8]) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let total = batch::HEADER_LEN + payload.len();
    header
        .batch_length
        .set((total - batch::LOG_OVERHEAD) as i32);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Adds the keyed records of a dirty batch to `map`. Returns the offset to stop at when the
/// map filled up inside the batch (the batch's base: the next pass starts there).
pub fn map_batch(
    bytes: &[u8],
    map: &mut OffsetMap,
    txns: &mut TxnTracker,
    ctx: &FilterCtx,
) -> std::result::Result<(), Offset> {
    let Some(h) = BatchHeader::parse(bytes).copied() else {
        return Ok(());
    };
    if h.is_control() {
        txns.on_control(&h);
        return Ok(());
    }
    if txns.on_data(&h) {
        return Ok(()); // aborted records never win over a committed value
    }
    let Some((body, _)) = batch_records(bytes, &h, ctx.max_inflate_bytes) else {
        return Ok(());
    };
    let Ok(records) = batch::parse_records(&h, &body) else {
        return Ok(());
    };
    for r in &records {
        if let Some(key) = r.key {
            if !map.insert(key, h.base().0 + u64::from(r.offset_delta)) {
                return Err(h.base());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files of a pass and the swap

/// Path of a segment file of `base` with extension `ext`, before (`cleaned`) or after its swap.
pub fn segment_file(dir: &Path, base: Offset, ext: &str, cleaned: bool) -> PathBuf {
    let name = index::file_name(base, ext);
    if cleaned {
        dir.join(format!("{name}{CLEANED_SUFFIX}"))
    } else {
        dir.join(name)
    }
}

/// The commit record of a swap: the cleaned segment `base` replaces the segments `replaced`
/// (which include `base` itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRecord {
    pub base: u64,
    pub replaced: Vec<u64>,
}

fn io(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> LogError {
    LogError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Writes `bytes` to a new file at `path` and fdatasyncs it, through glommio (the reactor
/// never waits for the disk).
pub async fn write_file(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let f = crate::io::buffered_create(path)
        .await
        .map_err(|e| io("creating", path, e))?;
    let len = bytes.len();
    let mut pos = 0usize;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = crate::io::buffered_write(&f, rest.clone(), pos as u64)
            .await
            .map_err(|e| io("writing", path, e))?;
        if n == 0 {
            return Err(io(
                "writing",
                path,
                std::io::Error::other(format!("short write at {pos} of {len}")),
            ));
        }
        pos += n;
        rest.drain(..n);
    }
    crate::io::buffered_fdatasync(&f)
        .await
        .map_err(|e| io("syncing", path, e))?;
    f.close().await.map_err(|e| io("closing", path, e))?;
    Ok(())
}

/// fsyncs a directory through glommio.
pub async fn sync_dir_async(dir: &Path) -> Result<()> {
    crate::io::sync_dir_async(dir)
        .await
        .map_err(|e| io("syncing", dir, e))
}

/// Writes the commit record durably (temp file, fdatasync, rename, fsync dir): from here on a
/// crash finishes the swap instead of rolling it back.
pub async fn commit_swap(dir: &Path, record: &SwapRecord) -> Result<()> {
    let path = dir.join(SWAP_FILE);
    let bytes = serde_json::to_vec(record).map_err(|e| LogError::BadMetadata {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tmp = dir.join(format!("{SWAP_FILE}.tmp"));
    write_file(&tmp, bytes).await?;
    crate::io::rename_async(&tmp, &path)
        .await
        .map_err(|e| io("renaming", &path, e))?;
    sync_dir_async(dir).await
}

/// The file changes of a committed swap: every `.cleaned` file renamed over its final name,
/// the other replaced segments' files deleted. Idempotent (recovery repeats it). The caller
/// fsyncs the directory. `stop_at` (tests: [`crate::Fault::CleanerStop`]) ends it early after
/// that step (7-10: renames, 11: deletions); returns whether it ran to the end.
pub fn apply_swap(dir: &Path, record: &SwapRecord, stop_at: Option<u8>) -> Result<bool> {
    let base = Offset(record.base);
    for (i, ext) in SEGMENT_EXTS.into_iter().enumerate() {
        let from = segment_file(dir, base, ext, true);
        let to = segment_file(dir, base, ext, false);
        match crate::io::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("renaming", &from, e)),
        }
        if stop_at == Some(7 + i as u8) {
            return Ok(false);
        }
    }
    for r in record.replaced.iter().filter(|r| **r != record.base) {
        crate::segment::Segment::remove_files(dir, Offset(*r))?;
    }
    Ok(stop_at != Some(11))
}

/// Deletes the `.cleaned` files of `base` (a pass that will not swap).
pub fn remove_cleaned(dir: &Path, base: Offset) {
    for ext in SEGMENT_EXTS {
        let _ = crate::io::remove_file(&segment_file(dir, base, ext, true));
    }
}

/// At open, before the segments are listed: finishes a swap whose commit record exists (the
/// renames and deletions, then `partition.meta` marks the segment as cleaned, then the
/// record goes), and deletes `.cleaned` files of passes that never committed (the listing
/// does that). A crash in the middle of a swap thus leaves the old or the new segment set.
pub fn recover_swap(dir: &Path) -> Result<()> {
    let path = dir.join(SWAP_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", &path, e)),
    };
    let record: SwapRecord = serde_json::from_slice(&bytes).map_err(|e| LogError::BadMetadata {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(dir = %dir.display(), base = record.base, replaced = ?record.replaced, "finishing an interrupted cleaner swap");
    apply_swap(dir, &record, None)?;
    sync_dir(dir)?;
    let mut meta = PartitionMeta::load(dir)?.unwrap_or_default();
    for r in &record.replaced {
        meta.gapped_segments.remove(r);
    }
    meta.gapped_segments.insert(record.base);
    meta.store(dir)?;
    crate::io::remove_file(&path).map_err(|e| io("deleting", &path, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::NewRecord;

    fn ctx(now: i64) -> FilterCtx {
        FilterCtx {
            now,
            delete_retention_ms: 100,
            max_inflate_bytes: 1 << 20,
        }
    }

    fn keyed(base: u64, recs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let r: Vec<NewRecord<'_>> = recs
            .iter()
            .map(|(k, v)| NewRecord {
                key: Some(k.as_bytes()),
                value: v.map(str::as_bytes),
                timestamp: 1_000,
            })
            .collect();
        let mut b = batch::build(&r);
        BatchHeader::mut_from(&mut b)
            .expect("header")
            .base_offset
            .set(base as i64);
        b
    }

    #[test]
    fn map_is_bounded_and_keeps_latest() {
        let mut m = OffsetMap::new(2 * (MAP_ENTRY_OVERHEAD + 1));
        assert!(m.insert(b"a", 1));
        assert!(m.insert(b"b", 2));
        assert!(m.insert(b"a", 3), "an update costs nothing");
        assert!(!m.insert(b"c", 4), "full");
        assert_eq!(m.get(b"a"), Some(3));
        assert_eq!(m.get(b"c"), None);
    }

    #[test]
    fn rewrite_keeps_offsets_and_sets_a_horizon_for_tombstones() {
        let b = keyed(10, &[("a", Some("1")), ("b", Some("2")), ("a", None)]);
        let mut map = OffsetMap::new(1 << 20);
        let mut txns = TxnTracker::new(&[]);
        map_batch(&b, &mut map, &mut txns, &ctx(0)).expect("fits");
        let (v, f) = filter_batch(&b, &map, &mut txns, &ctx(5_000), false);
        let Verdict::Rewrite(out) = v else {
            panic!("rewritten: {v:?}")
        };
        let h = batch::validate_stored(&out).expect("valid");
        assert_eq!(h.base().0, 10);
        assert_eq!(h.last_offset_delta.get(), 2);
        assert_eq!(h.record_count.get(), 2);
        assert_eq!(h.delete_horizon(), Some(5_100));
        assert_eq!(f.horizon, Some(5_100));
        let recs = batch::records(&out).expect("records");
        assert_eq!(recs[0].key, Some(&b"b"[..]));
        assert_eq!(recs[0].timestamp, 1_000, "timestamps survive the new base");
        assert_eq!(recs[1].value, None);
        // after the horizon the tombstone goes; the emptied-but-last batch stays empty
        let mut txns = TxnTracker::new(&[]);
        let map = OffsetMap::new(1 << 20);
        let (v, _) = filter_batch(&out, &map, &mut txns, &ctx(5_100), false);
        let Verdict::Rewrite(again) = v else {
            panic!("{v:?}")
        };
        let recs = batch::records(&again).expect("records");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].key, Some(&b"b"[..]));
    }

    #[test]
    fn emptied_batches_drop_unless_retained() {
        let b = keyed(0, &[("a", Some("1"))]);
        let mut map = OffsetMap::new(1 << 20);
        map.insert(b"a", 7);
        let mut txns = TxnTracker::new(&[]);
        assert_eq!(
            filter_batch(&b, &map, &mut txns, &ctx(0), false).0,
            Verdict::Drop
        );
        let (v, _) = filter_batch(&b, &map, &mut txns, &ctx(0), true);
        let Verdict::Rewrite(e) = v else {
            panic!("{v:?}")
        };
        let h = batch::validate_stored(&e).expect("valid");
        assert_eq!(h.record_count.get(), 0);
        assert_eq!(h.last_offset_delta.get(), 0);
    }
}
