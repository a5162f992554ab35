//! The writer's state and the pipeline every mutation shares: the AIP-155 replay check, one
//! transaction holding the change, its events and its idempotency record, fingerprint upkeep,
//! publication after COMMIT, and snapshot capture between transactions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::status::{SnapshotHealth, SnapshotState};
use super::{Replayable, RequestCtx, Shared};
use crate::config::SnapshotPolicy;
use crate::domain::fingerprint::Fingerprints;
use crate::error::Error;
use crate::events::log as event_log;
use crate::events::model::StorageInfo;
use crate::events::{Event, EventDraft, EventKind, Origin};
use crate::snapshot::{
    Capture, Manifest, NewSnapshot, Operation, SnapshotError, SnapshotMeta, SnapshotStore,
};
use crate::storage::changes::Changes;
use crate::storage::inspect::SchemaInventory;
use crate::storage::requests::{self, Recorded, RequestKey};
use crate::storage::{Connection, LiveDb};

/// Everything that changes only on the writer thread.
pub struct WriterState {
    pub(crate) db: LiveDb,
    /// Per user table fingerprints of the committed state.
    pub(crate) fps: Fingerprints,
    pub(crate) schema: SchemaInventory,
    /// Seq the next event gets.
    pub(crate) next_seq: u64,
    /// Per entity table, the highest integer id ever given out or named by the log (loaded on
    /// the table's first create; cleared by a restore, which changes the tables under it).
    pub(crate) issued_ids: std::collections::HashMap<&'static str, i32>,
    /// The capture taken ahead of the next delete (see [`super::ahead`]).
    pub(crate) ahead: super::ahead::Ahead,
    pub(crate) shared: Arc<Shared>,
}

impl WriterState {
    /// The write connection.
    pub fn conn(&self) -> Result<&Connection, Error> {
        Ok(self.db.conn()?)
    }

    /// Closes the database (shutdown). A capture ahead still running is waited for: it holds
    /// the snapshot store, whose lock the next server on this directory needs.
    pub fn close(&mut self) {
        self.finish_ahead();
        if let Err(e) = self.db.close() {
            tracing::warn!(error = %e, "closing the database");
        }
    }

    /// The stored response of an earlier request with the same idempotency key, if any. A key
    /// reused for another RPC or another request is an error, never a replay.
    pub(crate) fn replay<T: DeserializeOwned>(
        &self,
        ctx: &RequestCtx,
    ) -> Result<Option<Replayable<T>>, Error> {
        let Some(key) = request_key(ctx) else {
            return Ok(None);
        };
        let Some(found) = requests::find(self.conn()?, key)? else {
            return Ok(None);
        };
        if found.rpc != ctx.rpc || found.fingerprint != ctx.request_fingerprint {
            return Err(Error::RequestIdReused { rpc: found.rpc });
        }
        let value = serde_json::from_str(&found.response)
            .map_err(|e| Error::Internal(format!("stored response of a request: {e}")))?;
        Ok(Some(Replayable {
            value,
            replayed: true,
        }))
    }

    /// Records the response to `ctx` (inside the caller's transaction) for AIP-155 replays.
    pub(crate) fn record_response<T: Serialize>(
        &self,
        conn: &Connection,
        ctx: &RequestCtx,
        value: &T,
    ) -> Result<(), Error> {
        let Some(key) = request_key(ctx) else {
            return Ok(());
        };
        let response = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        let recorded = Recorded {
            rpc: ctx.rpc.clone(),
            fingerprint: ctx.request_fingerprint.clone(),
            response,
        };
        requests::record(conn, key, &recorded, Utc::now().timestamp_micros())?;
        Ok(())
    }

