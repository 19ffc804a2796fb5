//! `ObserveStore` on PostgreSQL (STUB: to be ported from `sqlite/observe/mod.rs`).
#![allow(unused_variables)]

use tasklane_core::model::{Event, OwnerKind, Ref, Run, Task};
use tasklane_core::observe::{
    InboxCandidate, InboxClassCount, Lane, ObserveFilter, ObserveStore, ObserveWriteStore,
    QueueGroup, RunTotals, TaskCount, TriageRecord,
};
use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::{Db, PgStore};

impl PgStore {
    /// Runs an observe read on a pooled connection inside one read-only snapshot.
    pub async fn read_observe<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn ObserveStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.read_db(move |db: &mut Db<'_>| f(db)).await
    }

    /// Runs an observe write (triage) in the writer, like [`PgStore::write_sized`].
    pub async fn write_observe<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn ObserveWriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(0, move |db: &mut Db<'_>| f(db)).await
    }
}

impl ObserveStore for Db<'_> {
    fn task_counts(&mut self, filter: &ObserveFilter) -> Result<Vec<TaskCount>> {
        unimplemented!()
    }

    fn run_totals(&mut self, filter: &ObserveFilter) -> Result<RunTotals> {
        unimplemented!()
    }

    fn queue_groups(&mut self, filter: &ObserveFilter) -> Result<Vec<QueueGroup>> {
        unimplemented!()
    }

    fn live_runs(&mut self, filter: &ObserveFilter) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn newest_queued_runs(&mut self, filter: &ObserveFilter, limit: i64) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn count_forced_stops_since(&mut self, filter: &ObserveFilter, since: Ts) -> Result<i64> {
        unimplemented!()
    }

    fn latest_activity(&mut self, filter: &ObserveFilter) -> Result<Option<Ts>> {
        unimplemented!()
    }

    fn inbox_candidates(
        &mut self,
        actor: &Ref,
        owner_kind: Option<OwnerKind>,
        filter: &ObserveFilter,
        query: Option<&str>,
    ) -> Result<Vec<InboxCandidate>> {
        unimplemented!()
    }

    fn inbox_class_counts(
        &mut self,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxClassCount>> {
        unimplemented!()
    }

    fn inbox_corrections(
        &mut self,
        actor: &Ref,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxCandidate>> {
        unimplemented!()
    }

    fn inbox_lane_page(
        &mut self,
        actor: &Ref,
        lane: Lane,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
        exclude: &[String],
        min_rows: Option<usize>,
    ) -> Result<Vec<InboxCandidate>> {
        unimplemented!()
    }

    fn latest_runs(&mut self, task_ids: &[String]) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn runs_by_ids(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        unimplemented!()
    }

    fn triage_record(&mut self, task_id: &str, actor: &Ref) -> Result<Option<TriageRecord>> {
        unimplemented!()
    }

    fn subtree_events_after(&mut self, root: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        unimplemented!()
    }

    fn events_after(&mut self, after: i64, limit: i64) -> Result<Vec<Event>> {
        unimplemented!()
    }

    fn ancestry(&mut self, task_id: &str) -> Result<Vec<String>> {
        unimplemented!()
    }

    fn subtree(&mut self, root: &str, limit: i64) -> Result<Vec<(Task, i64)>> {
        unimplemented!()
    }
}

impl ObserveWriteStore for Db<'_> {
    fn put_triage(&mut self, record: &TriageRecord) -> Result<()> {
        unimplemented!()
    }
}
