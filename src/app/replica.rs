//! The replica from the application's side: starting the uploader with the server, what
//! deletes wait for in modes `sync` and `required`, status, remote verify, drill and retention
//! — and disaster recovery: a database rebuilt from the replica alone (its newest snapshot, or
//! a chosen one, plus the shipped log replayed up to the replicated head and checked against
//! the primary's fingerprints), for `lnrs replica restore` and `--bootstrap-from-replica`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{App, Shared};
use crate::config::{Config, ReplicaConfig, ReplicaMode};
use crate::domain::fingerprint::Fingerprints;
use crate::error::Error;
use crate::events::EventHub;
use crate::replica::fetch::{self, DrillReport};
use crate::replica::gc::RemoteGc;
use crate::replica::segment::restored_snapshot;
use crate::replica::ship::{Settings, Sources};
use crate::replica::{lease, Mode, Remote, ReplicaError, ReplicaStatus, Replicator, Tip};
use crate::snapshot::retention::RetentionPolicy;
use crate::snapshot::{IntegrityReport, SnapshotId, SnapshotStore};
use crate::storage::pool::ReadPool;
use crate::storage::{self, files};

/// The replica layer's settings from the configuration.
pub fn settings(rc: &ReplicaConfig) -> Settings {
    Settings {
        url: rc.url.clone(),
        endpoint: rc.endpoint.clone(),
        mode: match rc.mode {
            ReplicaMode::Async => Mode::Async,
            ReplicaMode::Sync => Mode::Sync,
            ReplicaMode::Required => Mode::Required,
        },
        max_lag: rc.max_lag,
        segment_events: rc.segment_events,
        segment_interval: rc.segment_interval,
        lease_ttl: rc.lease_ttl,
        sync_timeout: rc.sync_timeout,
        retention: RetentionPolicy {
            keep_last: rc.retention_keep_last,
            keep_within: rc.retention_keep_within,
        },
        gc_grace: rc.gc_grace,
        gc_interval: rc.gc_interval,
        drill_share_percent: rc.drill_share_percent,
    }
}

/// Starts the uploader when a replica is configured. A replica that cannot start (bad URL,
/// no snapshot store) is logged and left off: the server still serves, and status says why.
pub(crate) fn start(
    config: &Config,
    store: Option<&Arc<SnapshotStore>>,
    reads: &Arc<ReadPool>,
    hub: &Arc<EventHub>,
    tip: Tip,
) -> Result<Option<Arc<Replicator>>, Error> {
    let Some(rc) = &config.replica else {
        return Ok(None);
    };
    let Some(store) = store else {
        tracing::error!("replica: the snapshot store is not open; nothing can be replicated");
        return Ok(None);
    };
    let sources = Sources {
        store: store.clone(),
        reads: reads.clone(),
        hub: hub.clone(),
        tip,
        node: lease::node_id(&config.data_dir)?,
    };
    let r = Replicator::start(settings(rc), sources)?;
    tracing::info!(url = %r.remote().url(), mode = rc.mode.as_str(), "replica: uploader started");
    Ok(Some(r))
}

/// Mode `required`: the pre-delete snapshot goes to the object store before the delete
/// commits; failing that, the delete fails and nothing changes.
pub(crate) fn upload_before_commit(shared: &Shared, id: &SnapshotId) -> Result<(), Error> {
    match &shared.replica {
        Some(r) if r.settings().mode == Mode::Required => {
            r.upload_snapshot_blocking(id).map_err(Error::from)
        }
        _ => Ok(()),
    }
}

impl App {
    /// Modes `sync` and `required`: returns once the delete's event (and its pre-delete
    /// snapshot) are in the object store, or fails with REPLICA_NOT_CONFIRMED.
    pub(crate) async fn wait_for_replica(
        &self,
        seq: u64,
        snapshot_id: Option<&str>,
    ) -> Result<(), Error> {
        let Some(r) = &self.shared.replica else {
            return Ok(());
        };
        if r.settings().mode == Mode::Async {
            return Ok(());
        }
        let id = snapshot_id.map(SnapshotId::parse).transpose()?;
        r.wait_replicated(seq, id.as_ref())
            .await
            .map_err(Error::from)
    }

