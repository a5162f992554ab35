//! The catalog: what snapshots exist and which blocks each references, kept in memory and
//! answered from there (list, filter, sizes, statistics, the mark phase of GC).
//!
//! It is derived entirely from the manifests. `index.json` is a sealed cache of it that saves
//! parsing every manifest at start-up; at open it is reconciled with the `manifests/` listing
//! (missing entries are parsed from their manifest, stale ones dropped), and a corrupt or
//! missing index is simply rebuilt from the manifests — never "start fresh". What users changed
//! later (annotations), verify outcomes and restore holds are not part of it: listings merge
//! them in ([`Overlay`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::annotation::Annotation;
use super::error::SnapshotError;
use super::id::SnapshotId;
use super::manifest::{seal, unseal, BlockRef, Manifest, Operation, SnapshotMeta};
use super::verify::VerifyRecord;

/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page served.
pub const MAX_PAGE_SIZE: usize = 1000;
const INDEX_FORMAT: u32 = 1;

/// The listing fields of a manifest (everything but blocks, fingerprints and schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub id: SnapshotId,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub meta: SnapshotMeta,
    pub storage_version: u64,
    pub file_len: u64,
    pub block_count: usize,
}

impl SnapshotSummary {
    /// The summary of a manifest: the one conversion.
    pub fn of(m: &Manifest) -> Self {
        Self {
            id: m.id.clone(),
            created_at: m.created_at,
            meta: m.meta.clone(),
            storage_version: m.storage_version,
            file_len: m.file_len,
            block_count: m.blocks.len(),
        }
    }
}

/// One catalog entry: the summary and the distinct blocks the snapshot references.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub summary: SnapshotSummary,
    pub blocks: Vec<BlockRef>,
}

impl Entry {
    /// The catalog entry of a manifest.
    pub fn of(m: &Manifest) -> Entry {
        let mut seen = HashSet::with_capacity(m.blocks.len());
        let blocks = m
            .blocks
            .iter()
            .filter(|b| seen.insert(b.hash))
            .copied()
            .collect();
        Entry {
            summary: SnapshotSummary::of(m),
            blocks,
        }
    }
}

/// Which snapshots to list. All set fields must match.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub operation: Option<Operation>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`.
    pub created_before: Option<DateTime<Utc>>,
    /// 0 means [`DEFAULT_PAGE_SIZE`]; capped at [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// The `next_page_token` of the previous page (the last id it returned).
    pub page_token: Option<SnapshotId>,
}

impl ListFilter {
    fn matches(&self, s: &SnapshotSummary) -> bool {
        self.operation.is_none_or(|o| o == s.meta.operation)
            && self
                .entity_type
                .as_deref()
                .is_none_or(|t| s.meta.entity_type.as_deref() == Some(t))
            && self
                .entity_id
                .as_deref()
                .is_none_or(|t| s.meta.entity_id.as_deref() == Some(t))
            && self.created_after.is_none_or(|t| s.created_at >= t)
            && self.created_before.is_none_or(|t| s.created_at < t)
    }

    fn page_size(&self) -> usize {
        match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// One listed snapshot with its sizes, as users see it.
#[derive(Debug, Clone, Serialize)]
pub struct ListItem {
    /// The manifest's summary with the user's labels and description (if changed) applied.
    pub summary: SnapshotSummary,
    /// Size of the database file the snapshot restores (`file_len`).
    pub logical_bytes: u64,
    /// Compressed bytes of the distinct blocks it references (its cost if it were alone).
    pub stored_bytes: u64,
    /// Compressed bytes of blocks no other snapshot references (what forgetting it frees).
    pub unique_stored_bytes: u64,
    /// Pinned by a user: retention keeps it, a delete needs force.
    pub pinned: bool,
    /// Held by a restore in progress: nothing removes it until the restore ends.
    pub held: bool,
    /// The outcome of the last verify of this snapshot, if any.
    pub last_verify: Option<VerifyRecord>,
}

/// A page of a listing, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    /// Pass back as `page_token` for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
    /// Number of snapshots matching the filter, over all pages.
    pub total_count: usize,
}

/// What the store knows about snapshots beyond their manifests, merged into each [`ListItem`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overlay<'a> {
    pub verified: &'a HashMap<SnapshotId, VerifyRecord>,
    pub annotations: &'a HashMap<SnapshotId, Annotation>,
    pub held: &'a HashSet<SnapshotId>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    format_version: u32,
    entries: Vec<Entry>,
}

/// The in-memory catalog.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    entries: BTreeMap<SnapshotId, Entry>,
    /// Number of snapshots referencing each block.
    uses: HashMap<blake3::Hash, u32>,
}

