//! The server: opens the application, builds the router (EntityService, SnapshotService,
//! EventService, grpc.health.v1, reflection v1 + v1alpha), serves on a given listener and shuts
//! down gracefully: health NOT_SERVING → drain delay → every stream ends UNAVAILABLE with its
//! last seq → connections close → the writer finishes its queue — all within the grace period.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::app::status::SnapshotState;
use crate::app::App;
use crate::config::Config;
use crate::error::Error;
use crate::pb;
use crate::service::{EntityApi, EventApi, SnapshotApi};

/// Health names registered besides "": every service, and the snapshot storage, which goes
/// NOT_SERVING while snapshots cannot be taken.
pub const SERVICE_NAMES: [&str; 3] = [
    "lnrs.v1.EntityService",
    "lnrs.v1.SnapshotService",
    "lnrs.v1.EventService",
];
pub const SNAPSHOT_STORAGE_HEALTH: &str = "lnrs.v1.SnapshotStorage";

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the application: {0}")]
    Open(Error),
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("start-up task failed: {0}")]
    Join(String),
}

/// Opens the data directory and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = tokio::task::spawn_blocking(move || App::open(config))
        .await
        .map_err(|e| ServeError::Join(e.to_string()))?
        .map_err(ServeError::Open)?;
    serve(listener, app, shutdown).await
}

/// Serves an already opened application.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cfg = app.config().clone();
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
    let max = cfg.max_message_bytes;
    let entity = pb::entity_service_server::EntityServiceServer::new(EntityApi::new(app.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let snapshots =
        pb::snapshot_service_server::SnapshotServiceServer::new(SnapshotApi::new(app.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
    let events = pb::event_service_server::EventServiceServer::new(EventApi::new(app.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    set_all(&reporter, ServingStatus::Serving).await;
    let follow = tokio::spawn(follow_snapshot_health(app.clone(), reporter.clone()));
    let maintenance = tokio::spawn(crate::app::maintenance::run(app.clone()));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let app = app.clone();
        let reporter = reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown: health NOT_SERVING, draining");
            set_all(&reporter, ServingStatus::NotServing).await;
            tokio::time::sleep(app.config().shutdown_drain_delay).await;
            app.shared.hub.shut_down();
            let _ = stop_tx.send(());
        }
    };
    tokio::spawn(drain);

    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "serving gRPC");
    let serving = Server::builder()
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .max_connection_age(cfg.max_connection_age)
        .max_connection_age_grace(cfg.max_connection_age_grace)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(entity)
        .add_service(snapshots)
        .add_service(events)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let grace = cfg.shutdown_grace;
    let result = finish_within(serving, &app, grace).await;
    follow.abort();
    maintenance.abort();
    let closing = app.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || closing.close()),
    )
    .await;
    result
}

/// Runs the server; once shutdown has begun, gives it at most `grace` to finish.
async fn finish_within(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    app: &App,
    grace: Duration,
) -> Result<(), ServeError> {
    tokio::pin!(serving);
    let hub = app.shared.hub.clone();
    tokio::select! {
        r = &mut serving => return r.map_err(Into::into),
        _ = hub.shutting_down() => {}
    }
    let left = grace.saturating_sub(app.config().shutdown_drain_delay);
    match tokio::time::timeout(left, serving).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => {
            tracing::warn!(?grace, "grace period over: closing remaining connections");
            Ok(())
        }
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
    }
}

/// Keeps the snapshot-storage health name in step with the storage state.
async fn follow_snapshot_health(app: App, reporter: HealthReporter) {
    let mut rx = app.shared.status.subscribe();
    loop {
        let state = rx.borrow_and_update().state.clone();
        let status = match state {
            SnapshotState::Enabled => ServingStatus::Serving,
            SnapshotState::Degraded | SnapshotState::Disabled => ServingStatus::NotServing,
        };
        reporter
            .set_service_status(SNAPSHOT_STORAGE_HEALTH, status)
            .await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}
