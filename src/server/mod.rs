//! The server: checks the tokens and TLS files the configuration names ([`check`], before
//! anything is opened), opens the application, builds the router (EntityService,
//! SnapshotService, EventService, DataService, grpc.health.v1, reflection v1 + v1alpha) behind
//! CORS and gRPC-Web (both optional), the observe layer (request ids, logs, metrics) and the auth
//! layer, serves it on a given listener
//! (plaintext or TLS), serves `/metrics` on its own listener, and shuts down gracefully within a
//! hard bound.
//!
//! # Shutdown
//! The shutdown future resolves (SIGTERM) → health NOT_SERVING for every name, new restores
//! refused → `shutdown_drain_delay` (load balancers stop sending) → every stream ends with
//! UNAVAILABLE (ours with their last seq) → tonic stops accepting and closes connections as
//! their calls finish → if some are still open when the close reserve before
//! `shutdown_grace` is reached (a client that stopped reading, a long call), they are cut
//! → the metrics listener stops → the writer finishes its queue and closes the database. All
//! of it within `shutdown_grace` of the signal; what a cut could leave behind (a restore
//! between its swap and its end, a snapshot without manifest) is repaired at the next start.
//!
//! - [`observe`]: the request-id / log / metrics layer.
//! - `web`: gRPC-Web (HTTP/1.1 next to HTTP/2) and its CORS, outside the other layers.
//! - `conn`: connections that can be cut when the grace period ends.
//! - `primary`: a follower of the primary itself (bootstrap from its snapshot, tail its events).
//! - `nats`: the NATS JetStream sink of the event log (`events_nats_url`).
//! - [`trace`]: the OpenTelemetry pipeline (`OTEL_*`) and each request's `traceparent`.

mod conn;
mod nats;
pub mod observe;
mod primary;
pub mod trace;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::app::status::SnapshotState;
use crate::app::App;
use crate::auth::{Auth, AuthLayer, Tokens};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::metrics::{self, Exposition, GrpcMetrics, Live, SinkLive};
use crate::pb;
use crate::service::{DataApi, EntityApi, EventApi, SnapshotApi};

/// Health names registered besides "": every service, and the snapshot storage, which goes
/// NOT_SERVING while snapshots cannot be taken.
pub const SERVICE_NAMES: [&str; 4] = [
    "lnrs.v1.EntityService",
    "lnrs.v1.SnapshotService",
    "lnrs.v1.EventService",
    "lnrs.v1.DataService",
];
pub const SNAPSHOT_STORAGE_HEALTH: &str = "lnrs.v1.SnapshotStorage";
/// Health name of the replica (registered when one is configured): NOT_SERVING past
/// `replica_max_lag`, and while fenced or diverged.
pub const REPLICA_HEALTH: &str = "lnrs.v1.Replica";
/// How often the replica's lag is re-evaluated for health (a stalled upload must show).
const REPLICA_HEALTH_TICK: Duration = Duration::from_millis(500);

/// Longest part of the grace period kept for the writer to finish its queue after the
/// remaining connections are cut.
const CLOSE_RESERVE: Duration = Duration::from_secs(2);
/// How long the writer may take to close when the server stopped without a shutdown signal.
const CLOSE_WITHOUT_SIGNAL: Duration = Duration::from_secs(5);

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the application: {0}")]
    Open(Error),
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("start-up task failed: {0}")]
    Join(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The listeners a server runs on: gRPC, and `/metrics` when wanted.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Opens the data directory and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    primary::bootstrap(&config)
        .await
        .map_err(ServeError::Open)?;
    let app = tokio::task::spawn_blocking(move || App::open(config))
        .await
        .map_err(|e| ServeError::Join(e.to_string()))?
        .map_err(ServeError::Open)?;
    serve(listener, app, shutdown).await
}

/// Serves an already opened application; binds `metrics_listen` if it is set.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = match app.config().metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    setting: "metrics_listen",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    serve_on(
        Listeners {
            grpc: listener,
            metrics,
        },
        app,
        shutdown,
    )
    .await
}

/// Start-up checks of the files the settings name, before anything is opened: the tokens
/// (`tokens_file`, `LNRS_TOKENS`) parse and the TLS files form a usable identity. Errors name
/// the setting. [`serve_on`] builds the same things again, for servers started without it.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    Tokens::from_config(config)?;
    if let Some(tls) = &config.tls {
        crate::tls::check(tls)?;
    }
    Ok(())
}

