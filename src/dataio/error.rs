//! Errors of the data import/export layer, each with a stable reason code. Messages name the
//! table, column or row at fault, never a server path or SQL text.

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum DataIoError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    UploadTooLarge { limit: u64 },
    #[error("the upload ended after {got} of {expected} bytes")]
    UploadTruncated { expected: u64, got: u64 },
    #[error("the upload must start with its options and declare total_bytes")]
    UploadOptionsMissing,
    #[error("unsupported file type: {0}")]
    UnsupportedFileType(String),
    #[error("the database was written by an engine this server cannot read: {0}")]
    UnsupportedEngineVersion(String),
    #[error("not an LNRS database: {0}")]
    NotLnrsSchema(String),
    #[error("{file}: {detail}")]
    CsvColumns { file: String, detail: String },
    #[error("{file}: not valid UTF-8 at data row {row}")]
    CsvEncoding { file: String, row: u64 },
    #[error("{file}: {detail}")]
    CsvMalformed { file: String, detail: String },
    #[error("invalid archive: {0}")]
    ArchiveInvalid(String),
    #[error("the archive unpacks to more than the limit of {limit} bytes")]
    ArchiveTooLarge { limit: u64 },
    #[error("invalid export request: {0}")]
    BadRequest(String),
    #[error("file I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] duckdb::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("parquet: {0}")]
    Parquet(String),
}

impl DataIoError {
    /// A stable reason code for `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UploadTooLarge { .. } => "UPLOAD_TOO_LARGE",
            Self::UploadTruncated { .. } => "UPLOAD_TRUNCATED",
            Self::UploadOptionsMissing => "UPLOAD_OPTIONS_MISSING",
            Self::UnsupportedFileType(_) => "UNSUPPORTED_FILE_TYPE",
            Self::UnsupportedEngineVersion(_) => "UNSUPPORTED_ENGINE_VERSION",
            Self::NotLnrsSchema(_) => "NOT_LNRS_SCHEMA",
            Self::CsvColumns { .. } => "CSV_COLUMNS_MISMATCH",
            Self::CsvEncoding { .. } => "CSV_BAD_ENCODING",
            Self::CsvMalformed { .. } => "CSV_MALFORMED",
            Self::ArchiveInvalid(_) => "ARCHIVE_INVALID",
            Self::ArchiveTooLarge { .. } => "ARCHIVE_TOO_LARGE",
            Self::BadRequest(_) => "EXPORT_REQUEST_INVALID",
            Self::Io(_) => "DATA_IO_FAILED",
            Self::Db(_) => "DATA_IO_DATABASE_ERROR",
            Self::Storage(_) => "DATA_IO_STORAGE",
            Self::Parquet(_) => "EXPORT_FAILED",
        }
    }

    /// What a client may be told (no path, SQL or engine text).
    pub fn public_message(&self) -> String {
        match self {
            Self::Io(e) => format!("file I/O failed ({})", e.kind()),
            Self::Db(_) => "database error while reading the file".into(),
            Self::Storage(e) => e.public_message(),
            Self::Parquet(_) => "the Parquet writer failed".into(),
            other => other.to_string(),
        }
    }

    /// True for errors caused by the client's input (the rest are the server's).
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Self::Io(_) | Self::Db(_) | Self::Storage(_) | Self::Parquet(_)
        )
    }
}
