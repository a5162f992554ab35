//! Entity and link mutations: create, update, delete (snapshot first, cascade in one
//! transaction, event with before-image and per-table counts), link create/delete and the bulk
//! MAP product.

use std::sync::Arc;
use std::thread;

use serde::{Deserialize, Serialize};

use super::state::WriterState;
use super::{App, Replayable, RequestCtx};
use crate::config::SnapshotPolicy;
use crate::domain::entity::{EntityDef, KeyType};
use crate::domain::rows::{Datum, Subject};
use crate::domain::validate::validate_draft;
use crate::domain::{Draft, EntityKind, Key, Link, LinkKind, Record};
use crate::error::Error;
use crate::events::model::DeleteInfo;
use crate::events::{log as event_log, EventDraft, EventKind, Resource};
use crate::snapshot::{Manifest, Operation, SnapshotError};
use crate::storage::cascade::{self, RowSet};
use crate::storage::changes::Changes;
use crate::storage::{entities, links, Connection, StorageError};

/// Result of a create or update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub record: Record,
    pub event_seq: u64,
}

/// Result of a link create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkWritten {
    pub link: Link,
    pub event_seq: u64,
}

/// Result of a delete: the row it removed, its pre-delete snapshot (or why none was taken)
/// and every row the cascade removed, per table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub snapshot_id: Option<String>,
    pub snapshot_skipped_reason: Option<String>,
    /// (table, rows) in deletion order.
    pub rows_removed: Vec<(String, i64)>,
    pub row: DeletedRow,
    pub event_seq: u64,
}

/// The row a delete targeted, as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedRow {
    Entity(Record),
    Link(Link),
}

/// Result of a bulk MAP create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkCreated {
    pub created: Vec<Link>,
    pub skipped_existing: Vec<Link>,
    pub first_event_seq: u64,
}

/// What a delete targets.
#[derive(Debug, Clone)]
pub enum DeleteTarget {
    Entity(EntityKind, Key),
    Link(Link),
}

impl DeleteTarget {
    /// The target an event or a manifest names by [`Self::type_name`] and [`Self::id_string`]
    /// (None when they name no entity or link).
    pub fn parse(type_name: &str, id: &str) -> Option<Self> {
        if let Some(kind) = EntityKind::from_name(type_name) {
            let key = match kind.def().key_type {
                KeyType::Int => Key::Int(id.parse().ok()?),
                KeyType::Text => Key::Text(id.to_string()),
            };
            return Some(DeleteTarget::Entity(kind, key));
        }
        let kind = LinkKind::from_table(type_name)?;
        Link::parse_id(kind, id).map(DeleteTarget::Link)
    }

    /// The target's own row as a history subject.
    pub fn subject(&self) -> Subject {
        match self {
            DeleteTarget::Entity(kind, key) => Subject {
                table: kind.def().table,
                key: vec![(kind.def().key, Datum::from(key))],
            },
            DeleteTarget::Link(l) => Subject {
                table: l.kind.table(),
                key: l
                    .kind
                    .columns()
                    .iter()
                    .map(|c| c.name)
                    .zip(l.key.iter().map(Datum::from))
                    .collect(),
            },
        }
    }

    /// Stable type name for events and manifests.
    pub fn type_name(&self) -> &'static str {
        match self {
            DeleteTarget::Entity(k, _) => k.name(),
            DeleteTarget::Link(l) => l.kind.table(),
        }
    }

    pub fn id_string(&self) -> String {
        match self {
            DeleteTarget::Entity(_, k) => k.to_string(),
            DeleteTarget::Link(l) => l.id_string(),
        }
    }

    /// The cascade root: exactly the target's own row.
    pub fn root(&self) -> RowSet {
        match self {
            DeleteTarget::Entity(kind, key) => {
                let def = kind.def();
                let v = match key {
                    Key::Int(i) => crate::domain::Value::Int(i64::from(*i)),
                    Key::Text(s) => crate::domain::Value::Text(s.clone()),
                };
                cascade::root(def.table, &[def.key], vec![v])
            }
            DeleteTarget::Link(l) => links::root(l),
        }
    }

    /// The target's current row, or NotFound.
    pub fn load(&self, conn: &Connection) -> Result<DeletedRow, StorageError> {
        match self {
            DeleteTarget::Entity(kind, key) => entities::get(conn, *kind, key)?
                .map(DeletedRow::Entity)
                .ok_or_else(|| StorageError::NotFound {
                    table: kind.def().table,
                    key: key.to_string(),
                }),
            DeleteTarget::Link(l) if links::link_exists(conn, l)? => {
                Ok(DeletedRow::Link(l.clone()))
            }
            DeleteTarget::Link(l) => Err(StorageError::NotFound {
                table: l.kind.table(),
                key: l.id_string(),
            }),
        }
    }
}

