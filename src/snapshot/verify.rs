//! Integrity reports and the checks behind them: the stored-data checks of a quick verify
//! (blocks present, block hashes, whole-file hash) and [`check_database`], the logical checks
//! of an open database (full scans against fingerprints, schema inventory, orphan queries) that
//! deep verify and restore share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use duckdb::Connection;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::domain::fingerprint::{Fingerprint, Fingerprints};
use crate::storage::attached::SideBySide;
use crate::storage::inspect::{self, RowRange, SchemaInventory};

/// One named check of an integrity report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable, readable name: `blocks_present`, `scan:measure`, `orphans:… -> measure`, …
    pub name: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
    #[serde(with = "duration_micros")]
    pub duration: Duration,
}

/// The checks of a verify or a post-restore verification, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    pub checks: Vec<Check>,
}

impl IntegrityReport {
    /// True when every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Appends a check.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        passed: bool,
        expected: impl Into<String>,
        actual: impl Into<String>,
        duration: Duration,
    ) {
        self.checks.push(Check {
            name: name.into(),
            passed,
            expected: expected.into(),
            actual: actual.into(),
            duration,
        });
    }

    /// Runs `f`, timing it, and appends its `(passed, expected, actual)` as a check.
    pub fn run(&mut self, name: impl Into<String>, f: impl FnOnce() -> (bool, String, String)) {
        let start = Instant::now();
        let (passed, expected, actual) = f();
        self.push(name, passed, expected, actual, start.elapsed());
    }

    /// Appends another report's checks.
    pub fn extend(&mut self, other: IntegrityReport) {
        self.checks.extend(other.checks);
    }
}

/// Which verify ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyKind {
    Quick,
    Deep,
}

/// The outcome of the last verify of a snapshot (kept in `verified/<id>.json`; retention never
/// removes the newest snapshot whose last verify passed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub kind: VerifyKind,
    pub passed: bool,
    pub at: DateTime<Utc>,
}

/// Checks an open database against the fingerprints and schema a manifest recorded: a full
/// scan of every table (which makes DuckDB read and checksum every block), the schema
/// inventory, and an orphan query per reference. Used by deep verify on an assembled copy and
/// by restore on the live database after the swap. Never fails: every problem is a check.
pub fn check_database(
    conn: &impl SideBySide,
    expected_fingerprints: &Fingerprints,
    expected_schema: &SchemaInventory,
) -> IntegrityReport {
    let mut report = IntegrityReport::default();
    let expected: BTreeSet<&str> = expected_fingerprints.keys().map(String::as_str).collect();
    // The tables the file has, once the `Present` job has listed them.
    let present: Mutex<Option<Vec<String>>> = Mutex::new(None);
    let jobs = scan_jobs(&expected, expected_fingerprints, expected_schema);
    let results = run_jobs(conn, &jobs, |c, job| {
        let started = Instant::now();
        let mut r = IntegrityReport::default();
        let scanned = match job {
            Job::Scan(table, range) => vec![(table.clone(), scan_part(c, table, *range))],
            Job::Scans(tables) => scan_together(c, tables),
            Job::Present => match inspect::all_tables(c) {
                Ok(tables) => {
                    let extra: Vec<String> = tables
                        .iter()
                        .filter(|t| !expected.contains(t.as_str()))
                        .cloned()
                        .collect();
                    *present.lock() = Some(tables);
                    scan_together(c, &extra)
                }
                Err(e) => {
                    r.push(
                        "list_tables",
                        false,
                        "tables listed",
                        e.public_message(),
                        started.elapsed(),
                    );
                    Vec::new()
                }
            },
            Job::Schema => {
                r.run("schema_inventory", || {
                    compare_schema(expected_schema, inspect::schema_inventory(c))
                });
                Vec::new()
            }
            Job::Orphans | Job::Counts => {
                orphan_checks(c, &mut r);
                Vec::new()
            }
        };
        // A statement's time is shared equally among the tables it scanned.
        let share = started.elapsed() / u32::try_from(scanned.len().max(1)).unwrap_or(1);
        let scanned = scanned.into_iter().map(|(t, f)| (t, f, share));
        (r, scanned.collect())
    });
    let present = present.into_inner();
    report_in_order(
        &mut report,
        results,
        expected_fingerprints,
        present.as_deref(),
    );
    report
}

