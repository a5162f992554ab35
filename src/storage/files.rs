//! Database files on disk: the one copy of every primitive the service needs to move them
//! around safely — the WAL side files DuckDB keeps next to a database, removing a database with
//! its side files, durable writes (fsync a file, fsync the directory that holds a name), atomic
//! publication of a finished file, and free space. Every layer that handles a database file
//! (the live database, restore, snapshot assembly, the reference dataset) uses these; each maps
//! `std::io::Error` into its own error type.
//!
//! [`publish_database`] reaches two fail points around its rename (see [`crate::fault`]).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The side files DuckDB may keep next to database `db`: the WAL, and the files it uses while
/// checkpointing and recovering. A stale one next to a replaced file would be replayed onto it.
pub fn wal_files(db: &Path) -> [PathBuf; 3] {
    [".wal", ".wal.checkpoint", ".wal.recovery"].map(|suffix| with_suffix(db, suffix))
}

/// `path` with `suffix` appended to its file name (`a.duckdb` → `a.duckdb.wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p: OsString = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Removes a file; one that is already gone is fine. Returns whether it existed.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes database `db` and its WAL side files, whichever exist.
pub fn remove_database(db: &Path) -> io::Result<()> {
    remove_if_exists(db)?;
    remove_wal_files(db)
}

/// Removes the WAL side files of `db`, whichever exist.
pub fn remove_wal_files(db: &Path) -> io::Result<()> {
    for w in wal_files(db) {
        remove_if_exists(&w)?;
    }
    Ok(())
}

/// fsyncs a file's contents.
pub fn fsync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// fsyncs a directory, so creations, renames and unlinks in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `path` (which must not exist), writes `bytes` and, when `durable`, fsyncs it.
pub fn write_new(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    Ok(())
}

/// Replaces `dest` with `bytes` atomically and durably: a temp file next to it, fsync, rename,
/// fsync of the directory. A reader (or a restart after a crash or power cut) sees the old
/// content or the new one, never a torn or empty file.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = with_suffix(dest, &format!(".{:016x}.tmp", rand::random::<u64>()));
    let written = write_new(&tmp, bytes, true).and_then(|()| fs::rename(&tmp, dest));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fsync_dir(parent_dir(dest))
}

/// Removes `path` and makes the removal durable.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    if remove_if_exists(path)? {
        fsync_dir(parent_dir(path))?;
    }
    Ok(())
}

/// Publishes a finished database file: `tmp` (complete, in the same directory as `db`) takes
/// the name `db`, replacing whatever was there, durably.
///
/// Order matters for a crash at any point: `tmp` is fsynced first; the WAL side files of the
/// *old* `db` are removed before the rename (the caller has closed and checkpointed it, so they
/// hold nothing), so no stale WAL can ever be replayed onto the new file; then the rename and
/// the directory fsync. Before the rename the old file is intact; after it, the new one is.
/// `fail_points` are reached just before and just after the rename.
pub fn publish_database(tmp: &Path, db: &Path, fail_points: [&str; 2]) -> io::Result<()> {
    fsync_file(tmp)?;
    remove_wal_files(db)?;
    fsync_dir(parent_dir(db))?;
    fault_io(fail_points[0])?;
    fs::rename(tmp, db)?;
    fault_io(fail_points[1])?;
    // DuckDB may have left side files next to the temp name (it never should after a clean
    // close, but a leftover must not be picked up by the next file of that name).
    remove_wal_files(tmp)?;
    fsync_dir(parent_dir(db))
}

/// Links a finished file to `dest` only if `dest` does not exist (a hard link fails atomically
/// where an exists-check followed by a rename would race), durably. File systems without hard
/// links fall back to check-then-rename.
pub fn publish_new(tmp: &Path, dest: &Path) -> io::Result<()> {
    fsync_file(tmp)?;
    match fs::hard_link(tmp, dest) {
        Ok(()) => {
            fs::remove_file(tmp)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) if !dest.exists() => fs::rename(tmp, dest)?,
        Err(_) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
    }
    fsync_dir(parent_dir(dest))
}

/// Bytes available to this process on the file system holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is writable memory of the right type;
    // statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    // Both are u64 on Linux; the widening keeps other targets honest.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// A fail point inside an I/O sequence: an injected `error` surfaces as an I/O error.
fn fault_io(name: &str) -> io::Result<()> {
    if crate::fault::hit(name) {
        return Err(io::Error::other(format!("injected fault at {name}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_database_replaces_the_file_and_removes_stale_wal_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.duckdb");
        let tmp = dir.path().join("x.duckdb.restore-tmp");
        fs::write(&db, b"old").unwrap();
        for w in wal_files(&db) {
            fs::write(&w, b"stale").unwrap();
        }
        fs::write(&tmp, b"new").unwrap();
        publish_database(&tmp, &db, ["swap.before_rename", "swap.after_rename"]).unwrap();
        assert_eq!(fs::read(&db).unwrap(), b"new");
        assert!(!tmp.exists());
        assert!(wal_files(&db).iter().all(|w| !w.exists()));
    }

    #[test]
    fn write_atomic_replaces_whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("journal");
        write_atomic(&f, b"first").unwrap();
        write_atomic(&f, b"second").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        remove_durably(&f).unwrap();
        assert!(!f.exists());
        remove_durably(&f).unwrap();
    }

    #[test]
    fn publish_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"1").unwrap();
        publish_new(&a, &b).unwrap();
        fs::write(&a, b"2").unwrap();
        assert_eq!(
            publish_new(&a, &b).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&b).unwrap(), b"1");
    }

    #[test]
    fn free_space_is_reported() {
        assert!(free_space(Path::new("/")).unwrap() > 0);
        assert!(free_space(Path::new("/no/such/dir")).is_err());
    }
}
