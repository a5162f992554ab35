//! What every scenario stands on: the work directory and its cached reference datasets, fresh
//! data directories, the real server run in this process on 127.0.0.1:0, gRPC channels to it,
//! the durable-full-copy baseline, process RSS and the machine description.

use std::error::Error;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lnrs::config::{Config, SnapshotPolicy};
use lnrs::pb;
use lnrs::pb::snapshot_service_client::SnapshotServiceClient;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// Errors of the benchmark: anything, with a message.
pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

/// An error with `msg`.
pub fn fail(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

/// Sources that decide the bytes of a reference dataset: a cached file is reused only while
/// they are unchanged (the same key the integration tests use).
const DATASET_SOURCES: [&str; 4] = [
    include_str!("../../refdata.rs"),
    include_str!("../../storage/mod.rs"),
    include_str!("../../storage/schema_v1.sql"),
    include_str!("../../storage/schema.rs"),
];

/// Short hex key of the dataset sources.
pub fn dataset_key() -> String {
    let key = blake3::hash(DATASET_SOURCES.concat().as_bytes());
    key.to_hex()[..16].to_string()
}

/// A reference database file at one scale.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    pub scale: u32,
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: Option<u64>,
    /// Seconds `refdata::write_to_path` took, when it ran in this run (None: cached).
    pub generated_secs: Option<f64>,
}

/// The benchmark's scratch directory.
#[derive(Debug, Clone)]
pub struct Work {
    pub root: PathBuf,
}

impl Work {
    pub fn new(root: PathBuf) -> Res<Work> {
        fs::create_dir_all(&root)
            .map_err(|e| fail(format!("creating work dir {}: {e}", root.display())))?;
        Ok(Work { root })
    }

    /// The reference dataset at `scale`, generated with `lnrs::refdata::write_to_path` unless a
    /// cached copy from the same sources exists.
    pub fn reference(&self, scale: u32) -> Res<Dataset> {
        let path = self
            .root
            .join(format!("reference-s{scale}-{}.duckdb", dataset_key()));
        let mut generated_secs = None;
        let mut rows = None;
        if !path.exists() {
            let tmp = self
                .root
                .join(format!("reference-s{scale}-building.duckdb"));
            remove_db(&tmp);
            eprintln!("generating the reference dataset at scale {scale} …");
            let started = Instant::now();
            let stats = lnrs::refdata::write_to_path(&tmp, scale)
                .map_err(|e| fail(format!("reference dataset at scale {scale}: {e}")))?;
            generated_secs = Some(started.elapsed().as_secs_f64());
            rows = Some(stats.total_rows());
            fs::rename(&tmp, &path)?;
        }
        let bytes = fs::metadata(&path)?.len();
        Ok(Dataset {
            scale,
            path,
            bytes,
            rows,
            generated_secs,
        })
    }

    /// An empty directory `name` under the work dir (previous contents removed).
    pub fn fresh_dir(&self, name: &str) -> Res<PathBuf> {
        let dir = self.root.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A fresh data directory holding a copy of `db` as its live database.
    pub fn data_dir_with(&self, name: &str, db: &Path) -> Res<PathBuf> {
        let dir = self.fresh_dir(name)?;
        fs::copy(db, dir.join("lnrs.duckdb"))?;
        Ok(dir)
    }
}

/// Removes a database file and its WAL side files, ignoring absence.
pub fn remove_db(path: &Path) {
    let _ = fs::remove_file(path);
    for p in lnrs::storage::wal_files(path) {
        let _ = fs::remove_file(p);
    }
}

/// The server configuration the benchmark runs with: production defaults except loopback,
/// no dataset loading (the data dir already has one), retention that never removes a
/// snapshot (storage is measured after 100 of them), and a quick shutdown.
pub fn config(data_dir: &Path, policy: SnapshotPolicy) -> Config {
    let mut c = Config::new(data_dir);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.load_reference_data = false;
    c.snapshot_policy = policy;
    c.retention_keep_last = 1_000_000;
    c.shutdown_drain_delay = Duration::from_millis(50);
    c.shutdown_grace = Duration::from_secs(30);
    c
}

/// A real server (`lnrs::server::run`) running in this process on 127.0.0.1:0.
pub struct BenchServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), lnrs::server::ServeError>>,
}

