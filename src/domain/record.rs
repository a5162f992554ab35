//! Entity rows as values: a [`Record`] is one row of an entity table (key + columns in table
//! order), plus a measure's type/stakeholder/benefit sets. This is what storage reads and
//! writes, events carry as before/after images, and the service converts to typed messages.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::entity::{EntityKind, KeyType};

/// A column value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Text for an optional column: `None` for NULL.
    pub fn opt_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Int(i) => Some(i.to_string()),
            Value::Text(s) => Some(s.clone()),
        }
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

/// An entity's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i32),
    Text(String),
}

impl Key {
    /// Whether this key has the type `kind` uses.
    pub fn fits(&self, kind: EntityKind) -> bool {
        matches!(
            (self, kind.def().key_type),
            (Key::Int(_), KeyType::Int) | (Key::Text(_), KeyType::Text)
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// A measure's sets, replaced as a whole on update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureSets {
    pub measure_type_ids: Vec<i32>,
    pub stakeholder_ids: Vec<i32>,
    pub benefit_ids: Vec<i32>,
}

impl MeasureSets {
    /// Sorted, without duplicates: sets compare and store canonically.
    pub fn normalised(mut self) -> Self {
        for v in [
            &mut self.measure_type_ids,
            &mut self.stakeholder_ids,
            &mut self.benefit_ids,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        self
    }
}

/// One entity row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: EntityKind,
    pub key: Key,
    /// Non-key columns, in `kind.def().columns` order.
    pub values: Vec<Value>,
    /// Measures only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sets: Option<MeasureSets>,
}

impl Record {
    /// The value of a non-key column.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.kind
            .def()
            .column_index(column)
            .and_then(|i| self.values.get(i))
    }
}

/// A new or updated entity as a caller supplied it (before validation and id assignment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: EntityKind,
    /// Required for updates and for grants; ignored for integer-keyed creates.
    pub key: Option<Key>,
    /// Values for every non-key column, in definition order.
    pub values: Vec<Value>,
    pub sets: Option<MeasureSets>,
}