    /// A replica needs a snapshot to recover from: when the object store has none and neither
    /// has the local store, takes one ("replica base"). Returns true once the replica has a
    /// base (or none is needed: no replica, or the local store has a snapshot the shipper
    /// uploads). The replica's status can lag the local store (a snapshot taken just now is not
    /// pending yet), so "neither has the local store" is decided on the writer: a base taken
    /// after the user's own snapshots would be the newest and push one of theirs out of
    /// keep_last.
    pub async fn ensure_replica_base(&self) -> bool {
        let Some(r) = &self.shared.replica else {
            return true;
        };
        let s = r.status();
        if s.snapshots_replicated > 0 || s.snapshots_pending > 0 {
            return true;
        }
        if s.state != crate::replica::ReplicaState::Replicating {
            return false;
        }
        let ctx = super::RequestCtx::internal("replica-base");
        match self
            .create_first_snapshot(ctx, "Replica base snapshot".into())
            .await
        {
            Ok(Some(c)) => {
                tracing::info!(snapshot = %c.snapshot_id, "replica: base snapshot taken");
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, "replica: could not take the base snapshot");
                false
            }
        }
    }

    /// The replica's status, when one is configured.
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        self.shared.replica.as_ref().map(|r| r.status())
    }

    pub(crate) fn replicator(&self) -> Result<Arc<Replicator>, Error> {
        self.shared
            .replica
            .clone()
            .ok_or(Error::Replica(ReplicaError::NotConfigured))
    }

    /// Verifies a snapshot's copy in the replica (quick: manifest and blocks present; deep:
    /// every block downloaded and checked, then assembled and checked like a local deep verify).
    pub async fn verify_in_replica(&self, id: &str, deep: bool) -> Result<IntegrityReport, Error> {
        let id = SnapshotId::parse(id)?;
        let r = self.replicator()?;
        let scratch = self.shared.store()?.scratch_path("replica-verify");
        let remote = r.remote().clone();
        let report = r
            .handle()
            .spawn(async move {
                let out = fetch::verify(&remote, &id, deep, &scratch).await;
                let _ = std::fs::remove_dir_all(&scratch);
                out
            })
            .await
            .map_err(|e| Error::Internal(format!("replica verify task: {e}")))??;
        Ok(report)
    }

    /// One run of the rotating read drill (`share_percent`: the configured share if `None`).
    pub async fn drill_replica(&self, share_percent: Option<u32>) -> Result<DrillReport, Error> {
        let r = self.replicator()?;
        let share = share_percent.unwrap_or(r.settings().drill_share_percent);
        if !(1..=100).contains(&share) {
            return Err(Error::invalid(
                "share_percent",
                "INVALID_SHARE",
                "must be in 1..=100",
            ));
        }
        let remote = r.remote().clone();
        let report = r
            .handle()
            .spawn(async move { fetch::drill(&remote, share).await })
            .await
            .map_err(|e| Error::Internal(format!("replica drill task: {e}")))??;
        if !report.bad.is_empty() {
            tracing::error!(bad = ?report.bad, "replica drill found damaged blocks");
        }
        Ok(report)
    }

    /// Remote retention and GC now.
    pub async fn replica_retention(&self, dry_run: bool) -> Result<RemoteGc, Error> {
        let r = self.replicator()?;
        let rr = r.clone();
        Ok(r.handle()
            .spawn(async move { rr.apply_retention(dry_run).await })
            .await
            .map_err(|e| Error::Internal(format!("replica retention task: {e}")))??)
    }
}

/// What a disaster recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub snapshot_id: String,
    /// The snapshot's event head, and the head after replaying the shipped log.
    pub snapshot_seq: u64,
    pub head_seq: u64,
    pub events_replayed: u64,
    pub segments: u64,
    pub elapsed: Duration,
    /// The deep verify of the snapshot before anything was replayed onto it.
    pub snapshot_report: IntegrityReport,
    pub fingerprints: Fingerprints,
}

