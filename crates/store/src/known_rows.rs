//! What the writer's current command has read or written, as stored: the task and run rows it
//! has seen, with the facts storage keeps on a task beside the model (dependency edges, a
//! failed latest run).
//!
//! An update writes only the columns that changed, so it needs the stored row to diff against,
//! and the counters need a task's stored bucket. Both were read again by each primitive; on
//! PostgreSQL each read is a round trip. A command runs alone (the writer's one transaction,
//! under the write lock on PostgreSQL), so a row it read or wrote stays as it left it until it
//! writes it again; the primitives that write keep these copies in step, and a rolled-back
//! savepoint forgets them all.
//!
//! Only the columns the diffs and the counters use are trusted here. Columns storage maintains
//! on its own (`last_activity_at`, `latest_event_seq`, a run's `claim_audience`) may be stale,
//! so rules never read rows from this cache: `ReadStore` always asks the database.

use std::collections::HashMap;

use tasklane_core::model::{Run, Task};
use tasklane_core::observe::counters::TaskBucket;

/// Facts storage keeps on a task row: whether any dependency edge leaves it, and whether its
/// latest run failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskFlags {
    pub(crate) has_deps: bool,
    pub(crate) latest_failed: bool,
}

#[derive(Default)]
pub(crate) struct KnownRows {
    tasks: HashMap<String, (Task, TaskFlags)>,
    runs: HashMap<String, Run>,
}

impl KnownRows {
    /// A task as read from storage, with its flags.
    pub(crate) fn saw_task(&mut self, task: &Task, flags: TaskFlags) {
        self.tasks.insert(task.id.clone(), (task.clone(), flags));
    }

    /// A task as just written by `insert_task` or `update_task`. A new task has no edges and no
    /// runs; an updated one keeps its flags (no update writes them), and is forgotten if they
    /// are not known.
    pub(crate) fn wrote_task(&mut self, task: &Task, inserted: bool) {
        match self.tasks.get_mut(&task.id) {
            Some(known) => known.0 = task.clone(),
            None if inserted => self.saw_task(task, TaskFlags::default()),
            None => {}
        }
    }

    /// The stored task, as last read or written.
    pub(crate) fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|(task, _)| task)
    }

    pub(crate) fn flags(&self, id: &str) -> Option<TaskFlags> {
        self.tasks.get(id).map(|(_, flags)| *flags)
    }

    /// The bucket the stored task counts in.
    pub(crate) fn bucket(&self, id: &str) -> Option<TaskBucket> {
        self.tasks
            .get(id)
            .map(|(task, f)| TaskBucket::of(task, f.has_deps, f.latest_failed))
    }

    pub(crate) fn set_has_deps(&mut self, id: &str, has_deps: bool) {
        if let Some((_, flags)) = self.tasks.get_mut(id) {
            flags.has_deps = has_deps;
        }
    }

    pub(crate) fn set_latest_failed(&mut self, id: &str, failed: bool) {
        if let Some((_, flags)) = self.tasks.get_mut(id) {
            flags.latest_failed = failed;
        }
    }

    /// A run as read from storage, or as just written.
    pub(crate) fn saw_run(&mut self, run: &Run) {
        self.runs.insert(run.id.clone(), run.clone());
    }

    /// The stored run, as last read or written.
    pub(crate) fn run(&self, id: &str) -> Option<&Run> {
        self.runs.get(id)
    }

    /// After a savepoint rolled back, or rows went in a way not tracked here (a deleted task).
    pub(crate) fn forget(&mut self) {
        self.tasks.clear();
        self.runs.clear();
    }
}
