//! Reading a replica back: the shipped log's head and its segments in order (a gap is an
//! error, never skipped), snapshots imported into a local store (every block checked before it
//! is kept, so a damaged remote block is reported and never used), remote verification, and
//! the rotating read drill.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::layout;
use super::remote::Remote;
use super::segment::Segment;
use super::ReplicaError;
use crate::snapshot::blocks::{check_named, decode_file};
use crate::snapshot::{IntegrityReport, Manifest, SnapshotId, SnapshotStore};

/// Block downloads in flight at once.
const FETCH_CONCURRENCY: usize = 8;

/// One shipped segment as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentRef {
    pub first: u64,
    pub last: u64,
    pub name: String,
    pub size: u64,
}

/// Shipped segments, ordered by first seq.
pub async fn segments(remote: &Remote) -> Result<Vec<SegmentRef>, ReplicaError> {
    let mut out: Vec<SegmentRef> = remote
        .list(layout::LOG)
        .await?
        .into_iter()
        .filter_map(|o| {
            let (first, last) = layout::parse_segment(&o.name)?;
            Some(SegmentRef {
                first,
                last,
                name: o.name,
                size: o.size,
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The newest event in `segments` (0: none).
pub fn head_of(segments: &[SegmentRef]) -> u64 {
    segments.iter().map(|s| s.last).max().unwrap_or(0)
}

/// The newest event in the shipped log (0: none).
pub async fn log_head(remote: &Remote) -> Result<u64, ReplicaError> {
    Ok(head_of(&segments(remote).await?))
}

/// The segments holding the events after `after`, up to `upto` (the shipped head when
/// `None`), in order and without a gap.
pub async fn read_log(
    remote: &Remote,
    after: u64,
    upto: Option<u64>,
) -> Result<Vec<Segment>, ReplicaError> {
    read_listed(remote, &segments(remote).await?, after, upto).await
}

/// [`read_log`] over a listing the caller already has.
pub async fn read_listed(
    remote: &Remote,
    all: &[SegmentRef],
    after: u64,
    upto: Option<u64>,
) -> Result<Vec<Segment>, ReplicaError> {
    let upto = upto.unwrap_or_else(|| head_of(all));
    let mut next = after + 1;
    let mut out = Vec::new();
    for r in all {
        let (first, last) = (r.first, r.last);
        if last < next || next > upto {
            continue;
        }
        if first > next {
            return Err(ReplicaError::Gap {
                from: next,
                to: first - 1,
            });
        }
        let bytes = remote.get_bytes(&r.name).await?;
        let mut seg = Segment::decode(&bytes, &r.name, (first, last))?;
        seg.events.retain(|e| e.seq >= next && e.seq <= upto);
        seg.first = seg.first.max(next);
        if last > upto {
            // Cut short: the fingerprints describe the segment's end, not `upto`.
            seg.fingerprints = None;
            seg.last = upto;
        }
        next = last.min(upto) + 1;
        out.push(seg);
    }
    if next <= upto {
        return Err(ReplicaError::Gap {
            from: next,
            to: upto,
        });
    }
    Ok(out)
}

/// Every snapshot in the replica, oldest first.
pub async fn snapshot_ids(remote: &Remote) -> Result<Vec<SnapshotId>, ReplicaError> {
    let mut ids: Vec<SnapshotId> = remote
        .list(layout::MANIFESTS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_manifest(&o.name))
        .collect();
    ids.sort();
    Ok(ids)
}

/// A remote manifest, checked.
pub async fn manifest(remote: &Remote, id: &SnapshotId) -> Result<Manifest, ReplicaError> {
    let bytes = remote.get_bytes(&layout::manifest(id)).await?;
    Ok(Manifest::decode(&bytes)?)
}

/// Downloads snapshot `id` into `store`: the manifest, and the blocks the store lacks (each
/// checked against the manifest before it is written). Returns the manifest.
pub async fn import_snapshot(
    remote: &Remote,
    store: &std::sync::Arc<SnapshotStore>,
    id: &SnapshotId,
) -> Result<Manifest, ReplicaError> {
    let file = remote.get_bytes(&layout::manifest(id)).await?;
    let m = Manifest::decode(&file)?;
    let missing = store.missing_blocks(&m);
    let fetched: HashMap<blake3::Hash, Bytes> = stream::iter(missing)
        .map(|r| async move {
            let bytes = remote.get_bytes(&layout::block(&r.hash)).await?;
            // Checked here too, so the error names the remote block.
            decode_file(&bytes, &r)
                .map_err(|f| ReplicaError::corrupt(format!("block {}", r.hash), f.to_string()))?;
            Ok::<_, ReplicaError>((r.hash, bytes))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let store = store.clone();
    let file = file.to_vec();
    tokio::task::spawn_blocking(move || {
        store.import(&file, |r| {
            fetched.get(&r.hash).map(|b| b.to_vec()).ok_or_else(|| {
                crate::snapshot::SnapshotError::corrupt(format!("block {}", r.hash), "not fetched")
            })
        })
    })
    .await
    .map_err(|e| ReplicaError::Unreachable(format!("import task: {e}")))?
    .map_err(ReplicaError::from)
}

/// Verifies a snapshot in the replica. Quick: its manifest reads and checks, and every block
/// it names is there. Deep: every block is downloaded and checked, then the snapshot is
/// assembled in `scratch` (a directory of its own) and checked like a local deep verify.
pub async fn verify(
    remote: &Remote,
    id: &SnapshotId,
    deep: bool,
    scratch: &Path,
) -> Result<IntegrityReport, ReplicaError> {
    let mut report = IntegrityReport::default();
    let start = Instant::now();
    let m = match manifest(remote, id).await {
        Ok(m) => m,
        Err(ReplicaError::NotFound(_)) => {
            return Err(ReplicaError::NotFound(format!("snapshot {id}")))
        }
        Err(e @ (ReplicaError::Unreachable(_) | ReplicaError::Config(_))) => return Err(e),
        Err(e) => {
            report.push(
                "replica:manifest",
                false,
                "readable and sealed",
                e.public_message(),
                start.elapsed(),
            );
            return Ok(report);
        }
    };
    report.push(
        "replica:manifest",
        true,
        "readable and sealed",
        "ok",
        start.elapsed(),
    );
    let mut distinct = m.blocks.clone();
    distinct.sort_by_key(|b| *b.hash.as_bytes());
    distinct.dedup_by_key(|b| b.hash);
    let start = Instant::now();
    let faults: Vec<String> = stream::iter(distinct.iter().copied())
        .map(|r| async move {
            let name = layout::block(&r.hash);
            let fault = if deep {
                match remote.get(&name).await? {
                    None => Some("missing".to_string()),
                    Some(v) => decode_file(&v.bytes, &r).err().map(|f| f.to_string()),
                }
            } else {
                remote
                    .head(&name)
                    .await?
                    .is_none()
                    .then(|| "missing".to_string())
            };
            Ok::<_, ReplicaError>(fault.map(|f| format!("block {}: {f}", r.hash)))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_filter_map(|f| async move { Ok(f) })
        .try_collect()
        .await?;
    let what = if deep {
        "replica:blocks_intact"
    } else {
        "replica:blocks_present"
    };
    report.push(
        what,
        faults.is_empty(),
        format!("{} blocks", distinct.len()),
        match faults.first() {
            None => format!("{} blocks", distinct.len()),
            Some(f) => format!("{} bad, first: {f}", faults.len()),
        },
        start.elapsed(),
    );
    if deep && faults.is_empty() {
        let dir = scratch.to_path_buf();
        let scratch_store = tokio::task::spawn_blocking(move || SnapshotStore::open(&dir))
            .await
            .map_err(|e| ReplicaError::Unreachable(format!("scratch store task: {e}")))??;
        let scratch_store = std::sync::Arc::new(scratch_store);
        import_snapshot(remote, &scratch_store, id).await?;
        let id = id.clone();
        let deep_report = tokio::task::spawn_blocking(move || scratch_store.verify_deep(&id))
            .await
            .map_err(|e| ReplicaError::Unreachable(format!("verify task: {e}")))??;
        report.extend(deep_report);
    }
    Ok(report)
}

/// Where the rotating drill stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DrillState {
    runs: u64,
}

/// What one drill run read.
#[derive(Debug, Clone, Default)]
pub struct DrillReport {
    /// This run's number (from 1) and the number of runs that cover every block once.
    pub run: u64,
    pub cycle: u64,
    pub blocks_total: u64,
    pub blocks_read: u64,
    pub bytes_read: u64,
    /// `block <hash>: <fault>` for every bad block read.
    pub bad: Vec<String>,
}

/// Reads `share_percent` of the remote blocks — the slice `run mod N` of them by hash, with
/// `N = ceil(100 / share)`, so every block is read within N runs — and checks each.
pub async fn drill(remote: &Remote, share_percent: u32) -> Result<DrillReport, ReplicaError> {
    let share = share_percent.clamp(1, 100) as u64;
    let cycle = 100u64.div_ceil(share);
    let state: DrillState = match remote.get(layout::DRILL).await? {
        Some(v) => serde_json::from_slice(&v.bytes).unwrap_or_default(),
        None => DrillState::default(),
    };
    let slice = state.runs % cycle;
    let blocks: Vec<blake3::Hash> = remote
        .list(layout::BLOCKS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_block(&o.name))
        .collect();
    let chosen: Vec<blake3::Hash> = blocks
        .iter()
        .copied()
        .filter(|h| bucket(h) % cycle == slice)
        .collect();
    let results: Vec<(u64, Option<String>)> = stream::iter(chosen.iter().copied())
        .map(|h| async move {
            let v = remote.get(&layout::block(&h)).await?;
            Ok::<_, ReplicaError>(match v {
                None => (0, Some(format!("block {h}: missing"))),
                Some(v) => (
                    v.bytes.len() as u64,
                    check_named(&v.bytes, &h)
                        .err()
                        .map(|f| format!("block {h}: {f}")),
                ),
            })
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let next = DrillState {
        runs: state.runs + 1,
    };
    let bytes =
        serde_json::to_vec(&next).map_err(|e| ReplicaError::corrupt("drill", e.to_string()))?;
    remote
        .put_overwrite(layout::DRILL, Bytes::from(bytes))
        .await?;
    Ok(DrillReport {
        run: next.runs,
        cycle,
        blocks_total: blocks.len() as u64,
        blocks_read: chosen.len() as u64,
        bytes_read: results.iter().map(|r| r.0).sum(),
        bad: results.into_iter().filter_map(|r| r.1).collect(),
    })
}

/// The drill slice a block falls in: its hash's first 8 bytes as a number.
fn bucket(h: &blake3::Hash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}
