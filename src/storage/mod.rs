//! DuckDB storage: the schema and its migrations, the single writer thread, the read pool,
//! entity/link queries, cascade plans, fingerprint-tracking changes and inspection.
//! Knows nothing of gRPC.

pub mod cascade;
pub mod changes;
pub mod entities;
pub mod inspect;
pub mod links;
pub mod pool;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use duckdb::Connection;
use thiserror::Error;

/// Errors of the storage layer.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] duckdb::Error),
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i32, supported: i32 },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{table} {key} not found")]
    NotFound { table: &'static str, key: String },
    #[error("{table} {key} already exists")]
    AlreadyExists { table: &'static str, key: String },
    #[error("{table} with {column} = {value} does not exist")]
    MissingReference {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    #[error("page token does not match this query")]
    InvalidCursor,
    #[error("the write queue is full")]
    Busy,
    #[error("the request's deadline passed before it could run")]
    DeadlineExceeded,
    #[error("the database is being restored; retry in {retry_after:?}")]
    Unavailable { retry_after: Duration },
    #[error("the writer has stopped")]
    WriterStopped,
    #[error("a read task failed")]
    ReadTaskFailed,
    #[error(
        "{table}: {actual} rows deleted where {expected} were counted in the same transaction"
    )]
    FingerprintDrift {
        table: String,
        expected: i64,
        actual: i64,
    },
    #[error("the write-ahead log is not empty after CHECKPOINT ({wal_size})")]
    WalNotEmpty { wal_size: String },
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Prepared statements kept per connection: the writer cycles through a few dozen distinct
/// statements (per-table inserts, deletes and fingerprint scans); duckdb-rs keeps 16.
pub const STATEMENT_CACHE: usize = 256;

/// Opens (creating if needed) the database file for writing.
pub fn open(path: &Path) -> Result<Connection, StorageError> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadWrite)?
        .enable_autoload_extension(false)?;
    let conn = Connection::open_with_flags(path, config)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Opens a database file read-only (snapshot previews and verification).
pub fn open_read_only(path: &Path) -> Result<Connection, StorageError> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)?
        .enable_autoload_extension(false)?;
    Ok(Connection::open_with_flags(path, config)?)
}

/// CHECKPOINT, then confirm the WAL is empty: after this the database file alone holds every
/// committed transaction, and (with the writer held) nothing can commit until the caller is done.
pub fn checkpoint(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch("CHECKPOINT")?;
    let wal: String = conn.query_row(
        "SELECT wal_size FROM pragma_database_size() WHERE database_name = current_database()",
        [],
        |r| r.get(0),
    )?;
    if wal.trim_start().starts_with('0') {
        Ok(())
    } else {
        Err(StorageError::WalNotEmpty { wal_size: wal })
    }
}

/// DuckDB's library version string, e.g. "v2.0.0".
pub fn library_version(conn: &Connection) -> Result<String, StorageError> {
    Ok(
        conn.query_row("SELECT library_version FROM pragma_version()", [], |r| {
            r.get(0)
        })?,
    )
}

/// Paths of the WAL side files DuckDB may leave next to a database file.
pub fn wal_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [with(".wal"), with(".wal.checkpoint"), with(".wal.recovery")]
}
