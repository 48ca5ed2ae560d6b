//! Truncation, for replication: a follower whose log diverged from the leader's cuts it back
//! to where they agree ([`PartitionLog::truncate_to`]), or starts over empty at the leader's
//! log start when it fell below it ([`PartitionLog::truncate_fully_and_start_at`]).
//!
//! Both run with the log to themselves: they hold the append gate (and count as a waiting
//! appender, which closes the fast path), and the flusher has written and fdatasync'd
//! everything queued and stopped. The in-memory state switches to the truncated log in one
//! step, before any file changes, so readers never get a range the files no longer hold;
//! then the files follow, each change made durable before the call returns.

use std::collections::BTreeMap;

use glommio::sync::Permit;

use super::append::WaitingAppender;
use super::flusher::spawn_flusher;
use super::metafiles;
use super::snapshot::{list_snapshots, rebuild_producers, remove_snapshot, ReplaySegment};
use super::{align_down, Inner, PartitionLog, Pending, RunState};
use crate::error::{LogError, Result};
use crate::meta::sync_dir;
use crate::producer::ProducerStates;
use crate::segment::{self, Segment, SegmentFiles};
use crate::types::Offset;

/// Exclusive use of the log (see the module doc). Dropping it restarts the flusher; dropped
/// half way through a change (the future was cancelled), it poisons the log first, since the
/// files and the state may disagree.
struct Exclusive<'a> {
    log: &'a PartitionLog,
    _maintenance: Permit<'a>,
    _waiting: WaitingAppender,
    _turn: Permit<'a>,
    changing: bool,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let inner = &self.log.inner;
        let running = {
            let mut st = inner.borrow_mut();
            if self.changing {
                st.poison("a truncation failed or was cancelled half way".into());
            }
            st.pause_flusher = false;
            st.flusher_running || st.state != RunState::Open || st.poisoned.is_some()
        };
        if !running {
            let task = spawn_flusher(inner, &self.log.signals);
            *self.log.flusher.borrow_mut() = Some(task);
        }
        // waiters on truncated offsets re-check (and fail); appenders retry; the flusher runs
        self.log.signals.work.notify(usize::MAX);
        self.log.signals.progress.notify(usize::MAX);
        self.log.signals.space.notify(usize::MAX);
    }
}

/// Where a truncation cuts the log.
struct Cut {
    /// The new active segment.
    base: Offset,
    /// Its new size: the position of the first removed batch, or its whole size.
    size: u64,
    /// The new log end: the base offset of the first removed batch.
    end: Offset,
}

