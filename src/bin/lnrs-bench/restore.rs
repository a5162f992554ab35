//! Item 3: RestoreSnapshot end to end (safety snapshot, assemble, deep verify, swap, verify
//! again), alternating between the oldest and the newest pre-delete snapshot so every restore
//! really changes the live file; client wall time and the response's own `duration`.

use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::snapshot_service_client::SnapshotServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::harness::{fail, Res};
use crate::prom::{self, HistSummary};
use crate::stats::Summary;

/// Restores of one scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreRun {
    /// Client wall time of RestoreSnapshot.
    pub wall: Summary,
    /// The response's `duration` (the server's own measure of the whole restore).
    pub server_duration: Summary,
    /// `lnrs_restore_seconds{outcome="restored"}` over the run.
    pub server_histogram: HistSummary,
    pub rolled_back: usize,
    pub checks_per_restore: usize,
    pub failed_checks: Vec<String>,
    /// Median milliseconds of each check of the response's report (the restore's profile:
    /// every step is a check with its duration), in report order; checks under 0.5 ms are
    /// summed into "other checks".
    pub profile: Vec<(String, f64)>,
}

/// Every pre-delete snapshot id, oldest first.
async fn delete_snapshots(client: &mut SnapshotServiceClient<Channel>) -> Res<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(
            page.snapshots
                .into_iter()
                .filter(|s| {
                    s.operation == pb::SnapshotOperation::Delete as i32
                        || s.operation == pb::SnapshotOperation::DeleteLink as i32
                })
                .map(|s| s.snapshot_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    Ok(ids)
}

/// Runs `reps` restores; needs at least two pre-delete snapshots in the store.
pub async fn run(channel: &Channel, reps: usize) -> Res<RestoreRun> {
    let mut client = SnapshotServiceClient::new(channel.clone());
    let ids = delete_snapshots(&mut client).await?;
    let (Some(oldest), Some(newest)) = (ids.first(), ids.last()) else {
        return Err(fail("no pre-delete snapshot to restore"));
    };
    let before = prom::scrape();
    let mut wall: Vec<Duration> = Vec::new();
    let mut server: Vec<Duration> = Vec::new();
    let mut out = RestoreRun::default();
    let mut by_check: Vec<(String, Vec<f64>)> = Vec::new();
    for i in 0..reps {
        let id = if i % 2 == 0 { oldest } else { newest };
        let started = Instant::now();
        let r = client
            .restore_snapshot(pb::RestoreSnapshotRequest {
                snapshot_id: id.clone(),
                confirm_snapshot_id: id.clone(),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        wall.push(started.elapsed());
        if let Some(d) = r.duration {
            server.push(Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            ));
        }
        if r.rolled_back {
            out.rolled_back += 1;
        }
        if let Some(report) = r.report {
            out.checks_per_restore = out.checks_per_restore.max(report.checks.len());
            for c in &report.checks {
                let ms = c
                    .duration
                    .map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6);
                match by_check.iter_mut().find(|(n, _)| *n == c.name) {
                    Some((_, v)) => v.push(ms),
                    None => by_check.push((c.name.clone(), vec![ms])),
                }
            }
            out.failed_checks.extend(
                report
                    .checks
                    .into_iter()
                    .filter(|c| !c.passed)
                    .map(|c| c.name),
            );
        }
    }
    let after = prom::scrape();
    out.wall = Summary::of(&wall);
    out.server_duration = Summary::of(&server);
    out.server_histogram = after.since(&before, prom::RESTORED).summary();
    let mut other = 0.0;
    for (name, v) in by_check {
        let m = crate::stats::median(&v);
        if m >= 0.5 {
            out.profile.push((name, m));
        } else {
            other += m;
        }
    }
    out.profile.push(("other checks".into(), other));
    Ok(out)
}
