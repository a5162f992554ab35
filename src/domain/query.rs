//! What a list request asks for, once validated: search, order, page size and the keyset
//! position after the previous page. Pure descriptions: the service layer builds them from a
//! request (and a page token), storage runs them, the app passes them through.

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
