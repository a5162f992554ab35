//! Conversions between the generated protobuf messages and the domain: entity messages ↔
//! records/drafts (one macro line per entity lists its fields once), links, events, snapshots
//! and integrity reports.

use prost_types::Timestamp;

use crate::app::history::StateRef;
use crate::app::undelete::Undeleted;
use crate::domain::rows::{Datum, RowImages, TableRows};
use crate::domain::state::{RowChange, RowDiff, TableDiff};
use crate::domain::{
    Draft, EntityKind, Key, Link, LinkKind, LinkParts, MeasureSets, Record, Value,
};
use crate::error::Error;
use crate::events::model as ev;
use crate::pb;
use crate::snapshot::{IntegrityReport, Manifest, Operation};

/// A typed entity message.
pub trait EntityMessage: Sized + Default {
    const KIND: EntityKind;
    /// The caller's message as a draft (id included when set).
    fn into_draft(self) -> Result<Draft, Error>;
    /// A stored record as a message.
    fn from_record(r: &Record) -> Result<Self, Error>;
}

/// The position of `column` among `kind`'s columns. A name the entity does not have is an
/// error, never skipped: a message field whose column was renamed or removed in the domain
/// would otherwise drop the caller's value (or always read back empty) without a word.
fn column(kind: EntityKind, column: &str) -> Result<usize, Error> {
    kind.def().column_index(column).ok_or_else(|| {
        Error::Internal(format!(
            "message field `{column}` has no column in {}",
            kind.def().table
        ))
    })
}

fn put(values: &mut [Value], kind: EntityKind, name: &str, v: Value) -> Result<(), Error> {
    let i = column(kind, name)?;
    let slot = values.get_mut(i).ok_or_else(|| {
        Error::Internal(format!("draft of {} has no slot for `{name}`", kind.name()))
    })?;
    *slot = v;
    Ok(())
}

fn value<'a>(r: &'a Record, name: &str) -> Result<&'a Value, Error> {
    let i = column(r.kind, name)?;
    r.values.get(i).ok_or_else(|| {
        Error::Internal(format!(
            "{} record has no value for `{name}`",
            r.kind.name()
        ))
    })
}

fn text(r: &Record, column: &str) -> Result<Option<String>, Error> {
    Ok(value(r, column)?.opt_text())
}

fn int(r: &Record, column: &str) -> Result<Option<i64>, Error> {
    Ok(value(r, column)?.as_int())
}

fn int_key(k: &Key) -> i32 {
    match k {
        Key::Int(i) => *i,
        Key::Text(_) => 0,
    }
}

fn text_key(k: &Key) -> String {
    k.to_string()
}

/// Proto id → optional domain key: 0 / "" means unset.
pub fn key_from_int(i: i32) -> Option<Key> {
    (i != 0).then_some(Key::Int(i))
}

pub fn key_from_text(s: String) -> Option<Key> {
    (!s.is_empty()).then_some(Key::Text(s))
}

macro_rules! field_value {
    (req, $v:expr) => {
        Value::Text($v)
    };
    (opt, $v:expr) => {
        Value::from($v)
    };
    (opt_int, $v:expr) => {
        Value::from($v)
    };
}

macro_rules! field_out {
    (req, $r:expr, $c:expr) => {
        text($r, $c)?.unwrap_or_default()
    };
    (opt, $r:expr, $c:expr) => {
        text($r, $c)?
    };
    (opt_int, $r:expr, $c:expr) => {
        int($r, $c)?
    };
}

macro_rules! entity_message {
    ($msg:ident, $kind:expr, $key:ident, $key_in:ident, $key_out:ident, [$($f:ident : $t:tt),* $(,)?]) => {
        impl EntityMessage for pb::$msg {
            const KIND: EntityKind = $kind;
            fn into_draft(self) -> Result<Draft, Error> {
                let mut values = vec![Value::Null; Self::KIND.def().columns.len()];
                $( put(&mut values, Self::KIND, stringify!($f), field_value!($t, self.$f))?; )*
                Ok(Draft { kind: Self::KIND, key: $key_in(self.$key), values, sets: None })
            }
            fn from_record(r: &Record) -> Result<Self, Error> {
                Ok(Self {
                    $key: $key_out(&r.key),
                    $( $f: field_out!($t, r, stringify!($f)), )*
                })
            }
        }
    };
}

