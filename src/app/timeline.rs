//! Point-in-time restore: the data as it was right after any event seq (or at any time) that
//! the retained snapshots and log cover — locally, or from the replica.
//!
//! The plan is the newest snapshot at or before the point plus the events after it up to the
//! point. Building it assembles that snapshot and replays the events' row images
//! ([`super::replay`]); the result becomes a snapshot of its own (head = the point, labelled
//! `lnrs.point_in_time.seq`), and then an ordinary [`App::restore`] of it runs — the same safety
//! snapshot, integrity report and automatic rollback as RestoreSnapshot. A point the history
//! does not cover is OUT_OF_RANGE with the earliest point it does; a plan never approximates.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::replay::{rebuild, Rebuilt};
use super::restore::RestoreOutcome;
use super::{App, Replayable, RequestCtx};
use crate::error::Error;
use crate::events::log as event_log;
use crate::replica::fetch::{self, SegmentRef};
use crate::replica::segment::{restored_snapshot, Segment};
use crate::replica::Remote;
use crate::snapshot::{Manifest, NewSnapshot, Operation, SnapshotId, SnapshotMeta, SnapshotStore};
use crate::storage::files;

/// Label a point-in-time snapshot carries: the seq it holds the state after.
pub const POINT_LABEL: &str = "lnrs.point_in_time.seq";

/// Where the point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Right after this event.
    Seq(u64),
    /// After the newest event committed at or before this time.
    Time(DateTime<Utc>),
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Seq(s) => write!(f, "event {s}"),
            Point::Time(t) => write!(f, "time {}", t.to_rfc3339()),
        }
    }
}

/// Where the history is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    #[default]
    Local,
    Replica,
}

/// What a point-in-time restore does (all of it, with `dry_run`, and nothing else).
#[derive(Debug, Clone)]
pub struct PointPlan {
    pub source: Source,
    /// The snapshot it starts from, and the event its state is right after.
    pub base: SnapshotId,
    pub base_seq: u64,
    /// The point, as an event seq, and that event's time.
    pub target_seq: u64,
    pub target_time: Option<DateTime<Utc>>,
    pub events_to_replay: u64,
    /// Bytes to download (replica: missing blocks' content and the segments; local: 0).
    pub bytes_to_fetch: u64,
    /// The earliest point the retained history reaches, and the newest.
    pub earliest_seq: u64,
    pub head_seq: u64,
}

/// A plan and the events it replays (as segments: the replica's carry the primary's
/// fingerprints).
struct Planned {
    plan: PointPlan,
    base: Manifest,
    segments: Vec<Segment>,
}

impl App {
    /// Restores the data to `point` (see the module docs). `dry_run`: only the plan.
    pub async fn restore_to_point(
        &self,
        ctx: RequestCtx,
        point: Point,
        source: Source,
        dry_run: bool,
    ) -> Result<(PointPlan, Option<Replayable<RestoreOutcome>>), Error> {
        let planned = match source {
            Source::Local => self.plan_local(point).await?,
            Source::Replica => self.plan_replica(point, dry_run).await?,
        };
        if dry_run {
            return Ok((planned.plan, None));
        }
        // A retry of an acknowledged request (AIP-155) answers as the first time did, without
        // building the state again.
        let c = ctx.clone();
        let earlier = self
            .write(&ctx, move |st| st.replay::<RestoreOutcome>(&c))
            .await?;
        if let Some(out) = earlier {
            return Ok((planned.plan, Some(out)));
        }
        let store = self.shared.store()?;
        let id = self.build_point(&store, &planned).await?;
        // Held until the restore has its own hold: retention must not take it in between.
        let _hold = store.pin(&id);
        let out = self.restore(ctx, id.as_str(), id.as_str()).await?;
        Ok((planned.plan, Some(out)))
    }

