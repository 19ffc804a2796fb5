//! The dashboard and inbox counters on SQLite: what the write primitives report as deltas, and
//! the once-per-batch upserts that apply them (bucket formulas: `tasklane_core::observe::counters`).
//!
//! Every write primitive that changes a counted fact of a task or a run adds the change to its
//! command's [`CounterDeltas`]. The writer keeps a command's deltas only when its savepoint is
//! kept, and applies the batch's net sum just before COMMIT, inside the same transaction: the
//! counters are exact at every commit, as they were with triggers, for a fraction of the writes.

use rusqlite::{Connection, OptionalExtension};
use tasklane_core::model::{Run, RunStatus, Task};
use tasklane_core::observe::counters::{CounterDeltas, RunBucket, RunTally, TaskBucket, TaskDims};
use tasklane_core::store::ReadStore;
use tasklane_core::Result;

use super::error::sql_err;
use super::Db;

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
    fn stored_bucket(&self, task_id: &str) -> Result<Option<TaskBucket>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {BUCKET_COLUMNS} FROM tasks WHERE id = ?1"))
            .map_err(sql_err)?;
        stmt.query_row([task_id], bucket_from_row)
            .optional()
            .map_err(sql_err)
    }

    fn stored_flags(&self, task_id: &str) -> Result<(bool, bool)> {
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task_id, COUNT(*) FROM task_dependencies WHERE depends_on_task_id = ?1 \
                 GROUP BY task_id",
            )
            .map_err(sql_err)?;
        let dependents = stmt
            .query_map([task_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql_err)?;
        for (dependent, edges) in dependents {
            self.add_dependency_count(&dependent, -edges)?;
        }
        Ok(())
    }

    /// Moves a task's `dependency_count` by `delta`, and its bucket when that makes the first
    /// edge appear or the last one go.
    pub(super) fn add_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET dependency_count = dependency_count + ?2 WHERE id = ?1 \
                 RETURNING dependency_count",
            )
            .map_err(sql_err)?;
        let Some(after) = stmt
            .query_row(rusqlite::params![task_id, delta], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql_err)?
        else {
            return Ok(());
        };
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
        let failed = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT status = 'failed' FROM task_runs WHERE task_id = ?1 \
                     ORDER BY attempt DESC, queued_at DESC, id DESC LIMIT 1",
                )
                .map_err(sql_err)?;
            stmt.query_row([task_id], |r| r.get::<_, bool>(0))
                .optional()
                .map_err(sql_err)?
                .unwrap_or(false)
        };
        if failed == bucket.latest_failed {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE tasks SET latest_run_failed = ?2 WHERE id = ?1")
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![task_id, failed])
            .map_err(sql_err)?;
        let now = TaskBucket {
            latest_failed: failed,
            ..bucket.clone()
        };
        self.deltas.task_moved(bucket, now);
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
