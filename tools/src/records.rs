//! Kafka v2 record batches: a builder that encodes records straight into the batch buffer, and a
//! decoder for fetched data (CRC-checked, decompressed when needed, records read in place).

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use sluice_engine::batch::{self as eb, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use thiserror::Error;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::IntoBytes;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: &'static str, reason: String },
    #[error("{codec} decompression failed at offset {offset}: {reason}")]
    Decompress {
        codec: &'static str,
        offset: i64,
        reason: String,
    },
    #[error("corrupt batch at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: String },
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
}

/// Batch compression codec (attributes bits 0..3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_attributes(attrs: i16) -> Result<Compression, RecordError> {
        Ok(match attrs & eb::ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => return Err(RecordError::UnknownCodec(n as u8)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"
            )),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes a zigzag varint of `v` takes.
pub fn varint_len(v: i64) -> usize {
    let raw = zigzag(v) | 1;
    (64 - raw.leading_zeros() as usize).div_ceil(7)
}

/// Writes the zigzag varint of `v` at `out[0..]`; returns the bytes written.
fn put_varint(out: &mut [u8], v: i64) -> usize {
    let mut raw = zigzag(v);
    let mut i = 0;
    loop {
        if raw < 0x80 {
            out[i] = raw as u8;
            return i + 1;
        }
        out[i] = (raw as u8 & 0x7f) | 0x80;
        raw >>= 7;
        i += 1;
    }
}

/// Accumulates records into one v2 batch, encoding each record directly into the batch buffer.
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_ts: i64,
    max_ts: i64,
}

impl BatchBuilder {
    /// A builder whose buffer starts with room for `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN + 64));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_ts: 0,
            max_ts: i64::MIN,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.count as usize
    }

    /// Uncompressed size of the batch so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Size a record with these lengths adds (upper bound: the deltas are assumed 5 bytes).
    pub fn record_size_bound(key_len: Option<usize>, value_len: usize) -> usize {
        let key = key_len.map_or(1, |k| varint_len(k as i64) + k);
        let body = 1 + 10 + 5 + key + varint_len(value_len as i64) + value_len + 1;
        body + varint_len(body as i64)
    }

    /// Appends a record whose value is written in place by `fill` (given exactly `value_len`
    /// bytes). No headers.
    pub fn push_with(
        &mut self,
        key: Option<&[u8]>,
        value_len: usize,
        timestamp: i64,
        fill: impl FnOnce(&mut [u8]),
    ) {
        if self.count == 0 {
            self.base_ts = timestamp;
        }
        self.max_ts = self.max_ts.max(timestamp);
        let ts_delta = timestamp - self.base_ts;
        let off_delta = self.count as i64;
        let key_part = key.map_or(1, |k| varint_len(k.len() as i64) + k.len());
        let body_len = 1
            + varint_len(ts_delta)
            + varint_len(off_delta)
            + key_part
            + varint_len(value_len as i64)
            + value_len
            + 1;
        let total = varint_len(body_len as i64) + body_len;
        let start = self.buf.len();
        self.buf.resize(start + total, 0);
        let out = &mut self.buf[start..];
        let mut p = put_varint(out, body_len as i64);
        out[p] = 0; // attributes
        p += 1;
        p += put_varint(&mut out[p..], ts_delta);
        p += put_varint(&mut out[p..], off_delta);
        match key {
            Some(k) => {
                p += put_varint(&mut out[p..], k.len() as i64);
                out[p..p + k.len()].copy_from_slice(k);
                p += k.len();
            }
            None => p += put_varint(&mut out[p..], -1),
        }
        p += put_varint(&mut out[p..], value_len as i64);
        fill(&mut out[p..p + value_len]);
        p += value_len;
        out[p] = 0; // header count
        self.count += 1;
    }

    /// Appends a record with a key and value (no headers).
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        self.push_with(key, value.len(), timestamp, |out| {
            out.copy_from_slice(value)
        });
    }

    /// Finishes the batch (header, optional compression, CRC-32C) and resets the builder.
    pub fn finish(&mut self, compression: Compression) -> Result<Bytes, RecordError> {
        let count = self.count;
        let (base_ts, max_ts) = (self.base_ts, self.max_ts.max(self.base_ts));
        let mut out = if compression == Compression::None {
            let cap = self.buf.capacity();
            let mut next = Vec::with_capacity(cap);
            next.resize(HEADER_LEN, 0);
            std::mem::replace(&mut self.buf, next)
        } else {
            let records = &self.buf[HEADER_LEN..];
            let mut out = BytesMut::with_capacity(records.len() / 2 + HEADER_LEN + 64);
            out.resize(HEADER_LEN, 0);
            compress_into(compression, records, &mut out)?;
            self.buf.truncate(HEADER_LEN);
            out.to_vec()
        };
        self.count = 0;
        self.max_ts = i64::MIN;
        let header = BatchHeader {
            base_offset: I64::new(0),
            batch_length: I32::new((out.len() - LOG_OVERHEAD) as i32),
            partition_leader_epoch: I32::new(-1),
            magic: 2,
            crc: U32::new(0),
            attributes: I16::new(compression.attribute()),
            last_offset_delta: I32::new(count - 1),
            base_timestamp: I64::new(base_ts),
            max_timestamp: I64::new(max_ts),
            producer_id: I64::new(-1),
            producer_epoch: I16::new(-1),
            base_sequence: I32::new(-1),
            record_count: I32::new(count),
        };
        out[..HEADER_LEN].copy_from_slice(header.as_bytes());
        let crc = eb::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(out))
    }
}

