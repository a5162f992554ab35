//! Snapshot use cases: manual snapshots, listing, inspection, preview without restoring,
//! verification, users' pins, labels and descriptions, deletion, retention (explicit and
//! automatic after each snapshot) and status.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::status::SnapshotHealth;
use super::{App, Replayable, RequestCtx};
use crate::config::SnapshotPolicy;
use crate::domain::tables::user_table;
use crate::error::Error;
use crate::events::model::{RetentionInfo, SnapshotInfo};
use crate::events::{EventDraft, EventKind};
use crate::snapshot::retention::RetentionPolicy;
use crate::snapshot::{
    AnnotationUpdate, IntegrityReport, ListFilter, ListItem, ListPage, Manifest, Operation,
    RetentionOutcome, SnapshotId, SnapshotSummary,
};
use crate::storage;

/// Result of a manual snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotCreated {
    pub snapshot_id: String,
    pub event_seq: u64,
}

/// Result of a snapshot update (pin, labels, description).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotUpdated {
    pub snapshot_id: String,
    pub event_seq: u64,
}

/// Result of a snapshot delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotDeleted {
    pub bytes_freed: u64,
    pub event_seq: u64,
}

/// A preview of a snapshot's contents.
#[derive(Debug, Clone)]
pub struct Preview {
    pub table_rows: Vec<(String, i64)>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<PreviewCell>>,
}

/// One preview value: blobs are reported by size only.
pub use crate::storage::inspect::Cell as PreviewCell;

/// Everything GetStatus reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub health: SnapshotHealth,
    pub policy: SnapshotPolicy,
    pub stats: crate::snapshot::StoreStats,
    pub duckdb_version: String,
    pub storage_version: u64,
    pub event_head: u64,
    pub event_first: u64,
    pub restore_in_progress: bool,
    pub database_bytes: u64,
    /// Why the database is unavailable, if it is (see [`super::DatabaseStatus`]).
    pub database_unavailable: Option<String>,
    /// Rows per user table of the live database (empty while a restore runs or if unreadable).
    pub table_rows: Vec<(String, i64)>,
}

/// Largest preview page.
pub const MAX_PREVIEW_ROWS: usize = 500;

impl App {
    /// Takes a manual snapshot now, then appends its event.
    pub async fn create_snapshot(
        &self,
        ctx: RequestCtx,
        description: String,
        labels: BTreeMap<String, String>,
    ) -> Result<Replayable<SnapshotCreated>, Error> {
        let c = ctx.clone();
        let out = self
            .write(&ctx, move |st| {
                if let Some(r) = st.replay(&c)? {
                    return Ok(r);
                }
                st.manual_snapshot(&c, description, labels)
                    .map(Replayable::fresh)
            })
            .await?;
        if !out.replayed {
            self.retention_in_background();
        }
        Ok(out)
    }

