//! Files to and from the server: `lnrs snapshot save|load`, `lnrs import`, `lnrs export`.
//! Uploads and downloads stream in 1 MiB chunks with a progress bar on an interactive stderr
//! (plain start/end lines otherwise, nothing with --json); downloads are written to a
//! temporary name and renamed into place only once complete and checked.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_stream::StreamExt;

use super::client::{Ctx, Failure};
use super::output;
use crate::pb;

/// Prints `text` as the command's result, ending its line.
fn say(text: &str) -> Result<(), Failure> {
    output::print(&format!("{text}\n"))
}

/// Upload chunk size.
const CHUNK: usize = 1 << 20;

/// A byte-counting progress bar; hidden when stderr is not a terminal or output is JSON.
pub(crate) fn bar(ctx: &Ctx, label: &str, total: u64) -> ProgressBar {
    if ctx.json() || !std::io::stderr().is_terminal() {
        if !ctx.json() {
            eprintln!("{label}: {}", output::bytes(total));
        }
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_message(label.to_string());
    b
}

/// Reads `file` as a stream of chunks wrapped by `wrap(first, bytes)`, advancing `bar`.
fn chunks<T: Send + 'static>(
    file: &Path,
    bar: ProgressBar,
    wrap: impl Fn(bool, Vec<u8>) -> T + Send + 'static,
) -> Result<impl tokio_stream::Stream<Item = T>, Failure> {
    let mut f = std::fs::File::open(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            bar.inc(n as u64);
            if tx.blocking_send(wrap(first, buf)).is_err() {
                break;
            }
            first = false;
        }
        bar.finish_and_clear();
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Size of a local file, or a usage error naming it.
pub(crate) fn file_len(file: &Path) -> Result<u64, Failure> {
    std::fs::metadata(file)
        .map(|m| m.len())
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))
}

/// A download target: written under a temporary name, renamed over `dest` when complete.
pub(crate) struct Download {
    dest: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    hasher: blake3::Hasher,
}

impl Download {
    pub(crate) fn create(dest: &Path) -> Result<Download, Failure> {
        if dest.exists() {
            return Err(Failure::usage(format!("{} already exists", dest.display())));
        }
        let tmp = dest.with_extension("partial");
        let f = std::fs::File::create(&tmp)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", tmp.display())))?;
        Ok(Download {
            dest: dest.to_path_buf(),
            tmp,
            out: std::io::BufWriter::new(f),
            hasher: blake3::Hasher::new(),
        })
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.hasher.update(data);
        self.out
            .write_all(data)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", self.tmp.display())))
    }

