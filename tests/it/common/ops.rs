//! Small client operations the recovery and fault tests share: create a habitat, take and
//! restore a snapshot, read health and status, stop a child cleanly.

use std::time::{Duration, Instant};

use lnrs::pb;
use tonic::transport::Channel;

use super::ChildServer;

pub fn entity(ch: &Channel) -> pb::entity_service_client::EntityServiceClient<Channel> {
    pb::entity_service_client::EntityServiceClient::new(ch.clone())
}

pub fn snapshots(ch: &Channel) -> pb::snapshot_service_client::SnapshotServiceClient<Channel> {
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
}

/// A CreateHabitat request with only the name set.
pub fn new_habitat(name: &str) -> pb::CreateHabitatRequest {
    pb::CreateHabitatRequest {
        habitat: Some(pb::Habitat {
            habitat: name.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// Creates a habitat; returns its id and event seq.
pub async fn habitat(ch: &Channel, name: &str) -> Result<(i32, u64), tonic::Status> {
    let r = entity(ch)
        .create_habitat(new_habitat(name))
        .await?
        .into_inner();
    Ok((r.habitat.unwrap().habitat_id, r.event_seq))
}

/// Every habitat name, paging through ListHabitats.
/// Creates a measure (the required fields only) and returns its id.
pub async fn measure(ch: &Channel, name: &str) -> i32 {
    entity(ch)
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(pb::Measure {
                measure: name.into(),
                core_supplementary: "Supplementary".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create a measure")
        .into_inner()
        .measure
        .expect("the created measure")
        .measure_id
}

pub async fn habitat_names(ch: &Channel) -> std::collections::BTreeSet<String> {
    super::all_pages(|page_token| {
        let mut c = entity(ch);
        async move {
            let p = c
                .list_habitats(pb::ListHabitatsRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let names = p.habitats.into_iter().map(|h| h.habitat).collect();
            (names, p.next_page_token)
        }
    })
    .await
    .into_iter()
    .collect()
}

/// Takes a manual snapshot; returns its id.
pub async fn snapshot(ch: &Channel, description: &str) -> String {
    snapshots(ch)
        .create_snapshot(pb::CreateSnapshotRequest {
            description: description.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id
}

pub async fn restore(ch: &Channel, id: &str) -> Result<pb::RestoreSnapshotResponse, tonic::Status> {
    snapshots(ch)
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: id.into(),
            confirm_snapshot_id: id.into(),
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The report of a deep verify of a local snapshot.
pub async fn verify_deep(ch: &Channel, id: &str) -> pb::IntegrityReport {
    snapshots(ch)
        .verify_snapshot(pb::VerifySnapshotRequest {
            source: pb::HistorySource::Local as i32,
            snapshot_id: id.to_string(),
            mode: pb::VerifyMode::Deep as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
}

pub async fn status(ch: &Channel) -> pb::GetStatusResponse {
    snapshots(ch)
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Whether the capture ahead has settled in `s`: ready, failed or off, on the latest event.
pub fn capture_ahead_settled(s: &pb::GetStatusResponse) -> bool {
    use pb::CaptureAheadState as S;
    let a = s.capture_ahead.clone().unwrap_or_default();
    matches!(S::try_from(a.state), Ok(S::Ready | S::Failed | S::Off))
        && a.event_seq == s.event_head_seq
}

/// Waits (up to 20 s) until nothing runs in the background: the capture ahead has settled (it
/// stages block files in the store's scratch directory while it runs).
pub async fn wait_capture_ahead_settled(ch: &Channel) {
    eventually(
        "the capture ahead settles",
        Duration::from_secs(20),
        || async { capture_ahead_settled(&status(ch).await) },
    )
    .await;
}

/// The health status of `service` ("" = the server).
pub async fn health(ch: &Channel, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

/// Polls `f` until it is true (bounded).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < within, "not true within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then the child must exit 0 within 20 s.
pub async fn stop(server: ChildServer) -> String {
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    stderr
}

/// Event seqs of the whole log are dense from the first retained to the head.
pub async fn assert_dense_log(ch: &Channel) -> Vec<pb::Event> {
    let log = super::events_after(ch, 0).await;
    if let Some(gap) = super::gap_in(&log) {
        panic!("{gap}");
    }
    log
}
