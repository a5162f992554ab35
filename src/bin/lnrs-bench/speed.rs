//! Items 11 and 12: what a snapshot costs when deletes come spaced like people editing, and
//! whether capturing ahead slows writes.
//!
//! - Spaced deletes: the delete targets of item 1, `gap` apart (200 ms: a person clicking
//!   through a list), on a fresh copy with pre-delete snapshots and on one without; the ratio of
//!   the p50s is what a snapshot adds when the server has idle time between deletes.
//! - Write mix: callers each create a habitat and then rename it, back to back, on two servers
//!   at once — one capturing ahead, one not (`snapshot_capture_ahead`) — in interleaved windows
//!   over several rounds, so a noisy neighbour hurts both alike; the median writes/s of each.

use std::time::{Duration, Instant};

use lnrs::config::SnapshotPolicy;
use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::delete::{self, DeleteRun};
use crate::harness::{self, fail, BenchServer, Dataset, Res, Work};
use crate::stats::{median, Summary};

/// Item 11 at one scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpacedRun {
    pub scale: u32,
    pub gap_ms: f64,
    pub with_snapshots: DeleteRun,
    pub without_snapshots: DeleteRun,
    /// p50 with ÷ p50 without.
    pub ratio: f64,
}

/// Deletes `n` targets `gap` apart with and without snapshots.
pub async fn spaced(work: &Work, dataset: &Dataset, n: usize, gap: Duration) -> Res<SpacedRun> {
    let mut runs = Vec::new();
    let mut targets: Option<Vec<delete::Target>> = None;
    for (policy, name) in [
        (SnapshotPolicy::Required, "required"),
        (SnapshotPolicy::Disabled, "disabled"),
    ] {
        let dir =
            work.data_dir_with(&format!("spaced-s{}-{name}", dataset.scale), &dataset.path)?;
        let server = BenchServer::start(harness::config(&dir, policy)).await?;
        let channel = server.channel().await?;
        let chosen = match &targets {
            Some(t) => t.clone(),
            None => delete::pick_targets(&channel, n).await?,
        };
        let run = delete::run(&channel, &chosen, n, name, &[], gap).await?;
        targets.get_or_insert_with(|| run.done.clone());
        server.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        runs.push(run);
    }
    let without = runs.pop().ok_or_else(|| fail("no run"))?;
    let with = runs.pop().ok_or_else(|| fail("no run"))?;
    Ok(SpacedRun {
        scale: dataset.scale,
        gap_ms: gap.as_secs_f64() * 1e3,
        ratio: with.latency.p50_ms / without.latency.p50_ms.max(1e-9),
        with_snapshots: with,
        without_snapshots: without,
    })
}

/// Item 12.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteMix {
    pub clients: usize,
    pub window_secs: f64,
    pub rounds: usize,
    /// Writes/s per round and their median, capturing ahead…
    pub with_ahead: MixRun,
    /// …and not.
    pub without_ahead: MixRun,
    /// with ÷ without (medians).
    pub ratio: f64,
}

/// One server's writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MixRun {
    pub writes_per_sec: f64,
    pub per_round: Vec<f64>,
    pub latency: Summary,
    pub errors: u64,
}

/// Runs the create/rename mix on two servers, one capturing ahead.
pub async fn write_mix(
    work: &Work,
    dataset: &Dataset,
    clients: usize,
    window: Duration,
    rounds: usize,
) -> Res<WriteMix> {
    let mut servers = Vec::new();
    for ahead in [true, false] {
        let dir = work.data_dir_with(&format!("write-mix-{ahead}"), &dataset.path)?;
        let mut cfg = harness::config(&dir, SnapshotPolicy::Required);
        cfg.snapshot_capture_ahead = ahead;
        let server = BenchServer::start(cfg).await?;
        let channel = server.channel().await?;
        servers.push((server, channel, dir, Vec::new(), Vec::new(), 0u64));
    }
    for round in 0..rounds {
        for (_, channel, _, per_round, latency, errors) in servers.iter_mut() {
            let (rate, lat, errs) = window_of_writes(channel, clients, window, round).await?;
            per_round.push(rate);
            latency.extend(lat);
            *errors += errs;
        }
    }
    let mut runs = Vec::new();
    for (server, _, dir, per_round, latency, errors) in servers {
        server.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        runs.push(MixRun {
            writes_per_sec: median(&per_round),
            per_round,
            latency: Summary::of(&latency),
            errors,
        });
    }
    let without = runs.pop().ok_or_else(|| fail("no run"))?;
    let with = runs.pop().ok_or_else(|| fail("no run"))?;
    Ok(WriteMix {
        clients,
        window_secs: window.as_secs_f64(),
        rounds,
        ratio: with.writes_per_sec / without.writes_per_sec.max(1e-9),
        with_ahead: with,
        without_ahead: without,
    })
}

/// `clients` callers writing back to back for `window`: writes/s, latencies, errors.
async fn window_of_writes(
    channel: &Channel,
    clients: usize,
    window: Duration,
    round: usize,
) -> Res<(f64, Vec<Duration>, u64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = EntityServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0;
            while started.elapsed() < window {
                i += 1;
                let name = format!("mix r{round} c{c} {i}");
                let t = Instant::now();
                match create_then_rename(&mut client, name).await {
                    Ok(t1) => {
                        lat.push(t1 - t);
                        lat.push(t1.elapsed());
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut latency = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| fail(e.to_string()))?;
        latency.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((latency.len() as f64 / secs, latency, errors))
}

/// A create, then an update of the same habitat; returns when the create was answered.
async fn create_then_rename(
    client: &mut EntityServiceClient<Channel>,
    name: String,
) -> Result<Instant, tonic::Status> {
    let h = client
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: name.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .habitat
        .unwrap_or_default();
    let created = Instant::now();
    client
        .update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: h.habitat_id,
                habitat: format!("{name} renamed"),
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["habitat".into()],
            }),
            request_id: String::new(),
        })
        .await?;
    Ok(created)
}
