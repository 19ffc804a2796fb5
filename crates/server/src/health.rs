//! `/healthz` and `/readyz`, for supervisors and load balancers; no credentials needed (see
//! `auth::is_public`).
//!
//! Liveness says only that the process answers HTTP: restarting a server whose database is
//! briefly unavailable would not help it. Readiness says whether it can do its work now: the
//! database answers a read and carries this binary's schema, and the server is not shutting down.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::routes::json;
use crate::state::AppState;

/// A liveness or readiness probe: answered whatever `Host` it carries (see `browser::guard`).
pub(crate) fn is_probe(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && matches!(path, "/healthz" | "/readyz")
}

/// `GET /healthz`: 200 `{"status":"ok"}` while the process serves.
pub async fn healthz() -> Response {
    json(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 `{"status":"ready"}`, or 503. Anyone may ask, so the answer says only
/// which kind of cause it is; the storage detail (paths, versions) goes to the log.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let reason = if *state.shutting_down.borrow() {
        Some("the server is shutting down")
    } else if let Err(e) = state.store.check_ready().await {
        tracing::warn!(error = %e, "not ready: the database check failed");
        Some("the database is not ready")
    } else {
        None
    };
    match reason {
        None => json(StatusCode::OK, json!({ "status": "ready" })),
        Some(why) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "error": why, "code": "not_ready" }),
        ),
    }
}
