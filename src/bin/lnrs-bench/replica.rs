//! Item 8: the replica on object storage, against a real S3 API server (moto, the replica
//! tests' server: `tests/it/common/s3.rs`, from the venv `scripts/test-venv` makes).
//!
//! - What `sync` adds to a delete: the same habitat deletes on a copy without a replica and on
//!   a copy replicating in mode `sync` (acknowledged once its snapshot and event are in S3).
//! - RPO after kill -9: a server (this binary, hidden `serve-child`) is killed with SIGKILL in
//!   the middle of a stream of writes; the database recovered from the replica alone is then
//!   compared with what was acknowledged. In `sync`, acknowledged deletes lost must be 0; in
//!   `async`, the writes lost are those of the last moments, within `replica_max_lag`.
//! - Disaster recovery time and upload throughput at each scale: a primary uploads its base
//!   snapshot (throughput = bytes / time to catch up), then `recover` rebuilds the database
//!   into an empty directory (fetch, check every block, assemble, deep verify, replay, scan).

use std::path::Path;
use std::time::{Duration, Instant};

use lnrs::config::{ReplicaConfig, ReplicaMode, SnapshotPolicy};
use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::harness::{self, fail, BenchServer, Res, Work};
use crate::s3::S3;
use crate::stats::Summary;

const CATCH_UP: Duration = Duration::from_secs(600);

/// Item 8 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaResult {
    pub deletes: usize,
    /// Habitat deletes (each with its pre-delete snapshot) without a replica…
    pub local_only: Summary,
    /// …and in mode sync, the same deletes on the same data.
    pub sync: Summary,
    pub rpo: Vec<Rpo>,
    pub scales: Vec<DrPoint>,
    /// Item 9, run on the same S3 server.
    pub timeline: crate::timeline::TimelineResult,
}

/// What a kill -9 lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rpo {
    pub mode: String,
    pub max_lag_secs: f64,
    /// Writes (sync: deletes) acknowledged before the kill.
    pub acknowledged: usize,
    /// Of those, missing from the database recovered from the replica.
    pub lost: usize,
    /// Seconds between the oldest lost acknowledgement and the kill (0 when nothing was lost).
    pub lost_window_secs: f64,
}

/// Upload and recovery at one scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrPoint {
    pub scale: u32,
    pub database_bytes: u64,
    pub uploaded_bytes: u64,
    pub upload_secs: f64,
    pub upload_mb_per_s: f64,
    pub recover_secs: f64,
    pub events_replayed: u64,
}

pub fn replica_config(s3: &S3, prefix: &str, mode: ReplicaMode) -> ReplicaConfig {
    let mut r = ReplicaConfig::new(s3.url(prefix));
    r.endpoint = Some(s3.endpoint());
    r.mode = mode;
    r.segment_interval = Duration::from_millis(200);
    r.lease_ttl = Duration::from_secs(5);
    r
}

/// Runs item 8 at `scales` (the first for latency and RPO).
pub async fn run(
    work: &Work,
    scales: &[u32],
    n_deletes: usize,
    write_for: Duration,
    reads: (Duration, usize),
) -> Res<ReplicaResult> {
    for (k, v) in S3::env() {
        // Read by the object store's AWS builder in this process; nothing else reads them.
        std::env::set_var(k, v);
    }
    let s3 = tokio::task::spawn_blocking(|| S3::start("lnrs-bench"))
        .await
        .map_err(|e| fail(format!("moto: {e}")))?;
    let first = work.reference(scales[0])?;
    eprintln!("replica: {n_deletes} deletes without a replica and in mode sync …");
    let local_only = deletes(work, &first.path, None, n_deletes).await?;
    let sync = deletes(
        work,
        &first.path,
        Some(replica_config(&s3, "latency", ReplicaMode::Sync)),
        n_deletes,
    )
    .await?;
    let mut rpo = Vec::new();
    for mode in [ReplicaMode::Sync, ReplicaMode::Async] {
        eprintln!("replica: RPO after kill -9 in mode {mode:?} …");
        rpo.push(kill_and_recover(work, &first.path, &s3, mode, write_for).await?);
    }
    let mut points = Vec::new();
    for &scale in scales {
        eprintln!("replica: upload and disaster recovery at scale {scale} …");
        points.push(upload_and_recover(work, scale, &s3).await?);
    }
    let timeline = crate::timeline::run(work, &s3, scales, reads.0, reads.1).await?;
    Ok(ReplicaResult {
        timeline,
        deletes: n_deletes,
        local_only,
        sync,
        rpo,
        scales: points,
    })
}

async fn start(dir: &Path, replica: Option<ReplicaConfig>) -> Res<BenchServer> {
    let mut cfg = harness::config(dir, SnapshotPolicy::Required);
    cfg.replica = replica;
    BenchServer::start(cfg).await
}

