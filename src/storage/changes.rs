//! Fingerprint-tracking row changes. Every write to a user table goes through [`Changes`], which
//! records the hash delta of the rows it inserts, updates or deletes (read in the same
//! transaction), so the writer's fingerprints stay exact without rescanning tables — and the
//! complete image of every row it touches (before-images of what it deletes or overwrites,
//! after-images of what it writes), which the change's event carries.

use std::collections::BTreeMap;

use duckdb::types::{ToSqlOutput, Value as DbValue};
use duckdb::{params_from_iter, Connection, ToSql};

use super::images::{delete_returning, read_rows_fingerprinted};
use super::inspect::scan_rows;
use super::StorageError;
use crate::domain::fingerprint::{Fingerprint, Fingerprints};
use crate::domain::rows::{Datum, RowImages, TableRows};
use crate::domain::tables::quote_ident;
use crate::domain::{Key, Value};

impl ToSql for Value {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(DbValue::Null),
            Value::Int(i) => ToSqlOutput::Owned(DbValue::BigInt(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(duckdb::types::ValueRef::Text(s.as_bytes())),
        })
    }
}

impl ToSql for Key {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Key::Int(i) => ToSqlOutput::Owned(DbValue::Int(*i)),
            Key::Text(s) => ToSqlOutput::Borrowed(duckdb::types::ValueRef::Text(s.as_bytes())),
        })
    }
}

