//! The client side of `lnrs`: connection flags (`--server`, `--timeout`, `--json`, …), the
//! channel and per-request metadata (deadline, request id, bearer token), the dispatch of every
//! client subcommand, and the one place that turns a failure into an `error: …` line and an exit
//! code. Exit codes are documented in [`EXIT_CODES_HELP`] (shown by `lnrs --help`).

use std::error::Error as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use super::Command;
use crate::pb;
use crate::pb::entity_service_client::EntityServiceClient;
use crate::pb::event_service_client::EventServiceClient;
use crate::pb::snapshot_service_client::SnapshotServiceClient;

/// `lnrs --help` epilogue: what scripts can rely on.
pub const EXIT_CODES_HELP: &str = "\
Client commands talk to the server at --server (env LNRS_SERVER, default http://127.0.0.1:50051).

Exit codes:
  0  success
  1  other error reported by the server (INTERNAL, RESOURCE_EXHAUSTED, …) or a local I/O error
  2  usage or validation error (bad flags or input; INVALID_ARGUMENT, OUT_OF_RANGE)
  3  not found (NOT_FOUND)
  4  server unavailable or too slow (cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED)
  5  conflict or failed precondition (ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED)
  6  integrity failure (a verify failed, or a restore rolled back)
  7  cancelled at the confirmation prompt (nothing was changed)
  8  not allowed (UNAUTHENTICATED, PERMISSION_DENIED: check --token)

Errors are printed to stderr as `error: CODE (REASON): message`.";

/// Largest response the client accepts. Well above the server's default 4 MiB limit so that a
/// server configured with a larger `max_message_bytes` still works.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Deadline of ordinary requests when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of requests that snapshot, verify or restore the whole database.
const LONG_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Flags shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address: http(s)://host:port, or host:port.
    #[arg(
        long,
        global = true,
        env = "LNRS_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Deadline of each request, e.g. "5s" [default: 30s; 15m for snapshot, verify, restore,
    /// delete and retention].
    #[arg(long, global = true, env = "LNRS_TIMEOUT", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Print JSON for scripts (proto field names; JSON lines for `watch`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Idempotency key of a mutation (AIP-155): repeating a command with the same id returns the
    /// first result and changes nothing.
    #[arg(long, global = true)]
    pub request_id: Option<String>,
    /// Bearer token sent as `authorization: Bearer …`.
    #[arg(long, global = true, env = "LNRS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that the server's TLS certificate must chain to (https only).
    #[arg(long, global = true, env = "LNRS_CACERT")]
    pub cacert: Option<PathBuf>,
}

/// Why a client command failed; each kind has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// A gRPC status, from the server or the transport.
    Rpc(Status),
    /// Bad flags or input, detected locally.
    Usage(String),
    /// The user did not confirm.
    Declined,
    /// A verify failed or a restore rolled back (the details were already printed).
    Integrity(String),
    /// The server cannot be reached or the address is unusable.
    Unavailable(String),
    /// A local I/O error.
    Local(String),
    /// stdout was closed (e.g. `| head`): stop quietly.
    BrokenPipe,
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        // tonic reports a passed grpc-timeout (on either side) as CANCELLED "Timeout expired".
        if s.code() == Code::Cancelled && s.message() == "Timeout expired" {
            return Failure::Rpc(Status::deadline_exceeded(
                "the deadline passed before the server answered (see --timeout)",
            ));
        }
        Failure::Rpc(s)
    }
}

impl Failure {
    pub fn usage(msg: impl Into<String>) -> Self {
        Failure::Usage(msg.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Rpc(s) => exit_code_of(s.code()),
            Failure::Usage(_) => 2,
            Failure::Declined => 7,
            Failure::Integrity(_) => 6,
            Failure::Unavailable(_) => 4,
            Failure::Local(_) => 1,
            Failure::BrokenPipe => 0,
        }
    }

