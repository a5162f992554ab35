//! The live database: its file and the write connection the writer thread owns, and the one
//! way that file is ever replaced (restore, start-up recovery): close with a checkpoint,
//! publish the new file over it ([`files::publish_database`]), reopen.
//!
//! The connection is absent only while a replacement is in progress or after reopening
//! failed; every use then fails with [`StorageError::Closed`] instead of touching a file that
//! is being swapped.

use std::path::{Path, PathBuf};

use super::{files, in_transaction, schema, Connection, StorageError};

/// The live database file and its write connection.
pub struct LiveDb {
    path: PathBuf,
    conn: Option<Connection>,
}

impl LiveDb {
    /// Opens the database at `path` (creating it if needed) and migrates it.
    pub fn open(path: &Path) -> Result<LiveDb, StorageError> {
        let mut db = LiveDb {
            path: path.to_path_buf(),
            conn: None,
        };
        db.reopen()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The write connection.
    pub fn conn(&self) -> Result<&Connection, StorageError> {
        self.conn.as_ref().ok_or(StorageError::Closed)
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
        let out = in_transaction(self.conn()?, f)?;
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
        super::checkpoint(self.conn()?)
    }

    /// Checkpoints and closes the database (shutdown, or before the file is replaced). The
    /// caller must have dropped every other connection (the read pool) for the file to close.
    pub fn close(&mut self) -> Result<(), StorageError> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let checkpointed = conn.execute_batch("CHECKPOINT");
        conn.close().map_err(|(_, e)| StorageError::Db(e))?;
        Ok(checkpointed?)
    }

    /// Opens (again) the file at the live path and migrates it.
    pub fn reopen(&mut self) -> Result<(), StorageError> {
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
        files::publish_database(tmp, &self.path, fail_points)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// BLAKE3 of the live file (consistent only after a checkpoint, or while closed).
    pub fn file_hash(&self) -> Result<blake3::Hash, StorageError> {
        super::hash_file(&self.path)
    }
}
