//! The table inventory: which tables hold user data, which belong to the service, and every
//! reference between them. Cascade deletes, delete-impact previews, orphan checks and
//! fingerprints are all derived from this one list, so they cannot disagree.

/// A user (LNRS) table and its primary-key columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

const fn t(name: &'static str, key: &'static [&'static str]) -> TableDef {
    TableDef { name, key }
}

/// Every table holding LNRS data, parents before children. Snapshots fingerprint these and a
/// restore brings them back.
pub const USER_TABLES: &[TableDef] = &[
    t("measure", &["measure_id"]),
    t("area", &["area_id"]),
    t("priority", &["priority_id"]),
    t("species", &["species_id"]),
    t("grant_table", &["grant_id"]),
    t("habitat", &["habitat_id"]),
    t("measure_type", &["measure_type_id"]),
    t("stakeholder", &["stakeholder_id"]),
    t("benefits", &["benefit_id"]),
    t("area_funding_schemes", &["id"]),
    t("area_geom", &["geom_id"]),
    t("measure_has_type", &["measure_id", "measure_type_id"]),
    t("measure_has_stakeholder", &["measure_id", "stakeholder_id"]),
    t("measure_has_benefits", &["measure_id", "benefit_id"]),
    t("measure_has_species", &["measure_id", "species_id"]),
    t(
        "measure_area_priority",
        &["measure_id", "area_id", "priority_id"],
    ),
    t(
        "measure_area_priority_grant",
        &["measure_id", "area_id", "priority_id", "grant_id"],
    ),
    t(
        "species_area_priority",
        &["species_id", "area_id", "priority_id"],
    ),
    t("habitat_creation_area", &["habitat_id", "area_id"]),
    t("habitat_management_area", &["habitat_id", "area_id"]),
];

/// Tables owned by the service. A restore carries the event log and request log over from the
/// live database (the log never rewinds); the schema version comes with the snapshot.
pub const EVENT_LOG_TABLE: &str = "lnrs_event_log";
pub const REQUEST_LOG_TABLE: &str = "lnrs_request_log";
pub const SCHEMA_VERSION_TABLE: &str = "lnrs_schema_version";
pub const CARRIED_OVER_TABLES: &[&str] = &[EVENT_LOG_TABLE, REQUEST_LOG_TABLE];

/// `child.child_cols` must match a row of `parent.parent_cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub child: &'static str,
    pub child_cols: &'static [&'static str],
    pub parent: &'static str,
    pub parent_cols: &'static [&'static str],
}

const fn r(
    child: &'static str,
    child_cols: &'static [&'static str],
    parent: &'static str,
    parent_cols: &'static [&'static str],
) -> Reference {
    Reference {
        child,
        child_cols,
        parent,
        parent_cols,
    }
}

const MAP_KEY: &[&str] = &["measure_id", "area_id", "priority_id"];

/// Every reference in the schema (what FOREIGN KEYs would declare if DuckDB could cascade
/// atomically). MAPG references MAP as a whole; its measure, area and priority are reached
/// through MAP, which is why MAPG goes whenever its MAP link goes.
pub const REFERENCES: &[Reference] = &[
    r(
        "measure_has_type",
        &["measure_id"],
        "measure",
        &["measure_id"],
    ),
    r(
        "measure_has_type",
        &["measure_type_id"],
        "measure_type",
        &["measure_type_id"],
    ),
    r(
        "measure_has_stakeholder",
        &["measure_id"],
        "measure",
        &["measure_id"],
    ),
    r(
        "measure_has_stakeholder",
        &["stakeholder_id"],
        "stakeholder",
        &["stakeholder_id"],
    ),
    r(
        "measure_has_benefits",
        &["measure_id"],
        "measure",
        &["measure_id"],
    ),
    r(
        "measure_has_benefits",
        &["benefit_id"],
        "benefits",
        &["benefit_id"],
    ),
    r(
        "measure_has_species",
        &["measure_id"],
        "measure",
        &["measure_id"],
    ),
    r(
        "measure_has_species",
        &["species_id"],
        "species",
        &["species_id"],
    ),
    r(
        "measure_area_priority",
        &["measure_id"],
        "measure",
        &["measure_id"],
    ),
    r("measure_area_priority", &["area_id"], "area", &["area_id"]),
    r(
        "measure_area_priority",
        &["priority_id"],
        "priority",
        &["priority_id"],
    ),
    r(
        "measure_area_priority_grant",
        MAP_KEY,
        "measure_area_priority",
        MAP_KEY,
    ),
    r(
        "measure_area_priority_grant",
        &["grant_id"],
        "grant_table",
        &["grant_id"],
    ),
    r(
        "species_area_priority",
        &["species_id"],
        "species",
        &["species_id"],
    ),
    r("species_area_priority", &["area_id"], "area", &["area_id"]),
    r(
        "species_area_priority",
        &["priority_id"],
        "priority",
        &["priority_id"],
    ),
    r(
        "habitat_creation_area",
        &["habitat_id"],
        "habitat",
        &["habitat_id"],
    ),
    r("habitat_creation_area", &["area_id"], "area", &["area_id"]),
    r(
        "habitat_management_area",
        &["habitat_id"],
        "habitat",
        &["habitat_id"],
    ),
    r(
        "habitat_management_area",
        &["area_id"],
        "area",
        &["area_id"],
    ),
    r("area_funding_schemes", &["area_id"], "area", &["area_id"]),
    r("area_geom", &["area_id"], "area", &["area_id"]),
];

