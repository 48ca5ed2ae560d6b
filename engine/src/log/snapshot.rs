//! Producer-state snapshots (`<offset>.producers`) and the rebuild of producer state and
//! aborted-transaction lists from them and the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};
use crate::producer::{self, ProducerStates};
use crate::segment::{self, Segment};
use crate::types::{Offset, TimestampMs};

fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(crate::index::file_name(offset, "producers"))
}

/// Offsets of the producer-state snapshots in `dir`, oldest first.
fn list_snapshots(dir: &Path) -> Result<Vec<Offset>> {
    let mut v = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".producers")) else {
            continue;
        };
        if let Ok(o) = stem.parse::<u64>() {
            v.push(Offset(o));
        }
    }
    v.sort();
    Ok(v)
}

/// Writes the producer-state snapshot as of `offset` (temp file, fsync, rename) and keeps only
/// the two newest.
pub(super) fn write_snapshot(dir: &Path, offset: Offset, bytes: &[u8]) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("producers.tmp");
    fs::write(&tmp, bytes).map_err(|e| LogError::io("writing", &tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_data())
        .map_err(|e| LogError::io("syncing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io("renaming", &path, e))?;
    let all = list_snapshots(dir)?;
    for old in all.iter().rev().skip(2) {
        let _ = fs::remove_file(snapshot_path(dir, *old));
    }
    Ok(())
}

/// Rebuilds the producer state and the aborted-transaction lists after the segments are
/// recovered: from the newest usable snapshot, replaying the batches after it. Segments before
/// the snapshot must have their `.txnindex`; if one lacks it, everything is replayed.
pub(super) async fn rebuild_producers(
    dir: &Path,
    segments: &mut BTreeMap<Offset, Segment>,
    leo: Offset,
    now_ms: TimestampMs,
) -> Result<ProducerStates> {
    let first_base = *segments.keys().next().expect("non-empty");
    let last_base = *segments.keys().next_back().expect("non-empty");
    let snaps = list_snapshots(dir)?;
    for s in snaps.iter().filter(|s| **s > leo) {
        // the log was truncated below it
        let _ = fs::remove_file(snapshot_path(dir, *s));
    }
    let mut start: Option<(Offset, ProducerStates)> = None;
    for s in snaps
        .iter()
        .rev()
        .filter(|s| **s <= leo && **s >= first_base)
        .filter(|s| **s == leo || segments.contains_key(s))
    {
        if let Some(st) = fs::read(snapshot_path(dir, *s))
            .ok()
            .and_then(|b| ProducerStates::from_json(&b))
        {
            start = Some((*s, st));
            break;
        }
    }
    let (mut from, mut state) = start.unwrap_or((first_base, ProducerStates::default()));
    for seg in segments.values_mut().filter(|s| s.base < from) {
        match Segment::load_txn_index(dir, seg.base) {
            Some(a) => seg.aborted = a,
            None => {
                tracing::info!(dir = %dir.display(), segment = %seg.base, "transaction index missing; replaying the whole log");
                from = first_base;
                state = ProducerStates::default();
                break;
            }
        }
    }
    for seg in segments.values_mut().filter(|s| s.base >= from) {
        let Some(files) = seg.files.as_ref() else {
            continue;
        };
        let mut aborted = Vec::new();
        let mut bad = None;
        segment::walk_batches(&files.dma, 0, seg.size, |h, control| {
            let marker = match control.map(producer::parse_marker) {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    bad = Some(e);
                    return;
                }
                None => None,
            };
            if let Some(a) = state.on_append(h, marker, h.base(), h.last(), now_ms) {
                aborted.push(a);
            }
        })
        .await?;
        if let Some(e) = bad {
            tracing::warn!(dir = %dir.display(), segment = %seg.base, error = %e, "skipped a bad control batch in replay");
        }
        seg.aborted = aborted;
        if seg.base != last_base {
            seg.write_txn_index(dir)?;
        }
    }
    if !state.is_empty() {
        tracing::debug!(dir = %dir.display(), producers = state.len(), from = %from, "producer state rebuilt");
    }
    Ok(state)
}
