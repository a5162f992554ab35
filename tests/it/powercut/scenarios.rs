//! Power cuts against the real server: DeleteMeasure (snapshot-before-delete), CreateSnapshot
//! and RestoreSnapshot, each cut right after its n-th fsync for n = 1..=K (K counted by a
//! calibration run of the same operation) and once right after its answer (K + 1), then the
//! invariants of `common::invariants` on the durable image with a fresh server (no FUSE).
//!
//! Each run first writes one habitat on the mount (so the operation's CHECKPOINT has a WAL to
//! fold in under the cut), then arms the cut. Every delete cut point runs in `cargo test`; the
//! snapshot and restore paths run every phase boundary, K + 1 and a seeded sample (the seed and
//! the points are printed). Environment:
//! - `LNRS_POWERCUT_ALL=1`: every cut point of every path;
//! - `LNRS_POWERCUT_SEED=<u64>`: another sample; `LNRS_POWERCUT_POINTS=3,17`: exactly these;
//! - `LNRS_POWERCUT_VERBOSE=1`: the file system log and both servers' stderr for every point;
//! - `LNRS_POWERCUT_MODE=strict` (entries durable only through a directory fsync) or
//!   `eager` (entries durable at once, data only at fsync): what would break on such a file
//!   system; not part of `cargo test`.

use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::EventKind;
use tonic::transport::Channel;

use super::fs::{Mode, Options, PowerFs};
use crate::common::invariants::{self, Counts, Expected, Marker};
use crate::common::{data_dir_with_reference, table_counts, ChildServer};

/// The measure the delete scenario removes (it has links to cascade).
const MEASURE: i32 = 42;
/// Cut points of the sampled paths run by `cargo test` besides the phase boundaries.
const SAMPLE: usize = 3;
const DEFAULT_SEED: u64 = 11;

/// Cut points that violate an invariant on today's server (issue 11), per path. The test
/// fails on a violation at any other point; once the server is fixed, empty these lists (a
/// listed point that passes is reported, not failed: the fsync order of the snapshot's
/// parallel block writes varies between runs).
const KNOWN_DELETE: &[u64] = &[];
const KNOWN_SNAPSHOT: &[u64] = &[];
const KNOWN_RESTORE: &[u64] = &[];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Delete,
    Snapshot,
    Restore,
}

/// A prepared data directory and what is true in it once a run's `warm_up` wrote its habitat.
struct Template {
    dir: tempfile::TempDir,
    /// Live row counts in the template.
    before: Counts,
    /// Live row counts once the operation is done (delete: minus its impact; restore: the
    /// target's; snapshot: unchanged).
    after: Counts,
    /// Restore: the target snapshot.
    target: String,
    /// Events acknowledged while preparing it.
    acked: Vec<(u64, EventKind, String)>,
}

/// What the operation's response promised.
#[derive(Debug)]
enum Acked {
    Delete {
        seq: u64,
        snapshot: String,
    },
    Snapshot {
        seq: u64,
        id: String,
    },
    Restore {
        seq: u64,
        safety: String,
        rolled_back: bool,
    },
}

fn entity(ch: &Channel) -> pb::entity_service_client::EntityServiceClient<Channel> {
    pb::entity_service_client::EntityServiceClient::new(ch.clone())
}

fn snapshots(ch: &Channel) -> pb::snapshot_service_client::SnapshotServiceClient<Channel> {
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
}

