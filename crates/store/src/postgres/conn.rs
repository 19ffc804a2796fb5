//! One PostgreSQL connection with its prepared statements, its pipeline of deferred writes, and
//! the classification of its errors.
//!
//! Every statement is prepared once per connection and kept: a query by text alone would cost a
//! Parse/Describe round trip before every execution.
//!
//! A round trip to the database costs far more than the statement it carries (about 0.12 ms on a
//! local server against a few microseconds of execution), and the writer's rules load, check and
//! write one primitive at a time. So a write whose answer nobody needs (an UPDATE whose row count
//! is not looked at, a counter upsert, a savepoint) is *deferred*: [`Conn::execute_later`] queues
//! it on the connection and returns at once, and it travels to the database with the next
//! statement whose answer is needed, in the same network write. That statement waits for the
//! deferred ones' answers too, so an error in a deferred write is reported (before the
//! statement's own answer, which is then meaningless) by the next call that waits; nothing is
//! committed past it, because the COMMIT is such a call.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tasklane_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Notification, Row, Statement};

use super::PgOptions;

/// Statements kept prepared per connection. `list_tasks` and the observe reads build one
/// statement per filter shape, so this is well above the number of fixed statements.
const STATEMENT_CACHE: usize = 512;

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// A deferred write: sent, its answer not read yet.
type Deferred = Pin<Box<dyn Future<Output = PgResult<()>> + Send>>;

/// Where a deferred query leaves its integer answer, once a later call has waited.
pub(crate) type Later = Arc<Mutex<Option<i64>>>;

/// What drives a connection's socket: `tokio_postgres::Connection` for any transport.
pub(crate) trait Messages: Send {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<PgResult<AsyncMessage>>>;
}

impl<S, T> Messages for tokio_postgres::Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<PgResult<AsyncMessage>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

pub(crate) struct Conn {
    runtime: Runtime,
    client: Arc<Client>,
    /// `None` once the connection has ended (its pending answers fail with "closed").
    connection: Option<Box<dyn Messages>>,
    /// Keyed by the SQL text, hashed once per statement sent: a fast hash, since the texts are
    /// long and ours.
    statements: HashMap<String, Statement, foldhash::fast::RandomState>,
    deferred: Vec<Deferred>,
    /// Deferred statements not sent yet: they go together, under one `Sync`, with or before
    /// whatever is sent next (see [`Conn::execute_later`]).
    unsent: Vec<Unsent>,
    /// The name the next statement queued unsent gets (see [`Conn::amend_unsent`]).
    next_unsent: UnsentId,
    notifications: VecDeque<Notification>,
    /// How long a wait keeps looking for the next answer before it sleeps (see `drive`).
    spin: Duration,
    effects: Effects,
}

/// What the statements sent on a connection may have done: how many could have changed a row
/// and how many the database refused (which aborts the transaction). The writer compares them
/// around a command run without a savepoint: a command that fails with both unchanged left
/// nothing to undo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    writes: u64,
    errors: u64,
}

/// Whether a query could change a row: anything but a plain SELECT (a WITH may hold an UPDATE,
/// an UPDATE may return rows).
fn may_write(sql: &str) -> bool {
    let start = sql.trim_start().as_bytes();
    !start
        .get(..6)
        .is_some_and(|word| word.eq_ignore_ascii_case(b"SELECT"))
}

impl Conn {
    pub(crate) fn connect(opts: &PgOptions) -> Result<Conn> {
        let (runtime, client, connection) = super::tls::connect(opts, |config| {
            config.connect_timeout(opts.connect_timeout);
            config.application_name("tasklane");
            if let Some(timeout) = opts.statement_timeout.filter(|t| !t.is_zero()) {
                config.options(format!("-c statement_timeout={}", timeout.as_millis()));
            }
        })?;
        Ok(Conn {
            runtime,
            client: Arc::new(client),
            connection: Some(connection),
            statements: HashMap::default(),
            deferred: Vec::new(),
            unsent: Vec::new(),
            next_unsent: 0,
            notifications: VecDeque::new(),
            spin: Duration::ZERO,
            effects: Effects::default(),
        })
    }

