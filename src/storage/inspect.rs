//! Read-only inspection of a DuckDB database (the live one or an assembled snapshot): full-scan
//! fingerprints, row counts, schema inventory and orphan checks. Verification and restore build their
//! integrity reports from these.

use std::collections::BTreeSet;

use duckdb::Connection;
use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::domain::fingerprint::{Fingerprint, Fingerprints};
use crate::domain::tables::{quote_ident, Reference, REFERENCES, USER_TABLES};

/// The select list of a fingerprint over rows aliased `t`: count and hash sum. `count(*)`
/// alone is answered from metadata; hashing every row makes DuckDB read (and checksum) every
/// block the rows are in.
const FINGERPRINT: &str = "count(*), coalesce(sum(hash(t)), 0)::HUGEINT";

/// The [`FINGERPRINT`] columns of `r` from column `at` on.
fn fingerprint_at(r: &duckdb::Row<'_>, at: usize) -> duckdb::Result<Fingerprint> {
    Ok(Fingerprint {
        rows: r.get(at)?,
        hash_sum: r.get(at + 1)?,
    })
}

/// Full scan of one table.
pub fn scan_table(conn: &Connection, table: &str) -> Result<Fingerprint, StorageError> {
    let sql = format!("SELECT {FINGERPRINT} FROM {} AS t", quote_ident(table));
    Ok(conn.query_row(&sql, [], |r| fingerprint_at(r, 0))?)
}

/// Rows of a table by `rowid`: from `from` (inclusive) up to `to` (exclusive), unbounded where
/// `None`. Parts whose bounds meet cover every row once, whatever the rowids are (deleted rows
/// leave gaps), so their fingerprints add up to the whole table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl RowRange {
    /// Every row.
    pub const WHOLE: RowRange = RowRange {
        from: None,
        to: None,
    };
}

/// Rows per DuckDB vector: a scan skips whole vectors outside a `rowid` range, so only parts
/// made of whole vectors divide the work (a part inside one vector reads all of it).
const VECTOR_ROWS: i64 = 2048;

impl RowRange {
    /// At most `parts` ranges that together cover every row, split at vector boundaries for a
    /// table of about `rows`: one range (the whole table) when it has fewer than two vectors.
    /// The bounds only balance the work: an inexact `rows` still covers every row once.
    pub fn split(rows: i64, parts: u32) -> Vec<RowRange> {
        let vectors = (rows.max(0) + VECTOR_ROWS - 1) / VECTOR_ROWS;
        let parts = i64::from(parts.max(1)).min(vectors.max(1));
        let bound = |k: i64| (k > 0 && k < parts).then(|| vectors * k / parts * VECTOR_ROWS);
        (0..parts)
            .map(|k| RowRange {
                from: bound(k),
                to: bound(k + 1),
            })
            .collect()
    }
}

