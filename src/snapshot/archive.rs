//! The portable snapshot file (`lnrs snapshot save` / `load`, ExportSnapshot / ImportSnapshot):
//! one snapshot's sealed manifest and every block it names, as stored, in one file that checks
//! itself. Moving history between environments or into an offline archive needs nothing else.
//!
//! Layout (integers little-endian):
//! - magic `LNRS-SNAPSHOT-ARCHIVE\n`, format version `u32`;
//! - the sealed manifest: `u64` length, bytes;
//! - the distinct blocks in manifest order: 32-byte BLAKE3 (content address), `u64` length, the
//!   stored (sealed, compressed) block file;
//! - the end marker: 32 zero bytes, then the BLAKE3 of every byte before the marker.
//!
//! A load checks the trailer hash first (a truncated or altered file is refused), then every
//! block against the manifest, then assembles and deep-verifies the snapshot in a scratch store;
//! only then does the snapshot enter the catalog.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{io_err, SnapshotError};
use super::id::SnapshotId;
use super::manifest::{BlockRef, Manifest};
use super::store::SnapshotStore;
use super::verify::IntegrityReport;

const MAGIC: &[u8] = b"LNRS-SNAPSHOT-ARCHIVE\n";
const VERSION: u32 = 1;
/// A manifest larger than this is not one (a 10 GiB database has ~40k blocks, ~6 MB).
const MAX_MANIFEST: u64 = 64 << 20;
/// A stored block is at most a 256 KiB block plus compression overhead and its seal.
const MAX_BLOCK_FILE: u64 = 1 << 20;

/// What writing an archive produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    pub bytes: u64,
    /// BLAKE3 of the whole file (what `b3sum` prints for it).
    pub blake3: blake3::Hash,
}

/// What loading an archive did.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    /// The deep verification of the snapshot, assembled in a scratch store.
    pub report: IntegrityReport,
    /// The catalog already held exactly this snapshot.
    pub already_present: bool,
    /// BLAKE3 of the whole file.
    pub blake3: blake3::Hash,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes snapshot `id` of `store` as an archive at `dest` (created; durable on return).
pub fn write(
    store: &SnapshotStore,
    id: &SnapshotId,
    dest: &Path,
) -> Result<Written, SnapshotError> {
    let manifest_file = store.manifest_file(id)?;
    let manifest = Manifest::decode(&manifest_file)?;
    let file = File::create(dest).map_err(|e| io_err(dest, e))?;
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let w = |r: std::io::Result<()>| r.map_err(|e| io_err(dest, e));
    w(out.write_all(MAGIC))?;
    w(out.write_all(&VERSION.to_le_bytes()))?;
    w(out.write_all(&(manifest_file.len() as u64).to_le_bytes()))?;
    w(out.write_all(&manifest_file))?;
    for b in distinct(&manifest) {
        let stored = store.block_file(&b.hash)?;
        w(out.write_all(b.hash.as_bytes()))?;
        w(out.write_all(&(stored.len() as u64).to_le_bytes()))?;
        w(out.write_all(&stored))?;
    }
    let body = out.hasher.finalize();
    w(out.write_all(&[0u8; 32]))?;
    w(out.write_all(body.as_bytes()))?;
    let (bytes, whole) = (out.bytes, out.hasher.finalize());
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_err(dest, e.into_error()))?;
    w(file.sync_all())?;
    Ok(Written {
        manifest,
        bytes,
        blake3: whole,
    })
}

/// The blocks of `m`, each once, in manifest order.
fn distinct(m: &Manifest) -> Vec<BlockRef> {
    let mut seen = HashSet::new();
    m.blocks
        .iter()
        .filter(|b| seen.insert(b.hash))
        .copied()
        .collect()
}

/// A parsed archive: the manifest and where each block's stored bytes are.
struct Parsed {
    manifest_file: Vec<u8>,
    blocks: HashMap<blake3::Hash, (u64, u64)>,
    blake3: blake3::Hash,
}

fn invalid(detail: impl Into<String>) -> SnapshotError {
    SnapshotError::ArchiveInvalid(detail.into())
}

