//! Store behaviour on real DuckDB files.

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;

use super::fixtures::{meta_of, Db};
use crate::snapshot::{
    AnnotationUpdate, ListFilter, NewSnapshot, Operation, RetentionPolicy, RetentionReason,
    SnapshotError, SnapshotId, SnapshotStore, StorageFault,
};

#[test]
fn create_assemble_round_trip_is_byte_identical_and_verifies() {
    let db = Db::small(5_000);
    let store = db.store();
    let m = db.snapshot(&store, None);
    let original = fs::read(&db.path).expect("read live");
    assert_eq!(m.file_len, original.len() as u64);
    assert_eq!(m.file_blake3, blake3::hash(&original));

    let out = db.dir.path().join("assembled.duckdb");
    store.assemble(&m.id, &out).expect("assemble");
    assert_eq!(fs::read(&out).expect("read assembled"), original);

    let quick = store.verify_quick(&m.id).expect("quick");
    assert!(quick.passed(), "{quick:#?}");
    let deep = store.verify_deep(&m.id).expect("deep");
    assert!(deep.passed(), "{deep:#?}");
    let names: Vec<_> = deep.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "manifest",
        "blocks_present",
        "block_hashes",
        "file_hash",
        "header",
        "storage_version",
        "open_read_only",
        "scan:measure",
        "scan:lnrs_event_log",
        "schema_inventory",
        "orphans:measure_has_type(measure_id) -> measure",
    ] {
        assert!(names.contains(&want), "missing check {want}: {names:?}");
    }
    let scan = deep
        .checks
        .iter()
        .find(|c| c.name == "scan:measure")
        .expect("scan check");
    assert!(scan.expected.starts_with("5000 rows, hash "), "{scan:?}");
    assert_eq!(scan.expected, scan.actual);
    assert!(
        fsio_is_empty(&db.store_root().join("tmp")),
        "deep verify cleans up"
    );
    assert_eq!(store.last_verify(&m.id).map(|v| v.passed), Some(true));
}

