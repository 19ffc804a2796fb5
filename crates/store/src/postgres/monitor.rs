//! What a monitoring scrape reads on PostgreSQL: the queue's shape and the active leases, in one
//! read snapshot. As on SQLite nothing scans the tasks table: the queue comes from the counter
//! tables and from passes over the queued runs' partial indexes, so a scrape's cost grows with
//! the queue's depth, not with the history.

use tasklane_core::{Error, Result};

use super::PgStore;
use crate::monitor::{QueueGauges, WorkspaceFold};
use crate::sqlite::status_sets::active_run;

/// Queued runs read per step of the walk for the oldest run of each workspace label.
const OLDEST_PAGE: i64 = 256;

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r postgres::Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::Storage(format!("column {idx}: {e}")))
}

impl PgStore {
    /// The queue per priority and per workspace, and the active leases, in one read snapshot.
    pub async fn queue_gauges(&self) -> Result<QueueGauges> {
        self.read_db(|db| {
            let conn = &mut *db.conn;
            let mut gauges = QueueGauges::default();
            // Per priority: one pass over the queued runs' age index, which carries the priority.
            // It is linear in the queue's depth, on a read connection.
            for row in conn.query(
                "SELECT priority_rank, COUNT(*), MIN(queued_at) \
                 FROM task_runs WHERE status = 'queued' GROUP BY priority_rank",
                &[],
            )? {
                gauges.set_priority(get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
            }

            // Per workspace: depths from the run counters the dashboard keeps.
            let depths: Vec<(String, i64)> = conn
                .query(
                    "SELECT workspace_id, SUM(n)::BIGINT FROM obs_run_counts \
                     WHERE status = 'queued' GROUP BY workspace_id HAVING SUM(n) > 0",
                    &[],
                )?
                .iter()
                .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_>>()?;
            let mut workspaces = WorkspaceFold::new(depths);

            // Oldest per label: walk the queue oldest first until every label has its oldest
            // run. Usually one page; at worst (a label whose runs are all recent) the queue. Pages
            // resume after their last key, so each is one range of the queue's age index.
            let mut after: Option<(i64, String)> = None;
            while !workspaces.complete() {
                let rows = match &after {
                    None => conn.query(
                        "SELECT COALESCE(t.workspace_id, ''), r.queued_at, r.id FROM task_runs r \
                         JOIN tasks t ON t.id = r.task_id WHERE r.status = 'queued' \
                         ORDER BY r.queued_at, r.id LIMIT $1",
                        &[&OLDEST_PAGE],
                    )?,
                    Some((at, id)) => conn.query(
                        "SELECT COALESCE(t.workspace_id, ''), r.queued_at, r.id FROM task_runs r \
                         JOIN tasks t ON t.id = r.task_id WHERE r.status = 'queued' \
                         AND (r.queued_at, r.id) > ($1, $2) ORDER BY r.queued_at, r.id LIMIT $3",
                        &[at, id, &OLDEST_PAGE],
                    )?,
                };
                let full = rows.len() as i64 == OLDEST_PAGE;
                for row in &rows {
                    if workspaces.oldest(get(row, 0)?, get(row, 1)?) {
                        break;
                    }
                }
                match rows.last() {
                    Some(last) if full => after = Some((get(last, 1)?, get(last, 2)?)),
                    // The queue ended.
                    _ => break,
                }
            }
            gauges.by_workspace = workspaces.finish();

            gauges.active_leases = get(
                &conn.query_one(
                    concat!(
                        "SELECT COUNT(*) FROM task_runs WHERE ",
                        active_run!("status"),
                        " AND lease_until IS NOT NULL"
                    ),
                    &[],
                )?,
                0,
            )?;
            Ok(gauges)
        })
        .await
    }
}
