//! The read pool: connections cloned from the writer's database, used on blocking threads, behind
//! a gate. A restore closes the gate: it waits for running reads to finish, drops every pooled
//! connection (DuckDB closes a file only when its last connection goes), and reopens it with the
//! new database. Reads arriving meanwhile wait a bounded time, then get `Unavailable` — they
//! never see a mixture of old and new data.
//!
//! The pool also owns the data *generation*, a seqlock over the committed state that lets
//! callers cache what they read: the writer holds a [`WriteFence`] from BEGIN until after
//! COMMIT (a suspension holds one too), making the generation odd while a change is in flight
//! and moving it on when the fence drops. A value read from DuckDB after observing an even
//! generation `g` is exactly the committed state for as long as [`ReadPool::generation`] is
//! still `Some(g)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Connection;
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use super::StorageError;

struct Conns {
    template: Mutex<Connection>,
    idle: Mutex<Vec<Connection>>,
}

/// Read connections behind the restore gate.
pub struct ReadPool {
    gate: RwLock<Option<Conns>>,
    wait: Duration,
    max_idle: usize,
    generation: AtomicU64,
}

impl ReadPool {
    /// A pool cloning connections from `template`; reads wait at most `wait` while the gate is
    /// closed.
    pub fn new(template: Connection, wait: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            gate: RwLock::new(Some(Conns {
                template: Mutex::new(template),
                idle: Mutex::new(Vec::new()),
            })),
            wait,
            max_idle,
            generation: AtomicU64::new(0),
        })
    }

    /// Runs `f` with a read connection on a blocking thread, inside one read transaction so
    /// every query of `f` sees the same committed state.
    pub async fn read<T, E, F>(self: &Arc<Self>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.read_blocking(f))
            .await
            .map_err(|_| E::from(StorageError::ReadTaskFailed))?
    }

    /// Runs `f` with a read connection on the current (blocking) thread, in one transaction.
    pub fn read_blocking<T, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let gate = self
            .gate
            .try_read_for(self.wait)
            .ok_or(StorageError::Unavailable {
                retry_after: Duration::from_millis(500),
            })?;
        let conns = gate.as_ref().ok_or(StorageError::Unavailable {
            retry_after: Duration::from_secs(1),
        })?;
        let popped = conns.idle.lock().pop();
        let conn = match popped {
            Some(c) => c,
            None => conns
                .template
                .lock()
                .try_clone()
                .map_err(StorageError::from)?,
        };
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(StorageError::from)?;
        let out = f(&conn);
        // Read-only: rolling back releases the snapshot and cannot lose anything.
        if conn.execute_batch("ROLLBACK").is_err() {
            return out; // a broken connection is not returned to the pool
        }
        let mut idle = conns.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        out
    }

    /// Closes the gate: waits for running reads, then drops every read connection. Reads wait
    /// (bounded) until the returned guard is resumed or dropped.
    pub fn suspend(&self) -> Suspended<'_> {
        let fence = self.write_fence();
        let mut guard = self.gate.write();
        guard.take();
        Suspended {
            guard,
            _fence: fence,
        }
    }

    /// The data generation if no change is in flight (see the module docs).
    pub fn generation(&self) -> Option<u64> {
        let g = self.generation.load(Ordering::Acquire);
        g.is_multiple_of(2).then_some(g)
    }

    /// Marks a change in flight until the fence drops. Only the writer thread takes fences, one
    /// at a time (they do not nest).
    pub fn write_fence(&self) -> WriteFence<'_> {
        let before = self.generation.fetch_add(1, Ordering::AcqRel);
        debug_assert!(before.is_multiple_of(2), "write fences do not nest");
        WriteFence(&self.generation)
    }
}

/// A change in flight: cached reads are bypassed until it drops (after COMMIT or resume).
pub struct WriteFence<'a>(&'a AtomicU64);

impl Drop for WriteFence<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The closed gate of a suspended pool.
pub struct Suspended<'a> {
    // Field order matters: the gate reopens before the fence moves the generation on.
    guard: RwLockWriteGuard<'a, Option<Conns>>,
    _fence: WriteFence<'a>,
}

impl Suspended<'_> {
    /// Leaves the gate closed: reads answer UNAVAILABLE until the database is reopened by a
    /// restart (the database could not be reopened).
    pub fn keep_closed(self) {}

    /// Reopens the gate with connections cloned from `template`.
    pub fn resume(mut self, template: Connection) {
        *self.guard = Some(Conns {
            template: Mutex::new(template),
            idle: Mutex::new(Vec::new()),
        });
    }
}
