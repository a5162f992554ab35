//! Self-tests of [`PowerFs`] through plain file I/O on the mount: what a cut keeps and loses
//! in both modes, volatile semantics (unlink while open, truncate, mmap), `EIO` after the cut,
//! and DuckDB's commit and CHECKPOINT on it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::fs::{tree, Mode, Options, PowerFs};

const DEFAULT: Options = Options {
    mode: Mode::Default,
};
const STRICT: Options = Options { mode: Mode::Strict };
const EAGER: Options = Options {
    mode: Mode::EagerNames,
};

/// An image holding `files` (relative path, content).
fn image(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    dir
}

/// Cuts now and returns the durable image's files as strings.
fn cut(pfs: PowerFs) -> Vec<(String, String)> {
    pfs.cut_now();
    durable(pfs)
}

fn durable(pfs: PowerFs) -> Vec<(String, String)> {
    let out = tempfile::tempdir().unwrap();
    pfs.into_durable_image(out.path());
    tree(out.path())
        .into_iter()
        .map(|(p, c)| {
            (
                p.to_string_lossy().into_owned(),
                String::from_utf8(c).unwrap(),
            )
        })
        .collect()
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn an_unsynced_write_is_lost_and_an_fsynced_one_kept() {
    let img = image(&[("a", "old"), ("b", "old")]);
    let pfs = PowerFs::mount(img.path(), DEFAULT);
    let m = pfs.path();
    fs::write(m.join("a"), "new a").unwrap();
    let mut b = OpenOptions::new().write(true).open(m.join("b")).unwrap();
    b.write_all(b"new b").unwrap();
    b.sync_all().unwrap();
    drop(b);
    // Both are visible before the cut (read-your-writes), only b survives it.
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "new a");
    assert_eq!(pfs.fsyncs(), 1);
    assert_eq!(cut(pfs), files(&[("a", "old"), ("b", "new b")]));
}

#[test]
fn a_new_file_survives_an_fsync_in_the_default_mode_only() {
    for (opts, with_dir_sync, expected) in [
        (DEFAULT, false, &[("d/f", "data")][..]),
        (STRICT, false, &[][..]),
        (STRICT, true, &[("d/f", "data")][..]),
    ] {
        let img = image(&[]);
        let pfs = PowerFs::mount(img.path(), opts);
        let d = pfs.path().join("d");
        fs::create_dir(&d).unwrap();
        let mut f = File::create(d.join("f")).unwrap();
        f.write_all(b"data").unwrap();
        f.sync_all().unwrap();
        if with_dir_sync {
            sync_dir(&d);
            sync_dir(pfs.path());
        }
        assert_eq!(
            cut(pfs),
            files(expected),
            "{opts:?} dir sync {with_dir_sync}"
        );
    }
}

#[test]
fn a_rename_needs_a_directory_fsync_in_strict_mode() {
    // (mode, fsync the file after the rename, fsync the directory) -> surviving name
    for (opts, file_sync, dir_sync, name) in [
        (DEFAULT, false, false, "old"),
        (DEFAULT, true, false, "new"),
        (STRICT, true, false, "old"),
        (STRICT, false, true, "new"),
    ] {
        let img = image(&[("old", "v1")]);
        let pfs = PowerFs::mount(img.path(), opts);
        let m = pfs.path().to_path_buf();
        fs::rename(m.join("old"), m.join("new")).unwrap();
        assert!(!m.join("old").exists() && m.join("new").exists());
        if file_sync {
            File::open(m.join("new")).unwrap().sync_all().unwrap();
        }
        if dir_sync {
            sync_dir(&m);
        }
        assert_eq!(
            cut(pfs),
            files(&[(name, "v1")]),
            "{opts:?} file sync {file_sync} dir sync {dir_sync}"
        );
    }
}

#[test]
fn an_atomic_replace_keeps_exactly_one_version() {
    // temp + fsync + rename over + dir fsync: the store's write_atomic.
    let img = image(&[("m.json", "v1"), ("tmp/.keep", "")]);
    let pfs = PowerFs::mount(img.path(), STRICT);
    let m = pfs.path().to_path_buf();
    let mut f = File::create(m.join("tmp/m.json.tmp")).unwrap();
    f.write_all(b"v2").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(m.join("tmp/m.json.tmp"), m.join("m.json")).unwrap();
    sync_dir(&m);
    assert_eq!(cut(pfs), files(&[("m.json", "v2"), ("tmp/.keep", "")]));
}

#[test]
fn eager_names_leave_an_empty_file_after_an_unsynced_rename() {
    for (opts, expected) in [
        (DEFAULT, &[("m.json", "v1")][..]),
        (EAGER, &[("m.json", "")][..]),
    ] {
        let img = image(&[("m.json", "v1")]);
        let pfs = PowerFs::mount(img.path(), opts);
        let m = pfs.path().to_path_buf();
        fs::write(m.join("m.json.tmp"), "v2").unwrap();
        fs::rename(m.join("m.json.tmp"), m.join("m.json")).unwrap();
        assert_eq!(cut(pfs), files(expected), "{opts:?}");
    }
}

