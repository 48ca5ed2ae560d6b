//! Key/value state logs of the coordinators (committed offsets, transaction state): engine
//! partition logs under `<data>/__sluice/`, one JSON key and value per record, appended and
//! fdatasync'd before a change is acknowledged, replayed in order at start (the last value of
//! a key wins; a null value deletes it).
//!
//! Compaction: when a log holds much more than its live state, the owner appends the live
//! state again and moves the log start to it ([`compact`]); replay starts at the log start and
//! whole segments below it are deleted. The owner must keep other changes out meanwhile, so
//! that the live state it writes is the state of the log up to that point.

use std::path::Path;

use sluice_engine::{
    batch, AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

/// One record: key and value (None deletes the key).
pub type KvRecord = (Vec<u8>, Option<Vec<u8>>);

/// Segment size of a state log compacted at `compact_min_bytes`: compaction frees whole
/// segments, so they are a quarter of that (64 KiB to 8 MiB).
pub fn segment_bytes(compact_min_bytes: u64) -> u64 {
    (compact_min_bytes / 4).clamp(64 << 10, 8 << 20)
}

/// Opens (or creates) a state log with segments of `segment_bytes`.
pub async fn open(dir: &Path, segment_bytes: u64) -> Result<PartitionLog, String> {
    let cfg = LogConfig {
        segment_bytes,
        retention_ms: None,
        preallocate_bytes: 0,
        write_buffer_bytes: 1 << 20,
        hot_cache_bytes: 256 << 10,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, cfg, LogEnv::default())
        .await
        .map_err(|e| format!("opening {}: {e}", dir.display()))
}

/// Calls `f(key, value)` for every record of the log, oldest first.
pub async fn replay(
    log: &PartitionLog,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<(), String> {
    let mut next = log.offsets().log_start;
    let end = log.offsets().high_watermark;
    while next < end {
        let r = log
            .read(next, 1 << 20, FirstBatch::Always)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = r.data.to_vec().map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        for b in batch::split_batches(&bytes) {
            let Some(h) = batch::BatchHeader::parse(b) else {
                break;
            };
            next = Offset(h.last().get() + 1);
            for rec in batch::records(b).unwrap_or_default() {
                if let Some(k) = rec.key {
                    f(k, rec.value);
                }
            }
        }
    }
    Ok(())
}

/// Appends `records` and waits until they reach `level` (`Synced`: their fdatasync).
pub async fn append(
    log: &PartitionLog,
    records: &[KvRecord],
    level: Durability,
) -> Result<(), LogError> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for chunk in records.chunks(1000) {
        let recs: Vec<batch::NewRecord<'_>> = chunk
            .iter()
            .map(|(k, v)| batch::NewRecord {
                key: Some(k),
                value: v.as_deref(),
                timestamp: ts,
            })
            .collect();
        let b = batch::build(&recs);
        log.append_durable(&b, AppendOptions::default(), level)
            .await?;
    }
    Ok(())
}

/// Compacts `log` if it holds at least `min_bytes` and four times the size of `live` (the
/// current value of every live key): appends `live`, fdatasyncs, and moves the log start to
/// it. Returns whether it compacted.
pub async fn compact(
    log: &PartitionLog,
    live: &[KvRecord],
    min_bytes: u64,
) -> Result<bool, LogError> {
    let live_bytes: u64 = live
        .iter()
        .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len) + 16) as u64)
        .sum();
    let stored = log.size_bytes();
    if stored < min_bytes || stored < 4 * live_bytes {
        return Ok(false);
    }
    let start = log.offsets().log_end;
    append(log, live, Durability::Synced).await?;
    log.delete_records(start).await?;
    Ok(true)
}
