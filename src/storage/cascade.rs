//! Cascade plans: from a root row set (an entity or a link), every row that references it,
//! transitively, derived from the table inventory's references. The same plan drives the
//! delete-impact preview and the delete itself, children first, in ONE transaction.

use duckdb::Connection;

use super::changes::Changes;
use super::StorageError;
use crate::domain::rows::TableRows;
use crate::domain::tables::{children_of, quote_ident, user_table, Reference};
use crate::domain::Value;

/// Rows of one table selected by a SQL condition with positional parameters.
#[derive(Debug, Clone)]
pub struct RowSet {
    pub table: &'static str,
    pub where_sql: String,
    pub params: Vec<Value>,
}

/// The root row set for `table` where `key_cols = key_values`.
pub fn root(table: &'static str, key_cols: &[&str], key_values: Vec<Value>) -> RowSet {
    let where_sql = key_cols
        .iter()
        .map(|c| format!("{} = ?", crate::domain::tables::key_expr(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    RowSet {
        table,
        where_sql,
        params: key_values,
    }
}

/// Every row set a delete of `root` removes, in deletion order: children before parents, the
/// root last. A table reached by several paths gets one row set (conditions OR-ed).
pub fn plan(root: RowSet) -> Vec<RowSet> {
    let mut reached: Vec<RowSet> = vec![root];
    let mut frontier = 0;
    while frontier < reached.len() {
        let parent = reached[frontier].clone();
        for r in children_of(parent.table) {
            let child = child_rows(r, &parent);
            match reached.iter_mut().find(|s| s.table == child.table) {
                Some(existing) => {
                    existing.where_sql =
                        format!("({}) OR ({})", existing.where_sql, child.where_sql);
                    existing.params.extend(child.params);
                }
                None => reached.push(child),
            }
        }
        frontier += 1;
    }
    reached.sort_by_key(|s| depth(s.table));
    reached
}

/// Rows of `r.child` pointing at rows of `parent`.
fn child_rows(r: &Reference, parent: &RowSet) -> RowSet {
    let list = |cols: &[&str]| {
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let child = user_table(r.child).map_or(r.child, |t| t.name);
    RowSet {
        table: child,
        where_sql: format!(
            "({}) IN (SELECT {} FROM {} WHERE {})",
            list(r.child_cols),
            list(r.parent_cols),
            quote_ident(parent.table),
            parent.where_sql
        ),
        params: parent.params.clone(),
    }
}

/// Length of the longest reference chain below `table`: deleting in decreasing depth removes
/// every child before the rows its condition refers to.
fn depth(table: &str) -> usize {
    children_of(table)
        .map(|r| 1 + depth(r.child))
        .max()
        .unwrap_or(0)
}

/// Key columns and the key of every row a plan would remove, per table, read in one query each.
pub fn impact(conn: &Connection, plan: &[RowSet]) -> Result<Vec<TableImpact>, StorageError> {
    plan.iter()
        .map(|set| {
            let key = user_table(set.table).map_or(&[][..], |t| t.key);
            let cols = key
                .iter()
                .map(|c| format!("coalesce(CAST({} AS VARCHAR), '')", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let order = key
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {cols} FROM {} WHERE {} ORDER BY {order}",
                quote_ident(set.table),
                set.where_sql
            );
            let mut stmt = conn.prepare(&sql)?;
            let params: Vec<&dyn duckdb::ToSql> =
                set.params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
            let rows = stmt.query_map(&params[..], |row| {
                (0..key.len()).map(|i| row.get::<_, String>(i)).collect()
            })?;
            Ok(TableImpact {
                table: set.table,
                key_columns: key,
                rows: rows.collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// The rows one table would lose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableImpact {
    pub table: &'static str,
    pub key_columns: &'static [&'static str],
    pub rows: Vec<Vec<String>>,
}

/// Runs a plan inside the caller's transaction, recording fingerprint deltas and counts. In
/// plan order (children before the rows their conditions refer to), each table costs one
/// statement that reads its rows with their fingerprint, and a DELETE only when it has rows.
pub fn execute(
    conn: &Connection,
    plan: &[RowSet],
    changes: &mut Changes,
) -> Result<(), StorageError> {
    for set in plan {
        changes.delete_owned(conn, set.table, &set.where_sql, &set.params)?;
    }
    Ok(())
}

/// The complete rows a plan selects, per row set (what a delete of its root would remove).
pub fn read(conn: &Connection, plan: &[RowSet]) -> Result<Vec<TableRows>, StorageError> {
    plan.iter()
        .map(|set| {
            let params: Vec<&dyn duckdb::ToSql> =
                set.params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
            super::images::read_rows(conn, set.table, &set.where_sql, &params)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tables::USER_TABLES;

    fn tables(t: &'static str, key: &str) -> Vec<&'static str> {
        plan(root(t, &[key], vec![Value::Int(1)]))
            .into_iter()
            .map(|s| s.table)
            .collect()
    }

    #[test]
    fn plans_match_the_domain_cascade_table() {
        let mut measure = tables("measure", "measure_id");
        let pos = |t: &str| measure.iter().position(|x| *x == t);
        assert!(pos("measure_area_priority_grant") < pos("measure_area_priority"));
        assert_eq!(measure.last(), Some(&"measure"));
        measure.sort();
        assert_eq!(
            measure,
            [
                "measure",
                "measure_area_priority",
                "measure_area_priority_grant",
                "measure_has_benefits",
                "measure_has_species",
                "measure_has_stakeholder",
                "measure_has_type",
            ]
        );
        let mut area = tables("area", "area_id");
        area.sort();
        assert_eq!(
            area,
            [
                "area",
                "area_funding_schemes",
                "area_geom",
                "habitat_creation_area",
                "habitat_management_area",
                "measure_area_priority",
                "measure_area_priority_grant",
                "species_area_priority",
            ]
        );
        assert_eq!(
            tables("grant_table", "grant_id"),
            ["measure_area_priority_grant", "grant_table"]
        );
        assert!(USER_TABLES.iter().all(|t| depth(t.name) <= 2));
    }
}
