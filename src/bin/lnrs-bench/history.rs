//! Item 7: history — Undelete from the delete's row images and from its pre-delete snapshot,
//! DiffSnapshots of two adjacent pre-delete snapshots, GetEntityHistory of a measure, and the
//! bytes the row images add to each event.
//!
//! One server on a fresh copy of the reference dataset: `n` measures are renamed, then each is
//! deleted and undeleted at once (timed: undelete from images). Then the same measures are
//! deleted one after the other (their pre-delete snapshots are adjacent: each pair differs by
//! exactly one delete) and every adjacent pair is diffed, and every measure's history read. The
//! server stops; the log's payloads are measured with and without their row images, and the
//! images of the second round of deletes are removed (as events written before the log kept
//! images look). A restarted server then undeletes each of those from its snapshot (timed).

use std::path::Path;
use std::time::{Duration, Instant};

use lnrs::config::SnapshotPolicy;
use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use lnrs::pb::event_service_client::EventServiceClient;
use lnrs::pb::snapshot_service_client::SnapshotServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::harness::{self, fail, BenchServer, Dataset, Res, Work};
use crate::stats::Summary;

/// Item 7 results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryResult {
    pub measures: usize,
    /// Undelete of a measure delete, rows from the delete event's images.
    pub undelete_images: Summary,
    /// The same, rows from the pre-delete snapshot (events without images).
    pub undelete_snapshot: Summary,
    /// Rows each undelete put back (mean).
    pub rows_per_undelete: f64,
    /// DiffSnapshots of two adjacent pre-delete snapshots, every page.
    pub diff_adjacent: Summary,
    /// Differing rows per diff (mean).
    pub rows_per_diff: f64,
    /// GetEntityHistory of one measure (first page).
    pub history: Summary,
    /// Events in the log when the histories were read.
    pub log_events: u64,
    /// Stored payload bytes per event, by kind, with and without the row images.
    pub bytes: Vec<EventBytes>,
}

/// Mean stored bytes of one event kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventBytes {
    pub kind: String,
    pub events: usize,
    pub without_images: f64,
    pub with_images: f64,
}