/// One job's checks (schema, orphans), or the fingerprints it scanned (of whole tables or of
/// parts), each with its share of the job's time.
type JobResult = (
    IntegrityReport,
    Vec<(String, Result<Fingerprint, String>, Duration)>,
);

/// The fingerprint of the rows of `table` in `range`, or why there is none (a table the file
/// lacks is named as such once the tables are listed, see [`report_in_order`]).
fn scan_part(conn: &Connection, table: &str, range: RowRange) -> Result<Fingerprint, String> {
    inspect::scan_table_part(conn, table, range)
        .map_err(|e| format!("scan failed: {}", e.public_message()))
}

/// Whole-table fingerprints of `tables` in one statement; should it fail (a damaged block in
/// one of them, or a missing table), each table is scanned on its own, so the report says which.
fn scan_together(
    conn: &Connection,
    tables: &[String],
) -> Vec<(String, Result<Fingerprint, String>)> {
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    match inspect::scan_tables(conn, &names) {
        Ok(fps) if fps.len() == names.len() => tables
            .iter()
            .cloned()
            .zip(fps.into_iter().map(Ok))
            .collect(),
        _ => tables
            .iter()
            .map(|t| (t.clone(), scan_part(conn, t, RowRange::WHOLE)))
            .collect(),
    }
}

/// Appends the jobs' results in the conventional order: one `scan:<table>` per table (its
/// parts added up) against the manifest's fingerprint, then schema, then orphans. A table
/// whose scan failed and that the file does not list is reported as missing.
fn report_in_order(
    report: &mut IntegrityReport,
    results: Vec<JobResult>,
    expected_fingerprints: &Fingerprints,
    present: Option<&[String]>,
) {
    let mut scans: BTreeMap<String, ScanParts> = BTreeMap::new();
    let mut others = Vec::new();
    for (r, scanned) in results {
        for (table, part, took) in scanned {
            scans.entry(table).or_default().add(part, took);
        }
        others.push(r);
    }
    for (table, parts) in scans {
        let want = expected_fingerprints.get(&table);
        let expected = want.map_or_else(|| "full scan readable".to_string(), |f| f.to_string());
        let missing = present.is_some_and(|p| !p.contains(&table));
        let (passed, actual) = match parts.sum {
            Ok(got) => (want.is_none_or(|w| *w == got), got.to_string()),
            Err(_) if missing => (false, "table missing".to_string()),
            Err(e) => (false, e),
        };
        report.push(
            format!("scan:{table}"),
            passed,
            expected,
            actual,
            parts.took,
        );
    }
    others.into_iter().for_each(|r| report.extend(r));
}

/// The jobs of [`check_database`]: the scans of tables with a BLOB column (few rows, but the
/// bulk of the file, in one row group that DuckDB scans on one thread) in two parts first, so
/// both connections start on them; then the schema, the orphans, every other expected table in
/// one statement, and the listing of the file's tables with the scan of those not expected
/// (the service's own). Listing first would cost every check DuckDB's first catalog read
/// (~13 ms at scale 1) before any could start.
fn scan_jobs(
    names: &BTreeSet<&str>,
    expected_fingerprints: &Fingerprints,
    expected_schema: &SchemaInventory,
) -> Vec<Job> {
    let heavy = expected_schema.tables_with("BLOB");
    let mut jobs = Vec::new();
    for &t in names.iter().filter(|t| heavy.contains(**t)) {
        let rows = expected_fingerprints.get(t).map_or(0, |f| f.rows);
        let parts = RowRange::split(rows, SCAN_PARTS);
        jobs.extend(parts.into_iter().map(|r| Job::Scan(t.to_string(), r)));
    }
    jobs.extend([Job::Schema, Job::Orphans]);
    let rest = names.iter().filter(|t| !heavy.contains(**t));
    jobs.push(Job::Scans(rest.map(|t| t.to_string()).collect()));
    jobs.push(Job::Present);
    jobs
}

/// One per connection of [`run_jobs`].
const SCAN_PARTS: u32 = 2;

/// The parts of one table's scan, added up, and the time they took together.
struct ScanParts {
    sum: Result<Fingerprint, String>,
    took: Duration,
}

impl Default for ScanParts {
    fn default() -> Self {
        ScanParts {
            sum: Ok(Fingerprint::default()),
            took: Duration::ZERO,
        }
    }
}

