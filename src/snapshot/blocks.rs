//! The content-addressed block store: `blocks/<first two hex>/<blake3 hex>.zst`, one
//! zstd-compressed block per file, written with temp + fsync + rename so a file at its final
//! name is always complete.
//!
//! Each file is a zstd frame followed by a zstd *skippable* frame holding the BLAKE3 of the
//! compressed bytes (`zstd -d` still reads the file). The content hash alone would miss some
//! damage: zstd ignores e.g. the frame header's unused bit, so a flip there decodes to the same
//! content. With the seal, every changed or missing byte of a block file is detected.
//!
//! Reading a block checks everything a reader can: present, readable, sealed, decodable, the
//! length the manifest says, and the BLAKE3 it is named by.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use super::error::{io_err, SnapshotError};
use super::fsio;
use super::manifest::BlockRef;

/// zstd level 1: DuckDB blocks compress well even at the fastest level, and compression sits
/// on the pre-delete path.
const COMPRESSION_LEVEL: i32 = 1;
const EXT: &str = ".zst";
/// Skippable frame magic 0x184D2A5B (little endian), then the payload length (32).
const SEAL_HEADER: [u8; 8] = [0x5B, 0x2A, 0x4D, 0x18, 32, 0, 0, 0];
const SEAL_LEN: usize = SEAL_HEADER.len() + blake3::OUT_LEN;

type Compressor = zstd::bulk::Compressor<'static>;
type Decompressor = zstd::bulk::Decompressor<'static>;

thread_local! {
    // One zstd context per thread, reused: creating one per block costs more than level 1
    // compression of a small block.
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// What is wrong with a stored block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockFault {
    Missing,
    Unreadable(String),
    Undecodable(String),
    WrongLength { expected: u64, actual: u64 },
    WrongHash { actual: blake3::Hash },
}

impl std::fmt::Display for BlockFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockFault::Missing => write!(f, "missing"),
            BlockFault::Unreadable(e) => write!(f, "unreadable: {e}"),
            BlockFault::Undecodable(e) => write!(f, "undecodable: {e}"),
            BlockFault::WrongLength { expected, actual } => {
                write!(f, "length {actual}, expected {expected}")
            }
            BlockFault::WrongHash { actual } => write!(f, "content hashes to {actual}"),
        }
    }
}

/// The block directory of a store.
#[derive(Debug, Clone)]
pub(crate) struct BlockStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlockStore {
    /// A block store in `dir` whose temp files go to `tmp` (same file system).
    pub fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        BlockStore { dir, tmp }
    }

    /// Creates the block directory and all 256 shard directories, so a commit never has to
    /// create (and fsync the parent of) a directory on the hot path.
    pub fn init(&self) -> Result<(), SnapshotError> {
        let mut created = fsio::ensure_dir(&self.dir)?;
        let mut shard_created = false;
        for b in 0..=255u8 {
            shard_created |= fsio::ensure_dir(&self.dir.join(format!("{b:02x}")))?;
        }
        if shard_created {
            fsio::sync_dir(&self.dir)?;
            created = true;
        }
        if created {
            if let Some(parent) = self.dir.parent() {
                fsio::sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Where the block with this hash lives.
    pub fn path(&self, hash: &blake3::Hash) -> PathBuf {
        self.shard_dir(hash).join(format!("{}{EXT}", hash.to_hex()))
    }

    /// The shard directory of a hash (fsync'd after renames into it).
    pub fn shard_dir(&self, hash: &blake3::Hash) -> PathBuf {
        self.dir.join(format!("{:02x}", hash.as_bytes()[0]))
    }

    /// Writes compressed bytes under `hash` durably (temp, fsync, rename). The caller fsyncs
    /// the shard directory before anything may reference the block.
    pub fn put_compressed(&self, hash: &blake3::Hash, zst: &[u8]) -> Result<(), SnapshotError> {
        fsio::write_atomic(&self.tmp, &self.path(hash), zst, true, || Ok(()))
    }

    /// Reads, decompresses and checks one block.
    pub fn get(&self, r: &BlockRef) -> Result<Vec<u8>, BlockFault> {
        decode_file(&self.file(&r.hash)?, r)
    }

    /// The stored (sealed, compressed) bytes of a block file, unchecked: what a replica
    /// uploads, byte for byte.
    pub fn file(&self, hash: &blake3::Hash) -> Result<Vec<u8>, BlockFault> {
        match fs::read(self.path(hash)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlockFault::Missing),
            Err(e) => Err(BlockFault::Unreadable(e.to_string())),
        }
    }

    /// Every block file on disk with its size.
    pub fn list(&self) -> Result<HashMap<blake3::Hash, u64>, SnapshotError> {
        let mut found = HashMap::new();
        for b in 0..=255u8 {
            let shard = self.dir.join(format!("{b:02x}"));
            let entries = match fs::read_dir(&shard) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&shard, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&shard, e))?;
                let Some(hash) = parse_block_name(&entry.file_name()) else {
                    continue;
                };
                let len = entry
                    .metadata()
                    .map_err(|e| io_err(&entry.path(), e))?
                    .len();
                found.insert(hash, len);
            }
        }
        Ok(found)
    }

    /// Deletes a block file; returns its size (0 if it was already gone).
    pub fn remove(&self, hash: &blake3::Hash) -> Result<u64, SnapshotError> {
        let path = self.path(hash);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fsio::remove_if_exists(&path)?;
        Ok(len)
    }
}

