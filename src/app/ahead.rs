//! Capture ahead: the pre-delete snapshot taken before the delete arrives.
//!
//! A pre-delete snapshot must hold the file exactly as the delete found it, and DuckDB does not
//! say which blocks a checkpoint rewrote, so the whole file is read and hashed. Nothing says it
//! must be read while the user waits: once the writer has been idle for
//! `snapshot_capture_idle` after a change, it checkpoints (the only step on the writer) and a
//! background thread reads the file, hashes it and writes the blocks the store lacks
//! ([`crate::snapshot::SnapshotStore::prepare`]). A delete that finds a capture of the state it
//! starts from only writes a manifest with its own metadata.
//!
//! Why a reused capture is the file at the delete's start, byte for byte:
//! - it was read right after a CHECKPOINT that left the WAL empty;
//! - the file's generation ([`crate::storage::LiveDb::generation`]) has not changed since: no
//!   transaction, checkpoint or replacement ran, and the WAL is still empty;
//! - a request that needs the write connection stops the background read first
//!   ([`crate::storage::gate`]); a delete adopting the read joins it before its COMMIT, like
//!   the overlapped capture it replaces;
//! - before the manifest is written the file's length and headers are compared again (every
//!   checkpoint writes a new header), and `snapshot_capture_verify` reads and hashes the whole
//!   file again and compares.
//!
//! Anything else — no capture, a stale one, a failed or cancelled one — and the delete captures
//! the file itself, as before. Background work never blocks a request beyond the one
//! CHECKPOINT, and a request always cancels a read in progress.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use super::WriterState;
use crate::config::SnapshotPolicy;
use crate::snapshot::{Capture, Manifest, NewSnapshot, Prepared, SnapshotError, SnapshotStore};
use crate::storage::gate::{ReadTicket, Reading};
use crate::storage::writer::IdleWork;
use crate::storage::StorageError;

/// What capture ahead is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AheadState {
    /// Not configured, or the policy takes no snapshots.
    #[default]
    Off,
    /// Nothing captured for the current state (yet).
    Idle,
    Capturing,
    /// A capture of the current state is ready for the next delete.
    Ready,
    /// The last capture failed; the next change tries again.
    Failed,
}

/// Capture ahead as GetStatus reports it.
#[derive(Debug, Clone, Default)]
pub struct AheadReport {
    pub state: AheadState,
    /// Newest event the current capture holds.
    pub event_seq: u64,
    pub started: u64,
    pub reused: u64,
    pub fallbacks: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub verified: u64,
    pub mismatches: u64,
    pub last_error: Option<String>,
}

/// The report, shared between the writer, the capture threads and GetStatus.
#[derive(Debug, Default)]
pub struct AheadBoard(parking_lot::Mutex<AheadReport>);

impl AheadBoard {
    pub fn get(&self) -> AheadReport {
        self.0.lock().clone()
    }

    fn update(&self, f: impl FnOnce(&mut AheadReport)) {
        f(&mut self.0.lock());
    }

    /// Counts an outcome here and in the metrics.
    fn count(&self, outcome: Outcome) {
        crate::metrics::capture_ahead(outcome.label());
        self.update(|r| match outcome {
            Outcome::Started => r.started += 1,
            Outcome::Reused => r.reused += 1,
            Outcome::Fallback => r.fallbacks += 1,
            Outcome::Cancelled => r.cancelled += 1,
            Outcome::Failed => r.failed += 1,
            Outcome::Verified => r.verified += 1,
            Outcome::Mismatch => r.mismatches += 1,
        });
    }

    /// A capture failed: counted, logged, and the state says so while it is the capture of
    /// `event_seq`.
    fn failed(&self, event_seq: u64, why: String) {
        tracing::warn!(error = %why, "capture ahead failed; the next delete captures the file itself");
        self.count(Outcome::Failed);
        self.update(|r| {
            if r.event_seq == event_seq {
                r.state = AheadState::Failed;
            }
            r.last_error = Some(why);
        });
    }

    /// The capture of `event_seq` (the current state) failed before it started: the report
    /// says so for that state — not for the state of an earlier capture, which a client
    /// waiting for the capture of the latest event would wait on for ever.
    fn failed_at_once(&self, event_seq: u64, why: String) {
        self.update(|r| r.event_seq = event_seq);
        self.failed(event_seq, why);
    }
}

