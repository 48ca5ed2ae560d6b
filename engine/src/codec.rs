//! The four codecs of Kafka record batches (attributes bits 0..3): gzip, snappy (xerial framing,
//! or raw snappy as older producers send), lz4 (the LZ4 frame format) and zstd.
//!
//! Used where the broker has to look inside a compressed batch: produce validation
//! ([`check_framing`], and with full validation [`decompress`]), recompression to a topic's
//! `compression.type` ([`decompress`] then [`compress`]) and the log cleaner (keys).
//!
//! Every decompression is bounded: a batch that inflates beyond `limit` bytes is refused
//! ([`CodecError::TooLarge`]) instead of growing memory without bound (a "zip bomb").

use std::io::{Read, Write};

use thiserror::Error;

use crate::batch::Compression;

/// Why compressed bytes could not be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("corrupt {codec} stream: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("{codec} stream inflates beyond {limit} bytes")]
    TooLarge { codec: &'static str, limit: usize },
    #[error("unknown compression codec {0}")]
    Unknown(u8),
}

fn corrupt(c: Compression, reason: impl Into<String>) -> CodecError {
    CodecError::Corrupt {
        codec: c.name(),
        reason: reason.into(),
    }
}

/// The xerial snappy-java stream header Kafka's Java clients write.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Block size of the xerial framing we write (snappy-java's default).
const XERIAL_BLOCK: usize = 32 * 1024;

const LZ4_MAGIC: u32 = 0x184D_2204;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Compression levels (KIP-390's `compression.<codec>.level`); `None`: the codec's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    pub gzip: Option<i32>,
    pub lz4: Option<i32>,
    pub zstd: Option<i32>,
}

/// Kafka's defaults: gzip 6 (zlib's default), lz4 9, zstd 3.
pub const GZIP_DEFAULT_LEVEL: i32 = 6;
pub const LZ4_DEFAULT_LEVEL: i32 = 9;
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Compresses `data` with `c` (the whole uncompressed records section of a batch).
pub fn compress(c: Compression, data: &[u8], levels: Levels) -> Result<Vec<u8>, CodecError> {
    let io = |e: std::io::Error| corrupt(c, e.to_string());
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let level = levels.gzip.unwrap_or(GZIP_DEFAULT_LEVEL).clamp(1, 9) as u32;
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 64),
                flate2::Compression::new(level),
            );
            e.write_all(data).map_err(io)?;
            e.finish().map_err(io)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 64);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]); // version 1, compatible 1
            let mut enc = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[start..])
                    .map_err(|e| corrupt(c, e.to_string()))?;
                out.truncate(start + n);
                out[len_at..start].copy_from_slice(&(n as u32).to_be_bytes());
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let level = levels.lz4.unwrap_or(LZ4_DEFAULT_LEVEL).clamp(1, 17) as u32;
            let mut e = lz4::EncoderBuilder::new()
                .level(level)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::with_capacity(data.len() / 2 + 64))
                .map_err(io)?;
            e.write_all(data).map_err(io)?;
            let (out, r) = e.finish();
            r.map_err(io)?;
            Ok(out)
        }
        Compression::Zstd => {
            let level = levels.zstd.unwrap_or(ZSTD_DEFAULT_LEVEL);
            zstd::bulk::compress(data, level).map_err(io)
        }
        Compression::Unknown(n) => Err(CodecError::Unknown(n)),
    }
}

/// Reads a decoder to its end, refusing more than `limit` bytes.
fn read_bounded(c: Compression, mut r: impl Read, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let n = r
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(c, e.to_string()))?;
    if n > limit {
        return Err(CodecError::TooLarge {
            codec: c.name(),
            limit,
        });
    }
    Ok(out)
}

/// Decompresses the records section of a batch, at most `limit` bytes of output. The framing
/// is checked first ([`check_framing`]), so a truncated or padded stream is refused even where
/// a codec's decoder would stop quietly.
pub fn decompress(c: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    check_framing(c, data)?;
    match c {
        Compression::None => {
            if data.len() > limit {
                return Err(CodecError::TooLarge {
                    codec: c.name(),
                    limit,
                });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(c, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Snappy => snappy_decompress(data, limit),
        Compression::Lz4 => {
            let d = lz4::Decoder::new(data).map_err(|e| corrupt(c, e.to_string()))?;
            read_bounded(c, d, limit)
        }
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| corrupt(c, e.to_string()))?;
            read_bounded(c, d, limit)
        }
        Compression::Unknown(n) => Err(CodecError::Unknown(n)),
    }
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let c = Compression::Snappy;
    let err = |e: snap::Error| corrupt(c, e.to_string());
    let too_large = CodecError::TooLarge {
        codec: c.name(),
        limit,
    };
    let mut dec = snap::raw::Decoder::new();
    let mut out = Vec::new();
    for block in snappy_blocks(data)? {
        let n = snap::raw::decompress_len(block).map_err(err)?;
        if out.len() + n > limit {
            return Err(too_large);
        }
        let start = out.len();
        out.resize(start + n, 0);
        let got = dec.decompress(block, &mut out[start..]).map_err(err)?;
        if got != n {
            return Err(corrupt(c, "block shorter than its declared length"));
        }
    }
    Ok(out)
}

/// The raw snappy blocks of a stream: xerial framing's length-prefixed blocks, or the whole
/// stream when it is raw snappy.
fn snappy_blocks(data: &[u8]) -> Result<Vec<&[u8]>, CodecError> {
    let c = Compression::Snappy;
    if !data.starts_with(XERIAL_MAGIC) {
        return Ok(vec![data]);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt(c, "truncated xerial header"))?;
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupt(c, "truncated block length"))?;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt(c, format!("block of {len} bytes runs past the end")))?;
        blocks.push(block);
        rest = &rest[4 + len..];
    }
    Ok(blocks)
}

