//! The users' data in and out (DataService): ImportDatabase stages an upload into a validated
//! database in this schema (off the writer), then — unless it is a dry run — swaps it in through
//! the restore machinery as an IMPORT snapshot (safety snapshot, deep verify, atomic swap,
//! integrity report, auto-rollback, IMPORTED event). ExportData writes files from one consistent
//! state: a copy of the live database the writer takes between transactions, or a snapshot
//! assembled from the store.

use std::path::PathBuf;

use super::restore::{RestoreOutcome, StagedImport, SwapTarget};
use super::snapshots::blocking;
use super::{App, RequestCtx};
use crate::dataio::detect::{describe_storage, detect, FileKind};
use crate::dataio::export::{self, ExportedFile, Format, Scope};
use crate::dataio::source::{read_csv_zip, read_duckdb};
use crate::dataio::stage::{stage, TableReport};
use crate::dataio::{DataIoError, StagedFile};
use crate::error::Error;
use crate::snapshot::{Operation, SnapshotId};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub dry_run: bool,
    /// The kind the client says it sends (None: detected).
    pub kind: Option<ImportKind>,
    /// For the report and the snapshot's description (no path is kept).
    pub file_name: String,
}

/// What an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    DuckDb,
    CsvZip,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub kind: ImportKind,
    pub engine: String,
    pub reports: Vec<TableReport>,
    /// Files or tables of the upload that are not LNRS tables (left out).
    pub ignored: Vec<String>,
    pub dry_run: bool,
    /// The swap, unless a dry run.
    pub swap: Option<RestoreOutcome>,
}

/// One export's files, and the state they hold.
pub struct Export {
    pub files: Vec<ExportedFile>,
    /// The snapshot exported (None: the live database).
    pub snapshot_id: Option<String>,
    pub event_head_seq: u64,
    /// The directory holding the files (removed when this drops).
    _dir: ScratchDir,
}

/// A scratch directory removed on drop (an export the client abandons leaves nothing).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl App {
    /// Stages `upload` and (unless `dry_run`) swaps it in. See the module docs.
    pub async fn import_database(
        &self,
        ctx: RequestCtx,
        upload: StagedFile,
        req: ImportRequest,
    ) -> Result<ImportOutcome, Error> {
        let store = self.shared.store()?;
        let max_unpacked = self.shared.config.import_max_unpacked_bytes;
        let staged_file = StagedFile::adopt(store.scratch_path("import-staged.duckdb"));
        let staged_path = staged_file.path().to_path_buf();
        let wanted = req.kind;
        // All of it blocks (the engine probe opens a database, reading and staging do I/O), and
        // only the reports leave: the source rows are dropped before the swap.
        let (kind, engine, ignored, staged) = blocking(move || {
            let readable = store.engine_storage_version()?;
            let found = detect(upload.path(), readable)?;
            let kind = match found {
                FileKind::DuckDb { .. } => ImportKind::DuckDb,
                FileKind::Zip => ImportKind::CsvZip,
            };
            if wanted.is_some_and(|w| w != kind) {
                return Err(DataIoError::UnsupportedFileType(format!(
                    "the upload is a {}, not what the request said",
                    match kind {
                        ImportKind::DuckDb => "DuckDB database",
                        ImportKind::CsvZip => "ZIP archive",
                    }
                ))
                .into());
            }
            let source = match found {
                FileKind::DuckDb { storage_version } => {
                    read_duckdb(upload.path(), describe_storage(storage_version))?
                }
                FileKind::Zip => read_csv_zip(upload.path(), max_unpacked)?,
            };
            drop(upload);
            let staged = stage(&source, &staged_path)?;
            Ok((kind, source.engine, source.ignored, staged))
        })
        .await?;
        let crate::dataio::stage::Staged {
            reports,
            fingerprints,
            schema,
        } = staged;
        let mut outcome = ImportOutcome {
            kind,
            engine,
            reports,
            ignored,
            dry_run: req.dry_run,
            swap: None,
        };
        if req.dry_run {
            return Ok(outcome);
        }
        let description = match req.file_name.as_str() {
            "" => "Import".to_string(),
            name => format!("Import of {}", clip(name)),
        };
        let c = ctx.clone();
        let swap = self
            .write(&ctx, move |st| {
                let mut snapshot = st.new_snapshot(Operation::Import, description, &c);
                snapshot.fingerprints = fingerprints;
                snapshot.schema = schema;
                let target = StagedImport {
                    path: staged_file.path().to_path_buf(),
                    snapshot,
                };
                let out = st.swap_in(&c, SwapTarget::Import(Box::new(target)));
                drop(staged_file);
                out
            })
            .await?;
        outcome.swap = Some(swap);
        Ok(outcome)
    }

    /// Writes an export of the live database (or of `snapshot`) into scratch files.
    pub async fn export_data(
        &self,
        format: Format,
        scope: Scope,
        snapshot: Option<String>,
    ) -> Result<Export, Error> {
        export::relations(&scope)?;
        let store = self.shared.store()?;
        let dir = ScratchDir(store.scratch_path("export"));
        let out = dir.0.clone();
        match snapshot {
            Some(id) => {
                let id = SnapshotId::parse(&id)?;
                let head = store.get(&id)?.meta.event_head_seq;
                let (files, sid) = blocking(move || {
                    let files = store.with_assembled(&id, |db| {
                        Ok::<_, Error>(export::export(db, format, &scope, &out)?)
                    })?;
                    Ok((files, id.to_string()))
                })
                .await?;
                Ok(Export {
                    files,
                    snapshot_id: Some(sid),
                    event_head_seq: head,
                    _dir: dir,
                })
            }
            None => {
                let copy = StagedFile::adopt(store.scratch_path("export-source.duckdb"));
                let path = copy.path().to_path_buf();
                let ctx = RequestCtx::internal("export");
                let head = self.write(&ctx, move |st| st.copy_live(&path)).await?;
                let files = blocking(move || {
                    let files = export::export(copy.path(), format, &scope, &out)?;
                    drop(copy);
                    Ok(files)
                })
                .await?;
                Ok(Export {
                    files,
                    snapshot_id: None,
                    event_head_seq: head,
                    _dir: dir,
                })
            }
        }
    }
}

fn clip(s: &str) -> String {
    let name = s.rsplit(['/', '\\']).next().unwrap_or(s);
    name.chars().filter(|c| !c.is_control()).take(120).collect()
}

impl super::state::WriterState {
    /// Copies the live database, checkpointed, to `dest` (between transactions: the copy is
    /// one committed state). Returns the event head it holds.
    pub(crate) fn copy_live(&mut self, dest: &std::path::Path) -> Result<u64, Error> {
        self.db.checkpoint()?;
        std::fs::copy(self.db.path(), dest)
            .map_err(|e| crate::storage::StorageError::io(dest, e))?;
        Ok(self.next_seq - 1)
    }
}
