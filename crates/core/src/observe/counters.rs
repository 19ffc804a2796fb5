//! The counters behind the dashboard and the inbox: which bucket a task or a run counts in, and
//! the deltas a write makes to the buckets.
//!
//! Backends keep one count per bucket, exact inside every write transaction. They do not
//! maintain the buckets row by row: a storage write reports the rows it changed to a
//! [`CounterDeltas`], and the backend applies the sum once per transaction (SQLite: once per
//! group-committed batch, where a claim's −1/+1 and the completion's −1/+1 on the same buckets
//! mostly cancel out). The bucket formulas live only here.

use std::collections::HashMap;

use crate::model::{Run, Task};

/// The task dimensions both counters are filtered by. Absent values are `""`, so that a key
/// always compares equal to itself (a NULL in a SQL key never does).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskDims {
    pub scope: String,
    pub workspace_id: String,
    pub owner_kind: String,
    pub owner_ref: String,
    pub network_channel: String,
    pub origin_kind: String,
}

impl TaskDims {
    pub fn of(task: &Task) -> Self {
        TaskDims {
            scope: task.scope.as_str().to_string(),
            workspace_id: task.workspace_id.clone().unwrap_or_default(),
            owner_kind: task
                .owner
                .as_ref()
                .map(|o| o.kind.clone())
                .unwrap_or_default(),
            owner_ref: task
                .owner
                .as_ref()
                .map(|o| o.reference.clone())
                .unwrap_or_default(),
            network_channel: task.network_channel.clone().unwrap_or_default(),
            origin_kind: task.origin.kind.clone(),
        }
    }
}

/// Where a task counts: its dimensions, status, approval, whether any dependency edge leaves it
/// and whether its latest run failed (the inbox's failed-runs lane).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskBucket {
    pub dims: TaskDims,
    pub status: String,
    pub approval_state: String,
    pub has_deps: bool,
    pub approval_policy: String,
    pub latest_failed: bool,
}

impl TaskBucket {
    /// `has_deps` and `latest_failed` are facts about other rows (edges, runs) that storage keeps
    /// on the task.
    pub fn of(task: &Task, has_deps: bool, latest_failed: bool) -> Self {
        TaskBucket {
            dims: TaskDims::of(task),
            status: task.status.as_str().to_string(),
            approval_state: task.approval_state.as_str().to_string(),
            has_deps,
            approval_policy: task.approval_policy.as_str().to_string(),
            latest_failed,
        }
    }
}

/// Where a run counts: its task's dimensions, its own channel and origin, its status.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunBucket {
    pub dims: TaskDims,
    pub run_channel: String,
    pub run_origin_kind: String,
    pub status: String,
}

impl RunBucket {
    pub fn of(dims: TaskDims, run: &Run) -> Self {
        RunBucket {
            dims,
            run_channel: run.network_channel.clone().unwrap_or_default(),
            run_origin_kind: run.origin.kind.clone(),
            status: run.status.as_str().to_string(),
        }
    }
}

/// A run's contribution to its bucket: one run, and its queue→claim and claim→start latencies
/// (microseconds; a negative interval from a clock step counts as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTally {
    pub n: i64,
    pub claim_n: i64,
    pub claim_sum: i64,
    pub claim_max: i64,
    pub start_n: i64,
    pub start_sum: i64,
    pub start_max: i64,
}

impl RunTally {
    pub fn of(run: &Run) -> Self {
        let claim = run.claimed_at.map(|c| (c.0 - run.queued_at.0).max(0));
        let start = run
            .started_at
            .map(|s| (s.0 - run.claimed_at.unwrap_or(run.queued_at).0).max(0));
        RunTally {
            n: 1,
            claim_n: claim.is_some() as i64,
            claim_sum: claim.unwrap_or(0),
            claim_max: claim.unwrap_or(0),
            start_n: start.is_some() as i64,
            start_sum: start.unwrap_or(0),
            start_max: start.unwrap_or(0),
        }
    }

    /// The contribution taken away. Maxima are not subtracted: a maximum cannot be undone
    /// without the whole history, so it stays the largest latency ever recorded in the bucket.
    pub fn removed(self) -> Self {
        RunTally {
            n: -self.n,
            claim_n: -self.claim_n,
            claim_sum: -self.claim_sum,
            claim_max: 0,
            start_n: -self.start_n,
            start_sum: -self.start_sum,
            start_max: 0,
        }
    }

