//! The application error (what a use case in [`crate::app`] can fail with, wrapping each lower
//! layer's error enum) and its ONE exhaustive mapping to `tonic::Status` with a
//! google.rpc.ErrorInfo (domain `lnrs.v1`) and, where useful, BadRequest / ResourceInfo /
//! RetryInfo details. Internal causes are logged here, never sent to clients.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::dataio::DataIoError;
use crate::domain::rows::Conflict;
use crate::domain::{DomainError, FieldViolation};
use crate::events::EventError;
use crate::replica::ReplicaError;
use crate::snapshot::SnapshotError;
use crate::storage::StorageError;

/// ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "lnrs.v1";

/// Errors of the application layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    DataIo(#[from] DataIoError),
    /// A request field is malformed (beyond entity validation): page tokens, order_by, filters.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: String,
        reason: &'static str,
        message: String,
    },
    /// Policy `required` and the pre-delete snapshot could not be made durable.
    #[error(
        "the pre-delete snapshot could not be taken ({reason}): {message}; nothing was deleted"
    )]
    SnapshotRequired {
        reason: &'static str,
        message: String,
    },
    /// A restore was asked for without repeating the snapshot id in confirm_snapshot_id.
    #[error("restore not confirmed: confirm_snapshot_id must repeat snapshot_id")]
    RestoreNotConfirmed,
    /// The same request_id was used for a different request.
    #[error("request_id was already used for a different request ({rpc})")]
    RequestIdReused { rpc: String },
    /// A restore is running and the operation cannot wait for it.
    #[error("a restore is in progress")]
    RestoreInProgress,
    /// The snapshot store could not be opened at all.
    #[error("snapshot store unavailable: {0}")]
    SnapshotStoreUnavailable(String),
    /// No or an unknown bearer token (auth on).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// A valid token whose role is below what the RPC needs.
    #[error("{rpc} needs role {required}; the token has {role}")]
    PermissionDenied {
        rpc: String,
        required: &'static str,
        role: &'static str,
    },
    /// A message that does not decode as its protobuf type (invalid UTF-8 in a string field,
    /// truncated, a wrong wire type); the text is prost's, naming the field.
    #[error("malformed message: {0}")]
    MalformedMessage(String),
    /// A request or response beyond the configured message size.
    #[error("message too large: {message}")]
    MessageTooLarge { limit: usize, message: String },
    /// The server is draining: the call was not started.
    #[error("server shutting down; {what}")]
    ShuttingDown { what: String },
    /// The live database is closed until a restart: a restore could not be completed nor
    /// undone, or the database could not be reopened after one.
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    /// Start-up cannot resolve an interrupted restore; the message names the cause and the way
    /// out (the process refuses to start).
    #[error("cannot start: {0}")]
    RecoveryBlocked(String),
    /// A fail point armed by a fault test.
    #[error("injected fault at {0}")]
    Injected(&'static str),
    /// An undelete whose rows cannot all be put back; nothing was written.
    #[error("the undelete conflicts with the live data ({} rows)", .0.len())]
    UndeleteConflict(Vec<Conflict>),
    /// A delete that cannot be undone at all (no row images and no snapshot, or not a delete).
    #[error("{0}")]
    UndeleteImpossible(String),
    /// A point in the data's history that cannot be rebuilt exactly (no snapshot before it,
    /// events compacted, or events without row images).
    #[error("{0}")]
    StateNotRebuildable(String),
    /// A write sent to a read-only follower.
    #[error(
        "this server is a read-only follower of {primary_replica}; send writes to the primary"
    )]
    ReadOnlyFollower { primary_replica: String },
    /// A point-in-time restore to a point the retained snapshots and log do not cover.
    #[error("{point} is not reachable: the retained history covers events {earliest}..={head}")]
    PointNotReachable {
        point: String,
        earliest: u64,
        head: u64,
    },
    /// A paged diff against the live database whose later page finds it changed since the
    /// first: the pages would not describe one diff.
    #[error("the live database moved from event {pinned} to {head} during a paged diff")]
    LiveStateMoved { pinned: u64, head: u64 },
    /// A method (or message encoding) this server does not implement.
    #[error("not implemented by this server")]
    Unimplemented,
    /// A bug or an unexpected state; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(
        field: impl Into<String>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