/// Checks a compressed records section's framing without decompressing it: what the
/// broker's fast path verifies when it stores a batch as the producer compressed it.
/// - gzip: the member header (magic 1f 8b, method deflate, no reserved flags) and the minimum
///   length of header + trailer; the deflate stream itself is not walked.
/// - snappy: xerial framing's block lengths cover the stream exactly, and every block (or a
///   raw stream) is walked tag by tag: literals and copies stay inside the block, every copy
///   points back into what was produced, and the lengths add up to the declared preamble.
/// - lz4: the frame descriptor (magic, version, reserved bits, block size), then every block
///   length up to the end mark, the optional checksums, and nothing after the frame.
/// - zstd: each frame's magic and block headers walked to its end (libzstd's
///   `ZSTD_findFrameCompressedSize`), the frames covering the stream exactly.
pub fn check_framing(c: Compression, data: &[u8]) -> Result<(), CodecError> {
    match c {
        Compression::None => Ok(()),
        Compression::Gzip => {
            if data.len() < 18 {
                return Err(corrupt(c, format!("{} bytes is too short", data.len())));
            }
            if data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 || data[3] & 0xe0 != 0 {
                return Err(corrupt(c, "bad gzip member header"));
            }
            Ok(())
        }
        Compression::Snappy => {
            for block in snappy_blocks(data)? {
                snappy_walk(block).map_err(|r| corrupt(c, r))?;
            }
            Ok(())
        }
        Compression::Lz4 => lz4_frame(data).map_err(|r| corrupt(c, r)),
        Compression::Zstd => {
            let mut rest = data;
            if rest.is_empty() {
                return Err(corrupt(c, "empty stream"));
            }
            while !rest.is_empty() {
                if rest.get(..4) != Some(&ZSTD_MAGIC.to_le_bytes()[..]) {
                    return Err(corrupt(c, "bad frame magic"));
                }
                let n = zstd::zstd_safe::find_frame_compressed_size(rest)
                    .map_err(|code| corrupt(c, zstd::zstd_safe::get_error_name(code)))?;
                if n == 0 || n > rest.len() {
                    return Err(corrupt(c, "frame runs past the end"));
                }
                rest = &rest[n..];
            }
            Ok(())
        }
        Compression::Unknown(n) => Err(CodecError::Unknown(n)),
    }
}

/// Walks a raw snappy block's elements without producing output (see [`check_framing`]).
fn snappy_walk(b: &[u8]) -> Result<(), String> {
    let (declared, mut pos) = {
        let mut v: u64 = 0;
        let mut i = 0;
        loop {
            let byte = *b.get(i).ok_or("truncated length preamble")?;
            v |= u64::from(byte & 0x7f) << (7 * i);
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if i == 5 {
                return Err("length preamble too long".into());
            }
        }
        (v as usize, i)
    };
    let le = |from: usize, n: usize| -> Result<usize, String> {
        let bytes = b.get(from..from + n).ok_or("truncated element")?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    };
    let mut produced = 0usize;
    while pos < b.len() {
        let tag = b[pos];
        let (len, offset) = match tag & 3 {
            0 => {
                let l = usize::from(tag >> 2);
                let (len, head) = if l < 60 {
                    (l + 1, 1)
                } else {
                    (le(pos + 1, l - 59)? + 1, 1 + l - 59)
                };
                pos += head + len;
                if pos > b.len() {
                    return Err("literal runs past the end".into());
                }
                (len, None)
            }
            1 => {
                let off = (usize::from(tag >> 5) << 8) | le(pos + 1, 1)?;
                pos += 2;
                (usize::from((tag >> 2) & 7) + 4, Some(off))
            }
            2 => {
                let off = le(pos + 1, 2)?;
                pos += 3;
                (usize::from(tag >> 2) + 1, Some(off))
            }
            _ => {
                let off = le(pos + 1, 4)?;
                pos += 5;
                (usize::from(tag >> 2) + 1, Some(off))
            }
        };
        if let Some(off) = offset {
            if off == 0 || off > produced {
                return Err(format!(
                    "copy from {off} bytes back with {produced} produced"
                ));
            }
        }
        produced += len;
        if produced > declared {
            return Err(format!("more than the declared {declared} bytes"));
        }
    }
    if produced != declared {
        return Err(format!("{produced} of the declared {declared} bytes"));
    }
    Ok(())
}