    /// A manual snapshot taken only if the store holds none (decided on the writer, where
    /// every snapshot of this server is taken, so none can appear in between). `None`: there
    /// was one.
    pub(crate) async fn create_first_snapshot(
        &self,
        ctx: RequestCtx,
        description: String,
    ) -> Result<Option<SnapshotCreated>, Error> {
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            if !st.store()?.ids().is_empty() {
                return Ok(None);
            }
            st.manual_snapshot(&c, description, BTreeMap::new())
                .map(Some)
        })
        .await
    }

    /// Lists snapshots (newest first) from the catalog.
    pub async fn list_snapshots(&self, filter: ListFilter) -> Result<ListPage, Error> {
        let store = self.shared.store()?;
        tokio::task::spawn_blocking(move || store.list(&filter))
            .await
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// One snapshot's manifest.
    pub async fn get_snapshot(&self, id: &str) -> Result<Manifest, Error> {
        let id = SnapshotId::parse(id)?;
        let store = self.shared.store()?;
        blocking(move || Ok(store.get(&id)?)).await
    }

    /// A snapshot as listed: sizes, pins, and the user's labels and description.
    pub async fn snapshot_listing(&self, id: &str) -> Result<Option<ListItem>, Error> {
        let id = SnapshotId::parse(id)?;
        let store = self.shared.store()?;
        blocking(move || Ok(store.item(&id))).await
    }

    /// Pins or unpins a snapshot, or replaces its labels or description, then appends its
    /// event. The change is durable in the store before the event is written.
    pub async fn update_snapshot(
        &self,
        ctx: RequestCtx,
        id: &str,
        update: AnnotationUpdate,
    ) -> Result<Replayable<SnapshotUpdated>, Error> {
        let id = SnapshotId::parse(id)?;
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            if let Some(r) = st.replay(&c)? {
                return Ok(r);
            }
            // Refuse before changing anything if the change could not be recorded.
            st.conn()?;
            let item = st.shared.store()?.annotate(&id, update)?;
            st.commit_change(&c, |_, _, seq| {
                Ok((
                    SnapshotUpdated {
                        snapshot_id: id.as_str().into(),
                        event_seq: seq,
                    },
                    vec![summary_event(EventKind::SnapshotUpdated, &item.summary)],
                ))
            })
            .map(Replayable::fresh)
        })
        .await
    }

    /// Verifies a snapshot, quick or deep.
    pub async fn verify_snapshot(&self, id: &str, deep: bool) -> Result<IntegrityReport, Error> {
        let _timer = crate::metrics::timer(crate::metrics::Op::verify(deep));
        let id = SnapshotId::parse(id)?;
        let store = self.shared.store()?;
        blocking(move || {
            Ok(if deep {
                store.verify_deep(&id)?
            } else {
                store.verify_quick(&id)?
            })
        })
        .await
    }

    /// Row counts of every user table and the first `limit` rows of `table`, read from an
    /// assembled read-only copy of the snapshot (the live database is not touched).
    pub async fn preview_snapshot(
        &self,
        id: &str,
        table: Option<String>,
        limit: usize,
    ) -> Result<Preview, Error> {
        let id = SnapshotId::parse(id)?;
        if let Some(t) = &table {
            if user_table(t).is_none() {
                return Err(Error::invalid(
                    "table",
                    "UNKNOWN_TABLE",
                    format!("`{t}` is not an LNRS table"),
                ));
            }
        }
        let store = self.shared.store()?;
        blocking(move || {
            store.with_assembled(&id, |path| {
                let conn = storage::open_read_only(path)?;
                let table_rows = storage::inspect::row_counts(&conn)?;
                let limit = limit.min(MAX_PREVIEW_ROWS);
                let first = match &table {
                    Some(t) => storage::inspect::first_rows(&conn, t, limit)?,
                    None => None,
                };
                // An older snapshot may predate a table: no columns, not an error.
                let (columns, rows) = first.unwrap_or_default();
                Ok(Preview {
                    table_rows,
                    columns,
                    rows,
                })
            })
        })
        .await
    }

    /// Deletes one snapshot and frees blocks no other snapshot uses. A snapshot a user pinned
    /// needs `force`; one a restore holds is never deleted.
    pub async fn delete_snapshot(
        &self,
        ctx: RequestCtx,
        id: &str,
        force: bool,
    ) -> Result<Replayable<SnapshotDeleted>, Error> {
        let id = SnapshotId::parse(id)?;
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            if let Some(r) = st.replay(&c)? {
                return Ok(r);
            }
            // Refuse before forgetting anything if the deletion could not be recorded.
            st.conn()?;
            let store = st.shared.store()?;
            let m = store.get(&id)?;
            // As users saw it: the event names the description they gave it.
            let shown = store
                .item(&id)
                .map_or_else(|| SnapshotSummary::of(&m), |i| i.summary);
            if force {
                store.forget_pinned(&id)?;
            } else {
                store.forget(&id)?;
            }
            let gc = store.gc()?;
            st.commit_change(&c, |_, _, seq| {
                Ok((
                    SnapshotDeleted {
                        bytes_freed: gc.bytes_freed,
                        event_seq: seq,
                    },
                    vec![summary_event(EventKind::SnapshotDeleted, &shown)],
                ))
            })
            .map(Replayable::fresh)
        })
        .await
    }

    /// Applies a retention policy (the configured one where fields are `None`).
    pub async fn apply_retention(
        &self,
        ctx: RequestCtx,
        keep_last: Option<usize>,
        keep_within: Option<std::time::Duration>,
        dry_run: bool,
    ) -> Result<(RetentionOutcome, u64), Error> {
        let policy = RetentionPolicy {
            keep_last: keep_last.unwrap_or(self.config().retention_keep_last),
            keep_within: keep_within.or(self.config().retention_keep_within),
        };
        policy
            .check()
            .map_err(|why| Error::invalid("keep_within", "INVALID_DURATION", why))?;
        // Nothing is removed that the event log could not record (and an unresolved restore
        // journal may need any snapshot): a closed database refuses before the store is touched.
        if let Some(why) = self.shared.database.unavailable() {
            return Err(Error::DatabaseUnavailable(why));
        }
        // The store work runs off the writer (forget and GC are safe alongside commits and
        // respect restore pins); only the event needs the writer.
        let shared = self.shared.clone();
        let outcome = blocking(move || {
            let _timer = crate::metrics::timer(crate::metrics::Op::Retention);
            Ok(shared.store()?.apply_retention(&policy, dry_run)?)
        })
        .await?;
        if dry_run || outcome.removed.is_empty() {
            return Ok((outcome, 0));
        }
        let c = ctx.clone();
        self.write(&ctx, move |st| st.retention_applied(&c, outcome))
            .await
    }

    /// Runs the configured retention after a snapshot, without making the caller wait;
    /// concurrent requests coalesce into one run.
    pub(crate) fn retention_in_background(&self) {
        if self.shared.retention_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let app = self.clone();
        tokio::spawn(async move {
            app.shared
                .retention_scheduled
                .store(false, Ordering::Release);
            let ctx = RequestCtx::internal("retention");
            if let Err(e) = app.apply_retention(ctx, None, None, false).await {
                tracing::warn!(error = %e, "automatic retention failed");
            }
        });
    }

    /// Status of the snapshot subsystem, and the live database's row counts.
    pub async fn status(&self) -> Result<Status, Error> {
        let shared = self.shared.clone();
        let mut status = blocking(move || {
            let (stats, storage_version) = match shared.store() {
                Ok(s) => (s.stats(), s.engine_storage_version().unwrap_or(0)),
                Err(_) => (Default::default(), 0),
            };
            let database_bytes = std::fs::metadata(&shared.db_path)
                .map(|m| m.len())
                .unwrap_or(0);
            Ok(Status {
                health: shared.status.get(),
                policy: shared.config.snapshot_policy,
                stats,
                duckdb_version: shared.duckdb_version.clone(),
                storage_version,
                event_head: shared.hub.head(),
                event_first: shared.hub.first(),
                restore_in_progress: shared.restore_in_progress(),
                database_bytes,
                database_unavailable: shared.database.unavailable(),
                table_rows: Vec::new(),
            })
        })
        .await?;
        // A restore may close the read pool for its swap: status must not wait for it.
        if !status.restore_in_progress {
            if let Some((head, rows)) = self.live_head_and_rows().await {
                // The hub learns of events only after their COMMIT, so a read that ran just
                // before this call may have seen data the hub's head does not cover yet. The log
                // is committed with the data: its head is never behind what a client saw.
                status.event_head = status.event_head.max(head);
                status.table_rows = rows;
            }
        }
        Ok(status)
    }

    /// The live database's event-log head and row counts, from the read pool; none if it cannot
    /// be read (status is a diagnostic: it still answers).
    async fn live_head_and_rows(&self) -> Option<(u64, Vec<(String, i64)>)> {
        let read = self
            .shared
            .reads
            .read(|conn| {
                let head = crate::events::log::bounds(conn)?.head;
                Ok::<_, Error>((head, storage::inspect::row_counts(conn)?))
            })
            .await;
        read.map_err(|e| tracing::warn!(error = %e, "status: cannot read the live database"))
            .ok()
    }
}

