//! The record-batch validator: what a produce batch goes through on its partition's shard
//! before the log appends it (`compression::admit`, then the log's `batch::validate`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use sluice_engine::batch::{self, BatchHeader, Compression, NewRecord, LOG_OVERHEAD};
use sluice_engine::codec::{self, Levels};

use crate::compression::{Defaults, Policy, Target};

/// The inflation bound of the target: max.message.bytes 128 KiB in the broker's own formula
/// gives its floor of 32 MiB; the target keeps 4 MiB so one input stays fast (the bound is
/// what is tested, not its size).
const INFLATE_LIMIT: usize = 4 << 20;

/// Input: `flags`, then the batch. Flags bits 0-2 pick the topic's target (producer,
/// uncompressed, gzip, snappy, lz4, zstd), bit 3 full validation, bit 4 sets batchLength from
/// the input's length, bit 5 recomputes the CRC-32C (so the checks past them are reached).
///
/// Invariants: no panic; a batch `admit` recompresses validates, holds the same records and
/// (in `compression.type=uncompressed`) the same payload; a batch stored as sent that
/// validates has records that parse when full validation accepted it.
pub fn produce_batch(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut b = rest.to_vec();
    fix(&mut b, flags & 0x10 != 0, flags & 0x20 != 0);
    let policy = policy(flags);
    let _ = batch::validate(&b);
    let _ = batch::validate_stored(&b);
    let _ = batch::record_timestamps(&b);
    let _ = batch::records(&b);
    match crate::compression::admit(&b, &policy) {
        Err(e) => {
            let _ = e.to_string();
            let _ = sluice_engine::LogError::InvalidBatch(e).kafka_code();
        }
        Ok(Cow::Borrowed(kept)) => {
            assert_eq!(kept.len(), b.len());
            if policy.full_validation && batch::validate(kept).is_ok() {
                let h = BatchHeader::parse(kept).expect("validated");
                if !h.is_control() {
                    let body = batch::uncompressed_payload(kept, INFLATE_LIMIT)
                        .expect("full validation decompressed it");
                    batch::parse_records(h, &body).expect("full validation parsed it");
                }
            }
        }
        Ok(Cow::Owned(out)) => {
            let Target::Codec(target) = policy.target else {
                panic!("recompressed with compression.type=producer");
            };
            let h = batch::validate(&out).expect("a recompressed batch validates");
            assert_eq!(h.compression(), target);
            let before = batch::uncompressed_payload(&b, INFLATE_LIMIT).expect("admitted");
            let after = batch::uncompressed_payload(&out, INFLATE_LIMIT)
                .expect("recompressed output decompresses");
            assert_eq!(before, after, "recompression keeps the records");
            let old = BatchHeader::parse(&b).expect("admitted");
            assert_eq!(h.record_count.get(), old.record_count.get());
            assert_eq!(h.base_offset.get(), old.base_offset.get());
            assert_eq!(h.producer_id.get(), old.producer_id.get());
        }
    }
}

fn policy(flags: u8) -> Policy {
    let target = match flags & 7 {
        0 | 6 | 7 => Target::Producer,
        1 => Target::Codec(Compression::None),
        2 => Target::Codec(Compression::Gzip),
        3 => Target::Codec(Compression::Snappy),
        4 => Target::Codec(Compression::Lz4),
        _ => Target::Codec(Compression::Zstd),
    };
    let defaults = Defaults {
        target,
        levels: Levels::default(),
        full_validation: flags & 8 != 0,
    };
    Policy {
        inflate_limit: INFLATE_LIMIT,
        ..defaults.policy(&BTreeMap::new(), 128 << 10)
    }
}

/// Sets batchLength to the buffer's length and/or recomputes the CRC.
fn fix(b: &mut [u8], length: bool, crc: bool) {
    let len = b.len();
    let Some(h) = BatchHeader::mut_from(b) else {
        return;
    };
    if length {
        h.batch_length.set((len - LOG_OVERHEAD) as i32);
    }
    if crc {
        let c = batch::compute_crc(b);
        b[17..21].copy_from_slice(&c.to_be_bytes());
    }
}

/// Seeds: a built batch in each codec, with headers and null keys, under several policies.
pub fn batch_seeds() -> Vec<Vec<u8>> {
    let values: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("value {i} value value").into_bytes())
        .collect();
    let recs: Vec<NewRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            key: (i % 3 != 0).then_some(&b"key"[..]),
            value: (i % 7 != 6).then_some(&v[..]),
            timestamp: 1_000 + i as i64,
        })
        .collect();
    let plain = batch::build(&recs);
    let mut out = Vec::new();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = if c == Compression::None {
            plain.clone()
        } else {
            let z = codec::compress(c, batch::payload(&plain), Levels::default())
                .expect("compress a seed");
            batch::with_payload(&plain, c, &z)
        };
        for flags in [0x00u8, 0x09, 0x01, 0x05] {
            let mut v = vec![flags];
            v.extend_from_slice(&b);
            out.push(v);
        }
    }
    out
}
