//! Staging an import: the source's rows validated one by one into a new database in this
//! service's schema, parents before children, with a report per table. A row is rejected —
//! with its row number and why — when a value has the wrong type, its key is missing, its key
//! repeats with other values, a reference has no parent among the rows kept, or its geometry is
//! not one; an exact duplicate is folded into the first. The original's legacy quirks are kept as
//! they are (NULLs in columns the API requires for new rows, MAPG rows without a grant) and
//! noted in the report.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use duckdb::types::Value;

use super::source::{Source, SourceTable};
use super::DataIoError;
use crate::domain::entity::EntityKind;
use crate::domain::fingerprint::Fingerprints;
use crate::domain::geometry;
use crate::domain::rows::Datum;
use crate::domain::tables::{TableDef, REFERENCES, USER_TABLES};
use crate::storage::{self, inspect::SchemaInventory};

/// Rejected rows listed per table in a report (the count covers all of them).
pub const LISTED_REJECTS: usize = 100;

/// A row left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub row: u64,
    /// "type", "missing_key", "duplicate_key", "reference", "geometry".
    pub reason: &'static str,
    pub column: Option<String>,
    pub detail: String,
}

/// What happened to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub present: bool,
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub duplicates_collapsed: u64,
    pub rows_rejected: u64,
    pub rejected: Vec<Rejected>,
    pub notes: Vec<String>,
}

/// The staged database's description, for its IMPORT snapshot.
#[derive(Debug, Clone)]
pub struct Staged {
    pub reports: Vec<TableReport>,
    pub fingerprints: Fingerprints,
    pub schema: SchemaInventory,
}

/// A target column.
struct Column {
    name: String,
    ty: String,
    nullable: bool,
}

/// Validates `source` into a new database at `dest` (created, migrated, checkpointed and
/// closed on return).
pub fn stage(source: &Source, dest: &Path) -> Result<Staged, DataIoError> {
    let conn = storage::open(dest)?;
    storage::schema::migrate(&conn)?;
    let mut kept = Kept::default();
    let mut reports = Vec::new();
    for def in USER_TABLES {
        let columns = target_columns(&conn, def.name)?;
        let report = match source.tables.get(def.name) {
            None => TableReport {
                table: def.name.into(),
                ..Default::default()
            },
            Some(t) => stage_table(&conn, def, &columns, t, &mut kept)?,
        };
        reports.push(report);
    }
    let fingerprints = storage::inspect::user_fingerprints(&conn)?;
    let schema = storage::inspect::schema_inventory(&conn)?;
    storage::checkpoint_and_close(conn)?;
    Ok(Staged {
        reports,
        fingerprints,
        schema,
    })
}