/// Serves an already opened application on already bound listeners.
pub async fn serve_on(
    listeners: Listeners,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cfg = app.config().clone();
    let auth = Auth::new(Tokens::from_config(&cfg)?, cfg.reflection_requires_auth);
    let tls = cfg
        .tls
        .as_ref()
        .map(|t| crate::tls::server_config(t, cfg.grpc_web))
        .transpose()?;
    let local = listeners.grpc.local_addr().ok();
    let with_tls = tls.is_some();
    warn_about_exposure(&cfg, &auth, with_tls, local);
    // Everything that can fail comes before the first task is spawned: a task would hold the
    // app, and the writer could then never stop.
    let builder = transport(&cfg);
    let cors = web::cors_layer(&cfg)?;
    let (reporter, routes) = routes(&app, cfg.max_message_bytes)?;

    let grpc_metrics = GrpcMetrics::default();
    let metrics_stop = CancellationToken::new();
    let metrics_task = spawn_metrics(listeners.metrics, &app, &grpc_metrics, &metrics_stop);

    set_all(&reporter, ServingStatus::Serving).await;
    let follow = tokio::spawn(follow_snapshot_health(app.clone(), reporter.clone()));
    let maintenance = tokio::spawn(crate::app::maintenance::run(app.clone()));
    let replica_health = tokio::spawn(follow_replica_health(app.clone(), reporter.clone()));
    let follower = tokio::spawn(crate::app::follower::run(app.clone()));
    let tail_primary = tokio::spawn(primary::tail(app.clone()));
    let nats_sink = tokio::spawn(nats::run(app.clone()));

    let stages = Stages::default();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (began_tx, began_rx) = oneshot::channel::<Instant>();
    let drain = tokio::spawn(drain(
        shutdown,
        app.clone(),
        reporter.clone(),
        follow.abort_handle(),
        stages.clone(),
        (began_tx, stop_tx),
    ));

    tracing::info!(
        addr = ?local,
        tls = with_tls,
        auth = auth.enabled(),
        grpc_web = cfg.grpc_web,
        cors_origins = ?cfg.grpc_web_cors_origins,
        "serving gRPC"
    );
    // Outermost first: CORS answers preflights before anything else runs; gRPC-Web turns its
    // calls into plain gRPC before the observe and auth layers see them.
    let router = builder
        .layer(cors)
        .layer(web::grpc_web_layer(&cfg))
        .layer(observe::ObserveLayer::new(
            grpc_metrics,
            stages.streams_end,
            cfg.max_message_bytes,
        ))
        .layer(AuthLayer(auth))
        .add_routes(routes);
    let plain = conn::Incoming::new(listeners.grpc, stages.kill.clone());
    let stop = async {
        let _ = stop_rx.await;
    };
    // Two connection types (TLS or not), so two instances of tonic's serve loop.
    let serving: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            Some(config) => Box::pin(
                router.serve_with_incoming_shutdown(conn::TlsIncoming::new(plain, config), stop),
            ),
            None => Box::pin(router.serve_with_incoming_shutdown(plain, stop)),
        };
    let (result, deadline) = finish_within(serving, began_rx, &cfg, &stages.kill).await;
    drain.abort();
    follow.abort();
    maintenance.abort();
    replica_health.abort();
    follower.abort();
    tail_primary.abort();
    nats_sink.abort();
    // The scrape closure holds the app: the listener must be gone before the writer can stop.
    metrics_stop.cancel();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    close(app, deadline).await;
    result
}

/// The transport: HTTP/2 keepalive, connection age and stream limits, and HTTP/1.1 too when
/// gRPC-Web is on. TLS is not tonic's: the connections arrive already decrypted
/// ([`conn::TlsIncoming`]).
fn transport(cfg: &Config) -> Server {
    Server::builder()
        .accept_http1(cfg.grpc_web)
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .max_connection_age(cfg.max_connection_age)
        .max_connection_age_grace(cfg.max_connection_age_grace)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
}

