//! The dashboard and inbox counters on PostgreSQL: the primitives the shared delta bookkeeping
//! (`crate::counter_deltas`) reads and writes, and the once-per-batch upserts that apply the
//! batch's net sum just before COMMIT: the counters are exact at every commit.

use postgres::Row;
use tasklane_core::observe::counters::{CounterDeltas, RunBucket, RunTally, TaskBucket, TaskDims};
use tasklane_core::Result;

use super::rows::column;
use super::{Conn, Db};
use crate::counter_deltas::CountedStore;
use crate::known_rows::KnownRows;

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

    fn known(&mut self) -> Option<&mut KnownRows> {
        self.known.as_mut()
    }

    fn read_bucket(&mut self, task_id: &str) -> Result<Option<TaskBucket>> {
        self.conn
            .query_opt(BUCKET_SQL, &[&task_id])?
            .as_ref()
            .map(bucket_from_row)
            .transpose()
    }

    fn read_flags(&mut self, task_id: &str) -> Result<(bool, bool)> {
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
        self.conn.execute_later(
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
    // One statement per table, whatever the number of buckets: every bucket's net change as
    // parallel arrays, unnested into rows (each bucket appears once, as ON CONFLICT requires).
    let tasks: Vec<_> = deltas.task_changes().collect();
    if !tasks.is_empty() {
        let text = |f: &dyn Fn(&TaskBucket) -> &str| -> Vec<&str> {
            tasks.iter().map(|(b, _)| f(b)).collect()
        };
        let (scope, workspace, owner_kind, owner_ref, channel, origin) = (
            text(&|b| &b.dims.scope),
            text(&|b| &b.dims.workspace_id),
            text(&|b| &b.dims.owner_kind),
            text(&|b| &b.dims.owner_ref),
            text(&|b| &b.dims.network_channel),
            text(&|b| &b.dims.origin_kind),
        );
        let (status, approval_state, approval_policy) = (
            text(&|b| &b.status),
            text(&|b| &b.approval_state),
            text(&|b| &b.approval_policy),
        );
        let has_deps: Vec<i64> = tasks.iter().map(|(b, _)| i64::from(b.has_deps)).collect();
        let failed: Vec<i64> = tasks
            .iter()
            .map(|(b, _)| i64::from(b.latest_failed))
            .collect();
        let n: Vec<i64> = tasks.iter().map(|(_, n)| *n).collect();
        conn.execute_later(
            "INSERT INTO obs_task_counts SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], \
             $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TEXT[], \
             $11::BIGINT[], $12::BIGINT[]) \
             ON CONFLICT (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, \
             status, approval_state, has_deps, approval_policy, latest_failed) \
             DO UPDATE SET n = obs_task_counts.n + EXCLUDED.n",
            &[
                &scope,
                &workspace,
                &owner_kind,
                &owner_ref,
                &channel,
                &origin,
                &status,
                &approval_state,
                &has_deps,
                &approval_policy,
                &failed,
                &n,
            ],
        )?;
    }
    let runs: Vec<_> = deltas.run_changes().collect();
    if !runs.is_empty() {
        let text = |f: &dyn Fn(&RunBucket) -> &str| -> Vec<&str> {
            runs.iter().map(|(b, _)| f(b)).collect()
        };
        let int =
            |f: &dyn Fn(&RunTally) -> i64| -> Vec<i64> { runs.iter().map(|(_, t)| f(t)).collect() };
        conn.execute_later(
            "INSERT INTO obs_run_counts SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], \
             $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::BIGINT[], \
             $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], \
             $16::BIGINT[]) \
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
                &text(&|b| &b.dims.scope),
                &text(&|b| &b.dims.workspace_id),
                &text(&|b| &b.dims.owner_kind),
                &text(&|b| &b.dims.owner_ref),
                &text(&|b| &b.dims.network_channel),
                &text(&|b| &b.dims.origin_kind),
                &text(&|b| &b.run_channel),
                &text(&|b| &b.run_origin_kind),
                &text(&|b| &b.status),
                &int(&|t| t.n),
                &int(&|t| t.claim_n),
                &int(&|t| t.claim_sum),
                &int(&|t| t.claim_max),
                &int(&|t| t.start_n),
                &int(&|t| t.start_sum),
                &int(&|t| t.start_max),
            ],
        )?;
    }
    Ok(())
}