impl Catalog {
    /// Adds a snapshot (idempotent) and counts its block references.
    pub fn insert(&mut self, entry: Entry) {
        let id = entry.summary.id.clone();
        if self.entries.contains_key(&id) {
            return;
        }
        for b in &entry.blocks {
            *self.uses.entry(b.hash).or_insert(0) += 1;
        }
        self.entries.insert(id, entry);
    }

    /// Removes a snapshot and releases its block references.
    pub fn remove(&mut self, id: &SnapshotId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        for b in &entry.blocks {
            if let Some(n) = self.uses.get_mut(&b.hash) {
                *n -= 1;
                if *n == 0 {
                    self.uses.remove(&b.hash);
                }
            }
        }
        Some(entry)
    }

    /// The entry of a snapshot.
    pub fn get(&self, id: &SnapshotId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Number of snapshots.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Ids oldest first.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = &SnapshotId> {
        self.entries.keys()
    }

    /// Summaries oldest first.
    pub fn summaries(&self) -> impl DoubleEndedIterator<Item = &SnapshotSummary> {
        self.entries.values().map(|e| &e.summary)
    }

    /// The newest snapshot's id.
    pub fn newest(&self) -> Option<&SnapshotId> {
        self.entries.keys().next_back()
    }

    /// Does any snapshot reference this block?
    pub fn is_referenced(&self, hash: &blake3::Hash) -> bool {
        self.uses.contains_key(hash)
    }

    /// Sum of `file_len` over all snapshots.
    pub fn logical_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.summary.file_len).sum()
    }

    fn sizes(&self, e: &Entry) -> (u64, u64) {
        let mut total = 0;
        let mut unique = 0;
        for b in &e.blocks {
            total += b.stored_len;
            if self.uses.get(&b.hash) == Some(&1) {
                unique += b.stored_len;
            }
        }
        (total, unique)
    }

    /// The newest snapshot captured at or before event `seq` (largest event head ≤ `seq`;
    /// among equal heads, the newest id): the base a point-in-time state is rebuilt from.
    /// Snapshots `excluded` says are no base (imports, loaded ones) are skipped.
    pub fn newest_at_or_before(
        &self,
        seq: u64,
        excluded: impl Fn(&SnapshotSummary) -> bool,
    ) -> Option<&SnapshotSummary> {
        self.entries
            .values()
            .map(|e| &e.summary)
            .filter(|s| s.meta.event_head_seq <= seq && !excluded(s))
            .max_by(|a, b| (a.meta.event_head_seq, &a.id).cmp(&(b.meta.event_head_seq, &b.id)))
    }

    /// One snapshot as listed.
    pub fn item(&self, id: &SnapshotId, overlay: &Overlay<'_>) -> Option<ListItem> {
        self.entries.get(id).map(|e| self.list_item(e, overlay))
    }

    fn list_item(&self, e: &Entry, overlay: &Overlay<'_>) -> ListItem {
        let id = &e.summary.id;
        let (stored_bytes, unique_stored_bytes) = self.sizes(e);
        let annotation = overlay.annotations.get(id);
        let mut summary = e.summary.clone();
        if let Some(a) = annotation {
            a.apply(&mut summary.meta);
        }
        ListItem {
            logical_bytes: e.summary.file_len,
            stored_bytes,
            unique_stored_bytes,
            pinned: annotation.is_some_and(|a| a.pinned),
            held: overlay.held.contains(id),
            last_verify: overlay.verified.get(id).cloned(),
            summary,
        }
    }

    /// One page of the snapshots matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter, overlay: &Overlay<'_>) -> ListPage {
        let matching = self
            .entries
            .values()
            .rev()
            .filter(|e| filter.matches(&e.summary));
        let total_count = matching.clone().count();
        let size = filter.page_size();
        let mut page = matching
            .skip_while(|e| {
                filter
                    .page_token
                    .as_ref()
                    .is_some_and(|t| &e.summary.id >= t)
            })
            .take(size + 1);
        let mut items = Vec::with_capacity(size.min(total_count));
        for e in page.by_ref().take(size) {
            items.push(self.list_item(e, overlay));
        }
        let more = page.next().is_some();
        let next_page_token = match (more, items.last()) {
            (true, Some(last)) => Some(last.summary.id.to_string()),
            _ => None,
        };
        ListPage {
            items,
            next_page_token,
            total_count,
        }
    }

    /// The sealed `index.json` bytes.
    pub fn encode_index(&self) -> Result<Vec<u8>, SnapshotError> {
        seal(&IndexFileRef {
            format_version: INDEX_FORMAT,
            entries: self.entries.values().collect(),
        })
    }

    /// Entries of a sealed index; any problem is an error (the caller rebuilds).
    pub fn decode_index(bytes: &[u8]) -> Result<Vec<Entry>, SnapshotError> {
        let index: IndexFile = unseal(bytes, "index")?;
        if index.format_version != INDEX_FORMAT {
            return Err(SnapshotError::corrupt("index", "unknown format"));
        }
        Ok(index.entries)
    }
}

