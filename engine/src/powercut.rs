//! The power-cut model (tests only): a [`crate::io::Recorder`] that keeps, per file, the
//! durable image plus the operations no fdatasync has covered yet, and per directory the
//! durable entries plus the entry changes no directory fsync has covered yet. A power cut
//! ([`PowerModel::cut`]) builds what a disk must keep (everything up to the last completed
//! sync of each file and directory) plus seeded choices of what else survived: nothing,
//! everything, a prefix, a prefix with the next write torn at 512-byte sectors, or any subset
//! (reordered). [`PowerModel::everything`] is the image with every operation applied; it must
//! equal the real directory byte for byte ([`PowerModel::self_check`]), which proves that no
//! I/O site bypasses [`crate::io`].
//!
//! Data path: engine I/O -> `crate::io` -> `Recorder` callbacks -> this model (a mutex around
//! the state; tests only) -> [`Image`] -> [`Image::materialize`] into a fresh directory that
//! the real engine then opens and recovers.
//!
//! What it cannot model: the page cache serving reads of data that a cut will lose (the engine
//! only reads its own writes back through the same process, which the cut ends), a disk that
//! lies about fsync, or damage to synced sectors (engine/tests/damage.rs covers those bytes).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::io::{FileId, Recorder};

/// Disk sector size: the unit a torn write keeps or loses.
pub const SECTOR: u64 = 512;

/// A small seeded generator (SplitMix64): deterministic, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
    Grow(u64),
}

#[derive(Debug, Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    ops: Vec<(u64, FileOp)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(usize),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(OsString, Entry),
    Unlink(OsString),
    Rename(OsString, OsString),
}

#[derive(Debug, Default, Clone)]
struct Dir {
    durable: BTreeMap<OsString, Entry>,
    ops: Vec<(u64, DirOp)>,
}

#[derive(Debug, Default)]
struct State {
    root: PathBuf,
    seq: u64,
    inodes: Vec<Inode>,
    by_id: HashMap<FileId, usize>,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Operations on files or directories under the root that the model could not place.
    strays: Vec<String>,
}

/// What survived for one list of pending operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Yes,
    /// Each sector independently (a torn write).
    Torn,
}

fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// A directory tree image: relative path -> file bytes, or `None` for a directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image(pub BTreeMap<PathBuf, Option<Vec<u8>>>);

impl Image {
    /// Reads a real tree (regular files and directories) into an image.
    pub fn read(root: &Path) -> std::io::Result<Image> {
        let mut out = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in std::fs::read_dir(root.join(&rel))? {
                let e = e?;
                let r = rel.join(e.file_name());
                let t = e.file_type()?;
                if t.is_dir() {
                    out.insert(r.clone(), None);
                    stack.push(r);
                } else if t.is_file() {
                    out.insert(r, Some(std::fs::read(e.path())?));
                }
            }
        }
        Ok(Image(out))
    }

    /// Writes the image below `dst` (which must not exist yet), with plain std calls that the
    /// model does not see.
    pub fn materialize(&self, dst: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dst)?;
        for (rel, node) in &self.0 {
            let p = dst.join(rel);
            match node {
                None => std::fs::create_dir_all(&p)?,
                Some(bytes) => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&p, bytes)?;
                }
            }
        }
        Ok(())
    }

    /// The first difference from `other`, described, or `None` if equal.
    pub fn diff(&self, other: &Image) -> Option<String> {
        for (k, v) in &self.0 {
            match other.0.get(k) {
                None => return Some(format!("{} only in the first image", k.display())),
                Some(w) if w != v => {
                    let (a, b) = (v.as_deref().unwrap_or(&[]), w.as_deref().unwrap_or(&[]));
                    let at = a.iter().zip(b).position(|(x, y)| x != y);
                    return Some(format!(
                        "{} differs: {} vs {} bytes, first difference at {:?}",
                        k.display(),
                        a.len(),
                        b.len(),
                        at
                    ));
                }
                _ => {}
            }
        }
        other
            .0
            .keys()
            .find(|k| !self.0.contains_key(*k))
            .map(|k| format!("{} only in the second image", k.display()))
    }
}