impl ScanParts {
    fn add(&mut self, part: Result<Fingerprint, String>, took: Duration) {
        self.sum = match (
            std::mem::replace(&mut self.sum, Ok(Fingerprint::default())),
            part,
        ) {
            (Ok(mut sum), Ok(p)) => {
                sum += p;
                Ok(sum)
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        self.took += took;
    }
}

/// The cheap checks of a database file that is byte for byte one that already passed
/// [`check_database`] (a restore after its swap): it opens with the expected schema and every
/// user table has the expected row count (answered from metadata).
pub fn check_replaced(
    conn: &impl SideBySide,
    expected_fingerprints: &Fingerprints,
    expected_schema: &SchemaInventory,
) -> IntegrityReport {
    let jobs = [Job::Schema, Job::Counts];
    let mut report = IntegrityReport::default();
    for r in run_jobs(conn, &jobs, |c, job| {
        let mut r = IntegrityReport::default();
        match job {
            Job::Schema => r.run("schema_inventory", || {
                compare_schema(expected_schema, inspect::schema_inventory(c))
            }),
            _ => r.run("row_counts", || {
                counts_check(inspect::row_counts(c), expected_fingerprints)
            }),
        }
        r
    }) {
        report.extend(r);
    }
    report
}

/// `row_counts`: every user table's row count against the fingerprints.
fn counts_check(
    counts: Result<Vec<(String, i64)>, crate::storage::StorageError>,
    expected: &Fingerprints,
) -> (bool, String, String) {
    let total: i64 = expected.values().map(|f| f.rows).sum();
    let want = format!("{} tables, {total} rows", expected.len());
    let counts = match counts {
        Ok(c) => c,
        Err(e) => return (false, want, e.public_message()),
    };
    let diffs: Vec<String> = expected
        .iter()
        .filter_map(
            |(table, fp)| match counts.iter().find(|(t, _)| t == table) {
                Some((_, n)) if *n == fp.rows => None,
                Some((_, n)) => Some(format!("{table}: {n} (expected {})", fp.rows)),
                None => Some(format!("{table}: missing")),
            },
        )
        .collect();
    if diffs.is_empty() {
        (true, want.clone(), want)
    } else {
        (false, want, diffs.join("; "))
    }
}

/// One unit of [`check_database`]'s work.
enum Job {
    /// A scan of one part of a table.
    Scan(String, RowRange),
    /// Full scans of whole tables, in one statement.
    Scans(Vec<String>),
    /// The tables the file has; those no fingerprint expects are scanned too.
    Present,
    Schema,
    Orphans,
    Counts,
}

/// Runs `jobs` on two connections to the same database (the caller's and another), in parallel:
/// most checks are small queries whose fixed per-statement cost would otherwise add up
/// serially. Results come back in job order.
pub fn run_jobs<J: Sync, R: Send>(
    conn: &impl SideBySide,
    jobs: &[J],
    f: impl Fn(&Connection, &J) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let work = |c: &Connection| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { break };
        *slots[i].lock() = Some(f(c, job));
    };
    std::thread::scope(|s| {
        if let Ok(second) = conn.another() {
            let work = &work;
            s.spawn(move || work(&second));
        }
        work(conn.conn());
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .expect("every job ran: the loop takes each index once")
        })
        .collect()
}

fn compare_schema(
    expected: &SchemaInventory,
    actual: Result<SchemaInventory, crate::storage::StorageError>,
) -> (bool, String, String) {
    let describe = |s: &SchemaInventory| {
        format!(
            "{} columns, {} views, {} constraints",
            s.columns.len(),
            s.views.len(),
            s.constraints.len()
        )
    };
    match actual {
        Err(e) => (
            false,
            describe(expected),
            format!("inventory failed: {}", e.public_message()),
        ),
        Ok(actual) if actual == *expected => (true, describe(expected), describe(&actual)),
        Ok(actual) => {
            let diff = first_difference(expected, &actual);
            (
                false,
                describe(expected),
                format!("{}; {diff}", describe(&actual)),
            )
        }
    }
}

/// The first entry that differs, so a report says *what* changed, not just that it did.
fn first_difference(expected: &SchemaInventory, actual: &SchemaInventory) -> String {
    let lists = [
        ("column", &expected.columns, &actual.columns),
        ("view", &expected.views, &actual.views),
        ("constraint", &expected.constraints, &actual.constraints),
    ];
    for (kind, want, got) in lists {
        let want_set: BTreeSet<_> = want.iter().collect();
        let got_set: BTreeSet<_> = got.iter().collect();
        if let Some(missing) = want_set.difference(&got_set).next() {
            return format!("missing {kind} `{missing}`");
        }
        if let Some(extra) = got_set.difference(&want_set).next() {
            return format!("unexpected {kind} `{extra}`");
        }
        if want != got {
            return format!("{kind}s in a different order");
        }
    }
    "differs".into()
}

/// `orphans:<reference>` per reference. The queries run as one batch, so each check is given
/// an equal share of the batch's time.
fn orphan_checks(conn: &Connection, report: &mut IntegrityReport) {
    let start = Instant::now();
    match inspect::orphan_counts(conn) {
        Ok(counts) => {
            let share = start.elapsed() / u32::try_from(counts.len().max(1)).unwrap_or(1);
            for c in counts {
                report.push(
                    format!("orphans:{}", c.name()),
                    c.orphans == 0,
                    "0 orphans",
                    format!("{} orphans", c.orphans),
                    share,
                );
            }
        }
        Err(e) => report.push(
            "orphans",
            false,
            "0 orphans",
            e.public_message(),
            start.elapsed(),
        ),
    }
}

mod duration_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_passes_only_when_every_check_does() {
        let mut r = IntegrityReport::default();
        assert!(!r.passed(), "an empty report proves nothing");
        r.push("a", true, "x", "x", Duration::ZERO);
        assert!(r.passed());
        r.run("b", || (false, "1".into(), "2".into()));
        assert!(!r.passed());
        assert_eq!(
            r.failures().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        let json = serde_json::to_string(&r).expect("json");
        let back: IntegrityReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.checks.len(), 2);
    }

