//! The durable event log: the `lnrs_event_log` table. Appends happen inside the writer's
//! transaction together with the change they describe; reads page through it by seq.

use duckdb::{params, params_from_iter, Connection, OptionalExt};

use super::model::{Event, EventFilter, EventKind};
use super::EventError;
use crate::domain::tables::{quote_ident, EVENT_LOG_TABLE};

/// Appends one event (inside the caller's transaction).
pub fn append(conn: &Connection, event: &Event) -> Result<(), EventError> {
    append_to(conn, None, event)
}

/// Appends one event to the log of `database` (an attached database), or of the connection's
/// default database.
pub fn append_to(
    conn: &Connection,
    database: Option<&str>,
    event: &Event,
) -> Result<(), EventError> {
    let prefix = database.map_or(String::new(), |d| format!("{}.", quote_ident(d)));
    let sql = format!(
        "INSERT INTO {prefix}{EVENT_LOG_TABLE} (seq, time_us, kind, entity_type, entity_id, request_id, rpc, payload)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    with_row(event, |row| stmt.execute(row).map(drop))
}

/// Appends many events through DuckDB's appender — orders of magnitude faster than one
/// INSERT each, for bulk loads such as benchmark fixtures. Same rows as [`append`]; the
/// caller guarantees the seqs continue the log densely.
pub fn append_bulk(
    conn: &Connection,
    events: impl IntoIterator<Item = Event>,
) -> Result<u64, EventError> {
    let mut app = conn.appender(EVENT_LOG_TABLE)?;
    let mut n = 0;
    for event in events {
        with_row(&event, |row| app.append_row(row))?;
        n += 1;
    }
    // An explicit flush reports a bad row here; the flush on drop would swallow it.
    app.flush()?;
    Ok(n)
}

/// The one column layout of a log row, in table order.
fn with_row(
    event: &Event,
    write: impl FnOnce(&[&dyn duckdb::ToSql]) -> duckdb::Result<()>,
) -> Result<(), EventError> {
    let payload = serde_json::to_string(event)?;
    write(params![
        event.seq as i64,
        event.time.timestamp_micros(),
        event.body.kind.as_str(),
        event.body.entity_type,
        event.body.entity_id,
        event.origin.request_id,
        event.origin.rpc,
        payload,
    ])?;
    Ok(())
}

/// The highest integer id any event names for `entity_type` (ids of deleted entities, and of
/// entities a restore took away, included): ids above it have never been seen.
pub fn highest_id(conn: &Connection, entity_type: &str) -> Result<i32, EventError> {
    let sql = format!(
        "SELECT coalesce(max(TRY_CAST(entity_id AS INTEGER)), 0) FROM {EVENT_LOG_TABLE} WHERE entity_type = ?"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([entity_type], |r| r.get(0))?)
}

/// Rewrites one event's payload (a restore completes its own event after the swap is
/// verified, before anyone is told about it).
pub fn rewrite(conn: &Connection, event: &Event) -> Result<(), EventError> {
    let payload = serde_json::to_string(event)?;
    let sql = format!("UPDATE {EVENT_LOG_TABLE} SET payload = ? WHERE seq = ?");
    conn.execute(&sql, params![payload, event.seq as i64])?;
    Ok(())
}

/// Oldest and newest seq in the log; `(head + 1, head)` when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    pub first: u64,
    pub head: u64,
}

/// Reads the log's bounds.
pub fn bounds(conn: &Connection) -> Result<Bounds, EventError> {
    let sql = format!("SELECT min(seq), max(seq) FROM {EVENT_LOG_TABLE}");
    let (first, head): (Option<i64>, Option<i64>) =
        conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let head = head.unwrap_or(0) as u64;
    Ok(Bounds {
        first: first.map_or(head + 1, |f| f as u64),
        head,
    })
}

/// The event with this seq, if the log still has it.
pub fn read_one(conn: &Connection, seq: u64) -> Result<Option<Event>, EventError> {
    let sql = format!("SELECT payload FROM {EVENT_LOG_TABLE} WHERE seq = ?");
    let payload: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row([seq as i64], |r| r.get(0))
        .optional()?;
    Ok(payload.map(|p| serde_json::from_str(&p)).transpose()?)
}

