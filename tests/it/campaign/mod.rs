//! The fault campaign: the part of [recovery] that finds the next window before a reader does.
//!
//! Every case starts the real `lnrs serve` on a fresh data directory with one fail point of
//! [`lnrs::fault::REGISTRY`] armed (`error`: the step fails and the server goes on; `abort`:
//! the process dies like `kill -9`), runs a schedule of operations against it while a
//! [`model::Model`] records what was acknowledged, stops it (SIGTERM, or it died), restarts it
//! on the same directory with nothing armed, and checks the invariants of DESIGN.md's recovery
//! section (see [`model::check`]).
//!
//! - `every_fail_point_in_both_modes`: a directed schedule per fail point and mode that must
//!   reach the point (checked in the armed process's log); a registered point no case reaches
//!   fails it.
//! - `random_schedules`: seeded random schedules with a random point armed (a few in `cargo
//!   test`; the seed is printed and `LNRS_CAMPAIGN_SEED` reproduces a case).
//! - `soak` (ignored): `scripts/soak --cases N --seed S` runs N random cases, two at a time,
//!   and prints `cases, violations`.

mod model;
mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use lnrs::fault::{FailPoint, Path as FaultPath, REGISTRY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::ChildServer;
use workload::{schedule, Op, Runner};

/// Every campaign server: no reference data (a small database, so cases are fast), every
/// snapshot kept unless retention is asked, a short event log so compaction runs, fast upkeep.
const FLAGS: &[&str] = &[
    "--load-reference-data",
    "false",
    "--retention-keep-last",
    "1000",
    "--event-retention-keep-last",
    "24",
    "--maintenance-interval",
    "200ms",
    "--shutdown-drain-delay",
    "50ms",
];

/// The campaign's flags for a server on `dir`: [`FLAGS`] plus a replica in a local directory
/// (`file://`) inside it, so every case also checks what the replica may never show.
fn flags(dir: &Path) -> Vec<String> {
    let mut f: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
    f.extend([
        "--replica-url".to_string(),
        format!("file://{}", model::replica_dir(dir).display()),
        "--replica-segment-interval".to_string(),
        "50ms".to_string(),
    ]);
    f
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What an armed fail point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Error,
    Abort,
}

impl Mode {
    fn action(self) -> &'static str {
        match self {
            Mode::Error => "error",
            Mode::Abort => "abort",
        }
    }
}

/// One case: a fail point, a mode, a seed and a schedule.
#[derive(Debug, Clone)]
pub struct Case {
    pub point: &'static FailPoint,
    pub mode: Mode,
    pub seed: u64,
    pub ops: Vec<Op>,
}

/// What a case found.
#[derive(Debug, Default)]
pub struct Report {
    /// Whether the armed point was reached.
    pub fired: bool,
    pub violations: Vec<String>,
    /// The model could not follow the unknown outcomes: the state was not checked.
    pub overflow: bool,
    /// Every call and how it ended (printed with violations).
    pub trace: Vec<String>,
}

/// The `LNRS_FAILPOINTS` of a case: the point, plus what makes it reachable (a rollback needs
/// a failed post-swap verification first).
fn failpoints(case: &Case) -> String {
    let mut spec = format!("{}={}", case.point.name, case.mode.action());
    if case.point.name.starts_with("restore.rollback.") {
        spec += ",restore.post_swap_verify=error";
    }
    spec
}

/// Whether the armed process's log shows the point was reached.
fn fired(point: &str, mode: Mode, stderr: &str) -> bool {
    match mode {
        Mode::Abort => stderr.contains(&format!("fail point {point}: aborting")),
        Mode::Error => stderr
            .lines()
            .any(|l| l.contains("fail point fired") && l.contains(point)),
    }
}

/// Setup every schedule starts with: areas, habitats, links and a snapshot to restore.
async fn setup(r: &mut Runner) -> Result<(), String> {
    for _ in 0..2 {
        r.create_area().await?;
    }
    for _ in 0..3 {
        r.create_habitat().await?;
    }
    for op in [Op::Link, Op::Link] {
        r.run(op).await?;
    }
    r.snapshot().await?;
    r.create_habitat().await
}

