//! Errors of the snapshot engine and the mapping of I/O failures to typed storage faults.
//!
//! Every error carries a stable UPPER_SNAKE `reason` so the service layer can put it into
//! `google.rpc.ErrorInfo` without inspecting messages.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

/// Why the snapshot directory could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageFault {
    /// ENOSPC (or EDQUOT): the disk or quota is full.
    NoSpace,
    /// EROFS: the file system is mounted read-only.
    ReadOnly,
    /// EACCES / EPERM.
    PermissionDenied,
    /// ENOENT: the directory (or a file the store needs) is gone.
    Missing,
    /// ENOTDIR: a path component is a file.
    NotADirectory,
    /// Anything else (EIO, …).
    Other,
}

impl StorageFault {
    /// Classifies an I/O error by its OS error number.
    pub fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Self::NoSpace,
            Some(libc::EROFS) => Self::ReadOnly,
            Some(libc::EACCES) | Some(libc::EPERM) => Self::PermissionDenied,
            Some(libc::ENOENT) => Self::Missing,
            Some(libc::ENOTDIR) => Self::NotADirectory,
            _ => match err.kind() {
                io::ErrorKind::NotFound => Self::Missing,
                io::ErrorKind::PermissionDenied => Self::PermissionDenied,
                _ => Self::Other,
            },
        }
    }
}