    pub(crate) fn effects(&self) -> Effects {
        self.effects
    }

    /// Whether the database refused a statement since `before` was taken.
    pub(crate) fn refused_since(&self, before: Effects) -> bool {
        self.effects.errors != before.errors
    }

    /// Counts a query that could change a row (see [`may_write`]); every `execute` and `batch`
    /// counts as a write.
    fn querying(&mut self, sql: &str) {
        if may_write(sql) {
            self.effects.writes += 1;
        }
    }

    /// Makes every wait for answers look for the next one for `spin` before it sleeps: CPU spent
    /// for fewer context switches, worth it on the writer's connection, whose every round trip
    /// holds up every write.
    pub(crate) fn spin_while_waiting(&mut self, spin: Duration) {
        self.spin = spin;
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        // Ahead of the statements not sent yet: a statement prepared after one that fails would
        // fail too (nothing is parsed in an aborted transaction), and that error would surface
        // here, in whatever asked for the statement, instead of where the statements are
        // answered.
        let client = self.client.clone();
        let stmt = self.wait_ahead_of_unsent(async move { client.prepare(sql).await })?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    pub(crate) fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        let mut answers = self.query_all(&[(sql, params)])?;
        Ok(answers.pop().unwrap_or_default())
    }

    /// Runs independent queries in one round trip: they are sent in one network write, in
    /// order, under one `Sync` together with the deferred statements before them (so answered
    /// in one flush, see [`Conn::execute_later`]), and their answers read together.
    pub(crate) fn query_all(&mut self, queries: &[(&str, Params<'_>)]) -> Result<Vec<Vec<Row>>> {
        let mut own = Vec::with_capacity(queries.len());
        for (sql, params) in queries {
            self.querying(sql);
            own.push(self.unsent(sql, params, Vec::new())?);
        }
        let wanted = own.len();
        let mut pipeline = std::mem::take(&mut self.unsent);
        pipeline.extend(own);
        self.wait(run_pipeline(self.client.clone(), pipeline, wanted))
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            return Err(Error::Storage(format!(
                "a query for at most one row returned {}",
                rows.len()
            )));
        }
        Ok(rows.pop())
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row> {
        let mut rows = self.query(sql, params)?;
        if rows.len() != 1 {
            return Err(Error::Storage(format!(
                "a query for one row returned {}",
                rows.len()
            )));
        }
        Ok(rows.pop().expect("one row"))
    }

    /// Returns the number of rows changed.
    pub(crate) fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64> {
        self.effects.writes += 1;
        let stmt = self.statement(sql)?;
        let client = self.client.clone();
        self.wait(async move { client.execute(&stmt, params).await })
    }

    /// Queues a write whose row count nobody needs; it is sent with the next call that waits for
    /// an answer, and its error (if any) is that call's error.
    ///
    /// Consecutive deferred statements, and the reads that follow them, are sent as one pipeline
    /// under a single `Sync` (`Client::query_pipeline`, see `vendor/tokio-postgres`):
    /// PostgreSQL flushes its output at every `Sync`, so with one per statement it made a
    /// `send`, and this thread a wake-up, for each. The database skips the statements after a
    /// failed one up to the `Sync`, which changes nothing here: the transaction is aborted from
    /// that statement on either way.
    ///
    /// Returns the statement's name while it stays unsent, for [`Conn::amend_unsent`].
    pub(crate) fn execute_later(&mut self, sql: &str, params: Params<'_>) -> Result<UnsentId> {
        self.effects.writes += 1;
        let unsent = self.unsent(sql, params, Vec::new())?;
        let id = unsent.id;
        self.unsent.push(unsent);
        Ok(id)
    }

    /// Replaces statement `id`, if it is still unsent, by `sql`, whose parameters are the
    /// replaced statement's followed by `extra`, in the same place among the statements queued.
    /// Returns whether it was still unsent (if not, nothing is done).
    pub(crate) fn amend_unsent(
        &mut self,
        id: UnsentId,
        sql: &str,
        extra: Params<'_>,
    ) -> Result<bool> {
        let Some(at) = self.unsent.iter().position(|u| u.id == id) else {
            return Ok(false);
        };
        // Prepared ahead of the statements unsent, which stay where they are.
        let stmt = self.statement(sql)?;
        let old = &mut self.unsent[at];
        let types = stmt.params();
        if types.len() != old.params.len() + extra.len() {
            return Err(Error::Storage(format!(
                "statement takes {} parameters, {} given",
                types.len(),
                old.params.len() + extra.len()
            )));
        }
        let more = encode_as(&types[old.params.len()..], extra)?;
        old.params.extend(more);
        old.stmt = stmt;
        Ok(true)
    }

    /// [`Conn::execute_later`] for a query whose first row's first `N` columns, integers, are
    /// wanted: the i-th lands in the i-th returned slot once a later call has waited.
    pub(crate) fn query_later_ints<const N: usize>(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<[Later; N]> {
        self.querying(sql);
        let slots: [Later; N] = std::array::from_fn(|_| Later::default());
        let unsent = self.unsent(sql, params, slots.to_vec())?;
        self.unsent.push(unsent);
        Ok(slots)
    }

    /// Sends a COMMIT in the same pipeline as the deferred statements before it, and waits. An
    /// error, theirs or the COMMIT's own, means nothing was committed, unless the connection
    /// is gone, when it cannot be known. Does not spin: the answer waits for a disk flush.
    pub(crate) fn commit_pipelined(&mut self) -> Result<()> {
        self.effects.writes += 1;
        let commit = self.unsent("COMMIT", &[], Vec::new())?;
        let mut pipeline = std::mem::take(&mut self.unsent);
        pipeline.push(commit);
        let deferred = std::mem::take(&mut self.deferred);
        let fut = run_pipeline(self.client.clone(), pipeline, 0);
        match self.drive(pin!(fut), deferred, false) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(()),
        }
    }

    /// `sql`, prepared, with its parameters encoded, ready to join a pipeline.
    fn unsent(&mut self, sql: &str, params: Params<'_>, ints: Vec<Later>) -> Result<Unsent> {
        let stmt = self.statement(sql)?;
        let params = encode(&stmt, params)?;
        self.next_unsent += 1;
        Ok(Unsent {
            id: self.next_unsent,
            stmt,
            params,
            ints,
        })
    }

    /// Queues the statements [`Conn::execute_later`] holds, as one request; before anything
    /// else is queued, so the database sees every statement in the order it was asked for.
    fn send_unsent(&mut self) -> Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let pipeline = std::mem::take(&mut self.unsent);
        let fut = run_pipeline(self.client.clone(), pipeline, 0);
        self.queue(Box::pin(async move { fut.await.map(drop) }))
    }

    /// Runs statements without parameters through the simple protocol (transaction control,
    /// migrations).
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        self.effects.writes += 1;
        let client = self.client.clone();
        self.wait(async move { client.batch_execute(sql).await })
    }

