//! Fan-out of committed events to subscribers, and the subscription driver: catch-up from the
//! log, then live, with no gap and no duplicate at the hand-off.
//!
//! Live events travel through one shared broadcast ring (writers never wait for readers). A
//! subscriber that falls behind the ring gets `Lagged`, or sees a seq gap, and goes back to
//! catch-up from the log at its last seq: it is never dropped silently and never blocks writers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::future::Future;

use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::log::{self, Bounds};
use super::model::{Event, EventFilter};
use super::EventError;
use crate::storage::pool::ReadPool;

/// Events read per catch-up query.
const CATCH_UP_PAGE: usize = 512;

/// The live side of the log.
pub struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
    head: AtomicU64,
    first: AtomicU64,
    slots: Arc<Semaphore>,
    max_subscribers: usize,
    shutdown: CancellationToken,
    catch_ups: AtomicU64,
    active: AtomicUsize,
}

impl EventHub {
    /// A hub whose ring holds `capacity` events, admitting `max_subscribers` streams.
    pub fn new(capacity: usize, max_subscribers: usize, bounds: Bounds) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Arc::new(Self {
            tx,
            head: AtomicU64::new(bounds.head),
            first: AtomicU64::new(bounds.first),
            slots: Arc::new(Semaphore::new(max_subscribers)),
            max_subscribers,
            shutdown: CancellationToken::new(),
            catch_ups: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    /// Announces committed events, in seq order. Called by the writer after COMMIT.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.head.store(e.seq, Ordering::Release);
            // No receivers is fine: the log has it.
            let _ = self.tx.send(Arc::new(e));
        }
    }

    /// Newest committed seq.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Oldest retained seq.
    pub fn first(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// Records the log's new lower bound after compaction.
    pub fn set_first(&self, first: u64) {
        self.first.store(first, Ordering::Release);
    }

    /// Streams currently open.
    pub fn subscribers(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Times a subscriber fell behind and went back to the log.
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }

    /// Ends every stream with `ShuttingDown` (server shutdown).
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await
    }

    /// Checks a start position against the retained log.
    pub fn check_start(&self, start_after: Option<u64>) -> Result<(), EventError> {
        let Some(after) = start_after else {
            return Ok(());
        };
        let (first, head) = (self.first(), self.head());
        if after.saturating_add(1) < first {
            return Err(EventError::Compacted {
                first_available: first,
            });
        }
        if after > head {
            return Err(EventError::Ahead { head });
        }
        Ok(())
    }

    /// Admits one more subscriber, or says the cap is reached.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, EventError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| EventError::TooManySubscribers {
                limit: self.max_subscribers,
            })
    }
}

/// One item of a subscription stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Event(Arc<Event>),
    Heartbeat { head: u64, time: DateTime<Utc> },
    CaughtUp { head: u64 },
}

/// What a subscriber asked for.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Exclusive start; `None` = live only.
    pub start_after: Option<u64>,
    pub filter: EventFilter,
    pub heartbeat: Duration,
}

type Out = mpsc::Sender<Result<StreamItem, EventError>>;

/// A subscription as its reader sees it: the items, then — once the driver has stopped — the
/// error that ended it, if any. The final error travels on its own channel so it reaches the
/// reader even when the item buffer is full (a slow reader still learns the seq to resume
/// after, once it has read what was buffered).
pub struct SubscriptionStream {
    items: mpsc::Receiver<Result<StreamItem, EventError>>,
    last: Option<oneshot::Receiver<EventError>>,
}

