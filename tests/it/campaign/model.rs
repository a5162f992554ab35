//! The checker's model of what the service has acknowledged, and the invariants it checks
//! after a restart.
//!
//! The model keeps the *candidate* states the database may be in: an acknowledged change is
//! applied to every candidate; a change whose outcome is unknown (the RPC failed in a way that
//! does not prove it did nothing: an injected error after COMMIT, a crash) doubles them —
//! with and without it. After a restart the live state must be exactly one candidate, which
//! then becomes the only one. Rows are keyed by the server's ids; a create whose id the client
//! never learned is kept by its (unique) name until the restart shows whether it happened.

use std::collections::{BTreeMap, BTreeSet};

use lnrs::pb;
use tonic::transport::Channel;

/// The part of the database the workload touches: habitats and areas (id → name) and the
/// links between them (habitat_creation_area). Ids are the server's; integer ids can be
/// reused after the row with the highest id is deleted, so the model never keys by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct State {
    pub habitats: BTreeMap<i32, String>,
    pub areas: BTreeMap<i32, String>,
    pub links: BTreeSet<(i32, i32)>,
    /// Created with an unknown outcome, so with an id the client never learned: present (once,
    /// under some id not otherwise known) or absent.
    pub pending: BTreeSet<(Table, String)>,
}

/// Which table a pending row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Habitat,
    Area,
}

/// A change to the state.
#[derive(Debug, Clone)]
pub enum Change {
    /// A create; the id is known when the create was acknowledged.
    Create(Table, Option<i32>, String),
    Rename {
        id: i32,
        to: String,
    },
    Delete(Table, i32),
    Link(i32, i32),
    Unlink(i32, i32),
    /// The state becomes one of these (a restore).
    Become(Vec<State>),
}

impl State {
    fn rows(&mut self, t: Table) -> &mut BTreeMap<i32, String> {
        match t {
            Table::Habitat => &mut self.habitats,
            Table::Area => &mut self.areas,
        }
    }

    /// The state after `c`, or `None` when `c` cannot have happened in this state (an
    /// acknowledged delete of a row this candidate does not have rules the candidate out).
    fn apply(&self, c: &Change) -> Option<Vec<State>> {
        let mut s = self.clone();
        match c {
            Change::Create(t, Some(id), name) => {
                // An id can be reused: a row this candidate still has under it is impossible.
                if s.rows(*t).insert(*id, name.clone()).is_some() {
                    return None;
                }
            }
            Change::Create(t, None, name) => {
                s.pending.insert((*t, name.clone()));
            }
            Change::Rename { id, to } => {
                *s.habitats.get_mut(id)? = to.clone();
            }
            Change::Delete(t, id) => {
                s.rows(*t).remove(id)?;
                s.links.retain(|(h, a)| match t {
                    Table::Habitat => h != id,
                    Table::Area => a != id,
                });
            }
            Change::Link(h, a) => {
                if !s.habitats.contains_key(h) || !s.areas.contains_key(a) {
                    return None;
                }
                s.links.insert((*h, *a));
            }
            Change::Unlink(h, a) => {
                if !s.links.remove(&(*h, *a)) {
                    return None;
                }
            }
            Change::Become(states) => return Some(states.clone()),
        }
        Some(vec![s])
    }

    /// Whether the live state is this one, a pending create counting as done or not.
    fn matches(&self, live: &State) -> bool {
        let extra_ok = |t: Table, mine: &BTreeMap<i32, String>, theirs: &BTreeMap<i32, String>| {
            mine.iter().all(|(id, n)| theirs.get(id) == Some(n))
                && theirs
                    .iter()
                    .filter(|(id, _)| !mine.contains_key(id))
                    .all(|(_, n)| self.pending.contains(&(t, n.clone())))
        };
        self.links == live.links
            && extra_ok(Table::Habitat, &self.habitats, &live.habitats)
            && extra_ok(Table::Area, &self.areas, &live.areas)
    }
}

/// An event the client was told about: its seq and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub kind: i32,
    pub entity_type: String,
    pub entity_id: String,
}

impl SeenEvent {
    pub fn of(e: &pb::Event) -> Self {
        Self {
            kind: e.kind,
            entity_type: e.entity_type.clone(),
            entity_id: e.entity_id.clone(),
        }
    }
}

/// An acknowledged delete: its snapshot must exist, verify, and hold the deleted row.
#[derive(Debug, Clone)]
pub struct AckedDelete {
    pub snapshot_id: String,
    pub table: &'static str,
    pub key: i32,
}