/// The recorder tests install with [`crate::io::install`]; see the module doc.
#[derive(Debug, Default)]
pub struct PowerModel {
    st: Mutex<State>,
}

impl PowerModel {
    /// A model of the tree at `root`, which must exist: its present content is taken as
    /// durable (the state after the previous cut, or an empty directory).
    pub fn adopt(root: &Path) -> std::io::Result<PowerModel> {
        let m = PowerModel::default();
        m.readopt(root)?;
        Ok(m)
    }

    /// Forgets everything and takes the tree at `root` as durable.
    pub fn readopt(&self, root: &Path) -> std::io::Result<()> {
        let root = normalize(root);
        let mut st = State {
            root: root.clone(),
            ..State::default()
        };
        let mut stack = vec![root.clone()];
        st.dirs.insert(root.clone(), Dir::default());
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                let p = d.join(e.file_name());
                let md = e.metadata()?;
                let entry = if md.is_dir() {
                    st.dirs.insert(p.clone(), Dir::default());
                    stack.push(p);
                    Entry::Dir
                } else if md.is_file() {
                    let ino = st.inodes.len();
                    st.inodes.push(Inode {
                        durable: std::fs::read(&p)?,
                        ops: Vec::new(),
                    });
                    st.by_id.insert((md.dev(), md.ino()), ino);
                    Entry::File(ino)
                } else {
                    continue;
                };
                if let Some(dir) = st.dirs.get_mut(&d) {
                    dir.durable.insert(e.file_name(), entry);
                }
            }
        }
        *self.lock() = st;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations under the root the model could not place (each one a gap in the model).
    pub fn strays(&self) -> Vec<String> {
        self.lock().strays.clone()
    }

    /// The tree with every recorded operation applied: what the real directory holds now.
    pub fn everything(&self) -> Image {
        self.lock().image(None)
    }

    /// A power cut now: the durable state plus seeded choices of what else survived.
    pub fn cut(&self, rng: &mut Rng) -> Image {
        self.lock().image(Some(rng))
    }

    /// The model's complete image must equal the real tree at the root byte for byte; an
    /// I/O site that bypasses [`crate::io`] shows up here.
    pub fn self_check(&self) -> Result<(), String> {
        let st = self.lock();
        if let Some(s) = st.strays.first() {
            return Err(format!("operation the model could not place: {s}"));
        }
        let model = st.image(None);
        let real = Image::read(&st.root).map_err(|e| format!("reading the real tree: {e}"))?;
        match model.diff(&real) {
            None => Ok(()),
            Some(d) => Err(format!("model (first) and real tree (second) differ: {d}")),
        }
    }
}

impl State {
    fn split(&self, path: &Path) -> Option<(PathBuf, OsString)> {
        let p = normalize(path);
        let name = p.file_name()?.to_owned();
        let parent = p.parent()?.to_path_buf();
        if self.dirs.contains_key(&parent) {
            Some((parent, name))
        } else {
            None
        }
    }

    fn under_root(&self, path: &Path) -> bool {
        normalize(path).starts_with(&self.root)
    }