entity_message!(Area, EntityKind::Area, area_id, key_from_int, int_key, [
    area_name: req, area_description: req, area_link: opt, bng_hab_mgt: opt, bng_hab_creation: opt,
]);
entity_message!(Priority, EntityKind::Priority, priority_id, key_from_int, int_key, [
    biodiversity_priority: req, simplified_biodiversity_priority: opt, theme: req,
]);
entity_message!(Habitat, EntityKind::Habitat, habitat_id, key_from_int, int_key, [habitat: req]);
entity_message!(Grant, EntityKind::Grant, grant_id, key_from_text, text_key, [
    grant_name: req, grant_scheme: req, url: opt, grant_summary: opt,
]);
entity_message!(Species, EntityKind::Species, species_id, key_from_int, int_key, [
    taxa: req, common_name: req, assemblage: req, species_link: opt, linnaean_name: opt,
    usage_key: opt, scientific_name: req, status: opt, kingdom: opt, phylum: opt, order: opt,
    family: opt, genus: opt, species: opt, kingdom_key: opt, phylum_key: opt, class_key: opt,
    order_key: opt, family_key: opt, genus_key: opt, species_key: opt, synonym: opt, class: opt,
    accepted_usage_key: opt, verbatim_name: opt, verbatim_index: opt_int, gbif_species_url: opt,
    image_url: opt, license: opt, attribution: opt, photo_url: opt,
]);

/// Measures also carry their three sets, so they are written out by hand.
impl EntityMessage for pb::Measure {
    const KIND: EntityKind = EntityKind::Measure;

    fn into_draft(self) -> Result<Draft, Error> {
        let kind = Self::KIND;
        let mut values = vec![Value::Null; kind.def().columns.len()];
        for (name, v) in [
            ("measure", Value::Text(self.measure)),
            (
                "other_priorities_delivered",
                self.other_priorities_delivered.into(),
            ),
            ("core_supplementary", Value::Text(self.core_supplementary)),
            ("mapped_unmapped", self.mapped_unmapped.into()),
            ("relevant_map_layer", self.relevant_map_layer.into()),
            (
                "link_to_further_guidance",
                self.link_to_further_guidance.into(),
            ),
            ("concise_measure", self.concise_measure.into()),
        ] {
            put(&mut values, kind, name, v)?;
        }
        Ok(Draft {
            kind,
            key: key_from_int(self.measure_id),
            values,
            sets: Some(MeasureSets {
                measure_type_ids: self.measure_type_ids,
                stakeholder_ids: self.stakeholder_ids,
                benefit_ids: self.benefit_ids,
            }),
        })
    }

    fn from_record(r: &Record) -> Result<Self, Error> {
        let sets = r.sets.clone().unwrap_or_default();
        Ok(Self {
            measure_id: int_key(&r.key),
            measure: text(r, "measure")?.unwrap_or_default(),
            other_priorities_delivered: text(r, "other_priorities_delivered")?,
            core_supplementary: text(r, "core_supplementary")?.unwrap_or_default(),
            mapped_unmapped: text(r, "mapped_unmapped")?,
            relevant_map_layer: text(r, "relevant_map_layer")?,
            link_to_further_guidance: text(r, "link_to_further_guidance")?,
            concise_measure: text(r, "concise_measure")?,
            measure_type_ids: sets.measure_type_ids,
            stakeholder_ids: sets.stakeholder_ids,
            benefit_ids: sets.benefit_ids,
        })
    }
}

/// A record as the typed `Resource` oneof.
pub fn resource_of_record(r: &Record) -> Result<pb::Resource, Error> {
    use pb::resource::Kind;
    let kind = match r.kind {
        EntityKind::Measure => Kind::Measure(pb::Measure::from_record(r)?),
        EntityKind::Area => Kind::Area(pb::Area::from_record(r)?),
        EntityKind::Priority => Kind::Priority(pb::Priority::from_record(r)?),
        EntityKind::Species => Kind::Species(pb::Species::from_record(r)?),
        EntityKind::Habitat => Kind::Habitat(pb::Habitat::from_record(r)?),
        EntityKind::Grant => Kind::Grant(pb::Grant::from_record(r)?),
    };
    Ok(pb::Resource { kind: Some(kind) })
}

pub fn resource(r: &ev::Resource) -> Result<pb::Resource, Error> {
    Ok(match r {
        ev::Resource::Entity(rec) => resource_of_record(rec)?,
        ev::Resource::Link(l) => pb::Resource {
            kind: Some(pb::resource::Kind::Link(link_out(l))),
        },
    })
}

