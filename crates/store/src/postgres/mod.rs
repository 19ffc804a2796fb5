//! The PostgreSQL backend: one or several Tasklane servers on one database.
//!
//! It has the SQLite backend's shape. Each node has one writer thread that group-commits: it takes
//! what is queued, runs every command in its own SAVEPOINT of one transaction and commits once.
//! Reads run on a pool of connections, each read in one `REPEATABLE READ READ ONLY` transaction
//! (a consistent snapshot).
//!
//! Across nodes, every write transaction begins by taking one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]), so the writes of the whole cluster run one transaction at a time, as one
//! SQLite server's do. That single decision is what keeps the rules in `tasklane-core` (load,
//! check, write) exact with several nodes: two nodes cannot both pass the one-open-run check or a
//! lease fence, blockers completed on two nodes see each other, each expired lease is recovered
//! once, and event sequences are handed out in commit order, so a reader that saw event N never
//! later finds an N-1 (see `ARCHITECTURE.md`). Reads do not take the lock and scale with nodes.
//!
//! Commits that appended events `NOTIFY` the other nodes ([`listener`]), which wakes their SSE
//! streams and parked claims.

mod background;
mod conn;
mod counters;
mod listener;
mod monitor;
mod nodes;
mod observe;
mod queue_vacuum;
mod read;
mod rows;
mod schema;
mod test_clock;
mod tls;
mod write;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::store::ReadStore;
use tasklane_core::{Error, Result};
use tokio::sync::{watch, Semaphore};

pub(crate) use self::conn::{Conn, Later, Params, UnsentId};
use self::writer::Writer;
use crate::known_rows::KnownRows;
use crate::read_permits::run_read;
use crate::task_marks::TaskMarks;
use crate::write_queue::{store_entry_points, Backend, CommandDb, WriteQueue};

pub use self::schema::SCHEMA_VERSION;

/// The advisory lock every write transaction holds until it ends (`pg_advisory_xact_lock`).
pub(crate) const WRITE_LOCK: i64 = 0x7461_736b_6c61_6e01; // "tasklan" 1
/// The advisory lock held while migrating, so nodes starting at once migrate one after another.
pub(crate) const MIGRATE_LOCK: i64 = 0x7461_736b_6c61_6e02;
/// The channel commits notify on.
pub(crate) const CHANNEL: &str = "tasklane_commits";

/// Connection settings and tuning of the PostgreSQL backend.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?sslmode=...`.
    pub url: String,
    /// Connections for reads (at most this many reads run at once). The node also holds one
    /// connection for its writer, one for its listener and one for the claim queue's vacuum.
    pub pool_size: usize,
    /// How long to wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Statements running longer are canceled (`None` or zero: no limit).
    pub statement_timeout: Option<Duration>,
    /// A CA certificate file (PEM) trusted for TLS besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Writes waiting for the writer beyond this many are refused with `Unavailable`.
    pub max_queued_writes: usize,
    /// Likewise for the request bytes those writes hold.
    pub max_queued_bytes: usize,
    /// Most commands committed by one transaction.
    pub max_batch: usize,
    /// How long the writer keeps looking for the database's next answer before it sleeps.
    pub writer_spin: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            ca_file: None,
            max_queued_writes: 10_000,
            max_queued_bytes: 64 << 20,
            max_batch: 256,
            writer_spin: Duration::from_micros(200),
        }
    }
}

/// One connection viewed as a store: a reader's snapshot or the writer's transaction.
pub(crate) struct Db<'c> {
    pub(crate) conn: &'c mut Conn,
    /// Highest sequence appended by the current command; published once the batch committed.
    pub(crate) appended: Option<i64>,
    /// Counter changes of the current command, applied by the writer if its savepoint is kept.
    pub(crate) deltas: CounterDeltas,
    /// Activity and sequence raises the current command owes its tasks (`crate::task_marks`).
    pub(crate) marks: TaskMarks,
    /// The command's task UPDATEs, with the columns each wrote, while they may still be unsent:
    /// the task's marks join the UPDATE instead of following it (`write.rs`).
    pub(crate) task_updates: Vec<TaskUpdate>,
    /// What an open item (`WriteStore::begin_item`) restores if it is rolled back.
    pub(crate) item_start: Option<ItemStart>,
    /// The rows the writer's current command has read or written (`None` on a reader).
    pub(crate) known: Option<KnownRows>,
    /// Where the writer's transaction is in the event sequence.
    pub(crate) sequence: Sequence,
    /// The command's deferred writes are answered with the batch's COMMIT rather than when it
    /// ends: it is the batch's last command (see `writer.rs`).
    pub(crate) answered_by_commit: bool,
    /// The batch runs bare (see `writer::run_batch`): any failure after a write runs it again,
    /// each command in its own savepoint, so nothing here waits for a write's answer to know
    /// whether to keep it.
    pub(crate) bare: bool,
    /// The log names its events by sequence (`schema::events_named_by_sequence`).
    pub(crate) events_by_sequence: bool,
}

