//! Object names under a replica's prefix: one place that writes and parses them.

use crate::snapshot::SnapshotId;

/// The lease object (see [`super::lease`]).
pub const LEASE: &str = "lease.json";
/// Where the rotating drill stands (see [`super::fetch::drill`]).
pub const DRILL: &str = "drill.json";
pub const BLOCKS: &str = "blocks/";
pub const MANIFESTS: &str = "manifests/";
pub const ANNOTATIONS: &str = "annotations/";
pub const LOG: &str = "log/";

/// A block file, sharded like the local store.
pub fn block(hash: &blake3::Hash) -> String {
    format!("{BLOCKS}{:02x}/{hash}.zst", hash.as_bytes()[0])
}

/// The block a listed name holds.
pub fn parse_block(name: &str) -> Option<blake3::Hash> {
    let file = name.strip_prefix(BLOCKS)?.rsplit('/').next()?;
    blake3::Hash::from_hex(file.strip_suffix(".zst")?).ok()
}

pub fn manifest(id: &SnapshotId) -> String {
    format!("{MANIFESTS}{id}.json")
}

/// The snapshot a listed manifest name is of.
pub fn parse_manifest(name: &str) -> Option<SnapshotId> {
    crate::snapshot::store::manifest_id_of_name(name.strip_prefix(MANIFESTS)?)
}

pub fn annotation(id: &SnapshotId) -> String {
    format!("{ANNOTATIONS}{id}.json")
}

pub fn parse_annotation(name: &str) -> Option<SnapshotId> {
    crate::snapshot::store::manifest_id_of_name(name.strip_prefix(ANNOTATIONS)?)
}

/// A log segment holding events `first..=last`: zero-padded, so names sort by seq.
pub fn segment(first: u64, last: u64) -> String {
    format!("{LOG}{first:020}-{last:020}.seg")
}

/// The seq range a listed segment name covers.
pub fn parse_segment(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name
        .strip_prefix(LOG)?
        .strip_suffix(".seg")?
        .split_once('-')?;
    let (first, last) = (a.parse().ok()?, b.parse().ok()?);
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let h = blake3::hash(b"x");
        assert_eq!(parse_block(&block(&h)), Some(h));
        assert_eq!(parse_segment(&segment(7, 1234)), Some((7, 1234)));
        assert_eq!(
            parse_segment("log/00000000000000000009-00000000000000000008.seg"),
            None
        );
        assert!(segment(9, 10) < segment(11, 12), "names sort by seq");
        assert_eq!(parse_block("blocks/zz/nothex.zst"), None);
    }
}
