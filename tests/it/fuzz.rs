//! Bad input: one regression test per defect found in how the server takes client input
//! (issue 11, item 8, and what the descriptor-driven fuzzer of this module finds). Each test
//! failed before its fix.

use std::time::Duration;

use lnrs::pb;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::{reason, test_config, TestServer};

/// The server's message limit in these tests (the default).
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// What one call gave: the response messages (one for unary) or the status it ended with.
enum Outcome {
    Ok(Vec<Vec<u8>>),
    Err(Status),
}

/// Sends `body` to `path`; a server-streaming call reads a few items with a short deadline.
async fn call(channel: &Channel, path: &str, body: Vec<u8>, streaming: bool) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        return Outcome::Err(Status::unavailable(format!("client not ready: {e}")));
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    let request = tonic::Request::new(body);
    if !streaming {
        return match grpc.unary(request, path, RawCodec).await {
            Ok(r) => Outcome::Ok(vec![r.into_inner()]),
            Err(s) => Outcome::Err(s),
        };
    }
    let mut stream = match grpc.server_streaming(request, path, RawCodec).await {
        Ok(r) => r.into_inner(),
        Err(s) => return Outcome::Err(s),
    };
    let mut items = Vec::new();
    while items.len() < 3 {
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(m))) => items.push(m),
            Ok(Some(Err(s))) => return Outcome::Err(s),
            Ok(None) | Err(_) => break,
        }
    }
    Outcome::Ok(items)
}

/// The event log head.
async fn head(channel: &Channel) -> u64 {
    pb::event_service_client::EventServiceClient::new(channel.clone())
        .list_events(pb::ListEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .head_seq
}

/// SQL and engine text that must never reach a client (unless the request carried it).
const SQL_MARKERS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    " FROM ",
    " WHERE ",
    "CREATE TABLE",
    "ATTACH ",
    "Binder Error",
    "Catalog Error",
    "Parser Error",
    "Constraint Error",
    "Conversion Error",
    "Invalid Input Error",
    "TransactionContext Error",
    "IO Error",
    "duckdb",
];

/// Every client-visible text of an error: message, ErrorInfo metadata, violations, resource
/// info, and the response metadata.
fn visible_text(s: &Status) -> String {
    let mut out = vec![s.message().to_string()];
    let d = s.get_error_details();
    if let Some(i) = d.error_info() {
        out.push(i.reason.clone());
        out.extend(i.metadata.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if let Some(b) = d.bad_request() {
        out.extend(
            b.field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description)),
        );
    }
    if let Some(r) = d.resource_info() {
        out.push(format!(
            "{} {} {}",
            r.resource_type, r.resource_name, r.description
        ));
    }
    for kv in s.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            if k.as_str() != "grpc-status-details-bin" {
                out.push(format!("{}={}", k.as_str(), v.to_str().unwrap_or_default()));
            }
        }
    }
    out.join("\n")
}

/// What is wrong with an error status, if anything.
fn status_problems(s: &Status, request: &[u8], data_dir: &str) -> Vec<String> {
    let mut p = Vec::new();
    if matches!(s.code(), Code::Internal | Code::Unknown | Code::DataLoss) {
        p.push(format!("code {:?}", s.code()));
    }
    match s.get_error_details().error_info() {
        None => p.push("no ErrorInfo".into()),
        Some(i) if i.domain != lnrs::error::ERROR_DOMAIN => {
            p.push(format!("ErrorInfo domain {:?}", i.domain))
        }
        Some(i) if i.reason.is_empty() => p.push("ErrorInfo without a reason".into()),
        Some(_) => {}
    }
    let text = visible_text(s);
    let sent = String::from_utf8_lossy(request);
    if text.contains(data_dir) {
        p.push("shows the data directory".into());
    }
    for m in SQL_MARKERS {
        if text.contains(m) && !sent.contains(m) {
            p.push(format!("shows SQL/engine text {m:?}"));
        }
    }
    p
}

