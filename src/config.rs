//! The one server configuration. [`Settings`] is the one list of settings: it derives the
//! `lnrs serve` flags with their `LNRS_*` variables (clap) and the TOML file (serde); sources
//! merge with [`Settings::or`] (flags > environment > file), and [`Settings::resolve`] fills the
//! defaults and validates once, into the [`Config`] the server runs with. Every error names the
//! setting it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What a delete does when its pre-delete snapshot cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum SnapshotPolicy {
    /// The delete fails with FAILED_PRECONDITION and nothing changes.
    Required,
    /// The delete proceeds; its response and event say the snapshot was skipped and why.
    BestEffort,
    /// No pre-delete snapshots (explicit opt-out).
    Disabled,
}

/// How deletes wait for the replica (see `replica_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ReplicaMode {
    /// A background uploader ships snapshots and the log; nothing waits for it.
    Async,
    /// A delete is acknowledged only once its pre-delete snapshot and its event are in the
    /// object store (else UNAVAILABLE, REPLICA_NOT_CONFIRMED; the delete stands locally).
    Sync,
    /// As `sync`, and the pre-delete snapshot is uploaded before the delete commits: with the
    /// store unreachable the delete is refused and nothing changes.
    Required,
}

impl ReplicaMode {
    /// The name in flags, the file and status.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaMode::Async => "async",
            ReplicaMode::Sync => "sync",
            ReplicaMode::Required => "required",
        }
    }
}

/// The replica on object storage (set when `replica_url` is).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaConfig {
    /// `s3://bucket/prefix`, `gs://…`, `az://…` or `file:///dir`.
    pub url: String,
    /// S3-compatible endpoint (else `AWS_ENDPOINT_URL` / AWS's own).
    pub endpoint: Option<String>,
    pub mode: ReplicaMode,
    /// Past this lag, health `lnrs.v1.Replica` is NOT_SERVING.
    pub max_lag: Duration,
    /// A log segment is cut every this many events…
    pub segment_events: u64,
    /// …or this long after its first event, whichever comes first.
    pub segment_interval: Duration,
    /// The fencing lease's time to live.
    pub lease_ttl: Duration,
    /// How long a `sync` delete waits for the replica.
    pub sync_timeout: Duration,
    /// Remote retention: snapshots kept (newest N) and kept by age.
    pub retention_keep_last: usize,
    pub retention_keep_within: Option<Duration>,
    /// Unreferenced remote blocks younger than this are never collected.
    pub gc_grace: Duration,
    /// How often remote retention and GC run.
    pub gc_interval: Duration,
    /// Share of remote blocks one drill run reads (percent).
    pub drill_share_percent: u32,
    /// How often the drill runs (`None`: only on request).
    pub drill_interval: Option<Duration>,
    /// On an empty data directory, recover from the replica instead of loading the reference
    /// dataset.
    pub bootstrap: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, pretty otherwise.
    Auto,
    Json,
    Pretty,
}

/// TLS settings (rustls). With `client_ca`, clients must present a certificate it signed (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A secret (bearer token): usable as `&str`, never printed by `Debug`, so logging a Config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// The names of the roles of [`crate::auth::Role`], lowest first (a unit test there checks they
/// agree): `LNRS_TOKENS` needs them to tell a role from a name.
pub const ROLE_NAMES: [&str; 3] = ["reader", "editor", "admin"];

/// One configured bearer token, as written: the role and name are checked with the tokens file
/// where the server starts ([`crate::auth::Tokens::from_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub token: Secret,
    pub role: String,
    /// What events and request ids know the token by; None: "token-" and a hash.
    pub name: Option<String>,
}

impl TokenEntry {
    /// An unnamed token.
    pub fn new(token: &str, role: &str) -> Self {
        Self {
            token: token.into(),
            role: role.to_string(),
            name: None,
        }
    }