#[test]
fn an_unlink_is_volatile_until_the_directory_is_fsynced() {
    for dir_sync in [false, true] {
        let img = image(&[("gone", "x"), ("kept", "y")]);
        let pfs = PowerFs::mount(img.path(), DEFAULT);
        let m = pfs.path().to_path_buf();
        let mut open = File::open(m.join("gone")).unwrap();
        fs::remove_file(m.join("gone")).unwrap();
        assert!(!m.join("gone").exists());
        let mut s = String::new();
        open.read_to_string(&mut s).unwrap();
        assert_eq!(s, "x", "an unlinked open file stays readable");
        drop(open);
        if dir_sync {
            sync_dir(&m);
        }
        let expected: &[(&str, &str)] = if dir_sync {
            &[("kept", "y")]
        } else {
            &[("gone", "x"), ("kept", "y")]
        };
        assert_eq!(cut(pfs), files(expected));
    }
}

#[test]
fn truncate_and_extend_are_visible_at_once_and_durable_after_fsync() {
    for sync in [false, true] {
        let img = image(&[("f", "abcdef")]);
        let pfs = PowerFs::mount(img.path(), STRICT);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(pfs.path().join("f"))
            .unwrap();
        f.set_len(2).unwrap();
        assert_eq!(fs::metadata(pfs.path().join("f")).unwrap().len(), 2);
        assert_eq!(fs::read_to_string(pfs.path().join("f")).unwrap(), "ab");
        f.set_len(4).unwrap();
        assert_eq!(fs::read(pfs.path().join("f")).unwrap(), b"ab\0\0");
        f.set_len(2).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
        drop(f);
        let expected = if sync { "ab" } else { "abcdef" };
        assert_eq!(cut(pfs), files(&[("f", expected)]));
    }
}

#[test]
fn mmap_reads_see_the_written_bytes() {
    let img = image(&[]);
    let pfs = PowerFs::mount(img.path(), DEFAULT);
    let path = pfs.path().join("big");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&path, &bytes).unwrap();
    // blake3 memory-maps the file (as the restore's file hash does).
    let mapped = blake3::Hasher::new().update_mmap(&path).unwrap().finalize();
    assert_eq!(mapped, blake3::hash(&bytes));
    // A clean shutdown keeps everything, unsynced or not.
    let out = tempfile::tempdir().unwrap();
    pfs.into_full_image(out.path());
    assert_eq!(fs::read(out.path().join("big")).unwrap(), bytes);
}

#[test]
fn the_armed_cut_lands_right_after_the_nth_fsync_and_then_everything_is_eio() {
    let img = image(&[]);
    let pfs = PowerFs::mount(img.path(), DEFAULT);
    let m = pfs.path().to_path_buf();
    let base = pfs.fsyncs();
    pfs.arm_cut_after(2);
    let mut f = File::create(m.join("f")).unwrap();
    f.write_all(b"one").unwrap();
    f.sync_all().unwrap();
    f.write_all(b" two").unwrap();
    f.sync_all().expect("the n-th fsync itself succeeds");
    assert!(pfs.is_cut());
    assert_eq!(pfs.fsyncs(), base + 2);
    let err = f
        .write_all(b" three")
        .and_then(|()| f.sync_all())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = File::open(m.join("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    let log = pfs.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POWER CUT after fsync n=2")),
        "{log:#?}"
    );
    assert_eq!(durable(pfs), files(&[("f", "one two")]));
}

#[test]
fn duckdb_keeps_a_committed_row_through_its_wal_and_a_checkpoint_with_a_stale_wal() {
    for checkpoint in [false, true] {
        let img = image(&[]);
        let pfs = PowerFs::mount(img.path(), DEFAULT);
        let db = pfs.path().join("t.duckdb");
        let conn = duckdb::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER, v TEXT);
             BEGIN; INSERT INTO t VALUES (1, 'committed'); COMMIT;",
        )
        .unwrap();
        if checkpoint {
            conn.execute_batch("CHECKPOINT").unwrap();
        }
        // Written but never committed: must not survive.
        conn.execute_batch("BEGIN; INSERT INTO t VALUES (2, 'open');")
            .unwrap();
        assert!(pfs.fsyncs() > 0, "DuckDB fsyncs at commit");
        pfs.cut_now();
        // DuckDB must not run its close path (a checkpoint) against a dead disk in this
        // process: leak the connection; the unmount falls back to lazy + abort.
        #[allow(clippy::mem_forget)]
        std::mem::forget(conn);
        let out = tempfile::tempdir().unwrap();
        pfs.into_durable_image(out.path());
        let names: Vec<_> = tree(out.path()).into_keys().collect();
        // The WAL is there in both cases: after a CHECKPOINT DuckDB unlinks it without a
        // directory fsync, so the stale WAL survives the cut and must not be replayed twice.
        assert!(
            names.iter().any(|n| n.ends_with("t.duckdb.wal")),
            "checkpoint {checkpoint}: {names:?}"
        );
        let conn = duckdb::Connection::open(out.path().join("t.duckdb")).unwrap();
        let rows: Vec<(i32, String)> = conn
            .prepare("SELECT id, v FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![(1, "committed".to_string())],
            "checkpoint {checkpoint}: durable files {names:?}"
        );
    }
}
