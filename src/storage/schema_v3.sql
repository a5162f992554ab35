-- v3: the original app's data as it is. Imports keep its legacy quirks instead of rejecting
-- them: columns the API requires for new rows may hold NULL in imported rows (that validation
-- applies to API writes only), and a funding row (MAPG) may have no grant — an unfunded row the
-- original allowed. A primary key cannot hold NULL, so MAPG has no declared key any more: the
-- writer keeps its rows unique (it checks before every insert, as it checks references), and
-- the key the API and row images use is unchanged, a NULL grant reading as "".
ALTER TABLE measure ALTER COLUMN measure DROP NOT NULL;
ALTER TABLE measure ALTER COLUMN core_supplementary DROP NOT NULL;
ALTER TABLE area ALTER COLUMN area_name DROP NOT NULL;
ALTER TABLE area ALTER COLUMN area_description DROP NOT NULL;
ALTER TABLE priority ALTER COLUMN biodiversity_priority DROP NOT NULL;
ALTER TABLE priority ALTER COLUMN theme DROP NOT NULL;
ALTER TABLE species ALTER COLUMN taxa DROP NOT NULL;
ALTER TABLE species ALTER COLUMN common_name DROP NOT NULL;
ALTER TABLE species ALTER COLUMN assemblage DROP NOT NULL;
ALTER TABLE species ALTER COLUMN scientific_name DROP NOT NULL;
ALTER TABLE grant_table ALTER COLUMN grant_name DROP NOT NULL;
ALTER TABLE grant_table ALTER COLUMN grant_scheme DROP NOT NULL;
ALTER TABLE habitat ALTER COLUMN habitat DROP NOT NULL;
ALTER TABLE measure_type ALTER COLUMN measure_type DROP NOT NULL;
ALTER TABLE stakeholder ALTER COLUMN stakeholder DROP NOT NULL;
ALTER TABLE benefits ALTER COLUMN benefit DROP NOT NULL;

CREATE TABLE measure_area_priority_grant_v3 (
    measure_id  INTEGER NOT NULL,
    area_id     INTEGER NOT NULL,
    priority_id INTEGER NOT NULL,
    grant_id    VARCHAR            -- NULL: an unfunded row of the original app
);
INSERT INTO measure_area_priority_grant_v3
    SELECT measure_id, area_id, priority_id, grant_id FROM measure_area_priority_grant;
DROP TABLE measure_area_priority_grant;
ALTER TABLE measure_area_priority_grant_v3 RENAME TO measure_area_priority_grant;