/// [`scan_table`] of the rows in `range` only: DuckDB scans one row group on one thread, so a
/// table of few but large rows (one row group of geometry) is scanned in parts on two
/// connections at once; the fingerprints add up (see [`RowRange`]).
pub fn scan_table_part(
    conn: &Connection,
    table: &str,
    range: RowRange,
) -> Result<Fingerprint, StorageError> {
    let bounds: Vec<String> = [
        range.from.map(|f| format!("rowid >= {f}")),
        range.to.map(|t| format!("rowid < {t}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if bounds.is_empty() {
        return scan_table(conn, table);
    }
    scan_rows(conn, table, &bounds.join(" AND "), &[])
}

/// [`scan_table`] of each of `tables`, in that order, in one statement: DuckDB's fixed cost per
/// statement dominates the scan of a small table (measured: 22 small tables in 25–30 ms
/// together, 55–70 ms one by one).
pub fn scan_tables(conn: &Connection, tables: &[&str]) -> Result<Vec<Fingerprint>, StorageError> {
    union_of(conn, tables, FINGERPRINT, |r| fingerprint_at(r, 1))
}

/// `SELECT <i>, <columns> FROM <tables[i]> AS t UNION ALL …` as one statement, each row mapped
/// by `row` and returned in `tables` order.
fn union_of<T>(
    conn: &Connection,
    tables: &[&str],
    columns: &str,
    row: impl Fn(&duckdb::Row<'_>) -> duckdb::Result<T>,
) -> Result<Vec<T>, StorageError> {
    let selects: Vec<String> = tables
        .iter()
        .map(|t| format!("{columns} FROM {} AS t", quote_ident(t)))
        .collect();
    union_all(conn, &selects, row)
}

/// `SELECT <i>, <selects[i]> UNION ALL …` (each of `selects` without its `SELECT`, giving one
/// row) as one statement, each row mapped by `row` and returned in `selects` order.
fn union_all<T>(
    conn: &Connection,
    selects: &[String],
    row: impl Fn(&duckdb::Row<'_>) -> duckdb::Result<T>,
) -> Result<Vec<T>, StorageError> {
    if selects.is_empty() {
        return Ok(Vec::new());
    }
    let sql = selects
        .iter()
        .enumerate()
        .map(|(i, s)| format!("SELECT {i} AS i, {s}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows: Vec<(usize, T)> = stmt
        .query_map([], |r| Ok((r.get::<_, usize>(0)?, row(r)?)))?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|(i, _)| *i);
    Ok(rows.into_iter().map(|(_, v)| v).collect())
}

/// Fingerprint of the rows of `table` matching `where_sql` (with `params`): what a delete or
/// update is about to change, for the writer's incremental fingerprints.
pub fn scan_rows(
    conn: &Connection,
    table: &str,
    where_sql: &str,
    params: &[&dyn duckdb::ToSql],
) -> Result<Fingerprint, StorageError> {
    let sql = format!(
        "SELECT {FINGERPRINT} FROM {} AS t WHERE {where_sql}",
        quote_ident(table)
    );
    // Cached: the writer runs the same few statements for every insert, update and delete.
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params, |r| fingerprint_at(r, 0))?)
}

/// Fingerprints of every user table (a full scan of each, in one statement).
pub fn user_fingerprints(conn: &Connection) -> Result<Fingerprints, StorageError> {
    let names: Vec<&str> = USER_TABLES.iter().map(|t| t.name).collect();
    let fps = scan_tables(conn, &names)?;
    Ok(names.into_iter().map(String::from).zip(fps).collect())
}

/// Row count of every user table the database has, in inventory order (a database older than
/// a table lacks it). Live per-table counts for GetStatus.
pub fn row_counts(conn: &Connection) -> Result<Vec<(String, i64)>, StorageError> {
    let existing = all_tables(conn)?;
    let tables: Vec<&str> = USER_TABLES
        .iter()
        .map(|t| t.name)
        .filter(|t| existing.iter().any(|e| e == t))
        .collect();
    // One statement for all of them (see [`scan_tables`]).
    let counts = union_of(conn, &tables, "count(*)", |r| r.get::<_, i64>(1))?;
    Ok(tables.iter().map(|t| t.to_string()).zip(counts).collect())
}

/// Every base table in the main schema, user or service (deep verify scans them all so every
/// block's checksum is read).
pub fn all_tables(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT table_name FROM duckdb_tables()
         WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
         ORDER BY table_name",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The shape of the schema: tables with their columns and types, views, and constraints.
/// Two databases with equal inventories accept the same queries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInventory {
    /// `table.column type`, in table then column order.
    pub columns: Vec<String>,
    pub views: Vec<String>,
    /// `table constraint_type (columns)`.
    pub constraints: Vec<String>,
}

impl SchemaInventory {
    /// The tables with a column of type `data_type`.
    pub fn tables_with(&self, data_type: &str) -> BTreeSet<&str> {
        self.columns
            .iter()
            .filter_map(|c| {
                let (table_column, ty) = c.rsplit_once(' ')?;
                (ty == data_type).then(|| table_column.split_once('.').map(|(t, _)| t))?
            })
            .collect()
    }
}

/// Reads the schema inventory of the main schema.
pub fn schema_inventory(conn: &Connection) -> Result<SchemaInventory, StorageError> {
    let strings = |sql: &str| -> Result<Vec<String>, StorageError> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    Ok(SchemaInventory {
        columns: strings(
            "SELECT table_name || '.' || column_name || ' ' || data_type FROM duckdb_columns()
             WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
             ORDER BY table_name, column_index",
        )?,
        views: strings(
            "SELECT view_name FROM duckdb_views()
             WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
             ORDER BY view_name",
        )?,
        constraints: strings(
            "SELECT table_name || ' ' || constraint_type || ' (' ||
                    array_to_string(constraint_column_names, ', ') || ')'
             FROM duckdb_constraints()
             WHERE database_name = current_database() AND schema_name = 'main'
               AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')
             ORDER BY 1",
        )?,
    })
}

/// Result of one orphan query: rows of `reference.child` whose parent row does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanCount {
    pub reference: Reference,
    pub orphans: i64,
}

impl OrphanCount {
    /// A stable name for reports: `measure_has_type(measure_id) -> measure`.
    pub fn name(&self) -> String {
        format!(
            "{}({}) -> {}",
            self.reference.child,
            self.reference.child_cols.join(", "),
            self.reference.parent
        )
    }
}

/// Counts orphans for every reference in the schema, in one statement (22 references: about
/// 25 ms together, 50–60 ms one by one, measured at scale 1). Should it fail, one statement
/// each, so the error is the first failing reference's.
pub fn orphan_counts(conn: &Connection) -> Result<Vec<OrphanCount>, StorageError> {
    let selects: Vec<String> = REFERENCES.iter().map(orphan_sql).collect();
    let counts = union_all(conn, &selects, |r| r.get::<_, i64>(1))
        .ok()
        .filter(|c| c.len() == REFERENCES.len());
    let counts = match counts {
        Some(c) => c,
        None => selects
            .iter()
            .map(|s| conn.query_row(&format!("SELECT {s}"), [], |row| row.get(0)))
            .collect::<Result<_, _>>()?,
    };
    Ok(REFERENCES
        .iter()
        .zip(counts)
        .map(|(r, orphans)| OrphanCount {
            reference: *r,
            orphans,
        })
        .collect())
}

/// `count(*) FROM child … ANTI JOIN parent …`: the rows of the child whose parent row does not
/// exist (without its `SELECT`, see [`union_all`]).
fn orphan_sql(r: &Reference) -> String {
    let on = r
        .child_cols
        .iter()
        .zip(r.parent_cols)
        .map(|(c, p)| format!("c.{} = p.{}", quote_ident(c), quote_ident(p)))
        .collect::<Vec<_>>()
        .join(" AND ");
    // A NULL reference (a legacy MAPG row without a grant) references nothing: not an orphan.
    let set = r
        .child_cols
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "count(*) FROM {} AS c ANTI JOIN {} AS p ON {on} WHERE {set}",
        quote_ident(r.child),
        quote_ident(r.parent),
    )
}

/// One value of a previewed row: blobs are reported by size only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(u64),
}

