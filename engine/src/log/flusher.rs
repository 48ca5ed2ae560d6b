//! The flusher task: writes pending buffers in order, runs the group fdatasyncs, seals rolled
//! segments; and the clean close that drains it.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use event_listener::EventListener;
use glommio::io::DmaFile;
use glommio::task::JoinHandle;

use super::snapshot::write_snapshot;
use super::{align_up, Chunk, Inner, PartitionLog, RunState, Signals, ALIGN};
use crate::epoch::LeaderEpochCache;
use crate::error::{LogError, Result};
use crate::fault::Fault;
use crate::io;
use crate::meta::CleanShutdown;
use crate::segment::{self, path_of, SegmentFiles};
use crate::types::Offset;

/// What the flusher does next.
enum Job {
    /// Persist the leader epoch cache (it changed).
    Checkpoint(LeaderEpochCache, PathBuf),
    /// Persist partition.meta (the gapped segments grew).
    Meta(crate::meta::PartitionMeta, PathBuf),
    Write(Vec<Chunk>),
    Sync {
        dma: Rc<DmaFile>,
        target: Offset,
    },
    Wait {
        listener: EventListener,
        deadline: Option<Duration>,
    },
    Stop,
}

fn next_job(st: &mut Inner, signals: &Signals) -> Job {
    if st.poisoned.is_some() {
        return Job::Stop;
    }
    if st.epochs_dirty {
        // before the data: the checkpoint must cover every batch that reaches the disk
        st.epochs_dirty = false;
        return Job::Checkpoint(st.epochs.clone(), st.dir.clone());
    }
    if st.meta_dirty {
        st.meta_dirty = false;
        return Job::Meta(st.meta(), st.dir.clone());
    }
    if st.queue.is_empty() {
        st.take_pending();
    }
    if let Some(first) = st.queue.front() {
        // one segment per job, up to and including its sealing chunk
        let seg = first.segment;
        let mut chunks = Vec::new();
        while let Some(c) = st.queue.front() {
            if c.segment != seg {
                break;
            }
            let c = st.queue.pop_front().expect("front exists");
            let seal = c.seal;
            chunks.push(c);
            if seal {
                break;
            }
        }
        return Job::Write(chunks);
    }
    let now = st.env.clock.now_ms();
    let unsynced = st.written.0 - st.synced.0;
    let due_at = st
        .unsynced_since_ms
        .zip(st.config.flush_ms)
        .map(|(since, ms)| since.saturating_add(ms as i64));
    let sync_due = unsynced > 0
        && (st.sync_wanted > st.synced
            || st.config.flush_messages.is_some_and(|n| unsynced >= n)
            || due_at.is_some_and(|t| now >= t)
            || st.state == RunState::Closing
            || st.pause_flusher);
    if st.sync_in_flight {
        // its completion wakes the flusher (work event); writes were handled above
        return Job::Wait {
            listener: signals.work.listen(),
            deadline: None,
        };
    }
    if sync_due {
        if let Some(files) = st.active().files.as_ref() {
            return Job::Sync {
                dma: files.dma.clone(),
                target: st.written,
            };
        }
    }
    if st.state != RunState::Open || st.pause_flusher {
        return Job::Stop;
    }
    Job::Wait {
        listener: signals.work.listen(),
        deadline: due_at.map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64)),
    }
}

/// Starts the flusher task of a log.
pub(super) fn spawn_flusher(inner: &Rc<RefCell<Inner>>, signals: &Rc<Signals>) -> JoinHandle<()> {
    inner.borrow_mut().flusher_running = true;
    glommio::spawn_local(flusher(inner.clone(), signals.clone())).detach()
}

/// The per-log background task: writes pending buffers in order, runs group fdatasyncs, seals
/// rolled segments. Stops when the log is closing and everything is written, or poisoned.
async fn flusher(inner: Rc<RefCell<Inner>>, signals: Rc<Signals>) {
    loop {
        let job = next_job(&mut inner.borrow_mut(), &signals);
        let outcome = match job {
            Job::Stop => break,
            Job::Wait { listener, deadline } => {
                match deadline {
                    Some(d) => {
                        futures_lite::future::or(listener, glommio::timer::sleep(d)).await;
                    }
                    None => listener.await,
                }
                Ok(())
            }
            Job::Checkpoint(cache, dir) => cache.store(&dir),
            Job::Meta(meta, dir) => meta.store(&dir),
            Job::Write(chunks) => write_chunks(&inner, &signals, chunks).await,
            Job::Sync { dma, target } => {
                // the fdatasync runs beside the flusher: the next round's writes overlap it
                inner.borrow_mut().sync_in_flight = true;
                let (inner, signals) = (inner.clone(), signals.clone());
                glommio::spawn_local(async move {
                    let r = sync_to(&inner, &dma, target).await;
                    let mut st = inner.borrow_mut();
                    st.sync_in_flight = false;
                    if let Err(e) = r {
                        st.poison(e.to_string());
                    }
                    drop(st);
                    signals.progress.notify(usize::MAX);
                    signals.work.notify(usize::MAX);
                })
                .detach();
                Ok(())
            }
        };
        if let Err(e) = outcome {
            inner.borrow_mut().poison(e.to_string());
        }
        signals.progress.notify(usize::MAX);
        signals.space.notify(usize::MAX);
    }
    inner.borrow_mut().flusher_running = false;
    // wake everyone: waiters re-check and see either success, poison or closure
    signals.progress.notify(usize::MAX);
    signals.space.notify(usize::MAX);
}

