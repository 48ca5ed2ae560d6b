//! Work-around for a glommio 0.9 quirk on this VM class (see DESIGN.md §5): the first DmaFile a
//! thread opens on a device triggers an iopoll probe that reads offset 0. If that file is empty
//! the probe wrongly marks the device pollable and later reads fail with EOPNOTSUPP. We open a
//! small non-empty file first, once per thread and device.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use glommio::io::OpenOptions;

use crate::error::{LogError, Result};
use crate::io;

thread_local! {
    static PROBED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

const PROBE_FILE: &str = ".sluice-dma-probe";

/// Makes sure this thread's glommio reactor probed the device holding `dir` with a non-empty
/// file. Cheap after the first call per (thread, device).
pub async fn prime_dma_probe(dir: &Path) -> Result<()> {
    let dev = std::fs::metadata(dir)
        .map_err(|e| LogError::io("stat", dir, e))?
        .dev();
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(PROBE_FILE);
    let ok_len = std::fs::metadata(&path)
        .map(|m| m.len() >= 4096)
        .unwrap_or(false);
    if !ok_len {
        // The data must be on disk, not only in the page cache: ext4 delays allocation, and a
        // direct read of a not-yet-allocated range "succeeds" like a read of an empty file,
        // which is exactly the wrong answer this file exists to prevent (seen in CI: the
        // verification read below then failed with EOPNOTSUPP). Written under a name of this
        // thread's and renamed into place once synced: the shards of one broker start at once,
        // and another shard must never see the file at its full length before it is allocated
        // (that race made a start fail now and then with "reading probe ...: os error 95").
        let tmp = dir.join(format!(
            "{PROBE_FILE}.tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        io::write_synced(&tmp, &[0x5a_u8; 4096]).map_err(|e| LogError::io("writing", &tmp, e))?;
        io::rename(&tmp, &path).map_err(|e| LogError::io("renaming", &tmp, e))?;
    }
    let f = OpenOptions::new()
        .read(true)
        .dma_open(&path)
        .await
        .map_err(|e| LogError::io("opening probe", &path, e.into()))?;
    let _ = f
        .read_at_aligned(0, 4096)
        .await
        .map_err(|e| LogError::io("reading probe", &path, e.into()))?;
    let _ = f.close().await;
    PROBED.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}
