//! The node's writer thread and its group commit.
//!
//! One thread owns the write connection. It blocks for a command, drains whatever else is queued
//! (up to `max_batch`), opens one transaction, takes the cluster's write lock, runs every command
//! in its own SAVEPOINT and commits once. Nobody hears back before the COMMIT has returned, so an
//! answer always means "durable". A lost connection fails the batch with `Unavailable` (the
//! client retries) and the next batch reconnects.

use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::{Error, Result};

use super::{counters, Conn, Db, PgOptions, PgStore, CHANNEL, WRITE_LOCK};
use crate::write_queue::{fail, BoxedCommand, WriterQueue, WriterShared};

pub(crate) struct Writer {
    pub(crate) conn: Option<Conn>,
    pub(crate) opts: PgOptions,
    pub(crate) queue: WriterQueue<PgStore>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch = self.queue.new_batch();
        // Ends once every sender is gone and the queue is drained: shutdown loses no command.
        while self.queue.next_batch(&mut batch) {
            let shared = self.queue.shared().clone();
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

    /// The write connection, reconnected if it was lost.
    fn connection(&mut self) -> Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(Conn::is_closed) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(&self.opts)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// Runs and commits one batch; on `Err` the transaction is gone and `batch` still holds every
/// command, unanswered. On `Ok` every command has been answered.
fn run_batch(
    conn: &mut Conn,
    shared: &WriterShared,
    batch: &mut Vec<BoxedCommand<PgStore>>,
) -> Result<()> {
    let mut max_seq: Option<i64> = None;
    let mut deltas = CounterDeltas::default();
    conn.batch("BEGIN")?;
    let outcome = (|| {
        conn.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        for cmd in batch.iter_mut() {
            conn.batch(super::write::SAVEPOINT_CMD)?;
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
                conn.batch("RELEASE cmd")?;
                max_seq = max_seq.max(appended);
                deltas.merge(cmd_deltas);
            } else {
                conn.batch(match appended {
                    Some(_) => super::write::ROLLBACK_CMD_WITH_EVENTS,
                    None => "ROLLBACK TO cmd; RELEASE cmd",
                })?;
            }
        }
        counters::apply(conn, &deltas)?;
        if let Some(seq) = max_seq {
            // Delivered to the listeners at COMMIT, never before.
            conn.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &super::listener::payload(seq)],
            )?;
        }
        let committing = std::time::Instant::now();
        conn.batch("COMMIT")?;
        Ok(committing)
    })();
    let committing = match outcome {
        Ok(committing) => committing,
        Err(e) => {
            if !conn.is_closed() {
                let _ = conn.batch("ROLLBACK");
            }
            return Err(e);
        }
    };
    // Published before anyone is answered.
    shared.committed(committing, max_seq);
    for cmd in batch.drain(..) {
        cmd.reply(None);
    }
    Ok(())
}
