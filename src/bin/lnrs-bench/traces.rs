//! Item 13: what distributed tracing costs. Two child servers on copies of one dataset: one
//! exports every span over OTLP/gRPC (configured only by `OTEL_*`, as in production) to a
//! collector in this process that counts them, the other has no exporter. In interleaved
//! rounds, each server gets a GetMeasure window (the read benchmark's loop) and a series of
//! traced deletes (each of a habitat created just before, sent with a `traceparent`);
//! medians of the rounds, ratios on ÷ off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::harness::{fail, ChildServer, Dataset, Res, Work};
use crate::stats::{median, Summary};

/// One server's numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TracingSide {
    /// Median over rounds.
    pub get_requests_per_sec: f64,
    pub get_per_round: Vec<f64>,
    /// Client wall time of the deletes, all rounds.
    pub delete: Summary,
    pub errors: u64,
}

/// Item 13 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TracingResult {
    pub rounds: usize,
    pub concurrency: usize,
    pub window_secs: f64,
    pub deletes_per_round: usize,
    pub exporter_off: TracingSide,
    pub exporter_on: TracingSide,
    /// Get req/s on ÷ off.
    pub get_ratio: f64,
    /// Delete p50 on ÷ off.
    pub delete_p50_ratio: f64,
    /// Spans the collector received from the server with the exporter on.
    pub spans_exported: u64,
}

/// `n` deletes, each of a habitat created just before (not timed), with a `traceparent`.
async fn traced_deletes(channel: &Channel, n: usize, round: usize) -> Res<(Vec<Duration>, u64)> {
    let mut client = EntityServiceClient::new(channel.clone());
    let mut times = Vec::with_capacity(n);
    let mut errors = 0;
    for i in 0..n {
        let h = client
            .create_habitat(pb::CreateHabitatRequest {
                habitat: Some(pb::Habitat {
                    habitat: format!("traced r{round} {i}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .habitat
            .ok_or_else(|| fail("no habitat"))?;
        let mut req = tonic::Request::new(pb::DeleteHabitatRequest {
            habitat_id: h.habitat_id,
            ..Default::default()
        });
        let traceparent = format!("00-{:032x}-{:016x}-01", (round * n + i + 1) as u128, i + 1);
        req.metadata_mut().insert(
            "traceparent",
            traceparent.parse().map_err(|_| fail("traceparent"))?,
        );
        let t = Instant::now();
        match client.delete_habitat(req).await {
            Ok(_) => times.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    Ok((times, errors))
}

/// Runs item 13 on `dataset`.
pub async fn run(
    work: &Work,
    dataset: &Dataset,
    concurrency: usize,
    window: Duration,
    rounds: usize,
    deletes: usize,
) -> Res<TracingResult> {
    let spans = Arc::new(AtomicU64::new(0));
    let counter = spans.clone();
    let endpoint = crate::otlp::serve(move |s| {
        counter.fetch_add(s.len() as u64, Ordering::Relaxed);
    })
    .await?;
    let endpoint: &'static str = Box::leak(endpoint.into_boxed_str());
    let off_dir = work.data_dir_with("tracing-off", &dataset.path)?;
    let on_dir = work.data_dir_with("tracing-on", &dataset.path)?;
    let off = ChildServer::start(&off_dir.display().to_string(), []).await?;
    let on = ChildServer::start(
        &on_dir.display().to_string(),
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_SERVICE_NAME", "lnrs-bench"),
        ],
    )
    .await?;
    let servers = [&off, &on];
    let mut channels: [Vec<Channel>; 2] = Default::default();
    for (k, s) in servers.iter().enumerate() {
        for _ in 0..crate::reads::CONNECTIONS {
            channels[k].push(s.channel.clone());
        }
    }
    let ids = Arc::new(crate::reads::measure_ids(&off.channel).await?);
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut times: [Vec<Duration>; 2] = Default::default();
    let mut errors = [0u64; 2];
    for round in 0..rounds {
        for k in [0, 1] {
            let (rate, errs) =
                crate::reads::get_rate(&channels[k], &ids, concurrency, window).await?;
            rates[k].push(rate);
            let (t, e) = traced_deletes(&servers[k].channel, deletes, round).await?;
            times[k].extend(t);
            errors[k] += errs + e;
        }
    }
    let side = |k: usize| TracingSide {
        get_requests_per_sec: median(&rates[k]),
        get_per_round: rates[k].clone(),
        delete: Summary::of(&times[k]),
        errors: errors[k],
    };
    let (exporter_off, exporter_on) = (side(0), side(1));
    // The exporter sends in batches (OTEL_BSP_SCHEDULE_DELAY, 5 s by default): wait for the
    // first, which shows the spans really left the server.
    let waited = Instant::now();
    while spans.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    off.kill().await?;
    on.kill().await?;
    for d in [off_dir, on_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(TracingResult {
        rounds,
        concurrency,
        window_secs: window.as_secs_f64(),
        deletes_per_round: deletes,
        get_ratio: exporter_on.get_requests_per_sec
            / exporter_off.get_requests_per_sec.max(f64::MIN_POSITIVE),
        delete_p50_ratio: exporter_on.delete.p50_ms / exporter_off.delete.p50_ms.max(1e-9),
        exporter_off,
        exporter_on,
        spans_exported: spans.load(Ordering::Relaxed),
    })
}