impl App {
    /// Validates and creates an entity; integer ids are assigned inside the transaction.
    pub async fn create_entity(
        &self,
        ctx: RequestCtx,
        mut draft: Draft,
    ) -> Result<Replayable<Written>, Error> {
        validate_draft(&mut draft)?;
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            let def = draft.kind.def();
            let id = match def.key_type {
                KeyType::Int => Some(st.next_id(def)?),
                KeyType::Text => None,
            };
            let out = st.mutate(&c, |conn, changes, seq| {
                create(conn, changes, seq, draft, id)
            })?;
            if let Some(id) = id {
                st.issued_ids.insert(def.table, id);
            }
            Ok(out)
        })
        .await
    }

    /// Updates the fields named in `mask` (column names; empty = all updatable fields; the
    /// measure sets are "measure_type_ids", "stakeholder_ids", "benefit_ids").
    pub async fn update_entity(
        &self,
        ctx: RequestCtx,
        draft: Draft,
        mask: Vec<String>,
    ) -> Result<Replayable<Written>, Error> {
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            st.mutate(&c, |conn, changes, seq| {
                update(conn, changes, seq, draft, &mask)
            })
        })
        .await
    }

    /// Snapshots, then deletes the target and its cascade atomically.
    pub async fn delete(
        &self,
        ctx: RequestCtx,
        target: DeleteTarget,
    ) -> Result<Replayable<Deleted>, Error> {
        let _timer = crate::metrics::timer(crate::metrics::Op::Delete);
        let c = ctx.clone();
        let out = self.write(&ctx, move |st| st.delete(&c, &target)).await?;
        if !out.replayed && out.value.snapshot_id.is_some() {
            self.retention_in_background();
        }
        self.wait_for_replica(out.value.event_seq, out.value.snapshot_id.as_deref())
            .await?;
        Ok(out)
    }

    /// Creates one link after checking what it references.
    pub async fn create_link(
        &self,
        ctx: RequestCtx,
        link: Link,
    ) -> Result<Replayable<LinkWritten>, Error> {
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            st.mutate(&c, |conn, changes, seq| {
                links::create(conn, &link, changes)?;
                let mut ev =
                    EventDraft::new(EventKind::LinkCreated, link.kind.table(), link.id_string());
                ev.after = Some(Resource::Link(link.clone()));
                Ok((
                    LinkWritten {
                        link,
                        event_seq: seq,
                    },
                    vec![ev],
                ))
            })
        })
        .await
    }

    /// Creates the MAP product in one transaction, one event per created link.
    pub async fn bulk_create_map(
        &self,
        ctx: RequestCtx,
        measures: Vec<i32>,
        areas: Vec<i32>,
        priorities: Vec<i32>,
    ) -> Result<Replayable<BulkCreated>, Error> {
        let c = ctx.clone();
        self.write(&ctx, move |st| {
            st.mutate(&c, |conn, changes, seq| {
                let out = links::bulk_map(conn, &measures, &areas, &priorities, changes)?;
                let events = out
                    .created
                    .iter()
                    .map(|l| {
                        let mut ev =
                            EventDraft::new(EventKind::LinkCreated, l.kind.table(), l.id_string());
                        ev.after = Some(Resource::Link(l.clone()));
                        ev.rows.after.push(l.row());
                        ev
                    })
                    .collect::<Vec<_>>();
                let first_event_seq = if events.is_empty() { 0 } else { seq };
                Ok((
                    BulkCreated {
                        created: out.created,
                        skipped_existing: out.skipped_existing,
                        first_event_seq,
                    },
                    events,
                ))
            })
        })
        .await
    }
}

