//! `ReadStore` on PostgreSQL (STUB: to be ported from `sqlite/read.rs`).
#![allow(unused_variables)]

use std::collections::HashMap;

use tasklane_core::model::{
    ApiToken, Dependency, Event, IdempotencyRecord, Priority, Ref, Run, Task,
};
use tasklane_core::store::{AgentSessionRecord, ReadStore, RunFilter, TaskFilter};
use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::Db;

impl ReadStore for Db<'_> {
    fn task(&mut self, id: &str) -> Result<Option<Task>> {
        unimplemented!()
    }

    fn tasks_by_ids(&mut self, ids: &[String]) -> Result<Vec<Task>> {
        unimplemented!()
    }

    fn list_tasks(&mut self, filter: &TaskFilter) -> Result<Vec<Task>> {
        unimplemented!()
    }

    fn children_of(&mut self, parent_id: &str) -> Result<Vec<Task>> {
        unimplemented!()
    }

    fn child_counts(&mut self, ids: &[String]) -> Result<HashMap<String, i64>> {
        unimplemented!()
    }

    fn run(&mut self, id: &str) -> Result<Option<Run>> {
        unimplemented!()
    }

    fn runs_of_task(&mut self, task_id: &str) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn list_runs(&mut self, task_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn open_runs_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn active_run_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<String>> {
        unimplemented!()
    }

    fn dependencies_of(&mut self, task_id: &str) -> Result<Vec<Dependency>> {
        unimplemented!()
    }

    fn dependencies_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Dependency>> {
        unimplemented!()
    }

    fn dependents_of(&mut self, task_id: &str) -> Result<Vec<String>> {
        unimplemented!()
    }

    fn events_of_task(
        &mut self,
        task_id: &str,
        after_sequence: i64,
        limit: Option<i64>,
        newest_first: bool,
    ) -> Result<Vec<Event>> {
        unimplemented!()
    }

    fn idempotency_record(&mut self, key: &str, origin: &Ref) -> Result<Option<IdempotencyRecord>> {
        unimplemented!()
    }

    fn agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<AgentSessionRecord>> {
        unimplemented!()
    }

    fn claim_class_heads(&mut self, audience: &str, min_priority: Priority) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn active_runs_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn expired_leases(&mut self, now: Ts, limit: i64) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn next_lease_deadline(&mut self) -> Result<Option<Ts>> {
        unimplemented!()
    }

    fn api_tokens(&mut self) -> Result<Vec<ApiToken>> {
        unimplemented!()
    }

    fn api_token(&mut self, token_hash: &str) -> Result<Option<ApiToken>> {
        unimplemented!()
    }
}