    /// [`Conn::batch`], deferred as [`Conn::execute_later`] is.
    pub(crate) fn batch_later(&mut self, sql: String) -> Result<()> {
        self.effects.writes += 1;
        let client = self.client.clone();
        self.defer(Box::pin(async move { client.batch_execute(&sql).await }))
    }

    /// Waits for the answers of the deferred writes; the first error among them, if any.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.deferred.is_empty() && self.unsent.is_empty() {
            return Ok(());
        }
        self.wait(async { Ok(()) })
    }

    /// [`Conn::batch`] for a statement that undoes what the deferred writes did (ROLLBACK TO a
    /// savepoint before them): their errors no longer matter, the connection's still does.
    pub(crate) fn batch_undoing(&mut self, sql: &str) -> Result<()> {
        self.batch_after(sql).1
    }

    /// [`Conn::batch`] sent after the deferred writes, with their first error (if any) apart
    /// from `sql`'s own result, which after a failed write only says "transaction aborted".
    /// Once only `sql`'s answer is left it does not spin: that answer is a COMMIT's (or a
    /// rollback's), which waits for a disk flush.
    pub(crate) fn batch_after(&mut self, sql: &str) -> (Option<Error>, Result<()>) {
        self.effects.writes += 1;
        // Writes that cannot even be queued (the connection is gone): `sql` is not sent.
        if let Err(e) = self.send_unsent() {
            return (None, Err(e));
        }
        let deferred = std::mem::take(&mut self.deferred);
        let client = self.client.clone();
        let fut = pin!(async move { client.batch_execute(sql).await });
        self.drive(fut, deferred, false)
    }

    /// The next notification of a channel this connection listens to, waiting up to `wait`.
    pub(crate) fn next_notification(&mut self, wait: Duration) -> Result<Option<Notification>> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(Some(n));
        }
        let Conn {
            runtime,
            connection,
            notifications,
            ..
        } = self;
        // A timer belongs to the runtime it is created in.
        let sleep = {
            let _in_runtime = runtime.enter();
            tokio::time::sleep(wait)
        };
        let mut timer = pin!(sleep);
        runtime.block_on(poll_fn(|cx| {
            if let Err(e) = drive_connection(connection, notifications, cx) {
                return Poll::Ready(Err(e));
            }
            if !notifications.is_empty() || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            Poll::Pending
        }))?;
        Ok(self.notifications.pop_front())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.connection.is_none() || self.client.is_closed()
    }

    fn defer(&mut self, write: Deferred) -> Result<()> {
        self.send_unsent()?;
        self.queue(write)
    }

    fn queue(&mut self, mut write: Deferred) -> Result<()> {
        // One poll encodes the request and queues it for the connection, which sends it the
        // next time it runs; the answer is read when someone waits.
        let mut cx = Context::from_waker(Waker::noop());
        match write.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                self.effects.errors += 1;
                Err(pg_err(e))
            }
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Pending => {
                self.deferred.push(write);
                Ok(())
            }
        }
    }

    /// Runs `fut` (queued after every deferred write, so sent in the same network write) and
    /// waits for it and for the deferred writes. The first deferred error wins: a statement
    /// after it only failed because the transaction was aborted.
    fn wait<T>(&mut self, fut: impl Future<Output = PgResult<T>>) -> Result<T> {
        self.send_unsent()?;
        self.wait_ahead_of_unsent(fut)
    }

    /// [`Conn::wait`] for a request that does not depend on the statements not sent yet, which
    /// stay unsent: it goes ahead of them.
    fn wait_ahead_of_unsent<T>(&mut self, fut: impl Future<Output = PgResult<T>>) -> Result<T> {
        let deferred = std::mem::take(&mut self.deferred);
        match self.drive(pin!(fut), deferred, true) {
            (Some(e), _) => Err(e),
            (None, result) => result,
        }
    }

    /// Drives the connection until `fut` and every one of `deferred` are done; returns the first
    /// error among `deferred` and `fut`'s result. Spins between answers (see below), and for
    /// `fut`'s once it is the last one left only if `spin_for_last`.
    ///
    /// The database answers requests in the order they were sent, so only the oldest request
    /// still unanswered is polled: polling the others could find nothing, and each poll
    /// registers a waker (a pipeline of thirty writes would otherwise cost hundreds of polls).
    fn drive<T>(
        &mut self,
        mut fut: Pin<&mut impl Future<Output = PgResult<T>>>,
        deferred: Vec<Deferred>,
        spin_for_last: bool,
    ) -> (Option<Error>, Result<T>) {
        let mut deferred = VecDeque::from(deferred);
        let Conn {
            runtime,
            connection,
            notifications,
            spin,
            ..
        } = self;
        let spin = *spin;
        let mut first_err = None;
        let mut result = None;
        let mut passes_after_end = 0;
        let mut outstanding = usize::MAX;
        let mut spin_until = Instant::now() + spin;
        let mut queued = false;
        runtime.block_on(poll_fn(|cx| loop {
            // `fut` first, so its request is queued before the connection writes.
            if !queued {
                queued = true;
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    result = Some(r.map_err(pg_err));
                }
            }
            let ended = drive_connection(connection, notifications, cx).is_err();
            while let Some(oldest) = deferred.front_mut() {
                let Poll::Ready(r) = oldest.as_mut().poll(cx) else {
                    break;
                };
                if let Err(e) = r {
                    first_err.get_or_insert(pg_err(e));
                }
                deferred.pop_front();
            }
            if result.is_none() && deferred.is_empty() {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    result = Some(r.map_err(pg_err));
                }
            }
            if result.is_some() && deferred.is_empty() {
                return Poll::Ready(());
            }
            if !ended {
                // PostgreSQL sends each answer of a pipeline as it finishes, microseconds apart:
                // the waiting thread looks again (the runtime polls the socket without
                // blocking) until `spin` has passed without one, rather than sleep and pay a
                // context switch for each. Each look first offers the core to any other thread
                // ready to run: on a small machine that is often the database's backend, busy
                // with the very answer awaited.
                let left = deferred.len() + usize::from(result.is_none());
                if left < outstanding {
                    outstanding = left;
                    spin_until = Instant::now() + spin;
                }
                if (spin_for_last || !deferred.is_empty()) && Instant::now() < spin_until {
                    std::thread::yield_now();
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
            // With the connection dropped every pending answer fails at its next poll; a second
            // pass is only a guard.
            passes_after_end += 1;
            if passes_after_end > 2 {
                let lost = || Error::Unavailable("the database connection was lost".to_string());
                result.get_or_insert_with(|| Err(lost()));
                if !deferred.is_empty() {
                    first_err.get_or_insert_with(lost);
                }
                return Poll::Ready(());
            }
        }));
        let result = result.expect("driven to completion");
        if first_err.is_some() || result.is_err() {
            self.effects.errors += 1;
        }
        (first_err, result)
    }
}