    fn stray(&mut self, what: String) {
        self.strays.push(what);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn dir_op(&mut self, path: &Path, op: impl FnOnce(OsString) -> DirOp) {
        match self.split(path) {
            Some((parent, name)) => {
                let seq = self.next_seq();
                if let Some(d) = self.dirs.get_mut(&parent) {
                    d.ops.push((seq, op(name)));
                }
            }
            None if self.under_root(path) => self.stray(format!(
                "entry change in an unknown dir: {}",
                path.display()
            )),
            None => {}
        }
    }

    fn file_op(&mut self, file: FileId, op: FileOp) {
        if let Some(&ino) = self.by_id.get(&file) {
            let seq = self.next_seq();
            self.inodes[ino].ops.push((seq, op));
        }
    }

    /// The current entries of a directory (durable plus all pending changes).
    fn current(&self, dir: &Path) -> BTreeMap<OsString, Entry> {
        let Some(d) = self.dirs.get(dir) else {
            return BTreeMap::new();
        };
        let mut e = d.durable.clone();
        for (_, op) in &d.ops {
            apply_dir(&mut e, op);
        }
        e
    }

    fn image(&self, mut rng: Option<&mut Rng>) -> Image {
        // each inode's surviving content, decided once (a file renamed between directories
        // is the same inode)
        let mut files: Vec<Option<Vec<u8>>> = vec![None; self.inodes.len()];
        let mut out = BTreeMap::new();
        let mut stack = vec![(self.root.clone(), PathBuf::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Some(d) = self.dirs.get(&dir) else {
                continue;
            };
            let mut entries = d.durable.clone();
            let keep = choose(rng.as_deref_mut(), d.ops.len(), false);
            for ((_, op), k) in d.ops.iter().zip(keep) {
                if k != Keep::No {
                    apply_dir(&mut entries, op);
                }
            }
            for (name, entry) in entries {
                let r = rel.join(&name);
                match entry {
                    Entry::Dir => {
                        out.insert(r.clone(), None);
                        stack.push((dir.join(&name), r));
                    }
                    Entry::File(ino) => {
                        if files[ino].is_none() {
                            files[ino] = Some(self.inodes[ino].survive(rng.as_deref_mut()));
                        }
                        out.insert(r, files[ino].clone());
                    }
                }
            }
        }
        Image(out)
    }
}

impl Inode {
    fn survive(&self, mut rng: Option<&mut Rng>) -> Vec<u8> {
        let mut img = self.durable.clone();
        let keep = choose(rng.as_deref_mut(), self.ops.len(), true);
        for ((_, op), k) in self.ops.iter().zip(keep) {
            match k {
                Keep::No => {}
                Keep::Yes => apply_file(&mut img, op, None),
                Keep::Torn => apply_file(&mut img, op, rng.as_deref_mut()),
            }
        }
        img
    }

    fn sync_upto(&mut self, token: u64) {
        let n = self.ops.partition_point(|(s, _)| *s < token);
        for (_, op) in self.ops.drain(..n) {
            apply_file(&mut self.durable, &op, None);
        }
    }
}

/// The seeded survival choice for `n` pending operations (all of them without a generator).
fn choose(rng: Option<&mut Rng>, n: usize, tearable: bool) -> Vec<Keep> {
    let Some(rng) = rng else {
        return vec![Keep::Yes; n];
    };
    if n == 0 {
        return Vec::new();
    }
    match rng.below(5) {
        0 => vec![Keep::No; n],
        1 => vec![Keep::Yes; n],
        2 => {
            let k = rng.below(n as u64 + 1) as usize;
            (0..n)
                .map(|i| if i < k { Keep::Yes } else { Keep::No })
                .collect()
        }
        3 => {
            // a prefix, then the next one torn (or cut short, for directories)
            let k = rng.below(n as u64) as usize;
            (0..n)
                .map(|i| match i.cmp(&k) {
                    std::cmp::Ordering::Less => Keep::Yes,
                    std::cmp::Ordering::Equal if tearable => Keep::Torn,
                    _ => Keep::No,
                })
                .collect()
        }
        _ => (0..n)
            .map(|_| match rng.below(4) {
                0 | 1 => Keep::No,
                2 => Keep::Yes,
                _ if tearable => Keep::Torn,
                _ => Keep::Yes,
            })
            .collect(),
    }
}

fn apply_dir(e: &mut BTreeMap<OsString, Entry>, op: &DirOp) {
    match op {
        DirOp::Link(name, entry) => {
            e.insert(name.clone(), *entry);
        }
        DirOp::Unlink(name) => {
            e.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(x) = e.remove(from) {
                e.insert(to.clone(), x);
            }
        }
    }
}

fn apply_file(img: &mut Vec<u8>, op: &FileOp, torn: Option<&mut Rng>) {
    match op {
        FileOp::SetLen(l) => img.resize(*l as usize, 0),
        FileOp::Grow(l) => {
            if (img.len() as u64) < *l {
                img.resize(*l as usize, 0)
            }
        }
        FileOp::Write { pos, data } => {
            let end = pos + data.len() as u64;
            match torn {
                None => put(img, *pos, data),
                Some(rng) => {
                    let mut s = *pos;
                    while s < end {
                        let e = ((s / SECTOR + 1) * SECTOR).min(end);
                        if rng.chance(1, 2) {
                            put(img, s, &data[(s - pos) as usize..(e - pos) as usize]);
                        }
                        s = e;
                    }
                }
            }
        }
    }
}

fn put(img: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[pos as usize..end].copy_from_slice(data);
}

impl Recorder for PowerModel {
    fn created(&self, path: &Path, file: FileId) {
        let mut st = self.lock();
        if st.split(path).is_none() {
            if st.under_root(path) {
                st.stray(format!("created in an unknown dir: {}", path.display()));
            }
            return;
        }
        let ino = st.inodes.len();
        st.inodes.push(Inode::default());
        st.by_id.insert(file, ino);
        st.dir_op(path, |n| DirOp::Link(n, Entry::File(ino)));
    }

    fn dir_created(&self, path: &Path) {
        let mut st = self.lock();
        if st.split(path).is_some() {
            st.dirs.insert(normalize(path), Dir::default());
            st.dir_op(path, |n| DirOp::Link(n, Entry::Dir));
        }
    }

    fn write(&self, file: FileId, pos: u64, data: &[u8]) {
        self.lock().file_op(
            file,
            FileOp::Write {
                pos,
                data: data.to_vec(),
            },
        );
    }

    fn set_len(&self, file: FileId, len: u64) {
        self.lock().file_op(file, FileOp::SetLen(len));
    }

    fn grown_to(&self, file: FileId, len: u64) {
        self.lock().file_op(file, FileOp::Grow(len));
    }

    fn sync_begin(&self, _file: FileId) -> u64 {
        self.lock().next_seq()
    }

    fn sync_end(&self, file: FileId, token: u64) {
        let mut st = self.lock();
        if let Some(&ino) = st.by_id.get(&file) {
            st.inodes[ino].sync_upto(token);
        }
    }

    fn renamed(&self, from: &Path, to: &Path) {
        let mut st = self.lock();
        let (Some((fd, fname)), Some((td, tname))) = (st.split(from), st.split(to)) else {
            if st.under_root(from) || st.under_root(to) {
                st.stray(format!(
                    "rename across an unknown dir: {} -> {}",
                    from.display(),
                    to.display()
                ));
            }
            return;
        };
        if fd == td {
            st.dir_op(from, |_| DirOp::Rename(fname, tname));
        } else {
            // across directories: two entry changes, each durable with its own dir's fsync
            match st.current(&fd).get(&fname).copied() {
                Some(entry) => {
                    st.dir_op(to, |n| DirOp::Link(n, entry));
                    st.dir_op(from, DirOp::Unlink);
                }
                None => st.stray(format!("renamed an unknown name: {}", from.display())),
            }
        }
    }

    fn removed(&self, path: &Path) {
        self.lock().dir_op(path, DirOp::Unlink);
    }

    fn dir_sync_begin(&self, _dir: &Path) -> u64 {
        self.lock().next_seq()
    }

    fn dir_sync_end(&self, dir: &Path, token: u64) {
        let mut st = self.lock();
        let dir = normalize(dir);
        if let Some(d) = st.dirs.get_mut(&dir) {
            let n = d.ops.partition_point(|(s, _)| *s < token);
            let done: Vec<_> = d.ops.drain(..n).collect();
            for (_, op) in done {
                apply_dir(&mut d.durable, &op);
            }
        }
    }
}
