//! Read-only views of database files for checks (deep verify, a restore's pre-swap check),
//! through one DuckDB instance per process that attaches each file and detaches it when done.
//!
//! A fresh DuckDB instance pays its catalog set-up on the first listing of tables or columns:
//! DuckDB then parses every one of its built-in views (measured at scale 1: open ~15 ms, then
//! ~40 ms for the schema inventory and row counts). An instance kept for the life of the
//! process pays that once; attaching a file to it takes ~3 ms and the same queries ~20 ms.
//!
//! Only for files nothing else in this process has open: DuckDB locks a file with POSIX
//! record locks, which belong to the process, so closing one handle on a file drops every
//! lock the process holds on it (the live file's writer lock among them).

use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{Connection, StorageError};

/// The process's checking instance (in memory: it holds nothing but attachments).
fn instance() -> Result<Connection, StorageError> {
    static INSTANCE: OnceLock<Mutex<Connection>> = OnceLock::new();
    if INSTANCE.get().is_none() {
        let config = duckdb::Config::default().enable_autoload_extension(false)?;
        let conn = Connection::open_in_memory_with_flags(config)?;
        let _ = INSTANCE.set(Mutex::new(conn));
    }
    let shared = INSTANCE.get().expect("set above");
    let conn = shared.lock().unwrap_or_else(|e| e.into_inner());
    Ok(conn.try_clone()?)
}

/// A database file opened read-only for checks; the connection's default database is the
/// file. Dropping it closes the file.
pub enum ReadOnlyDb {
    /// Attached to the process's checking instance under `alias`.
    Attached { conn: Connection, alias: String },
    /// An instance of its own (a path DuckDB's ATTACH cannot name).
    Own(Connection),
}

/// Opens `path` read-only for checks (see the module docs for when not to).
pub fn open_for_check(path: &Path) -> Result<ReadOnlyDb, StorageError> {
    let Some(name) = path.to_str() else {
        return Ok(ReadOnlyDb::Own(super::open_read_only(path)?));
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let alias = format!("lnrs_check_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let conn = instance()?;
    conn.execute_batch(&format!(
        "ATTACH '{}' AS \"{alias}\" (READ_ONLY)",
        name.replace('\'', "''")
    ))?;
    let using = format!("USE \"{alias}\"");
    // From here on, dropping it detaches the file.
    let db = ReadOnlyDb::Attached { conn, alias };
    db.execute_batch(&using)?;
    Ok(db)
}

/// A connection that can open another on the same database, for checks run side by side.
pub trait SideBySide {
    fn conn(&self) -> &Connection;
    fn another(&self) -> Result<Connection, StorageError>;
}

impl SideBySide for Connection {
    fn conn(&self) -> &Connection {
        self
    }

    fn another(&self) -> Result<Connection, StorageError> {
        Ok(self.try_clone()?)
    }
}

impl SideBySide for ReadOnlyDb {
    fn conn(&self) -> &Connection {
        self
    }

    fn another(&self) -> Result<Connection, StorageError> {
        let second = self.conn().try_clone()?;
        if let ReadOnlyDb::Attached { alias, .. } = self {
            second.execute_batch(&format!("USE \"{alias}\""))?;
        }
        Ok(second)
    }
}

impl Deref for ReadOnlyDb {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            ReadOnlyDb::Attached { conn, .. } | ReadOnlyDb::Own(conn) => conn,
        }
    }
}

impl Drop for ReadOnlyDb {
    fn drop(&mut self) {
        if let ReadOnlyDb::Attached { conn, alias } = self {
            // The file stays open (and its name taken) until it is detached.
            if let Err(e) = conn.execute_batch(&format!("USE memory; DETACH \"{alias}\";")) {
                tracing::warn!(error = %e, "could not detach a checked database file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_rows(dir: &Path, name: &str, rows: i64) -> std::path::PathBuf {
        let path = dir.join(name);
        let conn = super::super::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t AS SELECT range AS i FROM range({rows}); CHECKPOINT;"
        ))
        .unwrap();
        path
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// Each handle (and each of its second connections) reads its own file, by unqualified
    /// names; after the handle is dropped the file is closed, so a writer can open it.
    #[test]
    fn each_attached_file_is_the_default_database_of_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let a = file_with_rows(dir.path(), "it's a.duckdb", 3);
        let b = file_with_rows(dir.path(), "b.duckdb", 5);
        let (da, db) = (open_for_check(&a).unwrap(), open_for_check(&b).unwrap());
        assert!(matches!(da, ReadOnlyDb::Attached { .. }));
        assert_eq!((count(&da), count(&db)), (3, 5));
        assert_eq!(count(&da.another().unwrap()), 3);
        assert_eq!(count(&db.another().unwrap()), 5);
        assert!(
            da.execute_batch("CREATE TABLE u (i INT)").is_err(),
            "read-only"
        );
        drop((da, db));
        let writer = super::super::open(&a).unwrap();
        writer.execute_batch("INSERT INTO t VALUES (9)").unwrap();
        assert_eq!(count(&writer), 4);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.duckdb");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        assert!(open_for_check(&path).is_err());
        assert!(open_for_check(&dir.path().join("missing.duckdb")).is_err());
    }
}
