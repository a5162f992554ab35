//! DataService: ImportDatabase (client streaming: options, then the file) and ExportData (server
//! streaming: each file's header, then its bytes, then a summary), thin over
//! [`crate::app::data`].

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::files::{self, FileStream};
use crate::app::data::{Export, ImportKind, ImportOutcome, ImportRequest};
use crate::app::App;
use crate::dataio::export::{Format, Scope};
use crate::dataio::DataIoError;
use crate::error::Error;
use crate::pb::{self, data_service_server::DataService};

#[derive(Clone)]
pub struct DataApi {
    app: App,
}

impl DataApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

type R<T> = Result<Response<T>, Status>;

fn options(m: &pb::ImportDatabaseRequest) -> Result<(ImportRequest, Option<u64>), Error> {
    let Some(pb::import_database_request::Part::Options(o)) = &m.part else {
        return Err(DataIoError::UploadOptionsMissing.into());
    };
    if o.total_bytes == 0 {
        return Err(DataIoError::UploadOptionsMissing.into());
    }
    let kind = match pb::ImportFormat::try_from(o.format) {
        Ok(pb::ImportFormat::Unspecified) => None,
        Ok(pb::ImportFormat::Duckdb) => Some(ImportKind::DuckDb),
        Ok(pb::ImportFormat::CsvZip) => Some(ImportKind::CsvZip),
        Err(_) => {
            return Err(Error::invalid(
                "options.format",
                "UNKNOWN_IMPORT_FORMAT",
                format!("{} is not an import format", o.format),
            ))
        }
    };
    Ok((
        ImportRequest {
            dry_run: o.dry_run,
            kind,
            file_name: o.file_name.clone(),
        },
        Some(o.total_bytes),
    ))
}

fn data_of(m: pb::ImportDatabaseRequest) -> Vec<u8> {
    match m.part {
        Some(pb::import_database_request::Part::Data(d)) => d,
        _ => Vec::new(),
    }
}

fn import_response(o: ImportOutcome) -> pb::ImportDatabaseResponse {
    let tables: Vec<pb::TableImportReport> = o
        .reports
        .iter()
        .map(|r| pb::TableImportReport {
            table: r.table.clone(),
            present: r.present,
            rows_read: r.rows_read,
            rows_accepted: r.rows_accepted,
            duplicates_collapsed: r.duplicates_collapsed,
            rows_rejected: r.rows_rejected,
            rejected: r
                .rejected
                .iter()
                .map(|x| pb::RejectedRow {
                    row: x.row,
                    reason: x.reason.into(),
                    column: x.column.clone().unwrap_or_default(),
                    detail: x.detail.clone(),
                })
                .collect(),
            notes: r.notes.clone(),
        })
        .collect();
    let sum = |f: fn(&pb::TableImportReport) -> u64| tables.iter().map(f).sum();
    let mut res = pb::ImportDatabaseResponse {
        format: match o.kind {
            ImportKind::DuckDb => pb::ImportFormat::Duckdb,
            ImportKind::CsvZip => pb::ImportFormat::CsvZip,
        } as i32,
        source_engine: o.engine,
        rows_accepted: sum(|t| t.rows_accepted),
        rows_rejected: sum(|t| t.rows_rejected),
        duplicates_collapsed: sum(|t| t.duplicates_collapsed),
        tables,
        dry_run: o.dry_run,
        ignored: o.ignored,
        ..Default::default()
    };
    if let Some(s) = o.swap {
        res.imported = !s.rolled_back;
        res.snapshot_id = s.restored.id.to_string();
        res.safety_snapshot_id = s.safety_snapshot_id;
        res.report = Some(convert::report(&s.report));
        res.rolled_back = s.rolled_back;
        res.rollback_reason = s.rollback_reason.unwrap_or_default();
        res.event_seq = s.event_seq;
        res.duration = Some(convert::duration(s.duration));
    }
    res
}

