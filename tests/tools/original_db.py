#!/usr/bin/env python3
"""Test tooling for ImportDatabase / ExportData: makes the ORIGINAL app's files, checks OUR exports.

The original LNRS app (Streamlit + DuckDB Python, 1.4 series) kept its data in a DuckDB file whose
schema is described in docs/DOMAIN.md; its portal also exported every table as CSV. The Rust
integration tests run this script with the test venv's python (DuckDB 1.4 pinned in
tests/tools/requirements.txt, i.e. the original's engine generation) to:

  make-db OUT.duckdb --expected OUT.json [--scale N] [--seed S] [--no-empty-strings]
      write a realistic original-schema database (reference volumes x N, legacy quirks included,
      a handful of rows the importer must reject) and a JSON file saying what an import must keep;
  make-csv-zip OUT.zip --from DB.duckdb
      write the original portal's CSV export of such a database, as a ZIP (the other import form);
  compare ORIGINAL.duckdb IMPORTED.duckdb --expected expected.json
      check that our export of a whole imported database holds exactly the cleaned original;
  check-csv DIR --db EXPORT.duckdb / check-parquet DIR --db EXPORT.duckdb /
  check-geojson FILE --db EXPORT.duckdb
      check our CSV / Parquet / GeoJSON exports against a DuckDB export of the same data;
  dump DB.duckdb
      print {table: row_count} (debugging).

Check subcommands end with a line `OK` (exit 0) or `FAIL: <reason>` (exit 1).

Row numbers (in the expected file and in the importer's reports) are 1-based positions in a
table's insertion order: rowid + 1 in the DuckDB file written by make-db, and the 1-based data row
(header excluded) in the CSV members written by make-csv-zip, which keep rowid order.

Only the standard library and duckdb are used, so the test venv stays small (DuckDB reads Parquet
itself; no pyarrow / pandas).
"""

from __future__ import annotations

import argparse
import collections
import csv
import importlib.util
import io
import json
import math
import random
import re
import struct
import sys
import time
import zipfile
from pathlib import Path

# DuckDB's Python client tries `import pandas` for every Python value it converts (to spot pandas'
# NA); without pandas each failed import searches sys.path again, ~75 us a value (scale 10 took
# minutes). A None entry in sys.modules makes that import fail at once. Done only when pandas is
# really absent, so an environment that has pandas behaves as before.
if importlib.util.find_spec("pandas") is None:
    sys.modules.setdefault("pandas", None)

import duckdb  # noqa: E402 - after the pandas note above

# =================================================================================================
# The original app's schema
# =================================================================================================

INT, TEXT, BIGINT, BLOB = "INTEGER", "VARCHAR", "BIGINT", "BLOB"


def _columns(key_columns, text_columns, extra=()):
    """[(name, type)]: integer ids first, then VARCHAR columns (the original typed almost
    everything as VARCHAR), then any explicitly typed ones."""
    return [(c, INT) for c in key_columns] + [(c, TEXT) for c in text_columns] + list(extra)


_SPECIES_TEXT = [
    "taxa", "common_name", "assemblage", "species_link", "linnaean_name", "usage_key",
    "scientific_name", "status", "kingdom", "phylum", "order", "family", "genus", "species",
    "kingdom_key", "phylum_key", "class_key", "order_key", "family_key", "genus_key",
    "species_key", "synonym", "class", "accepted_usage_key", "verbatim_name",
]

# Table -> [(column, type)] in the original's column order. Dict order = creation/export order.
ORIGINAL_TABLES: dict[str, list[tuple[str, str]]] = {
    "measure": _columns(["measure_id"], [
        "measure", "other_priorities_delivered", "core_supplementary", "mapped_unmapped",
        "relevant_map_layer", "link_to_further_guidance", "concise_measure"]),
    "area": _columns(["area_id"], [
        "area_name", "area_description", "area_link", "bng_hab_mgt", "bng_hab_creation"]),
    "priority": _columns(["priority_id"], [
        "biodiversity_priority", "simplified_biodiversity_priority", "theme"]),
    "species": _columns(["species_id"], _SPECIES_TEXT, [
        ("verbatim_index", BIGINT), ("gbif_species_url", TEXT), ("image_url", TEXT),
        ("license", TEXT), ("attribution", TEXT), ("photo_url", TEXT)]),
    "grant_table": [("grant_id", TEXT), ("grant_name", TEXT), ("grant_scheme", TEXT),
                    ("url", TEXT), ("grant_summary", TEXT)],
    "habitat": _columns(["habitat_id"], ["habitat"]),
    "measure_type": _columns(["measure_type_id"], ["measure_type"]),
    "stakeholder": _columns(["stakeholder_id"], ["stakeholder"]),
    "benefits": _columns(["benefit_id"], ["benefit"]),
    "area_funding_schemes": _columns(["id", "area_id"], ["area_name", "local_funding_schemes"]),
    # No key in the original (our schema adds geom_id); geo_shape is little-endian ISO WKB.
    "area_geom": [("geo_point_2d", TEXT), ("geo_shape", BLOB), ("area_id", INT)],
    "measure_has_type": _columns(["measure_id", "measure_type_id"], []),
    "measure_has_stakeholder": _columns(["measure_id", "stakeholder_id"], []),
    "measure_has_benefits": _columns(["measure_id", "benefit_id"], []),
    "measure_has_species": _columns(["measure_id", "species_id"], []),
    "measure_area_priority": _columns(["measure_id", "area_id", "priority_id"], []),
    "measure_area_priority_grant": _columns(
        ["measure_id", "area_id", "priority_id"], ["grant_id"]),
    "species_area_priority": _columns(["species_id", "area_id", "priority_id"], []),
    "habitat_creation_area": _columns(["habitat_id", "area_id"], []),
    "habitat_management_area": _columns(["habitat_id", "area_id"], []),
}

# Primary keys as the original declared them. MAPG and area_geom had none: the original allowed
# duplicate rows there, which is one of the quirks the importer has to cope with.
ORIGINAL_KEYS: dict[str, tuple[str, ...] | None] = {
    name: (cols[0][0],) for name, cols in list(ORIGINAL_TABLES.items())[:10]
}
ORIGINAL_KEYS.update({
    "area_geom": None,
    "measure_has_type": ("measure_id", "measure_type_id"),
    "measure_has_stakeholder": ("measure_id", "stakeholder_id"),
    "measure_has_benefits": ("measure_id", "benefit_id"),
    "measure_has_species": ("measure_id", "species_id"),
    "measure_area_priority": ("measure_id", "area_id", "priority_id"),
    "measure_area_priority_grant": None,
    "species_area_priority": ("species_id", "area_id", "priority_id"),
    "habitat_creation_area": ("habitat_id", "area_id"),
    "habitat_management_area": ("habitat_id", "area_id"),
})

VIEW_NAME = "apmg_slim_vw"

# The public "LNRS Toolkit" view, copied verbatim from src/storage/schema_v1.sql (which copies the
# original's). Kept here rather than read from that file: it is the ORIGINAL's definition, the
# yardstick our view is compared against, so a change on our side must not move it silently.
VIEW_SQL = """
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
"""

# Our schema's surrogate key on area_geom, ignored when comparing with the original.
OUR_EXTRA_COLUMNS = {"area_geom": ("geom_id",)}

GEOMETRY_COLUMN = "geo_shape"
INVALID_GEOMETRY_TEXT = "NOT A GEOMETRY"   # how make-csv-zip writes a geo_shape that is not WKB
COORD_TOLERANCE = 1e-9


class Failure(Exception):
    """A check failed, or an input could not be used: becomes `FAIL: <reason>`, exit 1."""


def quote_ident(name: str) -> str:
    # Always quote: the original has columns named order, family, synonym and class.
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_original_schema(con) -> None:
    for table, columns in ORIGINAL_TABLES.items():
        defs = [f"{quote_ident(c)} {t}" for c, t in columns]
        key = ORIGINAL_KEYS[table]
        if key:
            defs.append("PRIMARY KEY (" + ", ".join(quote_ident(c) for c in key) + ")")
        con.execute(f"CREATE TABLE {quote_ident(table)} (\n    " + ",\n    ".join(defs) + "\n)")
    con.execute(VIEW_SQL)


# =================================================================================================
# Geometry: WKB decode/encode, WKT format/parse, tolerant comparison
# =================================================================================================
# A geometry is ("Polygon", rings) or ("MultiPolygon", polygons), where a ring is a tuple of
# (x, y) float pairs and a polygon a tuple of rings: hashable, so rows holding one can go in a
# Counter. Only 2D polygons are supported: that is all LNRS holds.

