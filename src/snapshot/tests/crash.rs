//! Crash and fault-injection tests. Each case re-runs this test executable as a child process
//! (the `#[ignore]`d [`crash_child`]) with `LNRS_FAILPOINTS=<point>=abort|error`: it commits a
//! snapshot, forgets the old one, runs GC and assembles, and either dies at the fail point
//! (like `kill -9`) or checks the injected error itself. The parent then opens the store and
//! checks it opens, lists consistently, verifies, and still works. Fail points are
//! process-global, which is why even the `error` cases run in a child.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use super::fixtures::Db;
use crate::snapshot::{ListFilter, NewSnapshot, SnapshotError, SnapshotId, SnapshotStore};

const CHILD_ENV: &str = "LNRS_SNAPSHOT_CRASH_CHILD";

/// What the store must hold after a crash at each point: the old snapshot only, both, or the
/// new one only.
#[derive(Debug, Clone, Copy, PartialEq)]
enum After {
    Old,
    Both,
    New,
}

const ABORT_CASES: &[(&str, After)] = &[
    ("snapshot.after_capture", After::Old),
    ("snapshot.after_hash", After::Old),
    ("snapshot.after_blocks", After::Old),
    ("snapshot.before_manifest_rename", After::Old),
    ("snapshot.after_manifest", After::Both),
    ("snapshot.forget_after_unlink", After::New),
    ("snapshot.gc_mid_sweep", After::New),
    ("snapshot.assemble_before_sync", After::New),
];

/// The child's work; only runs when spawned by a parent test.
#[test]
#[ignore = "run as a child process by the crash tests"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let points = std::env::var("LNRS_FAILPOINTS").unwrap_or_default();
    crate::fault::configure(&points).expect("fail points");
    let (mode, rest) = spec.split_once('|').expect("mode");
    let (db, root) = rest.split_once('|').expect("paths");
    let store = SnapshotStore::open(Path::new(root)).expect("open store");
    match mode {
        "run" => child_run(&store, Path::new(db)),
        "inject" => child_inject(&store, Path::new(db), &points),
        other => panic!("unknown mode {other}"),
    }
}

/// Commit a new snapshot, forget the old one, sweep, assemble: an abort point stops it.
fn child_run(store: &SnapshotStore, db: &Path) {
    let old = oldest(store);
    let capture = store.capture(db).expect("capture");
    let new = store.commit(capture, child_meta()).expect("commit");
    store.forget(&old).expect("forget");
    store.gc().expect("gc");
    let out = db.with_extension("assembled");
    store.assemble(&new.id, &out).expect("assemble");
}

/// With `<point>=error`: the operation fails with the injected error and leaves the store
/// consistent in this very process.
fn child_inject(store: &SnapshotStore, db: &Path, points: &str) {
    let point = points.split('=').next().expect("point");
    let capture = store.capture(db);
    let result = capture.and_then(|c| store.commit(c, child_meta()));
    assert!(
        matches!(&result, Err(SnapshotError::Injected(p)) if *p == point),
        "{result:?}"
    );
    let want = if point == "snapshot.after_manifest" {
        2
    } else {
        1
    };
    assert_eq!(store.stats().snapshot_count, want, "{point}");
    assert_tmp_empty(store.root());
    assert_consistent(store);
    store.gc().expect("gc");
    assert_eq!(store.stats().unreferenced_blocks, 0);
    assert_consistent(store);
}

fn child_meta() -> NewSnapshot {
    NewSnapshot {
        meta: crate::snapshot::SnapshotMeta {
            description: "crash child".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn oldest(store: &SnapshotStore) -> SnapshotId {
    let items = store.list(&ListFilter::default()).items;
    items.last().expect("a snapshot").summary.id.clone()
}

fn assert_tmp_empty(root: &Path) {
    let left: Vec<_> = fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "stray temp files: {left:?}");
}

/// Every listed snapshot reads back and passes a quick verify.
fn assert_consistent(store: &SnapshotStore) {
    let page = store.list(&ListFilter::default());
    assert_eq!(page.total_count, store.stats().snapshot_count);
    for item in page.items {
        let m = store
            .get(&item.summary.id)
            .expect("listed snapshot has a manifest");
        assert_eq!(m.file_len, item.logical_bytes);
        let report = store.verify_quick(&m.id).expect("verify");
        assert!(report.passed(), "{report:#?}");
    }
}

/// A database with one snapshot (the "old" state) and a changed file for the child to take.
fn setup() -> (Db, SnapshotId) {
    let db = Db::small(40_000);
    let store = db.store();
    let old = db.snapshot(&store, None).id;
    for i in 0..50 {
        db.delete_measure(i * 797);
    }
    crate::storage::checkpoint(&db.conn).expect("checkpoint");
    (db, old)
}

fn spawn_child(mode: &str, db: &Db, failpoints: &str) -> std::process::Output {
    let exe = std::env::current_exe().expect("test executable");
    let module = module_path!();
    let test = format!(
        "{}::crash_child",
        module.split_once("::").map_or(module, |(_, rest)| rest)
    );
    let spec = format!("{mode}|{}|{}", db.path.display(), db.store_root().display());
    Command::new(exe)
        .args([
            test.as_str(),
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .env("LNRS_FAILPOINTS", failpoints)
        .output()
        .expect("spawn child")
}

#[test]
fn killed_at_every_step_the_store_opens_lists_and_verifies() {
    for &(point, after) in ABORT_CASES {
        let (db, old) = setup();
        let out = spawn_child("run", &db, &format!("{point}=abort"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{point}: child did not die at the fail point: {stderr}"
        );
        assert!(stderr.contains(point), "{point}: {stderr}");

        let store = SnapshotStore::open(&db.store_root()).expect("store opens after a crash");
        assert_tmp_empty(store.root());
        let ids: Vec<_> = store
            .list(&ListFilter::default())
            .items
            .into_iter()
            .map(|i| i.summary.id)
            .collect();
        let has_old = ids.contains(&old);
        let expected = match after {
            After::Old => (1, true),
            After::Both => (2, true),
            After::New => (1, false),
        };
        assert_eq!((ids.len(), has_old), expected, "{point}: {ids:?}");
        assert_consistent(&store);
        if has_old {
            assert!(store.verify_deep(&old).expect("deep").passed(), "{point}");
        }
        // The store keeps working: GC leaves only referenced blocks, a new commit succeeds.
        store.gc().expect("gc");
        assert_eq!(store.stats().unreferenced_blocks, 0, "{point}");
        let m = db.snapshot(&store, None);
        assert!(store.verify_deep(&m.id).expect("deep").passed(), "{point}");
        assert_consistent(&store);
    }
}

#[test]
fn injected_errors_leave_a_consistent_store() {
    for point in [
        "snapshot.after_capture",
        "snapshot.after_hash",
        "snapshot.after_blocks",
        "snapshot.before_manifest_rename",
        "snapshot.after_manifest",
    ] {
        let (db, _) = setup();
        let out = spawn_child("inject", &db, &format!("{point}=error"));
        assert!(
            out.status.success(),
            "{point}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 passed"),
            "{point}: child ran nothing: {stdout}"
        );
    }
}
