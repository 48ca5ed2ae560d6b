//! The flusher task: writes pending buffers in order, runs the group fdatasyncs, seals rolled
//! segments; and the clean close that drains it. A job that finds the disk full is put back
//! and retried (see [`super::space`]); any other failed write or fdatasync poisons the log.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use event_listener::EventListener;
use glommio::io::DmaFile;
use glommio::task::JoinHandle;

use super::metafiles::{self, SegmentWrites};
use super::space::waits_for_space;
use super::{align_up, Chunk, Inner, PartitionLog, RunState, Signals, ALIGN};
use crate::error::{LogError, Result};
use crate::fault::Fault;
use crate::io;
use crate::meta::CleanShutdown;
use crate::segment::{self, path_of, SegmentFiles};
use crate::types::Offset;

/// What the flusher does next.
enum Job {
    /// Persist the leader epoch cache (it changed).
    Checkpoint,
    /// Persist partition.meta (the gapped segments grew, or a store found the disk full).
    Meta,
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
    // on a full disk, writes wait for the next retry (a closing log tries once more at once);
    // syncs of what is written go on
    let space_wait = match st.state {
        RunState::Open => st.disk_full.wait_left(),
        _ => None,
    };
    if space_wait.is_none() {
        if let Some(job) = next_write(st) {
            return job;
        }
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
            deadline: space_wait,
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
    if space_wait.is_none() && (st.state != RunState::Open || st.pause_flusher) {
        if st.seals_in_flight > 0 {
            // a close or truncation finds every seal finished
            return Job::Wait {
                listener: signals.work.listen(),
                deadline: None,
            };
        }
        return Job::Stop;
    }
    let flush_wait = due_at.map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64));
    Job::Wait {
        listener: signals.work.listen(),
        deadline: match (flush_wait, space_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

/// The next metadata file or segment write, if any is due.
fn next_write(st: &mut Inner) -> Option<Job> {
    if st.epochs_dirty {
        // before the data: the checkpoint must cover every batch that reaches the disk
        return Some(Job::Checkpoint);
    }
    if st.meta_dirty {
        st.meta_dirty = false;
        return Some(Job::Meta);
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
        return Some(Job::Write(chunks));
    }
    None
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
        let writes = matches!(job, Job::Checkpoint | Job::Meta | Job::Write(_));
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
            // (a failed store leaves the checkpoint marked behind)
            Job::Checkpoint => metafiles::store_epochs(&inner).await,
            Job::Meta => metafiles::store_meta(&inner, |_| {})
                .await
                .inspect_err(|e| {
                    if waits_for_space(e) {
                        inner.borrow_mut().meta_dirty = true;
                    }
                }),
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
        match outcome {
            Ok(()) if writes => {
                inner.borrow_mut().disk_full.clear();
            }
            Ok(()) => {}
            Err(e) if waits_for_space(&e) => {
                // the job was put back; appenders and waiters see the error, the next
                // round retries (a closing log gives up: its close reports it)
                let mut st = inner.borrow_mut();
                st.disk_full.enter(e.to_string());
                let closing = st.state != RunState::Open;
                drop(st);
                if closing {
                    break;
                }
            }
            Err(e) => inner.borrow_mut().poison(e.to_string()),
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

/// Writes one segment's chunks in order. On a full disk the chunks not yet done (the one that
/// failed first, with its bytes) go back to the front of the write queue for the retry.
async fn write_chunks(
    inner: &Rc<RefCell<Inner>>,
    signals: &Rc<Signals>,
    chunks: Vec<Chunk>,
) -> Result<()> {
    let mut chunks = VecDeque::from(chunks);
    let r = write_segment_chunks(inner, signals, &mut chunks).await;
    if r.as_ref().is_err_and(waits_for_space) {
        let mut st = inner.borrow_mut();
        while let Some(c) = chunks.pop_back() {
            st.queue.push_front(c);
        }
    }
    r
}

async fn write_segment_chunks(
    inner: &Rc<RefCell<Inner>>,
    signals: &Rc<Signals>,
    chunks: &mut VecDeque<Chunk>,
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
    while let Some(mut chunk) = chunks.pop_front() {
        if let Some(mut buf) = chunk.buf.take() {
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
                let full = inner
                    .borrow()
                    .env
                    .faults
                    .as_ref()
                    .is_some_and(|f| f.disk_full());
                let r = match full {
                    true => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
                    false => io::dma_pre_allocate(&dma, target).await,
                };
                match r {
                    Ok(()) => {
                        if let Some(s) = inner.borrow_mut().segments.get_mut(&seg_base) {
                            s.allocated = target;
                        }
                    }
                    // the write itself may still fit: go on without preallocating
                    Err(e) if crate::error::is_no_space(&e) => {
                        tracing::debug!(path = %path.display(), "no space to preallocate");
                    }
                    Err(e) => return Err(LogError::io("preallocating", &path, e)),
                }
            }
            let buf = Rc::new(buf);
            let mut r = write_once(inner, &dma, &buf, chunk.file_pos).await;
            if r.as_ref().is_ok_and(|&n| n < write_len) {
                // a short write (a disk filling up part way): write it all again, which
                // stores the rest or says why not
                r = write_once(inner, &dma, &buf, chunk.file_pos).await;
            }
            let failed = match r {
                Ok(n) if n >= write_len => None,
                Ok(n) => Some(LogError::io(
                    "writing",
                    &path,
                    std::io::Error::other(format!("short write: {n} of {write_len} bytes")),
                )),
                Err(e) => Some(LogError::io("writing", &path, e)),
            };
            if let Some(e) = failed {
                // keep the bytes for the retry (the completed write released its reference)
                chunk.buf = Some(Rc::try_unwrap(buf).unwrap_or_else(|rc| {
                    let mut copy = glommio::allocate_dma_buffer(write_len);
                    copy.as_bytes_mut()
                        .copy_from_slice(&rc.as_bytes()[..write_len]);
                    copy
                }));
                chunks.push_front(chunk);
                return Err(e);
            }
            let mut st = inner.borrow_mut();
            let now = st.env.clock.now_ms();
            if let Some(s) = st.segments.get_mut(&seg_base) {
                s.written_size = s.written_size.max(chunk.file_pos + chunk.len as u64);
            }
            st.written = st.written.max(chunk.end_offset);
            st.sub_unwritten(chunk.new_bytes);
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
            if let Err(e) = seal(inner, signals, &dma, seg_base, chunk.snapshot.as_deref()).await {
                // written already (`buf` is gone): a retry only seals
                chunks.push_front(chunk);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One segment write at `pos`, through the fault plan; the count the kernel reported.
async fn write_once(
    inner: &Rc<RefCell<Inner>>,
    dma: &DmaFile,
    buf: &Rc<glommio::io::DmaBuffer>,
    pos: u64,
) -> std::io::Result<usize> {
    let (fault, full) = {
        let st = inner.borrow();
        let fault = inject(&st, |f| {
            matches!(f, Fault::WriteEio | Fault::ShortWrite | Fault::WriteEnospc)
        });
        let full = st.env.faults.as_ref().is_some_and(|f| f.disk_full());
        (fault, full)
    };
    match fault {
        Some(Fault::WriteEio) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        Some(Fault::WriteEnospc) => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        _ if full => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        Some(_) if buf.len() > ALIGN => {
            // persist only the first page for real, then report the short count
            let mut first = glommio::allocate_dma_buffer(ALIGN);
            first
                .as_bytes_mut()
                .copy_from_slice(&buf.as_bytes()[..ALIGN]);
            io::dma_write(dma, first, pos).await
        }
        Some(_) => Ok(0), // a one-page write that stored nothing
        None => io::dma_write_rc(dma, buf.clone(), pos).await,
    }
}

/// Finishes a rolled segment: trim the preallocation, fdatasync, write its indexes, move the
/// recovery point past it.
async fn seal(
    inner: &Rc<RefCell<Inner>>,
    signals: &Rc<Signals>,
    dma: &DmaFile,
    base: Offset,
    snapshot: Option<&[u8]>,
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
    let (writes, next) = {
        let mut st = inner.borrow_mut();
        st.env.stats.on_sync(started.elapsed());
        st.counters.mark_synced(covered);
        let Some(seg) = st.segments.get_mut(&base) else {
            return Ok(());
        };
        seg.allocated = size;
        seg.finish_time_index();
        let next = seg.next_offset;
        let writes = SegmentWrites::of(seg, snapshot.map(|s| (next, s.to_vec())))?;
        // the data is durable: its appends are answered now, not after the index files
        st.synced = st.synced.max(next);
        st.check_invariants();
        (writes, next)
    };
    signals.progress.notify(usize::MAX);
    // the index files, the snapshot and the recovery point are written beside the flusher,
    // which goes on with the next segment's data (a bounded number of seals at a time)
    loop {
        let freed = signals.work.listen();
        if inner.borrow().seals_in_flight < MAX_SEALS_IN_FLIGHT {
            break;
        }
        freed.await;
    }
    inner.borrow_mut().seals_in_flight += 1;
    glommio::spawn_local(finish_seal(
        inner.clone(),
        signals.clone(),
        base,
        writes,
        next,
    ))
    .detach();
    Ok(())
}

/// Seals whose metadata files are still being written, per log, at most.
const MAX_SEALS_IN_FLIGHT: usize = 4;

/// The rest of a seal, after the segment's data is durable: its index files and snapshot,
/// then the recovery point past it. Until the recovery point moves, a restart scans the
/// segment (and rebuilds what of them did not land). A full disk leaves them to that rebuild
/// (the segment still counts as sealed, so retention can free space); any other failure
/// poisons the log.
async fn finish_seal(
    inner: Rc<RefCell<Inner>>,
    signals: Rc<Signals>,
    base: Offset,
    writes: SegmentWrites,
    next: Offset,
) {
    let files = metafiles::write_segment_files(&inner, writes).await;
    if files.is_ok() {
        let mut st = inner.borrow_mut();
        st.recovery_point = st.recovery_point.max(next);
    }
    let stored = match files {
        Ok(()) => metafiles::store_meta(&inner, |_| {}).await,
        Err(e) => Err(e),
    };
    let mut st = inner.borrow_mut();
    st.seals_in_flight -= 1;
    if let Some(seg) = st.segments.get_mut(&base) {
        // retention and the cleaner may take it from now on
        seg.sealed = true;
    }
    match stored {
        Ok(()) => {}
        Err(e) if waits_for_space(&e) => {
            tracing::warn!(dir = %st.dir.display(), %base, error = %e, "sealed segment's index files or snapshot not written (disk full): the next open rebuilds them");
        }
        Err(e) => st.poison(e.to_string()),
    }
    drop(st);
    signals.work.notify(usize::MAX);
    signals.progress.notify(usize::MAX);
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
            if let Some(e) = st.disk_full.error(&st.dir) {
                // no clean-shutdown marker: the next open recovers what reached the disk
                // (everything acknowledged did; the batches still queued were not)
                return Err(e);
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
        let (writes, leo) = {
            let mut st = self.inner.borrow_mut();
            let leo = st.leo;
            let snapshot = st.producers.to_json();
            let active = st.active_mut();
            active.finish_time_index();
            (SegmentWrites::of(active, Some((leo, snapshot)))?, leo)
        };
        metafiles::write_segment_files(&self.inner, writes).await?;
        metafiles::store_meta(&self.inner, |meta| {
            meta.clean_shutdown = Some(CleanShutdown {
                log_end_offset: leo.0,
                active_size: size,
            })
        })
        .await?;
        self.inner.borrow_mut().synced = leo;
        Ok(())
    }
}