async fn prepare(path: Path) -> Template {
    let dir = data_dir_with_reference();
    let fast_stop = ["--shutdown-drain-delay", "0s"];
    let server = ChildServer::start(dir.path(), "127.0.0.1:0", &fast_stop, &[]).await;
    let ch = server.channel.clone();
    let mut acked = Vec::new();
    let mut target = String::new();
    let mut target_counts = Counts::new();
    let mut impact = Counts::new();
    match path {
        Path::Restore => {
            let r = snapshots(&ch)
                .create_snapshot(pb::CreateSnapshotRequest {
                    description: "restore target".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let snap = r.snapshot.unwrap();
            target = snap.snapshot_id.clone();
            target_counts = snap
                .tables
                .iter()
                .map(|t| (t.table.clone(), t.rows))
                .collect();
            acked.push((r.event_seq, EventKind::SnapshotCreated, target.clone()));
            let h = entity(&ch)
                .create_habitat(pb::CreateHabitatRequest {
                    habitat: Some(pb::Habitat {
                        habitat: "made after the target".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            let id = h.habitat.unwrap().habitat_id.to_string();
            acked.push((h.event_seq, EventKind::EntityCreated, id));
        }
        Path::Delete => {
            // Steady state: the store already holds a snapshot of this data, so the
            // pre-delete snapshot writes only the blocks that differ (a cold store's first
            // snapshot, every block, is the snapshot path's case).
            let r = snapshots(&ch)
                .create_snapshot(pb::CreateSnapshotRequest {
                    description: "steady state".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let id = r.snapshot.unwrap().snapshot_id;
            acked.push((r.event_seq, EventKind::SnapshotCreated, id));
            let r = entity(&ch)
                .get_delete_impact(pb::GetDeleteImpactRequest {
                    target: Some(pb::get_delete_impact_request::Target::MeasureId(MEASURE)),
                })
                .await
                .unwrap()
                .into_inner();
            impact = r
                .tables
                .iter()
                .map(|t| (t.table.clone(), t.rows.len() as i64))
                .collect();
            assert!(impact.len() > 1, "measure {MEASURE} has rows to cascade");
        }
        Path::Snapshot => {}
    }
    server.signal(libc::SIGTERM);
    assert!(server.exit(Duration::from_secs(30)).await.0.success());
    let mut before = table_counts(&dir.path().join("lnrs.duckdb"));
    let mut after: Counts = match path {
        Path::Delete => before
            .iter()
            .map(|(t, n)| (t.clone(), n - impact.get(t).copied().unwrap_or(0)))
            .collect(),
        Path::Snapshot => before.clone(),
        Path::Restore => target_counts,
    };
    // Every run writes one habitat before the cut is armed (see `warm_up`); a restore replaces
    // it with the target's data.
    *before.get_mut("habitat").expect("habitat table") += 1;
    if path != Path::Restore {
        *after.get_mut("habitat").expect("habitat table") += 1;
    }
    Template {
        dir,
        before,
        after,
        target,
        acked,
    }
}

/// One acknowledged write on the mount before the cut is armed: the data file's WAL is not
/// empty, so the operation's CHECKPOINT (pre-delete capture, snapshot, safety snapshot) has
/// work to do under the cut, as on a serving server. Returns its event seq and habitat id.
async fn warm_up(ch: &Channel) -> (u64, String) {
    let r = entity(ch)
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: "written before the cut".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    (r.event_seq, r.habitat.unwrap().habitat_id.to_string())
}

/// Runs the path's operation once; `Err` when it was not acknowledged.
async fn run_op(path: Path, ch: &Channel, tpl: &Template) -> Result<Acked, tonic::Status> {
    Ok(match path {
        Path::Delete => {
            let out = entity(ch)
                .delete_measure(pb::DeleteMeasureRequest {
                    measure_id: MEASURE,
                    request_id: String::new(),
                })
                .await?
                .into_inner()
                .outcome
                .unwrap_or_default();
            Acked::Delete {
                seq: out.event_seq,
                snapshot: out.snapshot_id,
            }
        }
        Path::Snapshot => {
            let r = snapshots(ch)
                .create_snapshot(pb::CreateSnapshotRequest {
                    description: "power cut".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Acked::Snapshot {
                seq: r.event_seq,
                id: r.snapshot.unwrap_or_default().snapshot_id,
            }
        }
        Path::Restore => {
            let r = snapshots(ch)
                .restore_snapshot(pb::RestoreSnapshotRequest {
                    snapshot_id: tpl.target.clone(),
                    confirm_snapshot_id: tpl.target.clone(),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
            Acked::Restore {
                seq: r.event_seq,
                safety: r.safety_snapshot_id,
                rolled_back: r.rolled_back,
            }
        }
    })
}

/// What must hold after a cut, given what was acknowledged.
fn expected(path: Path, tpl: &Template, warm: &(u64, String), acked: Option<&Acked>) -> Expected {
    let mut exp = Expected::default();
    for (seq, kind, id) in &tpl.acked {
        exp.event(*seq, *kind, id);
    }
    exp.event(warm.0, EventKind::EntityCreated, &warm.1);
    let measure = MEASURE.to_string();
    let deleted = || Some(Marker::event(EventKind::EntityDeleted, &measure));
    match (path, acked) {
        (Path::Delete, Some(Acked::Delete { seq, snapshot })) => {
            exp.event(*seq, EventKind::EntityDeleted, &measure)
                .snapshot_with_rows(snapshot, "measure", tpl.before["measure"])
                .state("deleted", tpl.after.clone(), deleted());
        }
        (Path::Delete, _) => {
            exp.state("untouched", tpl.before.clone(), None).state(
                "deleted",
                tpl.after.clone(),
                deleted(),
            );
        }
        (Path::Snapshot, Some(Acked::Snapshot { seq, id })) => {
            exp.event(*seq, EventKind::SnapshotCreated, id)
                .snapshot(id)
                .state("unchanged", tpl.before.clone(), None);
        }
        (Path::Snapshot, _) => {
            exp.state("unchanged", tpl.before.clone(), None);
        }
        (
            Path::Restore,
            Some(Acked::Restore {
                seq,
                safety,
                rolled_back,
            }),
        ) => {
            exp.event(*seq, EventKind::RestorePerformed, &tpl.target)
                .snapshot(safety);
            if *rolled_back {
                exp.state("rolled back", tpl.before.clone(), None);
            } else {
                exp.state(
                    "restored",
                    tpl.after.clone(),
                    Some(Marker::restored(&tpl.target)),
                );
            }
        }
        (Path::Restore, _) => {
            exp.restore_in_flight()
                .state("pre-restore", tpl.before.clone(), None)
                .state(
                    "restored",
                    tpl.after.clone(),
                    Some(Marker::restored(&tpl.target)),
                );
        }
    }
    exp
}

fn options() -> Options {
    let mode = match std::env::var("LNRS_POWERCUT_MODE").as_deref() {
        Ok("strict") => Mode::Strict,
        Ok("eager") => Mode::EagerNames,
        Ok("default") | Err(_) => Mode::Default,
        Ok(other) => panic!("LNRS_POWERCUT_MODE={other}: default, strict or eager"),
    };
    Options { mode }
}

/// Waits (bounded) until no fsync happened for a while: the operation's background work
/// (retention after a snapshot) is done.
async fn quiesce(pfs: &PowerFs) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = pfs.fsyncs();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(700) {
        assert!(Instant::now() < deadline, "fsyncs never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pfs.fsyncs();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    last
}

/// Counts the fsyncs the operation performs (K) and returns them with the fsync log.
async fn calibrate(path: Path, tpl: &Template, opts: Options) -> (u64, Vec<String>) {
    let pfs = PowerFs::mount(tpl.dir.path(), opts);
    let server = ChildServer::start(pfs.path(), "127.0.0.1:0", &[], &[]).await;
    warm_up(&server.channel).await;
    let base = quiesce(&pfs).await;
    pfs.clear_log();
    run_op(path, &server.channel, tpl)
        .await
        .unwrap_or_else(|s| panic!("{path:?} fails on the FUSE mount without a cut: {s:?}"));
    let k = quiesce(&pfs).await - base;
    let syncs = pfs
        .log()
        .into_iter()
        .filter(|l| l.starts_with("fsync") || l.starts_with("fdatasync"))
        .collect();
    server.signal(libc::SIGKILL);
    let _ = server.exit(Duration::from_secs(10)).await;
    drop(pfs);
    (k, syncs)
}

/// One cut point's outcome.
struct Case {
    n: u64,
    acked: bool,
    violations: Vec<String>,
    detail: String,
}

/// Cuts the power right after the n-th fsync of the operation, checks the durable image.
async fn run_cut(path: Path, tpl: &Template, n: u64, opts: Options) -> Case {
    let t0 = Instant::now();
    let pfs = PowerFs::mount(tpl.dir.path(), opts);
    let server = ChildServer::start(pfs.path(), "127.0.0.1:0", &[], &[]).await;
    let warm = warm_up(&server.channel).await;
    pfs.arm_cut_after(n);
    let channel = server.channel.clone();
    let op = run_op(path, &channel, tpl);
    tokio::pin!(op);
    let started = Instant::now();
    let mut cut_seen: Option<Instant> = None;
    let result = loop {
        tokio::select! {
            r = &mut op => break Some(r),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if cut_seen.is_none() && pfs.is_cut() {
            cut_seen = Some(Instant::now());
        }
        // After the cut the server gets a few seconds to answer (it may hang on a dead
        // disk: that is not acknowledged).
        if cut_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(5))
            || started.elapsed() > Duration::from_secs(60)
        {
            break None;
        }
    };
    // A point past the operation's last fsync: the cut comes right after the answer.
    pfs.cut_now();
    server.signal(libc::SIGKILL);
    let (_, _, fuse_stderr) = server.exit(Duration::from_secs(10)).await;
    let log = pfs.log();
    let image = scratch_dir();
    pfs.into_durable_image(image.path());
    let answer = match &result {
        Some(Ok(a)) => format!("acknowledged {a:?}"),
        Some(Err(s)) => format!("failed {:?}: {}", s.code(), s.message()),
        None => "no answer (hung after the cut)".into(),
    };
    let acked = result.as_ref().and_then(|r| r.as_ref().ok());
    let exp = expected(path, tpl, &warm, acked);
    let t1 = Instant::now();
    let verdict = invariants::check(image.path(), &exp).await;
    let mut detail = format!(
        "{path:?} n={n}: {answer}; state after restart: {:?} (cut run {} ms, check {} ms)",
        verdict.state,
        (t1 - t0).as_millis(),
        t1.elapsed().as_millis()
    );
    if let Some(r) = &verdict.refused {
        detail.push_str(&format!("\n  refused to start: {r}"));
    }
    let verbose = std::env::var("LNRS_POWERCUT_VERBOSE").is_ok_and(|v| v == "1");
    if verbose || !verdict.violations.is_empty() {
        let tail: Vec<&String> = log
            .iter()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        detail.push_str(&format!(
            "\n  file system ops up to the cut (last 25):\n    {}\n  server stderr on FUSE:\n{}\n  checked server stderr:\n{}",
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    "),
            indent(&fuse_stderr),
            indent(&verdict.stderr)
        ));
    }
    Case {
        n,
        acked: acked.is_some(),
        violations: verdict.violations,
        detail,
    }
}

/// A temp dir in memory (/dev/shm) when there is one: writing and removing a durable image
/// per cut point on a disk mounted with `discard` costs a second each.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let b = tempfile::Builder::new()
        .prefix("lnrs-powercut-")
        .tempdir_in(shm);
    b.or_else(|_| tempfile::tempdir()).expect("temp dir")
}

fn indent(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(30);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kind of an fsync in the calibration log: the op and the path with hashes, nonces and
/// ids masked ("fsync /snapshots/tmp/*.zst.*.tmp").
fn kind(line: &str) -> String {
    // "fsync n=3 /path (#12 since the mount)"
    let mut words = line.split(' ');
    let op = words.next().unwrap_or_default();
    let path = words.nth(1).unwrap_or_default();
    let masked: Vec<String> = path
        .split(['/', '.', '-'])
        .map(|w| {
            let digits = w.chars().filter(|c| c.is_ascii_digit()).count();
            if w.len() >= 6 && (digits >= 2 || w.chars().all(|c| c.is_ascii_hexdigit())) {
                "*".to_string()
            } else if w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                "**".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    format!("{op} {}", masked.join("/"))
}

/// Which cut points to run (see the module docs). 1..=k cut right after the operation's n-th
/// fsync; k + 1 cuts right after its answer (what was acknowledged with nothing but its fsyncs
/// on disk). Every point of the delete path; for the others, the first and last point of
/// every run of same-kind fsyncs in the calibration (every phase boundary), k + 1 and a
/// seeded sample of the rest.
fn points(path: Path, syncs: &[String]) -> Vec<u64> {
    let k = syncs.len() as u64;
    if let Ok(list) = std::env::var("LNRS_POWERCUT_POINTS") {
        return list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
    }
    let all = std::env::var("LNRS_POWERCUT_ALL").is_ok_and(|v| v == "1");
    if all || path == Path::Delete {
        return (1..=k + 1).collect();
    }
    let kinds: Vec<String> = syncs.iter().map(|l| kind(l)).collect();
    let boundary = |i: usize| {
        i == 0 || i + 1 == kinds.len() || kinds[i] != kinds[i - 1] || kinds[i] != kinds[i + 1]
    };
    let mut chosen: Vec<u64> = (0..kinds.len())
        .filter(|&i| boundary(i))
        .map(|i| i as u64 + 1)
        .chain([k + 1])
        .collect();
    let seed = std::env::var("LNRS_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ path as u64);
    let mut rest: Vec<u64> = (1..=k).filter(|n| !chosen.contains(n)).collect();
    rest.shuffle(&mut rng);
    chosen.extend(rest.into_iter().take(SAMPLE));
    chosen.sort_unstable();
    eprintln!(
        "powercut {path:?}: phase boundaries, k + 1 and seed {seed}: points {chosen:?} of \
         1..={} (LNRS_POWERCUT_ALL=1 runs all)",
        k + 1
    );
    chosen
}

async fn campaign(path: Path, known: &[u64]) {
    let started = Instant::now();
    let opts = options();
    let tpl = prepare(path).await;
    let (k, syncs) = calibrate(path, &tpl, opts).await;
    eprintln!(
        "powercut {path:?}: K = {k} fsyncs ({opts:?}); calibration:\n  {}",
        syncs.join("\n  ")
    );
    assert!(k > 0, "{path:?} performs no fsync on the mount");
    let mut unexpected = Vec::new();
    let mut cases = 0;
    assert_eq!(
        syncs.len() as u64,
        k,
        "every fsync of the operation is in the log"
    );
    for n in points(path, &syncs) {
        let t = Instant::now();
        let case = run_cut(path, &tpl, n, opts).await;
        cases += 1;
        let listed = known.contains(&case.n);
        eprintln!(
            "powercut {}{} ({} ms): {}",
            if case.violations.is_empty() {
                "ok "
            } else {
                "VIOLATION "
            },
            if listed { "(known)" } else { "" },
            t.elapsed().as_millis(),
            case.detail
        );
        for v in &case.violations {
            eprintln!("    - {v}");
        }
        if case.violations.is_empty() && listed {
            eprintln!(
                "powercut {path:?} n={}: listed as a known violation but passed{}",
                case.n,
                if case.acked {
                    ""
                } else {
                    " (not acknowledged)"
                }
            );
        }
        if !case.violations.is_empty() && !listed {
            unexpected.push(format!("n={}: {}", case.n, case.violations.join(" | ")));
        }
    }
    eprintln!(
        "powercut {path:?}: {cases} cut points of K = {k} in {:.1} s, {} unexpected violation(s)",
        started.elapsed().as_secs_f64(),
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "{path:?}: power-cut violations (issue 11):\n{}",
        unexpected.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_at_every_fsync_of_a_delete() {
    campaign(Path::Delete, KNOWN_DELETE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_during_a_snapshot_commit() {
    campaign(Path::Snapshot, KNOWN_SNAPSHOT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_during_a_restore() {
    campaign(Path::Restore, KNOWN_RESTORE).await;
}

/// Strict mode (a file's fsync persists only its data; names persist only through a directory
/// fsync): DuckDB creates its WAL afresh after each checkpoint and never fsyncs the directory,
/// so the acknowledged delete in it used to vanish with the WAL's name (`EntityDeleted 42 is
/// lost`). The writer now fsyncs the data directory when a commit created the WAL, before the
/// commit is acknowledged: nothing acknowledged is lost even here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_keeps_an_acknowledged_delete_whose_wal_was_just_created() {
    let strict = Options { mode: Mode::Strict };
    let tpl = prepare(Path::Delete).await;
    let (k, _) = calibrate(Path::Delete, &tpl, strict).await;
    let case = run_cut(Path::Delete, &tpl, k + 1, strict).await;
    assert!(case.acked, "{}", case.detail);
    assert!(
        case.violations.is_empty(),
        "{}\n{:?}",
        case.detail,
        case.violations
    );
}
