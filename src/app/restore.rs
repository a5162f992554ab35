//! Restore: all-or-nothing replacement of the live database by a snapshot.
//!
//! Safety snapshot (pinned) → assemble the target into a temp file → deep-verify it → carry the
//! event log and request log over into it, with the restore's own event → close every
//! connection → rename over the live file, remove stale WAL files, fsync → reopen → verify
//! again → on any failure put the safety state back the same way. A journal file marks the
//! window in which the live file may be the unverified target, so a crash there is repaired at
//! the next start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::snapshots::snapshot_event;
use super::state::WriterState;
use super::{App, Replayable, RequestCtx};
use crate::domain::tables::{EVENT_LOG_TABLE, REQUEST_LOG_TABLE};
use crate::error::Error;
use crate::events::model::RestoreInfo;
use crate::events::{log as event_log, Event, EventDraft, EventKind};
use crate::snapshot::{check_database, IntegrityReport, Manifest, Operation, SnapshotId};
use crate::storage::{self, schema, StorageError};

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreOutcome {
    pub restored_id: String,
    pub safety_snapshot_id: String,
    pub report: IntegrityReport,
    pub rolled_back: bool,
    pub rollback_reason: Option<String>,
    pub event_seq: u64,
    #[serde(with = "millis")]
    pub duration: Duration,
}

/// Marks the window in which the live file may be an unverified restore target.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    target: String,
    safety: String,
    /// What the log must say if the safety state has to be put back at start-up: the events
    /// appended since the safety snapshot, then this restore's event marked rolled back.
    rollback_events: Vec<Event>,
}

pub(crate) fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("restore.journal")
}

pub(crate) fn temp_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".restore-tmp");
    PathBuf::from(p)
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

