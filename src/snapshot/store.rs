//! [`SnapshotStore`]: the on-disk store and its operations — open (with crash recovery),
//! capture/commit, get/list/stats, verify, assemble, annotate, forget/pin, retention and GC.
//!
//! Layout under the root:
//! ```text
//! LOCK                      flock: one process owns the store
//! blocks/ab/<blake3>.zst    content-addressed, zstd-compressed blocks (256 shard dirs)
//! manifests/<id>.json       one sealed manifest per snapshot: the snapshot exists iff this does
//! verified/<id>.json        outcome of the last verify of a snapshot (optional, rebuildable)
//! annotations/<id>.json     the user's pin, labels, description of a snapshot (sealed; only
//!                           for snapshots a user changed; see super::annotation)
//! index.json                sealed catalog cache (optional, rebuilt from manifests)
//! tmp/                      every temp file; emptied at open
//! ```
//!
//! Two kinds of pin keep a snapshot: a user's (in its annotation: retention skips it, forget
//! needs force) and a restore's hold ([`SnapshotStore::pin`], in memory for the restore's
//! duration: nothing removes it). The hold table's mutex also orders annotate against forget.
//!
//! Concurrency: one mutex guards the in-memory state. A commit registers every block it
//! references as in flight before it writes anything, and GC deletes only blocks that are
//! neither referenced by a manifest nor in flight, deciding and deleting under that mutex. So a
//! sweep never removes a block a concurrent commit relies on, and a crash mid-commit leaves
//! only unreferenced blocks that the next GC removes.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use super::annotation::{Annotation, AnnotationUpdate};
use super::blocks::{compress, BlockFault, BlockStore};
use super::capture::{BufferPool, Capture, MapCache};
use super::catalog::{Catalog, Entry, ListFilter, ListItem, ListPage, Overlay, SnapshotSummary};
use super::error::{fail_point, io_err, SnapshotError};
use super::filehash::{self, HashMemo, Prev};
use super::fsio;
use super::id::SnapshotId;
use super::manifest::{
    block_ranges, parse_storage_version, BlockRef, Manifest, NewSnapshot, FORMAT_VERSION,
};
use super::retention::{self, GcOutcome, RetentionOutcome, RetentionPolicy, RetentionReason};
use super::verify::{check_database, IntegrityReport, VerifyKind, VerifyRecord};
use crate::storage::files;

mod transfer;
pub use transfer::manifest_id_of_name;

/// Threads for block writes: fsyncs block rather than compute, and concurrent fsyncs share
/// journal commits, so more threads than cores pays off (measured ~16 ms vs ~27 ms for ten
/// 100 KB files on this project's disks).
const IO_THREADS: usize = 8;
/// Blocks decoded at once by verify/assemble: bounds memory to ~8 MiB per window.
const DECODE_WINDOW: usize = 32;
/// Blocks deleted per hold of the store lock during a sweep.
const GC_BATCH: usize = 64;

/// Paths of the store's files.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    manifests: PathBuf,
    verified: PathBuf,
    annotations: PathBuf,
    tmp: PathBuf,
    index: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            manifests: root.join("manifests"),
            verified: root.join("verified"),
            annotations: root.join("annotations"),
            tmp: root.join("tmp"),
            index: root.join("index.json"),
        }
    }

    fn manifest(&self, id: &SnapshotId) -> PathBuf {
        self.manifests.join(format!("{id}.json"))
    }

    fn verified_record(&self, id: &SnapshotId) -> PathBuf {
        self.verified.join(format!("{id}.json"))
    }

    fn annotation(&self, id: &SnapshotId) -> PathBuf {
        self.annotations.join(format!("{id}.json"))
    }
}

/// Mutable state behind the store mutex.
#[derive(Debug, Default)]
struct State {
    catalog: Catalog,
    /// Block files on disk and their sizes: what a commit may deduplicate against.
    known: HashMap<blake3::Hash, u64>,
    /// Blocks a verify found missing or damaged: the next commit needing them rewrites them.
    suspect: HashSet<blake3::Hash>,
    /// Blocks referenced by commits in progress (counted: two commits may share a block).
    inflight: HashMap<blake3::Hash, usize>,
    verified: HashMap<SnapshotId, VerifyRecord>,
    /// Users' annotations (only snapshots with one).
    annotations: HashMap<SnapshotId, Annotation>,
    /// Manifest files that failed their checksum at open, and the blocks they seem to list
    /// (kept by GC: a damaged manifest may yet be repaired).
    corrupt_manifests: Vec<String>,
    salvaged: HashSet<blake3::Hash>,
    /// The newest id issued, so ids keep increasing even after the newest is forgotten.
    last_id: Option<SnapshotId>,
    index_dirty: bool,
}

impl State {
    /// What listings merge into the catalog's entries.
    fn overlay<'a>(&'a self, held: &'a HashSet<SnapshotId>) -> Overlay<'a> {
        Overlay {
            verified: &self.verified,
            annotations: &self.annotations,
            held,
        }
    }

    /// A block no snapshot, in-flight commit or damaged manifest references.
    fn is_garbage(&self, h: &blake3::Hash) -> bool {
        !self.catalog.is_referenced(h)
            && !self.inflight.contains_key(h)
            && !self.salvaged.contains(h)
    }
}

/// Store-wide numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub snapshot_count: usize,
    /// Sum of the snapshots' file sizes (what they would take uncompressed and undeduplicated).
    pub logical_bytes: u64,
    /// Bytes of all block files on disk.
    pub stored_bytes: u64,
    /// Block files on disk.
    pub block_count: usize,
    /// Block files no snapshot references (removed by the next GC).
    pub unreferenced_blocks: usize,
    pub unreferenced_bytes: u64,
    /// Snapshots pinned by a user.
    pub pinned: usize,
    /// Snapshots held by a restore in progress.
    pub held: usize,
    /// Manifest files that failed their checksum when the store was opened.
    pub corrupt_manifests: Vec<String>,
}

/// Where a commit spent its time (for metrics and benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommitTimings {
    /// BLAKE3 of every block and of the whole file.
    pub hash: Duration,
    /// zstd of the new blocks.
    pub compress: Duration,
    /// New blocks and the manifest temp file written and fsync'd, shard dirs fsync'd.
    pub write: Duration,
    /// Manifest renamed into place, its directory fsync'd, catalog updated.
    pub publish: Duration,
    pub total: Duration,
    /// Blocks this snapshot added to the store, and their compressed bytes.
    pub new_blocks: usize,
    pub new_bytes: u64,
}

/// Bounds on the scratch work readers can start: every assembly (preview, deep verify) writes a
/// whole database file next to the store, on the volume that holds the live database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Assemblies at once; beyond it [`SnapshotError::Busy`].
    pub max_assemblies: usize,
    /// Free bytes an assembly must leave on the volume; otherwise
    /// [`SnapshotError::NoScratchSpace`].
    pub scratch_reserve_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_assemblies: 2,
            scratch_reserve_bytes: 0,
        }
    }
}

/// A running assembly, counted until dropped.
struct AssemblySlot<'a>(&'a AtomicUsize);