impl Error {
    /// What a client may be told (no path, SQL or engine message).
    pub fn public_message(&self) -> String {
        match self {
            Error::Storage(e) => e.public_message(),
            Error::Snapshot(e) => e.public_message(),
            Error::Events(e) => e.public_message(),
            Error::Replica(e) => e.public_message(),
            Error::DataIo(e) => e.public_message(),
            Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl From<Vec<FieldViolation>> for Error {
    fn from(v: Vec<FieldViolation>) -> Self {
        Error::Domain(DomainError::Invalid(v))
    }
}

/// The parts of a Status before it is built.
struct Mapped {
    code: Code,
    reason: &'static str,
    message: String,
    metadata: Vec<(&'static str, String)>,
    violations: Vec<FieldViolation>,
    resource: Option<(String, String)>,
    retry_after: Option<Duration>,
    /// google.rpc.PreconditionFailure violations: (type, subject, description).
    preconditions: Vec<(String, String, String)>,
}

impl Mapped {
    fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
            violations: Vec::new(),
            resource: None,
            retry_after: None,
            preconditions: Vec::new(),
        }
    }

    fn meta(mut self, k: &'static str, v: impl ToString) -> Self {
        self.metadata.push((k, v.to_string()));
        self
    }

    fn resource(mut self, kind: &str, name: &str) -> Self {
        self.resource = Some((kind.to_string(), name.to_string()));
        self
    }

    fn retry(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    fn into_status(self) -> Status {
        let mut details = ErrorDetails::new();
        let metadata: std::collections::HashMap<String, String> = self
            .metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), bounded(v, MAX_DETAIL_BYTES)))
            .collect();
        details.set_error_info(self.reason, ERROR_DOMAIN, metadata);
        for v in self.violations {
            details.add_bad_request_violation(
                bounded(v.field, MAX_DETAIL_BYTES),
                bounded(v.description, MAX_DETAIL_BYTES),
            );
        }
        for (kind, subject, description) in self.preconditions {
            details.add_precondition_failure_violation(
                kind,
                bounded(subject, MAX_DETAIL_BYTES),
                bounded(description, MAX_DETAIL_BYTES),
            );
        }
        if let Some((kind, name)) = self.resource {
            details.set_resource_info(kind, bounded(name, MAX_DETAIL_BYTES), "", "");
        }
        if let Some(d) = self.retry_after {
            details.set_retry_info(Some(d));
        }
        Status::with_error_details(self.code, bounded(self.message, MAX_MESSAGE_BYTES), details)
    }
}

/// Longest error message and longest detail value (metadata, field violation, resource name)
/// a client is sent, in bytes. Errors may quote the client's own input (an order_by, a label
/// key); gRPC carries them in HTTP/2 trailers — the message twice, once percent-encoded — and
/// clients refuse large header blocks (h2 answers GOAWAY ENHANCE_YOUR_CALM), so an unbounded
/// quote of a multi-megabyte input would make the error itself unreadable.
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_DETAIL_BYTES: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
fn bounded(mut s: String, max: usize) -> String {
    const MARK: &str = "…";
    if s.len() <= max {
        return s;
    }
    let mut end = max - MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        map(e).into_status()
    }
}

/// Internal failures: log the cause, answer with a generic message.
fn internal(reason: &'static str, cause: &dyn std::fmt::Display) -> Mapped {
    tracing::error!(reason, error = %cause, "internal error");
    Mapped::new(Code::Internal, reason, "internal error; see server logs")
}