struct Restoring<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
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
        let started = Instant::now();
        let store = self.shared.store()?;
        let target = store.get(id)?;
        store.check_restorable(&target)?;
        // Retention must not forget the target while it is being assembled.
        let _target_pin = store.pin(id);
        let shared = self.shared.clone();
        shared
            .restoring
            .store(true, std::sync::atomic::Ordering::Release);
        let _restoring = Restoring(&shared.restoring);

        let mut report = IntegrityReport::default();
        let safety = self.verified_safety_snapshot(ctx, id, &store, &mut report)?;
        let _pin = store.pin(&safety.id);
        let since_safety = self.append_events(
            ctx,
            vec![snapshot_event(EventKind::SnapshotCreated, &safety)],
        )?;

        let mut info = RestoreInfo {
            snapshot_id: id.as_str().into(),
            safety_snapshot_id: safety.id.as_str().into(),
            ..Default::default()
        };
        let tmp = temp_path(&self.db_path);
        remove_db_files(&tmp);
        let event = self
            .stamp(ctx, vec![restore_event(&info, &report)])
            .remove(0);
        let outcome = match self.prepare(&store, &target, &tmp, &event, &mut report) {
            Err(reason) => {
                // Nothing was touched: the live database is the safety state already.
                remove_db_files(&tmp);
                info.rolled_back = true;
                info.rollback_reason = Some(reason);
                self.append_events(ctx, vec![restore_event(&info, &report)])?;
                self.finish(ctx, &info, report, started)?
            }
            Ok(verified_hash) => self.swap_and_verify(
                ctx,
                Swap {
                    target: &target,
                    safety: &safety,
                    tmp: &tmp,
                    verified_hash,
                    since_safety: &since_safety,
                    event,
                },
                &mut info,
                report,
                started,
            )?,
        };
        Ok(Replayable {
            value: outcome,
            replayed: false,
        })
    }

    /// Takes the safety snapshot and checks it can be read back: a rollback depends on it, and
    /// deduplication may have pointed it at a stored block that has since been damaged. A
    /// damaged block is no longer deduplicated against, so a second snapshot rewrites it.
    fn verified_safety_snapshot(
        &mut self,
        ctx: &RequestCtx,
        id: &SnapshotId,
        store: &crate::snapshot::SnapshotStore,
        report: &mut IntegrityReport,
    ) -> Result<Manifest, Error> {
        let mut last = None;
        for _ in 0..2 {
            let mut meta = self.new_snapshot(
                Operation::PreRestore,
                format!("Before restore of {id}"),
                ctx,
            );
            meta.entity_type = Some("snapshot".into());
            meta.entity_id = Some(id.as_str().into());
            let safety = self.snapshot_now(meta)?;
            let t = Instant::now();
            let check = store.verify_quick(&safety.id)?;
            let failed: Vec<String> = check.failures().map(|c| c.name.clone()).collect();
            report.push(
                "pre_swap:safety_snapshot_readable",
                failed.is_empty(),
                "every block of the safety snapshot intact",
                if failed.is_empty() {
                    "intact".to_string()
                } else {
                    format!("failed: {}", failed.join(", "))
                },
                t.elapsed(),
            );
            if failed.is_empty() {
                return Ok(safety);
            }
            let _ = store.forget(&safety.id);
            last = Some(failed.join(", "));
        }
        Err(Error::Snapshot(crate::snapshot::SnapshotError::Corrupt {
            what: "safety snapshot".into(),
            detail: last.unwrap_or_default(),
        }))
    }

    /// Assembles the target into `tmp`, carries the live event log and request log over into it
    /// (with this restore's event), then deep-verifies exactly that file and hashes it.
    /// Returns the hash the live file must have after the swap, or why it must not be used.
    fn prepare(
        &self,
        store: &crate::snapshot::SnapshotStore,
        target: &Manifest,
        tmp: &Path,
        event: &Event,
        report: &mut IntegrityReport,
    ) -> Result<blake3::Hash, String> {
        let t = Instant::now();
        if let Err(e) = store.assemble(&target.id, tmp) {
            report.push(
                "pre_swap:assemble",
                false,
                "every block present and intact",
                e.to_string(),
                t.elapsed(),
            );
            return Err(format!("the snapshot could not be assembled: {e}"));
        }
        let size = format!("{} bytes", target.file_len);
        report.push("pre_swap:assemble", true, size.clone(), size, t.elapsed());
        let t = Instant::now();
        if let Err(e) = self.carry_over(tmp, event) {
            report.push(
                "pre_swap:carry_over_event_log",
                false,
                "event log copied",
                e.to_string(),
                t.elapsed(),
            );
            return Err(format!("the event log could not be carried over: {e}"));
        }
        report.push(
            "pre_swap:carry_over_event_log",
            true,
            "event log copied",
            "event log copied",
            t.elapsed(),
        );
        let t = Instant::now();
        let conn = match storage::open_read_only(tmp) {
            Ok(c) => c,
            Err(e) => {
                report.push(
                    "pre_swap:open_read_only",
                    false,
                    "opens",
                    e.to_string(),
                    t.elapsed(),
                );
                return Err(format!("the assembled snapshot does not open: {e}"));
            }
        };
        let checks = check_database(&conn, &target.fingerprints, &target.schema);
        drop(conn);
        append_prefixed(report, "pre_swap:", checks);
        if !report.passed() {
            return Err(
                "the assembled snapshot failed verification; the live database was not touched"
                    .into(),
            );
        }
        let t = Instant::now();
        let hash = hash_file(tmp).map_err(|e| format!("cannot hash the verified file: {e}"))?;
        report.push(
            "pre_swap:file_hash",
            true,
            "computed",
            hash.to_hex().to_string(),
            t.elapsed(),
        );
        Ok(hash)
    }

    fn swap_and_verify(
        &mut self,
        ctx: &RequestCtx,
        swap: Swap<'_>,
        info: &mut RestoreInfo,
        report: IntegrityReport,
        started: Instant,
    ) -> Result<RestoreOutcome, Error> {
        let data_dir = self.shared.config.data_dir.clone();
        let mut interrupted = info.clone();
        interrupted.rolled_back = true;
        interrupted.rollback_reason = Some(
            "the server stopped during the swap and the live file did not verify at start-up; the safety snapshot was put back"
                .into(),
        );
        let mut rollback_events = swap.since_safety.to_vec();
        rollback_events.push(Event {
            body: restore_event(&interrupted, &report),
            ..swap.event.clone()
        });
        write_journal(
            &data_dir,
            &Journal {
                target: swap.target.id.as_str().into(),
                safety: swap.safety.id.as_str().into(),
                rollback_events,
            },
        )?;
        let reads = self.shared.reads.clone();
        let gate = reads.suspend();
        let swapped = self.swap_locked(swap, info, report);
        // Whatever happened, a database must be open again before reads resume.
        if self.conn.is_none() {
            match storage::open(&self.db_path) {
                Ok(c) => {
                    let _ = schema::migrate(&c);
                    self.conn = Some(c);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the database after a failed swap")
                }
            }
        }
        if let Some(clone) = self.conn.as_ref().and_then(|c| c.try_clone().ok()) {
            gate.resume(clone);
        }
        let (report, event) = swapped?;
        self.after_commit(&crate::storage::changes::Changes::new(), vec![event]);
        remove_journal(&data_dir);
        self.finish(ctx, info, report, started)
    }

    /// The part of a restore that runs with every connection closed: swap, reopen, check the
    /// live file is the verified one, and on failure put the safety snapshot back. Returns the
    /// report and the event to publish.
    fn swap_locked(
        &mut self,
        swap: Swap<'_>,
        info: &mut RestoreInfo,
        mut report: IntegrityReport,
    ) -> Result<(IntegrityReport, Event), Error> {
        self.conn = None;
        replace_live(swap.tmp, &self.db_path)?;
        if crate::fault::hit("restore.after_swap") {
            return Err(Error::Internal("fail point restore.after_swap".into()));
        }
        let post = self.reopen_and_check(
            &swap.verified_hash,
            &swap.target.fingerprints,
            &swap.target.schema,
        );
        append_prefixed(&mut report, "post_swap:", post);
        info.checks_run = report.checks.len() as u32;
        if report.passed() {
            let event = Event {
                body: restore_event(info, &report),
                ..swap.event
            };
            event_log::rewrite(self.conn()?, &event)?;
            return Ok((report, event));
        }
        // Put the safety state back, with the events since it was taken plus this restore's.
        info.rolled_back = true;
        info.rollback_reason =
            Some("post-swap verification failed; the safety snapshot was put back".into());
        let event = Event {
            body: restore_event(info, &report),
            ..swap.event
        };
        self.conn = None;
        let mut replay: Vec<Event> = swap.since_safety.to_vec();
        replay.push(event.clone());
        self.shared.store()?.assemble(&swap.safety.id, swap.tmp)?;
        append_events_to_file(swap.tmp, &replay)?;
        let hash = hash_file(swap.tmp).map_err(|e| StorageError::io(swap.tmp, e))?;
        replace_live(swap.tmp, &self.db_path)?;
        let back = self.reopen_and_check(&hash, &swap.safety.fingerprints, &swap.safety.schema);
        append_prefixed(&mut report, "rollback:", back);
        Ok((report, event))
    }

    /// Copies the live event log and request log into the assembled file and appends the
    /// restore's event there, in one transaction: the log never rewinds and the restore is
    /// itself an event.
    fn carry_over(&self, tmp: &Path, event: &Event) -> Result<(), Error> {
        const DB: &str = "lnrs_restore";
        let conn = self.conn()?;
        let path = tmp.to_string_lossy().replace('\'', "''");
        conn.execute_batch(&format!("ATTACH '{path}' AS {DB}"))
            .map_err(StorageError::from)?;
        let copied = super::state::in_transaction(conn, |c| {
            for t in [EVENT_LOG_TABLE, REQUEST_LOG_TABLE] {
                c.execute_batch(&format!(
                    "DELETE FROM {DB}.{t}; INSERT INTO {DB}.{t} BY NAME SELECT * FROM main.{t};"
                ))
                .map_err(StorageError::from)?;
            }
            event_log::append_to(c, Some(DB), event)?;
            Ok(())
        });
        let checkpointed = conn.execute_batch(&format!("CHECKPOINT {DB}"));
        let detached = conn.execute_batch(&format!("DETACH {DB}"));
        copied?;
        checkpointed.map_err(StorageError::from)?;
        detached.map_err(StorageError::from)?;
        fsync_file(tmp)
    }

    /// Reopens the live file and checks it is byte for byte the file that passed the deep
    /// verification (BLAKE3), that it opens with the expected schema and the expected row count
    /// in every table. The full scan already ran on these exact bytes before the swap.
    fn reopen_and_check(
        &mut self,
        verified_hash: &blake3::Hash,
        fps: &crate::domain::fingerprint::Fingerprints,
        schema_inv: &crate::storage::inspect::SchemaInventory,
    ) -> IntegrityReport {
        let mut report = IntegrityReport::default();
        let t = Instant::now();
        let live_hash = hash_file(&self.db_path);
        let actual = match &live_hash {
            Ok(h) => h.to_hex().to_string(),
            Err(e) => e.to_string(),
        };
        report.push(
            "file_hash",
            live_hash.as_ref().ok() == Some(verified_hash),
            verified_hash.to_hex().to_string(),
            actual,
            t.elapsed(),
        );
        let t = Instant::now();
        let conn = match storage::open(&self.db_path).and_then(|c| schema::migrate(&c).map(|_| c)) {
            Ok(c) => c,
            Err(e) => {
                report.push("open", false, "opens", e.to_string(), t.elapsed());
                return report;
            }
        };
        report.push("open", true, "opens", "opens", t.elapsed());
        let schema_check = |c: &duckdb::Connection| {
            let mut r = IntegrityReport::default();
            r.run(
                "schema_inventory",
                || match storage::inspect::schema_inventory(c) {
                    Ok(s) if &s == schema_inv => (
                        true,
                        "as in the manifest".into(),
                        "as in the manifest".into(),
                    ),
                    Ok(s) => (
                        false,
                        format!("{} columns", schema_inv.columns.len()),
                        format!("{} columns, differing", s.columns.len()),
                    ),
                    Err(e) => (false, "readable".into(), e.to_string()),
                },
            );
            r
        };
        let counts_check = |c: &duckdb::Connection| {
            let mut r = IntegrityReport::default();
            r.run("row_counts", || row_counts_match(c, fps));
            r
        };
        let checks: [&(dyn Fn(&duckdb::Connection) -> IntegrityReport + Sync); 2] =
            [&schema_check, &counts_check];
        for r in crate::snapshot::verify::run_jobs(&conn, &checks, |c, check| check(c)) {
            report.extend(r);
        }
        if crate::fault::hit("restore.post_swap_verify") {
            report.push(
                "injected_fault",
                false,
                "no fault",
                "fail point restore.post_swap_verify",
                Duration::ZERO,
            );
        }
        if report.passed() {
            self.fps = fps.clone();
            self.schema = schema_inv.clone();
        } else {
            // Keep the writer's view exact whatever is on disk now.
            if let Ok(f) = storage::inspect::user_fingerprints(&conn) {
                self.fps = f;
            }
            if let Ok(s) = storage::inspect::schema_inventory(&conn) {
                self.schema = s;
            }
        }
        self.conn = Some(conn);
        report
    }

    /// Builds the outcome and records it for AIP-155 replays.
    fn finish(
        &mut self,
        ctx: &RequestCtx,
        info: &RestoreInfo,
        report: IntegrityReport,
        started: Instant,
    ) -> Result<RestoreOutcome, Error> {
        let outcome = RestoreOutcome {
            restored_id: info.snapshot_id.clone(),
            safety_snapshot_id: info.safety_snapshot_id.clone(),
            report,
            rolled_back: info.rolled_back,
            rollback_reason: info.rollback_reason.clone(),
            event_seq: self.next_seq - 1,
            duration: started.elapsed(),
        };
        crate::metrics::restore_finished(outcome.duration, outcome.rolled_back);
        super::state::in_transaction(self.conn()?, |c| self.record_response(c, ctx, &outcome))?;
        Ok(outcome)
    }
}

