//! What users change about a snapshot after it was taken: the pin that keeps it from retention
//! and from a plain delete, its labels and its description.
//!
//! A manifest is sealed and never rewritten, and the catalog is a cache rebuilt from the
//! manifests, so neither can hold a user's later change. Each annotated snapshot has its own
//! small record, `annotations/<id>.json`, sealed like a manifest (see
//! [`super::manifest::seal`]), written atomically and durably, loaded at open, and removed when
//! the snapshot is forgotten. Labels and description it sets replace the manifest's wherever a
//! snapshot is shown; the manifest itself keeps what was recorded when it was taken.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::SnapshotError;
use super::id::SnapshotId;
use super::manifest::{seal, unseal, SnapshotMeta};

/// Version of the annotation record written by this build.
const FORMAT_VERSION: u32 = 1;

/// A snapshot's user annotation. The default (not pinned, nothing replaced) is no record at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Kept by the user: retention never removes it, a delete needs `force`.
    pub pinned: bool,
    /// Replaces the manifest's labels (`None`: the manifest's stand).
    pub labels: Option<BTreeMap<String, String>>,
    /// Replaces the manifest's description (`None`: the manifest's stands).
    pub description: Option<String>,
    /// When the user last changed it (`None` for the default).
    pub updated_at: Option<DateTime<Utc>>,
    /// Set when the snapshot was loaded from an archive (another server's history): its
    /// `event_head_seq` counts another log, so it is never the base of a point-in-time state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<DateTime<Utc>>,
}

/// A change to an annotation: every `Some` field replaces the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationUpdate {
    pub pinned: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub description: Option<String>,
}

impl AnnotationUpdate {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.pinned.is_none() && self.labels.is_none() && self.description.is_none()
    }
}

/// The record on disk: the annotation and the snapshot it belongs to.
#[derive(Serialize, Deserialize)]
struct Record {
    format_version: u32,
    id: SnapshotId,
    #[serde(flatten)]
    annotation: Annotation,
}

impl Annotation {
    /// How a record that fails its checksum is read: pinned. Losing a user's pin could let
    /// retention remove the snapshot; keeping it costs only space, and the next update rewrites
    /// the record.
    pub(crate) fn damaged() -> Self {
        Annotation {
            pinned: true,
            ..Default::default()
        }
    }

    /// This annotation with `update` applied at `now`.
    pub fn updated(&self, update: AnnotationUpdate, now: DateTime<Utc>) -> Self {
        Annotation {
            pinned: update.pinned.unwrap_or(self.pinned),
            labels: update.labels.or_else(|| self.labels.clone()),
            description: update.description.or_else(|| self.description.clone()),
            updated_at: Some(now),
            loaded_at: self.loaded_at,
        }
    }

    /// True when it neither pins nor replaces anything (its record can go).
    pub fn is_empty(&self) -> bool {
        !self.pinned
            && self.labels.is_none()
            && self.description.is_none()
            && self.loaded_at.is_none()
    }

    /// The snapshot's metadata as users see it: the manifest's, with what this replaces.
    pub fn apply(&self, meta: &mut SnapshotMeta) {
        if let Some(labels) = &self.labels {
            meta.labels = labels.clone();
        }
        if let Some(description) = &self.description {
            meta.description = description.clone();
        }
    }

    /// The sealed record of snapshot `id`.
    pub(crate) fn encode(&self, id: &SnapshotId) -> Result<Vec<u8>, SnapshotError> {
        seal(&Record {
            format_version: FORMAT_VERSION,
            id: id.clone(),
            annotation: self.clone(),
        })
    }

    /// Decodes and checks the record of snapshot `id`: a broken seal, another snapshot's record
    /// or a newer format is an error.
    pub(crate) fn decode(bytes: &[u8], id: &SnapshotId) -> Result<Self, SnapshotError> {
        let what = format!("annotation {id}");
        let r: Record = unseal(bytes, &what)?;
        if r.format_version > FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormat {
                found: r.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if &r.id != id {
            return Err(SnapshotError::corrupt(
                what,
                format!("names snapshot {}", r.id),
            ));
        }
        Ok(r.annotation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SnapshotId {
        SnapshotId::generate(Utc::now(), None)
    }

    #[test]
    fn updates_replace_only_what_they_name() {
        let now = Utc::now();
        let a = Annotation::default().updated(
            AnnotationUpdate {
                pinned: Some(true),
                ..Default::default()
            },
            now,
        );
        assert!(a.pinned && a.labels.is_none() && a.description.is_none());
        let b = a.updated(
            AnnotationUpdate {
                description: Some("spring import".into()),
                labels: Some(BTreeMap::from([("k".into(), "v".into())])),
                ..Default::default()
            },
            now,
        );
        assert!(b.pinned);
        let mut meta = SnapshotMeta {
            description: "taken".into(),
            labels: BTreeMap::from([("old".into(), "x".into())]),
            ..Default::default()
        };
        b.apply(&mut meta);
        assert_eq!(meta.description, "spring import");
        assert_eq!(meta.labels, BTreeMap::from([("k".into(), "v".into())]));
        let unpinned = a.updated(
            AnnotationUpdate {
                pinned: Some(false),
                ..Default::default()
            },
            now,
        );
        assert!(unpinned.is_empty());
        assert!(Annotation::damaged().pinned);
    }

    #[test]
    fn records_round_trip_and_detect_every_flip_and_a_wrong_owner() {
        let id = id();
        let a = Annotation {
            pinned: true,
            labels: Some(BTreeMap::from([("who".into(), "q\"uoted".into())])),
            description: Some("keep".into()),
            updated_at: Some(Utc::now()),
            loaded_at: Some(Utc::now()),
        };
        let bytes = a.encode(&id).expect("encode");
        assert_eq!(Annotation::decode(&bytes, &id).expect("decode"), a);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Annotation::decode(&bad, &id).is_err(), "flip at {i}");
            assert!(Annotation::decode(&bytes[..i], &id).is_err(), "cut at {i}");
        }
        let other = SnapshotId::generate(Utc::now(), Some(&id));
        assert!(Annotation::decode(&bytes, &other).is_err());
    }
}
