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

use crate::model::{
    ApprovalPolicy, ApprovalState, OriginKind, OwnerKind, Priority, Ref, RunStatus, Scope,
    TaskStatus,
};
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

// The observe primitives are declared with the rest of the storage seam, in `crate::store`.
pub use crate::store::{ObserveStore, ObserveWriteStore};

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
