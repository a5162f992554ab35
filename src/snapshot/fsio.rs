//! The store's file handling on top of [`crate::storage::files`] (the one copy of each file
//! primitive): temp names in the store's `tmp/`, atomic writes with a fail-point hook, the
//! exclusive store lock and start-up cleaning of temp files, all mapped to [`SnapshotError`].
//!
//! Every temp file lives in the store's `tmp/` directory (same file system as its target, so
//! `rename` is atomic), which is why cleaning that one directory at start-up removes every
//! leftover of a crash.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{io_err, SnapshotError};
use crate::storage::files;

/// A unique temp path in `tmp_dir` for a file that will become `name`.
pub(crate) fn temp_path(tmp_dir: &Path, name: &str) -> PathBuf {
    let nonce: u64 = rand::random();
    tmp_dir.join(format!("{name}.{nonce:016x}.tmp"))
}

/// Writes `bytes` to `dest` atomically: a temp file in `tmp_dir`, fsync'd when `durable`, then
/// renamed over `dest`. The caller fsyncs `dest`'s directory (once for a batch of renames).
/// `before_rename` is a hook for fail points between the fsync and the rename.
pub(crate) fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    durable: bool,
    before_rename: impl FnOnce() -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = temp_path(tmp_dir, name);
    let result = write_new(&tmp, bytes, durable)
        .and_then(|()| before_rename())
        .and_then(|()| fs::rename(&tmp, dest).map_err(|e| io_err(dest, e)));
    if result.is_err() {
        // Best effort: start-up cleaning removes it if this fails too.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (which must not exist), writes `bytes`, and fsyncs when `durable`.
pub(crate) fn write_new(path: &Path, bytes: &[u8], durable: bool) -> Result<(), SnapshotError> {
    files::write_new(path, bytes, durable).map_err(|e| io_err(path, e))
}

/// fsyncs a directory so renames and unlinks in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    files::fsync_dir(dir).map_err(|e| io_err(dir, e))
}

/// Creates `dir` if needed; `true` when it was created (its parent then needs an fsync).
pub(crate) fn ensure_dir(dir: &Path) -> Result<bool, SnapshotError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(|e| io_err(dir, e))?;
            if meta.is_dir() {
                Ok(false)
            } else {
                Err(io_err(dir, io::Error::from_raw_os_error(libc::ENOTDIR)))
            }
        }
        Err(e) => Err(io_err(dir, e)),
    }
}

/// Takes an exclusive, non-blocking `flock` on `path`: one process owns a store at a time.
/// The kernel drops the lock when the process dies, so a crash never leaves the store locked.
pub(crate) fn lock_exclusive(path: &Path, root: &Path) -> Result<File, SnapshotError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(f);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(SnapshotError::Locked(root.to_path_buf()))
    } else {
        Err(io_err(path, err))
    }
}

/// Removes everything in `dir` (left over by a crash); returns how many entries went.
pub(crate) fn clean_dir(dir: &Path) -> Result<usize, SnapshotError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        let r = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        r.map_err(|e| io_err(&path, e))?;
        removed += 1;
    }
    Ok(removed)
}

/// Names of the regular files in `dir`.
pub(crate) fn file_names(dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Removes a file; a file that is already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, SnapshotError> {
    files::remove_if_exists(path).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::error::StorageFault;
    use std::io::Write;

    #[test]
    fn full_disk_is_a_typed_error() {
        // /dev/full answers every write with ENOSPC, exactly like a full file system.
        let mut f = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let err = f
            .write_all(&[0u8; 4096])
            .and_then(|()| f.flush())
            .expect_err("write");
        let e = io_err(Path::new("/dev/full"), err);
        assert_eq!(e.storage_fault(), Some(StorageFault::NoSpace));
        assert_eq!(e.reason(), "SNAPSHOT_STORAGE_FULL");
    }

    #[test]
    fn atomic_write_leaves_no_temp_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("x.json");
        let r = write_atomic(dir.path(), &dest, b"abc", true, || {
            Err(SnapshotError::Injected("test"))
        });
        assert!(r.is_err());
        assert!(file_names(dir.path()).expect("ls").is_empty());
        write_atomic(dir.path(), &dest, b"abc", true, || Ok(())).expect("write");
        assert_eq!(fs::read(&dest).expect("read"), b"abc");
        assert_eq!(file_names(dir.path()).expect("ls"), vec!["x.json"]);
    }

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("LOCK");
        let first = lock_exclusive(&lock, dir.path()).expect("first");
        assert!(matches!(
            lock_exclusive(&lock, dir.path()),
            Err(SnapshotError::Locked(_))
        ));
        drop(first);
        lock_exclusive(&lock, dir.path()).expect("after drop");
    }
}
