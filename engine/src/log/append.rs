//! The append path: validation, ordering behind the FIFO gate, the copy into the pending
//! O_DIRECT buffer, segment rolls, and the durability waits that follow.

use std::cell::RefCell;
use std::rc::Rc;

use super::types::{AppendInfo, AppendOptions, TimestampType};
use super::{align_down, Chunk, Inner, PartitionLog, Pending, RunState};
use crate::batch::{self, BatchHeader};
use crate::error::{BatchError, LogError, Result};
use crate::producer::{self, Admit, Marker, ProducerError};
use crate::segment::Segment;
use crate::types::{Durability, FilePos, Offset};

/// Counts an appender as waiting for as long as it lives (also when its future is dropped).
pub(super) struct WaitingAppender(Rc<RefCell<Inner>>);

impl WaitingAppender {
    pub(super) fn new(inner: &Rc<RefCell<Inner>>) -> Self {
        inner.borrow_mut().appenders_waiting += 1;
        WaitingAppender(inner.clone())
    }
}

impl Drop for WaitingAppender {
    fn drop(&mut self) {
        self.0.borrow_mut().appenders_waiting -= 1;
    }
}

impl Inner {
    /// Closes the active segment's pending buffer as a sealing chunk and starts a new segment.
    fn roll(&mut self) {
        let new_base = self.leo;
        let p = std::mem::replace(
            &mut self.pending,
            Pending::new(new_base, 0, Vec::new(), new_base),
        );
        self.queue.push_back(Chunk {
            segment: p.segment,
            file_pos: p.file_pos,
            new_bytes: p.new_bytes(),
            len: p.len,
            buf: p.buf,
            end_offset: p.end_offset,
            seal: true,
            snapshot: Some(self.producers.to_json()),
        });
        tracing::debug!(dir = %self.dir.display(), base = %new_base, "rolling segment");
        self.segments.insert(new_base, Segment::new_empty(new_base));
    }

    /// Moves the pending buffer to the write queue, keeping its partial last page as carry.
    pub(super) fn take_pending(&mut self) {
        let p = &mut self.pending;
        if p.new_bytes() == 0 {
            return;
        }
        let Some(buf) = p.buf.take() else { return };
        let cut = align_down(p.len);
        let carry = buf.as_bytes()[cut..p.len].to_vec();
        let chunk = Chunk {
            segment: p.segment,
            file_pos: p.file_pos,
            new_bytes: p.new_bytes(),
            len: p.len,
            buf: Some(buf),
            end_offset: p.end_offset,
            seal: false,
            snapshot: None,
        };
        *p = Pending::new(p.segment, p.file_pos + cut as u64, carry, p.end_offset);
        self.queue.push_back(chunk);
    }