fn parse_block_name(name: &std::ffi::OsStr) -> Option<blake3::Hash> {
    let hex = name.to_str()?.strip_suffix(EXT)?;
    if hex.len() != 64 || hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    blake3::Hash::from_hex(hex).ok()
}

/// Compresses one block with this thread's reusable zstd context and seals it: the bytes of
/// a block file.
pub(crate) fn compress(data: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    let io_fail = |e: io::Error| SnapshotError::corrupt("block compression", e.to_string());
    let mut zst = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Compressor::new(COMPRESSION_LEVEL).map_err(io_fail)?);
        }
        match slot.as_mut() {
            Some(c) => c.compress(data).map_err(io_fail),
            None => Err(SnapshotError::corrupt("block compression", "no context")),
        }
    })?;
    let seal = blake3::hash(&zst);
    zst.reserve_exact(SEAL_LEN);
    zst.extend_from_slice(&SEAL_HEADER);
    zst.extend_from_slice(seal.as_bytes());
    Ok(zst)
}

/// The content of a block file's bytes, after every check a reader can make: sealed,
/// decodable, the length `r` says and the BLAKE3 it is named by. Blocks fetched from a replica
/// go through the same checks as local ones.
pub fn decode_file(file: &[u8], r: &BlockRef) -> Result<Vec<u8>, BlockFault> {
    let frame = unseal(file)?;
    let data = decompress(frame, r.len)?;
    if data.len() as u64 != r.len {
        return Err(BlockFault::WrongLength {
            expected: r.len,
            actual: data.len() as u64,
        });
    }
    let actual = blake3::hash(&data);
    if actual != r.hash {
        return Err(BlockFault::WrongHash { actual });
    }
    Ok(data)
}

/// A sealed block file of `data` (other modules' tests).
#[cfg(test)]
pub(crate) fn compress_for_tests(data: &[u8]) -> Vec<u8> {
    compress(data).expect("compress")
}

/// Checks a block file's bytes knowing only the hash it is named by (a drill over a listing:
/// no manifest says its length): sealed, decodable within the largest block, and hashing to
/// `hash`.
pub fn check_named(file: &[u8], hash: &blake3::Hash) -> Result<(), BlockFault> {
    let frame = unseal(file)?;
    let data = decompress(frame, super::manifest::BLOCK_LEN as u64)?;
    let actual = blake3::hash(&data);
    if actual != *hash {
        return Err(BlockFault::WrongHash { actual });
    }
    Ok(())
}

/// The zstd frame of a block file whose seal matches.
fn unseal(file: &[u8]) -> Result<&[u8], BlockFault> {
    let damaged = |why: &str| BlockFault::Undecodable(format!("seal: {why}"));
    let split = file
        .len()
        .checked_sub(SEAL_LEN)
        .ok_or_else(|| damaged("file too short"))?;
    let (frame, seal) = file.split_at(split);
    let (header, hash) = seal.split_at(SEAL_HEADER.len());
    if header != SEAL_HEADER {
        return Err(damaged("trailer missing"));
    }
    if blake3::hash(frame).as_bytes() != hash {
        return Err(damaged("compressed bytes changed"));
    }
    Ok(frame)
}

/// Decompresses into a buffer of exactly `expected` capacity: a frame that claims more is an
/// error rather than an allocation of whatever a corrupt header says.
fn decompress(zst: &[u8], expected: u64) -> Result<Vec<u8>, BlockFault> {
    let cap = usize::try_from(expected)
        .map_err(|_| BlockFault::Undecodable("length does not fit in memory".into()))?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let d = Decompressor::new().map_err(|e| BlockFault::Undecodable(e.to_string()))?;
            *slot = Some(d);
        }
        let Some(d) = slot.as_mut() else {
            return Err(BlockFault::Undecodable("no context".into()));
        };
        let mut out = Vec::with_capacity(cap);
        d.decompress_to_buffer(zst, &mut out)
            .map_err(|e| BlockFault::Undecodable(e.to_string()))?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("tmp")).expect("tmp");
        let s = BlockStore::new(dir.path().join("blocks"), dir.path().join("tmp"));
        s.init().expect("init");
        (dir, s)
    }

    #[test]
    fn put_get_list_remove() {
        let (_d, s) = store();
        let data = vec![7u8; 100_000];
        let hash = blake3::hash(&data);
        let zst = compress(&data).expect("compress");
        s.put_compressed(&hash, &zst).expect("put");
        let r = BlockRef {
            hash,
            len: data.len() as u64,
            stored_len: zst.len() as u64,
        };
        assert_eq!(s.get(&r).expect("get"), data);
        assert_eq!(
            s.list().expect("list").get(&hash),
            Some(&(zst.len() as u64))
        );
        let wrong_len = BlockRef { len: 5, ..r };
        assert!(matches!(s.get(&wrong_len), Err(BlockFault::Undecodable(_))));
        assert_eq!(s.remove(&hash).expect("rm"), zst.len() as u64);
        assert_eq!(s.get(&r), Err(BlockFault::Missing));
    }
}
