//! [replica] against a real S3 API server (moto, see `common::s3`): a mixed workload recovered
//! into an empty directory equals the primary; kill -9 at every upload step never leaves a
//! manifest naming a missing block or a log with a gap, and a restart resumes; S3 cut: async
//! lags (status, health) while writes go on and catches up, `required` refuses deletes and
//! changes nothing; a second server on the prefix is fenced; a damaged remote block is
//! reported and never used; remote retention keeps pins and spares young strays.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lnrs::domain::fingerprint::Fingerprints;
use lnrs::domain::rows::TableRows;
use lnrs::pb;
use lnrs::replica::layout;
use lnrs::snapshot::Manifest;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::ops::{self, entity, eventually, snapshots};
use crate::common::s3::S3;
use crate::common::{assert_refused, ChildServer};

const WAIT: Duration = Duration::from_secs(60);
/// Fast cuts and a short lease, so tests wait seconds, not minutes.
const FAST: &[&str] = &[
    "--replica-segment-interval",
    "50ms",
    "--replica-lease-ttl",
    "3s",
    "--maintenance-interval",
    "200ms",
    "--shutdown-drain-delay",
    "50ms",
];

pub(crate) async fn start(dir: &Path, s3: &S3, prefix: &str, extra: &[&str]) -> ChildServer {
    let mut args: Vec<String> = s3.flags(prefix);
    // FAST's values, unless `extra` gives its own (a flag may appear once).
    for pair in FAST.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChildServer::start(dir, "127.0.0.1:0", &args, &S3::env()).await
}

pub(crate) async fn replica_status(ch: &Channel) -> pb::ReplicaStatus {
    ops::status(ch)
        .await
        .replica
        .expect("a replica is configured")
}

/// Waits until everything committed is in the store. Returns the replicated head.
pub(crate) async fn caught_up(ch: &Channel) -> u64 {
    eventually("the replica caught up", WAIT, || async {
        let r = replica_status(ch).await;
        r.state == pb::ReplicaState::Replicating as i32
            && r.lag_events == 0
            && r.snapshots_pending == 0
            && r.snapshots_replicated > 0
    })
    .await;
    replica_status(ch).await.replicated_seq
}

/// Fingerprints, every user table's rows and the log head of a database file.
pub(crate) fn file_state(db: &Path) -> (Fingerprints, Vec<TableRows>, u64) {
    let conn = lnrs::storage::open_read_only(db).unwrap();
    let tables: Vec<&str> = lnrs::domain::tables::USER_TABLES
        .iter()
        .map(|t| t.name)
        .collect();
    let fps = lnrs::storage::inspect::user_fingerprints(&conn).unwrap();
    let rows = lnrs::storage::images::read_tables(&conn, &tables).unwrap();
    let head = lnrs::events::log::bounds(&conn).unwrap().head;
    (fps, rows, head)
}

/// `lnrs replica restore` into `dir`.
fn recover(s3: &S3, prefix: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lnrs"))
        .args(["replica", "restore", "--json", "--data-dir"])
        .arg(dir)
        .args(s3.flags(prefix))
        .args(extra)
        .envs(S3::env())
        .env_remove("LNRS_REPLICA_URL")
        .output()
        .unwrap()
}

/// What must hold of the bucket at every moment: every manifest decodes and names only blocks
/// that are there; every segment decodes, and the segments are dense (no gap, no overlap).
fn bucket_violations(s3: &S3, prefix: &str) -> Vec<String> {
    crate::common::replica_check::violations(&s3.list(prefix), |k| s3.get(prefix, k)).0
}

