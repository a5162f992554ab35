//! `lnrs snapshot create|list|show|preview|verify|restore|pin|unpin|update|delete|retention` and
//! `lnrs status`.
//! `restore` first shows what the live database would lose (events after the snapshot, row-count
//! differences per table), demands that RESTORE be typed, shows progress while the unary RPC
//! runs, then prints the integrity report and whether the server rolled back.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;
use tonic::Status;

use super::client::{confirm, confirm_word, ClientArgs, Ctx, Failure};
use super::enums::proto_value_enum;
use super::json::{enum_json, short_enum, timestamp, ToJson};
use super::output::{self, bytes, key_values, proto_duration, truncate, Table};
use super::pager::{pages, Page, PageArgs};
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
    List(ListArgs),
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
        /// Verify the replica's copy (object storage) instead of the local one.
        #[arg(long)]
        replica: bool,
    },
    /// Replace the live database with a snapshot (verified; rolled back on any failure).
    Restore {
        /// The snapshot id (or give --seq / --time for a point in time).
        #[arg(required_unless_present_any = ["seq", "time"], conflicts_with_all = ["seq", "time"])]
        id: Option<String>,
        /// Restore the data as it was right after this event seq.
        #[arg(long, conflicts_with = "time")]
        seq: Option<u64>,
        /// Restore the data as it was at this time (RFC 3339, e.g. 2026-12-01T14:30:00Z).
        #[arg(long)]
        time: Option<String>,
        /// With --seq/--time: read the replica's snapshots and log instead of the local ones.
        #[arg(long)]
        replica: bool,
        /// With --seq/--time: only show the plan (base snapshot, events to replay, bytes).
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Pin a snapshot: retention never removes it, and deleting it needs --force.
    Pin {
        /// The snapshot id.
        id: String,
    },
    /// Unpin a snapshot: retention treats it like any other again.
    Unpin {
        /// The snapshot id.
        id: String,
    },
    /// Change a snapshot's description or labels.
    Update(UpdateArgs),
    /// Delete a snapshot (its blocks are freed when no other snapshot uses them).
    Delete {
        /// The snapshot id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Delete it even if it is pinned.
        #[arg(long)]
        force: bool,
    },
    /// Apply a retention policy now (or only show what it would remove).
    Retention(RetentionArgs),
    /// Save one snapshot as a portable file (manifest + blocks, self-checking).
    Save {
        /// The snapshot id ("latest": the newest of the server's own history).
        id: String,
        /// The file to write (must not exist).
        file: PathBuf,
    },
    /// Load a file written by `snapshot save` into the server's catalog (deep-verified first).
    Load {
        /// The file to upload.
        file: PathBuf,
    },
}

/// Flags of `lnrs snapshot list`.
#[derive(Debug, Args)]
pub struct ListArgs {
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
    #[command(flatten)]
    pages: PageArgs,
}

/// Flags of `lnrs snapshot update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The snapshot id.
    id: String,
    /// The new description.
    #[arg(long, short = 'd')]
    description: Option<String>,
    /// KEY=VALUE label (repeatable); the labels given replace all of the snapshot's labels.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Remove every label.
    #[arg(long, conflicts_with = "labels")]
    clear_labels: bool,
}

/// Flags of `lnrs snapshot retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
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
}

proto_value_enum!(
    /// Why a snapshot was taken (filter): the proto's SnapshotOperation without its prefix.
    OperationArg(pb::SnapshotOperation),
    "SNAPSHOT_OPERATION_"
);

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
    match action {
        SnapshotAction::Create {
            description,
            labels,
        } => create(ctx, description, &labels).await,
        SnapshotAction::List(args) => list(ctx, args).await,
        SnapshotAction::Show { id } => show(ctx, &id).await,
        SnapshotAction::Preview { id, table, limit } => preview(ctx, id, table, limit).await,
        SnapshotAction::Verify { id, deep, replica } => verify(ctx, &id, deep, replica).await,
        SnapshotAction::Restore {
            id,
            seq,
            time,
            replica,
            dry_run,
            yes,
        } => match (id, point(seq, time)?) {
            (Some(id), None) => restore(ctx, &id, yes).await,
            (_, Some(point)) => restore_to_point(ctx, point, replica, dry_run, yes).await,
            (None, None) => Err(Failure::usage("give a snapshot id, --seq or --time")),
        },
        SnapshotAction::Pin { id } => update(ctx, &id, pin_change(true)).await,
        SnapshotAction::Unpin { id } => update(ctx, &id, pin_change(false)).await,
        SnapshotAction::Update(args) => {
            let id = args.id.clone();
            update(ctx, &id, update_change(args)?).await
        }
        SnapshotAction::Delete { id, yes, force } => delete(ctx, &id, yes, force).await,
        SnapshotAction::Retention(args) => retention(ctx, args).await,
        SnapshotAction::Save { id, file } => super::transfer::save(ctx, &id, &file).await,
        SnapshotAction::Load { file } => super::transfer::load(ctx, &file).await,
    }
}

