//! Run operations on the operator paths: enqueue, claim, start, attach-session, complete, fail,
//! cancel; and the enqueue rule every path shares (attempts, one open run, idempotency).

use serde_json::Value;

use super::tasks::{validate_execute, ExecuteRequest};
use super::{Op, Payload};
use crate::claim_audience;
use crate::derive;
use crate::error::{Error, Result};
use crate::ids;
use crate::input::{
    AttachSessionInput, CancelInput, CompleteInput, ExecuteInput, FailInput, IdempotencyInput,
};
use crate::model::{IdempotencyRecord, OwnerKind, Run, RunStatus, Scope, Task, TaskStatus};
use crate::policy::{self, Operation};
use crate::store::Neighbourhood;
use crate::time::ZERO_TIME;
use crate::validate::{self, non_empty, RESULT_LIMIT};
use crate::views::RunPayload;

/// The run an idempotency key from this caller's origin already produced for `task_id`, if any.
/// The same key bound to another task is a conflict.
pub(crate) fn replayed_run(
    op: &mut Op<'_>,
    task_id: &str,
    key: Option<&str>,
) -> Result<Option<Run>> {
    let Some(key) = key else { return Ok(None) };
    let Some(record) = op.store.idempotency_record(key, &op.caller.origin)? else {
        return Ok(None);
    };
    if record.task_id != task_id {
        return Err(Error::conflict(
            "idempotency_key_conflict",
            format!(
                "idempotency key {key} is already bound to task {}",
                record.task_id
            ),
        ));
    }
    op.store.run(&record.run_id)
}

/// Enqueues a new run of `task`: the task must not be a draft or canceled, must have no open run,
/// and must have attempts left. Records `task.run_enqueued`.
pub(crate) fn enqueue(op: &mut Op<'_>, task: &mut Task, req: ExecuteRequest) -> Result<Run> {
    if matches!(task.status, TaskStatus::Draft | TaskStatus::Canceled) {
        return Err(Error::transition(format!(
            "task {} is {} and cannot be enqueued",
            task.id, task.status
        )));
    }
    let runs = op.store.runs_of_task(&task.id)?;
    if let Some(open) = runs.iter().find(|r| r.status.is_open()) {
        return Err(Error::conflict(
            "open_run_exists",
            format!(
                "task {} has open run {}; finish or cancel it before enqueueing another run",
                task.id, open.id
            ),
        ));
    }
    if derive::attempts_exhausted(&runs, task.max_attempts) {
        return Err(Error::conflict(
            "attempts_exhausted",
            format!(
                "task {} exhausted max_attempts={}",
                task.id, task.max_attempts
            ),
        ));
    }
    let id = ids::run_id();
    let network_channel = req.network_channel.or_else(|| task.network_channel.clone());
    let coordination_channel_id = (task.scope == Scope::Workspace).then(|| {
        network_channel
            .clone()
            .unwrap_or_else(|| format!("coord-{id}"))
    });
    let run = Run {
        id,
        task_id: task.id.clone(),
        status: RunStatus::Queued,
        attempt: derive::highest_attempt(&runs) + 1,
        claimed_by: None,
        session_id: None,
        origin: op.caller.origin.clone(),
        idempotency_key: req.idempotency_key.clone(),
        network_channel,
        coordination_channel_id,
        claim_token_hash: None,
        lease_until: None,
        heartbeat_at: None,
        lease_expirations: 0,
        queued_at: op.now,
        claimed_at: None,
        started_at: None,
        ended_at: None,
        error: None,
        metadata: req.metadata,
        result: None,
        required_capabilities: task.required_capabilities.clone(),
        preferred_capabilities: task.preferred_capabilities.clone(),
        priority: task.priority,
        claim_idempotency_key: None,
        session_token: None,
        claim_audience: claim_audience::of_task(task),
    };
    op.store.insert_run(&run)?;
    bind_idempotency_key(op, req.idempotency_key.as_deref(), &run)?;
    op.reconcile(task)?;
    op.work_available = true;
    let payload = Payload::new()
        .set("attempt", run.attempt)
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .opt("network_channel", run.network_channel.clone())
        .opt(
            "coordination_channel_id",
            run.coordination_channel_id.clone(),
        )
        .opt("idempotency_key", run.idempotency_key.clone())
        .build();
    op.record(task, Some(&run.id), "task.run_enqueued", payload)?;
    Ok(run)
}

fn require_key_for_non_human(op: &Op<'_>, key: Option<&str>, action: &str) -> Result<()> {
    if !op.caller.is_human() && key.is_none() {
        return Err(Error::validation(format!(
            "idempotency_key is required when an agent {action}"
        )));
    }
    Ok(())
}

