//! Snapshots users keep (UpdateSnapshot) through gRPC against a real server: a pinned manual
//! snapshot outlives retention however many deletes follow, unpinned it goes; DeleteSnapshot
//! needs force for it; labels and description updates show in Get and List and survive a
//! restart; retries replay; bad masks and values change nothing; a forgotten snapshot's
//! annotation record goes with it.

use std::path::{Path, PathBuf};

use crate::common::{
    assert_refused, data_dir_with_reference, event_at, measure_ids, ops, reason, test_config,
    TestServer,
};
use lnrs::pb;
use prost_types::FieldMask;
use tonic::Code;

/// An UpdateSnapshot request for `id` changing the fields `paths` names.
fn update_req(id: &str, paths: &[&str]) -> pb::UpdateSnapshotRequest {
    pb::UpdateSnapshotRequest {
        snapshot_id: id.into(),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        ..Default::default()
    }
}

fn pin_req(id: &str, pinned: bool) -> pb::UpdateSnapshotRequest {
    pb::UpdateSnapshotRequest {
        pinned,
        ..update_req(id, &["pinned"])
    }
}

async fn update(
    s: &TestServer,
    req: pb::UpdateSnapshotRequest,
) -> Result<pb::UpdateSnapshotResponse, tonic::Status> {
    s.snapshots()
        .update_snapshot(req)
        .await
        .map(|r| r.into_inner())
}

async fn get(s: &TestServer, id: &str) -> Result<pb::Snapshot, tonic::Status> {
    s.snapshots()
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().snapshot.expect("snapshot"))
}

/// Every snapshot, newest first (one page holds them all in these tests).
async fn list(s: &TestServer) -> Vec<pb::Snapshot> {
    let page = s
        .snapshots()
        .list_snapshots(pb::ListSnapshotsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.snapshots
}

async fn delete(s: &TestServer, id: &str, force: bool) -> Result<u64, tonic::Status> {
    s.snapshots()
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: id.into(),
            request_id: String::new(),
            force,
        })
        .await
        .map(|r| r.into_inner().event_seq)
}