/// Walks one LZ4 frame (the LZ4 frame format, v1.6) that must span `data` exactly.
fn lz4_frame(data: &[u8]) -> Result<(), String> {
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u32_at(0) != Some(LZ4_MAGIC) {
        return Err("bad frame magic".into());
    }
    let (flg, bd) = match data.get(4..6) {
        Some(d) => (d[0], d[1]),
        None => return Err("truncated frame descriptor".into()),
    };
    if flg >> 6 != 1 || flg & 0x02 != 0 || bd & 0x8f != 0 {
        return Err(format!("bad frame descriptor {flg:#04x} {bd:#04x}"));
    }
    let block_max = match (bd >> 4) & 7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        n => return Err(format!("bad block maximum size {n}")),
    };
    let block_checksum = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dict_id = flg & 0x01 != 0;
    // descriptor: FLG, BD, [content size 8], [dict id 4], header checksum 1
    let mut pos = 6 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
    loop {
        let Some(word) = u32_at(pos) else {
            return Err("truncated before the end mark".into());
        };
        pos += 4;
        if word == 0 {
            break;
        }
        let len = (word & 0x7fff_ffff) as usize;
        if len > block_max {
            return Err(format!(
                "block of {len} bytes exceeds the frame's {block_max}"
            ));
        }
        pos += len + if block_checksum { 4 } else { 0 };
        if pos > data.len() {
            return Err("block runs past the end".into());
        }
    }
    if content_checksum {
        pos += 4;
    }
    match pos.cmp(&data.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err("truncated content checksum".into()),
        std::cmp::Ordering::Less => Err(format!("{} bytes after the frame", data.len() - pos)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| format!("record {} of many ", i % 977).into_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_shrinks() {
        let data = sample();
        for c in CODECS {
            let z = compress(c, &data, Levels::default()).expect("compress");
            assert!(
                z.len() < data.len() / 3,
                "{c:?}: {} of {}",
                z.len(),
                data.len()
            );
            check_framing(c, &z).expect("framing");
            assert_eq!(
                decompress(c, &z, data.len()).expect("decompress"),
                data,
                "{c:?}"
            );
        }
    }

    #[test]
    fn kafka_protocol_streams_decode() {
        // streams as kafka-protocol's codecs (the tools' producer) write them
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let data = sample();
        let mut outs = Vec::new();
        for c in CODECS {
            let mut out = bytes::BytesMut::new();
            let put = |b: &mut bytes::BytesMut| {
                b.extend_from_slice(&data);
                Ok(())
            };
            match c {
                Compression::Gzip => Gzip::compress(&mut out, put),
                Compression::Snappy => Snappy::compress(&mut out, put),
                Compression::Lz4 => Lz4::compress(&mut out, put),
                _ => Zstd::compress(&mut out, put),
            }
            .expect("compress");
            outs.push((c, out));
        }
        for (c, z) in outs {
            assert_eq!(
                decompress(c, &z, data.len()).expect("decompress"),
                data,
                "{c:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_and_mutated_streams_never_panic(
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            codec in 0usize..4,
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
        ) {
            let c = CODECS[codec];
            let _ = check_framing(c, &garbage);
            let _ = decompress(c, &garbage, 1 << 16);
            let mut z = compress(c, &garbage, Levels::default()).expect("compress");
            proptest::prop_assert_eq!(&decompress(c, &z, 1 << 16).expect("valid"), &garbage);
            let i = at % z.len();
            z[i] = byte;
            let _ = decompress(c, &z, 1 << 16);
            let _ = decompress(c, &z[..i], 1 << 16);
        }
    }

    #[test]
    fn raw_snappy_decodes() {
        let data = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("raw");
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).expect("raw"),
            data
        );
    }

    #[test]
    fn the_limit_bounds_inflation() {
        let zeros = vec![0u8; 1 << 20];
        for c in CODECS {
            let z = compress(c, &zeros, Levels::default()).expect("compress");
            assert_eq!(
                decompress(c, &z, (1 << 20) - 1),
                Err(CodecError::TooLarge {
                    codec: c.name(),
                    limit: (1 << 20) - 1
                }),
                "{c:?}"
            );
            assert_eq!(
                decompress(c, &z, 1 << 20).expect("at the limit").len(),
                1 << 20
            );
        }
    }

    #[test]
    fn truncated_padded_and_flipped_streams_are_refused() {
        let data = sample();
        for c in CODECS {
            let z = compress(c, &data, Levels::default()).expect("compress");
            let cut = &z[..z.len() - 3];
            assert!(decompress(c, cut, data.len()).is_err(), "{c:?} truncated");
            let mut padded = z.clone();
            padded.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            assert!(decompress(c, &padded, data.len()).is_err(), "{c:?} padded");
            // a flipped byte in the middle: caught by the decoder (gzip/lz4 content checksums,
            // zstd's and snappy's structure) or by the framing walk
            let mut flipped = z.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0xff;
            let got = decompress(c, &flipped, data.len() * 2);
            assert!(
                got.as_ref() != Ok(&data),
                "{c:?} flipped byte went unnoticed"
            );
            assert!(
                check_framing(c, b"garbage bytes here, twenty+").is_err(),
                "{c:?}"
            );
        }
    }
}
