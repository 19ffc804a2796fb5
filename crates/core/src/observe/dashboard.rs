//! `GET /api/observe/tasks/dashboard`: totals, cards, breakdown, queue, health, active runs and
//! freshness. Counts come from maintained counters; only live runs are
//! read one by one.

use std::collections::HashMap;

use serde::Serialize;

use super::{age_ms, non_blank, ObserveFilter, ObserveStore};
use crate::error::Result;
use crate::model::{ApprovalState, Priority, Ref, Run, RunStatus, Scope, Task, TaskStatus};
use crate::time::{serialize_or_zero, Ts};

/// The reference's dashboard constants. Stuck and backlog compare with `>=`,
/// staleness with `>`.
#[derive(Clone, Debug)]
pub struct Thresholds {
    pub claimed_stuck_ms: i64,
    pub starting_stuck_ms: i64,
    pub running_stuck_ms: i64,
    pub backlog_ms: i64,
    pub stale_after_ms: i64,
    pub active_items: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            claimed_stuck_ms: 5 * 60_000,
            starting_stuck_ms: 5 * 60_000,
            running_stuck_ms: 30 * 60_000,
            backlog_ms: 10 * 60_000,
            stale_after_ms: 2 * 60_000,
            active_items: 4,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Totals {
    pub tasks_total: i64,
    pub draft_tasks: i64,
    pub pending_tasks: i64,
    pub ready_tasks: i64,
    pub in_progress_tasks: i64,
    pub blocked_tasks: i64,
    pub completed_tasks: i64,
    pub failed_tasks: i64,
    pub canceled_tasks: i64,
    pub awaiting_approval_tasks: i64,
    pub dependency_blocked_tasks: i64,
    pub runs_total: i64,
    pub queued_runs: i64,
    pub claimed_runs: i64,
    pub starting_runs: i64,
    pub running_runs: i64,
    pub completed_runs: i64,
    pub failed_runs: i64,
    pub canceled_runs: i64,
    pub active_runs: i64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InProgressCard {
    pub tasks: i64,
    pub active_runs: i64,
    pub running_runs: i64,
    pub starting_runs: i64,
    pub claimed_runs: i64,
    pub queued_runs: i64,
    pub health_status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedCard {
    pub tasks: i64,
    pub awaiting_approval: i64,
    pub awaiting_dependencies: i64,
    pub health_status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailedCard {
    pub tasks: i64,
    pub failed_runs: i64,
    pub forced_stops: i64,
    pub health_status: &'static str,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencyStat {
    pub samples: i64,
    pub average_ms: i64,
    pub maximum_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencyCard {
    pub claim_latency_ms: LatencyStat,
    pub start_latency_ms: LatencyStat,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cards {
    pub in_progress: InProgressCard,
    pub blocked: BlockedCard,
    pub failed: FailedCard,
    pub latency: LatencyCard,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakdownRow {
    pub status: TaskStatus,
    pub count: i64,
    pub share_percent: i64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepthRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    pub count: i64,
    pub oldest_queued_at: Ts,
    pub oldest_queue_age_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Queue {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depth: Vec<DepthRow>,
    pub total: i64,
    #[serde(serialize_with = "serialize_or_zero")]
    pub oldest_queued_at: Option<Ts>,
    pub oldest_queue_age_ms: i64,
    pub backlog_threshold_ms: i64,
    pub backlog_warning: bool,
    pub backlog_status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: &'static str,
    pub stuck_runs: i64,
    pub active_orphan_runs: i64,
    pub queue_backlog: bool,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveRunItem {
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_identifier: Option<String>,
    pub task_title: String,
    pub task_status: TaskStatus,
    pub task_priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_owner: Option<Ref>,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    pub latest_event_seq: i64,
    pub run_id: String,
    pub run_status: RunStatus,
    pub attempt: i64,
    pub max_attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub last_activity_at: Ts,
    pub age_ms: i64,
    pub stuck: bool,
    pub health_status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveRuns {
    pub total: i64,
    pub running: i64,
    pub starting: i64,
    pub claimed: i64,
    pub queued: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ActiveRunItem>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Freshness {
    pub observed_at: Ts,
    #[serde(serialize_with = "serialize_or_zero")]
    pub latest_activity_at: Option<Ts>,
    pub age_ms: i64,
    pub stale_after_ms: i64,
    pub has_live_work: bool,
    pub status: &'static str,
    pub stale: bool,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dashboard {
    pub totals: Totals,
    pub cards: Cards,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_breakdown: Vec<BreakdownRow>,
    pub queue: Queue,
    pub health: Health,
    pub active_runs: ActiveRuns,
    pub freshness: Freshness,
}

fn ok_or_warn(warn: bool) -> &'static str {
    if warn {
        "warn"
    } else {
        "ok"
    }
}

/// Builds the dashboard at `now`. `observer_start` bounds `forced_stops` ("since start").
pub fn dashboard(
    store: &mut dyn ObserveStore,
    filter: &ObserveFilter,
    now: Ts,
    observer_start: Ts,
    th: &Thresholds,
) -> Result<Dashboard> {
    let run_totals = store.run_totals(filter)?;
    let totals = totals(store, filter, &run_totals)?;
    let forced_stops = store.count_forced_stops_since(filter, observer_start)?;
    let queue = queue(store.queue_groups(filter)?, now, th);

    let live = store.live_runs(filter)?;
    let stuck_runs = live.iter().filter(|r| is_stuck(r, now, th)).count() as i64;
    let active_orphan_runs = live.iter().filter(|r| is_orphan(r, now)).count() as i64;
    let health_warn = stuck_runs > 0 || active_orphan_runs > 0 || queue.backlog_warning;

    let items = active_items(store, filter, live, now, th)?;
    let latest_activity_at = store.latest_activity(filter)?;
    let has_live_work = totals.active_runs > 0;
    let freshness = freshness(latest_activity_at, has_live_work, now, th);

    let cards = Cards {
        in_progress: InProgressCard {
            tasks: totals.in_progress_tasks,
            active_runs: totals.active_runs,
            running_runs: totals.running_runs,
            starting_runs: totals.starting_runs,
            claimed_runs: totals.claimed_runs,
            queued_runs: totals.queued_runs,
            health_status: ok_or_warn(health_warn),
        },
        blocked: BlockedCard {
            tasks: totals.blocked_tasks,
            awaiting_approval: totals.awaiting_approval_tasks,
            awaiting_dependencies: totals.dependency_blocked_tasks,
            health_status: ok_or_warn(totals.blocked_tasks > 0),
        },
        failed: FailedCard {
            tasks: totals.failed_tasks,
            failed_runs: totals.failed_runs,
            forced_stops,
            health_status: ok_or_warn(
                totals.failed_tasks > 0 || totals.failed_runs > 0 || forced_stops > 0,
            ),
        },
        latency: LatencyCard {
            claim_latency_ms: latency(run_totals.claim),
            start_latency_ms: latency(run_totals.start),
        },
    };
    Ok(Dashboard {
        status_breakdown: breakdown(&totals),
        active_runs: ActiveRuns {
            total: totals.active_runs,
            running: totals.running_runs,
            starting: totals.starting_runs,
            claimed: totals.claimed_runs,
            queued: totals.queued_runs,
            items,
        },
        health: Health {
            status: ok_or_warn(health_warn),
            stuck_runs,
            active_orphan_runs,
            queue_backlog: queue.backlog_warning,
        },
        totals,
        cards,
        queue,
        freshness,
    })
}

fn totals(
    store: &mut dyn ObserveStore,
    filter: &ObserveFilter,
    runs: &super::RunTotals,
) -> Result<Totals> {
    let mut t = Totals::default();
    for c in store.task_counts(filter)? {
        t.tasks_total += c.count;
        let slot = match c.status {
            TaskStatus::Draft => &mut t.draft_tasks,
            TaskStatus::Pending => &mut t.pending_tasks,
            TaskStatus::Ready => &mut t.ready_tasks,
            TaskStatus::InProgress => &mut t.in_progress_tasks,
            TaskStatus::Blocked => &mut t.blocked_tasks,
            TaskStatus::Completed => &mut t.completed_tasks,
            TaskStatus::Failed => &mut t.failed_tasks,
            TaskStatus::Canceled => &mut t.canceled_tasks,
        };
        *slot += c.count;
        if c.status == TaskStatus::Blocked {
            // The approval policy is deliberately not checked here.
            if c.approval_state == ApprovalState::Pending {
                t.awaiting_approval_tasks += c.count;
            }
            if c.has_dependencies {
                t.dependency_blocked_tasks += c.count;
            }
        }
    }
    for &(status, n) in &runs.by_status {
        // needs_attention runs count only in runs_total.
        t.runs_total += n;
        match status {
            RunStatus::Queued => t.queued_runs += n,
            RunStatus::Claimed => t.claimed_runs += n,
            RunStatus::Starting => t.starting_runs += n,
            RunStatus::Running => t.running_runs += n,
            RunStatus::Completed => t.completed_runs += n,
            RunStatus::Failed => t.failed_runs += n,
            RunStatus::Canceled => t.canceled_runs += n,
            RunStatus::NeedsAttention => {}
        }
    }
    t.active_runs = t.queued_runs + t.claimed_runs + t.starting_runs + t.running_runs;
    Ok(t)
}

fn latency(l: super::LatencyTotals) -> LatencyStat {
    if l.samples <= 0 {
        return LatencyStat::default();
    }
    LatencyStat {
        samples: l.samples,
        average_ms: (l.sum_micros / l.samples) / 1000,
        maximum_ms: l.max_micros / 1000,
    }
}

/// Fixed row order of the reference; rows with no task are left out.
const BREAKDOWN_ORDER: [TaskStatus; 8] = [
    TaskStatus::Completed,
    TaskStatus::Pending,
    TaskStatus::InProgress,
    TaskStatus::Ready,
    TaskStatus::Blocked,
    TaskStatus::Failed,
    TaskStatus::Canceled,
    TaskStatus::Draft,
];

fn breakdown(t: &Totals) -> Vec<BreakdownRow> {
    if t.tasks_total <= 0 {
        return Vec::new();
    }
    BREAKDOWN_ORDER
        .iter()
        .map(|&status| {
            let count = match status {
                TaskStatus::Completed => t.completed_tasks,
                TaskStatus::Pending => t.pending_tasks,
                TaskStatus::InProgress => t.in_progress_tasks,
                TaskStatus::Ready => t.ready_tasks,
                TaskStatus::Blocked => t.blocked_tasks,
                TaskStatus::Failed => t.failed_tasks,
                TaskStatus::Canceled => t.canceled_tasks,
                TaskStatus::Draft => t.draft_tasks,
            };
            (status, count)
        })
        .filter(|(_, count)| *count > 0)
        .map(|(status, count)| BreakdownRow {
            status,
            count,
            // Half away from zero, like Go's math.Round.
            share_percent: (count as f64 * 100.0 / t.tasks_total as f64).round() as i64,
        })
        .collect()
}

fn queue(groups: Vec<super::QueueGroup>, now: Ts, th: &Thresholds) -> Queue {
    let depth: Vec<DepthRow> = groups
        .into_iter()
        .map(|g| DepthRow {
            network_channel: non_blank(&g.network_channel),
            count: g.count,
            oldest_queued_at: g.oldest_queued_at,
            oldest_queue_age_ms: age_ms(now, g.oldest_queued_at),
        })
        .collect();
    let total = depth.iter().map(|d| d.count).sum::<i64>();
    let oldest = depth.iter().map(|d| d.oldest_queued_at).min();
    let oldest_age = oldest.map_or(0, |t| age_ms(now, t));
    let backlog_warning = total > 0 && oldest_age >= th.backlog_ms;
    Queue {
        depth,
        total,
        oldest_queued_at: oldest,
        oldest_queue_age_ms: oldest_age,
        backlog_threshold_ms: th.backlog_ms,
        backlog_warning,
        backlog_status: ok_or_warn(backlog_warning),
    }
}

/// Purely time-based: the heartbeat is not considered.
pub fn is_stuck(r: &Run, now: Ts, th: &Thresholds) -> bool {
    let since_claim = r.claimed_at.unwrap_or(r.queued_at);
    match r.status {
        RunStatus::Claimed => age_ms(now, since_claim) >= th.claimed_stuck_ms,
        RunStatus::Starting => age_ms(now, since_claim) >= th.starting_stuck_ms,
        RunStatus::Running => {
            age_ms(now, r.started_at.unwrap_or(since_claim)) >= th.running_stuck_ms
        }
        _ => false,
    }
}

/// An active run whose lease expired but was not yet recovered, or a starting/running
/// run with neither a session nor a lease. (A lease is over at `lease_until` itself.)
pub fn is_orphan(r: &Run, now: Ts) -> bool {
    if !r.status.is_active() {
        return false;
    }
    match r.lease_until {
        Some(until) => until <= now,
        None => {
            matches!(r.status, RunStatus::Starting | RunStatus::Running)
                && non_blank(&r.session_id).is_none()
        }
    }
}

fn status_rank(s: RunStatus) -> i32 {
    match s {
        RunStatus::Running => 4,
        RunStatus::Starting => 3,
        RunStatus::Claimed => 2,
        RunStatus::Queued => 1,
        _ => 0,
    }
}

/// The age shown on an item is measured from the start of the run's current phase.
fn item_age(r: &Run, now: Ts) -> i64 {
    let base = match r.status {
        RunStatus::Running => r.started_at,
        RunStatus::Starting | RunStatus::Claimed => r.claimed_at,
        _ => None,
    };
    age_ms(now, base.unwrap_or(r.queued_at))
}

fn active_items(
    store: &mut dyn ObserveStore,
    filter: &ObserveFilter,
    live: Vec<Run>,
    now: Ts,
    th: &Thresholds,
) -> Result<Vec<ActiveRunItem>> {
    let limit = th.active_items;
    let mut candidates = live;
    // Queued runs rank last, so they matter only when fewer live runs than items exist; their
    // activity is their queue time, so the newest few are the only candidates.
    if candidates.len() < limit {
        candidates.extend(store.newest_queued_runs(filter, limit as i64)?);
    }
    candidates.sort_by(|a, b| {
        (status_rank(b.status), b.activity_at(), &b.id).cmp(&(
            status_rank(a.status),
            a.activity_at(),
            &a.id,
        ))
    });
    candidates.truncate(limit);
    let ids: Vec<String> = candidates.iter().map(|r| r.task_id.clone()).collect();
    let tasks: HashMap<String, Task> = store
        .tasks_by_ids(&ids)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    Ok(candidates
        .iter()
        .filter_map(|r| {
            let t = tasks.get(&r.task_id)?;
            let stuck = is_stuck(r, now, th);
            Some(ActiveRunItem {
                task_id: t.id.clone(),
                task_identifier: non_blank(&t.identifier),
                task_title: t.title.clone(),
                task_status: t.status,
                task_priority: t.priority,
                task_owner: t.owner.clone(),
                scope: t.scope,
                workspace_id: non_blank(&t.workspace_id),
                latest_event_seq: t.latest_event_seq,
                run_id: r.id.clone(),
                run_status: r.status,
                attempt: r.attempt,
                max_attempts: t.max_attempts,
                session_id: non_blank(&r.session_id),
                network_channel: non_blank(&r.network_channel),
                error: non_blank(&r.error),
                last_activity_at: r.activity_at(),
                age_ms: item_age(r, now),
                stuck,
                health_status: ok_or_warn(stuck),
            })
        })
        .collect())
}

fn freshness(latest: Option<Ts>, has_live_work: bool, now: Ts, th: &Thresholds) -> Freshness {
    let age = latest.map_or(0, |t| age_ms(now, t));
    let status = match latest {
        None => "empty",
        Some(_) if has_live_work && age > th.stale_after_ms => "stale",
        Some(_) => "current",
    };
    Freshness {
        observed_at: now,
        latest_activity_at: latest,
        age_ms: age,
        stale_after_ms: th.stale_after_ms,
        has_live_work,
        status,
        stale: status == "stale",
    }
}
