//! Test-clock control, mounted only when the server runs with `--test-clock`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tasklane_core::Error;

use super::json;
use crate::body::JsonBody;
use crate::error::ApiResult;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct Advance {
    seconds: Option<f64>,
}

pub async fn advance_clock(
    State(s): State<AppState>,
    JsonBody(input, _): JsonBody<Advance>,
) -> ApiResult<Response> {
    let clock = s
        .manual_clock
        .as_ref()
        .ok_or_else(|| Error::not_found("not_found", "the test clock is not enabled"))?;
    let seconds = input.seconds.unwrap_or(0.0);
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(Error::validation("seconds must be a non-negative number").into());
    }
    // On a database shared by several servers this moves the whole service's time.
    let now = crate::test_clock::advance(&s.store, clock, (seconds * 1_000_000.0) as i64).await?;
    // Recover what the jump expired before answering, so a test sees the effect at once.
    let recovered = crate::sweeper::recover_all(&s, "scheduler_sweep").await?;
    Ok(json(
        StatusCode::OK,
        json!({ "now": now, "recovered_leases": recovered }),
    ))
}
