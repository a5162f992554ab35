//! The read pool: connections cloned from the writer's database, used on blocking threads, behind
//! a gate. A restore closes the gate: it waits for running reads to finish, drops every pooled
//! connection (DuckDB closes a file only when its last connection goes), and reopens it with the
//! new database. Reads arriving meanwhile wait a bounded time, then get `Unavailable` — they
//! never see a mixture of old and new data.

use std::sync::Arc;
use std::time::Duration;

use duckdb::Connection;
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
        let mut guard = self.gate.write();
        guard.take();
        Suspended { guard }
    }
}

/// The closed gate of a suspended pool.
pub struct Suspended<'a> {
    guard: RwLockWriteGuard<'a, Option<Conns>>,
}

impl Suspended<'_> {
    /// Reopens the gate with connections cloned from `template`.
    pub fn resume(mut self, template: Connection) {
        *self.guard = Some(Conns {
            template: Mutex::new(template),
            idle: Mutex::new(Vec::new()),
        });
    }
}
