//! Item 10: the users' data in and out, through DataService on a server in its own process
//! (so its memory is the server's alone).
//!
//! At each scale, DuckDB 1.4 for Python (the original app's engine generation, from the test
//! venv) writes a database in the original schema with its legacy quirks
//! (`tests/tools/original_db.py make-db`), and the original portal's CSV export of it
//! (`make-csv-zip`). A server started on a copy of the reference dataset then:
//! - imports the DuckDB file with `dry_run` (upload + stage + validate), then for real (the
//!   restore swap: safety snapshot, swap, integrity checks) `reps` times, and the CSV archive;
//! - exports everything in each format `reps` times: time to the first byte (the server writes
//!   the files to its scratch directory first), total time and throughput (bytes received /
//!   wall time), and the server's peak RSS during those exports (VmHWM, reset before each
//!   format).
//!
//! The baseline of the same run is a durable full copy of the uploaded file / of the live
//! database (copy + fsync), the cheapest any import or export of those bytes could be.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lnrs::pb;
use lnrs::pb::data_service_client::DataServiceClient;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::harness::{self, fail, ChildServer, Res, Work};
use crate::stats::Summary;

/// Item 10 results, one entry per scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataIoResult {
    pub reps: usize,
    pub scales: Vec<DataIoScale>,
}

/// Import and export at one scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataIoScale {
    pub scale: u32,
    /// The original-schema DuckDB file (DuckDB 1.4) and its CSV archive.
    pub original_bytes: u64,
    pub csv_zip_bytes: u64,
    /// Rows the import accepted.
    pub rows_accepted: u64,
    /// ImportDatabase of the DuckDB file with `dry_run`: upload, stage, validate, report.
    pub import_dry_run: Summary,
    /// ImportDatabase of the DuckDB file: all of the above, then the restore swap.
    pub import_duckdb: Summary,
    /// ImportDatabase of the CSV archive.
    pub import_csv_zip: Summary,
    /// Durable full copy of the DuckDB file (the baseline of the import).
    pub copy_original: Summary,
    /// Size of the live database after the import, and its durable full copy.
    pub live_bytes: u64,
    pub copy_live: Summary,
    /// Server RSS once the imports are done, before the exports.
    pub server_rss_before_exports_kib: u64,
    pub exports: Vec<ExportPoint>,
}

/// `reps` exports of everything in one format.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportPoint {
    pub format: String,
    pub files: usize,
    pub bytes: u64,
    /// Request to the first file header: the server preparing the files.
    pub first_byte: Summary,
    /// Request to the summary, every byte received.
    pub total: Summary,
    /// Bytes / median total time.
    pub mb_per_s: f64,
    /// The server's peak RSS during these exports (VmHWM).
    pub server_peak_rss_kib: u64,
}

const FORMATS: [(pb::ExportFormat, &str); 4] = [
    (pb::ExportFormat::Csv, "CSV"),
    (pb::ExportFormat::Parquet, "Parquet"),
    (pb::ExportFormat::Duckdb, "DuckDB"),
    (pb::ExportFormat::Geojson, "GeoJSON"),
];

pub async fn run(work: &Work, scales: &[u32], reps: usize) -> Res<DataIoResult> {
    let mut out = DataIoResult {
        reps,
        scales: Vec::new(),
    };
    for &scale in scales {
        eprintln!("data-io: scale {scale} …");
        out.scales.push(one_scale(work, scale, reps.max(1)).await?);
    }
    Ok(out)
}

async fn one_scale(work: &Work, scale: u32, reps: usize) -> Res<DataIoScale> {
    let files = work.fresh_dir(&format!("dataio-s{scale}-files"))?;
    let (original, zip) = original_files(&files, scale)?;
    let mut out = DataIoScale {
        scale,
        original_bytes: std::fs::metadata(&original)?.len(),
        csv_zip_bytes: std::fs::metadata(&zip)?.len(),
        ..Default::default()
    };
    out.copy_original = copies(&original, &files, reps)?;

    let dataset = work.reference(scale)?;
    let dir = work.data_dir_with(&format!("dataio-s{scale}"), &dataset.path)?;
    let server = ChildServer::start(&dir.display().to_string(), []).await?;
    let ch = server.channel.clone();

    let upload = std::fs::read(&original)?;
    let (t, _) = import(&ch, &upload, true).await?;
    out.import_dry_run = Summary::of(&[t]);
    let mut times = Vec::new();
    for _ in 0..reps {
        let (t, r) = import(&ch, &upload, false).await?;
        out.rows_accepted = r.rows_accepted;
        times.push(t);
    }
    out.import_duckdb = Summary::of(&times);
    let upload = std::fs::read(&zip)?;
    let mut times = Vec::new();
    for _ in 0..reps {
        times.push(import(&ch, &upload, false).await?.0);
    }
    out.import_csv_zip = Summary::of(&times);
    // The last import was the CSV archive of the same rows: what the exports read.

    out.server_rss_before_exports_kib = server.memory_kib("VmRSS:").unwrap_or(0);
    for (format, name) in FORMATS {
        server.reset_peak_memory()?;
        let mut point = ExportPoint {
            format: name.into(),
            ..Default::default()
        };
        let (mut first, mut total) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let e = export(&ch, format).await?;
            first.push(e.first_byte);
            total.push(e.total);
            (point.files, point.bytes) = (e.files, e.bytes);
        }
        point.server_peak_rss_kib = server.memory_kib("VmHWM:").unwrap_or(0);
        point.first_byte = Summary::of(&first);
        point.total = Summary::of(&total);
        point.mb_per_s = point.bytes as f64 / 1e6 / (point.total.p50_ms / 1e3).max(1e-9);
        out.exports.push(point);
    }
    server.kill().await?;

    // The live database as the last import left it (the kill leaves a WAL at most; the copy
    // baseline needs only the main file's size class).
    let live = dir.join("lnrs.duckdb");
    out.live_bytes = std::fs::metadata(&live)?.len();
    out.copy_live = copies(&live, &files, reps)?;
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&files)?;
    Ok(out)
}