impl super::WriterState {
    /// A manual snapshot of the current state and its event.
    fn manual_snapshot(
        &mut self,
        ctx: &RequestCtx,
        description: String,
        labels: BTreeMap<String, String>,
    ) -> Result<SnapshotCreated, Error> {
        let mut meta = self.new_snapshot(Operation::Manual, description, ctx);
        meta.meta.labels = labels;
        let m = self.snapshot_now(meta)?;
        self.commit_change(ctx, |_, _, seq| {
            let ev = snapshot_event(EventKind::SnapshotCreated, &m);
            Ok((
                SnapshotCreated {
                    snapshot_id: m.id.as_str().into(),
                    event_seq: seq,
                },
                vec![ev],
            ))
        })
    }

    /// The event for a retention run that removed snapshots.
    pub(crate) fn retention_applied(
        &mut self,
        ctx: &RequestCtx,
        outcome: RetentionOutcome,
    ) -> Result<(RetentionOutcome, u64), Error> {
        crate::metrics::retention_freed(outcome.gc.as_ref().map_or(0, |g| g.bytes_freed));
        let mut ev = EventDraft::new(EventKind::RetentionApplied, "snapshot", "");
        ev.entity_id = None;
        ev.retention = Some(RetentionInfo {
            removed_snapshot_ids: outcome
                .removed
                .iter()
                .map(|d| d.id.as_str().to_string())
                .collect(),
            bytes_freed: outcome.gc.as_ref().map_or(0, |g| g.bytes_freed),
        });
        let events = self.append_events(ctx, vec![ev])?;
        Ok((outcome, events.first().map_or(0, |e| e.seq)))
    }
}

