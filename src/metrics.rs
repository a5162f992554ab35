//! Prometheus metrics: the standard gRPC server families (recorded by the server's observe
//! layer), the process-wide application numbers that [`crate::app`] records into (snapshot
//! capture and commit, deletes, restores, verifies, retention, subscriber lag), values read at
//! scrape time (subscribers, event-log head, write queue, snapshot store size), and the plain
//! HTTP listener that serves them on `/metrics`.
//!
//! No gRPC here: the server passes labels in, and [`crate::app`] / [`crate::events`] call the
//! free recording functions ([`timer`], [`commit_snapshot`], …), which cost an atomic update or
//! a short uncontended lock.
//!
//! Application numbers are process-wide (one server per process in production); the gRPC
//! families and the scrape-time values belong to one server.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Request latency buckets (seconds): the Prometheus client defaults, which is what
/// go-grpc-prometheus dashboards expect.
const RPC_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets (seconds) for snapshot/restore/verify work: from a 1 ms capture of a small file to
/// a minute-long deep verify of a large one, with edges at the service's latency objectives
/// (writer blocked 15 ms, delete 30 / 75 ms, restore 500 ms) so they read exactly.
const OP_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    15.0, 60.0,
];

/// Buckets (events behind the head) for subscriber lag.
const LAG_BUCKETS: [f64; 10] = [
    0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_BUCKETS)
}

fn op_histogram() -> Histogram {
    Histogram::new(OP_BUCKETS)
}

// ---------------------------------------------------------------------------------------------
// gRPC server families (per server)
// ---------------------------------------------------------------------------------------------

/// Labels of `grpc_server_started_total` and `grpc_server_handling_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// "unary", "client_stream", "server_stream" or "bidi_stream".
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// Labels of `grpc_server_handled_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// The go-grpc-prometheus server families. Cloning shares the underlying series.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(rpc_histogram),
        }
    }
}

impl GrpcMetrics {
    /// A call arrived.
    pub fn started(&self, l: &RpcLabels) {
        self.started.get_or_create(l).inc();
    }

    /// A call finished with `code` (a go-style code name, e.g. "OK", "NotFound") after
    /// `elapsed`; for streams, when the stream ended.
    pub fn handled(&self, l: &RpcLabels, code: &'static str, elapsed: Duration) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_type: l.grpc_type,
                grpc_service: l.grpc_service,
                grpc_method: l.grpc_method,
                grpc_code: code,
            })
            .inc();
        self.handling
            .get_or_create(l)
            .observe(elapsed.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level \
             handled by the server.",
            self.handling.clone(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Application numbers (process-wide)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

struct AppMetrics {
    capture: Histogram,
    commit: Histogram,
    logical_bytes: Counter,
    stored_bytes: Counter,
    delete: Histogram,
    restore: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    verify: Family<ModeLabels, Histogram, fn() -> Histogram>,
    retention: Histogram,
    retention_freed: Counter,
    lag: Histogram,
    replica_uploaded: Counter,
    replica_failures: Counter,
    replica_lag_seconds: Gauge<f64, AtomicU64>,
    replica_lag_events: Gauge,
    replica_lag_bytes: Gauge,
    follower_staleness: Gauge<f64, AtomicU64>,
    capture_ahead: Family<OutcomeLabels, Counter>,
    event_sink_failures: Counter,
}

static APP: LazyLock<AppMetrics> = LazyLock::new(|| AppMetrics {
    capture: op_histogram(),
    commit: op_histogram(),
    logical_bytes: Counter::default(),
    stored_bytes: Counter::default(),
    delete: op_histogram(),
    restore: Family::new_with_constructor(op_histogram),
    verify: Family::new_with_constructor(op_histogram),
    retention: op_histogram(),
    retention_freed: Counter::default(),
    lag: Histogram::new(LAG_BUCKETS),
    replica_uploaded: Counter::default(),
    replica_failures: Counter::default(),
    replica_lag_seconds: Gauge::default(),
    replica_lag_events: Gauge::default(),
    replica_lag_bytes: Gauge::default(),
    follower_staleness: Gauge::default(),
    capture_ahead: Family::default(),
    event_sink_failures: Counter::default(),
});

impl AppMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "lnrs_snapshot_capture_seconds",
            "Time the writer was blocked taking a snapshot (CHECKPOINT + file read).",
            self.capture.clone(),
        );
        r.register(
            "lnrs_snapshot_commit_seconds",
            "Time to make a captured snapshot durable (hash, compress, write, manifest).",
            self.commit.clone(),
        );
        r.register(
            "lnrs_snapshot_logical_bytes",
            "Database bytes covered by committed snapshots (file length, before dedup).",
            self.logical_bytes.clone(),
        );
        r.register(
            "lnrs_snapshot_stored_bytes",
            "Compressed bytes committed snapshots added to the block store (after dedup).",
            self.stored_bytes.clone(),
        );
        r.register(
            "lnrs_delete_seconds",
            "End-to-end time of entity and link deletes, queueing and snapshot included.",
            self.delete.clone(),
        );
        r.register(
            "lnrs_restore_seconds",
            "Time of restores, by outcome (restored or rolled_back).",
            self.restore.clone(),
        );
        r.register(
            "lnrs_snapshot_verify_seconds",
            "Time of snapshot verifications, by mode (quick or deep).",
            self.verify.clone(),
        );
        r.register(
            "lnrs_retention_seconds",
            "Time of snapshot retention runs (plan, forget, garbage collection).",
            self.retention.clone(),
        );
        r.register(
            "lnrs_retention_freed_bytes",
            "Block-store bytes freed by retention.",
            self.retention_freed.clone(),
        );
        r.register(
            "lnrs_event_subscriber_lag_events",
            "For each event delivered to a subscriber, how many events it was behind the head.",
            self.lag.clone(),
        );
        r.register(
            "lnrs_replica_uploaded_bytes",
            "Bytes uploaded to the replica (blocks, manifests, log segments).",
            self.replica_uploaded.clone(),
        );
        r.register(
            "lnrs_replica_upload_failures",
            "Replica upload cycles that failed (each is retried with backoff).",
            self.replica_failures.clone(),
        );
        r.register(
            "lnrs_replica_lag_seconds",
            "How long the replica has been behind the primary (0 when caught up).",
            self.replica_lag_seconds.clone(),
        );
        r.register(
            "lnrs_replica_lag_events",
            "Committed events not yet in the replica.",
            self.replica_lag_events.clone(),
        );
        r.register(
            "lnrs_follower_staleness_seconds",
            "A follower: seconds since it last had everything its source replica had.",
            self.follower_staleness.clone(),
        );
        r.register(
            "lnrs_snapshot_capture_ahead",
            "Captures taken ahead of deletes, by outcome: started, reused (a delete's snapshot), \
             fallback (a delete captured itself), cancelled (a request needed the file), failed, \
             verified and mismatch (snapshot_capture_verify).",
            self.capture_ahead.clone(),
        );
        r.register(
            "lnrs_event_sink_failures",
            "Event sink attempts that failed (connect, stream, publish); each is retried with \
             backoff from the stream's last event.",
            self.event_sink_failures.clone(),
        );
        r.register(
            "lnrs_replica_lag_bytes",
            "Bytes (blocks and log) not yet in the replica, estimated.",
            self.replica_lag_bytes.clone(),
        );
    }
}

