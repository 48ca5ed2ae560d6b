//! The one door to the file system: every call of the engine (and of the broker's catalog)
//! that changes a file or a directory goes through a function here, which does the real
//! operation and, if a test installed a [`Recorder`], reports it afterwards.
//!
//! Data path: caller -> `io::dma_write` / `io::write_new` / `io::rename` / ... -> the real
//! syscall (glommio's io_uring for `DmaFile` and `BufferedFile`, std for small metadata files)
//! -> on success, one relaxed atomic load; only if a recorder is installed, a report of what
//! changed (written bytes, new length, sync start and end, directory entry changes).
//!
//! The power-cut model ([`crate::powercut`]) is the recorder the tests install: it knows what
//! an fdatasync made durable and what a power cut may lose. Reports are made after the
//! operation completed, so everything a caller acted upon (an acknowledged append) was
//! reported first; a sync reports its start (what it covers: everything completed before)
//! and its end (now durable).
//!
//! Sabotage ([`set_sabotage`]) is a test-only knob that breaks the durability contract on
//! purpose (an fdatasync or a directory fsync that does nothing), so that the power-cut test
//! can show it catches such a bug.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

/// A file's identity: (device, inode). Names change with renames; the inode does not.
pub type FileId = (u64, u64);

/// Receives every change the engine makes to files and directories (tests only).
pub trait Recorder: Send + Sync {
    /// A new, empty file appeared at `path`.
    fn created(&self, path: &Path, file: FileId);
    /// A new directory appeared at `path`.
    fn dir_created(&self, path: &Path);
    /// `len` bytes of `file` from `pos` now hold `data` (in the page cache or the disk cache).
    fn write(&self, file: FileId, pos: u64, data: &[u8]);
    /// The file's length is now `len` (truncate, ftruncate, fallocate without keep-size).
    fn set_len(&self, file: FileId, len: u64);
    /// The file's length is now at least `len` (fallocate without keep-size), zero-filled.
    fn grown_to(&self, file: FileId, len: u64);
    /// An fdatasync of `file` starts; it covers everything reported before. Returns a token.
    fn sync_begin(&self, file: FileId) -> u64;
    /// The fdatasync that returned `token` completed successfully.
    fn sync_end(&self, file: FileId, token: u64);
    /// `from` was renamed to `to` (replacing `to` if it existed).
    fn renamed(&self, from: &Path, to: &Path);
    /// The name `path` was unlinked.
    fn removed(&self, path: &Path);
    /// An fsync of directory `dir` starts; it covers every entry change reported before.
    fn dir_sync_begin(&self, dir: &Path) -> u64;
    /// The directory fsync that returned `token` completed successfully.
    fn dir_sync_end(&self, dir: &Path, token: u64);
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RECORDER: RwLock<Option<Arc<dyn Recorder>>> = RwLock::new(None);
static SABOTAGE: AtomicU8 = AtomicU8::new(0);

/// Installs the process-wide recorder (tests). Replaces any previous one.
pub fn install(rec: Arc<dyn Recorder>) {
    *RECORDER.write().unwrap_or_else(|e| e.into_inner()) = Some(rec);
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Removes the recorder; the I/O functions go back to one atomic load of overhead.
pub fn uninstall() {
    ACTIVE.store(false, Ordering::SeqCst);
    *RECORDER.write().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Whether a recorder is installed: the only cost the hooks add when none is (one relaxed
/// atomic load; engine/examples/io_hook_cost.rs measures it beside a real write).
#[inline]
pub fn recording() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

#[inline]
fn recorder() -> Option<Arc<dyn Recorder>> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    RECORDER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A deliberate break of the durability contract, for showing that the power-cut test
/// detects one. Never set outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    None = 0,
    /// fdatasync of data files returns at once without syncing: Synced waiters are released
    /// before anything is durable.
    SkipDataSync = 1,
    /// Directory fsyncs return at once: new, renamed and deleted names are never made durable.
    SkipDirSync = 2,
}

/// Sets the sabotage knob (process-wide; tests only).
pub fn set_sabotage(s: Sabotage) {
    SABOTAGE.store(s as u8, Ordering::SeqCst);
}

#[inline]
fn sabotaged(s: Sabotage) -> bool {
    SABOTAGE.load(Ordering::Relaxed) == s as u8
}

fn file_id(fd: &impl AsRawFd) -> io::Result<FileId> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a live fd into a zeroed stat struct we own.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// Reports through the recorder, if any; a failing fstat only loses the report (the model's
/// self-check then fails, which is where such a gap belongs).
fn report(fd: &impl AsRawFd, f: impl FnOnce(&dyn Recorder, FileId)) {
    if let Some(r) = recorder() {
        if let Ok(id) = file_id(fd) {
            f(&*r, id);
        }
    }
}

fn glommio_err<T>(e: glommio::GlommioError<T>) -> io::Error {
    e.into()
}

/// Opens `path` for O_DIRECT reads and writes, creating it if `create` and it is missing.
/// read+write: glommio's iopoll probe reads the file, so write-only opens fail (glommio#670).
pub async fn dma_open(path: &Path, create: bool) -> io::Result<DmaFile> {
    let existed = create && recorder().is_some() && path.exists();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(glommio_err)?;
    if create && !existed {
        report(&f, |r, id| r.created(path, id));
    }
    Ok(f)
}

/// `DmaFile::write_rc_at`, reported.
pub async fn dma_write_rc(f: &DmaFile, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
    let n = f.write_rc_at(buf.clone(), pos).await.map_err(glommio_err)?;
    report(f, |r, id| r.write(id, pos, &buf.as_bytes()[..n]));
    Ok(n)
}

/// `DmaFile::write_at`, reported.
pub async fn dma_write(f: &DmaFile, buf: DmaBuffer, pos: u64) -> io::Result<usize> {
    dma_write_rc(f, Rc::new(buf), pos).await
}

/// `DmaFile::fdatasync`, reported (start and end).
pub async fn dma_fdatasync(f: &DmaFile) -> io::Result<()> {
    if sabotaged(Sabotage::SkipDataSync) {
        return Ok(());
    }
    let token = recorder().and_then(|r| file_id(f).ok().map(|id| (r.sync_begin(id), r, id)));
    f.fdatasync().await.map_err(glommio_err)?;
    if let Some((t, r, id)) = token {
        r.sync_end(id, t);
    }
    Ok(())
}

/// `DmaFile::truncate` (ftruncate), reported.
pub async fn dma_truncate(f: &DmaFile, len: u64) -> io::Result<()> {
    f.truncate(len).await.map_err(glommio_err)?;
    report(f, |r, id| r.set_len(id, len));
    Ok(())
}

/// `DmaFile::pre_allocate` without keep-size (the length grows to `len`, zero-filled),
/// reported.
pub async fn dma_pre_allocate(f: &DmaFile, len: u64) -> io::Result<()> {
    f.pre_allocate(len, false).await.map_err(glommio_err)?;
    report(f, |r, id| r.grown_to(id, len));
    Ok(())
}

/// `BufferedFile::create` (create or truncate), reported.
pub async fn buffered_create(path: &Path) -> io::Result<BufferedFile> {
    let existed = recorder().is_some() && path.exists();
    let f = BufferedFile::create(path).await.map_err(glommio_err)?;
    report(&f, |r, id| {
        if existed {
            r.set_len(id, 0)
        } else {
            r.created(path, id)
        }
    });
    Ok(f)
}

/// `BufferedFile::write_at`, reported.
pub async fn buffered_write(f: &BufferedFile, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
    let copy = recorder().map(|_| buf.clone());
    let n = f.write_at(buf, pos).await.map_err(glommio_err)?;
    if let Some(c) = copy {
        report(f, |r, id| r.write(id, pos, &c[..n]));
    }
    Ok(n)
}

/// `BufferedFile::fdatasync`, reported.
pub async fn buffered_fdatasync(f: &BufferedFile) -> io::Result<()> {
    if sabotaged(Sabotage::SkipDataSync) {
        return Ok(());
    }
    let token = recorder().and_then(|r| file_id(f).ok().map(|id| (r.sync_begin(id), r, id)));
    f.fdatasync().await.map_err(glommio_err)?;
    if let Some((t, r, id)) = token {
        r.sync_end(id, t);
    }
    Ok(())
}

/// Creates (or truncates) `path` and writes `bytes` from offset 0, with std; the caller syncs
/// the returned file.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let existed = recorder().is_some() && path.exists();
    let mut f = File::create(path)?;
    report(&f, |r, id| {
        if existed {
            r.set_len(id, 0)
        } else {
            r.created(path, id)
        }
    });
    f.write_all(bytes)?;
    report(&f, |r, id| r.write(id, 0, bytes));
    Ok(f)
}

/// `File::sync_data`, reported.
pub fn sync_data(f: &File) -> io::Result<()> {
    if sabotaged(Sabotage::SkipDataSync) {
        return Ok(());
    }
    let token = recorder().and_then(|r| file_id(f).ok().map(|id| (r.sync_begin(id), r, id)));
    f.sync_data()?;
    if let Some((t, r, id)) = token {
        r.sync_end(id, t);
    }
    Ok(())
}

/// Writes `path` with `bytes` and fdatasyncs it (no directory fsync).
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = write_new(path, bytes)?;
    sync_data(&f)
}

/// `std::fs::rename`, reported.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(r) = recorder() {
        r.renamed(from, to);
    }
    Ok(())
}