/// Creates the entity; `id` is the integer id it gets (None: its key is text, from the draft).
fn create(
    conn: &Connection,
    changes: &mut Changes,
    seq: u64,
    mut draft: Draft,
    id: Option<i32>,
) -> Result<(Written, Vec<EventDraft>), Error> {
    let def = draft.kind.def();
    let key = match id {
        Some(id) => Key::Int(id),
        None => draft.key.take().ok_or_else(|| {
            Error::from(vec![crate::domain::FieldViolation::new(
                def.key,
                "is required",
            )])
        })?,
    };
    let record = Record {
        kind: draft.kind,
        key,
        values: draft.values,
        sets: draft.sets.map(|s| s.normalised()),
    };
    entities::insert(conn, &record, changes)?;
    let record = reread(conn, &record)?;
    let mut ev = EventDraft::new(EventKind::EntityCreated, def.name, record.key.to_string());
    ev.after = Some(Resource::Entity(record.clone()));
    Ok((
        Written {
            record,
            event_seq: seq,
        },
        vec![ev],
    ))
}

fn reread(conn: &Connection, r: &Record) -> Result<Record, Error> {
    entities::get(conn, r.kind, &r.key)?
        .ok_or_else(|| Error::Internal(format!("{} {} vanished", r.kind.name(), r.key)))
}

/// Column names an update mask may name for `kind` (besides the measure sets).
fn updatable(kind: EntityKind) -> impl Iterator<Item = &'static str> {
    kind.def()
        .columns
        .iter()
        .filter(|c| !c.output_only)
        .map(|c| c.name)
}

pub(crate) const SET_FIELDS: [&str; 3] = ["measure_type_ids", "stakeholder_ids", "benefit_ids"];

fn update(
    conn: &Connection,
    changes: &mut Changes,
    seq: u64,
    draft: Draft,
    mask: &[String],
) -> Result<(Written, Vec<EventDraft>), Error> {
    let kind = draft.kind;
    let def = kind.def();
    let key = draft.key.clone().ok_or_else(|| {
        Error::from(vec![crate::domain::FieldViolation::new(
            def.key,
            "is required",
        )])
    })?;
    let before = entities::get(conn, kind, &key)?.ok_or_else(|| StorageError::NotFound {
        table: def.table,
        key: key.to_string(),
    })?;
    let all: Vec<&str> = updatable(kind)
        .chain(
            if kind == EntityKind::Measure {
                &SET_FIELDS[..]
            } else {
                &[][..]
            }
            .iter()
            .copied(),
        )
        .collect();
    let fields: Vec<&str> = if mask.is_empty() {
        all.clone()
    } else {
        mask.iter().map(String::as_str).collect()
    };
    if let Some(bad) = fields.iter().find(|f| !all.contains(f)) {
        return Err(Error::invalid(
            "update_mask",
            "UNKNOWN_FIELD_IN_MASK",
            format!("`{bad}` is not an updatable field of {}", def.name),
        ));
    }
    let mut merged = Draft {
        kind,
        key: Some(key.clone()),
        values: before.values.clone(),
        sets: before.sets.clone(),
    };
    for f in &fields {
        if let Some(i) = def.column_index(f) {
            merged.values[i] = draft.values[i].clone();
        }
    }
    if kind == EntityKind::Measure {
        let new = draft.sets.clone().unwrap_or_default();
        let sets = merged.sets.get_or_insert_with(Default::default);
        if fields.contains(&"measure_type_ids") {
            sets.measure_type_ids = new.measure_type_ids;
        }
        if fields.contains(&"stakeholder_ids") {
            sets.stakeholder_ids = new.stakeholder_ids;
        }
        if fields.contains(&"benefit_ids") {
            sets.benefit_ids = new.benefit_ids;
        }
    }
    validate_draft(&mut merged)?;
    let record = Record {
        kind,
        key,
        values: merged.values,
        sets: merged.sets.map(|s| s.normalised()),
    };
    entities::update(conn, &record, changes)?;
    let after = reread(conn, &record)?;
    let mut ev = EventDraft::new(EventKind::EntityUpdated, def.name, after.key.to_string());
    ev.before = Some(Resource::Entity(before));
    ev.after = Some(Resource::Entity(after.clone()));
    Ok((
        Written {
            record: after,
            event_seq: seq,
        },
        vec![ev],
    ))
}

