//! Bad input: one regression test per defect found in how the server takes client input
//! (issue 11, item 8, and what the descriptor-driven fuzzer of this module finds). Each test
//! failed before its fix.

use lnrs::pb;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{reason, TestServer};

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
