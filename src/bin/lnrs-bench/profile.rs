//! Where a pre-delete snapshot's time goes, phase by phase, with the server's own code on a
//! private copy of the dataset (no server, no gRPC, one thread driving): a small link delete
//! in a transaction (the MAPG rows of one MAP link, then the link — what DeleteLink's cascade
//! removes), then `storage::checkpoint` (CHECKPOINT + empty-WAL check), `SnapshotStore::capture`
//! (the file read) and `SnapshotStore::commit_timed` (hash, compress, write + fsync, publish).
//!
//! The server's histograms give bucketed totals; this gives exact per-phase medians.
//! The first snapshot stores every block and is not counted.

use std::path::Path;
use std::time::{Duration, Instant};

use duckdb::params;
use lnrs::snapshot::{NewSnapshot, SnapshotStore};
use serde::Serialize;

use crate::harness::{fail, Res};
use crate::stats::{median, SplitMix};

/// Median milliseconds per phase, and what the commits wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseProfile {
    pub reps: usize,
    pub delete_txn_ms: f64,
    /// CHECKPOINT + WAL check (writer blocked).
    pub checkpoint_ms: f64,
    /// Read of the whole file into the pooled buffer (writer blocked).
    pub capture_read_ms: f64,
    pub hash_ms: f64,
    pub compress_ms: f64,
    /// Block files + manifest temp written and fsync'd.
    pub write_ms: f64,
    /// Manifest rename + directory fsync + catalog.
    pub publish_ms: f64,
    pub commit_total_ms: f64,
    /// CHECKPOINT + WAL check: what the writer waits for before the cascade can start (the
    /// file read then runs on the snapshot thread, alongside the cascade).
    pub writer_blocked_ms: f64,
    /// File read + commit: the snapshot thread's work, which the delete joins before COMMIT.
    pub snapshot_thread_ms: f64,
    pub new_blocks_per_snapshot: f64,
    pub new_bytes_per_snapshot: f64,
    pub file_bytes: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `reps` delete + snapshot cycles on a copy of `db` inside `dir`.
pub fn run(db: &Path, dir: &Path, reps: usize) -> Res<PhaseProfile> {
    let live = dir.join("profile.duckdb");
    std::fs::copy(db, &live)?;
    let conn = lnrs::storage::open(&live)?;
    let store = SnapshotStore::open(&dir.join("snapshots"))?;
    let mut keys: Vec<(i32, i32, i32)> = conn
        .prepare("SELECT measure_id, area_id, priority_id FROM measure_area_priority ORDER BY ALL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    SplitMix::new(11).shuffle(&mut keys);
    if keys.len() < reps {
        return Err(fail("not enough MAP links to profile"));
    }
    let snapshot = |store: &SnapshotStore| -> Res<_> {
        let t0 = Instant::now();
        lnrs::storage::checkpoint(&conn)?;
        let t1 = Instant::now();
        let capture = store.capture(&live)?;
        let t2 = Instant::now();
        let file_bytes = capture.len();
        let (_, timings) = store.commit_timed(capture, NewSnapshot::default())?;
        Ok((t1 - t0, t2 - t1, timings, file_bytes))
    };
    snapshot(&store)?;
    let mut cols: [Vec<f64>; 10] = Default::default();
    let mut file_bytes = 0;
    for &(m, a, p) in keys.iter().take(reps) {
        let t0 = Instant::now();
        conn.execute_batch("BEGIN TRANSACTION")?;
        conn.execute(
            "DELETE FROM measure_area_priority_grant WHERE measure_id = ? AND area_id = ? AND priority_id = ?",
            params![m, a, p],
        )?;
        conn.execute(
            "DELETE FROM measure_area_priority WHERE measure_id = ? AND area_id = ? AND priority_id = ?",
            params![m, a, p],
        )?;
        conn.execute_batch("COMMIT")?;
        let txn = t0.elapsed();
        let (checkpoint, read, t, bytes) = snapshot(&store)?;
        file_bytes = bytes;
        for (col, v) in cols.iter_mut().zip([
            ms(txn),
            ms(checkpoint),
            ms(read),
            ms(t.hash),
            ms(t.compress),
            ms(t.write),
            ms(t.publish),
            ms(t.total),
            t.new_blocks as f64,
            t.new_bytes as f64,
        ]) {
            col.push(v);
        }
    }
    let thread: Vec<f64> = cols[2].iter().zip(&cols[7]).map(|(a, b)| a + b).collect();
    drop(conn);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(PhaseProfile {
        reps,
        delete_txn_ms: median(&cols[0]),
        checkpoint_ms: median(&cols[1]),
        capture_read_ms: median(&cols[2]),
        hash_ms: median(&cols[3]),
        compress_ms: median(&cols[4]),
        write_ms: median(&cols[5]),
        publish_ms: median(&cols[6]),
        commit_total_ms: median(&cols[7]),
        writer_blocked_ms: median(&cols[1]),
        snapshot_thread_ms: median(&thread),
        new_blocks_per_snapshot: median(&cols[8]),
        new_bytes_per_snapshot: median(&cols[9]),
        file_bytes,
    })
}
