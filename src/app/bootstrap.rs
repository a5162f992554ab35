//! Start-up: create the data directory, load the reference dataset on first start (written to a
//! temp file and published, so a crash never leaves a half-loaded database), open the snapshot
//! store, resolve an interrupted restore BEFORE anything is served (refusing to start when it
//! cannot be resolved), open and migrate the database, load fingerprints and the event log
//! head, and start the writer.

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
use crate::snapshot::{SnapshotError, SnapshotStore, StoreLimits};
use crate::storage::pool::ReadPool;
use crate::storage::writer::Writer;
use crate::storage::{self, inspect, LiveDb, StorageError};

/// Scratch directory older builds assembled snapshot previews into (now under the store's
/// own `tmp/`, emptied at open).
const LEGACY_SCRATCH: &str = "tmp";

pub(super) fn open(config: Config) -> Result<App, Error> {
    config
        .validate()
        .map_err(|e| Error::invalid("config", "INVALID_CONFIG", e.to_string()))?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| StorageError::io(&data_dir, e))?;
    let _ = std::fs::remove_dir_all(data_dir.join(LEGACY_SCRATCH));
    let db_path = config.database_path();
    let from_replica = config.replica.as_ref().is_some_and(|r| r.bootstrap);
    let tails_primary = config.follow.as_ref().is_some_and(|f| f.tails_primary());
    if !db_path.exists() && tails_primary {
        // The server layer bootstraps it from the primary's ExportSnapshot before opening.
        return Err(Error::RecoveryBlocked(
            "a follower of a primary needs its bootstrap from the primary first".into(),
        ));
    }
    if !db_path.exists() && (from_replica || config.follow.is_some()) {
        let source = match &config.follow {
            Some(f) => super::follower::recovery_config(&config, f),
            None => config.clone(),
        };
        let r = super::replica::recover(&source, None)?;
        tracing::info!(
            snapshot = %r.snapshot_id,
            head = r.head_seq,
            events_replayed = r.events_replayed,
            elapsed_ms = r.elapsed.as_millis() as u64,
            "bootstrapped from the replica"
        );
    } else if !db_path.exists() && config.load_reference_data {
        load_reference(&db_path, config.reference_scale)?;
    }
    let store = open_store(&config);
    if let Err(e) = &store {
        tracing::error!(error = %e, "snapshot store could not be opened");
    }
    // Nothing is served and nothing is written before an interrupted restore is resolved.
    restore::recover(&data_dir, &db_path, store.as_deref().ok())?;
    let db = LiveDb::open(&db_path)?;
    let conn = db.conn()?;
    let fps = inspect::user_fingerprints(conn)?;
    let inventory = inspect::schema_inventory(conn)?;
    let bounds = event_log::bounds(conn)?;
    let duckdb_version = storage::library_version(conn)?;
    let reads = ReadPool::new(db.try_clone()?, config.restore_read_wait, 64);
    let hub = EventHub::new(config.event_ring_capacity, config.max_subscribers, bounds);
    let initial = match config.snapshot_policy {
        SnapshotPolicy::Disabled => SnapshotHealth {
            state: SnapshotState::Disabled,
            reason: Some("snapshot_policy = disabled".into()),
            reason_code: Some("SNAPSHOTS_DISABLED"),
        },
        _ => SnapshotHealth::enabled(),
    };
    let store = store.ok();
    let tip = crate::replica::Tip {
        seq: bounds.head,
        fingerprints: fps.clone(),
    };
    let replica = super::replica::start(&config, store.as_ref(), &reads, &hub, tip)?;
    let follower = super::follower::Follower::open(&config)?;
    let shared = Arc::new(Shared {
        replica,
        follower,
        event_sink: super::sink::EventSink::open(&config),
        db_path,
        reads,
        records: Default::default(),
        hub,
        store: RwLock::new(store),
        status: StorageStatus::new(initial),
        database: Default::default(),
        restoring: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        journal_pins: Default::default(),
        retention_scheduled: AtomicBool::new(false),
        restore_changed: Default::default(),
        capture_ahead: Default::default(),
        duckdb_version,
        config,
    });
    let state = WriterState {
        db,
        fps,
        schema: inventory,
        next_seq: bounds.head + 1,
        issued_ids: Default::default(),
        ahead: Default::default(),
        shared: shared.clone(),
    };
    state.announce_ahead();
    let writer = Writer::start(state, shared.config.write_queue)?;
    // The first probe runs on the writer so a degraded store is announced as an event.
    writer.run_blocking(|st: &mut WriterState| {
        st.probe_storage();
        Ok::<_, Error>(())
    })?;
    Ok(App { shared, writer })
}

/// Opens the snapshot store with the configured limits.
pub(crate) fn open_store(config: &Config) -> Result<Arc<SnapshotStore>, SnapshotError> {
    let store = SnapshotStore::open(&config.snapshot_dir())?;
    store.set_limits(StoreLimits {
        max_assemblies: config.max_concurrent_assemblies,
        scratch_reserve_bytes: config.scratch_reserve_bytes,
    });
    Ok(Arc::new(store))
}

/// Writes the reference dataset (refdata builds it under a temp name and publishes it, never
/// over an existing database).
fn load_reference(db: &Path, scale: u32) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let stats = crate::refdata::write_to_path(db, scale)
        .map_err(|e| Error::Internal(format!("reference dataset: {e}")))?;
    tracing::info!(
        scale,
        rows = stats.tables.iter().map(|(_, n)| n).sum::<u64>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the reference LNRS dataset"
    );
    Ok(())
}
