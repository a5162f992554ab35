//! Fail points for crash and fault tests: named steps in the snapshot, restore and delete paths
//! where a test can make the real process abort (like `kill -9`) or fail with an injected error.
//!
//! Configured once from `LNRS_FAILPOINTS` (`name=action[,name=action]`, action `abort` or `error`)
//! or programmatically by in-process tests. With nothing configured a check is one relaxed load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

/// What a configured fail point does when reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `std::process::abort()`: no destructors, no flushing — as close to `kill -9` as in-process gets.
    Abort,
    /// Return an injected error from the step.
    Error,
}

static ANY: AtomicBool = AtomicBool::new(false);

fn table() -> &'static RwLock<HashMap<String, Action>> {
    static TABLE: OnceLock<RwLock<HashMap<String, Action>>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Parses `spec` (`name=abort,other=error`) and installs it. Unknown actions are an error so a
/// typo in a test cannot silently disable the fault it meant to inject.
pub fn configure(spec: &str) -> Result<(), String> {
    let mut parsed = HashMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, action) = part
            .split_once('=')
            .ok_or_else(|| format!("fail point `{part}`: expected name=action"))?;
        let action = match action.trim() {
            "abort" => Action::Abort,
            "error" => Action::Error,
            other => return Err(format!("fail point `{name}`: unknown action `{other}`")),
        };
        parsed.insert(name.trim().to_string(), action);
    }
    let mut t = table().write().unwrap_or_else(|e| e.into_inner());
    t.extend(parsed);
    ANY.store(!t.is_empty(), Ordering::Release);
    Ok(())
}

/// Removes one fail point (in-process tests turn a fault off again).
pub fn clear(name: &str) {
    let mut t = table().write().unwrap_or_else(|e| e.into_inner());
    t.remove(name);
    ANY.store(!t.is_empty(), Ordering::Release);
}

/// Reaches the named step: aborts the process, or returns `true` when the step must fail.
pub fn hit(name: &str) -> bool {
    if !ANY.load(Ordering::Acquire) {
        return false;
    }
    let action = table()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .copied();
    match action {
        Some(Action::Abort) => {
            eprintln!("fail point {name}: aborting");
            std::process::abort()
        }
        Some(Action::Error) => true,
        None => false,
    }
}
