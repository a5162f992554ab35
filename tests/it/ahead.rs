//! Capture ahead ([speed]): a delete whose pre-state was captured in the background reuses that
//! capture, and the reused capture is byte for byte the file at the delete's start.
//!
//! The server runs with `snapshot_capture_verify`: every reuse is compared (BLAKE3 of the whole
//! file) with a capture taken the old way — CHECKPOINT and a plain read of the whole file — at
//! the delete's start, and so is every delete's own capture (which refreshes the previous
//! capture's buffer, copying only the blocks that differ); a mismatch is counted in GetStatus. A seeded random schedule interleaves writes
//! and deletes with the background capture in every phase: not started (back to back), running
//! (the next request arrives while GetStatus says CAPTURING: a write cancels it, a delete
//! adopts it), and ready. Invariants: no mismatch; reuses happened; every pre-delete snapshot
//! deep-verifies (its content equals the fingerprints of the state the delete started from).
//! The fault cases of the background step are in the fault campaign (`ahead.*` fail points,
//! plus the snapshot commit points, which the background step also reaches).

use std::time::{Duration, Instant};

use lnrs::pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::common::{data_dir_with_reference, ops, test_config, TestServer};

/// How a step meets the background capture.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Right after the previous request.
    BackToBack,
    /// As soon as GetStatus says a capture is running (if one is seen in time).
    Capturing,
    /// Once the capture of the current state is ready.
    Ready,
}

async fn ahead_status(ch: &Channel) -> (pb::CaptureAheadStatus, u64) {
    let s = ops::status(ch).await;
    (s.capture_ahead.unwrap_or_default(), s.event_head_seq)
}

/// Waits (bounded) for the moment `when` describes; only GetStatus runs meanwhile.
async fn wait_for(ch: &Channel, when: When) {
    use pb::CaptureAheadState as S;
    let want = match when {
        When::BackToBack => return,
        When::Capturing => S::Capturing,
        When::Ready => S::Ready,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (a, head) = ahead_status(ch).await;
        let state = S::try_from(a.state).unwrap_or(S::Unspecified);
        if a.event_seq == head && (state == want || state == S::Ready) {
            return;
        }
        assert_ne!(state, S::Failed, "capture ahead failed: {a:?}");
        assert!(Instant::now() < deadline, "no {want:?} in time: {a:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_captures_equal_the_file_at_the_delete_start_across_random_interleavings() {
    let seed: u64 = std::env::var("LNRS_AHEAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_A4EA);
    eprintln!("capture-ahead interleavings: seed {seed} (LNRS_AHEAD_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.snapshot_capture_verify = true;
    // Longer than a request and its answer: back-to-back steps find the capture of an earlier
    // state still there (it must not be reused), while waiting steps see a fresh one.
    cfg.snapshot_capture_idle = Duration::from_millis(40);
    cfg.retention_keep_last = 1000;
    let s = TestServer::start_with(cfg).await;
    let ch = s.channel.clone();
    let mut entity = s.entity();

    let mut habitats: Vec<i32> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for step in 0..60 {
        let when = match rng.random_range(0..3) {
            0 => When::BackToBack,
            1 => When::Capturing,
            _ => When::Ready,
        };
        wait_for(&ch, when).await;
        let delete = habitats.len() > 2 && rng.random_bool(0.45);
        if delete {
            let id = habitats.swap_remove(rng.random_range(0..habitats.len()));
            let out = entity
                .delete_habitat(pb::DeleteHabitatRequest {
                    habitat_id: id,
                    request_id: String::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("step {step} ({when:?}): delete {id}: {e:?}"))
                .into_inner()
                .outcome
                .unwrap();
            assert!(!out.snapshot_id.is_empty(), "step {step}: no snapshot");
            taken.push(out.snapshot_id);
        } else if !habitats.is_empty() && rng.random_bool(0.3) {
            let id = habitats[rng.random_range(0..habitats.len())];
            entity
                .update_habitat(pb::UpdateHabitatRequest {
                    habitat: Some(pb::Habitat {
                        habitat_id: id,
                        habitat: format!("renamed at step {step}"),
                    }),
                    update_mask: None,
                    request_id: String::new(),
                })
                .await
                .unwrap();
        } else {
            let (id, _) = ops::habitat(&ch, &format!("ahead {seed} {step}"))
                .await
                .unwrap();
            habitats.push(id);
        }
    }

    let (a, _) = ahead_status(&ch).await;
    eprintln!("capture ahead after the schedule: {a:?}");
    assert_eq!(
        a.mismatches, 0,
        "a reused or refreshed capture differed from the file: {a:?}"
    );
    assert!(a.reused >= 3, "too few reuses to show anything: {a:?}");
    assert!(
        a.fallbacks >= 3,
        "too few own captures to show anything: {a:?}"
    );
    assert_eq!(
        a.verified,
        a.reused + a.fallbacks,
        "every reuse, and every delete's own (refreshed) capture, is verified: {a:?}"
    );
    assert!(
        a.cancelled > 0,
        "no request ever met a capture still reading: {a:?}"
    );
    for id in &taken {
        let report = ops::verify_deep(&ch, id).await;
        assert!(report.passed, "{id}: {report:?}");
    }
    s.stop().await;
}

/// Without `snapshot_capture_verify`: a delete after the capture is ready reuses it; a delete
/// right after another delete, or right after a write, finds no capture of its state and
/// captures the file itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_capture_is_reused_and_a_write_outdates_it() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    // Long enough that two requests in a row never leave the writer idle that long.
    cfg.snapshot_capture_idle = Duration::from_secs(2);
    let s = TestServer::start_with(cfg).await;
    let ch = s.channel.clone();
    let mut entity = s.entity();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(ops::habitat(&ch, &format!("h{i}")).await.unwrap().0);
    }
    let delete = |id: i32| pb::DeleteHabitatRequest {
        habitat_id: id,
        request_id: String::new(),
    };
    wait_for(&ch, When::Ready).await;
    let (before, _) = ahead_status(&ch).await;
    entity.delete_habitat(delete(ids[0])).await.unwrap();
    let (after, _) = ahead_status(&ch).await;
    assert_eq!(after.reused, before.reused + 1, "{before:?} → {after:?}");

    // Back to back: the previous delete changed the state and nothing was captured since.
    entity.delete_habitat(delete(ids[1])).await.unwrap();
    let (b2b, _) = ahead_status(&ch).await;
    assert_eq!(b2b.reused, after.reused, "{after:?} → {b2b:?}");
    assert_eq!(b2b.fallbacks, after.fallbacks + 1, "{after:?} → {b2b:?}");

    // A ready capture, then a write: the capture is of an older state and must not be reused.
    wait_for(&ch, When::Ready).await;
    let (ready, _) = ahead_status(&ch).await;
    entity
        .update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: ids[2],
                habitat: "renamed after the capture".into(),
            }),
            update_mask: None,
            request_id: String::new(),
        })
        .await
        .unwrap();
    entity.delete_habitat(delete(ids[2])).await.unwrap();
    let (outdated, _) = ahead_status(&ch).await;
    assert_eq!(outdated.reused, ready.reused, "{ready:?} → {outdated:?}");
    assert_eq!(
        outdated.fallbacks,
        ready.fallbacks + 1,
        "{ready:?} → {outdated:?}"
    );
    s.stop().await;
}
