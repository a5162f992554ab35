//! The results of a run: the JSON document, the target checks (met / not met with the measured
//! number), and the markdown printed to stdout and written to docs/PERFORMANCE.md.

use std::fmt::Write as _;

use serde::Serialize;

use crate::catchup::CatchupResult;
use crate::dataio::DataIoResult;
use crate::delete::DeleteRun;
use crate::fanout::FanoutResult;
use crate::harness::{Dataset, Machine};
use crate::history::HistoryResult;
use crate::profile::PhaseProfile;
use crate::reads::ReadsResult;
use crate::replica::ReplicaResult;
use crate::restore::RestoreRun;
use crate::speed::{SpacedRun, WriteMix};
use crate::stats::Summary;

/// Items 1–3 at one scale.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub scale: u32,
    pub dataset: Dataset,
    /// Deletes with pre-delete snapshots (policy required); its storage points are item 2.
    pub delete: Option<DeleteRun>,
    /// The same deletes on a fresh copy with snapshot_policy = disabled.
    pub delete_no_snapshot: Option<DeleteRun>,
    pub restore: Option<RestoreRun>,
    /// Durable full copy of the database file (copy + fsync file + fsync dir).
    pub durable_copy: Option<Summary>,
    /// BLAKE3 of the whole file in memory, all cores.
    pub hash_full_file: Option<Summary>,
    pub profile: Option<PhaseProfile>,
    /// Compressed bytes a delete's snapshot added to the store, averaged after the 10th.
    pub stored_bytes_per_delete: Option<f64>,
}

/// One target of the issue.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub generated_at: String,
    pub command: String,
    pub wall_secs: f64,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub scales: Vec<ScaleResult>,
    pub fanout: Option<FanoutResult>,
    pub reads: Option<ReadsResult>,
    pub catchup: Option<CatchupResult>,
    pub history: Option<HistoryResult>,
    pub replica: Option<ReplicaResult>,
    pub dataio: Option<DataIoResult>,
    /// Item 11, one entry per scale.
    pub spaced: Vec<SpacedRun>,
    pub write_mix: Option<WriteMix>,
    pub tracing: Option<crate::traces::TracingResult>,
    pub targets: Vec<TargetCheck>,
}

fn at(scales: &[ScaleResult], scale: u32) -> Option<&ScaleResult> {
    scales.iter().find(|s| s.scale == scale)
}

fn check(target: &str, measured: String, met: Option<bool>) -> TargetCheck {
    TargetCheck {
        target: target.into(),
        measured,
        met,
    }
}

fn unmeasured(target: &str) -> TargetCheck {
    check(target, "not measured in this run".into(), None)
}

/// Bytes a delete changes at `s`: compressed bytes per delete in the store, else the profile's.
fn bytes_per_delete(s: &ScaleResult) -> Option<f64> {
    s.stored_bytes_per_delete
        .or_else(|| s.profile.as_ref().map(|p| p.new_bytes_per_snapshot))
}

/// Checks every target of the issue against what was measured.
pub fn targets(r: &Results) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let s1 = at(&r.scales, 1);
    let s10 = at(&r.scales, 10);
    let del1 = s1.and_then(|s| s.delete.as_ref());

    match del1 {
        Some(d) => {
            out.push(check(
                "delete + snapshot p50 ≤ 30 ms (scale 1)",
                format!("{:.1} ms", d.latency.p50_ms),
                Some(d.latency.p50_ms <= 30.0),
            ));
            out.push(check(
                "delete + snapshot p99 ≤ 75 ms (scale 1)",
                format!("{:.1} ms", d.latency.p99_ms),
                Some(d.latency.p99_ms <= 75.0),
            ));
        }
        None => {
            out.push(unmeasured("delete + snapshot p50 ≤ 30 ms (scale 1)"));
            out.push(unmeasured("delete + snapshot p99 ≤ 75 ms (scale 1)"));
        }
    }

    out.push(writer_blocked(s1));

    for (s, limit) in [(s1, 0.8), (s10, 0.3)] {
        let name = format!(
            "delete + snapshot p50 ≤ {limit:.1}× durable full copy (scale {})",
            if limit == 0.8 { 1 } else { 10 }
        );
        match s.and_then(|s| Some((s.delete.as_ref()?, s.durable_copy.as_ref()?))) {
            Some((d, c)) => {
                let ratio = d.latency.p50_ms / c.p50_ms.max(f64::MIN_POSITIVE);
                out.push(check(
                    &name,
                    format!(
                        "{ratio:.2}× ({:.1} ms vs copy {:.1} ms)",
                        d.latency.p50_ms, c.p50_ms
                    ),
                    Some(ratio <= limit),
                ));
            }
            None => out.push(unmeasured(&name)),
        }
    }

    for (n, limit) in [(10usize, 1.0), (100, 3.0)] {
        let name = format!("{n} pre-delete snapshots stored in ≤ {limit:.0}× the database file");
        let point = del1.and_then(|d| d.storage.iter().find(|p| p.deletes == n));
        match point {
            Some(p) => out.push(check(
                &name,
                format!(
                    "{:.2}× ({:.1} MB stored, {:.1} MB file, {} snapshots)",
                    p.ratio,
                    p.stored_bytes as f64 / 1e6,
                    p.database_bytes as f64 / 1e6,
                    p.snapshot_count
                ),
                Some(p.ratio <= limit),
            )),
            None => out.push(unmeasured(&name)),
        }
    }

    match s1.and_then(|s| s.restore.as_ref()) {
        Some(rs) => out.push(check(
            "restore end to end ≤ 500 ms (scale 1)",
            format!(
                "p50 {:.0} ms wall ({:.0} ms server duration)",
                rs.wall.p50_ms, rs.server_duration.p50_ms
            ),
            Some(rs.wall.p50_ms <= 500.0 && rs.rolled_back == 0),
        )),
        None => out.push(unmeasured("restore end to end ≤ 500 ms (scale 1)")),
    }

    match &r.fanout {
        Some(f) => {
            out.push(check(
                "fan-out p99 ≤ 50 ms with 0 lost",
                format!(
                    "p99 {:.1} ms, {} lost of {} ({} subscribers × events)",
                    f.report.latency.p99_ms, f.report.lost, f.report.expected, f.subscribers
                ),
                Some(f.report.latency.p99_ms <= 50.0 && f.report.lost == 0),
            ));
            out.push(check(
                "≤ 64 KiB server memory per subscriber",
                format!(
                    "{:.1} KiB idle, {:.1} KiB after the events",
                    f.kib_per_subscriber_idle, f.kib_per_subscriber_after_events
                ),
                Some(
                    f.kib_per_subscriber_idle
                        .max(f.kib_per_subscriber_after_events)
                        <= 64.0,
                ),
            ));
        }
        None => {
            out.push(unmeasured("fan-out p99 ≤ 50 ms with 0 lost"));
            out.push(unmeasured("≤ 64 KiB server memory per subscriber"));
        }
    }

    out.extend(read_targets(r.reads.as_ref()));

    out.push(scale_growth(s1, s10));
    for (name, limit, pick) in [
        (
            "undelete p50 ≤ 100 ms with row images (scale 1)",
            100.0,
            (|h: &HistoryResult| h.undelete_images.p50_ms) as fn(&HistoryResult) -> f64,
        ),
        (
            "undelete p50 ≤ 300 ms from the pre-delete snapshot (scale 1)",
            300.0,
            |h: &HistoryResult| h.undelete_snapshot.p50_ms,
        ),
    ] {
        out.push(match &r.history {
            Some(h) => check(name, format!("{:.1} ms", pick(h)), Some(pick(h) <= limit)),
            None => unmeasured(name),
        });
    }
    out.extend(replica_targets(r.replica.as_ref()));
    out.extend(speed_targets(r));
    out
}

