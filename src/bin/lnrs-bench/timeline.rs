//! Item 9: [timeline] — point-in-time restore and read-only followers, against moto (the S3
//! API server item 8 started).
//!
//! - PITR at each scale: a primary with a replica takes 60 creates after its base snapshot;
//!   RestoreToPoint to the seq 30 events back is timed end to end (plan + fetch + replay +
//!   snapshot of the rebuilt state + the restore itself), from the local history and from the
//!   replica (whose blocks the primary's store already holds: the fetch is the log segments).
//! - Follower staleness: a follower (`follow_interval` 200 ms, the primary's segments every
//!   200 ms) streams WatchEvents while the primary takes creates at a steady rate; each event's
//!   latency is its receipt time minus its commit time on the primary (same clock).
//! - Read scaling: GetMeasure requests/s against the primary alone, then against the primary
//!   and two followers at once (summed). All servers share this machine's 2 cores.

use std::time::{Duration, Instant};

use lnrs::config::{FollowConfig, ReplicaMode, SnapshotPolicy};
use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use lnrs::pb::snapshot_service_client::SnapshotServiceClient;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::harness::{self, fail, BenchServer, Res, Work};
use crate::replica::{caught_up, replica_config};
use crate::s3::S3;
use crate::stats::Summary;

const CREATES: usize = 60;
const BACK: u64 = 30;

/// Item 9 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelineResult {
    pub pitr: Vec<PitrPoint>,
    /// Event visibility on the follower under a steady write load.
    pub follower_writes_per_sec: f64,
    pub follower_staleness: Summary,
    pub reads_primary_alone: f64,
    pub reads_primary_and_two_followers: f64,
}

/// Point-in-time restore at one scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PitrPoint {
    pub scale: u32,
    pub events_replayed: u64,
    pub local_secs: f64,
    pub replica_secs: f64,
    pub replica_bytes_fetched: u64,
}

pub async fn run(
    work: &Work,
    s3: &S3,
    scales: &[u32],
    read_window: Duration,
    read_rounds: usize,
) -> Res<TimelineResult> {
    let mut out = TimelineResult::default();
    for &scale in scales {
        eprintln!("timeline: point-in-time restores at scale {scale} …");
        out.pitr.push(pitr(work, s3, scale).await?);
    }
    eprintln!("timeline: follower staleness and read scaling …");
    followers(work, s3, scales[0], read_window, read_rounds, &mut out).await?;
    Ok(out)
}

