//! Task operations: create (root or child), PATCH, publish, approve, reject, start.

use serde_json::Value;

use super::{Execution, Op, Payload};
use crate::error::{Error, Result};
use crate::ids;
use crate::input::{CreateTaskInput, ExecuteInput, PatchTaskInput, RejectInput};
use crate::model::{ApprovalPolicy, ApprovalState, Priority, Scope, Task, TaskStatus};
use crate::policy::{self, Field, Operation};
use crate::validate::{self, non_empty, DEFAULT_MAX_ATTEMPTS, MAX_CHILDREN, MAX_DEPTH};
use crate::views::{RunPayload, TaskPayload};

/// Everything a create request says, validated.
struct NewTask {
    id: String,
    identifier: Option<String>,
    scope: Scope,
    workspace_id: Option<String>,
    network_channel: Option<String>,
    title: String,
    description: Option<String>,
    priority: Priority,
    draft: bool,
    approval_policy: ApprovalPolicy,
    auto_enqueue_on_ready: bool,
    max_attempts: i64,
    metadata: Option<Value>,
    owner: Option<crate::model::Ref>,
    required_capabilities: Vec<String>,
    preferred_capabilities: Vec<String>,
}

fn validate_create(input: &CreateTaskInput) -> Result<NewTask> {
    let scope = match non_empty(input.scope.as_deref()) {
        None => return Err(Error::validation("scope is required")),
        Some(s) => Scope::parse(&s)?,
    };
    let workspace_id = non_empty(input.workspace.as_deref());
    match (scope, &workspace_id) {
        (Scope::Workspace, None) => {
            return Err(Error::validation(
                "workspace is required when scope is workspace",
            ))
        }
        (Scope::Global, Some(_)) => {
            return Err(Error::validation(
                "workspace must be empty when scope is global",
            ))
        }
        (Scope::Workspace, Some(ws)) => validate::workspace_id(ws)?,
        (Scope::Global, None) => {}
    }
    let network_channel = non_empty(input.network_channel.as_deref());
    if let Some(ch) = &network_channel {
        validate::network_channel(ch)?;
    }
    let title =
        non_empty(input.title.as_deref()).ok_or_else(|| Error::validation("title is required"))?;
    let owner = match &input.owner {
        None => None,
        Some(o) => Some(validate::owner(o.kind.as_deref(), o.reference.as_deref())?),
    };
    let priority = match non_empty(input.priority.as_deref()) {
        None => Priority::Medium,
        Some(p) => Priority::parse(&p)?,
    };
    let max_attempts = match input.max_attempts {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(n) => validate::max_attempts(n)?,
    };
    let approval_policy = match non_empty(input.approval_policy.as_deref()) {
        None => ApprovalPolicy::None,
        Some(p) => ApprovalPolicy::parse(&p)?,
    };
    let id = match non_empty(input.id.as_deref()) {
        None => ids::task_id(),
        Some(id) => {
            validate::client_id(&id)?;
            id
        }
    };
    let required_capabilities = validate::capabilities(
        "required_capabilities",
        input.required_capabilities.as_deref().unwrap_or(&[]),
    )?;
    let preferred_capabilities = validate::capabilities(
        "preferred_capabilities",
        input.preferred_capabilities.as_deref().unwrap_or(&[]),
    )?;
    if let Some(m) = &input.metadata {
        validate::check_json(m, validate::METADATA_LIMIT, "metadata")?;
    }
    Ok(NewTask {
        id,
        identifier: non_empty(input.identifier.as_deref()),
        scope,
        workspace_id,
        network_channel,
        title,
        description: non_empty(input.description.as_deref()),
        priority,
        draft: input.draft.unwrap_or(false),
        approval_policy,
        auto_enqueue_on_ready: input.auto_enqueue_on_ready.unwrap_or(false),
        max_attempts,
        metadata: input.metadata.clone(),
        owner,
        required_capabilities,
        preferred_capabilities,
    })
}

