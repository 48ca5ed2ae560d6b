//! Open and recovery: list the segments, trust sealed ones, scan from the recovery point,
//! keep the longest valid prefix, and rebuild the in-memory state.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;
use std::rc::Rc;

use super::flusher;
use super::snapshot::{rebuild_producers, ReplaySegment};
use super::space;
use super::types::LogEnv;
use super::{align_down, Inner, PartitionLog, Pending, RunState, Signals};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{LogError, Result};
use crate::hot::HotTail;
use crate::meta::{sync_dir, CleanShutdown, PartitionMeta};
use crate::quirk::prime_dma_probe;
use crate::segment::{self, Segment, SegmentFiles};
use crate::types::Offset;

/// Lists the base offsets of the `.log` files in `dir`, sorted; removes leftover temp files.
fn list_segments(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") || name.ends_with(crate::compact::CLEANED_SUFFIX) {
            // a temp file, or the output of a cleaner pass that never committed its swap
            let _ = crate::io::remove_file(&entry.path());
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(b) = stem.parse::<u64>() {
                    bases.push(Offset(b));
                }
            }
        }
    }
    bases.sort();
    Ok(bases)
}

/// What recovery decided about one segment.
struct Recovered {
    segment: Segment,
    /// The scan stopped early: everything after this segment is discarded.
    cut: bool,
    /// The indexes were rebuilt by a scan (rather than loaded from their files).
    scanned: bool,
}

async fn recover_segment(
    dir: &Path,
    config: &LogConfig,
    base: Offset,
    trusted_next: Option<Offset>,
    gapped: bool,
) -> Result<Recovered> {
    let dma = Segment::open_dma(dir, base, false).await?;
    let path = segment::log_path(dir, base);
    let file_len = dma
        .file_size()
        .await
        .map_err(|e| LogError::io("stat", &path, e.into()))?;
    let mut seg = Segment::new_empty(base);
    if let Some(next) = trusted_next {
        if let Some(index) = Segment::load_index_files(dir, base, file_len, next) {
            seg.size = file_len;
            seg.written_size = file_len;
            seg.allocated = file_len;
            seg.next_offset = next;
            seg.index = index;
            seg.files = Some(SegmentFiles { dma, plain: None });
            return Ok(Recovered {
                segment: seg,
                cut: false,
                scanned: false,
            });
        }
        if file_len > 0 {
            tracing::info!(segment = %path.display(), "index missing or damaged; rebuilding");
        }
    }
    let out = segment::scan(
        &dma,
        base,
        file_len,
        config.index_interval_bytes,
        config.max_message_bytes,
        gapped,
    )
    .await?;
    let cut = out.valid_size < file_len;
    if cut {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = out.valid_size,
            file_bytes = file_len,
            reason = out.stopped.as_deref().unwrap_or("trailing bytes"),
            "truncating log to its valid prefix"
        );
        crate::io::dma_truncate(&dma, out.valid_size)
            .await
            .map_err(|e| LogError::io("truncating", &path, e))?;
    }
    crate::io::dma_fdatasync(&dma)
        .await
        .map_err(|e| LogError::io("syncing", &path, e))?;
    seg.size = out.valid_size;
    seg.written_size = out.valid_size;
    seg.allocated = out.valid_size;
    seg.next_offset = out.next_offset;
    seg.index = out.index;
    seg.files = Some(SegmentFiles { dma, plain: None });
    // a zero-length tail (not the first segment) means "no valid data past the previous one"
    Ok(Recovered {
        segment: seg,
        cut,
        scanned: true,
    })
}