    /// The same token, named.
    pub fn named(self, name: &str) -> Self {
        Self {
            name: Some(name.to_string()),
            ..self
        }
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Data directory: the database file and the snapshot store live here.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics` listen address (None: off).
    pub metrics_listen: Option<SocketAddr>,
    /// Load the reference dataset when the data directory has no database.
    pub load_reference_data: bool,
    /// Scale of that reference dataset.
    pub reference_scale: u32,

    pub snapshot_policy: SnapshotPolicy,
    /// Capture the committed state in the background once the writer has been idle for
    /// `snapshot_capture_idle`, so the next delete's snapshot is already taken.
    pub snapshot_capture_ahead: bool,
    pub snapshot_capture_idle: Duration,
    /// Compare a capture taken ahead (when a delete reuses it) and a delete's own capture
    /// (refreshed from the previous one) with a plain read of the whole file (costs the read;
    /// for audits and tests).
    pub snapshot_capture_verify: bool,
    pub retention_keep_last: usize,
    pub retention_keep_within: Option<Duration>,

    /// Keep at most this many events (None: unbounded).
    pub event_retention_keep_last: Option<u64>,
    /// Drop events older than this (None: no age bound).
    pub event_retention_max_age: Option<Duration>,
    pub max_subscribers: usize,
    /// Events the live fan-out ring holds before slow subscribers fall back to catch-up.
    pub event_ring_capacity: usize,
    pub default_heartbeat: Duration,
    /// The CloudEvents `source` of this server's events (a URI-reference): the event's seq is
    /// its `id`, unique within this source. Give each deployment its own.
    pub cloudevents_source: String,

    /// Writes waiting for the writer beyond this are refused with RESOURCE_EXHAUSTED.
    pub write_queue: usize,
    /// How long a read waits for a restore's swap before answering UNAVAILABLE.
    pub restore_read_wait: Duration,
    pub max_message_bytes: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_connection_age: Duration,
    pub max_connection_age_grace: Duration,
    pub max_concurrent_streams: u32,
    /// After SIGTERM, how long health reports NOT_SERVING before streams are ended.
    pub shutdown_drain_delay: Duration,
    /// Hard bound on the whole shutdown (below Kubernetes' 30 s default grace).
    pub shutdown_grace: Duration,

    /// Bearer tokens file (`token role [name]` per line); None and no env tokens: auth off.
    pub tokens_file: Option<PathBuf>,
    /// Tokens given directly (`LNRS_TOKENS="tok1:admin:ops,tok2:reader"`).
    pub tokens: Vec<TokenEntry>,
    /// Whether reflection needs a token when auth is on.
    pub reflection_requires_auth: bool,
    pub tls: Option<TlsConfig>,
    /// Serve gRPC-Web (HTTP/1.1 and HTTP/2) on the gRPC port next to native gRPC.
    pub grpc_web: bool,
    /// Browser origins allowed to call gRPC-Web across origins (CORS), exactly as browsers send
    /// them (`https://app.example.org`), or the one entry `*` for any origin. Empty: no CORS
    /// headers at all, so only same-origin pages and non-browser clients can call.
    pub grpc_web_cors_origins: Vec<String>,

    pub log_format: LogFormat,
    pub log_filter: String,

    /// How long an AIP-155 request id is remembered; a retry after that runs again.
    pub request_log_max_age: Duration,
    /// Most request ids remembered (the oldest are forgotten first).
    pub request_log_keep_last: u64,
    /// Snapshot assemblies (preview, deep verify) running at once; more are refused with
    /// RESOURCE_EXHAUSTED and a retry hint.
    pub max_concurrent_assemblies: usize,
    /// Free bytes an assembly or restore must leave on the volume it writes to.
    pub scratch_reserve_bytes: u64,
    /// Largest upload ImportDatabase / ImportSnapshot accept, in bytes.
    pub import_max_bytes: u64,
    /// Most bytes the CSV files of an import archive may unpack to (an archive bomb is refused
    /// before it fills the disk).
    pub import_max_unpacked_bytes: u64,
    /// How often background upkeep runs (storage probe, log compaction, request-log pruning).
    pub maintenance_interval: Duration,
    /// The replica on object storage, if any.
    pub replica: Option<ReplicaConfig>,
    /// Read-only follower of a primary's replica, if set.
    pub follow: Option<FollowConfig>,
    /// The NATS JetStream sink of the event log, if set.
    pub events_nats: Option<NatsSinkConfig>,
}

/// The NATS JetStream sink (`events_nats_url`): every committed event is published, in seq
/// order, to `<subject_prefix>.<kind>` in `stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSinkConfig {
    /// `nats://[user:password@]host:port` (or `tls://`); several servers comma-separated. A
    /// secret: it may carry credentials ([`NatsSinkConfig::redacted_url`] is what is shown).
    pub url: Secret,
    /// The JetStream stream: created (subjects `<subject_prefix>.>`) when missing.
    pub stream: String,
    pub subject_prefix: String,
}

/// Credentials for the NATS broker, from `events_nats_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

impl NatsSinkConfig {
    /// The defaults for a broker at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::from(url.into()),
            stream: "LNRS_EVENTS".into(),
            subject_prefix: "lnrs.events".into(),
        }
    }

    /// Each server of the URL as (`scheme://host:port`, the credentials before `@` if any).
    fn split(&self) -> impl Iterator<Item = (String, Option<&str>)> {
        self.url.split(',').map(|u| {
            let u = u.trim();
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => (format!("{scheme}://{host}"), Some(userinfo)),
                None => (u.to_string(), None),
            }
        })
    }

    /// The servers, without credentials.
    pub fn servers(&self) -> Vec<String> {
        self.split().map(|(server, _)| server).collect()
    }

    /// The credentials the URL carries (those of the first server that has some):
    /// `user:password@` or `token@`.
    pub fn credentials(&self) -> Option<NatsCredentials> {
        let userinfo = self.split().find_map(|(_, u)| u)?;
        Some(match userinfo.split_once(':') {
            Some((user, password)) => NatsCredentials::UserPassword {
                user: user.to_string(),
                password: Secret::from(password),
            },
            None => NatsCredentials::Token(Secret::from(userinfo)),
        })
    }

    /// The URL as status and logs show it: credentials replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.split()
            .map(
                |(server, userinfo)| match (userinfo, server.split_once("://")) {
                    (Some(_), Some((scheme, host))) => format!("{scheme}://***@{host}"),
                    _ => server,
                },
            )
            .collect::<Vec<_>>()
            .join(",")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, why: &str| {
            Err(ConfigError::Invalid {
                setting,
                why: why.to_string(),
            })
        };
        for u in self.url.split(',') {
            let scheme = u.trim().split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("nats" | "tls")) {
                return bad(
                    "events_nats_url",
                    "must be nats://host:port or tls://host:port (comma-separated for several)",
                );
            }
        }
        let plain = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !plain(&self.stream) {
            return bad(
                "events_nats_stream",
                "must be a JetStream stream name: not empty, no spaces, '.', '*', '>', '/' or '\\'",
            );
        }
        if !self.subject_prefix.split('.').all(plain) {
            return bad(
                "events_nats_subject_prefix",
                "must be dot-separated subject tokens without spaces or wildcards",
            );
        }
        Ok(())
    }
}

/// A read-only follower: bootstraps from a primary's replica, then tails its shipped log — or,
/// when `url` is the primary's own gRPC address (`http://host:port`), bootstraps from the
/// primary's newest snapshot (ExportSnapshot) and tails its WatchEvents.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowConfig {
    /// The primary's replica URL (as its `replica_url`), or the primary's gRPC address.
    pub url: String,
    /// Bearer token for the primary (a reader's is enough), when it follows a primary directly.
    pub token: Option<Secret>,
    /// S3-compatible endpoint (`replica_endpoint`).
    pub endpoint: Option<String>,
    /// How often the replica is polled for new log segments.
    pub interval: Duration,
}

impl FollowConfig {
    /// True when the follower tails the primary itself rather than its replica.
    pub fn tails_primary(&self) -> bool {
        self.url.starts_with("http://") || self.url.starts_with("https://")
    }
}

