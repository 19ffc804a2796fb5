//! Tasklane's storage backends. Each backend implements the primitives of
//! [`tasklane_core::store`]; no business rule lives here, so the rules in `tasklane-core` run
//! unchanged on every backend. [`Store`] is the handle the server holds, whichever backend the
//! `--database` URL chose.

#[cfg(test)]
mod conformance;
mod counter_deltas;
mod known_rows;
pub mod monitor;
mod observe_common;
pub mod postgres;
mod read_permits;
mod rows_common;
pub mod sqlite;
mod task_marks;
mod write_queue;

use tasklane_core::observe::{ObserveStore, ObserveWriteStore};
use tasklane_core::store::{ReadStore, WriteStore};
use tasklane_core::time::Ts;
use tasklane_core::Result;
use tokio::sync::watch;

pub use monitor::QueueGauges;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::{SqliteStore, StoreOptions};

/// The backend a server runs on. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Store {
        Store::Sqlite(store)
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Store {
        Store::Postgres(store)
    }
}

impl Store {
    /// [`Store::write_sized`] for a command that holds no request data.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn WriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_sized(0, f).await
    }

    /// Runs `f` as one write transaction (or a savepoint of a group commit) and resolves once
    /// it is durable. `bytes` is the request data the command holds while it waits (see
    /// [`SqliteStore::write_sized`]).
    pub async fn write_sized<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn WriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.write_sized(bytes, f).await,
            Store::Postgres(s) => s.write_sized(bytes, f).await,
        }
    }

    /// [`Store::write_sized`] for a closure that may run more than once (see
    /// `SqliteStore::write_repeatable`), which lets the SQLite writer spare it a savepoint.
    pub async fn write_repeatable<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: Fn(&mut dyn WriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.write_repeatable(bytes, f).await,
            Store::Postgres(s) => s.write_repeatable(bytes, f).await,
        }
    }

    /// Runs `f` on a consistent read-only snapshot; never waits for writers. `f` may run twice:
    /// a read that finds its pooled connection lost is tried once more on a new one.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: Fn(&mut dyn ReadStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.read(f).await,
            Store::Postgres(s) => s.read(f).await,
        }
    }

    /// [`Store::read`] for the observe primitives.
    pub async fn read_observe<R, F>(&self, f: F) -> Result<R>
    where
        F: Fn(&mut dyn ObserveStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.read_observe(f).await,
            Store::Postgres(s) => s.read_observe(f).await,
        }
    }

    pub async fn write_observe<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn ObserveWriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Store::Sqlite(s) => s.write_observe(f).await,
            Store::Postgres(s) => s.write_observe(f).await,
        }
    }

    /// Receives the highest committed event sequence (of every node sharing the database).
    pub fn committed_sequence(&self) -> watch::Receiver<i64> {
        match self {
            Store::Sqlite(s) => s.committed_sequence(),
            Store::Postgres(s) => s.committed_sequence(),
        }
    }

    /// Bumped when other servers sharing the database commit; `None` for a backend that has
    /// only one server.
    pub fn remote_commits(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(s) => Some(s.remote_commits()),
        }
    }

    /// When the service started: this server's own start on SQLite (one server per file); on
    /// PostgreSQL the start of the earliest server still running, so the dashboard's
    /// `forced_stops` is one figure for the whole service.
    pub async fn service_started_at(&self, this_server: Ts) -> Result<Ts> {
        match self {
            Store::Sqlite(_) => Ok(this_server),
            Store::Postgres(s) => s.service_started_at(this_server).await,
        }
    }

    /// The test time of the service sharing this database (test-clock mode): `None` on a backend
    /// with one server per database, whose clock is its own, and on PostgreSQL until a server on
    /// the test clock has started.
    pub async fn test_clock(&self) -> Result<Option<Ts>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.test_clock().await,
        }
    }

    /// Moves the service's test time `micros` past the later of itself and `floor`, and returns
    /// it once durable; `None` on a backend with one server per database, where the server's own
    /// clock is the service's. Advances from several servers add up.
    pub async fn advance_test_clock(&self, floor: Ts, micros: i64) -> Result<Option<Ts>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.advance_test_clock(floor, micros).await.map(Some),
        }
    }

    /// Passes the service's test time to `report` at the start of every write transaction,
    /// before its commands run (PostgreSQL; nothing on a backend with one server per database).
    /// For servers on the test clock only: it costs a statement per transaction.
    pub fn follow_test_clock(&self, report: impl Fn(Ts) + Send + Sync + 'static) {
        match self {
            Store::Sqlite(_) => {}
            Store::Postgres(s) => s.follow_test_clock(report),
        }
    }

    /// Whether the database answers and carries the schema this binary migrates to.
    pub async fn check_ready(&self) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.check_ready().await,
            Store::Postgres(s) => s.check_ready().await,
        }
    }

    /// The queue and lease figures of one metrics scrape.
    pub async fn queue_gauges(&self) -> Result<QueueGauges> {
        match self {
            Store::Sqlite(s) => s.queue_gauges().await,
            Store::Postgres(s) => s.queue_gauges().await,
        }
    }

    /// Size of SQLite's write-ahead log; `None` on a backend without one.
    pub fn wal_bytes(&self) -> Option<u64> {
        match self {
            Store::Sqlite(s) => Some(s.wal_bytes()),
            Store::Postgres(_) => None,
        }
    }

    /// Writes waiting for this server's writer.
    pub fn queued_writes(&self) -> usize {
        match self {
            Store::Sqlite(s) => s.queued_writes(),
            Store::Postgres(s) => s.queued_writes(),
        }
    }

    /// Transactions committed by this server's writer since open.
    pub fn commits(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.commits(),
            Store::Postgres(s) => s.commits(),
        }
    }

    /// Stops the writer after it has drained what is queued. Idempotent.
    pub fn shutdown(&self) {
        match self {
            Store::Sqlite(s) => s.shutdown(),
            Store::Postgres(s) => s.shutdown(),
        }
    }
}