impl Drop for AssemblySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Holds a snapshot while it lives: nothing forgets it, not even a forced delete (restore holds
/// its safety snapshot and the snapshot it restores).
#[derive(Debug)]
pub struct PinGuard {
    pins: Arc<Mutex<HashMap<SnapshotId, usize>>>,
    id: SnapshotId,
}

impl PinGuard {
    /// The pinned snapshot.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pins.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.id);
            }
        }
    }
}

/// The snapshot store. `Send + Sync`; share it as `Arc<SnapshotStore>`.
#[derive(Debug)]
pub struct SnapshotStore {
    layout: Layout,
    blocks: BlockStore,
    state: Arc<Mutex<State>>,
    pins: Arc<Mutex<HashMap<SnapshotId, usize>>>,
    pool: Arc<BufferPool>,
    limits: Mutex<StoreLimits>,
    /// Assemblies (preview, deep verify) running now.
    assemblies: AtomicUsize,
    io_pool: rayon::ThreadPool,
    /// The last commit's capture and hashes, so the next commit rehashes only what changed.
    hash_memo: Mutex<Option<HashMemo>>,
    /// The captured file's mapping, kept for the next capture.
    maps: MapCache,
    _lock: File,
}

/// Unregisters a commit's in-flight blocks however the commit ends (a [`Prepared`] capture
/// holds its blocks this way until it is dropped).
#[derive(Debug)]
struct Inflight {
    state: Arc<Mutex<State>>,
    hashes: Vec<blake3::Hash>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for h in &self.hashes {
            if let Some(n) = st.inflight.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    st.inflight.remove(h);
                }
            }
        }
    }
}

/// A decoded window of blocks, in file order: each block's reference and bytes (or fault).
type Decoded = Vec<(BlockRef, Result<Vec<u8>, BlockFault>)>;

/// Feeds a decoded window to the whole-file hasher and records its faults; the window's first
/// block is block `scan`'s count so far.
fn take_window(window: Decoded, hasher: &mut blake3::Hasher, scan: &mut BlockScan) {
    for (r, result) in window {
        let i = scan.seen;
        scan.seen += 1;
        match result {
            Ok(data) => {
                if i == 0 {
                    scan.header_version =
                        Some(parse_storage_version(&data).map_err(|e| e.to_string()));
                }
                hasher.update(&data);
            }
            Err(fault) => scan.fault(i, r.hash, fault),
        }
    }
}

/// What the block pass of a verify or assemble found.
#[derive(Debug, Default)]
struct BlockScan {
    /// Blocks taken so far (the index of the next one).
    seen: usize,
    missing: Vec<(usize, blake3::Hash)>,
    bad: Vec<(usize, blake3::Hash, BlockFault)>,
    file_hash: Option<blake3::Hash>,
    header_version: Option<Result<u64, String>>,
}

impl BlockScan {
    /// Records block `i`'s fault: missing, or present but unusable.
    fn fault(&mut self, i: usize, hash: blake3::Hash, fault: BlockFault) {
        match fault {
            BlockFault::Missing => self.missing.push((i, hash)),
            fault => self.bad.push((i, hash, fault)),
        }
    }
}

