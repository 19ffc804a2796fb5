//! Tasklane's HTTP API. Handlers parse the request, identify the caller and make one call into the
//! core rules; they hold no business rule themselves.

mod auth;
mod body;
mod browser;
mod connections;
mod console;
mod error;
mod health;
mod identity;
mod metrics;
mod openapi;
mod path;
mod query;
mod request_id;
mod routes;
mod sse_hub;
mod state;
mod sweeper;
mod test_clock;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tasklane_core::time::{SharedClock, SystemClock};
use tasklane_core::Error;
use tasklane_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::AuthMode;
pub use browser::BrowserPolicy;
pub use connections::ConnectionLimits;
pub use error::ApiError;
use error::HttpError;
pub use state::AppState;

/// Server settings chosen at start-up.
pub struct Settings {
    pub auth: AuthMode,
    /// Run on a manual clock that only `POST /api/_test/clock/advance` moves.
    pub test_clock: bool,
    /// A run fails instead of being requeued on its this-many-th lease expiry.
    pub max_lease_expirations: i64,
}

impl AppState {
    /// The state of a server on `store`. On the test clock with a database shared by several
    /// servers, joins the service's test time (see `test_clock`), which reads the database.
    pub async fn new(store: impl Into<Store>, settings: Settings) -> Result<Self, Error> {
        let store = store.into();
        let (clock, manual_clock): (SharedClock, _) = if settings.test_clock {
            let manual = test_clock::start(&store).await?;
            (manual.clone(), Some(manual))
        } else {
            (Arc::new(SystemClock::default()), None)
        };
        Ok(AppState {
            store,
            clock,
            manual_clock,
            auth: settings.auth,
            max_lease_expirations: settings.max_lease_expirations,
            work: Arc::new(watch::channel(0).0),
            shutting_down: Arc::new(watch::channel(false).0),
        })
    }
}

/// Parked claims on this server wait on the work watch, which its own commits bump. Commits of
/// the other servers sharing the database arrive as remote commits: they may have made work
/// claimable too.
fn spawn_remote_wakeups(state: &AppState) {
    let Some(mut remote) = state.store.remote_commits() else {
        return;
    };
    let work = state.work.clone();
    tokio::spawn(async move {
        while remote.changed().await.is_ok() {
            work.send_modify(|generation| *generation += 1);
        }
    });
}

/// How the HTTP layer treats connections and browsers.
pub struct HttpSettings {
    pub limits: ConnectionLimits,
    pub browser: BrowserPolicy,
    /// Serve `/metrics` on this listener, without authentication, instead of on the API's.
    pub metrics_listener: Option<TcpListener>,
}

fn router(state: AppState, policy: BrowserPolicy, metrics_here: bool) -> Router {
    use routes::{agent, runs, tasks, testing};
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
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
        .route("/api/task-runs/{id}/cancel", post(runs::cancel))
        .route("/api/agent/tasks/claim-next", post(agent::claim_next))
        .route("/api/agent/tasks/claim-batch", post(agent::claim_batch))
        .route(
            "/api/agent/tasks/complete-batch",
            post(agent::complete_batch),
        )
        .route(
            "/api/agent/tasks/{run_id}/heartbeat",
            post(agent::heartbeat),
        )
        .route("/api/agent/tasks/{run_id}/complete", post(agent::complete))
        .route("/api/agent/tasks/{run_id}/fail", post(agent::fail))
        .route("/api/agent/tasks/{run_id}/release", post(agent::release));
    app = app.merge(routes::observe::router(&state));
    app = app.merge(console::router());
    app = app.merge(openapi::router());
    let test_clock = state.manual_clock.is_some();
    if test_clock {
        app = app.route("/api/_test/clock/advance", post(testing::advance_clock));
    }
    if metrics_here {
        app = app.route("/metrics", get(metrics::endpoint));
    }
    app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    if test_clock {
        // Outside authentication, whose token bookkeeping reads the clock too.
        app = app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            test_clock::follow,
        ));
    }
    app
        // Outside authentication: a refused browser request never reaches it or a handler.
        .layer(axum::middleware::from_fn_with_state(policy, browser::guard))
        // Around everything above, so refused requests are counted and logged with their id too.
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("not_found", "no such endpoint"))
}

async fn method_not_allowed() -> HttpError {
    HttpError::MethodNotAllowed
}

/// Recovers leases that expired while the server was down, then serves until `shutdown`
/// resolves; then stops accepting, ends long polls, finishes in-flight requests and drains the
/// writer so every acknowledged write is on disk.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    http: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics::install();
    let recovered = sweeper::recover_all(&state, "orphaned_on_boot")
        .await
        .map_err(|e| {
            std::io::Error::other(format!("lease recovery at start-up failed: {}", e.0))
        })?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "recovered leases that expired while the server was down"
        );
    }
    if let AuthMode::Token(cache) = &state.auth {
        cache
            .refresh(&state)
            .await
            .map_err(|e| std::io::Error::other(format!("loading API tokens failed: {e}")))?;
        cache.spawn_maintenance(state.clone());
    }
    sweeper::spawn(state.clone());
    spawn_remote_wakeups(&state);
    let store = state.store.clone();
    let stopping = state.shutting_down.clone();
    let metrics_here = http.metrics_listener.is_none();
    if let Some(listener) = http.metrics_listener {
        metrics::serve_alone(listener, state.clone());
    }
    let app = router(state, http.browser, metrics_here);
    connections::serve(listener, app, http.limits, async move {
        shutdown.await;
        stopping.send_replace(true);
    })
    .await;
    store.shutdown();
    Ok(())
}