/// The definition of a user table, if `name` is one.
pub fn user_table(name: &str) -> Option<&'static TableDef> {
    USER_TABLES.iter().find(|t| t.name == name)
}

/// References whose parent is `table` (the rows a delete of `table` must take with it).
pub fn children_of(table: &str) -> impl Iterator<Item = &'static Reference> + '_ {
    REFERENCES.iter().filter(move |r| r.parent == table)
}

/// References whose child is `table` (what an insert into `table` must find).
pub fn parents_of(table: &str) -> impl Iterator<Item = &'static Reference> + '_ {
    REFERENCES.iter().filter(move |r| r.child == table)
}

/// Quotes an identifier for SQL (several LNRS columns are reserved words: order, class, …).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A file path as an SQL string literal, quotes included (`ATTACH '…'`): a `'` in the path is
/// doubled, so the statement opens exactly that file and nothing is injected.
pub fn quote_path(path: &std::path::Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// Key columns that may hold NULL: the original app allowed MAPG rows without a grant (an
/// unfunded row), and imports keep them. The API shows and addresses such a NULL as "".
pub const NULLABLE_KEY_COLUMNS: &[&str] = &["grant_id"];

/// A key column as the API sees it: a NULL in a nullable key column reads as "".
pub fn key_expr(column: &str) -> String {
    if NULLABLE_KEY_COLUMNS.contains(&column) {
        format!("coalesce({}, '')", quote_ident(column))
    } else {
        quote_ident(column)
    }
}

/// `column = ?` for a value bound exactly as stored (row images): a NULL bound to a nullable
/// key column matches the NULL stored there.
pub fn column_equals(column: &str) -> String {
    if NULLABLE_KEY_COLUMNS.contains(&column) {
        format!("{} IS NOT DISTINCT FROM ?", quote_ident(column))
    } else {
        format!("{} = ?", quote_ident(column))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_become_string_literals_with_quotes_doubled() {
        let p = std::path::Path::new("/data/o'brien's/live.duckdb");
        assert_eq!(super::quote_path(p), "'/data/o''brien''s/live.duckdb'");
    }

    use super::*;

    #[test]
    fn every_reference_names_known_tables_and_matching_arity() {
        for r in REFERENCES {
            assert!(user_table(r.child).is_some(), "{}", r.child);
            assert!(user_table(r.parent).is_some(), "{}", r.parent);
            assert_eq!(r.child_cols.len(), r.parent_cols.len(), "{r:?}");
        }
    }

    #[test]
    fn cascade_children_match_the_domain_table() {
        let kids = |t: &str| {
            let mut v: Vec<_> = children_of(t).map(|r| r.child).collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(
            kids("area"),
            [
                "area_funding_schemes",
                "area_geom",
                "habitat_creation_area",
                "habitat_management_area",
                "measure_area_priority",
                "species_area_priority"
            ]
        );
        assert_eq!(kids("grant_table"), ["measure_area_priority_grant"]);
        assert_eq!(
            kids("measure_area_priority"),
            ["measure_area_priority_grant"]
        );
        assert_eq!(
            kids("habitat"),
            ["habitat_creation_area", "habitat_management_area"]
        );
    }
}
