//! Kafka record batch (magic v2) header: typed view, validation and the two fields the broker
//! writes (baseOffset, partitionLeaderEpoch), which sit outside the CRC-32C range.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::BatchError;
use crate::types::{Offset, TimestampMs};

/// Bytes of the v2 batch header, up to and including recordCount.
pub const HEADER_LEN: usize = 61;
/// baseOffset (8) + batchLength (4): the prefix not counted in batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// The CRC covers attributes..end, i.e. bytes 21.. of the batch.
pub const CRC_START: usize = 21;

/// Attribute bits (Kafka's RecordBatch).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;
/// KIP-534: baseTimestamp holds the delete horizon set by the log cleaner (tombstones and
/// removable transaction markers in the batch go once it has passed).
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

/// The fixed 61-byte v2 record batch header, big-endian on the wire and on disk.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub record_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_LEN);

impl BatchHeader {
    /// Reads the header at the start of `buf` (no validation beyond its length).
    pub fn parse(buf: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    pub fn mut_from(buf: &mut [u8]) -> Option<&mut BatchHeader> {
        BatchHeader::mut_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Total size of the batch on disk (batchLength + 12), if batchLength is sane.
    pub fn total_len(&self) -> Option<usize> {
        let l = self.batch_length.get();
        if l < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            None
        } else {
            Some(l as usize + LOG_OVERHEAD)
        }
    }

    pub fn base(&self) -> Offset {
        Offset(self.base_offset.get().max(0) as u64)
    }

    pub fn last(&self) -> Offset {
        self.base().plus(self.last_offset_delta.get().max(0) as u64)
    }

    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes.get())
    }

    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & ATTR_TIMESTAMP_LOG_APPEND != 0
    }

    /// The delete horizon the log cleaner set (KIP-534), if any.
    pub fn delete_horizon(&self) -> Option<TimestampMs> {
        (self.attributes.get() & ATTR_DELETE_HORIZON != 0).then(|| self.base_timestamp.get())
    }
}

/// Writes a producer's id, epoch, base sequence and (optionally) the transactional bit into a
/// built batch and recomputes its CRC (tests and tools that play a producer).
pub fn stamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    transactional: bool,
) {
    let Some(h) = BatchHeader::mut_from(batch) else {
        return;
    };
    h.producer_id.set(producer_id);
    h.producer_epoch.set(epoch);
    h.base_sequence.set(base_sequence);
    if transactional {
        h.attributes.set(h.attributes.get() | ATTR_TRANSACTIONAL);
    }
    let crc = compute_crc(batch);
    if let Some(h) = BatchHeader::mut_from(batch) {
        h.crc.set(crc);
    }
}

/// Compression codec of a batch (attributes bits 0..3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

impl Compression {
    pub fn from_attributes(attrs: i16) -> Compression {
        match (attrs & ATTR_COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => Compression::Unknown(n),
        }
    }

