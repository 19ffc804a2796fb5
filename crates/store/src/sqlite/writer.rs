//! The single writer thread and its group commit.
//!
//! One thread owns the write connection. It blocks for a command, drains whatever else is queued
//! (up to `max_batch`), runs every command in one IMMEDIATE transaction, each in its own
//! SAVEPOINT where it needs one (see `Writer::run_batch`), and commits once. One fsync thus
//! serves the whole batch, while a failing command still rolls back alone. Nobody hears back
//! before the COMMIT has returned, so an answer always means "durable".

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::Result;

use super::error::sql_err;
use super::{counters, Db, SqliteStore, BUSY_TIMEOUT};
use crate::write_queue::{fail, BoxedCommand, WriterQueue};

/// How long a WAL checkpoint waits for readers still on older snapshots. Read snapshots last one
/// request, so a short wait is usually enough; if it runs out, the next batch tries again. Only
/// a WAL twice past its limit (a long read kept defeating the short waits) waits the long one:
/// a long read then costs the writer one pause instead of a pause per batch.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(20);
const CHECKPOINT_WAIT_LONG: Duration = Duration::from_millis(250);

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) queue: WriterQueue<SqliteStore>,
    /// The `-wal` file beside the database.
    pub(crate) wal: PathBuf,
    /// The WAL is checkpointed and restarted once it holds this many bytes of frames.
    pub(crate) wal_limit: u64,
    /// Frames in the WAL as the checkpoint thread last counted them (`checkpoint.rs`), and the
    /// size of one: what the WAL holds, which after a restart is less than its file's length.
    pub(crate) wal_frames: Arc<AtomicU64>,
    pub(crate) page_size: u64,
    /// Taken for every checkpoint, shared with the checkpoint thread.
    pub(crate) checkpoint_turn: Arc<Mutex<()>>,
    /// A batch lost its transaction (disk full, I/O error) and no checkpoint has succeeded since:
    /// the next batch checkpoints first, so space freed meanwhile serves it.
    pub(crate) recovering: bool,
    /// The log names its events by sequence (`schema::events_named_by_sequence`).
    pub(crate) events_by_sequence: bool,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch = self.queue.new_batch();
        // Ends once every sender is gone and the queue is drained: shutdown loses no command.
        while self.queue.next_batch(&mut batch) {
            if self.recovering {
                self.checkpoint(CHECKPOINT_WAIT_LONG, "TRUNCATE");
            }
            if !self.run_batch(&mut batch) {
                self.recovering = true;
            }
            if let Some((wait, mode)) = self.checkpoint_due() {
                self.checkpoint(wait, mode);
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn exec(&self, sql: &str) -> Result<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(sql_err)
    }

    /// Runs and commits one batch. Returns false if a transaction was lost to a storage failure.
    ///
    /// A command runs in its own SAVEPOINT, so that if it fails only its writes are undone:
    /// while one is open SQLite copies every page a command changes into its sub-journal
    /// first. Two kinds of command run without one. The transaction's first: if it fails,
    /// rolling the whole transaction back undoes it alone, and with one agent at a time most
    /// transactions hold one command. And a repeatable command in a transaction of repeatable
    /// commands ("bare"): if it fails having written nothing (`total_changes` unchanged),
    /// nothing needs undoing; if it fails after writing, the transaction is rolled back and its
    /// commands run again from the start, this time each in its own savepoint. Commands rarely
    /// fail after writing, so most run bare.
    fn run_batch(&self, batch: &mut Vec<BoxedCommand<SqliteStore>>) -> bool {
        let mut todo: VecDeque<BoxedCommand<SqliteStore>> = batch.drain(..).collect();
        let mut tx = OpenTx::default();
        let mut intact = true;
        // Whether commands may run bare (not after a bare one failed after writing).
        let mut bare_allowed = true;

        while let Some(mut cmd) = todo.pop_front() {
            let first = !tx.open;
            let bare = !first && bare_allowed && tx.repeatable && cmd.repeatable();
            if first {
                if let Err(e) = self.exec("BEGIN IMMEDIATE") {
                    tracing::warn!(error = %e, "sqlite writer could not begin a transaction");
                    cmd.reply(Some(&format!("could not begin a transaction: {e}")));
                    intact = false;
                    continue;
                }
                tx.open = true;
                tx.repeatable = true;
            } else if !bare {
                if let Err(e) = self.exec("SAVEPOINT cmd") {
                    cmd.reply(Some(&format!("could not open a savepoint: {e}")));
                    if self.conn.is_autocommit() {
                        tx.lost("the transaction was rolled back");
                        intact = false;
                    }
                    continue;
                }
            }
            tx.repeatable &= cmd.repeatable();

            let changes_before = self.conn.total_changes();
            let mut db = Db::for_command(&self.conn, self.events_by_sequence);
            let ok = cmd.run(&mut db);
            let appended = db.appended;
            let cmd_deltas = std::mem::take(&mut db.deltas);

            // SQLite rolls the whole transaction back by itself after some errors (disk full,
            // I/O error): everything this batch did so far is gone, so nobody may hear "ok".
            if self.conn.is_autocommit() {
                tx.pending.push(cmd);
                tx.lost("the transaction was rolled back by sqlite");
                intact = false;
                continue;
            }
            let closed = match (ok, first, bare) {
                (true, true, _) | (true, false, true) => Ok(()),
                (true, false, false) => self.exec("RELEASE cmd"),
                (false, false, false) => self
                    .exec("ROLLBACK TO cmd")
                    .and_then(|()| self.exec("RELEASE cmd")),
                // Failed having written nothing: nothing to undo.
                (false, false, true) if self.conn.total_changes() == changes_before => Ok(()),
                (false, false, true) => {
                    // Failed after writing, and only the whole transaction can be undone: run
                    // its commands again, each in its own savepoint.
                    tx.pending.push(cmd);
                    if let Err(e) = self.exec("ROLLBACK") {
                        tracing::error!(error = %e, "sqlite writer could not roll back");
                        tx.lost(&format!("rollback failed: {e}"));
                        intact = false;
                        continue;
                    }
                    for earlier in tx.rolled_back().into_iter().rev() {
                        todo.push_front(earlier);
                    }
                    metrics::counter!("tasklane_writer_reruns_total").increment(1);
                    tracing::debug!("a command failed after writing: its transaction runs again");
                    bare_allowed = false;
                    continue;
                }
                (false, true, _) => {
                    // Nothing else is in the transaction: the next command begins another. The
                    // command changed nothing, so its answer (its error) needs no COMMIT.
                    tx.open = false;
                    if let Err(e) = self.exec("ROLLBACK") {
                        tracing::error!(error = %e, "sqlite writer could not roll back");
                        intact = false;
                    }
                    cmd.reply(None);
                    continue;
                }
            };
            tx.pending.push(cmd);
            match closed {
                Ok(()) => {
                    if ok {
                        tx.max_seq = tx.max_seq.max(appended);
                        tx.deltas.merge(cmd_deltas);
                    }
                }
                Err(e) => {
                    // The transaction's state is unknown: drop it rather than commit it.
                    tracing::error!(error = %e, "sqlite writer lost a savepoint");
                    let _ = self.exec("ROLLBACK");
                    tx.lost(&format!("savepoint failed: {e}"));
                    intact = false;
                }
            }
        }

        if !tx.open {
            return intact;
        }
        if let Err(e) = counters::apply(&self.conn, &tx.deltas) {
            tracing::error!(error = %e, "sqlite writer could not update the counters");
            let _ = self.exec("ROLLBACK");
            tx.lost(&format!("updating the counters failed: {e}"));
            return false;
        }
        let committing = std::time::Instant::now();
        if let Err(e) = self.exec("COMMIT") {
            tracing::error!(error = %e, "sqlite commit failed");
            if !self.conn.is_autocommit() {
                let _ = self.exec("ROLLBACK");
            }
            tx.lost(&format!("commit failed: {e}"));
            return false;
        }
        // Published before anyone is answered.
        self.queue.shared().committed(committing, tx.max_seq);
        for cmd in tx.pending.drain(..) {
            cmd.reply(None);
        }
        intact
    }

    /// Whether to checkpoint after a batch, how long to wait for readers, and how. Once the WAL
    /// holds its limit of frames: RESTART, so that the next commit writes over the start of the
    /// file instead of growing it (an fdatasync that must also extend the file costs about
    /// twice as much here, and new blocks are zeroed first). After a lost transaction, once the
    /// file passes twice the limit (readers kept defeating the restarts), or once it is larger
    /// than the space left on its filesystem: TRUNCATE, which gives the space back, because a
    /// checkpoint may have to grow the database by up to the WAL's size and a WAL that had taken
    /// that room too could never be checkpointed.
    fn checkpoint_due(&self) -> Option<(Duration, &'static str)> {
        let len = super::file_len(&self.wal);
        let full = free_bytes(&self.wal).is_some_and(|free| len >= free);
        let held = self.wal_frames.load(Ordering::Relaxed) * self.page_size;
        if self.recovering || full || len >= 2 * self.wal_limit {
            Some((CHECKPOINT_WAIT_LONG, "TRUNCATE"))
        } else if held >= self.wal_limit {
            Some((CHECKPOINT_WAIT, "RESTART"))
        } else {
            None
        }
    }

    /// Copies the whole WAL into the database, so that the next commit starts it over (`mode`
    /// RESTART), or also truncates its file to zero bytes (TRUNCATE).
    ///
    /// Run here, between batches, because this is the one moment nothing writes: a checkpoint
    /// from another connection (see `checkpoint.rs`) can only copy what was committed when it
    /// began, and under sustained writes the WAL never ends where the copy did, so SQLite never
    /// gets to restart it and the file grows without bound.
    fn checkpoint(&mut self, wait: Duration, mode: &str) {
        let _turn = self
            .checkpoint_turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = self.conn.busy_timeout(wait);
        let outcome = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            });
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        match outcome {
            Ok(0) => {
                self.recovering = false;
                self.wal_frames.store(0, Ordering::Relaxed);
            }
            Ok(_) => tracing::debug!("wal checkpoint waited too long for readers; retrying"),
            Err(e) => tracing::warn!(error = %e, "wal checkpoint failed; retrying"),
        }
    }
}

/// The open transaction of a batch: the commands that ran in it, waiting for its COMMIT, and
/// what the COMMIT owes them.
#[derive(Default)]
struct OpenTx {
    open: bool,
    pending: Vec<BoxedCommand<SqliteStore>>,
    /// The highest sequence the kept commands appended, published once committed.
    max_seq: Option<i64>,
    /// The counter changes of the kept commands, applied once before the COMMIT.
    deltas: CounterDeltas,
    /// Whether every command that ran in it is repeatable.
    repeatable: bool,
}

impl OpenTx {
    /// Ends the transaction, which was rolled back; returns its commands in the order they ran.
    fn rolled_back(&mut self) -> Vec<BoxedCommand<SqliteStore>> {
        self.open = false;
        self.max_seq = None;
        self.deltas.clear();
        std::mem::take(&mut self.pending)
    }

    /// The transaction is gone: every command of it hears `msg`.
    fn lost(&mut self, msg: &str) {
        fail(&mut self.rolled_back(), msg);
    }
}

/// Bytes available to this process on the filesystem holding `path`, if the OS says.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct the call fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
