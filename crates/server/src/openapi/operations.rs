//! One described operation per route the router serves. The functions are never called: they
//! carry the `utoipa::path` description of the handler of the same path and method, kept apart
//! from the handlers so that the macro-generated ones (run transitions, lease operations) are
//! described too. `tests::routes_and_document_agree` fails when a route and its entry part.

#![allow(dead_code)]

use super::bodies::*;
use super::params::*;
use tasklane_core::input::*;
use tasklane_core::service::Execution;

#[utoipa::path(
    get,
    path = "/api/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    summary = "List tasks",
    description = "One page of tasks, latest activity first. Drafts are left out unless `include_drafts=true`.",
    params(
        TaskListParams
    ),
    responses(
        (status = 200, description = "One page of tasks", body = TaskPage)
    )
)]
pub fn list_tasks() {}

#[utoipa::path(
    post,
    path = "/api/tasks",
    operation_id = "create_task",
    tag = "tasks",
    summary = "Create a task",
    description = "`scope` and `title` are required; `workspace` with `scope=workspace`. `draft: true` creates a draft; `approval_policy: manual` needs an approval before it runs.",
    request_body = CreateTaskInput,
    responses(
        (status = 201, description = "The task", body = TaskAnswer)
    )
)]
pub fn create_task() {}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    summary = "Get a task",
    description = "The task with its runs (one per attempt), dependencies, dependents, children and newest 100 events (`events_truncated` when older ones exist).",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 200, description = "The task's detail", body = TaskDetailAnswer)
    )
)]
pub fn get_task() {}

#[utoipa::path(
    patch,
    path = "/api/tasks/{id}",
    operation_id = "update_task",
    tag = "tasks",
    summary = "Update a task",
    description = "Only the fields sent change; `null` means no change. `clear_owner: true` removes the owner.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = PatchTaskInput,
    responses(
        (status = 200, description = "The task", body = TaskAnswer)
    )
)]
pub fn update_task() {}

#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    operation_id = "delete_task",
    tag = "tasks",
    summary = "Delete a task",
    description = "Refused with 400 `task_has_children` or `task_has_open_runs`.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 204, description = "Deleted")
    )
)]
pub fn delete_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/publish",
    operation_id = "publish_task",
    tag = "tasks",
    summary = "Publish a draft",
    description = "Makes the draft a live task and enqueues its first run when it is runnable.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = ExecuteInput,
    responses(
        (status = 200, description = "The task and the run it enqueued, if any", body = Execution)
    )
)]
pub fn publish_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/approve",
    operation_id = "approve_task",
    tag = "tasks",
    summary = "Approve a task",
    description = "Records the approval and enqueues a run (or answers the run queued while the task awaited approval). Approving a draft enqueues nothing: `run` is absent.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = ExecuteInput,
    responses(
        (status = 201, description = "The task and its run", body = Execution)
    )
)]
pub fn approve_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/reject",
    operation_id = "reject_task",
    tag = "tasks",
    summary = "Reject a task",
    description = "Records the rejection; the task cannot run until its approval policy changes. The body is optional (the reference takes none): a `reason` is recorded in the `task.rejected` event and shown on the timeline (Tasklane extension).",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = RejectInput,
    responses(
        (status = 200, description = "The task", body = TaskAnswer)
    )
)]
pub fn reject_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/start",
    operation_id = "start_task",
    tag = "tasks",
    summary = "Start a task",
    description = "Enqueues the next run attempt.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = ExecuteInput,
    responses(
        (status = 201, description = "The task and the run it enqueued", body = Execution)
    )
)]
pub fn start_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/cancel",
    operation_id = "cancel_task",
    tag = "tasks",
    summary = "Cancel a task and its tree",
    description = "Cancels the task, its descendants and their open runs, in one transaction.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = CancelInput,
    responses(
        (status = 200, description = "The task", body = TaskAnswer)
    )
)]
pub fn cancel_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/children",
    operation_id = "create_child_task",
    tag = "tasks",
    summary = "Create a child task",
    description = "Like create; the child inherits the parent's scope. At most 64 children and depth 8.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = CreateTaskInput,
    responses(
        (status = 201, description = "The child task", body = TaskAnswer)
    )
)]
pub fn create_child_task() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/dependencies",
    operation_id = "add_dependency",
    tag = "dependencies",
    summary = "Add a dependency",
    description = "The task waits for `depends_on_task_id` to complete. No cycles, at most 32 per task.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = DependencyInput,
    responses(
        (status = 200, description = "The task's detail after the change", body = TaskDetailAnswer)
    )
)]
pub fn add_dependency() {}