/// A task UPDATE the current command queued: the task, the statement, the columns it writes.
pub(crate) struct TaskUpdate {
    pub(crate) task_id: String,
    pub(crate) statement: UnsentId,
    pub(crate) changed: Vec<(&'static str, usize)>,
}

/// What an open item restores if it is rolled back.
pub(crate) struct ItemStart {
    pub(crate) appended: Option<i64>,
    pub(crate) deltas: CounterDeltas,
    pub(crate) sequence: Sequence,
}

/// The event sequence as the writer's transaction sees it. The transaction reads the last value
/// handed out once, under the cluster's write lock (so nobody else draws from it until COMMIT),
/// and numbers its events from there itself: appending an event needs no answer from the
/// database, and a rolled-back savepoint gives its numbers back by restoring this value. The
/// COMMIT moves `task_events_sequence` to the last value kept.
#[derive(Clone, Debug)]
pub(crate) enum Sequence {
    /// The last value handed out, once the deferred read that fetched it has been answered.
    Unread(Later),
    /// The last value handed out (or kept back for this transaction).
    At(i64),
}

impl<'c> Db<'c> {
    fn new(conn: &'c mut Conn) -> Self {
        Db {
            conn,
            appended: None,
            deltas: CounterDeltas::default(),
            marks: TaskMarks::default(),
            task_updates: Vec::new(),
            item_start: None,
            known: None,
            sequence: Sequence::At(0),
            answered_by_commit: false,
            bare: false,
            events_by_sequence: false,
        }
    }

    /// The view of one command of the writer, `sequence` where the batch is in the event
    /// sequence.
    fn for_command(
        conn: &'c mut Conn,
        sequence: Sequence,
        (answered_by_commit, bare): (bool, bool),
        events_by_sequence: bool,
    ) -> Self {
        Db {
            known: Some(KnownRows::default()),
            sequence,
            answered_by_commit,
            bare,
            events_by_sequence,
            ..Db::new(conn)
        }
    }

    /// The sequence of the next event this transaction appends.
    pub(crate) fn next_sequence(&mut self) -> Result<i64> {
        let last = match &self.sequence {
            Sequence::At(last) => *last,
            Sequence::Unread(slot) => {
                let slot = slot.clone();
                let read = || *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                // Usually answered already, with the command's first read: a flush would cost a
                // round trip for nothing.
                if read().is_none() {
                    self.conn.flush()?;
                }
                read().ok_or_else(|| {
                    Error::Storage("the event sequence could not be read".to_string())
                })?
            }
        };
        self.sequence = Sequence::At(last + 1);
        Ok(last + 1)
    }
}

impl CommandDb for Db<'_> {
    fn item_open(&self) -> bool {
        self.item_start.is_some()
    }

    /// A command's deferred writes are answered before its savepoint is kept, so that an error
    /// in one fails that command alone. The batch's last command saves that round trip: its
    /// writes go with the COMMIT, which the writer retries without it if one of them fails. A
    /// command of a bare batch has no savepoint to keep: its writes go with the next command's
    /// first statement that waits, and an error among them runs the batch again.
    fn finish_command(&mut self) -> Result<()> {
        self.flush_task_marks()?;
        if self.answered_by_commit || self.bare {
            return Ok(());
        }
        self.conn.flush()
    }
}

impl Backend for PgStore {
    type Db<'c> = Db<'c>;
    const WRITER_STOPPED: &'static str = "the writer stopped";
    const WRITER_PANICKED: &'static str = "postgres writer thread panicked";
}

/// The PostgreSQL store of one node. Cheap to clone; clones share the writer and the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    opts: PgOptions,
    /// The writer's queue and thread.
    queue: WriteQueue<PgStore>,
    wakes: Arc<listener::Wakes>,
    readers: Mutex<Vec<Conn>>,
    read_permits: Arc<Semaphore>,
    /// The listener and the claim queue's vacuum, stopped at shutdown.
    background: Mutex<Vec<background::Background>>,
    /// Hears the service's test time from the writer (test-clock mode only).
    test_clock: Arc<test_clock::Follower>,
}

