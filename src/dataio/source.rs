//! Reading the original's tables, whichever form they come in: a DuckDB file (attached
//! read-only: the user's file is never written) or a ZIP of the portal's CSV exports (unpacked
//! in memory under a byte budget, so an archive bomb stops at the limit). Both become the same
//! [`Source`]: each table's column names and its rows in file order, so row numbers in reports
//! are the user's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::DataIoError;
use crate::domain::entity::EntityKind;
use crate::domain::rows::Datum;
use crate::domain::tables::{quote_ident, quote_path, USER_TABLES};
use crate::storage::images::datum;

/// One table of the source.
#[derive(Debug, Clone, Default)]
pub struct SourceTable {
    pub columns: Vec<String>,
    /// In file order: row `i` is the user's row `i + 1`.
    pub rows: Vec<Vec<Datum>>,
}

/// What an upload holds, table by table.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// "DuckDB storage version 64 (v0.10 to v1.x)", "CSV archive (12 files)".
    pub engine: String,
    pub tables: BTreeMap<String, SourceTable>,
    /// Files or tables the source has that are not LNRS tables (ignored, reported).
    pub ignored: Vec<String>,
}

/// Most members a CSV archive may have.
const MAX_MEMBERS: usize = 1000;

/// Reads every LNRS table of a DuckDB file, attached read-only.
pub fn read_duckdb(path: &Path, engine: String) -> Result<Source, DataIoError> {
    let config = duckdb::Config::default().enable_autoload_extension(false)?;
    let conn = duckdb::Connection::open_in_memory_with_flags(config)?;
    conn.execute_batch(&format!("ATTACH {} AS src (READ_ONLY)", quote_path(path)))
        .map_err(|e| {
            tracing::warn!(error = %e, "import: the upload does not open as a database");
            DataIoError::NotLnrsSchema("the file does not open as a DuckDB database".into())
        })?;
    let present: Vec<String> = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() \
             WHERE database_name = 'src' AND schema_name = 'main' ORDER BY table_name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut source = Source {
        engine,
        ..Default::default()
    };
    for name in &present {
        if USER_TABLES.iter().all(|t| t.name != name) {
            if !name.starts_with("lnrs_") {
                source.ignored.push(name.clone());
            }
            continue;
        }
        source.tables.insert(name.clone(), read_table(&conn, name)?);
    }
    require_entities(&source)?;
    Ok(source)
}

fn read_table(conn: &duckdb::Connection, name: &str) -> Result<SourceTable, DataIoError> {
    let columns: Vec<String> = conn
        .prepare(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'src' \
             AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        )?
        .query_map([name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let sql = format!(
        "SELECT * FROM src.main.{} ORDER BY rowid",
        quote_ident(name)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let cells = (0..columns.len())
            .map(|i| row.get_ref(i).map(datum))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(cells);
    }
    Ok(SourceTable { columns, rows: out })
}

/// A source without any of the six entity tables is not an LNRS database.
fn require_entities(source: &Source) -> Result<(), DataIoError> {
    let has_any = EntityKind::ALL
        .iter()
        .any(|k| source.tables.contains_key(k.def().table));
    if has_any {
        return Ok(());
    }
    Err(DataIoError::NotLnrsSchema(
        "none of the LNRS tables (measure, area, priority, species, grant_table, habitat) is in it"
            .into(),
    ))
}

/// Reads every `<table>.csv` of a ZIP archive; at most `max_unpacked` bytes are unpacked.
pub fn read_csv_zip(path: &Path, max_unpacked: u64) -> Result<Source, DataIoError> {
    let bad = |e: zip::result::ZipError| DataIoError::ArchiveInvalid(e.to_string());
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?).map_err(bad)?;
    if zip.len() > MAX_MEMBERS {
        return Err(DataIoError::ArchiveInvalid(format!(
            "{} members; at most {MAX_MEMBERS}",
            zip.len()
        )));
    }
    let mut source = Source::default();
    let mut budget = max_unpacked;
    let mut files = 0;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(bad)?;
        if member.is_dir() {
            continue;
        }
        let name = member
            .name()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if name.starts_with("._") || member.name().starts_with("__MACOSX") {
            continue;
        }
        let Some(table) = name
            .strip_suffix(".csv")
            .filter(|t| USER_TABLES.iter().any(|u| u.name == *t))
        else {
            source.ignored.push(name);
            continue;
        };
        if source.tables.contains_key(table) {
            return Err(DataIoError::ArchiveInvalid(format!("{name} appears twice")));
        }
        // Never trust the member's declared size: count what actually comes out.
        let mut bytes = Vec::new();
        (&mut member)
            .take(budget + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| DataIoError::ArchiveInvalid(format!("{name}: {e}")))?;
        if bytes.len() as u64 > budget {
            return Err(DataIoError::ArchiveTooLarge {
                limit: max_unpacked,
            });
        }
        budget -= bytes.len() as u64;
        source
            .tables
            .insert(table.to_string(), parse_csv(&name, &bytes)?);
        files += 1;
    }
    source.engine = format!("CSV archive ({files} table files)");
    require_entities(&source)?;
    Ok(source)
}