/// `glommio::io::rename`, reported.
pub async fn rename_async(from: &Path, to: &Path) -> io::Result<()> {
    glommio::io::rename(from, to).await.map_err(glommio_err)?;
    if let Some(r) = recorder() {
        r.renamed(from, to);
    }
    Ok(())
}

/// `std::fs::remove_file`, reported.
pub fn remove_file(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(r) = recorder() {
        r.removed(path);
    }
    Ok(())
}

/// `glommio::io::remove`, reported.
pub async fn remove_async(path: &Path) -> io::Result<()> {
    glommio::io::remove(path).await.map_err(glommio_err)?;
    if let Some(r) = recorder() {
        r.removed(path);
    }
    Ok(())
}

/// `std::fs::create_dir_all`, and then an fsync of the parent of each directory it created,
/// so that the new directories survive a power cut (their own entries are the caller's to
/// sync). Reports each directory created.
pub fn create_dir_all_durable(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    std::fs::create_dir_all(path)?;
    for d in missing.iter().rev() {
        if let Some(r) = recorder() {
            r.dir_created(d);
        }
        match d.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// `std::fs::remove_dir_all`, reported as the unlink of `path`'s entry in its parent (the
/// caller fsyncs the parent).
pub fn remove_dir_all(path: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(path)?;
    if let Some(r) = recorder() {
        r.removed(path);
    }
    Ok(())
}

/// fsync a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if sabotaged(Sabotage::SkipDirSync) {
        return Ok(());
    }
    let d = File::open(dir)?;
    let token = recorder().map(|r| (r.dir_sync_begin(dir), r));
    d.sync_all()?;
    if let Some((t, r)) = token {
        r.dir_sync_end(dir, t);
    }
    Ok(())
}

/// fsync a directory through glommio (the reactor never waits for the disk).
pub async fn sync_dir_async(dir: &Path) -> io::Result<()> {
    if sabotaged(Sabotage::SkipDirSync) {
        return Ok(());
    }
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(glommio_err)?;
    let token = recorder().map(|r| (r.dir_sync_begin(dir), r));
    d.sync().await.map_err(glommio_err)?;
    if let Some((t, r)) = token {
        r.dir_sync_end(dir, t);
    }
    d.close().await.map_err(glommio_err)?;
    Ok(())
}

/// Runs blocking file work (std writes, fdatasyncs, renames, directory fsyncs of small
/// metadata files) on the executor's blocking thread pool, so the reactor and every partition
/// of its shard go on meanwhile. The work's reports reach the recorder from that thread, after
/// each operation completed, as on the reactor.
pub async fn off_reactor<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}
