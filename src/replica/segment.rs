//! A shipped piece of the event log: events `first..=last` (dense), the primary's fingerprints
//! right after `last` when it knew them, zstd-compressed JSON lines, sealed with the BLAKE3 of
//! the compressed bytes. A segment that decodes is complete and unaltered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ReplicaError;
use crate::domain::fingerprint::Fingerprints;
use crate::events::Event;

const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"LNRSSEG1";
const TRAILER: usize = MAGIC.len() + blake3::OUT_LEN;
/// Largest decompressed segment accepted (a damaged length cannot make us allocate more).
const MAX_DECODED: usize = 1 << 30;

/// One segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub first: u64,
    pub last: u64,
    /// Per-table fingerprints of the primary's database right after `last`, when known.
    pub fingerprints: Option<Fingerprints>,
    pub written_at: DateTime<Utc>,
    pub events: Vec<Event>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    first: u64,
    last: u64,
    count: u64,
    fingerprints: Option<Fingerprints>,
    written_at: DateTime<Utc>,
}

impl Segment {
    /// A segment of `events` (dense, oldest first, at least one).
    pub fn new(events: Vec<Event>, fingerprints: Option<Fingerprints>) -> Self {
        let first = events.first().map_or(0, |e| e.seq);
        let last = events.last().map_or(0, |e| e.seq);
        Segment {
            first,
            last,
            fingerprints,
            written_at: Utc::now(),
            events,
        }
    }

    /// The sealed bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ReplicaError> {
        let header = Header {
            format: FORMAT,
            first: self.first,
            last: self.last,
            count: self.events.len() as u64,
            fingerprints: self.fingerprints.clone(),
            written_at: self.written_at,
        };
        let json = |e: serde_json::Error| ReplicaError::corrupt("segment", e.to_string());
        let mut text = serde_json::to_vec(&header).map_err(json)?;
        text.push(b'\n');
        for e in &self.events {
            serde_json::to_writer(&mut text, e).map_err(json)?;
            text.push(b'\n');
        }
        let mut out = zstd::bulk::compress(&text, 3)
            .map_err(|e| ReplicaError::corrupt("segment", e.to_string()))?;
        let seal = blake3::hash(&out);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(seal.as_bytes());
        Ok(out)
    }

    /// Decodes and checks a segment named `name`: sealed, its header matches `expected` (the
    /// range its name says), every event present, dense and in order.
    pub fn decode(bytes: &[u8], name: &str, expected: (u64, u64)) -> Result<Segment, ReplicaError> {
        let bad = |why: String| ReplicaError::corrupt(name, why);
        let split = bytes
            .len()
            .checked_sub(TRAILER)
            .ok_or_else(|| bad("too short".into()))?;
        let (body, trailer) = bytes.split_at(split);
        if &trailer[..MAGIC.len()] != MAGIC
            || blake3::hash(body).as_bytes() != &trailer[MAGIC.len()..]
        {
            return Err(bad("seal does not match (changed or truncated)".into()));
        }
        let text = zstd::bulk::decompress(body, MAX_DECODED).map_err(|e| bad(e.to_string()))?;
        let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let header: Header =
            serde_json::from_slice(lines.next().ok_or_else(|| bad("empty".into()))?)
                .map_err(|e| bad(format!("header: {e}")))?;
        if header.format > FORMAT {
            return Err(bad(format!(
                "format {} is newer than this build",
                header.format
            )));
        }
        if (header.first, header.last) != expected {
            return Err(bad(format!(
                "holds {}..={}, named {}..={}",
                header.first, header.last, expected.0, expected.1
            )));
        }
        let events = lines
            .map(|l| serde_json::from_slice::<Event>(l).map_err(|e| bad(format!("event: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dense = events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == header.first + i as u64);
        if !dense
            || events.len() as u64 != header.count
            || header.count != header.last - header.first + 1
        {
            return Err(bad("events missing or out of order".into()));
        }
        Ok(Segment {
            first: header.first,
            last: header.last,
            fingerprints: header.fingerprints,
            written_at: header.written_at,
            events,
        })
    }
}

/// The snapshot a completed restore event swapped in: replaying the log across that event
/// needs it (recovery fetches it; remote retention keeps it).
pub fn restored_snapshot(e: &Event) -> Option<&str> {
    e.body
        .kind
        .swaps_tables()
        .then_some(e.body.restore.as_ref())
        .flatten()
        .filter(|r| !r.rolled_back)
        .map(|r| r.snapshot_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::model::test_event as event;

    #[test]
    fn a_segment_round_trips_and_any_damage_is_detected() {
        let seg = Segment::new((5..=9).map(event).collect(), Some(Fingerprints::new()));
        let bytes = seg.encode().unwrap();
        let back = Segment::decode(&bytes, "s", (5, 9)).unwrap();
        assert_eq!(back.events, seg.events);
        assert_eq!(back.fingerprints, seg.fingerprints);
        assert!(
            Segment::decode(&bytes, "s", (5, 10)).is_err(),
            "named range must match"
        );
        for i in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Segment::decode(&bad, "s", (5, 9)).is_err(), "flip at {i}");
        }
        assert!(Segment::decode(&bytes[..bytes.len() - 1], "s", (5, 9)).is_err());
    }

    #[test]
    fn a_segment_with_a_hole_is_refused() {
        let mut events: Vec<Event> = (1..=4).map(event).collect();
        events.remove(2);
        let seg = Segment {
            first: 1,
            last: 4,
            fingerprints: None,
            written_at: Utc::now(),
            events,
        };
        let bytes = seg.encode().unwrap();
        assert!(Segment::decode(&bytes, "s", (1, 4)).is_err());
    }
}
