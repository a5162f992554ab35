//! Background upkeep, each step a writer job: re-probe a degraded snapshot store (so it
//! recovers by itself and says so in an event) and compact the event log to its retention.

use std::time::Duration;

use super::status::SnapshotState;
use super::{App, RequestCtx};
use crate::error::Error;
use crate::events::log as event_log;

/// How often upkeep runs.
const PERIOD: Duration = Duration::from_secs(15);

/// Runs until the task is aborted.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        if app.shared.status.get().state == SnapshotState::Degraded {
            let ctx = RequestCtx::default();
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
        let ctx = RequestCtx::default();
        self.write(&ctx, move |st| {
            let conn = st.conn()?;
            let removed = event_log::compact(conn, keep_last, min_time)?;
            if removed > 0 {
                let b = event_log::bounds(conn)?;
                st.shared.hub.set_first(b.first);
                tracing::info!(removed, first = b.first, "event log compacted");
            }
            Ok(removed)
        })
        .await
    }
}