/// Startup repair: a journal means the process died between the swap and the end of a restore.
/// If the live file verifies against the target, the restore stands; otherwise the safety
/// snapshot is put back.
pub(crate) fn recover(
    data_dir: &Path,
    db: &Path,
    store: &crate::snapshot::SnapshotStore,
) -> Result<(), Error> {
    let path = journal_path(data_dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        remove_db_files(&temp_path(db));
        return Ok(());
    };
    let journal: Journal = serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("restore journal: {e}")))?;
    let target = store.get(&SnapshotId::parse(&journal.target)?)?;
    let verified = storage::open(db)
        .ok()
        .map(|conn| check_database(&conn, &target.fingerprints, &target.schema).passed());
    if verified != Some(true) {
        tracing::error!(target = %journal.target, safety = %journal.safety, "interrupted restore did not verify: putting the safety snapshot back");
        let tmp = temp_path(db);
        remove_db_files(&tmp);
        store.assemble(&SnapshotId::parse(&journal.safety)?, &tmp)?;
        append_events_to_file(&tmp, &journal.rollback_events)?;
        replace_live(&tmp, db)?;
    } else {
        tracing::warn!(target = %journal.target, "interrupted restore verified after restart; keeping it");
    }
    remove_db_files(&temp_path(db));
    remove_journal(data_dir);
    Ok(())
}

