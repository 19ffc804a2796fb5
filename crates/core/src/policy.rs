//! Who may do what in token mode: the one table of every role's rights, by operation and by
//! field. The HTTP layer checks the operation of each request against it before the handler
//! runs; the task rules check the fields they are given. Open mode has no roles: every caller may
//! do everything (the agent API still needs an agent session).

use crate::error::{Error, Result};
use crate::model::{ApprovalPolicy, ApprovalState, Role, Task};

/// Every operation of the API, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Every GET: tasks, runs, timeline, tree, dashboard, inbox, and the SSE stream.
    Read,
    /// `GET /metrics`: the server's operational figures, for monitoring.
    ReadMetrics,
    CreateTask,
    CreateChild,
    UpdateTask,
    DeleteTask,
    PublishTask,
    ApproveTask,
    RejectTask,
    StartTask,
    CancelTask,
    AddDependency,
    RemoveDependency,
    EnqueueRun,
    /// Marking a task read, dismissed or archived in the caller's own inbox.
    Triage,
    /// The operator run paths `/api/task-runs/{id}/...`.
    ClaimRun,
    StartRun,
    AttachSession,
    CompleteRun,
    FailRun,
    CancelRun,
    /// The agent API `/api/agent/tasks/...`.
    ClaimNext,
    Heartbeat,
    AgentComplete,
    AgentFail,
    Release,
    /// `claim-batch` and `complete-batch`: the agent API for many sessions of one worker, with the
    /// rights of claim-next and of complete/fail/release.
    ClaimBatch,
    CompleteBatch,
    /// Any other write: an endpoint the table does not name (unknown paths, the test clock's
    /// control). Operators only, so a route added without its row is closed, not open.
    Other,
}

/// Request fields that only some roles may set, on every operation that accepts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `approval_policy` on create, create child and PATCH.
    ApprovalPolicy,
}

const Y: bool = true;
const N: bool = false;

/// The rights table: `[operator, agent, viewer]` for each operation. A `match`, so every new
/// operation must be given a row before the code compiles.
///
/// - Operators run the whole task API but not the agent API (they hold no leases).
/// - Agents read, write tasks, and work through the agent API only: approving is a human's
///   decision, and the operator run paths would let one token's agents claim, finish or cancel
///   runs leased by another token's sessions.
/// - Viewers read, metrics included: a monitoring system scrapes with a viewer token. Agents do
///   not read metrics; they are workers, not observers of the whole server.
#[rustfmt::skip]
const fn rights(op: Operation) -> [bool; 3] {
    use Operation::*;
    match op {
        //                   operator agent viewer
        Read             => [Y,       Y,    Y],
        ReadMetrics      => [Y,       N,    Y],
        CreateTask       => [Y,       Y,    N],
        CreateChild      => [Y,       Y,    N],
        UpdateTask       => [Y,       Y,    N],
        DeleteTask       => [Y,       Y,    N],
        PublishTask      => [Y,       Y,    N],
        ApproveTask      => [Y,       N,    N],
        RejectTask       => [Y,       N,    N],
        StartTask        => [Y,       Y,    N],
        CancelTask       => [Y,       Y,    N],
        AddDependency    => [Y,       Y,    N],
        RemoveDependency => [Y,       Y,    N],
        EnqueueRun       => [Y,       Y,    N],
        Triage           => [Y,       Y,    N],
        ClaimRun         => [Y,       N,    N],
        StartRun         => [Y,       N,    N],
        AttachSession    => [Y,       N,    N],
        CompleteRun      => [Y,       N,    N],
        FailRun          => [Y,       N,    N],
        CancelRun        => [Y,       N,    N],
        ClaimNext        => [N,       Y,    N],
        Heartbeat        => [N,       Y,    N],
        AgentComplete    => [N,       Y,    N],
        AgentFail        => [N,       Y,    N],
        Release          => [N,       Y,    N],
        ClaimBatch       => [N,       Y,    N],
        CompleteBatch    => [N,       Y,    N],
        Other            => [Y,       N,    N],
    }
}

/// Who may set each restricted field: `[operator, agent, viewer]`. An agent may never set or
/// change an approval policy, so nothing it does can lift an approval a human has not granted.
const fn field_rights(field: Field) -> [bool; 3] {
    match field {
        Field::ApprovalPolicy => [Y, N, N],
    }
}

/// Which tasks a gated operation is restricted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Every task under manual approval: what a human approves (or approved) is its content.
    Manual,
    /// A task under manual approval not granted yet: pending or rejected.
    Awaiting,
}

impl Gate {
    fn applies_to(self, task: &Task) -> bool {
        let manual = task.approval_policy == ApprovalPolicy::Manual;
        match self {
            Gate::Manual => manual,
            Gate::Awaiting => manual && task.approval_state != ApprovalState::Approved,
        }
    }
}

