//! Status derivation: the one rule that says what a task's status is, given its stored status, its
//! gates (dependencies and approval) and its runs. Every write reconciles the stored status to this.

use crate::model::{ApprovalPolicy, ApprovalState, Run, RunStatus, TaskStatus};

/// What derivation needs to know about a task.
pub struct DeriveInput<'a> {
    pub stored: TaskStatus,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    /// True when some blocker's status is not `completed`.
    pub dependencies_open: bool,
    pub max_attempts: i64,
    pub runs: &'a [Run],
}

impl DeriveInput<'_> {
    /// Dependencies unresolved, or manual approval not granted.
    pub fn gate_blocked(&self) -> bool {
        self.dependencies_open
            || (self.approval_policy == ApprovalPolicy::Manual
                && self.approval_state != ApprovalState::Approved)
    }
}

/// Derives a task's status.
pub fn derive_status(input: &DeriveInput<'_>) -> TaskStatus {
    if matches!(input.stored, TaskStatus::Canceled | TaskStatus::Draft) {
        return input.stored;
    }
    let gated = if input.gate_blocked() {
        TaskStatus::Blocked
    } else {
        TaskStatus::Ready
    };
    let runs = input.runs;
    if runs
        .iter()
        .any(|r| matches!(r.status, RunStatus::Starting | RunStatus::Running))
    {
        return TaskStatus::InProgress;
    }
    if runs
        .iter()
        .any(|r| matches!(r.status, RunStatus::Queued | RunStatus::Claimed))
    {
        return gated;
    }
    if let Some(latest) = latest_terminal_run(runs) {
        return match latest.status {
            RunStatus::Completed => TaskStatus::Completed,
            RunStatus::Canceled => TaskStatus::Canceled,
            _ if attempts_exhausted(runs, input.max_attempts) => TaskStatus::Failed,
            _ => gated,
        };
    }
    if matches!(input.stored, TaskStatus::Completed | TaskStatus::Failed) {
        return input.stored;
    }
    gated
}

/// The run whose outcome decides a finished task: highest attempt, then latest queue time, then id.
pub fn latest_terminal_run(runs: &[Run]) -> Option<&Run> {
    runs.iter()
        .filter(|r| r.status.is_terminal())
        .max_by(|a, b| (a.attempt, a.queued_at, &a.id).cmp(&(b.attempt, b.queued_at, &b.id)))
}

/// The highest attempt number used so far (0 when the task has no run).
pub fn highest_attempt(runs: &[Run]) -> i64 {
    runs.iter().map(|r| r.attempt).max().unwrap_or(0)
}

pub fn attempts_exhausted(runs: &[Run], max_attempts: i64) -> bool {
    highest_attempt(runs) >= max_attempts
}

