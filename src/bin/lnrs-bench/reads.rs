//! Item 5: read throughput at a fixed concurrency — GetMeasure (random existing ids) and
//! ListMeasures (first page of 50) — against grpc.health.v1 Check on the same server as the
//! empty handler (same connections, same layers: observe, auth, tonic). Windows of the three
//! kinds are interleaved over several rounds and the median requests/s is reported, so a
//! noisy neighbour hurts all three alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use serde::Serialize;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{fail, Res};
use crate::stats::{median, SplitMix, Summary};

/// Connections the workers share (round robin).
pub const CONNECTIONS: usize = 4;
/// Not counted at the start of each window (connections warm, caches filled).
const WARMUP: Duration = Duration::from_millis(300);
const LIST_PAGE: i32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Health,
    Get,
    List,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Health => "health_check",
            Kind::Get => "get_measure",
            Kind::List => "list_measures",
        }
    }
}

/// One kind's numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadKind {
    /// Median over rounds.
    pub requests_per_sec: f64,
    pub per_round: Vec<f64>,
    /// Client latency over all rounds.
    pub latency: Summary,
    pub errors: u64,
}

/// Item 5 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadsResult {
    pub concurrency: usize,
    pub connections: usize,
    pub window_secs: f64,
    pub rounds: usize,
    pub list_page_size: i32,
    pub kinds: BTreeMap<String, ReadKind>,
    /// get / health and list / health (medians).
    pub get_vs_empty: f64,
    pub list_vs_empty: f64,
}

struct Window {
    done: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
}

async fn window(
    kind: Kind,
    channels: &[Channel],
    ids: &Arc<Vec<i32>>,
    concurrency: usize,
    length: Duration,
) -> Res<(Window, Duration)> {
    let start = Instant::now() + WARMUP;
    let end = start + length;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let channel = channels[w % channels.len()].clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix::new(w as u64 + 1);
            let mut entity = EntityServiceClient::new(channel.clone());
            let mut health = HealthClient::new(channel);
            let mut out = Window {
                done: 0,
                errors: 0,
                latencies_ms: Vec::new(),
            };
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return out;
                }
                let ok = match kind {
                    Kind::Health => health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok(),
                    Kind::Get => entity
                        .get_measure(pb::GetMeasureRequest {
                            measure_id: ids[rng.below(ids.len())],
                        })
                        .await
                        .is_ok(),
                    Kind::List => entity
                        .list_measures(pb::ListMeasuresRequest {
                            page_size: LIST_PAGE,
                            ..Default::default()
                        })
                        .await
                        .is_ok(),
                };
                let t1 = Instant::now();
                if t1 >= start && t1 <= end {
                    if ok {
                        out.done += 1;
                        out.latencies_ms.push((t1 - t0).as_secs_f64() * 1e3);
                    } else {
                        out.errors += 1;
                    }
                }
            }
        }));
    }
    let mut total = Window {
        done: 0,
        errors: 0,
        latencies_ms: Vec::new(),
    };
    for t in tasks {
        let w = t.await?;
        total.done += w.done;
        total.errors += w.errors;
        total.latencies_ms.extend(w.latencies_ms);
    }
    Ok((total, length))
}

/// Every measure id of the server, for random reads.
pub async fn measure_ids(channel: &Channel) -> Res<Vec<i32>> {
    let mut ids = Vec::new();
    let mut client = EntityServiceClient::new(channel.clone());
    let mut token = String::new();
    loop {
        let page = client
            .list_measures(pb::ListMeasuresRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.measures.iter().map(|m| m.measure_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if ids.is_empty() {
        return Err(fail("no measures to read"));
    }
    Ok(ids)
}

/// GetMeasure requests/s of one window (and its errors), as in the read benchmark.
pub async fn get_rate(
    channels: &[Channel],
    ids: &Arc<Vec<i32>>,
    concurrency: usize,
    length: Duration,
) -> Res<(f64, u64)> {
    let (w, len) = window(Kind::Get, channels, ids, concurrency, length).await?;
    Ok((w.done as f64 / len.as_secs_f64(), w.errors))
}

/// Runs `rounds` × (health, get, list) windows of `length` each.
pub async fn run(
    server_url: &str,
    concurrency: usize,
    length: Duration,
    rounds: usize,
) -> Res<ReadsResult> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(crate::harness::connect(server_url).await?);
    }
    let ids = Arc::new(measure_ids(&channels[0]).await?);
    let mut per: BTreeMap<Kind, (Vec<f64>, Vec<f64>, u64)> = BTreeMap::new();
    for _ in 0..rounds {
        for kind in [Kind::Health, Kind::Get, Kind::List] {
            let (w, len) = window(kind, &channels, &ids, concurrency, length).await?;
            let e = per.entry(kind).or_default();
            e.0.push(w.done as f64 / len.as_secs_f64());
            e.1.extend(w.latencies_ms);
            e.2 += w.errors;
        }
    }
    let mut out = ReadsResult {
        concurrency,
        connections: CONNECTIONS,
        window_secs: length.as_secs_f64(),
        rounds,
        list_page_size: LIST_PAGE,
        ..Default::default()
    };
    for (kind, (rates, lat, errors)) in per {
        out.kinds.insert(
            kind.name().to_string(),
            ReadKind {
                requests_per_sec: median(&rates),
                per_round: rates,
                latency: Summary::of_ms(&lat),
                errors,
            },
        );
    }
    let rate = |k: Kind| out.kinds.get(k.name()).map_or(0.0, |r| r.requests_per_sec);
    let empty = rate(Kind::Health).max(f64::MIN_POSITIVE);
    out.get_vs_empty = rate(Kind::Get) / empty;
    out.list_vs_empty = rate(Kind::List) / empty;
    Ok(out)
}