impl WriterState {
    /// The id the next entity of `def` gets: never one given before (see `issued_ids`).
    fn next_id(&mut self, def: &'static EntityDef) -> Result<i32, Error> {
        let conn = self.db.conn()?;
        let issued = match self.issued_ids.get(def.table) {
            Some(&id) => id,
            None => {
                let logged = event_log::highest_id(conn, def.name)?;
                self.issued_ids.insert(def.table, logged);
                logged
            }
        };
        Ok(entities::next_id(conn, def, issued)?)
    }

    /// The delete pipeline: the ordinary mutation pipeline plus the pre-delete snapshot hook.
    /// The snapshot is captured first (CHECKPOINT, then a copy of the file that runs on its own
    /// thread while this one runs the cascade in an open transaction); the transaction commits
    /// only once the snapshot is durable (policy `required`) — or with the skip recorded
    /// (`best_effort`). Nothing can commit in between: this is the only writer.
    pub(crate) fn delete(
        &mut self,
        ctx: &RequestCtx,
        target: &DeleteTarget,
    ) -> Result<Replayable<Deleted>, Error> {
        // Before anything uses the write connection, which would cancel it: the capture taken
        // ahead of exactly this state, if there is one.
        let ahead = self.adopt_ahead();
        if let Some(r) = self.replay(ctx)? {
            return Ok(r);
        }
        let mut phases = Phases::start();
        let row = target.load(self.conn()?)?;
        let plan = cascade::plan(target.root());
        phases.mark("load");
        let mut snapshot = self.start_pre_delete_snapshot(ctx, target, ahead)?;
        phases.mark("capture");
        let required = self.shared.config.snapshot_policy == SnapshotPolicy::Required;
        let shared = self.shared.clone();
        let committed = self.commit_change(ctx, |conn, changes, seq| {
            crate::storage::phase_span!("cascade")
                .in_scope(|| cascade::execute(conn, &plan, changes))?;
            phases.mark("cascade");
            let (taken, snapshot_skipped_reason) = crate::storage::phase_span!("snapshot_wait")
                .in_scope(|| snapshot.join(required))?;
            phases.mark("snapshot_wait");
            if let Some(m) = &taken {
                // Replica mode `required`: in the object store before anything commits.
                super::replica::upload_before_commit(&shared, &m.id)?;
                phases.mark("replica_upload");
            }
            if crate::fault::hit("delete.before_commit") {
                return Err(Error::Injected("delete.before_commit"));
            }
            // The pre-delete snapshot is announced like every other, just before the delete
            // that names it, so a subscriber to snapshot events sees every snapshot.
            let mut events: Vec<EventDraft> = taken
                .iter()
                .map(|m| super::snapshots::snapshot_event(EventKind::SnapshotCreated, m))
                .collect();
            let deleted = Deleted {
                snapshot_id: taken.map(|m| m.id.as_str().to_string()),
                snapshot_skipped_reason,
                rows_removed: changes.removed().to_vec(),
                row: row.clone(),
                event_seq: seq + events.len() as u64,
            };
            events.push(delete_event(target, &deleted));
            Ok((deleted.clone(), events))
        });
        phases.mark("commit");
        // The snapshot thread is joined by now in every case; its failure (if any) changes the
        // storage health, announced by an event after the delete's own.
        crate::storage::phase_span!("storage_health")
            .in_scope(|| self.note_snapshot_result(snapshot.failure()));
        phases.mark("publish");
        tracing::debug!(target: "lnrs::delete_phases", entity = target.type_name(), phases = %phases, "delete phases");
        let value = committed?;
        if crate::fault::hit("delete.after_commit") {
            return Err(Error::Injected("delete.after_commit"));
        }
        Ok(Replayable {
            value,
            replayed: false,
        })
    }