    /// The line(s) printed to stderr.
    pub fn message(&self) -> Option<String> {
        match self {
            Failure::Rpc(s) => Some(format!("error: {}", describe_status(s))),
            Failure::Usage(m) => Some(format!("error: {m}")),
            Failure::Declined => Some("cancelled: nothing was changed".to_string()),
            Failure::Integrity(m) => Some(format!("error: {m}")),
            Failure::Unavailable(m) => Some(format!("error: UNAVAILABLE: {m}")),
            Failure::Local(m) => Some(format!("error: {m}")),
            Failure::BrokenPipe => None,
        }
    }
}

/// The exit code of a gRPC status code.
pub fn exit_code_of(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::InvalidArgument | Code::OutOfRange => 2,
        Code::NotFound => 3,
        Code::Unavailable | Code::DeadlineExceeded => 4,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => 5,
        Code::Unauthenticated | Code::PermissionDenied => 8,
        _ => 1,
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `CODE (REASON): message`, then one indented line per field or precondition violation and the
/// retry delay.
/// Transport errors carry no ErrorInfo; their cause chain is appended instead.
pub fn describe_status(s: &Status) -> String {
    let details = s.get_error_details();
    let code = code_name(s.code());
    let mut message = s.message().to_string();
    let mut source = s.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message = if message.is_empty() {
                text
            } else {
                format!("{message}: {text}")
            };
        }
        source = e.source();
    }
    let mut out = match details.error_info() {
        Some(info) if !info.reason.is_empty() => format!("{code} ({}): {message}", info.reason),
        _ => format!("{code}: {message}"),
    };
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(pf) = details.precondition_failure() {
        for v in &pf.violations {
            out.push_str(&format!(
                "\n  {} {}: {}",
                v.r#type, v.subject, v.description
            ));
        }
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        out.push_str(&format!(
            "\n  retry after {}",
            super::output::duration(delay)
        ));
    }
    out
}