WKB_POLYGON, WKB_MULTIPOLYGON = 3, 6


def encode_wkb_polygon(rings) -> bytes:
    """Little-endian ISO WKB Polygon, as the original stored (and as our schema stores)."""
    parts = [struct.pack("<BII", 1, WKB_POLYGON, len(rings))]
    for ring in rings:
        parts.append(struct.pack("<I", len(ring)))
        parts.append(struct.pack(f"<{2 * len(ring)}d", *(v for point in ring for v in point)))
    return b"".join(parts)


class _WkbReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("WKB truncated")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def geometry(self):
        (order,) = self.take("B")
        if order not in (0, 1):
            raise ValueError(f"bad WKB byte order {order}")
        endian = "<" if order == 1 else ">"
        (kind,) = self.take(endian + "I")
        if kind == WKB_POLYGON:
            return ("Polygon", self.polygon(endian))
        if kind == WKB_MULTIPOLYGON:
            (count,) = self.take(endian + "I")
            polygons = []
            for _ in range(count):
                member = self.geometry()
                if member[0] != "Polygon":
                    raise ValueError("MultiPolygon member is not a Polygon")
                polygons.append(member[1])
            return ("MultiPolygon", tuple(polygons))
        raise ValueError(f"unsupported WKB geometry type {kind} (only 2D Polygon/MultiPolygon)")

    def polygon(self, endian: str):
        (ring_count,) = self.take(endian + "I")
        rings = []
        for _ in range(ring_count):
            (n,) = self.take(endian + "I")
            if n * 16 > len(self.data) - self.pos:   # guard against absurd counts
                raise ValueError("WKB truncated")
            flat = self.take(f"{endian}{2 * n}d")
            rings.append(tuple(zip(flat[0::2], flat[1::2])))
        return tuple(rings)


def decode_wkb(data: bytes):
    """WKB bytes -> geometry tuple; ValueError if not a valid 2D (Multi)Polygon."""
    reader = _WkbReader(bytes(data))
    geometry = reader.geometry()
    if reader.pos != len(reader.data):
        raise ValueError("trailing bytes after WKB geometry")
    return geometry


def _wkt_polygon_body(rings) -> str:
    # repr() gives the shortest text that parses back to the same double: nothing is lost.
    return "(" + ", ".join(
        "(" + ", ".join(f"{float(x)!r} {float(y)!r}" for x, y in ring) + ")" for ring in rings
    ) + ")"


def format_wkt(geometry) -> str:
    kind, body = geometry
    if kind == "Polygon":
        return "POLYGON " + _wkt_polygon_body(body)
    return "MULTIPOLYGON (" + ", ".join(_wkt_polygon_body(p) for p in body) + ")"


_WKT_TOKEN = re.compile(r"\s*(?:([(),])|([A-Za-z]+)|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))")


def _wkt_tokens(text: str):
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _WKT_TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"bad WKT near {text[pos:pos + 20]!r}")
        punct, word, number = match.groups()
        tokens.append(punct or (word.upper() if word else None) or float(number))
        pos = match.end()
    return tokens


class _WktParser:
    def __init__(self, text: str):
        self.tokens, self.i = _wkt_tokens(text), 0

    def next(self):
        if self.i >= len(self.tokens):
            raise ValueError("WKT ends early")
        self.i += 1
        return self.tokens[self.i - 1]

    def expect(self, token):
        got = self.next()
        if got != token:
            raise ValueError(f"WKT: expected {token!r}, got {got!r}")

    def number(self) -> float:
        got = self.next()
        if not isinstance(got, float):
            raise ValueError(f"WKT: expected a number, got {got!r}")
        return got

    def delimited(self, item):
        """'(' item (',' item)* ')' -> tuple of items."""
        self.expect("(")
        items = [item()]
        while True:
            token = self.next()
            if token == ")":
                return tuple(items)
            if token != ",":
                raise ValueError(f"WKT: expected ',' or ')', got {token!r}")
            items.append(item())

    def point(self):
        return (self.number(), self.number())   # exactly 2D: a third number fails at ','/')'

    def polygon(self):
        return self.delimited(lambda: self.delimited(self.point))

    def geometry(self):
        kind = self.next()
        if kind == "POLYGON":
            result = ("Polygon", self.polygon())
        elif kind == "MULTIPOLYGON":
            result = ("MultiPolygon", self.delimited(self.polygon))
        else:
            raise ValueError(f"WKT: unsupported geometry {kind!r}")
        if self.i != len(self.tokens):
            raise ValueError("WKT: trailing text")
        return result


def parse_wkt(text: str):
    """'POLYGON ((x y, ...))' / 'MULTIPOLYGON (((x y, ...)), ...)' -> geometry tuple."""
    return _WktParser(text).geometry()


def geometry_difference(got, want, tolerance: float = COORD_TOLERANCE) -> str | None:
    """None if same type and structure with every coordinate within `tolerance` (exact repr
    floats pass), else the first difference in words."""
    if got is None or want is None or got[0] != want[0]:
        if got is None and want is None:
            return None
        return f"type {got[0] if got else 'null'}, expected {want[0] if want else 'null'}"
    if got[0] not in ("Polygon", "MultiPolygon"):   # undecodable cells: equal only if identical
        return None if got == want else "undecodable geometry"
    polygons_got = (got[1],) if got[0] == "Polygon" else got[1]
    polygons_want = (want[1],) if want[0] == "Polygon" else want[1]
    if len(polygons_got) != len(polygons_want):
        return f"{len(polygons_got)} polygons, expected {len(polygons_want)}"
    for i, (pg, pw) in enumerate(zip(polygons_got, polygons_want)):
        if len(pg) != len(pw):
            return f"polygon {i}: {len(pg)} rings, expected {len(pw)}"
        for j, (rg, rw) in enumerate(zip(pg, pw)):
            if len(rg) != len(rw):
                return f"polygon {i} ring {j}: {len(rg)} points, expected {len(rw)}"
            for k, (pointg, pointw) in enumerate(zip(rg, rw)):
                if any(abs(a - b) > tolerance for a, b in zip(pointg, pointw)):
                    return f"polygon {i} ring {j} point {k}: {pointg}, expected {pointw}"
    return None


def geometries_close(a, b, tolerance: float = COORD_TOLERANCE) -> bool:
    return geometry_difference(a, b, tolerance) is None


# =================================================================================================
# Realistic data for make-db
# =================================================================================================

THEMES = ["Grassland and farmland", "Heathland and moorland", "Marine",
          "Wetlands, rivers and floodplains", "Woodland", "All habitats"]

PLACES = ["Cotswolds", "Forest of Dean", "Severn Vale", "Stroud Valleys", "Cheltenham",
          "Gloucester", "Tewkesbury", "Cirencester", "Malvern Hills", "Wye Valley",
          "Berkeley Vale", "Frome Valley", "Leadon Valley", "Windrush", "Thames Head",
          "Coln Valley", "Painswick", "Dursley", "Newent", "Lydney", "Minchinhampton",
          "Bredon Hill", "Chew Valley", "Mendip"]
AREA_KINDS = ["Grasslands", "Woodlands", "Wetlands", "Commons", "Escarpment", "Floodplain",
              "Farmland", "Meadows", "Heaths"]

HABITATS = ["Lowland meadows", "Lowland calcareous grassland", "Lowland dry acid grassland",
            "Coastal and floodplain grazing marsh", "Lowland fens", "Reedbeds", "Ponds",
            "Rivers", "Lowland mixed deciduous woodland", "Wet woodland",
            "Wood-pasture and parkland", "Traditional orchards", "Hedgerows",
            "Arable field margins", "Lowland heathland", "Purple moor grass and rush pastures",
            "Upland hay meadows", "Limestone pavements", "Open mosaic habitats on previously "
            "developed land", "Coastal saltmarsh", "Mudflats", "Intertidal chalk",
            "Lowland beech and yew woodland", "Upland oakwood", "Blanket bog",
            "Lowland raised bog", "Mesotrophic lakes", "Eutrophic standing waters",
            "Inland rock outcrop and scree habitats", "Calaminarian grasslands",
            "Maritime cliff and slopes", "Coastal sand dunes", "Saline lagoons"]

MEASURE_TYPES = ["Habitat creation", "Habitat management", "Habitat restoration",
                 "Species management", "Access and engagement", "Water management",
                 "Soil management", "Planning and policy", "Survey and monitoring",
                 "Invasive species control", "Land use change"]
STAKEHOLDERS = ["Landowners and farmers", "Local authorities", "Environmental NGOs",
                "Water companies", "Community groups"]
