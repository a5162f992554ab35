//! JSON for `--json`: prost messages do not implement serde, so each message the client prints is
//! mapped here by hand, following the proto3 JSON mapping with proto field names (enums by name,
//! Timestamp as RFC 3339, Duration as "1.5s"). Deviation, for scripts' sake: 64-bit integers are
//! JSON numbers, not strings. Entities are mapped in [`super::entity`], from their field lists.

use prost_types::{Duration, Timestamp};
use serde_json::{json, Map, Value};

use crate::pb;

/// A message that `--json` can print.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

impl ToJson for Timestamp {
    fn to_json(&self) -> Value {
        Value::String(timestamp(self))
    }
}

impl ToJson for Duration {
    fn to_json(&self) -> Value {
        let nanos = self.nanos.unsigned_abs();
        let sign = if self.seconds < 0 || self.nanos < 0 {
            "-"
        } else {
            ""
        };
        let secs = self.seconds.unsigned_abs();
        let text = if nanos == 0 {
            format!("{sign}{secs}s")
        } else {
            let frac = format!("{nanos:09}");
            format!("{sign}{secs}.{}s", frac.trim_end_matches('0'))
        };
        Value::String(text)
    }
}

/// RFC 3339 in UTC, as the proto3 JSON mapping writes it.
pub fn timestamp(t: &Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{}s", t.seconds))
}

/// An enum value by name (its number if this build does not know it).
macro_rules! enum_json {
    ($ty:ty, $v:expr) => {
        <$ty>::try_from($v).map_or(::serde_json::Value::from($v), |e| {
            ::serde_json::Value::from(e.as_str_name())
        })
    };
}
pub(crate) use enum_json;

/// The enum name without its type prefix, lower case: `SNAPSHOT_OPERATION_DELETE` → `delete`.
pub fn short_enum(name: &Value, prefix: &str) -> String {
    match name {
        Value::String(s) => s.strip_prefix(prefix).unwrap_or(s).to_ascii_lowercase(),
        other => other.to_string(),
    }
}

impl ToJson for pb::Link {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("link_type".into(), enum_json!(pb::LinkType, self.link_type));
        for (k, v) in [
            ("measure_id", self.measure_id),
            ("area_id", self.area_id),
            ("priority_id", self.priority_id),
            ("species_id", self.species_id),
            ("habitat_id", self.habitat_id),
        ] {
            if v != 0 {
                m.insert(k.into(), v.into());
            }
        }
        if !self.grant_id.is_empty() {
            m.insert("grant_id".into(), self.grant_id.clone().into());
        }
        Value::Object(m)
    }
}

impl ToJson for pb::TableRowCount {
    fn to_json(&self) -> Value {
        json!({ "table": self.table, "rows": self.rows })
    }
}

impl ToJson for pb::DeleteOutcome {
    fn to_json(&self) -> Value {
        json!({
            "snapshot_id": self.snapshot_id,
            "snapshot_skipped_reason": self.snapshot_skipped_reason,
            "rows_removed": self.rows_removed.to_json(),
            "event_seq": self.event_seq,
            "replayed": self.replayed,
        })
    }
}

impl ToJson for pb::GetDeleteImpactResponse {
    fn to_json(&self) -> Value {
        let tables: Vec<Value> = self
            .tables
            .iter()
            .map(|t| {
                json!({
                    "table": t.table,
                    "key_columns": t.key_columns,
                    "rows": t.rows.iter().map(|r| json!({ "values": r.values })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "tables": tables, "total_rows": self.total_rows })
    }
}

impl ToJson for pb::MeasureType {
    fn to_json(&self) -> Value {
        json!({ "measure_type_id": self.measure_type_id, "measure_type": self.measure_type })
    }
}

impl ToJson for pb::Stakeholder {
    fn to_json(&self) -> Value {
        json!({ "stakeholder_id": self.stakeholder_id, "stakeholder": self.stakeholder })
    }
}

impl ToJson for pb::Benefit {
    fn to_json(&self) -> Value {
        json!({ "benefit_id": self.benefit_id, "benefit": self.benefit })
    }
}

impl ToJson for pb::FundingScheme {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "area_id": self.area_id,
            "area_name": self.area_name,
            "local_funding_schemes": self.local_funding_schemes,
        })
    }
}

impl ToJson for pb::SnapshotTable {
    fn to_json(&self) -> Value {
        json!({ "table": self.table, "rows": self.rows, "hash_sum": self.hash_sum })
    }
}

impl ToJson for pb::Snapshot {
    fn to_json(&self) -> Value {
        let labels: Map<String, Value> = {
            let mut l: Vec<_> = self.labels.iter().collect();
            l.sort();
            l.into_iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect()
        };
        json!({
            "snapshot_id": self.snapshot_id,
            "create_time": self.create_time.to_json(),
            "description": self.description,
            "operation": enum_json!(pb::SnapshotOperation, self.operation),
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "request_id": self.request_id,
            "labels": labels,
            "event_head_seq": self.event_head_seq,
            "duckdb_library_version": self.duckdb_library_version,
            "storage_version": self.storage_version,
            "logical_bytes": self.logical_bytes,
            "unique_stored_bytes": self.unique_stored_bytes,
            "block_count": self.block_count,
            "file_blake3": self.file_blake3,
            "tables": self.tables.to_json(),
            "pinned": self.pinned,
        })
    }
}

