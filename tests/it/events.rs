//! EventService against a real server: resume without gaps or duplicates, fan-out to hundreds
//! of subscribers, slow subscribers, restores in the middle, compaction, filters.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{assert_refused, event_at, test_config, TestServer};
use lnrs::pb;
use pb::watch_events_response::Item;
use tokio_stream::StreamExt;
use tonic::Code;

fn habitat(i: usize) -> pb::CreateHabitatRequest {
    pb::CreateHabitatRequest {
        habitat: Some(pb::Habitat {
            habitat: format!("habitat {i}"),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// Runs `n` creates, returning the acknowledged event seqs.
async fn mutate(s: &TestServer, n: usize) -> Vec<u64> {
    let mut c = s.entity();
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        seqs.push(
            c.create_habitat(habitat(i))
                .await
                .unwrap()
                .into_inner()
                .event_seq,
        );
    }
    seqs
}

async fn whole_log(s: &TestServer) -> Vec<u64> {
    crate::common::events_after(&s.channel, 0)
        .await
        .iter()
        .map(|e| e.seq)
        .collect()
}

fn watch(start: Option<u64>) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        start_after_seq: start,
        kinds: vec![],
        entity_types: vec![],
        heartbeat_interval: None,
        include_log_record: false,
        format: pb::EventFormat::Native as i32,
    }
}

/// Reads events from a stream until `last` seq has been seen; returns the seqs in order.
async fn read_until(stream: &mut tonic::Streaming<pb::WatchEventsResponse>, last: u64) -> Vec<u64> {
    let mut out = Vec::new();
    while out.last().copied().unwrap_or(0) < last {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .unwrap();
        if let Some(Item::Event(e)) = msg.item {
            out.push(e.seq);
        }
    }
    out
}

/// Reads a stream in its own task, as fast as events come, until the seq sent on `last` has
/// been seen; returns the seqs in order.
fn spawn_reader(
    mut st: tonic::Streaming<pb::WatchEventsResponse>,
    mut last_rx: tokio::sync::watch::Receiver<u64>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let last = *last_rx.borrow_and_update();
            if got.last().is_some_and(|l| *l >= last) {
                return got;
            }
            tokio::select! {
                m = st.next() => match m {
                    Some(Ok(pb::WatchEventsResponse { item: Some(Item::Event(e)) })) => got.push(e.seq),
                    Some(Ok(_)) => {}
                    other => panic!("stream ended: {other:?}"),
                },
                _ = last_rx.changed() => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_random_disconnects_gives_the_exact_log() {
    let s = TestServer::start().await;
    let head0 = whole_log(&s).await.last().copied().unwrap_or(0);
    let producer = {
        let ch = s.channel.clone();
        tokio::spawn(async move {
            let mut c = pb::entity_service_client::EntityServiceClient::new(ch);
            let mut last = 0;
            for i in 0..1000 {
                last = c
                    .create_habitat(habitat(i))
                    .await
                    .unwrap()
                    .into_inner()
                    .event_seq;
            }
            last
        })
    };
    let mut got = Vec::new();
    let mut after = head0;
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut reconnects = 0;
    let final_seq = loop {
        let mut stream = s
            .events()
            .watch_events(watch(Some(after)))
            .await
            .unwrap()
            .into_inner();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let take = 1 + (rng % 150) as usize;
        let mut n = 0;
        while n < take {
            match tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .unwrap()
            {
                Some(Ok(pb::WatchEventsResponse {
                    item: Some(Item::Event(e)),
                })) => {
                    got.push(e.seq);
                    after = e.seq;
                    n += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("stream ended: {other:?}"),
            }
            if producer.is_finished() && after >= head0 + 1000 {
                break;
            }
        }
        drop(stream); // disconnect at a random point
        reconnects += 1;
        if producer.is_finished() && after >= head0 + 1000 {
            break producer.await.unwrap();
        }
    };
    assert!(
        reconnects > 5,
        "the test exercised resumption ({reconnects} connections)"
    );
    let log: Vec<u64> = whole_log(&s)
        .await
        .into_iter()
        .filter(|q| *q > head0)
        .collect();
    assert_eq!(log.last().copied(), Some(final_seq));
    assert_eq!(got, log, "concatenation of resumed streams equals the log");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_each_receive_every_event_in_order() {
    let s = TestServer::start().await;
    let start = whole_log(&s).await.last().copied().unwrap_or(0);
    let (last_tx, last_rx) = tokio::sync::watch::channel(u64::MAX);
    let mut readers = Vec::new();
    for _ in 0..200 {
        let st = s
            .events()
            .watch_events(watch(Some(start)))
            .await
            .unwrap()
            .into_inner();
        readers.push(spawn_reader(st, last_rx.clone()));
    }
    // The subscribers are reading while the 1,000 mutations run.
    let seqs = mutate(&s, 1000).await;
    let last = *seqs.last().unwrap();
    last_tx.send(last).unwrap();
    let expected: Vec<u64> = (start + 1..=last).collect();
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("subscriber finished")
            .unwrap();
        assert_eq!(got, expected);
    }
    s.stop().await;
}

/// A subscriber that reads nothing while writes run (it overflows the small ring and must
/// fall back to the log) and one that reads as fast as events come: each gets every event
/// exactly once, in order. (How much a stalled subscriber costs writers is measured by the
/// benchmark, lnrs-bench, not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_reading_subscribers_each_get_every_event_once_in_order() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.event_ring_capacity = 64; // small ring: the stalled reader must fall back to the log
    let s = TestServer::start_with(cfg).await;
    let start = whole_log(&s).await.last().copied().unwrap_or(0);
    // Events from before the subscriptions open: both start with a catch-up from the log.
    mutate(&s, 100).await;

    let mut stalled = s
        .events()
        .watch_events(watch(Some(start)))
        .await
        .unwrap()
        .into_inner();
    let (last_tx, last_rx) = tokio::sync::watch::channel(u64::MAX);
    let reading = spawn_reader(
        s.events()
            .watch_events(watch(Some(start)))
            .await
            .unwrap()
            .into_inner(),
        last_rx,
    );
    let seqs = mutate(&s, 300).await;
    let last = *seqs.last().unwrap();
    last_tx.send(last).unwrap();

    let expected: Vec<u64> = (start + 1..=last).collect();
    let fast = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reading subscriber finished")
        .unwrap();
    assert_eq!(
        fast, expected,
        "reading subscriber: every event, in order, once"
    );
    let slow = read_until(&mut stalled, last).await;
    assert_eq!(
        slow, expected,
        "stalled subscriber: every event, in order, once"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_in_the_middle_continues_the_sequence() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let snap = snaps
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "mid".into(),
            labels: Default::default(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = s
        .events()
        .watch_events(watch(Some(snap.event_seq)))
        .await
        .unwrap()
        .into_inner();
    let before = mutate(&s, 20).await;
    let r = snaps
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: snap.snapshot.as_ref().unwrap().snapshot_id.clone(),
            confirm_snapshot_id: snap.snapshot.unwrap().snapshot_id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.rolled_back);
    assert!(
        r.event_seq > *before.last().unwrap(),
        "the log did not rewind"
    );
    let after = mutate(&s, 5).await;
    assert_eq!(after[0], r.event_seq + 1, "seqs continue after the restore");
    let got = read_until(&mut stream, *after.last().unwrap()).await;
    assert_eq!(
        got,
        (snap.event_seq + 1..=*after.last().unwrap()).collect::<Vec<_>>()
    );
    // The restore event is in the log, and events from before the restore are still readable.
    assert_eq!(
        event_at(&s.channel, r.event_seq).await.kind,
        pb::EventKind::RestorePerformed as i32
    );
    let log = whole_log(&s).await;
    for q in &before {
        assert!(log.contains(q));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_exactly_the_matching_events() {
    let s = TestServer::start().await;
    let start = whole_log(&s).await.last().copied().unwrap_or(0);
    let mut deletes = s
        .events()
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(start),
            kinds: vec![pb::EventKind::EntityDeleted as i32],
            entity_types: vec!["habitat".into()],
            heartbeat_interval: None,
            include_log_record: false,
            format: pb::EventFormat::Native as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let created = mutate(&s, 5).await;
    let mut c = s.entity();
    c.delete_measure(pb::DeleteMeasureRequest {
        measure_id: 5,
        request_id: String::new(),
    })
    .await
    .unwrap();
    let del = c
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: 3,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Ok(pb::WatchEventsResponse {
                item: Some(Item::Event(e)),
            })) = deletes.next().await
            {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first.seq, del.event_seq);
    assert_eq!(first.kind, pb::EventKind::EntityDeleted as i32);
    assert_eq!(first.entity_type, "habitat");
    assert!(
        matches!(first.before.unwrap().kind, Some(pb::resource::Kind::Habitat(h)) if h.habitat_id == 3)
    );
    let d = first.delete.unwrap();
    assert_eq!(d.snapshot_id, del.snapshot_id);
    assert!(d
        .rows_removed
        .iter()
        .any(|r| r.table == "habitat" && r.rows == 1));
    // ListEvents applies the same filter.
    let page = s
        .events()
        .list_events(pb::ListEventsRequest {
            start_after_seq: start,
            page_size: 100,
            kinds: vec![pb::EventKind::EntityCreated as i32],
            entity_types: vec![],
            format: pb::EventFormat::Unspecified as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        created
    );
    let bad = s
        .events()
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: None,
            kinds: vec![],
            entity_types: vec!["dragons".into()],
            heartbeat_interval: None,
            include_log_record: false,
            format: pb::EventFormat::Native as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_and_future_starts_are_out_of_range() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.event_retention_keep_last = Some(10);
    let s = TestServer::start_with(cfg).await;
    let seqs = mutate(&s, 30).await;
    let head = *seqs.last().unwrap();
    let p = s
        .events()
        .list_events(pb::ListEventsRequest {
            start_after_seq: head - 1,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = p.first_available_seq;
    let retained = head + 1 - first;
    assert!(
        (10..=11).contains(&retained),
        "kept the newest 10 (+ slack): first {first}, head {head}"
    );
    let e = s.events().watch_events(watch(Some(0))).await.unwrap_err();
    assert_refused(&e, Code::OutOfRange, "START_POSITION_COMPACTED");
    assert_eq!(
        crate::common::error_meta(&e, "first_available_seq"),
        Some(first.to_string())
    );
    let ok = s.events().watch_events(watch(Some(first - 1))).await;
    assert!(ok.is_ok());
    let ahead = s
        .events()
        .watch_events(watch(Some(head + 100)))
        .await
        .unwrap_err();
    assert_refused(&ahead, Code::OutOfRange, "START_POSITION_AHEAD");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_only_heartbeats_and_caught_up() {
    let s = TestServer::start().await;
    let mut st = s
        .events()
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: None,
            kinds: vec![],
            entity_types: vec![],
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            include_log_record: false,
            format: pb::EventFormat::Native as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let first = st.next().await.unwrap().unwrap();
    assert!(matches!(first.item, Some(Item::CaughtUp(_))));
    let hb = tokio::time::timeout(Duration::from_secs(5), st.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let head = whole_log(&s).await.last().copied().unwrap_or(0);
    assert!(
        matches!(hb.item, Some(Item::Heartbeat(pb::Heartbeat { head_seq, time: Some(_) })) if head_seq == head),
        "{hb:?}"
    );
    let seqs = mutate(&s, 3).await;
    let got = read_until(&mut st, seqs[2]).await;
    assert_eq!(got, seqs);
    let uniq: BTreeSet<_> = got.iter().collect();
    assert_eq!(uniq.len(), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_beyond_the_cap_are_refused_until_a_slot_frees() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.max_subscribers = 2;
    let s = TestServer::start_with(cfg).await;
    let first = s
        .events()
        .watch_events(watch(None))
        .await
        .unwrap()
        .into_inner();
    let _second = s
        .events()
        .watch_events(watch(None))
        .await
        .unwrap()
        .into_inner();
    let third = s.events().watch_events(watch(None)).await.unwrap_err();
    assert_refused(&third, Code::ResourceExhausted, "TOO_MANY_SUBSCRIBERS");
    // Closing a stream frees its slot (the server notices the client went away).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.events().watch_events(watch(None)).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    s.stop().await;
}
