//! Paging for every List RPC: the page size rule, the opaque keyset page token (a cursor
//! bound to the query it came from) and `order_by` parsing. Storage decides what a cursor
//! holds; this module only carries it through the client and back, and rejects anything that
//! is not a token this server issued for the same query.
//!
//! Token format (kept stable, clients hold tokens across releases): lower-case hex of the JSON
//! `{"q": <16 hex chars of a BLAKE3 hash of the query>, "c": <cursor>}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::EntityKind;
use crate::error::Error;

/// Longest page token accepted, in characters (a cursor holds at most a few sort values).
pub const MAX_TOKEN_CHARS: usize = 8192;

/// A requested page size: 0 means `default`, larger than `max` means `max`.
pub fn page_size(requested: i32, default: usize, max: usize) -> Result<usize, Error> {
    match requested {
        n if n < 0 => Err(Error::invalid(
            "page_size",
            "INVALID_PAGE_SIZE",
            "must not be negative",
        )),
        0 => Ok(default),
        n => Ok((n as usize).min(max)),
    }
}

/// Joins the parts of a query before hashing.
const SEPARATOR: &str = "\u{1f}";

/// One list query, identified by the parts that decide its order and its rows (entity or
/// link table, search, order_by, filters). A token is only valid for the query it came from.
pub struct PageQuery {
    hash: String,
}

/// The JSON inside a token, as read back.
#[derive(Deserialize)]
struct Token<C> {
    q: String,
    c: C,
}

/// The same JSON, as written.
#[derive(Serialize)]
struct TokenOut<'a, C> {
    q: &'a str,
    c: &'a C,
}

