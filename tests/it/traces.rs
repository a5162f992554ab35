//! Traces and CloudEvents, end to end.
//!
//! - The real binary exports its spans over OTLP/gRPC, configured only by `OTEL_*`, to an
//!   in-process collector (a tonic server of the published OTLP trace service protos). A
//!   delete and a restore sent with a W3C `traceparent` arrive as spans of that trace, under
//!   the caller's span, with their phases; the events they wrote carry the trace id.
//! - Without an exporter, a `traceparent` still names the trace its events record.
//! - WatchEvents and ListEvents in the CloudEvents format decode with the CloudEvents protobuf
//!   schema, and carry the native event as their data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lnrs::pb;
use lnrs::pb::cloudevents::CloudEvent;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::common::otlp::{self, hex};
use crate::common::{self, ops, ChildServer, TestServer};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const RESTORE_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const RESTORE_CALLER_SPAN: &str = "b7ad6b7169203331";

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// An OTLP trace collector keeping every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    /// Serves on 127.0.0.1:0; returns the endpoint URL.
    async fn start(&self) -> String {
        let store = self.0.clone();
        otlp::serve(move |spans| {
            store
                .lock()
                .unwrap()
                .extend(spans.into_iter().map(|s| Span {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                }))
        })
        .await
        .unwrap()
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until the trace holds a span of every name in `names`.
    async fn wait_for(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        let want: BTreeSet<&str> = names.iter().copied().collect();
        ops::eventually(
            &format!("spans {names:?} of trace {trace_id}"),
            Duration::from_secs(30),
            || {
                let have: BTreeSet<String> =
                    self.trace(trace_id).into_iter().map(|s| s.name).collect();
                let ok = want.iter().all(|n| have.contains(*n));
                async move { ok }
            },
        )
        .await;
        self.trace(trace_id)
    }
}

fn traced<T>(msg: T, trace_id: &str, parent: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    r
}

/// Deletes measure `id` as a request of trace [`TRACE_ID`], from the caller span
/// [`CALLER_SPAN`].
async fn traced_delete(ch: &Channel, id: i32) {
    ops::entity(ch)
        .delete_measure(traced(
            pb::DeleteMeasureRequest {
                measure_id: id,
                ..Default::default()
            },
            TRACE_ID,
            CALLER_SPAN,
        ))
        .await
        .unwrap();
}