/// The event announcing a snapshot just taken.
pub(crate) fn snapshot_event(kind: EventKind, m: &Manifest) -> EventDraft {
    summary_event(kind, &SnapshotSummary::of(m))
}

/// The event announcing a snapshot created, updated or deleted.
fn summary_event(kind: EventKind, s: &SnapshotSummary) -> EventDraft {
    let mut ev = EventDraft::new(kind, "snapshot", s.id.as_str());
    ev.snapshot = Some(SnapshotInfo {
        snapshot_id: s.id.as_str().into(),
        operation: s.meta.operation.as_str().into(),
        description: s.meta.description.clone(),
    });
    ev
}

/// Runs blocking work (snapshot store I/O, DuckDB) off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Between a COMMIT and the hub's publication a client can already read the new data; the
    /// head that status reports must cover it, or a client sampling (head, data, head) sees
    /// data that no reported head had.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_head_covers_data_committed_but_not_yet_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.load_reference_data = false;
        let app = blocking(move || App::open(cfg)).await.unwrap();
        let published = app.status().await.unwrap().event_head;
        let ctx = RequestCtx::internal("test");
        let inner = ctx.clone();
        let committed = app
            .write(&ctx, move |st| {
                let draft = EventDraft::new(EventKind::EntityCreated, "habitat", "h-1");
                let events = st.stamp(&inner, vec![draft]);
                // Committed, not published: the window `after_commit` closes.
                st.data_transaction(|c| Ok(crate::events::log::append(c, &events[0])?))?;
                Ok(events[0].seq)
            })
            .await
            .unwrap();
        assert!(committed > published);
        assert_eq!(app.shared.hub.head(), published, "the hub was not told");
        assert_eq!(app.status().await.unwrap().event_head, committed);
        app.close();
    }
}
