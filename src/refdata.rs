//! The deterministic reference LNRS dataset.
//!
//! Tests, benchmarks and demo deployments need a database shaped like the live one (same tables,
//! volumes, bridge fan-out, `apmg_slim_vw` size and a ~33 MB file, mostly polygons) without
//! copying the live data. This module owns that synthetic dataset: its content lists, the
//! generator and the checks that it stays realistic.
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
    let mut counts = Counts::new();
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
    for p in std::iter::once(tmp.clone()).chain(wal_files(&tmp)) {
        let _ = std::fs::remove_file(p);
    }
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

/// Gives the finished file its final name without ever replacing an existing file: a hard link
/// fails atomically if `path` exists, where an exists() check followed by a rename would race
/// with another writer.
fn publish(tmp: &Path, path: &Path) -> Result<(), RefDataError> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RefDataError::AlreadyExists(path.to_path_buf()));
        }
        // File systems without hard links: fall back to check-then-rename.
        Err(_) if !path.exists() => {
            std::fs::rename(tmp, path).map_err(|source| RefDataError::Io {
                action: "renaming the generated database to",
                path: path.to_path_buf(),
                source,
            })?;
        }
        Err(_) => return Err(RefDataError::AlreadyExists(path.to_path_buf())),
    }
    // Make the new name durable; DuckDB's checkpoint already synced the contents. Best effort, as
    // not every platform can open a directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn fill_new_file(path: &Path, scale: u32) -> Result<RefDataStats, RefDataError> {
    let conn = Connection::open(path)?;
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

fn wal_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with(".wal"), with(".wal.checkpoint"), with(".wal.recovery")]
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

/// Tables in fill order; stats report them in this order.
const TABLES: [&str; 20] = [
    "measure_type",
    "stakeholder",
    "benefits",
    "measure",
    "area",
    "priority",
    "species",
    "grant_table",
    "habitat",
    "area_funding_schemes",
    "area_geom",
    "measure_has_type",
    "measure_has_stakeholder",
    "measure_has_benefits",
    "measure_has_species",
    "measure_area_priority",
    "measure_area_priority_grant",
    "species_area_priority",
    "habitat_creation_area",
    "habitat_management_area",
];

struct Counts([u64; TABLES.len()]);

impl Counts {
    fn new() -> Self {
        Counts([0; TABLES.len()])
    }

    fn into_stats(self) -> RefDataStats {
        RefDataStats {
            tables: TABLES
                .iter()
                .zip(self.0)
                .map(|(t, n)| ((*t).to_string(), n))
                .collect(),
        }
    }
}

