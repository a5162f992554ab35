//! The rule that lets a background thread read the live database file while the writer is
//! idle: DuckDB writes that file only from the write connection (a checkpoint, a commit's
//! automatic checkpoint, optimistic writes of a large insert), so every use of the write
//! connection first stops the background reader ([`ReadGate::stop`]): it is cancelled and
//! waited for (a read stops within one chunk). A caller that wants the read to finish instead
//! — a delete adopting it as its own pre-delete capture, joined before its COMMIT — takes it
//! out of the gate first ([`ReadGate::adopt`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One background read of the live file.
#[derive(Debug, Default)]
pub struct ReadTicket {
    cancel: AtomicBool,
    finished: Mutex<bool>,
    done: Condvar,
}

impl ReadTicket {
    /// Whether the reader must stop now (checked between chunks).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Asks the reader to stop (its result will not be used).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The reader no longer touches the file (read complete, failed or cancelled). Idempotent.
    pub fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.done.notify_all();
    }

    /// Blocks until [`finish`](Self::finish).
    pub fn wait(&self) {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        while !*f {
            f = self.done.wait(f).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the read is over.
    pub fn is_finished(&self) -> bool {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Finishes its ticket when dropped, so a reader that fails or panics still lets the writer on.
#[derive(Debug)]
pub struct Reading(pub Arc<ReadTicket>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The background reader of the live file, if any (at most one).
#[derive(Debug, Default)]
pub struct ReadGate {
    any: AtomicBool,
    current: Mutex<Option<Arc<ReadTicket>>>,
}

impl ReadGate {
    /// Registers a new background read (stopping any earlier one first).
    pub fn open(&self) -> Arc<ReadTicket> {
        self.stop();
        let ticket = Arc::new(ReadTicket::default());
        *self.slot() = Some(Arc::clone(&ticket));
        self.any.store(true, Ordering::Release);
        ticket
    }

    /// Cancels the registered read, unless it is over, and waits until it no longer touches
    /// the file. One atomic load when there is none.
    pub fn stop(&self) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let taken = self.slot().take();
        self.any.store(false, Ordering::Release);
        if let Some(t) = taken.filter(|t| !t.is_finished()) {
            t.cancel();
            t.wait();
        }
    }

    /// Takes `ticket` out of the gate without cancelling it: the caller now guarantees the
    /// file does not change until the read is over. False when it is no longer registered
    /// (stopped, or replaced by a newer read).
    pub fn adopt(&self, ticket: &Arc<ReadTicket>) -> bool {
        let mut slot = self.slot();
        match slot.as_ref() {
            Some(t) if Arc::ptr_eq(t, ticket) => {
                *slot = None;
                self.any.store(false, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<ReadTicket>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stop_cancels_and_waits_for_the_reader() {
        let gate = ReadGate::default();
        let ticket = gate.open();
        let reader = std::thread::spawn(move || {
            let _reading = Reading(Arc::clone(&ticket));
            while !ticket.cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Arc::clone(&ticket)
        });
        gate.stop();
        let ticket = reader.join().unwrap();
        assert!(ticket.cancelled() && ticket.is_finished());
        // Nothing registered: stop returns at once.
        gate.stop();
    }

    #[test]
    fn a_finished_read_is_not_cancelled() {
        let gate = ReadGate::default();
        let ticket = gate.open();
        ticket.finish();
        gate.stop();
        assert!(!ticket.cancelled());
    }

    #[test]
    fn an_adopted_read_is_not_cancelled() {
        let gate = ReadGate::default();
        let ticket = gate.open();
        assert!(gate.adopt(&ticket));
        gate.stop();
        assert!(!ticket.cancelled());
        assert!(!gate.adopt(&ticket), "adopted once");
        let newer = gate.open();
        assert!(!gate.adopt(&ticket), "a newer read replaced it");
        let reader = {
            let newer = Arc::clone(&newer);
            std::thread::spawn(move || {
                let _reading = Reading(Arc::clone(&newer));
                while !newer.cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        gate.stop();
        reader.join().unwrap();
        assert!(newer.cancelled() && newer.is_finished());
    }
}
