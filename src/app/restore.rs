//! Restore: all-or-nothing replacement of the live database by a snapshot.
//!
//! Safety snapshot (pinned, read back) → assemble the target into a temp file next to the live
//! one → deep-verify it → migrate it, carry the event and request logs over into it with the
//! restore's own event → close every connection → journal → rename over the live file →
//! reopen → check it is the verified file → on any failure put the safety state back the same
//! way. Then [`settle`](WriterState::settle) decides the outcome from what is on disk, whatever
//! happened on the way, and the journal is resolved before the call returns: when a restore
//! returns — success, rollback or error — no journal is left and the writer's view (next seq,
//! fingerprints, schema, caches) is the live file's. Only if even the safety state cannot be
//! put back does the journal stay; the database is then closed (reads and writes refused,
//! health NOT_SERVING) so nothing can be acknowledged that the next start would undo.
//!
//! The journal names three files by hash — the live file before the swap, the verified
//! target, and the safety state once assembled for a rollback — so start-up
//! ([`recover`]) knows which one a crash left at the live path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::snapshots::snapshot_event;
use super::state::WriterState;
use super::{App, Replayable, RequestCtx};
use crate::domain::tables::CARRIED_OVER_TABLES;
use crate::error::Error;
use crate::events::model::RestoreInfo;
use crate::events::{log as event_log, Event, EventDraft, EventKind};
use crate::snapshot::{
    check_database, check_replaced, IntegrityReport, Manifest, Operation, PinGuard, SnapshotId,
    SnapshotStore,
};
use crate::storage::{self, files, inspect::SchemaInventory, phase_span, StorageError};

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// The manifest of the snapshot that was restored (or that the restore tried to restore).
    pub restored: Manifest,
    pub safety_snapshot_id: String,
    pub report: IntegrityReport,
    pub rolled_back: bool,
    pub rollback_reason: Option<String>,
    pub event_seq: u64,
    #[serde(with = "millis")]
    pub duration: Duration,
}

/// Fail points around the rename of the verified target over the live file.
const SWAP_POINTS: [&str; 2] = ["swap.before_rename", "swap.after_rename"];
/// Fail points around the rename of the safety state over the live file (rollback).
const ROLLBACK_POINTS: [&str; 2] = [
    "restore.rollback.before_rename",
    "restore.rollback.after_rename",
];

/// Marks the window in which the file at the live path may not be the one the service last
/// acknowledged. Written atomically before the live file is touched, removed once the outcome
/// is durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Journal {
    target: String,
    safety: String,
    /// BLAKE3 of the live file before the swap (closed, checkpointed).
    pre_hash: String,
    /// BLAKE3 of the verified target with the logs carried over: what the swap puts in place.
    target_hash: String,
    /// BLAKE3 of the safety state assembled for a rollback, once one was started.
    rollback_hash: Option<String>,
    /// Events committed since the safety snapshot was captured: a rollback appends them to
    /// the safety state, then `rolled_back_event`.
    since_safety: Vec<Event>,
    /// The restore's own event as it reads when the restore did not happen.
    rolled_back_event: Event,
}

pub(crate) fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("restore.journal")
}

/// Where a restore assembles files: next to the live one, so the rename is atomic.
pub(crate) fn temp_path(db: &Path) -> PathBuf {
    files::with_suffix(db, ".restore-tmp")
}

impl App {
    /// Restores a snapshot. `confirm` must repeat `id` (a guard against accidents). A restore
    /// that fails verification answers Ok with `rolled_back: true`.
    pub async fn restore(
        &self,
        ctx: RequestCtx,
        id: &str,
        confirm: &str,
    ) -> Result<Replayable<RestoreOutcome>, Error> {
        if id != confirm {
            return Err(Error::RestoreNotConfirmed);
        }
        let id = SnapshotId::parse(id)?;
        let c = ctx.clone();
        self.write(&ctx, move |st| st.restore(&c, &id)).await
    }
}

/// What a swap puts in place: a snapshot (RestoreSnapshot), or a staged database (an import,
/// committed as an IMPORT snapshot first, so that undoing, replaying and following it are a
/// restore's).
pub(crate) enum SwapTarget {
    Snapshot(SnapshotId),
    Import(Box<StagedImport>),
}

/// A validated staged database, checkpointed and closed, ready to be swapped in.
pub(crate) struct StagedImport {
    pub path: PathBuf,
    /// The IMPORT snapshot's metadata (description, fingerprints, schema of the staged file).
    pub snapshot: crate::snapshot::NewSnapshot,
}

/// One restore in progress.
struct Run {
    /// RestorePerformed or Imported: the event the swap records.
    kind: EventKind,
    started: Instant,
    store: Arc<SnapshotStore>,
    target: Manifest,
    safety: Manifest,
    report: IntegrityReport,
    info: RestoreInfo,
    tmp: PathBuf,
    /// Target and safety snapshot: retention and DeleteSnapshot cannot remove them until the
    /// journal is resolved.
    pins: Vec<PinGuard>,
}

