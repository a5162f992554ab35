//! Undelete (AIP-164): put back exactly the rows one delete removed, as a new change — parents
//! before children, in one transaction, with its own event — so every later change by anyone
//! is kept (a restore would rewind them all).
//!
//! The rows come from the delete event's row images; a delete logged before the log kept
//! images is undone from its pre-delete snapshot instead (the cascade plan run against the
//! snapshot's data: exactly what the delete removed). Before anything is written every row is
//! checked against the live data: its key taken by another row since (`KEY_REUSED`), the same
//! row already back (`ALREADY_PRESENT`), or a row it references gone and not among the rows
//! put back (`PARENT_MISSING`); and the log is checked for an earlier undelete of the same
//! delete (`ALREADY_UNDELETED`: a delete is undone once). Any conflict refuses the whole
//! undelete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::entities::DeleteTarget;
use super::snapshots::blocking;
use super::state::WriterState;
use super::{App, Replayable, RequestCtx};
use crate::domain::rows::{key_of, Conflict, ConflictKind, Datum, TableRows};
use crate::domain::tables::{REFERENCES, USER_TABLES};
use crate::error::Error;
use crate::events::model::UndeleteInfo;
use crate::events::{log as event_log, Event, EventDraft, EventKind};
use crate::snapshot::{SnapshotId, SnapshotStore};
use crate::storage::{self, cascade, images, Connection, StorageError};

/// Which delete to undo.
#[derive(Debug, Clone)]
pub enum UndeleteTarget {
    /// Its event's seq.
    Event(u64),
    /// Its pre-delete snapshot.
    Snapshot(String),
}

/// What an undelete did (or, dry, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Undeleted {
    /// The undelete's event (0 for a dry run).
    pub event_seq: u64,
    /// The rows put back, parents first.
    pub rows: Vec<TableRows>,
    /// Dry run only.
    pub conflicts: Vec<Conflict>,
    pub info: UndeleteInfo,
}

impl App {
    /// Undoes one delete; see the module docs.
    pub async fn undelete(
        &self,
        ctx: RequestCtx,
        target: UndeleteTarget,
        dry_run: bool,
    ) -> Result<Replayable<Undeleted>, Error> {
        if let UndeleteTarget::Snapshot(id) = &target {
            SnapshotId::parse(id)?;
        }
        // What the delete removed is a fact that never changes (its event and snapshot are
        // immutable), so it is read here — the log on a read connection, a snapshot assembled
        // on a blocking thread — and the single writer only checks and inserts. A failure is
        // handed over too: a retry of an undelete that succeeded is replayed whatever happened
        // to the delete's event since.
        let removed = self.removed_rows(target).await;
        let c = ctx.clone();
        self.write(&ctx, move |st| st.undelete(&c, removed, dry_run))
            .await
    }

    /// The rows the named delete removed: from its event's images, else from its pre-delete
    /// snapshot.
    async fn removed_rows(&self, target: UndeleteTarget) -> Result<Removed, Error> {
        let first = self.shared.hub.first();
        let found = self
            .shared
            .reads
            .read(move |conn| -> Result<Found, Error> {
                match target {
                    UndeleteTarget::Event(seq) => match event_log::read_one(conn, seq)? {
                        Some(e) => removed_by_event(e),
                        None if seq < first => Err(Error::UndeleteImpossible(format!(
                            "event {seq} was compacted from the log (it starts at {first}); \
                             name the delete by its pre-delete snapshot id instead"
                        ))),
                        None => Err(StorageError::NotFound {
                            table: "event",
                            key: seq.to_string(),
                        }
                        .into()),
                    },
                    // The delete's event may be compacted away: the snapshot alone still says
                    // what it removed.
                    UndeleteTarget::Snapshot(id) => match event_log::delete_by_snapshot(conn, &id)?
                    {
                        Some(e) => removed_by_event(e),
                        None => Ok(Found::InSnapshot(id, 0)),
                    },
                }
            })
            .await?;
        match found {
            Found::Rows(r) => Ok(r),
            Found::InSnapshot(id, seq) => {
                let store = self.shared.store()?;
                blocking(move || removed_from_snapshot(&store, &id, seq)).await
            }
        }
    }
}

/// Where a delete's rows are: at hand (its event's images), or in its pre-delete snapshot (id,
/// the delete's event seq or 0).
enum Found {
    Rows(Removed),
    InSnapshot(String, u64),
}

/// The rows a delete removed and where they came from.
struct Removed {
    target: DeleteTarget,
    rows: Vec<TableRows>,
    info: UndeleteInfo,
}