/// `POST /api/tasks` (parent `None`) and `POST /api/tasks/{parent}/children`.
pub fn create_task(
    op: &mut Op<'_>,
    parent_id: Option<&str>,
    input: &CreateTaskInput,
) -> Result<TaskPayload> {
    if input.approval_policy.is_some() {
        policy::check_field(op.caller.role, Field::ApprovalPolicy, "approval_policy")?;
    }
    let new = validate_create(input)?;
    op.touch_session()?;
    let mut parent = match parent_id {
        None => None,
        Some(pid) => {
            let parent = op.load_task(pid)?;
            check_child_allowed(op, &parent, &new)?;
            Some(parent)
        }
    };
    if op.store.task(&new.id)?.is_some() {
        return Err(Error::conflict(
            "duplicate_task",
            format!("task {} already exists", new.id),
        ));
    }
    let approval_state = match new.approval_policy {
        ApprovalPolicy::Manual => ApprovalState::Pending,
        ApprovalPolicy::None => ApprovalState::NotRequired,
    };
    let gated = new.approval_policy == ApprovalPolicy::Manual;
    let status = match (new.draft, gated) {
        (true, _) => TaskStatus::Draft,
        (false, true) => TaskStatus::Blocked,
        (false, false) => TaskStatus::Ready,
    };
    let now = op.now;
    let mut task = Task {
        id: new.id,
        identifier: new.identifier,
        scope: new.scope,
        workspace_id: new.workspace_id,
        parent_task_id: parent.as_ref().map(|p| p.id.clone()),
        network_channel: new.network_channel,
        title: new.title,
        description: new.description,
        priority: new.priority,
        max_attempts: new.max_attempts,
        auto_enqueue_on_ready: new.auto_enqueue_on_ready,
        status,
        approval_policy: new.approval_policy,
        approval_state,
        owner: new.owner,
        current_run_id: None,
        latest_event_seq: 0,
        created_by: op.caller.actor.clone(),
        origin: op.caller.origin.clone(),
        created_at: now,
        updated_at: now,
        closed_at: None,
        last_activity_at: now,
        metadata: new.metadata,
        required_capabilities: new.required_capabilities,
        preferred_capabilities: new.preferred_capabilities,
    };
    op.store.insert_task(&task)?;
    let payload = Payload::new()
        .set("scope", task.scope.as_str())
        .opt("workspace_id", task.workspace_id.clone())
        .opt("parent_task_id", task.parent_task_id.clone())
        .set("status", task.status.as_str())
        .opt("network_channel", task.network_channel.clone())
        .opt(
            "owner",
            task.owner
                .as_ref()
                .map(|o| serde_json::to_value(o).unwrap_or(Value::Null)),
        )
        .build();
    op.record(&mut task, None, "task.created", payload)?;
    if let Some(parent) = parent.as_mut() {
        let payload = Payload::new()
            .set("child_task_id", task.id.clone())
            .set("child_scope", task.scope.as_str())
            .opt("child_workspace_id", task.workspace_id.clone())
            .build();
        op.record(parent, None, "task.child_created", payload)?;
    }
    Ok(TaskPayload::from(&task))
}

/// Scope compatibility, the tree limits (64 children, depth 8), and no work beneath an
/// approval the caller may not decide.
fn check_child_allowed(op: &mut Op<'_>, parent: &Task, child: &NewTask) -> Result<()> {
    if parent.scope == Scope::Workspace
        && (child.scope != Scope::Workspace || child.workspace_id != parent.workspace_id)
    {
        return Err(Error::validation(format!(
            "a child of workspace task {} must be a workspace task in workspace {}",
            parent.id,
            parent.workspace_id.as_deref().unwrap_or("")
        )));
    }
    let children = op
        .store
        .child_counts(std::slice::from_ref(&parent.id))?
        .get(&parent.id)
        .copied()
        .unwrap_or(0);
    if children >= MAX_CHILDREN {
        return Err(Error::conflict(
            "graph_limit_exceeded",
            format!("task {} already has {MAX_CHILDREN} children", parent.id),
        ));
    }
    // Work beneath an approval nobody has granted would run without it.
    let mut depth = 1;
    let mut ancestor = Some(parent.clone());
    while let Some(task) = ancestor {
        policy::check_gated(op.caller.role, Operation::CreateChild, &task)?;
        if depth >= MAX_DEPTH {
            break;
        }
        ancestor = match &task.parent_task_id {
            None => None,
            Some(id) => {
                depth += 1;
                op.store.task(id)?
            }
        };
    }
    if depth + 1 > MAX_DEPTH {
        return Err(Error::conflict(
            "graph_limit_exceeded",
            format!(
                "a child of task {} would exceed the maximum depth of {MAX_DEPTH}",
                parent.id
            ),
        ));
    }
    Ok(())
}