/// Get and List against the empty handler.
fn read_targets(rd: Option<&ReadsResult>) -> Vec<TargetCheck> {
    [
        ("Get", "get_measure", 0.8),
        ("ListMeasures (page of 50)", "list_measures", 0.3),
    ]
    .into_iter()
    .map(|(what, kind, limit)| {
        let name = format!("{what} requests/s ≥ {limit:.1}× the empty handler");
        let Some(rd) = rd else {
            return unmeasured(&name);
        };
        let rate = |k: &str| rd.kinds.get(k).map_or(0.0, |k| k.requests_per_sec);
        let ratio = rate(kind) / rate("health_check").max(1e-9);
        check(
            &name,
            format!(
                "{ratio:.2}× ({:.0} vs {:.0} req/s)",
                rate(kind),
                rate("health_check")
            ),
            Some(ratio >= limit),
        )
    })
    .collect()
}

/// [speed]: spaced deletes, delete p99, restore vs copies, the write mix.
fn speed_targets(r: &Results) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    const SPACED: &str =
        "delete + snapshot p50, deletes 200 ms apart ≤ 1.5× the same without snapshots (scale 1)";
    out.push(match r.spaced.iter().find(|s| s.scale == 1) {
        Some(s) => check(
            SPACED,
            format!(
                "{:.2}× ({:.1} vs {:.1} ms)",
                s.ratio, s.with_snapshots.latency.p50_ms, s.without_snapshots.latency.p50_ms
            ),
            Some(s.ratio <= 1.5),
        ),
        None => unmeasured(SPACED),
    });
    const P99: &str = "delete + snapshot p99 ≤ 2× its p50 (scale 1)";
    out.push(match at(&r.scales, 1).and_then(|s| s.delete.as_ref()) {
        Some(d) => {
            let ratio = d.latency.p99_ms / d.latency.p50_ms.max(1e-9);
            check(
                P99,
                format!(
                    "{ratio:.2}× ({:.1} vs {:.1} ms)",
                    d.latency.p99_ms, d.latency.p50_ms
                ),
                Some(ratio <= 2.0),
            )
        }
        None => unmeasured(P99),
    });
    for (scale, limit) in [(1u32, 7.0), (10, 4.0)] {
        let name = format!("restore end to end ≤ {limit:.0}× a durable full copy (scale {scale})");
        let pair = at(&r.scales, scale)
            .and_then(|s| Some((s.restore.as_ref()?, s.durable_copy.as_ref()?)));
        out.push(match pair {
            Some((rs, c)) => {
                let ratio = rs.wall.p50_ms / c.p50_ms.max(1e-9);
                check(
                    &name,
                    format!("{ratio:.1}× ({:.0} vs {:.1} ms)", rs.wall.p50_ms, c.p50_ms),
                    Some(ratio <= limit && rs.rolled_back == 0),
                )
            }
            None => unmeasured(&name),
        });
    }
    const MIX: &str = "write mix with capture ahead ≥ 0.9× the writes/s without it";
    out.push(match &r.write_mix {
        Some(m) => check(
            MIX,
            format!(
                "{:.2}× ({:.0} vs {:.0} writes/s)",
                m.ratio, m.with_ahead.writes_per_sec, m.without_ahead.writes_per_sec
            ),
            Some(m.ratio >= 0.9 && m.with_ahead.errors == 0 && m.without_ahead.errors == 0),
        ),
        None => unmeasured(MIX),
    });
    out
}

/// [replica]: no acknowledged delete lost in sync mode; async loses at most the max lag.
fn replica_targets(r: Option<&ReplicaResult>) -> Vec<TargetCheck> {
    const SYNC: &str = "replica sync: acknowledged deletes lost after kill -9 = 0";
    const ASYNC: &str = "replica async: writes lost after kill -9 within replica_max_lag";
    let find = |mode: &str| r.and_then(|r| r.rpo.iter().find(|p| p.mode == mode));
    vec![
        match find("sync") {
            Some(p) => check(
                SYNC,
                format!("{} of {}", p.lost, p.acknowledged),
                Some(p.lost == 0),
            ),
            None => unmeasured(SYNC),
        },
        match find("async") {
            Some(p) => check(
                ASYNC,
                format!(
                    "{} of {} ({:.2} s of writes)",
                    p.lost, p.acknowledged, p.lost_window_secs
                ),
                Some(p.lost_window_secs <= p.max_lag_secs),
            ),
            None => unmeasured(ASYNC),
        },
    ]
}