/// What each role may do to a task under manual approval, beyond [`rights`]:
/// `[operator, agent, viewer]`. Approval is a human's decision about a task's content, so an
/// agent may neither change nor delete that content (deleting and re-creating the id would drop
/// the approval), nor queue a run of it or add work beneath it before the approval is granted.
#[rustfmt::skip]
const fn gated_rights(op: Operation) -> Option<(Gate, [bool; 3])> {
    use Operation::*;
    match op {
        //                                 operator agent viewer
        UpdateTask  => Some((Gate::Manual,   [Y,       N,    N])),
        DeleteTask  => Some((Gate::Manual,   [Y,       N,    N])),
        EnqueueRun  => Some((Gate::Awaiting, [Y,       N,    N])),
        CreateChild => Some((Gate::Awaiting, [Y,       N,    N])),
        _ => None,
    }
}

/// `forbidden_role` unless `role` may perform `op` on `task` (for `CreateChild`, `task` is the
/// parent or any ancestor) given its approval.
pub fn check_gated(role: Option<Role>, op: Operation, task: &Task) -> Result<()> {
    let Some(role) = role else { return Ok(()) };
    match gated_rights(op) {
        Some((gate, rights)) if gate.applies_to(task) && !rights[column(role)] => {
            Err(forbidden_role(
                Some(role),
                &format!(
                    "{} task {}, whose manual approval is {}",
                    op.verb(),
                    task.id,
                    task.approval_state
                ),
            ))
        }
        _ => Ok(()),
    }
}

const fn column(role: Role) -> usize {
    match role {
        Role::Operator => 0,
        Role::Agent => 1,
        Role::Viewer => 2,
    }
}

impl Operation {
    /// What the operation does to a task, for error messages.
    fn verb(self) -> &'static str {
        match self {
            Operation::UpdateTask => "update",
            Operation::DeleteTask => "delete",
            Operation::EnqueueRun => "enqueue a run of",
            Operation::CreateChild => "add work beneath",
            _ => "act on",
        }
    }

    /// The operations of the agent API that act as the session of the request's identity, so
    /// need one. The batch operations name their sessions in the body instead.
    pub fn is_agent_api(self) -> bool {
        matches!(
            self,
            Operation::ClaimNext
                | Operation::Heartbeat
                | Operation::AgentComplete
                | Operation::AgentFail
                | Operation::Release
        )
    }
}

/// Whether `role` may perform `op` (`None`: open mode, no roles).
pub fn allows(role: Option<Role>, op: Operation) -> bool {
    role.is_none_or(|r| rights(op)[column(r)])
}

/// Whether `role` may set `field` (`None`: open mode, no roles).
pub fn allows_field(role: Option<Role>, field: Field) -> bool {
    role.is_none_or(|r| field_rights(field)[column(r)])
}

/// `forbidden_role` unless `role` may set `field`.
pub fn check_field(role: Option<Role>, field: Field, name: &str) -> Result<()> {
    if allows_field(role, field) {
        return Ok(());
    }
    Err(forbidden_role(role, &format!("set {name}")))
}

/// The error for a request the caller's role does not allow.
pub fn forbidden_role(role: Option<Role>, what: &str) -> Error {
    Error::forbidden(
        "forbidden_role",
        format!(
            "the {} role may not {what}",
            role.map(Role::as_str).unwrap_or("")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_mode_allows_everything() {
        assert!(allows(None, Operation::ApproveTask));
        assert!(allows(None, Operation::CancelRun));
        assert!(allows_field(None, Field::ApprovalPolicy));
    }

    #[test]
    fn a_worker_never_approves_nor_touches_the_operator_run_paths() {
        for op in [
            Operation::ApproveTask,
            Operation::RejectTask,
            Operation::ClaimRun,
            Operation::CancelRun,
        ] {
            assert!(!allows(Some(Role::Agent), op), "{op:?}");
            assert!(allows(Some(Role::Operator), op), "{op:?}");
        }
        assert!(!allows_field(Some(Role::Agent), Field::ApprovalPolicy));
    }

    #[test]
    fn batches_have_the_rights_of_their_single_run_counterparts() {
        for role in [Role::Operator, Role::Agent, Role::Viewer] {
            let claim = allows(Some(role), Operation::ClaimNext);
            assert_eq!(allows(Some(role), Operation::ClaimBatch), claim, "{role:?}");
            for single in [
                Operation::AgentComplete,
                Operation::AgentFail,
                Operation::Release,
            ] {
                assert_eq!(
                    allows(Some(role), Operation::CompleteBatch),
                    allows(Some(role), single),
                    "{role:?} {single:?}"
                );
            }
        }
    }
}
