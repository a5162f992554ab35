//! `lnrs-bench`: the benchmark program. It creates the reference dataset at each scale,
//! starts the real server in this process on 127.0.0.1:0, drives it with the generated gRPC
//! clients, and prints a markdown report (also written to `--doc`, e.g. docs/PERFORMANCE.md)
//! and a JSON file (`--out`).
//!
//! Scenarios (`--scenario`, default all):
//! 1. `delete`: deletes with their pre-delete snapshot vs the same deletes without snapshots
//!    and a durable full copy of the file, plus the server's phase histograms and an exact
//!    phase profile ([`delete`], [`profile`]);
//! 2. `storage`: store size after 10 and 100 pre-delete snapshots (same run as `delete`);
//! 3. `restore`: RestoreSnapshot end to end ([`restore`]);
//! 4. `fanout`: 1,000 subscribers × 1,000 events, latency, losses, memory ([`fanout`]);
//! 5. `reads`: Get / List requests/s vs the health check ([`reads`]);
//! 6. `catchup`: replay of a 1,000,000-event fixture log ([`catchup`]);
//! 7. `history`: undelete, diff, entity history ([`history`]);
//! 8. `replica`: the replica on S3, RPO, recovery; 9. PITR and followers ([`replica`],
//!    [`timeline`]);
//! 10. `data-io`: import of the original's files and exports in every format ([`dataio`]);
//! 11. `spaced`: deletes 200 ms apart with and without snapshots ([`speed`]);
//! 12. `write-mix`: create/rename writes/s with and without capture ahead ([`speed`]);
//! 13. `tracing`: Get req/s and delete p50 with the OTLP exporter on and off ([`traces`]).
//!
//! Items 1–3, 8, 10 and 11 run at every `--scale` (default 1 and 10); the others at the first one.
//!
//! Modules: [`harness`] (work dir, datasets, server, machine), [`prom`] (the server's metrics),
//! [`stats`] (percentiles), [`report`] (targets, JSON, markdown). They live in
//! `src/bin/lnrs-bench/`.

#[path = "lnrs-bench/catchup.rs"]
mod catchup;
#[path = "lnrs-bench/dataio.rs"]
mod dataio;
#[path = "lnrs-bench/delete.rs"]
mod delete;
#[path = "lnrs-bench/fanout.rs"]
mod fanout;
#[path = "lnrs-bench/harness.rs"]
mod harness;
#[path = "lnrs-bench/history.rs"]
mod history;
/// The trace tests' in-process OTLP collector, shared with the benchmark (item 13).
#[allow(dead_code)]
#[path = "../../tests/it/common/otlp.rs"]
mod otlp;
#[path = "lnrs-bench/profile.rs"]
mod profile;
#[path = "lnrs-bench/prom.rs"]
mod prom;
#[path = "lnrs-bench/reads.rs"]
mod reads;
#[path = "lnrs-bench/replica.rs"]
mod replica;
#[path = "lnrs-bench/report.rs"]
mod report;
#[path = "lnrs-bench/restore.rs"]
mod restore;
/// The replica tests' S3 API server (moto) and its venv, shared with the benchmark.
#[allow(dead_code)]
#[path = "../../tests/it/common/s3.rs"]
mod s3;
#[path = "lnrs-bench/speed.rs"]
mod speed;
#[path = "lnrs-bench/stats.rs"]
mod stats;
#[path = "lnrs-bench/timeline.rs"]
mod timeline;
#[path = "lnrs-bench/traces.rs"]
mod traces;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use lnrs::config::SnapshotPolicy;

use harness::{fail, BenchServer, Dataset, Machine, Res, Work};
use report::{Results, ScaleResult};
use stats::Summary;

/// Which part of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Delete,
    Storage,
    Restore,
    Fanout,
    Reads,
    Catchup,
    History,
    Replica,
    DataIo,
    Spaced,
    WriteMix,
    Tracing,
    All,
}

