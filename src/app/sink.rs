//! The event sink's side in the application (`events_nats_url`): the feed of committed events a
//! sink publishes — in seq order, from the log and then live, starting after whatever its stream
//! already holds — and the sink's status as GetStatus and `/metrics` show it. The broker client
//! is the server's (`server::nats`); it reports into [`EventSink`].
//!
//! Events the log no longer holds when the feed reaches them (compacted by event retention
//! before they were published) are never skipped silently: the feed records the range as a gap
//! (status, metric, an error in the log) and goes on from the oldest event still there.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;

use super::App;
use crate::config::Config;
use crate::error::Error;
use crate::events::{hub, Event, EventError, EventFilter, StreamItem, Subscription};

/// The feed wants events only; its heartbeats are ignored, so they are rare.
const FEED_HEARTBEAT: Duration = Duration::from_secs(300);
/// Events buffered between the log reader and the publisher.
const FEED_BUFFER: usize = 256;

/// The sink as GetStatus reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStatus {
    /// The broker URL without credentials.
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// Connected to the broker, with the stream found or created.
    pub connected: bool,
    /// The newest event the stream is known to hold: acknowledged by the broker, or found there
    /// when the sink (re)connected. 0 until the first connection.
    pub published_seq: u64,
    /// The newest committed event here, when the status was read.
    pub head_seq: u64,
    /// Events the log no longer held when the sink reached them: they are not in the stream.
    pub skipped_events: u64,
    /// The newest such range, first..=last.
    pub last_gap: Option<(u64, u64)>,
    /// Why the last attempt failed (empty once an event was published again).
    pub error: Option<String>,
}

impl SinkStatus {
    /// Committed events not (yet) in the stream.
    pub fn lag(&self) -> u64 {
        self.head_seq.saturating_sub(self.published_seq)
    }
}

/// The sink's state, written by its publishing task.
#[derive(Debug)]
pub struct EventSink {
    status: parking_lot::Mutex<SinkStatus>,
}

impl EventSink {
    /// The sink configured in `config`, if any.
    pub(crate) fn open(config: &Config) -> Option<Arc<EventSink>> {
        let n = config.events_nats.as_ref()?;
        Some(Arc::new(EventSink {
            status: parking_lot::Mutex::new(SinkStatus {
                url: n.redacted_url(),
                stream: n.stream.clone(),
                subject_prefix: n.subject_prefix.clone(),
                ..Default::default()
            }),
        }))
    }

    /// The status as last recorded (without the head: see [`App::event_sink_status`]).
    pub fn status(&self) -> SinkStatus {
        self.status.lock().clone()
    }

    /// Records whether the broker connection is up.
    pub fn set_connected(&self, connected: bool) {
        self.status.lock().connected = connected;
    }

    /// Records that the stream holds everything up to `seq` (an acknowledgement, or what the
    /// stream held when the sink resumed); clears the last error.
    pub fn published(&self, seq: u64) {
        let mut st = self.status.lock();
        st.published_seq = seq;
        st.connected = true;
        st.error = None;
    }

    /// Records a failed attempt (the task retries with backoff); `why` must be safe to show.
    pub fn failed(&self, why: String) {
        tracing::warn!(error = %why, "event sink: publishing failed; retrying");
        crate::metrics::event_sink_failed();
        let mut st = self.status.lock();
        st.connected = false;
        st.error = Some(why);
    }

    /// Records events `first..=last` as lost to the stream (the log no longer had them).
    fn skipped(&self, first: u64, last: u64) {
        tracing::error!(
            first,
            last,
            "event sink: the event log no longer holds these events (event retention removed \
             them before they were published); they are NOT in the stream"
        );
        let mut st = self.status.lock();
        st.skipped_events += last + 1 - first;
        st.last_gap = Some((first, last));
    }
}

/// Committed events in seq order, for a sink: the log after a given seq, then live.
pub struct EventFeed {
    app: App,
    sink: Arc<EventSink>,
    stream: hub::SubscriptionStream,
    /// The newest event handed out (or the start).
    last: u64,
}

impl App {
    /// The event sink's state, when one is configured.
    pub fn event_sink(&self) -> Option<Arc<EventSink>> {
        self.shared.event_sink.clone()
    }

    /// The sink's status with the current head, when one is configured.
    pub fn event_sink_status(&self) -> Option<SinkStatus> {
        self.shared.event_sink.as_ref().map(|s| SinkStatus {
            head_seq: self.shared.hub.head(),
            ..s.status()
        })
    }

    /// The committed events after `after` (what the sink's stream already holds), in seq
    /// order. Fails when `after` is beyond this log's head: the stream then holds another
    /// history, and publishing would mix the two.
    pub fn event_feed(&self, after: u64) -> Result<EventFeed, Error> {
        let sink = self
            .event_sink()
            .ok_or_else(|| Error::Internal("no event sink is configured".into()))?;
        let head = self.shared.hub.head();
        if after > head {
            return Err(EventError::Ahead { head }.into());
        }
        let stream = self.subscribe_from(after)?;
        Ok(EventFeed {
            app: self.clone(),
            sink,
            stream,
            last: after,
        })
    }

    fn subscribe_from(&self, after: u64) -> Result<hub::SubscriptionStream, Error> {
        let shared = &self.shared;
        let sub = Subscription {
            start_after: Some(after),
            filter: EventFilter::default(),
            heartbeat: FEED_HEARTBEAT,
        };
        let permit = shared.hub.admit()?;
        Ok(hub::subscribe(
            shared.hub.clone(),
            shared.reads.clone(),
            sub,
            permit,
            FEED_BUFFER,
        ))
    }
}

impl EventFeed {
    /// The next committed event: the one after the previous, unless the log no longer held
    /// some (a gap, recorded). Errors end the feed (shutdown, no subscriber slot, a read error).
    pub async fn next(&mut self) -> Result<Arc<Event>, Error> {
        loop {
            match self.stream.next().await {
                Some(Ok(StreamItem::Event(e))) => {
                    if e.seq > self.last + 1 {
                        self.sink.skipped(self.last + 1, e.seq - 1);
                    }
                    self.last = e.seq;
                    return Ok(e);
                }
                Some(Ok(_)) => {}
                Some(Err(EventError::Compacted { first_available })) => {
                    self.sink.skipped(self.last + 1, first_available - 1);
                    self.last = first_available - 1;
                    self.stream = self.app.subscribe_from(self.last)?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Error::Internal("the event feed ended".into())),
            }
        }
    }
}
