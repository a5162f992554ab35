//! Production readiness against real servers on 127.0.0.1:0: graceful shutdown (50 streams and
//! an in-flight restore; a stuck client; a second signal), `/metrics` after a scripted
//! workload, the auth matrix, mTLS, message-size and deadline limits, JSON logs with request
//! ids and no tokens, and start-up failures that name the bad setting.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    assert_refused, data_dir_with_reference, error_meta, events_after, ops, reason, table_counts,
    test_config, ChildServer, TestServer,
};
use lnrs::config::{Config, TlsConfig, TokenEntry};
use lnrs::pb;
use lnrs::server::{Listeners, ServeError};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;

const BIN: &str = env!("CARGO_BIN_EXE_lnrs");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A server started on listeners this test bound itself (so it knows the metrics port).
pub(crate) struct OwnServer {
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl OwnServer {
    pub(crate) async fn start(cfg: Config, with_metrics: bool) -> OwnServer {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = match with_metrics {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let app = tokio::task::spawn_blocking(move || lnrs::app::App::open(cfg))
            .await
            .unwrap()
            .expect("open app");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lnrs::server::serve_on(
            Listeners { grpc, metrics },
            app,
            async {
                let _ = stopped.await;
            },
        ));
        OwnServer {
            addr,
            metrics: metrics_addr,
            stop: Some(stop),
            task,
        }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn watch(start_after: Option<u64>) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        start_after_seq: start_after,
        ..Default::default()
    }
}

async fn create_snapshot(s: &TestServer) -> pb::CreateSnapshotResponse {
    s.snapshots()
        .create_snapshot(snapshot_request())
        .await
        .unwrap()
        .into_inner()
}

fn snapshot_request() -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        description: "production test".into(),
        labels: Default::default(),
        request_id: String::new(),
    }
}

fn restore_request(id: &str) -> pb::RestoreSnapshotRequest {
    pb::RestoreSnapshotRequest {
        snapshot_id: id.into(),
        confirm_snapshot_id: id.into(),
        request_id: String::new(),
    }
}

/// Reads `stream` until the safety snapshot of a restore is announced: from then on the
/// restore holds the writer (assembling, verifying, swapping).
async fn until_restore_started(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("an event within 60 s")
            .expect("stream open")
            .expect("no error");
        if let Some(pb::watch_events_response::Item::Event(e)) = m.item {
            let op = e.snapshot.as_ref().map(|s| s.operation);
            if e.kind == pb::EventKind::SnapshotCreated as i32
                && op == Some(pb::SnapshotOperation::PreRestore as i32)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no restore started");
    }
}

/// Reads a stream to its end: the last event seq it delivered and the final status.
async fn drain_stream(
    stream: &mut tonic::Streaming<pb::WatchEventsResponse>,
    mut last: u64,
) -> (u64, Status) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("stream ends within 30 s")
        {
            Some(Ok(m)) => {
                if let Some(pb::watch_events_response::Item::Event(e)) = m.item {
                    last = e.seq;
                }
            }
            Some(Err(status)) => return (last, status),
            None => panic!("stream ended without a status"),
        }
    }
}

