//! The storage seam: the primitives every backend implements inside one transaction, all in this
//! file — reads (`ReadStore`), writes (`WriteStore`), and the observe surfaces' reads and triage
//! writes (`ObserveStore`, `ObserveWriteStore`). No business rule lives behind these traits; the
//! rules in `service` and `observe` call the primitives and run unchanged on every backend.

use std::collections::HashMap;

use crate::error::Result;
use crate::model::{
    ApiToken, ApprovalState, Dependency, Event, IdempotencyRecord, NewEvent, OwnerKind, Priority,
    Ref, Run, RunStatus, Scope, Task, TaskStatus,
};
use crate::observe::{
    InboxCandidate, InboxClassCount, Lane, ObserveFilter, QueueGroup, RunTotals, TaskCount,
    TriageRecord,
};
use crate::page::{RunKey, TaskKey};
use crate::time::Ts;

/// Filters of `GET /api/tasks`. All present filters must hold.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub scope: Option<Scope>,
    pub workspace_id: Option<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<Priority>,
    /// Drafts are left out unless this is true.
    pub include_drafts: bool,
    pub approval_state: Option<ApprovalState>,
    pub owner_kind: Option<OwnerKind>,
    pub owner_ref: Option<String>,
    pub parent_task_id: Option<String>,
    pub network_channel: Option<String>,
    /// Case-insensitive substring of title or identifier (taken literally: no wildcards).
    pub query: Option<String>,
    /// Only tasks strictly after this key in list order (the keyset of a page cursor).
    pub after: Option<TaskKey>,
    /// At most this many tasks (None = all).
    pub limit: Option<i64>,
}

/// Filters of `GET /api/tasks/{id}/runs`.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub session_id: Option<String>,
    /// Only runs strictly after this key in run order (the keyset of a page cursor).
    pub after: Option<RunKey>,
    /// At most this many runs (None = all).
    pub limit: Option<i64>,
}

/// Reads, usable on a read-only snapshot or inside a write transaction.
///
/// Ordering contracts (every backend must honour them):
/// - task lists (`list_tasks`, `children_of`): `last_activity_at` DESC, `updated_at` DESC,
///   `created_at` DESC, `id` DESC;
/// - runs: `queued_at` DESC, `id` DESC;
/// - dependencies: `created_at` ASC, `depends_on_task_id` ASC;
/// - events: by `sequence`, ascending unless `newest_first`.
///
/// Keyset reads (`TaskFilter::after`, `RunFilter::after`, `after_sequence`) resume with an index
/// range, not by skipping rows, so every page of a long list costs what the first one does.
pub trait ReadStore {
    fn task(&mut self, id: &str) -> Result<Option<Task>>;
    fn tasks_by_ids(&mut self, ids: &[String]) -> Result<Vec<Task>>;
    fn list_tasks(&mut self, filter: &TaskFilter) -> Result<Vec<Task>>;
    fn children_of(&mut self, parent_id: &str) -> Result<Vec<Task>>;
    /// Number of direct children of each given task (tasks without children may be absent).
    fn child_counts(&mut self, ids: &[String]) -> Result<HashMap<String, i64>>;

    fn run(&mut self, id: &str) -> Result<Option<Run>>;
    fn runs_of_task(&mut self, task_id: &str) -> Result<Vec<Run>>;
    fn list_runs(&mut self, task_id: &str, filter: &RunFilter) -> Result<Vec<Run>>;
    /// Non-terminal runs of the given tasks.
    fn open_runs_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Run>>;
    /// The id of a claimed, starting or running run bound to this session, if any. A session is
    /// named by its id and the API token it acts through (`None`: no token).
    fn active_run_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<String>>;