fn target_columns(conn: &duckdb::Connection, table: &str) -> Result<Vec<Column>, DataIoError> {
    let mut stmt = conn.prepare(
        "SELECT column_name, data_type, is_nullable FROM duckdb_columns() \
         WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
    )?;
    let cols = stmt
        .query_map([table], |r| {
            Ok(Column {
                name: r.get(0)?,
                ty: r.get(1)?,
                nullable: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(cols)
}

/// Key tuples of kept rows, per (table, columns) a reference looks them up by.
#[derive(Default)]
struct Kept(HashMap<(&'static str, &'static [&'static str]), HashSet<Tuple>>);

/// Values compared by key and reference checks (`Value` has no `Hash`: its debug form, which
/// carries type and content, does).
type Tuple = Vec<String>;

fn tuple<'a>(values: impl Iterator<Item = &'a Value>) -> Tuple {
    values.map(|v| format!("{v:?}")).collect()
}

/// Where each target column comes from: a source column, or (area_geom.geom_id, which the
/// original did not have) the row number.
enum From {
    Source(usize),
    RowNumber,
}

fn mapping(def: &TableDef, columns: &[Column], t: &SourceTable) -> Result<Vec<From>, DataIoError> {
    let mismatch = |detail: String| DataIoError::CsvColumns {
        file: def.name.to_string(),
        detail,
    };
    let extra: Vec<&String> = t
        .columns
        .iter()
        .filter(|c| columns.iter().all(|t| t.name != **c))
        .collect();
    if !extra.is_empty() {
        return Err(mismatch(format!(
            "unexpected column(s) {}",
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    columns
        .iter()
        .map(|c| match t.columns.iter().position(|s| *s == c.name) {
            Some(i) => Ok(From::Source(i)),
            None if def.name == "area_geom" && c.name == "geom_id" => Ok(From::RowNumber),
            None => Err(mismatch(format!("missing column {}", c.name))),
        })
        .collect()
}

fn stage_table(
    conn: &duckdb::Connection,
    def: &'static TableDef,
    columns: &[Column],
    t: &SourceTable,
    kept: &mut Kept,
) -> Result<TableReport, DataIoError> {
    let from = mapping(def, columns, t)?;
    let key_idx: Vec<usize> = def
        .key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| c.name == *k)
                .expect("key column")
        })
        .collect();
    let mut report = TableReport {
        table: def.name.into(),
        present: true,
        rows_read: t.rows.len() as u64,
        ..Default::default()
    };
    let mut seen: HashMap<Tuple, (u64, Vec<Value>)> = HashMap::new();
    let mut nulls: HashMap<&str, u64> = HashMap::new();
    let mut appender = conn.appender(def.name)?;
    for (i, cells) in t.rows.iter().enumerate() {
        let row = i as u64 + 1;
        let checked = convert_row(columns, &from, cells, row)
            .and_then(|values| check_row(def, columns, &key_idx, values, row, kept));
        let values = match checked {
            Ok(v) => v,
            Err(r) => {
                reject(&mut report, r);
                continue;
            }
        };
        let key = tuple(key_idx.iter().map(|k| &values[*k]));
        if let Some((first, earlier)) = seen.get(&key) {
            if *earlier == values {
                report.duplicates_collapsed += 1;
            } else {
                let first = *first;
                reject(
                    &mut report,
                    Rejected {
                        row,
                        reason: "duplicate_key",
                        column: None,
                        detail: format!("the same key as row {first} with other values"),
                    },
                );
            }
            continue;
        }
        for (c, v) in columns.iter().zip(&values) {
            if *v == Value::Null {
                *nulls.entry(c.name.as_str()).or_default() += 1;
            }
        }
        remember(def, columns, &values, kept);
        let params: Vec<&dyn duckdb::ToSql> = values.iter().map(|v| v as _).collect();
        appender.append_row(&params[..])?;
        seen.insert(key, (row, values));
        report.rows_accepted += 1;
    }
    appender.flush()?;
    report.notes = notes(def, &nulls);
    Ok(report)
}

fn reject(report: &mut TableReport, r: Rejected) {
    report.rows_rejected += 1;
    if report.rejected.len() < LISTED_REJECTS {
        report.rejected.push(r);
    }
}

/// Converts each cell to its column's type.
fn convert_row(
    columns: &[Column],
    from: &[From],
    cells: &[Datum],
    row: u64,
) -> Result<Vec<Value>, Rejected> {
    columns
        .iter()
        .zip(from)
        .map(|(c, f)| match f {
            From::RowNumber => Ok(Value::Int(row as i32)),
            From::Source(i) => convert(c, &cells[*i]).map_err(|(reason, detail)| Rejected {
                row,
                reason,
                column: Some(c.name.clone()),
                detail,
            }),
        })
        .collect()
}

fn convert(c: &Column, cell: &Datum) -> Result<Value, (&'static str, String)> {
    let wrong = |what: &str| ("type", format!("{} is not {what}", describe(cell)));
    Ok(match (c.ty.as_str(), cell) {
        (_, Datum::Null) => Value::Null,
        ("INTEGER", Datum::Int(i)) => {
            Value::Int(i32::try_from(*i).map_err(|_| wrong("a 32-bit integer"))?)
        }
        ("INTEGER", Datum::Text(s)) => {
            Value::Int(s.trim().parse().map_err(|_| wrong("an integer"))?)
        }
        ("BIGINT", Datum::Int(i)) => Value::BigInt(*i),
        ("BIGINT", Datum::Text(s)) => {
            Value::BigInt(s.trim().parse().map_err(|_| wrong("an integer"))?)
        }
        ("VARCHAR", Datum::Text(s)) => Value::Text(s.clone()),
        ("VARCHAR", Datum::Int(i)) => Value::Text(i.to_string()),
        ("BLOB", Datum::Blob(b)) => {
            geometry::from_wkb(b).map_err(|e| ("geometry", e.to_string()))?;
            Value::Blob(b.clone())
        }
        ("BLOB", Datum::Text(s)) => {
            Value::Blob(geometry::wkt_to_wkb(s).map_err(|e| ("geometry", e.to_string()))?)
        }
        _ => return Err(wrong(&format!("a {} value", c.ty))),
    })
}

fn describe(cell: &Datum) -> String {
    match cell {
        Datum::Null => "NULL".into(),
        Datum::Int(i) => i.to_string(),
        Datum::Text(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        Datum::Blob(b) => format!("{} bytes", b.len()),
    }
}

/// Missing keys and references to rows that were not kept.
fn check_row(
    def: &'static TableDef,
    columns: &[Column],
    key_idx: &[usize],
    values: Vec<Value>,
    row: u64,
    kept: &Kept,
) -> Result<Vec<Value>, Rejected> {
    for (c, v) in columns.iter().zip(&values) {
        if *v == Value::Null && !c.nullable {
            let is_key = key_idx.iter().any(|k| columns[*k].name == c.name);
            return Err(Rejected {
                row,
                reason: if is_key {
                    "missing_key"
                } else {
                    "missing_value"
                },
                column: Some(c.name.clone()),
                detail: format!("{} is empty", c.name),
            });
        }
    }
    for r in REFERENCES.iter().filter(|r| r.child == def.name) {
        let refs: Vec<&Value> = r
            .child_cols
            .iter()
            .map(|c| &values[columns.iter().position(|x| x.name == *c).expect("column")])
            .collect();
        // A NULL reference (an unfunded MAPG row) references nothing.
        if refs.contains(&&Value::Null) {
            continue;
        }
        let found = kept
            .0
            .get(&(r.parent, r.parent_cols))
            .is_some_and(|s| s.contains(&tuple(refs.iter().copied())));
        if !found {
            return Err(Rejected {
                row,
                reason: "reference",
                column: Some(r.child_cols.join(", ")),
                detail: format!(
                    "{} = {} is not a row of {}",
                    r.child_cols.join(", "),
                    refs.iter().map(|v| show(v)).collect::<Vec<_>>().join("/"),
                    r.parent
                ),
            });
        }
    }
    Ok(values)
}

fn show(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::BigInt(i) => i.to_string(),
        Value::Text(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// Records the tuples later tables' references will look up in this kept row.
fn remember(def: &'static TableDef, columns: &[Column], values: &[Value], kept: &mut Kept) {
    for r in REFERENCES.iter().filter(|r| r.parent == def.name) {
        let t = tuple(
            r.parent_cols
                .iter()
                .map(|c| &values[columns.iter().position(|x| x.name == *c).expect("column")]),
        );
        kept.0
            .entry((r.parent, r.parent_cols))
            .or_default()
            .insert(t);
    }
}

/// The legacy quirks a table kept: NULLs in columns the API requires for new rows, and MAPG rows
/// without a grant.
fn notes(def: &TableDef, nulls: &HashMap<&str, u64>) -> Vec<String> {
    let required: Vec<&str> = EntityKind::ALL
        .iter()
        .map(|k| k.def())
        .filter(|d| d.table == def.name)
        .flat_map(|d| d.columns.iter().filter(|c| c.required).map(|c| c.name))
        .collect();
    let mut out: Vec<String> = required
        .iter()
        .filter_map(|c| nulls.get(c).map(|n| (c, n)))
        .map(|(c, n)| format!("{n} row(s) with NULL {c} kept (required only for API writes)"))
        .collect();
    if def.name == "measure_area_priority_grant" {
        if let Some(n) = nulls.get("grant_id") {
            out.push(format!("{n} row(s) without a grant kept (unfunded)"));
        }
    }
    out
}
