//! Items 1 and 2: deletes with their pre-delete snapshot, mixed across entity and link types,
//! timed from the client, with the snapshot store's size read (GetStatus) after 1, 10, 100 …
//! snapshots; and the same deletes, in the same order, on a fresh copy with snapshots disabled.
//!
//! Targets are chosen from what the server lists (List* and ListLinks), with a fixed seed, so
//! that no delete can remove another's target through its cascade: links touching a chosen
//! entity are excluded, and so are MAPG links under a chosen MAP link (MAPG goes with its MAP).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::entity_service_client::EntityServiceClient;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::Code;

use crate::harness::{fail, status, Res};
use crate::prom::{self, HistSummary};
use crate::stats::{SplitMix, Summary};

/// Seed of the target choice.
const SEED: u64 = 0x4C4E_5253_4245_4E43;

/// What one delete removes.
#[derive(Debug, Clone)]
pub enum Target {
    Measure(i32),
    Grant(String),
    Habitat(i32),
    Species(i32),
    Link(pb::Link),
}

impl Target {
    /// The entity type or link table, as events name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Measure(_) => "measure",
            Target::Grant(_) => "grant",
            Target::Habitat(_) => "habitat",
            Target::Species(_) => "species",
            Target::Link(l) => link_table(l.link_type),
        }
    }
}

const LINK_TYPES: [pb::LinkType; 6] = [
    pb::LinkType::MeasureAreaPriority,
    pb::LinkType::MeasureAreaPriorityGrant,
    pb::LinkType::SpeciesAreaPriority,
    pb::LinkType::HabitatCreationArea,
    pb::LinkType::HabitatManagementArea,
    pb::LinkType::MeasureSpecies,
];

fn link_table(t: i32) -> &'static str {
    match pb::LinkType::try_from(t) {
        Ok(pb::LinkType::MeasureAreaPriority) => "measure_area_priority",
        Ok(pb::LinkType::MeasureAreaPriorityGrant) => "measure_area_priority_grant",
        Ok(pb::LinkType::SpeciesAreaPriority) => "species_area_priority",
        Ok(pb::LinkType::HabitatCreationArea) => "habitat_creation_area",
        Ok(pb::LinkType::HabitatManagementArea) => "habitat_management_area",
        Ok(pb::LinkType::MeasureSpecies) => "measure_has_species",
        _ => "link",
    }
}

