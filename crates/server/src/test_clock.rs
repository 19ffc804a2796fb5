//! The test clock (`--test-clock`): one clock for the whole service.
//!
//! A server on the test clock keeps a `ManualClock`. Servers sharing one database (PostgreSQL)
//! are one service, so their clocks follow the service's test time that the database holds:
//!
//! - a server starts at the service's test time (the first one stores its wall-clock start);
//! - `POST /api/_test/clock/advance` advances the stored time, then this server's clock to it;
//! - every server brings its clock up to the stored time before each request ([`follow`]) and at
//!   the start of each write transaction, under the write lock (`Store::follow_test_clock`), so
//!   whatever a request reads or writes after an advance answered, on any server, is at or after
//!   the advanced time, and a write that waited (a parked claim) uses the time it commits at.
//!
//! A clock is only ever raised, never set back, so `now` never moves backwards on a server. On a
//! backend with one server per database the store has no test time and the clock is the
//! server's own, as before.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::time::{Clock, ManualClock, SystemClock, Ts};
use tasklane_core::Result;
use tasklane_store::Store;

use crate::error::ApiError;
use crate::state::AppState;

/// This server's test clock, started at the service's test time (or at the wall clock if it is
/// the first on the database, which stores that start), and raised to the service's time by the
/// store's writer from then on.
pub(crate) async fn start(store: &Store) -> Result<Arc<ManualClock>> {
    let wall = SystemClock::default().now();
    let start = match store.test_clock().await? {
        Some(service) => service,
        // Two servers starting at once on a fresh database both store theirs: the later of the
        // two is kept, and the other server's clock is raised to it by its next request or write.
        None => store.advance_test_clock(wall, 0).await?.unwrap_or(wall),
    };
    let clock = Arc::new(ManualClock::starting_at(start));
    let follower = clock.clone();
    store.follow_test_clock(move |service| {
        follower.set_at_least(service);
    });
    Ok(clock)
}

/// Advances the service's time by `micros` and this server's clock with it; returns this
/// server's `now` afterwards.
pub(crate) async fn advance(store: &Store, clock: &ManualClock, micros: i64) -> Result<Ts> {
    Ok(match store.advance_test_clock(clock.now(), micros).await? {
        Some(service) => clock.set_at_least(service),
        None => clock.advance_micros(micros),
    })
}

/// Middleware, mounted only on the test clock: brings this server's clock up to the service's
/// test time before the request runs, so an advance answered by another server is seen by
/// everything this request reads and writes. On PostgreSQL one read of the row per request; on
/// a backend with one server per database, no read at all.
pub(crate) async fn follow(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(clock) = &state.manual_clock {
        match state.store.test_clock().await {
            Ok(Some(service)) => {
                clock.set_at_least(service);
            }
            Ok(None) => {}
            Err(e) => return ApiError(e).into_response(),
        }
    }
    next.run(request).await
}