fn fsio_is_empty(dir: &std::path::Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// The headline numbers: ten snapshots around small deletes cost less than one file, and each
/// adds only a few blocks (timings are the benchmark's business: `lnrs-bench`).
#[test]
fn small_deletes_add_few_blocks_and_ten_snapshots_cost_less_than_one_file() {
    let db = Db::big();
    let store = db.store();
    let file_len = db.snapshot(&store, None).file_len;
    for i in 1..10 {
        let before = store.stats();
        db.delete_measure(i * 20_011);
        let meta = db.meta(Operation::Delete, Some(i * 20_011));
        crate::storage::checkpoint(&db.conn).expect("checkpoint");
        let capture = store.capture(&db.path).expect("capture");
        store.commit(capture, meta).expect("commit");
        let added = store.stats().block_count - before.block_count;
        assert!(added <= 20, "a one-row delete added {added} blocks");
    }
    let stats = store.stats();
    assert_eq!(stats.snapshot_count, 10);
    assert!(
        stats.stored_bytes < file_len,
        "stored {} >= one file {}",
        stats.stored_bytes,
        file_len
    );
    let newest = store.list(&ListFilter::default()).items[0]
        .summary
        .id
        .clone();
    assert!(store.verify_deep(&newest).expect("deep").passed());
}

#[test]
fn checkpoint_makes_committed_but_unflushed_rows_part_of_the_snapshot() {
    let db = Db::small(100);
    let store = db.store();
    db.conn
        .execute_batch("INSERT INTO measure_type VALUES (999, 'only in the WAL')")
        .expect("insert");
    let m = db.snapshot(&store, None);
    let out = db.dir.path().join("check.duckdb");
    store.assemble(&m.id, &out).expect("assemble");
    let copy = duckdb::Connection::open(&out).expect("open copy");
    let n: i64 = copy
        .query_row(
            "SELECT count(*) FROM measure_type WHERE measure_type_id = 999",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(n, 1);
}

#[test]
fn deep_verify_catches_fingerprint_and_orphan_mismatches() {
    let db = Db::small(1_000);
    let store = db.store();
    let mut meta = db.meta(Operation::Manual, None);
    meta.fingerprints
        .get_mut("measure")
        .expect("measure fingerprint")
        .rows += 1;
    // An orphan: a link whose measure does not exist.
    db.conn
        .execute_batch("INSERT INTO measure_has_type VALUES (123456, 1)")
        .expect("orphan");
    crate::storage::checkpoint(&db.conn).expect("checkpoint");
    let m = store
        .commit(store.capture(&db.path).expect("capture"), meta)
        .expect("commit");
    assert!(store.verify_quick(&m.id).expect("quick").passed());
    let deep = store.verify_deep(&m.id).expect("deep");
    let failed: Vec<_> = deep.failures().map(|c| c.name.clone()).collect();
    assert!(failed.contains(&"scan:measure".to_string()), "{failed:?}");
    assert!(
        failed.contains(&"orphans:measure_has_type(measure_id) -> measure".to_string()),
        "{failed:?}"
    );
    assert_eq!(store.last_verify(&m.id).map(|v| v.passed), Some(false));
}

/// A table of large rows (a BLOB column) spanning several DuckDB vectors is scanned in parts
/// on two connections: the parts add up to the whole table, reported as one check that still
/// catches a single differing row.
#[test]
fn a_table_scanned_in_parts_is_one_exact_check() {
    let db = Db::small(100);
    db.conn
        .execute_batch(
            "INSERT INTO area VALUES (1, 'a', 'd', NULL, NULL, NULL);
             INSERT INTO area_geom SELECT range, 'p', repeat(md5(range::VARCHAR), 20)::BLOB, 1
             FROM range(7000);",
        )
        .expect("geometry");
    let store = db.store();
    let m = db.snapshot(&store, None);
    let deep = store.verify_deep(&m.id).expect("deep");
    assert!(deep.passed(), "{deep:?}");
    let scans = deep
        .checks
        .iter()
        .filter(|c| c.name == "scan:area_geom")
        .count();
    assert_eq!(scans, 1, "{deep:?}");

    let mut meta = db.meta(Operation::Manual, None);
    let geom = meta.fingerprints.get_mut("area_geom").expect("fingerprint");
    geom.hash_sum = geom.hash_sum.wrapping_add(1);
    crate::storage::checkpoint(&db.conn).expect("checkpoint");
    let off = store
        .commit(store.capture(&db.path).expect("capture"), meta)
        .expect("commit");
    let deep = store.verify_deep(&off.id).expect("deep");
    let failed: Vec<_> = deep.failures().map(|c| c.name.clone()).collect();
    assert_eq!(failed, ["scan:area_geom"], "{deep:?}");
}

#[test]
fn a_damaged_block_is_reported_and_rewritten_by_the_next_commit() {
    let db = Db::small(2_000);
    let store = db.store();
    let m = db.snapshot(&store, None);
    let victim = m.blocks[m.blocks.len() / 2];
    let path = store_block_path(&db, &victim.hash);
    let mut bytes = fs::read(&path).expect("read block");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).expect("damage");

    let report = store.verify_quick(&m.id).expect("verify");
    assert!(!report.passed());
    let failed: Vec<_> = report.failures().map(|c| c.name.as_str()).collect();
    assert!(failed.contains(&"block_hashes"), "{failed:?}");
    let out = db.dir.path().join("x.duckdb");
    assert!(matches!(
        store.assemble(&m.id, &out),
        Err(SnapshotError::Corrupt { .. })
    ));
    assert!(!out.exists(), "a failed assemble leaves no file");

    // Same content again: the commit must not trust the damaged copy.
    let again = db.snapshot(&store, None);
    assert!(again.blocks.iter().any(|b| b.hash == victim.hash));
    assert!(store.verify_quick(&m.id).expect("verify").passed());
    assert!(store.verify_quick(&again.id).expect("verify").passed());
}

fn store_block_path(db: &Db, hash: &blake3::Hash) -> std::path::PathBuf {
    let hex = hash.to_hex();
    db.store_root()
        .join("blocks")
        .join(&hex[..2])
        .join(format!("{hex}.zst"))
}

#[test]
fn catalog_survives_a_corrupt_missing_or_stale_index() {
    let db = Db::small(500);
    let ids: Vec<_> = {
        let store = db.store();
        (0..3).map(|i| db.snapshot(&store, Some(i)).id).collect()
    };
    let index = db.store_root().join("index.json");
    let listed = |store: &SnapshotStore| -> Vec<SnapshotId> {
        let mut v: Vec<_> = store
            .list(&ListFilter::default())
            .items
            .into_iter()
            .map(|i| i.summary.id)
            .collect();
        v.reverse();
        v
    };

    // Damaged index.
    let mut bytes = fs::read(&index).expect("index");
    bytes[20] ^= 1;
    fs::write(&index, &bytes).expect("damage");
    assert_eq!(listed(&db.store()), ids);
    // Missing index.
    fs::remove_file(&index).expect("rm");
    assert_eq!(listed(&db.store()), ids);
    // Stale index: a snapshot committed after the index was written (crash before persist).
    let stale = fs::read(&index).expect("index");
    let newest = {
        let store = db.store();
        db.snapshot(&store, Some(9)).id
    };
    fs::write(&index, &stale).expect("restore stale");
    let store = db.store();
    let mut want = ids.clone();
    want.push(newest);
    assert_eq!(listed(&store), want);
    // Index naming a snapshot whose manifest is gone.
    drop(store);
    fs::remove_file(
        db.store_root()
            .join("manifests")
            .join(format!("{}.json", want[0])),
    )
    .expect("rm manifest");
    assert_eq!(listed(&db.store()), want[1..].to_vec());
}

#[test]
fn stray_temp_files_are_removed_at_open_and_a_second_open_is_refused() {
    let db = Db::small(10);
    let root = db.store_root();
    drop(db.store());
    fs::write(root.join("tmp").join("half-written.zst.tmp"), b"junk").expect("junk");
    fs::create_dir(root.join("tmp").join("junkdir")).expect("junk dir");
    let store = db.store();
    assert!(fsio_is_empty(&root.join("tmp")));
    assert!(matches!(
        SnapshotStore::open(&root),
        Err(SnapshotError::Locked(_))
    ));
    assert_eq!(
        SnapshotStore::open(&root)
            .map(|_| ())
            .map_err(|e| e.reason()),
        Err("SNAPSHOT_STORE_LOCKED")
    );
    drop(store);
}

#[test]
fn list_filters_and_sizes() {
    let db = Db::small(2_000);
    let store = db.store();
    db.snapshot(&store, None);
    for i in [5, 6, 7] {
        db.delete_measure(i);
        db.snapshot(&store, Some(i));
    }
    let all = store.list(&ListFilter::default());
    assert_eq!(all.total_count, 4);
    assert!(all
        .items
        .windows(2)
        .all(|w| w[0].summary.id > w[1].summary.id));
    let by_entity = store.list(&ListFilter {
        entity_type: Some("measure".into()),
        entity_id: Some("6".into()),
        ..Default::default()
    });
    assert_eq!(by_entity.items.len(), 1);
    assert_eq!(
        by_entity.items[0].summary.meta.entity_id.as_deref(),
        Some("6")
    );
    let manual = store.list(&ListFilter {
        operation: Some(Operation::Manual),
        ..Default::default()
    });
    assert_eq!(manual.total_count, 1);
    let newest_time = all.items[0].summary.created_at;
    let before_newest = store.list(&ListFilter {
        created_before: Some(newest_time),
        ..Default::default()
    });
    assert_eq!(before_newest.total_count, 3);
    let since_newest = store.list(&ListFilter {
        created_after: Some(newest_time),
        ..Default::default()
    });
    assert_eq!(since_newest.total_count, 1);
    for item in &all.items {
        assert_eq!(item.logical_bytes, item.summary.file_len);
        assert!(item.unique_stored_bytes <= item.stored_bytes);
    }
    let stats = store.stats();
    assert_eq!(
        stats.logical_bytes,
        all.items.iter().map(|i| i.logical_bytes).sum::<u64>()
    );
}

#[test]
fn ids_from_callers_are_checked_and_unknown_ids_are_not_found() {
    let db = Db::small(10);
    let store = db.store();
    assert!(matches!(
        SnapshotId::parse("../x"),
        Err(SnapshotError::InvalidId)
    ));
    let ghost = SnapshotId::parse("20200101T000000.000000Z-00000000").expect("id");
    for r in [
        store.get(&ghost).map(|_| ()),
        store.verify_quick(&ghost).map(|_| ()),
        store.verify_deep(&ghost).map(|_| ()),
        store.forget(&ghost),
        store.assemble(&ghost, &db.dir.path().join("g")),
    ] {
        assert_eq!(r.map_err(|e| e.reason()), Err("SNAPSHOT_NOT_FOUND"));
    }
}

#[test]
fn retention_keeps_newest_verified_and_pinned_and_dry_run_changes_nothing() {
    let db = Db::small(3_000);
    let store = db.store();
    let ids: Vec<_> = (0..8)
        .map(|i| {
            db.delete_measure(i);
            db.snapshot(&store, Some(i)).id
        })
        .collect();
    assert!(store.verify_quick(&ids[2]).expect("verify").passed());
    let pin = store.pin(&ids[0]);
    assert!(matches!(
        store.forget(&ids[0]),
        Err(SnapshotError::Pinned(_))
    ));
    let policy = RetentionPolicy {
        keep_last: 3,
        keep_within: None,
    };
    let dry = store.apply_retention(&policy, true).expect("dry run");
    assert_eq!(dry.removed.len(), 3);
    assert!(dry.gc.is_none());
    assert_eq!(store.stats().snapshot_count, 8);

    let before = store.stats();
    let done = store.apply_retention(&policy, false).expect("retention");
    let kept: HashSet<_> = done.kept.iter().map(|d| d.id.clone()).collect();
    let want: HashSet<_> = [&ids[7], &ids[6], &ids[5], &ids[2], &ids[0]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(kept, want);
    let reasons = |id: &SnapshotId| {
        done.kept
            .iter()
            .find(|d| &d.id == id)
            .map(|d| d.reasons.clone())
            .unwrap_or_default()
    };
    assert!(reasons(&ids[2]).contains(&RetentionReason::NewestVerified));
    assert!(reasons(&ids[0]).contains(&RetentionReason::Pinned));
    assert!(reasons(&ids[7]).contains(&RetentionReason::Newest));
    let gc = done.gc.expect("gc ran");
    assert!(gc.blocks_removed > 0);
    let after = store.stats();
    assert_eq!(after.snapshot_count, 5);
    assert_eq!(before.stored_bytes - after.stored_bytes, gc.bytes_freed);
    assert_eq!(after.unreferenced_blocks, 0);
    for id in &kept {
        assert!(store.verify_quick(id).expect("verify").passed());
    }
    drop(pin);
    store.forget(&ids[0]).expect("unpinned now");
}

#[test]
fn gc_is_safe_with_concurrent_commits() {
    let db = Db::small(3_000);
    let store = Arc::new(db.store());
    let bytes = fs::read(&db.path).expect("read");
    let meta = meta_of(&db.conn, Operation::Manual, None);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<_> = store
                    .list(&ListFilter::default())
                    .items
                    .into_iter()
                    .map(|i| i.summary.id)
                    .collect();
                for id in ids.iter().skip(1) {
                    let _ = store.forget(id);
                }
                store.gc().expect("gc");
            }
        })
    };
    for round in 0..40u8 {
        let mut variant = bytes.clone();
        // Vary a few blocks so each commit writes something new.
        let at = 12_288 + (round as usize % 4) * 262_144 + 100;
        if at < variant.len() {
            variant[at] = round;
        }
        let capture = store.capture_bytes(&variant).expect("capture");
        let m = store.commit(capture, meta.clone()).expect("commit");
        let report = store.verify_quick(&m.id);
        if let Ok(r) = report {
            // Forgotten by the sweeper in between is fine; a present one must be whole.
            if store.get(&m.id).is_ok() {
                assert!(r.passed(), "{r:#?}");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.join().expect("sweeper");
    store.gc().expect("gc");
    for item in store.list(&ListFilter::default()).items {
        assert!(store
            .verify_quick(&item.summary.id)
            .expect("verify")
            .passed());
    }
    assert_eq!(store.stats().unreferenced_blocks, 0);
}

#[test]
fn degraded_storage_is_a_typed_error() {
    let db = Db::small(10);
    // The root is a file.
    let file = db.dir.path().join("not-a-dir");
    fs::write(&file, b"x").expect("file");
    let err = SnapshotStore::open(&file).expect_err("file as root");
    assert_eq!(err.storage_fault(), Some(StorageFault::NotADirectory));
    let err = SnapshotStore::open(&file.join("below")).expect_err("below a file");
    assert_eq!(err.storage_fault(), Some(StorageFault::NotADirectory));
    assert_eq!(err.reason(), "SNAPSHOT_STORAGE_MISSING");

    // The directory disappears under a running store.
    let store = db.store();
    store.probe().expect("probe ok");
    fs::remove_dir_all(db.store_root()).expect("rm store");
    let err = store.probe().expect_err("probe");
    assert_eq!(err.storage_fault(), Some(StorageFault::Missing));
    crate::storage::checkpoint(&db.conn).expect("checkpoint");
    let capture = store.capture(&db.path).expect("capture");
    let err = store
        .commit(capture, NewSnapshot::default())
        .expect_err("commit");
    assert_eq!(err.reason(), "SNAPSHOT_STORAGE_MISSING");
    assert_eq!(store.stats().snapshot_count, 0);
}

#[test]
fn capture_refuses_a_non_database() {
    let db = Db::small(10);
    let store = db.store();
    let junk = db.dir.path().join("junk");
    fs::write(&junk, vec![7u8; 50_000]).expect("junk");
    let err = store.capture(&junk).expect_err("junk");
    assert_eq!(err.reason(), "SNAPSHOT_SOURCE_INVALID");
    let err = store
        .capture(&db.dir.path().join("absent"))
        .expect_err("absent");
    assert_eq!(err.storage_fault(), Some(StorageFault::Missing));
}

#[test]
fn storage_versions_are_recorded_and_checked() {
    let db = Db::small(10);
    let store = db.store();
    let mut m = db.snapshot(&store, None);
    let engine = store.engine_storage_version().expect("engine version");
    assert_eq!(m.storage_version, engine);
    // DuckDB 2.0 writes storage version 69 (its main header says 999, "deprecated").
    assert!((64..999).contains(&engine), "{engine}");
    assert!(
        m.meta.duckdb_library_version.starts_with('v'),
        "{}",
        m.meta.duckdb_library_version
    );
    store.check_restorable(&m).expect("restorable");
    m.storage_version = engine + 1;
    let err = store.check_restorable(&m).expect_err("too new");
    assert_eq!(err.reason(), "SNAPSHOT_INCOMPATIBLE_STORAGE_VERSION");
}

#[test]
fn pins_are_counted_and_released() {
    let db = Db::small(10);
    let store = db.store();
    let m = db.snapshot(&store, None);
    let a = store.pin(&m.id);
    let b = store.pin(&m.id);
    assert_eq!((store.stats().held, store.stats().pinned), (1, 0));
    let listed = &store.list(&ListFilter::default()).items[0];
    assert!(listed.held && !listed.pinned, "a hold is not a user's pin");
    assert!(matches!(
        store.forget_pinned(&m.id),
        Err(SnapshotError::Pinned(_))
    ));
    drop(a);
    assert!(matches!(store.forget(&m.id), Err(SnapshotError::Pinned(_))));
    drop(b);
    store.forget(&m.id).expect("forget");
    assert_eq!(store.stats().snapshot_count, 0);
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<SnapshotStore>();
    send_sync::<crate::snapshot::PinGuard>();
    send::<crate::snapshot::Capture>();
    send_sync::<SnapshotError>();
}

fn pin(pinned: bool) -> AnnotationUpdate {
    AnnotationUpdate {
        pinned: Some(pinned),
        ..Default::default()
    }
}

#[test]
fn a_users_pin_survives_retention_and_reopen_and_needs_force_to_forget() {
    let db = Db::small(10);
    let ids: Vec<SnapshotId> = {
        let store = db.store();
        let ids: Vec<_> = (0..5).map(|_| db.snapshot(&store, None).id).collect();
        let item = store
            .annotate(
                &ids[0],
                AnnotationUpdate {
                    pinned: Some(true),
                    description: Some("before the spring import".into()),
                    labels: Some([("ticket".to_string(), "9".to_string())].into()),
                },
            )
            .expect("annotate");
        assert!(item.pinned && !item.held);
        assert_eq!(item.summary.meta.description, "before the spring import");
        assert_eq!(store.get(&ids[0]).unwrap().meta.description, "manual None");
        ids
    };
    // Reopened: the record, not the index, carries the annotation.
    fs::remove_file(db.store_root().join("index.json")).expect("drop index");
    let store = db.store();
    let item = store.item(&ids[0]).expect("listed");
    assert!(item.pinned);
    assert_eq!(item.summary.meta.labels["ticket"], "9");
    assert_eq!(store.stats().pinned, 1);
    let policy = RetentionPolicy {
        keep_last: 1,
        keep_within: None,
    };
    let done = store.apply_retention(&policy, false).expect("retention");
    let kept: Vec<_> = done.kept.iter().map(|d| d.id.clone()).collect();
    assert_eq!(kept, vec![ids[4].clone(), ids[0].clone()]);
    assert_eq!(done.kept[1].reasons, vec![RetentionReason::Pinned]);
    assert!(matches!(
        store.forget(&ids[0]),
        Err(SnapshotError::PinnedByUser(_))
    ));
    // Unpinned, the description stays replaced; retention may now remove it.
    let item = store.annotate(&ids[0], pin(false)).expect("unpin");
    assert!(!item.pinned);
    assert_eq!(item.summary.meta.description, "before the spring import");
    let record = db
        .store_root()
        .join("annotations")
        .join(format!("{}.json", ids[0]));
    assert!(record.exists());
    store.apply_retention(&policy, false).expect("retention");
    assert!(store.item(&ids[0]).is_none());
    assert!(!record.exists(), "the annotation goes with its snapshot");
}

#[test]
fn forced_forget_removes_a_pinned_snapshot_and_its_record() {
    let db = Db::small(10);
    let store = db.store();
    let a = db.snapshot(&store, None).id;
    let _b = db.snapshot(&store, None).id;
    store.annotate(&a, pin(true)).expect("pin");
    let record = db
        .store_root()
        .join("annotations")
        .join(format!("{a}.json"));
    assert!(record.exists());
    store.forget_pinned(&a).expect("forced");
    assert!(!record.exists());
    assert_eq!(store.stats().pinned, 0);
    assert!(matches!(
        store.annotate(&a, pin(true)),
        Err(SnapshotError::NotFound(_))
    ));
    // Unpinning everything leaves no record at all.
    let c = db.snapshot(&store, None).id;
    store.annotate(&c, pin(true)).expect("pin");
    store.annotate(&c, pin(false)).expect("unpin");
    assert!(fs::read_dir(db.store_root().join("annotations"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn a_damaged_record_reads_as_pinned_and_an_orphan_is_removed_at_open() {
    let db = Db::small(10);
    let (a, b) = {
        let store = db.store();
        let a = db.snapshot(&store, None).id;
        let b = db.snapshot(&store, None).id;
        let item = store
            .annotate(
                &a,
                AnnotationUpdate {
                    description: Some("x".into()),
                    ..Default::default()
                },
            )
            .expect("annotate");
        assert!(!item.pinned);
        store.annotate(&b, pin(true)).expect("pin");
        store.forget_pinned(&b).expect("forget");
        (a, b)
    };
    let dir = db.store_root().join("annotations");
    let path = dir.join(format!("{a}.json"));
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&path, bytes).unwrap();
    // A record whose manifest is gone (a crash between the two unlinks).
    fs::write(dir.join(format!("{b}.json")), b"{}").unwrap();
    let store = db.store();
    let item = store.item(&a).expect("listed");
    assert!(item.pinned, "damage must not drop a pin");
    assert!(!dir.join(format!("{b}.json")).exists());
    // The next update rewrites the record whole.
    store.annotate(&a, pin(false)).expect("rewrite");
    assert!(!store.item(&a).unwrap().pinned);
}
