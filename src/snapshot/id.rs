//! Snapshot ids: `YYYYMMDDTHHMMSS.ffffffZ-xxxxxxxx` (UTC, microseconds, 32 random bits).
//!
//! Ids sort lexicographically in creation order, are strictly increasing within a store (the
//! store bumps the microsecond past the newest id it knows, so a burst or a clock step backwards
//! cannot reorder or collide), and the random suffix keeps them unique across processes. They
//! never contain caller text, so an id is always a safe file name; [`SnapshotId::parse`] accepts
//! only this exact shape because caller text reaches it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::SnapshotError;

const LEN: usize = 32;
/// Byte positions of the fixed separators in the id.
const SEPARATORS: [(usize, u8); 4] = [(8, b'T'), (15, b'.'), (22, b'Z'), (23, b'-')];

/// The id of a snapshot (sortable, collision-free, file-name safe).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A new id for a snapshot taken at `at`, strictly greater than `after` (the newest id the
    /// store knows) even if the clock went backwards.
    pub fn generate(at: DateTime<Utc>, after: Option<&SnapshotId>) -> Self {
        let mut micros = at.timestamp_micros();
        if let Some(prev) = after.and_then(SnapshotId::timestamp_micros) {
            micros = micros.max(prev + 1);
        }
        let time = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(at);
        let suffix: u32 = rand::random();
        SnapshotId(format!(
            "{}-{suffix:08x}",
            time.format("%Y%m%dT%H%M%S%.6fZ")
        ))
    }

    /// Parses an id; anything but the exact generated format is `InvalidId`.
    pub fn parse(s: &str) -> Result<Self, SnapshotError> {
        if is_well_formed(s.as_bytes()) && timestamp_of(s).is_some() {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(SnapshotError::InvalidId)
        }
    }

    /// The id text (also the manifest's file stem).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time encoded in the id (microsecond precision).
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        timestamp_of(&self.0)
    }

    fn timestamp_micros(&self) -> Option<i64> {
        self.timestamp().map(|t| t.timestamp_micros())
    }
}

fn is_well_formed(b: &[u8]) -> bool {
    if b.len() != LEN {
        return false;
    }
    b.iter().enumerate().all(
        |(i, &c)| match SEPARATORS.iter().find(|(pos, _)| *pos == i) {
            Some((_, sep)) => c == *sep,
            None if i > 23 => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            None => c.is_ascii_digit(),
        },
    )
}

/// Reads the timestamp of a well-formed id; `None` for impossible dates like month 13.
fn timestamp_of(s: &str) -> Option<DateTime<Utc>> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let year = i32::try_from(num(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, num(4..6)?, num(6..8)?)?;
    let time = date.and_hms_micro_opt(num(9..11)?, num(11..13)?, num(13..15)?, num(16..22)?)?;
    Some(time.and_utc())
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SnapshotId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SnapshotId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SnapshotId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SnapshotId::parse(&s).map_err(|_| serde::de::Error::custom("invalid snapshot id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_parse_and_sort_in_creation_order() {
        let now = Utc::now();
        let mut prev: Option<SnapshotId> = None;
        for _ in 0..10_000 {
            // Same instant every time: the store's monotonic bump keeps them apart.
            let id = SnapshotId::generate(now, prev.as_ref());
            assert_eq!(SnapshotId::parse(id.as_str()).ok().as_ref(), Some(&id));
            if let Some(p) = &prev {
                assert!(p < &id, "{p} < {id}");
            }
            prev = Some(id);
        }
    }

    #[test]
    fn clock_going_backwards_still_increases() {
        let now = Utc::now();
        let a = SnapshotId::generate(now, None);
        let b = SnapshotId::generate(now - chrono::Duration::hours(1), Some(&a));
        assert!(a < b);
    }

    #[test]
    fn parse_rejects_everything_but_the_generated_shape() {
        let good = "20250102T030405.123456Z-9f3a1c2b";
        assert!(SnapshotId::parse(good).is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "20250102T030405.123456Z-9f3a1c2",
            "20250102T030405.123456Z-9f3a1c2bb",
            "20250102T030405.123456Z-9F3A1C2B",
            "20250102T030405.123456Z/9f3a1c2b",
            "20251302T030405.123456Z-9f3a1c2b",
            "20250230T030405.123456Z-9f3a1c2b",
            "20250102T250405.123456Z-9f3a1c2b",
            "2025010ZT030405.123456Z-9f3a1c2b",
            "../../../../../../etc/passwd.json",
            "20250102T030405.123456Z-9f3a1c2\0",
        ] {
            assert!(
                matches!(SnapshotId::parse(bad), Err(SnapshotError::InvalidId)),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_accepts_path_characters(s in ".{0,40}") {
            if let Ok(id) = SnapshotId::parse(&s) {
                prop_assert!(!id.as_str().contains(['/', '\\', '\0']));
                prop_assert!(!id.as_str().starts_with('.'));
                prop_assert_eq!(id.as_str().len(), LEN);
            }
        }
    }
}
