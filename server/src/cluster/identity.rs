//! Which topic a replica's directory belongs to (Kafka's `partition.metadata`): topic names can
//! be reused after a delete, so a broker that was down while a topic was deleted and created
//! again must not serve the old topic's records as the new one's.
//!
//! Data path: the reconcile loop, before it first opens a replica this run ->
//! [`check`] reads `<partition dir>/partition.metadata` -> same topic id: open it; an older
//! topic's files (the image is at least as new as when they were recorded): delete them and
//! start empty; files newer than this broker's image: wait for the image -> after opening,
//! [`record`] writes the topic id and the image index durably.

use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const FILE: &str = "partition.metadata";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionMeta {
    topic_id: Uuid,
    /// The metadata image's applied index when this broker first held the replica.
    seen_at: u64,
}

/// What to do with a replica's directory before opening it for topic `topic_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing recorded, or the same topic: open it.
    Open,
    /// It holds an older topic of the same name: delete it, then open.
    Stale,
    /// It holds a topic newer than this broker's image knows: leave it until the image
    /// catches up.
    Wait,
}

fn read(dir: &Path) -> Option<PartitionMeta> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn check(dir: &Path, topic_id: Uuid, image_applied: u64) -> Verdict {
    match read(dir) {
        None => Verdict::Open,
        Some(m) if m.topic_id == topic_id => Verdict::Open,
        Some(m) if image_applied >= m.seen_at => Verdict::Stale,
        Some(_) => Verdict::Wait,
    }
}

/// Whether `dir` records a topic this broker held at an image index not above
/// `image_applied`: if that image no longer has the topic, it was deleted since.
pub fn recorded_by(dir: &Path, image_applied: u64) -> bool {
    read(dir).is_some_and(|m| m.seen_at <= image_applied)
}

/// Records (fdatasync'd, atomically) that `dir` holds topic `topic_id`, unless it already says
/// so.
pub fn record(dir: &Path, topic_id: Uuid, image_applied: u64) -> Result<(), String> {
    if read(dir).is_some_and(|m| m.topic_id == topic_id) {
        return Ok(());
    }
    let m = PartitionMeta {
        topic_id,
        seen_at: image_applied,
    };
    let bytes = serde_json::to_vec(&m).map_err(|e| e.to_string())?;
    sluice_engine::meta::durable_replace(&dir.join(FILE), &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let d = tempfile::tempdir().expect("tempdir");
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(check(d.path(), old, 5), Verdict::Open);
        record(d.path(), old, 10).expect("record");
        assert_eq!(check(d.path(), old, 3), Verdict::Open);
        // an image at least as new as the record names another topic: the files are stale
        assert_eq!(check(d.path(), new, 10), Verdict::Stale);
        // an image older than the record: wait for it
        assert_eq!(check(d.path(), new, 9), Verdict::Wait);
        assert!(recorded_by(d.path(), 10) && !recorded_by(d.path(), 9));
        record(d.path(), new, 12).expect("record");
        assert_eq!(check(d.path(), new, 12), Verdict::Open);
    }
}