/// A quick verify of `id`: whether it passed.
async fn verify(s: &TestServer, id: &str) -> bool {
    s.snapshots()
        .verify_snapshot(pb::VerifySnapshotRequest {
            source: pb::HistorySource::Local as i32,
            snapshot_id: id.into(),
            mode: pb::VerifyMode::Quick as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
        .passed
}

/// ApplyRetention with the configured policy; the decision about `id`.
async fn retention_decision(s: &TestServer, id: &str) -> pb::RetentionDecision {
    s.snapshots()
        .apply_retention(pb::ApplyRetentionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .decisions
        .into_iter()
        .find(|d| d.snapshot_id == id)
        .unwrap_or_else(|| panic!("no retention decision about {id}"))
}

fn annotation_record(data_dir: &Path, id: &str) -> PathBuf {
    data_dir
        .join("snapshots")
        .join("annotations")
        .join(format!("{id}.json"))
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_manual_snapshot_survives_fifty_deletes_with_keep_last_10() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.retention_keep_last = 10;
    let s = TestServer::start_with(cfg).await;
    let kept = ops::snapshot(&s.channel, "before the spring import").await;

    let pinned = update(
        &s,
        pb::UpdateSnapshotRequest {
            request_id: "pin-spring-import".into(),
            ..pin_req(&kept, true)
        },
    )
    .await
    .unwrap();
    assert!(pinned.snapshot.as_ref().unwrap().pinned && !pinned.replayed);
    let ev = event_at(&s.channel, pinned.event_seq).await;
    assert_eq!(ev.kind, pb::EventKind::SnapshotUpdated as i32);
    let detail = ev.snapshot.expect("snapshot detail");
    assert_eq!(
        (detail.snapshot_id.as_str(), detail.description.as_str()),
        (kept.as_str(), "before the spring import")
    );
    assert_eq!(detail.operation, pb::SnapshotOperation::Manual as i32);
    let retried = update(
        &s,
        pb::UpdateSnapshotRequest {
            request_id: "pin-spring-import".into(),
            ..pin_req(&kept, true)
        },
    )
    .await
    .unwrap();
    assert!(retried.replayed, "a retry with the same request_id replays");
    assert_eq!(retried.event_seq, pinned.event_seq);
    assert_eq!(
        ops::status(&s.channel).await.event_head_seq,
        pinned.event_seq
    );

    let measures: Vec<i32> = measure_ids(&s.channel).await.into_iter().take(50).collect();
    assert_eq!(measures.len(), 50);
    for id in measures {
        s.entity()
            .delete_measure(pb::DeleteMeasureRequest {
                measure_id: id,
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    // Retention ran in the background after every delete; one more run settles it.
    let d = retention_decision(&s, &kept).await;
    assert!(!d.removed && d.reason.contains("pinned"), "{d:?}");
    let all = list(&s).await;
    let deletes = all
        .iter()
        .filter(|x| x.operation == pb::SnapshotOperation::Delete as i32)
        .count();
    assert_eq!(
        (all.len(), deletes),
        (11, 10),
        "ten newest deletes + the pinned one"
    );
    let survivor = all.iter().find(|x| x.snapshot_id == kept).expect("kept");
    assert!(survivor.pinned);
    assert_eq!(survivor.description, "before the spring import");
    assert!(
        verify(&s, &kept).await,
        "GC kept every block of the pinned snapshot"
    );
    // The newest snapshot verified too, so "newest verified" protects it, not the pinned one.
    assert!(verify(&s, &all[0].snapshot_id).await);

    // Unpinned (its new description keeps an annotation record), the next run removes it
    // and its record.
    let described = pb::UpdateSnapshotRequest {
        description: "spring import, done".into(),
        ..update_req(&kept, &["description"])
    };
    update(&s, described).await.unwrap();
    let record = annotation_record(&s.data_dir, &kept);
    assert!(record.exists());
    let unpinned = update(&s, pin_req(&kept, false)).await.unwrap();
    let shown = unpinned.snapshot.unwrap();
    assert!(!shown.pinned);
    assert_eq!(shown.description, "spring import, done");
    let d = retention_decision(&s, &kept).await;
    assert!(d.removed, "{d:?}");
    assert_eq!(get(&s, &kept).await.unwrap_err().code(), Code::NotFound);
    assert!(!record.exists(), "the annotation went with the snapshot");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_force_and_updates_show_everywhere_and_survive_a_restart() {
    let tmp = data_dir_with_reference();
    let s = TestServer::start_with(test_config(tmp.path())).await;
    let id = s
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "taken".into(),
            labels: labels(&[("env", "test")]),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;
    let changed = update(
        &s,
        pb::UpdateSnapshotRequest {
            description: "  before the spring import ".into(),
            labels: labels(&[("ticket", "123"), ("who", "ops")]),
            ..update_req(&id, &["labels", "description"])
        },
    )
    .await
    .unwrap()
    .snapshot
    .unwrap();
    let want = labels(&[("ticket", "123"), ("who", "ops")]);
    assert_eq!(changed.labels, want, "labels are replaced, not merged");
    assert_eq!(changed.description, "before the spring import");
    assert!(!changed.pinned, "only what the mask names changes");
    assert!(!changed.tables.is_empty(), "the full snapshot is returned");
    update(&s, pin_req(&id, true)).await.unwrap();

    let refused = delete(&s, &id, false).await.unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "SNAPSHOT_PINNED");
    assert!(refused.message().contains("force"), "{}", refused.message());

    s.stop().await;
    let s = TestServer::start_with(test_config(tmp.path())).await;
    for shown in [
        get(&s, &id).await.unwrap(),
        list(&s)
            .await
            .into_iter()
            .find(|x| x.snapshot_id == id)
            .unwrap(),
    ] {
        assert!(shown.pinned);
        assert_eq!(shown.labels, want);
        assert_eq!(shown.description, "before the spring import");
    }
    let seq = delete(&s, &id, true).await.unwrap();
    assert_eq!(get(&s, &id).await.unwrap_err().code(), Code::NotFound);
    assert!(!annotation_record(tmp.path(), &id).exists());
    let ev = event_at(&s.channel, seq).await;
    assert_eq!(ev.kind, pb::EventKind::SnapshotDeleted as i32);
    assert_eq!(
        ev.snapshot.unwrap().description,
        "before the spring import",
        "the event names the snapshot as users knew it"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    let id = ops::snapshot(&s.channel, "target").await;
    let gone = ops::snapshot(&s.channel, "deleted").await;
    delete(&s, &gone, false).await.unwrap();
    let head = ops::status(&s.channel).await.event_head_seq;

    let no_mask = pb::UpdateSnapshotRequest {
        pinned: true,
        update_mask: None,
        ..update_req(&id, &[])
    };
    let unknown = pb::UpdateSnapshotRequest {
        pinned: true,
        ..update_req(&id, &["pinned", "operation"])
    };
    let bad_label = pb::UpdateSnapshotRequest {
        labels: labels(&[("Bad Key", "x")]),
        ..update_req(&id, &["labels"])
    };
    let bad_value = pb::UpdateSnapshotRequest {
        labels: labels(&[("k", "bell\u{7}")]),
        ..update_req(&id, &["labels"])
    };
    let empty_description = pb::UpdateSnapshotRequest {
        description: "   ".into(),
        pinned: true,
        ..update_req(&id, &["pinned", "description"])
    };
    let long_description = pb::UpdateSnapshotRequest {
        description: "x".repeat(501),
        ..update_req(&id, &["description"])
    };
    let cases = [
        (
            update_req(&id, &[]),
            Code::InvalidArgument,
            "UPDATE_MASK_REQUIRED",
        ),
        (no_mask, Code::InvalidArgument, "UPDATE_MASK_REQUIRED"),
        (unknown, Code::InvalidArgument, "UNKNOWN_FIELD_IN_MASK"),
        (bad_label, Code::InvalidArgument, "INVALID_LABEL"),
        (bad_value, Code::InvalidArgument, "INVALID_LABEL"),
        (
            empty_description,
            Code::InvalidArgument,
            "INVALID_DESCRIPTION",
        ),
        (
            long_description,
            Code::InvalidArgument,
            "INVALID_DESCRIPTION",
        ),
        (pin_req(&gone, true), Code::NotFound, "SNAPSHOT_NOT_FOUND"),
        (
            pin_req("../../etc/passwd", true),
            Code::InvalidArgument,
            "SNAPSHOT_ID_INVALID",
        ),
    ];
    for (req, code, why) in cases {
        let what = format!("{:?}", req.update_mask);
        let e = update(&s, req).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (code, why),
            "{what}: {e:?}"
        );
    }
    let after = get(&s, &id).await.unwrap();
    assert!(!after.pinned);
    assert_eq!(after.description, "target");
    assert_eq!(
        ops::status(&s.channel).await.event_head_seq,
        head,
        "no event"
    );
    assert!(!annotation_record(&s.data_dir, &gone).exists());
    s.stop().await;
}
