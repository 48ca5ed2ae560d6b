//! Producer-state snapshots (`<offset>.producers`) and the rebuild of producer state and
//! aborted-transaction lists from them and the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::error::{LogError, Result};
use crate::producer::{self, AbortedTxn, ProducerStates};
use crate::segment::{self, Segment};
use crate::types::{Offset, TimestampMs};

fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(crate::index::file_name(offset, "producers"))
}

/// Offsets of the producer-state snapshots in `dir`, oldest first.
pub(super) fn list_snapshots(dir: &Path) -> Result<Vec<Offset>> {
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

/// Deletes the snapshot as of `offset` (the caller fsyncs the directory).
pub(super) fn remove_snapshot(dir: &Path, offset: Offset) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match crate::io::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(LogError::io("deleting", path, e))
        }
        _ => Ok(()),
    }
}

/// Writes the producer-state snapshot as of `offset` (temp file, fsync, rename) and keeps only
/// the two newest.
pub(super) fn write_snapshot(dir: &Path, offset: Offset, bytes: &[u8]) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("producers.tmp");
    crate::io::write_synced(&tmp, bytes).map_err(|e| LogError::io("writing", &tmp, e))?;
    crate::io::rename(&tmp, &path).map_err(|e| LogError::io("renaming", &path, e))?;
    let all = list_snapshots(dir)?;
    for old in all.iter().rev().skip(2) {
        let _ = crate::io::remove_file(&snapshot_path(dir, *old));
    }
    Ok(())
}

/// What the producer-state replay needs of one segment. A copy of the segment map's facts,
/// so the replay can await file reads without holding the log's state borrowed.
pub(super) struct ReplaySegment {
    pub base: Offset,
    pub dma: Option<Rc<DmaFile>>,
    /// Logical size: the replay reads batches below it.
    pub size: u64,
}

impl ReplaySegment {
    pub fn of_all(segments: &BTreeMap<Offset, Segment>) -> Vec<ReplaySegment> {
        segments
            .values()
            .map(|s| ReplaySegment {
                base: s.base,
                dma: s.files.as_ref().map(|f| f.dma.clone()),
                size: s.size,
            })
            .collect()
    }
}

/// The outcome of [`rebuild_producers`].
pub(super) struct Rebuilt {
    pub producers: ProducerStates,
    /// The aborted transactions of each segment the rebuild loaded or replayed (segments
    /// without a file are left out: they keep what they hold).
    pub aborted: BTreeMap<Offset, Vec<AbortedTxn>>,
}

impl Rebuilt {
    /// Hands each segment its aborted-transaction list.
    pub fn apply_aborted(&mut self, segments: &mut BTreeMap<Offset, Segment>) {
        for (base, aborted) in std::mem::take(&mut self.aborted) {
            if let Some(seg) = segments.get_mut(&base) {
                seg.aborted = aborted;
            }
        }
    }
}

/// Rebuilds the producer state and the aborted-transaction lists of the log `segments`
/// (non-empty, oldest first) ending at `leo`: from the newest usable snapshot, replaying the
/// batches after it. Segments before the snapshot must have their `.txnindex`; if one lacks
/// it, everything is replayed. Snapshots past `leo` are deleted (the log was truncated below
/// them); the caller makes that durable with a directory fsync if it needs to.
pub(super) async fn rebuild_producers(
    dir: &Path,
    segments: &[ReplaySegment],
    leo: Offset,
    now_ms: TimestampMs,
) -> Result<Rebuilt> {
    let first_base = segments.first().expect("non-empty").base;
    let last_base = segments.last().expect("non-empty").base;
    let has_segment = |o: Offset| segments.iter().any(|s| s.base == o);
    let snaps = list_snapshots(dir)?;
    for s in snaps.iter().filter(|s| **s > leo) {
        // the log was truncated below it
        let _ = crate::io::remove_file(&snapshot_path(dir, *s));
    }
    let mut start: Option<(Offset, ProducerStates)> = None;
    for s in snaps
        .iter()
        .rev()
        .filter(|s| **s <= leo && **s >= first_base)
        .filter(|s| **s == leo || has_segment(**s))
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
    let mut all_aborted = BTreeMap::new();
    for seg in segments.iter().filter(|s| s.base < from) {
        match Segment::load_txn_index(dir, seg.base) {
            Some(a) => {
                all_aborted.insert(seg.base, a);
            }
            None => {
                tracing::info!(dir = %dir.display(), segment = %seg.base, "transaction index missing; replaying the whole log");
                from = first_base;
                state = ProducerStates::default();
                break;
            }
        }
    }
    for seg in segments.iter().filter(|s| s.base >= from) {
        let Some(dma) = seg.dma.as_ref() else {
            continue;
        };
        let mut aborted = Vec::new();
        let mut bad = None;
        segment::walk_batches(dma, 0, seg.size, |h, control| {
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
        if seg.base != last_base {
            segment::write_txn_index(dir, seg.base, &aborted)?;
        }
        all_aborted.insert(seg.base, aborted);
    }
    if !state.is_empty() {
        tracing::debug!(dir = %dir.display(), producers = state.len(), from = %from, "producer state rebuilt");
    }
    Ok(Rebuilt {
        producers: state,
        aborted: all_aborted,
    })
}