/// The target assembled into the temp file and deep-verified against its manifest, on its own
/// thread: none of it needs the writer or the live file, so it runs while the writer takes the
/// safety snapshot. Dropping it joins the thread (it writes the temp file).
struct TargetCheck {
    thread: Option<std::thread::JoinHandle<Checked>>,
    tmp: PathBuf,
}

/// What the target check found.
struct Checked {
    report: IntegrityReport,
    /// Whether the file needs the schema migration, or why it must not be used.
    verified: Result<bool, String>,
}

impl Checked {
    fn run(store: &SnapshotStore, target: &Manifest, tmp: &Path) -> Checked {
        let mut report = IntegrityReport::default();
        let verified = check_target(store, target, tmp, &mut report);
        Checked { report, verified }
    }

    /// Every block of the target was read back, decoded and matched its hash: the assembly
    /// passed, whatever the checks of the file found.
    fn blocks_intact(&self) -> bool {
        let first = self.report.checks.first();
        first.is_some_and(|c| c.name == ASSEMBLE && c.passed)
    }
}

/// The target check's first step: assembling the file from its blocks.
const ASSEMBLE: &str = "pre_swap:assemble";

impl TargetCheck {
    fn start(store: Arc<SnapshotStore>, target: Manifest, tmp: PathBuf) -> Result<Self, Error> {
        let path = tmp.clone();
        let request = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("lnrs-restore-check".into())
            .spawn(move || {
                let _in_request = request.enter();
                let _span = phase_span!("target_check").entered();
                Checked::run(&store, &target, &path)
            })
            .map_err(|e| Error::Internal(format!("cannot start the restore check: {e}")))?;
        Ok(Self {
            thread: Some(thread),
            tmp,
        })
    }

    /// The check's report entries and outcome (see [`check_target`]). The temp file is the
    /// caller's from here on.
    fn join(mut self) -> Checked {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Checked {
                report: IntegrityReport::default(),
                verified: Err("the restore check thread failed".into()),
            },
        }
    }
}

impl Drop for TargetCheck {
    /// A restore that ends before using the check (its safety snapshot failed) removes what
    /// the check assembled.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = files::remove_database(&self.tmp);
        }
    }
}

/// Assembles `target` into `tmp`, opens it read-only and runs every check of a deep verify
/// against the manifest (fingerprints, schema, orphans). Returns whether the file must go
/// through the schema migration (read while it is open anyway: the carry-over then need not
/// open the file a second time just to find out), or why it must not be used.
fn check_target(
    store: &SnapshotStore,
    target: &Manifest,
    tmp: &Path,
    report: &mut IntegrityReport,
) -> Result<bool, String> {
    let _ = files::remove_database(tmp);
    let t = Instant::now();
    let assembled = phase_span!("assemble").in_scope(|| {
        store
            .check_scratch_space(files::parent_dir(tmp), target.file_len)
            .and_then(|()| store.assemble_unflushed(&target.id, tmp))
    });
    let file = match assembled {
        Ok(file) => file,
        Err(e) => {
            report.push(
                ASSEMBLE,
                false,
                "every block present and intact",
                e.public_message(),
                t.elapsed(),
            );
            return Err(format!(
                "the snapshot could not be assembled: {}",
                e.public_message()
            ));
        }
    };
    let size = format!("{} bytes", target.file_len);
    report.push(ASSEMBLE, true, size.clone(), size, t.elapsed());
    std::thread::scope(|s| {
        // Written back while the checks read the file: they are CPU-bound and the fsync is
        // I/O, so it costs them nothing, and the fsync before the rename finds little left
        // to write (scale 10: ~120 ms off the restore's path). Its result is still waited
        // for: a failed writeback is reported only to the descriptors open when it failed.
        let flush = s.spawn(move || {
            if crate::fault::hit("restore.flush") {
                return Err(std::io::Error::other("injected fault at restore.flush"));
            }
            file.sync_all()
        });
        let checked = check_assembled(target, tmp, report);
        let t = Instant::now();
        let flushed = flush
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("panicked")));
        if let Err(e) = flushed {
            let e = StorageError::io(tmp, e);
            report.push(
                "pre_swap:assemble_durable",
                false,
                "written to disk",
                e.public_message(),
                t.elapsed(),
            );
            return Err(format!(
                "the assembled snapshot could not be written to disk: {}",
                e.public_message()
            ));
        }
        checked
    })
}

