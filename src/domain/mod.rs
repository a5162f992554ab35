//! Pure domain model: entity and link definitions, records, validation, list queries, the
//! table inventory and fingerprints. No I/O happens here.

pub mod entity;
pub mod fingerprint;
pub mod geometry;
pub mod link;
pub mod query;
pub mod record;
pub mod rows;
pub mod state;
pub mod tables;
pub mod validate;

pub use entity::{EntityDef, EntityKind};
pub use link::{Link, LinkKind, LinkParts};
pub use record::{Draft, Key, MeasureSets, Record, Value};
pub use validate::FieldViolation;

/// Errors of the domain layer: input that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid input: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
}