fn map(e: Error) -> Mapped {
    match e {
        Error::Domain(DomainError::Invalid(violations)) => {
            let fields = violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut m = Mapped::new(
                Code::InvalidArgument,
                "VALIDATION_FAILED",
                format!("invalid fields: {fields}"),
            )
            .meta("fields", &fields);
            m.violations = violations;
            m
        }
        Error::Storage(s) => map_storage(s),
        Error::Snapshot(s) => map_snapshot(s),
        Error::Events(ev) => map_events(ev),
        Error::Replica(r) => map_replica(r),
        Error::DataIo(d) => map_dataio(d),
        Error::InvalidArgument {
            field,
            reason,
            message,
        } => {
            let mut m = Mapped::new(Code::InvalidArgument, reason, format!("{field}: {message}"))
                .meta("field", &field);
            m.violations.push(FieldViolation::new(field, message));
            m
        }
        Error::SnapshotRequired { reason, message } => Mapped::new(
            Code::FailedPrecondition,
            "PRE_DELETE_SNAPSHOT_FAILED",
            format!("the pre-delete snapshot could not be taken ({reason}); nothing was deleted"),
        )
        .meta("cause", reason)
        .meta("detail", message),
        Error::RestoreNotConfirmed => Mapped::new(
            Code::FailedPrecondition,
            "RESTORE_NOT_CONFIRMED",
            "confirm_snapshot_id must repeat snapshot_id",
        ),
        Error::RequestIdReused { rpc } => Mapped::new(
            Code::FailedPrecondition,
            "REQUEST_ID_REUSED",
            "request_id was already used for a different request",
        )
        .meta("first_rpc", rpc),
        Error::RestoreInProgress => Mapped::new(
            Code::Unavailable,
            "RESTORE_IN_PROGRESS",
            "a restore is in progress; retry shortly",
        )
        .retry(Duration::from_secs(1)),
        Error::SnapshotStoreUnavailable(why) => Mapped::new(
            Code::FailedPrecondition,
            "SNAPSHOT_STORE_UNAVAILABLE",
            "the snapshot store is unavailable",
        )
        .meta("detail", why),
        Error::DatabaseUnavailable(why) => Mapped::new(
            Code::Unavailable,
            "DATABASE_UNAVAILABLE",
            format!("the database is unavailable: {why}; an operator must restart the server"),
        ),
        Error::RecoveryBlocked(why) => internal("RECOVERY_BLOCKED", &why),
        Error::Injected(point) => Mapped::new(
            Code::Unavailable,
            "INJECTED_FAULT",
            format!("injected fault at {point}"),
        )
        .retry(Duration::from_millis(100)),
        Error::UndeleteConflict(conflicts) => undelete_conflict(conflicts),
        Error::UndeleteImpossible(why) => {
            Mapped::new(Code::FailedPrecondition, "UNDELETE_IMPOSSIBLE", why)
        }
        Error::StateNotRebuildable(why) => {
            Mapped::new(Code::FailedPrecondition, "STATE_NOT_REBUILDABLE", why)
        }
        Error::ReadOnlyFollower { primary_replica } => Mapped::new(
            Code::FailedPrecondition,
            "READ_ONLY_FOLLOWER",
            format!(
                "this server is a read-only follower of {primary_replica}; send writes to the \
                 primary"
            ),
        )
        .meta("follows", primary_replica),
        Error::PointNotReachable {
            point,
            earliest,
            head,
        } => Mapped::new(
            Code::OutOfRange,
            "POINT_NOT_REACHABLE",
            format!(
                "{point} is not reachable: the retained snapshots and log cover events \
                 {earliest}..={head}"
            ),
        )
        .meta("earliest_reachable_seq", earliest)
        .meta("head_seq", head),
        Error::LiveStateMoved { pinned, head } => Mapped::new(
            Code::Aborted,
            "LIVE_STATE_MOVED",
            format!(
                "the live database changed since the diff's first page (event {pinned} → \
                 {head}); start again from the first page, or diff against event_seq {pinned}"
            ),
        )
        .meta("pinned_seq", pinned.to_string())
        .meta("head_seq", head.to_string()),
        Error::Unimplemented => Mapped::new(
            Code::Unimplemented,
            "UNIMPLEMENTED",
            "this server has no such method (check the client's protos against lnrs.v1)",
        ),
        Error::Unauthenticated { reason, message } => {
            Mapped::new(Code::Unauthenticated, reason, message)
        }
        Error::PermissionDenied {
            rpc,
            required,
            role,
        } => Mapped::new(
            Code::PermissionDenied,
            "ROLE_TOO_LOW",
            format!("{rpc} needs role {required}; the token has role {role}"),
        )
        .meta("required_role", required)
        .meta("role", role)
        .meta("rpc", rpc),
        Error::MalformedMessage(why) => Mapped::new(
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            format!("the request message could not be decoded: {why}"),
        ),
        Error::MessageTooLarge { limit, message } => {
            Mapped::new(Code::ResourceExhausted, "MESSAGE_TOO_LARGE", message)
                .meta("limit_bytes", limit)
        }
        Error::ShuttingDown { what } => Mapped::new(
            Code::Unavailable,
            "SERVER_SHUTTING_DOWN",
            format!("server shutting down; {what}"),
        )
        .retry(Duration::from_secs(1)),
        Error::Internal(why) => internal("INTERNAL", &why),
    }
}

