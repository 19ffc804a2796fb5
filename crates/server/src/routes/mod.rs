//! One module per API resource; each holds its handlers and their request parsing.

pub mod agent;
pub mod observe;
pub mod queue;
pub mod runs;
pub mod stream;
pub mod tasks;
pub mod testing;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A JSON response with a status.
pub fn json<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}