    fn add(&mut self, other: RunTally) {
        self.n += other.n;
        self.claim_n += other.claim_n;
        self.claim_sum += other.claim_sum;
        self.claim_max = self.claim_max.max(other.claim_max);
        self.start_n += other.start_n;
        self.start_sum += other.start_sum;
        self.start_max = self.start_max.max(other.start_max);
    }

    /// Nothing to apply: every sum nets to zero and no maximum rises.
    pub fn is_noop(&self) -> bool {
        *self == RunTally::default()
    }
}

/// The net change one transaction makes to the counters.
#[derive(Clone, Debug, Default)]
pub struct CounterDeltas {
    tasks: HashMap<TaskBucket, i64>,
    runs: HashMap<RunBucket, RunTally>,
}

impl CounterDeltas {
    pub fn task(&mut self, bucket: TaskBucket, delta: i64) {
        *self.tasks.entry(bucket).or_default() += delta;
    }

    /// A task that moved from one bucket to another (nothing when they are equal).
    pub fn task_moved(&mut self, from: TaskBucket, to: TaskBucket) {
        if from != to {
            self.task(from, -1);
            self.task(to, 1);
        }
    }

    pub fn run(&mut self, bucket: RunBucket, tally: RunTally) {
        self.runs.entry(bucket).or_default().add(tally);
    }

    /// A run whose bucket or tally changed: its old contribution out, its new one in.
    pub fn run_changed(&mut self, from: (RunBucket, RunTally), to: (RunBucket, RunTally)) {
        if from != to {
            self.run(from.0, from.1.removed());
            self.run(to.0, to.1);
        }
    }

    pub fn merge(&mut self, other: CounterDeltas) {
        for (bucket, delta) in other.tasks {
            self.task(bucket, delta);
        }
        for (bucket, tally) in other.runs {
            self.run(bucket, tally);
        }
    }

    /// The task buckets whose count changes, and by how much.
    pub fn task_changes(&self) -> impl Iterator<Item = (&TaskBucket, i64)> {
        self.tasks
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|(b, d)| (b, *d))
    }

    /// The run buckets whose tallies change.
    pub fn run_changes(&self) -> impl Iterator<Item = (&RunBucket, &RunTally)> {
        self.runs.iter().filter(|(_, t)| !t.is_noop())
    }

    pub fn is_empty(&self) -> bool {
        self.task_changes().next().is_none() && self.run_changes().next().is_none()
    }

    pub fn clear(&mut self) {
        self.tasks.clear();
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> TaskDims {
        TaskDims {
            scope: "global".into(),
            workspace_id: String::new(),
            owner_kind: String::new(),
            owner_ref: String::new(),
            network_channel: String::new(),
            origin_kind: "http".into(),
        }
    }

    fn bucket(status: &str) -> RunBucket {
        RunBucket {
            dims: dims(),
            run_channel: String::new(),
            run_origin_kind: "http".into(),
            status: status.into(),
        }
    }

    #[test]
    fn a_claim_and_its_completion_in_one_batch_net_to_one_completed_run() {
        let mut d = CounterDeltas::default();
        let queued = RunTally {
            n: 1,
            ..RunTally::default()
        };
        let claimed = RunTally {
            n: 1,
            claim_n: 1,
            claim_sum: 40,
            claim_max: 40,
            ..RunTally::default()
        };
        d.run_changed((bucket("queued"), queued), (bucket("claimed"), claimed));
        d.run_changed((bucket("claimed"), claimed), (bucket("completed"), claimed));
        let changes: Vec<_> = d.run_changes().collect();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(d.runs[&bucket("queued")].n, -1);
        assert_eq!(d.runs[&bucket("completed")], claimed);
        // The claimed bucket nets to zero but its maximum rose: still applied.
        assert!(d.runs[&bucket("claimed")].n == 0 && d.runs[&bucket("claimed")].claim_max == 40);
    }

    #[test]
    fn removal_keeps_maxima_and_equal_moves_are_nothing() {
        let t = RunTally {
            n: 1,
            claim_n: 1,
            claim_sum: 7,
            claim_max: 7,
            start_n: 1,
            start_sum: 3,
            start_max: 3,
        };
        let r = t.removed();
        assert_eq!((r.n, r.claim_sum, r.claim_max, r.start_max), (-1, -7, 0, 0));
        let mut d = CounterDeltas::default();
        d.run_changed((bucket("queued"), t), (bucket("queued"), t));
        assert!(d.is_empty());
    }
}
