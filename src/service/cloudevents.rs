//! Events as CloudEvents 1.0 in the CloudEvents protobuf format (`io.cloudevents.v1`): what
//! WatchEvents and ListEvents send when a client asks for `EVENT_FORMAT_CLOUDEVENTS`, so event
//! routers (Knative, Eventarc, Kafka Connect) route our events by their standard attributes.
//!
//! The mapping (also documented on `EventFormat` in the contract):
//! - `id`: the seq, decimal; `source`: the server's `cloudevents_source` — the log never reuses
//!   a seq, so `source` + `id` is unique;
//! - `type`: `lnrs.v1.<resource>.<change>` ([`type_name`]);
//! - attributes `time`, `subject` (`<entity_type>/<entity_id>`), `datacontenttype`, and the
//!   extensions `sequence` (the seq zero-padded to 20 digits: the sequence extension orders
//!   its values as strings) and `traceid` (the event's trace id, when it has one);
//! - data: the native `lnrs.v1.Event` as `proto_data`.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::events::EventKind;
use crate::pb;
use crate::pb::cloudevents::cloud_event::{
    cloud_event_attribute_value::Attr, CloudEventAttributeValue,
};
use crate::pb::cloudevents::{cloud_event::Data, CloudEvent};

/// The CloudEvents version of the envelope.
pub const SPEC_VERSION: &str = "1.0";
/// The `proto_data` type URL of the data.
pub const DATA_TYPE_URL: &str = "type.googleapis.com/lnrs.v1.Event";

/// Whether a request's `format` asks for CloudEvents (unknown values are refused, not guessed).
pub fn wanted(format: i32) -> Result<bool, Error> {
    match pb::EventFormat::try_from(format) {
        Ok(pb::EventFormat::Unspecified | pb::EventFormat::Native) => Ok(false),
        Ok(pb::EventFormat::Cloudevents) => Ok(true),
        Err(_) => Err(Error::invalid(
            "format",
            "UNKNOWN_EVENT_FORMAT",
            format!("{format} is not an event format"),
        )),
    }
}

/// The CloudEvents `type` of an event kind: `lnrs.v1.<resource>.<change>`.
pub fn type_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EntityCreated => "lnrs.v1.entity.created",
        EventKind::EntityUpdated => "lnrs.v1.entity.updated",
        EventKind::EntityDeleted => "lnrs.v1.entity.deleted",
        EventKind::EntityUndeleted => "lnrs.v1.entity.undeleted",
        EventKind::LinkCreated => "lnrs.v1.link.created",
        EventKind::LinkDeleted => "lnrs.v1.link.deleted",
        EventKind::LinkUndeleted => "lnrs.v1.link.undeleted",
        EventKind::SnapshotCreated => "lnrs.v1.snapshot.created",
        EventKind::SnapshotUpdated => "lnrs.v1.snapshot.updated",
        EventKind::SnapshotDeleted => "lnrs.v1.snapshot.deleted",
        EventKind::RestorePerformed => "lnrs.v1.snapshot.restored",
        EventKind::RetentionApplied => "lnrs.v1.retention.applied",
        EventKind::StorageDegraded => "lnrs.v1.storage.degraded",
        EventKind::StorageRecovered => "lnrs.v1.storage.recovered",
        EventKind::Imported => "lnrs.v1.data.imported",
    }
}

fn text(s: impl Into<String>) -> CloudEventAttributeValue {
    CloudEventAttributeValue {
        attr: Some(Attr::CeString(s.into())),
    }
}

/// `event` (its kind given separately: the native message carries it as a number) as a
/// CloudEvent from `source`.
pub fn envelope(source: &str, kind: EventKind, event: pb::Event) -> CloudEvent {
    let mut attributes = BTreeMap::new();
    if let Some(t) = event.time {
        attributes.insert(
            "time".to_string(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeTimestamp(t)),
            },
        );
    }
    if !event.entity_type.is_empty() {
        let subject = format!("{}/{}", event.entity_type, event.entity_id);
        attributes.insert("subject".into(), text(subject));
    }
    attributes.insert("datacontenttype".into(), text("application/protobuf"));
    attributes.insert("sequence".into(), text(format!("{:020}", event.seq)));
    if !event.trace_id.is_empty() {
        attributes.insert("traceid".into(), text(event.trace_id.clone()));
    }
    CloudEvent {
        id: event.seq.to_string(),
        source: source.to_string(),
        spec_version: SPEC_VERSION.into(),
        r#type: type_name(kind).into(),
        attributes,
        data: Some(Data::ProtoData(prost_types::Any {
            type_url: DATA_TYPE_URL.into(),
            value: prost::Message::encode_to_vec(&event),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_type() {
        let kinds = [
            EventKind::EntityCreated,
            EventKind::EntityUpdated,
            EventKind::EntityDeleted,
            EventKind::EntityUndeleted,
            EventKind::LinkCreated,
            EventKind::LinkDeleted,
            EventKind::LinkUndeleted,
            EventKind::SnapshotCreated,
            EventKind::SnapshotUpdated,
            EventKind::SnapshotDeleted,
            EventKind::RestorePerformed,
            EventKind::RetentionApplied,
            EventKind::StorageDegraded,
            EventKind::StorageRecovered,
            EventKind::Imported,
        ];
        let types: std::collections::BTreeSet<_> = kinds.iter().map(|k| type_name(*k)).collect();
        assert_eq!(types.len(), kinds.len());
        assert!(types.iter().all(|t| t.starts_with("lnrs.v1.")));
    }

    #[test]
    fn formats_are_checked() {
        assert!(!wanted(0).unwrap());
        assert!(!wanted(1).unwrap());
        assert!(wanted(2).unwrap());
        assert!(wanted(9).is_err());
    }
}
