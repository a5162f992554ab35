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
//!
//! Most captures follow another one of the same file by a few changed blocks, so a capture
//! normally *refreshes* the previous capture's buffer instead ([`Capture::refresh`]): it maps
//! the file and compares it with the buffer block by block, copying only the blocks that
//! differ, and records which those were, so hashing need not compare again. Comparing against
//! the page cache through a mapping costs about half of copying the file out of it and then
//! comparing (lnrs-bench's phase profile: "file read"). The result is the same bytes either
//! way; the tests compare refreshed captures with plain reads over random edits.
//!
//! The mapping is kept between captures ([`MapCache`]): a fresh one pays a page fault per few
//! pages on first touch, a kept one finds its page tables filled (its pages are the page
//! cache's, shared with DuckDB, so keeping it costs no memory of its own). It is replaced when
//! the path names another file (a restore renamed one into place) or the length changed.
//!
//! A mapped file must not shrink while it is compared (the pages past the new end would fault
//! with SIGBUS). It cannot: DuckDB truncates the file only when it checkpoints, and the
//! structure above already keeps checkpoints away from a capture in progress; between captures
//! the mapping is not touched, and each capture checks the length before touching it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::error::{fail_point, io_err, SnapshotError};
use super::filehash::{FileHashes, Refreshed};
use super::manifest::{block_ranges, parse_storage_version, BLOCK_LEN, HEADER_LEN};
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
    /// Set by [`Capture::refresh`]: what the comparison with the previous capture found.
    prior: Option<Box<Refreshed>>,
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
        let len = file_len(path, &file)?;
        let mut capture = Capture {
            buf: pool.take(),
            len: 0,
            storage_version: 0,
            captured_at,
            pool: Arc::clone(pool),
            prior: None,
        };
        capture.grow(len);
        read_parallel(&file, &mut capture.buf[..len], ticket)?.map_err(|e| io_err(path, e))?;
        check_header(path, &file, &capture.buf[..len])?;
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
            prior: None,
        })
    }

    /// Reads `path` into `base`'s buffer, which holds the capture that `hashes` describe:
    /// compares the file (mapped) with the buffer block by block and copies only the blocks
    /// that differ. The result carries which blocks those were (see [`Capture::take_prior`]).
    pub(crate) fn refresh(
        path: &Path,
        mut base: Capture,
        hashes: FileHashes,
        ticket: Option<&ReadTicket>,
        maps: &MapCache,
    ) -> Result<Capture, SnapshotError> {
        let captured_at = Utc::now();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let len = file_len(path, &file)?;
        if len < HEADER_LEN {
            let pool = Arc::clone(&base.pool);
            drop(base);
            return Capture::read(path, &pool, ticket);
        }
        let map = maps.take(&file, len).map_err(|e| io_err(path, e))?;
        let prev_ranges = block_ranges(base.len);
        base.grow(len);
        base.len = 0;
        base.prior = None;
        base.captured_at = captured_at;
        let changed = patch_blocks(&map.map, &mut base.buf[..len], &prev_ranges, ticket);
        maps.put(map);
        let changed = changed?;
        check_header(path, &file, &base.buf[..len])?;
        base.len = len;
        base.storage_version = parse_storage_version(base.bytes())?;
        base.prior = Some(Box::new(Refreshed { hashes, changed }));
        fail_point("snapshot.after_capture")?;
        Ok(base)
    }

    /// What [`Capture::refresh`] found, once (hashing consumes it).
    pub(crate) fn take_prior(&mut self) -> Option<Box<Refreshed>> {
        self.prior.take()
    }

    /// Makes the buffer at least `len` bytes. A growing file grows again: room for an eighth
    /// more is reserved, so a file that gains a block does not reallocate (and copy) the buffer.
    fn grow(&mut self, len: usize) {
        if self.buf.len() < len {
            self.buf.reserve(len + len / 8 - self.buf.len());
            self.buf.resize(len, 0);
        }
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

/// The mapping of the live file kept between captures (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct MapCache {
    slot: Mutex<Option<Mapped>>,
}

