//! The NATS JetStream sink of the event log against a real `nats-server` with JetStream
//! (Debian's package, installed by `scripts/test-nats` when missing), started on 127.0.0.1 by
//! the test: the broker killed and restarted midway and the service killed with -9 once, the
//! stream must hold every seq exactly once, in order, each message the `lnrs.v1.Event`
//! ListEvents returns; while the broker is down, writes go on and GetStatus says so; and over
//! `tls://` to a broker that requires a user and password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use lnrs::pb;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::common::{events_after, ops, ChildServer};

const STREAM: &str = "LNRS_EVENTS";
const PREFIX: &str = "lnrs.events";

/// The nats-server binary, installed by scripts/test-nats if missing (once per test process).
fn nats_server() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-nats");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/test-nats");
        assert!(out.status.success(), "scripts/test-nats failed");
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(text.lines().last().expect("nats-server path").trim())
    })
    .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server with JetStream on 127.0.0.1, its store in a directory that outlives it (so a
/// restart on the same port and store is the same broker). Killed on drop.
struct Broker {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    secure: Option<Secure>,
}

/// A broker that speaks only TLS (its certificate from the test CA) and requires a user and
/// password.
struct Secure {
    pki: crate::production::Pki,
    user: &'static str,
    pass: &'static str,
}

impl Broker {
    /// A broker with its port and store chosen, not started yet.
    fn new() -> Broker {
        Broker {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
            secure: None,
        }
    }

    async fn start() -> Broker {
        let mut b = Broker::new();
        b.restart().await;
        b
    }

    async fn start_secure(secure: Secure) -> Broker {
        let mut b = Broker::new();
        b.secure = Some(secure);
        b.restart().await;
        b
    }

    fn url(&self) -> String {
        match &self.secure {
            None => format!("nats://127.0.0.1:{}", self.port),
            Some(_) => format!("tls://127.0.0.1:{}", self.port),
        }
    }

    /// The TLS and credential flags of a secure broker.
    fn secure_args(&self) -> Vec<std::ffi::OsString> {
        let Some(s) = &self.secure else {
            return Vec::new();
        };
        vec![
            "--tls".into(),
            "--tlscert".into(),
            s.pki.file("server.pem").into(),
            "--tlskey".into(),
            s.pki.file("server.key").into(),
            "--user".into(),
            s.user.into(),
            "--pass".into(),
            s.pass.into(),
        ]
    }

    /// Starts the server (again) and waits until JetStream answers.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(nats_server())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(self.secure_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.jetstream_answers().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server: JetStream did not answer within 30s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether JetStream answers its account-info request (with no error in the answer).
    async fn jetstream_answers(&self) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let request = client.request("$JS.API.INFO", "".into());
        match tokio::time::timeout(Duration::from_secs(2), request).await {
            Ok(Ok(answer)) => {
                let body: serde_json::Value =
                    serde_json::from_slice(&answer.payload).unwrap_or_default();
                body.get("error").is_none() && body.get("type").is_some()
            }
            _ => false,
        }
    }

    /// Kills the server (SIGKILL) and reaps it.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let options = match &self.secure {
            None => async_nats::ConnectOptions::new(),
            Some(s) => {
                async_nats::ConnectOptions::with_user_and_password(s.user.into(), s.pass.into())
                    .add_root_certificates(s.pki.file("ca.pem"))
                    .require_tls(true)
            }
        };
        options
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url())
            .await
    }

    /// Every message of the stream, in stream order, read with a pull consumer.
    async fn read_stream(&self) -> Vec<jetstream::Message> {
        let js = jetstream::new(self.client().await.expect("connect to nats-server"));
        let stream = js.get_stream(STREAM).await.expect("the sink's stream");
        let total = stream.get_info().await.unwrap().state.messages as usize;
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("the consumer delivers the stream within 10s")
                .expect("the consumer's stream ended")
                .expect("a message");
            out.push(m);
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

async fn start_service(data_dir: &Path, nats_url: &str) -> ChildServer {
    ChildServer::start(
        data_dir,
        "127.0.0.1:0",
        &["--events-nats-url", nats_url],
        &[],
    )
    .await
}

async fn sink_status(ch: &Channel) -> (u64, pb::EventSinkStatus) {
    let s = ops::status(ch).await;
    (
        s.event_head_seq,
        s.event_sink.expect("event_sink in GetStatus"),
    )
}

/// Waits until the sink has published everything committed.
async fn wait_published(ch: &Channel, within: Duration) -> u64 {
    let t = Instant::now();
    loop {
        let (head, s) = sink_status(ch).await;
        if s.connected && s.published_seq == head && s.lag_events == 0 && s.error.is_empty() {
            return head;
        }
        assert!(
            t.elapsed() < within,
            "the sink did not catch up within {within:?}: head {head}, {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Habitats created so far (and not deleted), to update and delete.
#[derive(Default)]
struct Pool {
    live: Vec<i32>,
    n: usize,
}

/// `n` changes in batches of 25 concurrent requests: mostly creates, some updates, one delete
/// in ten (with its pre-delete snapshot). Each must succeed (the sink never holds writes up);
/// the first failure is the error.
async fn changes(ch: &Channel, pool: &mut Pool, n: usize) -> Result<(), String> {
    const BATCH: usize = 25;
    let mut done = 0;
    while done < n {
        let size = BATCH.min(n - done);
        let mut tasks = Vec::with_capacity(size);
        let mut targets = pool.live.clone();
        for i in 0..size {
            let k = pool.n + i;
            let ch = ch.clone();
            let target = (k % 10 >= 6 && !targets.is_empty()).then(|| targets.remove(0));
            let delete = k % 10 == 9 && target.is_some();
            if delete {
                pool.live.retain(|id| Some(*id) != target);
            }
            tasks.push(tokio::spawn(async move {
                let mut c = ops::entity(&ch);
                match target {
                    Some(id) if delete => {
                        c.delete_habitat(pb::DeleteHabitatRequest {
                            habitat_id: id,
                            request_id: String::new(),
                        })
                        .await
                        .map_err(|e| format!("delete {id}: {e:?}"))?;
                        Ok(None)
                    }
                    Some(id) => {
                        c.update_habitat(pb::UpdateHabitatRequest {
                            habitat: Some(pb::Habitat {
                                habitat_id: id,
                                habitat: format!("nats change {k}"),
                            }),
                            update_mask: None,
                            request_id: String::new(),
                        })
                        .await
                        .map_err(|e| format!("update {id}: {e:?}"))?;
                        Ok(None)
                    }
                    None => ops::habitat(&ch, &format!("nats habitat {k}"))
                        .await
                        .map(|(id, _)| Some(id))
                        .map_err(|e| format!("create: {e:?}")),
                }
            }));
        }
        for t in tasks {
            if let Some(id) = t.await.unwrap()? {
                pool.live.push(id);
            }
        }
        pool.n += size;
        done += size;
    }
    Ok(())
}

/// Fails the test with `why` and the server's stderr.
fn fail(server: ChildServer, why: String) -> ! {
    panic!("{why}\n--- server stderr:\n{}", server.kill())
}

fn header<'a>(m: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_stream_once_in_order_through_a_broker_restart_and_a_kill_9() {
    let t0 = Instant::now();
    let mut broker = Broker::start().await;
    let tmp = crate::common::data_dir_with_reference();
    let mut server = start_service(tmp.path(), &broker.url()).await;
    let mut pool = Pool::default();

    if let Err(e) = changes(&server.channel, &mut pool, 300).await {
        fail(server, e);
    }
    // The broker dies while the service runs: writes go on; it comes back (same port and
    // store) in the middle of the next burst, and the sink reconnects and resumes.
    broker.kill();
    if let Err(e) = changes(&server.channel, &mut pool, 150).await {
        fail(server, e);
    }
    let (made, ()) = tokio::join!(changes(&server.channel, &mut pool, 150), broker.restart());
    if let Err(e) = made {
        fail(server, e);
    }
    // A second outage, and the service is killed with -9 during it, far behind: the restarted
    // service must resume from what the stream holds, not from anything it remembered.
    broker.kill();
    if let Err(e) = changes(&server.channel, &mut pool, 200).await {
        fail(server, e);
    }
    let (head_at_kill, at_kill) = sink_status(&server.channel).await;
    assert!(
        at_kill.published_seq + 200 <= head_at_kill,
        "the sink is behind at the kill: head {head_at_kill}, {at_kill:?}"
    );
    let stderr = server.kill();
    assert!(!stderr.contains("panicked"), "{stderr}");
    broker.restart().await;
    server = start_service(tmp.path(), &broker.url()).await;
    if let Err(e) = changes(&server.channel, &mut pool, 200).await {
        fail(server, e);
    }
    let head = wait_published(&server.channel, Duration::from_secs(60)).await;
    eprintln!(
        "1000 changes, head {head} (at the kill: head {head_at_kill}, published {}); took {:?}",
        at_kill.published_seq,
        t0.elapsed()
    );
    assert!(head >= 1000, "1000 changes, 1000 events at least: {head}");

    // The stream first, then the log (which holds at least what the stream holds: background
    // work such as retention may add events after the wait).
    let messages = broker.read_stream().await;
    let log = events_after(&server.channel, 0).await;
    assert_eq!(
        log.first().map(|e| e.seq),
        Some(1),
        "the whole log is retained"
    );
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| header(m, "Lnrs-Seq").unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    if seqs != expected || (seqs.len() as u64) < head || seqs.len() > log.len() {
        let dups = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        let gaps = seqs.windows(2).filter(|w| w[1] > w[0] + 1).count();
        panic!(
            "the stream holds {} messages, {dups} out of order or duplicated, {gaps} gaps; \
             want 1..=N with {head} <= N <= {}",
            seqs.len(),
            log.len()
        );
    }
    for (m, want) in messages.iter().zip(&log) {
        let got = pb::Event::decode(m.payload.clone()).expect("payload is an lnrs.v1.Event");
        assert_eq!(
            &got, want,
            "seq {}: the stream's event = ListEvents'",
            want.seq
        );
        let kind = pb::EventKind::try_from(want.kind).unwrap();
        let kind = kind
            .as_str_name()
            .trim_start_matches("EVENT_KIND_")
            .to_lowercase();
        assert_eq!(m.subject.as_str(), format!("{PREFIX}.{kind}"));
        assert_eq!(
            header(m, "Nats-Msg-Id"),
            Some(want.seq.to_string().as_str())
        );
        assert!(header(m, "Content-Type")
            .unwrap()
            .starts_with("application/protobuf"));
    }
    let stderr = ops::stop(server).await;
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_writes_go_on_and_status_shows_the_lag() {
    let mut broker = Broker::start().await;
    let tmp = crate::common::data_dir_with_reference();
    // Credentials in the URL (a server without auth ignores them) must never be shown.
    let url = format!("nats://sink:s3cret@127.0.0.1:{}", broker.port);
    let server = start_service(tmp.path(), &url).await;
    let ch = server.channel.clone();
    ops::habitat(&ch, "before the outage").await.unwrap();
    let published = wait_published(&ch, Duration::from_secs(30)).await;
    let (_, s) = sink_status(&ch).await;
    assert_eq!(s.url, format!("nats://***@127.0.0.1:{}", broker.port));
    assert_eq!(
        (s.stream.as_str(), s.subject_prefix.as_str()),
        (STREAM, PREFIX)
    );
    assert!(!s.gap);

    broker.kill();
    for i in 0..5 {
        ops::habitat(&ch, &format!("during the outage {i}"))
            .await
            .expect("writes do not wait for the broker");
    }
    let t = Instant::now();
    let down = loop {
        let (head, s) = sink_status(&ch).await;
        if !s.connected && !s.error.is_empty() {
            assert_eq!(s.published_seq, published, "nothing published while down");
            assert_eq!(s.lag_events, head - published);
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "status: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(down.lag_events >= 5, "{down:?}");
    assert!(!down.error.contains("s3cret"), "{down:?}");

    broker.restart().await;
    let head = wait_published(&ch, Duration::from_secs(30)).await;
    assert_eq!(head, published + 5);
    let seqs: Vec<String> = broker
        .read_stream()
        .await
        .iter()
        .map(|m| header(m, "Lnrs-Seq").unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=head).map(|s| s.to_string()).collect();
    assert_eq!(seqs, want);
    ops::stop(server).await;
}

/// Events that event retention removed before the sink could publish them (the broker was
/// down the whole time) are reported as a gap — status, with the range — and the sink goes on
/// from the oldest event still in the log: the stream starts there, dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_compacted_before_they_were_published_are_reported_as_a_gap() {
    let mut broker = Broker::new();
    let tmp = crate::common::data_dir_with_reference();
    let server = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &[
            "--events-nats-url",
            &broker.url(),
            "--event-retention-keep-last",
            "5",
            "--maintenance-interval",
            "20ms",
        ],
        &[],
    )
    .await;
    let ch = server.channel.clone();
    for i in 0..20 {
        ops::habitat(&ch, &format!("never published {i}"))
            .await
            .unwrap();
    }
    let head = ops::status(&ch).await.event_head_seq;
    let t = Instant::now();
    let first = loop {
        let first = ops::status(&ch).await.event_first_seq;
        if first > head - 5 {
            break first;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no compaction");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    broker.restart().await;
    let published = wait_published(&ch, Duration::from_secs(30)).await;
    let (_, s) = sink_status(&ch).await;
    assert!(s.gap, "{s:?}");
    assert_eq!(
        (s.gap_first_seq, s.skipped_events),
        (1, s.gap_last_seq),
        "{s:?}"
    );
    assert!(
        s.gap_last_seq + 1 >= first,
        "{s:?} (first retained {first})"
    );
    let seqs: Vec<u64> = broker
        .read_stream()
        .await
        .iter()
        .map(|m| header(m, "Lnrs-Seq").unwrap().parse().unwrap())
        .collect();
    let want: Vec<u64> = (s.gap_last_seq + 1..=published).collect();
    assert_eq!(seqs, want, "the stream starts after the gap, dense");
    ops::stop(server).await;
}

/// Over `tls://` to a broker that requires a user and password, the broker's CA trusted the
/// standard way (`SSL_CERT_FILE`, read by the platform verifier the NATS client uses). A wrong
/// password: writes go on, the status shows the refusal and never the password. The right one,
/// on the same data: every event arrives, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_publishes_over_tls_to_a_broker_that_requires_credentials() {
    let secure = Secure {
        pki: crate::production::pki(),
        user: "sink",
        pass: "s3cret-pass",
    };
    let ca = secure.pki.file("ca.pem");
    let ca = ca.to_str().unwrap();
    let broker = Broker::start_secure(secure).await;
    let url = |pass: &str| format!("tls://sink:{pass}@127.0.0.1:{}", broker.port);
    let tmp = crate::common::data_dir_with_reference();
    let dir = tmp.path();
    let start = |url: String| async move {
        ChildServer::start(
            dir,
            "127.0.0.1:0",
            &["--events-nats-url", &url],
            &[("SSL_CERT_FILE", ca)],
        )
        .await
    };

    let refused = start(url("wrong-pass")).await;
    ops::habitat(&refused.channel, "while refused")
        .await
        .expect("writes do not wait for the broker");
    let t = Instant::now();
    let status = loop {
        let (_, s) = sink_status(&refused.channel).await;
        if !s.error.is_empty() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no error: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.connected, "{status:?}");
    assert_eq!(status.published_seq, 0, "{status:?}");
    assert!(
        status.error.to_lowercase().contains("auth"),
        "the refusal is named: {status:?}"
    );
    assert!(!status.error.contains("wrong-pass"), "{status:?}");
    assert!(!status.url.contains("wrong-pass"), "{status:?}");
    ops::stop(refused).await;

    let server = start(url("s3cret-pass")).await;
    ops::habitat(&server.channel, "over TLS").await.unwrap();
    let head = wait_published(&server.channel, Duration::from_secs(30)).await;
    let stored = broker.read_stream().await;
    let seqs: Vec<u64> = stored
        .iter()
        .map(|m| header(m, "Lnrs-Seq").unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    let last = pb::Event::decode(stored.last().unwrap().payload.clone()).unwrap();
    assert_eq!(last.seq, head);
    ops::stop(server).await;
}
