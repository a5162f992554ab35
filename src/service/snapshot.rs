//! `lnrs.v1.SnapshotService`: thin handlers over the snapshot use cases in [`crate::app`].

use tonic::{Request, Response, Status};

use super::convert::{self, from_duration, from_timestamp};
use super::ctx::ctx;
use super::files;
use super::paging::{bad_token, page_size, PageQuery};
use crate::app::status::SnapshotState;
use crate::app::App;
use crate::config::SnapshotPolicy;
use crate::error::Error;
use crate::pb::{self, snapshot_service_server::SnapshotService};
use crate::snapshot::retention::RetentionReason;
use crate::snapshot::{AnnotationUpdate, ListFilter, SnapshotId};

/// Bounds on snapshot metadata users give (CreateSnapshot, UpdateSnapshot).
const MAX_DESCRIPTION: usize = 500;
const MAX_LABELS: usize = 32;

/// The SnapshotService implementation.
#[derive(Clone)]
pub struct SnapshotApi {
    app: App,
}

impl SnapshotApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    async fn snapshot_message(&self, id: &str) -> Result<pb::Snapshot, Error> {
        let m = self.app.get_snapshot(id).await?;
        self.listed(&m).await
    }

    /// A manifest as a message, as listed (stored bytes, the user's pin, labels and
    /// description).
    async fn listed(&self, m: &crate::snapshot::Manifest) -> Result<pb::Snapshot, Error> {
        let item = self.app.snapshot_listing(m.id.as_str()).await?;
        Ok(convert::snapshot(m, item.as_ref()))
    }

    /// The response of a restore (RestoreSnapshot, RestoreToPoint).
    async fn restored(
        &self,
        out: &crate::app::Replayable<crate::app::restore::RestoreOutcome>,
    ) -> Result<pb::RestoreSnapshotResponse, Error> {
        let o = &out.value;
        Ok(pb::RestoreSnapshotResponse {
            safety_snapshot_id: o.safety_snapshot_id.clone(),
            report: Some(convert::report(&o.report)),
            rolled_back: o.rolled_back,
            rollback_reason: o.rollback_reason.clone().unwrap_or_default(),
            event_seq: o.event_seq,
            restored: Some(self.listed(&o.restored).await?),
            duration: Some(convert::duration(o.duration)),
            replayed: out.replayed,
        })
    }
}

type R<T> = Result<Response<T>, Status>;