/// Opens the assembled target read-only and runs every check of a deep verify against its
/// manifest (see [`check_target`]).
fn check_assembled(
    target: &Manifest,
    tmp: &Path,
    report: &mut IntegrityReport,
) -> Result<bool, String> {
    let t = Instant::now();
    let conn = match storage::attached::open_for_check(tmp) {
        Ok(c) => c,
        Err(e) => {
            report.push(
                "pre_swap:open_read_only",
                false,
                "opens",
                e.public_message(),
                t.elapsed(),
            );
            return Err("the assembled snapshot does not open".into());
        }
    };
    report.push(
        "pre_swap:open_read_only",
        true,
        "opens",
        "opens",
        t.elapsed(),
    );
    let checks = phase_span!("deep_verify")
        .in_scope(|| check_database(&conn, &target.fingerprints, &target.schema));
    // Anything but exactly the latest version goes through the migration as before: an older
    // file is migrated, a newer one (from a later build) is refused there, before any swap,
    // and a file without a readable version lets the migration decide.
    let needs_migration =
        storage::schema::version(&conn).map_or(true, |v| v != storage::schema::latest_version());
    drop(conn);
    let verified = checks.passed();
    append_prefixed(report, "pre_swap:", checks);
    if verified {
        Ok(needs_migration)
    } else {
        Err("the assembled snapshot failed verification; the live database was not touched".into())
    }
}

/// The target as prepared in the temp file.
struct Prepared {
    hash: blake3::Hash,
    /// The schema after migration (what the live database will have).
    schema: SchemaInventory,
}

/// What is at the live path after a swap attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// The verified target: the restore happened.
    Target,
    /// The file as it was before the swap: nothing happened.
    Before,
    /// The safety state with the rollback events: the restore was undone.
    RolledBack,
    /// Something else, or nothing readable.
    Unknown,
}

/// `file_hash`: the file at `live` is byte for byte the file that passed the deep verification.
fn live_hash_check(live: &Path, verified: &blake3::Hash) -> IntegrityReport {
    let mut report = IntegrityReport::default();
    report.run("file_hash", || match storage::hash_file(live) {
        Ok(h) => (
            &h == verified,
            verified.to_hex().to_string(),
            h.to_hex().to_string(),
        ),
        Err(e) => (false, verified.to_hex().to_string(), e.public_message()),
    });
    report
}

impl WriterState {
    pub(crate) fn restore(
        &mut self,
        ctx: &RequestCtx,
        id: &SnapshotId,
    ) -> Result<Replayable<RestoreOutcome>, Error> {
        if let Some(r) = self.replay(ctx)? {
            return Ok(r);
        }
        Ok(Replayable {
            value: self.swap_in(ctx, SwapTarget::Snapshot(id.clone()))?,
            replayed: false,
        })
    }

    /// Restores a snapshot or imports a staged database (see [`SwapTarget`]).
    pub(crate) fn swap_in(
        &mut self,
        ctx: &RequestCtx,
        target: SwapTarget,
    ) -> Result<RestoreOutcome, Error> {
        // The duration a restore reports covers all of it, safety snapshot included.
        let started = Instant::now();
        let shared = self.shared.clone();
        let _flag = shared.begin_restore()?;
        let store = shared.store()?;
        let (target, kind) = match target {
            SwapTarget::Snapshot(id) => (store.get(&id)?, EventKind::RestorePerformed),
            SwapTarget::Import(staged) => {
                let capture = store.capture(&staged.path)?;
                let m = super::state::commit_snapshot(&store, capture, staged.snapshot)?;
                (m, EventKind::Imported)
            }
        };
        let id = &target.id;
        store.check_restorable(&target)?;
        let pins = vec![store.pin(id)];
        let mut report = IntegrityReport::default();
        let tmp = temp_path(self.db.path());
        let check = TargetCheck::start(Arc::clone(&store), target.clone(), tmp.clone())?;
        let (safety, checked) =
            match self.verified_safety_snapshot(ctx, &target, kind, &store, check, &mut report) {
                Ok(done) => done,
                Err(e) => {
                    let _ = files::remove_database(&tmp);
                    return Err(e);
                }
            };
        let id = id.clone();
        let mut run = Run {
            kind,
            started,
            pins,
            info: RestoreInfo {
                snapshot_id: id.as_str().into(),
                safety_snapshot_id: safety.id.as_str().into(),
                ..Default::default()
            },
            tmp,
            store,
            target,
            safety,
            report,
        };
        run.pins.push(run.store.pin(&run.safety.id));
        let since_safety = self.append_events(
            ctx,
            vec![snapshot_event(EventKind::SnapshotCreated, &run.safety)],
        )?;
        if crate::fault::hit("restore.after_safety") {
            return Err(Error::Injected("restore.after_safety"));
        }
        let event = self.stamp(ctx, vec![restore_event(run.kind, &run.info, &run.report)]);
        let event = event.into_iter().next().expect("one event");
        match self.prepare(&mut run, &event, checked) {
            Ok(schema) => self.swap(ctx, &mut run, schema, since_safety, event),
            Err(reason) => {
                // Nothing was touched: the live database is the safety state already.
                let _ = files::remove_database(&run.tmp);
                self.not_restored(ctx, &mut run, reason)
            }
        }
    }