impl Compression {
    fn engine(self) -> eb::Compression {
        eb::Compression::from_attributes(self.attribute())
    }
}

/// A client's compression levels: lz4 in its fast mode (librdkafka's default), zstd 3, gzip 6.
const CLIENT_LEVELS: sluice_engine::codec::Levels = sluice_engine::codec::Levels {
    gzip: None,
    lz4: Some(1),
    zstd: None,
};

/// Decompressed batches a client accepts (a bound against a broken or hostile stream).
const CLIENT_INFLATE_LIMIT: usize = 1 << 30;

/// Appends `records` compressed with `c` to `out` (the engine's codecs, so the broker and the
/// tools read and write exactly the same streams).
pub(crate) fn compress_into(
    c: Compression,
    records: &[u8],
    out: &mut BytesMut,
) -> Result<(), RecordError> {
    if c == Compression::None {
        out.extend_from_slice(records);
        return Ok(());
    }
    let z = sluice_engine::codec::compress(c.engine(), records, CLIENT_LEVELS).map_err(|e| {
        RecordError::Compress {
            codec: c.name(),
            reason: e.to_string(),
        }
    })?;
    out.extend_from_slice(&z);
    Ok(())
}

/// One batch of fetched data with its records section, decompressed if it was compressed.
#[derive(Debug, Clone)]
pub struct Batch {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub attributes: i16,
    pub record_count: i32,
    pub compression: Compression,
    /// Uncompressed records section.
    pub records: Bytes,
}

impl Batch {
    pub fn is_control(&self) -> bool {
        self.attributes & eb::ATTR_CONTROL != 0
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The records of this batch, in order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            batch: self,
            pos: 0,
            left: self.record_count.max(0) as usize,
        }
    }
}

