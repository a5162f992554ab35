//! `lnrs watch`: tails the event log (EventService.WatchEvents) and survives disconnects and
//! server restarts by itself: it remembers the last seq it printed (advanced by CaughtUp and by
//! the shutdown signal — UNAVAILABLE with ErrorInfo metadata `last_seq`) and resumes after it
//! with backoff, so the printed seqs have no gap and no repeat.

use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tonic::{Code, Status};

use super::client::{describe_status, error_meta, ClientArgs, Ctx, Failure};
use super::enums::proto_value_enum;
use super::json::{enum_json, short_enum, ToJson};
use super::output::{self, duration};
use crate::pb;
use crate::pb::watch_events_response::Item;

/// Flags of `lnrs watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    /// First seq to print, inclusive (0 or 1: the whole retained log) [default: only new events].
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Only events of this kind (repeatable).
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<KindArg>,
    /// Only events of this entity, link or event type, e.g. measure, measure_area_priority,
    /// snapshot (repeatable).
    #[arg(long = "entity", value_name = "TYPE")]
    pub entity_types: Vec<String>,
    /// Exit after printing this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Give up after this many failed reconnects in a row [default: never].
    #[arg(long)]
    pub max_retries: Option<u32>,
}

proto_value_enum!(
    /// An event kind (filter): the proto's EventKind without its prefix, e.g. `link-created`.
    KindArg(pb::EventKind),
    "EVENT_KIND_"
);

/// First and largest pause between reconnects.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where a subscription stands across reconnects.
struct Cursor {
    /// Everything up to this seq that matches the filter has been printed (None: live only and
    /// not connected yet, so there is no position to resume from).
    resume: Option<u64>,
    printed: u64,
    /// Failed connects in a row.
    attempt: u32,
    announced: bool,
}

enum Stop {
    /// --limit reached.
    Limit,
    /// The server closed the stream without an error.
    Ended,
}

/// Codes after which reconnecting cannot help: the request itself is wrong or the position is
/// gone. Everything else (UNAVAILABLE, transport resets, RESOURCE_EXHAUSTED…) is retried.
fn retryable(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::AlreadyExists
            | Code::FailedPrecondition
    )
}

fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let base = exp.min(BACKOFF_MAX);
    // Jitter keeps many watchers from reconnecting in lockstep after a restart.
    base + base.mul_f64(rand::random_range(0.0..0.2))
}

/// Runs `lnrs watch` until --limit, a permanent error, or --max-retries.
pub(crate) async fn run(ctx: &Ctx, w: WatchCommand) -> Result<(), Failure> {
    let mut cur = Cursor {
        // --from is inclusive; the RPC's start is exclusive.
        resume: w.from.map(|f| f.saturating_sub(1)),
        printed: 0,
        attempt: 0,
        announced: false,
    };
    if w.limit == Some(0) {
        return Ok(());
    }
    loop {
        let why = match follow(ctx, &w, &mut cur).await {
            Ok(Stop::Limit) => return Ok(()),
            Ok(Stop::Ended) => "the server ended the stream".to_string(),
            Err(Failure::Rpc(s)) if retryable(&s) => {
                // The shutdown signal names the last seq the server sent on this stream.
                if let Some(last) = error_meta(&s, "last_seq").and_then(|v| v.parse::<u64>().ok()) {
                    cur.resume = Some(cur.resume.map_or(last, |r| r.max(last)));
                }
                describe_status(&s).replace('\n', "; ")
            }
            Err(f) => return Err(f),
        };
        cur.attempt += 1;
        if let Some(max) = w.max_retries {
            if cur.attempt > max {
                return Err(Failure::Unavailable(format!(
                    "gave up after {max} reconnect attempt(s): {why}"
                )));
            }
        }
        let delay = backoff(cur.attempt);
        let from = cur
            .resume
            .map_or("for new events".to_string(), |r| format!("after seq {r}"));
        eprintln!("watch: {why}; resuming {from} in {}", duration(delay));
        tokio::time::sleep(delay).await;
    }
}