async fn health_status(channel: &Channel, service: &str) -> Result<i32, Status> {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// Polls `f` until it returns true (bounded).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_fifty_streams_and_an_in_flight_restore() {
    let tmp = data_dir_with_reference();
    let db = tmp.path().join("lnrs.duckdb");
    let initial = table_counts(&db);
    let mut cfg = test_config(tmp.path());
    cfg.shutdown_drain_delay = Duration::from_millis(200);
    cfg.shutdown_grace = Duration::from_secs(20);
    let grace = cfg.shutdown_grace;
    let s = TestServer::start_with(cfg).await;
    let snap = create_snapshot(&s).await;
    let snap_id = snap.snapshot.unwrap().snapshot_id;
    // A change the restore has to undo.
    let undone = s
        .entity()
        .create_habitat(ops::new_habitat("created after the snapshot"))
        .await
        .unwrap()
        .into_inner()
        .event_seq;

    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(
            s.events()
                .watch_events(watch(Some(snap.event_seq)))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut observer = s
        .events()
        .watch_events(watch(Some(undone)))
        .await
        .unwrap()
        .into_inner();
    let mut snaps = s.snapshots();
    let restore =
        tokio::spawn(async move { snaps.restore_snapshot(restore_request(&snap_id)).await });
    until_restore_started(&mut observer).await;

    let t = Instant::now();
    let stopping = tokio::spawn(s.stop());
    assert!(
        !restore.is_finished(),
        "the restore must still be running when shutdown begins"
    );

    let restored = restore
        .await
        .unwrap()
        .expect("an in-flight restore completes during the drain")
        .into_inner();
    let restored_after = t.elapsed();
    assert!(!restored.rolled_back, "{:?}", restored.rollback_reason);
    assert!(restored.report.as_ref().unwrap().passed);

    for (i, st) in streams.iter_mut().enumerate() {
        let (last, end) = drain_stream(st, snap.event_seq).await;
        assert_eq!(end.code(), Code::Unavailable, "stream {i}: {end:?}");
        assert_eq!(reason(&end), "SERVER_SHUTTING_DOWN", "stream {i}");
        assert_eq!(
            error_meta(&end, "last_seq"),
            Some(last.to_string()),
            "stream {i}: last_seq is the last event it delivered"
        );
        assert!(last >= undone, "stream {i} delivered the catch-up");
    }
    stopping.await.unwrap();
    let exited_after = t.elapsed();
    eprintln!(
        "shutdown: restore answered after {restored_after:?}, server returned after \
         {exited_after:?} (grace {grace:?})"
    );
    assert!(exited_after <= grace, "exited after {exited_after:?}");

    // Not half: the live file is exactly the snapshot, and nothing is left to repair.
    assert_eq!(table_counts(&db), initial);
    assert!(!tmp.path().join("restore.journal").exists());
    assert!(!tmp.path().join("lnrs.duckdb.restore-tmp").exists());

    // The writer really closed: a new server takes the store lock and sees the restore event.
    let cfg = test_config(tmp.path());
    let s = TestServer::start_with(cfg).await;
    crate::common::wait_serving(&s.channel, lnrs::server::SNAPSHOT_STORAGE_HEALTH).await;
    let events = events_after(&s.channel, restored.event_seq - 1).await;
    assert_eq!(events[0].kind, pb::EventKind::RestorePerformed as i32);
    s.stop().await;
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_cannot_hold_shutdown_past_the_grace_period() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.shutdown_drain_delay = Duration::from_millis(50);
    cfg.shutdown_grace = Duration::from_secs(3);
    let grace = cfg.shutdown_grace;
    let s = TestServer::start_with(cfg).await;
    for i in 0..5 {
        s.entity()
            .create_habitat(ops::new_habitat(&format!("h{i}")))
            .await
            .unwrap();
    }
    // A client that never lets the server send it anything: a zero flow-control window.
    let stuck_channel = Endpoint::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .initial_stream_window_size(Some(0))
        .connect()
        .await
        .unwrap();
    let mut stuck = pb::event_service_client::EventServiceClient::new(stuck_channel)
        .watch_events(watch(Some(0)))
        .await
        .unwrap()
        .into_inner();
    let mut normal = s
        .events()
        .watch_events(watch(None))
        .await
        .unwrap()
        .into_inner();
    // A health Watch stream never ends by itself; shutdown must end it too.
    let mut health_watch = tonic_health::pb::health_client::HealthClient::new(s.channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = health_watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let data_dir = s.data_dir.clone();
    let t = Instant::now();
    let stopping = tokio::spawn(s.stop());

    let (_, end) = drain_stream(&mut normal, 0).await;
    assert_refused(&end, Code::Unavailable, "SERVER_SHUTTING_DOWN");
    let health_end = loop {
        match tokio::time::timeout(Duration::from_secs(10), health_watch.next())
            .await
            .expect("the health stream ends")
        {
            Some(Ok(m)) => assert_eq!(m.status, ServingStatus::NotServing as i32),
            Some(Err(s)) => break s,
            None => panic!("health stream ended without a status"),
        }
    };
    assert_refused(&health_end, Code::Unavailable, "SERVER_SHUTTING_DOWN");

    stopping.await.unwrap();
    let elapsed = t.elapsed();
    eprintln!("stuck client: server returned after {elapsed:?} (grace {grace:?})");
    assert!(
        elapsed <= grace + Duration::from_millis(500),
        "the server took {elapsed:?} with a grace of {grace:?}"
    );
    // The stuck stream never got its clean end: its connection was cut.
    let stuck_end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.next())
            .await
            .expect("the cut reaches the client")
        {
            Some(Ok(_)) => continue,
            Some(Err(s)) => break Some(s),
            None => break None,
        }
    };
    let stuck_reason = stuck_end.as_ref().map(reason).unwrap_or_default();
    assert_ne!(
        stuck_reason, "SERVER_SHUTTING_DOWN",
        "the stuck client was not stuck: {stuck_end:?}"
    );

    // Everything the old server held is released: a new one takes the snapshot store lock.
    let s = TestServer::start_with(test_config(&data_dir)).await;
    crate::common::wait_serving(&s.channel, lnrs::server::SNAPSHOT_STORAGE_HEALTH).await;
    s.stop().await;
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_are_refused_once_shutdown_has_begun() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.shutdown_drain_delay = Duration::from_secs(3);
    cfg.shutdown_grace = Duration::from_secs(10);
    let s = TestServer::start_with(cfg).await;
    let snap = create_snapshot(&s).await.snapshot.unwrap().snapshot_id;
    let channel = s.channel.clone();
    let stopping = tokio::spawn(s.stop());
    eventually("health NOT_SERVING", || {
        let channel = channel.clone();
        async move {
            health_status(&channel, "").await.ok() == Some(ServingStatus::NotServing as i32)
        }
    })
    .await;
    // Reads still work during the drain delay; a restore that might outlive the grace does not start.
    let status = pb::snapshot_service_client::SnapshotServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await;
    assert!(status.is_ok(), "{status:?}");
    let refused = pb::snapshot_service_client::SnapshotServiceClient::new(channel)
        .restore_snapshot(restore_request(&snap))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(reason(&refused), "SERVER_SHUTTING_DOWN");
    stopping.await.unwrap();
    drop(tmp);
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// GET over a raw HTTP/1.1 connection: (status, content type, body).
async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: lnrs\r\nConnection: close\r\n{accept}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// Parses the text exposition into `name{sorted labels}` → value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        labels.sort();
        out.insert(
            format!("{name}{{{}}}", labels.join(",")),
            value.parse().unwrap(),
        );
    }
    out
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

fn rpc(kind: &str, service: &str, method: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grpc_type", kind.to_string()),
        ("grpc_service", service.to_string()),
        ("grpc_method", method.to_string()),
    ]
}

