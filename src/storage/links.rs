//! Link queries: create with reference checks in the same transaction, filtered keyset-paginated
//! list, existence, and the bulk MAP product.

use duckdb::{params_from_iter, Connection, ToSql};

use super::changes::Changes;
use super::entities::exists;
use super::StorageError;
use crate::domain::rows::Datum;
use crate::domain::tables::{key_expr, parents_of, quote_ident};
use crate::domain::{Key, Link, LinkKind, Value};

fn key_where(kind: LinkKind) -> String {
    kind.columns()
        .iter()
        .map(|c| format!("{} = ?", key_expr(c.name)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_params(link: &Link) -> Vec<&dyn ToSql> {
    link.key.iter().map(|k| k as &dyn ToSql).collect()
}

/// Whether the link exists.
pub fn link_exists(conn: &Connection, link: &Link) -> Result<bool, StorageError> {
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        quote_ident(link.kind.table()),
        key_where(link.kind)
    );
    let n: i64 = conn
        .prepare_cached(&sql)?
        .query_row(&key_params(link)[..], |r| r.get(0))?;
    Ok(n > 0)
}

/// Checks every row the link references (a MAPG link: its MAP link and its grant).
pub fn check_references(conn: &Connection, link: &Link) -> Result<(), StorageError> {
    for r in parents_of(link.kind.table()) {
        let values: Vec<&Key> = r.child_cols.iter().filter_map(|c| link.value(c)).collect();
        let cond = r
            .parent_cols
            .iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {cond}",
            quote_ident(r.parent)
        );
        let params: Vec<&dyn ToSql> = values.iter().map(|k| *k as &dyn ToSql).collect();
        let n: i64 = conn
            .prepare_cached(&sql)?
            .query_row(&params[..], |row| row.get(0))?;
        if n == 0 {
            return Err(StorageError::MissingReference {
                table: r.parent,
                column: if r.child_cols.len() == 1 {
                    r.child_cols[0]
                } else {
                    "measure_id, area_id, priority_id"
                },
                value: values
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
            });
        }
    }
    Ok(())
}

/// Creates one link after checking its references; an existing link is AlreadyExists.
pub fn create(conn: &Connection, link: &Link, changes: &mut Changes) -> Result<(), StorageError> {
    check_references(conn, link)?;
    if link_exists(conn, link)? {
        return Err(StorageError::AlreadyExists {
            table: link.kind.table(),
            key: link.id_string(),
        });
    }
    insert(conn, link, changes)
}

/// Inserts a link row (references and duplicates already checked), tracking the change.
fn insert(conn: &Connection, link: &Link, changes: &mut Changes) -> Result<(), StorageError> {
    let cols: Vec<&str> = link.kind.columns().iter().map(|c| c.name).collect();
    changes.insert(
        conn,
        link.kind.table(),
        &cols,
        link.key.iter().map(Datum::from).collect(),
        &key_where(link.kind),
        &key_params(link),
    )
}

pub use crate::domain::query::LinkQuery;

/// One page of links in key order, plus the total matching the filters.
pub fn list(conn: &Connection, q: &LinkQuery) -> Result<(Vec<Link>, i64, bool), StorageError> {
    let cols: Vec<&str> = q.kind.columns().iter().map(|c| c.name).collect();
    let mut filter: Vec<String> = q
        .filters
        .iter()
        .map(|(c, _)| format!("{} = ?", key_expr(c)))
        .collect();
    let mut params: Vec<Value> = q.filters.iter().map(|(_, k)| key_value(k)).collect();
    let table = quote_ident(q.kind.table());
    let where_sql = |f: &[String]| {
        if f.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", f.join(" AND "))
        }
    };
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {table} {}", where_sql(&filter)),
        params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    if let Some(after) = &q.after {
        if after.len() != cols.len() {
            return Err(StorageError::InvalidCursor);
        }
        let tuple = cols
            .iter()
            .map(|c| key_expr(c))
            .collect::<Vec<_>>()
            .join(", ");
        filter.push(format!(
            "({tuple}) > ({})",
            vec!["?"; cols.len()].join(", ")
        ));
        params.extend(after.iter().map(key_value));
    }
    let order = cols
        .iter()
        .map(|c| key_expr(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {order} FROM {table} {} ORDER BY {order} LIMIT {}",
        where_sql(&filter),
        q.page_size + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
        q.kind
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(if c.name == "grant_id" {
                    Key::Text(r.get::<_, Option<String>>(i)?.unwrap_or_default())
                } else {
                    Key::Int(r.get(i)?)
                })
            })
            .collect::<duckdb::Result<Vec<_>>>()
    })?;
    let mut links: Vec<Link> = rows
        .map(|k| k.map(|key| Link { kind: q.kind, key }))
        .collect::<Result<_, _>>()?;
    let more = links.len() > q.page_size;
    links.truncate(q.page_size);
    Ok((links, total, more))
}

fn key_value(k: &Key) -> Value {
    match k {
        Key::Int(i) => Value::Int(i64::from(*i)),
        Key::Text(s) => Value::Text(s.clone()),
    }
}

/// Result of a bulk MAP create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub created: Vec<Link>,
    pub skipped_existing: Vec<Link>,
}

/// Creates MAP links for the product measure × area × priority in the caller's transaction.
/// Every id must exist; existing links are skipped and reported.
pub fn bulk_map(
    conn: &Connection,
    measures: &[i32],
    areas: &[i32],
    priorities: &[i32],
    changes: &mut Changes,
) -> Result<BulkOutcome, StorageError> {
    for (ids, table, col) in [
        (measures, "measure", "measure_id"),
        (areas, "area", "area_id"),
        (priorities, "priority", "priority_id"),
    ] {
        for id in ids {
            if !exists(conn, table, col, id)? {
                return Err(StorageError::MissingReference {
                    table,
                    column: col,
                    value: id.to_string(),
                });
            }
        }
    }
    let mut out = BulkOutcome::default();
    for m in measures {
        for a in areas {
            for p in priorities {
                let link = Link {
                    kind: LinkKind::MeasureAreaPriority,
                    key: vec![Key::Int(*m), Key::Int(*a), Key::Int(*p)],
                };
                if link_exists(conn, &link)? {
                    out.skipped_existing.push(link);
                } else {
                    insert(conn, &link, changes)?;
                    out.created.push(link);
                }
            }
        }
    }
    Ok(out)
}

/// The cascade root of a link delete: exactly its own row.
pub fn root(link: &Link) -> super::cascade::RowSet {
    super::cascade::root(
        link.kind.table(),
        &link
            .kind
            .columns()
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>(),
        link.key.iter().map(key_value).collect(),
    )
}
