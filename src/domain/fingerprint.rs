//! Logical content fingerprints: per table, the row count and the sum of DuckDB's `hash(row)`.
//!
//! The sum is additive, so the writer keeps fingerprints current by adding the hashes of rows
//! it inserts and subtracting those it deletes, inside the same transaction. A snapshot therefore
//! records its fingerprints without a full scan, and a deep verify that scans the file compares
//! against them: any drift (a bug, a bad block) shows up as a failed check.

use std::collections::BTreeMap;
use std::ops::{AddAssign, SubAssign};

use serde::{Deserialize, Serialize};

/// Row count and hash sum of one table (or of a set of rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub rows: i64,
    /// Sum of `hash(row)` (UBIGINT) as DuckDB's HUGEINT; a string in JSON so no client loses
    /// precision.
    #[serde(with = "i128_as_string")]
    pub hash_sum: i128,
}

impl AddAssign for Fingerprint {
    fn add_assign(&mut self, o: Self) {
        self.rows += o.rows;
        self.hash_sum = self.hash_sum.wrapping_add(o.hash_sum);
    }
}

impl SubAssign for Fingerprint {
    fn sub_assign(&mut self, o: Self) {
        self.rows -= o.rows;
        self.hash_sum = self.hash_sum.wrapping_sub(o.hash_sum);
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows, hash {}", self.rows, self.hash_sum)
    }
}

/// Fingerprints of every user table, by table name.
pub type Fingerprints = BTreeMap<String, Fingerprint>;

mod i128_as_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}
