//! [timeline] point-in-time restore against the real server: after a mixed workload (creates,
//! an update, deletes with cascades, an undelete, a snapshot and a restore), restoring to
//! random seqs gives exactly the state the test recorded at each — the database file itself,
//! copied with the server stopped at that seq — locally and from the replica (moto S3); a
//! time point, a dry run's plan, and points the history does not cover.

use std::path::Path;

use lnrs::domain::fingerprint::Fingerprints;
use lnrs::domain::rows::TableRows;
use lnrs::pb;
use pb::restore_to_point_request::Point;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

use super::replica::{caught_up, delete_habitat, file_state, start};
use crate::common::ops::{self, entity, snapshots};
use crate::common::s3::S3;
use crate::common::{assert_refused, ChildServer};

type State = (Fingerprints, Vec<TableRows>);

/// One workload step; returns nothing but must leave the change acknowledged.
async fn step(ch: &Channel, i: usize, memo: &mut Memo) {
    match i {
        0..=2 => {
            memo.habitats
                .push(ops::habitat(ch, &format!("tl {i}")).await.unwrap().0);
        }
        3 => {
            entity(ch)
                .update_habitat(pb::UpdateHabitatRequest {
                    habitat: Some(pb::Habitat {
                        habitat_id: memo.habitats[0],
                        habitat: "tl renamed".into(),
                    }),
                    update_mask: None,
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
        4 => {
            memo.deleted = delete_habitat(ch, memo.habitats[1])
                .await
                .unwrap()
                .event_seq
        }
        5 => {
            entity(ch)
                .delete_measure(pb::DeleteMeasureRequest {
                    measure_id: 7,
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
        6 => {
            entity(ch)
                .undelete(pb::UndeleteRequest {
                    delete: Some(pb::undelete_request::Delete::EventSeq(memo.deleted)),
                    dry_run: false,
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
        7 => memo.snapshot = ops::snapshot(ch, "tl manual").await,
        8 | 9 => {
            ops::habitat(ch, &format!("tl {i}")).await.unwrap();
        }
        10 => assert!(!ops::restore(ch, &memo.snapshot).await.unwrap().rolled_back),
        _ => {
            ops::habitat(ch, &format!("tl {i}")).await.unwrap();
        }
    }
}

#[derive(Default)]
struct Memo {
    habitats: Vec<i32>,
    deleted: u64,
    snapshot: String,
}

const STEPS: usize = 14;

/// Stops the server, reads its file, starts it again.
async fn with_stopped(
    server: ChildServer,
    dir: &Path,
    s3: &S3,
    read: impl FnOnce(&Path),
) -> ChildServer {
    ops::stop(server).await;
    read(&dir.join("lnrs.duckdb"));
    start(dir, s3, "tl", &[]).await
}

async fn to_point(
    ch: &Channel,
    point: Point,
    source: pb::HistorySource,
    dry_run: bool,
) -> Result<pb::RestoreToPointResponse, tonic::Status> {
    snapshots(ch)
        .restore_to_point(pb::RestoreToPointRequest {
            point: Some(point),
            source: source as i32,
            dry_run,
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_random_points_equal_the_states_recorded_there_locally_and_from_the_replica() {
    let seed: u64 = std::env::var("LNRS_TIMELINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("timeline seed {seed} (LNRS_TIMELINE_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = (0..STEPS).collect();
    chosen.shuffle(&mut rng);
    chosen.truncate(5);

    let s3 = S3::start("timeline");
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &s3, "tl", &[]).await;
    // The replica's base snapshot: every point of the workload comes after it.
    caught_up(&server.channel).await;
    let mut memo = Memo::default();
    let mut recorded: Vec<(u64, State)> = Vec::new();
    let mut times = Vec::new();
    for i in 0..STEPS {
        step(&server.channel, i, &mut memo).await;
        if chosen.contains(&i) {
            let mut got = None;
            server = with_stopped(server, dir.path(), &s3, |db| {
                let (fps, rows, head) = file_state(db);
                got = Some((head, (fps, rows)));
            })
            .await;
            let (head, state) = got.unwrap();
            times.push((
                head,
                crate::common::event_at(&server.channel, head).await.time,
            ));
            recorded.push((head, state));
        }
    }
    caught_up(&server.channel).await;
    let head = ops::status(&server.channel).await.event_head_seq;

    // A dry run changes nothing and says what would be done.
    let (target, _) = &recorded[0];
    let plan = to_point(
        &server.channel,
        Point::EventSeq(*target),
        pb::HistorySource::Local,
        true,
    )
    .await
    .unwrap();
    assert!(plan.restore.is_none());
    let p = plan.plan.unwrap();
    assert_eq!(p.target_event_seq, *target);
    assert!(p.base_event_seq <= *target && p.events_to_replay == target - p.base_event_seq);
    assert_eq!(ops::status(&server.channel).await.event_head_seq, head);

    // Beyond the head: OUT_OF_RANGE, naming the reachable range.
    for source in [pb::HistorySource::Local, pb::HistorySource::Replica] {
        let err = to_point(&server.channel, Point::EventSeq(head + 1000), source, true)
            .await
            .unwrap_err();
        assert_refused(&err, Code::OutOfRange, "POINT_NOT_REACHABLE");
        assert_eq!(
            crate::common::error_meta(&err, "head_seq"),
            Some(head.to_string())
        );
    }

    for source in [pb::HistorySource::Local, pb::HistorySource::Replica] {
        let mut order = recorded.clone();
        order.shuffle(&mut rng);
        for (seq, want) in order {
            let r = to_point(&server.channel, Point::EventSeq(seq), source, false)
                .await
                .unwrap_or_else(|e| panic!("{source:?} to {seq}: {e:?}"));
            let restore = r.restore.unwrap();
            assert!(
                !restore.rolled_back,
                "{source:?} to {seq}: {}",
                restore.rollback_reason
            );
            caught_up(&server.channel).await;
            server = with_stopped(server, dir.path(), &s3, |db| {
                let (fps, rows, _) = file_state(db);
                assert_eq!(fps, want.0, "{source:?}: fingerprints after event {seq}");
                assert_eq!(rows, want.1, "{source:?}: rows after event {seq}");
            })
            .await;
        }
    }

    // A time point: the state after the newest event at or before it.
    let (seq, time) = times[rng.random_range(0..times.len())];
    let want = recorded.iter().find(|(s, _)| *s == seq).unwrap().1.clone();
    let r = to_point(
        &server.channel,
        Point::Time(time.unwrap()),
        pb::HistorySource::Local,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.plan.unwrap().target_event_seq, seq);
    server = with_stopped(server, dir.path(), &s3, |db| {
        let (fps, rows, _) = file_state(db);
        assert_eq!((fps, rows), want, "state at the time of event {seq}");
    })
    .await;
    ops::stop(server).await;
}

/// Across a compaction of the log: what is still reachable starts at the oldest snapshot whose
/// following events are all retained; before it, OUT_OF_RANGE names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_compaction_the_plan_says_what_is_still_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--event-retention-keep-last",
            "8",
            "--maintenance-interval",
            "100ms",
            "--shutdown-drain-delay",
            "50ms",
        ],
        &[],
    )
    .await;
    let ch = server.channel.clone();
    ops::snapshot(&ch, "old").await;
    let old_head = ops::status(&ch).await.event_head_seq;
    for i in 0..30 {
        ops::habitat(&ch, &format!("c {i}")).await.unwrap();
    }
    ops::eventually(
        "the log is compacted",
        std::time::Duration::from_secs(30),
        || async { ops::status(&ch).await.event_first_seq > old_head + 1 },
    )
    .await;
    // The snapshot holds the state right after `base`; its own event comes next.
    let base = ops::status(&ch).await.event_head_seq;
    ops::snapshot(&ch, "new").await;
    for i in 0..3 {
        ops::habitat(&ch, &format!("d {i}")).await.unwrap();
    }
    let err = to_point(
        &ch,
        Point::EventSeq(old_head + 1),
        pb::HistorySource::Local,
        true,
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::OutOfRange, "POINT_NOT_REACHABLE");
    let earliest: u64 = crate::common::error_meta(&err, "earliest_reachable_seq")
        .unwrap()
        .parse()
        .unwrap();
    assert!(earliest > old_head && earliest <= base, "{earliest}");
    // Right after "d 1": the snapshot's event, "d 0", "d 1" replayed onto it.
    let target = base + 3;
    let plan = to_point(&ch, Point::EventSeq(target), pb::HistorySource::Local, true)
        .await
        .unwrap()
        .plan
        .unwrap();
    assert_eq!(
        plan.base_event_seq, base,
        "the newest snapshot at or before the point"
    );
    assert_eq!(plan.events_to_replay, 3);
    assert_eq!(plan.earliest_reachable_seq, earliest);
    let r = to_point(
        &ch,
        Point::EventSeq(target),
        pb::HistorySource::Local,
        false,
    )
    .await
    .unwrap();
    assert!(!r.restore.unwrap().rolled_back);
    let names = ops::habitat_names(&ch).await;
    assert!(
        names.contains("d 1") && !names.contains("d 2"),
        "right after event {target}"
    );
    ops::stop(server).await;
}
