//! [recovery] regression tests: every window issue 11 found where an acknowledged write could
//! be lost around a restore or at start-up, reproduced against the real binary (fail points
//! armed through `LNRS_FAILPOINTS` in a child `lnrs serve`, so no fault leaks into other tests
//! of this binary) or an in-process server, and checked closed.

use std::time::Duration;

use crate::common::ops::{
    assert_dense_log, eventually, habitat, habitat_names, health, restore, snapshot, snapshots,
    status, stop,
};
use crate::common::{assert_refused, data_dir_with_reference, reason, ChildServer};
use lnrs::pb;
use tonic::Code;

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

fn journal(dir: &std::path::Path) -> bool {
    dir.join("restore.journal").exists()
}

/// Window 1: an error (not a crash) after the journal is written returned with the journal on
/// disk; the next start then "repaired" the live file and discarded every write acknowledged
/// in between. Now: when RestoreSnapshot returns, the journal is resolved, the writer's state
/// is the live file's, and later writes survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_fails_mid_swap_resolves_its_journal_and_later_writes_survive() {
    for point in [
        "swap.before_rename",
        "swap.after_rename",
        "restore.after_swap",
    ] {
        let tmp = data_dir_with_reference();
        let spec = format!("{point}=error");
        let s = ChildServer::start(
            tmp.path(),
            "127.0.0.1:0",
            &[],
            &[("LNRS_FAILPOINTS", &spec)],
        )
        .await;
        habitat(&s.channel, "before the snapshot").await.unwrap();
        let target = snapshot(&s.channel, "target").await;
        habitat(&s.channel, "after the snapshot").await.unwrap();
        let r = restore(&s.channel, &target).await.unwrap();
        assert!(r.rolled_back, "{point}: the failed swap was undone");
        assert!(
            !journal(tmp.path()),
            "{point}: no journal once the call returned"
        );
        let st = status(&s.channel).await;
        assert_eq!(
            st.event_head_seq, r.event_seq,
            "{point}: the head is the restore's event"
        );
        let (_, seq) = habitat(&s.channel, "acknowledged after the failed restore")
            .await
            .unwrap();
        assert_eq!(seq, r.event_seq + 1, "{point}: seqs continue, none reused");
        stop(s).await;

        let s = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
        let names = habitat_names(&s.channel).await;
        for h in [
            "before the snapshot",
            "after the snapshot",
            "acknowledged after the failed restore",
        ] {
            assert!(names.contains(h), "{point}: {h} survives the restart");
        }
        let log = assert_dense_log(&s.channel).await;
        assert_eq!(log.last().unwrap().seq, seq, "{point}");
        stop(s).await;
    }
}

