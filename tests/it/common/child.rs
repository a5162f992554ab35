//! The real `lnrs serve` binary as a child process: started on a data directory, ready when
//! health says SERVING, signalled, and waited for with its stderr collected.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

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
        match Self::try_start(data_dir, listen, extra, env).await {
            Ok(s) => s,
            Err((status, stderr)) => {
                panic!("lnrs serve exited ({status}) before serving: {stderr}")
            }
        }
    }

    /// [`start`](Self::start), or the exit status and stderr of a server that exited before
    /// it was SERVING (it refused to start, or crashed while starting).
    pub async fn try_start(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ChildServer, (ExitStatus, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnrs"));
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
            let status = child.wait().unwrap();
            return Err((status, stderr.join().unwrap_or_default()));
        };
        let addr = addr.to_string();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut server = ChildServer {
            child,
            addr,
            channel,
            stderr: Some(stderr),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                let stderr = server
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                return Err((status, stderr));
            }
            if super::ops::health(&server.channel, "").await == 1 {
                return Ok(server);
            }
            assert!(Instant::now() < deadline, "server did not become SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
