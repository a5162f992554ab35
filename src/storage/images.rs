//! Reading and writing complete rows ([`Datum`] values): the row images every change records,
//! whole tables for diffs and point-in-time states, and the key and reference lookups Undelete
//! checks its rows against.

use duckdb::types::{ToSqlOutput, Value as DbValue, ValueRef};
use duckdb::{params_from_iter, ToSql};

use super::{Connection, StorageError};
use crate::domain::fingerprint::Fingerprint;
use crate::domain::rows::{Datum, TableRows};
use crate::domain::tables::{quote_ident, user_table};

impl ToSql for Datum {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Datum::Null => ToSqlOutput::Owned(DbValue::Null),
            Datum::Int(i) => ToSqlOutput::Owned(DbValue::BigInt(*i)),
            Datum::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Datum::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A stored value as a [`Datum`] (the user tables hold integers, text and blobs).
pub fn datum(v: ValueRef<'_>) -> Datum {
    match v {
        ValueRef::Null => Datum::Null,
        ValueRef::Boolean(b) => Datum::Int(i64::from(b)),
        ValueRef::TinyInt(i) => Datum::Int(i.into()),
        ValueRef::SmallInt(i) => Datum::Int(i.into()),
        ValueRef::Int(i) => Datum::Int(i.into()),
        ValueRef::BigInt(i) => Datum::Int(i),
        ValueRef::UTinyInt(i) => Datum::Int(i.into()),
        ValueRef::USmallInt(i) => Datum::Int(i.into()),
        ValueRef::UInt(i) => Datum::Int(i.into()),
        ValueRef::Text(t) => Datum::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Datum::Blob(b.to_vec()),
        other => Datum::Text(format!("{:?}", other.to_owned())),
    }
}

/// `ORDER BY` the table's key (stable output for images, diffs and tests).
fn key_order(table: &str) -> String {
    user_table(table)
        .map(|t| {
            t.key
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|o| !o.is_empty())
        .map_or(String::new(), |o| format!(" ORDER BY {o}"))
}

/// The complete rows of `table` matching `where_sql` (with `params`), in key order.
pub fn read_rows(
    conn: &Connection,
    table: &str,
    where_sql: &str,
    params: &[&dyn ToSql],
) -> Result<TableRows, StorageError> {
    let sql = format!(
        "SELECT * FROM {} WHERE {where_sql}{}",
        quote_ident(table),
        key_order(table)
    );
    collect(conn, table, &sql, params)
}

/// [`read_rows`] and the rows' fingerprint (count and `sum(hash(row))`, exactly what
/// [`super::inspect::scan_rows`] computes) from ONE statement: a change reads both for every
/// table it touches, and DuckDB's fixed cost per statement is most of a small read.
pub fn read_rows_fingerprinted(
    conn: &Connection,
    table: &str,
    where_sql: &str,
    params: &[&dyn ToSql],
) -> Result<(TableRows, Fingerprint), StorageError> {
    let sql = format!(
        "SELECT hash(t), t.* FROM {} AS t WHERE {where_sql}{}",
        quote_ident(table),
        key_order(table)
    );
    collect_fingerprinted(conn, table, &sql, params)
}

/// The rows of a statement whose first column is each row's `hash(t)`: the rest of the columns,
/// and the fingerprint the hashes add up to.
fn collect_fingerprinted(
    conn: &Connection,
    table: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<(TableRows, Fingerprint), StorageError> {
    let mut fp = Fingerprint::default();
    let rows = collect_from(conn, table, sql, params, 1, |row| {
        let h: u64 = row.get(0)?;
        fp.rows += 1;
        fp.hash_sum += i128::from(h);
        Ok(())
    })?;
    Ok((rows, fp))
}

/// Deletes the rows of `table` matching `where_sql` and returns what
/// [`read_rows_fingerprinted`] would have read just before: the complete rows in key order and
/// their fingerprint. One statement instead of a read and a delete: DuckDB's fixed cost per
/// statement is most of a small delete, and a cascade runs one per table it reaches.
pub fn delete_returning(
    conn: &Connection,
    table: &str,
    where_sql: &str,
    params: &[&dyn ToSql],
) -> Result<(TableRows, Fingerprint), StorageError> {
    // `hash(t)` of the alias is the whole row, as in the SELECT of a read or a scan.
    let sql = format!(
        "DELETE FROM {} AS t WHERE {where_sql} RETURNING hash(t), *",
        quote_ident(table)
    );
    let (mut rows, fp) = collect_fingerprinted(conn, table, &sql, params)?;
    sort_in_key_order(&mut rows);
    Ok((rows, fp))
}

/// Sorts rows as [`key_order`]'s `ORDER BY` does (DuckDB puts NULLs last); RETURNING has no
/// order of its own.
fn sort_in_key_order(rows: &mut TableRows) {
    let key = user_table(&rows.table).map_or(&[][..], |t| t.key);
    let at: Vec<usize> = key
        .iter()
        .filter_map(|k| rows.columns.iter().position(|c| c == k))
        .collect();
    rows.rows.sort_by(|a, b| {
        at.iter()
            .map(|&i| {
                let (x, y) = (a.get(i), b.get(i));
                let null = |d: Option<&Datum>| matches!(d, None | Some(Datum::Null));
                null(x).cmp(&null(y)).then_with(|| x.cmp(&y))
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// The column names of `table`, in table order.
pub fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, StorageError> {
    let sql = format!("SELECT * FROM {} LIMIT 0", quote_ident(table));
    Ok(collect(conn, table, &sql, &[])?.columns)
}

/// Every row of `table`, in key order.
pub fn read_table(conn: &Connection, table: &str) -> Result<TableRows, StorageError> {
    let sql = format!("SELECT * FROM {}{}", quote_ident(table), key_order(table));
    collect(conn, table, &sql, &[])
}

fn collect(
    conn: &Connection,
    table: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<TableRows, StorageError> {
    collect_from(conn, table, sql, params, 0, |_| Ok(()))
}

/// The rows `sql` returns from column `first` on, as a table's rows; `each` sees every result
/// row first (the columns before `first` are its to read).
fn collect_from(
    conn: &Connection,
    table: &str,
    sql: &str,
    params: &[&dyn ToSql],
    first: usize,
    mut each: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<()>,
) -> Result<TableRows, StorageError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        each(row)?;
        let n = row.as_ref().column_count();
        out.push(
            (first..n)
                .map(|i| row.get_ref(i).map_or(Datum::Null, datum))
                .collect(),
        );
    }
    let columns = rows
        .as_ref()
        .map(|s| s.column_names().split_off(first.min(s.column_count())))
        .unwrap_or_default();
    Ok(TableRows {
        table: table.to_string(),
        columns,
        rows: out,
    })
}

/// `k1 = ? AND k2 = ?` over `columns` of a table.
pub fn equals_where(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| crate::domain::tables::column_equals(c))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Rows per statement of the batched lookups and inserts: one statement per table instead of
/// one per row is what keeps an undelete of a large cascade cheap, and the bound keeps each
/// statement's text and parameter list small.
pub const BATCH_ROWS: usize = 256;

/// `(k1 = ? AND k2 = ?) OR (…)`, `n` times over `columns`.
pub fn any_equals_where(columns: &[&str], n: usize) -> String {
    let one = format!("({})", equals_where(columns));
    vec![one; n].join(" OR ")
}

/// The distinct `columns` values of `table` among `tuples` (each tuple: one value per column).
pub fn existing(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    tuples: &[Vec<Datum>],
) -> Result<std::collections::BTreeSet<Vec<Datum>>, StorageError> {
    let mut out = std::collections::BTreeSet::new();
    let cols = columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in tuples.chunks(BATCH_ROWS) {
        let sql = format!(
            "SELECT DISTINCT {cols} FROM {} WHERE {}",
            quote_ident(table),
            any_equals_where(columns, chunk.len())
        );
        let params: Vec<&dyn ToSql> = chunk.iter().flatten().map(|v| v as &dyn ToSql).collect();
        out.extend(collect(conn, table, &sql, &params)?.rows);
    }
    Ok(out)
}

/// The live rows of `table` whose keys are among `keys` (chunked; key order within a chunk).
pub fn rows_by_keys(
    conn: &Connection,
    table: &str,
    keys: &[Vec<Datum>],
) -> Result<TableRows, StorageError> {
    let Some(def) = user_table(table) else {
        return Ok(TableRows::default());
    };
    let mut out = TableRows {
        table: table.to_string(),
        ..TableRows::default()
    };
    for chunk in keys.chunks(BATCH_ROWS) {
        let params: Vec<&dyn ToSql> = chunk.iter().flatten().map(|v| v as &dyn ToSql).collect();
        let part = read_rows(
            conn,
            table,
            &any_equals_where(def.key, chunk.len()),
            &params,
        )?;
        out.columns = part.columns;
        out.rows.extend(part.rows);
    }
    Ok(out)
}

/// The rows of `table` whose `columns` equal `values`, in key order.
pub fn rows_matching(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    values: &[&Datum],
) -> Result<TableRows, StorageError> {
    let params: Vec<&dyn ToSql> = values.iter().map(|v| *v as &dyn ToSql).collect();
    read_rows(conn, table, &equals_where(columns), &params)
}

/// Every row of each of `tables` that the database has (an older database may predate one).
pub fn read_tables(conn: &Connection, tables: &[&str]) -> Result<Vec<TableRows>, StorageError> {
    let present = super::inspect::all_tables(conn)?;
    tables
        .iter()
        .filter(|t| present.iter().any(|p| p == *t))
        .map(|t| read_table(conn, t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::inspect::scan_rows;

    /// One statement gives what the two it replaces gave: the same rows in the same order and
    /// the same fingerprint (count and hash sum), matching or not.
    #[test]
    fn fingerprinted_reads_equal_a_scan_plus_a_read() {
        let conn = Connection::open_in_memory().expect("duckdb");
        conn.execute_batch(
            "CREATE TABLE measure (measure_id INTEGER, measure VARCHAR, shape BLOB);
             INSERT INTO measure VALUES (3, 'c', NULL), (1, 'a', '\\x01\\x02'::BLOB),
                 (2, NULL, '\\xFF'::BLOB), (4, 'd', ''::BLOB);",
        )
        .expect("fixture");
        for (cond, params) in [
            ("measure_id > ?", vec![1]),
            ("measure_id = ?", vec![2]),
            ("measure_id > ?", vec![9]),
            (
                "measure_id IN (SELECT measure_id FROM measure WHERE measure_id < ?)",
                vec![4],
            ),
        ] {
            let params: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
            let (rows, fp) =
                read_rows_fingerprinted(&conn, "measure", cond, &params).expect("read");
            let scanned = scan_rows(&conn, "measure", cond, &params).expect("scan");
            assert_eq!(fp, scanned, "{cond}");
            assert_eq!(
                rows,
                read_rows(&conn, "measure", cond, &params).expect("rows"),
                "{cond}"
            );
        }
    }

    /// A delete returns exactly what a read just before it gives (rows in key order, NULL keys
    /// last, and the fingerprint), and the rows are gone.
    #[test]
    fn a_delete_returns_what_a_read_before_it_gives() {
        let conn = Connection::open_in_memory().expect("duckdb");
        conn.execute_batch(
            "CREATE TABLE measure_area_priority_grant (measure_id INTEGER, area_id INTEGER,
                 priority_id INTEGER, grant_id VARCHAR, note BLOB);
             INSERT INTO measure_area_priority_grant VALUES
                 (2, 1, 1, 'g2', NULL), (1, 2, 1, NULL, '\\x01'::BLOB), (1, 2, 1, 'b', ''::BLOB),
                 (1, 1, 1, 'z', '\\xFF\\x00'::BLOB), (1, 10, 1, 'a', NULL), (3, 1, 1, 'x', NULL);",
        )
        .expect("fixture");
        let table = "measure_area_priority_grant";
        for (cond, n) in [
            ("measure_id = ?", 1),
            ("measure_id > ?", 0),
            ("measure_id = ?", 1),
        ] {
            let p: [&dyn ToSql; 1] = [&n];
            let before = read_rows_fingerprinted(&conn, table, cond, &p).expect("read");
            let deleted = delete_returning(&conn, table, cond, &p).expect("delete");
            assert_eq!(deleted, before, "{cond} {n}");
            let after = scan_rows(&conn, table, cond, &p).expect("scan");
            assert_eq!(after.rows, 0, "{cond} {n}");
        }
        let keys = |rows: &TableRows| -> Vec<Option<String>> {
            rows.rows
                .iter()
                .map(|r| match &r[3] {
                    Datum::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect()
        };
        conn.execute_batch(
            "INSERT INTO measure_area_priority_grant VALUES (5, 1, 1, NULL, NULL), (5, 1, 1, 'a', NULL), (5, 0, 1, 'q', NULL);",
        )
        .expect("more");
        let p: [&dyn ToSql; 1] = [&5];
        let (rows, _) = delete_returning(&conn, table, "measure_id = ?", &p).expect("delete");
        assert_eq!(keys(&rows), [Some("q".into()), Some("a".into()), None]);
    }
}