BENEFITS = ["Carbon storage", "Flood mitigation", "Water quality", "Recreation and wellbeing",
            "Pollination", "Soil health", "Air quality", "Urban heat mitigation"]

MEASURE_VERBS = ["Create", "Restore", "Manage", "Enhance", "Expand", "Reconnect", "Buffer",
                 "Re-wet", "Plant", "Protect"]
MEASURE_OBJECTS = ["species-rich grassland", "lowland meadows", "hedgerows with standard trees",
                   "wood pasture and parkland", "a floodplain wetland mosaic", "reedbeds",
                   "ponds and scrapes", "chalk streams", "arable field margins",
                   "traditional orchards", "lowland heathland", "native broadleaved woodland",
                   "river corridors", "limestone grassland", "saltmarsh"]
MEASURE_QUALIFIERS = ["on arable land", "along watercourses", "next to ancient woodland",
                      "within the Cotswolds National Landscape", "to link fragmented habitats",
                      "on urban green space", "for farmland birds", "for pollinators",
                      "in the Severn Vale", ""]

GRANT_SCHEMES = ["Countryside Stewardship", "Sustainable Farming Incentive",
                 "Farming in Protected Landscapes", "England Woodland Creation Offer",
                 "Water Environment Improvement Fund", "Landscape Recovery",
                 "Local nature recovery fund"]
GRANT_PREFIXES = ["CSHT", "AB", "BE", "SW", "WD", "GS", "LH", "WT", "CAB", "SAM", "SFI-AHL",
                  "SFI-CMOR", "EWCO", "WEIF", "TCF", "NCPGS", "HS", "UP", "WN", "OP"]
# User-typed ids: spaces, punctuation, a ';' and a '"' (CSV quoting), a path-like one (the
# original put ids into file names unescaped) and a non-ASCII one.
SPECIAL_GRANT_IDS = ["WWEF", "CAB5", "FiPL", "CS HT3", "SFI-AHL2", "NCPGS/2024",
                     "LNRS;Phase 2", 'Tree "Champion" fund', "../x", "Ŵales — café"]

# (taxa, assemblage, common name, scientific name, kingdom, phylum, class, order, family)
SPECIES_BASE = [
    ("Bird", "Birds", "Skylark", "Alauda arvensis", "Animalia", "Chordata", "Aves",
     "Passeriformes", "Alaudidae"),
    ("Bird", "Birds", "Northern lapwing", "Vanellus vanellus", "Animalia", "Chordata", "Aves",
     "Charadriiformes", "Charadriidae"),
    ("Bird", "Birds", "Eurasian curlew", "Numenius arquata", "Animalia", "Chordata", "Aves",
     "Charadriiformes", "Scolopacidae"),
    ("Bird", "Birds", "Turtle dove", "Streptopelia turtur", "Animalia", "Chordata", "Aves",
     "Columbiformes", "Columbidae"),
    ("Butterfly", "Butterflies", "Marsh fritillary", "Euphydryas aurinia", "Animalia",
     "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae"),
    ("Butterfly", "Butterflies", "Duke of Burgundy", "Hamearis lucina", "Animalia",
     "Arthropoda", "Insecta", "Lepidoptera", "Riodinidae"),
    ("Butterfly", "Butterflies", "Large blue", "Phengaris arion", "Animalia", "Arthropoda",
     "Insecta", "Lepidoptera", "Lycaenidae"),
    ("Fish", "Fish", "Atlantic salmon", "Salmo salar", "Animalia", "Chordata",
     "Actinopterygii", "Salmoniformes", "Salmonidae"),
    ("Fish", "Fish", "European eel", "Anguilla anguilla", "Animalia", "Chordata",
     "Actinopterygii", "Anguilliformes", "Anguillidae"),
    ("Mammal", "Mammals", "Hazel dormouse", "Muscardinus avellanarius", "Animalia", "Chordata",
     "Mammalia", "Rodentia", "Gliridae"),
    ("Mammal", "Mammals", "Water vole", "Arvicola amphibius", "Animalia", "Chordata",
     "Mammalia", "Rodentia", "Cricetidae"),
    ("Mammal", "Mammals", "Greater horseshoe bat", "Rhinolophus ferrumequinum", "Animalia",
     "Chordata", "Mammalia", "Chiroptera", "Rhinolophidae"),
    ("Moth", "Moths", "Striped lychnis", "Shargacucullia lychnitis", "Animalia", "Arthropoda",
     "Insecta", "Lepidoptera", "Noctuidae"),
    ("Moth", "Moths", "Scarlet tiger", "Callimorpha dominula", "Animalia", "Arthropoda",
     "Insecta", "Lepidoptera", "Erebidae"),
    ("Plant", "Plants", "Pasqueflower", "Pulsatilla vulgaris", "Plantae", "Tracheophyta",
     "Magnoliopsida", "Ranunculales", "Ranunculaceae"),
    ("Plant", "Plants", "Snake's-head fritillary", "Fritillaria meleagris", "Plantae",
     "Tracheophyta", "Liliopsida", "Liliales", "Liliaceae"),
    ("Plant", "Plants", "Cotswold pennycress", "Microthlaspi perfoliatum", "Plantae",
     "Tracheophyta", "Magnoliopsida", "Brassicales", "Brassicaceae"),
    ("Reptile/Amphibian", "Reptiles and amphibians", "Great crested newt", "Triturus cristatus",
     "Animalia", "Chordata", "Amphibia", "Caudata", "Salamandridae"),
    ("Reptile/Amphibian", "Reptiles and amphibians", "Adder", "Vipera berus", "Animalia",
     "Chordata", "Reptilia", "Squamata", "Viperidae"),
]
ATTRIBUTIONS = ["© Zoë Ångström (CC BY 4.0)", "Photo: J. O'Neill", "naturgucker.de / Müller",
                "iNaturalist user “meadowlark”", None]

# Reference volumes at scale 1 (docs/DOMAIN.md), rows kept after import.
VOLUMES = {"measure": 168, "grant_table": 168, "area": 68, "species": 51, "priority": 33,
           "habitat": 33, "measure_type": 11, "stakeholder": 5, "benefits": 8,
           "area_funding_schemes": 68, "area_geom": 694, "measure_area_priority": 2936,
           "species_area_priority": 2505, "habitat_creation_area": 681,
           "habitat_management_area": 817}
MAPG_GRANTED = 3099        # distinct funded MAPG rows; with the NULL-grant ones ~3,249 kept
MAPG_NULL_GRANT = 150      # MAPG rows with a NULL grant_id (the MAP link exists)
MAPG_DUPLICATES = 20       # extra exact copies (2 of them copies of NULL-grant rows)
MAPG_NULL_DUPLICATES = 2


