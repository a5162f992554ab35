//! The user data at one point in time, in memory: every row of every user table, by key. Built
//! from a snapshot's or the live database's tables and moved forward by the row images events
//! carry; two of them give a row-by-row diff. Pure: reading the tables is the caller's job.

use std::collections::BTreeMap;

use super::rows::{key_of, Datum, RowImages, TableRows};

/// One table's rows by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    pub columns: Vec<String>,
    /// Key values → the whole row, in `columns` order.
    pub rows: BTreeMap<Vec<Datum>, Vec<Datum>>,
}

impl TableState {
    /// The key of `row` (in `columns` order): the table's key columns, or the whole row for a
    /// table without a declared key.
    fn key(table: &str, columns: &[String], row: &[Datum]) -> Vec<Datum> {
        key_of(table, columns, row).unwrap_or_else(|| row.to_vec())
    }

    /// `row` (whose columns are `columns`) in this table's column order; a column the image
    /// lacks (an image from an older schema) is NULL.
    fn aligned(&self, columns: &[String], row: &[Datum]) -> Vec<Datum> {
        if columns == self.columns.as_slice() {
            return row.to_vec();
        }
        self.columns
            .iter()
            .map(|c| {
                columns
                    .iter()
                    .position(|x| x == c)
                    .and_then(|i| row.get(i).cloned())
                    .unwrap_or(Datum::Null)
            })
            .collect()
    }
}

/// Every user table's rows at one point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataState {
    pub tables: BTreeMap<String, TableState>,
}

impl DataState {
    /// The state holding exactly `tables`.
    pub fn from_tables(tables: Vec<TableRows>) -> Self {
        let mut state = DataState::default();
        for t in tables {
            let ts = state.tables.entry(t.table.clone()).or_default();
            ts.columns = t.columns.clone();
            for row in t.rows {
                ts.rows
                    .insert(TableState::key(&t.table, &t.columns, &row), row);
            }
        }
        state
    }

    /// Moves the state past one change: its before-images leave, its after-images arrive
    /// (an update's row is in both, so it ends up with its new values). Tables this state
    /// does not hold (filtered out) are skipped.
    pub fn apply(&mut self, images: &RowImages) {
        for t in &images.before {
            if let Some(ts) = self.tables.get_mut(&t.table) {
                for row in &t.rows {
                    ts.rows.remove(&TableState::key(&t.table, &t.columns, row));
                }
            }
        }
        for t in &images.after {
            if let Some(ts) = self.tables.get_mut(&t.table) {
                for row in &t.rows {
                    let row = ts.aligned(&t.columns, row);
                    let key = TableState::key(&t.table, &ts.columns, &row);
                    ts.rows.insert(key, row);
                }
            }
        }
    }
}

/// The rows a run of changes touched, as they were before its first change and after its
/// last: two sparse states whose [`diff`] equals the diff of the whole states around the run,
/// because a row no image names is the same on both sides. This is what lets a diff between two
/// points of one timeline be computed from the log alone, without reading either state.
pub fn net_states<'a>(
    changes: impl IntoIterator<Item = &'a RowImages>,
    tables: &[&str],
) -> (DataState, DataState) {
    let changes: Vec<&RowImages> = changes.into_iter().collect();
    let mut early = DataState::default();
    let mut seen = std::collections::BTreeSet::new();
    for images in &changes {
        // Within a change the before-images come first: an update's row was there before it.
        let sides = images
            .before
            .iter()
            .map(|t| (false, t))
            .chain(images.after.iter().map(|t| (true, t)));
        for (after, t) in sides.filter(|(_, t)| tables.contains(&t.table.as_str())) {
            let ts = early
                .tables
                .entry(t.table.clone())
                .or_insert_with(|| TableState {
                    columns: t.columns.clone(),
                    ..TableState::default()
                });
            for row in &t.rows {
                let row = ts.aligned(&t.columns, row);
                let key = TableState::key(&t.table, &ts.columns, &row);
                // First seen in an after-image: the row did not exist before the run.
                if seen.insert((t.table.clone(), key.clone())) && !after {
                    ts.rows.insert(key, row);
                }
            }
        }
    }
    let mut late = early.clone();
    for images in &changes {
        late.apply(images);
    }
    (early, late)
}

/// How a row differs between two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange {
    Added,
    Removed,
    Changed,
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDiff {
    pub table: String,
    pub change: RowChange,
    pub before: Option<Vec<Datum>>,
    pub after: Option<Vec<Datum>>,
}

/// What differs in one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    pub table: String,
    pub columns: Vec<String>,
    pub added: i64,
    pub removed: i64,
    pub changed: i64,
}