/// `--label KEY=VALUE` flags as a map.
fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--label expects KEY=VALUE, got {l:?}")))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// `--json` of a call that changed one snapshot (create, pin, update): the snapshot as it now
/// is, the event that recorded it and whether it was a replay.
fn print_snapshot_change(
    snapshot: &Option<pb::Snapshot>,
    event_seq: u64,
    replayed: bool,
) -> Result<(), Failure> {
    output::print_json(&json!({
        "snapshot": snapshot.to_json(), "event_seq": event_seq, "replayed": replayed,
    }))
}

async fn create(ctx: &Ctx, description: String, labels: &[String]) -> Result<(), Failure> {
    let req = pb::CreateSnapshotRequest {
        description,
        labels: parse_labels(labels)?,
        request_id: ctx.request_id(),
    };
    let r = ctx
        .snapshots()
        .create_snapshot(ctx.long_req(req))
        .await?
        .into_inner();
    if ctx.json() {
        return print_snapshot_change(&r.snapshot, r.event_seq, r.replayed);
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

async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), Failure> {
    let fetch = |page_token| {
        let req = pb::ListSnapshotsRequest {
            operation: args.operation.map_or(0, |o| o.0 as i32),
            entity_type: args.entity_type.clone(),
            entity_id: args.entity_id.clone(),
            page_size: args.page_size,
            page_token,
            ..Default::default()
        };
        async move {
            let r = ctx.snapshots().list_snapshots(ctx.req(req)).await?;
            let r = r.into_inner();
            Ok(Page {
                rows: r.snapshots,
                next_page_token: r.next_page_token,
                total_size: r.total_size,
            })
        }
    };
    let page = pages(&args.pages, fetch).await?;
    if ctx.json() {
        return output::print_json(&page.to_json("snapshots"));
    }
    let mut t = Table::new(&[
        "snapshot_id",
        "created",
        "operation",
        "entity",
        "event_head",
        "size",
        "unique",
        "pinned",
        "description",
    ]);
    for s in &page.rows {
        t.row(vec![
            s.snapshot_id.clone(),
            when(&s.create_time),
            operation(s.operation),
            entity(s),
            s.event_head_seq.to_string(),
            bytes(s.logical_bytes),
            bytes(s.unique_stored_bytes),
            if s.pinned { "yes" } else { "-" }.into(),
            s.description.clone(),
        ]);
    }
    output::print(&t.render())?;
    page.print_footer("snapshots");
    Ok(())
}

async fn show(ctx: &Ctx, id: &str) -> Result<(), Failure> {
    let s = get(ctx, id).await?;
    if ctx.json() {
        return output::print_json(&json!({ "snapshot": s.to_json() }));
    }
    let mut text = summary(&s);
    text.push('\n');
    text.push_str(&rows_table(s.tables.iter().map(|t| (&t.table, t.rows))));
    output::print(&text)
}

async fn preview(
    ctx: &Ctx,
    snapshot_id: String,
    table: Option<String>,
    limit: i32,
) -> Result<(), Failure> {
    let req = pb::PreviewSnapshotRequest {
        snapshot_id,
        table: table.clone().unwrap_or_default(),
        limit,
    };
    let r = ctx
        .snapshots()
        .preview_snapshot(ctx.long_req(req))
        .await?
        .into_inner();
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
    text.push_str(&rows_table(r.table_rows.iter().map(|t| (&t.table, t.rows))));
    output::print(&text)
}

/// table | rows.
fn rows_table<'a>(tables: impl Iterator<Item = (&'a String, i64)>) -> String {
    let mut t = Table::new(&["table", "rows"]);
    for (table, rows) in tables {
        t.row(vec![table.clone(), rows.to_string()]);
    }
    t.render()
}

