//! Hashing a capture incrementally from the previous one: the per-block BLAKE3 (content
//! addresses) and the whole-file BLAKE3.
//!
//! Between two snapshots around a small delete only a handful of DuckDB blocks change, yet a
//! plain implementation hashes the whole file twice (every block, then the file). Here:
//! - a block whose bytes equal the previous capture's bytes at the same range reuses that
//!   capture's hash (a `memcmp` costs far less than BLAKE3, and equal bytes hash equally). The
//!   comparison is either made here, against the memo's buffer ([`Prev::Bytes`]), or was made
//!   by the capture itself, which refreshed the memo's buffer in place from the file and
//!   recorded which blocks it had to copy ([`Prev::Refreshed`]);
//! - BLAKE3 is a tree, so the file hash is a merge of the chaining values of 256 KiB-aligned
//!   subtrees ("leaves"); only leaves overlapping a block whose hash changed are recomputed.
//!   The result is the standard BLAKE3 of the file (`b3sum` agrees), which the tests check
//!   against `blake3::hash` over random edits.
//!
//! The memo keeps the previous capture's buffer alive (one file-sized buffer of memory).

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use rayon::prelude::*;

use super::capture::Capture;
use super::manifest::{block_range, block_ranges, BLOCK_LEN, HEADER_LEN};

/// Leaf subtree size: a power of two multiple of BLAKE3's 1 KiB chunk.
const LEAF: usize = 256 * 1024;

/// The hashes of one capture of `len` bytes.
#[derive(Debug)]
pub(crate) struct FileHashes {
    len: usize,
    block_hashes: Vec<blake3::Hash>,
    leaves: Vec<ChainingValue>,
}

/// What the last commit hashed: its capture and that capture's hashes.
#[derive(Debug)]
pub(crate) struct HashMemo {
    capture: Capture,
    hashes: FileHashes,
}

impl HashMemo {
    /// The capture (whose buffer a refreshing capture reuses) and its hashes.
    pub fn into_parts(self) -> (Capture, FileHashes) {
        (self.capture, self.hashes)
    }
}

/// A capture made by refreshing the previous capture's buffer: the previous hashes, and for
/// each block of the new file whether the capture had to copy it (`false`: its bytes were
/// compared equal to the previous capture's at the same range).
#[derive(Debug)]
pub(crate) struct Refreshed {
    pub hashes: FileHashes,
    pub changed: Vec<bool>,
}

/// What the previous capture proves about this one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Prev<'a> {
    /// The previous capture itself: blocks are compared here.
    Bytes(&'a HashMemo),
    /// The comparison the capture made (see [`Refreshed`]).
    Refreshed(&'a Refreshed),
}

impl<'a> Prev<'a> {
    fn hashes(self) -> &'a FileHashes {
        match self {
            Prev::Bytes(m) => &m.hashes,
            Prev::Refreshed(r) => &r.hashes,
        }
    }

    /// The previous hash of block `i` (range `r` of `bytes`) when its bytes are unchanged.
    fn unchanged_hash(
        self,
        i: usize,
        r: &std::ops::Range<usize>,
        bytes: &[u8],
    ) -> Option<blake3::Hash> {
        let same = match self {
            Prev::Bytes(m) => {
                let old = m.capture.bytes();
                block_range(old.len(), i).as_ref() == Some(r) && old[r.clone()] == bytes[r.clone()]
            }
            Prev::Refreshed(p) => p.changed.get(i) == Some(&false),
        };
        same.then(|| self.hashes().block_hashes.get(i).copied())
            .flatten()
    }
}

/// The hashes of a capture.
#[derive(Debug)]
pub(crate) struct Hashed {
    /// BLAKE3 of each block as cut by `block_ranges`.
    pub block_hashes: Vec<blake3::Hash>,
    pub file_hash: blake3::Hash,
    leaves: Vec<ChainingValue>,
}

impl Hashed {
    /// Turns these hashes and their capture into the memo for the next commit.
    pub fn into_memo(self, capture: Capture) -> HashMemo {
        HashMemo {
            hashes: FileHashes {
                len: capture.bytes().len(),
                block_hashes: self.block_hashes,
                leaves: self.leaves,
            },
            capture,
        }
    }
}