class TableRows:
    """Rows of one table in insertion order, with the ones the importer must reject tagged."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[tuple] = []
        self.rejects: list[tuple[str, str] | None] = []   # parallel: None or (reason, detail)

    def append(self, row: tuple) -> None:
        self.rows.append(tuple(row))
        self.rejects.append(None)

    def insert_randomly(self, rng: random.Random, row: tuple, reject=None) -> None:
        """Legacy rows did not come last: put a quirky row at a random position."""
        position = rng.randint(0, len(self.rows))
        self.rows.insert(position, tuple(row))
        self.rejects.insert(position, reject)

    def rejected(self) -> list[dict]:
        return [{"row": i + 1, "reason": tag[0], "detail": tag[1]}
                for i, tag in enumerate(self.rejects) if tag]

    def kept_rows(self) -> list[tuple]:
        return [row for row, tag in zip(self.rows, self.rejects) if not tag]


def suffixed(names: list[str], count: int) -> list[str]:
    """`count` names cycling through `names`, later rounds numbered: scale N repeats the lists."""
    return [names[i % len(names)] + ("" if i < len(names) else f" ({i // len(names) + 1})")
            for i in range(count)]


def sample_distinct(rng: random.Random, count: int, make) -> list[tuple]:
    """`count` distinct values of make(), in generation order (no set iteration: deterministic)."""
    seen, out = set(), []
    while len(out) < count:
        value = make()
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


def pick_indices(rng: random.Random, n: int, count: int) -> set[int]:
    return set(rng.sample(range(n), min(count, n)))


class Generator:
    """Builds every table of the original schema for one (scale, seed)."""

    def __init__(self, scale: int, seed: int, empty_strings: bool):
        self.scale, self.rng, self.empty_strings = scale, random.Random(seed), empty_strings
        self.tables: dict[str, TableRows] = {t: TableRows(t) for t in ORIGINAL_TABLES}
        self.n = {t: v * scale for t, v in VOLUMES.items()}

    def count(self, table: str) -> int:
        return self.n[table]

    def empty(self) -> str | None:
        # '' and NULL are different values: a few '' exercise that distinction end to end.
        return "" if self.empty_strings else None

    def run(self) -> dict[str, TableRows]:
        for step in (self.lookups, self.habitats, self.grants, self.measures, self.areas,
                     self.priorities, self.species, self.measure_links, self.area_funding,
                     self.area_geom, self.map_and_mapg, self.sap, self.habitat_links):
            step()
        return self.tables

    # -- entities -------------------------------------------------------------------------------

    def lookups(self) -> None:
        for table, names in (("measure_type", MEASURE_TYPES), ("stakeholder", STAKEHOLDERS),
                             ("benefits", BENEFITS)):
            for i, name in enumerate(suffixed(names, self.count(table)), start=1):
                self.tables[table].append((i, name))

    def habitats(self) -> None:
        self.habitat_names = suffixed(HABITATS, self.count("habitat"))
        for i, name in enumerate(self.habitat_names, start=1):
            self.tables["habitat"].append((i, name))

    def grant_ids(self) -> list[str]:
        rng, ids = self.rng, list(SPECIAL_GRANT_IDS)
        seen = set(ids)
        while len(ids) < self.count("grant_table"):
            candidate = rng.choice(GRANT_PREFIXES) + str(rng.randint(1, 40 * self.scale))
            if candidate not in seen:
                seen.add(candidate)
                ids.append(candidate)
        rng.shuffle(ids)
        return ids

    def grants(self) -> None:
        rng = self.rng
        self.grant_id_list = self.grant_ids()
        n = len(self.grant_id_list)
        no_summary = pick_indices(rng, n, 5 * self.scale)
        empty_url = pick_indices(rng, n, 2 * self.scale)
        for i, gid in enumerate(self.grant_id_list):
            scheme = rng.choice(GRANT_SCHEMES)
            slug = re.sub(r"[^a-z0-9]+", "-", gid.lower()).strip("-") or "grant"
            summary = (f"Funding for {rng.choice(MEASURE_OBJECTS)} under {scheme}. "
                       f"Pays £{rng.randint(10, 900)} per hectare per year.")
            if i == 0:
                summary += "\nApplications open in spring; see the scheme guidance."
            url = f"https://www.gov.uk/countryside-stewardship-grants/{slug}"
            self.tables["grant_table"].append((
                gid, f"{scheme}: {gid}", scheme,
                self.empty() if i in empty_url else url,
                None if i in no_summary else summary))

    def measures(self) -> None:
        rng, n = self.rng, self.count("measure")
        core_null = pick_indices(rng, n, 3 * self.scale)
        layer_empty = pick_indices(rng, n, 4 * self.scale)
        for i in range(n):
            verb, obj = rng.choice(MEASURE_VERBS), rng.choice(MEASURE_OBJECTS)
            name = f"{verb} {obj} {rng.choice(MEASURE_QUALIFIERS)}".strip()
            concise = f"{verb} {obj}" + (" 🦋" if i == 7 else "")
            others = "; ".join(rng.sample(THEMES, rng.randint(1, 3))) if rng.random() < .6 else None
            core = None if i in core_null else rng.choice(["Core (BNG)", "Supplementary"])
            mapped = rng.choice(["Mapped", "Unmapped", None])
            layer = (self.empty() if i in layer_empty else
                     rng.choice(["Grassland opportunity", "Woodland opportunity",
                                 "Wetland opportunity", "Existing habitat", None]))
            link = (f"https://www.gloucestershire.gov.uk/lnrs/measures/{i + 1}"
                    if rng.random() < .7 else None)
            self.tables["measure"].append((i + 1, name, others, core, mapped, layer, link, concise))

    def area_names(self, n: int) -> list[str]:
        names, seen = [], set()
        for i in range(n):
            name = f"{self.rng.choice(PLACES)} {self.rng.choice(AREA_KINDS)}"
            while name in seen:
                name += f" {len(seen) % 7 + 2}"
            seen.add(name)
            names.append(name)
        names[3 % n] = "Ŵales — café border meadows"
        names[5 % n] = 'The "Commons" of Minchinhampton'
        return names

    def areas(self) -> None:
        rng, n = self.rng, self.count("area")
        self.area_name_list = self.area_names(n)
        description_null = pick_indices(rng, n, 2 * self.scale)
        # Area centres in England (lon -3..0, lat 51..53) with room for polygons around them.
        self.area_centres = [(rng.uniform(-2.9, -0.1), rng.uniform(51.1, 52.9)) for _ in range(n)]
        for i, name in enumerate(self.area_name_list):
            description = (f"{name}: a landscape of {rng.choice(HABITATS).lower()} and "
                           f"{rng.choice(HABITATS).lower()}; priority for nature recovery.")
            if i == 1:
                description += "\r\nSee the mapped opportunity layer."   # CR LF inside a field
            mgt = "; ".join(rng.sample(self.habitat_names, rng.randint(1, 4)))
            creation = ("; ".join(rng.sample(self.habitat_names, rng.randint(1, 3)))
                        if rng.random() < .8 else None)
            link = f"https://lnrs.example.org/areas/{i + 1}" if rng.random() < .8 else None
            self.tables["area"].append((i + 1, name, None if i in description_null else description,
                                        link, mgt, creation))

    def priorities(self) -> None:
        rng, n = self.rng, self.count("priority")
        theme_null = pick_indices(rng, n, 1 * self.scale)
        for i in range(n):
            theme = THEMES[i % len(THEMES)]
            if rng.random() < 1 / 3:   # stored values carry \xa0 and stray spaces
                theme = rng.choice([theme + "\xa0", " " + theme, theme + "  ",
                                    theme.replace(" ", "\xa0", 1), "\xa0" + theme + " "])
            obj = rng.choice(MEASURE_OBJECTS)
            self.tables["priority"].append((
                i + 1, f"Increase the extent and condition of {obj} across the county",
                f"More {obj}" if rng.random() < .9 else None,
                None if i in theme_null else theme))

    def species(self) -> None:
        rng, n = self.rng, self.count("species")
        taxa_null = pick_indices(rng, n, 2 * self.scale)
        key_empty = pick_indices(rng, n, 3 * self.scale)
        for i in range(n):
            taxa, assemblage, common, scientific, kingdom, phylum, klass, order, family = \
                SPECIES_BASE[i % len(SPECIES_BASE)]
            genus = scientific.split()[0]
            keys = [str(rng.randint(1, 9_999_999)) for _ in range(7)]
            usage_key = str(rng.randint(1_000_000, 9_999_999))
            synonym = rng.random() < .1
            photo = f"https://inaturalist-open-data.s3.amazonaws.com/photos/{rng.randint(1, 10**8)}"
            self.tables["species"].append((
                i + 1, None if i in taxa_null else taxa, common, assemblage,
                f"https://species.nbnatlas.org/search?q={scientific.replace(' ', '+')}",
                scientific, usage_key, scientific, "SYNONYM" if synonym else "ACCEPTED",
                kingdom, phylum, order, family, genus, scientific, *keys,
                "true" if synonym else "false", klass,
                self.empty() if i in key_empty else (keys[-1] if synonym else None),
                scientific, rng.randint(0, 2**40),   # verbatim_index: BIGINT beyond 32 bits
                f"https://www.gbif.org/species/{usage_key}",
                photo + "/medium.jpg", rng.choice(["CC BY 4.0", "CC BY-NC 4.0", "CC0", None]),
                rng.choice(ATTRIBUTIONS), photo + "/original.jpg"))

    # -- links ------------------------------------------------------------------------------------

    def measure_links(self) -> None:
        rng = self.rng
        spec = (("measure_has_type", "measure_type", (1, 1, 1, 2)),
                ("measure_has_stakeholder", "stakeholder", (1, 1, 2, 2, 3)),
                ("measure_has_benefits", "benefits", (1, 2, 3)),
                ("measure_has_species", "species", (0, 0, 1, 2, 3)))
        for measure_id in range(1, self.count("measure") + 1):
            for table, lookup, sizes in spec:
                ids = rng.sample(range(1, len(self.tables[lookup].rows) + 1), rng.choice(sizes))
                for other in sorted(ids):
                    self.tables[table].append((measure_id, other))

    def area_funding(self) -> None:
        rng, n = self.rng, self.count("area")
        per_area = [1] * n
        order = rng.sample(range(n), n)
        for i in order[:2 * self.scale]:
            per_area[i] = 2
        for i in order[2 * self.scale:4 * self.scale]:
            per_area[i] = 0
        next_id = 1
        for i, k in enumerate(per_area):
            for _ in range(k):
                schemes = ("; ".join(rng.sample(GRANT_SCHEMES, rng.randint(1, 3)))
                           if rng.random() < .85 else None)
                self.tables["area_funding_schemes"].append(
                    (next_id, i + 1, self.area_name_list[i], schemes))
                next_id += 1

    def polygon_counts(self) -> list[int]:
        """Per area: a few with no polygon, some with one, the rest with many (GeoJSON's
        null / Polygon / MultiPolygon cases), summing to the reference volume."""
        rng, n, total = self.rng, self.count("area"), self.count("area_geom")
        counts = [2] * n
        order = rng.sample(range(n), n)
        for i in order[:3 * self.scale]:
            counts[i] = 0
        for i in order[3 * self.scale:13 * self.scale]:
            counts[i] = 1
        many = order[13 * self.scale:]
        for _ in range(total - sum(counts)):
            counts[rng.choice(many)] += 1
        return counts

    def polygon(self, centre) -> list[tuple[float, float]]:
        rng = self.rng
        cx = centre[0] + rng.uniform(-0.04, 0.04)
        cy = centre[1] + rng.uniform(-0.04, 0.04)
        vertices = rng.randint(500, 1500) if rng.random() < .02 else rng.randint(4, 40)
        radius = rng.uniform(0.002, 0.02)
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(vertices))
        ring = [(cx + 1.6 * radius * rng.uniform(0.6, 1.0) * math.cos(a),
                 cy + radius * rng.uniform(0.6, 1.0) * math.sin(a)) for a in angles]
        return ring + [ring[0]]   # closed; counter-clockwise

    def area_geom(self) -> None:
        rows = []
        for area_index, k in enumerate(self.polygon_counts()):
            for _ in range(k):
                ring = self.polygon(self.area_centres[area_index])
                lon = sum(x for x, _ in ring[:-1]) / (len(ring) - 1)
                lat = sum(y for _, y in ring[:-1]) / (len(ring) - 1)
                rows.append((f"{lat:.6f}, {lon:.6f}", encode_wkb_polygon([ring]), area_index + 1))
        self.rng.shuffle(rows)   # polygons of an area are not contiguous: geom_id order matters
        table = self.tables["area_geom"]
        for row in rows:
            table.append(row)
        garbage = bytes(self.rng.randrange(256) for _ in range(5))   # too short to be any WKB
        table.insert_randomly(self.rng, ("51.5, -2.0", garbage, 1),
                              ("geometry", "geo_shape is 5 bytes, not WKB"))

    def random_triple(self, first_table: str):
        rng = self.rng
        return (rng.randint(1, len(self.tables[first_table].rows)),
                rng.randint(1, self.count("area")), rng.randint(1, self.count("priority")))

    def map_and_mapg(self) -> None:
        rng = self.rng
        triples = sample_distinct(rng, self.count("measure_area_priority"),
                                  lambda: self.random_triple("measure"))
        map_table = self.tables["measure_area_priority"]
        for t in triples:
            map_table.append(t)
        missing_measure = len(self.tables["measure"].rows) + 1000
        map_table.insert_randomly(rng, (missing_measure, 1, 1),
                                  ("reference", f"measure_id {missing_measure} does not exist"))
        self.mapg(triples)

    def mapg(self, triples: list[tuple]) -> None:
        rng, s = self.rng, self.scale
        shuffled = rng.sample(triples, len(triples))
        null_triples, funded_pool = shuffled[:MAPG_NULL_GRANT * s], shuffled[MAPG_NULL_GRANT * s:]
        # Popular grants get most links (weights), and the special ids are certain to appear.
        weights = [rng.choice([1, 1, 2, 5, 20]) for _ in self.grant_id_list]
        specials = iter(SPECIAL_GRANT_IDS)

        def funded():
            grant = next(specials, None) or rng.choices(self.grant_id_list, weights)[0]
            return rng.choice(funded_pool) + (grant,)

        granted = sample_distinct(rng, MAPG_GRANTED * s, funded)
        nulls = [t + (None,) for t in null_triples]
        table = self.tables["measure_area_priority_grant"]
        for row in granted + nulls:
            table.append(row)
        rng.shuffle(table.rows)   # all untagged so far: the parallel tag list is unaffected
        self.mapg_quirks(table, granted, nulls, set(triples))

    def mapg_quirks(self, table: TableRows, granted, nulls, map_set) -> None:
        rng, s = self.rng, self.scale
        # Exact duplicates: one row three times, the rest twice; 2 x scale copies of NULL rows.
        copies = rng.sample(granted, (MAPG_DUPLICATES - MAPG_NULL_DUPLICATES) * s - 1)
        copies += [copies[0]] + rng.sample(nulls, MAPG_NULL_DUPLICATES * s)
        for row in copies:
            table.insert_randomly(rng, row)
        orphan = self.random_triple("measure")
        while orphan in map_set:
            orphan = self.random_triple("measure")
        table.insert_randomly(rng, orphan + (self.grant_id_list[0],),
                              ("reference", "no measure_area_priority row for this link"))
        table.insert_randomly(rng, granted[0][:3] + ("NO-SUCH-GRANT",),
                              ("reference", "grant_id 'NO-SUCH-GRANT' not in grant_table"))

    def sap(self) -> None:
        for t in sample_distinct(self.rng, self.count("species_area_priority"),
                                 lambda: self.random_triple("species")):
            self.tables["species_area_priority"].append(t)

    def habitat_links(self) -> None:
        rng, n_habitat, n_area = self.rng, self.count("habitat"), self.count("area")
        for table in ("habitat_creation_area", "habitat_management_area"):
            pairs = sample_distinct(rng, self.count(table), lambda: (
                rng.randint(1, n_habitat), rng.randint(1, n_area)))
            for pair in pairs:
                self.tables[table].append(pair)
        missing = n_habitat + 1000
        self.tables["habitat_creation_area"].insert_randomly(
            rng, (missing, 1), ("reference", f"habitat_id {missing} does not exist"))


# =================================================================================================
# Writing the original database and its expected-import description
# =================================================================================================

def bulk_insert(con, table: str, rows: list[tuple]) -> None:
    """One INSERT per table: each column passed as a list and unnested side by side (columnar,
    far faster than executemany), in list order, so rowid order = insertion order."""
    if not rows:
        return
    columns = ORIGINAL_TABLES[table]
    select = ", ".join(f"unnest(${i + 1}::{typ}[])" for i, (_, typ) in enumerate(columns))
    con.execute(f"INSERT INTO {quote_ident(table)} SELECT {select}",
                [list(values) for values in zip(*rows)])


def verify_insertion_order(con, table: str, rows: list[tuple]) -> None:
    # The row-number convention (rowid + 1) is what the expected file relies on: check it.
    stored = con.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY rowid").fetchall()
    rowids = con.execute(f"SELECT min(rowid), max(rowid) FROM {quote_ident(table)}").fetchone()
    if stored != rows or (rows and rowids != (0, len(rows) - 1)):
        raise Failure(f"{table}: stored rows are not in insertion order")


def remove_database_files(path: Path) -> None:
    """make-db (re)creates its output: a stale file or WAL would be opened and merged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for candidate in (path, Path(str(path) + ".wal")):
        if candidate.exists():
            candidate.unlink()