/// A read-only mapping of the whole of one file (device and inode) at one length.
#[derive(Debug)]
pub(crate) struct Mapped {
    dev: u64,
    ino: u64,
    map: memmap2::Mmap,
}

impl MapCache {
    /// The kept mapping when it is of `file` at `len` bytes, else a new one.
    fn take(&self, file: &File, len: usize) -> std::io::Result<Mapped> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        let kept = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match kept {
            Some(m) if m.dev == meta.dev() && m.ino == meta.ino() && m.map.len() == len => Ok(m),
            _ => Ok(Mapped {
                dev: meta.dev(),
                ino: meta.ino(),
                // SAFETY: read-only; touched only by a capture, while the file does not shrink
                // (see the module documentation).
                map: unsafe { memmap2::MmapOptions::new().len(len).map(file)? },
            }),
        }
    }

    fn put(&self, m: Mapped) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    }
}

fn file_len(path: &Path, file: &File) -> Result<usize, SnapshotError> {
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    usize::try_from(len)
        .map_err(|_| SnapshotError::NotADatabase("file too large for memory".into()))
}

/// The tripwire: the header read again after the copy must equal the copy's. Every checkpoint
/// ends by writing a new header, so a copy that one completed during fails here.
fn check_header(path: &Path, file: &File, copy: &[u8]) -> Result<(), SnapshotError> {
    let head = copy.len().min(HEADER_LEN);
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header[..head], 0)
        .map_err(|e| io_err(path, e))?;
    if header[..head] != copy[..head] {
        return Err(SnapshotError::SourceChanged);
    }
    Ok(())
}