pub fn link_kind_in(t: i32) -> Result<LinkKind, Error> {
    use pb::LinkType as T;
    match T::try_from(t) {
        Ok(T::MeasureAreaPriority) => Ok(LinkKind::MeasureAreaPriority),
        Ok(T::MeasureAreaPriorityGrant) => Ok(LinkKind::MeasureAreaPriorityGrant),
        Ok(T::SpeciesAreaPriority) => Ok(LinkKind::SpeciesAreaPriority),
        Ok(T::HabitatCreationArea) => Ok(LinkKind::HabitatCreationArea),
        Ok(T::HabitatManagementArea) => Ok(LinkKind::HabitatManagementArea),
        Ok(T::MeasureSpecies) => Ok(LinkKind::MeasureSpecies),
        Ok(T::Unspecified) | Err(_) => Err(Error::invalid(
            "link_type",
            "LINK_TYPE_REQUIRED",
            "must be a known link type",
        )),
    }
}

fn link_type_out(k: LinkKind) -> pb::LinkType {
    use pb::LinkType as T;
    match k {
        LinkKind::MeasureAreaPriority => T::MeasureAreaPriority,
        LinkKind::MeasureAreaPriorityGrant => T::MeasureAreaPriorityGrant,
        LinkKind::SpeciesAreaPriority => T::SpeciesAreaPriority,
        LinkKind::HabitatCreationArea => T::HabitatCreationArea,
        LinkKind::HabitatManagementArea => T::HabitatManagementArea,
        LinkKind::MeasureSpecies => T::MeasureSpecies,
    }
}

fn nz(i: i32) -> Option<i32> {
    (i != 0).then_some(i)
}

/// The flat parts of a proto link (0 / "" = unset).
pub fn link_parts(l: &pb::Link) -> LinkParts {
    LinkParts {
        measure_id: nz(l.measure_id),
        area_id: nz(l.area_id),
        priority_id: nz(l.priority_id),
        species_id: nz(l.species_id),
        habitat_id: nz(l.habitat_id),
        grant_id: (!l.grant_id.is_empty()).then(|| l.grant_id.clone()),
    }
}

/// A proto link as a validated domain link.
pub fn link_in(l: Option<pb::Link>) -> Result<Link, Error> {
    let l = l.ok_or_else(|| Error::invalid("link", "LINK_REQUIRED", "is required"))?;
    let kind = link_kind_in(l.link_type)?;
    Ok(Link::from_parts(kind, &link_parts(&l))?)
}

pub fn link_out(l: &Link) -> pb::Link {
    let p = LinkParts::of(l);
    pb::Link {
        link_type: link_type_out(l.kind) as i32,
        measure_id: p.measure_id.unwrap_or(0),
        area_id: p.area_id.unwrap_or(0),
        priority_id: p.priority_id.unwrap_or(0),
        species_id: p.species_id.unwrap_or(0),
        habitat_id: p.habitat_id.unwrap_or(0),
        grant_id: p.grant_id.unwrap_or_default(),
    }
}

pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(field: &str, t: Timestamp) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .ok_or_else(|| Error::invalid(field, "INVALID_TIMESTAMP", "is out of range"))
}

pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Largest |seconds| of a protobuf Duration (10,000 years, per duration.proto).
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

pub fn from_duration(field: &str, d: prost_types::Duration) -> Result<std::time::Duration, Error> {
    // Checked first: prost-types negates `seconds` to report a negative duration, which
    // overflows for i64::MIN (a panic in debug builds).
    if d.seconds.unsigned_abs() > MAX_DURATION_SECONDS {
        return Err(Error::invalid(
            field,
            "INVALID_DURATION",
            "is out of range (at most 10,000 years)",
        ));
    }
    std::time::Duration::try_from(d)
        .map_err(|_| Error::invalid(field, "INVALID_DURATION", "must be a non-negative duration"))
}

/// The outcome of a delete RPC.
pub fn deleted(d: &crate::app::entities::Deleted, replayed: bool) -> pb::DeleteOutcome {
    delete_outcome(
        &ev::DeleteInfo {
            snapshot_id: d.snapshot_id.clone(),
            snapshot_skipped_reason: d.snapshot_skipped_reason.clone(),
            rows_removed: d.rows_removed.clone(),
        },
        d.event_seq,
        replayed,
    )
}

