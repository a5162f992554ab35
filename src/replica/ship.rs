//! The uploader: one task per server that ships new snapshots (blocks first, then the
//! manifest), users' annotations, and the event log as segments (every `segment_events` events
//! or `segment_interval`, whichever comes first), under the lease. It keeps the lag (events,
//! seconds, bytes) current, retries with backoff, and lets `sync` deletes wait until their
//! snapshot and event are in the store.
//!
//! It runs on a small runtime of its own, so the writer thread can block on an upload (policy
//! `required`) and the server's runtime never waits on the object store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::layout;
use super::lease::{self, Held, Taken};
use super::remote::{Put, Remote};
use super::segment::Segment;
use super::{Mode, ReplicaError};
use crate::domain::fingerprint::Fingerprints;
use crate::events::{log as event_log, EventFilter, EventHub};
use crate::snapshot::retention::RetentionPolicy;
use crate::snapshot::{Annotation, Manifest, SnapshotId, SnapshotStore};
use crate::storage::pool::ReadPool;

/// Block uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// How long the uploader sleeps when there is nothing to do.
const IDLE_WAIT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The committed head and the fingerprints right after it: what the writer publishes after
/// every commit, so a segment can say what the primary looked like at its last event.
#[derive(Debug, Clone, Default)]
pub struct Tip {
    pub seq: u64,
    pub fingerprints: Fingerprints,
}

/// How the replica is set up (from the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub endpoint: Option<String>,
    pub mode: Mode,
    pub max_lag: Duration,
    pub segment_events: u64,
    pub segment_interval: Duration,
    pub lease_ttl: Duration,
    pub sync_timeout: Duration,
    pub retention: RetentionPolicy,
    pub gc_grace: Duration,
    pub gc_interval: Duration,
    pub drill_share_percent: u32,
}

/// Where the replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaState {
    /// Not started yet (the first cycle has not finished).
    #[default]
    Starting,
    /// Everything committed is shipped, or within the configured lag.
    Replicating,
    /// Behind by more than `max_lag`.
    Lagging,
    /// The object store does not answer; the uploader retries with backoff.
    Unreachable,
    /// Another server holds the lease for this prefix; this one uploads nothing.
    Fenced,
    /// The replica holds a different history (its log is ahead of this database).
    Diverged,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Replicating => "replicating",
            Self::Lagging => "lagging",
            Self::Unreachable => "unreachable",
            Self::Fenced => "fenced",
            Self::Diverged => "diverged",
        }
    }
}

/// What GetStatus, health and metrics report.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus {
    pub url: String,
    pub mode: Mode,
    pub state: ReplicaState,
    pub reason: Option<String>,
    /// The newest event in the store (the shipped log's head).
    pub replicated_seq: u64,
    pub head_seq: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub lag_bytes: u64,
    pub snapshots_replicated: u64,
    pub snapshots_pending: u64,
    pub uploaded_bytes: u64,
    pub last_upload: Option<DateTime<Utc>>,
    pub lease_generation: u64,
    pub lease_holder: String,
    /// Within the max lag and allowed to write: health SERVING.
    pub healthy: bool,
}

impl ReplicaStatus {
    /// This status against an event head read elsewhere: GetStatus reads the log's head from
    /// the database, which a commit reaches before the uploader hears of it. Never less behind
    /// than that head says — "0 events behind" next to a head the store does not hold would
    /// tell a client it is caught up when it is not.
    pub fn against_head(mut self, head: u64) -> Self {
        if head > self.head_seq {
            self.head_seq = head;
            self.lag_events = head.saturating_sub(self.replicated_seq);
        }
        self
    }
}

#[cfg(test)]
mod status_tests {
    use super::ReplicaStatus;

    #[test]
    fn a_head_the_uploader_has_not_heard_of_counts_as_lag() {
        let s = ReplicaStatus {
            replicated_seq: 7,
            head_seq: 7,
            ..Default::default()
        };
        let seen = s.clone().against_head(8);
        assert_eq!((seen.head_seq, seen.lag_events), (8, 1));
        let older = s.against_head(6);
        assert_eq!(
            (older.head_seq, older.lag_events),
            (7, 0),
            "never less behind"
        );
    }
}

