//! `lnrs serve`: its flags (the config file and [`Settings`]), logging set-up, signal handling
//! (first SIGTERM/SIGINT drains, a second exits at once).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, ConfigError, LogFormat, Settings};

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