/// `POST /api/tasks/{id}/runs`.
pub fn enqueue_run(op: &mut Op<'_>, task_id: &str, input: &ExecuteInput) -> Result<RunPayload> {
    let req = validate_execute(input)?;
    require_key_for_non_human(op, req.idempotency_key.as_deref(), "enqueues a run")?;
    op.touch_session()?;
    let mut task = op.load_task(task_id)?;
    policy::check_gated(op.caller.role, Operation::EnqueueRun, &task)?;
    if matches!(task.status, TaskStatus::Draft | TaskStatus::Canceled) {
        return Err(Error::transition(format!(
            "task {task_id} is {} and cannot be enqueued",
            task.status
        )));
    }
    if let Some(run) = replayed_run(op, task_id, req.idempotency_key.as_deref())? {
        return Ok(RunPayload::from(&run));
    }
    let run = enqueue(op, &mut task, req)?;
    Ok(RunPayload::from(&run))
}

/// Binds the caller's idempotency key (scoped by its origin) to `run`, so a retry with the same
/// key answers with that run.
pub(crate) fn bind_idempotency_key(op: &mut Op<'_>, key: Option<&str>, run: &Run) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    op.store.insert_idempotency_record(&IdempotencyRecord {
        key: key.to_string(),
        origin: op.caller.origin.clone(),
        task_id: run.task_id.clone(),
        run_id: run.id.clone(),
        created_at: op.now,
    })
}

/// Loads a run and its task, refusing when the task cannot execute now.
fn executable(op: &mut Op<'_>, run_id: &str) -> Result<(Run, Task)> {
    let run = op.load_run(run_id)?;
    let task = op.load_task(&run.task_id)?;
    if matches!(
        task.status,
        TaskStatus::Blocked | TaskStatus::Draft | TaskStatus::Canceled
    ) {
        return Err(Error::transition(format!(
            "task {} is {}",
            task.id, task.status
        )));
    }
    Ok((run, task))
}

fn cannot(run: &Run, to: RunStatus) -> Error {
    Error::transition(format!(
        "task run {} cannot transition from {} to {to}",
        run.id, run.status
    ))
}

/// `POST /api/task-runs/{id}/claim`: a compare-and-set from `queued` to `claimed`, without a lease.
pub fn claim_run(op: &mut Op<'_>, run_id: &str, input: &IdempotencyInput) -> Result<RunPayload> {
    require_key_for_non_human(
        op,
        non_empty(input.idempotency_key.as_deref()).as_deref(),
        "claims a run",
    )?;
    op.touch_session()?;
    let (mut run, mut task) = executable(op, run_id)?;
    if run.status != RunStatus::Queued {
        return Err(cannot(&run, RunStatus::Claimed));
    }
    if let Some(owner) = &task.owner {
        let allowed = match OwnerKind::parse(&owner.kind) {
            Ok(OwnerKind::Pool) => false,
            Ok(OwnerKind::AgentSession) => op.caller.session_id() == Some(owner.reference.as_str()),
            _ => true,
        };
        if !allowed {
            return Err(Error::forbidden(
                "owner_mismatch",
                format!(
                    "task {} is owned by {} {}",
                    task.id, owner.kind, owner.reference
                ),
            ));
        }
    }
    run.status = RunStatus::Claimed;
    run.claimed_by = Some(op.caller.actor.clone());
    run.claimed_at = Some(op.now);
    op.store.update_run(&run)?;
    op.reconcile(&mut task)?;
    let payload = Payload::new()
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .json("claimed_by", &run.claimed_by)
        .set("lease_until", ZERO_TIME)
        .build();
    op.record(&mut task, Some(&run.id), "task.run_claimed", payload)?;
    Ok(RunPayload::from(&run))
}

fn run_status_payload(run: &Run, task: &Task) -> Value {
    Payload::new()
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .opt("session_id", run.session_id.clone())
        .build()
}

/// `POST /api/task-runs/{id}/start`: claimed → starting → running in one call; starting → running.
pub fn start_run(op: &mut Op<'_>, run_id: &str, input: &IdempotencyInput) -> Result<RunPayload> {
    require_key_for_non_human(
        op,
        non_empty(input.idempotency_key.as_deref()).as_deref(),
        "starts a run",
    )?;
    op.touch_session()?;
    let (mut run, mut task) = executable(op, run_id)?;
    match run.status {
        RunStatus::Claimed => {
            run.status = RunStatus::Starting;
            op.store.update_run(&run)?;
            op.reconcile(&mut task)?;
            let payload = run_status_payload(&run, &task);
            op.record(&mut task, Some(&run.id), "task.run_starting", payload)?;
        }
        RunStatus::Starting => {}
        _ => return Err(cannot(&run, RunStatus::Running)),
    }
    run.status = RunStatus::Running;
    run.started_at = Some(op.now);
    op.store.update_run(&run)?;
    op.reconcile(&mut task)?;
    let payload = run_status_payload(&run, &task);
    op.record(&mut task, Some(&run.id), "task.run_started", payload)?;
    Ok(RunPayload::from(&run))
}

