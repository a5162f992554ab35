//! DuckDB storage: every SQL statement, transaction and database file of the service. The
//! schema and its migrations, the live database and its atomic replacement, the single writer
//! thread and the gate of background readers of its file, the read pool, entity/link queries,
//! cascade plans, fingerprint-tracking changes, read-only views of files for checks,
//! the request log, inspection, and the file primitives. Knows nothing of gRPC.

pub mod attached;
pub mod cascade;
pub mod changes;
pub mod entities;
pub mod files;
pub mod gate;
pub mod images;
pub mod inspect;
pub mod links;
pub mod live;
pub mod pool;
pub mod requests;
pub mod schema;
pub mod writer;

/// The connection handle the other layers pass back into this one (they never run SQL).
pub use duckdb::Connection;
pub use live::LiveDb;

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Reads that began before the last change were still running when the wait ended.
    #[error("the checkpoint waited {waited:?} for reads that began before the last change")]
    CheckpointHeldUp { waited: Duration },
    #[error("the write-ahead log is not empty after CHECKPOINT ({wal_size})")]
    WalNotEmpty { wal_size: String },
    /// The live database is closed: a restore is swapping it, or reopening it failed.
    #[error("the database is not open")]
    Closed,
    /// A row image without its table's key columns (an image of a table this build does not
    /// know, or a corrupt event): it cannot be written back.
    #[error("a row image of {table} lacks the table's key")]
    ImageWithoutKey { table: String },
}

impl StorageError {
    /// What a client may be told: no path, no SQL, no engine message (those go to the log).
    pub fn public_message(&self) -> String {
        match self {
            StorageError::Db(_) => "database error".into(),
            StorageError::Io { source, .. } => format!("i/o error ({})", source.kind()),
            other => other.to_string(),
        }
    }

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

/// DuckDB's compression methods that this service's database files do not use. DuckDB picks
/// ZSTD for large BLOBs, which here means `area_geom.geo_shape` (WKB: packed doubles, which
/// barely compress). It saves ~10% of the file (the scale-10 reference: 225 MB with it, 248 MB
/// without), but every full read of the column must decompress it: a fingerprint scan of the
/// table (file cached) takes ~430 ms at scale 10 with ZSTD and ~100 ms without. Every deep
/// verify and restore reads the whole column, and the snapshot store compresses its blocks
/// anyway. Files written before this setting keep their ZSTD segments until DuckDB rewrites
/// them; both read the same.
const DISABLED_COMPRESSION: &str = "zstd";

/// Applies the settings of every DuckDB instance that writes a database file of this service.
/// (A SET, not an open-time option: DuckDB ignores this one in the open configuration.)
pub fn apply_write_settings(conn: &Connection) -> Result<(), duckdb::Error> {
    conn.execute_batch(&format!(
        "SET GLOBAL disabled_compression_methods = '{DISABLED_COMPRESSION}'"
    ))
}

/// Whether DuckDB refused a CHECKPOINT because of open transactions (see
/// [`checkpoint_waiting`]). DuckDB gives this condition no error code of its own, only its
/// message; the storage tests pin it.
fn held_up_by_reads(e: &duckdb::Error) -> bool {
    e.to_string().contains("Cannot CHECKPOINT")
}

/// Opens (creating if needed) the database file for writing.
pub fn open(path: &Path) -> Result<Connection, StorageError> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadWrite)?
        .enable_autoload_extension(false)?;
    let conn = Connection::open_with_flags(path, config)?;
    apply_write_settings(&conn)?;
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

/// How long a CHECKPOINT waits for reads that hold it up (see [`checkpoint_waiting`]).
pub const CHECKPOINT_READ_WAIT: Duration = Duration::from_secs(10);

/// CHECKPOINT, then confirm the WAL is empty: after this the database file alone holds every
/// committed transaction, and (with the writer held) nothing can commit until the caller is done.
/// Waits up to [`CHECKPOINT_READ_WAIT`] for reads that hold it up.
pub fn checkpoint(conn: &Connection) -> Result<(), StorageError> {
    checkpoint_waiting(conn, CHECKPOINT_READ_WAIT)
}

