//! What the write primitives report as counter deltas, on every backend (bucket formulas:
//! `tasklane_core::observe::counters`).
//!
//! Every write primitive that changes a counted fact of a task or a run adds the change to its
//! command's [`CounterDeltas`]. The writer keeps a command's deltas only when its savepoint is
//! kept, and applies the batch's net sum just before COMMIT, inside the same transaction: the
//! counters are exact at every commit. The rules deciding which deltas a write reports live here,
//! once; a backend implements [`CountedStore`]'s primitives (its SQL) and applies the sums
//! (`sqlite/counters.rs`, `postgres/counters.rs`).

use tasklane_core::model::{Run, RunStatus, Task};
use tasklane_core::observe::counters::{CounterDeltas, RunBucket, RunTally, TaskBucket, TaskDims};
use tasklane_core::store::ReadStore;
use tasklane_core::{Error, Result};

use crate::known_rows::KnownRows;

/// The run fields a run's bucket and tally depend on.
fn run_counted_fields_differ(a: &Run, b: &Run) -> bool {
    a.status != b.status
        || a.network_channel != b.network_channel
        || a.origin.kind != b.origin.kind
        || a.queued_at != b.queued_at
        || a.claimed_at != b.claimed_at
        || a.started_at != b.started_at
}

/// A writer's connection that keeps the counters: the primitives a backend implements in SQL,
/// and (provided) the bookkeeping of each write, including the rows the command knows
/// ([`KnownRows`]): the `count_*` methods record each row as stored after the write they count.
pub(crate) trait CountedStore: ReadStore {
    /// The counter changes of the current command.
    fn deltas(&mut self) -> &mut CounterDeltas;

    /// The rows the writer's current command has read or written (`None` outside the writer).
    fn known(&mut self) -> Option<&mut KnownRows>;

    /// Reads the bucket a task counts in now, as stored.
    fn read_bucket(&mut self, task_id: &str) -> Result<Option<TaskBucket>>;

    /// Reads whether the stored task has dependencies and whether its latest run failed (both
    /// false for a task not stored).
    fn read_flags(&mut self, task_id: &str) -> Result<(bool, bool)>;

    /// The tasks that depend on `task_id`, each with its number of edges to it.
    fn dependents(&mut self, task_id: &str) -> Result<Vec<(String, i64)>>;

    /// Adds `delta` to a task's stored `dependency_count`; the count after, `None` if no such task.
    fn bump_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<Option<i64>>;

    /// Whether the task's latest run (highest attempt, then queued_at, then id) failed; false
    /// without runs.
    fn latest_run_failed(&mut self, task_id: &str) -> Result<bool>;

    /// Stores the task's `latest_run_failed` flag.
    fn set_latest_run_failed(&mut self, task_id: &str, failed: bool) -> Result<()>;

    /// The bucket a task counts in now, as stored: as the command knows it, else read.
    fn stored_bucket(&mut self, task_id: &str) -> Result<Option<TaskBucket>> {
        match self.known().and_then(|k| k.bucket(task_id)) {
            Some(bucket) => Ok(Some(bucket)),
            None => self.read_bucket(task_id),
        }
    }

    /// Whether the stored task has dependencies and whether its latest run failed.
    fn stored_flags(&mut self, task_id: &str) -> Result<(bool, bool)> {
        match self.known().and_then(|k| k.flags(task_id)) {
            Some(flags) => Ok((flags.has_deps, flags.latest_failed)),
            None => self.read_flags(task_id),
        }
    }

    /// The task as stored, for an update to diff against: as the command last read or wrote
    /// it, else read.
    fn stored_task(&mut self, id: &str) -> Result<Task> {
        if let Some(task) = self.known().and_then(|k| k.task(id)) {
            return Ok(task.clone());
        }
        self.task(id)?.ok_or_else(|| Error::task_not_found(id))
    }

    /// The run as stored, as [`CountedStore::stored_task`] finds a task.
    fn stored_run(&mut self, id: &str) -> Result<Run> {
        if let Some(run) = self.known().and_then(|k| k.run(id)) {
            return Ok(run.clone());
        }
        self.run(id)?.ok_or_else(|| Error::run_not_found(id))
    }

    /// A new task counts in its bucket: no edges leave it and it has no run yet.
    fn count_inserted_task(&mut self, task: &Task) {
        self.deltas().task(TaskBucket::of(task, false, false), 1);
        if let Some(known) = self.known() {
            known.wrote_task(task, true);
        }
    }