impl Config {
    /// Defaults for a data directory: what `lnrs serve` runs with when nothing is set.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: data_dir.into(),
            metrics_listen: None,
            load_reference_data: true,
            reference_scale: 1,
            snapshot_policy: SnapshotPolicy::Required,
            snapshot_capture_ahead: true,
            snapshot_capture_idle: Duration::from_millis(20),
            snapshot_capture_verify: false,
            retention_keep_last: 10,
            retention_keep_within: None,
            event_retention_keep_last: None,
            event_retention_max_age: None,
            max_subscribers: 2048,
            event_ring_capacity: 4096,
            default_heartbeat: Duration::from_secs(15),
            cloudevents_source: "/lnrs".into(),
            write_queue: 256,
            restore_read_wait: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(30),
            max_concurrent_streams: 1024,
            shutdown_drain_delay: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(25),
            tokens_file: None,
            tokens: Vec::new(),
            reflection_requires_auth: false,
            tls: None,
            grpc_web: true,
            grpc_web_cors_origins: Vec::new(),
            log_format: LogFormat::Auto,
            log_filter: "info".into(),
            request_log_max_age: Duration::from_secs(24 * 3600),
            request_log_keep_last: 100_000,
            max_concurrent_assemblies: 2,
            scratch_reserve_bytes: 256 * 1024 * 1024,
            import_max_bytes: 1 << 30,
            import_max_unpacked_bytes: 4 << 30,
            maintenance_interval: Duration::from_secs(15),
            replica: None,
            follow: None,
            events_nats: None,
        }
    }

    /// The live database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("lnrs.duckdb")
    }

    /// The snapshot store root.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Checks value ranges and cross-field rules; the error names the setting. Files the
    /// settings point at (tokens, TLS) are checked where the server starts
    /// ([`crate::server::check`]): this module knows no auth or TLS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, why: &str| {
            Err(ConfigError::Invalid {
                setting,
                why: why.to_string(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.retention_keep_last == 0 {
            return bad("retention_keep_last", "must be at least 1");
        }
        if self.reference_scale == 0 || self.reference_scale > 1000 {
            return bad("reference_scale", "must be in 1..=1000");
        }
        if self.max_subscribers == 0 {
            return bad("max_subscribers", "must be at least 1");
        }
        if self.event_ring_capacity < 16 {
            return bad("event_ring_capacity", "must be at least 16");
        }
        if self.write_queue == 0 {
            return bad("write_queue", "must be at least 1");
        }
        if self.max_message_bytes < 64 * 1024 || self.max_message_bytes > 256 * 1024 * 1024 {
            return bad("max_message_bytes", "must be between 64 KiB and 256 MiB");
        }
        if self.default_heartbeat < Duration::from_secs(1)
            || self.default_heartbeat > Duration::from_secs(300)
        {
            return bad("default_heartbeat", "must be between 1s and 300s");
        }
        if !is_uri_reference(&self.cloudevents_source) {
            return bad(
                "cloudevents_source",
                "must be a non-empty URI-reference of at most 512 characters, without spaces",
            );
        }
        if self.shutdown_drain_delay >= self.shutdown_grace {
            return bad(
                "shutdown_drain_delay",
                "must be shorter than shutdown_grace",
            );
        }
        if self.event_retention_keep_last == Some(0) {
            return bad("event_retention_keep_last", "must be at least 1");
        }
        for (setting, d) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("max_connection_age", self.max_connection_age),
        ] {
            if d < Duration::from_secs(1) {
                return bad(setting, "must be at least 1s");
            }
        }
        if self.request_log_keep_last == 0 {
            return bad("request_log_keep_last", "must be at least 1");
        }
        if self.request_log_max_age < Duration::from_secs(60) {
            return bad("request_log_max_age", "must be at least 1m");
        }
        if self.maintenance_interval < Duration::from_millis(10) {
            return bad("maintenance_interval", "must be at least 10ms");
        }
        if self.import_max_bytes == 0 || self.import_max_unpacked_bytes == 0 {
            return bad("import_max_bytes", "import limits must be at least 1 byte");
        }
        if self.max_concurrent_assemblies == 0 {
            return bad("max_concurrent_assemblies", "must be at least 1");
        }
        if let Some(r) = &self.replica {
            r.validate()?;
        }
        if let Some(n) = &self.events_nats {
            n.validate()?;
        }
        if let Some(f) = &self.follow {
            if f.interval < Duration::from_millis(10) {
                return bad("follow_interval", "must be at least 10ms");
            }
            if f.url.starts_with("https://") {
                return bad(
                    "follow",
                    "a primary is followed over plain http:// (in-cluster; a mesh sidecar adds \
                     TLS); https:// is not supported",
                );
            }
        }
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams", "must be at least 1");
        }
        if let Err(why) = check_cors_origins(&self.grpc_web_cors_origins) {
            return bad("grpc_web_cors_origins", &why);
        }
        if !self.grpc_web && !self.grpc_web_cors_origins.is_empty() {
            return bad(
                "grpc_web_cors_origins",
                "CORS is for gRPC-Web, which grpc_web = false turns off",
            );
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return bad("metrics_listen", "must differ from listen");
        }
        Ok(())
    }
}

/// The one wildcard `grpc_web_cors_origins` accepts: any origin.
pub const ANY_ORIGIN: &str = "*";

/// Each origin must be what a browser sends in `Origin`: `http` or `https`, a host, an optional
/// non-default port, nothing else (no path, not even `/`), lower case — CORS compares the
/// strings exactly, so anything else could never match. `*` is allowed only alone.
fn check_cors_origins(origins: &[String]) -> Result<(), String> {
    if origins.iter().any(|o| o == ANY_ORIGIN) {
        return match origins.len() {
            1 => Ok(()),
            _ => Err(format!(
                "`{ANY_ORIGIN}` (any origin) must be the only entry"
            )),
        };
    }
    for o in origins {
        let serialized = url::Url::parse(o)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|u| u.origin().ascii_serialization());
        if serialized.as_deref() != Some(o.as_str()) {
            let hint = match serialized {
                Some(s) => format!(" (write it as `{s}`)"),
                None => String::new(),
            };
            return Err(format!(
                "`{o}` is not an origin: scheme://host[:port] with http or https, no path{hint}"
            ));
        }
    }
    Ok(())
}

