//! The observe surfaces: dashboard, inbox, triage, timeline, stream backlog and tree.
//!
//! Every formula, threshold, lane rule and ordering lives here, once. Storage is reached through
//! [`ObserveStore`], whose primitives are aggregate or indexed: nothing here loads every task, run
//! or event. Each primitive states its cost contract so every backend keeps the dashboard and the
//! inbox fast on large databases.

pub mod counters;
pub mod dashboard;
pub mod inbox;
pub mod timeline;
pub mod tree;
pub mod triage;

use serde::Serialize;

use crate::error::Result;
use crate::model::{
    ApprovalPolicy, ApprovalState, Event, OriginKind, OwnerKind, Priority, Ref, Run, RunStatus,
    Scope, TaskStatus,
};
use crate::store::{ReadStore, WriteStore};
use crate::time::{serialize_or_zero, Ts};

pub use dashboard::{dashboard, Dashboard, Thresholds};
pub use inbox::{base_lane, inbox, Inbox, InboxQuery, Lane};
pub use timeline::{sse_frame, subtree_backlog, timeline, timeline_items, TimelineItem};
pub use tree::{tree, Tree};
pub use triage::{apply_triage, TriageAction};

/// The task (and run) filters shared by the dashboard and the inbox. All present filters hold.
#[derive(Clone, Debug, Default)]
pub struct ObserveFilter {
    pub scope: Option<Scope>,
    pub workspace_id: Option<String>,
    pub owner_kind: Option<OwnerKind>,
    pub owner_ref: Option<String>,
    /// Dashboard only: tasks of this channel, and runs whose own channel is this.
    pub network_channel: Option<String>,
    /// Dashboard only: tasks of this origin kind, and runs whose own origin kind is this.
    pub origin_kind: Option<OriginKind>,
}

/// Tasks of one (status, approval state, has-dependencies) class.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskCount {
    pub status: TaskStatus,
    pub approval_state: ApprovalState,
    /// At least one dependency edge leaves the task (finished blockers included).
    pub has_dependencies: bool,
    pub count: i64,
}

/// Sum, count and maximum of one latency, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyTotals {
    pub samples: i64,
    pub sum_micros: i64,
    pub max_micros: i64,
}

/// Run counts by status and the latency totals over every run of the filter, all time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunTotals {
    pub by_status: Vec<(RunStatus, i64)>,
    /// Per run with `claimed_at`: `max(claimed_at - queued_at, 0)`.
    pub claim: LatencyTotals,
    /// Per run with `started_at`: `max(started_at - (claimed_at or queued_at), 0)`.
    pub start: LatencyTotals,
}

/// Queued runs of one run `network_channel` (None = no channel).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueGroup {
    pub network_channel: Option<String>,
    pub count: i64,
    pub oldest_queued_at: Ts,
}

/// What the inbox needs of one candidate task, without its large columns.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxCandidate {
    pub task_id: String,
    pub status: TaskStatus,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    pub owner: Option<Ref>,
    pub priority: Priority,
    /// max(updated_at, created_at, closed_at, run times, event times).
    pub latest_activity_at: Ts,
    /// The latest run (highest attempt, then queued_at, then id) failed.
    pub latest_run_failed: bool,
    /// Some open run of the task is claimed by the caller.
    pub claimed_by_caller: bool,
    pub triage: Option<TriageRecord>,
}

/// Tasks of one inbox class (the fields the lane rules read when there is no triage row and no
/// claim by the caller), counted by maintained counters.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxClassCount {
    pub status: TaskStatus,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    /// The latest run's status is `failed`.
    pub latest_run_failed: bool,
    /// Owned by the given owner (kind and ref).
    pub owned: bool,
    pub count: i64,
}

/// One caller's stored triage state of one task.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriageRecord {
    pub task_id: String,
    pub actor: Ref,
    pub read: bool,
    pub archived: bool,
    pub dismissed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_activity_at: Option<Ts>,
    #[serde(serialize_with = "serialize_or_zero")]
    pub updated_at: Option<Ts>,
}

