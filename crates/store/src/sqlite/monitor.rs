//! What a monitoring scrape and a readiness probe read: the queue's shape, active leases, the
//! WAL's size and whether the database answers. Nothing reads the tasks table: the queue comes
//! from counter tables and from index-only passes over the queued runs, so a scrape's cost grows
//! with the queue's depth (tens of milliseconds per million queued runs), not with the history.

use rusqlite::OptionalExtension;
use tasklane_core::{Error, Result};

use super::error::sql_err;
use super::status_sets::active_run;
use super::{file_len, schema, wal_path, SqliteStore};
use crate::monitor::{QueueGauges, WorkspaceFold};

impl SqliteStore {
    /// Whether the database answers a read on a pooled connection and carries the schema this
    /// binary migrates to. `Err` says why not.
    pub async fn check_ready(&self) -> Result<()> {
        let path = self.path().to_path_buf();
        // A database file removed or unmounted under a running server still answers from the open
        // descriptors, but nothing written any more would survive a restart.
        if !path.exists() {
            return Err(Error::Unavailable(format!(
                "database file {} is missing",
                path.display()
            )));
        }
        let version: i64 = self
            .read_db(|db| {
                db.conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(sql_err)
            })
            .await?;
        if version != schema::SCHEMA_VERSION {
            return Err(Error::Unavailable(format!(
                "database schema version {version}, expected {}",
                schema::SCHEMA_VERSION
            )));
        }
        Ok(())
    }

    /// Size in bytes of the write-ahead log file (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        file_len(&wal_path(self.path()))
    }

    /// The queue per priority and per workspace, and the active leases, in one read snapshot.
    pub async fn queue_gauges(&self) -> Result<QueueGauges> {
        self.read_db(|db| {
            let conn = db.conn;
            let mut gauges = QueueGauges::default();
            // Per priority: one pass over the queued runs' age index, which carries the priority
            // (no table reads). It is linear in the queue's depth, on a read connection.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT priority_rank, COUNT(*), MIN(queued_at) \
                     FROM task_runs INDEXED BY task_runs_queue_recent \
                     WHERE status = 'queued' GROUP BY priority_rank",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql_err)?;
            for (rank, depth, oldest) in rows {
                gauges.set_priority(rank, depth, oldest);
            }

            // Per workspace: depths from the run counters the dashboard keeps.
            let depths: Vec<(String, i64)> = conn
                .prepare_cached(
                    "SELECT workspace_id, SUM(n) FROM obs_run_counts WHERE status = 'queued' \
                     GROUP BY workspace_id HAVING SUM(n) > 0",
                )
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(sql_err)?;
            let mut workspaces = WorkspaceFold::new(depths);

            // Oldest per label: walk the queue oldest first until every label has its oldest
            // run. Usually a few rows; at worst (a label whose runs are all recent) the queue.
            if !workspaces.complete() {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT COALESCE(t.workspace_id, ''), r.queued_at FROM task_runs r \
                         JOIN tasks t ON t.id = r.task_id \
                         WHERE r.status = 'queued' ORDER BY r.queued_at, r.id",
                    )
                    .map_err(sql_err)?;
                let mut rows = stmt.query([]).map_err(sql_err)?;
                while let Some(row) = rows.next().map_err(sql_err)? {
                    let ws: String = row.get(0).map_err(sql_err)?;
                    let at: i64 = row.get(1).map_err(sql_err)?;
                    if workspaces.oldest(ws, at) {
                        break;
                    }
                }
            }
            gauges.by_workspace = workspaces.finish();

            gauges.active_leases = conn
                .query_row(
                    concat!(
                        "SELECT COUNT(*) FROM task_runs WHERE ",
                        active_run!("status"),
                        " AND lease_until IS NOT NULL"
                    ),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?
                .unwrap_or(0);
            Ok(gauges)
        })
        .await
    }
}
