//! gRPC services (tonic): one file per service, thin handlers over [`crate::app`], plus the
//! conversions between protobuf messages and the domain, request-context extraction, paging
//! (page tokens, order_by) and the protobuf codec the generated code uses.

pub mod cloudevents;
pub mod codec;
pub mod convert;
pub mod ctx;
pub mod data;
pub mod entity;
pub mod events;
pub mod files;
pub mod paging;
pub mod snapshot;
pub mod wire;

pub use data::DataApi;
pub use entity::EntityApi;
pub use events::EventApi;
pub use snapshot::SnapshotApi;
