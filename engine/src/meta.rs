//! The small per-partition metadata file (`partition.meta`, JSON), written atomically:
//! write a temp file, fdatasync it, rename over the old one, fsync the directory.

use crate::io;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

pub const META_FILE: &str = "partition.meta";

/// What a clean close leaves behind so the next open can skip the recovery scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanShutdown {
    /// Next offset to assign.
    pub log_end_offset: u64,
    /// Exact byte size of the active segment's `.log` file.
    pub active_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// DeleteRecords / retention moved the first readable offset here.
    pub log_start_offset: u64,
    /// Every segment with a base offset below this was fdatasync'd and sealed with its indexes;
    /// recovery scans from the segment containing this offset.
    pub recovery_point: u64,
    /// Present only between a clean close and the next open (the clean-shutdown marker).
    pub clean_shutdown: Option<CleanShutdown>,
    /// The log cleaner's progress (compacted topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaner: Option<CleanerCheckpoint>,
    /// Base offsets of the segments whose batches may leave offset gaps between them
    /// (segments the cleaner wrote, and follower segments that copied such gaps). Recovery
    /// scans of every other segment insist on contiguous offsets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub gapped_segments: std::collections::BTreeSet<u64>,
}

/// Where the log cleaner got to (Kafka's cleaner-offset-checkpoint, per partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanerCheckpoint {
    /// Offsets below this were deduplicated by a pass; the dirty section starts here.
    pub first_dirty: u64,
    /// The latest delete horizon a pass set (KIP-534): once it has passed, a pass is due to
    /// remove the tombstones and markers it covers, however clean the log is.
    #[serde(default)]
    pub delete_horizon: Option<i64>,
}

impl PartitionMeta {
    pub fn load(dir: &Path) -> Result<Option<PartitionMeta>> {
        let path = dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| LogError::BadMetadata {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io("reading", path, e)),
        }
    }

    /// Durably replaces the metadata file. Blocking, but small and rare (segment seal,
    /// DeleteRecords, retention, truncation, open and close).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        let bytes = serde_json::to_vec(self).map_err(|e| LogError::BadMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable_replace(&path, &bytes)
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves either the old or the new
/// content: write `<path>.tmp`, fdatasync it, rename it over `path`, fsync the directory.
/// Blocking; for small, rarely written files.
pub fn durable_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let written = io::write_new(&tmp, bytes)
        .map_err(|e| LogError::io("writing", &tmp, e))
        .and_then(|f| io::sync_data(&f).map_err(|e| LogError::io("syncing", &tmp, e)));
    if let Err(e) = written {
        // a full disk: give the temp file's blocks back (the old file is untouched)
        let _ = io::remove_file(&tmp);
        return Err(e);
    }
    io::rename(&tmp, path).map_err(|e| LogError::io("renaming", path, e))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// fsync a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    io::sync_dir(dir).map_err(|e| LogError::io("syncing dir", dir, e))
}
