//! The `lnrs` binary: parses the command line and runs the server or a client subcommand.

use std::process::ExitCode;

use clap::Parser;
use lnrs::cli::replica::ReplicaAction;
use lnrs::cli::{serve, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_server(args),
        Command::Refdata { path, scale } => match lnrs::refdata::write_to_path(&path, scale) {
            Ok(stats) => {
                for (table, rows) in stats.tables {
                    println!("{table:32} {rows:>9}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::DescriptorSet { out } => match lnrs::cli::descriptor::write(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
        Command::Replica(lnrs::cli::replica::ReplicaCommand {
            action:
                ReplicaAction::Restore {
                    snapshot,
                    json,
                    serve,
                },
        }) => {
            lnrs::cli::serve::init_logging(lnrs::config::LogFormat::Auto, "warn");
            lnrs::cli::replica::restore(snapshot, json, serve)
        }
        client => lnrs::cli::client::run(client),
    }
}

fn run_server(args: serve::ServeArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match lnrs::cli::runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // The trace exporter's channel lives on the runtime.
    let telemetry = {
        let _rt = runtime.enter();
        match serve::init_logging_and_traces(config.log_format, &config.log_filter) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    // Crash tests make the real binary abort at named steps; never set in production.
    if let Ok(spec) = std::env::var("LNRS_FAILPOINTS") {
        if let Err(e) = lnrs::fault::configure(&spec) {
            eprintln!("error: LNRS_FAILPOINTS: {e}");
            return ExitCode::from(2);
        }
        tracing::warn!(%spec, "fail points are armed (LNRS_FAILPOINTS)");
    }
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        // Scripts and tests that pass port 0 read the real address from this line.
        if let Ok(addr) = listener.local_addr() {
            println!("lnrs listening on {addr}");
        }
        lnrs::server::run(listener, config, serve::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    if let Some(t) = telemetry {
        // Flushes the last spans (bounded by OTEL_EXPORTER_OTLP_TIMEOUT) while the runtime,
        // whose threads run the exporter's channel, is still up.
        t.shutdown();
    }
    // Do not wait for stuck blocking tasks: the grace period is over.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
