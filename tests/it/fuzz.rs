//! Bad input: one regression test per defect found in how the server takes client input
//! (issue 11, item 8, and what the descriptor-driven fuzzer of this module finds). Each test
//! failed before its fix.

use lnrs::pb;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{reason, test_config, TestServer};

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
