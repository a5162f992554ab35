//! The campaign's workload: operations on habitats, areas, their links, snapshots, restores,
//! retention and previews, each sent to the server and recorded in the [`Model`] as
//! acknowledged, refused (nothing changed) or of unknown outcome.

use std::time::Duration;

use lnrs::pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

use super::model::{AckedDelete, Change, Model, Table};

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateHabitat,
    CreateArea,
    Rename,
    DeleteHabitat,
    DeleteArea,
    Link,
    Unlink,
    Snapshot,
    Restore,
    Retention,
    Preview,
    /// Enough creates to pass the event-log retention (compaction runs).
    Burst,
    /// No request until the server's capture ahead of the current state has settled (ready or
    /// failed), so the next delete can reuse it.
    Idle,
}

/// Weighted mix of a random schedule.
const MIX: &[(Op, u32)] = &[
    (Op::CreateHabitat, 4),
    (Op::CreateArea, 2),
    (Op::Rename, 2),
    (Op::DeleteHabitat, 3),
    (Op::DeleteArea, 1),
    (Op::Link, 3),
    (Op::Unlink, 2),
    (Op::Snapshot, 2),
    (Op::Restore, 2),
    (Op::Retention, 1),
    (Op::Preview, 1),
    (Op::Burst, 1),
    (Op::Idle, 2),
];

/// A random schedule of `n` operations.
pub fn schedule(rng: &mut StdRng, n: usize) -> Vec<Op> {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|_| {
            let mut pick = rng.random_range(0..total);
            for (op, w) in MIX {
                if pick < *w {
                    return *op;
                }
                pick -= w;
            }
            unreachable!()
        })
        .collect()
}

/// How an RPC ended, for the model.
enum Outcome<T> {
    Acked(T),
    /// Refused with a code that guarantees nothing changed.
    Refused,
    /// Failed in a way that does not prove nothing changed.
    Unknown,
}

/// Whether an error proves the call changed nothing: refusals by contract, a full queue, and
/// a closed database — except for a restore, whose own failure may close it mid-swap.
fn refused(s: &tonic::Status, restore: bool) -> bool {
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::ResourceExhausted => true,
        Code::Unavailable => !restore && crate::common::reason(s) == "DATABASE_UNAVAILABLE",
        _ => false,
    }
}

/// Runs operations against one server, keeping the model.
pub struct Runner {
    pub ch: Channel,
    pub model: Model,
    pub rng: StdRng,
    /// Unique suffix of created names.
    next: u64,
    /// Case tag in every name, so names never repeat across cases.
    tag: String,
    /// Whether a call failed below gRPC (no ErrorInfo): the server is gone.
    pub lost: bool,
    /// Every call and how it ended, for the report of a violation.
    pub trace: Vec<String>,
}

/// Bound on one call (a restore included).
const CALL_LIMIT: Duration = Duration::from_secs(60);

impl Runner {
    pub fn new(ch: Channel, seed: u64, tag: &str) -> Self {
        Self {
            ch,
            model: Model::new(),
            rng: StdRng::seed_from_u64(seed),
            next: 0,
            tag: tag.to_string(),
            lost: false,
            trace: Vec::new(),
        }
    }

    fn entity(&self) -> pb::entity_service_client::EntityServiceClient<Channel> {
        pb::entity_service_client::EntityServiceClient::new(self.ch.clone())
    }

    fn snapshots(&self) -> pb::snapshot_service_client::SnapshotServiceClient<Channel> {
        pb::snapshot_service_client::SnapshotServiceClient::new(self.ch.clone())
    }

    fn name(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{}-{}", self.tag, self.next)
    }

    /// A random id of `rows` (of the first candidate state).
    fn pick(&mut self, rows: Vec<i32>) -> Option<i32> {
        if rows.is_empty() {
            return None;
        }
        Some(rows[self.rng.random_range(0..rows.len())])
    }

    fn habitats(&self) -> Vec<i32> {
        self.model.candidates[0].habitats.keys().copied().collect()
    }

    fn areas(&self) -> Vec<i32> {
        self.model.candidates[0].areas.keys().copied().collect()
    }

