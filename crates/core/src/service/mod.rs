//! The business rules of every write operation. Each public function here is one whole operation:
//! the storage layer runs it inside one transaction, so it commits entirely (with its events) or not
//! at all. Functions validate everything before their first write where the reference's error order
//! allows it; where it does not, the enclosing transaction still guarantees no partial write.

pub mod agent;
pub mod batch;
mod graph;
mod runs;
mod tasks;

pub use graph::{add_dependency, cancel_task, delete_task, remove_dependency};
pub use runs::{
    attach_session, cancel_run, claim_run, complete_run, enqueue_run, fail_run, start_run,
};
pub use tasks::{approve_task, create_task, patch_task, publish_task, reject_task, start_task};

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::claim_audience;
use crate::derive::{self, DeriveInput};
use crate::error::{Error, Result};
use crate::ids;
use crate::model::{Caller, Dependency, NewEvent, Run, Task, TaskStatus};
use crate::store::{Neighbourhood, WriteStore};
use crate::time::Ts;
use crate::views::{RunPayload, TaskPayload};

/// What publish, start and approve answer: the task and the run they enqueued. Approving a draft
/// grants the approval without enqueuing, so `run` may be absent there.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Execution {
    pub task: TaskPayload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunPayload>,
}

/// One operation in progress: the transaction, the instant it happens at, and who asked.
pub struct Op<'a> {
    pub store: &'a mut dyn WriteStore,
    pub now: Ts,
    pub caller: &'a Caller,
    /// Set when the operation may have made a queued run claimable (enqueue, release, expiry,
    /// a task becoming ready). After the commit, long-polling claimers are woken.
    pub work_available: bool,
}

impl<'a> Op<'a> {
    pub fn new(store: &'a mut dyn WriteStore, now: Ts, caller: &'a Caller) -> Self {
        Op {
            store,
            now,
            caller,
            work_available: false,
        }
    }

    /// Records that an agent session acted now, so run detail can describe the session.
    pub(crate) fn touch_session(&mut self) -> Result<()> {
        let Some(sid) = self.caller.session_id() else {
            return Ok(());
        };
        self.store.touch_agent_session(
            sid,
            self.caller.session_token(),
            self.caller.agent_name.as_deref(),
            self.now,
        )
    }

    pub(crate) fn load_task(&mut self, id: &str) -> Result<Task> {
        self.store
            .task(id)?
            .ok_or_else(|| Error::task_not_found(id))
    }

    /// The task with its neighbourhood, read together (one round trip on PostgreSQL), for an
    /// operation that writes one of the task's runs next and reconciles it ([`Op::save_run`]).
    pub(crate) fn load_task_around(&mut self, id: &str) -> Result<(Task, Neighbourhood)> {
        self.store
            .task_with_neighbourhood(id)?
            .ok_or_else(|| Error::task_not_found(id))
    }

    /// Writes `run` and reconciles its task from `around`, as [`Op::load_task_around`] read
    /// them with nothing written to the task's runs or dependencies since, with `run` as
    /// written: what reading them again would return, without the read.
    pub(crate) fn save_run(
        &mut self,
        task: &mut Task,
        mut around: Neighbourhood,
        run: &Run,
    ) -> Result<Option<Vec<String>>> {
        self.store.update_run(run)?;
        match around.runs.iter_mut().find(|r| r.id == run.id) {
            // `update_run` writes every column but the audience, which `run` may hold stale.
            Some(slot) => {
                *slot = Run {
                    claim_audience: slot.claim_audience.take(),
                    ..run.clone()
                }
            }
            None => around = self.store.neighbourhood(&task.id)?,
        }
        #[cfg(debug_assertions)]
        {
            let read = self.store.neighbourhood(&task.id)?;
            debug_assert_eq!(read, around, "a neighbourhood kept across a run write");
        }
        self.reconcile_from(task, around)
    }

    pub(crate) fn load_run(&mut self, id: &str) -> Result<Run> {
        self.store.run(id)?.ok_or_else(|| Error::run_not_found(id))
    }

    /// Appends an event with the caller as actor and origin; keeps the in-memory task's
    /// `latest_event_seq` in step with storage so responses show it.
    pub(crate) fn record(
        &mut self,
        task: &mut Task,
        run_id: Option<&str>,
        event_type: &'static str,
        payload: Value,
    ) -> Result<i64> {
        let seq = self.store.append_event(&NewEvent {
            id: ids::event_id(),
            task_id: task.id.clone(),
            run_id: run_id.map(str::to_string),
            event_type,
            actor: self.caller.actor.clone(),
            origin: self.caller.origin.clone(),
            payload,
            timestamp: self.now,
        })?;
        task.latest_event_seq = seq;
        task.last_activity_at = task.last_activity_at.max(self.now);
        Ok(seq)
    }