impl ReplicaConfig {
    /// The defaults for a replica at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ReplicaConfig {
            url: url.into(),
            endpoint: None,
            mode: ReplicaMode::Async,
            max_lag: Duration::from_secs(60),
            segment_events: 1000,
            segment_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(10),
            retention_keep_last: 30,
            retention_keep_within: Some(Duration::from_secs(7 * 24 * 3600)),
            gc_grace: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(600),
            drill_share_percent: 10,
            drill_interval: Some(Duration::from_secs(24 * 3600)),
            bootstrap: false,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, why: &str| {
            Err(ConfigError::Invalid {
                setting,
                why: why.to_string(),
            })
        };
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        if !matches!(
            scheme,
            Some("s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "file")
        ) {
            return bad("replica_url", "must be s3://, gs://, az:// or file:// URL");
        }
        if self.segment_events == 0 {
            return bad("replica_segment_events", "must be at least 1");
        }
        if self.segment_interval < Duration::from_millis(10) {
            return bad("replica_segment_interval", "must be at least 10ms");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad("replica_lease_ttl", "must be at least 1s");
        }
        if self.retention_keep_last == 0 {
            return bad("replica_retention_keep_last", "must be at least 1");
        }
        if !(1..=100).contains(&self.drill_share_percent) {
            return bad("replica_drill_share_percent", "must be in 1..=100");
        }
        Ok(())
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting `{setting}`: {why}")]
    Invalid { setting: &'static str, why: String },
    #[error("cannot read config file {path}: {why}")]
    File { path: PathBuf, why: String },
}

/// A duration as people write it ("500ms", "30s", "5m", "1h 30m", "7d"), in a flag, an
/// environment variable or the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration ({e})"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

/// Declares [`Settings`] and what is derived from its one list of fields: the merge and the
/// list of keys.
macro_rules! settings {
    ($($(#[$attr:meta])* $name:ident: $ty:ty,)*) => {
        /// Every `lnrs serve` setting as ONE source gives it: the flags and their `LNRS_*`
        /// variables (clap; a flag beats its variable), or the TOML file (serde, same names in
        /// snake_case). `None`: this source leaves the setting alone.
        #[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $($(#[$attr])* pub $name: Option<$ty>,)*
        }

        impl Settings {
            /// Every key of the file (and the name errors use for each setting).
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The one merge: each setting from `self` where it is set, else from `lower`.
            pub fn or(self, lower: Settings) -> Settings {
                Settings {
                    $($name: self.$name.or(lower.$name),)*
                }
            }
        }
    };
}

settings! {
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "LNRS_LISTEN")]
    listen: SocketAddr,
    /// Data directory (database + snapshots) [default: ./data].
    #[arg(long, env = "LNRS_DATA_DIR")]
    data_dir: PathBuf,
    /// Prometheus /metrics listen address (off when unset).
    #[arg(long, env = "LNRS_METRICS_LISTEN")]
    metrics_listen: SocketAddr,
    /// Load the reference dataset into an empty data directory [default: true].
    #[arg(long, env = "LNRS_LOAD_REFERENCE_DATA")]
    load_reference_data: bool,
    /// Scale of that dataset [default: 1].
    #[arg(long, env = "LNRS_REFERENCE_SCALE")]
    reference_scale: u32,
    /// What a delete does when its snapshot cannot be taken [default: required].
    #[arg(long, env = "LNRS_SNAPSHOT_POLICY", value_enum)]
    snapshot_policy: SnapshotPolicy,
    /// Capture the committed state in the background while the writer is idle, so a delete's
    /// snapshot writes only its manifest [default: true].
    #[arg(long, env = "LNRS_SNAPSHOT_CAPTURE_AHEAD")]
    snapshot_capture_ahead: bool,
    /// How long the writer must be idle after a change before capturing ahead [default: 20ms].
    #[arg(long, env = "LNRS_SNAPSHOT_CAPTURE_IDLE")]
    snapshot_capture_idle: HumanDuration,
    /// Check every reused capture, and every delete's own capture (refreshed from the previous
    /// one), against a plain read of the whole file (costs the read; for audits)
    /// [default: false].
    #[arg(long, env = "LNRS_SNAPSHOT_CAPTURE_VERIFY")]
    snapshot_capture_verify: bool,
    /// Snapshots kept by retention [default: 10].
    #[arg(long, env = "LNRS_RETENTION_KEEP_LAST")]
    retention_keep_last: usize,
    /// Also keep snapshots younger than this, e.g. "7d".
    #[arg(long, env = "LNRS_RETENTION_KEEP_WITHIN")]
    retention_keep_within: HumanDuration,
    /// Keep at most this many events in the log.
    #[arg(long, env = "LNRS_EVENT_RETENTION_KEEP_LAST")]
    event_retention_keep_last: u64,
    /// Drop events older than this, e.g. "90d".
    #[arg(long, env = "LNRS_EVENT_RETENTION_MAX_AGE")]
    event_retention_max_age: HumanDuration,
    /// Concurrent WatchEvents streams [default: 2048].
    #[arg(long, env = "LNRS_MAX_SUBSCRIBERS")]
    max_subscribers: usize,
    /// Events the live fan-out ring holds [default: 4096].
    #[arg(long, env = "LNRS_EVENT_RING_CAPACITY")]
    event_ring_capacity: usize,
    /// Heartbeat interval of streams that do not ask for one [default: 15s].
    #[arg(long, env = "LNRS_DEFAULT_HEARTBEAT")]
    default_heartbeat: HumanDuration,
    /// CloudEvents `source` of this server's events, unique per deployment [default: /lnrs].
    #[arg(long, env = "LNRS_CLOUDEVENTS_SOURCE")]
    cloudevents_source: String,
    /// How long a read waits for a restore's swap before UNAVAILABLE [default: 10s].
    #[arg(long, env = "LNRS_RESTORE_READ_WAIT")]
    restore_read_wait: HumanDuration,
    /// Writes allowed to wait for the writer [default: 256].
    #[arg(long, env = "LNRS_WRITE_QUEUE")]
    write_queue: usize,
    /// Largest request/response message in bytes [default: 4194304].
    #[arg(long, env = "LNRS_MAX_MESSAGE_BYTES")]
    max_message_bytes: usize,
    /// HTTP/2 ping interval on idle connections [default: 30s].
    #[arg(long, env = "LNRS_KEEPALIVE_INTERVAL")]
    keepalive_interval: HumanDuration,
    /// How long a ping may go unanswered before the connection is closed [default: 20s].
    #[arg(long, env = "LNRS_KEEPALIVE_TIMEOUT")]
    keepalive_timeout: HumanDuration,
    /// Connections are asked to reconnect after this long [default: 30m].
    #[arg(long, env = "LNRS_MAX_CONNECTION_AGE")]
    max_connection_age: HumanDuration,
    /// Then get this long to finish their calls before being closed [default: 30s].
    #[arg(long, env = "LNRS_MAX_CONNECTION_AGE_GRACE")]
    max_connection_age_grace: HumanDuration,
    /// Concurrent HTTP/2 streams per connection [default: 1024].
    #[arg(long, env = "LNRS_MAX_CONCURRENT_STREAMS")]
    max_concurrent_streams: u32,
    /// Health NOT_SERVING period before streams end on shutdown [default: 2s].
    #[arg(long, env = "LNRS_SHUTDOWN_DRAIN_DELAY")]
    shutdown_drain_delay: HumanDuration,
    /// Bound on the whole shutdown [default: 25s].
    #[arg(long, env = "LNRS_SHUTDOWN_GRACE")]
    shutdown_grace: HumanDuration,
    /// Bearer tokens file: one `token role [name]` per line (roles: reader, editor, admin; the
    /// name is who events record).
    #[arg(long, env = "LNRS_TOKENS_FILE")]
    tokens_file: PathBuf,
    /// Whether gRPC reflection needs a token when auth is on [default: false].
    #[arg(long, env = "LNRS_REFLECTION_REQUIRES_AUTH")]
    reflection_requires_auth: bool,
    /// Serve gRPC-Web (HTTP/1.1 and HTTP/2) on the gRPC port [default: true].
    #[arg(long, env = "LNRS_GRPC_WEB")]
    grpc_web: bool,
    /// Browser origins allowed to call gRPC-Web (CORS), comma-separated, e.g.
    /// https://app.example.org; `*` alone allows any [default: none, no CORS headers].
    #[arg(long, env = "LNRS_GRPC_WEB_CORS_ORIGINS", value_delimiter = ',')]
    grpc_web_cors_origins: Vec<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "LNRS_TLS_CERT")]
    tls_cert: PathBuf,
    /// TLS private key (PEM).
    #[arg(long, env = "LNRS_TLS_KEY")]
    tls_key: PathBuf,
    /// CA (PEM) that client certificates must chain to: enables mTLS.
    #[arg(long, env = "LNRS_TLS_CLIENT_CA")]
    tls_client_ca: PathBuf,
    /// Log format [default: auto].
    #[arg(long, env = "LNRS_LOG_FORMAT", value_enum)]
    log_format: LogFormat,
    /// Log filter, e.g. "info,lnrs=debug" [default: info].
    #[arg(long = "log", env = "LNRS_LOG", value_name = "LOG")]
    log_filter: String,
    /// How long an AIP-155 request_id is remembered for replay [default: 24h].
    #[arg(long, env = "LNRS_REQUEST_LOG_MAX_AGE")]
    request_log_max_age: HumanDuration,
    /// Most request ids remembered; the oldest are forgotten first [default: 100000].
    #[arg(long, env = "LNRS_REQUEST_LOG_KEEP_LAST")]
    request_log_keep_last: u64,
    /// Snapshot assemblies (previews, deep verifies) at once [default: 2].
    #[arg(long, env = "LNRS_MAX_CONCURRENT_ASSEMBLIES")]
    max_concurrent_assemblies: usize,
    /// Free bytes an assembly or restore must leave on its volume [default: 268435456].
    #[arg(long, env = "LNRS_SCRATCH_RESERVE_BYTES")]
    scratch_reserve_bytes: u64,
    /// Largest upload ImportDatabase / ImportSnapshot accept, in bytes [default: 1073741824].
    #[arg(long, env = "LNRS_IMPORT_MAX_BYTES")]
    import_max_bytes: u64,
    /// Most bytes an import archive's CSV files may unpack to [default: 4294967296].
    #[arg(long, env = "LNRS_IMPORT_MAX_UNPACKED_BYTES")]
    import_max_unpacked_bytes: u64,
    /// How often background upkeep runs [default: 15s].
    #[arg(long, env = "LNRS_MAINTENANCE_INTERVAL")]
    maintenance_interval: HumanDuration,
    /// Replica on object storage: s3://bucket/prefix, gs://…, az://…, file:///dir [default: none].
    #[arg(long, env = "LNRS_REPLICA_URL")]
    replica_url: String,
    /// S3-compatible endpoint for the replica [default: AWS_ENDPOINT_URL or AWS's].
    #[arg(long, env = "LNRS_REPLICA_ENDPOINT")]
    replica_endpoint: String,
    /// async, sync or required [default: async].
    #[arg(long, env = "LNRS_REPLICA_MODE", value_enum)]
    replica_mode: ReplicaMode,
    /// Lag past which health lnrs.v1.Replica is NOT_SERVING [default: 60s].
    #[arg(long, env = "LNRS_REPLICA_MAX_LAG")]
    replica_max_lag: HumanDuration,
    /// Events per shipped log segment, at most [default: 1000].
    #[arg(long, env = "LNRS_REPLICA_SEGMENT_EVENTS")]
    replica_segment_events: u64,
    /// A segment is cut this long after its first event at the latest [default: 1s].
    #[arg(long, env = "LNRS_REPLICA_SEGMENT_INTERVAL")]
    replica_segment_interval: HumanDuration,
    /// Time to live of the replica lease (fencing) [default: 30s].
    #[arg(long, env = "LNRS_REPLICA_LEASE_TTL")]
    replica_lease_ttl: HumanDuration,
    /// How long a sync-mode delete waits for the replica [default: 10s].
    #[arg(long, env = "LNRS_REPLICA_SYNC_TIMEOUT")]
    replica_sync_timeout: HumanDuration,
    /// Remote retention: newest snapshots kept [default: 30].
    #[arg(long, env = "LNRS_REPLICA_RETENTION_KEEP_LAST")]
    replica_retention_keep_last: usize,
    /// Remote retention: snapshots kept by age [default: 7d].
    #[arg(long, env = "LNRS_REPLICA_RETENTION_KEEP_WITHIN")]
    replica_retention_keep_within: HumanDuration,
    /// Unreferenced remote blocks younger than this are kept [default: 1h].
    #[arg(long, env = "LNRS_REPLICA_GC_GRACE")]
    replica_gc_grace: HumanDuration,
    /// How often remote retention and GC run [default: 10m].
    #[arg(long, env = "LNRS_REPLICA_GC_INTERVAL")]
    replica_gc_interval: HumanDuration,
    /// Percent of remote blocks one drill run reads [default: 10].
    #[arg(long, env = "LNRS_REPLICA_DRILL_SHARE_PERCENT")]
    replica_drill_share_percent: u32,
    /// How often the read drill runs [default: 24h].
    #[arg(long, env = "LNRS_REPLICA_DRILL_INTERVAL")]
    replica_drill_interval: HumanDuration,
    /// On an empty data directory, recover from the replica before serving [default: false].
    #[arg(long, env = "LNRS_BOOTSTRAP_FROM_REPLICA")]
    bootstrap_from_replica: bool,
    /// Serve as a read-only follower of the primary whose replica is at this URL, or of the
    /// primary itself at http://host:port (tailing its WatchEvents) [default: none].
    #[arg(long, env = "LNRS_FOLLOW")]
    follow: String,
    /// Bearer token a follower presents to the primary it tails directly [default: none].
    #[arg(long, env = "LNRS_FOLLOW_TOKEN")]
    follow_token: String,
    /// How often a follower polls the replica for new log segments [default: 1s].
    #[arg(long, env = "LNRS_FOLLOW_INTERVAL")]
    follow_interval: HumanDuration,
    /// Publish every committed event, in seq order, to NATS JetStream at this URL
    /// (nats://[user:pass@]host:port) [default: none].
    #[arg(long, env = "LNRS_EVENTS_NATS_URL")]
    events_nats_url: String,
    /// The JetStream stream the sink publishes to (created if missing) [default: LNRS_EVENTS].
    #[arg(long, env = "LNRS_EVENTS_NATS_STREAM")]
    events_nats_stream: String,
    /// Subjects are <prefix>.<kind>, e.g. lnrs.events.entity_deleted [default: lnrs.events].
    #[arg(long, env = "LNRS_EVENTS_NATS_SUBJECT_PREFIX")]
    events_nats_subject_prefix: String,
}