    /// Takes the safety snapshot and checks it can be read back: a rollback depends on it, and
    /// deduplication may have pointed it at a stored block that has since been damaged. A
    /// damaged block is no longer deduplicated against, so a second snapshot rewrites it; the
    /// report then says the safety snapshot was repaired. The read-back waits for the target
    /// check (taken meanwhile on its own thread) and skips the blocks its assembly read back
    /// and checked the same way: after one restore the live file is mostly the target's blocks,
    /// and reading them twice was half the CPU of a restore at scale 10.
    fn verified_safety_snapshot(
        &mut self,
        ctx: &RequestCtx,
        target: &Manifest,
        kind: EventKind,
        store: &SnapshotStore,
        check: TargetCheck,
        report: &mut IntegrityReport,
    ) -> Result<(Manifest, Checked), Error> {
        let _span = phase_span!("safety_snapshot").entered();
        let t = Instant::now();
        let mut safety = self.safety_snapshot(ctx, &target.id, kind)?;
        let checked = phase_span!("target_check_join").in_scope(|| check.join());
        let intact: HashSet<blake3::Hash> = if checked.blocks_intact() {
            target.blocks.iter().map(|b| b.hash).collect()
        } else {
            HashSet::new()
        };
        let mut repaired = Vec::new();
        for attempt in 0..2 {
            let check = store.verify_blocks_except(&safety.id, &intact)?;
            let failed: Vec<String> = check.failures().map(|c| c.name.clone()).collect();
            if failed.is_empty() {
                let shared = safety.blocks.iter().filter(|b| intact.contains(&b.hash));
                let actual = format!(
                    "intact{} ({} of {} blocks read back by the target's assembly)",
                    match repaired.is_empty() {
                        true => String::new(),
                        false => format!(
                            " after repair (a first safety snapshot failed: {}; its damaged \
                             blocks were rewritten)",
                            repaired.join(", ")
                        ),
                    },
                    shared.count(),
                    safety.blocks.len(),
                );
                report.push(
                    "pre_swap:safety_snapshot_readable",
                    true,
                    "every block of the safety snapshot intact",
                    actual,
                    t.elapsed(),
                );
                return Ok((safety, checked));
            }
            let _ = store.forget(&safety.id);
            repaired = failed;
            if attempt == 0 {
                safety = self.safety_snapshot(ctx, &target.id, kind)?;
            }
        }
        report.push(
            "pre_swap:safety_snapshot_readable",
            false,
            "every block of the safety snapshot intact",
            format!("failed twice: {}", repaired.join(", ")),
            t.elapsed(),
        );
        Err(Error::Snapshot(crate::snapshot::SnapshotError::corrupt(
            "safety snapshot",
            repaired.join(", "),
        )))
    }

    /// One safety snapshot of the live database, described as being taken before the restore
    /// of (or the import staged as) `id`.
    fn safety_snapshot(
        &mut self,
        ctx: &RequestCtx,
        id: &SnapshotId,
        kind: EventKind,
    ) -> Result<Manifest, Error> {
        let mut meta = self.new_snapshot(
            Operation::PreRestore,
            match kind {
                EventKind::Imported => format!("Before import (staged as {id})"),
                _ => format!("Before restore of {id}"),
            },
            ctx,
        );
        meta.meta.entity_type = Some("snapshot".into());
        meta.meta.entity_id = Some(id.as_str().into());
        self.snapshot_now(meta)
    }

    /// Carries the live event and request logs over into the checked target (with this
    /// restore's event); `checked` is the target assembled into the temp file and
    /// deep-verified against its manifest (see [`TargetCheck`]). Returns the file's schema, or
    /// why it must not be used.
    fn prepare(
        &self,
        run: &mut Run,
        event: &Event,
        mut checked: Checked,
    ) -> Result<SchemaInventory, String> {
        if checked.verified.is_err() {
            // The safety snapshot rewrites a damaged block it shares with the target (a block
            // found damaged is no longer deduplicated against), possibly after the concurrent
            // check read it: check again, as when the check ran after the safety snapshot.
            checked = Checked::run(&run.store, &run.target, &run.tmp);
        }
        run.report.extend(checked.report);
        let needs_migration = checked.verified?;
        let report = &mut run.report;
        let t = Instant::now();
        let carried = phase_span!("carry_over")
            .in_scope(|| self.carry_over(&run.tmp, event, &run.target.schema, needs_migration));
        report.push(
            "pre_swap:carry_over_event_log",
            carried.is_ok(),
            "event and request logs copied, schema migrated",
            match &carried {
                Ok(_) => "copied".to_string(),
                Err(e) => e.public_message(),
            },
            t.elapsed(),
        );
        let schema = carried.map_err(|e| {
            format!(
                "the event log could not be carried over: {}",
                e.public_message()
            )
        })?;
        if crate::fault::hit("restore.after_prepare") {
            return Err("injected fault at restore.after_prepare".into());
        }
        Ok(schema)
    }

