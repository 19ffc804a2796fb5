//! Tasklane's HTTP API. Handlers parse the request, identify the caller and make one call into the
//! core rules; they hold no business rule themselves.

mod body;
mod error;
mod identity;
mod query;
mod routes;
mod state;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tasklane_core::time::{ManualClock, SharedClock, SystemClock};
use tasklane_core::Error;
use tasklane_store::SqliteStore;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use state::AppState;

impl AppState {
    /// State on the wall clock, or on a manual clock that only `POST /api/_test/clock/advance` moves.
    pub fn new(store: SqliteStore, test_clock: bool) -> Self {
        if test_clock {
            let manual = Arc::new(ManualClock::starting_now());
            AppState {
                store,
                clock: manual.clone() as SharedClock,
                manual_clock: Some(manual),
            }
        } else {
            AppState {
                store,
                clock: Arc::new(SystemClock::default()),
                manual_clock: None,
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    use routes::{runs, tasks, testing};
    let mut app = Router::new()
        .route("/api/tasks", get(tasks::list).post(tasks::create))
        .route(
            "/api/tasks/{id}",
            get(tasks::get).patch(tasks::patch).delete(tasks::delete),
        )
        .route("/api/tasks/{id}/publish", post(tasks::publish))
        .route("/api/tasks/{id}/approve", post(tasks::approve))
        .route("/api/tasks/{id}/reject", post(tasks::reject))
        .route("/api/tasks/{id}/start", post(tasks::start))
        .route("/api/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/tasks/{id}/children", post(tasks::create_child))
        .route("/api/tasks/{id}/dependencies", post(tasks::add_dependency))
        .route(
            "/api/tasks/{id}/dependencies/{depends_on_id}",
            axum::routing::delete(tasks::remove_dependency),
        )
        .route(
            "/api/tasks/{id}/runs",
            get(tasks::list_runs).post(tasks::enqueue_run),
        )
        .route("/api/task-runs/{id}", get(runs::get))
        .route("/api/task-runs/{id}/claim", post(runs::claim))
        .route("/api/task-runs/{id}/start", post(runs::start))
        .route(
            "/api/task-runs/{id}/attach-session",
            post(runs::attach_session),
        )
        .route("/api/task-runs/{id}/complete", post(runs::complete))
        .route("/api/task-runs/{id}/fail", post(runs::fail))
        .route("/api/task-runs/{id}/cancel", post(runs::cancel));
    if state.manual_clock.is_some() {
        app = app.route("/api/_test/clock/advance", post(testing::advance_clock));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("not_found", "no such endpoint"))
}

async fn method_not_allowed() -> ApiError {
    ApiError(Error::not_found(
        "method_not_allowed",
        "method not allowed on this endpoint",
    ))
}

/// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and drains
/// the writer so every acknowledged write is on disk.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    store.shutdown();
    result
}
