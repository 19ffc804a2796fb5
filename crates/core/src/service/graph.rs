//! Operations on the task graph: dependency edges, tree cancel and delete.

use std::collections::{HashSet, VecDeque};

use super::agent::refuse_foreign_lease;
use super::runs::{cancel_open_run, validate_cancel};
use super::{Op, Payload};
use crate::error::{Error, Result};
use crate::input::{CancelInput, DependencyInput};
use crate::model::{Dependency, TaskStatus};
use crate::policy::{self, Operation};
use crate::validate::{non_empty, MAX_DEPENDENCIES};
use crate::views::TaskPayload;

const BLOCKS: &str = "blocks";

/// `POST /api/tasks/{id}/dependencies`: `id` will wait for `depends_on_task_id` to complete.
///
/// The answer is the task's detail, read after the commit (`views::task_detail`): it holds every
/// event of the task, and reading those inside the single writer would stall every other write
/// for as long as the task's history is long.
pub fn add_dependency(op: &mut Op<'_>, id: &str, input: &DependencyInput) -> Result<()> {
    let blocker_id = non_empty(input.depends_on_task_id.as_deref())
        .ok_or_else(|| Error::validation("depends_on_task_id is required"))?;
    if blocker_id == id {
        return Err(Error::validation(format!(
            "task {id} cannot depend on itself"
        )));
    }
    if let Some(kind) = non_empty(input.kind.as_deref()) {
        if !kind.eq_ignore_ascii_case(BLOCKS) {
            return Err(Error::validation(format!(
                "dependency kind must be blocks; got {kind:?}"
            )));
        }
    }
    op.touch_session()?;
    let mut task = op.load_task(id)?;
    op.load_task(&blocker_id)?;
    let existing = op.store.dependencies_of(id)?;
    if existing.iter().any(|d| d.depends_on_task_id == blocker_id) {
        return Err(Error::conflict(
            "duplicate_dependency",
            format!("dependency edge {id} -> {blocker_id} already exists"),
        ));
    }
    if existing.len() >= MAX_DEPENDENCIES {
        return Err(Error::conflict(
            "graph_limit_exceeded",
            format!("task {id} already has {MAX_DEPENDENCIES} dependencies"),
        ));
    }
    if reaches(op, &blocker_id, id)? {
        return Err(Error::conflict(
            "dependency_cycle",
            format!("adding dependency {id} -> {blocker_id} would create a cycle"),
        ));
    }
    op.store.insert_dependency(&Dependency {
        task_id: id.to_string(),
        depends_on_task_id: blocker_id.clone(),
        kind: BLOCKS,
        created_at: op.now,
    })?;
    op.reconcile(&mut task)?;
    let payload = Payload::new()
        .set("depends_on_task_id", blocker_id)
        .set("kind", BLOCKS)
        .set("status", task.status.as_str())
        .build();
    op.record(&mut task, None, "task.dependency_added", payload)?;
    Ok(())
}

/// Whether `target` is reachable from `from` by following dependency edges.
fn reaches(op: &mut Op<'_>, from: &str, target: &str) -> Result<bool> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([from.to_string()]);
    while let Some(id) = queue.pop_front() {
        if id == target {
            return Ok(true);
        }
        if seen.insert(id.clone()) {
            queue.extend(
                op.store
                    .dependencies_of(&id)?
                    .into_iter()
                    .map(|d| d.depends_on_task_id),
            );
        }
    }
    Ok(false)
}

/// `DELETE /api/tasks/{id}/dependencies/{depends_on_id}`. Never enqueues anything. Answered like
/// [`add_dependency`].
pub fn remove_dependency(op: &mut Op<'_>, id: &str, blocker_id: &str) -> Result<()> {
    op.touch_session()?;
    if !op.store.delete_dependency(id, blocker_id)? {
        return Err(Error::not_found(
            "dependency_not_found",
            format!("dependency {id} -> {blocker_id} not found"),
        ));
    }
    let mut task = op.load_task(id)?;
    op.reconcile(&mut task)?;
    let payload = Payload::new()
        .set("depends_on_task_id", blocker_id)
        .set("kind", BLOCKS)
        .set("status", task.status.as_str())
        .build();
    op.record(&mut task, None, "task.dependency_removed", payload)?;
    Ok(())
}