/// Windows 2 and 4: a restore that can be neither completed nor undone leaves its journal;
/// the server then refuses reads and writes (nothing is acknowledged that the next start would
/// undo), says why in health and GetStatus (window 5), keeps the journal's snapshots pinned,
/// and refuses to start while the snapshot store it needs is unreadable — naming the cause and
/// the way out. With the store back, the start resolves the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_restore_fences_the_server_and_the_next_start_resolves_it() {
    let tmp = data_dir_with_reference();
    let faults = "restore.post_swap_verify=error,restore.rollback.before_rename=error";
    let s = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &[],
        &[("LNRS_FAILPOINTS", faults)],
    )
    .await;
    habitat(&s.channel, "kept").await.unwrap();
    let target = snapshot(&s.channel, "target").await;
    habitat(&s.channel, "after the target").await.unwrap();
    let e = restore(&s.channel, &target).await.unwrap_err();
    assert_refused(&e, Code::Unavailable, "DATABASE_UNAVAILABLE");
    assert!(journal(tmp.path()), "the journal stays for the next start");
    eventually("health NOT_SERVING", Duration::from_secs(10), || {
        let ch = s.channel.clone();
        async move { health(&ch, "").await == NOT_SERVING }
    })
    .await;
    let st = status(&s.channel).await;
    assert!(!st.database_available);
    assert!(
        st.database_reason.contains("restart"),
        "{}",
        st.database_reason
    );
    let w = habitat(&s.channel, "refused").await.unwrap_err();
    assert_refused(&w, Code::Unavailable, "DATABASE_UNAVAILABLE");
    // Window 12: a closed database is not reported as WAL_NOT_EMPTY.
    let c = snapshots(&s.channel)
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "while fenced".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&c), "DATABASE_UNAVAILABLE");
    // Window 4: nothing the journal names can be removed while it is pending: DeleteSnapshot
    // and retention are refused (the snapshots are pinned too).
    let d = snapshots(&s.channel)
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: target.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&d), "DATABASE_UNAVAILABLE");
    let before = snapshots(&s.channel)
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert!(before.iter().any(|x| x.snapshot_id == target));
    // Retention is refused before it removes anything (found by the soak: it used to remove
    // snapshots, then fail to record it, answering DATABASE_UNAVAILABLE as if nothing changed).
    let r = snapshots(&s.channel)
        .apply_retention(pb::ApplyRetentionRequest {
            keep_last: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&r), "DATABASE_UNAVAILABLE");
    let after = snapshots(&s.channel)
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(after.len(), before.len(), "nothing was removed");
    let _ = stop(s).await;

    // Window 2: the store the journal needs is unreadable: refuse to start, say why.
    let dir = tmp.path().join("snapshots");
    let aside = tmp.path().join("snapshots.aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let refused = ChildServer::try_start(tmp.path(), "127.0.0.1:0", &[], &[])
        .await
        .err()
        .expect("a server with an unresolvable journal must not serve");
    assert!(refused.status.is_some_and(|s| !s.success()), "{refused}");
    assert!(
        refused.stderr.contains("snapshot store") && refused.stderr.contains("start again"),
        "names the cause and the way out: {refused}"
    );
    assert!(journal(tmp.path()));
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();

    let s = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
    assert!(!journal(tmp.path()));
    assert_eq!(health(&s.channel, "").await, SERVING);
    let names = habitat_names(&s.channel).await;
    assert!(
        names.contains("kept") && names.contains("after the target"),
        "the pre-restore state is back"
    );
    let log = assert_dense_log(&s.channel).await;
    let last = log.last().unwrap();
    assert_eq!(last.kind, pb::EventKind::RestorePerformed as i32);
    assert!(last.restore.as_ref().unwrap().rolled_back);
    stop(s).await;
}

/// Window 3: a torn or empty journal stopped the server at start-up. The journal is written
/// atomically now, so one that does not parse proves no swap followed it: start with the live
/// file and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_torn_journal_does_not_block_start_up() {
    for content in [&b""[..], &b"{\"target\":\"2026"[..]] {
        let tmp = data_dir_with_reference();
        std::fs::write(tmp.path().join("restore.journal"), content).unwrap();
        let s = ChildServer::start(tmp.path(), "127.0.0.1:0", &[], &[]).await;
        assert!(!journal(tmp.path()));
        habitat(&s.channel, "after").await.unwrap();
        let stderr = stop(s).await;
        assert!(stderr.contains("does not parse"), "{stderr}");
    }
}

/// A child server on `data_dir` with `fault` armed, and the error its delete of a habitat
/// named `name`, created just before, ends with.
async fn refused_delete(
    data_dir: &std::path::Path,
    fault: &str,
    name: &str,
) -> (ChildServer, tonic::Status) {
    let s = ChildServer::start(data_dir, "127.0.0.1:0", &[], &[("LNRS_FAILPOINTS", fault)]).await;
    let (id, _) = habitat(&s.channel, name).await.unwrap();
    let e = crate::common::ops::entity(&s.channel)
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: id,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    (s, e)
}

/// Window 12: a panic in the snapshot thread is INTERNAL, not SNAPSHOT_INJECTED_FAULT, and the
/// delete does not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_snapshot_thread_is_internal_and_deletes_nothing() {
    let tmp = data_dir_with_reference();
    let (s, e) = refused_delete(tmp.path(), "snapshot.after_capture=panic", "doomed").await;
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(habitat_names(&s.channel).await.contains("doomed"));
    stop(s).await;
}

/// A refused pre-delete snapshot leaves its cause in the server's log: CI once saw
/// PRE_DELETE_SNAPSHOT_FAILED ("database error") with nothing in stderr to say which error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pre_delete_snapshot_is_logged_with_its_cause() {
    let tmp = data_dir_with_reference();
    let (s, e) = refused_delete(tmp.path(), "snapshot.after_capture=error", "kept").await;
    assert_refused(&e, Code::FailedPrecondition, "PRE_DELETE_SNAPSHOT_FAILED");
    assert!(habitat_names(&s.channel).await.contains("kept"));
    let stderr = s.kill();
    let logged = stderr
        .lines()
        .find(|l| l.contains("the pre-delete snapshot failed"));
    let logged = logged.unwrap_or_else(|| panic!("no log line for the failure: {stderr}"));
    assert!(logged.contains("snapshot.after_capture"), "{logged}");
}

