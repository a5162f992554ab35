//! The snapshot engine: consistent, block-deduplicated, verifiable snapshots of the live DuckDB
//! file. No gRPC here; the service layer wraps [`SnapshotStore`].
//!
//! # How a snapshot is taken
//! 1. The writer, between transactions, runs [`crate::storage::checkpoint`] (CHECKPOINT,
//!    assert the WAL is empty) and [`SnapshotStore::capture`] (one read of the file into a pooled
//!    buffer). That is all the writer barrier covers.
//! 2. [`SnapshotStore::commit`] runs off the writer: BLAKE3 of the 12 KiB header chunk and of
//!    every 256 KiB block (in parallel, reusing hashes of blocks unchanged since the previous
//!    commit), zstd + durable write of blocks the store lacks, then the manifest, written last
//!    and atomically. The writer commits its delete only if this succeeds.
//!
//! # Files
//! - [`store`]: [`SnapshotStore`], on-disk layout, crash recovery, commit, verify, assemble,
//!   forget/pin, retention, GC.
//! - [`capture`]: the pooled in-memory copy and the checkpoint helper.
//! - [`blocks`]: the content-addressed, compressed block files.
//! - [`manifest`]: the manifest, its sealed encoding, the DuckDB file layout.
//! - [`catalog`]: in-memory catalog, listing/filtering/sizes, the index cache.
//! - [`archive`]: the portable one-file form of a snapshot (save / load between servers).
//! - [`annotation`]: what users change after a snapshot is taken (pin, labels, description),
//!   one sealed record per snapshot.
//! - [`verify`]: integrity reports and [`check_database`].
//! - [`retention`]: the retention planner.
//! - [`id`]: snapshot ids. [`error`]: errors and reason codes. `fsio`: durable file primitives.
//!   `filehash`: incremental block and whole-file BLAKE3 (reuses the previous capture).
//!
//! # Fail points
//! `snapshot.*` in [`crate::fault::REGISTRY`].

pub mod annotation;
pub mod archive;
pub mod blocks;
pub mod capture;
pub mod catalog;
pub mod error;
mod filehash;
mod fsio;
pub mod id;
pub mod manifest;
pub mod retention;
pub mod store;
pub mod verify;

#[cfg(test)]
mod tests;

pub use annotation::{Annotation, AnnotationUpdate};
pub use capture::Capture;
pub use catalog::{ListFilter, ListItem, ListPage, SnapshotSummary};
pub use error::{SnapshotError, StorageFault};
pub use id::SnapshotId;
pub use manifest::{BlockRef, Manifest, NewSnapshot, Operation, SnapshotMeta};
pub use retention::{
    GcOutcome, RetentionDecision, RetentionOutcome, RetentionPolicy, RetentionReason,
};
pub use store::{CommitTimings, PinGuard, Prepared, SnapshotStore, StoreLimits, StoreStats};
pub use verify::{
    check_database, check_replaced, Check, IntegrityReport, VerifyKind, VerifyRecord,
};
