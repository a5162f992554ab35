//! The one pager of the `list` commands: fetch the page a `--page-token` names, and with `--all`
//! every following page until `next_page_token` is empty; then print the rows with the total
//! and how to get the next page.

use std::future::Future;

use clap::Args;
use serde_json::{Map, Value};
use tonic::Status;

use super::json::ToJson;

/// `--page-token` and `--all`, shared by every `list` command.
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// Token from a previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Fetch every page.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

/// Rows of a List* call: one page, or every page with `--all`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// Token of the page after these rows; empty after the last page.
    pub next_page_token: String,
    /// Rows the whole listing holds.
    pub total_size: i64,
}

/// Fetches the page at `--page-token` and, with `--all`, every page after it. `fetch` makes one
/// List* call for a page token.
pub async fn pages<T, F, Fut>(args: &PageArgs, mut fetch: F) -> Result<Page<T>, Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Page<T>, Status>>,
{
    let mut out = fetch(args.page_token.clone()).await?;
    while args.all && !out.next_page_token.is_empty() {
        let next = fetch(std::mem::take(&mut out.next_page_token)).await?;
        out.rows.extend(next.rows);
        out.next_page_token = next.next_page_token;
        out.total_size = next.total_size;
    }
    Ok(out)
}

impl<T: ToJson> Page<T> {
    /// The response shape: the rows under `field`, then the token and the total.
    pub fn to_json(&self, field: &str) -> Value {
        let mut doc = Map::new();
        doc.insert(field.into(), self.rows.to_json());
        doc.insert(
            "next_page_token".into(),
            self.next_page_token.clone().into(),
        );
        doc.insert("total_size".into(), self.total_size.into());
        Value::Object(doc)
    }
}

impl<T> Page<T> {
    /// Prints "N of TOTAL <what>" to stderr, and how to get the next page if there is one.
    pub fn print_footer(&self, what: &str) {
        let (n, total) = (self.rows.len(), self.total_size);
        if self.next_page_token.is_empty() {
            eprintln!("{n} of {total} {what}");
        } else {
            eprintln!(
                "{n} of {total} {what}; next page: --page-token {} (or --all)",
                self.next_page_token
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of 0..7 in pages of 3, tokens being the next offset.
    async fn page_at(token: String) -> Result<Page<i64>, Status> {
        let start: i64 = if token.is_empty() {
            0
        } else {
            token.parse().unwrap()
        };
        let end = (start + 3).min(7);
        Ok(Page {
            rows: (start..end).collect(),
            next_page_token: if end < 7 {
                end.to_string()
            } else {
                String::new()
            },
            total_size: 7,
        })
    }

    #[tokio::test]
    async fn one_page_or_every_page_from_the_token_on() {
        let first = pages(&PageArgs::default(), page_at).await.unwrap();
        assert_eq!(
            (first.rows, first.next_page_token),
            (vec![0, 1, 2], "3".into())
        );
        let every = PageArgs {
            page_token: "3".into(),
            all: true,
        };
        let rest = pages(&every, page_at).await.unwrap();
        assert_eq!(
            rest,
            Page {
                rows: (3..7).collect(),
                next_page_token: String::new(),
                total_size: 7
            }
        );
    }
}