/// Puts `value` in `slot` if it is set.
fn set<T>(slot: &mut T, value: Option<impl Into<T>>) {
    if let Some(v) = value {
        *slot = v.into();
    }
}

impl Settings {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file_error = |why: String| ConfigError::File {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.to_string()))
    }

    /// The configuration: these settings over the defaults, plus the tokens of `LNRS_TOKENS`,
    /// validated.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let mut c = Config::new(self.data_dir.unwrap_or_else(|| PathBuf::from("data")));
        set(&mut c.listen, self.listen);
        c.metrics_listen = self.metrics_listen;
        set(&mut c.load_reference_data, self.load_reference_data);
        set(&mut c.reference_scale, self.reference_scale);
        set(&mut c.snapshot_policy, self.snapshot_policy);
        set(&mut c.snapshot_capture_ahead, self.snapshot_capture_ahead);
        set(&mut c.snapshot_capture_idle, self.snapshot_capture_idle);
        set(&mut c.snapshot_capture_verify, self.snapshot_capture_verify);
        set(&mut c.retention_keep_last, self.retention_keep_last);
        c.retention_keep_within = self.retention_keep_within.map(Into::into);
        c.event_retention_keep_last = self.event_retention_keep_last;
        c.event_retention_max_age = self.event_retention_max_age.map(Into::into);
        set(&mut c.max_subscribers, self.max_subscribers);
        set(&mut c.event_ring_capacity, self.event_ring_capacity);
        set(&mut c.default_heartbeat, self.default_heartbeat);
        set(&mut c.cloudevents_source, self.cloudevents_source);
        set(&mut c.restore_read_wait, self.restore_read_wait);
        set(&mut c.write_queue, self.write_queue);
        set(&mut c.max_message_bytes, self.max_message_bytes);
        set(&mut c.keepalive_interval, self.keepalive_interval);
        set(&mut c.keepalive_timeout, self.keepalive_timeout);
        set(&mut c.max_connection_age, self.max_connection_age);
        set(
            &mut c.max_connection_age_grace,
            self.max_connection_age_grace,
        );
        set(&mut c.max_concurrent_streams, self.max_concurrent_streams);
        set(&mut c.shutdown_drain_delay, self.shutdown_drain_delay);
        set(&mut c.shutdown_grace, self.shutdown_grace);
        c.tokens_file = self.tokens_file;
        c.tokens = tokens_from_env()?;
        set(
            &mut c.reflection_requires_auth,
            self.reflection_requires_auth,
        );
        c.tls = tls(self.tls_cert, self.tls_key, self.tls_client_ca)?;
        set(&mut c.grpc_web, self.grpc_web);
        set(&mut c.grpc_web_cors_origins, self.grpc_web_cors_origins);
        set(&mut c.log_format, self.log_format);
        set(&mut c.log_filter, self.log_filter);
        set(&mut c.request_log_max_age, self.request_log_max_age);
        set(&mut c.request_log_keep_last, self.request_log_keep_last);
        set(
            &mut c.max_concurrent_assemblies,
            self.max_concurrent_assemblies,
        );
        set(&mut c.scratch_reserve_bytes, self.scratch_reserve_bytes);
        set(&mut c.import_max_bytes, self.import_max_bytes);
        set(
            &mut c.import_max_unpacked_bytes,
            self.import_max_unpacked_bytes,
        );
        set(&mut c.maintenance_interval, self.maintenance_interval);
        c.replica = self.replica_url.clone().map(|url| {
            let mut r = ReplicaConfig::new(url);
            r.endpoint = self.replica_endpoint.clone();
            set(&mut r.mode, self.replica_mode);
            set(&mut r.max_lag, self.replica_max_lag);
            set(&mut r.segment_events, self.replica_segment_events);
            set(&mut r.segment_interval, self.replica_segment_interval);
            set(&mut r.lease_ttl, self.replica_lease_ttl);
            set(&mut r.sync_timeout, self.replica_sync_timeout);
            set(&mut r.retention_keep_last, self.replica_retention_keep_last);
            if let Some(d) = self.replica_retention_keep_within {
                r.retention_keep_within = Some(d.into());
            }
            set(&mut r.gc_grace, self.replica_gc_grace);
            set(&mut r.gc_interval, self.replica_gc_interval);
            set(&mut r.drill_share_percent, self.replica_drill_share_percent);
            if let Some(d) = self.replica_drill_interval {
                r.drill_interval = Some(d.into());
            }
            set(&mut r.bootstrap, self.bootstrap_from_replica);
            r
        });
        c.events_nats = self.events_nats_url.clone().map(|url| {
            let mut n = NatsSinkConfig::new(url);
            set(&mut n.stream, self.events_nats_stream.clone());
            set(
                &mut n.subject_prefix,
                self.events_nats_subject_prefix.clone(),
            );
            n
        });
        c.follow = self.follow.clone().map(|url| FollowConfig {
            url,
            token: self.follow_token.clone().map(Secret::from),
            endpoint: self.replica_endpoint.clone(),
            interval: self
                .follow_interval
                .map_or(Duration::from_secs(1), Into::into),
        });
        // A follower never uploads: a replica_url beside follow may only name the same replica
        // (one template for every pod of a deployment), and is then the follower's source.
        if let (Some(f), Some(r)) = (&c.follow, &c.replica) {
            if f.url != r.url {
                return Err(ConfigError::Invalid {
                    setting: "follow",
                    why: "a follower does not replicate: replica_url, if set, must be the \
                          replica it follows"
                        .into(),
                });
            }
            c.replica = None;
        }
        if c.replica.is_none() && self.bootstrap_from_replica == Some(true) {
            return Err(ConfigError::Invalid {
                setting: "bootstrap_from_replica",
                why: "needs replica_url".into(),
            });
        }
        c.validate()?;
        Ok(c)
    }
}