/// Most conflicts listed in one status: trailers are bounded (see [`MAX_MESSAGE_BYTES`]); a dry
/// run lists them all.
const MAX_CONFLICTS_LISTED: usize = 20;

/// FAILED_PRECONDITION listing each conflict as a PreconditionFailure violation (type = kind,
/// subject = `table/key`).
fn undelete_conflict(conflicts: Vec<Conflict>) -> Mapped {
    let n = conflicts.len();
    let kinds: std::collections::BTreeSet<&str> =
        conflicts.iter().map(|c| c.kind.as_str()).collect();
    let kinds = kinds.into_iter().collect::<Vec<_>>().join(",");
    let mut m = Mapped::new(
        Code::FailedPrecondition,
        "UNDELETE_CONFLICT",
        format!(
            "{n} rows cannot be put back ({kinds}); nothing was changed — a dry run lists them all"
        ),
    )
    .meta("conflicts", n)
    .meta("kinds", &kinds);
    m.preconditions = conflicts
        .into_iter()
        .take(MAX_CONFLICTS_LISTED)
        .map(|c| {
            (
                c.kind.as_str().to_string(),
                format!("{}/{}", c.table, c.key),
                c.description,
            )
        })
        .collect();
    m
}

fn map_storage(e: StorageError) -> Mapped {
    match e {
        StorageError::NotFound { table, key } => Mapped::new(
            Code::NotFound,
            "NOT_FOUND",
            format!("{table} {key} not found"),
        )
        .meta("table", table)
        .meta("key", &key)
        .resource(table, &key),
        StorageError::AlreadyExists { table, key } => Mapped::new(
            Code::AlreadyExists,
            "ALREADY_EXISTS",
            format!("{table} {key} already exists"),
        )
        .meta("table", table)
        .meta("key", &key)
        .resource(table, &key),
        StorageError::MissingReference {
            table,
            column,
            value,
        } => Mapped::new(
            Code::FailedPrecondition,
            "REFERENCED_ROW_NOT_FOUND",
            format!("{table} with {column} = {value} does not exist"),
        )
        .meta("table", table)
        .meta("column", column)
        .meta("value", &value)
        .resource(table, &value),
        StorageError::InvalidCursor => Mapped::new(
            Code::InvalidArgument,
            "INVALID_PAGE_TOKEN",
            "page_token does not belong to this query",
        ),
        StorageError::Busy => Mapped::new(
            Code::ResourceExhausted,
            "WRITE_QUEUE_FULL",
            "too many writes are queued; retry with backoff",
        )
        .retry(Duration::from_millis(200)),
        StorageError::DeadlineExceeded => Mapped::new(
            Code::DeadlineExceeded,
            "DEADLINE_EXCEEDED_WHILE_QUEUED",
            "the deadline passed while the request was queued; it was not executed",
        ),
        StorageError::Unavailable { retry_after } => Mapped::new(
            Code::Unavailable,
            "RESTORE_IN_PROGRESS",
            "the database is being restored; retry shortly",
        )
        .retry(retry_after),
        StorageError::WriterStopped => Mapped::new(
            Code::Unavailable,
            "SERVER_SHUTTING_DOWN",
            "the server is shutting down",
        ),
        StorageError::SchemaTooNew { .. } => internal("SCHEMA_TOO_NEW", &e),
        StorageError::Db(_) => internal("DATABASE_ERROR", &e),
        StorageError::Io { .. } => internal("IO_ERROR", &e),
        StorageError::ReadTaskFailed => internal("READ_TASK_FAILED", &e),
        StorageError::WalNotEmpty { .. } => internal("WAL_NOT_EMPTY", &e),
        StorageError::CheckpointHeldUp { .. } => Mapped::new(
            Code::Unavailable,
            "CHECKPOINT_HELD_UP",
            "reads that began before the last change are still running; retry shortly",
        )
        .retry(Duration::from_secs(1)),
        StorageError::ImageWithoutKey { .. } => internal("IMAGE_WITHOUT_KEY", &e),
        StorageError::Closed => Mapped::new(
            Code::Unavailable,
            "DATABASE_UNAVAILABLE",
            "the database is not open",
        )
        .retry(Duration::from_secs(1)),
    }
}

