//! LNRS service library: a gRPC service that owns the Local Nature Recovery Strategy database in
//! an embedded DuckDB file and makes every destructive change recoverable.
//!
//! # Layout
//! - [`config`]: the one validated configuration (defaults < file < env < flags).
//! - [`domain`]: entity/link definitions, records, validation, table inventory (pure, no I/O).
//! - [`storage`]: DuckDB schema and migrations, the single writer thread, the read pool,
//!   entity/link queries, cascade plans, fingerprint-tracking changes, inspection.
//! - [`snapshot`]: capture, block store, manifests, catalog, verify, assemble, retention, GC.
//! - [`events`]: the durable event log and the subscriber fan-out.
//! - [`app`]: use cases composing storage, snapshots and events (deletes, restores, …).
//! - [`error`]: the application error and its one mapping to `tonic::Status`.
//! - [`service`]: the tonic services (EntityService, SnapshotService, EventService).
//! - [`server`]: `run(listener, config, shutdown)`: router, health, reflection, shutdown.
//! - [`metrics`]: Prometheus metrics (gRPC families, app numbers) and the `/metrics` listener.
//! - [`auth`]: bearer tokens, roles and the RPC → role table (a tower layer).
//! - [`tls`]: TLS / mTLS settings → rustls through tonic.
//! - [`refdata`]: the deterministic reference LNRS dataset.
//! - [`cli`]: the `lnrs` command line (server flags, client subcommands).
//! - [`fault`]: fail points for crash tests.
//!
//! Dependency direction: server → service → app → {storage, snapshot, events} → domain.
//! `storage`, `snapshot` and `events` never import tonic.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod fault;
pub mod metrics;
pub mod refdata;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod storage;
pub mod tls;

/// Generated protobuf and gRPC code for package `lnrs.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("lnrs.v1");

    /// Encoded descriptor set of every .proto (with imports), served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lnrs_descriptor.bin"));
}