/// `POST /api/tasks/{id}/cancel`: cancels the task and every unfinished descendant, with their open
/// runs, as one transaction. An agent token may not cancel a run another token's session leases.
pub fn cancel_task(op: &mut Op<'_>, id: &str, input: &CancelInput) -> Result<TaskPayload> {
    let req = validate_cancel(input)?;
    op.touch_session()?;
    let root = op.load_task(id)?;
    let root_has_open_run = op
        .store
        .runs_of_task(id)?
        .iter()
        .any(|r| r.status.is_open());
    if matches!(root.status, TaskStatus::Completed | TaskStatus::Failed) && !root_has_open_run {
        return Err(Error::transition(format!(
            "task {id} cannot transition from {} to canceled",
            root.status
        )));
    }
    let mut result = root;
    // Ids, not snapshots: cancelling one task reconciles its dependents, which may be later
    // tasks of this same tree.
    let mut queue = VecDeque::from([id.to_string()]);
    while let Some(task_id) = queue.pop_front() {
        let mut task = op.load_task(&task_id)?;
        queue.extend(op.store.children_of(&task.id)?.into_iter().map(|c| c.id));
        let is_root = task.id == id;
        if task.status == TaskStatus::Canceled || (!is_root && task.status.is_terminal()) {
            if is_root {
                result = task;
            }
            continue;
        }
        let propagated_from = (!is_root).then_some(id);
        let before = task.status;
        let mut canceled_run_ids = Vec::new();
        for mut run in op.store.runs_of_task(&task.id)? {
            if run.status.is_open() {
                refuse_foreign_lease(op, &run)?;
                cancel_open_run(op, &mut run, &mut task, &req, before, propagated_from)?;
                canceled_run_ids.push(run.id);
            }
        }
        task.status = TaskStatus::Canceled;
        task.updated_at = op.now;
        task.closed_at = Some(op.now);
        task.current_run_id = None;
        op.store.update_task(&task)?;
        let payload = Payload::new()
            .opt("reason", req.reason.clone())
            .opt("metadata", req.metadata.clone())
            .set("status", "canceled")
            .opt(
                "propagated_from_task_id",
                propagated_from.map(str::to_string),
            )
            .opt(
                "canceled_run_ids",
                (!canceled_run_ids.is_empty()).then(|| serde_json::json!(canceled_run_ids)),
            )
            .build();
        op.record(&mut task, None, "task.canceled", payload)?;
        let mut visited = HashSet::from([task.id.clone()]);
        op.reconcile_dependents(&task.id, &mut visited)?;
        if is_root {
            result = task;
        }
    }
    Ok(TaskPayload::from(&result))
}

/// `DELETE /api/tasks/{id}`: refused while the task has children or an open run. Records no event.
pub fn delete_task(op: &mut Op<'_>, id: &str) -> Result<()> {
    op.touch_session()?;
    let task = op.load_task(id)?;
    policy::check_gated(op.caller.role, Operation::DeleteTask, &task)?;
    let children = op
        .store
        .child_counts(&[id.to_string()])?
        .get(id)
        .copied()
        .unwrap_or(0);
    if children > 0 {
        return Err(Error::bad_request(
            "task_has_children",
            format!("task {id} has {children} child tasks; delete children first"),
        ));
    }
    if op
        .store
        .runs_of_task(id)?
        .iter()
        .any(|r| r.status.is_open())
    {
        return Err(Error::bad_request(
            "task_has_open_runs",
            format!("task {id} has active or queued runs; cancel or finish them first"),
        ));
    }
    let dependents = op.store.dependents_of(id)?;
    op.store.delete_task(id)?;
    // Its edges are gone with it, so its dependents may be unblocked now.
    for dependent in dependents {
        if let Some(mut t) = op.store.task(&dependent)? {
            op.reconcile(&mut t)?;
        }
    }
    Ok(())
}