    /// Appends one validated batch now (the caller checked writability and buffer room).
    /// A leader append checks producer state and writes the offset, epoch and (for
    /// LogAppendTime) timestamp into the stored copy; a replica append stores the leader's
    /// bytes as they are, at the leader's offsets, and only records producer state.
    fn append_now(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        marker: Option<Marker>,
        origin: Origin<'_>,
    ) -> Result<AppendInfo> {
        let pid = header.producer_id.get();
        match origin {
            Origin::Leader(opts) => {
                if marker.is_some() {
                    self.txn_guards.remove(&pid);
                } else if header.is_transactional()
                    && !self
                        .producers
                        .in_transaction(pid, header.producer_epoch.get())
                    && (opts.txn_guard.is_none()
                        || self.txn_guards.get(&pid) != opts.txn_guard.as_ref())
                {
                    return Err(ProducerError::InvalidTxnState {
                        producer_id: pid,
                        reason: "the partition is not part of an ongoing transaction (or it ended)"
                            .into(),
                    }
                    .into());
                }
                if let Admit::Duplicate(d) = self.producers.check(header, marker)? {
                    return Ok(AppendInfo {
                        base_offset: Offset(d.base),
                        last_offset: Offset(d.last),
                        log_append_time: None,
                        log_start_offset: self.log_start,
                        duplicate: true,
                    });
                }
            }
            Origin::Replica => {
                // checked here, under the append order, not before the gate: the log end
                // may move while an appender waits. A base above the log end is a gap the
                // leader's cleaner left (Kafka's follower only needs increasing offsets).
                let got = header.base_offset.get();
                if u64::try_from(got).map_or(true, |g| g < self.leo.0) {
                    return Err(LogError::OffsetMismatch {
                        expected: self.leo,
                        got,
                    });
                }
                if marker.is_some() {
                    // a marker ends the producer's transaction here, as on the leader
                    self.txn_guards.remove(&pid);
                }
            }
        }
        let now = self.env.clock.now_ms();
        let size = batch.len();
        let count = header.record_count.get().max(0) as u64;
        // a leader assigns the log end; a replica keeps the leader's offsets
        let base = match origin {
            Origin::Leader(_) => self.leo,
            Origin::Replica => header.base(),
        };
        // lastOffsetDelta, not the record count: a cleaned batch keeps its offset range
        let last = base.plus(header.last_offset_delta.get().max(0) as u64);
        let roll = {
            let a = self.active();
            !a.is_empty()
                && (a.size + size as u64 > self.config.segment_bytes
                    // index entries hold offsets relative to the segment base as u32
                    || last.relative_to(a.base).is_none()
                    || self.config.segment_ms.is_some_and(|ms| {
                        a.first_append_ms
                            .is_some_and(|t| now.saturating_sub(t) >= ms as i64)
                    }))
        };
        if roll {
            self.roll();
        }
        if base > self.leo && self.gapped.insert(self.active().base) {
            // the flusher stores this before the batch reaches the disk
            self.meta_dirty = true;
        }
        if self.pending.room() < size && self.pending.new_bytes() > 0 {
            // full: hand it over whole and continue in a fresh buffer
            self.take_pending();
        }
        let p = &mut self.pending;
        p.ensure_room(size);
        let start = p.len;
        let buf = p.buf.as_mut().expect("ensure_room allocates");
        let dst = &mut buf.as_bytes_mut()[start..start + size];
        dst.copy_from_slice(batch);
        let mut log_append_time = None;
        if let Origin::Leader(opts) = origin {
            let h = BatchHeader::mut_from(dst).expect("validated batch has a header");
            h.base_offset.set(base.0 as i64);
            h.partition_leader_epoch.set(opts.leader_epoch);
            if opts.timestamp_type == TimestampType::LogAppendTime {
                h.attributes
                    .set(h.attributes.get() | batch::ATTR_TIMESTAMP_LOG_APPEND);
                h.max_timestamp.set(now);
                log_append_time = Some(now);
                let crc = batch::compute_crc(dst);
                BatchHeader::mut_from(dst)
                    .expect("validated batch has a header")
                    .crc
                    .set(crc);
            }
        } else if header.is_log_append_time() {
            log_append_time = Some(header.max_timestamp.get());
        }
        let max_ts = BatchHeader::parse(dst)
            .map(|h| h.max_timestamp.get())
            .unwrap_or(now);
        p.len += size;
        p.end_offset = last.plus(1);
        let stored = &p.buf.as_ref().expect("allocated").as_bytes()[start..start + size];
        self.hot.push(stored, base, last, max_ts);
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let pos = FilePos(seg.size);
        let (Some(base_rel), Some(last_rel)) =
            (base.relative_to(seg.base), last.relative_to(seg.base))
        else {
            unreachable!("the roll above keeps relative offsets within u32")
        };
        seg.index
            .on_append(interval, base_rel, last_rel, pos, size as u64, max_ts);
        seg.size += size as u64;
        seg.next_offset = last.plus(1);
        seg.first_append_ms.get_or_insert(now);
        self.leo = last.plus(1);
        self.add_unwritten(size);
        let epoch = match origin {
            Origin::Leader(opts) => opts.leader_epoch,
            Origin::Replica => header.partition_leader_epoch.get(),
        };
        if self.epochs.assign(epoch, base) {
            self.epochs_dirty = true;
        }
        if matches!(origin, Origin::Leader(_)) && marker.is_none() {
            self.counters.on_produce(count, size as u64);
        }
        if let Some(aborted) = self.producers.on_append(header, marker, base, last, now) {
            self.active_mut().aborted.push(aborted);
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_append_time,
            log_start_offset: self.log_start,
            duplicate: false,
        })
    }
}

/// Who a batch comes from.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// A producer (or the broker itself): the leader assigns offsets and enforces producer
    /// rules.
    Leader(&'a AppendOptions),
    /// The partition leader, copied by a follower: stored unchanged at the leader's offsets.
    /// Producer rules are not checked again (the leader did; Kafka's appendAsFollower).
    Replica,
}