/// What a verified restore swaps in.
struct Swap<'a> {
    target: &'a Manifest,
    safety: &'a Manifest,
    tmp: &'a Path,
    verified_hash: blake3::Hash,
    since_safety: &'a [Event],
    event: Event,
}

/// BLAKE3 of a whole file, memory-mapped and hashed on every core: no file-sized allocation
/// (its page faults cost more than the hashing) and no copy.
fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    Ok(blake3::Hasher::new().update_mmap_rayon(path)?.finalize())
}

/// Every user table's row count against the manifest (answered from metadata: cheap, and the
/// bytes were fully scanned before the swap).
fn row_counts_match(
    conn: &duckdb::Connection,
    fps: &crate::domain::fingerprint::Fingerprints,
) -> (bool, String, String) {
    let mut diffs = Vec::new();
    for (table, fp) in fps {
        let sql = format!(
            "SELECT count(*) FROM {}",
            crate::domain::tables::quote_ident(table)
        );
        match conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
            Ok(n) if n == fp.rows => {}
            Ok(n) => diffs.push(format!("{table}: {n} (expected {})", fp.rows)),
            Err(e) => diffs.push(format!("{table}: {e}")),
        }
    }
    let total: i64 = fps.values().map(|f| f.rows).sum();
    let expected = format!("{} tables, {total} rows", fps.len());
    if diffs.is_empty() {
        (true, expected.clone(), expected)
    } else {
        (false, expected, diffs.join("; "))
    }
}