/// The original-schema DuckDB file at `scale` and its CSV archive, written by Python DuckDB 1.4.
fn original_files(dir: &Path, scale: u32) -> Res<(PathBuf, PathBuf)> {
    let db = dir.join("original.duckdb");
    let zip = dir.join("original-csv.zip");
    let expected = dir.join("expected.json");
    py(&[
        "make-db".as_ref(),
        db.as_os_str(),
        "--expected".as_ref(),
        expected.as_os_str(),
        "--scale".as_ref(),
        scale.to_string().as_ref(),
    ])?;
    py(&[
        "make-csv-zip".as_ref(),
        zip.as_os_str(),
        "--from".as_ref(),
        db.as_os_str(),
    ])?;
    Ok((db, zip))
}

/// Runs tests/tools/original_db.py with the test venv's Python.
fn py(args: &[&std::ffi::OsStr]) -> Res<()> {
    let python = crate::s3::venv().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/original_db.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(fail(format!(
            "original_db.py {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// `reps` durable full copies of `file` into `dir`.
fn copies(file: &Path, dir: &Path, reps: usize) -> Res<Summary> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        times.push(harness::durable_copy(file, dir)?);
    }
    Ok(Summary::of(&times))
}

/// One ImportDatabase of `bytes` (options first, then 1 MiB pieces); fails unless the import
/// did what was asked (a dry run that rejected nothing, or a real import that was swapped in).
async fn import(
    ch: &Channel,
    bytes: &[u8],
    dry_run: bool,
) -> Res<(Duration, pb::ImportDatabaseResponse)> {
    use pb::import_database_request::Part;
    let mut msgs = vec![pb::ImportDatabaseRequest {
        part: Some(Part::Options(pb::ImportOptions {
            dry_run,
            total_bytes: bytes.len() as u64,
            ..Default::default()
        })),
    }];
    msgs.extend(bytes.chunks(1 << 20).map(|c| pb::ImportDatabaseRequest {
        part: Some(Part::Data(c.to_vec())),
    }));
    let started = Instant::now();
    let r = DataServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .import_database(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    let took = started.elapsed();
    if r.rows_accepted == 0 || r.rolled_back || r.imported == dry_run {
        return Err(fail(format!(
            "import (dry run {dry_run}): {} rows accepted, imported {}, rolled back {} ({})",
            r.rows_accepted, r.imported, r.rolled_back, r.rollback_reason
        )));
    }
    Ok((took, r))
}

/// What one export took.
struct Exported {
    files: usize,
    bytes: u64,
    first_byte: Duration,
    total: Duration,
}

/// One ExportData of everything in `format`, every byte received and counted against the
/// sizes the headers announced.
async fn export(ch: &Channel, format: pb::ExportFormat) -> Res<Exported> {
    use pb::export_data_response::Part;
    let started = Instant::now();
    let mut stream = DataServiceClient::new(ch.clone())
        .export_data(pb::ExportDataRequest {
            format: format as i32,
            scope: Some(pb::export_data_request::Scope::Set(
                pb::ExportSet::All as i32,
            )),
            snapshot_id: String::new(),
        })
        .await?
        .into_inner();
    let (mut files, mut announced, mut bytes) = (0usize, 0u64, 0u64);
    let mut first_byte = None;
    let mut summary = None;
    while let Some(m) = stream.next().await {
        match m?.part {
            Some(Part::File(f)) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                files += 1;
                announced += f.size_bytes;
            }
            Some(Part::Data(d)) => bytes += d.len() as u64,
            Some(Part::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    let total = started.elapsed();
    let s = summary.ok_or_else(|| fail("the export ended without its summary"))?;
    if bytes != announced || bytes != s.total_bytes || files == 0 {
        return Err(fail(format!(
            "{format:?} export: {bytes} bytes received, {announced} announced, {} summed",
            s.total_bytes
        )));
    }
    Ok(Exported {
        files,
        bytes,
        first_byte: first_byte.unwrap_or(total),
        total,
    })
}
