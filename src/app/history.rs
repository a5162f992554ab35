//! What the data was and how it changed: one entity's history from the event log, the data
//! at any point (a snapshot, right after any event, now), and row-by-row diffs between two
//! points.
//!
//! A point after event S is rebuilt from the newest snapshot captured at or before S, moved
//! forward by the row images of the events after it (a completed restore resets it to its
//! target snapshot). Events written before the log kept row images cannot be replayed: such a
//! point is refused, never approximated.

use std::sync::Arc;

use super::entities::DeleteTarget;
use super::snapshots::blocking;
use super::{App, Shared};
use crate::domain::rows::{Subject, TableRows};
use crate::domain::state::{diff, net_states, DataState, RowDiff, TableDiff};
use crate::domain::tables::{user_table, USER_TABLES};
use crate::error::Error;
use crate::events::log::{read_history_candidates, HistoryScan};
use crate::events::model::RestoreInfo;
use crate::events::{log as event_log, Event, EventFilter, EventKind};
use crate::snapshot::{SnapshotError, SnapshotId, SnapshotStore};
use crate::storage::{self, images, Connection};

/// A point in the data's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateRef {
    /// As a snapshot holds it.
    Snapshot(String),
    /// Right after the event with this seq.
    Event(u64),
    /// The live database now.
    Live,
    /// The live database as it was at event head `seq` — how the later pages of a diff that
    /// started against the live database name it, so all pages describe one diff. Refused
    /// (`LiveStateMoved`) when it must be read and has moved on since.
    LiveAt(u64),
}

impl StateRef {
    /// The state pinned to `head` when it is the moving live database, else itself.
    pub fn pinned(self, head: u64) -> StateRef {
        match self {
            StateRef::Live => StateRef::LiveAt(head),
            other => other,
        }
    }
}

/// One page of an entity's history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    /// Continue below this seq; None when the log has nothing older.
    pub next_before: Option<u64>,
}

/// Candidate events read per query while building a history page.
const HISTORY_BATCH: usize = 500;
/// Candidates examined per request at most: a page may come back short (with a token to go
/// on) rather than one request scanning an unbounded log.
const HISTORY_MAX_SCANNED: usize = 20_000;
/// Events replayed per log read while rebuilding a point.
const REPLAY_BATCH: usize = 2_000;
/// Events a diff computes from the log at most; past this, comparing the two states is
/// cheaper than reading and folding the images.
const LOG_DIFF_MAX_EVENTS: u64 = 10_000;
/// Remembered restore-vs-entity answers at most (then forgotten wholesale: a bound, not an LRU).
const RESTORE_CHECK_CACHE: usize = 100_000;

impl App {
    /// The events that changed `entity_type`/`entity_id` — named it, or carry an image of its
    /// row or of a row referencing it (its links and set memberships) — and every completed
    /// restore that changed those rows, newest first, below seq `before` (0: from the
    /// newest).
    pub async fn entity_history(
        &self,
        entity_type: String,
        entity_id: String,
        before: u64,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let subject = history_subject(&entity_type, &entity_id)?;
        let restores = RestoreCheck {
            // Without a store, restores cannot be checked and are all kept.
            store: self.shared.store().ok(),
            shared: self.shared.clone(),
        };
        self.shared
            .reads
            .read(move |conn| {
                let tables = subject.tables();
                let scan = HistoryScan {
                    entity_type: &entity_type,
                    entity_id: &entity_id,
                    tables: &tables,
                    kinds: &[EventKind::RestorePerformed, EventKind::Imported],
                };
                history_page(conn, &restores, &scan, &subject, before, limit)
            })
            .await
    }