/// Every service the server routes to — health, reflection v1 and v1alpha, and ours with the
/// message size limit — and the reporter that sets the health statuses.
fn routes(app: &App, max: usize) -> Result<(HealthReporter, Routes), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Join(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Join(e.to_string()))?;
    // The same message limits and compression for every service: gzip and zstd requests are
    // accepted, and responses are compressed when the client says it accepts that.
    macro_rules! configured {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
        };
    }
    let entity = configured!(pb::entity_service_server::EntityServiceServer::new(
        EntityApi::new(app.clone())
    ));
    let snapshots = configured!(pb::snapshot_service_server::SnapshotServiceServer::new(
        SnapshotApi::new(app.clone())
    ));
    let events = configured!(pb::event_service_server::EventServiceServer::new(
        EventApi::new(app.clone())
    ));
    let data = configured!(pb::data_service_server::DataServiceServer::new(
        DataApi::new(app.clone())
    ));
    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(entity)
        .add_service(snapshots)
        .add_service(events)
        .add_service(data);
    Ok((reporter, routes))
}

/// Serves `/metrics` on its own listener, if there is one, until `stop` is cancelled.
fn spawn_metrics(
    listener: Option<TcpListener>,
    app: &App,
    grpc_metrics: &GrpcMetrics,
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    listener.map(|listener| {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "serving Prometheus metrics on /metrics");
        let live_app = app.clone();
        let exposition = Exposition::new(grpc_metrics, move || live_values(&live_app));
        tokio::spawn(metrics::serve_http(
            listener,
            exposition,
            stop.clone().cancelled_owned(),
        ))
    })
}

/// The stages of a shutdown, as the observe layer and the connections see them.
#[derive(Clone, Default)]
struct Stages {
    /// The drain delay is over: streams end with UNAVAILABLE.
    streams_end: CancellationToken,
    /// The grace period is nearly over: open connections are cut.
    kill: CancellationToken,
}

/// Waits for the shutdown signal, then: health NOT_SERVING for every name, the drain delay,
/// every stream ended, and tonic told to stop accepting. Sends when it began, and the stop.
async fn drain(
    shutdown: impl Future<Output = ()>,
    app: App,
    reporter: HealthReporter,
    follow: AbortHandle,
    stages: Stages,
    (began_tx, stop_tx): (oneshot::Sender<Instant>, oneshot::Sender<()>),
) {
    shutdown.await;
    let _ = began_tx.send(Instant::now());
    // No restore starts that the grace period may not cover.
    app.begin_shutdown();
    // Nothing may turn a name back to SERVING from here on.
    follow.abort();
    tracing::info!("shutdown: health NOT_SERVING, draining");
    set_all(&reporter, ServingStatus::NotServing).await;
    tokio::time::sleep(app.config().shutdown_drain_delay).await;
    tracing::info!("shutdown: ending streams");
    app.shared.hub.shut_down();
    stages.streams_end.cancel();
    let _ = stop_tx.send(());
}

/// Runs the server; once shutdown has begun, bounds the rest by the grace period: connections
/// still open at `grace - reserve` are cut. Returns the result and, after a shutdown signal,
/// the instant the whole shutdown must be over.
async fn finish_within(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    began: oneshot::Receiver<Instant>,
    cfg: &Config,
    kill: &CancellationToken,
) -> (Result<(), ServeError>, Option<Instant>) {
    tokio::pin!(serving);
    let began = tokio::select! {
        r = &mut serving => return (r.map_err(Into::into), None),
        b = began => match b {
            Ok(b) => b,
            Err(_) => return ((&mut serving).await.map_err(Into::into), None),
        },
    };
    let deadline = began + cfg.shutdown_grace;
    let reserve =
        CLOSE_RESERVE.min(cfg.shutdown_grace.saturating_sub(cfg.shutdown_drain_delay) / 4);
    let cut_at = tokio::time::Instant::from_std(deadline - reserve);
    if let Ok(r) = tokio::time::timeout_at(cut_at, &mut serving).await {
        return (r.map_err(Into::into), Some(deadline));
    }
    tracing::warn!(
        grace = ?cfg.shutdown_grace,
        "grace period nearly over: cutting the connections still open"
    );
    kill.cancel();
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), serving).await {
        Ok(r) => (r.map_err(Into::into), Some(deadline)),
        Err(_) => (Ok(()), Some(deadline)),
    }
}

/// Lets the writer finish its queue and close the database, within what is left of the grace.
async fn close(app: App, deadline: Option<Instant>) {
    let budget = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => CLOSE_WITHOUT_SIGNAL,
    };
    let closing = tokio::task::spawn_blocking(move || app.close());
    match tokio::time::timeout(budget, closing).await {
        Ok(_) => tracing::info!("writer finished its queue; database closed"),
        Err(_) => tracing::warn!(
            "the writer was still busy when the grace period ended; exiting anyway (an \
             interrupted restore or snapshot is repaired at the next start)"
        ),
    }
}