    /// Brings the assembled file up to the live schema, then copies the live event log and
    /// request log into it and appends the restore's event there, in one transaction: the log
    /// never rewinds and the restore is itself an event. Returns the file's schema: the one the
    /// pre-swap check found (`checked`) unless a migration changed it (copying rows does not).
    /// A file at the latest schema version (`needs_migration` false) is not opened to migrate.
    fn carry_over(
        &self,
        tmp: &Path,
        event: &Event,
        checked: &SchemaInventory,
        needs_migration: bool,
    ) -> Result<SchemaInventory, Error> {
        let migrated = needs_migration && storage::migrate_file(tmp)?;
        storage::copy_tables_into(self.conn()?, tmp, CARRIED_OVER_TABLES, |c, alias| {
            event_log::append_to(c, Some(alias), event).map_err(Error::from)
        })?;
        if !migrated {
            return Ok(checked.clone());
        }
        let conn = storage::open_read_only(tmp)?;
        Ok(storage::inspect::schema_inventory(&conn)?)
    }

    /// Swaps the prepared file in, then settles: whatever failed on the way, the outcome is
    /// decided from the file at the live path, the journal is resolved, and the writer's view
    /// matches the file.
    fn swap(
        &mut self,
        ctx: &RequestCtx,
        run: &mut Run,
        schema: SchemaInventory,
        since_safety: Vec<Event>,
        event: Event,
    ) -> Result<RestoreOutcome, Error> {
        let mut rolled_back = run.info.clone();
        rolled_back.rolled_back = true;
        rolled_back.rollback_reason =
            Some("the swap did not complete; the live database was kept as it was".into());
        let reads = self.shared.reads.clone();
        let gate = reads.suspend();
        let (mut journal, prepared) = match self.close_and_journal(
            run,
            schema,
            since_safety,
            &event,
        ) {
            Ok(j) => j,
            Err(e) => {
                // The live file was not replaced: take the journal back, reopen, say so.
                tracing::error!(error = %e, "restore: could not close the database or write the journal");
                let _ = files::remove_database(&run.tmp);
                let reopened = journal_remove(&self.shared.config.data_dir)
                    .and_then(|()| Ok(self.db.reopen()?));
                self.resume_reads(gate);
                if reopened.is_err() {
                    return Err(self.fence(run, "the database could not be reopened"));
                }
                return self.not_restored(ctx, run, "the swap could not start".into());
            }
        };
        let swapped = self.swap_locked(run, &prepared);
        let live = self.settle(run, &mut journal, swapped);
        let finished = self.finish_swap(ctx, run, &journal, live, event, &prepared);
        self.resume_reads(gate);
        finished
    }

    /// Closes the database (checkpointed, every read connection already dropped), hashes the
    /// live file and the prepared one, and writes the journal.
    fn close_and_journal(
        &mut self,
        run: &mut Run,
        schema: SchemaInventory,
        since_safety: Vec<Event>,
        event: &Event,
    ) -> Result<(Journal, Prepared), Error> {
        let t = Instant::now();
        let tmp = run.tmp.as_path();
        // Both files are complete and nothing writes them while they are hashed: at the same
        // time, on the two cores (scale 10: ~35 ms each).
        let (pre_hash, hash) = std::thread::scope(|s| {
            let request = tracing::Span::current();
            let target = s.spawn(move || {
                let _in_request = request.enter();
                phase_span!("file_hash").in_scope(|| storage::hash_file(tmp))
            });
            let live = self.db.close().and_then(|()| self.db.file_hash());
            let target = target
                .join()
                .unwrap_or_else(|_| Err(StorageError::ReadTaskFailed));
            (live, target)
        });
        let pre_hash = pre_hash?;
        let hash = hash?;
        run.report.push(
            "pre_swap:file_hash",
            true,
            "computed",
            hash.to_hex().to_string(),
            t.elapsed(),
        );
        let mut rolled_back_event = event.clone();
        let mut info = run.info.clone();
        info.rolled_back = true;
        info.rollback_reason = Some(
            "the server stopped during the restore; the live database was put back as it was"
                .into(),
        );
        rolled_back_event.body = restore_event(run.kind, &info, &run.report);
        let journal = Journal {
            target: run.target.id.as_str().into(),
            safety: run.safety.id.as_str().into(),
            pre_hash: pre_hash.to_hex().to_string(),
            target_hash: hash.to_hex().to_string(),
            rollback_hash: None,
            since_safety,
            rolled_back_event,
        };
        journal_write(&self.shared.config.data_dir, &journal)?;
        if crate::fault::hit("restore.after_journal") {
            return Err(Error::Injected("restore.after_journal"));
        }
        Ok((journal, Prepared { hash, schema }))
    }