/// The differences from `from` to `to`, per table in `tables` order, and every differing row
/// (table, then key order). Rows are compared by name when the two sides' columns differ.
pub fn diff(from: &DataState, to: &DataState, tables: &[&str]) -> (Vec<TableDiff>, Vec<RowDiff>) {
    let empty = TableState::default();
    let mut summary = Vec::new();
    let mut rows = Vec::new();
    for table in tables {
        let a = from.tables.get(*table).unwrap_or(&empty);
        let b = to.tables.get(*table).unwrap_or(&empty);
        let columns = if b.columns.is_empty() {
            a.columns.clone()
        } else {
            b.columns.clone()
        };
        let mut d = TableDiff {
            table: table.to_string(),
            columns,
            ..TableDiff::default()
        };
        let mut keys: Vec<&Vec<Datum>> = a.rows.keys().chain(b.rows.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let change = match (a.rows.get(key), b.rows.get(key)) {
                (Some(_), None) => RowChange::Removed,
                (None, Some(_)) => RowChange::Added,
                (Some(x), Some(y)) if b.aligned(&a.columns, x) != *y => RowChange::Changed,
                _ => continue,
            };
            match change {
                RowChange::Added => d.added += 1,
                RowChange::Removed => d.removed += 1,
                RowChange::Changed => d.changed += 1,
            }
            rows.push(RowDiff {
                table: table.to_string(),
                change,
                before: a.rows.get(key).cloned(),
                after: b.rows.get(key).cloned(),
            });
        }
        summary.push(d);
    }
    (summary, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure_rows(rows: Vec<(i64, &str)>) -> TableRows {
        TableRows {
            table: "measure".into(),
            columns: vec!["measure_id".into(), "measure".into()],
            rows: rows
                .into_iter()
                .map(|(i, n)| vec![Datum::Int(i), Datum::Text(n.into())])
                .collect(),
        }
    }

    #[test]
    fn applying_images_and_diffing_agree() {
        let from = DataState::from_tables(vec![measure_rows(vec![(1, "a"), (2, "b"), (3, "c")])]);
        let mut to = from.clone();
        let mut images = RowImages::default();
        // Delete 1, update 2 (before and after), insert 4.
        images.before.push(measure_rows(vec![(1, "a"), (2, "b")]));
        images.after.push(measure_rows(vec![(2, "B"), (4, "d")]));
        to.apply(&images);
        assert_eq!(
            to,
            DataState::from_tables(vec![measure_rows(vec![(2, "B"), (3, "c"), (4, "d")])])
        );
        let (tables, rows) = diff(&from, &to, &["measure"]);
        assert_eq!(
            (tables[0].added, tables[0].removed, tables[0].changed),
            (1, 1, 1)
        );
        let kinds: Vec<(RowChange, Datum)> = rows
            .iter()
            .map(|r| {
                let row = r.after.as_ref().or(r.before.as_ref()).unwrap();
                (r.change, row[0].clone())
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (RowChange::Removed, Datum::Int(1)),
                (RowChange::Changed, Datum::Int(2)),
                (RowChange::Added, Datum::Int(4)),
            ]
        );
        assert!(diff(&to, &to, &["measure"]).1.is_empty());
    }

    /// A deterministic run of inserts, updates and deletes over a small key space: the diff of
    /// the whole states around every sub-run equals the diff of its net states.
    #[test]
    fn net_states_diff_like_the_whole_states() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut states = vec![DataState::from_tables(vec![measure_rows(vec![
            (1, "a"),
            (2, "b"),
            (3, "c"),
        ])])];
        let mut changes = Vec::new();
        for step in 0..200 {
            let cur = states.last().unwrap().clone();
            let rows = &cur.tables["measure"].rows;
            let id = 1 + next(8) as i64;
            let key = vec![Datum::Int(id)];
            let name = format!("v{step}");
            let mut images = RowImages::default();
            match (rows.get(&key), next(3)) {
                (Some(old), 0) => images.before.push(measure_rows(vec![(id, text(&old[1]))])),
                (Some(old), _) => {
                    images.before.push(measure_rows(vec![(id, text(&old[1]))]));
                    images.after.push(measure_rows(vec![(id, &name)]));
                }
                (None, _) => images.after.push(measure_rows(vec![(id, &name)])),
            }
            let mut after = cur;
            after.apply(&images);
            states.push(after);
            changes.push(images);
        }
        for _ in 0..300 {
            let (a, b) = (next(201) as usize, next(201) as usize);
            let (lo, hi) = (a.min(b), a.max(b));
            let (early, late) = net_states(&changes[lo..hi], &["measure"]);
            let whole = diff(&states[lo], &states[hi], &["measure"]);
            let net = diff(&early, &late, &["measure"]);
            assert_eq!(whole.1, net.1, "rows {lo}..{hi}");
            let counts = |d: &[TableDiff]| {
                d.iter()
                    .map(|t| (t.added, t.removed, t.changed))
                    .collect::<Vec<_>>()
            };
            assert_eq!(counts(&whole.0), counts(&net.0), "counts {lo}..{hi}");
        }
    }

    fn text(d: &Datum) -> &str {
        match d {
            Datum::Text(s) => s,
            _ => "",
        }
    }

    #[test]
    fn images_with_other_column_orders_are_aligned_by_name() {
        let mut s = DataState::from_tables(vec![measure_rows(vec![(1, "a")])]);
        let mut images = RowImages::default();
        images.after.push(TableRows {
            table: "measure".into(),
            columns: vec!["measure".into(), "measure_id".into()],
            rows: vec![vec![Datum::Text("z".into()), Datum::Int(1)]],
        });
        s.apply(&images);
        assert_eq!(
            s,
            DataState::from_tables(vec![measure_rows(vec![(1, "z")])])
        );
    }
}
