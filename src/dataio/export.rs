//! Exports of one consistent database file (a copy of the live database taken by the writer,
//! or an assembled snapshot) into files in a scratch directory, each written as it is read —
//! rows are streamed from DuckDB, so memory stays bounded whatever the scale:
//! - CSV: `<relation>.csv`, UTF-8, `;`, header row, RFC 4180 quoting, NULL an empty unquoted
//!   field and the empty string `""`, geometry as WKT (like the original app's export);
//! - Parquet: `<relation>.parquet` (zstd), geometry as WKB, from DuckDB's Arrow batches;
//! - DuckDB: `lnrs.duckdb`, the whole database in this schema without the service's logs,
//!   written in the 1.4 storage format so the original's engine generation opens it too;
//! - GeoJSON: `areas.geojson`, a FeatureCollection with one feature per area.

use std::io::{BufWriter, Write};
use std::path::Path;

use duckdb::types::ValueRef;

use super::{DataIoError, StagedFile};
use crate::domain::entity::EntityKind;
use crate::domain::geometry;
use crate::domain::tables::{quote_ident, quote_path, USER_TABLES};
use crate::storage;

/// The public "LNRS Toolkit" view.
pub const APMG_VIEW: &str = "apmg_slim_vw";
/// Measure-area-priority links with no grant (the original's "unfunded links" export).
pub const UNFUNDED: &str = "unfunded_links";
const UNFUNDED_SQL: &str = "SELECT map.measure_id, m.measure, map.area_id, a.area_name, \
     map.priority_id, p.biodiversity_priority \
     FROM measure_area_priority AS map \
     LEFT JOIN measure AS m ON m.measure_id = map.measure_id \
     LEFT JOIN area AS a ON a.area_id = map.area_id \
     LEFT JOIN priority AS p ON p.priority_id = map.priority_id \
     WHERE NOT EXISTS (SELECT 1 FROM measure_area_priority_grant AS g \
         WHERE g.measure_id = map.measure_id AND g.area_id = map.area_id \
         AND g.priority_id = map.priority_id AND g.grant_id IS NOT NULL) \
     ORDER BY map.measure_id, map.area_id, map.priority_id";
/// The storage format of exported DuckDB files: what the original app's engine (1.4) reads.
const DUCKDB_EXPORT_STORAGE: &str = "v1.4.0";

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
    DuckDb,
    GeoJson,
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// The six entities and the lookups (area_geom and funding schemes included).
    Core,
    /// The link tables.
    Bridges,
    Unfunded,
    Table(String),
}

/// One written file.
#[derive(Debug)]
pub struct ExportedFile {
    pub name: String,
    /// The table or view (empty for a whole database).
    pub table: String,
    /// Rows (features for GeoJSON; -1 for a whole database).
    pub rows: i64,
    pub size: u64,
    pub blake3: blake3::Hash,
    pub file: StagedFile,
}

/// The tables and views a scope names, in export order.
pub fn relations(scope: &Scope) -> Result<Vec<String>, DataIoError> {
    let tables = |f: &dyn Fn(&crate::domain::tables::TableDef) -> bool| -> Vec<String> {
        USER_TABLES
            .iter()
            .filter(|t| f(t))
            .map(|t| t.name.to_string())
            .collect()
    };
    Ok(match scope {
        Scope::All => {
            let mut all = tables(&|_| true);
            all.push(APMG_VIEW.into());
            all
        }
        Scope::Core => tables(&|t| t.key.len() == 1),
        Scope::Bridges => tables(&|t| t.key.len() > 1),
        Scope::Unfunded => vec![UNFUNDED.into()],
        Scope::Table(t) => {
            let known = USER_TABLES.iter().any(|u| u.name == t) || t == APMG_VIEW || t == UNFUNDED;
            if !known {
                return Err(DataIoError::BadRequest(format!(
                    "`{t}` is not a table or view that can be exported"
                )));
            }
            vec![t.clone()]
        }
    })
}