    /// Edges out of `task_id` (what it depends on).
    fn dependencies_of(&mut self, task_id: &str) -> Result<Vec<Dependency>>;
    fn dependencies_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Dependency>>;
    /// Ids of the tasks that depend on `task_id`.
    fn dependents_of(&mut self, task_id: &str) -> Result<Vec<String>>;
    /// What reconciling a task reads about it, asked together so that a backend with a network
    /// between it and its data can fetch it all in one round trip.
    fn neighbourhood(&mut self, task_id: &str) -> Result<Neighbourhood> {
        Ok(Neighbourhood {
            runs: self.runs_of_task(task_id)?,
            dependencies: self.dependencies_of(task_id)?,
            dependents: self.dependents_of(task_id)?,
        })
    }
    /// `task` and `neighbourhood`, together (`None` when there is no such task).
    fn task_with_neighbourhood(&mut self, id: &str) -> Result<Option<(Task, Neighbourhood)>> {
        let Some(task) = self.task(id)? else {
            return Ok(None);
        };
        Ok(Some((task, self.neighbourhood(id)?)))
    }

    /// `active_runs_of_session`, and the run `run_id` with its task and, if `around`, the task's
    /// neighbourhood: what an agent's call on its lease reads, asked together so that a backend
    /// with a network between it and its data can fetch it all in one round trip.
    fn lease_view(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        run_id: &str,
        around: bool,
    ) -> Result<LeaseView> {
        let active = self.active_runs_of_session(session_id, token)?;
        // The run is usually among the session's active runs.
        let run = match active.iter().find(|r| r.id == run_id) {
            Some(run) => Some(run.clone()),
            None => self.run(run_id)?,
        };
        let (task, around) = match &run {
            None => (None, None),
            Some(run) if around => match self.task_with_neighbourhood(&run.task_id)? {
                Some((task, around)) => (Some(task), Some(around)),
                None => (None, None),
            },
            Some(run) => (self.task(&run.task_id)?, None),
        };
        Ok(LeaseView {
            active,
            run,
            task,
            around,
        })
    }

    /// `active_runs_of_session`, and `claim_class_heads` of `heads` when given: what a claim
    /// reads before it picks a run, asked together (one round trip on PostgreSQL). The heads are
    /// read even when the session turns out to be busy, which costs nothing but the read.
    fn claim_view(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        heads: Option<(&[String], Priority)>,
    ) -> Result<(Vec<Run>, Vec<Run>)> {
        let active = self.active_runs_of_session(session_id, token)?;
        let heads = match heads {
            Some((audiences, min_priority)) => self.claim_class_heads(audiences, min_priority)?,
            None => Vec::new(),
        };
        Ok((active, heads))
    }

    /// Events of one task after `after_sequence`, at most `limit` (None = all).
    fn events_of_task(
        &mut self,
        task_id: &str,
        after_sequence: i64,
        limit: Option<i64>,
        newest_first: bool,
    ) -> Result<Vec<Event>>;

    fn idempotency_record(&mut self, key: &str, origin: &Ref) -> Result<Option<IdempotencyRecord>>;

    /// What Tasklane knows of an agent session: (agent name, first seen, last seen).
    fn agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<AgentSessionRecord>>;

    /// The oldest queued run (`queued_at`, then id) of each claim class of each of `audiences`
    /// at `min_priority` or above, in no particular order. A claim class is the runs of one
    /// (priority, set of required capabilities, set of preferred capabilities) among the queued
    /// runs whose `claim_audience` is one audience. Costs one index seek per class, however many
    /// runs are queued.
    fn claim_class_heads(
        &mut self,
        audiences: &[String],
        min_priority: Priority,
    ) -> Result<Vec<Run>>;
    /// Claimed, starting and running runs bound to the session.
    fn active_runs_of_session(&mut self, session_id: &str, token: Option<&str>)
        -> Result<Vec<Run>>;
    /// Active runs whose lease ended at or before `now`, soonest first, at most `limit`.
    fn expired_leases(&mut self, now: Ts, limit: i64) -> Result<Vec<Run>>;
    /// The earliest `lease_until` of any active run.
    fn next_lease_deadline(&mut self) -> Result<Option<Ts>>;

    /// Every API token, revoked ones excluded.
    fn api_tokens(&mut self) -> Result<Vec<ApiToken>>;
    /// The API token with this hash, unless revoked.
    fn api_token(&mut self, token_hash: &str) -> Result<Option<ApiToken>>;
}

