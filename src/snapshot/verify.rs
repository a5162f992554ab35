//! Integrity reports and the checks behind them: the stored-data checks of a quick verify
//! (blocks present, block hashes, whole-file hash) and [`check_database`], the logical checks
//! of an open database (full scans against fingerprints, schema inventory, orphan queries) that
//! deep verify and restore share.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use duckdb::Connection;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::domain::fingerprint::Fingerprints;
use crate::storage::inspect::{self, SchemaInventory};

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
    conn: &Connection,
    expected_fingerprints: &Fingerprints,
    expected_schema: &SchemaInventory,
) -> IntegrityReport {
    let mut report = IntegrityReport::default();
    let start = Instant::now();
    let mut jobs = vec![Job::Schema, Job::Orphans];
    let present = match inspect::all_tables(conn) {
        Ok(present) => {
            let names: BTreeSet<&str> = present
                .iter()
                .map(String::as_str)
                .chain(expected_fingerprints.keys().map(String::as_str))
                .collect();
            jobs.extend(names.into_iter().map(|t| Job::Scan(t.to_string())));
            present
        }
        Err(e) => {
            report.push(
                "list_tables",
                false,
                "tables listed",
                e.public_message(),
                start.elapsed(),
            );
            Vec::new()
        }
    };
    let results = run_jobs(conn, &jobs, |c, job| {
        let mut r = IntegrityReport::default();
        match job {
            Job::Scan(table) => r.run(format!("scan:{table}"), || {
                scan_check(c, table, &present, expected_fingerprints)
            }),
            Job::Schema => r.run("schema_inventory", || {
                compare_schema(expected_schema, inspect::schema_inventory(c))
            }),
            Job::Orphans | Job::Counts => orphan_checks(c, &mut r),
        }
        r
    });
    // Reported in the conventional order: scans, schema, orphans.
    let mut results = results.into_iter();
    let head: Vec<IntegrityReport> = results.by_ref().take(2).collect();
    for r in results.chain(head) {
        report.extend(r);
    }
    report
}

/// The cheap checks of a database file that is byte for byte one that already passed
/// [`check_database`] (a restore after its swap): it opens with the expected schema and every
/// user table has the expected row count (answered from metadata).
pub fn check_replaced(
    conn: &Connection,
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
    Scan(String),
    Schema,
    Orphans,
    Counts,
}

/// Runs `jobs` on two connections to the same database (the caller's and a clone), in parallel:
/// most checks are small queries whose fixed per-statement cost would otherwise add up
/// serially. Results come back in job order.
pub fn run_jobs<J: Sync>(
    conn: &Connection,
    jobs: &[J],
    f: impl Fn(&Connection, &J) -> IntegrityReport + Sync,
) -> Vec<IntegrityReport> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<IntegrityReport>> = jobs.iter().map(|_| Mutex::default()).collect();
    let work = |c: &Connection| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { break };
        *slots[i].lock() = f(c, job);
    };
    std::thread::scope(|s| {
        if let Ok(second) = conn.try_clone() {
            let work = &work;
            s.spawn(move || work(&second));
        }
        work(conn);
    });
    slots.into_iter().map(Mutex::into_inner).collect()
}

/// `scan:<table>`: a full scan's count and hash against the manifest's fingerprint.
fn scan_check(
    conn: &Connection,
    table: &str,
    present: &[String],
    expected: &Fingerprints,
) -> (bool, String, String) {
    let want = expected.get(table);
    let expected_text = want.map_or_else(|| "full scan readable".to_string(), |f| f.to_string());
    if !present.iter().any(|t| t == table) {
        return (false, expected_text, "table missing".into());
    }
    match inspect::scan_table(conn, table) {
        Ok(got) => (
            want.is_none_or(|w| *w == got),
            expected_text,
            got.to_string(),
        ),
        Err(e) => (
            false,
            expected_text,
            format!("scan failed: {}", e.public_message()),
        ),
    }
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