/// How long start-up (open, fingerprint scan, store open) may take at scale 10.
const START_TIMEOUT: Duration = Duration::from_secs(300);

impl BenchServer {
    /// Starts the server and returns once grpc.health.v1 says SERVING.
    pub async fn start(cfg: Config) -> Res<BenchServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lnrs::server::run(listener, cfg, async {
            let _ = stopped.await;
        }));
        let server = BenchServer {
            addr,
            stop: Some(stop),
            task,
        };
        let channel = server.channel().await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.task.is_finished() {
                return match server.task.await {
                    Ok(Ok(())) => Err(fail("the server stopped during start-up")),
                    Ok(Err(e)) => Err(fail(format!("the server failed to start: {e}"))),
                    Err(e) => Err(fail(format!("the server task failed: {e}"))),
                };
            }
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| {
                    r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                })
                .unwrap_or(false);
            if serving {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(fail("the server did not become SERVING in time"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new channel: one HTTP/2 connection of its own (lazily connected, so it also works
    /// while the server is still opening).
    pub async fn channel(&self) -> Res<Channel> {
        connect(&self.url()).await
    }

    /// Stops the server (graceful shutdown) and waits for it to close the database.
    pub async fn stop(mut self) -> Res<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(format!("server error: {e}"))),
            Err(e) => Err(fail(format!("server task failed: {e}"))),
        }
    }
}

/// A `lnrs serve`-equivalent child process (this binary, hidden `serve-child`): killable with
/// SIGKILL, and its memory is the server's alone (the in-process server shares the clients').
pub struct ChildServer {
    pub proc: tokio::process::Child,
    pub channel: Channel,
}

/// The child's parameters: `DATA_DIR [REPLICA_URL ENDPOINT MODE]`, space-separated.
const CHILD_ENV: &str = "LNRS_BENCH_SERVE_CHILD";

