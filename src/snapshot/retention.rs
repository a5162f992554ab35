//! Retention: which snapshots a policy keeps and why. A pure planning function, so the rules
//! (keep the newest N, keep everything younger than a duration, and never remove the newest
//! snapshot, the newest verified one or a pinned one — pinned by a user or held by a restore)
//! are tested without a store.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::id::SnapshotId;

/// Default for [`RetentionPolicy::keep_last`].
pub const DEFAULT_KEEP_LAST: usize = 10;

/// How many snapshots to keep. A snapshot is kept if any rule keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest N.
    pub keep_last: usize,
    /// Also keep every snapshot created within this long before now.
    pub keep_within: Option<Duration>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: DEFAULT_KEEP_LAST,
            keep_within: None,
        }
    }
}

/// Why a snapshot was kept or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionReason {
    /// The newest snapshot: never removed.
    Newest,
    /// The newest snapshot whose last verify passed: never removed.
    NewestVerified,
    /// Pinned by a user, or held by a restore in progress: never removed.
    Pinned,
    KeepLast,
    KeepWithin,
    /// Matched no keep rule.
    Expired,
}

/// One snapshot's retention decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionDecision {
    pub id: SnapshotId,
    pub created_at: DateTime<Utc>,
    pub reasons: Vec<RetentionReason>,
}

/// What retention did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionOutcome {
    pub dry_run: bool,
    /// Newest first.
    pub kept: Vec<RetentionDecision>,
    /// Newest first.
    pub removed: Vec<RetentionDecision>,
    /// The sweep that followed (none on a dry run).
    pub gc: Option<GcOutcome>,
}

/// What a garbage collection freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcOutcome {
    pub blocks_removed: usize,
    pub bytes_freed: u64,
    /// Blocks still referenced after the sweep.
    pub blocks_kept: usize,
}

/// Splits `snapshots` (any order) into kept and removed, both newest first.
pub fn plan(
    snapshots: &[(SnapshotId, DateTime<Utc>)],
    newest_verified: Option<&SnapshotId>,
    pinned: &HashSet<SnapshotId>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> (Vec<RetentionDecision>, Vec<RetentionDecision>) {
    let mut sorted: Vec<_> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.0.cmp(&a.0));
    let cutoff = policy.keep_within.and_then(|d| cutoff(now, d));
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (rank, (id, created_at)) in sorted.into_iter().enumerate() {
        let reasons = keep_reasons(
            rank,
            id,
            *created_at,
            newest_verified,
            pinned,
            policy,
            cutoff,
        );
        let expired = reasons.is_empty();
        let decision = RetentionDecision {
            id: id.clone(),
            created_at: *created_at,
            reasons: if expired {
                vec![RetentionReason::Expired]
            } else {
                reasons
            },
        };
        if expired {
            removed.push(decision);
        } else {
            kept.push(decision);
        }
    }
    (kept, removed)
}

/// The oldest creation time `keep_within` keeps, or `None` when `now - keep_within` is not
/// a representable time (callers refuse such a policy up front: see [`RetentionPolicy::check`]).
fn cutoff(now: DateTime<Utc>, keep_within: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(keep_within)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
}

impl RetentionPolicy {
    /// Refuses a `keep_within` so long that no cutoff time can be computed (it would silently
    /// disable the rule).
    pub fn check(&self) -> Result<(), String> {
        match self.keep_within {
            Some(d) if cutoff(Utc::now(), d).is_none() => Err(format!(
                "{}s is beyond the representable time range",
                d.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

fn keep_reasons(
    rank: usize,
    id: &SnapshotId,
    created_at: DateTime<Utc>,
    newest_verified: Option<&SnapshotId>,
    pinned: &HashSet<SnapshotId>,
    policy: &RetentionPolicy,
    cutoff: Option<DateTime<Utc>>,
) -> Vec<RetentionReason> {
    let rules = [
        (rank == 0, RetentionReason::Newest),
        (newest_verified == Some(id), RetentionReason::NewestVerified),
        (pinned.contains(id), RetentionReason::Pinned),
        (rank < policy.keep_last, RetentionReason::KeepLast),
        (
            cutoff.is_some_and(|c| created_at >= c),
            RetentionReason::KeepWithin,
        ),
    ];
    rules
        .into_iter()
        .filter(|(hit, _)| *hit)
        .map(|(_, r)| r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshots(
        n: usize,
        step: chrono::Duration,
    ) -> (Vec<(SnapshotId, DateTime<Utc>)>, DateTime<Utc>) {
        let now = Utc::now();
        let mut out: Vec<(SnapshotId, DateTime<Utc>)> = Vec::new();
        for i in (0..n).rev() {
            let at = now - step * (i as i32);
            let id = SnapshotId::generate(at, out.last().map(|(id, _)| id));
            out.push((id, at));
        }
        (out, now)
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let (s, now) = snapshots(15, chrono::Duration::minutes(1));
        let (kept, removed) = plan(&s, None, &HashSet::new(), &RetentionPolicy::default(), now);
        assert_eq!(kept.len(), 10);
        assert_eq!(removed.len(), 5);
        assert_eq!(kept[0].id, s[14].0);
        assert!(kept[0].reasons.contains(&RetentionReason::Newest));
        assert!(removed
            .iter()
            .all(|d| d.reasons == [RetentionReason::Expired]));
    }

    #[test]
    fn keep_within_adds_young_snapshots() {
        let (s, now) = snapshots(10, chrono::Duration::hours(1));
        let policy = RetentionPolicy {
            keep_last: 2,
            keep_within: Some(Duration::from_secs(5 * 3600 + 60)),
        };
        let (kept, _) = plan(&s, None, &HashSet::new(), &policy, now);
        assert_eq!(kept.len(), 6);
    }

    #[test]
    fn protected_snapshots_survive_keep_last_zero() {
        let (s, now) = snapshots(6, chrono::Duration::minutes(1));
        let pinned = HashSet::from([s[1].0.clone()]);
        let policy = RetentionPolicy {
            keep_last: 0,
            keep_within: None,
        };
        let (kept, removed) = plan(&s, Some(&s[3].0), &pinned, &policy, now);
        let ids: Vec<_> = kept.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids, vec![s[5].0.clone(), s[3].0.clone(), s[1].0.clone()]);
        assert_eq!(removed.len(), 3);
    }

    proptest! {
        #[test]
        fn never_removes_protected(
            n in 1usize..30,
            keep_last in 0usize..12,
            v in 0usize..30,
            p in 0usize..30,
        ) {
            let (s, now) = snapshots(n, chrono::Duration::minutes(1));
            let verified = s.get(v).map(|x| x.0.clone());
            let pinned: HashSet<_> = s.get(p).map(|x| x.0.clone()).into_iter().collect();
            let policy = RetentionPolicy { keep_last, keep_within: None };
            let (kept, removed) = plan(&s, verified.as_ref(), &pinned, &policy, now);
            prop_assert_eq!(kept.len() + removed.len(), n);
            let removed_ids: HashSet<_> = removed.iter().map(|d| d.id.clone()).collect();
            prop_assert!(!removed_ids.contains(&s[n - 1].0));
            if let Some(v) = &verified { prop_assert!(!removed_ids.contains(v)); }
            for id in &pinned { prop_assert!(!removed_ids.contains(id)); }
            prop_assert!(kept.len() >= keep_last.min(n));
        }
    }
}