/// Per-table fingerprint deltas of one transaction, rows removed per table in order, and the
/// images of every row touched.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    deltas: BTreeMap<String, Fingerprint>,
    removed: Vec<(String, i64)>,
    images: RowImages,
}

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies this transaction's deltas to the writer's fingerprints (after COMMIT only).
    pub fn apply_to(&self, fps: &mut Fingerprints) {
        for (table, d) in &self.deltas {
            *fps.entry(table.clone()).or_default() += *d;
        }
    }

    /// Rows removed per table, in the order the deletes ran.
    pub fn removed(&self) -> &[(String, i64)] {
        &self.removed
    }

    /// The images of every row this transaction touched so far.
    pub fn images(&self) -> &RowImages {
        &self.images
    }

    /// Takes the images (the change's event carries them).
    pub fn take_images(&mut self) -> RowImages {
        std::mem::take(&mut self.images)
    }

    fn image(&mut self, after: bool, rows: TableRows) {
        self.images.add(after, &rows.table, rows.columns, rows.rows);
    }

    fn add(&mut self, table: &str, fp: Fingerprint) {
        *self.deltas.entry(table.to_string()).or_default() += fp;
    }

    fn sub(&mut self, table: &str, fp: Fingerprint) {
        *self.deltas.entry(table.to_string()).or_default() -= fp;
    }

    /// Inserts complete rows of a user table (rows put back by an undelete): one multi-row
    /// INSERT and one fingerprint read per chunk of rows, not per row.
    pub fn insert_rows(&mut self, conn: &Connection, rows: &TableRows) -> Result<(), StorageError> {
        use super::images::{any_equals_where, BATCH_ROWS};
        let key = crate::domain::tables::user_table(&rows.table).map_or(&[][..], |t| t.key);
        let cols = rows
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let one = format!("({})", vec!["?"; rows.columns.len()].join(", "));
        for chunk in rows.rows.chunks(BATCH_ROWS) {
            let keys = chunk_keys(rows, chunk)?;
            let sql = format!(
                "INSERT INTO {} ({cols}) VALUES {}",
                quote_ident(&rows.table),
                vec![one.as_str(); chunk.len()].join(", ")
            );
            conn.prepare_cached(&sql)?
                .execute(params_from_iter(chunk.iter().flatten()))?;
            let key_params: Vec<&dyn ToSql> =
                keys.iter().flatten().map(|k| k as &dyn ToSql).collect();
            let fp = scan_rows(
                conn,
                &rows.table,
                &any_equals_where(key, chunk.len()),
                &key_params,
            )?;
            self.add(&rows.table, fp);
            self.image(
                true,
                TableRows {
                    table: rows.table.clone(),
                    columns: rows.columns.clone(),
                    rows: chunk.to_vec(),
                },
            );
        }
        Ok(())
    }

    /// Deletes the rows a before-image names, by key (replaying a shipped change). Returns how
    /// many went; fewer than the image holds means the database is not where the image was.
    pub fn delete_rows(
        &mut self,
        conn: &Connection,
        rows: &TableRows,
    ) -> Result<i64, StorageError> {
        use super::images::{any_equals_where, BATCH_ROWS};
        let key = crate::domain::tables::user_table(&rows.table).map_or(&[][..], |t| t.key);
        let mut n = 0;
        for chunk in rows.rows.chunks(BATCH_ROWS) {
            let keys = chunk_keys(rows, chunk)?;
            let params: Vec<&dyn ToSql> = keys.iter().flatten().map(|k| k as &dyn ToSql).collect();
            n += self.delete(
                conn,
                &rows.table,
                &any_equals_where(key, chunk.len()),
                &params,
            )?;
        }
        Ok(n)
    }

    /// Inserts one row; `key_where` selects exactly that row afterwards (by primary key). The
    /// row's image is what was inserted (every column of the user tables is written).
    pub fn insert(
        &mut self,
        conn: &Connection,
        table: &str,
        columns: &[&str],
        values: Vec<Datum>,
        key_where: &str,
        key_params: &[&dyn ToSql],
    ) -> Result<(), StorageError> {
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let marks = vec!["?"; columns.len()].join(", ");
        let sql = format!(
            "INSERT INTO {} ({cols}) VALUES ({marks})",
            quote_ident(table)
        );
        conn.prepare_cached(&sql)?
            .execute(params_from_iter(values.iter()))?;
        let fp = scan_rows(conn, table, key_where, key_params)?;
        self.add(table, fp);
        self.image(
            true,
            TableRows {
                table: table.to_string(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                rows: vec![values],
            },
        );
        Ok(())
    }

    /// Deletes the rows matching `where_sql`, returning how many went.
    pub fn delete(
        &mut self,
        conn: &Connection,
        table: &str,
        where_sql: &str,
        params: &[&dyn ToSql],
    ) -> Result<i64, StorageError> {
        let (rows, fp) = delete_returning(conn, table, where_sql, params)?;
        if fp.rows == 0 {
            return Ok(0);
        }
        self.image(false, rows);
        self.sub(table, fp);
        self.removed.push((table.to_string(), fp.rows));
        Ok(fp.rows)
    }

    /// Same as [`Changes::delete`] with owned parameters (cascade conditions build these).
    pub fn delete_owned(
        &mut self,
        conn: &Connection,
        table: &str,
        where_sql: &str,
        params: &[Value],
    ) -> Result<i64, StorageError> {
        let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
        self.delete(conn, table, where_sql, &refs)
    }

    /// Sets `columns` to `values` on the rows matching `where_sql`.
    pub fn update(
        &mut self,
        conn: &Connection,
        table: &str,
        columns: &[&str],
        values: &[Value],
        where_sql: &str,
        where_params: &[&dyn ToSql],
    ) -> Result<(), StorageError> {
        let (rows, before) = read_rows_fingerprinted(conn, table, where_sql, where_params)?;
        self.image(false, rows);
        let set = columns
            .iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE {} SET {set} WHERE {where_sql}", quote_ident(table));
        let params = values
            .iter()
            .map(|v| v as &dyn ToSql)
            .chain(where_params.iter().copied());
        conn.prepare_cached(&sql)?
            .execute(params_from_iter(params))?;
        let (rows, after) = read_rows_fingerprinted(conn, table, where_sql, where_params)?;
        self.image(true, rows);
        self.sub(table, before);
        self.add(table, after);
        Ok(())
    }
}

/// The key of every row of `chunk` (rows of `rows`' table): an image of a table without a
/// declared key cannot be matched row by row.
fn chunk_keys(rows: &TableRows, chunk: &[Vec<Datum>]) -> Result<Vec<Vec<Datum>>, StorageError> {
    chunk
        .iter()
        .map(|row| crate::domain::rows::key_of(&rows.table, &rows.columns, row))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| StorageError::ImageWithoutKey {
            table: rows.table.clone(),
        })
}