    /// The name kafka-dump-log prints (`compresscodec: none`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Unknown(_) => "unknown",
        }
    }

    /// The attributes bits.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
            Compression::Unknown(n) => i16::from(n),
        }
    }

    /// Parses a codec name as Kafka's configs and clients spell it.
    pub fn from_name(name: &str) -> Option<Compression> {
        Some(match name {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// CRC-32C of the bytes the batch CRC covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Validates one complete v2 batch occupying exactly `batch`, as received from a producer:
/// length, magic, CRC-32C and record count against lastOffsetDelta (exactly
/// `lastOffsetDelta + 1` records).
pub fn validate(batch: &[u8]) -> Result<&BatchHeader, BatchError> {
    let header = validate_frame(batch)?;
    let count = header.record_count.get();
    let delta = header.last_offset_delta.get();
    if count < 1 || delta != count - 1 {
        return Err(BatchError::BadRecordCount {
            count,
            last_offset_delta: delta,
        });
    }
    Ok(header)
}

/// Validates a batch as stored in a log: like [`validate`], except that a batch the log
/// cleaner rewrote keeps its lastOffsetDelta with fewer records (offset gaps) or none at all
/// (an emptied batch kept for its producer's sequence), so `0 <= recordCount <=
/// lastOffsetDelta + 1`. Used by recovery scans and follower appends.
pub fn validate_stored(batch: &[u8]) -> Result<&BatchHeader, BatchError> {
    let header = validate_frame(batch)?;
    let count = header.record_count.get();
    let delta = header.last_offset_delta.get();
    if count < 0 || delta < 0 || i64::from(count) > i64::from(delta) + 1 {
        return Err(BatchError::BadRecordCount {
            count,
            last_offset_delta: delta,
        });
    }
    Ok(header)
}

/// Length, magic and CRC-32C of one complete batch occupying exactly `batch`.
fn validate_frame(batch: &[u8]) -> Result<&BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch).ok_or(BatchError::TooShort { len: batch.len() })?;
    let total = header.total_len().ok_or(BatchError::BadLength {
        declared: header.batch_length.get(),
    })?;
    if total != batch.len() {
        return Err(BatchError::LengthMismatch {
            declared: total,
            actual: batch.len(),
        });
    }
    if header.magic != 2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    let stored = header.crc.get();
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(header)
}

/// Splits a buffer holding whole batches back to back; stops at the first incomplete or
/// nonsensical length (the caller decides whether leftover bytes are an error).
pub fn split_batches(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = BatchHeader::parse(buf)?.total_len()?;
        if len > buf.len() {
            return None;
        }
        let (batch, rest) = buf.split_at(len);
        buf = rest;
        Some(batch)
    })
}

/// Timestamp and offset delta of each record of an uncompressed batch, in order. Yields nothing
/// for compressed batches (their records are inside the compressed payload).
pub fn record_timestamps(batch: &[u8]) -> Vec<(u32, TimestampMs)> {
    let Some(header) = BatchHeader::parse(batch) else {
        return Vec::new();
    };
    if header.compression() != Compression::None {
        return Vec::new();
    }
    let base_ts = header.base_timestamp.get();
    let log_append = header
        .is_log_append_time()
        .then(|| header.max_timestamp.get());
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    let count = header.record_count.get().max(0) as usize;
    for _ in 0..count {
        let Some((len, n)) = read_varint(&batch[pos.min(batch.len())..]) else {
            break;
        };
        let body_start = pos + n;
        let Some(body_end) = usize::try_from(len)
            .ok()
            .and_then(|l| body_start.checked_add(l))
            .filter(|&e| e <= batch.len())
        else {
            break;
        };
        let body = &batch[body_start..body_end];
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint)
        let Some((ts_delta, n1)) = body.get(1..).and_then(read_varint) else {
            break;
        };
        let Some((off_delta, _)) = body.get(1 + n1..).and_then(read_varint) else {
            break;
        };
        let ts = log_append.unwrap_or(base_ts.wrapping_add(ts_delta));
        out.push((off_delta.max(0) as u32, ts));
        pos = body_end;
    }
    out
}

/// Zigzag varint as used by Kafka records; returns (value, bytes consumed).
pub fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_records_is_strict_and_with_payload_recompresses() {
        let recs: Vec<NewRecord<'_>> = (0..50)
            .map(|i| NewRecord {
                key: Some(b"key"),
                value: Some(if i % 2 == 0 { b"even value" } else { b"odd" }),
                timestamp: 1_000 + i,
            })
            .collect();
        let b = build(&recs);
        let h = *BatchHeader::parse(&b).expect("header");
        let body = payload(&b);
        assert_eq!(parse_records(&h, body).expect("valid").len(), 50);
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(matches!(
            parse_records(&h, &longer),
            Err(BatchError::BadRecords(_))
        ));
        assert!(parse_records(&h, &body[..body.len() - 1]).is_err());
        let mut fewer = h;
        fewer.record_count = I32::new(49);
        assert!(parse_records(&fewer, body).is_err(), "a record left over");
        let mut more = h;
        more.record_count = I32::new(51);
        assert!(parse_records(&more, body).is_err(), "a record missing");
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let z = crate::codec::compress(c, body, Default::default()).expect("compress");
            let cb = with_payload(&b, c, &z);
            let ch = validate(&cb).expect("recompressed batch validates");
            assert_eq!(ch.compression(), c);
            assert_eq!(ch.record_count.get(), 50);
            assert_eq!(ch.max_timestamp.get(), h.max_timestamp.get());
            let back = uncompressed_payload(&cb, 1 << 20).expect("decompress");
            assert_eq!(&back[..], body);
            let plain = with_payload(&cb, Compression::None, &back);
            assert_eq!(plain, b, "back to the producer's exact bytes");
        }
    }

    #[test]
    fn built_batches_validate_and_expose_timestamps() {
        let recs = [
            NewRecord {
                key: Some(b"k"),
                value: Some(b"v1"),
                timestamp: 100,
            },
            NewRecord {
                key: None,
                value: Some(b"v2"),
                timestamp: 90,
            },
            NewRecord {
                key: None,
                value: None,
                timestamp: 130,
            },
        ];
        let b = build(&recs);
        let h = validate(&b).expect("valid");
        assert_eq!(h.record_count.get(), 3);
        assert_eq!(h.max_timestamp.get(), 130);
        assert_eq!(record_timestamps(&b), vec![(0, 100), (1, 90), (2, 130)]);
        let mut bad = b.clone();
        bad[70] ^= 1;
        assert!(matches!(
            validate(&bad),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(matches!(
            validate(&b[..60]),
            Err(BatchError::TooShort { .. })
        ));
    }

    #[test]
    fn varint_write_read_roundtrip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
        }
    }

    #[test]
    fn varint_roundtrip_known_values() {
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(read_varint(&[0x80]), None);
    }
}