/// [`checkpoint`], waiting at most `wait` for reads that hold it up.
///
/// DuckDB refuses a CHECKPOINT while a read transaction that began before an UPDATE committed
/// is still open (the read needs the rows' old versions): "Cannot CHECKPOINT: there are other
/// write transactions active". Its FORCE CHECKPOINT waits for them without a bound. The reads
/// here are the read pool's and the background shipper's: short, never waiting on the writer,
/// and reads that begin after the commit do not hold the CHECKPOINT up — so it is tried again
/// until they end, backing off, for at most `wait` (`Duration::ZERO`: one attempt).
pub fn checkpoint_waiting(conn: &Connection, wait: Duration) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match conn.execute_batch("CHECKPOINT") {
            Ok(()) => break,
            Err(e) if held_up_by_reads(&e) => {
                let waited = started.elapsed();
                if waited >= wait {
                    tracing::debug!(error = %e, ?waited, "CHECKPOINT held up by reads");
                    return Err(StorageError::CheckpointHeldUp { waited });
                }
                std::thread::sleep(pause.min(wait - waited));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let wal: String = conn.query_row(
        "SELECT wal_size FROM pragma_database_size() WHERE database_name = current_database()",
        [],
        |r| r.get(0),
    )?;
    if wal_is_empty(&wal) {
        Ok(())
    } else {
        Err(StorageError::WalNotEmpty { wal_size: wal })
    }
}

/// DuckDB formats `wal_size` for humans ("0 bytes", "1.2 KiB"); "0.5 KiB" is not empty.
fn wal_is_empty(wal_size: &str) -> bool {
    let number = wal_size.split_whitespace().next().unwrap_or("");
    number.parse::<f64>().map(|n| n == 0.0).unwrap_or(false)
}

/// DuckDB's library version string, e.g. "v2.0.0".
pub fn library_version(conn: &Connection) -> Result<String, StorageError> {
    Ok(
        conn.query_row("SELECT library_version FROM pragma_version()", [], |r| {
            r.get(0)
        })?,
    )
}

/// A span named `$name` (with optional fields) inside the current span, or no span when there
/// is none: work done for a request shows as phases of the request's trace (queue wait,
/// checkpoint, capture, cascade, COMMIT, …), while background work (captures taken ahead,
/// upkeep) does not start a trace for every step.
macro_rules! phase_span {
    ($name:literal $(, $($field:tt)*)?) => {
        if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!($name $(, $($field)*)?)
        }
    };
}
pub(crate) use phase_span;