/// Most candidate states kept (they double at each change of unknown outcome); beyond it the
/// state check of the case is skipped (counted, never a silent pass).
const MAX_CANDIDATES: usize = 4096;

/// What the client knows.
#[derive(Debug, Default)]
pub struct Model {
    pub candidates: Vec<State>,
    /// Candidate states of each snapshot the client learned of.
    pub snapshots: BTreeMap<String, Vec<State>>,
    /// Every event seq an acknowledged RPC returned, and what the log says there.
    pub events: BTreeMap<u64, Option<SeenEvent>>,
    pub deletes: Vec<AckedDelete>,
    /// Snapshots an acknowledged retention or DeleteSnapshot removed.
    pub forgotten: BTreeSet<String>,
    /// More unknown outcomes than the model can follow: the state is not checked this time.
    pub overflow: bool,
}

impl Model {
    pub fn new() -> Self {
        Self {
            candidates: vec![State::default()],
            ..Default::default()
        }
    }

    /// An acknowledged change: every candidate that allows it, changed.
    pub fn acked(&mut self, c: Change) -> Result<(), String> {
        let next: Vec<State> = self
            .candidates
            .iter()
            .filter_map(|s| s.apply(&c))
            .flatten()
            .collect();
        if next.is_empty() {
            return Err(format!(
                "acknowledged {c:?} is impossible in every candidate state"
            ));
        }
        self.set(next);
        Ok(())
    }

    /// A change that may or may not have happened.
    pub fn maybe(&mut self, c: Change) {
        let mut next = self.candidates.clone();
        next.extend(self.candidates.iter().filter_map(|s| s.apply(&c)).flatten());
        self.set(next);
    }

    fn set(&mut self, mut states: Vec<State>) {
        states.sort();
        states.dedup();
        if states.len() > MAX_CANDIDATES {
            self.overflow = true;
            states.truncate(MAX_CANDIDATES);
        }
        self.candidates = states;
    }

    /// A snapshot of the current candidates was taken (or maybe was).
    pub fn snapshot(&mut self, id: &str) {
        self.snapshots
            .insert(id.to_string(), self.candidates.clone());
    }

    pub fn event(&mut self, seq: u64) {
        if seq > 0 {
            self.events.entry(seq).or_insert(None);
        }
    }
}

