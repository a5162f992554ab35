//! The six LNRS entities as data: their tables, key, columns, validation rules, searchable and
//! orderable columns. Storage and the service are generic over these definitions, so a column
//! is described once.

use serde::{Deserialize, Serialize};

use super::validate::Rule;

/// The six main entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Measure,
    Area,
    Priority,
    Species,
    Habitat,
    Grant,
}

impl EntityKind {
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Measure,
        EntityKind::Area,
        EntityKind::Priority,
        EntityKind::Species,
        EntityKind::Habitat,
        EntityKind::Grant,
    ];

    /// The entity's definition.
    pub fn def(self) -> &'static EntityDef {
        match self {
            EntityKind::Measure => &MEASURE,
            EntityKind::Area => &AREA,
            EntityKind::Priority => &PRIORITY,
            EntityKind::Species => &SPECIES,
            EntityKind::Habitat => &HABITAT,
            EntityKind::Grant => &GRANT,
        }
    }

    /// Stable lower-case name used in events, snapshot manifests and error reasons.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// Parses a stable name back.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// SQL type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    BigInt,
}

/// One non-key column of an entity table.
#[derive(Debug, Clone, Copy)]
pub struct ColumnDef {
    pub name: &'static str,
    pub ty: ColumnType,
    pub required: bool,
    pub rule: Rule,
    /// Derived by the server (e.g. linnaean_name); callers' values are ignored.
    pub output_only: bool,
}

const fn text(name: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        ty: ColumnType::Text,
        required: false,
        rule: Rule::Text,
        output_only: false,
    }
}

const fn required(name: &'static str) -> ColumnDef {
    ColumnDef {
        required: true,
        ..text(name)
    }
}

const fn url(name: &'static str) -> ColumnDef {
    ColumnDef {
        rule: Rule::Url,
        ..text(name)
    }
}

const fn one_of(name: &'static str, required: bool, allowed: &'static [&'static str]) -> ColumnDef {
    ColumnDef {
        required,
        rule: Rule::OneOf(allowed),
        ..text(name)
    }
}

/// Key type of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// INTEGER assigned by the writer inside the insert transaction.
    Int,
    /// Caller-chosen free text (grants), immutable.
    Text,
}

/// Everything the generic storage and service code needs to know about an entity.
#[derive(Debug)]
pub struct EntityDef {
    pub kind: EntityKind,
    pub name: &'static str,
    pub table: &'static str,
    pub key: &'static str,
    pub key_type: KeyType,
    /// Non-key columns in table order.
    pub columns: &'static [ColumnDef],
    /// Columns a `search` text is matched against (case-insensitive substring).
    pub search: &'static [&'static str],
    /// Columns `order_by` accepts (the key is always accepted and is the final tie-breaker).
    pub orderable: &'static [&'static str],
}