/// Runs one case; `Err` only for a harness failure.
pub async fn run_case(case: &Case) -> Report {
    let dir = tempfile::tempdir().unwrap();
    if case.point.path == FaultPath::Startup {
        return run_startup_case(case, dir.path()).await;
    }
    let mut report = Report::default();
    let spec = failpoints(case);
    let flags = flags(dir.path());
    let server = match ChildServer::try_start(
        dir.path(),
        "127.0.0.1:0",
        &as_strs(&flags),
        &[("LNRS_FAILPOINTS", &spec)],
    )
    .await
    {
        Ok(s) => s,
        Err(f) if fired(case.point.name, case.mode, &f.stderr) => {
            // The server reached the armed step by itself while starting (the replica's base
            // snapshot is taken at once): a crash there is a case like any other, and the
            // invariants must hold after a clean restart.
            report.fired = true;
            let idle = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
            let mut r = Runner::new(idle, case.seed, &format!("{:x}", case.seed));
            restart_and_check(&mut r, dir.path(), &mut report).await;
            return report;
        }
        Err(f) => {
            report
                .violations
                .push(format!("the armed server did not start: {f}"));
            return report;
        }
    };
    let mut r = Runner::new(
        server.channel.clone(),
        case.seed,
        &format!("{:x}", case.seed),
    );
    let mut server = server;
    let ran = async {
        setup(&mut r).await?;
        for op in &case.ops {
            if r.lost || !server.running() {
                break;
            }
            r.run(*op).await?;
        }
        Ok::<_, String>(())
    }
    .await;
    if let Err(e) = ran {
        report.violations.push(format!("while running: {e}"));
    }
    let stderr = stop_or_reap(server, &mut report).await;
    report.fired = fired(case.point.name, case.mode, &stderr);
    report.overflow = r.model.overflow;
    restart_and_check(&mut r, dir.path(), &mut report).await;
    report.trace = std::mem::take(&mut r.trace);
    report
}

/// A running server is stopped with SIGTERM and must exit 0; one that died (abort) is reaped.
/// Returns its stderr.
async fn stop_or_reap(mut server: ChildServer, report: &mut Report) -> String {
    if !server.running() {
        let (_, _, stderr) = server.exit(Duration::from_secs(10)).await;
        return stderr;
    }
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.exit(Duration::from_secs(30)).await;
    if !status.success() && !stderr.contains("aborting") {
        report
            .violations
            .push(format!("SIGTERM: exit {status}: {}", tail(&stderr)));
    }
    stderr
}

/// Restarts on the same directory with nothing armed and checks every invariant.
async fn restart_and_check(r: &mut Runner, dir: &Path, report: &mut Report) {
    match ChildServer::try_start(dir, "127.0.0.1:0", &as_strs(&flags(dir)), &[]).await {
        Ok(s) => {
            r.ch = s.channel.clone();
            report
                .violations
                .extend(model::check(&mut r.model, &s.channel, dir).await);
            report
                .violations
                .extend(model::check_replica(&s.channel, dir).await);
            crate::common::ops::stop(s).await;
        }
        Err(f) => report.violations.push(format!(
            "the restarted server does not start ({:?}): {}",
            f.status,
            tail(&f.stderr)
        )),
    }
}

