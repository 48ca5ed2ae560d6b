//! Offline segment inspection, like Kafka's kafka-dump-log.sh: walks a `.log` file batch by
//! batch (header, length, magic, CRC-32C, record count, offsets), optionally decoding records
//! (compressed batches decompressed), and says where the file stops being valid: the longest
//! valid prefix is what sluice's recovery would keep. `.index` and `.timeindex` files are
//! listed entry by entry.
//!
//! The file is streamed: nothing is allocated from a length field before the file is known to
//! hold that many bytes.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use bytes::Bytes;
use serde::Serialize;
use sluice_engine::batch::{self as eb, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

use crate::records::decode_batches;

/// One record of a batch (`--print-records`).
#[derive(Debug, Clone, Serialize)]
pub struct RecordLine {
    pub offset: i64,
    pub timestamp: i64,
    pub sequence: i32,
    pub key_size: i64,
    pub value_size: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, Option<String>)>,
    /// A control record's transaction marker: ("COMMIT" | "ABORT", coordinator epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_txn_marker: Option<(&'static str, i32)>,
}

/// One batch, with what kafka-dump-log prints about it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchLine {
    pub base_offset: i64,
    pub last_offset: i64,
    pub count: i32,
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partition_leader_epoch: i32,
    pub is_transactional: bool,
    pub is_control: bool,
    pub position: u64,
    /// "CreateTime" or "LogAppendTime".
    pub timestamp_type: &'static str,
    /// The batch's max timestamp (what Kafka prints).
    pub timestamp: i64,
    pub size: u64,
    pub magic: i8,
    pub compresscodec: &'static str,
    pub crc: u32,
    pub isvalid: bool,
    /// KIP-534's delete horizon, set by the log cleaner on batches keeping tombstones or a
    /// removable transaction marker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_horizon_ms: Option<i64>,
    /// Why the batch is invalid.
    pub error: Option<String>,
    pub records: Option<Vec<RecordLine>>,
}

impl BatchLine {
    /// The line kafka-dump-log prints for this batch.
    pub fn kafka_line(&self) -> String {
        format!(
            "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {} \
             producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
             isControl: {} position: {} {}: {} size: {} magic: {} compresscodec: {} crc: {} \
             isvalid: {}",
            self.base_offset,
            self.last_offset,
            self.count,
            self.base_sequence,
            self.last_sequence,
            self.producer_id,
            self.producer_epoch,
            self.partition_leader_epoch,
            self.is_transactional,
            self.is_control,
            self.position,
            self.timestamp_type,
            self.timestamp,
            self.size,
            self.magic,
            self.compresscodec,
            self.crc,
            self.isvalid
        )
    }
}

impl RecordLine {
    /// kafka-dump-log's `--print-data-log` record line.
    pub fn kafka_line(&self, timestamp_type: &str) -> String {
        let keys: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        let mut s = format!(
            "| offset: {} {}: {} keySize: {} valueSize: {} sequence: {} headerKeys: [{}]",
            self.offset,
            timestamp_type,
            self.timestamp,
            self.key_size,
            self.value_size,
            self.sequence,
            keys.join(",")
        );
        if let Some((kind, epoch)) = self.end_txn_marker {
            s.push_str(&format!(" endTxnMarker: {kind} coordinatorEpoch: {epoch}"));
            return s;
        }
        if let Some(k) = &self.key {
            s.push_str(&format!(" key: {k}"));
        }
        if !self.headers.is_empty() {
            let hs: Vec<String> = self
                .headers
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null")))
                .collect();
            s.push_str(&format!(" headers: [{}]", hs.join(",")));
        }
        if let Some(v) = &self.value {
            s.push_str(&format!(" payload: {v}"));
        }
        s
    }
}

/// Where a file stops being valid.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Byte position of the first invalid batch: the valid prefix ends here.
    pub position: u64,
    pub reason: String,
    /// Bytes from `position` to the end of the file.
    pub bytes_after: u64,
}