    /// Waits (bounded) until capture ahead has settled on the current state. Only GetStatus is
    /// called meanwhile, which does not use the writer. A server gone is `lost`; a database
    /// closed until a restart has nothing to settle.
    async fn idle(&mut self) -> Result<(), String> {
        use pb::CaptureAheadState as S;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.snapshots().get_status(pb::GetStatusRequest {}).await;
            let Ok(s) = status.map(|r| r.into_inner()) else {
                self.lost = true;
                self.trace.push("idle: the server is gone".into());
                return Ok(());
            };
            if !s.database_available {
                // Closed until a restart (a restore neither completed nor undone): nothing
                // runs in the background until then.
                self.trace.push("idle: the database is unavailable".into());
                return Ok(());
            }
            let a = s.capture_ahead.clone().unwrap_or_default();
            if crate::common::ops::capture_ahead_settled(&s) {
                self.trace
                    .push(format!("idle: capture ahead {:?}", S::try_from(a.state)));
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("capture ahead did not settle: {a:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Classifies and records how a call ended.
    fn outcome<T>(
        &mut self,
        what: String,
        r: Result<tonic::Response<T>, tonic::Status>,
        restore: bool,
    ) -> Outcome<T> {
        let (o, how) = match r {
            Ok(r) => (Outcome::Acked(r.into_inner()), "ok".to_string()),
            Err(s) => {
                let reason = crate::common::reason(&s);
                if reason.is_empty() {
                    self.lost = true;
                }
                let how = format!("{:?} {reason}", s.code());
                if refused(&s, restore) {
                    (Outcome::Refused, format!("refused: {how}"))
                } else {
                    (Outcome::Unknown, format!("unknown: {how}"))
                }
            }
        };
        self.trace.push(format!("{what}: {how}"));
        o
    }

    /// Runs one operation.
    pub async fn run(&mut self, op: Op) -> Result<(), String> {
        let r = tokio::time::timeout(CALL_LIMIT, self.run_inner(op)).await;
        r.map_err(|_| format!("{op:?} did not answer within {CALL_LIMIT:?}"))?
    }

    async fn run_inner(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::CreateHabitat => self.create_habitat().await,
            Op::CreateArea => self.create_area().await,
            Op::Rename => self.rename().await,
            Op::DeleteHabitat => self.delete(true).await,
            Op::DeleteArea => self.delete(false).await,
            Op::Link => self.link(true).await,
            Op::Unlink => self.link(false).await,
            Op::Snapshot => self.snapshot().await,
            Op::Restore => self.restore().await,
            Op::Retention => self.retention().await,
            Op::Preview => self.preview().await,
            Op::Idle => self.idle().await,
            Op::Burst => {
                for _ in 0..12 {
                    if self.lost {
                        break;
                    }
                    self.create_habitat().await?;
                }
                Ok(())
            }
        }
    }

    pub async fn create_habitat(&mut self) -> Result<(), String> {
        let name = self.name("h");
        let r = self
            .entity()
            .create_habitat(pb::CreateHabitatRequest {
                habitat: Some(pb::Habitat {
                    habitat: name.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await;
        match self.outcome(format!("create habitat {name}"), r, false) {
            Outcome::Acked(r) => {
                let id = r.habitat.unwrap().habitat_id;
                self.model.event(r.event_seq);
                self.model
                    .acked(Change::Create(Table::Habitat, Some(id), name))
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(Change::Create(Table::Habitat, None, name));
                Ok(())
            }
        }
    }

    pub async fn create_area(&mut self) -> Result<(), String> {
        let name = self.name("a");
        let r = self
            .entity()
            .create_area(pb::CreateAreaRequest {
                area: Some(pb::Area {
                    area_name: name.clone(),
                    area_description: "campaign".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await;
        match self.outcome(format!("create area {name}"), r, false) {
            Outcome::Acked(r) => {
                let id = r.area.unwrap().area_id;
                self.model.event(r.event_seq);
                self.model
                    .acked(Change::Create(Table::Area, Some(id), name))
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(Change::Create(Table::Area, None, name));
                Ok(())
            }
        }
    }

    async fn rename(&mut self) -> Result<(), String> {
        let Some(id) = self.pick(self.habitats()) else {
            return Ok(());
        };
        let to = self.name("h");
        let r = self
            .entity()
            .update_habitat(pb::UpdateHabitatRequest {
                habitat: Some(pb::Habitat {
                    habitat_id: id,
                    habitat: to.clone(),
                }),
                update_mask: None,
                request_id: String::new(),
            })
            .await;
        let change = Change::Rename { id, to };
        match self.outcome(format!("{change:?}"), r, false) {
            Outcome::Acked(r) => {
                self.model.event(r.event_seq);
                self.model.acked(change)
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(change);
                Ok(())
            }
        }
    }

    async fn delete(&mut self, habitat: bool) -> Result<(), String> {
        let rows = if habitat {
            self.habitats()
        } else {
            self.areas()
        };
        let Some(id) = self.pick(rows) else {
            return Ok(());
        };
        let (r, table, t) = if habitat {
            let r = self
                .entity()
                .delete_habitat(pb::DeleteHabitatRequest {
                    habitat_id: id,
                    request_id: String::new(),
                })
                .await
                .map(|r| r.map(|r| r.outcome.unwrap()));
            (r, "habitat", Table::Habitat)
        } else {
            let r = self
                .entity()
                .delete_area(pb::DeleteAreaRequest {
                    area_id: id,
                    request_id: String::new(),
                })
                .await
                .map(|r| r.map(|r| r.outcome.unwrap()));
            (r, "area", Table::Area)
        };
        let change = Change::Delete(t, id);
        match self.outcome(format!("{change:?}"), r, false) {
            Outcome::Acked(o) => {
                if o.snapshot_id.is_empty() {
                    return Err(format!("an acknowledged delete has no snapshot: {o:?}"));
                }
                // The snapshot is the state before the delete.
                self.model.snapshot(&o.snapshot_id);
                self.model.deletes.push(AckedDelete {
                    snapshot_id: o.snapshot_id,
                    table,
                    key: id,
                });
                self.model.event(o.event_seq);
                self.model.acked(change)
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(change);
                Ok(())
            }
        }
    }

    async fn link(&mut self, create: bool) -> Result<(), String> {
        let (h, a) = if create {
            let (Some(h), Some(a)) = (self.pick(self.habitats()), self.pick(self.areas())) else {
                return Ok(());
            };
            (h, a)
        } else {
            let links: Vec<_> = self.model.candidates[0].links.iter().copied().collect();
            if links.is_empty() {
                return Ok(());
            }
            links[self.rng.random_range(0..links.len())]
        };
        let link = pb::Link {
            link_type: pb::LinkType::HabitatCreationArea as i32,
            habitat_id: h,
            area_id: a,
            ..Default::default()
        };
        let (r, change) = if create {
            let r = self
                .entity()
                .create_link(pb::CreateLinkRequest {
                    link: Some(link),
                    request_id: String::new(),
                })
                .await
                .map(|r| r.map(|r| (r.event_seq, String::new())));
            (r, Change::Link(h, a))
        } else {
            let r = self
                .entity()
                .delete_link(pb::DeleteLinkRequest {
                    link: Some(link),
                    request_id: String::new(),
                })
                .await
                .map(|r| {
                    r.map(|r| {
                        let o = r.outcome.unwrap();
                        (o.event_seq, o.snapshot_id)
                    })
                });
            (r, Change::Unlink(h, a))
        };
        match self.outcome(format!("{change:?}"), r, false) {
            Outcome::Acked((seq, snapshot)) => {
                if !snapshot.is_empty() {
                    self.model.snapshot(&snapshot);
                }
                self.model.event(seq);
                self.model.acked(change)
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(change);
                Ok(())
            }
        }
    }

    pub async fn snapshot(&mut self) -> Result<(), String> {
        let r = self
            .snapshots()
            .create_snapshot(pb::CreateSnapshotRequest {
                description: "campaign".into(),
                ..Default::default()
            })
            .await;
        if let Outcome::Acked(r) = self.outcome("create snapshot".to_string(), r, false) {
            self.model.snapshot(&r.snapshot.unwrap().snapshot_id);
            self.model.event(r.event_seq);
        }
        Ok(())
    }

    /// Restores one of the snapshots the client knows (a random one).
    pub async fn restore(&mut self) -> Result<(), String> {
        let known: Vec<String> = self
            .model
            .snapshots
            .keys()
            .filter(|k| !self.model.forgotten.contains(*k))
            .cloned()
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        let id = known[self.rng.random_range(0..known.len())].clone();
        let r = self
            .snapshots()
            .restore_snapshot(pb::RestoreSnapshotRequest {
                snapshot_id: id.clone(),
                confirm_snapshot_id: id.clone(),
                request_id: String::new(),
            })
            .await;
        let target = self.model.snapshots[&id].clone();
        match self.outcome(format!("restore {id}"), r, true) {
            Outcome::Acked(r) => {
                self.model.event(r.event_seq);
                if r.rolled_back {
                    Ok(())
                } else {
                    self.model.acked(Change::Become(target))
                }
            }
            Outcome::Refused => Ok(()),
            Outcome::Unknown => {
                self.model.maybe(Change::Become(target));
                Ok(())
            }
        }
    }

    async fn retention(&mut self) -> Result<(), String> {
        let r = self
            .snapshots()
            .apply_retention(pb::ApplyRetentionRequest {
                keep_last: 1,
                ..Default::default()
            })
            .await;
        match self.outcome("retention keep 1".to_string(), r, false) {
            Outcome::Acked(r) => {
                self.model.event(r.event_seq);
                for d in r.decisions.iter().filter(|d| d.removed) {
                    self.model.forgotten.insert(d.snapshot_id.clone());
                }
            }
            // Any of them may be gone.
            Outcome::Unknown => {
                let all: Vec<String> = self.model.snapshots.keys().cloned().collect();
                self.model.forgotten.extend(all);
            }
            Outcome::Refused => {}
        }
        Ok(())
    }

    async fn preview(&mut self) -> Result<(), String> {
        let Some(id) = self.model.snapshots.keys().next().cloned() else {
            return Ok(());
        };
        let r = self
            .snapshots()
            .preview_snapshot(pb::PreviewSnapshotRequest {
                snapshot_id: id,
                table: "habitat".into(),
                limit: 5,
            })
            .await;
        self.outcome("preview".to_string(), r, false);
        Ok(())
    }
}
