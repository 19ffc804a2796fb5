//! The servers sharing the database: each registers when its listener connects and its listener
//! marks it seen every second. What they are for:
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
/// comment), and forgets servers gone for an hour.
pub(crate) fn register(conn: &mut Conn, node: i64, started_at: Ts) -> Result<()> {
    conn.batch(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); \
         INSERT INTO tasklane_nodes (node_id, started_at, seen_at) \
         VALUES ({node}, {started}, now()) \
         ON CONFLICT (node_id) DO UPDATE SET seen_at = now(); \
         DELETE FROM tasklane_nodes WHERE seen_at < now() - interval '1 hour'; COMMIT",
        started = started_at.micros()
    ))
    .inspect_err(|_| {
        if !conn.is_closed() {
            let _ = conn.batch("ROLLBACK");
        }
    })
}

/// Marks this server seen now.
pub(crate) fn seen(conn: &mut Conn, node: i64) -> Result<()> {
    conn.execute(
        "UPDATE tasklane_nodes SET seen_at = now() WHERE node_id = $1",
        &[&node],
    )?;
    Ok(())
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
