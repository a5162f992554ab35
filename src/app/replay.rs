//! Rebuilding a database file from a snapshot plus a stretch of the log: the snapshot is
//! assembled, then each event's row images are applied and the event appended, exactly as the
//! primary committed them. Disaster recovery replays shipped segments with it, and a
//! point-in-time restore replays the local log or the replica's. The replay proves itself:
//! fingerprints after every segment that carries the primary's, and a full scan at the end.

use std::path::Path;

use crate::domain::fingerprint::Fingerprints;
use crate::domain::tables::USER_TABLES;
use crate::error::Error;
use crate::events::{log as event_log, Event};
use crate::replica::segment::{restored_snapshot, Segment};
use crate::replica::ReplicaError;
use crate::snapshot::{Manifest, SnapshotId, SnapshotStore};
use crate::storage;
use crate::storage::changes::Changes;
use crate::storage::inspect::{self, SchemaInventory};

/// What [`rebuild`] made.
#[derive(Debug, Clone)]
pub(crate) struct Rebuilt {
    pub head: u64,
    pub events: u64,
    pub segments: u64,
    pub fingerprints: Fingerprints,
    pub schema: SchemaInventory,
}

/// Assembles the base snapshot into `tmp` (which it creates) and replays `segments` onto it:
/// each event's row images, a restore by swapping in the restored snapshot's tables (which
/// `store` must hold), every event appended to the file's log. Fingerprints are checked after
/// every segment that carries the primary's, and the whole file is scanned at the end.
pub(crate) fn rebuild(
    store: &SnapshotStore,
    base: &Manifest,
    segments: &[Segment],
    tmp: &Path,
) -> Result<Rebuilt, Error> {
    store.assemble(&base.id, tmp)?;
    storage::migrate_file(tmp)?;
    let conn = storage::open(tmp)?;
    let mut fps = base.fingerprints.clone();
    let mut head = base.meta.event_head_seq;
    let mut events = 0;
    for seg in segments {
        for run in runs(&seg.events) {
            storage::in_transaction(&conn, |c| {
                let mut changes = Changes::new();
                apply_run(c, run.data, &mut changes)?;
                changes.apply_to(&mut fps);
                Ok::<_, Error>(())
            })?;
            if let Some(restore) = run.restore {
                fps = replay_restore(store, &conn, restore)?;
            }
        }
        head = seg.last;
        events += seg.events.len() as u64;
        if let Some(expected) = &seg.fingerprints {
            if *expected != fps {
                return Err(ReplicaError::ReplayDiverged(format!(
                    "after event {}: {}",
                    seg.last,
                    describe_difference(expected, &fps)
                ))
                .into());
            }
        }
    }
    let scanned = inspect::user_fingerprints(&conn)?;
    if scanned != fps {
        return Err(ReplicaError::ReplayDiverged(format!(
            "the rebuilt file does not scan as replayed: {}",
            describe_difference(&fps, &scanned)
        ))
        .into());
    }
    let schema = inspect::schema_inventory(&conn)?;
    storage::checkpoint_and_close(conn)?;
    Ok(Rebuilt {
        head,
        events,
        segments: segments.len() as u64,
        fingerprints: fps,
        schema,
    })
}

/// A stretch of events up to a completed restore: the data events before it (applied in one
/// transaction), then the restore (a table swap with the restore's event appended in the swap's
/// own transaction: ATTACH cannot share one, and no reader sees the restore's event next to
/// the data before it).
pub(crate) struct Run<'a> {
    pub data: &'a [Event],
    pub restore: Option<&'a Event>,
}

/// `events` cut at each completed restore.
pub(crate) fn runs(events: &[Event]) -> Vec<Run<'_>> {
    events
        .split_inclusive(|e| restored_snapshot(e).is_some())
        .map(|chunk| match chunk.split_last() {
            Some((last, data)) if restored_snapshot(last).is_some() => Run {
                data,
                restore: Some(last),
            },
            _ => Run {
                data: chunk,
                restore: None,
            },
        })
        .collect()
}

/// Applies `events`' row images and appends them to the log (inside the caller's transaction).
pub(crate) fn apply_run(
    conn: &storage::Connection,
    events: &[Event],
    changes: &mut Changes,
) -> Result<(), Error> {
    for e in events {
        replay_event(conn, e, changes)?;
        event_log::append(conn, e)?;
    }
    Ok(())
}

/// Applies one shipped event's row images: before-images leave (by key), after-images arrive.
pub(crate) fn replay_event(
    conn: &storage::Connection,
    e: &Event,
    changes: &mut Changes,
) -> Result<(), Error> {
    let b = &e.body;
    if !b.kind.changes_data() {
        return Ok(());
    }
    if b.rows.is_empty() {
        return Err(ReplicaError::ReplayDiverged(format!(
            "event {} ({}) was logged without row images and cannot be replayed",
            e.seq,
            b.kind.as_str()
        ))
        .into());
    }
    for t in &b.rows.before {
        let n = changes.delete_rows(conn, t)?;
        if n != t.rows.len() as i64 {
            return Err(ReplicaError::ReplayDiverged(format!(
                "event {}: {} of {} {} rows to remove were there",
                e.seq,
                n,
                t.rows.len(),
                t.table
            ))
            .into());
        }
    }
    for t in &b.rows.after {
        changes.insert_rows(conn, t)?;
    }
    Ok(())
}

/// Replays a restore event: the user tables become the restored snapshot's (which `store`
/// must hold) and the event is appended, in one transaction. Returns the new fingerprints.
pub(crate) fn replay_restore(
    store: &SnapshotStore,
    conn: &storage::Connection,
    restore: &Event,
) -> Result<Fingerprints, Error> {
    let target = restored_snapshot(restore).unwrap_or_default();
    let id = SnapshotId::parse(target)?;
    let tables: Vec<&str> = USER_TABLES.iter().map(|t| t.name).collect();
    store.with_assembled(&id, |file| {
        storage::replace_tables_from(conn, file, &tables, |c| {
            event_log::append(c, restore).map_err(Error::from)
        })
    })?;
    Ok(store.get(&id)?.fingerprints)
}

pub(crate) fn describe_difference(expected: &Fingerprints, actual: &Fingerprints) -> String {
    let tables: std::collections::BTreeSet<&String> =
        expected.keys().chain(actual.keys()).collect();
    let diffs: Vec<String> = tables
        .into_iter()
        .filter(|t| expected.get(*t) != actual.get(*t))
        .map(|t| {
            format!(
                "{t}: expected {}, got {}",
                expected.get(t).map_or("none".into(), |f| f.to_string()),
                actual.get(t).map_or("none".into(), |f| f.to_string())
            )
        })
        .collect();
    diffs.join("; ")
}