/// Writer blocked p50 ≤ 15 ms: the fraction of the server's captures in its ≤ 15 ms bucket
/// (an exact edge) decides; the phase profile is shown alongside, or decides without a histogram.
fn writer_blocked(s1: Option<&ScaleResult>) -> TargetCheck {
    const NAME: &str =
        "writer blocked (CHECKPOINT; the file read overlaps the cascade) p50 ≤ 15 ms (scale 1)";
    let Some(s) = s1 else {
        return unmeasured(NAME);
    };
    let hist = s.delete.as_ref().map(|d| &d.server);
    let profile = s.profile.as_ref().map(|p| p.writer_blocked_ms);
    let profiled = profile.map_or(String::new(), |p| format!("; phase profile p50 {p:.1} ms"));
    match hist.filter(|h| h.capture.count > 0).and_then(|h| Some((h, h.capture_le_15ms?))) {
        Some((h, le15)) => check(
            NAME,
            format!(
                "server histogram: {:.0}% ≤ 15 ms, p50 ≈ {:.1} ms (interpolated), mean {:.1} ms{profiled}",
                le15 * 100.0,
                h.capture.p50_ms.unwrap_or(0.0),
                h.capture.mean_ms.unwrap_or(0.0),
            ),
            Some(le15 >= 0.5),
        ),
        None => match profile {
            Some(p) => check(NAME, format!("{p:.1} ms (phase profile)"), Some(p <= 15.0)),
            None => unmeasured(NAME),
        },
    }
}

/// The scale target: from scale 1 to 10, delete + snapshot p50 may grow by the growth of the
/// bytes a delete changes (p50₁ × bytes₁₀ / bytes₁ − p50₁) plus the growth of hashing the
/// whole file (hash₁₀ − hash₁), and no more.
fn scale_growth(s1: Option<&ScaleResult>, s10: Option<&ScaleResult>) -> TargetCheck {
    const NAME: &str =
        "scale 10: delete + snapshot grows no faster than the bytes a delete changes plus hashing";
    let parts = (|| {
        let (a, b) = (s1?, s10?);
        let (d1, d10) = (a.delete.as_ref()?, b.delete.as_ref()?);
        let (h1, h10) = (a.hash_full_file.as_ref()?, b.hash_full_file.as_ref()?);
        Some((
            d1.latency.p50_ms,
            d10.latency.p50_ms,
            bytes_per_delete(a)?,
            bytes_per_delete(b)?,
            h1.p50_ms,
            h10.p50_ms,
        ))
    })();
    let Some((d1, d10, b1, b10, h1, h10)) = parts else {
        return unmeasured(NAME);
    };
    let bytes_ratio = b10 / b1.max(1.0);
    let allowance = d1 * bytes_ratio + (h10 - h1);
    check(
        NAME,
        format!(
            "p50 {d1:.1} → {d10:.1} ms; allowed {allowance:.1} ms = {d1:.1} × {bytes_ratio:.2} \
             (bytes per delete {:.0} → {:.0} KB) + hashing {h1:.1} → {h10:.1} ms",
            b1 / 1e3,
            b10 / 1e3
        ),
        Some(d10 <= allowance),
    )
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "—",
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.digits$}"))
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Performance\n");
    let _ = writeln!(
        w,
        "Generated by `lnrs-bench` on {} ({:.0} s): `{}`.\n\
         Do not edit by hand: run `cargo run --bin lnrs-bench -- --doc docs/PERFORMANCE.md` \
         to regenerate it. Raw numbers: the JSON written with `--out`.\n",
        r.generated_at, r.wall_secs, r.command
    );
    let _ = writeln!(
        w,
        "Timings on shared 2-core machines are noisy: compare the ratios against the baselines \
         measured in the same run rather than absolute numbers across runs.\n"
    );
    let m = &r.machine;
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    for (k, v) in [
        ("CPU", m.cpu_model.clone()),
        ("cores", m.cores.to_string()),
        ("memory", format!("{:.1} GiB", m.memory_gib)),
        ("kernel", m.kernel.clone()),
        ("rustc", m.rustc.clone()),
        ("build profile", m.profile.clone()),
        ("work dir file system", m.work_fs.clone()),
        ("DuckDB", m.duckdb.clone()),
    ] {
        let _ = writeln!(w, "| {k} | {v} |");
    }

    let _ = writeln!(w, "\n## Targets\n");
    let _ = writeln!(w, "| target | measured | result |\n|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(w, "| {} | {} | {} |", t.target, t.measured, met(t.met));
    }

    deletes_md(w, &r.scales);
    storage_md(w, &r.scales);
    restore_md(w, &r.scales);
    if let Some(f) = &r.fanout {
        fanout_md(w, f);
    }
    if let Some(rd) = &r.reads {
        reads_md(w, rd);
    }
    if let Some(c) = &r.catchup {
        catchup_md(w, c);
    }
    if let Some(h) = &r.history {
        history_md(w, h);
    }
    if let Some(rr) = &r.replica {
        replica_md(w, rr);
        timeline_md(w, &rr.timeline);
    }
    if let Some(d) = &r.dataio {
        dataio_md(w, d);
    }
    spaced_md(w, &r.spaced);
    if let Some(m) = &r.write_mix {
        write_mix_md(w, m);
    }
    if let Some(t) = &r.tracing {
        tracing_md(w, t);
    }
    let _ = writeln!(w, "\n## Methods\n\n{}", METHODS.trim());
    s
}