/// Appends a zigzag varint.
pub fn write_varint(out: &mut Vec<u8>, v: i64) {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if raw < 0x80 {
            out.push(raw as u8);
            return;
        }
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
}

/// One record to put in a batch built by [`build`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: TimestampMs,
}

/// Builds an uncompressed v2 batch (base offset 0, no producer id) with a valid CRC-32C:
/// what a producer would send. Used by tests, benches and tools.
pub fn build(records: &[NewRecord<'_>]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_ts = records[0].timestamp;
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let mut body = Vec::with_capacity(records.len() * 32);
    let mut rec = Vec::with_capacity(64);
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        write_varint(&mut rec, r.timestamp - base_ts);
        write_varint(&mut rec, i as i64);
        for field in [r.key, r.value] {
            match field {
                Some(b) => {
                    write_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => write_varint(&mut rec, -1),
            }
        }
        write_varint(&mut rec, 0); // headers
        write_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let total = HEADER_LEN + body.len();
    let header = BatchHeader {
        base_offset: I64::new(0),
        batch_length: I32::new((total - LOG_OVERHEAD) as i32),
        partition_leader_epoch: I32::new(-1),
        magic: 2,
        crc: U32::new(0),
        attributes: I16::new(0),
        last_offset_delta: I32::new(records.len() as i32 - 1),
        base_timestamp: I64::new(base_ts),
        max_timestamp: I64::new(max_ts),
        producer_id: I64::new(-1),
        producer_epoch: I16::new(-1),
        base_sequence: I32::new(-1),
        record_count: I32::new(records.len() as i32),
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Builds a batch of `count` records with `value_len`-byte values (test and bench payloads).
pub fn build_uniform(count: usize, value_len: usize, timestamp: TimestampMs) -> Vec<u8> {
    let value = vec![b'x'; value_len];
    let recs: Vec<NewRecord<'_>> = (0..count)
        .map(|_| NewRecord {
            key: None,
            value: Some(&value),
            timestamp,
        })
        .collect();
    build(&recs)
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: u32,
    pub timestamp: TimestampMs,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The records of an uncompressed batch. `None` if the batch is compressed or malformed.
pub fn records(batch: &[u8]) -> Option<Vec<RecordView<'_>>> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != Compression::None {
        return None;
    }
    parse_records(header, payload(batch)).ok()
}

/// The records section of a batch (after the 61-byte header), compressed or not.
pub fn payload(batch: &[u8]) -> &[u8] {
    batch.get(HEADER_LEN..).unwrap_or(&[])
}

/// The uncompressed records section of a batch: borrowed when the batch is uncompressed, else
/// decompressed into at most `limit` bytes.
pub fn uncompressed_payload(
    batch: &[u8],
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
    let header = BatchHeader::parse(batch).ok_or(BatchError::TooShort { len: batch.len() })?;
    match header.compression() {
        Compression::None => Ok(std::borrow::Cow::Borrowed(payload(batch))),
        c => Ok(std::borrow::Cow::Owned(crate::codec::decompress(
            c,
            payload(batch),
            limit,
        )?)),
    }
}

/// Parses an uncompressed records section strictly: exactly `recordCount` records, each
/// length-delimited with its fields filling that length exactly, offset deltas increasing and
/// at most `lastOffsetDelta` (gaps are allowed: a compacted batch keeps its offsets), and no
/// bytes after the last record.
pub fn parse_records<'a>(
    header: &BatchHeader,
    body: &'a [u8],
) -> Result<Vec<RecordView<'a>>, BatchError> {
    fn bad(what: impl Into<String>) -> BatchError {
        BatchError::BadRecords(what.into())
    }
    fn take(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
        let (v, n) = buf
            .get(*pos..)
            .and_then(read_varint)
            .ok_or_else(|| bad(format!("truncated varint at byte {pos}")))?;
        *pos += n;
        Ok(v)
    }
    fn bytes_field<'b>(buf: &'b [u8], pos: &mut usize) -> Result<Option<&'b [u8]>, BatchError> {
        let len = take(buf, pos)?;
        if len < 0 {
            return Ok(None);
        }
        let v = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .and_then(|end| buf.get(*pos..end))
            .ok_or_else(|| bad(format!("field of {len} bytes runs past its record")))?;
        *pos += v.len();
        Ok(Some(v))
    }
    let base_ts = header.base_timestamp.get();
    let log_append = header
        .is_log_append_time()
        .then(|| header.max_timestamp.get());
    let count = usize::try_from(header.record_count.get())
        .map_err(|_| bad(format!("recordCount {}", header.record_count.get())))?;
    let last_delta = i64::from(header.last_offset_delta.get());
    let mut out = Vec::with_capacity(count.min(body.len() / 7));
    let mut pos = 0usize;
    let mut prev_delta = -1i64;
    for i in 0..count {
        let len = take(body, &mut pos)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "record {i} of {len} bytes runs past the batch ({count} declared)"
                ))
            })?;
        let rec = &body[..end];
        let mut p = pos + 1; // attributes
        if p > end {
            return Err(bad(format!("record {i} is empty")));
        }
        let ts_delta = take(rec, &mut p)?;
        let off_delta = take(rec, &mut p)?;
        if off_delta <= prev_delta || off_delta > last_delta {
            return Err(bad(format!(
                "record {i} has offset delta {off_delta} after {prev_delta} (lastOffsetDelta \
                 {last_delta})"
            )));
        }
        prev_delta = off_delta;
        let key = bytes_field(rec, &mut p)?;
        let value = bytes_field(rec, &mut p)?;
        let nh = usize::try_from(take(rec, &mut p)?)
            .map_err(|_| bad(format!("record {i} has a negative header count")))?;
        let mut headers = Vec::with_capacity(nh.min(64));
        for _ in 0..nh {
            let k = bytes_field(rec, &mut p)?.unwrap_or_default();
            let v = bytes_field(rec, &mut p)?;
            headers.push((k, v));
        }
        if p != end {
            return Err(bad(format!(
                "record {i} declares {len} bytes but its fields take {}",
                p - pos
            )));
        }
        out.push(RecordView {
            offset_delta: off_delta as u32,
            timestamp: log_append.unwrap_or(base_ts.wrapping_add(ts_delta)),
            key,
            value,
            headers,
        });
        pos = end;
    }
    if pos != body.len() {
        return Err(bad(format!(
            "{} bytes after the last of {count} records",
            body.len() - pos
        )));
    }
    Ok(out)
}

/// `batch` with its records section replaced by `payload` in codec `c`: attributes, producer
/// fields, offsets and timestamps kept, batchLength and CRC-32C recomputed.
pub fn with_payload(batch: &[u8], c: Compression, payload: &[u8]) -> Vec<u8> {
    let mut header = *BatchHeader::parse(batch).expect("a parsed batch has a header");
    let total = HEADER_LEN + payload.len();
    header.batch_length = I32::new((total - LOG_OVERHEAD) as i32);
    let attrs = header.attributes.get() & !ATTR_COMPRESSION_MASK;
    header.attributes = I16::new(attrs | c.id());
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}