/// The delete detail of an event (and, through [`deleted`], of a delete RPC).
pub fn delete_outcome(info: &ev::DeleteInfo, event_seq: u64, replayed: bool) -> pb::DeleteOutcome {
    pb::DeleteOutcome {
        snapshot_id: info.snapshot_id.clone().unwrap_or_default(),
        snapshot_skipped_reason: info.snapshot_skipped_reason.clone().unwrap_or_default(),
        rows_removed: row_counts(&info.rows_removed),
        event_seq,
        replayed,
    }
}

pub fn event_kind_out(k: ev::EventKind) -> pb::EventKind {
    use ev::EventKind as K;
    use pb::EventKind as P;
    match k {
        K::EntityCreated => P::EntityCreated,
        K::EntityUpdated => P::EntityUpdated,
        K::EntityDeleted => P::EntityDeleted,
        K::LinkCreated => P::LinkCreated,
        K::LinkDeleted => P::LinkDeleted,
        K::SnapshotCreated => P::SnapshotCreated,
        K::SnapshotDeleted => P::SnapshotDeleted,
        K::RestorePerformed => P::RestorePerformed,
        K::RetentionApplied => P::RetentionApplied,
        K::StorageDegraded => P::StorageDegraded,
        K::StorageRecovered => P::StorageRecovered,
        K::EntityUndeleted => P::EntityUndeleted,
        K::LinkUndeleted => P::LinkUndeleted,
        K::SnapshotUpdated => P::SnapshotUpdated,
        K::Imported => P::Imported,
    }
}

pub fn event_kind_in(k: i32) -> Result<ev::EventKind, Error> {
    use ev::EventKind as K;
    use pb::EventKind as P;
    Ok(match P::try_from(k) {
        Ok(P::EntityCreated) => K::EntityCreated,
        Ok(P::EntityUpdated) => K::EntityUpdated,
        Ok(P::EntityDeleted) => K::EntityDeleted,
        Ok(P::LinkCreated) => K::LinkCreated,
        Ok(P::LinkDeleted) => K::LinkDeleted,
        Ok(P::SnapshotCreated) => K::SnapshotCreated,
        Ok(P::SnapshotDeleted) => K::SnapshotDeleted,
        Ok(P::RestorePerformed) => K::RestorePerformed,
        Ok(P::RetentionApplied) => K::RetentionApplied,
        Ok(P::StorageDegraded) => K::StorageDegraded,
        Ok(P::StorageRecovered) => K::StorageRecovered,
        Ok(P::EntityUndeleted) => K::EntityUndeleted,
        Ok(P::LinkUndeleted) => K::LinkUndeleted,
        Ok(P::SnapshotUpdated) => K::SnapshotUpdated,
        Ok(P::Imported) => K::Imported,
        Ok(P::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                "kinds",
                "UNKNOWN_EVENT_KIND",
                format!("{k} is not an event kind"),
            ))
        }
    })
}

pub fn operation_out(o: Operation) -> pb::SnapshotOperation {
    match o {
        Operation::Delete => pb::SnapshotOperation::Delete,
        Operation::DeleteLink => pb::SnapshotOperation::DeleteLink,
        Operation::Manual => pb::SnapshotOperation::Manual,
        Operation::PreRestore => pb::SnapshotOperation::PreRestore,
        Operation::Import => pb::SnapshotOperation::Import,
    }
}

pub fn operation_in(o: i32) -> Result<Option<Operation>, Error> {
    use pb::SnapshotOperation as P;
    Ok(match P::try_from(o) {
        Ok(P::Unspecified) => None,
        Ok(P::Delete) => Some(Operation::Delete),
        Ok(P::DeleteLink) => Some(Operation::DeleteLink),
        Ok(P::Manual) => Some(Operation::Manual),
        Ok(P::PreRestore) => Some(Operation::PreRestore),
        Ok(P::Import) => Some(Operation::Import),
        Err(_) => {
            return Err(Error::invalid(
                "operation",
                "UNKNOWN_OPERATION",
                format!("{o} is not a snapshot operation"),
            ))
        }
    })
}

fn operation_name_out(s: &str) -> pb::SnapshotOperation {
    Operation::parse(s).map_or(pb::SnapshotOperation::Unspecified, operation_out)
}