/// PATCH field names in the order `task.updated` lists them.
const PATCH_FIELDS: [&str; 11] = [
    "title",
    "description",
    "priority",
    "max_attempts",
    "auto_enqueue_on_ready",
    "approval_policy",
    "metadata",
    "network_channel",
    "owner",
    "required_capabilities",
    "preferred_capabilities",
];

/// `PATCH /api/tasks/{id}`. The patch is validated before the task is loaded.
pub fn patch_task(op: &mut Op<'_>, id: &str, input: &PatchTaskInput) -> Result<TaskPayload> {
    if input.approval_policy.is_some() {
        policy::check_field(op.caller.role, Field::ApprovalPolicy, "approval_policy")?;
    }
    let has_field = input.title.is_some()
        || input.description.is_some()
        || input.priority.is_some()
        || input.max_attempts.is_some()
        || input.auto_enqueue_on_ready.is_some()
        || input.approval_policy.is_some()
        || input.metadata.as_ref().is_some_and(|m| !m.is_null())
        || input.network_channel.is_some()
        || input.owner.is_some()
        || input.clear_owner == Some(true)
        || input.required_capabilities.is_some()
        || input.preferred_capabilities.is_some();
    if !has_field {
        return Err(Error::validation(
            "task update must include at least one mutable field",
        ));
    }
    let title = match &input.title {
        None => None,
        Some(t) => {
            Some(non_empty(Some(t)).ok_or_else(|| Error::validation("title must not be empty"))?)
        }
    };
    let network_channel = match input.network_channel.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(ch) => {
            validate::network_channel(ch)?;
            Some(Some(ch.to_string()))
        }
    };
    let priority = input.priority.as_deref().map(Priority::parse).transpose()?;
    let max_attempts = input.max_attempts.map(validate::max_attempts).transpose()?;
    let approval_policy = input
        .approval_policy
        .as_deref()
        .map(ApprovalPolicy::parse)
        .transpose()?;
    if input.owner.is_some() && input.clear_owner == Some(true) {
        return Err(Error::validation(
            "owner and clear_owner cannot be combined",
        ));
    }
    let owner = match &input.owner {
        Some(o) => Some(Some(validate::owner(
            o.kind.as_deref(),
            o.reference.as_deref(),
        )?)),
        None if input.clear_owner == Some(true) => Some(None),
        None => None,
    };
    let required = input
        .required_capabilities
        .as_deref()
        .map(|c| validate::capabilities("required_capabilities", c))
        .transpose()?;
    let preferred = input
        .preferred_capabilities
        .as_deref()
        .map(|c| validate::capabilities("preferred_capabilities", c))
        .transpose()?;
    let metadata = input.metadata.as_ref().filter(|m| !m.is_null());
    if let Some(m) = metadata {
        validate::check_json(m, validate::METADATA_LIMIT, "metadata")?;
    }

    op.touch_session()?;
    let mut task = op.load_task(id)?;
    policy::check_gated(op.caller.role, Operation::UpdateTask, &task)?;
    let mut changed = [false; PATCH_FIELDS.len()];
    if let Some(t) = title {
        changed[0] = t != task.title;
        task.title = t;
    }
    if let Some(d) = &input.description {
        let d = non_empty(Some(d));
        changed[1] = d != task.description;
        task.description = d;
    }
    if let Some(p) = priority {
        changed[2] = p != task.priority;
        task.priority = p;
    }
    if let Some(m) = max_attempts {
        changed[3] = m != task.max_attempts;
        task.max_attempts = m;
    }
    if let Some(a) = input.auto_enqueue_on_ready {
        changed[4] = a != task.auto_enqueue_on_ready;
        task.auto_enqueue_on_ready = a;
    }
    if let Some(p) = approval_policy {
        if p != task.approval_policy {
            changed[5] = true;
            task.approval_policy = p;
            task.approval_state = match p {
                ApprovalPolicy::Manual => ApprovalState::Pending,
                ApprovalPolicy::None => ApprovalState::NotRequired,
            };
        }
    }
    if let Some(m) = metadata {
        changed[6] = task.metadata.as_ref() != Some(m);
        task.metadata = Some(m.clone());
    }
    if let Some(ch) = network_channel {
        changed[7] = ch != task.network_channel;
        task.network_channel = ch;
    }
    if let Some(o) = owner {
        changed[8] = o != task.owner;
        task.owner = o;
    }
    if let Some(c) = required {
        changed[9] = c != task.required_capabilities;
        task.required_capabilities = c;
    }
    if let Some(c) = preferred {
        changed[10] = c != task.preferred_capabilities;
        task.preferred_capabilities = c;
    }
    let changed_fields: Vec<&str> = PATCH_FIELDS
        .iter()
        .zip(changed)
        .filter_map(|(name, c)| c.then_some(*name))
        .collect();
    if changed_fields.is_empty() {
        return Ok(TaskPayload::from(&task));
    }
    task.updated_at = op.now;
    if changed[2] {
        // Queued and active runs carry the task's priority for the claim order.
        for mut run in op
            .store
            .open_runs_of_tasks(std::slice::from_ref(&task.id))?
        {
            run.priority = task.priority;
            op.store.update_run(&run)?;
        }
    }
    op.reconcile(&mut task)?;
    // Owner, priority or capabilities may now match a parked claimer.
    op.work_available = true;
    let payload = Payload::new()
        .json("changed_fields", &changed_fields)
        .set("status", task.status.as_str())
        .build();
    op.record(&mut task, None, "task.updated", payload)?;
    Ok(TaskPayload::from(&task))
}