    /// Checks the hash the server announced (when it did), then renames into place.
    pub(crate) fn finish(mut self, expected_blake3: &str) -> Result<String, Failure> {
        let hash = self.hasher.finalize().to_hex().to_string();
        let fail = |e: std::io::Error| Failure::usage(format!("cannot write: {e}"));
        self.out.flush().map_err(fail)?;
        self.out.get_ref().sync_all().map_err(fail)?;
        if !expected_blake3.is_empty() && expected_blake3 != hash {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Failure::usage(format!(
                "the download does not match its checksum (got {hash}, expected {expected_blake3})"
            )));
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(fail)?;
        Ok(hash)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Only an unfinished download still has its temporary file.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// `lnrs snapshot save ID FILE`.
pub(crate) async fn save(ctx: &Ctx, id: &str, file: &Path) -> Result<(), Failure> {
    let id = if id == "latest" { "" } else { id };
    let mut download = Download::create(file)?;
    let req = pb::ExportSnapshotRequest {
        snapshot_id: id.to_string(),
    };
    let mut stream = ctx
        .snapshots()
        .export_snapshot(ctx.stream_req(req))
        .await?
        .into_inner();
    let mut bar: Option<ProgressBar> = None;
    let (mut snapshot_id, mut expected) = (String::new(), String::new());
    while let Some(m) = stream.next().await {
        let m = m?;
        let b = bar.get_or_insert_with(|| bar_for(ctx, &m));
        download.write(&m.data)?;
        b.inc(m.data.len() as u64);
        snapshot_id = m.snapshot_id;
        if !m.file_blake3.is_empty() {
            expected = m.file_blake3;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if expected.is_empty() {
        return Err(Failure::usage("the download ended before its checksum"));
    }
    let hash = download.finish(&expected)?;
    let size = file_len(file)?;
    if ctx.json() {
        return output::print_json(&json!({
            "snapshot_id": snapshot_id, "file": file.display().to_string(),
            "bytes": size, "blake3": hash,
        }));
    }
    say(&format!(
        "saved snapshot {snapshot_id} to {} ({}, blake3 {hash})",
        file.display(),
        output::bytes(size)
    ))
}

fn bar_for(ctx: &Ctx, m: &pb::ExportSnapshotResponse) -> ProgressBar {
    bar(ctx, &format!("saving {}", m.snapshot_id), m.total_bytes)
}

/// `lnrs snapshot load FILE`.
pub(crate) async fn load(ctx: &Ctx, file: &Path) -> Result<(), Failure> {
    let total = file_len(file)?;
    let b = bar(ctx, &format!("uploading {}", file.display()), total);
    let stream = chunks(file, b, move |first, data| pb::ImportSnapshotRequest {
        data,
        total_bytes: if first { total } else { 0 },
    })?;
    let r = ctx
        .snapshots()
        .import_snapshot(ctx.stream_req(stream))
        .await?
        .into_inner();
    let id = r.snapshot.as_ref().map_or("", |s| s.snapshot_id.as_str());
    let checks = r.report.as_ref().map_or(0, |r| r.checks.len());
    if ctx.json() {
        return output::print_json(&json!({
            "snapshot_id": id, "already_present": r.already_present,
            "checks_passed": checks, "blake3": r.file_blake3,
        }));
    }
    say(&if r.already_present {
        format!("snapshot {id} was already in the catalog (identical); nothing added")
    } else {
        format!("loaded snapshot {id}: deep verification passed ({checks} checks)")
    })
}

/// `lnrs import`.
#[derive(Debug, clap::Args)]
pub struct ImportCommand {
    #[command(flatten)]
    pub client: super::client::ClientArgs,
    /// The original app's DuckDB file, or a ZIP of its CSV exports.
    pub file: PathBuf,
    /// Only stage and validate: print the report, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `lnrs export`.
#[derive(Debug, clap::Args)]
pub struct ExportCommand {
    #[command(flatten)]
    pub client: super::client::ClientArgs,
    /// csv, parquet, duckdb or geojson.
    #[arg(long, value_parser = ["csv", "parquet", "duckdb", "geojson"])]
    pub format: String,
    /// Export this snapshot instead of the live database.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// One table or view (apmg_slim_vw, unfunded_links included).
    #[arg(long, conflicts_with = "set")]
    pub table: Option<String>,
    /// An export set: all, core, bridges, unfunded [default: all].
    #[arg(long, value_parser = ["all", "core", "bridges", "unfunded"])]
    pub set: Option<String>,
    /// The directory to write into (created; existing files are not overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

/// `lnrs import FILE [--dry-run]`.
pub(crate) async fn import(ctx: &Ctx, c: ImportCommand) -> Result<(), Failure> {
    let total = file_len(&c.file)?;
    let b = bar(ctx, &format!("uploading {}", c.file.display()), total);
    let options = pb::ImportOptions {
        dry_run: c.dry_run,
        format: pb::ImportFormat::Unspecified as i32,
        total_bytes: total,
        file_name: c
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    use pb::import_database_request::Part;
    let first = pb::ImportDatabaseRequest {
        part: Some(Part::Options(options)),
    };
    let data = chunks(&c.file, b, |_, data| pb::ImportDatabaseRequest {
        part: Some(Part::Data(data)),
    })?;
    let stream = tokio_stream::iter([first]).chain(data);
    let r = ctx
        .data()
        .import_database(ctx.stream_req(stream))
        .await?
        .into_inner();
    if ctx.json() {
        return output::print_json(&import_json(&r));
    }
    say(&import_report(&r))
}

fn import_json(r: &pb::ImportDatabaseResponse) -> serde_json::Value {
    let tables: Vec<_> = r
        .tables
        .iter()
        .map(|t| {
            json!({
                "table": t.table, "present": t.present, "rows_read": t.rows_read,
                "rows_accepted": t.rows_accepted, "duplicates_collapsed": t.duplicates_collapsed,
                "rows_rejected": t.rows_rejected, "notes": t.notes,
                "rejected": t.rejected.iter().map(|j| json!({
                    "row": j.row, "reason": j.reason, "column": j.column, "detail": j.detail,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "source_engine": r.source_engine, "dry_run": r.dry_run, "imported": r.imported,
        "rows_accepted": r.rows_accepted, "rows_rejected": r.rows_rejected,
        "duplicates_collapsed": r.duplicates_collapsed, "tables": tables,
        "ignored": r.ignored, "snapshot_id": r.snapshot_id,
        "safety_snapshot_id": r.safety_snapshot_id, "rolled_back": r.rolled_back,
        "rollback_reason": r.rollback_reason, "event_seq": r.event_seq,
        "report_passed": r.report.as_ref().map(|x| x.passed),
    })
}

fn import_report(r: &pb::ImportDatabaseResponse) -> String {
    let mut t = output::Table::new(&["TABLE", "READ", "KEPT", "DUPLICATES", "REJECTED"]);
    for x in &r.tables {
        t.row(vec![
            x.table.clone(),
            if x.present {
                x.rows_read.to_string()
            } else {
                "absent".into()
            },
            x.rows_accepted.to_string(),
            x.duplicates_collapsed.to_string(),
            x.rows_rejected.to_string(),
        ]);
    }
    let mut text = format!("source: {}\n{}", r.source_engine, t.render());
    for x in &r.tables {
        for n in &x.notes {
            text.push_str(&format!("\nnote: {}: {n}", x.table));
        }
        for j in &x.rejected {
            text.push_str(&format!(
                "\nrejected: {} row {} ({}{}): {}",
                x.table,
                j.row,
                j.reason,
                if j.column.is_empty() {
                    String::new()
                } else {
                    format!(", {}", j.column)
                },
                j.detail
            ));
        }
    }
    for i in &r.ignored {
        text.push_str(&format!("\nignored: {i} (not an LNRS table)"));
    }
    text.push_str(&if r.dry_run {
        format!(
            "\ndry run: {} rows would be imported, {} rejected, {} duplicates folded; nothing changed",
            r.rows_accepted, r.rows_rejected, r.duplicates_collapsed
        )
    } else if r.imported {
        format!(
            "\nimported {} rows (event {}); undo with: lnrs snapshot restore {}",
            r.rows_accepted, r.event_seq, r.safety_snapshot_id
        )
    } else {
        format!("\nNOT imported, rolled back: {}", r.rollback_reason)
    });
    text
}

/// `lnrs export --format F [--snapshot ID] [--table T | --set S] --out DIR`.
pub(crate) async fn export(ctx: &Ctx, c: ExportCommand) -> Result<(), Failure> {
    use pb::export_data_request::Scope;
    let format = match c.format.as_str() {
        "csv" => pb::ExportFormat::Csv,
        "parquet" => pb::ExportFormat::Parquet,
        "duckdb" => pb::ExportFormat::Duckdb,
        _ => pb::ExportFormat::Geojson,
    };
    let scope = match (&c.table, c.set.as_deref()) {
        (Some(t), _) => Some(Scope::Table(t.clone())),
        (None, Some("core")) => Some(Scope::Set(pb::ExportSet::Core as i32)),
        (None, Some("bridges")) => Some(Scope::Set(pb::ExportSet::Bridges as i32)),
        (None, Some("unfunded")) => Some(Scope::Set(pb::ExportSet::Unfunded as i32)),
        _ => Some(Scope::Set(pb::ExportSet::All as i32)),
    };
    std::fs::create_dir_all(&c.out)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", c.out.display())))?;
    let req = pb::ExportDataRequest {
        format: format as i32,
        scope,
        snapshot_id: c.snapshot.clone().unwrap_or_default(),
    };
    let mut stream = ctx
        .data()
        .export_data(ctx.stream_req(req))
        .await?
        .into_inner();
    use pb::export_data_response::Part;
    let mut current: Option<(Download, pb::ExportFile)> = None;
    let mut written = Vec::new();
    let mut progress: Option<ProgressBar> = None;
    let mut summary = None;
    while let Some(m) = stream.next().await {
        match m?.part {
            Some(Part::File(f)) => {
                if let Some((d, h)) = current.take() {
                    d.finish(&h.blake3)?;
                    written.push(h);
                }
                let b = progress.get_or_insert_with(|| bar(ctx, "exporting", f.export_total_bytes));
                b.set_message(f.name.clone());
                current = Some((Download::create(&c.out.join(safe_name(&f.name)?))?, f));
            }
            Some(Part::Data(d)) => {
                let (dl, _) = current
                    .as_mut()
                    .ok_or_else(|| Failure::usage("the server sent data before a file"))?;
                dl.write(&d)?;
                if let Some(b) = &progress {
                    b.inc(d.len() as u64);
                }
            }
            Some(Part::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    if let Some((d, h)) = current.take() {
        d.finish(&h.blake3)?;
        written.push(h);
    }
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    let s = summary.ok_or_else(|| Failure::usage("the export ended early"))?;
    if ctx.json() {
        return output::print_json(&json!({
            "files": written.iter().map(|f| json!({"name": f.name, "rows": f.rows, "bytes": f.size_bytes, "blake3": f.blake3})).collect::<Vec<_>>(),
            "snapshot_id": s.snapshot_id, "event_head_seq": s.event_head_seq,
        }));
    }
    let mut t = output::Table::new(&["FILE", "ROWS", "SIZE"]);
    for f in &written {
        t.row(vec![
            f.name.clone(),
            f.rows.to_string(),
            output::bytes(f.size_bytes),
        ]);
    }
    let what = match s.snapshot_id.as_str() {
        "" => format!("the live database at event {}", s.event_head_seq),
        id => format!("snapshot {id}"),
    };
    say(&format!(
        "{}exported {what} into {}",
        t.render(),
        c.out.display()
    ))
}

/// A file name the server sent, refused if it could leave the output directory.
fn safe_name(name: &str) -> Result<&str, Failure> {
    let ok = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && !name.starts_with('.');
    if ok {
        Ok(name)
    } else {
        Err(Failure::usage(format!(
            "the server sent an unsafe file name {name:?}"
        )))
    }
}