/// Benchmarks the LNRS service: deletes with snapshots, snapshot storage, restores, event
/// fan-out, reads and catch-up, against baselines measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "lnrs-bench", version)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Dataset scales for delete, storage and restore (comma-separated); fan-out, reads and
    /// catch-up use the first.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    scale: Vec<u32>,
    /// JSON results file.
    #[arg(long, default_value = "lnrs-bench-results.json")]
    out: PathBuf,
    /// Markdown report to (re)write, e.g. docs/PERFORMANCE.md.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Scratch directory: cached datasets, data directories, server log
    /// [default: $TMPDIR/lnrs-bench].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Deletes per run (at least 100 for the storage numbers).
    #[arg(long, default_value_t = 200)]
    deletes: usize,
    /// Restores per scale.
    #[arg(long, default_value_t = 5)]
    restores: usize,
    /// Durable full copies timed at scale 1 (fewer at larger scales, at least 3).
    #[arg(long, default_value_t = 20)]
    copies: usize,
    /// Delete + snapshot cycles of the phase profile.
    #[arg(long, default_value_t = 30)]
    profile_reps: usize,
    /// WatchEvents subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// HTTP/2 connections the subscribers are spread over.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Events produced for the fan-out.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Production rate of those events (events/s).
    #[arg(long, default_value_t = 100.0)]
    event_rate: f64,
    /// Events in the catch-up fixture log.
    #[arg(long, default_value_t = 1_000_000)]
    catchup_events: u64,
    /// Concurrent callers of the read benchmark.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of each read window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    read_window: Duration,
    /// Rounds of read windows.
    #[arg(long, default_value_t = 3)]
    read_rounds: usize,
    /// Measures deleted and undeleted by the history scenario (twice each).
    #[arg(long, default_value_t = 30)]
    undeletes: usize,
    /// Habitat deletes per mode in the replica scenario (local only vs sync).
    #[arg(long, default_value_t = 40)]
    replica_deletes: usize,
    /// How long writes run before the kill -9 of the replica scenario's RPO runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    replica_write_for: Duration,
    /// Imports and exports of each kind per scale in the data-io scenario.
    #[arg(long, default_value_t = 3)]
    dataio_reps: usize,
    /// Deletes per run of the spaced-delete scenario.
    #[arg(long, default_value_t = 40)]
    spaced_deletes: usize,
    /// Pause between those deletes.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    spaced_gap: Duration,
    /// Concurrent writers of the write mix.
    #[arg(long, default_value_t = 2)]
    mix_clients: usize,
    /// Length of each write-mix window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    mix_window: Duration,
    /// Rounds of write-mix windows (each round runs both servers).
    #[arg(long, default_value_t = 3)]
    mix_rounds: usize,
    /// Traced deletes per server and round in the tracing scenario.
    #[arg(long, default_value_t = 20)]
    tracing_deletes: usize,
    /// Server log filter (logs go to server.log in the work dir).
    #[arg(long, default_value = "info")]
    log_filter: String,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// Internal: the fan-out subscriber process (parameters in LNRS_BENCH_FANOUT_CHILD).
    #[command(hide = true)]
    FanoutChild,
    /// Internal: a server in its own process, to kill -9 or to measure its memory alone
    /// (parameters in LNRS_BENCH_SERVE_CHILD).
    #[command(hide = true)]
    ServeChild,
}

