//! Test fixtures: a ~35 MB LNRS database (real schema, 300 000 measures with barely
//! compressible text, one type link each), built once and cached in the system temp dir, then
//! copied per test; plus a small database for tests that do not need the size.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use duckdb::{params, Connection};

use crate::snapshot::{Manifest, NewSnapshot, Operation, SnapshotStore};
use crate::storage::inspect::{schema_inventory, user_fingerprints};
use crate::storage::schema::migrate;

pub const BIG_MEASURES: i64 = 300_000;
const FIXTURE_VERSION: u32 = 1;

/// A database under test with its own directory (the store usually lives next to it).
pub struct Db {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub conn: Connection,
}

impl Db {
    /// A copy of the cached ~35 MB fixture.
    pub fn big() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("live.duckdb");
        std::fs::copy(big_template(), &path).expect("copy fixture");
        let conn = Connection::open(&path).expect("open");
        Db { dir, path, conn }
    }

    /// A fresh database with the schema and `measures` measures.
    pub fn small(measures: i64) -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("live.duckdb");
        let conn = Connection::open(&path).expect("open");
        fill(&conn, measures);
        Db { dir, path, conn }
    }

    /// A store in this database's directory.
    pub fn store(&self) -> SnapshotStore {
        SnapshotStore::open(&self.store_root()).expect("open store")
    }

    pub fn store_root(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    /// Deletes a measure and its links in one transaction (what the writer does).
    pub fn delete_measure(&self, id: i64) {
        self.conn.execute_batch("BEGIN TRANSACTION").expect("begin");
        self.conn
            .execute(
                "DELETE FROM measure_has_type WHERE measure_id = ?",
                params![id],
            )
            .expect("delete links");
        self.conn
            .execute("DELETE FROM measure WHERE measure_id = ?", params![id])
            .expect("delete measure");
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    /// Metadata with the database's real fingerprints and schema.
    pub fn meta(&self, operation: Operation, entity_id: Option<i64>) -> NewSnapshot {
        meta_of(&self.conn, operation, entity_id)
    }

    /// The writer's sequence: checkpoint, capture, commit.
    pub fn snapshot(&self, store: &SnapshotStore, entity_id: Option<i64>) -> Manifest {
        let op = if entity_id.is_some() {
            Operation::Delete
        } else {
            Operation::Manual
        };
        let meta = self.meta(op, entity_id);
        crate::storage::checkpoint(&self.conn).expect("checkpoint");
        let capture = store.capture(&self.path).expect("capture");
        store.commit(capture, meta).expect("commit")
    }
}

pub fn meta_of(conn: &Connection, operation: Operation, entity_id: Option<i64>) -> NewSnapshot {
    NewSnapshot {
        meta: crate::snapshot::SnapshotMeta {
            description: format!("{operation} {entity_id:?}"),
            operation,
            entity_type: entity_id.map(|_| "measure".to_string()),
            entity_id: entity_id.map(|i| i.to_string()),
            request_id: Some("req-test".into()),
            labels: [("test".to_string(), "yes".to_string())].into(),
            event_head_seq: 7,
            duckdb_library_version: conn.version().expect("version"),
        },
        fingerprints: user_fingerprints(conn).expect("fingerprints"),
        schema: schema_inventory(conn).expect("schema"),
    }
}

fn fill(conn: &Connection, measures: i64) {
    migrate(conn).expect("migrate");
    conn.execute_batch("INSERT INTO measure_type SELECT range, 'type ' || range FROM range(20)")
        .expect("types");
    // md5 text is close to incompressible for DuckDB and zstd alike, so the deduplication
    // test measures deduplication rather than compression.
    conn.execute(
        "INSERT INTO measure SELECT range, md5(range::VARCHAR) || md5((range * 7)::VARCHAR),
                md5((range * 13)::VARCHAR),
                CASE WHEN range % 2 = 0 THEN 'core' ELSE 'supplementary' END,
                NULL, NULL, NULL, md5((range * 3)::VARCHAR)
         FROM range(?)",
        params![measures],
    )
    .expect("measures");
    conn.execute(
        "INSERT INTO measure_has_type SELECT range, range % 20 FROM range(?)",
        params![measures],
    )
    .expect("links");
    conn.execute_batch("CHECKPOINT").expect("checkpoint");
}

/// The big fixture, built once per machine (atomically: build to a temp name, rename).
fn big_template() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let version = duckdb::Connection::open_in_memory()
            .and_then(|c| c.version())
            .expect("version");
        let name = format!("lnrs-snapshot-fixture-{version}-v{FIXTURE_VERSION}.duckdb");
        let path = std::env::temp_dir().join(name);
        if !path.exists() {
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            let conn = Connection::open(&tmp).expect("create fixture");
            fill(&conn, BIG_MEASURES);
            drop(conn);
            std::fs::rename(&tmp, &path).expect("publish fixture");
        }
        path
    })
}