impl SnapshotStore {
    /// Opens (creating if needed) the store at `root`: takes the store lock, removes temp files
    /// left by a crash, and loads the catalog from the index, reconciled with the manifests.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let layout = Layout::new(root);
        create_root(root)?;
        let lock = fsio::lock_exclusive(&root.join("LOCK"), root)?;
        let mut created = false;
        for dir in [
            &layout.manifests,
            &layout.verified,
            &layout.annotations,
            &layout.tmp,
        ] {
            created |= fsio::ensure_dir(dir)?;
        }
        let blocks = BlockStore::new(root.join("blocks"), layout.tmp.clone());
        blocks.init()?;
        if created {
            fsio::sync_dir(root)?;
        }
        fsio::clean_dir(&layout.tmp)?;
        let state = load_state(&layout, &blocks)?;
        let io_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("lnrs-snapshot-io-{i}"))
            .build()
            .map_err(|e| io_err(root, std::io::Error::other(e)))?;
        let store = SnapshotStore {
            layout,
            blocks,
            state: Arc::new(Mutex::new(state)),
            pins: Arc::default(),
            pool: Arc::default(),
            io_pool,
            hash_memo: Mutex::default(),
            maps: MapCache::default(),
            limits: Mutex::new(StoreLimits::default()),
            assemblies: AtomicUsize::new(0),
            _lock: lock,
        };
        store.persist_index()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Is the store writable right now? Writes, fsyncs and removes a probe file.
    pub fn probe(&self) -> Result<(), SnapshotError> {
        let path = fsio::temp_path(&self.layout.tmp, "probe");
        fsio::write_new(&path, b"lnrs snapshot store probe", true)?;
        fs::remove_file(&path).map_err(|e| io_err(&path, e))
    }

    /// Copies the checkpointed database file into memory. Call it from the writer between
    /// transactions, after [`crate::storage::checkpoint`]: it only reads the file, so the
    /// writer is held for one read.
    pub fn capture(&self, db_file: &Path) -> Result<Capture, SnapshotError> {
        self.capture_from(db_file, None)
    }

    /// A background capture of the live file: stops (`Cancelled`) once `ticket` is cancelled.
    pub fn capture_gated(
        &self,
        db_file: &Path,
        ticket: &crate::storage::gate::ReadTicket,
    ) -> Result<Capture, SnapshotError> {
        self.capture_from(db_file, Some(ticket))
    }

    /// Refreshes the last commit's capture from the file when there is one (it is consumed:
    /// the next commit hashes from what the refresh found), else reads the whole file.
    fn capture_from(
        &self,
        db_file: &Path,
        ticket: Option<&crate::storage::gate::ReadTicket>,
    ) -> Result<Capture, SnapshotError> {
        let memo = self
            .hash_memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match memo {
            Some(memo) => {
                let (base, hashes) = memo.into_parts();
                Capture::refresh(db_file, base, hashes, ticket, &self.maps)
            }
            None => Capture::read(db_file, &self.pool, ticket),
        }
    }

    /// A read of the whole file that owes nothing to earlier captures (verification: see
    /// `snapshot_capture_verify`).
    pub fn capture_whole(&self, db_file: &Path) -> Result<Capture, SnapshotError> {
        Capture::read(db_file, &self.pool, None)
    }

    /// A capture of in-memory bytes (tests and tools; must start with a DuckDB header).
    pub fn capture_bytes(&self, bytes: &[u8]) -> Result<Capture, SnapshotError> {
        Capture::from_bytes(bytes, &self.pool)
    }

    /// Makes a capture a durable snapshot, off the writer: [`prepare`](Self::prepare) it, then
    /// [`commit_prepared`](Self::commit_prepared). The snapshot exists once this returns `Ok`.
    pub fn commit(&self, capture: Capture, meta: NewSnapshot) -> Result<Manifest, SnapshotError> {
        self.commit_timed(capture, meta).map(|(m, _)| m)
    }

    /// [`commit`](Self::commit), also reporting where the time went and what was written. The
    /// new blocks and the manifest's temp file are written concurrently (the manifest is not
    /// visible until renamed, after the blocks are durable).
    pub fn commit_timed(
        &self,
        capture: Capture,
        meta: NewSnapshot,
    ) -> Result<(Manifest, CommitTimings), SnapshotError> {
        let start = Instant::now();
        let at = capture.captured_at();
        let (prepared, compressed) = self.hash_and_compress(capture)?;
        let mut t = prepared.timings.clone();
        let manifest = prepared.manifest(self.next_id(at), meta, at);
        let encoded = manifest.encode()?;
        let tmp = fsio::temp_path(&self.layout.tmp, &format!("{}.json", manifest.id));
        let io_start = Instant::now();
        let (blocks, written) = self.io_pool.install(|| {
            rayon::join(
                || self.write_blocks(&compressed),
                || fsio::write_new(&tmp, &encoded, true),
            )
        });
        t.write = io_start.elapsed();
        if let Err(e) = blocks {
            let _ = fsio::remove_if_exists(&tmp);
            return Err(e);
        }
        self.mark_known(&compressed);
        self.publish(&manifest, &tmp, written, &mut t)?;
        fail_point("snapshot.after_manifest")?;
        t.total = start.elapsed();
        Ok((manifest, t))
    }

    /// Everything of a commit but the manifest: hash the blocks in parallel (reusing the last
    /// capture's hashes where bytes are unchanged), write the blocks the store lacks
    /// (compressed, fsync'd, shard dirs fsync'd). The blocks stay in flight — safe from GC —
    /// while the result lives; committing it then only writes a manifest. A capture taken
    /// ahead of a delete is prepared in the background this way.
    pub fn prepare(&self, capture: Capture) -> Result<Prepared, SnapshotError> {
        let (mut prepared, compressed) = self.hash_and_compress(capture)?;
        let io_start = Instant::now();
        self.write_blocks(&compressed)?;
        prepared.timings.write = io_start.elapsed();
        prepared.timings.total += prepared.timings.write;
        self.mark_known(&compressed);
        Ok(prepared)
    }

    /// Hashes the capture (keeping it as the memo of the next), registers its blocks in flight
    /// and compresses the ones the store lacks; nothing is written yet.
    #[allow(clippy::type_complexity)]
    fn hash_and_compress(
        &self,
        mut capture: Capture,
    ) -> Result<(Prepared, Vec<(blake3::Hash, Vec<u8>)>), SnapshotError> {
        let start = Instant::now();
        let mut t = CommitTimings::default();
        let prior = capture.take_prior();
        let bytes = capture.bytes();
        let ranges = block_ranges(bytes.len());
        let hashed = match prior {
            Some(refreshed) => filehash::hash_capture(bytes, Some(Prev::Refreshed(&refreshed))),
            None => {
                let memo = self
                    .hash_memo
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                filehash::hash_capture(bytes, memo.as_ref().map(Prev::Bytes))
            }
        };
        t.hash = start.elapsed();
        fail_point("snapshot.after_hash")?;
        let hashes = hashed.block_hashes.clone();
        let (to_write, known_sizes, inflight) = self.plan_blocks(&hashes);
        let compressed: Vec<(blake3::Hash, Vec<u8>)> = to_write
            .par_iter()
            .map(|&i| compress(&bytes[ranges[i].clone()]).map(|z| (hashes[i], z)))
            .collect::<Result<_, _>>()?;
        t.compress = start.elapsed() - t.hash;
        let mut sizes = known_sizes;
        sizes.extend(compressed.iter().map(|(h, z)| (*h, z.len() as u64)));
        t.new_blocks = compressed.len();
        t.new_bytes = compressed.iter().map(|(_, z)| z.len() as u64).sum();
        t.total = start.elapsed();
        let prepared = Prepared {
            file_len: capture.len(),
            storage_version: capture.storage_version(),
            captured_at: capture.captured_at(),
            header: capture.header().to_vec(),
            ranges,
            hashes,
            sizes,
            file_hash: hashed.file_hash,
            timings: t,
            _inflight: inflight,
        };
        *self.hash_memo.lock().unwrap_or_else(|e| e.into_inner()) = Some(hashed.into_memo(capture));
        Ok((prepared, compressed))
    }

    /// The next snapshot id, for a snapshot created at `at`.
    fn next_id(&self, at: DateTime<Utc>) -> SnapshotId {
        let mut st = self.state();
        let id = SnapshotId::generate(at, st.last_id.as_ref());
        st.last_id = Some(id.clone());
        id
    }

    /// Makes a prepared capture a snapshot created at `at` with `meta`: writes its manifest
    /// (temp, fsync, rename, fsync dir). Its blocks are durable already.
    pub fn commit_prepared(
        &self,
        prepared: &Prepared,
        meta: NewSnapshot,
        at: DateTime<Utc>,
    ) -> Result<Manifest, SnapshotError> {
        let manifest = prepared.manifest(self.next_id(at), meta, at);
        self.persist(&manifest, &mut CommitTimings::default())?;
        fail_point("snapshot.after_manifest")?;
        Ok(manifest)
    }

    /// Writes the manifest durably and adds the snapshot to the catalog.
    fn persist(&self, manifest: &Manifest, t: &mut CommitTimings) -> Result<(), SnapshotError> {
        let encoded = manifest.encode()?;
        let tmp = fsio::temp_path(&self.layout.tmp, &format!("{}.json", manifest.id));
        let io_start = Instant::now();
        let written = fsio::write_new(&tmp, &encoded, true);
        t.write = io_start.elapsed();
        self.publish(manifest, &tmp, written, t)
    }

    /// Renames the manifest's written temp file into place and adds the snapshot to the
    /// catalog; `written` is how writing the temp file went.
    fn publish(
        &self,
        manifest: &Manifest,
        tmp: &Path,
        written: Result<(), SnapshotError>,
        t: &mut CommitTimings,
    ) -> Result<(), SnapshotError> {
        let start = Instant::now();
        let renamed = written.and_then(|()| self.publish_manifest(tmp, &manifest.id));
        if renamed.is_err() {
            let _ = fsio::remove_if_exists(tmp);
        }
        let synced = renamed?;
        // The manifest is on disk from here on: the catalog must know it even if the directory
        // fsync failed, or GC could sweep blocks it references.
        self.finish_commit(manifest);
        t.publish = start.elapsed();
        synced
    }

    /// Under the lock: the blocks to write and the in-flight registration of every block.
    fn plan_blocks(
        &self,
        hashes: &[blake3::Hash],
    ) -> (Vec<usize>, HashMap<blake3::Hash, u64>, Inflight) {
        let mut st = self.state();
        let mut seen = HashSet::with_capacity(hashes.len());
        let mut to_write = Vec::new();
        let mut known_sizes = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.iter().enumerate() {
            if !seen.insert(*h) {
                continue;
            }
            *st.inflight.entry(*h).or_insert(0) += 1;
            match st.known.get(h) {
                Some(size) if !st.suspect.contains(h) => {
                    known_sizes.insert(*h, *size);
                }
                _ => to_write.push(i),
            }
        }
        let inflight = Inflight {
            state: Arc::clone(&self.state),
            hashes: seen.into_iter().collect(),
        };
        (to_write, known_sizes, inflight)
    }

    /// Writes the new blocks (each fsync'd), then fsyncs the shard directories they went into.
    fn write_blocks(&self, compressed: &[(blake3::Hash, Vec<u8>)]) -> Result<(), SnapshotError> {
        self.io_pool.install(|| {
            compressed
                .par_iter()
                .try_for_each(|(h, z)| self.blocks.put_compressed(h, z))
        })?;
        let shards: HashSet<PathBuf> = compressed
            .iter()
            .map(|(h, _)| self.blocks.shard_dir(h))
            .collect();
        self.io_pool
            .install(|| shards.par_iter().try_for_each(|d| fsio::sync_dir(d)))?;
        fail_point("snapshot.after_blocks")
    }

    /// Renames the manifest into place. `Ok(Err(_))`: renamed, but the directory fsync failed.
    fn publish_manifest(
        &self,
        tmp: &Path,
        id: &SnapshotId,
    ) -> Result<Result<(), SnapshotError>, SnapshotError> {
        fail_point("snapshot.before_manifest_rename")?;
        let dest = self.layout.manifest(id);
        fs::rename(tmp, &dest).map_err(|e| io_err(&dest, e))?;
        Ok(fsio::sync_dir(&self.layout.manifests))
    }

    /// Durable blocks are known (and no longer suspect).
    fn mark_known(&self, written: &[(blake3::Hash, Vec<u8>)]) {
        let mut st = self.state();
        for (h, z) in written {
            st.known.insert(*h, z.len() as u64);
            st.suspect.remove(h);
        }
    }

    fn finish_commit(&self, manifest: &Manifest) {
        let mut st = self.state();
        st.catalog.insert(Entry::of(manifest));
        st.index_dirty = true;
    }

    /// Reads and checks a snapshot's manifest.
    pub fn get(&self, id: &SnapshotId) -> Result<Manifest, SnapshotError> {
        let path = self.layout.manifest(id);
        let bytes =
            fsio::read_optional(&path)?.ok_or_else(|| SnapshotError::NotFound(id.to_string()))?;
        decode_manifest(&bytes, id)
    }

    /// One page of snapshots matching `filter`, newest first, answered from the catalog, as
    /// users see them (annotations applied).
    pub fn list(&self, filter: &ListFilter) -> ListPage {
        let held = self.held_ids();
        let st = self.state();
        st.catalog.list(filter, &st.overlay(&held))
    }

    /// One snapshot as [`list`](Self::list) shows it; `None` when it does not exist.
    pub fn item(&self, id: &SnapshotId) -> Option<ListItem> {
        let held = self.held_ids();
        let st = self.state();
        st.catalog.item(id, &st.overlay(&held))
    }

    /// Changes a snapshot's pin, labels or description (see [`Annotation`]) and returns the
    /// snapshot as now listed. The record is durable when this returns; an annotation back at
    /// the default (unpinned, nothing replaced) is removed.
    pub fn annotate(
        &self,
        id: &SnapshotId,
        update: AnnotationUpdate,
    ) -> Result<ListItem, SnapshotError> {
        // Holding the hold table orders this with forget: a snapshot is never pinned while it
        // is being forgotten (that pin would be acknowledged and lost).
        let holds = self.holds();
        let current = {
            let st = self.state();
            if st.catalog.get(id).is_none() {
                return Err(SnapshotError::NotFound(id.to_string()));
            }
            st.annotations.get(id).cloned().unwrap_or_default()
        };
        let next = current.updated(update, Utc::now());
        self.write_annotation(id, &next)?;
        let held: HashSet<SnapshotId> = holds.keys().cloned().collect();
        let mut st = self.state();
        if next.is_empty() {
            st.annotations.remove(id);
        } else {
            st.annotations.insert(id.clone(), next);
        }
        st.catalog
            .item(id, &st.overlay(&held))
            .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
    }

    /// Writes (durably) or removes the annotation record of `id`.
    fn write_annotation(&self, id: &SnapshotId, a: &Annotation) -> Result<(), SnapshotError> {
        let path = self.layout.annotation(id);
        if a.is_empty() {
            if fsio::remove_if_exists(&path)? {
                fsio::sync_dir(&self.layout.annotations)?;
            }
            return Ok(());
        }
        let bytes = a.encode(id)?;
        fsio::write_atomic(&self.layout.tmp, &path, &bytes, true, || Ok(()))?;
        fsio::sync_dir(&self.layout.annotations)
    }

    /// See [`Catalog::newest_at_or_before`].
    pub fn newest_at_or_before(&self, seq: u64) -> Option<SnapshotSummary> {
        let st = self.state();
        st.catalog
            .newest_at_or_before(seq, |s| {
                // An IMPORT snapshot is the state after its IMPORTED event, which replays by
                // swapping it in; a loaded one counts another log.
                s.meta.operation == super::manifest::Operation::Import
                    || st
                        .annotations
                        .get(&s.id)
                        .is_some_and(|a| a.loaded_at.is_some())
            })
            .cloned()
    }

    /// Marks a snapshot as loaded from another history (see [`Annotation::loaded_at`]).
    pub fn mark_loaded(&self, id: &SnapshotId) -> Result<(), SnapshotError> {
        let _holds = self.holds();
        let mut next = self
            .state()
            .annotations
            .get(id)
            .cloned()
            .unwrap_or_default();
        if next.loaded_at.is_some() {
            return Ok(());
        }
        next.loaded_at = Some(Utc::now());
        self.write_annotation(id, &next)?;
        self.state().annotations.insert(id.clone(), next);
        Ok(())
    }

    /// Store-wide counts and sizes.
    pub fn stats(&self) -> StoreStats {
        let held = self.held_ids().len();
        let st = self.state();
        let (unreferenced_blocks, unreferenced_bytes) = st
            .known
            .iter()
            .filter(|(h, _)| st.is_garbage(h))
            .fold((0, 0), |(n, b), (_, size)| (n + 1, b + size));
        StoreStats {
            snapshot_count: st.catalog.len(),
            logical_bytes: st.catalog.logical_bytes(),
            stored_bytes: st.known.values().sum(),
            block_count: st.known.len(),
            unreferenced_blocks,
            unreferenced_bytes,
            pinned: st.annotations.values().filter(|a| a.pinned).count(),
            held,
            corrupt_manifests: st.corrupt_manifests.clone(),
        }
    }

    /// Quick verify: the manifest's checksum, every block present, decodable and matching its
    /// hash, the whole-file hash and the header's storage version.
    pub fn verify_quick(&self, id: &SnapshotId) -> Result<IntegrityReport, SnapshotError> {
        let mut report = IntegrityReport::default();
        if let Some(m) = self.manifest_check(id, &mut report)? {
            self.stored_checks(&m, None, &mut report)?;
        }
        self.record_verify(id, VerifyKind::Quick, report.passed());
        Ok(report)
    }

    /// The manifest's checksum, and every block of `id` that is not in `intact` present,
    /// decodable and matching its hash; damaged blocks are marked suspect, as by a quick verify.
    /// For a restore's safety snapshot: the blocks it shares with the target were read back and
    /// checked the same way, moments before, by the target's assembly. (No whole-file hash or
    /// header check: both need every block's bytes, and the capture that wrote this manifest
    /// computed both from the bytes its blocks were cut from.)
    pub fn verify_blocks_except(
        &self,
        id: &SnapshotId,
        intact: &HashSet<blake3::Hash>,
    ) -> Result<IntegrityReport, SnapshotError> {
        let mut report = IntegrityReport::default();
        let Some(m) = self.manifest_check(id, &mut report)? else {
            return Ok(report);
        };
        let start = Instant::now();
        let mut seen = HashSet::new();
        let rest: Vec<(usize, &BlockRef)> = m
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, r)| !intact.contains(&r.hash) && seen.insert(r.hash))
            .collect();
        let mut scan = BlockScan::default();
        let results: Vec<_> = rest
            .par_iter()
            .map(|(i, r)| (*i, r.hash, self.blocks.get(r).err()))
            .collect();
        for (i, hash, fault) in results {
            if let Some(fault) = fault {
                scan.fault(i, hash, fault);
            }
        }
        self.block_checks(rest.len(), &scan, start.elapsed(), &mut report);
        Ok(report)
    }

    /// Sets the scratch limits (see [`StoreLimits`]).
    pub fn set_limits(&self, limits: StoreLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn limits(&self) -> StoreLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses when writing `len` bytes under `dir` would leave less than the reserve free.
    pub fn check_scratch_space(&self, dir: &Path, len: u64) -> Result<(), SnapshotError> {
        let available = files::free_space(dir).map_err(|e| io_err(dir, e))?;
        let needed = len.saturating_add(self.limits().scratch_reserve_bytes);
        if available < needed {
            return Err(SnapshotError::NoScratchSpace { needed, available });
        }
        Ok(())
    }

    /// Takes one of the bounded assembly slots, or says how many are running.
    fn assembly_slot(&self) -> Result<AssemblySlot<'_>, SnapshotError> {
        let max = self.limits().max_assemblies;
        let order = std::sync::atomic::Ordering::AcqRel;
        let taken =
            self.assemblies
                .fetch_update(order, std::sync::atomic::Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
        match taken {
            Ok(_) => Ok(AssemblySlot(&self.assemblies)),
            Err(running) => Err(SnapshotError::Busy { running }),
        }
    }

    /// Assembles snapshot `id` into a scratch file of its own under the store's `tmp/`
    /// (emptied at every open), runs `f` on the file, and removes it. Bounded in number and by
    /// free space (see [`StoreLimits`]).
    pub fn with_assembled<T, E: From<SnapshotError>>(
        &self,
        id: &SnapshotId,
        f: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<T, E> {
        let _slot = self.assembly_slot()?;
        let m = self.get(id)?;
        self.check_scratch_space(&self.layout.tmp, m.file_len)?;
        let path = fsio::temp_path(&self.layout.tmp, &format!("assembled-{id}.duckdb"));
        // Read and removed: nothing to make durable.
        let result = self
            .assemble_unflushed(id, &path)
            .map(drop)
            .map_err(E::from)
            .and_then(|()| f(&path));
        let _ = files::remove_database(&path);
        result
    }

    /// Deep verify: the quick checks while assembling the file into `tmp/`, then open it
    /// read-only and run [`check_database`] against the manifest's fingerprints and schema.
    pub fn verify_deep(&self, id: &SnapshotId) -> Result<IntegrityReport, SnapshotError> {
        let mut report = IntegrityReport::default();
        if let Some(m) = self.manifest_check(id, &mut report)? {
            let _slot = self.assembly_slot()?;
            self.check_scratch_space(&self.layout.tmp, m.file_len)?;
            let path = fsio::temp_path(&self.layout.tmp, &format!("deep-{id}.duckdb"));
            let result = self.deep_checks(&m, &path, &mut report);
            let _ = files::remove_database(&path);
            result?;
        }
        self.record_verify(id, VerifyKind::Deep, report.passed());
        Ok(report)
    }

    fn deep_checks(
        &self,
        m: &Manifest,
        path: &Path,
        report: &mut IntegrityReport,
    ) -> Result<(), SnapshotError> {
        let file = create_truncate(path)?;
        self.stored_checks(m, Some(&file), report)?;
        drop(file);
        if !report.passed() {
            return Ok(());
        }
        let supported = self.engine_storage_version()?;
        report.run("storage_version", || {
            (
                m.storage_version <= supported,
                format!("<= {supported} (readable by this engine)"),
                m.storage_version.to_string(),
            )
        });
        let start = Instant::now();
        match crate::storage::attached::open_for_check(path) {
            Ok(conn) => {
                report.push("open_read_only", true, "opens", "opened", start.elapsed());
                report.extend(check_database(&conn, &m.fingerprints, &m.schema));
            }
            Err(e) => report.push(
                "open_read_only",
                false,
                "opens",
                e.public_message(),
                start.elapsed(),
            ),
        }
        Ok(())
    }

    /// Writes the snapshot's file to `dest` (created or truncated), checking every block's
    /// hash and the whole-file hash, then fsyncs it. On any error `dest` is removed. The caller
    /// renames it into place and fsyncs the directory (restore).
    pub fn assemble(&self, id: &SnapshotId, dest: &Path) -> Result<(), SnapshotError> {
        let file = self.assemble_unflushed(id, dest)?;
        file.sync_all().map_err(|e| {
            let _ = fs::remove_file(dest);
            io_err(dest, e)
        })
    }

    /// [`assemble`](Self::assemble) without the fsync: for a file that is only read and then
    /// removed (nothing to make durable), or one whose caller flushes it while it does other
    /// work. Returns the open file.
    pub fn assemble_unflushed(&self, id: &SnapshotId, dest: &Path) -> Result<File, SnapshotError> {
        let m = self.get(id)?;
        m.check_layout()
            .map_err(|e| SnapshotError::corrupt(format!("manifest {id}"), e))?;
        let result = self.assemble_into(&m, dest);
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }

    fn assemble_into(&self, m: &Manifest, dest: &Path) -> Result<File, SnapshotError> {
        let file = create_truncate(dest)?;
        let scan = self.scan_blocks(m, Some(&file))?;
        if let Some((i, h)) = scan.missing.first() {
            self.mark_suspect(scan.missing.iter().map(|(_, h)| *h));
            return Err(SnapshotError::corrupt(
                format!("block {i} ({h})"),
                "missing",
            ));
        }
        if let Some((i, h, fault)) = scan.bad.first() {
            self.mark_suspect(scan.bad.iter().map(|(_, h, _)| *h));
            return Err(SnapshotError::corrupt(
                format!("block {i} ({h})"),
                fault.to_string(),
            ));
        }
        if scan.file_hash != Some(m.file_blake3) {
            return Err(SnapshotError::corrupt(
                "assembled file",
                "whole-file hash mismatch",
            ));
        }
        fail_point("snapshot.assemble_before_sync")?;
        Ok(file)
    }

    /// Deletes a snapshot's manifest (its blocks go at the next GC) and its annotation.
    /// Refuses snapshots held by a restore ([`SnapshotError::Pinned`]) or pinned by a user
    /// ([`SnapshotError::PinnedByUser`]).
    pub fn forget(&self, id: &SnapshotId) -> Result<(), SnapshotError> {
        self.forget_inner(id, false)?;
        self.persist_index()
    }

    /// [`forget`](Self::forget), also when a user pinned the snapshot (never when a restore
    /// holds it).
    pub fn forget_pinned(&self, id: &SnapshotId) -> Result<(), SnapshotError> {
        self.forget_inner(id, true)?;
        self.persist_index()
    }

    fn forget_inner(&self, id: &SnapshotId, force: bool) -> Result<(), SnapshotError> {
        // Holding the hold table across the unlink closes the race with a concurrent pin() or
        // annotate().
        let holds = self.holds();
        if holds.contains_key(id) {
            return Err(SnapshotError::Pinned(id.to_string()));
        }
        if !force && self.state().annotations.get(id).is_some_and(|a| a.pinned) {
            return Err(SnapshotError::PinnedByUser(id.to_string()));
        }
        let path = self.layout.manifest(id);
        if !fsio::remove_if_exists(&path)? {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        fsio::sync_dir(&self.layout.manifests)?;
        fail_point("snapshot.forget_after_unlink")?;
        let _ = fsio::remove_if_exists(&self.layout.verified_record(id));
        // Best effort, and after the manifest: a record left behind belongs to no manifest and
        // is removed at the next open.
        let _ = fsio::remove_if_exists(&self.layout.annotation(id));
        let mut st = self.state();
        // Only after the unlink: until then GC still sees the blocks as referenced.
        st.catalog.remove(id);
        st.verified.remove(id);
        st.annotations.remove(id);
        let name = format!("{id}.json");
        st.corrupt_manifests.retain(|n| *n != name);
        st.index_dirty = true;
        Ok(())
    }

    /// Holds a snapshot until the guard is dropped: forget (forced or not) and retention leave
    /// it alone.
    pub fn pin(&self, id: &SnapshotId) -> PinGuard {
        let mut pins = self.holds();
        *pins.entry(id.clone()).or_insert(0) += 1;
        PinGuard {
            pins: Arc::clone(&self.pins),
            id: id.clone(),
        }
    }

    /// Applies a retention policy: plans which snapshots go, and unless `dry_run` forgets them
    /// and runs GC. Never removes the newest snapshot, the newest verified one, one a user
    /// pinned or one a restore holds.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> Result<RetentionOutcome, SnapshotError> {
        let mut pinned = self.held_ids();
        let (snapshots, newest_verified) = {
            let st = self.state();
            pinned.extend(
                st.annotations
                    .iter()
                    .filter(|(_, a)| a.pinned)
                    .map(|(id, _)| id.clone()),
            );
            let snapshots: Vec<_> = st
                .catalog
                .summaries()
                .map(|s| (s.id.clone(), s.created_at))
                .collect();
            let newest_verified = st
                .catalog
                .ids()
                .rev()
                .find(|id| st.verified.get(*id).is_some_and(|v| v.passed))
                .cloned();
            (snapshots, newest_verified)
        };
        let (mut kept, planned) = retention::plan(
            &snapshots,
            newest_verified.as_ref(),
            &pinned,
            policy,
            Utc::now(),
        );
        let mut outcome = RetentionOutcome {
            dry_run,
            ..Default::default()
        };
        if dry_run {
            outcome.kept = kept;
            outcome.removed = planned;
            return Ok(outcome);
        }
        for mut d in planned {
            match self.forget_inner(&d.id, false) {
                Ok(()) | Err(SnapshotError::NotFound(_)) => outcome.removed.push(d),
                // Pinned or held since the plan was made.
                Err(SnapshotError::Pinned(_) | SnapshotError::PinnedByUser(_)) => {
                    d.reasons = vec![RetentionReason::Pinned];
                    kept.push(d);
                }
                Err(e) => {
                    let _ = self.persist_index();
                    return Err(e);
                }
            }
        }
        kept.sort_by(|a, b| b.id.cmp(&a.id));
        outcome.kept = kept;
        // Nothing forgotten, nothing newly unreferenced: a sweep would only list the blocks.
        if !outcome.removed.is_empty() {
            outcome.gc = Some(self.gc()?);
        }
        Ok(outcome)
    }

    /// Mark and sweep: deletes every block file that no manifest and no in-flight commit
    /// references. Safe to run while commits are in progress.
    pub fn gc(&self) -> Result<GcOutcome, SnapshotError> {
        // Listing outside the lock is safe: a block created after the listing is simply not a
        // candidate, and every candidate is re-checked under the lock right before deletion.
        let on_disk = self.blocks.list()?;
        let candidates: Vec<blake3::Hash> = {
            let st = self.state();
            on_disk
                .keys()
                .filter(|h| st.is_garbage(h))
                .copied()
                .collect()
        };
        let mut outcome = GcOutcome::default();
        let half = candidates.len() / 2;
        // Batches keep each hold of the store lock short, so a pre-delete commit waiting for
        // it is not stalled behind a large sweep.
        for (b, batch) in candidates.chunks(GC_BATCH).enumerate() {
            let mut st = self.state();
            for (k, h) in batch.iter().enumerate() {
                if b * GC_BATCH + k == half {
                    fail_point("snapshot.gc_mid_sweep")?;
                }
                if !st.is_garbage(h) {
                    continue;
                }
                outcome.bytes_freed += self.blocks.remove(h)?;
                outcome.blocks_removed += 1;
                st.known.remove(h);
                st.suspect.remove(h);
            }
        }
        outcome.blocks_kept = on_disk.len() - outcome.blocks_removed;
        self.persist_index()?;
        Ok(outcome)
    }

    /// The storage version files written by the running DuckDB engine have (found once by
    /// creating a scratch database in `tmp/`).
    pub fn engine_storage_version(&self) -> Result<u64, SnapshotError> {
        static VERSION: OnceLock<u64> = OnceLock::new();
        if let Some(v) = VERSION.get() {
            return Ok(*v);
        }
        let v = probe_engine_storage_version(&self.layout.tmp)?;
        Ok(*VERSION.get_or_init(|| v))
    }

    /// `Err(IncompatibleStorageVersion)` when the running engine cannot read the snapshot:
    /// restore calls this before it touches the live file.
    pub fn check_restorable(&self, m: &Manifest) -> Result<(), SnapshotError> {
        let supported = self.engine_storage_version()?;
        if m.storage_version > supported {
            return Err(SnapshotError::IncompatibleStorageVersion {
                found: m.storage_version,
                supported,
            });
        }
        Ok(())
    }

    /// The outcome of the last verify of a snapshot.
    pub fn last_verify(&self, id: &SnapshotId) -> Option<VerifyRecord> {
        self.state().verified.get(id).cloned()
    }

    /// Writes `index.json` if the catalog changed since it was last written. Not fsync'd: it
    /// is a cache, checked against the manifests at every open.
    pub fn persist_index(&self) -> Result<(), SnapshotError> {
        let mut st = self.state();
        if !st.index_dirty {
            return Ok(());
        }
        let bytes = st.catalog.encode_index()?;
        fsio::write_atomic(&self.layout.tmp, &self.layout.index, &bytes, false, || {
            Ok(())
        })?;
        st.index_dirty = false;
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hold table (restore pins), locked. Lock order: this before the state.
    fn holds(&self) -> MutexGuard<'_, HashMap<SnapshotId, usize>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held_ids(&self) -> HashSet<SnapshotId> {
        self.holds().keys().cloned().collect()
    }

    fn mark_suspect(&self, hashes: impl Iterator<Item = blake3::Hash>) {
        self.state().suspect.extend(hashes);
    }

    /// The `manifest` check: `Ok(None)` when it failed (reported), `Err(NotFound)` when the
    /// snapshot does not exist at all.
    fn manifest_check(
        &self,
        id: &SnapshotId,
        report: &mut IntegrityReport,
    ) -> Result<Option<Manifest>, SnapshotError> {
        let start = Instant::now();
        let path = self.layout.manifest(id);
        let Some(bytes) = fsio::read_optional(&path)? else {
            if self.state().catalog.get(id).is_none() {
                return Err(SnapshotError::NotFound(id.to_string()));
            }
            report.push(
                "manifest",
                false,
                "present, checksum ok",
                "missing",
                start.elapsed(),
            );
            return Ok(None);
        };
        let decoded = decode_manifest(&bytes, id).and_then(|m| {
            m.check_layout()
                .map(|()| m)
                .map_err(|e| SnapshotError::corrupt("manifest", e))
        });
        let (passed, actual) = match &decoded {
            Ok(_) => (true, format!("{} bytes, checksum ok", bytes.len())),
            Err(e) => (false, e.to_string()),
        };
        report.push(
            "manifest",
            passed,
            "present, checksum ok",
            actual,
            start.elapsed(),
        );
        Ok(decoded.ok())
    }

    /// `blocks_present`, `block_hashes`, `file_hash` and `header` checks, optionally writing
    /// the decoded file to `sink`.
    fn stored_checks(
        &self,
        m: &Manifest,
        sink: Option<&File>,
        report: &mut IntegrityReport,
    ) -> Result<(), SnapshotError> {
        let start = Instant::now();
        let scan = self.scan_blocks(m, sink)?;
        let elapsed = start.elapsed();
        self.block_checks(m.blocks.len(), &scan, elapsed, report);
        let actual_hash = scan.file_hash.map_or_else(
            || "not computable (blocks unusable)".into(),
            |h| h.to_string(),
        );
        report.push(
            "file_hash",
            scan.file_hash == Some(m.file_blake3),
            format!("{} ({} bytes)", m.file_blake3, m.file_len),
            actual_hash,
            elapsed,
        );
        let header = match scan.header_version {
            Some(Ok(v)) => (v == m.storage_version, v.to_string()),
            Some(Err(e)) => (false, e),
            None => (false, "header block unusable".into()),
        };
        report.push(
            "header",
            header.0,
            format!("DuckDB header, storage version {}", m.storage_version),
            header.1,
            elapsed,
        );
        Ok(())
    }

    /// `blocks_present` and `block_hashes` of `n` blocks read in `scan`; marks the damaged
    /// ones suspect (no snapshot deduplicates against them: the next one writes them again).
    fn block_checks(
        &self,
        n: usize,
        scan: &BlockScan,
        elapsed: Duration,
        report: &mut IntegrityReport,
    ) {
        let list = |v: Vec<String>| v.into_iter().take(5).collect::<Vec<_>>().join(", ");
        report.push(
            "blocks_present",
            scan.missing.is_empty(),
            format!("{n} blocks"),
            match scan.missing.len() {
                0 => format!("{n} present"),
                k => format!(
                    "{k} missing: {}",
                    list(
                        scan.missing
                            .iter()
                            .map(|(i, h)| format!("#{i} {h}"))
                            .collect()
                    )
                ),
            },
            elapsed,
        );
        report.push(
            "block_hashes",
            scan.bad.is_empty(),
            format!("{} blocks decode to their hash", n - scan.missing.len()),
            match scan.bad.len() {
                0 => "all match".to_string(),
                k => format!(
                    "{k} damaged: {}",
                    list(
                        scan.bad
                            .iter()
                            .map(|(i, h, f)| format!("#{i} {h}: {f}"))
                            .collect()
                    )
                ),
            },
            elapsed,
        );
        let damaged = scan.missing.iter().map(|(_, h)| *h);
        self.mark_suspect(damaged.chain(scan.bad.iter().map(|(_, h, _)| *h)));
    }

    /// Decodes every block in windows (parallel within a window), checking each and writing it
    /// to `sink` at its offset, and feeds the whole-file hasher in order. The hasher is the one
    /// serial step: it takes each window while the next one is decoded, so it does not hold the
    /// other cores idle (scale 10: ~60 ms of a ~480 ms assembly).
    fn scan_blocks(&self, m: &Manifest, sink: Option<&File>) -> Result<BlockScan, SnapshotError> {
        let mut scan = BlockScan::default();
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0u64;
        let mut previous: Option<Decoded> = None;
        for window in m.blocks.chunks(DECODE_WINDOW) {
            let first = offset;
            offset += window.iter().map(|r| r.len).sum::<u64>();
            let (decoded, ()) = rayon::join(
                || self.decode_window(window, first, sink),
                || {
                    if let Some(p) = previous.take() {
                        take_window(p, &mut hasher, &mut scan);
                    }
                },
            );
            previous = Some(decoded?);
        }
        if let Some(p) = previous {
            take_window(p, &mut hasher, &mut scan);
        }
        if scan.missing.is_empty() && scan.bad.is_empty() {
            scan.file_hash = Some(hasher.finalize());
        }
        Ok(scan)
    }

    /// One window of [`scan_blocks`](Self::scan_blocks): each block decoded and checked, and
    /// written to `sink` at its offset (the window starts at `offset`), in parallel.
    fn decode_window(
        &self,
        window: &[BlockRef],
        offset: u64,
        sink: Option<&File>,
    ) -> Result<Decoded, SnapshotError> {
        let mut at = Vec::with_capacity(window.len());
        let mut next = offset;
        for r in window {
            at.push(next);
            next += r.len;
        }
        window
            .par_iter()
            .zip(at)
            .map(|(r, at)| {
                let data = self.blocks.get(r);
                if let (Ok(data), Some(f)) = (&data, sink) {
                    f.write_all_at(data, at)
                        .map_err(|e| io_err(&self.layout.tmp, e))?;
                }
                Ok((*r, data))
            })
            .collect()
    }

    fn record_verify(&self, id: &SnapshotId, kind: VerifyKind, passed: bool) {
        let record = VerifyRecord {
            kind,
            passed,
            at: Utc::now(),
        };
        // Best effort: the record is advisory (it only makes retention keep more).
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let path = self.layout.verified_record(id);
            let _ = fsio::write_atomic(&self.layout.tmp, &path, &bytes, false, || Ok(()));
        }
        let mut st = self.state();
        if st.catalog.get(id).is_some() {
            st.verified.insert(id.clone(), record);
        }
    }
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        let _ = self.persist_index();
    }
}

