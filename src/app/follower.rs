//! Read-only followers: a server that bootstraps from a primary's replica, then polls the
//! replica for new log segments and applies them on its writer — row images in a transaction
//! per run of events, a restore as a table swap with its event — checking the primary's
//! fingerprints after every segment. Without a replica, a follower tails the primary itself:
//! the server layer fetches the primary's newest snapshot (ExportSnapshot) for the bootstrap
//! ([`bootstrap_from_archive`]) and feeds its WatchEvents log records to
//! [`App::apply_primary_records`], the same apply. It serves reads and WatchEvents (applied events are
//! published like the primary's); every write is FAILED_PRECONDITION `READ_ONLY_FOLLOWER`.
//!
//! Each applied run commits at an event boundary of the primary's log, so a reader never sees
//! a state the primary did not have; a follower killed mid-apply resumes from its own head.
//! Staleness is the time since the follower last knew it had everything the replica had.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::replay::{apply_run, describe_difference, replay_restore, runs};
use super::state::WriterState;
use super::{App, RequestCtx};
use crate::config::{Config, FollowConfig};
use crate::error::Error;
use crate::replica::segment::{restored_snapshot, Segment};
use crate::replica::{fetch, Remote, ReplicaError};
use crate::snapshot::SnapshotId;
use crate::storage::changes::Changes;

/// A follower's view of its source.
#[derive(Debug, Clone, Default)]
pub struct FollowerStatus {
    pub url: String,
    /// The newest event applied here.
    pub applied_seq: u64,
    /// The newest event the replica had at the last poll.
    pub source_head_seq: u64,
    /// When the follower last had everything the replica had.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
}

impl FollowerStatus {
    /// Seconds since the follower last had everything the replica had (None: never yet).
    pub fn staleness_secs(&self) -> Option<f64> {
        self.caught_up_at
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
    }
}

/// Where a follower reads the primary's history.
enum Source {
    /// The primary's replica on object storage (polled here).
    Replica(Remote),
    /// The primary's gRPC address (tailed by the server layer).
    Primary(String),
}

/// The follower side of a server.
pub struct Follower {
    source: Source,
    interval: Duration,
    status: parking_lot::Mutex<FollowerStatus>,
}

impl Follower {
    /// The follower configured in `config`, if any.
    pub(crate) fn open(config: &Config) -> Result<Option<Arc<Follower>>, Error> {
        let Some(f) = &config.follow else {
            return Ok(None);
        };
        let source = if f.tails_primary() {
            Source::Primary(f.url.clone())
        } else {
            Source::Replica(Remote::open(&f.url, f.endpoint.as_deref())?)
        };
        let status = FollowerStatus {
            url: match &source {
                Source::Replica(r) => r.url().to_string(),
                Source::Primary(u) => u.clone(),
            },
            ..Default::default()
        };
        Ok(Some(Arc::new(Follower {
            source,
            interval: f.interval,
            status: parking_lot::Mutex::new(status),
        })))
    }

    pub fn status(&self) -> FollowerStatus {
        self.status.lock().clone()
    }

    pub fn url(&self) -> &str {
        match &self.source {
            Source::Replica(r) => r.url(),
            Source::Primary(u) => u,
        }
    }

    /// Records the outcome of a poll (or of a batch from the primary): the source's head, or
    /// why it failed; the staleness metric follows.
    fn record(&self, applied_seq: u64, polled: Result<u64, String>) {
        let mut st = self.status.lock();
        st.applied_seq = applied_seq;
        match polled {
            Ok(source_head) => {
                st.source_head_seq = source_head;
                st.error = None;
                if st.applied_seq >= source_head {
                    st.caught_up_at = Some(Utc::now());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "follower: could not apply the primary's log");
                st.error = Some(e);
            }
        }
        if let Some(s) = st.staleness_secs() {
            crate::metrics::follower_staleness(s);
        }
    }
}

/// The configuration a follower's first start recovers with: its source as the replica.
pub(crate) fn recovery_config(config: &Config, f: &FollowConfig) -> Config {
    let mut c = config.clone();
    let mut r = crate::config::ReplicaConfig::new(f.url.clone());
    r.endpoint = f.endpoint.clone();
    c.replica = Some(r);
    c
}

/// Polls the replica and applies until the task is aborted (a follower of the primary itself
/// is driven by the server layer instead).
pub async fn run(app: App) {
    let Some(f) = app.shared.follower.clone() else {
        return;
    };
    let Source::Replica(remote) = &f.source else {
        return;
    };
    loop {
        let polled = app.follow_once(remote).await;
        f.record(
            app.shared.hub.head(),
            polled.map_err(|e| e.public_message()),
        );
        tokio::time::sleep(f.interval).await;
    }
}

