//! Shared integration-test harness: the reference database is built once per test run (cached
//! under the cargo target tmp dir, keyed by the generator, its data files and the schema
//! sources) and copied for each test; servers run in-process on 127.0.0.1:0 and are ready when
//! health says SERVING.

#![allow(dead_code)]

mod child;
pub mod invariants;
pub mod ops;
pub mod otlp;
pub mod replica_check;
pub mod s3;
#[allow(unused_imports)] // not every test binary runs child servers
pub use child::{ChildServer, StartFailure};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use lnrs::config::Config;
use lnrs::pb;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Where the cached reference database lives.
fn reference_db() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let mut hasher = blake3::Hasher::new();
        for source in [
            include_str!("../../../src/refdata.rs"),
            // The settings the file is written with (compression).
            include_str!("../../../src/storage/mod.rs"),
            include_str!("../../../src/storage/schema.rs"),
        ]
        .into_iter()
        .chain(lnrs::storage::schema::MIGRATIONS.iter().map(|m| m.sql))
        .chain(lnrs::refdata::DATA_FILES.iter().map(|(_, text)| *text))
        {
            hasher.update(source.as_bytes());
        }
        let key = hasher.finalize();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("lnrs-reference-{}.duckdb", &key.to_hex()[..16]));
        if !path.exists() {
            // Build under a unique name, then rename: concurrent test binaries never see a
            // half-written file.
            let tmp = dir.join(format!(
                "lnrs-reference-build-{}.duckdb",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            lnrs::refdata::write_to_path(&tmp, 1).expect("reference dataset");
            std::fs::rename(&tmp, &path).expect("cache reference dataset");
        }
        path
    })
}

/// A fresh data directory holding a copy of the reference database.
pub fn data_dir_with_reference() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(reference_db(), dir.path().join("lnrs.duckdb")).expect("copy reference db");
    dir
}

/// A config for tests: loopback, fast shutdown.
pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::new(data_dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_drain_delay = Duration::from_millis(50);
    c.shutdown_grace = Duration::from_secs(5);
    c.load_reference_data = false;
    c
}

/// A server running in this process.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), lnrs::server::ServeError>>>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a copy of the reference database.
    pub async fn start() -> TestServer {
        let tmp = data_dir_with_reference();
        let cfg = test_config(tmp.path());
        let mut s = Self::start_with(cfg).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server with a custom config (the caller owns the data dir).
    pub async fn start_with(cfg: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let data_dir = cfg.data_dir.clone();
        let task = tokio::spawn(lnrs::server::run(listener, cfg, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        wait_serving(&channel, "").await;
        TestServer {
            addr,
            channel,
            stop: Some(stop),
            task: Some(task),
            data_dir,
            _tmp: None,
        }
    }

    pub fn entity(&self) -> pb::entity_service_client::EntityServiceClient<Channel> {
        pb::entity_service_client::EntityServiceClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> pb::snapshot_service_client::SnapshotServiceClient<Channel> {
        pb::snapshot_service_client::SnapshotServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> pb::event_service_client::EventServiceClient<Channel> {
        pb::event_service_client::EventServiceClient::new(self.channel.clone())
    }

    /// Stops the server and waits for it to finish; returns the data dir guard.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server result");
        }
        self._tmp.take()
    }
}

/// Polls grpc.health.v1 until `service` is SERVING (bounded).
pub async fn wait_serving(channel: &Channel, service: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !is_serving(channel, service).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not become SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One grpc.health.v1 check: is `service` SERVING now?
pub async fn is_serving(channel: &Channel, service: &str) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await;
    r.is_ok_and(|r| {
        r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
}

/// The ErrorInfo reason of a status.
pub fn reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The ErrorInfo metadata value `key` of a status.
/// Asserts that `s` is the refusal `code` with ErrorInfo reason `want`.
#[track_caller]
pub fn assert_refused(s: &tonic::Status, code: tonic::Code, want: &str) {
    assert_eq!((s.code(), reason(s).as_str()), (code, want), "{s:?}");
}

pub fn error_meta(s: &tonic::Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt;
    s.get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// Row counts of every user table, read straight from a database file (server stopped).
pub fn table_counts(db: &Path) -> std::collections::BTreeMap<String, i64> {
    let conn = duckdb::Connection::open(db).expect("open db");
    lnrs::domain::tables::USER_TABLES
        .iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{}\"", t.name), [], |r| {
                    r.get(0)
                })
                .unwrap();
            (t.name.to_string(), n)
        })
        .collect()
}

/// Every event of the log after `after`, paging through ListEvents.
pub async fn events_after(channel: &Channel, mut after: u64) -> Vec<pb::Event> {
    let mut c = pb::event_service_client::EventServiceClient::new(channel.clone());
    let mut out = Vec::new();
    loop {
        let p = c
            .list_events(pb::ListEventsRequest {
                start_after_seq: after,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(p.events);
        if p.next_start_after_seq >= p.head_seq || p.next_start_after_seq == after {
            return out;
        }
        after = p.next_start_after_seq;
    }
}

/// Every item of a paged List RPC: `page(token)` asks for one page and returns its items and
/// `next_page_token` ("" on the last page).
pub async fn all_pages<T, F, Fut>(mut page: F) -> Vec<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(token).await;
        out.extend(items);
        if next.is_empty() {
            return out;
        }
        token = next;
    }
}

/// Why `log` (events, oldest first) is not dense from its first seq to its last, if it is not.
pub fn gap_in(log: &[pb::Event]) -> Option<String> {
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    seqs.windows(2)
        .any(|w| w[1] != w[0] + 1)
        .then(|| format!("event seqs are not dense: {seqs:?}"))
}

/// Every measure id, paging through ListMeasures.
pub async fn measure_ids(channel: &Channel) -> std::collections::BTreeSet<i32> {
    let c = pb::entity_service_client::EntityServiceClient::new(channel.clone());
    all_pages(|page_token| {
        let mut c = c.clone();
        async move {
            let p = c
                .list_measures(pb::ListMeasuresRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                p.measures.iter().map(|m| m.measure_id).collect(),
                p.next_page_token,
            )
        }
    })
    .await
    .into_iter()
    .collect()
}

/// The event with this seq, read through ListEvents.
pub async fn event_at(channel: &Channel, seq: u64) -> pb::Event {
    pb::event_service_client::EventServiceClient::new(channel.clone())
        .list_events(pb::ListEventsRequest {
            start_after_seq: seq - 1,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .next()
        .filter(|e| e.seq == seq)
        .unwrap_or_else(|| panic!("no event {seq} in the log"))
}
