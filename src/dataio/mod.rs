//! The users' data in and out as files: uploads staged with limits, the import of a database
//! written by the original LNRS app (its DuckDB file or its portal's CSV archive) into a staged
//! database in this service's schema with a per-table report, and exports as CSV, Parquet, a
//! DuckDB file or GeoJSON from a consistent database file. No gRPC here, and no live database:
//! the app layer hands this layer files (a staged upload, a consistent copy of the live database
//! or an assembled snapshot) and swaps a staged result in through the restore machinery.
//!
//! - [`upload`]: an upload written to scratch space, bounded, removed unless kept.
//! - [`detect`]: what an uploaded file is (DuckDB and its storage version, ZIP, neither).
//! - [`source`]: reading the original's tables from a DuckDB file or a CSV archive.
//! - [`stage`]: validating rows into a new database in this schema, with the report.
//! - [`export`]: writing files of one database in each export format.
//! - [`error`]: this layer's errors.

pub mod detect;
pub mod error;
pub mod export;
pub mod source;
pub mod stage;
pub mod upload;

pub use error::DataIoError;
pub use upload::{StagedFile, Upload};
