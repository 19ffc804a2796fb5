//! `/api/task-runs/{id}...`: one run, and the operator transitions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tasklane_core::input::{
    AttachSessionInput, CancelInput, CompleteInput, FailInput, IdempotencyInput,
};
use tasklane_core::{service, views};

use super::json;
use crate::auth::Identity;
use crate::body::JsonBody;
use crate::error::ApiResult;
use crate::path::Path;
use crate::state::AppState;

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let detail = s.read(move |r| views::run_detail(r, &id)).await?;
    Ok(json(StatusCode::OK, json!({ "run": detail })))
}

/// Declares a handler for one run transition: action name for the origin, body type, rule.
macro_rules! run_transition {
    ($name:ident, $action:literal, $input:ty, $rule:path) => {
        pub async fn $name(
            State(s): State<AppState>,
            who: Identity,
            Path(id): Path<String>,
            JsonBody(input, body_bytes): JsonBody<$input>,
        ) -> ApiResult<Response> {
            let run = s
                .write_body(who.caller($action), body_bytes, move |op| $rule(op, &id, &input))
                .await?;
            Ok(json(StatusCode::OK, json!({ "run": run })))
        }
    };
}

run_transition!(claim, "claim_run", IdempotencyInput, service::claim_run);
run_transition!(start, "start_run", IdempotencyInput, service::start_run);
run_transition!(
    attach_session,
    "attach_run_session",
    AttachSessionInput,
    service::attach_session
);
run_transition!(
    complete,
    "complete_run",
    CompleteInput,
    service::complete_run
);
run_transition!(fail, "fail_run", FailInput, service::fail_run);
run_transition!(cancel, "cancel_run", CancelInput, service::cancel_run);