/// Checks the trailer hash over the whole file, then indexes its records.
fn parse(path: &Path) -> Result<Parsed, SnapshotError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    let min = (MAGIC.len() + 4 + 8 + 64) as u64;
    if len < min {
        return Err(invalid("too short to be a snapshot archive (truncated?)"));
    }
    let mut head = vec![0u8; MAGIC.len() + 4];
    f.read_exact(&mut head).map_err(|e| io_err(path, e))?;
    if &head[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a snapshot archive (wrong file type)"));
    }
    let version = u32::from_le_bytes(head[MAGIC.len()..].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(invalid(format!(
            "archive format {version} is not supported (this build reads {VERSION})"
        )));
    }
    let body = len - 64;
    let mut hasher = hash_prefix(&f, body).map_err(|e| io_err(path, e))?;
    let computed = hasher.finalize();
    let mut trailer = [0u8; 64];
    f.read_exact_at(&mut trailer, body)
        .map_err(|e| io_err(path, e))?;
    let whole = hasher.update(&trailer).finalize();
    if trailer[..32] != [0u8; 32] || trailer[32..] != *computed.as_bytes() {
        return Err(invalid(
            "the archive's checksum does not match (truncated or damaged)",
        ));
    }
    f.seek(SeekFrom::Start(head.len() as u64))
        .map_err(|e| io_err(path, e))?;
    let mut pos = head.len() as u64;
    let mlen = read_u64(&f, pos, path)?;
    pos += 8;
    if mlen > MAX_MANIFEST || pos + mlen > body {
        return Err(invalid("the manifest record is out of bounds"));
    }
    let mut manifest_file = vec![0u8; mlen as usize];
    f.read_exact_at(&mut manifest_file, pos)
        .map_err(|e| io_err(path, e))?;
    pos += mlen;
    let mut blocks = HashMap::new();
    while pos < body {
        if pos + 40 > body {
            return Err(invalid("a block record is cut short"));
        }
        let mut hash = [0u8; 32];
        f.read_exact_at(&mut hash, pos)
            .map_err(|e| io_err(path, e))?;
        let blen = read_u64(&f, pos + 32, path)?;
        pos += 40;
        if blen > MAX_BLOCK_FILE || pos + blen > body {
            return Err(invalid("a block record is out of bounds"));
        }
        blocks.insert(blake3::Hash::from_bytes(hash), (pos, blen));
        pos += blen;
    }
    Ok(Parsed {
        manifest_file,
        blocks,
        blake3: whole,
    })
}

fn read_u64(f: &File, at: u64, path: &Path) -> Result<u64, SnapshotError> {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).map_err(|e| io_err(path, e))?;
    Ok(u64::from_le_bytes(b))
}

fn hash_prefix(f: &File, len: u64) -> std::io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

/// Adds the snapshot in the archive at `path` to `store`, after checking the whole file and
/// deep-verifying the snapshot in a fresh store at `scratch` (removed afterwards). A snapshot
/// that fails the deep verification is not added: the error carries the failed checks.
pub fn load(store: &SnapshotStore, path: &Path, scratch: &Path) -> Result<Loaded, SnapshotError> {
    let parsed = parse(path)?;
    let manifest = Manifest::decode(&parsed.manifest_file).map_err(|e| {
        invalid(format!(
            "its manifest does not decode: {}",
            e.public_message()
        ))
    })?;
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let fetch = |r: &BlockRef| -> Result<Vec<u8>, SnapshotError> {
        let (at, len) = parsed
            .blocks
            .get(&r.hash)
            .ok_or_else(|| invalid(format!("block {} is missing from the archive", r.hash)))?;
        let mut buf = vec![0u8; *len as usize];
        file.read_exact_at(&mut buf, *at)
            .map_err(|e| io_err(path, e))?;
        Ok(buf)
    };
    let already_present = store.contains(&manifest.id);
    let report = {
        let _ = std::fs::remove_dir_all(scratch);
        let checked = SnapshotStore::open(scratch).and_then(|s| {
            s.import(&parsed.manifest_file, fetch)?;
            s.verify_deep(&manifest.id)
        });
        let _ = std::fs::remove_dir_all(scratch);
        checked.map_err(|e| match e {
            SnapshotError::Corrupt { what, detail } => invalid(format!("{what}: {detail}")),
            other => other,
        })?
    };
    if !report.passed() {
        let failed: Vec<String> = report.failures().map(|c| c.name.clone()).collect();
        return Err(invalid(format!(
            "the snapshot failed deep verification: {}",
            failed.join(", ")
        )));
    }
    store.import(&parsed.manifest_file, fetch)?;
    if !already_present {
        store.mark_loaded(&manifest.id)?;
    }
    Ok(Loaded {
        manifest,
        report,
        already_present,
        blake3: parsed.blake3,
    })
}
