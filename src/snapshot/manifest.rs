//! The snapshot manifest: what a snapshot is (metadata, block list, fingerprints, schema) and its
//! self-checking on-disk encoding.
//!
//! On disk a manifest is compact JSON whose last member is `"manifest_blake3"`, the BLAKE3 of the
//! exact bytes of the JSON without that member. Any flipped or missing byte — even one that
//! still parses, like a letter in the description — fails the check, so verification detects it.
//! The same sealing is used for the (rebuildable) catalog index.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::SnapshotError;
use super::id::SnapshotId;
use crate::domain::fingerprint::Fingerprints;
use crate::storage::inspect::SchemaInventory;

/// Version of the manifest format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Size of DuckDB's header area (three 4 KiB headers): the first stored block.
pub const HEADER_LEN: usize = 12_288;
/// Size of a DuckDB storage block; blocks start at [`HEADER_LEN`].
pub const BLOCK_LEN: usize = 262_144;

const SEAL_KEY: &[u8] = b",\"manifest_blake3\":\"";
const SEAL_END: &[u8] = b"\"}\n";

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Before deleting an entity (and its cascade).
    Delete,
    /// Before deleting a single link row.
    DeleteLink,
    /// Asked for explicitly.
    #[default]
    Manual,
    /// Safety snapshot taken by a restore before it replaces the live file.
    PreRestore,
    /// The staged database of an import: restoring it is what the import did.
    Import,
}

impl Operation {
    /// Every operation, for parsing and for documentation.
    pub const ALL: [Operation; 5] = [
        Operation::Delete,
        Operation::DeleteLink,
        Operation::Manual,
        Operation::PreRestore,
        Operation::Import,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Delete => "delete",
            Operation::DeleteLink => "delete_link",
            Operation::Manual => "manual",
            Operation::PreRestore => "pre_restore",
            Operation::Import => "import",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Operation> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a snapshot was taken and of what: set by whoever takes it, and the same in the
/// manifest, the catalog entry and every listing (one struct, flattened into each, so the
/// manifest's JSON keeps its shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub description: String,
    pub operation: Operation,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub request_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Sequence number of the newest event committed before the capture.
    pub event_head_seq: u64,
    pub duckdb_library_version: String,
}

/// What the caller knows about a snapshot it is committing.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub meta: SnapshotMeta,
    /// Per-table fingerprints of the captured state (kept current by the writer).
    pub fingerprints: Fingerprints,
    pub schema: SchemaInventory,
}

/// One stored block of the file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// BLAKE3 of the uncompressed bytes (the content address).
    #[serde(with = "hex_hash")]
    pub hash: blake3::Hash,
    /// Uncompressed length.
    pub len: u64,
    /// Compressed length on disk when the snapshot was taken.
    pub stored_len: u64,
}

/// A snapshot's self-description. A snapshot exists exactly when its manifest file does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub id: SnapshotId,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub meta: SnapshotMeta,
    /// Storage version from the DuckDB main header of the captured file.
    pub storage_version: u64,
    pub file_len: u64,
    /// BLAKE3 of the whole file (what `b3sum` prints for an assembled copy).
    #[serde(with = "hex_hash")]
    pub file_blake3: blake3::Hash,
    pub blocks: Vec<BlockRef>,
    pub fingerprints: Fingerprints,
    pub schema: SchemaInventory,
}

