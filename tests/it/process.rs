//! The real `lnrs` binary as a child process: kill -9 in the middle of a burst of deletes, and
//! SIGTERM with open subscriptions.

use std::time::{Duration, Instant};

use crate::common::{measure_ids, reason, ChildServer};
use lnrs::pb;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_deletes_loses_nothing_acknowledged() {
    let tmp = crate::common::data_dir_with_reference();
    let opts = ["--retention-keep-last", "1000"];
    let server = ChildServer::start(tmp.path(), "127.0.0.1:0", &opts, &[]).await;
    let acked = std::sync::Arc::new(parking_lot::Mutex::new(
        Vec::<(i32, pb::DeleteOutcome)>::new(),
    ));
    let mut workers = Vec::new();
    for w in 0..4 {
        let ch = server.channel.clone();
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            let mut c = pb::entity_service_client::EntityServiceClient::new(ch);
            for id in (1 + w * 40..=40 + w * 40).rev() {
                match c
                    .delete_measure(pb::DeleteMeasureRequest {
                        measure_id: id,
                        request_id: String::new(),
                    })
                    .await
                {
                    Ok(r) => acked.lock().push((id, r.into_inner().outcome.unwrap())),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a good number of deletes were acknowledged, mid-burst.
    while acked.lock().len() < 12 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal(libc::SIGKILL);
    let _ = server.exit(Duration::from_secs(10)).await;
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().clone();
    assert!(acked.len() >= 12);

    let server = ChildServer::start(tmp.path(), "127.0.0.1:0", &opts, &[]).await;
    let mut snaps = pb::snapshot_service_client::SnapshotServiceClient::new(server.channel.clone());
    let log = crate::common::events_after(&server.channel, 0).await;
    dense(&log);
    for (id, out) in &acked {
        let e = log
            .iter()
            .find(|e| e.seq == out.event_seq)
            .expect("acknowledged delete has its event");
        assert_eq!(
            (e.kind, e.entity_id.as_str()),
            (pb::EventKind::EntityDeleted as i32, id.to_string().as_str())
        );
        let snap = snaps
            .get_snapshot(pb::GetSnapshotRequest {
                snapshot_id: out.snapshot_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(snap.entity_id, id.to_string());
        let v = snaps
            .verify_snapshot(pb::VerifySnapshotRequest {
                source: pb::HistorySource::Local as i32,
                snapshot_id: out.snapshot_id.clone(),
                mode: pb::VerifyMode::Quick as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(v.report.unwrap().passed);
    }
    // New events continue right after the last one.
    let next = pb::entity_service_client::EntityServiceClient::new(server.channel.clone())
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: "after crash".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.event_seq, log.last().unwrap().seq + 1);
    server.signal(libc::SIGTERM);
    server.exit(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_unavailable_and_last_seq_then_exits_within_grace() {
    let tmp = crate::common::data_dir_with_reference();
    let server = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &["--shutdown-drain-delay", "200ms", "--shutdown-grace", "5s"],
        &[],
    )
    .await;
    let mut c = pb::entity_service_client::EntityServiceClient::new(server.channel.clone());
    let last = c
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: "x".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut e = pb::event_service_client::EventServiceClient::new(server.channel.clone());
        streams.push(
            e.watch_events(pb::WatchEventsRequest {
                start_after_seq: Some(last - 1),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
        );
    }
    // Each stream has delivered the last event.
    for st in &mut streams {
        loop {
            let m = st.next().await.unwrap().unwrap();
            if let Some(pb::watch_events_response::Item::Event(e)) = m.item {
                assert_eq!(e.seq, last);
                break;
            }
        }
    }
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    for mut st in streams {
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(10), st.next())
                .await
                .unwrap()
            {
                Some(Ok(_)) => continue,
                Some(Err(status)) => break status,
                None => panic!("stream ended without a status"),
            }
        };
        assert_eq!(end.code(), Code::Unavailable);
        assert_eq!(reason(&end), "SERVER_SHUTTING_DOWN");
        assert_eq!(
            crate::common::error_meta(&end, "last_seq"),
            Some(last.to_string())
        );
    }
    let (status, _, _) = server.exit(Duration::from_secs(6)).await;
    eprintln!("exited {status:?} {:?} after SIGTERM", t.elapsed());
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_dir_serves_the_reference_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let server = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
    eprintln!("empty data dir to SERVING in {:?}", t.elapsed());
    let mut c = pb::entity_service_client::EntityServiceClient::new(server.channel.clone());
    assert_eq!(
        c.list_measures(pb::ListMeasuresRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total_size,
        168
    );
    assert_eq!(
        c.list_areas(pb::ListAreasRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total_size,
        68
    );
    assert_eq!(
        c.list_grants(pb::ListGrantsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total_size,
        168
    );
    let map = c
        .list_links(pb::ListLinksRequest {
            link_type: pb::LinkType::MeasureAreaPriority as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(map.total_size, 2936);
    assert!(tmp.path().join("lnrs.duckdb").exists());
    server.signal(libc::SIGTERM);
    assert!(server.exit(Duration::from_secs(20)).await.0.success());
}

/// Takes a snapshot, deletes a measure, and restores the snapshot in a server armed to abort
/// right after the swap (before the post-swap checks). Returns the ids before and after the
/// delete, and the restore's target id.
async fn restore_killed_after_swap(
    dir: &std::path::Path,
) -> (
    std::collections::BTreeSet<i32>,
    std::collections::BTreeSet<i32>,
    String,
) {
    let server = ChildServer::start(
        dir,
        "127.0.0.1:0",
        &[],
        &[("LNRS_FAILPOINTS", "restore.after_swap=abort")],
    )
    .await;
    let mut snaps = pb::snapshot_service_client::SnapshotServiceClient::new(server.channel.clone());
    let id = crate::common::ops::snapshot(&server.channel, "before").await;
    let with = measure_ids(&server.channel).await;
    pb::entity_service_client::EntityServiceClient::new(server.channel.clone())
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 7,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let without = measure_ids(&server.channel).await;
    let r = snaps
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: id.clone(),
            confirm_snapshot_id: id.clone(),
            request_id: String::new(),
        })
        .await;
    assert!(r.is_err(), "the server died mid-restore");
    let (status, _, _) = server.exit(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(
        dir.join("restore.journal").exists(),
        "the journal marks the interrupted swap"
    );
    (with, without, id)
}

/// The whole log from seq 1, with no gap.
fn dense(log: &[pb::Event]) {
    assert_eq!(log.first().map(|e| e.seq), Some(1), "the log starts at 1");
    if let Some(gap) = crate::common::gap_in(log) {
        panic!("{gap}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_swap_keeps_a_restore_that_verifies_at_start_up() {
    let tmp = crate::common::data_dir_with_reference();
    let (with, _, target) = restore_killed_after_swap(tmp.path()).await;
    let server = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
    assert!(!tmp.path().join("restore.journal").exists());
    assert_eq!(
        measure_ids(&server.channel).await,
        with,
        "the verified restore stands"
    );
    let log = crate::common::events_after(&server.channel, 0).await;
    dense(&log);
    let last = log.last().unwrap();
    assert_eq!(
        (last.kind, last.entity_id.as_str()),
        (pb::EventKind::RestorePerformed as i32, target.as_str())
    );
    server.signal(libc::SIGTERM);
    assert!(server.exit(Duration::from_secs(20)).await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_swap_with_a_damaged_live_file_puts_the_safety_state_back() {
    let tmp = crate::common::data_dir_with_reference();
    let (_, without, _) = restore_killed_after_swap(tmp.path()).await;
    // Damage the swapped-in file (as a torn write would): it no longer verifies.
    let db = tmp.path().join("lnrs.duckdb");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let server = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
    assert!(!tmp.path().join("restore.journal").exists());
    assert_eq!(
        measure_ids(&server.channel).await,
        without,
        "the pre-restore state is back"
    );
    let log = crate::common::events_after(&server.channel, 0).await;
    dense(&log);
    let restore = log.last().unwrap();
    assert_eq!(restore.kind, pb::EventKind::RestorePerformed as i32);
    assert!(restore.restore.as_ref().unwrap().rolled_back);
    // And the service goes on from there.
    let next = pb::entity_service_client::EntityServiceClient::new(server.channel.clone())
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: "after".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.event_seq, restore.seq + 1);
    server.signal(libc::SIGTERM);
    assert!(server.exit(Duration::from_secs(20)).await.0.success());
}
