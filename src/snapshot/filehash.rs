//! The whole-file BLAKE3 of a capture, computed incrementally from the previous capture.
//!
//! A commit already hashes every DuckDB block; hashing the whole file again doubled the CPU
//! cost of the pre-delete path. BLAKE3 is a tree, so the file hash is a merge of the chaining
//! values of 256 KiB-aligned subtrees ("leaves"). We keep the previous capture's leaves and
//! block hashes and recompute only leaves overlapping a DuckDB block whose content hash
//! changed; equal block hashes at the same index mean equal bytes, so a reused leaf is exactly
//! what hashing would produce. The result is the standard BLAKE3 of the file (`b3sum` agrees),
//! which the tests check against `blake3::hash` over random edits.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use rayon::prelude::*;

use super::manifest::{BLOCK_LEN, HEADER_LEN};

/// Leaf subtree size: a power of two multiple of BLAKE3's 1 KiB chunk.
const LEAF: usize = 256 * 1024;

/// Leaf chaining values and block hashes of the last capture hashed.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeafCache {
    file_len: usize,
    block_hashes: Vec<blake3::Hash>,
    leaves: Vec<ChainingValue>,
}

/// BLAKE3 of `bytes`, given the hashes of its DuckDB blocks (as cut by `block_ranges`) and
/// optionally the cache of an earlier capture. Returns the hash and the cache for the next one.
pub(crate) fn file_hash(
    bytes: &[u8],
    block_hashes: &[blake3::Hash],
    prev: Option<&LeafCache>,
) -> (blake3::Hash, LeafCache) {
    if bytes.len() <= LEAF {
        return (blake3::hash(bytes), LeafCache::default());
    }
    let leaves: Vec<ChainingValue> = (0..bytes.len().div_ceil(LEAF))
        .into_par_iter()
        .map(
            |k| match prev.filter(|p| reusable(p, k, bytes.len(), block_hashes)) {
                Some(p) => p.leaves[k],
                None => leaf_cv(bytes, k),
            },
        )
        .collect();
    let left = left_subtree_len(bytes.len() as u64) as usize;
    let root = merge_subtrees_root(
        &node(&leaves, 0, left),
        &node(&leaves, left, bytes.len() - left),
        Mode::Hash,
    );
    let cache = LeafCache {
        file_len: bytes.len(),
        block_hashes: block_hashes.to_vec(),
        leaves,
    };
    (root, cache)
}

fn leaf_cv(bytes: &[u8], k: usize) -> ChainingValue {
    let start = k * LEAF;
    let end = (start + LEAF).min(bytes.len());
    blake3::Hasher::new()
        .set_input_offset(start as u64)
        .update(&bytes[start..end])
        .finalize_non_root()
}

/// The chaining value of the subtree `[offset, offset + len)`. Splits follow BLAKE3's rule
/// (`left_subtree_len`), which for `len > LEAF` is a power of two ≥ LEAF, so every range of at
/// most LEAF bytes is exactly one leaf (full, or the file's tail).
fn node(leaves: &[ChainingValue], offset: usize, len: usize) -> ChainingValue {
    if len <= LEAF {
        return leaves[offset / LEAF];
    }
    let left = left_subtree_len(len as u64) as usize;
    merge_subtrees_non_root(
        &node(leaves, offset, left),
        &node(leaves, offset + left, len - left),
        Mode::Hash,
    )
}

/// Leaf `k` can be reused when it is a full leaf in both files and every DuckDB block it
/// overlaps has the same content hash at the same index in both.
fn reusable(prev: &LeafCache, k: usize, len: usize, block_hashes: &[blake3::Hash]) -> bool {
    let end = (k + 1) * LEAF;
    if end > len || end > prev.file_len {
        return false;
    }
    (block_index(k * LEAF)..=block_index(end - 1)).all(
        |j| matches!((prev.block_hashes.get(j), block_hashes.get(j)), (Some(a), Some(b)) if a == b),
    )
}

/// Index of the DuckDB block (as cut by `block_ranges`) holding byte `offset`.
fn block_index(offset: usize) -> usize {
    if offset < HEADER_LEN {
        0
    } else {
        1 + (offset - HEADER_LEN) / BLOCK_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::block_ranges;
    use proptest::prelude::*;

    fn block_hashes(bytes: &[u8]) -> Vec<blake3::Hash> {
        block_ranges(bytes.len())
            .into_iter()
            .map(|r| blake3::hash(&bytes[r]))
            .collect()
    }

    fn file(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn matches_plain_blake3_at_boundaries() {
        for len in [
            0,
            1,
            1024,
            LEAF,
            LEAF + 1,
            HEADER_LEN + BLOCK_LEN,
            2 * LEAF,
            2 * LEAF + 1025,
            5 * LEAF + HEADER_LEN,
        ] {
            let bytes = file(len, 7);
            let (h, cache) = file_hash(&bytes, &block_hashes(&bytes), None);
            assert_eq!(h, blake3::hash(&bytes), "len {len}");
            let (again, _) = file_hash(&bytes, &block_hashes(&bytes), Some(&cache));
            assert_eq!(again, h, "len {len} from cache");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn incremental_hash_equals_blake3_after_random_edits(
            blocks in 2usize..9,
            tail in 0usize..5000,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            grow in -300_000i64..300_000,
        ) {
            let old = file(HEADER_LEN + blocks * BLOCK_LEN + tail, 1);
            let (_, cache) = file_hash(&old, &block_hashes(&old), None);
            let mut new = old.clone();
            let new_len = (new.len() as i64 + grow).max(0) as usize;
            new.resize(new_len, 0xab);
            for (at, v) in &edits {
                if !new.is_empty() {
                    let i = at.index(new.len());
                    new[i] = *v;
                }
            }
            let (h, _) = file_hash(&new, &block_hashes(&new), Some(&cache));
            prop_assert_eq!(h, blake3::hash(&new));
        }
    }
}