/// Summary of one dumped `.log` file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    pub file: String,
    /// From the file name (20-digit base offset), if it has one.
    pub base_offset: Option<i64>,
    pub file_size: u64,
    pub batches: u64,
    pub valid_batches: u64,
    pub records: u64,
    /// End of the valid prefix (= file size for a healthy file without padding).
    pub valid_bytes: u64,
    pub first_offset: Option<i64>,
    pub last_valid_offset: Option<i64>,
    /// Zero bytes after the last batch (preallocated space of an active segment).
    pub zero_padding: u64,
    pub damage: Option<Damage>,
    /// Things worth knowing that are not damage (offset gaps).
    pub notes: Vec<String>,
    /// Offsets of the valid range that hold no record: removed by the log cleaner (between
    /// batches, and inside batches that keep their offset range with fewer records).
    pub absent_offsets: u64,
}

/// What to decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    pub print_records: bool,
}

/// The base offset in a segment file name (`00000000000000000042.log` -> 42).
pub fn base_offset_of(path: &Path) -> Option<i64> {
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn record_lines(batch: &[u8], h: &BatchHeader) -> Result<Vec<RecordLine>, String> {
    let base_seq = h.base_sequence.get();
    let seq = |delta: i64| {
        if base_seq < 0 {
            -1
        } else {
            base_seq.wrapping_add(delta as i32)
        }
    };
    let base = h.base_offset.get();
    let marker = h
        .is_control()
        .then(|| sluice_engine::producer::parse_marker(batch).ok())
        .flatten()
        .map(|m| {
            (
                if m.commit { "COMMIT" } else { "ABORT" },
                m.coordinator_epoch,
            )
        });
    if h.compression() == eb::Compression::None {
        let recs = eb::records(batch).ok_or("malformed records")?;
        return Ok(recs
            .into_iter()
            .map(|r| RecordLine {
                offset: base + i64::from(r.offset_delta),
                timestamp: r.timestamp,
                sequence: seq(i64::from(r.offset_delta)),
                key_size: r.key.map_or(-1, |k| k.len() as i64),
                value_size: r.value.map_or(-1, |v| v.len() as i64),
                key: r.key.map(text),
                value: r.value.map(text),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (text(k), v.map(text)))
                    .collect(),
                end_txn_marker: marker,
            })
            .collect());
    }
    let batches = decode_batches(&Bytes::copy_from_slice(batch)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in &batches {
        for r in b.iter() {
            let r = r.map_err(|e| e.to_string())?;
            out.push(RecordLine {
                offset: r.offset,
                timestamp: r.timestamp,
                sequence: seq(r.offset - base),
                key_size: r.key.map_or(-1, |k| k.len() as i64),
                value_size: r.value.map_or(-1, |v| v.len() as i64),
                key: r.key.map(text),
                value: r.value.map(text),
                headers: r
                    .headers()
                    .into_iter()
                    .map(|(k, v)| (text(k), v.map(text)))
                    .collect(),
                end_txn_marker: None,
            });
        }
    }
    Ok(out)
}

fn batch_line(batch: &[u8], h: &BatchHeader, position: u64, opts: DumpOptions) -> BatchLine {
    // a stored batch: the log cleaner may have left fewer records than its offset range
    let (isvalid, mut error) = match eb::validate_stored(batch) {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.to_string())),
    };
    let base_seq = h.base_sequence.get();
    let delta = h.last_offset_delta.get();
    let records = if opts.print_records && isvalid {
        match record_lines(batch, h) {
            Ok(r) => Some(r),
            Err(e) => {
                error = Some(format!("records: {e}"));
                None
            }
        }
    } else {
        None
    };
    BatchLine {
        base_offset: h.base_offset.get(),
        last_offset: h.base_offset.get().wrapping_add(i64::from(delta)),
        count: h.record_count.get(),
        base_sequence: base_seq,
        last_sequence: if base_seq < 0 {
            -1
        } else {
            base_seq.wrapping_add(delta)
        },
        producer_id: h.producer_id.get(),
        producer_epoch: h.producer_epoch.get(),
        partition_leader_epoch: h.partition_leader_epoch.get(),
        is_transactional: h.is_transactional(),
        is_control: h.is_control(),
        position,
        timestamp_type: if h.is_log_append_time() {
            "LogAppendTime"
        } else {
            "CreateTime"
        },
        timestamp: h.max_timestamp.get(),
        size: batch.len() as u64,
        magic: h.magic,
        compresscodec: h.compression().name(),
        crc: h.crc.get(),
        isvalid,
        delete_horizon_ms: h.delete_horizon(),
        error,
        records,
    }
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// True if everything left in `r` is zero bytes.
fn rest_is_zero(r: &mut impl Read) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(r, &mut buf)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
    }
}

