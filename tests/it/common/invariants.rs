//! The invariants that must hold on a data directory after any fault — a crash, a power cut,
//! an injected error — judged against what the client saw acknowledged before it.
//!
//! Build an [`Expected`] while driving a server (each acknowledged RPC adds what it promised;
//! each RPC whose outcome is unknown adds the states it may have left), then [`check`] the
//! data directory: it starts the real binary on it, runs every check, stops it and reads the
//! live row counts from the file. The [`Verdict`] lists the violations (empty: every invariant
//! holds) instead of panicking, so a campaign can report all of them.
//!
//! Checked, in order:
//! 1. the server starts and health is SERVING — when [`Expected::restore_in_flight`] it may
//!    instead refuse to start (non-zero exit, a message on stderr); the refusal is reported;
//! 2. no `restore.journal` is left once it serves;
//! 3. event seqs are dense from the first retained to the head, and every acknowledged event is
//!    there with the same kind and entity id;
//! 4. every listed snapshot passes a quick verify; every acknowledged snapshot exists, passes a
//!    deep verify, and shows the promised row count for a table in PreviewSnapshot;
//! 5. the live row counts of the user tables equal one of the allowed [`State`]s, the event
//!    that marks that state is in the log and the markers of the other states are not (a
//!    change is all there with its event, or not there at all).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lnrs::pb;
use tonic::transport::Channel;

use super::ChildServer;

/// Row count per user table.
pub type Counts = BTreeMap<String, i64>;

/// Recognises the event that marks a state (e.g. "the delete of measure 42").
#[derive(Clone)]
pub struct Marker {
    pub what: String,
    pub matches: Arc<dyn Fn(&pb::Event) -> bool + Send + Sync>,
}

impl Marker {
    /// An event of `kind` about `entity_id`.
    pub fn event(kind: pb::EventKind, entity_id: &str) -> Marker {
        let id = entity_id.to_string();
        Marker {
            what: format!("{kind:?} {entity_id}"),
            matches: Arc::new(move |e| e.kind == kind as i32 && e.entity_id == id),
        }
    }

    /// A restore of `target` that stood (not rolled back).
    pub fn restored(target: &str) -> Marker {
        let id = target.to_string();
        Marker {
            what: format!("RestorePerformed {target} (not rolled back)"),
            matches: Arc::new(move |e| {
                e.kind == pb::EventKind::RestorePerformed as i32
                    && e.entity_id == id
                    && e.restore.as_ref().is_some_and(|r| !r.rolled_back)
            }),
        }
    }
}

impl std::fmt::Debug for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

/// A state the live data may be in, and the event that must mark it.
#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub counts: Counts,
    pub marker: Option<Marker>,
}

/// What the client was promised before the fault.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    events: Vec<(u64, pb::EventKind, String)>,
    snapshots: Vec<(String, Option<(String, i64)>)>,
    states: Vec<State>,
    restore_in_flight: bool,
}

impl Expected {
    /// An acknowledged event: `seq` (from the RPC's response) must be in the log with this
    /// kind and entity id.
    pub fn event(&mut self, seq: u64, kind: pb::EventKind, entity_id: &str) -> &mut Self {
        self.events.push((seq, kind, entity_id.to_string()));
        self
    }

    /// An acknowledged snapshot: it exists and passes a deep verify.
    pub fn snapshot(&mut self, id: &str) -> &mut Self {
        self.snapshots.push((id.to_string(), None));
        self
    }

    /// An acknowledged snapshot whose preview must count `rows` rows in `table`.
    pub fn snapshot_with_rows(&mut self, id: &str, table: &str, rows: i64) -> &mut Self {
        self.snapshots
            .push((id.to_string(), Some((table.to_string(), rows))));
        self
    }

    /// An allowed state of the live data. With none, the counts are not checked.
    pub fn state(&mut self, name: &str, counts: Counts, marker: Option<Marker>) -> &mut Self {
        self.states.push(State {
            name: name.to_string(),
            counts,
            marker,
        });
        self
    }

