//! The dashboard and inbox counters on SQLite: the primitives the shared delta bookkeeping
//! (`crate::counter_deltas`) reads and writes, and the once-per-batch upserts that apply the
//! batch's net sum just before COMMIT: the counters are exact at every commit, as they were with
//! triggers, for a fraction of the writes.

use rusqlite::{Connection, OptionalExtension};
use tasklane_core::observe::counters::{CounterDeltas, TaskBucket, TaskDims};
use tasklane_core::Result;

use super::error::sql_err;
use super::Db;
use crate::counter_deltas::CountedStore;
use crate::known_rows::KnownRows;

/// The columns of a task's bucket, in [`bucket_from_row`] order.
const BUCKET_COLUMNS: &str = "scope, COALESCE(workspace_id, ''), COALESCE(owner_kind, ''), \
     COALESCE(owner_ref, ''), COALESCE(network_channel, ''), origin_kind, status, approval_state, \
     dependency_count > 0, approval_policy, latest_run_failed";

fn bucket_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskBucket> {
    Ok(TaskBucket {
        dims: TaskDims {
            scope: row.get(0)?,
            workspace_id: row.get(1)?,
            owner_kind: row.get(2)?,
            owner_ref: row.get(3)?,
            network_channel: row.get(4)?,
            origin_kind: row.get(5)?,
        },
        status: row.get(6)?,
        approval_state: row.get(7)?,
        has_deps: row.get(8)?,
        approval_policy: row.get(9)?,
        latest_failed: row.get(10)?,
    })
}

impl CountedStore for Db<'_> {
    fn deltas(&mut self) -> &mut CounterDeltas {
        &mut self.deltas
    }

    fn known(&mut self) -> Option<&mut KnownRows> {
        self.known.as_mut()
    }

    fn read_bucket(&mut self, task_id: &str) -> Result<Option<TaskBucket>> {
        self.flush_task_writes()?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {BUCKET_COLUMNS} FROM tasks WHERE id = ?1"))
            .map_err(sql_err)?;
        stmt.query_row([task_id], bucket_from_row)
            .optional()
            .map_err(sql_err)
    }

    fn read_flags(&mut self, task_id: &str) -> Result<(bool, bool)> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT dependency_count > 0, latest_run_failed FROM tasks WHERE id = ?1",
            )
            .map_err(sql_err)?;
        stmt.query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err)
            .map(Option::unwrap_or_default)
    }

    fn dependents(&mut self, task_id: &str) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task_id, COUNT(*) FROM task_dependencies WHERE depends_on_task_id = ?1 \
                 GROUP BY task_id",
            )
            .map_err(sql_err)?;
        stmt.query_map([task_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql_err)
    }

    fn bump_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<Option<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET dependency_count = dependency_count + ?2 WHERE id = ?1 \
                 RETURNING dependency_count",
            )
            .map_err(sql_err)?;
        stmt.query_row(rusqlite::params![task_id, delta], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql_err)
    }

    fn latest_run_failed(&mut self, task_id: &str) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT status = 'failed' FROM task_runs WHERE task_id = ?1 \
                 ORDER BY attempt DESC, queued_at DESC, id DESC LIMIT 1",
            )
            .map_err(sql_err)?;
        Ok(stmt
            .query_row([task_id], |r| r.get::<_, bool>(0))
            .optional()
            .map_err(sql_err)?
            .unwrap_or(false))
    }

    fn set_latest_run_failed(&mut self, task_id: &str, failed: bool) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE tasks SET latest_run_failed = ?2 WHERE id = ?1")
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![task_id, failed])
            .map_err(sql_err)?;
        Ok(())
    }
}

/// Adds the batch's net counter changes to the counter tables.
pub(super) fn apply(conn: &Connection, deltas: &CounterDeltas) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut tasks = conn
        .prepare_cached(
            "INSERT INTO obs_task_counts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
        )
        .map_err(sql_err)?;
    for (b, n) in deltas.task_changes() {
        let d = &b.dims;
        tasks
            .execute(rusqlite::params![
                d.scope,
                d.workspace_id,
                d.owner_kind,
                d.owner_ref,
                d.network_channel,
                d.origin_kind,
                b.status,
                b.approval_state,
                b.has_deps,
                b.approval_policy,
                b.latest_failed,
                n
            ])
            .map_err(sql_err)?;
    }
    let mut runs = conn
        .prepare_cached(
            "INSERT INTO obs_run_counts VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n, \
             claim_sum = claim_sum + excluded.claim_sum, claim_max = MAX(claim_max, excluded.claim_max), \
             start_n = start_n + excluded.start_n, start_sum = start_sum + excluded.start_sum, \
             start_max = MAX(start_max, excluded.start_max)",
        )
        .map_err(sql_err)?;
    for (b, t) in deltas.run_changes() {
        let d = &b.dims;
        runs.execute(rusqlite::params![
            d.scope,
            d.workspace_id,
            d.owner_kind,
            d.owner_ref,
            d.network_channel,
            d.origin_kind,
            b.run_channel,
            b.run_origin_kind,
            b.status,
            t.n,
            t.claim_n,
            t.claim_sum,
            t.claim_max,
            t.start_n,
            t.start_sum,
            t.start_max
        ])
        .map_err(sql_err)?;
    }
    Ok(())
}