#[utoipa::path(
    delete,
    path = "/api/tasks/{id}/dependencies/{depends_on_id}",
    operation_id = "remove_dependency",
    tag = "dependencies",
    summary = "Remove a dependency",
    params(
        ("id" = String, Path, description = "Task id"),
        ("depends_on_id" = String, Path, description = "The blocking task's id")
    ),
    responses(
        (status = 200, description = "The task's detail after the change", body = TaskDetailAnswer)
    )
)]
pub fn remove_dependency() {}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}/runs",
    operation_id = "list_task_runs",
    tag = "runs",
    summary = "List a task's runs",
    description = "One page of runs, newest queued first.",
    params(
        ("id" = String, Path, description = "Task id"), RunListParams
    ),
    responses(
        (status = 200, description = "One page of runs", body = RunPage)
    )
)]
pub fn list_task_runs() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/runs",
    operation_id = "enqueue_run",
    tag = "runs",
    summary = "Enqueue a run",
    description = "One open run per task; at most `max_attempts` attempts.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    request_body = ExecuteInput,
    responses(
        (status = 201, description = "The queued run", body = RunAnswer)
    )
)]
pub fn enqueue_run() {}

#[utoipa::path(
    get,
    path = "/api/task-runs/{id}",
    operation_id = "get_run",
    tag = "runs",
    summary = "Get a run",
    description = "The run with its task, session and coordination channel.",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    responses(
        (status = 200, description = "The run's detail", body = RunDetailAnswer)
    )
)]
pub fn get_run() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/claim",
    operation_id = "claim_run",
    tag = "runs",
    summary = "Claim a run (operator)",
    description = "Compare-and-set on `queued`: two claims never both succeed.",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = IdempotencyInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn claim_run() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/start",
    operation_id = "start_run",
    tag = "runs",
    summary = "Start a claimed run (operator)",
    description = "Moves the run through `starting` to `running` in one call.",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = IdempotencyInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn start_run() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/attach-session",
    operation_id = "attach_run_session",
    tag = "runs",
    summary = "Attach an agent session to a run (operator)",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = AttachSessionInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn attach_run_session() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/complete",
    operation_id = "complete_run",
    tag = "runs",
    summary = "Complete a run (operator)",
    description = "A run claimed under an agent lease is completed through the agent API (409 `lease_required`).",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = CompleteInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn complete_run() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/fail",
    operation_id = "fail_run",
    tag = "runs",
    summary = "Fail a run (operator)",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = FailInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn fail_run() {}

#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    summary = "Cancel a run (operator)",
    params(
        ("id" = String, Path, description = "Run id")
    ),
    request_body = CancelInput,
    responses(
        (status = 200, description = "The run", body = RunAnswer)
    )
)]
pub fn cancel_run() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/claim-next",
    operation_id = "claim_next",
    tag = "agent",
    summary = "Claim the next run under a lease",
    description = "The best queued run the session may take. With `wait: true` the request parks until work arrives or `wait_seconds` (default 30, at most 300) pass. One lease per session (409 `lease_held`).",
    request_body = ClaimNextInput,
    responses(
        (status = 200, description = "The claim", body = ClaimAnswer),
        (status = 204, description = "Nothing claimable (after waiting, with `wait`)")
    )
)]
pub fn claim_next() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/{run_id}/heartbeat",
    operation_id = "heartbeat",
    tag = "agent",
    summary = "Renew a lease",
    params(
        ("run_id" = String, Path, description = "Run id")
    ),
    request_body = HeartbeatInput,
    responses(
        (status = 200, description = "The lease", body = LeaseAnswer)
    )
)]
pub fn heartbeat() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/{run_id}/complete",
    operation_id = "agent_complete",
    tag = "agent",
    summary = "Complete a leased run",
    params(
        ("run_id" = String, Path, description = "Run id")
    ),
    request_body = CompleteInput,
    responses(
        (status = 200, description = "The lease", body = LeaseAnswer)
    )
)]
pub fn agent_complete() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/{run_id}/fail",
    operation_id = "agent_fail",
    tag = "agent",
    summary = "Fail a leased run",
    params(
        ("run_id" = String, Path, description = "Run id")
    ),
    request_body = FailInput,
    responses(
        (status = 200, description = "The lease", body = LeaseAnswer)
    )
)]
pub fn agent_fail() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/{run_id}/release",
    operation_id = "release",
    tag = "agent",
    summary = "Release a leased run",
    description = "Puts the run back in the queue: same attempt, same place in line.",
    params(
        ("run_id" = String, Path, description = "Run id")
    ),
    request_body = ReleaseInput,
    responses(
        (status = 200, description = "The lease", body = LeaseAnswer)
    )
)]
pub fn release() {}

#[utoipa::path(
    get,
    path = "/api/observe/tasks/dashboard",
    operation_id = "dashboard",
    tag = "observe",
    summary = "Dashboard",
    description = "Totals, cards, queue, health, active runs and freshness over the filter.",
    params(
        DashboardParams
    ),
    responses(
        (status = 200, description = "The dashboard", body = DashboardAnswer)
    )
)]
pub fn dashboard() {}