/// A description users give: trimmed, 1 to [`MAX_DESCRIPTION`] characters.
fn validate_description(description: &str) -> Result<String, Error> {
    let description = description.trim();
    if description.is_empty() || description.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            "description",
            "INVALID_DESCRIPTION",
            format!("is required, at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(description.to_string())
}

/// The fields UpdateSnapshot may change, as update_mask names them.
const UPDATABLE: [&str; 3] = ["pinned", "labels", "description"];

/// The change an UpdateSnapshotRequest asks for: exactly the fields its mask names, each
/// validated as CreateSnapshot validates it.
fn annotation_update(r: &pb::UpdateSnapshotRequest) -> Result<AnnotationUpdate, Error> {
    let paths = r.update_mask.as_ref().map_or(&[][..], |m| &m.paths[..]);
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "UPDATE_MASK_REQUIRED",
            format!("name the fields to change: {}", UPDATABLE.join(", ")),
        ));
    }
    let mut update = AnnotationUpdate::default();
    for path in paths {
        match path.as_str() {
            "pinned" => update.pinned = Some(r.pinned),
            "labels" => {
                validate_labels(&r.labels)?;
                update.labels = Some(r.labels.clone());
            }
            "description" => update.description = Some(validate_description(&r.description)?),
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    "UNKNOWN_FIELD_IN_MASK",
                    format!(
                        "`{other}` is not an updatable field of a snapshot ({})",
                        UPDATABLE.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(update)
}

fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            "labels",
            "TOO_MANY_LABELS",
            format!("at most {MAX_LABELS}"),
        ));
    }
    for (k, v) in labels {
        let ok_key = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
        if !ok_key {
            return Err(Error::invalid(
                format!("labels[{k}]"),
                "INVALID_LABEL",
                "keys are 1-63 characters of a-z, 0-9, _ - .",
            ));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("labels[{k}]"),
                "INVALID_LABEL",
                "values are at most 256 characters, no control characters",
            ));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl SnapshotService for SnapshotApi {
    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let description = validate_description(&r.description)?;
        validate_labels(&r.labels)?;
        let out = self.app.create_snapshot(c, description, r.labels).await?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(self.snapshot_message(&out.value.snapshot_id).await?),
            event_seq: out.value.event_seq,
            replayed: out.replayed,
        }))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        let r = req.into_inner();
        let filter = ListFilter {
            operation: convert::operation_in(r.operation)?,
            entity_type: Some(r.entity_type).filter(|s| !s.is_empty()),
            entity_id: Some(r.entity_id).filter(|s| !s.is_empty()),
            created_after: r
                .created_after
                .map(|t| from_timestamp("created_after", t))
                .transpose()?,
            created_before: r
                .created_before
                .map(|t| from_timestamp("created_before", t))
                .transpose()?,
            page_size: page_size(r.page_size, 50, 500)?,
            page_token: if r.page_token.is_empty() {
                None
            } else {
                Some(SnapshotId::parse(&r.page_token).map_err(|_| {
                    Error::invalid(
                        "page_token",
                        "INVALID_PAGE_TOKEN",
                        "is not a token from this listing",
                    )
                })?)
            },
        };
        let page = self.app.list_snapshots(filter).await?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: page.items.iter().map(convert::snapshot_item).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            total_size: page.total_count as i64,
        }))
    }

    async fn get_snapshot(
        &self,
        req: Request<pb::GetSnapshotRequest>,
    ) -> R<pb::GetSnapshotResponse> {
        let id = req.into_inner().snapshot_id;
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: Some(self.snapshot_message(&id).await?),
        }))
    }

    async fn preview_snapshot(
        &self,
        req: Request<pb::PreviewSnapshotRequest>,
    ) -> R<pb::PreviewSnapshotResponse> {
        let r = req.into_inner();
        let limit = match r.limit {
            n if n < 0 => {
                return Err(Error::invalid("limit", "INVALID_LIMIT", "must not be negative").into())
            }
            0 => 20,
            n => n as usize,
        };
        let table = Some(r.table).filter(|t| !t.is_empty());
        let p = self
            .app
            .preview_snapshot(&r.snapshot_id, table, limit)
            .await?;
        use crate::app::snapshots::PreviewCell;
        use pb::preview_value::Kind;
        Ok(Response::new(pb::PreviewSnapshotResponse {
            table_rows: convert::row_counts(&p.table_rows),
            columns: p.columns,
            rows: p
                .rows
                .into_iter()
                .map(|cells| pb::PreviewRow {
                    values: cells
                        .into_iter()
                        .map(|c| pb::PreviewValue {
                            kind: match c {
                                PreviewCell::Null => None,
                                PreviewCell::Int(i) => Some(Kind::Integer(i)),
                                PreviewCell::Text(t) => Some(Kind::Text(t)),
                                PreviewCell::Blob(n) => Some(Kind::BlobBytes(n)),
                            },
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn verify_snapshot(
        &self,
        req: Request<pb::VerifySnapshotRequest>,
    ) -> R<pb::VerifySnapshotResponse> {
        let r = req.into_inner();
        let deep = match pb::VerifyMode::try_from(r.mode) {
            Ok(pb::VerifyMode::Deep) => true,
            Ok(_) => false,
            Err(_) => {
                return Err(
                    Error::invalid("mode", "INVALID_VERIFY_MODE", "must be QUICK or DEEP").into(),
                )
            }
        };
        let report = match pb::HistorySource::try_from(r.source) {
            Ok(pb::HistorySource::Replica) => {
                self.app.verify_in_replica(&r.snapshot_id, deep).await?
            }
            Ok(_) => self.app.verify_snapshot(&r.snapshot_id, deep).await?,
            Err(_) => {
                return Err(Error::invalid(
                    "source",
                    "INVALID_VERIFY_SOURCE",
                    "must be LOCAL or REPLICA",
                )
                .into())
            }
        };
        Ok(Response::new(pb::VerifySnapshotResponse {
            report: Some(convert::report(&report)),
        }))
    }

    async fn restore_snapshot(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> R<pb::RestoreSnapshotResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let out = self
            .app
            .restore(c, &r.snapshot_id, &r.confirm_snapshot_id)
            .await?;
        Ok(Response::new(self.restored(&out).await?))
    }

    async fn restore_to_point(
        &self,
        req: Request<pb::RestoreToPointRequest>,
    ) -> R<pb::RestoreToPointResponse> {
        use crate::app::timeline::{Point, Source};
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let point = match r.point {
            Some(pb::restore_to_point_request::Point::EventSeq(s)) => Point::Seq(s),
            Some(pb::restore_to_point_request::Point::Time(t)) => {
                Point::Time(convert::from_timestamp("time", t)?)
            }
            None => {
                return Err(
                    Error::invalid("point", "POINT_REQUIRED", "set event_seq or time").into(),
                )
            }
        };
        let source = match pb::HistorySource::try_from(r.source) {
            Ok(pb::HistorySource::Replica) => Source::Replica,
            Ok(_) => Source::Local,
            Err(_) => {
                return Err(
                    Error::invalid("source", "INVALID_SOURCE", "must be LOCAL or REPLICA").into(),
                )
            }
        };
        let (plan, out) = self
            .app
            .restore_to_point(c, point, source, r.dry_run)
            .await?;
        let restore = match &out {
            Some(out) => Some(self.restored(out).await?),
            None => None,
        };
        Ok(Response::new(pb::RestoreToPointResponse {
            plan: Some(pb::RestorePlan {
                base_snapshot_id: plan.base.to_string(),
                base_event_seq: plan.base_seq,
                target_event_seq: plan.target_seq,
                target_time: plan.target_time.map(convert::timestamp),
                events_to_replay: plan.events_to_replay,
                bytes_to_fetch: plan.bytes_to_fetch,
                earliest_reachable_seq: plan.earliest_seq,
                head_seq: plan.head_seq,
            }),
            restore,
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> R<pb::DeleteSnapshotResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        let out = self.app.delete_snapshot(c, &r.snapshot_id, r.force).await?;
        Ok(Response::new(pb::DeleteSnapshotResponse {
            bytes_freed: out.value.bytes_freed,
            event_seq: out.value.event_seq,
        }))
    }

    async fn apply_retention(
        &self,
        req: Request<pb::ApplyRetentionRequest>,
    ) -> R<pb::ApplyRetentionResponse> {
        let c = ctx(&req, "")?;
        let r = req.into_inner();
        let keep_within = r
            .keep_within
            .map(|d| from_duration("keep_within", d))
            .transpose()?;
        let keep_last = (r.keep_last > 0).then_some(r.keep_last as usize);
        let (outcome, event_seq) = self
            .app
            .apply_retention(c, keep_last, keep_within, r.dry_run)
            .await?;
        let reason = |rs: &[RetentionReason]| {
            rs.iter()
                .map(|r| match r {
                    RetentionReason::Newest => "newest",
                    RetentionReason::NewestVerified => "newest_verified",
                    RetentionReason::Pinned => "pinned",
                    RetentionReason::KeepLast => "keep_last",
                    RetentionReason::KeepWithin => "keep_within",
                    RetentionReason::Expired => "expired",
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut decisions: Vec<pb::RetentionDecision> = outcome
            .kept
            .iter()
            .map(|d| (d, false))
            .chain(outcome.removed.iter().map(|d| (d, true)))
            .map(|(d, removed)| pb::RetentionDecision {
                snapshot_id: d.id.as_str().to_string(),
                removed,
                reason: reason(&d.reasons),
            })
            .collect();
        decisions.sort_by(|a, b| b.snapshot_id.cmp(&a.snapshot_id));
        Ok(Response::new(pb::ApplyRetentionResponse {
            decisions,
            bytes_freed: outcome.gc.as_ref().map_or(0, |g| g.bytes_freed),
            event_seq,
        }))
    }

    async fn diff_snapshots(
        &self,
        req: Request<pb::DiffSnapshotsRequest>,
    ) -> R<pb::DiffSnapshotsResponse> {
        let r = req.into_inner();
        let from = convert::state_ref("from", r.from)?;
        let to = convert::state_ref("to", r.to)?;
        let limit = page_size(r.page_size, 100, 1000)?;
        let q = PageQuery::new(&["diff", &format!("{from:?}"), &format!("{to:?}"), &r.table]);
        // The cursor: rows already sent, and the head "live" meant on the first page, so that
        // every page is a page of one diff.
        let (offset, head): (usize, u64) = q
            .cursor(&r.page_token)?
            .unwrap_or((0, self.app.event_head()));
        let table = Some(r.table).filter(|t| !t.is_empty());
        let (tables, rows) = self
            .app
            .diff_states(from.pinned(head), to.pinned(head), table)
            .await?;
        if offset > rows.len() {
            return Err(bad_token().into());
        }
        let end = offset.saturating_add(limit).min(rows.len());
        let next_page_token = if end < rows.len() {
            q.token(&(end, head))?
        } else {
            String::new()
        };
        Ok(Response::new(pb::DiffSnapshotsResponse {
            tables: tables.iter().map(convert::table_diff).collect(),
            rows: rows
                .get(offset.min(end)..end)
                .unwrap_or_default()
                .iter()
                .map(convert::row_diff)
                .collect(),
            next_page_token,
        }))
    }

    async fn update_snapshot(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> R<pb::UpdateSnapshotResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        let update = annotation_update(r)?;
        let out = self.app.update_snapshot(c, &r.snapshot_id, update).await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            snapshot: Some(self.snapshot_message(&out.value.snapshot_id).await?),
            event_seq: out.value.event_seq,
            replayed: out.replayed,
        }))
    }

    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> R<pb::GetStatusResponse> {
        let s = self.app.status().await?;
        let cfg = self.app.config();
        Ok(Response::new(pb::GetStatusResponse {
            state: match s.health.state {
                SnapshotState::Enabled => pb::SnapshotState::Enabled,
                SnapshotState::Degraded => pb::SnapshotState::Degraded,
                SnapshotState::Disabled => pb::SnapshotState::Disabled,
            } as i32,
            reason: s.health.reason.unwrap_or_default(),
            policy: match s.policy {
                SnapshotPolicy::Required => pb::SnapshotPolicy::Required,
                SnapshotPolicy::BestEffort => pb::SnapshotPolicy::BestEffort,
                SnapshotPolicy::Disabled => pb::SnapshotPolicy::Disabled,
            } as i32,
            snapshot_count: s.stats.snapshot_count as i64,
            logical_bytes: s.stats.logical_bytes,
            stored_bytes: s.stats.stored_bytes,
            duckdb_library_version: s.duckdb_version,
            storage_version: s.storage_version,
            event_head_seq: s.event_head,
            event_first_seq: s.event_first,
            restore_in_progress: s.restore_in_progress,
            retention_keep_last: cfg.retention_keep_last as u32,
            retention_keep_within: cfg.retention_keep_within.map(convert::duration),
            database_bytes: s.database_bytes,
            table_rows: convert::row_counts(&s.table_rows),
            database_available: s.database_unavailable.is_none(),
            database_reason: s.database_unavailable.unwrap_or_default(),
            replica: self
                .app
                .replica_status()
                .map(|r| convert::replica_status(&r.against_head(s.event_head))),
            follower: self.app.follower_status().map(|f| pb::FollowerStatus {
                url: f.url.clone(),
                applied_seq: f.applied_seq,
                source_head_seq: f.source_head_seq,
                staleness_seconds: f.staleness_secs().unwrap_or(-1.0),
                error: f.error.clone().unwrap_or_default(),
            }),
            capture_ahead: Some(convert::capture_ahead(&self.app.shared.capture_ahead.get())),
            event_sink: self
                .app
                .event_sink_status()
                .map(|s| convert::event_sink_status(&s)),
            ..Default::default()
        }))
    }

    async fn drill_replica(
        &self,
        req: Request<pb::DrillReplicaRequest>,
    ) -> R<pb::DrillReplicaResponse> {
        let share = req.into_inner().share_percent;
        let d = self.app.drill_replica((share > 0).then_some(share)).await?;
        Ok(Response::new(pb::DrillReplicaResponse {
            run: d.run,
            cycle: d.cycle,
            blocks_total: d.blocks_total,
            blocks_read: d.blocks_read,
            bytes_read: d.bytes_read,
            damaged: d.bad,
        }))
    }

    async fn apply_replica_retention(
        &self,
        req: Request<pb::ApplyReplicaRetentionRequest>,
    ) -> R<pb::ApplyReplicaRetentionResponse> {
        let g = self.app.replica_retention(req.into_inner().dry_run).await?;
        let ids =
            |v: &[crate::snapshot::SnapshotId]| v.iter().rev().map(|i| i.to_string()).collect();
        Ok(Response::new(pb::ApplyReplicaRetentionResponse {
            kept_snapshot_ids: ids(&g.kept),
            removed_snapshot_ids: ids(&g.removed),
            blocks_removed: g.blocks_removed,
            bytes_freed: g.bytes_freed,
            segments_removed: g.segments_removed,
        }))
    }

    type ExportSnapshotStream = files::FileStream<pb::ExportSnapshotResponse>;

    async fn export_snapshot(
        &self,
        req: Request<pb::ExportSnapshotRequest>,
    ) -> R<Self::ExportSnapshotStream> {
        let id = req.into_inner().snapshot_id;
        let (file, written) = self.app.save_snapshot(Some(&id)).await?;
        let snapshot_id = written.manifest.id.to_string();
        let total_bytes = written.bytes;
        let piece = move |offset, data| pb::ExportSnapshotResponse {
            snapshot_id: snapshot_id.clone(),
            total_bytes,
            offset,
            data,
            file_blake3: String::new(),
        };
        let last = pb::ExportSnapshotResponse {
            snapshot_id: written.manifest.id.to_string(),
            total_bytes,
            offset: total_bytes,
            data: Vec::new(),
            file_blake3: written.blake3.to_hex().to_string(),
        };
        Ok(Response::new(files::send(file, piece, Some(last))))
    }

    async fn import_snapshot(
        &self,
        req: Request<tonic::Streaming<pb::ImportSnapshotRequest>>,
    ) -> R<pb::ImportSnapshotResponse> {
        let c = super::ctx::ctx_with(&req, "", blake3::hash(b"ImportSnapshot"))?;
        let stream = req.into_inner();
        let first =
            |m: &pb::ImportSnapshotRequest| Ok(((), Some(m.total_bytes).filter(|n| *n > 0)));
        let ((), file) =
            files::receive(&self.app, "load.lnrs-snapshot", stream, first, |m| m.data).await?;
        let loaded = self.app.load_snapshot(c, file).await?;
        Ok(Response::new(pb::ImportSnapshotResponse {
            snapshot: Some(self.listed(&loaded.manifest).await?),
            report: Some(convert::report(&loaded.report)),
            already_present: loaded.already_present,
            file_blake3: loaded.blake3.to_hex().to_string(),
        }))
    }
}