async fn verify(ctx: &Ctx, id: &str, deep: bool, replica: bool) -> Result<(), Failure> {
    let mode = if deep {
        pb::VerifyMode::Deep
    } else {
        pb::VerifyMode::Quick
    };
    let req = pb::VerifySnapshotRequest {
        snapshot_id: id.to_string(),
        mode: mode as i32,
        source: if replica {
            pb::HistorySource::Replica
        } else {
            pb::HistorySource::Local
        } as i32,
    };
    let label = format!(
        "verifying snapshot {id}{} ({})",
        if replica { " in the replica" } else { "" },
        if deep { "deep" } else { "quick" }
    );
    let mut client = ctx.snapshots();
    let call = client.verify_snapshot(ctx.long_req(req));
    let report = with_progress(ctx, &label, call)
        .await?
        .into_inner()
        .report
        .unwrap_or_default();
    if ctx.json() {
        output::print_json(&json!({ "report": report.to_json() }))?;
    } else {
        output::print(&report_table(&report))?;
    }
    let failed = report.checks.iter().filter(|c| !c.passed).count();
    if !report.passed {
        return Err(Failure::Integrity(format!(
            "snapshot {id}: {failed} of {} checks failed",
            report.checks.len()
        )));
    }
    if !ctx.json() {
        output::print(&format!(
            "snapshot {id}: all {} checks passed\n",
            report.checks.len()
        ))?;
    }
    Ok(())
}

/// Prints `text` before a question: on stdout, or on stderr with --json (stdout keeps one
/// document).
fn print_preview(ctx: &Ctx, text: &str) -> Result<(), Failure> {
    if ctx.json() {
        eprint!("{text}");
        Ok(())
    } else {
        output::print(text)
    }
}

/// What `lnrs snapshot update|pin|unpin` changes: the request's fields and its update_mask.
struct Change {
    req: pb::UpdateSnapshotRequest,
    /// What the confirmation line says was done, e.g. "pinned".
    done: &'static str,
}

impl Change {
    fn new(mut req: pb::UpdateSnapshotRequest, paths: Vec<&str>, done: &'static str) -> Self {
        req.update_mask = Some(prost_types::FieldMask {
            paths: paths.into_iter().map(str::to_string).collect(),
        });
        Change { req, done }
    }
}

fn pin_change(pinned: bool) -> Change {
    let req = pb::UpdateSnapshotRequest {
        pinned,
        ..Default::default()
    };
    Change::new(
        req,
        vec!["pinned"],
        if pinned { "pinned" } else { "unpinned" },
    )
}

fn update_change(args: UpdateArgs) -> Result<Change, Failure> {
    let mut paths = Vec::new();
    if args.description.is_some() {
        paths.push("description");
    }
    if !args.labels.is_empty() || args.clear_labels {
        paths.push("labels");
    }
    if paths.is_empty() {
        return Err(Failure::usage(
            "nothing to change: give --description, --label or --clear-labels",
        ));
    }
    let req = pb::UpdateSnapshotRequest {
        description: args.description.unwrap_or_default(),
        labels: parse_labels(&args.labels)?,
        ..Default::default()
    };
    Ok(Change::new(req, paths, "updated"))
}

async fn update(ctx: &Ctx, id: &str, change: Change) -> Result<(), Failure> {
    let req = pb::UpdateSnapshotRequest {
        snapshot_id: id.to_string(),
        request_id: ctx.request_id(),
        ..change.req
    };
    let r = ctx
        .snapshots()
        .update_snapshot(ctx.req(req))
        .await?
        .into_inner();
    if ctx.json() {
        return print_snapshot_change(&r.snapshot, r.event_seq, r.replayed);
    }
    let s = r.snapshot.ok_or_else(|| missing("snapshot"))?;
    let mut text = summary(&s);
    text.push_str(&format!(
        "{} snapshot {id} (event seq {})\n",
        change.done, r.event_seq
    ));
    output::print(&text)
}