    /// Runs one mutation: replay check, then [`commit_change`](Self::commit_change).
    pub(crate) fn mutate<T, F>(&mut self, ctx: &RequestCtx, body: F) -> Result<Replayable<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Connection, &mut Changes, u64) -> Result<(T, Vec<EventDraft>), Error>,
    {
        if let Some(r) = self.replay(ctx)? {
            return Ok(r);
        }
        self.commit_change(ctx, body).map(|value| Replayable {
            value,
            replayed: false,
        })
    }

    /// BEGIN → `body` → its events → idempotency record → COMMIT → fingerprints → publish.
    /// `body` gets the seq its first event will have. The one data event among its drafts
    /// carries the images of every row the change touched (a body that emits several data
    /// events, like the bulk MAP product, sets each one's images itself). Nothing is published
    /// and no state changes unless COMMIT succeeds.
    pub(crate) fn commit_change<T, F>(&mut self, ctx: &RequestCtx, body: F) -> Result<T, Error>
    where
        T: Serialize,
        F: FnOnce(&Connection, &mut Changes, u64) -> Result<(T, Vec<EventDraft>), Error>,
    {
        let first_seq = self.next_seq;
        let mut changes = Changes::new();
        let (value, events) = self.data_transaction(|conn| {
            let (value, mut drafts) = body(conn, &mut changes, first_seq)?;
            let mut data = drafts.iter_mut().filter(|d| d.kind.changes_data());
            if let (Some(only), None) = (data.next(), data.next()) {
                if only.rows.is_empty() {
                    only.rows = changes.take_images();
                }
            }
            let events = self.stamp(ctx, drafts);
            crate::storage::phase_span!("event_append", events = events.len()).in_scope(|| {
                for e in &events {
                    event_log::append(conn, e)?;
                }
                self.record_response(conn, ctx, &value)
            })?;
            Ok((value, events))
        })?;
        crate::storage::phase_span!("publish").in_scope(|| self.after_commit(&changes, events));
        Ok(value)
    }

    /// A transaction that changes user data, fenced (see [`crate::storage::pool`]) so cached
    /// reads are bypassed from BEGIN until after COMMIT.
    pub(crate) fn data_transaction<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _fence = self.shared.reads.write_fence();
        self.db.transaction(f)
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
                    principal: Some(ctx.principal.clone()).filter(|p| !p.is_empty()),
                    peer: ctx.peer.clone(),
                    trace_id: ctx.trace_id.clone(),
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
        self.tell_replica();
        self.compact_if_over();
    }

    /// Tells the replica uploader the new head and the fingerprints right after it.
    pub(crate) fn tell_replica(&self) {
        if let Some(r) = &self.shared.replica {
            r.committed(crate::replica::Tip {
                seq: self.next_seq - 1,
                fingerprints: self.fps.clone(),
            });
        }
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
        if let Err(e) = self.compact_events(Some(keep), None) {
            tracing::warn!(error = %e, "event log compaction failed");
        }
    }

    /// Drops events beyond the retention bounds and tells the hub where the log now starts.
    pub(crate) fn compact_events(
        &mut self,
        keep_last: Option<u64>,
        min_time_us: Option<i64>,
    ) -> Result<u64, Error> {
        let removed = self.db.transaction(|conn| {
            // Events the replica has not confirmed stay (they are still to be shipped).
            let keep_after = self.shared.replica.as_ref().map(|r| r.replicated_seq());
            let removed = event_log::compact(conn, keep_last, min_time_us, keep_after)?;
            if crate::fault::hit("events.before_compact") {
                return Err(Error::Injected("events.before_compact"));
            }
            Ok(removed)
        })?;
        if removed > 0 {
            let b = event_log::bounds(self.conn()?)?;
            self.shared.hub.set_first(b.first);
            tracing::info!(removed, first = b.first, "event log compacted");
        }
        Ok(removed)
    }

    /// Appends events that describe something outside the database (snapshots, retention,
    /// storage state) in their own transaction.
    pub(crate) fn append_events(
        &mut self,
        ctx: &RequestCtx,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<Event>, Error> {
        let events = self.stamp(ctx, drafts);
        self.db.transaction(|conn| {
            for e in &events {
                event_log::append(conn, e)?;
            }
            Ok::<_, Error>(())
        })?;
        self.after_commit(&Changes::new(), events.clone());
        Ok(events)
    }

    /// CHECKPOINT with an empty WAL after it: from here until the writer's next COMMIT the
    /// database file holds exactly the committed state (see [`crate::snapshot::capture`]).
    /// Returns the store the capture goes to. Waits at most `wait` for reads that hold the
    /// CHECKPOINT up (see [`crate::storage::checkpoint_waiting`]).
    pub(crate) fn checkpoint_for_capture(
        &self,
        wait: Duration,
    ) -> Result<Arc<SnapshotStore>, SnapshotError> {
        let store = self.store()?;
        let _timer = crate::metrics::timer(crate::metrics::Op::SnapshotCapture);
        let _span = crate::storage::phase_span!("checkpoint").entered();
        self.db.checkpoint_waiting(wait)?;
        Ok(store)
    }

    /// The snapshot store as a snapshot-layer result (a store that never opened is "missing").
    pub(crate) fn store(&self) -> Result<Arc<SnapshotStore>, SnapshotError> {
        self.shared
            .store()
            .map_err(|_| SnapshotError::StoreUnavailable)
    }

    /// Manifest metadata describing the current committed state.
    pub(crate) fn new_snapshot(
        &self,
        operation: Operation,
        description: String,
        ctx: &RequestCtx,
    ) -> NewSnapshot {
        NewSnapshot {
            meta: SnapshotMeta {
                description,
                operation,
                request_id: ctx.request_id.clone(),
                event_head_seq: self.next_seq - 1,
                duckdb_library_version: self.shared.duckdb_version.clone(),
                ..Default::default()
            },
            fingerprints: self.fps.clone(),
            schema: self.schema.clone(),
        }
    }

    /// Takes a complete snapshot synchronously on the writer (manual and safety snapshots),
    /// from the capture taken ahead when there is one of this state.
    pub(crate) fn snapshot_now(&mut self, meta: NewSnapshot) -> Result<Manifest, Error> {
        let result = match self.adopt_ahead() {
            Some(pending) => self.store().and_then(|store| {
                let prepared = self.adopted(&store, pending);
                super::ahead::commit_adopted(
                    &store,
                    self.db.path(),
                    prepared,
                    meta,
                    &self.shared.capture_ahead,
                )
            }),
            None => self
                .checkpoint_for_capture(crate::storage::CHECKPOINT_READ_WAIT)
                .and_then(|store| {
                    let capture = store.capture(self.db.path())?;
                    commit_snapshot(&store, capture, meta)
                }),
        };
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
                tracing::error!(error = %e, "snapshot storage degraded");
                SnapshotHealth {
                    state: SnapshotState::Degraded,
                    reason: Some(e.public_message()),
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
            SnapshotState::Degraded => (
                EventKind::StorageDegraded,
                StorageInfo {
                    reason: next.reason_code.unwrap_or_default().to_string(),
                    message: next.reason.clone().unwrap_or_default(),
                },
            ),
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
        let ctx = RequestCtx::internal("storage-probe");
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
        let store = super::bootstrap::open_store(&self.shared.config)?;
        store.probe()?;
        self.shared.set_store(store);
        Ok(())
    }
}

/// The request-log key of `ctx`, when it carries an idempotency key.
fn request_key(ctx: &RequestCtx) -> Option<RequestKey<'_>> {
    ctx.idempotency_key.as_deref().map(|request_id| RequestKey {
        principal: &ctx.principal,
        request_id,
    })
}

/// Makes a capture a durable snapshot and records what it cost.
pub(crate) fn commit_snapshot(
    store: &SnapshotStore,
    capture: Capture,
    meta: NewSnapshot,
) -> Result<Manifest, SnapshotError> {
    let (manifest, timings) = store.commit_timed(capture, meta)?;
    crate::metrics::snapshot_committed(timings.total, manifest.file_len, timings.new_bytes);
    Ok(manifest)
}