    /// A restore was in flight at the fault: the server may refuse to start (say why).
    pub fn restore_in_flight(&mut self) -> &mut Self {
        self.restore_in_flight = true;
        self
    }
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Every invariant that did not hold, one line each (empty: all hold).
    pub violations: Vec<String>,
    /// The server refused to start (allowed for a restore in flight): why, and its stderr.
    pub refused: Option<String>,
    /// The allowed state the live data is in.
    pub state: Option<String>,
    /// The checked server's stderr.
    pub stderr: String,
}

/// Starts the real server on `data_dir`, checks every invariant against `exp`, stops it.
pub async fn check(data_dir: &Path, exp: &Expected) -> Verdict {
    let mut v = Verdict::default();
    // No drain delay: nothing else talks to this server.
    let fast_stop = ["--shutdown-drain-delay", "0s"];
    let server = match ChildServer::try_start(data_dir, "127.0.0.1:0", &fast_stop, &[]).await {
        Ok(s) => s,
        Err(f) if exp.restore_in_flight && f.status.is_some_and(|s| !s.success()) => {
            v.refused = Some(f.to_string());
            if f.stderr.trim().is_empty() {
                v.violations
                    .push("refused to start without saying why".into());
            }
            return v;
        }
        Err(f) => {
            v.violations.push(f.to_string());
            return v;
        }
    };
    if data_dir.join("restore.journal").exists() {
        v.violations
            .push("restore.journal is still there while the server serves".into());
    }
    let channel = server.channel.clone();
    let exp2 = exp.clone();
    // A failing RPC panics in the shared helpers: report it as a violation, keep going.
    let log = match tokio::spawn(async move { online_checks(&channel, &exp2).await }).await {
        Ok((mut found, log)) => {
            v.violations.append(&mut found);
            log
        }
        Err(e) => {
            v.violations
                .push(format!("an RPC failed: {}", panic_text(e)));
            Vec::new()
        }
    };
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.exit(Duration::from_secs(30)).await;
    v.stderr = stderr;
    if !status.success() {
        v.violations
            .push(format!("the checked server exited with {status:?}"));
    }
    if !exp.states.is_empty() {
        let db = data_dir.join("lnrs.duckdb");
        match std::panic::catch_unwind(|| super::table_counts(&db)) {
            Ok(counts) => v.state = check_state(&counts, &log, &exp.states, &mut v.violations),
            Err(_) => v
                .violations
                .push("the database file does not open after a clean stop".into()),
        }
    }
    v
}