fn map_dataio(e: DataIoError) -> Mapped {
    let reason = e.reason();
    let message = e.public_message();
    match e {
        DataIoError::UploadTooLarge { limit } | DataIoError::ArchiveTooLarge { limit } => {
            Mapped::new(
                Code::ResourceExhausted,
                reason,
                format!("{message}; nothing was changed"),
            )
            .meta("limit_bytes", limit)
        }
        DataIoError::UploadTruncated { expected, got } => Mapped::new(
            Code::InvalidArgument,
            reason,
            format!("{message}; nothing was changed"),
        )
        .meta("expected_bytes", expected)
        .meta("received_bytes", got),
        DataIoError::Storage(s) => map_storage(s),
        DataIoError::Io(_) | DataIoError::Db(_) | DataIoError::Parquet(_) => internal(reason, &e),
        DataIoError::UploadOptionsMissing
        | DataIoError::UnsupportedFileType(_)
        | DataIoError::UnsupportedEngineVersion(_)
        | DataIoError::NotLnrsSchema(_)
        | DataIoError::CsvColumns { .. }
        | DataIoError::CsvEncoding { .. }
        | DataIoError::CsvMalformed { .. }
        | DataIoError::ArchiveInvalid(_)
        | DataIoError::BadRequest(_) => Mapped::new(
            Code::InvalidArgument,
            reason,
            format!("{message}; nothing was changed"),
        ),
    }
}

fn map_replica(e: ReplicaError) -> Mapped {
    let reason = e.reason();
    let message = e.public_message();
    match e {
        ReplicaError::Snapshot(s) => map_snapshot(s),
        ReplicaError::Storage(s) => map_storage(s),
        ReplicaError::Event(ev) => map_events(ev),
        ReplicaError::Config(_) | ReplicaError::NotConfigured | ReplicaError::DataDirNotEmpty => {
            Mapped::new(Code::FailedPrecondition, reason, message)
        }
        ReplicaError::Unreachable(_) => {
            Mapped::new(Code::Unavailable, reason, message).retry(Duration::from_secs(5))
        }
        ReplicaError::NotConfirmed { seq, .. } => Mapped::new(Code::Unavailable, reason, message)
            .meta("committed_event_seq", seq)
            .retry(Duration::from_secs(5)),
        ReplicaError::Fenced { generation, .. } => {
            Mapped::new(Code::FailedPrecondition, reason, message)
                .meta("lease_generation", generation)
        }
        ReplicaError::Diverged(_) => Mapped::new(Code::FailedPrecondition, reason, message),
        ReplicaError::NotFound(_) => Mapped::new(Code::NotFound, reason, message),
        ReplicaError::Corrupt { .. }
        | ReplicaError::Gap { .. }
        | ReplicaError::ReplayDiverged(_) => Mapped::new(Code::DataLoss, reason, message),
    }
}

