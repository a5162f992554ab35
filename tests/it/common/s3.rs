//! A real S3 API server for the replica tests: moto in server mode (it enforces conditional
//! writes), from the venv `scripts/test-venv` makes (created on first use). In front of it a
//! TCP proxy the tests can cut — "S3 stopped" without losing moto's in-memory bucket — and a
//! minimal HTTP client (moto does not check signatures) to inspect and damage objects the way
//! an outsider would, without going through the code under test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The test venv (moto, and DuckDB 1.4 for tests/tools/original_db.py), made once per test
/// process.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-venv");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/test-venv");
        assert!(out.status.success(), "scripts/test-venv failed");
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(text.lines().last().expect("venv path").trim())
    })
    .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto S3 server on 127.0.0.1, behind a proxy that can be cut. Killed on drop.
pub struct S3 {
    moto: Child,
    moto_addr: SocketAddr,
    proxy: Proxy,
    pub bucket: String,
}

impl S3 {
    /// Starts moto and the proxy and creates `bucket`.
    pub fn start(bucket: &str) -> S3 {
        let port = free_port();
        let moto = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while request(moto_addr, "GET", "/", &[]).is_err() {
            assert!(Instant::now() < deadline, "moto did not start within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let s3 = S3 {
            moto,
            moto_addr,
            proxy: Proxy::start(moto_addr),
            bucket: bucket.to_string(),
        };
        let (code, _) = request(moto_addr, "PUT", &format!("/{bucket}"), &[]).unwrap();
        assert_eq!(code, 200, "create bucket");
        s3
    }

    /// The endpoint servers use (through the proxy).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Server flags for a replica at `prefix`, plus `extra`.
    pub fn flags(&self, prefix: &str) -> Vec<String> {
        vec![
            "--replica-url".into(),
            self.url(prefix),
            "--replica-endpoint".into(),
            self.endpoint(),
        ]
    }

    /// Environment for `lnrs` processes (moto accepts any credentials).
    pub fn env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Cuts (true) or restores (false) the network path to S3: open connections are closed
    /// and new ones refused while cut.
    pub fn set_down(&self, down: bool) {
        self.proxy.set_down(down);
    }

    /// Every key under `prefix/` (relative to it), sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{}?list-type=2&prefix={prefix}/", self.bucket);
            if let Some(t) = &token {
                path += &format!("&continuation-token={}", urlencode(t));
            }
            let (code, body) = request(self.moto_addr, "GET", &path, &[]).unwrap();
            assert_eq!(code, 200, "list");
            let body = String::from_utf8_lossy(&body).to_string();
            keys.extend(
                tags(&body, "Key")
                    .into_iter()
                    .map(|k| k[prefix.len() + 1..].to_string()),
            );
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// An object's bytes (`None`: absent).
    pub fn get(&self, prefix: &str, name: &str) -> Option<Vec<u8>> {
        let (code, body) = request(
            self.moto_addr,
            "GET",
            &format!("/{}/{prefix}/{name}", self.bucket),
            &[],
        )
        .unwrap();
        (code == 200).then_some(body)
    }

    /// Writes an object behind the service's back (damage, strays).
    pub fn put(&self, prefix: &str, name: &str, bytes: &[u8]) {
        let (code, _) = request(
            self.moto_addr,
            "PUT",
            &format!("/{}/{prefix}/{name}", self.bucket),
            bytes,
        )
        .unwrap();
        assert_eq!(code, 200, "put {name}");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

/// The contents of every `<tag>…</tag>` in `xml`.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.replace("&amp;", "&")))
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 request (the server closes the connection after answering).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // moto serves objects only to signed requests, but does not check the signature.
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((code, out[split + 4..].to_vec()))
}

/// A TCP forwarder that can be cut.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if d.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, down, open }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
        if down {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
