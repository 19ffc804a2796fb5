//! The write queue both backends share: the bounded channel from the store handle to the
//! backend's single writer thread, its accounting (commands and request bytes queued), the
//! commands it carries, and what the writer publishes once a batch has committed.
//!
//! A backend supplies what differs through [`Backend`] (its connection view, `Db`, and the words
//! of its messages) and [`CommandDb`] (what a command must leave done before its savepoint is
//! kept); its writer runs the SQL (transactions, savepoints, counters, commit). Everything here is
//! generic, so each backend gets its own monomorphized copy: no dispatch per command beyond the
//! `Box<dyn Command>` that lets commands with different result types share one queue.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use tasklane_core::{Error, Result};
use tokio::sync::{oneshot, watch};

/// What a backend's writer runs its commands on, and the words of its messages.
pub(crate) trait Backend: 'static {
    /// The writer's connection viewed as a store while one command runs.
    type Db<'c>: CommandDb;
    /// The answer to a write whose writer is gone.
    const WRITER_STOPPED: &'static str;
    /// Logged when joining the writer thread finds that it panicked.
    const WRITER_PANICKED: &'static str;
}

/// The state of one command's run on a backend's `Db` that the queue checks before the command's
/// savepoint is kept.
pub(crate) trait CommandDb {
    /// Whether an item (`WriteStore::begin_item`) is still open.
    fn item_open(&self) -> bool;
    /// Writes what the command still owes, inside its savepoint (SQLite: its task marks).
    fn finish_command(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A queued write, type-erased so commands with different result types share one queue.
pub(crate) trait Command<B: Backend>: Send {
    /// Runs the command's closure; returns whether it succeeded (its savepoint is kept). A
    /// [repeatable](Command::repeatable) command may be run again; its last run's result counts.
    fn run(&mut self, db: &mut B::Db<'_>) -> bool;
    /// Whether the command may run more than once. A writer may run such commands without a
    /// savepoint of their own: if one fails after writing, the writer rolls the transaction
    /// back and runs them all again, each in its own savepoint.
    fn repeatable(&self) -> bool;
    /// Answers the caller. `batch_failure` is set when the batch's transaction was lost, which
    /// undoes this command too, whatever it returned.
    fn reply(self: Box<Self>, batch_failure: Option<&str>);
    /// Its savepoint was rolled back after it returned (a write it deferred failed when the
    /// batch committed): it answers `err` instead.
    fn undo(&mut self, err: Error);
    /// The request bytes the command holds while it waits (see `SqliteStore::write_sized`).
    fn bytes(&self) -> usize;
}

/// A command as it travels through the queue.
pub(crate) type BoxedCommand<B> = Box<dyn Command<B>>;

/// The closure of a command: one that runs once, or one that may run again.
pub(crate) trait Work<B: Backend, R>: Send {
    const REPEATABLE: bool;
    /// Runs the closure; `None` if it has already run and cannot run again.
    fn call(&mut self, db: &mut B::Db<'_>) -> Option<Result<R>>;
}

/// A closure that runs at most once.
pub(crate) struct Once<F>(Option<F>);

impl<B, F, R> Work<B, R> for Once<F>
where
    B: Backend,
    F: FnOnce(&mut B::Db<'_>) -> Result<R> + Send,
{
    const REPEATABLE: bool = false;
    fn call(&mut self, db: &mut B::Db<'_>) -> Option<Result<R>> {
        self.0.take().map(|f| f(db))
    }
}

/// A closure that may run again: it keeps nothing from one run to the next but its result.
pub(crate) struct Repeatable<F>(F);

impl<B, F, R> Work<B, R> for Repeatable<F>
where
    B: Backend,
    F: Fn(&mut B::Db<'_>) -> Result<R> + Send,
{
    const REPEATABLE: bool = true;
    fn call(&mut self, db: &mut B::Db<'_>) -> Option<Result<R>> {
        Some((self.0)(db))
    }
}

pub(crate) struct Job<W, R> {
    work: W,
    result: Option<Result<R>>,
    tx: oneshot::Sender<Result<R>>,
    bytes: usize,
}

impl<W, R> Job<W, R> {
    pub(crate) fn new(work: W, tx: oneshot::Sender<Result<R>>, bytes: usize) -> Self {
        Job {
            work,
            result: None,
            tx,
            bytes,
        }
    }
}

impl<B, W, R> Command<B> for Job<W, R>
where
    B: Backend,
    W: Work<B, R>,
    R: Send,
{
    fn run(&mut self, db: &mut B::Db<'_>) -> bool {
        // Nobody waits for this answer any more (the client went away, e.g. a long-polling
        // claimer that disconnected): doing the work would change state nobody learns about.
        if self.tx.is_closed() {
            self.result = Some(Err(Error::Unavailable("the caller went away".to_string())));
            return false;
        }
        // A panic must not take the writer thread (and every later write) down with it; the
        // command's savepoint is rolled back like any other failure. What the command still owes
        // (SQLite: its pending task marks) is written inside its savepoint, before it is kept. A
        // command that left an item open has its counter changes split between the item and the
        // command: it fails.
        let work = &mut self.work;
        let result = catch_unwind(AssertUnwindSafe(|| {
            work.call(db).map(|result| {
                result.and_then(|r| {
                    if db.item_open() {
                        return Err(Error::Storage("a command ended with an item open".into()));
                    }
                    db.finish_command().map(|()| r)
                })
            })
        }))
        .unwrap_or_else(|_| Some(Err(Error::Storage("internal panic".to_string()))));
        let Some(result) = result else {
            return false;
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn repeatable(&self) -> bool {
        W::REPEATABLE
    }

    fn reply(self: Box<Self>, batch_failure: Option<&str>) {
        let result = match batch_failure {
            Some(msg) => Err(Error::Unavailable(msg.to_string())),
            None => self
                .result
                .unwrap_or_else(|| Err(Error::Unavailable("write was not run".to_string()))),
        };
        // The caller may have gone away (request canceled); its write still stands.
        let _ = self.tx.send(result);
    }

    fn undo(&mut self, err: Error) {
        self.result = Some(Err(err));
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the writer shares with the store handle.
pub(crate) struct WriterShared {
    /// Commands sent but not yet taken by the writer.
    pub(crate) queued: AtomicUsize,
    /// Their bytes, as declared by their senders.
    pub(crate) queued_bytes: AtomicUsize,
    /// Transactions committed (observability, and tests that check batching).
    pub(crate) commits: AtomicU64,
    pub(crate) committed_seq: watch::Sender<i64>,
}

impl WriterShared {
    /// Raises the committed-sequence watch to `seq` (never lowers it).
    pub(crate) fn publish(&self, seq: i64) {
        self.committed_seq.send_if_modified(|current| {
            let raise = seq > *current;
            if raise {
                *current = seq;
            }
            raise
        });
    }

    /// Records a batch whose COMMIT (begun at `committing`) has returned, and publishes the
    /// highest sequence it appended. Called before anyone is answered, so a client that saw its
    /// write acknowledged never finds the watch behind its own event.
    pub(crate) fn committed(&self, committing: Instant, max_seq: Option<i64>) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("tasklane_writer_commit_seconds").record(committing.elapsed());
        if let Some(seq) = max_seq {
            self.publish(seq);
        }
    }
}

/// The writer's end of the queue.
pub(crate) struct WriterQueue<B: Backend> {
    rx: Receiver<BoxedCommand<B>>,
    max_batch: usize,
    shared: Arc<WriterShared>,
}

impl<B: Backend> WriterQueue<B> {
    /// What the writer shares with the store handle.
    pub(crate) fn shared(&self) -> &Arc<WriterShared> {
        &self.shared
    }

    /// Blocks for a command and drains whatever else is queued into `batch` (up to `max_batch`).
    /// Returns false once every sender is gone and the queue is drained: shutdown loses no
    /// command.
    pub(crate) fn next_batch(&self, batch: &mut Vec<BoxedCommand<B>>) -> bool {
        let Ok(first) = self.rx.recv() else {
            return false;
        };
        batch.push(first);
        while batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics::histogram!("tasklane_writer_batch_size").record(batch.len() as f64);
        let bytes = batch.iter().map(|cmd| cmd.bytes()).sum();
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        true
    }

    /// A batch of the capacity `next_batch` fills.
    pub(crate) fn new_batch(&self) -> Vec<BoxedCommand<B>> {
        Vec::with_capacity(self.max_batch)
    }
}

/// Answers every command of `cmds` with `msg`: their transaction is gone.
pub(crate) fn fail<B: Backend>(cmds: &mut Vec<BoxedCommand<B>>, msg: &str) {
    for cmd in cmds.drain(..) {
        cmd.reply(Some(msg));
    }
}

/// The store handle's end of the queue: the sender, its bounds, and the writer thread.
pub(crate) struct WriteQueue<B: Backend> {
    /// `None` once shut down. Behind a lock (read-locked on every write) so `shutdown` can drop
    /// the only sender, which is what lets the writer drain the queue and stop.
    sender: RwLock<Option<SyncSender<BoxedCommand<B>>>>,
    max_queued_writes: usize,
    max_queued_bytes: usize,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<WriterShared>,
}

impl<B: Backend> WriteQueue<B> {
    /// A queue of at most `max_queued_writes` commands (at least one) holding at most
    /// `max_queued_bytes` together, and its writer's end, for at most `max_batch` commands a
    /// transaction. The watch starts at `last_seq`.
    pub(crate) fn new(
        max_queued_writes: usize,
        max_queued_bytes: usize,
        max_batch: usize,
        last_seq: i64,
    ) -> (WriteQueue<B>, WriterQueue<B>) {
        let max_queued_writes = max_queued_writes.max(1);
        let (sender, rx) = sync_channel(max_queued_writes);
        let shared = Arc::new(WriterShared {
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            committed_seq: watch::channel(last_seq).0,
        });
        let queue = WriteQueue {
            sender: RwLock::new(Some(sender)),
            max_queued_writes,
            max_queued_bytes,
            writer_thread: Mutex::new(None),
            shared: shared.clone(),
        };
        let writer = WriterQueue {
            rx,
            max_batch: max_batch.max(1),
            shared,
        };
        (queue, writer)
    }

    /// Hands over the writer thread, which [`WriteQueue::shutdown`] joins.
    pub(crate) fn writer_started(&self, thread: JoinHandle<()>) {
        *self
            .writer_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(thread);
    }

    pub(crate) fn shared(&self) -> &Arc<WriterShared> {
        &self.shared
    }

    /// Queues `f` for the writer and resolves with its answer, once its transaction committed.
    pub(crate) async fn submit<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: FnOnce(&mut B::Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit_work(bytes, Once(Some(f))).await
    }

    /// [`WriteQueue::submit`] for a closure the writer may run more than once.
    pub(crate) async fn submit_repeatable<R, F>(&self, bytes: usize, f: F) -> Result<R>
    where
        F: Fn(&mut B::Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit_work(bytes, Repeatable(f)).await
    }

    async fn submit_work<R, W>(&self, bytes: usize, work: W) -> Result<R>
    where
        W: Work<B, R> + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Box::new(Job::new(work, tx, bytes)))?;
        rx.await
            .map_err(|_| Error::Unavailable(B::WRITER_STOPPED.to_string()))?
    }

    fn enqueue(&self, cmd: BoxedCommand<B>) -> Result<()> {
        let guard = self
            .sender
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(sender) = guard.as_ref() else {
            return Err(Error::Unavailable("the store is shut down".to_string()));
        };
        // Counted before sending so the writer's decrement can never run first.
        let bytes = cmd.bytes();
        let shared = &self.shared;
        let before = shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if bytes > 0 && before > 0 && before + bytes > self.max_queued_bytes {
            shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Error::Unavailable("write queue full".to_string()));
        }
        shared.queued.fetch_add(1, Ordering::Relaxed);
        sender.try_send(cmd).map_err(|err| {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            Error::Unavailable(match err {
                TrySendError::Full(_) => "write queue full".to_string(),
                TrySendError::Disconnected(_) => B::WRITER_STOPPED.to_string(),
            })
        })
    }

    /// Drops the sender, so the writer stops once it has drained the queued commands, and joins
    /// its thread. Idempotent; later writes fail with `Unavailable`.
    pub(crate) fn shutdown(&self) {
        drop(
            self.sender
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            // A command holding the last handle could drop it on the writer thread itself;
            // joining there would wait for ever. The thread ends on its own once drained.
            if handle.thread().id() != std::thread::current().id() && handle.join().is_err() {
                tracing::error!("{}", B::WRITER_PANICKED);
            }
        }
    }

    /// Whether [`WriteQueue::shutdown`] has closed the queue to new commands.
    #[cfg(test)]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.sender
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none()
    }

    pub(crate) fn committed_sequence(&self) -> watch::Receiver<i64> {
        self.shared.committed_seq.subscribe()
    }

    pub(crate) fn queued_writes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn max_queued_writes(&self) -> usize {
        self.max_queued_writes
    }

    pub(crate) fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

/// The entry points a store handle with a [`WriteQueue`] at `self.inner.queue` and a
/// `read_db` offers whatever its backend: one copy of them, as inherent methods of each store.
macro_rules! store_entry_points {
    ($store:ident, $db:ident) => {
        impl $store {
            /// Runs `f` in the writer, in its own SAVEPOINT of the current group-commit
            /// transaction, and resolves once that transaction has committed. `f` holds `bytes`
            /// of request data (a parsed body) while it waits: queued commands may hold at most
            /// `max_queued_bytes` together; beyond that a write with bytes is refused with
            /// `Unavailable`, except into a queue holding none, so that any one body the server
            /// accepts can always be written.
            ///
            /// If `f` fails (or panics) only its own savepoint is rolled back. If the transaction
            /// is lost, every command of the batch gets `Unavailable`: their effects are gone, so
            /// even a command that had failed may have failed only because of an earlier command
            /// of the same batch.
            pub async fn write_sized<R, F>(&self, bytes: usize, f: F) -> tasklane_core::Result<R>
            where
                F: FnOnce(&mut dyn tasklane_core::store::WriteStore) -> tasklane_core::Result<R>
                    + Send
                    + 'static,
                R: Send + 'static,
            {
                self.submit(bytes, move |db: &mut $db<'_>| f(db)).await
            }

            /// [`write_sized`](Self::write_sized) for a closure that may run more than once:
            /// it must do nothing but read and write through the store it is given, and its
            /// last run's result is the answer. The writer can then run it without a savepoint
            /// of its own (see `Command::repeatable`).
            pub async fn write_repeatable<R, F>(
                &self,
                bytes: usize,
                f: F,
            ) -> tasklane_core::Result<R>
            where
                F: Fn(&mut dyn tasklane_core::store::WriteStore) -> tasklane_core::Result<R>
                    + Send
                    + 'static,
                R: Send + 'static,
            {
                self.inner
                    .queue
                    .submit_repeatable(bytes, move |db: &mut $db<'_>| f(db))
                    .await
            }

            /// Runs an observe read on a pooled connection inside one read snapshot.
            pub async fn read_observe<R, F>(&self, f: F) -> tasklane_core::Result<R>
            where
                F: Fn(&mut dyn tasklane_core::observe::ObserveStore) -> tasklane_core::Result<R>
                    + Send
                    + 'static,
                R: Send + 'static,
            {
                self.read_db(move |db: &mut $db<'_>| f(db)).await
            }

            /// Runs an observe write (triage) in the writer, like `write_sized`.
            pub async fn write_observe<R, F>(&self, f: F) -> tasklane_core::Result<R>
            where
                F: FnOnce(
                        &mut dyn tasklane_core::observe::ObserveWriteStore,
                    ) -> tasklane_core::Result<R>
                    + Send
                    + 'static,
                R: Send + 'static,
            {
                self.submit(0, move |db: &mut $db<'_>| f(db)).await
            }

            /// Runs `f` in the writer as its own command, over the backend's connection view.
            pub(crate) async fn submit<R, F>(&self, bytes: usize, f: F) -> tasklane_core::Result<R>
            where
                F: FnOnce(&mut $db<'_>) -> tasklane_core::Result<R> + Send + 'static,
                R: Send + 'static,
            {
                self.inner.queue.submit(bytes, f).await
            }

            /// Receives the highest committed event sequence after every commit that appended
            /// events (on PostgreSQL, other nodes' commits too).
            pub fn committed_sequence(&self) -> tokio::sync::watch::Receiver<i64> {
                self.inner.queue.committed_sequence()
            }

            /// Stops the writer after it has drained the queued commands, and joins its thread;
            /// then stops what else the backend runs. Idempotent; later writes fail with
            /// `Unavailable`.
            pub fn shutdown(&self) {
                self.inner.shutdown();
            }

            /// Writes waiting for the writer thread.
            pub fn queued_writes(&self) -> usize {
                self.inner.queue.queued_writes()
            }

            /// The configured bound of `queued_writes` (at least one).
            pub fn max_queued_writes(&self) -> usize {
                self.inner.queue.max_queued_writes()
            }

            /// Group-commit transactions committed by this server's writer since open.
            pub fn commits(&self) -> u64 {
                self.inner.queue.commits()
            }
        }
    };
}

pub(crate) use store_entry_points;
