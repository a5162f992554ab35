//! The writer's state and the pipelines every mutation shares: the AIP-155 replay check, one
//! transaction holding the change, its events and its idempotency record, fingerprint upkeep,
//! publication after COMMIT, and snapshot capture between transactions.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use duckdb::{params, Connection};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::status::{SnapshotHealth, SnapshotState};
use super::{Replayable, RequestCtx, Shared};
use crate::config::SnapshotPolicy;
use crate::domain::fingerprint::Fingerprints;
use crate::domain::tables::REQUEST_LOG_TABLE;
use crate::error::Error;
use crate::events::log as event_log;
use crate::events::model::StorageInfo;
use crate::events::{Event, EventDraft, EventKind, Origin};
use crate::snapshot::{Capture, Manifest, NewSnapshot, Operation, SnapshotError};
use crate::storage::changes::Changes;
use crate::storage::inspect::SchemaInventory;
use crate::storage::{self, StorageError};

/// Everything that changes only on the writer thread.
pub struct WriterState {
    pub(crate) conn: Option<Connection>,
    pub(crate) db_path: PathBuf,
    /// Per user table fingerprints of the committed state.
    pub(crate) fps: Fingerprints,
    pub(crate) schema: SchemaInventory,
    /// Seq the next event gets.
    pub(crate) next_seq: u64,
    pub(crate) shared: Arc<Shared>,
}

impl WriterState {
    /// The write connection (absent only mid-restore, when every connection is closed).
    pub fn conn(&self) -> Result<&Connection, Error> {
        self.conn.as_ref().ok_or(Error::RestoreInProgress)
    }