/// Column names and rows of a table read for a preview.
pub type Rows = (Vec<String>, Vec<Vec<Cell>>);

/// The first `limit` rows of user table `table` in key order, with the column names the
/// database itself has (an older snapshot may lack a column the live schema has, or have one
/// more). `Ok(None)` when the database has no such table.
pub fn first_rows(
    conn: &Connection,
    table: &str,
    limit: usize,
) -> Result<Option<Rows>, StorageError> {
    let Some(def) = crate::domain::tables::user_table(table) else {
        return Ok(None);
    };
    if !all_tables(conn)?.iter().any(|t| t == def.name) {
        return Ok(None);
    }
    let order = def
        .key
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT * FROM {} ORDER BY {order} LIMIT {limit}",
        quote_ident(def.name)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let n = row.as_ref().column_count();
        out.push((0..n).map(|i| cell(row.get_ref(i))).collect());
    }
    let columns = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    Ok(Some((columns, out)))
}

fn cell(v: duckdb::Result<duckdb::types::ValueRef<'_>>) -> Cell {
    use duckdb::types::ValueRef as V;
    match v {
        Ok(V::Null) | Err(_) => Cell::Null,
        Ok(V::TinyInt(i)) => Cell::Int(i.into()),
        Ok(V::SmallInt(i)) => Cell::Int(i.into()),
        Ok(V::Int(i)) => Cell::Int(i.into()),
        Ok(V::BigInt(i)) => Cell::Int(i),
        Ok(V::Text(t)) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        Ok(V::Blob(b)) => Cell::Blob(b.len() as u64),
        Ok(other) => Cell::Text(format!("{:?}", other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parts_of_a_scan_add_up_to_the_whole_table_whatever_the_rowids() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE g (id INTEGER, shape BLOB);
             INSERT INTO g SELECT i, repeat('x', i % 50)::BLOB FROM range(5000) t(i);
             DELETE FROM g WHERE id % 7 = 0 OR id BETWEEN 1000 AND 1999;",
        )
        .expect("table with gaps in its rowids");
        let whole = scan_table(&conn, "g").expect("whole");
        // An exact row count, a wrong one, and none: the parts still cover every row once.
        for (rows, parts) in [
            (whole.rows, 2),
            (10, 2),
            (0, 3),
            (100_000, 4),
            (whole.rows, 1),
        ] {
            let ranges = RowRange::split(rows, parts);
            let mut sum = Fingerprint::default();
            for range in &ranges {
                sum += scan_table_part(&conn, "g", *range).expect("part");
            }
            assert_eq!(sum, whole, "{parts} parts split for {rows} rows");
            for r in ranges.iter().flat_map(|r| [r.from, r.to]).flatten() {
                assert_eq!(r % VECTOR_ROWS, 0, "{r} is a vector boundary");
            }
        }
        assert_eq!(RowRange::split(2000, 2).len(), 1, "one vector is not split");
        conn.execute_batch("CREATE TABLE h AS SELECT * FROM g WHERE id % 3 = 0")
            .expect("second table");
        let h = scan_table(&conn, "h").expect("h");
        assert_eq!(
            scan_tables(&conn, &["h", "g", "h"]).expect("one statement"),
            [h, whole, h]
        );
        assert_eq!(RowRange::split(6940, 2)[0].to, Some(4096));
    }

    /// The orphan counts of the one statement are those of a LEFT JOIN per reference (the form
    /// they replaced), with NULL references not counted; a missing table is an error, not 0.
    #[test]
    fn orphans_in_one_statement_count_what_a_join_per_reference_counts() {
        let conn = Connection::open_in_memory().expect("duckdb");
        let mut columns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for r in REFERENCES {
            columns.entry(r.child).or_default().extend(r.child_cols);
            columns.entry(r.parent).or_default().extend(r.parent_cols);
        }
        for (i, (table, cols)) in columns.iter().enumerate() {
            let defs: Vec<String> = cols.iter().map(|c| format!("{c} INTEGER")).collect();
            // Values 1..=4 with a NULL every seventh; parent and child tables alike, so
            // some references have orphans and some rows match several parents.
            let values: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(j, _)| {
                    format!(
                        "CASE WHEN (r + {j}) % 7 = 0 THEN NULL ELSE (r * {} + {j}) % 4 + 1 END",
                        i + 2
                    )
                })
                .collect();
            conn.execute_batch(&format!(
                "CREATE TABLE {table} ({}); INSERT INTO {table} SELECT {} FROM range({}) t(r);",
                defs.join(", "),
                values.join(", "),
                5 + i % 4,
            ))
            .expect("fixture");
        }
        let got = orphan_counts(&conn).expect("orphans");
        let mut some = 0;
        for (o, r) in got.iter().zip(REFERENCES) {
            let on: Vec<String> = r
                .child_cols
                .iter()
                .zip(r.parent_cols)
                .map(|(c, p)| format!("c.{c} = p.{p}"))
                .collect();
            let set: Vec<String> = r
                .child_cols
                .iter()
                .map(|c| format!("c.{c} IS NOT NULL"))
                .collect();
            let sql =
                format!(
                "SELECT count(*) FROM {} AS c LEFT JOIN {} AS p ON {} WHERE p.{} IS NULL AND {}",
                r.child, r.parent, on.join(" AND "), r.parent_cols[0], set.join(" AND ")
            );
            let want: i64 = conn.query_row(&sql, [], |row| row.get(0)).expect("join");
            assert_eq!(o.orphans, want, "{}", o.name());
            some += usize::from(want > 0);
        }
        assert_eq!(got.len(), REFERENCES.len());
        assert!(
            some > 0 && some < got.len(),
            "{some} references with orphans"
        );
        conn.execute_batch("DROP TABLE area").expect("drop");
        assert!(orphan_counts(&conn).is_err());
    }

    #[test]
    fn tables_are_found_by_column_type() {
        let inv = SchemaInventory {
            columns: vec![
                "area_geom.geo_shape BLOB".into(),
                "area_geom.area_id INTEGER".into(),
                "grant_table.amount DECIMAL(10, 2)".into(),
                "habitat.habitat VARCHAR".into(),
            ],
            ..Default::default()
        };
        assert_eq!(inv.tables_with("BLOB"), BTreeSet::from(["area_geom"]));
        assert_eq!(inv.tables_with("VARCHAR"), BTreeSet::from(["habitat"]));
    }
}
