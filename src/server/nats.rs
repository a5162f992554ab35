//! The NATS JetStream sink of the event log (`events_nats_url`): every committed event is
//! published, in seq order, to `<subject_prefix>.<kind>` (e.g. `lnrs.events.entity_deleted`) in
//! the configured stream, so any number of consumers and consumer groups read the events from
//! the broker instead of each holding a WatchEvents stream to this server.
//!
//! A message is the protobuf `lnrs.v1.Event` WatchEvents sends, with the headers
//! `Nats-Msg-Id` and `Lnrs-Seq` = its seq, and a `Content-Type` naming the message type.
//!
//! # No gap, no duplicate
//! On every (re)connection the sink reads the last message on its subjects in the stream (its
//! `Lnrs-Seq`; an empty stream: 0) and publishes the events after it from the log, then live,
//! one at a time: each waits for the broker's acknowledgement before the next is sent, so the
//! stream never holds an event without all the events before it. A publish whose
//! acknowledgement was lost (broker restart, cut connection) is sent again after the resume; the
//! stream's de-duplication on `Nats-Msg-Id` drops it if it had been stored. A service restart,
//! even after kill -9, resumes the same way: the stream, not this server, says where it is.
//!
//! Failures (broker down, stream missing, publish refused) are retried with backoff; writes to
//! the service never wait for the sink. Status (GetStatus `event_sink`, `/metrics`) says
//! connected, published seq, lag and the last error (without credentials).

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use async_nats::{ConnectOptions, HeaderValue};
use prost::Message;

use crate::app::sink::EventSink;
use crate::app::App;
use crate::config::{NatsCredentials, NatsSinkConfig};
use crate::service::convert;

/// The header carrying the event's seq (also its `Nats-Msg-Id`).
pub const SEQ_HEADER: &str = "Lnrs-Seq";
/// What the payload is.
pub const CONTENT_TYPE: &str = "application/protobuf; messageType=lnrs.v1.Event";

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a JetStream request (stream info, an acknowledgement) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the connection state is copied into the status while no event comes.
const STATE_TICK: Duration = Duration::from_millis(250);

/// Publishes until aborted (server shutdown); nothing when no sink is configured.
pub async fn run(app: App) {
    let (Some(cfg), Some(sink)) = (app.config().events_nats.clone(), app.event_sink()) else {
        return;
    };
    tracing::info!(url = %cfg.redacted_url(), stream = %cfg.stream, "event sink: publishing to NATS JetStream");
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = session(&app, &cfg, &sink, &mut backoff).await;
        if shutting_down(&app) {
            return;
        }
        if let Err(why) = outcome {
            sink.failed(why);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn shutting_down(app: &App) -> bool {
    app.shared
        .shutting_down
        .load(std::sync::atomic::Ordering::Acquire)
}

/// One connection: connect, find or create the stream, resume after its last event, publish
/// until something fails. Errors are safe to show (no credentials).
async fn session(
    app: &App,
    cfg: &NatsSinkConfig,
    sink: &EventSink,
    backoff: &mut Duration,
) -> Result<(), String> {
    let client = connect(cfg).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.>", cfg.subject_prefix)],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot find or create stream {}: {e}", cfg.stream))?;
    let resume = last_published(&stream, cfg).await?;
    let head = app.event_head();
    if resume > head {
        return Err(format!(
            "stream {} already holds event {resume}, beyond this server's newest event \
             ({head}): it holds another history; nothing is published",
            cfg.stream
        ));
    }
    sink.published(resume);
    *backoff = FIRST_BACKOFF;
    tracing::info!(
        after = resume,
        head,
        "event sink: connected; resuming after the stream's last event"
    );
    let mut feed = app.event_feed(resume).map_err(|e| e.public_message())?;
    let mut tick = tokio::time::interval(STATE_TICK);
    loop {
        tokio::select! {
            next = feed.next() => {
                let event = next.map_err(|e| e.public_message())?;
                let payload = convert::event(&event)
                    .map_err(|e| e.public_message())?
                    .encode_to_vec();
                publish(&js, cfg, event.seq, event.body.kind.as_str(), payload).await?;
                sink.published(event.seq);
            }
            _ = tick.tick() => {
                sink.set_connected(client.connection_state() == State::Connected);
            }
        }
    }
}

async fn connect(cfg: &NatsSinkConfig) -> Result<async_nats::Client, String> {
    let mut options = match cfg.credentials() {
        Some(NatsCredentials::UserPassword { user, password }) => {
            ConnectOptions::with_user_and_password(user, password.to_string())
        }
        Some(NatsCredentials::Token(token)) => ConnectOptions::with_token(token.to_string()),
        None => ConnectOptions::new(),
    };
    options = options
        .name("lnrs event sink")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT));
    options
        .connect(cfg.servers())
        .await
        .map_err(|e| format!("cannot connect to {}: {}", cfg.redacted_url(), e.kind()))
}

/// The seq of the newest event the stream holds on our subjects (0: none).
async fn last_published(
    stream: &jetstream::stream::Stream,
    cfg: &NatsSinkConfig,
) -> Result<u64, String> {
    let subjects = format!("{}.>", cfg.subject_prefix);
    let last = match stream.get_last_raw_message_by_subject(&subjects).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0),
        Err(e) => return Err(format!("cannot read the last event of {}: {e}", cfg.stream)),
    };
    last.headers
        .get(SEQ_HEADER)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "the last message on {subjects} in {} (stream seq {}) has no {SEQ_HEADER} \
                 header: another publisher uses these subjects",
                cfg.stream, last.sequence
            )
        })
}

/// Publishes one event (its seq, kind and encoded `lnrs.v1.Event`) and waits for the stream
/// to acknowledge it.
async fn publish(
    js: &jetstream::Context,
    cfg: &NatsSinkConfig,
    seq: u64,
    kind: &str,
    payload: Vec<u8>,
) -> Result<(), String> {
    let seq = seq.to_string();
    let message = jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(&seq)
        .header(SEQ_HEADER, HeaderValue::from(seq.as_str()))
        .header("Content-Type", CONTENT_TYPE)
        .expected_stream(&cfg.stream);
    let subject = format!("{}.{kind}", cfg.subject_prefix);
    let ack = js
        .send_publish(subject, message)
        .await
        .map_err(|e| format!("publishing event {seq} failed: {e}"))?
        .await
        .map_err(|e| format!("event {seq} was not acknowledged: {e}"))?;
    if ack.duplicate {
        tracing::debug!(seq, "event sink: the stream already had this event");
    }
    Ok(())
}
