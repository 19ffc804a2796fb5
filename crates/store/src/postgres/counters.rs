//! The dashboard and inbox counters on PostgreSQL: the primitives the shared delta bookkeeping
//! (`crate::counter_deltas`) reads and writes, and the once-per-batch upserts that apply the
//! batch's net sum just before COMMIT: the counters are exact at every commit.

use postgres::Row;
use tasklane_core::observe::counters::{CounterDeltas, TaskBucket, TaskDims};
use tasklane_core::Result;

use super::rows::column;
use super::{Conn, Db};
use crate::counter_deltas::CountedStore;

/// The columns of a task's bucket, in [`bucket_from_row`] order. The flags are BIGINT 0/1 in
/// the table; the comparisons make them booleans.
const BUCKET_SQL: &str = "SELECT scope, COALESCE(workspace_id, ''), COALESCE(owner_kind, ''), \
     COALESCE(owner_ref, ''), COALESCE(network_channel, ''), origin_kind, status, approval_state, \
     dependency_count > 0, approval_policy, latest_run_failed <> 0 FROM tasks WHERE id = $1";

fn bucket_from_row(row: &Row) -> Result<TaskBucket> {
    Ok(TaskBucket {
        dims: TaskDims {
            scope: column(row, 0)?,
            workspace_id: column(row, 1)?,
            owner_kind: column(row, 2)?,
            owner_ref: column(row, 3)?,
            network_channel: column(row, 4)?,
            origin_kind: column(row, 5)?,
        },
        status: column(row, 6)?,
        approval_state: column(row, 7)?,
        has_deps: column(row, 8)?,
        approval_policy: column(row, 9)?,
        latest_failed: column(row, 10)?,
    })
}

impl CountedStore for Db<'_> {
    fn deltas(&mut self) -> &mut CounterDeltas {
        &mut self.deltas
    }

    fn stored_bucket(&mut self, task_id: &str) -> Result<Option<TaskBucket>> {
        self.conn
            .query_opt(BUCKET_SQL, &[&task_id])?
            .as_ref()
            .map(bucket_from_row)
            .transpose()
    }

    fn stored_flags(&mut self, task_id: &str) -> Result<(bool, bool)> {
        let row = self.conn.query_opt(
            "SELECT dependency_count > 0, latest_run_failed <> 0 FROM tasks WHERE id = $1",
            &[&task_id],
        )?;
        match row {
            Some(row) => Ok((column(&row, 0)?, column(&row, 1)?)),
            None => Ok((false, false)),
        }
    }

    fn dependents(&mut self, task_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = self.conn.query(
            "SELECT task_id, COUNT(*) FROM task_dependencies WHERE depends_on_task_id = $1 \
             GROUP BY task_id",
            &[&task_id],
        )?;
        rows.iter()
            .map(|r| Ok((column::<String>(r, 0)?, column::<i64>(r, 1)?)))
            .collect()
    }

    fn bump_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<Option<i64>> {
        self.conn
            .query_opt(
                "UPDATE tasks SET dependency_count = dependency_count + $2 WHERE id = $1 \
                 RETURNING dependency_count",
                &[&task_id, &delta],
            )?
            .map(|row| column(&row, 0))
            .transpose()
    }

    fn latest_run_failed(&mut self, task_id: &str) -> Result<bool> {
        match self.conn.query_opt(
            "SELECT status = 'failed' FROM task_runs WHERE task_id = $1 \
             ORDER BY attempt DESC, queued_at DESC, id DESC LIMIT 1",
            &[&task_id],
        )? {
            Some(row) => column::<bool>(&row, 0),
            None => Ok(false),
        }
    }

    fn set_latest_run_failed(&mut self, task_id: &str, failed: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE tasks SET latest_run_failed = $2 WHERE id = $1",
            &[&task_id, &i64::from(failed)],
        )?;
        Ok(())
    }
}

/// Adds the batch's net counter changes to the counter tables (rows that reach zero stay, as on
/// SQLite).
pub(crate) fn apply(conn: &mut Conn, deltas: &CounterDeltas) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    for (b, n) in deltas.task_changes() {
        let d = &b.dims;
        conn.execute(
            "INSERT INTO obs_task_counts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, \
             status, approval_state, has_deps, approval_policy, latest_failed) \
             DO UPDATE SET n = obs_task_counts.n + EXCLUDED.n",
            &[
                &d.scope,
                &d.workspace_id,
                &d.owner_kind,
                &d.owner_ref,
                &d.network_channel,
                &d.origin_kind,
                &b.status,
                &b.approval_state,
                &i64::from(b.has_deps),
                &b.approval_policy,
                &i64::from(b.latest_failed),
                &n,
            ],
        )?;
    }
    for (b, t) in deltas.run_changes() {
        let d = &b.dims;
        conn.execute(
            "INSERT INTO obs_run_counts VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, \
             run_channel, run_origin_kind, status) DO UPDATE SET \
             n = obs_run_counts.n + EXCLUDED.n, \
             claim_n = obs_run_counts.claim_n + EXCLUDED.claim_n, \
             claim_sum = obs_run_counts.claim_sum + EXCLUDED.claim_sum, \
             claim_max = GREATEST(obs_run_counts.claim_max, EXCLUDED.claim_max), \
             start_n = obs_run_counts.start_n + EXCLUDED.start_n, \
             start_sum = obs_run_counts.start_sum + EXCLUDED.start_sum, \
             start_max = GREATEST(obs_run_counts.start_max, EXCLUDED.start_max)",
            &[
                &d.scope,
                &d.workspace_id,
                &d.owner_kind,
                &d.owner_ref,
                &d.network_channel,
                &d.origin_kind,
                &b.run_channel,
                &b.run_origin_kind,
                &b.status,
                &t.n,
                &t.claim_n,
                &t.claim_sum,
                &t.claim_max,
                &t.start_n,
                &t.start_sum,
                &t.start_max,
            ],
        )?;
    }
    Ok(())
}