    /// The plan from the local snapshots and log.
    async fn plan_local(&self, point: Point) -> Result<Planned, Error> {
        let store = self.shared.store()?;
        let bounds = self
            .shared
            .reads
            .read(|c| Ok::<_, Error>(event_log::bounds(c)?))
            .await?;
        // Reachable: from the oldest snapshot whose following events are all retained.
        let earliest = store
            .summaries()
            .iter()
            .map(|s| s.meta.event_head_seq)
            .filter(|h| h + 1 >= bounds.first)
            .min();
        let target = self.local_seq(point).await?;
        let unreachable = |earliest: u64| Error::PointNotReachable {
            point: point.to_string(),
            earliest,
            head: bounds.head,
        };
        let Some(earliest) = earliest else {
            return Err(unreachable(bounds.head));
        };
        let target = target.filter(|t| (earliest..=bounds.head).contains(t));
        let Some(target) = target else {
            return Err(unreachable(earliest));
        };
        let base = store
            .newest_at_or_before(target)
            .filter(|b| b.meta.event_head_seq >= earliest)
            .ok_or_else(|| unreachable(earliest))?;
        let base_seq = base.meta.event_head_seq;
        let events = self
            .shared
            .reads
            .read(move |c| super::history::events_between(c, base_seq, target))
            .await?;
        for e in &events {
            if let Some(t) = restored_snapshot(e) {
                if !store.contains(&SnapshotId::parse(t)?) {
                    return Err(Error::StateNotRebuildable(format!(
                        "event {} restored snapshot {t}, which is no longer kept",
                        e.seq
                    )));
                }
            }
        }
        let target_time = events.last().map(|e| e.time);
        let plan = PointPlan {
            source: Source::Local,
            base: base.id.clone(),
            base_seq,
            target_seq: target,
            target_time,
            events_to_replay: events.len() as u64,
            bytes_to_fetch: 0,
            earliest_seq: earliest,
            head_seq: bounds.head,
        };
        let base = store.get(&base.id)?;
        let segments = match events.is_empty() {
            true => Vec::new(),
            false => vec![Segment::new(events, None)],
        };
        Ok(Planned {
            plan,
            base,
            segments,
        })
    }

    /// `point` as a seq of the local log (`None`: before its first event).
    async fn local_seq(&self, point: Point) -> Result<Option<u64>, Error> {
        match point {
            Point::Seq(s) => Ok(Some(s)),
            Point::Time(t) => {
                let us = t.timestamp_micros();
                self.shared
                    .reads
                    .read(move |c| Ok::<_, Error>(event_log::last_at_or_before(c, us)?))
                    .await
            }
        }
    }

    /// The plan from the replica: its snapshots and shipped segments. Unless `dry_run`, the
    /// base snapshot (and any a replayed restore needs) is imported into the local store.
    async fn plan_replica(&self, point: Point, dry_run: bool) -> Result<Planned, Error> {
        let r = self.replicator()?;
        let store = self.shared.store()?;
        let remote = r.remote().clone();
        let store2 = store.clone();
        r.handle()
            .spawn(async move { plan_remote(&remote, &store2, point, dry_run).await })
            .await
            .map_err(|e| Error::Internal(format!("replica plan task: {e}")))?
    }

    /// Rebuilds the planned state and commits it as a snapshot of its own. Returns its id.
    async fn build_point(
        &self,
        store: &Arc<SnapshotStore>,
        p: &Planned,
    ) -> Result<SnapshotId, Error> {
        let tmp = store.scratch_path("point-in-time.duckdb");
        let (store, base, segments, target, path) = (
            store.clone(),
            p.base.clone(),
            p.segments.clone(),
            p.plan.target_seq,
            tmp.clone(),
        );
        let built = super::snapshots::blocking(move || {
            let rebuilt: Rebuilt = rebuild(&store, &base, &segments, &path)?;
            if rebuilt.head != target {
                return Err(Error::Internal(format!(
                    "the replay ended at event {}, not {target}",
                    rebuilt.head
                )));
            }
            let capture = store.capture(&path)?;
            let mut labels = BTreeMap::new();
            labels.insert(POINT_LABEL.to_string(), target.to_string());
            let meta = NewSnapshot {
                meta: SnapshotMeta {
                    description: format!(
                        "State right after event {target} (point-in-time restore)"
                    ),
                    operation: Operation::Manual,
                    labels,
                    event_head_seq: target,
                    duckdb_library_version: base.meta.duckdb_library_version.clone(),
                    ..Default::default()
                },
                fingerprints: rebuilt.fingerprints,
                schema: rebuilt.schema,
            };
            Ok(super::state::commit_snapshot(&store, capture, meta)?.id)
        })
        .await;
        let _ = files::remove_database(&tmp);
        built
    }
}

