//! Item 4: fan-out to many WatchEvents subscribers.
//!
//! The subscribers run in a child process (this binary, hidden `fanout-child` subcommand), so
//! the server process's RSS before and after they open measures the server's memory per
//! subscriber alone — no client-side estimate to subtract. The child spreads the streams over
//! several channels (HTTP/2 connections), reads every stream concurrently in its own task
//! while the parent produces events, and records for each event the latency from its commit
//! time (`event.time`, stamped by the writer; same machine clock) to its receipt.
//!
//! Protocol on the child's stdio: it prints `READY <rss_kib>` once every stream has its
//! CaughtUp; the parent answers `END <first_seq> <last_seq>` after producing; the child
//! prints `RESULT <json>` once every stream reached `last_seq` (or a timeout passed).

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lnrs::config::SnapshotPolicy;
use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use lnrs::pb::event_service_client::EventServiceClient;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::{self, fail, rss_kib, BenchServer, Dataset, Res, Work};
use crate::prom;
use crate::stats::Summary;

/// How long opening the streams, or draining them at the end, may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);
/// Error messages kept in the result.
const MAX_ERRORS: usize = 5;

/// What the child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub streams: usize,
    pub streams_ready: usize,
    pub streams_failed: usize,
    pub errors: Vec<String>,
    /// Events expected per stream (last − first + 1) × streams.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Streams that had not reached the last seq when the child gave up.
    pub streams_incomplete: usize,
    pub latency: Summary,
    pub child_rss_kib: Option<u64>,
}

/// Item 4 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutResult {
    pub subscribers: usize,
    pub connections: usize,
    pub events: usize,
    /// Requested production rate (events/s) and the one achieved.
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub report: ChildReport,
    pub server_rss_before_kib: u64,
    pub server_rss_open_kib: u64,
    pub server_rss_after_events_kib: u64,
    /// (open − before) / subscribers.
    pub kib_per_subscriber_idle: f64,
    /// (after events − before) / subscribers: with the per-stream buffers in use.
    pub kib_per_subscriber_after_events: f64,
    /// Server-side `lnrs_event_subscriber_lag_events` over the run (events behind the head).
    pub lag_p99_events: Option<f64>,
    pub lag_max_bucket_events: Option<f64>,
}