    /// Starts the pre-delete snapshot on its own thread: from the capture taken ahead when
    /// there is one (only its manifest is left to write), else CHECKPOINT here and capture
    /// and commit there.
    fn start_pre_delete_snapshot(
        &mut self,
        ctx: &RequestCtx,
        target: &DeleteTarget,
        ahead: Option<super::ahead::Pending>,
    ) -> Result<PreDeleteSnapshot, Error> {
        if self.shared.config.snapshot_policy == SnapshotPolicy::Disabled {
            return Ok(PreDeleteSnapshot::done(Snap::Skipped(
                "snapshots are disabled by policy (snapshot_policy = disabled)".into(),
            )));
        }
        let operation = match target {
            DeleteTarget::Entity(..) => Operation::Delete,
            DeleteTarget::Link(_) => Operation::DeleteLink,
        };
        let mut meta = self.new_snapshot(
            operation,
            format!(
                "Before delete {} {}",
                target.type_name(),
                target.id_string()
            ),
            ctx,
        );
        meta.meta.entity_type = Some(target.type_name().to_string());
        meta.meta.entity_id = Some(target.id_string());
        if let Some(pending) = ahead {
            return self.commit_adopted_alongside(pending, meta);
        }
        let store = match self.checkpoint_for_capture(crate::storage::CHECKPOINT_READ_WAIT) {
            Ok(s) => s,
            Err(e) => return Ok(PreDeleteSnapshot::done(Snap::Failed(e))),
        };
        // The copy runs alongside the cascade: the file stays as checkpointed until this
        // transaction commits, and it commits only after joining the thread.
        let db_path = self.db.path().to_path_buf();
        let request = tracing::Span::current();
        let verify = self
            .shared
            .config
            .snapshot_capture_verify
            .then(|| Arc::clone(&self.shared.capture_ahead));
        let handle = thread::Builder::new()
            .name("lnrs-snapshot-commit".into())
            .spawn(move || {
                let _in_request = request.enter();
                let mut capture =
                    crate::storage::phase_span!("capture").in_scope(|| store.capture(&db_path))?;
                if let Some(board) = verify {
                    capture = super::ahead::verify_refreshed(&store, &db_path, capture, &board)?;
                }
                crate::storage::phase_span!("snapshot_commit")
                    .in_scope(|| super::state::commit_snapshot(&store, capture, meta))
            })
            .map_err(|e| Error::Internal(format!("cannot start snapshot thread: {e}")))?;
        Ok(PreDeleteSnapshot {
            thread: Some(handle),
            outcome: None,
        })
    }
}

impl WriterState {
    /// The snapshot thread of a delete that adopted a capture taken ahead: it joins the capture
    /// (still running, maybe) and writes the manifest while this thread runs the cascade.
    fn commit_adopted_alongside(
        &self,
        pending: super::ahead::Pending,
        meta: crate::snapshot::NewSnapshot,
    ) -> Result<PreDeleteSnapshot, Error> {
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => return Ok(PreDeleteSnapshot::done(Snap::Failed(e))),
        };
        let adopted = self.adopted(&store, pending);
        let board = Arc::clone(&self.shared.capture_ahead);
        let db_path = self.db.path().to_path_buf();
        let request = tracing::Span::current();
        let handle = thread::Builder::new()
            .name("lnrs-snapshot-commit".into())
            .spawn(move || {
                let _in_request = request.enter();
                // The capture was taken ahead: what is left is its manifest.
                crate::storage::phase_span!("snapshot_commit", captured_ahead = true).in_scope(
                    || super::ahead::commit_adopted(&store, &db_path, adopted, meta, &board),
                )
            })
            .map_err(|e| Error::Internal(format!("cannot start snapshot thread: {e}")))?;
        Ok(PreDeleteSnapshot {
            thread: Some(handle),
            outcome: None,
        })
    }
}

