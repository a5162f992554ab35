//! `lnrs serve`: its flags (the config file and [`Settings`]), logging and trace set-up, signal handling
//! (first SIGTERM/SIGINT drains, a second exits at once).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, ConfigError, LogFormat, Settings};
use crate::server::trace::Telemetry;

/// Flags of `lnrs serve`: the config file, and every setting (each also read from its `LNRS_*`
/// environment variable).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (see config/lnrs.example.toml).
    #[arg(long, env = "LNRS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    /// Everything `lnrs serve` checks before it opens anything: flags and environment over the
    /// file over the defaults, validated, then the tokens and TLS files the server will use.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        let config = self.settings.or(file).resolve()?;
        crate::server::check(&config)?;
        Ok(config)
    }
}

/// Installs the tracing subscriber: logs only (client commands, tools).
pub fn init_logging(format: LogFormat, filter: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format, filter))
        .try_init();
}

/// Installs the server's tracing subscriber: logs, and trace export when the `OTEL_*`
/// variables ask for it (see [`crate::server::trace`]). Runs inside the tokio runtime; the
/// caller shuts the returned pipeline down after the server stopped, to flush its spans.
pub fn init_logging_and_traces(
    format: LogFormat,
    filter: &str,
) -> Result<Option<Telemetry>, String> {
    let (telemetry, traces) = match Telemetry::from_env()? {
        Some((t, layer)) => (Some(t), Some(layer)),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(log_layer(format, filter))
        .with(traces)
        .try_init();
    if telemetry.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC (OTEL_* environment)");
    }
    Ok(telemetry)
}

/// The log lines: JSON for machines, pretty for a terminal, filtered by `filter` (the
/// filter applies to logs only: exported spans have their own, see `server::trace`).
fn log_layer<S>(format: LogFormat, filter: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed()
    } else {
        layer.with_filter(filter).boxed()
    }
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
