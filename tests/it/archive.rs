//! [data-io] snapshot save and load between servers: ExportSnapshot on server A, ImportSnapshot
//! on server B, restore on B — B's live fingerprints equal the snapshot's on A. A damaged,
//! truncated, foreign or oversize upload is refused with its reason, adds nothing, and leaves
//! no staging file behind.

use std::path::Path;

use lnrs::pb;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{assert_refused, data_dir_with_reference, test_config, TestServer};

/// Downloads snapshot `id` ("" = newest) as one file's bytes; checks the announced BLAKE3.
pub(crate) async fn save(ch: &Channel, id: &str) -> (String, Vec<u8>) {
    let mut stream = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .export_snapshot(pb::ExportSnapshotRequest {
            snapshot_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut bytes, mut sid, mut hash) = (Vec::new(), String::new(), String::new());
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        assert_eq!(m.offset, bytes.len() as u64, "chunks arrive in order");
        assert!(m.data.len() <= 1 << 20, "bounded chunks");
        bytes.extend_from_slice(&m.data);
        sid = m.snapshot_id;
        if !m.file_blake3.is_empty() {
            hash = m.file_blake3;
            assert_eq!(m.total_bytes, bytes.len() as u64);
        }
    }
    assert_eq!(hash, blake3::hash(&bytes).to_hex().as_str());
    (sid, bytes)
}

/// Uploads `bytes` in 256 KiB pieces, declaring `declared` as the total.
pub(crate) async fn load(
    ch: &Channel,
    bytes: &[u8],
    declared: u64,
) -> Result<pb::ImportSnapshotResponse, tonic::Status> {
    let msgs: Vec<pb::ImportSnapshotRequest> = bytes
        .chunks(256 << 10)
        .enumerate()
        .map(|(i, c)| pb::ImportSnapshotRequest {
            data: c.to_vec(),
            total_bytes: if i == 0 { declared } else { 0 },
        })
        .collect();
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .import_snapshot(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// (table, rows, fingerprint) of a snapshot.
async fn tables_of(ch: &Channel, id: &str) -> Vec<(String, i64, String)> {
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .tables
        .into_iter()
        .map(|t| (t.table, t.rows, t.hash_sum))
        .collect()
}

async fn snapshot_ids(ch: &Channel) -> Vec<String> {
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .list_snapshots(pb::ListSnapshotsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshots
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect()
}

/// No upload or save leaves a file in the store's scratch directory (once the capture ahead,
/// whose block writes stage files there while it runs, has settled).
async fn scratch_is_empty(ch: &tonic::transport::Channel, data_dir: &Path) {
    crate::common::ops::wait_capture_ahead_settled(ch).await;
    let tmp = data_dir.join("snapshots").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_on_one_server_loads_and_restores_on_another() {
    let a = TestServer::start().await;
    // A measure only A has: B has it after the restore.
    let made = crate::common::ops::measure(&a.channel, "carried over").await;
    let snap = crate::common::ops::snapshot(&a.channel, "to be saved").await;
    let (sid, bytes) = save(&a.channel, &snap).await;
    assert_eq!(sid, snap);

    let b = TestServer::start().await;
    let loaded = load(&b.channel, &bytes, bytes.len() as u64).await.unwrap();
    assert!(!loaded.already_present);
    assert!(
        loaded.report.as_ref().unwrap().passed,
        "deep-verified before added"
    );
    assert!(snapshot_ids(&b.channel).await.contains(&snap));
    // Loading the same file again adds nothing.
    let again = load(&b.channel, &bytes, bytes.len() as u64).await.unwrap();
    assert!(again.already_present);

    let restored = crate::common::ops::restore(&b.channel, &snap)
        .await
        .unwrap();
    assert!(!restored.rolled_back, "{:?}", restored.rollback_reason);
    // B's live fingerprints: a snapshot of B now, table by table against A's.
    let now_on_b = crate::common::ops::snapshot(&b.channel, "after the restore").await;
    assert_eq!(
        tables_of(&b.channel, &now_on_b).await,
        tables_of(&a.channel, &snap).await
    );
    let mut entity = b.entity();
    let m = entity
        .get_measure(pb::GetMeasureRequest { measure_id: made })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.measure.unwrap().measure, "carried over");
    scratch_is_empty(&a.channel, &a.data_dir).await;
    scratch_is_empty(&b.channel, &b.data_dir).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshot_files_are_refused_with_a_reason_and_change_nothing() {
    let dir = data_dir_with_reference();
    let mut cfg = test_config(dir.path());
    cfg.import_max_bytes = 64 << 20;
    let s = TestServer::start_with(cfg).await;
    let snap = crate::common::ops::snapshot(&s.channel, "source").await;
    let (_, bytes) = save(&s.channel, &snap).await;
    let before = snapshot_ids(&s.channel).await;

    // Truncated: fewer bytes than declared; and a file cut short that declares its cut size.
    let cut = &bytes[..bytes.len() / 2];
    let e = load(&s.channel, cut, bytes.len() as u64).await.unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "UPLOAD_TRUNCATED");
    let e = load(&s.channel, cut, cut.len() as u64).await.unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "SNAPSHOT_ARCHIVE_INVALID");
    // One byte flipped inside a block.
    let mut damaged = bytes.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x55;
    let e = load(&s.channel, &damaged, damaged.len() as u64)
        .await
        .unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "SNAPSHOT_ARCHIVE_INVALID");
    // The wrong file type.
    let e = load(&s.channel, b"PK\x03\x04 not a snapshot at all", 0)
        .await
        .unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "SNAPSHOT_ARCHIVE_INVALID");
    // Over the limit: refused from the declared size, and from what arrives.
    let big = vec![0u8; (64 << 20) + 1];
    let e = load(&s.channel, &big[..1], big.len() as u64)
        .await
        .unwrap_err();
    assert_refused(&e, Code::ResourceExhausted, "UPLOAD_TOO_LARGE");
    let e = load(&s.channel, &big, 0).await.unwrap_err();
    assert_refused(&e, Code::ResourceExhausted, "UPLOAD_TOO_LARGE");
    // A message no client should see a path in.
    assert!(!e.message().contains(&*dir.path().to_string_lossy()));

    assert_eq!(snapshot_ids(&s.channel).await, before, "nothing was added");
    scratch_is_empty(&s.channel, dir.path()).await;
    s.stop().await;
}