/// Plans from the replica (on its runtime).
async fn plan_remote(
    remote: &Remote,
    store: &Arc<SnapshotStore>,
    point: Point,
    dry_run: bool,
) -> Result<Planned, Error> {
    let segments = fetch::segments(remote).await?;
    let head = fetch::head_of(&segments);
    let ids = fetch::snapshot_ids(remote).await?;
    // Manifests newest first, until the base is found (each read once).
    let mut manifests: Vec<Manifest> = Vec::new();
    for id in ids.iter().rev() {
        manifests.push(fetch::manifest(remote, id).await?);
    }
    let earliest = earliest_remote(&manifests, &segments, head);
    let unreachable = |earliest: u64| Error::PointNotReachable {
        point: point.to_string(),
        earliest,
        head,
    };
    let Some(earliest) = earliest else {
        return Err(unreachable(head));
    };
    let target = match point {
        Point::Seq(s) => Some(s),
        Point::Time(t) => remote_seq_at(remote, &segments, t).await?,
    };
    let Some(target) = target.filter(|t| (earliest..=head).contains(t)) else {
        return Err(unreachable(earliest));
    };
    let base = manifests
        .iter()
        .find(|m| m.meta.event_head_seq <= target && m.meta.event_head_seq >= earliest)
        .cloned()
        .ok_or_else(|| unreachable(earliest))?;
    let read =
        fetch::read_listed(remote, &segments, base.meta.event_head_seq, Some(target)).await?;
    let segment_bytes: u64 = segments
        .iter()
        .filter(|s| s.last > base.meta.event_head_seq && s.first <= target)
        .map(|s| s.size)
        .sum();
    let mut bytes: u64 = store
        .missing_blocks(&base)
        .iter()
        .map(|b| b.len)
        .sum::<u64>()
        + segment_bytes;
    for e in read.iter().flat_map(|s| &s.events) {
        if let Some(t) = restored_snapshot(e) {
            let id = SnapshotId::parse(t)?;
            if !store.contains(&id) {
                let m = fetch::manifest(remote, &id).await?;
                bytes += store.missing_blocks(&m).iter().map(|b| b.len).sum::<u64>();
                if !dry_run {
                    fetch::import_snapshot(remote, store, &id).await?;
                }
            }
        }
    }
    if !dry_run {
        fetch::import_snapshot(remote, store, &base.id).await?;
    }
    let events: u64 = read.iter().map(|s| s.events.len() as u64).sum();
    let target_time = read.last().and_then(|s| s.events.last()).map(|e| e.time);
    Ok(Planned {
        plan: PointPlan {
            source: Source::Replica,
            base: base.id.clone(),
            base_seq: base.meta.event_head_seq,
            target_seq: target,
            target_time,
            events_to_replay: events,
            bytes_to_fetch: bytes,
            earliest_seq: earliest,
            head_seq: head,
        },
        base,
        segments: read,
    })
}

/// The oldest snapshot head from which the shipped segments run without a gap to `head`.
fn earliest_remote(manifests: &[Manifest], segments: &[SegmentRef], head: u64) -> Option<u64> {
    // The start of the last gap-free run of segments that ends at the head.
    let mut run_start = head + 1;
    for s in segments.iter().rev() {
        if s.last + 1 < run_start {
            break;
        }
        run_start = run_start.min(s.first);
    }
    manifests
        .iter()
        .map(|m| m.meta.event_head_seq)
        .filter(|h| *h <= head && h + 1 >= run_start)
        .min()
}

/// The newest shipped event at or before `t` (segments read newest first until one starts
/// at or before it).
async fn remote_seq_at(
    remote: &Remote,
    segments: &[SegmentRef],
    t: DateTime<Utc>,
) -> Result<Option<u64>, Error> {
    for s in segments.iter().rev() {
        let seg = Segment::decode(
            &remote.get_bytes(&s.name).await?,
            &s.name,
            (s.first, s.last),
        )?;
        if let Some(e) = seg.events.iter().rev().find(|e| e.time <= t) {
            return Ok(Some(e.seq));
        }
    }
    Ok(None)
}
