//! Durable Raft storage in one directory.
//!
//! Files:
//! - `log`: append-only entries. A 28-byte header (magic, version, the base index and term: the
//!   entry just before the first one kept) then records `len u32 | crc32c u32 | Entry protobuf`.
//!   A record whose index is at or below the current last index replaces that suffix (Raft's
//!   conflict truncation), so the file is only ever appended to; compaction and snapshot
//!   installation rewrite it whole (temp file, fdatasync, rename, fsync dir). On open, a torn or
//!   corrupt tail is cut off.
//! - `hardstate`: term, vote, commit and the ConfState, rewritten whole (temp file, fdatasync,
//!   rename, fsync dir) whenever they change.
//! - `snapshot`: the latest state-machine snapshot with its metadata, written the same way.
//!
//! Every write that raft-rs needs durable returns only after its fdatasync, so the caller may send
//! the messages that depend on it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::QuorumError;

const LOG_FILE: &str = "log";
const HARD_STATE_FILE: &str = "hardstate";
const SNAPSHOT_FILE: &str = "snapshot";
const LOG_MAGIC: &[u8; 4] = b"SQLG";
const HS_MAGIC: &[u8; 4] = b"SQHS";
const SNAP_MAGIC: &[u8; 4] = b"SQSN";
const VERSION: u32 = 1;
const LOG_HEADER_LEN: usize = 28;
const RECORD_HEADER_LEN: usize = 8;
/// No single entry is larger than this; a record claiming more is treated as a torn tail.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> QuorumError {
    let context = context.into();
    move |source| QuorumError::Io { context, source }
}

