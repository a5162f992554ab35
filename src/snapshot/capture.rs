//! Capture: copy the checkpointed database file into a pooled in-memory buffer and nothing
//! else. Hashing, compression and all durable writes happen later in `commit`.
//!
//! The copy needs the file to stay as the last CHECKPOINT left it. DuckDB writes the database
//! file only when it checkpoints (commits go to the WAL; an automatic checkpoint happens at a
//! COMMIT whose WAL passes 16 MiB), so either the writer is held for the copy, or — the
//! pre-delete path — the writer runs its still-uncommitted transaction meanwhile and joins the
//! copy before it commits. As a tripwire on top of that structure, the header is read again
//! after the copy: every checkpoint ends by writing a new database header, so a copy that a
//! checkpoint completed during fails instead of mixing two states.
//!
//! The writer runs [`crate::storage::checkpoint`] (CHECKPOINT + empty-WAL assertion) right
//! before capturing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::error::{fail_point, io_err, SnapshotError};
use super::manifest::{parse_storage_version, HEADER_LEN};
use crate::storage::gate::ReadTicket;

/// At most this many idle buffers are kept: one being committed while the next is captured.
const MAX_POOLED: usize = 2;
/// Unit of the parallel file read.
const READ_CHUNK: usize = 8 << 20;

/// Reusable file-sized buffers. Reusing them matters: a fresh 35 MB allocation costs more in
/// page faults than the copy itself.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_POOLED {
            idle.push(buf);
        }
    }
}

/// An in-memory copy of a checkpointed database file, waiting to be committed. Its buffer
/// goes back to the store's pool when it is dropped.
#[derive(Debug)]
pub struct Capture {
    /// Never shrunk, so a reused buffer is not zeroed again; the file is `buf[..len]`.
    buf: Vec<u8>,
    len: usize,
    storage_version: u64,
    captured_at: DateTime<Utc>,
    pool: Arc<BufferPool>,
}

impl Capture {
    /// Reads `path` into a pooled buffer and checks it is a DuckDB file. A background read
    /// passes its gate ticket: it stops between chunks once the ticket is cancelled.
    pub(crate) fn read(
        path: &Path,
        pool: &Arc<BufferPool>,
        ticket: Option<&ReadTicket>,
    ) -> Result<Capture, SnapshotError> {
        let captured_at = Utc::now();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| SnapshotError::NotADatabase("file too large for memory".into()))?;
        let mut capture = Capture {
            buf: pool.take(),
            len: 0,
            storage_version: 0,
            captured_at,
            pool: Arc::clone(pool),
        };
        if capture.buf.len() < len {
            capture.buf.resize(len, 0);
        }
        read_parallel(&file, &mut capture.buf[..len], ticket)?.map_err(|e| io_err(path, e))?;
        let head = len.min(HEADER_LEN);
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header[..head], 0)
            .map_err(|e| io_err(path, e))?;
        if header[..head] != capture.buf[..head] {
            return Err(SnapshotError::SourceChanged);
        }
        capture.len = len;
        capture.storage_version = parse_storage_version(capture.bytes())?;
        fail_point("snapshot.after_capture")?;
        Ok(capture)
    }

    /// A capture of arbitrary bytes (tests, tools).
    pub(crate) fn from_bytes(
        bytes: &[u8],
        pool: &Arc<BufferPool>,
    ) -> Result<Capture, SnapshotError> {
        let storage_version = parse_storage_version(bytes)?;
        Ok(Capture {
            buf: bytes.to_vec(),
            len: bytes.len(),
            storage_version,
            captured_at: Utc::now(),
            pool: Arc::clone(pool),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True for an empty file (never a valid capture).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// DuckDB storage version from the file header.
    pub fn storage_version(&self) -> u64 {
        self.storage_version
    }

    /// When the file was read (the snapshot's `created_at`).
    pub fn captured_at(&self) -> DateTime<Utc> {
        self.captured_at
    }

    /// The file's first bytes as read (the DuckDB headers every checkpoint rewrites).
    pub fn header(&self) -> &[u8] {
        &self.bytes()[..self.len.min(HEADER_LEN)]
    }
}

/// Whether the file at `path` still has `len` bytes and begins with `header`: a checkpoint
/// since the capture would have written a new header.
pub(crate) fn same_header(path: &Path, len: u64, header: &[u8]) -> Result<bool, SnapshotError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    if file.metadata().map_err(|e| io_err(path, e))?.len() != len {
        return Ok(false);
    }
    let mut now = vec![0u8; header.len()];
    file.read_exact_at(&mut now, 0)
        .map_err(|e| io_err(path, e))?;
    Ok(now == header)
}

/// Fills `buf` from the start of `file` with positional reads in parallel: copying from the
/// page cache is bound by one core's copy speed, and this runs under the writer barrier.
/// `Err(Cancelled)` when `ticket` is cancelled before every chunk is read.
fn read_parallel(
    file: &File,
    buf: &mut [u8],
    ticket: Option<&ReadTicket>,
) -> Result<std::io::Result<()>, SnapshotError> {
    let cancelled = std::sync::atomic::AtomicBool::new(false);
    let read = buf
        .par_chunks_mut(READ_CHUNK)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            if ticket.is_some_and(ReadTicket::cancelled) {
                cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            file.read_exact_at(chunk, (i * READ_CHUNK) as u64)
        });
    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(SnapshotError::Cancelled);
    }
    Ok(read)
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_are_reused() {
        let pool = Arc::new(BufferPool::default());
        let mut bytes = vec![0u8; 20_000];
        bytes[8..12].copy_from_slice(b"DUCK");
        let c = Capture::from_bytes(&bytes, &pool).expect("capture");
        let ptr = c.bytes().as_ptr();
        drop(c);
        let reused = pool.take();
        assert_eq!(reused.as_ptr(), ptr);
    }
}
