//! The single writer: one dedicated OS thread owns the write state (the DuckDB write connection
//! and whatever else must change only between transactions) and runs jobs from a bounded queue,
//! one at a time. Async callers await a oneshot; no DuckDB call runs on the async executor.
//!
//! The queue bound turns overload into an immediate `Busy` instead of unbounded memory; a job
//! whose deadline passed, or whose caller went away, while queued is not executed.
//!
//! When the queue has stayed empty for as long as the state asks ([`IdleWork`]), the thread
//! runs the state's idle work: upkeep that must run between transactions but that no caller
//! should wait for. A job that arrives meanwhile waits only for that step, never for a queue.

use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::StorageError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What the writer thread does when no job is waiting.
pub trait IdleWork {
    /// How long the queue must stay empty before [`idle`](Self::idle) runs (None: nothing to
    /// do until the next job).
    fn idle_after(&self) -> Option<Duration> {
        None
    }

    /// The idle work; it should be short, as a job arriving meanwhile waits for it.
    fn idle(&mut self) {}
}

impl IdleWork for () {}

/// The next job, running the state's idle work while the queue stays empty. None once every
/// sender is gone.
fn next_job<S: IdleWork>(rx: &std::sync::mpsc::Receiver<Job<S>>, state: &mut S) -> Option<Job<S>> {
    loop {
        let Some(after) = state.idle_after() else {
            return rx.recv().ok();
        };
        match rx.recv_timeout(after) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => state.idle(),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Handle to the writer thread. Cloning shares the same thread and queue.
pub struct Writer<S> {
    tx: SyncSender<Job<S>>,
    thread: Arc<parking_lot::Mutex<Option<JoinHandle<S>>>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl<S> Clone for Writer<S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            thread: self.thread.clone(),
            queued: self.queued.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<S: IdleWork + Send + 'static> Writer<S> {
    /// Starts the writer thread owning `state`, with room for `queue` waiting jobs.
    pub fn start(state: S, queue: usize) -> Result<Self, StorageError> {
        let (tx, rx) = sync_channel::<Job<S>>(queue.max(1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name("lnrs-writer".into())
            .spawn(move || {
                let mut state = state;
                while let Some(job) = next_job(&rx, &mut state) {
                    job(&mut state);
                    if stopped.load(std::sync::atomic::Ordering::Acquire) {
                        break;
                    }
                }
                state
            })
            .map_err(|e| StorageError::Io {
                path: "lnrs-writer thread".into(),
                source: e,
            })?;
        Ok(Self {
            tx,
            thread: Arc::new(parking_lot::Mutex::new(Some(handle))),
            queued: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            stop,
        })
    }

    /// Runs `f` on the writer thread and returns its result.
    ///
    /// Fails fast with `Busy` when the queue is full, and with `DeadlineExceeded` (without
    /// running `f`) when `deadline` passes before the job's turn comes.
    pub async fn run<T, E, F>(&self, deadline: Option<Instant>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let queued = self.queued.clone();
        // The job runs inside the caller's span (its request's, in traces), and the time it
        // waited for its turn is a span of its own.
        let caller = tracing::Span::current();
        let queue_wait = super::phase_span!("queue_wait");
        let job: Job<S> = Box::new(move |state| {
            drop(queue_wait);
            let _in_caller = caller.enter();
            queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if done.is_closed() {
                return; // the caller gave up (cancelled RPC): do not act on its behalf
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = done.send(Err(E::from(StorageError::DeadlineExceeded)));
                return;
            }
            let _ = done.send(f(state));
        });
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StorageError::Busy.into());
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StorageError::WriterStopped.into());
            }
        }
        wait.await
            .map_err(|_| E::from(StorageError::WriterStopped))?
    }

    /// Runs `f` on the writer thread, blocking the calling (non-async) thread.
    pub fn run_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        let (done, wait) = std::sync::mpsc::channel();
        let job: Job<S> = Box::new(move |state| {
            let _ = done.send(f(state));
        });
        self.tx
            .send(job)
            .map_err(|_| E::from(StorageError::WriterStopped))?;
        wait.recv()
            .map_err(|_| E::from(StorageError::WriterStopped))?
    }

    /// Jobs waiting in the queue right now.
    pub fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S: IdleWork + Send + 'static> Writer<S> {
    /// Runs every job queued so far, then stops the thread and returns the state (so the caller
    /// can close the database). Other handles may still exist: their later jobs fail with
    /// `WriterStopped` instead of running against a closing database. `None` if another caller
    /// already shut it down.
    pub fn shutdown(self) -> Option<S> {
        let stop = self.stop.clone();
        // The marker is itself a job, so everything queued before it still runs.
        let marker: Job<S> =
            Box::new(move |_| stop.store(true, std::sync::atomic::Ordering::Release));
        let _ = self.tx.send(marker);
        let handle = self.thread.lock().take()?;
        handle.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl IdleWork for u32 {}
    impl IdleWork for Vec<u32> {}

    /// Counts idle runs while asking for one after each job.
    struct Upkeep {
        jobs: u32,
        idle_runs: u32,
        due: bool,
    }

    impl IdleWork for Upkeep {
        fn idle_after(&self) -> Option<Duration> {
            self.due.then_some(Duration::from_millis(5))
        }
        fn idle(&mut self) {
            self.idle_runs += 1;
            self.due = false;
        }
    }

    #[tokio::test]
    async fn idle_work_runs_once_the_queue_stays_empty() {
        let w = Writer::start(
            Upkeep {
                jobs: 0,
                idle_runs: 0,
                due: false,
            },
            8,
        )
        .unwrap();
        for _ in 0..3 {
            w.run(None, |u: &mut Upkeep| {
                u.jobs += 1;
                u.due = true;
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap();
        }
        // Wait for the condition (the idle run after the last job), bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = w
                .run(None, |u: &mut Upkeep| Ok::<_, StorageError>(!u.due))
                .await
                .unwrap();
            if done || Instant::now() > deadline {
                break;
            }
            // Longer than the idle delay: the probes must not keep the writer busy.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let u = w.shutdown().unwrap();
        assert_eq!(u.jobs, 3);
        assert!(!u.due, "the idle work ran");
        assert!((1..=3).contains(&u.idle_runs), "{}", u.idle_runs);
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread() {
        let w = Writer::start(Vec::<u32>::new(), 8).unwrap();
        for i in 0..5 {
            w.run(None, move |v: &mut Vec<u32>| {
                v.push(i);
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap();
        }
        let v = w.shutdown().unwrap();
        assert_eq!(v, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn shutdown_drains_the_queue_even_while_other_handles_live() {
        let w = Writer::start(0u32, 8).unwrap();
        let other = w.clone();
        other
            .run(None, |n: &mut u32| {
                *n += 1;
                Ok::<_, StorageError>(())
            })
            .await
            .unwrap();
        assert_eq!(w.shutdown(), Some(1));
        let late = other.run(None, |_| Ok::<_, StorageError>(())).await;
        assert!(matches!(late, Err(StorageError::WriterStopped)), "{late:?}");
    }

    #[tokio::test]
    async fn expired_deadline_is_not_executed() {
        let w = Writer::start(0u32, 8).unwrap();
        let past = Instant::now() - Duration::from_millis(1);
        let r = w
            .run(Some(past), |n: &mut u32| {
                *n += 1;
                Ok::<_, StorageError>(())
            })
            .await;
        assert!(matches!(r, Err(StorageError::DeadlineExceeded)));
        assert_eq!(w.shutdown(), Some(0));
    }

    #[tokio::test]
    async fn full_queue_is_busy() {
        let w = Writer::start((), 1).unwrap();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = w.clone();
        let first = tokio::spawn(async move {
            blocker
                .run(None, move |_| {
                    started_tx.send(()).unwrap();
                    let _ = gate.recv();
                    Ok::<_, StorageError>(())
                })
                .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // The writer is busy; one job fits in the queue, the next does not.
        assert!(w.tx.try_send(Box::new(|_| {})).is_ok());
        let third = w.run(None, |_| Ok::<_, StorageError>(())).await;
        assert!(matches!(third, Err(StorageError::Busy)), "{third:?}");
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
    }
}
