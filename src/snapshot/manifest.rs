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
    /// Taken by a schedule.
    Scheduled,
}

impl Operation {
    /// Every operation, for parsing and for documentation.
    pub const ALL: [Operation; 5] = [
        Operation::Delete,
        Operation::DeleteLink,
        Operation::Manual,
        Operation::PreRestore,
        Operation::Scheduled,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Delete => "delete",
            Operation::DeleteLink => "delete_link",
            Operation::Manual => "manual",
            Operation::PreRestore => "pre_restore",
            Operation::Scheduled => "scheduled",
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

/// What the caller knows about a snapshot it is committing.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub description: String,
    pub operation: Operation,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub request_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Sequence number of the newest event committed before the capture.
    pub event_head_seq: u64,
    pub duckdb_library_version: String,
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
    pub description: String,
    pub operation: Operation,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub request_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub event_head_seq: u64,
    pub duckdb_library_version: String,
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
    let mut ranges = Vec::with_capacity(1 + len / BLOCK_LEN);
    let first = len.min(HEADER_LEN);
    ranges.push(0..first);
    let mut start = first;
    while start < len {
        let end = (start + BLOCK_LEN).min(len);
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// Reads the storage version from DuckDB's main header (8-byte checksum, magic `DUCK`, then
/// the version as u64 LE).
pub fn parse_storage_version(file_start: &[u8]) -> Result<u64, SnapshotError> {
    let magic = file_start.get(8..12);
    let version = file_start.get(12..20);
    match (magic, version) {
        (Some(b"DUCK"), Some(v)) => {
            let mut le = [0u8; 8];
            le.copy_from_slice(v);
            Ok(u64::from_le_bytes(le))
        }
        (Some(_), Some(_)) => Err(SnapshotError::NotADatabase("no DUCK magic".into())),
        _ => Err(SnapshotError::NotADatabase(format!(
            "{} bytes is too short for a header",
            file_start.len()
        ))),
    }
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

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            id: SnapshotId::generate(Utc::now(), None),
            created_at: Utc::now(),
            description: "delete measure 7".into(),
            operation: Operation::Delete,
            entity_type: Some("measure".into()),
            entity_id: Some("7".into()),
            request_id: Some("req-1".into()),
            labels: BTreeMap::from([("who".into(), "test \"quoted\" \\ text".into())]),
            event_head_seq: 42,
            duckdb_library_version: "v2.0.0".into(),
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
        h[12..20].copy_from_slice(&69u64.to_le_bytes());
        assert_eq!(parse_storage_version(&h).ok(), Some(69));
        h[8] = b'X';
        assert!(parse_storage_version(&h).is_err());
        assert!(parse_storage_version(&h[..10]).is_err());
    }
}