impl EntityDef {
    /// Index of a non-key column.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

pub const CORE_SUPPLEMENTARY: &[&str] = &["Core (BNG)", "Supplementary"];
pub const MAPPED_UNMAPPED: &[&str] = &["Mapped", "Unmapped"];
pub const THEMES: &[&str] = &[
    "Grassland and farmland",
    "Heathland and moorland",
    "Marine",
    "Wetlands, rivers and floodplains",
    "Woodland",
    "All habitats",
];
pub const ASSEMBLAGES: &[&str] = &[
    "Birds",
    "Butterflies",
    "Fish",
    "Mammals",
    "Moths",
    "Plants",
    "Reptiles and amphibians",
];
pub const TAXA: &[&str] = &[
    "Bird",
    "Butterfly",
    "Fish",
    "Mammal",
    "Moth",
    "Plant",
    "Reptile/Amphibian",
];

static MEASURE: EntityDef = EntityDef {
    kind: EntityKind::Measure,
    name: "measure",
    table: "measure",
    key: "measure_id",
    key_type: KeyType::Int,
    columns: &[
        required("measure"),
        text("other_priorities_delivered"),
        one_of("core_supplementary", true, CORE_SUPPLEMENTARY),
        one_of("mapped_unmapped", false, MAPPED_UNMAPPED),
        text("relevant_map_layer"),
        url("link_to_further_guidance"),
        text("concise_measure"),
    ],
    search: &[
        "measure",
        "concise_measure",
        "other_priorities_delivered",
        "relevant_map_layer",
    ],
    orderable: &["measure", "core_supplementary", "mapped_unmapped"],
};

static AREA: EntityDef = EntityDef {
    kind: EntityKind::Area,
    name: "area",
    table: "area",
    key: "area_id",
    key_type: KeyType::Int,
    columns: &[
        required("area_name"),
        required("area_description"),
        url("area_link"),
        text("bng_hab_mgt"),
        text("bng_hab_creation"),
    ],
    search: &["area_name", "area_description"],
    orderable: &["area_name"],
};

static PRIORITY: EntityDef = EntityDef {
    kind: EntityKind::Priority,
    name: "priority",
    table: "priority",
    key: "priority_id",
    key_type: KeyType::Int,
    columns: &[
        required("biodiversity_priority"),
        text("simplified_biodiversity_priority"),
        ColumnDef {
            rule: Rule::Theme,
            ..required("theme")
        },
    ],
    search: &[
        "biodiversity_priority",
        "simplified_biodiversity_priority",
        "theme",
    ],
    orderable: &["biodiversity_priority", "theme"],
};

static SPECIES: EntityDef = EntityDef {
    kind: EntityKind::Species,
    name: "species",
    table: "species",
    key: "species_id",
    key_type: KeyType::Int,
    columns: &[
        one_of("taxa", true, TAXA),
        required("common_name"),
        one_of("assemblage", true, ASSEMBLAGES),
        url("species_link"),
        ColumnDef {
            output_only: true,
            ..text("linnaean_name")
        },
        text("usage_key"),
        required("scientific_name"),
        text("status"),
        text("kingdom"),
        text("phylum"),
        text("order"),
        text("family"),
        text("genus"),
        text("species"),
        text("kingdom_key"),
        text("phylum_key"),
        text("class_key"),
        text("order_key"),
        text("family_key"),
        text("genus_key"),
        text("species_key"),
        text("synonym"),
        text("class"),
        text("accepted_usage_key"),
        text("verbatim_name"),
        ColumnDef {
            ty: ColumnType::BigInt,
            rule: Rule::Integer,
            ..text("verbatim_index")
        },
        url("gbif_species_url"),
        url("image_url"),
        text("license"),
        text("attribution"),
        url("photo_url"),
    ],
    search: &[
        "common_name",
        "scientific_name",
        "assemblage",
        "taxa",
        "genus",
        "family",
    ],
    orderable: &["common_name", "scientific_name", "assemblage", "taxa"],
};

static HABITAT: EntityDef = EntityDef {
    kind: EntityKind::Habitat,
    name: "habitat",
    table: "habitat",
    key: "habitat_id",
    key_type: KeyType::Int,
    columns: &[required("habitat")],
    search: &["habitat"],
    orderable: &["habitat"],
};

static GRANT: EntityDef = EntityDef {
    kind: EntityKind::Grant,
    name: "grant",
    table: "grant_table",
    key: "grant_id",
    key_type: KeyType::Text,
    columns: &[
        required("grant_name"),
        required("grant_scheme"),
        url("url"),
        text("grant_summary"),
    ],
    search: &["grant_id", "grant_name", "grant_scheme", "grant_summary"],
    orderable: &["grant_name", "grant_scheme"],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tables::user_table;

    #[test]
    fn every_entity_table_is_a_user_table_keyed_by_its_key() {
        for k in EntityKind::ALL {
            let d = k.def();
            assert_eq!(d.kind, k);
            assert_eq!(user_table(d.table).map(|t| t.key), Some(&[d.key][..]));
            for s in d.search.iter().chain(d.orderable) {
                assert!(d.column_index(s).is_some() || *s == d.key, "{s}");
            }
            assert_eq!(EntityKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn species_has_the_original_32_columns() {
        assert_eq!(SPECIES.columns.len() + 1, 32);
    }
}