/// A subscriber from `head` on its own connection with small HTTP/2 windows, so that not
/// reading soon fills every buffer between it and the server. (The final status reaching a
/// subscriber whose buffer is full is tested on the hub itself: see `events::hub`.) (Small on purpose: with a
/// larger window, h2 — the client's own library — ends a connection that buffers hundreds of
/// small unread DATA frames with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames".)
async fn slow_subscriber(
    addr: std::net::SocketAddr,
    head: u64,
) -> tonic::Streaming<pb::WatchEventsResponse> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    pb::event_service_client::EventServiceClient::new(ch)
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(head),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A habitat name long enough that each event's DATA frame exceeds h2's small-frame
/// threshold (256 bytes): unread frames then never exhaust the client's framing budget.
fn big_name(i: usize) -> String {
    format!("habitat {i} {}", "x".repeat(300))
}

/// The next stream message, bounded.
async fn next(
    s: &mut tonic::Streaming<pb::WatchEventsResponse>,
) -> Result<Option<pb::WatchEventsResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(60), s.message())
        .await
        .expect("a stream message within 60 s")
}

/// Window 6: a lagging subscriber whose next seq was compacted away got a silent gap. Now it
/// gets OUT_OF_RANGE START_POSITION_COMPACTED with first_available_seq — never a gap — and
/// ListEvents from 0 starts at the oldest retained event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_never_skips_compacted_events_silently() {
    let tmp = data_dir_with_reference();
    let mut cfg = crate::common::test_config(tmp.path());
    cfg.event_ring_capacity = 16;
    cfg.event_retention_keep_last = Some(20);
    let s = crate::common::TestServer::start_with(cfg).await;
    let head = status(&s.channel).await.event_head_seq;
    let mut stream = slow_subscriber(s.addr, head).await;
    // The subscriber reads nothing while 1500 events are written: it falls behind the ring,
    // its buffers fill, and compaction keeps only ~20 events.
    for i in 0..1500 {
        habitat(&s.channel, &big_name(i)).await.unwrap();
    }
    let mut expected = head + 1;
    let end = loop {
        match next(&mut stream).await {
            Ok(Some(m)) => {
                if let Some(pb::watch_events_response::Item::Event(e)) = m.item {
                    assert_eq!(e.seq, expected, "no gap, no duplicate");
                    expected += 1;
                }
            }
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::OutOfRange, "{end:?}");
    assert_eq!(reason(&end), "START_POSITION_COMPACTED");
    let first: u64 = crate::common::error_meta(&end, "first_available_seq")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > expected,
        "events {expected}..{first} were compacted before delivery"
    );

    let page = s
        .events()
        .list_events(pb::ListEventsRequest {
            start_after_seq: 0,
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.events[0].seq, page.first_available_seq,
        "0 = the oldest retained"
    );
    s.stop().await;
}

/// Window 7a: a request id reused on a different RPC was replayed with the first RPC's outcome
/// (the server never knew the RPC name, so every Event.rpc was empty too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_on_another_rpc_is_refused_not_replayed() {
    let s = crate::common::TestServer::start().await;
    let mut c = s.entity();
    let first = c
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: 5,
            request_id: "x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = c
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 5,
            request_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    assert!(crate::common::measure_ids(&s.channel).await.contains(&5));
    let ev = crate::common::event_at(&s.channel, first.outcome.unwrap().event_seq).await;
    assert_eq!(ev.rpc, "/lnrs.v1.EntityService/DeleteHabitat");
    s.stop().await;
}

/// Window 7b: map fields re-encoded in random order, so an identical retry of CreateSnapshot
/// with labels could be refused as REQUEST_ID_REUSED. The fingerprint is of a canonical form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_retries_with_labels_replay() {
    let s = crate::common::TestServer::start().await;
    let labels: std::collections::BTreeMap<String, String> = (0..12)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for attempt in 0..6 {
        let r = snapshots(&s.channel)
            .create_snapshot(pb::CreateSnapshotRequest {
                description: "labelled".into(),
                labels: labels.clone(),
                request_id: "same-request".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.replayed, attempt > 0);
        ids.insert(r.snapshot.unwrap().snapshot_id);
    }
    assert_eq!(ids.len(), 1);
    s.stop().await;
}