/// Rebuilds the database of `config.data_dir` (which must hold none) from the replica:
/// snapshot `snapshot` (the newest if `None`) fetched with every block checked, assembled and
/// deep verified, then the shipped log after it replayed up to the replicated head — each
/// segment's fingerprints compared with the primary's, and the whole database scanned at the
/// end. Only then is the file published; on any error nothing is left at the database path.
pub fn recover(config: &Config, snapshot: Option<&str>) -> Result<Recovered, Error> {
    let rc = config
        .replica
        .clone()
        .ok_or(Error::Replica(ReplicaError::NotConfigured))?;
    let db = config.database_path();
    if db.exists() {
        return Err(ReplicaError::DataDirNotEmpty.into());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| storage::StorageError::io(&config.data_dir, e))?;
    let wanted = snapshot.map(SnapshotId::parse).transpose()?;
    let config = config.clone();
    // Its own thread and runtime: callers may be inside the server's runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::Internal(format!("recovery runtime: {e}")))?;
            rt.block_on(recover_async(&config, &rc, wanted))
        })
        .join()
        .map_err(|_| Error::Internal("the recovery thread panicked".into()))?
    })
}

async fn recover_async(
    config: &Config,
    rc: &ReplicaConfig,
    wanted: Option<SnapshotId>,
) -> Result<Recovered, Error> {
    let started = Instant::now();
    let remote = Remote::open(&rc.url, rc.endpoint.as_deref())?;
    let store = Arc::new(SnapshotStore::open(&config.snapshot_dir())?);
    let id = match wanted {
        Some(id) => id,
        None => fetch::snapshot_ids(&remote)
            .await?
            .pop()
            .ok_or_else(|| ReplicaError::NotFound("any snapshot (the replica is empty)".into()))?,
    };
    let m = fetch::import_snapshot(&remote, &store, &id).await?;
    let report = {
        let (store, id) = (store.clone(), id.clone());
        super::snapshots::blocking(move || Ok(store.verify_deep(&id)?)).await?
    };
    if !report.passed() {
        return Err(
            ReplicaError::corrupt(format!("snapshot {id}"), "its deep verify failed").into(),
        );
    }
    let segments = fetch::read_log(&remote, m.meta.event_head_seq, None).await?;
    // Snapshots a replayed restore swapped in: fetched before the replay starts.
    for e in segments.iter().flat_map(|s| &s.events) {
        if let Some(target) = restored_snapshot(e) {
            fetch::import_snapshot(&remote, &store, &SnapshotId::parse(target)?).await?;
        }
    }
    let db = config.database_path();
    let tmp = files::with_suffix(&db, ".recover-tmp");
    let _ = files::remove_database(&tmp);
    let replayed = {
        let (store, m, tmp) = (store.clone(), m.clone(), tmp.clone());
        super::snapshots::blocking(move || super::replay::rebuild(&store, &m, &segments, &tmp))
            .await
    };
    let super::replay::Rebuilt {
        head,
        events,
        segments: n_segments,
        fingerprints,
        ..
    } = match replayed {
        Ok(v) => v,
        Err(e) => {
            let _ = files::remove_database(&tmp);
            return Err(e);
        }
    };
    files::publish_new(&tmp, &db).map_err(|e| storage::StorageError::io(&db, e))?;
    restore_annotations(&remote, &store).await;
    store.persist_index()?;
    Ok(Recovered {
        snapshot_id: id.to_string(),
        snapshot_seq: m.meta.event_head_seq,
        head_seq: head,
        events_replayed: events,
        segments: n_segments,
        elapsed: started.elapsed(),
        snapshot_report: report,
        fingerprints,
    })
}

/// Users' pins, labels and descriptions back from the replica (best effort: a pin that
/// cannot be read is logged, the recovery stands).
async fn restore_annotations(remote: &Remote, store: &SnapshotStore) {
    let listed = match remote.list(crate::replica::layout::ANNOTATIONS).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "recovery: could not list the replica's annotations");
            return;
        }
    };
    for o in listed {
        let Some(id) = crate::replica::layout::parse_annotation(&o.name) else {
            continue;
        };
        if !store.contains(&id) {
            continue;
        }
        let a = match remote
            .get_bytes(&o.name)
            .await
            .map(|b| serde_json::from_slice::<crate::snapshot::Annotation>(&b))
        {
            Ok(Ok(a)) => a,
            _ => {
                tracing::warn!(snapshot = %id, "recovery: an annotation could not be read");
                continue;
            }
        };
        let update = crate::snapshot::AnnotationUpdate {
            pinned: Some(a.pinned),
            labels: a.labels,
            description: a.description,
        };
        if let Err(e) = store.annotate(&id, update) {
            tracing::warn!(snapshot = %id, error = %e, "recovery: an annotation could not be applied");
        }
    }
}
