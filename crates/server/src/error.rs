//! The one place where errors become HTTP responses: `{"error": "<message>", "code": "<code>"}`.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tasklane_core::Error;

use crate::connections::Throttle;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn invalid_json(message: impl Into<String>) -> Self {
        ApiError(Error::bad_request("invalid_json", message))
    }

    /// The error of one item of a batch, in the batch's answer: `{"code","message","status"}`,
    /// the status being the one the single-item endpoint would have answered.
    pub fn item_json(&self) -> serde_json::Value {
        json!({
            "code": self.0.code(),
            "message": self.public_message(),
            "status": self.status().as_u16(),
        })
    }

    pub fn status(&self) -> StatusCode {
        match &self.0 {
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let mut response = error_response(status, self.0.code(), &message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl ApiError {
    /// What the client is told. Server-side failures are logged in full and masked for the client.
    fn public_message(&self) -> String {
        match &self.0 {
            Error::Storage(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_string()
            }
            Error::Unavailable(detail) => {
                // A full disk or queue answers every write with this: one line per 10 s, with the
                // count, rather than one per request.
                static THROTTLE: Mutex<Throttle> =
                    Mutex::new(Throttle::new(Duration::from_secs(10)));
                let ready = THROTTLE.lock().map_or(Some(0), |mut t| t.ready());
                if let Some(times_since_last_report) = ready {
                    tracing::warn!(error = %detail, times_since_last_report, "storage unavailable");
                }
                "service temporarily unavailable; retry shortly".to_string()
            }
            other => other.to_string(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Failures of the HTTP exchange itself, which no rule produces and whose statuses have no
/// counterpart among the rules' errors.
#[derive(Debug)]
pub enum HttpError {
    /// A known path asked with a method it does not have.
    MethodNotAllowed,
    /// The request body did not arrive within the body timeout.
    RequestTimeout,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::MethodNotAllowed => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            ),
            HttpError::RequestTimeout => {
                let mut response = error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                );
                // The rest of the body may still be on its way; it cannot be told from a next request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
        }
    }
}

/// The one error shape: `{"error": "<message>", "code": "<code>"}`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": message, "code": code}))).into_response()
}
