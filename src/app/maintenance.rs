//! Background upkeep, each step a writer job: re-probe a degraded snapshot store (so it
//! recovers by itself and says so in an event), compact the event log to its retention, and
//! forget AIP-155 request ids past their age or beyond their count, and run the replica's read
//! drill every `replica_drill_interval`.

use super::status::SnapshotState;
use super::{App, RequestCtx};
use crate::error::Error;
use crate::storage::requests;

/// Runs every `maintenance_interval` until the task is aborted.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(app.config().maintenance_interval);
    tick.tick().await;
    let mut last_drill = std::time::Instant::now();
    loop {
        tick.tick().await;
        let drill_every = app.config().replica.as_ref().and_then(|r| r.drill_interval);
        if drill_every.is_some_and(|d| last_drill.elapsed() >= d) {
            last_drill = std::time::Instant::now();
            match app.drill_replica(None).await {
                Ok(d) => tracing::info!(
                    run = d.run,
                    read = d.blocks_read,
                    damaged = d.bad.len(),
                    "replica drill"
                ),
                Err(e) => tracing::warn!(error = %e, "replica drill failed"),
            }
        }
        if app.shared.status.get().state == SnapshotState::Degraded {
            let ctx = RequestCtx::internal("storage-probe");
            let _ = app
                .write(&ctx, |st| {
                    st.probe_storage();
                    Ok(())
                })
                .await;
        }
        if let Err(e) = app.compact_events().await {
            tracing::warn!(error = %e, "event log compaction failed");
        }
        if let Err(e) = app.prune_request_log().await {
            tracing::warn!(error = %e, "request log pruning failed");
        }
    }
}

impl App {
    /// Applies the event retention settings now; returns the number of events removed.
    pub async fn compact_events(&self) -> Result<u64, Error> {
        let cfg = self.config();
        let keep_last = cfg.event_retention_keep_last;
        let min_time = cfg
            .event_retention_max_age
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| (chrono::Utc::now() - d).timestamp_micros());
        if keep_last.is_none() && min_time.is_none() {
            return Ok(0);
        }
        let ctx = RequestCtx::internal("compaction");
        self.write(&ctx, move |st| st.compact_events(keep_last, min_time))
            .await
    }

    /// Forgets request ids older than `request_log_max_age` and beyond
    /// `request_log_keep_last`; returns how many went.
    pub async fn prune_request_log(&self) -> Result<u64, Error> {
        let cfg = self.config();
        let max_age =
            chrono::Duration::from_std(cfg.request_log_max_age).unwrap_or(chrono::Duration::MAX);
        let min_time = chrono::Utc::now()
            .checked_sub_signed(max_age)
            .map_or(i64::MIN, |t| t.timestamp_micros());
        let keep_last = cfg.request_log_keep_last;
        let ctx = RequestCtx::internal("request-log");
        self.write(&ctx, move |st| {
            Ok(st
                .db
                .transaction(|c| requests::prune(c, min_time, keep_last))?)
        })
        .await
    }
}