/// Builds the live database of a new follower from a snapshot archive of its primary (the
/// primary's ExportSnapshot): loaded into the store (checked and deep-verified first), then
/// assembled and migrated next to the live path and published. The log after it arrives
/// through [`App::apply_primary_records`].
pub fn bootstrap_from_archive(
    config: &Config,
    archive_file: &std::path::Path,
) -> Result<u64, Error> {
    let db = config.database_path();
    if db.exists() {
        return Err(ReplicaError::DataDirNotEmpty.into());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| crate::storage::StorageError::io(&config.data_dir, e))?;
    let store = crate::snapshot::SnapshotStore::open(&config.snapshot_dir())?;
    let scratch = store.scratch_path("bootstrap-verify");
    let loaded = crate::snapshot::archive::load(&store, archive_file, &scratch)?;
    let tmp = crate::storage::files::with_suffix(&db, ".recover-tmp");
    let _ = crate::storage::files::remove_database(&tmp);
    let rebuilt = super::replay::rebuild(&store, &loaded.manifest, &[], &tmp);
    if let Err(e) = rebuilt {
        let _ = crate::storage::files::remove_database(&tmp);
        return Err(e);
    }
    crate::storage::files::publish_new(&tmp, &db)
        .map_err(|e| crate::storage::StorageError::io(&db, e))?;
    store.persist_index()?;
    Ok(loaded.manifest.meta.event_head_seq)
}

impl App {
    /// Applies the primary's log records (WatchEvents `log_record`, in seq order) as a
    /// follower of the primary itself. `missing_snapshot` fetches a snapshot a restore among
    /// them swapped in, as an archive file, when this store lacks it. Returns the new head.
    pub async fn apply_primary_records<F, Fut>(
        &self,
        records: &[Vec<u8>],
        missing_snapshot: F,
    ) -> Result<u64, Error>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<crate::dataio::StagedFile, Error>>,
    {
        let events = records
            .iter()
            .map(|r| serde_json::from_slice::<crate::events::Event>(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("a primary's log record does not decode: {e}")))?;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(self.shared.hub.head());
        };
        let store = self.shared.store()?;
        for e in &events {
            if let Some(t) = restored_snapshot(e) {
                let id = SnapshotId::parse(t)?;
                if !store.contains(&id) {
                    let file = missing_snapshot(id.to_string()).await?;
                    let store = store.clone();
                    super::snapshots::blocking(move || {
                        let scratch = store.scratch_path("follow-verify");
                        Ok(crate::snapshot::archive::load(
                            &store,
                            file.path(),
                            &scratch,
                        )?)
                    })
                    .await?;
                }
            }
        }
        let segment = Segment {
            first: first.seq,
            last: last.seq,
            fingerprints: None,
            written_at: Utc::now(),
            events,
        };
        let ctx = RequestCtx::internal("follow");
        self.write(&ctx, move |st| st.apply_segments(&[segment]))
            .await?;
        Ok(self.shared.hub.head())
    }

    /// Records a follower-of-the-primary's progress (the primary's head as last heard) or its
    /// failure, for GetStatus and the staleness metric.
    pub fn note_primary(&self, primary_head: Result<u64, String>) {
        if let Some(f) = &self.shared.follower {
            f.record(self.shared.hub.head(), primary_head);
        }
    }

    /// One poll: fetch the segments after the local head (and any snapshot a restore in them
    /// needs), apply them on the writer. Returns the replica's head.
    async fn follow_once(&self, remote: &Remote) -> Result<u64, Error> {
        let local = self.shared.hub.head();
        let segments = fetch::read_log(remote, local, None).await?;
        let head = segments.last().map_or(local, |s| s.last);
        if segments.is_empty() {
            return Ok(fetch::log_head(remote).await?.max(local));
        }
        let store = self.shared.store()?;
        for e in segments.iter().flat_map(|s| &s.events) {
            if let Some(t) = restored_snapshot(e) {
                let id = SnapshotId::parse(t)?;
                if !store.contains(&id) {
                    fetch::import_snapshot(remote, &store, &id).await?;
                }
            }
        }
        let ctx = RequestCtx::internal("follow");
        self.write(&ctx, move |st| st.apply_segments(&segments))
            .await?;
        Ok(head)
    }

    /// The follower's status, when this server is one.
    pub fn follower_status(&self) -> Option<FollowerStatus> {
        self.shared.follower.as_ref().map(|f| f.status())
    }
}

impl WriterState {
    /// Applies shipped segments to the live database (see the module docs).
    pub(crate) fn apply_segments(&mut self, segments: &[Segment]) -> Result<(), Error> {
        for seg in segments {
            let fresh: Vec<_> = seg
                .events
                .iter()
                .filter(|e| e.seq >= self.next_seq)
                .cloned()
                .collect();
            if fresh.first().is_some_and(|e| e.seq != self.next_seq) {
                return Err(ReplicaError::Gap {
                    from: self.next_seq,
                    to: fresh[0].seq - 1,
                }
                .into());
            }
            for run in runs(&fresh) {
                let mut changes = Changes::new();
                self.data_transaction(|conn| apply_run(conn, run.data, &mut changes))?;
                self.after_commit(&changes, run.data.to_vec());
                if let Some(restore) = run.restore {
                    let store = self.store()?;
                    let fps = {
                        let _fence = self.shared.reads.write_fence();
                        replay_restore(&store, self.conn()?, restore)?
                    };
                    self.fps = fps;
                    self.issued_ids.clear();
                    self.after_commit(&Changes::new(), vec![restore.clone()]);
                }
            }
            if let Some(expected) = seg
                .fingerprints
                .as_ref()
                .filter(|_| seg.last < self.next_seq)
            {
                if *expected != self.fps {
                    return Err(ReplicaError::ReplayDiverged(format!(
                        "after event {}: {}",
                        seg.last,
                        describe_difference(expected, &self.fps)
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }
}
