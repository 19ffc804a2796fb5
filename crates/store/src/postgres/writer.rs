//! The node's writer thread and its group commit.
//!
//! One thread owns the write connection. It blocks for a command, drains whatever else is queued
//! (up to `max_batch`), opens one transaction, takes the cluster's write lock and reads where the
//! event sequence stands and whether other servers are to hear of the commit (`nodes`), runs
//! every command (in its own SAVEPOINT unless the batch runs bare, see [`run_batch`]) and
//! commits once. Nobody hears back before the COMMIT has returned, so an answer always means
//! "durable". A lost connection fails the batch with `Unavailable` (the client retries) and the
//! next batch reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::{Error, Result};

use super::schema::LAST_SEQUENCE_SQL;
use super::test_clock::Follower;
use super::{
    counters, listener, nodes, Conn, Db, PgOptions, PgStore, Sequence, CHANNEL, WRITE_LOCK,
};
use crate::write_queue::{fail, BoxedCommand, WriterQueue, WriterShared};

pub(crate) struct Writer {
    pub(crate) conn: Option<Conn>,
    pub(crate) opts: PgOptions,
    pub(crate) queue: WriterQueue<PgStore>,
    pub(crate) test_clock: Arc<Follower>,
    /// When the last batch began.
    pub(crate) last_batch: Instant,
    /// The log names its events by sequence (`schema::events_named_by_sequence`).
    pub(crate) events_by_sequence: bool,
    /// This server, as its notifications name it (`listener::new_node_id`).
    pub(crate) node: i64,
}

/// A write connection idle this long is checked before it carries a batch.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch = self.queue.new_batch();
        // Ends once every sender is gone and the queue is drained: shutdown loses no command.
        while self.queue.next_batch(&mut batch) {
            let shared = self.queue.shared().clone();
            let test_clock = self.test_clock.clone();
            let (events_by_sequence, node) = (self.events_by_sequence, self.node);
            let conn = match self.connection() {
                Ok(conn) => conn,
                Err(e) => {
                    fail(&mut batch, &e.to_string());
                    continue;
                }
            };
            let run = run_batch(
                conn,
                &shared,
                &test_clock,
                (events_by_sequence, node),
                &mut batch,
            );
            if let Err(e) = run {
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
        let conn = self.conn.as_mut().expect("connected above");
        conn.spin_while_waiting(self.opts.writer_spin);
        Ok(conn)
    }
}

/// Runs and commits one batch; on `Err` the transaction is gone and `batch` still holds every
/// command, unanswered. On `Ok` every command has been answered.
///
/// A batch of repeatable commands (`Command::repeatable`) runs *bare*: no command has a
/// SAVEPOINT of its own. A savepoint is a subtransaction to PostgreSQL, with a transaction id
/// of its own for a command that writes and a message and two statements more per command, and
/// commands rarely fail. Nor does a command wait for its own writes: they go with the next
/// command's first statement that waits (or the COMMIT). One that fails having sent nothing that
/// could write and without the database refusing anything (`conn::Effects` unchanged) left
/// nothing to undo; any other failure, and any refusal, rolls the transaction back and the batch
/// runs again, each command in its own savepoint, which undoes a failing command alone.
fn run_batch(
    conn: &mut Conn,
    shared: &WriterShared,
    test_clock: &Follower,
    (events_by_sequence, node): (bool, i64),
    batch: &mut Vec<BoxedCommand<PgStore>>,
) -> Result<()> {
    let mut bare = batch.iter().all(|cmd| cmd.repeatable());
    let (committing, max_seq) = loop {
        match attempt(conn, test_clock, (events_by_sequence, node), batch, bare) {
            Ok(Attempt::Committed(committing, max_seq)) => break (committing, max_seq),
            Ok(Attempt::RunAgain) => {
                metrics::counter!("tasklane_writer_reruns_total").increment(1);
                tracing::debug!("a command failed after writing: its transaction runs again");
                bare = false;
            }
            Err(e) => {
                if !conn.is_closed() {
                    let _ = conn.batch("ROLLBACK");
                }
                return Err(e);
            }
        }
    };
    // Published before anyone is answered.
    shared.committed(committing, max_seq);
    for cmd in batch.drain(..) {
        cmd.reply(None);
    }
    Ok(())
}

enum Attempt {
    /// Committed when the instant was taken, with the highest event sequence kept.
    Committed(Instant, Option<i64>),
    /// A command run bare failed after writing: the transaction was rolled back.
    RunAgain,
}