impl ChildServer {
    /// Starts a child serving `spec` (see [`CHILD_ENV`]) with `envs` set; returns once it listens.
    pub async fn start(
        spec: &str,
        envs: impl IntoIterator<Item = (&'static str, &'static str)>,
    ) -> Res<ChildServer> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let exe = std::env::current_exe()?;
        let mut proc = tokio::process::Command::new(exe)
            .arg("serve-child")
            .env(CHILD_ENV, spec)
            .envs(envs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = proc.stdout.take().ok_or_else(|| fail("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| fail("the child did not start"))??
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .ok_or_else(|| fail(format!("child said {line:?}")))?
            .to_string();
        let channel = connect(&format!("http://{addr}")).await?;
        Ok(ChildServer { proc, channel })
    }

    /// A `kB` field (`VmRSS:`, `VmHWM:`) of the child's /proc status.
    pub fn memory_kib(&self, field: &str) -> Option<u64> {
        let pid = self.proc.id()?;
        proc_status_kib(
            &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
            field,
        )
    }

    /// Resets the child's peak RSS (VmHWM) to its current RSS, so the next read of VmHWM is
    /// the peak of what ran in between (Linux `clear_refs` value 5).
    pub fn reset_peak_memory(&self) -> Res<()> {
        let pid = self.proc.id().ok_or_else(|| fail("the child has exited"))?;
        fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
        Ok(())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(mut self) -> Res<()> {
        self.proc.start_kill()?;
        let _ = self.proc.wait().await;
        Ok(())
    }
}

/// The child side: serves the data dir of [`CHILD_ENV`] (with its replica, when given) and
/// prints `listening <addr>`.
pub async fn serve_child_from_env() -> Res<()> {
    use lnrs::config::{ReplicaConfig, ReplicaMode};
    let spec = std::env::var(CHILD_ENV).map_err(|_| fail(format!("{CHILD_ENV} is not set")))?;
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (dir, replica) = match parts[..] {
        [dir] => (dir, None),
        [dir, url, endpoint, mode] => {
            let mut r = ReplicaConfig::new(url);
            r.endpoint = Some(endpoint.to_string());
            r.mode = match mode {
                "sync" => ReplicaMode::Sync,
                _ => ReplicaMode::Async,
            };
            r.segment_interval = Duration::from_millis(200);
            r.lease_ttl = Duration::from_secs(5);
            (dir, Some(r))
        }
        _ => return Err(fail(format!("bad {CHILD_ENV}: {spec}"))),
    };
    let mut cfg = config(Path::new(dir), SnapshotPolicy::Required);
    cfg.replica = replica;
    // Traces when the parent set OTEL_* (item 13), as `lnrs serve` does; kept until exit.
    let _telemetry =
        lnrs::cli::serve::init_logging_and_traces(lnrs::config::LogFormat::Json, "warn")
            .map_err(fail)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    lnrs::server::run(listener, cfg, std::future::pending())
        .await
        .map_err(|e| fail(e.to_string()))
}

/// A lazily connected channel to `url`: one HTTP/2 connection.
pub async fn connect(url: &str) -> Res<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// GetStatus of the snapshot subsystem.
pub async fn status(channel: &Channel) -> Res<pb::GetStatusResponse> {
    Ok(SnapshotServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner())
}

/// One durable full copy of `src` next to it: copy, fsync the copy, fsync the directory —
/// what copying the database file before a delete costs when done so that it survives a
/// crash. The copy is removed afterwards (not timed).
pub fn durable_copy(src: &Path, dir: &Path) -> Res<Duration> {
    let dst = dir.join("durable-copy.duckdb");
    let _ = fs::remove_file(&dst);
    let started = Instant::now();
    fs::copy(src, &dst)?;
    File::open(&dst)?.sync_all()?;
    File::open(dir)?.sync_all()?;
    let took = started.elapsed();
    fs::remove_file(&dst)?;
    Ok(took)
}

/// Resident set size of this process, in KiB (VmRSS of /proc/self/status).
pub fn rss_kib() -> Option<u64> {
    proc_status_kib(&fs::read_to_string("/proc/self/status").ok()?, "VmRSS:")
}

/// A `kB` field of a /proc status text.
pub fn proc_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The machine and build the numbers come from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub profile: String,
    /// File system of the work directory (where the databases and snapshots live).
    pub work_fs: String,
    pub duckdb: String,
}

impl Machine {
    pub fn describe(work: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = proc_status_kib(&meminfo, "MemTotal:")
            .map(|k| k as f64 / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| "unknown".into());
        let rustc = std::process::Command::new("rustc")
            .arg("-V")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown (rustc not on PATH)".into());
        // The dev profile is the project's one DuckDB build (see Cargo.toml).
        let profile = if cfg!(debug_assertions) {
            "dev (lnrs at opt-level 1, dependencies incl. DuckDB at 3, DuckDB with NDEBUG)"
        } else {
            "release"
        };
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            kernel,
            rustc,
            profile: profile.into(),
            work_fs: file_system_of(work),
            duckdb: String::new(),
        }
    }
}

/// "type (device)" of the mount holding `path`, from /proc/mounts (longest matching prefix).
fn file_system_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.len(), format!("{ty} ({dev} on {mnt})")))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, d)| d)
        .unwrap_or_else(|| "unknown".into())
}

/// Median time of BLAKE3 over the whole file at `path` (in memory, all cores): what hashing
/// a full capture costs on this machine, the allowance of the scale target.
pub fn hash_file_time(path: &Path, reps: usize) -> Res<Vec<Duration>> {
    let bytes = fs::read(path)?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        let mut h = blake3::Hasher::new();
        h.update_rayon(&bytes);
        std::hint::black_box(h.finalize());
        out.push(started.elapsed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let s = "Name:\tx\nVmRSS:\t  12345 kB\nVmHWM:\t1 kB\n";
        assert_eq!(proc_status_kib(s, "VmRSS:"), Some(12345));
        assert_eq!(proc_status_kib(s, "Nope:"), None);
        assert!(rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn describes_the_machine() {
        let m = Machine::describe(Path::new("/"));
        assert!(m.cores >= 1);
        assert!(m.memory_gib > 0.0);
        assert_ne!(m.work_fs, "unknown");
    }
}