/// Storage primitives of the observe surfaces. Cost contracts are stated per method; "live" means
/// not finished (queued/claimed/starting/running runs; non-terminal tasks), whose number does not
/// grow with history.
pub trait ObserveStore: ReadStore {
    /// Task counts by class over the filter (`network_channel`/`origin_kind` apply to the task).
    /// Cost: independent of the number of tasks (maintained counters).
    fn task_counts(&mut self, filter: &ObserveFilter) -> Result<Vec<TaskCount>>;
    /// Run counts and latency totals over runs of filtered tasks (channel/origin filter the run's
    /// own fields too). Cost: independent of the number of runs (maintained counters).
    fn run_totals(&mut self, filter: &ObserveFilter) -> Result<RunTotals>;
    /// Queued runs grouped by their trimmed `network_channel`, channels ascending.
    /// Cost: one index seek per channel.
    fn queue_groups(&mut self, filter: &ObserveFilter) -> Result<Vec<QueueGroup>>;
    /// Claimed, starting and running runs of the filter. Cost: O(live runs).
    fn live_runs(&mut self, filter: &ObserveFilter) -> Result<Vec<Run>>;
    /// Queued runs of the filter, newest `queued_at` first (then id descending), at most `limit`.
    fn newest_queued_runs(&mut self, filter: &ObserveFilter, limit: i64) -> Result<Vec<Run>>;
    /// `task.run_force_stopped` events at or after `since` among the filter's tasks
    /// (`origin_kind` also filters the event's origin; `network_channel` the event's run channel,
    /// else its task's channel). Cost: O(such events), through an index of that type only.
    fn count_forced_stops_since(&mut self, filter: &ObserveFilter, since: Ts) -> Result<i64>;
    /// The newest activity of any filtered task (None when there is no task).
    fn latest_activity(&mut self, filter: &ObserveFilter) -> Result<Option<Ts>>;

    /// Every task that may be in `actor`'s inbox under `filter` and `query` (title or identifier,
    /// case-insensitive substring): blocked tasks, tasks whose latest run failed, the actor's own
    /// unfinished tasks, tasks with an open run claimed by the actor, tasks the actor archived.
    /// Cost: O(inbox size), independent of finished tasks that are in no lane.
    fn inbox_candidates(
        &mut self,
        actor: &Ref,
        owner_kind: Option<OwnerKind>,
        filter: &ObserveFilter,
        query: Option<&str>,
    ) -> Result<Vec<InboxCandidate>>;
    /// Task counts by inbox class over the filter's task set (scope, workspace, owner), with
    /// `owned` = owned by `owner` (never, when None). Cost: independent of the number of tasks
    /// (maintained counters).
    fn inbox_class_counts(
        &mut self,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxClassCount>>;
    /// The tasks of the filter whose inbox state depends on `actor` beyond their class: those
    /// with a triage row of the actor, and those with an open run the actor claimed.
    /// Cost: O(the actor's triage rows + open claimed runs).
    fn inbox_corrections(
        &mut self,
        actor: &Ref,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxCandidate>>;
    /// The tasks of the filter whose *base* lane (their lane with no triage row and no claim by
    /// the caller: `inbox::base_lane`; my_work needs `owner`) is `lane`, newest
    /// `latest_activity_at` first, skipping `exclude`: at least `min_rows` of them (all when None
    /// or fewer exist) plus every further task tied with the last one on `latest_activity_at`.
    /// The archived lane has no base set. Cost: O(rows returned · log n) without filters.
    fn inbox_lane_page(
        &mut self,
        actor: &Ref,
        lane: Lane,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
        exclude: &[String],
        min_rows: Option<usize>,
    ) -> Result<Vec<InboxCandidate>>;
    /// The latest run of each given task (tasks without runs are absent).
    fn latest_runs(&mut self, task_ids: &[String]) -> Result<Vec<Run>>;
    fn runs_by_ids(&mut self, ids: &[String]) -> Result<Vec<Run>>;
    fn triage_record(&mut self, task_id: &str, actor: &Ref) -> Result<Option<TriageRecord>>;

    /// Events of the subtree rooted at `root` (as it is now) with sequence > `after`, ascending,
    /// at most `limit`.
    fn subtree_events_after(&mut self, root: &str, after: i64, limit: i64) -> Result<Vec<Event>>;
    /// Events of every task with sequence > `after`, ascending, at most `limit`.
    fn events_after(&mut self, after: i64, limit: i64) -> Result<Vec<Event>>;
    /// The task itself then its ancestors up to the root (empty when it does not exist).
    fn ancestry(&mut self, task_id: &str) -> Result<Vec<String>>;
    /// The subtree rooted at `root` as (task, depth), the root first at depth 0, then by depth,
    /// newest `last_activity_at` first, task id ascending: at most `limit` nodes.
    /// Memory: O(limit) tasks, whatever the size of the subtree.
    fn subtree(&mut self, root: &str, limit: i64) -> Result<Vec<(crate::model::Task, i64)>>;
}

/// Triage writes (per caller; they record no event).
pub trait ObserveWriteStore: ObserveStore + WriteStore {
    fn put_triage(&mut self, record: &TriageRecord) -> Result<()>;
}

pub use crate::views::ActiveRunChip;

/// Trimmed, and absent when empty.
pub(crate) fn non_blank(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `max(now - t, 0)` in whole milliseconds (truncated).
pub(crate) fn age_ms(now: Ts, t: Ts) -> i64 {
    (now.0 - t.0).max(0) / 1000
}
