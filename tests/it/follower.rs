//! [timeline] read-only followers against a real S3 API server (moto): a follower bootstraps
//! from the primary's replica, sees a write within its staleness, serves reads and
//! WatchEvents, refuses writes, survives the primary's restart and follows a restore; killed
//! with SIGKILL mid-apply it restarts and converges, and none of its reads ever showed a state
//! the primary never had. The same scenario runs for a follower of the primary itself (no
//! replica: bootstrap from its ExportSnapshot, tail its WatchEvents).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use lnrs::pb;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use super::replica::{caught_up, file_state, start};
use crate::common::ops::{self, eventually};
use crate::common::s3::S3;
use crate::common::{assert_refused, ChildServer};

const WAIT: Duration = Duration::from_secs(60);

async fn follower(dir: &Path, s3: &S3, prefix: &str) -> ChildServer {
    let url = s3.url(prefix);
    let endpoint = s3.endpoint();
    let args = [
        "--follow",
        url.as_str(),
        "--replica-endpoint",
        endpoint.as_str(),
        "--follow-interval",
        "100ms",
        "--maintenance-interval",
        "200ms",
        "--shutdown-drain-delay",
        "50ms",
    ];
    ChildServer::start(dir, "127.0.0.1:0", &args, &S3::env()).await
}

/// Where the followers of a scenario read the primary's history.
enum Source {
    Replica(S3),
    /// The primary's fixed address (it keeps it across restarts).
    Primary(String),
}

impl Source {
    async fn primary(&self, dir: &Path) -> ChildServer {
        match self {
            Source::Replica(s3) => start(dir, s3, "p", &[]).await,
            Source::Primary(addr) => {
                let args = [
                    "--maintenance-interval",
                    "200ms",
                    "--shutdown-drain-delay",
                    "50ms",
                ];
                ChildServer::start(dir, addr, &args, &[]).await
            }
        }
    }

    async fn follower(&self, dir: &Path) -> ChildServer {
        match self {
            Source::Replica(s3) => follower(dir, s3, "p").await,
            Source::Primary(addr) => {
                let url = format!("http://{addr}");
                let args = ["--follow", url.as_str(), "--shutdown-drain-delay", "50ms"];
                ChildServer::start(dir, "127.0.0.1:0", &args, &[]).await
            }
        }
    }

    /// Waits until the primary's history is where the follower reads it.
    async fn published(&self, primary: &ChildServer) {
        if let Source::Replica(_) = self {
            caught_up(&primary.channel).await;
        }
    }
}

/// A free loopback address (bound and released: the primary binds it next).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn head(ch: &Channel) -> u64 {
    ops::status(ch).await.event_head_seq
}