    /// Renames the prepared file over the live one, checks it and reopens it. Returns the
    /// post-swap checks; any error is settled by the caller.
    fn swap_locked(&mut self, run: &Run, prepared: &Prepared) -> Result<IntegrityReport, Error> {
        phase_span!("swap").in_scope(|| self.db.publish(&run.tmp, SWAP_POINTS))?;
        if crate::fault::hit("restore.after_swap") {
            return Err(Error::Injected("restore.after_swap"));
        }
        let _span = phase_span!("post_swap_verify").entered();
        let live = self.db.path().to_path_buf();
        // The file hash needs no connection: it runs while the file is checked and reopened.
        // The checks read the file through the checking instance before the writer opens it
        // (nothing else in the process has it open then, see `storage::attached`): a fresh
        // instance's first catalog listing costs more than the checks themselves.
        let (hashed, replaced) = std::thread::scope(|s| {
            let hashed = s.spawn(|| live_hash_check(&live, &prepared.hash));
            let replaced = storage::attached::open_for_check(&live)
                .map(|db| check_replaced(&db, &run.target.fingerprints, &prepared.schema))
                .and_then(|checks| self.db.reopen().map(|()| checks))
                .map_err(Error::from);
            (hashed.join(), replaced)
        });
        let mut checks = hashed.map_err(|_| Error::Internal("the file hash failed".into()))?;
        checks.extend(replaced?);
        if crate::fault::hit("restore.post_swap_verify") {
            checks.push(
                "injected_fault",
                false,
                "no fault",
                "fail point restore.post_swap_verify",
                Duration::ZERO,
            );
        }
        Ok(checks)
    }

    /// Decides what the live path holds after a swap attempt, rolling back to the safety
    /// state when the swap happened but did not verify (or when it is unknown).
    fn settle(
        &mut self,
        run: &mut Run,
        journal: &mut Journal,
        swapped: Result<IntegrityReport, Error>,
    ) -> Live {
        let reason = match swapped {
            Ok(checks) => {
                let passed = checks.passed();
                append_prefixed(&mut run.report, "post_swap:", checks);
                if passed {
                    return Live::Target;
                }
                "post-swap verification failed; the safety snapshot was put back"
            }
            Err(e) => {
                tracing::error!(error = %e, "restore: the swap failed");
                run.report.push(
                    "post_swap:swap",
                    false,
                    "the verified file in place",
                    e.public_message(),
                    Duration::ZERO,
                );
                "the swap failed; the live database was put back as it was"
            }
        };
        run.info.rolled_back = true;
        run.info.rollback_reason = Some(reason.into());
        match self.identify_live(journal) {
            Live::Before => Live::Before,
            Live::RolledBack => Live::RolledBack,
            Live::Target | Live::Unknown => match self.roll_back(run, journal) {
                // A rollback that left the unverified target in place did not happen.
                Live::Target => Live::Unknown,
                other => other,
            },
        }
    }

    /// Which file is at the live path (by hash; the database is left closed).
    fn identify_live(&mut self, journal: &Journal) -> Live {
        let _ = self.db.close();
        let Ok(hash) = self.db.file_hash() else {
            return Live::Unknown;
        };
        identify(journal, &hash.to_hex())
    }

    /// Puts the safety state back: the safety snapshot with the events committed after it and
    /// this restore's event (rolled back) appended, through the same publish as the swap. The
    /// journal records the rollback file's hash before it is renamed in.
    fn roll_back(&mut self, run: &mut Run, journal: &mut Journal) -> Live {
        let _span = phase_span!("rollback").entered();
        let t = Instant::now();
        let result = (|| -> Result<(), Error> {
            let _ = self.db.close();
            assemble_safety_state(&run.store, journal, &run.safety.id, &run.tmp)?;
            journal.rollback_hash = Some(storage::hash_file(&run.tmp)?.to_hex().to_string());
            journal_write(&self.shared.config.data_dir, journal)?;
            self.db.publish(&run.tmp, ROLLBACK_POINTS)?;
            Ok(())
        })();
        let live = self.identify_live(journal);
        run.report.push(
            "rollback:safety_state_in_place",
            live == Live::RolledBack,
            "the safety snapshot and the events since it",
            match (&result, live) {
                (_, Live::RolledBack) => "in place".to_string(),
                (Err(e), _) => e.public_message(),
                (Ok(()), other) => format!("{other:?} at the live path"),
            },
            t.elapsed(),
        );
        if let Err(e) = result {
            tracing::error!(error = %e, "restore: the rollback failed");
        }
        live
    }