fn ensure_empty(conn: &Connection) -> Result<(), RefDataError> {
    for table in TABLES {
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
    if let Some(i) = TABLES.iter().position(|t| *t == table) {
        counts.0[i] += n;
    }
    Ok(())
}

fn write_all(conn: &Connection, scale: u32, counts: &mut Counts) -> Result<(), RefDataError> {
    append(conn, counts, "measure_type", |app| {
        append_lookup(app, &MEASURE_TYPES)
    })?;
    append(conn, counts, "stakeholder", |app| {
        append_lookup(app, &STAKEHOLDERS)
    })?;
    append(conn, counts, "benefits", |app| {
        append_lookup(app, &BENEFITS)
    })?;
    // Regions are built and written one at a time so memory stays that of one region.
    let mut next_funding_id = 1i32;
    for k in 0..scale {
        let region = Region::build(k);
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

/// Ids of region `k` start after those of regions `0..k`.
fn id(k: u32, per_region: usize, index: usize) -> i32 {
    // MAX_SCALE × the largest per-region volume stays far below i32::MAX.
    (k as usize * per_region + index + 1) as i32
}

impl Region {
    fn build(k: u32) -> Region {
        let sfx = suffix(k);
        let mut r = Region {
            k,
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
            map: Vec::with_capacity(MAP_LINKS),
            mapg: Vec::with_capacity(MAPG_ROWS),
            sap: Vec::with_capacity(SAP_ROWS),
            hca: Vec::with_capacity(HCA_ROWS),
            hma: Vec::with_capacity(HMA_ROWS),
        };

        // Priorities, grouped by theme so measures and species can favour their own theme.
        let mut by_theme: Vec<Vec<usize>> = vec![Vec::new(); THEMES.len()];
        for (j, &(text, simple, theme)) in PRIORITY_LIST.iter().enumerate() {
            r.priorities.push((
                id(k, PRIORITIES, j),
                format!("{text}{sfx}"),
                simple,
                THEMES[theme],
            ));
            by_theme[theme].push(j);
        }

        for (j, name) in HABITAT_LIST.iter().enumerate() {
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
        for (code, name, scheme) in GRANT_LIST {
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
            let blurb = SCHEME_BLURBS
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
        let k = self.k;
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::MEASURE);
        let mut prios = Vec::with_capacity(MEASURES);
        for j in 0..MEASURES {
            let (text, concise, theme) = MEASURE_BASES[j % MEASURE_BASES.len()];
            let qualifier = QUALIFIERS[j / MEASURE_BASES.len()];
            let mid = id(k, MEASURES, j);

            let mut mine = vec![*rng.pick(&by_theme[theme])];
            if rng.chance(0.5) {
                let p = *rng.pick(&by_theme[theme]);
                if !mine.contains(&p) {
                    mine.push(p);
                }
            }
            if theme != ALL_HABITATS && rng.chance(0.4) {
                mine.push(*rng.pick(&by_theme[ALL_HABITATS]));
            }
            let others: Vec<&str> = rng
                .distinct(PRIORITIES, 2)
                .into_iter()
                .filter(|p| !mine.contains(p))
                .map(|p| PRIORITY_LIST[p].1)
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
            for t in rng.distinct(MEASURE_TYPES.len(), n) {
                self.measure_types.push((mid, t as i32 + 1));
            }
            let n = 1 + rng.weighted(&[80, 15, 5]);
            for s in rng.distinct(STAKEHOLDERS.len(), n) {
                self.measure_stakeholders.push((mid, s as i32 + 1));
            }
            let n = rng.range(1, 3);
            for b in rng.distinct(BENEFITS.len(), n) {
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
        let k = self.k;
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::AREA);
        // Inland West of England (Bristol, Bath, Chew Valley): clear of the Severn estuary and
        // Wales even after the polygon offsets added in build_geoms.
        let places: Vec<(f64, f64)> = PLACES
            .iter()
            .map(|_| (rng.uniform(51.31, 51.47), rng.uniform(-2.60, -2.27)))
            .collect();
        for j in 0..AREAS {
            let place = PLACES[j / AREA_KINDS.len()];
            let (kind, kind_desc, kind_habitats) = AREA_KINDS[j % AREA_KINDS.len()];
            let (plat, plon) = places[j / AREA_KINDS.len()];
            let aid = id(k, AREAS, j);
            let habs = rng.distinct(kind_habitats.len(), 3);
            let hab = |i: usize| HABITAT_LIST[kind_habitats[habs[i]]];
            let measures = rng.distinct(MEASURE_BASES.len(), 2);
            let hectares = 40 + 10 * rng.below(120);
            let description = format!(
                "{kind_desc} around {place}. The area covers about {hectares} hectares and includes \
                 {}, {} and {}. Recovery here focuses on {} and {}, building on existing nature \
                 reserves, farm agreements and community projects, and it links to neighbouring \
                 sites along hedgerows, streams and road verges.",
                in_sentence(hab(0)),
                in_sentence(hab(1)),
                in_sentence(hab(2)),
                in_sentence(MEASURE_BASES[measures[0]].1),
                in_sentence(MEASURE_BASES[measures[1]].1),
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
            for f in rng.distinct(LOCAL_FUNDING.len(), n) {
                let (name, blurb) = LOCAL_FUNDING[f];
                self.funding.push((a, format!("{name}: {blurb}")));
            }
        }
    }

    /// Builds species; returns each species' priorities (2 to 4, mostly of its home theme).
    fn build_species(&mut self, by_theme: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let k = self.k;
        let sfx = suffix(k);
        let mut rng = SplitMix64::stream(k, purpose::SPECIES);
        let mut prios = Vec::with_capacity(SPECIES);
        for (j, &(common, scientific, asm, class, order, family, theme)) in
            SPECIES_LIST.iter().enumerate()
        {
            let (assemblage, taxa, kingdom, phylum) = ASSEMBLAGES[asm];
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
            let recorder = *rng.pick(&RECORDERS);
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
        let mut seen = HashSet::with_capacity(MAP_LINKS);
        // Each measure needs ~18 distinct links out of >= 68 candidates: this always terminates.
        let mut i = 0usize;
        while self.map.len() < MAP_LINKS {
            let m = i % MEASURES;
            i += 1;
            let link = (m, rng.below(AREAS), *rng.pick(&measure_prios[m]));
            if seen.insert(link) {
                self.map.push(link);
            }
        }
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
        let mut seen = HashSet::with_capacity(SAP_ROWS);
        // Each species needs ~50 distinct rows out of >= 2 × 68 candidates: always terminates.
        let mut i = 0usize;
        while self.sap.len() < SAP_ROWS {
            let s = i % SPECIES;
            i += 1;
            let row = (s, rng.below(AREAS), *rng.pick(&species_prios[s]));
            if seen.insert(row) {
                self.sap.push(row);
            }
        }
    }

    fn build_habitat_areas(&mut self) {
        let mut rng = SplitMix64::stream(self.k, purpose::HABITAT_AREA);
        for (target, rows) in [(HCA_ROWS, &mut self.hca), (HMA_ROWS, &mut self.hma)] {
            let mut seen = HashSet::with_capacity(target);
            // ~25 distinct areas per habitat out of 68: always terminates.
            let mut i = 0usize;
            while rows.len() < target {
                let row = (i % HABITATS, rng.below(AREAS));
                i += 1;
                if seen.insert(row) {
                    rows.push(row);
                }
            }
        }
    }

    fn write(
        &self,
        conn: &Connection,
        counts: &mut Counts,
        next_funding_id: &mut i32,
    ) -> Result<(), RefDataError> {
        append(conn, counts, "measure", |app| {
            for m in &self.measures {
                app.append_row(params![
                    m.id,
                    m.measure,
                    m.other_priorities_delivered,
                    m.core_supplementary,
                    m.mapped_unmapped,
                    m.relevant_map_layer,
                    m.link_to_further_guidance,
                    m.concise_measure,
                ])?;
            }
            Ok(self.measures.len() as u64)
        })?;
        append(conn, counts, "area", |app| {
            for a in &self.areas {
                app.append_row(params![
                    a.id,
                    a.name,
                    a.description,
                    a.link,
                    a.bng_hab_mgt,
                    a.bng_hab_creation,
                ])?;
            }
            Ok(self.areas.len() as u64)
        })?;
        append(conn, counts, "priority", |app| {
            for (id, text, simple, theme) in &self.priorities {
                app.append_row(params![id, text, simple, theme])?;
            }
            Ok(self.priorities.len() as u64)
        })?;
        append(conn, counts, "species", |app| {
            for s in &self.species {
                app.append_row(params![
                    s.id,
                    s.taxa,
                    s.common_name,
                    s.assemblage,
                    s.species_link,
                    s.scientific_name, // linnaean_name
                    s.usage_key,
                    s.scientific_name,
                    "ACCEPTED",
                    s.kingdom,
                    s.phylum,
                    s.order,
                    s.family,
                    s.genus,
                    s.scientific_name, // species (GBIF gives the binomial)
                    s.kingdom_key,
                    s.phylum_key,
                    s.class_key,
                    s.order_key,
                    s.family_key,
                    s.genus_key,
                    s.usage_key, // species_key
                    "false",
                    s.class,
                    s.usage_key, // accepted_usage_key
                    s.common_name,
                    s.verbatim_index,
                    s.gbif_species_url,
                    s.image_url,
                    s.license,
                    s.attribution,
                    s.photo_url,
                ])?;
            }
            Ok(self.species.len() as u64)
        })?;
        append(conn, counts, "grant_table", |app| {
            for g in &self.grants {
                app.append_row(params![g.id, g.name, g.scheme, g.url, g.summary])?;
            }
            Ok(self.grants.len() as u64)
        })?;
        append(conn, counts, "habitat", |app| {
            for (id, name) in &self.habitats {
                app.append_row(params![id, name])?;
            }
            Ok(self.habitats.len() as u64)
        })?;
        append(conn, counts, "area_funding_schemes", |app| {
            for (a, text) in &self.funding {
                let area = &self.areas[*a];
                app.append_row(params![*next_funding_id, area.id, area.name, text])?;
                *next_funding_id += 1;
            }
            Ok(self.funding.len() as u64)
        })?;
        append(conn, counts, "area_geom", |app| {
            let mut wkb = Vec::new();
            for g in &self.geoms {
                let mut shape = SplitMix64(g.shape_seed);
                polygon_wkb(g.lat, g.lon, g.radius, g.vertices, &mut shape, &mut wkb);
                let point = format!("{:.6}, {:.6}", g.lat, g.lon);
                app.append_row(params![g.id, point, wkb.as_slice(), g.area_id])?;
            }
            Ok(self.geoms.len() as u64)
        })?;
        for (table, rows) in [
            ("measure_has_type", &self.measure_types),
            ("measure_has_stakeholder", &self.measure_stakeholders),
            ("measure_has_benefits", &self.measure_benefits),
            ("measure_has_species", &self.measure_species),
        ] {
            append(conn, counts, table, |app| {
                for (a, b) in rows {
                    app.append_row(params![a, b])?;
                }
                Ok(rows.len() as u64)
            })?;
        }
        let (m_ids, a_ids, p_ids) = (
            |m: usize| self.measures[m].id,
            |a: usize| self.areas[a].id,
            |p: usize| self.priorities[p].0,
        );
        append(conn, counts, "measure_area_priority", |app| {
            for (m, a, p) in &self.map {
                app.append_row(params![m_ids(*m), a_ids(*a), p_ids(*p)])?;
            }
            Ok(self.map.len() as u64)
        })?;
        append(conn, counts, "measure_area_priority_grant", |app| {
            for (l, g) in &self.mapg {
                let (m, a, p) = self.map[*l];
                app.append_row(params![m_ids(m), a_ids(a), p_ids(p), self.grants[*g].id])?;
            }
            Ok(self.mapg.len() as u64)
        })?;
        append(conn, counts, "species_area_priority", |app| {
            for (s, a, p) in &self.sap {
                app.append_row(params![self.species[*s].id, a_ids(*a), p_ids(*p)])?;
            }
            Ok(self.sap.len() as u64)
        })?;
        for (table, rows) in [
            ("habitat_creation_area", &self.hca),
            ("habitat_management_area", &self.hma),
        ] {
            append(conn, counts, table, |app| {
                for (h, a) in rows {
                    app.append_row(params![self.habitats[*h].0, a_ids(*a)])?;
                }
                Ok(rows.len() as u64)
            })?;
        }
        Ok(())
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
// Content

const THEMES: [&str; 6] = [
    "Grassland and farmland",
    "Heathland and moorland",
    "Marine",
    "Wetlands, rivers and floodplains",
    "Woodland",
    "All habitats",
];
const ALL_HABITATS: usize = 5;

const MEASURE_TYPES: [&str; 11] = [
    "Create",
    "Restore",
    "Manage",
    "Enhance",
    "Connect",
    "Protect",
    "Species recovery",
    "Reduce pressures",
    "Natural flood management",
    "Access and engagement",
    "Monitoring and survey",
];

const STAKEHOLDERS: [&str; 5] = [
    "Farmers and land managers",
    "Local authorities",
    "Developers and planners",
    "Communities and volunteers",
    "Environmental organisations",
];

const BENEFITS: [&str; 8] = [
    "Carbon storage",
    "Flood risk reduction",
    "Water quality",
    "Pollination",
    "Health and wellbeing",
    "Access to nature",
    "Soil health",
    "Climate change adaptation",
];

/// (biodiversity priority, simplified priority, theme index).
#[rustfmt::skip]
const PRIORITY_LIST: [(&str, &str, usize); PRIORITIES] = [
    ("Increase the extent and condition of species-rich grassland, including lowland meadows and calcareous grassland", "Species-rich grassland", 0),
    ("Halt the decline of farmland birds by providing nesting habitat, summer insect food and winter seed across the farmed landscape", "Farmland birds", 0),
    ("Create a connected network of well-managed, species-rich hedgerows and hedgerow trees", "Hedgerow network", 0),
    ("Restore populations of rare arable plants and the invertebrates that depend on them", "Arable plants and invertebrates", 0),
    ("Improve soil health and reduce nutrient and sediment run-off from farmland", "Soil health", 0),
    ("Protect, restore and create traditional orchards as wildlife-rich habitat mosaics", "Traditional orchards", 0),
    ("Maintain and restore grassland for breeding waders and wintering birds", "Grassland birds", 0),
    ("Restore and expand lowland heathland and acid grassland", "Lowland heathland", 1),
    ("Restore degraded peatland to active, carbon-storing bog", "Peatland restoration", 1),
    ("Maintain open mosaic habitats with bare ground for reptiles and specialist invertebrates", "Heathland mosaics", 1),
    ("Improve the condition of upland heath through appropriate grazing and cutting", "Upland heath condition", 1),
    ("Restore and create coastal saltmarsh and intertidal habitats along the estuary", "Saltmarsh and intertidal habitats", 2),
    ("Protect and recover seagrass beds and other sensitive marine habitats", "Seagrass and marine habitats", 2),
    ("Reduce disturbance to overwintering and breeding coastal birds", "Coastal birds", 2),
    ("Improve water quality in estuarine and coastal waters", "Estuarine water quality", 2),
    ("Restore natural processes to rivers and streams so they are free-flowing and connected to their floodplains", "Natural river processes", 3),
    ("Create and restore a network of clean-water ponds", "Pond network", 3),
    ("Increase the extent of reedbed, fen and floodplain grazing marsh", "Reedbed, fen and grazing marsh", 3),
    ("Improve water quality by reducing diffuse pollution from land", "Water quality", 3),
    ("Remove barriers to the migration of fish and eels", "Fish passage", 3),
    ("Use natural flood management to slow the flow and reduce flood risk downstream", "Natural flood management", 3),
    ("Control invasive non-native species along river corridors", "Riparian invasive species", 3),
    ("Increase woodland cover with new native woodland that buffers and links ancient woodland", "Woodland expansion", 4),
    ("Bring existing woodland into positive management to improve its structure and diversity", "Woodland management", 4),
    ("Protect veteran and ancient trees and plant the next generation", "Veteran trees", 4),
    ("Create wood pasture, parkland and scrub mosaics", "Wood pasture and scrub", 4),
    ("Increase tree cover outside woodland through hedgerow trees, agroforestry and urban trees", "Trees outside woodland", 4),
    ("Reduce browsing and disease pressure on woodland regeneration", "Woodland pressures", 4),
    ("Increase the abundance and diversity of pollinators across the landscape", "Pollinators", 5),
    ("Improve connectivity between habitats so species can move and adapt to climate change", "Habitat connectivity", 5),
    ("Deliver more nature in towns and villages, close to where people live", "Urban nature", 5),
    ("Recover populations of priority species that need targeted action", "Priority species recovery", 5),
    ("Reduce light pollution and other pressures on nocturnal wildlife", "Dark skies", 5),
];

/// (measure, concise measure, theme index). Combined with [`QUALIFIERS`] to give 168 measures.
#[rustfmt::skip]
const MEASURE_BASES: [(&str, &str, usize); 42] = [
    ("Create species-rich hedgerows along field boundaries, planting at least five native woody species", "Create species-rich hedgerows", 0),
    ("Restore existing hedgerows by gapping up, laying and coppicing on rotation, leaving hedgerow trees to mature", "Restore and manage hedgerows", 0),
    ("Create and manage flower-rich margins and plots on arable land to provide pollen and nectar all season", "Flower-rich arable margins", 0),
    ("Restore species-rich lowland meadows by green-hay spreading and a late hay cut with aftermath grazing", "Restore lowland meadows", 0),
    ("Manage calcareous grassland through low-intensity conservation grazing and scrub control", "Graze calcareous grassland", 0),
    ("Provide winter bird food plots and overwintered stubbles for farmland birds", "Winter food for farmland birds", 0),
    ("Create skylark plots and nesting areas for ground-nesting birds in autumn-sown cereals", "Skylark plots", 0),
    ("Plant and restore traditional orchards with local fruit varieties, managed without pesticides", "Traditional orchards", 0),
    ("Reduce fertiliser and pesticide inputs on grassland next to semi-natural habitats", "Low-input grassland buffers", 0),
    ("Leave uncultivated margins for rare arable plants on light, chalky or sandy soils", "Rare arable plant margins", 0),
    ("Restore lowland heathland by removing encroaching scrub and bracken and re-establishing grazing", "Restore lowland heathland", 1),
    ("Create acid grassland and heath on former arable land by spreading local heather brash", "Create acid grassland and heath", 1),
    ("Manage heathland mosaics with rotational cutting to keep bare ground for reptiles and invertebrates", "Heathland mosaic management", 1),
    ("Block drainage grips on peat soils to raise water tables and restore active bog", "Rewet peatland", 1),
    ("Restore coastal saltmarsh through managed realignment of sea defences where landowners agree", "Managed realignment for saltmarsh", 2),
    ("Protect and restore seagrass beds with advisory no-anchor zones and eco-moorings", "Seagrass protection", 2),
    ("Reduce disturbance to overwintering waterbirds on intertidal mudflats with seasonal access zoning", "Reduce disturbance to waterbirds", 2),
    ("Remove marine litter and lost fishing gear from the shoreline through organised clean-ups", "Marine litter removal", 2),
    ("Create roosting and nesting islands for coastal birds in saline lagoons", "Coastal bird islands", 2),
    ("Reconnect rivers with their floodplains by removing or setting back embankments", "Reconnect floodplains", 3),
    ("Create and restore ponds in clusters to support great crested newts and aquatic invertebrates", "Create pond clusters", 3),
    ("Install leaky woody dams and other natural flood management features in headwater streams", "Natural flood management", 3),
    ("Fence river corridors and provide alternative livestock water to reduce bank erosion and sediment", "Fence riverbanks", 3),
    ("Remove or ease weirs and other barriers to fish and eel passage", "Remove fish barriers", 3),
    ("Create and restore reedbeds and fen around existing wetlands", "Reedbed and fen creation", 3),
    ("Restore floodplain grazing marsh by raising ditch water levels and managing grazing", "Restore grazing marsh", 3),
    ("Control invasive non-native plants such as Himalayan balsam and Japanese knotweed along watercourses", "Control riparian invasive plants", 3),
    ("Plant riparian trees to shade rivers and keep water cool for fish", "Riparian shading", 3),
    ("Plant new native broadleaved woodland to extend and link existing ancient woodland", "Extend ancient woodland", 4),
    ("Bring neglected woodland back into management with coppicing, thinning and ride widening", "Woodland management", 4),
    ("Allow natural regeneration of scrub and woodland on land next to existing woods", "Natural regeneration", 4),
    ("Create wood pasture and parkland with open-grown trees and low-intensity grazing", "Wood pasture creation", 4),
    ("Control deer and grey squirrels to protect woodland regeneration", "Deer and squirrel control", 4),
    ("Retain veteran trees and deadwood and plant successor trees for deadwood invertebrates", "Veteran trees and deadwood", 4),
    ("Plant in-field and hedgerow trees to create a treescape across farmland", "Farmland trees", 4),
    ("Create wildlife-friendly green roofs, green walls and pocket parks in built-up areas", "Urban greening", 5),
    ("Manage road verges and amenity grassland for wildflowers with a cut-and-collect regime", "Verges for wildflowers", 5),
    ("Install swift bricks, bat boxes and hedgehog highways in new and existing developments", "Species features in buildings", 5),
    ("Reduce light pollution near bat roosts and important wildlife corridors", "Dark corridors", 5),
    ("Support community monitoring and species recording to track recovery", "Community recording", 5),
    ("Create stepping-stone habitats to connect isolated sites across the landscape", "Stepping-stone habitats", 5),
    ("Give advice and training to landowners on nature-friendly management", "Landowner advice", 5),
];

const QUALIFIERS: [&str; 4] = [
    "in the wider farmed landscape",
    "within and around designated wildlife sites",
    "where the opportunity mapping shows the greatest benefit",
    "working with local communities and landowners",
];

const _: () = assert!(MEASURE_BASES.len() * QUALIFIERS.len() == MEASURES);

const HABITAT_LIST: [&str; HABITATS] = [
    "Lowland meadows",
    "Lowland calcareous grassland",
    "Lowland dry acid grassland",
    "Purple moor grass and rush pastures",
    "Coastal and floodplain grazing marsh",
    "Lowland heathland",
    "Lowland fens",
    "Reedbeds",
    "Lowland raised bog",
    "Blanket bog",
    "Coastal saltmarsh",
    "Intertidal mudflats",
    "Seagrass beds",
    "Coastal vegetated shingle",
    "Maritime cliff and slopes",
    "Saline lagoons",
    "Rivers",
    "Ponds",
    "Eutrophic standing waters",
    "Mesotrophic lakes",
    "Lowland mixed deciduous woodland",
    "Wet woodland",
    "Lowland beech and yew woodland",
    "Wood-pasture and parkland",
    "Traditional orchards",
    "Hedgerows",
    "Arable field margins",
    "Open mosaic habitats on previously developed land",
    "Calaminarian grassland",
    "Inland rock outcrop and scree habitats",
    "Mixed scrub",
    "Urban trees",
    "Modified grassland",
];

const PLACES: [&str; 17] = [
    "Avon Valley",
    "Chew Valley",
    "Cotswold Scarp",
    "Mendip Fringe",
    "Severn Vale",
    "Gordano Valley",
    "Frome Valley",
    "Kingswood",
    "Yate and Chipping Sodbury",
    "Bath Downs",
    "Keynsham and Saltford",
    "Wrington Vale",
    "Clevedon Moors",
    "Marshfield Plateau",
    "Blagdon Lake",
    "Thornbury Levels",
    "Stoke Gifford Fringe",
];

/// (name, description opening, habitat indices typical of the kind).
#[rustfmt::skip]
const AREA_KINDS: [(&str, &str, &[usize]); 4] = [
    ("Grassland Network", "A network of species-rich grassland, hedgerows and arable margins on the farmland", &[0, 1, 2, 3, 24, 25, 26, 32]),
    ("Woodland Corridor", "Ancient and secondary woodland, wood pasture and scrub along the valley sides", &[20, 21, 22, 23, 25, 30]),
    ("Wetland Mosaic", "Floodplain grazing marsh, fen, reedbed, ponds and rivers across the low-lying levels", &[4, 6, 7, 16, 17, 18, 19, 21]),
    ("Urban Green Links", "Parks, verges, gardens, brownfield land and streams linking built-up areas to the countryside", &[27, 30, 31, 32, 17, 16]),
];

const _: () = assert!(PLACES.len() * AREA_KINDS.len() == AREAS);

/// (name, what it offers) of local funding, listed per area in `area_funding_schemes`.
#[rustfmt::skip]
const LOCAL_FUNDING: [(&str, &str); 12] = [
    ("West of England Nature Enhancement Fund", "capital grants for habitat creation on land in priority areas"),
    ("Bristol Avon Catchment Partnership small grants", "support for river restoration, ponds and natural flood management"),
    ("Parish and town council community grants", "small awards for community wildlife projects and tree planting"),
    ("Local Authority Treescapes Fund", "funding for trees outside woodland, including hedgerow and street trees"),
    ("Community Infrastructure Levy", "green infrastructure projects funded from development contributions"),
    ("Section 106 biodiversity contributions", "off-site habitat works secured through planning agreements"),
    ("Biodiversity Net Gain habitat bank", "long-term payments for habitat created and managed for 30 years"),
    ("Farming in Protected Landscapes", "one-off projects for nature, climate, people and place in National Landscapes"),
    ("Water company catchment scheme", "payments for land management that protects drinking water sources"),
    ("Wildlife Trust landowner advice service", "free advice visits and help with grant applications"),
    ("National Lottery Heritage Fund", "grants for landscape-scale nature recovery and community engagement"),
    ("Woodland Trust MOREwoods", "free trees and guards for new woodland and hedgerow planting"),
];

#[rustfmt::skip]
const SCHEME_BLURBS: [(&str, &str); 7] = [
    ("Sustainable Farming Incentive", "A Sustainable Farming Incentive action paid for actions that support food production and the environment."),
    ("Countryside Stewardship Capital Grants", "A Countryside Stewardship capital item for boundaries, trees, water quality and air quality."),
    ("Countryside Stewardship Higher Tier", "A Countryside Stewardship option for the most environmentally significant sites, agreed with Natural England."),
    ("Forestry Commission grants", "Forestry Commission support for creating, planning and improving woodland."),
    ("Defra environmental land management", "A Defra scheme for larger, bespoke projects that deliver environmental outcomes."),
    ("Natural England grants", "Natural England funding for priority habitats and species."),
    ("Local funding", "A locally administered fund open to land managers and community groups in the region."),
];

/// (grant_id, grant_name, grant_scheme).
#[rustfmt::skip]
const GRANT_LIST: [(&str, &str, &str); GRANTS] = {
    const SFI: &str = "Sustainable Farming Incentive";
    const CAP: &str = "Countryside Stewardship Capital Grants";
    const HT: &str = "Countryside Stewardship Higher Tier";
    const FC: &str = "Forestry Commission grants";
    const ELM: &str = "Defra environmental land management";
    const NE: &str = "Natural England grants";
    const LOC: &str = "Local funding";
    [
        ("AHL1", "Pollen and nectar flower mix", SFI),
        ("AHL2", "Winter bird food on arable and horticultural land", SFI),
        ("AHL3", "Grassy field corners and blocks", SFI),
        ("AHL4", "4 to 12 metre grass buffer strip on arable and horticultural land", SFI),
        ("AHL5", "Flower-rich grass margins, blocks, or in-field strips", SFI),
        ("AHW1", "Bumblebird mix", SFI),
        ("AHW2", "Supplementary winter bird food", SFI),
        ("AHW3", "Beetle banks", SFI),
        ("AHW4", "Skylark plots", SFI),
        ("AHW5", "Nesting plots for lapwing and other ground-nesting birds", SFI),
        ("AHW6", "Basic overwinter stubble", SFI),
        ("AHW7", "Enhanced overwinter stubble", SFI),
        ("AHW8", "Whole farm approach to arable wildlife", SFI),
        ("AHW9", "Unharvested cereal headland", SFI),
        ("AHW10", "Low input harvested cereal crop", SFI),
        ("AHW11", "Cultivated areas for arable plants", SFI),
        ("BND1", "Maintain dry stone walls", SFI),
        ("BND2", "Maintain earth banks or stone-faced hedgebanks", SFI),
        ("CAB1", "Assess and record hedgerow condition", SFI),
        ("CAB2", "Manage hedgerows", SFI),
        ("CAB3", "Maintain or establish hedgerow trees", SFI),
        ("CAB4", "Hedgerow gap restoration", SFI),
        ("CAB5", "Manage buffer strips next to watercourses", SFI),
        ("CAB6", "Maintain and restore boundary walls", SFI),
        ("CHRW1", "Assess and record hedgerow condition on both sides", SFI),
        ("CHRW2", "Manage hedgerows on both sides", SFI),
        ("CHRW3", "Maintain or establish hedgerow trees on both sides", SFI),
        ("CIGL1", "Take improved grassland field corners or blocks out of management", SFI),
        ("CIGL2", "Winter bird food on improved grassland", SFI),
        ("CIPM1", "Assess integrated pest management and produce a plan", SFI),
        ("CIPM2", "Flower-rich grass margins for integrated pest management", SFI),
        ("CIPM3", "Companion crop on arable and horticultural land", SFI),
        ("CIPM4", "No use of insecticide on arable crops and permanent crops", SFI),
        ("CLIG3", "Manage grassland with very low nutrient inputs", SFI),
        ("CNUM2", "Legumes on improved grassland", SFI),
        ("CNUM3", "Legume fallow", SFI),
        ("CSAM1", "Assess soil, produce a soil management plan and test soil organic matter", SFI),
        ("CSAM2", "Multi-species winter cover crop", SFI),
        ("CSAM3", "Herbal leys", SFI),
        ("CSW1", "Scrub and woodland edge management", SFI),
        ("GRH1", "Manage rough grazing for birds", SFI),
        ("GRH6", "Manage species-rich grassland", SFI),
        ("GRH7", "Haymaking supplement", SFI),
        ("GRH8", "Haymaking supplement in severely disadvantaged areas", SFI),
        ("HRG1", "Assess and record hedgerow condition for one side", SFI),
        ("IGL1", "Take improved grassland field corners or blocks out of management", SFI),
        ("IGL2", "Winter bird food on improved grassland", SFI),
        ("IGL3", "Manage grassland with very low nutrient inputs outside SDAs", SFI),
        ("NUM1", "Assess nutrient management and produce a review report", SFI),
        ("NUM2", "Legumes on improved grassland for nutrient management", SFI),
        ("NUM3", "Legume fallow for nutrient management", SFI),
        ("SAM1", "Assess soil, test soil organic matter and produce a soil management plan", SFI),
        ("SAM2", "Multi-species winter cover crop for soil", SFI),
        ("SAM3", "Herbal leys for soil", SFI),
        ("SOH1", "No-till farming", SFI),
        ("SOH2", "Multi-species spring-sown cover crop", SFI),
        ("SOH3", "Multi-species summer-sown cover crop", SFI),
        ("SOH4", "Multi-species winter cover crop for soil health", SFI),
        ("WBD1", "Manage ponds", SFI),
        ("WBD2", "Manage ditches", SFI),
        ("WBD3", "In-field trees on arable land", SFI),
        ("WBD4", "In-field trees on improved grassland", SFI),
        ("WBD5", "Manage scrub and open habitat mosaics", SFI),
        ("BN5", "Hedgerow gapping-up", CAP),
        ("BN6", "Hedgerow laying", CAP),
        ("BN7", "Hedgerow coppicing", CAP),
        ("BN8", "Dry stone wall restoration", CAP),
        ("BN10", "Earth bank restoration", CAP),
        ("BN11", "Planting new hedges", CAP),
        ("BN12", "Stone wall supplement", CAP),
        ("BN13", "Hedgerow supplement - top binding and staking", CAP),
        ("FG1", "Fencing", CAP),
        ("FG2", "Sheep netting", CAP),
        ("FG4", "Rabbit fencing supplement", CAP),
        ("FG9", "Deer fencing", CAP),
        ("FG11", "Water trough", CAP),
        ("FG12", "Water supply pipe", CAP),
        ("FG14", "Water trough with concrete base", CAP),
        ("FG15", "Cattle grid", CAP),
        ("PA1", "Implementation plan", CAP),
        ("PA2", "Feasibility study", CAP),
        ("PA3", "Woodland management plan", CAP),
        ("PA4", "Agroforestry plan", CAP),
        ("RP3", "Cross drains", CAP),
        ("RP5", "Sediment ponds and traps", CAP),
        ("RP7", "Livestock and machinery hardbase", CAP),
        ("RP8", "Livestock drinking bay", CAP),
        ("RP9", "Pesticide handling area", CAP),
        ("RP10", "Swales", CAP),
        ("RP11", "Check dams", CAP),
        ("RP14", "Earth banks and soil bunds", CAP),
        ("RP23", "Relocation of gateways", CAP),
        ("RP26", "Watercourse crossings", CAP),
        ("RP27", "Leaky woody dams", CAP),
        ("RP32", "Rainwater goods", CAP),
        ("TE1", "Planting standard hedgerow tree", CAP),
        ("TE2", "Planting standard parkland tree", CAP),
        ("TE3", "Planting fruit trees", CAP),
        ("TE4", "Supply and plant tree", CAP),
        ("TE5", "Tree surgery", CAP),
        ("TE6", "Tree shelter", CAP),
        ("TE10", "Coppicing bankside trees", CAP),
        ("TE11", "Pollarding bankside trees", CAP),
        ("TE12", "Tree guard", CAP),
        ("TE13", "Ring barking of trees", CAP),
        ("WN1", "Pond management", CAP),
        ("WN2", "Pond creation", CAP),
        ("WN5", "Sluice installation", CAP),
        ("WN6", "Pond reinstatement", CAP),
        ("WN7", "Bank reprofiling", CAP),
        ("WN8", "Installation of piped culverts in ditches", CAP),
        ("WN9", "Earth bund", CAP),
        ("WN10", "Water level control structure", CAP),
        ("AB1", "Nectar flower mix", HT),
        ("AB8", "Flower-rich margins and plots", HT),
        ("AB9", "Winter bird food", HT),
        ("AB11", "Cultivated areas for arable plants", HT),
        ("AB15", "Two year sown legume fallow", HT),
        ("BE3", "Management of hedgerows", HT),
        ("CT1", "Management of coastal saltmarsh", HT),
        ("CT2", "Creation of inter-tidal and saline habitat on arable land", HT),
        ("CT3", "Management of coastal sand dunes and vegetated shingle", HT),
        ("CT7", "Creation of inter-tidal and saline habitat by non-intervention", HT),
        ("GS6", "Management of species-rich grassland", HT),
        ("GS7", "Restoration towards species-rich grassland", HT),
        ("GS8", "Creation of species-rich grassland", HT),
        ("GS9", "Management of wet grassland for breeding waders", HT),
        ("GS11", "Creation of wet grassland for breeding waders", HT),
        ("GS13", "Management of grassland for target features", HT),
        ("LH1", "Management of lowland heathland", HT),
        ("LH2", "Restoration of forestry areas to lowland heathland", HT),
        ("LH3", "Creation of heathland from arable or improved grassland", HT),
        ("OR1", "Management of traditional orchards", HT),
        ("OR2", "Restoration of traditional orchards", HT),
        ("OR3", "Creation of traditional orchards", HT),
        ("SW1", "4 to 6 metre buffer strip on cultivated land", HT),
        ("SW6", "Winter cover crops", HT),
        ("SW11", "Riparian management strip", HT),
        ("SW12", "Making space for water", HT),
        ("WD1", "Woodland creation - maintenance payments", HT),
        ("WD2", "Woodland improvement", HT),
        ("WD3", "Woodland edges on arable land", HT),
        ("WD4", "Management of wood pasture and parkland", HT),
        ("WD5", "Restoration of wood pasture and parkland", HT),
        ("WD6", "Creation of wood pasture", HT),
        ("WD7", "Management of successional areas and scrub", HT),
        ("WD8", "Creation of successional areas and scrub", HT),
        ("WT3", "Management of ditches of high environmental value", HT),
        ("WT4", "Management of ponds of high wildlife value", HT),
        ("WT6", "Management of reedbed", HT),
        ("WT7", "Creation of reedbed", HT),
        ("WT8", "Management of fen", HT),
        ("WT9", "Creation of fen", HT),
        ("WT10", "Management of lowland raised bog", HT),
        ("EWCO", "England Woodland Creation Offer", FC),
        ("WCPG", "Woodland Creation Planning Grant", FC),
        ("WTHG", "Woodland Tree Health grant", FC),
        ("WMPG", "Woodland Management Plan grant", FC),
        ("FIPL", "Farming in Protected Landscapes", ELM),
        ("LR", "Landscape Recovery", ELM),
        ("SSF", "Species Survival Fund", NE),
        ("NCPG", "Nature for Climate Peatland Grant Scheme", NE),
        ("WWEF", "West of England Nature Enhancement Fund", LOC),
        ("LATF", "Local Authority Treescapes Fund", LOC),
        ("BACP", "Bristol Avon Catchment Partnership small grants", LOC),
        ("CSFC", "Catchment Sensitive Farming capital support", LOC),
        ("BNGU", "Off-site Biodiversity Net Gain units", LOC),
        ("TOWF", "Trees Outside Woodland fund", LOC),
    ]
};

/// (assemblage, taxa, kingdom, phylum).
const ASSEMBLAGES: [(&str, &str, &str, &str); 7] = [
    ("Birds", "Bird", "Animalia", "Chordata"),
    ("Butterflies", "Butterfly", "Animalia", "Arthropoda"),
    ("Fish", "Fish", "Animalia", "Chordata"),
    ("Mammals", "Mammal", "Animalia", "Chordata"),
    ("Moths", "Moth", "Animalia", "Arthropoda"),
    ("Plants", "Plant", "Plantae", "Tracheophyta"),
    (
        "Reptiles and amphibians",
        "Reptile/Amphibian",
        "Animalia",
        "Chordata",
    ),
];

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

#[rustfmt::skip]
const SPECIES_LIST: [SpeciesEntry; SPECIES] = [
    ("Skylark", "Alauda arvensis", 0, "Aves", "Passeriformes", "Alaudidae", 0),
    ("Yellowhammer", "Emberiza citrinella", 0, "Aves", "Passeriformes", "Emberizidae", 0),
    ("Lapwing", "Vanellus vanellus", 0, "Aves", "Charadriiformes", "Charadriidae", 0),
    ("Turtle Dove", "Streptopelia turtur", 0, "Aves", "Columbiformes", "Columbidae", 0),
    ("Grey Partridge", "Perdix perdix", 0, "Aves", "Galliformes", "Phasianidae", 0),
    ("Barn Owl", "Tyto alba", 0, "Aves", "Strigiformes", "Tytonidae", 0),
    ("Curlew", "Numenius arquata", 0, "Aves", "Charadriiformes", "Scolopacidae", 2),
    ("Nightingale", "Luscinia megarhynchos", 0, "Aves", "Passeriformes", "Muscicapidae", 4),
    ("Kingfisher", "Alcedo atthis", 0, "Aves", "Coraciiformes", "Alcedinidae", 3),
    ("Song Thrush", "Turdus philomelos", 0, "Aves", "Passeriformes", "Turdidae", 4),
    ("Swift", "Apus apus", 0, "Aves", "Apodiformes", "Apodidae", 5),
    ("Corn Bunting", "Emberiza calandra", 0, "Aves", "Passeriformes", "Emberizidae", 0),
    ("Marsh Fritillary", "Euphydryas aurinia", 1, "Insecta", "Lepidoptera", "Nymphalidae", 0),
    ("Small Blue", "Cupido minimus", 1, "Insecta", "Lepidoptera", "Lycaenidae", 0),
    ("Large Blue", "Phengaris arion", 1, "Insecta", "Lepidoptera", "Lycaenidae", 0),
    ("Duke of Burgundy", "Hamearis lucina", 1, "Insecta", "Lepidoptera", "Riodinidae", 4),
    ("Wall", "Lasiommata megera", 1, "Insecta", "Lepidoptera", "Nymphalidae", 0),
    ("Brown Hairstreak", "Thecla betulae", 1, "Insecta", "Lepidoptera", "Lycaenidae", 0),
    ("White-letter Hairstreak", "Satyrium w-album", 1, "Insecta", "Lepidoptera", "Lycaenidae", 4),
    ("Grizzled Skipper", "Pyrgus malvae", 1, "Insecta", "Lepidoptera", "Hesperiidae", 1),
    ("Atlantic Salmon", "Salmo salar", 2, "Actinopterygii", "Salmoniformes", "Salmonidae", 3),
    ("European Eel", "Anguilla anguilla", 2, "Actinopterygii", "Anguilliformes", "Anguillidae", 3),
    ("Brown Trout", "Salmo trutta", 2, "Actinopterygii", "Salmoniformes", "Salmonidae", 3),
    ("Bullhead", "Cottus gobio", 2, "Actinopterygii", "Scorpaeniformes", "Cottidae", 3),
    ("Twaite Shad", "Alosa fallax", 2, "Actinopterygii", "Clupeiformes", "Clupeidae", 2),
    ("Hazel Dormouse", "Muscardinus avellanarius", 3, "Mammalia", "Rodentia", "Gliridae", 4),
    ("Water Vole", "Arvicola amphibius", 3, "Mammalia", "Rodentia", "Cricetidae", 3),
    ("Hedgehog", "Erinaceus europaeus", 3, "Mammalia", "Eulipotyphla", "Erinaceidae", 5),
    ("Otter", "Lutra lutra", 3, "Mammalia", "Carnivora", "Mustelidae", 3),
    ("Greater Horseshoe Bat", "Rhinolophus ferrumequinum", 3, "Mammalia", "Chiroptera", "Rhinolophidae", 5),
    ("Lesser Horseshoe Bat", "Rhinolophus hipposideros", 3, "Mammalia", "Chiroptera", "Rhinolophidae", 4),
    ("Bechstein's Bat", "Myotis bechsteinii", 3, "Mammalia", "Chiroptera", "Vespertilionidae", 4),
    ("Brown Hare", "Lepus europaeus", 3, "Mammalia", "Lagomorpha", "Leporidae", 0),
    ("Harvest Mouse", "Micromys minutus", 3, "Mammalia", "Rodentia", "Muridae", 0),
    ("Forester", "Adscita statices", 4, "Insecta", "Lepidoptera", "Zygaenidae", 0),
    ("Garden Tiger", "Arctia caja", 4, "Insecta", "Lepidoptera", "Erebidae", 5),
    ("Cinnabar", "Tyria jacobaeae", 4, "Insecta", "Lepidoptera", "Erebidae", 0),
    ("Narrow-bordered Bee Hawk-moth", "Hemaris tityus", 4, "Insecta", "Lepidoptera", "Sphingidae", 1),
    ("Small Eggar", "Eriogaster lanestris", 4, "Insecta", "Lepidoptera", "Lasiocampidae", 0),
    ("Scarlet Tiger", "Callimorpha dominula", 4, "Insecta", "Lepidoptera", "Erebidae", 3),
    ("Bee Orchid", "Ophrys apifera", 5, "Liliopsida", "Asparagales", "Orchidaceae", 0),
    ("Cornflower", "Centaurea cyanus", 5, "Magnoliopsida", "Asterales", "Asteraceae", 0),
    ("Green-winged Orchid", "Anacamptis morio", 5, "Liliopsida", "Asparagales", "Orchidaceae", 0),
    ("Snake's-head Fritillary", "Fritillaria meleagris", 5, "Liliopsida", "Liliales", "Liliaceae", 3),
    ("Devil's-bit Scabious", "Succisa pratensis", 5, "Magnoliopsida", "Dipsacales", "Caprifoliaceae", 0),
    ("Wild Service Tree", "Sorbus torminalis", 5, "Magnoliopsida", "Rosales", "Rosaceae", 4),
    ("Corn Buttercup", "Ranunculus arvensis", 5, "Magnoliopsida", "Ranunculales", "Ranunculaceae", 0),
    ("Pasqueflower", "Pulsatilla vulgaris", 5, "Magnoliopsida", "Ranunculales", "Ranunculaceae", 0),
    ("Great Crested Newt", "Triturus cristatus", 6, "Amphibia", "Caudata", "Salamandridae", 3),
    ("Adder", "Vipera berus", 6, "Reptilia", "Squamata", "Viperidae", 1),
    ("Common Toad", "Bufo bufo", 6, "Amphibia", "Anura", "Bufonidae", 3),
];

/// Photo credit handles for species images (synthetic).
const RECORDERS: [&str; 8] = [
    "avon_naturalist",
    "mendip_moths",
    "chew_valley_birder",
    "severn_recorder",
    "bath_botanist",
    "cotswold_lepidopterist",
    "gordano_wildlife",
    "kingswood_ecology",
];

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
        assert_eq!(stats.tables.len(), TABLES.len());
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
        TABLES
            .iter()
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

    fn content_digest(conn: &Connection) -> String {
        let mut hasher = blake3::Hasher::new();
        for table in TABLES {
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
        generate(&conn, 1).unwrap();
        assert_eq!(content_digest(&conn), GOLDEN_SCALE_1);
    }

    /// (child, child columns, parent, parent columns) for every reference in the schema.
    const REFERENCES: [(&str, &[&str], &str, &[&str]); 19] = [
        (
            "measure_has_type",
            &["measure_id"],
            "measure",
            &["measure_id"],
        ),
        (
            "measure_has_type",
            &["measure_type_id"],
            "measure_type",
            &["measure_type_id"],
        ),
        (
            "measure_has_stakeholder",
            &["measure_id"],
            "measure",
            &["measure_id"],
        ),
        (
            "measure_has_stakeholder",
            &["stakeholder_id"],
            "stakeholder",
            &["stakeholder_id"],
        ),
        (
            "measure_has_benefits",
            &["measure_id"],
            "measure",
            &["measure_id"],
        ),
        (
            "measure_has_benefits",
            &["benefit_id"],
            "benefits",
            &["benefit_id"],
        ),
        (
            "measure_has_species",
            &["measure_id"],
            "measure",
            &["measure_id"],
        ),
        (
            "measure_has_species",
            &["species_id"],
            "species",
            &["species_id"],
        ),
        (
            "measure_area_priority",
            &["measure_id"],
            "measure",
            &["measure_id"],
        ),
        ("measure_area_priority", &["area_id"], "area", &["area_id"]),
        (
            "measure_area_priority",
            &["priority_id"],
            "priority",
            &["priority_id"],
        ),
        (
            "measure_area_priority_grant",
            &["measure_id", "area_id", "priority_id"],
            "measure_area_priority",
            &["measure_id", "area_id", "priority_id"],
        ),
        (
            "measure_area_priority_grant",
            &["grant_id"],
            "grant_table",
            &["grant_id"],
        ),
        (
            "species_area_priority",
            &["species_id"],
            "species",
            &["species_id"],
        ),
        ("species_area_priority", &["area_id"], "area", &["area_id"]),
        (
            "species_area_priority",
            &["priority_id"],
            "priority",
            &["priority_id"],
        ),
        (
            "habitat_creation_area",
            &["habitat_id"],
            "habitat",
            &["habitat_id"],
        ),
        (
            "habitat_management_area",
            &["habitat_id"],
            "habitat",
            &["habitat_id"],
        ),
        ("area_geom", &["area_id"], "area", &["area_id"]),
    ];

    fn assert_no_orphans(conn: &Connection) {
        let extra: [(&str, &[&str], &str, &[&str]); 3] = [
            ("habitat_creation_area", &["area_id"], "area", &["area_id"]),
            (
                "habitat_management_area",
                &["area_id"],
                "area",
                &["area_id"],
            ),
            ("area_funding_schemes", &["area_id"], "area", &["area_id"]),
        ];
        for (child, ccols, parent, pcols) in REFERENCES.iter().chain(extra.iter()) {
            let on: Vec<String> = ccols
                .iter()
                .zip(pcols.iter())
                .map(|(c, p)| format!("c.{c} = p.{p}"))
                .collect();
            let sql = format!(
                "SELECT count(*) FROM {child} AS c LEFT JOIN {parent} AS p ON {} \
                 WHERE p.{} IS NULL",
                on.join(" AND "),
                pcols[0]
            );
            assert_eq!(count(conn, &sql), 0, "orphans: {child} -> {parent}");
        }
    }

    #[test]
    fn no_orphans_and_dense_ids() {
        let conn = fresh();
        generate(&conn, 2).unwrap();
        assert_no_orphans(&conn);
        for (table, key) in [
            ("measure", "measure_id"),
            ("area", "area_id"),
            ("priority", "priority_id"),
            ("species", "species_id"),
            ("habitat", "habitat_id"),
            ("measure_type", "measure_type_id"),
            ("stakeholder", "stakeholder_id"),
            ("benefits", "benefit_id"),
            ("area_funding_schemes", "id"),
            ("area_geom", "geom_id"),
        ] {
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
