//! What every handler shares, and the one way to run an operation.

use std::sync::Arc;

use tasklane_core::model::Caller;
use tasklane_core::service::Op;
use tasklane_core::store::ReadStore;
use tasklane_core::time::{ManualClock, SharedClock};
use tasklane_core::Result;
use tasklane_store::Store;
use tokio::sync::watch;

use crate::auth::AuthMode;
use crate::error::ApiResult;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: SharedClock,
    /// Present only in test-clock mode, where `POST /api/_test/clock/advance` moves time.
    pub manual_clock: Option<Arc<ManualClock>>,
    pub auth: AuthMode,
    /// A run fails instead of being requeued on its this-many-th lease expiry.
    pub max_lease_expirations: i64,
    /// Bumped after every commit that may have made a run claimable; long-polling claimers wait
    /// on it instead of polling.
    pub work: Arc<watch::Sender<u64>>,
    /// Becomes true when the server starts shutting down, ending long polls and streams.
    pub shutting_down: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// Runs one write operation as one transaction in the writer. `now` is read inside the writer,
    /// so timestamps follow commit order. Claimers are woken after the commit when the operation
    /// may have made work claimable.
    ///
    /// The writer may run `f` more than once (its last run's result is the answer; see
    /// `Store::write_repeatable`): `f` acts only through the `Op` it is given.
    pub async fn write<R, F>(&self, caller: Caller, f: F) -> ApiResult<R>
    where
        F: Fn(&mut Op<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_body(caller, 0, f).await
    }

    /// [`AppState::write`] for an operation that carries a request body of `body_bytes`: the
    /// write queue is bounded by the bytes it holds as well as by its length.
    pub async fn write_body<R, F>(&self, caller: Caller, body_bytes: usize, f: F) -> ApiResult<R>
    where
        F: Fn(&mut Op<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let clock = self.clock.clone();
        // If this future is dropped while the command is in flight (the client went away), the
        // command may still commit; wake claimers anyway rather than leave them parked.
        let mut wake = WakeOnDrop {
            work: &self.work,
            armed: true,
        };
        let outcome = self
            .store
            .write_repeatable(body_bytes, move |store| {
                let mut op = Op::new(store, clock.now(), &caller);
                let result = f(&mut op)?;
                Ok((result, op.work_available))
            })
            .await;
        wake.armed = matches!(outcome, Ok((_, true)));
        Ok(outcome?.0)
    }

    /// Runs a read on a read-only snapshot; never waits for the writer. `f` may run twice (see
    /// `Store::read`).
    pub async fn read<R, F>(&self, f: F) -> ApiResult<R>
    where
        F: Fn(&mut dyn ReadStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.store.read(f).await?)
    }
}

/// Bumps the work watch when dropped while armed.
struct WakeOnDrop<'a> {
    work: &'a watch::Sender<u64>,
    armed: bool,
}

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.work.send_modify(|generation| *generation += 1);
        }
    }
}
