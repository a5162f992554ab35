//! Read-only followers: a server that bootstraps from a primary's replica, then polls the
//! replica for new log segments and applies them on its writer — row images in a transaction
//! per run of events, a restore as a table swap with its event — checking the primary's
//! fingerprints after every segment. It serves reads and WatchEvents (applied events are
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

/// The follower side of a server.
pub struct Follower {
    remote: Remote,
    interval: Duration,
    status: parking_lot::Mutex<FollowerStatus>,
}

impl Follower {
    /// The follower configured in `config`, if any.
    pub(crate) fn open(config: &Config) -> Result<Option<Arc<Follower>>, Error> {
        let Some(f) = &config.follow else {
            return Ok(None);
        };
        let remote = Remote::open(&f.url, f.endpoint.as_deref())?;
        let status = FollowerStatus {
            url: remote.url().to_string(),
            ..Default::default()
        };
        Ok(Some(Arc::new(Follower {
            remote,
            interval: f.interval,
            status: parking_lot::Mutex::new(status),
        })))
    }

    pub fn status(&self) -> FollowerStatus {
        self.status.lock().clone()
    }

    pub fn url(&self) -> &str {
        self.remote.url()
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

/// Polls and applies until the task is aborted.
pub async fn run(app: App) {
    let Some(f) = app.shared.follower.clone() else {
        return;
    };
    loop {
        let polled = app.follow_once(&f).await;
        {
            let mut st = f.status.lock();
            st.applied_seq = app.shared.hub.head();
            match polled {
                Ok(source_head) => {
                    st.source_head_seq = source_head;
                    st.error = None;
                    if st.applied_seq >= source_head {
                        st.caught_up_at = Some(Utc::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "follower: could not apply the replica's log");
                    st.error = Some(e.public_message());
                }
            }
            if let Some(s) = st.staleness_secs() {
                crate::metrics::follower_staleness(s);
            }
        }
        tokio::time::sleep(f.interval).await;
    }
}

impl App {
    /// One poll: fetch the segments after the local head (and any snapshot a restore in them
    /// needs), apply them on the writer. Returns the replica's head.
    async fn follow_once(&self, f: &Follower) -> Result<u64, Error> {
        let local = self.shared.hub.head();
        let segments = fetch::read_log(&f.remote, local, None).await?;
        let head = segments.last().map_or(local, |s| s.last);
        if segments.is_empty() {
            return Ok(fetch::log_head(&f.remote).await?.max(local));
        }
        let store = self.shared.store()?;
        for e in segments.iter().flat_map(|s| &s.events) {
            if let Some(t) = restored_snapshot(e) {
                let id = SnapshotId::parse(t)?;
                if !store.contains(&id) {
                    fetch::import_snapshot(&f.remote, &store, &id).await?;
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