/// What is confirmed in the store, for `sync` waits.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub log_head: u64,
    pub manifests: BTreeSet<SnapshotId>,
    pub fenced: bool,
}

/// What the uploader knows about the store (behind one async mutex: the loop and a
/// `required` delete's upload take turns).
#[derive(Default)]
pub(crate) struct ShipState {
    pub(crate) lease: Option<Held>,
    pub(crate) fenced: Option<Taken>,
    diverged: Option<String>,
    initialized: bool,
    pub(crate) remote_blocks: HashSet<blake3::Hash>,
    /// Remote manifests and their distinct blocks (`None` until read, for GC's mark phase).
    pub(crate) remote_manifests: BTreeMap<SnapshotId, Option<Vec<blake3::Hash>>>,
    /// The newest snapshot id the store has (or had: remote retention may have removed it).
    /// Only newer local snapshots are uploaded, so one remote retention removed is never
    /// shipped again; uploads go oldest first, so nothing older is left behind.
    pub(crate) high_water: Option<SnapshotId>,
    remote_annotations: HashMap<SnapshotId, Annotation>,
    pub(crate) shipped: u64,
    /// Since when events wait to be cut into a segment.
    pending_since: Option<Instant>,
    pending_bytes: u64,
    bytes_per_event: u64,
    uploaded_bytes: u64,
    last_upload: Option<DateTime<Utc>>,
    pub(crate) last_gc: Option<Instant>,
    /// Completed restores in the shipped log (event seq → the snapshot restored), and the
    /// segments already read for them: remote retention keeps what a replay needs.
    pub(crate) restores: BTreeMap<u64, SnapshotId>,
    pub(crate) scanned: HashSet<String>,
}

/// The replica uploader of one server.
pub struct Replicator {
    pub(crate) remote: Remote,
    pub(crate) settings: Settings,
    node: String,
    pub(crate) store: Arc<SnapshotStore>,
    reads: Arc<ReadPool>,
    hub: Arc<EventHub>,
    tip: Mutex<Tip>,
    status: watch::Sender<ReplicaStatus>,
    progress: watch::Sender<Progress>,
    nudge: Notify,
    urgent: AtomicBool,
    pub(crate) ship: tokio::sync::Mutex<ShipState>,
    /// Since when the replica has been behind (lag in seconds).
    behind_since: Mutex<Option<Instant>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    stop: CancellationToken,
}

/// What a server hands the uploader.
pub struct Sources {
    pub store: Arc<SnapshotStore>,
    pub reads: Arc<ReadPool>,
    pub hub: Arc<EventHub>,
    pub tip: Tip,
    pub node: String,
}

impl Replicator {
    /// Opens the store and starts the uploader on its own runtime.
    pub fn start(settings: Settings, sources: Sources) -> Result<Arc<Replicator>, ReplicaError> {
        let remote = Remote::open(&settings.url, settings.endpoint.as_deref())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lnrs-replica")
            .enable_all()
            .build()
            .map_err(|e| ReplicaError::Config(format!("replica runtime: {e}")))?;
        let status = ReplicaStatus {
            url: remote.url().to_string(),
            mode: settings.mode,
            head_seq: sources.tip.seq,
            ..Default::default()
        };
        let r = Arc::new(Replicator {
            remote,
            settings,
            node: sources.node,
            store: sources.store,
            reads: sources.reads,
            hub: sources.hub,
            tip: Mutex::new(sources.tip),
            status: watch::channel(status).0,
            progress: watch::channel(Progress::default()).0,
            nudge: Notify::new(),
            urgent: AtomicBool::new(false),
            ship: Default::default(),
            behind_since: Mutex::new(None),
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            stop: CancellationToken::new(),
        });
        r.handle.spawn(r.clone().run());
        Ok(r)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The runtime the replica's I/O runs on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The writer committed up to `tip`: wake the uploader.
    pub fn committed(&self, tip: Tip) {
        *self.tip.lock() = tip;
        self.nudge.notify_one();
    }

    /// A snapshot was committed or annotated: wake the uploader.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.subscribe()
    }