/// `POST /api/task-runs/{id}/attach-session`: binds a session; a claimed run becomes starting.
pub fn attach_session(
    op: &mut Op<'_>,
    run_id: &str,
    input: &AttachSessionInput,
) -> Result<RunPayload> {
    let session_id = non_empty(input.session_id.as_deref())
        .ok_or_else(|| Error::validation("session_id is required"))?;
    op.touch_session()?;
    let (mut run, mut task) = executable(op, run_id)?;
    if let Some(bound) = &run.session_id {
        return Err(Error::conflict(
            "session_already_bound",
            format!("task run {run_id} is already bound to session {bound}"),
        ));
    }
    if !matches!(run.status, RunStatus::Claimed | RunStatus::Starting) {
        return Err(Error::transition(format!(
            "task run {run_id} is {}; a session can only be attached to a claimed or starting run",
            run.status
        )));
    }
    // An attached session acts through no token: it is not any agent token's session.
    if let Some(other) = op.store.active_run_of_session(&session_id, None)? {
        return Err(Error::conflict(
            "session_in_use",
            format!("session {session_id} is already bound to active run {other}"),
        ));
    }
    run.session_id = Some(session_id);
    run.status = RunStatus::Starting;
    op.store.update_run(&run)?;
    op.reconcile(&mut task)?;
    let payload = run_status_payload(&run, &task);
    op.record(&mut task, Some(&run.id), "task.run_session_bound", payload)?;
    Ok(RunPayload::from(&run))
}

/// Runs claimed through an agent lease may only be finished through the fenced agent endpoints.
fn refuse_leased(run: &Run) -> Result<()> {
    if run.claim_token_hash.is_some() {
        return Err(Error::conflict(
            "lease_required",
            format!(
                "task run {} was claimed under a lease and requires token-fenced completion through the agent API",
                run.id
            ),
        ));
    }
    Ok(())
}

/// Clears the lease of a run that has ended.
fn end_run(run: &mut Run, status: RunStatus, now: crate::time::Ts) {
    run.status = status;
    run.ended_at = Some(now);
    run.lease_until = None;
    run.heartbeat_at = None;
}

/// `POST /api/task-runs/{id}/complete`: running → completed.
pub fn complete_run(op: &mut Op<'_>, run_id: &str, input: &CompleteInput) -> Result<RunPayload> {
    if let Some(result) = &input.result {
        validate::check_json(result, RESULT_LIMIT, "result")?;
    }
    op.touch_session()?;
    let mut run = op.load_run(run_id)?;
    refuse_leased(&run)?;
    if run.status != RunStatus::Running {
        return Err(cannot(&run, RunStatus::Completed));
    }
    end_run(&mut run, RunStatus::Completed, op.now);
    run.result = input.result.clone();
    run.error = None;
    let around = op.load_task_around(&run.task_id)?;
    finish_completion(op, around, &mut run, Payload::new())?;
    Ok(RunPayload::from(&run))
}

/// Saves a completed run, records `task.run_completed` (with `extra` payload fields) and
/// auto-enqueues the dependents that became ready. Shared by the operator and agent paths;
/// `(task, around)` is the run's task and its neighbourhood, read before the run changed.
pub(crate) fn finish_completion(
    op: &mut Op<'_>,
    (mut task, around): (Task, Neighbourhood),
    run: &mut Run,
    extra: Payload,
) -> Result<()> {
    let dependents = op.save_run(&mut task, around, run)?;
    let payload = extra
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .opt("result", run.result.clone())
        .build();
    op.record(&mut task, Some(&run.id), "task.run_completed", payload)?;
    let dependents = match dependents {
        Some(ids) => ids,
        None => op.store.dependents_of(&task.id)?,
    };
    auto_enqueue_dependents(op, dependents, &run.id)
}