impl ToJson for pb::IntegrityCheck {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "passed": self.passed,
            "expected": self.expected,
            "actual": self.actual,
            "duration": self.duration.to_json(),
        })
    }
}

impl ToJson for pb::IntegrityReport {
    fn to_json(&self) -> Value {
        json!({ "passed": self.passed, "checks": self.checks.to_json() })
    }
}

impl ToJson for pb::RestoreSnapshotResponse {
    fn to_json(&self) -> Value {
        json!({
            "safety_snapshot_id": self.safety_snapshot_id,
            "report": self.report.to_json(),
            "rolled_back": self.rolled_back,
            "rollback_reason": self.rollback_reason,
            "event_seq": self.event_seq,
            "restored": self.restored.to_json(),
            "duration": self.duration.to_json(),
            "replayed": self.replayed,
        })
    }
}

impl ToJson for pb::RestorePlan {
    fn to_json(&self) -> Value {
        json!({
            "base_snapshot_id": self.base_snapshot_id,
            "base_event_seq": self.base_event_seq,
            "target_event_seq": self.target_event_seq,
            "target_time": self.target_time.to_json(),
            "events_to_replay": self.events_to_replay,
            "bytes_to_fetch": self.bytes_to_fetch,
            "earliest_reachable_seq": self.earliest_reachable_seq,
            "head_seq": self.head_seq,
        })
    }
}

impl ToJson for pb::RestoreToPointResponse {
    fn to_json(&self) -> Value {
        json!({ "plan": self.plan.to_json(), "restore": self.restore.to_json() })
    }
}

impl ToJson for pb::RetentionDecision {
    fn to_json(&self) -> Value {
        json!({ "snapshot_id": self.snapshot_id, "removed": self.removed, "reason": self.reason })
    }
}

impl ToJson for pb::ApplyRetentionResponse {
    fn to_json(&self) -> Value {
        json!({
            "decisions": self.decisions.to_json(),
            "bytes_freed": self.bytes_freed,
            "event_seq": self.event_seq,
        })
    }
}

impl ToJson for pb::PreviewValue {
    fn to_json(&self) -> Value {
        use pb::preview_value::Kind;
        match &self.kind {
            None => json!({}),
            Some(Kind::Text(t)) => json!({ "text": t }),
            Some(Kind::Integer(i)) => json!({ "integer": i }),
            Some(Kind::BlobBytes(b)) => json!({ "blob_bytes": b }),
        }
    }
}

impl ToJson for pb::PreviewSnapshotResponse {
    fn to_json(&self) -> Value {
        json!({
            "table_rows": self.table_rows.to_json(),
            "columns": self.columns,
            "rows": self.rows.iter().map(|r| json!({ "values": r.values.to_json() })).collect::<Vec<_>>(),
        })
    }
}

impl ToJson for pb::GetStatusResponse {
    fn to_json(&self) -> Value {
        json!({
            "state": enum_json!(pb::SnapshotState, self.state),
            "reason": self.reason,
            "policy": enum_json!(pb::SnapshotPolicy, self.policy),
            "snapshot_count": self.snapshot_count,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "duckdb_library_version": self.duckdb_library_version,
            "storage_version": self.storage_version,
            "database_available": self.database_available,
            "database_reason": self.database_reason,
            "event_head_seq": self.event_head_seq,
            "event_first_seq": self.event_first_seq,
            "restore_in_progress": self.restore_in_progress,
            "retention_keep_last": self.retention_keep_last,
            "retention_keep_within": self.retention_keep_within.to_json(),
            "database_bytes": self.database_bytes,
            "table_rows": self.table_rows.to_json(),
            "replica": self.replica.to_json(),
            "follower": self.follower.as_ref().map(|f| json!({
                "url": f.url,
                "applied_seq": f.applied_seq,
                "source_head_seq": f.source_head_seq,
                "staleness_seconds": f.staleness_seconds,
                "error": f.error,
            })),
            "capture_ahead": self.capture_ahead.as_ref().map(|a| json!({
                "state": enum_json!(pb::CaptureAheadState, a.state),
                "event_seq": a.event_seq,
                "started": a.started,
                "reused": a.reused,
                "fallbacks": a.fallbacks,
                "cancelled": a.cancelled,
                "failed": a.failed,
                "verified": a.verified,
                "mismatches": a.mismatches,
                "last_error": a.last_error,
            })),
            "event_sink": self.event_sink.as_ref().map(|n| json!({
                "url": n.url,
                "stream": n.stream,
                "subject_prefix": n.subject_prefix,
                "connected": n.connected,
                "published_seq": n.published_seq,
                "lag_events": n.lag_events,
                "error": n.error,
                "gap": n.gap,
                "skipped_events": n.skipped_events,
                "gap_first_seq": n.gap_first_seq,
                "gap_last_seq": n.gap_last_seq,
            })),
        })
    }
}

