//! `PowerFs`: an in-memory FUSE file system that can lose power.
//!
//! The whole tree of an image directory is loaded into memory and served through FUSE (the
//! `fuser` crate, pure-Rust mount: a `mount(2)` as root, no libfuse or `fusermount` needed).
//! Every inode has two views:
//!
//! - the **volatile** state — what processes see: every operation applies here at once
//!   (read-your-writes, sizes, readdir, rename, unlink, truncate, fallocate; reads go through
//!   the kernel page cache, so `mmap` works — no `direct_io`);
//! - the **durable** state — what survives a power cut.
//!
//! ## Durability model
//!
//! - `fsync`/`fdatasync` of a file makes that file's current data and size durable. In the
//!   default (ext4-like) mode it also makes durable the directory entry that links the file
//!   under its current name, and the entries linking each of its ancestor directories, when
//!   they are not durable yet — what journaling file systems do on fsync of a newly created or
//!   renamed file, and what DuckDB relies on for its WAL (it never fsyncs a directory).
//! - `fsyncdir` of a directory makes that directory's entry table durable: every create,
//!   rename and unlink in it (and, in the default mode, the directory's own entry as above).
//! - A rename is atomic in the durable view too: when the entry that a rename created becomes
//!   durable, the durable entry under the old name goes (a journal commits a rename as one
//!   transaction; no FS ends up with both names).
//! - Nothing else persists: `write`, `close`/`flush`/`release`, `truncate`, `unlink`,
//!   `mkdir`, `rename` stay volatile until one of the fsyncs above covers them. A file whose
//!   entry is durable but whose data was never fsync'd comes back empty (or with its last
//!   fsync'd content).
//! - [`Mode::Strict`]: a file fsync makes only the data durable; directory entries only ever
//!   become durable through `fsyncdir` of their directory (POSIX's letter).
//! - [`Mode::EagerNames`]: every create, rename and unlink is durable at once (a journal that
//!   commits names eagerly, in order), file data still only at its fsync — the model in which
//!   a rename of an unsynced file leaves an empty file behind after the cut.
//!
//! Not modelled: torn or reordered unsynced writes (a real disk may persist any subset of the
//! writes since the last fsync; here all of them are lost), lying disks (fsync that returns
//! before the data is stable), metadata beyond names/sizes/data (times, modes), hard links,
//! symlinks, xattrs, locks (the kernel handles POSIX and flock locks locally).
//!
//! ## The cut
//!
//! [`PowerFs::fsyncs`] counts completed `fsync`/`fdatasync`/`fsyncdir` calls;
//! [`PowerFs::arm_cut_after`]`(n)`: the n-th fsync from now completes (its effect becomes
//! durable, the caller is told it succeeded) and the power is cut right after; [`PowerFs::cut_now`]
//! cuts at once. The log numbers fsyncs from the arming (`fsync n=3 /path`). After the cut every operation fails with `EIO` (a dead disk) until the process
//! using it is killed. [`PowerFs::into_durable_image`] unmounts and writes exactly the durable
//! state as an ordinary directory tree; [`PowerFs::into_full_image`] writes the volatile state
//! (a clean shutdown). [`PowerFs::log`] lists the operations since the mount or the last arming.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

type Ino = u64;
const ROOT: Ino = 1;
/// Attributes and entries are never cached by the kernel: every lookup sees the model.
const TTL: Duration = Duration::ZERO;
/// Most log lines kept (a long run must not grow without bound).
const LOG_CAP: usize = 20_000;

/// Which durability model the file system follows (module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// ext4-like: a file fsync persists its data and the entries linking it.
    #[default]
    Default,
    /// A file fsync persists only its data; entries persist only through `fsyncdir`.
    Strict,
    /// Entries are durable as soon as they change; data only at fsync.
    EagerNames,
}

/// Mount options of the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub mode: Mode,
}

#[derive(Debug)]
enum Body {
    File {
        data: Arc<Vec<u8>>,
        durable: Arc<Vec<u8>>,
    },
    Dir {
        entries: BTreeMap<OsString, Ino>,
        durable: BTreeMap<OsString, Ino>,
    },
}

#[derive(Debug)]
struct Node {
    body: Body,
    perm: u16,
    /// The volatile entry naming this inode (none for the root and once unlinked).
    link: Option<(Ino, OsString)>,
    mtime: SystemTime,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }
}