/// Reads what the connection has received and writes what is queued. Notifications are kept;
/// once the connection ends it is dropped, which fails every answer still pending (`Err`).
fn drive_connection(
    connection: &mut Option<Box<dyn Messages>>,
    notifications: &mut VecDeque<Notification>,
    cx: &mut Context<'_>,
) -> Result<()> {
    let Some(conn) = connection.as_mut() else {
        return Err(Error::Unavailable(
            "the database connection was lost".to_string(),
        ));
    };
    loop {
        match conn.poll_message(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => notifications.push_back(n),
            Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                tracing::debug!(notice = %notice.message(), "postgres notice");
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "postgres connection ended");
                *connection = None;
                return Err(pg_err(e));
            }
            Poll::Ready(None) => {
                *connection = None;
                return Err(Error::Unavailable(
                    "the database connection was lost".to_string(),
                ));
            }
            Poll::Pending => return Ok(()),
        }
    }
}

/// The name of a statement queued unsent on a connection ([`Conn::execute_later`]).
pub(crate) type UnsentId = u64;

/// A statement waiting to be sent with the next pipeline: its parameters encoded, and where the
/// integers of its first row go, if anyone wants them.
struct Unsent {
    id: UnsentId,
    stmt: Statement,
    params: Vec<Encoded>,
    ints: Vec<Later>,
}

