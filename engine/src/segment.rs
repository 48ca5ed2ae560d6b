//! One segment of a partition log: the `.log` file (O_DIRECT through glommio), its in-memory
//! sparse indexes, and the scan that validates it in recovery.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::batch::{self, BatchHeader, LOG_OVERHEAD};
use crate::error::{LogError, Result};
use crate::index::{self, SegmentIndex, TimeEntry};
use crate::meta::sync_dir;
use crate::producer::AbortedTxn;
use crate::types::{FilePos, Offset, TimestampMs};

/// Read size of recovery scans and header walks.
const SCAN_CHUNK: usize = 1 << 20;

/// Open handles of a segment's `.log` file.
#[derive(Debug, Clone)]
pub struct SegmentFiles {
    /// O_DIRECT handle for writes (active segment) and header reads.
    pub dma: Rc<DmaFile>,
    /// Buffered read-only handle for sendfile(2); opened on first use.
    pub plain: Option<Rc<fs::File>>,
}

#[derive(Debug)]
pub struct Segment {
    pub base: Offset,
    /// `None` until the flusher creates the file (a freshly rolled segment lives in memory first).
    pub files: Option<SegmentFiles>,
    /// Logical size: bytes appended to this segment (written or not).
    pub size: u64,
    /// Bytes handed to the kernel; always a batch boundary.
    pub written_size: u64,
    /// Size the file is preallocated to.
    pub allocated: u64,
    /// One past the last offset appended to this segment.
    pub next_offset: Offset,
    pub index: SegmentIndex,
    /// Wall-clock time of the first append (segment.ms rolls from here).
    pub first_append_ms: Option<i64>,
    pub sealed: bool,
    /// Transactions aborted by a marker in this segment, in marker order (the `.txnindex`).
    pub aborted: Vec<AbortedTxn>,
}

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(index::file_name(base, "log"))
}