/// Splits fetched partition data into batches. A trailing partial batch (the fetch was cut at
/// max bytes) is ignored, as Kafka consumers do.
pub fn decode_batches(data: &Bytes) -> Result<Vec<Batch>, RecordError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= data.len() {
        let Some(h) = BatchHeader::parse(&data[pos..]) else {
            break;
        };
        let offset = h.base_offset.get();
        let Some(len) = h.total_len() else {
            return Err(RecordError::Corrupt {
                offset,
                reason: format!("batch length {}", h.batch_length.get()),
            });
        };
        if pos + len > data.len() {
            break; // partial batch at the end
        }
        let raw = &data[pos..pos + len];
        if h.magic != 2 {
            return Err(RecordError::Corrupt {
                offset,
                reason: format!("magic {}", h.magic),
            });
        }
        let crc = eb::compute_crc(raw);
        if crc != h.crc.get() {
            return Err(RecordError::Corrupt {
                offset,
                reason: format!("crc {:08x} != stored {:08x}", crc, h.crc.get()),
            });
        }
        let compression = Compression::from_attributes(h.attributes.get())?;
        let section = data.slice(pos + HEADER_LEN..pos + len);
        let records = if compression == Compression::None {
            section
        } else {
            decompress(compression, section, offset)?
        };
        out.push(Batch {
            base_offset: offset,
            last_offset_delta: h.last_offset_delta.get(),
            base_timestamp: h.base_timestamp.get(),
            max_timestamp: h.max_timestamp.get(),
            attributes: h.attributes.get(),
            record_count: h.record_count.get(),
            compression,
            records,
        });
        pos += len;
    }
    Ok(out)
}

fn decompress(c: Compression, section: Bytes, offset: i64) -> Result<Bytes, RecordError> {
    if c == Compression::None {
        return Ok(section);
    }
    sluice_engine::codec::decompress(c.engine(), &section, CLIENT_INFLATE_LIMIT)
        .map(Bytes::from)
        .map_err(|e| RecordError::Decompress {
            codec: c.name(),
            offset,
            reason: e.to_string(),
        })
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Number of headers and their raw encoding (see [`Record::headers`]).
    pub header_count: usize,
    pub headers_raw: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record headers as (key, value) pairs.
    pub fn headers(&self) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
        let mut out = Vec::with_capacity(self.header_count);
        let mut c = Cursor {
            buf: self.headers_raw,
            pos: 0,
        };
        for _ in 0..self.header_count {
            let Some(k) = c.bytes().flatten() else { break };
            let Some(v) = c.bytes() else { break };
            out.push((k, v));
        }
        out
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Option<i64> {
        let (v, n) = eb::read_varint(self.buf.get(self.pos..)?)?;
        self.pos += n;
        Some(v)
    }

    /// A length-prefixed field: `Some(None)` for length -1.
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len < 0 {
            return Some(None);
        }
        let end = self.pos.checked_add(usize::try_from(len).ok()?)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(Some(b))
    }
}

