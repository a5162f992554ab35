//! `lnrs replica …`: disaster recovery from the replica (a local tool: it writes a data
//! directory, no server involved), and the replica's read drill and retention (gRPC clients).

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{ClientArgs, Ctx, Failure};
use super::output;
use super::serve::ServeArgs;
use crate::pb;

/// `lnrs replica …`.
#[derive(Debug, Args)]
pub struct ReplicaCommand {
    #[command(subcommand)]
    pub action: ReplicaAction,
}

/// What to do with the replica.
// Parsed once per process: the size of the server's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ReplicaAction {
    /// Rebuild a database from the replica into an EMPTY data directory: the newest snapshot
    /// (or --snapshot), every block checked, deep verified, then the shipped log replayed up to
    /// the replicated head and checked against the primary's fingerprints. Takes the server's
    /// settings (--replica-url, --data-dir, a --config file, LNRS_* variables).
    Restore {
        /// Recover this snapshot (and the log after it) instead of the newest.
        #[arg(long)]
        snapshot: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// One run of the rotating read drill (a server must run with a replica).
    Drill {
        /// Percent of the remote blocks to read (default: the server's replica_drill_share_percent).
        #[arg(long)]
        share: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply the replica's retention now and collect unreferenced blocks and old log segments.
    Retention {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs `lnrs replica restore` (local); returns the process exit code.
pub fn restore(
    snapshot: Option<String>,
    as_json: bool,
    serve: ServeArgs,
) -> std::process::ExitCode {
    let config = match serve.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if config.replica.is_none() {
        eprintln!(
            "error: --replica-url (or LNRS_REPLICA_URL, or replica_url in --config) is required"
        );
        return std::process::ExitCode::from(2);
    }
    match crate::app::replica::recover(&config, snapshot.as_deref()) {
        Ok(r) => {
            if as_json {
                println!(
                    "{}",
                    json!({
                        "snapshot_id": r.snapshot_id,
                        "snapshot_seq": r.snapshot_seq,
                        "head_seq": r.head_seq,
                        "events_replayed": r.events_replayed,
                        "segments": r.segments,
                        "elapsed_ms": r.elapsed.as_millis() as u64,
                        "fingerprints": r.fingerprints,
                    })
                );
            } else {
                println!(
                    "recovered snapshot {} (seq {}) + {} events from {} segment(s): head seq {}, fingerprints match, in {:.1?}",
                    r.snapshot_id, r.snapshot_seq, r.events_replayed, r.segments, r.head_seq, r.elapsed
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.public_message());
            tracing::error!(error = %e, "replica restore failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The client subcommands.
pub async fn run(action: ReplicaAction) -> Result<(), Failure> {
    match action {
        ReplicaAction::Restore { .. } => Err(Failure::usage("not a client command")),
        ReplicaAction::Drill { share, client } => {
            let ctx = Ctx::new(client)?;
            let d = ctx
                .snapshots()
                .drill_replica(ctx.long_req(pb::DrillReplicaRequest {
                    share_percent: share.unwrap_or(0),
                }))
                .await?
                .into_inner();
            if ctx.json() {
                output::print_json(&json!({
                    "run": d.run, "cycle": d.cycle, "blocks_total": d.blocks_total,
                    "blocks_read": d.blocks_read, "bytes_read": d.bytes_read, "damaged": d.damaged,
                }))?;
            } else {
                output::print(&format!(
                    "drill run {} (every block read within {} runs): {} of {} blocks read, {} damaged\n{}",
                    d.run,
                    d.cycle,
                    d.blocks_read,
                    d.blocks_total,
                    d.damaged.len(),
                    d.damaged.join("\n")
                ))?;
            }
            match d.damaged.is_empty() {
                true => Ok(()),
                false => Err(Failure::Integrity(format!(
                    "{} damaged block(s)",
                    d.damaged.len()
                ))),
            }
        }
        ReplicaAction::Retention { dry_run, client } => {
            let ctx = Ctx::new(client)?;
            let g = ctx
                .snapshots()
                .apply_replica_retention(ctx.long_req(pb::ApplyReplicaRetentionRequest { dry_run }))
                .await?
                .into_inner();
            if ctx.json() {
                output::print_json(&json!({
                    "kept": g.kept_snapshot_ids, "removed": g.removed_snapshot_ids,
                    "blocks_removed": g.blocks_removed, "bytes_freed": g.bytes_freed,
                    "segments_removed": g.segments_removed,
                }))?;
            } else {
                output::print(&format!(
                    "{}kept {} snapshot(s), removed {}: {}; {} block(s) ({} bytes) and {} log segment(s) collected",
                    if dry_run { "dry run: " } else { "" },
                    g.kept_snapshot_ids.len(),
                    g.removed_snapshot_ids.len(),
                    g.removed_snapshot_ids.join(", "),
                    g.blocks_removed,
                    g.bytes_freed,
                    g.segments_removed
                ))?;
            }
            Ok(())
        }
    }
}
