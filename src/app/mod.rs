//! The application: use cases that compose storage, snapshots and events, and the state they
//! share. Every mutation runs on the single writer ([`state::WriterState`]); reads run on the
//! read pool. gRPC handlers in [`crate::service`] are thin wrappers over these functions.

pub mod ahead;
mod bootstrap;
pub mod cache;
pub mod data;
pub mod entities;
pub mod follower;
pub mod history;
pub mod maintenance;
pub mod reads;
mod replay;
pub mod replica;
pub mod restore;
pub mod snapshots;
pub mod state;
pub mod status;
pub mod timeline;
pub mod transfer;
pub mod undelete;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;
use crate::events::EventHub;
use crate::snapshot::SnapshotStore;
use crate::storage::pool::ReadPool;
use crate::storage::writer::Writer;

pub use state::WriterState;
pub use status::{DatabaseStatus, SnapshotHealth, StorageStatus};

/// Who is asking, for idempotency, events, logs and deadlines.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    /// AIP-155 idempotency key (the request's `request_id` field).
    pub idempotency_key: Option<String>,
    /// BLAKE3 of the canonical encoding of the request: a reused idempotency key with a
    /// different request is an error.
    pub request_fingerprint: String,
    /// Correlation id recorded in events: the request_id field, else x-request-id.
    pub request_id: Option<String>,
    /// Full RPC path, e.g. "/lnrs.v1.EntityService/DeleteMeasure".
    pub rpc: String,
    /// Who is asking: the token's name (or "token-…"), the client certificate's subject,
    /// "anonymous" with auth off, "lnrs" for the service's own work. Idempotency keys are
    /// scoped to it and events record it.
    pub principal: String,
    /// The client's address.
    pub peer: Option<String>,
    /// The caller's deadline: a write still queued when it passes is not executed.
    pub deadline: Option<Instant>,
    /// The W3C trace id of the request (its `traceparent`, or the trace the server started
    /// for it when tracing is on), recorded in its events.
    pub trace_id: Option<String>,
}

impl RequestCtx {
    /// The prefix of the `rpc` of work the service starts by itself.
    pub const INTERNAL: &'static str = "internal/";

    /// The context of work the service starts by itself (retention, probes, upkeep).
    pub fn internal(what: &str) -> Self {
        Self {
            rpc: format!("{}{what}", Self::INTERNAL),
            principal: "lnrs".into(),
            ..Default::default()
        }
    }
}

/// A mutation result, possibly replayed from the request log (AIP-155).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayable<T> {
    pub value: T,
    #[serde(skip)]
    pub replayed: bool,
}

impl<T> Replayable<T> {
    /// A result computed now (not replayed).
    pub fn fresh(value: T) -> Self {
        Self {
            value,
            replayed: false,
        }
    }
}

/// State shared by the async side and the writer thread.
pub struct Shared {
    pub config: Config,
    pub db_path: PathBuf,
    pub reads: Arc<ReadPool>,
    /// GetX answers, valid per data generation.
    pub records: cache::RecordCache,
    pub hub: Arc<EventHub>,
    store: RwLock<Option<Arc<SnapshotStore>>>,
    pub status: StorageStatus,
    /// Whether the live database is open and consistent (see [`status::DatabaseStatus`]).
    pub database: status::DatabaseStatus,
    pub restoring: AtomicBool,
    /// Set once shutdown has begun: no new restore starts.
    pub shutting_down: AtomicBool,
    /// Snapshots a pending (unresolved) restore journal names: kept until the process ends.
    journal_pins: parking_lot::Mutex<Vec<crate::snapshot::PinGuard>>,
    /// A retention run is queued (runs after snapshots coalesce into one).
    pub retention_scheduled: AtomicBool,
    /// Whether a restore (by its event seq) changed an entity's rows (by subject): entity
    /// histories ask it again and again, and the answer never changes (the restore event and
    /// both snapshots it compares are immutable), while computing it assembles two snapshots.
    pub restore_changed: parking_lot::Mutex<std::collections::HashMap<(u64, String), bool>>,
    pub duckdb_version: String,
    /// Capture ahead as GetStatus reports it (see [`ahead`]).
    pub capture_ahead: Arc<ahead::AheadBoard>,
    /// The replica uploader, when a replica is configured (and the snapshot store opened).
    pub replica: Option<Arc<crate::replica::Replicator>>,
    /// The follower side, when this server follows a primary's replica (read-only).
    pub follower: Option<Arc<follower::Follower>>,
}

impl Shared {
    /// The snapshot store, if it could be opened.
    pub fn store(&self) -> Result<Arc<SnapshotStore>, Error> {
        self.store.read().clone().ok_or_else(|| {
            Error::SnapshotStoreUnavailable(self.status.get().reason.unwrap_or_default())
        })
    }

    pub(crate) fn set_store(&self, store: Arc<SnapshotStore>) {
        *self.store.write() = Some(store);
    }

    /// Keeps snapshots pinned until the process ends (an unresolved restore journal names
    /// them; the next start resolves it).
    pub(crate) fn keep_pins(&self, pins: Vec<crate::snapshot::PinGuard>) {
        self.journal_pins.lock().extend(pins);
    }

    pub fn restore_in_progress(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// Marks a restore in progress until the guard drops.
    pub(crate) fn begin_restore(&self) -> Result<RestoreFlag<'_>, Error> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown {
                what: "no new restore starts".into(),
            });
        }
        self.restoring.store(true, Ordering::Release);
        Ok(RestoreFlag(&self.restoring))
    }
}

/// The "restore in progress" flag, cleared on drop.
pub(crate) struct RestoreFlag<'a>(&'a AtomicBool);

impl Drop for RestoreFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The running application: shared state plus the writer.
#[derive(Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    pub writer: Writer<WriterState>,
}

impl App {
    /// Opens (or creates, with the reference dataset) the database under `config.data_dir`,
    /// recovers from any interrupted restore, opens the snapshot store and starts the writer.
    pub fn open(config: Config) -> Result<App, Error> {
        bootstrap::open(config)
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs a job on the writer for the request `ctx`.
    pub async fn write<T, F>(&self, ctx: &RequestCtx, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> Result<T, Error> + Send + 'static,
    {
        if let Some(f) = &self.shared.follower {
            // The service's own upkeep (the follower's apply included) runs; requests do not.
            if !ctx.rpc.starts_with(RequestCtx::INTERNAL) {
                return Err(Error::ReadOnlyFollower {
                    primary_replica: f.url().to_string(),
                });
            }
        }
        self.writer.run(ctx.deadline, f).await
    }

    /// Shutdown has begun: restores not yet started are refused from now on.
    pub fn begin_shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    /// Stops the writer after the jobs already queued, and closes the database.
    pub fn close(self) {
        let App { shared, writer } = self;
        shared.hub.shut_down();
        if let Some(mut st) = writer.shutdown() {
            st.close();
        }
        if let Some(r) = &shared.replica {
            r.shutdown();
        }
    }
}
