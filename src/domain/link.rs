//! Links (bridge-table rows) as data: which table each link kind lives in, its key columns and
//! what each column references.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::record::Key;
use super::validate::{validate_text_id, FieldViolation};

/// The link tables callers manage directly. (A measure's types, stakeholders and benefits are
/// managed as sets on the measure itself.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    MeasureAreaPriority,
    MeasureAreaPriorityGrant,
    SpeciesAreaPriority,
    HabitatCreationArea,
    HabitatManagementArea,
    MeasureSpecies,
}

/// A key column of a link and the entity table it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkColumn {
    pub name: &'static str,
    /// The referenced entity table (`grant_table` for grant_id).
    pub parent: &'static str,
}

const fn col(name: &'static str, parent: &'static str) -> LinkColumn {
    LinkColumn { name, parent }
}

const MEASURE: LinkColumn = col("measure_id", "measure");
const AREA: LinkColumn = col("area_id", "area");
const PRIORITY: LinkColumn = col("priority_id", "priority");
const SPECIES: LinkColumn = col("species_id", "species");
const HABITAT: LinkColumn = col("habitat_id", "habitat");
const GRANT: LinkColumn = col("grant_id", "grant_table");

impl LinkKind {
    pub const ALL: [LinkKind; 6] = [
        LinkKind::MeasureAreaPriority,
        LinkKind::MeasureAreaPriorityGrant,
        LinkKind::SpeciesAreaPriority,
        LinkKind::HabitatCreationArea,
        LinkKind::HabitatManagementArea,
        LinkKind::MeasureSpecies,
    ];

    /// The link table; also the stable name used in events and snapshot manifests.
    pub fn table(self) -> &'static str {
        match self {
            LinkKind::MeasureAreaPriority => "measure_area_priority",
            LinkKind::MeasureAreaPriorityGrant => "measure_area_priority_grant",
            LinkKind::SpeciesAreaPriority => "species_area_priority",
            LinkKind::HabitatCreationArea => "habitat_creation_area",
            LinkKind::HabitatManagementArea => "habitat_management_area",
            LinkKind::MeasureSpecies => "measure_has_species",
        }
    }

    /// Key columns in table order.
    pub fn columns(self) -> &'static [LinkColumn] {
        match self {
            LinkKind::MeasureAreaPriority => &[MEASURE, AREA, PRIORITY],
            LinkKind::MeasureAreaPriorityGrant => &[MEASURE, AREA, PRIORITY, GRANT],
            LinkKind::SpeciesAreaPriority => &[SPECIES, AREA, PRIORITY],
            LinkKind::HabitatCreationArea | LinkKind::HabitatManagementArea => &[HABITAT, AREA],
            LinkKind::MeasureSpecies => &[MEASURE, SPECIES],
        }
    }

    pub fn from_table(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.table() == name)
    }
}

/// One link: its kind and its key values in column order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    pub kind: LinkKind,
    pub key: Vec<Key>,
}

impl Link {
    /// Parses [`Link::id_string`] back: the `/`-joined key (only the last column, a grant id,
    /// may itself contain `/`).
    pub fn parse_id(kind: LinkKind, id: &str) -> Option<Link> {
        let cols = kind.columns();
        let key = id
            .splitn(cols.len(), '/')
            .zip(cols)
            .map(|(part, c)| {
                if c.name == GRANT.name {
                    Some(Key::Text(part.to_string()))
                } else {
                    part.parse().ok().map(Key::Int)
                }
            })
            .collect::<Option<Vec<Key>>>()?;
        (key.len() == cols.len()).then_some(Link { kind, key })
    }

    /// The link's row, as a row image (a link row is its key).
    pub fn row(&self) -> super::rows::TableRows {
        super::rows::TableRows {
            table: self.kind.table().to_string(),
            columns: self
                .kind
                .columns()
                .iter()
                .map(|c| c.name.to_string())
                .collect(),
            rows: vec![self.key.iter().map(super::rows::Datum::from).collect()],
        }
    }