/// Writes the export of `db` (opened read-only) into `dir`.
pub fn export(
    db: &Path,
    format: Format,
    scope: &Scope,
    dir: &Path,
) -> Result<Vec<ExportedFile>, DataIoError> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    match format {
        Format::DuckDb => {
            if *scope != Scope::All {
                return Err(DataIoError::BadRequest(
                    "a DuckDB export is the whole database (scope: all)".into(),
                ));
            }
            let path = dir.join("lnrs.duckdb");
            let staged = StagedFile::adopt(path.clone());
            write_duckdb(db, &path)?;
            out.push(finish("lnrs.duckdb", "", -1, staged)?);
        }
        Format::GeoJson => {
            if !matches!(scope, Scope::All) && *scope != Scope::Table("area".into()) {
                return Err(DataIoError::BadRequest(
                    "a GeoJSON export is of the areas (scope: all or table area)".into(),
                ));
            }
            let conn = storage::open_read_only(db)?;
            let path = dir.join("areas.geojson");
            let staged = StagedFile::adopt(path.clone());
            let n = write_geojson(&conn, &path)?;
            out.push(finish("areas.geojson", "area", n, staged)?);
        }
        Format::Csv | Format::Parquet => {
            let conn = storage::open_read_only(db)?;
            for rel in relations(scope)? {
                let ext = if format == Format::Csv {
                    "csv"
                } else {
                    "parquet"
                };
                let name = format!("{rel}.{ext}");
                let path = dir.join(&name);
                let staged = StagedFile::adopt(path.clone());
                let sql = select(&rel);
                let n = match format {
                    Format::Csv => write_csv(&conn, &sql, &path)?,
                    _ => write_parquet(&conn, &sql, &path)?,
                };
                out.push(finish(&name, &rel, n, staged)?);
            }
        }
    }
    Ok(out)
}

fn finish(
    name: &str,
    table: &str,
    rows: i64,
    file: StagedFile,
) -> Result<ExportedFile, DataIoError> {
    let hash = storage::hash_file(file.path())?;
    Ok(ExportedFile {
        name: name.into(),
        table: table.into(),
        rows,
        size: file.len(),
        blake3: hash,
        file,
    })
}

