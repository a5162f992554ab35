//! LNRS service library: a gRPC service that owns the Local Nature Recovery Strategy database in
//! an embedded DuckDB file and makes every destructive change recoverable.
//!
//! # Layout
//! - [`config`]: the one validated configuration (defaults < file < env < flags).
//! - [`domain`]: entity/link definitions, records, validation, table inventory (pure, no I/O).
//! - [`storage`]: every SQL statement, transaction and database file: schema and migrations,
//!   the live database and its atomic replacement, the single writer thread, the read pool,
//!   entity/link queries, cascade plans, fingerprint-tracking changes, the request log,
//!   inspection, file primitives.
//! - [`snapshot`]: capture, block store, manifests, catalog, verify, assemble, retention, GC.
//! - [`events`]: the durable event log and the subscriber fan-out.
//! - [`replica`]: the snapshot history and the event log on object storage: uploader, lease,
//!   segments, remote retention, verify, drill, reading back for disaster recovery.
//! - [`dataio`]: the users' data in and out as files: staged uploads, the import of the
//!   original app's DuckDB file or CSV archive into a validated staged database, exports as
//!   CSV, Parquet, DuckDB or GeoJSON.
//! - [`app`]: use cases composing storage, snapshots and events (deletes, restores, …).
//! - [`error`]: the application error and its one mapping to `tonic::Status`.
//! - [`service`]: the tonic services (EntityService, SnapshotService, EventService).
//! - [`server`]: `run(listener, config, shutdown)`: router, health, reflection, shutdown.
//! - [`metrics`]: Prometheus metrics (gRPC families, app numbers) and the `/metrics` listener.
//! - [`auth`]: bearer tokens, roles and the RPC → role table (a tower layer).
//! - [`tls`]: TLS / mTLS settings → rustls through tonic.
//! - [`refdata`]: the deterministic reference LNRS dataset.
//! - [`cli`]: the `lnrs` command line (server flags, client subcommands).
//! - [`fault`]: the registry of fail points for fault tests.
//!
//! # Layers
//! A module may use only the modules its row names (`pb` is the generated gRPC code). The
//! integration test `layers` reads this table and fails when a file under `src/` uses a module
//! its row does not name, when tonic appears below `error`, or when the table and `src/` list
//! different modules.
//!
//! | module | may use |
//! |---|---|
//! | `fault` | |
//! | `metrics` | |
//! | `domain` | |
//! | `config` | `domain` |
//! | `storage` | `domain`, `fault` |
//! | `snapshot` | `storage`, `domain`, `fault` |
//! | `events` | `storage`, `domain`, `metrics` |
//! | `replica` | `snapshot`, `events`, `storage`, `domain`, `metrics`, `fault` |
//! | `refdata` | `storage`, `domain` |
//! | `dataio` | `snapshot`, `storage`, `domain` |
//! | `error` | `dataio`, `replica`, `snapshot`, `events`, `storage`, `domain` |
//! | `app` | `error`, `dataio`, `refdata`, `replica`, `snapshot`, `events`, `storage`, `config`, `domain`, `metrics`, `fault` |
//! | `service` | `app`, `error`, `dataio`, `replica`, `snapshot`, `events`, `tls`, `config`, `domain`, `pb` |
//! | `tls` | `config` |
//! | `auth` | `service`, `error`, `config`, `pb` |
//! | `server` | `auth`, `tls`, `service`, `app`, `error`, `config`, `metrics`, `pb` |
//! | `cli` | `server`, `auth`, `service`, `app`, `error`, `dataio`, `refdata`, `replica`, `snapshot`, `events`, `storage`, `config`, `domain`, `metrics`, `fault`, `pb` |
//!
//! Modules below `error` never use tonic or prost: gRPC is the service's transport, not its
//! model.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dataio;
pub mod domain;
pub mod error;
pub mod events;
pub mod fault;
pub mod metrics;
pub mod refdata;
pub mod replica;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod storage;
pub mod tls;

/// The generated code, nested like its packages: prost refers from one package to another
/// (lnrs.v1 → io.cloudevents.v1) by relative paths.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
mod generated {
    pub mod lnrs {
        pub mod v1 {
            tonic::include_proto!("lnrs.v1");
        }
    }
    pub mod io {
        pub mod cloudevents {
            pub mod v1 {
                tonic::include_proto!("io.cloudevents.v1");
            }
        }
    }
    /// The lnrs.v1 servers, generated apart (build.rs: their List responses are pre-encoded).
    pub mod servers {
        include!(concat!(env!("OUT_DIR"), "/servers/lnrs.v1.rs"));
    }
}

/// Generated protobuf and gRPC code for package `lnrs.v1`.
pub mod pb {
    pub use crate::generated::lnrs::v1::*;
    pub use crate::generated::servers::*;

    /// The CloudEvents protobuf format (`io.cloudevents.v1`): events as CloudEvents.
    pub mod cloudevents {
        pub use crate::generated::io::cloudevents::v1::*;
    }

    /// Encoded descriptor set of every .proto (with imports, google.rpc's error details and the
    /// google.api.http annotations), served by gRPC reflection and written by
    /// `lnrs descriptor-set` for an HTTP/JSON gateway.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lnrs_descriptor.bin"));
}