/// Health SERVING for the server and each service; a read and a write succeed.
async fn alive(channel: &Channel) -> Result<(), String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "lnrs.v1.EntityService",
        "lnrs.v1.SnapshotService",
        "lnrs.v1.EventService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_err(|s| format!("health {service:?}: {s:?}"))?;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        if r.into_inner().status != serving {
            return Err(format!("health {service:?} is not SERVING"));
        }
    }
    pb::snapshot_service_client::SnapshotServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| format!("GetStatus: {s:?}"))?;
    pb::entity_service_client::EntityServiceClient::new(channel.clone())
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: 0,
                habitat: "Fuzz canary".into(),
            }),
            request_id: String::new(),
        })
        .await
        .map_err(|s| format!("canary write: {s:?}"))?;
    Ok(())
}

/// Byte-slicing a page token on a character boundary panicked the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_page_tokens_are_invalid_not_a_panic() {
    let s = TestServer::start().await;
    let mut e = s.entity();
    // Even byte lengths, with a multi-byte character across the first hex pair.
    for token in ["aéb", "😀", "0é1", "ab😀cd"] {
        let st = e
            .list_measures(pb::ListMeasuresRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{token:?}: {st:?}");
        assert_eq!(reason(&st), "INVALID_PAGE_TOKEN");
        let st = e
            .list_links(pb::ListLinksRequest {
                link_type: pb::LinkType::MeasureAreaPriority as i32,
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{token:?}: {st:?}");
        assert_eq!(reason(&st), "INVALID_PAGE_TOKEN");
    }
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// `start_after_seq + 1` overflowed (a panic in debug builds) for u64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_beyond_any_seq_are_out_of_range() {
    let s = TestServer::start().await;
    let mut ev = s.events();
    for after in [u64::MAX, u64::MAX - 1, i64::MAX as u64 + 1, i64::MAX as u64] {
        let st = ev
            .list_events(pb::ListEventsRequest {
                start_after_seq: after,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::OutOfRange, "{after}: {st:?}");
        assert_eq!(reason(&st), "START_POSITION_AHEAD");
        let st = ev
            .watch_events(pb::WatchEventsRequest {
                start_after_seq: Some(after),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::OutOfRange, "{after}: {st:?}");
        assert_eq!(reason(&st), "START_POSITION_AHEAD");
    }
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// `m * a * p` overflowed (a panic in debug builds) for three lists of ~2.7 million ids,
/// which a server with a large message limit accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_product_beyond_usize_is_batch_too_large() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.max_message_bytes = 64 * 1024 * 1024;
    let s = TestServer::start_with(cfg).await;
    let before = head(&s.channel).await;
    let ids: Vec<i32> = (1..=2_700_000).collect(); // 2.7e6³ > 2⁶⁴
    let st = s
        .entity()
        .max_encoding_message_size(usize::MAX)
        .batch_create_measure_area_priority_links(pb::BatchCreateMeasureAreaPriorityLinksRequest {
            measure_ids: ids.clone(),
            area_ids: ids.clone(),
            priority_ids: ids,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(reason(&st), "BATCH_TOO_LARGE");
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
    drop(tmp);
}

/// tonic-prost answers a request that does not decode with INTERNAL: the client's bytes are
/// at fault, so it is INVALID_ARGUMENT `MALFORMED_REQUEST` (with ErrorInfo), and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_do_not_decode_are_invalid_argument() {
    let s = TestServer::start().await;
    let before = head(&s.channel).await;
    let valid = pb::CreateHabitatRequest {
        habitat: Some(pb::Habitat {
            habitat_id: 0,
            habitat: "Fen".into(),
        }),
        request_id: String::new(),
    }
    .encode_to_vec();
    let mut invalid_utf8 = valid.clone();
    invalid_utf8.extend_from_slice(&[0x12, 0x02, 0xff, 0xfe]); // request_id = ff fe
    let truncated = valid[..valid.len() - 1].to_vec();
    let mut wrong_wire_type = valid.clone();
    wrong_wire_type.extend_from_slice(&[0x0d, 0, 0, 0, 0]); // habitat (1) as fixed32
    let cases = [
        (
            "/lnrs.v1.EntityService/CreateHabitat",
            invalid_utf8.clone(),
            false,
        ),
        ("/lnrs.v1.EntityService/CreateHabitat", truncated, false),
        (
            "/lnrs.v1.EntityService/CreateHabitat",
            wrong_wire_type,
            false,
        ),
        ("/lnrs.v1.EntityService/GetHabitat", vec![0x08, 0xff], false),
        (
            "/lnrs.v1.SnapshotService/GetSnapshot",
            vec![0x0a, 0x01, 0xc3],
            false,
        ),
        ("/lnrs.v1.EventService/ListEvents", vec![0x08; 3], false),
        (
            "/lnrs.v1.EventService/WatchEvents",
            vec![0x1a, 0x02, 0xc3, 0x28],
            true,
        ),
    ];
    for (path, body, streaming) in cases {
        let st = match call(&s.channel, path, body.clone(), streaming).await {
            Outcome::Err(st) => st,
            Outcome::Ok(items) => panic!("{path} {body:02x?} was accepted: {} items", items.len()),
        };
        assert_eq!(
            st.code(),
            Code::InvalidArgument,
            "{path} {body:02x?}: {st:?}"
        );
        assert_eq!(reason(&st), "MALFORMED_REQUEST", "{path}: {st:?}");
        assert_eq!(
            status_problems(&st, &body, &s.data_dir.display().to_string()),
            Vec::<String>::new()
        );
    }
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// Errors that quote the client's input (an unknown order_by column, a bad label key) quoted
/// all of it: a multi-megabyte quote in the trailers made h2 clients drop the connection
/// (GOAWAY ENHANCE_YOUR_CALM `too_many_continuations`), so the client saw a transport error
/// instead of INVALID_ARGUMENT. Found by the fuzzer (seed 1, request 237).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quoting_huge_input_stay_readable() {
    let s = TestServer::start().await;
    let huge = "é".repeat((MESSAGE_LIMIT - 4096) / 2);
    let st = s
        .entity()
        .list_measures(pb::ListMeasuresRequest {
            order_by: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(reason(&st), "INVALID_ORDER_BY");
    assert!(st.message().len() <= 1024, "{} bytes", st.message().len());
    let st = s
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "labels".into(),
            labels: [(huge.clone(), "v".to_string())].into_iter().collect(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(reason(&st), "INVALID_LABEL");
    let st = s
        .events()
        .list_events(pb::ListEventsRequest {
            entity_types: vec![huge],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(reason(&st), "UNKNOWN_ENTITY_TYPE");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// prost-types negates a negative Duration's seconds, which overflowed (a panic in debug
/// builds) for i64::MIN in WatchEvents' heartbeat_interval and ApplyRetention's keep_within.
/// Found by the fuzzer (seed 1, request 2016).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_at_the_limits_are_invalid_not_a_panic() {
    let s = TestServer::start().await;
    let before = head(&s.channel).await;
    for seconds in [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        -315_576_000_001,
        315_576_000_001,
    ] {
        let d = prost_types::Duration { seconds, nanos: 0 };
        let st = s
            .events()
            .watch_events(pb::WatchEventsRequest {
                heartbeat_interval: Some(d),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{seconds}: {st:?}");
        assert_eq!(reason(&st), "INVALID_DURATION");
        let st = s
            .snapshots()
            .apply_retention(pb::ApplyRetentionRequest {
                keep_last: 1,
                keep_within: Some(d),
                dry_run: false,
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{seconds}: {st:?}");
        assert_eq!(reason(&st), "INVALID_DURATION");
    }
    // The edges of the valid range still work.
    let d = prost_types::Duration {
        seconds: 315_576_000_000,
        nanos: 0,
    };
    s.snapshots()
        .apply_retention(pb::ApplyRetentionRequest {
            keep_last: 0,
            keep_within: Some(d),
            dry_run: true,
        })
        .await
        .expect("10,000 years is a valid keep_within");
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}