/// Makes `buf` equal to `file`, block by block as cut by [`block_ranges`], copying only the
/// blocks whose bytes differ; a block whose range differs from `prev_ranges` (the buffer's
/// previous layout) is copied without comparing. Returns, per block, whether it was copied.
/// `Err(Cancelled)` once `ticket` is cancelled.
fn patch_blocks(
    file: &[u8],
    buf: &mut [u8],
    prev_ranges: &[std::ops::Range<usize>],
    ticket: Option<&ReadTicket>,
) -> Result<Vec<bool>, SnapshotError> {
    let ranges = block_ranges(buf.len());
    let (head, body) = buf.split_at_mut(ranges[0].end);
    let blocks = std::iter::once(head).chain(body.chunks_mut(BLOCK_LEN));
    let work: Vec<(usize, &mut [u8])> = blocks.enumerate().collect();
    work.into_par_iter()
        .map(|(i, dst)| {
            if ticket.is_some_and(ReadTicket::cancelled) {
                return Err(SnapshotError::Cancelled);
            }
            let src = &file[ranges[i].clone()];
            let same = prev_ranges.get(i) == Some(&ranges[i]) && *dst == *src;
            if !same {
                dst.copy_from_slice(src);
            }
            Ok(!same)
        })
        .collect()
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
    use crate::snapshot::filehash::tests::file;
    use crate::snapshot::filehash::{hash_capture, Prev};
    use proptest::prelude::*;

    /// The capture of `old` (read from `path`), then `new` written to `path` and refreshed onto
    /// that capture: the refreshed bytes and hashes must be the file's, computed plainly.
    fn refresh_matches_plain(dir: &Path, old: &[u8], new: &[u8]) -> Result<(), TestCaseError> {
        let pool = Arc::new(BufferPool::default());
        let path = dir.join("db.duckdb");
        std::fs::write(&path, old).expect("write old");
        let first = Capture::read(&path, &pool, None).expect("read");
        let memo = hash_capture(first.bytes(), None).into_memo(first);
        std::fs::write(&path, new).expect("write new");
        let (base, hashes) = memo.into_parts();
        let maps = MapCache::default();
        let mut refreshed = Capture::refresh(&path, base, hashes, None, &maps).expect("refresh");
        prop_assert!(
            refreshed.bytes() == new,
            "refreshed bytes differ from the file"
        );
        let prior = refreshed
            .take_prior()
            .expect("a refresh records what it compared");
        let h = hash_capture(refreshed.bytes(), Some(Prev::Refreshed(&prior)));
        prop_assert_eq!(h.file_hash, blake3::hash(new));
        let plain: Vec<_> = block_ranges(new.len())
            .into_iter()
            .map(|r| blake3::hash(&new[r]))
            .collect();
        prop_assert_eq!(h.block_hashes, plain);
        let copied = prior.changed.iter().filter(|c| **c).count();
        let old_ranges = block_ranges(old.len());
        let differing = block_ranges(new.len())
            .into_iter()
            .enumerate()
            .filter(|(i, r)| old_ranges.get(*i) != Some(r) || old[r.clone()] != new[r.clone()])
            .count();
        prop_assert_eq!(
            copied,
            differing,
            "only blocks that differ (or moved) are copied"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn a_refreshed_capture_is_the_file_after_random_edits(
            blocks in 1usize..7,
            tail in 0usize..5000,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            grow in -600_000i64..600_000,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let old = file(HEADER_LEN + blocks * BLOCK_LEN + tail, 1);
            let mut new = old.clone();
            new.resize((old.len() as i64 + grow).max(HEADER_LEN as i64) as usize, 0xab);
            for (at, v) in &edits {
                let i = at.index(new.len());
                if !(8..20).contains(&i) {
                    new[i] = *v;
                }
            }
            refresh_matches_plain(dir.path(), &old, &new)?;
        }
    }

    /// The kept mapping serves the next capture of the same file, also after the file was
    /// truncated and written again in place (its pages were dropped and fault in anew).
    #[test]
    fn a_kept_mapping_sees_every_rewrite_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.duckdb");
        let pool = Arc::new(BufferPool::default());
        let maps = MapCache::default();
        let len = HEADER_LEN + 4 * BLOCK_LEN + 100;
        std::fs::write(&path, file(len, 3)).expect("write");
        let first = Capture::read(&path, &pool, None).expect("read");
        let mut memo = hash_capture(first.bytes(), None).into_memo(first);
        for (round, at) in [HEADER_LEN + 5, HEADER_LEN + 2 * BLOCK_LEN, len - 1]
            .iter()
            .enumerate()
        {
            let mut bytes = file(len, 3);
            bytes[*at] ^= 0xff;
            std::fs::write(&path, &bytes).expect("rewrite");
            let (base, hashes) = memo.into_parts();
            let mut c = Capture::refresh(&path, base, hashes, None, &maps).expect("refresh");
            assert!(c.bytes() == bytes, "round {round}: bytes differ");
            let prior = c.take_prior().expect("prior");
            let h = hash_capture(c.bytes(), Some(Prev::Refreshed(&prior)));
            assert_eq!(h.file_hash, blake3::hash(&bytes), "round {round}");
            memo = h.into_memo(c);
        }
    }

    #[test]
    fn a_cancelled_refresh_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.duckdb");
        std::fs::write(&path, file(HEADER_LEN + 3 * BLOCK_LEN, 2)).expect("write");
        let pool = Arc::new(BufferPool::default());
        let first = Capture::read(&path, &pool, None).expect("read");
        let memo = hash_capture(first.bytes(), None).into_memo(first);
        let (base, hashes) = memo.into_parts();
        let ticket = ReadTicket::default();
        ticket.cancel();
        let err = Capture::refresh(&path, base, hashes, Some(&ticket), &MapCache::default())
            .expect_err("cancelled");
        assert!(matches!(err, SnapshotError::Cancelled), "{err:?}");
    }

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
