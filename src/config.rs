//! The one server configuration: defaults < TOML file < environment (`LNRS_*`) < flags, merged
//! and validated once at start-up. Every error names the setting it is about.

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

    /// Bearer tokens file (`token role` per line); None and no env tokens: auth off.
    pub tokens_file: Option<PathBuf>,
    /// Tokens given directly (`LNRS_TOKENS="tok1:admin,tok2:reader"`).
    pub tokens: Vec<(Secret, String)>,
    /// Whether reflection needs a token when auth is on.
    pub reflection_requires_auth: bool,
    pub tls: Option<TlsConfig>,

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
    /// How often background upkeep runs (storage probe, log compaction, request-log pruning).
    pub maintenance_interval: Duration,
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
            retention_keep_last: 10,
            retention_keep_within: None,
            event_retention_keep_last: None,
            event_retention_max_age: None,
            max_subscribers: 2048,
            event_ring_capacity: 4096,
            default_heartbeat: Duration::from_secs(15),
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
            log_format: LogFormat::Auto,
            log_filter: "info".into(),
            request_log_max_age: Duration::from_secs(24 * 3600),
            request_log_keep_last: 100_000,
            max_concurrent_assemblies: 2,
            scratch_reserve_bytes: 256 * 1024 * 1024,
            maintenance_interval: Duration::from_secs(15),
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

    /// Checks cross-field rules; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, why: String| Err(ConfigError::Invalid { setting, why });
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        if self.retention_keep_last == 0 {
            return bad("retention_keep_last", "must be at least 1".into());
        }
        if self.reference_scale == 0 || self.reference_scale > 1000 {
            return bad("reference_scale", "must be in 1..=1000".into());
        }
        if self.max_subscribers == 0 {
            return bad("max_subscribers", "must be at least 1".into());
        }
        if self.event_ring_capacity < 16 {
            return bad("event_ring_capacity", "must be at least 16".into());
        }
        if self.write_queue == 0 {
            return bad("write_queue", "must be at least 1".into());
        }
        if self.max_message_bytes < 64 * 1024 || self.max_message_bytes > 256 * 1024 * 1024 {
            return bad(
                "max_message_bytes",
                "must be between 64 KiB and 256 MiB".into(),
            );
        }
        if self.default_heartbeat < Duration::from_secs(1)
            || self.default_heartbeat > Duration::from_secs(300)
        {
            return bad("default_heartbeat", "must be between 1s and 300s".into());
        }
        if self.shutdown_drain_delay >= self.shutdown_grace {
            return bad(
                "shutdown_drain_delay",
                "must be shorter than shutdown_grace".into(),
            );
        }
        if self.event_retention_keep_last == Some(0) {
            return bad("event_retention_keep_last", "must be at least 1".into());
        }
        for (setting, d) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("max_connection_age", self.max_connection_age),
        ] {
            if d < Duration::from_secs(1) {
                return bad(setting, "must be at least 1s".into());
            }
        }
        if self.request_log_keep_last == 0 {
            return bad("request_log_keep_last", "must be at least 1".into());
        }
        if self.request_log_max_age < Duration::from_secs(60) {
            return bad("request_log_max_age", "must be at least 1m".into());
        }
        if self.max_concurrent_assemblies == 0 {
            return bad("max_concurrent_assemblies", "must be at least 1".into());
        }
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams", "must be at least 1".into());
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return bad("metrics_listen", "must differ from listen".into());
        }
        if let Some(tls) = &self.tls {
            for (setting, p) in [
                ("tls_cert", Some(&tls.cert)),
                ("tls_key", Some(&tls.key)),
                ("tls_client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(p) = p {
                    if !p.is_file() {
                        return bad(setting, format!("{} is not a readable file", p.display()));
                    }
                }
            }
        }
        for (_, role) in &self.tokens {
            if !matches!(role.as_str(), "reader" | "editor" | "admin") {
                return bad(
                    "tokens",
                    format!("unknown role `{role}` (reader, editor or admin)"),
                );
            }
        }
        if let Some(tls) = &self.tls {
            crate::tls::check(tls)?;
        }
        crate::auth::Tokens::from_config(self)?;
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

/// The optional TOML file: every key optional, same names as the flags (snake_case).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub load_reference_data: Option<bool>,
    pub reference_scale: Option<u32>,
    pub snapshot_policy: Option<SnapshotPolicy>,
    pub retention_keep_last: Option<usize>,
    pub retention_keep_within: Option<String>,
    pub event_retention_keep_last: Option<u64>,
    pub event_retention_max_age: Option<String>,
    pub max_subscribers: Option<usize>,
    pub event_ring_capacity: Option<usize>,
    pub default_heartbeat: Option<String>,
    pub write_queue: Option<usize>,
    pub restore_read_wait: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub keepalive_interval: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connection_age: Option<String>,
    pub max_connection_age_grace: Option<String>,
    pub max_concurrent_streams: Option<u32>,
    pub shutdown_drain_delay: Option<String>,
    pub shutdown_grace: Option<String>,
    pub tokens_file: Option<PathBuf>,
    pub reflection_requires_auth: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_filter: Option<String>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }
}

/// Parses a human duration ("30s", "5m", "1h 30m") for the setting named `setting`.
pub fn parse_duration(setting: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| ConfigError::Invalid {
        setting,
        why: format!("`{s}` is not a duration ({e})"),
    })
}

/// Parses a socket address for the setting named `setting`.
pub fn parse_addr(setting: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|e| ConfigError::Invalid {
        setting,
        why: format!("`{s}` is not an address like 127.0.0.1:50051 ({e})"),
    })
}
