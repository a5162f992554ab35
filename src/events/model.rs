//! The event record: what is stored (as JSON) in `lnrs_event_log` and streamed to subscribers.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::rows::RowImages;
use crate::domain::{Link, Record};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    EntityCreated,
    EntityUpdated,
    EntityDeleted,
    LinkCreated,
    LinkDeleted,
    SnapshotCreated,
    SnapshotDeleted,
    RestorePerformed,
    RetentionApplied,
    StorageDegraded,
    StorageRecovered,
    EntityUndeleted,
    LinkUndeleted,
    SnapshotUpdated,
    /// ImportDatabase swapped imported data in (through a restore of its IMPORT snapshot).
    Imported,
}

impl EventKind {
    /// Whether events of this kind record a change of user data (and carry its row images).
    pub fn changes_data(self) -> bool {
        matches!(
            self,
            EventKind::EntityCreated
                | EventKind::EntityUpdated
                | EventKind::EntityDeleted
                | EventKind::LinkCreated
                | EventKind::LinkDeleted
                | EventKind::EntityUndeleted
                | EventKind::LinkUndeleted
        )
    }

    /// Whether events of this kind swap the user tables for a snapshot's (restore, import):
    /// replaying one needs that snapshot.
    pub fn swaps_tables(self) -> bool {
        matches!(self, EventKind::RestorePerformed | EventKind::Imported)
    }

    /// The stable name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::EntityCreated => "entity_created",
            EventKind::EntityUpdated => "entity_updated",
            EventKind::EntityDeleted => "entity_deleted",
            EventKind::LinkCreated => "link_created",
            EventKind::LinkDeleted => "link_deleted",
            EventKind::SnapshotCreated => "snapshot_created",
            EventKind::SnapshotDeleted => "snapshot_deleted",
            EventKind::RestorePerformed => "restore_performed",
            EventKind::RetentionApplied => "retention_applied",
            EventKind::StorageDegraded => "storage_degraded",
            EventKind::StorageRecovered => "storage_recovered",
            EventKind::EntityUndeleted => "entity_undeleted",
            EventKind::LinkUndeleted => "link_undeleted",
            EventKind::SnapshotUpdated => "snapshot_updated",
            EventKind::Imported => "imported",
        }
    }
}

/// A before/after image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Entity(Record),
    Link(Link),
}

/// What a delete did: the pre-delete snapshot (or why none was taken) and rows removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteInfo {
    pub snapshot_id: Option<String>,
    pub snapshot_skipped_reason: Option<String>,
    /// (table, rows) in deletion order.
    pub rows_removed: Vec<(String, i64)>,
}

/// Snapshot created/deleted detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    /// "delete", "manual", "pre_restore".
    pub operation: String,
    pub description: String,
}

/// Restore detail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInfo {
    pub snapshot_id: String,
    pub safety_snapshot_id: String,
    pub rolled_back: bool,
    pub rollback_reason: Option<String>,
    pub checks_run: u32,
    pub checks_failed: Vec<String>,
}

/// Undelete detail: which delete was undone, and where its rows came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeleteInfo {
    /// The undone delete's event seq (0 when the log no longer has it).
    pub delete_event_seq: u64,
    pub snapshot_id: Option<String>,
    /// "event" (the delete's row images) or "snapshot" (its pre-delete snapshot).
    pub source: String,
}

/// Retention detail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionInfo {
    pub removed_snapshot_ids: Vec<String>,
    pub bytes_freed: u64,
}

/// Storage degraded/recovered detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub reason: String,
    pub message: String,
}

/// An event before it has a place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDraft {
    pub kind: EventKind,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<DeleteInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undelete: Option<UndeleteInfo>,
    /// Every row the change touched (absent for events that change no user data, and in events
    /// written before the log kept row images).
    #[serde(default, skip_serializing_if = "RowImages::is_empty")]
    pub rows: RowImages,
}

impl EventDraft {
    /// A draft of `kind` about `entity_type` / `entity_id`, with no detail yet.
    pub fn new(
        kind: EventKind,
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            entity_type: Some(entity_type.into()),
            entity_id: Some(entity_id.into()),
            before: None,
            after: None,
            delete: None,
            snapshot: None,
            restore: None,
            retention: None,
            storage: None,
            undelete: None,
            rows: RowImages::default(),
        }
    }
}

/// Who caused an event: the request id, the RPC, the principal and the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub request_id: Option<String>,
    pub rpc: Option<String>,
    /// The token's name, the client certificate's subject, "anonymous" (auth off) or "lnrs"
    /// (the service's own work). Absent in events written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The W3C trace id (32 lowercase hex digits) of the request that caused it, so a
    /// subscriber can join a change to its distributed trace. Absent when the request carried
    /// no `traceparent` and tracing is off, and in events written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// A habitat-created event with seq `seq` (tests of the log, the hub and the replica).
#[cfg(test)]
pub(crate) fn test_event(seq: u64) -> Event {
    Event {
        seq,
        time: Utc::now(),
        origin: Origin::default(),
        body: EventDraft::new(EventKind::EntityCreated, "habitat", seq.to_string()),
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub origin: Origin,
    #[serde(flatten)]
    pub body: EventDraft,
}

/// Which events a reader wants. Empty sets mean "all".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kinds: BTreeSet<EventKind>,
    pub entity_types: BTreeSet<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.body.kind))
            && (self.entity_types.is_empty()
                || e.body
                    .entity_type
                    .as_ref()
                    .is_some_and(|t| self.entity_types.contains(t)))
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.entity_types.is_empty()
    }
}