fn inject(st: &Inner, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
    st.env.faults.as_ref().and_then(|f| f.take(matches))
}

async fn sync_to(inner: &Rc<RefCell<Inner>>, dma: &DmaFile, target: Offset) -> Result<()> {
    let (fault, covered) = {
        let st = inner.borrow();
        let fault = inject(&st, |f| f == Fault::SyncEio);
        (fault, st.counters.bytes_written.get())
    };
    let started = std::time::Instant::now();
    let res = match fault {
        Some(_) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        None => io::dma_fdatasync(dma).await,
    };
    res.map_err(|e| LogError::io("fdatasync", path_of(dma), e))?;
    let mut st = inner.borrow_mut();
    st.env.stats.on_sync(started.elapsed());
    st.counters.mark_synced(covered);
    if target > st.synced {
        st.synced = target;
    }
    if st.synced >= st.written {
        st.unsynced_since_ms = None;
    }
    st.check_invariants();
    Ok(())
}

async fn write_chunks(
    inner: &Rc<RefCell<Inner>>,
    signals: &Signals,
    chunks: Vec<Chunk>,
) -> Result<()> {
    let (dir, seg_base, existing) = {
        let st = inner.borrow();
        let seg_base = chunks[0].segment;
        let existing = st
            .segments
            .get(&seg_base)
            .and_then(|s| s.files.as_ref().map(|f| f.dma.clone()));
        (st.dir.clone(), seg_base, existing)
    };
    let dma = match existing {
        Some(d) => d,
        None => {
            let d = segment::create_file(&dir, seg_base).await?;
            let mut st = inner.borrow_mut();
            if let Some(s) = st.segments.get_mut(&seg_base) {
                s.files = Some(SegmentFiles {
                    dma: d.clone(),
                    plain: None,
                });
            }
            d
        }
    };
    let path = path_of(&dma);
    for chunk in chunks {
        if let Some(mut buf) = chunk.buf {
            let write_len = align_up(chunk.len);
            buf.as_bytes_mut()[chunk.len..write_len].fill(0);
            buf.trim_to_size(write_len);
            let end = chunk.file_pos + write_len as u64;
            let (prealloc, allocated) = {
                let st = inner.borrow();
                let a = st.segments.get(&seg_base).map_or(0, |s| s.allocated);
                (st.config.preallocate_bytes, a)
            };
            if prealloc > 0 && end > allocated {
                let target = end.div_ceil(prealloc) * prealloc;
                io::dma_pre_allocate(&dma, target)
                    .await
                    .map_err(|e| LogError::io("preallocating", &path, e))?;
                if let Some(s) = inner.borrow_mut().segments.get_mut(&seg_base) {
                    s.allocated = target;
                }
            }
            let fault = inject(&inner.borrow(), |f| {
                matches!(f, Fault::WriteEio | Fault::ShortWrite)
            });
            let n = match fault {
                Some(Fault::WriteEio) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
                Some(_) if write_len > ALIGN => {
                    // persist only the first page for real, then report the short count
                    let mut first = glommio::allocate_dma_buffer(ALIGN);
                    first
                        .as_bytes_mut()
                        .copy_from_slice(&buf.as_bytes()[..ALIGN]);
                    io::dma_write(&dma, first, chunk.file_pos).await
                }
                Some(_) => Ok(0), // a one-page write that stored nothing
                None => io::dma_write_rc(&dma, Rc::new(buf), chunk.file_pos).await,
            }
            .map_err(|e| LogError::io("writing", &path, e))?;
            if n < write_len {
                return Err(LogError::io(
                    "writing",
                    &path,
                    std::io::Error::other(format!("short write: {n} of {write_len} bytes")),
                ));
            }
            let mut st = inner.borrow_mut();
            let now = st.env.clock.now_ms();
            if let Some(s) = st.segments.get_mut(&seg_base) {
                s.written_size = s.written_size.max(chunk.file_pos + chunk.len as u64);
            }
            st.written = st.written.max(chunk.end_offset);
            st.unwritten_bytes -= chunk.new_bytes;
            st.env.stats.on_write(chunk.new_bytes as u64);
            let c = &st.counters.bytes_written;
            c.set(c.get() + chunk.new_bytes as u64);
            if st.written > st.synced && st.unsynced_since_ms.is_none() {
                st.unsynced_since_ms = Some(now);
            }
            st.check_invariants();
            let written = st.written;
            st.hot.evict(written);
            drop(st);
            signals.progress.notify(usize::MAX);
            signals.space.notify(usize::MAX);
        }
        if chunk.seal {
            seal(inner, &dma, seg_base, chunk.snapshot).await?;
        }
    }
    Ok(())
}

