//! The real `lnrs serve` binary as a child process: started on a data directory, ready when
//! health says SERVING, signalled, and waited for with its stderr collected.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// The `lnrs` binary children run: `LNRS_TEST_BIN` when set (a copy of this checkout's build,
/// where several checkouts share one target directory and its `debug/lnrs`), else Cargo's.
pub fn lnrs_binary() -> std::path::PathBuf {
    std::env::var_os("LNRS_TEST_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_lnrs").into())
}

/// A running `lnrs serve` child. Killed if dropped while still running.
pub struct ChildServer {
    child: std::process::Child,
    /// "127.0.0.1:PORT" as the server printed it.
    pub addr: String,
    pub channel: Channel,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ChildServer {
    /// Starts `lnrs serve --listen <listen> --data-dir <dir> <extra…>` with a clean `LNRS_*`
    /// environment plus `env`, reads the address from its first stdout line and waits for
    /// SERVING.
    pub async fn start(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildServer {
        Self::try_start(data_dir, listen, extra, env)
            .await
            .unwrap_or_else(|f| panic!("{f}"))
    }

    /// [`start`](Self::start), but a server that exits (or never says SERVING within a minute)
    /// is an `Err` with its exit status and stderr instead of a panic.
    pub async fn try_start(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ChildServer, StartFailure> {
        let mut cmd = Command::new(lnrs_binary());
        cmd.args(["serve", "--listen", listen])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LNRS_")) {
            cmd.env_remove(k);
        }
        cmd.env("LNRS_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn lnrs serve");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        })
        .await
        .unwrap();
        let Some(addr) = line.trim().strip_prefix("lnrs listening on ") else {
            let why = format!("unexpected first line: {line:?}");
            return Err(StartFailure::collect(child, stderr, why).await);
        };
        let addr = addr.to_string();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if super::is_serving(&channel, "").await {
                break;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                let why = "exited before it was SERVING".to_string();
                return Err(StartFailure::collect(child, stderr, why).await);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let why = "not SERVING within 60 s".to_string();
                return Err(StartFailure::collect(child, stderr, why).await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ChildServer {
            child,
            addr,
            channel,
            stderr: Some(stderr),
        })
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and reaps it; returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }

    /// Sends a signal (SIGTERM, SIGKILL, …).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }

    /// Waits (bounded) for the process to exit: its status, how long it took, its stderr.
    pub async fn exit(mut self, within: Duration) -> (ExitStatus, Duration, String) {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let waited = t.elapsed();
                let stderr = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                return (st, waited, stderr);
            }
            assert!(
                t.elapsed() < within,
                "the server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A server that did not start: why, its exit status and its stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub why: String,
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl StartFailure {
    async fn collect(
        mut child: std::process::Child,
        stderr: std::thread::JoinHandle<String>,
        why: String,
    ) -> StartFailure {
        let status = tokio::task::spawn_blocking(move || child.wait().ok())
            .await
            .unwrap();
        let stderr = tokio::task::spawn_blocking(move || stderr.join().unwrap_or_default())
            .await
            .unwrap();
        StartFailure {
            why,
            status,
            stderr,
        }
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server did not start ({}; exit {:?}); stderr:\n{}",
            self.why, self.status, self.stderr
        )
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
