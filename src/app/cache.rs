//! The read-through cache behind GetX and ListX: single entities and list pages keyed by the
//! read pool's data generation. An entry is served only while the generation it was read under
//! is still current — no write or restore has begun since — so a cached answer is exactly the
//! committed state, never an older one (see [`crate::storage::pool`]). DuckDB spends ~0.5 ms of
//! fixed overhead per statement, and a list page (a count, a sort, a search) several; a read
//! from here costs a hash lookup and a copy. A page is keyed by its whole query — search,
//! order, size and cursor — so its semantics are the database's.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::query::{ListQuery, Page};
use crate::domain::{EntityKind, Key, Record};

/// Entries kept at most; beyond it new reads are not cached until the next change clears it.
const CAPACITY: usize = 16_384;
/// Pages kept at most (a page holds up to 1000 records).
const PAGE_CAPACITY: usize = 1024;

/// Records of one generation.
#[derive(Default)]
pub struct RecordCache {
    inner: Mutex<Generation>,
}

#[derive(Default)]
struct Generation {
    generation: u64,
    records: HashMap<(EntityKind, Key), Arc<Record>>,
    /// Per entity kind, so a lookup borrows the query instead of cloning it.
    pages: HashMap<EntityKind, HashMap<ListQuery, Arc<Page>>>,
    page_count: usize,
}

impl Generation {
    /// Moves to `generation` if it is newer (dropping everything older); whether entries of
    /// `generation` may be kept.
    fn enter(&mut self, generation: u64) -> bool {
        if generation > self.generation {
            self.generation = generation;
            self.records.clear();
            self.pages.clear();
            self.page_count = 0;
        }
        generation == self.generation
    }
}

impl RecordCache {
    /// The record, if it was read under `generation`.
    pub fn get(&self, generation: u64, kind: EntityKind, key: &Key) -> Option<Arc<Record>> {
        let inner = self.inner.lock();
        if inner.generation != generation {
            return None;
        }
        inner.records.get(&(kind, key.clone())).cloned()
    }

    /// Keeps a record read under `generation`; a newer generation drops everything older, a
    /// read from an older one is ignored.
    pub fn put(&self, generation: u64, record: &Arc<Record>) {
        let mut inner = self.inner.lock();
        if inner.enter(generation) && inner.records.len() < CAPACITY {
            inner
                .records
                .insert((record.kind, record.key.clone()), Arc::clone(record));
        }
    }

    /// The page `q` lists, if it was read under `generation`.
    pub fn page(&self, generation: u64, kind: EntityKind, q: &ListQuery) -> Option<Arc<Page>> {
        let inner = self.inner.lock();
        if inner.generation != generation {
            return None;
        }
        inner.pages.get(&kind)?.get(q).cloned()
    }

    /// Keeps a page read under `generation` (same rules as [`put`](Self::put)).
    pub fn put_page(&self, generation: u64, kind: EntityKind, q: ListQuery, page: &Arc<Page>) {
        let mut inner = self.inner.lock();
        if inner.enter(generation) && inner.page_count < PAGE_CAPACITY {
            let kept = inner.pages.entry(kind).or_default();
            if kept.insert(q, Arc::clone(page)).is_none() {
                inner.page_count += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i32, name: &str) -> Arc<Record> {
        Arc::new(Record {
            kind: EntityKind::Habitat,
            key: Key::Int(id),
            values: vec![crate::domain::Value::Text(name.into())],
            sets: None,
        })
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

    #[test]
    fn pages_are_keyed_by_their_whole_query_and_generation() {
        let c = RecordCache::default();
        let q = |search: &str| ListQuery {
            search: Some(search.into()),
            page_size: 50,
            ..Default::default()
        };
        let page = |id: i32| Page::new(vec![Record::clone(&record(id, "x"))], 1, None);
        c.put_page(6, EntityKind::Habitat, q("a"), &Arc::new(page(1)));
        assert_eq!(
            c.page(6, EntityKind::Habitat, &q("a"))
                .map(|p| p.records.clone()),
            Some(page(1).records)
        );
        assert!(c.page(6, EntityKind::Habitat, &q("b")).is_none());
        assert!(c.page(6, EntityKind::Measure, &q("a")).is_none());
        assert!(
            c.page(8, EntityKind::Habitat, &q("a")).is_none(),
            "a change happened"
        );
        c.put(8, &record(1, "new"));
        assert!(
            c.page(8, EntityKind::Habitat, &q("a")).is_none(),
            "a newer generation drops older pages"
        );
    }
}