def write_original_db(path: Path, tables: dict[str, TableRows]) -> None:
    remove_database_files(path)
    con = duckdb.connect(str(path))
    try:
        create_original_schema(con)
        for name, data in tables.items():
            bulk_insert(con, name, data.rows)
            verify_insertion_order(con, name, data.rows)
        # An uploaded file is ONE file: fold the WAL in so nothing lives beside it.
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if Path(str(path) + ".wal").exists():
        raise Failure(f"{path}.wal left behind after CHECKPOINT")


def table_expectation(data: TableRows) -> dict:
    kept = data.kept_rows()
    duplicates = len(kept) - len(set(kept))
    rejected = data.rejected()
    return {"rows_in_file": len(data.rows), "duplicates_collapsed": duplicates,
            "rejected": rejected, "rows_after_import": len(data.rows) - duplicates - len(rejected)}


def count_where(rows, column_index: int, predicate) -> int:
    return sum(1 for row in rows if predicate(row[column_index]))


def column_index(table: str, column: str) -> int:
    return [c for c, _ in ORIGINAL_TABLES[table]].index(column)


def unnormalised_theme(value) -> bool:
    return value is not None and (value != value.strip() or "\xa0" in value or "  " in value)


def is_null(value) -> bool:
    return value is None


def quirk_counts(tables: dict[str, TableRows]) -> dict:
    """The legacy quirks the importer must ACCEPT, counted on the rows an import keeps."""
    mapg = tables["measure_area_priority_grant"]
    mapg_kept = mapg.kept_rows()
    quirks = {
        "mapg_null_grant": len({r for r in mapg_kept if r[3] is None}),
        "mapg_null_grant_rows_in_file": count_where(mapg.rows, 3, is_null),
        "mapg_duplicate_rows": len(mapg_kept) - len(set(mapg_kept)),
        "mapg_duplicate_null_grant_rows":
            count_where(mapg_kept, 3, is_null) - len({r for r in mapg_kept if r[3] is None}),
    }
    for table, column in (("measure", "core_supplementary"), ("area", "area_description"),
                          ("species", "taxa"), ("priority", "theme")):
        quirks[f"{table}_{column}_null"] = count_where(
            tables[table].kept_rows(), column_index(table, column), is_null)
    quirks["priority_theme_unnormalised"] = count_where(
        tables["priority"].kept_rows(), column_index("priority", "theme"), unnormalised_theme)
    quirks["empty_strings"] = {
        f"{table}.{column}": n for table, data in tables.items()
        for i, (column, typ) in enumerate(ORIGINAL_TABLES[table]) if typ == TEXT
        for n in [count_where(data.kept_rows(), i, lambda v: v == "")] if n}
    quirks["special_grant_ids"] = SPECIAL_GRANT_IDS
    return quirks