/// What happened to a capture ahead (the label of `lnrs_snapshot_capture_ahead_total`).
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Started,
    Reused,
    Fallback,
    Cancelled,
    Failed,
    Verified,
    Mismatch,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Reused => "reused",
            Outcome::Fallback => "fallback",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
            Outcome::Verified => "verified",
            Outcome::Mismatch => "mismatch",
        }
    }
}

/// A snapshot error as the report shows it.
fn describe(e: &SnapshotError) -> String {
    format!("{}: {}", e.reason(), e.public_message())
}

/// A capture ahead, running or finished. Dropped unused, it stops its read: once adopted it
/// is out of the gate, and the file may change as soon as the writer goes on.
pub(crate) struct Pending {
    /// The file generation it captured.
    generation: u64,
    ticket: Arc<ReadTicket>,
    thread: Option<JoinHandle<Result<Prepared, SnapshotError>>>,
}

impl Pending {
    /// Waits for the capture to be prepared.
    pub(crate) fn wait(mut self) -> Result<Prepared, SnapshotError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(SnapshotError::Panicked)),
            None => Err(SnapshotError::Panicked),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.ticket.cancel();
        }
    }
}

/// A capture ahead a delete (or a snapshot taken now) adopted: still running, or — with
/// `snapshot_capture_verify` — already joined and checked on the writer.
pub(crate) enum Adopted {
    Running(Pending),
    Checked(Box<Result<Prepared, SnapshotError>>),
}

impl Adopted {
    /// The prepared capture (joins a running one).
    fn prepared(self) -> Result<Prepared, SnapshotError> {
        match self {
            Adopted::Running(p) => p.wait(),
            Adopted::Checked(r) => *r,
        }
    }
}

/// The writer's capture-ahead slot.
#[derive(Default)]
pub(crate) struct Ahead {
    pending: Option<Pending>,
    /// The generation the last capture started at: one attempt per state.
    tried: Option<u64>,
}

impl IdleWork for WriterState {
    fn idle_after(&self) -> Option<Duration> {
        let cfg = &self.shared.config;
        // A capture a request cancelled is taken again, even if that request changed nothing.
        let cancelled = self
            .ahead
            .pending
            .as_ref()
            .is_some_and(|p| p.ticket.cancelled());
        let due = self.ahead_enabled()
            && self.db.is_open()
            && (cancelled || self.ahead.tried != Some(self.db.generation()));
        due.then_some(cfg.snapshot_capture_idle)
    }

    fn idle(&mut self) {
        self.capture_ahead();
    }
}

impl WriterState {
    /// Sets the reported state from the configuration (at start-up).
    pub(crate) fn announce_ahead(&self) {
        let state = if self.ahead_enabled() {
            AheadState::Idle
        } else {
            AheadState::Off
        };
        self.shared.capture_ahead.update(|r| r.state = state);
    }

    /// What the caller's snapshot is made from: the adopted capture, checked against the file
    /// first when `snapshot_capture_verify` is set.
    pub(crate) fn adopted(&self, store: &Arc<SnapshotStore>, pending: Pending) -> Adopted {
        if self.shared.config.snapshot_capture_verify {
            Adopted::Checked(Box::new(
                pending.wait().and_then(|p| self.verify_adopted(store, p)),
            ))
        } else {
            Adopted::Running(pending)
        }
    }

    /// Whether this server captures ahead now. Not while snapshot storage is degraded: every
    /// change would retry a capture bound to fail; the deletes' own snapshots report the fault,
    /// and the storage probe re-enables it.
    pub(crate) fn ahead_enabled(&self) -> bool {
        let cfg = &self.shared.config;
        cfg.snapshot_capture_ahead
            && cfg.snapshot_policy != SnapshotPolicy::Disabled
            && self.shared.follower.is_none()
            && self.shared.status.get().state == super::status::SnapshotState::Enabled
    }

