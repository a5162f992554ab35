//! Fail points: named steps of the delete, snapshot, restore, start-up, retention and
//! compaction paths where a test makes the real process abort (like `kill -9`) or fail with an
//! injected error. [`REGISTRY`] lists every one; a test checks that it matches the code and
//! that the fault campaign exercises each of them in both modes.
//!
//! The engine is TiKV's `fail` crate (named points, actions with counts and probabilities);
//! this module adds the registry, `abort` (the `fail` crate has no action that ends the process
//! without unwinding) and a check that a name is known, so a typo in a test cannot silently
//! disable the fault it meant to inject. Configured from `LNRS_FAILPOINTS`
//! (`name=action[,name=action]`): `abort`, `error` (every time), `error-once`, or any `fail`
//! action string such as `2*off->1*return`. With nothing configured a check is one load.
//!
//! Fail points are process-global: in-process tests never arm them (a parallel test in the same
//! binary would hit them too); tests arm them in a child `lnrs serve` through the environment.

use std::sync::atomic::{AtomicBool, Ordering};

/// Which path a fail point interrupts (the campaign picks a workload that reaches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Any snapshot commit: pre-delete, manual and restore safety snapshots.
    SnapshotCommit,
    /// Assembling a snapshot into a file (restore, preview, deep verify).
    Assemble,
    /// An entity or link delete.
    Delete,
    /// A restore, from its safety snapshot to the resolved journal.
    Restore,
    /// Start-up: resolving a restore journal left by a crash.
    Startup,
    /// Retention and block garbage collection.
    Retention,
    /// Event-log compaction.
    Compaction,
    /// Uploads to the replica (exercised by the replica tests against a real S3 server).
    Replica,
    /// The capture taken ahead of a delete while the writer is idle, and its reuse.
    CaptureAhead,
}

/// One fail point.
#[derive(Debug, Clone, Copy)]
pub struct FailPoint {
    pub name: &'static str,
    pub path: Path,
    /// The step it sits at.
    pub at: &'static str,
}

const fn fp(name: &'static str, path: Path, at: &'static str) -> FailPoint {
    FailPoint { name, path, at }
}

/// Every fail point in the code, in the order a path reaches them.
pub const REGISTRY: &[FailPoint] = &[
    fp(
        "snapshot.after_capture",
        Path::SnapshotCommit,
        "file copied into memory",
    ),
    fp("snapshot.after_hash", Path::SnapshotCommit, "blocks hashed"),
    fp(
        "snapshot.after_blocks",
        Path::SnapshotCommit,
        "new blocks durable, manifest not renamed",
    ),
    fp(
        "snapshot.before_manifest_rename",
        Path::SnapshotCommit,
        "manifest temp durable",
    ),
    fp(
        "snapshot.after_manifest",
        Path::SnapshotCommit,
        "manifest published",
    ),
    fp(
        "snapshot.assemble_before_sync",
        Path::Assemble,
        "file assembled, not yet fsynced",
    ),
    fp(
        "ahead.checkpoint",
        Path::CaptureAhead,
        "the writer idle after a change, before the capture's CHECKPOINT",
    ),
    fp(
        "ahead.after_read",
        Path::CaptureAhead,
        "file read in the background, not yet prepared",
    ),
    fp(
        "ahead.before_reuse",
        Path::CaptureAhead,
        "a delete's capture taken ahead checked, manifest not written",
    ),
    fp(
        "delete.before_commit",
        Path::Delete,
        "cascade done and snapshot durable, before COMMIT",
    ),
    fp(
        "delete.after_commit",
        Path::Delete,
        "committed, before the answer",
    ),
    fp(
        "restore.after_safety",
        Path::Restore,
        "safety snapshot and its event durable",
    ),
    fp(
        "restore.flush",
        Path::Restore,
        "target assembled, its writeback to disk failing",
    ),
    fp(
        "restore.after_prepare",
        Path::Restore,
        "target assembled, verified, log carried over",
    ),
    fp(
        "restore.after_journal",
        Path::Restore,
        "journal durable, live file untouched",
    ),
    fp(
        "swap.before_rename",
        Path::Restore,
        "old WAL removed, target not yet renamed",
    ),
    fp(
        "swap.after_rename",
        Path::Restore,
        "target renamed over the live file",
    ),
    fp(
        "restore.after_swap",
        Path::Restore,
        "live file replaced, not reopened",
    ),
    fp(
        "restore.post_swap_verify",
        Path::Restore,
        "post-swap checks report a failure",
    ),
    fp(
        "restore.rollback.before_rename",
        Path::Restore,
        "safety state assembled",
    ),
    fp(
        "restore.rollback.after_rename",
        Path::Restore,
        "safety state renamed in",
    ),
    fp(
        "restore.before_resolve",
        Path::Restore,
        "outcome durable, journal still there",
    ),
    fp(
        "startup.recover",
        Path::Startup,
        "resolving a restore journal",
    ),
    fp(
        "snapshot.forget_after_unlink",
        Path::Retention,
        "manifest removed, catalog not saved",
    ),
    fp(
        "snapshot.gc_mid_sweep",
        Path::Retention,
        "half the unreferenced blocks removed",
    ),
    fp(
        "replica.after_block",
        Path::Replica,
        "one block uploaded, the snapshot's manifest not yet",
    ),
    fp(
        "replica.before_manifest",
        Path::Replica,
        "every block of a snapshot uploaded, manifest not yet",
    ),
    fp(
        "replica.before_segment",
        Path::Replica,
        "a log segment encoded, not yet uploaded",
    ),
    fp(
        "events.before_compact",
        Path::Compaction,
        "compaction inside its transaction",
    ),
];