impl WriterState {
    fn undelete(
        &mut self,
        ctx: &RequestCtx,
        removed: Result<Removed, Error>,
        dry_run: bool,
    ) -> Result<Replayable<Undeleted>, Error> {
        if !dry_run {
            if let Some(r) = self.replay(ctx)? {
                return Ok(r);
            }
        }
        let removed = removed?;
        let mut conflicts = self.undone_before(&removed)?;
        let rows = parents_first(removed.rows);
        conflicts.extend(conflicts_with_live(self.conn()?, &rows)?);
        if dry_run {
            return Ok(Replayable::fresh(Undeleted {
                event_seq: 0,
                rows,
                conflicts,
                info: removed.info,
            }));
        }
        if !conflicts.is_empty() {
            return Err(Error::UndeleteConflict(conflicts));
        }
        let kind = match &removed.target {
            DeleteTarget::Entity(..) => EventKind::EntityUndeleted,
            DeleteTarget::Link(_) => EventKind::LinkUndeleted,
        };
        let (entity_type, entity_id) = (removed.target.type_name(), removed.target.id_string());
        self.commit_change(ctx, |conn, changes, seq| {
            for t in &rows {
                changes.insert_rows(conn, t)?;
            }
            let mut ev = EventDraft::new(kind, entity_type, entity_id);
            ev.undelete = Some(removed.info.clone());
            Ok((
                Undeleted {
                    event_seq: seq,
                    rows: rows.clone(),
                    conflicts: Vec::new(),
                    info: removed.info.clone(),
                },
                vec![ev],
            ))
        })
        .map(Replayable::fresh)
    }

    /// ALREADY_UNDELETED when the log holds an undelete of this delete: undoing it again would
    /// put back rows someone may have deleted or changed since, so it is a conflict even when
    /// the rows themselves would fit.
    fn undone_before(&self, removed: &Removed) -> Result<Vec<Conflict>, Error> {
        let info = &removed.info;
        let Some(undo) = event_log::undelete_of(
            self.conn()?,
            info.delete_event_seq,
            info.snapshot_id.as_deref(),
        )?
        else {
            return Ok(Vec::new());
        };
        let what = match (info.delete_event_seq, &info.snapshot_id) {
            (0, Some(id)) => format!("the delete before snapshot {id}"),
            (seq, _) => format!("delete {seq}"),
        };
        let subject = removed.target.subject();
        Ok(vec![Conflict {
            table: subject.table.to_string(),
            key: joined(
                &subject
                    .key
                    .iter()
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>(),
            ),
            kind: ConflictKind::AlreadyUndeleted,
            description: format!("{what} was undone by event {undo}"),
        }])
    }
}

fn removed_by_event(e: Event) -> Result<Found, Error> {
    if !matches!(
        e.body.kind,
        EventKind::EntityDeleted | EventKind::LinkDeleted
    ) {
        return Err(Error::invalid(
            "event_seq",
            "NOT_A_DELETE",
            format!(
                "event {} is a {}, not a delete",
                e.seq,
                e.body.kind.as_str()
            ),
        ));
    }
    let snapshot_id = e.body.delete.as_ref().and_then(|d| d.snapshot_id.clone());
    let damaged = e
        .body
        .rows
        .before
        .iter()
        .any(|t| t.columns.is_empty() || t.rows.iter().any(|r| r.len() != t.columns.len()));
    // Damaged images are never guessed at (the writer would insert rows the delete did not
    // remove): the snapshot is read instead, as for a delete logged without images.
    if !damaged && !e.body.rows.before.is_empty() {
        let target = target_of(
            e.body.entity_type.as_deref().unwrap_or_default(),
            e.body.entity_id.as_deref().unwrap_or_default(),
        )?;
        return Ok(Found::Rows(Removed {
            target,
            rows: e.body.rows.before,
            info: UndeleteInfo {
                delete_event_seq: e.seq,
                snapshot_id,
                source: "event".into(),
            },
        }));
    }
    let id = snapshot_id.ok_or_else(|| Error::UndeleteImpossible(format!(
            "delete {} kept no row images and took no snapshot (snapshot policy); it cannot be undone",
            e.seq
        )))?;
    Ok(Found::InSnapshot(id, e.seq))
}

/// What the delete whose pre-delete snapshot is `id` removed: its cascade plan run against
/// the snapshot's data.
fn removed_from_snapshot(
    store: &SnapshotStore,
    id: &str,
    delete_event_seq: u64,
) -> Result<Removed, Error> {
    let sid = SnapshotId::parse(id)?;
    let manifest = store.get(&sid)?;
    let (Some(t), Some(i)) = (&manifest.meta.entity_type, &manifest.meta.entity_id) else {
        return Err(Error::UndeleteImpossible(format!(
            "snapshot {id} was not taken before a delete"
        )));
    };
    let target = target_of(t, i)?;
    let rows = store.with_assembled(&sid, |path| -> Result<Vec<TableRows>, Error> {
        let conn = storage::open_read_only(path)?;
        Ok(cascade::read(&conn, &cascade::plan(target.root()))?)
    })?;
    if rows.iter().all(|t| t.rows.is_empty()) {
        return Err(Error::UndeleteImpossible(format!(
            "snapshot {id} does not hold {} {}",
            target.type_name(),
            target.id_string()
        )));
    }
    Ok(Removed {
        target,
        rows,
        info: UndeleteInfo {
            delete_event_seq,
            snapshot_id: Some(id.to_string()),
            source: "snapshot".into(),
        },
    })
}

