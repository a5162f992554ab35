//! Entity queries, generic over the domain's entity definitions: get, keyset-paginated list with
//! search and ordering, insert with in-transaction id assignment, masked update, measure sets.

use std::collections::HashMap;

use duckdb::{params_from_iter, Connection, Row, ToSql};

use super::changes::Changes;
use super::StorageError;
use crate::domain::entity::{ColumnType, EntityDef, KeyType};
use crate::domain::rows::Datum;
use crate::domain::tables::quote_ident;
use crate::domain::{EntityKind, Key, MeasureSets, Record, Value};

/// The measure set tables: (table, column, lookup table).
pub const MEASURE_SETS: [(&str, &str, &str); 3] = [
    ("measure_has_type", "measure_type_id", "measure_type"),
    ("measure_has_stakeholder", "stakeholder_id", "stakeholder"),
    ("measure_has_benefits", "benefit_id", "benefits"),
];

fn select_list(def: &EntityDef) -> String {
    std::iter::once(def.key)
        .chain(def.columns.iter().map(|c| c.name))
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_record(def: &EntityDef, row: &Row<'_>) -> duckdb::Result<Record> {
    let key = match def.key_type {
        KeyType::Int => Key::Int(row.get(0)?),
        KeyType::Text => Key::Text(row.get(0)?),
    };
    let values = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.ty {
                ColumnType::Text => Value::from(row.get::<_, Option<String>>(i + 1)?),
                ColumnType::BigInt => Value::from(row.get::<_, Option<i64>>(i + 1)?),
            })
        })
        .collect::<duckdb::Result<_>>()?;
    Ok(Record {
        kind: def.kind,
        key,
        values,
        sets: None,
    })
}

/// One entity by key, with a measure's sets.
pub fn get(conn: &Connection, kind: EntityKind, key: &Key) -> Result<Option<Record>, StorageError> {
    let def = kind.def();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?",
        select_list(def),
        quote_ident(def.table),
        quote_ident(def.key)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([key])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut record = read_record(def, row)?;
    if kind == EntityKind::Measure {
        record.sets = Some(measure_sets(conn, key)?);
    }
    Ok(Some(record))
}

/// Whether a row with this key exists in `table` (keyed by the single column `column`).
pub fn exists(
    conn: &Connection,
    table: &str,
    column: &str,
    key: &dyn ToSql,
) -> Result<bool, StorageError> {
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {} = ?",
        quote_ident(table),
        quote_ident(column)
    );
    let n: i64 = conn.prepare_cached(&sql)?.query_row([key], |r| r.get(0))?;
    Ok(n > 0)
}

fn measure_sets(conn: &Connection, key: &Key) -> Result<MeasureSets, StorageError> {
    Ok(measure_sets_of(conn, std::slice::from_ref(key))?
        .remove(key)
        .unwrap_or_default())
}