impl ToJson for pb::ReplicaStatus {
    fn to_json(&self) -> Value {
        json!({
            "url": self.url,
            "mode": self.mode,
            "state": enum_json!(pb::ReplicaState, self.state),
            "reason": self.reason,
            "replicated_seq": self.replicated_seq,
            "head_seq": self.head_seq,
            "lag_events": self.lag_events,
            "lag_seconds": self.lag_seconds,
            "lag_bytes": self.lag_bytes,
            "snapshots_replicated": self.snapshots_replicated,
            "snapshots_pending": self.snapshots_pending,
            "uploaded_bytes": self.uploaded_bytes,
            "last_upload_time": self.last_upload_time.to_json(),
            "lease_generation": self.lease_generation,
            "lease_holder": self.lease_holder,
            "healthy": self.healthy,
        })
    }
}

impl ToJson for pb::Resource {
    fn to_json(&self) -> Value {
        use pb::resource::Kind;
        match &self.kind {
            None => json!({}),
            Some(Kind::Measure(m)) => json!({ "measure": m.to_json() }),
            Some(Kind::Area(m)) => json!({ "area": m.to_json() }),
            Some(Kind::Priority(m)) => json!({ "priority": m.to_json() }),
            Some(Kind::Species(m)) => json!({ "species": m.to_json() }),
            Some(Kind::Habitat(m)) => json!({ "habitat": m.to_json() }),
            Some(Kind::Grant(m)) => json!({ "grant": m.to_json() }),
            Some(Kind::Link(l)) => json!({ "link": l.to_json() }),
        }
    }
}

impl ToJson for pb::Event {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("seq".into(), self.seq.into());
        m.insert("time".into(), self.time.to_json());
        m.insert("kind".into(), enum_json!(pb::EventKind, self.kind));
        m.insert("entity_type".into(), self.entity_type.clone().into());
        m.insert("entity_id".into(), self.entity_id.clone().into());
        m.insert("request_id".into(), self.request_id.clone().into());
        m.insert("rpc".into(), self.rpc.clone().into());
        m.insert("principal".into(), self.principal.clone().into());
        m.insert("peer".into(), self.peer.clone().into());
        // Like the proto3 JSON mapping, absent sub-messages are omitted.
        let mut opt = |k: &str, v: Value| {
            if !v.is_null() {
                m.insert(k.into(), v);
            }
        };
        opt("before", self.before.to_json());
        opt("after", self.after.to_json());
        opt("delete", self.delete.to_json());
        opt(
            "snapshot",
            self.snapshot.as_ref().map_or(Value::Null, |s| {
                json!({
                    "snapshot_id": s.snapshot_id,
                    "operation": enum_json!(pb::SnapshotOperation, s.operation),
                    "description": s.description,
                })
            }),
        );
        opt(
            "restore",
            self.restore.as_ref().map_or(Value::Null, |r| {
                json!({
                    "snapshot_id": r.snapshot_id,
                    "safety_snapshot_id": r.safety_snapshot_id,
                    "rolled_back": r.rolled_back,
                    "rollback_reason": r.rollback_reason,
                    "checks_run": r.checks_run,
                    "checks_failed": r.checks_failed,
                })
            }),
        );
        opt(
            "retention",
            self.retention.as_ref().map_or(Value::Null, |r| {
                json!({ "removed_snapshot_ids": r.removed_snapshot_ids, "bytes_freed": r.bytes_freed })
            }),
        );
        opt(
            "storage",
            self.storage.as_ref().map_or(
                Value::Null,
                |s| json!({ "reason": s.reason, "message": s.message }),
            ),
        );
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_timestamps_follow_the_proto_json_mapping() {
        assert_eq!(
            Duration {
                seconds: 1,
                nanos: 500_000_000
            }
            .to_json(),
            json!("1.5s")
        );
        assert_eq!(
            Duration {
                seconds: 3,
                nanos: 0
            }
            .to_json(),
            json!("3s")
        );
        assert_eq!(
            Timestamp {
                seconds: 0,
                nanos: 0
            }
            .to_json(),
            json!("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn enums_are_written_by_name_and_links_only_carry_their_ids() {
        let l = pb::Link {
            link_type: pb::LinkType::HabitatCreationArea as i32,
            habitat_id: 3,
            area_id: 2,
            ..Default::default()
        };
        assert_eq!(
            l.to_json(),
            json!({ "link_type": "LINK_TYPE_HABITAT_CREATION_AREA", "area_id": 2, "habitat_id": 3 })
        );
    }
}