/// Every id of one entity list, following pages.
macro_rules! list_all {
    ($client:expr, $method:ident, $req:ident, $field:ident, $id:ident) => {{
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let page = $client
                .$method(pb::$req {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            ids.extend(page.$field.into_iter().map(|e| e.$id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        ids
    }};
}

async fn list_links(
    client: &mut EntityServiceClient<Channel>,
    t: pb::LinkType,
) -> Res<Vec<pb::Link>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_links(pb::ListLinksRequest {
                link_type: t as i32,
                page_size: 5000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(page.links);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Chooses `n` targets plus a few spares, spread evenly over 4 entity and 6 link types, in a
/// seeded random order.
pub async fn pick_targets(channel: &Channel, n: usize) -> Res<Vec<Target>> {
    let mut client = EntityServiceClient::new(channel.clone());
    let mut rng = SplitMix::new(SEED);
    let per_kind = n.div_ceil(10) + 2;
    let measures: Vec<i32> = take(
        list_all!(
            client,
            list_measures,
            ListMeasuresRequest,
            measures,
            measure_id
        ),
        per_kind,
        &mut rng,
    );
    let grants: Vec<String> = take(
        list_all!(client, list_grants, ListGrantsRequest, grants, grant_id),
        per_kind,
        &mut rng,
    );
    let habitats: Vec<i32> = take(
        list_all!(
            client,
            list_habitats,
            ListHabitatsRequest,
            habitats,
            habitat_id
        ),
        per_kind,
        &mut rng,
    );
    let species: Vec<i32> = take(
        list_all!(
            client,
            list_species,
            ListSpeciesRequest,
            species,
            species_id
        ),
        per_kind,
        &mut rng,
    );
    let (m, g, h, s): (HashSet<i32>, HashSet<&str>, HashSet<i32>, HashSet<i32>) = (
        measures.iter().copied().collect(),
        grants.iter().map(String::as_str).collect(),
        habitats.iter().copied().collect(),
        species.iter().copied().collect(),
    );
    let mut chosen_map: HashSet<(i32, i32, i32)> = HashSet::new();
    let mut links: Vec<Vec<pb::Link>> = Vec::new();
    for t in LINK_TYPES {
        let mut all = list_links(&mut client, t).await?;
        let under_chosen_map = |l: &pb::Link| {
            t == pb::LinkType::MeasureAreaPriorityGrant
                && chosen_map.contains(&(l.measure_id, l.area_id, l.priority_id))
        };
        all.retain(|l| {
            let touched = m.contains(&l.measure_id)
                || h.contains(&l.habitat_id)
                || s.contains(&l.species_id)
                || g.contains(l.grant_id.as_str())
                || under_chosen_map(l);
            !touched
        });
        rng.shuffle(&mut all);
        all.truncate(per_kind);
        if t == pb::LinkType::MeasureAreaPriority {
            chosen_map.extend(all.iter().map(|l| (l.measure_id, l.area_id, l.priority_id)));
        }
        links.push(all);
    }
    let mut targets: Vec<Target> = measures
        .into_iter()
        .map(Target::Measure)
        .chain(grants.into_iter().map(Target::Grant))
        .chain(habitats.into_iter().map(Target::Habitat))
        .chain(species.into_iter().map(Target::Species))
        .chain(links.into_iter().flatten().map(Target::Link))
        .collect();
    rng.shuffle(&mut targets);
    if targets.len() < n {
        return Err(fail(format!(
            "the dataset offers only {} delete targets, {n} wanted",
            targets.len()
        )));
    }
    Ok(targets)
}

/// `n` of `v`, chosen by `rng` independently of the order the server listed them in.
fn take<T: Ord>(mut v: Vec<T>, n: usize, rng: &mut SplitMix) -> Vec<T> {
    v.sort();
    rng.shuffle(&mut v);
    v.truncate(n);
    v
}

/// Runs one delete; the outcome (snapshot id, rows removed).
async fn delete_one(
    client: &mut EntityServiceClient<Channel>,
    t: &Target,
) -> Result<Option<pb::DeleteOutcome>, tonic::Status> {
    Ok(match t {
        Target::Measure(id) => {
            client
                .delete_measure(pb::DeleteMeasureRequest {
                    measure_id: *id,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .outcome
        }
        Target::Grant(id) => {
            client
                .delete_grant(pb::DeleteGrantRequest {
                    grant_id: id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .outcome
        }
        Target::Habitat(id) => {
            client
                .delete_habitat(pb::DeleteHabitatRequest {
                    habitat_id: *id,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .outcome
        }
        Target::Species(id) => {
            client
                .delete_species(pb::DeleteSpeciesRequest {
                    species_id: *id,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .outcome
        }
        Target::Link(l) => {
            client
                .delete_link(pb::DeleteLinkRequest {
                    link: Some(l.clone()),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .outcome
        }
    })
}

/// The store's size after some number of pre-delete snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct StoragePoint {
    pub deletes: usize,
    pub snapshot_count: i64,
    pub stored_bytes: u64,
    pub logical_bytes: u64,
    pub database_bytes: u64,
    /// stored_bytes / database_bytes.
    pub ratio: f64,
}

/// Server-side histograms over one delete run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerPhases {
    /// `lnrs_delete_seconds`: queueing, snapshot, cascade, commit.
    pub delete: HistSummary,
    /// `lnrs_snapshot_capture_seconds`: the writer blocked for a pre-delete snapshot
    /// (CHECKPOINT + empty-WAL check; the file read runs alongside the cascade).
    pub capture: HistSummary,
    /// `lnrs_snapshot_commit_seconds`: hash, compress, write, manifest (overlaps the cascade).
    pub commit: HistSummary,
    /// Fraction of captures at or below 15 ms (a bucket edge: the target, read exactly).
    pub capture_le_15ms: Option<f64>,
}

/// One run of deletes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteRun {
    pub policy: String,
    pub deleted: usize,
    /// Targets already gone (removed by an earlier cascade); not timed.
    pub not_found: usize,
    pub snapshots_taken: usize,
    pub rows_removed: i64,
    pub latency: Summary,
    pub by_kind: BTreeMap<String, Summary>,
    pub server: ServerPhases,
    /// Snapshots made from a capture taken ahead during the run, and snapshots that captured
    /// the file themselves (GetStatus `capture_ahead`, differenced).
    pub ahead_reused: u64,
    pub ahead_fallbacks: u64,
    pub storage: Vec<StoragePoint>,
    pub wall_secs: f64,
    /// The targets actually deleted, in order (to repeat them on another copy).
    #[serde(skip)]
    pub done: Vec<Target>,
}

/// Deletes targets in order until `n` succeeded, `gap` apart (zero: back to back; a gap
/// models people editing, and gives the server idle time). `storage_at` lists delete counts
/// after which GetStatus is read.
pub async fn run(
    channel: &Channel,
    targets: &[Target],
    n: usize,
    policy: &str,
    storage_at: &[usize],
    gap: Duration,
) -> Res<DeleteRun> {
    let mut client = EntityServiceClient::new(channel.clone());
    let before = prom::scrape();
    let ahead_before = status(channel).await?.capture_ahead.unwrap_or_default();
    let started = Instant::now();
    let mut run = DeleteRun {
        policy: policy.to_string(),
        ..Default::default()
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut by_kind: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for t in targets {
        if run.deleted >= n {
            break;
        }
        if run.deleted > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let t0 = Instant::now();
        let outcome = delete_one(&mut client, t).await;
        let took = t0.elapsed();
        let outcome = match outcome {
            Ok(o) => o.unwrap_or_default(),
            Err(s) if s.code() == Code::NotFound => {
                run.not_found += 1;
                continue;
            }
            Err(s) => {
                return Err(fail(format!(
                    "delete {} {t:?} failed: {:?} {}",
                    t.kind(),
                    s.code(),
                    s.message()
                )))
            }
        };
        run.deleted += 1;
        run.done.push(t.clone());
        times.push(took);
        by_kind.entry(t.kind().to_string()).or_default().push(took);
        if !outcome.snapshot_id.is_empty() {
            run.snapshots_taken += 1;
        }
        run.rows_removed += outcome.rows_removed.iter().map(|r| r.rows).sum::<i64>();
        if storage_at.contains(&run.deleted) {
            let s = status(channel).await?;
            run.storage.push(StoragePoint {
                deletes: run.deleted,
                snapshot_count: s.snapshot_count,
                stored_bytes: s.stored_bytes,
                logical_bytes: s.logical_bytes,
                database_bytes: s.database_bytes,
                ratio: s.stored_bytes as f64 / s.database_bytes.max(1) as f64,
            });
        }
    }
    run.wall_secs = started.elapsed().as_secs_f64();
    let ahead_after = status(channel).await?.capture_ahead.unwrap_or_default();
    run.ahead_reused = ahead_after.reused - ahead_before.reused;
    run.ahead_fallbacks = ahead_after.fallbacks - ahead_before.fallbacks;
    let after = prom::scrape();
    let capture = after.since(&before, prom::CAPTURE);
    run.server = ServerPhases {
        delete: after.since(&before, prom::DELETE).summary(),
        capture_le_15ms: capture.fraction_at_or_below(0.015),
        capture: capture.summary(),
        commit: after.since(&before, prom::COMMIT).summary(),
    };
    run.latency = Summary::of(&times);
    run.by_kind = by_kind
        .into_iter()
        .map(|(k, v)| (k, Summary::of(&v)))
        .collect();
    if run.deleted < n {
        return Err(fail(format!(
            "only {} of {n} deletes could run ({} targets were already gone)",
            run.deleted, run.not_found
        )));
    }
    Ok(run)
}