/// Every span of `spans` descends from `root`'s span through parents inside the trace.
fn descends_from(spans: &[Span], root: &Span, name: &str) -> bool {
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    spans.iter().filter(|s| s.name == name).all(|s| {
        let mut cur = s;
        for _ in 0..16 {
            if cur.span_id == root.span_id {
                return true;
            }
            match by_id.get(cur.parent.as_str()) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    })
}

async fn event_of(ch: &Channel, kind: pb::EventKind, entity_id: &str) -> pb::Event {
    common::events_after(ch, 0)
        .await
        .into_iter()
        .rev()
        .find(|e| e.kind == kind as i32 && e.entity_id == entity_id)
        .unwrap_or_else(|| panic!("no {kind:?} event for {entity_id}"))
}

/// The delete's phases, when it captures the file itself (capture ahead off).
const DELETE_PHASES: &[&str] = &[
    "rpc",
    "queue_wait",
    "checkpoint",
    "capture",
    "cascade",
    "snapshot_wait",
    "snapshot_commit",
    "event_append",
    "commit",
    "publish",
];

const RESTORE_PHASES: &[&str] = &[
    "rpc",
    "queue_wait",
    "safety_snapshot",
    "target_check",
    "assemble",
    "deep_verify",
    "carry_over",
    "file_hash",
    "swap",
    "post_swap_verify",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_delete_and_restore_export_their_phases_under_the_callers_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = common::data_dir_with_reference();
    let server = ChildServer::start(
        dir.path(),
        "127.0.0.1:0",
        &["--snapshot-capture-ahead", "false"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "lnrs-trace-test"),
        ],
    )
    .await;
    let ch = server.channel.clone();
    let id = ops::measure(&ch, "traced measure").await;
    let snapshot = ops::snapshot(&ch, "before the traced delete").await;

    traced_delete(&ch, id).await;
    let spans = collector.wait_for(TRACE_ID, DELETE_PHASES).await;
    let rpc: Vec<&Span> = spans.iter().filter(|s| s.name == "rpc").collect();
    assert_eq!(rpc.len(), 1, "one rpc span: {spans:?}");
    assert_eq!(
        rpc[0].parent, CALLER_SPAN,
        "the rpc span is the caller's child"
    );
    for phase in DELETE_PHASES {
        assert!(
            descends_from(&spans, rpc[0], phase),
            "{phase} is not under the rpc span: {spans:?}"
        );
    }
    let deleted = event_of(&ch, pb::EventKind::EntityDeleted, &id.to_string()).await;
    assert_eq!(
        deleted.trace_id, TRACE_ID,
        "the delete's event names its trace"
    );

    ops::snapshots(&ch)
        .restore_snapshot(traced(
            pb::RestoreSnapshotRequest {
                snapshot_id: snapshot.clone(),
                confirm_snapshot_id: snapshot.clone(),
                ..Default::default()
            },
            RESTORE_TRACE_ID,
            RESTORE_CALLER_SPAN,
        ))
        .await
        .unwrap();
    let spans = collector.wait_for(RESTORE_TRACE_ID, RESTORE_PHASES).await;
    let rpc = spans.iter().find(|s| s.name == "rpc").unwrap();
    assert_eq!(rpc.parent, RESTORE_CALLER_SPAN);
    for phase in RESTORE_PHASES {
        assert!(descends_from(&spans, rpc, phase), "{phase}: {spans:?}");
    }
    let restored = event_of(&ch, pb::EventKind::RestorePerformed, &snapshot).await;
    assert_eq!(restored.trace_id, RESTORE_TRACE_ID);

    // A request without a traceparent starts its own trace: its event names that one.
    let other = ops::measure(&ch, "untraced").await;
    let created = event_of(&ch, pb::EventKind::EntityCreated, &other.to_string()).await;
    assert_eq!(created.trace_id.len(), 32, "{created:?}");
    assert_ne!(created.trace_id, TRACE_ID);
    collector.wait_for(&created.trace_id, &["rpc"]).await;
    // The start-up wait polled health: probes are not exported.
    let all = collector.0.lock().unwrap().clone();
    assert!(
        all.iter().all(|s| !s.name.starts_with("rpc_health")),
        "health checks were exported"
    );
    ops::stop(server).await;
}

#[tokio::test]
async fn without_an_exporter_a_traceparent_still_names_the_events_trace() {
    let server = TestServer::start().await;
    let ch = server.channel.clone();
    let id = ops::measure(&ch, "traced without exporter").await;
    traced_delete(&ch, id).await;
    let deleted = event_of(&ch, pb::EventKind::EntityDeleted, &id.to_string()).await;
    assert_eq!(deleted.trace_id, TRACE_ID);
    let created = event_of(&ch, pb::EventKind::EntityCreated, &id.to_string()).await;
    assert_eq!(
        created.trace_id, "",
        "no traceparent, no exporter: no trace"
    );
}