fn format_in(f: i32) -> Result<Format, Error> {
    Ok(match pb::ExportFormat::try_from(f) {
        Ok(pb::ExportFormat::Csv) => Format::Csv,
        Ok(pb::ExportFormat::Parquet) => Format::Parquet,
        Ok(pb::ExportFormat::Duckdb) => Format::DuckDb,
        Ok(pb::ExportFormat::Geojson) => Format::GeoJson,
        _ => {
            return Err(Error::invalid(
                "format",
                "EXPORT_FORMAT_REQUIRED",
                "one of CSV, PARQUET, DUCKDB, GEOJSON",
            ))
        }
    })
}

fn scope_in(s: Option<pb::export_data_request::Scope>) -> Result<Scope, Error> {
    use pb::export_data_request::Scope as S;
    Ok(match s {
        None => Scope::All,
        Some(S::Table(t)) => Scope::Table(t),
        Some(S::Set(set)) => match pb::ExportSet::try_from(set) {
            Ok(pb::ExportSet::Unspecified) | Ok(pb::ExportSet::All) => Scope::All,
            Ok(pb::ExportSet::Core) => Scope::Core,
            Ok(pb::ExportSet::Bridges) => Scope::Bridges,
            Ok(pb::ExportSet::Unfunded) => Scope::Unfunded,
            Err(_) => {
                return Err(Error::invalid(
                    "set",
                    "UNKNOWN_EXPORT_SET",
                    format!("{set} is not an export set"),
                ))
            }
        },
    })
}

/// Streams every file of `export` (header, then bytes), then the summary.
fn stream_export(
    export: Export,
    started: std::time::Instant,
) -> FileStream<pb::ExportDataResponse> {
    use pb::export_data_response::Part;
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        // The whole export, its scratch directory included (a closure would otherwise capture
        // only the fields it names, and the directory would go before its files are sent).
        let export = export;
        let total: u64 = export.files.iter().map(|f| f.size).sum();
        for f in &export.files {
            let header = pb::ExportFile {
                name: f.name.clone(),
                table: f.table.clone(),
                size_bytes: f.size,
                rows: f.rows,
                blake3: f.blake3.to_hex().to_string(),
                export_total_bytes: total,
            };
            if tx
                .blocking_send(Ok(pb::ExportDataResponse {
                    part: Some(Part::File(header)),
                }))
                .is_err()
            {
                return;
            }
            let piece = |_, data| pb::ExportDataResponse {
                part: Some(Part::Data(data)),
            };
            match files::send_blocking(&tx, f.file.path(), &piece) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::from(Error::from(DataIoError::Io(e)))));
                    return;
                }
            }
        }
        let summary = pb::ExportSummary {
            files: export.files.len() as u32,
            total_bytes: total,
            snapshot_id: export.snapshot_id.clone().unwrap_or_default(),
            event_head_seq: export.event_head_seq,
            duration: Some(convert::duration(started.elapsed())),
        };
        let _ = tx.blocking_send(Ok(pb::ExportDataResponse {
            part: Some(Part::Summary(summary)),
        }));
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl DataService for DataApi {
    async fn import_database(
        &self,
        req: Request<Streaming<pb::ImportDatabaseRequest>>,
    ) -> R<pb::ImportDatabaseResponse> {
        let c = super::ctx::ctx_with(&req, "", blake3::hash(b"ImportDatabase"))?;
        let stream = req.into_inner();
        let (opts, file) =
            files::receive(&self.app, "import-upload", stream, options, data_of).await?;
        let out = self.app.import_database(c, file, opts).await?;
        Ok(Response::new(import_response(out)))
    }

    type ExportDataStream = FileStream<pb::ExportDataResponse>;

    async fn export_data(&self, req: Request<pb::ExportDataRequest>) -> R<Self::ExportDataStream> {
        let started = std::time::Instant::now();
        let r = req.into_inner();
        let format = format_in(r.format)?;
        let scope = scope_in(r.scope)?;
        let snapshot = Some(r.snapshot_id).filter(|s| !s.is_empty());
        let export = self.app.export_data(format, scope, snapshot).await?;
        Ok(Response::new(stream_export(export, started)))
    }
}
