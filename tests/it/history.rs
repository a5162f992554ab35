//! [history] through gRPC against a real server: Undelete puts back exactly one delete while
//! every later change survives, each conflict refuses the whole undelete with the row named,
//! a delete without row images is undone from its snapshot with the same result, and
//! DiffSnapshots / GetEntityHistory / point-in-time states agree row for row.

use std::collections::BTreeMap;

use crate::common::{all_pages, assert_refused, event_at, TestServer};
use lnrs::pb;
use pb::undelete_request::Delete;
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

fn undelete_req(delete: Delete, dry_run: bool) -> pb::UndeleteRequest {
    pb::UndeleteRequest {
        delete: Some(delete),
        dry_run,
        request_id: String::new(),
    }
}

async fn delete_measure(s: &TestServer, id: i32) -> pb::DeleteOutcome {
    s.entity()
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap()
}

async fn rename_measure(s: &TestServer, id: i32, name: &str) -> u64 {
    s.entity()
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(pb::Measure {
                measure_id: id,
                measure: name.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["measure".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .event_seq
}

async fn create_measure(s: &TestServer, name: &str) -> i32 {
    crate::common::ops::measure(&s.channel, name).await
}

fn map_link(measure: i32, area: i32, priority: i32) -> pb::Link {
    pb::Link {
        link_type: pb::LinkType::MeasureAreaPriority as i32,
        measure_id: measure,
        area_id: area,
        priority_id: priority,
        ..Default::default()
    }
}

/// A MAP link for `measure` that does not exist yet.
async fn new_link_for(s: &TestServer, measure: i32) -> pb::Link {
    for area in 1..50 {
        for priority in 1..50 {
            let r = s
                .entity()
                .create_link(pb::CreateLinkRequest {
                    link: Some(map_link(measure, area, priority)),
                    request_id: String::new(),
                })
                .await;
            match r {
                Ok(r) => return r.into_inner().link.unwrap(),
                Err(e) if e.code() == Code::AlreadyExists => continue,
                Err(e) => panic!("create link: {e:?}"),
            }
        }
    }
    panic!("no free MAP link for measure {measure}")
}

/// One side of a diff.
fn side(state: pb::state_ref::State) -> Option<pb::StateRef> {
    Some(pb::StateRef { state: Some(state) })
}

/// Every differing row between two points, all pages (small pages, so paging is exercised);
/// the per-table counts as the last page reports them.
async fn diff(
    s: &TestServer,
    from: pb::state_ref::State,
    to: pb::state_ref::State,
) -> (Vec<pb::TableDiff>, Vec<pb::RowDiff>) {
    let tables = std::cell::RefCell::new(Vec::new());
    let rows = all_pages(|token| {
        let req = pb::DiffSnapshotsRequest {
            from: side(from.clone()),
            to: side(to.clone()),
            table: String::new(),
            page_size: 7,
            page_token: token,
        };
        let (mut client, tables) = (s.snapshots(), &tables);
        async move {
            let r = client.diff_snapshots(req).await.unwrap().into_inner();
            *tables.borrow_mut() = r.tables;
            (r.rows, r.next_page_token)
        }
    })
    .await;
    (tables.into_inner(), rows)
}

fn changed_tables(tables: &[pb::TableDiff]) -> BTreeMap<String, (i64, i64, i64)> {
    assert!(
        tables.iter().all(|t| !t.columns.is_empty()),
        "every table names its columns: {tables:?}"
    );
    tables
        .iter()
        .filter(|t| t.added + t.removed + t.changed > 0)
        .map(|t| (t.table.clone(), (t.added, t.removed, t.changed)))
        .collect()
}

async fn history(s: &TestServer, entity_type: &str, entity_id: &str) -> Vec<pb::Event> {
    all_pages(|token| {
        let req = pb::GetEntityHistoryRequest {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
            page_size: 2,
            page_token: token,
        };
        let mut client = s.events();
        async move {
            let r = client.get_entity_history(req).await.unwrap().into_inner();
            (r.events, r.next_page_token)
        }
    })
    .await
}

async fn head(s: &TestServer) -> u64 {
    crate::common::ops::status(&s.channel).await.event_head_seq
}

async fn verify_deep_after_snapshot(s: &TestServer) {
    let id = crate::common::ops::snapshot(&s.channel, "check").await;
    let report = crate::common::ops::verify_deep(&s.channel, &id).await;
    assert!(report.passed, "deep verify after undelete: {report:?}");
}

fn conflict_kinds(e: &tonic::Status) -> Vec<String> {
    e.get_details_precondition_failure()
        .map(|p| p.violations.into_iter().map(|v| v.r#type).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelete_puts_back_one_delete_and_keeps_everyone_elses_later_work() {
    let s = TestServer::start().await;
    let (a, b) = (42, 43);
    let deleted = delete_measure(&s, a).await;
    let removed: BTreeMap<&str, i64> = deleted
        .rows_removed
        .iter()
        .map(|t| (t.table.as_str(), t.rows))
        .collect();
    for table in [
        "measure",
        "measure_area_priority",
        "measure_area_priority_grant",
        "measure_has_type",
        "measure_has_stakeholder",
    ] {
        assert!(removed.get(table) > Some(&0), "{table}: {removed:?}");
    }
    // Someone else's work after the delete.
    let renamed = rename_measure(&s, b, "renamed after the delete").await;
    let link = new_link_for(&s, b).await;

    let dry = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.event_seq, 0, "a dry run writes nothing");
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    let head_before = head(&s).await;
    let out = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.source, "event");
    assert_eq!(out.delete_event_seq, deleted.event_seq);
    assert_eq!(out.event_seq, head_before + 1);
    let counts = |v: &[pb::TableRowCount]| -> BTreeMap<String, i64> {
        v.iter().map(|t| (t.table.clone(), t.rows)).collect()
    };
    assert_eq!(
        counts(&out.rows_restored),
        counts(&deleted.rows_removed),
        "every row the delete removed is put back"
    );
    assert_eq!(out.rows, dry.rows, "the dry run showed exactly these rows");

    // Against the pre-delete snapshot, only the later work differs: A's rows are identical.
    let (tables, rows) = diff(
        &s,
        pb::state_ref::State::SnapshotId(deleted.snapshot_id.clone()),
        pb::state_ref::State::Live(true),
    )
    .await;
    assert_eq!(
        changed_tables(&tables),
        BTreeMap::from([
            ("measure".to_string(), (0, 0, 1)),
            ("measure_area_priority".to_string(), (1, 0, 0)),
        ]),
        "{rows:?}"
    );
    let renamed_row = rows.iter().find(|r| r.table == "measure").unwrap();
    let after = renamed_row.after.as_ref().unwrap();
    assert_eq!(
        after.values[0].kind,
        Some(pb::datum::Kind::Integer(i64::from(b)))
    );
    assert!(after
        .values
        .iter()
        .any(|v| v.kind == Some(pb::datum::Kind::Text("renamed after the delete".into()))));
    let added = rows
        .iter()
        .find(|r| r.table == "measure_area_priority")
        .unwrap();
    let ints: Vec<i64> = added.after.as_ref().unwrap().values[..3]
        .iter()
        .map(|v| match v.kind {
            Some(pb::datum::Kind::Integer(i)) => i,
            _ => -1,
        })
        .collect();
    assert_eq!(
        ints,
        vec![
            i64::from(link.measure_id),
            i64::from(link.area_id),
            i64::from(link.priority_id)
        ]
    );
    verify_deep_after_snapshot(&s).await;

    // The undelete's event says what it undid and carries the rows.
    let ev = event_at(&s.channel, out.event_seq).await;
    assert_eq!(ev.kind, pb::EventKind::EntityUndeleted as i32);
    assert_eq!(
        (ev.entity_type.as_str(), ev.entity_id.as_str()),
        ("measure", "42")
    );
    let detail = ev.undelete.unwrap();
    assert_eq!(detail.delete_event_seq, deleted.event_seq);
    assert_eq!(detail.snapshot_id, deleted.snapshot_id);
    assert_eq!(ev.rows.unwrap().after, out.rows.unwrap().after);

    // Twice is a conflict, and changes nothing.
    let head_before = head(&s).await;
    let again = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), false))
        .await
        .unwrap_err();
    assert_refused(&again, Code::FailedPrecondition, "UNDELETE_CONFLICT");
    let kinds = conflict_kinds(&again);
    assert_eq!(kinds[0], "ALREADY_UNDELETED", "{kinds:?}");
    assert!(
        kinds.len() > 1 && kinds[1..].iter().all(|k| k == "ALREADY_PRESENT"),
        "{kinds:?}"
    );
    assert_eq!(
        head(&s).await,
        head_before,
        "a refused undelete writes nothing"
    );

    // A's history: its undelete, then its delete (newest first); B's: the link, the rename.
    let a_hist = history(&s, "measure", "42").await;
    let kinds: Vec<i32> = a_hist.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[..2],
        [
            pb::EventKind::EntityUndeleted as i32,
            pb::EventKind::EntityDeleted as i32
        ]
    );
    let b_hist = history(&s, "measure", "43").await;
    let seqs: Vec<u64> = b_hist.iter().map(|e| e.seq).collect();
    let link_seq = b_hist
        .iter()
        .find(|e| e.kind == pb::EventKind::LinkCreated as i32)
        .unwrap()
        .seq;
    assert_eq!(seqs[..2], [link_seq, renamed], "newest first: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));

    // Even once the rows were changed or deleted again, that delete stays undone once.
    delete_measure(&s, a).await;
    let e = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), true))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = e.conflicts.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["ALREADY_UNDELETED"], "{e:?}");
    assert_eq!(e.conflicts[0].key, a.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conflict_refuses_the_whole_undelete_and_names_the_row() {
    let s = TestServer::start().await;

    // KEY_REUSED: a new grant took the deleted one's id (grant ids are chosen by the caller;
    // integer ids are never given twice).
    let grant = |name: &str| pb::CreateGrantRequest {
        grant: Some(pb::Grant {
            grant_id: "SPRING-2027".into(),
            grant_name: name.into(),
            grant_scheme: "Countryside Stewardship".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    s.entity().create_grant(grant("first")).await.unwrap();
    let gone = s
        .entity()
        .delete_grant(pb::DeleteGrantRequest {
            grant_id: "SPRING-2027".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    s.entity().create_grant(grant("second")).await.unwrap();
    let head_before = head(&s).await;
    let e = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(gone.event_seq), false))
        .await
        .unwrap_err();
    assert_refused(&e, Code::FailedPrecondition, "UNDELETE_CONFLICT");
    assert_eq!(conflict_kinds(&e), vec!["KEY_REUSED"]);
    let subjects: Vec<String> = e
        .get_details_precondition_failure()
        .unwrap()
        .violations
        .into_iter()
        .map(|v| v.subject)
        .collect();
    assert_eq!(subjects, vec!["grant_table/SPRING-2027".to_string()]);
    assert_eq!(head(&s).await, head_before);

    // PARENT_MISSING: a link whose measure was deleted after it.
    let link = new_link_for(&s, 44).await;
    let link_gone = s
        .entity()
        .delete_link(pb::DeleteLinkRequest {
            link: Some(link.clone()),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    let measure_gone = delete_measure(&s, 44).await;
    let head_before = head(&s).await;
    let e = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(link_gone.event_seq), false))
        .await
        .unwrap_err();
    assert_eq!(conflict_kinds(&e), vec!["PARENT_MISSING"]);
    assert_eq!(head(&s).await, head_before, "nothing was written");
    // A dry run lists the same conflict without failing.
    let dry = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(link_gone.event_seq), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.conflicts.len(), 1);
    assert_eq!(dry.conflicts[0].kind, "PARENT_MISSING");
    assert_eq!(dry.conflicts[0].table, "measure_area_priority");
    // Undo in reverse order: the measure first, then the link.
    s.entity()
        .undelete(undelete_req(
            Delete::EventSeq(measure_gone.event_seq),
            false,
        ))
        .await
        .unwrap();
    s.entity()
        .undelete(undelete_req(
            Delete::SnapshotId(link_gone.snapshot_id.clone()),
            false,
        ))
        .await
        .unwrap();
    let back = s
        .entity()
        .list_links(pb::ListLinksRequest {
            link_type: pb::LinkType::MeasureAreaPriority as i32,
            measure_id: 44,
            area_id: link.area_id,
            priority_id: link.priority_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(back.len(), 1, "the link is back");
    verify_deep_after_snapshot(&s).await;

    // Not a delete, and nothing named: INVALID_ARGUMENT; an unknown event: NOT_FOUND.
    let e = s
        .entity()
        .undelete(undelete_req(
            Delete::EventSeq(measure_gone.event_seq - 1),
            false,
        ))
        .await
        .unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "NOT_A_DELETE");
    let e = s
        .entity()
        .undelete(pb::UndeleteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(1 << 40), false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Removes the row images from every event of the log in `db` (as events written before the
/// log kept them look).
fn strip_images(db: &std::path::Path) -> usize {
    let conn = duckdb::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, payload FROM lnrs_event_log")
        .unwrap();
    let rows: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut n = 0;
    for (seq, payload) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        if v["body"]
            .as_object_mut()
            .and_then(|b| b.remove("rows"))
            .is_some()
            || v.as_object_mut().and_then(|b| b.remove("rows")).is_some()
        {
            n += 1;
            conn.execute(
                "UPDATE lnrs_event_log SET payload = ? WHERE seq = ?",
                duckdb::params![v.to_string(), seq],
            )
            .unwrap();
        }
    }
    conn.execute_batch("CHECKPOINT").unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_logged_without_row_images_is_undone_from_its_snapshot_with_the_same_rows() {
    let s = TestServer::start().await;
    let deleted = delete_measure(&s, 42).await;
    let from_images = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_images.source, "event");
    let across_delete = || {
        (
            pb::state_ref::State::SnapshotId(deleted.snapshot_id.clone()),
            pb::state_ref::State::Live(true),
        )
    };
    // Computed from the log's images (no state is read) …
    let (from, to) = across_delete();
    let from_log = diff(&s, from, to).await;
    let dir = s.stop().await.unwrap();
    let db = dir.path().join("lnrs.duckdb");
    assert!(strip_images(&db) > 0, "the log had images to strip");

    let s = TestServer::start_with(crate::common::test_config(dir.path())).await;
    // … and, the images gone, by comparing the two states: the same diff.
    let (from, to) = across_delete();
    assert_eq!(diff(&s, from, to).await, from_log);
    let dry = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.source, "snapshot");
    let out = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.source, "snapshot");
    assert_eq!(
        out.rows, from_images.rows,
        "the snapshot gives exactly the rows the images held"
    );
    let (tables, _) = diff(
        &s,
        pb::state_ref::State::SnapshotId(deleted.snapshot_id.clone()),
        pb::state_ref::State::Live(true),
    )
    .await;
    assert!(changed_tables(&tables).is_empty(), "{tables:?}");
    verify_deep_after_snapshot(&s).await;
    // A point rebuilt across image-less events is refused, never approximated.
    let e = s
        .snapshots()
        .diff_snapshots(pb::DiffSnapshotsRequest {
            from: side(pb::state_ref::State::SnapshotId(deleted.snapshot_id)),
            to: side(pb::state_ref::State::EventSeq(deleted.event_seq)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::FailedPrecondition, "STATE_NOT_REBUILDABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_states_and_history_agree_row_for_row() {
    let s = TestServer::start().await;
    let s1 = crate::common::ops::snapshot(&s.channel, "before").await;
    let renamed = rename_measure(&s, 7, "seven, renamed").await;
    rename_measure(&s, 7, "seven, renamed again").await;
    let link = new_link_for(&s, 8).await;
    let deleted = delete_measure(&s, 9).await;
    let m = create_measure(&s, "brand new").await;
    let after_changes = head(&s).await;

    use pb::state_ref::State;
    // No snapshot sits at `after_changes`: it is rebuilt from the pre-delete snapshot of
    // measure 9 and the images of the delete and the create.
    let (t_event, r_event) = diff(
        &s,
        State::SnapshotId(s1.clone()),
        State::EventSeq(after_changes),
    )
    .await;
    let (t_live, r_live) = diff(&s, State::SnapshotId(s1.clone()), State::Live(true)).await;
    assert_eq!(
        (&t_event, &r_event),
        (&t_live, &r_live),
        "a rebuilt point equals the data"
    );
    let s2 = crate::common::ops::snapshot(&s.channel, "after").await;
    let (t_snap, r_snap) = diff(
        &s,
        State::SnapshotId(s1.clone()),
        State::SnapshotId(s2.clone()),
    )
    .await;
    assert_eq!(
        (&t_snap, &r_snap),
        (&t_live, &r_live),
        "and equals its snapshot"
    );
    // From the point right before the first change (rebuilt from s1 forward), the same diff.
    let (_, r_back) = diff(
        &s,
        State::EventSeq(renamed - 1),
        State::SnapshotId(s2.clone()),
    )
    .await;
    assert_eq!(r_back, r_snap);
    // A change after s2: rebuilt from s2 and one event, the point equals the data now.
    let later = rename_measure(&s, 10, "later").await;
    let (t_later, _) = diff(&s, State::EventSeq(later), State::Live(true)).await;
    assert!(changed_tables(&t_later).is_empty(), "{t_later:?}");
    let (t_later, _) = diff(&s, State::SnapshotId(s2.clone()), State::EventSeq(later)).await;
    assert_eq!(
        changed_tables(&t_later),
        BTreeMap::from([("measure".to_string(), (0, 0, 1))])
    );

    let changed = changed_tables(&t_snap);
    assert_eq!(changed["measure"], (1, 1, 1), "{changed:?}");
    assert_eq!(changed["measure_area_priority"].0, 1);
    let removed: i64 = deleted
        .rows_removed
        .iter()
        .filter(|t| t.table == "measure_area_priority")
        .map(|t| t.rows)
        .sum();
    assert_eq!(changed["measure_area_priority"].1, removed);

    // Measure 7's history composes to its diff row: the oldest before-image in range is the
    // diff's before, the newest after-image its after.
    let row_of = |r: &pb::RowDiff| r.before.clone().or(r.after.clone()).unwrap();
    let id_of = |row: &pb::Row| row.values[0].kind.clone();
    let seven = r_snap
        .iter()
        .find(|r| r.table == "measure" && id_of(&row_of(r)) == Some(pb::datum::Kind::Integer(7)))
        .unwrap();
    let hist = history(&s, "measure", "7").await;
    let in_range: Vec<&pb::Event> = hist.iter().filter(|e| e.seq <= after_changes).collect();
    assert_eq!(in_range.len(), 2);
    let image = |e: &pb::Event, after: bool| {
        let im = e.rows.clone().unwrap();
        let side = if after { im.after } else { im.before };
        side.into_iter()
            .find(|t| t.table == "measure")
            .unwrap()
            .rows
            .remove(0)
    };
    assert_eq!(Some(image(in_range[1], false)), seven.before);
    assert_eq!(Some(image(in_range[0], true)), seven.after);
    // The new measure and the new link are in the diff with exactly the created rows.
    let created = hist_first_after(&s, "measure", &m.to_string()).await;
    assert!(r_snap
        .iter()
        .any(|r| r.kind == pb::RowChangeKind::Added as i32 && r.after.as_ref() == Some(&created)));
    let link_id = format!("{}/{}/{}", link.measure_id, link.area_id, link.priority_id);
    let link_row = hist_first_after(&s, "measure_area_priority", &link_id).await;
    assert!(r_snap
        .iter()
        .any(|r| r.table == "measure_area_priority" && r.after.as_ref() == Some(&link_row)));
    // The link shows in its measure's history too.
    assert!(history(&s, "measure", "8")
        .await
        .iter()
        .any(|e| e.kind == pb::EventKind::LinkCreated as i32));
}

/// The after-image of the first event in an entity's history (its creation).
async fn hist_first_after(s: &TestServer, entity_type: &str, id: &str) -> pb::Row {
    let h = history(s, entity_type, id).await;
    let created = h.last().unwrap();
    created.rows.clone().unwrap().after[0].rows[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_diff_reject_what_they_cannot_answer() {
    use pb::state_ref::State;
    let s = TestServer::start().await;
    let history = |entity_type: &str, entity_id: &str| pb::GetEntityHistoryRequest {
        entity_type: entity_type.into(),
        entity_id: entity_id.into(),
        ..Default::default()
    };
    for (req, want) in [
        (history("nonsense", "1"), "UNKNOWN_ENTITY_TYPE"),
        (history("measure", "x"), "INVALID_ENTITY_ID"),
    ] {
        let e = s.events().get_entity_history(req).await.unwrap_err();
        assert_refused(&e, Code::InvalidArgument, want);
    }
    let diff = |from, to, table: &str| pb::DiffSnapshotsRequest {
        from,
        to,
        table: table.into(),
        ..Default::default()
    };
    for (req, want) in [
        (diff(None, None, ""), "STATE_NOT_NAMED"),
        (
            diff(side(State::EventSeq(1 << 40)), side(State::Live(true)), ""),
            "EVENT_SEQ_OUT_OF_RANGE",
        ),
        (
            diff(
                side(State::Live(true)),
                side(State::Live(true)),
                "sqlite_master; --",
            ),
            "UNKNOWN_TABLE",
        ),
        (
            diff(
                side(State::SnapshotId("../../etc".into())),
                side(State::Live(true)),
                "",
            ),
            "SNAPSHOT_ID_INVALID",
        ),
    ] {
        let e = s.snapshots().diff_snapshots(req).await.unwrap_err();
        assert_refused(&e, Code::InvalidArgument, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_history_undeletes_and_diffs() {
    use crate::cli::{lnrs, url};
    let s = TestServer::start().await;
    let srv = url(&s);
    let deleted = delete_measure(&s, 44).await;

    let hist = lnrs(&srv, &["history", "measure", "44", "--json"], None)
        .await
        .ok()
        .json();
    let first = &hist["events"][0];
    assert_eq!(first["seq"], deleted.event_seq);
    assert_eq!(first["kind"], "EVENT_KIND_ENTITY_DELETED");
    let table = lnrs(&srv, &["history", "measure", "44"], None).await.ok();
    assert!(
        table.stdout.contains("entity_deleted") && table.stdout.contains(&deleted.snapshot_id),
        "{}",
        table.stdout
    );

    let seq = deleted.event_seq.to_string();
    let dry = lnrs(
        &srv,
        &["undelete", "--event", &seq, "--dry-run", "--json"],
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(dry["event_seq"], 0);
    let removed: i64 = deleted.rows_removed.iter().map(|t| t.rows).sum();
    let restored: i64 = dry["rows_restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_i64().unwrap())
        .sum();
    assert_eq!(restored, removed);
    let done = lnrs(
        &srv,
        &["undelete", "--snapshot", &deleted.snapshot_id],
        None,
    )
    .await
    .ok();
    assert!(done.stdout.contains("put back"), "{}", done.stdout);
    let again = lnrs(&srv, &["undelete", "--event", &seq], None).await;
    assert_eq!(
        again.code, 5,
        "FAILED_PRECONDITION exits 5: {}",
        again.stderr
    );
    assert!(
        again.stderr.contains("UNDELETE_CONFLICT") && again.stderr.contains("ALREADY_PRESENT"),
        "{}",
        again.stderr
    );

    // Undone: the pre-delete snapshot and the live database hold the same rows.
    let same = lnrs(&srv, &["diff", &deleted.snapshot_id, "live"], None)
        .await
        .ok();
    assert!(same.stdout.contains("no differences"), "{}", same.stdout);
    // Across the delete itself: exactly the rows it removed.
    let across = lnrs(
        &srv,
        &[
            "diff",
            &deleted.snapshot_id,
            &format!("seq:{seq}"),
            "--all",
            "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    let rows = across["rows"].as_array().unwrap();
    assert_eq!(rows.len() as i64, removed);
    assert!(rows.iter().all(|r| r["kind"] == "ROW_CHANGE_KIND_REMOVED"));
    let bad = lnrs(&srv, &["diff", "seq:x"], None).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

/// Review findings: a link delete's snapshot is a DELETE_LINK one (the CLI filter finds it), and
/// a subscriber filtering on snapshot events sees the pre-delete snapshot, which the delete
/// event names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_delete_snapshots_are_delete_link_and_every_snapshot_has_its_event() {
    use crate::cli::{lnrs, url};
    let s = TestServer::start().await;
    let link = new_link_for(&s, 45).await;
    let start = head(&s).await;
    let out = s
        .entity()
        .delete_link(pb::DeleteLinkRequest {
            link: Some(link),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    let list = lnrs(
        &url(&s),
        &["snapshot", "list", "--operation", "delete-link", "--json"],
        None,
    )
    .await
    .ok()
    .json();
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [out.snapshot_id.as_str()]);
    // SCHEDULED was never produced by anything, so it is gone from the contract.
    let scheduled = lnrs(
        &url(&s),
        &["snapshot", "list", "--operation", "scheduled"],
        None,
    )
    .await;
    assert_eq!(scheduled.code, 2, "{}", scheduled.stderr);
    let e = s
        .snapshots()
        .list_snapshots(pb::ListSnapshotsRequest {
            operation: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::InvalidArgument, "UNKNOWN_OPERATION");

    let mut stream = s
        .events()
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(start),
            kinds: vec![pb::EventKind::SnapshotCreated as i32],
            entity_types: vec![],
            heartbeat_interval: None,
            include_log_record: false,
            format: pb::EventFormat::Native as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let first = loop {
        match stream.message().await.unwrap().unwrap().item {
            Some(pb::watch_events_response::Item::Event(e)) => break e,
            Some(pb::watch_events_response::Item::CaughtUp(_)) => {
                panic!("caught up without the pre-delete snapshot's event")
            }
            _ => {}
        }
    };
    assert_eq!(first.entity_id, out.snapshot_id);
    assert_eq!(
        first.snapshot.unwrap().operation,
        pb::SnapshotOperation::DeleteLink as i32
    );
    assert!(first.seq < out.event_seq);
}

/// An id once given is never given again — not after its entity is deleted (the newest one
/// included), nor after a restore to before it existed — so a history, an event filter or an
/// undelete always means one entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_never_reused_after_a_delete_or_a_restore() {
    let s = TestServer::start().await;
    let before = s
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "before the new measures".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id;
    let first = create_measure(&s, "first new").await;
    delete_measure(&s, first).await;
    let second = create_measure(&s, "second new").await;
    assert!(second > first, "{second} reuses the deleted {first}");

    s.snapshots()
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: before.clone(),
            confirm_snapshot_id: before,
            request_id: String::new(),
        })
        .await
        .unwrap();
    let third = create_measure(&s, "after the restore").await;
    assert!(
        third > second,
        "{third} reuses {second}, created before the restore"
    );
    // The deleted measure's history is its own: nothing of the later measures, and not the
    // restore, which did not change it (it was gone before and after).
    let kinds = |h: Vec<pb::Event>| -> Vec<i32> { h.iter().map(|e| e.kind).collect() };
    use pb::EventKind as K;
    assert_eq!(
        kinds(history(&s, "measure", &first.to_string()).await),
        [K::EntityDeleted as i32, K::EntityCreated as i32]
    );
    // The restore took the second measure away: that is part of its history.
    assert_eq!(
        kinds(history(&s, "measure", &second.to_string()).await),
        [K::RestorePerformed as i32, K::EntityCreated as i32]
    );
}

/// AIP-155 on Undelete: a retry with the same request id returns the first outcome (not a
/// conflict, no second event); the same id for another undelete is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelete_retried_with_its_request_id_is_replayed() {
    let s = TestServer::start().await;
    let deleted = delete_measure(&s, 46).await;
    let other = delete_measure(&s, 47).await;
    let req = |seq| pb::UndeleteRequest {
        delete: Some(Delete::EventSeq(seq)),
        dry_run: false,
        request_id: "undo-46".into(),
    };
    let first = s
        .entity()
        .undelete(req(deleted.event_seq))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let head_after = head(&s).await;
    let again = s
        .entity()
        .undelete(req(deleted.event_seq))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(
        (again.event_seq, again.rows, again.rows_restored),
        (first.event_seq, first.rows, first.rows_restored)
    );
    assert_eq!(head(&s).await, head_after, "a replay writes nothing");
    let e = s.entity().undelete(req(other.event_seq)).await.unwrap_err();
    assert_refused(&e, Code::FailedPrecondition, "REQUEST_ID_REUSED");
}

/// An update's event carries the row before and after, and the bridge rows it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_events_carry_the_replaced_bridge_rows() {
    let s = TestServer::start().await;
    let m = s
        .entity()
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(pb::Measure {
                measure: "with sets".into(),
                core_supplementary: "Supplementary".into(),
                measure_type_ids: vec![1, 2],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let created = event_at(&s.channel, m.event_seq).await;
    let types = |t: &[pb::TableRows]| -> Vec<i64> {
        t.iter()
            .filter(|t| t.table == "measure_has_type")
            .flat_map(|t| {
                let i = t
                    .columns
                    .iter()
                    .position(|c| c == "measure_type_id")
                    .unwrap();
                t.rows.iter().map(move |r| match r.values[i].kind {
                    Some(pb::datum::Kind::Integer(v)) => v,
                    _ => -1,
                })
            })
            .collect()
    };
    assert_eq!(types(&created.rows.unwrap().after), [1, 2]);
    let mut measure = m.measure.unwrap();
    measure.measure_type_ids = vec![2, 3];
    let seq = s
        .entity()
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(measure),
            update_mask: Some(FieldMask {
                paths: vec!["measure_type_ids".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    let rows = event_at(&s.channel, seq).await.rows.unwrap();
    assert_eq!(types(&rows.before), [1], "the bridge row it removed");
    assert_eq!(types(&rows.after), [3], "the bridge row it added");
}

/// Every page of a diff against the live database is a page of one diff: the head the first
/// page saw is in the token. When that diff must read the live tables and they moved on, the
/// later page is refused rather than mixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_pages_against_live_describe_one_diff() {
    let s = TestServer::start().await;
    let deleted = delete_measure(&s, 48).await;
    let page = |token: String| pb::DiffSnapshotsRequest {
        from: side(pb::state_ref::State::SnapshotId(
            deleted.snapshot_id.clone(),
        )),
        to: side(pb::state_ref::State::Live(true)),
        table: String::new(),
        page_size: 3,
        page_token: token,
    };
    let first = s
        .snapshots()
        .diff_snapshots(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    delete_measure(&s, 49).await;
    let mut rows = first.rows.clone();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let r = s
            .snapshots()
            .diff_snapshots(page(token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.tables, first.tables, "every page reports the same diff");
        rows.extend(r.rows);
        token = r.next_page_token;
    }
    let removed: i64 = deleted.rows_removed.iter().map(|t| t.rows).sum();
    assert_eq!(
        rows.len() as i64,
        removed,
        "only the first delete: the diff as of page 1"
    );

    // Across a restore the live tables are read: a write between pages is refused.
    let snap = deleted.snapshot_id.clone();
    s.snapshots()
        .restore_snapshot(pb::RestoreSnapshotRequest {
            snapshot_id: snap.clone(),
            confirm_snapshot_id: snap,
            request_id: String::new(),
        })
        .await
        .unwrap();
    delete_measure(&s, 50).await;
    let first = s
        .snapshots()
        .diff_snapshots(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    rename_measure(&s, 51, "between pages").await;
    let e = s
        .snapshots()
        .diff_snapshots(page(first.next_page_token))
        .await
        .unwrap_err();
    assert_refused(&e, Code::Aborted, "LIVE_STATE_MOVED");
}

/// A delete whose event was compacted away is still undone by its snapshot; named by its seq,
/// the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_delete_is_undone_by_its_snapshot() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = crate::common::test_config(tmp.path());
    cfg.event_retention_keep_last = Some(5);
    let s = TestServer::start_with(cfg).await;
    let deleted = delete_measure(&s, 52).await;
    for i in 0..12 {
        rename_measure(&s, 53, &format!("rename {i}")).await;
    }
    let e = s
        .entity()
        .undelete(undelete_req(Delete::EventSeq(deleted.event_seq), true))
        .await
        .unwrap_err();
    assert_refused(&e, Code::FailedPrecondition, "UNDELETE_IMPOSSIBLE");
    assert!(e.message().contains("snapshot id"), "{}", e.message());
    let out = s
        .entity()
        .undelete(undelete_req(
            Delete::SnapshotId(deleted.snapshot_id.clone()),
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.source.as_str(), out.delete_event_seq), ("snapshot", 0));
    let restored: i64 = out.rows_restored.iter().map(|t| t.rows).sum();
    let removed: i64 = deleted.rows_removed.iter().map(|t| t.rows).sum();
    assert_eq!(restored, removed);
    // Undone once, by seq or by snapshot.
    let e = s
        .entity()
        .undelete(undelete_req(Delete::SnapshotId(deleted.snapshot_id), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.conflicts[0].kind, "ALREADY_UNDELETED", "{e:?}");
}

/// An undelete from a snapshot assembles that snapshot (about the cost of a restore's
/// assembly); that work happens off the single writer, so other writes go on meanwhile. The
/// assembly is held open by a fail point that delays it (`delay(3000)`), and a write made
/// while it is held must finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelete_from_a_snapshot_does_not_hold_other_writes() {
    use crate::common::{ops, ChildServer};
    let tmp = crate::common::data_dir_with_reference();
    let s = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &[],
        &[
            (
                "LNRS_FAILPOINTS",
                "snapshot.assemble_before_sync=delay(3000)",
            ),
            ("LNRS_EVENT_RETENTION_KEEP_LAST", "5"),
        ],
    )
    .await;
    let deleted = ops::entity(&s.channel)
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: 54,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    // Compact the delete's event away: its rows must come from the snapshot.
    for i in 0..12 {
        ops::habitat(&s.channel, &format!("filler {i}"))
            .await
            .unwrap();
    }
    let mut client = ops::entity(&s.channel);
    let undo = tokio::spawn(async move {
        client
            .undelete(undelete_req(Delete::SnapshotId(deleted.snapshot_id), false))
            .await
    });
    let tmp_dir = tmp.path().join("snapshots").join("tmp");
    ops::eventually(
        "the undelete is assembling its snapshot",
        std::time::Duration::from_secs(30),
        || {
            let dir = tmp_dir.clone();
            async move {
                std::fs::read_dir(&dir).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("assembled-"))
                })
            }
        },
    )
    .await;
    ops::habitat(&s.channel, "written during the undelete")
        .await
        .unwrap();
    assert!(
        !undo.is_finished(),
        "the write had to wait for the undelete's assembly"
    );
    let out = undo.await.unwrap().unwrap().into_inner();
    assert_eq!(out.source, "snapshot");
}