/// The parent side: server, child, producer.
pub async fn run(
    work: &Work,
    dataset: &Dataset,
    subscribers: usize,
    connections: usize,
    events: usize,
    rate: f64,
) -> Res<FanoutResult> {
    let dir = work.data_dir_with("fanout", &dataset.path)?;
    // No capture ahead: the event producer's writes would otherwise leave the snapshot
    // engine's file-sized capture buffers (which the first delete allocates anyway) in the RSS
    // this scenario divides among the subscribers.
    let mut cfg = harness::config(&dir, SnapshotPolicy::Required);
    cfg.snapshot_capture_ahead = false;
    let server = BenchServer::start(cfg).await?;
    let result = drive(&server, subscribers, connections, events, rate).await;
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn create_habitat(client: &mut EntityServiceClient<Channel>, i: usize) -> Res<u64> {
    Ok(client
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: 0,
                habitat: format!("Benchmark habitat {i}"),
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .event_seq)
}

async fn drive(
    server: &BenchServer,
    subscribers: usize,
    connections: usize,
    events: usize,
    rate: f64,
) -> Res<FanoutResult> {
    let mut producer = EntityServiceClient::new(server.channel().await?);
    // Warm the server's paths (and this client) before the baseline RSS is read.
    create_habitat(&mut producer, 0).await?;
    let rss_before = rss_kib().unwrap_or(0);
    let lag_before = prom::scrape();

    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(CHILD_ARGS)
        .env(
            CHILD_ENV,
            format!("{} {subscribers} {connections}", server.url()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("starting the subscriber process: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| fail("child stdout"))?;
    let mut stdin = child.stdin.take().ok_or_else(|| fail("child stdin"))?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(PHASE_TIMEOUT, line_starting(&mut lines, "READY"))
        .await
        .map_err(|_| fail("subscribers did not open in time"))??;
    let rss_open = rss_kib().unwrap_or(0);

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut first, mut last) = (0u64, 0u64);
    for i in 1..=events {
        ticker.tick().await;
        let seq = create_habitat(&mut producer, i).await?;
        if first == 0 {
            first = seq;
        }
        last = seq;
    }
    let produced_in = started.elapsed();
    let rss_after = rss_kib().unwrap_or(0);

    stdin
        .write_all(format!("END {first} {last}\n").as_bytes())
        .await?;
    stdin.flush().await?;
    let line = tokio::time::timeout(
        PHASE_TIMEOUT + Duration::from_secs(30),
        line_starting(&mut lines, "RESULT "),
    )
    .await
    .map_err(|_| fail("the subscriber process did not report"))??;
    let report: ChildReport = serde_json::from_str(&line["RESULT ".len()..])?;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    let lag = prom::scrape().since(&lag_before, prom::LAG);
    let per = |kib: u64| kib.saturating_sub(rss_before) as f64 / subscribers.max(1) as f64;
    Ok(FanoutResult {
        subscribers,
        connections,
        events,
        target_rate: rate,
        achieved_rate: events as f64 / produced_in.as_secs_f64(),
        report,
        server_rss_before_kib: rss_before,
        server_rss_open_kib: rss_open,
        server_rss_after_events_kib: rss_after,
        kib_per_subscriber_idle: per(rss_open),
        kib_per_subscriber_after_events: per(rss_after),
        lag_p99_events: lag.quantile(0.99),
        lag_max_bucket_events: lag
            .buckets
            .iter()
            .rev()
            .find(|(le, c)| le.is_finite() && *c < lag.count)
            .map(|(le, _)| *le),
    })
}

/// The next line of the child's stdout that starts with `prefix` (other lines are skipped).
async fn line_starting(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> Res<String> {
    loop {
        match lines.next_line().await? {
            Some(l) => {
                if l.starts_with(prefix) {
                    return Ok(l);
                }
            }
            None => {
                return Err(fail(format!(
                    "the subscriber process exited before `{prefix}`"
                )))
            }
        }
    }
}

/// What one stream saw.
#[derive(Debug, Default)]
struct StreamLog {
    /// Commit → receipt, microseconds, of events with seq in [first, last].
    latencies_us: Vec<u32>,
    /// (seq, latency) of every event, filtered to the range at the end.
    seqs: Vec<u64>,
    failed: Option<String>,
    ready: bool,
}

/// Environment variable carrying the child's parameters: "<server url> <subscribers>
/// <connections>".
pub const CHILD_ENV: &str = "LNRS_BENCH_FANOUT_CHILD";

/// Arguments that make this executable (`lnrs-bench`) run [`child_from_env`]: its hidden
/// subcommand. The end-to-end test (tests/it/bench.rs) runs the real binary, so this is the
/// only way in.
const CHILD_ARGS: &[&str] = &["fanout-child"];

/// The child side, parameters from [`CHILD_ENV`]: opens the streams, reports READY, reads
/// until told where the end is, reports RESULT.
pub async fn child_from_env() -> Res<()> {
    let spec = std::env::var(CHILD_ENV).map_err(|_| fail(format!("{CHILD_ENV} is not set")))?;
    let mut parts = spec.split_whitespace();
    let (Some(url), Some(Ok(subscribers)), Some(Ok(connections))) = (
        parts.next(),
        parts.next().map(str::parse::<usize>),
        parts.next().map(str::parse::<usize>),
    ) else {
        return Err(fail(format!("bad {CHILD_ENV}: {spec}")));
    };
    child(url.to_string(), subscribers, connections).await
}

async fn child(url: String, subscribers: usize, connections: usize) -> Res<()> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(harness::connect(&url).await?);
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let (end_tx, end_rx) = watch::channel(u64::MAX);
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let channel = channels[i % channels.len()].clone();
        let ready = ready.clone();
        let end_rx = end_rx.clone();
        tasks.push(tokio::spawn(read_stream(
            channel,
            ready,
            end_rx,
            stop.clone(),
        )));
    }
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while ready.load(Ordering::Acquire) < subscribers && Instant::now() < deadline {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "READY {}",
        rss_kib().map_or_else(|| "?".into(), |k| k.to_string())
    );

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await?.unwrap_or_default();
    let mut parts = line.split_whitespace().skip(1).map(str::parse::<u64>);
    let (Some(Ok(first)), Some(Ok(last))) = (parts.next(), parts.next()) else {
        return Err(fail(format!("bad END line: {line}")));
    };
    let _ = end_tx.send(last);
    // A stream that lost an event never reaches `last`: give up on it after a while and
    // report what it saw.
    let give_up = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(PHASE_TIMEOUT).await;
        give_up.cancel();
    });
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.unwrap_or_else(|e| StreamLog {
            failed: Some(format!("task: {e}")),
            ..Default::default()
        }));
    }
    let report = summarise(&logs, first, last, subscribers);
    let rss = rss_kib();
    println!(
        "RESULT {}",
        serde_json::to_string(&ChildReport {
            child_rss_kib: rss,
            ..report
        })?
    );
    Ok(())
}

