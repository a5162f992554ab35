//! Property tests: every single-byte change or truncation of any stored block or manifest is
//! caught by verify (and refused by assemble); GC over random create/forget/reopen sequences
//! frees exactly the unreferenced blocks.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

use super::fixtures::Db;
use crate::snapshot::manifest::{BLOCK_LEN, HEADER_LEN};
use crate::snapshot::{NewSnapshot, SnapshotId, SnapshotStore};

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: Index, xor: u8 },
    Truncate { to: Index },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        1 => any::<Index>().prop_map(|to| Damage::Truncate { to }),
    ]
}

fn apply(path: &Path, original: &[u8], d: &Damage) {
    let bytes = match d {
        Damage::Flip { at, xor } => {
            let mut b = original.to_vec();
            let i = at.index(b.len());
            b[i] ^= xor;
            b
        }
        Damage::Truncate { to } => original[..to.index(original.len())].to_vec(),
    };
    fs::write(path, bytes).expect("damage");
}

fn block_file(root: &Path, hash: &blake3::Hash) -> PathBuf {
    let hex = hash.to_hex();
    root.join("blocks")
        .join(&hex[..2])
        .join(format!("{hex}.zst"))
}

#[test]
fn every_flip_or_truncation_of_a_block_or_manifest_is_detected() {
    let db = Db::small(20_000);
    let store = db.store();
    let m = db.snapshot(&store, None);
    let root = db.store_root();
    let mut files: Vec<PathBuf> = m
        .blocks
        .iter()
        .map(|b| block_file(&root, &b.hash))
        .collect();
    files.sort();
    files.dedup();
    files.push(root.join("manifests").join(format!("{}.json", m.id)));
    let originals: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).expect("read")).collect();
    let out = db.dir.path().join("assembled.duckdb");

    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(any::<Index>(), damage()), |(which, d)| {
        let i = which.index(files.len());
        apply(&files[i], &originals[i], &d);
        let report = store.verify_quick(&m.id).expect("verify runs");
        let assembled = store.assemble(&m.id, &out);
        fs::write(&files[i], &originals[i]).expect("repair");
        prop_assert!(!report.passed(), "{d:?} on {:?} undetected", files[i]);
        prop_assert!(assembled.is_err(), "{d:?} on {:?} assembled", files[i]);
        Ok(())
    });
    result.expect("property");
    assert!(store.verify_quick(&m.id).expect("verify").passed());
}

#[derive(Debug, Clone)]
enum Op {
    /// A file made of the header and these block patterns.
    Create(Vec<u8>),
    Forget(Index),
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u8..8, 1..5).prop_map(Op::Create),
        2 => any::<Index>().prop_map(Op::Forget),
        2 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

/// A synthetic DuckDB-shaped file: a fixed header chunk, then one 256 KiB block per pattern.
fn synthetic_file(patterns: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_LEN];
    bytes[8..12].copy_from_slice(b"DUCK");
    bytes[12..20].copy_from_slice(&64u64.to_le_bytes());
    for &p in patterns {
        let start = bytes.len();
        bytes.resize(start + BLOCK_LEN, p);
        bytes[start..start + 8].copy_from_slice(&u64::from(p).to_le_bytes());
    }
    bytes
}

fn files_on_disk(root: &Path) -> HashSet<String> {
    let mut names = HashSet::new();
    for shard in fs::read_dir(root.join("blocks")).expect("blocks") {
        for f in fs::read_dir(shard.expect("shard").path()).expect("shard") {
            names.insert(f.expect("entry").file_name().to_string_lossy().into_owned());
        }
    }
    names
}

fn referenced(store: &SnapshotStore, ids: &BTreeSet<SnapshotId>) -> HashSet<String> {
    ids.iter()
        .flat_map(|id| store.get(id).expect("manifest").blocks)
        .map(|b| format!("{}.zst", b.hash.to_hex()))
        .collect()
}

fn check_gc(
    store: &SnapshotStore,
    root: &Path,
    ids: &BTreeSet<SnapshotId>,
) -> Result<(), TestCaseError> {
    let before = files_on_disk(root);
    let live = referenced(store, ids);
    let outcome = store.gc().expect("gc");
    let after = files_on_disk(root);
    let removed: HashSet<_> = before.difference(&after).cloned().collect();
    let garbage: HashSet<_> = before.difference(&live).cloned().collect();
    prop_assert_eq!(
        &removed,
        &garbage,
        "GC must free exactly the unreferenced blocks"
    );
    prop_assert_eq!(&after, &live);
    prop_assert_eq!(outcome.blocks_removed, garbage.len());
    Ok(())
}

#[test]
fn gc_frees_exactly_the_unreferenced_blocks() {
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..14), |ops| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let mut store = SnapshotStore::open(&root).expect("open");
        let mut ids: BTreeSet<SnapshotId> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Create(patterns) => {
                    let capture = store
                        .capture_bytes(&synthetic_file(&patterns))
                        .expect("capture");
                    let m = store
                        .commit(capture, NewSnapshot::default())
                        .expect("commit");
                    ids.insert(m.id);
                }
                Op::Forget(i) if !ids.is_empty() => {
                    let id = ids.iter().nth(i.index(ids.len())).cloned().expect("id");
                    store.forget(&id).expect("forget");
                    ids.remove(&id);
                }
                Op::Forget(_) => {}
                Op::Gc => check_gc(&store, &root, &ids)?,
                Op::Reopen => {
                    drop(store);
                    store = SnapshotStore::open(&root).expect("reopen");
                }
            }
            prop_assert_eq!(store.stats().snapshot_count, ids.len());
        }
        check_gc(&store, &root, &ids)?;
        for id in &ids {
            prop_assert!(store.verify_quick(id).expect("verify").passed());
        }
        Ok(())
    });
    result.expect("property");
}