/// Loads the leader epoch cache, dropping entries past the recovered log end; rebuilds it from
/// the batch headers (partitionLeaderEpoch) when the checkpoint is missing or unreadable.
/// Rewrites the checkpoint only if that changed it. On a full disk the store is left to the
/// flusher (`true`: the checkpoint is behind).
async fn recover_epochs(
    dir: &Path,
    segments: &BTreeMap<Offset, Segment>,
    leo: Offset,
) -> Result<(LeaderEpochCache, bool)> {
    if let Some(mut cache) = LeaderEpochCache::load(dir) {
        let mut behind = false;
        if cache.drop_beyond(leo) {
            behind = space::deferred(cache.store(dir))?;
        }
        return Ok((cache, behind));
    }
    tracing::info!(dir = %dir.display(), "leader epoch checkpoint missing or unreadable; rebuilding it from the log");
    let mut cache = LeaderEpochCache::default();
    for seg in segments.values() {
        let Some(files) = seg.files.as_ref() else {
            continue;
        };
        segment::walk_batches(&files.dma, 0, seg.size, |h, _| {
            cache.assign(h.partition_leader_epoch.get(), h.base());
        })
        .await?;
    }
    let behind = space::deferred(cache.store(dir))?;
    Ok((cache, behind))
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it if it was not closed cleanly.
    pub async fn open(dir: &Path, config: LogConfig, env: LogEnv) -> Result<PartitionLog> {
        assert!(
            config.segment_bytes <= i32::MAX as u64,
            "segment.bytes must fit Kafka's i32 positions"
        );
        crate::io::create_dir_all_durable(dir).map_err(|e| LogError::io("creating", dir, e))?;
        prime_dma_probe(dir).await?;
        // a cleaner swap cut short by a crash: finish it (committed) or drop its files
        crate::compact::recover_swap(dir)?;
        let mut meta = PartitionMeta::load(dir)?.unwrap_or_default();
        let mut bases = list_segments(dir)?;
        let mut gapped: BTreeSet<Offset> = meta
            .gapped_segments
            .iter()
            .map(|b| Offset(*b))
            .filter(|b| bases.contains(b))
            .collect();
        if bases.is_empty() {
            let base = Offset(meta.log_start_offset);
            segment::create_file(dir, base).await?;
            bases.push(base);
            meta.recovery_point = base.0;
            meta.clean_shutdown = Some(CleanShutdown {
                log_end_offset: base.0,
                active_size: 0,
            });
        }
        let last_base = *bases.last().expect("non-empty");
        let last_len = fs::metadata(segment::log_path(dir, last_base))
            .map(|m| m.len())
            .map_err(|e| LogError::io("stat", segment::log_path(dir, last_base), e))?;
        let clean = meta
            .clean_shutdown
            .filter(|c| c.active_size == last_len && c.log_end_offset >= last_base.0);
        let rp = Offset(meta.recovery_point);
        // segments strictly before the one holding the recovery point were sealed and synced
        let first_scan = if clean.is_some() {
            bases.len()
        } else {
            bases.partition_point(|b| *b <= rp).saturating_sub(1)
        };
        if clean.is_none() {
            tracing::info!(dir = %dir.display(), from = %bases[first_scan], "recovering after unclean shutdown");
        }
        let mut segments = BTreeMap::new();
        let mut expected: Option<Offset> = None;
        let mut discard_from = None;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(e) = expected {
                if base != e {
                    tracing::warn!(dir = %dir.display(), %base, expected = %e, "offset gap between segments; discarding the rest");
                    discard_from = Some(i);
                    break;
                }
            }
            // sealed segments end where the next begins; the active one where the clean
            // marker says (without a marker it is scanned)
            let trusted_next = match bases.get(i + 1) {
                Some(next) if i < first_scan => Some(*next),
                Some(_) => None,
                None => clean.map(|c| Offset(c.log_end_offset)),
            };
            let is_gapped = gapped.contains(&base);
            let mut r = recover_segment(dir, &config, base, trusted_next, is_gapped).await?;
            if let Some(next) = bases.get(i + 1).filter(|_| is_gapped && !r.cut) {
                // a cleaned segment may end in a gap: it reaches up to the next one
                if r.segment.next_offset < *next {
                    r.segment.next_offset = *next;
                }
            }
            expected = Some(r.segment.next_offset);
            // (a cleaned segment may be empty and still sealed)
            let empty_tail = r.segment.is_empty() && i > 0 && !is_gapped;
            if empty_tail {
                // nothing valid in it: drop the file, the previous segment stays active
                discard_from = Some(i);
                break;
            }
            let sealed = i + 1 < bases.len() && !r.cut;
            let mut seg = r.segment;
            if r.scanned && sealed {
                // persist the rebuilt indexes so the next open does not scan this segment again
                seg.finish_time_index();
                // on a full disk the next open scans it again
                space::deferred(seg.write_index_files(dir))?;
            }
            segments.insert(base, seg);
            if r.cut {
                discard_from = Some(i + 1);
                break;
            }
        }
        if let Some(from) = discard_from {
            for &b in &bases[from..] {
                segments.remove(&b);
                gapped.remove(&b);
                Segment::remove_files(dir, b)?;
            }
            sync_dir(dir)?;
        }
        let (active_base, size, leo) = {
            let (b, s) = segments.iter_mut().next_back().expect("first segment kept");
            (*b, s.size, s.next_offset)
        };
        for s in segments.values_mut() {
            s.sealed = s.base != active_base;
        }
        // carry the partial last page of the active segment into the first pending buffer
        let file_pos = align_down(size as usize) as u64;
        let carry = if size > file_pos {
            let dma = segments[&active_base]
                .files
                .as_ref()
                .expect("recovered segments have files")
                .dma
                .clone();
            segment::read_exact_at(&dma, file_pos, (size - file_pos) as usize).await?
        } else {
            Vec::new()
        };
        let mut rebuilt = rebuild_producers(
            dir,
            &ReplaySegment::of_all(&segments),
            leo,
            env.clock.now_ms(),
        )
        .await?;
        rebuilt.apply_aborted(&mut segments);
        let producers = rebuilt.producers;
        let (epochs, epochs_behind) = recover_epochs(dir, &segments, leo).await?;
        let log_start = Offset(meta.log_start_offset)
            .max(*segments.keys().next().expect("non-empty"))
            .min(leo);
        let recovery_point = rp.min(active_base);
        meta.log_start_offset = log_start.0;
        meta.recovery_point = recovery_point.0;
        meta.clean_shutdown = None;
        meta.gapped_segments = gapped.iter().map(|o| o.0).collect();
        // the marker must be gone before the first append can change the files: on a full disk
        // the flusher stores it first thing (before any data) once there is space, and the
        // log starts out waiting for space
        let meta_behind = space::deferred(meta.store(dir))?;
        let mut disk_full = space::DiskFull::default();
        if meta_behind || epochs_behind {
            disk_full.enter(format!(
                "opening {}: no space for its metadata",
                dir.display()
            ));
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            hot: HotTail::new(config.hot_cache_bytes, env.hot_budget.clone()),
            config,
            env,
            segments,
            pending: Pending::new(active_base, file_pos, carry, leo),
            queue: VecDeque::new(),
            unwritten_bytes: 0,
            budget_held: 0,
            appenders_waiting: 0,
            log_start,
            leo,
            written: leo,
            synced: leo,
            sync_wanted: leo,
            sync_in_flight: false,
            unsynced_since_ms: None,
            recovery_point,
            poisoned: None,
            disk_full,
            state: RunState::Open,
            producers,
            txn_guards: Default::default(),
            next_guard: 1,
            epochs,
            epochs_dirty: epochs_behind,
            replicated: false,
            hw_requested: log_start,
            pause_flusher: false,
            flusher_running: false,
            counters: Default::default(),
            cleaner: meta.cleaner.unwrap_or_default(),
            gapped,
            meta_dirty: meta_behind,
            meta_lock: super::metafiles::new_lock(),
            seals_in_flight: 0,
            cleaning: false,
        };
        let inner = Rc::new(RefCell::new(inner));
        let signals = Rc::new(Signals::default());
        let task = flusher::spawn_flusher(&inner, &signals);
        Ok(PartitionLog {
            inner,
            signals,
            flusher: RefCell::new(Some(task)),
            append_gate: glommio::sync::Semaphore::new(1),
            maintenance: glommio::sync::Semaphore::new(1),
        })
    }
}