/// The CloudEvents attribute `name` as a string (string, URI and URI-reference values).
fn attr(ce: &CloudEvent, name: &str) -> Option<String> {
    use lnrs::pb::cloudevents::cloud_event::cloud_event_attribute_value::Attr;
    match ce.attributes.get(name)?.attr.as_ref()? {
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// Decodes a CloudEvent's data as the native event it carries.
fn data(ce: &CloudEvent) -> pb::Event {
    use lnrs::pb::cloudevents::cloud_event::Data;
    let Some(Data::ProtoData(any)) = &ce.data else {
        panic!("no proto_data: {ce:?}");
    };
    assert_eq!(any.type_url, "type.googleapis.com/lnrs.v1.Event");
    pb::Event::decode(any.value.as_slice()).unwrap()
}

/// Checks the envelope of one event against its native form.
fn check_envelope(ce: &CloudEvent, source: &str) -> pb::Event {
    let e = data(ce);
    assert_eq!(ce.spec_version, "1.0");
    assert_eq!(ce.source, source);
    assert_eq!(ce.id, e.seq.to_string());
    assert_eq!(attr(ce, "sequence"), Some(format!("{:020}", e.seq)));
    assert_eq!(
        attr(ce, "datacontenttype").as_deref(),
        Some("application/protobuf")
    );
    assert_eq!(
        attr(ce, "subject"),
        Some(format!("{}/{}", e.entity_type, e.entity_id))
    );
    assert!(ce.attributes.contains_key("time"));
    e
}

#[tokio::test]
async fn cloudevents_subscribers_decode_the_stream_and_pages_with_the_cloudevents_schema() {
    let dir = common::data_dir_with_reference();
    let mut cfg = common::test_config(dir.path());
    cfg.cloudevents_source = "urn:lnrs:test-deployment".into();
    let server = TestServer::start_with(cfg).await;
    let ch = server.channel.clone();
    let mut events = pb::event_service_client::EventServiceClient::new(ch.clone());
    let head = events
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .head_seq;
    let mut stream = events
        .watch_events(pb::WatchEventsRequest {
            start_after_seq: Some(head),
            format: pb::EventFormat::Cloudevents as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = ops::measure(&ch, "cloud measure").await;
    traced_delete(&ch, id).await;

    // The stream: raw bytes of each message decoded again with the CloudEvents schema alone.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got
        .iter()
        .all(|(t, _): &(String, pb::Event)| t != "lnrs.v1.entity.deleted")
    {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the delete's CloudEvent within 20 s")
            .expect("stream open")
            .unwrap();
        use pb::watch_events_response::Item;
        match msg.item {
            Some(Item::CloudEvent(ce)) => {
                let reencoded = CloudEvent::decode(ce.encode_to_vec().as_slice()).unwrap();
                let e = check_envelope(&reencoded, "urn:lnrs:test-deployment");
                got.push((reencoded.r#type.clone(), e));
            }
            Some(Item::Event(e)) => panic!("a native event on a CloudEvents stream: {e:?}"),
            _ => {}
        }
    }
    let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "lnrs.v1.entity.created",
            "lnrs.v1.snapshot.created",
            "lnrs.v1.entity.deleted"
        ]
    );
    let (_, deleted) = got.last().unwrap();
    assert_eq!(deleted.entity_id, id.to_string());
    assert_eq!(deleted.kind, pb::EventKind::EntityDeleted as i32);
    let seqs: Vec<u64> = got.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(seqs, [head + 1, head + 2, head + 3], "in order, no gap");

    // The page: the same events, as CloudEvents only.
    let page = events
        .list_events(pb::ListEventsRequest {
            start_after_seq: head,
            format: pb::EventFormat::Cloudevents as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.events.is_empty());
    assert_eq!(page.cloud_events.len(), 3);
    let last = page.cloud_events.last().unwrap();
    let e = check_envelope(last, "urn:lnrs:test-deployment");
    assert_eq!(e, *deleted);
    assert_eq!(attr(last, "traceid").as_deref(), Some(TRACE_ID));
    assert_eq!(last.r#type, "lnrs.v1.entity.deleted");

    // An unknown format is refused, not guessed.
    let err = events
        .list_events(pb::ListEventsRequest {
            format: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    common::assert_refused(&err, tonic::Code::InvalidArgument, "UNKNOWN_EVENT_FORMAT");
}
