//! gRPC services (tonic): one file per service, thin handlers over [`crate::app`], plus the
//! conversions between protobuf messages and the domain and request-context extraction.

pub mod convert;
pub mod ctx;
pub mod entity;
pub mod events;
pub mod snapshot;

pub use entity::EntityApi;
pub use events::EventApi;
pub use snapshot::SnapshotApi;
