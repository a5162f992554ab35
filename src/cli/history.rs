//! `lnrs undelete`, `lnrs diff` and `lnrs history`: the version-control view of the data
//! (EntityService.Undelete, SnapshotService.DiffSnapshots, EventService.GetEntityHistory), as
//! tables or `--json`.

use clap::Args;
use serde_json::{json, Value};

use super::client::{ClientArgs, Ctx, Failure};
use super::json::{enum_json, short_enum, ToJson};
use super::output::{self, Table};
use super::pager::{self, Page, PageArgs};
use crate::pb;

/// Flags of `lnrs undelete`.
#[derive(Debug, Args)]
pub struct UndeleteCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The delete to undo, by its event seq (see `lnrs history` or `lnrs watch`).
    #[arg(long, value_name = "SEQ", required_unless_present = "snapshot")]
    pub event: Option<u64>,
    /// The delete to undo, by its pre-delete snapshot id.
    #[arg(long, value_name = "ID", conflicts_with = "event")]
    pub snapshot: Option<String>,
    /// Show the rows it would put back and any conflicts; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Flags of `lnrs diff`.
#[derive(Debug, Args)]
pub struct DiffCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// From: a snapshot id, `seq:N` (the state right after event N) or `live`.
    pub from: String,
    /// To: a snapshot id, `seq:N` or `live` [default: live].
    #[arg(default_value = "live")]
    pub to: String,
    /// Only this table.
    #[arg(long, default_value = "")]
    pub table: String,
    /// Only the per-table counts, no rows.
    #[arg(long)]
    pub summary: bool,
    /// Rows per page [server default: 100; at most 1000].
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[command(flatten)]
    pub pages: PageArgs,
}

/// Flags of `lnrs history`.
#[derive(Debug, Args)]
pub struct HistoryCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The entity type: measure, area, priority, species, habitat or grant.
    pub entity_type: String,
    /// The entity's id.
    pub entity_id: String,
    /// Events per page [server default: 50; at most 500].
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[command(flatten)]
    pub pages: PageArgs,
}

/// `snapshot id` | `seq:N` | `live` as a StateRef.
fn state_ref(s: &str) -> Result<pb::StateRef, Failure> {
    use pb::state_ref::State;
    let state =
        match s {
            "live" => State::Live(true),
            _ => match s.strip_prefix("seq:") {
                Some(n) => State::EventSeq(n.parse().map_err(|_| {
                    Failure::usage(format!("`{s}`: seq:N needs a positive integer N"))
                })?),
                None if s.is_empty() => return Err(Failure::usage("an empty state")),
                None => State::SnapshotId(s.to_string()),
            },
        };
    Ok(pb::StateRef { state: Some(state) })
}

pub async fn undelete(ctx: &Ctx, c: UndeleteCommand) -> Result<(), Failure> {
    use pb::undelete_request::Delete;
    let delete = match (c.event, c.snapshot) {
        (Some(seq), _) => Delete::EventSeq(seq),
        (None, Some(id)) => Delete::SnapshotId(id),
        (None, None) => {
            return Err(Failure::usage(
                "name the delete: --event SEQ or --snapshot ID",
            ))
        }
    };
    let out = ctx
        .entity()
        .undelete(ctx.req(pb::UndeleteRequest {
            delete: Some(delete),
            dry_run: c.dry_run,
            request_id: ctx.request_id(),
        }))
        .await?
        .into_inner();
    if ctx.json() {
        return output::print_json(&out.to_json());
    }
    let mut t = Table::new(&["table", "rows"]).wide(0);
    for r in &out.rows_restored {
        t.row(vec![r.table.clone(), r.rows.to_string()]);
    }
    let mut text = t.render();
    text.push_str(&if c.dry_run {
        format!(
            "dry run: would put back the rows of the delete at seq {} (from its {})\n",
            out.delete_event_seq, out.source
        )
    } else {
        format!(
            "put back the rows of the delete at seq {} (from its {}); event {}{}\n",
            out.delete_event_seq,
            out.source,
            out.event_seq,
            if out.replayed { ", replayed" } else { "" }
        )
    });
    for k in &out.conflicts {
        text.push_str(&format!(
            "conflict {} {} {}: {}\n",
            k.kind, k.table, k.key, k.description
        ));
    }
    output::print(&text)
}