/// Waits until the replica holds everything committed. Returns the uploaded bytes.
pub async fn caught_up(ch: &Channel) -> Res<u64> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let s = harness::status(ch).await?;
        if let Some(r) = s.replica {
            if r.state == pb::ReplicaState::Replicating as i32
                && r.lag_events == 0
                && r.snapshots_pending == 0
                && r.snapshots_replicated > 0
            {
                return Ok(r.uploaded_bytes);
            }
        }
        if Instant::now() > deadline {
            return Err(fail("the replica did not catch up in time"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_habitat(c: &mut EntityServiceClient<Channel>, name: String) -> Res<(i32, u64)> {
    let r = c
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: name,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    Ok((r.habitat.map_or(0, |h| h.habitat_id), r.event_seq))
}

async fn delete_habitat(
    c: &mut EntityServiceClient<Channel>,
    id: i32,
) -> Result<u64, tonic::Status> {
    c.delete_habitat(pb::DeleteHabitatRequest {
        habitat_id: id,
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner().outcome.map_or(0, |o| o.event_seq))
}

/// Latency of `n` habitat deletes (habitats created first, not timed).
async fn deletes(work: &Work, db: &Path, replica: Option<ReplicaConfig>, n: usize) -> Res<Summary> {
    let name = if replica.is_some() {
        "replica-sync"
    } else {
        "replica-local"
    };
    let dir = work.data_dir_with(name, db)?;
    let server = start(&dir, replica.clone()).await?;
    let ch = server.channel().await?;
    if replica.is_some() {
        caught_up(&ch).await?;
    }
    let mut c = EntityServiceClient::new(ch.clone());
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            create_habitat(&mut c, format!("bench replica {i}"))
                .await?
                .0,
        );
    }
    let mut ms = Vec::new();
    for id in ids {
        let t = Instant::now();
        delete_habitat(&mut c, id).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Summary::of_ms(&ms))
}

/// A child server replicating to `prefix` on `s3` in `mode`.
async fn start_child(
    dir: &Path,
    s3: &S3,
    prefix: &str,
    mode: ReplicaMode,
) -> Res<harness::ChildServer> {
    let spec = format!(
        "{} {} {} {}",
        dir.display(),
        s3.url(prefix),
        s3.endpoint(),
        mode.as_str()
    );
    harness::ChildServer::start(&spec, S3::env()).await
}

/// Writes for `write_for`, SIGKILL, recover from the replica, count what was lost.
async fn kill_and_recover(
    work: &Work,
    db: &Path,
    s3: &S3,
    mode: ReplicaMode,
    write_for: Duration,
) -> Res<Rpo> {
    let prefix = format!("rpo-{}", mode.as_str());
    let dir = work.data_dir_with(&prefix, db)?;
    let mut child = start_child(&dir, s3, &prefix, mode).await?;
    let ch = child.channel.clone();
    caught_up(&ch).await?;
    let mut c = EntityServiceClient::new(ch.clone());
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < write_for {
        i += 1;
        let Ok((id, seq)) = create_habitat(&mut c, format!("rpo {i}")).await else {
            break;
        };
        match mode {
            // Sync: what counts is the acknowledged delete.
            ReplicaMode::Sync => {
                if let Ok(seq) = delete_habitat(&mut c, id).await {
                    acked.push((seq, Instant::now()));
                }
            }
            _ => acked.push((seq, Instant::now())),
        }
    }
    // Keep writing while the kill lands: the kill must hit work in flight.
    let mut inflight = c.clone();
    let tail = tokio::spawn(async move {
        let _ = create_habitat(&mut inflight, "in flight at the kill".into()).await;
    });
    child.proc.start_kill()?;
    let killed_at = Instant::now();
    let _ = child.proc.wait().await;
    tail.abort();
    let dr = work.fresh_dir(&format!("{prefix}-recovered"))?;
    let mut cfg = harness::config(&dr, SnapshotPolicy::Required);
    cfg.replica = Some(replica_config(s3, &prefix, mode));
    let recovered = tokio::task::spawn_blocking(move || lnrs::app::replica::recover(&cfg, None))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("recovery: {e}")))?;
    let lost: Vec<&(u64, Instant)> = acked
        .iter()
        .filter(|(s, _)| *s > recovered.head_seq)
        .collect();
    let window = lost
        .first()
        .map_or(0.0, |(_, t)| killed_at.duration_since(*t).as_secs_f64());
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&dr)?;
    Ok(Rpo {
        mode: mode.as_str().into(),
        max_lag_secs: ReplicaConfig::new("s3://x").max_lag.as_secs_f64(),
        acknowledged: acked.len(),
        lost: lost.len(),
        lost_window_secs: window,
    })
}

/// Uploads a fresh primary's base snapshot, then recovers it into an empty directory.
async fn upload_and_recover(work: &Work, scale: u32, s3: &S3) -> Res<DrPoint> {
    let dataset = work.reference(scale)?;
    let prefix = format!("dr-s{scale}");
    let dir = work.data_dir_with(&prefix, &dataset.path)?;
    let started = Instant::now();
    let server = start(&dir, Some(replica_config(s3, &prefix, ReplicaMode::Async))).await?;
    let ch = server.channel().await?;
    let uploaded = caught_up(&ch).await?;
    let upload_secs = started.elapsed().as_secs_f64();
    server.stop().await?;
    let dr = work.fresh_dir(&format!("{prefix}-recovered"))?;
    let mut cfg = harness::config(&dr, SnapshotPolicy::Required);
    cfg.replica = Some(replica_config(s3, &prefix, ReplicaMode::Async));
    let t = Instant::now();
    let recovered = tokio::task::spawn_blocking(move || lnrs::app::replica::recover(&cfg, None))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("recovery: {e}")))?;
    let recover_secs = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&dr)?;
    Ok(DrPoint {
        scale,
        database_bytes: dataset.bytes,
        uploaded_bytes: uploaded,
        upload_secs,
        upload_mb_per_s: uploaded as f64 / 1e6 / upload_secs.max(1e-9),
        recover_secs,
        events_replayed: recovered.events_replayed,
    })
}