/// Hashes `bytes`, reusing whatever `prev` proves unchanged.
pub(crate) fn hash_capture(bytes: &[u8], prev: Option<Prev<'_>>) -> Hashed {
    let block_hashes = block_hashes(bytes, prev);
    let (file_hash, leaves) = file_hash(bytes, &block_hashes, prev);
    Hashed {
        block_hashes,
        file_hash,
        leaves,
    }
}

fn block_hashes(bytes: &[u8], prev: Option<Prev<'_>>) -> Vec<blake3::Hash> {
    block_ranges(bytes.len())
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            prev.and_then(|p| p.unchanged_hash(i, r, bytes))
                .unwrap_or_else(|| blake3::hash(&bytes[r.clone()]))
        })
        .collect()
}

/// BLAKE3 of `bytes` given its block hashes, and the leaf chaining values for the memo.
fn file_hash(
    bytes: &[u8],
    block_hashes: &[blake3::Hash],
    prev: Option<Prev<'_>>,
) -> (blake3::Hash, Vec<ChainingValue>) {
    if bytes.len() <= LEAF {
        return (blake3::hash(bytes), Vec::new());
    }
    let leaves: Vec<ChainingValue> = (0..bytes.len().div_ceil(LEAF))
        .into_par_iter()
        .map(|k| {
            match prev
                .map(|p| p.hashes())
                .filter(|p| reusable(p, k, bytes.len(), block_hashes))
            {
                Some(p) => p.leaves[k],
                None => leaf_cv(bytes, k),
            }
        })
        .collect();
    let left = left_subtree_len(bytes.len() as u64) as usize;
    let root = merge_subtrees_root(
        &node(&leaves, 0, left),
        &node(&leaves, left, bytes.len() - left),
        Mode::Hash,
    );
    (root, leaves)
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
fn reusable(prev: &FileHashes, k: usize, len: usize, block_hashes: &[blake3::Hash]) -> bool {
    let end = (k + 1) * LEAF;
    if end > len || end > prev.len || k >= prev.leaves.len() {
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
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::capture::BufferPool;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A DuckDB-looking file (a capture checks the magic).
    pub(crate) fn file(len: usize, seed: u8) -> Vec<u8> {
        let mut b: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        if len >= 20 {
            b[8..12].copy_from_slice(b"DUCK");
            b[12..20].copy_from_slice(&64u64.to_le_bytes());
        }
        b
    }

    fn memo_of(bytes: &[u8]) -> HashMemo {
        let pool = Arc::new(BufferPool::default());
        let capture = Capture::from_bytes(bytes, &pool).expect("capture");
        hash_capture(bytes, None).into_memo(capture)
    }

    fn plain_block_hashes(bytes: &[u8]) -> Vec<blake3::Hash> {
        block_ranges(bytes.len())
            .into_iter()
            .map(|r| blake3::hash(&bytes[r]))
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
            let h = hash_capture(&bytes, None);
            assert_eq!(h.file_hash, blake3::hash(&bytes), "len {len}");
            assert_eq!(h.block_hashes, plain_block_hashes(&bytes), "len {len}");
            if len >= 20 {
                let again = hash_capture(&bytes, Some(Prev::Bytes(&memo_of(&bytes))));
                assert_eq!(again.file_hash, h.file_hash, "len {len} from memo");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn incremental_hashes_equal_plain_blake3_after_random_edits(
            blocks in 2usize..9,
            tail in 0usize..5000,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            grow in -300_000i64..300_000,
        ) {
            let old = file(HEADER_LEN + blocks * BLOCK_LEN + tail, 1);
            let memo = memo_of(&old);
            let mut new = old.clone();
            let new_len = (new.len() as i64 + grow).max(0) as usize;
            new.resize(new_len, 0xab);
            for (at, v) in &edits {
                if !new.is_empty() {
                    let i = at.index(new.len());
                    new[i] = *v;
                }
            }
            let h = hash_capture(&new, Some(Prev::Bytes(&memo)));
            prop_assert_eq!(h.file_hash, blake3::hash(&new));
            prop_assert_eq!(h.block_hashes, plain_block_hashes(&new));
        }
    }
}