/// Enqueues a run of each of `dependents` (of the task whose run `run_id` completed) that asked
/// for it and is now ready. The idempotency key `task.auto_enqueue.<dependent>.<completed run>`
/// makes this happen once per dependent and blocker run.
fn auto_enqueue_dependents(op: &mut Op<'_>, dependents: Vec<String>, run_id: &str) -> Result<()> {
    for dependent_id in dependents {
        let Some(mut dependent) = op.store.task(&dependent_id)? else {
            continue;
        };
        if !dependent.auto_enqueue_on_ready || dependent.status != TaskStatus::Ready {
            continue;
        }
        let runs = op.store.runs_of_task(&dependent_id)?;
        if runs.iter().any(|r| r.status.is_open())
            || derive::attempts_exhausted(&runs, dependent.max_attempts)
        {
            continue;
        }
        let key = format!("task.auto_enqueue.{dependent_id}.{run_id}");
        if op
            .store
            .idempotency_record(&key, &op.caller.origin)?
            .is_some()
        {
            continue;
        }
        enqueue(
            op,
            &mut dependent,
            ExecuteRequest {
                idempotency_key: Some(key),
                metadata: None,
                network_channel: None,
            },
        )?;
    }
    Ok(())
}

/// `POST /api/task-runs/{id}/fail`: starting or running → failed. No automatic retry.
pub fn fail_run(op: &mut Op<'_>, run_id: &str, input: &FailInput) -> Result<RunPayload> {
    let error =
        non_empty(input.error.as_deref()).ok_or_else(|| Error::validation("error is required"))?;
    if let Some(m) = &input.metadata {
        validate::check_json(m, RESULT_LIMIT, "metadata")?;
    }
    op.touch_session()?;
    let mut run = op.load_run(run_id)?;
    refuse_leased(&run)?;
    if !matches!(run.status, RunStatus::Starting | RunStatus::Running) {
        return Err(cannot(&run, RunStatus::Failed));
    }
    end_run(&mut run, RunStatus::Failed, op.now);
    run.error = Some(error);
    run.result = None;
    let around = op.load_task_around(&run.task_id)?;
    finish_failure(op, around, &mut run, input.metadata.clone(), Payload::new())?;
    Ok(RunPayload::from(&run))
}

/// Saves a failed run and records `task.run_failed`. Shared by the operator and agent paths;
/// `(task, around)` as for [`finish_completion`].
pub(crate) fn finish_failure(
    op: &mut Op<'_>,
    (mut task, around): (Task, Neighbourhood),
    run: &mut Run,
    metadata: Option<Value>,
    extra: Payload,
) -> Result<()> {
    op.save_run(&mut task, around, run)?;
    let payload = extra
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .opt("error", run.error.clone())
        .opt("metadata", metadata)
        .build();
    op.record(&mut task, Some(&run.id), "task.run_failed", payload)?;
    Ok(())
}

/// Validated body of a cancel.
pub(crate) struct CancelRequest {
    pub reason: Option<String>,
    pub metadata: Option<Value>,
}

pub(crate) fn validate_cancel(input: &CancelInput) -> Result<CancelRequest> {
    if let Some(m) = &input.metadata {
        validate::check_json(m, RESULT_LIMIT, "metadata")?;
    }
    Ok(CancelRequest {
        reason: non_empty(input.reason.as_deref()),
        metadata: input.metadata.clone(),
    })
}

/// Cancels one open run and records `task.run_canceled`. `task_status` is the task's status as the
/// event should report it; `propagated_from` names the root of a tree cancel.
pub(crate) fn cancel_open_run(
    op: &mut Op<'_>,
    run: &mut Run,
    task: &mut Task,
    req: &CancelRequest,
    task_status: TaskStatus,
    propagated_from: Option<&str>,
) -> Result<()> {
    let session_id = run.session_id.clone();
    end_run(run, RunStatus::Canceled, op.now);
    run.result = None;
    run.error = None;
    op.store.update_run(run)?;
    let payload = Payload::new()
        .set("status", "canceled")
        .set("task_status", task_status.as_str())
        .opt("reason", req.reason.clone())
        .opt("metadata", req.metadata.clone())
        .opt("session_id", session_id)
        .opt(
            "propagated_from_task_id",
            propagated_from.map(str::to_string),
        )
        .build();
    op.record(task, Some(&run.id), "task.run_canceled", payload)?;
    Ok(())
}

/// `POST /api/task-runs/{id}/cancel`: any open run → canceled; the task becomes canceled for good.
pub fn cancel_run(op: &mut Op<'_>, run_id: &str, input: &CancelInput) -> Result<RunPayload> {
    let req = validate_cancel(input)?;
    op.touch_session()?;
    let mut run = op.load_run(run_id)?;
    if !run.status.is_open() || run.status == RunStatus::NeedsAttention {
        return Err(cannot(&run, RunStatus::Canceled));
    }
    let mut task = op.load_task(&run.task_id)?;
    // Cancelling a task's open run always leaves the task canceled for good: the canceled run is its
    // latest attempt, and canceled is sticky.
    cancel_open_run(op, &mut run, &mut task, &req, TaskStatus::Canceled, None)?;
    op.reconcile(&mut task)?;
    Ok(RunPayload::from(&run))
}
