-- LNRS schema, version 1.
--
-- Table and column names are the original app's, so existing exports and users' SQL keep working.
-- Primary keys are declared; FOREIGN KEY constraints are deliberately NOT declared: DuckDB cannot
-- delete a parent and its children in one transaction while they exist (duckdb#13819), so the
-- storage layer checks references itself and verification runs orphan queries instead.

-- Main entities ------------------------------------------------------------------------------

CREATE TABLE measure (
    measure_id                 INTEGER PRIMARY KEY,
    measure                    VARCHAR NOT NULL,
    other_priorities_delivered VARCHAR,
    core_supplementary         VARCHAR NOT NULL,
    mapped_unmapped            VARCHAR,
    relevant_map_layer         VARCHAR,
    link_to_further_guidance   VARCHAR,
    concise_measure            VARCHAR
);

CREATE TABLE area (
    area_id          INTEGER PRIMARY KEY,
    area_name        VARCHAR NOT NULL,
    area_description VARCHAR NOT NULL,
    area_link        VARCHAR,
    bng_hab_mgt      VARCHAR,
    bng_hab_creation VARCHAR
);

CREATE TABLE priority (
    priority_id                      INTEGER PRIMARY KEY,
    biodiversity_priority            VARCHAR NOT NULL,
    simplified_biodiversity_priority VARCHAR,
    theme                            VARCHAR NOT NULL
);

CREATE TABLE species (
    species_id         INTEGER PRIMARY KEY,
    taxa               VARCHAR NOT NULL,
    common_name        VARCHAR NOT NULL,
    assemblage         VARCHAR NOT NULL,
    species_link       VARCHAR,
    linnaean_name      VARCHAR,
    usage_key          VARCHAR,
    scientific_name    VARCHAR NOT NULL,
    status             VARCHAR,
    kingdom            VARCHAR,
    phylum             VARCHAR,
    "order"            VARCHAR,
    "family"           VARCHAR,
    genus              VARCHAR,
    species            VARCHAR,
    kingdom_key        VARCHAR,
    phylum_key         VARCHAR,
    class_key          VARCHAR,
    order_key          VARCHAR,
    family_key         VARCHAR,
    genus_key          VARCHAR,
    species_key        VARCHAR,
    "synonym"          VARCHAR,
    "class"            VARCHAR,
    accepted_usage_key VARCHAR,
    verbatim_name      VARCHAR,
    verbatim_index     BIGINT,
    gbif_species_url   VARCHAR,
    image_url          VARCHAR,
    license            VARCHAR,
    attribution        VARCHAR,
    photo_url          VARCHAR
);

CREATE TABLE grant_table (
    grant_id      VARCHAR PRIMARY KEY,
    grant_name    VARCHAR NOT NULL,
    grant_scheme  VARCHAR NOT NULL,
    url           VARCHAR,
    grant_summary VARCHAR
);

CREATE TABLE habitat (
    habitat_id INTEGER PRIMARY KEY,
    habitat    VARCHAR NOT NULL
);

-- Lookups ------------------------------------------------------------------------------------

CREATE TABLE measure_type (
    measure_type_id INTEGER PRIMARY KEY,
    measure_type    VARCHAR NOT NULL
);

CREATE TABLE stakeholder (
    stakeholder_id INTEGER PRIMARY KEY,
    stakeholder    VARCHAR NOT NULL
);

CREATE TABLE benefits (
    benefit_id INTEGER PRIMARY KEY,
    benefit    VARCHAR NOT NULL
);

CREATE TABLE area_funding_schemes (
    id                    INTEGER PRIMARY KEY,
    area_id               INTEGER NOT NULL,
    area_name             VARCHAR,
    local_funding_schemes VARCHAR
);

-- The spatial extension cannot be installed offline: polygons are stored as WKB.
-- The original had no key here; geom_id is added so rows can be addressed and previewed.
CREATE TABLE area_geom (
    geom_id      INTEGER PRIMARY KEY,
    geo_point_2d VARCHAR,
    geo_shape    BLOB,
    area_id      INTEGER NOT NULL
);

-- Bridges ------------------------------------------------------------------------------------

CREATE TABLE measure_has_type (
    measure_id      INTEGER NOT NULL,
    measure_type_id INTEGER NOT NULL,
    PRIMARY KEY (measure_id, measure_type_id)
);

CREATE TABLE measure_has_stakeholder (
    measure_id     INTEGER NOT NULL,
    stakeholder_id INTEGER NOT NULL,
    PRIMARY KEY (measure_id, stakeholder_id)
);

CREATE TABLE measure_has_benefits (
    measure_id INTEGER NOT NULL,
    benefit_id INTEGER NOT NULL,
    PRIMARY KEY (measure_id, benefit_id)
);

CREATE TABLE measure_has_species (
    measure_id INTEGER NOT NULL,
    species_id INTEGER NOT NULL,
    PRIMARY KEY (measure_id, species_id)
);

CREATE TABLE measure_area_priority (
    measure_id  INTEGER NOT NULL,
    area_id     INTEGER NOT NULL,
    priority_id INTEGER NOT NULL,
    PRIMARY KEY (measure_id, area_id, priority_id)
);

-- The original had no key and allowed duplicates; a funding row is a MAP link plus a grant.
CREATE TABLE measure_area_priority_grant (
    measure_id  INTEGER NOT NULL,
    area_id     INTEGER NOT NULL,
    priority_id INTEGER NOT NULL,
    grant_id    VARCHAR NOT NULL,
    PRIMARY KEY (measure_id, area_id, priority_id, grant_id)
);

CREATE TABLE species_area_priority (
    species_id  INTEGER NOT NULL,
    area_id     INTEGER NOT NULL,
    priority_id INTEGER NOT NULL,
    PRIMARY KEY (species_id, area_id, priority_id)
);

CREATE TABLE habitat_creation_area (
    habitat_id INTEGER NOT NULL,
    area_id    INTEGER NOT NULL,
    PRIMARY KEY (habitat_id, area_id)
);

CREATE TABLE habitat_management_area (
    habitat_id INTEGER NOT NULL,
    area_id    INTEGER NOT NULL,
    PRIMARY KEY (habitat_id, area_id)
);

-- The public "LNRS Toolkit" export (14 columns).
CREATE VIEW apmg_slim_vw AS
SELECT
    m.core_supplementary,
    mt.measure_type,
    s.stakeholder,
    a.area_name,
    map.area_id,
    mapg.grant_id,
    map.priority_id,
    p.biodiversity_priority,
    m.measure,
    m.concise_measure,
    map.measure_id,
    m.link_to_further_guidance,
    g.grant_name,
    g.url
FROM measure_area_priority AS map
LEFT JOIN measure AS m ON m.measure_id = map.measure_id
LEFT JOIN area AS a ON a.area_id = map.area_id
LEFT JOIN priority AS p ON p.priority_id = map.priority_id
LEFT JOIN measure_has_type AS mht ON mht.measure_id = map.measure_id
LEFT JOIN measure_type AS mt ON mt.measure_type_id = mht.measure_type_id
LEFT JOIN measure_has_stakeholder AS mhs ON mhs.measure_id = map.measure_id
LEFT JOIN stakeholder AS s ON s.stakeholder_id = mhs.stakeholder_id
LEFT JOIN measure_area_priority_grant AS mapg
    ON mapg.measure_id = map.measure_id
   AND mapg.area_id = map.area_id
   AND mapg.priority_id = map.priority_id
LEFT JOIN grant_table AS g ON g.grant_id = mapg.grant_id;

-- Service tables ------------------------------------------------------------------------------
-- These live in the same file so that a change and its event / idempotency record commit in
-- ONE transaction. A restore carries them over from the live database: the log never rewinds.

CREATE TABLE lnrs_event_log (
    seq         BIGINT PRIMARY KEY,
    time_us     BIGINT NOT NULL,   -- UTC, microseconds since the Unix epoch
    kind        VARCHAR NOT NULL,
    entity_type VARCHAR,
    entity_id   VARCHAR,
    request_id  VARCHAR,
    rpc         VARCHAR,
    payload     VARCHAR NOT NULL   -- JSON, the full event
);

CREATE TABLE lnrs_request_log (
    request_id VARCHAR PRIMARY KEY,
    rpc        VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,  -- BLAKE3 of the request: a reused id with another request is refused
    time_us    BIGINT NOT NULL,
    response   VARCHAR NOT NULL    -- JSON of the first response, replayed on retry (AIP-155)
);
