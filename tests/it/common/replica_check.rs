//! What must hold of a replica at every moment, whatever holds it (an S3 bucket, a `file://`
//! directory): every manifest decodes and names only blocks that are there; every segment
//! decodes (sealed, dense, its range as named); the segments are dense — no gap, no overlap.

use lnrs::replica::layout;
use lnrs::replica::segment::Segment;
use lnrs::snapshot::Manifest;

/// The violations among `keys` (names relative to the replica's prefix), reading objects with
/// `get`, and the last seq the segments reach (0: none).
pub fn violations(keys: &[String], get: impl Fn(&str) -> Option<Vec<u8>>) -> (Vec<String>, u64) {
    let present: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut bad = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with(layout::MANIFESTS)) {
        let Some(bytes) = get(k) else { continue };
        match Manifest::decode(&bytes) {
            Err(e) => bad.push(format!("{k}: {e}")),
            Ok(m) => {
                for b in &m.blocks {
                    if !present.contains(layout::block(&b.hash).as_str()) {
                        bad.push(format!("{k} names missing block {}", b.hash));
                    }
                }
            }
        }
    }
    let mut segs: Vec<(u64, u64, &String)> = keys
        .iter()
        .filter_map(|k| layout::parse_segment(k).map(|(a, b)| (a, b, k)))
        .collect();
    segs.sort();
    for w in segs.windows(2) {
        if w[1].0 != w[0].1 + 1 {
            bad.push(format!(
                "log gap or overlap between {} and {}",
                w[0].2, w[1].2
            ));
        }
    }
    for (a, b, k) in &segs {
        if let Err(e) = Segment::decode(&get(k).unwrap_or_default(), k, (*a, *b)) {
            bad.push(e.to_string());
        }
    }
    (bad, segs.last().map_or(0, |s| s.1))
}
