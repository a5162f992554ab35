//! `lnrs serve` and `lnrs refdata`: the flags/env layer of the configuration, logging set-up,
//! signal handling (first SIGTERM/SIGINT drains, a second exits at once).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::config::{
    parse_addr, parse_duration, Config, ConfigError, FileConfig, LogFormat, Secret, SnapshotPolicy,
    TlsConfig,
};

/// Flags of `lnrs serve`. Each also reads an `LNRS_*` environment variable; flags win over the
/// environment, which wins over the config file, which wins over the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (see config/lnrs.example.toml).
    #[arg(long, env = "LNRS_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "LNRS_LISTEN")]
    pub listen: Option<String>,
    /// Data directory (database + snapshots) [default: ./data].
    #[arg(long, env = "LNRS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Prometheus /metrics listen address (off when unset).
    #[arg(long, env = "LNRS_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Load the reference dataset into an empty data directory [default: true].
    #[arg(long, env = "LNRS_LOAD_REFERENCE_DATA")]
    pub load_reference_data: Option<bool>,
    /// Scale of that dataset [default: 1].
    #[arg(long, env = "LNRS_REFERENCE_SCALE")]
    pub reference_scale: Option<u32>,
    /// What a delete does when its snapshot cannot be taken [default: required].
    #[arg(long, env = "LNRS_SNAPSHOT_POLICY", value_enum)]
    pub snapshot_policy: Option<SnapshotPolicy>,
    /// Snapshots kept by retention [default: 10].
    #[arg(long, env = "LNRS_RETENTION_KEEP_LAST")]
    pub retention_keep_last: Option<usize>,
    /// Also keep snapshots younger than this, e.g. "7d".
    #[arg(long, env = "LNRS_RETENTION_KEEP_WITHIN")]
    pub retention_keep_within: Option<String>,
    /// Keep at most this many events in the log.
    #[arg(long, env = "LNRS_EVENT_RETENTION_KEEP_LAST")]
    pub event_retention_keep_last: Option<u64>,
    /// Drop events older than this, e.g. "90d".
    #[arg(long, env = "LNRS_EVENT_RETENTION_MAX_AGE")]
    pub event_retention_max_age: Option<String>,
    /// Concurrent WatchEvents streams [default: 2048].
    #[arg(long, env = "LNRS_MAX_SUBSCRIBERS")]
    pub max_subscribers: Option<usize>,
    /// Events the live fan-out ring holds [default: 4096].
    #[arg(long, env = "LNRS_EVENT_RING_CAPACITY")]
    pub event_ring_capacity: Option<usize>,
    /// Heartbeat interval of streams that do not ask for one [default: 15s].
    #[arg(long, env = "LNRS_DEFAULT_HEARTBEAT")]
    pub default_heartbeat: Option<String>,
    /// How long a read waits for a restore's swap before UNAVAILABLE [default: 10s].
    #[arg(long, env = "LNRS_RESTORE_READ_WAIT")]
    pub restore_read_wait: Option<String>,
    /// Writes allowed to wait for the writer [default: 256].
    #[arg(long, env = "LNRS_WRITE_QUEUE")]
    pub write_queue: Option<usize>,
    /// Largest request/response message in bytes [default: 4194304].
    #[arg(long, env = "LNRS_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// HTTP/2 ping interval on idle connections [default: 30s].
    #[arg(long, env = "LNRS_KEEPALIVE_INTERVAL")]
    pub keepalive_interval: Option<String>,
    /// How long a ping may go unanswered before the connection is closed [default: 20s].
    #[arg(long, env = "LNRS_KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Option<String>,
    /// Connections are asked to reconnect after this long [default: 30m].
    #[arg(long, env = "LNRS_MAX_CONNECTION_AGE")]
    pub max_connection_age: Option<String>,
    /// Then get this long to finish their calls before being closed [default: 30s].
    #[arg(long, env = "LNRS_MAX_CONNECTION_AGE_GRACE")]
    pub max_connection_age_grace: Option<String>,
    /// Concurrent HTTP/2 streams per connection [default: 1024].
    #[arg(long, env = "LNRS_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Health NOT_SERVING period before streams end on shutdown [default: 2s].
    #[arg(long, env = "LNRS_SHUTDOWN_DRAIN_DELAY")]
    pub shutdown_drain_delay: Option<String>,
    /// Bound on the whole shutdown [default: 25s].
    #[arg(long, env = "LNRS_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Bearer tokens file: one `token role` per line (roles: reader, editor, admin).
    #[arg(long, env = "LNRS_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Whether gRPC reflection needs a token when auth is on [default: false].
    #[arg(long, env = "LNRS_REFLECTION_REQUIRES_AUTH")]
    pub reflection_requires_auth: Option<bool>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "LNRS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "LNRS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: enables mTLS.
    #[arg(long, env = "LNRS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format [default: auto].
    #[arg(long, env = "LNRS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info,lnrs=debug" [default: info].
    #[arg(long, env = "LNRS_LOG")]
    pub log: Option<String>,
}