/// Records bytes uploaded to the replica.
pub fn replica_uploaded(bytes: u64) {
    APP.replica_uploaded.inc_by(bytes);
}

/// Records a follower's staleness.
pub fn follower_staleness(seconds: f64) {
    APP.follower_staleness.set(seconds);
}

/// Counts a failed event sink attempt.
pub fn event_sink_failed() {
    APP.event_sink_failures.inc();
}

/// Records a failed replica upload cycle.
pub fn replica_upload_failed() {
    APP.replica_failures.inc();
}

/// Records the replica's lag.
pub fn replica_lag(seconds: f64, events: u64, bytes: u64) {
    APP.replica_lag_seconds.set(seconds);
    APP.replica_lag_events.set(events as i64);
    APP.replica_lag_bytes.set(bytes as i64);
}

/// Records a committed snapshot: how long the commit took, its logical size and the bytes it
/// added to the store.
pub fn snapshot_committed(elapsed: Duration, logical_bytes: u64, new_bytes: u64) {
    APP.commit.observe(elapsed.as_secs_f64());
    APP.logical_bytes.inc_by(logical_bytes);
    APP.stored_bytes.inc_by(new_bytes);
}

/// Records a finished restore (from its safety snapshot to its outcome).
pub fn restore_finished(elapsed: Duration, rolled_back: bool) {
    let outcome = if rolled_back {
        "rolled_back"
    } else {
        "restored"
    };
    APP.restore
        .get_or_create(&OutcomeLabels { outcome })
        .observe(elapsed.as_secs_f64());
}

/// Counts a capture-ahead outcome (see `lnrs_snapshot_capture_ahead`).
pub fn capture_ahead(outcome: &'static str) {
    APP.capture_ahead
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// Records bytes freed by a retention run.
pub fn retention_freed(bytes: u64) {
    APP.retention_freed.inc_by(bytes);
}

/// Records, for an event delivered to a subscriber (`seq`, None for other items), how far it
/// was behind the log `head`.
pub fn subscriber_lag(head: u64, seq: Option<u64>) {
    if let Some(seq) = seq {
        APP.lag.observe(head.saturating_sub(seq) as f64);
    }
}

/// Timed operations recorded by [`timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The writer-blocked part of a snapshot: CHECKPOINT + read of the file.
    SnapshotCapture,
    /// An entity or link delete, end to end.
    Delete,
    VerifyQuick,
    VerifyDeep,
    Retention,
}

