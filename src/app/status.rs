//! The snapshot store's health as the service sees it (enabled, degraded with a reason, or
//! disabled by policy), published through a watch channel so health checks and metrics follow
//! every change.

use tokio::sync::watch;

/// State of snapshot storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    Enabled,
    Degraded,
    Disabled,
}

/// State plus the reason it is not enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHealth {
    pub state: SnapshotState,
    /// Stable reason code (e.g. SNAPSHOT_STORAGE_UNWRITABLE) and detail, when not enabled.
    pub reason: Option<String>,
    pub reason_code: Option<&'static str>,
}

impl SnapshotHealth {
    pub fn enabled() -> Self {
        Self {
            state: SnapshotState::Enabled,
            reason: None,
            reason_code: None,
        }
    }
}

/// The current snapshot health, observable.
pub struct StorageStatus {
    tx: watch::Sender<SnapshotHealth>,
}

impl StorageStatus {
    pub fn new(initial: SnapshotHealth) -> Self {
        Self {
            tx: watch::Sender::new(initial),
        }
    }

    pub fn get(&self) -> SnapshotHealth {
        self.tx.borrow().clone()
    }

    /// Replaces the state; returns the previous one.
    pub fn set(&self, h: SnapshotHealth) -> SnapshotHealth {
        self.tx.send_replace(h)
    }

    /// Follows changes (health service, metrics).
    pub fn subscribe(&self) -> watch::Receiver<SnapshotHealth> {
        self.tx.subscribe()
    }
}

/// Whether the live database is open and consistent with what the service has acknowledged.
/// It is not only after a restore could not be completed or undone (the file at the live path
/// is then unknown, the restore journal stays for the next start to resolve): reads and writes
/// are refused, health says NOT_SERVING and GetStatus says why.
pub struct DatabaseStatus {
    tx: watch::Sender<Option<String>>,
}

impl Default for DatabaseStatus {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(None),
        }
    }
}

impl DatabaseStatus {
    /// `None` when the database is available, else why not (safe to show to clients).
    pub fn unavailable(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    pub(crate) fn set_unavailable(&self, why: impl Into<String>) {
        self.tx.send_replace(Some(why.into()));
    }

    /// Follows changes (health service).
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.tx.subscribe()
    }
}