fn rpc_key(name: &str, labels: &[(&'static str, String)], code: Option<&str>) -> String {
    let mut l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(c) = code {
        l.push(("grpc_code", c));
    }
    key(name, &l)
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, content_type, body) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_workload() {
    let tmp = data_dir_with_reference();
    let s = OwnServer::start(test_config(tmp.path()), true).await;
    let ch = s.channel();
    crate::common::wait_serving(&ch, "").await;
    let maddr = s.metrics.unwrap();
    let mut entity = pb::entity_service_client::EntityServiceClient::new(ch.clone());
    let mut snaps = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone());
    let mut events = pb::event_service_client::EventServiceClient::new(ch.clone());

    for _ in 0..3 {
        entity
            .get_measure(pb::GetMeasureRequest { measure_id: 1 })
            .await
            .unwrap();
    }
    let missing = entity
        .get_measure(pb::GetMeasureRequest {
            measure_id: 999_999,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let h1 = entity
        .create_habitat(ops::new_habitat("metrics one"))
        .await
        .unwrap()
        .into_inner();
    entity
        .create_habitat(ops::new_habitat("metrics two"))
        .await
        .unwrap();
    entity
        .delete_habitat(pb::DeleteHabitatRequest {
            habitat_id: h1.habitat.unwrap().habitat_id,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let snap = snaps
        .create_snapshot(snapshot_request())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    snaps
        .verify_snapshot(pb::VerifySnapshotRequest {
            source: pb::HistorySource::Local as i32,
            snapshot_id: snap.snapshot_id.clone(),
            mode: pb::VerifyMode::Quick as i32,
        })
        .await
        .unwrap();
    let status = snaps
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();

    // A stream counts as started at once and as handled only when it ends.
    let mut stream = events
        .watch_events(watch(Some(status.event_head_seq - 1)))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    let watch_labels = rpc("server_stream", "lnrs.v1.EventService", "WatchEvents");
    let m = scrape(maddr).await;
    assert_eq!(
        m.get(&rpc_key("grpc_server_started_total", &watch_labels, None)),
        Some(&1.0)
    );
    assert!(
        !m.keys()
            .any(|k| k.starts_with("grpc_server_handled_total") && k.contains("WatchEvents")),
        "an open stream is not handled yet"
    );
    assert_eq!(m.get("lnrs_event_subscribers{}"), Some(&1.0));
    drop(stream);
    let canceled = rpc_key("grpc_server_handled_total", &watch_labels, Some("Canceled"));
    eventually("the cancelled stream to be counted", || {
        let canceled = canceled.clone();
        async move {
            let m = scrape(maddr).await;
            m.get(&canceled) == Some(&1.0) && m.get("lnrs_event_subscribers{}") == Some(&0.0)
        }
    })
    .await;
    // A stream refused before its first message ends with its error code.
    let ahead = events
        .watch_events(watch(Some(status.event_head_seq + 100)))
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange);

    let m = scrape(maddr).await;
    let get = rpc("unary", "lnrs.v1.EntityService", "GetMeasure");
    let expect = [
        (rpc_key("grpc_server_started_total", &get, None), 4.0),
        (rpc_key("grpc_server_handled_total", &get, Some("OK")), 3.0),
        (
            rpc_key("grpc_server_handled_total", &get, Some("NotFound")),
            1.0,
        ),
        (
            rpc_key("grpc_server_handling_seconds_count", &get, None),
            4.0,
        ),
        (
            rpc_key(
                "grpc_server_handled_total",
                &rpc("unary", "lnrs.v1.EntityService", "CreateHabitat"),
                Some("OK"),
            ),
            2.0,
        ),
        (
            rpc_key(
                "grpc_server_handled_total",
                &rpc("unary", "lnrs.v1.EntityService", "DeleteHabitat"),
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc_key(
                "grpc_server_handled_total",
                &rpc("unary", "lnrs.v1.SnapshotService", "CreateSnapshot"),
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc_key(
                "grpc_server_handled_total",
                &rpc("unary", "lnrs.v1.SnapshotService", "VerifySnapshot"),
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc_key("grpc_server_started_total", &watch_labels, None),
            2.0,
        ),
        (canceled.clone(), 1.0),
        (
            rpc_key(
                "grpc_server_handled_total",
                &watch_labels,
                Some("OutOfRange"),
            ),
            1.0,
        ),
        (
            "lnrs_event_log_head_seq{}".to_string(),
            status.event_head_seq as f64,
        ),
        // The delete's snapshot and the manual one (this server's store).
        ("lnrs_snapshot_store_snapshots{}".to_string(), 2.0),
        ("lnrs_snapshot_storage_up{}".to_string(), 1.0),
        ("lnrs_restore_in_progress{}".to_string(), 0.0),
        ("lnrs_event_subscribers{}".to_string(), 0.0),
    ];
    for (k, v) in &expect {
        assert_eq!(m.get(k), Some(v), "{k}");
    }
    let health = rpc_key(
        "grpc_server_handled_total",
        &rpc("unary", "grpc.health.v1.Health", "Check"),
        Some("OK"),
    );
    assert!(m.get(&health).copied().unwrap_or(0.0) >= 1.0, "{health}");
    // Application numbers are process-wide: at least this server's work.
    for (k, at_least) in [
        ("lnrs_snapshot_capture_seconds_count{}", 2.0),
        ("lnrs_snapshot_commit_seconds_count{}", 2.0),
        ("lnrs_delete_seconds_count{}", 1.0),
        ("lnrs_snapshot_verify_seconds_count{mode=\"quick\"}", 1.0),
        ("lnrs_snapshot_logical_bytes_total{}", 2.0 * 1024.0 * 1024.0),
        ("lnrs_snapshot_stored_bytes_total{}", 1.0),
        ("lnrs_event_subscriber_lag_events_count{}", 1.0),
    ] {
        let v = m.get(k).copied().unwrap_or(-1.0);
        assert!(v >= at_least, "{k} = {v}, expected at least {at_least}");
    }
    let capture_sum = m["lnrs_snapshot_capture_seconds_sum{}"];
    let capture_n = m["lnrs_snapshot_capture_seconds_count{}"];
    eprintln!(
        "snapshot capture (writer blocked): mean {:.1} ms over {capture_n} captures",
        capture_sum / capture_n * 1000.0
    );

    // OpenMetrics on request; anything else is 404.
    let (status, ct, body) = http_get(
        maddr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(body.ends_with("# EOF\n"));
    assert_eq!(http_get(maddr, "/other", None).await.0, 404);
    s.stop().await;
    // The metrics listener went away with the server.
    assert!(tokio::net::TcpStream::connect(maddr).await.is_err());
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_returned_and_recorded_in_events() {
    let s = TestServer::start().await;
    let mut req = Request::new(ops::new_habitat("with an id"));
    req.metadata_mut()
        .insert("x-request-id", "client-chosen-id-42".parse().unwrap());
    let r = s.entity().create_habitat(req).await.unwrap();
    assert_eq!(
        r.metadata().get("x-request-id").unwrap(),
        "client-chosen-id-42"
    );
    let seq = r.into_inner().event_seq;
    let r = s
        .entity()
        .create_habitat(ops::new_habitat("without an id"))
        .await
        .unwrap();
    let generated = r
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    // Errors carry it too.
    let e = s
        .entity()
        .get_measure(pb::GetMeasureRequest { measure_id: -5 })
        .await
        .unwrap_err();
    assert!(e.metadata().get("x-request-id").is_some());
    let events = events_after(&s.channel, seq - 1).await;
    assert_eq!(events[0].request_id, "client-chosen-id-42");
    assert_eq!(events[1].request_id, generated);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

const READER: &str = "reader-token-aaaaaaaaaaaa";
const EDITOR: &str = "editor-token-bbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Reader,
    Editor,
    Admin,
}

/// Calls every representative RPC of `class` with `token`; returns each result.
async fn call_class(
    ch: &Channel,
    class: Class,
    token: Option<&str>,
    snapshot_id: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut e = pb::entity_service_client::EntityServiceClient::new(ch.clone());
    let mut s = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone());
    let mut ev = pb::event_service_client::EventServiceClient::new(ch.clone());
    let t = token;
    match class {
        Class::Reader => vec![
            (
                "GetMeasure",
                ok(
                    e.get_measure(with_token(pb::GetMeasureRequest { measure_id: 1 }, t))
                        .await,
                ),
            ),
            (
                "ListHabitats",
                ok(
                    e.list_habitats(with_token(pb::ListHabitatsRequest::default(), t))
                        .await,
                ),
            ),
            (
                "GetDeleteImpact",
                ok(e.get_delete_impact(with_token(
                    pb::GetDeleteImpactRequest {
                        target: Some(pb::get_delete_impact_request::Target::MeasureId(1)),
                    },
                    t,
                ))
                .await),
            ),
            (
                "WatchEvents",
                match ev.watch_events(with_token(watch(None), t)).await {
                    Ok(r) => r.into_inner().next().await.unwrap().map(|_| ()),
                    Err(s) => Err(s),
                },
            ),
            (
                "ListEvents",
                ok(ev
                    .list_events(with_token(pb::ListEventsRequest::default(), t))
                    .await),
            ),
            (
                "GetStatus",
                ok(s.get_status(with_token(pb::GetStatusRequest {}, t)).await),
            ),
            (
                "VerifySnapshot",
                ok(s.verify_snapshot(with_token(
                    pb::VerifySnapshotRequest {
                        source: pb::HistorySource::Local as i32,
                        snapshot_id: snapshot_id.into(),
                        mode: pb::VerifyMode::Quick as i32,
                    },
                    t,
                ))
                .await),
            ),
            (
                "PreviewSnapshot",
                ok(s.preview_snapshot(with_token(
                    pb::PreviewSnapshotRequest {
                        snapshot_id: snapshot_id.into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await),
            ),
        ],
        Class::Editor => vec![
            (
                "CreateHabitat",
                ok(
                    e.create_habitat(with_token(ops::new_habitat("auth matrix"), t))
                        .await,
                ),
            ),
            (
                // A missing id: reaching NOT_FOUND means the call got past auth.
                "DeleteHabitat",
                ok(e.delete_habitat(with_token(
                    pb::DeleteHabitatRequest {
                        habitat_id: 99_999_999,
                        request_id: String::new(),
                    },
                    t,
                ))
                .await),
            ),
            (
                "CreateSnapshot",
                ok(s.create_snapshot(with_token(snapshot_request(), t)).await),
            ),
        ],
        Class::Admin => vec![
            (
                // Unconfirmed: reaching RESTORE_NOT_CONFIRMED means the call got past auth.
                "RestoreSnapshot",
                ok(s.restore_snapshot(with_token(
                    pb::RestoreSnapshotRequest {
                        snapshot_id: snapshot_id.into(),
                        confirm_snapshot_id: String::new(),
                        request_id: String::new(),
                    },
                    t,
                ))
                .await),
            ),
            (
                "DeleteSnapshot",
                ok(s.delete_snapshot(with_token(
                    pb::DeleteSnapshotRequest {
                        snapshot_id: "not-a-snapshot-id".into(),
                        request_id: String::new(),
                        ..Default::default()
                    },
                    t,
                ))
                .await),
            ),
            (
                "ApplyRetention",
                ok(s.apply_retention(with_token(
                    pb::ApplyRetentionRequest {
                        dry_run: true,
                        ..Default::default()
                    },
                    t,
                ))
                .await),
            ),
        ],
    }
}

fn ok<T>(r: Result<T, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

/// "allowed" when the call got past auth (whatever the handler then said).
fn verdict(r: &Result<(), Status>) -> String {
    match r {
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            format!("{:?}/{}", s.code(), reason(s))
        }
        _ => "allowed".into(),
    }
}

async fn event_head(ch: &Channel, token: Option<&str>) -> u64 {
    pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .get_status(with_token(pb::GetStatusRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .event_head_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_roles_times_rpc_classes() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.tokens = vec![
        TokenEntry::new(READER, "reader"),
        TokenEntry::new(EDITOR, "editor"),
        TokenEntry::new(ADMIN, "admin"),
    ];
    let s = TestServer::start_with(cfg).await;
    let ch = s.channel.clone();
    // Health is open (the harness already waited on it without a token).
    assert_eq!(
        health_status(&ch, "lnrs.v1.EntityService").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let snapshot_id = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .create_snapshot(with_token(snapshot_request(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;

    let unauth_missing = "Unauthenticated/MISSING_TOKEN";
    let unauth_invalid = "Unauthenticated/INVALID_TOKEN";
    let denied = "PermissionDenied/ROLE_TOO_LOW";
    let principals: [(&str, Option<&str>, [&str; 3]); 5] = [
        ("no token", None, [unauth_missing; 3]),
        (
            "unknown token",
            Some("not-a-configured-token-xyz"),
            [unauth_invalid; 3],
        ),
        ("reader", Some(READER), ["allowed", denied, denied]),
        ("editor", Some(EDITOR), ["allowed", "allowed", denied]),
        ("admin", Some(ADMIN), ["allowed", "allowed", "allowed"]),
    ];
    let mut table = Vec::new();
    for (who, token, expected) in principals {
        let head_before = event_head(&ch, Some(ADMIN)).await;
        for (class, want) in [Class::Reader, Class::Editor, Class::Admin]
            .into_iter()
            .zip(expected)
        {
            for (rpc, result) in call_class(&ch, class, token, &snapshot_id).await {
                let got = verdict(&result);
                table.push(format!("{who:14} {class:?}/{rpc:16} {got}"));
                assert_eq!(got, want, "{who} calling {rpc}: {result:?}");
            }
        }
        if !matches!(who, "editor" | "admin") {
            // Refused mutations changed nothing.
            assert_eq!(event_head(&ch, Some(ADMIN)).await, head_before, "{who}");
        }
    }
    eprintln!("{}", table.join("\n"));

    // The reason travels with its details.
    let e = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone())
        .apply_retention(with_token(
            pb::ApplyRetentionRequest {
                dry_run: true,
                ..Default::default()
            },
            Some(EDITOR),
        ))
        .await
        .unwrap_err();
    assert_eq!(error_meta(&e, "required_role").as_deref(), Some("admin"));
    assert_eq!(error_meta(&e, "role").as_deref(), Some("editor"));

    // Reflection is open by default.
    assert!(list_services(&ch, None).await.is_ok());
    s.stop().await;

    // ... and closed when reflection_requires_auth is set.
    let mut cfg = test_config(tmp.path());
    cfg.tokens = vec![TokenEntry::new(READER, "reader")];
    cfg.reflection_requires_auth = true;
    let s = TestServer::start_with(cfg).await;
    let refused = list_services(&s.channel, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let services = list_services(&s.channel, Some(READER)).await.unwrap();
    assert!(
        services.contains(&"lnrs.v1.EntityService".to_string()),
        "{services:?}"
    );
    s.stop().await;
}

async fn list_services(ch: &Channel, token: Option<&str>) -> Result<Vec<String>, Status> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(with_token(tokio_stream::iter(vec![req]), token))
        .await?
        .into_inner();
    let m = stream.next().await.expect("one response")?;
    match m.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

pub(crate) struct Pki {
    dir: tempfile::TempDir,
    pub(crate) ca: String,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
    rogue_cert: String,
    rogue_key: String,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(p, key))
}

fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, names[0].to_string());
    p.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, a server certificate for localhost / 127.0.0.1, a client certificate from the same CA
/// and one from another CA, written where the server config can point at them.
pub(crate) fn pki() -> Pki {
    let (ca_cert, issuer) = ca("lnrs test CA");
    let (rogue_ca, rogue_issuer) = ca("someone else's CA");
    drop(rogue_ca);
    let (server_cert, server_key) = leaf(
        &issuer,
        &["localhost", "127.0.0.1"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &issuer,
        &["lnrs-client"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (rogue_cert, rogue_key) = leaf(
        &rogue_issuer,
        &["lnrs-client"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key).unwrap();
    Pki {
        dir,
        ca: ca_cert.pem(),
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

impl Pki {
    /// A file of the server side: "ca.pem", "server.pem" or "server.key".
    pub(crate) fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn tls(&self, mtls: bool) -> TlsConfig {
        TlsConfig {
            cert: self.dir.path().join("server.pem"),
            key: self.dir.path().join("server.key"),
            client_ca: mtls.then(|| self.dir.path().join("ca.pem")),
        }
    }

    pub(crate) fn client(&self, identity: Option<(&str, &str)>) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

/// A health check over TLS with `tls`, bounded in time: Ok(status) or the failure.
async fn tls_health(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        ep = ep.tls_config(t).map_err(|e| e.to_string())?;
    }
    let ch = match tokio::time::timeout(Duration::from_secs(10), ep.connect()).await {
        Ok(Ok(ch)) => ch,
        Ok(Err(e)) => return Err(format!("connect: {e:?}")),
        Err(_) => return Err("connect timed out".into()),
    };
    match tokio::time::timeout(Duration::from_secs(10), health_status(&ch, "")).await {
        Ok(r) => r.map_err(|s| format!("{s:?}")),
        Err(_) => Err("health check timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_valid_certificate() {
    let pki = pki();
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.tls = Some(pki.tls(true));
    cfg.validate()
        .and_then(|()| lnrs::server::check(&cfg))
        .expect("the generated PKI is a valid configuration");
    let s = OwnServer::start(cfg, false).await;
    let serving = ServingStatus::Serving as i32;

    let good = tls_health(
        s.addr,
        Some(pki.client(Some((&pki.client_cert, &pki.client_key)))),
    )
    .await;
    assert_eq!(good, Ok(serving));

    let without_cert = tls_health(s.addr, Some(pki.client(None))).await;
    assert!(
        without_cert.is_err(),
        "no client certificate: {without_cert:?}"
    );
    let rogue = tls_health(
        s.addr,
        Some(pki.client(Some((&pki.rogue_cert, &pki.rogue_key)))),
    )
    .await;
    assert!(rogue.is_err(), "certificate from another CA: {rogue:?}");
    let plaintext = tls_health(s.addr, None).await;
    assert!(plaintext.is_err(), "plaintext: {plaintext:?}");
    eprintln!("refused: no cert: {without_cert:?}; rogue: {rogue:?}; plaintext: {plaintext:?}");

    // And a real RPC works over mTLS.
    let ch = Endpoint::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(pki.client(Some((&pki.client_cert, &pki.client_key))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::snapshot_service_client::SnapshotServiceClient::new(ch)
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_ca_serves_any_client_that_trusts_it() {
    let pki = pki();
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.tls = Some(pki.tls(false));
    let s = OwnServer::start(cfg, false).await;
    assert_eq!(
        tls_health(s.addr, Some(pki.client(None))).await,
        Ok(ServingStatus::Serving as i32)
    );
    assert!(tls_health(s.addr, None).await.is_err(), "plaintext refused");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_resource_exhausted_with_message_too_large() {
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.max_message_bytes = 64 * 1024;
    let s = TestServer::start_with(cfg).await;
    let head = event_head(&s.channel, None).await;

    let big = "x".repeat(100 * 1024);
    let e = s
        .entity()
        .create_habitat(ops::new_habitat(&big))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), "MESSAGE_TOO_LARGE");
    assert_eq!(error_meta(&e, "limit_bytes").as_deref(), Some("65536"));
    assert_eq!(
        event_head(&s.channel, None).await,
        head,
        "nothing was created"
    );

    // A response over the limit gets the same answer: five rows of 15 KiB each fit in their
    // requests, not in one page.
    for i in 0..5 {
        let name = format!("bigname {i} {}", "y".repeat(15 * 1024));
        s.entity()
            .create_habitat(ops::new_habitat(&name))
            .await
            .unwrap();
    }
    let e = s
        .entity()
        .list_habitats(pb::ListHabitatsRequest {
            search: "bigname".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), "MESSAGE_TOO_LARGE");
    // A page that fits is fine.
    let page = s
        .entity()
        .list_habitats(pb::ListHabitatsRequest {
            search: "bigname".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.into_inner().habitats.len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_deadline_passes_while_queued_behind_a_restore_is_not_executed() {
    let tmp = data_dir_with_reference();
    let db = tmp.path().join("lnrs.duckdb");
    let initial = table_counts(&db);
    let s = TestServer::start_with(test_config(tmp.path())).await;
    let snap = create_snapshot(&s).await;
    let snap_id = snap.snapshot.unwrap().snapshot_id;
    let mut observer = s
        .events()
        .watch_events(watch(Some(snap.event_seq)))
        .await
        .unwrap()
        .into_inner();
    let mut snaps = s.snapshots();
    let restore =
        tokio::spawn(async move { snaps.restore_snapshot(restore_request(&snap_id)).await });
    until_restore_started(&mut observer).await;

    let mut probe = Request::new(ops::new_habitat("deadline probe"));
    probe.set_timeout(Duration::from_millis(50));
    let t = Instant::now();
    let e = s.entity().create_habitat(probe).await.unwrap_err();
    eprintln!(
        "probe answered {:?} after {:?}: {}",
        e.code(),
        t.elapsed(),
        e.message()
    );
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    assert!(
        !restore.is_finished(),
        "the probe must have waited behind the restore for its whole deadline"
    );
    let restored = restore.await.unwrap().unwrap().into_inner();
    assert!(!restored.rolled_back);

    // Queued after the probe: once it is answered, the writer has passed the probe's job.
    let control = s
        .entity()
        .create_habitat(ops::new_habitat("control write"))
        .await
        .unwrap()
        .into_inner();
    let found = |search: &str| {
        let mut c = s.entity();
        let search = search.to_string();
        async move {
            c.list_habitats(pb::ListHabitatsRequest {
                search,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .habitats
            .len()
        }
    };
    assert_eq!(found("deadline probe").await, 0, "the expired write ran");
    assert_eq!(found("control write").await, 1);
    let created: Vec<_> = events_after(&s.channel, restored.event_seq)
        .await
        .into_iter()
        .filter(|e| e.kind == pb::EventKind::EntityCreated as i32)
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].seq, control.event_seq);
    s.stop().await;
    let mut expected = initial;
    *expected.get_mut("habitat").unwrap() += 1;
    assert_eq!(table_counts(&db), expected);
}

// ---------------------------------------------------------------------------------------------
// The binary: configuration, signals, logs
// ---------------------------------------------------------------------------------------------

/// Runs `lnrs serve` with these arguments and environment (no inherited LNRS_*), expecting it
/// to exit: (exit code, stderr).
pub(crate) fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--load-reference-data", "false"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LNRS_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lnrs serve {args:?} did not exit: the configuration was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !data.path().join("lnrs.duckdb").exists(),
        "a bad configuration must fail before anything is opened"
    );
    (status.code(), stderr)
}

/// Flags, environment, and the setting the error must name.
type BadConfig<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn bad_configuration_fails_at_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown_key = file("unknown.toml", "colour = \"blue\"\n");
    let bad_duration = file("duration.toml", "shutdown_grace = \"soon\"\n");
    let bad_tokens = file("tokens", "# ops\nsome-long-token-value-123 superuser\n");
    let garbage = file("garbage.pem", "not a certificate\n");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<BadConfig> = vec![
        (
            vec!["--listen".into(), "nonsense".into()],
            vec![],
            "--listen",
        ),
        (
            vec!["--snapshot-policy".into(), "x".into()],
            vec![],
            "--snapshot-policy",
        ),
        (vec!["--config".into(), s(&unknown_key)], vec![], "colour"),
        (
            vec!["--config".into(), s(&bad_duration)],
            vec![],
            "shutdown_grace",
        ),
        (
            vec![
                "--shutdown-drain-delay".into(),
                "30s".into(),
                "--shutdown-grace".into(),
                "10s".into(),
            ],
            vec![],
            "shutdown_drain_delay",
        ),
        (
            vec!["--max-message-bytes".into(), "10".into()],
            vec![],
            "max_message_bytes",
        ),
        (
            vec!["--keepalive-interval".into(), "0s".into()],
            vec![],
            "keepalive_interval",
        ),
        (
            vec![],
            vec![("LNRS_MAX_SUBSCRIBERS", "lots")],
            "--max-subscribers",
        ),
        (vec![], vec![("LNRS_TOKENS", "tiny:admin")], "LNRS_TOKENS"),
        (
            vec!["--tokens-file".into(), s(&bad_tokens)],
            vec![],
            "tokens_file",
        ),
        (vec!["--tls-cert".into(), s(&garbage)], vec![], "tls_cert"),
        (
            vec!["--tls-client-ca".into(), s(&garbage)],
            vec![],
            "tls_client_ca",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&garbage),
                "--tls-key".into(),
                s(&garbage),
            ],
            vec![],
            "tls_cert",
        ),
        (
            vec![
                "--listen".into(),
                "127.0.0.1:50999".into(),
                "--metrics-listen".into(),
                "127.0.0.1:50999".into(),
            ],
            vec![],
            "metrics_listen",
        ),
    ];
    for (args, env, setting) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = serve_fails(&args, &env);
        eprintln!("{args:?} {env:?} -> {code:?}: {}", stderr.trim());
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(setting),
            "{args:?} {env:?}: stderr does not name `{setting}`: {stderr}"
        );
    }
    // Errors never show a token.
    let (_, stderr) = serve_fails(&[], &[("LNRS_TOKENS", "tiny:admin")]);
    assert!(!stderr.contains("tiny:"), "{stderr}");
    let (_, stderr) = serve_fails(&["--tokens-file", &s(&bad_tokens)], &[]);
    assert!(!stderr.contains("some-long-token-value-123"), "{stderr}");
}

/// Flags, environment, and the setting the error must name.
type Precedence<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    // Which value of retention_keep_last won shows in which setting the error names: 0 is
    // invalid and checked before max_message_bytes, which --max-message-bytes 10 always breaks.
    let dir = tempfile::tempdir().unwrap();
    let file = |keep: &str| {
        let p = dir.path().join(format!("keep{keep}.toml"));
        std::fs::write(&p, format!("retention_keep_last = {keep}\n")).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (zero, three) = (file("0"), file("3"));
    let breaker = ["--max-message-bytes", "10"];
    let cases: [Precedence; 4] = [
        // env (3) over file (0)
        (
            &["--config", &zero, breaker[0], breaker[1]],
            &[("LNRS_RETENTION_KEEP_LAST", "3")],
            "max_message_bytes",
        ),
        // env (0) over file (3)
        (
            &["--config", &three, breaker[0], breaker[1]],
            &[("LNRS_RETENTION_KEEP_LAST", "0")],
            "retention_keep_last",
        ),
        // flag (3) over env (0)
        (
            &["--retention-keep-last", "3", breaker[0], breaker[1]],
            &[("LNRS_RETENTION_KEEP_LAST", "0")],
            "max_message_bytes",
        ),
        // flag (0) over env (3)
        (
            &["--retention-keep-last", "0", breaker[0], breaker[1]],
            &[("LNRS_RETENTION_KEEP_LAST", "3")],
            "retention_keep_last",
        ),
    ];
    for (args, env, named) in cases {
        let (code, stderr) = serve_fails(args, env);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(named), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn the_example_config_covers_every_setting_and_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lnrs.example.toml");
    // That it names every setting and nothing else: config.rs's unit tests. Here: that
    // `lnrs serve --config` accepts it as it is.
    let data = tempfile::tempdir().unwrap();
    let cfg = lnrs::cli::serve::ServeArgs {
        config: Some(example),
        settings: lnrs::config::Settings {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    }
    .resolve()
    .expect("the example configuration is valid");
    let defaults = Config::new(data.path());
    assert_eq!(cfg.shutdown_grace, defaults.shutdown_grace);
    assert_eq!(cfg.max_message_bytes, defaults.max_message_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let tmp = data_dir_with_reference();
    let server = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &["--shutdown-drain-delay", "20s", "--shutdown-grace", "25s"],
        &[],
    )
    .await;
    server.signal(libc::SIGTERM);
    let ch = server.channel.clone();
    eventually("health NOT_SERVING after the first SIGTERM", || {
        let ch = ch.clone();
        async move { health_status(&ch, "").await.ok() == Some(ServingStatus::NotServing as i32) }
    })
    .await;
    server.signal(libc::SIGTERM);
    let (status, waited, _) = server.exit(Duration::from_secs(10)).await;
    eprintln!("second SIGTERM: exited {status:?} after {waited:?} (drain delay 20 s)");
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_never_tokens() {
    let tmp = data_dir_with_reference();
    let admin = "admin-secret-token-0123456789";
    let wrong = "wrong-secret-token-9876543210";
    let server = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &["--log-format", "json", "--shutdown-drain-delay", "100ms"],
        &[
            ("LNRS_TOKENS", &format!("{admin}:admin")),
            ("LNRS_LOG", "info"),
        ],
    )
    .await;
    let mut status =
        pb::snapshot_service_client::SnapshotServiceClient::new(server.channel.clone());
    let mut req = with_token(pb::GetStatusRequest {}, Some(admin));
    req.metadata_mut()
        .insert("x-request-id", "log-test-read-1".parse().unwrap());
    status.get_status(req).await.unwrap();
    let mut req = with_token(ops::new_habitat("Logged meadow"), Some(admin));
    req.metadata_mut()
        .insert("x-request-id", "log-test-request-1".parse().unwrap());
    let r = pb::entity_service_client::EntityServiceClient::new(server.channel.clone())
        .create_habitat(req)
        .await
        .unwrap();
    assert_eq!(
        r.metadata().get("x-request-id").unwrap(),
        "log-test-request-1"
    );
    let refused = status
        .get_status(with_token(pb::GetStatusRequest {}, Some(wrong)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused_id = refused
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    server.signal(libc::SIGTERM);
    let (st, _, stderr) = server.exit(Duration::from_secs(20)).await;
    assert!(st.success());

    assert!(!stderr.contains(admin), "a token leaked into the logs");
    assert!(
        !stderr.contains(wrong),
        "a presented token leaked into the logs"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished = |id: &str| -> HashMap<String, serde_json::Value> {
        let line = lines
            .iter()
            .find(|l| l["message"] == "rpc finished" && l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no `rpc finished` line for {id}:\n{stderr}"));
        serde_json::from_value(line["span"].clone()).unwrap()
    };
    let ok = finished("log-test-request-1");
    assert_eq!(ok["rpc"], "/lnrs.v1.EntityService/CreateHabitat");
    assert_eq!(ok["method"], "CreateHabitat");
    assert_eq!(ok["code"], "OK");
    assert_eq!(ok["role"], "admin");
    let principal = ok["principal"].as_str().unwrap_or_default();
    assert!(
        principal.starts_with("token-") && !principal.contains(admin),
        "the span names who, never the token: {ok:?}"
    );
    assert!(ok["duration_ms"].as_f64().is_some(), "{ok:?}");
    // A read that succeeded is counted by the metrics and logged at DEBUG only; the same read
    // refused is a failure, at INFO.
    assert!(
        !lines
            .iter()
            .any(|l| l["span"]["request_id"] == "log-test-read-1" && l["message"] == "rpc finished"),
        "a successful read logged at INFO:\n{stderr}"
    );
    let denied = finished(&refused_id);
    assert_eq!(denied["method"], "GetStatus");
    assert_eq!(denied["code"], "Unauthenticated");
}

/// Compressed requests (gzip, zstd) are served, and a method the server does not have is
/// UNIMPLEMENTED with an ErrorInfo like every other error (tonic's own answer has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_served_and_unknown_methods_carry_error_info() {
    use tonic::codec::CompressionEncoding;
    let s = TestServer::start().await;
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let habitats = pb::entity_service_client::EntityServiceClient::new(s.channel.clone())
            .send_compressed(enc)
            .accept_compressed(enc)
            .list_habitats(pb::ListHabitatsRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{enc:?}: {e:?}"))
            .into_inner()
            .habitats;
        assert!(!habitats.is_empty(), "{enc:?}");
    }
    let mut grpc = tonic::client::Grpc::new(s.channel.clone());
    grpc.ready().await.unwrap();
    let e = grpc
        .unary::<pb::GetStatusRequest, pb::GetStatusResponse, _>(
            tonic::Request::new(pb::GetStatusRequest {}),
            "/lnrs.v1.EntityService/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_refused(&e, Code::Unimplemented, "UNIMPLEMENTED");
    s.stop().await;
}
