//! SnapshotService and snapshot-before-delete through gRPC against a real server: the original
//! app's backup test cases done for real, idempotent retries, no lost commits, corruption
//! detection, automatic rollback, degraded storage policies, and reads during a restore.

use std::collections::BTreeSet;

use crate::common::{
    assert_refused, event_at, events_after, measure_ids, reason, test_config, TestServer,
};
use lnrs::config::SnapshotPolicy;
use lnrs::pb;
use tonic::Code;

fn restore_req(id: &str) -> pb::RestoreSnapshotRequest {
    pb::RestoreSnapshotRequest {
        snapshot_id: id.into(),
        confirm_snapshot_id: id.into(),
        request_id: String::new(),
    }
}

async fn create_measure(s: &TestServer, name: &str) -> i32 {
    crate::common::ops::measure(&s.channel, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_before_delete_records_what_was_deleted_and_restore_brings_it_back() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    let mut snaps = s.snapshots();
    let before = measure_ids(&s.channel).await;
    let out = c
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 42,
            request_id: "req-del-42".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    assert!(!out.snapshot_id.is_empty());
    let snap = snaps
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: out.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snap.operation, pb::SnapshotOperation::Delete as i32);
    assert_eq!(snap.entity_type, "measure");
    assert_eq!(snap.entity_id, "42");
    assert_eq!(snap.request_id, "req-del-42");
    assert_eq!(snap.description, "Before delete measure 42");
    assert!(
        snap.create_time.is_some()
            && snap.logical_bytes > 0
            && snap.block_count > 0
            && !snap.file_blake3.is_empty()
    );
    let measure_rows = snap
        .tables
        .iter()
        .find(|t| t.table == "measure")
        .unwrap()
        .rows;
    assert_eq!(
        measure_rows, 168,
        "the snapshot holds the state before the delete"
    );
    assert!(!measure_ids(&s.channel).await.contains(&42));

    let r = snaps
        .restore_snapshot(restore_req(&out.snapshot_id))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.rolled_back, "{:?}", r.report);
    assert!(r.report.as_ref().unwrap().passed);
    let names: Vec<_> = r
        .report
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("pre_swap:scan:"))
            && names.iter().any(|n| n == "post_swap:file_hash")
            && names.iter().any(|n| n == "post_swap:row_counts"),
        "{names:?}"
    );
    assert_eq!(
        measure_ids(&s.channel).await,
        before,
        "restore recovers the deleted measure"
    );

    // The safety snapshot is an ordinary snapshot holding the pre-restore state.
    let safety = snaps
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: r.safety_snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(safety.operation, pb::SnapshotOperation::PreRestore as i32);
    assert_eq!(
        safety
            .tables
            .iter()
            .find(|t| t.table == "measure")
            .unwrap()
            .rows,
        167
    );
    // …and restoring it undoes the restore.
    let undo = snaps
        .restore_snapshot(restore_req(&r.safety_snapshot_id))
        .await
        .unwrap()
        .into_inner();
    assert!(!undo.rolled_back);
    assert!(!measure_ids(&s.channel).await.contains(&42));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delete_rpc_takes_exactly_one_snapshot_and_retries_take_none() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.retention_keep_last = 1000; // count every snapshot; retention is tested on its own
    let s = TestServer::start_with(cfg).await;
    let mut c = s.entity();
    let mut snaps = s.snapshots();
    // Entity deletes take DELETE snapshots, link deletes DELETE_LINK ones.
    let count = |snaps: &mut pb::snapshot_service_client::SnapshotServiceClient<_>| {
        let mut snaps = snaps.clone();
        async move {
            let mut n = 0;
            for op in [
                pb::SnapshotOperation::Delete,
                pb::SnapshotOperation::DeleteLink,
            ] {
                n += snaps
                    .list_snapshots(pb::ListSnapshotsRequest {
                        operation: op as i32,
                        page_size: 500,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .total_size;
            }
            n
        }
    };
    let mut expected = 0;
    let link_of = |t: pb::LinkType, c: &mut pb::entity_service_client::EntityServiceClient<_>| {
        let mut c = c.clone();
        async move {
            c.list_links(pb::ListLinksRequest {
                link_type: t as i32,
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .links
            .remove(0)
        }
    };
    for t in [
        pb::LinkType::MeasureAreaPriorityGrant,
        pb::LinkType::MeasureAreaPriority,
        pb::LinkType::SpeciesAreaPriority,
        pb::LinkType::HabitatCreationArea,
        pb::LinkType::HabitatManagementArea,
        pb::LinkType::MeasureSpecies,
    ] {
        let l = link_of(t, &mut c).await;
        let rid = format!("link-{}", t as i32);
        let first = c
            .delete_link(pb::DeleteLinkRequest {
                link: Some(l.clone()),
                request_id: rid.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        expected += 1;
        let taken = snaps
            .get_snapshot(pb::GetSnapshotRequest {
                snapshot_id: first.outcome.as_ref().unwrap().snapshot_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(
            taken.operation,
            pb::SnapshotOperation::DeleteLink as i32,
            "a link delete's snapshot says DELETE_LINK"
        );
        let again = c
            .delete_link(pb::DeleteLinkRequest {
                link: Some(l),
                request_id: rid,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.outcome.as_ref().unwrap().snapshot_id,
            first.outcome.as_ref().unwrap().snapshot_id
        );
        assert!(again.outcome.unwrap().replayed);
        assert_eq!(count(&mut snaps).await, expected, "{t:?}");
    }
    let g = c
        .list_grants(pb::ListGrantsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants
        .remove(0);
    c.delete_grant(pb::DeleteGrantRequest {
        grant_id: g.grant_id,
        request_id: String::new(),
    })
    .await
    .unwrap();
    c.delete_measure(pb::DeleteMeasureRequest {
        measure_id: 1,
        request_id: "m1".into(),
    })
    .await
    .unwrap();
    c.delete_measure(pb::DeleteMeasureRequest {
        measure_id: 1,
        request_id: "m1".into(),
    })
    .await
    .unwrap();
    c.delete_area(pb::DeleteAreaRequest {
        area_id: 1,
        request_id: String::new(),
    })
    .await
    .unwrap();
    c.delete_priority(pb::DeletePriorityRequest {
        priority_id: 1,
        request_id: String::new(),
    })
    .await
    .unwrap();
    c.delete_species(pb::DeleteSpeciesRequest {
        species_id: 1,
        request_id: String::new(),
    })
    .await
    .unwrap();
    c.delete_habitat(pb::DeleteHabitatRequest {
        habitat_id: 1,
        request_id: String::new(),
    })
    .await
    .unwrap();
    expected += 6;
    assert_eq!(count(&mut snaps).await, expected);
    // A retry of a different request with the same id is refused.
    let reused = c
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 2,
            request_id: "m1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    // A delete of something missing takes no snapshot.
    let missing = c
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 99_999,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(count(&mut snaps).await, expected);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_over_three_states() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let mut states = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        if i > 0 {
            create_measure(&s, &format!("state {i}")).await;
        }
        states.push(measure_ids(&s.channel).await);
        let snap = snaps
            .create_snapshot(pb::CreateSnapshotRequest {
                description: format!("state {i}"),
                labels: Default::default(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        ids.push(snap.snapshot_id);
    }
    for i in [1usize, 2, 0, 2, 1, 0] {
        let r = snaps
            .restore_snapshot(restore_req(&ids[i]))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.rolled_back, "state {i}: {:?}", r.rollback_reason);
        assert_eq!(measure_ids(&s.channel).await, states[i], "state {i}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_snapshots_in_a_tight_loop_have_distinct_ids_and_content() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let mut ids = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    for i in 0..50 {
        create_measure(&s, &format!("loop {i}")).await;
        let snap = snaps
            .create_snapshot(pb::CreateSnapshotRequest {
                description: format!("loop {i}"),
                labels: Default::default(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        ids.insert(snap.snapshot_id);
        hashes.insert(snap.file_blake3);
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(hashes.len(), 50);
    // Retention (which runs right after each snapshot, without making the caller wait) keeps
    // exactly the newest 10 (the default), newest first.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let listed = loop {
        let listed = snaps
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if listed.total_size == 10 || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(listed.total_size, 10);
    let newest: Vec<_> = ids.iter().rev().take(10).cloned().collect();
    assert_eq!(
        listed
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect::<Vec<_>>(),
        newest
    );
    let status = snaps
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.snapshot_count, 10);
    assert!(
        status.stored_bytes < status.database_bytes,
        "10 snapshots stored in less than one file: {} vs {}",
        status.stored_bytes,
        status.database_bytes
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_n_and_the_newest_and_dry_run_changes_nothing() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let mut ids = Vec::new();
    for i in 0..6 {
        let snap = snaps
            .create_snapshot(pb::CreateSnapshotRequest {
                description: format!("r{i}"),
                labels: Default::default(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        ids.push(snap.snapshot_id);
    }
    let dry = snaps
        .apply_retention(pb::ApplyRetentionRequest {
            keep_last: 2,
            keep_within: None,
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.decisions.iter().filter(|d| d.removed).count(), 4);
    assert_eq!(
        snaps
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total_size,
        6
    );
    let done = snaps
        .apply_retention(pb::ApplyRetentionRequest {
            keep_last: 2,
            keep_within: None,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.event_seq > 0 && done.bytes_freed > 0);
    let left: Vec<_> = snaps
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    assert_eq!(left, vec![ids[5].clone(), ids[4].clone()]);
    let gone = snaps
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // Deleting one, and refusing nonsense ids.
    snaps
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: ids[4].clone(),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bad = snaps
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: "../../etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&bad, Code::InvalidArgument, "SNAPSHOT_ID_INVALID");
    let unconfirmed = snaps
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: ids[5].clone(),
            confirm_snapshot_id: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&unconfirmed), "RESTORE_NOT_CONFIRMED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reads_a_snapshot_without_restoring_it() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let out = s
        .entity()
        .delete_area(pb::DeleteAreaRequest {
            area_id: 3,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    let p = snaps
        .preview_snapshot(pb::PreviewSnapshotRequest {
            snapshot_id: out.snapshot_id.clone(),
            table: "area".into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.table_rows
            .iter()
            .find(|t| t.table == "area")
            .unwrap()
            .rows,
        68
    );
    assert_eq!(p.columns.first().map(String::as_str), Some("area_id"));
    assert_eq!(p.rows.len(), 5);
    let geo = snaps
        .preview_snapshot(pb::PreviewSnapshotRequest {
            snapshot_id: out.snapshot_id.clone(),
            table: "area_geom".into(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(geo.columns.contains(&"geo_shape".to_string()));
    let blob = geo.columns.iter().position(|c| c == "geo_shape").unwrap();
    assert!(
        matches!(geo.rows[0].values[blob].kind, Some(pb::preview_value::Kind::BlobBytes(n)) if n > 0)
    );
    let unknown = snaps
        .preview_snapshot(pb::PreviewSnapshotRequest {
            snapshot_id: out.snapshot_id,
            table: "pg_shadow".into(),
            limit: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    s.stop().await;
}

/// Block hashes a snapshot references, read from its manifest file.
pub(crate) fn manifest_blocks(data_dir: &std::path::Path, id: &str) -> BTreeSet<String> {
    let path = data_dir
        .join("snapshots")
        .join("manifests")
        .join(format!("{id}.json"));
    let text = std::fs::read_to_string(path).unwrap();
    let json_end = text.rfind(",\"manifest_blake3\"").unwrap();
    let m: serde_json::Value = serde_json::from_str(&format!("{}}}", &text[..json_end])).unwrap();
    m["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hash"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_reported_and_the_live_database_is_untouched() {
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let create = |d: &str| pb::CreateSnapshotRequest {
        description: d.into(),
        labels: Default::default(),
        request_id: String::new(),
    };
    let id = snaps
        .create_snapshot(create("to corrupt"))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;
    for i in 0..5 {
        create_measure(&s, &format!("after the snapshot {i}")).await;
    }
    let now = snaps
        .create_snapshot(create("now"))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;
    let live = measure_ids(&s.channel).await;
    // Damage a block only the target holds: the live state cannot heal it by deduplication.
    let only_target: Vec<String> = manifest_blocks(&s.data_dir, &id)
        .difference(&manifest_blocks(&s.data_dir, &now))
        .cloned()
        .collect();
    let hash = only_target
        .first()
        .expect("the target has blocks the live state lacks");
    let victim = walk(&s.data_dir.join("snapshots").join("blocks"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(hash.as_str()))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&victim, bytes).unwrap();

    let r = snaps
        .restore_snapshot(restore_req(&id))
        .await
        .unwrap()
        .into_inner();
    assert!(r.rolled_back, "a corrupt target is refused");
    let report = r.report.unwrap();
    assert!(!report.passed);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "pre_swap:assemble" && !c.passed),
        "{report:?}"
    );
    assert_eq!(
        measure_ids(&s.channel).await,
        live,
        "the live database is untouched"
    );
    for mode in [pb::VerifyMode::Quick, pb::VerifyMode::Deep] {
        let v = snaps
            .verify_snapshot(pb::VerifySnapshotRequest {
                source: pb::HistorySource::Local as i32,
                snapshot_id: id.clone(),
                mode: mode as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .report
            .unwrap();
        assert!(!v.passed, "{mode:?}");
        assert!(
            v.checks.iter().any(|c| !c.passed && !c.actual.is_empty()),
            "{v:?}"
        );
    }
    s.stop().await;
}

pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Fail points are process-global: this one runs in a child server so no other test of this
/// binary can hit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_the_swap_rolls_back_by_itself() {
    let tmp = crate::common::data_dir_with_reference();
    let s = crate::common::ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &[],
        &[("LNRS_FAILPOINTS", "restore.post_swap_verify=error")],
    )
    .await;
    let id = crate::common::ops::snapshot(&s.channel, "target").await;
    crate::common::ops::habitat(&s.channel, "pre-restore state")
        .await
        .unwrap();
    let live = measure_ids(&s.channel).await;
    let habitats = crate::common::ops::habitat_names(&s.channel).await;
    let r = crate::common::ops::restore(&s.channel, &id).await.unwrap();
    assert!(r.rolled_back);
    assert!(r
        .report
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .any(|c| c.name.starts_with("rollback:")));
    assert_eq!(measure_ids(&s.channel).await, live);
    assert_eq!(
        crate::common::ops::habitat_names(&s.channel).await,
        habitats,
        "the live data equals the pre-restore state"
    );
    // The restore is itself an event, with rolled_back set.
    let ev = event_at(&s.channel, r.event_seq).await;
    assert!(ev.restore.as_ref().unwrap().rolled_back);
    crate::common::ops::stop(s).await;
}

/// The assembled target is written back to disk while it is checked; a writeback that fails
/// stops the restore before anything is swapped, with the failure in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_cannot_be_written_to_disk_is_not_restored() {
    let tmp = crate::common::data_dir_with_reference();
    let s = crate::common::ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &[],
        &[("LNRS_FAILPOINTS", "restore.flush=error")],
    )
    .await;
    let id = crate::common::ops::snapshot(&s.channel, "target").await;
    crate::common::ops::habitat(&s.channel, "pre-restore state")
        .await
        .unwrap();
    let habitats = crate::common::ops::habitat_names(&s.channel).await;
    let r = crate::common::ops::restore(&s.channel, &id).await.unwrap();
    assert!(r.rolled_back);
    let checks = &r.report.as_ref().unwrap().checks;
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["pre_swap:assemble_durable"], "{checks:?}");
    assert!(
        checks
            .iter()
            .any(|c| c.name.starts_with("pre_swap:scan:") && c.passed),
        "the checks ran while the file was written back"
    );
    assert_eq!(
        crate::common::ops::habitat_names(&s.channel).await,
        habitats,
        "the live data is the pre-restore state"
    );
    let ev = event_at(&s.channel, r.event_seq).await;
    assert!(ev.restore.as_ref().unwrap().rolled_back);
    crate::common::ops::stop(s).await;
}

/// Replaces the snapshot directory by a file: every write into it fails (ENOTDIR), even as root.
pub(crate) fn break_snapshot_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    let dir = data_dir.join("snapshots");
    let aside = data_dir.join("snapshots.aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    aside
}

fn repair_snapshot_dir(data_dir: &std::path::Path, aside: &std::path::Path) {
    let dir = data_dir.join("snapshots");
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(aside, &dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_snapshot_storage_required_refuses_and_best_effort_reports() {
    for policy in [SnapshotPolicy::Required, SnapshotPolicy::BestEffort] {
        let tmp = crate::common::data_dir_with_reference();
        let mut cfg = test_config(tmp.path());
        cfg.snapshot_policy = policy;
        let s = TestServer::start_with(cfg).await;
        let mut c = s.entity();
        let aside = break_snapshot_dir(tmp.path());
        let r = c
            .delete_measure(pb::DeleteMeasureRequest {
                measure_id: 10,
                request_id: String::new(),
            })
            .await;
        let status = s
            .snapshots()
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.state,
            pb::SnapshotState::Degraded as i32,
            "{policy:?}"
        );
        assert!(!status.reason.is_empty());
        let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
        let h = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "lnrs.v1.SnapshotStorage".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            h.status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        match policy {
            SnapshotPolicy::Required => {
                let e = r.unwrap_err();
                assert_refused(&e, Code::FailedPrecondition, "PRE_DELETE_SNAPSHOT_FAILED");
                assert!(
                    measure_ids(&s.channel).await.contains(&10),
                    "nothing changed"
                );
            }
            _ => {
                let out = r.unwrap().into_inner().outcome.unwrap();
                assert!(out.snapshot_id.is_empty());
                assert!(!out.snapshot_skipped_reason.is_empty());
                assert!(!measure_ids(&s.channel).await.contains(&10));
                let ev = event_at(&s.channel, out.event_seq).await;
                assert_eq!(
                    ev.delete.as_ref().unwrap().snapshot_skipped_reason,
                    out.snapshot_skipped_reason
                );
            }
        }
        // Storage comes back: the next delete snapshots again and health recovers.
        repair_snapshot_dir(tmp.path(), &aside);
        let out = c
            .delete_measure(pb::DeleteMeasureRequest {
                measure_id: 11,
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .outcome
            .unwrap();
        assert!(!out.snapshot_id.is_empty());
        let status = s
            .snapshots()
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.state, pb::SnapshotState::Enabled as i32);
        let kinds: Vec<i32> = events_after(&s.channel, 0)
            .await
            .iter()
            .map(|e| e.kind)
            .collect();
        assert!(
            kinds.contains(&(pb::EventKind::StorageDegraded as i32))
                && kinds.contains(&(pb::EventKind::StorageRecovered as i32)),
            "{policy:?}: {kinds:?}"
        );
        s.stop().await;
    }
}

/// Writers keep committing while deletes (each with a snapshot) run; every pre-delete snapshot,
/// restored, must contain exactly the measures acknowledged before its delete began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_commits_under_concurrent_writes() {
    let s = TestServer::start().await;
    let writer = {
        let mut c = s.entity();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let m = c
                    .create_measure(pb::CreateMeasureRequest {
                        measure: Some(pb::Measure {
                            measure: format!("concurrent {i}"),
                            core_supplementary: "Core (BNG)".into(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                acked.push((m.event_seq, m.measure.unwrap().measure_id));
            }
            acked
        })
    };
    let mut deletes = Vec::new();
    let mut c = s.entity();
    for id in 100..106 {
        let out = c
            .delete_measure(pb::DeleteMeasureRequest {
                measure_id: id,
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .outcome
            .unwrap();
        deletes.push((id, out));
    }
    let acked = writer.await.unwrap();
    let mut snaps = s.snapshots();
    for (id, out) in deletes {
        let r = snaps
            .restore_snapshot(restore_req(&out.snapshot_id))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.rolled_back);
        let present = measure_ids(&s.channel).await;
        assert!(
            present.contains(&id),
            "the snapshot precedes the delete of {id}"
        );
        for (seq, m) in &acked {
            // Commits ordered before the delete's event are in; later ones are not.
            assert_eq!(
                present.contains(m),
                *seq < out.event_seq,
                "measure {m} (seq {seq}) vs delete seq {}",
                out.event_seq
            );
        }
    }
    s.stop().await;
}

/// One read (the delete impact of area 5, read in one transaction across tables) while a
/// restore swaps the database: it must come wholly from the old or the new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_restore_never_see_a_mixture() {
    use pb::get_delete_impact_request::Target;
    let s = TestServer::start().await;
    let mut snaps = s.snapshots();
    let mut c = s.entity();
    let counts = |r: pb::GetDeleteImpactResponse| -> (usize, usize) {
        let n = |t: &str| {
            r.tables
                .iter()
                .find(|x| x.table == t)
                .map_or(0, |x| x.rows.len())
        };
        (n("habitat_creation_area"), n("species_area_priority"))
    };
    let impact =
        |c: &mut pb::entity_service_client::EntityServiceClient<tonic::transport::Channel>| {
            let mut c = c.clone();
            async move {
                c.get_delete_impact(pb::GetDeleteImpactRequest {
                    target: Some(Target::AreaId(5)),
                })
                .await
            }
        };
    let a_counts = counts(impact(&mut c).await.unwrap().into_inner());
    let a = snaps
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "A".into(),
            labels: Default::default(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;
    // State B: one HCA link and one SAP link of area 5 fewer.
    for t in [
        pb::LinkType::HabitatCreationArea,
        pb::LinkType::SpeciesAreaPriority,
    ] {
        let l = c
            .list_links(pb::ListLinksRequest {
                link_type: t as i32,
                area_id: 5,
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .links
            .remove(0);
        c.delete_link(pb::DeleteLinkRequest {
            link: Some(l),
            request_id: String::new(),
        })
        .await
        .unwrap();
    }
    let b_counts = counts(impact(&mut c).await.unwrap().into_inner());
    assert_eq!((b_counts.0 + 1, b_counts.1 + 1), a_counts);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let mut c = c.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = c
                    .get_delete_impact(pb::GetDeleteImpactRequest {
                        target: Some(Target::AreaId(5)),
                    })
                    .await
                {
                    seen.insert(counts(r.into_inner()));
                }
            }
            seen
        })
    };
    let r = snaps
        .restore_snapshot(restore_req(&a))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.rolled_back);
    for _ in 0..20 {
        impact(&mut c).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(seen.contains(&b_counts), "the reader ran before the swap");
    for pair in &seen {
        assert!(
            *pair == a_counts || *pair == b_counts,
            "mixed state observed: {pair:?} (A {a_counts:?}, B {b_counts:?})"
        );
    }
    s.stop().await;
}

/// GetX and ListX are served from a cache keyed by the data generation: after every
/// acknowledged update, delete and restore the very next Get and List must see it, and a
/// concurrent reader of both must never see a version go backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_lists_are_never_stale_across_updates_deletes_and_restores() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    let habitat = |id: i32, v: u32| pb::Habitat {
        habitat_id: id,
        habitat: format!("version {v:04}"),
    };
    let get = |mut c: pb::entity_service_client::EntityServiceClient<_>, id: i32| async move {
        c.get_habitat(pb::GetHabitatRequest { habitat_id: id })
            .await
            .map(|r| r.into_inner().habitat.unwrap().habitat)
    };
    // The same page every time (same search, order and size), so it is cached between changes.
    let list = |mut c: pb::entity_service_client::EntityServiceClient<_>| async move {
        let page = c
            .list_habitats(pb::ListHabitatsRequest {
                page_size: 10,
                search: "version ".into(),
                order_by: "habitat desc".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.habitats
            .into_iter()
            .map(|h| h.habitat)
            .collect::<Vec<_>>()
    };
    let id = c
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(habitat(0, 0)),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .habitat
        .unwrap()
        .habitat_id;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (c, stop) = (s.entity(), stop.clone());
        tokio::spawn(async move {
            let (mut last, mut reads) = (String::new(), 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = get(c.clone(), id).await.unwrap();
                assert!(v >= last, "a read went back from {last} to {v}");
                let listed = list(c.clone()).await;
                assert_eq!(listed.len(), 1, "{listed:?}");
                assert!(listed[0] >= v, "a list went back from {v} to {}", listed[0]);
                (last, reads) = (listed[0].clone(), reads + 1);
            }
            reads
        })
    };
    for v in 1..=40 {
        assert_eq!(
            get(c.clone(), id).await.unwrap(),
            format!("version {:04}", v - 1)
        );
        c.update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(habitat(id, v)),
            update_mask: None,
            request_id: String::new(),
        })
        .await
        .unwrap();
        assert_eq!(get(c.clone(), id).await.unwrap(), format!("version {v:04}"));
        assert_eq!(list(c.clone()).await, [format!("version {v:04}")]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);

    let snapshot_id = c
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap()
        .snapshot_id;
    assert_eq!(get(c.clone(), id).await.unwrap_err().code(), Code::NotFound);
    assert!(list(c.clone()).await.is_empty());
    s.snapshots()
        .restore_snapshot(restore_req(&snapshot_id))
        .await
        .unwrap();
    assert_eq!(get(c.clone(), id).await.unwrap(), "version 0040");
    assert_eq!(list(c.clone()).await, ["version 0040"]);
    s.stop().await;
}