fn summarise(logs: &[StreamLog], first: u64, last: u64, streams: usize) -> ChildReport {
    let per_stream = last.saturating_sub(first) + 1;
    let mut r = ChildReport {
        streams,
        expected: per_stream * streams as u64,
        ..Default::default()
    };
    let mut lat_ms: Vec<f64> = Vec::new();
    for log in logs {
        r.streams_ready += usize::from(log.ready);
        if let Some(e) = &log.failed {
            r.streams_failed += 1;
            if r.errors.len() < MAX_ERRORS {
                r.errors.push(e.clone());
            }
        }
        let mut prev = None;
        let mut distinct = 0u64;
        for (&seq, &lat) in log.seqs.iter().zip(&log.latencies_us) {
            if seq < first || seq > last {
                continue;
            }
            if prev.is_some_and(|p| seq <= p) {
                r.duplicates += 1;
                continue;
            }
            prev = Some(seq);
            distinct += 1;
            lat_ms.push(f64::from(lat) / 1e3);
        }
        r.received += distinct;
        if prev.is_none_or(|p| p < last) {
            r.streams_incomplete += 1;
        }
    }
    r.lost = r.expected.saturating_sub(r.received);
    r.latency = Summary::of_ms(&lat_ms);
    r
}

async fn read_stream(
    channel: Channel,
    ready: Arc<AtomicUsize>,
    mut end: watch::Receiver<u64>,
    stop: CancellationToken,
) -> StreamLog {
    use pb::watch_events_response::Item;
    let mut log = StreamLog::default();
    let mut client = EventServiceClient::new(channel);
    let request = pb::WatchEventsRequest {
        start_after_seq: None,
        heartbeat_interval: Some(prost_types::Duration {
            seconds: 300,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut stream = match client.watch_events(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            log.failed = Some(format!("open: {:?} {}", s.code(), s.message()));
            ready.fetch_add(1, Ordering::AcqRel);
            return log;
        }
    };
    let mut last_seen = 0u64;
    loop {
        if last_seen >= *end.borrow() {
            return log;
        }
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(m)) => match m.item {
                    Some(Item::CaughtUp(_)) => {
                        log.ready = true;
                        ready.fetch_add(1, Ordering::AcqRel);
                    }
                    Some(Item::Event(e)) => {
                        let now = Utc::now();
                        let sent = e
                            .time
                            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32));
                        let lat = sent
                            .and_then(|s| (now - s).num_microseconds())
                            .unwrap_or(0)
                            .clamp(0, i64::from(u32::MAX));
                        log.seqs.push(e.seq);
                        log.latencies_us.push(lat as u32);
                        last_seen = e.seq;
                    }
                    _ => {}
                },
                Ok(None) => {
                    log.failed = Some("stream ended".into());
                    return log;
                }
                Err(s) => {
                    log.failed = Some(format!("{:?} {}", s.code(), s.message()));
                    if !log.ready {
                        ready.fetch_add(1, Ordering::AcqRel);
                    }
                    return log;
                }
            },
            changed = end.changed() => {
                if changed.is_err() {
                    return log;
                }
            }
            _ = stop.cancelled() => return log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_and_duplicate_events() {
        let full = StreamLog {
            seqs: vec![9, 10, 11, 12],
            latencies_us: vec![1, 1000, 2000, 3000],
            ready: true,
            ..Default::default()
        };
        let gappy = StreamLog {
            seqs: vec![10, 10, 12],
            latencies_us: vec![5000, 5000, 5000],
            ready: true,
            ..Default::default()
        };
        let r = summarise(&[full, gappy], 10, 12, 2);
        assert_eq!(r.expected, 6);
        assert_eq!(r.received, 5);
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.streams_incomplete, 0);
        assert_eq!(r.latency.n, 5);
        assert_eq!(r.latency.max_ms, 5.0);
    }
}