    /// Closes the database (shutdown).
    pub fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.execute_batch("CHECKPOINT");
        }
    }

    /// The stored response of an earlier request with the same idempotency key, if any.
    pub(crate) fn replay<T: DeserializeOwned>(
        &self,
        ctx: &RequestCtx,
    ) -> Result<Option<Replayable<T>>, Error> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT rpc, fingerprint, response FROM {REQUEST_LOG_TABLE} WHERE request_id = ?"
        );
        let row: Option<(String, String, String)> = self
            .conn()?
            .prepare_cached(&sql)
            .and_then(|mut s| {
                let mut rows = s.query([key])?;
                rows.next()?
                    .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .transpose()
            })
            .map_err(StorageError::from)?;
        let Some((rpc, fingerprint, response)) = row else {
            return Ok(None);
        };
        if rpc != ctx.rpc || fingerprint != ctx.request_fingerprint {
            return Err(Error::RequestIdReused { rpc });
        }
        let value = serde_json::from_str(&response)
            .map_err(|e| Error::Internal(format!("stored response for {key}: {e}")))?;
        Ok(Some(Replayable {
            value,
            replayed: true,
        }))
    }

    pub(crate) fn record_response<T: Serialize>(
        &self,
        conn: &Connection,
        ctx: &RequestCtx,
        value: &T,
    ) -> Result<(), Error> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(());
        };
        let response = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        let sql = format!("INSERT INTO {REQUEST_LOG_TABLE} (request_id, rpc, fingerprint, time_us, response) VALUES (?, ?, ?, ?, ?)");
        conn.execute(
            &sql,
            params![
                key,
                ctx.rpc,
                ctx.request_fingerprint,
                Utc::now().timestamp_micros(),
                response
            ],
        )
        .map_err(StorageError::from)?;
        Ok(())
    }

    /// Runs one mutation: replay check, then BEGIN → `body` → its events → idempotency record
    /// → COMMIT → fingerprints → publish. `body` gets the seq its first event will have.
    /// Nothing is published and no state changes unless COMMIT succeeds.
    pub(crate) fn mutate<T, F>(&mut self, ctx: &RequestCtx, body: F) -> Result<Replayable<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Connection, &mut Changes, u64) -> Result<(T, Vec<EventDraft>), Error>,
    {
        if let Some(r) = self.replay(ctx)? {
            return Ok(r);
        }
        let first_seq = self.next_seq;
        let mut changes = Changes::new();
        let events = self.data_transaction(|conn| {
            let (value, drafts) = body(conn, &mut changes, first_seq)?;
            let events = self.stamp(ctx, drafts);
            for e in &events {
                event_log::append(conn, e)?;
            }
            self.record_response(conn, ctx, &value)?;
            Ok((value, events))
        })?;
        let (value, events) = events;
        self.after_commit(&changes, events);
        Ok(Replayable {
            value,
            replayed: false,
        })
    }

    /// A transaction that changes user data, fenced (see [`crate::storage::pool`]) so cached
    /// reads are bypassed from BEGIN until after COMMIT.
    pub(crate) fn data_transaction<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _fence = self.shared.reads.write_fence();
        in_transaction(self.conn()?, f)
    }

    /// Gives drafts their seqs, time and origin.
    pub(crate) fn stamp(&self, ctx: &RequestCtx, drafts: Vec<EventDraft>) -> Vec<Event> {
        let time = Utc::now();
        drafts
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                seq: self.next_seq + i as u64,
                time,
                origin: Origin {
                    request_id: ctx.request_id.clone(),
                    rpc: Some(ctx.rpc.clone()),
                },
                body,
            })
            .collect()
    }

    /// Post-COMMIT bookkeeping: fingerprints, seq, publication, count-based log compaction.
    pub(crate) fn after_commit(&mut self, changes: &Changes, events: Vec<Event>) {
        changes.apply_to(&mut self.fps);
        if let Some(last) = events.last() {
            self.next_seq = last.seq + 1;
        }
        self.shared.hub.publish(events);
        self.compact_if_over();
    }

    /// Keeps the log within `event_retention_keep_last` (+1/8 slack, so the DELETE runs once
    /// per many commits rather than on every one).
    fn compact_if_over(&mut self) {
        let Some(keep) = self.shared.config.event_retention_keep_last else {
            return;
        };
        let head = self.next_seq - 1;
        let retained = (head + 1).saturating_sub(self.shared.hub.first());
        if retained <= keep + (keep / 8).max(1) {
            return;
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        match event_log::compact(conn, Some(keep), None).and_then(|_| event_log::bounds(conn)) {
            Ok(b) => self.shared.hub.set_first(b.first),
            Err(e) => tracing::warn!(error = %e, "event log compaction failed"),
        }
    }

    /// Appends events that describe something outside the database (snapshots, retention,
    /// storage state) in their own transaction.
    pub(crate) fn append_events(
        &mut self,
        ctx: &RequestCtx,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<Event>, Error> {
        let events = self.stamp(ctx, drafts);
        in_transaction(self.conn()?, |conn| {
            for e in &events {
                event_log::append(conn, e)?;
            }
            Ok(())
        })?;
        self.after_commit(&Changes::new(), events.clone());
        Ok(events)
    }

    /// CHECKPOINT + empty-WAL check + read of the file: the only part of a snapshot that needs
    /// the writer. Nothing can commit in between because this thread is the only writer.
    pub(crate) fn capture(&self) -> Result<Capture, SnapshotError> {
        let _timer = crate::metrics::timer(crate::metrics::Op::SnapshotCapture);
        self.checkpoint_for_capture()?.capture(&self.db_path)
    }

    /// CHECKPOINT with an empty WAL after it: from here until the writer's next COMMIT the
    /// database file holds exactly the committed state (see [`crate::snapshot::capture`]).
    /// Returns the store the capture goes to.
    pub(crate) fn checkpoint_for_capture(
        &self,
    ) -> Result<Arc<crate::snapshot::SnapshotStore>, SnapshotError> {
        let store = self.store()?;
        let conn = self
            .conn
            .as_ref()
            .ok_or(SnapshotError::WalNotEmpty("database closed".into()))?;
        storage::checkpoint(conn).map_err(|e| match e {
            StorageError::Db(d) => SnapshotError::Db(d),
            other => SnapshotError::WalNotEmpty(other.to_string()),
        })?;
        Ok(store)
    }

    /// The snapshot store as a snapshot-layer result (a store that never opened is "missing").
    pub(crate) fn store(&self) -> Result<Arc<crate::snapshot::SnapshotStore>, SnapshotError> {
        self.shared.store().map_err(|e| SnapshotError::Storage {
            path: self.shared.config.snapshot_dir(),
            fault: crate::snapshot::StorageFault::Missing,
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Manifest metadata describing the current committed state.
    pub(crate) fn new_snapshot(
        &self,
        operation: Operation,
        description: String,
        ctx: &RequestCtx,
    ) -> NewSnapshot {
        NewSnapshot {
            description,
            operation,
            request_id: ctx.request_id.clone(),
            event_head_seq: self.next_seq - 1,
            duckdb_library_version: self.shared.duckdb_version.clone(),
            fingerprints: self.fps.clone(),
            schema: self.schema.clone(),
            ..Default::default()
        }
    }

    /// Takes a complete snapshot synchronously on the writer (manual and safety snapshots).
    pub(crate) fn snapshot_now(&mut self, meta: NewSnapshot) -> Result<Manifest, Error> {
        let result = self
            .capture()
            .and_then(|c| crate::metrics::commit_snapshot(&self.store()?, c, meta));
        self.note_snapshot_result(result.as_ref().err());
        Ok(result?)
    }

    /// Updates the storage health after a snapshot attempt: a failure degrades (and re-probes),
    /// a success after a failure recovers. Each transition is logged and appended as an event.
    pub(crate) fn note_snapshot_result(&mut self, err: Option<&SnapshotError>) {
        if self.shared.config.snapshot_policy == SnapshotPolicy::Disabled {
            return;
        }
        let next = match err {
            None => SnapshotHealth::enabled(),
            Some(e) if e.storage_fault().is_some() || matches!(e, SnapshotError::Injected(_)) => {
                SnapshotHealth {
                    state: SnapshotState::Degraded,
                    reason: Some(format!("{}: {e}", e.reason())),
                    reason_code: Some(e.reason()),
                }
            }
            // Not a storage problem (e.g. a corrupt capture): health is unchanged.
            Some(_) => return,
        };
        let previous = self.shared.status.set(next.clone());
        if previous.state == next.state {
            return;
        }
        let (kind, info) = match &next.state {
            SnapshotState::Degraded => {
                tracing::error!(reason = ?next.reason, "snapshot storage degraded");
                (
                    EventKind::StorageDegraded,
                    StorageInfo {
                        reason: next.reason_code.unwrap_or_default().to_string(),
                        message: next.reason.clone().unwrap_or_default(),
                    },
                )
            }
            _ => {
                tracing::info!("snapshot storage recovered");
                (
                    EventKind::StorageRecovered,
                    StorageInfo {
                        reason: "SNAPSHOT_STORAGE_OK".into(),
                        message: "snapshot storage is writable again".into(),
                    },
                )
            }
        };
        let mut draft = EventDraft::new(kind, "snapshot_storage", "");
        draft.entity_id = None;
        draft.storage = Some(info);
        let ctx = RequestCtx {
            rpc: "internal/storage-probe".into(),
            ..Default::default()
        };
        if let Err(e) = self.append_events(&ctx, vec![draft]) {
            tracing::error!(error = %e, "could not append storage event");
        }
    }

    /// Probes the snapshot store (start-up, periodically while degraded).
    pub(crate) fn probe_storage(&mut self) {
        let result = match self.shared.store() {
            Ok(store) => store.probe(),
            Err(_) => self.reopen_store(),
        };
        self.note_snapshot_result(result.as_ref().err());
    }

    fn reopen_store(&self) -> Result<(), SnapshotError> {
        let store = crate::snapshot::SnapshotStore::open(&self.shared.config.snapshot_dir())?;
        store.probe()?;
        self.shared.set_store(Arc::new(store));
        Ok(())
    }
}

/// Runs `f` inside BEGIN … COMMIT; any error rolls back.
pub(crate) fn in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(StorageError::from)?;
    match f(conn) {
        Ok(v) => {
            if let Err(e) = conn.execute_batch("COMMIT") {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(StorageError::from(e).into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