fn restore_event(info: &RestoreInfo, report: &IntegrityReport) -> EventDraft {
    let mut ev = EventDraft::new(
        EventKind::RestorePerformed,
        "snapshot",
        info.snapshot_id.clone(),
    );
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

/// Opens a database file directly, appends events and checkpoints it so the file alone holds them.
fn append_events_to_file(path: &Path, events: &[Event]) -> Result<(), Error> {
    let conn = storage::open(path)?;
    super::state::in_transaction(&conn, |c| {
        for e in events {
            event_log::append(c, e)?;
        }
        Ok(())
    })?;
    storage::checkpoint(&conn)?;
    drop(conn);
    fsync_file(path)
}

/// Renames `tmp` over the live file, removes stale WAL files and makes it durable.
fn replace_live(tmp: &Path, db: &Path) -> Result<(), Error> {
    if crate::fault::hit("restore.before_rename") {
        return Err(Error::Internal("fail point restore.before_rename".into()));
    }
    std::fs::rename(tmp, db).map_err(|e| StorageError::io(db, e))?;
    for w in storage::wal_files(db) {
        match std::fs::remove_file(&w) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&w, e).into()),
        }
    }
    for w in storage::wal_files(tmp) {
        let _ = std::fs::remove_file(w);
    }
    fsync_dir(db)
}

fn remove_db_files(p: &Path) {
    let _ = std::fs::remove_file(p);
    for w in storage::wal_files(p) {
        let _ = std::fs::remove_file(w);
    }
}

fn write_journal(data_dir: &Path, j: &Journal) -> Result<(), Error> {
    let path = journal_path(data_dir);
    let text = serde_json::to_vec(j).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| StorageError::io(&path, e))?;
    fsync_file(&path)?;
    fsync_dir(&path)
}

fn remove_journal(data_dir: &Path) {
    let path = journal_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let _ = fsync_dir(&path);
}

pub(crate) fn fsync_file(path: &Path) -> Result<(), Error> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io(path, e).into())
}

/// fsyncs the directory holding `path`, so a rename or unlink in it is durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io(dir, e).into())
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