    /// True when some blocker of the task is not completed.
    pub(crate) fn dependencies_open(&mut self, task_id: &str) -> Result<bool> {
        let deps = self.store.dependencies_of(task_id)?;
        self.blockers_open(deps)
    }

    /// True when one of `deps` (a task's edges) leads to a blocker that is not completed.
    fn blockers_open(&mut self, deps: Vec<Dependency>) -> Result<bool> {
        if deps.is_empty() {
            return Ok(false);
        }
        let ids: Vec<String> = deps.into_iter().map(|d| d.depends_on_task_id).collect();
        let blockers = self.store.tasks_by_ids(&ids)?;
        Ok(blockers.iter().any(|b| b.status != TaskStatus::Completed))
    }

    /// Brings the task's stored status (and `current_run_id`, `closed_at`) in line with its
    /// derived status and writes it. If the status changed, every task that depends on it is
    /// reconciled too, recursively, each at most once; dependents get no event. Returns the ids
    /// of the task's dependents when its status changed, so a caller that visits them next need
    /// not read them again.
    pub(crate) fn reconcile(&mut self, task: &mut Task) -> Result<Option<Vec<String>>> {
        let around = self.store.neighbourhood(&task.id)?;
        self.reconcile_from(task, around)
    }

    /// [`Op::reconcile`] with the task's neighbourhood as it stands now, already read.
    fn reconcile_from(
        &mut self,
        task: &mut Task,
        around: Neighbourhood,
    ) -> Result<Option<Vec<String>>> {
        let mut visited = HashSet::new();
        visited.insert(task.id.clone());
        let Some(dependents) = self.reconcile_one(task, around, true)? else {
            return Ok(None);
        };
        self.reconcile_all(dependents.clone(), &mut visited)?;
        Ok(Some(dependents))
    }

    /// Reconciles the tasks that depend on `task_id` (used after a task changed or disappeared).
    pub(crate) fn reconcile_dependents(
        &mut self,
        task_id: &str,
        visited: &mut HashSet<String>,
    ) -> Result<()> {
        let dependents = self.store.dependents_of(task_id)?;
        self.reconcile_all(dependents, visited)
    }

    /// Reconciles each of `pending` and, recursively, the dependents of those whose status
    /// changed.
    fn reconcile_all(
        &mut self,
        mut pending: Vec<String>,
        visited: &mut HashSet<String>,
    ) -> Result<()> {
        while let Some(id) = pending.pop() {
            if !visited.insert(id.clone()) {
                continue;
            }
            let Some((mut dependent, around)) = self.store.task_with_neighbourhood(&id)? else {
                continue;
            };
            if let Some(dependents) = self.reconcile_one(&mut dependent, around, false)? {
                pending.extend(dependents);
            }
        }
        Ok(())
    }

    /// Derives one task from its neighbourhood as it stands now and writes it if anything
    /// changed (or always, when the caller has already changed other fields); returns the ids of
    /// its dependents if its status changed.
    fn reconcile_one(
        &mut self,
        task: &mut Task,
        around: Neighbourhood,
        always_write: bool,
    ) -> Result<Option<Vec<String>>> {
        let before = (task.status, task.closed_at, task.current_run_id.clone());
        let Neighbourhood {
            runs,
            dependencies,
            dependents,
        } = around;
        let dependencies_open = self.blockers_open(dependencies)?;
        let derived = derive::derive_status(&DeriveInput {
            stored: task.status,
            approval_policy: task.approval_policy,
            approval_state: task.approval_state,
            dependencies_open,
            max_attempts: task.max_attempts,
            runs: &runs,
        });
        let changed = derived != task.status;
        if changed && derived == TaskStatus::Ready {
            self.work_available = true;
        }
        if changed {
            task.status = derived;
            task.updated_at = self.now;
        }
        if derived.is_terminal() {
            task.closed_at.get_or_insert(self.now);
        } else {
            task.closed_at = None;
        }
        task.current_run_id = runs
            .iter()
            .filter(|r| r.status.is_active())
            .max_by_key(|r| r.activity_at())
            .map(|r| r.id.clone());
        if always_write || before != (task.status, task.closed_at, task.current_run_id.clone()) {
            self.store.update_task(task)?;
        }
        // Status and owner decide who may claim the task's queued runs.
        let audience = claim_audience::of_task(task);
        if runs
            .iter()
            .any(|r| r.status.is_open() && r.claim_audience != audience)
        {
            self.store
                .set_claim_audience(&task.id, audience.as_deref())?;
        }
        Ok(changed.then_some(dependents))
    }
}

/// Builds a JSON object, leaving out `None` values (payload fields marked `?` in the event catalogue).
pub(crate) struct Payload(Map<String, Value>);

impl Payload {
    pub fn new() -> Self {
        Payload(Map::new())
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn opt<V: Into<Value>>(mut self, key: &str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.to_string(), v.into());
        }
        self
    }

    pub fn json(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.0.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}
