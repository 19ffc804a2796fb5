//! Query parameters of the list and observe reads, as `query.rs` and `routes/observe.rs` parse
//! them. Enum values are matched after trimming and lower-casing; a bad value is 422
//! `validation_failed`.

#![allow(dead_code)] // described, never constructed: the handlers parse the raw query

use tasklane_core::model::{
    ApprovalState, OriginKind, OwnerKind, Priority, RunStatus, Scope, TaskStatus,
};
use tasklane_core::observe::Lane;
use utoipa::IntoParams;

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListParams {
    /// `workspace` needs `workspace`; `global` refuses it.
    pub scope: Option<Scope>,
    /// A workspace id (1–128 of `[A-Za-z0-9._:/-]`); alone, it filters by workspace only.
    pub workspace: Option<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<Priority>,
    /// Drafts are left out unless this is `true` (or `1`).
    pub include_drafts: Option<bool>,
    pub approval_state: Option<ApprovalState>,
    pub owner_kind: Option<OwnerKind>,
    pub owner_ref: Option<String>,
    /// Only the children of this task.
    pub parent_task_id: Option<String>,
    /// A coordination channel name.
    pub network_channel: Option<String>,
    /// Case-insensitive substring of the title or identifier.
    pub query: Option<String>,
    /// Page size: absent or 0 means 100, larger than 1000 means 1000 (Tasklane extension).
    #[param(minimum = 0)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (Tasklane extension); opaque.
    pub cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunListParams {
    pub status: Option<RunStatus>,
    /// Only runs attached to this agent session.
    pub session_id: Option<String>,
    /// Page size: absent or 0 means 100, larger than 1000 means 1000 (Tasklane extension).
    #[param(minimum = 0)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (Tasklane extension); opaque.
    pub cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DashboardParams {
    /// `workspace` needs `workspace`; `global` refuses it.
    pub scope: Option<Scope>,
    /// A workspace id; needs `scope=workspace`.
    pub workspace: Option<String>,
    pub owner_kind: Option<OwnerKind>,
    pub owner_ref: Option<String>,
    /// A coordination channel name.
    pub network_channel: Option<String>,
    pub origin_kind: Option<OriginKind>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// `workspace` needs `workspace`; `global` refuses it.
    pub scope: Option<Scope>,
    /// A workspace id; needs `scope=workspace`.
    pub workspace: Option<String>,
    pub owner_kind: Option<OwnerKind>,
    pub owner_ref: Option<String>,
    /// Case-insensitive substring of the title or identifier.
    pub query: Option<String>,
    /// Only this lane.
    pub lane: Option<Lane>,
    /// Leave out read items (before counting). Accepts `1`, `t`, `true`, `0`, `f`, `false`.
    pub unread: Option<bool>,
    /// Items per lane: absent or 0 means 100, larger than 1000 means 1000; counts stay whole.
    #[param(minimum = 0)]
    pub limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// The `next_cursor` of the previous page (Tasklane extension); not with `after_sequence`.
    pub cursor: Option<String>,
    /// Only events after this sequence; not with `cursor`.
    #[param(minimum = 0)]
    pub after_sequence: Option<i64>,
    /// Page size: absent or 0 means 100, larger than 1000 means 1000 (Tasklane extension).
    #[param(minimum = 0)]
    pub limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume after this sequence; ignored when `Last-Event-ID` is sent.
    #[param(minimum = 0)]
    pub after_sequence: Option<i64>,
}