/// Errors of the snapshot engine.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A snapshot id that is not exactly in the generated format.
    #[error("invalid snapshot id")]
    InvalidId,
    #[error("snapshot {0} not found")]
    NotFound(String),
    /// Held by a restore in progress ([`super::SnapshotStore::pin`]): nothing may remove it.
    #[error("snapshot {0} is pinned by a restore in progress")]
    Pinned(String),
    /// Pinned by a user: only a forced delete removes it.
    #[error("snapshot {0} is pinned; unpin it or delete it with force")]
    PinnedByUser(String),
    /// Stored data (manifest, block, index) failed its checksum or could not be decoded.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// The manifest was written by a newer build of the snapshot engine.
    #[error("manifest format {found} is newer than this build supports ({supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// The snapshot directory cannot be used (full, read-only, missing, …).
    #[error("snapshot storage at {path}: {fault:?}: {source}")]
    Storage {
        path: PathBuf,
        fault: StorageFault,
        #[source]
        source: io::Error,
    },
    /// The snapshot's DuckDB storage version is newer than the running engine can read.
    #[error("snapshot storage version {found} is newer than this engine reads ({supported})")]
    IncompatibleStorageVersion { found: u64, supported: u64 },
    /// The captured file is not a DuckDB database.
    #[error("not a DuckDB database file: {0}")]
    NotADatabase(String),
    /// The database file changed while it was copied (a checkpoint raced the capture).
    #[error("the database file changed while it was being captured")]
    SourceChanged,
    /// A capture taken ahead was stopped because the writer needed the file.
    #[error("the capture was cancelled: the writer needed the database file")]
    Cancelled,
    /// CHECKPOINT left data in the WAL, so the file alone would miss commits.
    #[error("the WAL is not empty after CHECKPOINT ({0})")]
    WalNotEmpty(String),
    /// Another process (or another `SnapshotStore` in this one) has the store open.
    #[error("snapshot store {0} is in use by another process")]
    Locked(PathBuf),
    /// A fail point configured by a test.
    #[error("injected fault at {0}")]
    Injected(&'static str),
    #[error("database error: {0}")]
    Db(#[from] duckdb::Error),
    /// The live database could not be brought to a capturable state (closed, CHECKPOINT
    /// failed, WAL not empty).
    #[error("the live database cannot be captured: {0}")]
    Source(#[from] crate::storage::StorageError),
    /// The snapshot store was never opened (see the start-up log).
    #[error("the snapshot store is not open")]
    StoreUnavailable,
    /// The thread committing a snapshot panicked (a bug).
    #[error("the snapshot commit thread panicked")]
    Panicked,
    /// Too many snapshot assemblies (previews, deep verifies) are running.
    #[error("{running} snapshot assemblies are already running")]
    Busy { running: usize },
    /// Assembling would leave less free space than the configured reserve.
    #[error("not enough free space to assemble: {needed} bytes needed beyond the reserve, {available} available")]
    NoScratchSpace { needed: u64, available: u64 },
    /// A snapshot archive (`lnrs snapshot save` file) that cannot be loaded.
    #[error("invalid snapshot archive: {0}")]
    ArchiveInvalid(String),
}

impl SnapshotError {
    /// A stable reason code for `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidId => "SNAPSHOT_ID_INVALID",
            Self::NotFound(_) => "SNAPSHOT_NOT_FOUND",
            Self::Pinned(_) | Self::PinnedByUser(_) => "SNAPSHOT_PINNED",
            Self::Corrupt { .. } => "SNAPSHOT_CORRUPT",
            Self::UnsupportedFormat { .. } => "SNAPSHOT_FORMAT_UNSUPPORTED",
            Self::Storage { fault, .. } => match fault {
                StorageFault::NoSpace => "SNAPSHOT_STORAGE_FULL",
                StorageFault::ReadOnly | StorageFault::PermissionDenied => {
                    "SNAPSHOT_STORAGE_UNWRITABLE"
                }
                StorageFault::Missing | StorageFault::NotADirectory => "SNAPSHOT_STORAGE_MISSING",
                StorageFault::Other => "SNAPSHOT_STORAGE_IO",
            },
            Self::IncompatibleStorageVersion { .. } => "SNAPSHOT_INCOMPATIBLE_STORAGE_VERSION",
            Self::NotADatabase(_) => "SNAPSHOT_SOURCE_INVALID",
            Self::WalNotEmpty(_) => "SNAPSHOT_WAL_NOT_EMPTY",
            Self::SourceChanged => "SNAPSHOT_SOURCE_CHANGED",
            Self::Cancelled => "SNAPSHOT_CAPTURE_CANCELLED",
            Self::Locked(_) => "SNAPSHOT_STORE_LOCKED",
            Self::Injected(_) => "SNAPSHOT_INJECTED_FAULT",
            Self::Db(_) => "SNAPSHOT_DATABASE_ERROR",
            Self::Source(crate::storage::StorageError::Closed) => "DATABASE_UNAVAILABLE",
            Self::Source(crate::storage::StorageError::WalNotEmpty { .. }) => {
                "SNAPSHOT_WAL_NOT_EMPTY"
            }
            Self::Source(crate::storage::StorageError::CheckpointHeldUp { .. }) => {
                "CHECKPOINT_HELD_UP"
            }
            Self::Source(_) => "SNAPSHOT_SOURCE_ERROR",
            Self::StoreUnavailable => "SNAPSHOT_STORE_UNAVAILABLE",
            Self::Panicked => "SNAPSHOT_THREAD_PANICKED",
            Self::Busy { .. } => "SNAPSHOT_ASSEMBLY_BUSY",
            Self::NoScratchSpace { .. } => "SNAPSHOT_SCRATCH_SPACE_LOW",
            Self::ArchiveInvalid(_) => "SNAPSHOT_ARCHIVE_INVALID",
        }
    }

    /// What a client may be told: the reason in words, with no path, SQL or engine message
    /// (the full error goes to the log).
    pub fn public_message(&self) -> String {
        match self {
            Self::Storage { fault, source, .. } => {
                format!("snapshot storage {fault:?} ({})", source.kind())
            }
            Self::Locked(_) => "the snapshot store is in use by another process".into(),
            Self::Db(_) => "database error".into(),
            Self::Source(e) => format!(
                "the live database cannot be captured: {}",
                e.public_message()
            ),
            other => other.to_string(),
        }
    }

    /// The storage fault, when the error is one.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            Self::Storage { fault, .. } => Some(*fault),
            _ => None,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Wraps an I/O error on `path` as a typed storage error.
pub(crate) fn io_err(path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Storage {
        path: path.to_path_buf(),
        fault: StorageFault::of(&source),
        source,
    }
}

/// Returns `Err(Injected)` when the fail point fires (or aborts the process, if so configured).
pub(crate) fn fail_point(name: &'static str) -> Result<(), SnapshotError> {
    if crate::fault::hit(name) {
        Err(SnapshotError::Injected(name))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_faults_and_reasons() {
        let cases = [
            (libc::ENOSPC, StorageFault::NoSpace, "SNAPSHOT_STORAGE_FULL"),
            (
                libc::EROFS,
                StorageFault::ReadOnly,
                "SNAPSHOT_STORAGE_UNWRITABLE",
            ),
            (
                libc::EACCES,
                StorageFault::PermissionDenied,
                "SNAPSHOT_STORAGE_UNWRITABLE",
            ),
            (
                libc::EPERM,
                StorageFault::PermissionDenied,
                "SNAPSHOT_STORAGE_UNWRITABLE",
            ),
            (
                libc::ENOENT,
                StorageFault::Missing,
                "SNAPSHOT_STORAGE_MISSING",
            ),
            (
                libc::ENOTDIR,
                StorageFault::NotADirectory,
                "SNAPSHOT_STORAGE_MISSING",
            ),
            (libc::EIO, StorageFault::Other, "SNAPSHOT_STORAGE_IO"),
        ];
        for (errno, fault, reason) in cases {
            let e = io_err(Path::new("/x"), io::Error::from_raw_os_error(errno));
            assert_eq!(e.storage_fault(), Some(fault), "errno {errno}");
            assert_eq!(e.reason(), reason, "errno {errno}");
        }
    }
}