async fn delete(ctx: &Ctx, id: &str, yes: bool, force: bool) -> Result<(), Failure> {
    let s = get(ctx, id).await?;
    if !yes {
        print_preview(ctx, &summary(&s))?;
        confirm(&format!("Delete snapshot {id}?"))?;
    }
    let req = pb::DeleteSnapshotRequest {
        snapshot_id: id.to_string(),
        request_id: ctx.request_id(),
        force,
    };
    let r = ctx
        .snapshots()
        .delete_snapshot(ctx.long_req(req))
        .await?
        .into_inner();
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

async fn retention(ctx: &Ctx, args: RetentionArgs) -> Result<(), Failure> {
    let request = |dry_run: bool| pb::ApplyRetentionRequest {
        keep_last: args.keep_last.unwrap_or(0),
        keep_within: args.keep_within.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        dry_run,
    };
    let apply = |dry_run| async move {
        let r = ctx
            .snapshots()
            .apply_retention(ctx.long_req(request(dry_run)))
            .await?;
        Ok::<_, Failure>(r.into_inner())
    };
    if !args.dry_run && !args.yes {
        // Show the plan (a dry run) and ask; nothing to remove, nothing to ask.
        let plan = apply(true).await?;
        let removed = plan.decisions.iter().filter(|d| d.removed).count();
        print_preview(ctx, &decisions_text(&plan, true))?;
        if removed == 0 {
            if ctx.json() {
                output::print_json(&plan.to_json())?;
            }
            return Ok(());
        }
        confirm(&format!("Remove {removed} snapshot(s)?"))?;
    }
    let r = apply(args.dry_run).await?;
    if ctx.json() {
        return output::print_json(&r.to_json());
    }
    output::print(&decisions_text(&r, args.dry_run))
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

/// `text`, or "-" when it is empty.
fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

/// What a delete snapshot is about: "measure 42" (empty for other snapshots).
fn entity(s: &pb::Snapshot) -> String {
    or_dash(
        format!("{} {}", s.entity_type, s.entity_id)
            .trim()
            .to_string(),
    )
}

fn summary(s: &pb::Snapshot) -> String {
    let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    key_values(&[
        ("snapshot_id", s.snapshot_id.clone()),
        (
            "created",
            s.create_time.as_ref().map_or("-".into(), timestamp),
        ),
        ("description", s.description.clone()),
        ("operation", operation(s.operation)),
        ("entity", entity(s)),
        ("request_id", or_dash(s.request_id.clone())),
        ("labels", or_dash(labels.join(", "))),
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

/// What a restore of `snap` would undo, humanly: the events recorded since, and the tables
/// whose row counts would change (live counts from GetStatus).
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
    text.push_str(&events_since(ctx, snap.event_head_seq, status.event_head_seq).await);
    text.push_str(&row_count_changes(&status.table_rows, &snap.tables));
    text.push_str(
        "A safety snapshot of the current state is taken first, so the restore itself can be undone.\n",
    );
    Ok(text)
}

/// The events after seq `since` up to the live `head` (the first few of them): their data
/// changes are what a restore undoes.
async fn events_since(ctx: &Ctx, since: u64, head: u64) -> String {
    const SHOWN: i32 = 10;
    let newer = head.saturating_sub(since);
    if newer == 0 {
        return format!("The live event head is seq {head}: nothing was recorded since.\n");
    }
    let mut text = format!(
        "The live event head is seq {head}: the data changes of the {newer} event(s) after seq {since} will be undone \
         (the event log itself is kept, and the restore is recorded as a new event):\n",
    );
    let req = pb::ListEventsRequest {
        start_after_seq: since,
        page_size: SHOWN,
        ..Default::default()
    };
    // Advice, not a guard: without the list the preview still says how many events there are.
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
                since + 1
            ));
        }
    }
    text
}