/// Walks the `.log` file at `path`, calling `on_batch` for every batch in file order, and
/// returns the summary. Only I/O errors fail; damage is reported in the summary.
pub fn dump_segment(
    path: &Path,
    opts: DumpOptions,
    mut on_batch: impl FnMut(&BatchLine) -> io::Result<()>,
) -> io::Result<SegmentSummary> {
    let file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let base_offset = base_offset_of(path);
    let mut s = SegmentSummary {
        file: path.display().to_string(),
        base_offset,
        file_size,
        batches: 0,
        valid_batches: 0,
        records: 0,
        valid_bytes: 0,
        first_offset: None,
        last_valid_offset: None,
        zero_padding: 0,
        damage: None,
        notes: Vec::new(),
        absent_offsets: 0,
    };
    let mut pos: u64 = 0;
    let mut next_offset: Option<i64> = base_offset;
    let mut header = [0u8; HEADER_LEN];
    let mut batch: Vec<u8> = Vec::new();
    let damage = |s: &mut SegmentSummary, position: u64, reason: String| {
        if s.damage.is_none() {
            s.damage = Some(Damage {
                position,
                reason,
                bytes_after: file_size - position,
            });
        }
    };
    while pos < file_size {
        let n = read_full(&mut r, &mut header)?;
        let zero_tail = |r: &mut BufReader<File>, header: &[u8]| -> io::Result<bool> {
            Ok(header.iter().all(|&b| b == 0) && rest_is_zero(r)?)
        };
        if n < HEADER_LEN {
            if zero_tail(&mut r, &header[..n])? {
                s.zero_padding = file_size - pos;
            } else {
                damage(
                    &mut s,
                    pos,
                    format!("truncated batch header: {n} bytes where {HEADER_LEN} are needed"),
                );
            }
            break;
        }
        let Some(h) = BatchHeader::parse(&header) else {
            break;
        };
        let Some(total) = h.total_len() else {
            if zero_tail(&mut r, &header)? {
                s.zero_padding = file_size - pos;
            } else {
                damage(
                    &mut s,
                    pos,
                    format!(
                        "invalid batch length {} (the smallest batch is {} bytes)",
                        h.batch_length.get(),
                        HEADER_LEN - LOG_OVERHEAD
                    ),
                );
            }
            break;
        };
        if total as u64 > file_size - pos {
            damage(
                &mut s,
                pos,
                format!(
                    "batch at offset {} declares {} bytes but only {} remain (truncated)",
                    h.base_offset.get(),
                    total,
                    file_size - pos
                ),
            );
            break;
        }
        batch.clear();
        batch.extend_from_slice(&header);
        batch.resize(total, 0);
        let got = read_full(&mut r, &mut batch[HEADER_LEN..])?;
        if got < total - HEADER_LEN {
            damage(&mut s, pos, "the file ended inside a batch".into());
            break;
        }
        let h = BatchHeader::parse(&batch).copied().unwrap_or(*h);
        let mut line = batch_line(&batch, &h, pos, opts);
        s.batches += 1;
        // offsets must go forward; gaps are what the log cleaner leaves (compacted topics)
        let base = h.base_offset.get();
        if line.isvalid && s.damage.is_none() {
            if let Some(expected) = next_offset {
                if base < expected {
                    line.isvalid = false;
                    line.error = Some(format!(
                        "base offset {base} goes backwards (expected {expected} or more)"
                    ));
                } else if base > expected {
                    s.absent_offsets += (base - expected) as u64;
                    s.notes.push(format!(
                        "offset gap at position {pos}: base offset {base} where {expected} was \
                         expected (offsets {expected}..{} removed by the log cleaner)",
                        base - 1
                    ));
                }
            }
        }
        if line.isvalid && s.damage.is_none() {
            let range = line.last_offset - base + 1;
            s.absent_offsets += (range - i64::from(line.count.max(0))).max(0) as u64;
            s.valid_batches += 1;
            s.records += line.count.max(0) as u64;
            s.valid_bytes = pos + total as u64;
            s.first_offset.get_or_insert(base);
            s.last_valid_offset = Some(line.last_offset);
            next_offset = Some(line.last_offset + 1);
        } else if !line.isvalid {
            let reason = format!(
                "batch at offset {base}: {}",
                line.error.clone().unwrap_or_else(|| "invalid".into())
            );
            damage(&mut s, pos, reason);
        }
        on_batch(&line)?;
        pos += total as u64;
    }
    if s.damage.is_none() && s.zero_padding == 0 {
        s.valid_bytes = pos.min(file_size);
    }
    Ok(s)
}