/// TLS is on with a certificate and its key; a client CA on top turns on mTLS.
fn tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsConfig>, ConfigError> {
    let bad = |setting, why: &str| {
        Err(ConfigError::Invalid {
            setting,
            why: why.into(),
        })
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_some() => {
            bad("tls_client_ca", "mTLS needs tls_cert and tls_key as well")
        }
        (None, None) => Ok(None),
        _ => bad("tls_cert", "tls_cert and tls_key must be given together"),
    }
}

/// `LNRS_TOKENS="token1:admin:ops,token2:reader"` (never a flag: command lines are visible to
/// every local user). The tokens themselves are checked with the tokens file, at start-up.
fn tokens_from_env() -> Result<Vec<TokenEntry>, ConfigError> {
    let Ok(v) = std::env::var("LNRS_TOKENS") else {
        return Ok(Vec::new());
    };
    tokens_from(&v)
}

/// Comma-separated `token:role` or `token:role:name` entries. A token may itself hold `:`, so
/// entries are split from the right: a last part that is a role is the role (names may not be
/// roles: [`crate::auth`] refuses them), otherwise it is the name and the part before it the role.
/// The roles are [`ROLE_NAMES`] (config sits below auth and cannot ask it).
fn tokens_from(v: &str) -> Result<Vec<TokenEntry>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| {
            let malformed = || ConfigError::Invalid {
                setting: "LNRS_TOKENS",
                why: format!(
                    "entry {}: expected token:role or token:role:name, entries separated by commas",
                    i + 1
                ),
            };
            let (rest, last) = p.rsplit_once(':').ok_or_else(malformed)?;
            if ROLE_NAMES.contains(&last) {
                return Ok(TokenEntry::new(rest, last));
            }
            match rest.rsplit_once(':') {
                Some((token, role)) if ROLE_NAMES.contains(&role) => {
                    Ok(TokenEntry::new(token, role).named(last))
                }
                // Not a role in either place: the role check names the entry and the bad role.
                _ => Ok(TokenEntry::new(rest, last)),
            }
        })
        .collect()
}