    /// A task rewritten from `old` to `new`: it may change bucket, and when its dimensions
    /// change its runs' contributions move with it.
    fn count_updated_task(&mut self, old: &Task, new: &Task) -> Result<()> {
        self.count_task_change(old, new)?;
        if let Some(known) = self.known() {
            known.wrote_task(new, false);
        }
        Ok(())
    }

    /// The counter side of [`CountedStore::count_updated_task`].
    fn count_task_change(&mut self, old: &Task, new: &Task) -> Result<()> {
        let (has_deps, failed) = (false, false);
        if TaskBucket::of(old, has_deps, failed) == TaskBucket::of(new, has_deps, failed) {
            return Ok(());
        }
        let (has_deps, failed) = self.stored_flags(&new.id)?;
        self.deltas().task_moved(
            TaskBucket::of(old, has_deps, failed),
            TaskBucket::of(new, has_deps, failed),
        );
        let (from, to) = (TaskDims::of(old), TaskDims::of(new));
        if from != to {
            for run in self.runs_of_task(&new.id)? {
                let tally = RunTally::of(&run);
                self.deltas().run_changed(
                    (RunBucket::of(from.clone(), &run), tally),
                    (RunBucket::of(to.clone(), &run), tally),
                );
            }
        }
        Ok(())
    }

    /// Before a task is deleted: it and its runs leave their buckets, and the tasks that depend
    /// on it lose those edges (the cascade deletes them). The command forgets the rows it knew.
    fn count_deleted_task(&mut self, task_id: &str) -> Result<()> {
        let counted = self.count_deletion(task_id);
        if let Some(known) = self.known() {
            known.forget();
        }
        counted
    }

    /// The counter side of [`CountedStore::count_deleted_task`].
    fn count_deletion(&mut self, task_id: &str) -> Result<()> {
        let Some(bucket) = self.stored_bucket(task_id)? else {
            return Ok(());
        };
        for run in self.runs_of_task(task_id)? {
            self.deltas().run(
                RunBucket::of(bucket.dims.clone(), &run),
                RunTally::of(&run).removed(),
            );
        }
        self.deltas().task(bucket, -1);
        for (dependent, edges) in self.dependents(task_id)? {
            self.add_dependency_count(&dependent, -edges)?;
        }
        Ok(())
    }

    /// Moves a task's `dependency_count` by `delta`, and its bucket when that makes the first
    /// edge appear or the last one go.
    fn add_dependency_count(&mut self, task_id: &str, delta: i64) -> Result<()> {
        let Some(after) = self.bump_dependency_count(task_id, delta)? else {
            return Ok(());
        };
        if let Some(known) = self.known() {
            known.set_has_deps(task_id, after > 0);
        }
        let before = after - delta;
        if (before > 0) != (after > 0) {
            if let Some(now) = self.stored_bucket(task_id)? {
                let was = TaskBucket {
                    has_deps: before > 0,
                    ..now.clone()
                };
                self.deltas().task_moved(was, now);
            }
        }
        Ok(())
    }

    /// A new run counts in its bucket, and may change whether its task's latest run failed.
    fn count_inserted_run(&mut self, run: &Run) -> Result<()> {
        if let Some(known) = self.known() {
            known.saw_run(run);
        }
        let Some(bucket) = self.stored_bucket(&run.task_id)? else {
            return Ok(());
        };
        self.deltas()
            .run(RunBucket::of(bucket.dims.clone(), run), RunTally::of(run));
        // Only a failed new run, or a new run over a failed latest one, can flip the flag.
        if bucket.latest_failed || run.status == RunStatus::Failed {
            self.refresh_latest_failed(&run.task_id, bucket)?;
        }
        Ok(())
    }

    /// A run rewritten from `old` to `new`.
    fn count_updated_run(&mut self, old: &Run, new: &Run) -> Result<()> {
        if let Some(known) = self.known() {
            known.saw_run(new);
        }
        if !run_counted_fields_differ(old, new) {
            return Ok(());
        }
        let Some(bucket) = self.stored_bucket(&new.task_id)? else {
            return Ok(());
        };
        self.deltas().run_changed(
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

    /// Re-reads whether the task's latest run failed; writes the flag and moves the task's
    /// bucket only when it flipped.
    fn refresh_latest_failed(&mut self, task_id: &str, bucket: TaskBucket) -> Result<()> {
        let failed = self.latest_run_failed(task_id)?;
        if failed == bucket.latest_failed {
            return Ok(());
        }
        self.set_latest_run_failed(task_id, failed)?;
        if let Some(known) = self.known() {
            known.set_latest_failed(task_id, failed);
        }
        let now = TaskBucket {
            latest_failed: failed,
            ..bucket.clone()
        };
        self.deltas().task_moved(bucket, now);
        Ok(())
    }
}