pub async fn diff(ctx: &Ctx, c: DiffCommand) -> Result<(), Failure> {
    let (from, to) = (state_ref(&c.from)?, state_ref(&c.to)?);
    let page_size = if c.summary { 1 } else { c.page_size };
    // Every page repeats the per-table counts; the rows accumulate.
    let tables = std::cell::RefCell::new(Vec::new());
    let page = pager::pages(&c.pages, |token| {
        let mut client = ctx.snapshots();
        let req = ctx.req(pb::DiffSnapshotsRequest {
            from: Some(from.clone()),
            to: Some(to.clone()),
            table: c.table.clone(),
            page_size,
            page_token: token,
        });
        let tables = &tables;
        async move {
            let r = client.diff_snapshots(req).await?.into_inner();
            let total = r
                .tables
                .iter()
                .map(|t| t.added + t.removed + t.changed)
                .sum();
            *tables.borrow_mut() = r.tables;
            Ok(Page {
                rows: r.rows,
                next_page_token: r.next_page_token,
                total_size: total,
            })
        }
    })
    .await?;
    let tables = tables.into_inner();
    let rows: &[pb::RowDiff] = if c.summary { &[] } else { &page.rows };
    if ctx.json() {
        return output::print_json(&json!({
            "tables": tables.to_json(),
            "rows": rows.iter().map(ToJson::to_json).collect::<Vec<_>>(),
            "next_page_token": if c.summary { String::new() } else { page.next_page_token.clone() },
        }));
    }
    let mut t = Table::new(&["table", "added", "removed", "changed"]).wide(0);
    let differing = tables
        .iter()
        .filter(|d| d.added + d.removed + d.changed > 0);
    for d in differing {
        t.row(vec![
            d.table.clone(),
            d.added.to_string(),
            d.removed.to_string(),
            d.changed.to_string(),
        ]);
    }
    let mut text = if t.is_empty() {
        "no differences\n".to_string()
    } else {
        t.render()
    };
    for r in rows {
        text.push_str(&row_diff_line(&tables, r));
    }
    output::print(&text)?;
    if !c.summary {
        page.print_footer("differing rows");
    }
    Ok(())
}

/// `+ table {col: v, …}`, `- table {…}` or `~ table {…} → {…}` (only changed columns after).
fn row_diff_line(tables: &[pb::TableDiff], r: &pb::RowDiff) -> String {
    let cols = tables
        .iter()
        .find(|t| t.table == r.table)
        .map_or(&[][..], |t| &t.columns[..]);
    let named = |row: &Option<pb::Row>| -> Vec<(String, String)> {
        row.as_ref().map_or(Vec::new(), |row| {
            row.values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = cols.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
                    (name, datum_text(v))
                })
                .collect()
        })
    };
    let join = |v: &[(String, String)]| {
        v.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (before, after) = (named(&r.before), named(&r.after));
    match pb::RowChangeKind::try_from(r.kind) {
        Ok(pb::RowChangeKind::Added) => format!("+ {} {{{}}}\n", r.table, join(&after)),
        Ok(pb::RowChangeKind::Removed) => format!("- {} {{{}}}\n", r.table, join(&before)),
        _ => {
            let changed: Vec<(String, String)> = after
                .iter()
                .zip(&before)
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, _)| a.clone())
                .collect();
            format!(
                "~ {} {{{}}} → {{{}}}\n",
                r.table,
                join(&before),
                join(&changed)
            )
        }
    }
}

fn datum_text(d: &pb::Datum) -> String {
    match &d.kind {
        Some(pb::datum::Kind::Integer(i)) => i.to_string(),
        Some(pb::datum::Kind::Text(s)) => format!("{s:?}"),
        Some(pb::datum::Kind::Blob(b)) => format!("<{} bytes>", b.len()),
        None => "NULL".into(),
    }
}