pub fn event(e: &ev::Event) -> Result<pb::Event, Error> {
    let b = &e.body;
    Ok(pb::Event {
        seq: e.seq,
        time: Some(timestamp(e.time)),
        kind: event_kind_out(b.kind) as i32,
        entity_type: b.entity_type.clone().unwrap_or_default(),
        entity_id: b.entity_id.clone().unwrap_or_default(),
        request_id: e.origin.request_id.clone().unwrap_or_default(),
        rpc: e.origin.rpc.clone().unwrap_or_default(),
        trace_id: e.origin.trace_id.clone().unwrap_or_default(),
        before: b.before.as_ref().map(resource).transpose()?,
        after: b.after.as_ref().map(resource).transpose()?,
        delete: b.delete.as_ref().map(|d| delete_outcome(d, e.seq, false)),
        snapshot: b.snapshot.as_ref().map(|s| pb::SnapshotEventDetail {
            snapshot_id: s.snapshot_id.clone(),
            operation: operation_name_out(&s.operation) as i32,
            description: s.description.clone(),
        }),
        restore: b.restore.as_ref().map(|r| pb::RestoreEventDetail {
            snapshot_id: r.snapshot_id.clone(),
            safety_snapshot_id: r.safety_snapshot_id.clone(),
            rolled_back: r.rolled_back,
            rollback_reason: r.rollback_reason.clone().unwrap_or_default(),
            checks_run: r.checks_run,
            checks_failed: r.checks_failed.clone(),
        }),
        retention: b.retention.as_ref().map(|r| pb::RetentionEventDetail {
            removed_snapshot_ids: r.removed_snapshot_ids.clone(),
            bytes_freed: r.bytes_freed,
        }),
        storage: b.storage.as_ref().map(|s| pb::StorageEventDetail {
            reason: s.reason.clone(),
            message: s.message.clone(),
        }),
        rows: (!b.rows.is_empty()).then(|| row_images(&b.rows)),
        undelete: b.undelete.as_ref().map(|u| pb::UndeleteEventDetail {
            delete_event_seq: u.delete_event_seq,
            snapshot_id: u.snapshot_id.clone().unwrap_or_default(),
            source: u.source.clone(),
        }),
        principal: e.origin.principal.clone().unwrap_or_default(),
        peer: e.origin.peer.clone().unwrap_or_default(),
        log_record: Vec::new(),
    })
}

/// Rows per table.
pub fn row_counts(counts: &[(String, i64)]) -> Vec<pb::TableRowCount> {
    counts
        .iter()
        .map(|(t, n)| pb::TableRowCount {
            table: t.clone(),
            rows: *n,
        })
        .collect()
}

/// An undelete's outcome.
pub fn undeleted(u: &Undeleted, replayed: bool) -> pb::UndeleteResponse {
    pb::UndeleteResponse {
        event_seq: u.event_seq,
        rows: Some(pb::RowImages {
            before: Vec::new(),
            after: u.rows.iter().map(table_rows).collect(),
        }),
        rows_restored: row_counts(&RowImages::counts(&u.rows)),
        conflicts: u
            .conflicts
            .iter()
            .map(|c| pb::UndeleteConflict {
                table: c.table.clone(),
                key: c.key.clone(),
                kind: c.kind.as_str().to_string(),
                description: c.description.clone(),
            })
            .collect(),
        source: u.info.source.clone(),
        delete_event_seq: u.info.delete_event_seq,
        replayed,
    }
}

/// A point in the data's history, as a request names it.
pub fn state_ref(field: &str, r: Option<pb::StateRef>) -> Result<StateRef, Error> {
    use pb::state_ref::State;
    match r.and_then(|r| r.state) {
        Some(State::SnapshotId(id)) if !id.is_empty() => Ok(StateRef::Snapshot(id)),
        Some(State::EventSeq(seq)) if seq > 0 => Ok(StateRef::Event(seq)),
        Some(State::Live(true)) => Ok(StateRef::Live),
        _ => Err(Error::invalid(
            field,
            "STATE_NOT_NAMED",
            format!("{field} must name a snapshot_id, an event_seq, or live = true"),
        )),
    }
}

pub fn table_diff(d: &TableDiff) -> pb::TableDiff {
    pb::TableDiff {
        table: d.table.clone(),
        columns: d.columns.clone(),
        added: d.added,
        removed: d.removed,
        changed: d.changed,
    }
}