pub(crate) fn new_habitat(name: &str) -> pb::CreateHabitatRequest {
    pb::CreateHabitatRequest {
        habitat: Some(pb::Habitat {
            habitat: name.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

pub(crate) async fn delete_habitat(
    ch: &Channel,
    id: i32,
) -> Result<pb::DeleteOutcome, tonic::Status> {
    entity(ch)
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: id,
            request_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().outcome.unwrap())
}

/// Creates, an update, deletes (one with a large cascade), an undelete, a manual snapshot and
/// a restore of it.
async fn mixed_workload(ch: &Channel, tag: &str) {
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            ops::habitat(ch, &format!("{tag} habitat {i}"))
                .await
                .unwrap()
                .0,
        );
    }
    entity(ch)
        .update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: ids[0],
                habitat: format!("{tag} renamed"),
            }),
            update_mask: None,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let gone = delete_habitat(ch, ids[1]).await.unwrap();
    entity(ch)
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 5,
            request_id: String::new(),
        })
        .await
        .unwrap();
    entity(ch)
        .undelete(pb::UndeleteRequest {
            delete: Some(pb::undelete_request::Delete::EventSeq(gone.event_seq)),
            dry_run: false,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let snap = ops::snapshot(ch, &format!("{tag} manual")).await;
    ops::habitat(ch, &format!("{tag} after snapshot"))
        .await
        .unwrap();
    let restored = ops::restore(ch, &snap).await.unwrap();
    assert!(!restored.rolled_back);
    ops::habitat(ch, &format!("{tag} after restore"))
        .await
        .unwrap();
    entity(ch)
        .create_habitat(new_habitat(&format!("{tag} last")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_the_replica_equals_the_primary_and_seqs_continue() {
    let s3 = S3::start("round-trip");
    let primary_dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test: the recovered server can take over only because a
    // clean shutdown releases it.
    let long_lease = ["--replica-lease-ttl", "300s"];
    let primary = start(primary_dir.path(), &s3, "prod", &long_lease).await;
    mixed_workload(&primary.channel, "rt").await;
    let replicated = caught_up(&primary.channel).await;
    assert_eq!(
        replicated,
        ops::status(&primary.channel).await.event_head_seq
    );
    assert_eq!(bucket_violations(&s3, "prod"), Vec::<String>::new());
    ops::stop(primary).await;
    let (fps, rows, head) = file_state(&primary_dir.path().join("lnrs.duckdb"));
    assert_eq!(head, replicated);

    // The CLI, into an empty directory.
    let dr = tempfile::tempdir().unwrap();
    let out = recover(&s3, "prod", dr.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["head_seq"], head);
    assert!(report["events_replayed"].as_u64().unwrap() > 0, "{report}");
    let (dr_fps, dr_rows, dr_head) = file_state(&dr.path().join("lnrs.duckdb"));
    assert_eq!(dr_fps, fps, "fingerprints at the replicated seq");
    assert_eq!(dr_rows, rows, "row by row");
    assert_eq!(dr_head, head);
    // Into a directory that has a database: refused, nothing touched.
    let again = recover(&s3, "prod", dr.path(), &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a database"));

    // serve --bootstrap-from-replica on an empty directory: same data, seqs continue.
    let boot = tempfile::tempdir().unwrap();
    let server = start(
        boot.path(),
        &s3,
        "prod",
        &[
            "--bootstrap-from-replica",
            "true",
            "--replica-lease-ttl",
            "300s",
        ],
    )
    .await;
    assert_eq!(ops::status(&server.channel).await.event_head_seq, head);
    let (_, seq) = ops::habitat(&server.channel, "after recovery")
        .await
        .unwrap();
    assert_eq!(seq, head + 1, "seqs continue from the replicated head");
    // The old primary released its lease on SIGTERM: the recovered server replicates.
    assert_eq!(caught_up(&server.channel).await, head + 1);
    ops::stop(server).await;
    let (boot_fps, _, _) = file_state(&boot.path().join("lnrs.duckdb"));
    assert_ne!(boot_fps, fps, "the new write is there");
    assert_eq!(bucket_violations(&s3, "prod"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_upload_step_leaves_a_consistent_bucket_and_a_restart_resumes() {
    let s3 = S3::start("kill-nine");
    let dir = tempfile::tempdir().unwrap();
    let points = [
        "replica.after_block",
        "replica.before_manifest",
        "replica.before_segment",
    ];
    for (round, point) in points.iter().enumerate() {
        let spec = format!("{point}=abort");
        let mut args: Vec<String> = s3.flags("k9");
        args.extend(FAST.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = S3::env();
        env.push(("LNRS_FAILPOINTS", &spec));
        let mut server = ChildServer::start(dir.path(), "127.0.0.1:0", &args, &env).await;
        // Writes until the armed step kills the process.
        for i in 0..200 {
            if !server.running() {
                break;
            }
            let ch = server.channel.clone();
            let _ = ops::habitat(&ch, &format!("k9 {round}.{i}")).await;
            if i % 5 == 0 {
                let _ = snapshots(&ch)
                    .create_snapshot(pb::CreateSnapshotRequest::default())
                    .await;
            }
        }
        let (_, _, stderr) = server.exit(Duration::from_secs(30)).await;
        assert!(
            stderr.contains(&format!("fail point {point}: aborting")),
            "{point} never fired: {stderr}"
        );
        assert_eq!(
            bucket_violations(&s3, "k9"),
            Vec::<String>::new(),
            "after kill -9 at {point}"
        );
    }
    // Unarmed: the restart resumes uploading and catches up; the bucket stays consistent.
    let server = start(dir.path(), &s3, "k9", &[]).await;
    let head = caught_up(&server.channel).await;
    assert_eq!(head, ops::status(&server.channel).await.event_head_seq);
    ops::stop(server).await;
    assert_eq!(bucket_violations(&s3, "k9"), Vec::<String>::new());
    let (fps, rows, _) = file_state(&dir.path().join("lnrs.duckdb"));
    let dr = tempfile::tempdir().unwrap();
    let out = recover(&s3, "k9", dr.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (dr_fps, dr_rows, _) = file_state(&dr.path().join("lnrs.duckdb"));
    assert_eq!((dr_fps, dr_rows), (fps, rows));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_cut_async_lags_and_catches_up_and_required_refuses_deletes() {
    let s3 = S3::start("outage");
    let dir = tempfile::tempdir().unwrap();
    // A short event log: compaction must still keep what the replica has not confirmed.
    let server = start(
        dir.path(),
        &s3,
        "async",
        &[
            "--replica-max-lag",
            "1s",
            "--event-retention-keep-last",
            "4",
        ],
    )
    .await;
    let ch = server.channel.clone();
    caught_up(&ch).await;
    eventually("lnrs.v1.Replica SERVING", WAIT, || async {
        ops::health(&ch, "lnrs.v1.Replica").await == 1
    })
    .await;

    s3.set_down(true);
    let (id, _) = ops::habitat(&ch, "written while S3 is down").await.unwrap();
    delete_habitat(&ch, id)
        .await
        .expect("async deletes go on while S3 is down");
    for i in 0..12 {
        ops::habitat(&ch, &format!("burst {i}")).await.unwrap();
    }
    // Upkeep compacts every 200 ms: a few rounds with S3 still down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    eventually(
        "health lnrs.v1.Replica NOT_SERVING past the max lag",
        WAIT,
        || async { ops::health(&ch, "lnrs.v1.Replica").await == 2 },
    )
    .await;
    let r = replica_status(&ch).await;
    assert!(r.lag_events >= 2 && r.lag_seconds >= 1.0, "{r:?}");
    assert!(!r.healthy);
    assert!(
        !r.reason.contains("127.0.0.1") && !r.reason.contains("blocks/"),
        "the status reason names no host or object key: {}",
        r.reason
    );
    assert!(
        [
            pb::ReplicaState::Unreachable as i32,
            pb::ReplicaState::Lagging as i32
        ]
        .contains(&r.state),
        "{r:?}"
    );

    s3.set_down(false);
    let head = caught_up(&ch).await;
    assert_eq!(head, ops::status(&ch).await.event_head_seq);
    eventually("health SERVING again", WAIT, || async {
        ops::health(&ch, "lnrs.v1.Replica").await == 1
    })
    .await;
    ops::stop(server).await;
    assert_eq!(bucket_violations(&s3, "async"), Vec::<String>::new());
    // Nothing written during the outage was compacted away before it was shipped.
    let (fps, rows, _) = file_state(&dir.path().join("lnrs.duckdb"));
    let dr = tempfile::tempdir().unwrap();
    let out = recover(&s3, "async", dr.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_state(&dr.path().join("lnrs.duckdb")).0, fps);
    assert_eq!(file_state(&dr.path().join("lnrs.duckdb")).1, rows);

    // Mode sync: with S3 cut the delete stands here, but is not acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &s3,
        "sync",
        &["--replica-mode", "sync", "--replica-sync-timeout", "1s"],
    )
    .await;
    let ch = server.channel.clone();
    caught_up(&ch).await;
    let (id, _) = ops::habitat(&ch, "sync victim").await.unwrap();
    s3.set_down(true);
    let err = delete_habitat(&ch, id).await.unwrap_err();
    assert_refused(&err, Code::Unavailable, "REPLICA_NOT_CONFIRMED");
    let seq: u64 = crate::common::error_meta(&err, "committed_event_seq")
        .expect("the committed seq")
        .parse()
        .unwrap();
    assert!(
        !ops::habitat_names(&ch).await.contains("sync victim"),
        "committed here"
    );
    s3.set_down(false);
    assert!(caught_up(&ch).await >= seq, "shipped once S3 is back");
    ops::stop(server).await;

    // Mode required: with S3 cut a delete is refused and nothing changes.
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &s3,
        "required",
        &["--replica-mode", "required", "--replica-sync-timeout", "2s"],
    )
    .await;
    let ch = server.channel.clone();
    caught_up(&ch).await;
    let (id, _) = ops::habitat(&ch, "kept").await.unwrap();
    let acknowledged = delete_habitat(&ch, ops::habitat(&ch, "gone").await.unwrap().0)
        .await
        .expect("a delete with S3 up");
    let listing = s3.list("required");
    assert!(
        listing
            .iter()
            .any(|k| k.ends_with(&format!("{}.json", acknowledged.snapshot_id))),
        "the pre-delete snapshot is in S3 when the delete is acknowledged"
    );
    assert!(
        lnrs::replica::layout::parse_segment(
            listing.iter().rfind(|k| k.starts_with("log/")).unwrap()
        )
        .unwrap()
        .1 >= acknowledged.event_seq,
        "the delete's event is in S3 when the delete is acknowledged"
    );
    s3.set_down(true);
    let before = ops::status(&ch).await.event_head_seq;
    let err = delete_habitat(&ch, id).await.unwrap_err();
    assert_refused(&err, Code::Unavailable, "REPLICA_UNAVAILABLE");
    assert_eq!(ops::status(&ch).await.event_head_seq, before, "no event");
    assert!(
        ops::habitat_names(&ch).await.contains("kept"),
        "nothing deleted"
    );
    s3.set_down(false);
    delete_habitat(&ch, id)
        .await
        .expect("deletes work again with S3 back");
    ops::stop(server).await;
    assert_eq!(bucket_violations(&s3, "required"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_prefix_is_fenced_and_uploads_nothing() {
    let s3 = S3::start("fencing");
    let a_dir = tempfile::tempdir().unwrap();
    let a = start(a_dir.path(), &s3, "shared", &[]).await;
    caught_up(&a.channel).await;
    let b_dir = tempfile::tempdir().unwrap();
    let b = start(b_dir.path(), &s3, "shared", &[]).await;
    eventually("B reports it is fenced", WAIT, || async {
        replica_status(&b.channel).await.state == pb::ReplicaState::Fenced as i32
    })
    .await;
    let r = replica_status(&b.channel).await;
    assert!(r.reason.contains("another server"), "{r:?}");
    assert!(!r.healthy);
    eventually("B's lnrs.v1.Replica is NOT_SERVING", WAIT, || async {
        ops::health(&b.channel, "lnrs.v1.Replica").await == 2
    })
    .await;
    let b_snap = ops::snapshot(&b.channel, "B's own").await;
    // A keeps replicating, past B's attempt.
    ops::habitat(&a.channel, "A writes on").await.unwrap();
    let a_snap = ops::snapshot(&a.channel, "A's own").await;
    caught_up(&a.channel).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = s3.list("shared");
    assert!(keys.iter().any(|k| k.contains(&a_snap)));
    assert!(
        !keys.iter().any(|k| k.contains(&b_snap)),
        "B uploaded nothing"
    );
    ops::stop(b).await;
    ops::stop(a).await;
    assert_eq!(bucket_violations(&s3, "shared"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_remote_block_is_reported_and_never_used() {
    let s3 = S3::start("damage");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &s3, "d", &[]).await;
    let ch = server.channel.clone();
    let id = ops::snapshot(&ch, "to damage").await;
    caught_up(&ch).await;
    let verify = |deep: bool| {
        let ch = ch.clone();
        let id = id.clone();
        async move {
            snapshots(&ch)
                .verify_snapshot(pb::VerifySnapshotRequest {
                    snapshot_id: id,
                    mode: if deep {
                        pb::VerifyMode::Deep
                    } else {
                        pb::VerifyMode::Quick
                    } as i32,
                    source: pb::HistorySource::Replica as i32,
                })
                .await
                .unwrap()
                .into_inner()
                .report
                .unwrap()
        }
    };
    assert!(
        verify(true).await.passed,
        "an intact replica passes deep verify"
    );
    let m = Manifest::decode(
        &s3.get(
            "d",
            &layout::manifest(&lnrs::snapshot::SnapshotId::parse(&id).unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let victim = layout::block(&m.blocks[m.blocks.len() / 2].hash);
    let mut bytes = s3.get("d", &victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    s3.put("d", &victim, &bytes);

    assert!(verify(false).await.passed, "quick only checks presence");
    let deep = verify(true).await;
    assert!(!deep.passed);
    let failed: Vec<&pb::IntegrityCheck> = deep.checks.iter().filter(|c| !c.passed).collect();
    let hash = victim.rsplit('/').next().unwrap().trim_end_matches(".zst");
    assert!(failed.iter().any(|c| c.actual.contains(hash)), "{failed:?}");
    let drill = snapshots(&ch)
        .drill_replica(pb::DrillReplicaRequest { share_percent: 100 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drill.blocks_read, drill.blocks_total);
    assert!(drill.damaged.iter().any(|d| d.contains(hash)), "{drill:?}");
    ops::stop(server).await;

    let dr = tempfile::tempdir().unwrap();
    let out = recover(&s3, "d", dr.path(), &["--snapshot", &id]);
    assert!(
        !out.status.success(),
        "a recovery must not use a damaged block"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(hash),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dr.path().join("lnrs.duckdb").exists(), "nothing published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_retention_keeps_pins_and_the_grace_period_spares_in_flight_blocks() {
    let s3 = S3::start("retention");
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &s3,
        "r",
        &[
            "--replica-retention-keep-last",
            "2",
            "--replica-retention-keep-within",
            "0s",
            "--replica-gc-grace",
            "3s",
        ],
    )
    .await;
    let ch = server.channel.clone();
    let mut ids = Vec::new();
    for i in 0..4 {
        ops::habitat(&ch, &format!("retention {i}")).await.unwrap();
        ids.push(ops::snapshot(&ch, &format!("r{i}")).await);
    }
    snapshots(&ch)
        .update_snapshot(pb::UpdateSnapshotRequest {
            snapshot_id: ids[0].clone(),
            pinned: true,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["pinned".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    // A restore of r1: recovering across it needs r1, whatever retention says.
    assert!(!ops::restore(&ch, &ids[1]).await.unwrap().rolled_back);
    ops::habitat(&ch, "after the restore").await.unwrap();
    caught_up(&ch).await;
    eventually("the pin is in the replica", WAIT, || async {
        s3.get("r", &format!("annotations/{}.json", ids[0]))
            .is_some()
    })
    .await;
    // A block with no manifest yet (an upload in flight), just now.
    let stray = lnrs::replica::layout::block(&blake3::hash(b"in flight"));
    s3.put("r", &stray, b"not yet referenced");
    let retention = || async {
        snapshots(&ch)
            .apply_replica_retention(pb::ApplyReplicaRetentionRequest { dry_run: false })
            .await
            .unwrap()
            .into_inner()
    };
    let first = retention().await;
    // The replica's base snapshot is for a server with no snapshot at all: taken after the
    // user's own, it would be the newest and push theirs out of keep_last.
    let listed = snapshots(&ch)
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    let oldest = listed.iter().map(|s| s.snapshot_id.as_str()).min();
    for s in &listed {
        if s.description == "Replica base snapshot" {
            assert_eq!(Some(s.snapshot_id.as_str()), oldest, "{listed:#?}");
        }
    }
    let manifests: Vec<String> = s3
        .list("r")
        .into_iter()
        .filter(|k| k.starts_with("manifests/"))
        .collect();
    assert!(
        manifests.iter().any(|k| k.contains(&ids[0])),
        "pinned kept: {manifests:?}"
    );
    assert!(
        manifests.iter().any(|k| k.contains(&ids[3])),
        "kept: keep_last: {ids:?} {manifests:?} {first:?}"
    );
    assert!(
        manifests.iter().any(|k| k.contains(&ids[1])),
        "kept: a later restore restored it: {first:?}"
    );
    assert!(
        !manifests.iter().any(|k| k.contains(&ids[2])),
        "beyond keep_last removed: {first:?}"
    );
    assert!(first.removed_snapshot_ids.contains(&ids[2]));
    assert!(
        s3.get("r", &stray).is_some(),
        "a young unreferenced block survives the sweep"
    );
    assert_eq!(bucket_violations(&s3, "r"), Vec::<String>::new());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = retention().await;
    assert!(second.blocks_removed >= 1, "{second:?}");
    assert!(
        s3.get("r", &stray).is_none(),
        "past the grace period it is collected"
    );
    assert_eq!(bucket_violations(&s3, "r"), Vec::<String>::new());

    // The drill reads every block once within ceil(100 / share) runs.
    let mut read = 0;
    let mut totals = Vec::new();
    for _ in 0..4 {
        let d = snapshots(&ch)
            .drill_replica(pb::DrillReplicaRequest { share_percent: 25 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.cycle, 4);
        assert!(d.damaged.is_empty(), "{d:?}");
        read += d.blocks_read;
        totals.push(d.blocks_total);
    }
    assert!(
        totals.windows(2).all(|w| w[0] == w[1]),
        "no block came or went: {totals:?}"
    );
    assert_eq!(
        read, totals[0],
        "four quarter runs read every block exactly once"
    );
    ops::stop(server).await;

    // What retention left still recovers the primary, across its restore.
    let (fps, rows, _) = file_state(&dir.path().join("lnrs.duckdb"));
    let dr = tempfile::tempdir().unwrap();
    let out = recover(&s3, "r", dr.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (dr_fps, dr_rows, _) = file_state(&dr.path().join("lnrs.duckdb"));
    assert_eq!((dr_fps, dr_rows), (fps, rows));
}