impl Op {
    /// The verify operation for a mode.
    pub fn verify(deep: bool) -> Op {
        if deep {
            Op::VerifyDeep
        } else {
            Op::VerifyQuick
        }
    }
}

/// Records the time until it is dropped (on every path, errors included).
#[must_use = "the time is recorded when the timer is dropped"]
#[derive(Debug)]
pub struct Timer {
    op: Op,
    started: Instant,
}

/// Starts timing `op`: `let _timer = metrics::timer(Op::Delete);`.
pub fn timer(op: Op) -> Timer {
    Timer {
        op,
        started: Instant::now(),
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let s = self.started.elapsed().as_secs_f64();
        match self.op {
            Op::SnapshotCapture => APP.capture.observe(s),
            Op::Delete => APP.delete.observe(s),
            Op::VerifyQuick => APP
                .verify
                .get_or_create(&ModeLabels { mode: "quick" })
                .observe(s),
            Op::VerifyDeep => APP
                .verify
                .get_or_create(&ModeLabels { mode: "deep" })
                .observe(s),
            Op::Retention => APP.retention.observe(s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scrape-time values (per server)
// ---------------------------------------------------------------------------------------------

/// Values read from the running server on every scrape.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub subscribers: u64,
    pub event_head_seq: u64,
    pub event_first_seq: u64,
    /// Times a subscriber fell behind the live ring and caught up from the log.
    pub subscriber_catch_ups: u64,
    pub write_queue: u64,
    pub restore_in_progress: bool,
    /// Snapshot storage can take snapshots (health "lnrs.v1.SnapshotStorage" SERVING).
    pub snapshot_storage_up: bool,
    pub snapshot_count: u64,
    pub store_logical_bytes: u64,
    pub store_stored_bytes: u64,
    /// The event sink, when one is configured.
    pub event_sink: Option<SinkLive>,
}

/// The event sink's numbers at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkLive {
    /// The newest event the sink's stream is known to hold.
    pub published_seq: u64,
    /// Committed events not yet in the stream.
    pub lag: u64,
    /// Events the log no longer held when the sink reached them (not in the stream).
    pub skipped: u64,
    pub connected: bool,
}

type LiveFn = Box<dyn Fn() -> Live + Send + Sync>;

struct LiveCollector(LiveFn);

impl fmt::Debug for LiveCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveCollector")
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// The event sink's gauges (only when a sink is configured).
fn sink_gauges(e: &mut DescriptorEncoder, s: SinkLive) -> Result<(), fmt::Error> {
    gauge(
        e,
        "lnrs_event_sink_published_seq",
        "Newest event the NATS stream is known to hold.",
        s.published_seq,
    )?;
    gauge(
        e,
        "lnrs_event_sink_lag_events",
        "Committed events not yet published to the NATS stream.",
        s.lag,
    )?;
    gauge(
        e,
        "lnrs_event_sink_skipped_events",
        "Events the log no longer held when the sink reached them: not in the stream (a gap).",
        s.skipped,
    )?;
    gauge(
        e,
        "lnrs_event_sink_connected",
        "1 while the sink is connected to the broker with its stream.",
        u64::from(s.connected),
    )
}

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let v = (self.0)();
        let e = &mut encoder;
        gauge(
            e,
            "lnrs_event_subscribers",
            "Open WatchEvents streams.",
            v.subscribers,
        )?;
        gauge(
            e,
            "lnrs_event_log_head_seq",
            "Newest committed event seq.",
            v.event_head_seq,
        )?;
        gauge(
            e,
            "lnrs_event_log_first_seq",
            "Oldest retained event seq.",
            v.event_first_seq,
        )?;
        let c = ConstCounter::new(v.subscriber_catch_ups);
        let m = e.encode_descriptor(
            "lnrs_event_subscriber_catch_ups",
            "Times a subscriber fell behind the live ring and caught up from the log.",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        gauge(
            e,
            "lnrs_write_queue_depth",
            "Writes waiting for the writer.",
            v.write_queue,
        )?;
        gauge(
            e,
            "lnrs_restore_in_progress",
            "1 while a restore runs.",
            u64::from(v.restore_in_progress),
        )?;
        gauge(
            e,
            "lnrs_snapshot_storage_up",
            "1 when snapshots can be taken, 0 when snapshot storage is degraded or disabled.",
            u64::from(v.snapshot_storage_up),
        )?;
        gauge(
            e,
            "lnrs_snapshot_store_snapshots",
            "Snapshots in the store.",
            v.snapshot_count,
        )?;
        gauge(
            e,
            "lnrs_snapshot_store_logical_bytes",
            "Sum of the stored snapshots' database sizes (before dedup and compression).",
            v.store_logical_bytes,
        )?;
        gauge(
            e,
            "lnrs_snapshot_store_stored_bytes",
            "Bytes of all block files on disk.",
            v.store_stored_bytes,
        )?;
        if let Some(s) = v.event_sink {
            sink_gauges(e, s)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Registry and the /metrics listener
// ---------------------------------------------------------------------------------------------

/// Everything one server exposes on `/metrics`.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// The gRPC families of this server, the process-wide application numbers, and the values
    /// `live` reads at each scrape.
    pub fn new(grpc: &GrpcMetrics, live: impl Fn() -> Live + Send + Sync + 'static) -> Self {
        let mut registry = Registry::default();
        grpc.register(&mut registry);
        APP.register(&mut registry);
        registry.register_collector(Box::new(LiveCollector(Box::new(live))));
        Self { registry }
    }

    /// Prometheus text format 0.0.4, or OpenMetrics when `openmetrics`. Returns the body and
    /// its content type.
    pub fn encode(&self, openmetrics: bool) -> (String, &'static str) {
        let mut out = String::new();
        let result = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        let content_type = if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        };
        (out, content_type)
    }
}

fn respond(
    exposition: &Exposition,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let plain = |status: hyper::StatusCode, text: &'static str| {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(hyper::StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return plain(hyper::StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let openmetrics = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = exposition.encode(openmetrics);
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Serves `/metrics` over HTTP/1.1 on `listener` until `stop` resolves; then closes every
/// connection it accepted (nothing here may outlive the server it describes).
pub async fn serve_http(
    listener: TcpListener,
    exposition: Exposition,
    stop: impl Future<Output = ()>,
) {
    let exposition = Arc::new(exposition);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics listener: accept failed");
                        continue;
                    }
                };
                let exposition = exposition.clone();
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let r = respond(&exposition, &req);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        }
    }
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_under_its_documented_name() {
        let grpc = GrpcMetrics::default();
        let l = RpcLabels {
            grpc_type: "unary",
            grpc_service: "lnrs.v1.EntityService",
            grpc_method: "GetMeasure",
        };
        grpc.started(&l);
        grpc.handled(&l, "OK", Duration::from_millis(3));
        restore_finished(Duration::from_millis(5), false);
        drop(timer(Op::verify(true)));
        let e = Exposition::new(&grpc, || Live {
            subscribers: 3,
            event_head_seq: 42,
            event_sink: Some(SinkLive {
                published_seq: 40,
                lag: 2,
                ..Default::default()
            }),
            ..Default::default()
        });
        let (text, content_type) = e.encode(false);
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        for family in [
            "grpc_server_started_total counter",
            "grpc_server_handled_total counter",
            "grpc_server_handling_seconds histogram",
            "lnrs_snapshot_capture_seconds histogram",
            "lnrs_snapshot_commit_seconds histogram",
            "lnrs_snapshot_logical_bytes_total counter",
            "lnrs_snapshot_stored_bytes_total counter",
            "lnrs_delete_seconds histogram",
            "lnrs_restore_seconds histogram",
            "lnrs_snapshot_verify_seconds histogram",
            "lnrs_retention_seconds histogram",
            "lnrs_retention_freed_bytes_total counter",
            "lnrs_event_subscriber_lag_events histogram",
            "lnrs_event_subscriber_catch_ups_total counter",
            "lnrs_event_subscribers gauge",
            "lnrs_event_log_head_seq gauge",
            "lnrs_event_log_first_seq gauge",
            "lnrs_write_queue_depth gauge",
            "lnrs_restore_in_progress gauge",
            "lnrs_snapshot_storage_up gauge",
            "lnrs_snapshot_store_snapshots gauge",
            "lnrs_snapshot_store_logical_bytes gauge",
            "lnrs_snapshot_store_stored_bytes gauge",
            "lnrs_event_sink_published_seq gauge",
            "lnrs_event_sink_lag_events gauge",
            "lnrs_event_sink_skipped_events gauge",
            "lnrs_event_sink_connected gauge",
            "lnrs_event_sink_failures_total counter",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
        }
        assert!(text.contains(
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"lnrs.v1.EntityService\",\
             grpc_method=\"GetMeasure\",grpc_code=\"OK\"} 1\n"
        ));
        assert!(text.contains("lnrs_event_subscribers 3\n"), "{text}");
        assert!(text.contains("lnrs_event_log_head_seq 42\n"), "{text}");
        assert!(text.contains("lnrs_event_sink_lag_events 2\n"), "{text}");
        assert!(text.contains("lnrs_restore_seconds_count{outcome=\"restored\"}"));
        let (open, content_type) = e.encode(true);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(open.ends_with("# EOF\n"));
    }
}
