//! `lnrs.v1.EventService`: the WatchEvents server stream (catch-up, then live, heartbeats, a
//! final UNAVAILABLE with the last seq on shutdown) and ListEvents pages, with events native
//! or as CloudEvents ([`super::cloudevents`]).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::paging::{page_size, PageQuery};
use super::{cloudevents, convert};
use crate::app::App;
use crate::domain::{EntityKind, LinkKind};
use crate::error::Error;
use crate::events::{hub, EventFilter, StreamItem, Subscription};
use crate::pb::{self, event_service_server::EventService};

/// Bounds on the heartbeat interval a subscriber may ask for.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
const MAX_HEARTBEAT: Duration = Duration::from_secs(300);
/// Items buffered per stream between the producer and the HTTP/2 writer; a slow client fills
/// this, then falls behind the shared ring and catches up from the log.
const STREAM_BUFFER: usize = 32;

/// The EventService implementation.
#[derive(Clone)]
pub struct EventApi {
    app: App,
}

impl EventApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

/// Entity types a filter may name: the six entities, the link tables, and the pseudo types of
/// snapshot and storage events.
fn known_entity_type(t: &str) -> bool {
    EntityKind::from_name(t).is_some()
        || LinkKind::from_table(t).is_some()
        || matches!(t, "snapshot" | "snapshot_storage")
}

fn filter(kinds: &[i32], entity_types: &[String]) -> Result<EventFilter, Error> {
    let kinds = kinds
        .iter()
        .map(|k| convert::event_kind_in(*k))
        .collect::<Result<BTreeSet<_>, _>>()?;
    for t in entity_types {
        if !known_entity_type(t) {
            return Err(Error::invalid(
                "entity_types",
                "UNKNOWN_ENTITY_TYPE",
                format!("`{t}` is not an entity, link or event type"),
            ));
        }
    }
    Ok(EventFilter {
        kinds,
        entity_types: entity_types.iter().cloned().collect(),
    })
}

/// How a stream sends its events.
struct Shape {
    log_record: bool,
    /// The CloudEvents source when the client asked for CloudEvents.
    cloudevents: Option<String>,
}

impl Shape {
    fn new(app: &App, format: i32, log_record: bool) -> Result<Self, Error> {
        Ok(Self {
            log_record,
            cloudevents: cloudevents::wanted(format)?
                .then(|| app.config().cloudevents_source.clone()),
        })
    }
}

fn item(i: StreamItem, shape: &Shape) -> Result<pb::WatchEventsResponse, Error> {
    use pb::watch_events_response::Item;
    let item = match i {
        StreamItem::Event(e) => {
            let mut m = convert::event(&e)?;
            if shape.log_record {
                // The log's own encoding: what a follower tailing this server replays.
                m.log_record = serde_json::to_vec(&*e)
                    .map_err(|e| Error::Internal(format!("event encoding: {e}")))?;
            }
            match &shape.cloudevents {
                Some(source) => Item::CloudEvent(cloudevents::envelope(source, e.body.kind, m)),
                None => Item::Event(m),
            }
        }
        StreamItem::Heartbeat { head, time } => Item::Heartbeat(pb::Heartbeat {
            head_seq: head,
            time: Some(convert::timestamp(time)),
        }),
        StreamItem::CaughtUp { head } => Item::CaughtUp(pb::CaughtUp { head_seq: head }),
    };
    Ok(pb::WatchEventsResponse { item: Some(item) })
}

type WatchStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let r = req.into_inner();
        let heartbeat = match r.heartbeat_interval {
            None => self.app.config().default_heartbeat,
            Some(d) => {
                convert::from_duration("heartbeat_interval", d)?.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
            }
        };
        let shape = Shape::new(&self.app, r.format, r.include_log_record)?;
        let sub = Subscription {
            start_after: r.start_after_seq,
            filter: filter(&r.kinds, &r.entity_types)?,
            heartbeat,
        };
        let shared = &self.app.shared;
        shared
            .hub
            .check_start(sub.start_after)
            .map_err(Error::from)?;
        let permit = shared.hub.admit().map_err(Error::from)?;
        let stream = hub::subscribe(
            shared.hub.clone(),
            shared.reads.clone(),
            sub,
            permit,
            STREAM_BUFFER,
        )
        .map(move |r| {
            r.map_err(Error::from)
                .and_then(|i| item(i, &shape))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_entity_history(
        &self,
        req: Request<pb::GetEntityHistoryRequest>,
    ) -> Result<Response<pb::GetEntityHistoryResponse>, Status> {
        let r = req.into_inner();
        let limit = page_size(r.page_size, 50, 500)?;
        let q = PageQuery::new(&["history", &r.entity_type, &r.entity_id]);
        let before: u64 = q.cursor(&r.page_token)?.unwrap_or(0);
        let page = self
            .app
            .entity_history(r.entity_type, r.entity_id, before, limit)
            .await?;
        let next_page_token = match page.next_before {
            Some(b) => q.token(&b)?,
            None => String::new(),
        };
        Ok(Response::new(pb::GetEntityHistoryResponse {
            events: page
                .events
                .iter()
                .map(convert::event)
                .collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = req.into_inner();
        let limit = page_size(r.page_size, 100, 1000)?;
        let shape = Shape::new(&self.app, r.format, false)?;
        let page = self
            .app
            .list_events(r.start_after_seq, limit, filter(&r.kinds, &r.entity_types)?)
            .await?;
        let mut events = Vec::with_capacity(page.events.len());
        let mut cloud_events = Vec::new();
        for e in &page.events {
            let m = convert::event(e)?;
            match &shape.cloudevents {
                Some(source) => cloud_events.push(cloudevents::envelope(source, e.body.kind, m)),
                None => events.push(m),
            }
        }
        Ok(Response::new(pb::ListEventsResponse {
            events,
            cloud_events,
            next_start_after_seq: page.next_start_after,
            head_seq: page.head,
            first_available_seq: page.first,
        }))
    }
}