/// Start-up warnings about how exposed the server is.
fn warn_about_exposure(cfg: &Config, auth: &Auth, tls: bool, local: Option<SocketAddr>) {
    let loopback = local.is_some_and(|a| a.ip().is_loopback());
    if !loopback && !auth.enabled() {
        tracing::warn!(
            addr = ?local,
            "listening on a non-loopback address with authentication off: anyone who can \
             reach it can delete and restore; set tokens_file or LNRS_TOKENS"
        );
    }
    if !loopback && !tls {
        tracing::info!(
            addr = ?local,
            "plaintext gRPC on a non-loopback address (fine behind a mesh sidecar that does mTLS)"
        );
    }
    if cfg
        .grpc_web_cors_origins
        .iter()
        .any(|o| o == crate::config::ANY_ORIGIN)
        && !auth.enabled()
    {
        tracing::warn!(
            "grpc_web_cors_origins = \"*\" with authentication off: any web page a user opens \
             can read and delete through this server from the user's browser"
        );
    }
    crate::auth::warn_if_world_readable(cfg);
}

/// What `/metrics` reads from the running application at each scrape.
fn live_values(app: &App) -> Live {
    let s = &app.shared;
    let stats = s
        .store()
        .ok()
        .map(|store| store.stats())
        .unwrap_or_default();
    Live {
        subscribers: s.hub.subscribers() as u64,
        event_head_seq: s.hub.head(),
        event_first_seq: s.hub.first(),
        subscriber_catch_ups: s.hub.catch_ups(),
        write_queue: app.writer.queued() as u64,
        restore_in_progress: s.restore_in_progress(),
        snapshot_storage_up: s.status.get().state == SnapshotState::Enabled,
        snapshot_count: stats.snapshot_count as u64,
        store_logical_bytes: stats.logical_bytes,
        store_stored_bytes: stats.stored_bytes,
        event_sink: app.event_sink_status().map(|s| SinkLive {
            published_seq: s.published_seq,
            lag: s.lag(),
            skipped: s.skipped_events,
            connected: s.connected,
        }),
    }
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
    if status == ServingStatus::NotServing {
        reporter
            .set_service_status(SNAPSHOT_STORAGE_HEALTH, status)
            .await;
        reporter.set_service_status(REPLICA_HEALTH, status).await;
    }
}

/// Keeps `lnrs.v1.Replica` in step with the replica's lag and lease (nothing when no replica
/// is configured), and makes sure the replica has a snapshot to recover from. Stops once shutdown has begun: from then on every name stays NOT_SERVING.
async fn follow_replica_health(app: App, reporter: HealthReporter) {
    let Some(replica) = app.shared.replica.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(REPLICA_HEALTH_TICK);
    let mut last = None;
    let mut based = false;
    loop {
        tick.tick().await;
        if app
            .shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        if !based {
            based = app.ensure_replica_base().await;
        }
        replica.refresh_status();
        let healthy = replica.status().healthy;
        if last != Some(healthy) {
            let status = match healthy {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            reporter.set_service_status(REPLICA_HEALTH, status).await;
            last = Some(healthy);
        }
    }
}

/// Keeps health in step with the application: the snapshot-storage name follows the storage
/// state, and every name goes NOT_SERVING while the database is unavailable (a restore that
/// could be neither completed nor undone: nothing can be read or written until a restart).
async fn follow_snapshot_health(app: App, reporter: HealthReporter) {
    let mut storage = app.shared.status.subscribe();
    let mut database = app.shared.database.subscribe();
    loop {
        let state = storage.borrow_and_update().state.clone();
        let unavailable = database.borrow_and_update().is_some();
        if unavailable {
            set_all(&reporter, ServingStatus::NotServing).await;
        } else {
            let status = match state {
                SnapshotState::Enabled => ServingStatus::Serving,
                SnapshotState::Degraded | SnapshotState::Disabled => ServingStatus::NotServing,
            };
            reporter
                .set_service_status(SNAPSHOT_STORAGE_HEALTH, status)
                .await;
        }
        tokio::select! {
            r = storage.changed() => if r.is_err() { return },
            r = database.changed() => if r.is_err() { return },
        }
    }
}
