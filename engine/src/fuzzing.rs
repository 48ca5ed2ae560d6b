//! Fuzz entry points of the engine (issue 17): each takes arbitrary bytes, runs the real code
//! on them and panics only if an invariant breaks. The cargo-fuzz targets in `fuzz/` are thin
//! wrappers over these; stable tests (`server/tests/fuzz_targets.rs`) replay the kept
//! regression inputs and run a short property test of each.
//!
//! Data path of [`segment_scan`]: input bytes -> (optionally) every batch's CRC-32C recomputed,
//! so the scan gets past the checksum -> [`segment::scan_with`] over the bytes as a segment
//! file (the recovery scan `PartitionLog::open` runs on a segment after an unclean shutdown),
//! driven by `futures_lite::future::block_on` (the scan has no other await than its reads).

use crate::batch::{self, BatchHeader};
use crate::error::Result;
use crate::segment::{self, ScanOutcome};
use crate::types::Offset;

/// The scan's max batch size in the target (max.message.bytes; the scan allows twice the larger
/// of it and its 1 MiB read size).
const MAX_BATCH: usize = 1 << 20;

/// Input: `flags` (bit 0: the segment may have offset gaps, as a cleaned one; bit 1: fix every
/// batch's CRC-32C first), a u16 base offset, a u16 index interval, then the segment file.
pub fn segment_scan(data: &[u8]) {
    let Some((head, file)) = data.split_at_checked(5) else {
        return;
    };
    let gaps = head[0] & 1 != 0;
    let base = Offset(u64::from(u16::from_be_bytes([head[1], head[2]])));
    let interval = u64::from(u16::from_be_bytes([head[3], head[4]])).max(1);
    let mut file = file.to_vec();
    if head[0] & 2 != 0 {
        fix_crcs(&mut file);
    }
    let out = scan_bytes(&file, base, interval, gaps).expect("reads from memory do not fail");
    let valid = usize::try_from(out.valid_size).expect("within the input");
    assert!(
        valid <= file.len(),
        "valid prefix {valid} > {} bytes",
        file.len()
    );
    assert_eq!(
        out.stopped.is_none(),
        valid == file.len(),
        "the scan stops early exactly when it keeps less than the file: {:?}",
        out.stopped
    );
    assert!(out.next_offset >= base);
    // the kept prefix is whole valid batches, and rescanning it keeps all of it
    let prefix = &file[..valid];
    let mut covered = 0;
    for b in batch::split_batches(prefix) {
        batch::validate_stored(b).expect("a kept batch validates");
        covered += b.len();
    }
    assert_eq!(covered, valid, "the kept prefix splits into whole batches");
    let again = scan_bytes(prefix, base, interval, gaps).expect("memory");
    assert_eq!(again.valid_size, out.valid_size);
    assert_eq!(again.next_offset, out.next_offset);
    assert!(again.stopped.is_none(), "{:?}", again.stopped);
}

/// The recovery scan over `file` as the bytes of segment `base`.
pub fn scan_bytes(file: &[u8], base: Offset, interval: u64, gaps: bool) -> Result<ScanOutcome> {
    let read_at = |pos: u64, len: usize| {
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(file.len());
        let end = start.saturating_add(len).min(file.len());
        std::future::ready(Ok(file[start..end].to_vec()))
    };
    futures_lite::future::block_on(segment::scan_with(
        read_at,
        base,
        file.len() as u64,
        interval,
        MAX_BATCH,
        gaps,
    ))
}

/// Recomputes the CRC-32C of each batch that `split_batches` finds (stopping where it does).
pub fn fix_crcs(file: &mut [u8]) {
    let mut pos = 0;
    while let Some(total) = BatchHeader::parse(&file[pos..]).and_then(|h| h.total_len()) {
        let Some(b) = file.get_mut(pos..pos.saturating_add(total)) else {
            break;
        };
        let crc = batch::compute_crc(b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
}

/// Seed inputs: segments of built batches at consecutive offsets, a torn tail, a gap.
pub fn segment_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut seg = Vec::new();
    let mut next = 0i64;
    for (n, len) in [(1, 10), (3, 0), (5, 100), (2, 7)] {
        let mut b = batch::build_uniform(n, len, 1_000 + next);
        set_base(&mut b, next);
        next += n as i64;
        seg.extend_from_slice(&b);
    }
    let with = |flags: u8, file: &[u8]| {
        let mut v = vec![flags, 0, 0, 0, 64];
        v.extend_from_slice(file);
        v
    };
    seeds.push(with(0, &seg));
    seeds.push(with(2, &seg[..seg.len() - 5]));
    let mut gapped = seg.clone();
    let mut b = batch::build_uniform(2, 3, 5_000);
    set_base(&mut b, next + 10);
    gapped.extend_from_slice(&b);
    seeds.push(with(1, &gapped));
    seeds.push(with(0, &gapped));
    seeds
}

/// Writes `base` into a built batch (baseOffset is outside the CRC).
pub fn set_base(batch: &mut [u8], base: i64) {
    if let Some(h) = BatchHeader::mut_from(batch) {
        h.base_offset.set(base);
    }
}
