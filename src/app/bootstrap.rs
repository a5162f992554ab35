//! Start-up: create the data directory, load the reference dataset on first start (written to a
//! temp file and renamed, so a crash never leaves a half-loaded database), repair an interrupted
//! restore, open and migrate the database, load fingerprints and the event log head, open and
//! probe the snapshot store, and start the writer.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::RwLock;

use super::state::WriterState;
use super::status::{SnapshotHealth, SnapshotState, StorageStatus};
use super::{restore, App, Shared};
use crate::config::{Config, SnapshotPolicy};
use crate::error::Error;
use crate::events::{log as event_log, EventHub};
use crate::snapshot::SnapshotStore;
use crate::storage::pool::ReadPool;
use crate::storage::writer::Writer;
use crate::storage::{self, inspect, schema, StorageError};

pub(super) fn open(config: Config) -> Result<App, Error> {
    config
        .validate()
        .map_err(|e| Error::invalid("config", "INVALID_CONFIG", e.to_string()))?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| StorageError::io(&data_dir, e))?;
    let db_path = config.database_path();
    if !db_path.exists() && config.load_reference_data {
        load_reference(&db_path, config.reference_scale)?;
    }
    let store = open_store(&config);
    if let Ok(s) = &store {
        restore::recover(&data_dir, &db_path, s)?;
    }
    let conn = storage::open(&db_path)?;
    schema::migrate(&conn)?;
    let fps = inspect::user_fingerprints(&conn)?;
    let inventory = inspect::schema_inventory(&conn)?;
    let bounds = event_log::bounds(&conn)?;
    let duckdb_version = storage::library_version(&conn)?;
    let reads = ReadPool::new(
        conn.try_clone().map_err(StorageError::from)?,
        config.restore_read_wait,
        64,
    );
    let hub = EventHub::new(config.event_ring_capacity, config.max_subscribers, bounds);
    let initial = match (&store, config.snapshot_policy) {
        (_, SnapshotPolicy::Disabled) => SnapshotHealth {
            state: SnapshotState::Disabled,
            reason: Some("snapshot_policy = disabled".into()),
            reason_code: Some("SNAPSHOTS_DISABLED"),
        },
        _ => SnapshotHealth::enabled(),
    };
    let shared = Arc::new(Shared {
        db_path: db_path.clone(),
        reads,
        records: Default::default(),
        hub,
        store: RwLock::new(store.as_ref().ok().cloned()),
        status: StorageStatus::new(initial),
        restoring: AtomicBool::new(false),
        retention_scheduled: AtomicBool::new(false),
        duckdb_version,
        config,
    });
    let state = WriterState {
        conn: Some(conn),
        db_path,
        fps,
        schema: inventory,
        next_seq: bounds.head + 1,
        shared: shared.clone(),
    };
    let writer = Writer::start(state, shared.config.write_queue)?;
    // The first probe runs on the writer so a degraded store is announced as an event.
    writer.run_blocking(|st: &mut WriterState| {
        st.probe_storage();
        Ok::<_, Error>(())
    })?;
    if let Err(e) = &store {
        tracing::error!(error = %e, "snapshot store could not be opened");
    }
    Ok(App { shared, writer })
}

fn open_store(config: &Config) -> Result<Arc<SnapshotStore>, crate::snapshot::SnapshotError> {
    SnapshotStore::open(&config.snapshot_dir()).map(Arc::new)
}

/// Writes the reference dataset to a temp file, then renames it into place.
fn load_reference(db: &Path, scale: u32) -> Result<(), Error> {
    let mut tmp = db.as_os_str().to_owned();
    tmp.push(".init-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    for w in storage::wal_files(&tmp) {
        let _ = std::fs::remove_file(w);
    }
    let started = std::time::Instant::now();
    let stats = crate::refdata::write_to_path(&tmp, scale)
        .map_err(|e| Error::Internal(format!("reference dataset: {e}")))?;
    restore::fsync_file(&tmp)?;
    std::fs::rename(&tmp, db).map_err(|e| StorageError::io(db, e))?;
    restore::fsync_dir(db)?;
    tracing::info!(
        path = %db.display(),
        scale,
        rows = stats.tables.iter().map(|(_, n)| n).sum::<u64>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the reference LNRS dataset"
    );
    Ok(())
}
