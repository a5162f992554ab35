//! The `lnrs` command line: `serve` runs the server; the other subcommands are gRPC clients
//! (like etcdctl for etcd) or local tools.

pub mod client;
pub mod descriptor;
pub mod entity;
pub mod enums;
pub mod history;
pub mod json;
pub mod link;
pub mod output;
pub mod pager;
pub mod replica;
pub mod serve;
pub mod snapshot;
pub mod transfer;
pub mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// LNRS service: the server and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "lnrs", version, about, after_help = client::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant (the server's flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(serve::ServeArgs),
    /// Write the reference LNRS dataset to a new DuckDB file.
    Refdata {
        /// Path of the database file to create (must not exist).
        path: PathBuf,
        /// Row-count multiplier (benchmarks).
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// Write the contract's descriptor set (with the HTTP/JSON annotations) for a gateway.
    DescriptorSet {
        /// Path of the file to write (e.g. lnrs.pb; replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measures: list, get, create, update, delete.
    Measure(entity::EntityCommand),
    /// Areas: list, get, create, update, delete.
    Area(entity::EntityCommand),
    /// Biodiversity priorities: list, get, create, update, delete.
    Priority(entity::EntityCommand),
    /// Species: list, get, create, update, delete.
    Species(entity::EntityCommand),
    /// Habitats: list, get, create, update, delete.
    Habitat(entity::EntityCommand),
    /// Grants: list, get, create, update, delete.
    Grant(entity::EntityCommand),
    /// Links between entities: create, delete, list, batch-map.
    Link(link::LinkCommand),
    /// Lookup tables: measure types, stakeholders, benefits, funding schemes.
    Lookup(entity::LookupCommand),
    /// Snapshots: create, list, show, preview, verify, restore, delete, retention.
    Snapshot(snapshot::SnapshotCommand),
    /// The server's snapshot, event-log and database status.
    Status(client::StatusCommand),
    /// Put back the rows one delete removed, keeping everyone's later work.
    Undelete(history::UndeleteCommand),
    /// Row-level differences between two snapshots, event seqs or the live database.
    Diff(history::DiffCommand),
    /// Every change to one entity, newest first.
    History(history::HistoryCommand),
    /// Tail the event log; reconnects by itself and never skips or repeats an event.
    Watch(watch::WatchCommand),
    /// The replica on object storage: disaster recovery, read drill, retention.
    Replica(replica::ReplicaCommand),
    /// Import the original app's database (its DuckDB file, or a ZIP of its CSV exports).
    Import(transfer::ImportCommand),
    /// Export tables as CSV, Parquet, a DuckDB file or GeoJSON, live or from a snapshot.
    Export(transfer::ExportCommand),
}

/// Builds a tokio runtime for a process entry point (server, client, benchmark); on failure the
/// reason is printed and the exit code returned.
pub fn runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}
