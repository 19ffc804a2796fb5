//! The dashboard and inbox counters on PostgreSQL: what the write primitives report as deltas,
//! and the once-per-batch upserts that apply them (bucket formulas:
//! `tasklane_core::observe::counters`). The same bookkeeping as `sqlite/counters.rs`.
//!
//! Every write primitive that changes a counted fact of a task or a run adds the change to its
//! command's [`CounterDeltas`]. The writer keeps a command's deltas only when its savepoint is
//! kept, and applies the batch's net sum just before COMMIT, inside the same transaction: the
//! counters are exact at every commit.

use postgres::Row;
use tasklane_core::model::{Run, RunStatus, Task};
use tasklane_core::observe::counters::{CounterDeltas, RunBucket, RunTally, TaskBucket, TaskDims};
use tasklane_core::store::ReadStore;
use tasklane_core::Result;

use super::rows::column;
use super::{Conn, Db};

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

/// The run fields a run's bucket and tally depend on.
fn run_counted_fields_differ(a: &Run, b: &Run) -> bool {
    a.status != b.status
        || a.network_channel != b.network_channel
        || a.origin.kind != b.origin.kind
        || a.queued_at != b.queued_at
        || a.claimed_at != b.claimed_at
        || a.started_at != b.started_at
}

impl Db<'_> {
    /// The bucket a task counts in now, as stored.
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

    /// A new task counts in its bucket: no edges leave it and it has no run yet.
    pub(super) fn count_inserted_task(&mut self, task: &Task) {
        self.deltas.task(TaskBucket::of(task, false, false), 1);
    }

    /// A task rewritten from `old` to `new`: it may change bucket, and when its dimensions
    /// change its runs' contributions move with it.
    pub(super) fn count_updated_task(&mut self, old: &Task, new: &Task) -> Result<()> {
        let (has_deps, failed) = (false, false);
        if TaskBucket::of(old, has_deps, failed) == TaskBucket::of(new, has_deps, failed) {
            return Ok(());
        }
        let (has_deps, failed) = self.stored_flags(&new.id)?;
        self.deltas.task_moved(
            TaskBucket::of(old, has_deps, failed),
            TaskBucket::of(new, has_deps, failed),
        );
        let (from, to) = (TaskDims::of(old), TaskDims::of(new));
        if from != to {
            for run in self.runs_of_task(&new.id)? {
                let tally = RunTally::of(&run);
                self.deltas.run_changed(
                    (RunBucket::of(from.clone(), &run), tally),
                    (RunBucket::of(to.clone(), &run), tally),
                );
            }
        }
        Ok(())
    }

    /// Before a task is deleted: it and its runs leave their buckets, and the tasks that depend
    /// on it lose those edges (the cascade deletes them).
    pub(super) fn count_deleted_task(&mut self, task_id: &str) -> Result<()> {
        let Some(bucket) = self.stored_bucket(task_id)? else {
            return Ok(());
        };
        for run in self.runs_of_task(task_id)? {
            self.deltas.run(
                RunBucket::of(bucket.dims.clone(), &run),
                RunTally::of(&run).removed(),
            );
        }
        self.deltas.task(bucket, -1);
        let rows = self.conn.query(
            "SELECT task_id, COUNT(*) FROM task_dependencies WHERE depends_on_task_id = $1 \
             GROUP BY task_id",
            &[&task_id],
        )?;
        let dependents = rows
            .iter()
            .map(|r| Ok((column::<String>(r, 0)?, column::<i64>(r, 1)?)))
            .collect::<Result<Vec<_>>>()?;
        for (dependent, edges) in dependents {
            self.add_dependency_count(&dependent, -edges)?;
        }
        Ok(())
    }

    /// Moves a task's `dependency_count` by `delta`, and its bucket when that makes the first
    /// edge appear or the last one go.
    pub(super) fn add_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<()> {
        let Some(row) = self.conn.query_opt(
            "UPDATE tasks SET dependency_count = dependency_count + $2 WHERE id = $1 \
             RETURNING dependency_count",
            &[&task_id, &delta],
        )?
        else {
            return Ok(());
        };
        let after: i64 = column(&row, 0)?;
        let before = after - delta;
        if (before > 0) != (after > 0) {
            if let Some(now) = self.stored_bucket(task_id)? {
                let was = TaskBucket {
                    has_deps: before > 0,
                    ..now.clone()
                };
                self.deltas.task_moved(was, now);
            }
        }
        Ok(())
    }

    /// A new run counts in its bucket, and may change whether its task's latest run failed.
    pub(super) fn count_inserted_run(&mut self, run: &Run) -> Result<()> {
        let Some(bucket) = self.stored_bucket(&run.task_id)? else {
            return Ok(());
        };
        self.deltas
            .run(RunBucket::of(bucket.dims.clone(), run), RunTally::of(run));
        // Only a failed new run, or a new run over a failed latest one, can flip the flag.
        if bucket.latest_failed || run.status == RunStatus::Failed {
            self.refresh_latest_failed(&run.task_id, bucket)?;
        }
        Ok(())
    }

    /// A run rewritten from `old` to `new`.
    pub(super) fn count_updated_run(&mut self, old: &Run, new: &Run) -> Result<()> {
        if !run_counted_fields_differ(old, new) {
            return Ok(());
        }
        let Some(bucket) = self.stored_bucket(&new.task_id)? else {
            return Ok(());
        };
        self.deltas.run_changed(
            (RunBucket::of(bucket.dims.clone(), old), RunTally::of(old)),
            (RunBucket::of(bucket.dims.clone(), new), RunTally::of(new)),
        );
        if old.status != new.status
            && (old.status == RunStatus::Failed || new.status == RunStatus::Failed)
        {
            self.refresh_latest_failed(&new.task_id, bucket)?;
        }
        Ok(())
    }

    /// Re-reads whether the task's latest run (highest attempt, then queued_at, then id) failed;
    /// writes the flag and moves the task's bucket only when it flipped.
    fn refresh_latest_failed(&mut self, task_id: &str, bucket: TaskBucket) -> Result<()> {
        let failed = match self.conn.query_opt(
            "SELECT status = 'failed' FROM task_runs WHERE task_id = $1 \
             ORDER BY attempt DESC, queued_at DESC, id DESC LIMIT 1",
            &[&task_id],
        )? {
            Some(row) => column::<bool>(&row, 0)?,
            None => false,
        };
        if failed == bucket.latest_failed {
            return Ok(());
        }
        self.conn.execute(
            "UPDATE tasks SET latest_run_failed = $2 WHERE id = $1",
            &[&task_id, &i64::from(failed)],
        )?;
        let now = TaskBucket {
            latest_failed: failed,
            ..bucket.clone()
        };
        self.deltas.task_moved(bucket, now);
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
        conn.execute(
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
        conn.execute(
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
