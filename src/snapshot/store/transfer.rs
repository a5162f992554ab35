//! Moving snapshots between stores byte for byte: the sealed manifest and block files a
//! replica uploads, and the import of a snapshot taken elsewhere (a replica's, for disaster
//! recovery and remote verification). An import checks every block a reader would before it
//! keeps it, writes the blocks before the manifest, and never replaces a different snapshot.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;

use super::{Inflight, SnapshotStore};
use crate::snapshot::blocks::{decode_file, BlockFault};
use crate::snapshot::catalog::Entry;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::fsio;
use crate::snapshot::id::SnapshotId;
use crate::snapshot::manifest::{BlockRef, Manifest};

impl SnapshotStore {
    /// The sealed bytes of a snapshot's manifest file, as stored.
    pub fn manifest_file(&self, id: &SnapshotId) -> Result<Vec<u8>, SnapshotError> {
        fsio::read_optional(&self.layout.manifest(id))?
            .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
    }

    /// The stored (sealed, compressed) bytes of one block file.
    pub fn block_file(&self, hash: &blake3::Hash) -> Result<Vec<u8>, SnapshotError> {
        self.blocks
            .file(hash)
            .map_err(|f| SnapshotError::corrupt(format!("block {hash}"), f.to_string()))
    }

    /// Whether the catalog has this snapshot.
    pub fn contains(&self, id: &SnapshotId) -> bool {
        self.state().catalog.get(id).is_some()
    }

    /// The distinct blocks of `m` this store lacks (or holds damaged).
    pub fn missing_blocks(&self, m: &Manifest) -> Vec<BlockRef> {
        let st = self.state();
        let mut seen = HashSet::new();
        m.blocks
            .iter()
            .filter(|b| seen.insert(b.hash))
            .filter(|b| !st.known.contains_key(&b.hash) || st.suspect.contains(&b.hash))
            .copied()
            .collect()
    }

    /// Adds a snapshot taken elsewhere: `manifest_file` is its sealed manifest, `fetch` gives
    /// the stored bytes of each block this store lacks. Every fetched block must decode to the
    /// content its manifest names (a damaged one fails the import and is never written);
    /// blocks are durable before the manifest appears. Importing a snapshot the store already
    /// has is a no-op; a different snapshot under the same id is refused.
    pub fn import(
        &self,
        manifest_file: &[u8],
        fetch: impl Fn(&BlockRef) -> Result<Vec<u8>, SnapshotError> + Sync,
    ) -> Result<Manifest, SnapshotError> {
        let m = Manifest::decode(manifest_file)?;
        m.check_layout()
            .map_err(|e| SnapshotError::corrupt(format!("manifest {}", m.id), e))?;
        if self.contains(&m.id) {
            return match self.manifest_file(&m.id)? == manifest_file {
                true => Ok(m),
                false => Err(SnapshotError::corrupt(
                    format!("manifest {}", m.id),
                    "a different snapshot with this id is already in the store",
                )),
            };
        }
        let missing = self.missing_blocks(&m);
        let inflight = self.register_inflight(&m);
        let written = self.import_blocks(&missing, &fetch);
        let result = written.and_then(|sizes| self.publish_import(&m, manifest_file, &sizes));
        drop(inflight);
        result?;
        self.persist_index()?;
        Ok(m)
    }

    /// Fetches, checks and durably writes blocks (in parallel); returns their stored sizes.
    fn import_blocks(
        &self,
        missing: &[BlockRef],
        fetch: &(impl Fn(&BlockRef) -> Result<Vec<u8>, SnapshotError> + Sync),
    ) -> Result<Vec<(blake3::Hash, u64)>, SnapshotError> {
        let sizes = self.io_pool.install(|| {
            missing
                .par_iter()
                .map(|r| {
                    let file = fetch(r)?;
                    decode_file(&file, r).map_err(|f: BlockFault| {
                        SnapshotError::corrupt(format!("block {}", r.hash), f.to_string())
                    })?;
                    self.blocks.put_compressed(&r.hash, &file)?;
                    Ok((r.hash, file.len() as u64))
                })
                .collect::<Result<Vec<_>, SnapshotError>>()
        })?;
        let shards: HashSet<PathBuf> = missing
            .iter()
            .map(|r| self.blocks.shard_dir(&r.hash))
            .collect();
        for d in shards {
            fsio::sync_dir(&d)?;
        }
        Ok(sizes)
    }

    /// Writes the manifest (atomic, durable) and adds the snapshot to the catalog.
    fn publish_import(
        &self,
        m: &Manifest,
        manifest_file: &[u8],
        sizes: &[(blake3::Hash, u64)],
    ) -> Result<(), SnapshotError> {
        let dest = self.layout.manifest(&m.id);
        fsio::write_atomic(&self.layout.tmp, &dest, manifest_file, true, || Ok(()))?;
        fsio::sync_dir(&self.layout.manifests)?;
        let mut st = self.state();
        for (h, n) in sizes {
            st.known.insert(*h, *n);
            st.suspect.remove(h);
        }
        st.catalog.insert(Entry::of(m));
        // Ids issued here keep increasing past every imported one.
        if st.last_id.as_ref().is_none_or(|last| *last < m.id) {
            st.last_id = Some(m.id.clone());
        }
        st.index_dirty = true;
        Ok(())
    }

    /// Registers `m`'s blocks as in flight (GC keeps them) until the guard drops.
    fn register_inflight(&self, m: &Manifest) -> Inflight {
        let hashes: Vec<blake3::Hash> = {
            let mut seen = HashSet::new();
            m.blocks
                .iter()
                .map(|b| b.hash)
                .filter(|h| seen.insert(*h))
                .collect()
        };
        let mut st = self.state();
        for h in &hashes {
            *st.inflight.entry(*h).or_insert(0) += 1;
        }
        Inflight {
            state: Arc::clone(&self.state),
            hashes,
        }
    }
}

/// The id a manifest file names, without checking the rest (for listings of remote files).
pub fn manifest_id_of_name(name: &str) -> Option<SnapshotId> {
    SnapshotId::parse(name.strip_suffix(".json")?).ok()
}

impl SnapshotStore {
    /// Every user annotation (pins, labels, descriptions), by snapshot.
    pub fn annotations(&self) -> Vec<(SnapshotId, crate::snapshot::Annotation)> {
        let st = self.state();
        let mut all: Vec<_> = st
            .annotations
            .iter()
            .map(|(id, a)| (id.clone(), a.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl SnapshotStore {
    /// A fresh path under the store's `tmp/` for scratch work of other layers (a rebuilt
    /// point-in-time file, a replica's verify store): emptied at every open, so a crash never
    /// leaves it behind.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        fsio::temp_path(&self.layout.tmp, name)
    }

    /// Every snapshot's summary, oldest first.
    pub fn summaries(&self) -> Vec<crate::snapshot::SnapshotSummary> {
        self.state().catalog.summaries().cloned().collect()
    }

    /// Every snapshot id, oldest first.
    pub fn ids(&self) -> Vec<SnapshotId> {
        self.state().catalog.ids().cloned().collect()
    }
}
