//! Read models: the JSON shapes of the API (seed reference) and the queries that assemble them.
//! Optional fields with no value are omitted; list arrays are always present.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::derive;
use crate::error::{Error, Result};
use crate::model::{
    ApprovalPolicy, ApprovalState, Dependency, Event, Priority, Ref, Run, RunStatus, Scope, Task,
    TaskStatus,
};
use crate::page::{self, Page, RunKey, TaskKey};
use crate::store::{ReadStore, RunFilter, TaskFilter};
use crate::time::{serialize_or_zero, Ts};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPayload {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub priority: Priority,
    pub max_attempts: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub auto_enqueue_on_ready: bool,
    pub status: TaskStatus,
    #[serde(skip_serializing_if = "is_false")]
    pub draft: bool,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_run_id: Option<String>,
    pub latest_event_seq: i64,
    pub created_by: Ref,
    pub origin: Ref,
    pub created_at: Ts,
    pub updated_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_capabilities: Vec<String>,
}

impl From<&Task> for TaskPayload {
    fn from(t: &Task) -> Self {
        TaskPayload {
            id: t.id.clone(),
            identifier: t.identifier.clone(),
            scope: t.scope,
            workspace_id: t.workspace_id.clone(),
            parent_task_id: t.parent_task_id.clone(),
            network_channel: t.network_channel.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            priority: t.priority,
            max_attempts: t.max_attempts,
            auto_enqueue_on_ready: t.auto_enqueue_on_ready,
            status: t.status,
            draft: t.status == TaskStatus::Draft,
            approval_policy: t.approval_policy,
            approval_state: t.approval_state,
            owner: t.owner.clone(),
            current_run_id: t.current_run_id.clone(),
            latest_event_seq: t.latest_event_seq,
            created_by: t.created_by.clone(),
            origin: t.origin.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            closed_at: t.closed_at,
            metadata: t.metadata.clone(),
            required_capabilities: t.required_capabilities.clone(),
            preferred_capabilities: t.preferred_capabilities.clone(),
        }
    }
}

/// A task as other records refer to it (dependency targets, run detail).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskReference {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    pub title: String,
    pub status: TaskStatus,
    pub priority: Priority,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ref>,
    pub latest_event_seq: i64,
}

