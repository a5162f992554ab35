//! `lnrs snapshot create|list|show|preview|verify|restore|delete|retention` and `lnrs status`.
//! `restore` first shows what the live database would lose (events after the snapshot, row-count
//! differences per table), demands that RESTORE be typed, shows progress while the unary RPC
//! runs, then prints the integrity report and whether the server rolled back.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tonic::Status;

use super::client::{confirm, confirm_word, ClientArgs, Ctx, Failure};
use super::entity::{all, count};
use super::json::{enum_json, short_enum, timestamp, ToJson};
use super::output::{self, bytes, key_values, proto_duration, truncate, Table};
use crate::pb;

/// Flags of `lnrs snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: SnapshotAction,
}

/// What to do with snapshots.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Take a manual snapshot now.
    Create {
        /// What the snapshot is for.
        #[arg(long, short = 'd')]
        description: String,
        /// KEY=VALUE label (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List snapshots, newest first.
    List {
        /// Only snapshots taken for this reason.
        #[arg(long, value_enum)]
        operation: Option<OperationArg>,
        /// Only snapshots of deletes of this entity or link type.
        #[arg(long, default_value = "")]
        entity_type: String,
        /// Only snapshots of deletes of this id.
        #[arg(long, default_value = "")]
        entity_id: String,
        /// Snapshots per page [server default: 50; at most 500].
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        /// Token from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Fetch every page.
        #[arg(long, conflicts_with = "page_token")]
        all: bool,
    },
    /// Show a snapshot's summary and per-table row counts.
    Show {
        /// The snapshot id.
        id: String,
    },
    /// Read row counts, and the first rows of one table, from a snapshot without restoring it.
    Preview {
        /// The snapshot id.
        id: String,
        /// A table to show the first rows of.
        #[arg(long)]
        table: Option<String>,
        /// How many rows of --table [server default: 20; at most 500].
        #[arg(long, default_value_t = 0)]
        limit: i32,
    },
    /// Check a snapshot's integrity: blocks and hashes, and with --deep a full scan.
    Verify {
        /// The snapshot id.
        id: String,
        /// Also assemble, open and scan the database, and compare every table.
        #[arg(long)]
        deep: bool,
    },
    /// Replace the live database with a snapshot (verified; rolled back on any failure).
    Restore {
        /// The snapshot id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete a snapshot (its blocks are freed when no other snapshot uses them).
    Delete {
        /// The snapshot id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Apply a retention policy now (or only show what it would remove).
    Retention {
        /// Keep this many newest snapshots [default: the server's setting].
        #[arg(long)]
        keep_last: Option<u32>,
        /// Also keep every snapshot younger than this, e.g. "7d" [default: the server's].
        #[arg(long, value_parser = humantime::parse_duration)]
        keep_within: Option<Duration>,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Why a snapshot was taken (filter).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OperationArg {
    Delete,
    Manual,
    PreRestore,
    DeleteLink,
    Scheduled,
}

impl OperationArg {
    fn proto(self) -> pb::SnapshotOperation {
        match self {
            OperationArg::Delete => pb::SnapshotOperation::Delete,
            OperationArg::Manual => pb::SnapshotOperation::Manual,
            OperationArg::PreRestore => pb::SnapshotOperation::PreRestore,
            OperationArg::DeleteLink => pb::SnapshotOperation::DeleteLink,
            OperationArg::Scheduled => pb::SnapshotOperation::Scheduled,
        }
    }
}

fn missing(field: &str) -> Failure {
    Failure::Rpc(Status::internal(format!(
        "the server's response has no `{field}`"
    )))
}

fn when(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn operation(op: i32) -> String {
    short_enum(
        &enum_json!(pb::SnapshotOperation, op),
        "SNAPSHOT_OPERATION_",
    )
}

/// Runs `lnrs snapshot …`.
pub(crate) async fn run(ctx: &Ctx, action: SnapshotAction) -> Result<(), Failure> {
    let mut c = ctx.snapshots();
    match action {
        SnapshotAction::Create {
            description,
            labels,
        } => {
            let mut map = std::collections::BTreeMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').ok_or_else(|| {
                    Failure::usage(format!("--label expects KEY=VALUE, got {l:?}"))
                })?;
                map.insert(k.to_string(), v.to_string());
            }
            let req = pb::CreateSnapshotRequest {
                description,
                labels: map,
                request_id: ctx.request_id(),
            };
            let r = c.create_snapshot(ctx.long_req(req)).await?.into_inner();
            if ctx.json() {
                return output::print_json(&json!({
                    "snapshot": r.snapshot.to_json(), "event_seq": r.event_seq, "replayed": r.replayed,
                }));
            }
            let s = r.snapshot.ok_or_else(|| missing("snapshot"))?;
            output::print(&format!(
                "created snapshot {} ({}, {} new) with events up to seq {} (event seq {})\n",
                s.snapshot_id,
                bytes(s.logical_bytes),
                bytes(s.unique_stored_bytes),
                s.event_head_seq,
                r.event_seq
            ))
        }
        SnapshotAction::List {
            operation: op,
            entity_type,
            entity_id,
            page_size,
            mut page_token,
            all,
        } => {
            let mut snaps = Vec::new();
            let (mut next, mut total);
            loop {
                let req = pb::ListSnapshotsRequest {
                    operation: op.map_or(0, |o| o.proto() as i32),
                    entity_type: entity_type.clone(),
                    entity_id: entity_id.clone(),
                    page_size,
                    page_token: page_token.clone(),
                    ..Default::default()
                };
                let r = c.list_snapshots(ctx.req(req)).await?.into_inner();
                snaps.extend(r.snapshots);
                (next, total) = (r.next_page_token, r.total_size);
                if !all || next.is_empty() {
                    break;
                }
                page_token = next.clone();
            }
            if ctx.json() {
                return output::print_json(
                    &json!({ "snapshots": snaps.to_json(), "next_page_token": next, "total_size": total }),
                );
            }
            let mut t = Table::new(&[
                "snapshot_id",
                "created",
                "operation",
                "entity",
                "event_head",
                "size",
                "unique",
                "description",
            ]);
            for s in &snaps {
                let entity = format!("{} {}", s.entity_type, s.entity_id)
                    .trim()
                    .to_string();
                t.row(vec![
                    s.snapshot_id.clone(),
                    when(&s.create_time),
                    operation(s.operation),
                    if entity.is_empty() {
                        "-".into()
                    } else {
                        entity
                    },
                    s.event_head_seq.to_string(),
                    bytes(s.logical_bytes),
                    bytes(s.unique_stored_bytes),
                    s.description.clone(),
                ]);
            }
            output::print(&t.render())?;
            if next.is_empty() {
                eprintln!("{} of {total} snapshots", snaps.len());
            } else {
                eprintln!(
                    "{} of {total} snapshots; next page: --page-token {next} (or --all)",
                    snaps.len()
                );
            }
            Ok(())
        }
        SnapshotAction::Show { id } => {
            let s = get(ctx, &id).await?;
            if ctx.json() {
                return output::print_json(&json!({ "snapshot": s.to_json() }));
            }
            let mut text = summary(&s);
            let mut t = Table::new(&["table", "rows"]);
            for tb in &s.tables {
                t.row(vec![tb.table.clone(), tb.rows.to_string()]);
            }
            text.push('\n');
            text.push_str(&t.render());
            output::print(&text)
        }
        SnapshotAction::Preview { id, table, limit } => {
            let req = pb::PreviewSnapshotRequest {
                snapshot_id: id,
                table: table.clone().unwrap_or_default(),
                limit,
            };
            let r = c.preview_snapshot(ctx.long_req(req)).await?.into_inner();
            if ctx.json() {
                return output::print_json(&r.to_json());
            }
            let mut text = String::new();
            if table.is_some() {
                let mut t = Table::new(&r.columns);
                for row in &r.rows {
                    t.row(row.values.iter().map(preview_cell).collect());
                }
                text.push_str(&t.render());
                text.push('\n');
            }
            let mut t = Table::new(&["table", "rows"]);
            for tr in &r.table_rows {
                t.row(vec![tr.table.clone(), tr.rows.to_string()]);
            }
            text.push_str(&t.render());
            output::print(&text)
        }
        SnapshotAction::Verify { id, deep } => {
            let mode = if deep {
                pb::VerifyMode::Deep
            } else {
                pb::VerifyMode::Quick
            };
            let req = pb::VerifySnapshotRequest {
                snapshot_id: id.clone(),
                mode: mode as i32,
            };
            let label = format!(
                "verifying snapshot {id} ({})",
                if deep { "deep" } else { "quick" }
            );
            let r = with_progress(ctx, &label, c.verify_snapshot(ctx.long_req(req)))
                .await?
                .into_inner();
            let report = r.report.unwrap_or_default();
            if ctx.json() {
                output::print_json(&json!({ "report": report.to_json() }))?;
            } else {
                output::print(&report_table(&report))?;
            }
            let failed = report.checks.iter().filter(|c| !c.passed).count();
            if report.passed {
                if !ctx.json() {
                    output::print(&format!(
                        "snapshot {id}: all {} checks passed\n",
                        report.checks.len()
                    ))?;
                }
                Ok(())
            } else {
                Err(Failure::Integrity(format!(
                    "snapshot {id}: {failed} of {} checks failed",
                    report.checks.len()
                )))
            }
        }
        SnapshotAction::Restore { id, yes } => restore(ctx, &id, yes).await,
        SnapshotAction::Delete { id, yes } => {
            let s = get(ctx, &id).await?;
            if !yes {
                let text = summary(&s);
                if ctx.json() {
                    eprint!("{text}");
                } else {
                    output::print(&text)?;
                }
                confirm(&format!("Delete snapshot {id}?"))?;
            }
            let req = pb::DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                request_id: ctx.request_id(),
            };
            let r = c.delete_snapshot(ctx.long_req(req)).await?.into_inner();
            if ctx.json() {
                return output::print_json(
                    &json!({ "bytes_freed": r.bytes_freed, "event_seq": r.event_seq }),
                );
            }
            output::print(&format!(
                "deleted snapshot {id}; {} freed (event seq {})\n",
                bytes(r.bytes_freed),
                r.event_seq
            ))
        }
        SnapshotAction::Retention {
            keep_last,
            keep_within,
            dry_run,
            yes,
        } => {
            let request = |dry_run: bool| pb::ApplyRetentionRequest {
                keep_last: keep_last.unwrap_or(0),
                keep_within: keep_within.map(|d| prost_types::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
                dry_run,
            };
            if !dry_run && !yes {
                let plan = c
                    .apply_retention(ctx.long_req(request(true)))
                    .await?
                    .into_inner();
                let removed = plan.decisions.iter().filter(|d| d.removed).count();
                let text = decisions_text(&plan, true);
                if ctx.json() {
                    eprint!("{text}");
                } else {
                    output::print(&text)?;
                }
                if removed == 0 {
                    if ctx.json() {
                        output::print_json(&plan.to_json())?;
                    }
                    return Ok(());
                }
                confirm(&format!("Remove {removed} snapshot(s)?"))?;
            }
            let r = c
                .apply_retention(ctx.long_req(request(dry_run)))
                .await?
                .into_inner();
            if ctx.json() {
                return output::print_json(&r.to_json());
            }
            output::print(&decisions_text(&r, dry_run))
        }
    }
}

async fn get(ctx: &Ctx, id: &str) -> Result<pb::Snapshot, Failure> {
    let req = pb::GetSnapshotRequest {
        snapshot_id: id.to_string(),
    };
    let r = ctx
        .snapshots()
        .get_snapshot(ctx.req(req))
        .await?
        .into_inner();
    r.snapshot.ok_or_else(|| missing("snapshot"))
}

fn summary(s: &pb::Snapshot) -> String {
    let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let entity = format!("{} {}", s.entity_type, s.entity_id)
        .trim()
        .to_string();
    key_values(&[
        ("snapshot_id", s.snapshot_id.clone()),
        (
            "created",
            s.create_time.as_ref().map_or("-".into(), timestamp),
        ),
        ("description", s.description.clone()),
        ("operation", operation(s.operation)),
        (
            "entity",
            if entity.is_empty() {
                "-".into()
            } else {
                entity
            },
        ),
        (
            "request_id",
            if s.request_id.is_empty() {
                "-".into()
            } else {
                s.request_id.clone()
            },
        ),
        (
            "labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(", ")
            },
        ),
        ("event_head_seq", s.event_head_seq.to_string()),
        (
            "size",
            format!(
                "{} in {} blocks, {} stored only by it",
                bytes(s.logical_bytes),
                s.block_count,
                bytes(s.unique_stored_bytes)
            ),
        ),
        (
            "duckdb",
            format!(
                "{} (storage version {})",
                s.duckdb_library_version, s.storage_version
            ),
        ),
        ("file_blake3", s.file_blake3.clone()),
        ("pinned", s.pinned.to_string()),
    ])
}

fn preview_cell(v: &pb::PreviewValue) -> String {
    use pb::preview_value::Kind;
    match &v.kind {
        None => "NULL".into(),
        Some(Kind::Text(t)) => t.clone(),
        Some(Kind::Integer(i)) => i.to_string(),
        Some(Kind::BlobBytes(n)) => format!("<blob {n} bytes>"),
    }
}

/// check | result | expected | actual | time.
fn report_table(r: &pb::IntegrityReport) -> String {
    let mut t = Table::new(&["check", "result", "expected", "actual", "time"]).wide(0);
    for c in &r.checks {
        t.row(vec![
            c.name.clone(),
            if c.passed {
                "ok".into()
            } else {
                "FAILED".into()
            },
            truncate(&c.expected, 32),
            truncate(&c.actual, 32),
            proto_duration(&c.duration),
        ]);
    }
    t.render()
}

fn decisions_text(r: &pb::ApplyRetentionResponse, dry_run: bool) -> String {
    let removed = r.decisions.iter().filter(|d| d.removed).count();
    let mut t = Table::new(&["snapshot_id", "fate", "reason"]);
    for d in &r.decisions {
        let fate = match (d.removed, dry_run) {
            (true, true) => "would remove",
            (true, false) => "removed",
            (false, _) => "kept",
        };
        t.row(vec![d.snapshot_id.clone(), fate.into(), d.reason.clone()]);
    }
    let mut text = t.render();
    text.push_str(&match (dry_run, removed) {
        (_, 0) => "nothing to remove\n".to_string(),
        (true, n) => format!("{n} snapshot(s) would be removed\n"),
        (false, n) => format!(
            "{n} snapshot(s) removed; {} freed (event seq {})\n",
            bytes(r.bytes_freed),
            r.event_seq
        ),
    });
    text
}

/// Awaits `fut` while showing that something is happening: a spinner with the elapsed time on an
/// interactive stderr, one line before and after otherwise (logs stay readable).
async fn with_progress<T>(ctx: &Ctx, label: &str, fut: impl Future<Output = T>) -> T {
    let start = Instant::now();
    if !std::io::stderr().is_terminal() {
        if !ctx.json() {
            eprintln!("{label}…");
        }
        let r = fut.await;
        if !ctx.json() {
            eprintln!("{label}: done in {}", output::duration(start.elapsed()));
        }
        return r;
    }
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut i = 0;
    loop {
        tokio::select! {
            r = &mut fut => {
                eprintln!("\r\x1b[2K{label}: done in {}", output::duration(start.elapsed()));
                return r;
            }
            _ = tick.tick() => {
                eprint!("\r{} {label}… {:.1}s", FRAMES[i % FRAMES.len()], start.elapsed().as_secs_f64());
                i += 1;
            }
        }
    }
}

/// Row counts of the live database from the public RPCs (entity and link totals, lookups, the
/// measures' sets). `None` where no RPC exposes a table (area_geom) or a call failed: the
/// preview is advice, not a guard, so it never blocks a restore.
async fn live_counts(ctx: &Ctx) -> BTreeMap<String, Option<i64>> {
    let mut m: BTreeMap<String, Option<i64>> = BTreeMap::new();
    m.insert("measure".into(), count::<pb::Measure>(ctx).await.ok());
    m.insert("area".into(), count::<pb::Area>(ctx).await.ok());
    m.insert("priority".into(), count::<pb::Priority>(ctx).await.ok());
    m.insert("species".into(), count::<pb::Species>(ctx).await.ok());
    m.insert("habitat".into(), count::<pb::Habitat>(ctx).await.ok());
    m.insert("grant_table".into(), count::<pb::Grant>(ctx).await.ok());
    let mut c = ctx.entity();
    use pb::LinkType as T;
    for (table, t) in [
        ("measure_area_priority", T::MeasureAreaPriority),
        ("measure_area_priority_grant", T::MeasureAreaPriorityGrant),
        ("species_area_priority", T::SpeciesAreaPriority),
        ("habitat_creation_area", T::HabitatCreationArea),
        ("habitat_management_area", T::HabitatManagementArea),
        ("measure_has_species", T::MeasureSpecies),
    ] {
        let req = pb::ListLinksRequest {
            link_type: t as i32,
            page_size: 1,
            ..Default::default()
        };
        let n = c
            .list_links(ctx.req(req))
            .await
            .ok()
            .map(|r| r.into_inner().total_size);
        m.insert(table.into(), n);
    }
    let n = c
        .list_measure_types(ctx.req(pb::ListMeasureTypesRequest {}))
        .await;
    m.insert(
        "measure_type".into(),
        n.ok().map(|r| r.into_inner().measure_types.len() as i64),
    );
    let n = c
        .list_stakeholders(ctx.req(pb::ListStakeholdersRequest {}))
        .await;
    m.insert(
        "stakeholder".into(),
        n.ok().map(|r| r.into_inner().stakeholders.len() as i64),
    );
    let n = c.list_benefits(ctx.req(pb::ListBenefitsRequest {})).await;
    m.insert(
        "benefits".into(),
        n.ok().map(|r| r.into_inner().benefits.len() as i64),
    );
    let n = c
        .list_funding_schemes(ctx.req(pb::ListFundingSchemesRequest { area_id: 0 }))
        .await;
    m.insert(
        "area_funding_schemes".into(),
        n.ok().map(|r| r.into_inner().funding_schemes.len() as i64),
    );
    let measures = all::<pb::Measure>(ctx).await.ok();
    let sum = |f: fn(&pb::Measure) -> usize| {
        measures
            .as_ref()
            .map(|ms| ms.iter().map(f).sum::<usize>() as i64)
    };
    m.insert("measure_has_type".into(), sum(|x| x.measure_type_ids.len()));
    m.insert(
        "measure_has_stakeholder".into(),
        sum(|x| x.stakeholder_ids.len()),
    );
    m.insert("measure_has_benefits".into(), sum(|x| x.benefit_ids.len()));
    m
}

/// What a restore of `snap` would undo, humanly.
async fn restore_preview(ctx: &Ctx, snap: &pb::Snapshot) -> Result<String, Failure> {
    let status = ctx
        .snapshots()
        .get_status(ctx.req(pb::GetStatusRequest {}))
        .await?
        .into_inner();
    let mut text = format!(
        "Snapshot {} was taken {} ({}: {:?}) and holds events up to seq {}.\n",
        snap.snapshot_id,
        when(&snap.create_time),
        operation(snap.operation),
        snap.description,
        snap.event_head_seq
    );
    let newer = status.event_head_seq.saturating_sub(snap.event_head_seq);
    if newer == 0 {
        text.push_str(&format!(
            "The live event head is seq {}: nothing was recorded since.\n",
            status.event_head_seq
        ));
    } else {
        text.push_str(&format!(
            "The live event head is seq {}: the data changes of the {newer} event(s) after seq {} will be undone \
             (the event log itself is kept, and the restore is recorded as a new event):\n",
            status.event_head_seq, snap.event_head_seq
        ));
        const SHOWN: i32 = 10;
        let req = pb::ListEventsRequest {
            start_after_seq: snap.event_head_seq,
            page_size: SHOWN,
            ..Default::default()
        };
        if let Ok(r) = ctx.events().list_events(ctx.req(req)).await {
            let mut t = Table::new(&["seq", "time", "kind", "entity"]);
            for e in &r.get_ref().events {
                t.row(vec![
                    e.seq.to_string(),
                    when(&e.time),
                    short_enum(&enum_json!(pb::EventKind, e.kind), "EVENT_KIND_"),
                    format!("{} {}", e.entity_type, e.entity_id),
                ]);
            }
            text.push_str(&t.render());
            if newer > SHOWN as u64 {
                text.push_str(&format!(
                    "… and {} more (lnrs watch --from {} to see them all)\n",
                    newer - SHOWN as u64,
                    snap.event_head_seq + 1
                ));
            }
        }
    }
    let now = live_counts(ctx).await;
    let mut t = Table::new(&["table", "now", "after_restore", "change"]);
    let mut same = 0;
    for tb in &snap.tables {
        match now.get(&tb.table).copied().flatten() {
            Some(n) if n == tb.rows => same += 1,
            Some(n) => t.row(vec![
                tb.table.clone(),
                n.to_string(),
                tb.rows.to_string(),
                format!("{:+}", tb.rows - n),
            ]),
            None => t.row(vec![
                tb.table.clone(),
                "?".into(),
                tb.rows.to_string(),
                "?".into(),
            ]),
        }
    }
    text.push_str("Row counts that differ (now → after the restore):\n");
    if !t.is_empty() {
        text.push_str(&t.render());
    }
    if now.values().any(Option::is_none)
        || snap.tables.iter().any(|tb| !now.contains_key(&tb.table))
    {
        text.push_str("(? = the server's API does not expose this table's live row count)\n");
    }
    text.push_str(&format!(
        "{same} table(s) have the same row count; rows updated since the snapshot are reverted too.\n\
         A safety snapshot of the current state is taken first, so the restore itself can be undone.\n"
    ));
    Ok(text)
}

async fn restore(ctx: &Ctx, id: &str, yes: bool) -> Result<(), Failure> {
    let snap = get(ctx, id).await?;
    if !(yes && ctx.json()) {
        let text = restore_preview(ctx, &snap).await?;
        if ctx.json() {
            eprint!("{text}");
        } else {
            output::print(&text)?;
        }
    }
    if !yes {
        confirm_word(
            &format!("This replaces the live database with snapshot {id}."),
            "RESTORE",
        )?;
    }
    let req = pb::RestoreSnapshotRequest {
        snapshot_id: id.to_string(),
        confirm_snapshot_id: id.to_string(),
        request_id: ctx.request_id(),
    };
    let label = format!("restoring snapshot {id}");
    let r = with_progress(
        ctx,
        &label,
        ctx.snapshots().restore_snapshot(ctx.long_req(req)),
    )
    .await?
    .into_inner();
    if ctx.json() {
        output::print_json(&r.to_json())?;
    } else {
        let report = r.report.clone().unwrap_or_default();
        let mut text = report_table(&report);
        let failed = report.checks.iter().filter(|c| !c.passed).count();
        text.push_str(&key_values(&[
            (
                "checks",
                format!("{} run, {failed} failed", report.checks.len()),
            ),
            (
                "rolled back",
                if r.rolled_back {
                    format!("YES: {}", r.rollback_reason)
                } else {
                    "no".into()
                },
            ),
            (
                "safety snapshot",
                format!("{} (restore it to undo this restore)", r.safety_snapshot_id),
            ),
            ("event seq", r.event_seq.to_string()),
            ("took", proto_duration(&r.duration)),
            ("replayed", r.replayed.to_string()),
        ]));
        if !r.rolled_back {
            text.push_str(&format!("restored snapshot {id}\n"));
        }
        output::print(&text)?;
    }
    if r.rolled_back {
        return Err(Failure::Integrity(format!(
            "the restore of {id} was rolled back ({}); the live database is as it was before",
            r.rollback_reason
        )));
    }
    Ok(())
}

/// Runs `lnrs status`.
pub(crate) async fn status(ctx: &Ctx) -> Result<(), Failure> {
    let s = ctx
        .snapshots()
        .get_status(ctx.req(pb::GetStatusRequest {}))
        .await?
        .into_inner();
    if ctx.json() {
        return output::print_json(&s.to_json());
    }
    let state = short_enum(&enum_json!(pb::SnapshotState, s.state), "SNAPSHOT_STATE_");
    let within = s.retention_keep_within.as_ref().map_or(String::new(), |_| {
        format!(
            ", and all younger than {}",
            proto_duration(&s.retention_keep_within)
        )
    });
    output::print(&key_values(&[
        (
            "snapshots",
            if s.reason.is_empty() {
                state
            } else {
                format!("{state}: {}", s.reason)
            },
        ),
        (
            "policy",
            short_enum(
                &enum_json!(pb::SnapshotPolicy, s.policy),
                "SNAPSHOT_POLICY_",
            ),
        ),
        (
            "snapshot store",
            format!(
                "{} snapshot(s), {} logical, {} stored",
                s.snapshot_count,
                bytes(s.logical_bytes),
                bytes(s.stored_bytes)
            ),
        ),
        (
            "retention",
            format!("keep last {}{within}", s.retention_keep_last),
        ),
        (
            "events",
            if s.event_head_seq == 0 {
                "none yet".to_string()
            } else {
                format!("seq {} to {}", s.event_first_seq, s.event_head_seq)
            },
        ),
        ("restore running", s.restore_in_progress.to_string()),
        (
            "database",
            if s.database_available {
                bytes(s.database_bytes)
            } else {
                format!("UNAVAILABLE: {}", s.database_reason)
            },
        ),
        (
            "duckdb",
            format!(
                "{} (storage version {})",
                s.duckdb_library_version, s.storage_version
            ),
        ),
    ]))
}