#[derive(Serialize)]
struct IndexFileRef<'a> {
    format_version: u32,
    entries: Vec<&'a Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::{BlockRef, FORMAT_VERSION};

    fn manifest(id: SnapshotId, op: Operation, entity: &str, blocks: &[u8]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            created_at: id.timestamp().unwrap_or_else(Utc::now),
            id,
            meta: SnapshotMeta {
                operation: op,
                entity_type: Some("measure".into()),
                entity_id: Some(entity.into()),
                ..Default::default()
            },
            storage_version: 1,
            file_len: 100,
            file_blake3: blake3::hash(b""),
            blocks: blocks
                .iter()
                .map(|b| BlockRef {
                    hash: blake3::hash(&[*b]),
                    len: 1,
                    stored_len: 10,
                })
                .collect(),
            fingerprints: Default::default(),
            schema: Default::default(),
        }
    }

    fn catalog(n: usize) -> (Catalog, Vec<SnapshotId>) {
        let mut c = Catalog::default();
        let mut ids: Vec<SnapshotId> = Vec::new();
        for i in 0..n {
            let id = SnapshotId::generate(Utc::now(), ids.last());
            let op = if i % 2 == 0 {
                Operation::Delete
            } else {
                Operation::Manual
            };
            c.insert(Entry::of(&manifest(
                id.clone(),
                op,
                &i.to_string(),
                &[0, i as u8 + 1],
            )));
            ids.push(id);
        }
        (c, ids)
    }

    #[test]
    fn pages_newest_first_with_filters_and_sizes() {
        let (c, ids) = catalog(7);
        let (verified, annotations, held) = (HashMap::new(), HashMap::new(), HashSet::new());
        let none = Overlay {
            verified: &verified,
            annotations: &annotations,
            held: &held,
        };
        let mut filter = ListFilter {
            page_size: 3,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = c.list(&filter, &none);
            assert_eq!(page.total_count, 7);
            seen.extend(page.items.iter().map(|i| i.summary.id.clone()));
            match page.next_page_token {
                Some(t) => filter.page_token = Some(SnapshotId::parse(&t).expect("token")),
                None => break,
            }
        }
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first);

        let deletes = c.list(
            &ListFilter {
                operation: Some(Operation::Delete),
                ..Default::default()
            },
            &none,
        );
        assert_eq!(deletes.total_count, 4);
        let one = c.list(
            &ListFilter {
                entity_id: Some("3".into()),
                ..Default::default()
            },
            &none,
        );
        assert_eq!(one.items.len(), 1);
        // Block 0 is shared by all, the other is unique.
        assert_eq!(one.items[0].stored_bytes, 20);
        assert_eq!(one.items[0].unique_stored_bytes, 10);
    }

    #[test]
    fn listings_show_the_users_annotation_and_both_kinds_of_pin() {
        let (c, ids) = catalog(3);
        let annotations = HashMap::from([(
            ids[1].clone(),
            Annotation {
                pinned: true,
                description: Some("before the spring import".into()),
                labels: Some(BTreeMap::from([("ticket".into(), "7".into())])),
                updated_at: Some(Utc::now()),
                loaded_at: None,
            },
        )]);
        let (verified, held) = (HashMap::new(), HashSet::from([ids[2].clone()]));
        let overlay = Overlay {
            verified: &verified,
            annotations: &annotations,
            held: &held,
        };
        let kept = c.item(&ids[1], &overlay).expect("listed");
        assert!(kept.pinned && !kept.held);
        assert_eq!(kept.summary.meta.description, "before the spring import");
        assert_eq!(kept.summary.meta.labels["ticket"], "7");
        let restoring = c.item(&ids[2], &overlay).expect("listed");
        assert!(restoring.held && !restoring.pinned);
        let page = c.list(&ListFilter::default(), &overlay);
        assert_eq!(
            page.items.iter().map(|i| i.pinned).collect::<Vec<_>>(),
            [false, true, false]
        );
        // The manifest-derived entry (what index.json caches) is untouched.
        assert_eq!(c.get(&ids[1]).unwrap().summary.meta.description, "");
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let (c, _) = catalog(3);
        let bytes = c.encode_index().expect("encode");
        assert_eq!(Catalog::decode_index(&bytes).expect("decode").len(), 3);
        let mut bad = bytes.clone();
        bad[10] ^= 4;
        assert!(Catalog::decode_index(&bad).is_err());
    }

    #[test]
    fn remove_drops_references() {
        let (mut c, ids) = catalog(2);
        let shared = blake3::hash(&[0]);
        assert!(c.is_referenced(&shared));
        c.remove(&ids[0]);
        assert!(c.is_referenced(&shared));
        c.remove(&ids[1]);
        assert!(!c.is_referenced(&shared));
        assert!(c.uses.is_empty());
    }
}