/// An ErrorInfo metadata value of a status.
pub fn error_meta(s: &Status, key: &str) -> Option<String> {
    s.get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// Everything a command needs to talk to the server.
pub struct Ctx {
    channel: Channel,
    pub args: ClientArgs,
    /// Correlation id sent as x-request-id on every request of this invocation.
    correlation_id: String,
}

impl Ctx {
    /// Builds a lazily connecting channel: the first RPC connects, and a stream that loses its
    /// connection reconnects on the next call (which `watch` relies on).
    pub fn new(args: ClientArgs) -> Result<Ctx, Failure> {
        let url = if args.server.contains("://") {
            args.server.clone()
        } else {
            format!("http://{}", args.server)
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Failure::usage(format!("invalid --server {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &args.cacert {
                let pem = std::fs::read(path).map_err(|e| {
                    Failure::usage(format!("cannot read --cacert {}: {e}", path.display()))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Failure::usage(format!("TLS configuration: {e}")))?;
        }
        let correlation_id = args
            .request_id
            .clone()
            .unwrap_or_else(|| format!("lnrs-cli-{:016x}", rand::random::<u64>()));
        Ok(Ctx {
            channel: endpoint.connect_lazy(),
            args,
            correlation_id,
        })
    }

    pub fn json(&self) -> bool {
        self.args.json
    }

    pub fn entity(&self) -> EntityServiceClient<Channel> {
        EntityServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    pub fn snapshots(&self) -> SnapshotServiceClient<Channel> {
        SnapshotServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    pub fn data(&self) -> crate::pb::data_service_client::DataServiceClient<Channel> {
        crate::pb::data_service_client::DataServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    /// The idempotency key for a mutation's `request_id` field ("" = none).
    pub fn request_id(&self) -> String {
        self.args.request_id.clone().unwrap_or_default()
    }

    /// A unary request with the default deadline.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        self.with_deadline(msg, DEFAULT_TIMEOUT)
    }

    /// A unary request that may legitimately take minutes (snapshots, verify, restore).
    pub fn long_req<T>(&self, msg: T) -> Request<T> {
        self.with_deadline(msg, LONG_TIMEOUT)
    }

    /// A streaming request: no deadline.
    pub fn stream_req<T>(&self, msg: T) -> Request<T> {
        self.metadata(Request::new(msg))
    }

    fn with_deadline<T>(&self, msg: T, default: Duration) -> Request<T> {
        let mut r = self.metadata(Request::new(msg));
        r.set_timeout(self.args.timeout.unwrap_or(default));
        r
    }

    fn metadata<T>(&self, mut r: Request<T>) -> Request<T> {
        if let Ok(v) = MetadataValue::try_from(self.correlation_id.as_str()) {
            r.metadata_mut().insert("x-request-id", v);
        }
        if let Some(token) = &self.args.token {
            if let Ok(v) = MetadataValue::try_from(format!("Bearer {token}")) {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }
}

/// Runs a client subcommand to completion on its own runtime.
pub fn run(command: Command) -> ExitCode {
    let runtime = match crate::cli::runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(dispatch(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Some(m) = f.message() {
                eprintln!("{m}");
            }
            ExitCode::from(f.exit_code())
        }
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    use super::{entity, history, link, snapshot, watch};
    match command {
        Command::Measure(c) => entity::run::<pb::Measure>(&Ctx::new(c.client)?, c.action).await,
        Command::Area(c) => entity::run::<pb::Area>(&Ctx::new(c.client)?, c.action).await,
        Command::Priority(c) => entity::run::<pb::Priority>(&Ctx::new(c.client)?, c.action).await,
        Command::Species(c) => entity::run::<pb::Species>(&Ctx::new(c.client)?, c.action).await,
        Command::Habitat(c) => entity::run::<pb::Habitat>(&Ctx::new(c.client)?, c.action).await,
        Command::Grant(c) => entity::run::<pb::Grant>(&Ctx::new(c.client)?, c.action).await,
        Command::Lookup(c) => entity::lookup(&Ctx::new(c.client)?, c.action).await,
        Command::Link(c) => link::run(&Ctx::new(c.client)?, c.action).await,
        Command::Snapshot(c) => snapshot::run(&Ctx::new(c.client)?, c.action).await,
        Command::Undelete(c) => history::undelete(&Ctx::new(c.client.clone())?, c).await,
        Command::Diff(c) => history::diff(&Ctx::new(c.client.clone())?, c).await,
        Command::History(c) => history::history(&Ctx::new(c.client.clone())?, c).await,
        Command::Status(c) => snapshot::status(&Ctx::new(c.client)?).await,
        Command::Watch(c) => {
            let ctx = Ctx::new(c.client.clone())?;
            watch::run(&ctx, c).await
        }
        Command::Replica(c) => super::replica::run(c.action).await,
        Command::Import(c) => super::transfer::import(&Ctx::new(c.client.clone())?, c).await,
        Command::Export(c) => super::transfer::export(&Ctx::new(c.client.clone())?, c).await,
        Command::Serve(_) | Command::Refdata { .. } | Command::DescriptorSet { .. } => {
            Err(Failure::usage("not a client command"))
        }
    }
}

/// Flags of `lnrs status`.
#[derive(Debug, Args)]
pub struct StatusCommand {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Asks a yes/no question on stderr and reads the answer from stdin; anything but y/yes (or
/// end of input) is a no.
pub fn confirm(question: &str) -> Result<(), Failure> {
    let answer = prompt(&format!("{question} [y/N] "))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::Declined),
    }
}

/// Demands that the user types `word` exactly.
pub fn confirm_word(question: &str, word: &str) -> Result<(), Failure> {
    let answer = prompt(&format!("{question}\nType {word} to continue: "))?;
    if answer.trim() == word {
        Ok(())
    } else {
        Err(Failure::Declined)
    }
}

fn prompt(text: &str) -> Result<String, Failure> {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{text}");
    let _ = err.flush();
    drop(err);
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Local(format!("cannot read the answer: {e}")))?;
    if !std::io::stdin().is_terminal() {
        // Piped answers are not echoed: end the prompt line so later output starts cleanly.
        eprintln!();
    }
    Ok(line)
}