/// The delete event that names `snapshot_id` as its pre-delete snapshot, if the log still
/// has it.
pub fn delete_by_snapshot(
    conn: &Connection,
    snapshot_id: &str,
) -> Result<Option<Event>, EventError> {
    let sql = format!(
        "SELECT payload FROM {EVENT_LOG_TABLE}
         WHERE kind IN ('entity_deleted', 'link_deleted') AND payload LIKE ?
         ORDER BY seq DESC"
    );
    let pattern = format!("%\"snapshot_id\":\"{snapshot_id}\"%");
    let mut stmt = conn.prepare_cached(&sql)?;
    let payloads = stmt.query_map([pattern], |r| r.get::<_, String>(0))?;
    // LIKE is a coarse filter: the event must really name it.
    for payload in payloads {
        let e: Event = serde_json::from_str(&payload?)?;
        let names_it = e
            .body
            .delete
            .as_ref()
            .and_then(|d| d.snapshot_id.as_deref())
            == Some(snapshot_id);
        if names_it {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The seq of the undelete event that undid the delete at `delete_event_seq` (0: unknown,
/// compacted) whose pre-delete snapshot is `snapshot_id`, if the log holds one.
pub fn undelete_of(
    conn: &Connection,
    delete_event_seq: u64,
    snapshot_id: Option<&str>,
) -> Result<Option<u64>, EventError> {
    let sql = format!(
        "SELECT payload FROM {EVENT_LOG_TABLE}
         WHERE kind IN ('entity_undeleted', 'link_undeleted') AND (payload LIKE ? OR payload LIKE ?)
         ORDER BY seq"
    );
    let by_seq = match delete_event_seq {
        0 => String::new(),
        n => format!("%\"delete_event_seq\":{n}%"),
    };
    let by_snapshot = snapshot_id.map_or(String::new(), |id| format!("%\"snapshot_id\":\"{id}\"%"));
    let mut stmt = conn.prepare_cached(&sql)?;
    let payloads = stmt.query_map([by_seq, by_snapshot], |r| r.get::<_, String>(0))?;
    // LIKE is a coarse filter (seq 1 matches 12): the event must really name it.
    for payload in payloads {
        let e: Event = serde_json::from_str(&payload?)?;
        let Some(u) = e.body.undelete.as_ref() else {
            continue;
        };
        let same_seq = delete_event_seq != 0 && u.delete_event_seq == delete_event_seq;
        let same_snapshot = snapshot_id.is_some() && u.snapshot_id.as_deref() == snapshot_id;
        if same_seq || same_snapshot {
            return Ok(Some(e.seq));
        }
    }
    Ok(None)
}

/// The newest event committed at or before `time_us`, if the log still has one.
pub fn last_at_or_before(conn: &Connection, time_us: i64) -> Result<Option<u64>, EventError> {
    let sql = format!("SELECT max(seq) FROM {EVENT_LOG_TABLE} WHERE time_us <= ?");
    let seq: Option<i64> = conn
        .prepare_cached(&sql)?
        .query_row([time_us], |r| r.get(0))?;
    Ok(seq.map(|s| s as u64))
}

/// Up to `limit` events with seq > `after` matching `filter`, oldest first.
pub fn read_after(
    conn: &Connection,
    after: u64,
    limit: usize,
    filter: &EventFilter,
) -> Result<Vec<Event>, EventError> {
    let mut sql = format!("SELECT payload FROM {EVENT_LOG_TABLE} WHERE seq > ?");
    let mut args: Vec<String> = Vec::new();
    if !filter.kinds.is_empty() {
        sql += &format!(
            " AND kind IN ({})",
            vec!["?"; filter.kinds.len()].join(", ")
        );
        args.extend(filter.kinds.iter().map(|k| k.as_str().to_string()));
    }
    if !filter.entity_types.is_empty() {
        sql += &format!(
            " AND entity_type IN ({})",
            vec!["?"; filter.entity_types.len()].join(", ")
        );
        args.extend(filter.entity_types.iter().cloned());
    }
    sql += &format!(" ORDER BY seq LIMIT {limit}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let after = after as i64;
    let params = std::iter::once(&after as &dyn duckdb::ToSql)
        .chain(args.iter().map(|a| a as &dyn duckdb::ToSql));
    let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
    let mut out = Vec::with_capacity(limit.min(1024));
    for payload in rows {
        out.push(serde_json::from_str(&payload?)?);
    }
    Ok(out)
}

/// What a per-entity history reads from the log: events naming the entity, events whose row
/// images include one of `tables` (a coarse filter on the payload; the caller checks the rows),
/// and events of `kinds` (restores, which may change any row).
#[derive(Debug, Clone)]
pub struct HistoryScan<'a> {
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub tables: &'a [&'static str],
    pub kinds: &'a [EventKind],
}

/// Up to `limit` candidate events of `scan` with seq < `before`, newest first.
pub fn read_history_candidates(
    conn: &Connection,
    before: u64,
    limit: usize,
    scan: &HistoryScan<'_>,
) -> Result<Vec<Event>, EventError> {
    let mut conds = vec!["(entity_type = ? AND entity_id = ?)".to_string()];
    let mut args: Vec<String> = vec![scan.entity_type.to_string(), scan.entity_id.to_string()];
    for t in scan.tables {
        // serde_json writes a TableRows as {"table":"<name>",…}: an exact, compact spelling.
        conds.push("payload LIKE ?".into());
        args.push(format!("%\"table\":\"{t}\"%"));
    }
    for k in scan.kinds {
        conds.push("kind = ?".into());
        args.push(k.as_str().to_string());
    }
    let sql = format!(
        "SELECT payload FROM {EVENT_LOG_TABLE} WHERE seq < ? AND ({}) ORDER BY seq DESC LIMIT {limit}",
        conds.join(" OR ")
    );
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let params = std::iter::once(&before as &dyn duckdb::ToSql)
        .chain(args.iter().map(|a| a as &dyn duckdb::ToSql));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for payload in rows {
        out.push(serde_json::from_str(&payload?)?);
    }
    Ok(out)
}

/// Drops events beyond the retention bounds: keep at most `keep_last` newest events and none
/// older than `min_time_us`. The newest event is always kept so the head survives restarts.
/// Never removes events after `keep_after` (those a replica has not confirmed yet).
pub fn compact(
    conn: &Connection,
    keep_last: Option<u64>,
    min_time_us: Option<i64>,
    keep_after: Option<u64>,
) -> Result<u64, EventError> {
    let b = bounds(conn)?;
    if b.head == 0 {
        return Ok(0);
    }
    let mut cut = 0u64; // delete seq < cut
    if let Some(k) = keep_last {
        cut = cut.max((b.head + 1).saturating_sub(k.max(1)));
    }
    if let Some(t) = min_time_us {
        let sql = format!("SELECT max(seq) FROM {EVENT_LOG_TABLE} WHERE time_us < ?");
        let old: Option<i64> = conn.query_row(&sql, [t], |r| r.get(0))?;
        if let Some(o) = old {
            cut = cut.max(o as u64 + 1);
        }
    }
    let cut = cut.min(b.head).min(keep_after.map_or(u64::MAX, |k| k + 1));
    if cut <= b.first {
        return Ok(0);
    }
    let sql = format!("DELETE FROM {EVENT_LOG_TABLE} WHERE seq < ?");
    Ok(conn.execute(&sql, [cut as i64])? as u64)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::events::{EventDraft, EventKind, Origin};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            // Whole microseconds: the row keeps microseconds, the payload the exact time.
            time: Utc
                .timestamp_micros(1_764_000_000_000_000 + seq as i64)
                .unwrap(),
            origin: Origin {
                request_id: Some(format!("req-{seq}")),
                rpc: Some("/lnrs.v1.EntityService/DeleteHabitat".into()),
                principal: Some("editor-1".into()),
                peer: Some("127.0.0.1:5000".into()),
                trace_id: Some(format!("{seq:032x}")),
            },
            body: EventDraft::new(EventKind::EntityDeleted, "habitat", seq.to_string()),
        }
    }

    #[test]
    fn bulk_appends_read_back_exactly_like_single_appends() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::storage::open(&dir.path().join("log.duckdb")).unwrap();
        crate::storage::schema::migrate(&conn).unwrap();
        let head = bounds(&conn).unwrap().head;
        let events: Vec<Event> = (head + 1..=head + 6).map(event).collect();
        for e in &events[..2] {
            append(&conn, e).unwrap();
        }
        assert_eq!(append_bulk(&conn, events[2..].iter().cloned()).unwrap(), 4);

        assert_eq!(
            read_after(&conn, head, 100, &EventFilter::default()).unwrap(),
            events
        );
        assert_eq!(bounds(&conn).unwrap().head, head + 6);
        let filtered = EventFilter {
            entity_types: ["habitat".to_string()].into(),
            ..Default::default()
        };
        let sql = format!("SELECT count(*) FROM {EVENT_LOG_TABLE} WHERE entity_type = 'habitat' AND request_id LIKE 'req-%'");
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
        assert_eq!(n, 6, "the indexed columns are filled by both paths");
        assert_eq!(read_after(&conn, head, 100, &filtered).unwrap().len(), 6);
    }
}