/// table | now | after_restore | change, for every table whose row count the restore changes.
/// "?" where the server reported no live count (e.g. while another restore runs).
fn row_count_changes(live: &[pb::TableRowCount], snapshot: &[pb::SnapshotTable]) -> String {
    let now: BTreeMap<&str, i64> = live.iter().map(|t| (t.table.as_str(), t.rows)).collect();
    let mut t = Table::new(&["table", "now", "after_restore", "change"]);
    let (mut same, mut unknown) = (0, false);
    for tb in snapshot {
        let after = tb.rows.to_string();
        match now.get(tb.table.as_str()) {
            Some(&n) if n == tb.rows => same += 1,
            Some(&n) => t.row(vec![
                tb.table.clone(),
                n.to_string(),
                after,
                format!("{:+}", tb.rows - n),
            ]),
            None => {
                unknown = true;
                t.row(vec![tb.table.clone(), "?".into(), after, "?".into()]);
            }
        }
    }
    let mut text = "Row counts that differ (now → after the restore):\n".to_string();
    if !t.is_empty() {
        text.push_str(&t.render());
    }
    if unknown {
        text.push_str("(? = the server did not report this table's live row count)\n");
    }
    text.push_str(&format!(
        "{same} table(s) have the same row count; rows updated since the snapshot are reverted too.\n"
    ));
    text
}

async fn restore(ctx: &Ctx, id: &str, yes: bool) -> Result<(), Failure> {
    let snap = get(ctx, id).await?;
    if !(yes && ctx.json()) {
        print_preview(ctx, &restore_preview(ctx, &snap).await?)?;
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
    let mut client = ctx.snapshots();
    let call = client.restore_snapshot(ctx.long_req(req));
    let r = with_progress(ctx, &label, call).await?.into_inner();
    if ctx.json() {
        output::print_json(&r.to_json())?;
    } else {
        output::print(&restored_text(id, &r))?;
    }
    if r.rolled_back {
        return Err(Failure::Integrity(format!(
            "the restore of {id} was rolled back ({}); the live database is as it was before",
            r.rollback_reason
        )));
    }
    Ok(())
}

/// The point of `--seq` / `--time`.
fn point(
    seq: Option<u64>,
    time: Option<String>,
) -> Result<Option<pb::restore_to_point_request::Point>, Failure> {
    use pb::restore_to_point_request::Point;
    Ok(match (seq, time) {
        (Some(s), _) => Some(Point::EventSeq(s)),
        (None, Some(t)) => {
            let t = chrono::DateTime::parse_from_rfc3339(&t).map_err(|e| {
                Failure::usage(format!("--time: {e} (RFC 3339, e.g. 2026-12-01T14:30:00Z)"))
            })?;
            Some(Point::Time(prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            }))
        }
        (None, None) => None,
    })
}

/// `lnrs snapshot restore --seq N | --time T`: shows the plan, asks, restores.
async fn restore_to_point(
    ctx: &Ctx,
    point: pb::restore_to_point_request::Point,
    replica: bool,
    dry_run: bool,
    yes: bool,
) -> Result<(), Failure> {
    let source = if replica {
        pb::HistorySource::Replica
    } else {
        pb::HistorySource::Local
    } as i32;
    let req = |dry_run: bool| pb::RestoreToPointRequest {
        point: Some(point),
        source,
        dry_run,
        request_id: if dry_run {
            String::new()
        } else {
            ctx.request_id()
        },
    };
    let mut client = ctx.snapshots();
    let planned = client
        .restore_to_point(ctx.long_req(req(true)))
        .await?
        .into_inner();
    let plan = planned.plan.unwrap_or_default();
    if dry_run {
        if ctx.json() {
            return output::print_json(&plan.to_json());
        }
        return output::print(&plan_text(&plan));
    }
    if !ctx.json() {
        output::print(&plan_text(&plan))?;
    }
    if !yes {
        confirm_word(
            &format!(
                "This replaces the live database with its state right after event {}.",
                plan.target_event_seq
            ),
            "RESTORE",
        )?;
    }
    let label = format!("restoring to event {}", plan.target_event_seq);
    let call = client.restore_to_point(ctx.long_req(req(false)));
    let r = with_progress(ctx, &label, call).await?.into_inner();
    let restored = r.restore.clone().unwrap_or_default();
    if ctx.json() {
        output::print_json(&r.to_json())?;
    } else {
        let id = restored
            .restored
            .as_ref()
            .map_or("", |s| s.snapshot_id.as_str());
        output::print(&restored_text(id, &restored))?;
    }
    if restored.rolled_back {
        return Err(Failure::Integrity(format!(
            "the restore was rolled back ({}); the live database is as it was before",
            restored.rollback_reason
        )));
    }
    Ok(())
}