impl Segment {
    pub fn new_empty(base: Offset) -> Segment {
        Segment {
            base,
            files: None,
            size: 0,
            written_size: 0,
            allocated: 0,
            next_offset: base,
            index: SegmentIndex::default(),
            first_append_ms: None,
            sealed: false,
            aborted: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.index.max_timestamp()
    }

    /// Opens (creating if needed) the segment's `.log` for O_DIRECT reads and writes.
    pub async fn open_dma(dir: &Path, base: Offset, create: bool) -> Result<Rc<DmaFile>> {
        let path = log_path(dir, base);
        let f = crate::io::dma_open(&path, create)
            .await
            .map_err(|e| LogError::io("opening", &path, e))?;
        Ok(Rc::new(f))
    }

    /// Buffered read-only fd for zero-copy sends.
    pub fn plain_file(&mut self, dir: &Path) -> Result<Option<Rc<fs::File>>> {
        let Some(files) = self.files.as_mut() else {
            return Ok(None);
        };
        if files.plain.is_none() {
            let path = log_path(dir, self.base);
            let f = fs::File::open(&path).map_err(|e| LogError::io("opening", &path, e))?;
            files.plain = Some(Rc::new(f));
        }
        Ok(files.plain.clone())
    }

    /// Adds the final time index entry, as Kafka does when a segment stops being active.
    pub fn finish_time_index(&mut self) {
        if let (Some(max_ts), Some(last_rel)) = (
            self.index.max_timestamp(),
            self.next_offset
                .get()
                .checked_sub(1)
                .and_then(|l| Offset(l).relative_to(self.base)),
        ) {
            if self.index.times.last().is_none_or(|t| max_ts > t.ts) {
                self.index.times.push(TimeEntry {
                    ts: max_ts,
                    rel: last_rel,
                });
            }
        }
    }

    /// Writes `.index` and `.timeindex` (blocking, small, at seal/close only) and syncs them.
    pub fn write_index_files(&self, dir: &Path) -> Result<()> {
        self.write_files(
            dir,
            [
                ("index", self.index.encode_offsets()),
                ("timeindex", self.index.encode_times()),
            ],
        )
    }

    /// Writes the aborted-transaction index `.txnindex` and syncs it.
    pub fn write_txn_index(&self, dir: &Path) -> Result<()> {
        write_txn_index(dir, self.base, &self.aborted)
    }

    /// The contents of `.index`, `.timeindex` and `.txnindex`, for [`write_files`] (off the
    /// reactor) at seal and close.
    pub fn index_file_contents(&self) -> Result<[(&'static str, Vec<u8>); 3]> {
        Ok([
            ("index", self.index.encode_offsets()),
            ("timeindex", self.index.encode_times()),
            (
                "txnindex",
                encode_txn_index(dir_less_name(self.base), &self.aborted)?,
            ),
        ])
    }

    fn write_files<const N: usize>(&self, dir: &Path, files: [(&str, Vec<u8>); N]) -> Result<()> {
        write_files(dir, self.base, files)
    }

    /// Loads index files if they exist and are plausible.
    pub fn load_index_files(
        dir: &Path,
        base: Offset,
        size: u64,
        next: Offset,
    ) -> Option<SegmentIndex> {
        let offsets = fs::read(dir.join(index::file_name(base, "index"))).ok()?;
        let times = fs::read(dir.join(index::file_name(base, "timeindex"))).ok()?;
        let rel_end = next.relative_to(base)?;
        SegmentIndex::decode(&offsets, &times, size, rel_end)
    }

    /// Loads the aborted-transaction index, if the segment has one.
    pub fn load_txn_index(dir: &Path, base: Offset) -> Option<Vec<AbortedTxn>> {
        let bytes = fs::read(dir.join(index::file_name(base, "txnindex"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes the segment's files (caller syncs the directory).
    pub fn remove_files(dir: &Path, base: Offset) -> Result<()> {
        for ext in ["log", "index", "timeindex", "txnindex"] {
            let path = dir.join(index::file_name(base, ext));
            match crate::io::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("deleting", &path, e)),
            }
        }
        Ok(())
    }
}

/// Writes the aborted-transaction index `.txnindex` of the segment at `base` and syncs it.
pub fn write_txn_index(dir: &Path, base: Offset, aborted: &[AbortedTxn]) -> Result<()> {
    let bytes = encode_txn_index(dir.join(index::file_name(base, "txnindex")), aborted)?;
    write_files(dir, base, [("txnindex", bytes)])
}

fn dir_less_name(base: Offset) -> PathBuf {
    PathBuf::from(index::file_name(base, "txnindex"))
}

fn encode_txn_index(path: PathBuf, aborted: &[AbortedTxn]) -> Result<Vec<u8>> {
    serde_json::to_vec(aborted).map_err(|e| LogError::BadMetadata {
        path,
        reason: e.to_string(),
    })
}

/// Writes each `(extension, bytes)` file of the segment at `base` (temp file, fdatasync,
/// rename; blocking). The caller fsyncs the directory.
pub fn write_files<const N: usize>(
    dir: &Path,
    base: Offset,
    files: [(&str, Vec<u8>); N],
) -> Result<()> {
    for (ext, bytes) in files {
        let path = dir.join(index::file_name(base, ext));
        let tmp = path.with_extension(format!("{ext}.tmp"));
        crate::io::write_synced(&tmp, &bytes).map_err(|e| LogError::io("writing", &tmp, e))?;
        crate::io::rename(&tmp, &path).map_err(|e| LogError::io("renaming", &path, e))?;
    }
    Ok(())
}

/// Outcome of validating a segment file from `start`.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Bytes from the file start that hold valid, contiguous batches.
    pub valid_size: u64,
    /// One past the last valid offset.
    pub next_offset: Offset,
    pub index: SegmentIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// Reads the segment from position 0 and keeps the longest prefix of valid batches: complete,
/// magic 2, CRC-32C correct, record count consistent, offsets contiguous from `base` (with
/// `allow_gaps`, for segments the log cleaner wrote: increasing, gaps allowed, as Kafka's
/// recovery checks). Rebuilds the indexes on the way. Never allocates more than `SCAN_CHUNK`
/// + one batch.
pub async fn scan(
    file: &DmaFile,
    base: Offset,
    file_len: u64,
    index_interval: u64,
    max_batch: usize,
    allow_gaps: bool,
) -> Result<ScanOutcome> {
    let read_at = |pos, len| read_exact_at(file, pos, len);
    scan_with(
        read_at,
        base,
        file_len,
        index_interval,
        max_batch,
        allow_gaps,
    )
    .await
}

/// [`scan`] over any source of the segment's bytes: `read_at(pos, len)` returns up to `len`
/// bytes at `pos` (short at end of file), as [`read_exact_at`] does for the file. The recovery
/// scan itself; `fuzzing::segment_scan` runs it over a byte slice.
pub async fn scan_with<F, R>(
    mut read_at: F,
    base: Offset,
    file_len: u64,
    index_interval: u64,
    max_batch: usize,
    allow_gaps: bool,
) -> Result<ScanOutcome>
where
    F: FnMut(u64, usize) -> R,
    R: std::future::Future<Output = Result<Vec<u8>>>,
{
    let mut index = SegmentIndex::default();
    let mut pos = 0u64;
    let mut next = base;
    let mut stopped = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = 0u64; // file position of buf[0]
    'outer: while pos < file_len {
        // make sure at least a header is buffered
        let need_header = (pos - buf_pos) as usize + LOG_OVERHEAD;
        if buf.len() < need_header {
            let n = SCAN_CHUNK.min((file_len - pos) as usize);
            buf = read_at(pos, n).await?;
            buf_pos = pos;
            if buf.len() < LOG_OVERHEAD {
                stopped = Some(format!("incomplete batch header at position {pos}"));
                break;
            }
        }
        let off = (pos - buf_pos) as usize;
        let Some(total) = BatchHeader::parse(&buf[off..])
            .and_then(|h| h.total_len())
            .or_else(|| {
                // fewer than 61 bytes buffered: judge the length field alone
                let l = i32::from_be_bytes(buf[off + 8..off + 12].try_into().ok()?);
                // (a negative length must not reach the addition: it overflowed)
                usize::try_from(l)
                    .ok()
                    .filter(|&l| l >= batch::HEADER_LEN - LOG_OVERHEAD)
                    .map(|l| l + LOG_OVERHEAD)
            })
        else {
            stopped = Some(format!("invalid batch length at position {pos}"));
            break;
        };
        if total as u64 > file_len - pos || total > max_batch.max(SCAN_CHUNK) * 2 {
            stopped = Some(format!(
                "batch at position {pos} runs past the end of the file"
            ));
            break;
        }
        if off + total > buf.len() {
            buf = read_at(pos, total.max(SCAN_CHUNK.min((file_len - pos) as usize))).await?;
            buf_pos = pos;
            if buf.len() < total {
                stopped = Some(format!("truncated batch at position {pos}"));
                break 'outer;
            }
        }
        let off = (pos - buf_pos) as usize;
        let bytes = &buf[off..off + total];
        // stored batches: a cleaned one keeps its offsets with fewer records
        let header = match batch::validate_stored(bytes) {
            Ok(h) => h,
            Err(e) => {
                stopped = Some(format!("batch at position {pos}: {e}"));
                break;
            }
        };
        if header.base() < next
            || (!allow_gaps && header.base() != next)
            || header.base_offset.get() < 0
        {
            stopped = Some(format!(
                "batch at position {pos} has base offset {} where {next} was expected",
                header.base_offset.get()
            ));
            break;
        }
        let (Some(base_rel), Some(last_rel)) = (
            header.base().relative_to(base),
            header.last().relative_to(base),
        ) else {
            stopped = Some(format!(
                "batch at position {pos} is beyond the segment's offset range"
            ));
            break;
        };
        index.on_append(
            index_interval,
            base_rel,
            last_rel,
            FilePos(pos),
            total as u64,
            header.max_timestamp.get(),
        );
        next = header.last().plus(1);
        pos += total as u64;
    }
    Ok(ScanOutcome {
        valid_size: pos,
        next_offset: next,
        index,
        stopped,
    })
}

/// Reads up to `len` bytes at `pos` (short at end of file).
pub async fn read_exact_at(file: &DmaFile, pos: u64, len: usize) -> Result<Vec<u8>> {
    let r = file
        .read_at(pos, len)
        .await
        .map_err(|e| LogError::io("reading", path_of(file), e.into()))?;
    Ok(r.to_vec())
}

pub fn path_of(file: &DmaFile) -> PathBuf {
    file.path().map(|p| p.to_path_buf()).unwrap_or_default()
}

/// A batch header found by `walk_headers`.
#[derive(Debug, Clone, Copy)]
pub struct FoundBatch {
    pub pos: u64,
    pub len: u64,
    pub base: Offset,
    pub last: Offset,
    pub max_ts: TimestampMs,
}

/// Walks batch headers from `from` (a batch boundary) while `keep_going` says so, never past
/// `end`. Used by reads and timestamp lookups on written (already validated) data.
pub async fn walk_headers(
    file: &DmaFile,
    from: u64,
    end: u64,
    mut keep_going: impl FnMut(&FoundBatch) -> bool,
) -> Result<Option<FoundBatch>> {
    const WALK_CHUNK: usize = 64 << 10;
    let mut pos = from;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = from;
    while pos < end {
        let need = (pos - buf_pos) as usize + batch::HEADER_LEN;
        if buf.len() < need {
            let n = WALK_CHUNK.min((end - pos) as usize).max(batch::HEADER_LEN);
            buf = read_exact_at(file, pos, n).await?;
            buf_pos = pos;
        }
        let off = (pos - buf_pos) as usize;
        let Some(h) = BatchHeader::parse(&buf[off..]) else {
            return Ok(None);
        };
        let Some(len) = h.total_len() else {
            return Ok(None);
        };
        let found = FoundBatch {
            pos,
            len: len as u64,
            base: h.base(),
            last: h.last(),
            max_ts: h.max_timestamp.get(),
        };
        if pos + found.len > end || !keep_going(&found) {
            return Ok(Some(found));
        }
        pos += found.len;
    }
    Ok(None)
}

/// Calls `f` with the header of every batch in `[from, end)` and, for control batches, the
/// whole batch (they are tiny). Used by recovery to replay producer state.
pub async fn walk_batches(
    file: &DmaFile,
    from: u64,
    end: u64,
    mut f: impl FnMut(&BatchHeader, Option<&[u8]>),
) -> Result<()> {
    const WALK_CHUNK: usize = 256 << 10;
    const CONTROL_MAX: usize = 512;
    let mut pos = from;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = from;
    while pos < end {
        let off = (pos - buf_pos) as usize;
        if buf.len() < off + batch::HEADER_LEN {
            let n = WALK_CHUNK.min((end - pos) as usize).max(batch::HEADER_LEN);
            buf = read_exact_at(file, pos, n).await?;
            buf_pos = pos;
            if buf.len() < batch::HEADER_LEN {
                return Ok(()); // short file
            }
            continue;
        }
        let Some(h) = BatchHeader::parse(&buf[off..]) else {
            return Ok(());
        };
        let Some(len) = h.total_len() else {
            return Ok(());
        };
        if pos + len as u64 > end {
            return Ok(());
        }
        if h.is_control() && len <= CONTROL_MAX {
            if buf.len() < off + len {
                buf =
                    read_exact_at(file, pos, len.max(WALK_CHUNK.min((end - pos) as usize))).await?;
                buf_pos = pos;
                if buf.len() < len {
                    return Ok(()); // short file
                }
                continue;
            }
            f(h, Some(&buf[off..off + len]));
        } else {
            f(h, None);
        }
        pos += len as u64;
    }
    Ok(())
}

/// Creates a segment's file and makes its directory entry durable.
pub async fn create_file(dir: &Path, base: Offset) -> Result<Rc<DmaFile>> {
    let f = Segment::open_dma(dir, base, true).await?;
    sync_dir(dir)?;
    Ok(f)
}