/// The event of a committed delete: the removed row and what the delete did.
fn delete_event(target: &DeleteTarget, d: &Deleted) -> EventDraft {
    let kind = match target {
        DeleteTarget::Entity(..) => EventKind::EntityDeleted,
        DeleteTarget::Link(_) => EventKind::LinkDeleted,
    };
    let mut ev = EventDraft::new(kind, target.type_name(), target.id_string());
    ev.before = Some(match &d.row {
        DeletedRow::Entity(r) => Resource::Entity(r.clone()),
        DeletedRow::Link(l) => Resource::Link(l.clone()),
    });
    ev.delete = Some(DeleteInfo {
        snapshot_id: d.snapshot_id.clone(),
        snapshot_skipped_reason: d.snapshot_skipped_reason.clone(),
        rows_removed: d.rows_removed.clone(),
    });
    ev
}

/// Outcome of the pre-delete snapshot.
enum Snap {
    Taken(Box<Manifest>),
    Skipped(String),
    Failed(SnapshotError),
}

type SnapshotThread = thread::JoinHandle<Result<Manifest, SnapshotError>>;

/// The pre-delete snapshot hook: the thread that copies and commits the snapshot, and its
/// outcome once joined. Dropping it joins the thread: it may still be copying the database
/// file, which must not change until it is done.
struct PreDeleteSnapshot {
    thread: Option<SnapshotThread>,
    outcome: Option<Snap>,
}

impl PreDeleteSnapshot {
    fn done(outcome: Snap) -> Self {
        Self {
            thread: None,
            outcome: Some(outcome),
        }
    }

    /// Waits for the snapshot. Returns its id, or why none was taken; under policy `required`
    /// a failure is an error, so the delete's transaction rolls back.
    fn join(&mut self, required: bool) -> Result<(Option<Manifest>, Option<String>), Error> {
        if let Some(e) = self.failure() {
            // Clients get the public message; the log keeps the cause (a DuckDB error's text).
            tracing::error!(error = %e, reason = e.reason(), "the pre-delete snapshot failed");
        }
        match self.outcome() {
            Snap::Taken(m) => Ok((Some((**m).clone()), None)),
            Snap::Skipped(reason) => Ok((None, Some(reason.clone()))),
            Snap::Failed(SnapshotError::Panicked) => Err(Error::Internal(
                "the pre-delete snapshot thread panicked".into(),
            )),
            Snap::Failed(e) if required => Err(Error::SnapshotRequired {
                reason: e.reason(),
                message: e.public_message(),
            }),
            Snap::Failed(e) => Ok((
                None,
                Some(format!("{}: {}", e.reason(), e.public_message())),
            )),
        }
    }

    /// The failure, if the snapshot failed (joins the thread first).
    fn failure(&mut self) -> Option<&SnapshotError> {
        match self.outcome() {
            Snap::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn outcome(&mut self) -> &Snap {
        if let Some(handle) = self.thread.take() {
            self.outcome = Some(match handle.join() {
                Ok(Ok(m)) => Snap::Taken(Box::new(m)),
                Ok(Err(e)) => Snap::Failed(e),
                Err(_) => Snap::Failed(SnapshotError::Panicked),
            });
        }
        self.outcome
            .get_or_insert_with(|| Snap::Failed(SnapshotError::Panicked))
    }
}

impl Drop for PreDeleteSnapshot {
    fn drop(&mut self) {
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// Milliseconds spent in each phase of a delete on the writer, for the debug log.
struct Phases {
    last: std::time::Instant,
    marks: Vec<(&'static str, f64)>,
}

impl Phases {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            marks: Vec::with_capacity(8),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.marks
            .push((phase, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.marks.iter().enumerate() {
            write!(f, "{}{name}={ms:.1}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}