fn deletes_md(w: &mut String, scales: &[ScaleResult]) {
    if !scales.iter().any(|s| s.delete.is_some()) {
        return;
    }
    let _ = writeln!(w, "\n## 1. Delete + pre-delete snapshot\n");
    let _ = writeln!(
        w,
        "Client wall time of each delete RPC (entity and link deletes mixed, sequential). \
         Baselines from the same run: the same deletes on a fresh copy with \
         `snapshot_policy = disabled`, and a durable full copy of the database file.\n"
    );
    let _ = writeln!(
        w,
        "| scale | file MB | deletes | p50 ms | p95 ms | p99 ms | no snapshot p50 / p99 ms | durable copy p50 ms | p50 ÷ copy |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for s in scales {
        let Some(d) = &s.delete else { continue };
        let base = s.delete_no_snapshot.as_ref().map_or("—".into(), |b| {
            format!("{:.1} / {:.1}", b.latency.p50_ms, b.latency.p99_ms)
        });
        let copy = s.durable_copy.as_ref().map(|c| c.p50_ms);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            s.scale,
            mb(s.dataset.bytes),
            d.deleted,
            d.latency.p50_ms,
            d.latency.p95_ms,
            d.latency.p99_ms,
            base,
            opt(copy, 1),
            opt(copy.map(|c| d.latency.p50_ms / c.max(f64::MIN_POSITIVE)), 2),
        );
    }
    let _ = writeln!(w, "\nBy type (p50 / p99 ms, with snapshot):\n");
    let kinds: std::collections::BTreeSet<&String> = scales
        .iter()
        .filter_map(|s| s.delete.as_ref())
        .flat_map(|d| d.by_kind.keys())
        .collect();
    let _ = write!(w, "| scale |");
    for k in &kinds {
        let _ = write!(w, " {k} |");
    }
    let _ = writeln!(w, "\n|---|{}", "---|".repeat(kinds.len()));
    for s in scales {
        let Some(d) = &s.delete else { continue };
        let _ = write!(w, "| {} |", s.scale);
        for k in &kinds {
            let v = d.by_kind.get(*k).map_or("—".into(), |x| {
                format!("{:.1} / {:.1} (n={})", x.p50_ms, x.p99_ms, x.n)
            });
            let _ = write!(w, " {v} |");
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(
        w,
        "\n### Where the time goes\n\nServer histograms over each run (`lnrs_delete_seconds`, \
         `lnrs_snapshot_capture_seconds` = writer blocked for CHECKPOINT (the file read runs on the \
         snapshot thread alongside the cascade), \
         `lnrs_snapshot_commit_seconds` = hash + compress + write + manifest, overlapping the \
         cascade). Means are exact; p50s are interpolated inside the bucket grid \
         (…, 5, 10, 15, 25, 30, 50, 75, 100 ms, …).\n"
    );
    let _ = writeln!(
        w,
        "| scale | run | server delete p50 / mean ms | capture p50 / mean ms | commit p50 / mean ms | \
         snapshots from a capture ahead |\n|---|---|---|---|---|---|"
    );
    for s in scales {
        for d in [&s.delete, &s.delete_no_snapshot].into_iter().flatten() {
            let h = &d.server;
            let _ = writeln!(
                w,
                "| {} | {} | {} / {} | {} / {} | {} / {} | {} of {} |",
                s.scale,
                d.policy,
                opt(h.delete.p50_ms, 1),
                opt(h.delete.mean_ms, 1),
                opt(h.capture.p50_ms, 1),
                opt(h.capture.mean_ms, 1),
                opt(h.commit.p50_ms, 1),
                opt(h.commit.mean_ms, 1),
                d.ahead_reused,
                d.ahead_reused + d.ahead_fallbacks,
            );
        }
    }
    if scales.iter().any(|s| s.profile.is_some()) {
        let _ = writeln!(
            w,
            "\nPhase profile (exact medians): the server's snapshot code driven directly on a \
             private copy, after a one-link delete (see Methods).\n"
        );
        let _ = writeln!(
            w,
            "| scale | reps | delete txn | **writer blocked** (CHECKPOINT) | file read | hash | compress | write + fsync | publish | commit total | snapshot thread (read + commit) | new blocks | new KB | full-file BLAKE3 |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for s in scales {
            let Some(p) = &s.profile else { continue };
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {} |",
                s.scale,
                p.reps,
                p.delete_txn_ms,
                p.writer_blocked_ms,
                p.capture_read_ms,
                p.hash_ms,
                p.compress_ms,
                p.write_ms,
                p.publish_ms,
                p.commit_total_ms,
                p.snapshot_thread_ms,
                p.new_blocks_per_snapshot,
                p.new_bytes_per_snapshot / 1e3,
                opt(s.hash_full_file.as_ref().map(|h| h.p50_ms), 1),
            );
        }
        let _ = writeln!(w, "\n(all times in ms)");
    }
}

fn storage_md(w: &mut String, scales: &[ScaleResult]) {
    let rows: Vec<_> = scales
        .iter()
        .filter_map(|s| s.delete.as_ref().map(|d| (s, d)))
        .filter(|(_, d)| !d.storage.is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n## 2. Snapshot storage\n");
    let _ = writeln!(
        w,
        "GetStatus after N pre-delete snapshots: `stored_bytes` (deduplicated, compressed \
         blocks on disk) ÷ `database_bytes` (live file).\n"
    );
    let _ = writeln!(
        w,
        "| scale | snapshots | stored MB | logical MB | database MB | stored ÷ database |\n|---|---|---|---|---|---|"
    );
    for (s, d) in &rows {
        for p in &d.storage {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.2}× |",
                s.scale,
                p.snapshot_count,
                mb(p.stored_bytes),
                mb(p.logical_bytes),
                mb(p.database_bytes),
                p.ratio
            );
        }
    }
    for (s, _) in &rows {
        if let Some(b) = s.stored_bytes_per_delete {
            let _ = writeln!(
                w,
                "\nScale {}: each delete's snapshot added {:.0} KB to the store on average \
                 (after the 10th).",
                s.scale,
                b / 1e3
            );
        }
    }
}

fn restore_md(w: &mut String, scales: &[ScaleResult]) {
    if !scales.iter().any(|s| s.restore.is_some()) {
        return;
    }
    let _ = writeln!(w, "\n## 3. Restore end to end\n");
    let _ = writeln!(
        w,
        "RestoreSnapshot (safety snapshot, assemble, deep verify, swap, verify again), \
         alternating the oldest and newest pre-delete snapshot.\n"
    );
    let _ = writeln!(
        w,
        "| scale | restores | wall p50 ms | wall max ms | server `duration` p50 ms | durable copy p50 ms | rolled back | checks each |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for s in scales {
        let Some(r) = &s.restore else { continue };
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            s.scale,
            r.wall.n,
            r.wall.p50_ms,
            r.wall.max_ms,
            r.server_duration.p50_ms,
            opt(s.durable_copy.as_ref().map(|c| c.p50_ms), 1),
            r.rolled_back,
            r.checks_per_restore
        );
    }
    let _ = writeln!(
        w,
        "\nWhere a restore's time goes: the median duration of each step of the response's \
         integrity report (steps under 0.5 ms summed), ms.\n"
    );
    for s in scales {
        let Some(r) = &s.restore else { continue };
        let steps: Vec<String> = r
            .profile
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.1}"))
            .collect();
        let _ = writeln!(w, "- scale {}: {}", s.scale, steps.join(" · "));
    }
}

