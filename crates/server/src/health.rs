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

/// `GET /healthz`: 200 `{"status":"ok"}` while the process serves.
pub async fn healthz() -> Response {
    json(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 `{"status":"ready"}`, or 503 with the reason.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let reason = if *state.shutting_down.borrow() {
        Some("the server is shutting down".to_string())
    } else {
        state.store.check_ready().await.err().map(|e| e.to_string())
    };
    match reason {
        None => json(StatusCode::OK, json!({ "status": "ready" })),
        Some(why) => {
            tracing::warn!(reason = %why, "not ready");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "unavailable", "error": why, "code": "not_ready" }),
            )
        }
    }
}
