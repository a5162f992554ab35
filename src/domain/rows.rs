//! Complete row images: the values of stored rows, per table, as an event records every row a
//! change touched (before-images of what it removed or overwrote, after-images of what it
//! wrote). Undelete, history and diffs are built from them. The JSON is compact: the columns
//! once per table, each row a list of plain values (a blob as `{"b64": …}`).

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::tables::children_of;
use super::{Key, Value};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Datum {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<&Value> for Datum {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Datum::Null,
            Value::Int(i) => Datum::Int(*i),
            Value::Text(s) => Datum::Text(s.clone()),
        }
    }
}

impl From<&Key> for Datum {
    fn from(k: &Key) -> Self {
        match k {
            Key::Int(i) => Datum::Int(i64::from(*i)),
            Key::Text(s) => Datum::Text(s.clone()),
        }
    }
}

impl std::fmt::Display for Datum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Datum::Null => f.write_str("NULL"),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Text(s) => f.write_str(s),
            Datum::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        match self {
            Datum::Null => s.serialize_none(),
            Datum::Int(i) => s.serialize_i64(*i),
            Datum::Text(t) => s.serialize_str(t),
            Datum::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &base64::engine::general_purpose::STANDARD.encode(b))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Datum;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, an integer, a string or {\"b64\": …}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Datum, E> {
                Ok(Datum::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Datum, E> {
                Ok(Datum::Null)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
                Ok(Datum::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
                i64::try_from(v)
                    .map(Datum::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
                Ok(Datum::Text(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Datum, A::Error> {
                use base64::Engine;
                let (k, v): (String, String) = m
                    .next_entry()?
                    .ok_or_else(|| de::Error::custom("empty blob"))?;
                if k != "b64" {
                    return Err(de::Error::custom("a blob is {\"b64\": …}"));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Datum::Blob)
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The values of `row` (whose columns are `columns`) at the key columns of user table `table`
/// (None: not a user table, one without a declared key, or a key column missing).
pub fn key_of(table: &str, columns: &[String], row: &[Datum]) -> Option<Vec<Datum>> {
    let key = super::tables::user_table(table)?.key;
    if key.is_empty() {
        return None;
    }
    key.iter()
        .map(|k| {
            let i = columns.iter().position(|c| c == k)?;
            row.get(i).cloned()
        })
        .collect()
}

/// Complete rows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Datum>>,
}

impl TableRows {
    /// Whether some row has `values` at `columns` (false when a column is missing).
    pub fn has_row(&self, columns: &[&str], values: &[&Datum]) -> bool {
        let idx: Option<Vec<usize>> = columns
            .iter()
            .map(|c| self.columns.iter().position(|x| x == c))
            .collect();
        idx.is_some_and(|idx| {
            self.rows
                .iter()
                .any(|r| idx.iter().zip(values).all(|(i, v)| r.get(*i) == Some(*v)))
        })
    }

    /// The value of `column` in `row` (an index into `rows`).
    pub fn get(&self, row: usize, column: &str) -> Option<&Datum> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(i)
    }
}

/// Every row one change touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowImages {
    /// Rows as they were (removed or overwritten), per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<TableRows>,
    /// Rows as the change left them (inserted or updated), per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<TableRows>,
}

impl RowImages {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }

    /// Adds rows of `table` to the before- (`after` false) or after-images, next to rows of
    /// the same table and columns already there.
    pub fn add(&mut self, after: bool, table: &str, columns: Vec<String>, rows: Vec<Vec<Datum>>) {
        if rows.is_empty() {
            return;
        }
        let side = if after {
            &mut self.after
        } else {
            &mut self.before
        };
        match side
            .iter_mut()
            .find(|t| t.table == table && t.columns == columns)
        {
            Some(t) => t.rows.extend(rows),
            None => side.push(TableRows {
                table: table.to_string(),
                columns,
                rows,
            }),
        }
    }

    /// Rows per table of one side.
    pub fn counts(side: &[TableRows]) -> Vec<(String, i64)> {
        side.iter()
            .map(|t| (t.table.clone(), t.rows.len() as i64))
            .collect()
    }
}

/// One row, named by its key, followed through row images: its own images and those of the
/// rows that reference it directly (links, set memberships). What a per-entity history lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub table: &'static str,
    /// Key columns and values.
    pub key: Vec<(&'static str, Datum)>,
}

impl Subject {
    /// The references whose parent is the subject's table, with the child columns matched to
    /// the subject's key values.
    fn referrers(&self) -> impl Iterator<Item = (&'static str, Vec<&'static str>, Vec<&Datum>)> {
        children_of(self.table).filter_map(|r| {
            let values = r
                .parent_cols
                .iter()
                .map(|p| self.key.iter().find(|(k, _)| k == p).map(|(_, v)| v))
                .collect::<Option<Vec<&Datum>>>()?;
            Some((r.child, r.child_cols.to_vec(), values))
        })
    }

    /// What selects the subject's rows: its own row by key, and each table's rows referencing
    /// it (table, columns, values).
    pub fn selections(&self) -> Vec<(&'static str, Vec<&'static str>, Vec<&Datum>)> {
        let (cols, values): (Vec<&'static str>, Vec<&Datum>) =
            self.key.iter().map(|(c, v)| (*c, v)).unzip();
        std::iter::once((self.table, cols, values))
            .chain(self.referrers())
            .collect()
    }

    /// Tables whose images can show the subject: its own and those referencing it.
    pub fn tables(&self) -> Vec<&'static str> {
        let mut t: Vec<&'static str> = std::iter::once(self.table)
            .chain(self.referrers().map(|(child, ..)| child))
            .collect();
        t.dedup();
        t
    }

    /// Whether `rows` hold the subject's row or a row referencing it.
    pub fn seen_in(&self, rows: &TableRows) -> bool {
        if rows.table == self.table {
            let (cols, values): (Vec<&str>, Vec<&Datum>) =
                self.key.iter().map(|(c, v)| (*c, v)).unzip();
            if rows.has_row(&cols, &values) {
                return true;
            }
        }
        self.referrers()
            .any(|(child, cols, values)| rows.table == child && rows.has_row(&cols, &values))
    }

    /// Whether any image of `images` shows the subject.
    pub fn seen_in_images(&self, images: &RowImages) -> bool {
        images
            .before
            .iter()
            .chain(&images.after)
            .any(|t| self.seen_in(t))
    }
}

/// Why a row cannot be put back by an undelete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConflictKind {
    /// Another row holds the key now.
    KeyReused,
    /// The same row is back already.
    AlreadyPresent,
    /// The log holds an undelete of this very delete: a delete is undone once.
    AlreadyUndeleted,
    /// A row it references is gone and not among the rows put back.
    ParentMissing,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::KeyReused => "KEY_REUSED",
            ConflictKind::AlreadyPresent => "ALREADY_PRESENT",
            ConflictKind::AlreadyUndeleted => "ALREADY_UNDELETED",
            ConflictKind::ParentMissing => "PARENT_MISSING",
        }
    }
}

/// One row an undelete cannot put back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub table: String,
    /// The row's key values, "/"-joined.
    pub key: String,
    pub kind: ConflictKind,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_compactly() {
        let mut im = RowImages::default();
        im.add(
            false,
            "area_geom",
            vec!["geom_id".into(), "name".into(), "geo_shape".into()],
            vec![vec![
                Datum::Int(7),
                Datum::Text("x \"y\"".into()),
                Datum::Blob(vec![0, 1, 255]),
            ]],
        );
        im.add(
            false,
            "area_geom",
            vec!["geom_id".into(), "name".into(), "geo_shape".into()],
            vec![vec![Datum::Int(8), Datum::Null, Datum::Null]],
        );
        assert_eq!(im.before.len(), 1, "same table, same columns: one entry");
        let json = serde_json::to_string(&im).unwrap();
        assert_eq!(
            json,
            r#"{"before":[{"table":"area_geom","columns":["geom_id","name","geo_shape"],"rows":[[7,"x \"y\"",{"b64":"AAH/"}],[8,null,null]]}]}"#
        );
        assert_eq!(serde_json::from_str::<RowImages>(&json).unwrap(), im);
        assert_eq!(
            serde_json::from_str::<RowImages>("{}").unwrap(),
            RowImages::default()
        );
    }
}