/// Finishes a rolled segment: trim the preallocation, fdatasync, write its indexes, move the
/// recovery point past it.
async fn seal(
    inner: &Rc<RefCell<Inner>>,
    dma: &DmaFile,
    base: Offset,
    snapshot: Option<Vec<u8>>,
) -> Result<()> {
    let path = path_of(dma);
    let size = inner.borrow().segments.get(&base).map_or(0, |s| s.size);
    io::dma_truncate(dma, size)
        .await
        .map_err(|e| LogError::io("truncating", &path, e))?;
    let (fault, covered) = {
        let st = inner.borrow();
        let fault = inject(&st, |f| f == Fault::SyncEio);
        (fault, st.counters.bytes_written.get())
    };
    let started = std::time::Instant::now();
    match fault {
        Some(_) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        None => io::dma_fdatasync(dma).await,
    }
    .map_err(|e| LogError::io("fdatasync", &path, e))?;
    let mut st = inner.borrow_mut();
    st.env.stats.on_sync(started.elapsed());
    st.counters.mark_synced(covered);
    let dir = st.dir.clone();
    let Some(seg) = st.segments.get_mut(&base) else {
        return Ok(());
    };
    seg.sealed = true;
    seg.allocated = size;
    seg.finish_time_index();
    seg.write_index_files(&dir)?;
    seg.write_txn_index(&dir)?;
    let next = seg.next_offset;
    if let Some(snap) = snapshot {
        write_snapshot(&dir, next, &snap)?;
    }
    st.synced = st.synced.max(next);
    st.check_invariants();
    st.recovery_point = next;
    st.meta().store(&dir)?;
    Ok(())
}

impl PartitionLog {
    /// Writes everything, syncs, writes the active segment's indexes and leaves the
    /// clean-shutdown marker. The log refuses further use.
    pub async fn close(&self) -> Result<()> {
        // never beside a truncation, which stops and restarts the flusher
        let _one_at_a_time = self
            .maintenance
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        {
            let mut st = self.inner.borrow_mut();
            if st.state != RunState::Open {
                return Ok(());
            }
            st.state = RunState::Closing;
        }
        self.signals.work.notify(usize::MAX);
        let task = self.flusher.borrow_mut().take();
        if let Some(t) = task {
            t.await;
        }
        let (dma, size, dir) = {
            let mut st = self.inner.borrow_mut();
            st.state = RunState::Closed;
            self.signals.progress.notify(usize::MAX);
            self.signals.space.notify(usize::MAX);
            if let Some(cause) = &st.poisoned {
                return Err(LogError::Poisoned {
                    path: st.dir.clone(),
                    cause: cause.clone(),
                });
            }
            let dir = st.dir.clone();
            let a = st.active();
            let dma = a.files.as_ref().map(|f| f.dma.clone());
            (dma, a.size, dir)
        };
        let dma = match dma {
            Some(d) => d,
            None => {
                let base = self.inner.borrow().active().base;
                segment::create_file(&dir, base).await?
            }
        };
        let path = path_of(&dma);
        io::dma_truncate(&dma, size)
            .await
            .map_err(|e| LogError::io("truncating", &path, e))?;
        io::dma_fdatasync(&dma)
            .await
            .map_err(|e| LogError::io("syncing", &path, e))?;
        let mut st = self.inner.borrow_mut();
        let leo = st.leo;
        let active = st.active_mut();
        active.finish_time_index();
        active.write_index_files(&dir)?;
        active.write_txn_index(&dir)?;
        write_snapshot(&dir, leo, &st.producers.to_json())?;
        let mut meta = st.meta();
        meta.clean_shutdown = Some(CleanShutdown {
            log_end_offset: leo.0,
            active_size: size,
        });
        meta.store(&dir)?;
        st.synced = leo;
        Ok(())
    }
}