/// A relation's rows in a stable order (tables by key, views by every column).
fn select(rel: &str) -> String {
    if rel == UNFUNDED {
        return UNFUNDED_SQL.into();
    }
    match USER_TABLES.iter().find(|t| t.name == rel) {
        Some(t) => format!(
            "SELECT * FROM {} ORDER BY {}",
            quote_ident(rel),
            t.key
                .iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("SELECT * FROM {} ORDER BY ALL", quote_ident(rel)),
    }
}

fn write_csv(conn: &duckdb::Connection, sql: &str, path: &Path) -> Result<i64, DataIoError> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let names: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let header: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
    writeln!(out, "{}", header.join(";"))?;
    let geo = names.iter().position(|n| n == "geo_shape");
    let mut n = 0;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        line.clear();
        for i in 0..names.len() {
            if i > 0 {
                line.push(';');
            }
            line.push_str(&csv_value(row.get_ref(i)?, geo == Some(i)));
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        n += 1;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(n)
}

/// One CSV field: quoted when it holds `;`, `"`, CR or LF, or is empty (an empty unquoted field
/// is NULL).
fn csv_field(s: &str) -> String {
    if s.is_empty() || s.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_value(v: ValueRef<'_>, is_geometry: bool) -> String {
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Text(t) => csv_field(&String::from_utf8_lossy(t)),
        ValueRef::Blob(b) if is_geometry => match geometry::wkb_to_wkt(b) {
            Ok(wkt) => csv_field(&wkt),
            Err(_) => csv_field(&hex(b)),
        },
        ValueRef::Blob(b) => csv_field(&hex(b)),
        ValueRef::TinyInt(i) => i.to_string(),
        ValueRef::SmallInt(i) => i.to_string(),
        ValueRef::Int(i) => i.to_string(),
        ValueRef::BigInt(i) => i.to_string(),
        ValueRef::HugeInt(i) => i.to_string(),
        ValueRef::UTinyInt(i) => i.to_string(),
        ValueRef::USmallInt(i) => i.to_string(),
        ValueRef::UInt(i) => i.to_string(),
        ValueRef::UBigInt(i) => i.to_string(),
        ValueRef::Float(f) => f.to_string(),
        ValueRef::Double(f) => f.to_string(),
        ValueRef::Boolean(b) => b.to_string(),
        other => csv_field(&format!("{:?}", other.to_owned())),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_parquet(conn: &duckdb::Connection, sql: &str, path: &Path) -> Result<i64, DataIoError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let pq = |e: parquet::errors::ParquetError| DataIoError::Parquet(e.to_string());
    let mut stmt = conn.prepare(sql)?;
    let batches = stmt.query_arrow([])?;
    let schema = batches.get_schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let file = std::fs::File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(pq)?;
    let mut n = 0;
    for batch in batches {
        n += batch.num_rows() as i64;
        writer.write(&batch).map_err(pq)?;
    }
    let file = writer.into_inner().map_err(pq)?;
    file.sync_all()?;
    Ok(n)
}

/// The whole database in this schema (migrated from scratch, then every user table copied),
/// in a storage format the 1.4 engine reads.
fn write_duckdb(db: &Path, dest: &Path) -> Result<(), DataIoError> {
    let config = duckdb::Config::default().enable_autoload_extension(false)?;
    let conn = duckdb::Connection::open_in_memory_with_flags(config)?;
    conn.execute_batch(&format!(
        "ATTACH {} AS src (READ_ONLY); \
         ATTACH {} AS out (STORAGE_VERSION '{DUCKDB_EXPORT_STORAGE}'); USE out;",
        quote_path(db),
        quote_path(dest)
    ))?;
    storage::schema::migrate(&conn)?;
    for t in USER_TABLES {
        let name = quote_ident(t.name);
        conn.execute_batch(&format!(
            "INSERT INTO out.main.{name} SELECT * FROM src.main.{name}"
        ))?;
    }
    conn.execute_batch("CHECKPOINT out; USE memory; DETACH out; DETACH src;")?;
    drop(conn);
    std::fs::File::open(dest)?.sync_all()?;
    Ok(())
}

/// One feature per area: its fields as properties, its polygons as geometry (null without).
fn write_geojson(conn: &duckdb::Connection, path: &Path) -> Result<i64, DataIoError> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(b"{\"type\":\"FeatureCollection\",\"features\":[\n")?;
    let area = EntityKind::Area.def();
    let cols: Vec<&str> = std::iter::once(area.key)
        .chain(area.columns.iter().map(|c| c.name))
        .collect();
    let mut areas = conn.prepare(&format!(
        "SELECT {} FROM area ORDER BY area_id",
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let mut shapes = conn.prepare(
        "SELECT area_id, geo_shape FROM area_geom WHERE geo_shape IS NOT NULL \
         ORDER BY area_id, geom_id",
    )?;
    // A merge of two ordered streams: one area's polygons in memory at a time.
    let mut shape_rows = shapes.query([])?;
    let mut pending: Option<(i32, Vec<u8>)> = next_shape(&mut shape_rows)?;
    let mut rows = areas.query([])?;
    let mut n = 0i64;
    while let Some(row) = rows.next()? {
        let id: i32 = row.get(0)?;
        let mut props = serde_json::Map::new();
        props.insert(cols[0].into(), id.into());
        for (i, c) in cols.iter().enumerate().skip(1) {
            let v: Option<String> = row.get(i)?;
            props.insert((*c).into(), v.map_or(serde_json::Value::Null, Into::into));
        }
        while pending.as_ref().is_some_and(|(a, _)| *a < id) {
            pending = next_shape(&mut shape_rows)?;
        }
        let mut mine = Vec::new();
        while let Some((a, wkb)) = pending.take() {
            if a != id {
                pending = Some((a, wkb));
                break;
            }
            mine.push(wkb);
            pending = next_shape(&mut shape_rows)?;
        }
        let geometry = geometry::area_geometry(&mine)
            .map_err(|e| DataIoError::BadRequest(format!("area {id}: {e}")))?;
        let feature = serde_json::json!({
            "type": "Feature",
            "geometry": geometry.map(|g| serde_json::to_value(g).unwrap_or_default()),
            "properties": props,
        });
        if n > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut out, &feature).map_err(std::io::Error::other)?;
        n += 1;
    }
    out.write_all(b"\n]}\n")?;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(n)
}

fn next_shape(rows: &mut duckdb::Rows<'_>) -> Result<Option<(i32, Vec<u8>)>, DataIoError> {
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?)),
        None => None,
    })
}