    /// The newest event confirmed in the store: the log must keep everything after it.
    pub fn replicated_seq(&self) -> u64 {
        self.progress.borrow().log_head
    }

    /// Waits until event `seq` (and `snapshot`, if any) are in the store, at most
    /// `sync_timeout`. Fenced: fails at once.
    pub async fn wait_replicated(
        &self,
        seq: u64,
        snapshot: Option<&SnapshotId>,
    ) -> Result<(), ReplicaError> {
        let waited = self.settings.sync_timeout;
        let deadline = tokio::time::Instant::now() + waited;
        let mut rx = self.progress.subscribe();
        self.urgent.store(true, Ordering::Release);
        self.nudge.notify_one();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.log_head >= seq && snapshot.is_none_or(|s| p.manifests.contains(s)) {
                    return Ok(());
                }
                if p.fenced {
                    return Err(self.fenced_error());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(ReplicaError::NotConfirmed { seq, waited }),
            }
        }
    }

    fn fenced_error(&self) -> ReplicaError {
        let s = self.status();
        ReplicaError::Fenced {
            holder: s.lease_holder,
            generation: s.lease_generation,
        }
    }

    /// Uploads one snapshot now, from a thread outside any runtime (the writer, policy
    /// `required`): blocks, then the manifest, within `sync_timeout`.
    pub fn upload_snapshot_blocking(&self, id: &SnapshotId) -> Result<(), ReplicaError> {
        let waited = self.settings.sync_timeout;
        self.handle.block_on(async {
            let upload = async {
                let mut st = self.ship.lock().await;
                if !self.prepare(&mut st).await? {
                    return Err(st.fenced.as_ref().map_or_else(
                        || ReplicaError::Diverged("the replica holds another history".into()),
                        |t| t.error(),
                    ));
                }
                // Older pending snapshots first: uploads stay in id order.
                self.upload_snapshots(&mut st).await?;
                match st.remote_manifests.contains_key(id) {
                    true => Ok(()),
                    false => Err(ReplicaError::NotFound(format!("snapshot {id}"))),
                }
            };
            match tokio::time::timeout(waited, upload).await {
                Ok(r) => r,
                Err(_) => Err(ReplicaError::Unreachable(format!(
                    "no confirmation within {waited:?}"
                ))),
            }
        })
    }

    /// Stops the uploader and gives up the lease (so a successor need not wait out its ttl).
    pub fn shutdown(&self) {
        self.stop.cancel();
        let Some(rt) = self.runtime.lock().take() else {
            return;
        };
        let release = async {
            let st = self.ship.lock().await;
            if let Some(held) = &st.lease {
                if let Err(e) = lease::release(&self.remote, held).await {
                    tracing::warn!(error = %e, "replica: could not release the lease");
                }
            }
        };
        // On a thread of its own: the caller may be inside another runtime, where blocking
        // on this one is not allowed.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(3), release).await;
                })
            });
        });
        rt.shutdown_background();
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome = {
                let mut st = self.ship.lock().await;
                let r = self.cycle(&mut st).await;
                if let Err(e) = &r {
                    crate::metrics::replica_upload_failed();
                    tracing::warn!(error = %e, "replica: upload cycle failed; retrying");
                }
                self.publish_status(&st, r.as_ref().err());
                r
            };
            let wait = match outcome {
                Ok(wait) => {
                    backoff = BACKOFF_MIN;
                    wait
                }
                Err(_) => {
                    let w = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
            };
            tokio::select! {
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// One pass: lease, snapshots, annotations, the log, GC. Returns how long to sleep.
    async fn cycle(&self, st: &mut ShipState) -> Result<Duration, ReplicaError> {
        if !self.prepare(st).await? {
            return Ok(self.settings.lease_ttl / 3);
        }
        self.upload_snapshots(st).await?;
        self.upload_annotations(st).await?;
        let wait = self.ship_log(st).await?;
        let gc_due = st
            .last_gc
            .is_none_or(|t| t.elapsed() >= self.settings.gc_interval);
        if gc_due {
            super::gc::run(self, st, false).await?;
        }
        Ok(wait.min(self.settings.lease_ttl / 3))
    }

    /// Lease held and state loaded. `Ok(false)`: fenced or diverged (nothing may be written).
    pub(crate) async fn prepare(&self, st: &mut ShipState) -> Result<bool, ReplicaError> {
        if st.diverged.is_some() {
            return Ok(false);
        }
        if !self.hold_lease(st).await? {
            return Ok(false);
        }
        if !st.initialized {
            self.load_remote(st).await?;
            st.initialized = true;
        }
        Ok(st.diverged.is_none())
    }

    /// Takes or renews the lease as needed. `Ok(false)`: someone else holds it.
    async fn hold_lease(&self, st: &mut ShipState) -> Result<bool, ReplicaError> {
        let ttl = self.settings.lease_ttl;
        match st.lease.as_mut() {
            None => match lease::acquire(&self.remote, &self.node, ttl).await? {
                Ok(held) => {
                    tracing::info!(generation = held.lease.generation, "replica: lease taken");
                    st.fenced = None;
                    st.lease = Some(held);
                }
                Err(taken) => {
                    st.fenced = Some(taken);
                    return Ok(false);
                }
            },
            Some(held) if held.due() => {
                if let Err(taken) = lease::renew(&self.remote, held).await? {
                    tracing::error!(holder = %taken.holder, "replica: lease taken over; this server stops replicating");
                    st.lease = None;
                    st.fenced = Some(taken);
                    return Ok(false);
                }
            }
            Some(_) => {}
        }
        Ok(true)
    }

    /// Errors unless the lease is still safe to write under.
    fn check_lease(st: &ShipState) -> Result<(), ReplicaError> {
        match &st.lease {
            Some(h) if h.valid() => Ok(()),
            _ => Err(ReplicaError::Unreachable(
                "the lease could not be renewed in time".into(),
            )),
        }
    }

    /// Reads what the store holds: blocks, manifests, annotations, and the shipped log head.
    async fn load_remote(&self, st: &mut ShipState) -> Result<(), ReplicaError> {
        st.remote_blocks = self
            .remote
            .list(layout::BLOCKS)
            .await?
            .iter()
            .filter_map(|o| layout::parse_block(&o.name))
            .collect();
        st.remote_manifests = self
            .remote
            .list(layout::MANIFESTS)
            .await?
            .iter()
            .filter_map(|o| layout::parse_manifest(&o.name))
            .map(|id| (id, None))
            .collect();
        st.high_water = st.remote_manifests.keys().next_back().cloned();
        for o in self.remote.list(layout::ANNOTATIONS).await? {
            if let Some(id) = layout::parse_annotation(&o.name) {
                let bytes = self.remote.get_bytes(&o.name).await?;
                if let Ok(a) = serde_json::from_slice::<Annotation>(&bytes) {
                    st.remote_annotations.insert(id, a);
                }
            }
        }
        let remote_head = super::fetch::log_head(&self.remote).await?;
        let local_head = self.tip.lock().seq;
        if remote_head > local_head {
            let why = format!(
                "the replica's log reaches event {remote_head}, beyond this database's head \
                 {local_head}: it holds another history; this server does not replicate to it"
            );
            tracing::error!("replica: {why}");
            st.diverged = Some(why);
            return Ok(());
        }
        st.shipped = match remote_head {
            0 => self.hub.first().saturating_sub(1),
            h => h,
        };
        self.progress.send_modify(|p| {
            p.log_head = st.shipped;
            p.manifests = st.remote_manifests.keys().cloned().collect();
        });
        Ok(())
    }

    /// Uploads every local snapshot the store lacks, oldest first.
    async fn upload_snapshots(&self, st: &mut ShipState) -> Result<(), ReplicaError> {
        let pending = self.pending(st);
        st.pending_bytes = self.pending_block_bytes(st, &pending);
        for id in &pending {
            self.upload_snapshot(st, id).await?;
        }
        Ok(())
    }

    /// Local snapshots to upload, oldest first.
    fn pending(&self, st: &ShipState) -> Vec<SnapshotId> {
        self.store
            .ids()
            .into_iter()
            .filter(|id| st.high_water.as_ref().is_none_or(|h| id > h))
            .collect()
    }

    /// Content bytes of the pending snapshots' blocks the store lacks (the lag in bytes).
    fn pending_block_bytes(&self, st: &ShipState, pending: &[SnapshotId]) -> u64 {
        let mut seen = HashSet::new();
        pending
            .iter()
            .filter_map(|id| self.store.get(id).ok())
            .flat_map(|m| m.blocks)
            .filter(|b| !st.remote_blocks.contains(&b.hash) && seen.insert(b.hash))
            .map(|b| b.len)
            .sum()
    }

    /// Blocks the store lacks, then (all confirmed) the manifest, create-only.
    pub(crate) async fn upload_snapshot(
        &self,
        st: &mut ShipState,
        id: &SnapshotId,
    ) -> Result<(), ReplicaError> {
        if st.remote_manifests.contains_key(id) {
            return Ok(());
        }
        let file = match self.store.manifest_file(id) {
            Ok(f) => f,
            // Forgotten since it was listed (retention): nothing to ship.
            Err(crate::snapshot::SnapshotError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let m = Manifest::decode(&file)?;
        let mut seen = HashSet::new();
        let missing: Vec<blake3::Hash> = m
            .blocks
            .iter()
            .map(|b| b.hash)
            .filter(|h| seen.insert(*h) && !st.remote_blocks.contains(h))
            .collect();
        Self::check_lease(st)?;
        let uploaded: Vec<(blake3::Hash, u64)> = stream::iter(missing)
            .map(|h| self.upload_block(h))
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect()
            .await?;
        for (h, n) in uploaded {
            st.remote_blocks.insert(h);
            st.uploaded_bytes += n;
        }
        if crate::fault::hit("replica.before_manifest") {
            return Err(ReplicaError::Unreachable(
                "injected fault at replica.before_manifest".into(),
            ));
        }
        Self::check_lease(st)?;
        let n = file.len() as u64;
        self.remote
            .put_create(&layout::manifest(id), Bytes::from(file))
            .await?;
        crate::metrics::replica_uploaded(n);
        st.uploaded_bytes += n;
        st.last_upload = Some(Utc::now());
        let blocks: Vec<blake3::Hash> = seen.into_iter().collect();
        st.remote_manifests.insert(id.clone(), Some(blocks));
        st.high_water = Some(id.clone());
        self.progress.send_modify(|p| {
            p.manifests.insert(id.clone());
        });
        Ok(())
    }

    async fn upload_block(&self, h: blake3::Hash) -> Result<(blake3::Hash, u64), ReplicaError> {
        let bytes = self.store.block_file(&h)?;
        let n = bytes.len() as u64;
        self.remote
            .put_create(&layout::block(&h), Bytes::from(bytes))
            .await?;
        crate::metrics::replica_uploaded(n);
        if crate::fault::hit("replica.after_block") {
            return Err(ReplicaError::Unreachable(
                "injected fault at replica.after_block".into(),
            ));
        }
        Ok((h, n))
    }

    /// Mirrors users' annotations (pins above all: remote retention keeps pinned snapshots,
    /// and a recovered server gets its pins back).
    async fn upload_annotations(&self, st: &mut ShipState) -> Result<(), ReplicaError> {
        let local: HashMap<SnapshotId, Annotation> = self.store.annotations().into_iter().collect();
        for (id, a) in &local {
            if st.remote_annotations.get(id) == Some(a) || !st.remote_manifests.contains_key(id) {
                continue;
            }
            Self::check_lease(st)?;
            let bytes = serde_json::to_vec(a)
                .map_err(|e| ReplicaError::corrupt("annotation", e.to_string()))?;
            self.remote
                .put_overwrite(&layout::annotation(id), Bytes::from(bytes))
                .await?;
            st.remote_annotations.insert(id.clone(), a.clone());
        }
        let gone: Vec<SnapshotId> = st
            .remote_annotations
            .keys()
            .filter(|id| !local.contains_key(*id) && self.store.contains(id))
            .cloned()
            .collect();
        for id in gone {
            Self::check_lease(st)?;
            self.remote.delete(&layout::annotation(&id)).await?;
            st.remote_annotations.remove(&id);
        }
        Ok(())
    }

    /// Ships committed events as segments when enough are pending, the oldest has waited
    /// `segment_interval`, or a `sync` delete waits. Returns how long until the next cut.
    async fn ship_log(&self, st: &mut ShipState) -> Result<Duration, ReplicaError> {
        let tip = self.tip.lock().clone();
        if tip.seq <= st.shipped {
            st.pending_since = None;
            return Ok(IDLE_WAIT);
        }
        let since = *st.pending_since.get_or_insert_with(Instant::now);
        let pending = tip.seq - st.shipped;
        let urgent = self.urgent.swap(false, Ordering::AcqRel);
        let interval = self.settings.segment_interval;
        if pending < self.settings.segment_events && since.elapsed() < interval && !urgent {
            return Ok(interval - since.elapsed());
        }
        while st.shipped < tip.seq {
            self.ship_segment(st, &tip).await?;
        }
        st.pending_since = None;
        Ok(IDLE_WAIT)
    }

    /// Ships the next segment: at most `segment_events` events after the shipped head.
    async fn ship_segment(&self, st: &mut ShipState, tip: &Tip) -> Result<(), ReplicaError> {
        let after = st.shipped;
        let limit = self.settings.segment_events as usize;
        let last_wanted = tip.seq;
        let events = self
            .reads
            .read(move |conn| {
                event_log::read_after(conn, after, limit, &EventFilter::default())
                    .map_err(ReplicaError::from)
            })
            .await?;
        let events: Vec<_> = events
            .into_iter()
            .filter(|e| e.seq <= last_wanted)
            .collect();
        let Some(first) = events.first().map(|e| e.seq) else {
            return Err(ReplicaError::Unreachable(format!(
                "events after {after} could not be read from the log"
            )));
        };
        if first != after + 1 {
            // Compacted before it was shipped (the replica was off): the gap is permanent.
            tracing::error!(
                after,
                first,
                "replica: events were compacted before they were shipped"
            );
        }
        let last = events.last().map_or(first, |e| e.seq);
        let fps = (last == tip.seq).then(|| tip.fingerprints.clone());
        let segment = Segment::new(events, fps);
        let bytes = segment.encode()?;
        st.bytes_per_event = (bytes.len() as u64 / (last - first + 1)).max(1);
        if crate::fault::hit("replica.before_segment") {
            return Err(ReplicaError::Unreachable(
                "injected fault at replica.before_segment".into(),
            ));
        }
        Self::check_lease(st)?;
        let name = layout::segment(first, last);
        let n = bytes.len() as u64;
        note_restores(st, &name, &segment);
        if self.remote.put_create(&name, Bytes::from(bytes)).await? == Put::Existed {
            // Shipped before a crash, not yet known: it must be the same events.
            let there =
                Segment::decode(&self.remote.get_bytes(&name).await?, &name, (first, last))?;
            if there.events != segment.events {
                let why = format!("segment {name} in the replica holds other events than this log");
                st.diverged = Some(why.clone());
                return Err(ReplicaError::Diverged(why));
            }
        }
        crate::metrics::replica_uploaded(n);
        st.uploaded_bytes += n;
        st.last_upload = Some(Utc::now());
        st.shipped = last;
        self.progress.send_modify(|p| p.log_head = last);
        Ok(())
    }

    /// Recomputes the status from the state and the tip.
    fn publish_status(&self, st: &ShipState, error: Option<&ReplicaError>) {
        let snapshots_pending = match st.initialized {
            true => self.pending(st).len() as u64,
            false => 0,
        };
        let (state, reason) = if let Some(why) = &st.diverged {
            (ReplicaState::Diverged, Some(why.clone()))
        } else if let Some(t) = &st.fenced {
            (
                ReplicaState::Fenced,
                Some(format!(
                    "{}; its lease expires at {} unless renewed",
                    t.error(),
                    t.expires_at.to_rfc3339()
                )),
            )
        } else if let Some(e) = error {
            (ReplicaState::Unreachable, Some(e.public_message()))
        } else if !st.initialized {
            (ReplicaState::Starting, None)
        } else {
            (ReplicaState::Replicating, None)
        };
        let (lease_generation, lease_holder) = match (&st.lease, &st.fenced) {
            (Some(h), _) => (
                h.lease.generation,
                format!("this server (node {})", h.lease.holder),
            ),
            (None, Some(t)) => (t.generation, format!("node {} on {}", t.holder, t.host)),
            (None, None) => (0, String::new()),
        };
        let fenced = st.fenced.is_some() || st.diverged.is_some();
        self.progress
            .send_if_modified(|p| std::mem::replace(&mut p.fenced, fenced) != fenced);
        let status = ReplicaStatus {
            url: self.remote.url().to_string(),
            mode: self.settings.mode,
            state,
            reason,
            replicated_seq: st.shipped,
            snapshots_replicated: st.remote_manifests.len() as u64,
            snapshots_pending,
            uploaded_bytes: st.uploaded_bytes,
            last_upload: st.last_upload,
            lease_generation,
            lease_holder,
            lag_bytes: st.pending_bytes,
            ..Default::default()
        };
        self.status
            .send_replace(self.with_lag(status, st.bytes_per_event));
    }

    /// The status with its lag fields current: events and bytes not yet in the store, and
    /// for how long the replica has been behind (since it first was, without catching up).
    fn with_lag(&self, mut s: ReplicaStatus, bytes_per_event: u64) -> ReplicaStatus {
        s.head_seq = self.tip.lock().seq;
        s.lag_events = s.head_seq.saturating_sub(s.replicated_seq);
        let behind = s.lag_events > 0 || s.snapshots_pending > 0;
        let since = {
            let mut clock = self.behind_since.lock();
            match (behind, *clock) {
                (false, _) => *clock = None,
                (true, None) => *clock = Some(Instant::now()),
                (true, Some(_)) => {}
            }
            *clock
        };
        s.lag_seconds = since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        s.lag_bytes = s.lag_bytes.max(s.lag_events * bytes_per_event.max(1));
        let over = s.lag_seconds > self.settings.max_lag.as_secs_f64();
        if over && s.state == ReplicaState::Replicating {
            s.state = ReplicaState::Lagging;
            s.reason = Some(format!(
                "{:.1}s behind (max lag {:?})",
                s.lag_seconds, self.settings.max_lag
            ));
        }
        s.healthy = !over && !matches!(s.state, ReplicaState::Fenced | ReplicaState::Diverged);
        crate::metrics::replica_lag(s.lag_seconds, s.lag_events, s.lag_bytes);
        s
    }

    /// Re-evaluates the lag between cycles: a stalled uploader (a store that hangs) must still
    /// turn the replica unhealthy.
    pub fn refresh_status(&self) {
        let s = self.status();
        let per_event = match s.lag_events {
            0 => 1,
            n => s.lag_bytes / n,
        };
        self.status.send_replace(self.with_lag(s, per_event));
    }
}

/// Records the completed restores `segment` holds (see [`ShipState::restores`]).
pub(crate) fn note_restores(st: &mut ShipState, name: &str, segment: &Segment) {
    for e in &segment.events {
        if let Some(id) =
            super::segment::restored_snapshot(e).and_then(|t| SnapshotId::parse(t).ok())
        {
            st.restores.insert(e.seq, id);
        }
    }
    st.scanned.insert(name.to_string());
}
