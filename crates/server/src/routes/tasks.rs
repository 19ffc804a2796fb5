//! `/api/tasks...`: tasks, their children, dependencies and runs list.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use tasklane_core::input::{
    CancelInput, CreateTaskInput, DependencyInput, ExecuteInput, PatchTaskInput, RejectInput,
};
use tasklane_core::service;
use tasklane_core::views;

use super::{json, keyed, path_write};
use crate::auth::Identity;
use crate::body::JsonBody;
use crate::error::ApiResult;
use crate::path::Path;
use crate::query::{run_filter, task_filter, Params};
use crate::state::AppState;

pub async fn list(State(s): State<AppState>, raw: RawQuery) -> ApiResult<Response> {
    let p = Params::from_raw(&raw);
    let (filter, size) = (task_filter(&p)?, p.page_size()?);
    let page = s.read(move |r| views::list_tasks(r, &filter, size)).await?;
    Ok(json(StatusCode::OK, page.to_json("tasks")))
}

pub async fn create(
    State(s): State<AppState>,
    who: Identity,
    JsonBody(input, body_bytes): JsonBody<CreateTaskInput>,
) -> ApiResult<Response> {
    let task = s
        .write_body(who.caller("create"), body_bytes, move |op| {
            service::create_task(op, None, &input)
        })
        .await?;
    Ok(keyed(StatusCode::CREATED, "task", task))
}

pub async fn create_child(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    JsonBody(input, body_bytes): JsonBody<CreateTaskInput>,
) -> ApiResult<Response> {
    let task = s
        .write_body(who.caller("create_child"), body_bytes, move |op| {
            service::create_task(op, Some(&id), &input)
        })
        .await?;
    Ok(keyed(StatusCode::CREATED, "task", task))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let detail = s.read(move |r| views::task_detail(r, &id)).await?;
    Ok(keyed(StatusCode::OK, "task", detail))
}

pub async fn delete(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.write(who.caller("delete"), move |op| {
        service::delete_task(op, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_dependency(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    JsonBody(input, body_bytes): JsonBody<DependencyInput>,
) -> ApiResult<Response> {
    let task_id = id.clone();
    s.write_body(who.caller("add_dependency"), body_bytes, move |op| {
        service::add_dependency(op, &task_id, &input)
    })
    .await?;
    detail_after_commit(&s, id).await
}

pub async fn remove_dependency(
    State(s): State<AppState>,
    who: Identity,
    Path((id, blocker)): Path<(String, String)>,
) -> ApiResult<Response> {
    let task_id = id.clone();
    s.write(who.caller("remove_dependency"), move |op| {
        service::remove_dependency(op, &task_id, &blocker)
    })
    .await?;
    detail_after_commit(&s, id).await
}

/// The answer of a dependency change: the task's detail, read on a snapshot that includes the
/// change, outside the writer (the detail holds every event of the task).
async fn detail_after_commit(s: &AppState, id: String) -> ApiResult<Response> {
    let detail = s.read(move |r| views::task_detail(r, &id)).await?;
    Ok(keyed(StatusCode::OK, "task", detail))
}

pub async fn list_runs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    raw: RawQuery,
) -> ApiResult<Response> {
    let p = Params::from_raw(&raw);
    let (filter, size) = (run_filter(&p)?, p.page_size()?);
    let page = s
        .read(move |r| views::list_runs(r, &id, &filter, size))
        .await?;
    Ok(json(StatusCode::OK, page.to_json("runs")))
}

path_write!(
    patch,
    "update",
    PatchTaskInput,
    service::patch_task,
    OK,
    "task"
);
path_write!(publish, "publish", ExecuteInput, service::publish_task, OK);
path_write!(
    approve,
    "approve",
    ExecuteInput,
    service::approve_task,
    CREATED
);
path_write!(
    reject,
    "reject",
    RejectInput,
    service::reject_task,
    OK,
    "task"
);
path_write!(start, "start", ExecuteInput, service::start_task, CREATED);
path_write!(
    cancel,
    "cancel",
    CancelInput,
    service::cancel_task,
    OK,
    "task"
);
path_write!(
    enqueue_run,
    "enqueue_run",
    ExecuteInput,
    service::enqueue_run,
    CREATED,
    "run"
);