/// Validated body of publish / approve / start / enqueue.
pub(crate) struct ExecuteRequest {
    pub idempotency_key: Option<String>,
    pub metadata: Option<Value>,
    pub network_channel: Option<String>,
}

pub(crate) fn validate_execute(input: &ExecuteInput) -> Result<ExecuteRequest> {
    let network_channel = non_empty(input.network_channel.as_deref());
    if let Some(ch) = &network_channel {
        validate::network_channel(ch)?;
    }
    if let Some(m) = &input.metadata {
        validate::check_json(m, validate::METADATA_LIMIT, "metadata")?;
    }
    Ok(ExecuteRequest {
        idempotency_key: non_empty(input.idempotency_key.as_deref()),
        metadata: input.metadata.clone(),
        network_channel,
    })
}

/// When the client sent an idempotency key already used from the same origin, the answer is the
/// task and run recorded for it, as they are now.
fn replay(op: &mut Op<'_>, task_id: &str, key: Option<&str>) -> Result<Option<Execution>> {
    let Some(run) = super::runs::replayed_run(op, task_id, key)? else {
        return Ok(None);
    };
    let task = op.load_task(task_id)?;
    Ok(Some(Execution {
        task: TaskPayload::from(&task),
        run: Some(RunPayload::from(&run)),
    }))
}

/// `POST /api/tasks/{id}/publish`: a draft leaves draft and its first run is enqueued.
pub fn publish_task(op: &mut Op<'_>, id: &str, input: &ExecuteInput) -> Result<Execution> {
    let req = validate_execute(input)?;
    op.touch_session()?;
    if let Some(done) = replay(op, id, req.idempotency_key.as_deref())? {
        return Ok(done);
    }
    let mut task = op.load_task(id)?;
    if task.status != TaskStatus::Draft {
        return Err(Error::transition(format!(
            "task {id} is {}; only a draft can be published",
            task.status
        )));
    }
    let dependencies_open = op.dependencies_open(id)?;
    let approval_open = task.approval_policy == ApprovalPolicy::Manual
        && task.approval_state != ApprovalState::Approved;
    if dependencies_open || approval_open {
        return Err(Error::transition(format!(
            "task {id} would be blocked once published ({}); resolve that first",
            if approval_open {
                "approval pending"
            } else {
                "open dependencies"
            }
        )));
    }
    task.status = TaskStatus::Pending;
    task.updated_at = op.now;
    op.reconcile(&mut task)?;
    let payload = Payload::new()
        .set("previous_status", "draft")
        .set("status", task.status.as_str())
        .set("approval_state", task.approval_state.as_str())
        .build();
    op.record(&mut task, None, "task.published", payload)?;
    let run = super::runs::enqueue(op, &mut task, req)?;
    Ok(Execution {
        task: TaskPayload::from(&task),
        run: Some(RunPayload::from(&run)),
    })
}