impl tokio_stream::Stream for SubscriptionStream {
    type Item = Result<StreamItem, EventError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.items.poll_recv(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let Some(last) = self.last.as_mut() else {
            return Poll::Ready(None);
        };
        match std::pin::Pin::new(last).poll(cx) {
            Poll::Ready(r) => {
                self.last = None;
                Poll::Ready(r.ok().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Starts a subscription (its driver runs as a task) holding the subscriber slot `permit`;
/// `buffer` items wait between the driver and the reader.
pub fn subscribe(
    hub: Arc<EventHub>,
    reads: Arc<ReadPool>,
    sub: Subscription,
    permit: OwnedSemaphorePermit,
    buffer: usize,
) -> SubscriptionStream {
    let (out, items) = mpsc::channel(buffer.max(1));
    let (fin, last) = oneshot::channel();
    tokio::spawn(run(hub, reads, sub, out, fin, permit));
    SubscriptionStream {
        items,
        last: Some(last),
    }
}

struct Driver {
    hub: Arc<EventHub>,
    reads: Arc<ReadPool>,
    sub: Subscription,
    out: Out,
    /// Where the error that ends the subscription goes (see [`SubscriptionStream`]).
    fin: Option<oneshot::Sender<EventError>>,
    /// Last seq examined (delivered or filtered out).
    last: u64,
    /// Last seq actually sent to the client.
    last_sent: u64,
}

enum Next {
    CatchUp,
    Stop,
}

/// Runs one subscription until the client goes away or the server shuts down. `permit` is the
/// subscriber slot, held for the stream's lifetime.
async fn run(
    hub: Arc<EventHub>,
    reads: Arc<ReadPool>,
    sub: Subscription,
    out: Out,
    fin: oneshot::Sender<EventError>,
    permit: OwnedSemaphorePermit,
) {
    let last = sub.start_after.unwrap_or_else(|| hub.head());
    hub.active.fetch_add(1, Ordering::Relaxed);
    let mut d = Driver {
        hub: hub.clone(),
        reads,
        sub,
        out,
        fin: Some(fin),
        last,
        last_sent: last,
    };
    d.drive().await;
    hub.active.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

impl Driver {
    async fn drive(&mut self) {
        let mut announced = false;
        loop {
            // Subscribe before reading the log: anything committed after the read is in the ring.
            let mut rx = self.hub.tx.subscribe();
            if !self.catch_up().await {
                return;
            }
            if !announced {
                announced = true;
                let head = self.last;
                if !self.send(StreamItem::CaughtUp { head }).await {
                    return;
                }
            }
            match self.live(&mut rx).await {
                Next::CatchUp => {
                    self.hub.catch_ups.fetch_add(1, Ordering::Relaxed);
                }
                Next::Stop => return,
            }
        }
    }

    /// Delivers the log after `last` up to its head at read time.
    async fn catch_up(&mut self) -> bool {
        loop {
            let (after, filter) = (self.last, self.sub.filter.clone());
            let page = self
                .reads
                .read(move |conn| {
                    // One read transaction: the page and the bounds agree. Events after
                    // `after` that were compacted away would be a silent gap: refuse instead.
                    let bounds = log::bounds(conn)?;
                    if after.saturating_add(1) < bounds.first {
                        return Err(EventError::Compacted {
                            first_available: bounds.first,
                        });
                    }
                    let events = log::read_after(conn, after, CATCH_UP_PAGE, &filter)?;
                    Ok::<_, EventError>((events, bounds.head))
                })
                .await;
            let (events, head) = match page {
                Ok(p) => p,
                Err(e) => {
                    self.finish(e);
                    return false;
                }
            };
            let full = events.len() == CATCH_UP_PAGE;
            for e in events {
                self.last = e.seq;
                if !self.send(StreamItem::Event(Arc::new(e))).await {
                    return false;
                }
            }
            if !full {
                self.last = self.last.max(head);
                return true;
            }
        }
    }

    async fn live(&mut self, rx: &mut broadcast::Receiver<Arc<Event>>) -> Next {
        let shutdown = self.hub.shutdown.clone();
        loop {
            let heartbeat = tokio::time::sleep(self.sub.heartbeat);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.finish(EventError::ShuttingDown { last_seq: self.last_sent });
                    return Next::Stop;
                }
                r = rx.recv() => match r {
                    Ok(e) if e.seq <= self.last => {}
                    Ok(e) if e.seq != self.last + 1 => return Next::CatchUp,
                    Ok(e) => {
                        self.last = e.seq;
                        if self.sub.filter.matches(&e) && !self.send(StreamItem::Event(e)).await {
                            return Next::Stop;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Next::CatchUp,
                    Err(broadcast::error::RecvError::Closed) => return Next::Stop,
                },
                _ = heartbeat => {
                    let item = StreamItem::Heartbeat { head: self.hub.head(), time: Utc::now() };
                    if !self.send(item).await {
                        return Next::Stop;
                    }
                }
                _ = self.out.closed() => return Next::Stop,
            }
        }
    }

    /// Ends the subscription with `e`, delivered after the items already buffered.
    fn finish(&mut self, e: EventError) {
        if let Some(fin) = self.fin.take() {
            let _ = fin.send(e);
        }
    }

    /// Sends one item; false when the client is gone or the server is shutting down.
    async fn send(&mut self, item: StreamItem) -> bool {
        let seq = match &item {
            StreamItem::Event(e) => Some(e.seq),
            _ => None,
        };
        crate::metrics::subscriber_lag(self.hub.head(), seq);
        tokio::select! {
            biased;
            _ = self.hub.shutdown.cancelled() => {
                self.finish(EventError::ShuttingDown { last_seq: self.last_sent });
                false
            }
            r = self.out.send(Ok(item)) => {
                if let (Ok(()), Some(s)) = (&r, seq) {
                    self.last_sent = s;
                }
                r.is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    use crate::events::model::test_event as event;

    /// A subscriber that reads nothing fills its buffer; the shutdown status must still reach
    /// it, after the buffered events, naming the last of them. (It was `try_send` into the full
    /// buffer, and lost.)
    #[tokio::test]
    async fn the_final_status_reaches_a_reader_with_a_full_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::storage::open(&dir.path().join("h.duckdb")).unwrap();
        crate::storage::schema::migrate(&conn).unwrap();
        let reads = ReadPool::new(conn, Duration::from_secs(1), 2);
        let hub = EventHub::new(64, 4, Bounds { first: 1, head: 0 });
        let sub = Subscription {
            start_after: Some(0),
            filter: EventFilter::default(),
            heartbeat: Duration::from_secs(60),
        };
        let mut stream = subscribe(hub.clone(), reads, sub, hub.admit().unwrap(), 2);
        // Wait until the driver is live (it announces CaughtUp), then overfill its buffer.
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamItem::CaughtUp { .. }))
        ));
        hub.publish((1..=10).map(event));
        while hub.subscribers() == 1 && stream.items.len() < 2 {
            tokio::task::yield_now().await;
        }
        hub.shut_down();
        let mut seqs = Vec::new();
        let last = loop {
            match stream.next().await {
                Some(Ok(StreamItem::Event(e))) => seqs.push(e.seq),
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the stream ended without its final status"),
            }
        };
        assert!(!seqs.is_empty() && seqs.len() < 10, "{seqs:?}");
        match last {
            EventError::ShuttingDown { last_seq } => assert_eq!(Some(&last_seq), seqs.last()),
            other => panic!("{other:?}"),
        }
    }
}