/// The delete target an event or a manifest names.
fn target_of(entity_type: &str, entity_id: &str) -> Result<DeleteTarget, Error> {
    DeleteTarget::parse(entity_type, entity_id).ok_or_else(|| {
        Error::UndeleteImpossible(format!(
            "the delete names {entity_type} {entity_id}, which is not an entity or link"
        ))
    })
}

/// The rows in insertion order: tables parents first (the inventory's order).
fn parents_first(mut rows: Vec<TableRows>) -> Vec<TableRows> {
    let rank = |t: &str| {
        USER_TABLES
            .iter()
            .position(|d| d.name == t)
            .unwrap_or(usize::MAX)
    };
    rows.retain(|t| !t.rows.is_empty());
    rows.sort_by_key(|t| rank(&t.table));
    rows
}

/// Every reason the rows cannot be put back into the live database. The live data is read in
/// batches (one statement per table and per reference, see [`images::BATCH_ROWS`]); the
/// conflicts are listed row by row.
fn conflicts_with_live(
    conn: &Connection,
    rows: &[TableRows],
) -> Result<Vec<Conflict>, StorageError> {
    let mut out = Vec::new();
    for t in rows {
        let keys: Vec<Option<Vec<Datum>>> = t
            .rows
            .iter()
            .map(|row| key_of(&t.table, &t.columns, row))
            .collect();
        let wanted: Vec<Vec<Datum>> = keys.iter().flatten().cloned().collect();
        let live = images::rows_by_keys(conn, &t.table, &wanted)?;
        let live_by_key: BTreeMap<Vec<Datum>, &Vec<Datum>> = live
            .rows
            .iter()
            .filter_map(|r| Some((key_of(&t.table, &live.columns, r)?, r)))
            .collect();
        let parents = missing_parents(conn, rows, t)?;
        for ((row, key), missing) in t.rows.iter().zip(&keys).zip(parents) {
            let Some(key) = key else { continue };
            let key_text = joined(key);
            if let Some(live_row) = live_by_key.get(key) {
                let (kind, description) = if same_row(&t.columns, row, &live.columns, live_row) {
                    (ConflictKind::AlreadyPresent, "the row is already there")
                } else {
                    (ConflictKind::KeyReused, "another row has this key now")
                };
                out.push(Conflict {
                    table: t.table.clone(),
                    key: key_text.clone(),
                    kind,
                    description: description.to_string(),
                });
            }
            out.extend(missing.into_iter().map(|(parent, values)| Conflict {
                table: t.table.clone(),
                key: key_text.clone(),
                kind: ConflictKind::ParentMissing,
                description: format!("{parent} {} is gone", joined(&values)),
            }));
        }
    }
    Ok(out)
}

fn joined(values: &[Datum]) -> String {
    values
        .iter()
        .map(Datum::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

/// A referenced parent row: its table and key values.
type ParentRef = (&'static str, Vec<Datum>);

/// For each row of `t`: the referenced parent rows (table, values) that are neither live nor
/// among the rows being put back.
fn missing_parents(
    conn: &Connection,
    rows: &[TableRows],
    t: &TableRows,
) -> Result<Vec<Vec<ParentRef>>, StorageError> {
    let mut out = vec![Vec::new(); t.rows.len()];
    for r in REFERENCES.iter().filter(|r| r.child == t.table) {
        let Some(idx) = r
            .child_cols
            .iter()
            .map(|c| t.columns.iter().position(|x| x == c))
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        // Per row: the values it references, unless NULL or put back with it.
        let refs: Vec<Option<Vec<Datum>>> = t
            .rows
            .iter()
            .map(|row| {
                let values: Vec<Datum> = idx.iter().map(|&i| row[i].clone()).collect();
                let open = !values.contains(&Datum::Null)
                    && !put_back(rows, r.parent, r.parent_cols, &values);
                open.then_some(values)
            })
            .collect();
        let distinct: Vec<Vec<Datum>> = refs
            .iter()
            .flatten()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let live = images::existing(conn, r.parent, r.parent_cols, &distinct)?;
        for (slot, values) in out.iter_mut().zip(refs) {
            if let Some(v) = values.filter(|v| !live.contains(v)) {
                slot.push((r.parent, v));
            }
        }
    }
    Ok(out)
}

/// Whether the rows being put back include a row of `table` whose `columns` are `values`.
fn put_back(rows: &[TableRows], table: &str, columns: &[&str], values: &[Datum]) -> bool {
    let values: Vec<&Datum> = values.iter().collect();
    rows.iter()
        .any(|t| t.table == table && t.has_row(columns, &values))
}

/// Whether the live row equals the image (compared column by column, by name: the image may
/// come from an older schema with the columns in another order).
fn same_row(columns: &[String], row: &[Datum], live_columns: &[String], live: &[Datum]) -> bool {
    let by_name: BTreeMap<&str, &Datum> = live_columns
        .iter()
        .map(String::as_str)
        .zip(live.iter())
        .collect();
    columns
        .iter()
        .zip(row)
        .all(|(c, v)| by_name.get(c.as_str()).is_some_and(|l| *l == v))
}