/// `POST /api/tasks/{id}/approve`: grants a pending manual approval and enqueues a run. A draft
/// keeps its approval for when it is published and gets no run yet.
pub fn approve_task(op: &mut Op<'_>, id: &str, input: &ExecuteInput) -> Result<Execution> {
    let req = validate_execute(input)?;
    op.touch_session()?;
    if let Some(done) = replay(op, id, req.idempotency_key.as_deref())? {
        return Ok(done);
    }
    let mut task = decide_approval(op, id, ApprovalState::Approved, "task.approved", None)?;
    if task.status == TaskStatus::Draft {
        return Ok(Execution {
            task: TaskPayload::from(&task),
            run: None,
        });
    }
    // A run an operator queued while the task awaited approval is the run the approval releases:
    // enqueuing a second one would fail (one open run per task) and leave the approval impossible
    // to give. The approve's own run settings apply only to a run it enqueues.
    let open = op
        .store
        .open_runs_of_tasks(std::slice::from_ref(&task.id))?;
    if let Some(run) = open.into_iter().next() {
        super::runs::bind_idempotency_key(op, req.idempotency_key.as_deref(), &run)?;
        return Ok(Execution {
            task: TaskPayload::from(&task),
            run: Some(RunPayload::from(&run)),
        });
    }
    let run = super::runs::enqueue(op, &mut task, req)?;
    Ok(Execution {
        task: TaskPayload::from(&task),
        run: Some(RunPayload::from(&run)),
    })
}

/// `POST /api/tasks/{id}/reject`: the task stays blocked (not closed); queued runs stay queued.
/// A reason, when given, goes into the `task.rejected` event.
pub fn reject_task(op: &mut Op<'_>, id: &str, input: &RejectInput) -> Result<TaskPayload> {
    let reason = validate::reason(input.reason.as_deref())?;
    op.touch_session()?;
    let task = decide_approval(op, id, ApprovalState::Rejected, "task.rejected", reason)?;
    Ok(TaskPayload::from(&task))
}

fn decide_approval(
    op: &mut Op<'_>,
    id: &str,
    decision: ApprovalState,
    event_type: &'static str,
    reason: Option<String>,
) -> Result<Task> {
    let mut task = op.load_task(id)?;
    if task.approval_policy != ApprovalPolicy::Manual
        || task.approval_state != ApprovalState::Pending
    {
        return Err(Error::transition(format!(
            "cannot transition approval of task {id} from {} to {decision}",
            task.approval_state
        )));
    }
    let previous = task.approval_state;
    task.approval_state = decision;
    task.updated_at = op.now;
    op.reconcile(&mut task)?;
    let payload = Payload::new()
        .set("previous_approval_state", previous.as_str())
        .set("approval_state", decision.as_str())
        .set("status", task.status.as_str())
        .opt("reason", reason)
        .build();
    op.record(&mut task, None, event_type, payload)?;
    Ok(task)
}

/// `POST /api/tasks/{id}/start`: enqueues a run of an executable task.
pub fn start_task(op: &mut Op<'_>, id: &str, input: &ExecuteInput) -> Result<Execution> {
    let req = validate_execute(input)?;
    op.touch_session()?;
    if let Some(done) = replay(op, id, req.idempotency_key.as_deref())? {
        return Ok(done);
    }
    let mut task = op.load_task(id)?;
    if matches!(
        task.status,
        TaskStatus::Blocked | TaskStatus::Draft | TaskStatus::Canceled
    ) {
        return Err(Error::transition(format!(
            "task {id} is {} and cannot be started",
            task.status
        )));
    }
    let run = super::runs::enqueue(op, &mut task, req)?;
    Ok(Execution {
        task: TaskPayload::from(&task),
        run: Some(RunPayload::from(&run)),
    })
}
