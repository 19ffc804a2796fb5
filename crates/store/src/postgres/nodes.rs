//! The servers sharing the database, so that "since the service started" means the same on
//! every server: each registers when it opens and its listener marks it seen every second.

use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::conn::Conn;
use super::PgStore;

/// A server not seen for this long is gone (its listener marks it every second).
const GONE_AFTER: &str = "10 seconds";

/// Registers this server, started at `started_at`, and forgets servers gone for an hour.
pub(crate) fn register(conn: &mut Conn, node: i64, started_at: Ts) -> Result<()> {
    conn.execute(
        "INSERT INTO tasklane_nodes (node_id, started_at, seen_at) VALUES ($1, $2, now())
         ON CONFLICT (node_id) DO UPDATE SET seen_at = now()",
        &[&node, &started_at.micros()],
    )?;
    conn.execute(
        "DELETE FROM tasklane_nodes WHERE seen_at < now() - interval '1 hour'",
        &[],
    )?;
    Ok(())
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