/// Parses one `;`-delimited CSV file with a header (RFC 4180 quoting). An empty unquoted field
/// is NULL, a quoted empty one the empty string.
pub fn parse_csv(file: &str, bytes: &[u8]) -> Result<SourceTable, DataIoError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let records = records(file, bytes)?;
    let mut it = records.into_iter();
    let Some(header) = it.next() else {
        return Err(DataIoError::CsvColumns {
            file: file.into(),
            detail: "the file is empty (no header row)".into(),
        });
    };
    let columns = header
        .into_iter()
        .map(|(f, _)| text(file, 0, f).map(|s| s.trim().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for (i, rec) in it.enumerate() {
        let row = i as u64 + 1;
        if rec.len() != columns.len() {
            return Err(DataIoError::CsvColumns {
                file: file.into(),
                detail: format!(
                    "data row {row} has {} fields; the header has {}",
                    rec.len(),
                    columns.len()
                ),
            });
        }
        let cells = rec
            .into_iter()
            .map(|(f, quoted)| {
                Ok(match (f.is_empty(), quoted) {
                    (true, false) => Datum::Null,
                    _ => Datum::Text(text(file, row, f)?),
                })
            })
            .collect::<Result<Vec<_>, DataIoError>>()?;
        rows.push(cells);
    }
    Ok(SourceTable { columns, rows })
}

fn text(file: &str, row: u64, bytes: Vec<u8>) -> Result<String, DataIoError> {
    String::from_utf8(bytes).map_err(|_| DataIoError::CsvEncoding {
        file: file.into(),
        row,
    })
}

/// One CSV record: each field's bytes and whether it was quoted.
type Record = Vec<(Vec<u8>, bool)>;

/// Splits CSV bytes into records.
fn records(file: &str, b: &[u8]) -> Result<Vec<Record>, DataIoError> {
    let malformed = |detail: String| DataIoError::CsvMalformed {
        file: file.into(),
        detail,
    };
    let mut out: Vec<Record> = Vec::new();
    let mut rec: Record = Vec::new();
    let mut i = 0;
    let line = |out: &Vec<Record>| out.len();
    while i < b.len() {
        let (field, quoted) = if b[i] == b'"' {
            let mut f = Vec::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        return Err(malformed(format!(
                            "a quoted field of record {} is never closed",
                            line(&out)
                        )))
                    }
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => {
                        f.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        f.push(*c);
                        i += 1;
                    }
                }
            }
            if !matches!(b.get(i), None | Some(b';') | Some(b'\n') | Some(b'\r')) {
                return Err(malformed(format!(
                    "text after a closing quote in record {}",
                    line(&out)
                )));
            }
            (f, true)
        } else {
            let start = i;
            while i < b.len() && !matches!(b[i], b';' | b'\n' | b'\r') {
                i += 1;
            }
            (b[start..i].to_vec(), false)
        };
        rec.push((field, quoted));
        match b.get(i) {
            Some(b';') => {
                i += 1;
                if i == b.len() {
                    rec.push((Vec::new(), false));
                }
            }
            Some(b'\r') | Some(b'\n') => {
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                out.push(std::mem::take(&mut rec));
            }
            _ => {}
        }
    }
    if !rec.is_empty() {
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_nulls_and_empty_strings() {
        let t = parse_csv(
            "t.csv",
            b"\xEF\xBB\xBFa;b;c\r\n1;\"x;\"\"y\"\"\nz\";\n2;\"\";plain\n",
        )
        .unwrap();
        assert_eq!(t.columns, ["a", "b", "c"]);
        assert_eq!(
            t.rows,
            vec![
                vec![
                    Datum::Text("1".into()),
                    Datum::Text("x;\"y\"\nz".into()),
                    Datum::Null
                ],
                vec![
                    Datum::Text("2".into()),
                    Datum::Text(String::new()),
                    Datum::Text("plain".into())
                ],
            ]
        );
    }

    #[test]
    fn bad_csv_is_a_clear_error() {
        assert!(matches!(
            parse_csv("t.csv", b"a;b\n1;2;3\n"),
            Err(DataIoError::CsvColumns { .. })
        ));
        assert!(matches!(
            parse_csv("t.csv", b"a;b\n1;\xff\xfe\n"),
            Err(DataIoError::CsvEncoding { row: 1, .. })
        ));
        assert!(matches!(
            parse_csv("t.csv", b"a;b\n1;\"open\n"),
            Err(DataIoError::CsvMalformed { .. })
        ));
        assert!(matches!(
            parse_csv("t.csv", b""),
            Err(DataIoError::CsvColumns { .. })
        ));
    }
}