/// A CloudEvents `source`: a non-empty URI-reference (RFC 3986) of sane length. Checked for the
/// characters a URI-reference may not hold; "/lnrs", "urn:lnrs:west-sussex" and
/// "https://lnrs.example.org/strategy" pass.
fn is_uri_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/lnrs.example.toml");

    /// `key = value` lines of the example, commented out or not: (key, line without the `#`).
    fn example_settings() -> Vec<(&'static str, &'static str)> {
        EXAMPLE
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| {
                let (key, _) = l.split_once(" = ")?;
                key.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    .then_some((key, l))
            })
            .collect()
    }

    #[test]
    fn the_example_names_every_setting_and_nothing_else() {
        let mut named: Vec<&str> = example_settings().iter().map(|(k, _)| *k).collect();
        named.sort();
        let mut keys = Settings::KEYS.to_vec();
        keys.sort();
        assert_eq!(named, keys, "config/lnrs.example.toml vs Settings");
    }

    #[test]
    fn the_example_gives_the_defaults_and_its_commented_values_are_valid() {
        let file: Settings = toml::from_str(EXAMPLE).unwrap();
        let resolved = file.resolve().unwrap();
        assert_eq!(
            format!("{resolved:?}"),
            format!("{:?}", Config::new("data")),
            "the active lines of the example are the defaults"
        );
        let every: String = example_settings()
            .iter()
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        let all: Settings = toml::from_str(&every).unwrap();
        assert!(Settings::KEYS.len() > 20);
        all.resolve().unwrap();
    }

    #[test]
    fn a_cloudevents_source_must_be_a_uri_reference() {
        for ok in [
            "/lnrs",
            "urn:lnrs:west-sussex",
            "https://lnrs.example.org/s?x=1#f",
        ] {
            assert!(is_uri_reference(ok), "{ok}");
        }
        for bad in ["", "has space", "a<b", &"x".repeat(513)] {
            let mut c = Config::new("data");
            c.cloudevents_source = bad.to_string();
            assert!(
                matches!(
                    c.validate(),
                    Err(ConfigError::Invalid {
                        setting: "cloudevents_source",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_source_wins_where_it_sets_a_value() {
        let flags = Settings {
            retention_keep_last: Some(3),
            ..Default::default()
        };
        let file: Settings = toml::from_str(
            "retention_keep_last = 7\nmax_subscribers = 9\nshutdown_grace = \"1m\"\n",
        )
        .unwrap();
        let c = flags.or(file).resolve().unwrap();
        assert_eq!(
            (c.retention_keep_last, c.max_subscribers, c.shutdown_grace),
            (3, 9, Duration::from_secs(60))
        );
        assert_eq!(c.write_queue, Config::new("data").write_queue, "a default");
    }

    #[test]
    fn a_follower_uploads_nothing_and_follows_only_the_replica_it_names() {
        let both = |replica: &str| Settings {
            follow: Some("s3://b/prod".into()),
            replica_url: Some(replica.into()),
            ..Default::default()
        };
        let c = both("s3://b/prod").resolve().unwrap();
        assert!(c.replica.is_none(), "a follower never uploads");
        assert_eq!(c.follow.unwrap().url, "s3://b/prod");
        match both("s3://b/other").resolve() {
            Err(ConfigError::Invalid { setting, .. }) => assert_eq!(setting, "follow"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_nats_sink_is_off_by_default_and_its_url_is_shown_without_credentials() {
        assert!(Settings::default().resolve().unwrap().events_nats.is_none());
        let sink = |url: &str, stream: &str, prefix: &str| {
            Settings {
                events_nats_url: Some(url.into()),
                events_nats_stream: (!stream.is_empty()).then(|| stream.into()),
                events_nats_subject_prefix: (!prefix.is_empty()).then(|| prefix.into()),
                ..Default::default()
            }
            .resolve()
        };
        let n = sink(
            "nats://ops:hunter2@nats-1:4222, nats://tok@nats-2:4222",
            "",
            "",
        )
        .unwrap()
        .events_nats
        .unwrap();
        assert_eq!(
            (n.stream.as_str(), n.subject_prefix.as_str()),
            ("LNRS_EVENTS", "lnrs.events")
        );
        assert_eq!(
            n.redacted_url(),
            "nats://***@nats-1:4222,nats://***@nats-2:4222"
        );
        assert!(!format!("{n:?}").contains("hunter2"), "Debug hides the URL");
        assert_eq!(n.servers(), ["nats://nats-1:4222", "nats://nats-2:4222"]);
        assert_eq!(
            n.credentials(),
            Some(NatsCredentials::UserPassword {
                user: "ops".into(),
                password: "hunter2".into()
            })
        );
        let plain = NatsSinkConfig::new("nats://127.0.0.1:4222");
        assert_eq!(plain.credentials(), None);
        assert_eq!(plain.redacted_url(), "nats://127.0.0.1:4222");
        for (url, stream, prefix, setting) in [
            ("http://nats:4222", "", "", "events_nats_url"),
            ("nats://nats:4222", "A.B", "", "events_nats_stream"),
            (
                "nats://nats:4222",
                "",
                "lnrs.*",
                "events_nats_subject_prefix",
            ),
            (
                "nats://nats:4222",
                "",
                "lnrs..events",
                "events_nats_subject_prefix",
            ),
        ] {
            match sink(url, stream, prefix) {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{url} {stream} {prefix}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_setting() {
        let e = toml::from_str::<Settings>("shutdown_grace = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shutdown_grace") && e.contains("soon"), "{e}");
        let e = toml::from_str::<Settings>("colour = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Settings {
            tls_client_ca: Some("ca.pem".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`tls_client_ca`"), "{e}");
    }

    #[test]
    fn cors_origins_are_exact_browser_origins_or_one_wildcard() {
        let with = |origins: &[&str], grpc_web: bool| {
            let mut c = Config::new("data");
            c.grpc_web = grpc_web;
            c.grpc_web_cors_origins = origins.iter().map(|o| o.to_string()).collect();
            c.validate()
        };
        with(&[], true).unwrap();
        with(&["https://app.example.org", "http://localhost:5173"], true).unwrap();
        with(&["*"], true).unwrap();
        for bad in [
            &["https://app.example.org/"][..],
            &["https://App.example.org"],
            &["https://app.example.org:443"],
            &["ftp://app.example.org"],
            &["app.example.org"],
            &["*", "https://app.example.org"],
        ] {
            let e = with(bad, true).unwrap_err().to_string();
            assert!(e.contains("`grpc_web_cors_origins`"), "{bad:?}: {e}");
        }
        let e = with(&["https://app.example.org/"], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("write it as `https://app.example.org`"), "{e}");
        let e = with(&["https://app.example.org"], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("grpc_web = false"), "{e}");
        let file: Settings = toml::from_str(
            "grpc_web_cors_origins = [\"https://a.example\", \"http://b.example:8080\"]",
        )
        .unwrap();
        assert_eq!(
            file.resolve().unwrap().grpc_web_cors_origins,
            ["https://a.example", "http://b.example:8080"]
        );
    }

    #[test]
    fn env_tokens_split_from_the_right_with_an_optional_name() {
        let t = tokens_from(" a:b:0123456789abcdef:admin , tok-0123456789abcdef:reader:ci-bot,")
            .unwrap();
        assert_eq!(
            t,
            vec![
                TokenEntry::new("a:b:0123456789abcdef", "admin"),
                TokenEntry::new("tok-0123456789abcdef", "reader").named("ci-bot"),
            ]
        );
        // Not a role in either place: kept whole so the role check names the entry.
        assert_eq!(
            tokens_from("tok-0123456789abcdef:root").unwrap(),
            vec![TokenEntry::new("tok-0123456789abcdef", "root")]
        );
        let e = tokens_from("x:admin,no-colon-here-at-all")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LNRS_TOKENS") && e.contains("entry 2"), "{e}");
        assert!(!e.contains("no-colon"), "{e}");
    }
}