/// One subscription, until it ends or fails.
async fn follow(ctx: &Ctx, w: &WatchCommand, cur: &mut Cursor) -> Result<Stop, Failure> {
    let req = pb::WatchEventsRequest {
        start_after_seq: cur.resume,
        kinds: w.kinds.iter().map(|k| k.0 as i32).collect(),
        entity_types: w.entity_types.clone(),
        heartbeat_interval: None,
        include_log_record: false,
        format: pb::EventFormat::Native as i32,
    };
    let mut stream = ctx
        .events()
        .watch_events(ctx.stream_req(req))
        .await?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        cur.attempt = 0;
        match msg.item {
            Some(Item::Event(e)) => {
                // The server never repeats a seq on one stream; across streams this guard makes
                // "no repeat" hold even if a resume position was conservative.
                if cur.resume.is_some_and(|r| e.seq <= r) {
                    continue;
                }
                print_event(ctx, &e)?;
                cur.resume = Some(e.seq);
                cur.printed += 1;
                if w.limit.is_some_and(|l| cur.printed >= l) {
                    return Ok(Stop::Limit);
                }
            }
            Some(Item::CaughtUp(c)) => {
                // Every matching event up to head_seq has been delivered.
                cur.resume = Some(cur.resume.map_or(c.head_seq, |r| r.max(c.head_seq)));
                if !cur.announced && !ctx.json() {
                    eprintln!(
                        "watch: caught up at seq {}; waiting for new events",
                        c.head_seq
                    );
                }
                cur.announced = true;
            }
            // Only sent to streams that ask for CloudEvents; this one asks for native events.
            Some(Item::Heartbeat(_) | Item::CloudEvent(_)) | None => {}
        }
    }
    Ok(Stop::Ended)
}

fn print_event(ctx: &Ctx, e: &pb::Event) -> Result<(), Failure> {
    if ctx.json() {
        return output::print_json_line(&e.to_json());
    }
    let time = e
        .time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or("-".to_string(), |d| {
            d.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
        });
    let kind = short_enum(&enum_json!(pb::EventKind, e.kind), "EVENT_KIND_");
    let what = format!("{} {}", e.entity_type, e.entity_id);
    // Events written before the log recorded principals have none.
    let by = match e.principal.as_str() {
        "" => String::new(),
        p => format!("by {p}"),
    };
    let rest: Vec<String> = [what.trim().to_string(), by, detail(e)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let line = format!("{:>6}  {time}  {kind:<17}  {}", e.seq, rest.join("  "));
    output::print(&format!("{}\n", line.trim_end()))
}

/// The one-line gist of an event.
pub(super) fn detail(e: &pb::Event) -> String {
    use pb::EventKind as K;
    match pb::EventKind::try_from(e.kind).unwrap_or(K::Unspecified) {
        K::EntityUpdated => {
            let fields = |r: &Option<pb::Resource>| match r.to_json() {
                Value::Object(m) => m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let (before, after) = (fields(&e.before), fields(&e.after));
            let changed: Vec<&str> = after
                .as_object()
                .map(|a| {
                    a.iter()
                        .filter(|(k, v)| before.get(k.as_str()) != Some(v))
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "changed: {}",
                if changed.is_empty() {
                    "-".into()
                } else {
                    changed.join(", ")
                }
            )
        }
        K::EntityDeleted | K::LinkDeleted => match &e.delete {
            Some(d) => {
                let rows: i64 = d.rows_removed.iter().map(|r| r.rows).sum();
                if d.snapshot_id.is_empty() {
                    format!(
                        "{rows} row(s) removed, no snapshot: {}",
                        d.snapshot_skipped_reason
                    )
                } else {
                    format!("{rows} row(s) removed, snapshot {}", d.snapshot_id)
                }
            }
            None => String::new(),
        },
        K::EntityUndeleted | K::LinkUndeleted => {
            let rows: usize = e
                .rows
                .as_ref()
                .map_or(0, |r| r.after.iter().map(|t| t.rows.len()).sum());
            format!("{rows} row(s) put back")
        }
        K::SnapshotCreated | K::SnapshotDeleted | K::SnapshotUpdated => e
            .snapshot
            .as_ref()
            .map_or(String::new(), |s| format!("{:?}", s.description)),
        K::RestorePerformed | K::Imported => e.restore.as_ref().map_or(String::new(), |r| {
            if r.rolled_back {
                format!(
                    "snapshot {} ROLLED BACK: {}",
                    r.snapshot_id, r.rollback_reason
                )
            } else {
                format!(
                    "snapshot {} restored ({} checks)",
                    r.snapshot_id, r.checks_run
                )
            }
        }),
        K::RetentionApplied => e.retention.as_ref().map_or(String::new(), |r| {
            format!("{} snapshot(s) removed", r.removed_snapshot_ids.len())
        }),
        K::StorageDegraded | K::StorageRecovered => e
            .storage
            .as_ref()
            .map_or(String::new(), |s| format!("{}: {}", s.reason, s.message)),
        K::EntityCreated | K::LinkCreated | K::Unspecified => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= BACKOFF_FIRST && backoff(1) < BACKOFF_FIRST * 2);
        assert!(backoff(3) >= BACKOFF_FIRST * 4);
        assert!(backoff(40) <= BACKOFF_MAX.mul_f64(1.2));
    }

    #[test]
    fn only_position_and_request_errors_are_final() {
        assert!(retryable(&Status::unavailable("shutting down")));
        assert!(retryable(&Status::resource_exhausted(
            "too many subscribers"
        )));
        assert!(retryable(&Status::unknown("connection reset")));
        assert!(!retryable(&Status::out_of_range("compacted")));
        assert!(!retryable(&Status::invalid_argument("bad kind")));
    }
}