    /// Idle work: CHECKPOINT, then read and prepare the file on a background thread.
    fn capture_ahead(&mut self) {
        self.discard_ahead();
        let event_seq = self.next_seq - 1;
        let store = match self.checkpoint_ahead() {
            Ok(s) => s,
            Err(SnapshotError::Source(StorageError::CheckpointHeldUp { .. })) => {
                // Not tried: the writer is idle again after `snapshot_capture_idle`, and the
                // reads holding the CHECKPOINT up will have ended.
                return;
            }
            Err(e) => {
                self.ahead.tried = Some(self.db.generation());
                self.shared
                    .capture_ahead
                    .failed_at_once(event_seq, describe(&e));
                return;
            }
        };
        let generation = self.db.generation();
        self.ahead.tried = Some(generation);
        let ticket = self.db.readers().open();
        let board = Arc::clone(&self.shared.capture_ahead);
        board.update(|r| {
            r.state = AheadState::Capturing;
            r.event_seq = event_seq;
        });
        board.count(Outcome::Started);
        let path = self.db.path().to_path_buf();
        let reading = Reading(Arc::clone(&ticket));
        let spawned = std::thread::Builder::new()
            .name("lnrs-capture-ahead".into())
            .spawn(move || {
                let prepared = prepare_ahead(&store, &path, reading);
                finish_report(&board, event_seq, &prepared);
                prepared
            });
        match spawned {
            Ok(thread) => {
                self.ahead.pending = Some(Pending {
                    generation,
                    ticket,
                    thread: Some(thread),
                })
            }
            Err(e) => {
                // The closure (and its Reading) is gone: the ticket is finished.
                self.db.readers().stop();
                self.shared.capture_ahead.failed(
                    event_seq,
                    format!("cannot start the capture-ahead thread: {e}"),
                );
            }
        }
    }

    /// The capture ahead's CHECKPOINT. Background work does not hold the writer while reads
    /// finish (a request may be waiting behind it): one attempt.
    fn checkpoint_ahead(&self) -> Result<Arc<SnapshotStore>, SnapshotError> {
        if crate::fault::hit("ahead.checkpoint") {
            return Err(SnapshotError::Injected("ahead.checkpoint"));
        }
        self.checkpoint_for_capture(Duration::ZERO)
    }

    /// Stops the capture ahead (cancelling its read) and waits for its thread (shutdown).
    pub(crate) fn finish_ahead(&mut self) {
        if let Some(p) = self.ahead.pending.take() {
            self.db.readers().stop();
            let _ = p.wait();
        }
    }

    /// Drops a capture of an older state (its thread finishes on its own; its blocks are
    /// released when it does, and GC removes the ones no snapshot uses).
    fn discard_ahead(&mut self) {
        if let Some(p) = self.ahead.pending.take() {
            self.db.readers().stop();
            drop(p);
        }
        self.shared.capture_ahead.update(|r| {
            if r.state != AheadState::Off {
                r.state = AheadState::Idle;
            }
        });
    }

    /// The capture ahead of exactly the current file, taken out of the gate so the caller's
    /// delete may run while it finishes (the delete joins it before COMMIT). Called first in a
    /// delete, before anything uses the write connection. None (and counted as a fallback)
    /// when there is none for this state.
    pub(crate) fn adopt_ahead(&mut self) -> Option<Pending> {
        if !self.ahead_enabled() {
            return None;
        }
        let fresh = self.ahead.pending.take().filter(|p| {
            p.generation == self.db.generation()
                && self.db.wal_is_empty()
                && (self.db.readers().adopt(&p.ticket) || p.ticket.is_finished())
                && !p.ticket.cancelled()
        });
        let board = &self.shared.capture_ahead;
        board.update(|r| {
            if r.state != AheadState::Off {
                r.state = AheadState::Idle;
            }
        });
        if fresh.is_none() {
            board.count(Outcome::Fallback);
        }
        fresh
    }