impl PartitionLog {
    /// Validates `batch` (one v2 batch) and appends it, assigning offsets. Returns once the
    /// batch is in the write buffer; await [`wait_durable`](Self::wait_durable) for acks.
    /// Waits only when the write buffer is full.
    pub async fn append(&self, batch: &[u8], opts: AppendOptions) -> Result<AppendInfo> {
        self.append_in_order(batch, Origin::Leader(&opts)).await
    }

    /// Appends one batch copied from the partition leader, at the leader's offsets: the
    /// batch's baseOffset must be at or above the log end offset
    /// ([`LogError::OffsetMismatch`] otherwise; above it is a gap the leader's log cleaner
    /// left, recorded so recovery expects it), and its bytes are stored unchanged (baseOffset, partitionLeaderEpoch, timestamps and
    /// CRC as the leader wrote them). Validated like [`append`](Self::append) (length, magic,
    /// CRC, max.message.bytes, control markers), with the same back-pressure and ordering;
    /// producer state (sequences, transactions, aborted index) is recorded but not checked,
    /// since the leader already accepted the batch. Await
    /// [`wait_durable`](Self::wait_durable) as for a leader append.
    pub async fn append_replica(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_in_order(batch, Origin::Replica).await
    }

    /// Validation, then the fast path or a FIFO turn behind the appenders already waiting
    /// for buffer space, so batches keep their arrival order.
    async fn append_in_order(&self, batch: &[u8], origin: Origin<'_>) -> Result<AppendInfo> {
        let max = self.inner.borrow().config.max_message_bytes;
        if batch.len() > max {
            return Err(BatchError::TooLarge {
                size: batch.len(),
                max,
            }
            .into());
        }
        let header = *match origin {
            Origin::Leader(_) => batch::validate(batch)?,
            // a leader's cleaned batch may hold fewer records than its offset range
            Origin::Replica => batch::validate_stored(batch)?,
        };
        let marker = if header.is_control() {
            Some(producer::parse_marker(batch)?)
        } else {
            None
        };
        {
            // fast path: room in the buffer and nobody queued ahead
            let mut st = self.inner.borrow_mut();
            st.check_appendable()?;
            if st.appenders_waiting == 0 && st.has_room(batch.len()) {
                let info = st.append_now(batch, &header, marker, origin)?;
                self.signals.work.notify(1);
                return Ok(info);
            }
        }
        let _waiting = WaitingAppender::new(&self.inner);
        let _turn = self
            .append_gate
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                st.check_appendable()?;
                if st.has_room(batch.len()) {
                    let info = st.append_now(batch, &header, marker, origin)?;
                    self.signals.work.notify(1);
                    return Ok(info);
                }
                match &st.env.write_budget {
                    // this log's buffer has room: the shard's budget is what is full, and
                    // another log's flusher frees it
                    Some(b) if st.own_room(batch.len()) => b.listen(),
                    _ => self.signals.space.listen(),
                }
            };
            listener.await;
        }
    }

    /// Waits until everything up to and including `offset` reached `level`.
    pub async fn wait_durable(&self, offset: Offset, level: Durability) -> Result<()> {
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                match level {
                    Durability::Written if st.written > offset => return Ok(()),
                    Durability::Synced if st.synced > offset => return Ok(()),
                    _ => {}
                }
                if let Some(cause) = &st.poisoned {
                    return Err(LogError::Poisoned {
                        path: st.dir.clone(),
                        cause: cause.clone(),
                    });
                }
                if offset >= st.written {
                    // not acknowledged: the batch waits in memory for disk space
                    if let Some(e) = st.disk_full.error(&st.dir) {
                        return Err(e);
                    }
                }
                if st.state == RunState::Closed || offset >= st.leo {
                    return Err(LogError::Closed);
                }
                if level == Durability::Synced && st.sync_wanted <= offset {
                    st.sync_wanted = offset.plus(1);
                    self.signals.work.notify(1);
                }
                self.signals.progress.listen()
            };
            listener.await;
        }
    }

    /// Appends and waits for `level`: the whole produce path of one batch.
    pub async fn append_durable(
        &self,
        batch: &[u8],
        opts: AppendOptions,
        level: Durability,
    ) -> Result<AppendInfo> {
        let info = self.append(batch, opts).await?;
        self.wait_durable(info.last_offset, level).await?;
        Ok(info)
    }
}