impl PartitionLog {
    /// Removes every batch whose last offset is >= `offset`, so the log ends where the batch
    /// holding `offset` began (batches are never split), and returns the new log end. An
    /// `offset` at or past the log end changes nothing. When nothing above the log start
    /// would be left (`offset` <= log start, or the batch holding it starts there or below),
    /// the log is emptied and restarts at its log start, as with
    /// [`truncate_fully_and_start_at`](Self::truncate_fully_and_start_at).
    ///
    /// Durable on return: the segment file is cut and fdatasync'd, later segments are deleted
    /// and the directory fsync'd, the indexes, the hot tail, the offsets (written, synced,
    /// log end, recovery point, high watermark), the producer state (rebuilt as of the new
    /// end; snapshots past it deleted) and the leader epoch cache (entries from the new end
    /// on dropped) all describe the shorter log. Safe beside appends: it waits its turn and
    /// then holds them off. Appenders and waiters of removed offsets get errors.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        {
            let st = self.inner.borrow();
            st.check_writable()?;
            if offset >= st.leo {
                return Ok(st.leo);
            }
        }
        let mut ex = self.exclusive().await?;
        let (log_start, leo) = {
            let st = self.inner.borrow();
            (st.log_start, st.leo)
        };
        if offset >= leo {
            return Ok(leo);
        }
        if leo == log_start {
            // already empty above the log start; whatever lies below it stays hidden
            return Ok(leo);
        }
        if offset <= log_start {
            self.restart_at(log_start, &mut ex).await?;
        } else {
            match self.find_cut(offset).await? {
                cut if cut.end > log_start => self.cut_at(cut, &mut ex).await?,
                // the batch holding `offset` starts at or below the log start
                _ => self.restart_at(log_start, &mut ex).await?,
            }
        }
        ex.changing = false;
        let end = self.inner.borrow().leo;
        tracing::info!(dir = %self.dir().display(), %offset, new_end = %end, "truncated log");
        Ok(end)
    }

    /// Deletes every segment and restarts the log empty at `offset` (log start = log end =
    /// `offset`): a follower that fell below the leader's log start. Producer state and the
    /// leader epoch cache are cleared. Durable on return.
    pub async fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<()> {
        self.inner.borrow().check_writable()?;
        let mut ex = self.exclusive().await?;
        self.restart_at(offset, &mut ex).await?;
        ex.changing = false;
        tracing::info!(dir = %self.dir().display(), %offset, "log restarted empty");
        Ok(())
    }

    /// Waits for exclusive use: the maintenance permit (one truncation or close at a time),
    /// the append gate, and a stopped flusher that has written and synced everything.
    async fn exclusive(&self) -> Result<Exclusive<'_>> {
        let maintenance = self
            .maintenance
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let waiting = WaitingAppender::new(&self.inner);
        let turn = self
            .append_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let ex = Exclusive {
            log: self,
            _maintenance: maintenance,
            _waiting: waiting,
            _turn: turn,
            changing: false,
        };
        self.inner.borrow().check_writable()?;
        self.inner.borrow_mut().pause_flusher = true;
        self.signals.work.notify(usize::MAX);
        loop {
            let listener = {
                let st = self.inner.borrow();
                st.check_writable()?;
                if let Some(e) = st.disk_full.error(&st.dir) {
                    // the flusher cannot write everything out; the caller retries later
                    return Err(e);
                }
                if !st.flusher_running {
                    break;
                }
                self.signals.progress.listen()
            };
            listener.await;
        }
        let st = self.inner.borrow();
        st.check_writable()?;
        assert!(
            st.queue.is_empty() && st.pending.new_bytes() == 0 && st.unwritten_bytes == 0,
            "a stopped flusher leaves nothing queued"
        );
        assert!(
            st.synced == st.written && st.written == st.leo,
            "a stopped flusher wrote and synced everything (synced {}, written {}, end {})",
            st.synced,
            st.written,
            st.leo
        );
        drop(st);
        Ok(ex)
    }

    /// Finds the batch holding `offset` (log start < `offset` < log end): the log will end
    /// where it starts. A cut at the start of the first segment has nothing left above the
    /// log start; the caller restarts the log then.
    async fn find_cut(&self, offset: Offset) -> Result<Cut> {
        let (base, dma, hint, size, previous) = {
            let st = self.inner.borrow();
            let (_, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .expect("the first segment starts at or below the log start");
            let files = seg.files.as_ref().expect("a segment with data has a file");
            let rel = offset.relative_to(seg.base).unwrap_or(0);
            let previous = st
                .segments
                .range(..seg.base)
                .next_back()
                .map(|(_, p)| (p.base, p.size, p.next_offset));
            (
                seg.base,
                files.dma.clone(),
                seg.index.lookup(rel).1,
                seg.size,
                previous,
            )
        };
        let found = segment::walk_headers(&dma, hint.0, size, |b| b.last < offset).await?;
        // (`offset` may fall in a gap the log cleaner left: the batch after it is cut then)
        let Some(b) = found.filter(|b| offset <= b.last) else {
            let path = segment::log_path(&self.dir(), base);
            return Err(LogError::io(
                "truncating",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no batch header leads to offset {offset}"),
                ),
            ));
        };
        Ok(match previous {
            // the whole segment goes: the one before becomes the active segment again
            Some((base, size, end)) if b.pos == 0 => Cut { base, size, end },
            _ => Cut {
                base,
                size: b.pos,
                end: b.base.min(offset),
            },
        })
    }

    /// Cuts the log at `cut` (above the log start). See [`truncate_to`](Self::truncate_to).
    async fn cut_at(&self, cut: Cut, ex: &mut Exclusive<'_>) -> Result<()> {
        // everything read from the files happens before the switch, while they are whole
        let (dir, dma, mut index) = {
            let st = self.inner.borrow();
            let seg = &st.segments[&cut.base];
            let files = seg.files.as_ref().expect("a segment with data has a file");
            (st.dir.clone(), files.dma.clone(), seg.index.clone())
        };
        let rel_end = cut
            .end
            .relative_to(cut.base)
            .expect("the cut lies in its segment");
        let from = index.truncate(rel_end, cut.size);
        segment::walk_headers(&dma, from.0, cut.size, |b| {
            index.observe(b.max_ts);
            true
        })
        .await?;
        let file_pos = align_down(cut.size as usize) as u64;
        let carry = segment::read_exact_at(&dma, file_pos, (cut.size - file_pos) as usize).await?;
        // the switch: from here on readers see the shorter log
        ex.changing = true;
        let removed = {
            let mut st = self.inner.borrow_mut();
            let later = st.segments.split_off(&cut.base.plus(1));
            let removed: Vec<Offset> = later.into_keys().collect();
            let seg = st.segments.get_mut(&cut.base).expect("cut segment");
            seg.size = cut.size;
            seg.written_size = cut.size;
            seg.allocated = cut.size;
            seg.next_offset = cut.end;
            seg.index = index;
            seg.sealed = false;
            seg.aborted.retain(|a| a.last < cut.end.0);
            st.pending = Pending::new(cut.base, file_pos, carry, cut.end);
            st.hot.truncate(cut.end);
            st.set_end_after_truncation(cut.end);
            st.recovery_point = st.recovery_point.min(cut.base);
            if st.epochs.truncate_from_end(cut.end) {
                st.epochs_dirty = true;
            }
            removed
        };
        for b in removed.iter().rev() {
            Segment::remove_files(&dir, *b)?;
        }
        let path = segment::log_path(&dir, cut.base);
        crate::io::dma_truncate(&dma, cut.size)
            .await
            .map_err(|e| LogError::io("truncating", &path, e))?;
        crate::io::dma_fdatasync(&dma)
            .await
            .map_err(|e| LogError::io("syncing", &path, e))?;
        {
            let st = self.inner.borrow();
            // a sealed segment's .txnindex may name aborts past the cut
            st.segments[&cut.base].write_txn_index(&dir)?;
        }
        self.rebuild_producers_after_truncation().await?;
        self.store_truncated_metadata().await?;
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset`.
    async fn restart_at(&self, offset: Offset, ex: &mut Exclusive<'_>) -> Result<()> {
        ex.changing = true;
        let (dir, removed) = {
            let mut st = self.inner.borrow_mut();
            let removed: Vec<Offset> = st.segments.keys().copied().collect();
            st.segments = BTreeMap::from([(offset, Segment::new_empty(offset))]);
            st.pending = Pending::new(offset, 0, Vec::new(), offset);
            st.hot.truncate(Offset::ZERO);
            st.log_start = offset;
            st.set_end_after_truncation(offset);
            st.recovery_point = offset;
            st.producers = ProducerStates::default();
            st.epochs.clear();
            st.epochs_dirty = true;
            (st.dir.clone(), removed)
        };
        for b in removed.iter().rev() {
            Segment::remove_files(&dir, *b)?;
        }
        for s in list_snapshots(&dir)? {
            remove_snapshot(&dir, s)?;
        }
        sync_dir(&dir)?;
        // with no segment file left, an open after a crash starts the log at meta's log start
        self.store_truncated_metadata().await?;
        let dma = segment::create_file(&dir, offset).await?;
        if let Some(seg) = self.inner.borrow_mut().segments.get_mut(&offset) {
            seg.files = Some(SegmentFiles { dma, plain: None });
        }
        Ok(())
    }

    /// Replays producer state as of the new log end (from the newest snapshot not past it).
    async fn rebuild_producers_after_truncation(&self) -> Result<()> {
        let (dir, segs, leo, now) = {
            let st = self.inner.borrow();
            let segs = ReplaySegment::of_all(&st.segments);
            (st.dir.clone(), segs, st.leo, st.env.clock.now_ms())
        };
        let mut rebuilt = rebuild_producers(&dir, &segs, leo, now).await?;
        let mut st = self.inner.borrow_mut();
        rebuilt.apply_aborted(&mut st.segments);
        st.producers = rebuilt.producers;
        Ok(())
    }

    /// Makes the directory changes durable (deleted segments and snapshots), then writes the
    /// epoch checkpoint and partition.meta as of the truncated log.
    async fn store_truncated_metadata(&self) -> Result<()> {
        let dir = self.inner.borrow().dir.clone();
        crate::io::sync_dir_async(&dir)
            .await
            .map_err(|e| LogError::io("syncing dir", &dir, e))?;
        metafiles::store_epochs(&self.inner).await?;
        metafiles::store_meta(&self.inner, |_| {}).await?;
        self.inner.borrow().check_invariants();
        Ok(())
    }
}

impl Inner {
    /// Moves the end offsets down to `end` after a truncation (everything is written and
    /// synced up to there: the flusher drained before).
    fn set_end_after_truncation(&mut self, end: Offset) {
        assert!(self.queue.is_empty() && self.unwritten_bytes == 0);
        self.leo = end;
        self.written = end;
        self.synced = end;
        self.sync_wanted = end;
        self.unsynced_since_ms = None;
        self.log_start = self.log_start.min(end);
        // the one way the high watermark moves down
        self.hw_requested = self.hw_requested.min(end);
        self.check_invariants();
    }
}