impl From<&Task> for TaskReference {
    fn from(t: &Task) -> Self {
        TaskReference {
            id: t.id.clone(),
            identifier: t.identifier.clone(),
            title: t.title.clone(),
            status: t.status,
            priority: t.priority,
            scope: t.scope,
            workspace_id: t.workspace_id.clone(),
            owner: t.owner.clone(),
            latest_event_seq: t.latest_event_seq,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunPayload {
    pub id: String,
    pub task_id: String,
    pub status: RunStatus,
    pub attempt: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub origin: Ref,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Ts>,
    #[serde(skip_serializing_if = "is_zero")]
    pub lease_expirations: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    pub queued_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_capabilities: Vec<String>,
}

impl From<&Run> for RunPayload {
    fn from(r: &Run) -> Self {
        RunPayload {
            id: r.id.clone(),
            task_id: r.task_id.clone(),
            status: r.status,
            attempt: r.attempt,
            claimed_by: r.claimed_by.clone(),
            session_id: r.session_id.clone(),
            origin: r.origin.clone(),
            idempotency_key: r.idempotency_key.clone(),
            network_channel: r.network_channel.clone(),
            claim_token_hash: r.claim_token_hash.clone(),
            lease_until: r.lease_until,
            heartbeat_at: r.heartbeat_at,
            lease_expirations: r.lease_expirations,
            coordination_channel_id: r.coordination_channel_id.clone(),
            queued_at: r.queued_at,
            claimed_at: r.claimed_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            error: r.error.clone(),
            metadata: r.metadata.clone(),
            result: r.result.clone(),
            required_capabilities: r.required_capabilities.clone(),
            preferred_capabilities: r.preferred_capabilities.clone(),
        }
    }
}

/// The compact run shown as a task summary's `active_run`, and in timeline items, tree nodes and
/// inbox items (`max_attempts` is the task's).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveRunChip {
    pub id: String,
    pub task_id: String,
    pub status: RunStatus,
    pub attempt: i64,
    pub max_attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    pub queued_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActiveRunChip {
    pub fn new(r: &Run, max_attempts: i64) -> Self {
        ActiveRunChip {
            id: r.id.clone(),
            task_id: r.task_id.clone(),
            status: r.status,
            attempt: r.attempt,
            max_attempts,
            session_id: r.session_id.clone(),
            claimed_by: r.claimed_by.clone(),
            claim_token_hash: r.claim_token_hash.clone(),
            lease_until: r.lease_until,
            heartbeat_at: r.heartbeat_at,
            coordination_channel_id: r.coordination_channel_id.clone(),
            queued_at: r.queued_at,
            claimed_at: r.claimed_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            error: r.error.clone(),
        }
    }

    /// The inbox's run: no claim token hash, lease, heartbeat or coordination channel.
    pub fn compact(r: &Run, max_attempts: i64) -> Self {
        ActiveRunChip {
            claim_token_hash: None,
            lease_until: None,
            heartbeat_at: None,
            coordination_channel_id: None,
            ..ActiveRunChip::new(r, max_attempts)
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyReference {
    pub task_id: String,
    pub depends_on_task_id: String,
    pub kind: &'static str,
    pub created_at: Ts,
    pub depends_on: TaskReference,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSummary {
    #[serde(flatten)]
    pub task: TaskPayload,
    #[serde(skip_serializing_if = "is_zero")]
    pub child_count: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub dependency_count: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<DependencyReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_run: Option<ActiveRunChip>,
    pub last_activity_at: Ts,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPayload {
    pub sequence: i64,
    pub id: String,
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub event_type: String,
    pub actor: Ref,
    pub origin: Ref,
    pub payload: Value,
    pub timestamp: Ts,
}

impl From<Event> for EventPayload {
    fn from(e: Event) -> Self {
        EventPayload {
            sequence: e.sequence,
            id: e.id,
            task_id: e.task_id,
            run_id: e.run_id,
            event_type: e.event_type,
            actor: e.actor,
            origin: e.origin,
            payload: e.payload,
            timestamp: e.timestamp,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDetail {
    pub summary: TaskSummary,
    pub task: TaskPayload,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TaskSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependency_references: Vec<DependencyReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunPayload>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventPayload>,
    /// Older events exist than the [`DETAIL_EVENTS`] embedded (absent when false).
    #[serde(skip_serializing_if = "is_false")]
    pub events_truncated: bool,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionPayload {
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    pub state: &'static str,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSummary {
    #[serde(serialize_with = "serialize_or_zero")]
    pub last_activity_at: Option<Ts>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunDetail {
    pub run: RunPayload,
    pub task: TaskReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionPayload>,
    pub summary: RunSummary,
}

/// Builds summaries for a page of tasks with a fixed number of queries, whatever the page size.
pub fn summaries(store: &mut dyn ReadStore, tasks: &[Task]) -> Result<Vec<TaskSummary>> {
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let child_counts = store.child_counts(&ids)?;
    let deps = store.dependencies_of_tasks(&ids)?;
    let refs = dependency_references(store, deps)?;
    let mut refs_by_task: HashMap<String, Vec<DependencyReference>> = HashMap::new();
    for r in refs {
        refs_by_task.entry(r.task_id.clone()).or_default().push(r);
    }
    let mut runs_by_task: HashMap<String, Vec<Run>> = HashMap::new();
    for r in store.open_runs_of_tasks(&ids)? {
        runs_by_task.entry(r.task_id.clone()).or_default().push(r);
    }
    Ok(tasks
        .iter()
        .map(|t| {
            let dependencies = refs_by_task.remove(&t.id).unwrap_or_default();
            let runs = runs_by_task.get(&t.id).map(Vec::as_slice).unwrap_or(&[]);
            TaskSummary {
                task: summary_payload(t),
                child_count: child_counts.get(&t.id).copied().unwrap_or(0),
                dependency_count: dependencies.len() as i64,
                dependencies,
                active_run: derive::active_run(runs).map(|r| ActiveRunChip::new(r, t.max_attempts)),
                last_activity_at: t.last_activity_at.max(t.updated_at),
            }
        })
        .collect())
}

/// Summaries leave out the task's description and metadata.
fn summary_payload(t: &Task) -> TaskPayload {
    let mut p = TaskPayload::from(t);
    p.description = None;
    p.metadata = None;
    p
}

fn dependency_references(
    store: &mut dyn ReadStore,
    deps: Vec<Dependency>,
) -> Result<Vec<DependencyReference>> {
    let mut blocker_ids: Vec<String> = deps.iter().map(|d| d.depends_on_task_id.clone()).collect();
    blocker_ids.sort();
    blocker_ids.dedup();
    let blockers: HashMap<String, Task> = store
        .tasks_by_ids(&blocker_ids)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    Ok(deps
        .into_iter()
        .filter_map(|d| {
            let blocker = blockers.get(&d.depends_on_task_id)?;
            Some(DependencyReference {
                depends_on: TaskReference::from(blocker),
                task_id: d.task_id,
                depends_on_task_id: d.depends_on_task_id,
                kind: d.kind,
                created_at: d.created_at,
            })
        })
        .collect())
}

/// One page of `GET /api/tasks`: at most `size` tasks after `filter.after`, in list order.
pub fn list_tasks(
    store: &mut dyn ReadStore,
    filter: &TaskFilter,
    size: usize,
) -> Result<Page<TaskSummary>> {
    let filter = TaskFilter {
        limit: Some(page::fetch(size)),
        ..filter.clone()
    };
    let page = Page::cut(store.list_tasks(&filter)?, size, |t| {
        TaskKey::of(t).cursor()
    });
    let items = summaries(store, &page.items)?;
    Ok(page.with_items(items))
}

/// Events the task detail embeds, newest first; the full history is the paged timeline.
pub const DETAIL_EVENTS: usize = page::DEFAULT_LIMIT;

pub fn task_detail(store: &mut dyn ReadStore, id: &str) -> Result<TaskDetail> {
    let task = store.task(id)?.ok_or_else(|| Error::task_not_found(id))?;
    let mut summary = summaries(store, std::slice::from_ref(&task))?;
    let summary = summary.pop().expect("one summary per task");
    // Children (64 per parent), dependencies (32 per task) and runs (one per attempt, at most
    // 10) are bounded by the graph and attempt limits; only events grow without bound.
    let children = store.children_of(id)?;
    let children = summaries(store, &children)?;
    let dependencies = store.dependencies_of(id)?;
    let dependency_references = dependency_references(store, dependencies.clone())?;
    let runs = store
        .runs_of_task(id)?
        .iter()
        .map(RunPayload::from)
        .collect();
    let mut events = store.events_of_task(id, 0, Some(page::fetch(DETAIL_EVENTS)), true)?;
    let events_truncated = events.len() > DETAIL_EVENTS;
    events.truncate(DETAIL_EVENTS);
    Ok(TaskDetail {
        summary,
        task: TaskPayload::from(&task),
        children,
        dependencies,
        dependency_references,
        runs,
        events: events.into_iter().map(EventPayload::from).collect(),
        events_truncated,
    })
}

/// One page of `GET /api/tasks/{id}/runs`: at most `size` runs after `filter.after`.
pub fn list_runs(
    store: &mut dyn ReadStore,
    task_id: &str,
    filter: &RunFilter,
    size: usize,
) -> Result<Page<RunPayload>> {
    if store.task(task_id)?.is_none() {
        return Err(Error::task_not_found(task_id));
    }
    let filter = RunFilter {
        limit: Some(page::fetch(size)),
        ..filter.clone()
    };
    let page = Page::cut(store.list_runs(task_id, &filter)?, size, |r| {
        RunKey::of(r).cursor()
    });
    let items = page.items.iter().map(RunPayload::from).collect();
    Ok(page.with_items(items))
}

pub fn run_detail(store: &mut dyn ReadStore, run_id: &str) -> Result<RunDetail> {
    let run = store
        .run(run_id)?
        .ok_or_else(|| Error::run_not_found(run_id))?;
    let task = store
        .task(&run.task_id)?
        .ok_or_else(|| Error::task_not_found(&run.task_id))?;
    let mut last_activity = run.activity_at().max(run.heartbeat_at.unwrap_or_default());
    let session = match &run.session_id {
        None => None,
        Some(sid) => {
            let token = run.session_token.as_deref();
            let known = store.agent_session(sid, token)?;
            let active = store.active_run_of_session(sid, token)?.is_some();
            let (agent_name, created_at, updated_at) = match known {
                Some(s) => (s.agent_name, s.first_seen_at, s.last_seen_at),
                None => (None, run.claimed_at.unwrap_or(run.queued_at), last_activity),
            };
            last_activity = last_activity.max(updated_at);
            Some(SessionPayload {
                session_id: sid.clone(),
                agent_name,
                state: if active { "active" } else { "idle" },
                created_at,
                updated_at,
            })
        }
    };
    Ok(RunDetail {
        run: RunPayload::from(&run),
        task: TaskReference::from(&task),
        session,
        summary: RunSummary {
            last_activity_at: Some(last_activity),
        },
    })
}

/// The reference's fixed list of message kinds on a coordination channel.
const MESSAGE_KINDS: [&str; 7] = [
    "status",
    "request",
    "reply",
    "blocker",
    "handoff",
    "result",
    "review_request",
];

/// The channel agents use to talk about one run of a workspace task.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoordinationChannel {
    pub id: String,
    pub channel: String,
    pub display_name: String,
    pub purpose: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    pub task_id: String,
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    pub allowed_message_kinds: [&'static str; 7],
}

impl CoordinationChannel {
    fn of(task: &Task, run: &Run) -> Option<Self> {
        let id = run.coordination_channel_id.clone()?;
        Some(CoordinationChannel {
            channel: id.clone(),
            display_name: id.clone(),
            id,
            purpose: "task_run_coordination",
            workspace_id: task.workspace_id.clone(),
            task_id: task.id.clone(),
            run_id: run.id.clone(),
            workflow_id: run
                .metadata
                .as_ref()
                .and_then(|m| m.get("workflow_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            allowed_message_kinds: MESSAGE_KINDS,
        })
    }
}

/// The state of a lease, as the agent endpoints answer it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseSummary {
    pub task_id: String,
    pub run_id: String,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

impl From<&Run> for LeaseSummary {
    fn from(r: &Run) -> Self {
        LeaseSummary {
            task_id: r.task_id.clone(),
            run_id: r.id.clone(),
            status: r.status,
            session_id: r.session_id.clone(),
            claimed_by: r.claimed_by.clone(),
            claim_token_hash: r.claim_token_hash.clone(),
            lease_until: r.lease_until,
            heartbeat_at: r.heartbeat_at,
            coordination_channel_id: r.coordination_channel_id.clone(),
            coordination_channel: None,
        }
    }
}

/// A successful claim-next: `{task, run, lease, coordination_channel?}`.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Claim {
    pub task: TaskReference,
    pub run: ClaimedRun,
    pub lease: LeaseSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

/// A run payload with its coordination channel, as claim-next returns it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedRun {
    #[serde(flatten)]
    pub run: RunPayload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

impl Claim {
    pub fn new(task: &Task, run: &Run) -> Self {
        let channel = CoordinationChannel::of(task, run);
        let mut lease = LeaseSummary::from(run);
        lease.coordination_channel = channel.clone();
        Claim {
            task: TaskReference::from(task),
            run: ClaimedRun {
                run: RunPayload::from(run),
                coordination_channel: channel.clone(),
            },
            lease,
            coordination_channel: channel,
        }
    }
}