impl Args {
    fn wants(&self, s: Scenario) -> bool {
        self.scenario == Scenario::All || self.scenario == s
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match lnrs::cli::runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = match args.child {
        Some(Child::FanoutChild) => runtime.block_on(fanout::child_from_env()),
        Some(Child::ServeChild) => runtime.block_on(harness::serve_child_from_env()),
        None => runtime.block_on(bench(&args)),
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the in-process server's logs to `server.log`, JSON like a deployment.
fn init_logging(work: &Path, filter: &str) -> Res<()> {
    let file = std::fs::File::create(work.join("server.log"))?;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| fail(format!("--log-filter: {e}")))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .try_init();
    Ok(())
}

async fn bench(args: &Args) -> Res<()> {
    let started = Instant::now();
    if args.scale.is_empty() {
        return Err(fail("--scale needs at least one scale"));
    }
    let root = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("lnrs-bench"));
    let work = Work::new(root)?;
    init_logging(&work.root, &args.log_filter)?;
    let mut machine = Machine::describe(&work.root);
    eprintln!(
        "lnrs-bench: {} build, work dir {}",
        machine.profile,
        work.root.display()
    );

    let mut scales = Vec::new();
    if args.wants(Scenario::Delete)
        || args.wants(Scenario::Storage)
        || args.wants(Scenario::Restore)
    {
        for &scale in &args.scale {
            scales.push(run_scale(args, &work, scale, &mut machine).await?);
        }
    }
    let first = work.reference(args.scale[0])?;
    let reads = if args.wants(Scenario::Reads) {
        eprintln!("reads: {} callers …", args.concurrency);
        Some(run_reads(args, &work, &first, &mut machine).await?)
    } else {
        None
    };
    let fanout = if args.wants(Scenario::Fanout) {
        eprintln!(
            "fan-out: {} subscribers × {} events …",
            args.subscribers, args.events
        );
        Some(
            fanout::run(
                &work,
                &first,
                args.subscribers,
                args.channels,
                args.events,
                args.event_rate,
            )
            .await?,
        )
    } else {
        None
    };
    let catchup = if args.wants(Scenario::Catchup) {
        eprintln!("catch-up: {} events …", args.catchup_events);
        Some(catchup::run(&work, &first, args.catchup_events).await?)
    } else {
        None
    };

    let history = if args.wants(Scenario::History) {
        eprintln!(
            "history: {} undeletes, diffs and histories …",
            args.undeletes
        );
        Some(history::run(&work, &first, args.undeletes).await?)
    } else {
        None
    };

    let replica = if args.wants(Scenario::Replica) {
        eprintln!(
            "replica and timeline: sync deletes, RPO after kill -9, recovery, PITR, followers …"
        );
        Some(
            replica::run(
                &work,
                &args.scale,
                args.replica_deletes,
                args.replica_write_for,
                (args.read_window, args.read_rounds),
            )
            .await?,
        )
    } else {
        None
    };

    let dataio = if args.wants(Scenario::DataIo) {
        eprintln!("data-io: imports of the original's files, exports in every format …");
        Some(dataio::run(&work, &args.scale, args.dataio_reps).await?)
    } else {
        None
    };

    let mut spaced = Vec::new();
    if args.wants(Scenario::Spaced) {
        for &scale in &args.scale {
            eprintln!(
                "spaced deletes: scale {scale}, {} deletes {:?} apart …",
                args.spaced_deletes, args.spaced_gap
            );
            let dataset = work.reference(scale)?;
            spaced
                .push(speed::spaced(&work, &dataset, args.spaced_deletes, args.spaced_gap).await?);
        }
    }
    let write_mix = if args.wants(Scenario::WriteMix) {
        eprintln!("write mix: {} writers …", args.mix_clients);
        Some(
            speed::write_mix(
                &work,
                &first,
                args.mix_clients,
                args.mix_window,
                args.mix_rounds,
            )
            .await?,
        )
    } else {
        None
    };

    let tracing = if args.wants(Scenario::Tracing) {
        eprintln!("tracing: Get and delete with the OTLP exporter on and off …");
        Some(
            traces::run(
                &work,
                &first,
                args.concurrency,
                args.read_window,
                args.read_rounds,
                args.tracing_deletes,
            )
            .await?,
        )
    } else {
        None
    };

    let mut results = Results {
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: command_line(),
        wall_secs: started.elapsed().as_secs_f64(),
        machine,
        settings: settings(args),
        scales,
        fanout,
        reads,
        catchup,
        history,
        replica,
        dataio,
        spaced,
        write_mix,
        tracing,
        targets: Vec::new(),
    };
    results.targets = report::targets(&results);
    let md = report::markdown(&results);
    println!("{md}");
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)
        .map_err(|e| fail(format!("writing {}: {e}", args.out.display())))?;
    eprintln!("results: {}", args.out.display());
    if let Some(doc) = &args.doc {
        std::fs::write(doc, md).map_err(|e| fail(format!("writing {}: {e}", doc.display())))?;
        eprintln!("report: {}", doc.display());
    }
    Ok(())
}

fn command_line() -> String {
    let mut parts = vec!["lnrs-bench".to_string()];
    parts.extend(std::env::args().skip(1));
    parts.join(" ")
}

fn settings(args: &Args) -> serde_json::Value {
    serde_json::json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "scales": args.scale,
        "deletes": args.deletes,
        "restores": args.restores,
        "copies": args.copies,
        "profile_reps": args.profile_reps,
        "subscribers": args.subscribers,
        "channels": args.channels,
        "events": args.events,
        "event_rate": args.event_rate,
        "catchup_events": args.catchup_events,
        "concurrency": args.concurrency,
        "read_window_secs": args.read_window.as_secs_f64(),
        "read_rounds": args.read_rounds,
        "replica_deletes": args.replica_deletes,
        "replica_write_for_secs": args.replica_write_for.as_secs_f64(),
        "dataio_reps": args.dataio_reps,
        "spaced_deletes": args.spaced_deletes,
        "spaced_gap_ms": args.spaced_gap.as_secs_f64() * 1e3,
        "mix_clients": args.mix_clients,
        "mix_window_secs": args.mix_window.as_secs_f64(),
        "mix_rounds": args.mix_rounds,
        "tracing_deletes": args.tracing_deletes,
        "log_filter": args.log_filter,
    })
}

