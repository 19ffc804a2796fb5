//! The records the store tests write, once for every backend's tests.

use serde_json::json;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Dependency, NewEvent, Priority, Ref, Run, RunStatus, Scope,
    Task, TaskStatus,
};
use tasklane_core::time::Ts;

/// A ready global task with every optional field empty, all its times at `at`.
pub(crate) fn task(id: &str, at: i64) -> Task {
    Task {
        id: id.to_string(),
        identifier: None,
        scope: Scope::Global,
        workspace_id: None,
        parent_task_id: None,
        network_channel: None,
        title: format!("title of {id}"),
        description: None,
        priority: Priority::Medium,
        max_attempts: 3,
        auto_enqueue_on_ready: false,
        status: TaskStatus::Ready,
        approval_policy: ApprovalPolicy::None,
        approval_state: ApprovalState::NotRequired,
        owner: None,
        current_run_id: None,
        latest_event_seq: 0,
        created_by: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.create"),
        created_at: Ts(at),
        updated_at: Ts(at),
        closed_at: None,
        last_activity_at: Ts(at),
        metadata: None,
        required_capabilities: vec![],
        preferred_capabilities: vec![],
    }
}

/// A task with every optional field set.
pub(crate) fn full_task(id: &str) -> Task {
    Task {
        identifier: Some("ENG-1".into()),
        scope: Scope::Workspace,
        workspace_id: Some("ws/1".into()),
        network_channel: Some("chan-1".into()),
        description: Some("described".into()),
        priority: Priority::Urgent,
        max_attempts: 7,
        auto_enqueue_on_ready: true,
        status: TaskStatus::Blocked,
        approval_policy: ApprovalPolicy::Manual,
        approval_state: ApprovalState::Pending,
        owner: Some(Ref::new("pool", "gpu")),
        current_run_id: Some("run-x".into()),
        closed_at: Some(Ts(77)),
        metadata: Some(json!({"a": [1, 2, {"b": null}]})),
        required_capabilities: vec!["rust".into(), "linux".into()],
        preferred_capabilities: vec!["fast".into()],
        ..task(id, 1_000)
    }
}

/// A first attempt of `task_id` with every optional field empty.
pub(crate) fn run(id: &str, task_id: &str, status: RunStatus, queued_at: i64) -> Run {
    Run {
        id: id.to_string(),
        task_id: task_id.to_string(),
        status,
        attempt: 1,
        claimed_by: None,
        session_id: None,
        origin: Ref::new("http", "tasks.enqueue_run"),
        idempotency_key: None,
        network_channel: None,
        coordination_channel_id: None,
        claim_token_hash: None,
        lease_until: None,
        heartbeat_at: None,
        lease_expirations: 0,
        queued_at: Ts(queued_at),
        claimed_at: None,
        started_at: None,
        ended_at: None,
        error: None,
        metadata: None,
        result: None,
        required_capabilities: vec![],
        preferred_capabilities: vec![],
        priority: Priority::Medium,
        claim_idempotency_key: None,
        session_token: None,
        claim_audience: None,
    }
}

/// A `task.created` event of `task_id` at `at`.
pub(crate) fn event(id: &str, task_id: &str, at: i64) -> NewEvent {
    NewEvent {
        id: id.to_string(),
        task_id: task_id.to_string(),
        run_id: None,
        event_type: "task.created",
        actor: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.create"),
        payload: json!({"n": at}),
        timestamp: Ts(at),
    }
}

/// `task_id` is blocked by `on`.
pub(crate) fn blocks(task_id: &str, on: &str, at: i64) -> Dependency {
    Dependency {
        task_id: task_id.into(),
        depends_on_task_id: on.into(),
        kind: "blocks",
        created_at: Ts(at),
    }
}

/// A queued run on a task of its own (`t-<id>`: a task has at most one open run), with the given
/// audience, priority and required capabilities.
pub(crate) fn class_run(
    id: &str,
    audience: Option<&str>,
    priority: Priority,
    required: &[&str],
    queued_at: i64,
) -> (Task, Run) {
    let t = task(&format!("t-{id}"), queued_at);
    let r = Run {
        priority,
        required_capabilities: required.iter().map(|c| c.to_string()).collect(),
        claim_audience: audience.map(str::to_string),
        ..run(id, &t.id, RunStatus::Queued, queued_at)
    };
    (t, r)
}

/// A parent `p` and six children whose list order ties on activity, then on update, then on
/// creation: `p, e, d, b, a, c, f`.
pub(crate) fn paging_tasks() -> Vec<Task> {
    let mut tasks = vec![task("p", 50)];
    for (id, activity, updated, created) in [
        ("a", 40, 30, 20),
        ("b", 40, 30, 20),
        ("c", 40, 30, 10),
        ("d", 40, 35, 10),
        ("e", 45, 10, 10),
        ("f", 5, 5, 5),
    ] {
        let mut t = task(id, activity);
        t.updated_at = Ts(updated);
        t.created_at = Ts(created);
        t.parent_task_id = Some("p".into());
        tasks.push(t);
    }
    tasks
}