/// Window 7c: request ids are scoped to the calling principal when auth is on, and the request
/// log is pruned (here by count) so it does not grow without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_per_principal_and_pruned() {
    let tmp = data_dir_with_reference();
    let mut cfg = crate::common::test_config(tmp.path());
    cfg.tokens = vec![
        lnrs::config::TokenEntry::new("alice-token-0123456789", "editor"),
        lnrs::config::TokenEntry::new("bob-token-0123456789ab", "editor"),
    ];
    cfg.request_log_keep_last = 3;
    cfg.maintenance_interval = Duration::from_millis(50);
    let s = crate::common::TestServer::start_with(cfg).await;
    let create = |token: &'static str, id: &'static str| {
        let ch = s.channel.clone();
        async move {
            let mut req = tonic::Request::new(pb::CreateHabitatRequest {
                habitat: Some(pb::Habitat {
                    habitat: "same".into(),
                    ..Default::default()
                }),
                request_id: id.into(),
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            crate::common::ops::entity(&ch)
                .create_habitat(req)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let a = create("alice-token-0123456789", "r1").await;
    let b = create("bob-token-0123456789ab", "r1").await;
    assert!(!a.replayed && !b.replayed, "two callers, two requests");
    assert_ne!(a.habitat.unwrap().habitat_id, b.habitat.unwrap().habitat_id);
    assert!(create("alice-token-0123456789", "r1").await.replayed);
    for id in ["r2", "r3", "r4", "r5"] {
        create("alice-token-0123456789", id).await;
    }
    // Only the newest 3 ids are kept: r1 is forgotten and runs again.
    eventually("r1 pruned", Duration::from_secs(10), || async {
        !create("alice-token-0123456789", "r1").await.replayed
    })
    .await;
    s.stop().await;
}

/// Window 9: previews assembled into one fixed scratch path, so concurrent previews of one
/// snapshot truncated each other (INTERNAL); scratch files were never cleaned; any number of
/// full-database assemblies could run. Now each assembly has its own file, the number is
/// bounded (RESOURCE_EXHAUSTED with a retry hint beyond it), free space is checked, and
/// leftovers are removed at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_previews_are_bounded_and_never_internal() {
    let tmp = data_dir_with_reference();
    std::fs::create_dir_all(tmp.path().join("tmp")).unwrap();
    std::fs::write(tmp.path().join("tmp/preview-leftover.duckdb"), b"x").unwrap();
    let s = crate::common::TestServer::start_with(crate::common::test_config(tmp.path())).await;
    assert!(
        !tmp.path().join("tmp").exists(),
        "leftover scratch removed at start"
    );
    let id = snapshot(&s.channel, "previewed").await;
    let calls = (0..12).map(|_| {
        let ch = s.channel.clone();
        let id = id.clone();
        tokio::spawn(async move {
            snapshots(&ch)
                .preview_snapshot(pb::PreviewSnapshotRequest {
                    snapshot_id: id,
                    table: "measure".into(),
                    limit: 5,
                })
                .await
        })
    });
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().rows.len(), 5);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert_eq!(reason(&e), "SNAPSHOT_ASSEMBLY_BUSY");
                use tonic_types::StatusExt;
                assert!(e.get_error_details().retry_info().is_some());
            }
        }
    }
    assert!(ok >= 1);
    s.stop().await;

    let mut cfg = crate::common::test_config(tmp.path());
    cfg.scratch_reserve_bytes = u64::MAX / 2;
    let s = crate::common::TestServer::start_with(cfg).await;
    let e = snapshots(&s.channel)
        .preview_snapshot(pb::PreviewSnapshotRequest {
            snapshot_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::ResourceExhausted, "SNAPSHOT_SCRATCH_SPACE_LOW");
    s.stop().await;
}

/// Window 12: keep_within beyond the representable time range silently disabled the keep
/// rule; it is INVALID_ARGUMENT now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_within_beyond_the_time_range_is_invalid() {
    let s = crate::common::TestServer::start().await;
    let e = snapshots(&s.channel)
        .apply_retention(pb::ApplyRetentionRequest {
            keep_within: Some(prost_types::Duration {
                seconds: i64::MAX / 4,
                nanos: 0,
            }),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "INVALID_DURATION");
    s.stop().await;
}

/// A snapshot "target", a habitat created after it, and a snapshot "now" of that state.
async fn target_and_now(s: &crate::common::TestServer) -> (String, String) {
    let target = snapshot(&s.channel, "target").await;
    habitat(&s.channel, "after the target").await.unwrap();
    (target, snapshot(&s.channel, "now").await)
}