fn fanout_md(w: &mut String, f: &FanoutResult) {
    let r = &f.report;
    let _ = writeln!(w, "\n## 4. Fan-out\n");
    let _ = writeln!(
        w,
        "{} WatchEvents subscribers in a child process over {} HTTP/2 connections; {} events \
         (CreateHabitat) produced at {:.0}/s (asked {:.0}/s). Latency = receipt time − \
         `event.time` (stamped by the writer at commit; same clock).\n",
        f.subscribers, f.connections, f.events, f.achieved_rate, f.target_rate
    );
    let _ = writeln!(
        w,
        "| p50 ms | p95 ms | p99 ms | max ms | received / expected | lost | duplicates | failed streams | server KiB / subscriber (idle / after events) |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| {:.1} | {:.1} | {:.1} | {:.1} | {} / {} | {} | {} | {} | {:.1} / {:.1} |",
        r.latency.p50_ms,
        r.latency.p95_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.received,
        r.expected,
        r.lost,
        r.duplicates,
        r.streams_failed,
        f.kib_per_subscriber_idle,
        f.kib_per_subscriber_after_events
    );
    let _ = writeln!(
        w,
        "\nServer RSS: {} KiB before, {} KiB with the subscribers open, {} KiB after the \
         events; subscriber process RSS {} KiB. Server-side lag p99: {} events behind the head.",
        f.server_rss_before_kib,
        f.server_rss_open_kib,
        f.server_rss_after_events_kib,
        r.child_rss_kib.map_or("?".into(), |k| k.to_string()),
        opt(f.lag_p99_events, 0)
    );
    if !r.errors.is_empty() {
        let _ = writeln!(w, "\nStream errors: {}", r.errors.join("; "));
    }
}

fn reads_md(w: &mut String, rd: &ReadsResult) {
    let _ = writeln!(w, "\n## 5. Reads\n");
    let _ = writeln!(
        w,
        "{} concurrent callers over {} connections; {} rounds of {:.0} s windows per kind, \
         interleaved; median requests/s. ListMeasures returns the first page of {}.\n",
        rd.concurrency, rd.connections, rd.rounds, rd.window_secs, rd.list_page_size
    );
    let _ = writeln!(
        w,
        "| request | req/s (median) | per round | p50 ms | p99 ms | errors | ÷ empty handler |\n|---|---|---|---|---|---|---|"
    );
    let empty = rd.kinds.get("health_check").map_or(f64::MIN_POSITIVE, |k| {
        k.requests_per_sec.max(f64::MIN_POSITIVE)
    });
    for (name, k) in &rd.kinds {
        let rounds: Vec<String> = k.per_round.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            w,
            "| {name} | {:.0} | {} | {:.2} | {:.2} | {} | {:.2}× |",
            k.requests_per_sec,
            rounds.join(", "),
            k.latency.p50_ms,
            k.latency.p99_ms,
            k.errors,
            k.requests_per_sec / empty
        );
    }
}

fn catchup_md(w: &mut String, c: &CatchupResult) {
    let _ = writeln!(w, "\n## 6. Catch-up\n");
    let _ = writeln!(
        w,
        "One subscriber replays a {}-event log from seq 0 (a fixture seeded before the server \
         started; see Methods).\n",
        c.log_events
    );
    let _ = writeln!(
        w,
        "| events | replay s | events/s | first event ms | gaps | fixture build s |\n|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| {} | {:.1} | {:.0} | {:.1} | {} | {} |",
        c.received,
        c.replay_secs,
        c.events_per_sec,
        c.first_event_ms,
        c.gaps,
        opt(c.fixture_secs, 1)
    );
}

fn history_md(w: &mut String, h: &HistoryResult) {
    let _ = writeln!(w, "\n## 7. History: undelete, diff, entity history\n");
    let _ = writeln!(
        w,
        "{} measures, each renamed, deleted and undeleted, then deleted again; undeletes put back \
         {:.1} rows on average; adjacent diffs differ by {:.1} rows; the log held {} events \
         when the histories were read (see Methods).\n",
        h.measures, h.rows_per_undelete, h.rows_per_diff, h.log_events
    );
    let _ = writeln!(
        w,
        "| operation | n | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|"
    );
    for (name, s) in [
        ("Undelete, rows from the event's images", &h.undelete_images),
        (
            "Undelete, rows from the pre-delete snapshot",
            &h.undelete_snapshot,
        ),
        (
            "DiffSnapshots of adjacent pre-delete snapshots",
            &h.diff_adjacent,
        ),
        ("GetEntityHistory of a measure", &h.history),
    ] {
        let _ = writeln!(
            w,
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            s.n, s.p50_ms, s.p95_ms, s.max_ms
        );
    }
    let _ = writeln!(
        w,
        "\nStored bytes per event (the log's JSON payload), without and with the row images:\n"
    );
    let _ = writeln!(
        w,
        "| kind | events | without images | with images | × |\n|---|---|---|---|---|"
    );
    for b in &h.bytes {
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.1} |",
            b.kind,
            b.events,
            b.without_images,
            b.with_images,
            b.with_images / b.without_images.max(1.0)
        );
    }
}

const METHODS: &str = r#"
- **Server**: `lnrs::server::run` in the benchmark process on 127.0.0.1:0, production defaults
  (`Config::new`) except `retention_keep_last = 1000000` (nothing is removed while storage is
  measured) and a short shutdown drain; logs at the configured filter (default `info`, JSON) go
  to `server.log` in the work directory, as a deployment would write them. Clients are tonic
  clients generated from the protos (`lnrs::pb::*_client`). Each data directory is a fresh copy
  of the reference dataset (`lnrs::refdata::write_to_path`, cached in the work directory and
  regenerated when its sources change).
- **Deletes**: targets are chosen with a fixed seed from the server's own listings (List* and
  ListLinks), evenly over measures, grants, habitats, species and the six link tables, such that
  no delete's cascade removes a later target; run one at a time (the writer is single). The
  baseline repeats exactly the same deletes, in the same order, on a fresh copy with
  `snapshot_policy = disabled`. The durable full copy is `std::fs::copy` of the database file
  (page-cache hot), `fsync` of the copy and of the directory: the original's copy-before-delete
  done so that it survives a crash.
