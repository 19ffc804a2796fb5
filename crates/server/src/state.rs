//! What every handler shares: the store and the clock, and the one way to run an operation.

use std::sync::Arc;

use tasklane_core::model::Caller;
use tasklane_core::service::Op;
use tasklane_core::store::ReadStore;
use tasklane_core::time::{ManualClock, SharedClock};
use tasklane_core::Result;
use tasklane_store::SqliteStore;

use crate::error::ApiResult;

#[derive(Clone)]
pub struct AppState {
    pub store: SqliteStore,
    pub clock: SharedClock,
    /// Present only in test-clock mode, where `POST /api/_test/clock/advance` moves time.
    pub manual_clock: Option<Arc<ManualClock>>,
}

impl AppState {
    /// Runs one write operation as one transaction in the writer. `now` is read inside the writer,
    /// so timestamps follow commit order.
    pub async fn write<R, F>(&self, caller: Caller, f: F) -> ApiResult<R>
    where
        F: FnOnce(&mut Op<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let clock = self.clock.clone();
        let result = self
            .store
            .write(move |store| {
                let mut op = Op::new(store, clock.now(), &caller);
                f(&mut op)
            })
            .await?;
        Ok(result)
    }

    /// Runs a read on a read-only snapshot; never waits for the writer.
    pub async fn read<R, F>(&self, f: F) -> ApiResult<R>
    where
        F: FnOnce(&mut dyn ReadStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.store.read(f).await?)
    }
}