fn map_snapshot(e: SnapshotError) -> Mapped {
    let reason = e.reason();
    match e {
        SnapshotError::InvalidId => Mapped::new(Code::InvalidArgument, reason, "snapshot_id is not a valid snapshot id")
            .meta("field", "snapshot_id"),
        SnapshotError::NotFound(id) => Mapped::new(Code::NotFound, reason, format!("snapshot {id} not found"))
            .meta("snapshot_id", &id)
            .resource("snapshot", &id),
        SnapshotError::Pinned(id) => Mapped::new(
            Code::FailedPrecondition,
            reason,
            format!("snapshot {id} is the safety snapshot of a restore in progress"),
        )
        .meta("snapshot_id", id),
        SnapshotError::PinnedByUser(id) => Mapped::new(
            Code::FailedPrecondition,
            reason,
            format!("snapshot {id} is pinned; unpin it (UpdateSnapshot) or delete it with force"),
        )
        .meta("snapshot_id", id),
        SnapshotError::IncompatibleStorageVersion { found, supported } => Mapped::new(
            Code::FailedPrecondition,
            reason,
            format!("snapshot storage version {found} cannot be read by this engine (reads up to {supported}); nothing was changed"),
        )
        .meta("found", found)
        .meta("supported", supported),
        SnapshotError::UnsupportedFormat { found, supported } => Mapped::new(
            Code::FailedPrecondition,
            reason,
            format!("manifest format {found} is newer than this build supports ({supported})"),
        ),
        SnapshotError::Corrupt { ref what, .. } => {
            let what = what.clone();
            Mapped::new(Code::DataLoss, reason, format!("snapshot data is corrupt: {what}")).meta("what", what)
        }
        SnapshotError::Storage { fault, .. } => {
            tracing::warn!(error = %e, "snapshot storage fault");
            Mapped::new(Code::FailedPrecondition, reason, format!("snapshot storage unavailable ({fault:?})"))
        }
        SnapshotError::Locked(_) => Mapped::new(Code::FailedPrecondition, reason, "the snapshot store is in use by another process"),
        SnapshotError::StoreUnavailable => Mapped::new(Code::FailedPrecondition, reason, "the snapshot store is unavailable"),
        SnapshotError::Busy { running } => Mapped::new(
            Code::ResourceExhausted,
            reason,
            format!("{running} snapshot assemblies are running; retry shortly"),
        )
        .meta("running", running)
        .retry(Duration::from_secs(2)),
        SnapshotError::NoScratchSpace { needed, available } => {
            tracing::warn!(error = %e, "scratch space low");
            Mapped::new(
                Code::ResourceExhausted,
                reason,
                "not enough free disk space to assemble the snapshot; free space or lower scratch_reserve_bytes",
            )
            .meta("needed_bytes", needed)
            .meta("available_bytes", available)
        }
        SnapshotError::Source(StorageError::Closed) => map_storage(StorageError::Closed),
        SnapshotError::Source(e @ StorageError::CheckpointHeldUp { .. }) => map_storage(e),
        SnapshotError::ArchiveInvalid(detail) => Mapped::new(
            Code::InvalidArgument,
            reason,
            format!("invalid snapshot archive: {detail}; nothing was added"),
        ),
        SnapshotError::Injected(point) => Mapped::new(
            Code::Unavailable,
            "INJECTED_FAULT",
            format!("injected fault at {point}"),
        )
        .retry(Duration::from_millis(100)),
        SnapshotError::NotADatabase(_) | SnapshotError::WalNotEmpty(_) | SnapshotError::SourceChanged | SnapshotError::Cancelled | SnapshotError::Db(_) | SnapshotError::Source(_) | SnapshotError::Panicked => {
            internal(reason, &e)
        }
    }
}

fn map_events(e: EventError) -> Mapped {
    match e {
        EventError::Compacted { first_available } => Mapped::new(
            Code::OutOfRange,
            "START_POSITION_COMPACTED",
            format!(
                "events before seq {first_available} were compacted; start at or after {}",
                first_available.saturating_sub(1)
            ),
        )
        .meta("first_available_seq", first_available),
        EventError::Ahead { head } => Mapped::new(
            Code::OutOfRange,
            "START_POSITION_AHEAD",
            format!("start_after_seq is beyond the log head ({head})"),
        )
        .meta("head_seq", head),
        EventError::TooManySubscribers { limit } => Mapped::new(
            Code::ResourceExhausted,
            "TOO_MANY_SUBSCRIBERS",
            format!("the server already has {limit} subscribers"),
        )
        .meta("limit", limit)
        .retry(Duration::from_secs(5)),
        EventError::ShuttingDown { last_seq } => Mapped::new(
            Code::Unavailable,
            "SERVER_SHUTTING_DOWN",
            format!("server shutting down; resume with start_after_seq = {last_seq}"),
        )
        .meta("last_seq", last_seq)
        .retry(Duration::from_secs(1)),
        EventError::Storage(s) => map_storage(s),
        EventError::Db(_) => internal("EVENT_LOG_DATABASE_ERROR", &e),
        EventError::Payload(_) => internal("EVENT_PAYLOAD_INVALID", &e),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn quoted_input_is_bounded_in_every_client_visible_field() {
        let huge = "é".repeat(100_000);
        let s = Status::from(Error::invalid(
            huge.clone(),
            "INVALID_ORDER_BY",
            huge.clone(),
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().len() <= MAX_MESSAGE_BYTES,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with('…'));
        let d = s.get_error_details();
        let info = d.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "INVALID_ORDER_BY");
        assert!(info.metadata.values().all(|v| v.len() <= MAX_DETAIL_BYTES));
        let v = &d.bad_request().expect("BadRequest").field_violations[0];
        assert!(v.field.len() <= MAX_DETAIL_BYTES && v.description.len() <= MAX_DETAIL_BYTES);
        // Short texts are untouched.
        let s = Status::from(Error::invalid("order_by", "INVALID_ORDER_BY", "`x`: nope"));
        assert_eq!(s.message(), "order_by: `x`: nope");
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("abc".into(), 3), "abc");
        let cut = bounded("😀😀😀".into(), 9);
        assert_eq!(cut, "😀…");
        assert!(cut.len() <= 9);
    }
}
