//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::future::Future;

use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::{FirstBatch, Offset, PartitionLog};

/// Runs `f` on a fresh single-threaded glommio executor and returns its output.
pub fn run<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A batch whose `count` values encode `tag` and the record index, so reads can be checked.
pub fn tagged_batch(tag: u64, count: usize, ts: i64) -> Vec<u8> {
    let values: Vec<String> = (0..count).map(|i| format!("{tag}:{i}")).collect();
    let recs: Vec<batch::NewRecord<'_>> = values
        .iter()
        .map(|v| batch::NewRecord {
            key: None,
            value: Some(v.as_bytes()),
            timestamp: ts,
        })
        .collect();
    batch::build(&recs)
}

/// Reads every batch from `from` to the high watermark; returns (base offset, bytes) pairs.
pub async fn read_all(log: &PartitionLog, from: Offset, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = log
            .read(next, max_bytes, FirstBatch::Always)
            .await
            .expect("read");
        if r.data.is_empty() {
            assert_eq!(
                next, r.high_watermark,
                "empty read only at the high watermark"
            );
            break;
        }
        let bytes = r.data.to_vec().expect("bytes");
        for b in batch::split_batches(&bytes) {
            let h = batch::validate(b).expect("stored batches stay valid");
            out.push((h.base_offset.get() as u64, b.to_vec()));
            next = Offset(h.last().get() + 1);
        }
        let consumed: usize = batch::split_batches(&bytes).map(|b| b.len()).sum();
        assert_eq!(consumed, bytes.len(), "reads are batch aligned");
    }
    out
}

/// The payload of a stored batch with its offset fields reset, for comparing with the input.
pub fn normalized(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    let h = BatchHeader::mut_from(&mut v).expect("header");
    h.base_offset.set(0);
    h.partition_leader_epoch.set(-1);
    v
}

/// A batch of `count` records whose values start with `tag:index:` and are padded to
/// `value_len` bytes with a byte derived from `tag`, all with timestamp `ts`. Deterministic, so a
/// test can rebuild the exact input from `(tag, count, value_len, ts)`.
pub fn padded_batch(tag: u64, count: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let pad = b'a' + (tag % 26) as u8;
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut v = format!("{tag}:{i}:").into_bytes();
            v.resize(v.len().max(value_len), pad);
            v
        })
        .collect();
    let recs: Vec<batch::NewRecord<'_>> = values
        .iter()
        .map(|v| batch::NewRecord {
            key: None,
            value: Some(v),
            timestamp: ts,
        })
        .collect();
    batch::build(&recs)
}

/// Copies the regular files of `src` (a partition directory, which has no subdirectories)
/// into `dst`, creating it. The log may be open and writing meanwhile.
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("create copy dir");
    for entry in std::fs::read_dir(src).expect("list dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_file() {
            match std::fs::copy(entry.path(), dst.join(entry.file_name())) {
                Ok(_) => {}
                // renamed or deleted since the listing (a seal's temp file, on the blocking
                // thread): as a crash at that moment would find it
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copy file: {e}"),
            }
        }
    }
}

/// Sum of the sizes of the `.log` files in `dir`.
pub fn log_files_len(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().expect("stat").len())
        .sum()
}