/// Sends `pipeline` under one `Sync`, fills the slots of the statements that want integers, and
/// returns the answers of the last `wanted` statements.
async fn run_pipeline(
    client: Arc<Client>,
    pipeline: Vec<Unsent>,
    wanted: usize,
) -> PgResult<Vec<Vec<Row>>> {
    let items = pipeline.iter().map(|u| {
        let params = u.params.iter().map(|p| p as &(dyn ToSql + Sync));
        (&u.stmt, params)
    });
    let answers = client.query_pipeline(items).await?;
    for (unsent, rows) in pipeline.iter().zip(&answers) {
        for (i, slot) in unsent.ints.iter().enumerate() {
            let value = rows.first().and_then(|row| row.try_get::<_, i64>(i).ok());
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
        }
    }
    let skip = answers.len().saturating_sub(wanted);
    Ok(answers.into_iter().skip(skip).collect())
}

/// A parameter in its wire encoding, so that a deferred statement owns what it sends.
#[derive(Debug)]
struct Encoded(Option<BytesMut>);

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Encodes `params` as `stmt` declares them, checking each type as the client library would.
fn encode(stmt: &Statement, params: Params<'_>) -> Result<Vec<Encoded>> {
    if params.len() != stmt.params().len() {
        return Err(Error::Storage(format!(
            "statement takes {} parameters, {} given",
            stmt.params().len(),
            params.len()
        )));
    }
    encode_as(stmt.params(), params)
}