fn corrupt(what: &Path, reason: impl Into<String>) -> QuorumError {
    QuorumError::Corrupt {
        what: what.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes `name` in `dir` durably: a temp file, fdatasync, rename over the old one, fsync of the
/// directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), QuorumError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        f.sync_data()
            .map_err(io_err(format!("syncing {}", tmp.display())))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), QuorumError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

/// `magic | body len u64 | crc32c(body) u32 | body`
fn encode_blob(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a blob file; `Ok(None)` if it does not exist.
fn read_blob(path: &Path, magic: &[u8; 4]) -> Result<Option<Vec<u8>>, QuorumError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
    };
    if bytes.len() < 16 || &bytes[..4] != magic {
        return Err(corrupt(path, "bad header"));
    }
    let len = u64::from_le_bytes(le8(&bytes[4..12]));
    let crc = u32::from_le_bytes(le4(&bytes[12..16]));
    let body = &bytes[16..];
    if body.len() as u64 != len {
        return Err(corrupt(path, format!("length {} != {len}", body.len())));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt(path, "crc mismatch"));
    }
    Ok(Some(body.to_vec()))
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn log_header(base_index: u64, base_term: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(LOG_HEADER_LEN);
    h.extend_from_slice(LOG_MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&base_index.to_le_bytes());
    h.extend_from_slice(&base_term.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn encode_record(out: &mut Vec<u8>, e: &Entry) -> Result<(), QuorumError> {
    let body = e
        .write_to_bytes()
        .map_err(|err| QuorumError::Raft(format!("encoding entry {}: {err}", e.index)))?;
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

fn encode_hard_state(hs: &HardState, cs: &ConfState) -> Result<Vec<u8>, QuorumError> {
    let enc = |e: protobuf::ProtobufError| QuorumError::Raft(format!("encoding hard state: {e}"));
    let h = hs.write_to_bytes().map_err(enc)?;
    let c = cs.write_to_bytes().map_err(enc)?;
    let mut body = Vec::with_capacity(4 + h.len() + c.len());
    body.extend_from_slice(&(h.len() as u32).to_le_bytes());
    body.extend_from_slice(&h);
    body.extend_from_slice(&c);
    Ok(encode_blob(HS_MAGIC, &body))
}

/// What a log file holds after replay.
struct LoadedLog {
    base_index: u64,
    base_term: u64,
    entries: Vec<Entry>,
    /// Bytes of the file that are valid; anything after is a torn tail.
    valid_len: u64,
    file_len: u64,
}

fn replay_log(path: &Path, bytes: &[u8]) -> Result<LoadedLog, QuorumError> {
    if bytes.len() < LOG_HEADER_LEN || &bytes[..4] != LOG_MAGIC {
        return Err(corrupt(path, "bad log header"));
    }
    if crc32c::crc32c(&bytes[..24]) != u32::from_le_bytes(le4(&bytes[24..28])) {
        return Err(corrupt(path, "log header crc mismatch"));
    }
    let version = u32::from_le_bytes(le4(&bytes[4..8]));
    if version != VERSION {
        return Err(corrupt(path, format!("unknown log version {version}")));
    }
    let base_index = u64::from_le_bytes(le8(&bytes[8..16]));
    let base_term = u64::from_le_bytes(le8(&bytes[16..24]));
    let mut entries: Vec<Entry> = Vec::new();
    let mut pos = LOG_HEADER_LEN;
    loop {
        let rest = &bytes[pos..];
        if rest.len() < RECORD_HEADER_LEN {
            break;
        }
        let len = u32::from_le_bytes(le4(&rest[..4])) as usize;
        let crc = u32::from_le_bytes(le4(&rest[4..8]));
        if len > MAX_ENTRY_BYTES || rest.len() - RECORD_HEADER_LEN < len {
            break;
        }
        let body = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(e) = Entry::parse_from_bytes(body) else {
            break;
        };
        let last = base_index + entries.len() as u64;
        if e.index <= base_index || e.index > last + 1 {
            return Err(corrupt(
                path,
                format!(
                    "entry {} at byte {pos} does not follow the log ({base_index}, {last}]",
                    e.index
                ),
            ));
        }
        entries.truncate((e.index - base_index - 1) as usize);
        entries.push(e);
        pos += RECORD_HEADER_LEN + len;
    }
    Ok(LoadedLog {
        base_index,
        base_term,
        entries,
        valid_len: pos as u64,
        file_len: bytes.len() as u64,
    })
}

/// Raft storage on disk; every mutation is durable when it returns.
pub struct DiskStorage {
    dir: PathBuf,
    log: File,
    base_index: u64,
    base_term: u64,
    /// Entries `base_index + 1 ..= last_index`.
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
}

impl DiskStorage {
    /// Opens (or, when `dir` holds no Raft state yet, initializes with `voters` as the ConfState)
    /// the storage in `dir`. A torn log tail is truncated.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<DiskStorage, QuorumError> {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        for name in [LOG_FILE, HARD_STATE_FILE, SNAPSHOT_FILE] {
            let tmp = dir.join(format!("{name}.tmp"));
            if tmp.exists() {
                fs::remove_file(&tmp).map_err(io_err(format!("removing {}", tmp.display())))?;
            }
        }
        let log_path = dir.join(LOG_FILE);
        let hs_path = dir.join(HARD_STATE_FILE);
        let snap_path = dir.join(SNAPSHOT_FILE);

        let snapshot = match read_blob(&snap_path, SNAP_MAGIC)? {
            Some(body) => Snapshot::parse_from_bytes(&body)
                .map_err(|e| corrupt(&snap_path, format!("decoding: {e}")))?,
            None => Snapshot::default(),
        };
        let (mut hard_state, conf_state, fresh) = match read_blob(&hs_path, HS_MAGIC)? {
            Some(body) => {
                if body.len() < 4 {
                    return Err(corrupt(&hs_path, "short body"));
                }
                let hl = u32::from_le_bytes(le4(&body[..4])) as usize;
                if body.len() < 4 + hl {
                    return Err(corrupt(&hs_path, "short hard state"));
                }
                let hs = HardState::parse_from_bytes(&body[4..4 + hl])
                    .map_err(|e| corrupt(&hs_path, format!("decoding hard state: {e}")))?;
                let cs = ConfState::parse_from_bytes(&body[4 + hl..])
                    .map_err(|e| corrupt(&hs_path, format!("decoding conf state: {e}")))?;
                (hs, cs, false)
            }
            None => {
                if log_path.exists() || !snapshot.is_empty() {
                    return Err(corrupt(
                        &hs_path,
                        "missing while the log or snapshot exists",
                    ));
                }
                let mut cs = ConfState::default();
                cs.set_voters(voters.to_vec());
                (HardState::default(), cs, true)
            }
        };
        if fresh {
            write_atomic(dir, LOG_FILE, &log_header(0, 0))?;
            write_atomic(
                dir,
                HARD_STATE_FILE,
                &encode_hard_state(&hard_state, &conf_state)?,
            )?;
        }
        let mut sorted_cfg = voters.to_vec();
        sorted_cfg.sort_unstable();
        let mut sorted_disk = conf_state.voters.clone();
        sorted_disk.sort_unstable();
        if sorted_cfg != sorted_disk {
            return Err(QuorumError::Config(format!(
                "the configured voters {sorted_cfg:?} differ from the stored voter set \
                 {sorted_disk:?} (membership changes are not supported)"
            )));
        }

        let bytes =
            fs::read(&log_path).map_err(io_err(format!("reading {}", log_path.display())))?;
        let loaded = replay_log(&log_path, &bytes)?;
        drop(bytes);
        if loaded.valid_len < loaded.file_len {
            tracing::warn!(
                path = %log_path.display(),
                valid = loaded.valid_len,
                len = loaded.file_len,
                "raft log has a torn or corrupt tail; truncating it"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io_err(format!("opening {}", log_path.display())))?;
            f.set_len(loaded.valid_len)
                .and_then(|_| f.sync_all())
                .map_err(io_err(format!("truncating {}", log_path.display())))?;
        }
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let mut st = DiskStorage {
            dir: dir.to_path_buf(),
            log,
            base_index: loaded.base_index,
            base_term: loaded.base_term,
            entries: loaded.entries,
            hard_state: HardState::default(),
            conf_state,
            snapshot,
        };

        // Reconcile the log with the snapshot: the log must contain the snapshot's entry (or start
        // right after it); otherwise (a crash while a received snapshot was being installed) the
        // log is stale and is reset to start after the snapshot.
        if !st.snapshot.is_empty() {
            let (si, stm) = {
                let m = st.snapshot.get_metadata();
                (m.index, m.term)
            };
            if st.base_index > si {
                return Err(corrupt(
                    &log_path,
                    format!(
                        "log starts after {} but the snapshot is at {si}",
                        st.base_index
                    ),
                ));
            }
            let matches = matches!(st.term_of(si), Some(t) if t == stm);
            if !matches {
                tracing::warn!(
                    snapshot = si,
                    "raft log does not follow the snapshot; resetting it"
                );
                st.reset_log(si, stm)?;
            }
        }
        let last = st.last_index();
        let floor = st.snapshot.get_metadata().index.max(st.base_index);
        if hard_state.commit > last {
            tracing::warn!(
                commit = hard_state.commit,
                last,
                "stored commit index is past the log's end; lowering it"
            );
            hard_state.commit = last;
        }
        if hard_state.commit < floor {
            hard_state.commit = floor;
        }
        if !st.snapshot.is_empty() {
            hard_state.term = hard_state.term.max(st.snapshot.get_metadata().term);
        }
        st.hard_state = hard_state;
        Ok(st)
    }

    fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.base_index {
            return Some(self.base_term);
        }
        if idx < self.base_index || idx > self.last_index() {
            return None;
        }
        Some(self.entries[(idx - self.base_index - 1) as usize].term)
    }

    pub fn first_index(&self) -> u64 {
        self.base_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    /// The latest snapshot (empty, index 0, if none was taken or received).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Replaces the log file with one holding `base` and the current entries.
    fn rewrite_log(&mut self) -> Result<(), QuorumError> {
        let mut buf = log_header(self.base_index, self.base_term);
        for e in &self.entries {
            encode_record(&mut buf, e)?;
        }
        write_atomic(&self.dir, LOG_FILE, &buf)?;
        let path = self.dir.join(LOG_FILE);
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        Ok(())
    }

    fn reset_log(&mut self, base_index: u64, base_term: u64) -> Result<(), QuorumError> {
        self.base_index = base_index;
        self.base_term = base_term;
        self.entries.clear();
        self.rewrite_log()
    }

    /// Appends entries (replacing any suffix they conflict with) and fdatasyncs the log.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), QuorumError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index <= self.base_index || first.index > self.last_index() + 1 {
            return Err(QuorumError::Raft(format!(
                "append at {} outside ({}, {}]",
                first.index,
                self.base_index,
                self.last_index() + 1
            )));
        }
        let mut buf = Vec::new();
        for e in ents {
            encode_record(&mut buf, e)?;
        }
        let path = self.dir.join(LOG_FILE);
        self.log
            .write_all(&buf)
            .map_err(io_err(format!("appending to {}", path.display())))?;
        self.log
            .sync_data()
            .map_err(io_err(format!("syncing {}", path.display())))?;
        self.entries
            .truncate((first.index - self.base_index - 1) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Stores the hard state durably (if it changed).
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), QuorumError> {
        if hs.term == self.hard_state.term
            && hs.vote == self.hard_state.vote
            && hs.commit == self.hard_state.commit
        {
            return Ok(());
        }
        self.write_hard_state(hs)
    }

    fn write_hard_state(&mut self, hs: &HardState) -> Result<(), QuorumError> {
        let mut next = HardState::default();
        next.set_term(hs.term);
        next.set_vote(hs.vote);
        next.set_commit(hs.commit);
        write_atomic(
            &self.dir,
            HARD_STATE_FILE,
            &encode_hard_state(&next, &self.conf_state)?,
        )?;
        self.hard_state = next;
        Ok(())
    }

    /// Stores a new commit index durably.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), QuorumError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    fn store_snapshot(&mut self, snap: Snapshot) -> Result<(), QuorumError> {
        let body = snap
            .write_to_bytes()
            .map_err(|e| QuorumError::Raft(format!("encoding snapshot: {e}")))?;
        write_atomic(&self.dir, SNAPSHOT_FILE, &encode_blob(SNAP_MAGIC, &body))?;
        self.snapshot = snap;
        Ok(())
    }

    /// Installs a snapshot received from the leader: stores it, replaces the log with an empty
    /// one starting after it and moves the commit index up to it.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), QuorumError> {
        let (index, term) = {
            let m = snap.get_metadata();
            (m.index, m.term)
        };
        if index < self.base_index {
            return Err(QuorumError::Raft(format!(
                "snapshot at {index} is older than the log start {}",
                self.base_index
            )));
        }
        let cs = snap.get_metadata().get_conf_state().clone();
        self.store_snapshot(snap)?;
        self.reset_log(index, term)?;
        self.conf_state = cs;
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        // always written: the conf state is stored beside the hard state
        self.write_hard_state(&hs)
    }

    /// Stores a snapshot of the state machine at `index` (applied, so present in the log or at
    /// its base) and compacts the log, keeping up to `keep` entries before `index` so that a
    /// follower that is only a little behind still catches up from the log.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        data: Vec<u8>,
        keep: u64,
    ) -> Result<(), QuorumError> {
        let term = self.term_of(index).ok_or_else(|| {
            QuorumError::Raft(format!(
                "snapshot at {index} outside the log [{}, {}]",
                self.base_index,
                self.last_index()
            ))
        })?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        {
            let m = snap.mut_metadata();
            m.index = index;
            m.term = term;
            m.set_conf_state(self.conf_state.clone());
        }
        self.store_snapshot(snap)?;
        self.compact(index.saturating_sub(keep))
    }

    /// Drops the entries up to and including `to` (which becomes the log's base).
    pub fn compact(&mut self, to: u64) -> Result<(), QuorumError> {
        if to <= self.base_index {
            return Ok(());
        }
        let term = self
            .term_of(to)
            .ok_or_else(|| QuorumError::Raft(format!("compact to {to} past the log end")))?;
        let drop_n = (to - self.base_index) as usize;
        self.entries.drain(..drop_n);
        self.base_index = to;
        self.base_term = term;
        self.rewrite_log()
    }
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.base_index - 1) as usize;
        let hi = (high - self.base_index - 1) as usize;
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(hi - lo);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.base_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(DiskStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(DiskStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.is_empty() || self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.set_index(index);
        e.set_term(term);
        e.set_data(format!("e{index}").into_bytes().into());
        e
    }

    fn snapshot(index: u64, term: u64, voters: &[u64]) -> Snapshot {
        let mut s = Snapshot::default();
        s.set_data(b"state".to_vec().into());
        let m = s.mut_metadata();
        m.index = index;
        m.term = term;
        m.mut_conf_state().voters = voters.to_vec();
        s
    }

    #[test]
    fn overwrites_compaction_and_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut st = DiskStorage::open(tmp.path(), &[1, 2, 3]).expect("open storage");
        assert_eq!((st.first_index(), st.last_index()), (1, 0));
        st.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .expect("append 1..=10");
        // a new leader's entries replace the suffix from 8
        st.append(&[entry(8, 2), entry(9, 2)])
            .expect("overwrite from 8");
        assert_eq!(st.last_index(), 9);
        let mut hs = HardState::default();
        hs.set_term(2);
        hs.set_vote(2);
        hs.set_commit(9);
        st.set_hard_state(&hs).expect("hard state");
        st.create_snapshot(9, b"s9".to_vec(), 3).expect("snapshot");
        assert_eq!(st.first_index(), 7, "kept 3 entries before the snapshot");
        drop(st);
        let st = DiskStorage::open(tmp.path(), &[1, 2, 3]).expect("open storage");
        assert_eq!((st.first_index(), st.last_index()), (7, 9));
        assert_eq!(st.term(6).expect("term 6"), 1, "the base keeps its term");
        assert_eq!(st.term(8).expect("term 8"), 2);
        assert_eq!(
            st.entries(7, 10, None, GetEntriesContext::empty(false))
                .expect("entries 7..10")
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(7, 1), (8, 2), (9, 2)]
        );
        assert!(st
            .entries(6, 8, None, GetEntriesContext::empty(false))
            .is_err());
        let rs = st.initial_state().expect("initial state");
        assert_eq!(
            (rs.hard_state.term, rs.hard_state.vote, rs.hard_state.commit),
            (2, 2, 9)
        );
        assert_eq!(rs.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(st.snapshot(0, 2).expect("snapshot").get_metadata().index, 9);
    }

    #[test]
    fn crash_while_installing_a_snapshot_resets_the_stale_log() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut st = DiskStorage::open(tmp.path(), &[1, 2, 3]).expect("open storage");
        st.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .expect("append 1..=10");
        let old_log = fs::read(tmp.path().join(LOG_FILE)).expect("read log");
        st.apply_snapshot(snapshot(20, 3, &[1, 2, 3]))
            .expect("install snapshot");
        assert_eq!((st.first_index(), st.last_index()), (21, 20));
        drop(st);
        // as if the crash came after the snapshot file but before the log was replaced
        fs::write(tmp.path().join(LOG_FILE), &old_log).expect("write old log");
        let st = DiskStorage::open(tmp.path(), &[1, 2, 3]).expect("open storage");
        assert_eq!((st.first_index(), st.last_index()), (21, 20));
        assert_eq!(st.term(20).expect("term 20"), 3);
        assert!(st.initial_state().expect("initial state").hard_state.commit >= 20);
    }
}
