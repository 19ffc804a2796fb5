//! `GET /api/observe/tasks/inbox`: the caller's lanes.
//!
//! Storage hands over class counts, the caller's corrected tasks and each lane's newest tasks as
//! compact rows (see [`inbox`]); the lane rules, effective triage, counts and ordering are
//! applied here, and only the items that survive the per-lane `limit` are loaded in full.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use super::{
    ActiveRunChip, InboxCandidate, InboxClassCount, ObserveFilter, ObserveStore, TriageRecord,
};
use crate::error::{Error, Result};
use crate::model::{
    ApprovalPolicy, ApprovalState, OwnerKind, Priority, Ref, Run, Task, TaskStatus,
};
use crate::time::Ts;
use crate::views::TaskReference;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxItem {
    pub task: TaskReference,
    pub lane: Lane,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking_reason: Option<&'static str>,
    pub latest_activity_at: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<ActiveRunChip>,
    pub triage: TriageRecord,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxGroup {
    pub lane: Lane,
    pub count: i64,
    pub unread_count: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<InboxItem>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The triage the inbox acts on: archived stays archived and read; otherwise any activity
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

/// The first lane whose rule matches, or None when the task is in no lane.
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
    if c.latest_run_failed {
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
    } else if c.latest_run_failed {
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

/// The owner an actor owns tasks as (its kind mapped to an owner kind, same ref), if any.
fn owner_of(actor: &Ref) -> Option<Ref> {
    owner_kind_of(&actor.kind).map(|k| Ref::new(k.as_str(), actor.reference.clone()))
}

/// The lane a task would have with no triage row of the caller and no run the caller claimed:
/// the lane every task of the counters and the lane indexes is in. Triage rows and claims are
/// corrected for one task at a time.
pub fn base_lane(c: &InboxCandidate, actor: &Ref) -> Option<Lane> {
    let bare = InboxCandidate {
        claimed_by_caller: false,
        triage: None,
        ..c.clone()
    };
    let triage = effective_triage(None, &c.task_id, actor, c.latest_activity_at);
    lane_of(&bare, &triage, actor)
}

/// A representative task of one counted class (owned by `owner` when the class is).
fn class_candidate(cc: &InboxClassCount, owner: Option<&Ref>) -> InboxCandidate {
    InboxCandidate {
        task_id: String::new(),
        status: cc.status,
        approval_policy: cc.approval_policy,
        approval_state: cc.approval_state,
        owner: owner.filter(|_| cc.owned).cloned(),
        priority: Priority::Low,
        latest_activity_at: Ts(0),
        latest_run_failed: cc.latest_run_failed,
        claimed_by_caller: false,
        triage: None,
    }
}

/// The effective triage and lane of one candidate, or None when it is not shown (dismissed, in no
/// lane, another lane than asked, or read under `unread`).
fn evaluate(c: InboxCandidate, actor: &Ref, q: &InboxQuery) -> Option<(Lane, Entry)> {
    let triage = effective_triage(c.triage.as_ref(), &c.task_id, actor, c.latest_activity_at);
    if triage.dismissed && !triage.archived {
        return None;
    }
    let lane = lane_of(&c, &triage, actor)?;
    if q.lane.is_some_and(|want| want != lane) || (q.unread && triage.read) {
        return None;
    }
    Some((
        lane,
        Entry {
            candidate: c,
            triage,
        },
    ))
}

/// The inbox, in one of two ways:
/// - without `query` (indexed): lane counts come from the class counters (every counted task
///   is unread and in its base lane), corrected one task at a time for the caller's triage rows
///   and claimed runs; each lane's items are the top of its base-lane index (skipping the
///   corrected tasks) merged with the corrected items of that lane. Cost: O(counter classes +
///   caller's triage rows and claims + limit · log n per lane), independent of the inbox size
///   when `limit` is set.
/// - with `query` (a substring of title or identifier, which no index serves): every candidate
///   task is read and evaluated, O(inbox size).
pub fn inbox(store: &mut dyn ObserveStore, actor: &Ref, q: &InboxQuery) -> Result<Inbox> {
    let owner = owner_of(actor);
    let indexed = q.query.is_none();
    let candidates = if indexed {
        store.inbox_corrections(actor, &q.filter)?
    } else {
        store.inbox_candidates(
            actor,
            owner_kind_of(&actor.kind),
            &q.filter,
            q.query.as_deref(),
        )?
    };
    // Counted tasks per base lane, minus the corrected ones (counted again below as they are).
    let mut base: HashMap<Lane, i64> = HashMap::new();
    let mut exclude = Vec::new();
    if indexed {
        for cc in store.inbox_class_counts(owner.as_ref(), &q.filter)? {
            if let Some(lane) = base_lane(&class_candidate(&cc, owner.as_ref()), actor) {
                *base.entry(lane).or_default() += cc.count;
            }
        }
        for c in &candidates {
            if let Some(lane) = base_lane(c, actor) {
                *base.entry(lane).or_default() -= 1;
            }
        }
        exclude = candidates.iter().map(|c| c.task_id.clone()).collect();
    }
    let mut lanes: HashMap<Lane, Vec<Entry>> = HashMap::new();
    for c in candidates {
        if let Some((lane, entry)) = evaluate(c, actor, q) {
            lanes.entry(lane).or_default().push(entry);
        }
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
        // Uncorrected tasks have no triage row: unread, never dismissed.
        let base_n = base.get(&lane).copied().unwrap_or(0).max(0);
        let count = entries.len() as i64 + base_n;
        let unread = entries.iter().filter(|e| !e.triage.read).count() as i64 + base_n;
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
        if base_n > 0 {
            let page =
                store.inbox_lane_page(actor, lane, owner.as_ref(), &q.filter, &exclude, q.limit)?;
            // The store's indexes mirror `base_lane`; the rules here have the last word.
            entries.extend(
                page.into_iter()
                    .filter_map(|c| evaluate(c, actor, q))
                    .filter(|(l, _)| *l == lane)
                    .map(|(_, e)| e),
            );
        }
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
                        .map(|r| ActiveRunChip::compact(r, task.max_attempts)),
                    triage: e.triage,
                })
            })
            .collect();
    }
    Ok(inbox)
}