- **Writer blocked**: the server's `lnrs_snapshot_capture_seconds` histogram, read through
  `lnrs::metrics::Exposition` in-process and differenced over the run. For a pre-delete
  snapshot it times CHECKPOINT + the empty-WAL check: the writer then starts the cascade while
  the snapshot thread copies the file (DuckDB writes the file only when it checkpoints, and the
  delete commits only after joining that thread). 15 ms is a bucket edge, so the share of
  captures at or below it decides the target exactly.
- **Phase profile**: on a private copy, with no server, the benchmark deletes one MAP link
  and its MAPG rows in a transaction, then runs `lnrs::storage::checkpoint`,
  `SnapshotStore::capture` and `SnapshotStore::commit_timed` — the server's own functions — one
  after the other, and takes the median of each phase. The writer is blocked for the
  CHECKPOINT only; "file read" + "commit total" is the snapshot thread's work, which the
  server overlaps with the cascade. "file read" is the capture: it compares the file, through
  a read-only mapping, with the previous capture's buffer and copies only the blocks that
  differ; "hash" then hashes only those. It approximates a DeleteLink (no event row, no
  fingerprint upkeep, no gRPC).
- **Storage**: GetStatus `stored_bytes` / `database_bytes` after the 1st, 10th, 100th and last
  delete of the delete run.
- **Restore**: RestoreSnapshot on the server of the delete run, alternating the oldest and the
  newest pre-delete snapshot; client wall time and the response's `duration`.