static ANY: AtomicBool = AtomicBool::new(false);

/// Whether `name` is in the [`REGISTRY`].
pub fn is_registered(name: &str) -> bool {
    REGISTRY.iter().any(|p| p.name == name)
}

/// Arms the fail points of `spec` (`name=action`, comma-separated).
pub fn configure(spec: &str) -> Result<(), String> {
    for part in spec
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (name, action) = part
            .split_once('=')
            .map(|(n, a)| (n.trim(), a.trim()))
            .ok_or_else(|| format!("fail point `{part}`: expected name=action"))?;
        let Some(point) = REGISTRY.iter().find(|p| p.name == name) else {
            return Err(format!("unknown fail point `{name}`"));
        };
        let name = point.name;
        let armed = match action {
            "abort" => fail::cfg_callback(name, move || {
                eprintln!("fail point {name}: aborting");
                std::process::abort()
            }),
            "error" => fail::cfg(name, "return"),
            "error-once" => fail::cfg(name, "1*return"),
            other => fail::cfg(name, other),
        };
        armed.map_err(|e| format!("fail point `{name}`: {e}"))?;
    }
    ANY.store(!fail::list().is_empty(), Ordering::Release);
    Ok(())
}

/// Disarms one fail point.
pub fn clear(name: &str) {
    fail::remove(name);
    ANY.store(!fail::list().is_empty(), Ordering::Release);
}

/// Reaches the named step: `true` when the step must fail with an injected error (an `abort`
/// action ends the process here).
pub fn hit(name: &str) -> bool {
    if !ANY.load(Ordering::Acquire) {
        return false;
    }
    debug_assert!(
        is_registered(name),
        "fail point {name} is not in the registry"
    );
    let fired = fail::eval(name, |_| ()).is_some();
    if fired {
        tracing::warn!(fail_point = name, "fail point fired: injecting an error");
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_typos_are_refused() {
        let mut names: Vec<_> = REGISTRY.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        assert!(configure("snapshot.after_hsh=error").is_err());
        assert!(configure("snapshot.after_hash").is_err());
    }

    /// Every registered name appears as a string literal in the sources, and every literal that
    /// looks like a fail point name at a call site is registered.
    #[test]
    fn registry_matches_the_code() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut text = String::new();
        for entry in walk(std::path::Path::new(src)) {
            if entry.ends_with("fault.rs") {
                continue;
            }
            text += &std::fs::read_to_string(&entry).unwrap();
        }
        for p in REGISTRY {
            assert!(
                text.contains(&format!("\"{}\"", p.name)),
                "fail point {} is registered but never reached in src/",
                p.name
            );
        }
        for call in ["fail_point(\"", "fault::hit(\"", "fault_io(\""] {
            for (i, _) in text.match_indices(call) {
                let rest = &text[i + call.len()..];
                let name = &rest[..rest.find('"').unwrap()];
                assert!(is_registered(name), "fail point {name} is not registered");
            }
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        out
    }
}