def view_expectation(db_path: Path, expected: dict) -> dict:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        raw = con.execute(f"SELECT count(*) FROM {VIEW_NAME}").fetchone()[0]
    finally:
        con.close()
    clean = build_clean_db(db_path, expected)
    try:
        kept = clean.execute(f"SELECT count(*) FROM {VIEW_NAME}").fetchone()[0]
    finally:
        clean.close()
    return {VIEW_NAME: {"rows_in_file": raw, "rows_after_import": kept}}


def cmd_make_db(args) -> int:
    if args.scale < 1:
        raise Failure("--scale must be >= 1")
    started = time.monotonic()
    tables = Generator(args.scale, args.seed, not args.no_empty_strings).run()
    out = Path(args.out)
    write_original_db(out, tables)
    expected = {
        "generator": "tests/tools/original_db.py make-db",
        "scale": args.scale, "seed": args.seed, "duckdb_version": duckdb.__version__,
        "row_numbers": "1-based position in the table's insertion order (rowid + 1); in the "
                       "CSV export, the 1-based data row (header excluded)",
        "tables": {name: table_expectation(data) for name, data in tables.items()},
        "quirks": quirk_counts(tables),
    }
    expected["views"] = view_expectation(out, expected)
    Path(args.expected).write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    rows = sum(len(t.rows) for t in tables.values())
    print(f"wrote {out} ({rows} rows, {out.stat().st_size} bytes) and {args.expected} "
          f"in {time.monotonic() - started:.1f}s")
    return 0


# =================================================================================================
# Reading databases
# =================================================================================================

def open_db(path) -> duckdb.DuckDBPyConnection:
    """Read-only connection; a file from a newer storage format gets an explanation."""
    if not Path(path).is_file():
        raise Failure(f"{path}: no such file")
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        hint = ""
        if "version" in str(error).lower():
            hint = (f" (this is DuckDB {duckdb.__version__}, the original's generation: a DuckDB "
                    "export must be written with ATTACH ... (STORAGE_VERSION 'v1.4.0') or older "
                    "for it, and the original app, to read it)")
        raise Failure(f"cannot open {path}: {str(error).splitlines()[0]}{hint}") from None


def base_tables(con, catalog: str | None = None) -> list[str]:
    """Base tables of the main schema: ORIGINAL_TABLES order first, then the rest by name."""
    names = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = coalesce(?, "
        "current_database()) AND schema_name = 'main' AND NOT temporary", [catalog]).fetchall()]
    return ordered_names(names)