impl Manifest {
    /// Encodes the manifest, sealed with its checksum.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        seal(self)
    }

    /// Decodes and checks a manifest file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, SnapshotError> {
        let m: Manifest = unseal(bytes, "manifest")?;
        if m.format_version > FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormat {
                found: m.format_version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(m)
    }

    /// Best effort for a manifest whose seal is broken: its block list, so garbage collection
    /// does not delete data that a damaged manifest might still be repaired to point at.
    pub fn salvage_blocks(bytes: &[u8]) -> Vec<blake3::Hash> {
        #[derive(Deserialize)]
        struct Blocks {
            blocks: Vec<BlockRef>,
        }
        let body = match find_seal(bytes) {
            Some((prefix, _)) => [prefix, &b"}"[..]].concat(),
            None => bytes.to_vec(),
        };
        serde_json::from_slice::<Blocks>(&body)
            .map(|b| b.blocks.into_iter().map(|r| r.hash).collect())
            .unwrap_or_default()
    }

    /// Checks that the block list describes a file of `file_len` bytes cut at DuckDB's block
    /// boundaries; `Err` names the first problem.
    pub fn check_layout(&self) -> Result<(), String> {
        let expected = block_ranges(self.file_len as usize);
        if expected.len() != self.blocks.len() {
            return Err(format!(
                "{} blocks for {} bytes, expected {}",
                self.blocks.len(),
                self.file_len,
                expected.len()
            ));
        }
        match expected
            .iter()
            .zip(&self.blocks)
            .position(|(r, b)| (r.end - r.start) as u64 != b.len)
        {
            Some(i) => Err(format!("block {i} has length {}", self.blocks[i].len)),
            None => Ok(()),
        }
    }
}

/// The byte ranges of a file of `len` bytes: the header area, then 256 KiB blocks (the last
/// one may be short).
pub fn block_ranges(len: usize) -> Vec<std::ops::Range<usize>> {
    (0..).map_while(|i| block_range(len, i)).collect()
}

/// Block `i` of [`block_ranges`]`(len)`, found without cutting the whole file (None past the end).
pub fn block_range(len: usize, i: usize) -> Option<std::ops::Range<usize>> {
    let first = len.min(HEADER_LEN);
    if i == 0 {
        return Some(0..first);
    }
    let start = first + (i - 1) * BLOCK_LEN;
    (start < len).then(|| start..(start + BLOCK_LEN).min(len))
}

/// The main header's version field when the real version lives in the database headers
/// (DuckDB ≥ 2.0 writes this; `StorageVersion::DEPRECATED`).
const DEPRECATED_MAIN_VERSION: u64 = 999;
/// Offsets of DuckDB's two alternating database headers.
const DATABASE_HEADERS: [usize; 2] = [4096, 8192];

/// Reads the DuckDB storage version of a file from its header area, the way DuckDB does: the
/// main header (8-byte checksum, magic `DUCK`, version u64 LE) holds it for files before 2.0;
/// from 2.0 on the main header says 999 ("deprecated") and the version is the
/// `storage_compatibility` field of the active database header (the one with the higher
/// `iteration`).
pub fn parse_storage_version(file_start: &[u8]) -> Result<u64, SnapshotError> {
    match file_start.get(8..12) {
        Some(b"DUCK") => {}
        Some(_) => return Err(SnapshotError::NotADatabase("no DUCK magic".into())),
        None => return Err(too_short(file_start)),
    }
    let main = read_u64(file_start, 12).ok_or_else(|| too_short(file_start))?;
    if main != DEPRECATED_MAIN_VERSION {
        return Ok(main);
    }
    // Database header: checksum, iteration, meta_block, free_list, block_count,
    // block_alloc_size, vector_size, storage_compatibility (u64 LE each).
    DATABASE_HEADERS
        .iter()
        .filter_map(|&h| Some((read_u64(file_start, h + 8)?, read_u64(file_start, h + 56)?)))
        .max_by_key(|(iteration, _)| *iteration)
        .map(|(_, version)| version)
        .ok_or_else(|| too_short(file_start))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let mut le = [0u8; 8];
    le.copy_from_slice(bytes.get(at..at + 8)?);
    Some(u64::from_le_bytes(le))
}

fn too_short(file_start: &[u8]) -> SnapshotError {
    SnapshotError::NotADatabase(format!(
        "{} bytes is too short for a DuckDB header",
        file_start.len()
    ))
}