/// Builds the catalog at open: index entries still backed by a manifest, plus every manifest
/// the index does not know; blocks on disk; verify records.
fn load_state(layout: &Layout, blocks: &BlockStore) -> Result<State, SnapshotError> {
    let mut st = State::default();
    let on_disk: Vec<SnapshotId> = fsio::file_names(&layout.manifests)?
        .iter()
        .filter_map(|n| n.strip_suffix(".json"))
        .filter_map(|n| SnapshotId::parse(n).ok())
        .collect();
    let wanted: HashSet<&SnapshotId> = on_disk.iter().collect();
    let index = fsio::read_optional(&layout.index)?.and_then(|b| Catalog::decode_index(&b).ok());
    st.index_dirty = index.is_none();
    for entry in index.unwrap_or_default() {
        if wanted.contains(&entry.summary.id) {
            st.catalog.insert(entry);
        } else {
            st.index_dirty = true;
        }
    }
    for id in &on_disk {
        if st.catalog.get(id).is_none() {
            load_manifest(layout, id, &mut st)?;
        }
    }
    st.known = blocks.list()?;
    st.verified = load_verified(layout, &st.catalog)?;
    st.annotations = load_annotations(layout)?;
    st.last_id = st.catalog.newest().cloned();
    Ok(st)
}