/// The live state, read through the API.
pub async fn read_state(ch: &Channel) -> State {
    let mut c = pb::entity_service_client::EntityServiceClient::new(ch.clone());
    let habitats = c
        .list_habitats(pb::ListHabitatsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .habitats;
    let areas = c
        .list_areas(pb::ListAreasRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .areas;
    let links = c
        .list_links(pb::ListLinksRequest {
            link_type: pb::LinkType::HabitatCreationArea as i32,
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    State {
        habitats: habitats
            .into_iter()
            .map(|h| (h.habitat_id, h.habitat))
            .collect(),
        areas: areas
            .into_iter()
            .map(|a| (a.area_id, a.area_name))
            .collect(),
        links: links.iter().map(|l| (l.habitat_id, l.area_id)).collect(),
        pending: BTreeSet::new(),
    }
}

/// Checks every invariant against a server restarted on the data directory; returns the
/// violations. Afterwards the model holds exactly the live state.
pub async fn check(model: &mut Model, ch: &Channel, data_dir: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    if data_dir.join("restore.journal").exists() {
        v.push("a restore journal is left while serving".to_string());
    }
    if crate::common::ops::health(ch, "").await != 1 {
        v.push("health is not SERVING".to_string());
    }
    let live = read_state(ch).await;
    if !model.overflow && !model.candidates.iter().any(|c| c.matches(&live)) {
        v.push(format!(
            "the live state is none of the {} states the acknowledged changes allow: live {live:?}, e.g. {:?}",
            model.candidates.len(),
            model.candidates.first()
        ));
    }
    model.candidates = vec![live];
    model.overflow = false;
    check_log(model, ch, &mut v).await;
    check_deletes(model, ch, &mut v).await;
    v
}

/// Seqs are dense from the oldest retained event to the head, and every acknowledged seq still
/// says what it said (never reused with different content).
async fn check_log(model: &mut Model, ch: &Channel, v: &mut Vec<String>) {
    let log = crate::common::events_after(ch, 0).await;
    v.extend(crate::common::gap_in(&log));
    let first = log.first().map_or(u64::MAX, |e| e.seq);
    let by_seq: BTreeMap<u64, &pb::Event> = log.iter().map(|e| (e.seq, e)).collect();
    for (seq, seen) in model.events.iter_mut() {
        match (by_seq.get(seq), &seen) {
            (Some(e), None) => *seen = Some(SeenEvent::of(e)),
            (Some(e), Some(s)) if SeenEvent::of(e) != *s => v.push(format!(
                "event {seq} changed: was {s:?}, now {:?}",
                SeenEvent::of(e)
            )),
            (None, _) if *seq >= first => {
                v.push(format!("acknowledged event {seq} is missing from the log"))
            }
            _ => {}
        }
    }
}

/// Every acknowledged delete's snapshot exists (unless retention was asked to remove it),
/// passes a deep verify, and holds the deleted row.
async fn check_deletes(model: &mut Model, ch: &Channel, v: &mut Vec<String>) {
    let mut snaps = pb::snapshot_service_client::SnapshotServiceClient::new(ch.clone());
    for d in std::mem::take(&mut model.deletes) {
        if model.forgotten.contains(&d.snapshot_id) {
            continue;
        }
        let verified = snaps
            .verify_snapshot(pb::VerifySnapshotRequest {
                source: pb::HistorySource::Local as i32,
                snapshot_id: d.snapshot_id.clone(),
                mode: pb::VerifyMode::Deep as i32,
            })
            .await;
        match verified {
            Ok(r) if r.get_ref().report.as_ref().is_some_and(|r| r.passed) => {}
            Ok(r) => v.push(format!(
                "the snapshot of an acknowledged delete does not verify: {:?}",
                r.into_inner().report
            )),
            Err(e) => {
                v.push(format!("the snapshot of an acknowledged delete: {e:?}"));
                continue;
            }
        }
        let preview = snaps
            .preview_snapshot(pb::PreviewSnapshotRequest {
                snapshot_id: d.snapshot_id.clone(),
                table: d.table.into(),
                limit: 500,
            })
            .await;
        let holds = preview.is_ok_and(|p| {
            p.into_inner().rows.iter().any(|r| {
                matches!(
                    r.values.first().and_then(|x| x.kind.as_ref()),
                    Some(pb::preview_value::Kind::Integer(k)) if *k == i64::from(d.key)
                )
            })
        });
        if !holds {
            v.push(format!(
                "the snapshot {} of an acknowledged delete lacks {} {}",
                d.snapshot_id, d.table, d.key
            ));
        }
    }
}

/// Where a campaign server's `file://` replica lives.
pub fn replica_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("replica-remote")
}

/// The objects of the `file://` replica at `root`, listed by object_store's own local store
/// (what the service and its followers see). A walk of the directory would also find the
/// store's staging files (`<key>#<n>`, renamed into place when a put completes), which a kill
/// -9 in the middle of a put leaves behind; they are not objects, and no reader ever sees them.
async fn replica_keys(root: &std::path::Path) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = object_store::local::LocalFileSystem::new_with_prefix(root)
        .expect("the replica directory opens as an object store");
    let listed: Vec<object_store::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .expect("the replica directory lists");
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

/// The replica catches up after the restart, and at no point holds a manifest naming a
/// missing block or a log with a gap; its head is the server's.
pub async fn check_replica(ch: &Channel, data_dir: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (head, replicated) = loop {
        let s = crate::common::ops::status(ch).await;
        let Some(r) = s.replica else {
            return vec!["no replica status".into()];
        };
        if r.lag_events == 0
            && r.snapshots_pending == 0
            && r.state == pb::ReplicaState::Replicating as i32
        {
            break (s.event_head_seq, r.replicated_seq);
        }
        if std::time::Instant::now() > deadline {
            return vec![format!(
                "the replica did not catch up after the restart: {r:?}"
            )];
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if head != replicated {
        v.push(format!("replicated head {replicated}, server head {head}"));
    }
    let root = replica_dir(data_dir);
    let keys = replica_keys(&root).await;
    let (bad, last) =
        crate::common::replica_check::violations(&keys, |k| std::fs::read(root.join(k)).ok());
    v.extend(bad);
    if last != replicated {
        v.push(format!(
            "the last segment ends at {last}, replicated head {replicated}"
        ));
    }
    v
}

/// A put cut short by kill -9 leaves object_store's staging file beside its key; the check
/// must not read it as a torn object (a campaign case once reported exactly that).
#[tokio::test]
async fn a_torn_staging_file_is_not_a_replica_object() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("a.json"), b"{}").unwrap();
    std::fs::write(manifests.join("b.json#1"), b"{\"half").unwrap();
    assert_eq!(
        replica_keys(dir.path()).await,
        vec!["manifests/a.json".to_string()]
    );
}