    /// Builds a link from optional per-column values (0 / "" = unset), checking that exactly
    /// the kind's columns are set.
    pub fn from_parts(kind: LinkKind, parts: &LinkParts) -> Result<Self, Vec<FieldViolation>> {
        let mut errors = Vec::new();
        let mut key = Vec::new();
        for (name, value) in parts.named() {
            let wanted = kind.columns().iter().any(|c| c.name == name);
            match (wanted, value) {
                (true, None) => {
                    errors.push(FieldViolation::new(name, "is required for this link type"))
                }
                (false, Some(_)) => {
                    errors.push(FieldViolation::new(name, "is not part of this link type"))
                }
                (true, Some(Key::Int(i))) if i <= 0 => {
                    errors.push(FieldViolation::new(name, "must be a positive integer"))
                }
                (true, Some(Key::Text(s))) => match validate_text_id(name, &s) {
                    Ok(()) => key.push((name, Key::Text(s))),
                    Err(v) => errors.push(v),
                },
                (true, Some(k)) => key.push((name, k)),
                (false, None) => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let key = kind
            .columns()
            .iter()
            .filter_map(|c| {
                key.iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, k)| k.clone())
            })
            .collect();
        Ok(Link { kind, key })
    }

    /// Ids rendered for events and manifests: "12/3/7".
    pub fn id_string(&self) -> String {
        self.key
            .iter()
            .map(Key::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The value of one key column.
    pub fn value(&self, column: &str) -> Option<&Key> {
        self.kind
            .columns()
            .iter()
            .position(|c| c.name == column)
            .and_then(|i| self.key.get(i))
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.table(), self.id_string())
    }
}

/// The flat form links arrive in (the proto `Link` message): unset ids are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkParts {
    pub measure_id: Option<i32>,
    pub area_id: Option<i32>,
    pub priority_id: Option<i32>,
    pub species_id: Option<i32>,
    pub habitat_id: Option<i32>,
    pub grant_id: Option<String>,
}

impl LinkParts {
    fn named(&self) -> [(&'static str, Option<Key>); 6] {
        let int = |v: Option<i32>| v.map(Key::Int);
        [
            ("measure_id", int(self.measure_id)),
            ("area_id", int(self.area_id)),
            ("priority_id", int(self.priority_id)),
            ("species_id", int(self.species_id)),
            ("habitat_id", int(self.habitat_id)),
            ("grant_id", self.grant_id.clone().map(Key::Text)),
        ]
    }

    /// The flat form of a link.
    pub fn of(link: &Link) -> Self {
        let int = |c| match link.value(c) {
            Some(Key::Int(i)) => Some(*i),
            _ => None,
        };
        LinkParts {
            measure_id: int("measure_id"),
            area_id: int("area_id"),
            priority_id: int("priority_id"),
            species_id: int("species_id"),
            habitat_id: int("habitat_id"),
            grant_id: match link.value("grant_id") {
                Some(Key::Text(s)) => Some(s.clone()),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back() {
        for (kind, id) in [
            (LinkKind::MeasureAreaPriorityGrant, "1/2/3/CAB/5"),
            (LinkKind::HabitatCreationArea, "4/7"),
        ] {
            let l = Link::parse_id(kind, id).unwrap();
            assert_eq!(l.id_string(), id);
        }
        assert!(Link::parse_id(LinkKind::HabitatCreationArea, "4").is_none());
        assert!(Link::parse_id(LinkKind::HabitatCreationArea, "x/7").is_none());
    }
    use crate::domain::tables::{parents_of, user_table};

    #[test]
    fn link_columns_match_the_table_inventory() {
        for k in LinkKind::ALL {
            let t = user_table(k.table()).expect("link table");
            let cols: Vec<_> = k.columns().iter().map(|c| c.name).collect();
            assert_eq!(t.key, &cols[..]);
            for c in k.columns() {
                assert!(
                    parents_of(k.table()).any(|r| r.child_cols.contains(&c.name)),
                    "{} {}",
                    k.table(),
                    c.name
                );
            }
        }
    }

    #[test]
    fn parts_must_match_the_kind() {
        let parts = LinkParts {
            measure_id: Some(1),
            area_id: Some(2),
            priority_id: Some(3),
            ..Default::default()
        };
        let link = Link::from_parts(LinkKind::MeasureAreaPriority, &parts).unwrap();
        assert_eq!(link.id_string(), "1/2/3");
        assert_eq!(LinkParts::of(&link), parts);
        let err = Link::from_parts(LinkKind::HabitatCreationArea, &parts).unwrap_err();
        let f: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(f, ["measure_id", "priority_id", "habitat_id"]);
    }
}