#[utoipa::path(
    get,
    path = "/api/observe/tasks/inbox",
    operation_id = "inbox",
    tag = "observe",
    summary = "The caller's inbox",
    description = "Lanes `my_work`, `approvals`, `failed_runs`, `blocked`, `archived` with counts and unread counts; `limit` caps each lane's items.",
    params(
        InboxParams
    ),
    responses(
        (status = 200, description = "The inbox", body = InboxAnswer)
    )
)]
pub fn inbox() {}

#[utoipa::path(
    get,
    path = "/api/observe/queue",
    operation_id = "queue_health",
    tag = "observe",
    summary = "Queue health",
    description = "Queued runs and the age of the oldest, per priority (all four, most urgent first) and per workspace (global tasks, the busiest workspaces by name, the rest summed as `other`): the figures `/metrics` exports, as JSON. Tasklane extension.",
    responses(
        (status = 200, description = "The queue", body = crate::routes::queue::QueueHealthAnswer)
    )
)]
pub fn queue_health() {}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}/timeline",
    operation_id = "timeline",
    tag = "observe",
    summary = "A task's events",
    description = "One page of the task's events, oldest first. `cursor` and `after_sequence` are alternatives.",
    params(
        ("id" = String, Path, description = "Task id"), TimelineParams
    ),
    responses(
        (status = 200, description = "One page of events", body = TimelinePage)
    )
)]
pub fn timeline() {}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}/tree",
    operation_id = "tree",
    tag = "observe",
    summary = "A task's tree",
    description = "The task and up to 1000 descendants in tree order (`descendants_truncated` when more exist).",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 200, description = "The tree", body = TreeAnswer)
    )
)]
pub fn tree() {}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}/stream",
    operation_id = "stream",
    tag = "observe",
    summary = "Live events of a task's subtree (SSE)",
    description = "Server-Sent Events: `retry: 3000` first, then frames `id: <sequence>`, `event: <event_type>`, `data: {\"sequence\",\"type\",\"timeline\"}` (the `timeline` item as in the timeline), and a `: keepalive` comment every 15 s. Resume with `Last-Event-ID` or `after_sequence`.",
    params(
        ("id" = String, Path, description = "Task id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence (a non-negative integer)"),
        StreamParams
    ),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)
    )
)]
pub fn stream() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/triage/read",
    operation_id = "triage_read",
    tag = "observe",
    summary = "Triage: mark read",
    description = "Per caller: changes only the caller's inbox.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 200, description = "The caller's triage state of the task", body = TriageAnswer)
    )
)]
pub fn triage_read() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/triage/dismiss",
    operation_id = "triage_dismiss",
    tag = "observe",
    summary = "Triage: dismiss",
    description = "Per caller: changes only the caller's inbox.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 200, description = "The caller's triage state of the task", body = TriageAnswer)
    )
)]
pub fn triage_dismiss() {}

#[utoipa::path(
    post,
    path = "/api/tasks/{id}/triage/archive",
    operation_id = "triage_archive",
    tag = "observe",
    summary = "Triage: archive",
    description = "Per caller: changes only the caller's inbox.",
    params(
        ("id" = String, Path, description = "Task id")
    ),
    responses(
        (status = 200, description = "The caller's triage state of the task", body = TriageAnswer)
    )
)]
pub fn triage_archive() {}

#[utoipa::path(
    get,
    path = "/api/whoami",
    operation_id = "whoami",
    tag = "observe",
    summary = "Who the caller is",
    description = "The auth mode, the caller's role and actor, and which actions the role table allows it (what the console offers). Any role may ask.",
    responses(
        (status = 200, description = "The caller", body = WhoamiAnswer)
    )
)]
pub fn whoami() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/claim-batch",
    operation_id = "claim_batch",
    tag = "agent",
    summary = "Claim runs for many sessions at once",
    description = "For a worker hosting many agent sessions: the claim-next fields plus `sessions` (1 to 100 distinct ids). Each session gets at most one claim, as if it had called claim-next in list order; all claims commit together. Sessions already holding a lease are skipped (409 `lease_held` when all are). With `wait: true` the request parks until at least one claim is possible. Tasklane extension.",
    request_body = ClaimBatchInput,
    responses(
        (status = 200, description = "The claims made", body = ClaimBatchAnswer),
        (status = 204, description = "Nothing claimable (after waiting, with `wait`)")
    )
)]
pub fn claim_batch() {}

#[utoipa::path(
    post,
    path = "/api/agent/tasks/complete-batch",
    operation_id = "complete_batch",
    tag = "agent",
    summary = "Complete, fail or release many leased runs at once",
    description = "Up to 100 items, each `{run_id, session_id, outcome: completed|failed|released, …}`, fenced exactly like the single-run endpoints and atomic on its own: a refused item changes nothing and is answered with its error; the others still apply. Tasklane extension.",
    request_body = ReportBatchInput,
    responses(
        (status = 200, description = "One result per item, in request order", body = ReportBatchAnswer)
    )
)]
pub fn complete_batch() {}