/// One try at the batch, bare or with a savepoint per command (see [`run_batch`]).
fn attempt(
    conn: &mut Conn,
    test_clock: &Follower,
    (events_by_sequence, node): (bool, i64),
    batch: &mut [BoxedCommand<PgStore>],
    bare: bool,
) -> Result<Attempt> {
    let mut kept = Kept::default();
    // The last command's, while its deferred writes wait for the COMMIT to carry them.
    let mut last: Option<Kept> = None;
    // Transaction control never waits for an answer of its own: it is deferred (see `conn`) and
    // travels with the next statement that needs one, so a write of one command costs its own
    // reads plus the COMMIT's round trip.
    let mut pending = String::new();
    // The lock is taken by a statement of its own, before the one that reads the sequence: each
    // statement reads from a snapshot taken as it starts, and the read must not predate the
    // lock. Read under the lock with the sequence: whether other nodes are to hear of the
    // commit. Prepared once per connection, like every statement; parsed and planned in every
    // transaction they cost the database some 50 µs each time. Unless the batch runs bare, the
    // first command's savepoint follows, the others' go with the RELEASE of the one before.
    conn.execute_later("BEGIN", &[])?;
    conn.execute_later("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    let [last_sequence, peers] = conn.query_later_ints(
        &format!("SELECT ({LAST_SEQUENCE_SQL}), {}", nodes::peers_sql(node)),
        &[],
    )?;
    if !bare {
        conn.batch_later("SAVEPOINT cmd".to_string())?;
    }
    let mut sequence = Sequence::Unread(last_sequence);
    // Test-clock mode only: the service's test time, read under the lock, before any command.
    test_clock.begin(conn)?;
    let count = batch.len();
    for (i, cmd) in batch.iter_mut().enumerate() {
        let is_last = i + 1 == count;
        if i > 0 && !bare {
            pending.push_str("SAVEPOINT cmd");
            conn.batch_later(std::mem::take(&mut pending))?;
        }
        let before = conn.effects();
        let mut db = Db::for_command(conn, sequence.clone(), (is_last, bare), events_by_sequence);
        let ok = cmd.run(&mut db);
        let appended = db.appended;
        let cmd_deltas = std::mem::take(&mut db.deltas);
        let cmd_sequence = db.sequence.clone();
        if conn.is_closed() {
            return Err(Error::Unavailable(
                "the database connection was lost".into(),
            ));
        }
        // Run bare, a command that fails after writing has no savepoint to undo it alone. And
        // its writes are answered with a later command's statements, so a refusal may be an
        // earlier command's, or not the item's that recovered from it. Either way the batch
        // runs again, each command in its own savepoint.
        if bare && (conn.refused_since(before) || (!ok && conn.effects() != before)) {
            conn.batch_undoing("ROLLBACK")?;
            return Ok(Attempt::RunAgain);
        }
        if ok {
            if !bare {
                pending.push_str("RELEASE cmd; ");
            }
            sequence = cmd_sequence;
            let this = Kept {
                max_seq: appended,
                deltas: cmd_deltas,
            };
            if is_last {
                last = Some(this);
            } else {
                kept.merge(this);
            }
        } else if !bare {
            // Its event numbers go to the next command: `sequence` stays where it was.
            conn.batch_undoing("ROLLBACK TO cmd; RELEASE cmd")?;
        }
    }
    let mut all = kept.clone();
    if let Some(last) = &last {
        all.merge(last.clone());
    }
    // Unanswered only if no command waited for anything: then notify, as if there were peers.
    let peers = *peers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let notify = (peers != Some(0)).then_some(node);
    let committing = Instant::now();
    match commit(conn, &all, notify, std::mem::take(&mut pending)) {
        (None, Ok(())) => return Ok(Attempt::Committed(committing, all.max_seq)),
        // Run bare, no command has a savepoint to undo it alone, and the error may be any
        // command's (each sends its writes with the next one's): the batch runs again.
        (Some(_), _) if bare && !conn.is_closed() => {
            conn.batch_undoing("ROLLBACK")?;
            return Ok(Attempt::RunAgain);
        }
        // Otherwise the last command's deferred writes come first (the others' were answered
        // as each ended), so the error is its own: it is undone alone, like a command that
        // fails as it runs, and the rest committed without it.
        (Some(e), _) if last.is_some() && !conn.is_closed() => {
            conn.batch("ROLLBACK TO cmd; RELEASE cmd")?;
            let failed = batch.last_mut().expect("the batch has a last command");
            failed.undo(e);
        }
        (Some(e), _) | (None, Err(e)) => return Err(e),
    }
    let committing = Instant::now();
    match commit(conn, &kept, notify, String::new()) {
        (None, Ok(())) => Ok(Attempt::Committed(committing, kept.max_seq)),
        (Some(e), _) | (None, Err(e)) => Err(e),
    }
}

/// What the kept commands of a batch leave to its COMMIT: the highest event sequence they
/// appended and their counter changes.
#[derive(Clone, Default)]
struct Kept {
    max_seq: Option<i64>,
    deltas: CounterDeltas,
}

impl Kept {
    fn merge(&mut self, other: Kept) {
        self.max_seq = self.max_seq.max(other.max_seq);
        self.deltas.merge(other.deltas);
    }
}

/// Applies `kept`'s counter changes, moves the event sequence to its last value, tells the other
/// servers' listeners that server `notify` committed (unless `None`) and commits, all in one
/// round trip after `pending` (transaction control still owed). Returns the first error of the
/// statements sent before the COMMIT apart from the COMMIT's own result. With nothing pending
/// (a bare batch, or a last command undone) the COMMIT goes in the same pipeline as those
/// statements, and an error, which cannot be told apart from the COMMIT's own, comes first.
fn commit(
    conn: &mut Conn,
    kept: &Kept,
    notify: Option<i64>,
    mut pending: String,
) -> (Option<Error>, Result<()>) {
    // Still inside the last command's savepoint when it was kept: `pending` releases it.
    if let Err(e) = queue_commit_writes(conn, kept, notify) {
        return (None, Err(e));
    }
    if pending.is_empty() {
        return match conn.commit_pipelined() {
            Ok(()) => (None, Ok(())),
            Err(e) => (Some(e), Ok(())),
        };
    }
    pending.push_str("COMMIT");
    conn.batch_after(&pending)
}

/// What a COMMIT carries besides: the counter upserts, the event sequence's last value and, if
/// `notify`, the notification to the other servers (delivered at COMMIT, never before).
fn queue_commit_writes(conn: &mut Conn, kept: &Kept, notify: Option<i64>) -> Result<()> {
    counters::apply(conn, &kept.deltas)?;
    if let Some(seq) = kept.max_seq {
        conn.execute_later("SELECT setval('task_events_sequence', $1)", &[&seq])?;
        if let Some(node) = notify {
            let payload = listener::payload(node, seq);
            conn.execute_later("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        }
    }
    Ok(())
}
