//! Entity and link mutations: create, update, delete (snapshot first, cascade in one
//! transaction, event with before-image and per-table counts), link create/delete and the bulk
//! MAP product.

use std::thread;

use duckdb::Connection;
use serde::{Deserialize, Serialize};

use super::state::WriterState;
use super::{App, Replayable, RequestCtx};
use crate::config::SnapshotPolicy;
use crate::domain::validate::validate_draft;
use crate::domain::{Draft, EntityKind, Key, Link, Record};
use crate::error::Error;
use crate::events::model::DeleteInfo;
use crate::events::{log as event_log, EventDraft, EventKind, Resource};
use crate::snapshot::{Manifest, Operation, SnapshotError};
use crate::storage::cascade::{self, RowSet};
use crate::storage::changes::Changes;
use crate::storage::{entities, links, StorageError};

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

/// Result of a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub info: DeleteInfo,
    pub before: Resource,
    pub event_seq: u64,
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
    pub fn load(&self, conn: &Connection) -> Result<Resource, StorageError> {
        match self {
            DeleteTarget::Entity(kind, key) => entities::get(conn, *kind, key)?
                .map(Resource::Entity)
                .ok_or_else(|| StorageError::NotFound {
                    table: kind.def().table,
                    key: key.to_string(),
                }),
            DeleteTarget::Link(l) if links::link_exists(conn, l)? => Ok(Resource::Link(l.clone())),
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
            st.mutate(&c, |conn, changes, seq| create(conn, changes, seq, draft))
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
        if !out.replayed && out.value.info.snapshot_id.is_some() {
            self.retention_in_background();
        }
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

fn create(
    conn: &Connection,
    changes: &mut Changes,
    seq: u64,
    mut draft: Draft,
) -> Result<(Written, Vec<EventDraft>), Error> {
    let def = draft.kind.def();
    let key = match def.key_type {
        crate::domain::entity::KeyType::Int => Key::Int(entities::next_id(conn, def)?),
        crate::domain::entity::KeyType::Text => draft.key.take().ok_or_else(|| {
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
    /// The delete pipeline. The snapshot is captured first (CHECKPOINT + read, under this
    /// writer: nothing can commit in between); it is made durable on another thread while this
    /// one runs the cascade in an open transaction, and the transaction commits only once the
    /// snapshot is durable (policy `required`) — or with the skip recorded (`best_effort`).
    pub(crate) fn delete(
        &mut self,
        ctx: &RequestCtx,
        target: &DeleteTarget,
    ) -> Result<Replayable<Deleted>, Error> {
        if let Some(r) = self.replay(ctx)? {
            return Ok(r);
        }
        let mut phases = Phases::start();
        let before = target.load(self.conn()?)?;
        let plan = cascade::plan(target.root());
        phases.mark("load");
        let pending = self.start_pre_delete_snapshot(ctx, target)?;
        phases.mark("capture");
        let seq = self.next_seq;
        let mut changes = Changes::new();
        let mut snapshot_failure = None;
        let outcome = self.data_transaction(|conn| {
            cascade::execute(conn, &plan, &mut changes)?;
            phases.mark("cascade");
            let snap = pending.wait();
            phases.mark("snapshot_wait");
            let info = match snap {
                Snap::Taken(m) => DeleteInfo {
                    snapshot_id: Some(m.id.as_str().to_string()),
                    ..Default::default()
                },
                Snap::Skipped(reason) => DeleteInfo {
                    snapshot_skipped_reason: Some(reason),
                    ..Default::default()
                },
                Snap::Failed(e) => {
                    let reason = format!("{}: {e}", e.reason());
                    let required = self.shared.config.snapshot_policy == SnapshotPolicy::Required;
                    let err = required.then(|| Error::SnapshotRequired {
                        reason: e.reason(),
                        message: e.to_string(),
                    });
                    snapshot_failure = Some(e);
                    if let Some(err) = err {
                        return Err(err);
                    }
                    DeleteInfo {
                        snapshot_skipped_reason: Some(reason),
                        ..Default::default()
                    }
                }
            };
            let info = DeleteInfo {
                rows_removed: changes.removed().to_vec(),
                ..info
            };
            let kind = match target {
                DeleteTarget::Entity(..) => EventKind::EntityDeleted,
                DeleteTarget::Link(_) => EventKind::LinkDeleted,
            };
            let mut ev = EventDraft::new(kind, target.type_name(), target.id_string());
            ev.before = Some(before.clone());
            ev.delete = Some(info.clone());
            let events = self.stamp(ctx, vec![ev]);
            event_log::append(conn, &events[0])?;
            let value = Deleted {
                info,
                before: before.clone(),
                event_seq: seq,
            };
            self.record_response(conn, ctx, &value)?;
            phases.mark("logs");
            Ok((value, events))
        });
        phases.mark("commit");
        // Publish the delete first: a storage event appended after it must get the next seq.
        let committed = outcome.map(|(value, events)| {
            self.after_commit(&changes, events);
            value
        });
        self.note_snapshot_result(snapshot_failure.as_ref());
        phases.mark("publish");
        tracing::debug!(target: "lnrs::delete_phases", entity = target.type_name(), phases = %phases, "delete phases");
        Ok(Replayable {
            value: committed?,
            replayed: false,
        })
    }

    /// Captures under the writer and starts the durable commit on its own thread.
    fn start_pre_delete_snapshot(
        &mut self,
        ctx: &RequestCtx,
        target: &DeleteTarget,
    ) -> Result<Pending, Error> {
        if self.shared.config.snapshot_policy == SnapshotPolicy::Disabled {
            return Ok(Pending::Ready(Snap::Skipped(
                "snapshots are disabled by policy (snapshot_policy = disabled)".into(),
            )));
        }
        let operation = Operation::Delete;
        let mut meta = self.new_snapshot(
            operation,
            format!(
                "Before delete {} {}",
                target.type_name(),
                target.id_string()
            ),
            ctx,
        );
        meta.entity_type = Some(target.type_name().to_string());
        meta.entity_id = Some(target.id_string());
        let checkpointed = {
            let _timer = crate::metrics::timer(crate::metrics::Op::SnapshotCapture);
            self.checkpoint_for_capture()
        };
        let store = match checkpointed {
            Ok(s) => s,
            Err(e) => return Ok(Pending::Ready(Snap::Failed(e))),
        };
        // The copy runs alongside the cascade: the file stays as checkpointed until this
        // transaction commits, and it commits only after joining the thread.
        let db_path = self.db_path.clone();
        let handle = thread::Builder::new()
            .name("lnrs-snapshot-commit".into())
            .spawn(move || {
                let capture = store.capture(&db_path)?;
                crate::metrics::commit_snapshot(&store, capture, meta)
            })
            .map_err(|e| Error::Internal(format!("cannot start snapshot thread: {e}")))?;
        Ok(Pending::Running(Joined(Some(handle))))
    }
}

/// Outcome of the pre-delete snapshot.
enum Snap {
    Taken(Box<Manifest>),
    Skipped(String),
    Failed(SnapshotError),
}

enum Pending {
    Ready(Snap),
    Running(Joined),
}

type SnapshotThread = thread::JoinHandle<Result<Manifest, SnapshotError>>;

/// The snapshot thread, joined even when the delete fails before waiting for it: it may still
/// be copying the database file, which must not change until it is done.
struct Joined(Option<SnapshotThread>);

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Pending {
    fn wait(self) -> Snap {
        match self {
            Pending::Ready(s) => s,
            Pending::Running(mut j) => match j.0.take().map(|h| h.join()) {
                Some(Ok(Ok(m))) => Snap::Taken(Box::new(m)),
                Some(Ok(Err(e))) => Snap::Failed(e),
                Some(Err(_)) | None => {
                    Snap::Failed(SnapshotError::Injected("snapshot commit thread panicked"))
                }
            },
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