    /// Resolves the journal and brings the writer's view, the log and the hub in line with
    /// the file now at the live path, then records the outcome.
    fn finish_swap(
        &mut self,
        ctx: &RequestCtx,
        run: &mut Run,
        journal: &Journal,
        live: Live,
        event: Event,
        prepared: &Prepared,
    ) -> Result<RestoreOutcome, Error> {
        let _ = files::remove_database(&run.tmp);
        if live == Live::Unknown {
            return Err(self.fence(run, "a restore could not be completed nor undone"));
        }
        if !self.db.is_open() {
            if let Err(e) = self.db.reopen() {
                tracing::error!(error = %e, "restore: cannot reopen the database");
                return Err(self.fence(run, "the database could not be reopened after a restore"));
            }
        }
        let event = Event {
            body: restore_event(run.kind, &run.info, &run.report),
            ..event
        };
        match live {
            Live::Target => {
                self.fps = run.target.fingerprints.clone();
                // The log (carried over) still names the ids the restore took away.
                self.issued_ids.clear();
                self.schema = prepared.schema.clone();
            }
            Live::RolledBack => self.fps = run.safety.fingerprints.clone(),
            Live::Before | Live::Unknown => {}
        }
        // The restore's event is in the file already, except when nothing was swapped.
        let outcome = self.outcome(run, event.seq);
        let recorded = self.db.transaction(|c| {
            match live {
                Live::Before => event_log::append(c, &event)?,
                _ => event_log::rewrite(c, &event)?,
            }
            self.record_response(c, ctx, &outcome)
        });
        if crate::fault::hit("restore.before_resolve") {
            return Err(self.fence(run, "injected fault at restore.before_resolve"));
        }
        if let Err(e) = journal_remove(&self.shared.config.data_dir) {
            tracing::error!(error = %e, "restore: cannot remove the journal");
            return Err(self.fence(run, "the restore journal could not be removed"));
        }
        if let Err(e) = recorded {
            // The outcome stands (it is in the file); only its final report and the replay
            // record are missing.
            tracing::error!(error = %e, "restore: cannot record the outcome");
        }
        let bounds = event_log::bounds(self.conn()?)?;
        self.shared.hub.set_first(bounds.first);
        self.next_seq = bounds.head + 1;
        self.shared.hub.publish([event]);
        self.tell_replica();
        debug_assert_eq!(journal.target, run.target.id.as_str());
        crate::metrics::restore_finished(outcome.duration, outcome.rolled_back);
        Ok(outcome)
    }

    /// Nothing was swapped: the restore's event, marked rolled back, is appended normally.
    fn not_restored(
        &mut self,
        ctx: &RequestCtx,
        run: &mut Run,
        reason: String,
    ) -> Result<RestoreOutcome, Error> {
        run.info.rolled_back = true;
        run.info.rollback_reason = Some(reason);
        let draft = restore_event(run.kind, &run.info, &run.report);
        let outcome = self.outcome(run, self.next_seq);
        self.commit_change(ctx, |_, _, _| Ok((outcome.clone(), vec![draft])))?;
        crate::metrics::restore_finished(outcome.duration, true);
        Ok(outcome)
    }

    fn outcome(&self, run: &Run, event_seq: u64) -> RestoreOutcome {
        RestoreOutcome {
            restored: run.target.clone(),
            safety_snapshot_id: run.info.safety_snapshot_id.clone(),
            report: run.report.clone(),
            rolled_back: run.info.rolled_back,
            rollback_reason: run.info.rollback_reason.clone(),
            event_seq,
            duration: run.started.elapsed(),
        }
    }

    /// The restore left the live path in a state this process cannot vouch for: keep the
    /// journal (the next start resolves it), keep its snapshots pinned, close the database so
    /// nothing is acknowledged that the resolution would undo, and say so in health/status.
    fn fence(&mut self, run: &mut Run, why: &str) -> Error {
        let _ = self.db.close();
        self.shared.database.set_unavailable(format!(
            "{why}; restart the server (it resolves an interrupted restore before serving)"
        ));
        self.shared.keep_pins(std::mem::take(&mut run.pins));
        tracing::error!(why, "restore left the database unavailable until a restart");
        Error::DatabaseUnavailable(why.into())
    }

    /// Reopens the read gate on the live database (it stays closed if the database is not
    /// open: reads then answer UNAVAILABLE, like during the swap).
    fn resume_reads(&self, gate: crate::storage::pool::Suspended<'_>) {
        match self.db.try_clone() {
            Ok(conn) => gate.resume(conn),
            Err(_) => gate.keep_closed(),
        }
    }
}

/// Which file `hash` is, per the journal.
fn identify(journal: &Journal, hash: &str) -> Live {
    if hash == journal.target_hash {
        Live::Target
    } else if journal.rollback_hash.as_deref() == Some(hash) {
        Live::RolledBack
    } else if hash == journal.pre_hash {
        Live::Before
    } else {
        Live::Unknown
    }
}

/// Assembles the safety snapshot into `tmp` and appends the journal's rollback events to it.
fn assemble_safety_state(
    store: &SnapshotStore,
    journal: &Journal,
    safety: &SnapshotId,
    tmp: &Path,
) -> Result<(), Error> {
    let _ = files::remove_database(tmp);
    store.assemble(safety, tmp)?;
    let conn = storage::open(tmp)?;
    storage::in_transaction(&conn, |c| {
        for e in journal
            .since_safety
            .iter()
            .chain(std::iter::once(&journal.rolled_back_event))
        {
            event_log::append(c, e)?;
        }
        Ok::<_, Error>(())
    })?;
    storage::checkpoint(&conn)?;
    conn.close().map_err(|(_, e)| StorageError::Db(e))?;
    Ok(())
}