pub fn row_diff(d: &RowDiff) -> pb::RowDiff {
    pb::RowDiff {
        table: d.table.clone(),
        kind: match d.change {
            RowChange::Added => pb::RowChangeKind::Added,
            RowChange::Removed => pb::RowChangeKind::Removed,
            RowChange::Changed => pb::RowChangeKind::Changed,
        } as i32,
        before: d.before.as_deref().map(row),
        after: d.after.as_deref().map(row),
    }
}

/// Row images as messages: the one conversion of [`RowImages`].
pub fn row_images(im: &RowImages) -> pb::RowImages {
    pb::RowImages {
        before: im.before.iter().map(table_rows).collect(),
        after: im.after.iter().map(table_rows).collect(),
    }
}

pub fn table_rows(t: &TableRows) -> pb::TableRows {
    pb::TableRows {
        table: t.table.clone(),
        columns: t.columns.clone(),
        rows: t.rows.iter().map(|r| row(r)).collect(),
    }
}

pub fn row(values: &[Datum]) -> pb::Row {
    pb::Row {
        values: values.iter().map(datum).collect(),
    }
}

fn datum(d: &Datum) -> pb::Datum {
    use pb::datum::Kind;
    pb::Datum {
        kind: match d {
            Datum::Null => None,
            Datum::Int(i) => Some(Kind::Integer(*i)),
            Datum::Text(t) => Some(Kind::Text(t.clone())),
            Datum::Blob(b) => Some(Kind::Blob(b.clone())),
        },
    }
}

pub fn report(r: &IntegrityReport) -> pb::IntegrityReport {
    pb::IntegrityReport {
        passed: r.passed(),
        checks: r
            .checks
            .iter()
            .map(|c| pb::IntegrityCheck {
                name: c.name.clone(),
                passed: c.passed,
                expected: c.expected.clone(),
                actual: c.actual.clone(),
                duration: Some(duration(c.duration)),
            })
            .collect(),
    }
}

/// A manifest as the Snapshot message, as listed when `item` is its listing (sizes, the
/// user's pin, labels and description), else as the manifest recorded it.
pub fn snapshot(m: &Manifest, item: Option<&crate::snapshot::ListItem>) -> pb::Snapshot {
    let listed = item.map_or_else(
        || summary(&crate::snapshot::SnapshotSummary::of(m)),
        snapshot_item,
    );
    pb::Snapshot {
        block_count: m.blocks.len() as u32,
        file_blake3: m.file_blake3.to_hex().to_string(),
        tables: m
            .fingerprints
            .iter()
            .map(|(t, f)| pb::SnapshotTable {
                table: t.clone(),
                rows: f.rows,
                hash_sum: f.hash_sum.to_string(),
            })
            .collect(),
        ..listed
    }
}

/// A catalog summary (no manifest read) as the Snapshot message; tables are not included.
pub fn snapshot_item(i: &crate::snapshot::ListItem) -> pb::Snapshot {
    pb::Snapshot {
        logical_bytes: i.logical_bytes,
        unique_stored_bytes: i.unique_stored_bytes,
        // The contract's one flag: kept by a user's pin or held by a running restore.
        pinned: i.pinned || i.held,
        ..summary(&i.summary)
    }
}

/// The fields every Snapshot message has: the one conversion of [`SnapshotMeta`].
///
/// [`SnapshotMeta`]: crate::snapshot::SnapshotMeta
fn summary(s: &crate::snapshot::SnapshotSummary) -> pb::Snapshot {
    let m = &s.meta;
    pb::Snapshot {
        snapshot_id: s.id.as_str().to_string(),
        create_time: Some(timestamp(s.created_at)),
        description: m.description.clone(),
        operation: operation_out(m.operation) as i32,
        entity_type: m.entity_type.clone().unwrap_or_default(),
        entity_id: m.entity_id.clone().unwrap_or_default(),
        request_id: m.request_id.clone().unwrap_or_default(),
        labels: m.labels.clone(),
        event_head_seq: m.event_head_seq,
        duckdb_library_version: m.duckdb_library_version.clone(),
        storage_version: s.storage_version,
        logical_bytes: s.file_len,
        block_count: s.block_count as u32,
        ..Default::default()
    }
}

