//! `GET /api/observe/tasks/inbox`: the caller's lanes (reference observe.md §2).
//!
//! Storage hands over the candidate tasks (those that can be in some lane) as compact rows; the
//! lane rules, effective triage, counts and ordering are applied here, and only the items that
//! survive the per-lane `limit` are loaded in full.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use super::{InboxCandidate, ObserveFilter, ObserveStore, RunSummary, TriageRecord};
use crate::error::{Error, Result};
use crate::model::{
    ApprovalPolicy, ApprovalState, OwnerKind, Ref, Run, RunStatus, Task, TaskStatus,
};
use crate::time::Ts;
use crate::views::TaskReference;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    MyWork,
    Approvals,
    FailedRuns,
    Blocked,
    Archived,
}

impl Lane {
    /// Output order of the groups.
    pub const ALL: [Lane; 5] = [
        Lane::MyWork,
        Lane::Approvals,
        Lane::FailedRuns,
        Lane::Blocked,
        Lane::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::MyWork => "my_work",
            Lane::Approvals => "approvals",
            Lane::FailedRuns => "failed_runs",
            Lane::Blocked => "blocked",
            Lane::Archived => "archived",
        }
    }

    /// Trims and lower-cases, like every enum input.
    pub fn parse(input: &str) -> Result<Lane> {
        let norm = input.trim().to_ascii_lowercase();
        Lane::ALL
            .into_iter()
            .find(|l| l.as_str() == norm)
            .ok_or_else(|| {
                Error::validation(format!(
                    "lane must be one of my_work, approvals, failed_runs, blocked, archived; got {input:?}"
                ))
            })
    }
}