/// Start-up repair: a journal means the process stopped (or could not finish) between the
/// swap and the end of a restore. Keeps the verified target if it is at the live path, keeps
/// the live file if the swap never happened (appending the restore's rolled-back event), and
/// otherwise puts the safety state back. Nothing acknowledged is lost: no write is
/// acknowledged while a journal is pending.
pub(crate) fn recover(
    data_dir: &Path,
    db: &Path,
    store: Option<&SnapshotStore>,
) -> Result<(), Error> {
    let path = journal_path(data_dir);
    let _ = files::remove_database(&temp_path(db));
    let Some(bytes) = files_read(&path)? else {
        return Ok(());
    };
    let journal: Journal = match serde_json::from_slice(&bytes) {
        Ok(j) => j,
        Err(e) => {
            // The journal is written to a temp name and renamed: one that does not parse was
            // never renamed by this build, so no swap followed it.
            tracing::warn!(error = %e, "restore journal does not parse: no swap followed it; starting with the live file");
            return journal_remove(data_dir);
        }
    };
    if crate::fault::hit("startup.recover") {
        return Err(Error::Injected("startup.recover"));
    }
    let hash = storage::hash_file(db).map(|h| h.to_hex().to_string());
    let live = match &hash {
        Ok(h) => identify(&journal, h),
        Err(_) => Live::Unknown,
    };
    match live {
        Live::Target if journal.rollback_hash.is_none() => {
            tracing::warn!(target = %journal.target, "interrupted restore: the verified target is in place; keeping it");
            files::remove_wal_files(db).map_err(|e| StorageError::io(db, e))?;
        }
        Live::RolledBack => {
            tracing::warn!(safety = %journal.safety, "interrupted restore: its rollback had completed");
        }
        Live::Before => {
            tracing::warn!(target = %journal.target, "interrupted restore: the swap never happened; keeping the live file");
            let conn = storage::open(db)?;
            let head = event_log::bounds(&conn)?.head;
            if head < journal.rolled_back_event.seq {
                storage::in_transaction(&conn, |c| {
                    event_log::append(c, &journal.rolled_back_event).map_err(Error::from)
                })?;
            }
            storage::checkpoint(&conn)?;
        }
        Live::Target | Live::Unknown => {
            tracing::error!(target = %journal.target, safety = %journal.safety, "interrupted restore: putting the safety state back");
            let store = store.ok_or_else(|| {
                Error::RecoveryBlocked(
                    "an interrupted restore must put its safety snapshot back, but the snapshot \
                     store cannot be opened; fix the snapshot directory (the log says why) and \
                     start again"
                        .into(),
                )
            })?;
            let safety = SnapshotId::parse(&journal.safety)?;
            store.get(&safety).map_err(|e| {
                Error::RecoveryBlocked(format!(
                    "an interrupted restore must put back its safety snapshot {}, which cannot \
                     be read ({}); restore that snapshot's data by other means or remove \
                     restore.journal to start with the live file as it is",
                    journal.safety,
                    e.public_message()
                ))
            })?;
            let tmp = temp_path(db);
            assemble_safety_state(store, &journal, &safety, &tmp)?;
            files::publish_database(&tmp, db, ROLLBACK_POINTS)
                .map_err(|e| StorageError::io(db, e))?;
        }
    }
    journal_remove(data_dir)?;
    Ok(())
}

fn files_read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e).into()),
    }
}

fn journal_write(data_dir: &Path, journal: &Journal) -> Result<(), Error> {
    let path = journal_path(data_dir);
    let bytes = serde_json::to_vec(journal).map_err(|e| Error::Internal(e.to_string()))?;
    files::write_atomic(&path, &bytes).map_err(|e| StorageError::io(&path, e).into())
}

fn journal_remove(data_dir: &Path) -> Result<(), Error> {
    let path = journal_path(data_dir);
    files::remove_durably(&path).map_err(|e| StorageError::io(&path, e).into())
}

fn restore_event(kind: EventKind, info: &RestoreInfo, report: &IntegrityReport) -> EventDraft {
    let mut ev = EventDraft::new(kind, "snapshot", info.snapshot_id.clone());
    ev.restore = Some(RestoreInfo {
        checks_run: report.checks.len() as u32,
        checks_failed: report.failures().map(|c| c.name.clone()).collect(),
        ..info.clone()
    });
    ev
}

fn append_prefixed(report: &mut IntegrityReport, prefix: &str, other: IntegrityReport) {
    for mut c in other.checks {
        c.name = format!("{prefix}{}", c.name);
        report.checks.push(c);
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