/// Items 1–3 at one scale.
async fn run_scale(
    args: &Args,
    work: &Work,
    scale: u32,
    machine: &mut Machine,
) -> Res<ScaleResult> {
    let dataset = work.reference(scale)?;
    eprintln!(
        "scale {scale}: {:.1} MB database",
        dataset.bytes as f64 / 1e6
    );
    let want_delete = args.wants(Scenario::Delete);
    let want_storage = args.wants(Scenario::Storage);
    let want_restore = args.wants(Scenario::Restore);
    let n = if want_delete {
        args.deletes
    } else if want_storage {
        args.deletes.max(100)
    } else {
        2
    };
    let storage_at: Vec<usize> = if want_storage || want_delete {
        let mut v = vec![1, 10, 100, n];
        v.retain(|&x| x <= n);
        v.dedup();
        v
    } else {
        Vec::new()
    };

    let dir = work.data_dir_with(&format!("s{scale}-snapshots"), &dataset.path)?;
    let server = BenchServer::start(harness::config(&dir, SnapshotPolicy::Required)).await?;
    let channel = server.channel().await?;
    if let Ok(s) = harness::status(&channel).await {
        machine.duckdb = s.duckdb_library_version;
    }
    let targets = delete::pick_targets(&channel, n).await?;
    eprintln!("scale {scale}: {n} deletes with snapshots …");
    let run = delete::run(
        &channel,
        &targets,
        n,
        "required",
        &storage_at,
        Duration::ZERO,
    )
    .await?;
    let restore = if want_restore {
        eprintln!("scale {scale}: {} restores …", args.restores);
        Some(restore::run(&channel, args.restores).await?)
    } else {
        None
    };
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;

    let stored_bytes_per_delete = {
        let p10 = run.storage.iter().find(|p| p.deletes == 10);
        let last = run.storage.last();
        match (p10, last) {
            (Some(a), Some(b)) if b.deletes > a.deletes => Some(
                b.stored_bytes.saturating_sub(a.stored_bytes) as f64
                    / (b.deletes - a.deletes) as f64,
            ),
            _ => None,
        }
    };

    let delete_no_snapshot = if want_delete {
        eprintln!("scale {scale}: the same deletes without snapshots …");
        let dir = work.data_dir_with(&format!("s{scale}-no-snapshots"), &dataset.path)?;
        let server = BenchServer::start(harness::config(&dir, SnapshotPolicy::Disabled)).await?;
        let channel = server.channel().await?;
        let base = delete::run(&channel, &run.done, n, "disabled", &[], Duration::ZERO).await?;
        server.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        Some(base)
    } else {
        None
    };

    let (durable_copy, hash_full_file, profile) = if want_delete || want_restore {
        let reps = (args.copies / scale.max(1) as usize).max(3);
        eprintln!("scale {scale}: {reps} durable full copies …");
        let dir = work.fresh_dir(&format!("s{scale}-copy"))?;
        let mut copies = Vec::with_capacity(reps);
        for _ in 0..reps {
            copies.push(harness::durable_copy(&dataset.path, &dir)?);
        }
        std::fs::remove_dir_all(&dir)?;
        let (hash, profile) = if want_delete {
            let hash = harness::hash_file_time(&dataset.path, 5)?;
            eprintln!("scale {scale}: phase profile …");
            let dir = work.fresh_dir(&format!("s{scale}-profile"))?;
            let p = profile::run(&dataset.path, &dir, args.profile_reps)?;
            (Some(Summary::of(&hash)), Some(p))
        } else {
            (None, None)
        };
        (Some(Summary::of(&copies)), hash, profile)
    } else {
        (None, None, None)
    };

    Ok(ScaleResult {
        scale,
        dataset,
        delete: (want_delete || want_storage).then_some(run),
        delete_no_snapshot,
        restore,
        durable_copy,
        hash_full_file,
        profile,
        stored_bytes_per_delete,
    })
}

async fn run_reads(
    args: &Args,
    work: &Work,
    dataset: &Dataset,
    machine: &mut Machine,
) -> Res<reads::ReadsResult> {
    let dir = work.data_dir_with("reads", &dataset.path)?;
    let server = BenchServer::start(harness::config(&dir, SnapshotPolicy::Required)).await?;
    if machine.duckdb.is_empty() {
        if let Ok(s) = harness::status(&server.channel().await?).await {
            machine.duckdb = s.duckdb_library_version;
        }
    }
    let result = reads::run(
        &server.url(),
        args.concurrency,
        args.read_window,
        args.read_rounds,
    )
    .await;
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    result
}
