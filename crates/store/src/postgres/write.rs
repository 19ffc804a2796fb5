//! `WriteStore` on PostgreSQL (STUB: to be ported from `sqlite/write.rs`).
#![allow(unused_variables)]

use tasklane_core::model::{ApiToken, Dependency, IdempotencyRecord, NewEvent, Run, Task};
use tasklane_core::store::WriteStore;
use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::Db;

impl WriteStore for Db<'_> {
    fn insert_task(&mut self, task: &Task) -> Result<()> {
        unimplemented!()
    }

    fn update_task(&mut self, task: &Task) -> Result<()> {
        unimplemented!()
    }

    fn delete_task(&mut self, id: &str) -> Result<()> {
        unimplemented!()
    }

    fn insert_run(&mut self, run: &Run) -> Result<()> {
        unimplemented!()
    }

    fn update_run(&mut self, run: &Run) -> Result<()> {
        unimplemented!()
    }

    fn set_claim_audience(&mut self, task_id: &str, audience: Option<&str>) -> Result<()> {
        unimplemented!()
    }

    fn insert_dependency(&mut self, dep: &Dependency) -> Result<()> {
        unimplemented!()
    }

    fn delete_dependency(&mut self, task_id: &str, depends_on_task_id: &str) -> Result<bool> {
        unimplemented!()
    }

    fn append_event(&mut self, event: &NewEvent) -> Result<i64> {
        unimplemented!()
    }

    fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> Result<()> {
        unimplemented!()
    }

    fn insert_api_token(&mut self, token: &ApiToken) -> Result<()> {
        unimplemented!()
    }

    fn revoke_api_token(&mut self, name: &str) -> Result<bool> {
        unimplemented!()
    }

    fn touch_api_token(&mut self, token_hash: &str, at: Ts) -> Result<()> {
        unimplemented!()
    }

    fn touch_agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        agent_name: Option<&str>,
        now: Ts,
    ) -> Result<()> {
        unimplemented!()
    }

    fn begin_item(&mut self) -> Result<()> {
        unimplemented!()
    }

    fn end_item(&mut self, keep: bool) -> Result<()> {
        unimplemented!()
    }
}