fn load_manifest(layout: &Layout, id: &SnapshotId, st: &mut State) -> Result<(), SnapshotError> {
    let Some(bytes) = fsio::read_optional(&layout.manifest(id))? else {
        return Ok(());
    };
    match decode_manifest(&bytes, id) {
        Ok(m) => st.catalog.insert(Entry::of(&m)),
        Err(_) => {
            st.corrupt_manifests.push(format!("{id}.json"));
            st.salvaged.extend(Manifest::salvage_blocks(&bytes));
        }
    }
    st.index_dirty = true;
    Ok(())
}

fn load_verified(
    layout: &Layout,
    catalog: &Catalog,
) -> Result<HashMap<SnapshotId, VerifyRecord>, SnapshotError> {
    let mut verified = HashMap::new();
    for name in fsio::file_names(&layout.verified)? {
        let Some(id) = name
            .strip_suffix(".json")
            .and_then(|n| SnapshotId::parse(n).ok())
        else {
            continue;
        };
        let path = layout.verified_record(&id);
        if catalog.get(&id).is_none() {
            let _ = fs::remove_file(&path);
            continue;
        }
        let record = fsio::read_optional(&path)?
            .and_then(|b| serde_json::from_slice::<VerifyRecord>(&b).ok());
        if let Some(r) = record {
            verified.insert(id, r);
        }
    }
    Ok(verified)
}

