//! The read-through cache behind GetX: single entities keyed by the read pool's data
//! generation. An entry is served only while the generation it was read under is still
//! current — no write or restore has begun since — so a cached answer is exactly the committed
//! state, never an older one (see [`crate::storage::pool`]). DuckDB spends ~0.5 ms of fixed
//! overhead per statement; a point read from here costs a hash lookup.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::domain::{EntityKind, Key, Record};

/// Entries kept at most; beyond it new reads are not cached until the next change clears it.
const CAPACITY: usize = 16_384;

/// Records of one generation.
#[derive(Default)]
pub struct RecordCache {
    inner: Mutex<Generation>,
}

#[derive(Default)]
struct Generation {
    generation: u64,
    records: HashMap<(EntityKind, Key), Record>,
}

impl RecordCache {
    /// The record, if it was read under `generation`.
    pub fn get(&self, generation: u64, kind: EntityKind, key: &Key) -> Option<Record> {
        let inner = self.inner.lock();
        if inner.generation != generation {
            return None;
        }
        inner.records.get(&(kind, key.clone())).cloned()
    }

    /// Keeps a record read under `generation`; a newer generation drops everything older, a
    /// read from an older one is ignored.
    pub fn put(&self, generation: u64, record: &Record) {
        let mut inner = self.inner.lock();
        if generation > inner.generation {
            inner.generation = generation;
            inner.records.clear();
        }
        if generation == inner.generation && inner.records.len() < CAPACITY {
            inner
                .records
                .insert((record.kind, record.key.clone()), record.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i32, name: &str) -> Record {
        Record {
            kind: EntityKind::Habitat,
            key: Key::Int(id),
            values: vec![crate::domain::Value::Text(name.into())],
            sets: None,
        }
    }

    #[test]
    fn entries_live_exactly_as_long_as_their_generation() {
        let c = RecordCache::default();
        c.put(2, &record(1, "old"));
        assert_eq!(
            c.get(2, EntityKind::Habitat, &Key::Int(1)),
            Some(record(1, "old"))
        );
        assert_eq!(c.get(2, EntityKind::Measure, &Key::Int(1)), None);
        assert_eq!(
            c.get(4, EntityKind::Habitat, &Key::Int(1)),
            None,
            "a change happened"
        );

        c.put(4, &record(1, "new"));
        c.put(2, &record(2, "read before the change"));
        assert_eq!(
            c.get(4, EntityKind::Habitat, &Key::Int(1)),
            Some(record(1, "new"))
        );
        assert_eq!(c.get(4, EntityKind::Habitat, &Key::Int(2)), None);
        assert_eq!(c.get(2, EntityKind::Habitat, &Key::Int(1)), None);
    }
}