#[derive(Clone, Debug, Default)]
pub struct InboxQuery {
    pub filter: ObserveFilter,
    /// Case-insensitive substring of title or identifier.
    pub query: Option<String>,
    pub lane: Option<Lane>,
    /// Drop read items before counting.
    pub unread: bool,
    /// Per lane; None = no limit. Counts are computed before it applies.
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InboxItem {
    pub task: TaskReference,
    pub lane: Lane,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking_reason: Option<&'static str>,
    pub latest_activity_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
    pub triage: TriageRecord,
}

#[derive(Clone, Debug, Serialize)]
pub struct InboxGroup {
    pub lane: Lane,
    pub count: i64,
    pub unread_count: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<InboxItem>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Inbox {
    pub total: i64,
    pub unread_total: i64,
    pub archived_total: i64,
    pub groups: Vec<InboxGroup>,
}

/// The owner kind an actor kind owns tasks as; `daemon` (and anything unknown) owns nothing.
fn owner_kind_of(actor_kind: &str) -> Option<OwnerKind> {
    match actor_kind {
        "human" => Some(OwnerKind::Human),
        "agent_session" => Some(OwnerKind::AgentSession),
        "automation" => Some(OwnerKind::Automation),
        "extension" => Some(OwnerKind::Extension),
        "network_peer" => Some(OwnerKind::NetworkPeer),
        _ => None,
    }
}

/// The triage the inbox acts on (§2.2): archived stays archived and read; otherwise any activity
/// newer than what the caller last saw makes the item unread and un-dismissed again.
pub fn effective_triage(
    stored: Option<&TriageRecord>,
    task_id: &str,
    actor: &Ref,
    latest_activity_at: Ts,
) -> TriageRecord {
    let mut t = stored.cloned().unwrap_or(TriageRecord {
        task_id: String::new(),
        actor: actor.clone(),
        read: false,
        archived: false,
        dismissed: false,
        last_seen_activity_at: None,
        updated_at: None,
    });
    t.task_id = task_id.to_string();
    t.actor = actor.clone();
    if t.archived {
        t.read = true;
        t.dismissed = false;
    } else if match t.last_seen_activity_at {
        None => true,
        Some(seen) => latest_activity_at > seen,
    } {
        t.read = false;
        t.dismissed = false;
    }
    t
}

/// The first lane whose rule matches (§2.2 step 5), or None when the task is in no lane.
pub fn lane_of(c: &InboxCandidate, triage: &TriageRecord, actor: &Ref) -> Option<Lane> {
    let blocked = c.status == TaskStatus::Blocked;
    if triage.archived {
        return Some(Lane::Archived);
    }
    if blocked
        && c.approval_policy == ApprovalPolicy::Manual
        && c.approval_state == ApprovalState::Pending
    {
        return Some(Lane::Approvals);
    }
    if c.latest_run_status == Some(RunStatus::Failed) {
        return Some(Lane::FailedRuns);
    }
    if blocked {
        return Some(Lane::Blocked);
    }
    let owned = match (&c.owner, owner_kind_of(&actor.kind)) {
        (Some(owner), Some(kind)) => {
            owner.kind == kind.as_str() && owner.reference == actor.reference
        }
        _ => false,
    };
    let unfinished = !matches!(
        c.status,
        TaskStatus::Draft | TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled
    );
    ((owned || c.claimed_by_caller) && unfinished).then_some(Lane::MyWork)
}

/// Computed independently of the lane; first match wins.
pub fn blocking_reason(c: &InboxCandidate) -> Option<&'static str> {
    let manual = c.approval_policy == ApprovalPolicy::Manual;
    if manual && c.approval_state == ApprovalState::Pending {
        Some("awaiting_approval")
    } else if manual && c.approval_state == ApprovalState::Rejected {
        Some("approval_rejected")
    } else if c.latest_run_status == Some(RunStatus::Failed) {
        Some("latest_run_failed")
    } else if c.status == TaskStatus::Blocked {
        Some("awaiting_dependencies")
    } else {
        None
    }
}

struct Entry {
    candidate: InboxCandidate,
    triage: TriageRecord,
}

/// Unread first, newest activity, higher priority, then task id ascending.
fn item_order(a: &Entry, b: &Entry) -> Ordering {
    a.triage
        .read
        .cmp(&b.triage.read)
        .then_with(|| {
            b.candidate
                .latest_activity_at
                .cmp(&a.candidate.latest_activity_at)
        })
        .then_with(|| {
            b.candidate
                .priority
                .rank()
                .cmp(&a.candidate.priority.rank())
        })
        .then_with(|| a.candidate.task_id.cmp(&b.candidate.task_id))
}

pub fn inbox(store: &mut dyn ObserveStore, actor: &Ref, q: &InboxQuery) -> Result<Inbox> {
    let candidates = store.inbox_candidates(
        actor,
        owner_kind_of(&actor.kind),
        &q.filter,
        q.query.as_deref(),
    )?;
    let mut lanes: HashMap<Lane, Vec<Entry>> = HashMap::new();
    for c in candidates {
        let triage = effective_triage(c.triage.as_ref(), &c.task_id, actor, c.latest_activity_at);
        if triage.dismissed && !triage.archived {
            continue;
        }
        let Some(lane) = lane_of(&c, &triage, actor) else {
            continue;
        };
        if q.lane.is_some_and(|want| want != lane) || (q.unread && triage.read) {
            continue;
        }
        lanes.entry(lane).or_default().push(Entry {
            candidate: c,
            triage,
        });
    }

    let shown: Vec<Lane> = match q.lane {
        Some(lane) => vec![lane],
        None => Lane::ALL.to_vec(),
    };
    let mut inbox = Inbox {
        total: 0,
        unread_total: 0,
        archived_total: 0,
        groups: Vec::with_capacity(shown.len()),
    };
    let mut kept: Vec<(Lane, Vec<Entry>)> = Vec::new();
    for lane in shown {
        let mut entries = lanes.remove(&lane).unwrap_or_default();
        let count = entries.len() as i64;
        let unread = entries.iter().filter(|e| !e.triage.read).count() as i64;
        inbox.total += count;
        inbox.unread_total += unread;
        if lane == Lane::Archived {
            inbox.archived_total += count;
        }
        inbox.groups.push(InboxGroup {
            lane,
            count,
            unread_count: unread,
            items: Vec::new(),
        });
        // Sorting only what the limit can keep: select first, then order the survivors.
        if let Some(limit) = q.limit.filter(|l| *l < entries.len()) {
            entries.select_nth_unstable_by(limit, item_order);
            entries.truncate(limit);
        }
        entries.sort_by(item_order);
        kept.push((lane, entries));
    }

    let ids: Vec<String> = kept
        .iter()
        .flat_map(|(_, es)| es.iter().map(|e| e.candidate.task_id.clone()))
        .collect();
    let tasks: HashMap<String, Task> = store
        .tasks_by_ids(&ids)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let runs: HashMap<String, Run> = store
        .latest_runs(&ids)?
        .into_iter()
        .map(|r| (r.task_id.clone(), r))
        .collect();
    for ((lane, entries), group) in kept.into_iter().zip(inbox.groups.iter_mut()) {
        group.items = entries
            .into_iter()
            .filter_map(|e| {
                let task = tasks.get(&e.candidate.task_id)?;
                Some(InboxItem {
                    task: TaskReference::from(task),
                    lane,
                    approval_policy: e.candidate.approval_policy,
                    approval_state: e.candidate.approval_state,
                    blocking_reason: blocking_reason(&e.candidate),
                    latest_activity_at: e.candidate.latest_activity_at,
                    run: runs
                        .get(&task.id)
                        .map(|r| RunSummary::compact(r, task.max_attempts)),
                    triage: e.triage,
                })
            })
            .collect();
    }
    Ok(inbox)
}