/// The run shown as a task's `active_run`: the best non-terminal run. Running beats starting beats
/// claimed beats queued; ties go to later activity, then to the higher id.
pub fn active_run(runs: &[Run]) -> Option<&Run> {
    fn rank(s: RunStatus) -> i32 {
        match s {
            RunStatus::Running => 4,
            RunStatus::Starting => 3,
            RunStatus::Claimed => 2,
            RunStatus::Queued => 1,
            _ => 0,
        }
    }
    runs.iter().filter(|r| r.status.is_open()).max_by(|a, b| {
        (rank(a.status), a.activity_at(), &a.id).cmp(&(rank(b.status), b.activity_at(), &b.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ref;
    use crate::time::Ts;

    fn run(id: &str, status: RunStatus, attempt: i64) -> Run {
        Run {
            id: id.into(),
            task_id: "t".into(),
            status,
            attempt,
            claimed_by: None,
            session_id: None,
            origin: Ref::new("http", "tasks.start"),
            idempotency_key: None,
            network_channel: None,
            coordination_channel_id: None,
            claim_token_hash: None,
            lease_until: None,
            heartbeat_at: None,
            lease_expirations: 0,
            queued_at: Ts(attempt),
            claimed_at: None,
            started_at: None,
            ended_at: None,
            error: None,
            metadata: None,
            result: None,
            required_capabilities: vec![],
            preferred_capabilities: vec![],
            priority: crate::model::Priority::Medium,
            claim_idempotency_key: None,
            session_token: None,
            claim_audience: None,
        }
    }

    fn input(stored: TaskStatus, runs: &[Run]) -> DeriveInput<'_> {
        DeriveInput {
            stored,
            approval_policy: ApprovalPolicy::None,
            approval_state: ApprovalState::NotRequired,
            dependencies_open: false,
            max_attempts: 3,
            runs,
        }
    }

    #[test]
    fn draft_and_canceled_are_sticky() {
        let runs = [run("r1", RunStatus::Running, 1)];
        assert_eq!(
            derive_status(&input(TaskStatus::Draft, &runs)),
            TaskStatus::Draft
        );
        assert_eq!(
            derive_status(&input(TaskStatus::Canceled, &runs)),
            TaskStatus::Canceled
        );
    }

    #[test]
    fn running_run_means_in_progress_even_when_gated() {
        let runs = [run("r1", RunStatus::Running, 1)];
        let mut i = input(TaskStatus::Ready, &runs);
        i.dependencies_open = true;
        assert_eq!(derive_status(&i), TaskStatus::InProgress);
    }

    #[test]
    fn queued_or_claimed_run_follows_the_gate() {
        let runs = [run("r1", RunStatus::Claimed, 1)];
        let mut i = input(TaskStatus::Ready, &runs);
        assert_eq!(derive_status(&i), TaskStatus::Ready);
        i.approval_policy = ApprovalPolicy::Manual;
        i.approval_state = ApprovalState::Rejected;
        assert_eq!(derive_status(&i), TaskStatus::Blocked);
    }

    #[test]
    fn failure_is_final_only_when_attempts_are_exhausted() {
        let runs = [run("r1", RunStatus::Failed, 1)];
        assert_eq!(
            derive_status(&input(TaskStatus::Ready, &runs)),
            TaskStatus::Ready
        );
        let runs = [
            run("r1", RunStatus::Failed, 1),
            run("r2", RunStatus::Failed, 2),
            run("r3", RunStatus::Failed, 3),
        ];
        assert_eq!(
            derive_status(&input(TaskStatus::Ready, &runs)),
            TaskStatus::Failed
        );
    }

    #[test]
    fn latest_terminal_run_decides() {
        let runs = [
            run("r1", RunStatus::Failed, 1),
            run("r2", RunStatus::Completed, 2),
        ];
        assert_eq!(
            derive_status(&input(TaskStatus::Ready, &runs)),
            TaskStatus::Completed
        );
        let runs = [
            run("r1", RunStatus::Completed, 1),
            run("r2", RunStatus::Canceled, 2),
        ];
        assert_eq!(
            derive_status(&input(TaskStatus::Completed, &runs)),
            TaskStatus::Canceled
        );
    }

    #[test]
    fn no_runs_keeps_stored_terminal_or_follows_gate() {
        assert_eq!(
            derive_status(&input(TaskStatus::Failed, &[])),
            TaskStatus::Failed
        );
        let mut i = input(TaskStatus::Pending, &[]);
        assert_eq!(derive_status(&i), TaskStatus::Ready);
        i.approval_policy = ApprovalPolicy::Manual;
        i.approval_state = ApprovalState::Pending;
        assert_eq!(derive_status(&i), TaskStatus::Blocked);
    }

    #[test]
    fn active_run_prefers_running_then_latest_activity() {
        let mut a = run("a", RunStatus::Queued, 1);
        a.queued_at = Ts(100);
        let b = run("b", RunStatus::Running, 1);
        let runs = [a.clone(), b];
        assert_eq!(active_run(&runs).unwrap().id, "b");
        let mut c = run("c", RunStatus::Queued, 1);
        c.queued_at = Ts(50);
        let runs = [a, c, run("d", RunStatus::Completed, 2)];
        assert_eq!(active_run(&runs).unwrap().id, "a");
    }
}