    /// `snapshot_capture_verify`: the whole file read again now — what the delete would have
    /// captured without capture ahead — and hashed plainly (no refresh from an earlier capture,
    /// no incremental hashing: nothing the capture being checked relied on) must equal the
    /// prepared capture. On a mismatch the fresh read is used instead (and the mismatch
    /// counted and logged: it is a bug).
    fn verify_adopted(
        &self,
        store: &Arc<SnapshotStore>,
        prepared: Prepared,
    ) -> Result<Prepared, SnapshotError> {
        self.db.checkpoint()?;
        let fresh = store.capture_whole(self.db.path())?;
        let fresh_hash = blake3::hash(fresh.bytes());
        let board = &self.shared.capture_ahead;
        if fresh_hash == prepared.file_hash() && fresh.len() == prepared.file_len() {
            board.count(Outcome::Verified);
            Ok(prepared)
        } else {
            board.count(Outcome::Mismatch);
            tracing::error!(
                ahead = %prepared.file_hash(),
                fresh = %fresh_hash,
                "a capture taken ahead differs from the file at the delete's start; using the fresh capture"
            );
            store.prepare(fresh)
        }
    }
}

/// `snapshot_capture_verify` for a delete's own capture (refreshed from the previous capture,
/// copying only the blocks that differ): the whole file read again, plainly, must give the
/// same bytes. On a mismatch the fresh read is used (and the mismatch counted and logged: it
/// is a bug). Runs where the capture did, while the file is still as checkpointed.
pub(crate) fn verify_refreshed(
    store: &SnapshotStore,
    path: &std::path::Path,
    capture: Capture,
    board: &AheadBoard,
) -> Result<Capture, SnapshotError> {
    let fresh = store.capture_whole(path)?;
    if fresh.bytes() == capture.bytes() {
        board.count(Outcome::Verified);
        Ok(capture)
    } else {
        board.count(Outcome::Mismatch);
        tracing::error!(
            captured = %blake3::hash(capture.bytes()),
            fresh = %blake3::hash(fresh.bytes()),
            "a capture refreshed from the previous one differs from the file; using a fresh read"
        );
        Ok(fresh)
    }
}

/// The background step: read the file (stopping if a request needs it), then prepare it.
fn prepare_ahead(
    store: &SnapshotStore,
    path: &std::path::Path,
    reading: Reading,
) -> Result<Prepared, SnapshotError> {
    let capture = store.capture_gated(path, &reading.0);
    // The file is no longer read: the writer may go on.
    let ticket = Arc::clone(&reading.0);
    drop(reading);
    let capture = capture?;
    if ticket.cancelled() {
        return Err(SnapshotError::Cancelled);
    }
    if crate::fault::hit("ahead.after_read") {
        return Err(SnapshotError::Injected("ahead.after_read"));
    }
    store.prepare(capture)
}

fn finish_report(board: &AheadBoard, event_seq: u64, prepared: &Result<Prepared, SnapshotError>) {
    match prepared {
        Ok(_) => board.update(|r| {
            if r.event_seq == event_seq && r.state == AheadState::Capturing {
                r.state = AheadState::Ready;
            }
        }),
        Err(SnapshotError::Cancelled) => {
            board.count(Outcome::Cancelled);
            board.update(|r| {
                if r.event_seq == event_seq && r.state == AheadState::Capturing {
                    r.state = AheadState::Idle;
                }
            });
        }
        Err(e) => board.failed(event_seq, describe(e)),
    }
}

/// The snapshot thread of a delete that adopted a capture ahead: wait for it, check the file
/// still matches, and write the manifest. When the capture failed or no longer matches, the
/// file — still the delete's pre-state, as nothing commits before this thread is joined — is
/// captured here instead.
pub(crate) fn commit_adopted(
    store: &SnapshotStore,
    path: &std::path::Path,
    adopted: Adopted,
    meta: NewSnapshot,
    board: &AheadBoard,
) -> Result<Manifest, SnapshotError> {
    let usable = match adopted.prepared() {
        Ok(p) if p.matches_file(path)? => Some(p),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "the capture taken ahead failed; capturing now");
            None
        }
    };
    let prepared = match usable {
        Some(p) => {
            board.count(Outcome::Reused);
            p
        }
        None => {
            board.count(Outcome::Fallback);
            store.prepare(store.capture(path)?)?
        }
    };
    if crate::fault::hit("ahead.before_reuse") {
        return Err(SnapshotError::Injected("ahead.before_reuse"));
    }
    let manifest = store.commit_prepared(&prepared, meta, Utc::now())?;
    crate::metrics::snapshot_committed(
        prepared.timings().total,
        manifest.file_len,
        prepared.timings().new_bytes,
    );
    Ok(manifest)
}
