//! What a list request asks for, once validated: search, order, page size and the keyset
//! position after the previous page. Pure descriptions: the service layer builds them from a
//! request (and a page token), storage runs them, the app passes them through. A page also
//! carries a memo of its encoding ([`Rendered`]) for the layer that sends it.

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Key, LinkKind, Record};

/// A list of entities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub search: Option<String>,
    /// (column, descending). The key is appended as the final tie-breaker.
    pub order_by: Vec<(&'static str, bool)>,
    pub page_size: usize,
    /// Keyset cursor: sort values of the last row of the previous page.
    pub after: Option<Cursor>,
}

/// Position after the last row of a page: its sort values (text, NULL as "") and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub sort: Vec<String>,
    pub key: Key,
}

/// One page of entities.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Record>,
    pub total: i64,
    pub next: Option<Cursor>,
    /// The page as last encoded for a client (empty when fresh from storage).
    pub rendered: Rendered,
}

impl Page {
    /// A page fresh from storage.
    pub fn new(records: Vec<Record>, total: i64, next: Option<Cursor>) -> Self {
        Self {
            records,
            total,
            next,
            rendered: Rendered::default(),
        }
    }
}

/// A memo of a page's encoding, kept with the (immutable, possibly cached) page so a page
/// served many times is encoded once. The layer that encodes owns what the bytes mean; `tag`
/// names what they were made for (whatever else went into them besides the page), and a
/// lookup under another tag misses. A clone starts empty: it is a different page value.
#[derive(Default)]
pub struct Rendered(Mutex<Option<(String, Bytes)>>);

impl Rendered {
    /// The bytes encoded under `tag`, if these are the ones kept.
    pub fn get(&self, tag: &str) -> Option<Bytes> {
        match &*self.0.lock() {
            Some((t, bytes)) if t == tag => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes` as the encoding under `tag` (replacing any other).
    pub fn set(&self, tag: &str, bytes: Bytes) {
        *self.0.lock() = Some((tag.to_string(), bytes));
    }
}

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.lock().as_ref().map(|(_, b)| b.len());
        f.debug_tuple("Rendered").field(&len).finish()
    }
}

/// Filters and page position for listing links.
#[derive(Debug, Clone)]
pub struct LinkQuery {
    pub kind: LinkKind,
    /// (column, value) equality filters; columns must belong to the kind.
    pub filters: Vec<(&'static str, Key)>,
    pub page_size: usize,
    /// Key of the last link of the previous page.
    pub after: Option<Vec<Key>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendering_is_found_only_under_its_tag_and_not_in_a_clone() {
        let page = Page::new(Vec::new(), 0, None);
        assert_eq!(page.rendered.get("q1"), None, "fresh from storage");
        page.rendered.set("q1", Bytes::from_static(b"one"));
        assert_eq!(page.rendered.get("q1"), Some(Bytes::from_static(b"one")));
        assert_eq!(page.rendered.get("q2"), None);
        assert_eq!(page.clone().rendered.get("q1"), None);
        page.rendered.set("q2", Bytes::from_static(b"two"));
        assert_eq!(page.rendered.get("q1"), None, "one rendering is kept");
    }
}