pub async fn history(ctx: &Ctx, c: HistoryCommand) -> Result<(), Failure> {
    let page = pager::pages(&c.pages, |token| {
        let mut client = ctx.events();
        let req = ctx.req(pb::GetEntityHistoryRequest {
            entity_type: c.entity_type.clone(),
            entity_id: c.entity_id.clone(),
            page_size: c.page_size,
            page_token: token,
        });
        async move {
            let r = client.get_entity_history(req).await?.into_inner();
            Ok(Page {
                total_size: 0, // a history has no total; the footer is not printed
                rows: r.events,
                next_page_token: r.next_page_token,
            })
        }
    })
    .await?;
    if ctx.json() {
        return output::print_json(&json!({
            "events": page.rows.to_json(),
            "next_page_token": page.next_page_token,
        }));
    }
    let mut t = Table::new(&["seq", "time", "kind", "principal", "request id", "detail"]).wide(5);
    for e in &page.rows {
        t.row(vec![
            e.seq.to_string(),
            e.time.as_ref().map_or("-".into(), super::json::timestamp),
            short_enum(&enum_json!(pb::EventKind, e.kind), "EVENT_KIND_"),
            or_dash(&e.principal),
            or_dash(&e.request_id),
            super::watch::detail(e),
        ]);
    }
    output::print(&t.render())?;
    if !page.next_page_token.is_empty() {
        eprintln!(
            "{} event(s); older: --page-token {} (or --all)",
            page.rows.len(),
            page.next_page_token
        );
    }
    Ok(())
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

impl ToJson for pb::Datum {
    fn to_json(&self) -> Value {
        match &self.kind {
            Some(pb::datum::Kind::Integer(i)) => (*i).into(),
            Some(pb::datum::Kind::Text(s)) => s.clone().into(),
            // proto3 JSON: bytes as base64.
            Some(pb::datum::Kind::Blob(b)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(b).into()
            }
            None => Value::Null,
        }
    }
}

impl ToJson for pb::Row {
    fn to_json(&self) -> Value {
        self.values.to_json()
    }
}

impl ToJson for pb::TableRows {
    fn to_json(&self) -> Value {
        json!({ "table": self.table, "columns": self.columns, "rows": self.rows.to_json() })
    }
}

impl ToJson for pb::RowImages {
    fn to_json(&self) -> Value {
        json!({ "before": self.before.to_json(), "after": self.after.to_json() })
    }
}

impl ToJson for pb::UndeleteResponse {
    fn to_json(&self) -> Value {
        json!({
            "event_seq": self.event_seq,
            "rows": self.rows.to_json(),
            "rows_restored": self.rows_restored.to_json(),
            "conflicts": self.conflicts.iter().map(|c| json!({
                "table": c.table, "key": c.key, "kind": c.kind, "description": c.description,
            })).collect::<Vec<_>>(),
            "source": self.source,
            "delete_event_seq": self.delete_event_seq,
            "replayed": self.replayed,
        })
    }
}

impl ToJson for pb::TableDiff {
    fn to_json(&self) -> Value {
        json!({
            "table": self.table, "columns": self.columns,
            "added": self.added, "removed": self.removed, "changed": self.changed,
        })
    }
}

impl ToJson for pb::RowDiff {
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("table".into(), self.table.clone().into());
        m.insert("kind".into(), enum_json!(pb::RowChangeKind, self.kind));
        if let Some(b) = &self.before {
            m.insert("before".into(), b.to_json());
        }
        if let Some(a) = &self.after {
            m.insert("after".into(), a.to_json());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::state_ref::State;

    #[test]
    fn states_are_snapshot_ids_seqs_or_live() {
        let s = |t: &str| state_ref(t).ok().and_then(|r| r.state);
        assert_eq!(s("live"), Some(State::Live(true)));
        assert_eq!(s("seq:12"), Some(State::EventSeq(12)));
        assert_eq!(s("01JABC"), Some(State::SnapshotId("01JABC".into())));
        assert_eq!(s("seq:x"), None);
        assert_eq!(s(""), None);
    }
}