/// Every annotation record whose snapshot has a manifest (one that fails its checksum is read as
/// pinned: see [`Annotation::damaged`]); records whose manifest is gone are removed.
fn load_annotations(layout: &Layout) -> Result<HashMap<SnapshotId, Annotation>, SnapshotError> {
    let mut annotations = HashMap::new();
    for name in fsio::file_names(&layout.annotations)? {
        let Some(id) = name
            .strip_suffix(".json")
            .and_then(|n| SnapshotId::parse(n).ok())
        else {
            continue;
        };
        let path = layout.annotation(&id);
        // The manifest file, not the catalog: a damaged manifest may yet be repaired, and its
        // pin with it.
        if !layout.manifest(&id).exists() {
            let _ = fs::remove_file(&path);
            continue;
        }
        if let Some(bytes) = fsio::read_optional(&path)? {
            let a = Annotation::decode(&bytes, &id).unwrap_or_else(|_| Annotation::damaged());
            annotations.insert(id, a);
        }
    }
    Ok(annotations)
}

fn decode_manifest(bytes: &[u8], id: &SnapshotId) -> Result<Manifest, SnapshotError> {
    let m = Manifest::decode(bytes)?;
    if &m.id != id {
        return Err(SnapshotError::corrupt(
            format!("manifest {id}"),
            format!("names snapshot {}", m.id),
        ));
    }
    Ok(m)
}