- **Fan-out**: the server runs with `snapshot_capture_ahead = false` (a capture ahead after
  the producer's last write would add the snapshot engine's file-sized buffers, which the first
  delete allocates anyway, to the memory divided among subscribers). The subscribers run in a
  child process (this binary), so the server process's RSS (`VmRSS` of /proc/self/status) before and after they open is the server's memory alone;
  ÷ subscribers gives KiB per subscriber ("idle"), and again after the events flowed ("after
  events", per-stream buffers in use). Every stream is read by its own task, concurrently with
  production (HTTP/2 clients GOAWAY a connection whose streams leave too many DATA frames
  unread). Lost = events in [first, last] a stream never received; a stream that lags is
  caught up from the log by the server, which is not a loss.
- **Reads**: N concurrent callers over 4 connections, windows of each kind interleaved
  (health, get, list) over several rounds, first 300 ms of each window not counted. The empty
  handler is grpc.health.v1 Check on the same server, behind the same layers.
- **Catch-up**: the log is a fixture: before the server starts, the database copy is opened with
  `lnrs::storage::open` and `link_created` events are appended with
  `lnrs::events::log::append_bulk` (the server's row layout through DuckDB's appender) in
  50 000-event transactions. One subscriber then streams from seq 0 until CaughtUp.
- **History**: on a fresh copy at the first scale, N measures are each renamed, deleted and
  undeleted at once (rows from the delete event's row images), then all deleted again one
  after the other, so consecutive pre-delete snapshots differ by exactly one delete: each
  adjacent pair is diffed (every page, 1000 rows per page) and each measure's history read.
  The server stops; every event's stored payload is measured with and without its row images
  (the same events, so the difference is what the images cost), and the images of the second
  round of deletes are removed, as the log of a release before row images holds them. A
  restarted server undeletes each of those, reading the rows from the pre-delete snapshot;
  the benchmark checks the `source` of every undelete.
- **Replica**: moto (`moto[server]`, the replica tests' S3 API server, from `scripts/test-venv`)
  on 127.0.0.1; the servers reach it directly (no proxy). Sync vs local only: the same 40
  habitat creates (untimed) then deletes, on two fresh copies. RPO: a server of this binary
  (hidden `serve-child`) with `replica_segment_interval = 200ms` takes writes for 3 s (sync:
  create + delete pairs, counting acknowledged deletes; async: creates), is killed with
  SIGKILL while a write is in flight, and `lnrs::app::replica::recover` rebuilds a database from
  the replica alone; an acknowledged write whose seq is above the recovered head is lost. The
  lost window is from the oldest lost acknowledgement to the kill. Upload: from the start of a
  fresh primary (no snapshots) until GetStatus says the replica holds its base snapshot and
  log; recovery: `recover` into an empty directory, wall time.
- **Import and export**: the server is a child process of this binary (hidden `serve-child`)
  on a fresh copy of the reference dataset, so its /proc status is the server's memory alone.
  The uploads are written by DuckDB 1.4.5 for Python (`tests/tools/original_db.py make-db` and
  `make-csv-zip`, from `scripts/test-venv`) with the legacy quirks the import test checks. Each
  import is client wall time from the first message of the upload (1 MiB pieces, held in
  memory) to the response: upload, staging, validation and, unless a dry run, the restore swap
  with its safety snapshot and integrity checks. Exports are of everything, from the live
  database, counting every byte received against the sizes announced (not written to disk);
  "first byte" is the server writing the files to its scratch directory, MB/s is bytes ÷ p50
  total time. Peak RSS is VmHWM, reset (`clear_refs` 5) before each format's exports. The
  baselines are durable full copies (copy + fsync) of the uploaded file and of the live
  database after the imports.
- **Spaced deletes**: the targets of item 1 (chosen again on the first copy, then repeated
  in the same order on the second), one at a time with the gap between one delete's answer and
  the next request, on fresh copies with `snapshot_policy = required` and `disabled`.
- **Write mix**: two servers on fresh copies, one with `snapshot_capture_ahead = true` (the
  default) and one with it off; each window runs N callers that create a habitat and then
  rename it (UpdateHabitat with a field mask), back to back, counting answered writes; windows
  alternate between the servers, and the median of the rounds is reported.
- Percentiles are nearest-rank over raw client samples; server histogram quantiles are
  interpolated like Prometheus' `histogram_quantile`.
"#;

fn dataio_md(w: &mut String, d: &DataIoResult) {
    let _ = writeln!(w, "\n## 10. Import and export\n");
    let _ = writeln!(
        w,
        "Imports of an original-schema file written by DuckDB 1.4 and of its CSV archive ({} of \
         each kind per scale; p50, see Methods):\n",
        d.reps
    );
    let _ = writeln!(
        w,
        "| scale | DuckDB file | CSV archive | rows | dry run | import DuckDB | import CSV | \
         durable copy of the file | import ÷ copy |\n|---|---|---|---|---|---|---|---|---|"
    );
    for s in &d.scales {
        let _ = writeln!(
            w,
            "| {} | {} MB | {} MB | {} | {:.2} s | {:.2} s | {:.2} s | {:.1} ms | {:.0}× |",
            s.scale,
            mb(s.original_bytes),
            mb(s.csv_zip_bytes),
            s.rows_accepted,
            s.import_dry_run.p50_ms / 1e3,
            s.import_duckdb.p50_ms / 1e3,
            s.import_csv_zip.p50_ms / 1e3,
            s.copy_original.p50_ms,
            s.import_duckdb.p50_ms / s.copy_original.p50_ms.max(1e-9)
        );
    }
    let _ = writeln!(
        w,
        "\nExports of everything from the live database, and the server's peak memory while \
         exporting:\n"
    );
    let _ = writeln!(
        w,
        "| scale | format | files | size | first byte | total | throughput | durable copy of \
         the database | server RSS before → peak |\n|---|---|---|---|---|---|---|---|---|"
    );
    for s in &d.scales {
        let copy_mb_s = s.live_bytes as f64 / 1e6 / (s.copy_live.p50_ms / 1e3).max(1e-9);
        for e in &s.exports {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} MB | {:.0} ms | {:.0} ms | {:.1} MB/s | {:.1} MB/s ({} MB) \
                 | {:.0} → {:.0} MiB |",
                s.scale,
                e.format,
                e.files,
                mb(e.bytes),
                e.first_byte.p50_ms,
                e.total.p50_ms,
                e.mb_per_s,
                copy_mb_s,
                mb(s.live_bytes),
                s.server_rss_before_exports_kib as f64 / 1024.0,
                e.server_peak_rss_kib as f64 / 1024.0
            );
        }
    }
}

fn spaced_md(w: &mut String, runs: &[SpacedRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n## 11. Deletes spaced like people editing\n");
    let _ = writeln!(
        w,
        "The delete targets of item 1, one at a time with a pause between deletes, on a fresh \
         copy with pre-delete snapshots and on one without.\n"
    );
    let _ = writeln!(
        w,
        "| scale | gap | deletes | p50 / p99 ms with snapshots | p50 / p99 ms without | \
         p50 ratio | snapshots from a capture ahead |\n|---|---|---|---|---|---|---|"
    );
    for s in runs {
        let (a, b) = (&s.with_snapshots.latency, &s.without_snapshots.latency);
        let _ = writeln!(
            w,
            "| {} | {:.0} ms | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}× | {} |",
            s.scale,
            s.gap_ms,
            a.n,
            a.p50_ms,
            a.p99_ms,
            b.p50_ms,
            b.p99_ms,
            s.ratio,
            s.with_snapshots.ahead_reused
        );
    }
}

fn tracing_md(w: &mut String, t: &crate::traces::TracingResult) {
    let _ = writeln!(w, "\n## 13. The cost of tracing\n");
    let _ = writeln!(
        w,
        "Two servers on copies of one dataset, one exporting every span over OTLP/gRPC \
         (`OTEL_EXPORTER_OTLP_ENDPOINT`, batch exporter defaults) to a collector in the \
         benchmark, one without an exporter; {} interleaved rounds of a {:.0} s GetMeasure \
         window ({} callers) and {} deletes of fresh habitats, each sent with a `traceparent`. \
         The collector received {} spans.\n",
        t.rounds, t.window_secs, t.concurrency, t.deletes_per_round, t.spans_exported
    );
    let _ = writeln!(
        w,
        "| exporter | Get req/s | per round | delete p50 / p99 ms | errors |\n|---|---|---|---|---|"
    );
    for (k, s) in [("off", &t.exporter_off), ("on", &t.exporter_on)] {
        let rounds: Vec<String> = s.get_per_round.iter().map(|x| format!("{x:.0}")).collect();
        let _ = writeln!(
            w,
            "| {k} | {:.0} | {} | {:.1} / {:.1} | {} |",
            s.get_requests_per_sec,
            rounds.join(", "),
            s.delete.p50_ms,
            s.delete.p99_ms,
            s.errors
        );
    }
    let _ = writeln!(
        w,
        "\nOn ÷ off: Get {:.2}×, delete p50 {:.2}×.",
        t.get_ratio, t.delete_p50_ratio
    );
}

fn write_mix_md(w: &mut String, m: &WriteMix) {
    let _ = writeln!(w, "\n## 12. Writes with and without capture ahead\n");
    let _ = writeln!(
        w,
        "{} callers each create a habitat and rename it, back to back, in {:.0} s windows \
         alternating between two servers (same data, snapshot policy `required`), {} rounds; \
         median writes/s.\n",
        m.clients, m.window_secs, m.rounds
    );
    let _ = writeln!(
        w,
        "| server | writes/s | per round | p50 / p99 ms | errors |\n|---|---|---|---|---|"
    );
    for (k, r) in [
        ("capture ahead", &m.with_ahead),
        ("no capture ahead", &m.without_ahead),
    ] {
        let rounds: Vec<String> = r.per_round.iter().map(|x| format!("{x:.0}")).collect();
        let _ = writeln!(
            w,
            "| {k} | {:.0} | {} | {:.1} / {:.1} | {} |",
            r.writes_per_sec,
            rounds.join(", "),
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.errors
        );
    }
    let _ = writeln!(w, "\nRatio: {:.2}×.", m.ratio);
}

fn timeline_md(w: &mut String, t: &crate::timeline::TimelineResult) {
    let _ = writeln!(
        w,
        "\n## 9. Timeline: point-in-time restore and read-only followers\n"
    );
    let _ = writeln!(
        w,
        "RestoreToPoint to the seq 30 events back, after 60 creates past the base snapshot, end \
         to end (plan, fetch, replay, snapshot of the rebuilt state, restore with its checks):\n"
    );
    let _ = writeln!(
        w,
        "| scale | events replayed | local | from the replica | fetched |\n|---|---|---|---|---|"
    );
    for p in &t.pitr {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2} s | {:.2} s | {:.1} KB |",
            p.scale,
            p.events_replayed,
            p.local_secs,
            p.replica_secs,
            p.replica_bytes_fetched as f64 / 1e3
        );
    }
    let s = &t.follower_staleness;
    let _ = writeln!(
        w,
        "\nFollower staleness (segments every 200 ms, follower polls every 200 ms), {:.0} writes/s \
         on the primary, per event from its commit to its arrival on the follower's WatchEvents: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events).\n",
        t.follower_writes_per_sec, s.p50_ms, s.p99_ms, s.max_ms, s.n
    );
    let _ = writeln!(
        w,
        "GetMeasure requests/s: the primary alone {:.0}; the primary and two followers at once \
         {:.0} ({:.2}×). All three run on the same 2 cores here, so this shows that followers \
         serve reads, not how they scale on separate machines.",
        t.reads_primary_alone,
        t.reads_primary_and_two_followers,
        t.reads_primary_and_two_followers / t.reads_primary_alone.max(1e-9)
    );
}