/// Serialises `value` as compact JSON with a trailing `manifest_blake3` member.
pub(crate) fn seal<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    let mut body = serde_json::to_vec(value)
        .map_err(|e| SnapshotError::corrupt("manifest encoding", e.to_string()))?;
    if body.last() != Some(&b'}') || body.len() < 2 {
        return Err(SnapshotError::corrupt("manifest encoding", "not an object"));
    }
    let hash = blake3::hash(&body);
    body.pop();
    body.extend_from_slice(SEAL_KEY);
    body.extend_from_slice(hash.to_hex().as_bytes());
    body.extend_from_slice(SEAL_END);
    Ok(body)
}

/// Checks the seal and deserialises the body.
pub(crate) fn unseal<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, SnapshotError> {
    let (prefix, hex) =
        find_seal(bytes).ok_or_else(|| SnapshotError::corrupt(what, "checksum missing"))?;
    let body = [prefix, &b"}"[..]].concat();
    let expected = blake3::Hash::from_hex(hex)
        .map_err(|_| SnapshotError::corrupt(what, "checksum is not hex"))?;
    let actual = blake3::hash(&body);
    if actual != expected {
        return Err(SnapshotError::corrupt(
            what,
            format!("checksum mismatch: expected {expected}, actual {actual}"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| SnapshotError::corrupt(what, e.to_string()))
}

/// Splits a sealed file into (JSON body without its closing brace, checksum hex).
fn find_seal(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = bytes.strip_suffix(SEAL_END)?;
    let hex_start = rest.len().checked_sub(64)?;
    let (before, hex) = rest.split_at(hex_start);
    let prefix = before.strip_suffix(SEAL_KEY)?;
    Some((prefix, hex))
}

/// Serde for a BLAKE3 hash as lowercase hex.
pub(crate) mod hex_hash {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &blake3::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(h.to_hex().as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<blake3::Hash, D::Error> {
        let s = String::deserialize(d)?;
        blake3::Hash::from_hex(s).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_is_the_same_range_as_in_the_whole_cut() {
        for len in [
            0,
            1,
            HEADER_LEN - 1,
            HEADER_LEN,
            HEADER_LEN + 1,
            HEADER_LEN + BLOCK_LEN,
            HEADER_LEN + 3 * BLOCK_LEN - 7,
        ] {
            let all = block_ranges(len);
            for (i, r) in all.iter().enumerate() {
                assert_eq!(block_range(len, i).as_ref(), Some(r), "len {len} block {i}");
            }
            assert_eq!(block_range(len, all.len()), None, "len {len} past the end");
        }
        assert_eq!(block_ranges(HEADER_LEN + BLOCK_LEN + 1).len(), 3);
    }

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            id: SnapshotId::generate(Utc::now(), None),
            created_at: Utc::now(),
            meta: SnapshotMeta {
                description: "delete measure 7".into(),
                operation: Operation::Delete,
                entity_type: Some("measure".into()),
                entity_id: Some("7".into()),
                request_id: Some("req-1".into()),
                labels: BTreeMap::from([("who".into(), "test \"quoted\" \\ text".into())]),
                event_head_seq: 42,
                duckdb_library_version: "v2.0.0".into(),
            },
            storage_version: 69,
            file_len: HEADER_LEN as u64 + 10,
            file_blake3: blake3::hash(b"x"),
            blocks: vec![
                BlockRef {
                    hash: blake3::hash(b"a"),
                    len: HEADER_LEN as u64,
                    stored_len: 100,
                },
                BlockRef {
                    hash: blake3::hash(b"b"),
                    len: 10,
                    stored_len: 19,
                },
            ],
            fingerprints: Default::default(),
            schema: Default::default(),
        }
    }

    /// Manifests written before the metadata became one struct (its fields inline) decode, and
    /// encode to the same bytes: the struct is flattened into the same JSON.
    #[test]
    fn manifests_of_the_inline_shape_decode_unchanged() {
        #[derive(Serialize)]
        struct Inline<'a> {
            format_version: u32,
            id: &'a SnapshotId,
            created_at: DateTime<Utc>,
            description: &'a str,
            operation: Operation,
            entity_type: &'a Option<String>,
            entity_id: &'a Option<String>,
            request_id: &'a Option<String>,
            labels: &'a BTreeMap<String, String>,
            event_head_seq: u64,
            duckdb_library_version: &'a str,
            storage_version: u64,
            file_len: u64,
            #[serde(with = "hex_hash")]
            file_blake3: blake3::Hash,
            blocks: &'a [BlockRef],
            fingerprints: &'a Fingerprints,
            schema: &'a SchemaInventory,
        }
        let m = sample();
        let old = seal(&Inline {
            format_version: m.format_version,
            id: &m.id,
            created_at: m.created_at,
            description: &m.meta.description,
            operation: m.meta.operation,
            entity_type: &m.meta.entity_type,
            entity_id: &m.meta.entity_id,
            request_id: &m.meta.request_id,
            labels: &m.meta.labels,
            event_head_seq: m.meta.event_head_seq,
            duckdb_library_version: &m.meta.duckdb_library_version,
            storage_version: m.storage_version,
            file_len: m.file_len,
            file_blake3: m.file_blake3,
            blocks: &m.blocks,
            fingerprints: &m.fingerprints,
            schema: &m.schema,
        })
        .unwrap();
        assert_eq!(Manifest::decode(&old).unwrap(), m);
        assert_eq!(m.encode().unwrap(), old);
    }

    #[test]
    fn round_trips_and_detects_every_flip_and_truncation() {
        let m = sample();
        let bytes = m.encode().expect("encode");
        assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i}");
            assert!(Manifest::decode(&bytes[..i]).is_err(), "truncate at {i}");
        }
        assert_eq!(Manifest::salvage_blocks(&bytes).len(), 2);
    }

    #[test]
    fn operations_use_snake_case() {
        for op in Operation::ALL {
            let json = serde_json::to_string(&op).expect("json");
            assert_eq!(json, format!("\"{}\"", op.as_str()));
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operation::PreRestore.as_str(), "pre_restore");
    }

    #[test]
    fn block_ranges_follow_duckdb_layout() {
        assert_eq!(block_ranges(0), vec![0..0]);
        assert_eq!(block_ranges(100), vec![0..100]);
        let len = HEADER_LEN + 2 * BLOCK_LEN + 5;
        let r = block_ranges(len);
        assert_eq!(r.len(), 4);
        assert_eq!(r[1], HEADER_LEN..HEADER_LEN + BLOCK_LEN);
        assert_eq!(r[3].end, len);
    }

    #[test]
    fn storage_version_needs_the_magic() {
        let mut h = vec![0u8; 64];
        h[8..12].copy_from_slice(b"DUCK");
        h[12..20].copy_from_slice(&64u64.to_le_bytes());
        assert_eq!(parse_storage_version(&h).ok(), Some(64));
        h[8] = b'X';
        assert!(parse_storage_version(&h).is_err());
        assert!(parse_storage_version(&h[..10]).is_err());
    }

    #[test]
    fn storage_version_of_2_0_files_comes_from_the_active_database_header() {
        let mut h = vec![0u8; HEADER_LEN];
        h[8..12].copy_from_slice(b"DUCK");
        h[12..20].copy_from_slice(&999u64.to_le_bytes());
        let db_header = |h: &mut Vec<u8>, at: usize, iteration: u64, version: u64| {
            h[at + 8..at + 16].copy_from_slice(&iteration.to_le_bytes());
            h[at + 56..at + 64].copy_from_slice(&version.to_le_bytes());
        };
        db_header(&mut h, 4096, 7, 69);
        db_header(&mut h, 8192, 6, 68);
        assert_eq!(parse_storage_version(&h).ok(), Some(69));
        db_header(&mut h, 8192, 8, 70);
        assert_eq!(parse_storage_version(&h).ok(), Some(70));
        assert!(
            parse_storage_version(&h[..5000]).is_ok(),
            "one header is enough"
        );
        assert!(parse_storage_version(&h[..100]).is_err());
    }
}