/// Iterates the records of a [`Batch`]; a malformed record ends with an error.
pub struct RecordIter<'a> {
    batch: &'a Batch,
    pos: usize,
    left: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.batch;
        let buf: &'a [u8] = &b.records;
        let corrupt = |reason: &str| {
            Some(Err(RecordError::Corrupt {
                offset: b.base_offset,
                reason: reason.to_string(),
            }))
        };
        let mut c = Cursor { buf, pos: self.pos };
        let Some(len) = c.varint().and_then(|l| usize::try_from(l).ok()) else {
            self.left = 0;
            return corrupt("bad record length");
        };
        let end = match c.pos.checked_add(len).filter(|&e| e <= buf.len()) {
            Some(e) => e,
            None => {
                self.left = 0;
                return corrupt("record past the end of the batch");
            }
        };
        let mut r = Cursor {
            buf: &buf[..end],
            pos: c.pos + 1, // attributes
        };
        let parsed = (|| {
            let ts_delta = r.varint()?;
            let off_delta = r.varint()?;
            let key = r.bytes()?;
            let value = r.bytes()?;
            let hc = usize::try_from(r.varint()?).ok()?;
            Some((ts_delta, off_delta, key, value, hc, &r.buf[r.pos..]))
        })();
        self.pos = end;
        let Some((ts_delta, off_delta, key, value, header_count, headers_raw)) = parsed else {
            self.left = 0;
            return corrupt("malformed record");
        };
        let timestamp = if b.attributes & eb::ATTR_TIMESTAMP_LOG_APPEND != 0 {
            b.max_timestamp
        } else {
            b.base_timestamp.wrapping_add(ts_delta)
        };
        Some(Ok(Record {
            offset: b.base_offset + off_delta,
            timestamp,
            key,
            value,
            header_count,
            headers_raw,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_the_encoder() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            8192,
            -8193,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            eb::write_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
            let mut buf = [0u8; 10];
            assert_eq!(put_varint(&mut buf, v), out.len());
            assert_eq!(&buf[..out.len()], &out[..]);
        }
    }

    #[test]
    fn builder_matches_the_engine_encoder_and_validates() {
        let mut b = BatchBuilder::new(1024);
        b.push(Some(b"k"), b"v1", 100);
        b.push(None, b"", 90);
        b.push(None, &[7u8; 300], 130);
        let ours = b.finish(Compression::None).expect("encode");
        let theirs = eb::build(&[
            eb::NewRecord {
                key: Some(b"k"),
                value: Some(b"v1"),
                timestamp: 100,
            },
            eb::NewRecord {
                key: None,
                value: Some(b""),
                timestamp: 90,
            },
            eb::NewRecord {
                key: None,
                value: Some(&[7u8; 300]),
                timestamp: 130,
            },
        ]);
        assert_eq!(&ours[..], &theirs[..]);
        eb::validate(&ours).expect("valid");
        assert!(b.is_empty());
    }

    #[test]
    fn every_codec_roundtrips() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::new(64);
            for i in 0..50u32 {
                let v = format!("value-{i}-{}", "x".repeat(i as usize));
                b.push(Some(&i.to_be_bytes()), v.as_bytes(), 1000 + i64::from(i));
            }
            let batch = b.finish(c).expect("encode");
            let h = eb::validate(&batch).expect("valid");
            assert_eq!(h.compression().name(), c.name());
            let mut data = batch.to_vec();
            data.extend_from_slice(&batch[..30]); // a partial trailing batch is ignored
            let batches = decode_batches(&Bytes::from(data)).expect("decode");
            assert_eq!(batches.len(), 1);
            let recs: Vec<_> = batches[0]
                .iter()
                .collect::<Result<_, _>>()
                .expect("records");
            assert_eq!(recs.len(), 50);
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1000 + i as i64);
                assert_eq!(r.key, Some(&(i as u32).to_be_bytes()[..]));
                let v = format!("value-{i}-{}", "x".repeat(i));
                assert_eq!(r.value, Some(v.as_bytes()));
            }
        }
    }

    #[test]
    fn corrupt_crc_is_reported() {
        let mut b = BatchBuilder::new(64);
        b.push(None, b"hello", 1);
        let mut v = b.finish(Compression::None).expect("encode").to_vec();
        let last = v.len() - 2;
        v[last] ^= 0xff;
        assert!(matches!(
            decode_batches(&Bytes::from(v)),
            Err(RecordError::Corrupt { .. })
        ));
    }

    #[test]
    fn headers_are_parsed() {
        // a record with two headers, built by hand
        let mut rec = vec![0u8];
        eb::write_varint(&mut rec, 0);
        eb::write_varint(&mut rec, 0);
        eb::write_varint(&mut rec, -1);
        eb::write_varint(&mut rec, 1);
        rec.push(b'v');
        eb::write_varint(&mut rec, 2);
        for (k, v) in [(&b"a"[..], Some(&b"1"[..])), (&b"b"[..], None)] {
            eb::write_varint(&mut rec, k.len() as i64);
            rec.extend_from_slice(k);
            match v {
                Some(v) => {
                    eb::write_varint(&mut rec, v.len() as i64);
                    rec.extend_from_slice(v);
                }
                None => eb::write_varint(&mut rec, -1),
            }
        }
        let mut section = Vec::new();
        eb::write_varint(&mut section, rec.len() as i64);
        section.extend_from_slice(&rec);
        let batch = Batch {
            base_offset: 5,
            last_offset_delta: 0,
            base_timestamp: 9,
            max_timestamp: 9,
            attributes: 0,
            record_count: 1,
            compression: Compression::None,
            records: Bytes::from(section),
        };
        let r = batch.iter().next().expect("one").expect("ok");
        assert_eq!(r.offset, 5);
        assert_eq!(r.value, Some(&b"v"[..]));
        assert_eq!(
            r.headers(),
            vec![(&b"a"[..], Some(&b"1"[..])), (&b"b"[..], None)]
        );
    }
}