impl PageQuery {
    pub fn new(parts: &[&str]) -> Self {
        let mut h = blake3::Hasher::new();
        if parts.iter().any(|p| p.contains(SEPARATOR)) {
            // Joined, two different queries would read the same ("a␟b", "" vs "a", "b"):
            // hash an unambiguous length-prefixed form instead, led by a byte that no joined
            // (UTF-8) text starts with.
            h.update(&[0xff]);
            for p in parts {
                h.update(&(p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
        } else {
            // The form every token has been issued with so far.
            h.update(parts.join(SEPARATOR).as_bytes());
        }
        Self {
            hash: h.finalize().to_hex()[..16].to_string(),
        }
    }

    /// What this query's tokens are bound to (the hash they carry).
    pub fn tag(&self) -> &str {
        &self.hash
    }

    /// The token that resumes this query after `cursor`.
    pub fn token<C: Serialize>(&self, cursor: &C) -> Result<String, Error> {
        let json = serde_json::to_vec(&TokenOut {
            q: &self.hash,
            c: cursor,
        })
        .map_err(|e| Error::Internal(format!("page token: {e}")))?;
        Ok(json.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The cursor a client's token carries; `None` for "" (the first page).
    pub fn cursor<C: DeserializeOwned>(&self, token: &str) -> Result<Option<C>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = hex_bytes(token).ok_or_else(bad_token)?;
        let t: Token<C> = serde_json::from_slice(&bytes).map_err(|_| bad_token())?;
        if t.q != self.hash {
            return Err(bad_token());
        }
        Ok(Some(t.c))
    }
}

/// INVALID_PAGE_TOKEN: a token this query did not issue (or whose cursor it cannot use).
pub fn bad_token() -> Error {
    Error::invalid(
        "page_token",
        "INVALID_PAGE_TOKEN",
        "is not a token from this query",
    )
}

/// Hex text as bytes; `None` unless it is an even number (at most [`MAX_TOKEN_CHARS`]) of
/// ASCII hex digits. Works on bytes, so any text — multi-byte characters included — is safe.
fn hex_bytes(token: &str) -> Option<Vec<u8>> {
    let raw = token.as_bytes();
    if !raw.len().is_multiple_of(2) || raw.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    raw.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// `order_by` ("field [asc|desc], …") as (column, descending) pairs; only the entity's
/// orderable columns are accepted. "" means the default order (by key).
pub fn parse_order_by(
    kind: EntityKind,
    order_by: &str,
) -> Result<Vec<(&'static str, bool)>, Error> {
    let def = kind.def();
    let invalid = |message: String| Error::invalid("order_by", "INVALID_ORDER_BY", message);
    let mut out = Vec::new();
    for part in order_by.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let field = words.next().unwrap_or_default();
        let desc = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(w) => return Err(invalid(format!("`{w}`: expected asc or desc"))),
        };
        if let Some(extra) = words.next() {
            return Err(invalid(format!(
                "`{extra}`: expected `,` after `{field}`'s direction"
            )));
        }
        let column = def.orderable.iter().find(|c| **c == field).ok_or_else(|| {
            invalid(format!(
                "`{field}` is not orderable; use any of: {}",
                def.orderable.join(", ")
            ))
        })?;
        out.push((*column, desc));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::query::Cursor;
    use crate::domain::Key;

    fn reason(e: Error) -> &'static str {
        match e {
            Error::InvalidArgument { reason, .. } => reason,
            other => panic!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn tokens_round_trip_entity_and_link_cursors() {
        let q = PageQuery::new(&["measure", "wood", "measure desc"]);
        let c = Cursor {
            sort: vec!["Héllo, wörld".into(), String::new()],
            key: Key::Int(42),
        };
        let t = q.token(&c).unwrap();
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(q.cursor::<Cursor>(&t).unwrap(), Some(c));

        let links = PageQuery::new(&["measure_area_priority_grant", "[]"]);
        let key = vec![
            Key::Int(1),
            Key::Int(2),
            Key::Int(3),
            Key::Text("G-1".into()),
        ];
        let t = links.token(&key).unwrap();
        assert_eq!(links.cursor::<Vec<Key>>(&t).unwrap(), Some(key));
    }

    #[test]
    fn the_token_format_is_unchanged() {
        // A token as earlier releases wrote it: hex of {"q":…,"c":…}, q = the first 16 hex
        // chars of the BLAKE3 hash of the parts joined with U+001F.
        let q = PageQuery::new(&["habitat", "fen", "habitat desc"]);
        let joined = "habitat\u{1f}fen\u{1f}habitat desc";
        assert_eq!(q.hash, blake3::hash(joined.as_bytes()).to_hex()[..16]);
        let json = format!(r#"{{"q":"{}","c":{{"sort":[],"key":7}}}}"#, q.hash);
        let old: String = json.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            q.token(&Cursor {
                sort: vec![],
                key: Key::Int(7)
            })
            .unwrap(),
            old
        );
        assert_eq!(
            q.cursor::<Cursor>(&old).unwrap().map(|c| c.key),
            Some(Key::Int(7))
        );
    }

    #[test]
    fn empty_token_is_the_first_page() {
        let q = PageQuery::new(&["area"]);
        assert_eq!(q.cursor::<Cursor>("").unwrap(), None);
    }

    #[test]
    fn a_token_of_another_query_is_rejected() {
        let a = PageQuery::new(&["measure", "wood", ""]);
        let b = PageQuery::new(&["measure", "heath", ""]);
        let t = a
            .token(&Cursor {
                sort: vec![],
                key: Key::Int(1),
            })
            .unwrap();
        assert_eq!(
            reason(b.cursor::<Cursor>(&t).unwrap_err()),
            "INVALID_PAGE_TOKEN"
        );
        // Parts that would join to the same text are still different queries.
        let c = PageQuery::new(&["measure", "wood\u{1f}", ""]);
        assert_eq!(
            reason(c.cursor::<Cursor>(&t).unwrap_err()),
            "INVALID_PAGE_TOKEN"
        );
        let d = PageQuery::new(&["measure", "wood\u{1f}measure desc", ""]);
        let e = PageQuery::new(&["measure", "wood", "measure desc"]);
        let te = e
            .token(&Cursor {
                sort: vec!["x".into()],
                key: Key::Int(1),
            })
            .unwrap();
        assert_eq!(
            reason(d.cursor::<Cursor>(&te).unwrap_err()),
            "INVALID_PAGE_TOKEN"
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_not_a_panic() {
        let q = PageQuery::new(&["measure", "", ""]);
        let good = q
            .token(&Cursor {
                sort: vec![],
                key: Key::Int(1),
            })
            .unwrap();
        let cases: Vec<String> = vec![
            "é".repeat(4),                         // multi-byte chars, even byte length
            "aé".into(),                           // a char boundary inside a hex pair
            "0".into(),                            // odd length
            good[..good.len() - 1].to_string(),    // truncated: odd
            good[..good.len() - 2].to_string(),    // truncated: not JSON
            good.to_uppercase().replace('7', "g"), // not hex
            "zz".into(),
            "+1".into(),
            "7b7d".into(),                   // "{}": JSON, not a token
            "a".repeat(MAX_TOKEN_CHARS + 2), // huge
            "\u{0}\u{0}".into(),
            "😀".into(),
        ];
        for t in cases {
            let e = q.cursor::<Cursor>(&t).unwrap_err();
            assert_eq!(reason(e), "INVALID_PAGE_TOKEN", "{t:?}");
        }
        // Upper-case hex decodes to the same bytes: accepted as before.
        assert!(q.cursor::<Cursor>(&good.to_uppercase()).unwrap().is_some());
    }

    #[test]
    fn order_by_accepts_orderable_columns_with_directions() {
        assert_eq!(
            parse_order_by(
                EntityKind::Species,
                " common_name desc ,taxa,assemblage asc"
            )
            .unwrap(),
            vec![
                ("common_name", true),
                ("taxa", false),
                ("assemblage", false)
            ]
        );
        assert_eq!(parse_order_by(EntityKind::Measure, "").unwrap(), vec![]);
        assert_eq!(parse_order_by(EntityKind::Measure, " , ,").unwrap(), vec![]);
    }

    #[test]
    fn bad_order_by_is_invalid() {
        for (kind, o) in [
            (EntityKind::Measure, "measure sideways"),
            (EntityKind::Measure, "measure asc desc"),
            (EntityKind::Measure, "concise_measure"), // a column, but not orderable
            (EntityKind::Habitat, "habitat; DROP TABLE habitat"),
            (EntityKind::Area, "área"),
            (EntityKind::Grant, "grant_name DESC"), // directions are lower case
            (EntityKind::Grant, "\u{0}"),
        ] {
            let e = parse_order_by(kind, o).unwrap_err();
            assert_eq!(reason(e), "INVALID_ORDER_BY", "{o:?}");
        }
    }

    #[test]
    fn page_sizes_default_cap_and_reject_negatives() {
        assert_eq!(page_size(0, 50, 1000).unwrap(), 50);
        assert_eq!(page_size(7, 50, 1000).unwrap(), 7);
        assert_eq!(page_size(i32::MAX, 50, 1000).unwrap(), 1000);
        assert_eq!(
            reason(page_size(-1, 50, 1000).unwrap_err()),
            "INVALID_PAGE_SIZE"
        );
        assert_eq!(
            reason(page_size(i32::MIN, 50, 1000).unwrap_err()),
            "INVALID_PAGE_SIZE"
        );
    }
}