/// The checks that need the running server; returns the violations and the whole log.
async fn online_checks(channel: &Channel, exp: &Expected) -> (Vec<String>, Vec<pb::Event>) {
    let mut out = Vec::new();
    let log = super::events_after(channel, 0).await;
    let head = pb::event_service_client::EventServiceClient::new(channel.clone())
        .list_events(pb::ListEventsRequest {
            start_after_seq: 0,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.extend(super::gap_in(&log));
    let (first, last) = (
        log.first().map_or(0, |e| e.seq),
        log.last().map_or(0, |e| e.seq),
    );
    if last != head.head_seq || (head.head_seq > 0 && first != head.first_available_seq) {
        out.push(format!(
            "the log runs {first}..={last}, the server says {}..={}",
            head.first_available_seq, head.head_seq
        ));
    }
    for (seq, kind, id) in &exp.events {
        match log.iter().find(|e| e.seq == *seq) {
            Some(e) if e.kind == *kind as i32 && &e.entity_id == id => {}
            Some(e) => out.push(format!(
                "acknowledged event {seq} ({kind:?} {id}) is now {:?} {}",
                pb::EventKind::try_from(e.kind),
                e.entity_id
            )),
            None => out.push(format!("acknowledged event {seq} ({kind:?} {id}) is lost")),
        }
    }
    snapshot_checks(channel, exp, &mut out).await;
    (out, log)
}

async fn snapshot_checks(channel: &Channel, exp: &Expected, out: &mut Vec<String>) {
    let mut snaps = pb::snapshot_service_client::SnapshotServiceClient::new(channel.clone());
    let listed: Vec<String> = super::all_pages(|page_token| {
        let mut snaps = snaps.clone();
        async move {
            let page = snaps
                .list_snapshots(pb::ListSnapshotsRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let ids = page.snapshots.into_iter().map(|s| s.snapshot_id).collect();
            (ids, page.next_page_token)
        }
    })
    .await;
    for id in &listed {
        if let Some(failed) = verify(&mut snaps, id, pb::VerifyMode::Quick).await {
            out.push(format!(
                "listed snapshot {id} fails a quick verify: {failed}"
            ));
        }
    }
    for (id, rows) in &exp.snapshots {
        if !listed.contains(id) {
            out.push(format!("acknowledged snapshot {id} is lost"));
            continue;
        }
        if let Some(failed) = verify(&mut snaps, id, pb::VerifyMode::Deep).await {
            out.push(format!(
                "acknowledged snapshot {id} fails a deep verify: {failed}"
            ));
        }
        if let Some((table, n)) = rows {
            let preview = snaps
                .preview_snapshot(pb::PreviewSnapshotRequest {
                    snapshot_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let got = preview
                .table_rows
                .iter()
                .find(|t| &t.table == table)
                .map(|t| t.rows);
            if got != Some(*n) {
                out.push(format!(
                    "snapshot {id} previews {got:?} rows in {table}, expected {n}"
                ));
            }
        }
    }
}

/// `None` when the snapshot verifies, else the failed checks.
async fn verify(
    snaps: &mut pb::snapshot_service_client::SnapshotServiceClient<Channel>,
    id: &str,
    mode: pb::VerifyMode,
) -> Option<String> {
    let r = snaps
        .verify_snapshot(pb::VerifySnapshotRequest {
            source: pb::HistorySource::Local as i32,
            snapshot_id: id.to_string(),
            mode: mode as i32,
        })
        .await;
    match r {
        Ok(r) => {
            let report = r.into_inner().report.unwrap_or_default();
            (!report.passed).then(|| {
                report
                    .checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{}: {}", c.name, c.actual))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        }
        Err(s) => Some(format!("{:?} {}", s.code(), s.message())),
    }
}

/// Which allowed state `counts` is; the marker rules of the module docs.
fn check_state(
    counts: &Counts,
    log: &[pb::Event],
    states: &[State],
    out: &mut Vec<String>,
) -> Option<String> {
    let marked = |m: &Option<Marker>| {
        m.as_ref()
            .is_some_and(|m| log.iter().any(|e| (m.matches)(e)))
    };
    let Some(state) = states.iter().find(|s| &s.counts == counts) else {
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        let diffs: Vec<String> = states
            .iter()
            .map(|s| format!("vs {}: {}", s.name, diff(&s.counts, counts)))
            .collect();
        out.push(format!(
            "live row counts match none of {names:?} ({})",
            diffs.join("; ")
        ));
        return None;
    };
    if let Some(m) = &state.marker {
        if !marked(&state.marker) {
            out.push(format!(
                "the data is in state {:?} but the log has no {m:?} event",
                state.name
            ));
        }
    }
    for other in states.iter().filter(|s| s.counts != state.counts) {
        if let Some(m) = &other.marker {
            if marked(&other.marker) {
                out.push(format!(
                    "the log has {m:?} but the data is in state {:?}, not {:?}",
                    state.name, other.name
                ));
            }
        }
    }
    Some(state.name.clone())
}

fn diff(want: &Counts, got: &Counts) -> String {
    let mut d = Vec::new();
    for (t, n) in want {
        match got.get(t) {
            Some(g) if g == n => {}
            g => d.push(format!("{t} {g:?} (expected {n})")),
        }
    }
    d.join(", ")
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}