/// Flips a byte in the middle of each stored block named by `hashes`; returns each block's
/// file and its damaged bytes.
fn damage_blocks(
    data_dir: &std::path::Path,
    hashes: &[String],
) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let blocks = crate::snapshots::walk(&data_dir.join("snapshots").join("blocks"));
    hashes
        .iter()
        .map(|hash| {
            let victim = blocks
                .iter()
                .find(|p| p.to_string_lossy().contains(hash.as_str()))
                .unwrap();
            let mut bytes = std::fs::read(victim).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5a;
            std::fs::write(victim, &bytes).unwrap();
            (victim.clone(), bytes)
        })
        .collect()
}

/// Restores `target`, which must not roll back, and checks that its safety snapshot passed
/// the read-back and deep-verifies; returns the report and that read-back check.
async fn restore_with_readable_safety(
    s: &crate::common::TestServer,
    target: &str,
) -> (pb::IntegrityReport, pb::IntegrityCheck) {
    let r = restore(&s.channel, target).await.unwrap();
    let report = r.report.unwrap();
    assert!(!r.rolled_back, "{}: {report:?}", r.rollback_reason);
    let safety = report
        .checks
        .iter()
        .find(|c| c.name == "pre_swap:safety_snapshot_readable")
        .cloned()
        .unwrap();
    assert!(safety.passed, "{safety:?}");
    let check = crate::common::ops::verify_deep(&s.channel, &r.safety_snapshot_id).await;
    assert!(check.passed, "the safety snapshot verifies: {check:?}");
    (report, safety)
}

/// Window 11: a damaged stored block shared with the live file made the restore's safety
/// snapshot fail its read-back; the retry rewrote the block and passed, the target verified —
/// and the restore still rolled back, blaming "the assembled snapshot". The outcome now comes
/// from the checks that matter, and the repair is reported as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_shared_with_the_live_file_is_repaired_and_the_restore_proceeds() {
    use crate::snapshots::manifest_blocks;
    let s = crate::common::TestServer::start().await;
    let (target, now) = target_and_now(&s).await;
    let shared: Vec<String> = manifest_blocks(&s.data_dir, &target)
        .intersection(&manifest_blocks(&s.data_dir, &now))
        .cloned()
        .collect();
    let (victim, bytes) = damage_blocks(&s.data_dir, &shared[shared.len() - 1..]).remove(0);

    // Who finds the damage first is a race: the safety snapshot's read-back ("intact after
    // repair"), or the target check running alongside it, which marks the block suspect so
    // that the safety snapshot writes it again at once ("intact"). Either way the block is
    // repaired and the safety snapshot is readable.
    let (report, _) = restore_with_readable_safety(&s, &target).await;
    assert!(report.passed, "{report:?}");
    assert_ne!(
        std::fs::read(&victim).unwrap(),
        bytes,
        "the damaged block was written again"
    );
    assert!(!habitat_names(&s.channel).await.contains("after the target"));
    s.stop().await;
}

/// The safety snapshot's read-back skips the blocks the target's assembly has just read back,
/// but not the others: a damaged stored block that the live file has and the target does not
/// is still found by it, rewritten, and reported as a repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_only_the_live_file_has_is_found_by_the_safety_read_back() {
    use crate::snapshots::manifest_blocks;
    let s = crate::common::TestServer::start().await;
    let (target, now) = target_and_now(&s).await;
    let only_live: Vec<String> = manifest_blocks(&s.data_dir, &now)
        .difference(&manifest_blocks(&s.data_dir, &target))
        .cloned()
        .collect();
    assert!(!only_live.is_empty());
    let damaged = damage_blocks(&s.data_dir, &only_live);

    let (_, safety) = restore_with_readable_safety(&s, &target).await;
    assert!(safety.actual.contains("after repair"), "{safety:?}");
    assert!(
        damaged
            .iter()
            .any(|(path, bytes)| std::fs::read(path).unwrap() != *bytes),
        "a damaged block was written again"
    );
    s.stop().await;
}

/// Whether another process could lock the file for reading now (DuckDB's writer holds a
/// write lock on the live file, which keeps other processes out).
fn lockable_by_another_process(path: &std::path::Path) -> bool {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, sys\n\
             f = open(sys.argv[1], 'rb')\n\
             try:\n    fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB); print('free')\n\
             except OSError: print('locked')",
        )
        .arg(path)
        .output()
        .expect("python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {:?}", out.stderr);
    said.trim() == "free"
}