fn dur(
    setting: &'static str,
    flag: Option<String>,
    file: Option<String>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    flag.or(file)
        .map(|s| parse_duration(setting, &s))
        .transpose()
}

impl ServeArgs {
    /// Merges flags/env over the file over the defaults, and validates the result.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let mut c = Config::new(data_dir);
        if let Some(a) = self.listen.or(file.listen) {
            c.listen = parse_addr("listen", &a)?;
        }
        c.metrics_listen = self
            .metrics_listen
            .or(file.metrics_listen)
            .map(|a| parse_addr("metrics_listen", &a))
            .transpose()?;
        c.load_reference_data = self
            .load_reference_data
            .or(file.load_reference_data)
            .unwrap_or(c.load_reference_data);
        c.reference_scale = self
            .reference_scale
            .or(file.reference_scale)
            .unwrap_or(c.reference_scale);
        c.snapshot_policy = self
            .snapshot_policy
            .or(file.snapshot_policy)
            .unwrap_or(c.snapshot_policy);
        c.retention_keep_last = self
            .retention_keep_last
            .or(file.retention_keep_last)
            .unwrap_or(c.retention_keep_last);
        c.retention_keep_within = dur(
            "retention_keep_within",
            self.retention_keep_within,
            file.retention_keep_within,
        )?;
        c.event_retention_keep_last = self
            .event_retention_keep_last
            .or(file.event_retention_keep_last);
        c.event_retention_max_age = dur(
            "event_retention_max_age",
            self.event_retention_max_age,
            file.event_retention_max_age,
        )?;
        c.max_subscribers = self
            .max_subscribers
            .or(file.max_subscribers)
            .unwrap_or(c.max_subscribers);
        c.event_ring_capacity = self
            .event_ring_capacity
            .or(file.event_ring_capacity)
            .unwrap_or(c.event_ring_capacity);
        if let Some(d) = self.default_heartbeat.or(file.default_heartbeat) {
            c.default_heartbeat = parse_duration("default_heartbeat", &d)?;
        }
        c.write_queue = self
            .write_queue
            .or(file.write_queue)
            .unwrap_or(c.write_queue);
        if let Some(d) = self.restore_read_wait.or(file.restore_read_wait) {
            c.restore_read_wait = parse_duration("restore_read_wait", &d)?;
        }
        c.max_message_bytes = self
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(c.max_message_bytes);
        for (setting, value, slot) in [
            (
                "keepalive_interval",
                self.keepalive_interval.or(file.keepalive_interval),
                &mut c.keepalive_interval,
            ),
            (
                "keepalive_timeout",
                self.keepalive_timeout.or(file.keepalive_timeout),
                &mut c.keepalive_timeout,
            ),
            (
                "max_connection_age",
                self.max_connection_age.or(file.max_connection_age),
                &mut c.max_connection_age,
            ),
            (
                "max_connection_age_grace",
                self.max_connection_age_grace
                    .or(file.max_connection_age_grace),
                &mut c.max_connection_age_grace,
            ),
        ] {
            if let Some(v) = value {
                *slot = parse_duration(setting, &v)?;
            }
        }
        c.max_concurrent_streams = self
            .max_concurrent_streams
            .or(file.max_concurrent_streams)
            .unwrap_or(c.max_concurrent_streams);
        if let Some(d) = dur(
            "shutdown_drain_delay",
            self.shutdown_drain_delay,
            file.shutdown_drain_delay,
        )? {
            c.shutdown_drain_delay = d;
        }
        if let Some(d) = dur("shutdown_grace", self.shutdown_grace, file.shutdown_grace)? {
            c.shutdown_grace = d;
        }
        c.tokens_file = self.tokens_file.or(file.tokens_file);
        c.tokens = tokens_from_env()?;
        c.reflection_requires_auth = self
            .reflection_requires_auth
            .or(file.reflection_requires_auth)
            .unwrap_or(false);
        let client_ca = self.tls_client_ca.or(file.tls_client_ca);
        c.tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca,
            }),
            (None, None) if client_ca.is_some() => {
                return Err(ConfigError::Invalid {
                    setting: "tls_client_ca",
                    why: "mTLS needs tls_cert and tls_key as well".into(),
                })
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    setting: "tls_cert",
                    why: "tls_cert and tls_key must be given together".into(),
                })
            }
        };
        c.log_format = self.log_format.or(file.log_format).unwrap_or(c.log_format);
        c.log_filter = self.log.or(file.log_filter).unwrap_or(c.log_filter);
        c.validate()?;
        Ok(c)
    }
}

/// `LNRS_TOKENS="token1:admin,token2:reader"`.
fn tokens_from_env() -> Result<Vec<(Secret, String)>, ConfigError> {
    let Ok(v) = std::env::var("LNRS_TOKENS") else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.rsplit_once(':')
                .map(|(t, r)| (Secret::from(t), r.to_string()))
                .ok_or(ConfigError::Invalid {
                    setting: "LNRS_TOKENS",
                    why: "expected token:role pairs separated by commas".into(),
                })
        })
        .collect()
}

/// Installs the tracing subscriber: JSON for machines, pretty for a terminal.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}