/// One entry of an index file.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    pub offset: i64,
    /// `.index`: file position of the batch.
    pub position: Option<u32>,
    /// `.timeindex`: largest timestamp up to this offset.
    pub timestamp: Option<i64>,
}

impl IndexEntry {
    pub fn kafka_line(&self) -> String {
        match (self.position, self.timestamp) {
            (Some(p), _) => format!("offset: {} position: {p}", self.offset),
            (None, Some(t)) => format!("timestamp: {t} offset: {}", self.offset),
            (None, None) => format!("offset: {}", self.offset),
        }
    }
}

/// Reads an `.index` (8-byte entries: relative offset, position) or `.timeindex` (12-byte
/// entries: timestamp, relative offset) file. Trailing zero entries (preallocated space) end
/// the list. Returns the entries and the number of trailing bytes that are not a whole entry.
pub fn dump_index(path: &Path) -> io::Result<(Vec<IndexEntry>, usize)> {
    let data = std::fs::read(path)?;
    let base = base_offset_of(path).unwrap_or(0);
    let time = path.extension().is_some_and(|e| e == "timeindex");
    let size = if time { 12 } else { 8 };
    let mut out = Vec::new();
    let chunks = data.chunks_exact(size);
    let rest = chunks.remainder().len();
    for (i, c) in chunks.enumerate() {
        if i > 0 && c.iter().all(|&b| b == 0) {
            break;
        }
        if time {
            let ts = i64::from_be_bytes(c[..8].try_into().unwrap_or_default());
            let rel = i32::from_be_bytes(c[8..12].try_into().unwrap_or_default());
            out.push(IndexEntry {
                offset: base + i64::from(rel),
                position: None,
                timestamp: Some(ts),
            });
        } else {
            let rel = i32::from_be_bytes(c[..4].try_into().unwrap_or_default());
            let p = u32::from_be_bytes(c[4..8].try_into().unwrap_or_default());
            out.push(IndexEntry {
                offset: base + i64::from(rel),
                position: Some(p),
                timestamp: None,
            });
        }
    }
    Ok((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn segment(batches: &[Vec<u8>]) -> (tempfile::TempDir, std::path::PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.log");
        let mut f = File::create(&path).expect("create");
        let mut positions = Vec::new();
        let mut pos = 0u64;
        let mut next = 0i64;
        for b in batches {
            let mut b = b.clone();
            b[..8].copy_from_slice(&next.to_be_bytes());
            let h = BatchHeader::parse(&b).expect("header");
            next += i64::from(h.record_count.get());
            positions.push(pos);
            pos += b.len() as u64;
            f.write_all(&b).expect("write");
        }
        (dir, path, positions)
    }

    /// Dumps a segment with its records; returns the summary and every batch line.
    fn dump_with_records(path: &Path) -> (SegmentSummary, Vec<BatchLine>) {
        let mut lines = Vec::new();
        let s = dump_segment(
            path,
            DumpOptions {
                print_records: true,
            },
            |l| {
                lines.push(l.clone());
                Ok(())
            },
        )
        .expect("dump");
        (s, lines)
    }

    fn batches() -> Vec<Vec<u8>> {
        (1..=4)
            .map(|n| eb::build_uniform(n, 10 * n, 1000 + n as i64))
            .collect()
    }

    #[test]
    fn healthy_segment() {
        let (_d, path, positions) = segment(&batches());
        let (s, lines) = dump_with_records(&path);
        assert!(s.damage.is_none(), "{s:?}");
        assert_eq!(s.batches, 4);
        assert_eq!(s.records, 10);
        assert_eq!(s.last_valid_offset, Some(9));
        assert_eq!(
            lines.iter().map(|l| l.position).collect::<Vec<_>>(),
            positions
        );
        assert_eq!(lines[2].base_offset, 3);
        assert_eq!(lines[2].last_offset, 5);
        assert_eq!(lines[2].records.as_ref().expect("records").len(), 3);
        assert!(lines[0]
            .kafka_line()
            .starts_with("baseOffset: 0 lastOffset: 0 count: 1 "));
    }

    /// A cleaned segment: a batch that kept 2 of its 4 offsets, then a gap of 3 offsets.
    #[test]
    fn cleaned_segments_show_their_gaps_and_stay_valid() {
        use sluice_engine::compact::{filter_batch, FilterCtx, OffsetMap, TxnTracker, Verdict};
        let recs: Vec<eb::NewRecord<'_>> = ["a", "b", "a", "c"]
            .iter()
            .map(|k| eb::NewRecord {
                key: Some(k.as_bytes()),
                value: Some(b"v"),
                timestamp: 5,
            })
            .collect();
        let first = eb::build(&recs);
        let mut map = OffsetMap::new(1 << 20);
        map.insert(b"a", 2);
        map.insert(b"c", 9);
        let ctx = FilterCtx {
            now: 0,
            delete_retention_ms: 0,
            max_inflate_bytes: 1 << 20,
        };
        let (v, _) = filter_batch(&first, &map, &mut TxnTracker::new(&[]), &ctx, false);
        let Verdict::Rewrite(cleaned) = v else {
            panic!("{v:?}")
        };
        let mut later = eb::build_uniform(1, 3, 7);
        later[..8].copy_from_slice(&7i64.to_be_bytes());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.log");
        let mut f = File::create(&path).expect("create");
        f.write_all(&cleaned).expect("write");
        f.write_all(&later).expect("write");
        drop(f);
        let (s, lines) = dump_with_records(&path);
        assert!(s.damage.is_none(), "{s:?}");
        assert!(lines.iter().all(|l| l.isvalid), "{lines:?}");
        assert_eq!(
            (lines[0].base_offset, lines[0].last_offset, lines[0].count),
            (0, 3, 2)
        );
        let offsets: Vec<i64> = lines[0]
            .records
            .as_ref()
            .expect("records")
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, vec![1, 2], "records keep their offsets");
        assert_eq!(s.absent_offsets, 2 + 3);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(s.notes[0].contains("offsets 4..6 removed"), "{:?}", s.notes);
        assert_eq!(s.last_valid_offset, Some(7));
    }

    #[test]
    fn transaction_markers_are_named() {
        let mut bs = batches();
        bs.push(sluice_engine::producer::build_marker(7, 2, false, 3, 5000));
        let (_d, path, _) = segment(&bs);
        let (_, lines) = dump_with_records(&path);
        let marker = lines.last().expect("marker batch");
        assert!(marker
            .kafka_line()
            .contains("isTransactional: true isControl: true"));
        let rec = &marker.records.as_ref().expect("records")[0];
        assert_eq!(rec.end_txn_marker, Some(("ABORT", 3)));
        assert!(rec
            .kafka_line("CreateTime")
            .ends_with("endTxnMarker: ABORT coordinatorEpoch: 3"));
    }

    #[test]
    fn damage_is_located() {
        let bs = batches();
        let (_d, path, positions) = segment(&bs);
        // flip a byte inside the third batch's records: CRC mismatch
        let mut data = std::fs::read(&path).expect("read");
        let at = positions[2] as usize + HEADER_LEN + 3;
        data[at] ^= 0x55;
        std::fs::write(&path, &data).expect("write");
        let s = dump_segment(&path, DumpOptions::default(), |_| Ok(())).expect("dump");
        let d = s.damage.expect("damage");
        assert_eq!(d.position, positions[2]);
        assert!(
            d.reason.contains("CRC") || d.reason.contains("crc"),
            "{}",
            d.reason
        );
        assert_eq!(s.valid_bytes, positions[2]);
        assert_eq!(s.last_valid_offset, Some(2));
        // the fourth batch is still listed
        assert_eq!(s.batches, 4);

        // cut the file inside the last batch
        let data = std::fs::read(&path).expect("read");
        std::fs::write(&path, &data[..data.len() - 5]).expect("write");
        let s = dump_segment(&path, DumpOptions::default(), |_| Ok(())).expect("dump");
        assert_eq!(s.damage.expect("damage").position, positions[2]);

        // zero padding after healthy batches is not damage
        let (_d2, path2, _) = segment(&bs);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path2)
            .expect("open");
        f.write_all(&[0u8; 5000]).expect("pad");
        let s = dump_segment(&path2, DumpOptions::default(), |_| Ok(())).expect("dump");
        assert!(s.damage.is_none());
        assert_eq!(s.zero_padding, 5000);
    }
}
