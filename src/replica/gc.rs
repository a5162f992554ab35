//! Remote retention and garbage collection. Retention plans with the local vocabulary
//! ([`RetentionPolicy`]: keep the newest N, keep within a window; never the newest snapshot,
//! never a pinned one) over the replica's manifests and deletes the manifests it drops; the
//! sweep then deletes blocks no remaining manifest references — but only blocks older than the
//! grace period, so a block uploaded for a manifest still in flight (its manifest comes last)
//! is never collected. A snapshot that a restore in the replayable log swapped in is kept too:
//! a recovery across that restore needs it. Log segments wholly before the oldest kept snapshot go too: nothing can
//! replay from before it.

use std::collections::HashSet;

use chrono::Utc;

use super::ship::{Replicator, ShipState};
use super::{fetch, layout, ReplicaError};
use crate::snapshot::retention;
use crate::snapshot::SnapshotId;

/// What one remote retention run did (or would do).
#[derive(Debug, Clone, Default)]
pub struct RemoteGc {
    pub dry_run: bool,
    pub kept: Vec<SnapshotId>,
    pub removed: Vec<SnapshotId>,
    pub blocks_removed: u64,
    pub bytes_freed: u64,
    pub segments_removed: u64,
}

/// Applies remote retention and sweeps (under the lease, which the caller holds).
pub(crate) async fn run(
    r: &Replicator,
    st: &mut ShipState,
    dry_run: bool,
) -> Result<RemoteGc, ReplicaError> {
    st.last_gc = Some(std::time::Instant::now());
    let mut out = RemoteGc {
        dry_run,
        ..Default::default()
    };
    let pinned: HashSet<SnapshotId> = pinned(r, st).await?;
    let snapshots: Vec<(SnapshotId, chrono::DateTime<Utc>)> = st
        .remote_manifests
        .keys()
        .filter_map(|id| id.timestamp().map(|t| (id.clone(), t)))
        .collect();
    let (kept, planned) =
        retention::plan(&snapshots, None, &pinned, &r.settings.retention, Utc::now());
    out.kept = kept.into_iter().map(|d| d.id).collect();
    out.removed = planned.into_iter().map(|d| d.id).collect();
    // A snapshot that a restore after the oldest kept snapshot swapped in is needed to replay
    // the log across that restore: it stays.
    let needed = replay_needs(r, st, &out.kept).await?;
    let (keep_too, removed): (Vec<_>, Vec<_>) =
        out.removed.drain(..).partition(|id| needed.contains(id));
    out.kept.extend(keep_too);
    out.kept.sort();
    out.removed = removed;
    if dry_run {
        return Ok(out);
    }
    for id in &out.removed {
        r.remote.delete(&layout::manifest(id)).await?;
        r.remote.delete(&layout::annotation(id)).await?;
        st.remote_manifests.remove(id);
    }
    let (blocks, bytes) = sweep_blocks(r, st).await?;
    out.blocks_removed = blocks;
    out.bytes_freed = bytes;
    out.segments_removed = sweep_segments(r, st).await?;
    Ok(out)
}

/// The snapshots completed restores after the oldest of `kept` swapped in (reads the shipped
/// segments not read yet: each once, they never change).
async fn replay_needs(
    r: &Replicator,
    st: &mut ShipState,
    kept: &[SnapshotId],
) -> Result<HashSet<SnapshotId>, ReplicaError> {
    for s in fetch::segments(&r.remote).await? {
        if st.scanned.contains(&s.name) {
            continue;
        }
        let bytes = r.remote.get_bytes(&s.name).await?;
        let seg = crate::replica::segment::Segment::decode(&bytes, &s.name, (s.first, s.last))?;
        super::ship::note_restores(st, &s.name, &seg);
    }
    let Some(oldest) = kept.iter().min() else {
        return Ok(HashSet::new());
    };
    let floor = fetch::manifest(&r.remote, oldest)
        .await?
        .meta
        .event_head_seq;
    Ok(st
        .restores
        .range(floor + 1..)
        .map(|(_, id)| id.clone())
        .collect())
}

/// Snapshots pinned locally or in the replica's annotations.
async fn pinned(r: &Replicator, _st: &ShipState) -> Result<HashSet<SnapshotId>, ReplicaError> {
    let mut pinned: HashSet<SnapshotId> = r
        .store
        .annotations()
        .into_iter()
        .filter(|(_, a)| a.pinned)
        .map(|(id, _)| id)
        .collect();
    for o in r.remote.list(layout::ANNOTATIONS).await? {
        let Some(id) = layout::parse_annotation(&o.name) else {
            continue;
        };
        let bytes = r.remote.get_bytes(&o.name).await?;
        // Unreadable: treated as pinned (losing a pin could lose the snapshot).
        let a = serde_json::from_slice::<crate::snapshot::Annotation>(&bytes);
        if a.is_ok_and(|a| a.pinned) || serde_json::from_slice::<serde_json::Value>(&bytes).is_err()
        {
            pinned.insert(id);
        }
    }
    Ok(pinned)
}

/// Mark (every remaining manifest's blocks) and sweep (unreferenced blocks older than the
/// grace period).
async fn sweep_blocks(r: &Replicator, st: &mut ShipState) -> Result<(u64, u64), ReplicaError> {
    let mut referenced = HashSet::new();
    let ids: Vec<SnapshotId> = st.remote_manifests.keys().cloned().collect();
    for id in ids {
        let blocks = match st.remote_manifests.get(&id).cloned().flatten() {
            Some(b) => b,
            None => {
                let m = fetch::manifest(&r.remote, &id).await?;
                let b: Vec<blake3::Hash> = m.blocks.iter().map(|b| b.hash).collect();
                st.remote_manifests.insert(id, Some(b.clone()));
                b
            }
        };
        referenced.extend(blocks);
    }
    let cutoff = Utc::now()
        - chrono::Duration::from_std(r.settings.gc_grace).unwrap_or(chrono::Duration::MAX);
    let (mut n, mut bytes) = (0, 0);
    for o in r.remote.list(layout::BLOCKS).await? {
        let Some(h) = layout::parse_block(&o.name) else {
            continue;
        };
        if referenced.contains(&h) || o.last_modified > cutoff {
            continue;
        }
        r.remote.delete(&o.name).await?;
        st.remote_blocks.remove(&h);
        n += 1;
        bytes += o.size;
    }
    Ok((n, bytes))
}

/// Deletes segments whose events all precede the oldest remaining snapshot.
async fn sweep_segments(r: &Replicator, st: &ShipState) -> Result<u64, ReplicaError> {
    let Some(oldest) = st.remote_manifests.keys().next() else {
        return Ok(0);
    };
    let floor = fetch::manifest(&r.remote, oldest)
        .await?
        .meta
        .event_head_seq;
    let segments = fetch::segments(&r.remote).await?;
    // The newest segment stays whatever it holds: it is where the shipped head is read from.
    let newest = fetch::head_of(&segments);
    let mut n = 0;
    for s in segments {
        if s.last <= floor && s.last != newest {
            r.remote.delete(&s.name).await?;
            n += 1;
        }
    }
    Ok(n)
}

impl Replicator {
    /// Runs remote retention now (RPC, CLI).
    pub async fn apply_retention(&self, dry_run: bool) -> Result<RemoteGc, ReplicaError> {
        let mut st = self.ship.lock().await;
        if !self.prepare(&mut st).await? {
            return Err(st.fenced.as_ref().map_or_else(
                || ReplicaError::Diverged("the replica holds another history".into()),
                |t| t.error(),
            ));
        }
        run(self, &mut st, dry_run).await
    }
}