/// A point-in-time plan, for people.
fn plan_text(p: &pb::RestorePlan) -> String {
    key_values(&[
        (
            "target",
            format!("right after event {}", p.target_event_seq),
        ),
        (
            "from snapshot",
            format!(
                "{} (state after event {})",
                p.base_snapshot_id, p.base_event_seq
            ),
        ),
        ("events to replay", p.events_to_replay.to_string()),
        ("bytes to fetch", bytes(p.bytes_to_fetch)),
        (
            "reachable",
            format!("events {}..={}", p.earliest_reachable_seq, p.head_seq),
        ),
    ])
}

/// The integrity report of a restore, whether it rolled back, and how to undo it.
fn restored_text(id: &str, r: &pb::RestoreSnapshotResponse) -> String {
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
    text
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
        ("replica", replica_line(s.replica.as_ref())),
        (
            "capture ahead",
            capture_ahead_line(s.capture_ahead.as_ref()),
        ),
        (
            "follower",
            s.follower
                .as_ref()
                .map_or("no (this server takes writes)".into(), |f| {
                    format!(
                        "of {}: applied to seq {} of {}, staleness {}{}",
                        f.url,
                        f.applied_seq,
                        f.source_head_seq,
                        if f.staleness_seconds < 0.0 {
                            "unknown (not caught up yet)".to_string()
                        } else {
                            format!("{:.1}s", f.staleness_seconds)
                        },
                        if f.error.is_empty() {
                            String::new()
                        } else {
                            format!(" (last poll failed: {})", f.error)
                        }
                    )
                }),
        ),
        ("event sink", event_sink_line(s.event_sink.as_ref())),
    ]))
}

/// The NATS event sink in one line: where, whether connected, how far behind, any gap.
fn event_sink_line(n: Option<&pb::EventSinkStatus>) -> String {
    let Some(n) = n else {
        return "none configured".into();
    };
    let mut line = format!(
        "NATS {} stream {} ({}.<kind>), {}; published to seq {}, lag {} events",
        n.url,
        n.stream,
        n.subject_prefix,
        if n.connected {
            "connected"
        } else {
            "NOT connected"
        },
        n.published_seq,
        n.lag_events
    );
    if n.gap {
        line += &format!(
            "; GAP: {} event(s) never published (newest range {}..={}: the log no longer had them)",
            n.skipped_events, n.gap_first_seq, n.gap_last_seq
        );
    }
    if !n.error.is_empty() {
        line += &format!(" (last error: {})", n.error);
    }
    line
}

/// Capture ahead in one line: state, and how the snapshots since start were made.
fn capture_ahead_line(a: Option<&pb::CaptureAheadStatus>) -> String {
    let Some(a) = a else {
        return "not reported".into();
    };
    let state = pb::CaptureAheadState::try_from(a.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CAPTURE_AHEAD_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    let mut line = format!(
        "{state} at seq {}; {} reused, {} captured at the delete, {} cancelled, {} failed",
        a.event_seq, a.reused, a.fallbacks, a.cancelled, a.failed
    );
    if a.verified > 0 {
        line += &format!(", {} verified ({} mismatches)", a.verified, a.mismatches);
    }
    if !a.last_error.is_empty() {
        line += &format!(" (last error: {})", a.last_error);
    }
    line
}

/// One line for the replica: where, how, how far behind.
fn replica_line(r: Option<&pb::ReplicaStatus>) -> String {
    let Some(r) = r else {
        return "none configured".into();
    };
    let state = short_enum(&enum_json!(pb::ReplicaState, r.state), "REPLICA_STATE_");
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.reason)
    };
    format!(
        "{} {}, {state}{reason}; replicated to seq {} of {}, lag {} events / {:.1}s / {}; {} snapshot(s) there, {} pending",
        r.url,
        r.mode,
        r.replicated_seq,
        r.head_seq,
        r.lag_events,
        r.lag_seconds,
        bytes(r.lag_bytes),
        r.snapshots_replicated,
        r.snapshots_pending
    )
}
