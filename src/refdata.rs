//! The deterministic reference LNRS dataset.
//!
//! Tests, benchmarks and demo deployments need a database shaped like the live one (same tables,
//! volumes, bridge fan-out, `apmg_slim_vw` size and a ~33 MB file, mostly polygons) without
//! copying the live data. This module owns that synthetic dataset: its content tables (the
//! tab-separated files in `src/refdata/`, compiled in), the generator and the checks that it
//! stays realistic.
//!
//! Determinism is a contract: the same `scale` yields the same rows, bit for bit, on every machine
//! and toolchain, so fingerprints and benchmark results can be compared across runs. Hence a
//! local SplitMix64 stream per (region, purpose) instead of `rand` (whose algorithms may change
//! between versions), and a local sine/cosine built from basic IEEE operations instead of the
//! platform libm (whose last bits differ between systems).
//!
//! `scale` is a number of independent "regions": each is a full copy of the scale-1 volumes with
//! its own ids, names (suffixed " (2)", " (3)", ...), grant codes ("CAB5-2") and random draws. The
//! fixed lookups (measure types, stakeholders, benefits) are shared. Bridges never cross regions,
//! so per-entity delete costs stay those of the live database at any scale.
//!
//! Values are synthetic: names of species, habitats and grant options are real, but GBIF keys,
//! photo links and `example.org` guidance links are made up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use duckdb::{params, Appender, Connection};

use crate::domain::tables::USER_TABLES;
use crate::storage::files::{self, wal_files};

/// Largest accepted `scale`. It is already a ~33 GB file; the cap turns a mistyped scale into an
/// error instead of a full disk, and keeps every id far below `INTEGER`'s limit.
pub const MAX_SCALE: u32 = 1_000;

/// Row counts written by one generation, per table, in the order the tables were filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefDataStats {
    /// `(table name, rows written)` for every table the generator fills.
    pub tables: Vec<(String, u64)>,
}

