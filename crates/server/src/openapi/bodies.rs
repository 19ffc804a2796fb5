//! The envelopes the handlers build with `serde_json::json!` around the core read models, written
//! out as types so the document can name them. Each mirrors one `json!` call in `routes/`; the
//! Schemathesis run in CI checks every answer against them.

#![allow(dead_code)] // described, never constructed: the handlers build these with `json!`

use serde::Serialize;
use tasklane_core::observe::{Dashboard, Inbox, TimelineItem, Tree, TriageRecord};
use tasklane_core::views::{
    Claim, LeaseSummary, RunDetail, RunPayload, TaskDetail, TaskPayload, TaskSummary,
};
use utoipa::ToSchema;

/// `{"task": …}` after a create, update, reject or cancel.
#[derive(Serialize, ToSchema)]
pub struct TaskAnswer {
    pub task: TaskPayload,
}

/// `{"task": …}`: the task with its runs, dependencies, children and newest events.
#[derive(Serialize, ToSchema)]
pub struct TaskDetailAnswer {
    pub task: TaskDetail,
}

/// `{"run": …}` after an enqueue or a run transition.
#[derive(Serialize, ToSchema)]
pub struct RunAnswer {
    pub run: RunPayload,
}

/// `{"run": …}`: the run with its task, session and coordination channel.
#[derive(Serialize, ToSchema)]
pub struct RunDetailAnswer {
    pub run: RunDetail,
}

/// One page of tasks, newest activity first.
#[derive(Serialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    /// Present when more tasks follow: pass it back as `cursor` with the same filters.
    /// A Tasklane extension: the reference answers every row at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// One page of a task's runs, newest queued first.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunPayload>,
    /// Present when more runs follow: pass it back as `cursor` (Tasklane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// One page of a task's events, oldest first.
#[derive(Serialize, ToSchema)]
pub struct TimelinePage {
    pub timeline: Vec<TimelineItem>,
    /// Present when more events follow: pass it back as `cursor` (Tasklane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// `{"claim": …}`: the claimed run, its task and the lease.
#[derive(Serialize, ToSchema)]
pub struct ClaimAnswer {
    pub claim: Claim,
}

/// `{"lease": …}` after a heartbeat, an agent complete or fail, or a release.
#[derive(Serialize, ToSchema)]
pub struct LeaseAnswer {
    pub lease: LeaseSummary,
}

#[derive(Serialize, ToSchema)]
pub struct DashboardAnswer {
    pub dashboard: Dashboard,
}

#[derive(Serialize, ToSchema)]
pub struct InboxAnswer {
    pub inbox: Inbox,
}

#[derive(Serialize, ToSchema)]
pub struct TreeAnswer {
    pub tree: Tree,
}

/// `{"triage": …}`: the caller's triage state of the task after the action.
#[derive(Serialize, ToSchema)]
pub struct TriageAnswer {
    pub triage: TriageRecord,
}

/// Every error: a human-readable message and a stable machine code. The codes each status may
/// carry are listed with the status's response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// `{"whoami": …}`: the caller as the server sees it.
#[derive(Serialize, ToSchema)]
pub struct WhoamiAnswer {
    pub whoami: Whoami,
}

#[derive(Serialize, ToSchema)]
pub struct Whoami {
    /// `open` (no credentials; roles do not apply) or `token`.
    pub auth: String,
    /// The token's role (`operator`, `agent`, `viewer`); null in open mode.
    pub role: Option<String>,
    pub actor: tasklane_core::model::Ref,
    /// For each console action (`create_task`, `approve_task`, `set_approval_policy`, …), whether
    /// the role table allows it. Rules that depend on the task are still the server's to apply.
    pub may: std::collections::BTreeMap<String, bool>,
}

/// `{"claims": […]}`: one claim per session that got one, in the order the sessions were listed.
#[derive(Serialize, ToSchema)]
pub struct ClaimBatchAnswer {
    pub claims: Vec<tasklane_core::service::batch::SessionClaim>,
}

/// `{"results": […]}`: one result per item, in request order.
#[derive(Serialize, ToSchema)]
pub struct ReportBatchAnswer {
    pub results: Vec<ReportItemResult>,
}

/// One item's outcome: `ok` with the lease as the single-run endpoint answers it, or the error
/// that endpoint would have answered (the item then changed nothing).
#[derive(Serialize, ToSchema)]
pub struct ReportItemResult {
    pub run_id: String,
    pub ok: bool,
    pub lease: Option<LeaseSummary>,
    pub error: Option<ItemError>,
}

#[derive(Serialize, ToSchema)]
pub struct ItemError {
    pub code: String,
    pub message: String,
    /// The HTTP status the single-run endpoint would have answered.
    pub status: u16,
}