/// A capture whose blocks are durable in the store (see [`SnapshotStore::prepare`]): what a
/// manifest needs, and the in-flight hold that keeps GC off its blocks while it lives.
#[derive(Debug)]
pub struct Prepared {
    file_len: u64,
    storage_version: u64,
    captured_at: DateTime<Utc>,
    header: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    hashes: Vec<blake3::Hash>,
    sizes: HashMap<blake3::Hash, u64>,
    file_hash: blake3::Hash,
    timings: CommitTimings,
    _inflight: Inflight,
}

impl Prepared {
    /// BLAKE3 of the captured file.
    pub fn file_hash(&self) -> blake3::Hash {
        self.file_hash
    }

    /// The captured file's length.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// When the file was read.
    pub fn captured_at(&self) -> DateTime<Utc> {
        self.captured_at
    }

    /// Where preparing spent its time, and the blocks it added.
    pub fn timings(&self) -> &CommitTimings {
        &self.timings
    }

    /// Whether the database file at `path` still has this capture's length and headers (every
    /// checkpoint rewrites a header): a cheap re-check before the capture is reused.
    pub fn matches_file(&self, path: &Path) -> Result<bool, SnapshotError> {
        super::capture::same_header(path, self.file_len, &self.header)
    }

    fn manifest(&self, id: SnapshotId, meta: NewSnapshot, at: DateTime<Utc>) -> Manifest {
        let blocks = self
            .ranges
            .iter()
            .zip(&self.hashes)
            .map(|(r, h)| BlockRef {
                hash: *h,
                len: (r.end - r.start) as u64,
                stored_len: self.sizes.get(h).copied().unwrap_or(0),
            })
            .collect();
        Manifest {
            format_version: FORMAT_VERSION,
            id,
            created_at: at,
            meta: meta.meta,
            storage_version: self.storage_version,
            file_len: self.file_len,
            file_blake3: self.file_hash,
            blocks,
            fingerprints: meta.fingerprints,
            schema: meta.schema,
        }
    }
}

/// Creates the root (and parents) if missing; a root that is a file is `NotADirectory`.
fn create_root(root: &Path) -> Result<(), SnapshotError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io_err(
            root,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| io_err(root, e))
        }
        Err(e) => Err(io_err(root, e)),
    }
}

fn create_truncate(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

fn probe_engine_storage_version(tmp: &Path) -> Result<u64, SnapshotError> {
    let path = fsio::temp_path(tmp, "engine-probe.duckdb");
    let result = (|| -> Result<u64, SnapshotError> {
        let conn = duckdb::Connection::open(&path)?;
        conn.execute_batch("CREATE TABLE probe (i INTEGER); CHECKPOINT")?;
        drop(conn);
        let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
        parse_storage_version(&bytes)
    })();
    let _ = files::remove_database(&path);
    result
}
