//! The servers sharing the database: each registers when its listener connects, and its listener
//! marks it seen every second (registering again after a stall, see [`seen`]). What they are for:
//!
//! - "since the service started" means the same on every server;
//! - a writer notifies the other servers of its commits only when there are other servers
//!   ([`peers_sql`]). A notification costs PostgreSQL a signal to every listening connection and
//!   a wake-up of each, per commit, which a server alone would pay to tell nobody.
//!
//! Why no commit goes unheard: a server registers under the cluster's write lock, then LISTENs,
//! then catches up on what committed meanwhile (`listener`), and a writer reads the peers under
//! that same lock. A commit that did not notify a new server therefore held the lock before the
//! server registered, so it committed before the server's catch-up read, which sees it.

use std::time::Duration;

use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::conn::Conn;
use super::{PgStore, WRITE_LOCK};

/// A server not seen for this long is gone (its listener marks it every second).
const GONE_AFTER: &str = "10 seconds";

/// The number of other servers a writer notifies of its commits, as an expression that a
/// statement run under the write lock can return. A server stays a peer for a minute after it
/// was last seen: notifying one that has gone costs little, and one whose listener stalls a while
/// keeps hearing.
pub(crate) fn peers_sql(node: i64) -> String {
    format!(
        "(SELECT count(*) FROM tasklane_nodes \
         WHERE node_id <> {node} AND seen_at > now() - interval '1 minute')"
    )
}

/// Registers this server, started at `started_at`, under the write lock (see the module's
/// comment), and forgets servers gone for an hour. `seen_at` is the time of the registration,
/// not of the transaction's start: the wait for the lock could make the row stale at birth.
/// The wait is bounded, so that stopping a server never hangs on another server's writes.
pub(crate) fn register(conn: &mut Conn, node: i64, started_at: Ts) -> Result<()> {
    conn.batch(&format!(
        "BEGIN; SET LOCAL lock_timeout = '5s'; SELECT pg_advisory_xact_lock({WRITE_LOCK}); \
         INSERT INTO tasklane_nodes (node_id, started_at, seen_at) \
         VALUES ({node}, {started}, clock_timestamp()) \
         ON CONFLICT (node_id) DO UPDATE SET seen_at = clock_timestamp(); \
         DELETE FROM tasklane_nodes WHERE seen_at < now() - interval '1 hour'; COMMIT",
        started = started_at.micros()
    ))
    .inspect_err(|_| {
        if !conn.is_closed() {
            let _ = conn.batch("ROLLBACK");
        }
    })
}

/// A server that has not marked itself seen for this long may have stopped being a peer to the
/// others ([`peers_sql`]): it registers again rather than only marking itself.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(30);

/// Marks this server, started at `started_at`, seen now; it last did `since` ago. One whose row
/// is gone (forgotten after an hour away) or that may have gone stale registers again, under
/// the write lock: the others may have stopped notifying it, and the catch-up read that follows
/// (`listener`) must then see every commit they did not notify.
pub(crate) fn seen(conn: &mut Conn, node: i64, started_at: Ts, since: Duration) -> Result<()> {
    if since < STALE_AFTER {
        let marked = conn.execute(
            "UPDATE tasklane_nodes SET seen_at = now() WHERE node_id = $1",
            &[&node],
        )?;
        if marked == 1 {
            return Ok(());
        }
    }
    register(conn, node, started_at)
}

impl PgStore {
    /// When the earliest server still running started (at least as early as `this_server`).
    pub async fn service_started_at(&self, this_server: Ts) -> Result<Ts> {
        let earliest: Option<i64> = self
            .read_db(|db| {
                Ok(db
                    .conn
                    .query_one(
                        &format!(
                            "SELECT MIN(started_at) FROM tasklane_nodes
                             WHERE seen_at > now() - interval '{GONE_AFTER}'"
                        ),
                        &[],
                    )?
                    .get(0))
            })
            .await?;
        Ok(earliest.map_or(this_server, |t| Ts(t).min(this_server)))
    }
}
