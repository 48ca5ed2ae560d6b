//! Key/value state logs of the coordinators (committed offsets, transaction state): engine
//! partition logs under `<data>/__sluice/`, one JSON key and value per record, appended and
//! fdatasync'd before a change is acknowledged, replayed in order at start (the last value of
//! a key wins; a null value deletes it).

use std::path::Path;

use sluice_engine::{
    batch, AppendOptions, Durability, FirstBatch, LogConfig, LogEnv, LogError, Offset, PartitionLog,
};

/// One record: key and value (None deletes the key).
pub type KvRecord = (Vec<u8>, Option<Vec<u8>>);

/// Opens (or creates) a state log.
pub async fn open(dir: &Path) -> Result<PartitionLog, String> {
    let cfg = LogConfig {
        segment_bytes: 64 << 20,
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