impl PgStore {
    /// Connects, migrates (one node at a time) and starts the writer and the listener. Refuses a
    /// database whose schema is newer than this binary knows.
    pub fn open(opts: PgOptions) -> Result<PgStore> {
        let mut conn = Conn::connect(&opts)?;
        schema::migrate(&mut conn)?;
        let started_at =
            tasklane_core::time::Clock::now(&tasklane_core::time::SystemClock::default());
        let last_seq = schema::last_sequence(&mut conn)?;
        let events_by_sequence = schema::events_named_by_sequence(&mut conn)?;

        let (queue, writer_queue) = WriteQueue::new(
            opts.max_queued_writes,
            opts.max_queued_bytes,
            opts.max_batch,
            last_seq,
        );
        let node = listener::new_node_id();
        let wakes = Arc::new(listener::Wakes {
            writer: queue.shared().clone(),
            remote_commits: watch::channel(0).0,
            node,
            started_at,
        });
        let test_clock = Arc::new(test_clock::Follower::default());
        let writer = Writer {
            conn: Some(conn),
            test_clock: test_clock.clone(),
            opts: opts.clone(),
            queue: writer_queue,
            last_batch: std::time::Instant::now(),
            events_by_sequence,
            node,
        };
        let thread = std::thread::Builder::new()
            .name("tasklane-pg-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| Error::Storage(format!("cannot start the writer: {e}")))?;
        queue.writer_started(thread);
        let background = vec![
            listener::start(opts.clone(), wakes.clone())?,
            queue_vacuum::start(opts.clone())?,
        ];
        Ok(PgStore {
            inner: Arc::new(Inner {
                read_permits: Arc::new(Semaphore::new(opts.pool_size.max(1))),
                opts,
                queue,
                wakes,
                readers: Mutex::new(Vec::new()),
                background: Mutex::new(background),
                test_clock,
            }),
        })
    }

    /// Runs `f` on a pooled connection, in `spawn_blocking`, inside one read-only snapshot.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: Fn(&mut dyn ReadStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.read_db(move |db: &mut Db<'_>| f(db)).await
    }

    pub(crate) async fn read_db<R, F>(&self, f: F) -> Result<R>
    where
        F: Fn(&mut Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        run_read(&self.inner.read_permits, move || inner.with_reader(f)).await
    }

    /// Bumped whenever another node (or the listener's safety poll) reports commits: work may
    /// have become claimable there.
    pub fn remote_commits(&self) -> watch::Receiver<u64> {
        self.inner.wakes.remote_commits.subscribe()
    }

    /// Whether the database answers a read and carries the schema this binary migrates to.
    pub async fn check_ready(&self) -> Result<()> {
        let version = self.read_db(|db| schema::version(db.conn)).await?;
        if version != SCHEMA_VERSION {
            return Err(Error::Unavailable(format!(
                "database schema version {version}, expected {SCHEMA_VERSION}"
            )));
        }
        Ok(())
    }
}

store_entry_points!(PgStore, Db);

impl Inner {
    fn shutdown(&self) {
        self.queue.shutdown();
        let background = std::mem::take(
            &mut *self
                .background
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        background
            .into_iter()
            .for_each(background::Background::stop);
        // Closing a connection blocks on the client's own runtime, which must not happen on a
        // thread that drives async tasks (the server shuts the store down from one).
        let readers = std::mem::take(
            &mut *self
                .readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !readers.is_empty() {
            let _ = std::thread::spawn(move || drop(readers)).join();
        }
    }

    /// Lends a pooled connection (connecting one if the pool is empty), runs `f` in a read-only
    /// snapshot, and takes the connection back unless it broke. A pooled connection may have
    /// been lost while it sat in the pool (the database restarted): a read that finds it so runs
    /// once more on a new connection, so a restart costs the reads in flight, not the next ones.
    fn with_reader<R>(&self, f: impl Fn(&mut Db<'_>) -> Result<R>) -> Result<R> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        if let Some(conn) = pooled {
            match self.read_on(conn, &f) {
                (Err(_), true) => {} // the connection was lost: try a new one
                (done, _) => return done,
            }
        }
        self.read_on(Conn::connect(&self.opts)?, &f).0
    }

    /// Runs `f` on `conn`, which goes back to the pool unless it broke; the flag says whether it
    /// was found lost.
    fn read_on<R>(
        &self,
        mut conn: Conn,
        f: &impl Fn(&mut Db<'_>) -> Result<R>,
    ) -> (Result<R>, bool) {
        let result = conn
            .batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .and_then(|()| {
                let mut db = Db::new(&mut conn);
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut db)))
                    .unwrap_or_else(|_| Err(Error::Storage("internal panic".to_string())))
            });
        let ended = conn.batch("ROLLBACK");
        if conn.is_closed() {
            return (result, true);
        }
        if ended.is_ok() {
            self.readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
        (result, false)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
