//! The lease sweeper: recovers expired leases at start-up (before serving) and then
//! continuously, so an expired lease is requeued within a second of its `lease_until`. With
//! several servers on one PostgreSQL database every server sweeps; recovery re-reads the expired
//! leases inside its write transaction, under the cluster's write lock, so each is recovered once.

use std::time::Duration;

use tasklane_core::service::agent::{recover_expired_leases, sweeper_caller};

use crate::error::ApiResult;
use crate::state::AppState;

/// Runs recovered per transaction; a larger backlog is worked off in consecutive batches.
const BATCH: i64 = 100;
/// The sweeper never sleeps longer than this, which bounds how late a recovery can be.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Recovers every lease that has expired by now. Returns how many runs were recovered.
pub async fn recover_all(state: &AppState, reason: &'static str) -> ApiResult<usize> {
    let max = state.max_lease_expirations;
    let mut total = 0;
    loop {
        let recovered = state
            .write(sweeper_caller(), move |op| {
                recover_expired_leases(op, BATCH, max, reason)
            })
            .await?;
        crate::metrics::leases_recovered(recovered);
        let n = recovered.total();
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Sleeps until the next lease deadline (at most [`MAX_SLEEP`]), then recovers what expired.
///
/// Not started on the test clock: there time moves only through `POST /api/_test/clock/advance`,
/// which recovers everything the jump expired before it answers. A sweeper racing that call would
/// make what the call reports depend on thread timing.
pub fn spawn(state: AppState) {
    if state.manual_clock.is_some() {
        return;
    }
    tokio::spawn(async move {
        let mut shutdown = state.shutting_down.subscribe();
        loop {
            let recovered = recover_all(&state, "scheduler_sweep").await;
            if let Err(e) = &recovered {
                tracing::warn!(error = ?e.0, "lease recovery failed; retrying");
            }
            let sleep = match state.store.read(|r| r.next_lease_deadline()).await {
                // After a failure the passed deadline is still there: back off instead of spinning.
                _ if recovered.is_err() => MAX_SLEEP,
                Ok(Some(deadline)) => {
                    let wait = deadline.micros() - state.clock.now().micros();
                    Duration::from_micros(wait.max(0) as u64).min(MAX_SLEEP)
                }
                _ => MAX_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
