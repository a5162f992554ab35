//! The event log and its subscribers: the event record, the `lnrs_event_log` table (appends in
//! the writer's transaction, paged reads, compaction) and the fan-out hub that drives
//! catch-up-then-live subscriptions.

pub mod hub;
pub mod log;
pub mod model;

pub use hub::{EventHub, StreamItem, Subscription, SubscriptionStream};
pub use model::{Event, EventDraft, EventFilter, EventKind, Origin, Resource};

use thiserror::Error;

use crate::storage::StorageError;

/// Errors of the event layer.
#[derive(Debug, Error)]
pub enum EventError {
    #[error("event log database error: {0}")]
    Db(#[from] duckdb::Error),
    #[error("event payload is not valid: {0}")]
    Payload(#[from] serde_json::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("events before seq {first_available} have been compacted away")]
    Compacted { first_available: u64 },
    #[error("start position is beyond the log head ({head})")]
    Ahead { head: u64 },
    #[error("too many subscribers (limit {limit})")]
    TooManySubscribers { limit: usize },
    #[error("server is shutting down; resume after seq {last_seq}")]
    ShuttingDown { last_seq: u64 },
}

impl EventError {
    /// What a client may be told (no SQL or engine message).
    pub fn public_message(&self) -> String {
        match self {
            EventError::Db(_) => "event log database error".into(),
            EventError::Payload(_) => "event payload invalid".into(),
            EventError::Storage(e) => e.public_message(),
            other => other.to_string(),
        }
    }
}