    /// The differences from `from` to `to` in `table` (None: every user table).
    pub async fn diff_states(
        &self,
        from: StateRef,
        to: StateRef,
        table: Option<String>,
    ) -> Result<(Vec<TableDiff>, Vec<RowDiff>), Error> {
        let tables: Vec<&'static str> = match &table {
            Some(t) => vec![
                user_table(t)
                    .ok_or_else(|| {
                        Error::invalid(
                            "table",
                            "UNKNOWN_TABLE",
                            format!("`{t}` is not an LNRS table"),
                        )
                    })?
                    .name,
            ],
            None => USER_TABLES.iter().map(|t| t.name).collect(),
        };
        if let Some(d) = self.diff_from_log(&from, &to, &tables).await? {
            return Ok(d);
        }
        let a = self.state_at(&from, &tables).await?;
        let b = if to == from {
            a.clone()
        } else {
            self.state_at(&to, &tables).await?
        };
        Ok(diff(&a, &b, &tables))
    }

    /// The diff computed from the log alone, when both points are on one stretch of it that
    /// every change in between logged complete row images for, with no restore (which would
    /// replace the data wholesale): the net change of those images (see
    /// [`crate::domain::state::net_states`]). Neither state is read, so two adjacent snapshots
    /// diff in milliseconds instead of assembling both. None: compare the whole states.
    async fn diff_from_log(
        &self,
        from: &StateRef,
        to: &StateRef,
        tables: &[&'static str],
    ) -> Result<Option<(Vec<TableDiff>, Vec<RowDiff>)>, Error> {
        let (a, b) = (self.position(from)?, self.position(to)?);
        let (lo, hi) = (a.min(b), a.max(b));
        if hi - lo > LOG_DIFF_MAX_EVENTS {
            return Ok(None);
        }
        let tables = tables.to_vec();
        self.shared
            .reads
            .read(move |conn| {
                let Ok(events) = events_between(conn, lo, hi) else {
                    return Ok(None);
                };
                let complete = events.len() as u64 == hi - lo
                    && events.iter().all(|e| {
                        let b = &e.body;
                        let restored = b.restore.as_ref().is_some_and(|r| !r.rolled_back);
                        !restored && (!b.kind.changes_data() || !b.rows.is_empty())
                    });
                if !complete {
                    return Ok(None);
                }
                let (mut early, mut late) =
                    net_states(events.iter().map(|e| &e.body.rows), &tables);
                // Tables no image names still report their columns, as a full compare does.
                for t in &tables {
                    if !early.tables.contains_key(*t) {
                        let columns = images::columns(conn, t)?;
                        for s in [&mut early, &mut late] {
                            s.tables.entry(t.to_string()).or_default().columns = columns.clone();
                        }
                    }
                }
                Ok(Some(if a <= b {
                    diff(&early, &late, &tables)
                } else {
                    diff(&late, &early, &tables)
                }))
            })
            .await
    }

    /// Where `point` sits in the log: a snapshot's capture head, an event's seq, the head.
    fn position(&self, point: &StateRef) -> Result<u64, Error> {
        Ok(match point {
            StateRef::Live => self.shared.hub.head(),
            StateRef::LiveAt(head) => *head,
            StateRef::Event(seq) => self.checked_seq(*seq)?,
            // From the in-memory catalog: this runs on an async thread, and the state itself
            // (if needed) is read on a blocking one.
            StateRef::Snapshot(id) => {
                let id = SnapshotId::parse(id)?;
                let item = self.shared.store()?.item(&id);
                item.ok_or_else(|| SnapshotError::NotFound(id.to_string()))?
                    .summary
                    .meta
                    .event_head_seq
            }
        })
    }

    /// The newest event's seq: what the live database is at now.
    pub fn event_head(&self) -> u64 {
        self.shared.hub.head()
    }

    /// `seq` when it names an event of the log, else INVALID_ARGUMENT.
    fn checked_seq(&self, seq: u64) -> Result<u64, Error> {
        let head = self.shared.hub.head();
        if seq == 0 || seq > head {
            return Err(Error::invalid(
                "event_seq",
                "EVENT_SEQ_OUT_OF_RANGE",
                format!("event_seq must be between 1 and the log's head ({head})"),
            ));
        }
        Ok(seq)
    }

    /// The data of `tables` at `point`.
    pub async fn state_at(
        &self,
        point: &StateRef,
        tables: &[&'static str],
    ) -> Result<DataState, Error> {
        let tables = tables.to_vec();
        match point {
            StateRef::Live => {
                self.shared
                    .reads
                    .read(move |conn| live_state(conn, &tables))
                    .await
            }
            &StateRef::LiveAt(pinned) => {
                self.shared
                    .reads
                    .read(move |conn| {
                        let head = event_log::bounds(conn)?.head;
                        if head != pinned {
                            return Err(Error::LiveStateMoved { pinned, head });
                        }
                        live_state(conn, &tables)
                    })
                    .await
            }
            StateRef::Snapshot(id) => {
                let id = SnapshotId::parse(id)?;
                let store = self.shared.store()?;
                blocking(move || snapshot_state(&store, &id, &tables)).await
            }
            StateRef::Event(seq) => self.state_after(*seq, tables).await,
        }
    }

    /// The data right after event `seq`; see the module docs.
    async fn state_after(&self, seq: u64, tables: Vec<&'static str>) -> Result<DataState, Error> {
        let seq = self.checked_seq(seq)?;
        let store = self.shared.store()?;
        let base = store.newest_at_or_before(seq).ok_or_else(|| {
            Error::StateNotRebuildable(format!(
                "no snapshot was captured at or before event {seq} to rebuild it from"
            ))
        })?;
        let base_head = base.meta.event_head_seq;
        let events = self
            .shared
            .reads
            .read(move |conn| events_between(conn, base_head, seq))
            .await?;
        blocking(move || {
            let mut state = snapshot_state(&store, &base.id, &tables)?;
            for e in &events {
                replay(&store, &mut state, e, &tables)?;
            }
            Ok(state)
        })
        .await
    }
}

/// The history subject `entity_type`/`entity_id` name, or INVALID_ARGUMENT.
fn history_subject(entity_type: &str, entity_id: &str) -> Result<Subject, Error> {
    let target = DeleteTarget::parse(entity_type, entity_id).ok_or_else(|| {
        if user_table(entity_type).is_none() {
            Error::invalid(
                "entity_type",
                "UNKNOWN_ENTITY_TYPE",
                format!("`{entity_type}` is not an entity type or link table"),
            )
        } else {
            Error::invalid(
                "entity_id",
                "INVALID_ENTITY_ID",
                format!("`{entity_id}` is not a {entity_type} id"),
            )
        }
    })?;
    Ok(target.subject())
}

/// One page of history: candidate events newest first, kept when they really touch the
/// subject (the log query's payload filter is coarse).
fn history_page(
    conn: &Connection,
    restores: &RestoreCheck,
    scan: &HistoryScan<'_>,
    subject: &Subject,
    before: u64,
    limit: usize,
) -> Result<HistoryPage, Error> {
    let mut before = if before == 0 { u64::MAX } else { before };
    let mut events = Vec::new();
    let mut scanned = 0;
    loop {
        let batch = read_history_candidates(conn, before, HISTORY_BATCH, scan)?;
        let exhausted = batch.len() < HISTORY_BATCH;
        for e in batch {
            scanned += 1;
            before = e.seq;
            if touches(&e, scan, subject, restores) {
                events.push(e);
                if events.len() == limit {
                    return Ok(HistoryPage {
                        events,
                        next_before: Some(before),
                    });
                }
            }
        }
        if exhausted {
            return Ok(HistoryPage {
                events,
                next_before: None,
            });
        }
        if scanned >= HISTORY_MAX_SCANNED {
            return Ok(HistoryPage {
                events,
                next_before: Some(before),
            });
        }
    }
}

/// Whether `e` belongs in the subject's history.
fn touches(e: &Event, scan: &HistoryScan<'_>, subject: &Subject, restores: &RestoreCheck) -> bool {
    let b = &e.body;
    let names_it = b.entity_type.as_deref() == Some(scan.entity_type)
        && b.entity_id.as_deref() == Some(scan.entity_id);
    let restore = b.kind.swaps_tables()
        && b.restore
            .as_ref()
            .is_some_and(|r| !r.rolled_back && restores.changed(e.seq, r, subject));
    names_it || restore || subject.seen_in_images(&b.rows)
}

/// Answers whether a completed restore changed a subject's rows.
struct RestoreCheck {
    store: Option<Arc<SnapshotStore>>,
    shared: Arc<Shared>,
}

impl RestoreCheck {
    /// Whether the restore at event `seq` changed the subject's rows: its safety snapshot (the
    /// state it replaced) and its target hold different rows. When either snapshot cannot be
    /// read the restore is kept (it may have); definite answers are remembered.
    fn changed(&self, seq: u64, r: &RestoreInfo, subject: &Subject) -> bool {
        let key = (seq, format!("{}:{:?}", subject.table, subject.key));
        if let Some(&known) = self.shared.restore_changed.lock().get(&key) {
            return known;
        }
        let Some(changed) = self.compare(r, subject) else {
            return true;
        };
        let mut cache = self.shared.restore_changed.lock();
        if cache.len() >= RESTORE_CHECK_CACHE {
            cache.clear();
        }
        cache.insert(key, changed);
        changed
    }

    fn compare(&self, r: &RestoreInfo, subject: &Subject) -> Option<bool> {
        let read = |id: &str| -> Option<Vec<TableRows>> {
            let id = SnapshotId::parse(id).ok()?;
            self.store
                .as_ref()?
                .with_assembled(&id, |path| -> Result<_, Error> {
                    let conn = storage::open_read_only(path)?;
                    subject_rows(&conn, subject)
                })
                .ok()
        };
        Some(read(&r.safety_snapshot_id)? != read(&r.snapshot_id)?)
    }
}

/// The subject's own row and every row referencing it, per table, in key order.
fn subject_rows(conn: &Connection, subject: &Subject) -> Result<Vec<TableRows>, Error> {
    subject
        .selections()
        .into_iter()
        .map(|(table, cols, values)| Ok(images::rows_matching(conn, table, &cols, &values)?))
        .collect()
}

fn live_state(conn: &Connection, tables: &[&str]) -> Result<DataState, Error> {
    Ok(DataState::from_tables(images::read_tables(conn, tables)?))
}

fn snapshot_state(
    store: &SnapshotStore,
    id: &SnapshotId,
    tables: &[&str],
) -> Result<DataState, Error> {
    store.with_assembled(id, |path| {
        let conn = storage::open_read_only(path)?;
        live_state(&conn, tables)
    })
}

/// The events after `after` up to and including `last`, oldest first — all of them, or an
/// error when the log no longer has some.
pub(crate) fn events_between(
    conn: &Connection,
    after: u64,
    last: u64,
) -> Result<Vec<Event>, Error> {
    let bounds = event_log::bounds(conn)?;
    if after + 1 < bounds.first && after < last {
        return Err(Error::StateNotRebuildable(format!(
            "the events after {after} were compacted (the log starts at {}); name a snapshot \
             instead",
            bounds.first
        )));
    }
    let mut out = Vec::new();
    let mut from = after;
    while from < last {
        let batch = event_log::read_after(conn, from, REPLAY_BATCH, &EventFilter::default())?;
        let Some(end) = batch.last().map(|e| e.seq) else {
            break;
        };
        out.extend(batch.into_iter().filter(|e| e.seq <= last));
        from = end;
    }
    Ok(out)
}

/// Moves `state` past one event.
fn replay(
    store: &SnapshotStore,
    state: &mut DataState,
    e: &Event,
    tables: &[&str],
) -> Result<(), Error> {
    let b = &e.body;
    if b.kind.changes_data() {
        if b.rows.is_empty() {
            return Err(Error::StateNotRebuildable(format!(
                "event {} ({}) was logged before the log kept row images",
                e.seq,
                b.kind.as_str()
            )));
        }
        state.apply(&b.rows);
    } else if let Some(r) = b.restore.as_ref().filter(|r| !r.rolled_back) {
        let id = SnapshotId::parse(&r.snapshot_id)?;
        *state = snapshot_state(store, &id, tables).map_err(|err| match err {
            Error::Snapshot(s) => Error::StateNotRebuildable(format!(
                "event {} restored snapshot {}, which cannot be read now ({})",
                e.seq,
                r.snapshot_id,
                s.public_message()
            )),
            other => other,
        })?;
    }
    Ok(())
}