/// Encodes `params` as the parameter types `types`, one for one.
fn encode_as(types: &[Type], params: Params<'_>) -> Result<Vec<Encoded>> {
    params
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (param, ty))| {
            let mut out = BytesMut::new();
            match param.to_sql_checked(ty, &mut out) {
                Ok(IsNull::Yes) => Ok(Encoded(None)),
                Ok(IsNull::No) => Ok(Encoded(Some(out))),
                Err(e) => Err(Error::Storage(format!("parameter ${}: {e}", i + 1))),
            }
        })
        .collect()
}

/// How long a node waits before it tries to reach the database again after losing it.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Conditions that pass on their own (a lost or refused connection, a server restarting, a
/// statement timeout, a serialization failure) become `Unavailable` (HTTP 503 with
/// `Retry-After`); everything else is `Storage` (HTTP 500).
pub(crate) fn pg_err(err: tokio_postgres::Error) -> Error {
    // Request bodies with U+0000 are refused before they get here; a query or path parameter
    // with one reaches PostgreSQL, which cannot hold it in text.
    if err.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE) {
        return Error::validation("text must not contain the NUL character (U+0000)");
    }
    let transient = match err.code() {
        None => true, // I/O, a closed connection, a timeout: no SQLSTATE at all
        Some(code) => is_transient(code),
    };
    // A database error's Display is only "db error"; its message says what happened.
    let msg = match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => redact(&err.to_string()),
    };
    if transient {
        Error::Unavailable(format!("database unavailable: {msg}"))
    } else {
        Error::Storage(msg)
    }
}

fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources; 57: operator intervention (admin
    // shutdown, statement timeout, cannot connect now); 40: serialization failure, deadlock.
    matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// Error texts may quote the connection string; a password in it must not reach a log or a
/// response.
pub(crate) fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for word in msg.split_inclusive(char::is_whitespace) {
        match word.find("://").zip(word.find('@')) {
            Some((scheme, at)) if scheme < at => {
                out.push_str(&word[..scheme + 3]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{may_write, redact};

    #[test]
    fn only_a_plain_select_is_known_not_to_write() {
        for read in ["SELECT 1", "  select id FROM tasks", "\n\tSelect x"] {
            assert!(!may_write(read), "{read}");
        }
        for write in [
            "UPDATE tasks SET status = $2 WHERE id = $1 RETURNING id",
            "WITH written AS (UPDATE task_runs SET status = $2) SELECT 1",
            "WITH RECURSIVE heads AS (SELECT 1) SELECT * FROM heads",
            "INSERT INTO t VALUES (1)",
            "SELEC",
            "",
        ] {
            assert!(may_write(write), "{write}");
        }
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact("cannot reach postgres://me:secret@db:5432/tl now"),
            "cannot reach postgres://***@db:5432/tl now"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
