//! The node's writer thread and its group commit.
//!
//! One thread owns the write connection. It blocks for a command, drains whatever else is queued
//! (up to `max_batch`), opens one transaction, takes the cluster's write lock, runs every command
//! in its own SAVEPOINT and commits once. Nobody hears back before the COMMIT has returned, so an
//! answer always means "durable". A lost connection fails the batch with `Unavailable` (the
//! client retries) and the next batch reconnects.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::{Error, Result};
use tokio::sync::{oneshot, watch};

use super::{counters, Conn, Db, PgOptions, CHANNEL, WRITE_LOCK};

/// A queued write, type-erased so commands with different result types share one queue.
pub(crate) trait Command: Send {
    /// Runs the command's closure; returns whether it succeeded (its savepoint is kept).
    fn run(&mut self, db: &mut Db<'_>) -> bool;
    /// Answers the caller; `batch_failure` is set when the batch's transaction was lost.
    fn reply(self: Box<Self>, batch_failure: Option<&str>);
    /// The request bytes the command holds while it waits.
    fn bytes(&self) -> usize;
}

pub(crate) struct Job<F, R> {
    f: Option<F>,
    result: Option<Result<R>>,
    tx: oneshot::Sender<Result<R>>,
    bytes: usize,
}

impl<F, R> Job<F, R> {
    pub(crate) fn new(f: F, tx: oneshot::Sender<Result<R>>, bytes: usize) -> Self {
        Job {
            f: Some(f),
            result: None,
            tx,
            bytes,
        }
    }
}

impl<F, R> Command for Job<F, R>
where
    F: FnOnce(&mut Db<'_>) -> Result<R> + Send,
    R: Send,
{
    fn run(&mut self, db: &mut Db<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // Nobody waits for the answer any more: doing the work would change state nobody learns of.
        if self.tx.is_closed() {
            self.result = Some(Err(Error::Unavailable("the caller went away".to_string())));
            return false;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            f(db).and_then(|r| {
                if db.item_start.is_some() {
                    return Err(Error::Storage("a command ended with an item open".into()));
                }
                Ok(r)
            })
        }))
        .unwrap_or_else(|_| Err(Error::Storage("internal panic".to_string())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn reply(self: Box<Self>, batch_failure: Option<&str>) {
        let result = match batch_failure {
            Some(msg) => Err(Error::Unavailable(msg.to_string())),
            None => self
                .result
                .unwrap_or_else(|| Err(Error::Unavailable("write was not run".to_string()))),
        };
        let _ = self.tx.send(result);
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the writer and the listener share with the store handle.
pub(crate) struct WriterShared {
    pub(crate) queued: AtomicUsize,
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) commits: AtomicU64,
    pub(crate) committed_seq: watch::Sender<i64>,
    pub(crate) remote_commits: watch::Sender<u64>,
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
}

pub(crate) struct Writer {
    pub(crate) conn: Option<Conn>,
    pub(crate) opts: PgOptions,
    pub(crate) rx: Receiver<Box<dyn Command>>,
    pub(crate) max_batch: usize,
    pub(crate) shared: Arc<WriterShared>,
    /// When the last batch began.
    pub(crate) last_batch: Instant,
}

/// A write connection idle this long is checked before it carries a batch.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(self.max_batch);
        // Ends once every sender is gone and the queue is drained: shutdown loses no command.
        while let Ok(first) = self.rx.recv() {
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
            let shared = self.shared.clone();
            let conn = match self.connection() {
                Ok(conn) => conn,
                Err(e) => {
                    fail(&mut batch, &e.to_string());
                    continue;
                }
            };
            if let Err(e) = run_batch(conn, &shared, &mut batch) {
                tracing::warn!(error = %e, "postgres write transaction lost");
                fail(&mut batch, &e.to_string());
                if self.conn.as_ref().is_some_and(Conn::is_closed) {
                    self.conn = None;
                }
            }
        }
        tracing::debug!("postgres writer stopped");
    }

    /// The write connection, reconnected if it was lost. One that sat idle is checked first: a
    /// database restarted meanwhile would otherwise cost the next batch, whose commands could
    /// have run on a new connection.
    fn connection(&mut self) -> Result<&mut Conn> {
        let idle = self.last_batch.elapsed() >= IDLE_CHECK;
        self.last_batch = Instant::now();
        if let Some(conn) = self.conn.as_mut() {
            if conn.is_closed() || (idle && conn.batch("").is_err()) {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(&self.opts)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

fn fail(batch: &mut Vec<Box<dyn Command>>, msg: &str) {
    for cmd in batch.drain(..) {
        cmd.reply(Some(msg));
    }
}

/// Runs and commits one batch; on `Err` the transaction is gone and `batch` still holds every
/// command, unanswered. On `Ok` every command has been answered.
fn run_batch(
    conn: &mut Conn,
    shared: &WriterShared,
    batch: &mut Vec<Box<dyn Command>>,
) -> Result<()> {
    let mut max_seq: Option<i64> = None;
    let mut deltas = CounterDeltas::default();
    // Statements without parameters ride along with the next simple query, so that a write of
    // one command costs its own statements plus two round trips: [BEGIN, lock, savepoint] and
    // [release, notify, COMMIT].
    let mut pending = format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); ");
    let outcome = (|| {
        for cmd in batch.iter_mut() {
            pending.push_str(super::write::SAVEPOINT_CMD);
            conn.batch(&std::mem::take(&mut pending))?;
            let mut db = Db::new(conn);
            let ok = cmd.run(&mut db);
            let appended = db.appended;
            let cmd_deltas = std::mem::take(&mut db.deltas);
            if conn.is_closed() {
                return Err(Error::Unavailable(
                    "the database connection was lost".into(),
                ));
            }
            if ok {
                pending.push_str("RELEASE cmd; ");
                max_seq = max_seq.max(appended);
                deltas.merge(cmd_deltas);
            } else {
                conn.batch(match appended {
                    Some(_) => super::write::ROLLBACK_CMD_WITH_EVENTS,
                    None => "ROLLBACK TO cmd; RELEASE cmd",
                })?;
            }
        }
        // Inside the last command's savepoint when it was kept: released with the COMMIT.
        counters::apply(conn, &deltas)?;
        if let Some(seq) = max_seq {
            // Delivered to the listeners at COMMIT, never before. The payload is digits and a
            // colon only.
            let payload = super::listener::payload(seq);
            pending.push_str(&format!("NOTIFY {CHANNEL}, '{payload}'; "));
        }
        pending.push_str("COMMIT");
        let committing = std::time::Instant::now();
        conn.batch(&pending)?;
        metrics::histogram!("tasklane_writer_commit_seconds").record(committing.elapsed());
        Ok(())
    })();
    if let Err(e) = outcome {
        if !conn.is_closed() {
            let _ = conn.batch("ROLLBACK");
        }
        return Err(e);
    }
    shared.commits.fetch_add(1, Ordering::Relaxed);
    // Published before anyone is answered, so a client that saw its write acknowledged never
    // finds the watch behind its own event.
    if let Some(seq) = max_seq {
        shared.publish(seq);
    }
    for cmd in batch.drain(..) {
        cmd.reply(None);
    }
    Ok(())
}