impl RefDataStats {
    /// Rows written to `table`, or `None` if the generator does not fill that table.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(name, _)| name == table)
            .map(|(_, n)| *n)
    }

    /// Rows written over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Why the reference dataset could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RefDataError {
    /// `scale` was 0 or above [`MAX_SCALE`].
    #[error("invalid scale {scale}: must be between 1 and {max}")]
    InvalidScale {
        /// The rejected scale.
        scale: u32,
        /// The largest accepted scale.
        max: u32,
    },
    /// The target database already holds rows: the generator only fills empty databases, so it
    /// can never mix reference rows into real data.
    #[error(
        "table {table} already holds {rows} rows: the reference dataset needs an empty database"
    )]
    NotEmpty {
        /// First non-empty table found.
        table: String,
        /// Its row count.
        rows: u64,
    },
    /// The target file (or a WAL next to it) exists; it is never overwritten.
    #[error("refusing to overwrite existing file {}", .0.display())]
    AlreadyExists(PathBuf),
    /// The schema migration failed. Holds its message only, so this module does not depend on
    /// the storage error's variants.
    #[error("migrating {}: {message}", path.display())]
    Migrate {
        /// Database being migrated.
        path: PathBuf,
        /// The migration error's message.
        message: String,
    },
    /// A file-system operation on the target path failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "renaming the generated database to".
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file under src/refdata/ does not hold what the generator needs (a build defect,
    /// caught by the unit tests).
    #[error("reference data files: {0}")]
    Content(String),
    /// DuckDB rejected a statement or an appended row.
    #[error("duckdb: {0}")]
    DuckDb(#[from] duckdb::Error),
}

/// Fills an already-migrated, EMPTY database with the reference LNRS dataset at `scale` (>= 1),
/// in one transaction, using duckdb's Appender for bulk rows, then runs CHECKPOINT.
///
/// Refuses (without writing) a database where any table it fills already has rows. On any error
/// the transaction is rolled back, so the database is left as it was.
pub fn generate(conn: &Connection, scale: u32) -> Result<RefDataStats, RefDataError> {
    check_scale(scale)?;
    conn.execute_batch("BEGIN TRANSACTION")?;
    let mut counts = Counts::default();
    // The emptiness check runs inside the transaction so a concurrent writer cannot slip rows in
    // between the check and the load without a commit conflict.
    let written = ensure_empty(conn).and_then(|()| write_all(conn, scale, &mut counts));
    if let Err(e) = written {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    // A checkpoint folds the load into the main file, so the file size is final and a copy of the
    // file alone is complete.
    conn.execute_batch("CHECKPOINT")?;
    Ok(counts.into_stats())
}

/// Creates a new database file at `path` (refusing to overwrite an existing file), migrates it
/// with `crate::storage::schema::migrate`, generates, checkpoints and closes it.
///
/// The database is built under a temporary name in the same directory and only then linked to
/// `path`, so `path` never shows a half-written database, and a failure leaves nothing behind.
pub fn write_to_path(path: &Path, scale: u32) -> Result<RefDataStats, RefDataError> {
    check_scale(scale)?;
    // A leftover WAL would be replayed onto the new file, importing someone else's commits.
    for p in std::iter::once(path.to_path_buf()).chain(wal_files(path)) {
        if p.exists() {
            return Err(RefDataError::AlreadyExists(p));
        }
    }
    let tmp = temp_sibling(path)?;
    let result = fill_new_file(&tmp, scale).and_then(|stats| publish(&tmp, path).map(|()| stats));
    // Best effort: on success only the temporary name goes; on failure the original error is the
    // one worth reporting.
    let _ = files::remove_database(&tmp);
    result
}

/// A name next to `path` that does not exist yet (same directory, so linking is not a copy).
fn temp_sibling(path: &Path) -> Result<PathBuf, RefDataError> {
    let name = path
        .file_name()
        .map_or_else(|| "refdata".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let candidate = path.with_file_name(format!(
            ".{name}.refdata-{}-{nanos}-{attempt}.tmp",
            std::process::id()
        ));
        if std::iter::once(candidate.clone())
            .chain(wal_files(&candidate))
            .all(|p| !p.exists())
        {
            return Ok(candidate);
        }
    }
    Err(RefDataError::Io {
        action: "choosing a temporary name next to",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    })
}

/// Gives the finished file its final name without ever replacing an existing file (see
/// [`files::publish_new`]: a hard link fails atomically if `path` exists).
fn publish(tmp: &Path, path: &Path) -> Result<(), RefDataError> {
    files::publish_new(tmp, path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            RefDataError::AlreadyExists(path.to_path_buf())
        } else {
            RefDataError::Io {
                action: "publishing the generated database as",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn fill_new_file(path: &Path, scale: u32) -> Result<RefDataStats, RefDataError> {
    let conn = Connection::open(path)?;
    crate::storage::apply_write_settings(&conn)?;
    crate::storage::schema::migrate(&conn).map_err(|e| RefDataError::Migrate {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let stats = generate(&conn, scale)?;
    // An explicit close surfaces errors that a drop would swallow, and the file must be closed
    // before it is published.
    conn.close().map_err(|(_, e)| e)?;
    Ok(stats)
}

fn check_scale(scale: u32) -> Result<(), RefDataError> {
    if scale == 0 || scale > MAX_SCALE {
        return Err(RefDataError::InvalidScale {
            scale,
            max: MAX_SCALE,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Volumes per region (DOMAIN.md "Volumes")

const MEASURES: usize = 168;
const GRANTS: usize = 168;
const AREAS: usize = 68;
const SPECIES: usize = 51;
const PRIORITIES: usize = 33;
const HABITATS: usize = 33;
const MAP_LINKS: usize = 2_936;
const MAPG_ROWS: usize = 3_271;
const SAP_ROWS: usize = 2_505;
const HCA_ROWS: usize = 681;
const HMA_ROWS: usize = 817;
const GEOMS: usize = 694;
/// `apmg_slim_vw` rows per region in the live database; MAPG is spread to land near it.
const APMG_TARGET: usize = 6_528;

/// Vertices per polygon, sized so the scale-1 file matches the live ~33 MB. Measured on DuckDB
/// 2.0: the other tables, their primary-key indexes and metadata take ~11 MB; the polygons are
/// 694 × ~2,100 vertices × 16 bytes ≈ 23.3 MB of WKB, which DuckDB's ZSTD stores in ~22 MB.
const VERTICES_MIN: usize = 1_150;
const VERTICES_MAX: usize = 3_050;

/// Rows written per table, in the order the tables were first filled.
#[derive(Default)]
struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    fn add(&mut self, table: &'static str, rows: u64) {
        match self.0.iter_mut().find(|(t, _)| *t == table) {
            Some((_, n)) => *n += rows,
            None => self.0.push((table, rows)),
        }
    }

    fn into_stats(self) -> RefDataStats {
        RefDataStats {
            tables: self
                .0
                .into_iter()
                .map(|(t, n)| (t.to_string(), n))
                .collect(),
        }
    }
}

fn ensure_empty(conn: &Connection) -> Result<(), RefDataError> {
    for table in USER_TABLES.iter().map(|t| t.name) {
        let rows: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        if rows != 0 {
            return Err(RefDataError::NotEmpty {
                table: table.to_string(),
                rows: u64::try_from(rows).unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// Appends the rows `fill` produces to `table` and flushes, so a bad row fails here (a flush on
/// drop would swallow the error).
fn append<F>(
    conn: &Connection,
    counts: &mut Counts,
    table: &'static str,
    fill: F,
) -> Result<(), RefDataError>
where
    F: FnOnce(&mut Appender<'_>) -> duckdb::Result<u64>,
{
    let mut app = conn.appender(table)?;
    let n = fill(&mut app)?;
    app.flush()?;
    counts.add(table, n);
    Ok(())
}

fn write_all(conn: &Connection, scale: u32, counts: &mut Counts) -> Result<(), RefDataError> {
    let c = content()?;
    append(conn, counts, "measure_type", |app| {
        append_lookup(app, &c.measure_types)
    })?;
    append(conn, counts, "stakeholder", |app| {
        append_lookup(app, &c.stakeholders)
    })?;
    append(conn, counts, "benefits", |app| {
        append_lookup(app, &c.benefits)
    })?;
    // Regions are built and written one at a time so memory stays that of one region.
    let mut next_funding_id = 1i32;
    for k in 0..scale {
        let region = Region::build(k, c);
        region.write(conn, counts, &mut next_funding_id)?;
    }
    Ok(())
}

fn append_lookup(app: &mut Appender<'_>, names: &[&str]) -> duckdb::Result<u64> {
    for (id, name) in (1i32..).zip(names) {
        app.append_row(params![id, name])?;
    }
    Ok(names.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/// Base seed of every stream; changing it changes the whole dataset.
const SEED: u64 = 0x4c4e_5253_5245_4644; // "LNRSREFD"

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and its output is fixed by its definition.
struct SplitMix64(u64);

impl SplitMix64 {
    /// An independent stream per (region, purpose), so tuning one table's draws leaves every
    /// other table's rows unchanged.
    fn stream(region: u32, purpose: u64) -> Self {
        let mut s = SplitMix64(SEED ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let salt = s.next_u64() ^ u64::from(region).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut t = SplitMix64(salt);
        t.next_u64();
        t
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-50 for our n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Index drawn with the given relative weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `k` distinct indices of `0..n` (k <= n), in draw order.
    fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Stream purposes: one per kind of draw.
mod purpose {
    pub const MEASURE: u64 = 1;
    pub const AREA: u64 = 2;
    pub const SPECIES: u64 = 3;
    pub const GRANT: u64 = 4;
    pub const FUNDING: u64 = 5;
    pub const GEOM: u64 = 6;
    pub const MAP: u64 = 7;
    pub const MAPG: u64 = 8;
    pub const SAP: u64 = 9;
    pub const HABITAT_AREA: u64 = 10;
}

/// sin and cos of `x` from +, −, ×, ÷ and round only: these are exactly specified by IEEE 754,
/// whereas `f64::sin_cos` calls the platform libm, whose results may differ in the last bit.
/// Quadrant reduction then Taylor series to degree 14/15: error < 1e-13 on |r| <= π/4.
fn sin_cos(x: f64) -> (f64, f64) {
    let half_pi = std::f64::consts::FRAC_PI_2;
    let k = (x / half_pi).round();
    let r = x - k * half_pi;
    let r2 = r * r;
    let s = r
        * (1.0
            - r2 / 6.0
                * (1.0
                    - r2 / 20.0
                        * (1.0
                            - r2 / 42.0
                                * (1.0 - r2 / 72.0 * (1.0 - r2 / 110.0 * (1.0 - r2 / 156.0))))));
    let c = 1.0
        - r2 / 2.0
            * (1.0
                - r2 / 12.0
                    * (1.0
                        - r2 / 30.0 * (1.0 - r2 / 56.0 * (1.0 - r2 / 90.0 * (1.0 - r2 / 132.0)))));
    match (k as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Synthetic GBIF-style key for a taxon name: stable across versions (BLAKE3 is specified) and
/// the same for every species sharing a genus or family.
fn taxon_key(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    1_000_000 + u64::from_le_bytes(b) % 9_000_000
}

fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Name suffix for region `k`: none for the first region, so scale 1 reads like the live data.
fn suffix(k: u32) -> String {
    if k == 0 {
        String::new()
    } else {
        format!(" ({})", k + 1)
    }
}

/// Lower-cases the first letter so a concise measure reads inside a sentence.
fn in_sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// One region

struct MeasureRow {
    id: i32,
    measure: String,
    other_priorities_delivered: Option<String>,
    core_supplementary: &'static str,
    mapped_unmapped: Option<&'static str>,
    relevant_map_layer: Option<String>,
    link_to_further_guidance: String,
    concise_measure: String,
}

struct AreaRow {
    id: i32,
    name: String,
    description: String,
    link: String,
    bng_hab_mgt: Option<String>,
    bng_hab_creation: Option<String>,
    lat: f64,
    lon: f64,
}

struct SpeciesRow {
    id: i32,
    taxa: &'static str,
    common_name: String,
    assemblage: &'static str,
    species_link: String,
    scientific_name: String,
    usage_key: String,
    kingdom: &'static str,
    phylum: &'static str,
    order: &'static str,
    family: &'static str,
    genus: String,
    kingdom_key: String,
    phylum_key: String,
    class_key: String,
    order_key: String,
    family_key: String,
    genus_key: String,
    class: &'static str,
    verbatim_index: i64,
    gbif_species_url: String,
    image_url: String,
    license: &'static str,
    attribution: String,
    photo_url: String,
}

struct GrantRow {
    id: String,
    name: &'static str,
    scheme: &'static str,
    url: String,
    summary: String,
}

struct GeomSpec {
    id: i32,
    area_id: i32,
    lat: f64,
    lon: f64,
    radius: f64,
    vertices: usize,
    shape_seed: u64,
}

struct Region {
    k: u32,
    c: &'static Content,
    measures: Vec<MeasureRow>,
    areas: Vec<AreaRow>,
    priorities: Vec<(i32, String, &'static str, &'static str)>,
    species: Vec<SpeciesRow>,
    grants: Vec<GrantRow>,
    habitats: Vec<(i32, String)>,
    /// (area index, scheme text); ids are assigned while writing so they stay dense across regions.
    funding: Vec<(usize, String)>,
    geoms: Vec<GeomSpec>,
    measure_types: Vec<(i32, i32)>,
    measure_stakeholders: Vec<(i32, i32)>,
    measure_benefits: Vec<(i32, i32)>,
    measure_species: Vec<(i32, i32)>,
    /// Indices (measure, area, priority) into this region's vectors.
    map: Vec<(usize, usize, usize)>,
    /// (index into `map`, index into `grants`).
    mapg: Vec<(usize, usize)>,
    sap: Vec<(usize, usize, usize)>,
    hca: Vec<(usize, usize)>,
    hma: Vec<(usize, usize)>,
}

/// `target` distinct rows in draw order, the i-th drawn for owner `i % owners` (round robin);
/// a row drawn again is skipped. The caller makes sure every owner has enough candidates.
fn distinct_round_robin<T: Copy + Eq + std::hash::Hash>(
    target: usize,
    owners: usize,
    mut draw: impl FnMut(usize) -> T,
) -> Vec<T> {
    let mut seen = HashSet::with_capacity(target);
    let mut rows = Vec::with_capacity(target);
    let mut i = 0usize;
    while rows.len() < target {
        let row = draw(i % owners);
        i += 1;
        if seen.insert(row) {
            rows.push(row);
        }
    }
    rows
}

/// Ids of region `k` start after those of regions `0..k`.
fn id(k: u32, per_region: usize, index: usize) -> i32 {
    // MAX_SCALE × the largest per-region volume stays far below i32::MAX.
    (k as usize * per_region + index + 1) as i32
}

impl Region {
    fn build(k: u32, c: &'static Content) -> Region {
        let sfx = suffix(k);
        let mut r = Region {
            k,
            c,
            measures: Vec::with_capacity(MEASURES),
            areas: Vec::with_capacity(AREAS),
            priorities: Vec::with_capacity(PRIORITIES),
            species: Vec::with_capacity(SPECIES),
            grants: Vec::with_capacity(GRANTS),
            habitats: Vec::with_capacity(HABITATS),
            funding: Vec::new(),
            geoms: Vec::with_capacity(GEOMS),
            measure_types: Vec::new(),
            measure_stakeholders: Vec::new(),
            measure_benefits: Vec::new(),
            measure_species: Vec::new(),
            map: Vec::new(),
            mapg: Vec::with_capacity(MAPG_ROWS),
            sap: Vec::new(),
            hca: Vec::new(),
            hma: Vec::new(),
        };

        // Priorities, grouped by theme so measures and species can favour their own theme.
        let mut by_theme: Vec<Vec<usize>> = vec![Vec::new(); c.themes.len()];
        for (j, &(text, simple, theme)) in c.priorities.iter().enumerate() {
            r.priorities.push((
                id(k, PRIORITIES, j),
                format!("{text}{sfx}"),
                simple,
                c.themes[theme],
            ));
            by_theme[theme].push(j);
        }

        for (j, name) in c.habitats.iter().enumerate() {
            r.habitats
                .push((id(k, HABITATS, j), format!("{name}{sfx}")));
        }

        r.build_grants();
        let measure_prios = r.build_measures(&by_theme);
        r.build_areas();
        let species_prios = r.build_species(&by_theme);
        r.build_geoms();
        r.build_map(&measure_prios);
        r.build_mapg();
        r.build_sap(&species_prios);
        r.build_habitat_areas();
        r
    }

    fn build_grants(&mut self) {
        let mut rng = SplitMix64::stream(self.k, purpose::GRANT);
        for &(code, name, scheme) in &self.c.grants {
            let id = if self.k == 0 {
                code.to_string()
            } else {
                format!("{code}-{}", self.k + 1)
            };
            let url = if scheme.starts_with("Sustainable") || scheme.starts_with("Countryside") {
                format!(
                    "https://www.gov.uk/find-funding-for-land-or-farms/{}-{}",
                    code.to_ascii_lowercase(),
                    slug(name)
                )
            } else {
                format!("https://www.gov.uk/guidance/{}", slug(name))
            };
            let blurb = self
                .c
                .scheme_blurbs
                .iter()
                .find(|(s, _)| *s == scheme)
                .map_or("", |(_, b)| *b);
            let payment = 50 + 5 * rng.below(200);
            let unit = *rng.pick(&["hectare", "metre", "item", "plan", "year"]);
            let summary = format!(
                "{name}. {blurb} Pays around £{payment} per {unit} for land managers who agree to \
                 the option's requirements for its full term; evidence of the work must be kept \
                 for inspection. Check eligibility with the Rural Payments Agency before applying."
            );
            self.grants.push(GrantRow {
                id,
                name,
                scheme,
                url,
                summary,
            });
        }
    }

    /// Builds measures and their small bridges; returns each measure's priorities.
    fn build_measures(&mut self, by_theme: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let (k, c) = (self.k, self.c);
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::MEASURE);
        let mut prios = Vec::with_capacity(MEASURES);
        for j in 0..MEASURES {
            let (text, concise, theme) = c.measure_bases[j % c.measure_bases.len()];
            let qualifier = c.qualifiers[j / c.measure_bases.len()];
            let mid = id(k, MEASURES, j);

            let mut mine = vec![*rng.pick(&by_theme[theme])];
            if rng.chance(0.5) {
                let p = *rng.pick(&by_theme[theme]);
                if !mine.contains(&p) {
                    mine.push(p);
                }
            }
            if theme != c.all_habitats && rng.chance(0.4) {
                mine.push(*rng.pick(&by_theme[c.all_habitats]));
            }
            let others: Vec<&str> = rng
                .distinct(PRIORITIES, 2)
                .into_iter()
                .filter(|p| !mine.contains(p))
                .map(|p| c.priorities[p].1)
                .collect();
            let other_priorities_delivered = if others.is_empty() || rng.chance(0.1) {
                None
            } else {
                Some(others.join("; "))
            };

            let core_supplementary = if rng.chance(0.6) {
                "Core (BNG)"
            } else {
                "Supplementary"
            };
            let mapped_unmapped = match rng.weighted(&[55, 35, 10]) {
                0 => Some("Mapped"),
                1 => Some("Unmapped"),
                _ => None,
            };
            let relevant_map_layer = (mapped_unmapped == Some("Mapped"))
                .then(|| format!("LNRS measures map: {concise}"));
            self.measures.push(MeasureRow {
                id: mid,
                measure: format!("{text}, {qualifier}{sfx}"),
                other_priorities_delivered,
                core_supplementary,
                mapped_unmapped,
                relevant_map_layer,
                link_to_further_guidance: format!(
                    "https://lnrs.example.org/guidance/{}",
                    slug(concise)
                ),
                concise_measure: concise.to_string(),
            });

            // Types and stakeholders multiply apmg_slim_vw rows: mostly one of each keeps the
            // view near its live size (see build_mapg).
            let n = 1 + rng.weighted(&[75, 20, 5]);
            for t in rng.distinct(c.measure_types.len(), n) {
                self.measure_types.push((mid, t as i32 + 1));
            }
            let n = 1 + rng.weighted(&[80, 15, 5]);
            for s in rng.distinct(c.stakeholders.len(), n) {
                self.measure_stakeholders.push((mid, s as i32 + 1));
            }
            let n = rng.range(1, 3);
            for b in rng.distinct(c.benefits.len(), n) {
                self.measure_benefits.push((mid, b as i32 + 1));
            }
            let n = rng.weighted(&[15, 30, 30, 25]);
            for s in rng.distinct(SPECIES, n) {
                self.measure_species.push((mid, id(k, SPECIES, s)));
            }
            prios.push(mine);
        }
        prios
    }

    fn build_areas(&mut self) {
        let (k, c) = (self.k, self.c);
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::AREA);
        // Inland West of England (Bristol, Bath, Chew Valley): clear of the Severn estuary and
        // Wales even after the polygon offsets added in build_geoms.
        let places: Vec<(f64, f64)> = c
            .places
            .iter()
            .map(|_| (rng.uniform(51.31, 51.47), rng.uniform(-2.60, -2.27)))
            .collect();
        for j in 0..AREAS {
            let place = c.places[j / c.area_kinds.len()];
            let (kind, kind_desc, kind_habitats) = &c.area_kinds[j % c.area_kinds.len()];
            let (plat, plon) = places[j / c.area_kinds.len()];
            let aid = id(k, AREAS, j);
            let habs = rng.distinct(kind_habitats.len(), 3);
            let hab = |i: usize| c.habitats[kind_habitats[habs[i]]];
            let measures = rng.distinct(c.measure_bases.len(), 2);
            let hectares = 40 + 10 * rng.below(120);
            let description = format!(
                "{kind_desc} around {place}. The area covers about {hectares} hectares and includes \
                 {}, {} and {}. Recovery here focuses on {} and {}, building on existing nature \
                 reserves, farm agreements and community projects, and it links to neighbouring \
                 sites along hedgerows, streams and road verges.",
                in_sentence(hab(0)),
                in_sentence(hab(1)),
                in_sentence(hab(2)),
                in_sentence(c.measure_bases[measures[0]].1),
                in_sentence(c.measure_bases[measures[1]].1),
            );
            let bng_hab_mgt = rng.chance(0.9).then(|| format!("{}; {}", hab(0), hab(1)));
            let bng_hab_creation = rng.chance(0.8).then(|| hab(2).to_string());
            self.areas.push(AreaRow {
                id: aid,
                name: format!("{place} {kind}{sfx}"),
                description,
                link: format!("https://lnrs.example.org/areas/{aid}"),
                bng_hab_mgt,
                bng_hab_creation,
                lat: plat + rng.uniform(-0.012, 0.012),
                lon: plon + rng.uniform(-0.018, 0.018),
            });
        }
        let mut rng = SplitMix64::stream(k, purpose::FUNDING);
        for a in 0..AREAS {
            let n = rng.range(1, 3);
            for f in rng.distinct(c.local_funding.len(), n) {
                let (name, blurb) = c.local_funding[f];
                self.funding.push((a, format!("{name}: {blurb}")));
            }
        }
    }

    /// Builds species; returns each species' priorities (2 to 4, mostly of its home theme).
    fn build_species(&mut self, by_theme: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let (k, c) = (self.k, self.c);
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::SPECIES);
        let mut prios = Vec::with_capacity(SPECIES);
        for (j, &(common, scientific, asm, class, order, family, theme)) in
            c.species.iter().enumerate()
        {
            let (assemblage, taxa, kingdom, phylum) = c.assemblages[asm];
            let scientific_name = format!("{scientific}{sfx}");
            let genus = scientific
                .split(' ')
                .next()
                .unwrap_or(scientific)
                .to_string();
            let species_key = taxon_key(&scientific_name);
            let photo = 10_000_000 + rng.below(300_000_000);
            let (license, rights) = *rng.pick(&[
                ("CC BY 4.0", "some rights reserved (CC BY)"),
                ("CC BY-NC 4.0", "some rights reserved (CC BY-NC)"),
                ("CC0 1.0", "no rights reserved (CC0)"),
            ]);
            let recorder = *rng.pick(&c.recorders);
            let sid = id(k, SPECIES, j);
            self.species.push(SpeciesRow {
                id: sid,
                taxa,
                common_name: format!("{common}{sfx}"),
                assemblage,
                species_link: format!(
                    "https://species.nbnatlas.org/species/NBNSYS{:010}",
                    species_key
                ),
                scientific_name,
                usage_key: species_key.to_string(),
                kingdom,
                phylum,
                order,
                family,
                kingdom_key: taxon_key(kingdom).to_string(),
                phylum_key: taxon_key(phylum).to_string(),
                class_key: taxon_key(class).to_string(),
                order_key: taxon_key(order).to_string(),
                family_key: taxon_key(family).to_string(),
                genus_key: taxon_key(&genus).to_string(),
                genus,
                class,
                verbatim_index: i64::from(sid) - 1,
                gbif_species_url: format!("https://www.gbif.org/species/{species_key}"),
                image_url: format!(
                    "https://inaturalist-open-data.s3.amazonaws.com/photos/{photo}/original.jpg"
                ),
                license,
                attribution: format!("(c) {recorder}, {rights}"),
                photo_url: format!(
                    "https://inaturalist-open-data.s3.amazonaws.com/photos/{photo}/medium.jpg"
                ),
            });

            let home = &by_theme[theme];
            let n_home = rng.range(1, 2);
            let mut mine: Vec<usize> = rng
                .distinct(home.len(), n_home)
                .into_iter()
                .map(|i| home[i])
                .collect();
            let n_other = rng.range(1, 2);
            while mine.len() < n_home + n_other {
                let p = rng.below(PRIORITIES);
                if !mine.contains(&p) {
                    mine.push(p);
                }
            }
            prios.push(mine);
        }
        prios
    }

    fn build_geoms(&mut self) {
        let k = self.k;
        let mut rng = SplitMix64::stream(k, purpose::GEOM);
        for j in 0..GEOMS {
            // Every area gets at least one polygon; the rest are spread at random.
            let a = if j < AREAS { j } else { rng.below(AREAS) };
            let area = &self.areas[a];
            self.geoms.push(GeomSpec {
                id: id(k, GEOMS, j),
                area_id: area.id,
                lat: area.lat + rng.uniform(-0.02, 0.02),
                lon: area.lon + rng.uniform(-0.03, 0.03),
                radius: rng.uniform(0.0015, 0.0075),
                vertices: rng.range(VERTICES_MIN, VERTICES_MAX),
                shape_seed: rng.next_u64(),
            });
        }
    }

    /// MAP: each measure is linked, round robin, to areas under its own priorities.
    fn build_map(&mut self, measure_prios: &[Vec<usize>]) {
        let mut rng = SplitMix64::stream(self.k, purpose::MAP);
        // Each measure needs ~18 distinct links out of >= 68 candidates: this always terminates.
        self.map = distinct_round_robin(MAP_LINKS, MEASURES, |m| {
            (m, rng.below(AREAS), *rng.pick(&measure_prios[m]))
        });
    }

    /// MAPG: exactly MAPG_ROWS funding rows over the MAP links, spread so that `apmg_slim_vw`
    /// lands near APMG_TARGET.
    ///
    /// The view has `types × stakeholders × max(1, grants)` rows per link. A link's first grant
    /// adds no view row; each further grant adds `types × stakeholders`. So the number of
    /// "extra" grants is chosen from the gap between the target and the unfunded baseline.
    fn build_mapg(&mut self) {
        let mut rng = SplitMix64::stream(self.k, purpose::MAPG);
        let mut per_measure = vec![(0usize, 0usize); MEASURES];
        let base = MEASURES * self.k as usize;
        for (m, _) in &self.measure_types {
            per_measure[*m as usize - 1 - base].0 += 1;
        }
        for (m, _) in &self.measure_stakeholders {
            per_measure[*m as usize - 1 - base].1 += 1;
        }
        let weight = |m: usize| per_measure[m].0.max(1) * per_measure[m].1.max(1);
        let baseline: usize = self.map.iter().map(|(m, _, _)| weight(*m)).sum();
        let mean = baseline as f64 / self.map.len() as f64;
        let gap = APMG_TARGET.saturating_sub(baseline) as f64;
        let mut extras = ((gap / mean).round() as usize).min(MAPG_ROWS - 1);
        let mut firsts = MAPG_ROWS - extras;
        if firsts > self.map.len() {
            firsts = self.map.len();
            extras = MAPG_ROWS - firsts;
        }

        // Each measure is eligible for a few grants; a link is funded from its measure's list.
        let eligible: Vec<Vec<usize>> = (0..MEASURES)
            .map(|_| {
                let n = rng.range(3, 6);
                rng.distinct(GRANTS, n)
            })
            .collect();
        let mut order: Vec<usize> = (0..self.map.len()).collect();
        rng.shuffle(&mut order);
        let funded = &order[..firsts];
        let mut seen = HashSet::with_capacity(MAPG_ROWS);
        for &l in funded {
            let g = *rng.pick(&eligible[self.map[l].0]);
            seen.insert((l, g));
            self.mapg.push((l, g));
        }
        // Random extras; a bounded number of tries, then a deterministic sweep, so this always
        // terminates even if links saturate.
        let mut tries = 0usize;
        let mut placed = 0usize;
        while placed < extras && tries < extras * 50 {
            tries += 1;
            let l = *rng.pick(funded);
            let g = *rng.pick(&eligible[self.map[l].0]);
            if seen.insert((l, g)) {
                self.mapg.push((l, g));
                placed += 1;
            }
        }
        'sweep: for &l in &order {
            for g in 0..GRANTS {
                if placed >= extras {
                    break 'sweep;
                }
                if seen.insert((l, g)) {
                    self.mapg.push((l, g));
                    placed += 1;
                }
            }
        }
    }

    /// SAP: each species, round robin, in areas under its priorities.
    fn build_sap(&mut self, species_prios: &[Vec<usize>]) {
        let mut rng = SplitMix64::stream(self.k, purpose::SAP);
        // Each species needs ~50 distinct rows out of >= 2 × 68 candidates: always terminates.
        self.sap = distinct_round_robin(SAP_ROWS, SPECIES, |s| {
            (s, rng.below(AREAS), *rng.pick(&species_prios[s]))
        });
    }

    /// HCA and HMA: each habitat, round robin, in areas (~25 distinct out of 68 per habitat:
    /// always terminates).
    fn build_habitat_areas(&mut self) {
        let mut rng = SplitMix64::stream(self.k, purpose::HABITAT_AREA);
        self.hca = distinct_round_robin(HCA_ROWS, HABITATS, |h| (h, rng.below(AREAS)));
        self.hma = distinct_round_robin(HMA_ROWS, HABITATS, |h| (h, rng.below(AREAS)));
    }

    /// Writes the region's rows, table by table: entities, then what areas own, then bridges.
    fn write(
        &self,
        conn: &Connection,
        counts: &mut Counts,
        next_funding_id: &mut i32,
    ) -> Result<(), RefDataError> {
        self.write_entities(conn, counts)?;
        self.write_area_details(conn, counts, next_funding_id)?;
        self.write_bridges(conn, counts)
    }

    /// The six entity tables.
    fn write_entities(&self, conn: &Connection, counts: &mut Counts) -> Result<(), RefDataError> {
        append(conn, counts, "measure", |app| {
            append_each(app, &self.measures, MeasureRow::append_to)
        })?;
        append(conn, counts, "area", |app| {
            append_each(app, &self.areas, AreaRow::append_to)
        })?;
        append(conn, counts, "priority", |app| {
            append_each(app, &self.priorities, |(id, text, simple, theme), app| {
                app.append_row(params![id, text, simple, theme])
            })
        })?;
        append(conn, counts, "species", |app| {
            append_each(app, &self.species, SpeciesRow::append_to)
        })?;
        append(conn, counts, "grant_table", |app| {
            append_each(app, &self.grants, |g, app| {
                app.append_row(params![g.id, g.name, g.scheme, g.url, g.summary])
            })
        })?;
        append(conn, counts, "habitat", |app| {
            append_each(app, &self.habitats, |(id, name), app| {
                app.append_row(params![id, name])
            })
        })
    }

    /// Local funding schemes (ids dense across regions) and polygons of the areas.
    fn write_area_details(
        &self,
        conn: &Connection,
        counts: &mut Counts,
        next_funding_id: &mut i32,
    ) -> Result<(), RefDataError> {
        append(conn, counts, "area_funding_schemes", |app| {
            append_each(app, &self.funding, |(a, text), app| {
                let area = &self.areas[*a];
                app.append_row(params![*next_funding_id, area.id, area.name, text])?;
                *next_funding_id += 1;
                Ok(())
            })
        })?;
        append(conn, counts, "area_geom", |app| {
            let mut wkb = Vec::new();
            append_each(app, &self.geoms, |g, app| {
                let mut shape = SplitMix64(g.shape_seed);
                polygon_wkb(g.lat, g.lon, g.radius, g.vertices, &mut shape, &mut wkb);
                let point = format!("{:.6}, {:.6}", g.lat, g.lon);
                app.append_row(params![g.id, point, wkb.as_slice(), g.area_id])
            })
        })
    }

    /// The bridge tables: the measures' sets, then the links.
    fn write_bridges(&self, conn: &Connection, counts: &mut Counts) -> Result<(), RefDataError> {
        for (table, rows) in [
            ("measure_has_type", &self.measure_types),
            ("measure_has_stakeholder", &self.measure_stakeholders),
            ("measure_has_benefits", &self.measure_benefits),
            ("measure_has_species", &self.measure_species),
        ] {
            append(conn, counts, table, |app| {
                append_each(app, rows, |(a, b), app| app.append_row(params![a, b]))
            })?;
        }
        let (m_ids, a_ids, p_ids) = (
            |m: usize| self.measures[m].id,
            |a: usize| self.areas[a].id,
            |p: usize| self.priorities[p].0,
        );
        append(conn, counts, "measure_area_priority", |app| {
            append_each(app, &self.map, |(m, a, p), app| {
                app.append_row(params![m_ids(*m), a_ids(*a), p_ids(*p)])
            })
        })?;
        append(conn, counts, "measure_area_priority_grant", |app| {
            append_each(app, &self.mapg, |(l, g), app| {
                let (m, a, p) = self.map[*l];
                app.append_row(params![m_ids(m), a_ids(a), p_ids(p), self.grants[*g].id])
            })
        })?;
        append(conn, counts, "species_area_priority", |app| {
            append_each(app, &self.sap, |(s, a, p), app| {
                app.append_row(params![self.species[*s].id, a_ids(*a), p_ids(*p)])
            })
        })?;
        for (table, rows) in [
            ("habitat_creation_area", &self.hca),
            ("habitat_management_area", &self.hma),
        ] {
            append(conn, counts, table, |app| {
                append_each(app, rows, |(h, a), app| {
                    app.append_row(params![self.habitats[*h].0, a_ids(*a)])
                })
            })?;
        }
        Ok(())
    }
}

/// Appends one row per item with `row`; returns how many.
fn append_each<T>(
    app: &mut Appender<'_>,
    items: &[T],
    mut row: impl FnMut(&T, &mut Appender<'_>) -> duckdb::Result<()>,
) -> duckdb::Result<u64> {
    for item in items {
        row(item, app)?;
    }
    Ok(items.len() as u64)
}

impl MeasureRow {
    fn append_to(&self, app: &mut Appender<'_>) -> duckdb::Result<()> {
        app.append_row(params![
            self.id,
            self.measure,
            self.other_priorities_delivered,
            self.core_supplementary,
            self.mapped_unmapped,
            self.relevant_map_layer,
            self.link_to_further_guidance,
            self.concise_measure,
        ])
    }
}

impl AreaRow {
    fn append_to(&self, app: &mut Appender<'_>) -> duckdb::Result<()> {
        app.append_row(params![
            self.id,
            self.name,
            self.description,
            self.link,
            self.bng_hab_mgt,
            self.bng_hab_creation,
        ])
    }
}

impl SpeciesRow {
    /// The species columns in table order; several repeat a value, as GBIF's export does.
    fn append_to(&self, app: &mut Appender<'_>) -> duckdb::Result<()> {
        app.append_row(params![
            self.id,
            self.taxa,
            self.common_name,
            self.assemblage,
            self.species_link,
            self.scientific_name, // linnaean_name
            self.usage_key,
            self.scientific_name,
            "ACCEPTED",
            self.kingdom,
            self.phylum,
            self.order,
            self.family,
            self.genus,
            self.scientific_name, // species (GBIF gives the binomial)
            self.kingdom_key,
            self.phylum_key,
            self.class_key,
            self.order_key,
            self.family_key,
            self.genus_key,
            self.usage_key, // species_key
            "false",
            self.class,
            self.usage_key, // accepted_usage_key
            self.common_name,
            self.verbatim_index,
            self.gbif_species_url,
            self.image_url,
            self.license,
            self.attribution,
            self.photo_url,
        ])
    }
}

/// Writes a little-endian WKB Polygon (one closed ring) around (lat, lon) into `out`.
///
/// The ring is star-shaped around the centre (radius > 0 at monotonically increasing angles),
/// so it never self-intersects, and it runs counter-clockwise as OGC expects of outer rings.
fn polygon_wkb(
    lat: f64,
    lon: f64,
    radius: f64,
    vertices: usize,
    rng: &mut SplitMix64,
    out: &mut Vec<u8>,
) {
    use std::f64::consts::TAU;
    // A degree of longitude is ~0.62 of a degree of latitude at 51.4°N; stretching x keeps the
    // shapes round on a map.
    const LON_STRETCH: f64 = 1.6;
    out.clear();
    out.reserve(13 + 16 * (vertices + 1));
    out.push(1); // little-endian
    out.extend_from_slice(&3u32.to_le_bytes()); // Polygon
    out.extend_from_slice(&1u32.to_le_bytes()); // one ring
    out.extend_from_slice(&((vertices + 1) as u32).to_le_bytes());
    let (phase1, phase2) = (rng.unit() * TAU, rng.unit() * TAU);
    let (amp1, amp2) = (rng.uniform(0.1, 0.3), rng.uniform(0.05, 0.15));
    let mut first = (0.0f64, 0.0f64);
    for j in 0..vertices {
        let theta = TAU * j as f64 / vertices as f64;
        let (s, c) = sin_cos(theta);
        // Wobble stays within 1 ± 0.47, so the radius is always positive.
        let wobble = 1.0
            + amp1 * sin_cos(2.0 * theta + phase1).0
            + amp2 * sin_cos(5.0 * theta + phase2).0
            + 0.04 * (rng.unit() - 0.5);
        let x = lon + radius * wobble * c * LON_STRETCH;
        let y = lat + radius * wobble * s;
        if j == 0 {
            first = (x, y);
        }
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(&y.to_le_bytes());
    }
    out.extend_from_slice(&first.0.to_le_bytes());
    out.extend_from_slice(&first.1.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Content: the data files in src/refdata/ (tab-separated, a header line first)

/// `(name, text)` of the files `src/refdata/<name>`, compiled in.
macro_rules! data_files {
    ($($name:literal,)*) => {
        [$(($name, include_str!(concat!("refdata/", $name))),)*]
    };
}

/// Every content file, by name, as compiled in. The integration tests key their cached reference
/// database on these too.
pub const DATA_FILES: [(&str, &str); 16] = data_files![
    "themes.tsv",
    "measure_types.tsv",
    "stakeholders.tsv",
    "benefits.tsv",
    "priorities.tsv",
    "measures.tsv",
    "measure_qualifiers.tsv",
    "habitats.tsv",
    "places.tsv",
    "area_kinds.tsv",
    "local_funding.tsv",
    "grant_schemes.tsv",
    "grants.tsv",
    "assemblages.tsv",
    "species.tsv",
    "recorders.tsv",
];

/// The theme of priorities, measures and species that belong to every habitat.
const ALL_HABITATS_THEME: &str = "All habitats";

/// (common name, scientific name, assemblage index, class, order, family, home theme index).
type SpeciesEntry = (
    &'static str,
    &'static str,
    usize,
    &'static str,
    &'static str,
    &'static str,
    usize,
);

/// The content tables, read from [`DATA_FILES`]; references between files (a priority's theme,
/// an area kind's habitats, …) are by name in the files and by index here.
struct Content {
    themes: Vec<&'static str>,
    /// Index of [`ALL_HABITATS_THEME`] in `themes`.
    all_habitats: usize,
    measure_types: Vec<&'static str>,
    stakeholders: Vec<&'static str>,
    benefits: Vec<&'static str>,
    /// (biodiversity priority, simplified priority, theme index).
    priorities: Vec<(&'static str, &'static str, usize)>,
    /// (measure, concise measure, theme index). Combined with `qualifiers` to give the measures.
    measure_bases: Vec<(&'static str, &'static str, usize)>,
    qualifiers: Vec<&'static str>,
    habitats: Vec<&'static str>,
    places: Vec<&'static str>,
    /// (name, description opening, habitat indices typical of the kind).
    area_kinds: Vec<(&'static str, &'static str, Vec<usize>)>,
    /// (name, what it offers) of local funding, listed per area in `area_funding_schemes`.
    local_funding: Vec<(&'static str, &'static str)>,
    /// (grant scheme, blurb opening the summaries of its grants).
    scheme_blurbs: Vec<(&'static str, &'static str)>,
    /// (grant_id, grant_name, grant_scheme).
    grants: Vec<(&'static str, &'static str, &'static str)>,
    /// (assemblage, taxa, kingdom, phylum).
    assemblages: Vec<(&'static str, &'static str, &'static str, &'static str)>,
    species: Vec<SpeciesEntry>,
    /// Photo credit handles for species images (synthetic).
    recorders: Vec<&'static str>,
}

/// The content, read once.
fn content() -> Result<&'static Content, RefDataError> {
    static CONTENT: std::sync::LazyLock<Result<Content, String>> =
        std::sync::LazyLock::new(Content::load);
    CONTENT
        .as_ref()
        .map_err(|e| RefDataError::Content(e.clone()))
}

/// The rows of data file `name`, each with exactly `N` fields.
fn rows<const N: usize>(name: &str) -> Result<Vec<[&'static str; N]>, String> {
    let text = DATA_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| format!("no data file {name}"))?;
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            <[&'static str; N]>::try_from(fields)
                .map_err(|f| format!("{name} line {}: {} fields, expected {N}", i + 1, f.len()))
        })
        .collect()
}

/// The only column of data file `name`.
fn column(name: &str) -> Result<Vec<&'static str>, String> {
    Ok(rows::<1>(name)?.into_iter().map(|[v]| v).collect())
}

/// Where `value` is in `list`: how one data file names a row of another.
fn index(list: &[&str], value: &str, what: &str) -> Result<usize, String> {
    list.iter()
        .position(|v| *v == value)
        .ok_or_else(|| format!("unknown {what} `{value}`"))
}

impl Content {
    fn load() -> Result<Content, String> {
        let themes = column("themes.tsv")?;
        let habitats = column("habitats.tsv")?;
        let theme = |t: &str| index(&themes, t, "theme");
        let assemblages: Vec<_> = rows::<4>("assemblages.tsv")?
            .into_iter()
            .map(|[a, t, k, p]| (a, t, k, p))
            .collect();
        let assemblage_names: Vec<_> = assemblages.iter().map(|a| a.0).collect();
        let c = Content {
            all_habitats: theme(ALL_HABITATS_THEME)?,
            measure_types: column("measure_types.tsv")?,
            stakeholders: column("stakeholders.tsv")?,
            benefits: column("benefits.tsv")?,
            priorities: rows::<3>("priorities.tsv")?
                .into_iter()
                .map(|[text, simple, t]| Ok((text, simple, theme(t)?)))
                .collect::<Result<_, String>>()?,
            measure_bases: rows::<3>("measures.tsv")?
                .into_iter()
                .map(|[text, concise, t]| Ok((text, concise, theme(t)?)))
                .collect::<Result<_, String>>()?,
            qualifiers: column("measure_qualifiers.tsv")?,
            places: column("places.tsv")?,
            area_kinds: rows::<3>("area_kinds.tsv")?
                .into_iter()
                .map(|[kind, opening, habs]| {
                    let habs = habs
                        .split("; ")
                        .map(|h| index(&habitats, h, "habitat"))
                        .collect::<Result<_, String>>()?;
                    Ok((kind, opening, habs))
                })
                .collect::<Result<_, String>>()?,
            local_funding: rows::<2>("local_funding.tsv")?
                .into_iter()
                .map(|[name, offer]| (name, offer))
                .collect(),
            scheme_blurbs: rows::<2>("grant_schemes.tsv")?
                .into_iter()
                .map(|[scheme, blurb]| (scheme, blurb))
                .collect(),
            grants: rows::<3>("grants.tsv")?
                .into_iter()
                .map(|[id, name, scheme]| (id, name, scheme))
                .collect(),
            species: rows::<7>("species.tsv")?
                .into_iter()
                .map(|[common, scientific, asm, class, order, family, t]| {
                    let asm = index(&assemblage_names, asm, "assemblage")?;
                    Ok((common, scientific, asm, class, order, family, theme(t)?))
                })
                .collect::<Result<_, String>>()?,
            recorders: column("recorders.tsv")?,
            assemblages,
            habitats,
            themes,
        };
        c.check_volumes()?;
        Ok(c)
    }

    /// The files must give exactly the per-region volumes the generator is sized for.
    fn check_volumes(&self) -> Result<(), String> {
        for (what, got, want) in [
            ("priorities", self.priorities.len(), PRIORITIES),
            (
                "measures × qualifiers",
                self.measure_bases.len() * self.qualifiers.len(),
                MEASURES,
            ),
            ("habitats", self.habitats.len(), HABITATS),
            (
                "places × area kinds",
                self.places.len() * self.area_kinds.len(),
                AREAS,
            ),
            ("grants", self.grants.len(), GRANTS),
            ("species", self.species.len(), SPECIES),
        ] {
            if got != want {
                return Err(format!("the data files give {got} {what}, expected {want}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::storage::schema::migrate(&conn).unwrap();
        conn
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn rows(conn: &Connection, table: &str) -> i64 {
        count(conn, &format!("SELECT count(*) FROM {table}"))
    }

    const EXACT_AT_1: [(&str, i64); 15] = [
        ("measure_type", 11),
        ("stakeholder", 5),
        ("benefits", 8),
        ("measure", 168),
        ("grant_table", 168),
        ("area", 68),
        ("species", 51),
        ("priority", 33),
        ("habitat", 33),
        ("measure_area_priority", 2_936),
        ("measure_area_priority_grant", 3_271),
        ("species_area_priority", 2_505),
        ("habitat_creation_area", 681),
        ("habitat_management_area", 817),
        ("area_geom", 694),
    ];

    #[test]
    fn volumes_at_scale_1() {
        let conn = fresh();
        let stats = generate(&conn, 1).unwrap();
        for (table, n) in EXACT_AT_1 {
            assert_eq!(rows(&conn, table), n, "{table}");
        }
        for (table, lo, hi) in [
            ("area_funding_schemes", 68, 204),
            ("measure_has_type", 168, 504),
            ("measure_has_stakeholder", 168, 504),
            ("measure_has_benefits", 168, 504),
            ("measure_has_species", 150, 600),
        ] {
            let n = rows(&conn, table);
            assert!((lo..=hi).contains(&n), "{table}: {n} not in {lo}..={hi}");
        }
        for (table, n) in &stats.tables {
            assert_eq!(rows(&conn, table), *n as i64, "stats for {table}");
        }
        let filled: Vec<&str> = stats.tables.iter().map(|(t, _)| t.as_str()).collect();
        let mut every: Vec<&str> = USER_TABLES.iter().map(|t| t.name).collect();
        let mut sorted = filled.clone();
        sorted.sort();
        every.sort();
        assert_eq!(sorted, every, "the generator fills every user table once");
        let view = rows(&conn, "apmg_slim_vw");
        assert!(
            (5_875..=7_181).contains(&view),
            "apmg_slim_vw has {view} rows, want 6,528 ± 10%"
        );
        assert_eq!(
            count(&conn, "SELECT count(DISTINCT theme) FROM priority"),
            6
        );
    }

    fn fingerprint(conn: &Connection) -> Vec<(String, i64, Option<String>)> {
        USER_TABLES
            .iter()
            .map(|t| t.name)
            .map(|t| {
                conn.query_row(
                    &format!("SELECT count(*), CAST(sum(hash(t)) AS VARCHAR) FROM {t} AS t"),
                    [],
                    |r| Ok((t.to_string(), r.get(0)?, r.get(1)?)),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn deterministic() {
        let (a, b) = (fresh(), fresh());
        let sa = generate(&a, 1).unwrap();
        let sb = generate(&b, 1).unwrap();
        assert_eq!(sa, sb);
        let fa = fingerprint(&a);
        assert_eq!(fa, fingerprint(&b));
        assert!(fa.iter().all(|(_, _, h)| h.is_some()));
    }

    /// BLAKE3 of every generated row at scale 1, read back in key order. Unlike DuckDB's `hash()`
    /// it does not depend on the engine version, so it pins the dataset itself: a change here
    /// means every machine and every earlier benchmark now sees different data. If the change is
    /// intended, update the constant.
    const GOLDEN_SCALE_1: &str = "2acaa4db54a40c3fa513ac8e6ac70649bb04d71657a03346e850de48b51d3f64";

    /// Tables in `stats` (fill) order, the order the golden digest was taken in.
    fn content_digest(conn: &Connection, stats: &RefDataStats) -> String {
        let mut hasher = blake3::Hasher::new();
        for (table, _) in &stats.tables {
            hasher.update(table.as_bytes());
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY ALL"))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let n = row.as_ref().column_count();
                for i in 0..n {
                    let v: duckdb::types::Value = row.get(i).unwrap();
                    match v {
                        duckdb::types::Value::Blob(b) => hasher.update(&b),
                        other => hasher.update(format!("{other:?}").as_bytes()),
                    };
                    hasher.update(b"\x1f");
                }
                hasher.update(b"\x1e");
            }
        }
        hasher.finalize().to_hex().to_string()
    }

    #[test]
    fn golden_content_at_scale_1() {
        let conn = fresh();
        let stats = generate(&conn, 1).unwrap();
        assert_eq!(content_digest(&conn, &stats), GOLDEN_SCALE_1);
    }

    fn assert_no_orphans(conn: &Connection) {
        for o in crate::storage::inspect::orphan_counts(conn).unwrap() {
            assert_eq!(o.orphans, 0, "orphans: {}", o.name());
        }
    }

    #[test]
    fn no_orphans_and_dense_ids() {
        let conn = fresh();
        generate(&conn, 2).unwrap();
        assert_no_orphans(&conn);
        // Every table with one integer id (grant ids are codes).
        for t in USER_TABLES
            .iter()
            .filter(|t| t.key.len() == 1 && t.name != "grant_table")
        {
            let (table, key) = (t.name, t.key[0]);
            let (min, max, n): (i64, i64, i64) = conn
                .query_row(
                    &format!("SELECT min({key}), max({key}), count(*) FROM {table}"),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!((min, max), (1, n), "{table} ids not dense");
        }
        // Every area has at least one polygon.
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM area a WHERE NOT EXISTS \
                 (SELECT 1 FROM area_geom g WHERE g.area_id = a.area_id)"
            ),
            0
        );
    }

    #[test]
    fn values_pass_validation_rules() {
        let conn = fresh();
        generate(&conn, 2).unwrap();
        let bad = [
            "SELECT count(*) FROM measure WHERE trim(measure) = '' \
             OR core_supplementary NOT IN ('Core (BNG)', 'Supplementary') \
             OR (mapped_unmapped IS NOT NULL AND mapped_unmapped NOT IN ('Mapped', 'Unmapped')) \
             OR NOT regexp_full_match(link_to_further_guidance, 'https://[a-z0-9.-]+/[^ ]*') \
             OR length(concise_measure) >= length(measure)",
            "SELECT count(*) FROM area WHERE trim(area_name) = '' OR trim(area_description) = '' \
             OR NOT regexp_full_match(area_link, 'https://[a-z0-9.-]+/[^ ]*')",
            "SELECT count(*) FROM priority WHERE trim(biodiversity_priority) = '' \
             OR simplified_biodiversity_priority IS NULL OR theme NOT IN \
             ('Grassland and farmland', 'Heathland and moorland', 'Marine', \
              'Wetlands, rivers and floodplains', 'Woodland', 'All habitats')",
            "SELECT count(*) FROM species WHERE linnaean_name IS DISTINCT FROM scientific_name \
             OR assemblage || '|' || taxa NOT IN ('Birds|Bird', 'Butterflies|Butterfly', \
               'Fish|Fish', 'Mammals|Mammal', 'Moths|Moth', 'Plants|Plant', \
               'Reptiles and amphibians|Reptile/Amphibian') \
             OR kingdom IS NULL OR phylum IS NULL OR \"class\" IS NULL OR \"order\" IS NULL \
             OR \"family\" IS NULL OR genus IS NULL OR species_key IS NULL \
             OR NOT starts_with(gbif_species_url, 'https://') \
             OR NOT starts_with(species_link, 'https://') \
             OR NOT starts_with(photo_url, 'https://')",
            "SELECT count(*) FROM grant_table WHERE trim(grant_id) = '' OR trim(grant_name) = '' \
             OR trim(grant_scheme) = '' OR NOT regexp_full_match(url, 'https://[a-z0-9.-]+/[^ ]*')",
            "SELECT count(*) FROM habitat WHERE trim(habitat) = ''",
        ];
        for sql in bad {
            assert_eq!(count(&conn, sql), 0, "{sql}");
        }
        // No stray whitespace and no empty optional text anywhere.
        let cols: Vec<(String, String)> = {
            let mut stmt = conn
                .prepare(
                    "SELECT table_name, column_name FROM duckdb_columns() \
                     WHERE data_type = 'VARCHAR' AND NOT internal \
                     AND table_name NOT LIKE 'lnrs_%'",
                )
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert!(cols.len() > 40);
        for (t, c) in cols {
            let sql = format!(
                "SELECT count(*) FROM \"{t}\" WHERE \"{c}\" <> trim(\"{c}\") OR \"{c}\" = ''"
            );
            assert_eq!(count(&conn, &sql), 0, "{t}.{c}");
        }
    }

    /// Parses a WKB polygon, checking structure; returns its ring.
    fn parse_polygon(wkb: &[u8]) -> Vec<(f64, f64)> {
        let u32_at = |i: usize| u32::from_le_bytes(wkb[i..i + 4].try_into().unwrap());
        let f64_at = |i: usize| f64::from_le_bytes(wkb[i..i + 8].try_into().unwrap());
        assert_eq!(wkb[0], 1, "little-endian");
        assert_eq!(u32_at(1), 3, "Polygon");
        assert_eq!(u32_at(5), 1, "one ring");
        let n = u32_at(9) as usize;
        assert_eq!(wkb.len(), 13 + 16 * n);
        (0..n)
            .map(|i| (f64_at(13 + 16 * i), f64_at(21 + 16 * i)))
            .collect()
    }

    #[test]
    fn polygons_are_valid_wkb_inside_england() {
        let conn = fresh();
        generate(&conn, 1).unwrap();
        let mut stmt = conn
            .prepare("SELECT geo_point_2d, geo_shape FROM area_geom ORDER BY geom_id")
            .unwrap();
        let shapes: Vec<(String, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(shapes.len(), GEOMS);
        for (point, wkb) in shapes {
            let (lat, lon) = point.split_once(", ").unwrap();
            let (lat, lon): (f64, f64) = (lat.parse().unwrap(), lon.parse().unwrap());
            let ring = parse_polygon(&wkb);
            assert!(ring.len() > VERTICES_MIN);
            assert_eq!(ring.first(), ring.last(), "ring closed");
            // Inland West of England: well inside England, clear of the Severn and Wales.
            for &(x, y) in ring.iter().chain(std::iter::once(&(lon, lat))) {
                assert!((51.25..=51.55).contains(&y) && (-2.72..=-2.15).contains(&x));
            }
            // Counter-clockwise (positive shoelace area), as OGC expects of an outer ring.
            let area2: f64 = ring
                .windows(2)
                .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
                .sum();
            assert!(area2 > 0.0);
        }
    }

    #[test]
    fn sin_cos_matches_std_closely() {
        for i in -2000..2000 {
            let x = i as f64 * 0.01;
            let (s, c) = sin_cos(x);
            assert!(
                (s - x.sin()).abs() < 1e-12 && (c - x.cos()).abs() < 1e-12,
                "{x}"
            );
        }
    }

    #[test]
    fn file_size_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.duckdb");
        let stats = write_to_path(&path, 1).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let mb = size as f64 / 1e6;
        assert!((30.0..=40.0).contains(&mb), "file is {mb:.1} MB");
        // Only the database itself: no WAL, no temporary build file.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ref.duckdb"]);
        let conn = Connection::open(&path).unwrap();
        for (table, n) in &stats.tables {
            assert_eq!(rows(&conn, table), *n as i64, "{table}");
        }
        assert_no_orphans(&conn);
    }

    #[test]
    fn refuses_existing_file_and_bad_scale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.duckdb");
        std::fs::write(&path, b"not mine").unwrap();
        assert!(matches!(
            write_to_path(&path, 1),
            Err(RefDataError::AlreadyExists(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not mine");

        let fresh_path = dir.path().join("new.duckdb");
        let wal = wal_files(&fresh_path)[0].clone();
        std::fs::write(&wal, b"stale").unwrap();
        assert!(matches!(
            write_to_path(&fresh_path, 1),
            Err(RefDataError::AlreadyExists(_))
        ));
        assert!(!fresh_path.exists());

        for scale in [0, MAX_SCALE + 1] {
            assert!(matches!(
                write_to_path(&dir.path().join("s.duckdb"), scale),
                Err(RefDataError::InvalidScale { .. })
            ));
            assert!(matches!(
                generate(&fresh(), scale),
                Err(RefDataError::InvalidScale { .. })
            ));
        }
    }

    #[test]
    fn refuses_non_empty_database_without_writing() {
        let conn = fresh();
        conn.execute_batch("INSERT INTO habitat VALUES (1, 'Ponds')")
            .unwrap();
        match generate(&conn, 1) {
            Err(RefDataError::NotEmpty { table, rows }) => {
                assert_eq!((table.as_str(), rows), ("habitat", 1));
            }
            other => panic!("expected NotEmpty, got {other:?}"),
        }
        assert_eq!(rows(&conn, "habitat"), 1);
        assert_eq!(rows(&conn, "measure"), 0);
        // The connection is usable again: the transaction was rolled back.
        assert!(conn.is_autocommit());
    }

    #[test]
    fn scale_2_doubles_main_counts() {
        let one = fresh();
        let two = fresh();
        generate(&one, 1).unwrap();
        let stats = generate(&two, 2).unwrap();
        for (table, n) in EXACT_AT_1 {
            let fixed = matches!(table, "measure_type" | "stakeholder" | "benefits");
            let want = if fixed { n } else { 2 * n };
            assert_eq!(rows(&two, table), want, "{table}");
            assert_eq!(stats.rows(table), Some(want as u64), "{table}");
        }
        // Names and grant codes stay unique across regions.
        for (table, col) in [
            ("species", "common_name"),
            ("species", "scientific_name"),
            ("area", "area_name"),
            ("habitat", "habitat"),
            ("measure", "measure"),
            ("priority", "biodiversity_priority"),
        ] {
            assert_eq!(
                count(&two, &format!("SELECT count(DISTINCT {col}) FROM {table}")),
                rows(&two, table),
                "{table}.{col}"
            );
        }
        let view = rows(&two, "apmg_slim_vw");
        assert!((11_750..=14_362).contains(&view), "apmg_slim_vw {view}");
    }
}