pub async fn run(work: &Work, dataset: &Dataset, n: usize) -> Res<HistoryResult> {
    let dir = work.data_dir_with("history", &dataset.path)?;
    let config = harness::config(&dir, SnapshotPolicy::Required);
    let db = config.database_path();
    let server = BenchServer::start(config).await?;
    let channel = server.channel().await?;
    let mut out = HistoryResult {
        measures: n,
        ..Default::default()
    };
    let ids = measure_ids(&channel, n).await?;

    let mut from_images = Vec::new();
    let mut restored = Vec::new();
    for &id in &ids {
        rename(&channel, id).await?;
        let d = delete(&channel, id).await?;
        let (t, r) = undelete(&channel, d.event_seq, "event").await?;
        from_images.push(t);
        restored.push(r as f64);
    }
    out.undelete_images = Summary::of(&from_images);

    let mut deletes = Vec::new();
    for &id in &ids {
        deletes.push(delete(&channel, id).await?);
    }
    let mut diffs = Vec::new();
    let mut diff_rows = Vec::new();
    for pair in deletes.windows(2) {
        let (t, rows) = diff(&channel, &pair[0].snapshot_id, &pair[1].snapshot_id).await?;
        diffs.push(t);
        diff_rows.push(rows as f64);
    }
    out.diff_adjacent = Summary::of(&diffs);
    out.rows_per_diff = mean(&diff_rows);
    out.log_events = harness::status(&channel).await?.event_head_seq;
    let mut histories = Vec::new();
    for &id in &ids {
        histories.push(history(&channel, id).await?);
    }
    out.history = Summary::of(&histories);
    server.stop().await?;

    let seqs: Vec<u64> = deletes.iter().map(|d| d.event_seq).collect();
    out.bytes = payload_bytes(&db, &seqs)?;

    let server = BenchServer::start(harness::config(&dir, SnapshotPolicy::Required)).await?;
    let channel = server.channel().await?;
    let mut from_snapshot = Vec::new();
    for d in &deletes {
        let (t, r) = undelete(&channel, d.event_seq, "snapshot").await?;
        from_snapshot.push(t);
        restored.push(r as f64);
    }
    out.undelete_snapshot = Summary::of(&from_snapshot);
    out.rows_per_undelete = mean(&restored);
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(out)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The first `n` measure ids.
async fn measure_ids(channel: &Channel, n: usize) -> Res<Vec<i32>> {
    let page = EntityServiceClient::new(channel.clone())
        .list_measures(pb::ListMeasuresRequest {
            page_size: i32::try_from(n).unwrap_or(i32::MAX),
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids: Vec<i32> = page.measures.iter().map(|m| m.measure_id).collect();
    if ids.len() < n.max(2) {
        return Err(fail("the dataset has too few measures for the history run"));
    }
    Ok(ids)
}

async fn rename(channel: &Channel, id: i32) -> Res<()> {
    EntityServiceClient::new(channel.clone())
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(pb::Measure {
                measure_id: id,
                measure: format!("renamed by lnrs-bench ({id})"),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["measure".into()],
            }),
            request_id: String::new(),
        })
        .await?;
    Ok(())
}

async fn delete(channel: &Channel, id: i32) -> Res<pb::DeleteOutcome> {
    EntityServiceClient::new(channel.clone())
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: id,
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .outcome
        .ok_or_else(|| fail("DeleteMeasure returned no outcome"))
}

/// One timed Undelete of the delete at `seq`; checks where its rows came from.
async fn undelete(channel: &Channel, seq: u64, source: &str) -> Res<(Duration, i64)> {
    let started = Instant::now();
    let r = EntityServiceClient::new(channel.clone())
        .undelete(pb::UndeleteRequest {
            delete: Some(pb::undelete_request::Delete::EventSeq(seq)),
            dry_run: false,
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let took = started.elapsed();
    if r.source != source {
        return Err(fail(format!(
            "undelete of seq {seq} read its rows from the {}, expected the {source}",
            r.source
        )));
    }
    Ok((took, r.rows_restored.iter().map(|t| t.rows).sum()))
}

/// One timed DiffSnapshots, every page; returns the differing rows.
async fn diff(channel: &Channel, from: &str, to: &str) -> Res<(Duration, usize)> {
    use pb::state_ref::State;
    let mut client = SnapshotServiceClient::new(channel.clone());
    let side = |id: &str| {
        Some(pb::StateRef {
            state: Some(State::SnapshotId(id.to_string())),
        })
    };
    let started = Instant::now();
    let (mut rows, mut token) = (0, String::new());
    loop {
        let r = client
            .diff_snapshots(pb::DiffSnapshotsRequest {
                from: side(from),
                to: side(to),
                table: String::new(),
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        rows += r.rows.len();
        if r.next_page_token.is_empty() {
            return Ok((started.elapsed(), rows));
        }
        token = r.next_page_token;
    }
}

async fn history(channel: &Channel, id: i32) -> Res<Duration> {
    let started = Instant::now();
    let r = EventServiceClient::new(channel.clone())
        .get_entity_history(pb::GetEntityHistoryRequest {
            entity_type: "measure".into(),
            entity_id: id.to_string(),
            page_size: 50,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    // rename, delete, undelete, delete
    if r.events.len() < 4 {
        return Err(fail(format!(
            "measure {id}'s history has {} events, expected 4",
            r.events.len()
        )));
    }
    Ok(started.elapsed())
}

/// The payload without its row images (where the serialized event keeps them).
fn without_images(payload: &str) -> Res<String> {
    let mut v: serde_json::Value = serde_json::from_str(payload)?;
    if let Some(body) = v.get_mut("body").and_then(|b| b.as_object_mut()) {
        body.remove("rows");
    }
    if let Some(top) = v.as_object_mut() {
        top.remove("rows");
    }
    Ok(v.to_string())
}

/// Measures every payload with and without images, by kind, and strips the images of the
/// events at `strip` (the server is stopped).
fn payload_bytes(db: &Path, strip: &[u64]) -> Res<Vec<EventBytes>> {
    let conn = lnrs::storage::open(db)?;
    let rows: Vec<(i64, String, String)> = {
        let mut stmt =
            conn.prepare("SELECT seq, kind, payload FROM lnrs_event_log ORDER BY seq")?;
        let mapped = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        mapped.collect::<Result<_, _>>()?
    };
    let mut by_kind: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    for (seq, kind, payload) in &rows {
        let bare = without_images(payload)?;
        let e = by_kind.entry(kind.clone()).or_default();
        e.0 += 1;
        e.1 += bare.len();
        e.2 += payload.len();
        if strip.contains(&u64::try_from(*seq).unwrap_or(0)) {
            conn.execute(
                "UPDATE lnrs_event_log SET payload = ? WHERE seq = ?",
                duckdb::params![bare, seq],
            )?;
        }
    }
    conn.execute_batch("CHECKPOINT")?;
    Ok(by_kind
        .into_iter()
        .map(|(kind, (n, bare, full))| EventBytes {
            kind,
            events: n,
            without_images: bare as f64 / n as f64,
            with_images: full as f64 / n as f64,
        })
        .collect())
}