async fn same_head(follower: &Channel, primary: &Channel) {
    let want = head(primary).await;
    eventually("the follower reached the primary's head", WAIT, || async {
        head(follower).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_reads_and_events_refuses_writes_and_follows_restarts_and_restores() {
    follows_everything(Source::Replica(S3::start("follow"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_the_primary_itself_does_the_same_without_a_replica() {
    follows_everything(Source::Primary(free_addr())).await;
}

async fn follows_everything(source: Source) {
    let pdir = tempfile::tempdir().unwrap();
    let mut primary = source.primary(pdir.path()).await;
    source.published(&primary).await;
    let fdir = tempfile::tempdir().unwrap();
    let f = source.follower(fdir.path()).await;
    same_head(&f.channel, &primary.channel).await;

    // A write on the primary reaches the follower's reads and its event stream.
    let from = head(&f.channel).await;
    let mut stream = pb::event_service_client::EventServiceClient::new(f.channel.clone())
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(from),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let written = Instant::now();
    let (_, seq) = ops::habitat(&primary.channel, "seen by the follower")
        .await
        .unwrap();
    eventually("the follower serves the write", WAIT, || async {
        ops::habitat_names(&f.channel)
            .await
            .contains("seen by the follower")
    })
    .await;
    eprintln!(
        "write visible on the follower after {:?}",
        written.elapsed()
    );
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            if let Some(pb::watch_events_response::Item::Event(e)) = item.unwrap().item {
                if e.seq == seq {
                    return e;
                }
            }
        }
        panic!("the stream ended")
    })
    .await
    .expect("the follower streamed the event");
    assert_eq!(seen.entity_type, "habitat");
    let staleness = ops::status(&f.channel).await.follower.unwrap();
    assert!(
        staleness.staleness_seconds >= 0.0 && staleness.staleness_seconds < 10.0,
        "{staleness:?}"
    );

    // Writes are refused, naming why.
    let err = ops::habitat(&f.channel, "written to a follower")
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "READ_ONLY_FOLLOWER");
    let err = ops::snapshots(&f.channel)
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "on a follower".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "READ_ONLY_FOLLOWER");

    // The primary restarts: the follower goes on.
    ops::stop(primary).await;
    primary = source.primary(pdir.path()).await;
    ops::habitat(&primary.channel, "after the primary restarted")
        .await
        .unwrap();
    source.published(&primary).await;
    same_head(&f.channel, &primary.channel).await;

    // A restore on the primary: the follower follows it.
    let snap = ops::snapshot(&primary.channel, "before the undone one").await;
    ops::habitat(&primary.channel, "undone by the restore")
        .await
        .unwrap();
    assert!(
        !ops::restore(&primary.channel, &snap)
            .await
            .unwrap()
            .rolled_back
    );
    ops::habitat(&primary.channel, "after the restore")
        .await
        .unwrap();
    source.published(&primary).await;
    same_head(&f.channel, &primary.channel).await;
    let names = ops::habitat_names(&f.channel).await;
    assert!(!names.contains("undone by the restore") && names.contains("after the restore"));
    assert_eq!(names, ops::habitat_names(&primary.channel).await);

    ops::stop(f).await;
    ops::stop(primary).await;
    let (pf, pr, ph) = file_state(&pdir.path().join("lnrs.duckdb"));
    let (ff, fr, fh) = file_state(&fdir.path().join("lnrs.duckdb"));
    assert_eq!(
        (ff, fr, fh),
        (pf, pr, ph),
        "the follower's file equals the primary's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_apply_converges_and_never_showed_a_state_that_did_not_exist() {
    killed_mid_apply(Source::Replica(S3::start("follow-kill"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_the_primary_killed_mid_apply_converges_the_same() {
    killed_mid_apply(Source::Primary(free_addr())).await;
}

async fn killed_mid_apply(source: Source) {
    let pdir = tempfile::tempdir().unwrap();
    let primary = source.primary(pdir.path()).await;
    source.published(&primary).await;
    let fdir = tempfile::tempdir().unwrap();
    let mut f = source.follower(fdir.path()).await;
    same_head(&f.channel, &primary.channel).await;
    let base_names = ops::habitat_names(&primary.channel).await;
    let s0 = head(&primary.channel).await;
    // Each create is one event: the state right after seq s0 + k holds b0..b(k-1).
    let expected = |h: u64| -> BTreeSet<String> {
        let mut n = base_names.clone();
        n.extend((0..h.saturating_sub(s0)).map(|i| format!("b{i}")));
        n
    };
    const BURST: u64 = 300;
    let writer = {
        let ch = primary.channel.clone();
        tokio::spawn(async move {
            for i in 0..BURST {
                ops::habitat(&ch, &format!("b{i}")).await.unwrap();
            }
        })
    };
    let mut samples: Vec<(u64, BTreeSet<String>)> = Vec::new();
    let mut killed_at = None;
    let deadline = Instant::now() + WAIT;
    while killed_at.is_none() {
        assert!(
            Instant::now() < deadline,
            "the follower never started applying the burst"
        );
        sample(&f.channel, &mut samples).await;
        let applied = head(&f.channel).await;
        if applied > s0 && applied < s0 + BURST {
            f = {
                let _ = f.kill();
                killed_at = Some(applied);
                source.follower(fdir.path()).await
            };
        }
    }
    // Sampled all along: while the burst goes on and the restarted follower catches up.
    while !writer.is_finished() {
        sample(&f.channel, &mut samples).await;
    }
    writer.await.unwrap();
    source.published(&primary).await;
    let target = head(&primary.channel).await;
    while head(&f.channel).await < target {
        sample(&f.channel, &mut samples).await;
        assert!(
            Instant::now() < deadline + WAIT,
            "the restarted follower did not converge"
        );
    }
    eprintln!(
        "killed at applied seq {:?} of {s0}..={target}; {} consistent samples",
        killed_at,
        samples.len()
    );
    for (h, names) in &samples {
        assert!(*h >= s0 && *h <= target);
        assert_eq!(
            *names,
            expected(*h),
            "the follower showed a state the primary never had at {h}"
        );
    }
    ops::stop(f).await;
    ops::stop(primary).await;
    let (pf, pr, _) = file_state(&pdir.path().join("lnrs.duckdb"));
    let (ff, fr, _) = file_state(&fdir.path().join("lnrs.duckdb"));
    assert_eq!((ff, fr), (pf, pr));
}

/// Reads the follower's head, its habitats, and its head again; keeps the sample when both
/// heads agree (nothing was applied in between).
async fn sample(ch: &Channel, samples: &mut Vec<(u64, BTreeSet<String>)>) {
    let before = head(ch).await;
    let names = ops::habitat_names(ch).await;
    if head(ch).await == before {
        samples.push((before, names));
    }
}