    /// The small tables share one statement; a table missing from the file sends them back to
    /// one scan each, so each check still says what is wrong with its own table.
    #[test]
    fn each_table_of_a_shared_scan_is_its_own_check() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE a AS SELECT range AS x FROM range(10);
             CREATE TABLE b AS SELECT range AS x FROM range(20);
             CREATE TABLE c AS SELECT range AS x FROM range(5);",
        )
        .expect("tables");
        let a = inspect::scan_table(&conn, "a").expect("a");
        let mut b = inspect::scan_table(&conn, "b").expect("b");
        b.rows += 1;
        let schema = inspect::schema_inventory(&conn).expect("schema");
        let mut expected = Fingerprints::new();
        expected.insert("a".into(), a);
        expected.insert("b".into(), b);
        // Only the scans matter here (the orphan queries need the LNRS tables).
        let scans = |r: &IntegrityReport| -> Vec<(String, String)> {
            r.failures()
                .filter(|c| c.name.starts_with("scan:"))
                .map(|c| (c.name.clone(), c.actual.clone()))
                .collect()
        };
        let report = check_database(&conn, &expected, &schema);
        let failed = scans(&report);
        assert_eq!(failed.len(), 1, "{report:?}");
        assert_eq!(failed[0].0, "scan:b", "{report:?}");
        assert!(report.checks.iter().any(|c| c.name == "scan:a" && c.passed));
        // A table no fingerprint expects is found by the listing and scanned all the same.
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.name == "scan:c" && c.passed && c.expected == "full scan readable"),
            "{report:?}"
        );

        expected.insert("ghost".into(), a);
        let report = check_database(&conn, &expected, &schema);
        let failed = scans(&report);
        assert_eq!(failed.len(), 2, "{report:?}");
        assert_eq!(failed[0].0, "scan:b", "{report:?}");
        assert_eq!(failed[1], ("scan:ghost".into(), "table missing".into()));
        assert!(report.checks.iter().any(|c| c.name == "scan:a" && c.passed));
    }

    #[test]
    fn schema_difference_is_named() {
        let want = SchemaInventory {
            columns: vec!["t.a INTEGER".into(), "t.b VARCHAR".into()],
            ..Default::default()
        };
        let got = SchemaInventory {
            columns: vec!["t.a INTEGER".into()],
            ..Default::default()
        };
        let (ok, _, actual) = compare_schema(&want, Ok(got));
        assert!(!ok);
        assert!(actual.contains("missing column `t.b VARCHAR`"), "{actual}");
    }
}