async fn creates(ch: &Channel, n: usize, tag: &str) -> Res<()> {
    let mut c = EntityServiceClient::new(ch.clone());
    for i in 0..n {
        c.create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: format!("{tag} {i}"),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

async fn to_point(
    ch: &Channel,
    seq: u64,
    source: pb::HistorySource,
) -> Res<(f64, pb::RestorePlan)> {
    let t = Instant::now();
    let r = SnapshotServiceClient::new(ch.clone())
        .restore_to_point(pb::RestoreToPointRequest {
            point: Some(pb::restore_to_point_request::Point::EventSeq(seq)),
            source: source as i32,
            dry_run: false,
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let secs = t.elapsed().as_secs_f64();
    if r.restore.as_ref().is_none_or(|x| x.rolled_back) {
        return Err(fail(format!("the restore to {seq} rolled back")));
    }
    Ok((secs, r.plan.unwrap_or_default()))
}

async fn pitr(work: &Work, s3: &S3, scale: u32) -> Res<PitrPoint> {
    let dataset = work.reference(scale)?;
    let prefix = format!("pitr-s{scale}");
    let dir = work.data_dir_with(&prefix, &dataset.path)?;
    let mut cfg = harness::config(&dir, SnapshotPolicy::Required);
    cfg.replica = Some(replica_config(s3, &prefix, ReplicaMode::Async));
    let server = BenchServer::start(cfg).await?;
    let ch = server.channel().await?;
    caught_up(&ch).await?;
    creates(&ch, CREATES, "pitr").await?;
    caught_up(&ch).await?;
    let head = harness::status(&ch).await?.event_head_seq;
    let (local_secs, plan) = to_point(&ch, head - BACK, pb::HistorySource::Local).await?;
    caught_up(&ch).await?;
    let (replica_secs, rplan) = to_point(&ch, head - BACK + 1, pb::HistorySource::Replica).await?;
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(PitrPoint {
        scale,
        events_replayed: plan.events_to_replay,
        local_secs,
        replica_secs,
        replica_bytes_fetched: rplan.bytes_to_fetch,
    })
}

async fn followers(
    work: &Work,
    s3: &S3,
    scale: u32,
    read_window: Duration,
    read_rounds: usize,
    out: &mut TimelineResult,
) -> Res<()> {
    let dataset = work.reference(scale)?;
    let dir = work.data_dir_with("follow-primary", &dataset.path)?;
    let mut cfg = harness::config(&dir, SnapshotPolicy::Required);
    let mut rc = replica_config(s3, "follow", ReplicaMode::Async);
    rc.segment_interval = Duration::from_millis(200);
    cfg.replica = Some(rc);
    let primary = BenchServer::start(cfg).await?;
    let ch = primary.channel().await?;
    caught_up(&ch).await?;
    let mut followers = Vec::new();
    for i in 0..2 {
        let fdir = work.fresh_dir(&format!("follower-{i}"))?;
        let mut fc = harness::config(&fdir, SnapshotPolicy::Required);
        fc.follow = Some(FollowConfig {
            token: None,
            url: s3.url("follow"),
            endpoint: Some(s3.endpoint()),
            interval: Duration::from_millis(200),
        });
        followers.push((BenchServer::start(fc).await?, fdir));
    }
    // Staleness: every event's visibility on follower 0 under ~20 creates/s for 10 s.
    let fch = followers[0].0.channel().await?;
    let from = harness::status(&fch).await?.event_head_seq;
    let mut stream = pb::event_service_client::EventServiceClient::new(fch.clone())
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(from),
            ..Default::default()
        })
        .await?
        .into_inner();
    let n = 200usize;
    let writer = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let mut c = EntityServiceClient::new(ch);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0..n {
                tick.tick().await;
                let _ = c
                    .create_habitat(pb::CreateHabitatRequest {
                        habitat: Some(pb::Habitat {
                            habitat: format!("steady {i}"),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    })
                    .await;
            }
        })
    };
    let started = Instant::now();
    let mut lat = Vec::new();
    while lat.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .map_err(|_| fail("the follower stopped streaming"))?
            .ok_or_else(|| fail("the follower's stream ended"))??;
        if let Some(pb::watch_events_response::Item::Event(e)) = item.item {
            if e.entity_type == "habitat" {
                let t = e.time.unwrap_or_default();
                let committed =
                    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap_or_default();
                lat.push(
                    (chrono::Utc::now() - committed)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e3,
                );
            }
        }
    }
    writer.await.map_err(|e| fail(e.to_string()))?;
    out.follower_writes_per_sec = n as f64 / started.elapsed().as_secs_f64();
    out.follower_staleness = Summary::of_ms(&lat);
    // Reads: the primary alone, then all three at once.
    let alone = crate::reads::run(&primary.url(), 16, read_window, read_rounds).await?;
    out.reads_primary_alone = rate(&alone);
    let urls: Vec<String> = std::iter::once(primary.url())
        .chain(followers.iter().map(|(f, _)| f.url()))
        .collect();
    let runs = futures::future::join_all(
        urls.iter()
            .map(|u| crate::reads::run(u, 16, read_window, read_rounds)),
    )
    .await;
    out.reads_primary_and_two_followers = runs
        .into_iter()
        .map(|r| r.map(|r| rate(&r)))
        .collect::<Res<Vec<f64>>>()?
        .iter()
        .sum();
    for (f, fdir) in followers {
        f.stop().await?;
        std::fs::remove_dir_all(&fdir)?;
    }
    primary.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn rate(r: &crate::reads::ReadsResult) -> f64 {
    r.kinds
        .get("get_measure")
        .map_or(0.0, |k| k.requests_per_sec)
}