/// The type, stakeholder and benefit sets of many measures in ONE query (a page of 50
/// measures would otherwise cost 150 statements at DuckDB's per-statement overhead).
fn measure_sets_of(
    conn: &Connection,
    keys: &[Key],
) -> Result<HashMap<Key, MeasureSets>, StorageError> {
    let mut out: HashMap<Key, MeasureSets> = keys
        .iter()
        .map(|k| (k.clone(), MeasureSets::default()))
        .collect();
    if keys.is_empty() {
        return Ok(out);
    }
    let marks = vec!["?"; keys.len()].join(", ");
    let sql = MEASURE_SETS
        .iter()
        .enumerate()
        .map(|(slot, (table, col, _))| {
            format!(
                "SELECT {slot} AS slot, measure_id, {c} AS id FROM {t} WHERE measure_id IN ({marks})",
                c = quote_ident(col),
                t = quote_ident(table)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY slot, measure_id, id";
    let args = std::iter::repeat_n(keys, MEASURE_SETS.len()).flatten();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        let slot: i32 = row.get(0)?;
        let key = Key::Int(row.get(1)?);
        let id: i32 = row.get(2)?;
        if let Some(sets) = out.get_mut(&key) {
            match slot {
                0 => sets.measure_type_ids.push(id),
                1 => sets.stakeholder_ids.push(id),
                _ => sets.benefit_ids.push(id),
            }
        }
    }
    Ok(out)
}

pub use crate::domain::query::{Cursor, ListQuery, Page};

/// Lists entities with a case-insensitive substring search, any orderable columns and keyset
/// pagination, so concurrent inserts or deletes never make a page skip or repeat a row that
/// was there throughout.
pub fn list(conn: &Connection, kind: EntityKind, q: &ListQuery) -> Result<Page, StorageError> {
    let def = kind.def();
    let mut filter: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(s) = q.search.as_deref().filter(|s| !s.is_empty()) {
        let any = def
            .search
            .iter()
            .map(|c| {
                format!(
                    "contains(lower(coalesce({}, '')), lower(?))",
                    quote_ident(c)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        filter.push(format!("({any})"));
        params.extend(std::iter::repeat_n(
            Value::Text(s.to_string()),
            def.search.len(),
        ));
    }
    let total = count(conn, def, &filter, &params)?;
    let sort_exprs: Vec<String> = q
        .order_by
        .iter()
        .map(|(c, _)| format!("coalesce(CAST({} AS VARCHAR), '')", quote_ident(c)))
        .collect();
    if let Some(cursor) = &q.after {
        let (sql, p) = keyset_condition(def, &sort_exprs, &q.order_by, cursor)?;
        filter.push(sql);
        params.extend(p);
    }
    let order = sort_exprs
        .iter()
        .zip(&q.order_by)
        .map(|(e, (_, desc))| format!("{e} {}", if *desc { "DESC" } else { "ASC" }))
        .chain(std::iter::once(format!("{} ASC", quote_ident(def.key))))
        .collect::<Vec<_>>()
        .join(", ");
    let sorts = sort_exprs
        .iter()
        .map(|e| format!(", {e}"))
        .collect::<String>();
    let sql = format!(
        "SELECT {}{sorts} FROM {} {} ORDER BY {order} LIMIT {}",
        select_list(def),
        quote_ident(def.table),
        where_clause(&filter),
        q.page_size + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let width = def.columns.len() + 1;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut records = Vec::new();
    let mut sort_values = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(read_record(def, row)?);
        sort_values.push(
            (0..q.order_by.len())
                .map(|i| row.get::<_, String>(width + i))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let more = records.len() > q.page_size;
    records.truncate(q.page_size);
    let next = more.then(|| Cursor {
        sort: sort_values[q.page_size - 1].clone(),
        key: records[q.page_size - 1].key.clone(),
    });
    if kind == EntityKind::Measure {
        let keys: Vec<Key> = records.iter().map(|r| r.key.clone()).collect();
        let mut sets = measure_sets_of(conn, &keys)?;
        for r in &mut records {
            r.sets = Some(sets.remove(&r.key).unwrap_or_default());
        }
    }
    Ok(Page::new(records, total, next))
}

fn where_clause(filter: &[String]) -> String {
    if filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filter.join(" AND "))
    }
}

fn count(
    conn: &Connection,
    def: &EntityDef,
    filter: &[String],
    params: &[Value],
) -> Result<i64, StorageError> {
    let sql = format!(
        "SELECT count(*) FROM {} {}",
        quote_ident(def.table),
        where_clause(filter)
    );
    Ok(conn.query_row(&sql, params_from_iter(params.iter()), |r| r.get(0))?)
}

/// `(s1, s2, …, key) > cursor` in the page's mixed asc/desc order, expanded into ORs because
/// directions differ per column.
fn keyset_condition(
    def: &EntityDef,
    sort_exprs: &[String],
    order_by: &[(&'static str, bool)],
    cursor: &Cursor,
) -> Result<(String, Vec<Value>), StorageError> {
    if cursor.sort.len() != sort_exprs.len() || !cursor.key.fits(def.kind) {
        return Err(StorageError::InvalidCursor);
    }
    let key_value = match &cursor.key {
        Key::Int(i) => Value::Int(i64::from(*i)),
        Key::Text(s) => Value::Text(s.clone()),
    };
    let mut terms = Vec::new();
    let mut params = Vec::new();
    for i in 0..=sort_exprs.len() {
        let mut parts = Vec::new();
        for (expr, value) in sort_exprs.iter().zip(&cursor.sort).take(i) {
            parts.push(format!("{expr} = ?"));
            params.push(Value::Text(value.clone()));
        }
        if i < sort_exprs.len() {
            let op = if order_by[i].1 { "<" } else { ">" };
            parts.push(format!("{} {op} ?", sort_exprs[i]));
            params.push(Value::Text(cursor.sort[i].clone()));
        } else {
            parts.push(format!("{} > ?", quote_ident(def.key)));
            params.push(key_value.clone());
        }
        terms.push(format!("({})", parts.join(" AND ")));
    }
    Ok((format!("({})", terms.join(" OR ")), params))
}

/// Next integer id of an entity table: above every id it holds and above `issued` (the
/// highest id ever given out, which the caller tracks so that a deleted entity's id — the
/// newest one included — is never given to another). Runs on the writer's connection, so two
/// creates can never be given the same id (the original computed MAX+1 outside any
/// transaction).
pub fn next_id(conn: &Connection, def: &EntityDef, issued: i32) -> Result<i32, StorageError> {
    let sql = format!(
        "SELECT greatest(coalesce(max({}), 0), ?) + 1 FROM {}",
        quote_ident(def.key),
        quote_ident(def.table)
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([issued], |r| r.get(0))?)
}

/// Inserts a validated record (its key already assigned) and, for measures, its sets.
pub fn insert(
    conn: &Connection,
    record: &Record,
    changes: &mut Changes,
) -> Result<(), StorageError> {
    let def = record.kind.def();
    if exists(conn, def.table, def.key, &record.key)? {
        return Err(StorageError::AlreadyExists {
            table: def.table,
            key: record.key.to_string(),
        });
    }
    let columns: Vec<&str> = std::iter::once(def.key)
        .chain(def.columns.iter().map(|c| c.name))
        .collect();
    let values: Vec<Datum> = std::iter::once(Datum::from(&record.key))
        .chain(record.values.iter().map(Datum::from))
        .collect();
    let key_where = format!("{} = ?", quote_ident(def.key));
    changes.insert(
        conn,
        def.table,
        &columns,
        values,
        &key_where,
        &[&record.key],
    )?;
    if let Some(sets) = &record.sets {
        replace_sets(conn, &record.key, sets, changes)?;
    }
    Ok(())
}

/// Writes every non-key column of `record` over the stored row, and replaces a measure's sets.
pub fn update(
    conn: &Connection,
    record: &Record,
    changes: &mut Changes,
) -> Result<(), StorageError> {
    let def = record.kind.def();
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name).collect();
    let key_where = format!("{} = ?", quote_ident(def.key));
    changes.update(
        conn,
        def.table,
        &columns,
        &record.values,
        &key_where,
        &[&record.key],
    )?;
    if let Some(sets) = &record.sets {
        replace_sets(conn, &record.key, sets, changes)?;
    }
    Ok(())
}

/// Replaces a measure's three sets by their new values: only the differences are written, and
/// every id added must exist in its lookup table.
fn replace_sets(
    conn: &Connection,
    measure: &Key,
    sets: &MeasureSets,
    changes: &mut Changes,
) -> Result<(), StorageError> {
    let current = measure_sets(conn, measure)?;
    let pairs = [
        (&current.measure_type_ids, &sets.measure_type_ids),
        (&current.stakeholder_ids, &sets.stakeholder_ids),
        (&current.benefit_ids, &sets.benefit_ids),
    ];
    for ((old, new), (table, col, lookup)) in pairs.into_iter().zip(MEASURE_SETS) {
        let key_where = format!("measure_id = ? AND {} = ?", quote_ident(col));
        for gone in old.iter().filter(|id| !new.contains(id)) {
            changes.delete(conn, table, &key_where, &[measure, gone])?;
        }
        for added in new.iter().filter(|id| !old.contains(id)) {
            if !exists(conn, lookup, col, added)? {
                return Err(StorageError::MissingReference {
                    table: lookup,
                    column: col,
                    value: added.to_string(),
                });
            }
            changes.insert(
                conn,
                table,
                &["measure_id", col],
                vec![Datum::from(measure), Datum::Int(i64::from(*added))],
                &key_where,
                &[measure, added],
            )?;
        }
    }
    Ok(())
}

/// Rows of a lookup table, ordered by its first column. Each row is rendered as its values.
pub fn lookup(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    filter: Option<(&str, i32)>,
) -> Result<Vec<Vec<Value>>, StorageError> {
    let cols = columns
        .iter()
        .map(|c| format!("CAST({} AS VARCHAR)", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let (where_sql, params): (String, Vec<i32>) = match filter {
        Some((c, v)) => (format!("WHERE {} = ?", quote_ident(c)), vec![v]),
        None => (String::new(), vec![]),
    };
    let sql = format!(
        "SELECT {cols} FROM {} {where_sql} ORDER BY {}",
        quote_ident(table),
        quote_ident(columns[0])
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        (0..columns.len())
            .map(|i| Ok(Value::from(r.get::<_, Option<String>>(i)?)))
            .collect::<duckdb::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The `(geom_id, geo_shape)` rows of an area, in geom_id order (rows without a shape skipped).
pub fn area_shapes(conn: &Connection, area_id: i32) -> Result<Vec<(i32, Vec<u8>)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT geom_id, geo_shape FROM area_geom \
         WHERE area_id = ? AND geo_shape IS NOT NULL ORDER BY geom_id",
    )?;
    let rows = stmt.query_map([area_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
