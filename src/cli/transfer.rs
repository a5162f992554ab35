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
    output::print(&format!(
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
    output::print(&if r.already_present {
        format!("snapshot {id} was already in the catalog (identical); nothing added")
    } else {
        format!("loaded snapshot {id}: deep verification passed ({checks} checks)")
    })
}