/// Capture ahead's status.
pub fn capture_ahead(r: &crate::app::ahead::AheadReport) -> pb::CaptureAheadStatus {
    use crate::app::ahead::AheadState as S;
    pb::CaptureAheadStatus {
        state: match r.state {
            S::Off => pb::CaptureAheadState::Off,
            S::Idle => pb::CaptureAheadState::Idle,
            S::Capturing => pb::CaptureAheadState::Capturing,
            S::Ready => pb::CaptureAheadState::Ready,
            S::Failed => pb::CaptureAheadState::Failed,
        } as i32,
        event_seq: r.event_seq,
        started: r.started,
        reused: r.reused,
        fallbacks: r.fallbacks,
        cancelled: r.cancelled,
        failed: r.failed,
        verified: r.verified,
        mismatches: r.mismatches,
        last_error: r.last_error.clone().unwrap_or_default(),
    }
}

/// The replica's status.
pub fn replica_status(r: &crate::replica::ReplicaStatus) -> pb::ReplicaStatus {
    use crate::replica::ReplicaState as S;
    pb::ReplicaStatus {
        url: r.url.clone(),
        mode: r.mode.as_str().into(),
        state: match r.state {
            S::Starting => pb::ReplicaState::Starting,
            S::Replicating => pb::ReplicaState::Replicating,
            S::Lagging => pb::ReplicaState::Lagging,
            S::Unreachable => pb::ReplicaState::Unreachable,
            S::Fenced => pb::ReplicaState::Fenced,
            S::Diverged => pb::ReplicaState::Diverged,
        } as i32,
        reason: r.reason.clone().unwrap_or_default(),
        replicated_seq: r.replicated_seq,
        head_seq: r.head_seq,
        lag_events: r.lag_events,
        lag_seconds: r.lag_seconds,
        lag_bytes: r.lag_bytes,
        snapshots_replicated: r.snapshots_replicated,
        snapshots_pending: r.snapshots_pending,
        uploaded_bytes: r.uploaded_bytes,
        last_upload_time: r.last_upload.map(timestamp),
        lease_generation: r.lease_generation,
        lease_holder: r.lease_holder.clone(),
        healthy: r.healthy,
    }
}

#[cfg(test)]
mod tests {
    //! pb ↔ domain round trips for every entity and link kind, over arbitrary values.

    use proptest::prelude::*;

    use super::*;
    use crate::domain::entity::ColumnType;
    use crate::domain::validate::MAX_ID_LEN;

    /// A stored record of `kind` with arbitrary values: required text columns set, optional
    /// ones set or NULL, integers of any size, measures with arbitrary sets.
    fn record(kind: EntityKind) -> impl Strategy<Value = Record> {
        let key = match kind.def().key_type {
            crate::domain::entity::KeyType::Int => (1..=i32::MAX).prop_map(Key::Int).boxed(),
            crate::domain::entity::KeyType::Text => text_id().prop_map(Key::Text).boxed(),
        };
        let values: Vec<BoxedStrategy<Value>> = kind
            .def()
            .columns
            .iter()
            .map(|c| match (c.ty, c.required) {
                (ColumnType::BigInt, _) => {
                    prop::option::of(any::<i64>()).prop_map(Value::from).boxed()
                }
                (ColumnType::Text, true) => any::<String>().prop_map(Value::Text).boxed(),
                (ColumnType::Text, false) => prop::option::of(any::<String>())
                    .prop_map(Value::from)
                    .boxed(),
            })
            .collect();
        let sets = if kind == EntityKind::Measure {
            let ids = || prop::collection::vec(any::<i32>(), 0..8);
            (ids(), ids(), ids())
                .prop_map(|(m, s, b)| {
                    Some(MeasureSets {
                        measure_type_ids: m,
                        stakeholder_ids: s,
                        benefit_ids: b,
                    })
                })
                .boxed()
        } else {
            Just(None).boxed()
        };
        (key, values, sets).prop_map(move |(key, values, sets)| Record {
            kind,
            key,
            values,
            sets,
        })
    }