/// The start-up fail point: a crash leaves a journal (restore.after_journal=abort), then the
/// start that must resolve it fails there. `error` must refuse to start (exit != 0), `abort`
/// dies; either way the next start resolves the journal.
async fn run_startup_case(case: &Case, dir: &Path) -> Report {
    let mut report = Report::default();
    let server = ChildServer::start(
        dir,
        "127.0.0.1:0",
        FLAGS,
        &[("LNRS_FAILPOINTS", "restore.after_journal=abort")],
    )
    .await;
    let mut r = Runner::new(
        server.channel.clone(),
        case.seed,
        &format!("{:x}", case.seed),
    );
    if let Err(e) = setup(&mut r).await {
        report.violations.push(e);
    }
    let _ = r.restore().await;
    let _ = stop_or_reap(server, &mut report).await;
    if !dir.join("restore.journal").exists() {
        report
            .violations
            .push("no journal left by the crash to resolve".into());
        return report;
    }
    let spec = failpoints(case);
    match ChildServer::try_start(dir, "127.0.0.1:0", FLAGS, &[("LNRS_FAILPOINTS", &spec)]).await {
        Ok(s) => {
            report.violations.push(format!(
                "{spec}: the server served with an unresolved journal"
            ));
            let _ = s.kill();
        }
        Err(f) => {
            report.fired = fired(case.point.name, case.mode, &f.stderr);
            if f.status.is_none_or(|s| s.success()) {
                report
                    .violations
                    .push(format!("did not refuse to start with a failure: {f}"));
            }
        }
    }
    restart_and_check(&mut r, dir, &mut report).await;
    report
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// The directed schedule that reaches a fail point of `path`.
fn directed(path: FaultPath) -> Vec<Op> {
    match path {
        FaultPath::SnapshotCommit => vec![Op::Snapshot, Op::CreateHabitat],
        FaultPath::Assemble => vec![Op::Preview, Op::CreateHabitat],
        FaultPath::Delete => vec![Op::DeleteHabitat, Op::CreateHabitat],
        FaultPath::Restore => vec![Op::Restore, Op::CreateHabitat],
        // Snapshots of different states, so the ones retention removes have blocks of their
        // own for GC to sweep.
        FaultPath::Retention => vec![
            Op::Snapshot,
            Op::CreateHabitat,
            Op::Snapshot,
            Op::CreateHabitat,
            Op::Retention,
            Op::CreateHabitat,
        ],
        FaultPath::Compaction => vec![Op::Burst, Op::Burst, Op::Burst],
        // The uploader ships snapshots (blocks, then the manifest) and log segments.
        FaultPath::Replica => vec![Op::Snapshot, Op::Burst, Op::DeleteHabitat, Op::Burst],
        // A change, the capture taken ahead of it, a delete that reuses it (twice: `error`
        // must leave the server able to go on).
        FaultPath::CaptureAhead => vec![
            Op::CreateHabitat,
            Op::Idle,
            Op::DeleteHabitat,
            Op::CreateHabitat,
            Op::Idle,
            Op::DeleteHabitat,
            Op::CreateHabitat,
        ],
        FaultPath::Startup => vec![],
    }
}

/// Every registered fail point, in both modes, reached by a directed schedule; the invariants
/// hold after each. A registered point that no schedule reaches fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fail_point_in_both_modes() {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut cases = 0;
    for point in REGISTRY {
        for mode in [Mode::Error, Mode::Abort] {
            let case = Case {
                point,
                mode,
                seed: cases,
                ops: directed(point.path),
            };
            cases += 1;
            let report = run_case(&case).await;
            if !report.fired {
                failures.push(format!("{}={}: never reached", point.name, mode.action()));
            }
            for v in report.violations {
                failures.push(format!("{}={}: {v}", point.name, mode.action()));
            }
        }
    }
    eprintln!(
        "fault campaign: {} fail points x 2 modes = {cases} cases in {:.0?}, {} violations",
        REGISTRY.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A random case from `seed`: a random fail point (start-up excluded: it has its own
/// schedule), a random mode, a random schedule.
pub fn random_case(seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let points: Vec<&'static FailPoint> = REGISTRY
        .iter()
        .filter(|p| p.path != FaultPath::Startup)
        .collect();
    let point = points[rng.random_range(0..points.len())];
    let mode = if rng.random_bool(0.5) {
        Mode::Error
    } else {
        Mode::Abort
    };
    let n = rng.random_range(6..16);
    Case {
        point,
        mode,
        seed,
        ops: schedule(&mut rng, n),
    }
}

fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A few seeded random cases per `cargo test` run (the seed is printed; set
/// `LNRS_CAMPAIGN_SEED` to replay one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules() {
    let base = seed_from_env("LNRS_CAMPAIGN_SEED");
    let n: u64 = std::env::var("LNRS_CAMPAIGN_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut failures = Vec::new();
    for i in 0..n {
        let case = random_case(base.wrapping_add(i));
        eprintln!(
            "campaign case seed {}: {}={} {:?}",
            case.seed,
            case.point.name,
            case.mode.action(),
            case.ops
        );
        let report = run_case(&case).await;
        if !report.violations.is_empty() {
            eprintln!(
                "trace of seed {}:\n  {}",
                case.seed,
                report.trace.join("\n  ")
            );
        }
        for v in report.violations {
            failures.push(format!(
                "seed {} ({}={}): {v}",
                case.seed,
                case.point.name,
                case.mode.action()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The long soak: `scripts/soak --cases N --seed S` (or LNRS_SOAK_CASES / LNRS_SOAK_SEED with
/// `cargo test --test it campaign::soak -- --ignored --nocapture`). Two cases run at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long soak: run with scripts/soak"]
async fn soak() {
    let base = seed_from_env("LNRS_SOAK_SEED");
    let cases: u64 = std::env::var("LNRS_SOAK_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let violations = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let overflows = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (next, violations) = (next.clone(), violations.clone());
        let overflows = overflows.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= cases {
                    return;
                }
                let case = random_case(base.wrapping_add(i));
                let report = run_case(&case).await;
                if report.overflow {
                    overflows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !report.violations.is_empty() {
                    eprintln!(
                        "trace of seed {}:\n  {}",
                        case.seed,
                        report.trace.join("\n  ")
                    );
                }
                let mut v = violations.lock();
                for x in report.violations {
                    eprintln!(
                        "VIOLATION seed {} ({}={}): {x}",
                        case.seed,
                        case.point.name,
                        case.mode.action()
                    );
                    v.push(x);
                }
                if (i + 1) % 100 == 0 {
                    eprintln!(
                        "{} cases, {} violations, {:.0?}",
                        i + 1,
                        v.len(),
                        started.elapsed()
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let v = violations.lock().len();
    println!(
        "cases {cases}, violations {v}, seed {base}, {:.0?}",
        started.elapsed()
    );
    assert_eq!(v, 0);
}