/// A task's runs (`runs_of_task`), its dependencies (`dependencies_of`) and the ids of its
/// dependents (`dependents_of`), read at one point of a transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Neighbourhood {
    pub runs: Vec<Run>,
    pub dependencies: Vec<Dependency>,
    pub dependents: Vec<String>,
}

/// What `ReadStore::lease_view` reads.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    /// The session's active runs.
    pub active: Vec<Run>,
    /// The run the call names, if there is one.
    pub run: Option<Run>,
    /// Its task.
    pub task: Option<Task>,
    /// The task's neighbourhood, when asked for.
    pub around: Option<Neighbourhood>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentSessionRecord {
    pub session_id: String,
    pub agent_name: Option<String>,
    pub first_seen_at: crate::time::Ts,
    pub last_seen_at: crate::time::Ts,
    /// The API token the session acts through (token mode).
    pub token_name: Option<String>,
}

/// Writes, always inside the one transaction of the current operation.
pub trait WriteStore: ReadStore {
    /// Fails with `Error::Conflict { code: "duplicate_task" }` when the id exists.
    fn insert_task(&mut self, task: &Task) -> Result<()>;
    /// Writes every column of the task except `latest_event_seq` and `last_activity_at`, which
    /// storage maintains: `last_activity_at` is raised to at least `task.updated_at` (activity never
    /// moves backwards) and `latest_event_seq` only moves through `append_event`.
    fn update_task(&mut self, task: &Task) -> Result<()>;
    /// Deletes the task with its runs, its edges in both directions, its events and its
    /// idempotency records.
    fn delete_task(&mut self, id: &str) -> Result<()>;

    /// Also raises the task's `last_activity_at` to the run's activity time.
    fn insert_run(&mut self, run: &Run) -> Result<()>;
    /// Also raises the task's `last_activity_at` to the run's activity time.
    fn update_run(&mut self, run: &Run) -> Result<()>;
    /// Sets `claim_audience` on every unfinished run of the task. `insert_run` writes a run's
    /// audience; `update_run` never does, so a stale copy of a run cannot undo this.
    fn set_claim_audience(&mut self, task_id: &str, audience: Option<&str>) -> Result<()>;

    fn insert_dependency(&mut self, dep: &Dependency) -> Result<()>;
    /// Returns false when no such edge existed.
    fn delete_dependency(&mut self, task_id: &str, depends_on_task_id: &str) -> Result<bool>;

    /// Appends to the global log and returns the assigned sequence. Sequences are strictly
    /// increasing in commit order. Also sets the task's `latest_event_seq` and raises its
    /// `last_activity_at` to the event timestamp.
    fn append_event(&mut self, event: &NewEvent) -> Result<i64>;

    fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> Result<()>;

    /// Fails with `Error::Conflict { code: "duplicate_token" }` when the name is taken.
    fn insert_api_token(&mut self, token: &ApiToken) -> Result<()>;
    /// Returns false when no token has that name.
    fn revoke_api_token(&mut self, name: &str) -> Result<bool>;
    /// Raises the last-use time of the token with this hash.
    fn touch_api_token(&mut self, token_hash: &str, at: Ts) -> Result<()>;

    /// Records that an agent session (of `token`, if any) called the API at `now`. A session
    /// keeps the agent name it announced until a later call names another.
    fn touch_agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        agent_name: Option<&str>,
        now: crate::time::Ts,
    ) -> Result<()>;

    /// Opens a nested savepoint for one item of a batched operation (one level deep), so the
    /// item can be undone without undoing the rest of the operation.
    fn begin_item(&mut self) -> Result<()>;
    /// Closes the item opened by [`WriteStore::begin_item`]: keeps its writes, or rolls them back
    /// (events included). Fails with `Unavailable` if storage lost the whole transaction.
    fn end_item(&mut self, keep: bool) -> Result<()>;
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
    fn subtree(&mut self, root: &str, limit: i64) -> Result<Vec<(Task, i64)>>;
}

/// Triage writes (per caller; they record no event).
pub trait ObserveWriteStore: ObserveStore + WriteStore {
    fn put_triage(&mut self, record: &TriageRecord) -> Result<()>;
}