    /// A valid text id (grants): no control characters, no surrounding whitespace.
    fn text_id() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 1..=MAX_ID_LEN).prop_filter_map(
            "a valid text id",
            |cs| {
                let s: String = cs.into_iter().filter(|c| !c.is_control()).collect();
                let s = s.trim().to_string();
                (!s.is_empty()).then_some(s)
            },
        )
    }

    /// record → message → draft gives the record back, and the message survives the trip
    /// through the domain unchanged.
    fn round_trip<M: EntityMessage + PartialEq + std::fmt::Debug + Clone>(r: &Record) {
        let msg = M::from_record(r).expect("record → message");
        let draft = msg.clone().into_draft().expect("message → draft");
        assert_eq!(draft.kind, r.kind);
        assert_eq!(draft.key.as_ref(), Some(&r.key));
        assert_eq!(draft.values, r.values);
        assert_eq!(draft.sets, r.sets);
        let again = Record {
            kind: draft.kind,
            key: draft.key.expect("key"),
            values: draft.values,
            sets: draft.sets,
        };
        assert_eq!(M::from_record(&again).expect("record → message"), msg);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn measures_round_trip(r in record(EntityKind::Measure)) {
            round_trip::<pb::Measure>(&r);
        }

        #[test]
        fn areas_round_trip(r in record(EntityKind::Area)) {
            round_trip::<pb::Area>(&r);
        }

        #[test]
        fn priorities_round_trip(r in record(EntityKind::Priority)) {
            round_trip::<pb::Priority>(&r);
        }

        #[test]
        fn species_round_trip(r in record(EntityKind::Species)) {
            round_trip::<pb::Species>(&r);
        }

        #[test]
        fn habitats_round_trip(r in record(EntityKind::Habitat)) {
            round_trip::<pb::Habitat>(&r);
        }

        #[test]
        fn grants_round_trip(r in record(EntityKind::Grant)) {
            round_trip::<pb::Grant>(&r);
        }

        #[test]
        fn resources_carry_every_entity(r in prop::sample::select(EntityKind::ALL.to_vec())
            .prop_flat_map(record))
        {
            let res = resource_of_record(&r).expect("resource");
            let kind = res.kind.expect("kind");
            let matches = matches!(
                (&kind, r.kind),
                (pb::resource::Kind::Measure(_), EntityKind::Measure)
                    | (pb::resource::Kind::Area(_), EntityKind::Area)
                    | (pb::resource::Kind::Priority(_), EntityKind::Priority)
                    | (pb::resource::Kind::Species(_), EntityKind::Species)
                    | (pb::resource::Kind::Habitat(_), EntityKind::Habitat)
                    | (pb::resource::Kind::Grant(_), EntityKind::Grant)
            );
            prop_assert!(matches, "{kind:?} for {:?}", r.kind);
        }

        #[test]
        fn links_round_trip(link in link()) {
            let msg = link_out(&link);
            let back = link_in(Some(msg.clone())).expect("proto → link");
            prop_assert_eq!(&back, &link);
            prop_assert_eq!(link_kind_in(msg.link_type).expect("kind"), link.kind);
            prop_assert_eq!(link_out(&back), msg);
        }
    }

    /// A valid link of any kind: positive integer ids, a valid grant id.
    fn link() -> impl Strategy<Value = Link> {
        prop::sample::select(LinkKind::ALL.to_vec()).prop_flat_map(|kind| {
            let parts: Vec<BoxedStrategy<Key>> = kind
                .columns()
                .iter()
                .map(|c| {
                    if c.name == "grant_id" {
                        text_id().prop_map(Key::Text).boxed()
                    } else {
                        (1..=i32::MAX).prop_map(Key::Int).boxed()
                    }
                })
                .collect();
            parts.prop_map(move |key| Link { kind, key })
        })
    }

    #[test]
    fn an_unknown_column_name_is_an_error_not_a_silent_drop() {
        let kind = EntityKind::Habitat;
        let mut values = vec![Value::Null; kind.def().columns.len()];
        let e = put(&mut values, kind, "habitat_name", Value::Text("x".into())).unwrap_err();
        assert!(
            matches!(e, Error::Internal(ref m) if m.contains("habitat_name")),
            "{e:?}"
        );
        assert_eq!(values, vec![Value::Null], "nothing was written");

        let r = Record {
            kind,
            key: Key::Int(1),
            values: vec![Value::Text("Fen".into())],
            sets: None,
        };
        assert!(matches!(text(&r, "habitat_name"), Err(Error::Internal(_))));
        assert!(matches!(int(&r, "verbatim_index"), Err(Error::Internal(_))));
        assert_eq!(text(&r, "habitat").unwrap().as_deref(), Some("Fen"));
        // A record shorter than its definition is an error too, not an empty field.
        let short = Record {
            values: vec![],
            ..r
        };
        assert!(matches!(
            pb::Habitat::from_record(&short),
            Err(Error::Internal(_))
        ));
    }
}
