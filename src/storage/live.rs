//! The live database: its file and the write connection the writer thread owns, and the one
//! way that file is ever replaced (restore, start-up recovery): close with a checkpoint,
//! publish the new file over it ([`files::publish_database`]), reopen.
//!
//! The connection is absent only while a replacement is in progress or after reopening
//! failed; every use then fails with [`StorageError::Closed`] instead of touching a file that
//! is being swapped.
//!
//! Every use of the write connection first stops a background reader of the file (see
//! [`super::gate`]), and every transaction, checkpoint or replacement counts as a new
//! [`generation`](LiveDb::generation) of the file, so a capture of it can tell whether it is
//! still the file's current state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::gate::ReadGate;
use super::{files, in_transaction, schema, Connection, StorageError};

/// DuckDB's file starts with its main header and two database headers, 4 KiB each; a
/// checkpoint writes one of the database headers.
const HEADER_BYTES: usize = 3 * 4096;

/// The live database file and its write connection.
pub struct LiveDb {
    path: PathBuf,
    conn: Option<Connection>,
    readers: ReadGate,
    generation: AtomicU64,
}

impl LiveDb {
    /// Opens the database at `path` (creating it if needed) and migrates it.
    pub fn open(path: &Path) -> Result<LiveDb, StorageError> {
        let mut db = LiveDb {
            path: path.to_path_buf(),
            conn: None,
            readers: ReadGate::default(),
            generation: AtomicU64::new(0),
        };
        db.reopen()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The write connection. A background reader of the file is stopped first: whatever the
    /// caller runs may write the file.
    pub fn conn(&self) -> Result<&Connection, StorageError> {
        self.readers.stop();
        self.conn.as_ref().ok_or(StorageError::Closed)
    }

    /// The gate of background readers of this file.
    pub fn readers(&self) -> &ReadGate {
        &self.readers
    }

    /// Changes with every transaction that wrote (or failed: a rolled-back large insert may
    /// have written blocks), every checkpoint and every replacement of the file. Equal
    /// generations with an empty WAL mean the file's bytes are those of the earlier look.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// What a write leaves a trace in: the WAL's length (a commit appends to it) and the
    /// file's length and headers (a checkpoint, automatic ones at COMMIT included, rewrites a
    /// header). A rolled-back transaction may have written blocks and is not judged by this.
    fn stamp(&self) -> Option<(u64, u64, Vec<u8>)> {
        use std::os::unix::fs::FileExt;
        let wal = &files::wal_files(&self.path)[0];
        let wal_len = std::fs::metadata(wal).map_or(0, |m| m.len());
        let file = std::fs::File::open(&self.path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut header = vec![0u8; (len as usize).min(HEADER_BYTES)];
        file.read_exact_at(&mut header, 0).ok()?;
        Some((wal_len, len, header))
    }

    /// Whether the WAL is absent or empty: every committed transaction is in the file.
    pub fn wal_is_empty(&self) -> bool {
        let wal = &files::wal_files(&self.path)[0];
        std::fs::metadata(wal).map_or(true, |m| m.len() == 0)
    }

    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// A new connection to the same database (for the read pool).
    pub fn try_clone(&self) -> Result<Connection, StorageError> {
        Ok(self.conn()?.try_clone()?)
    }

    /// Runs `f` in one transaction on the write connection.
    ///
    /// DuckDB creates its WAL afresh at the first commit after every checkpoint and never
    /// fsyncs the directory: on a file system that does not make a new file's name durable
    /// with the file's own fsync (POSIX's letter; ext4/XFS/btrfs do), a power cut would take
    /// the WAL — and every acknowledged commit in it — away. So when a commit created the WAL,
    /// its directory is fsynced before the commit is acknowledged.
    pub fn transaction<T, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let wal = &files::wal_files(&self.path)[0];
        let had_wal = wal.exists();
        let conn = self.conn()?;
        let before = self.stamp();
        let out = in_transaction(conn, f);
        // A transaction that wrote nothing (a prune that found nothing) keeps the generation,
        // so an idle server does not capture again for nothing.
        if out.is_err() || before.is_none() || self.stamp() != before {
            self.next_generation();
        }
        let out = out?;
        if !had_wal && wal.exists() {
            // The commit stands either way; a directory that cannot be fsynced is a storage
            // fault the operator must see, not a reason to report a committed change as failed.
            if let Err(e) = files::fsync_dir(files::parent_dir(&self.path)) {
                tracing::error!(error = %e, "cannot fsync the data directory after a commit created the WAL");
            }
        }
        Ok(out)
    }

    /// CHECKPOINT with an empty WAL after it (see [`super::checkpoint`]).
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.checkpoint_waiting(super::CHECKPOINT_READ_WAIT)
    }

    /// [`checkpoint`](Self::checkpoint), waiting at most `wait` for reads that hold it up
    /// (see [`super::checkpoint_waiting`]).
    pub fn checkpoint_waiting(&self, wait: Duration) -> Result<(), StorageError> {
        let conn = self.conn()?;
        self.next_generation();
        super::checkpoint_waiting(conn, wait)
    }

    /// Checkpoints and closes the database (shutdown, or before the file is replaced). The
    /// caller must have dropped every other connection (the read pool) for the file to close.
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.readers.stop();
        self.next_generation();
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let checkpointed = conn.execute_batch("CHECKPOINT");
        conn.close().map_err(|(_, e)| StorageError::Db(e))?;
        Ok(checkpointed?)
    }

    /// Opens (again) the file at the live path and migrates it.
    pub fn reopen(&mut self) -> Result<(), StorageError> {
        self.readers.stop();
        self.next_generation();
        self.conn = None;
        let conn = super::open(&self.path)?;
        schema::migrate(&conn)?;
        self.conn = Some(conn);
        Ok(())
    }

    /// Publishes the complete database file `tmp` (same directory) over the live path. The
    /// database must be closed; [`reopen`](Self::reopen) it afterwards, whatever happened:
    /// until the rename the old file is intact, after it the new one is in place.
    pub fn publish(&self, tmp: &Path, fail_points: [&str; 2]) -> Result<(), StorageError> {
        debug_assert!(self.conn.is_none(), "publish over an open database");
        self.readers.stop();
        self.next_generation();
        files::publish_database(tmp, &self.path, fail_points)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// BLAKE3 of the live file (consistent only after a checkpoint, or while closed).
    pub fn file_hash(&self) -> Result<blake3::Hash, StorageError> {
        super::hash_file(&self.path)
    }
}