def views(con) -> list[str]:
    return sorted(r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT internal AND NOT temporary").fetchall())


def ordered_names(names) -> list[str]:
    rank = {name: i for i, name in enumerate(ORIGINAL_TABLES)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def relation_columns(con, relation: str) -> list[tuple[str, str]]:
    """[(name, type)] of a table, view or any SELECT-able relation expression."""
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def fetch_rows(con, relation: str, columns: list[str], order_by_rowid=False) -> list[tuple]:
    select = ", ".join(quote_ident(c) for c in columns)
    order = " ORDER BY rowid" if order_by_rowid else ""
    return con.execute(f"SELECT {select} FROM {relation}{order}").fetchall()


def cmd_dump(args) -> int:
    con = open_db(args.db)
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {quote_ident(t)}").fetchone()[0]
                  for t in base_tables(con)}
    finally:
        con.close()
    print(json.dumps(counts, indent=2))
    return 0


# =================================================================================================
# CSV: writing (make-csv-zip) and strict reading (check-csv)
# =================================================================================================

CSV_DELIMITER = ";"
CSV_NEWLINE = "\r\n"   # RFC 4180 record separator


def csv_field(value) -> str:
    """RFC 4180 with ';': quote only when needed; NULL is an empty UNQUOTED field and '' is
    written `""` so the two stay distinguishable."""
    if value is None:
        return ""
    text = str(value)
    if text == "" or any(ch in text for ch in ';"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_geometry_text(value) -> str | None:
    if value is None:
        return None
    try:
        return format_wkt(decode_wkb(value))
    except ValueError:
        return INVALID_GEOMETRY_TEXT


def table_csv(con, table: str) -> str:
    columns = relation_columns(con, quote_ident(table))
    names = [c for c, _ in columns]
    lines = [CSV_DELIMITER.join(csv_field(c) for c in names)]
    for row in fetch_rows(con, quote_ident(table), names, order_by_rowid=True):
        cells = []
        for (name, typ), value in zip(columns, row):
            if typ == BLOB:
                if name != GEOMETRY_COLUMN:
                    raise Failure(f"{table}.{name}: unexpected BLOB column")
                value = csv_geometry_text(value)
            cells.append(csv_field(value))
        lines.append(CSV_DELIMITER.join(cells))
    return CSV_NEWLINE.join(lines) + CSV_NEWLINE


def cmd_make_csv_zip(args) -> int:
    con = open_db(args.source)
    started = time.monotonic()
    try:
        tables = base_tables(con)
        with zipfile.ZipFile(args.out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for table in tables:
                # A fixed timestamp: the same DB gives a byte-identical archive.
                info = zipfile.ZipInfo(f"{table}.csv", date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, table_csv(con, table).encode("utf-8"))
    finally:
        con.close()
    print(f"wrote {args.out} ({len(tables)} tables) in {time.monotonic() - started:.1f}s")
    return 0


def tokenize_csv(text: str) -> list[list[tuple[str, bool]]]:
    """Strict RFC 4180 reader (';' delimiter) keeping, per field, whether it was quoted.

    The csv module cannot tell `""` (an empty string) from an empty field (NULL): both read as
    ''. This reader records the quoting, which makes the NULL / '' check exact; its values are
    also cross-checked against the csv module's, so the parse itself is not home-grown only.
    """
    records, record, i, n = [], [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j, chunks = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"unterminated quoted field at offset {i}")
                chunks.append(text[j:k])
                if text.startswith('""', k):
                    chunks.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            value, quoted = "".join(chunks), True
        else:
            j = i
            while j < n and text[j] not in ';\r\n':
                if text[j] == '"':
                    raise ValueError(f'bare " inside an unquoted field at offset {j}')
                j += 1
            value, quoted, i = text[i:j], False, j
        record.append((value, quoted))
        if i >= n:
            records.append(record)
            break
        if text[i] == ";":
            i += 1
            if i == n:   # a trailing ';' at end of input ends with an empty field
                record.append(("", False))
                records.append(record)
            continue
        if text.startswith("\r\n", i):
            i += 2
        elif text[i] in "\r\n":
            i += 1
        else:
            raise ValueError(f"text after a closing quote at offset {i}")
        records.append(record)
        record = []
    return records


def read_csv_file(path: Path) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise Failure(f"{path.name}: starts with a UTF-8 BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Failure(f"{path.name}: not UTF-8 ({error})") from None
    try:
        records = tokenize_csv(text)
    except ValueError as error:
        raise Failure(f"{path.name}: malformed CSV: {error}") from None
    # Cross-check with the csv module: same records, same values.
    try:
        reference = list(csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True))
    except csv.Error as error:
        raise Failure(f"{path.name}: the csv module rejects it: {error}") from None
    if [[v for v, _ in r] for r in records] != reference:
        raise Failure(f"{path.name}: the csv module reads it differently (ambiguous quoting?)")
    if not records:
        raise Failure(f"{path.name}: empty file (no header)")
    return [v for v, _ in records[0]], records[1:]


# =================================================================================================
# Multiset comparison
# =================================================================================================

def show_value(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes {bytes(value[:8]).hex()}…>"
    if isinstance(value, tuple) and value and value[0] in ("Polygon", "MultiPolygon"):
        return f"<{value[0]} {format_wkt(value)[:60]}…>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def show_row(row) -> str:
    return "(" + ", ".join(show_value(v) for v in row) + ")"


def multiset_diff(expected: list[tuple], actual: list[tuple], approx_columns=()):
    """(missing, unexpected): rows of `expected` not in `actual` and the reverse, counting
    multiplicity. Columns in approx_columns hold geometries matched within COORD_TOLERANCE."""
    missing = collections.Counter(expected)
    missing.subtract(collections.Counter(actual))
    unexpected = [row for row, k in (-missing).items() for _ in range(k)]
    missing = [row for row, k in missing.items() for _ in range(k) if k > 0]
    if approx_columns and missing and unexpected:
        missing, unexpected = _match_approx(missing, unexpected, set(approx_columns))
    return missing, unexpected


def _match_approx(missing, unexpected, approx_columns):
    def exact_part(row):
        return tuple(v for i, v in enumerate(row) if i not in approx_columns)

    buckets = collections.defaultdict(list)
    for row in missing:
        buckets[exact_part(row)].append(row)
    still_unexpected = []
    for row in unexpected:
        candidates = buckets.get(exact_part(row), [])
        match = next((c for c in candidates if all(
            geometries_close(c[i], row[i]) for i in approx_columns)), None)
        if match is None:
            still_unexpected.append(row)
        else:
            candidates.remove(match)
    return [r for rows in buckets.values() for r in rows], still_unexpected


def diff_report(name: str, missing, unexpected, limit: int = 3) -> str:
    parts = [f"{name}: DIFF {len(missing)} missing, {len(unexpected)} unexpected"]
    parts += [f"    missing:    {show_row(r)}" for r in missing[:limit]]
    parts += [f"    unexpected: {show_row(r)}" for r in unexpected[:limit]]
    return "\n".join(parts)


class Checker:
    """Collects per-item results; the final line is OK or FAIL with the failed items."""

    def __init__(self):
        self.failed: list[str] = []

    def ok(self, line: str) -> None:
        print(line)

    def fail(self, item: str, line: str) -> None:
        print(line)
        self.failed.append(item)

    def compare_rows(self, name: str, expected, actual, approx_columns=()) -> None:
        missing, unexpected = multiset_diff(expected, actual, approx_columns)
        if missing or unexpected:
            self.fail(name, diff_report(name, missing, unexpected))
        else:
            self.ok(f"{name}: ok {len(actual)} rows")

    def finish(self) -> int:
        if self.failed:
            raise Failure(f"{len(self.failed)} item(s) differ: {', '.join(self.failed)}")
        return 0


# =================================================================================================
# compare: the original (cleaned as the importer must) vs our export of the imported database
# =================================================================================================

def load_expected(path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read expected file {path}: {error}") from None


def build_clean_db(original_path, expected: dict) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB holding the original's tables minus the expected rejected rows, exact
    duplicates collapsed, and the original's view over them: what an import must produce."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {quote_literal(str(original_path))} AS o (READ_ONLY)")
    except duckdb.Error as error:
        con.close()
        raise Failure(f"cannot open {original_path}: {str(error).splitlines()[0]}") from None
    for table in base_tables(con, "o"):
        spec = expected["tables"].get(table)
        if spec is None:
            raise Failure(f"expected file has no entry for table {table}")
        rejected = sorted(r["row"] for r in spec["rejected"])
        where = f" WHERE rowid + 1 NOT IN ({', '.join(map(str, rejected))})" if rejected else ""
        con.execute(f"CREATE TABLE main.{quote_ident(table)} AS "
                    f"SELECT DISTINCT * FROM o.main.{quote_ident(table)}{where}")
    con.execute(VIEW_SQL)
    return con


def check_expected_counts(clean, table: str, spec: dict) -> str | None:
    """The expected file must describe this original: a mismatch is a harness error."""
    in_file = clean.execute(f"SELECT count(*) FROM o.main.{quote_ident(table)}").fetchone()[0]
    kept = clean.execute(f"SELECT count(*) FROM main.{quote_ident(table)}").fetchone()[0]
    if in_file != spec["rows_in_file"] or kept != spec["rows_after_import"]:
        return (f"{table}: expected file says {spec['rows_in_file']} rows in file / "
                f"{spec['rows_after_import']} after import, the original gives {in_file} / {kept}")
    return None


def compare_table(checker: Checker, clean, imported, table: str, expected: dict) -> None:
    problem = check_expected_counts(clean, table, expected["tables"][table])
    if problem:
        checker.fail(table, problem)
        return
    if table not in base_tables(imported):
        checker.fail(table, f"{table}: missing from the imported database")
        return
    want = relation_columns(clean, f"main.{quote_ident(table)}")
    extra = OUR_EXTRA_COLUMNS.get(table, ())
    got = [c for c in relation_columns(imported, quote_ident(table)) if c[0] not in extra]
    if got != want:
        checker.fail(table, f"{table}: columns differ: original {want}, imported {got}")
        return
    names = [c for c, _ in want]
    checker.compare_rows(table, fetch_rows(clean, f"main.{quote_ident(table)}", names),
                         fetch_rows(imported, quote_ident(table), names))


def compare_view(checker: Checker, clean, imported) -> None:
    if VIEW_NAME not in views(imported):
        checker.fail(VIEW_NAME, f"{VIEW_NAME}: missing from the imported database")
        return
    want, got = relation_columns(clean, VIEW_NAME), relation_columns(imported, VIEW_NAME)
    if [c for c, _ in want] != [c for c, _ in got]:
        checker.fail(VIEW_NAME, f"{VIEW_NAME}: columns differ: original {want}, imported {got}")
        return
    names = [c for c, _ in want]
    checker.compare_rows(VIEW_NAME, fetch_rows(clean, VIEW_NAME, names),
                         fetch_rows(imported, VIEW_NAME, names))


def cmd_compare(args) -> int:
    expected = load_expected(args.expected)
    clean = build_clean_db(args.original, expected)
    imported = open_db(args.imported)
    checker = Checker()
    try:
        for table in base_tables(clean, "o"):
            compare_table(checker, clean, imported, table, expected)
        compare_view(checker, clean, imported)
    finally:
        clean.close()
        imported.close()
    return checker.finish()


# =================================================================================================
# Export checks: CSV, Parquet, GeoJSON against a DuckDB export (our schema)
# =================================================================================================

def export_relations(con) -> set[str]:
    return set(base_tables(con)) | set(views(con))


def files_in(directory, suffix: str) -> list[Path]:
    folder = Path(directory)
    if not folder.is_dir():
        raise Failure(f"{directory}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix == suffix and p.is_file())
    if not files:
        raise Failure(f"{directory}: no {suffix} files")
    return files


def db_cell_for_csv(value, typ: str, name: str):
    """A database value as the CSV cell key it must match: None for NULL, a geometry tuple for
    geo_shape, otherwise the value's text (integers as decimal text)."""
    if value is None:
        return None
    if typ == BLOB and name == GEOMETRY_COLUMN:
        try:
            return decode_wkb(value)
        except ValueError:
            return ("invalid WKB", bytes(value))
    if isinstance(value, (bytes, bytearray)):
        return "\\x" + bytes(value).hex()
    return str(value)


def csv_cell(value: str, quoted: bool, is_geometry: bool):
    # An empty UNQUOTED field is NULL; `""` is the empty string.
    if value == "" and not quoted:
        return None
    if is_geometry:
        try:
            return parse_wkt(value)
        except ValueError:
            return ("bad WKT", value)
    return value


def check_csv_file(checker: Checker, db, path: Path, relations: set[str]) -> None:
    name = path.stem
    if name not in relations:
        checker.fail(path.name, f"{path.name}: no table or view {name!r} in the database")
        return
    columns = relation_columns(db, quote_ident(name))
    header, records = read_csv_file(path)
    if header != [c for c, _ in columns]:
        names = [c for c, _ in columns]
        checker.fail(path.name, f"{path.name}: header {header} != columns {names}")
        return
    bad = next((i for i, r in enumerate(records, start=1) if len(r) != len(columns)), None)
    if bad is not None:
        checker.fail(path.name, f"{path.name}: data row {bad} has {len(records[bad - 1])} "
                                f"fields, expected {len(columns)}")
        return
    geometry = {i for i, (c, t) in enumerate(columns) if c == GEOMETRY_COLUMN and t == BLOB}
    actual = [tuple(csv_cell(v, q, i in geometry) for i, (v, q) in enumerate(r)) for r in records]
    expected = [tuple(db_cell_for_csv(v, t, c) for v, (c, t) in zip(row, columns))
                for row in fetch_rows(db, quote_ident(name), [c for c, _ in columns])]
    checker.compare_rows(path.name, expected, actual, approx_columns=geometry)


def run_file_checks(directory, db_path, suffix: str, check_one) -> int:
    files = files_in(directory, suffix)
    db = open_db(db_path)
    checker = Checker()
    try:
        relations = export_relations(db)
        for path in files:
            try:
                check_one(checker, db, path, relations)
            except Failure as failure:   # one unreadable file fails that file, not the run
                checker.fail(path.name, f"{path.name}: {failure}")
        missing = sorted(relations - {p.stem for p in files})
        if missing:
            print(f"(not exported, not checked: {', '.join(missing)})")
    finally:
        db.close()
    return checker.finish()


def cmd_check_csv(args) -> int:
    return run_file_checks(args.dir, args.db, ".csv", check_csv_file)


def check_parquet_file(checker: Checker, db, path: Path, relations: set[str]) -> None:
    name = path.stem
    if name not in relations:
        checker.fail(path.name, f"{path.name}: no table or view {name!r} in the database")
        return
    source = f"read_parquet({quote_literal(str(path))})"
    try:
        got = relation_columns(db, source)
    except duckdb.Error as error:
        checker.fail(path.name, f"{path.name}: unreadable: {str(error).splitlines()[0]}")
        return
    want = relation_columns(db, quote_ident(name))
    if got != want:
        checker.fail(path.name, f"{path.name}: columns {got} != table's {want}")
        return
    names = [c for c, _ in want]
    checker.compare_rows(path.name, fetch_rows(db, quote_ident(name), names),
                         fetch_rows(db, source, names))


def cmd_check_parquet(args) -> int:
    return run_file_checks(args.dir, args.db, ".parquet", check_parquet_file)


AREA_COLUMNS = ["area_id", "area_name", "area_description", "area_link", "bng_hab_mgt",
                "bng_hab_creation"]


def expected_area_geometries(db) -> dict[int, object]:
    """area_id -> expected GeoJSON geometry tuple: one Polygon row -> Polygon, several rows ->
    MultiPolygon of their polygons in geom_id order; areas without rows are absent (null)."""
    rows = db.execute("SELECT area_id, geo_shape FROM area_geom WHERE geo_shape IS NOT NULL "
                      "ORDER BY area_id, geom_id").fetchall()
    per_area = collections.defaultdict(list)
    for area_id, blob in rows:
        per_area[area_id].append(decode_wkb(blob))
    result = {}
    for area_id, geometries in per_area.items():
        if len(geometries) == 1 and geometries[0][0] == "Polygon":
            result[area_id] = geometries[0]
        else:
            polygons = [p for g in geometries
                        for p in ((g[1],) if g[0] == "Polygon" else g[1])]
            result[area_id] = ("MultiPolygon", tuple(polygons))
    return result


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"coordinate {value!r} is not a number")
    return float(value)


def _geojson_ring(ring):
    points = []
    for position in ring:
        if not isinstance(position, list) or len(position) != 2:
            raise ValueError(f"position {position!r} is not [x, y]")
        points.append((_number(position[0]), _number(position[1])))
    return tuple(points)


def geojson_geometry(geometry):
    """GeoJSON geometry object -> geometry tuple (None for null); ValueError if malformed."""
    if geometry is None:
        return None
    if not isinstance(geometry, dict):
        raise ValueError("geometry is not an object")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if not isinstance(coordinates, list):
        raise ValueError("coordinates missing")
    if kind == "Polygon":
        return ("Polygon", tuple(_geojson_ring(r) for r in coordinates))
    if kind == "MultiPolygon":
        return ("MultiPolygon", tuple(tuple(_geojson_ring(r) for r in p) for p in coordinates))
    raise ValueError(f"geometry type {kind!r} (expected Polygon or MultiPolygon)")


def same_json_value(db_value, json_value) -> bool:
    # Types must match too: an id as "12" or a NULL as "" is wrong.
    if db_value is None or json_value is None:
        return db_value is None and json_value is None
    if isinstance(db_value, int):
        return type(json_value) is int and json_value == db_value
    return isinstance(json_value, str) and json_value == db_value


def check_feature(feature, area_row, expected_geometry) -> str | None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return "not a Feature"
    if "geometry" not in feature:   # RFC 7946: present, null when there is none
        return "no geometry member"
    properties = feature.get("properties")
    if not isinstance(properties, dict) or set(properties) != set(AREA_COLUMNS):
        return f"properties keys {sorted(properties or {})} != {AREA_COLUMNS}"
    for column, value in zip(AREA_COLUMNS, area_row):
        if not same_json_value(value, properties[column]):
            return f"property {column}: {show_value(properties[column])} != {show_value(value)}"
    try:
        got = geojson_geometry(feature.get("geometry"))
    except ValueError as error:
        return f"geometry: {error}"
    difference = geometry_difference(got, expected_geometry)
    return f"geometry: {difference}" if difference else None


def load_feature_collection(path) -> list:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise Failure(f"{path}: not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise Failure(f"{path}: not a FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise Failure(f"{path}: features is not a list")
    return features


def feature_area_id(feature):
    properties = feature.get("properties") if isinstance(feature, dict) else None
    return properties.get("area_id") if isinstance(properties, dict) else None


def cmd_check_geojson(args) -> int:
    features = load_feature_collection(args.file)
    db = open_db(args.db)
    try:
        areas = {row[0]: row for row in fetch_rows(db, "area", AREA_COLUMNS)}
        geometries = expected_area_geometries(db)
    finally:
        db.close()
    if len(features) != len(areas):
        raise Failure(f"{len(features)} features, {len(areas)} areas")
    checker, seen = Checker(), set()
    for index, feature in enumerate(features, start=1):
        area_id = feature_area_id(feature)
        label = f"feature {index} (area_id {area_id!r})"
        if type(area_id) is not int or area_id not in areas or area_id in seen:
            checker.fail(label, f"{label}: unknown or repeated area_id")
            continue
        seen.add(area_id)
        problem = check_feature(feature, areas[area_id], geometries.get(area_id))
        if problem:
            checker.fail(label, f"{label}: {problem}")
    kinds = collections.Counter(g[0] if g else "null" for g in
                                (geometries.get(a) for a in areas))
    if not checker.failed:
        checker.ok(f"{Path(args.file).name}: ok {len(features)} features "
                   f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    return checker.finish()


# =================================================================================================
# CLI
# =================================================================================================

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-db", help="write an original-schema DuckDB file + expected JSON")
    p.add_argument("out")
    p.add_argument("--expected", required=True)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-empty-strings", action="store_true",
                   help="write NULL where a few empty strings would go")
    p.set_defaults(handler=cmd_make_db)

    p = sub.add_parser("make-csv-zip", help="the original portal's CSV export of a DB, zipped")
    p.add_argument("out")
    p.add_argument("--from", dest="source", required=True)
    p.set_defaults(handler=cmd_make_csv_zip)

    p = sub.add_parser("compare", help="cleaned original vs our export of the imported DB")
    p.add_argument("original")
    p.add_argument("imported")
    p.add_argument("--expected", required=True)
    p.set_defaults(handler=cmd_compare)

    for name, handler, what in (("check-csv", cmd_check_csv, "DIR"),
                                ("check-parquet", cmd_check_parquet, "DIR"),
                                ("check-geojson", cmd_check_geojson, "FILE")):
        p = sub.add_parser(name, help=f"check our export ({what}) against a DuckDB export")
        p.add_argument("dir" if what == "DIR" else "file")
        p.add_argument("--db", required=True)
        p.set_defaults(handler=handler)

    p = sub.add_parser("dump", help="print {table: row_count}")
    p.add_argument("db")
    p.set_defaults(handler=cmd_dump)
    return parser


CHECK_COMMANDS = {"compare", "check-csv", "check-parquet", "check-geojson"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
    except Failure as failure:
        print(f"FAIL: {failure}")
        return 1
    except duckdb.Error as error:   # e.g. a view of the export that does not bind
        print(f"FAIL: DuckDB: {str(error).splitlines()[0]}")
        return 1
    if args.command in CHECK_COMMANDS and status == 0:
        print("OK")
    return status


if __name__ == "__main__":
    sys.exit(main())
