//! Item 6: catch-up throughput — one subscriber replaying a long event log from the start.
//!
//! The log is a FIXTURE: before the server starts, the database copy is opened with
//! `lnrs::storage::open` and events are bulk-appended with `lnrs::events::log::append_bulk`
//! (the server's own row layout, through DuckDB's appender) in large transactions — far faster
//! than producing them one RPC, or one INSERT, at a time.
//! Each fixture event is a `link_created` of a MAP link with its after-image, about the size
//! of the events a link create appends. The seeded file is cached in the work dir.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use lnrs::config::SnapshotPolicy;
use lnrs::domain::{Key, Link, LinkKind};
use lnrs::events::{Event, EventDraft, EventKind, Origin, Resource};
use lnrs::pb;
use lnrs::pb::event_service_client::EventServiceClient;
use serde::Serialize;

use crate::harness::{self, dataset_key, fail, remove_db, BenchServer, Dataset, Res, Work};

/// Events per fixture transaction.
const BATCH: u64 = 50_000;
/// Bound on the whole replay.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(900);

/// Item 6 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatchupResult {
    pub log_events: u64,
    /// Seconds the fixture took to build in this run (None: cached from an earlier run).
    pub fixture_secs: Option<f64>,
    pub received: u64,
    pub first_event_ms: f64,
    pub replay_secs: f64,
    pub events_per_sec: f64,
    pub gaps: u64,
}

/// The dataset plus `n` appended events, built once and cached.
fn fixture(work: &Work, dataset: &Dataset, n: u64) -> Res<(PathBuf, Option<f64>)> {
    let path = work.root.join(format!(
        "catchup-s{}-{}-{n}.duckdb",
        dataset.scale,
        dataset_key()
    ));
    if path.exists() {
        return Ok((path, None));
    }
    let tmp = work.root.join("catchup-building.duckdb");
    remove_db(&tmp);
    std::fs::copy(&dataset.path, &tmp)?;
    eprintln!("seeding the catch-up fixture with {n} events …");
    let started = Instant::now();
    {
        let conn = lnrs::storage::open(&tmp)?;
        let head = lnrs::events::log::bounds(&conn)?.head;
        let mut seq = head + 1;
        let end = head + n;
        while seq <= end {
            conn.execute_batch("BEGIN TRANSACTION")?;
            let batch_end = (seq + BATCH - 1).min(end);
            lnrs::events::log::append_bulk(&conn, (seq..=batch_end).map(fixture_event))?;
            conn.execute_batch("COMMIT")?;
            seq = batch_end + 1;
        }
        conn.execute_batch("CHECKPOINT")?;
    }
    let took = started.elapsed().as_secs_f64();
    std::fs::rename(&tmp, &path)?;
    Ok((path, Some(took)))
}

fn fixture_event(seq: u64) -> Event {
    let i = seq as i64;
    let link = Link {
        kind: LinkKind::MeasureAreaPriority,
        key: vec![
            Key::Int((i % 997 + 1) as i32),
            Key::Int((i % 68 + 1) as i32),
            Key::Int((i % 131 + 1) as i32),
        ],
    };
    let mut body = EventDraft::new(EventKind::LinkCreated, link.kind.table(), link.id_string());
    body.after = Some(Resource::Link(link));
    Event {
        seq,
        time: Utc::now(),
        origin: Origin {
            request_id: Some(format!("catchup-fixture-{seq}")),
            rpc: Some("/lnrs.v1.EntityService/CreateLink".into()),
            ..Default::default()
        },
        body,
    }
}

/// Seeds (or reuses) the fixture, starts a server on a copy, and replays the whole log.
pub async fn run(work: &Work, dataset: &Dataset, n: u64) -> Res<CatchupResult> {
    let (seeded, fixture_secs) = fixture(work, dataset, n)?;
    let dir = work.data_dir_with("catchup", &seeded)?;
    let server = BenchServer::start(harness::config(&dir, SnapshotPolicy::Disabled)).await?;
    let result = replay(&server, n).await;
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|r| CatchupResult { fixture_secs, ..r })
}

async fn replay(server: &BenchServer, n: u64) -> Res<CatchupResult> {
    use pb::watch_events_response::Item;
    let mut client = EventServiceClient::new(server.channel().await?)
        .max_decoding_message_size(lnrs::cli::client::MAX_DECODING_MESSAGE_BYTES);
    let started = Instant::now();
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(0),
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 300,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = CatchupResult {
        log_events: n,
        ..Default::default()
    };
    let mut last = 0u64;
    let deadline = tokio::time::Instant::now() + REPLAY_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| fail("catch-up did not finish in time"))??
            .ok_or_else(|| fail("the stream ended before CaughtUp"))?;
        match msg.item {
            Some(Item::Event(e)) => {
                if out.received == 0 {
                    out.first_event_ms = started.elapsed().as_secs_f64() * 1e3;
                }
                out.received += 1;
                if last != 0 && e.seq != last + 1 {
                    out.gaps += 1;
                }
                last = e.seq;
            }
            Some(Item::CaughtUp(_)) => break,
            _ => {}
        }
    }
    out.replay_secs = started.elapsed().as_secs_f64();
    out.events_per_sec = out.received as f64 / out.replay_secs.max(f64::MIN_POSITIVE);
    if out.received < n {
        return Err(fail(format!(
            "catch-up delivered {} of {n} events",
            out.received
        )));
    }
    Ok(out)
}