fn replica_md(w: &mut String, r: &ReplicaResult) {
    let _ = writeln!(
        w,
        "\n## 8. Replica on object storage (moto S3 on 127.0.0.1)\n"
    );
    let _ = writeln!(
        w,
        "{} habitat deletes (each with its pre-delete snapshot), the same on two copies of the \
         scale-{} data: without a replica, and in mode `sync` (acknowledged once the snapshot and \
         the event are in S3).\n",
        r.deletes,
        r.scales.first().map_or(1, |s| s.scale)
    );
    let _ = writeln!(w, "| | p50 | p99 | mean |\n|---|---|---|---|");
    for (k, s) in [("local only", &r.local_only), ("sync", &r.sync)] {
        let _ = writeln!(
            w,
            "| {k} | {:.1} ms | {:.1} ms | {:.1} ms |",
            s.p50_ms, s.p99_ms, s.mean_ms
        );
    }
    let _ = writeln!(
        w,
        "\nSync adds {:.1} ms at p50 ({:.2}×).\n",
        r.sync.p50_ms - r.local_only.p50_ms,
        r.sync.p50_ms / r.local_only.p50_ms.max(1e-9)
    );
    let _ = writeln!(
        w,
        "RPO: writes for 3 s, then SIGKILL with a write in flight; the database recovered from the \
         replica alone is compared with what was acknowledged (sync: deletes; async: creates).\n"
    );
    let _ = writeln!(w, "| mode | acknowledged | lost after kill -9 | lost window | max lag |\n|---|---|---|---|---|");
    for p in &r.rpo {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} s | {:.0} s |",
            p.mode, p.acknowledged, p.lost, p.lost_window_secs, p.max_lag_secs
        );
    }
    let _ = writeln!(
        w,
        "\nUpload of a fresh primary's base snapshot, then disaster recovery into an empty \
         directory (fetch, check every block, assemble, deep verify, replay, scan):\n"
    );
    let _ = writeln!(w, "| scale | database | uploaded | upload | throughput | recovery |\n|---|---|---|---|---|---|");
    for d in &r.scales {
        let _ = writeln!(
            w,
            "| {} | {:.1} MB | {:.1} MB | {:.2} s | {:.1} MB/s | {:.2} s |",
            d.scale,
            d.database_bytes as f64 / 1e6,
            d.uploaded_bytes as f64 / 1e6,
            d.upload_secs,
            d.upload_mb_per_s,
            d.recover_secs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delete::ServerPhases;
    use crate::prom::HistSummary;

    fn scale(scale: u32, p50: f64, hash: f64, bytes_per_delete: f64) -> ScaleResult {
        ScaleResult {
            scale,
            dataset: Dataset {
                scale,
                path: "x".into(),
                bytes: 1,
                rows: None,
                generated_secs: None,
            },
            delete: Some(DeleteRun {
                latency: Summary {
                    p50_ms: p50,
                    ..Default::default()
                },
                ..Default::default()
            }),
            delete_no_snapshot: None,
            restore: None,
            durable_copy: None,
            hash_full_file: Some(Summary {
                p50_ms: hash,
                ..Default::default()
            }),
            profile: None,
            stored_bytes_per_delete: Some(bytes_per_delete),
        }
    }

    #[test]
    fn scale_growth_allows_changed_bytes_plus_hashing() {
        let s1 = scale(1, 20.0, 5.0, 100_000.0);
        // Same bytes per delete: 20 ms may grow by the hashing growth (45 ms) only.
        assert_eq!(
            scale_growth(Some(&s1), Some(&scale(10, 64.0, 50.0, 100_000.0))).met,
            Some(true)
        );
        assert_eq!(
            scale_growth(Some(&s1), Some(&scale(10, 66.0, 50.0, 100_000.0))).met,
            Some(false)
        );
        // Twice the bytes per delete doubles the scale-1 part.
        assert_eq!(
            scale_growth(Some(&s1), Some(&scale(10, 84.0, 50.0, 200_000.0))).met,
            Some(true)
        );
        assert_eq!(scale_growth(Some(&s1), None).met, None);
    }

    #[test]
    fn writer_blocked_is_decided_by_the_15ms_bucket() {
        let mut s = scale(1, 20.0, 5.0, 1.0);
        let with = |le15: f64| ServerPhases {
            capture: HistSummary {
                count: 10,
                ..Default::default()
            },
            capture_le_15ms: Some(le15),
            ..Default::default()
        };
        let set = |s: &mut ScaleResult, phases: ServerPhases| {
            if let Some(d) = s.delete.as_mut() {
                d.server = phases;
            }
        };
        set(&mut s, with(0.6));
        assert_eq!(writer_blocked(Some(&s)).met, Some(true));
        set(&mut s, with(0.4));
        assert_eq!(writer_blocked(Some(&s)).met, Some(false));
        // Without server captures the phase profile decides.
        set(&mut s, ServerPhases::default());
        assert_eq!(writer_blocked(Some(&s)).met, None);
        s.profile = Some(PhaseProfile {
            writer_blocked_ms: 12.0,
            ..Default::default()
        });
        assert_eq!(writer_blocked(Some(&s)).met, Some(true));
    }
}