/// The file system's state: both views, the counters and the log.
#[derive(Debug)]
struct Model {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    mode: Mode,
    fsyncs: u64,
    /// `fsyncs` when the log was last cleared: the log numbers fsyncs from there (`n=`).
    base: u64,
    /// Cut when `fsyncs` reaches this.
    cut_at: Option<u64>,
    cut: bool,
    log: Vec<String>,
    /// readdir snapshots taken at opendir (stable offsets while the directory changes).
    dir_handles: HashMap<u64, Vec<(Ino, FileType, OsString)>>,
    next_fh: u64,
    uid: u32,
    gid: u32,
}

type Res<T> = Result<T, Errno>;

impl Model {
    fn load(image: &Path, opts: Options) -> std::io::Result<Model> {
        // SAFETY: getters of the process's own ids, no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut m = Model {
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            mode: opts.mode,
            fsyncs: 0,
            base: 0,
            cut_at: None,
            cut: false,
            log: Vec::new(),
            dir_handles: HashMap::new(),
            next_fh: 1,
            uid,
            gid,
        };
        m.nodes.insert(ROOT, new_dir(0o755, None));
        m.load_dir(image, ROOT)?;
        Ok(m)
    }

    /// Loads a directory of the image: everything in it is durable already.
    fn load_dir(&mut self, dir: &Path, ino: Ino) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            let name = entry.file_name();
            let perm = (meta.permissions().mode() & 0o7777) as u16;
            let child = self.next_ino;
            self.next_ino += 1;
            let node = if meta.is_dir() {
                new_dir(perm, Some((ino, name.clone())))
            } else if meta.is_file() {
                let data = Arc::new(std::fs::read(entry.path())?);
                Node {
                    body: Body::File {
                        durable: data.clone(),
                        data,
                    },
                    perm,
                    link: Some((ino, name.clone())),
                    mtime: SystemTime::now(),
                }
            } else {
                return Err(std::io::Error::other(format!(
                    "{}: only files and directories can be loaded (mode {:o})",
                    entry.path().display(),
                    meta.mode()
                )));
            };
            self.nodes.insert(child, node);
            if let Body::Dir {
                entries, durable, ..
            } = &mut self.node_mut(ino).body
            {
                entries.insert(name.clone(), child);
                durable.insert(name, child);
            }
            if meta.is_dir() {
                self.load_dir(&entry.path(), child)?;
            }
        }
        Ok(())
    }

    fn node(&self, ino: Ino) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node {
        self.nodes.get_mut(&ino).expect("inode in the table")
    }

    fn entries(&self, dir: Ino) -> Res<&BTreeMap<OsString, Ino>> {
        match &self.node(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Res<&mut BTreeMap<OsString, Ino>> {
        self.node(dir)?;
        match &mut self.node_mut(dir).body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: Ino, name: &OsStr) -> Res<Ino> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// The volatile path of an inode, for the log.
    fn path(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while let Some(Some((parent, name))) = self.nodes.get(&cur).map(|n| n.link.as_ref()) {
            parts.push(name.to_string_lossy().into_owned());
            cur = *parent;
        }
        if cur != ROOT {
            return format!("<unlinked #{ino}>");
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn note(&mut self, line: String) {
        if self.log.len() < LOG_CAP {
            self.log.push(line);
        }
    }

    /// Notes a write, folding consecutive writes to one file into one line.
    fn note_write(&mut self, ino: Ino, offset: u64, len: usize) {
        let path = self.path(ino);
        let prefix = format!("write {path} ");
        if let Some(last) = self.log.last_mut() {
            if let Some(rest) = last.strip_prefix(&prefix) {
                let n: u64 = rest
                    .split(' ')
                    .next()
                    .and_then(|s| s.strip_prefix('x'))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
                *last = format!("{prefix}x{} (last {len} bytes at {offset})", n + 1);
                return;
            }
        }
        self.note(format!("{prefix}x1 (last {len} bytes at {offset})"));
    }

    fn attr(&self, ino: Ino) -> Res<FileAttr> {
        let n = self.node(ino)?;
        let (kind, size) = match &n.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64),
            Body::Dir { entries, .. } => (FileType::Directory, entries.len() as u64),
        };
        let linked = n.link.is_some() || ino == ROOT;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: UNIX_EPOCH,
            kind,
            perm: n.perm,
            nlink: match (linked, n.is_dir()) {
                (false, _) => 0,
                (true, true) => 2,
                (true, false) => 1,
            },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn data_mut(&mut self, ino: Ino) -> Res<&mut Vec<u8>> {
        self.node(ino)?;
        let n = self.node_mut(ino);
        n.mtime = SystemTime::now();
        match &mut n.body {
            Body::File { data, .. } => Ok(Arc::make_mut(data)),
            Body::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Adds a new inode under `parent/name`.
    fn create(&mut self, parent: Ino, name: &OsStr, mode: u32, dir: bool) -> Res<Ino> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let perm = (mode & 0o7777) as u16;
        let link = Some((parent, name.to_os_string()));
        let node = if dir {
            new_dir(perm, link)
        } else {
            Node {
                body: Body::File {
                    data: Arc::default(),
                    durable: Arc::default(),
                },
                perm,
                link,
                mtime: SystemTime::now(),
            }
        };
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        self.names_changed(&[parent]);
        self.note(format!(
            "{} {}",
            if dir { "mkdir" } else { "create" },
            self.path(ino)
        ));
        Ok(ino)
    }

    fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Res<()> {
        let ino = self.child(parent, name)?;
        match (&self.node(ino)?.body, dir) {
            (Body::Dir { entries, .. }, true) if !entries.is_empty() => {
                return Err(Errno::ENOTEMPTY)
            }
            (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
            (Body::File { .. }, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.note(format!(
            "{} {}",
            if dir { "rmdir" } else { "unlink" },
            self.path(ino)
        ));
        self.entries_mut(parent)?.remove(name);
        self.node_mut(ino).link = None;
        self.names_changed(&[parent]);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?;
        self.entries(newparent)?;
        let src_dir = self.node(ino)?.is_dir();
        if src_dir && self.is_ancestor(ino, newparent) {
            return Err(Errno::EINVAL);
        }
        if let Some(&old) = self.entries(newparent)?.get(newname) {
            if old == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&self.node(old)?.body, src_dir) {
                (Body::Dir { entries, .. }, true) if !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Body::File { .. }, true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
            self.node_mut(old).link = None;
        }
        let from = self.path(ino);
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?
            .insert(newname.to_os_string(), ino);
        self.node_mut(ino).link = Some((newparent, newname.to_os_string()));
        self.names_changed(&[newparent, parent]);
        self.note(format!("rename {from} -> {}", self.path(ino)));
        Ok(())
    }

    /// Is `a` the directory `b` or one of its ancestors?
    fn is_ancestor(&self, a: Ino, mut b: Ino) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.nodes.get(&b).and_then(|n| n.link.as_ref()) {
                Some((p, _)) => b = *p,
                None => return false,
            }
        }
    }

    fn set_size(&mut self, ino: Ino, size: u64) -> Res<()> {
        self.data_mut(ino)?.resize(size as usize, 0);
        self.note(format!("truncate {} to {size}", self.path(ino)));
        Ok(())
    }

    fn write(&mut self, ino: Ino, offset: u64, bytes: &[u8]) -> Res<u32> {
        let data = self.data_mut(ino)?;
        let (start, end) = (offset as usize, offset as usize + bytes.len());
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        self.note_write(ino, offset, bytes.len());
        Ok(bytes.len() as u32)
    }

    fn read(&self, ino: Ino, offset: u64, size: u32) -> Res<&[u8]> {
        match &self.node(ino)?.body {
            Body::File { data, .. } => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                Ok(&data[start..end])
            }
            Body::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    fn fallocate(&mut self, ino: Ino, offset: u64, length: u64, mode: i32) -> Res<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let zero = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 || (mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && !keep_size) {
            return Err(Errno::EOPNOTSUPP);
        }
        let data = self.data_mut(ino)?;
        let end = (offset + length) as usize;
        if zero {
            let stop = end.min(data.len());
            if (offset as usize) < stop {
                data[offset as usize..stop].fill(0);
            }
        }
        if !keep_size && data.len() < end {
            data.resize(end, 0);
        }
        self.note(format!(
            "fallocate {} mode {mode:#x} {offset}+{length}",
            self.path(ino)
        ));
        Ok(())
    }

    /// In [`Mode::EagerNames`], a change to these directories' tables is durable at once.
    fn names_changed(&mut self, dirs: &[Ino]) {
        if self.mode == Mode::EagerNames {
            for &d in dirs {
                self.persist_entries(d);
            }
        }
    }

    /// Makes a directory's entry table durable (an fsyncdir's effect).
    fn persist_entries(&mut self, dir: Ino) {
        let Ok(entries) = self.entries(dir).cloned() else {
            return;
        };
        if let Body::Dir { durable, .. } = &mut self.node_mut(dir).body {
            *durable = entries.clone();
        }
        for (name, child) in entries {
            self.drop_stale_durable_links(child, dir, &name);
        }
    }

    /// A completed fsync: applies `persist`, counts it and cuts the power when armed.
    fn fsync(&mut self, ino: Ino, what: &str) -> Res<()> {
        let dir = self.node(ino)?.is_dir();
        if dir {
            self.persist_entries(ino);
        } else if let Body::File { data, durable } = &mut self.node_mut(ino).body {
            *durable = data.clone();
        }
        if self.mode == Mode::Default {
            self.persist_links(ino);
        }
        self.fsyncs += 1;
        let n = self.fsyncs;
        let rel = n - self.base;
        self.note(format!(
            "{what} n={rel} {} (#{n} since the mount)",
            self.path(ino)
        ));
        if self.cut_at == Some(n) {
            self.cut = true;
            self.note(format!("POWER CUT after fsync n={rel}"));
        }
        Ok(())
    }

    /// Makes the entries naming `ino` and its ancestors durable (default mode's fsync).
    fn persist_links(&mut self, ino: Ino) {
        let mut cur = ino;
        while let Some((parent, name)) = self.nodes.get(&cur).and_then(|n| n.link.clone()) {
            if let Body::Dir { durable, .. } = &mut self.node_mut(parent).body {
                durable.insert(name.clone(), cur);
            }
            self.drop_stale_durable_links(cur, parent, &name);
            cur = parent;
        }
    }

    /// A rename is atomic: once `dir/name -> ino` is durable, no other durable entry names
    /// `ino` (there are no hard links here).
    fn drop_stale_durable_links(&mut self, ino: Ino, dir: Ino, name: &OsStr) {
        for (&d, node) in self.nodes.iter_mut() {
            if let Body::Dir { durable, .. } = &mut node.body {
                durable.retain(|n, &mut i| i != ino || (d == dir && n == name));
            }
        }
    }

    fn readdir_snapshot(&self, ino: Ino) -> Res<Vec<(Ino, FileType, OsString)>> {
        let parent = self.node(ino)?.link.as_ref().map_or(ROOT, |(p, _)| *p);
        let mut out = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, &child) in self.entries(ino)? {
            let kind = if self.node(child)?.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            out.push((child, kind, name.clone()));
        }
        Ok(out)
    }

    /// Writes one view of the tree under `dest` (which must exist).
    fn write_image(&self, dest: &Path, durable: bool) -> std::io::Result<()> {
        let mut seen = HashSet::new();
        self.write_dir(ROOT, dest, durable, &mut seen)
    }

    fn write_dir(
        &self,
        ino: Ino,
        dest: &Path,
        durable: bool,
        seen: &mut HashSet<Ino>,
    ) -> std::io::Result<()> {
        let Some(Node {
            body: Body::Dir {
                entries,
                durable: d,
            },
            ..
        }) = self.nodes.get(&ino)
        else {
            return Ok(());
        };
        for (name, &child) in if durable { d } else { entries } {
            if !seen.insert(child) {
                continue;
            }
            let path = dest.join(name);
            let node = &self.nodes[&child];
            match &node.body {
                Body::Dir { .. } => {
                    std::fs::create_dir(&path)?;
                    self.write_dir(child, &path, durable, seen)?;
                }
                Body::File { data, durable: dd } => {
                    std::fs::write(&path, if durable { dd } else { data }.as_slice())?;
                }
            }
            let perm = std::fs::Permissions::from_mode(u32::from(node.perm).max(0o600));
            std::fs::set_permissions(&path, perm)?;
        }
        Ok(())
    }
}

fn new_dir(perm: u16, link: Option<(Ino, OsString)>) -> Node {
    Node {
        body: Body::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        },
        perm,
        link,
        mtime: SystemTime::now(),
    }
}

/// The FUSE side: every request locks the model; after the cut everything is `EIO`.
struct Fuse(Arc<Mutex<Model>>);

impl Fuse {
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> Res<T>) -> Res<T> {
        let mut m = self.0.lock();
        if m.cut {
            return Err(Errno::EIO);
        }
        f(&mut m)
    }

    fn entry(&self, reply: ReplyEntry, f: impl FnOnce(&mut Model) -> Res<Ino>) {
        match self.with(|m| f(m).and_then(|ino| m.attr(ino))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, f: impl FnOnce(&mut Model) -> Res<()>) {
        match self.with(f) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |m| m.child(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|m| m.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.with(|m| {
            m.node(ino.0)?;
            if let Some(mode) = mode {
                m.node_mut(ino.0).perm = (mode & 0o7777) as u16;
            }
            if let Some(size) = size {
                m.set_size(ino.0, size)?;
            }
            m.attr(ino.0)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        self.entry(reply, |m| m.create(parent.0, name, mode & !umask, false));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(reply, |m| m.create(parent.0, name, mode & !umask, true));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |m| m.remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |m| m.remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |m| {
            m.rename(parent.0, name, newparent.0, newname, flags)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.node(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let m = self.0.lock();
        if m.cut {
            return reply.error(Errno::EIO);
        }
        match m.read(ino.0, offset, size) {
            Ok(d) => reply.data(d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|m| m.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |_| Ok(()));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let what = if datasync { "fdatasync" } else { "fsync" };
        self.empty(reply, |m| m.fsync(ino.0, what));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.with(|m| {
            let snap = m.readdir_snapshot(ino.0)?;
            let fh = m.next_fh;
            m.next_fh += 1;
            m.dir_handles.insert(fh, snap);
            Ok(fh)
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut m = self.0.lock();
        if m.cut {
            return reply.error(Errno::EIO);
        }
        if offset == 0 {
            // A rewind sees the directory as it is now.
            match m.readdir_snapshot(ino.0) {
                Ok(s) => {
                    m.dir_handles.insert(fh.0, s);
                }
                Err(e) => return reply.error(e),
            }
        }
        let Some(list) = m.dir_handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (child, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.lock().dir_handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |m| m.fsync(ino.0, "fsyncdir"));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.with(|_| Ok(())) {
            // 64 GiB free in 4 KiB blocks: nothing here ever runs out of space.
            Ok(()) => reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.empty(reply, |m| m.node(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|m| {
            let ino = m.create(parent.0, name, mode & !umask, false)?;
            m.attr(ino)
        }) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |m| m.fallocate(ino.0, offset, length, mode));
    }
}

/// A mounted [`Model`]. Dropping it unmounts (robustly: see [`PowerFs::unmount`]).
pub struct PowerFs {
    model: Arc<Mutex<Model>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: tempfile::TempDir,
    /// The FUSE connection id (the mount's device number as the kernel prints it).
    conn: u64,
}

impl PowerFs {
    /// Loads `image` (a directory tree of files) into memory and mounts it on a fresh
    /// temporary directory. Panics, saying why, when FUSE is not available: power-loss tests
    /// must run, never skip.
    pub fn mount(image: &Path, opts: Options) -> PowerFs {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_dead_mounts);
        let model = Model::load(image, opts)
            .unwrap_or_else(|e| panic!("cannot load the image {}: {e}", image.display()));
        let model = Arc::new(Mutex::new(model));
        let mountpoint = tempfile::Builder::new()
            .prefix("lnrs-powercut-")
            .tempdir()
            .expect("mountpoint");
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("lnrs-powercut".into()),
            MountOption::Subtype("powercut".into()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
        ];
        cfg.n_threads = Some(2);
        let session = fuser::spawn_mount(Fuse(model.clone()), mountpoint.path(), &cfg)
            .unwrap_or_else(|e| {
                panic!(
                    "POWER-CUT TESTS CANNOT RUN: mounting a FUSE file system on {} failed: {e}. \
                     They need /dev/fuse (exists: {}) and the right to mount it: run as root \
                     (or install fuse3 for fusermount3) on a kernel with the fuse module.",
                    mountpoint.path().display(),
                    Path::new("/dev/fuse").exists()
                )
            });
        let dev = std::fs::metadata(mountpoint.path())
            .expect("stat the mountpoint")
            .dev();
        let conn = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        PowerFs {
            model,
            session: Some(session),
            mountpoint,
            conn,
        }
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// Completed fsync/fdatasync/fsyncdir calls since the mount.
    pub fn fsyncs(&self) -> u64 {
        self.model.lock().fsyncs
    }

    /// The `n`-th fsync from now (n ≥ 1) completes and the power is cut right after it.
    /// Clears the log.
    pub fn arm_cut_after(&self, n: u64) {
        assert!(n >= 1, "arm_cut_after counts from 1");
        self.clear_log();
        let mut m = self.model.lock();
        m.cut_at = Some(m.fsyncs + n);
        m.note(format!("armed: cut after fsync n={n}"));
    }

    /// Forgets the operations logged so far; the log numbers fsyncs from here (`n=1`, …).
    pub fn clear_log(&self) {
        let mut m = self.model.lock();
        m.log.clear();
        m.base = m.fsyncs;
    }

    /// Cuts the power now.
    pub fn cut_now(&self) {
        let mut m = self.model.lock();
        m.cut = true;
        m.note("POWER CUT (now)".into());
    }

    /// Has the power been cut?
    pub fn is_cut(&self) -> bool {
        self.model.lock().cut
    }

    /// The operations since the mount or the last [`arm_cut_after`](Self::arm_cut_after).
    pub fn log(&self) -> Vec<String> {
        self.model.lock().log.clone()
    }

    /// Unmounts and writes exactly the durable state under `dest` (created if needed).
    pub fn into_durable_image(mut self, dest: &Path) {
        self.unmount();
        self.write_image(dest, true);
    }

    /// Unmounts and writes the volatile state under `dest`: what a clean shutdown leaves.
    pub fn into_full_image(mut self, dest: &Path) {
        self.unmount();
        self.write_image(dest, false);
    }

    fn write_image(&self, dest: &Path, durable: bool) {
        std::fs::create_dir_all(dest).expect("image dir");
        self.model
            .lock()
            .write_image(dest, durable)
            .unwrap_or_else(|e| panic!("writing the image to {}: {e}", dest.display()));
    }

    /// Unmounts; never hangs. Plain `umount` first; if that fails (a process still holds a
    /// file), a lazy unmount and an abort of the FUSE connection; then waits (bounded) for
    /// the session thread. The processes using the mount should be dead by now.
    pub fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mp = CString::new(self.mountpoint.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: umount2 on a NUL-terminated path we own.
        if unsafe { libc::umount2(mp.as_ptr(), 0) } != 0 {
            let err = std::io::Error::last_os_error();
            eprintln!(
                "powercut: umount {} failed ({err}); lazy unmount and abort",
                self.path().display()
            );
            // SAFETY: as above.
            unsafe { libc::umount2(mp.as_ptr(), libc::MNT_DETACH) };
            self.abort_connection();
        }
        let started = Instant::now();
        let mut aborted = false;
        while !session.guard.is_finished() {
            if started.elapsed() > Duration::from_secs(5) && !aborted {
                eprintln!("powercut: the FUSE session did not end; aborting the connection");
                self.abort_connection();
                aborted = true;
            }
            if started.elapsed() > Duration::from_secs(15) {
                eprintln!("powercut: the FUSE session thread is stuck; leaving it behind");
                // Its Drop would join the stuck thread and hang the test run.
                #[allow(clippy::mem_forget)]
                std::mem::forget(session);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = session.guard.join();
    }

    /// Writes to the connection's `abort` file in the fuse control file system (mounting it
    /// if needed): every pending and future request of this mount fails at once.
    fn abort_connection(&self) {
        let ctl = Path::new("/sys/fs/fuse/connections");
        let abort = ctl.join(self.conn.to_string()).join("abort");
        if !abort.exists() {
            let _ = std::process::Command::new("mount")
                .args(["-t", "fusectl", "fusectl"])
                .arg(ctl)
                .status();
        }
        if let Err(e) = std::fs::write(&abort, b"1") {
            eprintln!("powercut: cannot abort {}: {e}", abort.display());
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Lazily unmounts the dead mounts a killed test run left behind (their server is gone: any
/// access fails with ENOTCONN). Live mounts of a concurrent run are left alone.
fn sweep_dead_mounts() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in info.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mountpoint) = fields.split(' ').nth(4) else {
            continue;
        };
        // "fuse lnrs-powercut rw,…": the type (fuse, or fuse.<subtype>) and our source name.
        if rest.split(' ').nth(1) != Some("lnrs-powercut") {
            continue;
        }
        let dead =
            std::fs::metadata(mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        if let (true, Ok(mp)) = (dead, CString::new(mountpoint)) {
            eprintln!("powercut: unmounting a dead mount left by an earlier run: {mountpoint}");
            // SAFETY: umount2 on a NUL-terminated path.
            unsafe { libc::umount2(mp.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The paths of every file in a directory tree, relative to it (for comparing images).
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