/// DuckDB keeps other processes (a DuckDB CLI, say) out of the live file with a POSIX record
/// lock, and those belong to the process: closing any handle on the file drops it. The
/// restore's checks close theirs before the writer reopens the file, but the capture and the
/// file hashes open and close the live file too, so the lock is already gone after start-up.
/// (The snapshot store's `flock` still keeps a second lnrs server out.) Kept, ignored, as the
/// reproduction for the fix: one handle on the live file for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known defect: the process drops DuckDB's lock on the live file (see the doc comment)"]
async fn the_live_file_stays_locked_against_other_processes() {
    let s = crate::common::TestServer::start().await;
    let live = s.data_dir.join("lnrs.duckdb");
    assert!(!lockable_by_another_process(&live), "locked while serving");
    let target = snapshot(&s.channel, "target").await;
    habitat(&s.channel, "after the target").await.unwrap();
    let r = restore(&s.channel, &target).await.unwrap();
    assert!(!r.rolled_back, "{}", r.rollback_reason);
    assert!(
        !lockable_by_another_process(&live),
        "locked after the restore"
    );
    habitat(&s.channel, "after the restore").await.unwrap();
    assert!(!lockable_by_another_process(&live), "locked after a write");
    s.stop().await;
}

/// Window 10: absolute paths, OS error text and DuckDB messages reached clients (error
/// metadata, integrity reports, StorageDegraded events, GetStatus). Scans every client-visible
/// field of a broken-storage scenario for the data directory's path and for SQL text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_or_sql_reaches_a_client_when_storage_breaks() {
    let s = crate::common::TestServer::start().await;
    let target = snapshot(&s.channel, "target").await;
    crate::snapshots::break_snapshot_dir(&s.data_dir);
    let mut seen: Vec<String> = Vec::new();
    let mut record = |what: &str, r: Result<String, tonic::Status>| match r {
        Ok(text) => seen.push(format!("{what}: {text}")),
        Err(e) => {
            use tonic_types::StatusExt;
            seen.push(format!(
                "{what}: {} {:?}",
                e.message(),
                e.get_error_details()
            ));
        }
    };
    let mut c = crate::common::ops::entity(&s.channel);
    let mut sn = snapshots(&s.channel);
    record(
        "delete",
        c.delete_measure(pb::DeleteMeasureRequest {
            measure_id: 3,
            request_id: String::new(),
        })
        .await
        .map(|r| format!("{r:?}")),
    );
    record(
        "create snapshot",
        sn.create_snapshot(pb::CreateSnapshotRequest {
            description: "x".into(),
            ..Default::default()
        })
        .await
        .map(|r| format!("{r:?}")),
    );
    for mode in [pb::VerifyMode::Quick, pb::VerifyMode::Deep] {
        record(
            "verify",
            sn.verify_snapshot(pb::VerifySnapshotRequest {
                source: pb::HistorySource::Local as i32,
                snapshot_id: target.clone(),
                mode: mode as i32,
            })
            .await
            .map(|r| format!("{r:?}")),
        );
    }
    record(
        "preview",
        sn.preview_snapshot(pb::PreviewSnapshotRequest {
            snapshot_id: target.clone(),
            ..Default::default()
        })
        .await
        .map(|r| format!("{r:?}")),
    );
    record(
        "restore",
        restore(&s.channel, &target).await.map(|r| format!("{r:?}")),
    );
    record(
        "list",
        sn.list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .map(|r| format!("{r:?}")),
    );
    record("status", Ok(format!("{:?}", status(&s.channel).await)));
    let events = crate::common::events_after(&s.channel, 0).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == pb::EventKind::StorageDegraded as i32),
        "the scenario degraded the storage"
    );
    record("events", Ok(format!("{events:?}")));
    let dir = s.data_dir.to_string_lossy().to_string();
    for text in &seen {
        assert!(
            !text.contains(&dir),
            "a server path reached the client: {text}"
        );
        for sql in [
            "SELECT ",
            "INSERT ",
            " FROM ",
            "ATTACH ",
            "CHECKPOINT",
            "Catalog Error",
            "Binder Error",
        ] {
            assert!(
                !text.contains(sql),
                "SQL or engine text reached the client ({sql}): {text}"
            );
        }
    }
    s.stop().await;
}
