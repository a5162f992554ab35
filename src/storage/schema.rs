//! The database schema: ordered migrations applied at start-up, and the table inventory
//! (user tables, service tables, references) that cascades, verification and fingerprints use.

use duckdb::{params, Connection};

use super::StorageError;

/// One schema migration. Applied in order, each in its own transaction, recorded in
/// `lnrs_schema_version`.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only: a released migration is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "lnrs schema: entities, lookups, bridges, apmg_slim_vw, event log, request log",
        sql: include_str!("schema_v1.sql"),
    },
    Migration {
        version: 2,
        name: "request log keyed by (principal, request_id)",
        sql: include_str!("schema_v2.sql"),
    },
    Migration {
        version: 3,
        name:
            "the original's data as it is: NULLs in API-required columns, MAPG rows without a grant",
        sql: include_str!("schema_v3.sql"),
    },
];

/// Latest schema version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The schema version of a database that has the version table (0 if it is empty).
pub fn version(conn: &Connection) -> Result<i32, StorageError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(version), 0) FROM lnrs_schema_version",
        [],
        |r| r.get(0),
    )?)
}

/// Brings the database up to [`latest_version`]; returns how many migrations it applied.
/// Refuses a database written by a newer build.
pub fn migrate(conn: &Connection) -> Result<usize, StorageError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS lnrs_schema_version (
             version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at_us BIGINT NOT NULL)",
    )?;
    let current = version(conn)?;
    if current > latest_version() {
        return Err(StorageError::SchemaTooNew {
            found: current,
            supported: latest_version(),
        });
    }
    let mut applied_count = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let now = chrono::Utc::now().timestamp_micros();
        conn.execute_batch("BEGIN TRANSACTION")?;
        let applied = conn.execute_batch(m.sql).and_then(|_| {
            conn.execute(
                "INSERT INTO lnrs_schema_version VALUES (?, ?, ?)",
                params![m.version, m.name, now],
            )
        });
        match applied {
            Ok(_) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        applied_count += 1;
    }
    Ok(applied_count)
}