/// Runs `f` inside BEGIN … COMMIT on `conn`; any error (of `f` or of COMMIT) rolls back.
pub fn in_transaction<T, E: From<StorageError>>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(StorageError::from)?;
    match f(conn) {
        Ok(v) => {
            match crate::storage::phase_span!("commit").in_scope(|| conn.execute_batch("COMMIT")) {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(StorageError::from(e).into())
                }
            }
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// CHECKPOINT, then close: the file alone holds everything committed on `conn`.
pub fn checkpoint_and_close(conn: Connection) -> Result<(), StorageError> {
    conn.execute_batch("CHECKPOINT")?;
    conn.close().map_err(|(_, e)| StorageError::Db(e))
}

/// Opens the database file `path` read-write and brings its schema up to date (an assembled
/// snapshot may predate a migration), then closes it with a checkpoint.
pub fn migrate_file(path: &Path) -> Result<bool, StorageError> {
    let conn = open(path)?;
    let applied = schema::migrate(&conn)?;
    checkpoint_and_close(conn)?;
    Ok(applied > 0)
}

/// Copies the rows of `tables` from the connection's main database into the database file
/// `other` (replacing theirs), then runs `more` with `other`'s alias — all in one transaction
/// — and checkpoints and detaches `other`, so the file alone holds the result. Restore uses it
/// to carry the event and request logs into the snapshot it swaps in.
pub fn copy_tables_into<E: From<StorageError>>(
    conn: &Connection,
    other: &Path,
    tables: &[&str],
    more: impl FnOnce(&Connection, &str) -> Result<(), E>,
) -> Result<(), E> {
    const ALIAS: &str = "lnrs_carry_over";
    let path = crate::domain::tables::quote_path(other);
    conn.execute_batch(&format!("ATTACH {path} AS {ALIAS}"))
        .map_err(StorageError::from)?;
    let copied = in_transaction(conn, |c| {
        for t in tables {
            let t = crate::domain::tables::quote_ident(t);
            c.execute_batch(&format!(
                "DELETE FROM {ALIAS}.{t}; INSERT INTO {ALIAS}.{t} BY NAME SELECT * FROM main.{t};"
            ))
            .map_err(StorageError::from)?;
        }
        more(c, ALIAS)
    });
    let checkpointed = conn.execute_batch(&format!("CHECKPOINT {ALIAS}"));
    let detached = conn.execute_batch(&format!("DETACH {ALIAS}"));
    copied?;
    checkpointed.map_err(StorageError::from)?;
    detached.map_err(StorageError::from)?;
    Ok(())
}

/// Replaces the rows of `tables` in the connection's main database with those of the database
/// file `other`, then runs `more`, in one transaction (replaying a restore from a shipped log:
/// the tables become the restored snapshot's, and the restore's event is appended with them).
pub fn replace_tables_from<E: From<StorageError>>(
    conn: &Connection,
    other: &Path,
    tables: &[&str],
    more: impl FnOnce(&Connection) -> Result<(), E>,
) -> Result<(), E> {
    const ALIAS: &str = "lnrs_replay_source";
    let path = crate::domain::tables::quote_path(other);
    conn.execute_batch(&format!("ATTACH {path} AS {ALIAS} (READ_ONLY)"))
        .map_err(StorageError::from)?;
    let copied = in_transaction(conn, |c| {
        for t in tables {
            let t = crate::domain::tables::quote_ident(t);
            c.execute_batch(&format!(
                "DELETE FROM main.{t}; INSERT INTO main.{t} BY NAME SELECT * FROM {ALIAS}.{t};"
            ))
            .map_err(StorageError::from)?;
        }
        more(c)
    });
    let detached = conn.execute_batch(&format!("DETACH {ALIAS}"));
    copied?;
    detached.map_err(StorageError::from)?;
    Ok(())
}

/// BLAKE3 of a whole file, memory-mapped and hashed on every core: no file-sized allocation
/// (its page faults cost more than the hashing) and no copy.
pub fn hash_file(path: &Path) -> Result<blake3::Hash, StorageError> {
    blake3::Hasher::new()
        .update_mmap_rayon(path)
        .map(|h| h.finalize())
        .map_err(|e| StorageError::io(path, e))
}

pub use files::wal_files;

#[cfg(test)]
mod tests {
    use super::*;

    /// Large BLOBs of packed doubles (what WKB is) are what DuckDB compresses with ZSTD by
    /// default; a file written through [`open`] stores them uncompressed.
    #[test]
    fn blobs_of_coordinates_are_stored_without_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("c.duckdb")).unwrap();
        conn.execute_batch(
            "CREATE TABLE g AS
             SELECT i, (SELECT string_agg(CAST(random() * 1e6 AS VARCHAR), ',')
                        FROM range(4000) WHERE i >= 0)::BLOB AS shape
             FROM range(600) t(i);
             CHECKPOINT;",
        )
        .unwrap();
        let methods: Vec<String> = conn
            .prepare(
                "SELECT DISTINCT compression FROM pragma_storage_info('g')
                 WHERE column_name = 'shape' AND segment_type = 'BLOB'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!methods.is_empty());
        assert!(
            methods.iter().all(|m| !m.eq_ignore_ascii_case("zstd")),
            "{methods:?}"
        );
    }

    /// A database with one committed table and a read transaction on a clone of its
    /// connection that has read it, then an UPDATE committed after that read began: the state
    /// in which DuckDB refuses a CHECKPOINT ("there are other write transactions active"; the
    /// read still needs the rows' old versions). Inserts and deletes do not hold it up.
    fn read_straddling_a_commit(dir: &Path) -> (Connection, Connection) {
        let conn = open(&dir.join("r.duckdb")).unwrap();
        conn.execute_batch("CREATE TABLE t(i INTEGER); INSERT INTO t VALUES (1); CHECKPOINT;")
            .unwrap();
        let reader = conn.try_clone().unwrap();
        reader.execute_batch("BEGIN TRANSACTION").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch("UPDATE t SET i = 2").unwrap();
        (conn, reader)
    }

    /// A read that began before the last commit holds a CHECKPOINT up while it runs: the
    /// CHECKPOINT waits for it and succeeds once it ends (the read pool's reads are short and
    /// never wait on the writer), leaving the WAL empty.
    #[test]
    fn a_checkpoint_waits_for_a_read_that_began_before_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, reader) = read_straddling_a_commit(dir.path());
        // The state holds a CHECKPOINT up, so one that succeeds below waited for the read.
        assert!(matches!(
            checkpoint_waiting(&conn, Duration::ZERO),
            Err(StorageError::CheckpointHeldUp { .. })
        ));
        let read = std::thread::spawn(move || {
            // The rest of the read, still in its transaction.
            std::thread::sleep(Duration::from_millis(100));
            reader.execute_batch("ROLLBACK").unwrap();
        });
        checkpoint(&conn).expect("the checkpoint waits for the read");
        read.join().unwrap();
        let wal: String = conn
            .query_row(
                "SELECT wal_size FROM pragma_database_size() WHERE database_name = current_database()",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(wal_is_empty(&wal), "{wal}");
    }

    /// A read that outlasts the wait is reported as such (a retryable condition), not as a
    /// database error; once it ends the CHECKPOINT goes through.
    #[test]
    fn a_checkpoint_held_up_past_its_wait_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, reader) = read_straddling_a_commit(dir.path());
        let e = checkpoint_waiting(&conn, Duration::from_millis(30)).unwrap_err();
        assert!(matches!(e, StorageError::CheckpointHeldUp { .. }), "{e:?}");
        assert!(!e.public_message().contains("CHECKPOINT:"), "{e}");
        reader.execute_batch("ROLLBACK").unwrap();
        checkpoint_waiting(&conn, Duration::ZERO).unwrap();
    }

    #[test]
    fn wal_size_parsing() {
        assert!(wal_is_empty("0 bytes"));
        assert!(wal_is_empty("0"));
        assert!(!wal_is_empty("0.5 KiB"));
        assert!(!wal_is_empty("1.2 KiB"));
        assert!(!wal_is_empty("12 bytes"));
        assert!(!wal_is_empty(""));
    }
}
