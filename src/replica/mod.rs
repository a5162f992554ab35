//! The replica: the snapshot history and the event log on object storage (S3 and compatible
//! servers, GCS, Azure, a local directory), so they survive the loss of the node — Litestream's
//! model applied to our snapshots and log. No gRPC here; `app` starts the uploader, waits on it
//! for `sync` deletes and runs disaster recovery from it.
//!
//! # Remote layout (under the URL's prefix)
//! ```text
//! lease.json                          who may write here: holder, generation (conditional writes)
//! blocks/ab/<blake3>.zst              block files, byte for byte as stored locally (create-only)
//! manifests/<id>.json                 sealed manifests, uploaded after all their blocks (create-only)
//! annotations/<id>.json               users' pins, labels, descriptions (the one mutable kind)
//! log/<first>-<last>.seg              sealed, seq-ranged event-log segments (create-only)
//! drill.json                          where the rotating read drill stands
//! ```
//! Nothing but the lease and annotations is ever overwritten, so a reader never sees a half
//! object, a manifest naming a block that is not there, or a log segment out of order.
//!
//! # Files
//! - [`remote`]: the object store client (URL → backend, create-only and conditional puts).
//! - [`layout`]: object names. [`segment`]: the segment encoding. [`lease`]: fencing.
//! - [`ship`]: the uploader — snapshots, annotations, log segments, lag, sync waits.
//! - [`fetch`]: reading back — snapshots into a local store, the shipped log, verify, drill.
//! - [`gc`]: remote retention and mark-and-sweep with a grace period.

pub mod fetch;
pub mod gc;
pub mod layout;
pub mod lease;
pub mod remote;
pub mod segment;
pub mod ship;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use remote::Remote;
pub use ship::{Progress, ReplicaState, ReplicaStatus, Replicator, Tip};

use crate::events::EventError;
use crate::snapshot::SnapshotError;
use crate::storage::StorageError;

/// How deletes wait for the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Nothing waits; a background uploader ships snapshots and the log.
    #[default]
    Async,
    /// A delete is acknowledged once its pre-delete snapshot and its event are in the store.
    Sync,
    /// As `Sync`, and the pre-delete snapshot is uploaded before the delete commits: an
    /// unreachable store refuses the delete and changes nothing.
    Required,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Sync => "sync",
            Mode::Required => "required",
        }
    }
}

/// Errors of the replica layer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The replica URL or a setting is unusable.
    #[error("replica configuration: {0}")]
    Config(String),
    /// No replica is configured.
    #[error("no replica is configured (set replica_url)")]
    NotConfigured,
    /// The object store did not answer or refused (network, credentials, server error).
    #[error("the replica's object store is unreachable: {0}")]
    Unreachable(String),
    /// Another server holds this prefix.
    #[error("another server ({holder}, lease generation {generation}) replicates to this prefix; this one does not")]
    Fenced { holder: String, generation: u64 },
    /// The replica belongs to another history (its log is ahead of this database's).
    #[error("{0}")]
    Diverged(String),
    /// A remote object is damaged.
    #[error("replica object {what} is damaged: {detail}")]
    Corrupt { what: String, detail: String },
    /// A remote object is not there.
    #[error("not in the replica: {0}")]
    NotFound(String),
    /// The shipped log has a gap.
    #[error("the replica's log has a gap: events {from}..={to} are missing")]
    Gap { from: u64, to: u64 },
    /// A sync delete committed here but the replica did not confirm it in time.
    #[error("committed here as event {seq}, but the replica did not confirm it within {waited:?}; it will be shipped when the store is reachable")]
    NotConfirmed { seq: u64, waited: Duration },
    /// Replaying the shipped log did not give the primary's fingerprints.
    #[error("replaying the shipped log diverged from the primary: {0}")]
    ReplayDiverged(String),
    /// Disaster recovery needs an empty data directory.
    #[error("the data directory already holds a database; disaster recovery writes only into an empty one")]
    DataDirNotEmpty,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Event(#[from] EventError),
}

impl ReplicaError {
    /// A stable reason code for `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config(_) => "REPLICA_CONFIG_INVALID",
            Self::NotConfigured => "REPLICA_NOT_CONFIGURED",
            Self::Unreachable(_) => "REPLICA_UNAVAILABLE",
            Self::Fenced { .. } => "REPLICA_FENCED",
            Self::Diverged(_) => "REPLICA_DIVERGED",
            Self::Corrupt { .. } => "REPLICA_CORRUPT",
            Self::NotFound(_) => "REPLICA_OBJECT_NOT_FOUND",
            Self::Gap { .. } => "REPLICA_LOG_GAP",
            Self::NotConfirmed { .. } => "REPLICA_NOT_CONFIRMED",
            Self::ReplayDiverged(_) => "REPLICA_REPLAY_DIVERGED",
            Self::DataDirNotEmpty => "DATA_DIR_NOT_EMPTY",
            Self::Snapshot(e) => e.reason(),
            Self::Storage(_) => "DATABASE_ERROR",
            Self::Event(_) => "EVENT_LOG_ERROR",
        }
    }

    /// What a client may be told (the object store's own message, which can name hosts and
    /// keys, goes to the log only).
    pub fn public_message(&self) -> String {
        match self {
            Self::Unreachable(_) => "the replica's object store is unreachable".into(),
            Self::Snapshot(e) => e.public_message(),
            Self::Storage(e) => e.public_message(),
            Self::Event(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
