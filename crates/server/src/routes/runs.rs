//! `/api/task-runs/{id}...`: one run, and the operator transitions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use tasklane_core::input::{
    AttachSessionInput, CancelInput, CompleteInput, FailInput, IdempotencyInput,
};
use tasklane_core::{service, views};

use super::{keyed, path_write};
use crate::error::ApiResult;
use crate::path::Path;
use crate::state::AppState;

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let detail = s.read(move |r| views::run_detail(r, &id)).await?;
    Ok(keyed(StatusCode::OK, "run", detail))
}

path_write!(
    claim,
    "claim_run",
    IdempotencyInput,
    service::claim_run,
    OK,
    "run"
);
path_write!(
    start,
    "start_run",
    IdempotencyInput,
    service::start_run,
    OK,
    "run"
);
path_write!(
    attach_session,
    "attach_run_session",
    AttachSessionInput,
    service::attach_session,
    OK,
    "run"
);
path_write!(
    complete,
    "complete_run",
    CompleteInput,
    service::complete_run,
    OK,
    "run"
);
path_write!(fail, "fail_run", FailInput, service::fail_run, OK, "run");
path_write!(
    cancel,
    "cancel_run",
    CancelInput,
    service::cancel_run,
    OK,
    "run"
);
