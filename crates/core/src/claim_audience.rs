//! Who may claim a task's queued runs, as one key stored on each run: the claim index groups queued
//! runs by (audience, priority, capability class), so a claim seeks only the groups the caller may
//! take instead of walking past runs it may not (another workspace, another owner, a blocked task).
//!
//! A run's audience is derived from its task and rewritten by `Op::reconcile` whenever the task's
//! status or owner changes; scope and workspace never change after create.

use crate::model::{OwnerKind, Scope, Task, TaskStatus};

/// `None` when no caller can claim the task's queued runs now: the task is a draft, blocked or
/// canceled, or its owner is of a kind that never claims (only agent sessions and pools do).
pub fn of_task(task: &Task) -> Option<String> {
    if matches!(
        task.status,
        TaskStatus::Draft | TaskStatus::Blocked | TaskStatus::Canceled
    ) {
        return None;
    }
    let scope = match task.scope {
        Scope::Global => scope_key(None),
        Scope::Workspace => scope_key(Some(task.workspace_id.as_deref()?)),
    };
    match &task.owner {
        None => Some(scope),
        Some(owner)
            if owner.kind == OwnerKind::AgentSession.as_str()
                || owner.kind == OwnerKind::Pool.as_str() =>
        {
            Some(format!("{scope}{}:{}", owner.kind, owner.reference))
        }
        Some(_) => None,
    }
}

/// The audiences a claimer belongs to: unowned work of its scope, work owned by its session, and
/// work owned by the pool named like the agent.
pub fn of_claimer(
    workspace_id: Option<&str>,
    session_id: &str,
    agent_name: Option<&str>,
) -> Vec<String> {
    let scope = scope_key(workspace_id);
    let mut keys = vec![
        scope.clone(),
        format!("{scope}{}:{session_id}", OwnerKind::AgentSession.as_str()),
    ];
    if let Some(name) = agent_name {
        keys.push(format!("{scope}{}:{name}", OwnerKind::Pool.as_str()));
    }
    keys
}

/// Workspace ids never contain `|` and owner kinds never contain `:`, so the key is unambiguous.
fn scope_key(workspace_id: Option<&str>) -> String {
    match workspace_id {
        None => "g|".to_string(),
        Some(ws) => format!("w:{ws}|"),
    }
}
